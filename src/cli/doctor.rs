//! `kcap doctor`: what is installed, configured and reachable, and for each thing that is not
//! right, the command that fixes it. Exits 1 when anything needs fixing.

use std::path::{Path, PathBuf};

use crate::agent::Agent;
use crate::cli::login::{probe, Probe};
use crate::cli::options::DeliveryOpts;
use crate::cli::status::{iso_time, park_reason};
use crate::config::settings::{display, validate};
use crate::config::{loaded, SETTINGS};
use crate::machine::Phase;
use crate::store::Store;

/// The report being written: one line per check, `ok` or `FIX`.
#[derive(Default)]
struct Report {
    text: String,
    fixes: usize,
}

impl Report {
    fn line(&mut self, good: bool, what: &str, detail: impl AsRef<str>) {
        self.fixes += usize::from(!good);
        self.text.push_str(&format!(
            "{} {what:<8} {}\n",
            if good { "ok  " } else { "FIX " },
            detail.as_ref()
        ));
    }
}

/// Runs every check; returns the report and the exit code (1 when something needs fixing).
pub async fn doctor(store: &Store, agent: &dyn Agent, home: &Path, delivery: &DeliveryOpts) -> (String, i32) {
    let mut r = Report::default();
    let on_path = which("kcap");
    check_binary(&mut r, on_path.as_deref());
    check_hooks(&mut r, agent, home, on_path.as_deref());
    check_config(&mut r);
    check_server(&mut r, delivery).await;
    check_store(&mut r, store);
    if r.fixes == 0 {
        r.text.push_str("\neverything looks right\n");
    } else {
        r.text.push_str(&format!(
            "\n{} thing{} to fix (see FIX above)\n",
            r.fixes,
            if r.fixes == 1 { "" } else { "s" }
        ));
    }
    (r.text, i32::from(r.fixes > 0))
}

/// The first `name` on PATH that is a file.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `kcap --version` of another binary, trimmed.
fn version_of(binary: &Path) -> Option<String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn check_binary(r: &mut Report, on_path: Option<&Path>) {
    let this = std::env::current_exe().ok();
    let ours = format!("kcap {}", env!("CARGO_PKG_VERSION"));
    match (on_path, this.as_deref()) {
        (None, _) => r.line(
            false,
            "kcap",
            "not on PATH: the agent's hooks run `kcap …` and will not find it; install it with \
             `cargo install --locked --path . --bin kcap` (puts it in ~/.cargo/bin)",
        ),
        (Some(p), Some(this)) if same_file(p, this) => {
            r.line(true, "kcap", format!("{} on PATH is this binary", p.display()))
        }
        (Some(p), this) => match version_of(p) {
            Some(v) if v == ours => r.line(
                true,
                "kcap",
                format!(
                    "{} on PATH is the same version as this one ({ours}){}",
                    p.display(),
                    this.map(|t| format!(", run from {}", t.display()))
                        .unwrap_or_default()
                ),
            ),
            other => r.line(
                false,
                "kcap",
                format!(
                    "{} on PATH is {} but this is {ours}: the hooks run the one on PATH; reinstall \
                     it with `cargo install --locked --path . --bin kcap`",
                    p.display(),
                    other
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| "not a working kcap".into())
                ),
            ),
        },
    }
}

