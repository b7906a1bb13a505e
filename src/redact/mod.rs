//! Secret redaction: a pure text transform applied to every line and body before it leaves the
//! machine (docs/architecture.md).
//!
//! - [`catalogue`]: ~230 vendor formats (prefixes, alphabets, lengths) and vendor-named values.
//! - [`engine`]: one keyword automaton (the prefilter) and the rules' linear-time regexes.
//! - [`json`]: JSON string values are scanned as the text they decode to and findings are
//!   mapped back over whole escapes, so a valid JSON line stays valid and byte-identical outside
//!   the redacted ranges.
//! - [`named`] and [`value`]: values next to secret-like names in every common assignment
//!   syntax, and the precision rules that keep code, types and placeholders.
//! - [`url`], [`pem`], [`cli`]: URL userinfo, private key blocks (PEM, PGP, PuTTY),
//!   command-line passwords (flags, `echo … | sudo -S`, `htpasswd -b`).
//! - [`generic`]: a random-looking value assigned to any name.
//! - [`k8s`]: the data values of a Kubernetes Secret.
//! - [`user`]: the user's own patterns and allowlist from the config file.
//! - [`samples`]: random samples of every format, for the tests and the benchmark.
//!
//! Each finding becomes `[REDACTED]`; keys, schemes and user names stay. Time is linear in the
//! line: one keyword pass, and every rule looks a bounded distance from its keyword.

mod catalogue;
mod cli;
mod cookies;
mod engine;
mod generic;
mod json;
mod k8s;
mod named;
mod pem;
pub mod samples;
mod scan;
mod url;
mod user;
mod value;
mod view;

use std::borrow::Cow;
use std::sync::OnceLock;

pub use user::{config_path, UserRules};

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// One secret found in a line: the rule that found it and its byte range in the line as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: String,
    pub start: usize,
    pub end: usize,
    /// The range is a bare JSON number (`"pin": 1234`): it is replaced by a quoted marker.
    pub quoted: bool,
}

/// A redactor: the built-in catalogue plus the user's rules.
#[derive(Default)]
pub struct Redactor {
    user: UserRules,
}

impl Redactor {
    /// The built-in rules only.
    pub fn builtin() -> Redactor {
        Redactor::default()
    }

    /// The built-in rules plus `user`'s.
    pub fn with_rules(user: UserRules) -> Redactor {
        Redactor { user }
    }

    /// The built-in rules plus those of kcap's config file (none when it does not exist).
    pub fn from_config() -> Result<Redactor, String> {
        match config_path() {
            Some(path) => UserRules::load(&path).map(Redactor::with_rules),
            None => Ok(Redactor::builtin()),
        }
    }

    /// The secrets in `line`, sorted, overlapping findings merged (the first rule names them).
    pub fn findings(&self, line: &str) -> Vec<Finding> {
        self.ranges(line)
            .into_iter()
            .map(|r| Finding {
                rule: match r.rule {
                    scan::Rule::Builtin(id) => id.to_string(),
                    scan::Rule::User(k) => self.user.name(k).to_string(),
                },
                start: r.start,
                end: r.end,
                quoted: r.quote,
            })
            .collect()
    }

