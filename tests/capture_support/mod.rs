//! Helpers for the capture robustness tests (`tests/capture_*.rs`): synthetic transcripts (no
//! research samples needed), a recording proxy that tells in which order requests reached the
//! server, and the checks every case makes.
#![allow(dead_code)]

mod session;
#[allow(unused_imports)] // each test binary uses some of them
pub use session::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kcap::ids::SessionId;
use kcap::server::Server;

/// A new session of `env` with `content` as its transcript.
#[track_caller]
pub fn session_with(
    env: &crate::common::Env,
    content: impl FnOnce(SessionId) -> Vec<u8>,
) -> (SessionId, PathBuf, Vec<u8>) {
    let sid = SessionId::new_random();
    let path = kcap::config::transcript_path(&env.copilot_home, sid);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let content = content(sid);
    std::fs::write(&path, &content).unwrap();
    (sid, path, content)
}

/// A Copilot-shaped transcript of `lines` lines: a session.start, assistant messages, and a
/// session.shutdown as the last line (when `shutdown`).
pub fn synthetic_transcript(sid: SessionId, lines: usize, shutdown: bool) -> Vec<u8> {
    let mut out = String::new();
    out.push_str(&format!(
        "{{\"type\":\"session.start\",\"data\":{{\"sessionId\":\"{sid}\",\"version\":1}}}}\n"
    ));
    let body = if shutdown {
        lines.saturating_sub(2)
    } else {
        lines.saturating_sub(1)
    };
    for i in 0..body {
        out.push_str(&format!(
            "{{\"type\":\"assistant.message\",\"data\":{{\"messageId\":\"m{i}\",\"content\":\"line {} of the session\"}}}}\n",
            i + 1
        ));
    }
    if shutdown {
        out.push_str(&shutdown_line());
    }
    out.into_bytes()
}

/// A session.shutdown line with token totals, newline included.
pub fn shutdown_line() -> String {
    "{\"type\":\"session.shutdown\",\"data\":{\"shutdownType\":\"routine\",\"totalApiDurationMs\":10,\"sessionStartTime\":1,\"codeChanges\":{\"linesAdded\":0,\"linesRemoved\":0,\"filesModified\":[]},\"modelMetrics\":{\"m\":{\"requests\":{\"count\":1,\"cost\":1},\"usage\":{\"inputTokens\":100,\"outputTokens\":10,\"cacheReadTokens\":0,\"cacheWriteTokens\":0}}}}}\n".into()
}

/// Non-blank lines of a transcript.
pub fn count_lines(content: &[u8]) -> usize {
    content
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count()
}

/// Nothing the server holds, in any session, contains `needle`.
pub fn nowhere_on_server(server: &Server, needle: &str) -> bool {
    server.sessions().into_iter().all(|sid| {
        server
            .session(sid)
            .lines
            .values()
            .all(|l| !l.text.contains(needle))
    })
}

pub async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            eprintln!("gave up after {limit:?} waiting for {what}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// One request as the recording proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub status: u16,
    /// The request body as kcap sent it.
    pub body: Vec<u8>,
}

/// A loopback HTTP proxy in front of a kcap server that records every request (path and the
/// server's status) in the order the server answered them.
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Listens on `addr` and forwards to `upstream`.
    pub async fn start(addr: SocketAddr, upstream: String) -> Recorder {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let http = reqwest::Client::new();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (http, log, upstream) = (http.clone(), log.clone(), upstream.clone());
            async move {
                let (parts, body) = req.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
                let path = parts.uri.path().to_string();
                let url = format!("{upstream}{}", parts.uri);
                let sent = bytes.to_vec();
                let mut forward = http.request(parts.method.clone(), url).body(bytes.to_vec());
                for (k, v) in &parts.headers {
                    if k != "host" && k != "content-length" {
                        forward = forward.header(k, v);
                    }
                }
                let (status, body) = match forward.send().await {
                    Ok(r) => (r.status().as_u16(), r.bytes().await.unwrap_or_default().to_vec()),
                    Err(_) => (502, Vec::new()),
                };
                log.lock().unwrap().push(Seen {
                    path,
                    status,
                    body: sent,
                });
                axum::response::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The successful protocol POSTs so far, in order.
    pub fn posts(&self) -> Vec<String> {
        self.requests().into_iter().map(|s| s.path).collect()
    }

    /// The successful protocol POSTs so far, with their bodies, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| (200..300).contains(&s.status) && s.path.starts_with("/hooks/"))
            .cloned()
            .collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `setpriv … true` once: can this machine run commands as an unprivileged user?
pub fn setpriv_works() -> bool {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes `path` and everything below it readable (and directories traversable) by others, so
/// an unprivileged kcap can read a transcript a root test wrote.
pub fn open_up(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                open_up(&p);
            } else {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644));
            }
        }
    }
}

/// A tmpfs mounted for the length of a test; unmounted on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "4m") with `extra` options at `dir`; `None` (after
    /// saying why) where this machine does not allow it.
    pub fn mount(dir: &Path, size: &str, extra: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let options = if extra.is_empty() {
            format!("size={size}")
        } else {
            format!("size={size},{extra}")
        };
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    pub fn remount(&self, options: &str) -> bool {
        std::process::Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}
