//! Usage fold cost: a `session.shutdown` line listing N modified files, parsed and folded twice
//! (a resumed session), at N = 60,000 and 240,000. For linear time the larger takes 4x as long
//! (a ratio of about 1 after dividing by 4); the old list-contains dedupe showed about 16.
//! Also checks that counters past 2^53 come out saturated and flagged, never as JSON `null`, and
//! that a shutdown naming 150,000 or 600,000 models parses in linear time to a bounded summary.

use std::time::{Duration, Instant};

use kcap::server::usage::{fold, parse_shutdown};

fn shutdown_line(files: usize, first: usize) -> String {
    let names: Vec<String> = (first..first + files)
        .map(|i| format!("\"src/file_{i}.rs\""))
        .collect();
    format!(
        r#"{{"type":"session.shutdown","data":{{"totalPremiumRequests":1e300,"codeChanges":{{"filesModified":[{}]}},"modelMetrics":{{"m":{{"usage":{{"inputTokens":1e300}}}}}}}}}}"#,
        names.join(",")
    )
}

/// Parse and fold two shutdowns of `files` files each, half of the second's files repeated.
fn time_fold(files: usize) -> (Duration, bool) {
    let lines = [shutdown_line(files, 0), shutdown_line(files, files / 2)];
    let start = Instant::now();
    let parsed: Vec<_> = lines.iter().filter_map(|l| parse_shutdown(l)).collect();
    let usage = fold(&parsed, false);
    let elapsed = start.elapsed();
    let json = serde_json::to_string(&usage).unwrap_or_default();
    // Each shutdown keeps its first FILES_KEPT names and counts the rest.
    let listed = usage.files_modified.len() as u64 + usage.files_omitted;
    let sound = listed == 2 * files as u64 && usage.saturated && !json.contains("null");
    (elapsed, sound)
}

/// Parses one shutdown naming `models` models: the time, and the size of what is stored of it.
fn time_models(models: usize) -> (Duration, usize) {
    let entries: Vec<String> = (0..models)
        .map(|i| format!(r#""model-{i:07}":{{"requests":{{"count":1,"cost":1}},"usage":{{"inputTokens":1,"outputTokens":1}}}}"#))
        .collect();
    let line = format!(
        r#"{{"type":"session.shutdown","data":{{"modelMetrics":{{{}}}}}}}"#,
        entries.join(",")
    );
    let start = Instant::now();
    let parsed = parse_shutdown(&line);
    let elapsed = start.elapsed();
    let stored = parsed.map_or(usize::MAX, |s| {
        serde_json::to_string(&s).map_or(usize::MAX, |j| j.len())
    });
    (elapsed, stored)
}

/// Prints the fold's cost next to its targets; false when a check failed.
pub fn run() -> bool {
    println!("\nkcap-bench: usage fold (one core, in process)\n");
    let (small, sound_small) = time_fold(60_000);
    let (big, sound_big) = time_fold(240_000);
    let ratio = big.as_secs_f64() / (4.0 * small.as_secs_f64().max(1e-9));
    println!("| input | time | time(240k) / (4 x time(60k)) | target |");
    println!("|---|---|---|---|");
    println!(
        "| two shutdowns with 60,000 modified files each | {:.1} ms | | ≪ 3.7 s (before) |",
        small.as_secs_f64() * 1e3
    );
    println!(
        "| two shutdowns with 240,000 modified files each | {:.1} ms | {ratio:.2} | ≈ 1 (linear) |",
        big.as_secs_f64() * 1e3
    );
    let sound = sound_small && sound_big;
    println!(
        "| counters of 1e300 summed | {} | | saturated and flagged, no null |",
        if sound { "saturated, flagged" } else { "WRONG" }
    );
    let (few, few_stored) = time_models(150_000);
    let (many, many_stored) = time_models(600_000);
    let models_ratio = many.as_secs_f64() / (4.0 * few.as_secs_f64().max(1e-9));
    println!(
        "| one shutdown naming 150,000 / 600,000 models | {:.0} / {:.0} ms, {few_stored} / {many_stored} bytes stored | {models_ratio:.2} | ≈ 1 (linear); stored ≤ 100,000 bytes |",
        few.as_secs_f64() * 1e3,
        many.as_secs_f64() * 1e3
    );
    let bounded = few_stored.max(many_stored) <= 100_000;
    sound && ratio < 2.0 && models_ratio < 2.0 && bounded
}
