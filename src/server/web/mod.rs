//! The web UI of `kcap serve`: sessions, transcripts, usage and search as server-rendered HTML,
//! the JSON API behind them, and live transcripts over server-sent events.
//!
//! Everything a transcript holds is untrusted. maud escapes every interpolation (the only
//! `PreEscaped` is sanitized markdown, see [`markdown`]); the pages load one same-origin
//! stylesheet and one script under a Content-Security-Policy without inline script or style
//! ([`layout::CSP`]); every page works without JavaScript except live updates.
//!
//! Storage is reached through [`model::ReadModel`] only.

pub mod aggregate;
pub mod api;
pub mod assets;
pub mod auth;
pub mod chart;
pub mod entry;
pub mod filter_sql;
pub mod format;
pub mod indexer;
pub mod layout;
pub mod live;
pub mod markdown;
pub mod memory;
pub mod model;
pub mod pages;
pub mod paths;
pub mod postgres;
pub mod query;
pub mod search;
pub mod sqlite;
pub mod transcript;

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::future::BoxFuture;

use crate::ids::SessionId;
use crate::machine::Millis;
use model::{ReadError, ReadModel};

/// What a presented token (or none) gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The server needs no token.
    Open,
    /// The token is valid.
    Allowed,
    /// A token is needed and this one is missing or wrong.
    Denied,
    /// The token could not be checked (the store failed): nothing new is admitted (a request
    /// gets 503), and an open live stream carries on for a while and asks again, so that one
    /// failed lookup does not close every open page.
    Unavailable,
}

/// Decides [`Access`] for a presented token; the server's implementation asks its token gate.
pub type Gatekeeper = Arc<dyn Fn(Option<String>) -> BoxFuture<'static, Access> + Send + Sync>;

