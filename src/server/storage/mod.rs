//! The server's storage: one small interface ([`Backend`]), the rules every backend shares
//! ([`rules`]), and two backends: SQLite (embedded default) and PostgreSQL (teams, any number of
//! stateless replicas on one database).
//!
//! Every write is one transaction that takes the session's row first, so two writers of one
//! session (threads, or replicas on PostgreSQL) are serialised by the database, never by process
//! memory; a call returns only after its commit is durable, so whatever a 2xx or `last-line`
//! reports survives a kill -9.

mod chunks;
pub mod columns;
pub mod migrations;
pub mod postgres;
pub mod rules;
pub mod sled_import;
pub mod sqlite;
pub mod sqlite_search;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::SessionId;
use crate::machine::Millis;
use crate::protocol::IngestReply;
use crate::server::usage::Usage;
use crate::server::web::model::ReadModel;

/// One line of a batch, as the server stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingLine {
    /// Its 0-based line number in the transcript.
    pub number: u64,
    /// Its deterministic event id.
    pub id: uuid::Uuid,
    /// The (client-redacted) line.
    pub text: String,
}

/// Who is writing: decides ownership (see [`rules::may_write`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The server runs without authentication.
    Anonymous,
    /// The `--token` given to `kcap serve`: may write everywhere.
    Admin,
    /// A token made with `kcap serve token add <name>`, by name.
    Token(String),
}

impl Principal {
    /// The name a session written by this principal records as its owner.
    pub fn owner_name(&self) -> Option<&str> {
        match self {
            Principal::Token(name) => Some(name),
            Principal::Admin => Some("admin"),
            Principal::Anonymous => None,
        }
    }
}

/// A transcript batch, validated by [`rules::validate`] before a backend stores it.
#[derive(Debug, Clone)]
pub struct Batch {
    pub session: SessionId,
    pub lines: Vec<IncomingLine>,
    /// Numbers the client read and found blank (only [`rules::admissible_blanks`] count).
    pub blanks: Vec<u64>,
    pub vendor: Option<String>,
    pub repository: Option<String>,
    pub writer: Principal,
    pub now: Millis,
}

/// A stored line.
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
    /// `source` for a start, `ended_at` for an end, the message of a notification.
    pub detail: Option<String>,
}

/// Which lifecycle hook a [`Lifecycle`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleKind {
    Start,
    End,
    Notification,
}

/// A session's stored metadata, as a backend reads it (the input of [`rules::summarize`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub session: SessionId,
    pub owner: Option<String>,
    pub agent: Option<String>,
    pub cwd: Option<String>,
    pub repository: Option<String>,
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
    pub last_notification: Option<Lifecycle>,
    pub has_usage_checkpoints: bool,
}

/// What `GET /api/sessions[/{sid}]` answers for a session.
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
    /// The agent (vendor) that wrote it, e.g. "copilot".
    #[serde(default)]
    pub agent: Option<String>,
    /// The working directory its hooks reported.
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    /// The name of the token that first wrote it (`null` without authentication).
    #[serde(default)]
    pub owner: Option<String>,
    /// When it started (epoch ms): its start hook, else when its first write arrived.
    #[serde(default)]
    pub started_at: Option<Millis>,
    /// When its end hook arrived (epoch ms), if it did.
    #[serde(default)]
    pub ended_at: Option<Millis>,
    pub usage: Usage,
}

/// A named token as `kcap serve token list` shows it (never its secret, which is not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub name: String,
    pub created_at: Millis,
    /// When it was revoked; a revoked token no longer authenticates.
    pub revoked_at: Option<Millis>,
}

/// Why a storage call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The request is not acceptable (400).
    Invalid(String),
    /// The writer does not own the session (403).
    Forbidden(String),
    /// A name is already taken (409).
    Exists(String),
    /// The database failed; nothing was committed (500).
    Database(String),
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Invalid(m) | StorageError::Forbidden(m) | StorageError::Exists(m) => f.write_str(m),
            StorageError::Database(m) => write!(f, "database error: {m}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// A storage backend. Calls block (run them off the async workers); each write is one durable
/// transaction.
pub trait Backend: Send + Sync + 'static {
    /// Stores a batch by the shared rules; the reply counts new lines and duplicates.
    fn ingest(&self, batch: &Batch) -> Result<IngestReply, StorageError>;
    /// The highest line number below which nothing is missing; −1 when line 0 is missing.
    fn last_line(&self, session: SessionId) -> Result<i64, StorageError>;
    /// Records a lifecycle hook (notifications go to their own table, not the session row).
    fn record_lifecycle(
        &self,
        session: SessionId,
        kind: LifecycleKind,
        event: &Lifecycle,
        writer: &Principal,
    ) -> Result<(), StorageError>;
    /// A session's summary, `None` if it is unknown.
    fn summary(&self, session: SessionId) -> Result<Option<SessionSummary>, StorageError>;
    /// Sessions, most recently active first, at most `limit`.
    fn summaries(&self, limit: Option<u64>) -> Result<Vec<SessionSummary>, StorageError>;
    /// Every stored line of a session with its counters.
    fn lines(&self, session: SessionId) -> Result<SessionLines, StorageError>;
    /// Every known session id.
    fn session_ids(&self) -> Result<Vec<SessionId>, StorageError>;
    /// Stores a named token by its hash; a taken name is [`StorageError::Exists`].
    fn add_token(&self, name: &str, hash: &[u8; 32], now: Millis) -> Result<(), StorageError>;
    /// The name of the unrevoked token with this hash, if any.
    fn token_name(&self, hash: &[u8; 32]) -> Result<Option<String>, StorageError>;
    /// Every named token, revoked ones included, by name.
    fn tokens(&self) -> Result<Vec<TokenInfo>, StorageError>;
    /// Revokes a token by name from `now` on: `Ok(false)` if it already was, and
    /// [`StorageError::Invalid`] if there is no such token.
    fn revoke_token(&self, name: &str, now: Millis) -> Result<bool, StorageError>;
    /// Whether any named token exists, revoked ones included (revoking every token must not
    /// turn authentication off).
    fn has_tokens(&self) -> Result<bool, StorageError>;
    /// Short description for logs ("SQLite at …").
    fn describe(&self) -> String;
}

