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
                    th.num scope="col" { "Requests" }
                    th.num scope="col" { "Premium" }
                    th.num scope="col" { "Input" }
                    th.num scope="col" { "Output" }
                    th.num scope="col" { "Cache read" }
                    th.num scope="col" { "Cache write" }
                    th.num scope="col" { "Reasoning" }
                } }
                tbody {
                    @for (model, m) in &u.models {
                        tr {
                            th scope="row" { (model) }
                            td.num { (number(m.requests)) }
                            td.num { (number(m.premium_cost)) }
                            td.num { (number(m.input_tokens)) }
                            td.num { (number(m.output_tokens)) }
                            td.num { (number(m.cache_read_tokens)) }
                            td.num { (number(m.cache_write_tokens)) }
                            td.num { (number(m.reasoning_tokens)) }
                        }
                    }
                    tr.total {
                        th scope="row" { "Total" }
                        td.num { (number(u.models.values().map(|m| m.requests).sum())) }
                        td.num { (number(u.premium_requests)) " premium requests" }
                        td.num { (number(sums[0])) }
                        td.num { (number(sums[1])) }
                        td.num { (number(sums[2])) }
                        td.num { (number(sums[3])) }
                        td.num { (number(u.models.values().map(|m| m.reasoning_tokens).sum())) }
                    }
                }
            }
        }
    }
}
