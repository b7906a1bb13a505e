//! The embedded backend: one SQLite file in WAL mode with `synchronous = FULL`, so a commit is
//! on disk when it returns. Writes go through one connection (SQLite has one writer anyway);
//! reads use a small pool of their own connections and never wait for a writer (WAL). The search
//! index lives in a file of its own with its own writer ([`super::sqlite_search`]), so indexing
//! never holds the lock a batch needs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::columns::{lifecycle_of, session_of, signed, SESSION_ROW};
use super::migrations::{pending, SQLITE};
use super::rules::{self, LineOutcome, Slot};
use super::sqlite_search;
use super::{
    Backend, Batch, Lifecycle, LifecycleKind, Principal, SessionLines, SessionRow, SessionSummary,
    StorageError, StoredLine, TokenInfo,
};
use crate::ids::SessionId;
use crate::machine::Millis;
use crate::protocol::IngestReply;
use crate::server::usage::Shutdown;

const READERS: usize = 4;
/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL pages (64 KiB each) past which a commit checkpoints by itself: only reached when the
/// checkpointer cannot keep up (a reader holding old frames), so the WAL stays bounded.
const AUTOCHECKPOINT_PAGES: i64 = 4096;

/// The SQLite backend.
pub struct Sqlite {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// The search index's own write connection (see [`sqlite_search`]).
    search: Mutex<Connection>,
    search_path: PathBuf,
    checkpointer: Option<Checkpointer>,
    _temporary: Option<tempfile::TempDir>,
}

/// Copies the WAL into the database file on a thread of its own. SQLite's automatic checkpoint
/// runs inside the commit that crosses the threshold: that request then waited for tens of MB to
/// be written and fsynced into the main file (the 64 KiB pages make the default threshold
/// 64 MB), which showed as p99 spikes and lost throughput. A PASSIVE checkpoint from another
/// connection never blocks the writer, and commits stay durable by the WAL's own fsync.
struct Checkpointer {
    commits: Arc<AtomicU64>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path, wait: Duration) -> Result<Checkpointer, StorageError> {
        let conn = retry_busy(wait, |busy| {
            let conn = connection_waiting(path, busy)?;
            conn.busy_timeout(BUSY)?;
            Ok(conn)
        })?;
        let commits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (seen, halt) = (commits.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("kcap-sqlite-checkpoint".into())
            .spawn(move || {
                let mut done = 0;
                loop {
                    let stopped = lock(&halt.0);
                    // A stop sent while a checkpoint ran must not wait out a whole period.
                    if *stopped {
                        return;
                    }
                    let (stopped, _) = halt
                        .1
                        .wait_timeout(stopped, CHECKPOINT_EVERY)
                        .unwrap_or_else(|p| p.into_inner());
                    if *stopped {
                        return;
                    }
                    drop(stopped);
                    let now = seen.load(Ordering::Acquire);
                    if now == done {
                        continue;
                    }
                    done = now;
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "SQLite checkpoint failed; the next one retries");
                    }
                }
            })
            .map_err(|e| StorageError::Database(format!("cannot start the checkpointer: {e}")))?;
        Ok(Checkpointer {
            commits,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn db(e: rusqlite::Error) -> StorageError {
    StorageError::Database(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A connection is left consistent by SQLite itself (a panicked transaction rolls back on
    // drop), so a poisoned lock is safe to take over.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a connection waits for a lock another connection holds (SQLite's busy handler).
const BUSY: Duration = Duration::from_secs(30);

/// Whether SQLite refused because another connection holds a lock (by its result code, never
/// its message text).
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Why opening failed: SQLite's own error (its code decides a retry), or ours.
enum OpenError {
    Sqlite(rusqlite::Error),
    Storage(StorageError),
}

impl From<rusqlite::Error> for OpenError {
    fn from(e: rusqlite::Error) -> Self {
        OpenError::Sqlite(e)
    }
}

impl From<OpenError> for StorageError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Sqlite(e) => db(e),
            OpenError::Storage(e) => e,
        }
    }
}

/// Runs a step of opening the database (given the busy timeout left) again while SQLite
/// answers busy or locked, until `wait` has passed. Where waiting could deadlock (connections
/// racing to set up a fresh file: its page size, WAL mode, first schema), SQLite answers at once
/// without calling its busy handler; at start, trying the step again is the way through. Each
/// step's own busy waits count against the same `wait`, so opening gives up after about `wait`
/// in all.
fn retry_busy<T>(
    wait: Duration,
    mut step: impl FnMut(Duration) -> Result<T, OpenError>,
) -> Result<T, StorageError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match step(left.min(BUSY)) {
            Err(OpenError::Sqlite(e)) if is_busy(&e) && !left.is_zero() => {
                std::thread::sleep(Duration::from_millis(10).min(left));
            }
            Err(OpenError::Sqlite(e)) if is_busy(&e) => {
                return Err(StorageError::Database(format!(
                    "{e} (still locked by another connection after {} s; see --database-wait)",
                    wait.as_secs_f64()
                )))
            }
            other => return other.map_err(StorageError::from),
        }
    }
}

