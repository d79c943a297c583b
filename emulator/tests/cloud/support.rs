//! Shared fixtures: a running emulator on a temporary data directory, MQTT clients that wait
//! for what they expect, and signed HTTP requests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use devicehub_emulator::cloud::pki::CertificateAuthority;
use devicehub_emulator::cloud::{mosquitto, signing};
use devicehub_emulator::cloud::{
    start, BrokerMode, CloudConfig, Endpoints, ManualClock, RunningCloud,
};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS, SubscribeReasonCode,
    TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a test waits for an answer before declaring it missing.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Start time of the manual clock (2026-01-01T00:00:00Z).
pub const CLOCK_START: u64 = 1_767_225_600;

/// Which broker the emulator's devices and services meet on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// The emulator's own broker, with its three listeners.
    Embedded,
    /// A stock Mosquitto started from the configuration the emulator writes; the services
    /// connect to it as ordinary clients.
    Mosquitto,
}

/// Generates one test per broker from `async fn NAME(broker: Broker)`: a module `NAME` holding
/// the tests `embedded` and `mosquitto`, so that a failure names the broker it happened on.
macro_rules! on_both_brokers {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test]
                async fn embedded() {
                    super::$scenario($crate::support::Broker::Embedded).await;
                }

                #[tokio::test]
                async fn mosquitto() {
                    super::$scenario($crate::support::Broker::Mosquitto).await;
                }
            }
        )+
    };
}
pub(crate) use on_both_brokers;

/// A Mosquitto process that is killed when the test ends.
pub struct MosquittoProcess {
    child: Child,
    /// The port Mosquitto listens on (mutual TLS).
    pub port: u16,
}

impl Drop for MosquittoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MosquittoProcess {
    /// Writes the emulator's Mosquitto configuration into `dir` (creating the CA there if
    /// needed), starts Mosquitto from it and waits until it listens.
    pub async fn start(dir: &Path) -> Self {
        // The port is chosen before Mosquitto binds it, so another test may take it in between:
        // a Mosquitto that exits at start is retried on a fresh port a few times.
        const ATTEMPTS: usize = 3;
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match Self::try_start(dir).await {
                Ok(broker) => return broker,
                Err(why) => failures.push(why),
            }
        }
        panic!("mosquitto did not start: {failures:#?}");
    }

    async fn try_start(dir: &Path) -> Result<Self, String> {
        let port = free_port();
        let ca = CertificateAuthority::open(dir).expect("CA");
        let config = mosquitto::write_config(dir, &ca, port).expect("mosquitto.conf");
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto starts");
        let mut broker = Self { child, port };
        // Wait until Mosquitto listens (or report why it exited).
        let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = broker.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut stderr);
                }
                return Err(format!(
                    "mosquitto exited ({status}) on port {port}: {stderr}"
                ));
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("mosquitto did not listen on {port}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(broker)
    }
}

fn free_port() -> u16 {
    // Mosquitto cannot report a port it picked itself, so one is reserved and released here.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn mosquitto_binary() -> String {
    let candidates = [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ];
    candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
        .unwrap_or_else(|| {
            panic!("mosquitto is not installed: install it (Debian/Ubuntu: `apt-get install mosquitto`) to run the external-broker tests")
        })
}

/// A running emulator on its own data directory.
pub struct Emulator {
    pub dir: tempfile::TempDir,
    pub clock: ManualClock,
    pub cloud: Option<RunningCloud>,
    pub endpoints: Endpoints,
    /// The external broker when the emulator runs against Mosquitto; declared after `cloud` so
    /// that the services are dropped before their broker goes away.
    pub mosquitto: Option<MosquittoProcess>,
}

impl Emulator {
    /// Starts an emulator on its embedded broker with every port 0 and a manual clock.
    pub async fn start() -> Self {
        Self::start_on(Broker::Embedded).await
    }

