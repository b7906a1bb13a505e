//! Runs one finalizer machine: feeds inputs to `machine::step`, logs every accepted transition
//! in the store *before* its commands run, then performs the commands and turns their results
//! into the next input.

use std::time::Duration;

use crate::config::now_ms;
use crate::effects::blocking;
use crate::effects::client::{Client, LoneLine, SendError};
use crate::effects::lines::{Limits, LineReader};
use crate::effects::open::{is_refusal, Identity};
use crate::effects::outbox::{self, Flush};
use crate::effects::tail::TailObserver;
use crate::machine::{step, Command, Input, State, Watermark};
use crate::store::{Holder, MachineMeta, Store};

/// Longest stretch without a log record (and so without a lease renewal) while a machine waits.
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// Everything delivery needs besides the machine.
#[derive(Clone)]
pub struct Delivery {
    pub client: Client,
    pub limits: Limits,
}

pub struct Interpreter {
    store: Store,
    meta: MachineMeta,
    holder: Holder,
    delivery: Delivery,
    tail: Option<TailObserver>,
    reader: Option<LineReader>,
    watermark: Watermark,
    /// The file (device, inode) `watermark` refers to, persisted with it.
    identity: Option<Identity>,
    /// The server's `last-line` is asked once per run, before the first batch.
    resume_point_checked: bool,
    /// The next batch, being read and encoded while the current one is in flight.
    prefetch: Option<Prefetch>,
    last_record: std::time::Instant,
    /// After a store failure the machine carries on in memory; the server's `last-line` is then
    /// the resume point of any later run.
    store_failed: bool,
    pub stats: RunStats,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RunStats {
    pub batches: u64,
    pub lines_sent: u64,
    pub bytes_sent: u64,
    pub failures: u64,
}

impl Interpreter {
    /// `identity` is the file `watermark` refers to, when known: another file at the path is
    /// read from line 0.
    pub fn new(
        store: Store,
        meta: MachineMeta,
        holder: Holder,
        delivery: Delivery,
        watermark: Option<Watermark>,
        identity: Option<Identity>,
    ) -> Self {
        Interpreter {
            tail: Some(TailObserver::new(&meta.transcript)),
            reader: Some(LineReader::new(&meta.transcript).expecting(identity)),
            identity,
            store,
            meta,
            holder,
            delivery,
            watermark: watermark.unwrap_or_default(),
            resume_point_checked: false,
            prefetch: None,
            last_record: std::time::Instant::now(),
            store_failed: false,
            stats: RunStats::default(),
        }
    }

    /// Runs without the transition log (the store could not be opened): delivery must not stop.
    pub fn without_store(mut self) -> Self {
        self.store_failed = true;
        self
    }

    /// Drives the machine from `state` with `first` until it drains or parks; returns its state.
    pub async fn run(&mut self, mut state: State, first: Input) -> State {
        let mut input = first;
        loop {
            let (next, commands) = match step(&state, &input) {
                Ok(stepped) => stepped,
                Err(rejected) => {
                    tracing::error!(%rejected, "machine refused its own input; stopping");
                    return state;
                }
            };
            let persist = commands.iter().find_map(|c| match c {
                Command::PersistWatermark { watermark } => Some(*watermark),
                _ => None,
            });
            // Self-loops that change nothing (another poll, another wake) are not logged: replaying
            // them is a no-op, and logging them meant an fsync per poll under the store lock that
            // every other kcap process waits on. A keep-alive record still renews the lease.
            // A sweep that finds a parked machine not yet due changes nothing and is not logged.
            let run_starts = matches!(input, Input::Started { .. } | Input::Resumed { .. })
                || (matches!(input, Input::Swept { .. }) && commands != [Command::Exit]);
            let changed = next != state || persist.is_some() || run_starts;
            if changed || self.last_record.elapsed() >= KEEP_ALIVE {
                self.record(&input, &next, persist).await;
                self.last_record = std::time::Instant::now();
            }
            tracing::info!(
                input = input.name(),
                phase = next.phase.name(),
                ?commands,
                "transition"
            );
            state = next;

            let mut answer = None;
            for command in commands {
                match command {
                    // Carried out above, in the same store hold as the log append.
                    Command::PersistWatermark { .. } => {}
                    Command::Exit => return state,
                    Command::ObserveTail => answer = Some(self.observe_tail().await),
                    Command::WakeAt { at } => {
                        let wait = at.saturating_sub(now_ms());
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        answer = Some(Input::Woke { now: now_ms() });
                    }
                    Command::DeliverBatch { take_unterminated } => {
                        answer = Some(self.deliver(take_unterminated).await)
                    }
                }
            }
            match answer {
                Some(next_input) => input = next_input,
                None => {
                    tracing::error!(
                        phase = state.phase.name(),
                        "machine is waiting for nothing; stopping"
                    );
                    return state;
                }
            }
        }
    }