/// A read connection: the store, with the search index attached as `search`.
fn reader(path: &Path, search: &Path) -> Result<Connection, StorageError> {
    let conn = connection_waiting(path, BUSY).map_err(db)?;
    sqlite_search::attach(&conn, search).map_err(db)?;
    Ok(conn)
}

/// A configured connection whose busy handler waits up to `busy`.
fn connection_waiting(path: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy)?;
    // FULL: in WAL mode NORMAL may lose the last commits on power loss; an acknowledgement must
    // not be one of them. 64 KiB pages (new databases only): transcript lines average a few KB,
    // and with 4 KiB pages nearly every line spilled into overflow pages; one client's ingest went
    // from 40 to 119 MB/s on kcap-bench.
    conn.execute_batch(
        "PRAGMA page_size = 65536; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -16000;",
    )?;
    Ok(conn)
}

impl Sqlite {
    /// Opens (creating and migrating) the database at `path`, waiting up to
    /// [`DEFAULT_START_WAIT`](super::DEFAULT_START_WAIT) for a lock another process holds.
    pub fn open(path: &Path) -> Result<Sqlite, StorageError> {
        Self::open_waiting(path, super::DEFAULT_START_WAIT)
    }

    /// Like [`Sqlite::open`], waiting up to `wait` in all while another connection holds the
    /// database locked (another server setting up the same fresh file, a long write).
    pub fn open_waiting(path: &Path, wait: Duration) -> Result<Sqlite, StorageError> {
        Self::open_in(path, None, wait)
    }