    /// Starts an emulator with a manual clock on `broker` (for Mosquitto, a process of its own).
    pub async fn start_on(broker: Broker) -> Self {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let clock = ManualClock::new(CLOCK_START);
        let mosquitto = match broker {
            Broker::Embedded => None,
            Broker::Mosquitto => Some(MosquittoProcess::start(dir.path()).await),
        };
        let cloud = Self::launch(dir.path(), &clock, mosquitto.as_ref().map(|m| m.port)).await;
        let endpoints = cloud.endpoints().clone();
        Self {
            dir,
            clock,
            cloud: Some(cloud),
            endpoints,
            mosquitto,
        }
    }

    async fn launch(dir: &Path, clock: &ManualClock, external_port: Option<u16>) -> RunningCloud {
        let mut config = CloudConfig::with_free_ports(dir.to_path_buf());
        config.clock = Arc::new(clock.clone());
        if let Some(port) = external_port {
            config.broker = BrokerMode::External {
                host: "localhost".into(),
                port,
            };
        }
        start(config).await.expect("the emulator starts")
    }

    /// Stops the emulator and starts it again on the same data directory (new ports; the same
    /// Mosquitto, when there is one).
    pub async fn restart(&mut self) {
        if let Some(cloud) = self.cloud.take() {
            cloud.shutdown(Duration::from_secs(10)).await;
        }
        let external_port = self.mosquitto.as_ref().map(|m| m.port);
        let cloud = Self::launch(self.dir.path(), &self.clock, external_port).await;
        self.endpoints = cloud.endpoints().clone();
        self.cloud = Some(cloud);
    }

    /// How devices reach the broker this emulator runs on (mutual TLS either way).
    pub fn via(&self) -> Via {
        match &self.mosquitto {
            Some(broker) => Via::External(broker.port),
            None => Via::MutualTls,
        }
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.endpoints.ca_certificate).expect("CA certificate readable")
    }

    pub fn http(&self) -> reqwest::Client {
        let tls = devicehub_emulator::cloud::listeners::client_config_trusting(&self.ca_pem())
            .expect("TLS client configuration");
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(ANSWER_TIMEOUT)
            .build()
            .expect("HTTP client")
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.endpoints.api_url)
    }

    /// Registers a thing through the API and returns its credentials.
    pub async fn create_thing(&self, name: &str) -> Credentials {
        let answer: Value = self
            .http()
            .post(self.api("/things"))
            .json(&json!({"thingName": name}))
            .send()
            .await
            .expect("POST /things")
            .error_for_status()
            .expect("thing created")
            .json()
            .await
            .expect("JSON answer");
        Credentials::from_answer(&answer)
    }

    /// Issues a claim certificate through the API.
    pub async fn create_claim(&self) -> Credentials {
        let answer: Value = self
            .http()
            .post(self.api("/claim-certificates"))
            .send()
            .await
            .expect("POST /claim-certificates")
            .error_for_status()
            .expect("claim created")
            .json()
            .await
            .expect("JSON answer");
        Credentials::from_answer(&answer)
    }

    pub async fn activation_code(&self, ttl_seconds: u64) -> String {
        let answer: Value = self
            .http()
            .post(self.api("/activation-codes"))
            .json(&json!({"ttlSeconds": ttl_seconds}))
            .send()
            .await
            .expect("POST /activation-codes")
            .error_for_status()
            .expect("code created")
            .json()
            .await
            .expect("JSON answer");
        answer["code"].as_str().expect("code").to_string()
    }

    /// Sends a request signed with `secret` the way the shipping application does.
    pub async fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: Vec<u8>,
        secret: &str,
    ) -> reqwest::Response {
        use devicehub_emulator::cloud::Clock;
        let timestamp = self.clock.now_epoch_s();
        let signature = signing::sign_request(secret, method.as_str(), path, timestamp, &body);
        self.http()
            .request(method, format!("{}{path}{query}", self.endpoints.api_url))
            .header("content-type", content_type)
            .header(signing::TIMESTAMP_HEADER, timestamp.to_string())
            .header(signing::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .expect("signed request sent")
    }

    /// Connects over mutual TLS (the 8883 role) to the broker the emulator runs on.
    pub async fn connect(&self, client_id: &str, credentials: &Credentials) -> Mqtt {
        Mqtt::connect(self, client_id, credentials, self.via(), true)
            .await
            .expect("the connection is accepted")
    }
}

