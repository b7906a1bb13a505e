//! One session-end per session run, as the server sees it: a late agentStop of a run that has
//! ended does not make a repeated end look new, and a session resumed at once keeps its new
//! watcher and gets both ends, in order.

mod capture_support;
mod common;

use std::time::Duration;

use capture_support::*;
use common::*;
use kcap::effects::watcher;
use kcap::ids::SessionId;
use serde_json::json;

/// A watcher that ends its run idle soon, and a finalizer that waits little for the shutdown.
const IDLE: [(&str, &str); 2] = [("KCAP_WATCH_IDLE_MS", "800"), ("KCAP_SHUTDOWN_BUDGET_MS", "500")];

/// Room for the next run's start before a finalizer gives up waiting for its run's shutdown.
const SLOW: [(&str, &str); 1] = [("KCAP_SHUTDOWN_BUDGET_MS", "20000")];

/// Copilot's agentStop can come after its sessionEnd (or a user's hook runs late): it is not
/// a new run, so a repeated sessionEnd after it is still the same run's, and dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_agent_stop_does_not_let_a_repeated_end_through() {
    let fx = Capture::recorded(20, true).await;
    let end = fx.end_payload("complete");
    fx.start("new", &[]).await;
    fx.hook("sessionEnd", &end, &[]).await;
    fx.within(Duration::from_secs(20), "the first end", || fx.finished(0))
        .await;
    assert_eq!(fx.ends(), 1, "{:?}", fx.posts());
    // Late: after the run's end reached the server.
    fx.agent_stop().await;
    fx.hook("sessionEnd", &end, &[]).await;
    fx.within(Duration::from_secs(20), "the repeated end's finalizer", || {
        fx.finished(1)
    })
    .await;
    assert_eq!(fx.ends(), 1, "a repeated end went out: {:?}", fx.posts());
    assert_exactly_once(&fx.server, fx.sid, &fx.content);
}

/// The user resumes a session the moment it ended: run 1's finalizer is still waiting for
/// run 1's shutdown line while run 2's watcher starts. Run 1's end must neither stop run 2's
/// watcher nor wait behind it, and run 2's end must not be taken for run 1's.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_resumed_at_once_keeps_its_watcher_and_gets_both_ends() {
    let mut fx = Capture::recorded(50, false).await;
    fx.start("new", &[]).await;
    fx.within(Duration::from_secs(20), "run 1's lines", || {
        fx.lines_on_server() == 50
    })
    .await;
    fx.end("complete", &SLOW).await;
    // Resumed before run 1's agent wrote its shutdown.
    fx.start("resume", &SLOW).await;
    let mut run2_watcher = None;
    fx.within(Duration::from_secs(10), "run 2's watcher", || {
        run2_watcher = fx.watcher();
        run2_watcher.is_some()
    })
    .await;
    fx.append(shutdown_line().as_bytes());
    fx.within(Duration::from_secs(20), "run 1's end", || fx.ends() == 1)
        .await;
    assert_eq!(
        fx.watcher(),
        run2_watcher,
        "run 1's end stopped run 2's watcher:\n{}",
        fx.log()
    );
    // Run 2 writes, its watcher delivers, then run 2 ends.
    fx.append(user_messages("run 2 line", 10).as_bytes());
    fx.within(Duration::from_secs(20), "run 2's lines from its watcher", || {
        fx.lines_on_server() == 61
    })
    .await;
    fx.append(shutdown_line().as_bytes());
    // Stamped now, by run 2's agent.
    fx.end("complete", &[]).await;
    fx.within(Duration::from_secs(20), "run 2's end, which never came", || {
        fx.ends() == 2
    })
    .await;
    fx.within(Duration::from_secs(20), "run 2's finalizer", || fx.finished(1))
        .await;
    assert_two_ends_after_every_line(&fx);
}

/// The server holds every line of `path` once and two session-ends (one per run), and the last
/// end came after the last line.
#[track_caller]
fn assert_two_ends_after_every_line(fx: &Capture) {
    let posts = fx.posts();
    assert_eq!(
        fx.ends(),
        2,
        "a real end was dropped or repeated: {posts:?}\n{}",
        fx.log()
    );
    fx.assert_file_exactly_once();
    let last_line = posts.iter().rposition(|p| p == "/hooks/transcript").unwrap();
    let last_end = posts
        .iter()
        .rposition(|p| p.starts_with("/hooks/session-end"))
        .unwrap();
    assert!(last_line < last_end, "{posts:?}");
}

