//! A transcript replaced by an atomic rewrite (a new file renamed over it) while it is being
//! read: the finalizer mid-drain, the live watcher mid-watch, and a finalizer killed and
//! resumed after the rewrite. The new file is read again from line 0 under the same ids: every
//! line arrives once, what the server held stays, the shutdown's token totals arrive.

mod capture_support;
mod common;

use std::path::Path;
use std::time::Duration;

use capture_support::*;
use common::*;
use kcap::ids::SessionId;
use kcap::machine::Phase;
use kcap::server::Fault;

/// Writes `content` to a temporary file beside `path` and renames it over `path`.
fn rewrite_atomically(path: &Path, content: &[u8]) {
    let tmp = path.with_file_name("events.jsonl.tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `content` without its shutdown, a resume, `more` lines, and a new shutdown.
fn grown(sid: SessionId, content: &[u8], more: usize) -> Vec<u8> {
    let mut out = content.to_vec();
    out.extend_from_slice(b"{\"type\":\"session.resume\",\"data\":{}}\n");
    let extra = synthetic_transcript(sid, more + 1, true);
    let skip_start = extra.iter().position(|b| *b == b'\n').unwrap() + 1;
    out.extend_from_slice(&extra[skip_start..]);
    out
}

fn finalizer(env: &Env, url: &str, sid: SessionId, path: &Path) -> tokio::process::Command {
    let mut c = env.kcap(url);
    c.env("KCAP_BATCH_LINES", "50")
        .env("KCAP_DELIVERY_BUDGET_MS", "60000")
        .args(["copilot-finalize", "--foreground", &sid.to_string()])
        .arg(path);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transcript_renamed_over_mid_drain_is_read_again_and_nothing_is_lost() {
    let (env, server) = (Env::new(), server().await);
    server.inject(std::iter::repeat_n(
        Fault::Delay(Duration::from_millis(20)),
        100_000,
    ));
    let sid = SessionId::new_random();
    let first = synthetic_transcript(sid, 2_000, true);
    let (_, path) = {
        let path = kcap::config::transcript_path(&env.copilot_home, sid);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &first).unwrap();
        (sid, path)
    };
    let child = finalizer(&env, &server.url(), sid, &path).spawn().unwrap();
    assert!(
        wait_until("part of the drain", Duration::from_secs(30), || {
            server.session(sid).lines.len() >= 300
        })
        .await
    );
    // Copilot resumed the session and rewrote the file atomically: 101 more lines, and a new
    // shutdown with the token totals as the last line.
    let second = grown(sid, &first, 100);
    assert_eq!(count_lines(&second), 2_101);
    rewrite_atomically(&path, &second);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = env.log_of(sid);
    assert!(
        log.contains("replaced by another file"),
        "the rewrite went unnoticed:\n{log}"
    );
    assert!(is_drained(&env.store(), sid), "{log}");
    assert_exactly_once(&server, sid, &second);
    let usage = server.storage().summary(sid).unwrap().unwrap().usage;
    assert_eq!(
        usage.shutdowns, 2,
        "both shutdowns (the new last line too) are on the server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watcher_follows_a_transcript_renamed_over_mid_watch() {
    let (env, server) = (Env::new(), server().await);
    let (sid, path, first) = session_with(&env, |sid| synthetic_transcript(sid, 100, false));
    let mut watch = spawn_watch(&env, &server.url(), sid, &path);
    assert!(
        wait_until("the first file", Duration::from_secs(15), || {
            server.session(sid).lines.len() == 100
        })
        .await
    );
    let second = grown(sid, &first, 50);
    rewrite_atomically(&path, &second);
    let all = count_lines(&second);
    let followed = wait_until("the new file", Duration::from_secs(15), || {
        server.session(sid).lines.len() == all
    })
    .await;
    // SAFETY: stopping the watcher this test started.
    unsafe { libc::kill(watch.id().unwrap() as i32, libc::SIGTERM) };
    let _ = watch.wait().await;
    let log = std::fs::read_to_string(
        env.kcap_home
            .join("logs")
            .join(format!("{}.watch.log", sid.dashed())),
    )
    .unwrap_or_default();
    assert!(followed, "the watcher stalled on the old file:\n{log}");
    assert!(log.contains("replaced by another file"), "{log}");
    assert_exactly_once(&server, sid, &second);
    // The position it kept names the new file, so the next reader starts there, not at 0.
    let position = env.store().position(sid).unwrap().unwrap();
    assert_eq!(position.watermark.next_line, all as u64);
    assert!(position.identity.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finalizer_resumed_after_the_file_was_replaced_starts_the_new_file_at_line_0() {
    let (env, server) = (Env::new(), server().await);
    server.inject(std::iter::repeat_n(
        Fault::Delay(Duration::from_millis(20)),
        100_000,
    ));
    let sid = SessionId::new_random();
    let first = synthetic_transcript(sid, 1_000, true);
    let path = kcap::config::transcript_path(&env.copilot_home, sid);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &first).unwrap();
    let mut child = finalizer(&env, &server.url(), sid, &path).spawn().unwrap();
    assert!(
        wait_until("part of the drain", Duration::from_secs(30), || {
            server.session(sid).lines.len() >= 200
        })
        .await
    );
    child.start_kill().unwrap(); // kill -9 mid-drain
    child.wait().await.unwrap();
    // While nothing runs, the file is rewritten with a longer first line: every offset moves,
    // and line 0 is different content under a used number.
    let mut second =
        b"{\"type\":\"session.start\",\"data\":{\"rewritten\":true,\"padding\":\"xxxxxxxxxxxxxxxx\"}}\n"
            .to_vec();
    let rest = first.iter().position(|b| *b == b'\n').unwrap() + 1;
    second.extend_from_slice(&first[rest..]);
    rewrite_atomically(&path, &second);
    server.inject(std::iter::empty());
    let out = env.run(&server.url(), &["finalize", "--resume"]).await;
    assert!(out.status.success(), "{out:?}\n{}", env.log_of(sid));
    assert!(matches!(state(&env.store(), sid).phase, Phase::Drained { .. }));
    let held = server.session(sid);
    assert_eq!(held.lines.len(), count_lines(&first));
    // Only line 0 differs: it is kept aside once; every other line matched its number (a resume
    // at the old offset would have cut lines in the wrong places).
    assert_eq!(
        held.conflicts,
        1,
        "lines were read at the wrong offsets:\n{}",
        env.log_of(sid)
    );
    for (n, line) in first.split(|b| *b == b'\n').enumerate().skip(1) {
        if !line.is_empty() {
            assert_eq!(held.lines[&(n as u64)].text.as_bytes(), line, "line {n}");
        }
    }
}
