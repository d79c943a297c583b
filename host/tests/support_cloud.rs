//! Fixtures for the cloud link tests: the real `devicehub-emulator serve` as a child process
//! on a temporary data directory, things registered through its CLI, and waits on the link's
//! state with a bound.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use devicehub::cloud::link::{
    Backoff, InboundMessage, LinkConfig, LinkState, LinkTransport, MqttLink, StartedLink,
};
use devicehub::storage::DeviceIdentity;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::support::{emulator_bin, http_client};

/// How long a test waits for a state or a message before declaring it missing. Generous, so
/// that a loaded machine does not fail the suite; a passing test never waits this long.
pub const WAIT: Duration = Duration::from_secs(20);

/// The ports of a running emulator, so that a restart can reuse them.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub mqtt: u16,
    pub alpn: u16,
    pub websocket: u16,
    pub http: u16,
    pub files: u16,
}

/// A running emulator process.
pub struct Cloud {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub ports: Ports,
    pub api_url: String,
}

impl Cloud {
    /// Starts `devicehub-emulator serve` on free ports.
    pub fn start() -> Cloud {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let (child, endpoints) = spawn(dir.path(), None);
        let port = |name: &str| -> u16 {
            endpoints[name]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_else(|| panic!("no {name} in {endpoints}"))
        };
        let ports = Ports {
            mqtt: port("mqttPort"),
            alpn: port("alpnPort"),
            websocket: port("websocketPort"),
            http: url_port(&endpoints["apiUrl"]),
            files: url_port(&endpoints["filesUrl"]),
        };
        let api_url = endpoints["apiUrl"].as_str().expect("apiUrl").to_string();
        Cloud {
            child: Some(child),
            dir,
            ports,
            api_url,
        }
    }

    /// Kills the emulator abruptly, as a crash or power cut would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the emulator again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.kill();
        let (child, _) = spawn(self.dir.path(), Some(self.ports));
        self.child = Some(child);
    }

    /// Registers `name` with `thing create` and returns its identity, trusting the
    /// emulator's CA.
    pub fn thing(&self, name: &str) -> DeviceIdentity {
        let out = self.dir.path().join(format!("thing-{name}"));
        self.cli(&["thing", "create", name, out.to_str().expect("UTF-8 path")]);
        let read = |file: &str| {
            std::fs::read_to_string(out.join(file))
                .unwrap_or_else(|e| panic!("{file} of {name}: {e}"))
        };
        DeviceIdentity {
            thing_name: name.to_string(),
            certificate_pem: read("certificate.pem.crt"),
            private_key_pem: read("private.pem.key"),
            ca_bundle_pem: Some(read("ca.pem")),
        }
    }

    /// Asks `thing` for a scale reading: a job, whose notification the broker publishes on
    /// `$aws/things/<thing>/jobs/notify` with QoS 1.
    pub fn scale_job(&self, thing: &str) {
        self.cli(&["job", "scale", thing]);
    }

    /// What `thing` published on `devicehub/<thing>/...`, as the emulator recorded it.
    pub async fn messages(&self, thing: &str) -> Vec<Value> {
        http_client()
            .get(format!("{}/things/{thing}/messages", self.api_url))
            .send()
            .await
            .expect("GET messages")
            .error_for_status()
            .expect("messages answered")
            .json()
            .await
            .expect("messages JSON")
    }

    fn cli(&self, args: &[&str]) {
        let output = Command::new(emulator_bin())
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run devicehub-emulator");
        assert!(
            output.status.success(),
            "devicehub-emulator {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A link configuration for `identity` over `transport`, with backoff short enough for
    /// tests (50..400 ms) and AWS's smallest keepalive.
    pub fn link_config(&self, identity: DeviceIdentity, transport: LinkTransport) -> LinkConfig {
        let mut config = LinkConfig::new("localhost".into(), transport, identity);
        config.keep_alive = Duration::from_secs(30);
        config.backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
        };
        config.connect_timeout = Duration::from_secs(5);
        config
    }

    pub fn mutual_tls(&self) -> LinkTransport {
        LinkTransport::MutualTls {
            port: self.ports.mqtt,
        }
    }

    pub fn alpn(&self) -> LinkTransport {
        LinkTransport::Alpn {
            port: self.ports.alpn,
        }
    }

    pub fn websocket(&self) -> LinkTransport {
        LinkTransport::WebSocket {
            port: self.ports.websocket,
            path: "/mqtt".into(),
        }
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.kill();
    }
}

fn url_port(url: &Value) -> u16 {
    let url = url.as_str().expect("URL string");
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// Starts `serve --json` and reads the endpoints it prints (pretty JSON over several lines).
fn spawn(data_dir: &Path, ports: Option<Ports>) -> (Child, Value) {
    let ports = ports.map_or([0; 5], |p| [p.mqtt, p.alpn, p.websocket, p.http, p.files]);
    let mut child = Command::new(emulator_bin())
        .args(["serve", "--json", "--data-dir"])
        .arg(data_dir)
        .args(["--mqtt-port", &ports[0].to_string()])
        .args(["--alpn-port", &ports[1].to_string()])
        .args(["--websocket-port", &ports[2].to_string()])
        .args(["--http-port", &ports[3].to_string()])
        .args(["--files-port", &ports[4].to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start devicehub-emulator serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut text = String::new();
    let endpoints = loop {
        let mut line = String::new();
        match stdout.read_line(&mut line) {
            Ok(0) | Err(_) => break None,
            Ok(_) => {}
        }
        text.push_str(&line);
        if let Ok(endpoints) = serde_json::from_str::<Value>(&text) {
            break Some(endpoints);
        }
    };
    match endpoints {
        Some(endpoints) => (child, endpoints),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the emulator stopped before announcing its endpoints: {text}");
        }
    }
}

/// Starts a link that stops when the returned token is cancelled.
pub fn start_link(config: LinkConfig) -> (StartedLink, CancellationToken) {
    let shutdown = CancellationToken::new();
    let started = MqttLink::start(config, shutdown.clone()).expect("the link starts");
    (started, shutdown)
}

/// Waits until the state satisfies `wanted` and returns it.
pub async fn wait_for_state(
    state: &mut watch::Receiver<LinkState>,
    what: &str,
    wanted: impl FnMut(&LinkState) -> bool,
) -> LinkState {
    let found = match tokio::time::timeout(WAIT, state.wait_for(wanted)).await {
        Ok(Ok(found)) => Some(found.clone()),
        Ok(Err(_)) => panic!("the link task ended while waiting for {what}"),
        Err(_) => None,
    };
    found.unwrap_or_else(|| {
        panic!(
            "no {what} within {WAIT:?}; the link is {:?}",
            *state.borrow()
        )
    })
}

/// Waits until the link is connected and returns whether the session was present.
pub async fn wait_connected(state: &mut watch::Receiver<LinkState>) -> bool {
    match wait_for_state(state, "connection", |s| {
        matches!(s, LinkState::Connected { .. })
    })
    .await
    {
        LinkState::Connected { session_present } => session_present,
        other => unreachable!("wait_for returned {other:?}"),
    }
}

/// The next message on `topic`, skipping others.
pub async fn next_on(incoming: &mut mpsc::Receiver<InboundMessage>, topic: &str) -> InboundMessage {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(message) = incoming.recv().await {
            if message.topic == topic {
                return Some(message);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(message)) => message,
        Ok(None) => panic!("the link closed its message channel before a message on {topic}"),
        Err(_) => panic!("no message on {topic} within {WAIT:?}"),
    }
}