/// Sets `path`'s modification time `age` back.
#[track_caller]
fn age(path: &std::path::Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - age).unwrap();
}

/// The sweep forgets the run records of sessions ended long ago, and only those: not a recent
/// one, not one with an end still queued (its marker drops a repeat), not one whose watcher
/// lock is held.
#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_expires_old_run_records_and_only_those() {
    let (env, server) = (Env::new(), server().await);
    let url = server.url();
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let (sid, _, _) = session_with(&env, |sid| synthetic_transcript(sid, 5, true));
        hook_ok(
            &env,
            &url,
            "sessionStart",
            &payload(&sid.to_string(), json!({"source": "new"})),
            &[],
        )
        .await;
        hook_ok(
            &env,
            &url,
            "sessionEnd",
            &payload(&sid.to_string(), json!({"reason": "complete"})),
            &[],
        )
        .await;
        sessions.push(sid);
    }
    let _reap = Reap::new(&env, sessions.clone());
    assert!(
        wait_until("every end", Duration::from_secs(20), || sessions
            .iter()
            .all(|s| finished(&env, *s, 0)))
        .await
    );
    let files =
        |sid: SessionId| ["runs", "run-ends", "ended"].map(|dir| env.kcap_home.join(dir).join(sid.dashed()));
    let [old, recent, queued, locked] = [sessions[0], sessions[1], sessions[2], sessions[3]];
    for sid in [old, queued, locked] {
        for f in files(sid) {
            assert!(f.exists(), "{}", f.display());
            age(&f, Duration::from_secs(8 * 24 * 3600));
        }
    }
    let end =
        kcap::effects::outbox::notice(kcap::store::NoticeKind::SessionEnd, json!({"reason": "complete"}));
    env.store().queue_notice(queued, &end).unwrap();
    // The end of `queued` must not be posted by the sweep: the server is gone.
    drop(server);
    let _held = watcher::claim_as(&env.kcap_home, locked, watcher::Role::Drain)
        .unwrap()
        .unwrap();
    let out = env
        .run(
            &format!("http://{}", free_port()),
            &["finalize", "--resume", "--sweep"],
        )
        .await;
    assert!(out.status.success(), "{out:?}");
    let present = |sid: SessionId| files(sid).map(|f| f.exists());
    assert_eq!(present(old), [false; 3], "{out:?}");
    assert_eq!(present(recent), [true; 3]);
    assert_eq!(present(queued), [true; 3]);
    assert_eq!(present(locked), [true; 3]);
}

