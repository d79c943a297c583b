//! The MQTT link to AWS IoT Core (or the emulator): one long-lived connection with the device
//! certificate, kept up across network failures and broker restarts.
//!
//! # Structure
//! One task owns rumqttc's [`EventLoop`] and does nothing but poll it (and wait out the
//! backoff between attempts): incoming publishes go to an mpsc channel, connection state
//! changes to a [`watch`] channel, and publishing and subscribing go through [`LinkHandle`],
//! which wraps rumqttc's [`AsyncClient`]. Nothing slow ever runs inside the loop.
//!
//! # Connection
//! - Client ID = thing name; clean session off, so subscriptions and queued QoS 1 messages
//!   survive a dropped connection. When CONNACK says the session was *not* kept (a broker
//!   restart, an expired session), every filter registered through [`LinkHandle::subscribe`]
//!   is subscribed again.
//! - Keepalive 30..1200 s (AWS's range); packets up to 128 KiB of payload both ways (rumqttc's
//!   default is 10 KiB).
//! - Last will: `devicehub/<thing>/events/connection` with
//!   `{"thingName":..,"state":"disconnected","reason":"connection lost"}`, QoS 1, not retained.
//!   A clean stop publishes the same event with `"reason":"shutdown"` and then DISCONNECTs, so the
//!   will is not sent.
//! - Reconnects with exponential backoff and full jitter ([`Backoff`]), reset by a CONNACK.
//!
//! # Delivery
//! rumqttc acknowledges a QoS 1 publish as soon as the loop reads it, before the consumer of
//! [`StartedLink::incoming`] has handled it. A message in the channel when DeviceHub dies is
//! therefore lost, not redelivered; the jobs code must not rely on redelivery and asks the
//! cloud for pending jobs (`jobs/get`, `start-next`) after every (re)connection instead. The
//! channel is bounded: a slow consumer pauses reading from the broker rather than losing
//! messages.
//!
//! # Transports
//! [`LinkTransport`]: MQTT over mutual TLS (port 8883), over mutual TLS on 443 with ALPN
//! `x-amzn-mqtt-ca`, and over WebSocket on 443 (`wss://HOST/mqtt`) with the client certificate
//! in the TLS handshake. The emulator accepts the last one; **AWS IoT Core does not**: it
//! authenticates WebSocket clients with SigV4 or a custom authorizer, neither of which DeviceHub
//! implements yet. Against AWS, use [`LinkTransport::MutualTls`] or [`LinkTransport::Alpn`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions,
    Outgoing, Packet, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::tls::{self, TlsError};
use crate::storage::certs::valid_thing_name;
use crate::storage::DeviceIdentity;

/// The largest payload AWS IoT Core accepts.
pub const MAX_PAYLOAD: usize = 128 * 1024;
/// The largest packet the link sends or accepts: a full payload plus room for the topic
/// (at most 256 bytes on AWS) and the fixed and variable headers.
pub const MAX_PACKET: usize = MAX_PAYLOAD + 1024;
/// AWS's limit on topic names, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;
/// AWS accepts at most 8 filters per SUBSCRIBE.
const FILTERS_PER_SUBSCRIBE: usize = 8;
/// How long a clean stop waits for the DISCONNECT to leave.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// Which of AWS IoT Core's MQTT transports to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkTransport {
    /// MQTT over TLS with the client certificate, AWS port 8883.
    MutualTls { port: u16 },
    /// MQTT over TLS with the client certificate and ALPN `x-amzn-mqtt-ca`, AWS port 443: for
    /// networks that only let 443 out.
    Alpn { port: u16 },
    /// MQTT over WebSocket over TLS with the client certificate, `wss://HOST:PORT/PATH`.
    /// Emulator only (see the module documentation).
    WebSocket { port: u16, path: String },
}

impl LinkTransport {
    fn describe(&self) -> String {
        match self {
            LinkTransport::MutualTls { port } => format!("MQTT over TLS on port {port}"),
            LinkTransport::Alpn { port } => {
                format!("MQTT over TLS with ALPN x-amzn-mqtt-ca on port {port}")
            }
            LinkTransport::WebSocket { port, path } => {
                format!("MQTT over WebSocket on port {port} path {path}")
            }
        }
    }
}

