//! The stylesheet and the one script, compiled into the binary and served with a content hash
//! in their URL, so they are cached for good and never stale.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The stylesheet.
pub const CSS: &str = include_str!("assets/app.css");
/// The live-update script (the only script the pages load).
pub const JS: &str = include_str!("assets/live.js");
/// The page icon (without one, browsers ask for /favicon.ico and log a 404).
pub const ICON: &str = include_str!("assets/icon.svg");

fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut h = blake3::Hasher::new();
        h.update(CSS.as_bytes());
        h.update(JS.as_bytes());
        h.update(ICON.as_bytes());
        h.finalize().to_hex()[..12].to_string()
    })
}

/// The stylesheet's URL.
pub fn css_url() -> String {
    format!("/assets/app.css?v={}", version())
}

/// The script's URL.
pub fn js_url() -> String {
    format!("/assets/live.js?v={}", version())
}

/// The icon's URL.
pub fn icon_url() -> String {
    format!("/assets/icon.svg?v={}", version())
}

/// Serves `/assets/{name}`.
pub fn serve(name: &str) -> Response {
    let (body, kind) = match name {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "live.js" => (JS, "text/javascript; charset=utf-8"),
        "icon.svg" => (ICON, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
