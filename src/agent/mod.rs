//! The coding agents kcap captures, each behind one small trait: where its transcripts live and
//! how a session id becomes a path, what its hooks send, when its transcript is over, what it is
//! called on the server, and how its hooks are installed. Everything else (reading, batching,
//! redacting, delivering, the machines) is the same for every agent.
//!
//! An agent is one folder under `src/agent/` implementing [`Agent`], registered in [`ALL`]
//! (and, for its root's setting, in [`HOME_SETTINGS`]). Nothing outside its folder names it; a
//! test (`tests/agent_seam.rs`) keeps it so.

pub mod copilot;

use std::path::{Path, PathBuf};

use crate::config::Setting;
use crate::ids::SessionId;
use crate::store::Holder;

/// Every agent kcap knows, the default first.
pub const ALL: &[&dyn Agent] = &[&copilot::Copilot];

/// The settings that name each agent's root (rows of `config::SETTINGS`).
pub const HOME_SETTINGS: &[Setting] = &[copilot::HOME_SETTING];

/// One coding agent.
pub trait Agent: Sync {
    /// Its name on the wire and on the server (`vendor`), in flags (`--agent <name>`) and in
    /// hook commands. Lower case, stable: the server stores it.
    fn name(&self) -> &'static str;

    /// Its root on this machine (from its setting: environment, config file, default), under
    /// which its transcripts and hooks live.
    fn home(&self) -> PathBuf;

    /// The directory under `home` holding one entry per session, named by its id.
    fn sessions_dir(&self, home: &Path) -> PathBuf;

    /// Where `session`'s transcript lives under `home`. The id is a parsed UUID, so the path
    /// cannot leave the sessions directory.
    fn transcript_path(&self, home: &Path, session: SessionId) -> PathBuf;

    /// The session a transcript path names, if the path has this agent's shape exactly (no
    /// `.` or `..`, the session directory named by the dashed id). Every open checks it.
    fn session_of_path(&self, path: &Path) -> Result<SessionId, String>;

    /// The hook event names the agent runs kcap with, and what each means to kcap.
    fn hook_events(&self) -> &'static [(&'static str, HookEvent)];

    /// Parses a hook's stdin.
    fn parse_hook(&self, payload: &[u8]) -> Result<HookPayload, String>;

    /// The terminal-line rule, as data for the pure machine (`machine::terminal`).
    fn terminal_rule(&self) -> TerminalRule;

    /// The live processes using a session right now (as the agent marks them in the session
    /// directory); empty when it marks none.
    fn session_users(&self, session_dir: &Path) -> Vec<Holder>;

    /// The hooks file kcap owns in `home` and the content this version writes there.
    fn hooks_file(&self, home: &Path) -> (PathBuf, serde_json::Value);

    /// Earlier command-line spellings kept working for scripts and hooks files written by
    /// earlier versions (aliases, flags). None by default.
    fn legacy_cli(&self, cmd: clap::Command) -> clap::Command {
        cmd
    }
}

impl std::fmt::Debug for dyn Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq for dyn Agent {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for dyn Agent {}

/// What a hook event means to kcap, whatever the agent calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    /// The session started (or resumed): post session-start, start the watcher.
    SessionStart,
    /// A turn ended: make sure the watcher runs.
    AgentStop,
    /// The session ended: spawn the finalizer, stop the watcher, drain.
    SessionEnd,
    /// Anything the agent wants to tell the user: forwarded as it is.
    Notification,
}

impl HookEvent {
    /// The event's name in the lifecycle notices the server gets (`hook_event_name`).
    pub fn protocol_name(self) -> &'static str {
        match self {
            HookEvent::SessionStart => "sessionStart",
            HookEvent::AgentStop => "agentStop",
            HookEvent::SessionEnd => "sessionEnd",
            HookEvent::Notification => "notification",
        }
    }
}

/// A parsed hook payload.
#[derive(Debug, Clone)]
pub struct HookPayload {
    pub session: SessionId,
    /// Why the session started or ended, as the agent says it.
    pub reason: serde_json::Value,
    /// How the session started (new, resumed), as the agent says it.
    pub source: serde_json::Value,
    /// The session's working directory.
    pub cwd: serde_json::Value,
    /// The whole payload (a JSON object), forwarded with notifications.
    pub raw: serde_json::Value,
}

/// When a transcript is over: its last non-blank line is one complete JSON object whose `type`
/// is `end_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalRule {
    pub end_type: &'static str,
}

/// The default agent (the first of [`ALL`]): what commands act on without `--agent`.
pub fn default() -> &'static dyn Agent {
    ALL[0]
}

/// The agent called `name`.
pub fn by_name(name: &str) -> Option<&'static dyn Agent> {
    ALL.iter().copied().find(|a| a.name() == name)
}

/// Every agent's name, for `--agent`'s possible values.
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|a| a.name()).collect()
}

/// The agent whose transcript shape `path` has, and the session it names; the first agent's
/// reason when none matches.
pub fn of_transcript(path: &Path) -> Result<(&'static dyn Agent, SessionId), String> {
    let mut first_error = None;
    for agent in ALL {
        match agent.session_of_path(path) {
            Ok(session) => return Ok((*agent, session)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| "no agent is registered".into()))
}

/// The terminal-line rule the machine applies. One rule today: every registered agent ends its
/// transcript the same way (a test keeps them equal until the tail observer carries its
/// session's agent).
pub fn terminal_rule() -> TerminalRule {
    default().terminal_rule()
}

/// The setting that names `agent`'s root.
pub fn home_setting(agent: &dyn Agent) -> &'static Setting {
    ALL.iter()
        .zip(HOME_SETTINGS)
        .find(|(a, _)| a.name() == agent.name())
        .map(|(_, s)| s)
        .expect("every agent has a home setting (tested)")
}

/// The agent named by one of the flags [`Agent::legacy_cli`] added (an arg whose id is the
/// agent's name), if `matches` has it set.
pub fn flagged(matches: &clap::ArgMatches) -> Option<&'static dyn Agent> {
    ALL.iter()
        .copied()
        .find(|a| matches!(matches.try_get_one::<bool>(a.name()), Ok(Some(true))))
}

/// Adds every agent's earlier command-line spellings to `cmd`.
pub fn legacy_cli(cmd: clap::Command) -> clap::Command {
    ALL.iter().fold(cmd, |cmd, agent| agent.legacy_cli(cmd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lower_case_and_each_has_a_home_setting() {
        let names = names();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for name in &names {
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{name}");
            assert!(by_name(name).is_some());
        }
        assert_eq!(HOME_SETTINGS.len(), ALL.len());
        for agent in ALL {
            assert_eq!(home_setting(*agent).kind, crate::config::settings::Kind::Path);
        }
        assert!(by_name("no-such-agent").is_none());
    }

    #[test]
    fn every_agent_ends_its_transcript_by_the_one_rule_the_machine_applies() {
        for agent in ALL {
            assert_eq!(agent.terminal_rule(), terminal_rule(), "{agent:?}");
        }
    }

    #[test]
    fn a_transcript_path_names_its_agent_and_session() {
        let home = Path::new("/home/u/agent-root");
        for agent in ALL {
            let sid = SessionId::new_random();
            let path = agent.transcript_path(home, sid);
            let (found, session) = of_transcript(&path).unwrap();
            assert_eq!(found, *agent);
            assert_eq!(session, sid);
            assert!(path.starts_with(agent.sessions_dir(home)));
        }
        assert!(of_transcript(Path::new("/etc/passwd")).is_err());
    }
}
