//! Session runs: a session runs once from its sessionStart to its sessionEnd, and again each
//! time it is resumed. The server gets one end per run, so what kcap remembers is keyed by the
//! run, not the session: a late hook of one run never clears or replaces what another run did.
//!
//! A run is named by when its sessionStart hook ran (epoch ms; 0 for a run whose start kcap
//! never saw, e.g. kcap installed mid-session). `runs/<session>` holds the current run;
//! `run-ends/<session>` the run whose end the server has, and how many of the session's lines were
//! delivered when it was posted. A run that goes on after its end was posted (the watcher's
//! idle hand-off, then the user came back in the same agent process; a resume whose
//! sessionStart was missed; an agent run once per prompt (`-p`), one sessionEnd per turn) has
//! delivered lines since: its next end is a new end, posted after them. The end marker is read
//! and written only under the session's watcher lock (which every end poster holds), so two
//! posters never both see "not posted".

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
    home.join("run-ends").join(session.dashed())
}

/// The end marker of kcap before session runs: it exists from a session's posted end until the
/// session runs again (sessionStart or agentStop), and a session-end is dropped while it
/// exists. It is kept that way (written with each posted end, removed when the session runs
/// again) so that a rolled-back kcap neither drops a real end nor posts a repeat; it is never
/// read here: what it says has no run, and in doubt an end goes.
fn legacy_end_file(home: &Path, session: SessionId) -> PathBuf {
    home.join("ended").join(session.dashed())
}

/// The session runs again (a sessionStart, or an agentStop: a turn after an idle hand-off):
/// removes the older kcap's end marker, as that kcap did, so it would post the next end.
pub fn runs_again(home: &Path, session: SessionId) {
    match std::fs::remove_file(legacy_end_file(home, session)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(%session, error = %e, "cannot clear the older end marker"),
    }
}

/// Writes `text` in full to a file of its own, then renames it over `path`: a reader sees the
/// old value or the new one, never a torn one.
fn write_text(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path))
}

/// What `runs/<session>` says: the current run, the one before it (0 if none or unknown), and
/// the sessionStart payload stamps of both as the agent wrote them (`None` if it had none, or
/// the file predates it). The file is `<run> <previous>[ <stamp>]`, then on a line of its own
/// the previous run's stamp, if kept (a JSON stamp has no raw newline).
struct Runs {
    current: RunId,
    previous: RunId,
    start_stamp: Option<serde_json::Value>,
    previous_stamp: Option<serde_json::Value>,
}

/// The largest plausible run name: epoch ms with 13 digits (until the year 2286). A fixed bound,
/// not one relative to the machine's clock: a clock stepped back by days must not turn the
/// current run into garbage, and a garbled number must not pass once the clock moves on.
const MAX_RUN: RunId = 9_999_999_999_999;

fn read_runs(home: &Path, session: SessionId) -> Runs {
    let text = std::fs::read_to_string(run_file(home, session)).unwrap_or_default();
    let mut lines = text.trim().splitn(2, '\n');
    let mut fields = lines.next().unwrap_or_default().trim().splitn(3, ' ');
    let mut number = || fields.next().and_then(|f| f.parse::<RunId>().ok()).unwrap_or(0);
    let (current, previous) = (number(), number());
    let start_stamp = fields.next().and_then(|f| serde_json::from_str(f).ok());
    let previous_stamp = lines.next().and_then(|f| serde_json::from_str(f.trim()).ok());
    // Runs are named in epoch ms: a larger number is a garbled file, not a run; start afresh
    // rather than number every later run after it.
    if current > MAX_RUN {
        tracing::warn!(%session, current, "the session's run record is garbled; starting afresh");
        return Runs {
            current: 0,
            previous: 0,
            start_stamp: None,
            previous_stamp: None,
        };
    }
    Runs {
        current,
        previous: previous.min(current),
        start_stamp,
        previous_stamp,
    }
}

/// The session's current run (0 if its start was never seen or cannot be read).
pub fn current(home: &Path, session: SessionId) -> RunId {
    read_runs(home, session).current
}