/// The delivery guarantee of a publish or subscription. AWS IoT Core has no QoS 2, so neither
/// does the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

impl From<Qos> for rumqttc::QoS {
    fn from(qos: Qos) -> Self {
        match qos {
            Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        }
    }
}

/// Reconnect delays: exponential backoff with full jitter. Attempt `n` (0 for the first retry)
/// waits a uniformly random time up to `min(max, initial * 2^n)`, but never less than
/// `initial`: AWS allows one CONNECT per second per client ID, so retrying faster only gets
/// throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before retry `attempt`, given `random` uniform in `[0, 1)`.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        let jittered = ceiling.mul_f64(random.clamp(0.0, 1.0));
        jittered.max(self.initial.min(self.max))
    }
}

/// Everything the link needs to connect.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The endpoint host name (AWS: `xxxxxxxx-ats.iot.REGION.amazonaws.com`), also the TLS SNI.
    pub endpoint: String,
    pub transport: LinkTransport,
    /// Thing name (the client ID), certificate, key and CA bundle (`None`: Amazon Root CA 1
    /// and 3).
    pub identity: DeviceIdentity,
    /// MQTT keepalive, 30..=1200 s. The broker drops the link after 1.5 times this of silence,
    /// so it also bounds how long a dead link goes unnoticed.
    pub keep_alive: Duration,
    pub backoff: Backoff,
    /// How long one TCP + TLS (+ WebSocket) connection attempt may take.
    pub connect_timeout: Duration,
    /// How many received messages may wait for the consumer before the link stops reading
    /// from the network (backpressure instead of dropping QoS 1 messages).
    pub incoming_capacity: usize,
}

impl LinkConfig {
    /// A configuration with the defaults: keepalive 60 s, backoff 1..60 s, 10 s connect timeout.
    pub fn new(endpoint: String, transport: LinkTransport, identity: DeviceIdentity) -> Self {
        Self {
            endpoint,
            transport,
            identity,
            keep_alive: Duration::from_secs(60),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(10),
            incoming_capacity: 256,
        }
    }

    /// The topic of the connection events, including the last will.
    pub fn connection_topic(&self) -> String {
        connection_topic(&self.identity.thing_name)
    }
}

/// The topic connection events (and the last will) are published on.
pub fn connection_topic(thing_name: &str) -> String {
    format!("devicehub/{thing_name}/events/connection")
}

fn connection_event(thing_name: &str, reason: &str) -> Vec<u8> {
    serde_json::json!({
        "thingName": thing_name,
        "state": "disconnected",
        "reason": reason,
    })
    .to_string()
    .into_bytes()
}

/// Why the link could not start, or why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("keepalive must be 30 to 1200 seconds, not {0} s")]
    KeepAlive(u64),
    #[error("thing name {0:?} is not a valid client ID (1 to 128 characters of a-z, A-Z, 0-9, ':', '_' and '-')")]
    ThingName(String),
    #[error("endpoint {0:?} is not a host name")]
    Endpoint(String),
    #[error("the TLS configuration for {endpoint} is unusable: {source}")]
    Tls {
        endpoint: String,
        #[source]
        source: TlsError,
    },
    #[error("the payload for {topic} is {size} bytes; AWS IoT Core accepts at most {MAX_PAYLOAD}")]
    PayloadTooLarge { topic: String, size: usize },
    #[error("{0:?} is not a topic to publish to (empty, longer than {MAX_TOPIC_LEN} bytes, or holds a wildcard)")]
    Topic(String),
    #[error("{0:?} is not a valid topic filter")]
    Filter(String),
    #[error("the MQTT link has stopped")]
    Stopped,
}

