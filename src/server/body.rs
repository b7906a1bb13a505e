//! Reading request bodies within the server's limits: a size cap, a deadline, and for large
//! bodies a streaming parse so that a 195 MB batch costs its decoded lines, not also a second
//! copy of its raw bytes.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Bodies up to this size are collected whole and parsed from memory (fastest); larger ones are
/// parsed as they arrive.
pub const STREAM_ABOVE: u64 = 16 * 1024 * 1024;

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Over the limit, in bytes.
    TooLarge(u64),
    /// Not complete within the body timeout.
    TimedOut(Duration),
    /// The client went away or sent a broken body.
    Broken(String),
}

async fn next_frame(
    body: &mut Body,
    deadline: Instant,
    timeout: Duration,
) -> Result<Option<Bytes>, BodyError> {
    loop {
        let frame = tokio::time::timeout_at(
            deadline,
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)),
        )
        .await
        .map_err(|_| BodyError::TimedOut(timeout))?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(BodyError::Broken(e.to_string())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Collects a body of at most `max` bytes within `timeout`. Every chunk first takes its size
/// from `budget` (see [`take_share`]); the returned permit holds it until the caller drops it,
/// so bodies being read never hold more memory than the budget, and a client that stops sending
/// holds only what it sent.
pub async fn collect(
    mut body: Body,
    max: u64,
    timeout: Duration,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), BodyError> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut held = None;
    while let Some(data) = next_frame(&mut body, deadline, timeout).await? {
        let total = out.len() as u64;
        if total + data.len() as u64 > max {
            return Err(BodyError::TooLarge(max));
        }
        take_share(budget, &mut held, total, data.len() as u64, deadline, timeout).await?;
        out.extend_from_slice(&data);
    }
    Ok((Bytes::from(out), held))
}

/// Takes the share of `budget` that `len` more bytes add to a body of `total` bytes, in
/// [`BUDGET_UNIT`]s, into `held`; waits for it no later than `deadline`.
async fn take_share(
    budget: &Arc<Semaphore>,
    held: &mut Option<OwnedSemaphorePermit>,
    total: u64,
    len: u64,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), BodyError> {
    let units = ((total + len).div_ceil(BUDGET_UNIT) - total.div_ceil(BUDGET_UNIT)) as u32;
    if units == 0 {
        return Ok(());
    }
    let permit = tokio::time::timeout_at(deadline, budget.clone().acquire_many_owned(units))
        .await
        .map_err(|_| BodyError::TimedOut(timeout))?
        .map_err(|_| BodyError::Broken("server stopping".into()))?;
    match held.as_mut() {
        Some(h) => h.merge(permit),
        None => *held = Some(permit),
    }
    Ok(())
}

/// Reads a body to its end within `timeout`, keeping nothing.
pub async fn collect_discarding(mut body: Body, timeout: Duration) -> Result<(), BodyError> {
    let deadline = Instant::now() + timeout;
    while next_frame(&mut body, deadline, timeout).await?.is_some() {}
    Ok(())
}

/// Units of the large-body memory budget.
pub const BUDGET_UNIT: u64 = 64 * 1024;

/// Feeds a body, chunk by chunk, to `parse` running on a blocking thread; returns what `parse`
/// returned, or why the body failed (then `parse` sees a truncated stream and fails too).
/// Every chunk first takes its size from `budget` (in [`BUDGET_UNIT`]s), held until the reply:
/// all large bodies together never hold more than the budget, and a client that stops sending
/// holds only what it sent, until the body timeout.
pub async fn stream_into<T: Send + 'static>(
    mut body: Body,
    max: u64,
    timeout: Duration,
    budget: Arc<Semaphore>,
    parse: impl FnOnce(&mut dyn Read) -> T + Send + 'static,
) -> Result<T, BodyError> {
    let deadline = Instant::now() + timeout;
    // Two chunks in flight: the parser never waits long, and memory stays a few frames.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let parser = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::with_capacity(
            256 * 1024,
            ChannelReader {
                rx,
                current: Bytes::new(),
            },
        );
        parse(&mut reader)
    });
    let mut total = 0u64;
    let mut held: Option<OwnedSemaphorePermit> = None;
    let fed = async {
        while let Some(data) = next_frame(&mut body, deadline, timeout).await? {
            if total + data.len() as u64 > max {
                return Err(BodyError::TooLarge(max));
            }
            take_share(&budget, &mut held, total, data.len() as u64, deadline, timeout).await?;
            total += data.len() as u64;
            if tx.send(data).await.is_err() {
                // The parser stopped early (malformed JSON): its error is the answer.
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let parsed = parser
        .await
        .map_err(|e| BodyError::Broken(format!("parser failed: {e}")))?;
    drop(held);
    fed.map(|()| parsed)
}

struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