/// Run 1's end could not be posted (the server was unreachable when run 1 ended); the user
/// resumed and ended run 2. Run 2's end must not replace run 1's in the queue: the server
/// gets both, run 2's last, after every line.
#[tokio::test(flavor = "multi_thread")]
async fn an_undelivered_end_of_run_1_is_not_replaced_by_run_2s() {
    let mut fx = Capture::recorded(20, true).await;
    let down = format!("http://{}", free_port());
    let end = fx.end_payload("complete");
    fx.start("new", &[]).await;
    fx.within(Duration::from_secs(20), "run 1's lines", || {
        fx.lines_on_server() == 20
    })
    .await;
    fx.hook_to(&down, "sessionEnd", &end, &[]).await;
    // Run 1's finalizer cannot reach the server: its end stays queued.
    fx.within(Duration::from_secs(20), "run 1's finalizer to give up", || {
        fx.env.store().lease(fx.sid).is_ok_and(|l| l.is_none()) && !is_drained(&fx.env.store(), fx.sid)
    })
    .await;
    fx.start("resume", &[]).await;
    fx.append(user_message("run 2").as_bytes());
    fx.append(shutdown_line().as_bytes());
    fx.end("complete", &[]).await;
    fx.within(
        Duration::from_secs(20),
        "both ends, else run 1's end was lost",
        || fx.ends() == 2,
    )
    .await;
    fx.within(Duration::from_secs(20), "run 2's finalizer", || fx.finished(1))
        .await;
    fx.assert_file_exactly_once();
    // Each run in order: its start, its lines, its end; run 2's start is not held back behind
    // run 1's end while run 2's lines go.
    let requests = fx.recorder().requests();
    let posts = fx.posts();
    let at = |prefix: &str| -> Vec<usize> {
        (0..posts.len())
            .filter(|&i| posts[i].starts_with(prefix))
            .collect()
    };
    let (starts, lines, ends) = (
        at("/hooks/session-start"),
        at("/hooks/transcript"),
        at("/hooks/session-end"),
    );
    assert_eq!((starts.len(), ends.len()), (2, 2), "{posts:?}");
    let run2_first = *lines
        .iter()
        .find(|&&i| String::from_utf8_lossy(&requests[i].body).contains("run 2"))
        .expect("run 2's line was posted");
    let run1_last = *lines.iter().rfind(|&&i| i < run2_first).unwrap();
    assert!(starts[0] < lines[0], "run 1's start after its lines: {posts:?}");
    assert!(run1_last < ends[0], "run 1's end before its lines: {posts:?}");
    assert!(starts[1] < run2_first, "run 2's start after its lines: {posts:?}");
    assert!(
        lines.last().unwrap() < &ends[1],
        "run 2's end before its lines: {posts:?}"
    );
    // kcap's own keys stay in the store.
    for r in &requests {
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains("kcap_run") && !body.contains("kcap_gen"),
            "{}: {body}",
            r.path
        );
    }
}

/// A session of 20 lines starts (through `recorder`) with a watcher that ends it idle: the
/// hand-off's `idle` end is posted (the session is still live: that finalizer waits for a
/// shutdown that never comes, then drains). Then the user comes back in the same agent process:
/// 5 more lines and an agentStop, whose new watcher delivers them.
async fn idle_end_then_back(fx: &mut Capture) {
    fx.start("new", &IDLE).await;
    fx.within(PATIENCE, "the idle end", || fx.ends() == 1 && fx.finished(0))
        .await;
    fx.append(user_messages("back", 5).as_bytes());
    fx.agent_stop().await;
    fx.within(PATIENCE, "the new lines", || fx.lines_on_server() == 25)
        .await;
}

/// The watcher ended an idle session and its finalizer posted an `idle` end; then the user came
/// back in the same Copilot process (no sessionStart): agentStop starts a watcher, new lines
/// arrive, and the real sessionEnd comes. Its end must not be taken for a repeat of the idle
/// one: the server gets both, the real one after the last line.
#[tokio::test(flavor = "multi_thread")]
async fn the_real_end_after_an_idle_hand_off_is_not_dropped() {
    let mut fx = Capture::recorded(20, false).await;
    idle_end_then_back(&mut fx).await;
    fx.append(shutdown_line().as_bytes());
    fx.end("complete", &[]).await;
    fx.within(Duration::from_secs(30), "the real end's finalizer", || {
        fx.finished(1)
    })
    .await;
    assert_two_ends_after_every_line(&fx);
}

/// As above, but the machine's clock steps back an hour before the real exit: the agent stamps
/// the real sessionEnd before the run's own sessionStart. With no run before it, it is still
/// this run's end: it stops this run's watcher and is posted, after the run's last line.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_end_stamped_before_its_runs_start_stops_the_watcher_and_is_posted() {
    let mut fx = Capture::recorded(20, false).await;
    let start = stamped(fx.sid, json!(kcap::config::now_ms()), json!({"source": "new"}));
    fx.hook("sessionStart", &start, &IDLE).await;
    fx.within(PATIENCE, "the idle end", || fx.ends() == 1 && fx.finished(0))
        .await;
    fx.append(user_message("back").as_bytes());
    fx.agent_stop().await;
    fx.within(PATIENCE, "the new line", || fx.lines_on_server() == 21)
        .await;
    assert!(fx.watcher().is_some(), "{}", fx.log());
    fx.append(shutdown_line().as_bytes());
    let stepped_back = json!(kcap::config::now_ms() - 3_600_000);
    let end = stamped(fx.sid, stepped_back, json!({"reason": "complete"}));
    fx.hook("sessionEnd", &end, &[]).await;
    fx.within(
        PATIENCE,
        "the run's watcher to stop (the real end left it running)",
        || fx.watcher().is_none(),
    )
    .await;
    fx.within(PATIENCE, "the real end's finalizer", || fx.finished(1))
        .await;
    assert_two_ends_after_every_line(&fx);
}

