//! Structure-aware scanning of a line.
//!
//! A JSON line's string values are scanned as the text they decode to: `\n`, `\t`, `\u0001`
//! become real characters (so a token at the start of a line of tool output is found), and a
//! JSON document inside a string (`"{\"password\": \"…\"}"`) is seen with plain quotes. Each
//! finding is mapped back to raw bytes that cover whole escape sequences, so replacing them keeps
//! the line valid JSON and byte-identical elsewhere. A key's value is judged with its key
//! (`"password": "hunter2"`, `"pin": 1234`). Lines that are not JSON are scanned as they are.

use super::engine::{engine, Target};
use super::named;
use super::scan::{scan_text, Hit, Rule};
use super::user::UserRules;
use super::value::is_secret;

/// A finding in raw line bytes; `quote` asks for a quoted marker (a bare JSON number replaced).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawHit {
    pub start: usize,
    pub end: usize,
    pub rule: Rule,
    pub quote: bool,
}

/// Scratch space reused across the strings of one line.
#[derive(Default)]
struct Decoded {
    text: String,
    /// Where each decoded byte came from in the line.
    map: Offsets,
}

/// Decoded offsets back to raw ones, piecewise: one piece per run copied as it is and one per
/// escape. A table entry per decoded byte cost more than the decoding itself (big tool outputs
/// are mostly runs between `\n`s), and only findings, which are rare, are looked up.
#[derive(Default)]
struct Offsets {
    /// (decoded start, raw start, a copied run rather than one escape), in order; the last
    /// piece starts at the decoded text's end and maps it to the raw content's end.
    pieces: Vec<(u32, u32, bool)>,
}

impl Offsets {
    fn clear(&mut self) {
        self.pieces.clear();
    }

    /// The raw offset of decoded offset `p`: inside a run, the same byte; inside the
    /// character an escape decoded to, the escape's start.
    fn raw(&self, p: usize) -> usize {
        let i = self.pieces.partition_point(|piece| piece.0 as usize <= p).max(1) - 1;
        match self.pieces.get(i) {
            Some(&(dec, raw, true)) => raw as usize + (p - dec as usize),
            Some(&(_, raw, false)) => raw as usize,
            None => p,
        }
    }
}

/// Appends the findings of `line` to `out`.
pub(crate) fn scan_line(line: &str, user: &UserRules, out: &mut Vec<RawHit>) {
    let b = line.as_bytes();
    let everything = !user.patterns.is_empty();
    if !looks_like_json(b) || u32::try_from(b.len()).is_err() {
        let mut hits = Vec::new();
        // `=` / `:` may start a random-looking value under any name (`generic`).
        if everything || memchr::memchr2(b'=', b':', b).is_some() || engine().ac.is_match(line) {
            scan_nested(line, user, 0, &mut hits);
        }
        out.extend(hits.into_iter().map(|h| RawHit {
            start: h.start,
            end: h.end,
            rule: h.rule,
            quote: false,
        }));
        return;
    }
    let mut scratch = Decoded::default();
    let mut hits = Vec::new();
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', &b[i..]) {
        let s = i + q + 1;
        let (e, escaped) = string_end(b, s);
        let named = scan_string(line, s, e, escaped, user, &mut scratch, &mut hits, out);
        i = (e + 1).min(b.len());
        // A key with a secret-like or vendor name: judge its value with it.
        let j = skip_ws(b, i);
        if (named || short_name_word(&b[s..e])) && b.get(j) == Some(&b':') {
            let v = skip_ws(b, j + 1);
            pair(line, (s, e, escaped), v, &mut scratch, out);
        }
        if b.get(j) == Some(&b':') && is_pair_name_key(&b[s..e]) {
            if let Some((name, v)) = sibling_value(b, skip_ws(b, j + 1)) {
                pair(line, name, v, &mut scratch, out);
            }
        }
    }
}

/// `name` / `key`: a member whose string value names a sibling `value` member (k8s and ECS
/// env, HAR headers, `{"key": "DB_PASSWORD", "value": "…"}`).
fn is_pair_name_key(key: &[u8]) -> bool {
    ["name", "key", "Name", "Key"].iter().any(|k| key == k.as_bytes())
}

/// For the string at `v` (the value of a `name` member): its span, and where the value of a
/// `"value"` member right after it starts.
fn sibling_value(b: &[u8], v: usize) -> Option<((usize, usize, bool), usize)> {
    if b.get(v) != Some(&b'"') {
        return None;
    }
    let (ve, escaped) = string_end(b, v + 1);
    let k = skip_ws(b, ve + 1);
    if b.get(k) != Some(&b',') {
        return None;
    }
    let k = skip_ws(b, k + 1);
    let rest = &b[k..];
    if !(rest.starts_with(b"\"value\"") || rest.starts_with(b"\"Value\"")) {
        return None;
    }
    let c = skip_ws(b, k + 7);
    (b.get(c) == Some(&b':')).then(|| ((v + 1, ve, escaped), skip_ws(b, c + 1)))
}

