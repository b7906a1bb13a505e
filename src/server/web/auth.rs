//! Who may read: with a token configured, every page and read API needs one, from an
//! `Authorization: Bearer` header (scripts) or the cookie the login page sets (browsers).
//!
//! The cookie is HttpOnly (no script can read it) and SameSite=Strict (no other site's page can
//! make the browser send it), and holds the token hex-encoded so any token survives the cookie
//! syntax. Login and logout refuse cross-origin posts.

use axum::http::{header, HeaderMap, HeaderValue};

/// The cookie's name.
pub const COOKIE: &str = "kcap_token";
/// How long a login lasts (30 days).
const MAX_AGE_S: u64 = 30 * 24 * 3600;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) || s.len() > 2048 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The `Set-Cookie` value that logs a browser in with `token`.
pub fn login_cookie(token: &str) -> HeaderValue {
    let value = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={MAX_AGE_S}",
        hex(token.as_bytes())
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` value that logs a browser out.
pub fn logout_cookie() -> HeaderValue {
    HeaderValue::from_static("kcap_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The token a request presents: its bearer header, else its login cookie.
pub fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::server::auth::bearer)
    {
        return Some(bearer.to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .find_map(unhex)
}

/// Whether a form post comes from this server's own pages: a browser's `Origin` (or, failing
/// that, `Referer`) must name the host the request was sent to. Requests with neither (not
/// browsers) pass.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(source) = source else {
        return true;
    };
    let rest = source
        .strip_prefix("http://")
        .or_else(|| source.strip_prefix("https://"));
    rest.is_some_and(|r| r.split('/').next() == Some(host))
}

/// Where to go after logging in: a local path only (never another site).
pub fn local_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_round_trips_any_token() {
        for token in ["plain", "with spaces; and=signs", "ünï"] {
            let set = login_cookie(token);
            let set = set.to_str().unwrap();
            assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
            let pair = set.split(';').next().unwrap();
            let mut h = HeaderMap::new();
            h.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("other=1; {pair}")).unwrap(),
            );
            assert_eq!(presented(&h).as_deref(), Some(token));
        }
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("kcap_token=zz"));
        assert_eq!(presented(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        assert_eq!(presented(&h).as_deref(), Some("t"));
    }

    #[test]
    fn only_local_paths_and_same_origin_posts() {
        assert_eq!(local_next(Some("/sessions/x?a=1")), "/sessions/x?a=1");
        for bad in ["//evil.example", "https://evil.example", "/\\evil", "x"] {
            assert_eq!(local_next(Some(bad)), "/", "{bad}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(!same_origin(&h));
    }
}
