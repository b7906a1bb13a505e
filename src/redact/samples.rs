//! Random samples of every catalogue format, generated from the rules' own patterns: the
//! per-rule tests use one seed, the benchmark's held-out corpus another, so neither is tuned to
//! the other's strings. `regex-syntax` parses the patterns (the same parser the `regex` crate
//! uses), so a sample follows exactly the alphabet, lengths and alternatives a rule states.

use regex_syntax::hir::{Class, Hir, HirKind};

use super::catalogue::{At, Check, FORMATS, VENDORS};

/// One generated secret.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The rule it was generated from.
    pub rule: &'static str,
    /// The secret text.
    pub secret: String,
    /// For a vendor-named rule, a name that announces the vendor (`ADAFRUIT_KEY`); `None` for
    /// self-identifying formats.
    pub vendor_name: Option<String>,
}

/// A small deterministic generator (xorshift64*), so a failing sample is reproducible.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Formats whose secret only exists inside a surrounding shape (a pgpass line, a DSN URL) and
/// so cannot be dropped into arbitrary contexts.
const CONTEXT_BOUND: &[&str] = &[
    "pgpass-line",
    "sentry-dsn",
    "bearer-token",
    "cloudinary-url",
    "azure-storage-key-listing",
];

/// `per_rule` samples of every format and vendor rule.
pub fn all(seed: u64, per_rule: usize) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for f in FORMATS {
        if CONTEXT_BOUND.contains(&f.id) {
            continue;
        }
        let Ok(hir) = regex_syntax::parse(f.pattern) else {
            continue;
        };
        let mut made = 0;
        let mut tries = 0;
        while made < per_rule && tries < per_rule * 50 {
            tries += 1;
            let mut s = String::new();
            generate(&hir, &mut rng, &mut s);
            let mixed = s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().any(|b| b.is_ascii_alphabetic());
            // A search format's text must not end in a way that glues it to a following word.
            if (f.check == Check::Mixed && !mixed) || (f.at == At::Search && s.ends_with(['-', '_'])) {
                continue;
            }
            out.push(Sample {
                rule: f.id,
                secret: s,
                vendor_name: None,
            });
            made += 1;
        }
    }
    for v in VENDORS {
        let Ok(hir) = regex_syntax::parse(v.value) else {
            continue;
        };
        for _ in 0..per_rule {
            let mut s = String::new();
            // `NAME==value` reads as a comparison, not an assignment: no leading `=`.
            while s.is_empty() || s.starts_with('=') {
                s.clear();
                generate(&hir, &mut rng, &mut s);
            }
            let suffix = ["API_KEY", "SECRET", "TOKEN", "CLIENT_ID", "KEY"][rng.below(5)];
            let word = v.names[0]
                .trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_ascii_uppercase();
            out.push(Sample {
                rule: v.id,
                secret: s,
                vendor_name: Some(format!("{word}_{suffix}")),
            });
        }
    }
    out
}

fn generate(h: &Hir, rng: &mut Rng, out: &mut String) {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(l) => out.push_str(&String::from_utf8_lossy(&l.0)),
        HirKind::Class(Class::Unicode(c)) => {
            // Printable ASCII members only: secrets here are ASCII.
            let members: Vec<char> = c
                .ranges()
                .iter()
                .flat_map(|r| (r.start() as u32).max(0x21)..=(r.end() as u32).min(0x7e))
                .filter_map(char::from_u32)
                .collect();
            if !members.is_empty() {
                out.push(members[rng.below(members.len())]);
            }
        }
        HirKind::Class(Class::Bytes(c)) => {
            let members: Vec<u8> = c
                .ranges()
                .iter()
                .flat_map(|r| r.start().max(0x21)..=r.end().min(0x7e))
                .collect();
            if !members.is_empty() {
                out.push(members[rng.below(members.len())] as char);
            }
        }
        HirKind::Repetition(r) => {
            let max = r.max.unwrap_or(r.min + 8).min(r.min + 24);
            let n = r.min as usize + rng.below((max - r.min) as usize + 1);
            for _ in 0..n {
                generate(&r.sub, rng, out);
            }
        }
        HirKind::Capture(c) => generate(&c.sub, rng, out),
        HirKind::Concat(parts) => parts.iter().for_each(|p| generate(p, rng, out)),
        HirKind::Alternation(alts) => generate(&alts[rng.below(alts.len())], rng, out),
    }
}

/// One source line as an agent's `view` tool shows it, inside a transcript line.
pub fn view_line(number: usize, source: &str) -> String {
    let content = format!("{number}. {source}");
    let v = serde_json::json!({"type": "tool.execution_complete", "data": {"toolCallId": "call_1", "success": true, "result": {"content": content}}});
    v.to_string()
}

/// The content of a transcript line made by [`view_line`] (or any tool result), if it parses.
pub fn view_content(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["data"]["result"]["content"].as_str().map(str::to_string)
}

/// Up to `max_lines` non-empty lines of real Rust source: the `.rs` files of the crates in
/// cargo's registry (`$CARGO_HOME/registry/src`), in a fixed order. Empty when there is none.
pub fn registry_source_lines(max_lines: usize) -> Vec<String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")));
    let Some(root) = home.map(|h| h.join("registry/src")) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for p in entries.into_iter().rev() {
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                files.push(p);
            }
        }
        if files.len() > 4000 {
            break;
        }
    }
    let mut lines = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        lines.extend(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string));
        if lines.len() >= max_lines {
            lines.truncate(max_lines);
            break;
        }
    }
    lines
}
