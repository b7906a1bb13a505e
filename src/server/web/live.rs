//! `GET /api/sessions/{id}/live`: a session's new lines as server-sent events.
//!
//! Each event is one line (`event: line`, `id:` its number): as JSON `{"n", "line"}` by default,
//! or as the page's rendered HTML with `format=html`. A stream wakes when this server stores
//! lines ([`LiveHub::notify`]) and otherwise polls every [`POLL`], so lines that another replica
//! stored (PostgreSQL) appear too. A browser that reconnects sends `Last-Event-ID` and resumes
//! after it. Once the session has ended and been quiet for [`END_QUIET_MS`], an `end` event
//! closes the stream. The token that opened a stream is checked again every [`REAUTH`]: a
//! stream opened with a token revoked since then closes (a browser's reconnect then gets 401).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::watch;

use super::transcript::{self, Hidden};
use super::{api_error, api_read_error, session_id, Web};
use crate::ids::SessionId;
use crate::machine::Millis;

/// How often a stream looks for lines nobody told it about.
pub const POLL: Duration = Duration::from_millis(1000);
/// How often an open stream checks that the token it was opened with still admits it.
pub const REAUTH: Duration = Duration::from_secs(1);
/// Lines sent per read.
const BATCH: u32 = 200;
/// An ended session's stream closes after this long without new lines (the shutdown line
/// arrives after the end hook).
pub const END_QUIET_MS: Millis = 30_000;

/// Wakes open streams when lines are stored, and counts batches being stored (the search
/// indexer gives way to them).
#[derive(Clone)]
pub struct LiveHub {
    changes: Arc<watch::Sender<u64>>,
    ingesting: Arc<AtomicUsize>,
}

/// Counts one batch as being stored until dropped (see [`LiveHub::ingesting`]).
pub struct Ingesting(Arc<AtomicUsize>);

