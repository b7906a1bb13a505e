//! The finalizer as a pure state machine (docs/architecture.md, "The finalizer").
//!
//! `step(state, input) -> (state, commands)`: no clock, no IO, no randomness. Time arrives in every
//! input as epoch milliseconds; side effects leave as [`Command`] values that `effects` performs.
//! The store logs every accepted input, so the state after any crash is the fold of that log.

pub mod table;
pub mod terminal;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// Budgets and intervals, fixed when a machine is spawned and stored with it, so a machine resumed
/// after a crash keeps the timings it started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Pause between two looks at the transcript's last line while waiting for the shutdown.
    pub poll_ms: u64,
    /// How long after spawn the shutdown line may take to appear before the tail is drained anyway.
    pub shutdown_budget_ms: u64,
    /// First delivery retry delay; doubles per consecutive failure up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// Longest delay between two delivery retries.
    pub retry_max_ms: u64,
    /// How long delivery may go without progress before the machine parks.
    pub delivery_budget_ms: u64,
    /// Earliest time after parking at which a background sweep should try again.
    pub park_retry_ms: u64,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            poll_ms: 300,
            shutdown_budget_ms: 45_000,
            retry_initial_ms: 250,
            retry_max_ms: 4_000,
            delivery_budget_ms: 120_000,
            park_retry_ms: 60_000,
        }
    }
}

/// Why the machine is delivering: the shutdown line showed up, or the budget ran out first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The shutdown line starts at byte `offset`.
    Shutdown { offset: u64 },
    /// The shutdown budget ran out first.
    TimedOut,
}

/// One delivery run: its no-progress deadline and the consecutive failures so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Parks the machine if delivery has made no progress by then.
    pub deadline: Millis,
    /// Consecutive failed delivery steps (sets the backoff).
    pub failures: u32,
}

/// Why a machine stopped delivering before it drained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ParkReason {
    /// Transport errors, 5xx, 408 or 429 for the whole delivery budget.
    Unreachable { last_error: String },
    /// The server refused in a way retrying cannot fix (auth, other 4xx).
    Refused { last_error: String },
}

/// Where the finalizer is: `Spawned → Polling → ShutdownSeen | TimedOut → Drained`, or `Parked`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Spawned {
        at: Millis,
    },
    Polling {
        deadline: Millis,
    },
    ShutdownSeen {
        offset: u64,
        run: Run,
    },
    TimedOut {
        run: Run,
    },
    Parked {
        outcome: Outcome,
        reason: ParkReason,
        retry_at: Millis,
    },
    Drained {
        outcome: Outcome,
        at: Millis,
    },
}

impl Phase {
    /// The phase's name, without its data.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Spawned { .. } => "Spawned",
            Phase::Polling { .. } => "Polling",
            Phase::ShutdownSeen { .. } => "ShutdownSeen",
            Phase::TimedOut { .. } => "TimedOut",
            Phase::Parked { .. } => "Parked",
            Phase::Drained { .. } => "Drained",
        }
    }

    /// Drained: nothing more will happen to this machine.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Phase::Drained { .. })
    }
}

/// A machine: its timings (fixed at spawn) and its phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Budgets and intervals, as spawned.
    pub timings: Timings,
    /// Where it is.
    pub phase: Phase,
}

impl State {
    /// A machine just spawned at `at`.
    pub fn spawned(timings: Timings, at: Millis) -> Self {
        State {
            timings,
            phase: Phase::Spawned { at },
        }
    }
}

/// What a look at the transcript's end found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Tail {
    /// The last non-blank line is a complete `session.shutdown` object starting at byte `offset`
    /// (a byte offset, not a line number: finding the number would mean reading the whole file).
    Shutdown { offset: u64 },
    /// The last line is something else (or incomplete).
    NotYet,
    /// There is no transcript (yet).
    Missing,
}

/// Delivery position: everything before `next_line` (and before byte `offset`) is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Watermark {
    pub next_line: u64,
    pub offset: u64,
    /// The last acknowledged line had no newline yet (it was delivered because it parsed as a
    /// complete object, or because the budget was over): a `\n` found at `offset` ends that line
    /// rather than starting a new one.
    #[serde(default)]
    pub open_line: bool,
}

