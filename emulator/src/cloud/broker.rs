//! The embedded MQTT broker (3.1.1 and 5), written to behave like AWS IoT Core's message broker
//! for what DeviceHub uses: QoS 0 and 1, persistent sessions, session takeover by client id,
//! keepalive, last will, lifecycle (presence) events, and per-certificate authorization.
//!
//! It is transport-agnostic: the listeners in [`super::listeners`] terminate TLS (and
//! WebSocket) and hand each authenticated byte stream to [`Broker::serve_connection`] with the
//! id of the client certificate the peer presented. Framing is in [`super::wire`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use super::registry::{CertificateRole, Registry};
use super::topics;
use super::wire::{
    self, ClientPacket, ConnectOutcome, ConnectRequest, DecodeError, DisconnectReason, Message,
    ServerPacket, SubscribeOutcome, Version,
};
use super::{Clock, Shutdown};

/// Largest payload AWS IoT Core accepts.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;
/// Largest packet read: the payload limit plus room for the topic, properties and header.
const MAX_PACKET_BYTES: usize = MAX_PAYLOAD_BYTES + 4096;
/// Longest client id AWS IoT Core accepts.
const MAX_CLIENT_ID_BYTES: usize = 128;
/// A client must send CONNECT this soon after the transport is up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// QoS 1 messages kept for an offline persistent session; the oldest go first.
const MAX_QUEUED_PER_SESSION: usize = 1000;
/// Messages waiting for a live connection's task to write them.
const MAX_PENDING_PER_CONNECTION: usize = 1000;

/// Who is at the other end of a connection, as established by the transport.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// Id (hex SHA-256) of the client certificate presented in the TLS handshake.
    pub certificate_id: String,
    pub address: SocketAddr,
}

#[derive(Debug)]
struct LiveConnection {
    /// Distinguishes this connection from a later one with the same client id.
    id: u64,
    /// Messages to deliver. Bounded: a client that stops reading loses messages beyond
    /// [`MAX_PENDING_PER_CONNECTION`] instead of growing the broker's memory without limit.
    tx: mpsc::Sender<Message>,
    /// Told when another connection takes over the client id: close without the will.
    taken_over: Arc<Notify>,
}

impl LiveConnection {
    fn deliver(&self, client_id: &str, message: Message) {
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(dropped)) => {
                tracing::warn!(client_id, topic = %dropped.topic, "client is not reading; message dropped");
            }
            // The connection is ending; its task requeues what it had in flight, and a
            // message racing that end is lost as it would be on a dropped TCP link.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn take_over(&self) {
        // notify_one keeps a permit when the task is not waiting yet, so the signal is not lost.
        self.taken_over.notify_one();
    }
}

#[derive(Debug, Clone, Copy)]
struct Subscription {
    qos: QoS,
    /// MQTT 5 "no local": the subscriber's own publishes are not sent back to it.
    no_local: bool,
}

#[derive(Debug, Default)]
struct Session {
    subscriptions: HashMap<String, Subscription>,
    connection: Option<LiveConnection>,
    /// The session outlives its connection (3.1.1 clean session = false, or an MQTT 5
    /// session expiry interval above 0).
    persistent: bool,
    /// QoS 1 messages that arrived while no connection was live.
    queued: VecDeque<Message>,
}

#[derive(Debug, Default)]
struct BrokerState {
    sessions: HashMap<String, Session>,
    next_connection_id: u64,
    /// Fleet provisioning requests waiting for their answer, per request topic, oldest first.
    pending_provisioning: HashMap<String, VecDeque<PendingRequest>>,
}

/// A fleet provisioning request whose answer must go back to the connection that made it.
#[derive(Debug)]
struct PendingRequest {
    client_id: String,
    connection_id: u64,
    /// After this the answer is considered lost (the services were reconnecting, say), so a
    /// stale entry cannot take a later request's answer.
    expires: tokio::time::Instant,
}

