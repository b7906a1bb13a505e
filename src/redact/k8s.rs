//! A Kubernetes Secret as `kubectl get secret -o yaml` / `-o json` prints it: every value under
//! `data:` (base64) and `stringData:` (plain) is a secret, whatever its key is named
//! (`database-url: cG9zdGdyZXM6Ly8…`). Only text that says `kind: Secret` is read this way (a
//! ConfigMap's data stays), and kubectl sorts `data` before `kind`, so the whole text is
//! looked at once the kind is seen.
//!
//! Linear: each `data` block is read once, to its end, and the next search starts after it.

use super::scan::{Hit, Rule};

/// Appends the values of every `data:` / `stringData:` block in `text` to `out`.
pub(crate) fn scan(text: &str, out: &mut Vec<Hit>) {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(k) = memchr::memmem::find(&b[from..], b"ata") {
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
            let line_start = memchr::memrchr(b'\n', &b[..name_start]).map_or(0, |i| i + 1);
            if b[line_start..name_start].iter().all(|c| *c == b' ') {
                from = yaml_block(b, name_start - line_start, at + 4, out).max(from);
            }
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

/// The lines under a `data:` key indented `indent` blanks, from `p` (after its colon): each
/// `key: value` line indented deeper. Returns where the block ends.
fn yaml_block(b: &[u8], indent: usize, mut p: usize, out: &mut Vec<Hit>) -> usize {
    // Nothing but blanks may follow `data:` on its line.
    let rest = b[p..].iter().take_while(|c| **c != b'\n').count();
    if b[p..p + rest].iter().any(|c| !c.is_ascii_whitespace()) {
        return p;
    }
    p += rest;
    while p < b.len() {
        let line = p + 1;
        let len = b[line..].iter().take_while(|c| **c != b'\n').count();
        let text = &b[line..line + len];
        let deeper = text.iter().take_while(|c| **c == b' ').count();
        if deeper <= indent || deeper == text.len() {
            return p;
        }
        if let Some(colon) = memchr::memmem::find(text, b": ") {
            let mut s = line + colon + 2;
            let mut e = line + len;
            while e > s && b[e - 1].is_ascii_whitespace() {
                e -= 1;
            }
            while s < e && b[s] == b' ' {
                s += 1;
            }
            if e > s && matches!(b[s], b'"' | b'\'') && b[e - 1] == b[s] && e > s + 1 {
                s += 1;
                e -= 1;
            }
            push(b, s, e, out);
        }
        p = line + len;
    }
    p
}

fn push(b: &[u8], s: usize, e: usize, out: &mut Vec<Hit>) {
    let v = std::str::from_utf8(&b[s..e]).unwrap_or("");
    if e > s && !super::value::is_placeholder(v) && !matches!(v, "|" | ">" | "|-" | ">-") {
        out.push(Hit {
            start: s,
            end: e,
            rule: Rule::Builtin("kubernetes-secret-data"),
        });
    }
}

fn skip_ws(b: &[u8], mut p: usize) -> usize {
    while p < b.len() && b[p].is_ascii_whitespace() {
        p += 1;
    }
    p
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
