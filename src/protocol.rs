//! Wire types of the kcap ingest protocol (docs/architecture.md), shared by the client and `kcap serve`.

use serde::{Deserialize, Serialize};

pub const CLI_VERSION_HEADER: &str = "X-Kcap-Cli-Version";
pub const DEFAULT_URL: &str = "http://127.0.0.1:5108";

/// `POST /hooks/session-start/{vendor}`: a session of `vendor`'s agent started.
pub fn session_start_path(vendor: &str) -> String {
    format!("/hooks/session-start/{vendor}")
}

/// `POST /hooks/session-end/{vendor}`: a session of `vendor`'s agent ended.
pub fn session_end_path(vendor: &str) -> String {
    format!("/hooks/session-end/{vendor}")
}

/// `POST /hooks/notification`.
pub const NOTIFICATION_PATH: &str = "/hooks/notification";

/// `POST /hooks/transcript`. `event_ids` is kcap's extension: a server that gets none derives
/// the same ids itself with [`crate::ids::event_id`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranscriptBatch {
    pub session_id: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    pub lines: Vec<String>,
    pub line_numbers: Vec<u64>,
    #[serde(default)]
    pub event_ids: Option<Vec<uuid::Uuid>>,
    #[serde(default)]
    pub repository: Option<String>,
    /// kcap's extension: line numbers in this batch's range that were blank and so not sent, so
    /// that the server's `last-line` does not stop at them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blank_lines: Option<Vec<u64>>,
    #[serde(default)]
    pub vendor: Option<String>,
}

/// Reply to a transcript batch: how many lines were new, how many the server already held
/// exactly (replays), and how many differed from the line already stored under their number
/// (kept aside, never overwriting). `conflicts` came later: readers that ignore unknown fields
/// keep working, and a reply without it reads as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReply {
    pub new: u64,
    pub duplicates: u64,
    #[serde(default)]
    pub conflicts: u64,
}

/// `GET /api/sessions/{sid}/last-line`: the highest line number below which nothing is missing;
/// −1 when nothing is stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LastLine {
    pub last_line_number: i64,
}

/// `GET /auth/config`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthConfig {
    pub provider: String,
}
