//! `kcap redact` as a user runs it: lines in, redacted lines out; `--explain`; user rules and
//! their errors from the config file.

use std::io::Write;
use std::process::{Command, Stdio};

#[track_caller]
fn kcap_redact(args: &[&str], config: &std::path::Path, stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcap"))
        .arg("redact")
        .args(args)
        .env("KCAP_CONFIG", config)
        .env("KCAP_HOME", config.parent().unwrap_or(config))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcap runs");
    // A bad config makes kcap exit before it reads stdin: a broken pipe then is expected.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing stdin: {e}");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const INPUT: &str = "{\"a\":\"token ghp_0123456789abcdefghijklmnopqrstuvwxyz ok\"}\nnothing here\r\nacme_0123456789abcdef ACME_ALLOWED_1\n\nlast without newline password=hunter22";

#[test]
fn one_line_out_per_line_in_with_user_rules() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "url = \"http://127.0.0.1:1\"\n[redact]\npatterns = [{ name = \"acme\", regex = \"acme_[0-9a-f]{16}|ACME_ALLOWED_[0-9]\" }]\nallow = [\"ACME_ALLOWED_1\"]\n",
    )
    .unwrap();
    let (code, out, err) = kcap_redact(&[], &config, INPUT);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "{\"a\":\"token [REDACTED] ok\"}\nnothing here\r\n[REDACTED] ACME_ALLOWED_1\n\nlast without newline password=[REDACTED]"
    );
    let (code, out, _) = kcap_redact(&["--explain"], &config, INPUT);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "line 1: github-pat 12..52\nline 3: acme 0..21\nline 5: secret-named-value 30..38\n3 of 5 lines would change\n"
    );
    assert!(!out.contains("hunter22") && !out.contains("ghp_"));
}

#[test]
fn a_bad_user_rule_is_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[redact]\npatterns = [{ name = \"broken-rule\", regex = \"acme_(\" }]\n",
    )
    .unwrap();
    let (code, out, err) = kcap_redact(&[], &config, INPUT);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("broken-rule") && err.contains("bad regex") && err.contains("config.toml"),
        "{err}"
    );
    // A missing config file means no user rules.
    let (code, out, _) = kcap_redact(&[], &dir.path().join("missing.toml"), "x acme_0123456789abcdef\n");
    assert_eq!((code, out.as_str()), (0, "x acme_0123456789abcdef\n"));
}