    /// A database in a fresh temporary directory, deleted on drop.
    pub fn temporary() -> Result<Sqlite, StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Database(e.to_string()))?;
        let path = dir.path().join("kcap.db");
        Self::open_in(&path, Some(dir), super::DEFAULT_START_WAIT)
    }

    fn open_in(
        path: &Path,
        temporary: Option<tempfile::TempDir>,
        wait: Duration,
    ) -> Result<Sqlite, StorageError> {
        let writer = retry_busy(wait, |busy| {
            let mut writer = connection_waiting(path, busy)?;
            migrate(&mut writer)?;
            Ok(writer)
        })?;
        writer.busy_timeout(BUSY).map_err(db)?;
        writer
            .pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)
            .map_err(db)?;
        let search_path = sqlite_search::path_for(path);
        let token = sqlite_search::store_token(&writer).map_err(db)?;
        sqlite_search::check_kind(&search_path).map_err(StorageError::Database)?;
        let mut search = retry_busy(wait, |busy| {
            match sqlite_search::open(&search_path, &token, busy) {
                Err(e) if sqlite_search::is_unusable(&e) => {
                    sqlite_search::set_aside(&search_path).map_err(|e| {
                        OpenError::Storage(StorageError::Database(format!(
                            "the search index {} is not a usable database and cannot be set aside ({e}); \
                         it is a rebuildable index: delete it",
                            search_path.display()
                        )))
                    })?;
                    Ok(sqlite_search::open(&search_path, &token, busy)?)
                }
                other => Ok(other?),
            }
        })?;
        search.busy_timeout(BUSY).map_err(db)?;
        commit(&mut search, |tx| sqlite_search::verify(tx, &writer).map_err(db))?;
        Ok(Sqlite {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            search: Mutex::new(search),
            search_path,
            checkpointer: Some(Checkpointer::start(path, wait)?),
            _temporary: temporary,
        })
    }

    /// Runs `f` on a pooled read connection.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let conn = lock(&self.readers).pop();
        let conn = match conn {
            Some(c) => c,
            None => reader(&self.path, &self.search_path)?,
        };
        let out = f(&conn).map_err(db);
        let mut pool = lock(&self.readers);
        if pool.len() < READERS {
            pool.push(conn);
        }
        out
    }

    /// Runs `f` in one write transaction, committed durably before returning.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let out = commit(&mut lock(&self.writer), f)?;
        if let Some(c) = &self.checkpointer {
            c.commits.fetch_add(1, Ordering::Release);
        }
        Ok(out)
    }

    /// Copies the search index's WAL into its file, which syncs both: true when every commit is
    /// now durable (none was left behind for a reader still holding old frames).
    pub(crate) fn sync_search(&self) -> Result<bool, StorageError> {
        let (busy, log, done): (i64, i64, i64) = lock(&self.search)
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(db)?;
        Ok(busy == 0 && log == done)
    }

    /// Runs `f` in one transaction on the search index's own connection (see
    /// [`sqlite_search`]): it never takes the store's write lock.
    pub(crate) fn write_search<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        commit(&mut lock(&self.search), f)
    }
}

fn commit<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let out = f(&tx)?;
    tx.commit().map_err(db)?;
    Ok(out)
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        // Stop the checkpointer (its connection closes) before the temporary directory goes.
        self.checkpointer.take();
    }
}

fn migrate(conn: &mut Connection) -> Result<(), OpenError> {
    loop {
        // The version is read under the exclusive lock that applies the step: two servers
        // starting at once on a fresh database both read 0 before either held the lock, and the
        // second then failed creating tables that already existed.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let Some(m) = pending(SQLITE, current)
            .map_err(|e| OpenError::Storage(StorageError::Database(e)))?
            .first()
        else {
            return Ok(());
        };
        tx.execute_batch(m.sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", m.version))?;
        tx.commit()?;
        tracing::info!(version = m.version, name = m.name, "SQLite schema migrated");
    }
}

pub(crate) fn sid(session: SessionId) -> [u8; 16] {
    *session.as_bytes()
}

/// Takes (creating if new) the session's row and checks ownership: the first statement of every
/// write, so ownership and counters are decided inside the transaction.
fn claim(
    tx: &Transaction<'_>,
    session: SessionId,
    writer: &Principal,
    now: Millis,
) -> Result<(), StorageError> {
    tx.prepare_cached(
        "INSERT INTO sessions (id, owner, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3) \
         ON CONFLICT (id) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![sid(session), writer.owner_name(), now as i64]))
    .map_err(db)?;
    let owner: Option<String> = tx
        .prepare_cached("SELECT owner FROM sessions WHERE id = ?1")
        .and_then(|mut s| s.query_row([sid(session)], |r| r.get(0)))
        .map_err(db)?;
    rules::may_write(owner.as_deref(), writer)
}

fn slot(tx: &Transaction<'_>, session: SessionId, n: u64) -> rusqlite::Result<Option<Slot>> {
    tx.prepare_cached("SELECT blank, id FROM lines WHERE session = ?1 AND n = ?2")?
        .query_row(params![sid(session), n as i64], |r| {
            let blank: bool = r.get(0)?;
            let id: Option<Vec<u8>> = r.get(1)?;
            Ok(match (blank, id.and_then(|b| uuid::Uuid::from_slice(&b).ok())) {
                (false, Some(id)) => Slot::Line(id),
                _ => Slot::Blank,
            })
        })
        .optional()
}

fn frontier(tx: &Transaction<'_>, session: SessionId, from: u64) -> rusqlite::Result<u64> {
    // Nothing at the old frontier: it cannot move (one index probe, however long the run after
    // the gap).
    if slot(tx, session, from)?.is_none() {
        return Ok(from);
    }
    let mut stmt =
        tx.prepare_cached("SELECT n, blank FROM lines WHERE session = ?1 AND n >= ?2 ORDER BY n")?;
    let numbers = stmt
        .query_map(params![sid(session), from as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, bool>(1)?))
        })?
        .map_while(|n| n.ok());
    Ok(rules::advance(from, numbers))
}