fn check_hooks(r: &mut Report, agent: &dyn Agent, home: &Path, on_path: Option<&Path>) {
    let (path, wanted) = agent.hooks_file(home);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => {
            return r.line(
                false,
                "hooks",
                format!("not installed ({}): run `kcap plugin install`", path.display()),
            )
        }
    };
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
        return r.line(
            false,
            "hooks",
            format!("{} is not JSON: run `kcap plugin install`", path.display()),
        );
    };
    // A command naming another binary (an absolute path from an older install) runs that one.
    let programs: Vec<String> = doc
        .pointer("/hooks")
        .and_then(|h| h.as_object())
        .into_iter()
        .flat_map(|h| h.values())
        .filter_map(|v| v.as_array())
        .flatten()
        .filter_map(|e| {
            e.get("command")?
                .as_str()?
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .collect();
    if let Some(other) = programs
        .iter()
        .find(|p| *p != "kcap" && !on_path.is_some_and(|on_path| same_file(Path::new(p), on_path)))
    {
        return r.line(
            false,
            "hooks",
            format!(
                "{} runs {other}, which is not the kcap on PATH ({}): run `kcap plugin install`",
                path.display(),
                on_path.map_or("none".into(), |p| p.display().to_string())
            ),
        );
    }
    if doc == wanted {
        r.line(true, "hooks", format!("installed: {}", path.display()));
    } else {
        r.line(
            false,
            "hooks",
            format!(
                "{} differs from this version's: run `kcap plugin install`",
                path.display()
            ),
        );
    }
}

fn check_config(r: &mut Report) {
    let file = loaded();
    let mut good = true;
    for p in &file.problems {
        good = false;
        r.line(false, "config", p);
    }
    if file.exists && file.get("token").is_some() && file.mode.is_some_and(|m| m & 0o077 != 0) {
        good = false;
        r.line(
            false,
            "config",
            format!(
                "{} holds a token but others may read it (mode {:04o}): chmod 600 {}",
                file.path.display(),
                file.mode.unwrap_or(0),
                file.path.display()
            ),
        );
    }
    for s in SETTINGS {
        let Some(env) = std::env::var(s.env).ok().filter(|v| !v.is_empty()) else {
            continue;
        };
        if let Err(e) = validate(s, &env) {
            good = false;
            r.line(
                false,
                "config",
                format!(
                    "{}: {e}; ignored, the config file's value or the default is used",
                    s.env
                ),
            );
            continue;
        }
        if let Some(in_file) = file.get(s.key).filter(|v| *v != env) {
            good = false;
            r.line(
                false,
                "config",
                format!(
                    "{} ({}) overrides {} in the config file ({}) here, but hooks started by \
                     an agent usually lack {} and use the file's: unset it, or `kcap config set {} …`",
                    s.env,
                    display(s, &env),
                    s.key,
                    display(s, &in_file),
                    s.env,
                    s.key
                ),
            );
        }
    }
    if good {
        r.line(
            true,
            "config",
            if file.exists {
                format!("{} (`kcap config show` lists every value)", file.path.display())
            } else {
                format!(
                    "no config file at {}: defaults and environment only (`kcap login` writes one)",
                    file.path.display()
                )
            },
        );
    }
}

async fn check_server(r: &mut Report, delivery: &DeliveryOpts) {
    let url = delivery.url();
    let token = delivery.token();
    match probe(&url, token.as_deref()).await {
        Probe::Ok => r.line(
            true,
            "server",
            format!(
                "{url} accepts {}",
                if token.is_some() {
                    "the token"
                } else {
                    "requests without a token"
                }
            ),
        ),
        Probe::Unauthorized => r.line(
            false,
            "server",
            format!(
                "{url}: token {} (HTTP 401): run `kcap login --url {url} --token <TOKEN>`",
                if token.is_some() { "wrong" } else { "missing" }
            ),
        ),
        Probe::NoServer(why) => r.line(
            false,
            "server",
            format!("no server at {url} ({why}): start `kcap serve` or run `kcap login --url <URL>`"),
        ),
        Probe::NotKcap(why) => r.line(
            false,
            "server",
            format!("{url} is not a kcap server ({why}): run `kcap login --url <URL>` with the right one"),
        ),
        Probe::Unreachable(why) => r.line(false, "server", format!("cannot reach {url}: {why}")),
    }
}

fn check_store(r: &mut Report, store: &Store) {
    let machines = match crate::cli::watchers::usable_machines(store) {
        Ok(m) => m,
        Err(problem) => return r.line(false, "store", problem),
    };
    let mut parked = 0;
    for m in &machines {
        if let Phase::Parked { reason, retry_at, .. } = &m.state().0.phase {
            parked += 1;
            r.line(
                false,
                "store",
                format!(
                    "finalizer {} parked: {}; the next hook retries it after {} (or run `kcap finalize --resume` once the server is back)",
                    m.meta.session,
                    park_reason(reason),
                    iso_time(*retry_at)
                ),
            );
        }
    }
    let running = machines
        .iter()
        .filter(|m| !m.state().0.phase.is_terminal() && !matches!(m.state().0.phase, Phase::Parked { .. }))
        .count();
    let pending = store.pending_session_ends().map(|p| p.len()).unwrap_or(0);
    if parked == 0 {
        r.line(
            true,
            "store",
            format!(
                "{}: {} finalizers, {running} in progress, {pending} session-end notices waiting",
                store.home().display(),
                machines.len()
            ),
        );
    }
}
