//! Session ids and deterministic event ids (docs/architecture.md).
//!
//! Every delivery path (watcher, finalizer, resume, import, and the server when a client sends no
//! ids) calls [`event_id`], so a replayed line always carries the id it had the first time.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// Domain separation for the blake3 derive-key mode: bump the version suffix only together with a
/// server-side migration, because it changes every id.
const EVENT_ID_CONTEXT: &str = "kcap 2026-11 transcript event id v1";

/// An agent session id. Only UUIDs are accepted: a session id becomes a directory name, and
/// sub-agent hook firings reuse tool-call ids that must never turn into paths.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Uuid);

impl SessionId {
    pub fn new_random() -> Self {
        SessionId(Uuid::new_v4())
    }

    /// Dashed form, as agents name the session directory.
    pub fn dashed(&self) -> String {
        self.0.hyphenated().to_string()
    }

    /// Dashless form, as the wire protocol carries it.
    pub fn dashless(&self) -> String {
        self.0.simple().to_string()
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        SessionId(Uuid::from_bytes(bytes))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSessionId {
    /// A short, printable excerpt: the raw value may be huge or hostile.
    pub excerpt: String,
}

impl fmt::Display for InvalidSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a session id (expected a UUID): {:?}", self.excerpt)
    }
}

impl std::error::Error for InvalidSessionId {}

impl FromStr for SessionId {
    type Err = InvalidSessionId;

    /// Accepts the dashed (36 chars) and dashless (32 chars) forms only; braces, URNs and other
    /// spellings that `Uuid::parse_str` tolerates are refused so one session has one spelling.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = || InvalidSessionId {
            excerpt: s.chars().take(64).collect(),
        };
        if s.len() != 36 && s.len() != 32 {
            return Err(refuse());
        }
        Uuid::try_parse(s).map(SessionId).map_err(|_| refuse())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dashed())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.dashed())
    }
}

impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.dashed())
    }
}

impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The id of transcript line `line_number` (0-based, blank lines counted) whose raw content is
/// `line` (without its `\n`, and without the `\r` of a CRLF ending). Raw bytes, before redaction,
/// so changing redaction rules never changes ids.
pub fn event_id(session: &SessionId, line_number: u64, line: &[u8]) -> Uuid {
    let mut hasher = blake3::Hasher::new_derive_key(EVENT_ID_CONTEXT);
    hasher.update(session.dashless().as_bytes());
    hasher.update(&line_number.to_le_bytes());
    hasher.update(blake3::hash(line).as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_bytes()[..16]);
    Uuid::new_v8(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "96ef38f0-9d09-45c3-8124-6448c36090ed";

    #[test]
    fn pinned_id_for_a_known_line() {
        // Pinned (cross-checked with Python's blake3 package following docs/architecture.md): if this changes,
        // every id already stored on a server changes with it.
        let sid: SessionId = SID.parse().unwrap();
        let line = br#"{"type":"session.shutdown","data":{}}"#;
        assert_eq!(
            event_id(&sid, 54, line).to_string(),
            "004dda29-a4d2-8160-9436-8ab043beda4e"
        );
    }

    #[test]
    fn id_is_version_8_and_depends_on_every_input() {
        let sid: SessionId = SID.parse().unwrap();
        let other: SessionId = "00000000-0000-0000-0000-000000000001".parse().unwrap();
        let base = event_id(&sid, 3, b"{}");
        assert_eq!(base.get_version_num(), 8);
        assert_eq!(base, event_id(&sid, 3, b"{}"));
        assert_ne!(base, event_id(&sid, 4, b"{}"));
        assert_ne!(base, event_id(&sid, 3, b"{ }"));
        assert_ne!(base, event_id(&other, 3, b"{}"));
    }

    #[test]
    fn dashed_and_dashless_spellings_are_one_session() {
        let dashed: SessionId = SID.parse().unwrap();
        let dashless: SessionId = SID.replace('-', "").parse().unwrap();
        assert_eq!(dashed, dashless);
        assert_eq!(event_id(&dashed, 0, b"x"), event_id(&dashless, 0, b"x"));
        assert_eq!(dashed.dashless(), "96ef38f09d0945c381246448c36090ed");
    }

    #[test]
    fn hostile_ids_are_refused() {
        let long = "a".repeat(10 * 1024);
        for bad in [
            "",
            "../../etc",
            "toolu_vrtx_01VjJHCbS9fyPmEpRtxDdmp6",
            "{96ef38f0-9d09-45c3-8124-6448c36090ed}",
            "urn:uuid:96ef38f0-9d09-45c3-8124-6448c36090ed",
            "96ef38f0-9d09-45c3-8124-6448c36090e/",
            long.as_str(),
        ] {
            let err = bad.parse::<SessionId>().unwrap_err();
            assert!(err.excerpt.len() <= 64, "excerpt not bounded for {bad:?}");
        }
    }
}
