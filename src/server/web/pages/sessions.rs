//! `/`: sessions, newest first, with filters and paging.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};

use super::{filters_form, shell, token_sums};
use crate::machine::Millis;
use crate::server::web::format::{datetime, duration, number};
use crate::server::web::layout::{error_page, page, respond, Section};
use crate::server::web::model::{Facets, Paging, SessionItem, SessionPage};
use crate::server::web::query::FilterQuery;
use crate::server::web::{page_read_error, paths, Viewer, Web};

/// Sessions per page unless `limit` says otherwise.
pub const PER_PAGE: u32 = 50;

/// Serves the list.
pub async fn handler(
    State(web): State<Web>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<FilterQuery>,
) -> Response {
    let (filter, paging) = match q.filter().and_then(|f| Ok((f, q.paging(PER_PAGE)?))) {
        Ok(x) => x,
        Err(m) => return error_page(StatusCode::BAD_REQUEST, &m),
    };
    let read = web
        .read(move |r| Ok((r.list_sessions(&filter, paging)?, r.facets()?)))
        .await;
    match read {
        Ok((list, facets)) => {
            let body = render(&q, &list, &facets, paging, web.now());
            respond(
                StatusCode::OK,
                page(&shell(viewer, "Sessions", Section::Sessions, ""), body),
            )
        }
        Err(e) => page_read_error(e),
    }
}

fn span(s: &SessionItem, now: Millis) -> String {
    match s.ended_at {
        Some(end) => duration(end.saturating_sub(s.started_at)),
        None => format!(
            "≥ {}",
            duration(s.last_seen.max(s.started_at).min(now) - s.started_at)
        ),
    }
}

/// The list page's content.
pub fn render(q: &FilterQuery, list: &SessionPage, facets: &Facets, paging: Paging, now: Millis) -> Markup {
    let base = q.without_offset();
    let link = |offset: u64| {
        if base.is_empty() {
            format!("/?offset={offset}")
        } else {
            format!("/?{base}&offset={offset}")
        }
    };
    let shown_to = paging.offset + list.sessions.len() as u64;
    html! {
        h1 { "Sessions" }
        (filters_form("/", q, facets, &[]))
        @if list.sessions.is_empty() {
            p { "No sessions match. Sessions appear here once kcap delivers a transcript line." }
        } @else {
            p.muted { "Sessions " (paging.offset + 1) "–" (shown_to) " of " (list.total) ", newest first" }
            div.scroll {
                table #sessions {
                    thead { tr {
                        th scope="col" { "Started (UTC)" }
                        th scope="col" { "Session" }
                        th scope="col" { "Machine" }
                        th scope="col" { "Duration" }
                        th scope="col" { "State" }
                        th.num scope="col" { "Lines" }
                        th.wide scope="col" { "Models" }
                        th.num scope="col" { "Input" }
                        th.num scope="col" { "Output" }
                        th.num.wide scope="col" { "Cache read" }
                        th.num.wide scope="col" { "Cache write" }
                        th.num scope="col" { "Premium" }
                    } }
                    tbody {
                        @for s in &list.sessions {
                            @let sums = token_sums(&s.usage);
                            @let state = s.state(now);
                            tr {
                                td { (datetime(s.started_at)) }
                                td {
                                    a href=(paths::session(s.session_id)) {
                                        (s.place().unwrap_or("(unknown place)"))
                                    }
                                    br;
                                    span.muted { (s.agent.as_deref().unwrap_or("agent unknown")) " · " code { (&s.session_id.dashed()[..8]) } }
                                }
                                td { (s.owner.as_deref().unwrap_or("–")) }
                                td { (span(s, now)) }
                                td { span class=(format!("state state-{}", state.label().replace(' ', "-"))) { (state.label()) } }
                                td.num { (number(s.lines_stored as f64)) }
                                td.wide { (s.usage.models.keys().cloned().collect::<Vec<_>>().join(", ")) }
                                td.num { (number(sums[0])) }
                                td.num { (number(sums[1])) }
                                td.num.wide { (number(sums[2])) }
                                td.num.wide { (number(sums[3])) }
                                td.num { (number(s.usage.premium_requests)) }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if paging.offset > 0 {
                    a href=(link(paging.offset.saturating_sub(u64::from(paging.limit)))) rel="prev" { "← Newer" }
                }
                @if shown_to < list.total {
                    a href=(link(shown_to)) rel="next" { "Older →" }
                }
            }
        }
    }
}
