//! `kcap demo`: kcap's whole job on one machine with nothing to set up. An embedded server, and a
//! real transcript of the default agent played as a live session through the real hook commands:
//! sessionStart (the watcher starts), lines appended over time, sessionEnd (the finalizer is
//! spawned, the watcher drains), and the terminal line appended only after that hook has
//! returned, as the agent does. Then it shows, in numbers, what the server holds.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::config::transcript_path;
use crate::ids::SessionId;
use crate::machine::terminal::{classify, is_blank, LineKind};
use crate::machine::{Outcome, Phase};
use crate::server::Server;
use crate::store::Store;

/// The real public transcript the demo prefers (in the default agent's folder of research
/// samples, found relative to the repository kcap was built from, not the current directory, so
/// `cargo run -- demo` finds it from anywhere).
pub fn default_sample() -> PathBuf {
    let agent = crate::agent::default().name();
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/research-samples")
        .join(agent)
        .join(format!("Mai0313__VibeCodingTracker__{agent}.jsonl"))
}

/// Used when the research samples are not beside the checkout (a fresh clone, an installed
/// binary): a short synthetic session written for the demo.
const BUILTIN: &str = include_str!("demo_session.jsonl");

pub struct DemoArgs {
    pub transcript: Option<PathBuf>,
    pub shutdown_delay: Duration,
    /// Keep the embedded server (and its web UI) up after the demo, until Ctrl-C.
    pub keep_serving: bool,
}

pub async fn run(args: DemoArgs) -> Result<(), String> {
    let (source_name, text) = load_source(args.transcript.as_deref())?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let shutdown_at = lines
        .iter()
        .rposition(|l| classify(l.trim_end().as_bytes()) == LineKind::Shutdown)
        .ok_or("the transcript has no session.shutdown line to play as the post-hook tail")?;
    let session = session_id_of(&text).unwrap_or_else(SessionId::new_random);
    let ends_with_shutdown = lines[shutdown_at..]
        .iter()
        .rev()
        .find(|l| !is_blank(l.trim_end_matches('\n').as_bytes()))
        .is_some_and(|l| classify(l.trim_end().as_bytes()) == LineKind::Shutdown);

    let scratch = tempfile::Builder::new()
        .prefix("kcap-demo-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let agent = crate::agent::default();
    let agent_home = scratch.path().join(agent.name());
    let kcap_home = scratch.path().join("kcap");
    let path = transcript_path(&agent_home, session);
    std::fs::create_dir_all(path.parent().expect("transcript has a parent")).map_err(|e| e.to_string())?;

    let server = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
        .await
        .map_err(|e| format!("cannot start the embedded server: {e}"))?;

    println!(
        "kcap demo: a {} session played through kcap's hooks\n",
        agent.name()
    );
    println!(
        "  transcript  {source_name} ({} lines, {} bytes)",
        lines.len(),
        text.len()
    );
    println!("  session     {session}");
    println!("  server      embedded, {} (temporary store)", server.url());
    println!("  scratch     {}\n", scratch.path().display());
    if !ends_with_shutdown {
        println!(
            "  note        lines follow the last session.shutdown (a resumed session): the finalizer \
             will wait its whole budget ({} s, KCAP_SHUTDOWN_BUDGET_MS) and then drain\n",
            std::env::var("KCAP_SHUTDOWN_BUDGET_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(crate::machine::Timings::default().shutdown_budget_ms)
                / 1000
        );
    }

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let hook =
        |event: &str, payload: serde_json::Value| -> Result<(u128, std::process::ExitStatus), String> {
            let started = Instant::now();
            let mut child = std::process::Command::new(&exe)
                .args(["hook", "--agent", agent.name(), "--event", event])
                .env("KCAP_URL", server.url())
                // The demo's hooks talk to the embedded server only, whatever the user's config says.
                .env("KCAP_CONFIG", scratch.path().join("config.toml"))
                .env("KCAP_HOME", &kcap_home)
                .env(crate::agent::home_setting(agent).env, &agent_home)
                .env("KCAP_POLL_MS", "100")
                .env("KCAP_WATCH_POLL_MS", "100")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run kcap hook: {e}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(payload.to_string().as_bytes());
            }
            let status = child.wait().map_err(|e| e.to_string())?;
            Ok((started.elapsed().as_millis(), status))
        };
    let payload = |extra: serde_json::Value| {
        let mut p = serde_json::json!({"sessionId": session.to_string(), "timestamp": crate::config::now_ms(), "cwd": "/demo"});
        for (k, v) in extra.as_object().into_iter().flatten() {
            p[k] = v.clone();
        }
        p
    };

    std::fs::write(&path, lines[0]).map_err(|e| e.to_string())?;
    let (ms, status) = hook("sessionStart", payload(serde_json::json!({"source": "new"})))?;
    println!("1. sessionStart hook: session-start posted, live watcher started ({ms} ms, {status})");
    for line in &lines[1..shutdown_at] {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| e.to_string())?;
        file.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "2. The agent wrote {shutdown_at} lines over {:.1} s; the watcher had delivered {} of them meanwhile",
        shutdown_at as f64 * 0.02,
        server.session(session).lines.len()
    );

    let (ms, status) = hook("sessionEnd", payload(serde_json::json!({"reason": "user_exit"})))?;
    let at_hook_return = server.session(session).lines.len();
    println!(
        "3. sessionEnd hook: finalizer spawned first, watcher stopped and drained, session-end queued \
         for the finalizer to post after the tail; returned in {ms} ms ({status}) with {at_hook_return} \
         lines on the server"
    );

    tokio::time::sleep(args.shutdown_delay).await;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| e.to_string())?;
    file.write_all(lines[shutdown_at..].concat().as_bytes())
        .map_err(|e| e.to_string())?;
    drop(file);
    let appended = Instant::now();
    println!(
        "4. {} ms after the hook returned, the agent appended session.shutdown (line {shutdown_at}): \
         the tail a hook alone would lose",
        args.shutdown_delay.as_millis()
    );

    let store = Store::new(&kcap_home);
    let (transitions, outcome) = wait_for_drain(&store, session, Duration::from_secs(120)).await?;
    let what = match outcome {
        Outcome::Shutdown { .. } => {
            "the detached finalizer saw session.shutdown as the last line and drained"
        }
        Outcome::TimedOut => {
            "the detached finalizer's budget ran out before session.shutdown was the last line \
             (the transcript goes on after it); it drained what was there"
        }
    };
    println!(
        "5. {what}: {} ms after the append, {} -> {} lines, {} transitions logged\n",
        appended.elapsed().as_millis(),
        at_hook_return,
        server.session(session).lines.len(),
        transitions
    );

    let (report, missing) = compare(&server, session, &text);
    println!("{report}");
    println!("the session in the web UI: {}", server.session_url(session));
    if args.keep_serving {
        println!("serving until Ctrl-C (--keep-serving)");
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("kcap demo: cannot wait for Ctrl-C ({e}); stopping");
        }
    }
    server.stop().await;
    if missing > 0 {
        return Err(format!("the server is missing {missing} lines"));
    }
    Ok(())
}