/// A sessionEnd of run 1 that arrives late (delayed, or repeated) after run 2's sessionStart:
/// stamped before run 2 started, it is run 1's. It must neither stop run 2's watcher nor be
/// posted as run 2's end; run 2's own end still comes, after run 2's lines.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_end_of_run_1_leaves_run_2_alone() {
    let mut fx = Capture::recorded(20, true).await;
    fx.start("new", &[]).await;
    // Stamped by run 1's agent as it exits; delivered twice, the second time late.
    let end = fx.end_payload("complete");
    fx.hook("sessionEnd", &end, &[]).await;
    fx.within(Duration::from_secs(20), "run 1's end", || fx.finished(0))
        .await;
    std::thread::sleep(Duration::from_millis(5));
    fx.start("resume", &[]).await;
    let mut run2_watcher = None;
    fx.within(Duration::from_secs(10), "run 2's watcher", || {
        run2_watcher = fx.watcher();
        run2_watcher.is_some()
    })
    .await;
    // The late copy of run 1's end. Its finalizer waits little for a shutdown run 2 has not written.
    fx.hook("sessionEnd", &end, &[("KCAP_SHUTDOWN_BUDGET_MS", "300")])
        .await;
    fx.within(Duration::from_secs(20), "the late end's finalizer", || {
        fx.finished(1)
    })
    .await;
    assert_eq!(
        fx.watcher(),
        run2_watcher,
        "run 1's late end stopped run 2's watcher:\n{}",
        fx.log()
    );
    assert_eq!(fx.ends(), 1, "run 1's late end went out: {:?}", fx.posts());
    fx.append(user_message("run 2").as_bytes());
    fx.append(shutdown_line().as_bytes());
    fx.end("complete", &[]).await;
    fx.within(Duration::from_secs(20), "run 2's end", || fx.finished(2))
        .await;
    assert_two_ends_after_every_line(&fx);
}

