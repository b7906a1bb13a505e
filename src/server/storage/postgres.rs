//! The team backend: PostgreSQL. `kcap serve` keeps no state of its own, so any number of
//! replicas can share one database. Each write is one transaction that first locks the
//! session's row (`SELECT … FOR UPDATE`): writers of one session queue in the database, in any
//! replica, and the unique key on (session, line number) keeps every line once even so.
//! `synchronous_commit` is left at its default (on): a commit is durable when it returns.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard};

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement, Transaction};

use super::chunks::{self, STATEMENT_BYTES};
use super::columns::{lifecycle_of, session_of, signed, SESSION_ROW};
use super::migrations::{pending, POSTGRES};
use super::rules::{self, LineOutcome, Slot};
use super::{
    Backend, Batch, Lifecycle, LifecycleKind, Principal, SessionLines, SessionRow, SessionSummary,
    StorageError, StoredLine, TokenInfo,
};
use crate::ids::SessionId;
use crate::machine::Millis;
use crate::protocol::IngestReply;
use crate::server::usage::Shutdown;

/// Connections one server keeps at most (the ingest concurrency cap bounds use well below).
const POOL: usize = 16;
/// Advisory lock key that serialises migrations of replicas starting together.
const MIGRATION_LOCK: i64 = 0x6b63_6170_6d69_6772; // "kcapmigr"

/// The PostgreSQL backend.
pub struct Postgres {
    config: postgres::Config,
    options: super::PostgresOptions,
    described: String,
    idle: Mutex<Vec<Conn>>,
    open: Mutex<usize>,
    freed: Condvar,
}

fn db(e: postgres::Error) -> StorageError {
    StorageError::Database(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A pooled connection with the write statements it has prepared.
struct Conn {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
    /// The heaviest statement it sent (see [`chunks::weight`]): the client keeps buffers that
    /// large for the connection's life, so one heavier than [`STATEMENT_BYTES`] (a single line
    /// that large) is closed rather than pooled.
    carried: usize,
}

impl Conn {
    fn new(client: Client) -> Conn {
        Conn {
            client,
            prepared: HashMap::new(),
            carried: 0,
        }
    }
}

/// A write transaction whose statements are prepared once per connection, not once per call:
/// a query by text costs a parse/describe round trip and a fresh plan each time, which for the
/// few-line batches of live watchers was most of a batch's cost.
pub(crate) struct Tx<'a> {
    tx: Transaction<'a>,
    prepared: &'a mut HashMap<&'static str, Statement>,
    carried: &'a mut usize,
    /// Whether a statement failed because its cached plan went stale (see [`stale_plan`]).
    stale: bool,
}

/// Whether PostgreSQL refused a prepared statement whose result columns changed since it was
/// prepared ("cached plan must not change result type", SQLSTATE 0A000): another replica (or an
/// operator) changed the schema under this connection's statement cache. Told apart from other
/// 0A000 errors by the server function that raised it, which does not change with the server's
/// `lc_messages` language as the message does; the English text only when a server (or proxy)
/// sends no routine.
fn stale_plan(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::FEATURE_NOT_SUPPORTED)
        && e.as_db_error().is_some_and(|d| match d.routine() {
            Some(routine) => routine == "RevalidateCachedQuery",
            None => d.message().contains("cached plan must not change result type"),
        })
}

/// How long a pool checkout waits for a new connection to answer when the URL sets no
/// `connect_timeout`: a database that accepts and never answers must not hang a request forever.
const CHECKOUT_CONNECT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a connection could not be made.
enum ConnectFailure {
    /// The client library's error.
    Refused(postgres::Error),
    /// Nothing answered within the limit (the peer accepted, or the packets went nowhere).
    Silent(std::time::Duration),
}

/// Connects with `config`, giving up after `limit`. The client's own `connect_timeout` covers
/// only the TCP connect, not the start-up exchange after it, so a peer that accepts and never
/// answers would hang the caller forever: the attempt runs on a thread of its own, which is
/// left to end by itself (its socket times out or closes) when the limit passes.
fn connect_within(config: &postgres::Config, limit: std::time::Duration) -> Result<Client, ConnectFailure> {
    let mut config = config.clone();
    if config.get_connect_timeout().is_none_or(|t| *t > limit) {
        config.connect_timeout(limit);
    }
    let (send, receive) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("kcap-pg-connect".into())
        .spawn(move || {
            // A client that arrives after the caller gave up is dropped here, closing it.
            let _ = send.send(config.connect(NoTls));
        });
    if spawned.is_err() {
        return Err(ConnectFailure::Silent(std::time::Duration::ZERO));
    }
    match receive.recv_timeout(limit) {
        Ok(connected) => connected.map_err(ConnectFailure::Refused),
        Err(_) => Err(ConnectFailure::Silent(limit)),
    }
}

/// A connection error with its underlying causes ("db error" alone says nothing: the cause is
/// "connection refused", "password authentication failed", …).
fn explain(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Refused(e) => f.write_str(&explain(e)),
            ConnectFailure::Silent(limit) => write!(
                f,
                "no answer within {:.1} s (something accepts connections there but does not speak PostgreSQL, or the network drops them)",
                limit.as_secs_f64()
            ),
        }
    }
}

/// Whether the server no longer knows a statement this connection cached (SQLSTATE 26000,
/// "prepared statement does not exist"): behind a transaction pooler the cache may name
/// statements prepared on another server connection, and an operator may `DEALLOCATE` them.
fn lost_statement(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME)
}

