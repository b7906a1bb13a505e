//! The background sweep posts the queued ends of sessions that have no machine left to run.
//! A sessionEnd hook queues its end for the finalizer it starts: a sweep that runs while the
//! hook is between the two must not take that end for one whose lines are all delivered and
//! post it before the session's post-hook tail.

mod capture_support;
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capture_support::*;
use common::*;
use kcap::config::transcript_path;
use kcap::ids::SessionId;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_during_a_session_end_never_posts_the_end_before_the_tail() {
    let (env, server) = (Env::new(), server().await);
    let recorder = Recorder::start(free_port(), server.url()).await;
    let url = recorder.url();
    let mut early = Vec::new();
    for round in 0..25 {
        let sid = SessionId::new_random();
        let path = transcript_path(&env.copilot_home, sid);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut content = synthetic_transcript(sid, 10, false);
        std::fs::write(&path, &content).unwrap();
        // Sweeps back to back for as long as the hook runs.
        let running = Arc::new(AtomicBool::new(true));
        let sweeps = {
            let (running, mut sweep) = (running.clone(), env.kcap(&url));
            sweep.args(["finalize", "--resume", "--sweep"]);
            tokio::spawn(async move {
                while running.load(Ordering::Relaxed) {
                    let _ = sweep.output().await;
                }
            })
        };
        let end = payload(&sid.to_string(), json!({"reason": "complete"}));
        let (out, _) = run_hook(
            &env,
            &url,
            "sessionEnd",
            &end,
            &[("KCAP_SHUTDOWN_BUDGET_MS", "10000")],
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        running.store(false, Ordering::Relaxed);
        // A sweep still running is killed (kill_on_drop): one that took the machine over
        // would hold the test past the shutdown budget.
        sweeps.abort();
        let _ = sweeps.await;
        // Nothing may have posted the end yet: the agent has not written its tail.
        if server
            .storage()
            .summary(sid)
            .unwrap()
            .is_some_and(|s| s.ended.is_some())
        {
            early.push(round);
        }
        // The agent writes its shutdown after the hook returned.
        let tail = shutdown_line();
        append(&path, tail.as_bytes());
        content.extend_from_slice(tail.as_bytes());
        assert!(
            wait_until("the tail and the end", Duration::from_secs(20), || {
                server.session(sid).lines.len() == 11
                    && server
                        .storage()
                        .summary(sid)
                        .unwrap()
                        .is_some_and(|s| s.ended.is_some())
            })
            .await,
            "round {round}: {}",
            env.log_of(sid)
        );
        assert_exactly_once(&server, sid, &content);
    }
    assert!(
        early.is_empty(),
        "the end went before the tail in rounds {early:?}"
    );
}