/// kcap's own keys (`kcap_run`, `kcap_gen`) never reach the server in a session-end; a
/// notification is forwarded as the agent sent it, even with a field of that name.
#[tokio::test(flavor = "multi_thread")]
async fn only_a_session_end_loses_kcaps_own_keys() {
    use kcap::effects::client::Client;
    use kcap::effects::outbox::{self, Flush};
    use kcap::effects::runs;
    use kcap::store::NoticeKind;

    let (env, server) = (Env::new(), server().await);
    let recorder = Recorder::start(free_port(), server.url()).await;
    let store = env.store();
    let client = Client::new(&recorder.url(), None, Duration::from_secs(5)).unwrap();
    let sid = SessionId::new_random();
    let note =
        json!({"session_id": sid.dashless(), "message": "hi", "notification_type": "idle", "kcap_run": 5});
    let mut end = json!({"session_id": sid.dashless(), "reason": "complete"});
    end[runs::RUN_KEY] = 7.into();
    end[runs::GEN_KEY] = 0.into();
    store
        .queue_notice(sid, &outbox::notice(NoticeKind::Notification, note))
        .unwrap();
    store
        .queue_notice(sid, &outbox::notice(NoticeKind::SessionEnd, end))
        .unwrap();
    let flushed = outbox::flush(&store, &client, Some(sid), Flush::All).await;
    assert_eq!(flushed.delivered, 2, "{flushed:?}");
    let requests = recorder.requests();
    let body = |prefix: &str| -> serde_json::Value {
        let r = requests
            .iter()
            .find(|r| r.path.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {requests:?}"));
        serde_json::from_slice(&r.body).unwrap()
    };
    assert_eq!(body("/hooks/notification")["kcap_run"], 5);
    let end = body("/hooks/session-end");
    assert_eq!(end["reason"], "complete");
    assert!(
        end.get("kcap_run").is_none() && end.get("kcap_gen").is_none(),
        "{end}"
    );
}

/// The session-ends of `sid` the server got.
fn ends_of(recorder: &Recorder, sid: SessionId) -> usize {
    recorder
        .requests()
        .iter()
        .filter(|r| {
            r.path.starts_with("/hooks/session-end")
                && String::from_utf8_lossy(&r.body).contains(&sid.dashless())
        })
        .count()
}

/// A hook payload of `sid` stamped by the agent's clock `stamp`.
fn stamped(sid: SessionId, stamp: serde_json::Value, extra: serde_json::Value) -> Vec<u8> {
    let mut extra = extra;
    extra["timestamp"] = stamp;
    payload(&sid.to_string(), extra)
}

/// An agent's clock: what it stamps a payload with now.
type Clock = fn() -> serde_json::Value;

/// The agent stamps its payloads with its own clock, which need not be the machine's: an hour
/// behind, in seconds, or a zone-less local time five hours behind UTC. Whatever it is, each
/// run's end is that run's (compared with the run's own start stamp): it stops the run's
/// watcher and reaches the server after the run's lines, never taken for a late end of the
/// run before.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_clock_unlike_the_machines_never_drops_a_runs_end() {
    let (env, server) = (Env::new(), server().await);
    let recorder = Recorder::start(free_port(), server.url()).await;
    let url = recorder.url();
    let clocks: [(&str, Clock); 3] = [
        ("milliseconds an hour behind", || {
            json!(kcap::config::now_ms() - 3_600_000)
        }),
        ("seconds", || json!(kcap::config::now_ms() / 1000)),
        ("zone-less local time, UTC-5", || {
            let local = std::time::SystemTime::now() - Duration::from_secs(5 * 3600);
            let text = humantime::format_rfc3339_millis(local).to_string();
            json!(text.trim_end_matches('Z'))
        }),
    ];
    for (clock, now) in clocks {
        let (sid, path, _) = session_with(&env, |sid| synthetic_transcript(sid, 10, true));
        let _reap = Reap::new(&env, [sid]);
        for (run, source) in [(0, "new"), (1, "resume")] {
            let start = stamped(sid, now(), json!({"source": source}));
            hook_ok(&env, &url, "sessionStart", &start, &[]).await;
            if run == 1 {
                append(&path, user_message("run 2").as_bytes());
                append(&path, shutdown_line().as_bytes());
            }
            // Never in the same stamp as the start, even counted in seconds.
            if clock == "seconds" {
                tokio::time::sleep(Duration::from_millis(1100)).await;
            }
            let end = stamped(sid, now(), json!({"reason": "complete"}));
            hook_ok(&env, &url, "sessionEnd", &end, &[]).await;
            // Taken for an earlier run's end, it would leave this run's watcher running.
            assert!(
                wait_until("the run's watcher to stop", PATIENCE, || {
                    watcher::running(&env.kcap_home, sid).is_none()
                })
                .await,
                "{clock}: run {}'s end left its watcher running\n{}",
                run + 1,
                env.log_of(sid)
            );
            assert!(
                wait_until("the run's finalizer", PATIENCE, || finished(&env, sid, run)).await,
                "{clock}: {}",
                env.log_of(sid)
            );
            assert_eq!(
                ends_of(&recorder, sid),
                run as usize + 1,
                "{clock}: run {}'s end was dropped\n{}",
                run + 1,
                env.log_of(sid)
            );
        }
        assert_exactly_once(&server, sid, &std::fs::read(&path).unwrap());
    }
}

