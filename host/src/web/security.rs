//! The checks every request to the local pages passes, and the headers every answer carries.
//!
//! The server listens on 127.0.0.1, but any web page the desk's browser opens can make it send
//! requests here. Three checks keep such pages out:
//! - **Host**: a DNS-rebinding page reaches 127.0.0.1 under its own name, so its requests carry
//!   that name in `Host`; only `127.0.0.1:PORT` and `localhost:PORT` are answered (421).
//! - **Origin**: a browser names the page that made a request; when it does, it must be this
//!   server (403).
//! - **CSRF**: every request that changes something (any method but GET and HEAD) carries this
//!   process's token, which only a page served here can read, in `X-CSRF-Token`, and must not
//!   be marked cross-site by `Sec-Fetch-Site` (403). Cross-site forms cannot set headers, and
//!   the API takes only JSON, which a form cannot send.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;

use super::Shared;

/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What the browser may load and where it may send: this server only, no inline scripts or
/// styles, no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// A fresh random token (256 bits, hex).
pub fn new_csrf_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Why a request was refused; the text is what the client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("This address is not DeviceHub's local page. Open http://127.0.0.1:PORT/ or http://localhost:PORT/ on this computer instead.")]
    ForeignHost,
    #[error("Requests from other web pages are not accepted. Open DeviceHub's page directly on this computer.")]
    ForeignOrigin,
    #[error(
        "The request did not carry this page's security token. Reload the page and try again."
    )]
    MissingCsrfToken,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match self {
            Refusal::ForeignHost => StatusCode::MISDIRECTED_REQUEST,
            Refusal::ForeignOrigin | Refusal::MissingCsrfToken => StatusCode::FORBIDDEN,
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.to_string(),
        )
            .into_response()
    }
}

/// Decides whether a request may reach the pages; see the module doc.
pub fn verdict(
    method: &Method,
    headers: &HeaderMap,
    port: u16,
    csrf_token: &str,
) -> Result<(), Refusal> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or(Refusal::ForeignHost)?;
    if !is_own_authority(host, port) {
        return Err(Refusal::ForeignHost);
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = origin
            .to_str()
            .ok()
            .and_then(|o| o.strip_prefix("http://"))
            .is_some_and(|authority| is_own_authority(authority, port));
        if !own {
            return Err(Refusal::ForeignOrigin);
        }
    }
    if method != Method::GET && method != Method::HEAD {
        let site = headers
            .get("sec-fetch-site")
            .and_then(|s| s.to_str().ok())
            .unwrap_or("same-origin");
        if site != "same-origin" {
            return Err(Refusal::ForeignOrigin);
        }
        let token = headers
            .get(CSRF_HEADER)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !constant_time_eq(token, csrf_token.as_bytes()) {
            return Err(Refusal::MissingCsrfToken);
        }
    }
    Ok(())
}

/// Whether `authority` (`host:port`) names this server.
fn is_own_authority(authority: &str, port: u16) -> bool {
    let Some((host, authority_port)) = authority.rsplit_once(':') else {
        return false;
    };
    authority_port.parse::<u16>() == Ok(port)
        && (host == "127.0.0.1" || host.eq_ignore_ascii_case("localhost"))
}

/// Compares without stopping at the first difference, so that timing does not reveal how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The middleware that applies [`verdict`].
pub(super) async fn check(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    match verdict(
        request.method(),
        request.headers(),
        shared.port,
        &shared.csrf_token,
    ) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(method = %request.method(), path = request.uri().path(), "local pages refused a request: {refusal:?}");
            refusal.into_response()
        }
    }
}

/// Headers on every answer: the CSP, no sniffing, no framing, no referrer, no caching.
pub(super) async fn headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef";

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn only_this_servers_names_are_answered() {
        for host in ["127.0.0.1:8091", "localhost:8091", "LocalHost:8091"] {
            assert_eq!(
                verdict(&Method::GET, &request(&[("host", host)]), 8091, TOKEN),
                Ok(())
            );
        }
        for host in [
            "evil.example:8091",
            "127.0.0.1:8092",
            "127.0.0.1",
            "localhost.evil.example:8091",
            "[::1]:8091",
        ] {
            assert_eq!(
                verdict(&Method::GET, &request(&[("host", host)]), 8091, TOKEN),
                Err(Refusal::ForeignHost),
                "{host}"
            );
        }
        assert_eq!(
            verdict(&Method::GET, &HeaderMap::new(), 8091, TOKEN),
            Err(Refusal::ForeignHost)
        );
    }

    #[test]
    fn origins_must_be_this_server() {
        let own = request(&[
            ("host", "127.0.0.1:8091"),
            ("origin", "http://localhost:8091"),
        ]);
        assert_eq!(verdict(&Method::GET, &own, 8091, TOKEN), Ok(()));
        for origin in [
            "http://evil.example",
            "https://127.0.0.1:8091",
            "null",
            "http://127.0.0.1:9000",
        ] {
            let headers = request(&[("host", "127.0.0.1:8091"), ("origin", origin)]);
            assert_eq!(
                verdict(&Method::GET, &headers, 8091, TOKEN),
                Err(Refusal::ForeignOrigin),
                "{origin}"
            );
        }
    }

    #[test]
    fn state_changes_need_the_token_and_the_same_origin() {
        let host = ("host", "127.0.0.1:8091");
        assert_eq!(
            verdict(&Method::POST, &request(&[host]), 8091, TOKEN),
            Err(Refusal::MissingCsrfToken)
        );
        assert_eq!(
            verdict(
                &Method::POST,
                &request(&[host, (CSRF_HEADER, "0123456789abcdeX")]),
                8091,
                TOKEN
            ),
            Err(Refusal::MissingCsrfToken)
        );
        assert_eq!(
            verdict(
                &Method::POST,
                &request(&[host, (CSRF_HEADER, TOKEN)]),
                8091,
                TOKEN
            ),
            Ok(())
        );
        assert_eq!(
            verdict(
                &Method::POST,
                &request(&[host, (CSRF_HEADER, TOKEN), ("sec-fetch-site", "cross-site")]),
                8091,
                TOKEN
            ),
            Err(Refusal::ForeignOrigin)
        );
    }

    #[test]
    fn tokens_are_fresh_and_long() {
        let (a, b) = (new_csrf_token(), new_csrf_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
