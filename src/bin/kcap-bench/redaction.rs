//! Redaction: recall on a held-out corpus of the catalogue's formats in realistic transcript
//! contexts, precision on real source code shown by a tool, JSON kept intact, MB/s on real
//! transcripts, and linearity on lines built to hurt a scanner.
//!
//! The corpus is generated from the catalogue's own patterns with a seed the tests do not use
//! (so these strings were never seen by a test), each secret placed in named, bare-format and
//! URL contexts. Vendor rules that need the vendor's name go only into named and URL contexts.
//! Each hostile input is timed at 4 MB and 16 MB: linear time gives time(16)/(4·time(4)) ≈ 1.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::outside_corpus;
use kcap::redact::{samples, Redactor};

/// Where a context puts the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Named,
    Bare,
    Url,
}

/// (kind, description, text with `{S}` for the secret and `{N}` for a name)
const CONTEXTS: &[(Kind, &str, &str)] = &[
    (
        Kind::Named,
        "`cat .env` output",
        "DEBUG=1\nDB_HOST=db.internal\n{N}={S}\nLOG_LEVEL=info",
    ),
    (
        Kind::Named,
        "JSON config in a tool result",
        "{\n  \"service\": \"billing\",\n  \"{n}\": \"{S}\",\n  \"retries\": 3\n}",
    ),
    (
        Kind::Named,
        "aligned YAML",
        "production:\n  host: api.internal\n  {n}:        {S}\n  timeout: 30",
    ),
    (
        Kind::Named,
        "shell export in a command",
        "export {N}=\"{S}\" && ./deploy.sh",
    ),
    (
        Kind::Named,
        "Python source",
        "import os\n\n{N} = '{S}'\nclient = Client({n}={N})",
    ),
    (
        Kind::Named,
        "terraform",
        "resource \"x\" \"y\" {\n  {n}         = \"{S}\"\n}",
    ),
    (Kind::Bare, "`echo $TOKEN` output", "{S}\n"),
    (
        Kind::Bare,
        "log line",
        "2026-05-01T10:22:31Z INFO uploading with credential {S} (attempt 1)",
    ),
    (
        Kind::Bare,
        "command argument",
        "./scripts/rotate.sh {S} --region eu-west-1",
    ),
    (
        Kind::Bare,
        "assistant prose",
        "I found `{S}` hard-coded in src/config.ts; you should rotate it.",
    ),
    (
        Kind::Bare,
        "table cell after a tab",
        "NAME\tVALUE\tSTATUS\nci\t{S}\tactive",
    ),
    (
        Kind::Bare,
        "markdown code block",
        "Here is the value:\n```\n{S}\n```",
    ),
    (
        Kind::Url,
        "git remote with a password",
        "origin\thttps://deploy:{S}@git.example.com/org/repo.git (fetch)",
    ),
    (
        Kind::Url,
        "database URL",
        "DATABASE_URL=postgres://app:{S}@db.internal:5432/app",
    ),
    (
        Kind::Url,
        "query parameter",
        "GET https://api.example.com/v1/items?limit=10&{n}={S} 200",
    ),
];

