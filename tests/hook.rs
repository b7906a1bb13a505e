//! Copilot's hooks, run as Copilot runs them: `kcap hook --copilot --event …` with a JSON payload
//! on stdin, against a loopback server.

mod common;

use std::time::Duration;

use common::*;
use kcap::effects::watcher;
use kcap::ids::SessionId;
use kcap::server::{Fault, Server};
use serde_json::json;

/// Kills any watcher a failed test leaves behind (they are detached and would idle on).
struct Watchers<'a>(&'a Env, Vec<SessionId>);

impl Drop for Watchers<'_> {
    fn drop(&mut self) {
        for sid in &self.1 {
            if let Some(pid) = watcher::running(&self.0.kcap_home, *sid) {
                // SAFETY: signalling a watcher this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_end_spawns_the_finalizer_before_any_network_call_even_with_the_server_hanging() {
    let (env, server) = (Env::new(), server().await);
    server.inject(std::iter::repeat_n(Fault::Hang, 50));
    let content = transcript();
    let (before, _) = split_at_last_shutdown(&content);
    let (sid, _) = env.session(&before);
    let _guard = Watchers(&env, vec![sid]);
    let (out, took) = run_hook(
        &env,
        &server.url(),
        "sessionEnd",
        &payload(&sid.to_string(), json!({"reason": "user_exit"})),
        &[],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    // Cap 2 s for the drain and 3 s for the POST, both hanging: well under Copilot's 30 s.
    assert!(took < Duration::from_secs(8), "hook took {took:?}");
    let record = latest(&env.store(), sid);
    let first_request = server
        .first_request_at()
        .expect("the hook or the finalizer did call the server");
    assert!(
        record.meta.spawned_at <= first_request,
        "finalizer recorded at {} but the first request came at {first_request}",
        record.meta.spawned_at
    );
    // The POST failed: the notice waits in the outbox for the finalizer.
    let pending = env.store().pending_session_ends().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].1["reason"], "user_exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_return_quickly_with_the_server_down() {
    let (env, addr, url, content, sid, _) = server_down();
    let _guard = Watchers(&env, vec![sid]);
    for event in ["sessionStart", "agentStop", "notification", "sessionEnd"] {
        let (out, took) = run_hook(
            &env,
            &url,
            event,
            &payload(&sid.to_string(), json!({"reason": "complete"})),
            &[],
        )
        .await;
        assert!(out.status.success(), "{event}: {out:?}");
        assert!(took < Duration::from_secs(6), "{event} took {took:?}");
    }
    // Quick, and nothing lost: the finalizer parks (its delivery budget runs out) with every
    // notice kept, and once the server is back the sweep the next hook starts delivers it all.
    wait_for("the finalizer to park", Duration::from_secs(20), || {
        let store = env.store();
        matches!(
            latest(&store, sid).state().0.phase,
            kcap::machine::Phase::Parked { .. }
        ) && store.lease(sid).is_ok_and(|l| l.is_none())
            && watcher::holder(&env.kcap_home, sid).is_none()
    })
    .await;
    let kinds: Vec<_> = env
        .store()
        .pending_notices(Some(sid))
        .unwrap()
        .into_iter()
        .map(|p| p.notice.path)
        .collect();
    assert_eq!(kinds.len(), 3, "start, notification and end are kept: {kinds:?}");
    let server = Server::start(addr, None).await.unwrap();
    let out = env.run(&url, &["finalize", "--resume"]).await;
    assert!(out.status.success(), "{out:?}\n{}", env.log_of(sid));
    assert_exactly_once(&server, sid, &content);
    let summary = server.storage().summary(sid).unwrap().unwrap();
    assert!(summary.started.is_some(), "the session-start was lost");
    assert_eq!(summary.notifications, 1, "the notification was lost");
    assert_eq!(
        summary.ended.and_then(|e| e.reason).as_deref(),
        Some("complete"),
        "the session-end was lost"
    );
    assert!(env.store().pending_notices(None).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_a_message_and_nothing_spawned() {
    let (env, server) = (Env::new(), server().await);
    let long = "a".repeat(10 * 1024);
    let huge = vec![b' '; 2 * 1024 * 1024];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("sessionEnd", payload("../../etc", json!({}))),
        ("sessionEnd", payload("", json!({}))),
        ("sessionEnd", payload(&long, json!({}))),
        (
            "sessionEnd",
            payload("toolu_vrtx_01VjJHCbS9fyPmEpRtxDdmp6", json!({})),
        ),
        ("sessionEnd", br#"{"timestamp": 1}"#.to_vec()),
        ("sessionEnd", b"garbage {{{".to_vec()),
        ("sessionEnd", b"[1,2,3]".to_vec()),
        ("sessionEnd", huge),
        ("sessionEnd", Vec::new()),
        (
            "bogusEvent",
            payload(&SessionId::new_random().to_string(), json!({})),
        ),
    ];
    for (event, stdin) in cases {
        let (out, took) = run_hook(&env, &server.url(), event, &stdin, &[]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{event}: {out:?}");
        assert!(stderr.contains("ignored"), "{event}: no clear message: {stderr}");
        assert!(took < Duration::from_secs(5), "{event} took {took:?}");
    }
    assert!(env.no_machines(), "a finalizer was recorded");
    assert!(!env.kcap_home.join("watchers").exists(), "a watcher was started");
    assert_eq!(server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_session_starts_at_once_make_one_watcher() {
    let (env, server) = (Env::new(), server().await);
    let (sid, _) = env.session(&transcript());
    let _guard = Watchers(&env, vec![sid]);
    let p = payload(&sid.to_string(), json!({"source": "startup"}));
    let url = server.url();
    let (a, b) = tokio::join!(
        run_hook(&env, &url, "sessionStart", &p, &[]),
        run_hook(&env, &url, "sessionStart", &p, &[])
    );
    assert!(a.0.status.success() && b.0.status.success());
    wait_for("a watcher", Duration::from_secs(10), || {
        watcher::running(&env.kcap_home, sid).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let watchers = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmd| {
            let cmd = String::from_utf8_lossy(cmd);
            cmd.contains("\0watch\0") && cmd.contains(&sid.to_string())
        })
        .count();
    assert_eq!(watchers, 1, "exactly one watcher process for the session");
    let detail = server
        .storage()
        .summary(sid)
        .unwrap()
        .expect("session-start recorded");
    assert_eq!(detail.started.unwrap().detail.as_deref(), Some("startup"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_session_through_the_hooks_stores_every_line_once() {
    let (env, server) = (Env::new(), server().await);
    let content = transcript();
    let lines: Vec<&[u8]> = content.split_inclusive(|b| *b == b'\n').collect();
    let shutdown_at = lines.len() - 1;
    let (sid, path) = env.session(lines[0]);
    let _guard = Watchers(&env, vec![sid]);
    let p = payload(&sid.to_string(), json!({"source": "startup"}));
    assert!(run_hook(&env, &server.url(), "sessionStart", &p, &[])
        .await
        .0
        .status
        .success());
    // Copilot writes the session over time; the watcher delivers as it goes.
    for line in &lines[1..shutdown_at] {
        append(&path, line);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for("the watcher to deliver", Duration::from_secs(10), || {
        server.session(sid).lines.len() >= shutdown_at / 2
    })
    .await;
    let end = payload(&sid.to_string(), json!({"reason": "user_exit"}));
    let (out, took) = run_hook(&env, &server.url(), "sessionEnd", &end, &[]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        watcher::running(&env.kcap_home, sid).is_none(),
        "sessionEnd stops the watcher"
    );
    // Everything before the shutdown is on the server when the hook returns.
    assert_eq!(
        server.session(sid).lines.len(),
        shutdown_at,
        "hook returned after {took:?}"
    );
    // Copilot appends the shutdown only now; the finalizer delivers it.
    append(&path, lines[shutdown_at]);
    wait_for("the finalizer", Duration::from_secs(20), || {
        is_drained(&env.store(), sid)
    })
    .await;
    assert_exactly_once(&server, sid, &content);
    // Watcher, finalizer, then a batch import of the same session: still each line once.
    let import = env.run(&server.url(), &["import", "--copilot"]).await;
    assert!(
        String::from_utf8_lossy(&import.stdout).contains("0 lines sent"),
        "{import:?}"
    );
    assert_exactly_once(&server, sid, &content);
    assert_eq!(
        server.session(sid).duplicates,
        0,
        "watcher and finalizer sent the same line twice"
    );
    let summary = server.storage().summary(sid).unwrap().unwrap();
    assert_eq!(summary.ended.unwrap().reason.as_deref(), Some("user_exit"));
    assert_eq!(summary.usage.models["claude-sonnet-4.6"].input_tokens, 186_809.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watcher_survives_a_server_outage_and_keeps_its_position() {
    let (env, addr, url, content, sid, path) = server_down();
    let _guard = Watchers(&env, vec![sid]);
    let _watch = env
        .kcap(&url)
        .env("KCAP_WATCH_POLL_MS", "50")
        .args(["watch", &sid.to_string()])
        .arg(&path)
        .spawn()
        .unwrap();
    wait_for("the watcher", Duration::from_secs(10), || {
        watcher::running(&env.kcap_home, sid).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await; // several failed attempts
    let server = Server::start(addr, None).await.unwrap();
    wait_for("delivery after the outage", Duration::from_secs(15), || {
        server.session(sid).lines.len() == content.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count()
    })
    .await;
    assert_exactly_once(&server, sid, &content);
    let pid = watcher::running(&env.kcap_home, sid).unwrap();
    // SAFETY: stopping the watcher this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    wait_for("the watcher to exit on SIGTERM", Duration::from_secs(10), || {
        watcher::running(&env.kcap_home, sid).is_none()
    })
    .await;
    assert_eq!(env.store().watermark(sid).unwrap().unwrap().next_line, 55);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_end_left_in_the_outbox_is_delivered_by_the_sweep() {
    let (env, addr, url, _, sid, _) = server_down();
    let _guard = Watchers(&env, vec![sid]);
    let end = payload(&sid.to_string(), json!({"reason": "abort"}));
    assert!(run_hook(
        &env,
        &url,
        "sessionEnd",
        &end,
        &[("KCAP_DELIVERY_BUDGET_MS", "300")]
    )
    .await
    .0
    .status
    .success());
    assert_eq!(env.store().pending_session_ends().unwrap().len(), 1);
    let server = Server::start(addr, None).await.unwrap();
    // The detached finalizer is done once it holds no lease *and* has parked or drained: before
    // it takes its lease it has already logged a transition, so the lease alone races it.
    wait_for(
        "the detached finalizer to park or drain",
        Duration::from_secs(20),
        || {
            let store = env.store();
            store.lease(sid).map(|l| l.is_none()).unwrap_or(false)
                && matches!(
                    latest(&store, sid).state().0.phase,
                    kcap::machine::Phase::Parked { .. } | kcap::machine::Phase::Drained { .. }
                )
        },
    )
    .await;
    let out = env.run(&url, &["finalize", "--resume"]).await;
    assert!(out.status.success(), "{out:?}");
    // The sweep posts it, or leaves it to the detached finalizer when that one still holds its
    // claim (it flushes its session's end after it drained): either way it arrives, once.
    wait_for(
        "the session-end to leave the outbox",
        Duration::from_secs(10),
        || env.store().pending_session_ends().unwrap().is_empty(),
    )
    .await;
    let summary = server.storage().summary(sid).unwrap().unwrap();
    assert_eq!(summary.ended.unwrap().reason.as_deref(), Some("abort"));
    assert!(is_drained(&env.store(), sid));
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_install_round_trip_leaves_other_hook_files_alone() {
    let (env, server) = (Env::new(), server().await);
    let hooks = env.copilot_home.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::write(hooks.join("other.json"), b"{\"version\":1,\"hooks\":{}}").unwrap();
    let run = |args: &'static [&'static str]| {
        let mut c = env.kcap(&server.url());
        c.args(args);
        c
    };
    let out = run(&["plugin", "install", "--copilot"]).output().await.unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("installed"),
        "{out:?}"
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hooks.join("kcap.json")).unwrap()).unwrap();
    assert_eq!(written["version"], 1);
    for event in ["sessionStart", "sessionEnd", "agentStop", "notification"] {
        let entry = &written["hooks"][event][0];
        assert_eq!(entry["type"], "command");
        assert_eq!(entry["command"], format!("kcap hook --copilot --event {event}"));
        assert_eq!(entry["timeoutSec"], 30);
    }
    let again = run(&["plugin", "install", "--copilot"]).output().await.unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("already installed"));
    let doctor = run(&["doctor"]).output().await.unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        report.contains("ok   hooks") && report.contains("ok   server"),
        "{report}"
    );
    let out = run(&["plugin", "remove", "--copilot"]).output().await.unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("removed"));
    assert!(!hooks.join("kcap.json").exists());
    assert!(
        hooks.join("other.json").exists(),
        "another tool's hooks file was touched"
    );
    let out = run(&["plugin", "remove", "--copilot"]).output().await.unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("not installed"));
    let doctor = run(&["doctor"]).output().await.unwrap();
    assert_eq!(doctor.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&doctor.stdout).contains("FIX  hooks"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_start_the_background_sweep_at_most_once_a_minute_and_redact_what_they_send() {
    let (env, server) = (Env::new(), server().await);
    let (sid, _) = env.session(&transcript());
    let _guard = Watchers(&env, vec![sid]);
    let note = payload(
        &sid.to_string(),
        json!({"message": "export GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123", "notification_type": "idle"}),
    );
    for _ in 0..3 {
        assert!(run_hook(&env, &server.url(), "notification", &note, &[])
            .await
            .0
            .status
            .success());
    }
    let sweep_log = env.kcap_home.join("logs").join("sweep.log");
    wait_for("the sweep", Duration::from_secs(10), || {
        std::fs::read_to_string(&sweep_log).is_ok_and(|l| l.contains("nothing to finalize"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = std::fs::read_to_string(&sweep_log)
        .unwrap()
        .matches("nothing to finalize")
        .count();
    assert_eq!(runs, 1, "three hooks within a minute started {runs} sweeps");
    assert!(env.kcap_home.join("sweep.stamp").exists());
    // The notification reached the server, with the token redacted on the way.
    let summary = server.storage().summary(sid).unwrap().unwrap();
    assert_eq!(summary.notifications, 3);
    let message = summary
        .last_notification
        .and_then(|n| n.detail)
        .unwrap_or_default();
    assert!(
        message.contains("GITHUB_TOKEN=[REDACTED]") && !message.contains("ghp_"),
        "{message}"
    );
}
