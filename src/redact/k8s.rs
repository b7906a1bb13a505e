//! A Kubernetes Secret as `kubectl get secret -o yaml` / `-o json` prints it: every value under
//! `data:` (base64) and `stringData:` (plain) is a secret, whatever its key is named
//! (`database-url: cG9zdGdyZXM6Ly8…`), in block style, block scalars (`key: |`) and flow style
//! (`data: {k: v}`). Only a document that says `kind: Secret` (quoted or not, any case) is read this way:
//! a ConfigMap stays, also beside a Secret in a multi-document stream. kubectl sorts `data`
//! before `kind`, so a whole document is looked at once its kind is known. A file shown with a
//! line-number gutter (`12. `) reads the same.
//!
//! Linear: each document is split off once, each `data` block is read once, to its end, and the
//! next search starts after it.

use super::json::skip_ws;
use super::scan::{Hit, Rule};
use super::view::gutter;

/// Appends the values of every `data:` / `stringData:` block of each Secret document in
/// `text` to `out`. A multi-document stream (`---` between documents) is judged document by
/// document: a ConfigMap beside a Secret keeps its values.
pub(crate) fn scan(text: &str, out: &mut Vec<Hit>) {
    let b = text.as_bytes();
    let mut start = 0;
    while start < b.len() {
        let (end, next) = document_end(b, start);
        if is_secret_document(&b[start..end]) {
            scan_document(b, start, end, out);
        }
        start = next;
    }
}

/// Where the document starting at `from` ends (the start of its `---` line, or the text's end)
/// and where the next one starts.
fn document_end(b: &[u8], from: usize) -> (usize, usize) {
    let mut p = from;
    while p < b.len() {
        let len = memchr::memchr(b'\n', &b[p..]).unwrap_or(b.len() - p);
        let line = &b[p..p + len];
        let content = &line[gutter(line)..];
        if content.starts_with(b"---") && content[3..].iter().all(|c| c.is_ascii_whitespace()) && p > from {
            return (p, p + len);
        }
        p += len + 1;
    }
    (b.len(), b.len())
}

/// The document says `kind: Secret` (YAML, quoted or not, or JSON).
fn is_secret_document(doc: &[u8]) -> bool {
    memchr::memmem::find_iter(doc, b"kind").any(|k| {
        if k > 0 && (doc[k - 1].is_ascii_alphanumeric() || doc[k - 1] == b'_') {
            return false;
        }
        let mut p = k + 4;
        p += usize::from(doc.get(p) == Some(&b'"'));
        p = skip_blanks(doc, p);
        if doc.get(p) != Some(&b':') {
            return false;
        }
        p = skip_blanks(doc, p + 1);
        let quote = doc.get(p).copied().filter(|c| matches!(c, b'"' | b'\''));
        p += usize::from(quote.is_some());
        // Kubernetes itself wants `Secret`; a hand-written `secret` is still meant as one.
        doc.get(p..p + 6)
            .is_some_and(|k| k.eq_ignore_ascii_case(b"Secret"))
            && doc
                .get(p + 6)
                .is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'_' && *c != b'-')
    })
}

fn skip_blanks(b: &[u8], mut p: usize) -> usize {
    while p < b.len() && matches!(b[p], b' ' | b'\t') {
        p += 1;
    }
    p
}