const HOSTILE: [(&str, &str); 35] = [
    (
        "token prefixes, no token",
        "ghp_x sk-ant- xoxb-1 AKIA npm_ AIza eyJ glpat- ",
    ),
    (
        "secret-named keys, no value end",
        r#""password":"a\"token\":\"b "#,
    ),
    (
        "private-key BEGIN, never END",
        "-----BEGIN RSA PRIVATE KEY-----\\n",
    ),
    ("URL userinfo, no password end", "https://user:pa"),
    ("env assignments", "API_KEY= SECRET_TOKEN=x1 "),
    ("query parameters", "?token=&access_token=a&"),
    ("one giant word", "a"),
    ("names glued together", "password=password=token:"),
    ("escapes everywhere", "\\n\\t\\u0001\\\"key\\\": \\\""),
    ("unclosed quotes after names", "pass='x pwd=\"y "),
    // Every prefix starts a run of token characters longer than any token: each keyword hit
    // would run its formats to the length cap.
    ("`sk-` back to back", "sk-"),
    ("`xoxb-` back to back", "xoxb-"),
    // Round 5: separators before long random runs, sudo pipes, k8s data blocks.
    (
        "assignments of random runs",
        "A_B=q8ZtR3nV7mK2pL9xW4bC6dF1hJ5sG0aE x: ",
    ),
    ("echo pipes into sudo -S", "echo pw | sudo -S "),
    ("Secret data lines", "kind: Secret\ndata:\n  k: djE=\n"),
    // Attack round 5: each looked 4 KiB (URL), or a whole value, ahead per occurrence.
    ("URLs with a slashed password, back to back", "s://a:b/"),
    ("mongo -p back to back", "mongo -p"),
    ("session= back to back", "session=\""),
    // Attack round 6: each flag looked back to the line's start.
    ("cookie-jar flags back to back", "\tTRUE\t/"),
    // Round 7: each looks at the next line, an encoded query, a prompt's next `send`, a gutter.
    ("YAML keys, values on the next line", "password: >-\n  pw1234"),
    ("URL-encoded pairs", "token%3Dq8ZtR3nV7mK2%26"),
    ("expect prompts", "expect \"assword:\"\nsend \""),
    ("bat gutters", "   1   │ kind: Secret\n"),
    // Attack round 8: each strong name (or `data:`) looked back to its line's start.
    ("YAML anchors after a strong name", "password: &pw "),
    ("YAML tags after a strong name", "password: !!str "),
    ("block scalar headers with a comment", "password: | # "),
    ("blank lines after a strong name", "password:\n\n"),
    ("passwords on one line", "password: S3cretPw9x "),
    ("notes after a strong name", "password: todo "),
    ("encoded separators after a strong name", "password: %3D "),
    ("phrases after a strong name", "password: correct horse here "),
    ("Secret data keys on one line", "kind: Secret data: "),
    ("double-encoded pairs, encoded quotes", "password%253D%2522"),
    ("expect prompts, a line between", "expect \"assword:\"\nsleep 1\n"),
    (
        "block scalars under strong names",
        "password: |-\n    S3cretPw9x\n    ab12cd34\n",
    ),
];

