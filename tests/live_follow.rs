//! The live watcher follows its transcript by file notifications, and by polling when they are
//! unavailable: a real `kcap watch` process delivers lines appended after it started, either way.
//! No timing is asserted; the notification test makes polling too slow to pass it instead.

mod common;

use std::time::Duration;

use common::*;

/// Starts `kcap watch` on a new session, appends lines after it has started, and returns the
/// watcher's log once every line is on the server exactly once.
#[track_caller]
fn follow(extra_env: &'static [(&'static str, &'static str)]) -> String {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (env, server) = (Env::new(), server().await);
        let mut content = b"{\"type\":\"session.start\",\"data\":{}}\n".to_vec();
        let (sid, path) = env.session(&content);
        let mut cmd = env.kcap(&server.url());
        cmd.env("KCAP_WATCH_IDLE_MS", "0");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut watch = cmd.args(["watch", &sid.to_string()]).arg(&path).spawn().unwrap();
        wait_for("the first line", Duration::from_secs(30), || {
            server.session(sid).lines.len() == 1
        })
        .await;
        for n in 1..=5 {
            let line = format!("{{\"type\":\"assistant.message\",\"data\":{{\"n\":{n}}}}}\n");
            append(&path, line.as_bytes());
            content.extend_from_slice(line.as_bytes());
            wait_for("the appended line", Duration::from_secs(20), || {
                server.session(sid).lines.len() == n + 1
            })
            .await;
        }
        // SAFETY: stopping the watcher this test started.
        unsafe { libc::kill(watch.id().unwrap() as i32, libc::SIGTERM) };
        assert!(watch.wait().await.unwrap().success());
        assert_exactly_once(&server, sid, &content);
        let log = env
            .kcap_home
            .join("logs")
            .join(format!("{}.watch.log", sid.dashed()));
        std::fs::read_to_string(log).unwrap_or_default()
    })
}

#[test]
fn a_watcher_following_by_notifications_delivers_lines_appended_later() {
    // A poll interval far beyond the test's own limits: only a notification can wake it in time.
    let log = follow(&[("KCAP_WATCH_POLL_MS", "600000")]);
    assert!(
        log.contains("following the transcript by file notifications"),
        "{log}"
    );
    assert!(!log.contains("following the transcript by polling"), "{log}");
}

#[test]
fn a_watcher_without_notifications_polls_and_still_delivers() {
    let log = follow(&[("KCAP_FOLLOW", "poll"), ("KCAP_WATCH_POLL_MS", "50")]);
    assert!(log.contains("following the transcript by polling"), "{log}");
    assert!(log.contains("KCAP_FOLLOW=poll"), "{log}");
    assert!(
        !log.contains("following the transcript by file notifications"),
        "{log}"
    );
}
