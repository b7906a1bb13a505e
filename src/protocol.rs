//! Wire types of the kcap ingest protocol (docs/architecture.md), shared by the client and `kcap serve`.

use serde::{Deserialize, Serialize};

pub const CLI_VERSION_HEADER: &str = "X-Kcap-Cli-Version";
pub const DEFAULT_URL: &str = "http://127.0.0.1:5108";

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

/// Reply to a transcript batch: how many lines were new and how many the server already held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReply {
    pub new: u64,
    pub duplicates: u64,
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