fn looks_like_json(b: &[u8]) -> bool {
    let p = skip_ws(b, 0);
    match b.get(p) {
        Some(b'{' | b'"') => true,
        Some(b'[') => {
            let q = skip_ws(b, p + 1);
            matches!(
                b.get(q),
                Some(b'{' | b'[' | b'"' | b']' | b'-' | b't' | b'f' | b'n' | b'0'..=b'9')
            )
        }
        _ => false,
    }
}

/// `pin` and `sig` only count as names next to a separator, which a JSON key's own text lacks.
fn short_name_word(key: &[u8]) -> bool {
    key.len() <= 64
        && key
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"pin") || w.eq_ignore_ascii_case(b"sig"))
}

/// The first position at or after `p` that is not ASCII whitespace.
pub(super) fn skip_ws(b: &[u8], mut p: usize) -> usize {
    while p < b.len() && b[p].is_ascii_whitespace() {
        p += 1;
    }
    p
}

/// The closing quote of the string whose content starts at `s` (or the line's end), and whether
/// the content has escapes.
fn string_end(b: &[u8], s: usize) -> (usize, bool) {
    let mut k = s;
    let mut escaped = false;
    while let Some(p) = memchr::memchr2(b'"', b'\\', &b[k..]) {
        let at = k + p;
        if b[at] == b'"' {
            return (at, escaped);
        }
        escaped = true;
        k = (at + 2).min(b.len());
    }
    (b.len(), escaped)
}

/// Decodes the JSON string content `raw` (at `base` in the line) into `d`.
fn decode(raw: &[u8], base: usize, d: &mut Decoded) {
    d.text.clear();
    d.map.clear();
    let mut k = 0;
    let mut bytes: Vec<u8> = std::mem::take(&mut d.text).into_bytes();
    while k < raw.len() {
        // The run up to the next escape is copied as it is.
        let run = memchr::memchr(b'\\', &raw[k..]).unwrap_or(raw.len() - k);
        if run > 0 {
            d.map.pieces.push((bytes.len() as u32, (base + k) as u32, true));
            bytes.extend_from_slice(&raw[k..k + run]);
            k += run;
            continue;
        }
        let at = (base + k) as u32;
        if k + 1 >= raw.len() {
            d.map.pieces.push((bytes.len() as u32, at, true));
            bytes.push(raw[k]);
            k += 1;
            continue;
        }
        let (ch, len) = match raw[k + 1] {
            b'n' => ('\n', 2),
            b't' => ('\t', 2),
            b'r' => ('\r', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'u' => unicode_escape(&raw[k..]),
            c => (c as char, 2),
        };
        d.map.pieces.push((bytes.len() as u32, at, false));
        let mut buf = [0u8; 4];
        bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        k += len;
    }
    d.map
        .pieces
        .push((bytes.len() as u32, (base + raw.len()) as u32, true));
    // Every escape decodes to a whole char and other bytes are copied from valid UTF-8 between
    // escapes, so this holds; a lossy fallback keeps the offsets if it ever did not.
    d.text = String::from_utf8(bytes).unwrap_or_else(|e| {
        let bytes = e.into_bytes();
        bytes
            .iter()
            .map(|b| if b.is_ascii() { *b as char } else { '?' })
            .collect()
    });
}

/// `\uXXXX`, or a surrogate pair `\uD83D\uDE00`; malformed escapes decode to U+FFFD.
fn unicode_escape(s: &[u8]) -> (char, usize) {
    let hex = |from: usize| -> Option<u32> {
        let h = s.get(from..from + 4)?;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    };
    let Some(hi) = hex(2) else {
        return ('\u{fffd}', 2);
    };
    if (0xD800..0xDC00).contains(&hi) && s.get(6..8) == Some(b"\\u") {
        if let Some(lo) = hex(8).filter(|lo| (0xDC00..0xE000).contains(lo)) {
            let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            return (char::from_u32(c).unwrap_or('\u{fffd}'), 12);
        }
    }
    (char::from_u32(hi).unwrap_or('\u{fffd}'), 6)
}

#[allow(clippy::too_many_arguments)]
fn scan_string(
    line: &str,
    s: usize,
    e: usize,
    escaped: bool,
    user: &UserRules,
    d: &mut Decoded,
    hits: &mut Vec<Hit>,
    out: &mut Vec<RawHit>,
) -> bool {
    hits.clear();
    if !escaped {
        let named = scan_text(&line[s..e], user, hits);
        out.extend(hits.iter().map(|h| RawHit {
            start: s + h.start,
            end: s + h.end,
            rule: h.rule,
            quote: false,
        }));
        return named;
    }
    decode(&line.as_bytes()[s..e], s, d);
    let named = scan_nested(&d.text, user, 1, hits);
    out.extend(hits.iter().map(|h| RawHit {
        start: d.map.raw(h.start),
        end: d.map.raw(h.end),
        rule: h.rule,
        quote: false,
    }));
    named
}

/// How many levels of JSON-in-a-string are decoded: a line's strings are level 1, a JSON
/// document held in one of them shows its own strings as `\"…\"` there (level 2), and so on.
/// Each level costs one more pass over the strings that hold escaped quotes.
const MAX_DEPTH: usize = 4;

/// Scans `text` (at nesting level `depth`), then each quoted string in it that holds escaped
/// quotes (a JSON document serialized into a string of a JSON document) as the text it decodes
/// to, mapping what is found there back over whole escapes. Only the strings' contents are
/// decoded, never the quotes around them, so the document at this level keeps its shape. True
/// when a name occurs at this level.
fn scan_nested(text: &str, user: &UserRules, depth: usize, hits: &mut Vec<Hit>) -> bool {
    let named = scan_text(text, user, hits);
    let b = text.as_bytes();
    if depth >= MAX_DEPTH || u32::try_from(b.len()).is_err() || memchr::memmem::find(b, b"\\\"").is_none() {
        return named;
    }
    let mut d = Decoded::default();
    let mut inner = Vec::new();
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', &b[i..]) {
        let s = i + q + 1;
        let (e, escaped) = string_end(b, s);
        i = (e + 1).min(b.len());
        if !escaped || memchr::memmem::find(&b[s..e], b"\\\"").is_none() {
            continue;
        }
        decode(&b[s..e], s, &mut d);
        inner.clear();
        scan_nested(&d.text, user, depth + 1, &mut inner);
        hits.extend(inner.iter().map(|h| Hit {
            start: d.map.raw(h.start),
            end: d.map.raw(h.end),
            rule: h.rule,
        }));
    }
    named
}

