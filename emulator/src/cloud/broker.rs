//! The embedded MQTT 3.1.1 broker, written to behave like AWS IoT Core's message broker for
//! what DeviceHub uses: QoS 0 and 1, persistent sessions, session takeover by client id,
//! keepalive, last will, lifecycle (presence) events, and per-certificate authorization.
//!
//! It is transport-agnostic: the listeners in [`super::listeners`] terminate TLS (and
//! WebSocket) and hand each authenticated byte stream to [`Broker::serve_connection`] with the
//! id of the client certificate the peer presented. Packets are encoded and decoded with
//! rumqttc's MQTT 3.1.1 codec.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, Protocol, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::registry::{CertificateRole, Registry};
use super::topics;
use super::{Clock, Shutdown};

/// Largest payload AWS IoT Core accepts.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;
/// Largest packet read: the payload limit plus room for the topic and header.
const MAX_PACKET_BYTES: usize = MAX_PAYLOAD_BYTES + 2048;
/// Longest client id AWS IoT Core accepts.
const MAX_CLIENT_ID_BYTES: usize = 128;
/// A client must send CONNECT this soon after the transport is up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// QoS 1 messages kept for an offline persistent session; the oldest go first.
const MAX_QUEUED_PER_SESSION: usize = 1000;

/// Who is at the other end of a connection, as established by the transport.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// Id (hex SHA-256) of the client certificate presented in the TLS handshake.
    pub certificate_id: String,
    pub address: SocketAddr,
}

/// One message on its way to a subscriber.
#[derive(Debug, Clone)]
struct Delivery {
    topic: String,
    payload: Bytes,
    qos: QoS,
}

/// What the broker asks a live connection's task to do.
#[derive(Debug)]
enum Outbound {
    Deliver(Delivery),
    /// Another connection took over the client id: close without publishing the will.
    TakenOver,
}

#[derive(Debug)]
struct LiveConnection {
    /// Distinguishes this connection from a later one with the same client id.
    id: u64,
    tx: mpsc::UnboundedSender<Outbound>,
}

#[derive(Debug, Default)]
struct Session {
    subscriptions: HashMap<String, QoS>,
    connection: Option<LiveConnection>,
    /// Clean session = false: subscriptions and QoS 1 messages outlive the connection.
    persistent: bool,
    /// QoS 1 messages that arrived while no connection was live.
    queued: VecDeque<Delivery>,
}

#[derive(Debug, Default)]
struct BrokerState {
    sessions: HashMap<String, Session>,
    next_connection_id: u64,
}

/// The broker. Cheap to clone: clones share the same sessions.
#[derive(Clone)]
pub struct Broker {
    state: Arc<Mutex<BrokerState>>,
    registry: Arc<Mutex<Registry>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

/// Why a connection ended, for the lifecycle event and the log.
#[derive(Debug)]
enum CloseReason {
    ClientDisconnect,
    TakenOver,
    Shutdown,
    KeepAliveTimeout,
    ConnectionLost(String),
    ProtocolError(String),
    Forbidden(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConnectionLost(detail) => write!(f, "connection lost: {detail}"),
            Self::ProtocolError(detail) => write!(f, "protocol error: {detail}"),
            Self::Forbidden(topic) => write!(f, "publish to {topic} not allowed"),
            other => f.write_str(other.aws_reason()),
        }
    }
}

impl CloseReason {
    /// AWS IoT Core's `disconnectReason` vocabulary.
    fn aws_reason(&self) -> &'static str {
        match self {
            Self::ClientDisconnect => "CLIENT_INITIATED_DISCONNECT",
            Self::TakenOver => "DUPLICATE_CLIENTID",
            Self::Shutdown => "SERVER_INITIATED_DISCONNECT",
            Self::KeepAliveTimeout => "MQTT_KEEP_ALIVE_TIMEOUT",
            Self::ConnectionLost(_) => "CONNECTION_LOST",
            Self::ProtocolError(_) => "CLIENT_ERROR",
            Self::Forbidden(_) => "FORBIDDEN_ACCESS",
        }
    }
}