/// Whether a failed connection attempt at start is worth repeating: the server is not
/// accepting connections yet (refused, reset, or SQLSTATE 57P03 "the database system is
/// starting up"), by error kind and SQLSTATE, never by message text.
fn not_up_yet(e: &postgres::Error) -> bool {
    use std::io::ErrorKind;
    if e.code() == Some(&postgres::error::SqlState::CANNOT_CONNECT_NOW) {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotFound
                    | ErrorKind::TimedOut
            );
        }
        source = s.source();
    }
    false
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl Tx<'_> {
    /// Notes that the next statement carries `weight` bytes of parameters.
    fn carrying(&mut self, weight: usize) {
        *self.carried = (*self.carried).max(weight);
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }

    /// Notes a stale cached plan on the way out, so [`Postgres::write`] can start again.
    fn noted<T>(&mut self, r: Result<T, postgres::Error>) -> Result<T, postgres::Error> {
        if let Err(e) = &r {
            self.stale |= stale_plan(e) || lost_statement(e);
        }
        r
    }

    fn execute(&mut self, sql: &'static str, params: &Params<'_>) -> Result<u64, postgres::Error> {
        let r = self.statement(sql).and_then(|s| self.tx.execute(&s, params));
        self.noted(r)
    }

    fn query(&mut self, sql: &'static str, params: &Params<'_>) -> Result<Vec<Row>, postgres::Error> {
        let r = self.statement(sql).and_then(|s| self.tx.query(&s, params));
        self.noted(r)
    }

    fn query_one(&mut self, sql: &'static str, params: &Params<'_>) -> Result<Row, postgres::Error> {
        let r = self.statement(sql).and_then(|s| self.tx.query_one(&s, params));
        self.noted(r)
    }

    fn query_opt(&mut self, sql: &'static str, params: &Params<'_>) -> Result<Option<Row>, postgres::Error> {
        let r = self.statement(sql).and_then(|s| self.tx.query_opt(&s, params));
        self.noted(r)
    }
}

impl Postgres {
    /// Connects to `url` and applies pending migrations. Callable from async code too: the
    /// synchronous client runs a runtime of its own, so this works on a thread of its own.
    pub fn connect(url: &str) -> Result<Postgres, StorageError> {
        Self::connect_with(url, super::PostgresOptions::default())
    }

    /// Like [`Postgres::connect`], with these options.
    pub fn connect_with(url: &str, options: super::PostgresOptions) -> Result<Postgres, StorageError> {
        std::thread::scope(|s| {
            s.spawn(|| Self::connect_here(url, options))
                .join()
                .unwrap_or_else(|_| Err(StorageError::Database("connecting panicked".into())))
        })
    }

