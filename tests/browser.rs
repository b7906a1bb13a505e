//! The web UI in a real browser: Debian's headless Chromium, driven over the DevTools protocol
//! on `--remote-debugging-pipe` (file descriptors 3 and 4, NUL-separated JSON), so nothing is
//! downloaded and no WebSocket client is needed. It logs in, opens the list and a session, sees
//! the usage table, receives a line appended while the page is open, follows a search hit to
//! its line, and fails on any console error or CSP violation. Screenshots go to
//! `<CARGO_TARGET_TMPDIR>/browser/`.
//!
//! Skipped with one line when Chromium is missing, unless KCAP_REQUIRE_BROWSER=1 (CI).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use kcap::ids::SessionId;
use kcap::server::storage::Storage;
use kcap::server::{Options, Server};
use serde_json::{json, Value};

const TOKEN: &str = "browser-test-token";
const STEP: Duration = Duration::from_secs(20);

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("KCAP_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "Chromium not found at {} (apt-get install chromium; or set KCAP_CHROMIUM)",
        path.display()
    );
    if std::env::var("KCAP_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("{why}, and KCAP_REQUIRE_BROWSER=1");
    }
    println!("skipped: browser test: {why}");
    None
}

/// A pipe whose ends close on exec (the child gets its copies through dup2 only).
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2 failed");
    (fds[0], fds[1])
}

