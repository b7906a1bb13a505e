//! The terminal-line rule, on bytes only: which file region to read is the interpreter's
//! business (`effects::tail`). What the terminal line's `type` is comes from the agent as data
//! ([`crate::agent::terminal_rule`]); this module only parses.

use serde::de::IgnoredAny;
use serde::Deserialize;

/// A blank line is sent nowhere but still counts in line numbering.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// What the last non-blank line of a transcript says about the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// A complete JSON object whose `type` is the agent's end type (`TerminalRule::end_type`).
    Shutdown,
    /// A complete JSON object of any other type.
    Other,
    /// Not a complete JSON object: truncated, still being written, or garbage.
    Malformed,
}

/// Classifies one line (without its newline). Reads the bytes once; every member other than
/// `type` is skipped without being built, so a 20 MB line costs one scan and no allocation.
pub fn classify(line: &[u8]) -> LineKind {
    classify_reader(line)
}

/// As [`classify`], streaming from a reader so that a huge last line need not sit in memory.
pub fn classify_reader<R: std::io::Read>(reader: R) -> LineKind {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let kind = match TypeOnly::deserialize(&mut de) {
        Ok(t) => t.0,
        Err(_) => return LineKind::Malformed,
    };
    // Trailing bytes other than whitespace mean two values or junk on one line.
    if de.end().is_err() {
        return LineKind::Malformed;
    }
    match kind {
        Some(kind) if kind == crate::agent::terminal_rule().end_type => LineKind::Shutdown,
        _ => LineKind::Other,
    }
}

/// Deserializes a JSON object keeping only a string `type`, ignoring every other member.
struct TypeOnly(Option<String>);

impl<'de> Deserialize<'de> for TypeOnly {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = TypeOnly;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TypeOnly, A::Error> {
                let mut kind = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "type" && kind.is_none() {
                        kind = match map.next_value::<serde_json::Value>()? {
                            serde_json::Value::String(s) => Some(s),
                            _ => None,
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(TypeOnly(kind))
            }
        }
        d.deserialize_map(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_lines() {
        assert_eq!(
            classify(br#"{"type":"session.shutdown","data":{}}"#),
            LineKind::Shutdown
        );
        assert_eq!(
            classify(br#"{"data":{"x":[1,2]},"type":"session.shutdown"}"#),
            LineKind::Shutdown
        );
        assert_eq!(
            classify(br#"{"type":"session.shutdown","data":{}}  "#),
            LineKind::Shutdown
        );
        assert_eq!(classify(b"{\"type\":\"session.shutdown\"}\r"), LineKind::Shutdown);
        assert_eq!(
            classify(br#"{"type":"session.resume","data":{}}"#),
            LineKind::Other
        );
        assert_eq!(
            classify(br#"{"data":{"type":"session.shutdown"}}"#),
            LineKind::Other
        );
        assert_eq!(classify(br#"{"type":7}"#), LineKind::Other);
        assert_eq!(
            classify(br#"{"type":"session.shutdown","data":{"#),
            LineKind::Malformed
        );
        assert_eq!(
            classify(br#"{"type":"session.shutdown"}{"type":"x"}"#),
            LineKind::Malformed
        );
        assert_eq!(classify(br#"["session.shutdown"]"#), LineKind::Malformed);
        assert_eq!(
            classify(b"THIS IS NOT VALID JSON AT ALL {{{"),
            LineKind::Malformed
        );
        assert_eq!(classify(b"\xff\xfe{}"), LineKind::Malformed);
        assert_eq!(classify(b""), LineKind::Malformed);
    }

    #[test]
    fn only_the_member_named_type_decides() {
        // Another string member with the end type's value is data, not the line's type.
        assert_eq!(classify(br#"{"note":"session.shutdown"}"#), LineKind::Other);
        assert_eq!(
            classify(br#"{"type":null,"note":"session.shutdown"}"#),
            LineKind::Other
        );
    }

    #[test]
    fn blank_lines() {
        assert!(is_blank(b""));
        assert!(is_blank(b" \t\r"));
        assert!(!is_blank(b" {} "));
    }
}
