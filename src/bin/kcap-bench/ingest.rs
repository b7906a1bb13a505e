//! Server ingest: one client sends real transcript lines to a `kcap serve` process in batches of
//! 1,000 lines, each acknowledged (flushed) before the next. Reports lines/s and MB/s of line
//! content, and the server's peak RSS (VmHWM) after a small and a large ingest, to show that
//! memory follows the batch size, not the store size.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kcap::ids::{event_id, SessionId};

struct Figures {
    mb: f64,
    lines: usize,
    seconds: f64,
    peak_rss_kb: i64,
}

pub async fn run(sample: &Path, mb: u64) -> Result<bool, String> {
    let text = std::fs::read_to_string(sample).map_err(|e| format!("{}: {e}", sample.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    println!("\nkcap-bench: ingest into `kcap serve` (sled on disk), one client, 1,000-line batches\n");
    let small = measure(&lines, (mb / 10).max(1)).await?;
    let big = measure(&lines, mb).await?;
    println!(
        "| figure | {} MB ingested | {} MB ingested | target |",
        big.mb.round(),
        small.mb.round()
    );
    println!("|---|---|---|---|");
    println!(
        "| throughput | {:.0} MB/s, {:.0} lines/s | {:.0} MB/s, {:.0} lines/s | ≥ 100 MB/s |",
        big.mb / big.seconds,
        big.lines as f64 / big.seconds,
        small.mb / small.seconds,
        small.lines as f64 / small.seconds
    );
    println!(
        "| server peak RSS | {:.1} MB | {:.1} MB | bounded by batch size, not store size |",
        big.peak_rss_kb as f64 / 1024.0,
        small.peak_rss_kb as f64 / 1024.0
    );
    println!(
        "| RSS ratio, big / small | {:.2} for {:.0}x the data | | ≈ 1 |",
        big.peak_rss_kb as f64 / small.peak_rss_kb.max(1) as f64,
        big.mb / small.mb
    );
    Ok(true)
}

async fn measure(sample: &[&str], mb: u64) -> Result<Figures, String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let kcap = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("kcap");
    let child = Command::new(&kcap)
        .args(["serve", "--addr", &addr.to_string(), "--data-dir"])
        .arg(scratch.path())
        .env_remove("KCAP_SERVER_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", kcap.display()))?;
    let url = format!("http://{addr}");
    let http = reqwest::Client::new();
    for _ in 0..250 {
        if http.get(format!("{url}/auth/config")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Bodies are encoded before the clock starts: this measures the server, not the encoder.
    let session = SessionId::new_random();
    let mut bodies = Vec::new();
    let (mut bytes, mut n) = (0usize, 0u64);
    while bytes < (mb * 1_000_000) as usize {
        let chunk: Vec<(u64, &str)> = (0..1000)
            .map(|i| (n + i, sample[(n + i) as usize % sample.len()]))
            .collect();
        n += 1000;
        bytes += chunk.iter().map(|(_, l)| l.len()).sum::<usize>();
        let body = serde_json::json!({
            "session_id": session.dashless(),
            "lines": chunk.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
            "line_numbers": chunk.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "event_ids": chunk.iter().map(|(n, l)| event_id(&session, *n, l.as_bytes())).collect::<Vec<_>>(),
            "vendor": "copilot",
        });
        bodies.push(serde_json::to_vec(&body).map_err(|e| e.to_string())?);
    }
    let started = Instant::now();
    for body in bodies {
        let resp = http
            .post(format!("{url}/hooks/transcript"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("server answered {}", resp.status()));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // The server's own high-water mark: wait4's ru_maxrss would also count the time between fork
    // and exec, when the child still shares this (large) bench process's memory.
    let peak_rss_kb = vm_hwm_kb(child.id()).ok_or("cannot read the server's VmHWM")?;
    stop(child)?;
    Ok(Figures {
        mb: bytes as f64 / 1e6,
        lines: n as usize,
        seconds,
        peak_rss_kb,
    })
}

/// Peak resident set of a live process since its exec, from /proc.
fn vm_hwm_kb(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// SIGTERM, and wait for the server to flush and exit.
fn stop(child: Child) -> Result<i64, String> {
    let pid = child.id() as libc::pid_t;
    // SAFETY: signalling and reaping our own child with valid pointers.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid, &mut status, 0, &mut usage) != pid {
            return Err(format!("wait4: {}", std::io::Error::last_os_error()));
        }
        std::mem::forget(child);
        Ok(usage.ru_maxrss)
    }
}
