//! What search matches and shows, shared by every backend (pure).
//!
//! A query is a list of terms (alphanumeric runs, lower-cased); a line matches when, for every
//! term, some word of its searchable text starts with it: SQLite FTS5 (`"term"*`), PostgreSQL
//! (`term:*`) and the in-memory model implement the same rule. The searchable text is what a
//! reader would look for (prompts, answers, reasoning, tool arguments and results, messages),
//! not JSON keys or base64 blobs.

use serde_json::Value;

use super::model::ReadError;

/// At most this many terms are used; more would only slow the index down.
pub const MAX_TERMS: usize = 8;
/// Longer terms are cut to this many characters.
const MAX_TERM_CHARS: usize = 64;
/// The searchable text of one line is cut here (an index of multi-megabyte tool output helps
/// nobody and costs every insert).
pub const MAX_SEARCH_TEXT: usize = 256 * 1024;

/// The terms of a query; an error when it has none.
pub fn terms(query: &str) -> Result<Vec<String>, ReadError> {
    let terms: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(MAX_TERMS)
        .map(|t| t.chars().take(MAX_TERM_CHARS).collect::<String>().to_lowercase())
        .collect();
    if terms.is_empty() {
        return Err(ReadError::Invalid(
            "the search needs at least one word (letters or digits)".into(),
        ));
    }
    Ok(terms)
}

/// The words of `text`, lower-cased (the in-memory model's tokenizer).
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
}

/// Whether every term starts some word of `text`.
pub fn matches(text: &str, terms: &[String]) -> bool {
    let words: Vec<String> = words(text).collect();
    terms
        .iter()
        .all(|t| words.iter().any(|w| w.starts_with(t.as_str())))
}

/// The readable text of a transcript line: the fields people search, joined by newlines; the
/// line itself when it is not a JSON object.
pub fn search_text(line: &str) -> String {
    let Ok(Value::Object(event)) = serde_json::from_str::<Value>(line) else {
        return super::format::truncate(line, MAX_SEARCH_TEXT).0.to_string();
    };
    let mut out = String::new();
    let mut push = |s: &str| {
        if !s.is_empty() && out.len() < MAX_SEARCH_TEXT {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(super::format::truncate(s, MAX_SEARCH_TEXT - out.len()).0);
        }
    };
    let Some(data) = event.get("data") else {
        return out;
    };
    for key in [
        "content",
        "reasoningText",
        "message",
        "summary",
        "toolName",
        "name",
        "agentName",
        "errorReason",
    ] {
        if let Some(Value::String(s)) = data.get(key) {
            push(s);
        }
    }
    for key in ["arguments", "result", "error", "input", "output"] {
        match data.get(key) {
            Some(Value::String(s)) => push(s),
            Some(Value::Object(o)) => {
                for inner in ["content", "message", "detailedContent"] {
                    if let Some(Value::String(s)) = o.get(inner) {
                        push(s);
                    }
                }
                if key == "arguments" || key == "input" {
                    push(&Value::Object(o.clone()).to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// Up to ~240 characters of `text` around the first term found, whitespace collapsed.
pub fn snippet(text: &str, terms: &[String]) -> String {
    let lower = text.to_ascii_lowercase();
    let at = terms
        .iter()
        .filter_map(|t| lower.find(&t.to_ascii_lowercase()))
        .min()
        .unwrap_or(0);
    let mut start = at.saturating_sub(80);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (at + 160).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    out.push_str(&text[start..end].split_whitespace().collect::<Vec<_>>().join(" "));
    if end < text.len() {
        out.push('…');
    }
    out
}

/// `text` cut into runs, each flagged when it is an occurrence of a term (ASCII case folded).
pub fn highlight<'a>(text: &'a str, terms: &[String]) -> Vec<(bool, &'a str)> {
    let lower = text.to_ascii_lowercase();
    let terms: Vec<String> = terms.iter().map(|t| t.to_ascii_lowercase()).collect();
    let mut out = Vec::new();
    let mut plain_from = 0;
    let mut i = 0;
    while i < text.len() {
        let hit = terms
            .iter()
            .filter(|t| !t.is_empty() && lower[i..].starts_with(t.as_str()))
            .map(String::len)
            .max();
        match hit {
            Some(len) if text.is_char_boundary(i + len) => {
                if plain_from < i {
                    out.push((false, &text[plain_from..i]));
                }
                out.push((true, &text[i..i + len]));
                i += len;
                plain_from = i;
            }
            _ => {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    if plain_from < text.len() {
        out.push((false, &text[plain_from..]));
    }
    out
}

/// The event type of a line, if it is a JSON object with a string `type`.
pub fn kind_of(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    v.get("type")?.as_str().map(|s| s.chars().take(80).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_words_and_an_empty_query_is_refused() {
        assert_eq!(terms("  Foo.bar  BAZ!").unwrap(), ["foo", "bar", "baz"]);
        assert!(matches!(terms(" ;; "), Err(ReadError::Invalid(_))));
        assert_eq!(terms(&"a ".repeat(50)).unwrap().len(), MAX_TERMS);
    }

    #[test]
    fn matching_is_by_word_prefix_of_the_readable_fields() {
        let line = r#"{"type":"assistant.message","data":{"content":"Refactoring the parser","reasoningOpaque":"c2VjcmV0YmxvYg=="}}"#;
        let text = search_text(line);
        assert!(matches(&text, &terms("refactor PARSER").unwrap()));
        assert!(
            !matches(&text, &terms("secretblob").unwrap()),
            "blobs are not indexed"
        );
        assert!(!matches(&text, &terms("type").unwrap()), "keys are not indexed");
        let tool = r#"{"type":"tool.execution_complete","data":{"result":{"content":"compiled kcap"}}}"#;
        assert!(matches(&search_text(tool), &terms("kcap").unwrap()));
        assert_eq!(search_text("plain words"), "plain words");
    }

    #[test]
    fn snippets_surround_the_first_hit_and_highlight_marks_terms() {
        let text = format!("{} needle here {}", "x ".repeat(200), "y ".repeat(200));
        let s = snippet(&text, &["needle".into()]);
        assert!(s.starts_with('…') && s.ends_with('…') && s.contains("needle here"));
        let runs = highlight("a Needle and needles", &["needle".into()]);
        let marked: Vec<&str> = runs.iter().filter(|(m, _)| *m).map(|(_, s)| *s).collect();
        assert_eq!(marked, ["Needle", "needle"]);
        assert_eq!(
            runs.iter().map(|(_, s)| *s).collect::<String>(),
            "a Needle and needles"
        );
        // Multi-byte text never splits a character.
        let runs = highlight("héllo wörld", &["ö".into()]);
        assert_eq!(runs.iter().map(|(_, s)| *s).collect::<String>(), "héllo wörld");
    }
}
