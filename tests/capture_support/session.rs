//! The set-up most capture tests share: scratch homes, a server (behind a recording proxy when
//! the test looks at the order of requests), one synthetic session, its hooks, and the waits and
//! checks made on it. The watchers a test leaves behind are killed when it ends.

use std::future::Future;
use std::panic::Location;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kcap::effects::watcher;
use kcap::ids::SessionId;
use kcap::server::Server;
use serde_json::{json, Value};

use super::{session_with, synthetic_transcript, wait_until, Recorder};
use crate::common::{append, assert_exactly_once, free_port, is_drained, payload, run_hook, server, Env};

/// How long a wait for a background process may take before the test fails: generous, since a
/// wait that succeeds returns at once and CI's two cores may be busy with the rest of the suite.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Kills, when dropped, the watchers of these sessions that a test leaves behind.
pub struct Reap<'a> {
    env: &'a Env,
    sessions: Vec<SessionId>,
}

impl<'a> Reap<'a> {
    pub fn new(env: &'a Env, sessions: impl IntoIterator<Item = SessionId>) -> Reap<'a> {
        Reap {
            env,
            sessions: sessions.into_iter().collect(),
        }
    }
}

impl Drop for Reap<'_> {
    fn drop(&mut self) {
        for sid in &self.sessions {
            kill_watcher(&self.env.kcap_home, *sid);
        }
    }
}

fn kill_watcher(kcap_home: &Path, sid: SessionId) {
    if let Some(pid) = watcher::running(kcap_home, sid) {
        // SAFETY: a watcher this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Starts `kcap watch` of `sid` (its transcript at `path`) against `url`, polling every 50 ms.
pub fn spawn_watch(env: &Env, url: &str, sid: SessionId, path: &Path) -> tokio::process::Child {
    env.kcap(url)
        .env("KCAP_WATCH_POLL_MS", "50")
        .args(["watch", &sid.to_string()])
        .arg(path)
        .spawn()
        .unwrap()
}

/// Runs the hook `event` of `env` with `body` against `url`; it must exit 0.
#[track_caller]
pub fn hook_ok<'a>(
    env: &'a Env,
    url: &'a str,
    event: &'a str,
    body: &'a [u8],
    extra: &'a [(&'a str, &'a str)],
) -> impl Future<Output = ()> + 'a {
    let at = Location::caller();
    hook_ok_at(at, env, url, event, body, extra)
}

async fn hook_ok_at(
    at: &Location<'_>,
    env: &Env,
    url: &str,
    event: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) {
    let (out, _) = run_hook(env, url, event, body, extra).await;
    assert!(out.status.success(), "{at}: {event}: {out:?}");
}

/// The finalizer of `generation` of `sid` drained, and left nothing queued or leased.
pub fn finished(env: &Env, sid: SessionId, generation: u32) -> bool {
    let store = env.store();
    store
        .latest_machine(sid)
        .ok()
        .flatten()
        .is_some_and(|r| r.meta.generation == generation)
        && is_drained(&store, sid)
        && store.pending_notices(Some(sid)).is_ok_and(|p| p.is_empty())
        && store.lease(sid).is_ok_and(|l| l.is_none())
}

/// `server` holds an end of `sid`.
pub fn ended_on(server: &Server, sid: SessionId) -> bool {
    server
        .storage()
        .summary(sid)
        .unwrap()
        .is_some_and(|s| s.ended.is_some())
}

/// A Copilot `user.message` line with `text` as its content (no JSON escapes needed), newline
/// included.
pub fn user_message(text: &str) -> String {
    format!("{{\"type\":\"user.message\",\"data\":{{\"content\":\"{text}\"}}}}\n")
}

/// `n` user messages, `"{prefix} 0"` to `"{prefix} {n-1}"`.
pub fn user_messages(prefix: &str, n: usize) -> String {
    (0..n).map(|i| user_message(&format!("{prefix} {i}"))).collect()
}

/// One session under capture: scratch homes, a running server (behind `recorder` when the test
/// has one), and a synthetic transcript at `path` (`content`, as written). Dropping it kills the
/// session's watcher.
pub struct Capture {
    // Dropped in this order: the session, then the recorder, the server, the homes.
    pub sid: SessionId,
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub recorder: Option<Recorder>,
    pub server: Server,
    pub env: Env,
}

impl Capture {
    /// A session of `lines` synthetic lines (the last a shutdown when `shutdown`) whose hooks
    /// reach the server through a [`Recorder`].
    pub async fn recorded(lines: usize, shutdown: bool) -> Capture {
        let (env, server) = (Env::new(), server().await);
        let recorder = Recorder::start(free_port(), server.url()).await;
        Capture::with(env, server, Some(recorder), lines, shutdown)
    }

    /// As [`Capture::recorded`], with the hooks talking to the server directly.
    pub async fn direct(lines: usize, shutdown: bool) -> Capture {
        let (env, server) = (Env::new(), server().await);
        Capture::with(env, server, None, lines, shutdown)
    }

    fn with(env: Env, server: Server, recorder: Option<Recorder>, lines: usize, shutdown: bool) -> Capture {
        let (sid, path, content) = session_with(&env, |sid| synthetic_transcript(sid, lines, shutdown));
        Capture {
            env,
            server,
            recorder,
            sid,
            path,
            content,
        }
    }

    /// Where the hooks go: the recorder, else the server.
    pub fn url(&self) -> String {
        match &self.recorder {
            Some(r) => r.url(),
            None => self.server.url(),
        }
    }

    #[track_caller]
    pub fn recorder(&self) -> &Recorder {
        self.recorder.as_ref().expect("a recorded capture")
    }

