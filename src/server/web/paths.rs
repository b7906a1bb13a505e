//! The web UI's URLs, built in one place.

use crate::ids::SessionId;

/// Lines per page of a transcript; pages start at multiples of this line number, so a line's
/// page is known from its number alone.
pub const PAGE_LINES: u64 = 500;

/// The first line number of the page holding line `n`.
pub fn page_start(n: u64) -> u64 {
    n - n % PAGE_LINES
}

/// A session's page.
pub fn session(id: SessionId) -> String {
    format!("/sessions/{}", id.dashed())
}

/// Line `n` of a session, on its page.
pub fn line(id: SessionId, n: u64) -> String {
    format!("/sessions/{}?from={}#L{n}", id.dashed(), page_start(n))
}

/// A stored line as plain text (where "show all" leads).
pub fn raw_line(id: SessionId, n: u64) -> String {
    format!("/sessions/{}/lines/{n}/raw", id.dashed())
}

/// The live stream of a session's lines after `after`, as HTML fragments for the page.
pub fn live(id: SessionId, after: Option<u64>, hide_hooks: bool, hide_lifecycle: bool) -> String {
    let mut url = format!("/api/sessions/{}/live?format=html", id.dashed());
    if let Some(after) = after {
        url.push_str(&format!("&after={after}"));
    }
    if hide_hooks {
        url.push_str("&hide_hooks=1");
    }
    if hide_lifecycle {
        url.push_str("&hide_lifecycle=1");
    }
    url
}

/// Percent-encodes a query-string value (everything but unreserved characters).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_links_to_its_page() {
        let id: SessionId = "96ef38f0-9d09-45c3-8124-6448c36090ed".parse().unwrap();
        assert_eq!(
            line(id, 1234),
            "/sessions/96ef38f0-9d09-45c3-8124-6448c36090ed?from=1000#L1234"
        );
        assert_eq!(page_start(499), 0);
        assert_eq!(encode("a b&c/é"), "a%20b%26c%2F%C3%A9");
    }
}
