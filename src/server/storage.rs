//! The ingest server's sled storage.
//!
//! Lines are keyed by (session, line number) and inserted with compare-and-swap: an event id is a
//! function of the line number, so "this id is stored" is "this key holds this id", one atomic
//! check that two clients racing on the same batch cannot both win. A different id under an
//! occupied number (the transcript was rewritten) is kept aside as a conflict, never dropped.
//! Every reply that acknowledges lines is sent after `flush`, so a kill -9 loses nothing that
//! was acknowledged.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::usage::{classify, fold, Shutdown, Usage, UsageEvent};
use crate::ids::SessionId;
use crate::machine::Millis;
use crate::protocol::IngestReply;

const CACHE_BYTES: u64 = 16 * 1024 * 1024;

const LINE: u8 = 0;
const BLANK: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    pub id: uuid::Uuid,
    pub text: String,
}

/// Everything stored for one session (tests and the demo read this).
#[derive(Debug, Default, Clone)]
pub struct SessionLines {
    pub lines: BTreeMap<u64, StoredLine>,
    /// Lines received again with an id already stored (replays; harmless).
    pub duplicates: u64,
    /// Lines whose number was already stored under a different id.
    pub conflicts: u64,
}

/// Hook-reported lifecycle of a session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub received_at: Millis,
    pub reason: Option<String>,
    pub cwd: Option<String>,
    /// `source` for a start, `ended_at` for an end, as the hook sent them.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionMeta {
    /// Every line number below this is stored (or known blank).
    pub contiguous: u64,
    pub lines: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub first_seen: Millis,
    pub last_seen: Millis,
    pub started: Option<Lifecycle>,
    pub ended: Option<Lifecycle>,
    pub notifications: u64,
    #[serde(default)]
    pub last_notification: Option<Lifecycle>,
    pub has_usage_checkpoints: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session_id: SessionId,
    pub lines_stored: u64,
    pub last_line_number: i64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub first_seen: Millis,
    pub last_seen: Millis,
    pub started: Option<Lifecycle>,
    pub ended: Option<Lifecycle>,
    pub notifications: u64,
    pub last_notification: Option<Lifecycle>,
    pub usage: Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleKind {
    Start,
    End,
    Notification,
}

#[derive(Clone)]
pub struct Storage {
    db: sled::Db,
    lines: sled::Tree,
    conflicts: sled::Tree,
    sessions: sled::Tree,
    shutdowns: sled::Tree,
}

fn line_key(session: SessionId, n: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(session.as_bytes());
    key[16..].copy_from_slice(&n.to_be_bytes());
    key
}

fn encode_line(kind: u8, id: &uuid::Uuid, text: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(17 + text.len());
    v.push(kind);
    v.extend_from_slice(id.as_bytes());
    v.extend_from_slice(text.as_bytes());
    v
}

fn decode_line(v: &[u8]) -> Option<(u8, uuid::Uuid, &[u8])> {
    let kind = *v.first()?;
    let id = uuid::Uuid::from_slice(v.get(1..17)?).ok()?;
    Some((kind, id, &v[17..]))
}

impl Storage {
    pub fn open(path: &Path) -> sled::Result<Storage> {
        Self::from_config(sled::Config::new().path(path))
    }

    /// A store that lives only as long as the process (the demo, tests, the benchmark).
    pub fn temporary() -> sled::Result<Storage> {
        Self::from_config(sled::Config::new().temporary(true))
    }

    fn from_config(config: sled::Config) -> sled::Result<Storage> {
        // Flushes are explicit, before each acknowledgement; a timer would only add fsyncs. The
        // page cache is capped so memory follows the batch size, not the store size (sled's
        // default of 1 GB let a 200 MB ingest reach 231 MB RSS; kcap-bench).
        let db = config
            .flush_every_ms(None)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        Ok(Storage {
            lines: db.open_tree("lines")?,
            conflicts: db.open_tree("conflicts")?,
            sessions: db.open_tree("sessions")?,
            shutdowns: db.open_tree("shutdowns")?,
            db,
        })
    }

    pub async fn flush(&self) -> sled::Result<()> {
        self.db.flush_async().await.map(drop)
    }

    /// Stores a batch (blocking: call off the async threads). `blanks` are line numbers the client
    /// read and found blank, so they do not leave a gap in `last-line`.
    pub fn ingest(
        &self,
        session: SessionId,
        lines: impl IntoIterator<Item = (u64, uuid::Uuid, String)>,
        blanks: &[u64],
        now: Millis,
    ) -> sled::Result<IngestReply> {
        let mut reply = IngestReply::default();
        let (mut conflicts, mut checkpoints) = (0u64, false);
        for (n, id, text) in lines {
            let key = line_key(session, n);
            let value = encode_line(LINE, &id, &text);
            match self
                .lines
                .compare_and_swap(key, None as Option<&[u8]>, Some(value))?
            {
                Ok(()) => {
                    reply.new += 1;
                    match classify(&text) {
                        UsageEvent::Checkpoint => checkpoints = true,
                        UsageEvent::Shutdown(s) => {
                            let encoded = serde_json::to_vec(&s).unwrap_or_default();
                            self.shutdowns.insert(key, encoded)?;
                        }
                        UsageEvent::Other => {}
                    }
                }
                Err(current) => match current.current.as_deref().and_then(decode_line) {
                    Some((LINE, stored, _)) if stored == id => reply.duplicates += 1,
                    _ => {
                        // A different line under this number: keep it, count it, never overwrite.
                        let mut ckey = key.to_vec();
                        ckey.extend_from_slice(id.as_bytes());
                        if self.conflicts.insert(ckey, text.as_bytes())?.is_none() {
                            conflicts += 1;
                        }
                        reply.duplicates += 1;
                    }
                },
            }
        }
        for &n in blanks {
            let _ = self.lines.compare_and_swap(
                line_key(session, n),
                None as Option<&[u8]>,
                Some(encode_line(BLANK, &uuid::Uuid::nil(), "")),
            )?;
        }
        let old = self.meta(session)?.unwrap_or_default();
        let contiguous = self.contiguous_from(session, old.contiguous)?;
        self.update_meta(session, now, |meta| {
            meta.contiguous = meta.contiguous.max(contiguous);
            meta.lines += reply.new;
            meta.duplicates += reply.duplicates - conflicts;
            meta.conflicts += conflicts;
            meta.has_usage_checkpoints |= checkpoints;
        })?;
        Ok(reply)
    }