/// Run 1 ended idle (the watcher's hand-off end went out), the user came back and ran more
/// turns, then really exited; before that exit's end was posted (its finalizer was still
/// waiting for the shutdown line), run 2 started. Run 1's real end follows lines delivered
/// since its idle end: it is posted, not taken for a repeat because run 2 has started.
#[tokio::test(flavor = "multi_thread")]
async fn a_runs_real_end_is_posted_though_the_next_run_started_before_it_went() {
    let mut fx = Capture::recorded(20, false).await;
    idle_end_then_back(&mut fx).await;
    // The real exit; its agent writes the shutdown only after run 2 has started.
    fx.end("complete", &SLOW).await;
    fx.start("resume", &SLOW).await;
    fx.append(shutdown_line().as_bytes());
    fx.within(PATIENCE, "run 1's real end, else it was dropped", || {
        fx.ends() == 2
    })
    .await;
    fx.within(PATIENCE, "run 1's finalizer", || fx.finished(1)).await;
    fx.assert_file_exactly_once();
    // Run 1's shutdown went before run 1's end. (Run 2's watcher may send it again after the
    // end: a duplicate, which the server drops.)
    let requests = fx.recorder().requests();
    let shutdown = requests.iter().position(|r| {
        r.path == "/hooks/transcript" && String::from_utf8_lossy(&r.body).contains("session.shutdown")
    });
    let real_end = requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.path.starts_with("/hooks/session-end"))
        .nth(1)
        .map(|(i, _)| i);
    assert!(
        matches!((shutdown, real_end), (Some(s), Some(e)) if s < e),
        "{:?}",
        fx.posts()
    );
}

/// Rolling forward and back: the kcap before session runs remembered a posted end as
/// `ended/<session>` (its content a time), dropped every end while it existed, and removed it
/// when the session ran again (sessionStart, agentStop). Its marker must not make this kcap drop
/// an end (it names no run), and this kcap keeps it as that kcap did, so that kcap, rolled back
/// to, neither drops a real end nor posts a repeat.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_kcaps_end_marker_neither_drops_an_end_nor_outlives_a_new_run() {
    use kcap::effects::client::Client;
    use kcap::effects::outbox::{self, Flush};
    use kcap::store::NoticeKind;

    let fx = Capture::direct(3, true).await;
    let (env, sid) = (&fx.env, fx.sid);
    let legacy = env.kcap_home.join("ended").join(sid.dashed());
    std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    // Written by the older kcap when it posted an idle hand-off end; then it was upgraded.
    std::fs::write(&legacy, "1795000000000").unwrap();
    let store = env.store();
    let client = Client::new(&fx.url(), None, Duration::from_secs(5)).unwrap();
    let end = json!({"session_id": sid.dashless(), "reason": "complete"});
    store
        .queue_notice(sid, &outbox::notice(NoticeKind::SessionEnd, end))
        .unwrap();
    let flushed = outbox::flush(&store, &client, Some(sid), Flush::All).await;
    assert_eq!(
        (flushed.delivered, &flushed.failed),
        (1, &None),
        "the older marker dropped the end"
    );
    drop(store);
    assert!(legacy.exists(), "a posted end leaves the older kcap's marker");
    for event in ["sessionStart", "agentStop"] {
        std::fs::write(&legacy, "1795000000000").unwrap();
        fx.hook(event, &fx.payload(json!({"source": "resume"})), &[])
            .await;
        assert!(
            !legacy.exists(),
            "after {event} the older kcap would drop the session's next end"
        );
    }
}

