//! `kcap-bench`: every speed and memory figure the issues set a target for, each printed next to
//! its target; exits non-zero if a line did not arrive or a check failed.
//!
//! finalize: a transcript of `--mb` megabytes (the VibeCodingTracker sample repeated) is written
//! without its shutdown; a real `kcap finalizer --foreground` process polls it against the
//! embedded loopback server; `--delay-s` seconds later the shutdown line is appended. Reported:
//! time from that append to the server holding the line and to the finalizer's exit, the
//! finalizer's CPU time and peak RSS (from wait4), next to the same on a 1 MB transcript.
//! The other parts are described in their modules.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kcap::config::transcript_path;
use kcap::ids::SessionId;
use kcap::server::Server;

mod browser;
mod corpus;
mod hooks;
mod ingest;
mod live;
mod outside_corpus;
mod polling;
mod redaction;
mod usage;
mod web;
mod web_browser;

struct Args {
    mb: u64,
    delay: Duration,
    sample: PathBuf,
    only: Option<String>,
    web_mb: u64,
    live_lines: usize,
    idle: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mb: 200,
        delay: Duration::from_secs(5),
        sample: kcap::cli::demo::default_sample(),
        only: None,
        web_mb: 256,
        live_lines: 200,
        idle: Duration::from_secs(30),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--mb" => args.mb = value()?.parse().map_err(|e| format!("--mb: {e}"))?,
            "--delay-s" => args.delay = Duration::from_secs(value()?.parse().map_err(|e| format!("--delay-s: {e}"))?),
            "--sample" => args.sample = value()?.into(),
            "--only" => args.only = Some(value()?),
            "--web-mb" => args.web_mb = value()?.parse().map_err(|e| format!("--web-mb: {e}"))?,
            "--live-lines" => {
                args.live_lines = value()?.parse::<usize>().map_err(|e| format!("--live-lines: {e}"))?.max(1)
            }
            "--idle-s" => {
                args.idle = Duration::from_secs(value()?.parse::<u64>().map_err(|e| format!("--idle-s: {e}"))?.max(1))
            }
            "-h" | "--help" => {
                return Err("usage: kcap-bench [--mb 200] [--delay-s 5] [--sample PATH] [--web-mb 256] [--live-lines 200] [--idle-s 30] [--only finalize|polling|ingest|hooks|live|redaction|usage|web]\n\
                            finalize: a transcript of --mb megabytes whose shutdown arrives --delay-s after spawn.\n\
                            polling: finalizers waiting on an --mb and a 1 MB transcript with no shutdown, 30 s.\n\
                            ingest: --mb megabytes of transcript into `kcap serve`, 1,000-line batches, one client.\n\
                            hooks: the sessionEnd hook's wall time (server up, down, hanging); an idle watcher.\n\
                            live: --live-lines lines written at random intervals to a watched transcript, write to\n\
                            server p50/p90; idle watcher CPU over --idle-s seconds (notifications vs polling).\n\
                            redaction: recall on a held-out corpus, precision on source code, MB/s, linearity.\n\
                            usage: the usage fold on shutdowns listing 60k and 240k files.\n\
                            web: the web UI on SQLite: list of 10,000 sessions, a 10,000-line session, search over\n\
                            --web-mb megabytes of generated sessions (and on PostgreSQL), live line latency; both pages' load in headless Chromium."
                    .into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

struct Measured {
    /// From the shutdown line's append to the server holding it (and everything before it).
    shutdown_on_server: Option<Duration>,
    wall_after_shutdown: Duration,
    cpu: Duration,
    peak_rss_kb: i64,
    lines_held: usize,
    lines_expected: usize,
}

/// The environment variable naming the default agent's root (its transcripts live below it).
fn agent_home_env() -> &'static str {
    kcap::agent::home_setting(kcap::agent::default()).env
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
        if matches!(args.only.as_deref(), None | Some("polling")) {
            ok &= run_polling(&args).await?;
        }
        if matches!(args.only.as_deref(), None | Some("ingest")) {
            ok &= ingest::run(&args.sample, args.mb).await?;
        }
        if matches!(args.only.as_deref(), None | Some("hooks")) {
            let sample =
                std::fs::read(&args.sample).map_err(|e| format!("{}: {e}", args.sample.display()))?;
            ok &= hooks::run(&sample).await?;
        }
        if matches!(args.only.as_deref(), None | Some("live")) {
            ok &= live::run(args.live_lines, args.idle).await?;
        }
        if matches!(args.only.as_deref(), None | Some("web")) {
            ok &= web::run(&args.sample, args.web_mb).await?;
        }
        if matches!(args.only.as_deref(), None | Some("redaction")) {
            ok &= redaction::run(&args.sample)?;
        }
        if matches!(args.only.as_deref(), None | Some("usage")) {
            ok &= usage::run();
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

async fn run_polling(args: &Args) -> Result<bool, String> {
    let sample = std::fs::read(&args.sample).map_err(|e| format!("{}: {e}", args.sample.display()))?;
    let (body, _) = split_at_shutdown(&sample)?;
    let server = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
        .await
        .map_err(|e| e.to_string())?;
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ok = polling::run(body, args.mb, &server.url(), scratch.path()).await?;
    server.stop().await;
    Ok(ok)
}

/// The sample before its shutdown line, and that line onwards.
fn split_at_shutdown(sample: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let text = std::str::from_utf8(sample).map_err(|e| e.to_string())?;
    let at = text
        .rfind("{\"type\":\"session.shutdown\"")
        .ok_or("sample has no shutdown line")?;
    Ok(sample.split_at(at))
}

async fn run(args: &Args) -> Result<bool, String> {
    let sample = std::fs::read(&args.sample).map_err(|e| format!("{}: {e}", args.sample.display()))?;
    let (body, shutdown) = split_at_shutdown(&sample)?;
    let server = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), None)
        .await
        .map_err(|e| e.to_string())?;
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;

    println!(
        "kcap-bench: finalizer on a growing transcript (shutdown {}s after spawn)\n",
        args.delay.as_secs()
    );
    let small = measure(&server, scratch.path(), body, shutdown, 1, args.delay).await?;
    let big = measure(&server, scratch.path(), body, shutdown, args.mb, args.delay).await?;

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
    let secs = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
    println!(
        "| shutdown line written → on the server | {} | {} | < 3 s (200 MB); < 1 s (poll 300 ms) | |",
        secs(big.shutdown_on_server),
        secs(small.shutdown_on_server)
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
    let agent_home = scratch.join("agent");
    let kcap_home = scratch.join(format!("kcap-{mb}"));
    let path = transcript_path(&agent_home, session);
    let (body_lines, shutdown_line) = write_transcript(&path, body, mb)?;
    let lines_expected = body_lines + 1;

    let kcap = kcap_exe()?;
    let child = Command::new(&kcap)
        .args(["finalizer", "--foreground", &session.to_string()])
        .arg(&path)
        .env("KCAP_URL", server.url())
        .env("KCAP_HOME", &kcap_home)
        .env(agent_home_env(), &agent_home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", kcap.display()))?;
    // Polling meanwhile; what that costs is the polling benchmark's figure.
    tokio::time::sleep(delay).await;

    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(shutdown))
        .map_err(|e| e.to_string())?;
    let appended = Instant::now();
    let exited = tokio::task::spawn_blocking(move || wait_rusage(child));
    // Until the finalizer exits; one look after it has, so an arrival just before is not missed.
    // If the line never arrives, the line count below says so.
    let mut shutdown_on_server = None;
    loop {
        let exited_already = exited.is_finished();
        if shutdown_on_server.is_none()
            && server.storage().last_line(session).unwrap_or(-1) >= shutdown_line as i64
        {
            shutdown_on_server = Some(appended.elapsed());
        }
        if exited_already {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (cpu, peak_rss_kb) = exited.await.map_err(|e| e.to_string())??;
    let wall_after_shutdown = appended.elapsed();
    Ok(Measured {
        shutdown_on_server,
        wall_after_shutdown,
        cpu,
        peak_rss_kb,
        lines_held: server.session(session).lines.len(),
        lines_expected,
    })
}

/// Writes `body` repeated to at least `mb` megabytes; returns the number of non-blank lines and
/// of all lines.
pub(crate) fn write_transcript(path: &Path, body: &[u8], mb: u64) -> Result<(usize, u64), String> {
    std::fs::create_dir_all(path.parent().expect("parent")).map_err(|e| e.to_string())?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| e.to_string())?);
    let body_lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    let body_newlines = memchr::memchr_iter(b'\n', body).count() as u64;
    let (mut written, mut lines, mut newlines) = (0u64, 0usize, 0u64);
    while written < mb * 1_000_000 {
        out.write_all(body).map_err(|e| e.to_string())?;
        written += body.len() as u64;
        lines += body_lines;
        newlines += body_newlines;
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok((lines, newlines))
}

/// `kcap` beside this binary.
pub(crate) fn kcap_exe() -> Result<PathBuf, String> {
    Ok(std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("kcap"))
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
