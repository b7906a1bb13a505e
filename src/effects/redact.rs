//! Secret redaction applied to every line before it leaves the machine (DESIGN.md §6).
//!
//! One left-to-right pass, no backtracking: at each position a fixed set of literal prefixes is
//! tried and the token that follows is consumed greedily, so time is linear in the line length
//! whatever the input. Replacements only ever produce `[REDACTED]` from characters that are valid
//! inside a JSON string, so a line that was valid JSON stays valid JSON.
//!
//! Families covered here: private-key blocks and vendor token formats (GitHub, GitLab, Slack,
//! OpenAI, Anthropic, Stripe, npm, PyPI, Docker, AWS access key ids).

use std::borrow::Cow;

pub const REDACTED: &str = "[REDACTED]";

/// A token format: literal prefix, then at least `min_body` token characters.
struct TokenRule {
    prefix: &'static [u8],
    min_body: usize,
    /// AWS key ids are upper-case letters and digits only, exactly 16 after the prefix.
    upper_alnum_exact: Option<usize>,
}

const fn rule(prefix: &'static [u8], min_body: usize) -> TokenRule {
    TokenRule {
        prefix,
        min_body,
        upper_alnum_exact: None,
    }
}

const TOKEN_RULES: &[TokenRule] = &[
    rule(b"github_pat_", 20),
    rule(b"ghp_", 20),
    rule(b"gho_", 20),
    rule(b"ghu_", 20),
    rule(b"ghs_", 20),
    rule(b"ghr_", 20),
    rule(b"glpat-", 20),
    rule(b"xoxb-", 10),
    rule(b"xoxp-", 10),
    rule(b"xoxa-", 10),
    rule(b"xoxr-", 10),
    rule(b"xoxs-", 10),
    rule(b"sk-ant-", 20),
    rule(b"sk-proj-", 20),
    rule(b"sk-", 32),
    rule(b"sk_live_", 16),
    rule(b"rk_live_", 16),
    rule(b"npm_", 30),
    rule(b"pypi-", 50),
    rule(b"dckr_pat_", 20),
    TokenRule {
        prefix: b"AKIA",
        min_body: 16,
        upper_alnum_exact: Some(16),
    },
    TokenRule {
        prefix: b"ASIA",
        min_body: 16,
        upper_alnum_exact: Some(16),
    },
];

const KEY_BEGIN: &[u8] = b"-----BEGIN ";
const KEY_END: &[u8] = b"-----END ";
const KEY_TAIL: &[u8] = b"PRIVATE KEY-----";

/// Bytes that can start a secret: every other position is skipped with one table look-up.
const STARTS: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < TOKEN_RULES.len() {
        table[TOKEN_RULES[i].prefix[0] as usize] = true;
        i += 1;
    }
    table[KEY_BEGIN[0] as usize] = true;
    table
};

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Redacts one line; borrows when nothing needed redacting (the common case).
pub fn line(input: Cow<'_, str>) -> Cow<'_, str> {
    let bytes = input.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0; // bytes[..copied] are already in `out`
    let mut i = 0;
    while i < bytes.len() {
        if !STARTS[bytes[i] as usize] {
            i += 1;
            continue;
        }
        if let Some(end) = match_at(bytes, i) {
            let buf = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
            buf.extend_from_slice(&bytes[copied..i]);
            buf.extend_from_slice(REDACTED.as_bytes());
            copied = end;
            i = end;
        } else {
            i += 1;
        }
    }
    match out {
        None => input,
        Some(mut buf) => {
            buf.extend_from_slice(&bytes[copied..]);
            // Only ASCII was removed or inserted at ASCII boundaries, so this cannot fail.
            Cow::Owned(
                String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            )
        }
    }
}

/// If a secret starts at `i`, the end of what to replace.
fn match_at(bytes: &[u8], i: usize) -> Option<usize> {
    let rest = &bytes[i..];
    // A token must not be the tail of a longer word (e.g. `task-notification`, `risk-…`).
    let boundary = i == 0 || !is_token_byte(bytes[i - 1]);
    if rest.starts_with(KEY_BEGIN) {
        return private_key_end(bytes, i);
    }
    if !boundary {
        return None;
    }
    for r in TOKEN_RULES {
        if !rest.starts_with(r.prefix) {
            continue;
        }
        let body_start = i + r.prefix.len();
        if let Some(exact) = r.upper_alnum_exact {
            let body = bytes.get(body_start..body_start + exact)?;
            let after_ok = bytes.get(body_start + exact).is_none_or(|b| !is_token_byte(*b));
            if body.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) && after_ok {
                return Some(body_start + exact);
            }
            continue;
        }
        let body_len = bytes[body_start..]
            .iter()
            .take_while(|b| is_token_byte(**b))
            .count();
        if body_len >= r.min_body {
            return Some(body_start + body_len);
        }
    }
    None
}

