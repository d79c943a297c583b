//! The broker's network front: TLS listeners that authenticate clients by certificate and hand
//! the decrypted stream to the [`Broker`].
//!
//! Three roles, as in AWS IoT Core: MQTT over mutual TLS (port 8883's role), MQTT over mutual
//! TLS with ALPN `x-amzn-mqtt-ca` (port 443's role), and MQTT over WebSocket at `/mqtt` (over
//! TLS). Every listener requires a client certificate signed by the emulator's CA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Message;

use super::broker::{Broker, PeerIdentity};
use super::pki::{certificate_id, CertificateAuthority, PkiError};
use super::Shutdown;

/// The ALPN protocol id AWS IoT Core requires for MQTT with a client certificate on port 443.
pub const AWS_MQTT_ALPN: &[u8] = b"x-amzn-mqtt-ca";
/// A peer must finish the TLS (and WebSocket) handshake this soon.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What failed while opening the listeners.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot load the server identity: {0}")]
    Pki(#[from] PkiError),
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Which role a listener plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// MQTT over TLS with a client certificate, no ALPN (AWS port 8883).
    MutualTls,
    /// MQTT over TLS with a client certificate and ALPN `x-amzn-mqtt-ca` (AWS port 443).
    Alpn,
    /// MQTT over WebSocket at path `/mqtt`, over TLS with a client certificate.
    WebSocket,
}

/// The crypto provider used for every TLS endpoint of the emulator.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server configuration presenting the emulator's server certificate. With
/// `require_client_certificate`, clients must present a certificate signed by the CA.
pub fn server_config(
    ca: &CertificateAuthority,
    require_client_certificate: bool,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, ListenerError> {
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let (chain, key) = ca.server_identity()?;
    let mut config = if require_client_certificate {
        let mut roots = RootCertStore::empty();
        roots.add(ca.ca_certificate_der()?)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?
    } else {
        builder.with_no_client_auth().with_single_cert(chain, key)?
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A TLS client configuration that trusts the CA certificates in `ca_pem` (no client
/// certificate), for HTTPS clients of the emulator.
pub fn client_config_trusting(ca_pem: &[u8]) -> Result<rustls::ClientConfig, ListenerError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for der in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        let der = der.map_err(|e| {
            ListenerError::Pki(PkiError::BadPem {
                path: "CA certificate".into(),
                reason: e.to_string(),
            })
        })?;
        roots.add(der)?;
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Binds a listener for `kind` on `address` (port 0 picks a free port).
pub async fn bind(address: SocketAddr) -> Result<TcpListener, ListenerError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ListenerError::Bind { address, source })
}

/// Accepts connections until `shutdown` fires, then waits for the open ones to close.
pub async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    tls: Arc<ServerConfig>,
    broker: Broker,
    mut shutdown: Shutdown,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, address)) => {
                    let acceptor = acceptor.clone();
                    let broker = broker.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(async move {
                        serve(tcp, address, kind, acceptor, broker, shutdown).await;
                    });
                }
                Err(e) => {
                    // Running out of file descriptors is the usual cause: back off briefly
                    // rather than spinning.
                    tracing::warn!(?kind, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.wait() => break,
        }
    }
    // Every connection watches the same shutdown signal and closes promptly.
    while connections.join_next().await.is_some() {}
}

async fn serve(
    tcp: TcpStream,
    address: SocketAddr,
    kind: ListenerKind,
    acceptor: TlsAcceptor,
    broker: Broker,
    shutdown: Shutdown,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%address, ?kind, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let (_, session) = tls.get_ref();
    if kind == ListenerKind::Alpn && session.alpn_protocol() != Some(AWS_MQTT_ALPN) {
        tracing::debug!(%address, "refused: ALPN x-amzn-mqtt-ca was not negotiated");
        return;
    }
    let Some(certificate) = session.peer_certificates().and_then(|c| c.first()) else {
        return;
    };
    let peer = PeerIdentity {
        certificate_id: certificate_id(certificate),
        address,
    };
    match kind {
        ListenerKind::MutualTls | ListenerKind::Alpn => {
            broker.serve_connection(tls, peer, shutdown).await;
        }
        ListenerKind::WebSocket => {
            let handshake = tokio_tungstenite::accept_hdr_async(tls, check_upgrade);
            let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => {
                    tracing::debug!(%address, "WebSocket handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            // The broker reads a byte stream; an in-memory pipe turns WebSocket binary
            // messages into one (MQTT packets may span or share messages).
            let (broker_side, bridge_side) = tokio::io::duplex(64 * 1024);
            tokio::join!(
                broker.serve_connection(broker_side, peer, shutdown),
                async move {
                    bridge(ws, bridge_side).await;
                }
            );
        }
    }
}

/// Accepts only upgrades of `/mqtt` and agrees on the `mqtt` subprotocol when offered.
#[allow(clippy::result_large_err)] // The signature is tungstenite's callback type.
fn check_upgrade(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() != "/mqtt" {
        let mut refusal = ErrorResponse::new(Some("MQTT is served at /mqtt".to_string()));
        *refusal.status_mut() = StatusCode::NOT_FOUND;
        return Err(refusal);
    }
    let offers_mqtt = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "mqtt");
    if offers_mqtt {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    }
    Ok(response)
}

/// Copies WebSocket binary messages into `pipe` and bytes from `pipe` out as binary messages,
/// until either side closes.
async fn bridge<S>(ws: tokio_tungstenite::WebSocketStream<S>, pipe: tokio::io::DuplexStream)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut pipe_rx, mut pipe_tx) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(message) = ws_rx.next().await {
            match message {
                Ok(Message::Binary(bytes)) => {
                    if pipe_tx.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let outbound = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match pipe_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}