impl Drop for Ingesting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LiveHub {
    /// A hub nobody listens to yet.
    pub fn new() -> LiveHub {
        LiveHub {
            changes: Arc::new(watch::channel(0).0),
            ingesting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Tells every open stream that lines may have been stored.
    pub fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Counts a batch as being stored (read, parsed, committed) until the guard is dropped.
    pub fn ingesting(&self) -> Ingesting {
        self.ingesting.fetch_add(1, Ordering::AcqRel);
        Ingesting(self.ingesting.clone())
    }

    /// Whether any batch is being stored now.
    pub fn busy(&self) -> bool {
        self.ingesting.load(Ordering::Acquire) > 0
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

impl Default for LiveHub {
    fn default() -> Self {
        LiveHub::new()
    }
}

/// The query of a live stream.
#[derive(Debug, Default, Deserialize)]
pub struct LiveQuery {
    /// Send lines numbered above this (default: from line 0).
    pub after: Option<String>,
    /// `html` for rendered fragments; JSON otherwise.
    pub format: Option<String>,
    pub hide_hooks: Option<String>,
    pub hide_lifecycle: Option<String>,
}

struct Stream_ {
    web: Web,
    id: SessionId,
    from: u64,
    html: bool,
    hidden: Hidden,
    ctx: transcript::Context,
    wake: watch::Receiver<u64>,
    last_new: Millis,
    done: bool,
    /// The token the stream was opened with, when it was last found valid, and when it was
    /// last asked about.
    token: Option<String>,
    authorized_at: tokio::time::Instant,
    checked_at: tokio::time::Instant,
}

/// Serves the stream.
pub async fn handler(
    State(web): State<Web>,
    Path(sid): Path<String>,
    super::query::ApiQuery(q): super::query::ApiQuery<LiveQuery>,
    headers: HeaderMap,
) -> Response {
    let id = match session_id(&sid) {
        Ok(id) => id,
        Err(m) => return api_error(StatusCode::BAD_REQUEST, &m),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let after = match resume.or(q.after.clone()).map(|a| a.trim().parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return api_error(StatusCode::BAD_REQUEST, "after must be a line number"),
    };
    match web.read(move |r| r.session_item(id)).await {
        Ok(Some(_)) => {}
        Ok(None) => return api_error(StatusCode::NOT_FOUND, "no such session"),
        Err(e) => return api_read_error(e),
    }
    let flag = |v: &Option<String>| v.as_deref().is_some_and(|v| v != "0" && !v.is_empty());
    let state = Stream_ {
        token: super::auth::presented(&headers),
        authorized_at: tokio::time::Instant::now(),
        checked_at: tokio::time::Instant::now(),
        wake: web.live.subscribe(),
        last_new: web.now(),
        web,
        id,
        from: after.map_or(0, |a| a.saturating_add(1)),
        html: q.format.as_deref() == Some("html"),
        hidden: Hidden {
            hooks: flag(&q.hide_hooks),
            lifecycle: flag(&q.hide_lifecycle),
        },
        ctx: transcript::Context::new(id),
        done: false,
    };
    Sse::new(events(state))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn events(state: Stream_) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            if !still_admitted(&mut s).await {
                return None;
            }
            // Mark the current version seen before reading, so a store that lands during the
            // read wakes the next wait instead of being missed.
            s.wake.borrow_and_update();
            let (id, from) = (s.id, s.from);
            let page = match s.web.read(move |r| r.line_page(id, from, BATCH)).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "live stream cannot read lines; retrying");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            if let Some(last) = page.lines.last() {
                s.from = last.n + 1;
                s.last_new = s.web.now();
                let events: Vec<Result<Event, Infallible>> = page
                    .lines
                    .iter()
                    .filter_map(|line| event(&mut s, line.n, &line.text).map(Ok))
                    .collect();
                if !events.is_empty() {
                    return Some((stream::iter(events), s));
                }
                continue;
            }
            if ended_and_quiet(&s).await {
                s.done = true;
                let end = Event::default().event("end").data("ended");
                return Some((stream::iter(vec![Ok(end)]), s));
            }
            tokio::select! {
                _ = s.wake.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    })
    .flatten()
}

fn event(s: &mut Stream_, n: u64, text: &str) -> Option<Event> {
    let data = if s.html {
        one_data_line(&transcript::line(&mut s.ctx, n, text, s.hidden)?.into_string())
    } else {
        serde_json::json!({ "n": n, "line": text }).to_string()
    };
    Some(Event::default().event("line").id(n.to_string()).data(data))
}

/// An HTML fragment with its line breaks written as character references, so it travels as
/// one `data:` line. SSE ends a line at CR, LF or CRLF, and axum splits data at each of them: a
/// CRLF from a transcript came out as two data lines, i.e. a blank line the page never had. The
/// fragment's markup never holds a line break inside a tag (maud writes none), so the
/// references land in text or attribute values. CRLF and a lone CR become one LF, as the HTML
/// parser makes them when the page is loaded whole: a live line looks as it will after a
/// reload (a `&#13;` would stay a CR and show as a space).
fn one_data_line(html: &str) -> String {
    if !html.contains(['\r', '\n']) {
        return html.to_string();
    }
    html.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\n', "&#10;")
}

/// Whether the stream's token still admits it, asked again at most every [`REAUTH`] (the
/// gate asks the store, so a token revoked by `kcap serve token revoke` counts at once).
async fn still_admitted(s: &mut Stream_) -> bool {
    if s.checked_at.elapsed() < REAUTH {
        return true;
    }
    let access = s.web.access(s.token.clone()).await;
    let now = tokio::time::Instant::now();
    s.checked_at = now;
    let keep = admits(access, now - s.authorized_at);
    if keep && access != super::Access::Unavailable {
        s.authorized_at = now;
    }
    keep
}

/// How long a stream stays open while its token cannot be checked (the store failing): long
/// enough for a pool timeout or a failover, short enough that a revocation made meanwhile
/// still takes effect.
pub const UNCHECKED_GRACE: Duration = Duration::from_secs(30);

/// Whether a stream stays open, given what the gate said and how long ago the token was last
/// found valid.
fn admits(access: super::Access, since_valid: Duration) -> bool {
    match access {
        super::Access::Open | super::Access::Allowed => true,
        super::Access::Denied => false,
        super::Access::Unavailable => since_valid < UNCHECKED_GRACE,
    }
}

async fn ended_and_quiet(s: &Stream_) -> bool {
    let id = s.id;
    let Ok(Some(item)) = s.web.read(move |r| r.session_item(id)).await else {
        return false;
    };
    let now = s.web.now();
    item.ended_at
        .is_some_and(|end| now.saturating_sub(end.max(s.last_new)) > END_QUIET_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fragment_breaks_its_lines_as_a_reloaded_page_would() {
        assert_eq!(one_data_line("<p>plain</p>"), "<p>plain</p>");
        assert_eq!(
            one_data_line("<p>a\rb\r\nc\nd\n\ne</p>"),
            "<p>a&#10;b&#10;c&#10;d&#10;&#10;e</p>"
        );
    }
    use crate::server::web::Access;

    #[test]
    fn a_failed_token_check_keeps_a_stream_for_a_grace_period_and_a_denial_ends_it() {
        let short = Duration::from_secs(2);
        assert!(admits(Access::Allowed, UNCHECKED_GRACE * 2));
        assert!(admits(Access::Open, UNCHECKED_GRACE * 2));
        assert!(!admits(Access::Denied, short));
        assert!(admits(Access::Unavailable, short));
        assert!(!admits(Access::Unavailable, UNCHECKED_GRACE));
    }
}
