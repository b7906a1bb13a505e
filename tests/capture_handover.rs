//! A sessionEnd hook with no usable store hands the session-end to the finalizer, which posts
//! it after the post-hook tail. A huge hook payload (over the kernel's 128 KiB limit on one
//! environment string) must not stop the finalizer from starting.

mod capture_support;
mod common;

use std::time::Duration;

use capture_support::*;
use common::*;
use kcap::config::transcript_path;
use kcap::ids::SessionId;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_session_end_without_a_store_still_reaches_the_finalizer() {
    let (env, server) = (Env::new(), server().await);
    let recorder = Recorder::start(free_port(), server.url()).await;
    let sid = SessionId::new_random();
    let path = transcript_path(&env.copilot_home, sid);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut content = synthetic_transcript(sid, 100, false);
    std::fs::write(&path, &content).unwrap();
    // A home that is a file: no store, no log, even for root.
    std::fs::create_dir_all(env.kcap_home.parent().unwrap()).unwrap();
    std::fs::write(&env.kcap_home, b"not a directory").unwrap();
    let cwd = format!("/work/{}", "d".repeat(200 * 1024));
    let end = payload(&sid.to_string(), json!({"reason": "user_exit", "cwd": cwd}));
    assert!(end.len() > 128 * 1024);
    let (out, _) = run_hook(&env, &recorder.url(), "sessionEnd", &end, &[]).await;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("store is unusable"), "{said}");
    // The post-hook tail: only a running finalizer delivers it.
    let tail = shutdown_line();
    append(&path, tail.as_bytes());
    content.extend_from_slice(tail.as_bytes());
    assert!(
        wait_until("the tail and the end", Duration::from_secs(20), || {
            server.session(sid).lines.len() == 101
                && server
                    .storage()
                    .summary(sid)
                    .unwrap()
                    .is_some_and(|s| s.ended.is_some())
        })
        .await,
        "{} of 101 lines; posts {:?}; the hook said:\n{said}",
        server.session(sid).lines.len(),
        recorder.posts()
    );
    assert_exactly_once(&server, sid, &content);
    let summary = server.storage().summary(sid).unwrap().unwrap();
    assert_eq!(summary.ended.and_then(|e| e.reason).as_deref(), Some("user_exit"));
    let posts = recorder.posts();
    let last_line = posts.iter().rposition(|p| p == "/hooks/transcript").unwrap();
    let ends: Vec<usize> = (0..posts.len())
        .filter(|&i| posts[i].starts_with("/hooks/session-end"))
        .collect();
    assert_eq!(ends.len(), 1, "{posts:?}");
    assert!(last_line < ends[0], "{posts:?}");
}
