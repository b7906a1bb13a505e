//! The read model behind the web UI and its API: what the pages ask of storage, as plain data.
//!
//! Storage backends implement [`ReadModel`]; the pages and the JSON API see nothing else, so
//! they are tested against [`super::memory::MemoryReads`] and run unchanged on SQLite or
//! PostgreSQL.

use serde::{Deserialize, Serialize};

use crate::ids::SessionId;
use crate::machine::Millis;
use crate::server::storage::SessionSummary;
use crate::server::usage::{Shutdown, Usage};

/// The most rows one list, page of lines or search may return.
pub const MAX_LIMIT: u32 = 1000;

/// Which sessions to list (every field narrows; `None` means any).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFilter {
    /// The agent (vendor), e.g. "copilot".
    pub agent: Option<String>,
    /// Exact repository ("owner/name") or, when none is known, working directory.
    pub repository: Option<String>,
    /// The machine or user: the name of the token that wrote the session.
    pub machine: Option<String>,
    /// Started at or after this instant (epoch ms).
    pub from: Option<Millis>,
    /// Started before this instant (epoch ms).
    pub to: Option<Millis>,
}

/// A window into a list: skip `offset` rows, return at most `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paging {
    pub offset: u64,
    pub limit: u32,
}

impl Paging {
    /// A window with `limit` clamped to `1..=MAX_LIMIT`.
    pub fn new(offset: u64, limit: u32) -> Paging {
        Paging {
            offset,
            limit: limit.clamp(1, MAX_LIMIT),
        }
    }
}

/// Whether a session is still being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// No end seen and written to recently.
    Live,
    /// Its end hook arrived.
    Ended,
    /// No end seen, and quiet for longer than [`LIVE_WINDOW_MS`] (crashed, killed, or idle).
    NoEndSeen,
}

/// How long after its last write a session without an end still counts as live.
pub const LIVE_WINDOW_MS: Millis = 15 * 60 * 1000;

impl SessionState {
    /// The state of a session last written at `last_seen`, ended or not, as seen at `now`.
    pub fn of(ended: bool, last_seen: Millis, now: Millis) -> SessionState {
        if ended {
            SessionState::Ended
        } else if now.saturating_sub(last_seen) <= LIVE_WINDOW_MS {
            SessionState::Live
        } else {
            SessionState::NoEndSeen
        }
    }

    /// The label the pages show.
    pub fn label(self) -> &'static str {
        match self {
            SessionState::Live => "live",
            SessionState::Ended => "ended",
            SessionState::NoEndSeen => "no end seen",
        }
    }
}

/// One session as the list and the session page show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionItem {
    pub session_id: SessionId,
    pub agent: Option<String>,
    pub repository: Option<String>,
    pub cwd: Option<String>,
    /// The token name that wrote it (machine or user); `None` without authentication.
    pub owner: Option<String>,
    /// Its start hook, else its first write (epoch ms).
    pub started_at: Millis,
    /// Its end hook (epoch ms), if one arrived.
    pub ended_at: Option<Millis>,
    /// Its latest write (epoch ms).
    pub last_seen: Millis,
    pub lines_stored: u64,
    /// The highest line number below which nothing is missing (−1: line 0 is missing).
    pub last_line_number: i64,
    /// Its usage: the fold of its `session.shutdown` lines.
    pub usage: Usage,
}

impl SessionItem {
    /// Live, ended or no end seen, as of `now`.
    pub fn state(&self, now: Millis) -> SessionState {
        SessionState::of(self.ended_at.is_some(), self.last_seen, now)
    }

    /// Repository if known, else the working directory.
    pub fn place(&self) -> Option<&str> {
        self.repository.as_deref().or(self.cwd.as_deref())
    }
}

/// A page of sessions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionPage {
    pub sessions: Vec<SessionItem>,
    /// How many sessions match the filter in all.
    pub total: u64,
}

