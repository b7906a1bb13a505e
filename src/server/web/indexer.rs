//! Keeps the search index up to date off the ingest path: after lines are stored (the live hub
//! says so) or every few seconds, it runs [`ReadModel::index_pending`] until nothing is left.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::live::LiveHub;
use super::model::ReadModel;

/// How often the indexer looks even when nobody told it about new lines.
const IDLE: Duration = Duration::from_secs(5);
/// After an error, how long it waits before trying again.
const BACKOFF: Duration = Duration::from_secs(2);

/// Runs until `stop` turns true.
pub async fn run(reads: Arc<dyn ReadModel>, hub: LiveHub, mut stop: watch::Receiver<bool>) {
    let mut wake = hub.subscribe();
    loop {
        wake.borrow_and_update();
        loop {
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
