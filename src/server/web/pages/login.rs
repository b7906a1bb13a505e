//! `/login` and `/logout`: a browser trades the server's token (or a named token) for an
//! HttpOnly, SameSite=Strict cookie.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::shell;
use crate::server::web::auth::{local_next, login_cookie, logout_cookie, same_origin};
use crate::server::web::layout::{error_page, page, respond, Section};
use crate::server::web::{redirect, Access, Viewer, Web};

/// `?next=` and the form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct LoginForm {
    pub token: Option<String>,
    pub next: Option<String>,
}

/// The login page's content.
pub fn render(next: &str, error: Option<&str>) -> Markup {
    html! {
        h1 { "Log in" }
        p { "This server needs a token to read transcripts: the one given to " code { "kcap serve --token" } " or one made with " code { "kcap serve token add" } "." }
        @if let Some(e) = error { p.flash role="alert" { (e) } }
        form.login action="/login" method="post" {
            input type="hidden" name="next" value=(next);
            label for="token" { "Token" }
            input #token type="password" name="token" autocomplete="current-password" required autofocus;
            button type="submit" { "Log in" }
        }
    }
}

/// Shows the form (or goes home when the server needs no token).
pub async fn form(State(web): State<Web>, Query(q): Query<LoginForm>) -> Response {
    if web.access(None).await == Access::Open {
        return redirect("/");
    }
    let next = local_next(q.next.as_deref());
    let shell = shell(Viewer::default(), "Log in", Section::Login, "");
    respond(StatusCode::OK, page(&shell, render(&next, None)))
}

/// Checks the token and sets the cookie.
pub async fn submit(State(web): State<Web>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    if !same_origin(&headers) {
        return error_page(StatusCode::FORBIDDEN, "Log in from this server's own page.");
    }
    let next = local_next(f.next.as_deref());
    let token = f.token.unwrap_or_default();
    let access = if token.is_empty() {
        web.access(None).await
    } else {
        web.access(Some(token.clone())).await
    };
    if access == Access::Open {
        return redirect(&next);
    }
    if access == Access::Unavailable {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server cannot check tokens right now; try again shortly.",
        );
    }
    if access == Access::Denied {
        let shell = shell(Viewer::default(), "Log in", Section::Login, "");
        return respond(
            StatusCode::UNAUTHORIZED,
            page(&shell, render(&next, Some("That token is not valid here."))),
        );
    }
    let mut response = redirect(&next);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, login_cookie(&token));
    response
}

/// Forgets the cookie.
pub async fn logout(headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return error_page(StatusCode::FORBIDDEN, "Log out from this server's own page.");
    }
    let mut response = redirect("/login");
    response.headers_mut().insert(header::SET_COOKIE, logout_cookie());
    response
}
