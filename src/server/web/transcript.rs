//! A transcript line as HTML: one `<article id="L{n}">` per line. Everything from the line is
//! escaped by maud, except markdown, which [`super::markdown::render`] sanitizes; long texts are
//! cut with a "show all" link to the raw line, so a multi-megabyte line costs the page nothing.

use std::collections::HashMap;

use maud::{html, Markup, PreEscaped};

use super::entry::{parse, Entry, Parsed};
use super::format::truncate;
use super::{markdown, paths};
use crate::ids::SessionId;

/// Markdown beyond this many bytes is cut (the rest is one click away).
pub const TEXT_LIMIT: usize = 64 * 1024;
/// Tool arguments, results and system prompts beyond this many bytes are cut.
pub const CODE_LIMIT: usize = 16 * 1024;
/// Characters of a collapsed tool call's arguments shown in its summary line.
const PREVIEW_CHARS: usize = 100;

/// What rendering a page of lines remembers from line to line.
pub struct Context {
    session: SessionId,
    /// Tool names by call id, so a result names its tool.
    tools: HashMap<String, String>,
}

impl Context {
    /// A fresh context for one page of a session.
    pub fn new(session: SessionId) -> Context {
        Context {
            session,
            tools: HashMap::new(),
        }
    }
}

/// Which categories of lines to leave out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hidden {
    pub hooks: bool,
    pub lifecycle: bool,
}

impl Hidden {
    fn hides(&self, parsed: &Parsed) -> bool {
        use super::entry::Category;
        match parsed.category() {
            Category::Hook => self.hooks,
            Category::Lifecycle => self.lifecycle,
            _ => false,
        }
    }
}

/// Renders line `n` (`None` when `hidden` filters it out).
pub fn line(ctx: &mut Context, n: u64, text: &str, hidden: Hidden) -> Option<Markup> {
    let parsed = parse(text);
    if hidden.hides(&parsed) {
        remember_tools(ctx, &parsed.entry);
        return None;
    }
    let raw = paths::raw_line(ctx.session, n);
    let label = label(&parsed);
    let body = body(ctx, &parsed.entry, &raw, text);
    let class = format!("line k-{}", parsed.category().name());
    Some(html! {
        article class=(class) id=(format!("L{n}")) data-n=(n) {
            header.meta {
                a.ln href=(format!("#L{n}")) title="Link to this line" { "#" (n) }
                span.kind { (label) }
                @if let Some(agent) = &parsed.agent {
                    span.badge title=(agent) { "sub-agent " (short(agent)) }
                }
                @if let Some(ts) = &parsed.timestamp {
                    time datetime=(ts) { (short_time(ts)) }
                }
            }
            (body)
        }
    })
}

fn remember_tools(ctx: &mut Context, entry: &Entry) {
    match entry {
        Entry::ToolStart { call_id, name, .. } => {
            ctx.tools.insert(call_id.clone(), name.clone());
        }
        Entry::Assistant { tool_requests, .. } => {
            for r in tool_requests {
                ctx.tools.insert(r.call_id.clone(), r.name.clone());
            }
        }
        _ => {}
    }
}

fn label(p: &Parsed) -> String {
    match &p.entry {
        Entry::User { .. } => "user".into(),
        Entry::Assistant { .. } => "assistant".into(),
        Entry::Reasoning { .. } => "reasoning".into(),
        Entry::ToolStart { .. } => "tool call".into(),
        Entry::ToolComplete { .. } => "tool result".into(),
        Entry::System { .. } => "system prompt".into(),
        Entry::Hook { end, .. } => if *end { "hook end" } else { "hook start" }.into(),
        Entry::Subagent { event, .. } => format!("sub-agent {event}"),
        Entry::Error { .. } => "error".into(),
        Entry::Other { kind, .. } => kind.chars().take(80).collect(),
        Entry::Unparsed => "unreadable line".into(),
    }
}

fn short(id: &str) -> &str {
    truncate(id, 12).0
}

/// `2026-04-23T17:08:08.893Z` → `17:08:08`.
fn short_time(ts: &str) -> &str {
    ts.get(11..19).unwrap_or(ts)
}

/// Text cut at `limit`, with a "show all" link when it was cut.
fn cut(text: &str, limit: usize, raw: &str) -> (String, Option<Markup>) {
    let (shown, was_cut) = truncate(text, limit);
    let more = was_cut.then(|| {
        html! {
            a.more href=(raw) { "show all (" (super::format::number((text.len() / 1024) as f64)) " KB)" }
        }
    });
    (shown.to_string(), more)
}

fn pre(text: &str, limit: usize, raw: &str) -> Markup {
    let (shown, more) = cut(text, limit, raw);
    html! { pre { (shown) } @if let Some(m) = more { (m) } }
}

fn preview(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = flat.chars().take(PREVIEW_CHARS).collect();
    if flat.chars().nth(PREVIEW_CHARS).is_some() {
        out.push('…');
    }
    out
}

