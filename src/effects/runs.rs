//! Session runs: a session runs once from its sessionStart to its sessionEnd, and again each
//! time it is resumed. The server gets one end per run, so what kcap remembers is keyed by the
//! run, not the session: a late hook of one run never clears or replaces what another run did.
//!
//! A run is named by when its sessionStart hook ran (epoch ms; 0 for a run whose start kcap
//! never saw, e.g. kcap installed mid-session). `runs/<session>` holds the current run;
//! `ended/<session>` the run whose end the server has, and how many of the session's lines were
//! delivered when it was posted. A run that goes on after its end was posted (the watcher's
//! idle hand-off, then the user came back in the same Copilot process; a resume whose
//! sessionStart was missed; Copilot's `-p` mode, one sessionEnd per turn) has delivered lines
//! since: its next end is a new end, posted after them. The end marker is read and written only
//! under the session's watcher lock (which every end poster holds), so two posters never both
//! see "not posted".

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::now_ms;
use crate::ids::SessionId;

/// A run's name: its sessionStart's time in epoch ms; 0 when no start was seen.
pub type RunId = u64;

/// The key under which a queued session-end names its run. Kept in the store only: it is
/// removed before the notice is posted ([`wire_body`]).
pub const RUN_KEY: &str = "kcap_run";

/// The key under which a queued session-end names the finalizer generation that delivers its
/// run's tail: the end waits for that finalizer, not for a later run's. Store-only, like
/// [`RUN_KEY`].
pub const GEN_KEY: &str = "kcap_gen";

/// How long the run and end files of a session outlive their last write. A repeated end comes
/// within seconds; a queued one is never expired from under ([`expire`] checks).
pub const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

fn run_file(home: &Path, session: SessionId) -> PathBuf {
    home.join("runs").join(session.dashed())
}

fn end_file(home: &Path, session: SessionId) -> PathBuf {
    home.join("ended").join(session.dashed())
}

/// Writes `text` in full to a file of its own, then renames it over `path`: a reader sees the
/// old value or the new one, never a torn one.
fn write_text(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path))
}

/// `runs/<session>`: the current run and the one before it (0 if none or unknown). A file
/// written by an older kcap holds the current run only.
fn read_runs(home: &Path, session: SessionId) -> (RunId, RunId) {
    let Ok(text) = std::fs::read_to_string(run_file(home, session)) else {
        return (0, 0);
    };
    let mut fields = text.split_whitespace().map(|f| f.parse::<RunId>().ok());
    let current = fields.next().flatten().unwrap_or(0);
    let previous = fields.next().flatten().unwrap_or(0);
    (current, previous.min(current))
}

/// The session's current run (0 if its start was never seen or cannot be read).
pub fn current(home: &Path, session: SessionId) -> RunId {
    read_runs(home, session).0
}

/// The run a hook stamped `at` (epoch ms, by the agent) belongs to: the current run, or the one
/// before it if the hook was stamped before the current run started (a delayed or repeated
/// sessionEnd of the previous run, arriving after the next run's sessionStart).
pub fn at_time(home: &Path, session: SessionId, at: Option<u64>) -> RunId {
    let (current, previous) = read_runs(home, session);
    match at {
        Some(at) if current > 0 && at < current => previous,
        _ => current,
    }
}

/// A sessionStart: a new run begins; its end is a new end. Returns the run.
pub fn start(home: &Path, session: SessionId) -> RunId {
    let previous = current(home, session);
    // Never equal to the run it follows, even for two starts in one millisecond.
    let run = now_ms().max(previous + 1);
    match write_text(&run_file(home, session), &format!("{run} {previous}")) {
        Ok(()) => tracing::info!(%session, run, "session run starts"),
        Err(e) => {
            tracing::warn!(%session, error = %e, "cannot record the session's run; its end counts as the previous run's")
        }
    }
    run
}

/// The run a queued session-end belongs to (0 for one queued without).
pub fn of_body(body: &serde_json::Value) -> RunId {
    body.get(RUN_KEY).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// The finalizer generation a queued session-end waits for (`None` for one queued without).
pub fn gen_of_body(body: &serde_json::Value) -> Option<u32> {
    body.get(GEN_KEY)
        .and_then(|v| v.as_u64())
        .and_then(|g| u32::try_from(g).ok())
}

/// `body` as the server gets it: without kcap's own keys.
pub fn wire_body(body: &serde_json::Value) -> std::borrow::Cow<'_, serde_json::Value> {
    match body.as_object() {
        Some(map) if map.contains_key(RUN_KEY) || map.contains_key(GEN_KEY) => {
            let mut map = map.clone();
            map.remove(RUN_KEY);
            map.remove(GEN_KEY);
            std::borrow::Cow::Owned(serde_json::Value::Object(map))
        }
        _ => std::borrow::Cow::Borrowed(body),
    }
}

/// What `ended/<session>` says: the run whose end the server has, and the session's delivered
/// line count when it was posted (`None` in a marker written by an older kcap).
fn read_marker(home: &Path, session: SessionId) -> Option<(RunId, Option<u64>)> {
    let text = std::fs::read_to_string(end_file(home, session)).ok()?;
    let mut fields = text.split_whitespace();
    let run = fields.next()?.parse().ok()?;
    let lines = match fields.next() {
        Some(n) => Some(n.parse().ok()?),
        None => None,
    };
    Some((run, lines))
}

