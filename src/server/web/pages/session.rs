//! `/sessions/{id}`: a transcript as a conversation, a page of [`PAGE_LINES`] at a time, with the
//! session's facts and usage on top; live sessions append new lines as they arrive.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;

use super::{shell, usage_table};
use crate::machine::Millis;
use crate::server::web::format::{datetime, duration, number};
use crate::server::web::layout::{error_page, page, respond, Section};
use crate::server::web::model::{LinePage, SessionItem, SessionState};
use crate::server::web::paths::{self, PAGE_LINES};
use crate::server::web::query::number as parse_number;
use crate::server::web::transcript::{self, Hidden};
use crate::server::web::{page_read_error, session_id, Viewer, Web};

/// `?from=N&hide_hooks=1&hide_lifecycle=1`.
#[derive(Debug, Default, Deserialize)]
pub struct SessionQuery {
    pub from: Option<String>,
    pub hide_hooks: Option<String>,
    pub hide_lifecycle: Option<String>,
}

/// Serves a session's page.
pub async fn handler(
    State(web): State<Web>,
    Extension(viewer): Extension<Viewer>,
    Path(sid): Path<String>,
    Query(q): Query<SessionQuery>,
) -> Response {
    let id = match session_id(&sid) {
        Ok(id) => id,
        Err(m) => return error_page(StatusCode::BAD_REQUEST, &m),
    };
    let from = match parse_number("from", &q.from, 0) {
        Ok(n) => paths::page_start(n),
        Err(m) => return error_page(StatusCode::BAD_REQUEST, &m),
    };
    let flag = |v: &Option<String>| v.as_deref().is_some_and(|v| v != "0" && !v.is_empty());
    let hidden = Hidden {
        hooks: flag(&q.hide_hooks),
        lifecycle: flag(&q.hide_lifecycle),
    };
    let read = web
        .read(move |r| {
            let Some(item) = r.session_item(id)? else {
                return Ok(None);
            };
            let mut lines = r.line_page(id, from, PAGE_LINES as u32)?;
            // A page holds line numbers from..from+PAGE_LINES, whatever gaps there are.
            let end = from.saturating_add(PAGE_LINES);
            if lines.lines.iter().any(|l| l.n >= end) {
                lines.lines.retain(|l| l.n < end);
                lines.more = true;
            }
            Ok(Some((item, lines)))
        })
        .await;
    match read {
        Ok(Some((item, lines))) => {
            let title = item.place().unwrap_or("Session").to_string();
            let now = web.now();
            let live = item.state(now) == SessionState::Live && !lines.more;
            let mut shell = shell(viewer, &title, Section::Sessions, "");
            shell.script = live;
            let body = render(&item, &lines, from, hidden, live, now);
            respond(StatusCode::OK, page(&shell, body))
        }
        Ok(None) => error_page(StatusCode::NOT_FOUND, "No session with this id is stored here."),
        Err(e) => page_read_error(e),
    }
}

fn facts(item: &SessionItem, now: Millis) -> Markup {
    let state = item.state(now);
    html! {
        dl.facts {
            dt { "Session" } dd { code { (item.session_id.dashed()) } }
            dt { "Agent" } dd { (item.agent.as_deref().unwrap_or("unknown")) }
            @if let Some(r) = &item.repository { dt { "Repository" } dd { (r) } }
            @if let Some(c) = &item.cwd { dt { "Directory" } dd { code { (c) } } }
            dt { "Machine" } dd { (item.owner.as_deref().unwrap_or("–")) }
            dt { "Started" } dd { (datetime(item.started_at)) " UTC" }
            dt { "Duration" } dd {
                @match item.ended_at {
                    Some(end) => (duration(end.saturating_sub(item.started_at))),
                    None => { "≥ " (duration(item.last_seen.saturating_sub(item.started_at))) },
                }
            }
            dt { "State" } dd { span class=(format!("state state-{}", state.label().replace(' ', "-"))) { (state.label()) } }
            dt { "Lines" } dd { (number(item.lines_stored as f64)) " stored; complete through line " (item.last_line_number) }
        }
    }
}

/// The session page's content.
pub fn render(
    item: &SessionItem,
    lines: &LinePage,
    from: u64,
    hidden: Hidden,
    live: bool,
    now: Millis,
) -> Markup {
    let id = item.session_id;
    let base = paths::session(id);
    let filters = format!(
        "{}{}",
        if hidden.hooks { "&hide_hooks=1" } else { "" },
        if hidden.lifecycle { "&hide_lifecycle=1" } else { "" }
    );
    let mut ctx = transcript::Context::new(id);
    let rendered: Vec<Markup> = lines
        .lines
        .iter()
        .filter_map(|l| transcript::line(&mut ctx, l.n, &l.text, hidden))
        .collect();
    let last = lines.lines.last().map(|l| l.n);
    let live_url = paths::live(id, last.or(from.checked_sub(1)), hidden.hooks, hidden.lifecycle);
    html! {
        h1 { (item.place().unwrap_or("Session")) }
        (facts(item, now))
        h2 { "Usage" }
        @if item.usage.shutdowns == 0 {
            p.muted #usage { "No session.shutdown line stored yet: Copilot writes usage when a session ends." }
        } @else {
            (usage_table(&item.usage))
        }
        h2 #transcript { "Transcript" }
        form.filters action=(base) method="get" aria-label="Line filters" {
            input type="hidden" name="from" value=(from);
            label { input type="checkbox" name="hide_hooks" value="1" checked[hidden.hooks]; " Hide hook events" }
            label { input type="checkbox" name="hide_lifecycle" value="1" checked[hidden.lifecycle]; " Hide lifecycle events" }
            button type="submit" { "Apply" }
        }
        (pager(&base, from, lines.more, &filters))
        @if live {
            div #live data-live=(live_url) {
                p.live-status #live-status role="status" { "live: reload to see new lines (or enable JavaScript)" }
            }
        }
        @if lines.lines.is_empty() {
            p { "No stored lines on this page." }
        }
        div #lines { @for r in rendered { (r) } }
        (pager(&base, from, lines.more, &filters))
    }
}

fn pager(base: &str, from: u64, more: bool, filters: &str) -> Markup {
    html! {
        nav.pager aria-label="Transcript pages" {
            @if from > 0 {
                a href=(format!("{base}?from={}{filters}#transcript", from.saturating_sub(PAGE_LINES))) rel="prev" { "← Lines " (from.saturating_sub(PAGE_LINES)) "–" (from - 1) }
            }
            span.muted { "Lines " (from) "–" (from.saturating_add(PAGE_LINES - 1)) }
            @if more {
                a href=(format!("{base}?from={}{filters}#transcript", from.saturating_add(PAGE_LINES))) rel="next" { "Lines " (from.saturating_add(PAGE_LINES)) "– →" }
            }
        }
    }
}