    fn connect_here(url: &str, options: super::PostgresOptions) -> Result<Postgres, StorageError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| StorageError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CHECKOUT_CONNECT);
        }
        let described = format!(
            "PostgreSQL database {:?} at {}",
            config.get_dbname().unwrap_or("(default)"),
            config
                .get_hosts()
                .iter()
                .map(|h| match h {
                    postgres::config::Host::Tcp(h) => h.clone(),
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        );
        let pg = Postgres {
            config,
            options,
            described,
            idle: Mutex::new(Vec::new()),
            open: Mutex::new(0),
            freed: Condvar::new(),
        };
        let mut conn = pg.first_connection()?;
        let migrated = migrate(&mut conn.client);
        pg.checkin(conn);
        migrated?;
        Ok(pg)
    }

    /// The first connection, tried again while the server is not up yet, for up to
    /// [`PostgresOptions::start_wait`](super::PostgresOptions::start_wait).
    fn first_connection(&self) -> Result<Conn, StorageError> {
        use std::time::{Duration, Instant};
        let deadline = Instant::now() + self.options.start_wait;
        let waited = || {
            format!(
                " (waited {} s; see --database-wait)",
                self.options.start_wait.as_secs_f64()
            )
        };
        let mut logged = false;
        loop {
            // Each attempt gets the time left (at least a second, so a zero wait still tries).
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            match connect_within(&self.config, left) {
                Ok(client) => {
                    *lock(&self.open) += 1;
                    return Ok(Conn::new(client));
                }
                Err(ConnectFailure::Refused(e)) if not_up_yet(&e) && Instant::now() < deadline => {
                    if !logged {
                        tracing::warn!(error = %explain(&e), wait_s = self.options.start_wait.as_secs_f64(), "PostgreSQL is not accepting connections yet; waiting");
                        logged = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(failure) => {
                    let waited = match &failure {
                        ConnectFailure::Refused(e) if !not_up_yet(e) => String::new(),
                        _ => waited(),
                    };
                    return Err(StorageError::Database(format!(
                        "cannot connect to {}: {failure}{waited}",
                        self.described
                    )));
                }
            }
        }
    }

    fn checkout(&self) -> Result<Conn, StorageError> {
        loop {
            if let Some(c) = lock(&self.idle).pop() {
                if !c.client.is_closed() {
                    return Ok(c);
                }
                *lock(&self.open) -= 1;
                continue;
            }
            let mut open = lock(&self.open);
            if *open < POOL {
                *open += 1;
                drop(open);
                let limit = self
                    .config
                    .get_connect_timeout()
                    .copied()
                    .unwrap_or(CHECKOUT_CONNECT);
                return match connect_within(&self.config, limit) {
                    Ok(client) => Ok(Conn::new(client)),
                    Err(failure) => {
                        *lock(&self.open) -= 1;
                        self.freed.notify_one();
                        Err(StorageError::Database(format!(
                            "cannot connect to {}: {failure}",
                            self.described
                        )))
                    }
                };
            }
            let (guard, _) = self
                .freed
                .wait_timeout(open, std::time::Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner());
            drop(guard);
        }
    }

    fn checkin(&self, conn: Conn) {
        if conn.client.is_closed() {
            *lock(&self.open) -= 1;
        } else if conn.carried > STATEMENT_BYTES {
            *lock(&self.open) -= 1;
            // Closing waits on the client's own runtime, which may not happen on an async
            // caller's thread (see `Drop for Postgres`).
            let _ = std::thread::Builder::new()
                .name("kcap-pg-close".into())
                .spawn(move || drop(conn));
        } else {
            lock(&self.idle).push(conn);
        }
        self.freed.notify_one();
    }

    /// Runs `f` on a pooled connection. Behind a transaction-pooling proxy, inside a
    /// transaction of its own, so its statements (prepared, run and closed by the client
    /// library) all reach the same server connection.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut conn = self.checkout()?;
        let pooled = self.options.transaction_pooling;
        let out = (|| {
            if pooled {
                conn.client.batch_execute("BEGIN").map_err(db)?;
            }
            let out = f(&mut conn.client);
            if pooled {
                let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
                conn.client.batch_execute(end).map_err(db)?;
            }
            out
        })();
        self.checkin(conn);
        out
    }

    /// Runs `f` in one transaction on a pooled connection (its own `BEGIN … COMMIT`, whatever
    /// the proxy mode).
    pub(crate) fn transaction<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut conn = self.checkout()?;
        let out = (|| {
            let mut tx = conn.client.transaction().map_err(db)?;
            let out = f(&mut tx)?;
            tx.commit().map_err(db)?;
            Ok(out)
        })();
        self.checkin(conn);
        out
    }

    /// Runs `f` in one write transaction with this connection's prepared statements. If a
    /// cached statement's plan went stale (the schema changed under it), the cache is emptied
    /// and `f` runs once more in a new transaction: the first one rolled back, so nothing is
    /// applied twice.
    fn write<T>(&self, mut f: impl FnMut(&mut Tx<'_>) -> Result<T, StorageError>) -> Result<T, StorageError> {
        let mut conn = self.checkout()?;
        let mut out = self.attempt(&mut conn, &mut f);
        if let Err((_, true)) = &out {
            tracing::warn!("PostgreSQL: a cached statement went stale (schema changed by another replica, or the statement is gone from the server connection); statements prepared again");
            conn.prepared.clear();
            out = self.attempt(&mut conn, &mut f);
        }
        self.checkin(conn);
        out.map_err(|(e, _)| e)
    }

    /// One try of [`Postgres::write`]; an error says whether a stale plan caused it.
    fn attempt<T>(
        &self,
        conn: &mut Conn,
        f: &mut impl FnMut(&mut Tx<'_>) -> Result<T, StorageError>,
    ) -> Result<T, (StorageError, bool)> {
        let Conn {
            client,
            prepared,
            carried,
        } = conn;
        let mut tx = Tx {
            tx: client.transaction().map_err(|e| (db(e), false))?,
            prepared,
            carried,
            stale: false,
        };
        let out = f(&mut tx);
        if self.options.transaction_pooling {
            // Close every statement before the commit or rollback hands the server connection
            // back to the proxy, on every path: none may outlive its transaction, and one kept
            // here would name a statement the next server connection never saw.
            tx.prepared.clear();
        }
        let out = out.map_err(|e| (e, tx.stale))?;
        tx.tx.commit().map_err(|e| (db(e), false))?;
        Ok(out)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Each client owns a small runtime, which may not be dropped inside an async context
        // (a server dropped at the end of an async test): close them on a thread of their own.
        let idle = std::mem::take(&mut *lock(&self.idle));
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

fn migrate(client: &mut Client) -> Result<(), StorageError> {
    // One step per transaction, under a transaction-level advisory lock (a session-level lock
    // would not survive a transaction-pooling proxy): replicas starting together take turns, and
    // each reads the version under the lock before applying the next step.
    loop {
        let mut tx = client.transaction().map_err(db)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(db)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS kcap_schema (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .map_err(db)?;
        let current: i64 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM kcap_schema", &[])
            .map_err(db)?
            .get(0);
        let Some(m) = pending(POSTGRES, current)
            .map_err(StorageError::Database)?
            .first()
        else {
            return tx.commit().map_err(db);
        };
        let server: i32 = tx
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .map_err(db)?
            .get(0);
        supported(server)?;
        tx.batch_execute(m.sql).map_err(db)?;
        tx.execute(
            "INSERT INTO kcap_schema (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        tracing::info!(version = m.version, name = m.name, "PostgreSQL schema migrated");
    }
}

/// The oldest PostgreSQL the migrations run on (`ALTER COLUMN … DROP EXPRESSION` in migration 6
/// came with 13), as `server_version_num`.
const OLDEST_SERVER: i32 = 130_000;

/// Refuses a server too old for the migrations with a message that says so, rather than the
/// syntax error a migration would fail with halfway through.
fn supported(server_version_num: i32) -> Result<(), StorageError> {
    if server_version_num >= OLDEST_SERVER {
        return Ok(());
    }
    Err(StorageError::Database(format!(
        "PostgreSQL {}.{} is too old: kcap serve needs PostgreSQL 13 or later",
        server_version_num / 10_000,
        server_version_num % 10_000
    )))
}

pub(crate) fn key(session: SessionId) -> Vec<u8> {
    session.as_bytes().to_vec()
}

/// Takes the session's row (creating it if new) and locks it for this transaction; returns its
/// frontier. Ownership is decided here, inside the transaction.
fn claim(tx: &mut Tx<'_>, session: SessionId, writer: &Principal, now: Millis) -> Result<u64, StorageError> {
    let k = key(session);
    tx.execute(
        "INSERT INTO sessions (id, owner, first_seen, last_seen) VALUES ($1, $2, $3, $3) \
         ON CONFLICT (id) DO NOTHING",
        &[&k, &writer.owner_name(), &(now as i64)],
    )
    .map_err(db)?;
    let row = tx
        .query_one(
            "SELECT owner, contiguous FROM sessions WHERE id = $1 FOR UPDATE",
            &[&k],
        )
        .map_err(db)?;
    let owner: Option<String> = row.get(0);
    rules::may_write(owner.as_deref(), writer)?;
    Ok(row.get::<_, i64>(1) as u64)
}

fn slot_of(blank: bool, id: Option<Vec<u8>>) -> Slot {
    match (blank, id.and_then(|b| uuid::Uuid::from_slice(&b).ok())) {
        (false, Some(id)) => Slot::Line(id),
        _ => Slot::Blank,
    }
}

fn frontier(tx: &mut Tx<'_>, session: SessionId, from: u64) -> Result<u64, StorageError> {
    let k = key(session);
    // Nothing at the old frontier: it cannot move (one index probe).
    if tx
        .query_opt(
            "SELECT 1 FROM lines WHERE session = $1 AND n = $2",
            &[&k, &(from as i64)],
        )
        .map_err(db)?
        .is_none()
    {
        return Ok(from);
    }
    // In pages, so a long run is never one huge result.
    let (mut scanned, mut frontier) = (from, from);
    loop {
        let rows = tx
            .query(
                "SELECT n, blank FROM lines WHERE session = $1 AND n >= $2 ORDER BY n LIMIT 10000",
                &[&k, &(scanned as i64)],
            )
            .map_err(db)?;
        let page: Vec<(u64, bool)> = rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
            .collect();
        let unbroken = page
            .iter()
            .enumerate()
            .all(|(i, (n, _))| *n == scanned + i as u64);
        let advanced = rules::advance(scanned, page.iter().copied());
        if advanced > scanned {
            frontier = advanced;
        }
        if page.len() < 10000 || !unbroken {
            return Ok(frontier);
        }
        scanned += page.len() as u64;
    }
}

/// A session row read with [`SESSION_ROW`].
pub(crate) fn row(r: &postgres::Row) -> SessionRow {
    SessionRow {
        session: session_of(r.get::<_, Vec<u8>>(0)),
        owner: r.get(1),
        agent: r.get(2),
        cwd: r.get(3),
        repository: r.get(4),
        contiguous: r.get::<_, i64>(5) as u64,
        lines: r.get::<_, i64>(6) as u64,
        duplicates: r.get::<_, i64>(7) as u64,
        conflicts: r.get::<_, i64>(8) as u64,
        first_seen: r.get::<_, i64>(9) as Millis,
        last_seen: r.get::<_, i64>(10) as Millis,
        started: lifecycle_of(r.get(11)),
        ended: lifecycle_of(r.get(12)),
        notifications: r.get::<_, i64>(13) as u64,
        last_notification: None,
        has_usage_checkpoints: r.get(14),
    }
}

pub(crate) fn summary_of(c: &mut Client, mut row: SessionRow) -> Result<SessionSummary, StorageError> {
    let k = key(row.session);
    row.last_notification = c
        .query_opt(
            "SELECT event FROM notifications WHERE session = $1 ORDER BY seq DESC LIMIT 1",
            &[&k],
        )
        .map_err(db)?
        .and_then(|r| serde_json::from_str(&r.get::<_, String>(0)).ok());
    let shutdowns: Vec<Shutdown> = c
        .query("SELECT usage FROM shutdowns WHERE session = $1 ORDER BY n", &[&k])
        .map_err(db)?
        .iter()
        .filter_map(|r| serde_json::from_str(&r.get::<_, String>(0)).ok())
        .collect();
    Ok(rules::summarize(row, &shutdowns))
}

/// A session's summary, `None` if it is unknown: the API's and the web UI's reads alike.
pub(crate) fn summary_by_id(
    c: &mut Client,
    session: SessionId,
) -> Result<Option<SessionSummary>, StorageError> {
    let Some(r) = c
        .query_opt(&format!("{SESSION_ROW} WHERE id = $1"), &[&key(session)])
        .map_err(db)?
    else {
        return Ok(None);
    };
    summary_of(c, row(&r)).map(Some)
}

impl Backend for Postgres {
    fn ingest(&self, batch: &Batch) -> Result<IngestReply, StorageError> {
        rules::validate(batch)?;
        let session = batch.session;
        let k = key(session);
        self.write(|tx| {
            let old = claim(tx, session, &batch.writer, batch.now)?;
            // In runs of bounded size, all in this one transaction: a statement's parameters
            // are encoded whole, and the client keeps buffers as large as its largest statement.
            let mut inserted: HashSet<i64> = HashSet::with_capacity(batch.lines.len());
            let mut stored: HashMap<i64, Slot> = HashMap::new();
            for run in chunks::runs(&batch.lines, STATEMENT_BYTES) {
                tx.carrying(run.iter().map(chunks::weight).sum());
                let numbers: Vec<i64> = run.iter().map(|l| l.number as i64).collect();
                let ids: Vec<&[u8]> = run.iter().map(|l| l.id.as_bytes().as_slice()).collect();
                let texts: Vec<&[u8]> = run.iter().map(|l| l.text.as_bytes()).collect();
                let new: HashSet<i64> = tx
                    .query(
                        "INSERT INTO lines (session, n, blank, id, text) \
                         SELECT $1, n, false, id, text FROM unnest($2::int8[], $3::bytea[], $4::bytea[]) AS t(n, id, text) \
                         ON CONFLICT (session, n) DO NOTHING RETURNING n",
                        &[&k, &numbers, &ids, &texts],
                    )
                    .map_err(db)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let taken: Vec<i64> = numbers.iter().copied().filter(|n| !new.contains(n)).collect();
                if !taken.is_empty() {
                    for r in tx
                        .query(
                            "SELECT n, blank, id FROM lines WHERE session = $1 AND n = ANY($2)",
                            &[&k, &taken],
                        )
                        .map_err(db)?
                    {
                        stored.insert(r.get::<_, i64>(0), slot_of(r.get(1), r.get(2)));
                    }
                }
                inserted.extend(new);
            }
            let mut tally = rules::Tally::default();
            for line in &batch.lines {
                let n = line.number as i64;
                let before = if inserted.contains(&n) {
                    None
                } else {
                    Some(stored.get(&n).copied().unwrap_or(Slot::Blank))
                };
                match rules::classify(before, line.id) {
                    LineOutcome::New | LineOutcome::ReplacesBlank => {
                        if before.is_some() {
                            tx.execute(
                                "UPDATE lines SET blank = false, id = $3, text = $4, search = NULL WHERE session = $1 AND n = $2",
                                &[&k, &n, &line.id.as_bytes().as_slice(), &line.text.as_bytes()],
                            )
                            .map_err(db)?;
                        }
                        if let Some(usage) = tally.stored(&line.text) {
                            tx.execute(
                                "INSERT INTO shutdowns (session, n, usage) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                                &[&k, &n, &usage],
                            )
                            .map_err(db)?;
                        }
                    }
                    LineOutcome::Duplicate => tally.duplicate(),
                    LineOutcome::Conflict => {
                        let kept = tx
                            .execute(
                                "INSERT INTO conflicts (session, n, id, text, received_at) VALUES ($1, $2, $3, $4, $5) \
                                 ON CONFLICT DO NOTHING",
                                &[&k, &n, &line.id.as_bytes().as_slice(), &line.text.as_bytes(), &(batch.now as i64)],
                            )
                            .map_err(db)?;
                        tally.conflict(kept);
                    }
                }
            }
            let plain: Vec<u64> = batch.lines.iter().map(|l| l.number).collect();
            let blanks: Vec<i64> = rules::admissible_blanks(&plain, &batch.blanks)?
                .into_iter()
                .map(|n| n as i64)
                .collect();
            if !blanks.is_empty() {
                tx.execute(
                    "INSERT INTO lines (session, n, blank) SELECT $1, n, true FROM unnest($2::int8[]) AS t(n) \
                     ON CONFLICT DO NOTHING",
                    &[&k, &blanks],
                )
                .map_err(db)?;
            }
            let contiguous = frontier(tx, session, old)?;
            tx.execute(
                "UPDATE sessions SET contiguous = $2, lines = lines + $3, duplicates = duplicates + $4, \
                 conflicts = conflicts + $5, last_seen = greatest(last_seen, $6), \
                 has_usage_checkpoints = has_usage_checkpoints OR $7, agent = coalesce(agent, $8), \
                 repository = coalesce($9, repository) WHERE id = $1",
                &[
                    &k,
                    &(contiguous as i64),
                    &(tally.reply.new as i64),
                    &(tally.row_duplicates() as i64),
                    &(tally.row_conflicts() as i64),
                    &(batch.now as i64),
                    &tally.checkpoints,
                    &batch.vendor,
                    &batch.repository,
                ],
            )
            .map_err(db)?;
            Ok(tally.reply)
        })
    }

    fn last_line(&self, session: SessionId) -> Result<i64, StorageError> {
        self.with(|c| {
            let contiguous = c
                .query_opt("SELECT contiguous FROM sessions WHERE id = $1", &[&key(session)])
                .map_err(db)?
                .map_or(0, |r| r.get::<_, i64>(0));
            Ok(rules::last_line_of(contiguous as u64))
        })
    }

    fn record_lifecycle(
        &self,
        session: SessionId,
        kind: LifecycleKind,
        event: &Lifecycle,
        writer: &Principal,
    ) -> Result<(), StorageError> {
        let k = key(session);
        let json = serde_json::to_string(event).map_err(|e| StorageError::Invalid(e.to_string()))?;
        let now = event.received_at as i64;
        self.write(|tx| {
            claim(tx, session, writer, event.received_at)?;
            match kind {
                LifecycleKind::Start => tx.execute(
                    "UPDATE sessions SET started = $2, cwd = coalesce($3, cwd), last_seen = greatest(last_seen, $4) WHERE id = $1",
                    &[&k, &json, &event.cwd, &now],
                ),
                LifecycleKind::End => tx.execute(
                    "UPDATE sessions SET ended = $2, cwd = coalesce(cwd, $3), last_seen = greatest(last_seen, $4) WHERE id = $1",
                    &[&k, &json, &event.cwd, &now],
                ),
                LifecycleKind::Notification => tx
                    .execute(
                        "INSERT INTO notifications (session, received_at, event) VALUES ($1, $2, $3)",
                        &[&k, &now, &json],
                    )
                    .and_then(|_| {
                        tx.execute(
                            "UPDATE sessions SET notifications = notifications + 1, last_seen = greatest(last_seen, $2) WHERE id = $1",
                            &[&k, &now],
                        )
                    }),
            }
            .map_err(db)?;
            Ok(())
        })
    }

    fn summary(&self, session: SessionId) -> Result<Option<SessionSummary>, StorageError> {
        self.with(|c| summary_by_id(c, session))
    }

    fn summaries(&self, limit: Option<u64>) -> Result<Vec<SessionSummary>, StorageError> {
        self.with(|c| {
            let limit = limit.map(signed);
            let rows: Vec<SessionRow> = c
                .query(
                    &format!("{SESSION_ROW} ORDER BY last_seen DESC LIMIT $1"),
                    &[&limit],
                )
                .map_err(db)?
                .iter()
                .map(row)
                .collect();
            rows.into_iter().map(|r| summary_of(c, r)).collect()
        })
    }

    fn lines(&self, session: SessionId) -> Result<SessionLines, StorageError> {
        self.with(|c| {
            let k = key(session);
            let mut out = SessionLines::default();
            for r in c
                .query(
                    "SELECT n, id, text FROM lines WHERE session = $1 AND NOT blank ORDER BY n",
                    &[&k],
                )
                .map_err(db)?
            {
                let id = uuid::Uuid::from_slice(&r.get::<_, Vec<u8>>(1)).unwrap_or_default();
                let text = String::from_utf8_lossy(&r.get::<_, Vec<u8>>(2)).into_owned();
                out.lines
                    .insert(r.get::<_, i64>(0) as u64, StoredLine { id, text });
            }
            if let Some(r) = c
                .query_opt("SELECT duplicates, conflicts FROM sessions WHERE id = $1", &[&k])
                .map_err(db)?
            {
                out.duplicates = r.get::<_, i64>(0) as u64;
                out.conflicts = r.get::<_, i64>(1) as u64;
            }
            Ok(out)
        })
    }

    fn session_ids(&self) -> Result<Vec<SessionId>, StorageError> {
        self.with(|c| {
            Ok(c.query("SELECT id FROM sessions", &[])
                .map_err(db)?
                .iter()
                .filter_map(|r| <[u8; 16]>::try_from(r.get::<_, Vec<u8>>(0).as_slice()).ok())
                .map(SessionId::from_bytes)
                .collect())
        })
    }

    fn add_token(&self, name: &str, hash: &[u8; 32], now: Millis) -> Result<(), StorageError> {
        self.write(|tx| {
            let added = tx
                .execute(
                    "INSERT INTO tokens (name, hash, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&name, &hash.as_slice(), &(now as i64)],
                )
                .map_err(db)?;
            rules::token_added(name, added)
        })
    }

    fn token_name(&self, hash: &[u8; 32]) -> Result<Option<String>, StorageError> {
        self.with(|c| {
            Ok(c.query_opt(
                "SELECT name FROM tokens WHERE hash = $1 AND revoked_at IS NULL",
                &[&hash.as_slice()],
            )
            .map_err(db)?
            .map(|r| r.get(0)))
        })
    }

    fn tokens(&self) -> Result<Vec<TokenInfo>, StorageError> {
        self.with(|c| {
            Ok(c.query(
                "SELECT name, created_at, revoked_at FROM tokens ORDER BY name",
                &[],
            )
            .map_err(db)?
            .iter()
            .map(|r| TokenInfo {
                name: r.get(0),
                created_at: r.get::<_, i64>(1) as Millis,
                revoked_at: r.get::<_, Option<i64>>(2).map(|t| t as Millis),
            })
            .collect())
        })
    }

    fn revoke_token(&self, name: &str, now: Millis) -> Result<bool, StorageError> {
        self.write(|tx| {
            let revoked = tx
                .execute(
                    "UPDATE tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
                    &[&name, &(now as i64)],
                )
                .map_err(db)?;
            let exists: bool = tx
                .query_one("SELECT EXISTS (SELECT 1 FROM tokens WHERE name = $1)", &[&name])
                .map_err(db)?
                .get(0);
            rules::token_revoked(name, revoked, exists)
        })
    }

    fn has_tokens(&self) -> Result<bool, StorageError> {
        self.with(|c| {
            Ok(c.query_one("SELECT EXISTS (SELECT 1 FROM tokens)", &[])
                .map_err(db)?
                .get(0))
        })
    }

    fn describe(&self) -> String {
        self.described.clone()
    }
}

#[cfg(test)]
#[path = "../../../tests/common/postgres.rs"]
#[allow(dead_code)]
mod pg_cluster;

/// A loopback port with nothing listening (for [`pg_cluster`]).
#[cfg(test)]
fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::storage::{IncomingLine, PostgresOptions};
    use std::time::{Duration, Instant};

    fn batch(session: SessionId, numbers: std::ops::Range<u64>) -> Batch {
        Batch {
            session,
            lines: numbers
                .map(|n| {
                    let text = format!(r#"{{"type":"x","n":{n}}}"#);
                    IncomingLine {
                        number: n,
                        id: crate::ids::event_id(&session, n, text.as_bytes()),
                        text,
                    }
                })
                .collect(),
            blanks: Vec::new(),
            vendor: None,
            repository: None,
            writer: Principal::Anonymous,
            now: 1,
        }
    }

    /// A line of about `size` bytes whose text names its number (so every id differs).
    fn sized(session: SessionId, n: u64, size: usize) -> IncomingLine {
        let text = format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(size));
        IncomingLine {
            number: n,
            id: crate::ids::event_id(&session, n, text.as_bytes()),
            text,
        }
    }

    #[test]
    fn a_batch_heavier_than_one_statement_is_stored_whole_and_once_in_runs() {
        let Some(cluster) = pg_cluster::Cluster::start("postgres::batch in runs") else {
            return;
        };
        let pg = Postgres::connect(&cluster.database()).unwrap();
        let sid = SessionId::new_random();
        // About 2.5 statements' worth of 4 kB lines.
        let count = (5 * STATEMENT_BYTES / 2 / 4096) as u64;
        let lines: Vec<IncomingLine> = (0..count).map(|n| sized(sid, n, 4000)).collect();
        assert!(chunks::runs(&lines, STATEMENT_BYTES).count() >= 3);
        // Stored before: line 1 as sent (a replay), line 2 differently (a conflict), a blank
        // marker in the last run (replaced), and a line past the batch.
        let before = Batch {
            lines: vec![lines[1].clone(), sized(sid, 2, 10), sized(sid, count, 10)],
            blanks: vec![count - 2],
            ..batch(sid, 0..0)
        };
        assert_eq!(pg.ingest(&before).unwrap().new, 3);
        let big = Batch {
            lines: lines.clone(),
            ..batch(sid, 0..0)
        };
        let reply = pg.ingest(&big).unwrap();
        // Its statements stayed within the bound, so its connection went back to the pool.
        assert_eq!(lock(&pg.idle).len(), 1, "the connection was pooled");
        assert_eq!((reply.new, reply.duplicates, reply.conflicts), (count - 2, 1, 1));
        let stored = pg.lines(sid).unwrap();
        assert_eq!(stored.lines.len() as u64, count + 1);
        for line in lines.iter().filter(|l| l.number != 2) {
            assert_eq!(stored.lines[&line.number].text, line.text, "line {}", line.number);
        }
        assert_eq!(stored.lines[&2].text, sized(sid, 2, 10).text);
        assert_eq!(pg.last_line(sid).unwrap(), count as i64);
        // Sent again: nothing new, nothing twice.
        let again = pg.ingest(&big).unwrap();
        assert_eq!((again.new, again.duplicates), (0, count - 1));
        assert_eq!(pg.lines(sid).unwrap().lines.len() as u64, count + 1);
    }

    #[test]
    fn a_connection_that_carried_one_line_heavier_than_a_statement_is_closed_not_pooled() {
        let Some(cluster) = pg_cluster::Cluster::start("postgres::heavy line") else {
            return;
        };
        let pg = Postgres::connect(&cluster.database()).unwrap();
        let sid = SessionId::new_random();
        assert_eq!(pg.ingest(&batch(sid, 0..3)).unwrap().new, 3);
        assert_eq!((lock(&pg.idle).len(), *lock(&pg.open)), (1, 1));
        let heavy = Batch {
            lines: vec![sized(sid, 3, STATEMENT_BYTES)],
            ..batch(sid, 0..0)
        };
        assert_eq!(pg.ingest(&heavy).unwrap().new, 1);
        assert_eq!((lock(&pg.idle).len(), *lock(&pg.open)), (0, 0));
        assert_eq!(pg.lines(sid).unwrap().lines[&3].text, heavy.lines[0].text);
        assert_eq!(pg.ingest(&batch(sid, 4..6)).unwrap().new, 2);
        assert_eq!(pg.last_line(sid).unwrap(), 5);
    }

    #[test]
    fn a_cached_plan_made_stale_by_another_replicas_migration_is_prepared_again() {
        let Some(cluster) = pg_cluster::Cluster::start("postgres::stale cached plan") else {
            return;
        };
        let url = cluster.database();
        let pg = Postgres::connect(&url).unwrap();
        let sid = SessionId::new_random();
        assert_eq!(pg.ingest(&batch(sid, 0..3)).unwrap().new, 3);
        // Another replica changes a column type read by a statement this connection cached.
        let mut other = Client::connect(&url, NoTls).unwrap();
        other
            .batch_execute("ALTER TABLE sessions ALTER COLUMN owner TYPE VARCHAR(200)")
            .unwrap();
        let again = pg.ingest(&batch(sid, 3..6));
        assert_eq!(again.map(|r| r.new), Ok(3));
        assert_eq!(pg.last_line(sid).unwrap(), 5);
        assert_eq!(pg.lines(sid).unwrap().lines.len(), 6);
    }

    #[test]
    fn behind_a_transaction_pooler_no_prepared_statement_outlives_its_transaction() {
        let Some(cluster) = pg_cluster::Cluster::start("postgres::transaction pooling") else {
            return;
        };
        let url = cluster.database();
        for pooling in [false, true] {
            let options = PostgresOptions {
                transaction_pooling: pooling,
                ..PostgresOptions::default()
            };
            let pg = Postgres::connect_with(&url, options).unwrap();
            let sid = SessionId::new_random();
            assert_eq!(pg.ingest(&batch(sid, 0..3)).unwrap().new, 3);
            // The same (only) pooled connection: what does its server session still hold?
            let kept: Vec<String> = pg
                .with(|c| {
                    Ok(c.query("SELECT statement FROM pg_prepared_statements", &[])
                        .map_err(db)?
                        .iter()
                        .map(|r| r.get(0))
                        .collect())
                })
                .unwrap();
            let ingest_kept = kept.iter().any(|s| s.contains("INSERT INTO lines"));
            assert_eq!(ingest_kept, !pooling, "pooling {pooling}: {kept:?}");
            assert_eq!(pg.last_line(sid).unwrap(), 2);
        }
    }

    /// What the only pooled connection's server session still holds prepared (besides this
    /// very query, prepared to ask).
    #[track_caller]
    fn prepared_on_server(pg: &Postgres) -> Vec<String> {
        pg.with(|c| {
            Ok(c.query(
                "SELECT statement FROM pg_prepared_statements WHERE statement NOT LIKE '%pg_prepared%'",
                &[],
            )
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
        .unwrap()
    }

    #[test]
    fn behind_a_transaction_pooler_a_failed_write_keeps_no_statement_either() {
        let Some(cluster) = pg_cluster::Cluster::start("postgres::pooling failed write") else {
            return;
        };
        let options = PostgresOptions {
            transaction_pooling: true,
            ..PostgresOptions::default()
        };
        let pg = Postgres::connect_with(&cluster.database(), options).unwrap();
        let failed = pg.write(|tx| {
            tx.query_one("SELECT 41 + 1", &[]).map_err(db)?;
            tx.query_one("SELECT 1 / 0", &[]).map_err(db)
        });
        assert!(failed.is_err());
        assert!(pg
            .write(|_| Err::<(), _>(StorageError::Invalid("refused".into())))
            .is_err());
        let kept = prepared_on_server(&pg);
        assert!(kept.is_empty(), "{kept:?}");
        let sid = SessionId::new_random();
        assert_eq!(pg.ingest(&batch(sid, 0..3)).unwrap().new, 3);
    }

    #[test]
    fn a_cached_statement_gone_from_the_server_is_prepared_again() {
        let Some(cluster) = pg_cluster::Cluster::start("postgres::statement gone") else {
            return;
        };
        let pg = Postgres::connect(&cluster.database()).unwrap();
        let sid = SessionId::new_random();
        assert_eq!(pg.ingest(&batch(sid, 0..3)).unwrap().new, 3);
        // What a transaction pooler does to a cache: the server connection no longer has them.
        pg.with(|c| c.batch_execute("DEALLOCATE ALL").map_err(db))
            .unwrap();
        assert_eq!(pg.ingest(&batch(sid, 3..6)).map(|r| r.new), Ok(3));
        assert_eq!(pg.last_line(sid).unwrap(), 5);
    }

    #[test]
    fn a_listener_that_never_answers_fails_the_start_within_the_wait() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts, keeps every connection open, never says a word.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in listener.incoming() {
                held.push(c);
            }
        });
        let options = PostgresOptions {
            start_wait: Duration::from_secs(2),
            ..PostgresOptions::default()
        };
        let url = format!("postgres://kcap@127.0.0.1:{port}/kcap");
        let started = Instant::now();
        let err = Postgres::connect_with(&url, options)
            .err()
            .expect("nothing answers");
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(8), "waited {waited:?}: {err}");
        let text = err.to_string();
        assert!(text.contains("no answer within"), "{text}");
        assert!(text.contains("--database-wait"), "{text}");
    }

    #[test]
    fn a_server_not_up_yet_is_waited_for_as_long_as_the_setting_says() {
        let options = PostgresOptions {
            start_wait: Duration::from_secs(1),
            ..PostgresOptions::default()
        };
        let closed = format!("postgres://kcap@127.0.0.1:{}/kcap", free_port().port());
        let started = Instant::now();
        let err = Postgres::connect_with(&closed, options)
            .err()
            .expect("nothing listens");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
            "waited {waited:?}"
        );
        assert!(err.to_string().contains("--database-wait"), "{err}");
        assert!(err.to_string().contains("refused"), "the cause is named: {err}");
        // A server that answers with another error (no such database) fails at once.
        let Some(cluster) = pg_cluster::Cluster::start("postgres::start wait") else {
            return;
        };
        let patient = PostgresOptions {
            start_wait: Duration::from_secs(20),
            ..PostgresOptions::default()
        };
        let started = Instant::now();
        let err = Postgres::connect_with(&cluster.url("no_such_database"), patient)
            .err()
            .expect("no such database");
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        assert!(!err.to_string().contains("--database-wait"), "{err}");
    }

    #[test]
    fn a_server_older_than_13_is_refused_by_name() {
        let err = supported(120_017).unwrap_err().to_string();
        assert!(err.contains("PostgreSQL 12.17 is too old"), "{err}");
        assert!(err.contains("13 or later"), "{err}");
        assert!(supported(130_000).is_ok());
        assert!(supported(150_018).is_ok());
    }
}
