//! Delivery never depends on a writable KCAP_HOME. A home left root-owned by `sudo kcap …`, a
//! read-only one (hooks run as an unprivileged user via `setpriv`), and a full disk: every line
//! still arrives once, session-start and session-end too, every hook exits 0, the user is told
//! what is wrong (hook stderr, `kcap status`, `kcap doctor`), nothing promises a sweep that
//! cannot run, and once the disk has room again a parked finalizer delivers the rest from a
//! store that opens cleanly.

mod capture_support;
mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use capture_support::*;
use common::*;
use kcap::machine::Phase;
use kcap::server::Server;
use serde_json::json;
use tokio::io::AsyncWriteExt;

const NOBODY: &str = "65534";

/// `kcap args…` as uid/gid 65534 (or as root when `as_nobody` is false), with the hooks' test
/// settings, `stdin` as its input.
async fn kcap_as(env: &Env, as_nobody: bool, url: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut cmd = if as_nobody {
        let mut c = tokio::process::Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            env!("CARGO_BIN_EXE_kcap"),
        ]);
        c
    } else {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kcap"))
    };
    cmd.args(args)
        .env("KCAP_HOME", &env.kcap_home)
        .env("COPILOT_HOME", &env.copilot_home)
        .env("KCAP_URL", url)
        .env("KCAP_POLL_MS", "50")
        .env("KCAP_WATCH_POLL_MS", "50")
        .env("KCAP_RETRY_INITIAL_MS", "50")
        .env("KCAP_RETRY_MAX_MS", "200")
        .env("KCAP_HTTP_TIMEOUT_MS", "5000")
        .env("KCAP_HOOK_DRAIN_CAP_MS", "4000")
        .env("KCAP_SHUTDOWN_BUDGET_MS", "8000")
        .env("KCAP_DELIVERY_BUDGET_MS", "1000")
        .env("KCAP_LOG", "kcap=debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin).await;
    drop(input);
    child.wait_with_output().await.unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A whole session on a home kcap cannot write: 200 lines while it runs, the shutdown after
/// the sessionEnd hook returned. Returns what every hook said on stderr.
async fn session_on_a_broken_home(env: &Env, server: &Server, as_nobody: bool) -> String {
    let (sid, path, mut content) = session_with(env, |sid| synthetic_transcript(sid, 200, false));
    open_up(&env.copilot_home);
    // Behind a recorder: the order the server took things in is part of the contract.
    let recorder = Recorder::start(free_port(), server.url()).await;
    let url = recorder.url();
    let mut said = String::new();
    for (event, extra) in [
        ("sessionStart", json!({"source": "new"})),
        (
            "notification",
            json!({"message": "hi", "notification_type": "idle"}),
        ),
        ("sessionEnd", json!({"reason": "user_exit"})),
    ] {
        let out = kcap_as(
            env,
            as_nobody,
            &url,
            &["hook", "--copilot", "--event", event],
            &payload(&sid.to_string(), extra),
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{event}: {out:?}");
        said.push_str(&stderr(&out));
    }
    // Copilot's post-hook tail: the finalizer, running without the store, still delivers it.
    let tail = shutdown_line();
    append(&path, tail.as_bytes());
    content.extend_from_slice(tail.as_bytes());
    assert!(
        wait_until("every line", Duration::from_secs(20), || server
            .session(sid)
            .lines
            .len()
            == 201)
        .await,
        "{} of 201 lines delivered; hooks said:\n{said}",
        server.session(sid).lines.len()
    );
    assert_exactly_once(server, sid, &content);
    assert!(
        wait_until("the session-end", Duration::from_secs(10), || server
            .storage()
            .summary(sid)
            .unwrap()
            .is_some_and(|s| s.ended.is_some()))
        .await,
        "hooks said:\n{said}"
    );
    // Start before lines before end, without a store to order them: the post-hook tail too.
    let posts = recorder.posts();
    let first_line = posts.iter().position(|p| p == "/hooks/transcript").unwrap();
    let last_line = posts.iter().rposition(|p| p == "/hooks/transcript").unwrap();
    let at = |prefix: &str| posts.iter().position(|p| p.starts_with(prefix)).unwrap();
    assert!(at("/hooks/session-start") < first_line, "{posts:?}");
    assert!(last_line < at("/hooks/session-end"), "{posts:?}");
    let summary = server.storage().summary(sid).unwrap().unwrap();
    assert_eq!(summary.started.and_then(|s| s.detail).as_deref(), Some("new"));
    assert_eq!(summary.ended.and_then(|e| e.reason).as_deref(), Some("user_exit"));
    assert_eq!(summary.notifications, 1);
    assert_eq!(summary.usage.shutdowns, 1, "the shutdown's token totals arrived");
    assert!(
        !said.contains("sweep will finish"),
        "a sweep that cannot run was promised:\n{said}"
    );
    said
}

/// `kcap status` and `kcap doctor` on the broken home say it is unusable, and why.
async fn status_and_doctor_say(env: &Env, as_nobody: bool, url: &str, why: &str) {
    let status = kcap_as(env, as_nobody, url, &["status"], b"").await;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status:?}");
    assert!(
        text.contains("STORE UNUSABLE") && text.contains(why),
        "status:\n{text}"
    );
    let doctor = kcap_as(env, as_nobody, url, &["doctor"], b"").await;
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(1), "{doctor:?}");
    assert!(
        text.contains("FIX  store") && text.contains("unusable") && text.contains(why),
        "doctor:\n{text}"
    );
}

