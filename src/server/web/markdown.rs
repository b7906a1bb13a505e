//! Markdown from a transcript, rendered safely.
//!
//! Two independent layers, so one bug does not make a transcript able to run script:
//! 1. while parsing, raw HTML becomes literal text, and links or images whose URL is not
//!    `http(s):` or `mailto:` lose their URL (images become links: a transcript never makes the
//!    browser fetch anything);
//! 2. the HTML produced is passed through ammonia's allow-list sanitizer, which also sets
//!    `rel="noopener noreferrer"` on every link.
//!
//! The page's Content-Security-Policy (no inline script) is the third.

use std::sync::OnceLock;

use pulldown_cmark::{html, CowStr, Event, LinkType, Options, Parser, Tag, TagEnd};

/// The only URL schemes a rendered link may carry.
const SCHEMES: [&str; 3] = ["http://", "https://", "mailto:"];

/// Whether `url` may become a link: an absolute `http(s)` or `mailto` URL, nothing else
/// (no `javascript:`, `data:`, relative or protocol-relative URLs).
pub fn safe_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    SCHEMES.iter().any(|s| lower.starts_with(s)) && !url.chars().any(char::is_control)
}

fn sanitizer() -> &'static ammonia::Builder<'static> {
    static SANITIZER: OnceLock<ammonia::Builder<'static>> = OnceLock::new();
    SANITIZER.get_or_init(|| {
        let mut b = ammonia::Builder::default();
        b.link_rel(Some("noopener noreferrer"))
            .url_schemes(["http", "https", "mailto"].into_iter().collect())
            .url_relative(ammonia::UrlRelative::Deny)
            .rm_tags(["img"]);
        b
    })
}

/// Renders CommonMark (with tables, strikethrough and task lists) to sanitized HTML.
pub fn render(text: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    // For each open link or image: whether its start was kept (so its end is too).
    let mut open: Vec<bool> = Vec::new();
    let events = Parser::new_ext(text, options).filter_map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Some(Event::Text(raw)),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            let keep = safe_url(&dest_url);
            open.push(keep);
            keep.then_some(Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }))
        }
        Event::Start(Tag::Image {
            dest_url, title, id, ..
        }) => {
            let keep = safe_url(&dest_url);
            open.push(keep);
            keep.then_some(Event::Start(Tag::Link {
                link_type: LinkType::Inline,
                dest_url,
                title,
                id,
            }))
        }
        Event::End(TagEnd::Link) | Event::End(TagEnd::Image) => {
            open.pop().unwrap_or(false).then_some(Event::End(TagEnd::Link))
        }
        Event::InlineMath(m) | Event::DisplayMath(m) => Some(Event::Code(m)),
        Event::FootnoteReference(r) => Some(Event::Text(CowStr::from(format!("[^{r}]")))),
        other => Some(other),
    });
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    html::push_html(&mut out, events);
    sanitizer().clean(&out).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders() {
        let html = render("# Title\n\n**bold** and `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(html.contains("<strong>bold</strong>"));
        assert!(html.contains("<code>code</code>"));
        assert!(html.contains("<table>"));
    }

    #[test]
    fn raw_html_is_shown_as_text() {
        for hostile in [
            "<script>alert(1)</script>",
            "hi <img src=x onerror=alert(1)> there",
            "<iframe src=\"https://evil\"></iframe>",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<svg><script>alert(1)</script></svg>",
            "<style>body{display:none}</style>",
        ] {
            let html = render(hostile);
            for bad in ["<script", "<img", "<iframe", "<a ", "<svg", "<style"] {
                assert!(!html.contains(bad), "{hostile} gave {html}");
            }
            assert!(
                html.contains("&lt;"),
                "{hostile} is still visible as text: {html}"
            );
        }
    }

    #[test]
    fn only_http_and_mailto_links_survive_and_they_get_rel() {
        let html = render("[ok](https://example.com/a?b=1) [mail](mailto:a@b.c)");
        assert_eq!(html.matches("rel=\"noopener noreferrer\"").count(), 2, "{html}");
        for hostile in [
            "[x](javascript:alert(1))",
            "[x](JaVaScRiPt:alert(1))",
            "[x](java\tscript:alert(1))",
            "[x](data:text/html,<script>alert(1)</script>)",
            "[x](vbscript:msgbox)",
            "[x](//evil.example/path)",
            "[x](/relative)",
            "<javascript:alert(1)>",
            "[x]: javascript:alert(1)\n\n[x]",
        ] {
            let html = render(hostile);
            assert!(!html.contains("href"), "{hostile} gave {html}");
        }
    }

    #[test]
    fn images_become_links_and_never_load() {
        let html = render("![alt text](https://example.com/i.png) ![y](javascript:alert(1))");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("href=\"https://example.com/i.png\""), "{html}");
        assert!(html.contains("alt text"));
        assert_eq!(html.matches("href").count(), 1);
    }
}