    async fn record(&mut self, input: &Input, next: &State, watermark: Option<Watermark>) {
        if self.store_failed {
            return;
        }
        let (store, meta, holder, input, phase) = (
            self.store.clone(),
            self.meta.clone(),
            self.holder,
            input.clone(),
            next.phase.clone(),
        );
        let identity = self.identity;
        let result = blocking(move || {
            store.record_step(&meta, &input, &phase, watermark, identity, &holder, now_ms())
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write the transition log; continuing without it (the server's last-line will be the resume point)");
            self.store_failed = true;
        }
    }

    async fn observe_tail(&mut self) -> Input {
        let mut tail = self.tail.take().expect("tail observer present");
        let (tail, observed) = blocking(move || {
            let observed = tail.observe();
            (tail, observed)
        })
        .await;
        self.tail = Some(tail);
        Input::TailObserved {
            now: now_ms(),
            tail: observed,
        }
    }

    async fn deliver(&mut self, take_unterminated: bool) -> Input {
        let failed = |error: SendError, stats: &mut RunStats| {
            stats.failures += 1;
            tracing::warn!(error = %error.message(), "delivery failed");
            Input::DeliveryFailed {
                now: now_ms(),
                retryable: matches!(error, SendError::Retryable(_)),
                error: error.message(),
            }
        };
        if !self.resume_point_checked && !self.store_failed {
            // The session's start (and notifications) reach the server before its lines.
            let flushed = outbox::flush(
                &self.store,
                &self.delivery.client,
                Some(self.meta.session),
                Flush::BeforeLines,
            )
            .await;
            if let Some(error) = flushed.failed {
                return failed(
                    SendError::Retryable(format!("session-start not delivered: {error}")),
                    &mut self.stats,
                );
            }
        }
        if !self.resume_point_checked {
            match self.delivery.client.last_line(self.meta.session).await {
                Ok(server_last) => {
                    self.skip_to_server(server_last).await;
                    self.resume_point_checked = true;
                }
                Err(e) => return failed(e, &mut self.stats),
            }
        }
        let mut limits = self.delivery.limits;
        loop {
            let (from, identity) = (self.watermark, self.identity);
            let batch = match self.prepared(from, identity, limits, take_unterminated).await {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    tracing::warn!(path = %self.meta.transcript.display(), "transcript missing; nothing to deliver");
                    return Input::BatchAcked {
                        now: now_ms(),
                        upto: None,
                        drained: true,
                    };
                }
                Err(e) if is_refusal(&e) => {
                    // A symlink or FIFO will not become a transcript by retrying: park now,
                    // with the reason (resume tries again, should a real file appear).
                    return failed(SendError::Refused(e.to_string()), &mut self.stats);
                }
                Err(e) => {
                    return failed(
                        SendError::Retryable(format!("cannot read transcript: {e}")),
                        &mut self.stats,
                    )
                }
            };

            if batch.held_back {
                tracing::info!("last line has no newline yet and is incomplete; left for its writer");
            }
            let (count, bytes, at_end, end, lone, read_from) = (
                batch.count,
                batch.bytes,
                batch.at_end,
                batch.end,
                batch.lone,
                batch.identity,
            );
            let encoded = match batch.body {
                None => {
                    self.watermark = end;
                    self.identity = read_from;
                    return Input::BatchAcked {
                        now: now_ms(),
                        upto: (end != from).then_some(end),
                        drained: at_end,
                    };
                }
                Some(Ok(json)) => json,
                Some(Err(e)) => return failed(e, &mut self.stats),
            };
            // Read and encode the next batch while this one is in flight; it is used only if
            // this one is acknowledged (the next delivery then starts exactly at `end`).
            if !at_end {
                self.prefetch = Some(self.spawn_prepare(end, read_from, limits, take_unterminated));
            }
            let client = &self.delivery.client;
            let sent = match client.send_batch(self.meta.session, encoded, lone).await {
                Err(SendError::TooLarge) => {
                    limits = Limits::halved(count, bytes);
                    continue;
                }
                other => other,
            };
            return match sent {
                Ok(_) => {
                    self.stats.batches += 1;
                    self.stats.lines_sent += count as u64;
                    self.stats.bytes_sent += bytes as u64;
                    self.watermark = end;
                    self.identity = read_from;
                    Input::BatchAcked {
                        now: now_ms(),
                        upto: Some(end),
                        drained: at_end,
                    }
                }
                Err(e) => failed(e, &mut self.stats),
            };
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
        let now = crate::effects::open::probe(&self.meta.transcript).ok().flatten();
        if let (Some(known), Some((now, _))) = (self.identity, now) {
            if known != now {
                tracing::info!("transcript replaced since the last position; reading it again from line 0");
                return;
            }
        }
        if let Some(prefetch) = self.prefetch.take() {
            self.reader = Some(join(prefetch).await.0);
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
                self.identity = self.reader.as_ref().and_then(LineReader::identity);
                tracing::info!(
                    from = from.next_line,
                    to = w.next_line,
                    "server already holds these lines; skipping ahead"
                );
                self.watermark = w;
                if !self.store_failed {
                    let (store, session) = (self.store.clone(), self.meta.session);
                    let identity = self.identity;
                    if let Err(e) = blocking(move || store.advance_watermark(session, w, identity)).await {
                        tracing::warn!(error = %e, "cannot persist the skipped-to watermark");
                    }
                }
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
        let session = self.meta.session;
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
    /// What it was prepared for: used only if the next delivery asks for exactly this.
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

type Prefetch = tokio::task::JoinHandle<(LineReader, std::io::Result<Option<Prepared>>)>;

async fn join(task: Prefetch) -> (LineReader, std::io::Result<Option<Prepared>>) {
    match task.await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
