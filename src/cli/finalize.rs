//! `kcap finalizer`, `kcap finalize --resume` and `kcap finalize --session`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::options::{DeliveryOpts, TimingOpts};
use crate::config::{now_ms, session_log_path, transcript_path};
use crate::effects::detach::{is_session_leader, spawn_detached_with_env};
use crate::effects::interpreter::Delivery;
use crate::effects::open::{open_transcript, session_of_path, OpenError};
use crate::effects::outbox::{self, Flush};
use crate::effects::runs;
use crate::effects::session::{record_spawn, run_without_store, RunOutcome, SessionRun, Start};
use crate::ids::SessionId;
use crate::machine::{Millis, Phase, State};
use crate::store::{MachineMeta, NoticeKind, Store};

/// Set (to [`SESSION_END_ON_STDIN`]) when a hook that could not queue the session-end (no
/// usable store) hands it to the finalizer on its stdin; the finalizer posts it after the
/// session's lines.
pub const SESSION_END_ENV: &str = "KCAP_SESSION_END";
/// [`SESSION_END_ENV`]'s value: the end is the finalizer's stdin.
pub const SESSION_END_ON_STDIN: &str = "stdin";
/// A handed-over end is a hook payload's fields (at most a MiB) and a few of kcap's.
const HANDED_END_LIMIT: u64 = 2 * 1024 * 1024;
/// How long a finalizer that has drained waits for a watcher's final drain or a hook's inline
/// drain (each bounded by its own cap, well below this) before it posts the session's end.
const END_WAIT: Duration = Duration::from_secs(30);

/// The finalizer's transcript must be the transcript of the session it finalizes, in its
/// agent's exact shape: a path built from hostile input can never point it at another file.
/// (Opening it is [`crate::effects::open::open_transcript`]'s job: no symlink, no FIFO.)
pub fn check_transcript_path(session: SessionId, path: &Path) -> Result<(), String> {
    let named = session_of_path(path)?;
    if named != session {
        return Err(format!(
            "transcript path {} names session {named}, not {session}",
            path.display()
        ));
    }
    Ok(())
}

pub struct FinalizeArgs {
    pub session: String,
    pub path: PathBuf,
    pub foreground: bool,
    /// Set by the parent when it re-launches itself detached.
    pub spawned_at: Option<Millis>,
    /// The machine the parent recorded for this child (absent if the store refused).
    pub generation: Option<u32>,
}

