//! The read API behind the pages (JSON):
//!
//! - `GET /api/sessions/{id}/lines?after=N&limit=M`: stored lines numbered above `N` (all when
//!   absent), at most `M` (default 500, at most 1000): `{"lines":[{"n","text"}],"more"}`;
//! - `GET /api/search?q=&offset=&limit=`: lines matching every word: `{"hits":[…]}`;
//! - `GET /api/usage?group=day|model|repo|machine` (+ the list's filters):
//!   `{"group","rows":[…],"total":{…}}`.
//!
//! `GET /api/sessions` (filters, paging) belongs to the server's own routes; the live stream is
//! [`super::live`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::model::{Paging, SearchHit, UsageGroup, UsageRow};
use super::query::{number, ApiQuery, FilterQuery};
use super::{aggregate, api_error, api_read_error, paths, session_id, Web};

/// Lines per API page unless `limit` says otherwise.
pub const DEFAULT_LINES: u32 = 500;
/// Search hits per page unless `limit` says otherwise.
pub const DEFAULT_HITS: u32 = 50;

/// `?after=N&limit=M`.
#[derive(Debug, Default, Deserialize)]
pub struct LinesQuery {
    pub after: Option<String>,
    pub limit: Option<String>,
}

/// Serves a session's lines.
pub async fn lines(
    State(web): State<Web>,
    Path(sid): Path<String>,
    ApiQuery(q): ApiQuery<LinesQuery>,
) -> Response {
    let id = match session_id(&sid) {
        Ok(id) => id,
        Err(m) => return api_error(StatusCode::BAD_REQUEST, &m),
    };
    let from = match q.after.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => 0,
        Some(a) => match a.parse::<u64>() {
            Ok(n) => n.saturating_add(1),
            Err(_) => return api_error(StatusCode::BAD_REQUEST, "after must be a line number"),
        },
    };
    let limit = match number("limit", &q.limit, u64::from(DEFAULT_LINES)) {
        Ok(l) => l.clamp(1, u64::from(super::model::MAX_LIMIT)) as u32,
        Err(m) => return api_error(StatusCode::BAD_REQUEST, &m),
    };
    let read = web
        .read(move |r| Ok((r.session_item(id)?, r.line_page(id, from, limit)?)))
        .await;
    match read {
        Ok((None, _)) => api_error(StatusCode::NOT_FOUND, "no such session"),
        Ok((Some(_), page)) => Json(page).into_response(),
        Err(e) => api_read_error(e),
    }
}

/// `?q=&offset=&limit=`.
#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    pub q: Option<String>,
    pub offset: Option<String>,
    pub limit: Option<String>,
}

impl SearchQuery {
    /// Its page of hits (default [`DEFAULT_HITS`]), read by the same rules as every listing's
    /// `offset` and `limit`; an error says which one is wrong.
    pub fn paging(&self) -> Result<Paging, String> {
        FilterQuery {
            offset: self.offset.clone(),
            limit: self.limit.clone(),
            ..FilterQuery::default()
        }
        .paging(DEFAULT_HITS)
    }
}

/// A hit with the page URL of its line.
#[derive(Debug, Serialize)]
struct Hit {
    #[serde(flatten)]
    hit: SearchHit,
    url: String,
}

/// Serves a search.
pub async fn search(State(web): State<Web>, ApiQuery(q): ApiQuery<SearchQuery>) -> Response {
    let paging = match q.paging() {
        Ok(p) => p,
        Err(m) => return api_error(StatusCode::BAD_REQUEST, &m),
    };
    let query = q.q.unwrap_or_default();
    match web.read(move |r| r.search_lines(&query, paging)).await {
        Ok(hits) => {
            let hits: Vec<Hit> = hits
                .into_iter()
                .map(|hit| Hit {
                    url: paths::line(hit.session_id, hit.n),
                    hit,
                })
                .collect();
            Json(serde_json::json!({ "hits": hits })).into_response()
        }
        Err(e) => api_read_error(e),
    }
}

/// `?group=` and the list's filters.
#[derive(Debug, Default, Deserialize)]
pub struct UsageQuery {
    pub group: Option<String>,
    #[serde(flatten)]
    pub filter: FilterQuery,
}

/// The sum of every row.
pub fn total(rows: &[UsageRow]) -> UsageRow {
    let mut t = UsageRow {
        key: "total".into(),
        ..UsageRow::default()
    };
    for r in rows {
        t.input_tokens += r.input_tokens;
        t.output_tokens += r.output_tokens;
        t.cache_read_tokens += r.cache_read_tokens;
        t.cache_write_tokens += r.cache_write_tokens;
        t.premium_requests += r.premium_requests;
        t.requests += r.requests;
    }
    t
}

/// Serves usage figures.
pub async fn usage(State(web): State<Web>, ApiQuery(q): ApiQuery<UsageQuery>) -> Response {
    let Some(group) = UsageGroup::parse(q.group.as_deref().unwrap_or("day")) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "group must be one of day, model, repo, machine",
        );
    };
    let filter = match q.filter.filter() {
        Ok(f) => f,
        Err(m) => return api_error(StatusCode::BAD_REQUEST, &m),
    };
    match web.read(move |r| r.usage_sources(&filter)).await {
        Ok(sources) => {
            let rows = aggregate::usage(&sources, group);
            let mut total = total(&rows);
            total.sessions = sources.iter().filter(|s| !s.shutdowns.is_empty()).count() as u64;
            Json(serde_json::json!({ "group": group, "rows": rows, "total": total })).into_response()
        }
        Err(e) => api_read_error(e),
    }
}

/// Sessions per page of a filtered `GET /api/sessions` unless `limit` says otherwise.
pub const DEFAULT_SESSIONS: u32 = 100;

/// `GET /api/sessions` with filters (`agent`, `repository`, `machine`, `from`, `to` as
/// `YYYY-MM-DD`) or `offset`: the same session objects as the plain listing, newest start
/// first, one page (`limit`, default 100, at most 1000); the `X-Total-Count` header says how
/// many match in all.
pub async fn filtered_sessions(storage: &crate::server::Storage, q: FilterQuery) -> Response {
    let (filter, paging) = match q.filter().and_then(|f| Ok((f, q.paging(DEFAULT_SESSIONS)?))) {
        Ok(x) => x,
        Err(m) => return api_error(StatusCode::BAD_REQUEST, &m),
    };
    let reads = storage.reads();
    let listed = storage
        .run(move |b| {
            let (ids, total) = reads
                .filtered_ids(&filter, paging)
                .map_err(|e| crate::server::storage::StorageError::Database(e.to_string()))?;
            let mut list = Vec::with_capacity(ids.len());
            for id in ids {
                list.extend(b.summary(id)?);
            }
            Ok((list, total))
        })
        .await;
    match listed {
        Ok((list, total)) => {
            let mut response = Json(list).into_response();
            response
                .headers_mut()
                .insert("x-total-count", axum::http::HeaderValue::from(total));
            response
        }
        Err(e) => api_read_error(e.into()),
    }
}
