//! The live watcher (`kcap watch`): delivers new complete lines while the session runs, with the
//! same reader, client, ids and watermark as the finalizer, so whichever delivers a line first,
//! the other skips it (or the server drops the replay).
//!
//! One watcher per session: it holds an exclusive lock on its pid file for its whole life; a
//! second one finds the lock taken and leaves. The hook finds the pid there to stop it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::now_ms;
use crate::effects::blocking;
use crate::effects::client::{Client, LoneLine, SendError};
use crate::effects::interpreter::Delivery;
use crate::effects::lines::{Batch, Limits, LineReader};
use crate::ids::SessionId;
use crate::machine::Watermark;
use crate::store::Store;

pub fn pid_file(kcap_home: &Path, session: SessionId) -> PathBuf {
    kcap_home
        .join("watchers")
        .join(format!("{}.pid", session.dashed()))
}

/// The lock that makes a watcher the only one of its session, held until dropped.
pub struct WatcherLock {
    _file: File,
}

/// Takes the session's watcher lock and writes our pid, or `None` if a watcher already runs.
pub fn claim(kcap_home: &Path, session: SessionId) -> std::io::Result<Option<WatcherLock>> {
    let path = pid_file(kcap_home, session);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            write!(file, "{}", std::process::id())?;
            file.flush()?;
            Ok(Some(WatcherLock { _file: file }))
        }
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// The pid of the session's running watcher, if one holds the lock.
pub fn running(kcap_home: &Path, session: SessionId) -> Option<u32> {
    let path = pid_file(kcap_home, session);
    let file = OpenOptions::new().write(true).open(&path).ok()?;
    match file.try_lock() {
        // Nobody holds it: no watcher (a stale pid file from a killed one).
        Ok(()) => None,
        Err(_) => std::fs::read_to_string(&path).ok()?.trim().parse().ok(),
    }
}

pub struct Watcher {
    pub store: Store,
    pub session: SessionId,
    pub transcript: PathBuf,
    pub delivery: Delivery,
    pub poll: Duration,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct WatchStats {
    pub batches: u64,
    pub lines: u64,
    pub failures: u64,
    /// As the server counted them (when it says).
    pub new: u64,
    pub duplicates: u64,
}

impl Watcher {
    /// Tails until `stop` resolves, then drains once more (bounded by `final_drain`) and returns.
    pub async fn run(
        &self,
        stop: impl std::future::Future<Output = ()>,
        final_drain: Duration,
    ) -> WatchStats {
        let mut stats = WatchStats::default();
        let mut reader = Some(LineReader::new(&self.transcript));
        let mut position = self.start_position().await;
        let mut backoff = Duration::ZERO;
        tokio::pin!(stop);
        loop {
            let pause = self.poll.max(backoff);
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(pause) => {}
            }
            match self
                .deliver_available(&mut reader, &mut position, &mut stats, false)
                .await
            {
                Ok(()) => backoff = Duration::ZERO,
                Err(e) => {
                    stats.failures += 1;
                    backoff = (backoff * 2).clamp(Duration::from_millis(250), Duration::from_secs(4));
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "watcher delivery failed; keeping position");
                }
            }
        }
        tracing::info!("watcher stopping: final drain");
        let drained = tokio::time::timeout(
            final_drain,
            self.deliver_available(&mut reader, &mut position, &mut stats, false),
        )
        .await;
        match drained {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "final drain failed; the finalizer delivers the rest"),
            Err(_) => tracing::warn!("final drain ran out of time; the finalizer delivers the rest"),
        }
        stats
    }

    /// max(local watermark, server last-line + 1) is established lazily on the first delivery;
    /// here only the local part, so an unreachable server does not delay the start.
    async fn start_position(&self) -> Watermark {
        let (store, session) = (self.store.clone(), self.session);
        match blocking(move || store.watermark(session)).await {
            Ok(w) => w.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the watermark; starting from the server's last-line");
                Watermark::default()
            }
        }
    }

    /// Delivers every complete line not yet delivered, once (`kcap import`); with
    /// `take_unterminated`, a last line without its newline too (its writer is known to be gone).
    pub async fn deliver_once(&self, take_unterminated: bool) -> Result<WatchStats, String> {
        let mut stats = WatchStats::default();
        let mut reader = Some(LineReader::new(&self.transcript));
        let mut position = self.start_position().await;
        self.deliver_available(&mut reader, &mut position, &mut stats, take_unterminated)
            .await?;
        Ok(stats)
    }

    /// Sends every complete line after `position`, batch by batch, advancing after each 2xx.
    async fn deliver_available(
        &self,
        reader: &mut Option<LineReader>,
        position: &mut Watermark,
        stats: &mut WatchStats,
        take_unterminated: bool,
    ) -> Result<(), String> {
        // Idle: one stat, nothing else (no store, no network) until the file grows.
        let grown = match std::fs::metadata(&self.transcript) {
            Ok(m) => m.len() != position.offset,
            Err(_) => false,
        };
        if !grown {
            return Ok(());
        }
        // Another deliverer (a finalizer, an import) may have moved the shared watermark.
        let (store, session) = (self.store.clone(), self.session);
        if let Ok(Some(shared)) = blocking(move || store.watermark(session)).await {
            if shared.next_line > position.next_line {
                *position = shared;
            }
        }
        if position.next_line == 0 {
            let client: &Client = &self.delivery.client;
            if let Ok(Some(last)) = client.last_line(self.session).await {
                let mut r = reader.take().expect("reader present");
                let from = *position;
                let (r, skipped) = blocking(move || {
                    let s = r.skip_to_line(from, last + 1);
                    (r, s)
                })
                .await;
                *reader = Some(r);
                if let Ok(w) = skipped {
                    *position = w;
                }
            }
        }
        let mut limits = self.delivery.limits;
        loop {
            let mut r = reader.take().expect("reader present");
            let from = *position;
            let (r, batch) = blocking(move || {
                let b = match r.len() {
                    Ok(Some(len)) if len >= from.offset => {
                        r.read_batch(from, limits, take_unterminated).map(Some)
                    }
                    Ok(Some(_)) => Err(std::io::Error::other(
                        "transcript is shorter than the delivered position",
                    )),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                };
                (r, b)
            })
            .await;
            *reader = Some(r);
            let Some(batch): Option<Batch> = batch.map_err(|e| format!("cannot read the transcript: {e}"))?
            else {
                return Ok(()); // not created yet
            };
            if batch.end == *position {
                return Ok(());
            }
            if !batch.lines.is_empty() {
                let body = Client::encode_batch(self.session, &batch).map_err(|e| e.message())?;
                let client = &self.delivery.client;
                let lone = LoneLine::of(self.session, &batch);
                let reply = match client.send_batch(self.session, body, lone).await {
                    Err(SendError::TooLarge) => {
                        limits = Limits::halved(batch.lines.len(), batch.bytes());
                        continue;
                    }
                    other => other.map_err(|e| e.message())?,
                };
                if let Some(reply) = reply {
                    stats.new += reply.new;
                    stats.duplicates += reply.duplicates;
                }
                stats.batches += 1;
                stats.lines += batch.lines.len() as u64;
            }
            *position = batch.end;
            let (store, session, w) = (self.store.clone(), self.session, batch.end);
            if let Err(e) = blocking(move || store.advance_watermark(session, w)).await {
                tracing::warn!(error = %e, "cannot persist the watermark; the server's last-line covers it");
            }
            tracing::debug!(
                next_line = batch.end.next_line,
                at = now_ms(),
                "watcher delivered"
            );
            if batch.at_end {
                return Ok(());
            }
        }
    }
}
