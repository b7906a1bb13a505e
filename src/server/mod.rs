//! The embedded ingest server: the kcap protocol (DESIGN.md §5) storing in sled, each line once
//! by event id. `kcap serve` runs it on disk; the demo, the tests and the benchmark run it on a
//! temporary store. Scripted faults let tests play a server that is slow, failing or hanging.

pub mod storage;
pub mod usage;
pub mod web;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::HttpBody;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::oneshot;

use crate::config::now_ms;
use crate::ids::{event_id, SessionId};
use crate::protocol::{AuthConfig, LastLine, TranscriptBatch};
use storage::{Lifecycle, LifecycleKind};
pub use storage::{SessionLines, SessionSummary, Storage, StoredLine};

/// Requests larger than this get 413 (the client then splits its batch).
pub const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Over-limit bodies up to this size are read and thrown away before the 413 goes out; larger
/// ones get it at once.
const DISCARD_LIMIT: u64 = 1024 * 1024 * 1024;

/// A scripted misbehaviour, consumed by the next protocol request (not `/auth/config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Status(u16),
    Delay(Duration),
    /// Never answers (the client's timeout must fire).
    Hang,
}

struct Shared {
    storage: Storage,
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<u64>,
    first_request_at: Mutex<Option<crate::machine::Millis>>,
    token: Option<String>,
}

/// A running server; dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Serves on `addr` (port 0 picks a free one) with a temporary store, until stopped.
    pub async fn start(addr: SocketAddr, token: Option<String>) -> std::io::Result<Server> {
        let storage = Storage::temporary().map_err(std::io::Error::other)?;
        Self::start_with(addr, token, storage).await
    }

    pub async fn start_with(
        addr: SocketAddr,
        token: Option<String>,
        storage: Storage,
    ) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            storage,
            faults: Mutex::new(VecDeque::new()),
            requests: Mutex::new(0),
            first_request_at: Mutex::new(None),
            token,
        });
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "ingest server stopped");
            }
        });
        Ok(Server {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn storage(&self) -> &Storage {
        &self.shared.storage
    }

    /// Queues faults for the next requests, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.shared.faults).extend(faults);
    }

    pub fn pending_faults(&self) -> usize {
        lock(&self.shared.faults).len()
    }

    /// Everything stored for `session` (an empty view if the store cannot be read).
    pub fn session(&self, session: SessionId) -> SessionLines {
        self.shared.storage.lines(session).unwrap_or_default()
    }

    pub fn sessions(&self) -> Vec<SessionId> {
        self.shared.storage.session_ids()
    }

    /// Protocol requests answered so far (faulted ones included).
    pub fn requests(&self) -> u64 {
        *lock(&self.shared.requests)
    }

    /// When the first protocol request arrived (epoch ms), if any did.
    pub fn first_request_at(&self) -> Option<crate::machine::Millis> {
        *lock(&self.shared.first_request_at)
    }

    /// Stops accepting, lets in-flight requests finish, flushes the store.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Err(e) = self.shared.storage.flush().await {
            tracing::error!(error = %e, "cannot flush the store on shutdown");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // These hold a fault queue and a counter: a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn router(shared: Arc<Shared>) -> Router {
    let protocol = Router::new()
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{sid}", get(one_session))
        .route("/api/sessions/{sid}/last-line", get(last_line))
        .route("/hooks/transcript", post(transcript))
        .route("/hooks/session-start/{vendor}", post(session_start))
        .route("/hooks/session-end/{vendor}", post(session_end))
        .route("/hooks/notification", post(notification))
        .layer(middleware::from_fn(refuse_oversize))
        .layer(middleware::from_fn_with_state(shared.clone(), faults_and_auth));
    Router::new()
        .route("/auth/config", get(auth_config))
        .merge(protocol)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

async fn faults_and_auth(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    *lock(&shared.requests) += 1;
    lock(&shared.first_request_at).get_or_insert_with(now_ms);
    if let Some(token) = &shared.token {
        let expected = format!("Bearer {token}");
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    let fault = lock(&shared.faults).pop_front();
    match fault {
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(status, "injected fault");
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Hang) => std::future::pending::<()>().await,
        None => {}
    }
    next.run(request).await
}

/// A 413 sent before the body is read makes the server close the connection while the client is
/// still sending: the client then sees a reset, which it must treat as retryable, instead of the
/// 413 that tells it to split its batch or send a stand-in. So the body is read to its end first.
async fn refuse_oversize(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(declared) = declared.filter(|n| *n > BODY_LIMIT as u64) else {
        return next.run(request).await;
    };
    if declared <= DISCARD_LIMIT {
        let mut body = request.into_body();
        while let Some(Ok(_)) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
        }
    }
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body of {declared} bytes is over the {BODY_LIMIT}-byte limit"),
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn storage_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "storage error");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage error; nothing acknowledged",
    )
}

