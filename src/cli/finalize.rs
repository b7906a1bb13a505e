//! `kcap copilot-finalize`, `kcap finalize --resume` and `kcap finalize --session`.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::cli::options::{DeliveryOpts, TimingOpts};
use crate::config::{copilot_home, now_ms, session_log_path, transcript_path};
use crate::effects::detach::{is_session_leader, spawn_detached};
use crate::effects::interpreter::Delivery;
use crate::effects::session::{record_spawn, run_without_store, RunOutcome, SessionRun, Start};
use crate::ids::SessionId;
use crate::machine::{Millis, Phase, State};
use crate::store::{MachineMeta, Store};

/// The finalizer's transcript must be `<…>/<session-id>/events.jsonl`: a path built from hostile
/// input can never point it at another file.
pub fn check_transcript_path(session: SessionId, path: &Path) -> Result<(), String> {
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("transcript path {} contains '.' or '..'", path.display()));
    }
    let named_right = path.file_name().is_some_and(|n| n == "events.jsonl");
    let in_session_dir = path
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == session.dashed().as_str());
    if !named_right || !in_session_dir {
        return Err(format!(
            "transcript path {} is not <session-state>/{}/events.jsonl",
            path.display(),
            session.dashed()
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

/// `kcap copilot-finalize <sid> <path>`: never fails the caller (exit 0), reports problems on
/// stderr and in the session's log.
pub async fn copilot_finalize(
    store: Store,
    args: FinalizeArgs,
    delivery: &DeliveryOpts,
    timing: &TimingOpts,
    raw_args: Vec<OsString>,
) {
    let session: SessionId = match args.session.parse() {
        Ok(s) => s,
        Err(e) => return eprintln!("kcap copilot-finalize: {e}; nothing to do"),
    };
    if let Err(e) = check_transcript_path(session, &args.path) {
        return eprintln!("kcap copilot-finalize: {e}; nothing to do");
    }
    let log = session_log_path(store.home(), session);
    let timings = timing.timings();

    if !args.foreground && args.spawned_at.is_none() && !is_session_leader() {
        match spawn_finalizer(&store, session, &args.path, timings, raw_args).await {
            Ok(pid) => eprintln!("kcap copilot-finalize: finalizer for {session} detached as pid {pid}"),
            Err(e) => eprintln!("kcap copilot-finalize: {e}"),
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
            return tracing::info!(phase = state.phase.name(), ?stats, "finalizer finished");
        }
    }
    let run = SessionRun {
        store: &store,
        delivery: &delivery,
        session,
        wait_for_lease_until: Some(spawned_at.saturating_add(timings.shutdown_budget_ms)),
        poll: Duration::from_millis(timings.poll_ms),
    };
    match run.run(Start::Spawn).await {
        Ok(outcome) => tracing::info!(summary = %describe(&outcome), "finalizer finished"),
        Err(e) => tracing::error!(error = %e, "finalizer could not run"),
    }
    // The hook may have left its session-end notice to us.
    crate::effects::outbox::deliver_session_ends(&store, &delivery.client, Some(session)).await;
}

/// Records the spawn (first: a crash after this point cannot lose the machine), then re-launches
/// `kcap <args> --spawned-at T [--generation G]` detached. `args` must start with
/// `copilot-finalize <sid> <path>`. Returns the finalizer's pid.
pub async fn spawn_finalizer(
    store: &Store,
    session: SessionId,
    path: &Path,
    timings: crate::machine::Timings,
    args: Vec<OsString>,
) -> Result<u32, String> {
    let at = now_ms();
    let mut child_args = args;
    child_args.push("--spawned-at".into());
    child_args.push(at.to_string().into());
    match record_spawn(store, session, path, timings, at).await {
        Ok(generation) => {
            child_args.push("--generation".into());
            child_args.push(generation.to_string().into());
        }
        Err(e) => eprintln!("kcap: cannot record the finalizer's spawn ({e}); it records it itself"),
    }
    spawn_detached(&child_args, &session_log_path(store.home(), session))
        .map_err(|e| format!("cannot detach the finalizer: {e}"))
}

/// `kcap finalize --resume` / `--session`: returns the process exit code.
pub async fn finalize(
    store: Store,
    session: Option<String>,
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
    let notices = crate::effects::outbox::deliver_session_ends(&store, &delivery.client, None).await;
    if notices > 0 {
        println!("delivered {notices} pending session-end notice(s)");
    }
    if sessions.is_empty() {
        println!("nothing to finalize: every recorded finalizer has drained");
        return 0;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for session in sessions {
        let (store, delivery) = (store.clone(), delivery.clone());
        tasks.spawn(async move { (session, run_one(store, delivery, session).await) });
    }
    let mut code = 0;
    while let Some(joined) = tasks.join_next().await {
        let Ok((session, result)) = joined else { continue };
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
    code
}

async fn run_one(
    store: Store,
    delivery: Delivery,
    session: SessionId,
) -> Result<RunOutcome, crate::store::StoreError> {
    let run = SessionRun {
        store: &store,
        delivery: &delivery,
        session,
        wait_for_lease_until: None,
        poll: Duration::from_millis(300),
    };
    run.run(Start::Resume).await
}

/// `--session` on a session that never had a finalizer starts one on its Copilot transcript.
async fn ensure_machine(store: &Store, session: SessionId, timing: &TimingOpts) -> Result<(), i32> {
    match store.latest_machine(session) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            let path = transcript_path(&copilot_home(), session);
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