/// What the world told the machine; every input carries the time it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    Started {
        now: Millis,
    },
    TailObserved {
        now: Millis,
        tail: Tail,
    },
    Woke {
        now: Millis,
    },
    /// The server acknowledged a batch (2xx). `upto` is `None` when there was nothing left to send.
    BatchAcked {
        now: Millis,
        upto: Option<Watermark>,
        drained: bool,
    },
    DeliveryFailed {
        now: Millis,
        retryable: bool,
        error: String,
    },
    /// A recovery asked for by hand (`kcap finalize --resume`, `--session`): a parked machine is
    /// retried at once.
    Resumed {
        now: Millis,
    },
    /// The background sweep looked at the machine: like `Resumed`, except that a parked machine
    /// stays parked (and exits) until its `retry_at`.
    Swept {
        now: Millis,
    },
}

impl Input {
    /// When the input happened (epoch ms).
    pub fn now(&self) -> Millis {
        match *self {
            Input::Started { now }
            | Input::TailObserved { now, .. }
            | Input::Woke { now }
            | Input::BatchAcked { now, .. }
            | Input::DeliveryFailed { now, .. }
            | Input::Resumed { now }
            | Input::Swept { now } => now,
        }
    }

    /// The input's name, without its data.
    pub fn name(&self) -> &'static str {
        match self {
            Input::Started { .. } => "Started",
            Input::TailObserved { .. } => "TailObserved",
            Input::Woke { .. } => "Woke",
            Input::BatchAcked { .. } => "BatchAcked",
            Input::DeliveryFailed { .. } => "DeliveryFailed",
            Input::Resumed { .. } => "Resumed",
            Input::Swept { .. } => "Swept",
        }
    }
}

/// A side effect the machine asks for, performed by the interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Look at the transcript's last non-blank line; answers with `TailObserved`.
    ObserveTail,
    /// Sleep until `at`; answers with `Woke`.
    WakeAt {
        at: Millis,
    },
    /// Send the next bounded batch after the watermark; answers with `BatchAcked` or
    /// `DeliveryFailed`. `take_unterminated`: a last line without its newline goes too (the
    /// budget is over and nothing more will be waited for).
    DeliverBatch {
        take_unterminated: bool,
    },
    PersistWatermark {
        watermark: Watermark,
    },
    /// Stop the interpreter; the machine is drained or parked.
    Exit,
}

impl Command {
    /// Commands that answer with exactly one input. Every step emits at most one of them, so the
    /// interpreter never has two answers in flight.
    pub fn answers(&self) -> bool {
        matches!(
            self,
            Command::ObserveTail | Command::WakeAt { .. } | Command::DeliverBatch { .. }
        )
    }
}

/// An input that has no meaning in the current phase. Rejected inputs are not logged and change
/// nothing; the interpreter reports them as bugs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub phase: &'static str,
    pub input: &'static str,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "input {} is not accepted in phase {}", self.input, self.phase)
    }
}

impl std::error::Error for Rejected {}

/// The result of a step: the next state and the commands to perform, in order.
pub type Stepped = (State, Vec<Command>);

