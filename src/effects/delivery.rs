//! The one delivery component: every path that sends transcript lines (the finalizer's
//! interpreter, the live watcher, `kcap import`, the sessionEnd hook's inline drain) sends them
//! through a [`Deliverer`], so the rules of the delivery contract live here once:
//!
//! - read complete lines after a watermark, in batches within [`Limits`];
//! - redact and encode them ([`Client::encode_batch`]), ids from the raw bytes;
//! - split a batch the server refuses as too large (413); a lone line that is still too large
//!   goes as its stand-in ([`Client::send_batch`]);
//! - resume from max(local watermark, server `last-line` + 1), asked once per deliverer before
//!   its first batch; a transcript replaced since the local position is read from line 0 instead;
//! - move the position only on a 2xx (the caller persists it: the finalizer in its transition
//!   log, the others with [`Positions::advance`]);
//! - a transcript shortened or replaced under the position is read again from line 0 under the
//!   same ids ([`LineReader`]), so the server keeps one copy of every line.
//!
//! IO sits behind three small traits, [`Server`], [`Positions`] and [`LineSource`] (the
//! transcript's lines), so the deterministic simulations (tests/simulation_delivery.rs,
//! tests/simulation_finalizer.rs) drive this very code against a simulated server, and can
//! change the transcript under the real [`LineReader`] at each of its reads.

use std::future::Future;
use std::path::{Path, PathBuf};

use crate::effects::blocking;
use crate::effects::client::{Client, LoneLine, SendError};
use crate::effects::lines::{Batch, Limits, LineReader};
use crate::effects::open::{is_refusal, probe, Identity};
use crate::ids::SessionId;
use crate::machine::Watermark;
use crate::protocol::IngestReply;
use crate::store::{Position, Store};

/// The ingest server as delivery sees it: its resume point and the batch upload.
pub trait Server: Clone + Send + Sync + 'static {
    /// The server's `last-line` for the session: `None` when it holds nothing.
    fn last_line(&self, session: SessionId) -> impl Future<Output = Result<Option<u64>, SendError>> + Send;

    /// Posts one encoded batch; `lone` is its line when it holds one only (what a stand-in
    /// needs should the server refuse the line as too large).
    fn send_batch(
        &self,
        session: SessionId,
        body: Vec<u8>,
        lone: Option<LoneLine>,
    ) -> impl Future<Output = Result<Option<IngestReply>, SendError>> + Send;
}

impl Server for Client {
    fn last_line(&self, session: SessionId) -> impl Future<Output = Result<Option<u64>, SendError>> + Send {
        Client::last_line(self, session)
    }

    fn send_batch(
        &self,
        session: SessionId,
        body: Vec<u8>,
        lone: Option<LoneLine>,
    ) -> impl Future<Output = Result<Option<IngestReply>, SendError>> + Send {
        Client::send_batch(self, session, body, lone)
    }
}

/// Where delivered positions persist between processes (the store's watermark tree).
/// Blocking: called on a blocking thread.
pub trait Positions: Clone + Send + Sync + 'static {
    /// The session's persisted position, if any.
    fn position(&self, session: SessionId) -> Result<Option<Position>, String>;
    /// Records progress; a position behind the persisted one on the same file changes nothing.
    fn advance(&self, session: SessionId, w: Watermark, identity: Option<Identity>) -> Result<(), String>;
}

impl Positions for Store {
    fn position(&self, session: SessionId) -> Result<Option<Position>, String> {
        Store::position(self, session).map_err(|e| e.to_string())
    }

    fn advance(&self, session: SessionId, w: Watermark, identity: Option<Identity>) -> Result<(), String> {
        self.advance_watermark(session, w, identity)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// The transcript's lines as delivery reads them: [`LineReader`] in production. Blocking:
/// called on a blocking thread, one call at a time.
pub trait LineSource: Send + Sync + 'static {
    /// The batch after `from`, a position in the file `identity` ([`LineReader::read_batch_at`]).
    fn read_batch_at(
        &mut self,
        from: Watermark,
        identity: Option<Identity>,
        limits: Limits,
        take_unterminated: bool,
    ) -> std::io::Result<Option<Batch>>;

    /// Moves from `from` to the start of line `target` ([`LineReader::skip_to_line`]).
    fn skip_to_line(&mut self, from: Watermark, target: u64) -> std::io::Result<Watermark>;

    /// The file positions refer to, once one was opened.
    fn identity(&self) -> Option<Identity>;

    /// The file the path names now (`None`: no file there, or it cannot be looked at).
    fn current(&self) -> Option<Identity>;
}

impl LineSource for LineReader {
    fn read_batch_at(
        &mut self,
        from: Watermark,
        identity: Option<Identity>,
        limits: Limits,
        take_unterminated: bool,
    ) -> std::io::Result<Option<Batch>> {
        LineReader::read_batch_at(self, from, identity, limits, take_unterminated)
    }

