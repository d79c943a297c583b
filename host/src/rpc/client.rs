//! The client side of the local RPC, for the command line: finds the running service through
//! the data directory (its endpoint file and token), sends requests and follows published
//! events.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use zeromq::{ReqSocket, Socket, SocketOptions, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use super::protocol::{ErrorBody, Reply, Request};
use super::{read_token, RpcEndpoint, LOOPBACK};
use crate::config::Config;

/// How long finding out whether anything listens may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the ZeroMQ handshake may take once something listens.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request through the local RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "DeviceHub is not running ({}): start it with `devicehub run` or the service manager",
        where_not_running(*.port)
    )]
    NotRunning { port: u16 },
    #[error(
        "cannot read the local RPC token {path}: {source} (run as the user DeviceHub runs as, \
         or with sudo)"
    )]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the local RPC on {LOOPBACK}:{port} failed: {message}")]
    Transport { port: u16, message: String },
    #[error("DeviceHub did not answer {method} within {seconds} s")]
    Timeout { method: String, seconds: u64 },
    #[error("{}", .0.message)]
    Remote(ErrorBody),
}

/// Where nothing answered; a config of port 0 names no port, so only the missing
/// announcement can be named.
fn where_not_running(port: u16) -> String {
    if port == 0 {
        format!(
            "no DeviceHub announced its port in {}",
            super::ENDPOINT_FILE
        )
    } else {
        format!("nothing answers on {LOOPBACK}:{port}")
    }
}

impl ClientError {
    /// A stable name for the failure, for `--json` output.
    pub fn kind(&self) -> &str {
        match self {
            ClientError::NotRunning { .. } => "notRunning",
            ClientError::Token { .. } => "token",
            ClientError::Transport { .. } => "transport",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Remote(body) => &body.kind,
        }
    }
}

/// A connection to the running service's request socket.
pub struct RpcClient {
    endpoint: RpcEndpoint,
    token: String,
    socket: ReqSocket,
    next_id: u64,
}

// The sockets have no `Debug`; the token must not be printed anyway.
impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Where the service that uses this config's data directory listens: the endpoint file it
/// wrote at start-up. Without one, no service uses this data directory (another DeviceHub on
/// the configured port, say one started for another data directory, is not asked: its token
/// would not match anyway).
pub fn endpoint_for(config: &Config) -> Option<RpcEndpoint> {
    RpcEndpoint::read(&config.data_dir())
}

/// True when something accepts TCP connections on 127.0.0.1:`port`; a refused connection means
/// the service is not running, and is known at once (ZeroMQ itself would retry for a long time).
fn listening(port: u16) -> bool {
    port != 0
        && TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            PROBE_TIMEOUT,
        )
        .is_ok()
}

impl RpcClient {
    /// Connects to the service that uses `config`'s data directory.
    pub async fn connect(config: &Config) -> Result<RpcClient, ClientError> {
        match endpoint_for(config) {
            Some(endpoint) => RpcClient::connect_to(endpoint, &config.data_dir()).await,
            None => Err(ClientError::NotRunning {
                port: config.local.rpc_port,
            }),
        }
    }

    /// Connects to the service listening at `endpoint`, with the token in `data_dir`.
    pub async fn connect_to(
        endpoint: RpcEndpoint,
        data_dir: &Path,
    ) -> Result<RpcClient, ClientError> {
        let port = endpoint.request_port;
        if !listening(port) {
            return Err(ClientError::NotRunning { port });
        }
        let token = read_token(data_dir).map_err(|source| ClientError::Token {
            path: data_dir.join(super::TOKEN_FILE).display().to_string(),
            source,
        })?;
        let mut options = SocketOptions::default();
        options.connect_timeout(CONNECT_TIMEOUT);
        let mut socket = ReqSocket::with_options(options);
        socket
            .connect(&format!("tcp://{LOOPBACK}:{port}"))
            .await
            .map_err(|e| ClientError::Transport {
                port,
                message: e.to_string(),
            })?;
        Ok(RpcClient {
            endpoint,
            token,
            socket,
            next_id: 0,
        })
    }

    /// Where the service listens.
    pub fn endpoint(&self) -> RpcEndpoint {
        self.endpoint
    }

    /// Calls `method` and waits at most `timeout` for the answer. The request's id is returned
    /// beside the result so that published progress can be matched with it.
    pub async fn call(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let id = self.next_request_id();
        self.call_with_id(id, method, params, timeout).await
    }

    /// The id the next [`RpcClient::call`] will use.
    pub fn next_request_id(&mut self) -> Value {
        self.next_id += 1;
        json!(format!("cli-{}-{}", std::process::id(), self.next_id))
    }

    /// Calls `method` under the request id `id`.
    pub async fn call_with_id(
        &mut self,
        id: Value,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let port = self.endpoint.request_port;
        let transport = |e: zeromq::ZmqError| ClientError::Transport {
            port,
            message: e.to_string(),
        };
        let request = Request {
            token: self.token.clone(),
            id: id.clone(),
            method: method.to_string(),
            params,
        };
        let body = serde_json::to_vec(&request).expect("a request is plain JSON");
        self.socket
            .send(ZmqMessage::from(body))
            .await
            .map_err(transport)?;
        let answer = tokio::time::timeout(timeout, self.socket.recv())
            .await
            .map_err(|_| ClientError::Timeout {
                method: method.to_string(),
                seconds: timeout.as_secs(),
            })?
            .map_err(transport)?;
        let frame = answer.into_vec().pop().unwrap_or_default();
        let reply: Reply = serde_json::from_slice(&frame).map_err(|e| ClientError::Transport {
            port,
            message: format!("the answer is not a reply: {e}"),
        })?;
        match (reply.result, reply.error) {
            (_, Some(error)) => Err(ClientError::Remote(error)),
            (Some(result), None) => Ok(result),
            (None, None) => Err(ClientError::Transport {
                port,
                message: "the answer has neither result nor error".into(),
            }),
        }
    }

    /// Subscribes to the publish socket's `topics`.
    pub async fn subscribe(&self, topics: &[&str]) -> Result<Subscription, ClientError> {
        Subscription::connect(self.endpoint.publish_port, topics).await
    }
}

/// A subscription to the publish socket.
pub struct Subscription {
    socket: SubSocket,
    port: u16,
}

impl Subscription {
    /// Connects to 127.0.0.1:`port` and subscribes to `topics`.
    pub async fn connect(port: u16, topics: &[&str]) -> Result<Subscription, ClientError> {
        if !listening(port) {
            return Err(ClientError::NotRunning { port });
        }
        let transport = |e: zeromq::ZmqError| ClientError::Transport {
            port,
            message: e.to_string(),
        };
        let mut options = SocketOptions::default();
        options.connect_timeout(CONNECT_TIMEOUT);
        let mut socket = SubSocket::with_options(options);
        socket
            .connect(&format!("tcp://{LOOPBACK}:{port}"))
            .await
            .map_err(transport)?;
        for topic in topics {
            socket.subscribe(topic).await.map_err(transport)?;
        }
        Ok(Subscription { socket, port })
    }

    /// The next message: its topic and JSON body.
    pub async fn next(&mut self) -> Result<(String, Value), ClientError> {
        let port = self.port;
        let message = self
            .socket
            .recv()
            .await
            .map_err(|e| ClientError::Transport {
                port,
                message: e.to_string(),
            })?;
        let frames = message.into_vec();
        let topic = frames
            .first()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default();
        let body = frames.get(1).cloned().unwrap_or_else(Bytes::new);
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((topic, body))
    }
}