/// What kind of failure ended or prevented a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The server's certificate does not chain to the configured CA bundle, or names another
    /// host. Retrying will not help until the endpoint or the CA bundle is fixed.
    ServerNotTrusted,
    /// The server refused the client certificate during the TLS handshake (unknown, revoked,
    /// inactive or expired certificate).
    ClientCertificateRefused,
    /// The broker answered CONNECT with a refusal (e.g. not authorized: the policy does not
    /// allow this client ID).
    ConnectRefused,
    /// The TLS handshake failed for another reason (for example the server wants another ALPN
    /// protocol).
    Tls,
    /// The network: no route, connection refused or reset, timeout, DNS.
    Network,
    /// The broker broke the MQTT protocol or closed the connection.
    Protocol,
}

/// A connection failure, classified, with a sentence for the log and the status display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFailure {
    pub kind: FailureKind,
    pub message: String,
}

/// The link's state, published on a watch channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// The first connection attempt is under way.
    Connecting,
    /// CONNACK accepted. `session_present` false means the broker had no session for this
    /// client: the link subscribed everything again, and QoS 1 messages sent while it was
    /// away are lost.
    Connected { session_present: bool },
    /// The connection failed or dropped; the next attempt starts after `retry_in`.
    Reconnecting {
        /// How many attempts have failed since the last successful connection.
        attempt: u32,
        retry_in: Duration,
        failure: LinkFailure,
    },
    /// The link was shut down.
    Stopped,
}

/// A message the broker delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
    /// Set when the broker says this may be a redelivery (QoS 1 after a reconnect).
    pub duplicate: bool,
}

/// The filters registered with the link and whether it is connected, under one lock so that
/// a subscription made while a CONNACK is being handled is sent exactly by one of the two.
#[derive(Debug, Default)]
struct Subscriptions {
    filters: BTreeMap<String, Qos>,
    /// Filters sent to the broker since the session began. A broker that kept the session
    /// keeps these, but not filters registered while no session had ever been opened (for
    /// example before the first connection of an identity whose session a previous program
    /// left on the broker): those must still be sent.
    sent: BTreeSet<String>,
    connected: bool,
}

/// The handle the rest of DeviceHub uses to talk to the cloud. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    client: AsyncClient,
    subscriptions: Arc<Mutex<Subscriptions>>,
    state: watch::Receiver<LinkState>,
}

/// A started link: its handle, the stream of received messages and the task to join.
#[derive(Debug)]
pub struct StartedLink {
    pub handle: LinkHandle,
    pub incoming: mpsc::Receiver<InboundMessage>,
    /// Finishes after `shutdown` is cancelled and the link said goodbye to the broker.
    pub task: JoinHandle<()>,
}

/// The MQTT link.
#[derive(Debug)]
pub struct MqttLink;

impl MqttLink {
    /// Checks `config`, builds the TLS configuration and starts the connection task. The task
    /// connects in the background; watch [`LinkHandle::state`] for the outcome. It runs until
    /// `shutdown` is cancelled.
    pub fn start(
        config: LinkConfig,
        shutdown: CancellationToken,
    ) -> Result<StartedLink, LinkError> {
        let options = mqtt_options(&config)?;
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let mut network = NetworkOptions::new();
        network.set_connection_timeout(config.connect_timeout.as_secs().max(1));
        // Job requests and answers are small packets sent one after another: with Nagle's
        // algorithm each waits for the peer's delayed ACK, adding tens of milliseconds to every
        // print job's round trips.
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (state_tx, state_rx) = watch::channel(LinkState::Connecting);
        let (incoming_tx, incoming_rx) = mpsc::channel(config.incoming_capacity.max(1));
        let subscriptions = Arc::new(Mutex::new(Subscriptions::default()));
        let connection = Connection {
            eventloop,
            client: client.clone(),
            subscriptions: subscriptions.clone(),
            state: state_tx,
            incoming: incoming_tx,
            backoff: config.backoff,
            thing_name: config.identity.thing_name.clone(),
            description: format!("{} at {}", config.transport.describe(), config.endpoint),
        };
        let task = tokio::spawn(connection.run(shutdown));
        Ok(StartedLink {
            handle: LinkHandle {
                client,
                subscriptions,
                state: state_rx,
            },
            incoming: incoming_rx,
            task,
        })
    }
}