/// `kcap finalizer <sid> <path>`: never fails the caller (exit 0), reports problems on
/// stderr and in the session's log.
pub async fn run_finalizer(
    store: Store,
    args: FinalizeArgs,
    delivery: &DeliveryOpts,
    timing: &TimingOpts,
    raw_args: Vec<OsString>,
) {
    let session: SessionId = match args.session.parse() {
        Ok(s) => s,
        Err(e) => return eprintln!("kcap finalizer: {e}; nothing to do"),
    };
    if let Err(e) = check_transcript_path(session, &args.path) {
        return eprintln!("kcap finalizer: {e}; nothing to do");
    }
    let log = session_log_path(store.home(), session);
    let timings = timing.timings();
    let handed_end = handed_end();

    if !args.foreground && args.spawned_at.is_none() && !is_session_leader() {
        let spawned = spawn_finalizer_with_end(
            &store,
            session,
            &args.path,
            timings,
            raw_args,
            handed_end.as_ref(),
        )
        .await;
        if let Err(e) = &spawned.recorded {
            eprintln!("kcap finalizer: cannot record the finalizer ({e}); it runs without the store");
        }
        match spawned.pid {
            Ok(pid) => eprintln!("kcap finalizer: finalizer for {session} detached as pid {pid}"),
            Err(e) => eprintln!("kcap finalizer: {e}"),
        }
        return;
    }

    let _log_guard = crate::cli::logging::to_file(&log);
    let delivery = match delivery.delivery() {
        Ok(d) => d,
        Err(e) => return tracing::error!(error = %e, "cannot deliver"),
    };
    let spawned_at = args.spawned_at.unwrap_or_else(now_ms);
    tracing::info!(%session, path = %args.path.display(), pid = std::process::id(), "finalizer started");

    if args.generation.is_none() {
        if let Err(e) = record_spawn(&store, session, &args.path, timings, spawned_at).await {
            tracing::error!(error = %e, "store unusable; running without the transition log");
            let meta = MachineMeta {
                session,
                generation: 0,
                transcript: args.path.clone(),
                timings,
                spawned_at,
            };
            let (state, stats) = run_without_store(&store, &delivery, meta).await;
            tracing::info!(phase = state.phase.name(), ?stats, "finalizer finished");
            let drained = matches!(state.phase, Phase::Drained { .. });
            return post_end(&store, &delivery, session, drained, handed_end.as_ref()).await;
        }
    }
    let run = SessionRun {
        store: &store,
        delivery: &delivery,
        session,
        wait_for_lease_until: Some(spawned_at.saturating_add(timings.shutdown_budget_ms)),
        poll: Duration::from_millis(timings.poll_ms),
    };
    let drained = match run.run(Start::Spawn).await {
        Ok(outcome) => {
            tracing::info!(summary = %describe(&outcome), "finalizer finished");
            is_drained(&outcome)
        }
        Err(e) => {
            // The spawn was recorded but the store failed since (a disk that filled up): the
            // session is delivered all the same, from the server's last-line.
            tracing::error!(error = %e, "store unusable; running without the transition log");
            let meta = MachineMeta {
                session,
                generation: args.generation.unwrap_or(0),
                transcript: args.path.clone(),
                timings,
                spawned_at,
            };
            let (state, stats) = run_without_store(&store, &delivery, meta).await;
            tracing::info!(phase = state.phase.name(), ?stats, "finalizer finished");
            matches!(state.phase, Phase::Drained { .. })
        }
    };
    post_end(&store, &delivery, session, drained, handed_end.as_ref()).await;
}

/// The session-end a hook handed over on stdin, if [`SESSION_END_ENV`] says it did. Only a
/// regular file (the memfd the hook wrote) is read: a terminal or a pipe a user left there
/// must not block the finalizer.
fn handed_end() -> Option<serde_json::Value> {
    use std::io::Read;
    use std::os::fd::AsFd;
    if std::env::var(SESSION_END_ENV).ok()? != SESSION_END_ON_STDIN {
        return None;
    }
    let stdin = std::io::stdin();
    let file = std::fs::File::from(stdin.as_fd().try_clone_to_owned().ok()?);
    if !file.metadata().ok()?.is_file() {
        tracing::warn!("{SESSION_END_ENV} is set but stdin is not the hook's hand-over; ignored");
        return None;
    }
    let mut text = Vec::new();
    if let Err(e) = file.take(HANDED_END_LIMIT).read_to_end(&mut text) {
        tracing::warn!(error = %e, "cannot read the handed-over session-end");
        return None;
    }
    match serde_json::from_slice(&text) {
        Ok(body) => Some(body),
        Err(e) => {
            tracing::warn!(error = %e, "the handed-over session-end is not JSON; ignored");
            None
        }
    }
}

fn is_drained(outcome: &RunOutcome) -> bool {
    matches!(
        outcome,
        RunOutcome::AlreadyDrained { .. }
            | RunOutcome::Ran {
                state: State {
                    phase: Phase::Drained { .. },
                    ..
                },
                ..
            }
    )
}

/// The session's end goes after its lines: the hook (or the watcher) left it to us, queued or
/// handed over in [`SESSION_END_ENV`]. A machine that parked has not delivered them: a queued
/// end waits for the run that drains (the sweep's); a handed-over one has nowhere to wait, so
/// it is posted all the same (the server keeps lines that come after an end).
async fn post_end(
    store: &Store,
    delivery: &Delivery,
    session: SessionId,
    drained: bool,
    handed: Option<&serde_json::Value>,
) {
    if !drained {
        tracing::info!("not drained: a queued session-end waits for the run that drains");
        if handed.is_none() {
            return;
        }
    }
    let flushed = outbox::deliver_end_after_lines(store, &delivery.client, session, handed, END_WAIT).await;
    if flushed.busy {
        tracing::warn!("the session-end stays queued: another kcap process still delivers the session's lines; the next sweep posts it");
    }
}

