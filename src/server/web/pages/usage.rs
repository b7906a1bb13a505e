//! `/usage`: tokens and premium requests by day, model, repository or machine, as charts and a
//! table; every figure comes from stored `session.shutdown` lines, each counted once.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};

use super::{filters_form, shell};
use crate::server::web::api::{total, UsageQuery};
use crate::server::web::chart::bars;
use crate::server::web::format::number;
use crate::server::web::layout::{error_page, page, respond, Section};
use crate::server::web::model::{Facets, UsageGroup, UsageRow};
use crate::server::web::query::FilterQuery;
use crate::server::web::{aggregate, page_read_error, Viewer, Web};

const GROUPS: [(UsageGroup, &str); 4] = [
    (UsageGroup::Day, "By day"),
    (UsageGroup::Model, "By model"),
    (UsageGroup::Repo, "By repository"),
    (UsageGroup::Machine, "By machine"),
];

/// Serves the usage page.
pub async fn handler(
    State(web): State<Web>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<UsageQuery>,
) -> Response {
    let Some(group) = UsageGroup::parse(q.group.as_deref().unwrap_or("day")) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "group must be one of day, model, repo, machine",
        );
    };
    let filter = match q.filter.filter() {
        Ok(f) => f,
        Err(m) => return error_page(StatusCode::BAD_REQUEST, &m),
    };
    match web
        .read(move |r| Ok((r.usage_sources(&filter)?, r.facets()?)))
        .await
    {
        Ok((sources, facets)) => {
            let rows = aggregate::usage(&sources, group);
            let body = render(group, &q.filter, &rows, &facets);
            respond(
                StatusCode::OK,
                page(&shell(viewer, "Usage", Section::Usage, ""), body),
            )
        }
        Err(e) => page_read_error(e),
    }
}

/// The usage page's content.
pub fn render(group: UsageGroup, q: &FilterQuery, rows: &[UsageRow], facets: &Facets) -> Markup {
    let filters = q.without_offset();
    let tokens: Vec<(String, f64)> = rows
        .iter()
        .map(|r| (r.key.clone(), r.input_tokens + r.output_tokens))
        .collect();
    let premium: Vec<(String, f64)> = rows.iter().map(|r| (r.key.clone(), r.premium_requests)).collect();
    let t = total(rows);
    html! {
        h1 { "Usage" }
        nav.pager aria-label="Group by" {
            @for (g, label) in GROUPS {
                @let href = if filters.is_empty() { format!("/usage?group={}", g.name()) } else { format!("/usage?group={}&{filters}", g.name()) };
                @if g == group { a href=(href) aria-current="page" { strong { (label) } } } @else { a href=(href) { (label) } }
            }
        }
        (filters_form("/usage", q, facets, &[("group", group.name())]))
        @if rows.is_empty() {
            p { "No usage yet: figures come from session.shutdown lines, which Copilot writes when a session ends." }
        } @else {
            div.grid2 {
                (bars("Tokens (input + output)", &tokens))
                (bars("Premium requests", &premium))
            }
            div.scroll {
                table #usage-table {
                    thead { tr {
                        th scope="col" { (GROUPS.iter().find(|(g, _)| *g == group).map_or("", |(_, l)| l.trim_start_matches("By "))) }
                        th.num scope="col" { "Sessions" }
                        th.num scope="col" { "Requests" }
                        th.num scope="col" { "Premium" }
                        th.num scope="col" { "Input" }
                        th.num scope="col" { "Output" }
                        th.num scope="col" { "Cache read" }
                        th.num scope="col" { "Cache write" }
                    } }
                    tbody {
                        @for r in rows {
                            tr {
                                th scope="row" { (r.key) }
                                td.num { (number(r.sessions as f64)) }
                                td.num { (number(r.requests)) }
                                td.num { (number(r.premium_requests)) }
                                td.num { (number(r.input_tokens)) }
                                td.num { (number(r.output_tokens)) }
                                td.num { (number(r.cache_read_tokens)) }
                                td.num { (number(r.cache_write_tokens)) }
                            }
                        }
                        tr.total {
                            th scope="row" { "Total" }
                            td.num {}
                            td.num { (number(t.requests)) }
                            td.num { (number(t.premium_requests)) }
                            td.num { (number(t.input_tokens)) }
                            td.num { (number(t.output_tokens)) }
                            td.num { (number(t.cache_read_tokens)) }
                            td.num { (number(t.cache_write_tokens)) }
                        }
                    }
                }
            }
        }
    }
}