/// A session row read with [`SESSION_ROW`].
pub(crate) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        session: session_of(r.get::<_, Vec<u8>>(0)?),
        owner: r.get(1)?,
        agent: r.get(2)?,
        cwd: r.get(3)?,
        repository: r.get(4)?,
        contiguous: r.get::<_, i64>(5)? as u64,
        lines: r.get::<_, i64>(6)? as u64,
        duplicates: r.get::<_, i64>(7)? as u64,
        conflicts: r.get::<_, i64>(8)? as u64,
        first_seen: r.get::<_, i64>(9)? as Millis,
        last_seen: r.get::<_, i64>(10)? as Millis,
        started: lifecycle_of(r.get(11)?),
        ended: lifecycle_of(r.get(12)?),
        notifications: r.get::<_, i64>(13)? as u64,
        last_notification: None,
        has_usage_checkpoints: r.get(14)?,
    })
}

pub(crate) fn summary_of(conn: &Connection, mut row: SessionRow) -> rusqlite::Result<SessionSummary> {
    let key = sid(row.session);
    row.last_notification = conn
        .prepare_cached("SELECT event FROM notifications WHERE session = ?1 ORDER BY rowid DESC LIMIT 1")?
        .query_row([key], |r| r.get::<_, String>(0))
        .optional()?
        .and_then(|s| serde_json::from_str(&s).ok());
    let shutdowns: Vec<Shutdown> = conn
        .prepare_cached("SELECT usage FROM shutdowns WHERE session = ?1 ORDER BY n")?
        .query_map([key], |r| r.get::<_, String>(0))?
        .filter_map(|s| serde_json::from_str(&s.ok()?).ok())
        .collect();
    Ok(rules::summarize(row, &shutdowns))
}

/// A session's summary, `None` if it is unknown: the API's and the web UI's reads alike.
pub(crate) fn summary_by_id(
    conn: &Connection,
    session: SessionId,
) -> rusqlite::Result<Option<SessionSummary>> {
    let Some(r) = conn
        .prepare_cached(&format!("{SESSION_ROW} WHERE id = ?1"))?
        .query_row([sid(session)], row)
        .optional()?
    else {
        return Ok(None);
    };
    summary_of(conn, r).map(Some)
}

