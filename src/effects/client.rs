//! HTTP client for the ingest protocol: classifies every failure as retryable or not, so the
//! machine can decide between backing off and parking.

use std::time::Duration;

use serde::Serialize;

use crate::effects::lines::Batch;
use crate::ids::{event_id, SessionId};
use crate::protocol::{IngestReply, LastLine, CLI_VERSION_HEADER};
use crate::redact;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Transport errors, 5xx, 408, 429: worth another try after a pause.
    Retryable(String),
    /// 413: the batch must be split.
    TooLarge,
    /// Any other refusal: retrying the same request cannot succeed.
    Refused(String),
}

impl SendError {
    pub fn message(&self) -> String {
        match self {
            SendError::Retryable(m) | SendError::Refused(m) => m.clone(),
            SendError::TooLarge => "HTTP 413: batch larger than the server accepts".into(),
        }
    }
}

/// The one line of a one-line batch, enough to stand in for it if the server refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoneLine {
    pub number: u64,
    pub id: uuid::Uuid,
    pub bytes: usize,
}

impl LoneLine {
    pub fn of(session: SessionId, batch: &Batch) -> Option<LoneLine> {
        match batch.lines.as_slice() {
            [line] => Some(LoneLine {
                number: line.number,
                id: event_id(&session, line.number, &line.bytes),
                bytes: line.bytes.len(),
            }),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    session_id: &'a str,
    agent_id: Option<&'a str>,
    lines: Vec<std::borrow::Cow<'a, str>>,
    line_numbers: Vec<u64>,
    event_ids: Vec<uuid::Uuid>,
    repository: Option<&'a str>,
    vendor: &'a str,
    #[serde(skip_serializing_if = "<[u64]>::is_empty")]
    blank_lines: &'a [u64],
}

impl Client {
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .header(CLI_VERSION_HEADER, env!("CARGO_PKG_VERSION"));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    /// The server's `last-line` for the session: `None` when it holds nothing.
    pub async fn last_line(&self, session: SessionId) -> Result<Option<u64>, SendError> {
        let path = format!("/api/sessions/{}/last-line", session.dashless());
        let resp = self
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .map_err(transport)?;
        let resp = check(resp).await?;
        let body: LastLine = resp
            .json()
            .await
            .map_err(|e| SendError::Retryable(format!("unreadable last-line reply: {e}")))?;
        Ok(u64::try_from(body.last_line_number).ok())
    }

    /// Encodes one batch as a request body: every line passes through redaction, ids come from
    /// the raw bytes. The caller can free the batch's lines before the request is in flight.
    pub fn encode_batch(session: SessionId, batch: &Batch) -> Result<Vec<u8>, SendError> {
        let sid = session.dashless();
        let body = Body {
            session_id: &sid,
            agent_id: None,
            lines: batch.lines.iter().map(|l| redact::line(utf8(&l.bytes))).collect(),
            line_numbers: batch.lines.iter().map(|l| l.number).collect(),
            event_ids: batch
                .lines
                .iter()
                .map(|l| event_id(&session, l.number, &l.bytes))
                .collect(),
            repository: None,
            vendor: crate::agent::default().name(),
            blank_lines: &batch.blanks,
        };
        // Lines are JSON themselves, so escaping adds roughly one byte in ten; sizing the buffer up
        // front avoids the doubling copies that would otherwise set the peak memory.
        let estimate = batch.bytes() + batch.bytes() / 4 + batch.lines.len() * 64 + 256;
        let mut json = Vec::with_capacity(estimate);
        serde_json::to_writer(&mut json, &body)
            .map_err(|e| SendError::Refused(format!("cannot encode batch: {e}")))?;
        Ok(json)
    }

    /// Sends a batch made by [`Client::encode_batch`]. A 413 for a batch of one line (`lone`)
    /// is answered by sending that line's stand-in: a `kcap.line_omitted` record under the line's
    /// own number and id, so the omission is visible on the server, its `last-line` does not stop
    /// at a gap, and the lines after it (the shutdown's token totals among them) still arrive.
    /// Every path builds the same stand-in, so a replay is dropped like any other. A 413 for
    /// several lines is returned, for the caller to split the batch.
    pub async fn send_batch(
        &self,
        session: SessionId,
        json: Vec<u8>,
        lone: Option<LoneLine>,
    ) -> Result<Option<IngestReply>, SendError> {
        match (self.send_counted(json).await, lone) {
            (Err(SendError::TooLarge), Some(line)) => {
                tracing::warn!(
                    line = line.number,
                    bytes = line.bytes,
                    "line alone is larger than the server accepts; skipped, a kcap.line_omitted stand-in goes in its place"
                );
                match self.send_counted(Self::encode_stand_in(session, &line)).await {
                    Err(SendError::TooLarge) => Err(SendError::Refused(format!(
                        "line {} ({} bytes) and even its stand-in are larger than the server accepts",
                        line.number, line.bytes
                    ))),
                    other => other,
                }
            }
            (result, _) => result,
        }
    }

    fn encode_stand_in(session: SessionId, line: &LoneLine) -> Vec<u8> {
        let sid = session.dashless();
        let text = serde_json::json!({
            "type": "kcap.line_omitted",
            "data": {
                "lineNumber": line.number,
                "bytes": line.bytes,
                "reason": "the line alone is larger than the ingest server accepts (HTTP 413)",
            },
        })
        .to_string();
        let body = Body {
            session_id: &sid,
            agent_id: None,
            lines: vec![text.into()],
            line_numbers: vec![line.number],
            event_ids: vec![line.id],
            repository: None,
            vendor: crate::agent::default().name(),
            blank_lines: &[],
        };
        serde_json::to_vec(&body).expect("a stand-in batch always encodes")
    }

    /// POSTs a JSON document (lifecycle hooks, notifications), redacted like every line: a
    /// notification's message or a cwd can hold secrets too.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<(), SendError> {
        let redacted = wire_json(body);
        let resp = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(redacted)
            .send()
            .await
            .map_err(transport)?;
        check(resp).await.map(drop)
    }

    /// Sends a transcript body; returns the server's count of new and duplicate lines when it
    /// gives one (servers other than kcap's may not).
    async fn send_counted(&self, json: Vec<u8>) -> Result<Option<IngestReply>, SendError> {
        let resp = self
            .request(reqwest::Method::POST, "/hooks/transcript")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json)
            .send()
            .await
            .map_err(transport)?;
        let resp = check(resp).await?;
        Ok(resp.json::<IngestReply>().await.ok())
    }
}