    /// `line` with every secret replaced by [`REDACTED`]; borrowed when nothing was found.
    pub fn redact<'a>(&self, line: Cow<'a, str>) -> Cow<'a, str> {
        let ranges = self.ranges(&line);
        if ranges.is_empty() {
            return line;
        }
        Cow::Owned(render(&line, &ranges).0)
    }

    /// The ranges to replace: the first pass's findings, grown until the redacted line has
    /// nothing more to give (at most [`MAX_PASSES`] scans).
    ///
    /// Redaction must be idempotent, yet a rule may judge text by what surrounds it, and the
    /// first pass changes the surroundings: a value replaced by a marker can turn a line after
    /// a key header into key text. Rather than teach every rule how a marker looks (each new
    /// rule opened a new non-idempotent shape), the line is redacted again and what the second
    /// scan finds is mapped back over the original bytes. Each pass covers at least one byte
    /// more, and a line with no finding costs one scan, as before.
    fn ranges(&self, line: &str) -> Vec<json::RawHit> {
        let mut ranges = self.pass(line);
        for _ in 1..MAX_PASSES {
            if ranges.is_empty() {
                break;
            }
            let (out, markers) = render(line, &ranges);
            let again = self.pass(&out);
            if again.is_empty() {
                break;
            }
            ranges.extend(again.into_iter().map(|h| json::RawHit {
                start: markers.to_original(h.start, false),
                end: markers.to_original(h.end, true),
                ..h
            }));
            ranges = merge(ranges);
        }
        ranges
    }

    /// One scan of `line`: its findings, sorted and merged.
    fn pass(&self, line: &str) -> Vec<json::RawHit> {
        let mut hits = Vec::new();
        json::scan_line(line, &self.user, &mut hits);
        hits.retain(|h| {
            h.end > h.start
                && h.end <= line.len()
                && line.is_char_boundary(h.start)
                && line.is_char_boundary(h.end)
        });
        merge(hits)
    }
}

/// How many scans a line may get before its ranges are taken as they are: a bound keeps
/// redaction linear on any input (200,000 generated lines each settled within it).
const MAX_PASSES: usize = 4;

/// `hits` sorted, the overlapping ones merged (the first rule names them).
fn merge(mut hits: Vec<json::RawHit>) -> Vec<json::RawHit> {
    hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
    let mut merged: Vec<json::RawHit> = Vec::with_capacity(hits.len());
    for h in hits {
        match merged.last_mut() {
            Some(last) if h.start < last.end => {
                last.end = last.end.max(h.end);
                last.quote |= h.quote;
            }
            _ => merged.push(h),
        }
    }
    merged
}

/// Where each marker of a redacted line stands and which original bytes it replaced.
struct Markers {
    /// (start in the output, end in the output, original start, original end), in order.
    spans: Vec<(usize, usize, usize, usize)>,
}

impl Markers {
    /// The original offset of output offset `p`; inside a marker, its original range's start,
    /// or its end when `p` ends a range.
    fn to_original(&self, p: usize, is_end: bool) -> usize {
        let i = self.spans.partition_point(|s| s.1 <= p);
        match self.spans.get(i) {
            Some(&(os, _, rs, re)) if os < p => {
                if is_end {
                    re
                } else {
                    rs
                }
            }
            _ => match i.checked_sub(1).map(|k| self.spans[k]) {
                Some((_, oe, _, re)) => re + (p - oe),
                None => p,
            },
        }
    }
}

/// `line` with `ranges` (sorted, disjoint) replaced by markers, and where the markers went.
fn render(line: &str, ranges: &[json::RawHit]) -> (String, Markers) {
    let mut out = String::with_capacity(line.len());
    let mut spans = Vec::with_capacity(ranges.len());
    let mut copied = 0;
    for r in ranges {
        out.push_str(&line[copied..r.start]);
        let at = out.len();
        if r.quote {
            out.push('"');
            out.push_str(REDACTED);
            out.push('"');
        } else {
            out.push_str(REDACTED);
        }
        spans.push((at, out.len(), r.start, r.end));
        copied = r.end;
    }
    out.push_str(&line[copied..]);
    (out, Markers { spans })
}

/// The process-wide redactor: built-in rules plus the config file's. A config file that cannot
/// be used is reported once and the built-in rules still apply (delivery must not stop, and
/// `kcap redact` reports the same error as a failure).
pub fn global() -> &'static Redactor {
    static GLOBAL: OnceLock<Redactor> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        Redactor::from_config().unwrap_or_else(|e| {
            tracing::error!("redaction: user rules ignored: {e}");
            eprintln!("kcap: redaction: user rules ignored: {e}");
            Redactor::builtin()
        })
    })
}

/// Redacts one line (or body) with the process-wide redactor; borrows when nothing was found.
pub fn line(input: Cow<'_, str>) -> Cow<'_, str> {
    global().redact(input)
}

#[cfg(test)]
mod tests;
