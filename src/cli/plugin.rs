//! `kcap plugin install|remove`: Copilot CLI's hooks file.

use std::path::{Path, PathBuf};

use crate::cli::hook::EVENTS;

/// The hooks file kcap owns in `$COPILOT_HOME/hooks/`.
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

/// `$COPILOT_HOME/hooks/kcap.json`.
pub fn hooks_path(copilot_home: &Path) -> PathBuf {
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

/// The agents present on this machine, for `plugin install` and `import` without an agent flag:
/// Copilot CLI when its root exists. An error names what was looked for.
pub fn detect_agents(copilot_home: &Path, copilot_flag: bool) -> Result<(), String> {
    if copilot_flag || copilot_home.is_dir() {
        return Ok(());
    }
    Err(format!(
        "no coding agent found: Copilot CLI's root {} does not exist (install Copilot CLI and run it \
         once, set COPILOT_HOME or --dir, or pass --copilot to install anyway)",
        copilot_home.display()
    ))
}

/// Deletes `$COPILOT_HOME/hooks/kcap.json` (only that file).
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
