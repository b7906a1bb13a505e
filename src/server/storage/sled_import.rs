//! One-time import of a store written by the sled-based `kcap serve` (before SQLite): its
//! `lines`, `conflicts`, `sessions` and `shutdowns` trees, read-only, replayed through the same
//! rules as live batches, so importing twice (or into a database that already holds some of the
//! lines) keeps every line once.
//!
//! The old layout: line keys are the 16 session bytes then the big-endian line number; a value
//! is a kind byte (0 line, 1 blank), the 16-byte event id, then the text. Conflict keys add the
//! conflicting event id; session values are JSON metadata.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Backend, Batch, IncomingLine, Lifecycle, LifecycleKind, Principal, StorageError};
use crate::ids::SessionId;

#[derive(Deserialize, Default)]
struct OldMeta {
    #[serde(default)]
    first_seen: u64,
    #[serde(default)]
    started: Option<Lifecycle>,
    #[serde(default)]
    ended: Option<Lifecycle>,
    #[serde(default)]
    last_notification: Option<Lifecycle>,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub sessions: u64,
    pub lines_new: u64,
    pub lines_already_present: u64,
    pub conflicts: u64,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {} sessions from sled: {} lines new, {} already present, {} conflicting lines kept aside",
            self.sessions, self.lines_new, self.lines_already_present, self.conflicts
        )
    }
}

fn sled_err(e: sled::Error) -> StorageError {
    StorageError::Database(format!("sled: {e}"))
}

/// Opens the old store, waiting up to 10 s for its lock: the old server's I/O threads can keep
/// the file locked for a moment after it stopped, and an import started right after it must
/// not fail for that.
fn open_waiting(dir: &Path) -> Result<sled::Db, StorageError> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new().path(dir).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && started.elapsed().as_secs() < 10 =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.map_err(sled_err),
        }
    }
}

fn split_key(key: &[u8]) -> Option<(SessionId, u64)> {
    let session = SessionId::from_bytes(key.get(..16)?.try_into().ok()?);
    let n = u64::from_be_bytes(key.get(16..24)?.try_into().ok()?);
    Some((session, n))
}

/// Imports the sled store in `dir` into `target`.
pub fn import(dir: &Path, target: &dyn Backend) -> Result<ImportReport, StorageError> {
    if !dir.join("conf").exists() && !dir.join("db").exists() {
        return Err(StorageError::Invalid(format!(
            "{} does not look like a sled store (no conf or db file); point --import-sled at the old <data-dir>/ingest",
            dir.display()
        )));
    }
    let db = open_waiting(dir)?;
    let (lines, conflicts, sessions) = (
        db.open_tree("lines").map_err(sled_err)?,
        db.open_tree("conflicts").map_err(sled_err)?,
        db.open_tree("sessions").map_err(sled_err)?,
    );
    let mut report = ImportReport::default();
    for item in sessions.iter() {
        let (key, value) = item.map_err(sled_err)?;
        let Ok(bytes) = <[u8; 16]>::try_from(key.as_ref()) else {
            continue;
        };
        let session = SessionId::from_bytes(bytes);
        let meta: OldMeta = serde_json::from_slice(&value).unwrap_or_default();
        let mut batch = Batch {
            session,
            lines: Vec::new(),
            blanks: Vec::new(),
            vendor: Some("copilot".into()),
            repository: None,
            writer: Principal::Anonymous,
            now: meta.first_seen,
        };
        for item in lines.scan_prefix(bytes) {
            let (key, value) = item.map_err(sled_err)?;
            let Some((_, n)) = split_key(&key) else { continue };
            match (value.first(), value.get(1..17)) {
                (Some(0), Some(id)) => batch.lines.push(IncomingLine {
                    number: n,
                    id: uuid::Uuid::from_slice(id).unwrap_or_default(),
                    text: String::from_utf8_lossy(&value[17..]).into_owned(),
                }),
                (Some(1), _) => batch.blanks.push(n),
                _ => {}
            }
        }
        let reply = target.ingest(&batch)?;
        report.lines_new += reply.new;
        report.lines_already_present += reply.duplicates + reply.conflicts;
        let mut aside: BTreeMap<(u64, uuid::Uuid), String> = BTreeMap::new();
        for item in conflicts.scan_prefix(bytes) {
            let (key, value) = item.map_err(sled_err)?;
            if let (Some((_, n)), Some(id)) = (split_key(&key), key.get(24..40)) {
                let id = uuid::Uuid::from_slice(id).unwrap_or_default();
                aside.insert((n, id), String::from_utf8_lossy(&value).into_owned());
            }
        }
        for ((n, id), text) in aside {
            batch.lines = vec![IncomingLine { number: n, id, text }];
            batch.blanks.clear();
            target.ingest(&batch)?;
            report.conflicts += 1;
        }
        for (kind, event) in [
            (LifecycleKind::Start, meta.started),
            (LifecycleKind::End, meta.ended),
            (LifecycleKind::Notification, meta.last_notification),
        ] {
            if let Some(event) = event {
                target.record_lifecycle(session, kind, &event, &Principal::Anonymous)?;
            }
        }
        report.sessions += 1;
    }
    Ok(report)
}