/// The `data` / `stringData` blocks of the document `[from, to)`.
fn scan_document(b: &[u8], from: usize, to: usize, out: &mut Vec<Hit>) {
    let mut from = from;
    while let Some(k) = memchr::memmem::find(&b[from..to], b"ata") {
        let at = from + k;
        from = at + 3;
        let name_start = if at >= 1 && b[at - 1] == b'd' {
            at - 1
        } else if at >= 7 && &b[at - 7..at] == b"stringD" {
            at - 7
        } else {
            continue;
        };
        let quoted = name_start > 0 && b[name_start - 1] == b'"';
        if quoted && b.get(at + 3) == Some(&b'"') {
            from = json_block(b, at + 4, out).max(from);
        } else if !quoted && b.get(at + 3) == Some(&b':') {
            // Bounded: `kind: Secret data: ` repeated on one line would otherwise search back
            // to the line's start from every `data:` (quadratic). A key that deep is no block.
            let back = name_start.saturating_sub(256);
            let found = memchr::memrchr(b'\n', &b[back..name_start]).map(|i| back + i + 1);
            let Some(line_start) = found.or((back == 0).then_some(0)) else {
                continue;
            };
            let content = line_start + gutter(&b[line_start..name_start]);
            if b[content..name_start].iter().all(|c| *c == b' ') {
                from = yaml_block(b, name_start - content, at + 4, out).max(from).min(to);
            }
        }
        if from >= to {
            break;
        }
    }
}

/// `"data": { "k": "v", … }` from `p` (after the key's closing quote): each string value.
/// Returns where the block ends.
fn json_block(b: &[u8], mut p: usize, out: &mut Vec<Hit>) -> usize {
    p = skip_ws(b, p);
    if b.get(p) != Some(&b':') {
        return p;
    }
    p = skip_ws(b, p + 1);
    if b.get(p) != Some(&b'{') {
        return p;
    }
    p += 1;
    loop {
        p = skip_ws(b, p);
        // The key.
        let Some(ke) = string_end(b, p) else {
            return p;
        };
        p = skip_ws(b, ke + 1);
        if b.get(p) != Some(&b':') {
            return p;
        }
        p = skip_ws(b, p + 1);
        let Some(ve) = string_end(b, p) else {
            return p;
        };
        push(b, p + 1, ve, out);
        p = skip_ws(b, ve + 1);
        if b.get(p) != Some(&b',') {
            return p;
        }
        p += 1;
    }
}

/// The closing quote of the string that opens at `p`, on the same line.
fn string_end(b: &[u8], p: usize) -> Option<usize> {
    if b.get(p) != Some(&b'"') {
        return None;
    }
    let mut k = p + 1;
    while k < b.len() && b[k] != b'\n' {
        match b[k] {
            b'\\' => k += 2,
            b'"' => return Some(k),
            _ => k += 1,
        }
    }
    None
}

/// The lines under a `data:` key indented `indent` blanks (after any line-number gutter),
/// from `p` (after its colon): each `key: value` line indented deeper, a block scalar's lines
/// (`key: |`), or a flow mapping on the same line (`data: {k: v}`). Returns where the block
/// ends.
fn yaml_block(b: &[u8], indent: usize, mut p: usize, out: &mut Vec<Hit>) -> usize {
    let rest = b[p..].iter().take_while(|c| **c != b'\n').count();
    let first = skip_blanks(b, p);
    if b.get(first) == Some(&b'{') {
        flow(b, first + 1, p + rest, out);
        return p + rest;
    }
    // Nothing else may follow `data:` on its line.
    if b[p..p + rest].iter().any(|c| !c.is_ascii_whitespace()) {
        return p;
    }
    p += rest;
    // Inside a block scalar: the indentation of its key (its lines are deeper).
    let mut scalar: Option<usize> = None;
    while p < b.len() {
        let line = p + 1;
        let len = b[line..].iter().take_while(|c| **c != b'\n').count();
        let g = gutter(&b[line..line + len]);
        let text = &b[line + g..line + len];
        let deeper = text.iter().take_while(|c| **c == b' ').count();
        let blank = text.iter().all(u8::is_ascii_whitespace);
        if let Some(key_indent) = scalar {
            if blank || deeper > key_indent {
                let mut e = line + len;
                while e > line + g + deeper && b[e - 1].is_ascii_whitespace() {
                    e -= 1;
                }
                push(b, line + g + deeper, e, out);
                p = line + len;
                continue;
            }
            scalar = None;
        }
        // A blank line does not end the block (kubectl never prints one, a hand-written
        // manifest may); the next line indented no deeper than `data:` does.
        if blank {
            p = line + len;
            continue;
        }
        if deeper <= indent {
            return p;
        }
        if let Some(colon) = memchr::memmem::find(text, b": ") {
            let mut s = line + g + colon + 2;
            let mut e = line + len;
            while e > s && b[e - 1].is_ascii_whitespace() {
                e -= 1;
            }
            while s < e && b[s] == b' ' {
                s += 1;
            }
            if is_block_indicator(&b[s..e]) {
                scalar = Some(deeper);
            } else {
                if e > s && matches!(b[s], b'"' | b'\'') && b[e - 1] == b[s] && e > s + 1 {
                    s += 1;
                    e -= 1;
                }
                push(b, s, e, out);
            }
        }
        p = line + len;
    }
    p
}