/// The run a hook whose payload the agent stamped `stamp` belongs to: the current run, or the
/// one before it if the agent stamped it before it stamped the current run's sessionStart and
/// at or after it stamped the previous run's (a delayed or repeated sessionEnd of the previous
/// run, arriving after the next run's start).
///
/// Only the agent's own stamps are compared, never the machine's clock: the agent may count
/// in seconds, write a zone-less local time, or run on a clock that steps. When the stamps
/// cannot be compared for sure, the hook is the current run's: a real end is never taken for
/// a repeat of the previous one (a repeated end posted twice is harmless). So an end stamped
/// before the current run's start is the previous run's only when that run is known and its
/// own start stamp is kept and not later: after the clock stepped back, an end stamped before
/// every start is the current run's, whose watcher it stops.
pub fn at_stamp(home: &Path, session: SessionId, stamp: Option<&serde_json::Value>) -> RunId {
    let runs = read_runs(home, session);
    let Some(end) = stamp else {
        return runs.current;
    };
    // The current run is named by the machine's clock at its start: a clock now behind it has
    // stepped back since, and the agent's stamps (likely from the same clock) cannot place a
    // hook stamped after the step between two starts stamped before it. A second's slack:
    // starts within one millisecond name their runs one apart, ahead of the clock (a smaller
    // step is left to `end_posted`'s line count). A hook stamped ahead of the clock now was
    // stamped before the step, like the starts: its stamp still places it (a delayed end of
    // the previous run is not the current run's for as long as the step lasts).
    let now = now_ms();
    if now.saturating_add(STEP_SLACK_MS) < runs.current
        && epoch_ms(end).is_none_or(|at| at <= now.saturating_add(STEP_SLACK_MS))
    {
        return runs.current;
    }
    let before_current = runs
        .start_stamp
        .as_ref()
        .and_then(|start| stamped_before(end, start));
    let since_previous = runs
        .previous_stamp
        .as_ref()
        .and_then(|start| stamped_before(end, start))
        .map(|before| !before);
    match (before_current, since_previous) {
        (Some(true), Some(true)) if runs.current > 0 && runs.previous > 0 => runs.previous,
        _ => runs.current,
    }
}

/// How far the machine's clock may be behind the current run's name before [`at_stamp`] takes
/// it for a clock that stepped back.
const STEP_SLACK_MS: u64 = 1000;

/// A payload stamp as epoch ms, when it surely is one: a 13-digit number (ms), a 10-digit one
/// (s), or an RFC 3339 time with `Z`. `None` otherwise (a zone-less time is in no known zone).
fn epoch_ms(stamp: &serde_json::Value) -> Option<u64> {
    match stamp {
        serde_json::Value::Number(n) => {
            let n = n.as_u64()?;
            match n.checked_ilog10()? {
                12 => Some(n),
                9 => Some(n * 1000),
                _ => None,
            }
        }
        serde_json::Value::String(text) => match iso_time(text)? {
            (time, true) => time
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64),
            (_, false) => None,
        },
        _ => None,
    }
}

/// A payload stamp longer than this is not a time: it is not kept.
const STAMP_LIMIT: usize = 64;

/// Whether `a` was stamped strictly before `b`, both by the agent in one format: two epoch
/// numbers of the same magnitude (seconds are never compared with milliseconds), or two
/// RFC 3339 strings of the same shape (both with `Z` or both without: read alike, a zone-less
/// pair compares right whatever zone it was written in). `None` when that cannot be told.
pub fn stamped_before(a: &serde_json::Value, b: &serde_json::Value) -> Option<bool> {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_u64()?, b.as_u64()?);
            (a.checked_ilog10() == b.checked_ilog10()).then_some(a < b)
        }
        (Value::String(a), Value::String(b)) => {
            let ((a, a_zoned), (b, b_zoned)) = (iso_time(a)?, iso_time(b)?);
            (a_zoned == b_zoned).then_some(a < b)
        }
        _ => None,
    }
}

/// An RFC 3339 time (`Z` or no zone; an offset is not read), and whether it had the `Z`.
fn iso_time(text: &str) -> Option<(std::time::SystemTime, bool)> {
    if text.len() > STAMP_LIMIT {
        return None;
    }
    let bare = text.strip_suffix(['Z', 'z']);
    let time = humantime::parse_rfc3339_weak(bare.unwrap_or(text)).ok()?;
    Some((time, bare.is_some()))
}

