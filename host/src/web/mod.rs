//! The registration and status pages on `http://127.0.0.1:8091/` (`[local] http_port`).
//!
//! # Pages and API
//! - `/`: the welcome page, or a redirect to `/status` once registered.
//! - `/register`: the activation code form with live progress; `POST /api/register` starts a
//!   registration, `GET /api/register/progress` follows it.
//! - `/status` and `GET /api/status`: the agent's [`StatusSnapshot`](crate::agent::StatusSnapshot).
//! - `GET /api/events`: server-sent events: scale readings, devices attached and detached, jobs.
//! - `/healthz`: a tiny JSON answer for service managers.
//!
//! The pages, their style sheet and script come from `assets/web/`, built into the binary; they
//! load nothing from elsewhere, and the Content-Security-Policy says so to the browser.
//!
//! # Security model
//! The server listens on 127.0.0.1 only. A web page elsewhere can still make a browser send
//! requests here, so [`security`] checks every request: the `Host` header must name this
//! server (which defeats DNS rebinding), an `Origin`, when present, must be this server's, and
//! every state-changing request must carry this process's CSRF token in a header and be JSON
//! (which a cross-site form cannot send).

mod api;
mod events;
mod pages;
pub mod registration;
pub mod security;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use registration::RegistrationRuns;

/// How long open requests (an event stream ends at once) may take to finish when stopping.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the pages could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen on 127.0.0.1:{port} for the local pages: {source}")]
    Bind { port: u16, source: std::io::Error },
}

/// What every handler shares.
#[derive(Debug)]
struct Shared {
    agent: Arc<Agent>,
    /// The port bound, which the `Host` and `Origin` checks expect.
    port: u16,
    /// This process's CSRF token: in every page's `<meta name="csrf-token">`, required in
    /// the `X-CSRF-Token` header of every state-changing request.
    csrf_token: String,
    registrations: RegistrationRuns,
    /// Ends the event streams when the server stops, so that the graceful stop does not wait
    /// on them forever.
    shutdown: CancellationToken,
}

/// The running pages server.
#[derive(Debug)]
pub struct LocalPages {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The serving task; taken by [`LocalPages::stop`].
    task: Option<JoinHandle<()>>,
}

impl LocalPages {
    /// Listens on `127.0.0.1:port` (0 picks a free port) and serves the pages until
    /// [`LocalPages::stop`].
    pub async fn start(agent: Arc<Agent>, port: u16) -> Result<LocalPages, WebError> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|source| WebError::Bind { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| WebError::Bind { port, source })?;
        agent.set_pages_address(Some(addr));
        let shared = Arc::new(Shared {
            agent,
            port: addr.port(),
            csrf_token: security::new_csrf_token(),
            registrations: RegistrationRuns::new(),
            shutdown: CancellationToken::new(),
        });
        let app = router(shared.clone());
        let stop = shared.shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("the local pages server stopped: {e}");
            }
        });
        tracing::info!("local pages at http://127.0.0.1:{}/", addr.port());
        Ok(LocalPages {
            addr,
            shared,
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: a registration still running is cancelled, event streams end, and open
    /// requests get [`STOP_GRACE`] to finish.
    pub async fn stop(mut self) {
        self.shared.shutdown.cancel();
        self.shared.registrations.stop().await;
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                tracing::warn!("the local pages server did not stop in time");
                task.abort();
                let _ = task.await;
            }
        }
        self.shared.agent.set_pages_address(None);
    }
}

impl Drop for LocalPages {
    /// A server dropped without [`LocalPages::stop`] (the service ended on an error) still
    /// stops listening: its task sees the token and ends on its own.
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// All routes, behind the security checks (except `/healthz`, which says nothing private and
/// which service managers may ask under any name).
fn router(shared: Arc<Shared>) -> Router {
    let checked = Router::new()
        .route("/", get(pages::welcome))
        .route("/register", get(pages::register))
        .route("/status", get(pages::status))
        .route("/assets/style.css", get(pages::style))
        .route("/assets/app.js", get(pages::script))
        .route("/api/status", get(api::status))
        .route("/api/register", post(api::register))
        .route("/api/register/progress", get(api::progress))
        .route("/api/events", get(events::stream))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            security::check,
        ));
    Router::new()
        .route("/healthz", get(api::healthz))
        .merge(checked)
        .layer(axum::middleware::map_response(security::headers))
        .with_state(shared)
}
