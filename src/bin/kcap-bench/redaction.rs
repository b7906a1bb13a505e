//! Redaction speed: MB/s on real transcript lines, and on single lines built to hurt a scanner
//! (endless near-miss prefixes, unclosed key blocks, one giant word). Each hostile input is timed
//! at two sizes: for linear time the larger takes 4x as long (a time ratio of about 1 after
//! dividing by 4); a quadratic scanner would show 4.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use kcap::redact;

const HOSTILE: [(&str, &str); 7] = [
    ("token prefixes, no token", "ghp_x sk-ant- xoxb-1 AKIA npm_ "),
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
];

pub fn run(sample: &[u8]) -> Result<bool, String> {
    println!("\nkcap-bench: secret redaction (one core, in process)\n");
    let text = std::str::from_utf8(sample).map_err(|e| e.to_string())?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let real = throughput(&lines);
    // The same lines, each carrying a token: the path that copies and replaces.
    let with_tokens: Vec<String> = lines
        .iter()
        .map(|l| format!("{} ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", &l[..l.len() - 1]) + "}")
        .collect();
    let with_tokens: Vec<&str> = with_tokens.iter().map(String::as_str).collect();
    let tokens = throughput(&with_tokens);
    println!("| input | MB/s | time(16 MB) / (4 x time(4 MB)) | target |");
    println!("|---|---|---|---|");
    println!(
        "| real transcript lines, 100 MB ({} of {} lines changed) | {:.0} | | ≥ 100 MB/s (the 200 MB finalize in < 3 s) |",
        real.1,
        lines.len(),
        real.0
    );
    println!(
        "| the same lines, each with a GitHub token ({} of {} changed) | {:.0} | | ≥ 100 MB/s |",
        tokens.1,
        lines.len(),
        tokens.0
    );
    let mut linear = true;
    for (name, unit) in HOSTILE {
        let small = time_line(unit, 4 << 20);
        let big = time_line(unit, 16 << 20);
        let ratio = big.as_secs_f64() / (4.0 * small.as_secs_f64().max(1e-9));
        linear &= ratio < 2.0;
        println!(
            "| {name} | {:.0} | {ratio:.2} | ≈ 1 (linear) |",
            mb_per_s(16 << 20, big)
        );
    }
    Ok(linear)
}

/// MB/s over 100 MB of `lines` redacted one by one, and how many of them changed.
fn throughput(lines: &[&str]) -> (f64, usize) {
    let (mut total, mut changed) = (0usize, 0usize);
    let started = Instant::now();
    while total < 100_000_000 {
        changed = 0;
        for line in lines {
            if let Cow::Owned(_) = redact::line(Cow::Borrowed(line)) {
                changed += 1;
            }
            total += line.len();
        }
    }
    (mb_per_s(total, started.elapsed()), changed)
}

/// Best of five, on one line of `unit` repeated to `len` bytes.
fn time_line(unit: &str, len: usize) -> Duration {
    let line = unit.repeat(len / unit.len());
    (0..5)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(redact::line(Cow::Borrowed(&line)));
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9)
}
