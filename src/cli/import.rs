//! `kcap import`: delivers every transcript in an agent's sessions directory, with the same
//! ids and watermarks as live capture, so importing after live capture adds nothing. A failed
//! delivery is retried with the live path's backoff (doubling from `retry_initial_ms` to
//! `retry_max_ms`) until `delivery_budget_ms` passes without progress; `--dry-run` sends nothing
//! and says what would go.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::agent::Agent;
use crate::effects::interpreter::Delivery;
use crate::effects::watcher::Watcher;
use crate::ids::SessionId;
use crate::machine::Timings;
use crate::store::Store;

/// What `kcap import` was asked to do.
#[derive(Debug, Clone)]
pub struct ImportArgs {
    /// Only this session.
    pub only: Option<SessionId>,
    /// Only transcripts modified at or after this time.
    pub since: Option<Since>,
    /// Send nothing; count what would be sent.
    pub dry_run: bool,
    /// Backoff and budget of the retries (the live path's).
    pub retry: Timings,
}

/// `--since`: a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since(pub SystemTime);

/// Parses `--since`: `2026-11-01`, `2026-11-01T09:00:00Z` (RFC 3339), or an age such as `7d`,
/// `12h`, `90min` (that long before now).
pub fn parse_since(text: &str) -> Result<Since, String> {
    let text = text.trim();
    if let Ok(age) = humantime::parse_duration(text) {
        return SystemTime::now()
            .checked_sub(age)
            .map(Since)
            .ok_or_else(|| format!("{text:?} reaches before the epoch"));
    }
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339_weak(&full).map(Since).map_err(|_| {
        format!("{text:?} is not a date (2026-11-01), an RFC 3339 time (2026-11-01T09:00:00Z) or an age (7d, 12h)")
    })
}

/// What an import did (or, with `--dry-run`, would do).
#[derive(Debug, Default)]
pub struct Summary {
    /// Sessions looked at.
    pub sessions: usize,
    /// Lines sent (with `--dry-run`: that would be sent).
    pub lines_sent: u64,
    /// Lines the server had not seen.
    pub new: u64,
    /// Lines the server already held.
    pub duplicates: u64,
    /// Lines whose number the server already held with other content (kept aside there, the
    /// stored line untouched): the transcript was rewritten since it was first delivered.
    pub conflicts: u64,
    /// With `--dry-run`: bytes of line content that would be sent, after redaction.
    pub bytes: u64,
    /// With `--dry-run`: lines in which redaction replaced something.
    pub redacted_lines: u64,
    /// Delivery retries after a failure.
    pub retries: u64,
    /// True for a dry run.
    pub dry_run: bool,
    /// Sessions that could not be delivered, with why.
    pub failures: Vec<String>,
    /// Directories that are not sessions, or transcripts left out, with why.
    pub skipped: Vec<String>,
}

/// A transcript to import: its session, path and size.
type Found = (SessionId, std::path::PathBuf, u64);

mod dry_run;

/// `agent`'s transcripts under `home` (or just `only`'s), and the directory names that are not
/// session ids (never turned into paths to read).
fn find(
    agent: &dyn Agent,
    home: &Path,
    only: Option<SessionId>,
) -> Result<(Vec<Found>, Vec<String>), String> {
    let root = agent.sessions_dir(home);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        // The agent installed but never run: nothing to import, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && home.is_dir() => {
            return Ok((Vec::new(), vec![format!("{}: no sessions yet", root.display())]))
        }
        Err(e) => return Err(format!("cannot list {}: {e}", root.display())),
    };
    let (mut found, mut skipped) = (Vec::new(), Vec::new());
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(session) = name.parse::<SessionId>() else {
            skipped.push(format!("{name}: not a session id"));
            continue;
        };
        if only.is_some_and(|o| o != session) {
            continue;
        }
        let path = agent.transcript_path(home, session);
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => found.push((session, path.clone(), m.len())),
            Ok(_) => skipped.push(format!("{name}: {file} is not a file")),
            Err(_) => skipped.push(format!("{name}: no {file}")),
        }
    }
    found.sort_by(|a, b| a.1.cmp(&b.1));
    Ok((found, skipped))
}

/// Leaves out transcripts last written before `since`.
fn filter_since(found: Vec<Found>, since: Option<Since>, skipped: &mut Vec<String>) -> Vec<Found> {
    let Some(Since(since)) = since else {
        return found;
    };
    let mut older = 0;
    let kept: Vec<Found> = found
        .into_iter()
        .filter(|(_, path, _)| {
            let recent = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since);
            older += usize::from(!recent);
            recent
        })
        .collect();
    if older > 0 {
        skipped.push(format!("{older} sessions last written before --since"));
    }
    kept
}

