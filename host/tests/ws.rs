//! The local WebSocket server with a real client: `devicehub run` (not registered: the local
//! server runs before registration) with an MT-SICS scale simulator on a pseudo-terminal, and
//! tokio-tungstenite clients over TCP. Subscriptions and pushed readings, requests, refused
//! origins, malformed and oversized messages, and a client that never reads.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::scales::{SerialScale, SERIAL_SCALE};
use crate::support;
use crate::support_desk::Agent;

/// The longest a test waits for an answer or event; a passing test never waits this long.
const WAIT: Duration = Duration::from_secs(30);
const SCALE: &str = "bench-scale";

type Client = WebSocketStream<TcpStream>;

/// `devicehub run` with the simulator as `bench-scale`, its WebSocket server on a free port.
struct Desk {
    _dir: tempfile::TempDir,
    _plugins: tempfile::TempDir,
    /// Held for its lifetime: dropping it stops `devicehub run`.
    _agent: Agent,
    addr: String,
    sim: SerialScale,
}

impl Desk {
    fn start(allowed_origins: &[&str]) -> Desk {
        let sim = SerialScale::start("mt-sics");
        let plugins = support::plugins_folder(&[SERIAL_SCALE]);
        let dir = tempfile::tempdir().expect("temp dir");
        let origins: Vec<String> = allowed_origins.iter().map(|o| format!("{o:?}")).collect();
        let config = format!(
            "data_dir = {:?}\nplugins_dir = {:?}\nlog_level = \"info\"\n[usb]\nenabled = false\n\
             [cloud]\nendpoint = \"localhost\"\n\
             [local]\nws_port = 0\nhttp_port = 0\nrpc_port = 0\nrpc_publish_port = 0\nws_allowed_origins = [{}]\n\
             [[devices]]\nid = \"{SCALE}\"\naddress = \"serial://{}\"\nplugin = \"serial-scale\"\n\
             profile = \"mt-sics\"\n[devices.settings]\npoll_interval_ms = \"20\"\n{}",
            toml_path(&dir.path().join("data")),
            toml_path(plugins.path()),
            origins.join(", "),
            sim.pty,
            support::trust_toml(),
        );
        let config_path = dir.path().join("devicehub.toml");
        std::fs::write(&config_path, config).expect("write config");
        let agent = Agent::start(&config_path, &dir.path().join("run.log"));
        let addr = listening_address(&agent);
        Desk {
            _dir: dir,
            _plugins: plugins,
            _agent: agent,
            addr,
            sim,
        }
    }

    async fn connect(&self) -> Client {
        connect_with(&self.addr, None, None)
            .await
            .expect("handshake")
    }
}

fn toml_path(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").replace('\\', "/")
}

/// The address the agent announced in its log.
fn listening_address(agent: &Agent) -> String {
    const MARK: &str = "local WebSocket server listening on ws://";
    let deadline = Instant::now() + WAIT;
    loop {
        let log = agent.log();
        if let Some(at) = log.find(MARK) {
            let rest = &log[at + MARK.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                .unwrap_or(rest.len());
            return rest[..end].to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the agent announced no WebSocket server:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects over TCP (with a small receive buffer when given) and shakes hands, sending
/// `origin` when given.
async fn connect_with(
    addr: &str,
    origin: Option<&str>,
    recv_buffer: Option<u32>,
) -> Result<Client, WsError> {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("receive buffer");
    }
    let stream = socket
        .connect(addr.parse().expect("socket address"))
        .await
        .expect("TCP connect");
    let mut request = format!("ws://{addr}/")
        .into_client_request()
        .expect("request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header value"));
    }
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(client, _)| client)
}

async fn send(client: &mut Client, request: Value) {
    client
        .send(Message::text(request.to_string()))
        .await
        .expect("send request");
}

/// The next JSON text message, skipping pushed events when `answers_only`.
async fn next_json(client: &mut Client, answers_only: bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, client.next())
            .await
            .expect("a message in time")
            .expect("connection open")
            .expect("a valid message");
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(text.as_str()).expect("JSON message");
            if answers_only && value.get("type").is_some() {
                continue;
            }
            return value;
        }
    }
}

/// Sends a request and returns its answer (pushed events before it are skipped).
async fn request(client: &mut Client, request: Value) -> Value {
    let id = request["id"].clone();
    send(client, request).await;
    let answer = next_json(client, true).await;
    assert_eq!(answer["id"], id, "{answer}");
    answer
}

