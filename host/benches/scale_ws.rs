//! Scale readings to WebSocket clients: how long a changed reading takes to reach a subscribed
//! client.
//!
//! Prints two figures:
//! - report to client: from the moment the readings service has a changed reading (it publishes
//!   it on the agent's live event bus) to a subscribed WebSocket client holding the parsed JSON
//!   event, p50 / p99 / max over `DEVICEHUB_BENCH_READINGS` (default 5000) readings, with four
//!   other subscribed clients reading along and one subscribed client that never reads;
//! - simulator to client: `devicehub run` with an MT-SICS scale simulator on a pseudo-terminal,
//!   from the control API's answer to a weight change to the client holding the new reading,
//!   over `DEVICEHUB_BENCH_CHANGES` (default 40) changes. This includes the read interval
//!   (200 ms) and the serial exchange, so it shows what a user sees, not the server.
//!
//! Run with:
//! ```sh
//! cargo build --release -p devicehub-emulator
//! cargo bench -p devicehub --bench scale_ws
//! ```

#[path = "../tests/support.rs"]
#[allow(dead_code)]
mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devicehub::agent::{Agent, LocalEvent, ReadingView};
use devicehub::cloud::events::SharedHealth;
use devicehub::config::{Config, LocalConfig};
use devicehub::devices::DeviceTable;
use devicehub::plugins::SharedPlugins;
use devicehub::storage::DataDir;
use devicehub::ws::WsServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The longest one reading may take before the benchmark gives up.
const WAIT: Duration = Duration::from_secs(30);

type Client = WebSocketStream<TcpStream>;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn connect(addr: &str) -> Client {
    let stream = TcpStream::connect(addr).await.expect("TCP connect");
    stream.set_nodelay(true).expect("nodelay");
    tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
        .await
        .expect("handshake")
        .0
}

/// Subscribes to scale readings and waits for the answer.
async fn subscribe(client: &mut Client) {
    client
        .send(Message::text(
            json!({"id": 1, "type": "subscribe", "topics": ["scale"], "unit": "g"}).to_string(),
        ))
        .await
        .expect("send");
    loop {
        let answer = next_json(client).await;
        if answer["id"] == 1 {
            assert!(answer.get("ok").is_some(), "{answer}");
            return;
        }
    }
}

async fn next_json(client: &mut Client) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("a message in time")
            .expect("connection open")
            .expect("valid message");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("JSON");
        }
    }
}

/// Waits for the reading with `micrograms`.
async fn reading_of(client: &mut Client, micrograms: i64) {
    loop {
        let event = next_json(client).await;
        if event["type"] == "scale" && event["micrograms"] == micrograms {
            return;
        }
    }
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what}: {} samples, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().expect("samples")),
    );
}

async fn report_to_client() {
    let readings = env_count("DEVICEHUB_BENCH_READINGS", 5000);
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = Arc::new(Agent::new(
        Config::default(),
        DataDir::new(dir.path().to_path_buf()),
        Arc::new(SharedPlugins::default()),
        Arc::new(DeviceTable::default()),
        SharedHealth::default(),
        None,
    ));
    let server = WsServer::start(
        agent.clone(),
        &LocalConfig {
            ws_port: 0,
            ..LocalConfig::default()
        },
    )
    .await
    .expect("server");
    let addr = server.local_addr().to_string();
    let mut measured = connect(&addr).await;
    subscribe(&mut measured).await;
    let mut others = Vec::new();
    for _ in 0..4 {
        let mut client = connect(&addr).await;
        subscribe(&mut client).await;
        others.push(tokio::spawn(async move {
            // Reads along until the server closes the connection.
            while let Some(Ok(_)) = client.next().await {}
        }));
    }
    let mut idle = connect(&addr).await;
    idle.send(Message::text(
        json!({"id": 1, "type": "subscribe", "topics": ["scale"]}).to_string(),
    ))
    .await
    .expect("send");

    let mut samples = Vec::with_capacity(readings);
    for i in 0..readings {
        let micrograms = 1_000_000 + i as i64;
        let started = Instant::now();
        agent.publish_local(LocalEvent::Scale {
            device: "bench-scale".into(),
            reading: ReadingView {
                state: "stable",
                micrograms,
                resolution_micrograms: 1,
                display_unit: "g",
                at_ms: 0,
            },
        });
        reading_of(&mut measured, micrograms).await;
        samples.push(started.elapsed());
    }
    report(
        "report to client (5 reading clients, 1 that never reads)",
        samples,
    );
    server.stop().await;
    for other in others {
        let _ = other.await;
    }
    drop(idle);
}

/// `devicehub-emulator scale serial` and `devicehub run` with it, as separate processes.
struct Rig {
    _dir: tempfile::TempDir,
    _plugins: tempfile::TempDir,
    scale: Child,
    agent: Child,
    control: String,
    log: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        let _ = self.scale.kill();
        let _ = self.scale.wait();
    }
}

fn start_rig() -> (Rig, String) {
    let mut scale = Command::new(support::emulator_bin())
        .args([
            "scale",
            "serial",
            "--protocol",
            "mt-sics",
            "--control",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the scale simulator");
    let mut line = String::new();
    BufReader::new(scale.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("announcement");
    let announced: Value = serde_json::from_str(&line).expect("announcement JSON");
    let pty = announced["pty"].as_str().expect("pty").to_string();
    let control = announced["control"].as_str().expect("control").to_string();
    let plugins = support::plugins_folder(&["devicehub_driver_serial_scale"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("devicehub.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nplugins_dir = {:?}\nlog_level = \"info\"\n[usb]\nenabled = false\n\
             [cloud]\nendpoint = \"localhost\"\n[local]\nws_port = 0\n\
             [[devices]]\nid = \"bench-scale\"\naddress = \"serial://{pty}\"\n\
             plugin = \"serial-scale\"\nprofile = \"mt-sics\"\n\
             [devices.settings]\npoll_interval_ms = \"20\"\n{}",
            dir.path().join("data"),
            plugins.path(),
            support::trust_toml(),
        ),
    )
    .expect("config");
    let log = dir.path().join("run.log");
    let agent = Command::new(env!("CARGO_BIN_EXE_devicehub"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start devicehub run");
    let rig = Rig {
        _dir: dir,
        _plugins: plugins,
        scale,
        agent,
        control,
        log,
    };
    const MARK: &str = "local WebSocket server listening on ws://";
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&rig.log).unwrap_or_default();
        if let Some(at) = text.find(MARK) {
            let rest = &text[at + MARK.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                .unwrap_or(rest.len());
            let addr = rest[..end].to_string();
            return (rig, addr);
        }
        assert!(Instant::now() < deadline, "no WebSocket server:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn simulator_to_client() {
    let changes = env_count("DEVICEHUB_BENCH_CHANGES", 40);
    let (rig, addr) = start_rig();
    let http = support::http_client();
    let mut client = connect(&addr).await;
    subscribe(&mut client).await;
    let mut samples = Vec::with_capacity(changes);
    for i in 0..changes {
        let grams = 100 + i;
        let started = Instant::now();
        let answer = http
            .post(format!("{}/scale", rig.control))
            .json(&json!({"weight": format!("{grams}.00"), "unit": "g"}))
            .send()
            .await
            .expect("POST /scale");
        assert!(answer.status().is_success());
        reading_of(&mut client, grams as i64 * 1_000_000).await;
        samples.push(started.elapsed());
    }
    report(
        "simulator to client (200 ms read interval, MT-SICS over a pty)",
        samples,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        report_to_client().await;
        simulator_to_client().await;
    });
}
