//! The HTTP routes: authentication and scripted faults in front, then the protocol handlers.
//! Every storage call runs off the async workers; every reply that acknowledges lines is sent
//! after their commit.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

use super::body::{self, BodyError};
use super::host::Admission;
use super::storage::{Batch, IncomingLine, Lifecycle, LifecycleKind, Principal, StorageError};
use super::{lock, Fault, Shared};
use crate::config::now_ms;
use crate::ids::{event_id, SessionId};
use crate::protocol::{AuthConfig, LastLine, TranscriptBatch};

/// Over-limit bodies up to this size are read and thrown away before the 413 goes out (so the
/// client sees the 413, not a reset); larger ones get it at once.
const DISCARD_LIMIT: u64 = 1024 * 1024 * 1024;

/// The application: every route of the protocol.
pub fn router(shared: Arc<Shared>) -> Router {
    let hooks = Router::new()
        .route("/hooks/session-start/{vendor}", post(session_start))
        .route("/hooks/session-end/{vendor}", post(session_end))
        .route("/hooks/notification", post(notification))
        .layer(DefaultBodyLimit::max(shared.limits.max_hook_body));
    let protocol = Router::new()
        .route("/api/sessions", get(list_sessions))
        .route("/api/sessions/{sid}", get(one_session))
        .route("/api/sessions/{sid}/last-line", get(last_line))
        .route("/hooks/transcript", post(transcript))
        .layer(DefaultBodyLimit::disable())
        .merge(hooks)
        .layer(middleware::from_fn_with_state(shared.clone(), faults_and_auth));
    Router::new()
        .route("/auth/config", get(auth_config))
        .merge(protocol)
        .with_state(shared.clone())
        .merge(super::web::router(web_ui(shared.clone())))
        .layer(middleware::from_fn_with_state(shared, check_host))
}

/// Refuses requests addressed to a name this server does not answer (DNS rebinding: see
/// [`super::host`]), before anything else runs.
async fn check_host(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let admitted = match shared.hosts.admits(host) {
        Admission::Admit => true,
        Admission::Refuse => false,
        Admission::IfTokenRequired => shared.gate.required(&shared.storage).await,
    };
    if admitted {
        return next.run(request).await;
    }
    error(
        StatusCode::FORBIDDEN,
        "this server does not answer that Host name (start kcap serve with --allowed-host NAME; \
         a server with no token answers only IP addresses, localhost and those names)",
    )
}

/// The web UI on this server's storage, admitting whom the token gate admits.
fn web_ui(shared: Arc<Shared>) -> super::web::Web {
    use super::auth::Verdict;
    use super::web::{Access, Gatekeeper, Web};
    let reads = shared.storage.reads();
    let hub = shared.live.clone();
    let gate: Gatekeeper = Arc::new(move |token: Option<String>| {
        let shared = shared.clone();
        Box::pin(async move {
            let header = token.map(|t| format!("Bearer {t}"));
            // Shared lookups: every open live page re-checks its token each second.
            match shared.gate.check_shared(&shared.storage, header.as_deref()).await {
                Ok(Verdict::Allowed(Principal::Anonymous)) => Access::Open,
                Ok(Verdict::Allowed(_)) => Access::Allowed,
                Ok(Verdict::Denied) => Access::Denied,
                Err(e) => {
                    tracing::error!(error = %e, "cannot check a web token");
                    Access::Unavailable
                }
            }
        })
    });
    Web::new(reads, gate).with_hub(hub)
}

async fn faults_and_auth(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    *lock(&shared.requests) += 1;
    lock(&shared.first_request_at).get_or_insert_with(now_ms);
    let mut header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    // A logged-in browser may read the protocol's JSON (GET) with its login cookie; writes stay
    // bearer-only, so no cookie can ever authorize a write.
    if header.is_none() && request.method() == axum::http::Method::GET {
        header = super::web::auth::presented(request.headers()).map(|t| format!("Bearer {t}"));
    }
    let principal = match shared.gate.check(&shared.storage, header.as_deref()).await {
        Ok(super::auth::Verdict::Allowed(p)) => p,
        Ok(super::auth::Verdict::Denied) => {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
        }
        Err(e) => return storage_error(e),
    };
    request.extensions_mut().insert(principal);
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

fn storage_error(e: StorageError) -> Response {
    match e {
        StorageError::Invalid(m) => error(StatusCode::BAD_REQUEST, &m),
        StorageError::Forbidden(m) => error(StatusCode::FORBIDDEN, &m),
        StorageError::Exists(m) => error(StatusCode::CONFLICT, &m),
        StorageError::Database(m) => {
            tracing::error!(error = %m, "storage error");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage error; nothing acknowledged",
            )
        }
    }
}

