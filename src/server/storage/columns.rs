//! How kcap's values sit in database columns, the same on SQLite and PostgreSQL: the session
//! row's columns, session keys, lifecycle JSON, and unsigned figures in signed integer columns.
//! The backends' SQL differs; what a column holds does not, so it is read in one place.

use super::Lifecycle;
use crate::ids::SessionId;

/// The session row's columns, in the order both backends' `row` readers take them.
pub const SESSION_ROW: &str =
    "SELECT id, owner, agent, cwd, repository, contiguous, lines, duplicates, conflicts, \
    first_seen, last_seen, started, ended, notifications, has_usage_checkpoints FROM sessions";

/// A stored session key as a [`SessionId`]. kcap writes 16 bytes; a key of another length reads
/// as the all-zero id, so one bad row cannot fail a whole listing.
pub fn session_of(key: impl AsRef<[u8]>) -> SessionId {
    <[u8; 16]>::try_from(key.as_ref())
        .map(SessionId::from_bytes)
        .unwrap_or(SessionId::from_bytes([0; 16]))
}

/// A lifecycle column (`started`, `ended`, a notification's `event`): its JSON, or none when it is
/// empty or unreadable.
pub fn lifecycle_of(json: Option<String>) -> Option<Lifecycle> {
    json.and_then(|s| serde_json::from_str(&s).ok())
}

/// A count, offset, line number or time as the signed 64-bit integer both databases store:
/// values past `i64::MAX` (which no stored row reaches) are capped rather than wrapped negative.
pub fn signed(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_lifecycles_and_figures() {
        let sid = SessionId::new_random();
        assert_eq!(session_of(sid.as_bytes()), sid);
        assert_eq!(session_of([1u8; 3]), SessionId::from_bytes([0; 16]));
        assert_eq!(lifecycle_of(Some("not json".into())), None);
        let event = Lifecycle {
            received_at: 5,
            ..Lifecycle::default()
        };
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(lifecycle_of(Some(json)), Some(event));
        assert_eq!((signed(7), signed(u64::MAX)), (7, i64::MAX));
    }
}
