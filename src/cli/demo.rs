//! `kcap demo`: the finalizer's whole job on one machine with nothing to set up. An embedded
//! server, a real Copilot transcript written without its last line, a detached
//! `kcap copilot-finalize` spawned exactly as the sessionEnd hook spawns it, and the
//! `session.shutdown` line appended only afterwards, as Copilot does. Then it shows, in numbers,
//! what the server holds.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::config::transcript_path;
use crate::ids::SessionId;
use crate::machine::terminal::{classify, is_blank, LineKind};
use crate::machine::Phase;
use crate::server::Server;
use crate::store::Store;

pub const DEFAULT_SAMPLE: &str =
    "../shared/research-samples/copilot/Mai0313__VibeCodingTracker__copilot.jsonl";

/// Used when the research samples are not beside the checkout (an installed binary).
const BUILTIN: &str = include_str!("demo_session.jsonl");

pub struct DemoArgs {
    pub transcript: Option<PathBuf>,
    pub shutdown_delay: Duration,
}

pub async fn run(args: DemoArgs) -> Result<(), String> {
    let (source_name, text) = load_source(args.transcript.as_deref())?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let shutdown_at = lines
        .iter()
        .rposition(|l| classify(l.trim_end().as_bytes()) == LineKind::Shutdown)
        .ok_or("the transcript has no session.shutdown line to play as the post-hook tail")?;
    let session = session_id_of(&text).unwrap_or_else(SessionId::new_random);

    let scratch = tempfile::Builder::new()
        .prefix("kcap-demo-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let copilot_home = scratch.path().join("copilot");
    let kcap_home = scratch.path().join("kcap");
    let path = transcript_path(&copilot_home, session);
    std::fs::create_dir_all(path.parent().expect("transcript has a parent")).map_err(|e| e.to_string())?;

    let server = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
        .await
        .map_err(|e| format!("cannot start the embedded server: {e}"))?;

    println!("kcap demo: the sessionEnd finalizer on a real Copilot transcript\n");
    println!(
        "  transcript  {source_name} ({} lines, {} bytes)",
        lines.len(),
        text.len()
    );
    println!("  session     {session}");
    println!("  server      embedded, {} (in memory)", server.url());
    println!("  scratch     {}\n", scratch.path().display());

    let before: String = lines[..shutdown_at].concat();
    std::fs::write(&path, &before).map_err(|e| e.to_string())?;
    println!("1. Copilot wrote {shutdown_at} lines; its sessionEnd hook fires now");

    let hook_started = Instant::now();
    let status = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["copilot-finalize", &session.to_string()])
        .arg(&path)
        .env("KCAP_URL", server.url())
        .env("KCAP_HOME", &kcap_home)
        .env("COPILOT_HOME", &copilot_home)
        .env("KCAP_POLL_MS", "100")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run kcap copilot-finalize: {e}"))?;
    let hook_ms = hook_started.elapsed().as_millis();
    println!(
        "2. the hook spawned a detached `kcap copilot-finalize` and returned in {hook_ms} ms ({status})"
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
        "3. {} ms later, after the hook had returned, Copilot appended session.shutdown (line {shutdown_at})",
        args.shutdown_delay.as_millis()
    );

    let store = Store::new(&kcap_home);
    let drained = wait_for_drain(&store, session, Duration::from_secs(60)).await?;
    println!(
        "4. the finalizer saw the shutdown and drained: {} ms after the append, {} transitions logged\n",
        appended.elapsed().as_millis(),
        drained
    );

    let (report, missing) = compare(&server, session, &text);
    server.stop().await;
    println!("{report}");
    if missing > 0 {
        return Err(format!("the server is missing {missing} lines"));
    }
    Ok(())
}

fn load_source(path: Option<&Path>) -> Result<(String, String), String> {
    let chosen = path.map(Path::to_path_buf).or_else(|| {
        let default = PathBuf::from(DEFAULT_SAMPLE);
        default.is_file().then_some(default)
    });
    match chosen {
        Some(p) => std::fs::read_to_string(&p)
            .map(|text| (p.display().to_string(), text))
            .map_err(|e| format!("cannot read {}: {e}", p.display())),
        None => Ok(("built-in sample session".into(), BUILTIN.to_string())),
    }
}

fn session_id_of(text: &str) -> Option<SessionId> {
    let first: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
    first.pointer("/data/sessionId")?.as_str()?.parse().ok()
}

async fn wait_for_drain(store: &Store, session: SessionId, limit: Duration) -> Result<usize, String> {
    let started = Instant::now();
    loop {
        if let Ok(Some(record)) = store.latest_machine(session) {
            let (state, _) = record.state();
            match state.phase {
                Phase::Drained { .. } => return Ok(record.log.len()),
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