/// How long `kcap serve` waits at start for its database by default (see
/// [`PostgresOptions::start_wait`] and [`sqlite::Sqlite::open_waiting`]).
pub const DEFAULT_START_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How the PostgreSQL backend reaches its database.
#[derive(Debug, Clone, Copy)]
pub struct PostgresOptions {
    /// How long to keep trying at start while the server is not accepting connections yet
    /// (refused, or SQLSTATE 57P03 "starting up"); other errors fail at once.
    pub start_wait: std::time::Duration,
    /// The database is reached through a transaction-pooling proxy (PgBouncer
    /// `pool_mode = transaction`): no prepared statement outlives its transaction and every
    /// read runs in a transaction of its own, so each statement meets the server connection
    /// that prepared it. Costs a prepare round trip per statement per transaction.
    pub transaction_pooling: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            start_wait: DEFAULT_START_WAIT,
            transaction_pooling: false,
        }
    }
}

/// A shared handle on a backend (and on its web UI reads, for the backends that have them).
#[derive(Clone)]
pub struct Storage(Arc<dyn Backend>, Option<Arc<dyn ReadModel>>);

impl Storage {
    /// Wraps a backend.
    pub fn new(backend: impl Backend) -> Storage {
        Storage(Arc::new(backend), None)
    }

    /// Wraps a backend that also serves the web UI's reads.
    pub fn with_reads(backend: impl Backend + ReadModel) -> Storage {
        let backend = Arc::new(backend);
        Storage(backend.clone(), Some(backend))
    }

    /// SQLite at `path` (created and migrated if needed).
    pub fn sqlite(path: &Path) -> Result<Storage, StorageError> {
        Ok(Storage::with_reads(sqlite::Sqlite::open(path)?))
    }

    /// SQLite at `path`, waiting up to `wait` at start while another process holds it locked.
    pub fn sqlite_waiting(path: &Path, wait: std::time::Duration) -> Result<Storage, StorageError> {
        Ok(Storage::with_reads(sqlite::Sqlite::open_waiting(path, wait)?))
    }

    /// A SQLite store in a temporary directory, removed when the last handle goes (the demo,
    /// tests, the benchmarks).
    pub fn temporary() -> Result<Storage, StorageError> {
        Ok(Storage::with_reads(sqlite::Sqlite::temporary()?))
    }

    /// PostgreSQL at `url` (`postgres://user@host:port/db`), migrated if needed.
    pub fn postgres(url: &str) -> Result<Storage, StorageError> {
        Ok(Storage::with_reads(postgres::Postgres::connect(url)?))
    }

    /// PostgreSQL at `url` with these options.
    pub fn postgres_with(url: &str, options: PostgresOptions) -> Result<Storage, StorageError> {
        Ok(Storage::with_reads(postgres::Postgres::connect_with(
            url, options,
        )?))
    }

    /// The web UI's reads of this store (for a backend without them, reads that fail with a
    /// clear error).
    pub fn reads(&self) -> Arc<dyn ReadModel> {
        self.1
            .clone()
            .unwrap_or_else(|| Arc::new(crate::server::web::model::Unreadable(self.0.describe())))
    }

    /// The backend, for blocking calls.
    pub fn backend(&self) -> &dyn Backend {
        &*self.0
    }

    /// Runs a blocking storage call on tokio's blocking pool.
    pub async fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Backend) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let backend = self.0.clone();
        tokio::task::spawn_blocking(move || call(&*backend))
            .await
            .map_err(|e| StorageError::Database(format!("storage task failed: {e}")))?
    }

    /// A session's summary, from anywhere (tests and the demo; never on a request path).
    pub fn summary(&self, session: SessionId) -> Result<Option<SessionSummary>, StorageError> {
        self.run_detached(|b| b.summary(session))
    }

    /// A session's `last-line`, from anywhere (tests and benchmarks; never on a request path).
    pub fn last_line(&self, session: SessionId) -> Result<i64, StorageError> {
        self.run_detached(|b| b.last_line(session))
    }

    /// Runs a blocking call on a thread of its own and waits: callable from anywhere, async
    /// code included (test helpers; never on a request path).
    pub fn run_detached<T: Send>(
        &self,
        call: impl FnOnce(&dyn Backend) -> Result<T, StorageError> + Send,
    ) -> Result<T, StorageError> {
        let backend = &*self.0;
        std::thread::scope(|s| {
            s.spawn(|| call(backend))
                .join()
                .unwrap_or_else(|_| Err(StorageError::Database("storage call panicked".into())))
        })
    }
}
