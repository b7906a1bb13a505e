//! Live capture: how long a line written to a transcript takes to reach the server through a real
//! `kcap watch` process (p50/p90 over lines written at random intervals), and what an idle
//! watcher costs in CPU. Each figure is measured with file notifications and, in the same run,
//! with the polling fallback (`KCAP_FOLLOW=poll`), so the ratio between them is not at the mercy
//! of the machine's load.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kcap::config::transcript_path;
use kcap::ids::SessionId;
use kcap::server::Server;

/// Targets (issue 11 §6).
const P50_TARGET_MS: f64 = 50.0;
const IDLE_TARGET_MS_PER_30S: f64 = 20.0;

pub async fn run(lines: usize, idle: Duration) -> Result<bool, String> {
    println!(
        "\nkcap-bench: live capture through a real `kcap watch` (default poll interval 500 ms; {lines} lines \
         written at random 5-95 ms intervals; idle CPU over {} s)\n",
        idle.as_secs()
    );
    let server = Arc::new(
        Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
            .await
            .map_err(|e| e.to_string())?,
    );
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    println!("| figure | file notifications | polling fallback | target |");
    println!("|---|---|---|---|");
    let notify = latency(&server, scratch.path(), lines, false).await?;
    let poll = latency(&server, scratch.path(), lines, true).await?;
    println!(
        "| write → server, p50 | {:.1} ms | {:.1} ms | ≤ {P50_TARGET_MS} ms |",
        notify.0, poll.0
    );
    println!(
        "| write → server, p90 | {:.1} ms | {:.1} ms | - |",
        notify.1, poll.1
    );
    let (idle_notify, idle_poll) = idle_cpu(&server, scratch.path(), idle).await?;
    let scale = 30.0 / idle.as_secs_f64();
    println!(
        "| idle watcher CPU per 30 s | {:.1} ms | {:.1} ms | ≤ {IDLE_TARGET_MS_PER_30S} ms |",
        idle_notify * scale,
        idle_poll * scale
    );
    let ok = notify.0 <= P50_TARGET_MS && idle_notify * scale <= IDLE_TARGET_MS_PER_30S;
    println!(
        "\nlive: {} (CPU from /proc/<pid>/task/*/schedstat, nanoseconds; the server runs in this process)",
        if ok { "targets met" } else { "TARGET MISSED" }
    );
    Ok(ok)
}

/// A new session's transcript (one line written) and a watcher on it.
fn start_watcher(server: &Server, scratch: &Path, poll: bool) -> Result<(SessionId, PathBuf, Child), String> {
    let session = SessionId::new_random();
    let agent_home = scratch.join(format!("agent-{}", session.dashed()));
    let path = transcript_path(&agent_home, session);
    std::fs::create_dir_all(path.parent().expect("parent")).map_err(|e| e.to_string())?;
    std::fs::write(&path, b"{\"type\":\"session.start\",\"data\":{}}\n").map_err(|e| e.to_string())?;
    let mut cmd = Command::new(crate::kcap_exe()?);
    cmd.args(["watch", &session.to_string()])
        .arg(&path)
        .env("KCAP_URL", server.url())
        .env("KCAP_HOME", scratch.join(format!("kcap-{}", session.dashed())))
        .env("KCAP_CONFIG", scratch.join("no-config.toml"))
        .env("KCAP_WATCH_IDLE_MS", "0")
        .env_remove("KCAP_WATCH_POLL_MS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if poll {
        cmd.env("KCAP_FOLLOW", "poll");
    } else {
        cmd.env_remove("KCAP_FOLLOW");
    }
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    Ok((session, path, child))
}

