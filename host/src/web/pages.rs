//! The pages, style sheet and script from `assets/web/`, built into the binary so that an
//! installed DeviceHub needs no files beside it to show them.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::Shared;

const WELCOME: &str = include_str!("../../../assets/web/welcome.html");
const REGISTER: &str = include_str!("../../../assets/web/register.html");
const STATUS: &str = include_str!("../../../assets/web/status.html");
const NOT_FOUND: &str = include_str!("../../../assets/web/not-found.html");
const STYLE: &str = include_str!("../../../assets/web/style.css");
const SCRIPT: &str = include_str!("../../../assets/web/app.js");

/// Where each page puts the CSRF token (a `<meta>` tag's content).
const CSRF_PLACEHOLDER: &str = "{{csrf-token}}";

/// A page with this process's CSRF token filled in.
fn page(shared: &Shared, template: &str) -> Html<String> {
    Html(template.replace(CSRF_PLACEHOLDER, &shared.csrf_token))
}

fn registered(shared: &Shared) -> bool {
    shared.agent.thing().borrow().is_some()
}

/// `/`: the welcome page, or the status page once this computer is registered.
pub(super) async fn welcome(State(shared): State<Arc<Shared>>) -> Response {
    if registered(&shared) {
        return Redirect::to("/status").into_response();
    }
    page(&shared, WELCOME).into_response()
}

/// `/register`: the activation code form; registered computers go to the status page.
pub(super) async fn register(State(shared): State<Arc<Shared>>) -> Response {
    if registered(&shared) {
        return Redirect::to("/status").into_response();
    }
    page(&shared, REGISTER).into_response()
}

/// `/status`.
pub(super) async fn status(State(shared): State<Arc<Shared>>) -> Response {
    page(&shared, STATUS).into_response()
}

pub(super) async fn not_found(State(shared): State<Arc<Shared>>) -> Response {
    (StatusCode::NOT_FOUND, page(&shared, NOT_FOUND)).into_response()
}

pub(super) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

pub(super) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_load_nothing_from_elsewhere_and_carry_the_token() {
        for (name, html) in [
            ("welcome", WELCOME),
            ("register", REGISTER),
            ("status", STATUS),
            ("not-found", NOT_FOUND),
        ] {
            assert!(
                html.contains(CSRF_PLACEHOLDER),
                "{name} has no CSRF meta tag"
            );
            assert!(
                html.contains("<html lang=\"en\">"),
                "{name} has no language"
            );
            for foreign in ["http://", "https://", "//", "<style", " style=", "onclick"] {
                assert!(
                    !html.contains(foreign),
                    "{name} contains {foreign:?}: the CSP allows only this server's files"
                );
            }
        }
        assert!(!SCRIPT.contains("http://") && !SCRIPT.contains("https://"));
        assert!(!STYLE.contains("url("));
    }
}