fn body_error(e: BodyError) -> Response {
    match e {
        BodyError::TooLarge(max) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body is over the {max}-byte limit"),
        ),
        BodyError::TimedOut(t) => error(
            StatusCode::REQUEST_TIMEOUT,
            &format!("request body not complete within {} s", t.as_secs_f64()),
        ),
        BodyError::Broken(m) => error(StatusCode::BAD_REQUEST, &format!("unreadable body: {m}")),
        BodyError::Busy => busy(),
    }
}

fn parse_session(raw: &str) -> Result<SessionId, StorageError> {
    raw.parse::<SessionId>()
        .map_err(|_| StorageError::Invalid("session id must be a UUID (dashed or dashless)".into()))
}

/// NUL cannot be stored in PostgreSQL text; hostile hook fields must not make a 500.
fn clean(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s
    }
}

async fn auth_config(State(shared): State<Arc<Shared>>) -> Json<AuthConfig> {
    let required = shared.gate.required(&shared.storage).await;
    Json(AuthConfig {
        provider: if required { "Bearer" } else { "None" }.into(),
    })
}

async fn last_line(State(shared): State<Arc<Shared>>, Path(sid): Path<String>) -> Response {
    let session = match parse_session(&sid) {
        Ok(s) => s,
        Err(e) => return storage_error(e),
    };
    match shared.storage.run(move |b| b.last_line(session)).await {
        Ok(last) => Json(LastLine {
            last_line_number: last,
        })
        .into_response(),
        Err(e) => storage_error(e),
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    limit: Option<u64>,
}

/// Most recently active first; with any filter or an offset, the web UI's filtered listing
/// (see [`super::web::api::filtered_sessions`]).
async fn list_sessions(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    use super::web::query::{ApiQuery, FilterQuery};
    let filter = match ApiQuery::<FilterQuery>::from_uri(request.uri()) {
        Ok(ApiQuery(filter)) => filter,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    if filter.narrows() {
        return super::web::api::filtered_sessions(&shared.storage, filter).await;
    }
    let q = match ApiQuery::<ListQuery>::from_uri(request.uri()) {
        Ok(ApiQuery(q)) => q,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    match shared.storage.run(move |b| b.summaries(q.limit)).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => storage_error(e),
    }
}

async fn one_session(State(shared): State<Arc<Shared>>, Path(sid): Path<String>) -> Response {
    let session = match parse_session(&sid) {
        Ok(s) => s,
        Err(e) => return storage_error(e),
    };
    match shared.storage.run(move |b| b.summary(session)).await {
        Ok(Some(summary)) => Json(summary).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such session"),
        Err(e) => storage_error(e),
    }
}

/// A parsed batch checked and turned into what storage takes.
fn to_batch(batch: TranscriptBatch, writer: Principal) -> Result<Batch, StorageError> {
    let session: SessionId = batch
        .session_id
        .parse()
        .map_err(|_| StorageError::Invalid("session id must be a UUID (dashed or dashless)".into()))?;
    if batch.lines.len() != batch.line_numbers.len()
        || batch
            .event_ids
            .as_ref()
            .is_some_and(|ids| ids.len() != batch.lines.len())
    {
        return Err(StorageError::Invalid(
            "lines, line_numbers and event_ids differ in length".into(),
        ));
    }
    let TranscriptBatch {
        lines,
        line_numbers,
        event_ids,
        blank_lines,
        vendor,
        repository,
        ..
    } = batch;
    let lines = match event_ids {
        Some(ids) => lines
            .into_iter()
            .zip(line_numbers)
            .zip(ids)
            .map(|((text, number), id)| IncomingLine { number, id, text })
            .collect(),
        // Clients without kcap's extension: the same function, over the bytes as received.
        None => lines
            .into_iter()
            .zip(line_numbers)
            .map(|(text, number)| IncomingLine {
                number,
                id: event_id(&session, number, text.as_bytes()),
                text,
            })
            .collect(),
    };
    Ok(Batch {
        session,
        lines,
        blanks: blank_lines.unwrap_or_default(),
        vendor: vendor.map(clean),
        repository: repository.map(clean),
        writer,
        now: now_ms(),
    })
}

fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads an over-limit body to its end (so the client gets the 413 and splits its batch rather
/// than seeing a reset), then refuses it.
async fn refuse_oversize(body: Body, declared: u64, shared: &Shared) -> Response {
    if declared <= DISCARD_LIMIT {
        let _ = body::collect_discarding(body, shared.limits.body_timeout).await;
    }
    body_error(BodyError::TooLarge(shared.limits.max_body))
}

/// 503 with Retry-After: every ingest slot stayed taken past the queue timeout.
fn busy() -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is busy storing other batches; retry",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    r
}

async fn transcript(
    State(shared): State<Arc<Shared>>,
    Extension(writer): Extension<Principal>,
    request: Request,
) -> Response {
    let limits = &shared.limits;
    // The search indexer gives way while batches are being stored (its CPU is theirs).
    let _ingesting = shared.live.ingesting();
    let declared = declared_length(&request);
    let body = request.into_body();
    if let Some(declared) = declared.filter(|d| *d > limits.max_body) {
        return refuse_oversize(body, declared, &shared).await;
    }
    // Every body reserves its share of the body budget once its first bytes arrive (see
    // body::admit). Large (or unsized) bodies are parsed as they arrive; small ones are collected
    // first and only then take one of `max_ingest` slots for the parse and the transaction, so
    // slow senders cannot keep the ready ones waiting.
    let large = declared.is_none_or(|d| d > body::STREAM_ABOVE);
    let storage = shared.storage.clone();
    let reading = &shared.bodies;
    let mut permit = None;
    let outcome = if large {
        body::stream_into(body, declared, reading, move |reader| {
            let batch: TranscriptBatch = serde_json::from_reader(reader)
                .map_err(|e| StorageError::Invalid(format!("malformed batch: {e}")))?;
            let batch = to_batch(batch, writer)?;
            storage.backend().ingest(&batch)
        })
        .await
    } else {
        match body::collect(body, declared.unwrap_or(0), reading).await {
            Ok((bytes, _held_until_stored)) => {
                match tokio::time::timeout(
                    limits.ingest_queue_timeout,
                    shared.ingest_slots.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(p)) => permit = Some(p),
                    _ => return busy(),
                }
                Ok(storage
                    .run(move |b| {
                        let batch: TranscriptBatch = serde_json::from_slice(&bytes)
                            .map_err(|e| StorageError::Invalid(format!("malformed batch: {e}")))?;
                        drop(bytes);
                        b.ingest(&to_batch(batch, writer)?)
                    })
                    .await)
            }
            Err(e) => Err(e),
        }
    };
    drop(permit);
    match outcome {
        Ok(Ok(reply)) => {
            shared.live.notify();
            Json(reply).into_response()
        }
        Ok(Err(e)) => storage_error(e),
        Err(e) => body_error(e),
    }
}

/// A hook payload: a JSON object naming its session as `session_id` or `sessionId`.
fn lifecycle_of(body: &[u8], detail_key: &str) -> Result<(SessionId, Lifecycle), StorageError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| StorageError::Invalid(format!("malformed JSON: {e}")))?;
    let text = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .map(|s| clean(s.to_string()))
    };
    let sid = text("session_id")
        .or_else(|| text("sessionId"))
        .ok_or_else(|| StorageError::Invalid("session_id is required".into()))?;
    let session = parse_session(&sid)?;
    let detail = value.get(detail_key).map(|v| match v {
        serde_json::Value::String(s) => clean(s.clone()),
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

async fn record(
    shared: &Shared,
    writer: Principal,
    body: &[u8],
    kind: LifecycleKind,
    detail_key: &str,
) -> Response {
    let (session, event) = match lifecycle_of(body, detail_key) {
        Ok(x) => x,
        Err(e) => return storage_error(e),
    };
    match shared
        .storage
        .run(move |b| b.record_lifecycle(session, kind, &event, &writer))
        .await
    {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => storage_error(e),
    }
}

/// A hook's body, or why axum could not read it (over `max_hook_body`, broken).
type HookBody = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

/// A hook body axum refused, answered as JSON like every other error (its own answer was
/// plain text: "Failed to buffer the request body: length limit exceeded").
fn hook_body_error(e: axum::extract::rejection::BytesRejection) -> Response {
    error(e.status(), &e.body_text())
}

async fn session_start(
    State(shared): State<Arc<Shared>>,
    Extension(writer): Extension<Principal>,
    Path(_vendor): Path<String>,
    body: HookBody,
) -> Response {
    match body {
        Ok(body) => record(&shared, writer, &body, LifecycleKind::Start, "source").await,
        Err(e) => hook_body_error(e),
    }
}

async fn session_end(
    State(shared): State<Arc<Shared>>,
    Extension(writer): Extension<Principal>,
    Path(_vendor): Path<String>,
    body: HookBody,
) -> Response {
    match body {
        Ok(body) => record(&shared, writer, &body, LifecycleKind::End, "ended_at").await,
        Err(e) => hook_body_error(e),
    }
}

async fn notification(
    State(shared): State<Arc<Shared>>,
    Extension(writer): Extension<Principal>,
    body: HookBody,
) -> Response {
    match body {
        Ok(body) => record(&shared, writer, &body, LifecycleKind::Notification, "message").await,
        Err(e) => hook_body_error(e),
    }
}