/// The value at `v` of the key `(s, e)`: a string judged whole, or a number for a
/// password-like key.
fn pair(line: &str, (s, e, escaped): (usize, usize, bool), v: usize, d: &mut Decoded, out: &mut Vec<RawHit>) {
    let b = line.as_bytes();
    let key: String = if escaped {
        decode(&b[s..e], s, d);
        d.text.clone()
    } else {
        line[s..e].to_string()
    };
    let strength = named::classify(&key);
    let vendors: Vec<u16> = engine()
        .ac
        .find_iter(key.as_str())
        .flat_map(|m| engine().targets[m.pattern().as_usize()].iter())
        .filter_map(|t| match t {
            Target::Vendor(k) => Some(*k),
            _ => None,
        })
        .collect();
    if strength.is_none() && vendors.is_empty() {
        return;
    }
    match b.get(v) {
        Some(b'"') => {
            let vs = v + 1;
            let (ve, vesc) = string_end(b, vs);
            let (text, map): (&str, Option<&Offsets>) = if vesc {
                decode(&b[vs..ve], vs, d);
                (&d.text, Some(&d.map))
            } else {
                (&line[vs..ve], None)
            };
            let skip = scheme_len(text);
            let value = &text[skip..];
            let rule = vendors
                .iter()
                .find(|&&k| engine().vendors[k as usize].is_match(value))
                .map(|&k| Rule::Builtin(super::catalogue::VENDORS[k as usize].id))
                .or_else(|| {
                    strength
                        .filter(|st| is_secret(value, *st, true))
                        .map(|_| Rule::Builtin("secret-named-value"))
                });
            if let Some(rule) = rule {
                let raw = |p: usize| map.map_or(vs + p, |m| m.raw(p));
                out.push(RawHit {
                    start: raw(skip),
                    end: raw(text.len()),
                    rule,
                    quote: false,
                });
            }
        }
        Some(c) if c.is_ascii_digit() => {
            let len = b[v..].iter().take_while(|c| c.is_ascii_digit()).count();
            let next = b.get(v + len).copied().unwrap_or(b'}');
            let whole = matches!(next, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n');
            if whole && strength.is_some_and(|st| is_secret(&line[v..v + len], st, false)) {
                out.push(RawHit {
                    start: v,
                    end: v + len,
                    rule: Rule::Builtin("secret-named-value"),
                    quote: true,
                });
            }
        }
        _ => {}
    }
}

/// `Bearer ` / `Basic ` / `Token ` at the start of an auth value: kept for context.
fn scheme_len(v: &str) -> usize {
    for scheme in ["bearer ", "basic ", "token ", "digest ", "bot "] {
        if v.len() > scheme.len() && v.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes()) {
            return scheme.len();
        }
    }
    0
}
