//! Runs one finalizer machine: feeds inputs to `machine::step`, logs every accepted transition
//! in the store *before* its commands run, then performs the commands and turns their results
//! into the next input.
//!
//! Everything it touches sits behind a small trait, so the deterministic simulation
//! (tests/simulation_finalizer.rs) runs this very loop: [`Clock`] (time is an input: `now` and
//! sleeps), [`Source`] (the transcript's end, for `ObserveTail`), [`Journal`] (the store's
//! transition log, lease and notices) and, through the [`Deliverer`], [`Server`] and
//! [`Positions`]. [`Interpreter::new`] wires the production ones; [`Interpreter::with_parts`]
//! takes any.

use std::future::Future;
use std::time::Duration;

use crate::effects::blocking;
use crate::effects::client::{Client, SendError};
use crate::effects::delivery::{Deliverer, DeliveryError, Positions, Server};
use crate::effects::lines::Limits;
use crate::effects::open::Identity;
use crate::effects::outbox::{self, Flush};
use crate::effects::tail::TailObserver;
use crate::ids::SessionId;
use crate::machine::{step, Command, Input, Millis, State, Tail, Watermark};
use crate::store::{Holder, MachineMeta, Position, Step, Store};

/// Longest stretch without a log record (and so without a lease renewal) while a machine waits.
const KEEP_ALIVE_MS: Millis = 60_000;

/// Time as the interpreter sees it: the machine's inputs carry `now`, and `WakeAt` sleeps
/// until a time. A simulation jumps to the time asked instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> Millis;
    /// Returns once `now_ms() >= at`.
    fn sleep_until(&self, at: Millis) -> impl Future<Output = ()> + Send;
}

/// The wall clock and tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        crate::config::now_ms()
    }

    fn sleep_until(&self, at: Millis) -> impl Future<Output = ()> + Send {
        let wait = at.saturating_sub(crate::config::now_ms());
        tokio::time::sleep(Duration::from_millis(wait))
    }
}

/// The transcript's end, as `ObserveTail` looks at it. Blocking: called on a blocking thread.
pub trait Source: Send + 'static {
    /// What the last non-blank line is now.
    fn observe(&mut self) -> Tail;
}

impl Source for TailObserver {
    fn observe(&mut self) -> Tail {
        TailObserver::observe(self)
    }
}

/// The store as a finalizer run uses it: the transition log (each record also persists the
/// watermark it carries and renews the run's lease, in one hold), the delivered position
/// ([`Positions`], for the deliverer's skips to the server's resume point) and the lifecycle
/// notices due before the session's first lines.
pub trait Journal: Positions {
    /// Appends one accepted transition. Blocking: called on a blocking thread.
    fn record_step(&self, step: &Step) -> Result<(), String>;

    /// Posts the session's pending notices that go before its lines (its start first).
    fn flush_before_lines(&self, session: SessionId) -> impl Future<Output = Result<(), String>> + Send;
}

/// The production [`Journal`]: the sled store, and the client that posts its notices.
#[derive(Clone)]
pub struct StoreJournal {
    store: Store,
    client: Client,
}

impl Positions for StoreJournal {
    fn position(&self, session: SessionId) -> Result<Option<Position>, String> {
        Positions::position(&self.store, session)
    }

    fn advance(&self, session: SessionId, w: Watermark, identity: Option<Identity>) -> Result<(), String> {
        Positions::advance(&self.store, session, w, identity)
    }
}

impl Journal for StoreJournal {
    fn record_step(&self, step: &Step) -> Result<(), String> {
        self.store.record_step(step).map(drop).map_err(|e| e.to_string())
    }

    async fn flush_before_lines(&self, session: SessionId) -> Result<(), String> {
        let flushed = outbox::flush(&self.store, &self.client, Some(session), Flush::BeforeLines).await;
        flushed.failed.map_or(Ok(()), Err)
    }
}

/// Everything delivery needs besides the machine.
#[derive(Clone)]
pub struct Delivery {
    /// The ingest server.
    pub client: Client,
    /// Batch bounds.
    pub limits: Limits,
}

/// The pieces an interpreter runs with (see [`Interpreter::with_parts`]).
pub struct Parts<C: Clock, T: Source, S: Server, J: Journal> {
    /// Time.
    pub clock: C,
    /// The transcript's end.
    pub source: T,
    /// The transition log, lease, position and notices.
    pub journal: J,
    /// The machine's spawn record.
    pub meta: MachineMeta,
    /// Who holds the session's lease (renewed by every record).
    pub holder: Holder,
    /// Reads, sends and holds the delivered position; persists skips through `journal`.
    pub deliverer: Deliverer<S, J>,
}

/// Performs one machine's commands until it drains or parks.
pub struct Interpreter<
    C: Clock = SystemClock,
    T: Source = TailObserver,
    S: Server = Client,
    J: Journal = StoreJournal,