    /// The first line number at or after `from` that is not stored.
    fn contiguous_from(&self, session: SessionId, from: u64) -> sled::Result<u64> {
        let mut next = from;
        let end = line_key(session, u64::MAX);
        for key in self.lines.range(line_key(session, from)..=end).keys() {
            let key = key?;
            let n = u64::from_be_bytes(key[16..24].try_into().expect("24-byte key"));
            if n != next {
                break;
            }
            next += 1;
        }
        Ok(next)
    }

    fn meta(&self, session: SessionId) -> sled::Result<Option<SessionMeta>> {
        Ok(self
            .sessions
            .get(session.as_bytes())?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// The highest line number below which nothing is missing; −1 when line 0 is missing.
    pub fn last_line(&self, session: SessionId) -> sled::Result<i64> {
        Ok(self.meta(session)?.map_or(-1, |m| m.contiguous as i64 - 1))
    }

    pub fn record_lifecycle(
        &self,
        session: SessionId,
        kind: LifecycleKind,
        event: Lifecycle,
        now: Millis,
    ) -> sled::Result<()> {
        self.update_meta(session, now, |meta| match kind {
            LifecycleKind::Start => meta.started = Some(event.clone()),
            LifecycleKind::End => meta.ended = Some(event.clone()),
            LifecycleKind::Notification => {
                meta.notifications += 1;
                meta.last_notification = Some(event.clone());
            }
        })?;
        Ok(())
    }

    /// Updates a session's metadata atomically (sled retries `change` if another writer won the
    /// race, so it must depend only on the metadata it is given).
    fn update_meta(
        &self,
        session: SessionId,
        now: Millis,
        change: impl Fn(&mut SessionMeta),
    ) -> sled::Result<()> {
        self.sessions.update_and_fetch(session.as_bytes(), |current| {
            let mut meta: SessionMeta = current
                .and_then(|v| serde_json::from_slice(v).ok())
                .unwrap_or_default();
            if meta.first_seen == 0 {
                meta.first_seen = now;
            }
            meta.last_seen = meta.last_seen.max(now);
            change(&mut meta);
            serde_json::to_vec(&meta).ok()
        })?;
        Ok(())
    }

    pub fn usage(&self, session: SessionId, has_checkpoints: bool) -> sled::Result<Usage> {
        let mut shutdowns = Vec::new();
        for item in self.shutdowns.scan_prefix(session.as_bytes()) {
            let (_, v) = item?;
            if let Ok(s) = serde_json::from_slice::<Shutdown>(&v) {
                shutdowns.push(s);
            }
        }
        Ok(fold(&shutdowns, has_checkpoints))
    }

    pub fn summary(&self, session: SessionId) -> sled::Result<Option<SessionSummary>> {
        let Some(meta) = self.meta(session)? else {
            return Ok(None);
        };
        let usage = self.usage(session, meta.has_usage_checkpoints)?;
        Ok(Some(SessionSummary {
            session_id: session,
            lines_stored: meta.lines,
            last_line_number: meta.contiguous as i64 - 1,
            duplicates: meta.duplicates,
            conflicts: meta.conflicts,
            first_seen: meta.first_seen,
            last_seen: meta.last_seen,
            started: meta.started,
            ended: meta.ended,
            notifications: meta.notifications,
            last_notification: meta.last_notification,
            usage,
        }))
    }

    /// Every session, most recently active first.
    pub fn summaries(&self) -> sled::Result<Vec<SessionSummary>> {
        let mut out = Vec::new();
        for key in self.sessions.iter().keys() {
            let key = key?;
            let Ok(bytes) = <[u8; 16]>::try_from(key.as_ref()) else {
                continue;
            };
            if let Some(s) = self.summary(SessionId::from_bytes(bytes))? {
                out.push(s);
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
        Ok(out)
    }

    pub fn session_ids(&self) -> Vec<SessionId> {
        self.sessions
            .iter()
            .keys()
            .filter_map(|k| <[u8; 16]>::try_from(k.ok()?.as_ref()).ok())
            .map(SessionId::from_bytes)
            .collect()
    }

    /// Everything stored for `session` (tests and the demo).
    pub fn lines(&self, session: SessionId) -> sled::Result<SessionLines> {
        let mut out = SessionLines::default();
        for item in self.lines.scan_prefix(session.as_bytes()) {
            let (key, value) = item?;
            let n = u64::from_be_bytes(key[16..24].try_into().expect("24-byte key"));
            if let Some((LINE, id, text)) = decode_line(&value) {
                let text = String::from_utf8_lossy(text).into_owned();
                out.lines.insert(n, StoredLine { id, text });
            }
        }
        if let Some(meta) = self.meta(session)? {
            out.duplicates = meta.duplicates;
            out.conflicts = meta.conflicts;
        }
        Ok(out)
    }
}