/// Stored lines of a session, in line-number order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinePage {
    pub lines: Vec<Line>,
    /// Whether lines numbered above the last returned one exist.
    pub more: bool,
}

/// One stored transcript line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Its 0-based line number in the transcript.
    pub n: u64,
    /// The line as stored (already redacted by the client).
    pub text: String,
}

/// One search result: a line that matches every term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    pub session_id: SessionId,
    pub n: u64,
    /// The line's event type (`user.message`, …), if it has one.
    pub kind: Option<String>,
    /// Plain text around the first match (the page escapes and highlights it).
    pub snippet: String,
    pub repository: Option<String>,
    pub started_at: Millis,
}

/// How usage figures are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    /// By UTC day of each `session.shutdown` (a resumed session's segments fall on their own day).
    Day,
    Model,
    /// By repository, else working directory.
    Repo,
    /// By token name (machine or user).
    Machine,
}

impl UsageGroup {
    /// Parses `day|model|repo|machine`.
    pub fn parse(s: &str) -> Option<UsageGroup> {
        match s {
            "day" => Some(UsageGroup::Day),
            "model" => Some(UsageGroup::Model),
            "repo" | "repository" => Some(UsageGroup::Repo),
            "machine" => Some(UsageGroup::Machine),
            _ => None,
        }
    }

    /// The query-string spelling.
    pub fn name(self) -> &'static str {
        match self {
            UsageGroup::Day => "day",
            UsageGroup::Model => "model",
            UsageGroup::Repo => "repo",
            UsageGroup::Machine => "machine",
        }
    }
}

/// Usage figures of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The day (`YYYY-MM-DD`), model, repository or machine; "(unknown)" when not recorded.
    pub key: String,
    pub input_tokens: f64,
    pub output_tokens: f64,
    pub cache_read_tokens: f64,
    pub cache_write_tokens: f64,
    /// Premium requests (per model: the models' request cost).
    pub premium_requests: f64,
    /// Model API calls.
    pub requests: f64,
    /// Sessions contributing to this group.
    pub sessions: u64,
}

/// The facts the usage aggregation needs from one session; backends produce these, and
/// [`super::aggregate`] folds them the same way for every backend.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageSource {
    pub session_id: SessionId,
    pub repository: Option<String>,
    pub owner: Option<String>,
    pub started_at: Millis,
    /// The session's `session.shutdown` lines in line order, each with the UTC day of its
    /// `timestamp` (see [`super::aggregate::timestamp_day`]).
    pub shutdowns: Vec<(Shutdown, Option<String>)>,
    /// The transcript has `session.usage_checkpoint` events (see [`crate::server::usage::fold`]).
    pub has_usage_checkpoints: bool,
}

