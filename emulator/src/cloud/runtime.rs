//! Starting and stopping the whole cloud: certificates, the broker (embedded, or an external
//! Mosquitto), the AWS IoT services wired to it as an ordinary MQTT client, and the shipping
//! application's HTTP API with its print-file server.
//!
//! Task structure: one task owns the services' rumqttc event loop and only polls it, handing
//! what arrives to a dispatcher task through an unbounded channel; the dispatcher runs the
//! synchronous service engines and publishes their answers. Every task is held in the
//! [`RunningCloud`]'s join set and ends on the one shutdown signal.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::activity::{self, ThingActivity};
use super::api::{self, ApiState};
use super::broker::{Broker, MAX_PAYLOAD_BYTES};
use super::files::{write_atomic, Visibility};
use super::jobs::JobsService;
use super::listeners::{self, ListenerKind};
use super::mosquitto;
use super::pki::CertificateAuthority;
use super::provisioning::{ProvisioningService, DEFAULT_TEMPLATE_NAME};
use super::registry::{CertificateRole, Registry};
use super::shadow::ShadowService;
use super::signing::UrlSigner;
use super::{topics, Outgoing};

/// Every server of the emulator binds to loopback only.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Client id of the emulator's own services on the broker.
pub const CLOUD_CLIENT_ID: &str = "devicehub-emulator-cloud";
/// How long `start` waits for the services to be subscribed on the broker.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The current time, injectable so that tests can move it (token expiry, job timeouts).
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_epoch_s(&self) -> u64;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_epoch_s(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new(epoch_s: u64) -> Self {
        Self(Arc::new(AtomicU64::new(epoch_s)))
    }

    pub fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_epoch_s(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The shutdown signal every long-lived task watches.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once shutdown has been requested (or its trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Fires the [`Shutdown`] signal.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownTrigger {
    pub fn new() -> (Self, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Self(tx), Shutdown(rx))
    }

    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// Where the broker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerMode {
    /// The embedded broker on loopback. Port 0 picks a free port.
    Embedded {
        mqtt_port: u16,
        alpn_port: u16,
        websocket_port: u16,
    },
    /// An external MQTT broker (Mosquitto) reached over mutual TLS at `host:port`.
    External { host: String, port: u16 },
}

/// How to run the cloud.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub data_dir: PathBuf,
    pub broker: BrokerMode,
    /// Port of the shipping application's HTTP API (0 picks one).
    pub http_port: u16,
    /// Port of the HTTPS server print files are downloaded from (0 picks one).
    pub files_port: u16,
    /// How long a print file's signed URL stays valid.
    pub print_url_ttl_s: u64,
    /// Overrides the shadow and jobs engines' per-thing request throttle (AWS answers 429 /
    /// RequestThrottled beyond it). `None` keeps the engines' AWS-like defaults; benchmarks
    /// raise it to measure the emulator rather than the throttle.
    pub requests_per_thing_per_second: Option<u32>,
    pub clock: Arc<dyn Clock>,
}

impl CloudConfig {
    /// The defaults: embedded broker on 8883 (mutual TLS), 8443 (ALPN) and 8444 (WebSocket),
    /// API on 8080, print files on 8081, real clock. Ports below 1024 (AWS's 443) would need
    /// privileges, so the 443 role gets 8443.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            broker: BrokerMode::Embedded {
                mqtt_port: 8883,
                alpn_port: 8443,
                websocket_port: 8444,
            },
            http_port: 8080,
            files_port: 8081,
            print_url_ttl_s: 3600,
            requests_per_thing_per_second: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Every port 0, for tests and side-by-side instances.
    pub fn with_free_ports(data_dir: PathBuf) -> Self {
        Self {
            broker: BrokerMode::Embedded {
                mqtt_port: 0,
                alpn_port: 0,
                websocket_port: 0,
            },
            http_port: 0,
            files_port: 0,
            ..Self::new(data_dir)
        }
    }
}

/// Where everything ended up; written to `<data-dir>/endpoints.json` for the CLI.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// Host name clients connect to (the server certificate names `localhost` and `127.0.0.1`).
    pub mqtt_host: String,
    /// MQTT over mutual TLS (AWS port 8883's role).
    pub mqtt_port: u16,
    /// MQTT over mutual TLS with ALPN `x-amzn-mqtt-ca` (AWS port 443's role); embedded only.
    pub alpn_port: Option<u16>,
    /// MQTT over WebSocket over TLS; embedded only.
    pub websocket_port: Option<u16>,
    pub websocket_url: Option<String>,
    /// Set when the services run against an external broker.
    pub external_broker: Option<String>,
    pub api_url: String,
    pub files_url: String,
    pub ca_certificate: PathBuf,
    pub data_dir: PathBuf,
    pub provisioning_template: String,
    /// The Mosquitto configuration generated for this data directory.
    pub mosquitto_config: PathBuf,
}

