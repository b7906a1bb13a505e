//! Runs one finalizer machine: feeds inputs to `machine::step`, logs every accepted transition
//! in the store *before* its commands run, then performs the commands and turns their results
//! into the next input.

use std::time::Duration;

use crate::config::now_ms;
use crate::effects::blocking;
use crate::effects::client::{Client, SendError};
use crate::effects::delivery::{Deliverer, DeliveryError};
use crate::effects::lines::Limits;
use crate::effects::open::Identity;
use crate::effects::outbox::{self, Flush};
use crate::effects::tail::TailObserver;
use crate::machine::{step, Command, Input, State, Watermark};
use crate::store::{Holder, MachineMeta, Store};

/// Longest stretch without a log record (and so without a lease renewal) while a machine waits.
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// Everything delivery needs besides the machine.
#[derive(Clone)]
pub struct Delivery {
    /// The ingest server.
    pub client: Client,
    /// Batch bounds.
    pub limits: Limits,
}

pub struct Interpreter {
    store: Store,
    meta: MachineMeta,
    holder: Holder,
    delivery: Delivery,
    tail: Option<TailObserver>,
    /// Reads, sends and holds the delivered position (the one delivery component).
    deliverer: Deliverer<Client, Store>,
    last_record: std::time::Instant,
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
            deliverer: Deliverer::new(
                meta.session,
                &meta.transcript,
                delivery.client.clone(),
                Some(store.clone()),
                delivery.limits,
                watermark,
                identity,
            ),
            store,
            meta,
            holder,
            delivery,
            last_record: std::time::Instant::now(),
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
        let identity = self.deliverer.position().1;
        let result = blocking(move || {
            store.record_step(&meta, &input, &phase, watermark, identity, &holder, now_ms())
        })
        .await;
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
            now: now_ms(),
            tail: observed,
        }
    }

    async fn deliver(&mut self, take_unterminated: bool) -> Input {
        let failed = |error: DeliveryError, stats: &mut RunStats| {
            stats.failures += 1;
            tracing::warn!(error = %error, "delivery failed");
            Input::DeliveryFailed {
                now: now_ms(),
                retryable: error.retryable(),
                error: error.message(),
            }
        };
        if !self.deliverer.resumed() && !self.store_failed {
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
                    DeliveryError::Send(SendError::Retryable(format!(
                        "session-start not delivered: {error}"
                    ))),
                    &mut self.stats,
                );
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
                    now: now_ms(),
                    upto: sent.upto,
                    drained: sent.drained,
                }
            }
            Err(e) => failed(e, &mut self.stats),
        }
    }
}
