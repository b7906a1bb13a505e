//! Where Copilot keeps a session: `<COPILOT_HOME>/session-state/<session-id>/events.jsonl`, and
//! the `inuse.<pid>.lock` files it holds there while a process uses the session.

use std::path::Path;

use crate::ids::SessionId;
use crate::store::Holder;

/// The directory of session directories, and a transcript's file name.
pub const SESSION_STATE: &str = "session-state";
pub const TRANSCRIPT_NAME: &str = "events.jsonl";

/// The session a transcript path names, if it has the shape
/// `<anything>/session-state/<session-id>/events.jsonl` (no `.` or `..` anywhere).
pub fn session_of_path(path: &Path) -> Result<SessionId, String> {
    use std::path::Component;
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!("transcript path {} contains '.' or '..'", path.display()));
    }
    let shape = || {
        format!(
            "transcript path {} is not <COPILOT_HOME>/{SESSION_STATE}/<session-id>/{TRANSCRIPT_NAME}",
            path.display()
        )
    };
    if path.file_name().is_none_or(|n| n != TRANSCRIPT_NAME) {
        return Err(shape());
    }
    let dir = path.parent().ok_or_else(shape)?;
    let root = dir.parent().ok_or_else(shape)?;
    if root.file_name().is_none_or(|n| n != SESSION_STATE) {
        return Err(shape());
    }
    dir.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<SessionId>().ok())
        .filter(|s| dir.file_name().is_some_and(|n| n == s.dashed().as_str()))
        .ok_or_else(shape)
}

/// The live owners of `inuse.<pid>.lock` files in `session_dir` (Copilot holds one while a
/// process uses the session). A lock named after a pid that does not run, or that runs a
/// process started after the lock was written (a recycled pid), is no witness.
pub fn lock_owners(session_dir: &Path) -> Vec<Holder> {
    let Ok(entries) = std::fs::read_dir(session_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            let pid: u32 = name.strip_prefix("inuse.")?.strip_suffix(".lock")?.parse().ok()?;
            crate::effects::agent::marker_owner(pid, &e.path())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_shape_names_a_session() {
        let sid = SessionId::new_random();
        let good = format!("/h/.copilot/session-state/{}/events.jsonl", sid.dashed());
        assert_eq!(session_of_path(Path::new(&good)), Ok(sid));
        for bad in [
            format!("/h/.copilot/session-state/{}/../x/events.jsonl", sid.dashed()),
            format!("/h/.copilot/session-state/{}/other.jsonl", sid.dashed()),
            format!("/h/.copilot/elsewhere/{}/events.jsonl", sid.dashed()),
            format!("/h/.copilot/session-state/{}/events.jsonl", sid.dashless()),
            "/h/.copilot/session-state/not-a-uuid/events.jsonl".to_string(),
        ] {
            assert!(session_of_path(Path::new(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_lock_owner_that_exits_is_no_longer_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(dir.path().join(format!("inuse.{}.lock", child.id())), b"").unwrap();
        std::fs::write(dir.path().join("inuse.999999999.lock"), b"").unwrap();
        assert_eq!(
            lock_owners(dir.path()).iter().map(|h| h.pid).collect::<Vec<_>>(),
            vec![child.id()]
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(lock_owners(dir.path()).is_empty());
    }

    /// The session's process crashed and its pid went to a process started later: its lock
    /// (written before that process started) no longer keeps the session alive.
    #[test]
    fn a_lock_whose_pid_was_recycled_has_no_owner() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let lock = dir.path().join(format!("inuse.{}.lock", child.id()));
        std::fs::write(&lock, b"").unwrap();
        let file = std::fs::File::options().write(true).open(&lock).unwrap();
        file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
        assert!(lock_owners(dir.path()).is_empty(), "a recycled pid looks alive");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
