//! Scanning one piece of text (a decoded JSON string, or a plain line) for secrets: the
//! keyword pass, then each rule where its keyword is.

use super::catalogue::{At, Check, FORMATS};
use super::engine::{engine, Target};
use super::user::UserRules;
use super::{cli, named, pem, url};

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
    let mut command = false;
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
                    } else if let Some(token_end) = anchored(text, s, i) {
                        out.push(Hit {
                            start: s,
                            end: token_end,
                            rule: Rule::Builtin(f.id),
                        });
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
            }
        }
    }
    for i in searched {
        search(text, i, out);
    }
    if command {
        cli::scan(b, out);
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
    // What an earlier pass already replaced is not found again (redaction is idempotent), and
    // the user's allowlist keeps what it names.
    if out.len() > first {
        let mut k = first;
        while k < out.len() {
            let found = &text[out[k].start..out[k].end];
            if found.contains(super::REDACTED) || user.allows(found) {
                out.swap_remove(k);
            } else {
                k += 1;
            }
        }
    }
    named
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

/// The end of format `i` matched at keyword position `s`, if it matches there.
fn anchored(text: &str, s: usize, i: u16) -> Option<usize> {
    let b = text.as_bytes();
    if !starts_word(b, s) {
        return None;
    }
    let m = engine().formats[i as usize].find(&text[s..])?;
    let end = s + m.end();
    (ends_word(b, end) && passes(FORMATS[i as usize].check, &b[s..end])).then_some(end)
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
