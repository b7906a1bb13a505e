//! The finalizer as Copilot runs it: real `kcap` processes against a loopback server.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kcap::machine::{Outcome, Phase};
use kcap::server::{Fault, Server};

async fn finalize_foreground(
    env: &Env,
    url: &str,
    sid: &str,
    path: &std::path::Path,
) -> std::process::Output {
    let out = env
        .kcap(url)
        .args(["copilot-finalize", "--foreground", sid])
        .arg(path)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "copilot-finalize must exit 0: {out:?}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_already_present() {
    let (env, server) = (Env::new(), server().await);
    let content = transcript();
    let (sid, path) = env.session(&content);
    finalize_foreground(&env, &server.url(), &sid.to_string(), &path).await;
    let state = state(&env.store(), sid);
    assert!(
        matches!(
            state.phase,
            Phase::Drained {
                outcome: Outcome::Shutdown { .. },
                ..
            }
        ),
        "{state:?}"
    );
    assert_exactly_once(&server, sid, &content);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_appended_600ms_after_spawn() {
    let (env, server) = (Env::new(), server().await);
    let content = transcript();
    let (before, tail) = split_at_last_shutdown(&content);
    let (sid, path) = env.session(&before);
    let child = env
        .kcap(&server.url())
        .args(["copilot-finalize", "--foreground", &sid.to_string()])
        .arg(&path)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Still waiting, and nothing sent yet: it drains once, after the shutdown.
    assert_eq!(phase_name(&env.store(), sid), "Polling");
    assert!(server.session(sid).lines.is_empty());
    append(&path, &tail);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let state = state(&env.store(), sid);
    let shutdown_offset = before.len() as u64;
    assert!(
        matches!(state.phase, Phase::Drained { outcome: Outcome::Shutdown { offset }, .. } if offset == shutdown_offset),
        "{state:?}"
    );
    assert_exactly_once(&server, sid, &content);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_never_arrives_and_the_tail_is_drained_at_the_budget() {
    let (env, server) = (Env::new(), server().await);
    let (before, _) = split_at_last_shutdown(&transcript());
    // Copilot died mid-write: the last line has no newline and is not a complete object.
    let mut content = before.clone();
    content.extend_from_slice(br#"{"type":"assistant.message","data":{"content":"cut of"#);
    let (sid, path) = env.session(&content);
    let started = Instant::now();
    env.kcap(&server.url())
        .env("KCAP_SHUTDOWN_BUDGET_MS", "1500")
        .args(["copilot-finalize", "--foreground", &sid.to_string()])
        .arg(&path)
        .status()
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "drained before the budget ran out"
    );
    let state = state(&env.store(), sid);
    assert!(
        matches!(
            state.phase,
            Phase::Drained {
                outcome: Outcome::TimedOut,
                ..
            }
        ),
        "{state:?}"
    );
    // Every line, the unterminated fragment included, is on the server once.
    assert_exactly_once(&server, sid, &content);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_answers_503_twice_then_200() {
    let (env, server) = (Env::new(), server().await);
    server.inject([Fault::Status(503), Fault::Status(503)]);
    let content = transcript();
    let (sid, path) = env.session(&content);
    finalize_foreground(&env, &server.url(), &sid.to_string(), &path).await;
    assert_eq!(server.pending_faults(), 0);
    let record = latest(&env.store(), sid);
    let failures = record
        .log
        .iter()
        .filter(|r| r.input.name() == "DeliveryFailed")
        .count();
    assert_eq!(failures, 2);
    assert!(matches!(record.state().0.phase, Phase::Drained { .. }));
    assert_exactly_once(&server, sid, &content);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_down_for_the_whole_budget_parks_then_resume_delivers_once() {
    let (env, addr, url, content, sid, path) = server_down();
    env.kcap(&url)
        .env("KCAP_DELIVERY_BUDGET_MS", "1200")
        .args(["copilot-finalize", "--foreground", &sid.to_string()])
        .arg(&path)
        .status()
        .await
        .unwrap();
    let parked = state(&env.store(), sid);
    assert!(matches!(parked.phase, Phase::Parked { .. }), "{parked:?}");
    let status = env.kcap(&url).arg("status").output().await.unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("Parked"));

    let server = Server::start(addr, None).await.unwrap();
    let out = env.run(&url, &["finalize", "--resume"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("drained"),
        "{out:?}"
    );
    assert!(matches!(state(&env.store(), sid).phase, Phase::Drained { .. }));
    assert_exactly_once(&server, sid, &content);
    // A second resume has nothing left to do and sends nothing.
    let requests = server.requests();
    let out = env.run(&url, &["finalize", "--resume"]).await;
    assert!(out.status.success());
    assert_eq!(server.requests(), requests);
}

#[tokio::test(flavor = "multi_thread")]
async fn detaches_into_its_own_session_with_no_inherited_streams() {
    let (env, server) = (Env::new(), server().await);
    let content = transcript();
    let (before, tail) = split_at_last_shutdown(&content);
    let (sid, path) = env.session(&before);
    let started = Instant::now();
    let out = env
        .kcap(&server.url())
        .args(["copilot-finalize", &sid.to_string()])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let hook_time = started.elapsed();
    assert!(out.status.success());
    // `output()` returning at all proves the child holds none of our pipes.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pid: i32 = stderr
        .split("detached as pid ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stderr}"));
    assert!(hook_time < Duration::from_secs(5), "hook took {hook_time:?}");
    // The finalizer leads its own session and its stdin is /dev/null.
    assert_eq!(
        unsafe { libc::getsid(pid) },
        pid,
        "finalizer is not a session leader"
    );
    let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(stdin, std::path::Path::new("/dev/null"));
    append(&path, &tail);
    wait_for("the detached finalizer to drain", Duration::from_secs(20), || {
        is_drained(&env.store(), sid)
    })
    .await;
    assert_exactly_once(&server, sid, &content);
    assert!(env.log_of(sid).contains("finalizer started"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_arguments_exit_0_and_touch_nothing() {
    let (env, server) = (Env::new(), server().await);
    let (sid, path) = env.session(&transcript());
    let long = "a".repeat(10 * 1024);
    let outside = env.dir.path().join("events.jsonl");
    std::fs::write(&outside, b"{}\n").unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec!["../../etc".into(), "/etc/passwd".into()],
        vec!["".into(), path.display().to_string()],
        vec![long, path.display().to_string()],
        vec![sid.to_string(), "/etc/passwd".into()],
        vec![sid.to_string(), outside.display().to_string()],
        vec![
            sid.to_string(),
            format!("{}/../../{}/events.jsonl", path.parent().unwrap().display(), sid),
        ],
        vec![],
    ];
    for args in cases {
        let out = env
            .kcap(&server.url())
            .arg("copilot-finalize")
            .args(&args)
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
    assert!(env.no_machines(), "a finalizer was recorded");
    assert_eq!(server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_inspect_and_machine_show_what_happened() {
    let (env, server) = (Env::new(), server().await);
    server.inject([Fault::Status(503)]);
    let content = transcript();
    let (sid, path) = env.session(&content);
    finalize_foreground(&env, &server.url(), &sid.to_string(), &path).await;

    let status = env.kcap(&server.url()).arg("status").output().await.unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(&sid.to_string()) && status.contains("Drained"),
        "{status}"
    );

    let inspect = env.run(&server.url(), &["inspect", &sid.to_string()]).await;
    let inspect = String::from_utf8_lossy(&inspect.stdout);
    for expected in [
        "Drained at",
        "next line 55",
        "DeliveryFailed",
        "BatchAcked",
        "Started",
    ] {
        assert!(inspect.contains(expected), "missing {expected:?} in\n{inspect}");
    }
    let json = env
        .run(&server.url(), &["inspect", "--json", &sid.to_string()])
        .await;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        json["log"].as_array().unwrap().len(),
        latest(&env.store(), sid).log.len()
    );
    assert_eq!(json["watermark"]["next_line"], 55);
    assert_eq!(json["replay_mismatches"], 0);

    let bad = env.run(&server.url(), &["inspect", "../../etc"]).await;
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("UUID"));

    let machine = env.kcap(&server.url()).arg("machine").output().await.unwrap();
    let machine = String::from_utf8_lossy(&machine.stdout);
    assert!(machine.contains("| from | input | to | commands |") && machine.contains("stateDiagram-v2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_store_does_not_stop_delivery() {
    let (env, server) = (Env::new(), server().await);
    // The store's directory is a plain file: sled cannot open it.
    std::fs::create_dir_all(&env.kcap_home).unwrap();
    std::fs::write(env.kcap_home.join("store"), b"not a database").unwrap();
    let content = transcript();
    let (sid, path) = env.session(&content);
    finalize_foreground(&env, &server.url(), &sid.to_string(), &path).await;
    assert_exactly_once(&server, sid, &content);
    assert!(
        env.log_of(sid).contains("running without the transition log"),
        "{}",
        env.log_of(sid)
    );
}