/// Runs every redaction measure; true when all targets are met.
pub fn run(sample: &Path) -> Result<bool, String> {
    println!("\nkcap-bench: secret redaction (one core, in process)\n");
    let r = Redactor::builtin();
    let mut ok = true;

    // Recall on the held-out corpus, and on the outside catalogues' shapes.
    let mut broken = 0usize;
    let mut missed: Vec<String> = Vec::new();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    for (label, corpus) in [
        ("held-out corpus", samples::all(0x5EED_BE7C, 4)),
        ("outside catalogues", outside_corpus::all(0x0075_751D_E000, 4)),
    ] {
        let recall = recall(&r, &corpus, &mut missed);
        broken += recall.broken;
        let pct = |c: usize, t: usize| 100.0 * c as f64 / t.max(1) as f64;
        let (caught, total) = (recall.caught, recall.total);
        let overall = pct(caught.iter().sum(), total.iter().sum());
        let (named, bare, url) = (
            pct(caught[0], total[0]),
            pct(caught[1], total[1]),
            pct(caught[2], total[2]),
        );
        let rules = corpus
            .iter()
            .map(|s| s.rule)
            .collect::<std::collections::HashSet<_>>()
            .len();
        let lines = total.iter().sum::<usize>() + recall.broken;
        println!(
            "| {label}: {} secrets of {rules} rules in {} contexts ({lines} lines) | | |",
            corpus.len(),
            CONTEXTS.len()
        );
        println!("| recall, all contexts | {overall:.2} % | ≥ 98 % |");
        println!("| recall, format only (bare) | {bare:.2} % | ≥ 97 % |");
        println!("| recall, next to a secret-like name | {named:.2} % | ≥ 99 % |");
        println!("| recall, in URLs | {url:.2} % | |");
        ok &= overall >= 98.0 && bare >= 97.0 && named >= 99.0;
    }
    let pct = |c: usize, t: usize| 100.0 * c as f64 / t.max(1) as f64;

    // Precision on real source code shown by a tool.
    let source = samples::registry_source_lines(60_000);
    let mut changed = 0usize;
    let mut examples = Vec::new();
    for (n, s) in source.iter().enumerate() {
        let line = samples::view_line(n + 1, s);
        let out = r.redact(Cow::Borrowed(&line));
        if out != line {
            changed += 1;
            if samples::view_content(&out).is_none() {
                broken += 1;
            }
            if examples.len() < 5 {
                examples.push(s.trim().to_string());
            }
        }
    }
    let fp = pct(changed, source.len());
    println!(
        "| source lines changed ({} lines of crates in cargo's registry, as `view` results) | {fp:.3} % | ≤ 0.1 % |",
        source.len()
    );
    ok &= source.is_empty() || fp <= 0.1;

    // Real transcripts: throughput, and JSON intact.
    let transcripts = real_transcripts(sample);
    let lines: Vec<&str> = transcripts.0.lines().filter(|l| !l.trim().is_empty()).collect();
    for l in &lines {
        if serde_json::from_str::<serde_json::Value>(l).is_ok() {
            let out = r.redact(Cow::Borrowed(l));
            if serde_json::from_str::<serde_json::Value>(&out).is_err() {
                broken += 1;
            }
        }
    }
    println!("| lines whose JSON broke (corpus, sources, transcripts) | {broken} | 0 |");
    ok &= broken == 0;
    let (mbs, cpu_mbs, changed_real) = throughput(&r, &lines);
    println!(
        "| MB/s, one core, {} ({} lines, {} changed): wall clock / per CPU-second of this thread | {mbs:.0} / {cpu_mbs:.0} | ≥ 200 MB/s |",
        transcripts.1,
        lines.len(),
        changed_real
    );
    // On a shared machine the wall clock counts other processes' time; the thread's own CPU
    // time does not.
    ok &= cpu_mbs >= 200.0;
    let with_tokens: Vec<String> = lines
        .iter()
        .map(|l| match l.strip_suffix('}') {
            Some(head) => format!("{head},\"x\":\"ghp_0123456789abcdefghijklmnopqrstuvwxyzAB\"}}"),
            None => l.to_string(),
        })
        .collect();
    let with_tokens: Vec<&str> = with_tokens.iter().map(String::as_str).collect();
    let (mbs_tokens, cpu_tokens, _) = throughput(&r, &with_tokens);
    println!("| MB/s, the same lines each carrying a GitHub token | {mbs_tokens:.0} / {cpu_tokens:.0} | |");

    // Timed by this thread's CPU time (best of three): on a shared machine a wall-clock run of
    // the 16 MB line can lose the core for a while and look non-linear when it is not.
    println!(
        "\n| hostile line (one line, repeated) | MB/s at 16 MB (CPU) | time(16 MB) / (4 x time(4 MB)): CPU (wall clock) | target |"
    );
    println!("|---|---|---|---|");
    for (name, unit) in HOSTILE {
        let (small, small_cpu) = time_line(&r, unit, 4 << 20);
        let (big, big_cpu) = time_line(&r, unit, 16 << 20);
        let ratio =
            |big: Duration, small: Duration| big.as_secs_f64() / (4.0 * small.as_secs_f64().max(1e-9));
        let (cpu_ratio, wall_ratio) = (ratio(big_cpu, small_cpu), ratio(big, small));
        ok &= cpu_ratio < 2.0;
        println!(
            "| {name} | {:.0} | {cpu_ratio:.2} ({wall_ratio:.2}) | ≈ 1 (linear) |",
            mb_per_s(16 << 20, big_cpu)
        );
    }
    if !missed.is_empty() {
        println!("\nSome misses:");
        for m in &missed {
            println!("  {m}");
        }
    }
    if !examples.is_empty() {
        println!("\nSome changed source lines:");
        for e in &examples {
            println!("  {e}");
        }
    }
    Ok(ok)
}

/// What one corpus's recall run counted.
struct Recall {
    /// Per [`Kind`]: secrets placed, and secrets no longer in the output.
    total: [usize; 3],
    caught: [usize; 3],
    /// Lines whose JSON broke.
    broken: usize,
}