    /// The successful protocol POSTs so far (none without a recorder).
    pub fn posts(&self) -> Vec<String> {
        self.recorder.as_ref().map(Recorder::posts).unwrap_or_default()
    }

    /// The session's kcap log.
    pub fn log(&self) -> String {
        self.env.log_of(self.sid)
    }

    /// A hook payload of the session with `extra` fields, stamped now.
    pub fn payload(&self, extra: Value) -> Vec<u8> {
        payload(&self.sid.to_string(), extra)
    }

    /// A sessionEnd payload with `reason`, stamped now.
    pub fn end_payload(&self, reason: &str) -> Vec<u8> {
        self.payload(json!({ "reason": reason }))
    }

    /// Runs the hook `event` with `body` against [`Capture::url`]; it must exit 0.
    #[track_caller]
    pub fn hook<'a>(
        &'a self,
        event: &'a str,
        body: &'a [u8],
        extra: &'a [(&'a str, &'a str)],
    ) -> impl Future<Output = ()> + 'a {
        let at = Location::caller();
        async move { self.hook_at(at, &self.url(), event, body, extra).await }
    }

    /// As [`Capture::hook`], against `url`.
    #[track_caller]
    pub fn hook_to<'a>(
        &'a self,
        url: &'a str,
        event: &'a str,
        body: &'a [u8],
        extra: &'a [(&'a str, &'a str)],
    ) -> impl Future<Output = ()> + 'a {
        let at = Location::caller();
        async move { self.hook_at(at, url, event, body, extra).await }
    }

    async fn hook_at(&self, at: &Location<'_>, url: &str, event: &str, body: &[u8], extra: &[(&str, &str)]) {
        let (out, _) = run_hook(&self.env, url, event, body, extra).await;
        assert!(out.status.success(), "{at}: {event}: {out:?}\n{}", self.log());
    }

    /// The sessionStart hook with `source` (`new`, `resume`), stamped now.
    #[track_caller]
    pub fn start<'a>(
        &'a self,
        source: &'a str,
        extra: &'a [(&'a str, &'a str)],
    ) -> impl Future<Output = ()> + 'a {
        let fields = json!({ "source": source });
        self.stamped_hook(Location::caller(), "sessionStart", fields, extra)
    }

    /// The sessionEnd hook with `reason`, stamped now.
    #[track_caller]
    pub fn end<'a>(
        &'a self,
        reason: &'a str,
        extra: &'a [(&'a str, &'a str)],
    ) -> impl Future<Output = ()> + 'a {
        let fields = json!({ "reason": reason });
        self.stamped_hook(Location::caller(), "sessionEnd", fields, extra)
    }

    /// The agentStop hook, stamped now.
    #[track_caller]
    pub fn agent_stop(&self) -> impl Future<Output = ()> + '_ {
        self.stamped_hook(Location::caller(), "agentStop", json!({}), &[])
    }

    /// The hook `event` with a payload of `fields`, stamped as it runs.
    async fn stamped_hook(&self, at: &Location<'_>, event: &str, fields: Value, extra: &[(&str, &str)]) {
        let body = self.payload(fields);
        self.hook_at(at, &self.url(), event, &body, extra).await
    }

    /// Waits up to `limit` for `done`; fails the test with `what`, the posts so far and the
    /// session's log if it never comes.
    #[track_caller]
    pub fn within<'a>(
        &'a self,
        limit: Duration,
        what: &'a str,
        done: impl FnMut() -> bool + 'a,
    ) -> impl Future<Output = ()> + 'a {
        let at = Location::caller();
        async move {
            if !wait_until(what, limit, done).await {
                panic!(
                    "{at}: {what}: not within {limit:?}\nposts: {:?}\n{}",
                    self.posts(),
                    self.log()
                );
            }
        }
    }

    /// The server holds an end of the session.
    pub fn ended(&self) -> bool {
        ended_on(&self.server, self.sid)
    }

    /// The server's summary of the session (which it must hold) has an end with `reason`.
    #[track_caller]
    pub fn ended_with(&self, reason: &str) -> bool {
        self.server
            .storage()
            .summary(self.sid)
            .unwrap()
            .unwrap()
            .ended
            .is_some_and(|e| e.reason.as_deref() == Some(reason))
    }

    /// The session's latest finalizer has drained.
    pub fn drained(&self) -> bool {
        is_drained(&self.env.store(), self.sid)
    }

    /// The session-end POSTs the server accepted (through the recorder).
    pub fn ends(&self) -> usize {
        self.posts()
            .iter()
            .filter(|p| p.starts_with("/hooks/session-end"))
            .count()
    }

    /// The session's finalizer of `generation` drained, and left nothing queued or leased.
    pub fn finished(&self, generation: u32) -> bool {
        finished(&self.env, self.sid, generation)
    }

    /// Appends `bytes` to the transcript (and to `content`).
    pub fn append(&mut self, bytes: &[u8]) {
        append(&self.path, bytes);
        self.content.extend_from_slice(bytes);
    }

    /// The pid of the session's running watcher.
    pub fn watcher(&self) -> Option<u32> {
        watcher::running(&self.env.kcap_home, self.sid)
    }

    /// Lines the server holds of the session.
    pub fn lines_on_server(&self) -> usize {
        self.server.session(self.sid).lines.len()
    }

    /// The server holds every line of the transcript file, as it is now, exactly once.
    #[track_caller]
    pub fn assert_file_exactly_once(&self) {
        assert_exactly_once(&self.server, self.sid, &std::fs::read(&self.path).unwrap());
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        kill_watcher(&self.env.kcap_home, self.sid);
    }
}