fn mqtt_options(config: &LinkConfig) -> Result<MqttOptions, LinkError> {
    let keep_alive = config.keep_alive.as_secs();
    if !(30..=1200).contains(&keep_alive) {
        return Err(LinkError::KeepAlive(keep_alive));
    }
    let thing = &config.identity.thing_name;
    if !valid_thing_name(thing) {
        return Err(LinkError::ThingName(thing.clone()));
    }
    let endpoint = &config.endpoint;
    if endpoint.is_empty() || endpoint.contains(['/', ':', ' ']) {
        return Err(LinkError::Endpoint(endpoint.clone()));
    }
    let tls_err = |source| LinkError::Tls {
        endpoint: endpoint.clone(),
        source,
    };
    let ca = match &config.identity.ca_bundle_pem {
        Some(pem) => pem.clone(),
        None => tls::amazon_roots_pem(),
    };
    let alpn = match config.transport {
        LinkTransport::Alpn { .. } => Some(tls::ALPN_MQTT_CA),
        _ => None,
    };
    let tls_config = tls::client_config(
        ca.as_bytes(),
        config.identity.certificate_pem.as_bytes(),
        config.identity.private_key_pem.as_bytes(),
        alpn,
    )
    .map_err(tls_err)?;
    let tls_config = TlsConfiguration::Rustls(tls_config);
    let mut options = transport_options(thing, endpoint, &config.transport, tls_config);
    options
        .set_keep_alive(config.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_request_channel_capacity(64)
        .set_last_will(LastWill::new(
            connection_topic(thing),
            connection_event(thing, "connection lost"),
            rumqttc::QoS::AtLeastOnce,
            false,
        ));
    Ok(options)
}

/// MQTT options for `client_id` reaching `endpoint` over `transport`: TLS on the transport's
/// port, or MQTT over a WebSocket at `wss://ENDPOINT:PORT/PATH`.
pub(crate) fn transport_options(
    client_id: &str,
    endpoint: &str,
    transport: &LinkTransport,
    tls_config: TlsConfiguration,
) -> MqttOptions {
    match transport {
        LinkTransport::MutualTls { port } | LinkTransport::Alpn { port } => {
            let mut options = MqttOptions::new(client_id, endpoint, *port);
            options.set_transport(Transport::tls_with_config(tls_config));
            options
        }
        LinkTransport::WebSocket { port, path } => {
            let slash = if path.starts_with('/') { "" } else { "/" };
            // rumqttc takes the WebSocket URL in place of the host.
            let url = format!("wss://{endpoint}:{port}{slash}{path}");
            let mut options = MqttOptions::new(client_id, url, *port);
            options.set_transport(Transport::wss_with_config(tls_config));
            options
        }
    }
}

impl LinkHandle {
    /// The link's state; `changed()` on the receiver wakes on every transition.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Subscribes to `filter` now if connected, and again after every reconnect that lost the
    /// session. Returns once the request is queued (waiting only while the request queue is
    /// full); a broker refusal is logged.
    pub async fn subscribe(&self, filter: &str, qos: Qos) -> Result<(), LinkError> {
        if !valid_filter(filter) {
            return Err(LinkError::Filter(filter.to_string()));
        }
        let send_now = {
            let mut subscriptions = lock(&self.subscriptions);
            subscriptions.filters.insert(filter.to_string(), qos);
            if subscriptions.connected {
                subscriptions.sent.insert(filter.to_string());
            }
            subscriptions.connected
        };
        if send_now {
            self.client
                .subscribe(filter, qos.into())
                .await
                .map_err(|_| LinkError::Stopped)?;
        }
        Ok(())
    }

    /// Forgets `filter` and unsubscribes from it if connected.
    pub async fn unsubscribe(&self, filter: &str) -> Result<(), LinkError> {
        let send_now = {
            let mut subscriptions = lock(&self.subscriptions);
            subscriptions.sent.remove(filter);
            subscriptions.filters.remove(filter).is_some() && subscriptions.connected
        };
        if send_now {
            self.client
                .unsubscribe(filter)
                .await
                .map_err(|_| LinkError::Stopped)?;
        }
        Ok(())
    }

    /// The filters the link keeps subscribed.
    pub fn subscriptions(&self) -> Vec<(String, Qos)> {
        lock(&self.subscriptions)
            .filters
            .iter()
            .map(|(f, q)| (f.clone(), *q))
            .collect()
    }

    /// Queues a publish. QoS 1 publishes made while disconnected are sent after the reconnect;
    /// this waits only when the request queue is full.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        qos: Qos,
    ) -> Result<(), LinkError> {
        let payload = payload.into();
        if topic.is_empty() || topic.len() > MAX_TOPIC_LEN || topic.contains(['+', '#']) {
            return Err(LinkError::Topic(topic.to_string()));
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(LinkError::PayloadTooLarge {
                topic: topic.to_string(),
                size: payload.len(),
            });
        }
        self.client
            .publish(topic, qos.into(), false, payload)
            .await
            .map_err(|_| LinkError::Stopped)
    }
}