/// A sessionStart whose payload the agent stamped `stamp`: a new run begins; its end is a new
/// end. Returns the run.
pub fn start(home: &Path, session: SessionId, stamp: Option<&serde_json::Value>) -> RunId {
    let Runs {
        current: previous,
        start_stamp: previous_stamp,
        ..
    } = read_runs(home, session);
    // Never equal to the run it follows, even for two starts in one millisecond, or after the
    // machine's clock stepped back: runs are ordered by their names.
    let run = now_ms().max(previous.saturating_add(1));
    runs_again(home, session);
    let stamp = stamp
        .filter(|s| s.is_number() || s.as_str().is_some_and(|t| t.len() <= STAMP_LIMIT))
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    let previous_stamp = previous_stamp.map(|s| format!("\n{s}")).unwrap_or_default();
    let text = format!("{run} {previous}{stamp}{previous_stamp}");
    match write_text(&run_file(home, session), &text) {
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

/// Who sent a session-end: the agent's sessionEnd hook (the run's real end, with its reason),
/// or kcap's own watcher (an interim end: `idle`, `agent_exited`, `stopped`), which the run's
/// real end may still follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndFrom {
    Hook,
    Watcher,
}

/// The `source` a watcher's hand-off end carries (on the wire too).
pub const WATCHER_SOURCE: &str = "kcap-watcher";

impl EndFrom {
    /// Of a session-end's body: a watcher's says so in its `source`; anything else (a hook's
    /// payload, an end queued by an older kcap) is taken for the real end, as before.
    pub fn of_body(body: &serde_json::Value) -> EndFrom {
        match body.get("source").and_then(|v| v.as_str()) {
            Some(WATCHER_SOURCE) => EndFrom::Watcher,
            _ => EndFrom::Hook,
        }
    }
}

/// The run-ends marker's third field for an end from the watcher. An older kcap reads the first
/// two fields only; a marker without it is a real end's, as that kcap meant it.
const WATCHER_MARK: &str = "watcher";

/// What `run-ends/<session>` says: the run whose end the server has, the session's delivered
/// line count when it was posted (`None` in a marker written by an older kcap, or `-`), and
/// who sent that end.
fn read_marker(home: &Path, session: SessionId) -> Option<(RunId, Option<u64>, EndFrom)> {
    let text = std::fs::read_to_string(end_file(home, session)).ok()?;
    let mut fields = text.split_whitespace();
    let run = fields.next()?.parse().ok()?;
    let lines = match fields.next() {
        Some("-") => None,
        Some(n) => Some(n.parse().ok()?),
        None => None,
    };
    let from = match fields.next() {
        Some(WATCHER_MARK) => EndFrom::Watcher,
        _ => EndFrom::Hook,
    };
    Some((run, lines, from))
}

/// Whether the server already has `run`'s end and no line of the session was delivered since
/// (`delivered`: the session's delivered line count now, `None` if unknown). An end that comes
/// after lines delivered since is a new end: the run went on after its end was posted (an idle
/// hand-off, then the user came back). Call under the session's watcher lock.
///
/// Whether a later run has started meanwhile does not matter: a run's real end, queued before
/// the next run started and posted after, must not be taken for a repeat because of it. Lines
/// of the later run do count, so a late repeat of an earlier run's end after them is posted
/// again: in doubt the end goes (a second end of one run is harmless; a lost one is not). An
/// earlier run's end after a later run's is on the server is a repeat (a session's ends are
/// posted in order) only if no line was delivered since that later end: the stamps that named
/// the earlier run may be wrong after the clock stepped. An end of run 0 (no run known) is never taken for an earlier run's.
///
/// An end from the agent's hook after one from kcap's watcher is never a repeat: the watcher's
/// was interim (its reason `idle` or `stopped`), and the server should end with the real one.
pub fn end_posted(
    home: &Path,
    session: SessionId,
    run: RunId,
    delivered: Option<u64>,
    from: EndFrom,
) -> bool {
    // A marker of a run later than the current one names no run that started: a garbled file.
    // Trusted, it would make every later end a repeat; in doubt the end goes.
    let marker = read_marker(home, session)
        .filter(|&(ended, _, _)| ended <= current(home, session))
        // A real end is never a repeat of its own run's interim end; a watcher's end of a later
        // run still makes an earlier run's late end a repeat.
        .filter(|&(ended, _, posted)| {
            !(posted == EndFrom::Watcher && from == EndFrom::Hook && (ended == run || run == 0))
        })
        .map(|(ended, at, _)| (ended, at));
    match marker {
        // Run 0 is "not known" (a start never seen, a run file lost): it may be any run, so a
        // marker of a later one says nothing about it.
        // A later run's end is on the server: this one's is a repeat, unless lines were
        // delivered since that end (this run went on, e.g. its watcher's idle hand-off was
        // the later-named run's and the clock stepped): then in doubt the end goes.
        Some((ended, at)) if run > 0 && ended > run => match (at, delivered) {
            (Some(at), Some(now)) => at == now,
            (None, _) => true,
            (Some(_), None) => false,
        },
        Some((ended, at)) if ended == run => match (at, delivered) {
            (Some(at), Some(now)) => at == now,
            // A marker without a count (an older kcap's): one end per run.
            (None, _) => true,
            // The store cannot say whether lines came since: in doubt, the end goes.
            (Some(_), None) => false,
        },
        _ => false,
    }
}

/// Remembers that the server has `run`'s end from `from`, posted with `delivered` of the
/// session's lines delivered. Call under the session's watcher lock.
pub fn mark_end_posted(home: &Path, session: SessionId, run: RunId, delivered: Option<u64>, from: EndFrom) {
    let text = match (delivered, from) {
        (Some(n), EndFrom::Hook) => format!("{run} {n}"),
        (None, EndFrom::Hook) => run.to_string(),
        (Some(n), EndFrom::Watcher) => format!("{run} {n} {WATCHER_MARK}"),
        (None, EndFrom::Watcher) => format!("{run} - {WATCHER_MARK}"),
    };
    if let Err(e) = write_text(&end_file(home, session), &text) {
        tracing::warn!(%session, run, error = %e, "cannot remember that the run's end was posted; a repeated end may follow");
    }
    // As the older kcap wrote it (its content is not read).
    let _ = write_text(&legacy_end_file(home, session), &now_ms().to_string());
}

/// Sessions whose run and end files were all last written more than `keep` ago. A session's
/// files go together: a session open for weeks has its end marker rewritten at each idle
/// hand-off while its run file was written only at its start; forgetting the run file alone
/// would make its next end run 0's, taken for a repeat of the run the marker names.
pub fn stale(home: &Path, keep: Duration) -> Vec<SessionId> {
    let mut out = Vec::new();
    for dir in ["runs", "run-ends", "ended"] {
        let Ok(entries) = std::fs::read_dir(home.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let session = entry.file_name().to_str().and_then(|n| n.parse().ok());
            if let Some(session) = session {
                if !out.contains(&session) && all_older_than(home, session, keep) {
                    out.push(session);
                }
            }
        }
    }
    out
}

fn files(home: &Path, session: SessionId) -> [PathBuf; 3] {
    [
        run_file(home, session),
        end_file(home, session),
        legacy_end_file(home, session),
    ]
}

/// Whether every run or end file the session has was last written more than `keep` ago (a
/// missing file counts as old; a file written "in the future", after the clock stepped back,
/// as recent).
fn all_older_than(home: &Path, session: SessionId, keep: Duration) -> bool {
    files(home, session).iter().all(
        |path| match std::fs::symlink_metadata(path).and_then(|m| m.modified()) {
            Ok(written) => written.elapsed().is_ok_and(|age| age > keep),
            Err(_) => true,
        },
    )
}

/// Forgets a session's run and end files, all of them, if the newest is older than `keep`
/// (checked again here: one may have been written since [`stale`] looked). The caller holds
/// the session's watcher lock (so no watcher runs and no end is being posted) and has checked
/// that no end of it is queued. Returns whether they were forgotten.
pub fn forget(home: &Path, session: SessionId, keep: Duration) -> bool {
    if !all_older_than(home, session, keep) {
        return false;
    }
    for path in files(home, session) {
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(%session, path = %path.display(), "expired"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(%session, error = %e, "cannot expire the run record"),
        }
    }
    true
}

/// Forgets the run and end files of sessions last touched more than `keep` ago (the sweep's
/// job), so `runs/`, `run-ends/` and `ended/` do not grow for ever. A session is left alone while its
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
        if forget(home, session, keep) {
            expired += 1;
        }
    }
    forget_temporaries(home, keep);
    expired
}

