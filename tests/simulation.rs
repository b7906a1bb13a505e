//! Deterministic simulation of the finalizer: the real pure machine (`machine::step`) driven by a
//! simulated clock, transcript and server, with a seeded RNG. For every seed, the run is crashed
//! after each command in turn, rebuilt from its log as `finalize --resume` does, and carried on.
//!
//! Invariants checked for every schedule:
//! - the server ends with every non-blank line stored exactly once (replays are dropped by id);
//! - the watermark never passes a line the server has not acknowledged;
//! - the machine reaches `Drained` once the server is reachable;
//! - the log replays to the logged state.
//!
//! A failure prints its seed; `KCAP_SIM_SEED=<n>` replays just that one. `KCAP_SIM_SEEDS=<n>` runs
//! more (the soak: `KCAP_SIM_SEEDS=20000 cargo test --release --test simulation`).

use std::collections::BTreeMap;

use kcap::machine::{fold, step, Command, Input, Phase, State, Tail, Timings, Watermark};

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

/// The world outside the machine.
struct World {
    /// Line texts; `None` is a blank line (counted, never sent).
    lines: Vec<Option<String>>,
    /// The shutdown line appears at this time (or never).
    shutdown_at: Option<u64>,
    shutdown_appended: bool,
    /// The server refuses everything before this time, then fails at random.
    server_down_until: u64,
    fail_percent: u64,
    /// line number -> how many times the server stored it as new.
    stored: BTreeMap<u64, u32>,
    batch_lines: usize,
    /// A broken server that acknowledges without storing (the negative control).
    lossy: bool,
}

