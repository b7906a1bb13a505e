//! The web UI in a real browser: Debian's headless Chromium, driven over the DevTools protocol
//! on `--remote-debugging-pipe` (file descriptors 3 and 4, NUL-separated JSON), so nothing is
//! downloaded and no WebSocket client is needed. It logs in, opens the list and a session, sees
//! the usage table, receives a line appended while the page is open, follows a search hit to
//! its line, and fails on any console error or CSP violation. Screenshots go to
//! `<CARGO_TARGET_TMPDIR>/browser/`.
//!
//! Skipped with one line when Chromium is missing, unless KCAP_REQUIRE_BROWSER=1 (CI).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use kcap::ids::SessionId;
use kcap::server::storage::Storage;
use kcap::server::{Options, Server};
use serde_json::{json, Value};

#[path = "../src/bin/kcap-bench/browser.rs"]
mod browser;
use browser::{Browser, STEP};

const TOKEN: &str = "browser-test-token";

fn chromium() -> Option<PathBuf> {
    match browser::chromium() {
        Ok(path) => Some(path),
        Err(why) if std::env::var("KCAP_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("{why}, and KCAP_REQUIRE_BROWSER=1")
        }
        Err(why) => {
            println!("skipped: browser test: {why}");
            None
        }
    }
}

/// The calls the test makes, failing the test on any DevTools or page error.
trait Drive {
    fn eval_ok(&mut self, expression: &str) -> Value;
    fn goto_ok(&mut self, url: &str);
    /// Runs `action` (which navigates) and waits for the new page.
    fn navigating(&mut self, action: &str);
    fn until_ok(&mut self, condition: &str, limit: Duration) -> Duration;
    /// Saves a PNG of the page under `<CARGO_TARGET_TMPDIR>/browser/`.
    fn screenshot(&mut self, name: &str);
}

impl Drive for Browser {
    #[track_caller]
    fn eval_ok(&mut self, expression: &str) -> Value {
        self.eval(expression).unwrap()
    }

    #[track_caller]
    fn goto_ok(&mut self, url: &str) {
        self.goto(url).unwrap()
    }

    #[track_caller]
    fn navigating(&mut self, action: &str) {
        self.eval(action).unwrap();
        self.loaded().unwrap();
    }

    #[track_caller]
    fn until_ok(&mut self, condition: &str, limit: Duration) -> Duration {
        self.until(condition, limit).unwrap()
    }

    #[track_caller]
    fn screenshot(&mut self, name: &str) {
        let shot = self
            .page("Page.captureScreenshot", json!({ "format": "png" }))
            .unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
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

    let mut b = Browser::start(&path).expect("chromium starts");
    // Logging in: the list redirects to the login form, which sets the cookie and goes back.
    b.goto_ok(&format!("{url}/"));
    assert_eq!(b.eval_ok("location.pathname"), json!("/login"));
    b.screenshot("1-login");
    b.navigating(&format!(
        "document.getElementById('token').value = '{TOKEN}'; document.querySelector('form.login').submit()"
    ));
    let text = b.eval_ok("document.body.innerText");
    assert_eq!(b.eval_ok("location.pathname"), json!("/"), "{text}");
    assert_eq!(b.eval_ok("document.cookie"), json!(""), "the cookie is HttpOnly");
    b.screenshot("2-sessions");

    // The session, its usage table, and nothing hostile turned into markup.
    b.navigating("document.querySelector('#sessions a').click()");
    assert_eq!(
        b.eval_ok("location.pathname"),
        json!(format!("/sessions/{}", sid.dashed()))
    );
    let usage = b.eval_ok("document.querySelector('#usage').innerText");
    assert!(usage.as_str().unwrap().contains("gpt-5"), "{usage}");
    assert_eq!(
        b.eval_ok("document.querySelectorAll('#lines img, #lines script, a[href^=javascript]').length"),
        json!(0)
    );
    assert_eq!(
        b.eval_ok("document.querySelectorAll('#lines article').length"),
        json!(6)
    );
    b.screenshot("3-session");

    // A line appended while the page is open appears without a reload.
    b.until_ok(
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
    let waited = b.until_ok("!!document.getElementById('L6')", Duration::from_secs(10));
    println!(
        "live line visible {:?} after it was posted",
        appended.elapsed().min(waited + Duration::from_millis(50))
    );
    assert!(b
        .eval_ok("document.getElementById('L6').innerText")
        .as_str()
        .unwrap()
        .contains("arrived live"));
    b.screenshot("4-live");

    // Search, then follow a hit to its line.
    b.goto_ok(&format!("{url}/search?q=flaky"));
    b.screenshot("5-search");
    b.navigating("document.querySelector('#hits a').click()");
    assert_eq!(b.eval_ok("location.hash"), json!("#L1"));
    assert_eq!(b.eval_ok("document.querySelector(':target').id"), json!("L1"));
    b.screenshot("6-hit");

    b.goto_ok(&format!("{url}/usage?group=model"));
    assert_eq!(
        b.eval_ok("document.querySelectorAll('figure.chart svg').length"),
        json!(2)
    );
    b.screenshot("7-usage");

    assert!(b.errors.is_empty(), "console errors: {:#?}", b.errors);
    drop(b);
    rt.block_on(server.stop());
}