impl Broker {
    pub fn new(registry: Arc<Mutex<Registry>>, clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::default(),
            registry,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BrokerState> {
        // A panic while holding the lock leaves plain maps behind, still consistent enough to
        // route messages: recovering beats taking the whole broker down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Client ids with a live connection right now.
    pub fn connected_clients(&self) -> Vec<String> {
        self.lock()
            .sessions
            .iter()
            .filter(|(_, s)| s.connection.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Delivers a message to every matching subscription.
    fn route(&self, topic: &str, payload: Bytes, qos: QoS) {
        let mut state = self.lock();
        for session in state.sessions.values_mut() {
            let granted = session
                .subscriptions
                .iter()
                .filter(|(filter, _)| topics::matches(topic, filter))
                .map(|(_, q)| *q)
                .max_by_key(|q| *q as u8);
            let Some(granted) = granted else { continue };
            let delivery = Delivery {
                topic: topic.to_string(),
                payload: payload.clone(),
                qos: if (granted as u8) < (qos as u8) {
                    granted
                } else {
                    qos
                },
            };
            match &session.connection {
                Some(live) => {
                    // A closed channel means the connection is ending; its task requeues
                    // what it had in flight, and a message racing that end is lost as it
                    // would be on a dropped TCP link.
                    let _ = live.tx.send(Outbound::Deliver(delivery));
                }
                None if session.persistent && delivery.qos == QoS::AtLeastOnce => {
                    if session.queued.len() >= MAX_QUEUED_PER_SESSION {
                        session.queued.pop_front();
                    }
                    session.queued.push_back(delivery);
                }
                None => {}
            }
        }
    }

    fn lifecycle_event(&self, client_id: &str, peer: &PeerIdentity, closed: Option<&CloseReason>) {
        let event_type = if closed.is_some() {
            "disconnected"
        } else {
            "connected"
        };
        let mut event = serde_json::json!({
            "clientId": client_id,
            "timestamp": self.clock.now_epoch_s() * 1000,
            "eventType": event_type,
            "sessionIdentifier": format!("{client_id}-{}", peer.address),
            "principalIdentifier": peer.certificate_id,
            "ipAddress": peer.address.ip().to_string(),
            "versionNumber": 0,
        });
        if let Some(reason) = closed {
            event["clientInitiatedDisconnect"] =
                serde_json::Value::Bool(matches!(reason, CloseReason::ClientDisconnect));
            event["disconnectReason"] = serde_json::Value::from(reason.aws_reason());
        }
        self.route(
            &format!("$aws/events/presence/{event_type}/{client_id}"),
            Bytes::from(event.to_string()),
            QoS::AtLeastOnce,
        );
    }

    /// Serves one client connection until it ends or `shutdown` fires.
    pub async fn serve_connection<S>(&self, stream: S, peer: PeerIdentity, mut shutdown: Shutdown)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut conn = Connection {
            stream,
            read_buf: BytesMut::with_capacity(4096),
            write_buf: BytesMut::with_capacity(4096),
        };
        let connect = tokio::select! {
            read = tokio::time::timeout(CONNECT_TIMEOUT, conn.read_packet()) => match read {
                Ok(Ok(Packet::Connect(connect))) => connect,
                Ok(Ok(other)) => {
                    tracing::debug!(peer = %peer.address, "first packet was not CONNECT: {other:?}");
                    return;
                }
                Ok(Err(ReadError::Codec(CodecError::InvalidProtocolLevel(_))))
                | Ok(Err(ReadError::Codec(CodecError::InvalidProtocol))) => {
                    let _ = conn.write_packet(&Packet::ConnAck(ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false))).await;
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer.address, "no CONNECT: {e}");
                    return;
                }
                Err(_) => return,
            },
            _ = shutdown.wait() => return,
        };

        let refuse = |code| Packet::ConnAck(ConnAck::new(code, false));
        // MQTT 5 is recognised by the codec but its CONNECT carries properties the 3.1.1
        // decoder does not read: refuse it with the protocol-version code, as 3.1.1 says.
        if connect.protocol != Protocol::V4 {
            let _ = conn
                .write_packet(&refuse(ConnectReturnCode::RefusedProtocolVersion))
                .await;
            return;
        }
        let client_id = connect.client_id.clone();
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_BYTES {
            let _ = conn
                .write_packet(&refuse(ConnectReturnCode::BadClientId))
                .await;
            return;
        }
        let role = self
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .certificate(&peer.certificate_id)
            .map(|c| c.role.clone());
        let authorized = match &role {
            Some(CertificateRole::Thing { thing_name }) => *thing_name == client_id,
            Some(CertificateRole::Claim) | Some(CertificateRole::Service) => true,
            Some(CertificateRole::Pending) | None => false,
        };
        let Some(role) = role.filter(|_| authorized) else {
            tracing::info!(client_id, certificate = %peer.certificate_id, "connection refused: not authorized");
            let _ = conn
                .write_packet(&refuse(ConnectReturnCode::NotAuthorized))
                .await;
            return;
        };

        // AWS IoT Core treats 0 as 1200 s and raises anything under 30 s to 30 s.
        let keep_alive_s = match connect.keep_alive {
            0 => 1200,
            k => k.clamp(30, 1200),
        };
        let silence_limit = Duration::from_millis(u64::from(keep_alive_s) * 1500);

        let (tx, mut rx) = mpsc::unbounded_channel();
        let (connection_id, session_present, queued) = {
            let mut state = self.lock();
            state.next_connection_id += 1;
            let connection_id = state.next_connection_id;
            if connect.clean_session {
                if let Some(old) = state.sessions.remove(&client_id) {
                    if let Some(live) = old.connection {
                        let _ = live.tx.send(Outbound::TakenOver);
                    }
                }
            }
            let session = state.sessions.entry(client_id.clone()).or_default();
            let session_present = !connect.clean_session && session.persistent;
            if let Some(old) = session.connection.take() {
                let _ = old.tx.send(Outbound::TakenOver);
            }
            session.persistent = !connect.clean_session;
            session.connection = Some(LiveConnection {
                id: connection_id,
                tx,
            });
            (
                connection_id,
                session_present,
                std::mem::take(&mut session.queued),
            )
        };
        if conn
            .write_packet(&Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                session_present,
            )))
            .await
            .is_err()
        {
            self.end_session(&client_id, connection_id, Vec::new());
            return;
        }
        tracing::debug!(client_id, "connected");
        self.lifecycle_event(&client_id, &peer, None);