/// MQTT filter rules: non-empty, `#` only as the last level, `+` only as a whole level.
fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_LEN {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == levels.len() - 1,
        "+" => true,
        other => !other.contains(['+', '#']),
    })
}

fn lock(subscriptions: &Mutex<Subscriptions>) -> MutexGuard<'_, Subscriptions> {
    // The data is a plain map and a flag, valid after any panic: keep going.
    subscriptions.lock().unwrap_or_else(|p| p.into_inner())
}

/// The connection task's state.
struct Connection {
    eventloop: EventLoop,
    client: AsyncClient,
    subscriptions: Arc<Mutex<Subscriptions>>,
    state: watch::Sender<LinkState>,
    incoming: mpsc::Sender<InboundMessage>,
    backoff: Backoff,
    thing_name: String,
    /// "MQTT over TLS on port 8883 at HOST", for log lines.
    description: String,
}

impl Connection {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        // Set while the consumer lags, so that the warning is logged once per episode.
        let mut consumer_behind = false;
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    failures = 0;
                    self.connected(ack.session_present);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let message = InboundMessage {
                        topic: publish.topic,
                        payload: publish.payload,
                        qos: match publish.qos {
                            rumqttc::QoS::AtMostOnce => Qos::AtMostOnce,
                            _ => Qos::AtLeastOnce,
                        },
                        retain: publish.retain,
                        duplicate: publish.dup,
                    };
                    if self.incoming.capacity() == 0 && !consumer_behind {
                        consumer_behind = true;
                        tracing::warn!(
                            "the consumer of cloud messages is behind; pausing reads from the broker"
                        );
                    }
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        sent = self.incoming.send(message) => {
                            if sent.is_err() {
                                tracing::debug!("nobody reads cloud messages any more; dropping one");
                            }
                            if consumer_behind && self.incoming.capacity() > 0 {
                                consumer_behind = false;
                            }
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    for code in &ack.return_codes {
                        if *code == SubscribeReasonCode::Failure {
                            tracing::error!(
                                pkid = ack.pkid,
                                "the broker refused a subscription (the thing's policy does not allow it)"
                            );
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    lock(&self.subscriptions).connected = false;
                    let failure = classify(&error);
                    let retry_in = self.backoff.delay(failures, rand::random::<f64>());
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        link = %self.description,
                        attempt = failures,
                        retry_in_ms = retry_in.as_millis() as u64,
                        "cloud link down: {}",
                        failure.message
                    );
                    self.state.send_replace(LinkState::Reconnecting {
                        attempt: failures,
                        retry_in,
                        failure,
                    });
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(retry_in) => {}
                    }
                }
            }
        }
        self.stop().await;
    }

    fn connected(&mut self, session_present: bool) {
        let resubscribe: Vec<SubscribeFilter> = {
            let mut subscriptions = lock(&self.subscriptions);
            subscriptions.connected = true;
            if !session_present {
                subscriptions.sent.clear();
            }
            let Subscriptions { filters, sent, .. } = &mut *subscriptions;
            let missing: Vec<SubscribeFilter> = filters
                .iter()
                .filter(|(f, _)| !sent.contains(*f))
                .map(|(f, q)| SubscribeFilter::new(f.clone(), (*q).into()))
                .collect();
            sent.extend(filters.keys().cloned());
            missing
        };
        tracing::info!(link = %self.description, session_present, "cloud link connected");
        for chunk in resubscribe.chunks(FILTERS_PER_SUBSCRIBE) {
            if let Err(e) = self.client.try_subscribe_many(chunk.to_vec()) {
                tracing::error!("cannot queue the subscriptions again: {e}");
            }
        }
        self.state
            .send_replace(LinkState::Connected { session_present });
    }

    /// Says goodbye when connected: a "shutdown" connection event, then DISCONNECT, so that
    /// the broker does not publish the last will.
    async fn stop(mut self) {
        let was_connected = std::mem::take(&mut lock(&self.subscriptions).connected);
        if was_connected {
            let _ = self.client.try_publish(
                connection_topic(&self.thing_name),
                rumqttc::QoS::AtMostOnce,
                false,
                connection_event(&self.thing_name, "shutdown"),
            );
            if self.client.try_disconnect().is_ok() {
                let drained = tokio::time::timeout(DISCONNECT_GRACE, async {
                    loop {
                        match self.eventloop.poll().await {
                            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
                if drained.is_err() {
                    tracing::warn!("the broker did not take the DISCONNECT in time");
                }
            }
        }
        self.state.send_replace(LinkState::Stopped);
        tracing::info!(link = %self.description, "cloud link stopped");
    }
}

/// Turns rumqttc's error into a [`LinkFailure`] that says what to fix.
fn classify(error: &ConnectionError) -> LinkFailure {
    let failure = |kind, message: String| LinkFailure { kind, message };
    if let ConnectionError::ConnectionRefused(code) = error {
        return failure(
            FailureKind::ConnectRefused,
            format!("the broker refused the connection ({code:?}); check that the thing's certificate is active and its policy allows this client ID"),
        );
    }
    if let Some(tls_error) = tls::find_rustls_error(error) {
        use rustls::{AlertDescription as Alert, Error as E};
        return match tls_error {
            E::InvalidCertificate(reason) => failure(
                FailureKind::ServerNotTrusted,
                format!("the server's certificate is not trusted ({reason:?}): check the endpoint and the CA bundle"),
            ),
            E::AlertReceived(
                alert @ (Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::CertificateRequired
                | Alert::CertificateUnknown
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::UnsupportedCertificate
                | Alert::AccessDenied),
            ) => failure(
                FailureKind::ClientCertificateRefused,
                format!("the server refused the device certificate (TLS alert {alert:?}): the certificate is unknown to it, inactive, revoked or expired"),
            ),
            E::AlertReceived(Alert::NoApplicationProtocol) | E::NoApplicationProtocol => failure(
                FailureKind::Tls,
                "the server refused the ALPN protocol: use the transport its port expects".into(),
            ),
            other => failure(FailureKind::Tls, format!("TLS handshake failed: {other}")),
        };
    }
    match error {
        ConnectionError::NetworkTimeout => failure(
            FailureKind::Network,
            "timed out connecting to the broker".into(),
        ),
        ConnectionError::Io(io) => failure(FailureKind::Network, format!("network error: {io}")),
        ConnectionError::Tls(rumqttc::TlsError::Io(io)) => {
            failure(FailureKind::Network, format!("network error: {io}"))
        }
        ConnectionError::Websocket(ws) => {
            failure(FailureKind::Protocol, format!("WebSocket error: {ws}"))
        }
        other => failure(FailureKind::Protocol, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_full_jitter_and_a_floor() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(0, 0.99), Duration::from_secs(1));
        assert_eq!(backoff.delay(3, 0.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(3, 0.5), Duration::from_secs(4));
        assert_eq!(backoff.delay(10, 0.5), Duration::from_secs(30));
        assert_eq!(backoff.delay(10, 1.0), Duration::from_secs(60));
        assert_eq!(backoff.delay(u32::MAX, 1.0), Duration::from_secs(60));
        assert_eq!(backoff.delay(20, 0.25), Duration::from_secs(15));
    }

    #[test]
    fn transports_reach_the_endpoint_on_their_port_and_websockets_by_url() {
        let tls = || TlsConfiguration::Simple {
            ca: Vec::new(),
            alpn: None,
            client_auth: None,
        };
        let endpoint = "a1b2c3-ats.iot.eu-west-1.amazonaws.com";
        let tls_options = transport_options(
            "desk-1",
            endpoint,
            &LinkTransport::Alpn { port: 443 },
            tls(),
        );
        assert_eq!(tls_options.client_id(), "desk-1");
        assert_eq!(tls_options.broker_address(), (endpoint.to_string(), 443));
        for path in ["/mqtt", "mqtt"] {
            let transport = LinkTransport::WebSocket {
                port: 443,
                path: path.to_string(),
            };
            let options = transport_options("desk-1", endpoint, &transport, tls());
            assert_eq!(
                options.broker_address(),
                (format!("wss://{endpoint}:443/mqtt"), 443),
                "{path}"
            );
        }
    }

    #[test]
    fn filters_follow_the_mqtt_rules() {
        for good in [
            "a/b",
            "a/+/c",
            "a/#",
            "#",
            "+",
            "$aws/things/t/shadow/get/+",
        ] {
            assert!(valid_filter(good), "{good}");
        }
        for bad in ["", "a/#/c", "a+/b", "a/b#", &"x".repeat(MAX_TOPIC_LEN + 1)] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }

    fn identity() -> DeviceIdentity {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["desk-1".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        DeviceIdentity {
            thing_name: "desk-1".into(),
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            ca_bundle_pem: None,
        }
    }

    #[test]
    fn options_follow_aws_rules() {
        let mut config = LinkConfig::new(
            "example-ats.iot.eu-west-1.amazonaws.com".into(),
            LinkTransport::MutualTls { port: 8883 },
            identity(),
        );
        let options = mqtt_options(&config).expect("options");
        assert_eq!(options.client_id(), "desk-1");
        assert!(!options.clean_session());
        assert_eq!(options.max_packet_size(), MAX_PACKET);
        let will = options.last_will().expect("a last will");
        assert_eq!(will.topic, "devicehub/desk-1/events/connection");
        assert!(!will.retain);
        config.keep_alive = Duration::from_secs(10);
        assert!(matches!(
            mqtt_options(&config),
            Err(LinkError::KeepAlive(10))
        ));
        config.keep_alive = Duration::from_secs(1201);
        assert!(matches!(
            mqtt_options(&config),
            Err(LinkError::KeepAlive(1201))
        ));
        config.keep_alive = Duration::from_secs(30);
        config.identity.thing_name = "desk/1".into();
        assert!(matches!(
            mqtt_options(&config),
            Err(LinkError::ThingName(_))
        ));
    }

    #[tokio::test]
    async fn publishes_outside_aws_limits_are_refused_before_sending() {
        let config = LinkConfig::new(
            "localhost".into(),
            LinkTransport::MutualTls { port: 1 },
            identity(),
        );
        let shutdown = CancellationToken::new();
        let started = MqttLink::start(config, shutdown.clone()).expect("start");
        let handle = started.handle;
        assert!(matches!(
            handle
                .publish(
                    "devicehub/desk-1/x",
                    vec![0; MAX_PAYLOAD + 1],
                    Qos::AtMostOnce
                )
                .await,
            Err(LinkError::PayloadTooLarge { .. })
        ));
        assert!(matches!(
            handle.publish("devicehub/+/x", "", Qos::AtMostOnce).await,
            Err(LinkError::Topic(_))
        ));
        assert!(matches!(
            handle.subscribe("a/#/b", Qos::AtLeastOnce).await,
            Err(LinkError::Filter(_))
        ));
        shutdown.cancel();
        started.task.await.expect("the link task ends");
        assert_eq!(*handle.state().borrow(), LinkState::Stopped);
    }
}