impl Backend for Sqlite {
    fn ingest(&self, batch: &Batch) -> Result<IngestReply, StorageError> {
        rules::validate(batch)?;
        let session = batch.session;
        let key = sid(session);
        self.write(|tx| {
            claim(tx, session, &batch.writer, batch.now)?;
            let mut tally = rules::Tally::default();
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO lines (session, n, blank, id, text) VALUES (?1, ?2, 0, ?3, ?4) \
                     ON CONFLICT (session, n) DO NOTHING",
                )
                .map_err(db)?;
            for line in &batch.lines {
                let n = line.number as i64;
                let stored = if insert
                    .execute(params![key, n, line.id.as_bytes(), line.text])
                    .map_err(db)?
                    == 1
                {
                    None
                } else {
                    Some(slot(tx, session, line.number).map_err(db)?.unwrap_or(Slot::Blank))
                };
                match rules::classify(stored, line.id) {
                    LineOutcome::New | LineOutcome::ReplacesBlank => {
                        if stored.is_some() {
                            tx.execute(
                                "UPDATE lines SET blank = 0, id = ?3, text = ?4 WHERE session = ?1 AND n = ?2",
                                params![key, n, line.id.as_bytes(), line.text],
                            )
                            .map_err(db)?;
                        }
                        if let Some(usage) = tally.stored(&line.text) {
                            tx.execute(
                                "INSERT INTO shutdowns (session, n, usage) VALUES (?1, ?2, ?3) \
                                 ON CONFLICT DO NOTHING",
                                params![key, n, usage],
                            )
                            .map_err(db)?;
                        }
                    }
                    LineOutcome::Duplicate => tally.duplicate(),
                    LineOutcome::Conflict => {
                        let kept = tx
                            .execute(
                                "INSERT INTO conflicts (session, n, id, text, received_at) \
                                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                                params![key, n, line.id.as_bytes(), line.text, batch.now as i64],
                            )
                            .map_err(db)?;
                        tally.conflict(kept as u64);
                    }
                }
            }
            let numbers: Vec<u64> = batch.lines.iter().map(|l| l.number).collect();
            let mut blank = tx
                .prepare_cached(
                    "INSERT INTO lines (session, n, blank) VALUES (?1, ?2, 1) ON CONFLICT DO NOTHING",
                )
                .map_err(db)?;
            for n in rules::admissible_blanks(&numbers, &batch.blanks)? {
                blank.execute(params![key, n as i64]).map_err(db)?;
            }
            let old: i64 = tx
                .prepare_cached("SELECT contiguous FROM sessions WHERE id = ?1")
                .and_then(|mut s| s.query_row([key], |r| r.get(0)))
                .map_err(db)?;
            let contiguous = frontier(tx, session, old as u64).map_err(db)?;
            tx.prepare_cached(
                "UPDATE sessions SET contiguous = ?2, lines = lines + ?3, \
                 duplicates = duplicates + ?4, conflicts = conflicts + ?5, \
                 last_seen = max(last_seen, ?6), has_usage_checkpoints = has_usage_checkpoints OR ?7, \
                 agent = coalesce(agent, ?8), repository = coalesce(?9, repository) WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![
                    key,
                    contiguous as i64,
                    tally.reply.new as i64,
                    tally.row_duplicates() as i64,
                    tally.row_conflicts() as i64,
                    batch.now as i64,
                    tally.checkpoints,
                    batch.vendor,
                    batch.repository
                ]))
            .map_err(db)?;
            Ok(tally.reply)
        })
    }

    fn last_line(&self, session: SessionId) -> Result<i64, StorageError> {
        let contiguous = self.read(|c| {
            c.prepare_cached("SELECT contiguous FROM sessions WHERE id = ?1")?
                .query_row([sid(session)], |r| r.get::<_, i64>(0))
                .optional()
        })?;
        Ok(rules::last_line_of(contiguous.unwrap_or(0) as u64))
    }

    fn record_lifecycle(
        &self,
        session: SessionId,
        kind: LifecycleKind,
        event: &Lifecycle,
        writer: &Principal,
    ) -> Result<(), StorageError> {
        let key = sid(session);
        let json = serde_json::to_string(event).map_err(|e| StorageError::Invalid(e.to_string()))?;
        self.write(|tx| {
            claim(tx, session, writer, event.received_at)?;
            let now = event.received_at as i64;
            match kind {
                LifecycleKind::Start => tx.execute(
                    "UPDATE sessions SET started = ?2, cwd = coalesce(?3, cwd), last_seen = max(last_seen, ?4) WHERE id = ?1",
                    params![key, json, event.cwd, now],
                ),
                LifecycleKind::End => tx.execute(
                    "UPDATE sessions SET ended = ?2, cwd = coalesce(cwd, ?3), last_seen = max(last_seen, ?4) WHERE id = ?1",
                    params![key, json, event.cwd, now],
                ),
                LifecycleKind::Notification => tx
                    .execute(
                        "INSERT INTO notifications (session, received_at, event) VALUES (?1, ?2, ?3)",
                        params![key, now, json],
                    )
                    .and_then(|_| {
                        tx.execute(
                            "UPDATE sessions SET notifications = notifications + 1, last_seen = max(last_seen, ?2) WHERE id = ?1",
                            params![key, now],
                        )
                    }),
            }
            .map_err(db)?;
            Ok(())
        })
    }

    fn summary(&self, session: SessionId) -> Result<Option<SessionSummary>, StorageError> {
        self.read(|c| summary_by_id(c, session))
    }

    fn summaries(&self, limit: Option<u64>) -> Result<Vec<SessionSummary>, StorageError> {
        self.read(|c| {
            let limit = limit.map_or(-1, signed);
            let rows: Vec<SessionRow> = c
                .prepare_cached(&format!("{SESSION_ROW} ORDER BY last_seen DESC LIMIT ?1"))?
                .query_map([limit], row)?
                .collect::<rusqlite::Result<_>>()?;
            rows.into_iter().map(|r| summary_of(c, r)).collect()
        })
    }

    fn lines(&self, session: SessionId) -> Result<SessionLines, StorageError> {
        self.read(|c| {
            let mut out = SessionLines::default();
            let mut stmt = c.prepare_cached(
                "SELECT n, id, text FROM lines WHERE session = ?1 AND blank = 0 ORDER BY n",
            )?;
            let rows = stmt.query_map([sid(session)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            for item in rows {
                let (n, id, text) = item?;
                let id = uuid::Uuid::from_slice(&id).unwrap_or_default();
                out.lines.insert(n as u64, StoredLine { id, text });
            }
            if let Some((d, k)) = c
                .query_row(
                    "SELECT duplicates, conflicts FROM sessions WHERE id = ?1",
                    [sid(session)],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?
            {
                out.duplicates = d as u64;
                out.conflicts = k as u64;
            }
            Ok(out)
        })
    }

    fn session_ids(&self) -> Result<Vec<SessionId>, StorageError> {
        self.read(|c| {
            let ids = c
                .prepare("SELECT id FROM sessions")?
                .query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .filter_map(|id| <[u8; 16]>::try_from(id.ok()?.as_slice()).ok())
                .map(SessionId::from_bytes)
                .collect();
            Ok(ids)
        })
    }

    fn add_token(&self, name: &str, hash: &[u8; 32], now: Millis) -> Result<(), StorageError> {
        self.write(|tx| {
            let added = tx
                .execute(
                    "INSERT INTO tokens (name, hash, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![name, hash.as_slice(), now as i64],
                )
                .map_err(db)?;
            rules::token_added(name, added as u64)
        })
    }

    fn token_name(&self, hash: &[u8; 32]) -> Result<Option<String>, StorageError> {
        self.read(|c| {
            c.prepare_cached("SELECT name FROM tokens WHERE hash = ?1 AND revoked_at IS NULL")?
                .query_row([hash.as_slice()], |r| r.get(0))
                .optional()
        })
    }

    fn tokens(&self) -> Result<Vec<TokenInfo>, StorageError> {
        self.read(|c| {
            c.prepare("SELECT name, created_at, revoked_at FROM tokens ORDER BY name")?
                .query_map([], |r| {
                    Ok(TokenInfo {
                        name: r.get(0)?,
                        created_at: r.get::<_, i64>(1)? as Millis,
                        revoked_at: r.get::<_, Option<i64>>(2)?.map(|t| t as Millis),
                    })
                })?
                .collect()
        })
    }

    fn revoke_token(&self, name: &str, now: Millis) -> Result<bool, StorageError> {
        self.write(|tx| {
            let revoked = tx
                .execute(
                    "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                    params![name, now as i64],
                )
                .map_err(db)?;
            let exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?1)",
                    [name],
                    |r| r.get(0),
                )
                .map_err(db)?;
            rules::token_revoked(name, revoked as u64, exists)
        })
    }

    fn has_tokens(&self) -> Result<bool, StorageError> {
        self.read(|c| c.query_row("SELECT EXISTS (SELECT 1 FROM tokens)", [], |r| r.get(0)))
    }

    fn describe(&self) -> String {
        format!("SQLite at {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_waits_for_a_lock_as_long_as_the_setting_says_and_no_longer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kcap.db");
        drop(Sqlite::open(&path).unwrap());
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let started = std::time::Instant::now();
        let err = Sqlite::open_waiting(&path, Duration::from_secs(1))
            .err()
            .expect("the database is locked");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
            "waited {waited:?}"
        );
        assert!(err.to_string().contains("--database-wait"), "{err}");
        // Released while it waits: opening goes through.
        std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                holder.execute_batch("COMMIT").unwrap();
            });
            Sqlite::open_waiting(&path, Duration::from_secs(20)).unwrap();
        });
    }

    #[test]
    fn only_busy_and_locked_codes_count_as_busy() {
        let failure = |code| {
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("whatever the text".into()))
        };
        assert!(is_busy(&failure(rusqlite::ffi::SQLITE_BUSY)));
        assert!(is_busy(&failure(rusqlite::ffi::SQLITE_LOCKED)));
        assert!(!is_busy(&failure(rusqlite::ffi::SQLITE_CORRUPT)));
        // A message that merely says "database is locked" is not the code.
        let text = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some("database is locked".into()),
        );
        assert!(!is_busy(&text));
    }

    fn synchronous(tx: &Transaction<'_>) -> Result<i64, StorageError> {
        tx.query_row("PRAGMA synchronous", [], |r| r.get(0)).map_err(db)
    }

    /// Acknowledged batches survive power loss: every store write commits with a full sync.
    #[test]
    fn store_writes_commit_with_a_full_sync() {
        let store = Sqlite::temporary().unwrap();
        assert_eq!(store.write(synchronous).unwrap(), 2, "FULL");
    }

    /// The search index has a writer of its own: a batch commits while an index step holds the
    /// index (here, for as long as the test likes), which it could not when both shared one file.
    #[test]
    fn a_batch_commits_while_an_index_step_holds_the_search_index() {
        let store = Sqlite::temporary().unwrap();
        let session = SessionId::new_random();
        let batch = |first: u64| Batch {
            session,
            lines: (first..first + 3)
                .map(|n| super::super::IncomingLine {
                    number: n,
                    id: crate::ids::event_id(&session, n, b"line"),
                    text: "line".into(),
                })
                .collect(),
            blanks: Vec::new(),
            vendor: None,
            repository: None,
            writer: Principal::Anonymous,
            now: 1,
        };
        store.ingest(&batch(0)).unwrap();
        let (held, release) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                store
                    .write_search(|tx| {
                        tx.execute("UPDATE progress SET last_rowid = last_rowid", [])
                            .map_err(db)?;
                        held.wait();
                        release.wait();
                        Ok(())
                    })
                    .unwrap()
            });
            held.wait();
            let (done_tx, done) = std::sync::mpsc::channel();
            let (store, batch) = (&store, &batch);
            s.spawn(move || {
                let reply = store.ingest(&batch(3));
                let _ = done_tx.send(reply);
            });
            let reply = done.recv_timeout(Duration::from_secs(20));
            release.wait();
            let reply = reply.expect("the batch waited for the index step").unwrap();
            assert_eq!(reply.new, 3);
        });
        assert_eq!(store.last_line(session).unwrap(), 5);
    }
}
