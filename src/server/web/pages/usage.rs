//! `/usage`: tokens and premium requests by day, model, repository or machine, as charts and a
//! table; every figure comes from stored `session.shutdown` lines, each counted once.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};

use super::{figure_cells, figure_headers, filters_form, shell};
use crate::server::web::api::{total, UsageQuery};
use crate::server::web::chart::bars;
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

/// A row's figures after its session count, in the table's column order.
fn figures(r: &UsageRow) -> [f64; 6] {
    [
        r.requests,
        r.premium_requests,
        r.input_tokens,
        r.output_tokens,
        r.cache_read_tokens,
        r.cache_write_tokens,
    ]
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
                        (figure_headers(&["Sessions", "Requests", "Premium", "Input", "Output", "Cache read", "Cache write"]))
                    } }
                    tbody {
                        @for r in rows {
                            tr {
                                th scope="row" { (r.key) }
                                (figure_cells(&[r.sessions as f64]))
                                (figure_cells(&figures(r)))
                            }
                        }
                        tr.total {
                            th scope="row" { "Total" }
                            td.num {}
                            (figure_cells(&figures(&t)))
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::figure_header_names;
    use super::*;

    /// A group's row and the total row hold their figures in the header's column order.
    #[test]
    fn rows_line_up_with_their_headers() {
        let row = UsageRow {
            key: "k".into(),
            sessions: 1,
            requests: 2.0,
            premium_requests: 3.0,
            input_tokens: 4.0,
            output_tokens: 5.0,
            cache_read_tokens: 6.0,
            cache_write_tokens: 7.0,
        };
        let html = render(
            UsageGroup::Model,
            &FilterQuery::default(),
            &[row],
            &Facets::default(),
        )
        .into_string();
        assert_eq!(
            figure_header_names(&html),
            [
                "Sessions",
                "Requests",
                "Premium",
                "Input",
                "Output",
                "Cache read",
                "Cache write"
            ]
        );
        let cells = |from: u32| -> String {
            (from..=7)
                .map(|n| format!(r#"<td class="num">{n}</td>"#))
                .collect()
        };
        assert!(
            html.contains(&format!(r#"<th scope="row">k</th>{}</tr>"#, cells(1))),
            "{html}"
        );
        let total = format!(
            r#"<th scope="row">Total</th><td class="num"></td>{}</tr>"#,
            cells(2)
        );
        assert!(html.contains(&total), "{html}");
    }
}
