//! Server ingest: real transcript lines in 1,000-line batches from 1, 8 and 64 concurrent
//! clients (each its own session) into `kcap serve` processes: SQLite, and PostgreSQL with one
//! and two replicas on a throwaway cluster. Reports MB/s of line content, lines/s, p50/p99
//! acknowledgement latency and the servers' peak RSS (VmHWM), each next to its target; then
//! the published client's one-request tail: a ~195 MB session in a single POST.
//!
//! For profiling and before/after comparisons (the machine is shared: compare in one run):
//! `KCAP_BENCH_INGEST=sqlite,postgres,tail` picks the parts, `KCAP_BENCH_ROWS=1,8,64,live` the
//! rows, `KCAP_BENCH_REPLICAS=1,2` the PostgreSQL replica counts, and `KCAP_BENCH_SERVERS=/old/kcap,/new/kcap` runs every row on each of those server
//! binaries in turn (default: the `kcap` beside this benchmark).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kcap::ids::{event_id, SessionId};

#[path = "../../../tests/common/postgres.rs"]
#[allow(dead_code)]
pub(crate) mod pg_cluster;

/// A loopback port with nothing listening (the cluster helper's `super::free_port`).
fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

struct Figures {
    mb: f64,
    lines: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_kb: i64,
    errors: u64,
}

/// Running `kcap serve` processes on one store.
struct Servers {
    children: Vec<Child>,
    urls: Vec<String>,
    _scratch: tempfile::TempDir,
}