/// How long a provisioning request waits for its answer before it is forgotten.
const PROVISIONING_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `topic` is a fleet provisioning request.
fn is_provisioning_request(topic: &str) -> bool {
    [
        "$aws/certificates/create/+",
        "$aws/certificates/create-from-csr/+",
        "$aws/provisioning-templates/+/provision/+",
    ]
    .iter()
    .any(|filter| topics::matches(topic, filter))
}

/// The request topic a fleet provisioning answer (`.../accepted`, `.../rejected`) belongs to.
fn provisioning_request_of(answer_topic: &str) -> Option<&str> {
    let request = answer_topic
        .strip_suffix("/accepted")
        .or_else(|| answer_topic.strip_suffix("/rejected"))?;
    is_provisioning_request(request).then_some(request)
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

/// Why a connection ended, for the lifecycle event, the log and an MQTT 5 DISCONNECT.
#[derive(Debug)]
enum CloseReason {
    ClientDisconnect,
    TakenOver,
    Shutdown,
    KeepAliveTimeout,
    ConnectionLost(String),
    ProtocolError(String),
    PacketTooLarge,
    QosNotSupported,
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
            Self::ProtocolError(_) | Self::QosNotSupported => "CLIENT_ERROR",
            Self::PacketTooLarge => "MESSAGE_TOO_LARGE",
            Self::Forbidden(_) => "FORBIDDEN_ACCESS",
        }
    }

    /// What an MQTT 5 client is told before the broker closes the connection.
    fn disconnect_reason(&self) -> Option<DisconnectReason> {
        match self {
            Self::ClientDisconnect | Self::ConnectionLost(_) => None,
            Self::TakenOver => Some(DisconnectReason::SessionTakenOver),
            Self::Shutdown => Some(DisconnectReason::ShuttingDown),
            Self::KeepAliveTimeout => Some(DisconnectReason::KeepAliveTimeout),
            Self::ProtocolError(_) => Some(DisconnectReason::ProtocolError),
            Self::PacketTooLarge => Some(DisconnectReason::PacketTooLarge),
            Self::QosNotSupported => Some(DisconnectReason::QosNotSupported),
            Self::Forbidden(_) => Some(DisconnectReason::NotAuthorized),
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

    /// Delivers a message to every matching subscription; `origin` is the publishing client.
    fn route(&self, message: &Message, origin: Option<&str>) {
        let mut state = self.lock();
        // AWS IoT Core answers a fleet provisioning request on the connection that made it
        // only: with a shared claim certificate, other devices must never see a certificate,
        // private key or ownership token meant for one of them. The services answer requests
        // in the order they arrive, so the oldest pending request owns the answer.
        let only_for = match provisioning_request_of(&message.topic) {
            None => None,
            Some(request) => {
                let now = tokio::time::Instant::now();
                let queue = state
                    .pending_provisioning
                    .entry(request.to_string())
                    .or_default();
                while queue.front().is_some_and(|p| p.expires <= now) {
                    queue.pop_front();
                }
                match queue.pop_front() {
                    Some(pending) => Some((pending.client_id, pending.connection_id)),
                    None => return,
                }
            }
        };
        for (client_id, session) in state.sessions.iter_mut() {
            if let Some((target, connection_id)) = &only_for {
                let same_connection = target == client_id
                    && session
                        .connection
                        .as_ref()
                        .is_some_and(|live| live.id == *connection_id);
                if !same_connection {
                    continue;
                }
            }
            let own = origin == Some(client_id.as_str());
            let granted = session
                .subscriptions
                .iter()
                .filter(|(filter, sub)| {
                    !(own && sub.no_local) && topics::matches(&message.topic, filter)
                })
                .map(|(_, sub)| sub.qos)
                .max_by_key(|q| *q as u8);
            let Some(granted) = granted else { continue };
            let mut delivery = message.clone();
            if (granted as u8) < (message.qos as u8) {
                delivery.qos = granted;
            }
            match &session.connection {
                Some(live) => live.deliver(client_id, delivery),
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

    fn lifecycle_event(
        &self,
        client_id: &str,
        connection_id: u64,
        peer: &PeerIdentity,
        closed: Option<&CloseReason>,
    ) {
        let event_type = if closed.is_some() {
            "disconnected"
        } else {
            "connected"
        };
        let mut event = serde_json::json!({
            "clientId": client_id,
            "timestamp": self.clock.now_epoch_s() * 1000,
            "eventType": event_type,
            // Unique per connection, so that a reader can tell a late disconnection of a
            // taken-over connection from the end of the current one.
            "sessionIdentifier": format!("{client_id}-{connection_id}-{}", peer.address),
            "principalIdentifier": peer.certificate_id,
            "ipAddress": peer.address.ip().to_string(),
            "versionNumber": 0,
        });
        if let Some(reason) = closed {
            event["clientInitiatedDisconnect"] =
                serde_json::Value::Bool(matches!(reason, CloseReason::ClientDisconnect));
            event["disconnectReason"] = serde_json::Value::from(reason.aws_reason());
        }
        let message = Message {
            topic: format!("$aws/events/presence/{event_type}/{client_id}"),
            payload: Bytes::from(event.to_string()),
            qos: QoS::AtLeastOnce,
            properties: None,
        };
        self.route(&message, None);
    }

    /// Decides whether a CONNECT is accepted; returns the certificate's role when it is.
    fn authorize_connect(
        &self,
        connect: &ConnectRequest,
        peer: &PeerIdentity,
    ) -> Result<CertificateRole, ConnectOutcome> {
        let client_id = &connect.client_id;
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_BYTES {
            return Err(ConnectOutcome::BadClientId);
        }
        let role = self
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .certificate(&peer.certificate_id)
            .map(|c| c.role.clone());
        let authorized = match &role {
            Some(CertificateRole::Thing { thing_name }) => thing_name == client_id,
            Some(CertificateRole::Claim) | Some(CertificateRole::Service) => true,
            Some(CertificateRole::Pending) | None => false,
        };
        match role {
            Some(role) if authorized => Ok(role),
            _ => {
                tracing::info!(client_id, certificate = %peer.certificate_id, "connection refused: not authorized");
                Err(ConnectOutcome::NotAuthorized)
            }
        }
    }

    /// Serves one client connection until it ends or `shutdown` fires.
    pub async fn serve_connection<S>(&self, stream: S, peer: PeerIdentity, mut shutdown: Shutdown)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut conn = Connection {
            stream,
            version: None,
            read_buf: BytesMut::with_capacity(4096),
            write_buf: BytesMut::with_capacity(4096),
        };
        let connect = tokio::select! {
            read = tokio::time::timeout(CONNECT_TIMEOUT, conn.read_packet()) => match read {
                Ok(Ok(ClientPacket::Connect(connect))) => connect,
                Ok(Ok(other)) => {
                    tracing::debug!(peer = %peer.address, "first packet was not CONNECT: {other:?}");
                    return;
                }
                Ok(Err(ReadError::Decode(DecodeError::UnsupportedVersion(level)))) => {
                    tracing::debug!(peer = %peer.address, level, "unsupported MQTT version");
                    // MQTT 3.1.1 section 3.2.2.3: answer return code 1, then close.
                    conn.version = Some(Version::V311);
                    let _ = conn.write(&ServerPacket::ConnAck(ConnectOutcome::UnsupportedVersion)).await;
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
        conn.version = Some(connect.version);
        let role = match self.authorize_connect(&connect, &peer) {
            Ok(role) => role,
            Err(refusal) => {
                let _ = conn.write(&ServerPacket::ConnAck(refusal)).await;
                return;
            }
        };
        let client_id = connect.client_id.clone();

        // AWS IoT Core treats 0 as 1200 s and raises anything under 30 s to 30 s.
        let keep_alive_s = match connect.keep_alive_s {
            0 => 1200,
            k => k.clamp(30, 1200),
        };
        let silence_limit = Duration::from_millis(u64::from(keep_alive_s) * 1500);

        let (tx, mut rx) = mpsc::channel(MAX_PENDING_PER_CONNECTION);
        let taken_over = Arc::new(Notify::new());
        let (connection_id, session_present, queued) = {
            let mut state = self.lock();
            state.next_connection_id += 1;
            let connection_id = state.next_connection_id;
            if connect.clean_start {
                if let Some(old) = state.sessions.remove(&client_id) {
                    if let Some(live) = old.connection {
                        live.take_over();
                    }
                }
            }
            let session = state.sessions.entry(client_id.clone()).or_default();
            let session_present = !connect.clean_start && session.persistent;
            if !session_present {
                // A session that was not kept starts empty (MQTT 5 clean start = false with
                // an expired session, or a first connection).
                session.subscriptions.clear();
                session.queued.clear();
            }
            if let Some(old) = session.connection.take() {
                old.take_over();
            }
            session.persistent = connect.persistent();
            session.connection = Some(LiveConnection {
                id: connection_id,
                tx,
                taken_over: taken_over.clone(),
            });
            (
                connection_id,
                session_present,
                std::mem::take(&mut session.queued),
            )
        };
        let accepted = ConnectOutcome::Accepted {
            session_present,
            server_keep_alive_s: (keep_alive_s != connect.keep_alive_s).then_some(keep_alive_s),
        };
        if conn.write(&ServerPacket::ConnAck(accepted)).await.is_err() {
            self.end_session(&client_id, connection_id, Vec::new(), &mut rx);
            return;
        }
        tracing::debug!(client_id, version = ?connect.version, "connected");
        self.lifecycle_event(&client_id, connection_id, &peer, None);

        let mut outgoing = OutgoingState::default();
        let mut reason = None;
        for message in queued {
            if let Err(e) = outgoing.send(&mut conn, message).await {
                reason = Some(CloseReason::ConnectionLost(e.to_string()));
                break;
            }
        }

        let mut last_heard = tokio::time::Instant::now();
        let mut publish_will_on_disconnect = false;
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
                            Err(ReadError::Decode(DecodeError::TooLarge(_))) => break CloseReason::PacketTooLarge,
                            Err(ReadError::Decode(e)) => break CloseReason::ProtocolError(e.to_string()),
                            Ok(packet) => packet,
                        };
                        last_heard = tokio::time::Instant::now();
                        if let ClientPacket::Disconnect { publish_will } = packet {
                            publish_will_on_disconnect = publish_will;
                            break CloseReason::ClientDisconnect;
                        }
                        match self.handle_packet(&mut conn, &client_id, connection_id, &role, &mut outgoing, packet).await {
                            Ok(None) => {}
                            Ok(Some(reason)) => break reason,
                            Err(e) => break CloseReason::ConnectionLost(e.to_string()),
                        }
                    }
                    message = rx.recv() => match message {
                        Some(message) => {
                            if let Err(e) = outgoing.send(&mut conn, message).await {
                                break CloseReason::ConnectionLost(e.to_string());
                            }
                        }
                        None => break CloseReason::TakenOver,
                    },
                    _ = taken_over.notified() => break CloseReason::TakenOver,
                    _ = silence_deadline => break CloseReason::KeepAliveTimeout,
                    _ = shutdown.wait() => break CloseReason::Shutdown,
                }
            },
        };
        tracing::debug!(client_id, %reason, "connection closed");
        // Detach from the session before closing the stream: a client that sees its connection
        // end and reconnects at once must find what was meant for it queued, not sent to a
        // connection that is going away.
        let mut unacknowledged: Vec<(Message, u64)> = outgoing.inflight.into_values().collect();
        unacknowledged.sort_by_key(|(_, sequence)| *sequence);
        self.end_session(
            &client_id,
            connection_id,
            unacknowledged.into_iter().map(|(m, _)| m).collect(),
            &mut rx,
        );
        if let Some(disconnect) = reason.disconnect_reason() {
            let _ = conn.write(&ServerPacket::Disconnect(disconnect)).await;
        }
        let _ = conn.stream.shutdown().await;

        let will_due = match reason {
            CloseReason::ClientDisconnect => publish_will_on_disconnect,
            CloseReason::TakenOver => false,
            _ => true,
        };
        if will_due {
            if let Some(will) = &connect.will {
                if topics::valid_topic(&will.topic) && topics::may_publish(&role, &will.topic) {
                    let message = Message {
                        topic: will.topic.clone(),
                        payload: will.payload.clone(),
                        qos: cap_qos(will.qos),
                        properties: will.properties.clone(),
                    };
                    self.route(&message, Some(&client_id));
                }
            }
        }
        self.lifecycle_event(&client_id, connection_id, &peer, Some(&reason));
    }

    /// Detaches a finished connection from its session. For a persistent session, the QoS 1
    /// messages the connection left unacknowledged, then those still waiting in its queue, go
    /// to the session's next connection (queued, or handed to a connection that took over).
    fn end_session(
        &self,
        client_id: &str,
        connection_id: u64,
        unacknowledged: Vec<Message>,
        waiting: &mut mpsc::Receiver<Message>,
    ) {
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(client_id) else {
            return;
        };
        if session
            .connection
            .as_ref()
            .is_some_and(|live| live.id == connection_id)
        {
            session.connection = None;
        }
        // Holding the lock, nothing more can be routed to this connection's queue: it is
        // either detached above or already replaced by a newer connection.
        let mut leftover = unacknowledged;
        while let Ok(message) = waiting.try_recv() {
            if message.qos == QoS::AtLeastOnce {
                leftover.push(message);
            }
        }
        if !session.persistent {
            if session.connection.is_none() {
                state.sessions.remove(client_id);
            }
            return;
        }
        match &session.connection {
            // A newer connection owns the session: hand it what this one left.
            Some(live) => {
                for message in leftover {
                    live.deliver(client_id, message);
                }
            }
            None => {
                for message in leftover.into_iter().rev() {
                    session.queued.push_front(message);
                }
            }
        }
    }

    /// Acts on one packet from the client; `Some(reason)` ends the connection.
    async fn handle_packet<S>(
        &self,
        conn: &mut Connection<S>,
        client_id: &str,
        connection_id: u64,
        role: &CertificateRole,
        outgoing: &mut OutgoingState,
        packet: ClientPacket,
    ) -> std::io::Result<Option<CloseReason>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match packet {
            ClientPacket::Publish { pkid, message } => {
                if message.qos == QoS::ExactlyOnce {
                    return Ok(Some(CloseReason::QosNotSupported));
                }
                if message.payload.len() > MAX_PAYLOAD_BYTES {
                    return Ok(Some(CloseReason::PacketTooLarge));
                }
                if !topics::valid_topic(&message.topic) {
                    return Ok(Some(CloseReason::ProtocolError(format!(
                        "invalid topic {:?}",
                        message.topic
                    ))));
                }
                // AWS IoT Core closes the connection of a client that publishes where its
                // policy does not allow.
                if !topics::may_publish(role, &message.topic) {
                    tracing::info!(client_id, topic = %message.topic, "publish refused by policy");
                    return Ok(Some(CloseReason::Forbidden(message.topic)));
                }
                if message.qos == QoS::AtLeastOnce {
                    conn.write(&ServerPacket::PubAck(pkid)).await?;
                }
                if is_provisioning_request(&message.topic) {
                    self.lock()
                        .pending_provisioning
                        .entry(message.topic.clone())
                        .or_default()
                        .push_back(PendingRequest {
                            client_id: client_id.to_string(),
                            connection_id,
                            expires: tokio::time::Instant::now() + PROVISIONING_ANSWER_TIMEOUT,
                        });
                }
                self.route(&message, Some(client_id));
            }
            ClientPacket::Subscribe { pkid, filters } => {
                // AWS IoT Core sends no SUBACK at all for a QoS 2 subscription.
                if filters.iter().any(|f| f.qos == QoS::ExactlyOnce) {
                    return Ok(None);
                }
                let mut outcomes = Vec::with_capacity(filters.len());
                {
                    let mut state = self.lock();
                    let Some(session) = state.sessions.get_mut(client_id) else {
                        return Ok(Some(CloseReason::TakenOver));
                    };
                    for request in filters {
                        let outcome = if !topics::valid_filter(&request.filter) {
                            SubscribeOutcome::InvalidFilter
                        } else if !topics::may_subscribe(role, &request.filter) {
                            tracing::info!(client_id, filter = %request.filter, "subscription refused by policy");
                            SubscribeOutcome::NotAuthorized
                        } else {
                            session.subscriptions.insert(
                                request.filter,
                                Subscription {
                                    qos: request.qos,
                                    no_local: request.no_local,
                                },
                            );
                            SubscribeOutcome::Granted(request.qos)
                        };
                        outcomes.push(outcome);
                    }
                }
                conn.write(&ServerPacket::SubAck { pkid, outcomes }).await?;
            }
            ClientPacket::Unsubscribe { pkid, filters } => {
                {
                    let mut state = self.lock();
                    if let Some(session) = state.sessions.get_mut(client_id) {
                        for filter in &filters {
                            session.subscriptions.remove(filter);
                        }
                    }
                }
                conn.write(&ServerPacket::UnsubAck {
                    pkid,
                    count: filters.len(),
                })
                .await?;
            }
            ClientPacket::PubAck(pkid) => {
                outgoing.inflight.remove(&pkid);
            }
            ClientPacket::PingReq => conn.write(&ServerPacket::PingResp).await?,
            ClientPacket::Disconnect { .. } => return Ok(Some(CloseReason::ClientDisconnect)),
            ClientPacket::Connect(_) => {
                return Ok(Some(CloseReason::ProtocolError("second CONNECT".into())))
            }
            ClientPacket::Unexpected(what) => {
                return Ok(Some(CloseReason::ProtocolError(format!(
                    "unexpected packet from a client: {what}"
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
    inflight: HashMap<u16, (Message, u64)>,
    sequence: u64,
}

impl OutgoingState {
    async fn send<S>(&mut self, conn: &mut Connection<S>, message: Message) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut pkid = 0;
        if message.qos == QoS::AtLeastOnce {
            // Skip ids still in flight; with 65535 ids and a bounded queue one is always free.
            loop {
                self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
                if !self.inflight.contains_key(&self.next_pkid) {
                    break;
                }
            }
            pkid = self.next_pkid;
        }
        conn.write(&ServerPacket::Publish {
            pkid,
            message: &message,
        })
        .await?;
        if message.qos == QoS::AtLeastOnce {
            self.sequence += 1;
            self.inflight.insert(pkid, (message, self.sequence));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Decode(DecodeError),
}

/// A byte stream framed into MQTT packets of the version the client connected with.
struct Connection<S> {
    stream: S,
    /// `None` until the CONNECT has been read.
    version: Option<Version>,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    async fn read_packet(&mut self) -> Result<ClientPacket, ReadError> {
        loop {
            match wire::decode(&mut self.read_buf, self.version, MAX_PACKET_BYTES) {
                Ok(Some(packet)) => return Ok(packet),
                Ok(None) => {}
                Err(e) => return Err(ReadError::Decode(e)),
            }
            if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }

    async fn write(&mut self, packet: &ServerPacket<'_>) -> std::io::Result<()> {
        let version = self.version.unwrap_or(Version::V311);
        self.write_buf.clear();
        wire::encode(packet, version, MAX_PACKET_BYTES, &mut self.write_buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if self.write_buf.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.write_buf).await?;
        self.stream.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::ManualClock;
    use rumqttc::mqttbytes::v4;
    use tokio::io::DuplexStream;

    const CERTIFICATE: &str = "certificate-of-desk-1";

    fn broker(dir: &std::path::Path) -> Broker {
        let mut registry = Registry::open(dir).expect("registry");
        registry
            .create_thing("desk-1", CERTIFICATE, Default::default(), 0)
            .expect("thing");
        Broker::new(
            Arc::new(Mutex::new(registry)),
            Arc::new(ManualClock::new(0)),
        )
    }

    /// Connects `desk-1` over an in-memory stream; returns the client's end after the CONNACK.
    async fn connect(
        broker: &Broker,
        keep_alive_s: u16,
    ) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (_trigger, shutdown) = super::super::ShutdownTrigger::new();
        let peer = PeerIdentity {
            certificate_id: CERTIFICATE.into(),
            address: "127.0.0.1:50000".parse().expect("address"),
        };
        let broker = broker.clone();
        let task = tokio::spawn(async move {
            // The trigger lives as long as the connection so that shutdown never fires.
            let _trigger = _trigger;
            broker.serve_connection(server, peer, shutdown).await;
        });
        let mut client = client;
        let mut connect = v4::Connect::new("desk-1");
        connect.keep_alive = keep_alive_s;
        write(&mut client, v4::Packet::Connect(connect)).await;
        match read(&mut client).await {
            Some(v4::Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, v4::ConnectReturnCode::Success)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        (client, task)
    }

    async fn write(stream: &mut DuplexStream, packet: v4::Packet) {
        let mut buf = BytesMut::new();
        packet.write(&mut buf, 1 << 20).expect("encode");
        stream.write_all(&buf).await.expect("write");
    }

    /// The next packet, or `None` once the broker closed the stream.
    async fn read(stream: &mut DuplexStream) -> Option<v4::Packet> {
        let mut buf = BytesMut::new();
        loop {
            match v4::Packet::read(&mut buf, 1 << 20) {
                Ok(packet) => return Some(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from the broker: {e}"),
            }
            if stream.read_buf(&mut buf).await.expect("read") == 0 {
                return None;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_dropped_after_one_and_a_half_keepalives_even_while_receiving() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let broker = broker(dir.path());
        let (mut client, task) = connect(&broker, 30).await;
        write(
            &mut client,
            v4::Packet::Subscribe(v4::Subscribe::new("devicehub/desk-1/#", QoS::AtMostOnce)),
        )
        .await;
        assert!(matches!(
            read(&mut client).await,
            Some(v4::Packet::SubAck(_))
        ));
        let started = tokio::time::Instant::now();
        // Messages keep flowing to the client, but it sends nothing.
        let closed_at = loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            broker.route(
                &Message {
                    topic: "devicehub/desk-1/ping".into(),
                    payload: Bytes::from_static(b"x"),
                    qos: QoS::AtMostOnce,
                    properties: None,
                },
                None,
            );
            let mut reached_end = false;
            while let Ok(next) =
                tokio::time::timeout(Duration::from_millis(10), read(&mut client)).await
            {
                if next.is_none() {
                    reached_end = true;
                    break;
                }
            }
            if reached_end {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "never dropped"
            );
        };
        assert!(
            closed_at >= Duration::from_secs(45),
            "dropped early: {closed_at:?}"
        );
        assert!(
            closed_at <= Duration::from_secs(50),
            "dropped late: {closed_at:?}"
        );
        task.await.expect("connection task");
    }

    #[tokio::test(start_paused = true)]
    async fn pings_keep_a_connection_open() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let broker = broker(dir.path());
        let (mut client, _task) = connect(&broker, 30).await;
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(25)).await;
            write(&mut client, v4::Packet::PingReq).await;
            assert!(matches!(
                read(&mut client).await,
                Some(v4::Packet::PingResp)
            ));
        }
        assert_eq!(broker.connected_clients(), ["desk-1"]);
    }
}
