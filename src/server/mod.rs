//! The embedded ingest server: the kcap protocol (DESIGN.md §5) over loopback, keeping every
//! line once by event id. Storage is in memory for now (it backs `kcap demo`, the tests and the
//! benchmark); scripted faults let tests play a server that is slow, failing or hanging.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::oneshot;

use crate::ids::{event_id, SessionId};
use crate::protocol::{AuthConfig, IngestReply, LastLine, TranscriptBatch};

/// Requests larger than this get 413 (the client then splits its batch).
pub const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// A scripted misbehaviour, consumed by the next protocol request (not `/auth/config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Status(u16),
    Delay(Duration),
    /// Never answers (the client's timeout must fire).
    Hang,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    pub id: uuid::Uuid,
    pub text: String,
}

#[derive(Debug, Default, Clone)]
pub struct SessionLines {
    pub lines: BTreeMap<u64, StoredLine>,
    ids: HashSet<uuid::Uuid>,
    /// Every line number below this is stored.
    contiguous: u64,
    /// Lines received again with an id already stored (replays; harmless).
    pub duplicates: u64,
    /// Lines whose number was already stored under a different id (the transcript changed).
    pub conflicts: u64,
}

impl SessionLines {
    fn insert(&mut self, number: u64, id: uuid::Uuid, text: String) -> bool {
        if !self.ids.insert(id) {
            self.duplicates += 1;
            return false;
        }
        if self.lines.contains_key(&number) {
            self.conflicts += 1;
            return false;
        }
        self.lines.insert(number, StoredLine { id, text });
        while self.lines.contains_key(&self.contiguous) {
            self.contiguous += 1;
        }
        true
    }

    /// The highest line number below which nothing is missing; −1 when line 0 is missing.
    pub fn last_line(&self) -> i64 {
        self.contiguous as i64 - 1
    }
}

#[derive(Default)]
struct Shared {
    sessions: Mutex<HashMap<SessionId, SessionLines>>,
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<u64>,
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
    /// Serves on `addr` (port 0 picks a free one) until stopped.
    pub async fn start(addr: SocketAddr, token: Option<String>) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token,
            ..Shared::default()
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

    /// Queues faults for the next requests, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.shared.faults).extend(faults);
    }

    pub fn pending_faults(&self) -> usize {
        lock(&self.shared.faults).len()
    }

    pub fn session(&self, session: SessionId) -> SessionLines {
        lock(&self.shared.sessions)
            .get(&session)
            .cloned()
            .unwrap_or_default()
    }

    pub fn sessions(&self) -> Vec<SessionId> {
        lock(&self.shared.sessions).keys().copied().collect()
    }

    /// Protocol requests answered so far (faulted ones included).
    pub fn requests(&self) -> u64 {
        *lock(&self.shared.requests)
    }

    /// Stops accepting, lets in-flight requests finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
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
    // A panic while holding the lock cannot leave these maps half-updated in a way that matters
    // more than stopping the server would.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn router(shared: Arc<Shared>) -> Router {
    let protocol = Router::new()
        .route("/api/sessions/{sid}/last-line", get(last_line))
        .route("/hooks/transcript", post(transcript))
        .layer(middleware::from_fn_with_state(shared.clone(), faults_and_auth));
    Router::new()
        .route("/auth/config", get(auth_config))
        .merge(protocol)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

async fn faults_and_auth(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    *lock(&shared.requests) += 1;
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

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn auth_config(State(shared): State<Arc<Shared>>) -> Json<AuthConfig> {
    Json(AuthConfig {
        provider: if shared.token.is_some() { "Bearer" } else { "None" }.into(),
    })
}

async fn last_line(State(shared): State<Arc<Shared>>, Path(sid): Path<String>) -> Response {
    let Ok(session) = sid.parse::<SessionId>() else {
        return error(StatusCode::BAD_REQUEST, "session id must be a UUID");
    };
    let last = lock(&shared.sessions)
        .get(&session)
        .map_or(-1, SessionLines::last_line);
    Json(LastLine {
        last_line_number: last,
    })
    .into_response()
}

async fn transcript(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let batch: TranscriptBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("malformed batch: {e}")),
    };
    let Ok(session) = batch.session_id.parse::<SessionId>() else {
        return error(StatusCode::BAD_REQUEST, "session_id must be a UUID");
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
    let ids: Vec<uuid::Uuid> = match batch.event_ids {
        Some(ids) => ids,
        None => batch
            .lines
            .iter()
            .zip(&batch.line_numbers)
            .map(|(line, n)| event_id(&session, *n, line.as_bytes()))
            .collect(),
    };
    let mut reply = IngestReply::default();
    let mut sessions = lock(&shared.sessions);
    let stored = sessions.entry(session).or_default();
    for ((text, number), id) in batch.lines.into_iter().zip(batch.line_numbers).zip(ids) {
        if stored.insert(number, id, text) {
            reply.new += 1;
        } else {
            reply.duplicates += 1;
        }
    }
    Json(reply).into_response()
}