/// A client certificate and key, and the thing's device signature when there is one.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub device_signature: Option<String>,
}

impl Credentials {
    pub fn from_answer(answer: &Value) -> Self {
        Self {
            certificate_pem: answer["certificatePem"]
                .as_str()
                .expect("certificatePem")
                .to_string(),
            private_key_pem: answer["privateKey"]
                .as_str()
                .expect("privateKey")
                .to_string(),
            device_signature: answer["deviceSignature"].as_str().map(str::to_string),
        }
    }
}

/// Which listener to connect through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    MutualTls,
    /// The ALPN port; `offer_alpn` false tests that the port insists on it.
    Alpn {
        offer_alpn: bool,
    },
    WebSocket,
    /// An external broker on this port (Mosquitto).
    External(u16),
}

pub fn client_tls(
    ca_pem: &[u8],
    credentials: &Credentials,
    alpn: Option<&[u8]>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(der.expect("CA PEM")).expect("CA certificate");
    }
    let chain = vec![
        CertificateDer::from_pem_slice(credentials.certificate_pem.as_bytes())
            .expect("certificate PEM"),
    ];
    let key =
        PrivateKeyDer::from_pem_slice(credentials.private_key_pem.as_bytes()).expect("key PEM");
    let mut config = rustls::ClientConfig::builder_with_provider(
        devicehub_emulator::cloud::listeners::crypto_provider(),
    )
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client certificate");
    if let Some(alpn) = alpn {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    Arc::new(config)
}

