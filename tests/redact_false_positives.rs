//! Precision on real code: third-party Rust sources from cargo's registry, each line wrapped as
//! a `view` tool result, must come out unchanged (at most 0.1 % of lines may change). Generated
//! at test time from whatever the registry holds; nothing is committed.

use std::borrow::Cow;

use kcap::redact::{samples, Redactor};

#[test]
fn real_source_code_shown_by_a_tool_is_left_alone() {
    let source = samples::registry_source_lines(60_000);
    if source.len() < 1_000 {
        println!("skipped: no cargo registry sources found (looked in $CARGO_HOME/registry/src)");
        return;
    }
    let r = Redactor::builtin();
    let mut changed = Vec::new();
    for (n, s) in source.iter().enumerate() {
        let line = samples::view_line(n + 1, s);
        let out = r.redact(Cow::Borrowed(&line));
        if out != line {
            assert!(samples::view_content(&out).is_some(), "broke the JSON: {out}");
            changed.push(s.trim().to_string());
        }
    }
    let share = changed.len() as f64 / source.len() as f64;
    println!(
        "{} of {} source lines changed ({:.3} %)",
        changed.len(),
        source.len(),
        share * 100.0
    );
    for c in changed.iter().take(30) {
        println!("  {c}");
    }
    assert!(
        share <= 0.001,
        "{} of {} lines changed:\n{}",
        changed.len(),
        source.len(),
        changed.join("\n")
    );
}
