//! Is the agent process of a session still there? A watcher asks this so that a session whose
//! agent crashed or was killed (no sessionEnd hook, ever) still gets its tail and its end.
//!
//! Two witnesses, the first that is available wins: the processes the agent marks as using the
//! session ([`Agent::session_users`]), and the process that ran the hook which started the
//! watcher (the nearest ancestor of the hook that is not a shell). Processes are named by pid
//! and start time, so a recycled pid is not mistaken for them.

use std::path::Path;

use crate::agent::Agent;
use crate::store::Holder;

/// Shells and wrappers between an agent and a hook command; the agent is above them.
const WRAPPERS: [&str; 10] = [
    "sh", "bash", "dash", "zsh", "fish", "ksh", "mksh", "busybox", "env", "timeout",
];

/// The process that ran this hook: the nearest ancestor that is not a shell or wrapper.
pub fn hook_agent() -> Option<Holder> {
    // SAFETY: getppid has no preconditions.
    let mut pid = unsafe { libc::getppid() } as u32;
    for _ in 0..8 {
        if pid <= 1 {
            return None;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        if !WRAPPERS.contains(&comm.trim()) {
            return Holder::of(pid);
        }
        pid = parent_of(pid)?;
    }
    None
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// How much later than its marker file a process may seem to have started and still be the one
/// that wrote it: the start time is read in clock ticks since boot, the file's time in the wall
/// clock, and a forward step of the wall clock (an NTP correction after a suspend) makes a live
/// writer's marker look older than it is. A recycled pid is hours or days younger than a crashed
/// writer's marker as a rule; a minute of doubt keeps a live agent from being taken for gone.
const MARKER_SLACK_MS: u64 = 60_000;

/// The process `pid` as the writer of the marker file `marker` (an agent's `inuse.<pid>.lock`):
/// `None` if it does not run, or started well after the file was last written. A writer starts
/// before it writes; a process that started after is another one under the recycled pid of a
/// writer that crashed, and must not keep the crashed session looking alive.
pub fn marker_owner(pid: u32, marker: &Path) -> Option<Holder> {
    let holder = Holder::of(pid).filter(Holder::is_alive)?;
    let written_ago_ms = std::fs::symlink_metadata(marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|d| d.as_millis() as u64);
    match started_after(written_ago_ms, holder.age_ms()) {
        Some((written_ago_ms, age_ms)) => {
            tracing::info!(
                pid,
                written_ago_ms,
                age_ms,
                slack_ms = MARKER_SLACK_MS,
                "a marker's pid runs, but started after the marker was written: a recycled pid"
            );
            None
        }
        None => Some(holder),
    }
}

/// `Some((marker written ago, process age))`, both in ms, when the process surely started after
/// the marker was written (by more than [`MARKER_SLACK_MS`]). Either reading missing (an
/// impossible age is none: [`Holder::age_ms`]) cannot tell: `None`, and the process is taken for
/// the writer, as is a marker written "in the future" (the clock stepped back).
fn started_after(written_ago_ms: Option<u64>, age_ms: Option<u64>) -> Option<(u64, u64)> {
    let (written_ago_ms, age_ms) = (written_ago_ms?, age_ms?);
    (age_ms.saturating_add(MARKER_SLACK_MS) < written_ago_ms).then_some((written_ago_ms, age_ms))
}

/// What a watcher keeps an eye on to know its session's agent is still running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentWatch {
    /// The processes the agent marked as using the session when the watcher started.
    Users {
        agent: &'static dyn Agent,
        seen: Vec<Holder>,
    },
    /// The process that ran the starting hook.
    Process(Holder),
    /// Neither is known: only the idle limit ends the watcher.
    Unknown,
}

impl AgentWatch {
    /// Picks the witness: the session's users as `agent` marks them, if any are alive, else
    /// `hook_agent`.
    pub fn start(agent: &'static dyn Agent, session_dir: &Path, hook_agent: Option<Holder>) -> AgentWatch {
        let seen = agent.session_users(session_dir);
        if !seen.is_empty() {
            return AgentWatch::Users { agent, seen };
        }
        match hook_agent.filter(Holder::is_alive) {
            Some(h) => AgentWatch::Process(h),
            None => AgentWatch::Unknown,
        }
    }

    /// The pid of the agent that went away, once every witness is gone.
    pub fn gone(&self, session_dir: &Path) -> Option<u32> {
        match self {
            AgentWatch::Users { agent, seen } => {
                let alive = seen.iter().any(Holder::is_alive) || !agent.session_users(session_dir).is_empty();
                (!alive).then(|| seen[0].pid)
            }
            AgentWatch::Process(h) => (!h.is_alive()).then_some(h.pid),
            AgentWatch::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_user_that_exits_is_noticed() {
        // How an agent marks its users is its own business (tested in its folder); here, the
        // users seen at the start are what keeps the session alive.
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let holder = Holder::of(child.id()).unwrap();
        let watch = AgentWatch::Users {
            agent: crate::agent::default(),
            seen: vec![holder],
        };
        assert_eq!(watch.gone(dir.path()), None);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(watch.gone(dir.path()), Some(child.id()));
    }

    /// An agent wrote its marker and crashed; its pid now names a process that started later.
    /// A forward step of the wall clock makes a live writer's marker look older than the
    /// writer; a reading missing (an impossible age is none: `lease`'s tests) cannot tell. Only
    /// a marker written well before the process started names a recycled pid.
    #[test]
    fn a_marker_is_judged_recycled_only_on_sound_readings() {
        let minute = 60_000;
        // A process 90 s old.
        assert_eq!(
            started_after(Some(90_000 + 30_000), Some(90_000)),
            None,
            "a clock stepped 30 s forward made a live agent's marker too old"
        );
        assert_eq!(
            started_after(Some(90_000 + 2 * minute), Some(90_000)),
            Some((90_000 + 2 * minute, 90_000))
        );
        assert_eq!(started_after(None, Some(90_000)), None);
        assert_eq!(started_after(Some(3_600_000), None), None);
    }

    #[test]
    fn a_process_started_after_a_marker_was_written_is_not_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let marker = dir.path().join(format!("inuse.{}.lock", child.id()));
        std::fs::write(&marker, b"").unwrap();
        assert_eq!(marker_owner(child.id(), &marker).map(|h| h.pid), Some(child.id()));
        let file = std::fs::File::options().write(true).open(&marker).unwrap();
        file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
        assert_eq!(
            marker_owner(child.id(), &marker),
            None,
            "a recycled pid looks alive"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn the_hook_agent_is_this_test_when_no_shell_is_between() {
        let me = Holder::current();
        let agent = crate::agent::default();
        let watch = AgentWatch::start(agent, Path::new("/nonexistent"), Some(me));
        assert_eq!(watch, AgentWatch::Process(me));
        assert_eq!(watch.gone(Path::new("/nonexistent")), None);
        assert_eq!(
            AgentWatch::start(agent, Path::new("/nonexistent"), None),
            AgentWatch::Unknown
        );
    }
}
