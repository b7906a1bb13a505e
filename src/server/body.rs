//! Reading request bodies within the server's limits: a size cap, a deadline that a body keeps
//! moving by arriving, a memory budget that bodies reserve before they are read, and for large
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

/// Past the body timeout, a body must keep arriving at this rate on average: each MiB received
/// moves its deadline a second later, so a 195 MB batch over a slow link is not cut at the
/// timeout, while a client that stops sending is cut about the timeout after it started.
pub const MIN_BODY_RATE: u64 = 1024 * 1024;

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Over the limit, in bytes.
    TooLarge(u64),
    /// Not complete in time: the body timeout, plus a second per MiB received.
    TimedOut(Duration),
    /// The client went away or sent a broken body.
    Broken(String),
    /// No share of the body budget (or no turn for a body of unknown length) came within the
    /// queue timeout: the client retries later.
    Busy,
}

/// When a body that started at `start` and has `received` bytes so far must be complete.
fn deadline(start: Instant, timeout: Duration, received: u64) -> Instant {
    start + timeout + Duration::from_secs(received / MIN_BODY_RATE)
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

/// How a body is read: its size cap, its timeout, the budget its bytes come from, and how long
/// it may wait for a share of that budget. Built once per server.
pub struct Reading {
    max: u64,
    timeout: Duration,
    budget: Arc<Semaphore>,
    /// Lets one body of unknown length (chunked) at a time take the budget as it arrives.
    unsized_turn: Arc<Semaphore>,
    queue_timeout: Duration,
}

impl Reading {
    /// The reading rules of a server with `limits`: a budget of `large_body_budget` bytes (never
    /// below `max_body`, so that any admissible body fits).
    pub fn new(limits: &super::Limits) -> Reading {
        let units = (limits.large_body_budget.max(limits.max_body) / BUDGET_UNIT + 1)
            .min(Semaphore::MAX_PERMITS as u64) as usize;
        Reading {
            max: limits.max_body,
            timeout: limits.body_timeout,
            budget: Arc::new(Semaphore::new(units)),
            unsized_turn: Arc::new(Semaphore::new(1)),
            queue_timeout: limits.ingest_queue_timeout,
        }
    }
}

/// What a body holds of the budget until it is stored.
pub struct Held {
    budget: Option<OwnedSemaphorePermit>,
    turn: Option<OwnedSemaphorePermit>,
}

/// `permits` of `semaphore`, waited for until `until`; `late` is the answer when they do not come.
async fn acquire(
    semaphore: &Arc<Semaphore>,
    permits: u32,
    until: Instant,
    late: BodyError,
) -> Result<OwnedSemaphorePermit, BodyError> {
    tokio::time::timeout_at(until, semaphore.clone().acquire_many_owned(permits))
        .await
        .map_err(|_| late)?
        .map_err(|_| BodyError::Broken("server stopping".into()))
}

/// Reads a body's first chunk, then takes its share of the budget: a body of declared length
/// reserves all of it at once, before it is read on. No body then holds part of the budget while
/// it waits for more, so bodies that together exceed the budget are read one after the other
/// instead of each holding a part and waiting for the others until all time out. A body of
/// unknown length takes the budget as it arrives, one such body at a time (it is then the only
/// one that can wait while holding, and it waits only for bodies that already hold all they
/// need). Nothing is taken before the first chunk: a client that sends only headers holds nothing.
async fn admit(
    body: &mut Body,
    declared: Option<u64>,
    how: &Reading,
    start: Instant,
) -> Result<(Option<Bytes>, Held), BodyError> {
    let first = next_frame(body, deadline(start, how.timeout, 0), how.timeout).await?;
    let mut held = Held {
        budget: None,
        turn: None,
    };
    if first.is_none() {
        return Ok((None, held));
    }
    let until = Instant::now() + how.queue_timeout;
    match declared {
        Some(len) => {
            let units = len.div_ceil(BUDGET_UNIT).max(1) as u32;
            held.budget = Some(acquire(&how.budget, units, until, BodyError::Busy).await?);
        }
        None => held.turn = Some(acquire(&how.unsized_turn, 1, until, BodyError::Busy).await?),
    }
    Ok((first, held))
}

/// Budget a body of unknown length takes for `len` more bytes on top of `total`, merged into
/// `held` (bodies of declared length reserved theirs in [`admit`]).
async fn take_unsized(
    how: &Reading,
    held: &mut Held,
    total: u64,
    len: u64,
    until: Instant,
) -> Result<(), BodyError> {
    if held.turn.is_none() {
        return Ok(());
    }
    let units = ((total + len).div_ceil(BUDGET_UNIT) - total.div_ceil(BUDGET_UNIT)) as u32;
    if units == 0 {
        return Ok(());
    }
    let permit = acquire(&how.budget, units, until, BodyError::TimedOut(how.timeout)).await?;
    match held.budget.as_mut() {
        Some(h) => h.merge(permit),
        None => held.budget = Some(permit),
    }
    Ok(())
}

/// Collects a body of `declared` bytes (at most `how.max`) whole, once its share of the budget
/// is reserved (see [`admit`]); the returned [`Held`] keeps that share until the caller drops it.
pub async fn collect(mut body: Body, declared: u64, how: &Reading) -> Result<(Bytes, Held), BodyError> {
    let start = Instant::now();
    let (first, held) = admit(&mut body, Some(declared), how, start).await?;
    let Some(first) = first else {
        return Ok((Bytes::new(), held));
    };
    // The whole declared length is reserved: allocating it at once is within the budget.
    let mut out = Vec::with_capacity(declared.min(how.max) as usize);
    let mut data = Some(first);
    while let Some(chunk) = data {
        if (out.len() + chunk.len()) as u64 > declared.min(how.max) {
            return Err(BodyError::TooLarge(how.max));
        }
        out.extend_from_slice(&chunk);
        data = next_frame(
            &mut body,
            deadline(start, how.timeout, out.len() as u64),
            how.timeout,
        )
        .await?;
    }
    Ok((Bytes::from(out), held))
}

/// Reads a body to its end within `timeout`, keeping nothing.
pub async fn collect_discarding(mut body: Body, timeout: Duration) -> Result<(), BodyError> {
    let start = Instant::now();
    let mut received = 0u64;
    while let Some(data) = next_frame(&mut body, deadline(start, timeout, received), timeout).await? {
        received += data.len() as u64;
    }
    Ok(())
}

/// Units of the body budget.
pub const BUDGET_UNIT: u64 = 64 * 1024;

/// Feeds a body, chunk by chunk, to `parse` running on a blocking thread; returns what `parse`
/// returned, or why the body failed (then `parse` sees a truncated stream and fails too). The
/// parser's thread starts only once the body is admitted (see [`admit`]): a client that sends
/// headers and then nothing holds no thread, so such clients cannot use up the blocking threads
/// every stored batch needs. Bodies of declared length reserve their whole share up front; at
/// most the budget over [`STREAM_ABOVE`] of them stream at once.
pub async fn stream_into<T: Send + 'static>(
    mut body: Body,
    declared: Option<u64>,
    how: &Reading,
    parse: impl FnOnce(&mut dyn Read) -> T + Send + 'static,
) -> Result<T, BodyError> {
    let start = Instant::now();
    let (first, mut held) = admit(&mut body, declared, how, start).await?;
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
    let max = declared.unwrap_or(how.max).min(how.max);
    let mut total = 0u64;
    let fed = async {
        let mut data = first;
        while let Some(chunk) = data {
            if total + chunk.len() as u64 > max {
                return Err(BodyError::TooLarge(how.max));
            }
            let until = deadline(start, how.timeout, total);
            take_unsized(how, &mut held, total, chunk.len() as u64, until).await?;
            total += chunk.len() as u64;
            if tx.send(chunk).await.is_err() {
                // The parser stopped early (malformed JSON): its error is the answer.
                break;
            }
            data = next_frame(&mut body, deadline(start, how.timeout, total), how.timeout).await?;
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