/// A refused request, turned into its response at the edge.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

fn parse_session(raw: &str) -> Result<SessionId, ApiError> {
    raw.parse::<SessionId>()
        .map_err(|_| bad_request("session id must be a UUID (dashed or dashless)"))
}

async fn auth_config(State(shared): State<Arc<Shared>>) -> Json<AuthConfig> {
    Json(AuthConfig {
        provider: if shared.token.is_some() { "Bearer" } else { "None" }.into(),
    })
}

async fn last_line(State(shared): State<Arc<Shared>>, Path(sid): Path<String>) -> Response {
    let session = match parse_session(&sid) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match shared.storage.last_line(session) {
        Ok(last) => Json(LastLine {
            last_line_number: last,
        })
        .into_response(),
        Err(e) => storage_error(e),
    }
}

async fn list_sessions(State(shared): State<Arc<Shared>>) -> Response {
    let storage = shared.storage.clone();
    match tokio::task::spawn_blocking(move || storage.summaries()).await {
        Ok(Ok(list)) => Json(list).into_response(),
        Ok(Err(e)) => storage_error(e),
        Err(e) => storage_error(e),
    }
}

async fn one_session(State(shared): State<Arc<Shared>>, Path(sid): Path<String>) -> Response {
    let session = match parse_session(&sid) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    match shared.storage.summary(session) {
        Ok(Some(summary)) => Json(summary).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such session"),
        Err(e) => storage_error(e),
    }
}

async fn transcript(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let batch: TranscriptBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("malformed batch: {e}")),
    };
    drop(body);
    let session = match parse_session(&batch.session_id) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if batch.lines.len() != batch.line_numbers.len()
        || batch
            .event_ids
            .as_ref()
            .is_some_and(|ids| ids.len() != batch.lines.len())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "lines, line_numbers and event_ids differ in length",
        );
    }
    let TranscriptBatch {
        lines,
        line_numbers,
        event_ids,
        blank_lines,
        ..
    } = batch;
    let ids: Vec<uuid::Uuid> = match event_ids {
        Some(ids) => ids,
        // Clients without kcap's extension: the same function, over the bytes as received.
        None => lines
            .iter()
            .zip(&line_numbers)
            .map(|(line, n)| event_id(&session, *n, line.as_bytes()))
            .collect(),
    };
    let storage = shared.storage.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let items = line_numbers
            .into_iter()
            .zip(ids)
            .zip(lines)
            .map(|((n, id), text)| (n, id, text));
        storage.ingest(
            session,
            items,
            blank_lines.as_deref().unwrap_or_default(),
            now_ms(),
        )
    })
    .await;
    let reply = match stored {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => return storage_error(e),
        Err(e) => return storage_error(e),
    };
    // Acknowledge only what is on disk.
    if let Err(e) = shared.storage.flush().await {
        return storage_error(e);
    }
    Json(reply).into_response()
}

/// A hook payload: a JSON object naming its session as `session_id` or `sessionId`.
fn lifecycle_of(body: &[u8], detail_key: &str) -> Result<(SessionId, Lifecycle), ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad_request(format!("malformed JSON: {e}")))?;
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(String::from);
    let sid = text("session_id")
        .or_else(|| text("sessionId"))
        .ok_or_else(|| bad_request("session_id is required"))?;
    let session = parse_session(&sid)?;
    let detail = value.get(detail_key).map(|v| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    Ok((
        session,
        Lifecycle {
            received_at: now_ms(),
            reason: text("reason").or_else(|| text("notification_type")),
            cwd: text("cwd"),
            detail,
        },
    ))
}

async fn record(shared: &Shared, body: &[u8], kind: LifecycleKind, detail_key: &str) -> Response {
    let (session, event) = match lifecycle_of(body, detail_key) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = shared.storage.record_lifecycle(session, kind, event, now_ms()) {
        return storage_error(e);
    }
    if let Err(e) = shared.storage.flush().await {
        return storage_error(e);
    }
    Json(serde_json::json!({ "ok": true })).into_response()
}

async fn session_start(
    State(shared): State<Arc<Shared>>,
    Path(_vendor): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    record(&shared, &body, LifecycleKind::Start, "source").await
}

async fn session_end(
    State(shared): State<Arc<Shared>>,
    Path(_vendor): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    record(&shared, &body, LifecycleKind::End, "ended_at").await
}

async fn notification(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    record(&shared, &body, LifecycleKind::Notification, "message").await
}
