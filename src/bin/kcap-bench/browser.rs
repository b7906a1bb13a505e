//! A headless Chromium driven over the DevTools protocol on `--remote-debugging-pipe` (file
//! descriptors 3 and 4, NUL-separated JSON), so nothing is downloaded and no WebSocket client is
//! needed. Shared by kcap-bench's web part and `tests/browser.rs` (which includes this file with
//! `#[path]`), so both drive the browser the same way.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long one DevTools call or one page load may take before it counts as failed.
pub const STEP: Duration = Duration::from_secs(20);

/// Chromium's path (`KCAP_CHROMIUM`, else `/usr/bin/chromium`), or why it is not there.
pub fn chromium() -> Result<PathBuf, String> {
    let path = std::env::var_os("KCAP_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Ok(path);
    }
    Err(format!(
        "Chromium not found at {} (apt-get install chromium; or set KCAP_CHROMIUM)",
        path.display()
    ))
}

/// A pipe whose ends close on exec (the child gets its copies through dup2 only).
fn pipe() -> Result<(RawFd, RawFd), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    Ok((fds[0], fds[1]))
}

/// One browser with one page attached (flattened session); killed on drop.
pub struct Browser {
    child: Child,
    to: File,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: String,
    /// Console errors, exceptions and error log entries (CSP violations among them).
    pub errors: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium on a fresh profile and attaches to a blank page.
    pub fn start(path: &PathBuf) -> Result<Browser, String> {
        let profile = tempfile::tempdir().map_err(|e| format!("profile dir: {e}"))?;
        let (cmd_read, cmd_write) = pipe()?;
        let (out_read, out_write) = pipe()?;
        let mut command = Command::new(path);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--remote-debugging-pipe",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe dup2 calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(cmd_read, 3) < 0 || libc::dup2(out_write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        // SAFETY: these descriptors are ours; the child (if any) holds its own copies.
        let (to, from) = unsafe {
            libc::close(cmd_read);
            libc::close(out_write);
            (File::from_raw_fd(cmd_write), File::from_raw_fd(out_read))
        };
        let child = spawned.map_err(|e| format!("{}: {e}", path.display()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from);
            let mut buf = Vec::new();
            while reader.read_until(0, &mut buf).map(|n| n > 0).unwrap_or(false) {
                buf.pop();
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        let mut b = Browser {
            child,
            to,
            from: rx,
            next: 0,
            session: String::new(),
            errors: Vec::new(),
            _profile: profile,
        };
        let target = b.call(None, "Target.createTarget", json!({ "url": "about:blank" }))?;
        let target = target["targetId"].as_str().ok_or("no targetId")?.to_string();
        let attached = b.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        )?;
        b.session = attached["sessionId"].as_str().ok_or("no sessionId")?.to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.page(domain, json!({}))?;
        }
        Ok(b)
    }

    fn note(&mut self, event: &Value) {
        let method = event["method"].as_str().unwrap_or("");
        let p = &event["params"];
        match method {
            "Runtime.consoleAPICalled" if p["type"] == "error" => self.errors.push(p.to_string()),
            "Runtime.exceptionThrown" => self.errors.push(p["exceptionDetails"].to_string()),
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                self.errors.push(p["entry"]["text"].to_string())
            }
            _ => {}
        }
    }

    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
        bytes.push(0);
        self.to
            .write_all(&bytes)
            .map_err(|e| format!("write to chromium: {e}"))?;
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .map_err(|_| format!("no answer to {method} within {STEP:?}"))?;
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    return Err(format!("{method}: {e}"));
                }
                return Ok(v["result"].clone());
            }
            self.note(&v);
        }
    }

    /// A DevTools call on the attached page.
    pub fn page(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let s = self.session.clone();
        self.call(Some(&s), method, params)
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let r = self.page(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{expression}: {e}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits for the next page load event.
    pub fn loaded(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .map_err(|_| format!("no page load within {STEP:?}"))?;
            self.note(&v);
            if v["method"] == "Page.loadEventFired" {
                return Ok(());
            }
        }
    }

    /// Navigates to `url` and waits for its load event.
    pub fn goto(&mut self, url: &str) -> Result<(), String> {
        self.page("Page.navigate", json!({ "url": url }))?;
        self.loaded()
    }

    /// Polls `condition` until true; returns how long it took.
    pub fn until(&mut self, condition: &str, limit: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.eval(condition)? == json!(true) {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
            while let Ok(v) = self.from.try_recv() {
                self.note(&v);
            }
        }
        Err(format!("{condition} not true within {limit:?}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