/// Waits for the pushed reading of `SCALE` with `micrograms`, returning the readings seen.
async fn reading_of(client: &mut Client, micrograms: i64) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let event = next_json(client, false).await;
        if event["type"] != "scale" {
            continue;
        }
        assert_eq!(event["device"], SCALE, "{event}");
        seen.push(event.clone());
        if event["micrograms"] == micrograms && event["state"] == "stable" {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_gets_changed_readings_and_reads_and_zeroes_the_scale() {
    let desk = Desk::start(&[]);
    let mut client = desk.connect().await;

    let listed = request(&mut client, json!({"id": 1, "type": "devices.list"})).await;
    let devices = listed["ok"]["devices"].as_array().expect("device list");
    assert!(
        devices
            .iter()
            .any(|d| d["id"] == SCALE && d["kind"] == "scale" && d["plugin"] == "serial-scale"),
        "{listed}"
    );

    let subscribed = request(
        &mut client,
        json!({"id": "s", "type": "subscribe", "topics": ["scale", "devices"], "unit": "kg"}),
    )
    .await;
    assert_eq!(subscribed["ok"]["topics"], json!(["scale", "devices"]));

    desk.sim.set(json!({"weight": "1.250", "unit": "kg"})).await;
    let seen = reading_of(&mut client, 1_250_000_000).await;
    let last = seen.last().expect("a reading");
    assert_eq!(
        (&last["value"], &last["unit"], &last["resolutionMicrograms"]),
        (&json!("1.250"), &json!("kg"), &json!(1_000_000)),
        "{last}"
    );
    assert!(last["atMs"].as_u64().expect("timestamp") > 0);

    // Only changes are pushed: after the new weight, no reading repeats the old one.
    desk.sim.set(json!({"weight": "2.000", "unit": "kg"})).await;
    let seen = reading_of(&mut client, 2_000_000_000).await;
    assert!(
        seen.iter().all(|r| r["micrograms"] != 1_250_000_000),
        "an unchanged reading was pushed again: {seen:?}"
    );

    // A client that subscribes later learns the current weight without waiting for a change.
    let mut late = desk.connect().await;
    let subscribed = request(
        &mut late,
        json!({"id": 1, "type": "subscribe", "topics": ["scale"]}),
    )
    .await;
    assert!(subscribed.get("ok").is_some(), "{subscribed}");
    reading_of(&mut late, 2_000_000_000).await;

    let read = request(
        &mut client,
        json!({"id": 2, "type": "scale.read", "unit": "lb", "timeoutMs": 2000}),
    )
    .await;
    assert_eq!(read["ok"]["device"], SCALE, "{read}");
    assert_eq!(read["ok"]["state"], "stable");
    assert_eq!(read["ok"]["micrograms"], 2_000_000_000);
    // 2 kg = 4.40924524... lb; a 1 g step is 0.0022 lb: three decimals.
    assert_eq!(read["ok"]["value"], "4.409");
    assert_eq!(read["ok"]["unit"], "lb");

    let zeroed = request(&mut client, json!({"id": 3, "type": "scale.zero"})).await;
    assert_eq!(zeroed["ok"]["device"], SCALE, "{zeroed}");
    let read = request(
        &mut client,
        json!({"id": 4, "type": "scale.read", "device": SCALE}),
    )
    .await;
    assert_eq!(read["ok"]["micrograms"], 0, "{read}");

    // A weight that does not settle within the request's timeout comes back in motion.
    desk.sim.set(json!({"motion_reads": 100_000})).await;
    let moving = request(
        &mut client,
        json!({"id": 7, "type": "scale.read", "timeoutMs": 300}),
    )
    .await;
    assert_eq!(moving["ok"]["state"], "in motion", "{moving}");
    desk.sim.set(json!({"motion_reads": 0})).await;

    let missing = request(
        &mut client,
        json!({"id": 5, "type": "scale.read", "device": "shelf-scale"}),
    )
    .await;
    assert_eq!(missing["error"]["kind"], "noSuchDevice", "{missing}");
    let ocr = request(
        &mut client,
        json!({"id": 6, "type": "ocr", "image": "iVBORw0KGgo="}),
    )
    .await;
    assert_eq!(
        ocr["error"],
        json!({"kind": "noOcrScanner", "message": "no OCR scanner is attached"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_answered_and_oversized_ones_close_the_connection() {
    let desk = Desk::start(&[]);
    let mut client = desk.connect().await;
    send(&mut client, json!("{not json")).await;
    client.send(Message::text("{not json")).await.expect("send");
    // The first message is a JSON string, not a request object.
    for _ in 0..2 {
        let answer = next_json(&mut client, true).await;
        assert_eq!(answer["id"], Value::Null);
        assert_eq!(answer["error"]["kind"], "badRequest", "{answer}");
    }
    let unknown = request(&mut client, json!({"id": 9, "type": "printer.melt"})).await;
    assert_eq!(unknown["error"]["kind"], "badRequest", "{unknown}");
    let topic = request(
        &mut client,
        json!({"id": 10, "type": "subscribe", "topics": ["weather"]}),
    )
    .await;
    assert!(
        topic["error"]["message"]
            .as_str()
            .expect("message")
            .contains("unknown topic \"weather\""),
        "{topic}"
    );
    // Still serving after the bad requests.
    let listed = request(&mut client, json!({"id": 11, "type": "devices.list"})).await;
    assert!(listed["ok"]["devices"].is_array(), "{listed}");

    let huge = "A".repeat(devicehub::ws::protocol::MAX_MESSAGE_BYTES + 1);
    let _ = client
        .send(Message::text(format!(
            r#"{{"id":12,"type":"ocr","image":"{huge}"}}"#
        )))
        .await;
    // The server closes with 1009 (message too big); the close frame can be lost to a reset
    // when the rest of the message was still unsent, but the connection always ends.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, client.next())
            .await
            .expect("the connection ends in time")
        {
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.expect("a close frame").code, CloseCode::Size);
                break;
            }
            Some(Ok(Message::Text(text))) => panic!("the oversized message was answered: {text}"),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }

    // Other clients are unaffected.
    let mut other = desk.connect().await;
    let listed = request(&mut other, json!({"id": 1, "type": "devices.list"})).await;
    assert!(listed["ok"]["devices"].is_array(), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_origin_is_refused_with_403_and_listed_ones_are_served() {
    let desk = Desk::start(&["https://ship.example.com"]);
    match connect_with(&desk.addr, Some("https://evil.example"), None).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("a foreign origin was not refused: {:?}", other.map(|_| ())),
    }
    let mut listed = connect_with(&desk.addr, Some("https://ship.example.com"), None)
        .await
        .expect("a listed origin is accepted");
    let answer = request(&mut listed, json!({"id": 1, "type": "devices.list"})).await;
    assert!(answer["ok"]["devices"].is_array(), "{answer}");
    let mut local_tool = connect_with(&desk.addr, None, None)
        .await
        .expect("no origin (a local tool) is accepted");
    let answer = request(&mut local_tool, json!({"id": 1, "type": "devices.list"})).await;
    assert!(answer["ok"]["devices"].is_array(), "{answer}");
}

/// Requests the slow client sends without reading an answer: with a 1 KiB ID each, their
/// answers are far more than the socket buffers on both sides hold.
const FLOOD: usize = 20_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_does_not_delay_a_fast_one() {
    let desk = Desk::start(&[]);
    let mut slow = connect_with(&desk.addr, None, Some(4096))
        .await
        .expect("handshake");
    send(
        &mut slow,
        json!({"id": 0, "type": "subscribe", "topics": ["scale"]}),
    )
    .await;
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let padding = "x".repeat(1024);
            for i in 0..FLOOD {
                let request = json!({"id": format!("{i}-{padding}"), "type": "devices.list"});
                if slow.send(Message::text(request.to_string())).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
            slow
        })
    };
    // Let the flood get under way before the fast client starts.
    let deadline = Instant::now() + WAIT;
    while sent.load(Ordering::SeqCst) < 500 {
        assert!(Instant::now() < deadline, "the slow client could not send");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut fast = desk.connect().await;
    let subscribed = request(
        &mut fast,
        json!({"id": 1, "type": "subscribe", "topics": ["scale"], "unit": "g"}),
    )
    .await;
    assert!(subscribed.get("ok").is_some(), "{subscribed}");
    let weights = ["101.0", "102.0", "103.0", "104.0", "105.0"];
    for (n, weight) in weights.iter().enumerate() {
        desk.sim.set(json!({"weight": weight, "unit": "g"})).await;
        let seen = reading_of(&mut fast, (101 + n as i64) * 1_000_000).await;
        assert_eq!(seen.last().expect("reading")["value"], *weight);
    }
    // The slow client is still stuck: its answers are not read, so the server stopped reading
    // its requests, and yet the fast client got every change.
    assert!(
        !flood.is_finished() && sent.load(Ordering::SeqCst) < FLOOD,
        "the server took all {FLOOD} requests of a client that reads nothing"
    );
    let answer = request(&mut fast, json!({"id": 2, "type": "devices.list"})).await;
    assert!(answer["ok"]["devices"].is_array(), "{answer}");
    flood.abort();
}