/// What starting a finalizer did: whether its spawn is in the store (so the background sweep
/// can finish it should it die) and whether it runs.
#[derive(Debug)]
pub struct Spawned {
    /// The machine's generation, or why it could not be recorded.
    pub recorded: Result<u32, String>,
    /// The detached process, or why it could not be started.
    pub pid: Result<u32, String>,
}

/// Records the spawn (first: a crash after this point cannot lose the machine), then re-launches
/// `kcap <args> --spawned-at T [--generation G]` detached. `args` must start with
/// `finalizer <sid> <path>`. An unusable store does not stop the launch: the finalizer
/// then runs without it.
pub async fn spawn_finalizer(
    store: &Store,
    session: SessionId,
    path: &Path,
    timings: crate::machine::Timings,
    args: Vec<OsString>,
) -> Spawned {
    spawn_finalizer_with_end(store, session, path, timings, args, None).await
}

/// [`spawn_finalizer`], handing the finalizer a session-end to post after the lines (one that
/// no store could queue).
pub async fn spawn_finalizer_with_end(
    store: &Store,
    session: SessionId,
    path: &Path,
    timings: crate::machine::Timings,
    args: Vec<OsString>,
    end: Option<&serde_json::Value>,
) -> Spawned {
    let at = now_ms();
    let recorded = record_spawn(store, session, path, timings, at)
        .await
        .map_err(|e| e.to_string());
    launch(store, session, args, at, &recorded, end).await
}

/// What [`spawn_finalizer_for_end`] did with the session's end.
#[derive(Debug)]
pub struct SpawnedForEnd {
    pub spawned: Spawned,
    /// In the store's outbox (else handed to the finalizer, or lost with it).
    pub queued: bool,
}

/// How [`spawn_finalizer_for_end`] queues the session's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndQueue {
    /// Not at all (no usable store): the end is handed to the finalizer on its stdin.
    No,
    /// It replaces an end of its run still queued: the sessionEnd hook's real end.
    Replace,
    /// An end of its run already queued stays, and waits for this finalizer instead: the
    /// watcher's hand-off end, which must never replace the run's real end.
    Yield,
}

/// [`spawn_finalizer`] for a session that has ended, with its session-end `end`: records the
/// spawn, then queues the end (as `queue` says), then launches the finalizer, handing it on
/// stdin an end that was not queued. Queued only once the spawn is recorded: the sweep posts
/// the queued end of a session that has no machine left to run, and must not take this end for
/// one whose lines are all delivered before the machine that delivers its tail is recorded.
pub async fn spawn_finalizer_for_end(
    store: &Store,
    session: SessionId,
    path: &Path,
    timings: crate::machine::Timings,
    args: Vec<OsString>,
    end: &serde_json::Value,
    queue: EndQueue,
) -> SpawnedForEnd {
    let at = now_ms();
    let recorded = record_spawn(store, session, path, timings, at)
        .await
        .map_err(|e| e.to_string());
    // The end names its finalizer: it waits for that one's drain, not for a later run's.
    let mut end = end.clone();
    if let Ok(generation) = &recorded {
        end[crate::effects::runs::GEN_KEY] = (*generation).into();
    }
    let end = &end;
    let queued = queue != EndQueue::No
        && recorded.is_ok()
        && {
            let (store, notice) = (store.clone(), outbox::notice(NoticeKind::SessionEnd, end.clone()));
            let queueing = move || {
                match queue {
                EndQueue::Yield => store.queue_end_yielding(session, &notice).map(|kept| {
                    if kept {
                        tracing::info!(%session, "an end of this run is already queued: it stays, and waits for this finalizer");
                    }
                }),
                _ => store.queue_notice(session, &notice).map(drop),
            }
            };
            match crate::effects::blocking(queueing).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot queue the session-end; the finalizer posts it after the lines");
                    false
                }
            }
        };
    let handed = (!queued).then_some(end);
    let spawned = launch(store, session, args, at, &recorded, handed).await;
    SpawnedForEnd { spawned, queued }
}