/// `-----BEGIN … PRIVATE KEY-----` through the matching END line. An unterminated block is
/// redacted to the end of the JSON string holding it (or of the line), rather than leaked.
fn private_key_end(bytes: &[u8], i: usize) -> Option<usize> {
    let header_end = i + KEY_BEGIN.len() + memchr::memmem::find(&bytes[i + KEY_BEGIN.len()..], b"-----")? + 5;
    if !bytes[..header_end].ends_with(KEY_TAIL) {
        return None;
    }
    let end_marker = memchr::memmem::find(&bytes[header_end..], KEY_END).map(|p| header_end + p);
    Some(match end_marker {
        Some(p) => match memchr::memmem::find(&bytes[p..], KEY_TAIL) {
            Some(q) => p + q + KEY_TAIL.len(),
            None => string_end(bytes, header_end),
        },
        None => string_end(bytes, header_end),
    })
}

/// Position of the next unescaped `"` at or after `from`, or the end of the line.
fn string_end(bytes: &[u8], from: usize) -> usize {
    let mut escaped = false;
    for (k, b) in bytes[from..].iter().enumerate() {
        match b {
            b'\\' => escaped = !escaped,
            b'"' if !escaped => return from + k,
            _ => escaped = false,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        line(Cow::Borrowed(s)).into_owned()
    }

    #[test]
    fn vendor_tokens_are_redacted() {
        let cases = [
            (
                "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 ok",
                "token [REDACTED] ok",
            ),
            ("github_pat_11ABCDEFG0123456789_abcdefghijkl", "[REDACTED]"),
            ("\"glpat-abcdefghij0123456789\"", "\"[REDACTED]\""),
            ("xoxb-123456789012-abcdef", "[REDACTED]"),
            ("key=sk-ant-api03-abcdefghijklmnopqrstuv", "key=[REDACTED]"),
            ("sk-proj-abcdefghijklmnopqrstuvwx", "[REDACTED]"),
            ("sk_live_abcdefghijklmnop", "[REDACTED]"),
            ("npm_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED]"),
            ("AKIAIOSFODNN7EXAMPLE.", "[REDACTED]."),
            ("dckr_pat_abcdefghijklmnopqrstu", "[REDACTED]"),
        ];
        for (input, want) in cases {
            assert_eq!(r(input), want, "{input}");
        }
    }

    #[test]
    fn ordinary_prose_is_left_alone() {
        for s in [
            "task-notification",
            "risk-assessment and desk-top",
            "ghp_short",
            "AKIAlowercase0000000",
            "AKIAIOSFODNN7EXAMPLEX1", // too long to be a key id
            "sk-learn is a library",
            "-----BEGIN CERTIFICATE-----abc-----END CERTIFICATE-----",
        ] {
            assert_eq!(r(s), s);
            assert!(matches!(line(Cow::Borrowed(s)), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn private_key_blocks_are_redacted_whole() {
        let s = r#"{"content":"-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIB\n-----END RSA PRIVATE KEY-----\nafter"}"#;
        assert_eq!(r(s), r#"{"content":"[REDACTED]\nafter"}"#);
        let open = r#"{"c":"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl"}"#;
        assert_eq!(r(open), r#"{"c":"[REDACTED]"}"#);
    }

    #[test]
    fn redaction_keeps_json_valid() {
        let s = r#"{"type":"tool.execution_complete","data":{"result":"export GH=ghp_abcdefghijklmnopqrstuvwxyz0123 done"}}"#;
        let out = r(s);
        assert!(out.contains(REDACTED));
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
    }
}
