//! `kcap watch <sid> <path>`: the live watcher process.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::finalize::check_transcript_path;
use crate::cli::options::DeliveryOpts;
use crate::effects::watcher::{claim, Watcher};
use crate::ids::SessionId;
use crate::store::Store;

/// Leaves room inside the sessionEnd hook's 8 s cap for its own POST.
const FINAL_DRAIN: Duration = Duration::from_secs(6);

pub async fn watch(
    store: Store,
    session: String,
    path: PathBuf,
    poll: Duration,
    delivery: &DeliveryOpts,
) -> i32 {
    let session: SessionId = match session.parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kcap watch: {e}");
            return 2;
        }
    };
    if let Err(e) = check_transcript_path(session, &path) {
        eprintln!("kcap watch: {e}");
        return 2;
    }
    let _lock = match claim(store.home(), session) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            eprintln!("kcap watch: a watcher already runs for {session}");
            return 0;
        }
        Err(e) => {
            eprintln!("kcap watch: cannot take the watcher lock: {e}");
            return 2;
        }
    };
    let _log = crate::cli::logging::to_file(
        &store
            .home()
            .join("logs")
            .join(format!("{}.watch.log", session.dashed())),
    );
    let delivery = match delivery.delivery() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("kcap watch: {e}");
            return 2;
        }
    };
    tracing::info!(%session, pid = std::process::id(), "watcher started");
    let watcher = Watcher {
        store,
        session,
        transcript: path,
        delivery,
        poll,
    };
    let stats = watcher.run(stop_signal(), FINAL_DRAIN).await;
    tracing::info!(?stats, "watcher stopped");
    0
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
