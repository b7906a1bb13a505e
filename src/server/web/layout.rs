//! The page shell every page shares, and the security headers every web response carries.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::assets;

/// No inline script or style, nothing from another origin, no framing, no plugins: a
/// transcript that slips past escaping still cannot run anything.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Which top-level section a page belongs to (for the navigation's `aria-current`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Sessions,
    Usage,
    Search,
    Login,
}

/// What the shell needs besides the page's own content.
pub struct Shell<'a> {
    pub title: &'a str,
    pub section: Section,
    /// Whether to offer "log out" (the server has a token and the reader is logged in).
    pub logout: bool,
    /// Whether the page loads the live-update script.
    pub script: bool,
    /// The search box's current text.
    pub query: &'a str,
}

/// A whole page around `content`.
pub fn page(shell: &Shell<'_>, content: Markup) -> Markup {
    let link = |section: Section, href: &str, label: &str| {
        html! {
            @if shell.section == section {
                a href=(href) aria-current="page" { (label) }
            } @else {
                a href=(href) { (label) }
            }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (shell.title) " · kcap" }
                link rel="stylesheet" href=(assets::css_url());
                link rel="icon" type="image/svg+xml" href=(assets::icon_url());
                @if shell.script {
                    script src=(assets::js_url()) defer {}
                }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "kcap" }
                    @if shell.section != Section::Login {
                        nav aria-label="Main" {
                            (link(Section::Sessions, "/", "Sessions"))
                            (link(Section::Usage, "/usage", "Usage"))
                            (link(Section::Search, "/search", "Search"))
                        }
                        form role="search" action="/search" method="get" {
                            label.skip for="q-top" { "Search transcripts" }
                            input #q-top type="search" name="q" value=(shell.query) placeholder="Search transcripts";
                            button type="submit" { "Search" }
                        }
                        @if shell.logout {
                            form action="/logout" method="post" {
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" { (content) }
            }
        }
    }
}

/// The headers every HTML response carries.
pub fn security_headers(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, name, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // Not no-referrer: under it browsers send `Origin: null` on same-origin form posts, and the
    // login form's origin check must see this server. Other sites still learn nothing.
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::CACHE_CONTROL, "no-store");
}

/// An HTML response with the security headers.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(response.headers_mut());
    response
}

/// A page that says what went wrong, in the shell.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let shell = Shell {
        title: "Error",
        section: Section::Sessions,
        logout: false,
        script: false,
        query: "",
    };
    respond(
        status,
        page(
            &shell,
            html! { h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) } p { (message) } p { a href="/" { "All sessions" } } },
        ),
    )
}
