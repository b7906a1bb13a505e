//! `kcap serve`, and the client views of it: `kcap sessions`, `kcap session <id>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::status::iso_time;
use crate::ids::SessionId;
use crate::protocol::CLI_VERSION_HEADER;
use crate::server::{Server, SessionSummary, Storage};

/// Runs the server until SIGINT or SIGTERM: in-flight requests finish, the store is flushed.
pub async fn serve(addr: SocketAddr, data_dir: PathBuf, token: Option<String>) -> Result<(), String> {
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let storage = Storage::open(&data_dir.join("ingest")).map_err(|e| {
        format!(
            "cannot open the store in {}: {e} (is another kcap serve using it?)",
            data_dir.display()
        )
    })?;
    let server = Server::start_with(addr, token.clone(), storage)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!(
        "kcap serve: listening on {} (store {}, {})",
        server.url(),
        data_dir.display(),
        if token.is_some() {
            "bearer token required"
        } else {
            "no auth"
        }
    );
    wait_for_signal().await;
    println!("kcap serve: stopping; finishing in-flight requests and flushing the store");
    server.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn get(url: &str, path: &str) -> Result<reqwest::Response, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client
        .get(format!("{}{path}", url.trim_end_matches('/')))
        .header(CLI_VERSION_HEADER, env!("CARGO_PKG_VERSION"));
    if let Some(token) = std::env::var("KCAP_TOKEN").ok().filter(|t| !t.is_empty()) {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| format!("cannot reach {url}: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("{url}{path}: HTTP {status}: {}", body.trim()));
    }
    Ok(resp)
}

pub async fn sessions(url: &str, json: bool) -> Result<String, String> {
    let resp = get(url, "/api/sessions").await?;
    let list: Vec<SessionSummary> = resp.json().await.map_err(|e| format!("unreadable reply: {e}"))?;
    if json {
        return serde_json::to_string_pretty(&list).map_err(|e| e.to_string());
    }
    if list.is_empty() {
        return Ok(format!("{url} holds no sessions"));
    }
    let mut out = format!(
        "{:<36}  {:>7}  {:>9}  {:<24}  {:<10}  {:>12}  {:>10}\n",
        "SESSION", "LINES", "LAST LINE", "LAST SEEN", "ENDED", "INPUT TOK", "OUTPUT TOK"
    );
    for s in &list {
        let input: f64 = s.usage.models.values().map(|m| m.input_tokens).sum();
        let output: f64 = s.usage.models.values().map(|m| m.output_tokens).sum();
        out.push_str(&format!(
            "{:<36}  {:>7}  {:>9}  {:<24}  {:<10}  {:>12}  {:>10}\n",
            s.session_id.to_string(),
            s.lines_stored,
            s.last_line_number,
            iso_time(s.last_seen),
            s.ended
                .as_ref()
                .and_then(|e| e.reason.clone())
                .unwrap_or_else(|| "-".into()),
            input,
            output
        ));
    }
    Ok(out)
}

pub async fn session(url: &str, id: &str, json: bool) -> Result<String, String> {
    let sid: SessionId = id
        .parse()
        .map_err(|e: crate::ids::InvalidSessionId| e.to_string())?;
    let resp = get(url, &format!("/api/sessions/{}", sid.dashless())).await?;
    let s: SessionSummary = resp.json().await.map_err(|e| format!("unreadable reply: {e}"))?;
    if json {
        return serde_json::to_string_pretty(&s).map_err(|e| e.to_string());
    }
    let mut out = String::new();
    out.push_str(&format!("session      {}\n", s.session_id));
    out.push_str(&format!(
        "lines        {} stored, last line {} (nothing missing below it)\n",
        s.lines_stored, s.last_line_number
    ));
    out.push_str(&format!(
        "replays      {} duplicates dropped, {} conflicting lines kept aside\n",
        s.duplicates, s.conflicts
    ));
    out.push_str(&format!(
        "seen         {} .. {}\n",
        iso_time(s.first_seen),
        iso_time(s.last_seen)
    ));
    let lifecycle = |l: &Option<crate::server::storage::Lifecycle>| match l {
        Some(l) => format!(
            "{} ({})",
            iso_time(l.received_at),
            l.reason.clone().or(l.detail.clone()).unwrap_or_default()
        ),
        None => "-".into(),
    };
    out.push_str(&format!("started      {}\n", lifecycle(&s.started)));
    out.push_str(&format!("ended        {}\n", lifecycle(&s.ended)));
    let u = &s.usage;
    out.push_str(&format!(
        "usage        {} shutdown line(s){}; premium requests {}, API time {:.1} s, code +{} -{} in {} files\n\n",
        u.shutdowns,
        if u.readings.is_empty() { String::new() } else { format!(" read as {}", u.readings.join(", ")) },
        u.premium_requests,
        u.api_duration_ms / 1000.0,
        u.lines_added,
        u.lines_removed,
        u.files_modified.len()
    ));
    out.push_str(&usage_table(u));
    Ok(out)
}

/// Per-model token totals as a table.
pub fn usage_table(u: &crate::server::usage::Usage) -> String {
    let mut out = format!(
        "{:<22} {:>8} {:>8} {:>12} {:>10} {:>12} {:>12} {:>10}\n",
        "MODEL", "REQUESTS", "PREMIUM", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "REASONING"
    );
    for (model, m) in &u.models {
        out.push_str(&format!(
            "{:<22} {:>8} {:>8} {:>12} {:>10} {:>12} {:>12} {:>10}\n",
            model,
            m.requests,
            m.premium_cost,
            m.input_tokens,
            m.output_tokens,
            m.cache_read_tokens,
            m.cache_write_tokens,
            m.reasoning_tokens
        ));
    }
    out
}