/// Removes the temporary files [`write_text`] left behind when its process died between the
/// write and the rename (`<session>.<pid>.tmp`), once older than `keep`: no writer holds one
/// for more than a moment, so an old one is nobody's.
fn forget_temporaries(home: &Path, keep: Duration) {
    for dir in ["runs", "run-ends", "ended"] {
        let Ok(entries) = std::fs::read_dir(home.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let temporary = path.extension().is_some_and(|e| e == "tmp");
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > keep);
            if !(temporary && old) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "expired a leftover temporary file"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot expire a leftover temporary file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`super::end_posted`] for the agent's real end.
    fn end_posted(h: &Path, s: SessionId, run: RunId, delivered: Option<u64>) -> bool {
        super::end_posted(h, s, run, delivered, EndFrom::Hook)
    }

    /// [`super::mark_end_posted`] for the agent's real end.
    fn mark_end_posted(h: &Path, s: SessionId, run: RunId, delivered: Option<u64>) {
        super::mark_end_posted(h, s, run, delivered, EndFrom::Hook)
    }

    /// A real end after the watcher's interim one is posted, lines or not; a watcher's end
    /// after either, with no line since, is a repeat; markers of the previous version (two
    /// fields) are read as before.
    #[test]
    fn a_real_end_after_the_watchers_end_is_never_a_repeat() {
        let home = tempfile::tempdir().unwrap();
        let (h, s) = (home.path(), SessionId::new_random());
        write_text(&run_file(h, s), "7").unwrap();
        super::mark_end_posted(h, s, 7, Some(20), EndFrom::Watcher);
        assert!(
            !super::end_posted(h, s, 7, Some(20), EndFrom::Hook),
            "the real end was dropped after a `stopped` one"
        );
        assert!(super::end_posted(h, s, 7, Some(20), EndFrom::Watcher));
        assert!(
            super::end_posted(h, s, 6, Some(20), EndFrom::Hook),
            "a late real end of an earlier run, after a later run's interim end, is a repeat"
        );
        super::mark_end_posted(h, s, 7, None, EndFrom::Watcher);
        assert!(!super::end_posted(h, s, 7, Some(20), EndFrom::Hook));
        mark_end_posted(h, s, 7, Some(20));
        assert!(end_posted(h, s, 7, Some(20)), "a repeated real end");
        assert!(super::end_posted(h, s, 7, Some(20), EndFrom::Watcher));
        std::fs::write(end_file(h, s), "7 20").unwrap();
        assert!(end_posted(h, s, 7, Some(20)), "the previous version's marker");
    }

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
            !end_posted(h, s, 7, None),
            "a store that cannot count lets the end go"
        );
        // A marker an older kcap wrote: a bare run.
        std::fs::write(end_file(h, s), "7").unwrap();
        assert!(end_posted(h, s, 7, Some(25)));
        std::fs::write(end_file(h, s), "7 x").unwrap();
        assert!(!end_posted(h, s, 7, Some(25)), "a torn marker is no marker");
        // Run 8 started before run 7's real end (after lines of run 7 delivered since its
        // idle end) was posted: that end is still new.
        mark_end_posted(h, s, 7, Some(20));
        write_text(&run_file(h, s), "8 7").unwrap();
        assert!(!end_posted(h, s, 7, Some(25)), "run 7's real end was dropped");
        assert!(end_posted(h, s, 7, Some(20)), "a repeat with no line since");
        assert!(!end_posted(h, s, 8, Some(25)));
        mark_end_posted(h, s, 8, Some(25));
        assert!(
            end_posted(h, s, 7, Some(25)),
            "a later run's end is on the server"
        );
    }

    /// A garbled `runs/` file holding the largest number, or one far in the future, must not
    /// make the next start panic (`previous + 1`) or name runs after it; a garbled huge end
    /// marker must not make every later end a repeat.
    #[test]
    fn garbled_huge_run_numbers_are_garbage() {
        let home = tempfile::tempdir().unwrap();
        let (h, s) = (home.path(), SessionId::new_random());
        for garbage in [u64::MAX, MAX_RUN + 1] {
            write_text(&run_file(h, s), &format!("{garbage} 5")).unwrap();
            assert_eq!(current(h, s), 0, "{garbage} is no run");
            let run = start(h, s, None);
            assert!(run <= now_ms(), "the next run is named after garbage: {run}");
        }
        let run = current(h, s);
        write_text(&end_file(h, s), &format!("{} 20", u64::MAX)).unwrap();
        assert!(
            !end_posted(h, s, run, Some(20)),
            "a garbled marker drops the real end"
        );
        // A run named before the clock stepped back, an hour or three days, is still a run:
        // the bound does not move with the clock.
        for ahead in [now_ms() + 3_600_000, now_ms() + 3 * 24 * 3_600_000] {
            write_text(&run_file(h, s), &format!("{ahead} 5")).unwrap();
            assert_eq!(current(h, s), ahead, "a run after a clock step is garbage");
            assert_eq!(start(h, s, None), ahead + 1);
        }
    }

    /// The clock stepped back an hour after run B started; run A's end, delayed, arrives now,
    /// stamped (before the step) between A's start and B's. It is A's, though the clock is
    /// still behind B's name; an end stamped after the step (behind B's start) stays B's.
    #[test]
    fn a_delayed_end_of_the_previous_run_is_its_own_while_the_clock_is_stepped_back() {
        use serde_json::json;
        let home = tempfile::tempdir().unwrap();
        let (h, s) = (home.path(), SessionId::new_random());
        let now = now_ms();
        let (a, b) = (now - 24 * 3_600_000, now + 3_600_000);
        write_text(&run_file(h, s), &format!("{b} {a} {b}\n{a}")).unwrap();
        let delayed = json!(b - 60_000);
        assert_eq!(at_stamp(h, s, Some(&delayed)), a, "A's end given to B");
        let seconds = json!((b - 60_000) / 1000);
        let iso = json!(crate::cli::status::iso_time(b - 60_000));
        for stamp in [&seconds, &iso] {
            assert_eq!(
                epoch_ms(stamp).map(|t| t / 1000),
                Some((b - 60_000) / 1000),
                "{stamp}"
            );
        }
        assert_eq!(
            at_stamp(h, s, Some(&json!(now))),
            b,
            "B's real end after the step"
        );
        assert_eq!(at_stamp(h, s, Some(&json!("a while ago"))), b);
    }

    /// Sets `path`'s modification time `age` back.
    #[track_caller]
    fn age(path: &Path, age: Duration) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age).unwrap();
    }

    /// A session open for more than a week (tmux): its run file was written at its start, its
    /// end marker at each idle hand-off since. The sweep must not forget the run alone, or the
    /// real end, labelled run 0, is dropped as a repeat of the marker's run.
    #[test]
    fn a_session_open_for_weeks_keeps_its_run_and_its_real_end() {
        let home = tempfile::tempdir().unwrap();
        let (h, s) = (home.path(), SessionId::new_random());
        let run = start(h, s, None);
        mark_end_posted(h, s, run, Some(20));
        let week = Duration::from_secs(8 * 24 * 3600);
        age(&run_file(h, s), week);
        assert!(stale(h, KEEP).is_empty(), "its end marker is recent");
        assert!(!forget(h, s, KEEP));
        assert_eq!(at_stamp(h, s, None), run, "the run was forgotten");
        assert!(!end_posted(h, s, run, Some(30)), "the real end was dropped");
        // Were the run lost anyway (unwritable, removed by hand): an end of run 0 still goes.
        std::fs::remove_file(run_file(h, s)).unwrap();
        assert!(!end_posted(h, s, at_stamp(h, s, None), Some(30)));
        // Once every file is old, all go together.
        start(h, s, None);
        for f in files(h, s).iter().filter(|f| f.exists()) {
            age(f, week);
        }
        assert_eq!(stale(h, KEEP), vec![s]);
        assert!(forget(h, s, KEEP));
        assert!(files(h, s).iter().all(|f| !f.exists()));
    }

    /// A process that died between writing a run record's temporary file and renaming it left
    /// the file behind: the sweep removes it once old, and leaves a recent one (a writer's).
    #[test]
    fn the_sweep_expires_leftover_temporary_files() {
        let home = tempfile::tempdir().unwrap();
        let (h, s) = (home.path(), SessionId::new_random());
        let store = crate::store::Store::new(h);
        start(h, s, None);
        let tmp = |dir: &str, pid: u32| h.join(dir).join(format!("{}.{pid}.tmp", s.dashed()));
        let (old, recent) = (tmp("runs", 4_000_001), tmp("runs", 4_000_002));
        std::fs::create_dir_all(h.join("run-ends")).unwrap();
        let old_end = tmp("run-ends", 4_000_003);
        for f in [&old, &recent, &old_end] {
            std::fs::write(f, "1").unwrap();
        }
        let week = Duration::from_secs(8 * 24 * 3600);
        age(&old, week);
        age(&old_end, week);
        expire(&store, KEEP);
        assert!(!old.exists() && !old_end.exists(), "a leftover stays for ever");
        assert!(recent.exists(), "a writer's temporary file was removed");
        assert!(current(h, s) > 0, "the session's recent run was expired");
    }

    #[test]
    fn a_hook_the_agent_stamped_before_the_current_runs_start_belongs_to_the_previous_run() {
        use serde_json::json;
        let home = tempfile::tempdir().unwrap();
        let (h, s) = (home.path(), SessionId::new_random());
        let at = |v: serde_json::Value| at_stamp(h, s, Some(&v));
        assert_eq!(at(json!(5)), 0);
        let first = start(h, s, Some(&json!(1_000_000)));
        let second = start(h, s, Some(&json!(2_000_000)));
        assert!(second > first);
        assert_eq!(current(h, s), second);
        assert_eq!(at(json!(1_999_999)), first);
        assert_eq!(at(json!(2_000_000)), second);
        assert_eq!(at_stamp(h, s, None), second);
        // The agent's clock, not the machine's: an agent an hour behind is still in run 2.
        let behind = start(h, s, Some(&json!(second - 3_600_000)));
        assert_eq!(at(json!(behind - 3_600_000 + 10)), behind);
        // Seconds beside milliseconds, or a number beside a string: in doubt, the current run.
        assert_eq!(at(json!(1_000)), behind, "seconds are not milliseconds");
        assert_eq!(at(json!("1970-01-01T00:00:01Z")), behind);
        // Strings: compared when shaped alike, whatever zone a zone-less pair was written in.
        let iso = start(h, s, Some(&json!("2026-11-18T11:46:40.123")));
        assert_eq!(
            at(json!("2026-11-18T11:46:40.122")),
            iso,
            "the previous run's start stamp is a number: not comparable, the current run"
        );
        assert_eq!(at(json!("2026-11-18T11:46:40.124")), iso);
        assert_eq!(at(json!("2026-11-18T06:46:40Z")), iso, "Z beside no zone");
        assert_eq!(
            at(json!("2026-11-18T12:46:40+01:00")),
            iso,
            "an offset is not read"
        );
        assert_eq!(at(json!("yesterday")), iso);
        let iso2 = start(h, s, Some(&json!("2026-11-18T11:46:41")));
        assert_eq!(at(json!("2026-11-18T11:46:40.5")), iso);
        assert_eq!(at(json!("2026-11-18T11:46:40.123")), iso);
        assert_eq!(at(json!("2026-11-18T11:46:40.122")), iso2, "before both starts");
        // A start without a stamp, or a file an older kcap wrote: the current run.
        let bare = start(h, s, None);
        assert_eq!(at(json!(1)), bare);
        write_text(&run_file(h, s), "9").unwrap();
        assert_eq!((current(h, s), at(json!(1))), (9, 9));
        // A stamp of any length never makes the file unreadable.
        let long = "x".repeat(10_000);
        let after = start(h, s, Some(&json!(long)));
        assert_eq!((current(h, s), at(json!("2026-11-18T11:46:40Z"))), (after, after));
    }

    /// The wall clock steps back after run R's idle end: R's real sessionEnd is stamped before
    /// R's own start. It is R's (its end posted, its watcher stopped), not the run before R's.
    #[test]
    fn an_end_stamped_before_every_start_is_the_current_runs() {
        use serde_json::json;
        let home = tempfile::tempdir().unwrap();
        let (h, s) = (home.path(), SessionId::new_random());
        let at = |v: serde_json::Value| at_stamp(h, s, Some(&v));
        let first = start(h, s, Some(&json!(2_000_000)));
        mark_end_posted(h, s, first, Some(20));
        assert_eq!(
            at(json!(1_000_000)),
            first,
            "no run before it: none to give it to"
        );
        assert!(
            !end_posted(h, s, at(json!(1_000_000)), Some(30)),
            "the end was dropped"
        );
        let second = start(h, s, Some(&json!(3_000_000)));
        assert_eq!(at(json!(2_500_000)), first, "a late end of the first run");
        assert_eq!(at(json!(2_000_000)), first);
        assert_eq!(at(json!(1_999_999)), second, "before the first run's start too");
        // A run file without the previous run's stamp (written by the kcap before this one).
        write_text(&run_file(h, s), &format!("{second} {first} 3000000")).unwrap();
        assert_eq!(at(json!(2_500_000)), second);
    }

    /// Run A yesterday, run B now; B's idle hand-off end is posted with 20 lines delivered, 25
    /// are by now; the clock steps back an hour, and B's real end is stamped after A's start
    /// but before B's. It is B's end, and a new one: it must not be dropped as a repeat of A's.
    #[test]
    fn a_real_end_after_the_clock_stepped_back_between_two_starts_goes() {
        use serde_json::json;
        let home = tempfile::tempdir().unwrap();
        let (h, s) = (home.path(), SessionId::new_random());
        let now = now_ms();
        let (a, b) = (now - 24 * 3_600_000, now + 3_600_000);
        write_text(&run_file(h, s), &format!("{b} {a} {b}\n{a}")).unwrap();
        mark_end_posted(h, s, b, Some(20));
        let end = json!(now);
        assert_eq!(at_stamp(h, s, Some(&end)), b, "the clock is behind run B's start");
        assert!(
            !end_posted(h, s, a, Some(25)),
            "lines came since B's marker: not a repeat"
        );
        assert!(end_posted(h, s, a, Some(20)), "no line since: a repeat");
        assert!(!end_posted(h, s, at_stamp(h, s, Some(&end)), Some(25)));
    }

    #[test]
    fn stamps_compare_only_in_one_format() {
        use serde_json::json;
        let before = |a, b| stamped_before(&a, &b);
        assert_eq!(
            before(json!(1_795_000_000_122u64), json!(1_795_000_000_123u64)),
            Some(true)
        );
        assert_eq!(
            before(json!(1_795_000_000_123u64), json!(1_795_000_000_123u64)),
            Some(false)
        );
        assert_eq!(before(json!(1_795_000_000u64), json!(1_795_000_000_123u64)), None);
        assert_eq!(before(json!(-5), json!(7)), None);
        assert_eq!(before(json!(1.5), json!(7)), None);
        assert_eq!(
            before(json!("2026-11-18T11:46:40.123Z"), json!("2026-11-18T11:46:41Z")),
            Some(true)
        );
        assert_eq!(
            before(json!("2026-11-18 11:46:40"), json!("2026-11-18T11:46:39")),
            Some(false)
        );
        assert_eq!(
            before(json!("2026-11-18T11:46:40Z"), json!(1_795_000_000_123u64)),
            None
        );
        assert_eq!(before(json!(null), json!(null)), None);
    }
}
