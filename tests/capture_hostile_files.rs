//! Hostile files where a transcript should be: a symlink to a secret, a session directory that
//! is a symlink out of session-state, a FIFO. Every path (hook, watcher, finalizer, resume,
//! import, finalize --session) refuses them with a clear message, sends nothing from them, and
//! never blocks.

mod capture_support;
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use capture_support::*;
use common::*;
use kcap::config::transcript_path;
use kcap::ids::SessionId;
use kcap::machine::Phase;
use serde_json::json;

const SECRET: &str = "machine github.com login alice password hunter2-netrc-secret";

/// A file outside any session directory that must never leave the machine.
fn secret_file(env: &Env) -> std::path::PathBuf {
    let netrc = env.dir.path().join("netrc");
    std::fs::write(&netrc, format!("{{\"type\":\"x\",\"data\":\"{SECRET}\"}}\n")).unwrap();
    netrc
}

async fn finalize_foreground(
    env: &Env,
    url: &str,
    sid: SessionId,
    path: &Path,
) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let out = env
        .kcap(url)
        .env("KCAP_SHUTDOWN_BUDGET_MS", "500")
        .env("KCAP_DELIVERY_BUDGET_MS", "2000")
        .args(["copilot-finalize", "--foreground", &sid.to_string()])
        .arg(path)
        .output()
        .await
        .unwrap();
    (out, started.elapsed())
}

/// Every path, one after the other, on a session whose transcript is hostile; returns the
/// finalizer's log.
async fn every_path_refuses(
    env: &Env,
    server: &kcap::server::Server,
    sid: SessionId,
    path: &Path,
    why: &str,
) {
    let url = server.url();
    // The finalizer, as the hook spawns it (in the foreground here, to wait for it).
    let (out, took) = finalize_foreground(env, &url, sid, path).await;
    assert!(out.status.success(), "{out:?}");
    assert!(took < Duration::from_secs(10), "the finalizer took {took:?}");
    let log = env.log_of(sid);
    assert!(
        log.contains("transcript refused") && log.contains(why),
        "no clear reason in the log:\n{log}"
    );
    assert_eq!(
        log.matches("transcript refused, nothing is read from it").count(),
        1,
        "the refusal is logged once:\n{log}"
    );
    let phase = state(&env.store(), sid).phase;
    assert!(matches!(phase, Phase::Parked { .. }), "{phase:?}");

    // finalize --resume (the sweep) reaches it again, and does not hang on it either.
    let started = Instant::now();
    let out = env.run(&url, &["finalize", "--resume"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "resume took {:?}",
        started.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a machine that stays parked is exit 1: {out:?}"
    );
    // The park reason says what happened: the transcript was refused here, not by the server.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("parked (transcript refused on this machine") && said.contains(why),
        "{said}"
    );
    assert!(!said.contains("server refused"), "{said}");
    let status = env.kcap(&url).arg("status").output().await.unwrap();
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(
        said.contains("transcript refused on this machine") && !said.contains("server refused"),
        "{said}"
    );

    // finalize --session says so at once.
    let started = Instant::now();
    let out = env.run(&url, &["finalize", "--session", &sid.to_string()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("refused") && stderr.contains(why), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // import lists it as a failure.
    let out = env
        .run(&url, &["import", "--copilot", "--session", &sid.to_string()])
        .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text.contains("refused") || text.contains("no transcript"),
        "{text}"
    );
    // At once: a refusal is not retried for the whole delivery budget as if the server were down.
    assert!(
        !text.contains("retrying in") && !text.contains("gave up after"),
        "a refused transcript was retried: {text}"
    );

    // The hooks: a live session start and end, as Copilot runs them.
    let start = payload(&sid.to_string(), json!({"source": "new"}));
    let (out, _) = run_hook(env, &url, "sessionStart", &start, &[]).await;
    assert!(out.status.success(), "{out:?}");
    tokio::time::sleep(Duration::from_millis(500)).await; // the watcher polls it a few times
    let end = payload(&sid.to_string(), json!({"reason": "user_exit"}));
    let (out, took) = run_hook(
        env,
        &url,
        "sessionEnd",
        &end,
        &[("KCAP_SHUTDOWN_BUDGET_MS", "300")],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(took < Duration::from_secs(6), "sessionEnd took {took:?}");
    let watch_log = std::fs::read_to_string(
        env.kcap_home
            .join("logs")
            .join(format!("{}.watch.log", sid.dashed())),
    )
    .unwrap_or_default();
    assert!(
        watch_log.matches("transcript refused").count() <= 1,
        "the watcher repeats the refusal every poll:\n{watch_log}"
    );
    // Let the detached finalizer run into the refusal too.
    wait_until("the detached finalizer", Duration::from_secs(10), || {
        env.store().lease(sid).map(|l| l.is_none()).unwrap_or(false)
            && latest(&env.store(), sid).meta.generation >= 1
    })
    .await;

    assert!(
        server.session(sid).lines.is_empty(),
        "lines were read from a hostile transcript"
    );
    assert!(
        nowhere_on_server(server, "hunter2"),
        "the secret left the machine"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transcript_symlinked_to_a_secret_is_refused_on_every_path() {
    let (env, server) = (Env::new(), server().await);
    let netrc = secret_file(&env);
    let sid = SessionId::new_random();
    let path = transcript_path(&env.copilot_home, sid);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&netrc, &path).unwrap();
    every_path_refuses(&env, &server, sid, &path, "is a symlink").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_directory_symlinked_out_of_session_state_is_refused() {
    let (env, server) = (Env::new(), server().await);
    let netrc = secret_file(&env);
    // A directory elsewhere that looks like a session, with the secret as its transcript.
    let outside = env.dir.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::copy(&netrc, outside.join("events.jsonl")).unwrap();
    let sid = SessionId::new_random();
    let path = transcript_path(&env.copilot_home, sid);
    std::fs::create_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&outside, path.parent().unwrap()).unwrap();
    every_path_refuses(&env, &server, sid, &path, "session directory").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_at_events_jsonl_blocks_nothing() {
    let (env, server) = (Env::new(), server().await);
    let sid = SessionId::new_random();
    let path = transcript_path(&env.copilot_home, sid);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    every_path_refuses(&env, &server, sid, &path, "FIFO").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_regular_transcript_beside_them_is_still_delivered_once() {
    // The same machinery on an ordinary session: the refusals above are not a blanket no.
    let (env, server) = (Env::new(), server().await);
    let sid = SessionId::new_random();
    let content = synthetic_transcript(sid, 40, true);
    let path = transcript_path(&env.copilot_home, sid);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &content).unwrap();
    let (out, _) = finalize_foreground(&env, &server.url(), sid, &path).await;
    assert!(out.status.success(), "{out:?}");
    assert!(is_drained(&env.store(), sid), "{}", env.log_of(sid));
    assert_exactly_once(&server, sid, &content);
    assert!(!env.log_of(sid).contains("refused"));
}
