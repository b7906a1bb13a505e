//! The real public Copilot transcripts (`../shared/research-samples/copilot`), for the tests that
//! exercise them. They are not part of the repository: a fresh clone has none, and those tests
//! then print one `skipped:` line and pass. CI sets `KCAP_REQUIRE_SAMPLES=1`, which turns a
//! missing sample into a failure, so CI always runs them.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the samples are expected: beside the checkout, as the developers' brief lays it out.
pub const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/research-samples/copilot");
/// The longest sample: a complete two-prompt session, shutdown last.
pub const VIBE: &str = "Mai0313__VibeCodingTracker__copilot.jsonl";

/// `$KCAP_SAMPLES_DIR` if set (to run the suite against another copy, or against none), else
/// [`SAMPLES`].
pub fn samples_dir() -> PathBuf {
    match std::env::var_os("KCAP_SAMPLES_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(SAMPLES),
    }
}

fn required() -> bool {
    std::env::var("KCAP_REQUIRE_SAMPLES").is_ok_and(|v| v == "1")
}

/// The samples directory when it holds `.jsonl` samples. Otherwise prints one `skipped: <test>
/// …` line (written past the test harness's capture, so it shows in `cargo test` output) and
/// returns `None`; with `KCAP_REQUIRE_SAMPLES=1` it panics instead.
pub fn real_samples(test: &str) -> Option<PathBuf> {
    let dir = samples_dir();
    let present = std::fs::read_dir(&dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
    });
    if present {
        return Some(dir);
    }
    let why = format!(
        "{test}: no real Copilot transcripts in {} (public research samples kept beside the \
         checkout in ../shared/research-samples/copilot, or pointed to by KCAP_SAMPLES_DIR; \
         they are not in the repository)",
        dir.display()
    );
    if required() {
        panic!("KCAP_REQUIRE_SAMPLES=1 and {why}");
    }
    // libtest captures print!/eprint!, not direct writes: this line must be seen.
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
    None
}

/// One sample's bytes, from [`samples_dir`]. Call it after [`real_samples`] said they are there;
/// a missing file is a failure with its path.
pub fn sample(name: &str) -> Vec<u8> {
    let path = samples_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "sample {}: {e} (use real_samples() first, or transcript() for the project's own fixture)",
            Path::new(&path).display()
        )
    })
}
