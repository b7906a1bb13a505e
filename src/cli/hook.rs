//! `kcap hook --agent <name> --event <name>`: what an agent runs from the hooks file
//! `kcap plugin install` wrote. The agent parses its own payload ([`Agent::parse_hook`]).
//!
//! A hook must never hurt the agent: whatever the input or the server, it says what went wrong on
//! stderr and exits 0, within its caps. sessionEnd spawns the detached finalizer before it does
//! anything that can block.

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::agent::{Agent, HookEvent, HookPayload};
use crate::cli::finalize::{spawn_finalizer_for_end, EndQueue, SpawnedForEnd};
use crate::cli::options::{DeliveryOpts, TimingOpts};
use crate::config::now_ms;
use crate::effects::blocking;
use crate::effects::detach::spawn_detached;
use crate::effects::interpreter::Delivery;
use crate::effects::outbox::{self, Flush};
use crate::effects::runs;
use crate::effects::watcher::{self, Role, Watcher};
use crate::ids::SessionId;
use crate::store::{NoticeKind, Store, StoreError};

/// Hook payloads are a few hundred bytes; anything past this is refused, not buffered.
pub const STDIN_LIMIT: usize = 1024 * 1024;
/// Agents close stdin after writing the payload; a hook started by hand may never get EOF.
const STDIN_WAIT: Duration = Duration::from_secs(2);
/// Lifecycle and notification POSTs must not hold the agent up.
const POST_CAP: Duration = Duration::from_secs(3);
/// What the sessionEnd cap keeps back for the session-end POST after draining.
const POST_RESERVE: Duration = Duration::from_secs(1);
/// The background sweep runs at most this often.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub struct HookArgs {
    /// Whose hook this is.
    pub agent: &'static dyn Agent,
    /// The event, as the agent names it.
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

pub async fn hook(store: Store, args: HookArgs, delivery_opts: &DeliveryOpts, timing: &TimingOpts) {
    let started = Instant::now();
    let agent = args.agent;
    let events = agent.hook_events();
    let Some(&(_, event)) = events.iter().find(|(name, _)| *name == args.event) else {
        let names: Vec<&str> = events.iter().map(|(n, _)| *n).collect();
        return eprintln!(
            "kcap hook: unknown event {:?} (expected one of {names:?}); ignored",
            args.event
        );
    };
    let payload = match read_stdin().and_then(|b| agent.parse_hook(&b)) {
        Ok(p) => p,
        Err(e) => return eprintln!("kcap hook {}: {e}; ignored", args.event),
    };
    let session = payload.session;
    // An unusable store is said on every hook's stderr (the agent logs it), not only in a log
    // file that may not be writable either. Delivery goes on without it.
    let health = store.health_quick();
    if let Err(why) = &health {
        eprintln!(
            "kcap hook {}: kcap's store is unusable: {why}. Lines are still delivered now, but \
             nothing is kept for later: what fails to arrive now needs `kcap import` \
             once it is fixed (`kcap doctor` checks it)",
            args.event
        );
    }
    let _log = crate::cli::logging::to_file(&store.home().join("logs").join("hooks.log"));
    let path = agent.transcript_path(&agent.home(), session);
    let delivery = match delivery_opts.delivery() {
        Ok(d) => d,
        Err(e) => return eprintln!("kcap hook: {e}"),
    };
    tracing::info!(event = %args.event, %session, "hook");
    let hook = Hook {
        store: &store,
        session,
        delivery: &delivery,
        store_ok: health.is_ok(),
    };

    match event {
        HookEvent::SessionEnd => {
            session_end(&hook, &path, &payload, timing, args.drain_cap).await;
        }
        HookEvent::SessionStart => {
            runs::start(store.home(), session, payload.raw.get("timestamp"));
            let body = lifecycle_body(HookEvent::SessionStart, &payload);
            hook.notice(NoticeKind::SessionStart, body).await;
            ensure_watcher(&store, session, &path);
        }
        // Not a new run: a late agentStop of a run that has ended must not make a repeated
        // end of that run look new. (The older kcap's marker is cleared, as it did.)
        HookEvent::AgentStop => {
            runs::runs_again(store.home(), session);
            ensure_watcher(&store, session, &path)
        }
        HookEvent::Notification => {
            let mut body = payload.raw.clone();
            body["session_id"] = session.dashless().into();
            hook.notice(NoticeKind::Notification, body).await;
        }
    }
    if hook.store_ok {
        maybe_sweep(&store);
    }
    tracing::info!(event = %args.event, ms = started.elapsed().as_millis() as u64, "hook done");
}

/// What every hook action needs.
struct Hook<'a> {
    store: &'a Store,
    session: SessionId,
    delivery: &'a Delivery,
    store_ok: bool,
}

