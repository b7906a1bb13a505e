//! The background sweep posts the queued ends of sessions that have no machine left to run.
//! A sessionEnd hook queues its end for the finalizer it starts: a sweep that runs while the
//! hook is between the two must not take that end for one whose lines are all delivered and
//! post it before the session's post-hook tail.
//!
//! The gate itself is tested deterministically (`a_queued_end_waits_for_its_finalizer_to_drain`);
//! the race test runs the real processes a few times, and is given room for a slow, loaded
//! machine: the hook alone may take its whole 8 s cap there.

mod capture_support;
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capture_support::*;
use common::*;
use kcap::effects::client::Client;
use kcap::effects::outbox::{self, Flush};
use kcap::effects::runs;
use kcap::ids::SessionId;
use kcap::machine::{step, Input, Phase, Tail, Timings};
use kcap::store::{Holder, NoticeKind, Store};
use serde_json::json;

/// Runs the session's finalizer of `generation` in the store to Drained (shutdown seen, last
/// batch acknowledged), as a finalizer would record it.
#[track_caller]
fn drain(store: &Store, sid: SessionId, generation: u32) {
    let record = store.machine(sid, generation).unwrap().expect("the machine");
    let (mut state, _) = record.state();
    let holder = Holder {
        pid: 1,
        start_ticks: 1,
    };
    let inputs = [
        Input::Started { now: 10 },
        Input::TailObserved {
            now: 11,
            tail: Tail::Shutdown { offset: 0 },
        },
        Input::BatchAcked {
            now: 12,
            upto: None,
            drained: true,
        },
    ];
    for input in inputs {
        let (next, _) = step(&state, &input).unwrap();
        store
            .record_step(&kcap::store::Step {
                session: record.meta.session,
                generation: record.meta.generation,
                input: input.clone(),
                phase_after: next.phase.clone(),
                watermark: None,
                identity: None,
                holder,
                at: input.now(),
            })
            .unwrap();
        state = next;
    }
    assert!(matches!(state.phase, Phase::Drained { .. }), "{:?}", state.phase);
}

/// The flusher's gate, without processes or timing: a queued end is not posted while the
/// finalizer that delivers its run's tail has not drained (however often it is flushed), and is
/// posted once it has; a later run's finalizer that has not drained does not hold it back.
#[tokio::test(flavor = "multi_thread")]
async fn a_queued_end_waits_for_its_finalizer_to_drain() {
    let (env, server) = (Env::new(), server().await);
    let store = env.store();
    let client = Client::new(&server.url(), None, Duration::from_secs(5)).unwrap();
    let (sid, path) = env.session(&synthetic_transcript(SessionId::new_random(), 3, true));
    let generation = store.spawn_machine(sid, &path, Timings::default(), 1).unwrap();
    let mut body = json!({"session_id": sid.dashless(), "reason": "complete"});
    body[runs::RUN_KEY] = 0.into();
    body[runs::GEN_KEY] = generation.into();
    store
        .queue_notice(sid, &outbox::notice(NoticeKind::SessionEnd, body))
        .unwrap();
    for _ in 0..3 {
        let flushed = outbox::flush(&store, &client, Some(sid), Flush::All).await;
        assert_eq!(flushed.delivered, 0, "{flushed:?}");
        assert!(flushed.busy, "{flushed:?}");
    }
    assert_eq!(store.pending_notices(Some(sid)).unwrap().len(), 1);
    assert!(!ended_on(&server, sid), "posted before its finalizer drained");
    drain(&store, sid, generation);
    // A later run's finalizer, still waiting for its shutdown, does not hold run 1's end back.
    store.spawn_machine(sid, &path, Timings::default(), 2).unwrap();
    let flushed = outbox::flush(&store, &client, Some(sid), Flush::All).await;
    assert_eq!((flushed.delivered, &flushed.failed), (1, &None), "{flushed:?}");
    assert!(store.pending_notices(Some(sid)).unwrap().is_empty());
    assert!(ended_on(&server, sid), "not posted once its finalizer drained");
}

/// The race itself, with real processes: sweeps run back to back for as long as a sessionEnd
/// hook runs. Whether a sweep hits the window between the spawn's record and the end's queueing
/// is chance; the verdict is not: in every round the end is not on the server when the hook
/// returns, and reaches it after the tail.
///
/// A sweep is never killed here. It once was, to keep a sweep that took the machine over from
/// holding the round up; but a sweep killed while it held the machine leaves the machine to
/// whoever looks next (the finalizer waits for the lease, a later sweep), and a round stalled
/// past 90 s on a loaded machine. Now every sweep ends by itself: the tail is written as soon
/// as the hook returns, so one that runs the machine sees the shutdown, drains and leaves.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_during_a_session_end_never_posts_the_end_before_the_tail() {
    const PATIENCE: Duration = Duration::from_secs(60);
    let (env, server) = (Env::new(), server().await);
    let recorder = Recorder::start(free_port(), server.url()).await;
    let url = recorder.url();
    let mut early = Vec::new();
    for round in 0..8 {
        let (sid, path, mut content) = session_with(&env, |sid| synthetic_transcript(sid, 10, false));
        // Sweeps back to back for as long as the hook runs.
        let running = Arc::new(AtomicBool::new(true));
        let sweeps = {
            let (running, mut sweep) = (running.clone(), env.kcap(&url));
            sweep.args(["finalize", "--resume", "--sweep"]);
            tokio::spawn(async move {
                let mut ran = 0;
                while running.load(Ordering::Relaxed) {
                    let out = sweep.output().await.expect("a sweep runs");
                    assert!(out.status.success(), "{out:?}");
                    ran += 1;
                }
                ran
            })
        };
        let end = payload(&sid.to_string(), json!({"reason": "complete"}));
        // Far past the hook's 8 s cap: the finalizer must not time out and drain before the
        // test has appended the tail, however slow the machine.
        let budget = [("KCAP_SHUTDOWN_BUDGET_MS", "60000")];
        hook_ok(&env, &url, "sessionEnd", &end, &budget).await;
        running.store(false, Ordering::Relaxed);
        // Nothing may have posted the end yet: the agent has not written its tail.
        if ended_on(&server, sid) {
            early.push(round);
        }
        // The agent writes its shutdown after the hook returned.
        let tail = shutdown_line();
        append(&path, tail.as_bytes());
        content.extend_from_slice(tail.as_bytes());
        let ran = tokio::time::timeout(PATIENCE, sweeps)
            .await
            .unwrap_or_else(|_| panic!("round {round}: a sweep never ended\n{}", env.log_of(sid)))
            .unwrap();
        assert!(ran > 0, "round {round}: no sweep ran during the hook");
        assert!(
            wait_until("the tail and the end", PATIENCE, || {
                server.session(sid).lines.len() == 11 && ended_on(&server, sid)
            })
            .await,
            "round {round}: {}",
            env.log_of(sid)
        );
        assert_exactly_once(&server, sid, &content);
        // In the server's order of arrival: this session's last line before its end.
        let requests = recorder.requests();
        let mine = |r: &Seen| String::from_utf8_lossy(&r.body).contains(&sid.dashless());
        let last_line = requests
            .iter()
            .rposition(|r| r.path == "/hooks/transcript" && mine(r));
        let end_at = requests
            .iter()
            .position(|r| r.path.starts_with("/hooks/session-end") && mine(r));
        assert!(
            matches!((last_line, end_at), (Some(l), Some(e)) if l < e),
            "round {round}: the end went before the tail ({last_line:?}, {end_at:?})"
        );
    }
    assert!(
        early.is_empty(),
        "the end went before the tail in rounds {early:?}"
    );
}
