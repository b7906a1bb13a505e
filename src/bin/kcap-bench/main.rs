//! `kcap-bench`: the finalizer on a large transcript, measured as the issue asks. Prints a table
//! of figures next to their targets; exits non-zero if a line did not arrive.
//!
//! A transcript of `--mb` megabytes (the VibeCodingTracker sample repeated) is written without its
//! shutdown; a real `kcap copilot-finalize --foreground` process starts polling it against the
//! embedded loopback server; `--delay-s` seconds later the shutdown line is appended. Reported:
//! wall time from that append to the finalizer's exit, the finalizer's CPU time and peak RSS
//! (from wait4), and its polling CPU while waiting, on this file and on a 1 MB one in the same
//! run (the ratio shows whether polling cost depends on file size).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kcap::config::transcript_path;
use kcap::ids::SessionId;
use kcap::server::Server;

mod hooks;
mod ingest;

const SAMPLE: &str = "../shared/research-samples/copilot/Mai0313__VibeCodingTracker__copilot.jsonl";

struct Args {
    mb: u64,
    delay: Duration,
    sample: PathBuf,
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mb: 200,
        delay: Duration::from_secs(5),
        sample: PathBuf::from(SAMPLE),
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--mb" => args.mb = value()?.parse().map_err(|e| format!("--mb: {e}"))?,
            "--delay-s" => args.delay = Duration::from_secs(value()?.parse().map_err(|e| format!("--delay-s: {e}"))?),
            "--sample" => args.sample = value()?.into(),
            "--only" => args.only = Some(value()?),
            "-h" | "--help" => {
                return Err("usage: kcap-bench [--mb 200] [--delay-s 5] [--sample PATH] [--only finalize|ingest|hooks]\n\
                            finalize: a transcript of --mb megabytes whose shutdown arrives --delay-s after spawn.\n\
                            ingest: --mb megabytes of transcript into `kcap serve`, 1,000-line batches, one client."
                    .into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

struct Measured {
    polling_cpu: Duration,
    wall_after_shutdown: Duration,
    cpu: Duration,
    peak_rss_kb: i64,
    lines_held: usize,
    lines_expected: usize,
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        let mut ok = true;
        if matches!(args.only.as_deref(), None | Some("finalize")) {
            ok &= run(&args).await?;
        }
        if matches!(args.only.as_deref(), None | Some("ingest")) {
            ok &= ingest::run(&args.sample, args.mb).await?;
        }
        if matches!(args.only.as_deref(), None | Some("hooks")) {
            let sample =
                std::fs::read(&args.sample).map_err(|e| format!("{}: {e}", args.sample.display()))?;
            ok &= hooks::run(&sample).await?;
        }
        Ok::<bool, String>(ok)
    });
    match result {
        Ok(ok) => std::process::exit(if ok { 0 } else { 1 }),
        Err(e) => {
            eprintln!("kcap-bench: {e}");
            std::process::exit(2);
        }
    }
}

async fn run(args: &Args) -> Result<bool, String> {
    let sample = std::fs::read(&args.sample).map_err(|e| format!("{}: {e}", args.sample.display()))?;
    let text = std::str::from_utf8(&sample).map_err(|e| e.to_string())?;
    let at = text
        .rfind("{\"type\":\"session.shutdown\"")
        .ok_or("sample has no shutdown line")?;
    let (body, shutdown) = (&sample[..at], &sample[at..]);
    let server = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
        .await
        .map_err(|e| e.to_string())?;
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;

    println!(
        "kcap-bench: finalizer on a growing Copilot transcript (shutdown {}s after spawn)\n",
        args.delay.as_secs()
    );
    let small = measure(&server, scratch.path(), body, shutdown, 1, args.delay).await?;
    let big = measure(&server, scratch.path(), body, shutdown, args.mb, args.delay).await?;

    let ratio = big.polling_cpu.as_secs_f64() / small.polling_cpu.as_secs_f64().max(1e-3);
    println!(
        "| figure | {} MB transcript | 1 MB transcript | target | C# kcap (same work) |",
        args.mb
    );
    println!("|---|---|---|---|---|");
    println!(
        "| wall time after the shutdown appears | {:.2} s | {:.2} s | < 3 s | 26 s (whole run) |",
        big.wall_after_shutdown.as_secs_f64(),
        small.wall_after_shutdown.as_secs_f64()
    );
    println!(
        "| finalizer CPU time (user + sys) | {:.2} s | {:.2} s | – | 18.5 s |",
        big.cpu.as_secs_f64(),
        small.cpu.as_secs_f64()
    );
    println!(
        "| finalizer peak RSS | {:.1} MB | {:.1} MB | < 64 MB | 1.6 GB |",
        big.peak_rss_kb as f64 / 1024.0,
        small.peak_rss_kb as f64 / 1024.0
    );
    println!(
        "| polling CPU over {} s before the shutdown | {} ms | {} ms | independent of size | re-reads the file per poll |",
        args.delay.as_secs(),
        big.polling_cpu.as_millis(),
        small.polling_cpu.as_millis()
    );
    if big.polling_cpu.is_zero() && small.polling_cpu.is_zero() {
        println!("| polling CPU ratio, big / small | both below /proc's 10 ms resolution | | ≈ 1 | |");
    } else {
        println!("| polling CPU ratio, big / small | {ratio:.2} | | ≈ 1 | |");
    }
    println!(
        "| lines on the server / in the transcript | {} / {} | {} / {} | all, once | |",
        big.lines_held, big.lines_expected, small.lines_held, small.lines_expected
    );
    server.stop().await;
    Ok(big.lines_held == big.lines_expected && small.lines_held == small.lines_expected)
}

async fn measure(
    server: &Server,
    scratch: &Path,
    body: &[u8],
    shutdown: &[u8],
    mb: u64,
    delay: Duration,
) -> Result<Measured, String> {
    let session = SessionId::new_random();
    let copilot_home = scratch.join("copilot");
    let kcap_home = scratch.join(format!("kcap-{mb}"));
    let path = transcript_path(&copilot_home, session);
    std::fs::create_dir_all(path.parent().expect("parent")).map_err(|e| e.to_string())?;
    let mut lines_expected = 0;
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| e.to_string())?);
        let mut written = 0u64;
        let body_lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
        while written < mb * 1_000_000 {
            out.write_all(body).map_err(|e| e.to_string())?;
            written += body.len() as u64;
            lines_expected += body_lines;
        }
        out.flush().map_err(|e| e.to_string())?;
    }
    lines_expected += 1; // the shutdown line

    let kcap = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("kcap");
    let child = Command::new(&kcap)
        .args(["copilot-finalize", "--foreground", &session.to_string()])
        .arg(&path)
        .env("KCAP_URL", server.url())
        .env("KCAP_HOME", &kcap_home)
        .env("COPILOT_HOME", &copilot_home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", kcap.display()))?;
    let pid = child.id();
    tokio::time::sleep(Duration::from_millis(500)).await; // start-up, store, first look
    let cpu_before = proc_cpu(pid).unwrap_or_default();
    tokio::time::sleep(delay.saturating_sub(Duration::from_millis(500))).await;
    let polling_cpu = proc_cpu(pid).unwrap_or_default().saturating_sub(cpu_before);

    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(shutdown))
        .map_err(|e| e.to_string())?;
    let appended = Instant::now();
    let (cpu, peak_rss_kb) = tokio::task::spawn_blocking(move || wait_rusage(child))
        .await
        .map_err(|e| e.to_string())??;
    let wall_after_shutdown = appended.elapsed();
    Ok(Measured {
        polling_cpu,
        wall_after_shutdown,
        cpu,
        peak_rss_kb,
        lines_held: server.session(session).lines.len(),
        lines_expected,
    })
}

/// CPU time (user + system) a live process has used so far, from /proc.
pub(crate) fn proc_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// Waits for the child and returns its CPU time and peak RSS (KB) from wait4.
fn wait_rusage(child: Child) -> Result<(Duration, i64), String> {
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter for wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waiting for our own child with valid pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    std::mem::forget(child); // reaped above
    if rc != pid {
        return Err(format!("wait4 failed: {}", std::io::Error::last_os_error()));
    }
    let tv =
        |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    Ok((tv(usage.ru_utime) + tv(usage.ru_stime), usage.ru_maxrss))
}
