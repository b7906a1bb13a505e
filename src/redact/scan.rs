//! Scanning one piece of text (a decoded JSON string, or a plain line) for secrets: the
//! keyword pass, then each rule where its keyword is.

use super::catalogue::{At, Check, FORMATS};
use super::engine::{engine, Target};
use super::user::UserRules;
use super::{cli, cookies, generic, k8s, named, pem, url};

/// Which rule found a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    Builtin(&'static str),
    /// Index into the user's patterns.
    User(usize),
}

/// A secret's byte range in the scanned text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub rule: Rule,
}

/// Appends the secrets found in `text` to `out`; true when a secret-like name or a vendor's name
/// occurs in it (so a JSON key's value is worth judging).
pub(crate) fn scan_text(text: &str, user: &UserRules, out: &mut Vec<Hit>) -> bool {
    let e = engine();
    let b = text.as_bytes();
    let first = out.len();
    let mut names: Vec<(usize, usize, Target)> = Vec::new();
    let mut searched: Vec<u16> = Vec::new();
    let mut pem_until = 0;
    // Where the cookie jar line last judged ends: one jar entry a line.
    let mut cookie_until = 0;
    let mut command = false;
    let mut k8s_secret = false;
    // Per anchored format tried in this text: where its last match attempt ran to. A keyword
    // inside that stretch (`sk-` in `sk-sk-sk-…`) would run the same format over the same
    // token characters again, up to its length cap each time; a run of prefixes would cost
    // ~100 regex bytes per text byte. What the earlier attempt covered is not tried again.
    let mut tried: Vec<(u16, usize)> = Vec::new();
    for m in e.ac.find_iter(text) {
        let (s, end) = (m.start(), m.end());
        for &t in &e.targets[m.pattern().as_usize()] {
            match t {
                Target::Format(i) => {
                    let f = &FORMATS[i as usize];
                    if f.at == At::Search {
                        if !searched.contains(&i) {
                            searched.push(i);
                        }
                    } else {
                        let slot = match tried.iter().position(|t| t.0 == i) {
                            Some(k) => k,
                            None => {
                                tried.push((i, 0));
                                tried.len() - 1
                            }
                        };
                        if s < tried[slot].1 {
                            continue;
                        }
                        let (ran_to, token_end) = anchored(text, s, i);
                        tried[slot].1 = ran_to;
                        if let Some(token_end) = token_end {
                            out.push(Hit {
                                start: s,
                                end: token_end,
                                rule: Rule::Builtin(f.id),
                            });
                        }
                    }
                }
                Target::Vendor(_) => names.push((s, end, t)),
                // Name keywords may carry their separator (`pin=`): the name ends at its letters.
                Target::Name => {
                    let len = b[s..end]
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                        .count();
                    names.push((s, s + len, t));
                }
                Target::Url => {
                    if let Some((ps, pe)) = url::password(b, s) {
                        out.push(Hit {
                            start: ps,
                            end: pe,
                            rule: Rule::Builtin("url-password"),
                        });
                    }
                }
                Target::Pem => {
                    if s >= pem_until {
                        if let Some(block_end) = pem::block_end(b, s) {
                            out.push(Hit {
                                start: s,
                                end: block_end,
                                rule: Rule::Builtin("private-key-block"),
                            });
                            pem_until = block_end;
                        }
                    }
                }
                Target::Command => command = true,
                Target::K8sSecret => k8s_secret = true,
                Target::CookieJar => {
                    if s >= cookie_until {
                        let (hit, until) = cookies::value(text, s);
                        out.extend(hit);
                        cookie_until = until;
                    }
                }
                Target::Putty => {
                    if let Some(e) = pem::putty_private_end(b, s) {
                        // The header stays; the key lines after it go.
                        let start = s + b[s..e]
                            .iter()
                            .take_while(|c| **c != b'\n' && **c != b'\\')
                            .count();
                        if e > start {
                            out.push(Hit {
                                start,
                                end: e,
                                rule: Rule::Builtin("putty-private-key"),
                            });
                        }
                    }
                }
            }
        }
    }
    for i in searched {
        search(text, i, out);
    }
    if command {
        cli::scan(b, out);
    }
    if k8s_secret {
        k8s::scan(text, out);
    }
    generic::scan(text, out);
    let key_ids: Vec<usize> = out[first..]
        .iter()
        .filter(|h| h.rule == Rule::Builtin("aws-access-key-id"))
        .map(|h| h.end)
        .collect();
    for end in key_ids {
        if let Some((start, end)) = aws_secret_after(b, end) {
            out.push(Hit {
                start,
                end,
                rule: Rule::Builtin("aws-secret-access-key"),
            });
        }
    }
    let named = !names.is_empty();
    if named {
        names.sort_unstable_by_key(|n| n.0);
        named::scan(text, &names, out);
    }
    for (k, (_, re)) in user.patterns.iter().enumerate() {
        for m in re.find_iter(text) {
            if m.end() > m.start() {
                out.push(Hit {
                    start: m.start(),
                    end: m.end(),
                    rule: Rule::User(k),
                });
            }
        }
    }
    // What an earlier pass already replaced is not found again (redaction is idempotent): a
    // finding that holds a marker is cut into the pieces around it, and only pieces with a
    // letter or digit in them are kept. Dropping the whole finding instead would let one typed
    // `[REDACTED]` shield the rest of a key or password. The user's allowlist keeps what it names.
    if out.len() > first {
        let found: Vec<Hit> = out.drain(first..).collect();
        for mut h in found {
            h.start = escape_start(b, h.start);
            h.end = escape_end(b, h.end);
            // A rule that counts bytes may stop inside a character; the finding takes the whole
            // character rather than the capture panicking on the slice below.
            while !text.is_char_boundary(h.start) {
                h.start -= 1;
            }
            while !text.is_char_boundary(h.end) {
                h.end += 1;
            }
            let text_of = &text[h.start..h.end];
            if user.allows(text_of) {
                continue;
            }
            if !text_of.contains(super::REDACTED) {
                out.push(h);
                continue;
            }
            let mut from = h.start;
            for (at, _) in text_of.match_indices(super::REDACTED) {
                push_piece(text, from, h.start + at, h.rule, out);
                from = h.start + at + super::REDACTED.len();
            }
            push_piece(text, from, h.end, h.rule, out);
        }
    }
    named
}

