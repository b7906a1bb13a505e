//! What `kcap status` and `kcap doctor` add about capture: the running watchers (session, pid,
//! age) and, when the store cannot be used, why. Kept here so the commands' own formatting
//! stays in their modules.

use crate::config::now_ms;
use crate::effects::watcher::{self, Role};
use crate::store::Store;

/// The running watchers (and sessionEnd hooks draining inline), one line each.
pub fn watchers_section(store: &Store) -> String {
    let running = watcher::all_running(store.home());
    if running.is_empty() {
        return "no watchers running\n".into();
    }
    let mut out = format!(
        "{:<36}  {:>8}  {:<6}  {:>10}\n",
        "WATCHER SESSION", "PID", "ROLE", "AGE"
    );
    for h in running {
        let age_ms = h
            .process
            .age_ms()
            .or_else(|| (h.since > 0).then(|| now_ms().saturating_sub(h.since)));
        out.push_str(&format!(
            "{:<36}  {:>8}  {:<6}  {:>10}\n",
            h.session.to_string(),
            h.process.pid,
            match h.role {
                Role::Watch => "watch",
                Role::Drain => "drain",
            },
            age_ms.map_or("-".into(), human_age),
        ));
    }
    out
}

/// `kcap status`: the store's problem first (if any), the finalizers, then the watchers. An
/// unusable store is not an error of `status` itself: it is what status is for. (`--json`
/// keeps its array of finalizers as it was.)
pub fn status(store: &Store, json: bool) -> Result<String, String> {
    if json {
        return crate::cli::status::status(store, true);
    }
    let health = store.health();
    let mut out = String::new();
    if let Err(why) = &health {
        out.push_str(&format!(
            "STORE UNUSABLE: {why}\n  sessions are still delivered, but nothing is kept for later: \
             a delivery that fails now is not retried (fix it, then `kcap import`)\n\n"
        ));
    }
    match crate::cli::status::status(store, false) {
        Ok(text) => out.push_str(&text),
        Err(e) if health.is_err() => out.push_str(&format!("finalizers: unknown ({e})\n")),
        Err(e) => return Err(e),
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&watchers_section(store));
    Ok(out)
}

/// The recorded finalizers, for `kcap doctor`, or its store line when the store cannot be
/// used: why, and what to do.
pub fn usable_machines(store: &Store) -> Result<Vec<crate::store::MachineRecord>, String> {
    store.health().map_err(|why| {
        format!(
            "{} unusable: {why}; sessions are delivered without it, but nothing is kept for later",
            store.home().display()
        )
    })?;
    store
        .all_latest_machines()
        .map_err(|e| format!("{} unreadable: {e}", store.home().display()))
}

fn human_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `kcap watchers stop [--session ID]`: tells the running watchers (all, or the session's) to
/// stop with SIGINT (the sessionEnd hook uses SIGTERM), and waits up to `wait` for each to drain
/// and leave. A sessionEnd hook draining inline is never signalled. A stopped watcher's position
/// is in the store; one whose agent is gone, or that knows no agent process to tell, hands the
/// session to a finalizer (the rest, then the end), else the next `agentStop` starts a new one
/// and the `sessionEnd` finalizer delivers the rest. Returns the report and the exit code
/// (1 if a watcher was still running when the wait ran out), or why the session id is bad.
pub async fn stop(
    store: &Store,
    session: Option<&str>,
    wait: std::time::Duration,
) -> Result<(String, i32), String> {
    let only = match session.map(str::parse::<crate::ids::SessionId>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return Err(e.to_string()),
    };
    let home = store.home();
    let running: Vec<_> = watcher::all_running(home)
        .into_iter()
        .filter(|h| h.role == Role::Watch && only.is_none_or(|s| s == h.session))
        .collect();
    if running.is_empty() {
        let text = match only {
            Some(s) => format!("no watcher runs for {s}\n"),
            None => "no watchers running\n".into(),
        };
        return Ok((text, 0));
    }
    let mut signalled = Vec::new();
    for h in &running {
        if let Some(pid) = watcher::stop_by_user(home, h.session) {
            signalled.push((h.session, pid));
        }
    }
    let deadline = std::time::Instant::now() + wait;
    let still = |session, pid| watcher::running(home, session) == Some(pid);
    while signalled.iter().any(|&(s, p)| still(s, p)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if signalled.is_empty() {
        return Ok(("no watchers running\n".into(), 0));
    }
    let (mut out, mut code) = (String::new(), 0);
    for (session, pid) in signalled {
        if still(session, pid) {
            code = 1;
            out.push_str(&format!(
                "{session}  watcher pid {pid} told to stop, still draining after {}s\n",
                wait.as_secs()
            ));
        } else {
            out.push_str(&format!("{session}  watcher pid {pid} stopped\n"));
        }
    }
    Ok((out, code))
}