/// Delivers (or counts, with `args.dry_run`) every transcript found.
pub async fn import(
    store: &Store,
    delivery: &Delivery,
    agent: &dyn Agent,
    home: &Path,
    args: &ImportArgs,
) -> Result<Summary, String> {
    let only = args.only;
    let (found, mut skipped) = find(agent, home, only)?;
    let found = filter_since(found, args.since, &mut skipped);
    if let Some(sid) = only.filter(|_| found.is_empty()) {
        return Err(format!(
            "no transcript for session {sid} under {}",
            home.display()
        ));
    }
    let total: u64 = found.iter().map(|(_, _, len)| len).sum();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {pos:>0} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut summary = Summary {
        skipped,
        dry_run: args.dry_run,
        ..Summary::default()
    };
    // Set once a session gave up on a server that stopped answering: the next sessions would
    // each wait out the same budget (two minutes apiece by default) for the same reason.
    let mut server_gone: Option<String> = None;
    for (session, path, len) in found {
        summary.sessions += 1;
        if let Some(why) = &server_gone {
            summary.failures.push(format!(
                "{session}: not tried, the server stopped answering ({why})"
            ));
            report(&bar, len, format!("{session}: not tried"));
            continue;
        }
        if args.dry_run {
            let line = match dry_run::count(store, session, &path, writer_is_gone(&path)) {
                Ok(c) => {
                    summary.lines_sent += c.lines;
                    summary.bytes += c.bytes;
                    summary.redacted_lines += c.redacted_lines;
                    format!(
                        "{session}: would send {} lines, {} bytes, {} with secrets redacted",
                        c.lines, c.bytes, c.redacted_lines
                    )
                }
                Err(e) => {
                    summary.failures.push(format!("{session}: {e}"));
                    format!("{session}: FAILED: {e}")
                }
            };
            report(&bar, len, line);
            continue;
        }
        let watcher = Watcher {
            store: store.clone(),
            session,
            transcript: path,
            delivery: delivery.clone(),
            poll: Duration::ZERO,
        };
        let result = deliver_with_retries(&watcher, &args.retry, &mut summary.retries, &bar).await;
        let line = match &result {
            Ok(stats) => {
                summary.lines_sent += stats.lines;
                summary.new += stats.new;
                summary.duplicates += stats.duplicates;
                summary.conflicts += stats.conflicts;
                format!(
                    "{session}: {} lines sent, {} new, {} duplicate{}",
                    stats.lines,
                    stats.new,
                    stats.duplicates,
                    conflicts_note(stats.conflicts)
                )
            }
            Err(GiveUp {
                error,
                server_gone: gone,
            }) => {
                if *gone {
                    server_gone = Some(short_reason(error));
                }
                summary.failures.push(format!("{session}: {error}"));
                format!("{session}: FAILED: {error}")
            }
        };
        report(&bar, len, line);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(summary)
}

/// One session's line: on the bar, or on stderr without a terminal.
fn report(bar: &Option<indicatif::ProgressBar>, len: u64, line: String) {
    match bar {
        Some(bar) => {
            bar.inc(len);
            bar.set_message(line);
        }
        None => eprintln!("{line}"),
    }
}

/// A failure worth another try: transport errors, timeouts, 5xx, 408 and 429, as live delivery
/// retries them. A transcript that cannot be read, or another 4xx, will fail the same way again.
fn retryable(error: &str) -> bool {
    // A refused transcript (a symlink, a FIFO, …) stays refused however long we wait: waiting
    // the whole budget on it, and then calling the server gone, helps nobody.
    if error.starts_with("cannot read the transcript") || error.starts_with(crate::effects::open::REFUSED) {
        return false;
    }
    match error.find("HTTP ").and_then(|i| error[i + 5..].get(..3)) {
        Some(code) => matches!(code, "408" | "429") || code.starts_with('5'),
        None => true,
    }
}

/// Why one session's delivery stopped.
#[derive(Debug)]
struct GiveUp {
    error: String,
    /// The failure was one worth retrying and the budget ran out: the server is down, hanging
    /// or failing, and the sessions after this one would fare no better.
    server_gone: bool,
}

/// The first part of a delivery error, for the sessions that are then not tried.
fn short_reason(error: &str) -> String {
    error.split(" (gave up").next().unwrap_or(error).to_string()
}

/// `deliver_once` again after each retryable failure, with the live path's backoff, until it
/// succeeds or `delivery_budget_ms` passes without a line delivered. Each try resumes from the
/// watermark the last one left, so a retry never resends what was acknowledged.
async fn deliver_with_retries(
    watcher: &Watcher,
    timings: &Timings,
    retries: &mut u64,
    bar: &Option<indicatif::ProgressBar>,
) -> Result<crate::effects::watcher::WatchStats, GiveUp> {
    let take_unterminated = writer_is_gone(&watcher.transcript);
    let mut total = crate::effects::watcher::WatchStats::default();
    let mut backoff = Duration::from_millis(timings.retry_initial_ms.max(1));
    let budget = Duration::from_millis(timings.delivery_budget_ms);
    let mut last_progress = Instant::now();
    let mut position = watcher.store.watermark(watcher.session).ok().flatten();
    loop {
        match watcher.deliver_once(take_unterminated).await {
            Ok(stats) => {
                total.lines += stats.lines;
                total.new += stats.new;
                total.duplicates += stats.duplicates;
                total.conflicts += stats.conflicts;
                return Ok(total);
            }
            Err(e) if retryable(&e) => {
                let now = watcher.store.watermark(watcher.session).ok().flatten();
                if now != position {
                    position = now;
                    last_progress = Instant::now();
                    backoff = Duration::from_millis(timings.retry_initial_ms.max(1));
                }
                if last_progress.elapsed() + backoff > budget {
                    return Err(GiveUp {
                        error: format!(
                            "{e} (gave up after {} s without progress; run `kcap import` again later)",
                            budget.as_secs()
                        ),
                        server_gone: true,
                    });
                }
                *retries += 1;
                let note = format!("{}: {e}; retrying in {} ms", watcher.session, backoff.as_millis());
                match bar {
                    Some(bar) => bar.set_message(note),
                    None => eprintln!("{note}"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(timings.retry_max_ms.max(1)));
            }
            Err(error) => {
                return Err(GiveUp {
                    error,
                    server_gone: false,
                })
            }
        }
    }
}

/// A transcript untouched for longer than the finalizer waits for a shutdown has no writer left:
/// its last line, even without a newline (a killed writer), is as complete as it will get, and
/// is delivered like the finalizer delivers it at its budget. A live one's is left for its writer.
fn writer_is_gone(transcript: &Path) -> bool {
    let settled = Duration::from_millis(crate::machine::Timings::default().shutdown_budget_ms);
    std::fs::metadata(transcript)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|idle| idle > settled)
}

/// ", N conflicting …" when the server reported conflicts, else nothing.
fn conflicts_note(conflicts: u64) -> String {
    if conflicts == 0 {
        return String::new();
    }
    format!(
        ", {conflicts} conflicting (the server holds other content under those line numbers and kept these aside; \
         was the transcript rewritten?)"
    )
}

/// The summary printed at the end.
pub fn describe(s: &Summary) -> String {
    let mut out = if s.dry_run {
        format!(
            "dry run, nothing sent: {} sessions, {} lines, {} bytes would be sent; {} lines with secrets redacted\n",
            s.sessions, s.lines_sent, s.bytes, s.redacted_lines
        )
    } else {
        format!(
            "imported {} sessions: {} lines sent, {} new, {} already on the server{}, {} failed{}\n",
            s.sessions,
            s.lines_sent,
            s.new,
            s.duplicates,
            conflicts_note(s.conflicts),
            s.failures.len(),
            if s.retries > 0 {
                format!(" ({} retries)", s.retries)
            } else {
                String::new()
            }
        )
    };
    for f in &s.failures {
        out.push_str(&format!("  failed  {f}\n"));
    }
    for k in &s.skipped {
        out.push_str(&format!("  skipped {k}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_what_live_delivery_retries() {
        assert!(retryable("connection failed: tcp connect error"));
        assert!(retryable("HTTP 503: busy"));
        assert!(retryable("HTTP 429: slow down"));
        assert!(!retryable("HTTP 401: unauthorized"));
        assert!(!retryable("HTTP 400: bad batch"));
        assert!(!retryable("cannot read the transcript: permission denied"));
    }

    #[test]
    fn since_takes_dates_times_and_ages() {
        let day = parse_since("2026-11-01").unwrap();
        let time = parse_since("2026-11-01T00:00:00Z").unwrap();
        assert_eq!(day, time);
        let week = parse_since("7d").unwrap().0;
        let age = SystemTime::now().duration_since(week).unwrap();
        assert!(age >= Duration::from_secs(7 * 86_400 - 5) && age <= Duration::from_secs(7 * 86_400 + 5));
        assert!(parse_since("yesterday").unwrap_err().contains("not a date"));
    }
}