/// Text may hold a JSON document's escapes (`\"`, `\n`, `\u00e9`) one level down: a finding
/// that ends or starts inside one would leave half of it, and `\"` cut after its backslash
/// ends that document's string early. These move a finding's edges out to whole escapes.
///
/// The escape (start, length) that `p` falls strictly inside, if any.
fn escape_around(b: &[u8], p: usize) -> Option<(usize, usize)> {
    for i in (p.saturating_sub(5)..p).rev() {
        if b[i] != b'\\' {
            continue;
        }
        // An escape starts here if an even number of backslashes precede it (bounded: a run
        // longer than that is garbage, and any answer keeps the output valid).
        let run = b[..i].iter().rev().take(256).take_while(|c| **c == b'\\').count();
        if run % 2 == 1 {
            continue;
        }
        let len = if b.get(i + 1) == Some(&b'u') { 6 } else { 2 };
        if p < i + len {
            return Some((i, len));
        }
    }
    None
}

fn escape_start(b: &[u8], p: usize) -> usize {
    escape_around(b, p).map_or(p, |(i, _)| i)
}

fn escape_end(b: &[u8], p: usize) -> usize {
    escape_around(b, p).map_or(p, |(i, len)| {
        // Whole characters only: a `\` before a multi-byte character takes all of it.
        let mut e = (i + len).min(b.len());
        while e < b.len() && (b[e] & 0xC0) == 0x80 {
            e += 1;
        }
        e
    })
}

/// The piece `[s, e)` of a finding next to a marker, without its surrounding blanks, when a
/// letter or digit is left in it.
fn push_piece(text: &str, s: usize, e: usize, rule: Rule, out: &mut Vec<Hit>) {
    let piece = &text[s..e];
    let trimmed = piece.trim_start();
    let start = s + (piece.len() - trimmed.len());
    let end = start + trimmed.trim_end().len();
    // The letter of an escape (`\n`) is not text: a piece that is only escapes stays as it is,
    // or each pass of `Redactor::ranges` would take one more escape and never settle.
    let p = &text.as_bytes()[start..end];
    let mut k = 0;
    let mut text_left = false;
    while k < p.len() {
        if p[k] == b'\\' && k + 1 < p.len() {
            k += if p[k + 1] == b'u' { 6 } else { 2 };
            continue;
        }
        text_left |= p[k].is_ascii_alphanumeric() || !p[k].is_ascii();
        k += 1;
    }
    if text_left {
        out.push(Hit { start, end, rule });
    }
}

