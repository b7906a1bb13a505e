//! The transition table, the diagram and whole traces, pinned with insta under `snapshots/`.

use kcap::machine::table::{describe_commands, describe_phase, markdown, mermaid};
use kcap::machine::{fold, step, Input, State, Tail, Timings, Watermark};

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../snapshots");
    s.set_prepend_module_to_snapshot(false);
    s
}

#[test]
fn transition_table() {
    settings().bind(|| insta::assert_snapshot!("transition_table", markdown()));
}

#[test]
fn state_diagram() {
    settings().bind(|| insta::assert_snapshot!("state_diagram", mermaid()));
}

/// Steps `inputs` from `state`, one rendered line per step; panics on a rejected input, because
/// every trace here is a path the interpreter really takes.
fn render_steps(mut state: State, inputs: &[Input], out: &mut String) -> State {
    for input in inputs {
        let (next, commands) = step(&state, input).unwrap_or_else(|r| panic!("{r}"));
        out.push_str(&format!(
            "t={:>6} {:<14} -> {:<58} {}\n",
            input.now(),
            input.name(),
            describe_phase(&next.phase, 0),
            describe_commands(&commands, 0)
        ));
        state = next;
    }
    state
}

/// Runs `inputs` from a fresh spawn at t=0.
fn trace(timings: Timings, inputs: &[Input]) -> String {
    let state = State::spawned(timings, 0);
    let mut out = format!("start: {}\n", describe_phase(&state.phase, 0));
    render_steps(state, inputs, &mut out);
    out
}

fn observed(now: u64, tail: Tail) -> Input {
    Input::TailObserved { now, tail }
}

fn acked(now: u64, next_line: u64, drained: bool) -> Input {
    Input::BatchAcked {
        now,
        upto: Some(Watermark {
            next_line,
            offset: next_line * 3_000,
            open_line: false,
        }),
        drained,
    }
}

fn fail(now: u64) -> Input {
    Input::DeliveryFailed {
        now,
        retryable: true,
        error: "connection refused".into(),
    }
}

#[test]
fn trace_shutdown_already_present() {
    let t = Timings::default();
    let inputs = [
        Input::Started { now: 20 },
        observed(25, Tail::Shutdown { offset: 160_420 }),
        acked(60, 55, true),
    ];
    settings().bind(|| insta::assert_snapshot!("trace_shutdown_already_present", trace(t, &inputs)));
}

#[test]
fn trace_shutdown_arrives_late() {
    let t = Timings::default();
    let inputs = [
        Input::Started { now: 20 },
        observed(25, Tail::NotYet),
        Input::Woke { now: 325 },
        observed(326, Tail::NotYet),
        Input::Woke { now: 626 },
        observed(627, Tail::Shutdown { offset: 160_420 }),
        acked(660, 1_000, false),
        acked(700, 1_431, true),
    ];
    settings().bind(|| insta::assert_snapshot!("trace_shutdown_arrives_late", trace(t, &inputs)));
}

#[test]
fn trace_budget_runs_out() {
    let t = Timings {
        shutdown_budget_ms: 600,
        ..Timings::default()
    };
    let inputs = [
        Input::Started { now: 20 },
        observed(25, Tail::NotYet),
        Input::Woke { now: 325 },
        observed(326, Tail::NotYet),
        Input::Woke { now: 600 },
        observed(601, Tail::NotYet),
        acked(640, 54, true),
    ];
    settings().bind(|| insta::assert_snapshot!("trace_budget_runs_out", trace(t, &inputs)));
}

#[test]
fn trace_server_down_then_back() {
    let t = Timings {
        delivery_budget_ms: 2_000,
        ..Timings::default()
    };
    let mut inputs = vec![
        Input::Started { now: 20 },
        observed(25, Tail::Shutdown { offset: 160_420 }),
    ];
    // Failures at 30, 280, 780, 1780: the next retry (at 3780) would pass the deadline at 2025.
    for (fail_at, woke_at) in [(30, 280), (280, 780), (780, 1_780)] {
        inputs.push(fail(fail_at));
        inputs.push(Input::Woke { now: woke_at });
    }
    inputs.push(fail(1_780));
    // The user (or the sweep) resumes the parked machine once the server is back.
    inputs.push(Input::Resumed { now: 90_000 });
    inputs.push(acked(90_050, 55, true));
    settings().bind(|| insta::assert_snapshot!("trace_server_down_then_back", trace(t, &inputs)));
}

#[test]
fn trace_crash_mid_drain_then_resume() {
    let t = Timings::default();
    // The log as a killed finalizer left it: two batches acknowledged, a third in flight.
    let logged = [
        Input::Started { now: 20 },
        observed(25, Tail::Shutdown { offset: 3_000_000 }),
        acked(60, 1_000, false),
        acked(90, 2_000, false),
    ];
    let (rebuilt, refused) = fold(State::spawned(t, 0), &logged);
    assert_eq!(refused, 0);
    let mut out = trace(t, &logged);
    out.push_str("--- kill -9; `kcap finalize --resume` folds the log ---\n");
    out.push_str(&format!("rebuilt: {}\n", describe_phase(&rebuilt.phase, 0)));
    let resumed = [
        Input::Resumed { now: 5_000 },
        acked(5_040, 3_000, false),
        acked(5_070, 3_310, true),
    ];
    render_steps(rebuilt, &resumed, &mut out);
    settings().bind(|| insta::assert_snapshot!("trace_crash_mid_drain_then_resume", out));
}
