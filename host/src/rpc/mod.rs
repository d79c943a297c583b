//! The local RPC over ZeroMQ on 127.0.0.1: a request/reply socket (4042) for local tools and the
//! command line (status, devices, plugins, print a local file, read a scale, register, reload the
//! config) and a publish socket (4043) with live device, job, health, scale and registration
//! events.
//!
//! # Why a token
//! The `zeromq` crate speaks only ZMTP's NULL mechanism: anything that can open a TCP connection
//! to 127.0.0.1 can talk to the sockets. Every request therefore carries a secret that DeviceHub
//! writes owner-only to `<data_dir>/rpc.token` at start-up: only processes that can read the data
//! directory (the service's own user, or root) can ask for anything. The publish socket carries
//! no personal data (no scans, no label contents), so it needs no token.
//!
//! # Layout
//! - [`protocol`]: message formats shared with the client.
//! - `server`: the request socket and the methods behind it.
//! - `publish`: the publish socket, fed from the agent's live events.
//! - `zmtp_pub`: the PUB socket itself, a small ZMTP 3 publisher of our own (the `zeromq`
//!   crate's reserves 4 MB up front).
//! - [`client`]: what `devicehub status` and friends use to talk to the running service.

pub mod client;
pub mod protocol;
mod publish;
mod server;
mod zmtp_pub;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zeromq::Socket;

use crate::agent::Agent;
use crate::storage::{write_atomic, StorageError, Visibility};

/// The token file's name in the data directory.
pub const TOKEN_FILE: &str = "rpc.token";
/// The file in the data directory that says where the running service listens, so that the
/// command line finds it even when the config asks for any free port (0).
pub const ENDPOINT_FILE: &str = "rpc.json";
/// The only address the local servers listen on.
pub const LOOPBACK: &str = "127.0.0.1";

/// Why the local RPC could not start.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: BindError,
    },
    #[error("cannot write the local RPC's {what}: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: StorageError,
    },
}

/// Why a socket could not listen: the request socket is the `zeromq` crate's, the publish
/// socket our own on a plain TCP listener.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Zmq(#[from] zeromq::ZmqError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Where the running service listens, as written to [`ENDPOINT_FILE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcEndpoint {
    pub request_port: u16,
    pub publish_port: u16,
    /// The service's process ID, for people reading the file.
    pub pid: u32,
}

impl RpcEndpoint {
    /// Reads the endpoint file of `data_dir`; `None` when there is none or it is unreadable
    /// (the caller then falls back to the configured ports).
    pub fn read(data_dir: &Path) -> Option<RpcEndpoint> {
        let text = std::fs::read(data_dir.join(ENDPOINT_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// A fresh token: 32 random bytes, hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Reads the token the running service wrote to `data_dir`.
pub fn read_token(data_dir: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(data_dir.join(TOKEN_FILE))?
        .trim()
        .to_string())
}

/// Progress of a registration asked for over RPC, published on the `registration` topic. It
/// travels beside the agent's own live events because only RPC callers wait for it.
#[derive(Debug, Clone)]
pub(crate) struct RegistrationProgress {
    /// The request's `id`, so that a client follows its own registration.
    pub request_id: serde_json::Value,
    pub step: serde_json::Value,
}

/// The running local RPC: both sockets and their tasks.
#[derive(Debug)]
pub struct LocalRpc {
    endpoint: RpcEndpoint,
    data_dir: PathBuf,
    shutdown: CancellationToken,
    requests: JoinHandle<()>,
    publisher: JoinHandle<()>,
}

impl LocalRpc {
    /// Writes a new token, binds both sockets on 127.0.0.1 at the config's `[local]` ports and
    /// starts serving. New requests stop being taken as soon as `service_shutdown` is cancelled
    /// (requests already running still answer); the sockets close in [`LocalRpc::stop`].
    pub async fn start(
        agent: Arc<Agent>,
        service_shutdown: &CancellationToken,
    ) -> Result<LocalRpc, RpcError> {
        let data_dir = agent.data_dir().root().to_path_buf();
        let token = new_token();
        write_atomic(
            &data_dir.join(TOKEN_FILE),
            format!("{token}\n").as_bytes(),
            Visibility::OwnerOnly,
        )
        .map_err(|source| RpcError::Write {
            what: "token file",
            source,
        })?;

        let local = &agent.config().local;
        let mut router = zeromq::RouterSocket::new();
        let request_port = bind(&mut router, local.rpc_port).await?;
        let publisher = zmtp_pub::ZmtpPublisher::bind(local.rpc_publish_port)
            .await
            .map_err(|source| RpcError::Bind {
                address: format!("tcp://{LOOPBACK}:{}", local.rpc_publish_port),
                source: source.into(),
            })?;
        let publish_port = publisher.port();
        let endpoint = RpcEndpoint {
            request_port,
            publish_port,
            pid: std::process::id(),
        };
        write_atomic(
            &data_dir.join(ENDPOINT_FILE),
            &serde_json::to_vec_pretty(&endpoint).expect("the endpoint is plain JSON"),
            Visibility::Default,
        )
        .map_err(|source| RpcError::Write {
            what: "endpoint file",
            source,
        })?;
        tracing::info!(
            request = %format!("{LOOPBACK}:{request_port}"),
            publish = %format!("{LOOPBACK}:{publish_port}"),
            "local RPC listening"
        );

        let shutdown = service_shutdown.child_token();
        let (progress_tx, _) = broadcast::channel(64);
        let publisher = tokio::spawn(publish::run(
            publisher,
            agent.clone(),
            progress_tx.subscribe(),
            shutdown.clone(),
        ));
        let requests = tokio::spawn(server::run(
            router,
            server::Methods::new(agent, token, progress_tx),
            shutdown.clone(),
        ));
        Ok(LocalRpc {
            endpoint,
            data_dir,
            shutdown,
            requests,
            publisher,
        })
    }

    /// Where the sockets listen.
    pub fn endpoint(&self) -> RpcEndpoint {
        self.endpoint
    }

    /// Stops serving: requests being handled get a short grace to answer, then both sockets
    /// close and the endpoint file is removed (the token file stays: it is replaced at the next
    /// start, and removing it would race with a starting service).
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Err(e) = self.requests.await {
            tracing::error!("the local RPC request task failed: {e}");
        }
        if let Err(e) = self.publisher.await {
            tracing::error!("the local RPC publish task failed: {e}");
        }
        // Only this service's own file is removed: another instance may have started since.
        if RpcEndpoint::read(&self.data_dir).map(|e| e.pid) == Some(self.endpoint.pid) {
            let _ = std::fs::remove_file(self.data_dir.join(ENDPOINT_FILE));
        }
        tracing::info!("local RPC stopped");
    }
}

/// Binds `socket` on 127.0.0.1:`port` and returns the bound port (the free one chosen for 0).
async fn bind(socket: &mut impl Socket, port: u16) -> Result<u16, RpcError> {
    let address = format!("tcp://{LOOPBACK}:{port}");
    let endpoint = socket
        .bind(&address)
        .await
        .map_err(|source| RpcError::Bind {
            address: address.clone(),
            source: source.into(),
        })?;
    match endpoint {
        zeromq::Endpoint::Tcp(_, port) => Ok(port),
        // A TCP bind always yields a TCP endpoint.
        other => unreachable!("a tcp:// bind returned {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