fn skip(test: &str, why: &str) {
    eprintln!("SKIP {test}: {why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_owned_home_still_delivers_every_line_and_says_why() {
    if !setpriv_works() {
        return skip("a_root_owned_home…", "`setpriv` cannot switch to uid 65534 here");
    }
    let (env, server) = (Env::new(), server().await);
    open_up(env.dir.path());
    // `sudo kcap finalize --resume` once: the store now belongs to root.
    let out = kcap_as(&env, false, &server.url(), &["finalize", "--resume"], b"").await;
    assert!(out.status.success(), "{out:?}");
    assert!(env.kcap_home.join("store").exists());
    let said = session_on_a_broken_home(&env, &server, true).await;
    assert!(
        said.contains("store is unusable") && said.contains("not writable"),
        "hooks said:\n{said}"
    );
    assert!(said.contains("owned by uid 0"), "the fix is not named:\n{said}");
    status_and_doctor_say(&env, true, &server.url(), "not writable").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_home_still_delivers_every_line_and_says_why() {
    let (env, server) = (Env::new(), server().await);
    open_up(env.dir.path());
    let Some(mount) = Tmpfs::mount(&env.kcap_home, "16m", "") else {
        return skip("a_read_only_home…", "no tmpfs mount on this machine");
    };
    // A store exists (a session was captured before), then the home goes read-only.
    let out = kcap_as(&env, false, &server.url(), &["finalize", "--resume"], b"").await;
    assert!(out.status.success(), "{out:?}");
    open_up(&env.kcap_home);
    assert!(mount.remount("ro"), "cannot remount read-only");
    let as_nobody = setpriv_works();
    if !as_nobody {
        eprintln!("note: `setpriv` unavailable; the read-only case runs as root (EROFS holds for root too)");
    }
    let said = session_on_a_broken_home(&env, &server, as_nobody).await;
    assert!(
        said.contains("store is unusable") && said.contains("read-only filesystem"),
        "hooks said:\n{said}"
    );
    status_and_doctor_say(&env, as_nobody, &server.url(), "read-only filesystem").await;
}

/// Fills the filesystem holding `dir` to the last byte; returns the filler's path.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    filler
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_reported_and_once_space_is_back_the_parked_finalizer_delivers_the_rest() {
    let env = Env::new();
    let Some(_mount) = Tmpfs::mount(&env.kcap_home, "8m", "") else {
        return skip("a_full_disk…", "no tmpfs mount on this machine");
    };
    let addr = free_port();
    let url = format!("http://{addr}");
    let (sid, path, mut content) = session_with(&env, |sid| synthetic_transcript(sid, 200, false));
    // The session ends while the server is down: the finalizer is recorded and parks.
    let end = payload(&sid.to_string(), json!({"reason": "complete"}));
    let budget = [("KCAP_SHUTDOWN_BUDGET_MS", "300")];
    hook_ok(&env, &url, "sessionEnd", &end, &budget).await;
    assert!(
        wait_until("the finalizer to park", Duration::from_secs(20), || {
            matches!(env.store().latest_machine(sid), Ok(Some(r)) if matches!(r.state().0.phase, Phase::Parked { .. }))
                && env.store().lease(sid).is_ok_and(|l| l.is_none())
        })
        .await,
        "{}",
        env.log_of(sid)
    );
    // The session resumes (a live watcher runs again), then the disk fills up and Copilot
    // writes more.
    let mut watch = spawn_watch(&env, &url, sid, &path);
    assert!(
        wait_until("the watcher", Duration::from_secs(10), || {
            kcap::effects::watcher::running(&env.kcap_home, sid).is_some()
        })
        .await
    );
    let filler = fill(&env.kcap_home);
    let more = synthetic_transcript(sid, 21, true);
    let more = &more[more.iter().position(|b| *b == b'\n').unwrap() + 1..];
    append(&path, more);
    content.extend_from_slice(more);
    let server = Server::start(addr, None).await.unwrap();
    // The live watcher delivers on a full disk: nothing it needs to send waits on the store.
    let live = wait_until(
        "the watcher to deliver on a full disk",
        Duration::from_secs(15),
        || server.session(sid).lines.len() == count_lines(&content),
    )
    .await;
    // SAFETY: stopping the watcher this test started.
    unsafe { libc::kill(watch.id().unwrap() as i32, libc::SIGTERM) };
    let _ = watch.wait().await;
    assert!(live, "the watcher stopped delivering when the disk filled");
    // Every hook now says the store is unusable and why.
    let note = payload(
        &sid.to_string(),
        json!({"message": "full", "notification_type": "idle"}),
    );
    let (out, _) = run_hook(&env, &url, "notification", &note, &[]).await;
    assert!(out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("store is unusable") && said.contains("is full"),
        "hook said:\n{said}"
    );
    let status = env.kcap(&url).arg("status").output().await.unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("STORE UNUSABLE") && text.contains("is full"),
        "{text}"
    );
    // A sweep on the full disk must not damage the store (whatever it manages to deliver).
    let full_sweep = env.run(&url, &["finalize", "--resume"]).await;
    let text = stderr(&full_sweep);
    assert!(
        text.contains("is full") && !text.contains("panicked"),
        "{full_sweep:?}"
    );
    // Space comes back: the carried-on machine delivers the rest, from a store that opens.
    std::fs::remove_file(filler).unwrap();
    assert!(env.store().health().is_ok(), "{:?}", env.store().health());
    let out = env.run(&url, &["finalize", "--resume"]).await;
    assert!(out.status.success(), "{out:?}\n{}", env.log_of(sid));
    let record = latest(&env.store(), sid);
    let (state, diverged) = record.state();
    assert_eq!(diverged, 0, "the store's log does not replay");
    assert!(matches!(state.phase, Phase::Drained { .. }), "{state:?}");
    assert_exactly_once(&server, sid, &content);
    assert!(
        wait_until("the session-end", Duration::from_secs(10), || {
            server.storage().summary(sid).unwrap().unwrap().ended.is_some()
        })
        .await
    );
    // The store was never written half while the disk was full, so it was never rebuilt.
    let aside = std::fs::read_dir(&env.kcap_home)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("store.corrupt-"));
    assert!(!aside, "the store was damaged by the full disk and rebuilt");
}

/// A detached finalizer's log and stderr are files on the same disk; when that disk is full,
/// every log write fails. Simulated without a mount: the session log is a symlink to
/// /dev/full and stderr is /dev/full. The finalizer must still deliver every line and exit 0,
/// not die on its first log line (tracing reports a failed write with `eprintln!`, which
/// panics when stderr fails too).
#[tokio::test(flavor = "multi_thread")]
async fn a_finalizer_whose_log_and_stderr_cannot_be_written_still_delivers() {
    let env = Env::new();
    let server = server().await;
    let (sid, path, content) = session_with(&env, |sid| synthetic_transcript(sid, 50, true));
    let log = kcap::config::session_log_path(&env.kcap_home, sid);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let full = || Stdio::from(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap());
    let status = env
        .kcap(&server.url())
        .args(["copilot-finalize", "--foreground", &sid.to_string()])
        .arg(&path)
        .stdout(full())
        .stderr(full())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_exactly_once(&server, sid, &content);
}