fn load_source(path: Option<&Path>) -> Result<(String, String), String> {
    let chosen = path.map(|p| (p.to_path_buf(), "")).or_else(|| {
        let default = default_sample();
        default.is_file().then(|| {
            (
                default.canonicalize().unwrap_or(default),
                "real public transcript ",
            )
        })
    });
    match chosen {
        Some((p, kind)) => std::fs::read_to_string(&p)
            .map(|text| (format!("{kind}{}", p.display()), text))
            .map_err(|e| format!("cannot read {}: {e}", p.display())),
        None => Ok((
            format!(
                "built-in synthetic session (the real sample {} is not there; \
                 it comes from ../shared/research-samples beside the checkout)",
                default_sample().display()
            ),
            BUILTIN.to_string(),
        )),
    }
}

fn session_id_of(text: &str) -> Option<SessionId> {
    let first: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
    first.pointer("/data/sessionId")?.as_str()?.parse().ok()
}

/// Waits for the session's finalizer to drain; returns its logged transitions and whether it
/// saw the shutdown or ran out of budget.
async fn wait_for_drain(
    store: &Store,
    session: SessionId,
    limit: Duration,
) -> Result<(usize, Outcome), String> {
    let started = Instant::now();
    loop {
        if let Ok(Some(record)) = store.latest_machine(session) {
            let (state, _) = record.state();
            match state.phase {
                Phase::Drained { outcome, .. } => return Ok((record.log.len(), outcome)),
                Phase::Parked { reason, .. } => {
                    return Err(format!(
                        "the finalizer parked: {}",
                        crate::cli::status::park_reason(&reason)
                    ))
                }
                _ => {}
            }
        }
        if started.elapsed() > limit {
            return Err(format!("the finalizer did not drain within {}s", limit.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The report, and how many lines (the shutdown included) the server lacks.
fn compare(server: &Server, session: SessionId, text: &str) -> (String, usize) {
    let held = server.session(session);
    let expected: Vec<(u64, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !is_blank(l.as_bytes()))
        .map(|(n, l)| (n as u64, l))
        .collect();
    let mut missing = expected
        .iter()
        .filter(|(n, _)| !held.lines.contains_key(n))
        .count();
    let mut out = format!(
        "server holds {} of {} non-blank lines, each once ({} missing, {} replays dropped as duplicates)\n",
        held.lines.len(),
        expected.len(),
        missing,
        held.duplicates
    );
    let shutdowns: Vec<(&u64, &str)> = held
        .lines
        .iter()
        .filter(|(_, l)| classify(l.text.as_bytes()) == LineKind::Shutdown)
        .map(|(n, l)| (n, l.text.as_str()))
        .collect();
    match shutdowns.last() {
        Some((n, _)) => {
            out.push_str(&format!(
                "post-hook tail: session.shutdown (line {n}) is on the server\n\n"
            ));
            out.push_str("token usage the server folded from it:\n");
            if let Ok(Some(summary)) = server.storage().summary(session) {
                out.push_str(&crate::cli::serve::usage_table(&summary.usage));
            }
        }
        None => {
            missing += 1;
            out.push_str("post-hook tail: session.shutdown is missing on the server\n")
        }
    }
    (out, missing)
}
