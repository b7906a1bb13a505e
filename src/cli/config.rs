//! `kcap config show|set|unset|path`: the config file, and where each value comes from.

use std::io::Read;

use crate::config::settings::{display, resolve, setting, Source};
use crate::config::{ConfigFile, SETTINGS};

/// One row of `kcap config show`.
#[derive(Debug, serde::Serialize)]
struct Row {
    key: &'static str,
    env: &'static str,
    value: Option<String>,
    source: Source,
}

/// Every setting with its value and source. `flags` are the flags given on this command line,
/// by config key.
pub fn show(flags: &[(&'static str, Option<String>)], json: bool) -> Result<String, String> {
    let file = crate::config::loaded();
    let rows: Vec<Row> = SETTINGS
        .iter()
        .map(|s| {
            let flag = flags
                .iter()
                .find(|(k, _)| *k == s.key)
                .and_then(|(_, v)| v.as_deref());
            let r = resolve(s, flag, file);
            Row {
                key: s.key,
                env: s.env,
                value: r.value.map(|v| display(s, &v)).or_else(|| {
                    // Paths have computed defaults; show what they are.
                    match s.key {
                        "kcap_home" => Some(crate::config::kcap_home().display().to_string()),
                        // An agent's root.
                        k => crate::agent::ALL
                            .iter()
                            .find(|a| crate::agent::home_setting(**a).key == k)
                            .map(|a| a.home().display().to_string()),
                    }
                }),
                source: r.source,
            }
        })
        .collect();
    if json {
        let value = serde_json::json!({
            "path": file.path,
            "exists": file.exists,
            "problems": file.problems,
            "settings": rows,
        });
        return serde_json::to_string_pretty(&value).map_err(|e| e.to_string());
    }
    let mut out = format!(
        "config file  {} ({})\n",
        file.path.display(),
        match (file.exists, file.mode) {
            (false, _) => "absent: every value is a default, an environment variable or a flag".to_string(),
            (true, Some(mode)) => format!("mode {mode:04o}"),
            (true, None) => "present".to_string(),
        }
    );
    for p in &file.problems {
        out.push_str(&format!("problem      {p}\n"));
    }
    for s in SETTINGS {
        if let Some(v) = std::env::var(s.env).ok().filter(|v| !v.is_empty()) {
            if let Err(e) = crate::config::settings::validate(s, &v) {
                out.push_str(&format!("problem      {}: {e} (ignored)\n", s.env));
            }
        }
    }
    out.push_str(&format!(
        "\n{:<20} {:<8} {:<24} {}\n",
        "KEY", "SOURCE", "ENVIRONMENT", "VALUE"
    ));
    for r in rows {
        out.push_str(&format!(
            "{:<20} {:<8} {:<24} {}\n",
            r.key,
            r.source.to_string(),
            r.env,
            r.value.as_deref().unwrap_or("-")
        ));
    }
    Ok(out)
}

/// `-` means: read the value from stdin, so a token stays out of shell history. On a terminal
/// that is one line after a prompt (waiting for end-of-file there looks like a hang); from a
/// pipe or file, everything (at most 64 KiB).
pub fn value_or_stdin(value: &str) -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    if value != "-" {
        return Ok(value.to_string());
    }
    let mut text = String::new();
    let stdin = std::io::stdin();
    let read = if stdin.is_terminal() {
        eprint!("value (then Enter): ");
        stdin.lock().take(64 * 1024).read_line(&mut text)
    } else {
        stdin.lock().take(64 * 1024).read_to_string(&mut text)
    };
    read.map_err(|e| format!("cannot read the value from stdin: {e}"))?;
    Ok(text.trim().to_string())
}

/// Sets one key in the config file.
pub fn set(key: &str, value: &str) -> Result<String, String> {
    let mut value = value_or_stdin(value)?;
    if setting(key).is_some_and(|s| s.kind == crate::config::settings::Kind::Path) {
        value = absolute(&value)?;
    }
    let mut file = ConfigFile::load();
    file.set(key, &value)?;
    file.save()?;
    let shown = setting(key).map_or(value.clone(), |s| display(s, &value));
    let mut out = format!("{key} = {shown} in {}", file.path.display());
    if let Some(env) = setting(key).map(|s| s.env) {
        if std::env::var(env).is_ok_and(|v| !v.is_empty()) {
            out.push_str(&format!(
                "\nnote: {env} is set in this environment and overrides the file here"
            ));
        }
    }
    Ok(out)
}

/// A path as the user meant it from here: `~/` is their home, a relative path is taken from the
/// current directory (the file must hold absolute paths: hooks run elsewhere).
fn absolute(value: &str) -> Result<String, String> {
    let path = match value.strip_prefix("~/") {
        Some(rest) => std::path::Path::new(&std::env::var("HOME").unwrap_or_default()).join(rest),
        None => std::path::PathBuf::from(value),
    };
    std::path::absolute(&path)
        .map(|p| p.display().to_string())
        .map_err(|e| format!("{value:?}: {e}"))
}

/// Removes one key from the config file.
pub fn unset(key: &str) -> Result<String, String> {
    let mut file = ConfigFile::load();
    if !file.unset(key)? {
        return Ok(format!("{key} was not set in {}", file.path.display()));
    }
    file.save()?;
    Ok(format!("removed {key} from {}", file.path.display()))
}
