//! The serial text scanner simulator: a pseudo-terminal DeviceHub opens as a serial port, a
//! writer thread that sends blocks on it, and the control HTTP API that asks for blocks.
//!
//! Routes (loopback only):
//! - `POST /scan`: sends one block, e.g. `{"lines":["Jane Roe","1 Main St"]}`, optional
//!   `"ending"` (`blank-line` (default), `etx`, `none`), `"encoding"` (`utf8` (default),
//!   `latin1`) and `"prefix"`. Answers `{"blocks_sent":N,"bytes":M}` once the bytes are
//!   queued, or 400 with `{"error": ...}`.
//! - `GET /scanner`: `{"blocks_sent":N}`. The simulator keeps no copy of what it sent: a test
//!   knows what it asked for.
//!
//! Anything DeviceHub writes to the terminal is read and thrown away, as a scanner would.

use std::{
    fs::File,
    io::{Read, Write},
    net::SocketAddr,
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Serialize;
use serde_json::json;

use crate::pty::{PtySimulator, PtyStartError};

use super::{encode, ScanRequest};

/// What the control API and the writer thread share.
#[derive(Debug)]
pub struct ScannerShared {
    /// Blocks for the writer thread.
    outgoing: Mutex<mpsc::Sender<Vec<u8>>>,
    blocks_sent: AtomicU64,
}

impl ScannerShared {
    /// Queues one block for the terminal; returns the byte count.
    pub fn scan(&self, request: &ScanRequest) -> Result<usize, super::ScanError> {
        let bytes = encode(request)?;
        let len = bytes.len();
        // The writer thread lives as long as the simulator, so a send only fails while it
        // stops, when nothing is listening anyway.
        let _ = self
            .outgoing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(bytes);
        self.blocks_sent.fetch_add(1, Ordering::Relaxed);
        Ok(len)
    }

    pub fn blocks_sent(&self) -> u64 {
        self.blocks_sent.load(Ordering::Relaxed)
    }
}

/// A started text scanner. Dropping it stops the writer thread and the control API.
#[derive(Debug)]
pub struct SerialScannerSimulator {
    simulator: PtySimulator,
    shared: Arc<ScannerShared>,
}

impl SerialScannerSimulator {
    /// Creates the pseudo-terminal and starts serving; must be called inside a tokio runtime.
    pub async fn start(control: SocketAddr) -> Result<Self, PtyStartError> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(ScannerShared {
            outgoing: Mutex::new(tx),
            blocks_sent: AtomicU64::new(0),
        });
        let app = router(Arc::clone(&shared));
        let simulator = PtySimulator::start("scanner", control, app, move |master, slave, stop| {
            serve_pty(master, slave, &rx, stop)
        })
        .await?;
        tracing::info!(pty = %simulator.pty_path().display(), control_addr = %simulator.control_addr(), "text scanner simulator started");
        Ok(SerialScannerSimulator { simulator, shared })
    }

    /// The pseudo-terminal DeviceHub opens, e.g. `/dev/pts/5`.
    pub fn pty_path(&self) -> &std::path::Path {
        self.simulator.pty_path()
    }

    /// The control API's base URL.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.simulator.control_addr())
    }

    /// The shared scanner state.
    pub fn shared(&self) -> &Arc<ScannerShared> {
        &self.shared
    }

    /// Stops the control API and the writer thread and waits for both.
    pub async fn shutdown(self) {
        self.simulator.shutdown().await;
    }
}

/// Writes queued blocks to the master side and drains what DeviceHub writes, until `stop`.
/// `_slave` is held so that the terminal keeps what was sent while DeviceHub has it closed.
fn serve_pty(
    master: OwnedFd,
    _slave: OwnedFd,
    blocks: &mpsc::Receiver<Vec<u8>>,
    stop: &AtomicBool,
) {
    let fd = master.as_raw_fd();
    let mut port = File::from(master);
    let mut sink = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        match blocks.recv_timeout(Duration::from_millis(50)) {
            Ok(bytes) => {
                if let Err(error) = port.write_all(&bytes).and_then(|()| port.flush()) {
                    tracing::warn!(%error, "writing to the scanner pseudo-terminal failed");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for an open descriptor, count 1, no waiting.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        if ready > 0 && poll.revents & libc::POLLIN != 0 {
            // Linux reports EIO while no process has the slave side open; nothing to drain.
            let _ = port.read(&mut sink);
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

/// A block the simulator refused.
#[derive(Debug)]
struct ApiError(super::ScanError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(ErrorBody {
                error: self.0.to_string(),
            }),
        )
            .into_response()
    }
}

fn router(shared: Arc<ScannerShared>) -> Router {
    Router::new()
        .route("/scan", post(scan))
        .route("/scanner", get(scanner))
        .with_state(shared)
}

async fn scan(
    State(shared): State<Arc<ScannerShared>>,
    Json(request): Json<ScanRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bytes = shared.scan(&request).map_err(ApiError)?;
    Ok(Json(
        json!({ "blocks_sent": shared.blocks_sent(), "bytes": bytes }),
    ))
}

async fn scanner(State(shared): State<Arc<ScannerShared>>) -> Json<serde_json::Value> {
    Json(json!({ "blocks_sent": shared.blocks_sent() }))
}