/// Distinct values for the list's filter menus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facets {
    pub agents: Vec<String>,
    pub repositories: Vec<String>,
    pub machines: Vec<String>,
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The query itself is unacceptable (400), e.g. an empty search.
    Invalid(String),
    /// The store failed (500).
    Storage(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Invalid(m) => f.write_str(m),
            ReadError::Storage(m) => write!(f, "storage error: {m}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// What the web UI and its API read. Calls block: run them off the async workers.
pub trait ReadModel: Send + Sync + 'static {
    /// Sessions matching `filter`, newest start first, within `paging`.
    fn list_sessions(&self, filter: &SessionFilter, paging: Paging) -> Result<SessionPage, ReadError>;
    /// One session, `None` if unknown.
    fn session_item(&self, id: SessionId) -> Result<Option<SessionItem>, ReadError>;
    /// Lines numbered `from` or above, at most `limit`, in order.
    fn line_page(&self, id: SessionId, from: u64, limit: u32) -> Result<LinePage, ReadError>;
    /// One stored line.
    fn line_text(&self, id: SessionId, n: u64) -> Result<Option<String>, ReadError>;
    /// Lines matching every term of `query` (see [`super::search::terms`]), newest first (by
    /// storage order where the backend keeps one, else by session start).
    fn search_lines(&self, query: &str, paging: Paging) -> Result<Vec<SearchHit>, ReadError>;
    /// What [`super::aggregate::usage`] needs from every session matching `filter`.
    fn usage_sources(&self, filter: &SessionFilter) -> Result<Vec<UsageSource>, ReadError>;
    /// Distinct agents, repositories and machines, for the filter menus.
    fn facets(&self) -> Result<Facets, ReadError>;
    /// The ids of the sessions [`ReadModel::list_sessions`] would list, and how many match.
    fn filtered_ids(
        &self,
        filter: &SessionFilter,
        paging: Paging,
    ) -> Result<(Vec<SessionId>, u64), ReadError> {
        let page = self.list_sessions(filter, paging)?;
        Ok((page.sessions.iter().map(|s| s.session_id).collect(), page.total))
    }
    /// Brings the search index up to date by at most one bounded step, off the ingest path;
    /// returns how many lines it looked at (0: nothing left). Backends that index as they store
    /// have nothing to do.
    fn index_pending(&self) -> Result<usize, ReadError> {
        Ok(0)
    }
    /// Like [`ReadModel::index_pending`], but waits for lines another indexer is filling
    /// rather than skipping them, so that 0 means nothing was left unindexed when it ran
    /// ([`super::indexer::catch_up`] relies on it).
    fn index_pending_waiting(&self) -> Result<usize, ReadError> {
        self.index_pending()
    }
    /// About how many stored lines the search index has not looked at yet (cheap; 0 where the
    /// backend cannot tell or indexes as it stores).
    fn index_backlog(&self) -> Result<u64, ReadError> {
        Ok(0)
    }
}

impl From<SessionSummary> for SessionItem {
    fn from(s: SessionSummary) -> SessionItem {
        SessionItem {
            session_id: s.session_id,
            agent: s.agent,
            repository: s.repository,
            cwd: s.cwd,
            owner: s.owner,
            started_at: s.started_at.unwrap_or(s.first_seen),
            ended_at: s.ended_at.or(s.ended.as_ref().map(|e| e.received_at)),
            last_seen: s.last_seen,
            lines_stored: s.lines_stored,
            last_line_number: s.last_line_number,
            usage: s.usage,
        }
    }
}

impl From<crate::server::storage::StorageError> for ReadError {
    fn from(e: crate::server::storage::StorageError) -> ReadError {
        use crate::server::storage::StorageError;
        match e {
            StorageError::Invalid(m) => ReadError::Invalid(m),
            other => ReadError::Storage(other.to_string()),
        }
    }
}

/// The reads of a store that has none (a test wrapper around a backend): every call fails with
/// a message naming the store.
pub struct Unreadable(pub String);

impl Unreadable {
    fn fail<T>(&self) -> Result<T, ReadError> {
        Err(ReadError::Storage(format!(
            "{} does not serve the web UI",
            self.0
        )))
    }
}

impl ReadModel for Unreadable {
    fn list_sessions(&self, _: &SessionFilter, _: Paging) -> Result<SessionPage, ReadError> {
        self.fail()
    }
    fn session_item(&self, _: SessionId) -> Result<Option<SessionItem>, ReadError> {
        self.fail()
    }
    fn line_page(&self, _: SessionId, _: u64, _: u32) -> Result<LinePage, ReadError> {
        self.fail()
    }
    fn line_text(&self, _: SessionId, _: u64) -> Result<Option<String>, ReadError> {
        self.fail()
    }
    fn search_lines(&self, _: &str, _: Paging) -> Result<Vec<SearchHit>, ReadError> {
        self.fail()
    }
    fn usage_sources(&self, _: &SessionFilter) -> Result<Vec<UsageSource>, ReadError> {
        self.fail()
    }
    fn facets(&self) -> Result<Facets, ReadError> {
        self.fail()
    }
}
