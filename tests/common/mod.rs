//! Shared test harness: a scratch KCAP_HOME and COPILOT_HOME, the kcap binary, a loopback
//! ingest server, and the exactly-once check.
#![allow(dead_code)]

pub mod chaos;
pub mod outage;
pub mod postgres;
pub mod replace;
pub mod rng;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use kcap::config::transcript_path;
use kcap::ids::{event_id, SessionId};
use kcap::machine::terminal::is_blank;
use kcap::machine::{Phase, State};
use kcap::redact;
use kcap::server::Server;
use kcap::store::{MachineRecord, Store};

pub mod fixture;
pub mod samples;

#[allow(unused_imports)] // each test binary uses some of them
pub use outage::server_down;
#[allow(unused_imports)] // each test binary uses some of them
pub use samples::{real_samples, sample, samples_dir, SAMPLES, VIBE};

/// The project's own Copilot session (55 lines, shutdown last; see [`fixture::session`]): what
/// every test that needs "a realistic transcript" runs on, so the suite needs nothing beside the
/// checkout.
pub fn transcript() -> Vec<u8> {
    fixture::session()
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub kcap_home: PathBuf,
    pub copilot_home: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let kcap_home = dir.path().join("kcap");
        let copilot_home = dir.path().join("copilot");
        Env {
            dir,
            kcap_home,
            copilot_home,
        }
    }

    pub fn store(&self) -> Store {
        Store::new(&self.kcap_home)
    }

    /// Writes a transcript for a new session and returns both.
    pub fn session(&self, content: &[u8]) -> (SessionId, PathBuf) {
        let sid = SessionId::new_random();
        let path = transcript_path(&self.copilot_home, sid);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        (sid, path)
    }

    /// `kcap` with this environment; fast polling and short retries unless overridden.
    /// Runs kcap with `args` against `url` to the end and returns what it printed.
    pub async fn run(&self, url: &str, args: &[&str]) -> std::process::Output {
        self.kcap(url).args(args).output().await.unwrap()
    }

    pub fn kcap(&self, url: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_kcap"));
        c.env("KCAP_HOME", &self.kcap_home)
            .env("COPILOT_HOME", &self.copilot_home)
            // Never the developer's own ~/.config/kcap/config.toml.
            .env("KCAP_CONFIG", self.config_path())
            .env("KCAP_URL", url)
            .env("KCAP_POLL_MS", "50")
            .env("KCAP_RETRY_INITIAL_MS", "50")
            .env("KCAP_RETRY_MAX_MS", "200")
            .env("KCAP_HTTP_TIMEOUT_MS", "5000")
            .env("KCAP_LOG", "kcap=debug")
            .kill_on_drop(true);
        c
    }

    /// This environment's config file (absent until a test writes it).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config").join("config.toml")
    }

    /// No finalizer was ever recorded (a store that cannot be read holds none either).
    pub fn no_machines(&self) -> bool {
        self.store()
            .all_latest_machines()
            .map(|m| m.is_empty())
            .unwrap_or(true)
    }

    pub fn log_of(&self, sid: SessionId) -> String {
        std::fs::read_to_string(kcap::config::session_log_path(&self.kcap_home, sid)).unwrap_or_default()
    }
}

pub async fn server() -> Server {
    Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
        .await
        .unwrap()
}

/// A loopback port with nothing listening (bound, then released).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[track_caller]
pub fn latest(store: &Store, sid: SessionId) -> MachineRecord {
    match store.latest_machine(sid).unwrap() {
        Some(record) => record,
        None => {
            let rebuilt: Vec<String> = std::fs::read_dir(store.home())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("store.corrupt-"))
                .collect();
            panic!("no machine is recorded for {sid}; stores sled called corrupt and kcap moved aside: {rebuilt:?}")
        }
    }
}

#[track_caller]
pub fn state(store: &Store, sid: SessionId) -> State {
    let (state, diverged) = latest(store, sid).state();
    assert_eq!(diverged, 0, "the log must replay to the logged phases");
    state
}

pub async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server holds every non-blank line of `transcript` exactly once, under its own number,
/// with the deterministic id of its raw bytes and its redacted text; nothing else, no conflicts.
pub fn assert_exactly_once(server: &Server, sid: SessionId, transcript: &[u8]) {
    let held = server.session(sid);
    let mut expected = Vec::new();
    for (n, raw) in transcript.split(|b| *b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if is_blank(raw) {
            continue;
        }
        expected.push((n as u64, raw));
    }
    let missing: Vec<u64> = expected
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !held.lines.contains_key(n))
        .collect();
    assert!(missing.is_empty(), "server is missing lines {missing:?}");
    assert_eq!(
        held.lines.len(),
        expected.len(),
        "server holds lines that are not in the transcript"
    );
    assert_eq!(
        held.conflicts, 0,
        "a line number was stored twice with different content"
    );
    for (n, raw) in expected {
        let stored = &held.lines[&n];
        assert_eq!(stored.id, event_id(&sid, n, raw), "id of line {n}");
        let text = redact::line(String::from_utf8_lossy(raw));
        assert_eq!(stored.text, text, "text of line {n}");
    }
}

pub fn phase_name(store: &Store, sid: SessionId) -> &'static str {
    state(store, sid).phase.name()
}

pub fn is_drained(store: &Store, sid: SessionId) -> bool {
    matches!(store.latest_machine(sid), Ok(Some(r)) if matches!(r.state().0.phase, Phase::Drained { .. }))
}

/// Splits a transcript into everything before its last shutdown line and that line onwards.
pub fn split_at_last_shutdown(content: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let text = std::str::from_utf8(content).unwrap();
    let at = text
        .rfind("{\"type\":\"session.shutdown\"")
        .expect("sample has a shutdown");
    (content[..at].to_vec(), content[at..].to_vec())
}

pub fn redacted(s: &str) -> Cow<'_, str> {
    redact::line(Cow::Borrowed(s))
}

/// Runs `kcap hook --copilot --event <event>` as Copilot does, with `stdin` as its payload.
pub async fn run_hook(
    env: &Env,
    url: &str,
    event: &str,
    stdin: &[u8],
    extra: &[(&str, &str)],
) -> (std::process::Output, Duration) {
    let mut cmd = env.kcap(url);
    cmd.args(["hook", "--copilot", "--event", event])
        .env("KCAP_HOOK_DRAIN_CAP_MS", "2000")
        .env("KCAP_WATCH_POLL_MS", "50")
        // Inherited by the detached finalizer: it must not outlive the test by minutes.
        .env("KCAP_SHUTDOWN_BUDGET_MS", "5000")
        .env("KCAP_DELIVERY_BUDGET_MS", "1000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin).await;
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (out, started.elapsed())
}

/// A hook payload for `sid`, with `extra` fields.
pub fn payload(sid: &str, extra: serde_json::Value) -> Vec<u8> {
    // Stamped now, as Copilot stamps its payloads (kcap reads it to tell a late hook's run).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut p = serde_json::json!({"sessionId": sid, "timestamp": now, "cwd": "/work/project"});
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p.to_string().into_bytes()
}

/// The fixture session's body `copies` times (54 lines each), its shutdown kept only at the end:
/// 55 copies make about 3,000 lines.
pub fn long_transcript(copies: usize) -> Vec<u8> {
    let (body, tail) = split_at_last_shutdown(&transcript());
    let mut content = Vec::new();
    for _ in 0..copies {
        content.extend_from_slice(&body);
    }
    content.extend_from_slice(&tail);
    content
}
