//! `kcap plugin install|remove --copilot` and `kcap doctor`.

use std::path::{Path, PathBuf};

use crate::cli::hook::EVENTS;
use crate::store::Store;

pub const HOOKS_FILE: &str = "kcap.json";

/// Copilot's documented hooks-file format: one command entry per event.
pub fn hooks_document() -> serde_json::Value {
    let mut hooks = serde_json::Map::new();
    for event in EVENTS {
        hooks.insert(
            event.to_string(),
            serde_json::json!([{
                "type": "command",
                "command": format!("kcap hook --copilot --event {event}"),
                "timeoutSec": 30
            }]),
        );
    }
    serde_json::json!({ "version": 1, "hooks": hooks })
}

fn hooks_path(copilot_home: &Path) -> PathBuf {
    copilot_home.join("hooks").join(HOOKS_FILE)
}

/// Writes `$COPILOT_HOME/hooks/kcap.json` (atomically; other files in the folder untouched).
pub fn install(copilot_home: &Path) -> Result<String, String> {
    let path = hooks_path(copilot_home);
    let wanted = serde_json::to_string_pretty(&hooks_document()).map_err(|e| e.to_string())? + "\n";
    if std::fs::read_to_string(&path).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(format!("already installed: {}", path.display()));
    }
    let existed = path.exists();
    let dir = path.parent().expect("hooks file has a folder");
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let temp = dir.join(format!(".{HOOKS_FILE}.{}.tmp", std::process::id()));
    std::fs::write(&temp, &wanted).map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
    std::fs::rename(&temp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        format!("cannot install {}: {e}", path.display())
    })?;
    Ok(format!(
        "{} {}",
        if existed { "updated" } else { "installed" },
        path.display()
    ))
}

pub fn remove(copilot_home: &Path) -> Result<String, String> {
    let path = hooks_path(copilot_home);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(format!("removed {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(format!("not installed: {} does not exist", path.display()))
        }
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

/// What is installed and reachable; the exit code is 1 when something needs attention.
pub async fn doctor(store: &Store, copilot_home: &Path, url: &str) -> (String, i32) {
    let mut out = String::new();
    let mut ok = true;
    let mut line = |good: bool, what: &str, detail: String| {
        ok &= good;
        out.push_str(&format!(
            "{} {what:<10} {detail}\n",
            if good { "ok  " } else { "FIX " }
        ));
    };

    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("kcap").is_file()))
        .unwrap_or(false);
    line(
        on_path,
        "kcap",
        if on_path {
            "on PATH".into()
        } else {
            "not on PATH: Copilot's hooks run `kcap …` and will not find it".into()
        },
    );

    let path = hooks_path(copilot_home);
    let wanted = hooks_document();
    match std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        Some(v) if v == wanted => line(true, "hooks", format!("installed: {}", path.display())),
        Some(_) => line(
            false,
            "hooks",
            format!(
                "{} differs from this version: run `kcap plugin install --copilot`",
                path.display()
            ),
        ),
        None => line(
            false,
            "hooks",
            format!(
                "not installed ({}): run `kcap plugin install --copilot`",
                path.display()
            ),
        ),
    }

    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build();
    let reach = match client {
        Ok(c) => c
            .get(format!("{}/auth/config", url.trim_end_matches('/')))
            .send()
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match reach {
        Ok(r) if r.status().is_success() => line(true, "server", format!("{url} answers")),
        Ok(r) => line(false, "server", format!("{url} answers HTTP {}", r.status())),
        Err(e) => line(false, "server", format!("{url} unreachable: {e}")),
    }

    match crate::cli::watchers::usable_machines(store) {
        Ok(machines) => {
            let unfinished = machines
                .iter()
                .filter(|m| !m.state().0.phase.is_terminal())
                .count();
            let pending = store.pending_session_ends().map(|p| p.len()).unwrap_or(0);
            line(
                unfinished == 0 && pending == 0,
                "store",
                format!(
                    "{}: {} finalizers, {unfinished} unfinished, {pending} session-end notices pending{}",
                    store.home().display(),
                    machines.len(),
                    if unfinished + pending > 0 {
                        " (`kcap finalize --resume` carries them on)"
                    } else {
                        ""
                    }
                ),
            );
        }
        Err(problem) => line(false, "store", problem),
    }
    (out, if ok { 0 } else { 1 })
}
