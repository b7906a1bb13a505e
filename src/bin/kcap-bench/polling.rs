//! What a finalizer costs while it waits for a shutdown that does not come: two finalizers poll
//! at once (the default 300 ms), one on a large transcript and one on a 1 MB one, for `window`;
//! their CPU, scaled to a minute, should not depend on the file's size.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kcap::config::transcript_path;
use kcap::ids::SessionId;

pub async fn run(body: &[u8], mb: u64, url: &str, scratch: &Path) -> Result<bool, String> {
    let window = Duration::from_secs(30);
    println!(
        "\nkcap-bench: finalizer polling with no shutdown, {} s window, both files at once\n",
        window.as_secs()
    );
    let mut big = spawn(body, mb, url, scratch)?;
    let mut small = spawn(body, 1, url, scratch)?;
    tokio::time::sleep(Duration::from_secs(1)).await; // start-up and the first look
    let before = (cpu(&big), cpu(&small));
    tokio::time::sleep(window).await;
    let used = (
        cpu(&big).saturating_sub(before.0),
        cpu(&small).saturating_sub(before.1),
    );
    let rss = (rss_kb(&big), rss_kb(&small));
    for child in [&mut big, &mut small] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let per_minute = |d: Duration| d.as_millis() as f64 * 60.0 / window.as_secs_f64();
    println!("| figure | {mb} MB transcript | 1 MB transcript | target |");
    println!("|---|---|---|---|");
    println!(
        "| polling CPU per minute | {:.0} ms | {:.0} ms | independent of size; /proc counts 10 ms ticks |",
        per_minute(used.0),
        per_minute(used.1)
    );
    println!(
        "| resident memory while polling | {:.1} MB | {:.1} MB | independent of size |",
        rss.0 as f64 / 1024.0,
        rss.1 as f64 / 1024.0
    );
    // Within two ticks per minute of each other, or within 2x: size-independent.
    let (a, b) = (per_minute(used.0), per_minute(used.1));
    Ok((a - b).abs() <= 40.0 || a <= 2.0 * b)
}

fn spawn(body: &[u8], mb: u64, url: &str, scratch: &Path) -> Result<Child, String> {
    let session = SessionId::new_random();
    let agent_home = scratch.join(format!("polling-agent-{mb}"));
    let path = transcript_path(&agent_home, session);
    crate::write_transcript(&path, body, mb)?;
    Command::new(crate::kcap_exe()?)
        .args(["finalizer", "--foreground", &session.to_string()])
        .arg(&path)
        .env("KCAP_URL", url)
        .env("KCAP_HOME", scratch.join(format!("polling-kcap-{mb}")))
        .env(crate::agent_home_env(), &agent_home)
        .env("KCAP_SHUTDOWN_BUDGET_MS", "600000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())
}

fn cpu(child: &Child) -> Duration {
    crate::proc_cpu(child.id()).unwrap_or_default()
}

fn rss_kb(child: &Child) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
