//! `kcap sessions` and `kcap session <id>`: what the server holds, read with the configured URL
//! and token.

use std::time::Duration;

use serde_json::Value;

use crate::cli::options::DeliveryOpts;
use crate::cli::status::iso_time;
use crate::ids::SessionId;
use crate::protocol::CLI_VERSION_HEADER;
use crate::server::SessionSummary;

async fn get(opts: &DeliveryOpts, path: &str) -> Result<reqwest::Response, String> {
    let url = opts.url();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client
        .get(format!("{}{path}", url.trim_end_matches('/')))
        .header(CLI_VERSION_HEADER, env!("CARGO_PKG_VERSION"));
    if let Some(token) = opts.token() {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| {
        format!(
            "cannot reach {url}: {} (start `kcap serve`, or `kcap login --url <URL>`; `kcap doctor` checks)",
            crate::cli::login::root_cause(&e)
        )
    })?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(format!(
            "{url} refused the request (HTTP 401): token missing or wrong: run `kcap login --url {url} --token <TOKEN>`"
        ));
    }
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("{url}{path}: HTTP {status}: {}", body.trim()));
    }
    Ok(resp)
}

/// A text field, or "-" when absent, null or empty.
fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "-".into(),
    }
}

/// A time field given as epoch milliseconds or as text.
fn time(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_u64().map(|ms| iso_time(ms)[..16].replace('T', " ")),
        Value::String(s) if !s.is_empty() => Some(s.chars().take(16).collect::<String>().replace('T', " ")),
        _ => None,
    }
}

/// Epoch milliseconds for ordering: `started_at`, else `first_seen`, else `last_seen`.
fn start_key(v: &Value) -> (String, u64) {
    let ms = |k: &str| v.get(k).and_then(Value::as_u64);
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    match (text("started_at"), ms("started_at")) {
        (Some(t), _) => (t, 0),
        (None, Some(ms)) => (iso_time(ms), ms),
        (None, None) => {
            let ms = ms("first_seen").or(ms("last_seen")).unwrap_or(0);
            (iso_time(ms), ms)
        }
    }
}

/// Tokens summed over the models of `usage`, as a whole number ("-0" cannot appear).
fn tokens(v: &Value, field: &str) -> u64 {
    v.pointer("/usage/models")
        .and_then(Value::as_object)
        .map(|models| {
            models
                .values()
                .filter_map(|m| m.get(field).and_then(Value::as_f64))
                .filter(|t| t.is_finite() && *t > 0.0)
                .sum::<f64>()
                .round() as u64
        })
        .unwrap_or(0)
}

/// Truncates `s` to `width` characters, marking the cut with "…" at the start (paths keep
/// their most telling end).
fn fit(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    let tail: String = s.chars().skip(n - (width - 1)).collect();
    format!("…{tail}")
}

/// The server's sessions, newest first; at most `limit` unless `None`.
pub async fn sessions(opts: &DeliveryOpts, limit: Option<usize>, json: bool) -> Result<String, String> {
    let url = opts.url();
    let resp = get(opts, "/api/sessions").await?;
    let mut list: Vec<Value> = resp
        .json()
        .await
        .map_err(|e| format!("unreadable reply from {url}: {e}"))?;
    let total = list.len();
    list.sort_by_key(|v| std::cmp::Reverse(start_key(v)));
    if let Some(limit) = limit {
        list.truncate(limit);
    }
    if json {
        return serde_json::to_string_pretty(&list).map_err(|e| e.to_string());
    }
    if total == 0 {
        return Ok(format!("{url} holds no sessions"));
    }
    let row = |cols: [&str; 9]| {
        format!(
            "{:<36}  {:<16}  {:<8}  {:<12}  {:<32}  {:>6}  {:<10}  {:>10}  {:>10}\n",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], cols[8]
        )
    };
    let mut out = row([
        "SESSION",
        "STARTED",
        "AGENT",
        "MACHINE",
        "REPOSITORY / CWD",
        "LINES",
        "ENDED",
        "INPUT TOK",
        "OUTPUT TOK",
    ]);
    for s in &list {
        let started = s
            .get("started_at")
            .and_then(time)
            .or_else(|| s.get("first_seen").and_then(time))
            .unwrap_or_else(|| "-".into());
        let place = match text(s, "repository").as_str() {
            "-" => text(s, "cwd"),
            repo => repo.to_string(),
        };
        let ended = s
            .pointer("/ended/reason")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| s.get("ended_at").and_then(time).map(|_| "ended".to_string()))
            .unwrap_or_else(|| "-".into());
        out.push_str(&row([
            &text(s, "session_id"),
            &started,
            &fit(&text(s, "agent"), 8),
            &fit(&text(s, "owner"), 12),
            &fit(&place, 32),
            &text(s, "lines_stored"),
            &fit(&ended, 10),
            &tokens(s, "input_tokens").to_string(),
            &tokens(s, "output_tokens").to_string(),
        ]));
    }
    if list.len() < total {
        out.push_str(&format!(
            "({} of {total} sessions, newest first; --all shows every one)\n",
            list.len()
        ));
    }
    Ok(out)
}

/// One session: lines, lifecycle, usage per model.
pub async fn session(opts: &DeliveryOpts, id: &str, json: bool) -> Result<String, String> {
    let sid: SessionId = id
        .parse()
        .map_err(|e: crate::ids::InvalidSessionId| e.to_string())?;
    let resp = get(opts, &format!("/api/sessions/{}", sid.dashless())).await?;
    let raw: Value = resp.json().await.map_err(|e| format!("unreadable reply: {e}"))?;
    if json {
        return serde_json::to_string_pretty(&raw).map_err(|e| e.to_string());
    }
    let s: SessionSummary =
        serde_json::from_value(raw.clone()).map_err(|e| format!("unreadable reply: {e}"))?;
    let mut out = String::new();
    out.push_str(&format!("session      {}\n", s.session_id));
    for (label, key) in [
        ("agent", "agent"),
        ("machine", "owner"),
        ("repository", "repository"),
        ("cwd", "cwd"),
    ] {
        let value = text(&raw, key);
        if value != "-" {
            out.push_str(&format!("{label:<12} {value}\n"));
        }
    }
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
    out.push_str(&crate::cli::serve::usage_table(u));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sums_are_whole_and_never_negative_zero() {
        let v = serde_json::json!({"usage": {"models": {}}});
        assert_eq!(tokens(&v, "input_tokens").to_string(), "0");
        let v = serde_json::json!({"usage": {"models": {"a": {"input_tokens": 1.0}, "b": {"input_tokens": 2.4}}}});
        assert_eq!(tokens(&v, "input_tokens"), 3);
    }

    #[test]
    fn long_paths_keep_their_end() {
        assert_eq!(fit("/home/dev/project", 32), "/home/dev/project");
        assert_eq!(fit("/a/very/long/path/to/project", 10), "…o/project");
    }
}
