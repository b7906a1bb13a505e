//! `kcap watch <sid> <path>`: the live watcher process. It ends when told to (SIGTERM, by the
//! sessionEnd hook), or by itself when the session's agent process is gone or the transcript
//! has been idle past the limit; then it drains and hands the session to a finalizer, with a
//! session-end notice, so the tail and the end still arrive. Told to stop, it hands off too if
//! the agent is gone by then (`kcap watchers stop` on a crashed session).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::finalize::{check_transcript_path, spawn_finalizer_for_end, EndQueue};
use crate::cli::options::{DeliveryOpts, TimingOpts};
use crate::config::now_ms;
use crate::effects::agent::AgentWatch;
use crate::effects::runs::{self, RunId, RUN_KEY};
use crate::effects::watcher::{claim_watch, Ended, Endings, WatchClaim, Watcher};
use crate::ids::SessionId;
use crate::store::{Holder, Store};

/// Leaves room inside the sessionEnd hook's 8 s cap for its own POST.
const FINAL_DRAIN: Duration = Duration::from_secs(6);
/// How long a new watcher waits for a drain holding the session's lock (a sessionEnd hook's
/// inline drain is capped at 8 s; a posted end takes one request).
const DRAIN_PATIENCE: Duration = Duration::from_secs(60);
/// A dead agent writes nothing more: its finalizer need only wait for a write in flight.
const AGENT_GONE_BUDGET_MS: u64 = 2_000;

/// `kcap watch`'s arguments.
pub struct WatchArgs {
    pub session: String,
    pub path: PathBuf,
    pub poll: Duration,
    /// `<pid>:<start ticks>` of the process that ran the starting hook.
    pub agent: Option<String>,
    /// Idle transcript limit; zero means none.
    pub idle_limit: Duration,
}

/// Runs the watcher; returns the exit code.
pub async fn watch(store: Store, args: WatchArgs, delivery: &DeliveryOpts, timing: &TimingOpts) -> i32 {
    let session: SessionId = match args.session.parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kcap watch: {e}");
            return 2;
        }
    };
    if let Err(e) = check_transcript_path(session, &args.path) {
        eprintln!("kcap watch: {e}");
        return 2;
    }
    // Whose transcript it is decides how the agent's liveness is seen.
    let agent = match crate::agent::of_transcript(&args.path) {
        Ok((agent, _)) => agent,
        Err(e) => {
            eprintln!("kcap watch: {e}");
            return 2;
        }
    };
    // Before the lock: a watcher that waits for a drain, or leaves, says so in the session's log.
    let _log = crate::cli::logging::to_file(
        &store
            .home()
            .join("logs")
            .join(format!("{}.watch.log", session.dashed())),
    );
    let _lock = match claim_watch(store.home(), session, DRAIN_PATIENCE).await {
        Ok(WatchClaim::Taken(lock)) => lock,
        Ok(WatchClaim::Watched(pid)) => {
            tracing::info!(?pid, "a watcher already runs for the session; leaving");
            eprintln!("kcap watch: a watcher already runs for {session}");
            return 0;
        }
        Ok(WatchClaim::StillHeld(holder)) => {
            let pid = holder.map(|h| h.process.pid);
            tracing::warn!(
                ?pid,
                "the session's lock stayed held past the watcher's patience; leaving"
            );
            eprintln!("kcap watch: the lock of {session} stayed held (pid {pid:?}); not watching");
            return 0;
        }
        Err(e) => {
            eprintln!("kcap watch: cannot take the watcher lock: {e}");
            return 2;
        }
    };
    let delivery = match delivery.delivery() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("kcap watch: {e}");
            return 2;
        }
    };
    let session_dir = args.path.parent().map(PathBuf::from).unwrap_or_default();
    let endings = Endings {
        agent: AgentWatch::start(agent, &session_dir, args.agent.as_deref().and_then(parse_agent)),
        idle_limit: (!args.idle_limit.is_zero()).then_some(args.idle_limit),
    };
    tracing::info!(%session, pid = std::process::id(), agent = ?endings.agent, "watcher started");
    let watcher = Watcher {
        store: store.clone(),
        session,
        transcript: args.path.clone(),
        delivery,
        poll: args.poll,
    };
    let (stats, ended) = watcher.run_until(stop_signal(), &endings, FINAL_DRAIN).await;
    tracing::info!(?stats, ?ended, "watcher stopped");
    // Told to stop (by a sessionEnd hook, whose agent is alive running it, or by `kcap watchers
    // stop`): if the agent is gone meanwhile, nothing else will ever end the session (no
    // agentStop, no sessionEnd), so hand it off as when the watcher notices by itself.
    // A sessionEnd hook may have queued this run's real end before it stopped us: the
    // hand-off keeps it (its reason) rather than queue its own, but still starts a
    // finalizer: lines the final drain could not deliver (the server down) need one, and
    // skipping the hand-off lost them once (5cff7a4, reverted).
    // Stopped by a user (`kcap watchers stop`: SIGINT) with no agent process to watch, the
    // watcher cannot tell a crashed session from a live one: nothing else would ever end a
    // crashed one, so the stop is taken for its end (a live one's later lines and real end
    // still follow it: an end after new lines is a new end).
    let by_user = STOPPED_BY_USER.load(std::sync::atomic::Ordering::Relaxed);
    let ended = match (ended, endings.agent.gone(&session_dir)) {
        (Ended::Stopped, Some(pid)) => {
            tracing::warn!(pid, "stopped, and the session's agent process is gone without a sessionEnd; handing the session to a finalizer");
            Ended::AgentGone { pid }
        }
        (ended, _) => ended,
    };
    let reason = match ended {
        Ended::Stopped if by_user && endings.agent == AgentWatch::Unknown => {
            tracing::warn!("stopped by the user, with no agent process known to watch; handing the session to a finalizer");
            "stopped"
        }
        Ended::Stopped => return 0,
        Ended::AgentGone { .. } => "agent_exited",
        Ended::Idle { .. } => "idle",
    };
    hand_off(&store, &watcher, ended, reason, _lock.run, timing).await;
    0
}

