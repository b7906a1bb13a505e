//! The session's life as the server sees it: two sessionEnd hooks at once never signal each
//! other, a Copilot killed without sessionEnd still gets its tail and its end, an idle
//! transcript ends its watcher, and with the server down during session-start the server later
//! gets start, lines and end in that order.

mod capture_support;
mod common;

use std::process::Stdio;
use std::time::Duration;

use capture_support::*;
use common::*;
use kcap::effects::watcher;
use kcap::ids::SessionId;
use kcap::machine::{Outcome, Phase};
use kcap::server::Fault;
use serde_json::json;

/// A finalizer that waits little for a shutdown the test never writes.
const SHORT_BUDGET: [(&str, &str); 1] = [("KCAP_SHUTDOWN_BUDGET_MS", "500")];

#[tokio::test(flavor = "multi_thread")]
async fn two_session_ends_at_once_never_signal_each_other() {
    let (env, server) = (Env::new(), server().await);
    // Slow acknowledgements keep each hook's inline drain going while the other one starts.
    server.inject(std::iter::repeat_n(
        Fault::Delay(Duration::from_millis(5)),
        100_000,
    ));
    for round in 0..5 {
        let (sid, _, content) = session_with(&env, |sid| synthetic_transcript(sid, 1_500, true));
        let _reap = Reap::new(&env, [sid]);
        // No watcher ran (or it delivered nothing yet): each hook has the whole transcript to
        // drain inline, so the second one finds the first one holding the session's lock.
        let end = payload(&sid.to_string(), json!({"reason": "user_exit"}));
        let extra = [("KCAP_BATCH_LINES", "20")];
        let url = server.url();
        let (a, b) = tokio::join!(
            run_hook(&env, &url, "sessionEnd", &end, &extra),
            run_hook(&env, &url, "sessionEnd", &end, &extra),
        );
        for (out, _) in [&a, &b] {
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: a sessionEnd hook did not exit 0 (signal {:?}): {out:?}",
                std::os::unix::process::ExitStatusExt::signal(&out.status)
            );
        }
        assert!(
            wait_until("the finalizers", Duration::from_secs(20), || {
                is_drained(&env.store(), sid)
                    && env.store().pending_session_ends().is_ok_and(|p| p.is_empty())
            })
            .await,
            "round {round}: {}",
            env.log_of(sid)
        );
        assert_exactly_once(&server, sid, &content);
        let summary = server.storage().summary(sid).unwrap().unwrap();
        assert_eq!(summary.ended.and_then(|e| e.reason).as_deref(), Some("user_exit"));
    }
    // The case this test is about did happen: a hook found the other one draining.
    let hooks = std::fs::read_to_string(env.kcap_home.join("logs/hooks.log")).unwrap_or_default();
    assert!(
        hooks.contains("another sessionEnd hook is draining"),
        "the two hooks never overlapped:\n{hooks}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_copilot_still_gets_its_tail_and_its_end() {
    // Copilot dies mid-write: no shutdown, the last line has no newline and is cut.
    let mut fx = Capture::direct(60, false).await;
    let mut copilot = agent_holding(&fx.path);
    fx.start("new", &[]).await;
    fx.within(PATIENCE, "the watcher to deliver", || fx.lines_on_server() == 60)
        .await;
    let cut = b"{\"type\":\"assistant.message\",\"data\":{\"content\":\"half of a li";
    fx.append(cut);
    let (env, sid) = (&fx.env, fx.sid);
    copilot.kill().unwrap();
    copilot.wait().unwrap();
    // The watcher notices, drains, and hands the session to a finalizer.
    fx.within(PATIENCE, "the watcher to end: it outlived its Copilot", || {
        fx.watcher().is_none()
    })
    .await;
    fx.within(Duration::from_secs(20), "the finalizer", || fx.drained())
        .await;
    let phase = state(&env.store(), sid).phase;
    assert!(
        matches!(
            phase,
            Phase::Drained {
                outcome: Outcome::TimedOut,
                ..
            }
        ),
        "{phase:?}"
    );
    assert_exactly_once(&fx.server, sid, &fx.content);
    fx.within(PATIENCE, "the session-end", || {
        fx.server.storage().summary(sid).unwrap().unwrap().ended.is_some()
    })
    .await;
    let ended = fx.server.storage().summary(sid).unwrap().unwrap().ended.unwrap();
    assert_eq!(ended.reason.as_deref(), Some("agent_exited"));
    let log = watch_log(&fx);
    assert!(log.contains("agent process is gone"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_ran_the_hook_and_died_ends_the_watcher_too() {
    // No in-use lock this time: the witness is the process that ran the hook. `flock` stands
    // in for Copilot: it runs the hook as its child and stays until killed.
    let fx = Capture::direct(30, true).await;
    let (env, server, sid) = (&fx.env, &fx.server, fx.sid);
    let payload_file = env.dir.path().join("start.json");
    std::fs::write(&payload_file, fx.payload(json!({"source": "new"}))).unwrap();
    let script = format!(
        "{} hook --copilot --event sessionStart < {}; sleep 60",
        env!("CARGO_BIN_EXE_kcap"),
        payload_file.display()
    );
    let lock = env.dir.path().join("agent.lock");
    let mut cmd = std::process::Command::new("flock");
    cmd.arg(&lock)
        .args(["sh", "-c", &script])
        .env("KCAP_HOME", &env.kcap_home)
        .env("COPILOT_HOME", &env.copilot_home)
        .env("KCAP_URL", server.url())
        .env("KCAP_POLL_MS", "50")
        .env("KCAP_WATCH_POLL_MS", "50")
        .env("KCAP_SHUTDOWN_BUDGET_MS", "5000")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let Ok(mut flock) = cmd.spawn() else {
        eprintln!("SKIP an_agent_that_ran_the_hook_and_died_ends_the_watcher_too: `flock` is not installed");
        return;
    };
    fx.within(PATIENCE, "the watcher to deliver", || fx.lines_on_server() == 30)
        .await;
    assert!(fx.watcher().is_some());
    let shell = children_of(flock.id());
    flock.kill().unwrap();
    flock.wait().unwrap();
    fx.within(
        PATIENCE,
        "the watcher to end: it outlived the process that ran its hook",
        || fx.watcher().is_none(),
    )
    .await;
    fx.within(Duration::from_secs(20), "the finalizer", || fx.drained())
        .await;
    assert_exactly_once(server, sid, &fx.content);
    fx.within(PATIENCE, "the session-end", || fx.ended_with("agent_exited"))
        .await;
    // The shell (and its `sleep 60`) the killed stand-in left behind, by pid.
    for pid in shell
        .iter()
        .flat_map(|&sh| children_of(sh).into_iter().chain([sh]))
    {
        // SAFETY: processes this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_transcript_ends_its_watcher_past_the_limit() {
    let fx = Capture::direct(20, true).await;
    fx.start("new", &[("KCAP_WATCH_IDLE_MS", "800")]).await;
    fx.within(PATIENCE, "the watcher to end", || {
        fx.lines_on_server() == 20 && fx.watcher().is_none()
    })
    .await;
    fx.within(Duration::from_secs(20), "the finalizer", || fx.drained())
        .await;
    fx.within(PATIENCE, "the session-end", || fx.ended_with("idle"))
        .await;
    assert_exactly_once(&fx.server, fx.sid, &fx.content);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_server_down_at_session_start_the_server_later_gets_start_lines_end_in_order() {
    let env = Env::new();
    let addr = free_port();
    let url = format!("http://{addr}");
    let (sid, path, mut content) = session_with(&env, |sid| synthetic_transcript(sid, 30, false));
    let _reap = Reap::new(&env, [sid]);
    let start = payload(&sid.to_string(), json!({"source": "new"}));
    let (out, took) = run_hook(&env, &url, "sessionStart", &start, &[]).await;
    assert!(out.status.success() && took < Duration::from_secs(6), "{out:?}");
    let pending = env.store().pending_notices(Some(sid)).unwrap();
    assert_eq!(pending.len(), 1, "the session-start is kept");
    let note = payload(
        &sid.to_string(),
        json!({"message": "waiting", "notification_type": "idle"}),
    );
    assert!(run_hook(&env, &url, "notification", &note, &[])
        .await
        .0
        .status
        .success());
    for i in 0..10 {
        let line = user_message(&format!("while down {i}"));
        append(&path, line.as_bytes());
        content.extend_from_slice(line.as_bytes());
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // the watcher fails a few times
                                                          // The server comes back (behind a recorder that notes the order of what it accepted).
    let server = server().await;
    let recorder = Recorder::start(addr, server.url()).await;
    assert!(
        wait_until("the watcher to deliver", Duration::from_secs(15), || {
            server.session(sid).lines.len() == 40
        })
        .await
    );
    let end = payload(&sid.to_string(), json!({"reason": "user_exit"}));
    assert!(run_hook(&env, &recorder.url(), "sessionEnd", &end, &[])
        .await
        .0
        .status
        .success());
    // Copilot's post-hook tail.
    let tail = shutdown_line();
    append(&path, tail.as_bytes());
    content.extend_from_slice(tail.as_bytes());
    assert!(
        wait_until("the session-end", Duration::from_secs(20), || {
            server.storage().summary(sid).unwrap().unwrap().ended.is_some()
        })
        .await,
        "{}",
        env.log_of(sid)
    );
    assert_exactly_once(&server, sid, &content);
    let posts = recorder.posts();
    let first_line = posts.iter().position(|p| p == "/hooks/transcript").unwrap();
    let last_line = posts.iter().rposition(|p| p == "/hooks/transcript").unwrap();
    let start_at = posts
        .iter()
        .position(|p| p.starts_with("/hooks/session-start"))
        .unwrap();
    let note_at = posts.iter().position(|p| p == "/hooks/notification").unwrap();
    let end_at = posts
        .iter()
        .position(|p| p.starts_with("/hooks/session-end"))
        .unwrap();
    assert!(
        start_at < note_at && note_at < first_line,
        "start and notification before lines: {posts:?}"
    );
    assert!(
        last_line < end_at,
        "end after the last lines (the post-hook tail too): {posts:?}"
    );
    assert_eq!(
        posts
            .iter()
            .filter(|p| p.starts_with("/hooks/session-start"))
            .count(),
        1,
        "{posts:?}"
    );
    // The finalizer clears the notice just after the server took it.
    assert!(
        wait_until("the outbox to empty", PATIENCE, || {
            env.store().pending_notices(None).unwrap().is_empty()
        })
        .await
    );
    let summary = server.storage().summary(sid).unwrap().unwrap();
    assert_eq!(summary.started.and_then(|s| s.detail).as_deref(), Some("new"));
    assert_eq!(summary.notifications, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_already_shut_down_at_session_end_gets_its_end_after_its_lines() {
    // The finalizer finds the shutdown at once and drains while the hook still runs: the
    // session-end must already be queued for it, or it would wait for a later sweep.
    let fx = Capture::recorded(300, true).await;
    fx.end("complete", &[]).await;
    fx.within(PATIENCE, "the session-end", || fx.ended()).await;
    assert_exactly_once(&fx.server, fx.sid, &fx.content);
    let posts = fx.posts();
    let last_line = posts.iter().rposition(|p| p == "/hooks/transcript").unwrap();
    let end_at = posts
        .iter()
        .position(|p| p.starts_with("/hooks/session-end"))
        .unwrap();
    assert!(last_line < end_at, "{posts:?}");
    // The finalizer clears the notice just after the server took it.
    fx.within(PATIENCE, "the outbox to empty", || {
        fx.env.store().pending_notices(None).unwrap().is_empty()
    })
    .await;
}

/// A notice the server refuses for good (400: it will never take it) is dropped, with an error
/// logged, instead of holding the session's lines back for ever; one it may take later (503,
/// or 401 until the token is fixed) is kept, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_notice_refused_for_good_does_not_hold_the_lines_back() {
    use kcap::effects::client::Client;
    use kcap::effects::outbox::{self, Flush};
    use kcap::store::NoticeKind;

    let env = Env::new();
    let server = server().await;
    let store = env.store();
    let client = Client::new(&server.url(), None, Duration::from_secs(5)).unwrap();
    let sid = SessionId::new_random();
    let start = || outbox::notice(NoticeKind::SessionStart, json!({"session_id": sid.dashless()}));

    for (code, kept) in [(503, true), (401, true), (400, false), (413, false)] {
        store.queue_notice(sid, &start()).unwrap();
        server.inject([Fault::Status(code)]);
        let flushed = outbox::flush(&store, &client, Some(sid), Flush::BeforeLines).await;
        let pending = store.pending_notices(Some(sid)).unwrap().len();
        assert_eq!(pending == 1, kept, "HTTP {code}: {flushed:?}");
        assert_eq!(flushed.failed.is_some(), kept, "HTTP {code}: {flushed:?}");
        if kept {
            // Delivered on the next flush, once the server takes it.
            let flushed = outbox::flush(&store, &client, Some(sid), Flush::BeforeLines).await;
            assert_eq!((flushed.delivered, flushed.failed), (1, None), "HTTP {code}");
        }
        assert!(
            store.pending_notices(Some(sid)).unwrap().is_empty(),
            "HTTP {code}"
        );
    }
}

/// Copilot (or a user's hook config listing kcap twice) runs sessionEnd again after the first
/// end reached the server: the server gets one end per session run. A sessionStart makes the
/// session run again, and its next end is posted.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_session_end_is_posted_once_per_session_run() {
    let fx = Capture::recorded(20, true).await;
    let (env, sid) = (&fx.env, fx.sid);
    // Stricter than `Capture::finished`: a machine must be recorded by the time the hook returns.
    let finished = |generation: u32| {
        let store = env.store();
        latest(&store, sid).meta.generation == generation
            && is_drained(&store, sid)
            && store.pending_notices(Some(sid)).is_ok_and(|p| p.is_empty())
            && store.lease(sid).is_ok_and(|l| l.is_none())
    };
    let end = fx.end_payload("complete");
    for (generation, expected) in [(0, 1), (1, 1)] {
        fx.hook("sessionEnd", &end, &[]).await;
        fx.within(Duration::from_secs(20), "the finalizer and its end", || {
            finished(generation)
        })
        .await;
        assert_eq!(fx.ends(), expected, "sessionEnd #{generation}: {:?}", fx.posts());
    }
    assert_exactly_once(&fx.server, sid, &fx.content);
    // Resumed: a new run, a new end.
    fx.start("resume", &[]).await;
    // Stamped by the resumed run's agent (the repeated payload above is run 1's).
    fx.end("complete", &[]).await;
    fx.within(Duration::from_secs(20), "the resumed session's end", || {
        fx.ends() == 2
    })
    .await;
}

/// A sweep, a finalizer posting the session's end, or a sessionEnd hook draining holds the
/// session's lock as a drain for a moment: a watcher started then waits for it and watches,
/// instead of leaving its run unwatched. Another watcher holding the lock makes it leave at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_watcher_waits_out_a_drain_and_leaves_only_for_a_watcher() {
    let fx = Capture::direct(10, false).await;
    let (env, server, sid, path) = (&fx.env, &fx.server, fx.sid, &fx.path);
    let drain = watcher::claim_as(&env.kcap_home, sid, watcher::Role::Drain)
        .unwrap()
        .expect("the lock is free");
    let watch = |env: &Env| {
        let mut c = env.kcap(&server.url());
        c.args(["watch", &sid.to_string()])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    let mut first = watch(env).spawn().unwrap();
    let read_log = || watch_log(&fx);
    let mut exited = None;
    assert!(
        wait_until("the watcher to wait or leave", PATIENCE, || {
            exited = first.try_wait().unwrap();
            exited.is_some() || read_log().contains("held by a drain")
        })
        .await
    );
    assert!(
        exited.is_none(),
        "the watcher left while a drain held the lock ({exited:?}):\n{}",
        read_log()
    );
    assert!(server.session(sid).lines.is_empty(), "delivered under a drain");
    drop(drain);
    let pid = first.id();
    assert!(
        wait_until("the watcher to take the lock and deliver", PATIENCE, || {
            watcher::running(&env.kcap_home, sid) == pid && server.session(sid).lines.len() == 10
        })
        .await,
        "{}",
        read_log()
    );
    assert_exactly_once(server, sid, &fx.content);
    let second = watch(env).output().await.unwrap();
    assert!(second.status.success(), "{second:?}");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("a watcher already runs"),
        "{second:?}"
    );
    assert_eq!(watcher::running(&env.kcap_home, sid), pid);
    first.kill().await.unwrap();
}

/// `kcap watchers stop` tells the running watchers (one session's, or all) to drain and exit
/// and says so; a sessionEnd hook's drain holding another session's lock is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn watchers_stop_stops_the_sessions_watchers_and_nothing_else() {
    let (env, server) = (Env::new(), server().await);
    let url = server.url();
    let sessions: Vec<_> = (0..3)
        .map(|_| session_with(&env, |sid| synthetic_transcript(sid, 5, false)))
        .collect();
    let _reap = Reap::new(&env, sessions.iter().map(|s| s.0));
    let (a, b, drained) = (sessions[0].0, sessions[1].0, sessions[2].0);
    let mut children = Vec::new();
    for (sid, path, _) in &sessions[..2] {
        let mut c = env.kcap(&url);
        c.args(["watch", &sid.to_string()])
            .arg(path)
            .stderr(Stdio::null());
        children.push(c.spawn().unwrap());
    }
    let drain = watcher::claim_as(&env.kcap_home, drained, watcher::Role::Drain)
        .unwrap()
        .unwrap();
    // Delivering: each has its signal handler in place.
    assert!(
        wait_until("both watchers to deliver", PATIENCE, || {
            [a, b].iter().all(|s| {
                watcher::running(&env.kcap_home, *s).is_some() && server.session(*s).lines.len() == 5
            })
        })
        .await
    );
    let stop = |extra: &[&str]| {
        let mut c = env.kcap(&url);
        c.args(["watchers", "stop"]).args(extra);
        c.output()
    };
    let out = stop(&["--session", &a.to_string()]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains(&a.to_string()) && text.contains("stopped"),
        "{text}"
    );
    assert!(watcher::running(&env.kcap_home, a).is_none(), "{text}");
    assert!(
        watcher::running(&env.kcap_home, b).is_some(),
        "another session's watcher was stopped"
    );
    let out = stop(&[]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains(&b.to_string()) && !text.contains(&drained.to_string()),
        "{text}"
    );
    assert!(watcher::running(&env.kcap_home, b).is_none());
    let holder = watcher::holder(&env.kcap_home, drained).expect("the drain still holds its lock");
    assert_eq!(holder.process.pid, std::process::id());
    // The watchers drained before they left: every line is on the server once.
    for (sid, _, content) in &sessions[..2] {
        assert_exactly_once(&server, *sid, content);
    }
    for mut child in children {
        assert!(child.wait().await.unwrap().success());
    }
    let out = stop(&[]).await.unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no watchers running"),
        "{out:?}"
    );
    let out = stop(&["--session", "../etc"]).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    drop(drain);
}

/// `kcap watchers stop` on a crashed session: its Copilot is gone, so no agentStop or sessionEnd
/// will ever come. The watcher, told to stop before it noticed (it looks at the agent only
/// between polls, here ten minutes apart), hands the session off as when it notices itself: the
/// server still gets every line and the session's end.
/// Starts `kcap watch` on the session (polling only every 10 min: lines wake it) and appends a
/// line at a time to `content` until the server has them all, so the watcher is past a poll
/// with its signal handler in place (a line written before it watches the file does not wake it).
async fn watch_until_delivered(fx: &mut Capture) -> tokio::process::Child {
    let child = fx
        .env
        .kcap(&fx.url())
        .args(["watch", &fx.sid.to_string()])
        .arg(&fx.path)
        .env("KCAP_WATCH_POLL_MS", "600000")
        .env("KCAP_SHUTDOWN_BUDGET_MS", "5000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for i in 0.. {
        fx.append(user_message(&i.to_string()).as_bytes());
        let n = count_lines(&fx.content);
        if wait_until("the watcher to deliver", Duration::from_secs(2), || {
            fx.lines_on_server() == n
        })
        .await
        {
            break;
        }
        assert!(i < 15, "the watcher never delivered\n{}", fx.log());
    }
    child
}

/// Appends one more line (written after the watcher left: only a finalizer can deliver it),
/// then checks that the server gets every line once and an end with `reason`. Returns the
/// watcher's log.
async fn assert_the_rest_and_an_end(fx: &mut Capture, reason: &str) -> String {
    fx.append(b"{\"type\":\"assistant.message\",\"data\":{\"content\":\"last\"}}\n");
    let n = count_lines(&fx.content);
    fx.within(
        PATIENCE,
        "the session-end after every line (no end, or a line missing)",
        || fx.lines_on_server() == n && fx.ended(),
    )
    .await;
    let ended = fx
        .server
        .storage()
        .summary(fx.sid)
        .unwrap()
        .unwrap()
        .ended
        .unwrap();
    let watch_log = watch_log(fx);
    assert_eq!(ended.reason.as_deref(), Some(reason), "{watch_log}\n{}", fx.log());
    assert_exactly_once(&fx.server, fx.sid, &fx.content);
    watch_log
}

/// The session's watcher log.
fn watch_log(fx: &Capture) -> String {
    let name = format!("{}.watch.log", fx.sid.dashed());
    std::fs::read_to_string(fx.env.kcap_home.join("logs").join(name)).unwrap_or_default()
}

/// `kcap watchers stop` on the session, which must succeed.
async fn watchers_stop(fx: &Capture) {
    let out = fx
        .env
        .kcap(&fx.url())
        .args(["watchers", "stop", "--session", &fx.sid.to_string()])
        .args(["--wait", "60"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", fx.log());
}

/// A stand-in for the agent: a process holding the session's in-use lock.
fn agent_holding(path: &std::path::Path) -> std::process::Child {
    let agent = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let lock = path.parent().unwrap().join(format!("inuse.{}.lock", agent.id()));
    std::fs::write(&lock, b"").unwrap();
    agent
}

#[tokio::test(flavor = "multi_thread")]
async fn watchers_stop_on_a_dead_copilots_session_still_delivers_its_end() {
    let mut fx = Capture::direct(5, false).await;
    let mut agent = agent_holding(&fx.path);
    let mut child = watch_until_delivered(&mut fx).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    watchers_stop(&fx).await;
    assert!(child.wait().await.unwrap().success());
    assert_the_rest_and_an_end(&mut fx, "agent_exited").await;
}

/// A watcher that found no agent process to watch (none marked the session, no hook's agent)
/// cannot tell a crashed session: `kcap watchers stop` is taken for the session's end, so a
/// finalizer delivers the rest and an end with reason `stopped` (else the session never gets one).
#[tokio::test(flavor = "multi_thread")]
async fn watchers_stop_without_a_known_agent_still_delivers_an_end() {
    let mut fx = Capture::direct(5, false).await;
    let mut child = watch_until_delivered(&mut fx).await;
    watchers_stop(&fx).await;
    assert!(child.wait().await.unwrap().success());
    assert_the_rest_and_an_end(&mut fx, "stopped").await;
    // The session was live after all: its real end comes with no line since. The `stopped`
    // end was kcap's guess, so the real one is no repeat: the server ends with its reason.
    fx.end("user_exit", &SHORT_BUDGET).await;
    fx.within(
        PATIENCE,
        "the real end (dropped after the `stopped` one?)",
        || {
            fx.server
                .storage()
                .summary(fx.sid)
                .unwrap()
                .and_then(|s| s.ended)
                .is_some_and(|e| e.reason.as_deref() == Some("user_exit"))
        },
    )
    .await;
}

/// The sessionEnd hook's SIGTERM is not a user's stop: a watcher with no agent process known
/// to watch just drains and exits, and hands nothing off (the hook's finalizer delivers the
/// rest and the real end).
#[tokio::test(flavor = "multi_thread")]
async fn the_hooks_stop_of_a_watcher_without_a_known_agent_hands_nothing_off() {
    let mut fx = Capture::direct(5, false).await;
    let mut child = watch_until_delivered(&mut fx).await;
    fx.end("user_exit", &SHORT_BUDGET).await;
    assert!(child.wait().await.unwrap().success());
    let watch_log = assert_the_rest_and_an_end(&mut fx, "user_exit").await;
    assert!(
        watch_log.contains("watcher stopped") && !watch_log.contains("handed to a finalizer"),
        "the hook's stop was taken for a user's:\n{watch_log}"
    );
}

/// The sessionEnd hook queues the run's real end, then stops the watcher; the agent exits while
/// the watcher drains, so the stopped watcher finds its agent gone and hands off. The end already
/// queued is the session's end: the hand-off must not replace it with its own `agent_exited`
/// one. It still starts a finalizer (lines its final drain could not deliver need one), and
/// every line arrives once.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_end_queued_before_the_stop_keeps_its_reason_when_the_agent_is_gone() {
    let mut fx = Capture::direct(5, false).await;
    let mut agent = agent_holding(&fx.path);
    let mut child = watch_until_delivered(&mut fx).await;
    // The agent is gone by the time the watcher, stopped by the hook, looks at it.
    agent.kill().unwrap();
    agent.wait().unwrap();
    fx.end("user_exit", &[]).await;
    assert!(child.wait().await.unwrap().success());
    let watch_log = assert_the_rest_and_an_end(&mut fx, "user_exit").await;
    assert!(watch_log.contains("session handed to a finalizer"), "{watch_log}");
}

/// A watcher killed with SIGKILL leaves its pid file behind: the file names a process that
/// holds no lock, so nobody takes it for a running watcher, and the next watcher takes it over
/// (its record replaces the dead one's whole). While a process holds the lock, no claim gets it.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_watchers_pid_file_is_taken_over_and_a_held_one_is_not() {
    let fx = Capture::direct(5, false).await;
    let (env, sid) = (&fx.env, fx.sid);
    let pid_file = watcher::pid_file(&env.kcap_home, sid);
    // A record longer than the one that replaces it: no tail of it may survive.
    std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
    std::fs::write(
        &pid_file,
        "4194303 99999999999 watch 1795000000000 1795000000000 x y z",
    )
    .unwrap();
    assert!(
        watcher::holder(&env.kcap_home, sid).is_none(),
        "an unlocked record is no holder"
    );
    let held = watcher::claim(&env.kcap_home, sid)
        .unwrap()
        .expect("a stale file is taken over");
    let me = watcher::holder(&env.kcap_home, sid).expect("the claim's record");
    assert_eq!(
        (me.process.pid, me.role),
        (std::process::id(), watcher::Role::Watch)
    );
    assert!(!std::fs::read_to_string(&pid_file).unwrap().contains('x'));
    for role in [watcher::Role::Watch, watcher::Role::Drain] {
        assert!(
            watcher::claim_as(&env.kcap_home, sid, role).unwrap().is_none(),
            "a held lock was taken as {role:?}"
        );
    }
    drop(held);
    // A real watcher, killed the hard way, then its successor.
    let spawn = || {
        let mut c = env.kcap(&fx.url());
        c.args(["watch", &sid.to_string()])
            .arg(&fx.path)
            .stderr(Stdio::null());
        c.spawn().unwrap()
    };
    let mut first = spawn();
    let first_pid = first.id();
    fx.within(PATIENCE, "the first watcher", || fx.watcher() == first_pid)
        .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    assert!(pid_file.exists(), "the killed watcher's pid file stays");
    assert_eq!(
        watcher::running(&env.kcap_home, sid),
        None,
        "a dead watcher is not running"
    );
    let mut second = spawn();
    let second_pid = second.id();
    fx.within(PATIENCE, "the second watcher to take over and deliver", || {
        fx.watcher() == second_pid && fx.lines_on_server() == 5
    })
    .await;
    assert_exactly_once(&fx.server, sid, &fx.content);
    second.kill().await.unwrap();
}