impl Hook<'_> {
    /// Queues a lifecycle notice in the store's outbox and delivers what the session has
    /// pending that may go now (start and notifications; an end waits for the lines). Without
    /// a store it is posted directly, within the cap.
    async fn notice(&self, kind: NoticeKind, body: serde_json::Value) -> bool {
        let notice = outbox::notice(kind, body);
        let queued = if self.store_ok {
            let (store, session, n) = (self.store.clone(), self.session, notice.clone());
            blocking(move || store.queue_notice(session, &n)).await
        } else {
            Err(StoreError::Corrupt("store unusable".into()))
        };
        if let Err(e) = queued {
            tracing::warn!(error = %e, path = %notice.path, "cannot queue the notice; posting it directly");
            return post_capped(self.delivery, &notice.path, &notice.body).await;
        }
        let which = if kind == NoticeKind::SessionEnd {
            Flush::All
        } else {
            Flush::BeforeLines
        };
        match tokio::time::timeout(
            POST_CAP,
            outbox::flush(self.store, &self.delivery.client, Some(self.session), which),
        )
        .await
        {
            Ok(flushed) if flushed.failed.is_none() => true,
            Ok(flushed) => {
                tracing::warn!(error = ?flushed.failed, "notice kept in the outbox; delivered in order once the server answers");
                false
            }
            Err(_) => {
                tracing::warn!("notice delivery timed out; kept in the outbox");
                false
            }
        }
    }
}

/// (1) finalizer spawned, (2) watcher stopped and the tail drained inline under the cap,
/// (3) session-end queued for the finalizer, which posts it after the post-hook tail (so the
/// server gets start, lines, end in that order); posted here if no finalizer runs.
///
/// Without a store the end cannot be queued: it is handed to the finalizer (in its
/// environment), which posts it after its own drain, and this hook does not drain inline:
/// with no watcher lock to order the two, a batch of the hook's could reach the server after
/// the finalizer's end. The finalizer is then the session's one deliverer.
async fn session_end(
    hook: &Hook<'_>,
    path: &Path,
    payload: &HookPayload,
    timing: &TimingOpts,
    drain_cap: Duration,
) {
    let (store, session) = (hook.store, hook.session);
    let mut body = lifecycle_body(HookEvent::SessionEnd, payload);
    body["ended_at"] = crate::cli::status::iso_time(now_ms()).into();
    // Which run ends: kept with the notice (never posted), so the server gets one end per run.
    // A sessionEnd the agent stamped before it stamped the current run's start is the previous
    // run's, delayed (compared with the agent's own stamps only; in doubt, the current run's).
    let run = runs::at_stamp(store.home(), session, payload.raw.get("timestamp"));
    body[runs::RUN_KEY] = run.into();
    // The end is queued before the finalizer starts, so a finalizer that drains at once (the
    // shutdown already written) finds it and posts it after the lines; and after its spawn is
    // recorded, so a sweep never takes it for the end of a session with nothing left to run.
    let args: Vec<OsString> = vec!["finalizer".into(), session.to_string().into(), path.into()];
    // Queued without the watcher lock (the watcher holds it until it is stopped, below): a
    // watcher's hand-off end of this run queued meanwhile is replaced by this real one, and a
    // hand-off after this leaves it queued ([`EndQueue::Yield`]); one store access each.
    let queue = if hook.store_ok {
        EndQueue::Replace
    } else {
        EndQueue::No
    };
    let SpawnedForEnd { spawned, queued } =
        spawn_finalizer_for_end(store, session, path, timing.timings(), args, &body, queue).await;
    match (&spawned.pid, &spawned.recorded) {
        (Ok(pid), Ok(_)) => tracing::info!(pid, "finalizer spawned"),
        (Ok(pid), Err(e)) => {
            tracing::warn!(pid, error = %e, "finalizer spawned without the store: it delivers from the server's last-line, and nothing is kept should it fail")
        }
        (Err(e), Ok(_)) => {
            tracing::error!(error = %e, "cannot start the finalizer; its spawn is recorded, so the next hook's background sweep (or `kcap finalize --resume`) finishes the session");
            eprintln!("kcap hook sessionEnd: {e}; `kcap finalize --resume` finishes the session");
        }
        (Err(e), Err(why)) => {
            tracing::error!(error = %e, store = %why, "cannot start the finalizer, and the store cannot record it: the session's post-hook tail is not delivered");
            eprintln!(
                "kcap hook sessionEnd: {e}, and the store cannot record it ({why}): what the agent \
                 writes after this hook is not delivered; run `kcap import --session {session}` later"
            );
        }
    }
    let deadline = Instant::now() + drain_cap;
    stop_watcher(store, session, run, deadline).await;
    if !queued && spawned.pid.is_ok() {
        return tracing::info!(
            "session-end handed to the finalizer, which delivers the lines and then posts it"
        );
    }
    // Whatever the watcher left (or all of it, if none ran), within what remains of the cap,
    // keeping the last second for the session-end POST: the cap bounds the whole hook.
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(POST_RESERVE);
    if !remaining.is_zero() {
        // Without a writable home there is no lock to take: drain anyway (the ids keep a line
        // that two deliverers send stored once).
        let lock = watcher::claim_as(store.home(), session, Role::Drain);
        if let Err(e) = &lock {
            tracing::warn!(error = %e, "cannot take the watcher lock; draining without it");
        }
        if !matches!(lock, Ok(None)) {
            let inline = Watcher {
                store: store.clone(),
                session,
                transcript: path.to_path_buf(),
                delivery: hook.delivery.clone(),
                poll: Duration::from_millis(1),
            };
            // A batch cut by the cap may still reach the server after this hook let the lock
            // go, even after the finalizer posted the end: it is harmless, since its position
            // was not persisted, so the finalizer sends those lines again before the end, and
            // the late copy stores nothing new (same ids, same numbers).
            let stats = inline.run(std::future::ready(()), remaining).await;
            tracing::info!(lines = stats.lines, "inline drain");
        } else {
            tracing::info!("another process holds the session's watcher lock; it drains");
        }
    }
    if spawned.pid.is_ok() {
        return tracing::info!("session-end queued for the finalizer, which posts it after the tail");
    }
    let post_cap = deadline
        .saturating_duration_since(Instant::now())
        .clamp(POST_RESERVE / 2, POST_CAP);
    if queued {
        // No finalizer runs: what this hook drained is all there is for now; the end follows.
        let flushed = tokio::time::timeout(
            post_cap,
            outbox::flush(store, &hook.delivery.client, Some(session), Flush::All),
        )
        .await;
        if !matches!(&flushed, Ok(f) if f.failed.is_none()) {
            tracing::warn!("session-end kept in the outbox; the next sweep delivers it");
        }
    } else {
        let notice_path = outbox::notice(NoticeKind::SessionEnd, serde_json::Value::Null).path;
        let posted = tokio::time::timeout(
            post_cap,
            hook.delivery
                .client
                .post_json(&notice_path, &runs::wire_body(&body)),
        )
        .await;
        if !matches!(posted, Ok(Ok(()))) {
            eprintln!(
                "kcap hook sessionEnd: the session-end notice was not delivered and the store cannot keep it"
            );
        }
    }
}

