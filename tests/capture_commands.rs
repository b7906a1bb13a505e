//! What the user is told by `finalize --session` and `demo`: a missing or non-regular
//! transcript fails at once with a message and a non-zero exit; the demo says whether the
//! finalizer saw the shutdown or ran out of budget.

mod capture_support;
mod common;

use std::time::{Duration, Instant};

use capture_support::*;
use common::*;
use kcap::config::transcript_path;
use kcap::ids::SessionId;

#[tokio::test(flavor = "multi_thread")]
async fn finalize_session_on_a_missing_or_non_regular_transcript_fails_at_once() {
    let (env, server) = (Env::new(), server().await);
    let sid = SessionId::new_random();
    let path = transcript_path(&env.copilot_home, sid);
    let started = Instant::now();
    let out = env
        .run(&server.url(), &["finalize", "--session", &sid.to_string()])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains("no transcript") && stderr.contains(&sid.to_string()),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(env.no_machines(), "a finalizer was recorded for nothing");

    // A directory in its place.
    std::fs::create_dir_all(&path).unwrap();
    let out = env
        .run(&server.url(), &["finalize", "--session", &sid.to_string()])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("is a directory, not a regular file"), "{stderr}");
    assert_eq!(server.requests(), 0);

    // And once it is a real transcript, the same command delivers it.
    std::fs::remove_dir(&path).unwrap();
    let content = synthetic_transcript(sid, 30, true);
    std::fs::write(&path, &content).unwrap();
    let out = env
        .run(&server.url(), &["finalize", "--session", &sid.to_string()])
        .await;
    assert!(out.status.success(), "{out:?}");
    assert_exactly_once(&server, sid, &content);
}

async fn demo(env: &Env, transcript: &std::path::Path) -> String {
    let out = env
        .kcap("http://127.0.0.1:9")
        .env("KCAP_SHUTDOWN_BUDGET_MS", "1500")
        .args(["demo", "--shutdown-delay-ms", "100", "--transcript"])
        .arg(transcript)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_says_whether_the_shutdown_was_seen_or_the_budget_ran_out() {
    let env = Env::new();
    let sid = SessionId::new_random();
    let ends_with_shutdown = env.dir.path().join("complete.jsonl");
    std::fs::write(&ends_with_shutdown, synthetic_transcript(sid, 12, true)).unwrap();
    let text = demo(&env, &ends_with_shutdown).await;
    assert!(text.contains("saw session.shutdown as the last line"), "{text}");
    assert!(!text.contains("budget ran out"), "{text}");

    // A resumed session: lines after the last shutdown, so it is never the last line.
    let mut resumed = synthetic_transcript(sid, 12, true);
    resumed.extend_from_slice(b"{\"type\":\"session.resume\",\"data\":{}}\n");
    resumed.extend_from_slice(b"{\"type\":\"user.message\",\"data\":{\"content\":\"again\"}}\n");
    let resumed_path = env.dir.path().join("resumed.jsonl");
    std::fs::write(&resumed_path, resumed).unwrap();
    let text = demo(&env, &resumed_path).await;
    assert!(text.contains("lines follow the last session.shutdown"), "{text}");
    assert!(
        text.contains("budget ran out before session.shutdown was the last line"),
        "{text}"
    );
    assert!(!text.contains("saw session.shutdown as the last line"), "{text}");
    assert!(text.contains("server holds 14 of 14 non-blank lines"), "{text}");
}
