//! Keys and values of the store's trees. Values are JSON so `kcap inspect` and a human with a
//! hex dump can read them; keys are big-endian so sled's order is (session, generation, seq).

use std::path::PathBuf;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{Lease, Result, StoreError};
use crate::ids::SessionId;
use crate::machine::{fold, watermark_of, Input, Millis, Phase, State, Timings, Watermark};

/// The spawn record: everything a machine needs to be rebuilt, written before it first runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineMeta {
    pub session: SessionId,
    pub generation: u32,
    pub transcript: PathBuf,
    pub timings: Timings,
    pub spawned_at: Millis,
}

/// One accepted transition: the input, and the phase it led to (kept for `inspect` and to check
/// that a replay reaches the same place).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub seq: u64,
    /// Wall-clock time the record was written.
    pub at: Millis,
    pub input: Input,
    pub phase: Phase,
}

/// One accepted transition as the store records it ([`super::Store::record_step`]) and as the
/// interpreter hands it to its journal: the log record's input and phase, the watermark it
/// carries (persisted in the same hold), and the lease it renews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The machine it belongs to.
    pub session: SessionId,
    pub generation: u32,
    /// The accepted input, and the phase it led to.
    pub input: Input,
    pub phase_after: Phase,
    /// The position acknowledged with it, if any, and the file (device, inode) that is about.
    pub watermark: Option<Watermark>,
    pub identity: Option<(u64, u64)>,
    /// The process whose lease the record renews.
    pub holder: super::Holder,
    /// Wall-clock time of the record.
    pub at: Millis,
}

/// A delivered position and the transcript file (device, inode) it is about. Stored flat, so
/// a record written before identities were kept reads as a position on an unknown file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    #[serde(flatten)]
    pub watermark: Watermark,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<(u64, u64)>,
}