        let mut outgoing = OutgoingState::default();
        let mut reason = None;
        for delivery in queued {
            if let Err(e) = outgoing.send(&mut conn, delivery).await {
                reason = Some(CloseReason::ConnectionLost(e.to_string()));
                break;
            }
        }

        let mut last_heard = tokio::time::Instant::now();
        let reason = match reason {
            Some(reason) => reason,
            None => loop {
                // Keepalive counts silence from the client only: messages flowing to it do not
                // keep a dead link open.
                let silence_deadline = tokio::time::sleep_until(last_heard + silence_limit);
                tokio::select! {
                    // Reading is cancel-safe: bytes already read stay in the connection's buffer.
                    read = conn.read_packet() => {
                        let packet = match read {
                            Err(ReadError::Closed) => break CloseReason::ConnectionLost("closed by peer".into()),
                            Err(ReadError::Io(e)) => break CloseReason::ConnectionLost(e.to_string()),
                            Err(ReadError::Codec(e)) => break CloseReason::ProtocolError(e.to_string()),
                            Ok(packet) => packet,
                        };
                        last_heard = tokio::time::Instant::now();
                        match self.handle_packet(&mut conn, &client_id, &role, &mut outgoing, packet).await {
                            Ok(None) => {}
                            Ok(Some(reason)) => break reason,
                            Err(e) => break CloseReason::ConnectionLost(e.to_string()),
                        }
                    }
                    command = rx.recv() => match command {
                        Some(Outbound::Deliver(delivery)) => {
                            if let Err(e) = outgoing.send(&mut conn, delivery).await {
                                break CloseReason::ConnectionLost(e.to_string());
                            }
                        }
                        Some(Outbound::TakenOver) | None => break CloseReason::TakenOver,
                    },
                    _ = silence_deadline => break CloseReason::KeepAliveTimeout,
                    _ = shutdown.wait() => break CloseReason::Shutdown,
                }
            },
        };
        tracing::debug!(client_id, %reason, "connection closed");
        let _ = conn.stream.shutdown().await;