/// Every secret of `corpus` in every context that fits it, redacted as a tool result; misses
/// are noted in `missed` (the first 12 per corpus).
fn recall(r: &Redactor, corpus: &[samples::Sample], missed: &mut Vec<String>) -> Recall {
    let (mut total, mut caught, mut broken) = ([0usize; 3], [0usize; 3], 0usize);
    let mut noted = 0;
    for s in corpus {
        let name = s
            .vendor_name
            .clone()
            .unwrap_or_else(|| "SERVICE_API_TOKEN".to_string());
        for (kind, what, template) in CONTEXTS {
            if s.vendor_name.is_some() && *kind == Kind::Bare {
                continue;
            }
            // A webhook URL is not a URL's password.
            if s.secret.contains("://") && *kind == Kind::Url {
                continue;
            }
            let text = template
                .replace("{N}", &name)
                .replace("{n}", &name.to_ascii_lowercase())
                .replace("{S}", &s.secret);
            let line =
                serde_json::json!({"type": "tool.execution_complete", "data": {"result": {"content": text}}})
                    .to_string();
            let out = r.redact(Cow::Borrowed(&line));
            let Some(content) = samples::view_content(&out) else {
                broken += 1;
                continue;
            };
            let k = *kind as usize;
            total[k] += 1;
            if leaked(&content, &s.secret) {
                if noted < 12 {
                    noted += 1;
                    missed.push(format!("{} in {what}: {}", s.rule, s.secret));
                }
            } else {
                caught[k] += 1;
            }
        }
    }
    Recall {
        total,
        caught,
        broken,
    }
}

/// The secret, or a 12-byte end of it, is still in the text.
fn leaked(text: &str, secret: &str) -> bool {
    if text.contains(secret) {
        return true;
    }
    let n = secret.len();
    n >= 24
        && secret.is_char_boundary(12)
        && secret.is_char_boundary(n - 12)
        && (text.contains(&secret[..12]) || text.contains(&secret[n - 12..]))
}

/// Every `.jsonl` transcript beside `sample` (the real agent samples in ../shared), else a
/// generated one; and a description of which.
fn real_transcripts(sample: &Path) -> (String, String) {
    let mut text = String::new();
    let mut files = 0;
    if let Some(dir) = sample.parent() {
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
            paths.sort();
            for p in paths
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            {
                if let Ok(t) = std::fs::read_to_string(p) {
                    text.push_str(&t);
                    text.push('\n');
                    files += 1;
                }
            }
        }
    }
    if files > 0 {
        let mb = text.len() as f64 / 1e6;
        return (text, format!("{files} real agent transcripts ({mb:.1} MB)"));
    }
    let mut generated = String::new();
    for (n, s) in samples::registry_source_lines(20_000).iter().enumerate() {
        generated.push_str(&samples::view_line(n, s));
        generated.push('\n');
    }
    (
        generated,
        "a generated transcript (no real samples found)".to_string(),
    )
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// MB/s (wall clock, and per CPU-second of this thread) over at least 100 MB of `lines`
/// redacted one by one, and how many of them changed.
fn throughput(r: &Redactor, lines: &[&str]) -> (f64, f64, usize) {
    if lines.is_empty() {
        return (0.0, 0.0, 0);
    }
    let (mut total, mut changed) = (0usize, 0usize);
    let cpu = thread_cpu();
    let started = Instant::now();
    while total < 100_000_000 {
        changed = 0;
        for line in lines {
            if let Cow::Owned(_) = r.redact(Cow::Borrowed(line)) {
                changed += 1;
            }
            total += line.len();
        }
    }
    let wall = started.elapsed();
    (
        mb_per_s(total, wall),
        mb_per_s(total, thread_cpu().saturating_sub(cpu)),
        changed,
    )
}

/// Best of three by the wall clock and by this thread's CPU time, on one line of `unit`
/// repeated to `len` bytes.
fn time_line(r: &Redactor, unit: &str, len: usize) -> (Duration, Duration) {
    let line = unit.repeat(len / unit.len());
    let runs: Vec<(Duration, Duration)> = (0..3)
        .map(|_| {
            let cpu = thread_cpu();
            let started = Instant::now();
            std::hint::black_box(r.redact(Cow::Borrowed(&line)));
            (started.elapsed(), thread_cpu().saturating_sub(cpu))
        })
        .collect();
    (
        runs.iter().map(|r| r.0).min().unwrap_or_default(),
        runs.iter().map(|r| r.1).min().unwrap_or_default(),
    )
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9)
}