/// Waits until the server holds `n` lines of `session`.
async fn until_held(server: &Server, session: SessionId, n: usize, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    while server.session(session).lines.len() < n {
        if started.elapsed() > limit {
            return Err(format!("the watcher delivered no line {n} within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// p50 and p90 in ms from each line's write to its arrival.
async fn latency(
    server: &Arc<Server>,
    scratch: &Path,
    lines: usize,
    poll: bool,
) -> Result<(f64, f64), String> {
    let (session, path, mut child) = start_watcher(server, scratch, poll)?;
    until_held(server, session, 1, Duration::from_secs(30)).await?;
    let written: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(lines)));
    let arrived: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(lines)));
    let done = Arc::new(AtomicBool::new(false));
    // Arrivals are watched from a plain thread looking every millisecond (each look reads the
    // session from the server's store), so the figure's resolution is about 1 ms.
    let watcher = {
        let (server, arrived, done) = (server.clone(), arrived.clone(), done.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !done.load(Ordering::Acquire) && Instant::now() < deadline {
                let held = server.session(session).lines.len().saturating_sub(1);
                let now = Instant::now();
                let mut a = arrived.lock().unwrap_or_else(|p| p.into_inner());
                while a.len() < held {
                    a.push(now);
                }
                drop(a);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| e.to_string())?;
    let mut rng = Xorshift::seeded();
    for n in 1..=lines {
        tokio::time::sleep(Duration::from_millis(5 + rng.next() % 91)).await;
        let line =
            format!("{{\"type\":\"assistant.message\",\"data\":{{\"n\":{n},\"content\":\"live line\"}}}}\n");
        written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
        file.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    }
    let result = until_held(server, session, lines + 1, Duration::from_secs(30)).await;
    // Let the arrival thread see the last line.
    tokio::time::sleep(Duration::from_millis(5)).await;
    done.store(true, Ordering::Release);
    let _ = watcher.join();
    let _ = child.kill();
    let _ = child.wait();
    result?;
    let written = written.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let arrived = arrived.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut ms: Vec<f64> = written
        .iter()
        .zip(&arrived)
        .map(|(w, a)| a.saturating_duration_since(*w).as_secs_f64() * 1000.0)
        .collect();
    if ms.len() < lines {
        return Err(format!("{} of {lines} arrivals seen", ms.len()));
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[ms.len() / 2], ms[ms.len() * 9 / 10]))
}

/// CPU (ms) two idle watchers use over `window`: one following by notifications, one polling,
/// measured over the same window.
async fn idle_cpu(server: &Server, scratch: &Path, window: Duration) -> Result<(f64, f64), String> {
    let (s1, _, mut notify) = start_watcher(server, scratch, false)?;
    let (s2, _, mut poll) = start_watcher(server, scratch, true)?;
    until_held(server, s1, 1, Duration::from_secs(30)).await?;
    until_held(server, s2, 1, Duration::from_secs(30)).await?;
    // Start-up and the first delivery are done. tokio's blocking threads (store and file work
    // of that delivery) exit after 10 s idle, taking their CPU time out of the per-thread sum:
    // the window starts once they have, and must see no thread come or go.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let counts = (threads(notify.id()), threads(poll.id()));
    let before = (cpu_ns(notify.id()), cpu_ns(poll.id()));
    tokio::time::sleep(window).await;
    let after = (cpu_ns(notify.id()), cpu_ns(poll.id()));
    if counts != (threads(notify.id()), threads(poll.id())) {
        println!("(note: a watcher's thread count changed during the idle window; its figure may be low)");
    }
    for child in [&mut notify, &mut poll] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let used = |b: Option<u64>, a: Option<u64>| -> Result<f64, String> {
        match (b, a) {
            (Some(b), Some(a)) => Ok(a.saturating_sub(b) as f64 / 1e6),
            _ => Err("cannot read the watcher's CPU time from /proc".into()),
        }
    };
    Ok((used(before.0, after.0)?, used(before.1, after.1)?))
}

/// How many threads `pid` has.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// CPU time of every thread of `pid`, in ns (`/proc/<pid>/task/*/schedstat`, first field).
fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// Random intervals without a dependency: xorshift64 seeded from the clock.
struct Xorshift(u64);

impl Xorshift {
    fn seeded() -> Xorshift {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        Xorshift(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