/// Whether a token may start at `s`: not in the middle of a word. A letter right after a
/// backslash is an escape (`\n`, `\t` in text that is still JSON-encoded), so a boundary too,
/// as is the end of a `\u0001` escape.
pub(crate) fn starts_word(b: &[u8], s: usize) -> bool {
    if s == 0 || !b[s - 1].is_ascii_alphanumeric() {
        return true;
    }
    if s >= 2 && b[s - 2] == b'\\' && b[s - 1].is_ascii_alphabetic() {
        return true;
    }
    s >= 6 && b[s - 6] == b'\\' && b[s - 5] == b'u' && b[s - 4..s].iter().all(u8::is_ascii_hexdigit)
}

fn ends_word(b: &[u8], e: usize) -> bool {
    e >= b.len() || !b[e].is_ascii_alphanumeric()
}

fn passes(check: Check, token: &[u8]) -> bool {
    match check {
        Check::None => true,
        Check::Mixed => token.iter().any(u8::is_ascii_digit) && token.iter().any(u8::is_ascii_alphabetic),
    }
}

/// Format `i` tried at keyword position `s`: how far its match ran (`s` when it did not match
/// or was not tried), and the token's end when it is one.
fn anchored(text: &str, s: usize, i: u16) -> (usize, Option<usize>) {
    let b = text.as_bytes();
    if !starts_word(b, s) {
        return (s, None);
    }
    let Some(m) = engine().formats[i as usize].find(&text[s..]) else {
        return (s, None);
    };
    let end = s + m.end();
    let ok = ends_word(b, end) && passes(FORMATS[i as usize].check, &b[s..end]);
    (end, ok.then_some(end))
}

/// Every match of search format `i` (its first group when it has one).
fn search(text: &str, i: u16, out: &mut Vec<Hit>) {
    let re = &engine().formats[i as usize];
    let f = &FORMATS[i as usize];
    let b = text.as_bytes();
    let mut push = |s: usize, e: usize| {
        if starts_word(b, s) && ends_word(b, e) && passes(f.check, &b[s..e]) {
            out.push(Hit {
                start: s,
                end: e,
                rule: Rule::Builtin(f.id),
            });
        }
    };
    if re.captures_len() > 1 {
        for c in re.captures_iter(text) {
            if let Some(g) = c.get(1) {
                push(g.start(), g.end());
            }
        }
    } else {
        for m in re.find_iter(text) {
            push(m.start(), m.end());
        }
    }
}

/// How far after a key id its secret may start: a config line or prose puts a few words
/// between them (`aws_access_key_id = AKIA… then the secret wJalr…`).
const AWS_SECRET_WINDOW: usize = 160;

/// A secret access key printed right after its key id, with no name beside it
/// (`AKIA…,wJalr…` in credentials.csv, `AKIA… / wJalr…` in prose): a run of exactly 40
/// base64 characters, with upper- and lower-case letters, starting within a few bytes after
/// the id. Looks at a fixed window per id, so it stays linear.
fn aws_secret_after(b: &[u8], id_end: usize) -> Option<(usize, usize)> {
    let in_key = |c: u8| c.is_ascii_alphanumeric() || c == b'/' || c == b'+';
    let mut p = id_end;
    while p < b.len() && p < id_end + AWS_SECRET_WINDOW {
        if !in_key(b[p]) {
            p += 1;
            continue;
        }
        let len = b[p..].iter().take(41).take_while(|c| in_key(**c)).count();
        let run = &b[p..p + len];
        let next_ok = b.get(p + len).is_none_or(|c| *c != b'=' || len != 40);
        if len == 40
            && next_ok
            && run.iter().any(u8::is_ascii_uppercase)
            && run.iter().any(u8::is_ascii_lowercase)
        {
            return Some((p, p + len));
        }
        p += len;
    }
    None
}