impl Position {
    /// The store's one rule for recording progress, shared with the simulations: positions only
    /// move forward on one file (a slow process finishing late must not pull one back), and a
    /// position on another file replaces the one held (the transcript was replaced and is read
    /// again from line 0: the old file's offsets mean nothing in the new one). Returns the
    /// position to hold after recording `w` (about the file `identity`, when known) over
    /// `current`, and whether it changed.
    pub fn advanced(
        current: Option<Position>,
        w: Watermark,
        identity: Option<(u64, u64)>,
    ) -> (Position, bool) {
        let other_file =
            matches!((current, identity), (Some(c), Some(new)) if c.identity.is_some_and(|old| old != new));
        match current {
            Some(c) if !other_file && c.watermark.next_line >= w.next_line => (c, false),
            c => {
                let position = Position {
                    watermark: w,
                    identity: identity.or(c.and_then(|c| c.identity)),
                };
                (position, true)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRecord {
    pub meta: MachineMeta,
    pub log: Vec<LogRecord>,
    pub watermark: Option<Watermark>,
    /// The file `watermark` refers to, when known.
    pub identity: Option<(u64, u64)>,
    pub lease: Option<Lease>,
}

impl MachineRecord {
    /// The current state: the fold of the logged inputs from the spawn record. Also reports how
    /// many logged phases the replay did not reproduce (0 unless the machine's rules changed).
    pub fn state(&self) -> (State, usize) {
        let start = State::spawned(self.meta.timings, self.meta.spawned_at);
        let (state, refused) = fold(start.clone(), self.log.iter().map(|r| &r.input));
        let mut replay = start;
        let mut diverged = refused;
        for r in &self.log {
            if let Ok((next, _)) = crate::machine::step(&replay, &r.input) {
                replay = next;
            }
            if replay.phase != r.phase {
                diverged += 1;
            }
        }
        (state, diverged)
    }

    /// The furthest delivered position known locally: the watermark tree or the log, whichever
    /// is ahead (they are written in one store hold, so they differ only for stores written by
    /// older versions). A position that names its file is the tree's own: the log's positions
    /// may be about a file that was replaced since.
    pub fn local_watermark(&self) -> Option<Watermark> {
        if self.identity.is_some() {
            return self.watermark;
        }
        let logged = watermark_of(self.log.iter().map(|r| &r.input));
        match (self.watermark, logged) {
            (Some(a), Some(b)) => Some(if a.next_line >= b.next_line { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// What a lifecycle notice is: it decides where it goes in the order start, lines, end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    SessionStart,
    Notification,
    /// Delivered only after the session's lines.
    SessionEnd,
}

/// A lifecycle POST kept until the server takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    /// The protocol path it is posted to.
    pub path: String,
    pub body: serde_json::Value,
    /// The process posting it right now, if one is: others leave it alone while it lives (a
    /// notification posted twice is counted twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<super::Holder>,
}

/// A queued notice with its place in its session's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNotice {
    pub session: SessionId,
    pub seq: u64,
    pub notice: Notice,
}

pub fn notice_key(session: SessionId, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(session.as_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn notice_seq(key: &[u8]) -> Result<u64> {
    key.get(16..24)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("short notice key".into()))
}

/// The format of the records this code writes, stored in each one as `"format"`. Version 1 is
/// every record written before the field existed (kcap up to commit 81747c3), read as it is.
/// A change that an older reader would misread raises this number; a reader meeting a record
/// newer than it knows refuses it with a clear error rather than guessing.
pub const FORMAT: u32 = 2;

/// The format field alone: every other field is ignored on this first look.
#[derive(Deserialize)]
struct Versioned {
    #[serde(default = "format_one")]
    format: u32,
}

fn format_one() -> u32 {
    1
}

/// Encodes a record (a JSON object) with the current [`FORMAT`] in it.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    let mut json = serde_json::to_value(value).map_err(corrupt)?;
    if let serde_json::Value::Object(fields) = &mut json {
        fields.insert("format".into(), FORMAT.into());
    }
    serde_json::to_vec(&json).map_err(corrupt)
}

/// Decodes a record of any format up to [`FORMAT`]; a newer one is an error that says so.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
    // Only objects carry a format; anything else is read as it is (and fails below if wrong).
    if bytes.first() == Some(&b'{') {
        let Versioned { format } = serde_json::from_slice(bytes).map_err(corrupt)?;
        if format > FORMAT {
            return Err(StoreError::Corrupt(format!(
                "record written in store format {format}, newer than this kcap reads ({FORMAT}); upgrade kcap"
            )));
        }
    }
    serde_json::from_slice(bytes).map_err(corrupt)
}

pub fn machine_key(session: SessionId, generation: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(28);
    key.extend_from_slice(session.as_bytes());
    key.extend_from_slice(&generation.to_be_bytes());
    key
}

pub fn log_key(session: SessionId, generation: u32, seq: u64) -> Vec<u8> {
    let mut key = machine_key(session, generation);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn generation_of(machine_key: &[u8]) -> Result<u32> {
    machine_key
        .get(16..20)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("short machine key".into()))
}

pub fn seq_of(log_key: &[u8]) -> Result<u64> {
    log_key
        .get(20..28)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("short log key".into()))
}

#[cfg(test)]
mod tests {
    use super::Position;
    use crate::machine::Watermark;

    fn at(next_line: u64, identity: Option<(u64, u64)>) -> Position {
        Position {
            watermark: Watermark {
                next_line,
                offset: next_line * 10,
                open_line: false,
            },
            identity,
        }
    }

    #[track_caller]
    fn advance(current: Option<Position>, to: Position) -> (Position, bool) {
        Position::advanced(current, to.watermark, to.identity)
    }

    #[test]
    fn a_position_moves_forward_only_on_one_file_and_is_replaced_on_another() {
        let a = Some((1, 1));
        // The first position is taken as it is.
        assert_eq!(advance(None, at(3, a)), (at(3, a), true));
        // Forward on the same file; never back, nor standing still.
        assert_eq!(advance(Some(at(3, a)), at(5, a)), (at(5, a), true));
        assert_eq!(advance(Some(at(5, a)), at(4, a)), (at(5, a), false));
        assert_eq!(advance(Some(at(5, a)), at(5, a)), (at(5, a), false));
        // Another file: its position replaces the old one, even when behind it.
        let b = Some((1, 2));
        assert_eq!(advance(Some(at(5, a)), at(2, b)), (at(2, b), true));
        // A position that does not name its file keeps the file already known.
        assert_eq!(advance(Some(at(5, a)), at(7, None)), (at(7, a), true));
        assert_eq!(advance(Some(at(5, a)), at(4, None)), (at(5, a), false));
        // An old position that named no file is about whatever file is there.
        assert_eq!(advance(Some(at(5, None)), at(4, b)), (at(5, None), false));
    }
}