        if !matches!(
            reason,
            CloseReason::ClientDisconnect | CloseReason::TakenOver
        ) {
            if let Some(will) = &connect.last_will {
                if topics::valid_topic(&will.topic) && topics::may_publish(&role, &will.topic) {
                    self.route(&will.topic, will.message.clone(), cap_qos(will.qos));
                }
            }
        }
        let mut unacknowledged: Vec<(Delivery, u64)> = outgoing.inflight.into_values().collect();
        unacknowledged.sort_by_key(|d| d.1);
        self.end_session(
            &client_id,
            connection_id,
            unacknowledged.into_iter().map(|(d, _)| d).collect(),
        );
        self.lifecycle_event(&client_id, &peer, Some(&reason));
    }

    /// Detaches a finished connection from its session, keeping unacknowledged QoS 1
    /// messages for the next connection when the session is persistent.
    fn end_session(&self, client_id: &str, connection_id: u64, unacknowledged: Vec<Delivery>) {
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(client_id) else {
            return;
        };
        match &session.connection {
            Some(live) if live.id == connection_id => {
                session.connection = None;
                if !session.persistent {
                    state.sessions.remove(client_id);
                    return;
                }
                for delivery in unacknowledged.into_iter().rev() {
                    session.queued.push_front(delivery);
                }
            }
            // A newer connection owns the session: hand it what this one left unacknowledged.
            Some(live) if session.persistent => {
                for delivery in unacknowledged {
                    let _ = live.tx.send(Outbound::Deliver(delivery));
                }
            }
            Some(_) => {}
            None if session.persistent => {
                for delivery in unacknowledged.into_iter().rev() {
                    session.queued.push_front(delivery);
                }
            }
            None => {}
        }
    }

    /// Acts on one packet from the client; `Some(reason)` ends the connection.
    async fn handle_packet<S>(
        &self,
        conn: &mut Connection<S>,
        client_id: &str,
        role: &CertificateRole,
        outgoing: &mut OutgoingState,
        packet: Packet,
    ) -> std::io::Result<Option<CloseReason>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match packet {
            Packet::Publish(publish) => {
                if publish.qos == QoS::ExactlyOnce {
                    return Ok(Some(CloseReason::ProtocolError(
                        "QoS 2 is not supported".into(),
                    )));
                }
                if publish.payload.len() > MAX_PAYLOAD_BYTES {
                    return Ok(Some(CloseReason::ProtocolError(
                        "payload larger than 128 KB".into(),
                    )));
                }
                if !topics::valid_topic(&publish.topic) {
                    return Ok(Some(CloseReason::ProtocolError(format!(
                        "invalid topic {:?}",
                        publish.topic
                    ))));
                }
                // AWS IoT Core closes the connection of a client that publishes where its
                // policy does not allow.
                if !topics::may_publish(role, &publish.topic) {
                    tracing::info!(client_id, topic = %publish.topic, "publish refused by policy");
                    return Ok(Some(CloseReason::Forbidden(publish.topic)));
                }
                if publish.qos == QoS::AtLeastOnce {
                    conn.write_packet(&Packet::PubAck(PubAck::new(publish.pkid)))
                        .await?;
                }
                self.route(&publish.topic, publish.payload, publish.qos);
            }
            Packet::Subscribe(subscribe) => {
                // AWS IoT Core sends no SUBACK at all for a QoS 2 subscription.
                if subscribe.filters.iter().any(|f| f.qos == QoS::ExactlyOnce) {
                    return Ok(None);
                }
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                {
                    let mut state = self.lock();
                    let Some(session) = state.sessions.get_mut(client_id) else {
                        return Ok(Some(CloseReason::TakenOver));
                    };
                    for filter in subscribe.filters {
                        if topics::valid_filter(&filter.path)
                            && topics::may_subscribe(role, &filter.path)
                        {
                            session
                                .subscriptions
                                .insert(filter.path.clone(), filter.qos);
                            codes.push(SubscribeReasonCode::Success(filter.qos));
                        } else {
                            tracing::info!(client_id, filter = %filter.path, "subscription refused by policy");
                            codes.push(SubscribeReasonCode::Failure);
                        }
                    }
                }
                conn.write_packet(&Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
                    .await?;
            }
            Packet::Unsubscribe(unsubscribe) => {
                {
                    let mut state = self.lock();
                    if let Some(session) = state.sessions.get_mut(client_id) {
                        for topic in &unsubscribe.topics {
                            session.subscriptions.remove(topic);
                        }
                    }
                }
                conn.write_packet(&Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
                    .await?;
            }
            Packet::PubAck(ack) => {
                outgoing.inflight.remove(&ack.pkid);
            }
            Packet::PingReq => conn.write_packet(&Packet::PingResp).await?,
            Packet::Disconnect => return Ok(Some(CloseReason::ClientDisconnect)),
            Packet::Connect(_) => {
                return Ok(Some(CloseReason::ProtocolError("second CONNECT".into())))
            }
            other => {
                return Ok(Some(CloseReason::ProtocolError(format!(
                    "unexpected packet from a client: {other:?}"
                ))))
            }
        }
        Ok(None)
    }
}