/// A gatekeeper for one fixed token (`None`: no token needed), compared in constant time.
pub fn fixed_token(token: Option<String>) -> Gatekeeper {
    Arc::new(move |given: Option<String>| {
        let access = match (&token, given) {
            (None, _) => Access::Open,
            (Some(t), Some(g)) if constant_time_eq(t.as_bytes(), g.as_bytes()) => Access::Allowed,
            _ => Access::Denied,
        };
        Box::pin(std::future::ready(access))
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the reader of a page may log out (set by the login guard for every page).
#[derive(Debug, Clone, Copy, Default)]
pub struct Viewer {
    /// A token was needed and given.
    pub logged_in: bool,
}

/// What the web UI runs on.
#[derive(Clone)]
pub struct Web {
    reads: Arc<dyn ReadModel>,
    gate: Gatekeeper,
    live: live::LiveHub,
    clock: fn() -> Millis,
}

impl Web {
    /// A web UI reading `reads`, letting in whom `gate` allows.
    pub fn new(reads: Arc<dyn ReadModel>, gate: Gatekeeper) -> Web {
        Web {
            reads,
            gate,
            live: live::LiveHub::new(),
            clock: crate::config::now_ms,
        }
    }

    /// Uses `hub` for live updates (the server shares one with its ingest handler).
    pub fn with_hub(mut self, hub: live::LiveHub) -> Web {
        self.live = hub;
        self
    }

    /// What `token` gets.
    pub async fn access(&self, token: Option<String>) -> Access {
        (self.gate)(token).await
    }

    /// Replaces the clock (tests decide what "live" means at a fixed instant).
    pub fn with_clock(mut self, clock: fn() -> Millis) -> Web {
        self.clock = clock;
        self
    }

    /// The hub ingest pokes when lines are stored, so open pages update at once.
    pub fn live_hub(&self) -> live::LiveHub {
        self.live.clone()
    }

    fn now(&self) -> Millis {
        (self.clock)()
    }

    /// Runs a blocking read off the async workers.
    pub async fn read<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn ReadModel) -> Result<T, ReadError> + Send + 'static,
    ) -> Result<T, ReadError> {
        let reads = self.reads.clone();
        tokio::task::spawn_blocking(move || call(&*reads))
            .await
            .map_err(|e| ReadError::Storage(format!("read task failed: {e}")))?
    }
}

/// The routes of the web UI and its read API, ready to merge into the server's router.
pub fn router(web: Web) -> Router {
    let guarded = Router::new()
        .route("/", get(pages::sessions::handler))
        .route("/sessions/{sid}", get(pages::session::handler))
        .route("/sessions/{sid}/lines/{n}/raw", get(raw_line))
        .route("/usage", get(pages::usage::handler))
        .route("/search", get(pages::search::handler))
        .route("/api/sessions/{sid}/lines", get(api::lines))
        .route("/api/search", get(api::search))
        .route("/api/usage", get(api::usage))
        .route("/api/sessions/{sid}/live", get(live::handler))
        .layer(middleware::from_fn_with_state(web.clone(), require_login));
    Router::new()
        .route("/login", get(pages::login::form).post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .route("/assets/{name}", get(asset))
        .merge(guarded)
        .with_state(web)
}

async fn asset(Path(name): Path<String>) -> Response {
    assets::serve(&name)
}

/// Lets a request through when no token is configured or it presents a valid one; otherwise
/// pages redirect to the login page and the API answers 401.
async fn require_login(State(web): State<Web>, mut request: Request, next: Next) -> Response {
    let access = web.access(auth::presented(request.headers())).await;
    if access == Access::Unavailable {
        let message = "the server cannot check tokens right now; try again shortly";
        if request.uri().path().starts_with("/api/") {
            return api_error(StatusCode::SERVICE_UNAVAILABLE, message);
        }
        return layout::error_page(StatusCode::SERVICE_UNAVAILABLE, message);
    }
    if access != Access::Denied {
        request.extensions_mut().insert(Viewer {
            logged_in: access == Access::Allowed,
        });
        return next.run(request).await;
    }
    if request.uri().path().starts_with("/api/") {
        return api_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let here = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let to = format!("/login?next={}", paths::encode(here));
    redirect(&to)
}

/// A 303 to a local path.
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A JSON error as the rest of the server's API gives it.
pub fn api_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// A read failure as an API response (storage details go to the log, not the client).
pub fn api_read_error(e: ReadError) -> Response {
    match e {
        ReadError::Invalid(m) => api_error(StatusCode::BAD_REQUEST, &m),
        ReadError::Storage(m) => {
            tracing::error!(error = %m, "web read failed");
            api_error(StatusCode::INTERNAL_SERVER_ERROR, "storage error")
        }
    }
}

/// A read failure as a page.
pub fn page_read_error(e: ReadError) -> Response {
    match e {
        ReadError::Invalid(m) => layout::error_page(StatusCode::BAD_REQUEST, &m),
        ReadError::Storage(m) => {
            tracing::error!(error = %m, "web read failed");
            layout::error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The store could not be read; see the server log.",
            )
        }
    }
}

/// Parses a session id from a path, or says why not.
pub fn session_id(raw: &str) -> Result<SessionId, String> {
    raw.parse::<SessionId>()
        .map_err(|_| "session id must be a UUID (dashed or dashless)".to_string())
}

/// One stored line, as plain text that no browser will render or sniff.
async fn raw_line(State(web): State<Web>, Path((sid, n)): Path<(String, String)>) -> Response {
    let id = match session_id(&sid) {
        Ok(id) => id,
        Err(m) => return layout::error_page(StatusCode::BAD_REQUEST, &m),
    };
    let Ok(n) = n.parse::<u64>() else {
        return layout::error_page(StatusCode::BAD_REQUEST, "line number must be a whole number");
    };
    match web.read(move |r| r.line_text(id, n)).await {
        Ok(Some(text)) => {
            let mut response = text.into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            layout::security_headers(h);
            // Even if a browser were tricked into rendering it, a sandboxed document runs nothing.
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; sandbox"),
            );
            response
        }
        Ok(None) => layout::error_page(StatusCode::NOT_FOUND, "no such line"),
        Err(e) => page_read_error(e),
    }
}