/// Transcript lines are UTF-8 almost always: validate with the fast check, repair only on failure.
fn utf8(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

fn transport(e: reqwest::Error) -> SendError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    SendError::Retryable(format!("{kind}: {e}"))
}

async fn check(resp: reqwest::Response) -> Result<reqwest::Response, SendError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let detail: String = resp.text().await.unwrap_or_default().chars().take(200).collect();
    let message = format!("HTTP {}: {}", status.as_u16(), detail.trim());
    Err(match status.as_u16() {
        413 => SendError::TooLarge,
        408 | 429 => SendError::Retryable(message),
        s if s >= 500 => SendError::Retryable(message),
        _ => SendError::Refused(message),
    })
}

/// A JSON document as it is sent: redacted like every line, except the `session_id` kcap put
/// there itself. That one is a parsed UUID the server files the document under, and written
/// dashless it reads as a random session token to the redactor: the server then refused every
/// lifecycle notice with 400 and dropped it for good.
fn wire_json(body: &serde_json::Value) -> String {
    let text = body.to_string();
    let std::borrow::Cow::Owned(redacted) = redact::line(std::borrow::Cow::Borrowed(&text)) else {
        return text;
    };
    let own_id = body
        .get("session_id")
        .and_then(serde_json::Value::as_str)
        .filter(|id| id.parse::<SessionId>().is_ok());
    match (own_id, serde_json::from_str::<serde_json::Value>(&redacted)) {
        (Some(id), Ok(mut sent)) if sent.get("session_id").and_then(|v| v.as_str()) != Some(id) => {
            sent["session_id"] = id.into();
            sent.to_string()
        }
        _ => redacted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcaps_own_session_id_survives_redaction_and_the_rest_is_redacted() {
        for _ in 0..200 {
            let id = SessionId::new_random();
            let body = serde_json::json!({
                "session_id": id.dashless(),
                "cwd": "/work/p",
                "note": "export GITHUB_TOKEN=ghp_R8x2mQ9vL4kT7wZ1pN6sB3cF5hJ0dY2aE8uK",
            });
            let sent: serde_json::Value = serde_json::from_str(&wire_json(&body)).unwrap();
            assert_eq!(sent["session_id"], id.dashless(), "{sent}");
            assert!(!sent["note"].as_str().unwrap().contains("ghp_R8x2"), "{sent}");
            assert_eq!(sent["cwd"], "/work/p");
        }
        // A value there that is no session id is redacted like any other.
        let body = serde_json::json!({ "session_id": "Xk9mQ2zP7w9rT4vBq8Lr3NfYc6Hd" });
        assert_ne!(wire_json(&body), body.to_string());
    }
}
