//! GitHub Copilot CLI: `$COPILOT_HOME/session-state/<id>/events.jsonl`, append-only JSONL whose
//! `session.shutdown` line (the token totals) is written after the `sessionEnd` hook returns;
//! hooks from `$COPILOT_HOME/hooks/*.json`; `inuse.<pid>.lock` files in the session directory
//! while a process uses the session. Research notes: `../shared/research/copilot-format.md`.

mod hooks;
mod paths;

use std::path::{Path, PathBuf};

use super::{Agent, HookEvent, HookPayload, TerminalRule};
use crate::config::settings::{Kind, Setting};
use crate::ids::SessionId;
use crate::store::Holder;

/// Copilot CLI.
pub struct Copilot;

/// `$COPILOT_HOME`, the config file's `copilot_home`, `--dir`.
pub const HOME_SETTING: Setting = Setting {
    key: "copilot_home",
    env: "COPILOT_HOME",
    flag: Some("--dir"),
    command: Some("plugin, import"),
    default: Some("~/.copilot"),
    about: "Copilot CLI's root (session-state, hooks)",
    kind: Kind::Path,
};

/// Copilot's hook events (camelCase names, as its hooks file spells them).
const EVENTS: &[(&str, HookEvent)] = &[
    ("sessionStart", HookEvent::SessionStart),
    ("sessionEnd", HookEvent::SessionEnd),
    ("agentStop", HookEvent::AgentStop),
    ("notification", HookEvent::Notification),
];

impl Agent for Copilot {
    fn name(&self) -> &'static str {
        "copilot"
    }

    fn home(&self) -> PathBuf {
        crate::config::value(HOME_SETTING.key)
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::config::home_dir().join(".copilot"))
    }

    fn sessions_dir(&self, home: &Path) -> PathBuf {
        home.join(paths::SESSION_STATE)
    }

    fn transcript_path(&self, home: &Path, session: SessionId) -> PathBuf {
        self.sessions_dir(home)
            .join(session.dashed())
            .join(paths::TRANSCRIPT_NAME)
    }

    fn session_of_path(&self, path: &Path) -> Result<SessionId, String> {
        paths::session_of_path(path)
    }

    fn hook_events(&self) -> &'static [(&'static str, HookEvent)] {
        EVENTS
    }

    fn parse_hook(&self, payload: &[u8]) -> Result<HookPayload, String> {
        hooks::parse(payload)
    }

    fn terminal_rule(&self) -> TerminalRule {
        TerminalRule {
            end_type: "session.shutdown",
        }
    }

    fn session_users(&self, session_dir: &Path) -> Vec<Holder> {
        paths::lock_owners(session_dir)
    }

    fn hooks_file(&self, home: &Path) -> (PathBuf, serde_json::Value) {
        (hooks::path(home), hooks::document())
    }

    fn legacy_cli(&self, cmd: clap::Command) -> clap::Command {
        hooks::legacy_cli(cmd)
    }
}
