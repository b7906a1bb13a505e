//! The bad-input corpus (`tests/corpus/`): transcripts with malformed, truncated, non-UTF-8, NUL
//! and CRLF lines; garbage hook payloads; hostile session ids. Plus what is too big to commit (a
//! 50 MB line, huge stdin) and what is not a file at all. Every case gets a clear message or a
//! logged skip, never a panic, and every line that can be delivered arrives exactly once.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;
use kcap::ids::{event_id, SessionId};
use kcap::machine::Phase;
use kcap::server::Server;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");

fn corpus(dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(Path::new(CORPUS).join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus {dir} is missing files");
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn hostile_ids() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(CORPUS).join("session-ids.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// An hour ago: the transcript's writer is gone, as for an old session found by `import`.
fn make_old(path: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .append(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

fn no_panic(what: &str, out: &std::process::Output, log: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !log.contains("panicked"),
        "{what} panicked: {stderr}{log}"
    );
}

async fn finalize(env: &Env, url: &str, sid: SessionId, path: &Path) -> std::process::Output {
    env.kcap(url)
        .env("KCAP_SHUTDOWN_BUDGET_MS", "300")
        .env("KCAP_DELIVERY_BUDGET_MS", "2000")
        .args(["copilot-finalize", "--foreground", &sid.to_string()])
        .arg(path)
        .output()
        .await
        .unwrap()
}

async fn import(env: &Env, url: &str, sid: SessionId) -> std::process::Output {
    env.kcap(url)
        .args(["import", "--copilot", "--session", &sid.to_string()])
        .output()
        .await
        .unwrap()
}

/// A second kcap home on the same Copilot home: another user's machine, or a lost store.
fn beside(env: &Env) -> Env {
    let mut other = Env::new();
    other.copilot_home = env.copilot_home.clone();
    other
}

fn same_lines(a: &Server, b: &Server, sid: SessionId, what: &str) {
    assert_eq!(
        a.session(sid).lines,
        b.session(sid).lines,
        "{what}: the two paths stored different ids or texts"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_corpus_transcript_is_delivered_once_by_the_finalizer_and_by_import() {
    let (by_finalizer, by_import) = (server().await, server().await);
    for (name, content) in corpus("transcripts") {
        let env = Env::new();
        let (sid, path) = env.session(&content);
        make_old(&path);

        let out = finalize(&env, &by_finalizer.url(), sid, &path).await;
        assert!(out.status.success(), "{name}: {out:?}");
        no_panic(&name, &out, &env.log_of(sid));
        assert!(is_drained(&env.store(), sid), "{name}: {}", env.log_of(sid));
        assert_exactly_once(&by_finalizer, sid, &content);

        // import, from a kcap home that knows nothing, into a server that holds nothing: the
        // same ids and texts as the finalizer's, however odd the bytes.
        let fresh = beside(&env);
        let out = import(&fresh, &by_import.url(), sid).await;
        assert!(out.status.success(), "{name}: {out:?}");
        no_panic(&name, &out, "");
        assert_exactly_once(&by_import, sid, &content);
        same_lines(&by_finalizer, &by_import, sid, &name);

        // And once more into the finalizer's server: nothing new, nothing conflicting.
        let out = import(&beside(&env), &by_finalizer.url(), sid).await;
        assert!(out.status.success(), "{name}: {out:?}");
        assert_exactly_once(&by_finalizer, sid, &content);
    }
    let secret_line = by_finalizer
        .sessions()
        .into_iter()
        .flat_map(|sid| by_finalizer.session(sid).lines.into_values())
        .find(|l| l.text.contains("token ghp_") || l.text.contains("token [REDACTED]"))
        .expect("the malformed line with a token was delivered");
    assert!(
        secret_line.text.contains("token [REDACTED]"),
        "a malformed line was sent unredacted: {}",
        secret_line.text
    );
}

/// The transcript as it was, with line `number` in the form the server keeps for a line too
/// large to send: a `kcap.line_omitted` stand-in under its own id.
fn assert_stand_in(server: &Server, sid: SessionId, number: u64, raw: &[u8]) {
    let held = server.session(sid);
    let line = held.lines.get(&number).expect("the big line's number is held");
    assert_eq!(
        line.id,
        event_id(&sid, number, raw),
        "stand-in keeps the line's id"
    );
    let v: serde_json::Value = serde_json::from_str(&line.text).unwrap();
    assert_eq!(v["type"], "kcap.line_omitted", "{}", line.text);
    assert_eq!(v["data"]["bytes"], raw.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_50_mb_line_is_skipped_with_a_stand_in_and_the_rest_arrives() {
    let (env, server) = (Env::new(), server().await);
    let mut big = br#"{"type":"tool.execution_complete","data":{"output":""#.to_vec();
    big.resize(50 * 1024 * 1024, b'x');
    big.extend_from_slice(b"\"}}");
    let (head, shutdown) = split_at_last_shutdown(&transcript());
    let mut content = head.clone();
    let big_number = content.iter().filter(|b| **b == b'\n').count() as u64;
    content.extend_from_slice(&big);
    content.push(b'\n');
    content.extend_from_slice(&shutdown);
    let (sid, path) = env.session(&content);

    let out = finalize(&env, &server.url(), sid, &path).await;
    assert!(out.status.success(), "{out:?}");
    no_panic("50 MB line", &out, &env.log_of(sid));
    assert!(is_drained(&env.store(), sid), "{}", env.log_of(sid));
    assert!(
        env.log_of(sid).contains("skipped, a kcap.line_omitted stand-in"),
        "no logged skip: {}",
        env.log_of(sid)
    );
    assert_stand_in(&server, sid, big_number, &big);
    // Everything else exactly once: the transcript with the big line left out.
    let mut others = head;
    others.push(b'\n');
    others.extend_from_slice(&shutdown);
    let mut held = server.session(sid);
    held.lines.remove(&big_number);
    let expected_others = others.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    assert_eq!(held.lines.len(), expected_others);
    assert_eq!(server.session(sid).conflicts, 0);
    let usage = server.storage().summary(sid).unwrap().unwrap().usage;
    assert_eq!(usage.shutdowns, 1, "the shutdown after the big line arrived");

    // import builds the same stand-in, so a replay is a duplicate, not a conflict.
    let out = import(&beside(&env), &server.url(), sid).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(server.session(sid).conflicts, 0);
    assert_stand_in(&server, sid, big_number, &big);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_transcript_and_a_directory_in_its_place() {
    let server = server().await;
    // Missing: waited for, then a drained machine with a logged reason.
    let env = Env::new();
    let sid = SessionId::new_random();
    let path = kcap::config::transcript_path(&env.copilot_home, sid);
    let out = finalize(&env, &server.url(), sid, &path).await;
    assert!(out.status.success(), "{out:?}");
    no_panic("missing", &out, &env.log_of(sid));
    assert!(is_drained(&env.store(), sid));
    assert!(
        env.log_of(sid).contains("transcript missing"),
        "{}",
        env.log_of(sid)
    );

    // A directory where the transcript should be: reading fails, the machine parks with the
    // reason, and once a real transcript is there the next resume delivers it.
    let env = Env::new();
    let sid = SessionId::new_random();
    let path = kcap::config::transcript_path(&env.copilot_home, sid);
    std::fs::create_dir_all(&path).unwrap();
    let out = finalize(&env, &server.url(), sid, &path).await;
    assert!(out.status.success(), "{out:?}");
    let log = env.log_of(sid);
    no_panic("directory", &out, &log);
    assert!(log.contains("not a regular file"), "no clear reason: {log}");
    let phase = state(&env.store(), sid).phase;
    assert!(
        matches!(&phase, Phase::Parked { .. } | Phase::Drained { .. }),
        "{phase:?}"
    );
    let out = import(&env, &server.url(), sid).await;
    assert!(!out.status.success(), "import of a directory must fail");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not a file")
            || String::from_utf8_lossy(&out.stderr).contains("no transcript"),
        "{out:?}"
    );
    std::fs::remove_dir(&path).unwrap();
    let content = transcript();
    std::fs::write(&path, &content).unwrap();
    let out = env
        .kcap(&server.url())
        .args(["finalize", "--session", &sid.to_string()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_exactly_once(&server, sid, &content);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_hook_stdin_and_hostile_session_ids_are_refused_with_a_message() {
    let (env, server) = (Env::new(), server().await);
    let mut inputs = corpus("hook-stdin");
    for id in hostile_ids() {
        inputs.push((
            format!("sessionId {:.40?}", id),
            payload(&id, serde_json::json!({})),
        ));
    }
    inputs.push(("8 MB of stdin".into(), vec![b'{'; 8 * 1024 * 1024]));
    for (name, stdin) in &inputs {
        for event in ["sessionStart", "sessionEnd", "agentStop", "notification"] {
            let (out, took) = run_hook(&env, &server.url(), event, stdin, &[]).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name} {event}: {out:?}");
            assert!(
                stderr.contains("ignored"),
                "{name} {event}: no clear message: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{name} {event}: {stderr}");
            assert!(took < Duration::from_secs(5), "{name} {event} took {took:?}");
        }
    }
    assert_eq!(server.requests(), 0, "a refused payload reached the server");
    assert!(env.no_machines(), "a finalizer was recorded");
    assert_only_own_files(&env);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_session_ids_on_every_command_get_a_clear_error() {
    let (env, server) = (Env::new(), server().await);
    let (_, real_path) = env.session(&transcript());
    for id in hostile_ids().into_iter().filter(|id| !id.contains('\0')) {
        let path = real_path.display().to_string();
        let commands: Vec<Vec<&str>> = vec![
            vec!["copilot-finalize", &id, &path],
            vec!["finalize", "--session", &id],
            vec!["inspect", &id],
            vec!["watch", &id, &path],
            vec!["import", "--copilot", "--session", &id],
            vec!["session", &id],
        ];
        for args in commands {
            let out = env.kcap(&server.url()).args(&args).output().await.unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let what = format!("{:?} {:.40?}", args[0], id);
            assert!(!stderr.contains("panicked"), "{what}: {stderr}");
            assert!(!stderr.trim().is_empty(), "{what}: no message");
            // copilot-finalize is spawned by a hook and always exits 0; the others say no.
            assert_eq!(
                out.status.success(),
                args[0] == "copilot-finalize",
                "{what}: {out:?}"
            );
        }
    }
    assert_eq!(server.requests(), 0, "a hostile id reached the server");
    assert_only_own_files(&env);
}

/// Nothing was written outside kcap's home and the Copilot home, and every file kcap wrote is
/// named by kcap (a parsed session id or a fixed name), never by its input.
fn assert_only_own_files(env: &Env) {
    let mut top: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert!(top.iter().all(|n| n == "kcap" || n == "copilot"), "{top:?}");
    let logs: Vec<PathBuf> = std::fs::read_dir(env.kcap_home.join("logs"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    for log in logs {
        let name = log.file_name().unwrap().to_string_lossy().into_owned();
        let stem = name.trim_end_matches(".log");
        assert!(
            ["hooks", "sweep"].contains(&stem) || stem.parse::<SessionId>().is_ok(),
            "a log file named from input: {name}"
        );
    }
}