/// The sessionEnd hook queues its end without the watcher lock (the watcher holds it until the
/// hook stops it), while a watcher that found its agent gone may be queueing its hand-off end
/// of the same run. Either order keeps the hook's real end (its reason), in one queue entry,
/// waiting for the newest finalizer; another run's end is untouched.
#[test]
fn the_hooks_real_end_and_a_hand_off_end_of_its_run_keep_the_real_one_in_either_order() {
    use kcap::effects::outbox;
    use kcap::effects::runs::{GEN_KEY, RUN_KEY};
    use kcap::store::NoticeKind;

    let env = Env::new();
    let store = env.store();
    let end = |run: u64, reason: &str, generation: u32| {
        outbox::notice(
            NoticeKind::SessionEnd,
            json!({"reason": reason, RUN_KEY: run, GEN_KEY: generation}),
        )
    };
    let ends = |sid: SessionId| -> Vec<(u64, String, u64)> {
        store
            .pending_notices(Some(sid))
            .unwrap()
            .into_iter()
            .map(|p| {
                let b = &p.notice.body;
                (
                    b[RUN_KEY].as_u64().unwrap(),
                    b["reason"].as_str().unwrap().to_string(),
                    b[GEN_KEY].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // The hook first, then the hand-off: the real end stays, and waits for the hand-off's finalizer.
    let sid = SessionId::new_random();
    store.queue_notice(sid, &end(5, "earlier_run", 0)).unwrap();
    store.queue_notice(sid, &end(7, "user_exit", 1)).unwrap();
    assert!(store.queue_end_yielding(sid, &end(7, "agent_exited", 2)).unwrap());
    assert_eq!(
        ends(sid),
        vec![(5, "earlier_run".into(), 0), (7, "user_exit".into(), 2)],
        "the hand-off replaced the real end"
    );
    // The hand-off recorded its finalizer first but queues after the hook: the real end keeps
    // the hook's newer finalizer, which delivers `session.shutdown`.
    let sid = SessionId::new_random();
    store.queue_notice(sid, &end(7, "user_exit", 2)).unwrap();
    assert!(store.queue_end_yielding(sid, &end(7, "agent_exited", 1)).unwrap());
    assert_eq!(
        ends(sid),
        vec![(7, "user_exit".into(), 2)],
        "the real end was moved to the older finalizer"
    );
    // An interim end of the watcher's, held back by a down server, does not keep its place:
    // a later hand-off end replaces it (the hook's real end, after it, replaces either).
    let sid = SessionId::new_random();
    let interim = |reason: &str, generation: u32| {
        let mut notice = end(7, reason, generation);
        notice.body["source"] = json!(kcap::effects::runs::WATCHER_SOURCE);
        notice
    };
    assert!(!store.queue_end_yielding(sid, &interim("idle", 1)).unwrap());
    assert!(!store
        .queue_end_yielding(sid, &interim("agent_exited", 2))
        .unwrap());
    assert_eq!(
        ends(sid),
        vec![(7, "agent_exited".into(), 2)],
        "an interim end was kept over a later one"
    );
    // The hand-off first, then the hook: the hook's end replaces it.
    let sid = SessionId::new_random();
    assert!(!store.queue_end_yielding(sid, &end(7, "agent_exited", 1)).unwrap());
    store.queue_notice(sid, &end(7, "user_exit", 2)).unwrap();
    assert_eq!(ends(sid), vec![(7, "user_exit".into(), 2)]);
}

/// An idle session's `idle` end is on the server after its 5 lines; 3 more lines come while
/// the server is down, and a second watcher idles out. Its hand-off looks at the end marker
/// before those lines are delivered: "no line since" then, but not once they arrive. When the
/// server is back, `finalize --resume` delivers all 8 lines, and an end must follow them.
#[tokio::test(flavor = "multi_thread")]
async fn lines_delivered_after_a_hand_off_was_queued_still_get_an_end_after_them() {
    let mut fx = Capture::recorded(5, false).await;
    fx.start("new", &IDLE).await;
    fx.within(PATIENCE, "the idle end", || fx.ends() == 1 && fx.finished(0))
        .await;
    fx.append(user_messages("back", 3).as_bytes());
    let (env, sid) = (&fx.env, fx.sid);
    // The server is down: a second watcher idles out, and its finalizer parks.
    let down = format!("http://{}", free_port());
    let watch = env
        .kcap(&down)
        .args(["watch", &sid.to_string()])
        .arg(&fx.path)
        .env("KCAP_WATCH_IDLE_MS", "800")
        .env("KCAP_SHUTDOWN_BUDGET_MS", "500")
        .env("KCAP_DELIVERY_BUDGET_MS", "1000")
        .stderr(std::process::Stdio::null())
        .status();
    let status = tokio::time::timeout(PATIENCE, watch).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}\n{}", env.log_of(sid));
    fx.within(PATIENCE, "the finalizer to park", || {
        let store = env.store();
        matches!(store.latest_machine(sid), Ok(Some(r))
            if r.meta.generation == 1 && matches!(r.state().0.phase, kcap::machine::Phase::Parked { .. }))
            && store.lease(sid).is_ok_and(|l| l.is_none())
    })
    .await;
    // The server is back.
    let out = env.run(&fx.url(), &["finalize", "--resume"]).await;
    assert!(out.status.success(), "{out:?}\n{}", env.log_of(sid));
    fx.within(PATIENCE, "every line and the outbox empty", || {
        fx.lines_on_server() == 8 && env.store().pending_notices(Some(sid)).is_ok_and(|p| p.is_empty())
    })
    .await;
    assert_two_ends_after_every_line(&fx);
}
