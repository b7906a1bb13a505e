//! `kcap hook --copilot --event <name>`: what Copilot runs from `$COPILOT_HOME/hooks/kcap.json`.
//!
//! A hook must never hurt Copilot: whatever the input or the server, it says what went wrong on
//! stderr and exits 0, within its caps. sessionEnd spawns the detached finalizer before it does
//! anything that can block.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::finalize::spawn_finalizer;
use crate::cli::options::{DeliveryOpts, TimingOpts};
use crate::config::{copilot_home, now_ms, transcript_path};
use crate::effects::detach::spawn_detached;
use crate::effects::interpreter::Delivery;
use crate::effects::outbox::SESSION_END_PATH;
use crate::effects::watcher::{self, Watcher};
use crate::ids::SessionId;
use crate::store::Store;

/// Hook payloads are a few hundred bytes; anything past this is refused, not buffered.
pub const STDIN_LIMIT: usize = 1024 * 1024;
/// Copilot closes stdin after writing the payload; a hook started by hand may never get EOF.
const STDIN_WAIT: Duration = Duration::from_secs(2);
/// Lifecycle and notification POSTs must not hold Copilot up.
const POST_CAP: Duration = Duration::from_secs(3);
/// What the sessionEnd cap keeps back for the session-end POST after draining.
const POST_RESERVE: Duration = Duration::from_secs(1);
/// The background sweep runs at most this often.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub const EVENTS: [&str; 4] = ["sessionStart", "sessionEnd", "agentStop", "notification"];

pub struct HookArgs {
    pub event: String,
    /// Cap on the whole sessionEnd hook after the finalizer is spawned: stopping the watcher,
    /// draining inline, and posting session-end.
    pub drain_cap: Duration,
}

/// Reads the payload: at most `STDIN_LIMIT` bytes, within `STDIN_WAIT`.
fn read_stdin() -> Result<Vec<u8>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let result = std::io::stdin()
            .take(STDIN_LIMIT as u64 + 1)
            .read_to_end(&mut buf)
            .map(|_| buf);
        let _ = tx.send(result);
    });
    match rx.recv_timeout(STDIN_WAIT) {
        Ok(Ok(buf)) if buf.len() > STDIN_LIMIT => Err(format!("payload larger than {STDIN_LIMIT} bytes")),
        Ok(Ok(buf)) => Ok(buf),
        Ok(Err(e)) => Err(format!("cannot read stdin: {e}")),
        Err(_) => Err(format!("no payload on stdin within {}s", STDIN_WAIT.as_secs())),
    }
}

/// The session of a payload: `sessionId` (camelCase payloads) or `session_id` (PascalCase ones).
pub fn session_of(payload: &serde_json::Value) -> Result<SessionId, String> {
    let raw = payload
        .get("sessionId")
        .or_else(|| payload.get("session_id"))
        .and_then(|v| v.as_str())
        .ok_or("payload has no sessionId")?;
    raw.parse()
        .map_err(|e: crate::ids::InvalidSessionId| e.to_string())
}

pub async fn hook(store: Store, args: HookArgs, delivery_opts: &DeliveryOpts, timing: &TimingOpts) {
    let started = Instant::now();
    if !EVENTS.contains(&args.event.as_str()) {
        return eprintln!(
            "kcap hook: unknown event {:?} (expected one of {EVENTS:?}); ignored",
            args.event
        );
    }
    let payload: serde_json::Value = match read_stdin().and_then(|b| {
        serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| format!("payload is not JSON: {e}"))
    }) {
        Ok(v) if v.is_object() => v,
        Ok(_) => return eprintln!("kcap hook {}: payload is not a JSON object; ignored", args.event),
        Err(e) => return eprintln!("kcap hook {}: {e}; ignored", args.event),
    };
    let session = match session_of(&payload) {
        Ok(s) => s,
        Err(e) => return eprintln!("kcap hook {}: {e}; ignored", args.event),
    };
    let _log = crate::cli::logging::to_file(&store.home().join("logs").join("hooks.log"));
    let path = transcript_path(&copilot_home(), session);
    let delivery = match delivery_opts.delivery() {
        Ok(d) => d,
        Err(e) => return eprintln!("kcap hook: {e}"),
    };
    tracing::info!(event = %args.event, %session, "hook");

    match args.event.as_str() {
        "sessionEnd" => {
            session_end(
                &store,
                session,
                &path,
                &payload,
                &delivery,
                timing,
                args.drain_cap,
            )
            .await
        }
        "sessionStart" => {
            let body = lifecycle_body("sessionStart", session, &payload);
            post_capped(&delivery, "/hooks/session-start/copilot", &body).await;
            ensure_watcher(&store, session, &path);
        }
        "agentStop" => ensure_watcher(&store, session, &path),
        "notification" => {
            let mut body = payload.clone();
            body["session_id"] = session.dashless().into();
            post_capped(&delivery, "/hooks/notification", &body).await;
        }
        _ => unreachable!("event checked above"),
    }
    maybe_sweep(&store);
    tracing::info!(event = %args.event, ms = started.elapsed().as_millis() as u64, "hook done");
}