struct Browser {
    child: Child,
    to: File,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: String,
    /// Console errors, exceptions and error log entries (CSP violations among them).
    errors: Vec<String>,
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(path: &PathBuf) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (cmd_read, cmd_write) = pipe();
        let (out_read, out_write) = pipe();
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
        let child = command.spawn().expect("chromium starts");
        // SAFETY: these descriptors are ours; the child holds its own copies.
        let (to, from) = unsafe {
            libc::close(cmd_read);
            libc::close(out_write);
            (File::from_raw_fd(cmd_write), File::from_raw_fd(out_read))
        };
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
            events: Vec::new(),
            _profile: profile,
        };
        let target = b.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.page(domain, json!({}));
        }
        b
    }

    fn note(&mut self, event: Value) {
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
        self.events.push(event);
    }

    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to {method} within {STEP:?}"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
            self.note(v);
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.call(Some(&s), method, params)
    }

    fn eval(&mut self, expression: &str) -> Value {
        let r = self.page(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits for the next page load event.
    fn loaded(&mut self) {
        self.events.clear();
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.from.recv_timeout(left).expect("page load within the step");
            let done = v["method"] == "Page.loadEventFired";
            self.note(v);
            if done {
                return;
            }
        }
    }

    fn goto(&mut self, url: &str) {
        self.page("Page.navigate", json!({ "url": url }));
        self.loaded();
    }

    /// Runs `action` (which navigates) and waits for the new page.
    fn navigating(&mut self, action: &str) {
        self.eval(action);
        self.loaded();
    }

    /// Polls `condition` until true; returns how long it took.
    fn until(&mut self, condition: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.eval(condition) == json!(true) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(10));
            while let Ok(v) = self.from.try_recv() {
                self.note(v);
            }
        }
        panic!("{condition} not true within {limit:?}");
    }

    fn screenshot(&mut self, name: &str) {
        let shot = self.page("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ev(kind: &str, data: Value) -> String {
    json!({ "type": kind, "data": data, "timestamp": "2026-11-26T10:00:00.000Z" }).to_string()
}

fn post(rt: &tokio::runtime::Runtime, url: &str, sid: SessionId, first: u64, lines: &[String]) {
    let body = json!({ "session_id": sid.dashed(), "lines": lines, "vendor": "copilot", "repository": "org/browser",
        "line_numbers": (first..first + lines.len() as u64).collect::<Vec<_>>() });
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{url}/hooks/transcript"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    });
}

#[test]
fn a_reader_browses_searches_and_watches_a_live_session() {
    let Some(path) = chromium() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .unwrap();
    let server = rt
        .block_on(Server::start_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Options {
                token: Some(TOKEN.into()),
                ..Options::default()
            },
            Storage::temporary().unwrap(),
        ))
        .unwrap();
    let url = server.url();
    let sid = SessionId::new_random();
    let lines = vec![
        ev("session.start", json!({ "copilotVersion": "1.0.86" })),
        ev("user.message", json!({ "content": "why is the parser flaky" })),
        ev(
            "assistant.message",
            json!({ "content": "Because of **timing**. <img src=x onerror=alert(1)> [x](javascript:alert(2))" }),
        ),
        ev(
            "tool.execution_start",
            json!({ "toolCallId": "c1", "toolName": "bash", "arguments": { "command": "cargo test" } }),
        ),
        ev(
            "tool.execution_complete",
            json!({ "toolCallId": "c1", "success": true, "result": { "content": "<script>alert(3)</script> ok" } }),
        ),
        ev(
            "session.shutdown",
            json!({ "shutdownType": "routine", "totalPremiumRequests": 1,
            "modelMetrics": { "gpt-5": { "requests": { "count": 1, "cost": 1 }, "usage": { "inputTokens": 42, "outputTokens": 7 } } } }),
        ),
    ];
    post(&rt, &url, sid, 0, &lines);
    let reads = server.storage().reads();
    std::thread::scope(|s| {
        s.spawn(|| kcap::server::web::indexer::catch_up(&*reads).unwrap())
            .join()
            .unwrap()
    });

    let mut b = Browser::start(&path);
    // Logging in: the list redirects to the login form, which sets the cookie and goes back.
    b.goto(&format!("{url}/"));
    assert_eq!(b.eval("location.pathname"), json!("/login"));
    b.screenshot("1-login");
    b.navigating(&format!(
        "document.getElementById('token').value = '{TOKEN}'; document.querySelector('form.login').submit()"
    ));
    let text = b.eval("document.body.innerText");
    assert_eq!(b.eval("location.pathname"), json!("/"), "{text}");
    assert_eq!(b.eval("document.cookie"), json!(""), "the cookie is HttpOnly");
    b.screenshot("2-sessions");

    // The session, its usage table, and nothing hostile turned into markup.
    b.navigating("document.querySelector('#sessions a').click()");
    assert_eq!(
        b.eval("location.pathname"),
        json!(format!("/sessions/{}", sid.dashed()))
    );
    let usage = b.eval("document.querySelector('#usage').innerText");
    assert!(usage.as_str().unwrap().contains("gpt-5"), "{usage}");
    assert_eq!(
        b.eval("document.querySelectorAll('#lines img, #lines script, a[href^=javascript]').length"),
        json!(0)
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#lines article').length"),
        json!(6)
    );
    b.screenshot("3-session");

    // A line appended while the page is open appears without a reload.
    b.until(
        "document.getElementById('live-status').textContent.startsWith('live')",
        STEP,
    );
    let appended = Instant::now();
    post(
        &rt,
        &url,
        sid,
        6,
        &[ev(
            "assistant.message",
            json!({ "content": "a line that arrived live" }),
        )],
    );
    let waited = b.until("!!document.getElementById('L6')", Duration::from_secs(10));
    println!(
        "live line visible {:?} after it was posted",
        appended.elapsed().min(waited + Duration::from_millis(50))
    );
    assert!(b
        .eval("document.getElementById('L6').innerText")
        .as_str()
        .unwrap()
        .contains("arrived live"));
    b.screenshot("4-live");

    // Search, then follow a hit to its line.
    b.goto(&format!("{url}/search?q=flaky"));
    b.screenshot("5-search");
    b.navigating("document.querySelector('#hits a').click()");
    assert_eq!(b.eval("location.hash"), json!("#L1"));
    assert_eq!(b.eval("document.querySelector(':target').id"), json!("L1"));
    b.screenshot("6-hit");

    b.goto(&format!("{url}/usage?group=model"));
    assert_eq!(
        b.eval("document.querySelectorAll('figure.chart svg').length"),
        json!(2)
    );
    b.screenshot("7-usage");

    assert!(b.errors.is_empty(), "console errors: {:#?}", b.errors);
    drop(b);
    rt.block_on(server.stop());
}