impl Endpoints {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("endpoints.json")
    }

    /// Reads the endpoints a running `serve` wrote.
    pub fn load(data_dir: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(Self::path(data_dir))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// What failed while starting the cloud.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] super::pki::PkiError),
    #[error(transparent)]
    Registry(#[from] super::registry::RegistryError),
    #[error(transparent)]
    Provisioning(#[from] super::provisioning::ProvisioningError),
    #[error("cannot open the shadow service: {0}")]
    Shadow(#[from] super::shadow::ShadowError),
    #[error("cannot open the jobs service: {0}")]
    Jobs(#[from] super::jobs::JobsError),
    #[error(transparent)]
    Listener(#[from] listeners::ListenerError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up the services' TLS client: {0}")]
    ClientTls(#[from] rustls::Error),
    #[error("cannot load the services' client certificate: {0}")]
    ClientIdentity(String),
    #[error("the cloud services could not subscribe on the broker at {broker} within {timeout:?}")]
    NotReady { broker: String, timeout: Duration },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A running cloud. Dropping it without [`RunningCloud::shutdown`] aborts its tasks.
#[derive(Debug)]
pub struct RunningCloud {
    endpoints: Endpoints,
    trigger: ShutdownTrigger,
    tasks: JoinSet<()>,
}

impl RunningCloud {
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Stops every task and waits for them, at most `deadline`.
    pub async fn shutdown(mut self, deadline: Duration) {
        self.trigger.trigger();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::warn!("some tasks did not stop within {deadline:?}; aborting them");
            self.tasks.abort_all();
        }
    }
}

/// The service engines, shared between the dispatcher and the HTTP API.
#[derive(Debug, Clone)]
pub struct Services {
    pub provisioning: Arc<Mutex<ProvisioningService>>,
    pub shadow: Arc<Mutex<ShadowService>>,
    pub jobs: Arc<Mutex<JobsService>>,
    /// Woken after every change the Jobs engine may have made, for API requests that wait for
    /// an execution to end.
    pub jobs_changed: Arc<tokio::sync::Notify>,
    pub activity: Arc<ThingActivity>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The engines keep their state consistent between calls; a panic in one request must not
    // stop every later one.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Services {
    /// Every topic filter the services listen on.
    fn subscriptions() -> Vec<String> {
        ProvisioningService::SUBSCRIPTIONS
            .iter()
            .chain(ShadowService::SUBSCRIPTIONS)
            .chain(JobsService::SUBSCRIPTIONS)
            .chain(activity::SUBSCRIPTIONS)
            .map(|s| s.to_string())
            .collect()
    }

    /// Hands one received message to every engine subscribed to its topic.
    fn handle(&self, topic: &str, payload: &[u8], now: u64) -> Vec<Outgoing> {
        let wants = |filters: &[&str]| filters.iter().any(|f| topics::matches(topic, f));
        let mut out = Vec::new();
        if wants(ProvisioningService::SUBSCRIPTIONS) {
            out.extend(lock(&self.provisioning).handle(topic, payload, now));
        }
        if wants(ShadowService::SUBSCRIPTIONS) {
            out.extend(lock(&self.shadow).handle(topic, payload, now));
        }
        if wants(JobsService::SUBSCRIPTIONS) {
            out.extend(lock(&self.jobs).handle(topic, payload, now));
            self.jobs_changed.notify_waiters();
        }
        if wants(activity::SUBSCRIPTIONS) {
            self.activity.record(topic, payload, now);
        }
        out
    }
}

/// Publishes what the engines produced. QoS 1 so that answers to persistent sessions are
/// queued while a device is briefly offline.
pub async fn publish_all(client: &AsyncClient, outgoing: Vec<Outgoing>) {
    for message in outgoing {
        if let Err(e) = client
            .publish(
                message.topic.clone(),
                QoS::AtLeastOnce,
                false,
                message.payload,
            )
            .await
        {
            tracing::warn!(topic = %message.topic, "cannot publish: {e}");
        }
    }
}

/// Starts the cloud and returns once the services are subscribed and every server listens.
pub async fn start(config: CloudConfig) -> Result<RunningCloud, CloudError> {
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| CloudError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let clock = config.clock.clone();
    let now = clock.now_epoch_s();
    let ca = Arc::new(CertificateAuthority::open(&data_dir)?);
    let registry = Arc::new(Mutex::new(Registry::open(&data_dir)?));
    lock(&registry).set_certificate_role(
        &ca.cloud_client().certificate.certificate_id,
        CertificateRole::Service,
        now,
    )?;
    let services = Services {
        provisioning: Arc::new(Mutex::new(ProvisioningService::open(
            &data_dir,
            ca.clone(),
            registry.clone(),
        )?)),
        shadow: Arc::new(Mutex::new(ShadowService::open(&data_dir.join("shadows"))?)),
        jobs: Arc::new(Mutex::new(JobsService::open(&data_dir.join("jobs"))?)),
        jobs_changed: Arc::new(tokio::sync::Notify::new()),
        activity: Arc::new(ThingActivity::default()),
    };
    if let Some(limit) = config.requests_per_thing_per_second {
        lock(&services.shadow).set_requests_per_thing_per_second(limit);
        lock(&services.jobs).set_requests_per_thing_per_second(limit);
    }

    let (trigger, shutdown) = ShutdownTrigger::new();
    let mut tasks = JoinSet::new();

    let (mqtt_host, mqtt_port, alpn_port, websocket_port, external) = match &config.broker {
        BrokerMode::Embedded {
            mqtt_port,
            alpn_port,
            websocket_port,
        } => {
            let broker = Broker::new(registry.clone(), clock.clone());
            let mut ports = Vec::new();
            for (kind, port, alpn) in [
                (ListenerKind::MutualTls, *mqtt_port, &[][..]),
                (
                    ListenerKind::Alpn,
                    *alpn_port,
                    &[listeners::AWS_MQTT_ALPN][..],
                ),
                (
                    ListenerKind::WebSocket,
                    *websocket_port,
                    &[b"http/1.1".as_slice()][..],
                ),
            ] {
                let tls = listeners::server_config(&ca, true, alpn)?;
                let listener = listeners::bind(SocketAddr::new(LOOPBACK, port)).await?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| CloudError::Bind {
                        address: SocketAddr::new(LOOPBACK, port),
                        source,
                    })?
                    .port();
                ports.push(bound);
                tasks.spawn(listeners::accept_loop(
                    listener,
                    kind,
                    tls,
                    broker.clone(),
                    shutdown.clone(),
                ));
            }
            (
                "localhost".to_string(),
                ports[0],
                Some(ports[1]),
                Some(ports[2]),
                None,
            )
        }
        BrokerMode::External { host, port } => (
            host.clone(),
            *port,
            None,
            None,
            Some(format!("mqtts://{host}:{port}")),
        ),
    };

    let mosquitto_config =
        mosquitto::write_config(&data_dir, &ca, mqtt_port_for_mosquitto(&config.broker)).map_err(
            |source| CloudError::Write {
                path: data_dir.join(mosquitto::CONFIG_FILE),
                source,
            },
        )?;

    // The services' MQTT client.
    let mut options = MqttOptions::new(CLOUD_CLIENT_ID, mqtt_host.clone(), mqtt_port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    options.set_max_packet_size(MAX_PAYLOAD_BYTES + 4096, MAX_PAYLOAD_BYTES + 4096);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        client_tls(&ca)?,
    )));
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    // Requests and answers are small messages: without TCP_NODELAY, Nagle's algorithm and
    // delayed ACKs add tens of milliseconds to every round trip.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) = watch::channel(false);
    tasks.spawn(poll_event_loop(eventloop, inbound_tx, shutdown.clone()));
    tasks.spawn(dispatch(
        client.clone(),
        services.clone(),
        clock.clone(),
        inbound_rx,
        ready_tx,
        shutdown.clone(),
    ));
    let broker_description = format!("{mqtt_host}:{mqtt_port}");
    if tokio::time::timeout(READY_TIMEOUT, ready_rx.wait_for(|ready| *ready))
        .await
        .map(|r| r.is_err())
        .unwrap_or(true)
    {
        trigger.trigger();
        tasks.abort_all();
        return Err(CloudError::NotReady {
            broker: broker_description,
            timeout: READY_TIMEOUT,
        });
    }

    // The print-file server (HTTPS) and the API (HTTP, loopback).
    let files_listener = listeners::bind(SocketAddr::new(LOOPBACK, config.files_port)).await?;
    let files_port = files_listener
        .local_addr()
        .map_err(|source| CloudError::Bind {
            address: SocketAddr::new(LOOPBACK, config.files_port),
            source,
        })?
        .port();
    let http_listener = listeners::bind(SocketAddr::new(LOOPBACK, config.http_port)).await?;
    let http_port = http_listener
        .local_addr()
        .map_err(|source| CloudError::Bind {
            address: SocketAddr::new(LOOPBACK, config.http_port),
            source,
        })?
        .port();
    let files_url = format!("https://localhost:{files_port}");
    let state = Arc::new(ApiState {
        registry: registry.clone(),
        ca: ca.clone(),
        services: services.clone(),
        mqtt: client.clone(),
        clock: clock.clone(),
        url_signer: UrlSigner::open(&data_dir).map_err(|source| CloudError::Write {
            path: data_dir.join("pki").join("url-signing.key"),
            source,
        })?,
        files_dir: data_dir.join("files"),
        files_url: files_url.clone(),
        print_url_ttl_s: config.print_url_ttl_s,
        bundles: super::bundles::BundleShelf::new(data_dir.join("bundles")),
    });
    let files_tls = listeners::server_config(&ca, false, &[b"http/1.1"])?;
    tasks.spawn(api::serve_files(
        files_listener,
        files_tls,
        state.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(api::serve_api(http_listener, state, shutdown.clone()));

    let endpoints = Endpoints {
        mqtt_host: mqtt_host.clone(),
        mqtt_port,
        alpn_port,
        websocket_port,
        websocket_url: websocket_port.map(|p| format!("wss://{mqtt_host}:{p}/mqtt")),
        external_broker: external,
        api_url: format!("http://127.0.0.1:{http_port}"),
        files_url,
        ca_certificate: ca.ca_certificate_path(),
        data_dir: data_dir.clone(),
        provisioning_template: DEFAULT_TEMPLATE_NAME.to_string(),
        mosquitto_config,
    };
    let endpoints_path = Endpoints::path(&data_dir);
    let text = serde_json::to_vec_pretty(&endpoints).expect("endpoints are plain data");
    write_atomic(&endpoints_path, &text, Visibility::Public).map_err(|source| {
        CloudError::Write {
            path: endpoints_path,
            source,
        }
    })?;
    Ok(RunningCloud {
        endpoints,
        trigger,
        tasks,
    })
}

fn mqtt_port_for_mosquitto(mode: &BrokerMode) -> u16 {
    match mode {
        BrokerMode::External { port, .. } => *port,
        BrokerMode::Embedded { .. } => mosquitto::DEFAULT_PORT,
    }
}

/// The TLS client configuration of the services: trusts the emulator's CA and presents the
/// cloud services' certificate.
fn client_tls(ca: &CertificateAuthority) -> Result<Arc<rustls::ClientConfig>, CloudError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_certificate_der()?)?;
    let identity = ca.cloud_client();
    let chain =
        vec![
            CertificateDer::from_pem_slice(identity.certificate.certificate_pem.as_bytes())
                .map_err(|e| CloudError::ClientIdentity(e.to_string()))?,
        ];
    let key = PrivateKeyDer::from_pem_slice(identity.private_key_pem.as_bytes())
        .map_err(|e| CloudError::ClientIdentity(e.to_string()))?;
    let config = rustls::ClientConfig::builder_with_provider(listeners::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// What the event-loop task hands to the dispatcher.
#[derive(Debug)]
enum Inbound {
    Connected,
    Subscribed,
    Publish {
        topic: String,
        payload: bytes::Bytes,
    },
}

/// Owns the rumqttc event loop and only polls it, so that the MQTT connection never waits for
/// the engines.
async fn poll_event_loop(
    mut eventloop: EventLoop,
    inbound: mpsc::UnboundedSender<Inbound>,
    mut shutdown: Shutdown,
) {
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = shutdown.wait() => break,
        };
        let message = match event {
            Ok(Event::Incoming(Packet::Publish(p))) => Inbound::Publish {
                topic: p.topic,
                payload: p.payload,
            },
            Ok(Event::Incoming(Packet::ConnAck(_))) => Inbound::Connected,
            Ok(Event::Incoming(Packet::SubAck(_))) => Inbound::Subscribed,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("cloud services lost the broker: {e}; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.wait() => break,
                }
            }
        };
        if inbound.send(message).is_err() {
            break;
        }
    }
}

/// Runs the engines: requests from the broker, and a one-second tick for job step timeouts.
async fn dispatch(
    client: AsyncClient,
    services: Services,
    clock: Arc<dyn Clock>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    ready: watch::Sender<bool>,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let filters = Services::subscriptions();
    loop {
        tokio::select! {
            message = inbound.recv() => match message {
                Some(Inbound::Connected) => {
                    let subscriptions = filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = client.subscribe_many(subscriptions).await {
                        tracing::error!("cloud services cannot subscribe: {e}");
                    }
                }
                Some(Inbound::Subscribed) => {
                    let _ = ready.send(true);
                }
                Some(Inbound::Publish { topic, payload }) => {
                    let now = clock.now_epoch_s();
                    let outgoing = services.handle(&topic, &payload, now);
                    publish_all(&client, outgoing).await;
                }
                None => break,
            },
            _ = tick.tick() => {
                let now = clock.now_epoch_s();
                let outgoing = lock(&services.jobs).tick(now);
                services.jobs_changed.notify_waiters();
                publish_all(&client, outgoing).await;
            }
            _ = shutdown.wait() => break,
        }
    }
    let _ = client.try_disconnect();
}