/// Launches `kcap <args> --spawned-at T [--generation G]` detached, `end` on its stdin.
async fn launch(
    store: &Store,
    session: SessionId,
    args: Vec<OsString>,
    at: Millis,
    recorded: &Result<u32, String>,
    end: Option<&serde_json::Value>,
) -> Spawned {
    let mut child_args = args;
    child_args.push("--spawned-at".into());
    child_args.push(at.to_string().into());
    if let Ok(generation) = recorded {
        child_args.push("--generation".into());
        child_args.push(generation.to_string().into());
    }
    let input = end.map(|body| body.to_string().into_bytes());
    let env: Vec<(&str, String)> = input
        .iter()
        .map(|_| (SESSION_END_ENV, SESSION_END_ON_STDIN.to_string()))
        .collect();
    let log = session_log_path(store.home(), session);
    let pid = spawn_detached_with_env(&child_args, &log, &env, input.as_deref())
        .map_err(|e| format!("cannot detach the finalizer: {e}"));
    Spawned {
        recorded: recorded.clone(),
        pid,
    }
}

/// `kcap finalize --resume` / `--session`: returns the process exit code.
/// `sweep`: the hook's background sweep, which leaves parked machines alone until their
/// `retry_at`.
pub async fn finalize(
    store: Store,
    session: Option<String>,
    sweep: bool,
    delivery: &DeliveryOpts,
    timing: &TimingOpts,
) -> i32 {
    let delivery = match delivery.delivery() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("kcap finalize: {e}");
            return 2;
        }
    };
    let sessions: Vec<SessionId> = match session {
        Some(raw) => match raw.parse::<SessionId>() {
            Ok(s) => {
                if let Err(code) = ensure_machine(&store, s, timing).await {
                    return code;
                }
                vec![s]
            }
            Err(e) => {
                eprintln!("kcap finalize: {e}");
                return 2;
            }
        },
        None => match store.all_latest_machines() {
            Ok(records) => records
                .into_iter()
                .filter(|r| !r.state().0.phase.is_terminal())
                .map(|r| r.meta.session)
                .collect(),
            Err(e) => {
                eprintln!(
                    "kcap finalize: cannot read the store at {}: {e}",
                    store.home().display()
                );
                return 2;
            }
        },
    };
    // Starts (and notifications) first; a session's end only once its lines are delivered.
    let early = outbox::flush(&store, &delivery.client, None, Flush::BeforeLines).await;
    // Bounded: `runs/`, `run-ends/` and `ended/` lose what no end can need any more.
    if sweep {
        let store = store.clone();
        let expired = crate::effects::blocking(move || runs::expire(&store, runs::KEEP)).await;
        if expired > 0 {
            tracing::info!(expired, "forgot the run records of sessions ended long ago");
        }
    }
    if sessions.is_empty() {
        let late = outbox::flush(&store, &delivery.client, None, Flush::All).await;
        report_notices(early.delivered + late.delivered);
        println!("nothing to finalize: every recorded finalizer has drained");
        return 0;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for session in sessions {
        let (store, delivery) = (store.clone(), delivery.clone());
        tasks.spawn(async move { (session, run_one(store, delivery, session, sweep).await) });
    }
    let mut code = 0;
    let mut delivered = early.delivered;
    while let Some(joined) = tasks.join_next().await {
        let Ok((session, result)) = joined else { continue };
        if matches!(
            &result,
            Ok(RunOutcome::AlreadyDrained { .. })
                | Ok(RunOutcome::Ran {
                    state: State {
                        phase: Phase::Drained { .. },
                        ..
                    },
                    ..
                })
        ) {
            delivered += outbox::flush(&store, &delivery.client, Some(session), Flush::All)
                .await
                .delivered;
        }
        match result {
            Ok(outcome) => {
                if !matches!(
                    &outcome,
                    RunOutcome::Ran {
                        state: State {
                            phase: Phase::Drained { .. },
                            ..
                        },
                        ..
                    } | RunOutcome::AlreadyDrained { .. }
                        | RunOutcome::Busy { .. }
                ) {
                    code = 1;
                }
                println!("{session}  {}", describe(&outcome));
            }
            Err(e) => {
                code = 1;
                println!("{session}  error: {e}");
            }
        }
    }
    // Notices of sessions that have no machine left to run (their lines are delivered).
    let unfinished: Vec<SessionId> = store
        .all_latest_machines()
        .map(|r| {
            r.into_iter()
                .filter(|r| !r.state().0.phase.is_terminal())
                .map(|r| r.meta.session)
                .collect()
        })
        .unwrap_or_default();
    if let Ok(pending) = store.pending_notices(None) {
        let mut done: Vec<SessionId> = pending.iter().map(|p| p.session).collect();
        done.dedup();
        for session in done.into_iter().filter(|s| !unfinished.contains(s)) {
            delivered += outbox::flush(&store, &delivery.client, Some(session), Flush::All)
                .await
                .delivered;
        }
    }
    report_notices(delivered);
    code
}