    fn skip_to_line(&mut self, from: Watermark, target: u64) -> std::io::Result<Watermark> {
        LineReader::skip_to_line(self, from, target)
    }

    fn identity(&self) -> Option<Identity> {
        LineReader::identity(self)
    }

    fn current(&self) -> Option<Identity> {
        probe(self.path()).ok().flatten().map(|(identity, _)| identity)
    }
}

/// Why a delivery step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// The transcript is not a regular file we may read (a symlink, a FIFO): retrying cannot
    /// help until another file appears at the path.
    TranscriptRefused(String),
    /// Reading the transcript failed; another try may work.
    Read(String),
    /// The server is down, slow, or said no.
    Send(SendError),
}

impl DeliveryError {
    /// Worth another try after a pause (the machine backs off rather than parks).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            DeliveryError::Read(_) | DeliveryError::Send(SendError::Retryable(_))
        )
    }

    /// One line for logs and the transition log.
    pub fn message(&self) -> String {
        match self {
            DeliveryError::TranscriptRefused(m) => m.clone(),
            DeliveryError::Read(m) => format!("cannot read transcript: {m}"),
            DeliveryError::Send(e) => e.message(),
        }
    }
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// What one delivery step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The new position, acknowledged by the server (or made of blank lines only); `None` when
    /// nothing moved.
    pub upto: Option<Watermark>,
    /// Nothing deliverable is left after `upto`.
    pub drained: bool,
    /// There is no transcript at the path (nothing to deliver).
    pub missing: bool,
}

/// What a deliverer counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Batches acknowledged.
    pub batches: u64,
    /// Lines in them.
    pub lines: u64,
    /// Their raw bytes.
    pub bytes: u64,
    /// As the server counted them (when it says).
    pub new: u64,
    /// As the server counted them (when it says).
    pub duplicates: u64,
    /// Lines the server already held under the same number with other content (kept aside
    /// there); a replaced transcript can cause them, so they are counted, not treated as errors.
    pub conflicts: u64,
}

/// Delivers one session's transcript: holds the position, the open reader, and the next batch
/// prepared while the current one is in flight.
pub struct Deliverer<S: Server, P: Positions> {
    session: SessionId,
    path: PathBuf,
    server: S,
    /// Where skips to the server's resume point persist; `None` runs without a store.
    positions: Option<P>,
    limits: Limits,
    /// Taken while a read is in flight on a blocking thread.
    reader: Option<Box<dyn LineSource>>,
    watermark: Watermark,
    /// The file (device, inode) `watermark` refers to.
    identity: Option<Identity>,
    /// The server's `last-line` is asked once, before the first batch.
    resumed: bool,
    prefetch: Option<Prefetch>,
    /// Read the next batch while the current one is in flight (off only in simulations).
    prefetching: bool,
    /// What was delivered so far.
    pub counts: Counts,
}

impl<S: Server, P: Positions> Deliverer<S, P> {
    /// A deliverer starting at `watermark` (on the file `identity`, when known: another file at
    /// the path is read from line 0).
    pub fn new(
        session: SessionId,
        path: impl Into<PathBuf>,
        server: S,
        positions: Option<P>,
        limits: Limits,
        watermark: Option<Watermark>,
        identity: Option<Identity>,
    ) -> Self {
        let path = path.into();
        Deliverer {
            reader: Some(Box::new(LineReader::new(&path).expecting(identity))),
            session,
            path,
            server,
            positions,
            limits,
            watermark: watermark.unwrap_or_default(),
            identity,
            resumed: false,
            prefetch: None,
            prefetching: true,
            counts: Counts::default(),
        }
    }

    /// Reads each batch when it is needed, never while the previous one is in flight. A
    /// simulation that changes the transcript between steps needs its reads at fixed points to
    /// replay a seed exactly; production keeps the overlap.
    pub fn sequential(mut self) -> Self {
        self.prefetching = false;
        self
    }