/// An MQTT client whose event loop runs in a task of its own; what it receives is queued.
pub struct Mqtt {
    pub client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: JoinHandle<()>,
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mqtt {
    /// Connects and waits for the CONNACK; `Err` carries why the connection failed or was refused.
    pub async fn connect(
        emulator: &Emulator,
        client_id: &str,
        credentials: &Credentials,
        via: Via,
        clean_session: bool,
    ) -> Result<Self, String> {
        let ca = emulator.ca_pem();
        let (host, port, transport) = match via {
            Via::MutualTls => (
                "localhost".to_string(),
                emulator.endpoints.mqtt_port,
                Transport::tls_with_config(TlsConfiguration::Rustls(client_tls(
                    &ca,
                    credentials,
                    None,
                ))),
            ),
            Via::Alpn { offer_alpn } => (
                "localhost".to_string(),
                emulator.endpoints.alpn_port.expect("ALPN port"),
                Transport::tls_with_config(TlsConfiguration::Rustls(client_tls(
                    &ca,
                    credentials,
                    offer_alpn.then_some(b"x-amzn-mqtt-ca".as_slice()),
                ))),
            ),
            Via::WebSocket => {
                let port = emulator.endpoints.websocket_port.expect("WebSocket port");
                (
                    format!("wss://localhost:{port}/mqtt"),
                    port,
                    Transport::wss_with_config(TlsConfiguration::Rustls(client_tls(
                        &ca,
                        credentials,
                        None,
                    ))),
                )
            }
            Via::External(port) => (
                "localhost".to_string(),
                port,
                Transport::tls_with_config(TlsConfiguration::Rustls(client_tls(
                    &ca,
                    credentials,
                    None,
                ))),
            ),
        };
        let mut options = MqttOptions::new(client_id, host, port);
        options.set_transport(transport);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(clean_session);
        options.set_max_packet_size(140 * 1024, 140 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        // The first poll drives the TLS handshake and CONNECT: its outcome is the answer.
        let first = tokio::time::timeout(ANSWER_TIMEOUT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack),
                    Ok(_) => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| "no CONNACK in time".to_string())??;
        if first.code != ConnectReturnCode::Success {
            return Err(format!("refused: {:?}", first.code));
        }
        let (tx, events) = mpsc::unbounded_channel();
        let _ = tx.send(Ok(Packet::ConnAck(first)));
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if tx.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        // The test decides whether a closed connection is expected; the client
                        // does not reconnect on its own.
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        Ok(Self {
            client,
            events,
            task,
        })
    }

    /// The next packet from the broker, or the error that ended the connection.
    pub async fn next_event(&mut self) -> Result<Packet, String> {
        tokio::time::timeout(ANSWER_TIMEOUT, self.events.recv())
            .await
            .map_err(|_| "nothing received in time".to_string())?
            .unwrap_or_else(|| Err("event loop ended".to_string()))
    }

    /// Subscribes to each filter and returns the SUBACK's return codes.
    pub async fn subscribe(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
        self.client
            .subscribe_many(
                filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce)),
            )
            .await
            .expect("subscribe queued");
        loop {
            match self.next_event().await {
                Ok(Packet::SubAck(ack)) => return ack.return_codes,
                Ok(_) => {}
                Err(e) => panic!("no SUBACK: {e}"),
            }
        }
    }

    /// Subscribes and asserts every filter was granted.
    pub async fn subscribe_ok(&mut self, filters: &[&str]) {
        let codes = self.subscribe(filters).await;
        assert!(
            codes
                .iter()
                .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
            "subscriptions {filters:?} refused: {codes:?}"
        );
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish queued");
    }

    /// Waits for a message on exactly `topic` and returns its payload (skipping others).
    pub async fn expect_message(&mut self, topic: &str) -> Vec<u8> {
        loop {
            match self.next_event().await {
                Ok(Packet::Publish(p)) if p.topic == topic => return p.payload.to_vec(),
                Ok(_) => {}
                Err(e) => panic!("no message on {topic}: {e}"),
            }
        }
    }

    /// Waits for a JSON message on exactly `topic`.
    pub async fn expect_json(&mut self, topic: &str) -> Value {
        let payload = self.expect_message(topic).await;
        serde_json::from_slice(&payload).expect("JSON payload")
    }

    /// Collects every JSON message up to and including the first one on exactly `topic`, in the
    /// order they arrived, so that a test can assert what came before it (and what did not).
    pub async fn json_until(&mut self, topic: &str) -> Vec<(String, Value)> {
        let mut received = Vec::new();
        loop {
            match self.next_event().await {
                Ok(Packet::Publish(p)) => {
                    let done = p.topic == topic;
                    if let Ok(value) = serde_json::from_slice(&p.payload) {
                        received.push((p.topic, value));
                    }
                    if done {
                        return received;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("no message on {topic}: {e}; received {received:?}"),
            }
        }
    }

    /// Waits for a JSON message on any of `topics` (skipping others) and returns its topic and
    /// payload.
    pub async fn json_until_any(&mut self, topics: &[&str]) -> (String, Value) {
        loop {
            match self.next_event().await {
                Ok(Packet::Publish(p)) if topics.contains(&p.topic.as_str()) => {
                    let value = serde_json::from_slice(&p.payload).expect("JSON payload");
                    return (p.topic, value);
                }
                Ok(_) => {}
                Err(e) => panic!("no message on {topics:?}: {e}"),
            }
        }
    }

    /// Waits for the broker to end the connection.
    pub async fn expect_closed(&mut self) {
        loop {
            match self.next_event().await {
                Err(e) if e.contains("nothing received in time") => {
                    panic!("the connection was not closed")
                }
                Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// Creates a CSR for a fresh key; returns (CSR PEM, key PEM).
pub fn new_csr() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .expect("CSR")
        .pem()
        .expect("CSR PEM");
    (csr, key.serialize_pem())
}

/// Topic of a fleet provisioning request for the default template.
pub fn provision_topic() -> String {
    "$aws/provisioning-templates/DeviceHubFleet/provision/json".to_string()
}

/// Retries `probe` until it returns `Some`, for state that another connection updates (the
/// emulator's services receive on their own MQTT connection). Panics after [`ANSWER_TIMEOUT`].
pub async fn eventually<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expected state never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