/// The session ended without a sessionEnd hook: a session-end notice goes to the outbox and a
/// finalizer takes over (it delivers the tail, then the notice). An end of the run already
/// queued (the hook's real one) stays, and waits for this finalizer; the outbox drops this one
/// as a repeat if the run's end is on the server with no line delivered since when it posts.
/// The finalizer is started in every case.
async fn hand_off(
    store: &Store,
    watcher: &Watcher,
    ended: Ended,
    reason: &str,
    run: RunId,
    timing: &TimingOpts,
) {
    let session = watcher.session;
    let mut body = serde_json::json!({
        "hook_event_name": "sessionEnd",
        "session_id": session.dashless(),
        "reason": reason,
        "source": runs::WATCHER_SOURCE,
        "cwd": null,
        "home_dir": std::env::var("HOME").ok(),
        "ended_at": crate::cli::status::iso_time(now_ms()),
    });
    // The run this watcher watched: its end, and no other run's.
    body[RUN_KEY] = run.into();
    let mut timings = timing.timings();
    if matches!(ended, Ended::AgentGone { .. }) {
        timings.shutdown_budget_ms = timings.shutdown_budget_ms.min(AGENT_GONE_BUDGET_MS);
    }
    let args: Vec<OsString> = vec![
        "finalizer".into(),
        session.to_string().into(),
        watcher.transcript.clone().into(),
    ];
    // Always queued, even when this run's end is on the server with no line since: the
    // lines this finalizer delivers may come after that end, and need one after them. The
    // outbox drops the end as a repeat if none did (it counts the lines when it posts).
    // Queued once the finalizer's spawn is recorded (never before: see
    // `spawn_finalizer_for_end`), else handed to it.
    let spawned = spawn_finalizer_for_end(
        store,
        session,
        &watcher.transcript,
        timings,
        args,
        &body,
        EndQueue::Yield,
    )
    .await
    .spawned;
    match spawned.pid {
        Ok(pid) => tracing::info!(pid, reason, "session handed to a finalizer"),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the finalizer; the background sweep finishes the session")
        }
    }
}

fn parse_agent(text: &str) -> Option<Holder> {
    let (pid, ticks) = text.split_once(':')?;
    Some(Holder {
        pid: pid.parse().ok()?,
        start_ticks: ticks.parse().ok()?,
    })
}

/// Set when the watcher was stopped with SIGINT (a user: `kcap watchers stop`, or Ctrl-C), not
/// the sessionEnd hook's SIGTERM.
static STOPPED_BY_USER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => STOPPED_BY_USER.store(true, std::sync::atomic::Ordering::Relaxed),
            }
        }
        _ => std::future::pending().await,
    }
}