fn cap_qos(qos: QoS) -> QoS {
    if qos == QoS::ExactlyOnce {
        QoS::AtLeastOnce
    } else {
        qos
    }
}

/// Packet ids and unacknowledged QoS 1 messages of one connection.
#[derive(Debug, Default)]
struct OutgoingState {
    next_pkid: u16,
    /// Sent and not yet acknowledged, with a sequence number to keep their order on requeue.
    inflight: HashMap<u16, (Delivery, u64)>,
    sequence: u64,
}

impl OutgoingState {
    async fn send<S>(&mut self, conn: &mut Connection<S>, delivery: Delivery) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut publish = Publish::from_bytes(
            delivery.topic.clone(),
            delivery.qos,
            delivery.payload.clone(),
        );
        if delivery.qos == QoS::AtLeastOnce {
            // Skip ids still in flight; with 65535 ids and a bounded queue one is always free.
            loop {
                self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
                if !self.inflight.contains_key(&self.next_pkid) {
                    break;
                }
            }
            publish.pkid = self.next_pkid;
            self.sequence += 1;
            self.inflight
                .insert(publish.pkid, (delivery, self.sequence));
        }
        conn.write_packet(&Packet::Publish(publish)).await
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed packet: {0}")]
    Codec(CodecError),
}

/// A byte stream framed into MQTT packets.
struct Connection<S> {
    stream: S,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    async fn read_packet(&mut self) -> Result<Packet, ReadError> {
        loop {
            match Packet::read(&mut self.read_buf, MAX_PACKET_BYTES) {
                Ok(packet) => return Ok(packet),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => return Err(ReadError::Codec(e)),
            }
            if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }

    async fn write_packet(&mut self, packet: &Packet) -> std::io::Result<()> {
        self.write_buf.clear();
        packet
            .write(&mut self.write_buf, MAX_PACKET_BYTES)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        self.stream.write_all(&self.write_buf).await?;
        self.stream.flush().await
    }
}