fn body(ctx: &mut Context, entry: &Entry, raw: &str, line: &str) -> Markup {
    remember_tools(ctx, entry);
    match entry {
        Entry::User { content } => {
            let (shown, more) = cut(content, TEXT_LIMIT, raw);
            html! { div.prompt { (shown) } @if let Some(m) = more { (m) } }
        }
        Entry::Assistant {
            content,
            reasoning,
            tool_requests,
            output_tokens,
        } => {
            let (shown, more) = cut(content, TEXT_LIMIT, raw);
            html! {
                @if let Some(r) = reasoning {
                    details.reasoning { summary { "Reasoning" } (pre(r, CODE_LIMIT, raw)) }
                }
                @if !shown.is_empty() {
                    div.md { (PreEscaped(markdown::render(&shown))) }
                }
                @if let Some(m) = more { (m) }
                @if !tool_requests.is_empty() {
                    p.calls {
                        "calls "
                        @for (i, r) in tool_requests.iter().enumerate() {
                            @if i > 0 { ", " }
                            code { (r.name) }
                        }
                    }
                }
                @if let Some(t) = output_tokens {
                    p.note { (super::format::number(*t)) " output tokens" }
                }
            }
        }
        Entry::Reasoning { content } => html! {
            details.reasoning { summary { "Reasoning" } (pre(content, CODE_LIMIT, raw)) }
        },
        Entry::ToolStart {
            name,
            arguments,
            server,
            ..
        } => html! {
            details.tool {
                summary {
                    code { (name) }
                    @if let Some(s) = server { " " span.note { "(" (s) ")" } }
                    " " span.preview { (preview(arguments)) }
                }
                (pre(arguments, CODE_LIMIT, raw))
            }
        },
        Entry::ToolComplete {
            call_id,
            success,
            result,
            detail,
            error,
        } => {
            let name = ctx.tools.get(call_id).cloned().unwrap_or_else(|| "tool".into());
            let mark = match success {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "",
            };
            html! {
                details.tool {
                    summary {
                        code { (name) } " " (mark) " "
                        span.preview { (preview(error.as_deref().unwrap_or(result))) }
                    }
                    @if let Some(e) = error { p.error-text { (e) } }
                    (pre(result, CODE_LIMIT, raw))
                    @if let Some(d) = detail {
                        details { summary { "details" } (pre(d, CODE_LIMIT, raw)) }
                    }
                }
            }
        }
        Entry::System { content } => html! {
            details.system {
                summary { "System prompt (" (super::format::number((content.len() / 1024) as f64)) " KB)" }
                (pre(content, CODE_LIMIT, raw))
            }
        },
        Entry::Hook {
            hook_type,
            end,
            success,
            error,
        } => html! {
            p.note {
                code { (hook_type) }
                @if *end {
                    @match success { Some(true) => " ✓", Some(false) => " ✗", None => "" }
                }
                @if let Some(e) = error { " " span.error-text { (preview(e)) } }
            }
        },
        Entry::Subagent { name, .. } => html! { p.note { code { (name) } } },
        Entry::Error { kind, message } => {
            let (shown, more) = cut(message, CODE_LIMIT, raw);
            html! { p.error-text { strong { (kind) } ": " (shown) } @if let Some(m) = more { (m) } }
        }
        Entry::Other { summary, .. } => html! {
            @if !summary.is_empty() { p.note { (summary) } }
        },
        Entry::Unparsed => pre(line, CODE_LIMIT, raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str) -> String {
        let mut ctx = Context::new(SessionId::new_random());
        line(&mut ctx, 7, text, Hidden::default()).unwrap().into_string()
    }

    #[test]
    fn a_line_has_its_anchor_and_escapes_everything() {
        let html = render(
            r#"{"type":"user.message","data":{"content":"<script>alert(1)</script>"},"timestamp":"2026-01-01T10:11:12.000Z"}"#,
        );
        assert!(
            html.contains(r##"id="L7""##) && html.contains(r##"href="#L7""##),
            "{html}"
        );
        assert!(
            !html.contains("<script>") && html.contains("&lt;script&gt;"),
            "{html}"
        );
        assert!(html.contains("10:11:12"));
        let html = render(
            r#"{"type":"tool.execution_start","data":{"toolCallId":"c","toolName":"\"><img src=x onerror=alert(1)>","arguments":{"x":"</pre><script>"}},"agentId":"\"onmouseover=alert(1)"}"#,
        );
        assert!(!html.contains("<img") && !html.contains("<script>"), "{html}");
        assert!(!html.contains("\"onmouseover"), "{html}");
    }

    #[test]
    fn results_name_their_tool_and_long_texts_are_cut_with_a_link() {
        let mut ctx = Context::new(SessionId::new_random());
        let _ = line(
            &mut ctx,
            1,
            r#"{"type":"tool.execution_start","data":{"toolCallId":"c9","toolName":"grep"}}"#,
            Hidden::default(),
        );
        let big = "y".repeat(CODE_LIMIT * 3);
        let text = format!(
            r#"{{"type":"tool.execution_complete","data":{{"toolCallId":"c9","success":true,"result":{{"content":"{big}"}}}}}}"#
        );
        let html = line(&mut ctx, 2, &text, Hidden::default()).unwrap().into_string();
        assert!(html.contains("<code>grep</code> ✓"), "{html}");
        assert!(html.contains("show all (48 KB)"));
        assert!(html.len() < CODE_LIMIT * 2, "the page carries the cut text only");
    }

    #[test]
    fn hidden_categories_are_left_out() {
        let mut ctx = Context::new(SessionId::new_random());
        let hide = Hidden {
            hooks: true,
            lifecycle: false,
        };
        assert!(line(
            &mut ctx,
            1,
            r#"{"type":"hook.start","data":{"hookType":"x"}}"#,
            hide
        )
        .is_none());
        assert!(line(&mut ctx, 2, r#"{"type":"session.info","data":{}}"#, hide).is_some());
    }
}
