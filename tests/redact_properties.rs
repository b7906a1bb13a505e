//! Redaction's properties on generated input: a valid JSON line stays valid JSON; redacting
//! twice changes nothing more; bytes outside the findings are untouched; no input panics.

use std::borrow::Cow;

use kcap::redact::{Redactor, REDACTED};
use proptest::prelude::*;

const PIECES: &[&str] = &[
    "password",
    "api_key",
    "DB_PASS",
    "token",
    "Authorization: Bearer ",
    "=",
    ":",
    ":=",
    "=>",
    " ",
    "    ",
    "\"",
    "'",
    "\\",
    "\\\"",
    "\n",
    "\t",
    "\r",
    "\u{1}",
    "é",
    "€",
    "😀",
    "#",
    ";",
    "&",
    ",",
    "://",
    "u:p@",
    "@",
    "/",
    "ghp_",
    "github_pat_",
    "sk-",
    "sk-ant-",
    "AKIA",
    "AIza",
    "xoxb-",
    "glpat-",
    "eyJ",
    ".",
    "-----BEGIN ",
    "RSA PRIVATE KEY-----",
    "-----END ",
    "PRIVATE KEY-----",
    "abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOP0123",
    "0123456789",
    "Zx9Qw2Er5Ty7",
    "{",
    "}",
    "[",
    "]",
    "<password>",
    "</password>",
    "--password ",
    "mysql -p",
    "machine h login u password ",
    "$X",
    "${X}",
    "[REDACTED]",
    "Token::U8(52)",
    "Option<String>",
];

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..48).prop_map(|p| p.concat())
}

fn redact(s: &str) -> String {
    Redactor::builtin().redact(Cow::Borrowed(s)).into_owned()
}

/// The line rebuilt from its findings: what redaction must produce exactly.
fn from_findings(line: &str) -> String {
    let mut out = String::new();
    let mut copied = 0;
    for f in Redactor::builtin().findings(line) {
        assert!(
            f.start >= copied && f.end > f.start,
            "findings overlap or are empty: {line:?}"
        );
        out.push_str(&line[copied..f.start]);
        out.push_str(&if f.quoted {
            format!("\"{REDACTED}\"")
        } else {
            REDACTED.to_string()
        });
        copied = f.end;
    }
    out.push_str(&line[copied..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn valid_json_stays_valid_and_redaction_is_idempotent(t in text(), nested in any::<bool>()) {
        let value = if nested { serde_json::json!({"password": t.clone(), "inner": t.clone()}).to_string() } else { t.clone() };
        let line = serde_json::json!({"type": "tool.execution_complete", "data": {"result": value, t.clone(): 1, "pin": 4821}}).to_string();
        let once = redact(&line);
        prop_assert!(serde_json::from_str::<serde_json::Value>(&once).is_ok(), "broke the JSON:\n{}\n{}", line, once);
        let twice = redact(&once);
        prop_assert_eq!(&twice, &once, "not idempotent on {}", line);
        prop_assert_eq!(from_findings(&line), once);
    }

    #[test]
    fn plain_text_is_byte_identical_outside_findings(t in text()) {
        prop_assert_eq!(from_findings(&t), redact(&t));
        let once = redact(&t);
        prop_assert_eq!(redact(&once), once);
    }

    #[test]
    fn no_bytes_make_it_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = redact(&text);
        let _ = redact(&format!("{{\"a\":\"{text}\"}}"));
    }
}
