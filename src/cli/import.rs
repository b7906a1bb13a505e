//! `kcap import --copilot`: delivers every transcript under `$COPILOT_HOME/session-state/`, with
//! the same ids and watermarks as live capture, so importing after live capture adds nothing.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use crate::effects::interpreter::Delivery;
use crate::effects::watcher::Watcher;
use crate::ids::SessionId;
use crate::store::Store;

#[derive(Debug, Default)]
pub struct Summary {
    pub sessions: usize,
    pub lines_sent: u64,
    pub new: u64,
    pub duplicates: u64,
    pub failures: Vec<String>,
    pub skipped: Vec<String>,
}

/// A transcript to import: its session, path and size.
type Found = (SessionId, std::path::PathBuf, u64);

/// Transcripts under `copilot_home` (or just `only`'s), and the directory names that are not
/// session ids (never turned into paths to read).
fn find(copilot_home: &Path, only: Option<SessionId>) -> Result<(Vec<Found>, Vec<String>), String> {
    let root = copilot_home.join("session-state");
    let entries = std::fs::read_dir(&root).map_err(|e| format!("cannot list {}: {e}", root.display()))?;
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
        let path = crate::config::transcript_path(copilot_home, session);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => found.push((session, path, m.len())),
            Ok(_) => skipped.push(format!("{name}: events.jsonl is not a file")),
            Err(_) => skipped.push(format!("{name}: no events.jsonl")),
        }
    }
    found.sort_by(|a, b| a.1.cmp(&b.1));
    Ok((found, skipped))
}

pub async fn import(
    store: &Store,
    delivery: &Delivery,
    copilot_home: &Path,
    only: Option<SessionId>,
) -> Result<Summary, String> {
    let (found, skipped) = find(copilot_home, only)?;
    if let Some(sid) = only.filter(|_| found.is_empty()) {
        return Err(format!(
            "no transcript for session {sid} under {}",
            copilot_home.display()
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
        ..Summary::default()
    };
    for (session, path, len) in found {
        let watcher = Watcher {
            store: store.clone(),
            session,
            transcript: path,
            delivery: delivery.clone(),
            poll: Duration::ZERO,
        };
        let result = watcher.deliver_once(writer_is_gone(&watcher.transcript)).await;
        summary.sessions += 1;
        let line = match &result {
            Ok(stats) => {
                summary.lines_sent += stats.lines;
                summary.new += stats.new;
                summary.duplicates += stats.duplicates;
                format!(
                    "{session}: {} lines sent, {} new, {} duplicate",
                    stats.lines, stats.new, stats.duplicates
                )
            }
            Err(e) => {
                summary.failures.push(format!("{session}: {e}"));
                format!("{session}: FAILED: {e}")
            }
        };
        match &bar {
            Some(bar) => {
                bar.inc(len);
                bar.set_message(line);
            }
            None => eprintln!("{line}"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(summary)
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

pub fn describe(s: &Summary) -> String {
    let mut out = format!(
        "imported {} sessions: {} lines sent, {} new, {} already on the server, {} failed\n",
        s.sessions,
        s.lines_sent,
        s.new,
        s.duplicates,
        s.failures.len()
    );
    for f in &s.failures {
        out.push_str(&format!("  failed  {f}\n"));
    }
    for k in &s.skipped {
        out.push_str(&format!("  skipped {k}\n"));
    }
    out
}