/// A comma-separated list from the environment, or `None` when unset (everything).
fn chosen(var: &str) -> Option<Vec<String>> {
    let v = std::env::var(var).ok()?;
    Some(
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// Whether `KCAP_BENCH_{var}` lets `item` run.
fn wanted(var: &str, item: &str) -> bool {
    chosen(var).is_none_or(|list| list.iter().any(|i| i == item))
}

/// The server binaries to compare (`KCAP_BENCH_SERVERS`), else the `kcap` beside this bench.
fn server_binaries() -> Result<Vec<std::path::PathBuf>, String> {
    match chosen("KCAP_BENCH_SERVERS") {
        Some(list) if !list.is_empty() => Ok(list.into_iter().map(Into::into).collect()),
        _ => Ok(vec![std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("kcap")]),
    }
}

/// A row's backend name, with the server binary when several are compared.
fn label(name: &str, kcap: &Path, compared: usize) -> String {
    if compared > 1 {
        format!("{name} [{}]", kcap.display())
    } else {
        name.to_string()
    }
}

impl Servers {
    fn start(kcap: &Path, database: Option<&str>, replicas: usize) -> Result<Servers, String> {
        let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (mut children, mut urls) = (Vec::new(), Vec::new());
        for _ in 0..replicas {
            let addr = free_port();
            let mut cmd = Command::new(kcap);
            cmd.args(["serve", "--addr", &addr.to_string()]);
            match database {
                Some(url) => cmd.args(["--database", url]),
                None => cmd.arg("--data-dir").arg(scratch.path()),
            };
            let child = cmd
                .env_remove("KCAP_SERVER_TOKEN")
                .env_remove("KCAP_DATABASE_URL")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", kcap.display()))?;
            children.push(child);
            urls.push(format!("http://{addr}"));
        }
        Ok(Servers {
            children,
            urls,
            _scratch: scratch,
        })
    }

    async fn wait_up(&self) -> Result<(), String> {
        let http = reqwest::Client::new();
        for url in &self.urls {
            let mut up = false;
            for _ in 0..500 {
                if http.get(format!("{url}/auth/config")).send().await.is_ok() {
                    up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !up {
                return Err(format!("kcap serve did not come up at {url}"));
            }
        }
        Ok(())
    }

    fn peak_rss_kb(&self) -> i64 {
        self.children
            .iter()
            .filter_map(|c| vm_hwm_kb(c.id()))
            .max()
            .unwrap_or(-1)
    }

    fn stop(self) {
        for child in self.children {
            stop(child);
        }
    }
}

/// Lines per batch of the main rows (the figure).
const BATCH_LINES: u64 = 1000;
/// Lines per batch of a live watcher: it sends what appeared since its last look, a few lines.
const LIVE_BATCH_LINES: u64 = 10;

/// `per_batch`-line batch bodies for one client's session, about `mb` megabytes of lines.
fn bodies(sample: &[&str], mb: f64, per_batch: u64) -> (Vec<Vec<u8>>, usize, u64) {
    let session = SessionId::new_random();
    let mut out = Vec::new();
    let (mut bytes, mut n) = (0usize, 0u64);
    while (bytes as f64) < mb * 1e6 {
        let chunk: Vec<(u64, &str)> = (0..per_batch)
            .map(|i| (n + i, sample[(n + i) as usize % sample.len()]))
            .collect();
        n += per_batch;
        bytes += chunk.iter().map(|(_, l)| l.len()).sum::<usize>();
        let body = serde_json::json!({
            "session_id": session.dashless(),
            "lines": chunk.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
            "line_numbers": chunk.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            "event_ids": chunk.iter().map(|(n, l)| event_id(&session, *n, l.as_bytes())).collect::<Vec<_>>(),
            "vendor": kcap::agent::default().name(),
        });
        out.push(serde_json::to_vec(&body).unwrap_or_default());
    }
    (out, bytes, n)
}

async fn measure(
    servers: &Servers,
    sample: &[&str],
    mb: f64,
    clients: usize,
    per_batch: u64,
) -> Result<Figures, String> {
    // Bodies are encoded before the clock starts: this measures the server, not the encoder.
    let per_client = mb / clients as f64;
    let work: Vec<_> = (0..clients)
        .map(|_| bodies(sample, per_client, per_batch))
        .collect();
    let (bytes, lines) = work.iter().fold((0usize, 0u64), |(b, l), w| (b + w.1, l + w.2));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(128)
        .build()
        .map_err(|e| e.to_string())?;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (bodies, _, _)) in work.into_iter().enumerate() {
        let (http, url) = (http.clone(), servers.urls[i % servers.urls.len()].clone());
        let (latencies, errors) = (latencies.clone(), errors.clone());
        tasks.spawn(async move {
            for body in bodies {
                let sent = Instant::now();
                let ok = http
                    .post(format!("{url}/hooks/transcript"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                latencies.lock().unwrap_or_else(|p| p.into_inner()).push(ms);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Figures {
        mb: bytes as f64 / 1e6,
        lines,
        seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        peak_rss_kb: servers.peak_rss_kb(),
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
    })
}

fn row(backend: &str, clients: usize, f: &Figures, target: &str) {
    println!(
        "| {backend} | {clients} | {:.0} MB/s, {:.0} lines/s | {:.0} / {:.0} ms | {:.0} MB | {} | {target} |",
        f.mb / f.seconds,
        f.lines as f64 / f.seconds,
        f.p50_ms,
        f.p99_ms,
        f.peak_rss_kb as f64 / 1024.0,
        f.errors
    );
}

/// Runs one backend at 1, 8 and 64 clients (each row on every compared server binary); returns
/// false if any request failed.
async fn backend(
    name: &str,
    database: &dyn Fn() -> Option<String>,
    replicas: usize,
    sample: &[&str],
    mb: u64,
    mb_per_s: f64,
) -> Result<bool, String> {
    let kcaps = server_binaries()?;
    let mut ok = true;
    let mut one = vec![0.0; kcaps.len()];
    for clients in [1, 8, 64] {
        if !wanted("KCAP_BENCH_ROWS", &clients.to_string()) {
            continue;
        }
        for (k, kcap) in kcaps.iter().enumerate() {
            // A fresh server (and store) per row, so RSS is per run.
            let servers = Servers::start(kcap, database().as_deref(), replicas)?;
            servers.wait_up().await?;
            let f = measure(&servers, sample, mb as f64, clients, BATCH_LINES).await?;
            servers.stop();
            let rate = f.mb / f.seconds;
            let target = match clients {
                1 => {
                    one[k] = rate;
                    format!("≥ {mb_per_s:.0} MB/s")
                }
                _ => format!(
                    "no error; ≥ 0.8× one client ({:.2}×){}",
                    rate / one[k],
                    if clients == 64 {
                        "; p99 ≤ 250 ms (not reachable with 3 MB batches: 64 × 3 MB queue behind one store)"
                    } else {
                        ""
                    }
                ),
            };
            ok &= f.errors == 0;
            row(&label(name, kcap, kcaps.len()), clients, &f, &target);
        }
    }
    // The latency target where it means something: 64 live watchers, each sending a few lines
    // at a time. With 1,000-line (~3 MB) batches, Little's law puts p99 near 64 × 3 MB / rate.
    if !wanted("KCAP_BENCH_ROWS", "live") {
        return Ok(ok);
    }
    for kcap in &kcaps {
        let servers = Servers::start(kcap, database().as_deref(), replicas)?;
        servers.wait_up().await?;
        let f = measure(
            &servers,
            sample,
            (mb as f64 / 10.0).max(1.0),
            64,
            LIVE_BATCH_LINES,
        )
        .await?;
        servers.stop();
        ok &= f.errors == 0;
        row(
            &label(
                &format!("{name}, {LIVE_BATCH_LINES}-line live batches"),
                kcap,
                kcaps.len(),
            ),
            64,
            &f,
            "no error; p99 ≤ 250 ms",
        );
    }
    Ok(ok)
}

pub async fn run(sample: &Path, mb: u64) -> Result<bool, String> {
    let text = std::fs::read_to_string(sample).map_err(|e| format!("{}: {e}", sample.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    println!("\nkcap-bench: ingest into `kcap serve`, {mb} MB per row, 1,000-line batches (live-batch rows: {LIVE_BATCH_LINES}-line batches, {mb}/10 MB), each client its own session\n");
    println!("| backend | clients | throughput | p50 / p99 ack | server peak RSS | errors | target |");
    println!("|---|---|---|---|---|---|---|");
    let mut ok = true;
    if wanted("KCAP_BENCH_INGEST", "sqlite") {
        ok &= backend("SQLite", &|| None, 1, &lines, mb, 150.0).await?;
    }
    let postgres = wanted("KCAP_BENCH_INGEST", "postgres");
    match postgres.then(|| pg_cluster::Cluster::start("kcap-bench ingest on PostgreSQL")) {
        None => {}
        Some(Some(cluster)) => {
            for replicas in [1, 2] {
                if !wanted("KCAP_BENCH_REPLICAS", &replicas.to_string()) {
                    continue;
                }
                let name = format!(
                    "PostgreSQL, {replicas} replica{}",
                    if replicas > 1 { "s" } else { "" }
                );
                // A fresh database per row: RSS and speed are per run, and binaries compared in
                // one run never meet a schema newer than they know.
                ok &= backend(&name, &|| Some(cluster.database()), replicas, &lines, mb, 60.0).await?;
            }
        }
        Some(None) => println!("| PostgreSQL | - | skipped: no PostgreSQL binaries | | | | ≥ 60 MB/s |"),
    }
    println!("\nRSS is bounded by batch size × concurrency, not store size, when the 64-client rows stay near the 1-client rows.");
    if wanted("KCAP_BENCH_INGEST", "tail") {
        ok &= one_request_tail(&lines).await?;
    }
    Ok(ok)
}

/// The published client sends a session's whole tail in one POST: ~195 MB must be stored whole
/// with the server's RSS ≤ 512 MB.
async fn one_request_tail(sample: &[&str]) -> Result<bool, String> {
    let kcap = server_binaries()?.remove(0);
    let servers = Servers::start(&kcap, None, 1)?;
    servers.wait_up().await?;
    let session = SessionId::new_random();
    let (mut lines, mut numbers, mut bytes) = (Vec::new(), Vec::new(), 0usize);
    while bytes < 195_000_000 {
        let l = sample[numbers.len() % sample.len()];
        bytes += l.len();
        numbers.push(numbers.len() as u64);
        lines.push(l);
    }
    // No event_ids, as the published client sends it: the server derives them.
    let body = serde_json::to_vec(&serde_json::json!({
        "session_id": session.dashless(), "lines": lines, "line_numbers": numbers, "vendor": kcap::agent::default().name()
    }))
    .map_err(|e| e.to_string())?;
    let body_mb = body.len() as f64 / 1e6;
    let started = Instant::now();
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())?
        .post(format!("{}/hooks/transcript", servers.urls[0]))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let reply: serde_json::Value = resp.json().await.unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    let rss = servers.peak_rss_kb() as f64 / 1024.0;
    servers.stop();
    let stored = reply["new"].as_u64().unwrap_or(0);
    println!(
        "\n| one-request tail | {:.0} MB of lines ({body_mb:.0} MB body), {} lines | HTTP {status}, {stored} new, {seconds:.1} s | server peak RSS {rss:.0} MB | target: stored whole, RSS ≤ 512 MB |",
        bytes as f64 / 1e6,
        numbers.len()
    );
    Ok(status.is_success() && stored == numbers.len() as u64 && rss <= 512.0)
}

/// Peak resident set of a live process since its exec, from /proc.
fn vm_hwm_kb(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// SIGTERM, and wait for the server to exit.
fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}