impl World {
    fn generate(rng: &mut Rng) -> World {
        let n = 1 + rng.below(60) as usize;
        let lines = (0..n)
            .map(|i| {
                if rng.chance(10) {
                    None
                } else {
                    Some(format!(r#"{{"type":"x","n":{i}}}"#))
                }
            })
            .collect();
        World {
            lines,
            shutdown_at: if rng.chance(80) {
                Some(rng.below(3_000))
            } else {
                None
            },
            shutdown_appended: false,
            server_down_until: if rng.chance(30) { rng.below(200_000) } else { 0 },
            fail_percent: rng.below(40),
            stored: BTreeMap::new(),
            batch_lines: 1 + rng.below(10) as usize,
            lossy: false,
        }
    }

    fn advance_to(&mut self, now: u64) {
        if !self.shutdown_appended && self.shutdown_at.is_some_and(|t| now >= t) {
            self.lines.push(Some(r#"{"type":"session.shutdown"}"#.into()));
            self.shutdown_appended = true;
        }
    }

    fn tail(&self) -> Tail {
        match self.lines.iter().rposition(Option::is_some) {
            Some(i) if self.shutdown_appended && i == self.lines.len() - 1 => {
                Tail::Shutdown { offset: i as u64 }
            }
            _ => Tail::NotYet,
        }
    }

    fn non_blank(&self) -> impl Iterator<Item = u64> + '_ {
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_some())
            .map(|(i, _)| i as u64)
    }

    /// Sends the batch after `from`; returns the input the interpreter would feed back.
    fn deliver(&mut self, rng: &mut Rng, now: u64, from: Watermark) -> Input {
        if now < self.server_down_until || rng.chance(self.fail_percent) {
            return Input::DeliveryFailed {
                now,
                retryable: true,
                error: "simulated outage".into(),
            };
        }
        let start = from.next_line as usize;
        let mut end = start;
        let mut sent = 0;
        while end < self.lines.len() && sent < self.batch_lines {
            if self.lines[end].is_some() {
                sent += 1;
            }
            end += 1;
        }
        if end == start {
            return Input::BatchAcked {
                now,
                upto: None,
                drained: true,
            };
        }
        // A reply lost after the server stored the batch: the client must resend (a replay).
        let lost_reply = rng.chance(5);
        for n in start..end {
            if self.lines[n].is_some() && !self.lossy {
                let count = self.stored.entry(n as u64).or_insert(0);
                if *count == 0 {
                    *count = 1;
                }
            }
        }
        if lost_reply {
            return Input::DeliveryFailed {
                now,
                retryable: true,
                error: "reply lost".into(),
            };
        }
        let upto = Watermark {
            next_line: end as u64,
            offset: end as u64,
            open_line: false,
        };
        Input::BatchAcked {
            now,
            upto: Some(upto),
            drained: end == self.lines.len(),
        }
    }
}

/// The durable log, as the store keeps it: the spawn record, then every accepted input.
struct Log {
    spawn: State,
    inputs: Vec<Input>,
    watermark: Option<Watermark>,
}

/// Runs the machine; stops after `crash_after` commands (a crash) or when it exits. Returns the
/// number of commands performed and whether it exited.
fn run(
    world: &mut World,
    rng: &mut Rng,
    log: &mut Log,
    clock: &mut u64,
    first: Input,
    crash_after: Option<usize>,
) -> Result<(usize, bool), String> {
    let (mut state, refused) = fold(log.spawn.clone(), &log.inputs);
    if refused > 0 {
        return Err(format!("log refused {refused} inputs on replay"));
    }
    let mut input = first;
    let mut performed = 0;
    for _ in 0..100_000 {
        let (next, commands) = step(&state, &input).map_err(|r| format!("rejected: {r}"))?;
        // Logged before its commands run.
        log.inputs.push(input.clone());
        state = next;
        let mut answer = None;
        for command in commands {
            if crash_after == Some(performed) {
                return Ok((performed, false));
            }
            performed += 1;
            match command {
                Command::PersistWatermark { watermark } => {
                    // Acknowledged lines only: the watermark may never pass an unstored line.
                    for n in 0..watermark.next_line {
                        if world.lines[n as usize].is_some() && !world.stored.contains_key(&n) {
                            return Err(format!(
                                "watermark {} passes unacknowledged line {n}",
                                watermark.next_line
                            ));
                        }
                    }
                    if log.watermark.is_none_or(|w| w.next_line < watermark.next_line) {
                        log.watermark = Some(watermark);
                    }
                }
                Command::Exit => return Ok((performed, true)),
                Command::ObserveTail => {
                    world.advance_to(*clock);
                    answer = Some(Input::TailObserved {
                        now: *clock,
                        tail: world.tail(),
                    });
                }
                Command::WakeAt { at } => {
                    *clock = (*clock).max(at);
                    world.advance_to(*clock);
                    answer = Some(Input::Woke { now: *clock });
                }
                Command::DeliverBatch { .. } => {
                    *clock += 1 + rng.below(30);
                    world.advance_to(*clock);
                    let from = log.watermark.unwrap_or_default();
                    answer = Some(world.deliver(rng, *clock, from));
                }
            }
        }
        input = answer.ok_or("machine waits for nothing")?;
    }
    Err("did not finish in 100,000 steps".into())
}

/// One seed: a clean run to count commands, then a crash after each command in turn.
fn check_seed(seed: u64) -> Result<usize, String> {
    check_seed_in(seed, false)
}

fn check_seed_in(seed: u64, lossy: bool) -> Result<usize, String> {
    let timings = Timings {
        poll_ms: 300,
        shutdown_budget_ms: 2_000,
        retry_initial_ms: 250,
        retry_max_ms: 4_000,
        delivery_budget_ms: 20_000,
        park_retry_ms: 60_000,
    };
    let schedule = |crash_after: Option<usize>| -> Result<usize, String> {
        let mut rng = Rng::new(seed);
        let mut world = World::generate(&mut rng);
        world.lossy = lossy;
        let mut log = Log {
            spawn: State::spawned(timings, 0),
            inputs: Vec::new(),
            watermark: None,
        };
        let mut clock = 0;
        let (performed, _exited) = run(
            &mut world,
            &mut rng,
            &mut log,
            &mut clock,
            Input::Started { now: 0 },
            crash_after,
        )?;
        // Crashed, parked or not: `finalize --resume` (and later sweeps) carry it on, once the
        // server is back, until it drains.
        for _ in 0..50 {
            let (state, _) = fold(log.spawn.clone(), &log.inputs);
            if state.phase.is_terminal() {
                break;
            }
            clock += 60_000;
            world.server_down_until = 0;
            world.fail_percent = world.fail_percent.min(20);
            let resumed = Input::Resumed { now: clock };
            run(&mut world, &mut rng, &mut log, &mut clock, resumed, None)?;
        }
        let (state, refused) = fold(log.spawn.clone(), &log.inputs);
        if refused > 0 {
            return Err(format!("the log does not replay: {refused} inputs refused"));
        }
        if !matches!(state.phase, Phase::Drained { .. }) {
            return Err(format!("ended in {:?} with the server reachable", state.phase));
        }
        let missing: Vec<u64> = world
            .non_blank()
            .filter(|n| !world.stored.contains_key(n))
            .collect();
        if !missing.is_empty() {
            return Err(format!("lines never stored: {missing:?}"));
        }
        if let Some(n) = world.stored.keys().find(|n| world.lines[**n as usize].is_none()) {
            return Err(format!("blank line {n} was stored"));
        }
        Ok(performed)
    };
    let commands = schedule(None).map_err(|e| format!("clean run: {e}"))?;
    for crash_after in 0..commands {
        schedule(Some(crash_after)).map_err(|e| format!("crash after command {crash_after}: {e}"))?;
    }
    Ok(commands + 1)
}

#[test]
fn every_crash_point_of_every_seed_recovers_to_exactly_once() {
    let seeds: Vec<u64> = match std::env::var("KCAP_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => {
            let n = std::env::var("KCAP_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2_000u64);
            (1..=n).collect()
        }
    };
    let mut schedules = 0;
    for seed in &seeds {
        match check_seed(*seed) {
            Ok(n) => schedules += n,
            Err(e) => panic!("seed {seed}: {e}\nreplay with KCAP_SIM_SEED={seed}"),
        }
    }
    eprintln!(
        "simulation: {} seeds, {schedules} schedules, every one recovered",
        seeds.len()
    );
    assert!(schedules >= seeds.len());
}

/// The simulation must be able to fail: against a server that acknowledges without storing,
/// the watermark check (or the final loss check) fires for every seed with a non-blank line.
#[test]
fn the_simulation_catches_a_server_that_loses_acknowledged_lines() {
    for seed in 1..=50 {
        let err = check_seed_in(seed, true).expect_err("a lossy server went unnoticed");
        assert!(
            err.contains("unacknowledged") || err.contains("never stored"),
            "seed {seed}: {err}"
        );
    }
}
