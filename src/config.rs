//! Where kcap keeps its files and how it reads the clock (DESIGN.md §7).

use std::path::{Path, PathBuf};

use crate::ids::SessionId;
use crate::machine::Millis;

/// Root of kcap's own files: `$KCAP_HOME`, else `$XDG_DATA_HOME/kcap`, else `~/.local/share/kcap`.
pub fn kcap_home() -> PathBuf {
    if let Some(dir) = non_empty_env("KCAP_HOME") {
        return dir.into();
    }
    if let Some(dir) = non_empty_env("XDG_DATA_HOME") {
        return Path::new(&dir).join("kcap");
    }
    home_dir().join(".local/share/kcap")
}

/// Copilot's root: `$COPILOT_HOME`, else `~/.copilot`.
pub fn copilot_home() -> PathBuf {
    non_empty_env("COPILOT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join(".copilot"))
}

/// `$COPILOT_HOME/session-state/<id>/events.jsonl`. The id is a parsed UUID, so the path cannot
/// leave the session-state directory.
pub fn transcript_path(copilot_home: &Path, session: SessionId) -> PathBuf {
    copilot_home
        .join("session-state")
        .join(session.dashed())
        .join("events.jsonl")
}

pub fn session_log_path(kcap_home: &Path, session: SessionId) -> PathBuf {
    kcap_home.join("logs").join(format!("{}.log", session.dashed()))
}

fn home_dir() -> PathBuf {
    non_empty_env("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Wall-clock time in epoch milliseconds; the only clock the interpreter reads.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