fn report_notices(delivered: usize) {
    if delivered > 0 {
        println!("delivered {delivered} pending lifecycle notice(s)");
    }
}

async fn run_one(
    store: Store,
    delivery: Delivery,
    session: SessionId,
    sweep: bool,
) -> Result<RunOutcome, crate::store::StoreError> {
    let run = SessionRun {
        store: &store,
        delivery: &delivery,
        session,
        wait_for_lease_until: None,
        poll: Duration::from_millis(300),
    };
    run.run(if sweep { Start::Sweep } else { Start::Resume }).await
}

/// The transcript `finalize --session` works on must be there and be a regular file: waiting a
/// whole budget for a file that is not there, then calling that a success, helps nobody.
fn check_transcript_now(session: SessionId, path: &Path) -> Result<(), String> {
    match open_transcript(path) {
        Ok(_) => Ok(()),
        Err(OpenError::Missing) => Err(format!(
            "no transcript for session {session} at {}",
            path.display()
        )),
        Err(e) => Err(format!("session {session}: {e}")),
    }
}

/// `--session` on a session that never had a finalizer starts one on its transcript (the
/// default agent's).
async fn ensure_machine(store: &Store, session: SessionId, timing: &TimingOpts) -> Result<(), i32> {
    let recorded = store.latest_machine(session);
    let path = match &recorded {
        Ok(Some(record)) => record.meta.transcript.clone(),
        _ => transcript_path(&crate::agent::default().home(), session),
    };
    if let Err(e) = check_transcript_now(session, &path) {
        eprintln!("kcap finalize: {e}");
        return Err(1);
    }
    match recorded {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            // The shutdown budget counts from now: the user asks for this session to be finished.
            let timings = timing.timings();
            match record_spawn(store, session, &path, timings, now_ms()).await {
                Ok(_) => {
                    println!(
                        "{session}  no finalizer recorded; starting one on {}",
                        path.display()
                    );
                    Ok(())
                }
                Err(e) => {
                    eprintln!("kcap finalize: cannot record a finalizer: {e}");
                    Err(2)
                }
            }
        }
        Err(e) => {
            eprintln!(
                "kcap finalize: cannot read the store at {}: {e}",
                store.home().display()
            );
            Err(2)
        }
    }
}

pub fn describe(outcome: &RunOutcome) -> String {
    match outcome {
        RunOutcome::Ran {
            state,
            stats,
            generation,
        } => {
            let what = match &state.phase {
                Phase::Drained { .. } => "drained".to_string(),
                Phase::Parked { reason, .. } => {
                    format!("parked ({})", crate::cli::status::park_reason(reason))
                }
                other => format!("stopped in {}", other.name()),
            };
            format!(
                "{what}: {} lines in {} batches, {} failed attempts (generation {generation})",
                stats.lines_sent, stats.batches, stats.failures
            )
        }
        RunOutcome::AlreadyDrained { generation } => format!("already drained (generation {generation})"),
        RunOutcome::Busy { pid } => format!("a finalizer is running for it (pid {pid})"),
        RunOutcome::NoMachine => "no finalizer recorded".into(),
    }
}
