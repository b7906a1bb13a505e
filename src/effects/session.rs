//! One session's finalizer from the store's point of view: record the spawn, take the lease,
//! rebuild the machine from its log, run it, release the lease.

use std::path::Path;
use std::time::Duration;

use crate::config::now_ms;
use crate::effects::blocking;
use crate::effects::interpreter::{Delivery, Interpreter, RunStats};
use crate::effects::open::Identity;
use crate::ids::SessionId;
use crate::machine::{Input, Millis, State, Timings, Watermark};
use crate::store::{Holder, LeaseOutcome, MachineMeta, MachineRecord, Store, StoreError};

/// How a run starts: a fresh spawn (`kcap finalizer`), a recovery asked for by hand
/// (`finalize --resume`), or the hook's background sweep (`finalize --resume --sweep`), which
/// leaves a parked machine alone until its `retry_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Spawn,
    Resume,
    Sweep,
}

#[derive(Debug)]
pub enum RunOutcome {
    /// The machine ran; here is where it stopped.
    Ran {
        state: State,
        stats: RunStats,
        generation: u32,
    },
    AlreadyDrained {
        generation: u32,
    },
    /// Another live process holds the session's lease.
    Busy {
        pid: u32,
    },
    NoMachine,
}

pub struct SessionRun<'a> {
    pub store: &'a Store,
    pub delivery: &'a Delivery,
    pub session: SessionId,
    /// When the lease is busy, wait for it until this time instead of giving up at once.
    pub wait_for_lease_until: Option<Millis>,
    pub poll: Duration,
}

impl SessionRun<'_> {
    pub async fn run(&self, start: Start) -> Result<RunOutcome, StoreError> {
        let holder = Holder::current();
        loop {
            let (store, session) = (self.store.clone(), self.session);
            let outcome = blocking(move || store.acquire_lease(session, &holder, now_ms())).await?;
            match outcome {
                LeaseOutcome::Acquired => break,
                LeaseOutcome::HeldBy(lease) => match self.wait_for_lease_until {
                    Some(until) if now_ms() < until => tokio::time::sleep(self.poll).await,
                    _ => {
                        return Ok(RunOutcome::Busy {
                            pid: lease.holder.pid,
                        })
                    }
                },
            }
        }
        let result = self.run_leased(start, holder).await;
        let (store, session) = (self.store.clone(), self.session);
        if let Err(e) = blocking(move || store.release_lease(session, &holder)).await {
            tracing::warn!(error = %e, "cannot release the session lease; it expires by itself");
        }
        result
    }

    async fn run_leased(&self, start: Start, holder: Holder) -> Result<RunOutcome, StoreError> {
        let (store, session) = (self.store.clone(), self.session);
        let Some(record) = blocking(move || store.latest_machine(session)).await? else {
            return Ok(RunOutcome::NoMachine);
        };
        let generation = record.meta.generation;
        let rebuilt = Rebuilt::from_record(&record, start, now_ms());
        if rebuilt.diverged > 0 {
            tracing::warn!(
                diverged = rebuilt.diverged,
                "the transition log does not replay exactly; carrying on from the replayed state"
            );
        }
        if rebuilt.state.phase.is_terminal() {
            return Ok(RunOutcome::AlreadyDrained { generation });
        }
        tracing::info!(
            generation,
            phase = rebuilt.state.phase.name(),
            input = rebuilt.first.name(),
            "machine rebuilt from its log"
        );
        let mut interpreter = Interpreter::new(
            self.store.clone(),
            record.meta.clone(),
            holder,
            self.delivery.clone(),
            rebuilt.watermark,
            rebuilt.identity,
        );
        let state = interpreter.run(rebuilt.state, rebuilt.first).await;
        Ok(RunOutcome::Ran {
            state,
            stats: interpreter.stats,
            generation,
        })
    }
}

/// A machine rebuilt from its persisted record, as a restarted process runs it: shared by
/// [`SessionRun`] and the simulation (tests/simulation_finalizer.rs), so both restart alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// The fold of the logged inputs from the spawn record.
    pub state: State,
    /// Logged phases the replay did not reproduce (0 unless the machine's rules changed).
    pub diverged: usize,
    /// The input the run starts with ([`first_input`]).
    pub first: Input,
    /// Where delivery resumes locally ([`MachineRecord::local_watermark`]) and the file that
    /// position is about, when known.
    pub watermark: Option<Watermark>,
    pub identity: Option<Identity>,
}

impl Rebuilt {
    /// Rebuilds the machine of `record` for a run started as `start` at `now`.
    pub fn from_record(record: &MachineRecord, start: Start, now: Millis) -> Rebuilt {
        let (state, diverged) = record.state();
        Rebuilt {
            first: first_input(&state, start, now),
            state,
            diverged,
            watermark: record.local_watermark(),
            identity: record.identity,
        }
    }
}

/// The input a run of a machine rebuilt from its log starts with.
pub fn first_input(state: &State, start: Start, now: Millis) -> Input {
    match (&state.phase, start) {
        (crate::machine::Phase::Spawned { .. }, Start::Spawn) => Input::Started { now },
        (_, Start::Sweep) => Input::Swept { now },
        _ => Input::Resumed { now },
    }
}

/// Records a new machine for `session` (the spawn record), returning its generation.
pub async fn record_spawn(
    store: &Store,
    session: SessionId,
    transcript: &Path,
    timings: Timings,
    at: Millis,
) -> Result<u32, StoreError> {
    let (store, transcript) = (store.clone(), transcript.to_path_buf());
    blocking(move || store.spawn_machine(session, &transcript, timings, at)).await
}

/// Runs a machine with no store at all: the store is unusable, and delivery must not stop.
pub async fn run_without_store(store: &Store, delivery: &Delivery, meta: MachineMeta) -> (State, RunStats) {
    let state = State::spawned(meta.timings, meta.spawned_at);
    let mut interpreter = Interpreter::new(
        store.clone(),
        meta,
        Holder::current(),
        delivery.clone(),
        None,
        None,
    )
    .without_store();
    let state = interpreter.run(state, Input::Started { now: now_ms() }).await;
    (state, interpreter.stats)
}