/// (1) finalizer spawned, (2) watcher stopped and the tail drained inline under the cap,
/// (3) session-end posted, or left in the outbox for the finalizer.
async fn session_end(
    store: &Store,
    session: SessionId,
    path: &Path,
    payload: &serde_json::Value,
    delivery: &Delivery,
    timing: &TimingOpts,
    drain_cap: Duration,
) {
    let args: Vec<OsString> = vec!["copilot-finalize".into(), session.to_string().into(), path.into()];
    match spawn_finalizer(store, session, path, timing.timings(), args).await {
        Ok(pid) => tracing::info!(pid, "finalizer spawned"),
        Err(e) => {
            tracing::error!(error = %e, "cannot spawn the finalizer; the sweep will finish the session")
        }
    }
    let deadline = Instant::now() + drain_cap;
    if let Some(pid) = watcher::running(store.home(), session) {
        // SAFETY: signalling a process that holds the watcher lock of this session.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        while watcher::running(store.home(), session).is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Whatever the watcher left (or all of it, if none ran), within what remains of the cap,
    // keeping the last second for the session-end POST: the cap bounds the whole hook.
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(POST_RESERVE);
    if !remaining.is_zero() {
        if let Ok(Some(_lock)) = watcher::claim(store.home(), session) {
            let inline = Watcher {
                store: store.clone(),
                session,
                transcript: path.to_path_buf(),
                delivery: delivery.clone(),
                poll: Duration::from_millis(1),
            };
            let stats = inline.run(std::future::ready(()), remaining).await;
            tracing::info!(lines = stats.lines, "inline drain");
        }
    }
    let mut body = lifecycle_body("sessionEnd", session, payload);
    body["ended_at"] = crate::cli::status::iso_time(now_ms()).into();
    let post_cap = deadline
        .saturating_duration_since(Instant::now())
        .clamp(POST_RESERVE / 2, POST_CAP);
    let posted = tokio::time::timeout(post_cap, delivery.client.post_json(SESSION_END_PATH, &body)).await;
    if !matches!(posted, Ok(Ok(()))) {
        tracing::warn!("session-end not delivered; handing it to the finalizer");
        if let Err(e) = store.put_session_end(session, &body) {
            tracing::error!(error = %e, "cannot keep the session-end notice");
        }
    }
}

fn lifecycle_body(event: &str, session: SessionId, payload: &serde_json::Value) -> serde_json::Value {
    let field = |k: &str| payload.get(k).cloned().unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "hook_event_name": event,
        "session_id": session.dashless(),
        "reason": field("reason"),
        "source": field("source"),
        "cwd": field("cwd"),
        "home_dir": std::env::var("HOME").ok(),
    })
}

async fn post_capped(delivery: &Delivery, path: &str, body: &serde_json::Value) {
    match tokio::time::timeout(POST_CAP, delivery.client.post_json(path, body)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(path, error = %e.message(), "hook POST failed"),
        Err(_) => tracing::warn!(path, "hook POST timed out"),
    }
}

/// Starts `kcap watch` for the session unless one runs (the watcher's own lock settles races).
pub fn ensure_watcher(store: &Store, session: SessionId, path: &Path) {
    if watcher::running(store.home(), session).is_some() {
        return;
    }
    let args: Vec<OsString> = vec!["watch".into(), session.to_string().into(), path.into()];
    let log = store
        .home()
        .join("logs")
        .join(format!("{}.watch.log", session.dashed()));
    match spawn_detached(&args, &log) {
        Ok(pid) => tracing::info!(pid, "watcher started"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the watcher; the finalizer still delivers everything")
        }
    }
}

/// Starts a detached `finalize --resume` if none started in the last minute, so parked or crashed
/// finalizers heal without the user.
pub fn maybe_sweep(store: &Store) {
    let stamp = store.home().join("sweep.stamp");
    let recent = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < SWEEP_INTERVAL);
    if recent {
        return;
    }
    if std::fs::create_dir_all(store.home())
        .and_then(|_| std::fs::write(&stamp, now_ms().to_string()))
        .is_err()
    {
        return;
    }
    let args: Vec<OsString> = vec!["finalize".into(), "--resume".into()];
    if let Err(e) = spawn_detached(&args, &store.home().join("logs").join("sweep.log")) {
        tracing::warn!(error = %e, "cannot start the background sweep");
    }
}
