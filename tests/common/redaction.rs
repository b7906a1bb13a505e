//! What the redaction case files share: redact a text, and put a text inside (and back out of)
//! a JSON line of tool output, as a transcript carries it.

use std::borrow::Cow;

use kcap::redact::{Redactor, REDACTED};

/// `s` through the built-in catalogue.
pub fn redact(s: &str) -> String {
    Redactor::builtin().redact(Cow::Borrowed(s)).into_owned()
}

/// `text` as the content of a tool result line.
pub fn in_json(text: &str) -> String {
    serde_json::json!({"type": "tool.execution_complete", "data": {"result": {"content": text}}}).to_string()
}

/// The content of a tool result line; panics (naming the line) if it is not valid JSON.
#[track_caller]
pub fn content(line: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("broken JSON ({e}): {line}"));
    v["data"]["result"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `secret` is gone and `keep` stays, in plain text and in a tool result line, and a marker
/// shows where.
#[track_caller]
#[allow(dead_code)] // not every case file uses it
pub fn assert_gone(case: &str, text: &str, secret: &str, keep: &str) {
    for (how, out) in [
        ("plain", redact(text)),
        ("json", content(&redact(&in_json(text)))),
    ] {
        assert!(
            !out.contains(secret) && out.contains(keep) && out.contains(REDACTED),
            "{case} ({how}): {text:?} -> {out:?}"
        );
    }
}

/// `text` comes through unchanged, in plain text and as a whole tool result line.
#[track_caller]
#[allow(dead_code)] // not every case file uses it
pub fn assert_kept(text: &str) {
    assert_eq!(redact(text), text);
    let line = in_json(text);
    assert_eq!(redact(&line), line);
}
