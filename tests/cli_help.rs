//! Every command's `--help`, pinned with insta under `snapshots/` so that a change to the CLI
//! shows in review; and the conventions every help text keeps: each flag and argument described,
//! global options only at the top, every environment variable listed with its flag in `--help`
//! and in the README's table.

use std::process::Command;

use kcap::config::settings::{OTHER_ENV, SETTINGS};

fn help(path: &[&str], flag: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kcap"))
        .args(path)
        .arg(flag)
        .env("COLUMNS", "100")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "kcap {path:?} {flag}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The names in a help text's `Commands:` section (without `help`).
fn subcommands(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line == "Commands:" {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with("  ") {
                break;
            }
            if let Some(name) = line
                .split_whitespace()
                .next()
                .filter(|_| !line.starts_with("   "))
            {
                if name != "help" {
                    names.push(name.to_string());
                }
            }
        }
    }
    names
}

/// Every command path: [], ["demo"], ["config", "show"], ...
fn every_command() -> Vec<Vec<String>> {
    let mut all = vec![Vec::new()];
    let mut i = 0;
    while i < all.len() {
        let path: Vec<&str> = all[i].iter().map(String::as_str).collect();
        for name in subcommands(&help(&path, "--help")) {
            let mut child = all[i].clone();
            child.push(name);
            all.push(child);
        }
        i += 1;
    }
    all
}

#[test]
fn help_of_every_command_is_pinned() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    let commands = every_command();
    assert!(commands.len() >= 20, "{commands:?}");
    settings.bind(|| {
        for path in commands {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            let name = if p.is_empty() {
                "help_kcap".to_string()
            } else {
                format!("help_kcap_{}", p.join("_"))
            };
            insta::assert_snapshot!(name, help(&p, "--help"));
        }
    });
}

/// Sections that list flags or arguments: `Options:`, `Arguments:` and headed groups.
fn entries(text: &str) -> Vec<(String, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut in_args = false;
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') && line.ends_with(':') {
            in_args = !matches!(*line, "Commands:" | "Environment:");
            continue;
        }
        if !line.starts_with(' ') && !line.is_empty() {
            in_args = false;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if !in_args
            || indent > 6
            || !(trimmed.starts_with('-') || trimmed.starts_with('<') || trimmed.starts_with('['))
        {
            continue;
        }
        // Described on the same line (after two spaces) or on the next, deeper-indented one.
        let same_line = trimmed.split("  ").skip(1).any(|t| !t.trim().is_empty());
        let next_line = lines
            .get(i + 1)
            .is_some_and(|n| n.len() - n.trim_start().len() > indent + 2 && !n.trim().is_empty());
        out.push((trimmed.to_string(), same_line || next_line));
    }
    out
}

#[test]
fn every_flag_and_argument_is_described_and_globals_are_only_at_the_top() {
    for path in every_command() {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&p, "--help");
        let found = entries(&text);
        if p.is_empty() {
            assert!(found.len() >= 12, "{found:?}");
        }
        for (entry, described) in &found {
            assert!(described, "kcap {p:?}: `{entry}` has no description\n{text}");
        }
        if !p.is_empty() {
            for global in ["--url", "--kcap-home", "--poll-ms", "--batch-lines"] {
                if p == ["login"] && global == "--url" {
                    continue; // login's own --url: the server to log in to
                }
                assert!(
                    !text.contains(&format!("  {global} ")),
                    "kcap {p:?} repeats the global {global}\n{text}"
                );
            }
        }
    }
}

/// Options given by the environment are not shown in usage lines as if they had been typed.
#[test]
fn usage_lines_have_no_phantom_required_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_kcap"))
        .arg("finalize")
        .env("KCAP_URL", "http://127.0.0.1:9")
        .env("KCAP_HOME", "/nonexistent/kcap-test")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let usage = stderr.lines().find(|l| l.starts_with("Usage:")).unwrap();
    assert_eq!(usage, "Usage: kcap finalize <--resume|--session <SESSION>>");
}

#[test]
fn every_environment_variable_is_in_the_help_and_the_readme() {
    let top = help(&[], "--help");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let envs = SETTINGS
        .iter()
        .map(|s| (s.env, s.flag.unwrap_or("")))
        .chain(OTHER_ENV.iter().map(|(e, f, _)| (*e, *f)));
    for (env, flag) in envs {
        let help_line = top
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{env} ")))
            .unwrap_or_else(|| panic!("{env} is not in `kcap --help`'s environment list\n{top}"));
        assert!(help_line.contains(flag), "{help_line:?} does not name {flag}");
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{env}`")))
            .unwrap_or_else(|| panic!("{env} has no row in the README's environment table"));
        if !flag.is_empty() {
            assert!(row.contains(flag), "README row {row:?} does not name {flag}");
        }
    }
}

#[test]
fn completions_for_each_shell_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_kcap"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        for command in ["doctor", "login", "import", "sessions", "config"] {
            assert!(script.contains(command), "{shell} completion lacks {command}");
        }
    }
}

#[test]
fn no_colour_when_not_on_a_terminal() {
    // stderr is a pipe here: a warning from tracing must carry no escape codes.
    let out = Command::new(env!("CARGO_BIN_EXE_kcap"))
        .args([
            "--url",
            "http://127.0.0.1:9",
            "import",
            "--copilot",
            "--dir",
            "/nonexistent/kcap-test",
        ])
        .env("KCAP_CONFIG", "/nonexistent/kcap-test/config.toml")
        .env("KCAP_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.is_empty());
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    let bad = Command::new(env!("CARGO_BIN_EXE_kcap"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&bad.stderr).contains('\u{1b}'));
}

/// The description check itself notices a bare flag.
#[test]
fn the_description_check_catches_a_bare_flag() {
    let text = "Usage: kcap x [OPTIONS]\n\nOptions:\n      --json  Print JSON\n      --bare\n  -h, --help  Print help\n";
    let found = entries(text);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].1 && !found[1].1 && found[2].1, "{found:?}");
}

/// `kcap … | head` closes the pipe before kcap has written everything: the output stops
/// quietly, without a panic and its backtrace on the terminal.
#[test]
fn a_closed_pipe_on_stdout_is_not_a_panic() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["machine"][..],
        &["config", "show"],
        &["completions", "bash"],
        &["status"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kcap"))
            .args(args)
            .env("HOME", home.path())
            .env("KCAP_CONFIG", home.path().join("config.toml"))
            .env("KCAP_HOME", home.path().join("kcap"))
            .env_remove("RUST_BACKTRACE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "kcap {args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "kcap {args:?}: {stderr}");
    }
}

/// Hooks exit 0 even on bad arguments (Copilot must never fail on kcap); every other command
/// exits 2, also when a stray word happens to be a hook's name.
#[test]
fn only_the_hook_commands_swallow_bad_arguments() {
    let home = tempfile::tempdir().unwrap();
    let code = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kcap"))
            .args(args)
            .env("KCAP_HOME", home.path().join("kcap"))
            .env("KCAP_CONFIG", home.path().join("config.toml"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(code(&["hook", "--no-such-flag"]), Some(0));
    assert_eq!(
        code(&["--url", "http://127.0.0.1:9", "hook", "--no-such-flag"]),
        Some(0)
    );
    assert_eq!(code(&["copilot-finalize"]), Some(0));
    assert_eq!(code(&["status", "hook"]), Some(2));
    assert_eq!(code(&["sessions", "--limit", "copilot-finalize"]), Some(2));
    assert_eq!(code(&["--kcap-home", "hook", "statu"]), Some(2));
    assert_eq!(code(&["watch"]), Some(2));
}
