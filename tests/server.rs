//! `kcap serve`: protocol conformance, exactly-once storage, the gap rule, usage folds, restarts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use kcap::ids::{event_id, SessionId};
use kcap::server::{Limits, Server};
use serde_json::{json, Value};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn batch(sid: SessionId, lines: &[(u64, &str)], with_ids: bool) -> Value {
    let mut body = json!({
        "session_id": sid.dashless(),
        "agent_id": null,
        "lines": lines.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
        "line_numbers": lines.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "repository": null,
        "vendor": "copilot",
    });
    if with_ids {
        body["event_ids"] = json!(lines
            .iter()
            .map(|(n, l)| event_id(&sid, *n, l.as_bytes()))
            .collect::<Vec<_>>());
    }
    body
}

async fn post(url: &str, path: &str, body: &Value) -> (u16, Value) {
    let resp = http()
        .post(format!("{url}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(url: &str, path: &str) -> (u16, Value) {
    let resp = http().get(format!("{url}{path}")).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The status a request is answered with.
async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

async fn last_line(url: &str, sid: SessionId) -> i64 {
    get(url, &format!("/api/sessions/{sid}/last-line")).await.1["last_line_number"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_and_every_error() {
    let limits = Limits {
        max_body: 4 * 1024 * 1024,
        ..Limits::default()
    };
    let server = Server::start_with_limits(SocketAddr::from(([127, 0, 0, 1], 0)), None, limits)
        .await
        .unwrap();
    let url = server.url();
    let sid = SessionId::new_random();
    assert_eq!(
        get(&url, "/auth/config").await,
        (200, json!({"provider": "None"}))
    );
    assert_eq!(last_line(&url, sid).await, -1);
    assert_eq!(get(&url, "/api/sessions/not-a-uuid/last-line").await.0, 400);
    assert_eq!(get(&url, &format!("/api/sessions/{sid}")).await.0, 404);

    // Malformed, inconsistent or hostile batches are refused whole: nothing is stored.
    let raw = http()
        .post(format!("{url}/hooks/transcript"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    assert!(raw.text().await.unwrap().contains("malformed batch"));
    let mut uneven = batch(sid, &[(0, "{}"), (1, "{}")], true);
    uneven["line_numbers"] = json!([0]);
    assert_eq!(post(&url, "/hooks/transcript", &uneven).await.0, 400);
    let mut bad_sid = batch(sid, &[(0, "{}")], true);
    bad_sid["session_id"] = json!("../../etc");
    assert_eq!(post(&url, "/hooks/transcript", &bad_sid).await.0, 400);
    let huge = "x".repeat(5 * 1024 * 1024);
    let too_big = batch(sid, &[(0, huge.as_str())], false);
    assert_eq!(post(&url, "/hooks/transcript", &too_big).await.0, 413);
    assert!(server.session(sid).lines.is_empty());
    assert_eq!(last_line(&url, sid).await, -1);

    // The existing kcap CLI sends no event_ids: the server derives the same ones.
    let lines = [
        (0, r#"{"type":"session.start"}"#),
        (1, r#"{"type":"user.message"}"#),
    ];
    let (status, reply) = post(&url, "/hooks/transcript", &batch(sid, &lines, false)).await;
    assert_eq!(
        (status, reply),
        (200, json!({"new": 2, "duplicates": 0, "conflicts": 0}))
    );
    let (_, reply) = post(&url, "/hooks/transcript", &batch(sid, &lines, true)).await;
    assert_eq!(
        reply,
        json!({"new": 0, "duplicates": 2, "conflicts": 0}),
        "ids derived server-side must match the client's"
    );
    // Dashed and dashless ids name one session.
    assert_eq!(last_line(&url, sid).await, 1);
    assert_eq!(
        get(&url, &format!("/api/sessions/{}/last-line", sid.dashless()))
            .await
            .1["last_line_number"],
        1
    );

    // Lifecycle hooks.
    let start = json!({"hook_event_name": "sessionStart", "session_id": sid.dashless(), "source": "startup", "cwd": "/w"});
    assert_eq!(post(&url, "/hooks/session-start/copilot", &start).await.0, 200);
    let end =
        json!({"sessionId": sid.to_string(), "reason": "user_exit", "ended_at": "2026-11-25T10:00:00Z"});
    assert_eq!(post(&url, "/hooks/session-end/copilot", &end).await.0, 200);
    let note = json!({"session_id": sid.dashless(), "message": "hi", "notification_type": "idle"});
    assert_eq!(post(&url, "/hooks/notification", &note).await.0, 200);
    assert_eq!(
        post(&url, "/hooks/session-end/copilot", &json!({"reason": "x"}))
            .await
            .0,
        400
    );
    let raw = http()
        .post(format!("{url}/hooks/session-start/copilot"))
        .body("[");
    assert_eq!(status_of(raw).await, 400);

    let (status, detail) = get(&url, &format!("/api/sessions/{sid}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["lines_stored"], 2);
    assert_eq!(detail["last_line_number"], 1);
    assert_eq!(detail["started"]["detail"], "startup");
    assert_eq!(detail["ended"]["reason"], "user_exit");
    assert_eq!(detail["notifications"], 1);
    let (_, list) = get(&url, "/api/sessions").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    // A query string the API cannot read gets a JSON error like every other API error (axum's
    // own rejection is plain text).
    for path in [
        "/api/sessions?agent=a&agent=b".to_string(),
        "/api/sessions?limit=x".to_string(),
        "/api/search?q=a&q=b".to_string(),
        "/api/usage?group=day&group=model".to_string(),
        format!("/api/sessions/{sid}/lines?after=1&after=2"),
        format!("/api/sessions/{sid}/live?after=1&after=2"),
    ] {
        let r = http().get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let kind = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(kind.starts_with("application/json"), "{path}: {kind}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_guards_every_route_but_auth_config() {
    let server = Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), Some("s3cret".into()))
        .await
        .unwrap();
    let url = server.url();
    let sid = SessionId::new_random();
    assert_eq!(
        get(&url, "/auth/config").await,
        (200, json!({"provider": "Bearer"}))
    );
    assert_eq!(get(&url, &format!("/api/sessions/{sid}/last-line")).await.0, 401);
    assert_eq!(
        post(&url, "/hooks/transcript", &batch(sid, &[(0, "{}")], true))
            .await
            .0,
        401
    );
    let wrong = http().get(format!("{url}/api/sessions")).bearer_auth("nope");
    assert_eq!(status_of(wrong).await, 401);
    let ok = http()
        .post(format!("{url}/hooks/transcript"))
        .bearer_auth("s3cret")
        .json(&batch(sid, &[(0, "{}")], true));
    assert_eq!(status_of(ok).await, 200);
    assert!(server.session(sid).lines.contains_key(&0));
    // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` is the same as `Bearer`.
    for scheme in ["bearer", "BEARER"] {
        let lower = http()
            .get(format!("{url}/api/sessions/{sid}/last-line"))
            .header("authorization", format!("{scheme} s3cret"))
            .send()
            .await
            .unwrap();
        let status = lower.status().as_u16();
        assert_eq!(status, 200, "{scheme}: {}", lower.text().await.unwrap());
    }

    // A browser logged in to the web UI reads the protocol's JSON with its cookie (the token,
    // hex-encoded), but a cookie never authorizes a write.
    let cookie = format!("kcap_token={}", hex("s3cret"));
    for path in ["/api/sessions".to_string(), format!("/api/sessions/{sid}")] {
        let read = http().get(format!("{url}{path}")).header("cookie", &cookie);
        assert_eq!(status_of(read).await, 200, "{path}");
    }
    let write = http()
        .post(format!("{url}/hooks/transcript"))
        .header("cookie", &cookie)
        .json(&batch(sid, &[(1, "{}")], true));
    assert_eq!(status_of(write).await, 401);
    assert!(!server.session(sid).lines.contains_key(&1));
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_overlaps_and_concurrent_clients_store_each_line_once() {
    let server = server().await;
    let url = server.url();
    let sid = SessionId::new_random();
    let text: Vec<String> = (0..400).map(|n| format!(r#"{{"type":"x","n":{n}}}"#)).collect();
    let numbered: Vec<(u64, &str)> = text
        .iter()
        .enumerate()
        .map(|(n, l)| (n as u64, l.as_str()))
        .collect();

    let (_, first) = post(&url, "/hooks/transcript", &batch(sid, &numbered[..200], true)).await;
    assert_eq!(first, json!({"new": 200, "duplicates": 0, "conflicts": 0}));
    let (_, replay) = post(&url, "/hooks/transcript", &batch(sid, &numbered[..200], true)).await;
    assert_eq!(replay, json!({"new": 0, "duplicates": 200, "conflicts": 0}));
    let (_, overlap) = post(&url, "/hooks/transcript", &batch(sid, &numbered[150..250], true)).await;
    assert_eq!(overlap, json!({"new": 50, "duplicates": 50, "conflicts": 0}));

    // Eight clients send the same remaining lines at once.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (url, body) = (url.clone(), batch(sid, &numbered[250..], true));
        tasks.spawn(async move { post(&url, "/hooks/transcript", &body).await.1 });
    }
    let mut new = 0;
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        new += reply["new"].as_u64().unwrap();
        assert_eq!(
            reply["new"].as_u64().unwrap() + reply["duplicates"].as_u64().unwrap(),
            150
        );
    }
    assert_eq!(new, 150, "exactly one client stores each line");
    let held = server.session(sid);
    assert_eq!(held.lines.len(), 400);
    assert_eq!(held.conflicts, 0);
    assert_eq!(last_line(&url, sid).await, 399);

    // A different line under a used number is kept aside, not overwritten, and counted.
    let (_, changed) = post(
        &url,
        "/hooks/transcript",
        &batch(sid, &[(5, r#"{"type":"rewritten"}"#)], true),
    )
    .await;
    assert_eq!(changed, json!({"new": 0, "duplicates": 0, "conflicts": 1}));
    // A client that knows only `new` and `duplicates` (the published one) still reads the reply.
    #[derive(serde::Deserialize)]
    struct OldReply {
        new: u64,
        duplicates: u64,
    }
    let old: OldReply = serde_json::from_value(changed).unwrap();
    assert_eq!((old.new, old.duplicates), (0, 0));
    let held = server.session(sid);
    assert_eq!(held.conflicts, 1);
    assert_eq!(held.lines[&5].text, text[5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn last_line_stops_at_the_first_gap_and_blank_lines_close_it() {
    let server = server().await;
    let url = server.url();
    let sid = SessionId::new_random();
    post(
        &url,
        "/hooks/transcript",
        &batch(sid, &[(0, "{}"), (1, "{}"), (3, "{}"), (4, "{}")], true),
    )
    .await;
    assert_eq!(
        last_line(&url, sid).await,
        1,
        "line 2 is missing: nothing after it may count"
    );
    post(&url, "/hooks/transcript", &batch(sid, &[(2, "{}")], true)).await;
    assert_eq!(last_line(&url, sid).await, 4);
    // Line 5 was blank in the transcript: the client says so, and the gap closes.
    let mut body = batch(sid, &[(6, "{}")], true);
    assert_eq!(post(&url, "/hooks/transcript", &body).await.0, 200);
    assert_eq!(last_line(&url, sid).await, 4);
    body["blank_lines"] = json!([5]);
    post(&url, "/hooks/transcript", &body).await;
    assert_eq!(last_line(&url, sid).await, 6);
    assert_eq!(
        server.session(sid).lines.len(),
        6,
        "blank markers are not stored lines"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_folds_of_the_real_samples() {
    let Some(samples) = real_samples("usage_folds_of_the_real_samples") else {
        return;
    };
    let server = server().await;
    let url = server.url();
    let mut names: Vec<String> = std::fs::read_dir(samples)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    names.sort();
    let mut folded = serde_json::Map::new();
    for name in &names {
        let sid = SessionId::new_random();
        let content = String::from_utf8_lossy(&sample(name)).into_owned();
        let lines: Vec<(u64, &str)> = content
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| (n as u64, l))
            .collect();
        assert_eq!(
            post(&url, "/hooks/transcript", &batch(sid, &lines, true)).await.0,
            200
        );
        let (_, detail) = get(&url, &format!("/api/sessions/{sid}")).await;
        folded.insert(name.clone(), detail["usage"].clone());
    }
    let vibe = &folded[VIBE]["models"]["claude-sonnet-4.6"];
    // VibeCodingTracker's own numbers for this transcript (its .expected.json): input, cache and
    // reasoning agree; its output (1824) excludes the reasoning tokens that Copilot's
    // outputTokens (2848) includes: 1824 + 1024 = 2848.
    let expected: Value =
        serde_json::from_slice(&sample("Mai0313__VibeCodingTracker__copilot.expected.json")).unwrap();
    let theirs = &expected["records"][0]["conversationUsage"]["claude-sonnet-4-6"];
    assert_eq!(vibe["input_tokens"], theirs["input_tokens"].as_f64().unwrap());
    assert_eq!(
        vibe["cache_read_tokens"],
        theirs["cache_read_input_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        vibe["cache_write_tokens"],
        theirs["cache_creation_input_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        vibe["reasoning_tokens"],
        theirs["reasoning_output_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        vibe["output_tokens"].as_f64().unwrap(),
        theirs["output_tokens"].as_f64().unwrap() + theirs["reasoning_output_tokens"].as_f64().unwrap()
    );
    // The 1.0.2-era multi-shutdown fixtures have no usage checkpoints: segments are summed.
    let completed = &folded["microsasa__cli-tools__multi-shutdown-completed__events.jsonl"];
    assert_eq!(completed["premium_requests"], 15.0);
    assert_eq!(completed["readings"], json!(["segment"]));
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    let pretty = serde_json::to_string_pretty(&Value::Object(folded)).unwrap();
    settings.bind(|| insta::assert_snapshot!("usage_of_samples", pretty));
}

/// `kcap serve` on SQLite in the test's directory, or on `database` (a PostgreSQL URL).
fn serve_process(env: &Env, addr: SocketAddr, database: Option<&str>) -> tokio::process::Child {
    let mut cmd = env.kcap("http://unused");
    cmd.args(["serve", "--addr", &addr.to_string()]);
    match database {
        Some(url) => cmd.args(["--database", url]),
        None => cmd.arg("--data-dir").arg(env.dir.path().join("server")),
    };
    cmd.env_remove("KCAP_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_listening(url: &str) {
    for _ in 0..250 {
        if http().get(format!("{url}/auth/config")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("kcap serve did not come up at {url}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_ingest_keeps_every_acknowledged_line_and_sigterm_is_clean() {
    kill_9_scenario(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_on_postgres_keeps_every_acknowledged_line() {
    let Some(cluster) = common::postgres::Cluster::start("kill_9_on_postgres") else {
        return;
    };
    kill_9_scenario(Some(&cluster.database())).await;
}

async fn kill_9_scenario(database: Option<&str>) {
    let env = Env::new();
    let addr = free_port();
    let url = format!("http://{addr}");
    let sid = SessionId::new_random();
    let text: Vec<String> = (0..20_000)
        .map(|n| format!(r#"{{"type":"x","n":{n},"pad":"{}"}}"#, "p".repeat(200)))
        .collect();

    let mut server = serve_process(&env, addr, database);
    wait_listening(&url).await;
    // A client streams batches; the server is killed while it does, after 20 acknowledgements.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sender = {
        let (url, text, progress) = (url.clone(), text.clone(), progress.clone());
        tokio::spawn(async move {
            for chunk in 0..(text.len() / 100) {
                let lines: Vec<(u64, &str)> = (chunk * 100..chunk * 100 + 100)
                    .map(|n| (n as u64, text[n].as_str()))
                    .collect();
                match http()
                    .post(format!("{url}/hooks/transcript"))
                    .json(&batch(sid, &lines, true))
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        progress.store(chunk * 100 + 100, std::sync::atomic::Ordering::SeqCst)
                    }
                    _ => break,
                }
            }
            progress.load(std::sync::atomic::Ordering::SeqCst)
        })
    };
    wait_for("20 acknowledged batches", Duration::from_secs(30), || {
        progress.load(std::sync::atomic::Ordering::SeqCst) >= 2_000
    })
    .await;
    let reported = last_line(&url, sid).await;
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    let acked = sender.await.unwrap();
    assert!(
        acked > 0 && acked < text.len(),
        "kill landed outside the ingest ({acked} acked)"
    );

    let mut server = serve_process(&env, addr, database);
    wait_listening(&url).await;
    let (_, detail) = get(&url, &format!("/api/sessions/{sid}")).await;
    let stored = detail["lines_stored"].as_u64().unwrap() as usize;
    assert!(
        stored >= acked,
        "acknowledged {acked} lines, only {stored} survived kill -9"
    );
    assert!(detail["last_line_number"].as_i64().unwrap() + 1 >= acked as i64);
    assert!(
        last_line(&url, sid).await >= reported,
        "last-line said {reported} before kill -9"
    );

    // SIGTERM: exits cleanly, and what it acknowledged is there after a restart.
    let lines: Vec<(u64, &str)> = (0..100).map(|n| (n as u64 + 30_000, text[n].as_str())).collect();
    assert_eq!(
        post(&url, "/hooks/transcript", &batch(sid, &lines, true)).await.0,
        200
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.id().unwrap() as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _server = serve_process(&env, addr, database);
    wait_listening(&url).await;
    let (_, detail) = get(&url, &format!("/api/sessions/{sid}")).await;
    assert!(detail["lines_stored"].as_u64().unwrap() as usize >= stored + 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_session_commands_print_what_the_server_holds() {
    let (env, server) = (Env::new(), server().await);
    let content = transcript();
    let (sid, path) = env.session(&content);
    let out = env
        .kcap(&server.url())
        .args(["copilot-finalize", "--foreground", &sid.to_string()])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let list = env.kcap(&server.url()).arg("sessions").output().await.unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains(&sid.to_string()) && list.contains("186809"),
        "{list}"
    );
    let one = env
        .kcap(&server.url())
        .args(["session", &sid.dashless()])
        .output()
        .await
        .unwrap();
    let one = String::from_utf8_lossy(&one.stdout);
    for expected in ["55 stored", "last line 54", "claude-sonnet-4.6", "151738", "1024"] {
        assert!(one.contains(expected), "missing {expected:?} in\n{one}");
    }
    let json = env
        .kcap(&server.url())
        .args(["session", "--json", &sid.to_string()])
        .output()
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["usage"]["models"]["claude-sonnet-4.6"]["requests"], 6.0);
    let missing = env
        .kcap(&server.url())
        .args(["session", &SessionId::new_random().to_string()])
        .output()
        .await
        .unwrap();
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("404"));
}

async fn send(url: &str, path: &str, token: Option<&str>, body: &Value) -> u16 {
    let mut req = http().post(format!("{url}{path}")).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn named_tokens_own_their_sessions_and_the_listing_names_them() {
    let env = Env::new();
    let data = env.dir.path().join("server");
    let add = |name: &'static str| {
        let mut cmd = env.kcap("http://unused");
        cmd.args(["serve", "--data-dir"])
            .arg(&data)
            .args(["token", "add", name]);
        cmd
    };
    let alice = add("alice").output().await.unwrap();
    assert!(
        alice.status.success(),
        "{}",
        String::from_utf8_lossy(&alice.stderr)
    );
    let alice = String::from_utf8(alice.stdout).unwrap().trim().to_string();
    let bob = String::from_utf8(add("bob").output().await.unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(alice.starts_with("kcap_") && alice != bob);
    let again = add("alice").output().await.unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let db = std::fs::read(data.join("kcap.db")).unwrap();
    assert!(
        !db.windows(alice.len()).any(|w| w == alice.as_bytes()),
        "tokens are stored hashed"
    );

    let addr = free_port();
    let url = format!("http://{addr}");
    let _server = env
        .kcap("http://unused")
        .args(["serve", "--addr", &addr.to_string(), "--data-dir"])
        .arg(&data)
        .env("KCAP_SERVER_TOKEN", "root-secret")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(&url).await;
    assert_eq!(get(&url, "/auth/config").await.1, json!({"provider": "Bearer"}));
    let sid = SessionId::new_random();
    let first = batch(sid, &[(0, "{}"), (1, "{}")], true);
    assert_eq!(send(&url, "/hooks/transcript", None, &first).await, 401);
    assert_eq!(
        send(&url, "/hooks/transcript", Some("kcap_nope"), &first).await,
        401
    );
    assert_eq!(send(&url, "/hooks/transcript", Some(&alice), &first).await, 200);
    let next = batch(sid, &[(2, "{}")], true);
    assert_eq!(send(&url, "/hooks/transcript", Some(&bob), &next).await, 403);
    let end = json!({"session_id": sid.dashless(), "reason": "x"});
    assert_eq!(
        send(&url, "/hooks/session-end/copilot", Some(&bob), &end).await,
        403
    );
    assert_eq!(
        send(&url, "/hooks/transcript", Some("root-secret"), &next).await,
        200
    );
    let start = json!({"session_id": sid.dashless(), "cwd": "/home/a/proj", "source": "new"});
    assert_eq!(
        send(&url, "/hooks/session-start/copilot", Some(&alice), &start).await,
        200
    );
    // Bob's own session is his.
    let other = SessionId::new_random();
    assert_eq!(
        send(
            &url,
            "/hooks/transcript",
            Some(&bob),
            &batch(other, &[(0, "{}")], true)
        )
        .await,
        200
    );

    // Any valid token may read; the listing names owner, agent, cwd, times.
    let list: Value = http()
        .get(format!("{url}/api/sessions"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let mine = list
        .iter()
        .find(|s| s["session_id"] == json!(sid.to_string()))
        .unwrap();
    assert_eq!(mine["owner"], "alice");
    assert_eq!(mine["agent"], "copilot");
    assert_eq!(mine["cwd"], "/home/a/proj");
    assert_eq!(mine["repository"], Value::Null);
    assert_eq!(mine["last_line_number"], 2);
    assert!(mine["started_at"].as_u64().is_some() && mine["ended_at"].is_null());
    let probe = http()
        .get(format!("{url}/api/sessions?limit=1"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status().as_u16(), 200);
    assert_eq!(probe.json::<Value>().await.unwrap().as_array().unwrap().len(), 1);

    // `token list` names every token and when it was made, never a secret.
    let token = |args: &[&str]| {
        let mut cmd = env.kcap("http://unused");
        cmd.args(["serve", "--data-dir"])
            .arg(&data)
            .arg("token")
            .args(args);
        cmd
    };
    let listed = token(&["list"]).output().await.unwrap();
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains("alice") && listed.contains("bob"), "{listed}");
    assert!(!listed.contains(&alice) && !listed.contains(&bob) && !listed.contains("kcap_"));
    // Revoking takes effect on the running server at once: 401, for writes and reads alike.
    let revoke = token(&["revoke", "alice"]).output().await.unwrap();
    assert!(
        revoke.status.success(),
        "{}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    let more = batch(sid, &[(3, "{}")], true);
    assert_eq!(send(&url, "/hooks/transcript", Some(&alice), &more).await, 401);
    let read = http().get(format!("{url}/api/sessions")).bearer_auth(&alice);
    assert_eq!(status_of(read).await, 401);
    assert_eq!(
        send(
            &url,
            "/hooks/transcript",
            Some(&bob),
            &batch(other, &[(1, "{}")], true)
        )
        .await,
        200,
        "other tokens keep working"
    );
    let listed = String::from_utf8(token(&["list"]).output().await.unwrap().stdout).unwrap();
    let alice_row = listed.lines().find(|l| l.starts_with("alice")).unwrap();
    assert!(
        !alice_row.trim_end().ends_with('-'),
        "revoked time shown: {alice_row}"
    );
    let bob_row = listed.lines().find(|l| l.starts_with("bob")).unwrap();
    assert!(bob_row.trim_end().ends_with('-'), "{bob_row}");
    let unknown = token(&["revoke", "carol"]).output().await.unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no token is named"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_server_refuses_host_names_it_does_not_answer_dns_rebinding() {
    let options = kcap::server::Options {
        allowed_hosts: vec!["kcap.test".into()],
        ..kcap::server::Options::default()
    };
    let server = Server::start_with(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        options,
        kcap::server::Storage::temporary().unwrap(),
    )
    .await
    .unwrap();
    let (url, port) = (server.url(), server.addr().port());
    let with_host = |path: &str, host: String| {
        let request = http().get(format!("{url}{path}")).header("host", host);
        async move { request.send().await.unwrap() }
    };
    // A rebinding page's requests carry its own name: refused on the API and the pages alike,
    // although this server has no token.
    for path in ["/api/sessions", "/", "/auth/config"] {
        let refused = with_host(path, format!("attacker.example:{port}")).await;
        assert_eq!(refused.status().as_u16(), 403, "{path}");
        let body: Value = refused.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("--allowed-host"));
    }
    let sid = SessionId::new_random();
    let write = http()
        .post(format!("{url}/hooks/transcript"))
        .header("host", "attacker.example")
        .json(&batch(sid, &[(0, "{}")], true));
    assert_eq!(status_of(write).await, 403);
    assert!(server.session(sid).lines.is_empty());
    // Loopback names, IP literals and the allowed names are answered.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "KCAP.test:8443".to_string(),
    ] {
        let ok = with_host("/api/sessions", host.clone()).await;
        assert_eq!(ok.status().as_u16(), 200, "{host}");
    }
}

/// Bound beyond loopback with no `--allowed-host`, a server cannot know the names it is reached
/// by; with no token it answers only IP literals and loopback names (a rebinding page in a
/// colleague's browser would otherwise read and write it), with a token every name (the page
/// has no token to send).
#[tokio::test(flavor = "multi_thread")]
async fn a_tokenless_server_bound_beyond_loopback_refuses_names_a_token_server_answers() {
    let bound_everywhere = SocketAddr::from(([0, 0, 0, 0], 0));
    for token in [None, Some("s3cret-admin".to_string())] {
        let options = kcap::server::Options {
            token: token.clone(),
            ..kcap::server::Options::default()
        };
        let server = Server::start_with(
            bound_everywhere,
            options,
            kcap::server::Storage::temporary().unwrap(),
        )
        .await
        .unwrap();
        let url = format!("http://127.0.0.1:{}", server.addr().port());
        let ask = |host: &str| {
            let mut request = http().get(format!("{url}/api/sessions")).header("host", host);
            if let Some(t) = &token {
                request = request.bearer_auth(t);
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(ask("127.0.0.1").await, 200, "token {token:?}");
        assert_eq!(ask("10.20.30.40:5108").await, 200, "token {token:?}");
        let by_name = ask("kcap.team.example").await;
        match token {
            None => assert_eq!(by_name, 403, "a tokenless server answered a name"),
            Some(_) => assert_eq!(by_name, 200, "a token server refused its own name"),
        }
    }
}
