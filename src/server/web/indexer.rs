//! Keeps the search index up to date off the ingest path: after lines are stored (the live hub
//! says so) or every few seconds, it runs [`ReadModel::index_pending`] until nothing is left.
//! Before each step it gives way to batches being stored, for at most [`GIVE_WAY_MAX`]: on a
//! 2-core machine a step (hundreds of lines tokenized) otherwise takes the CPU a batch's parse
//! and commit need. While requests keep arriving, the indexer then runs about one step per
//! [`GIVE_WAY_MAX`] (about 5 steps a second), which sustained ingest can outpace: search falls
//! behind. Once it is more than [`BACKLOG_NO_PAUSE`] lines behind, the indexer stops giving way
//! and runs at full speed alongside ingest, so that the lag stays bounded; it catches up fully
//! as soon as ingest pauses.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::live::LiveHub;
use super::model::ReadModel;

/// How often the indexer looks even when nobody told it about new lines.
const IDLE: Duration = Duration::from_secs(5);
/// After an error, how long it waits before trying again.
const BACKOFF: Duration = Duration::from_secs(2);
/// Longest an index step waits for batches being stored to finish.
pub const GIVE_WAY_MAX: Duration = Duration::from_millis(200);

/// Lines behind past which the indexer no longer gives way to ingest: beyond it, search would
/// fall further behind for as long as ingest lasts.
pub const BACKLOG_NO_PAUSE: u64 = 20_000;

/// Whether an index step should first give way to batches being stored, with the index
/// `backlog` lines behind (unknown counts as small: giving way is the safe default for ingest).
pub fn gives_way(backlog: Option<u64>) -> bool {
    backlog.is_none_or(|b| b <= BACKLOG_NO_PAUSE)
}

/// Waits while `hub` counts batches being stored, at most `max`; returns how long it waited.
pub async fn give_way(hub: &LiveHub, max: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    while hub.busy() && started.elapsed() < max {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

/// Runs until `stop` turns true.
pub async fn run(reads: Arc<dyn ReadModel>, hub: LiveHub, mut stop: watch::Receiver<bool>) {
    let mut wake = hub.subscribe();
    loop {
        wake.borrow_and_update();
        loop {
            let r = reads.clone();
            let backlog = tokio::task::spawn_blocking(move || r.index_backlog().ok())
                .await
                .ok()
                .flatten();
            if gives_way(backlog) {
                give_way(&hub, GIVE_WAY_MAX).await;
            }
            let r = reads.clone();
            match tokio::task::spawn_blocking(move || r.index_pending()).await {
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => {
                    if *stop.borrow() {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "search indexing failed; retrying");
                    tokio::time::sleep(BACKOFF).await;
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "search indexer task failed");
                    tokio::time::sleep(BACKOFF).await;
                    break;
                }
            }
        }
        tokio::select! {
            _ = wake.changed() => {}
            _ = tokio::time::sleep(IDLE) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Indexes everything pending now, waiting for lines a running indexer holds (tests and
/// benchmarks; blocking): a search after it finds every line stored before it.
pub fn catch_up(reads: &dyn ReadModel) -> Result<usize, super::model::ReadError> {
    let mut total = 0;
    loop {
        match reads.index_pending_waiting()? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_indexer_stops_giving_way_once_far_behind() {
        assert!(gives_way(Some(0)));
        assert!(gives_way(Some(BACKLOG_NO_PAUSE)));
        assert!(!gives_way(Some(BACKLOG_NO_PAUSE + 1)));
        assert!(!gives_way(Some(u64::MAX)));
        assert!(gives_way(None), "unknown: ingest first");
    }

    #[tokio::test]
    async fn an_index_step_gives_way_to_batches_being_stored_for_a_bounded_time() {
        let hub = LiveHub::new();
        let max = Duration::from_millis(300);
        assert!(
            give_way(&hub, max).await < max,
            "nothing is being stored: no wait"
        );
        let batch = hub.ingesting();
        assert!(hub.busy());
        assert!(
            give_way(&hub, max).await >= max,
            "waits while a batch is stored, up to max"
        );
        let hub2 = hub.clone();
        let ends = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(batch);
            hub2.busy()
        });
        let waited = give_way(&hub, Duration::from_secs(30)).await;
        assert!(!ends.await.unwrap(), "the guard counted the batch out");
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_secs(30),
            "waited for the batch to end, not for max: {waited:?}"
        );
    }
}