    /// Reads through `wrap(reader)` instead of the reader itself (a simulation changes the
    /// transcript under the real reader at each read).
    pub fn wrap_lines<L: LineSource>(mut self, wrap: impl FnOnce(Box<dyn LineSource>) -> L) -> Self {
        let reader = self.reader.take().expect("line reader present");
        self.reader = Some(Box::new(wrap(reader)));
        self
    }

    /// The transcript path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The position acknowledged so far and the file it refers to.
    pub fn position(&self) -> (Watermark, Option<Identity>) {
        (self.watermark, self.identity)
    }

    /// True once the server's resume point was taken into account.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Stops persisting skips (the store failed; the server's `last-line` covers them).
    pub fn forget_positions(&mut self) {
        self.positions = None;
    }

    /// One step: the server's resume point first (once), then the next bounded batch after the
    /// position, sent and acknowledged. The position moves only on a 2xx.
    pub async fn next_batch(&mut self, take_unterminated: bool) -> Result<Sent, DeliveryError> {
        if !self.resumed {
            let server_last = self
                .server
                .last_line(self.session)
                .await
                .map_err(DeliveryError::Send)?;
            self.skip_to_server(server_last).await;
            self.resumed = true;
        }
        let mut limits = self.limits;
        loop {
            let (from, identity) = (self.watermark, self.identity);
            let batch = match self.prepared(from, identity, limits, take_unterminated).await {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    return Ok(Sent {
                        upto: None,
                        drained: true,
                        missing: true,
                    })
                }
                Err(e) if is_refusal(&e) => return Err(DeliveryError::TranscriptRefused(e.to_string())),
                Err(e) => return Err(DeliveryError::Read(e.to_string())),
            };
            if batch.held_back {
                tracing::debug!("last line has no newline yet and is incomplete; left for its writer");
            }
            let encoded = match batch.body {
                // Blank lines only: nothing to send, the position moves past them.
                None => {
                    self.watermark = batch.end;
                    self.identity = batch.identity;
                    return Ok(Sent {
                        upto: (batch.end != from).then_some(batch.end),
                        drained: batch.at_end,
                        missing: false,
                    });
                }
                Some(Ok(json)) => json,
                Some(Err(e)) => return Err(DeliveryError::Send(e)),
            };
            // Read and encode the next batch while this one is in flight; it is used only if
            // this one is acknowledged (the next step then starts exactly at `end`).
            if !batch.at_end && self.prefetching {
                self.prefetch =
                    Some(self.spawn_prepare(batch.end, batch.identity, limits, take_unterminated));
            }
            match self.server.send_batch(self.session, encoded, batch.lone).await {
                Err(SendError::TooLarge) => {
                    limits = Limits::halved(batch.count, batch.bytes);
                    continue;
                }
                Err(e) => return Err(DeliveryError::Send(e)),
                Ok(reply) => {
                    self.counts.batches += 1;
                    self.counts.lines += batch.count as u64;
                    self.counts.bytes += batch.bytes as u64;
                    if let Some(reply) = reply {
                        self.counts.new += reply.new;
                        self.counts.duplicates += reply.duplicates;
                        self.counts.conflicts += reply.conflicts;
                    }
                    self.watermark = batch.end;
                    self.identity = batch.identity;
                    return Ok(Sent {
                        upto: Some(batch.end),
                        drained: batch.at_end,
                        missing: false,
                    });
                }
            }
        }
    }

    /// Steps until nothing deliverable is left, persisting each acknowledged position through
    /// [`Positions`] (the callers that have no transition log: watcher, import, inline drain).
    pub async fn deliver_available(&mut self, take_unterminated: bool) -> Result<Sent, DeliveryError> {
        let mut last = Sent {
            upto: None,
            drained: true,
            missing: false,
        };
        loop {
            let sent = self.next_batch(take_unterminated).await?;
            if let Some(w) = sent.upto {
                self.persist(w).await;
                last.upto = Some(w);
            }
            last.missing = sent.missing;
            if sent.drained {
                return Ok(last);
            }
        }
    }

    async fn persist(&self, w: Watermark) {
        let Some(positions) = self.positions.clone() else {
            return;
        };
        let (session, identity) = (self.session, self.identity);
        if let Err(e) = blocking(move || positions.advance(session, w, identity)).await {
            tracing::warn!(error = %e, "cannot persist the watermark; the server's last-line covers it");
        }
    }

    /// Resume point = max(local watermark, server `last-line` + 1).
    async fn skip_to_server(&mut self, server_last: Option<u64>) {
        let Some(target) = server_last.map(|n| n + 1) else {
            return;
        };
        if target <= self.watermark.next_line {
            return;
        }
        // A transcript replaced since the local position is read again from line 0 (same ids:
        // equal lines are dropped as duplicates, different ones kept aside). Skipping to the
        // server's last-line would pass over the new file's lines without comparing them.
        if let Some(prefetch) = self.prefetch.take() {
            self.reader = Some(join(prefetch).await.0);
        }
        let now = self.reader.as_ref().and_then(|r| r.current());
        if let (Some(known), Some(now)) = (self.identity, now) {
            if known != now {
                tracing::info!("transcript replaced since the last position; reading it again from line 0");
                return;
            }
        }
        let mut reader = self.reader.take().expect("line reader present");
        let from = self.watermark;
        let (reader, skipped) = blocking(move || {
            let r = reader.skip_to_line(from, target);
            (reader, r)
        })
        .await;
        self.reader = Some(reader);
        match skipped {
            Ok(w) => {
                self.identity = self.reader.as_ref().and_then(|r| r.identity());
                tracing::info!(
                    from = from.next_line,
                    to = w.next_line,
                    "server already holds these lines; skipping ahead"
                );
                self.watermark = w;
                self.persist(w).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot skip to the server's last line; resending from the local watermark")
            }
        }
    }

    /// The batch after `from`, read and encoded: the prefetched one if it matches, else a new one.
    /// `Ok(None)` when the transcript does not exist.
    async fn prepared(
        &mut self,
        from: Watermark,
        identity: Option<Identity>,
        limits: Limits,
        take: bool,
    ) -> std::io::Result<Option<Prepared>> {
        if let Some(prefetch) = self.prefetch.take() {
            let (reader, result) = join(prefetch).await;
            self.reader = Some(reader);
            if let Ok(Some(p)) = &result {
                if p.from == from && p.from_identity == identity && p.limits == limits && p.take == take {
                    return result;
                }
            }
        }
        let task = self.spawn_prepare(from, identity, limits, take);
        let (reader, result) = join(task).await;
        self.reader = Some(reader);
        result
    }

    /// Reads and encodes the batch after `from` (in the file `from_identity`) on a blocking
    /// thread. A replaced transcript, or one shorter than `from`, is read again from the start
    /// (ids keep lines single).
    fn spawn_prepare(
        &mut self,
        from: Watermark,
        from_identity: Option<Identity>,
        limits: Limits,
        take: bool,
    ) -> Prefetch {
        let mut reader = self.reader.take().expect("line reader present");
        let session = self.session;
        tokio::task::spawn_blocking(move || {
            let result = (|| {
                let Some(batch) = reader.read_batch_at(from, from_identity, limits, take)? else {
                    return Ok(None);
                };
                Ok(Some(Prepared {
                    identity: reader.identity(),
                    from_identity,
                    from,
                    limits,
                    take,
                    end: batch.end,
                    at_end: batch.at_end,
                    held_back: batch.held_back,
                    count: batch.lines.len(),
                    bytes: batch.bytes(),
                    lone: LoneLine::of(session, &batch),
                    body: (!batch.lines.is_empty()).then(|| Client::encode_batch(session, &batch)),
                }))
            })();
            (reader, result)
        })
    }
}

/// A batch read and encoded, ready to send.
struct Prepared {
    /// The file it was read from.
    identity: Option<Identity>,
    /// The file `from` is a position in.
    from_identity: Option<Identity>,
    /// What it was prepared for: used only if the next step asks for exactly this.
    from: Watermark,
    limits: Limits,
    take: bool,
    end: Watermark,
    at_end: bool,
    held_back: bool,
    count: usize,
    bytes: usize,
    /// Its line, if it holds one only: what a stand-in needs should the server refuse it.
    lone: Option<LoneLine>,
    /// `None` when the batch holds only blank lines.
    body: Option<Result<Vec<u8>, SendError>>,
}

type Prefetch = tokio::task::JoinHandle<(Box<dyn LineSource>, std::io::Result<Option<Prepared>>)>;

async fn join(task: Prefetch) -> (Box<dyn LineSource>, std::io::Result<Option<Prepared>>) {
    match task.await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
