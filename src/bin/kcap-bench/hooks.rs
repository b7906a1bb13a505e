//! Hook latency: how long the sessionEnd hook holds the agent up, with the server up, down and
//! hanging; and what an idle live watcher costs.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kcap::config::transcript_path;
use kcap::ids::SessionId;
use kcap::server::{Fault, Server};

const RUNS: usize = 5;

pub async fn run(sample: &[u8]) -> Result<bool, String> {
    println!("\nkcap-bench: sessionEnd hook wall time ({RUNS} runs each; drain cap 8 s, POST cap 3 s)\n");
    let up = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
        .await
        .map_err(|e| e.to_string())?;
    let hanging = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
        .await
        .map_err(|e| e.to_string())?;
    hanging.inject(std::iter::repeat_n(Fault::Hang, 1_000));
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    println!("| server | median | max | target |");
    println!("|---|---|---|---|");
    let rows = [
        ("up", up.url(), "< 1 s"),
        ("down", format!("http://{down}"), "< 1 s"),
        (
            "hanging",
            hanging.url(),
            "at most the 8 s cap (the finalizer is already running)",
        ),
    ];
    for (name, url, target) in rows {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            times.push(session_end(&url, sample)?);
        }
        times.sort();
        println!(
            "| {name} | {} ms | {} ms | {target} |",
            times[RUNS / 2].as_millis(),
            times[RUNS - 1].as_millis()
        );
    }
    let idle = idle_watcher(&up.url(), sample).await?;
    println!("\n| idle live watcher, CPU per minute (watcher polls every 500 ms) | {idle} ms |");
    Ok(true)
}

fn session_end(url: &str, sample: &[u8]) -> Result<Duration, String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let session = SessionId::new_random();
    let path = transcript_path(&scratch.path().join("agent"), session);
    std::fs::create_dir_all(path.parent().expect("parent")).map_err(|e| e.to_string())?;
    std::fs::write(&path, sample).map_err(|e| e.to_string())?;
    let kcap = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("kcap");
    let started = Instant::now();
    let mut child = Command::new(kcap)
        .args(["hook", "--event", "sessionEnd"])
        .env("KCAP_URL", url)
        .env("KCAP_HOME", scratch.path().join("kcap"))
        .env(crate::agent_home_env(), scratch.path().join("agent"))
        .env("KCAP_SHUTDOWN_BUDGET_MS", "1000")
        .env("KCAP_DELIVERY_BUDGET_MS", "1000")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let payload = format!(r#"{{"sessionId":"{session}","timestamp":1,"cwd":"/w","reason":"user_exit"}}"#);
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(payload.as_bytes());
    }
    child.wait().map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

/// CPU an idle watcher uses over 10 s, scaled to a minute.
async fn idle_watcher(url: &str, sample: &[u8]) -> Result<u128, String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let session = SessionId::new_random();
    let path = transcript_path(&scratch.path().join("agent"), session);
    std::fs::create_dir_all(path.parent().expect("parent")).map_err(|e| e.to_string())?;
    std::fs::write(&path, sample).map_err(|e| e.to_string())?;
    let kcap = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("kcap");
    let mut child = Command::new(kcap)
        .args(["watch", &session.to_string()])
        .arg(&path)
        .env("KCAP_URL", url)
        .env("KCAP_HOME", scratch.path().join("kcap"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_secs(2)).await; // catch-up delivery done
    let before = crate::proc_cpu(child.id()).unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let used = crate::proc_cpu(child.id())
        .unwrap_or_default()
        .saturating_sub(before);
    let _ = child.kill();
    let _ = child.wait();
    Ok(used.as_millis() * 6)
}