/// Whether the server already has `run`'s end and no line of the session was delivered since
/// (`delivered`: the session's delivered line count now, `None` if unknown). An end that comes
/// after lines delivered since is a new end: the run went on after its end was posted. Call
/// under the session's watcher lock.
///
/// Lines count only for the current run: after a later run started, the lines delivered since
/// are that run's, and an end of an earlier run is a repeat if that run's end (or a later
/// run's: a session's ends are posted in order) is on the server.
pub fn end_posted(home: &Path, session: SessionId, run: RunId, delivered: Option<u64>) -> bool {
    match read_marker(home, session) {
        Some((ended, _)) if ended > run => true,
        Some((ended, at)) if ended == run => match (at, delivered) {
            (Some(at), Some(now)) if run == current(home, session) => at == now,
            // An earlier run, an older marker, or a store that cannot say: one end per run.
            _ => true,
        },
        _ => false,
    }
}

/// Remembers that the server has `run`'s end, posted with `delivered` of the session's lines
/// delivered. Call under the session's watcher lock.
pub fn mark_end_posted(home: &Path, session: SessionId, run: RunId, delivered: Option<u64>) {
    let text = match delivered {
        Some(n) => format!("{run} {n}"),
        None => run.to_string(),
    };
    if let Err(e) = write_text(&end_file(home, session), &text) {
        tracing::warn!(%session, run, error = %e, "cannot remember that the run's end was posted; a repeated end may follow");
    }
}

/// Sessions with a run or end file last written more than `keep` ago.
pub fn stale(home: &Path, keep: Duration) -> Vec<SessionId> {
    let mut out = Vec::new();
    for dir in ["runs", "ended"] {
        let Ok(entries) = std::fs::read_dir(home.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let old = older_than(&entry.path(), keep);
            let session = entry.file_name().to_str().and_then(|n| n.parse().ok());
            if let (true, Some(session)) = (old, session) {
                if !out.contains(&session) {
                    out.push(session);
                }
            }
        }
    }
    out
}

/// Forgets a session's run and end files that are older than `keep`. The caller holds the
/// session's watcher lock (so no watcher runs and no end is being posted) and has checked that
/// no end of it is queued.
pub fn forget(home: &Path, session: SessionId, keep: Duration) {
    for path in [run_file(home, session), end_file(home, session)] {
        if !older_than(&path, keep) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(%session, path = %path.display(), "expired"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(%session, error = %e, "cannot expire the run record"),
        }
    }
}

fn older_than(path: &Path, keep: Duration) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > keep)
}

/// Forgets the run and end files of sessions last touched more than `keep` ago (the sweep's
/// job), so `runs/` and `ended/` do not grow for ever. A session is left alone while its
/// watcher lock is held (it runs, or its end is being posted) or a notice of it is queued (a
/// repeated end must still find the marker that drops it). Returns how many were expired.
pub fn expire(store: &crate::store::Store, keep: Duration) -> usize {
    let home = store.home();
    let mut expired = 0;
    for session in stale(home, keep) {
        // Under the lock: a marker is only read or written under it, so none is in use.
        let Ok(Some(_lock)) =
            crate::effects::watcher::claim_as(home, session, crate::effects::watcher::Role::Drain)
        else {
            continue;
        };
        match store.pending_notices(Some(session)) {
            Ok(pending) if pending.is_empty() => {}
            _ => continue,
        }
        forget(home, session, keep);
        expired += 1;
    }
    expired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_is_a_repeat_only_with_no_line_delivered_since() {
        let home = tempfile::tempdir().unwrap();
        let (h, s) = (home.path(), SessionId::new_random());
        write_text(&run_file(h, s), "7").unwrap();
        assert!(!end_posted(h, s, 7, Some(20)));
        mark_end_posted(h, s, 7, Some(20));
        assert!(end_posted(h, s, 7, Some(20)));
        assert!(!end_posted(h, s, 7, Some(25)), "lines came after the end");
        assert!(!end_posted(h, s, 8, Some(20)), "another run");
        assert!(
            end_posted(h, s, 7, None),
            "an unknown count keeps one end per run"
        );
        // A marker an older kcap wrote: a bare run.
        std::fs::write(end_file(h, s), "7").unwrap();
        assert!(end_posted(h, s, 7, Some(25)));
        std::fs::write(end_file(h, s), "7 x").unwrap();
        assert!(!end_posted(h, s, 7, Some(25)), "a torn marker is no marker");
        // Run 8 started: lines since are its own, not a reason to post run 7's end again.
        mark_end_posted(h, s, 7, Some(20));
        write_text(&run_file(h, s), "8 7").unwrap();
        assert!(end_posted(h, s, 7, Some(25)));
        assert!(!end_posted(h, s, 8, Some(25)));
        mark_end_posted(h, s, 8, Some(25));
        assert!(
            end_posted(h, s, 7, Some(25)),
            "a later run's end is on the server"
        );
    }

    #[test]
    fn a_hook_stamped_before_the_current_run_started_belongs_to_the_previous_run() {
        let home = tempfile::tempdir().unwrap();
        let (h, s) = (home.path(), SessionId::new_random());
        assert_eq!(at_time(h, s, Some(5)), 0);
        let first = start(h, s);
        let second = start(h, s);
        assert!(second > first);
        assert_eq!(current(h, s), second);
        assert_eq!(at_time(h, s, Some(second - 1)), first);
        assert_eq!(at_time(h, s, Some(second)), second);
        assert_eq!(at_time(h, s, None), second);
        // A file from an older kcap: the current run only.
        write_text(&run_file(h, s), "9").unwrap();
        assert_eq!((current(h, s), at_time(h, s, Some(1))), (9, 0));
    }
}
