//! The pages: each module has its handler and a pure `render` the tests call directly.

pub mod login;
pub mod search;
pub mod session;
pub mod sessions;
pub mod usage;

use maud::{html, Markup};

use super::format::number;
use super::layout::{Section, Shell};
use super::model::Facets;
use super::query::FilterQuery;
use super::Viewer;
use crate::server::usage::Usage;

/// The shell of a page for `viewer`.
pub fn shell<'a>(viewer: Viewer, title: &'a str, section: Section, query: &'a str) -> Shell<'a> {
    Shell {
        title,
        section,
        logout: viewer.logged_in,
        script: false,
        query,
    }
}

fn select(name: &str, label: &str, options: &[String], current: Option<&str>) -> Markup {
    html! {
        label {
            (label)
            select name=(name) {
                option value="" { "any" }
                @for o in options {
                    option value=(o) selected[current == Some(o.as_str())] { (o) }
                }
            }
        }
    }
}

/// The filter form of the list and the usage page (a plain GET form: works without script).
pub fn filters_form(action: &str, q: &FilterQuery, facets: &Facets, hidden: &[(&str, &str)]) -> Markup {
    html! {
        form.filters action=(action) method="get" aria-label="Filters" {
            @for (k, v) in hidden { input type="hidden" name=(k) value=(v); }
            (select("agent", "Agent", &facets.agents, q.agent.as_deref()))
            (select("repository", "Repository", &facets.repositories, q.repository.as_deref()))
            (select("machine", "Machine", &facets.machines, q.machine.as_deref()))
            label { "From" input type="date" name="from" value=(q.from.as_deref().unwrap_or("")); }
            label { "To" input type="date" name="to" value=(q.to.as_deref().unwrap_or("")); }
            button type="submit" { "Apply" }
            a href=(action) { "Clear" }
        }
    }
}

/// Column headers of figure columns, right-aligned like their cells.
pub fn figure_headers(names: &[&str]) -> Markup {
    html! { @for name in names { th.num scope="col" { (name) } } }
}

/// One right-aligned cell per figure, in the order given (both usage tables' rows).
pub fn figure_cells(values: &[f64]) -> Markup {
    html! { @for v in values { td.num { (number(*v)) } } }
}

/// The figure column headers in rendered `html`, in order (the tables' tests read them).
#[cfg(test)]
fn figure_header_names(html: &str) -> Vec<&str> {
    let header = r#"<th class="num" scope="col">"#;
    html.split(header)
        .skip(1)
        .filter_map(|h| h.split('<').next())
        .collect()
}

/// Input, output and cache tokens of a usage (summed over models).
pub fn token_sums(u: &Usage) -> [f64; 4] {
    u.models.values().fold([0.0; 4], |mut acc, m| {
        acc[0] += m.input_tokens;
        acc[1] += m.output_tokens;
        acc[2] += m.cache_read_tokens;
        acc[3] += m.cache_write_tokens;
        acc
    })
}

/// A session's usage, per model, from its `session.shutdown` lines.
pub fn usage_table(u: &Usage) -> Markup {
    let sums = token_sums(u);
    html! {
        div.scroll {
            table #usage {
                caption.muted { "From " (u.shutdowns) " session.shutdown line" @if u.shutdowns != 1 { "s" }
                    @if !u.readings.is_empty() { " (later ones read as " (u.readings.join(", ")) ")" } }
                thead { tr {
                    th scope="col" { "Model" }
                    (figure_headers(&["Requests", "Premium", "Input", "Output", "Cache read", "Cache write", "Reasoning"]))
                } }
                tbody {
                    @for (model, m) in &u.models {
                        tr {
                            th scope="row" { (model) }
                            (figure_cells(&[m.requests, m.premium_cost, m.input_tokens, m.output_tokens,
                                m.cache_read_tokens, m.cache_write_tokens, m.reasoning_tokens]))
                        }
                    }
                    tr.total {
                        th scope="row" { "Total" }
                        td.num { (number(u.models.values().map(|m| m.requests).sum())) }
                        td.num { (number(u.premium_requests)) " premium requests" }
                        (figure_cells(&sums))
                        td.num { (number(u.models.values().map(|m| m.reasoning_tokens).sum())) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::usage::ModelUsage;

    /// A model's row holds its figures in the header's column order, one cell per column.
    #[test]
    fn a_usage_row_lines_up_with_its_headers() {
        let mut u = Usage::default();
        let figures = ModelUsage {
            requests: 1.0,
            premium_cost: 2.0,
            input_tokens: 3.0,
            output_tokens: 4.0,
            cache_read_tokens: 5.0,
            cache_write_tokens: 6.0,
            reasoning_tokens: 7.0,
            nano_aiu: 8.0,
        };
        u.models.insert("m".into(), figures);
        let html = usage_table(&u).into_string();
        assert_eq!(
            figure_header_names(&html),
            [
                "Requests",
                "Premium",
                "Input",
                "Output",
                "Cache read",
                "Cache write",
                "Reasoning"
            ]
        );
        let cells: String = (1..=7).map(|n| format!(r#"<td class="num">{n}</td>"#)).collect();
        assert!(
            html.contains(&format!(r#"<th scope="row">m</th>{cells}</tr>"#)),
            "{html}"
        );
    }
}