/// `|`, `>`, with a chomping indicator or an indentation digit (`|-`, `>+`, `|2`).
pub(crate) fn is_block_indicator(v: &[u8]) -> bool {
    matches!(v.first(), Some(b'|' | b'>'))
        && v.len() <= 3
        && v[1..].iter().all(|c| matches!(c, b'-' | b'+' | b'1'..=b'9'))
}

/// A flow mapping's values, `{k: v, k2: "v2"}`, from after its `{` to its `}` (or `end`).
fn flow(b: &[u8], from: usize, end: usize, out: &mut Vec<Hit>) {
    let close = memchr::memchr(b'}', &b[from..end]).map_or(end, |i| from + i);
    let mut p = from;
    while p < close {
        let item_end = memchr::memchr(b',', &b[p..close]).map_or(close, |i| p + i);
        if let Some(colon) = memchr::memchr(b':', &b[p..item_end]) {
            let (mut s, mut e) = (skip_blanks(b, p + colon + 1), item_end);
            while e > s && b[e - 1].is_ascii_whitespace() {
                e -= 1;
            }
            if e > s + 1 && matches!(b[s], b'"' | b'\'') && b[e - 1] == b[s] {
                s += 1;
                e -= 1;
            }
            push(b, s, e, out);
        }
        p = item_end + 1;
    }
}

fn push(b: &[u8], s: usize, e: usize, out: &mut Vec<Hit>) {
    let v = std::str::from_utf8(&b[s..e]).unwrap_or("");
    if e > s && !super::value::is_placeholder(v) && !is_block_indicator(v.as_bytes()) {
        out.push(Hit {
            start: s,
            end: e,
            rule: Rule::Builtin("kubernetes-secret-data"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        scan(text, &mut out);
        out.iter().map(|h| &text[h.start..h.end]).collect()
    }

    #[test]
    fn secret_data_values_yaml_and_json() {
        let yaml = "apiVersion: v1\ndata:\n  database-url: cG9zdGdy\n  user: \"Ym9i\"\nkind: Secret\nmetadata:\n  name: db\n";
        assert_eq!(found(yaml), vec!["cG9zdGdy", "Ym9i"]);
        let json = "{\n    \"apiVersion\": \"v1\",\n    \"data\": {\n        \"database-url\": \"cG9zdGdy\",\n        \"user\": \"Ym9i\"\n    },\n    \"kind\": \"Secret\"\n}";
        assert_eq!(found(json), vec!["cG9zdGdy", "Ym9i"]);
        let string_data = "kind: Secret\nstringData:\n  password: hunter2\ntype: Opaque";
        assert_eq!(found(string_data), vec!["hunter2"]);
        for kept in [
            "metadata:\n  name: data\n",
            "data: inline\n  x: y",
            "let data: Vec<u8> = x;\n    y: z",
            "userdata:\n  a: b",
        ] {
            assert_eq!(found(kept), Vec::<&str>::new(), "{kept}");
        }
    }
}