> {
    clock: C,
    journal: J,
    meta: MachineMeta,
    holder: Holder,
    tail: Option<T>,
    /// Reads, sends and holds the delivered position (the one delivery component).
    deliverer: Deliverer<S, J>,
    /// When the last log record was written (for the keep-alive).
    last_record: Millis,
    /// After a store failure the machine carries on in memory; the server's `last-line` is then
    /// the resume point of any later run.
    store_failed: bool,
    /// What this run did.
    pub stats: RunStats,
}

/// What one interpreter run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunStats {
    /// Batches acknowledged.
    pub batches: u64,
    /// Lines in them.
    pub lines_sent: u64,
    /// Their raw bytes.
    pub bytes_sent: u64,
    /// Failed delivery steps.
    pub failures: u64,
}

impl Interpreter {
    /// The production interpreter: wall clock, the transcript on disk, the HTTP client, the sled
    /// store. `identity` is the file `watermark` refers to, when known: another file at the
    /// path is read from line 0.
    pub fn new(
        store: Store,
        meta: MachineMeta,
        holder: Holder,
        delivery: Delivery,
        watermark: Option<Watermark>,
        identity: Option<Identity>,
    ) -> Self {
        let journal = StoreJournal {
            store,
            client: delivery.client.clone(),
        };
        let deliverer = Deliverer::new(
            meta.session,
            &meta.transcript,
            delivery.client,
            Some(journal.clone()),
            delivery.limits,
            watermark,
            identity,
        );
        Interpreter::with_parts(Parts {
            clock: SystemClock,
            source: TailObserver::new(&meta.transcript),
            journal,
            meta,
            holder,
            deliverer,
        })
    }
}

impl<C: Clock, T: Source, S: Server, J: Journal> Interpreter<C, T, S, J> {
    /// An interpreter over any clock, transcript source, server and store.
    pub fn with_parts(parts: Parts<C, T, S, J>) -> Self {
        Interpreter {
            last_record: parts.clock.now_ms(),
            clock: parts.clock,
            journal: parts.journal,
            meta: parts.meta,
            holder: parts.holder,
            tail: Some(parts.source),
            deliverer: parts.deliverer,
            store_failed: false,
            stats: RunStats::default(),
        }
    }

    /// Runs without the transition log (the store could not be opened): delivery must not stop.
    pub fn without_store(mut self) -> Self {
        self.store_failed = true;
        self.deliverer.forget_positions();
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
            let now = self.clock.now_ms();
            if changed || now.saturating_sub(self.last_record) >= KEEP_ALIVE_MS {
                self.record(&input, &next, persist).await;
                self.last_record = now;
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
                        self.clock.sleep_until(at).await;
                        answer = Some(Input::Woke {
                            now: self.clock.now_ms(),
                        });
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
        let step = Step {
            session: self.meta.session,
            generation: self.meta.generation,
            input: input.clone(),
            phase_after: next.phase.clone(),
            watermark,
            identity: self.deliverer.position().1,
            holder: self.holder,
            at: self.clock.now_ms(),
        };
        let journal = self.journal.clone();
        let result = blocking(move || journal.record_step(&step)).await;
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write the transition log; continuing without it (the server's last-line will be the resume point)");
            self.store_failed = true;
            self.deliverer.forget_positions();
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
            now: self.clock.now_ms(),
            tail: observed,
        }
    }

    async fn deliver(&mut self, take_unterminated: bool) -> Input {
        if !self.deliverer.resumed() && !self.store_failed {
            // The session's start (and notifications) reach the server before its lines.
            if let Err(error) = self.journal.flush_before_lines(self.meta.session).await {
                return self.failed(DeliveryError::Send(SendError::Retryable(format!(
                    "session-start not delivered: {error}"
                ))));
            }
        }
        let before = self.deliverer.counts;
        match self.deliverer.next_batch(take_unterminated).await {
            Ok(sent) => {
                if sent.missing {
                    tracing::warn!(path = %self.meta.transcript.display(), "transcript missing; nothing to deliver");
                }
                let after = self.deliverer.counts;
                self.stats.batches += after.batches - before.batches;
                self.stats.lines_sent += after.lines - before.lines;
                self.stats.bytes_sent += after.bytes - before.bytes;
                Input::BatchAcked {
                    now: self.clock.now_ms(),
                    upto: sent.upto,
                    drained: sent.drained,
                }
            }
            Err(e) => self.failed(e),
        }
    }

    fn failed(&mut self, error: DeliveryError) -> Input {
        self.stats.failures += 1;
        tracing::warn!(error = %error, "delivery failed");
        Input::DeliveryFailed {
            now: self.clock.now_ms(),
            retryable: error.retryable(),
            error: error.message(),
        }
    }
}