/// The machine's one transition: the next state and the commands to perform, or `Rejected` for
/// an input that has no meaning in the current phase. Pure: time comes in with the input.
pub fn step(state: &State, input: &Input) -> Result<Stepped, Rejected> {
    let t = state.timings;
    // A sweep is a resume everywhere but in `Parked`, where it waits for `retry_at`.
    if let Input::Swept { now } = *input {
        return match state.phase {
            Phase::Parked { retry_at, .. } if now < retry_at => Ok((state.clone(), vec![Command::Exit])),
            Phase::Drained { .. } => Err(Rejected {
                phase: state.phase.name(),
                input: input.name(),
            }),
            _ => step(state, &Input::Resumed { now }),
        };
    }
    let to = |phase: Phase, commands: Vec<Command>| Ok((State { timings: t, phase }, commands));
    let reject = || {
        Err(Rejected {
            phase: state.phase.name(),
            input: input.name(),
        })
    };
    let fresh_run = |now: Millis| Run {
        deadline: now.saturating_add(t.delivery_budget_ms),
        failures: 0,
    };
    let deliver = |outcome: Outcome| Command::DeliverBatch {
        take_unterminated: outcome == Outcome::TimedOut,
    };

    match (&state.phase, input) {
        (Phase::Spawned { at }, Input::Started { .. } | Input::Resumed { .. }) => to(
            Phase::Polling {
                deadline: at.saturating_add(t.shutdown_budget_ms),
            },
            vec![Command::ObserveTail],
        ),

        (Phase::Polling { deadline }, Input::TailObserved { now, tail }) => match tail {
            Tail::Shutdown { offset } => {
                let outcome = Outcome::Shutdown { offset: *offset };
                to(delivering(outcome, fresh_run(*now)), vec![deliver(outcome)])
            }
            Tail::NotYet | Tail::Missing if now >= deadline => to(
                delivering(Outcome::TimedOut, fresh_run(*now)),
                vec![deliver(Outcome::TimedOut)],
            ),
            Tail::NotYet | Tail::Missing => to(
                state.phase.clone(),
                vec![Command::WakeAt {
                    at: now.saturating_add(t.poll_ms).min(*deadline),
                }],
            ),
        },
        (Phase::Polling { .. }, Input::Woke { .. } | Input::Resumed { .. }) => {
            to(state.phase.clone(), vec![Command::ObserveTail])
        }

        (Phase::ShutdownSeen { run, .. } | Phase::TimedOut { run }, _) => {
            let outcome = outcome_of(&state.phase).expect("delivering phase has an outcome");
            match input {
                Input::BatchAcked { now, upto, drained } => {
                    let mut commands: Vec<Command> = upto
                        .map(|watermark| Command::PersistWatermark { watermark })
                        .into_iter()
                        .collect();
                    if *drained {
                        commands.push(Command::Exit);
                        to(Phase::Drained { outcome, at: *now }, commands)
                    } else {
                        commands.push(deliver(outcome));
                        to(delivering(outcome, fresh_run(*now)), commands)
                    }
                }
                Input::DeliveryFailed {
                    now,
                    retryable,
                    error,
                } => {
                    let failures = run.failures.saturating_add(1);
                    let backoff = backoff_ms(&t, failures);
                    let retry_at = now.saturating_add(backoff);
                    if !retryable || retry_at > run.deadline {
                        let reason = if *retryable {
                            ParkReason::Unreachable {
                                last_error: error.clone(),
                            }
                        } else {
                            ParkReason::Refused {
                                last_error: error.clone(),
                            }
                        };
                        let parked = Phase::Parked {
                            outcome,
                            reason,
                            retry_at: now.saturating_add(t.park_retry_ms),
                        };
                        to(parked, vec![Command::Exit])
                    } else {
                        let run = Run {
                            deadline: run.deadline,
                            failures,
                        };
                        to(delivering(outcome, run), vec![Command::WakeAt { at: retry_at }])
                    }
                }
                Input::Woke { .. } => to(state.phase.clone(), vec![deliver(outcome)]),
                Input::Resumed { now } => to(delivering(outcome, fresh_run(*now)), vec![deliver(outcome)]),
                Input::Started { .. } | Input::TailObserved { .. } | Input::Swept { .. } => reject(),
            }
        }

        (Phase::Parked { outcome, .. }, Input::Resumed { now }) => {
            to(delivering(*outcome, fresh_run(*now)), vec![deliver(*outcome)])
        }

        _ => reject(),
    }
}

fn delivering(outcome: Outcome, run: Run) -> Phase {
    match outcome {
        Outcome::Shutdown { offset } => Phase::ShutdownSeen { offset, run },
        Outcome::TimedOut => Phase::TimedOut { run },
    }
}

fn outcome_of(phase: &Phase) -> Option<Outcome> {
    match phase {
        Phase::ShutdownSeen { offset, .. } => Some(Outcome::Shutdown { offset: *offset }),
        Phase::TimedOut { .. } => Some(Outcome::TimedOut),
        Phase::Parked { outcome, .. } | Phase::Drained { outcome, .. } => Some(*outcome),
        Phase::Spawned { .. } | Phase::Polling { .. } => None,
    }
}

/// Delay before retry number `failures` (1-based): initial, doubling, capped.
pub fn backoff_ms(t: &Timings, failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(32);
    t.retry_initial_ms
        .saturating_mul(1u64 << doublings)
        .min(t.retry_max_ms)
}

/// Replays logged inputs from the spawn record. Returns the state and the number of inputs the
/// machine refused (a non-zero count means the log was written by a different machine version).
pub fn fold<'a>(start: State, inputs: impl IntoIterator<Item = &'a Input>) -> (State, usize) {
    let mut refused = 0;
    let state = inputs
        .into_iter()
        .fold(start, |state, input| match step(&state, input) {
            Ok((next, _)) => next,
            Err(_) => {
                refused += 1;
                state
            }
        });
    (state, refused)
}

/// The furthest acknowledged position a log implies, if any batch was acknowledged.
pub fn watermark_of<'a>(inputs: impl IntoIterator<Item = &'a Input>) -> Option<Watermark> {
    inputs
        .into_iter()
        .filter_map(|input| match input {
            Input::BatchAcked { upto, .. } => *upto,
            _ => None,
        })
        .max_by_key(|w| w.next_line)
}

#[cfg(test)]
mod tests;
