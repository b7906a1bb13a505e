//! `kcap plugin install|remove`: each agent's hooks file (the agent says where and what,
//! [`Agent::hooks_file`]); written atomically, no other file touched.

use std::path::{Path, PathBuf};

use crate::agent::Agent;

/// The agents `plugin install` and `import` act on: `chosen` (from `--agent`) with `home`, else
/// every agent whose root exists (`home` for the default agent when given). An error names what
/// was looked for.
pub fn detect_agents(
    chosen: Option<&'static dyn Agent>,
    home: Option<PathBuf>,
) -> Result<Vec<(&'static dyn Agent, PathBuf)>, String> {
    if let Some(agent) = chosen {
        return Ok(vec![(agent, home.unwrap_or_else(|| agent.home()))]);
    }
    let mut home = home;
    let candidates: Vec<(&'static dyn Agent, PathBuf)> = crate::agent::ALL
        .iter()
        .map(|a| (*a, home.take().unwrap_or_else(|| a.home())))
        .collect();
    let found: Vec<_> = candidates.iter().filter(|(_, h)| h.is_dir()).cloned().collect();
    if !found.is_empty() {
        return Ok(found);
    }
    let looked: Vec<String> = candidates
        .iter()
        .map(|(a, h)| format!("{}'s root {}", a.name(), h.display()))
        .collect();
    Err(format!(
        "no coding agent found: {} does not exist (install the agent and run it once, set its \
         root's variable or --dir, or pass --agent <name> to install anyway)",
        looked.join(", ")
    ))
}

/// The hooks file `agent` reads from `home`.
pub fn hooks_path(agent: &dyn Agent, home: &Path) -> PathBuf {
    agent.hooks_file(home).0
}

/// Writes `agent`'s hooks file under `home` (atomically; other files in the folder untouched).
pub fn install(agent: &dyn Agent, home: &Path) -> Result<String, String> {
    let (path, document) = agent.hooks_file(home);
    let wanted = serde_json::to_string_pretty(&document).map_err(|e| e.to_string())? + "\n";
    if std::fs::read_to_string(&path).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(format!("already installed: {}", path.display()));
    }
    let existed = path.exists();
    let dir = path
        .parent()
        .ok_or_else(|| format!("{} has no folder", path.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
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

/// Deletes `agent`'s hooks file under `home` (only that file).
pub fn remove(agent: &dyn Agent, home: &Path) -> Result<String, String> {
    let path = hooks_path(agent, home);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(format!("removed {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(format!("not installed: {} does not exist", path.display()))
        }
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}