/// Stops the session's watcher of `run` (SIGTERM to a process that holds the lock *as a
/// watcher* of that run) and waits for the lock to be free, until `deadline`. A hook draining
/// inline (another sessionEnd) is waited for, never signalled; a later run's watcher (the
/// session was resumed before this end arrived) is neither signalled nor waited for.
async fn stop_watcher(store: &Store, session: SessionId, run: runs::RunId, deadline: Instant) {
    let ours = |h: &watcher::LockHolder| h.role == Role::Drain || h.run == 0 || h.run <= run;
    let Some(holder) = watcher::holder(store.home(), session) else {
        return;
    };
    match holder.role {
        Role::Watch if ours(&holder) => {
            if let Some(pid) = watcher::stop_run(store.home(), session, holder.run) {
                tracing::info!(pid, "watcher told to stop");
            }
        }
        Role::Watch => {
            return tracing::info!(
                pid = holder.process.pid,
                "a later run's watcher runs; this end is an earlier run's and leaves it alone"
            )
        }
        Role::Drain => {
            tracing::info!(
                pid = holder.process.pid,
                "another sessionEnd hook is draining; waiting for it"
            )
        }
    }
    while watcher::holder(store.home(), session).is_some_and(|h| ours(&h)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lifecycle_body(event: HookEvent, payload: &HookPayload) -> serde_json::Value {
    serde_json::json!({
        "hook_event_name": event.protocol_name(),
        "session_id": payload.session.dashless(),
        "reason": payload.reason,
        "source": payload.source,
        "cwd": payload.cwd,
        "home_dir": std::env::var("HOME").ok(),
    })
}

async fn post_capped(delivery: &Delivery, path: &str, body: &serde_json::Value) -> bool {
    match tokio::time::timeout(POST_CAP, delivery.client.post_json(path, body)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(path, error = %e.message(), "hook POST failed");
            false
        }
        Err(_) => {
            tracing::warn!(path, "hook POST timed out");
            false
        }
    }
}

/// Starts `kcap watch` for the session unless one runs (the watcher's own lock settles races).
pub fn ensure_watcher(store: &Store, session: SessionId, path: &Path) {
    if watcher::running(store.home(), session).is_some() {
        return;
    }
    let mut args: Vec<OsString> = vec!["watch".into(), session.to_string().into(), path.into()];
    // The process that ran this hook is the session's agent when the agent marks no users:
    // the watcher ends when it does.
    if let Some(agent) = crate::effects::agent::hook_agent() {
        args.push("--agent".into());
        args.push(format!("{}:{}", agent.pid, agent.start_ticks).into());
    }
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
    let args: Vec<OsString> = vec!["finalize".into(), "--resume".into(), "--sweep".into()];
    if let Err(e) = spawn_detached(&args, &store.home().join("logs").join("sweep.log")) {
        tracing::warn!(error = %e, "cannot start the background sweep");
    }
}
