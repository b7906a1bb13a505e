//! `/search`: lines matching every word, each linking to its place in its transcript.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};

use super::shell;
use crate::server::web::api::SearchQuery;
use crate::server::web::format::datetime;
use crate::server::web::layout::{page, respond, Section};
use crate::server::web::model::{Paging, ReadError, SearchHit};
use crate::server::web::search::{highlight, terms};
use crate::server::web::{page_read_error, paths, Viewer, Web};

/// Serves the search page (the form alone when there is no query yet).
pub async fn handler(
    State(web): State<Web>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<SearchQuery>,
) -> Response {
    let text = q.q.clone().unwrap_or_default();
    let paging = match q.paging() {
        Ok(p) => p,
        Err(m) => return page_read_error(ReadError::Invalid(m)),
    };
    let hits = if text.trim().is_empty() {
        None
    } else {
        let query = text.clone();
        match web.read(move |r| r.search_lines(&query, paging)).await {
            Ok(hits) => Some(Ok(hits)),
            Err(ReadError::Invalid(m)) => Some(Err(m)),
            Err(e) => return page_read_error(e),
        }
    };
    let body = render(&text, hits.as_ref(), paging);
    respond(
        StatusCode::OK,
        page(&shell(viewer, "Search", Section::Search, &text), body),
    )
}

/// The search page's content: `hits` is `None` before a search, `Err` for an unusable query.
pub fn render(text: &str, hits: Option<&Result<Vec<SearchHit>, String>>, paging: Paging) -> Markup {
    let words = terms(text).unwrap_or_default();
    let next = format!(
        "/search?q={}&offset={}",
        paths::encode(text),
        paging.offset + u64::from(paging.limit)
    );
    html! {
        h1 { "Search" }
        form.filters role="search" action="/search" method="get" {
            label { "Words (every one must appear; word starts match)"
                input type="search" name="q" value=(text) autofocus; }
            button type="submit" { "Search" }
        }
        @match hits {
            None => p.muted { "Searches prompts, answers, reasoning, tool arguments and results across every session." },
            Some(Err(message)) => p.flash { (message) },
            Some(Ok(hits)) if hits.is_empty() => p { "Nothing matches." },
            Some(Ok(hits)) => {
                ol.hits #hits start=(paging.offset + 1) {
                    @for h in hits {
                        li {
                            a href=(paths::line(h.session_id, h.n)) {
                                (h.repository.as_deref().unwrap_or("(unknown place)")) " · line " (h.n)
                            }
                            " " span.muted { (h.kind.as_deref().unwrap_or("")) " · " (datetime(h.started_at)) }
                            br;
                            span.snippet {
                                @for (marked, run) in highlight(&h.snippet, &words) {
                                    @if marked { mark { (run) } } @else { (run) }
                                }
                            }
                        }
                    }
                }
                @if hits.len() as u64 == u64::from(paging.limit) {
                    nav.pager { a href=(next) rel="next" { "More results →" } }
                }
            }
        }
    }
}
