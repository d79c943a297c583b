//! The local RPC over ZeroMQ with `devicehub run`: requests and answers over the real wire,
//! printing a file on a simulated Zebra printer, refusals (token, garbage, size), the publish
//! socket, the command line on top of it, libzmq interoperability and loopback-only listening,
//! and a print in flight when the service is told to stop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use devicehub::rpc::client::{RpcClient, Subscription};
use devicehub::rpc::RpcEndpoint;
use serde_json::{json, Value};
use zeromq::{ReqSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::support::{self, Simulator, ZEBRA};
use crate::support_desk::{zebra_row, Agent};

/// How long the agent may take to start listening; a passing test never waits this long.
const START_WAIT: Duration = Duration::from_secs(60);
/// How long one answer or event may take.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
const PRINTER: &str = "zebra-1";

/// An unregistered desk running `devicehub run` with a Zebra simulator, its RPC on free ports.
struct Desk {
    _dir: tempfile::TempDir,
    _plugins: tempfile::TempDir,
    sim: Simulator,
    config: PathBuf,
    data_dir: PathBuf,
    agent: Agent,
    endpoint: RpcEndpoint,
}

fn toml_path(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").replace('\\', "/")
}

impl Desk {
    async fn start() -> Desk {
        Desk::start_with(&[ZEBRA], "").await
    }

    /// A desk with the plugin libraries `libraries` and the extra device rows `rows`.
    async fn start_with(libraries: &[&str], rows: &str) -> Desk {
        let dir = tempfile::tempdir().expect("temp dir");
        let plugins = support::plugins_folder(libraries);
        let sim = Simulator::zebra(&["--language", "zpl"]);
        let data_dir = dir.path().join("data");
        let config = dir.path().join("devicehub.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\nplugins_dir = \"{}\"\n[usb]\nenabled = false\n{}{rows}\
                 [cloud]\nendpoint = \"localhost\"\n[local]\nrpc_port = 0\nrpc_publish_port = 0\nws_port = 0\nhttp_port = 0\n{}",
                toml_path(&data_dir),
                toml_path(plugins.path()),
                zebra_row(PRINTER, &sim.print_addr, ""),
                support::trust_toml(),
            ),
        )
        .expect("write config");
        let mut agent = Agent::start(&config, &dir.path().join("run.log"));
        let deadline = Instant::now() + START_WAIT;
        let endpoint = loop {
            if let Some(endpoint) = RpcEndpoint::read(&data_dir) {
                break endpoint;
            }
            assert!(
                agent.exited().is_none(),
                "devicehub run ended:\n{}",
                agent.log()
            );
            assert!(
                Instant::now() < deadline,
                "the local RPC did not start:\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Desk {
            _dir: dir,
            _plugins: plugins,
            sim,
            config,
            data_dir,
            agent,
            endpoint,
        }
    }

    async fn client(&self) -> RpcClient {
        RpcClient::connect_to(self.endpoint, &self.data_dir)
            .await
            .expect("connect to the local RPC")
    }

    fn token(&self) -> String {
        devicehub::rpc::read_token(&self.data_dir).expect("token file")
    }

    /// `devicehub --config CONFIG ARGS`.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_devicehub"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run devicehub")
    }
}

/// Sends raw frames on a REQ socket and returns the parsed answer.
async fn raw_request(socket: &mut ReqSocket, body: Vec<u8>) -> Value {
    socket
        .send(ZmqMessage::from(body))
        .await
        .expect("send a request");
    let answer = tokio::time::timeout(ANSWER_WAIT, socket.recv())
        .await
        .expect("an answer in time")
        .expect("receive the answer");
    serde_json::from_slice(&answer.into_vec().pop().expect("one frame")).expect("JSON answer")
}

/// The next published message on one of the subscribed topics that `wanted` accepts.
async fn next_event(events: &mut Subscription, wanted: impl Fn(&str, &Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    loop {
        let (topic, body) = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("the event arrives in time")
            .expect("receive an event");
        if wanted(&topic, &body) {
            return body;
        }
    }
}

#[tokio::test]
async fn rpc_answers_status_devices_plugins_and_prints_a_file_on_a_printer() {
    let mut desk = Desk::start().await;
    let mut client = desk.client().await;

    let status = client
        .call("status", Value::Null, ANSWER_WAIT)
        .await
        .expect("status");
    assert_eq!(status["link"]["state"], "not registered", "{status}");
    assert!(status["thingName"].is_null(), "{status}");

    let devices = client
        .call("devices", json!({}), ANSWER_WAIT)
        .await
        .expect("devices");
    assert_eq!(devices["devices"][0]["id"], PRINTER, "{devices}");
    assert_eq!(devices["devices"][0]["kind"], "printer", "{devices}");

    let plugins = client
        .call("plugins", json!({}), ANSWER_WAIT)
        .await
        .expect("plugins");
    assert_eq!(plugins["plugins"][0]["name"], "zebra", "{plugins}");

    // A health message shows the subscription is in place before the job's event is sent.
    let mut events = client
        .subscribe(&["job", "health"])
        .await
        .expect("subscribe");
    next_event(&mut events, |topic, _| topic == "health").await;

    let file = support::fixture("indicia.gif");
    let printed = client
        .call(
            "print",
            json!({ "path": file, "device": PRINTER }),
            ANSWER_WAIT,
        )
        .await
        .expect("print");
    assert_eq!(printed["labels"], 1, "{printed}");
    let job = next_event(&mut events, |topic, _| topic == "job").await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(job["jobId"], printed["jobId"], "{job}");

    assert_eq!(desk.sim.labels().await.len(), 1);
    let expected = support::render_for_zebra(&file);
    let actual = desk.sim.label_bitmap(0).await;
    support::assert_same_bitmap(&expected[0], &actual, "the label printed over RPC");

    // A scale read on a printer is refused precisely, and a relative path is refused.
    let error = client
        .call("scale.read", json!({ "device": PRINTER }), ANSWER_WAIT)
        .await
        .expect_err("a printer is not a scale");
    assert!(error.to_string().contains("not a scale"), "{error}");
    let error = client
        .call("scale.read", json!({}), ANSWER_WAIT)
        .await
        .expect_err("no scale attached");
    assert_eq!(error.kind(), "noScale", "{error}");
    let error = client
        .call(
            "print",
            json!({ "path": "indicia.gif", "device": PRINTER }),
            ANSWER_WAIT,
        )
        .await
        .expect_err("relative path");
    assert_eq!(error.kind(), "badParams", "{error}");

    assert!(
        desk.agent.terminate().await.success(),
        "{}",
        desk.agent.log()
    );
    assert!(
        desk.agent.log().contains("local RPC stopped"),
        "{}",
        desk.agent.log()
    );
    assert!(
        RpcEndpoint::read(&desk.data_dir).is_none(),
        "the endpoint file is removed at shutdown"
    );
}

#[tokio::test]
async fn rpc_refuses_bad_tokens_garbage_and_oversized_requests_and_keeps_answering() {
    let mut desk = Desk::start().await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(desk.data_dir.join("rpc.token"))
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is owner-only");
    }
    // Bytes that are not ZMTP at all end that connection, not the server.
    {
        use std::io::Write;
        let mut garbage = std::net::TcpStream::connect(("127.0.0.1", desk.endpoint.request_port))
            .expect("connect with plain TCP");
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\x00\x00\x00\x00\x00\x00\x00")
            .expect("send garbage");
    }
    let mut socket = ReqSocket::new();
    socket
        .connect(&format!("tcp://127.0.0.1:{}", desk.endpoint.request_port))
        .await
        .expect("connect");

    let answer = raw_request(&mut socket, br#"{"id":1,"method":"status"}"#.to_vec()).await;
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["error"]["kind"], "malformed", "{answer}");

    let wrong = json!({"token": "0".repeat(64), "id": 2, "method": "status"});
    let answer = raw_request(&mut socket, wrong.to_string().into_bytes()).await;
    assert_eq!(answer["id"], 2);
    assert_eq!(answer["error"]["kind"], "unauthorized", "{answer}");
    assert!(answer.get("result").is_none(), "{answer}");

    let answer = raw_request(&mut socket, b"\xff\xfe not json".to_vec()).await;
    assert_eq!(answer["error"]["kind"], "malformed", "{answer}");

    let answer = raw_request(&mut socket, vec![b'{'; 1024 * 1024]).await;
    assert_eq!(answer["error"]["kind"], "tooLarge", "{answer}");

    let token = desk.token();
    let unknown = json!({"token": token, "id": 3, "method": "format.disk"});
    let answer = raw_request(&mut socket, unknown.to_string().into_bytes()).await;
    assert_eq!(answer["error"]["kind"], "unknownMethod", "{answer}");

    let typo = json!({"token": token, "id": 4, "method": "status", "params": {"verbose": true}});
    let answer = raw_request(&mut socket, typo.to_string().into_bytes()).await;
    assert_eq!(answer["error"]["kind"], "badParams", "{answer}");

    let good = json!({"token": token, "id": "last", "method": "status"});
    let answer = raw_request(&mut socket, good.to_string().into_bytes()).await;
    assert_eq!(answer["id"], "last");
    assert_eq!(
        answer["result"]["link"]["state"], "not registered",
        "{answer}"
    );
    assert!(
        desk.agent.terminate().await.success(),
        "{}",
        desk.agent.log()
    );
}

#[tokio::test]
async fn rpc_config_reload_attaches_new_printers_and_publishes_the_device() {
    let mut desk = Desk::start().await;
    let mut client = desk.client().await;
    let mut events = client
        .subscribe(&["device", "health"])
        .await
        .expect("subscribe");
    next_event(&mut events, |topic, _| topic == "health").await;

    let second = Simulator::zebra(&["--language", "zpl"]);
    let mut text = std::fs::read_to_string(&desk.config).expect("read config");
    let at = text.find("[cloud]").expect("cloud section");
    text.insert_str(at, &zebra_row("zebra-2", &second.print_addr, ""));
    text = text.replace(
        "[usb]\nenabled = false\n",
        "log_level = \"debug\"\n[usb]\nenabled = false\n",
    );
    std::fs::write(&desk.config, text).expect("write config");

    let reloaded = client
        .call("config.reload", json!({}), ANSWER_WAIT)
        .await
        .expect("reload");
    assert_eq!(reloaded["attached"], json!(["zebra-2"]), "{reloaded}");
    assert_eq!(reloaded["needsRestart"], json!(["log_level"]), "{reloaded}");
    let event = next_event(&mut events, |topic, _| topic == "device").await;
    assert_eq!(event["device"]["id"], "zebra-2", "{event}");
    assert_eq!(event["attached"], true, "{event}");

    let devices = client
        .call("devices", json!({}), ANSWER_WAIT)
        .await
        .expect("devices");
    assert_eq!(
        devices["devices"].as_array().map(Vec::len),
        Some(2),
        "{devices}"
    );
    assert!(
        desk.agent.terminate().await.success(),
        "{}",
        desk.agent.log()
    );
}

#[tokio::test]
async fn cli_status_uses_the_running_service_and_says_clearly_when_it_is_not_running() {
    let mut desk = Desk::start().await;
    let out = desk.cli(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["link"]["state"], "not registered", "{status}");
    assert_eq!(status["devices"][0]["id"], PRINTER, "{status}");

    let out = desk.cli(&["devices", "--json"]);
    let devices: Value = serde_json::from_slice(&out.stdout).expect("devices JSON");
    assert_eq!(devices["source"], "service", "{devices}");

    let file = support::fixture("indicia.gif");
    let out = desk.cli(&[
        "print",
        file.to_str().expect("UTF-8 path"),
        "--device",
        PRINTER,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("print JSON");
    assert_eq!(printed["source"], "service", "{printed}");
    assert_eq!(printed["labels"], 1, "{printed}");

    assert!(
        desk.agent.terminate().await.success(),
        "{}",
        desk.agent.log()
    );
    let out = desk.cli(&["status"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DeviceHub is not running") && stderr.contains("devicehub run"),
        "{stderr}"
    );
    let out = desk.cli(&["status", "--json"]);
    let failure: Value = serde_json::from_slice(&out.stdout).expect("error JSON");
    assert_eq!(failure["error"]["kind"], "notRunning", "{failure}");

    // Offline, the device listing still works, and says where it came from.
    let out = desk.cli(&["devices", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let devices: Value = serde_json::from_slice(&out.stdout).expect("devices JSON");
    assert_eq!(devices["source"], "offline", "{devices}");
    assert_eq!(devices["devices"][0]["id"], PRINTER, "{devices}");
}

#[tokio::test]
async fn rpc_interoperates_with_libzmq_through_pyzmq() {
    let mut desk = Desk::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/rpc_client.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(desk.endpoint.request_port.to_string())
        .arg(desk.endpoint.publish_port.to_string())
        .arg(desk.data_dir.join("rpc.token"))
        .output()
        .await
        .expect("python3 runs (CI installs it with python3-zmq: see .ci/run)");
    assert!(
        output.status.success(),
        "the pyzmq client failed (is python3-zmq installed? .ci/run installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("the client's JSON");
    assert_eq!(seen["status"]["id"], "py-1", "{seen}");
    assert_eq!(
        seen["status"]["result"]["link"]["state"], "not registered",
        "{seen}"
    );
    assert_eq!(seen["refused"]["error"]["kind"], "malformed", "{seen}");
    assert_eq!(seen["devices"]["id"], 3, "{seen}");
    assert_eq!(
        seen["devices"]["result"]["devices"][0]["id"], PRINTER,
        "{seen}"
    );
    assert_eq!(seen["published"]["topic"], "health", "{seen}");
    assert!(seen["published"]["body"]["uptimeS"].is_u64(), "{seen}");
    assert!(
        desk.agent.terminate().await.success(),
        "{}",
        desk.agent.log()
    );
}

/// This computer's first non-loopback IPv4 address, if it has one.
fn non_loopback_ipv4() -> Option<std::net::Ipv4Addr> {
    // Connecting a UDP socket sends nothing; it only asks the kernel which address it would
    // use on the way out.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    match socket.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

#[tokio::test]
async fn rpc_listens_on_loopback_only() {
    let mut desk = Desk::start().await;
    let ports = [desk.endpoint.request_port, desk.endpoint.publish_port];
    #[cfg(target_os = "linux")]
    {
        // The kernel's table of listening sockets names the bound address (hex, 0100007F is
        // 127.0.0.1): both ports are bound there and nowhere else.
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp")
            + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
        for port in ports {
            let suffix = format!(":{port:04X}");
            let listening: Vec<&str> = table
                .lines()
                .filter_map(|line| {
                    let mut fields = line.split_whitespace();
                    let local = fields.nth(1)?;
                    let state = fields.nth(1)?;
                    (state == "0A" && local.ends_with(&suffix)).then_some(local)
                })
                .collect();
            assert_eq!(
                listening,
                vec![format!("0100007F{suffix}")],
                "port {port} must listen on 127.0.0.1 alone"
            );
        }
    }
    if let Some(ip) = non_loopback_ipv4() {
        for port in ports {
            let reached = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from((ip, port)),
                Duration::from_secs(2),
            );
            assert!(reached.is_err(), "port {port} answers on {ip}");
        }
    }
    assert!(
        desk.agent.terminate().await.success(),
        "{}",
        desk.agent.log()
    );
}

#[tokio::test]
async fn cli_register_goes_through_the_running_service_with_its_steps_as_they_happen() {
    let cloud = crate::support_cloud::Cloud::start();
    let plugins = support::plugins_folder(&[ZEBRA]);
    let prepared = crate::support_desk::prepare(&cloud, plugins.path(), "");
    let log = prepared
        .config
        .parent()
        .expect("the config is in the desk folder")
        .join("run.log");
    let mut agent = Agent::start(&prepared.config, &log);
    let deadline = Instant::now() + START_WAIT;
    while RpcEndpoint::read(&prepared.data_dir).is_none() {
        assert!(
            agent.exited().is_none(),
            "devicehub run ended:\n{}",
            agent.log()
        );
        assert!(Instant::now() < deadline, "no local RPC:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_devicehub"))
        .arg("--config")
        .arg(&prepared.config)
        .args(["register", "--code", &prepared.code, "--json"])
        .output()
        .await
        .expect("run devicehub register");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        agent.log()
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let last = lines.last().expect("an outcome line");
    assert_eq!(last["source"], "service", "{lines:?}");
    let thing = last["result"]["thingName"]
        .as_str()
        .unwrap_or_else(|| panic!("no result: {lines:?}"))
        .to_string();
    let steps: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["step"].as_str())
        .collect();
    assert!(steps.contains(&"thingRegistered"), "{lines:?}");

    // The service registered itself: it connects without a restart and says so in its status.
    let endpoint = RpcEndpoint::read(&prepared.data_dir).expect("endpoint");
    let mut client = RpcClient::connect_to(endpoint, &prepared.data_dir)
        .await
        .expect("connect");
    let deadline = Instant::now() + START_WAIT;
    loop {
        let status = client
            .call("status", json!({}), ANSWER_WAIT)
            .await
            .expect("status");
        assert_eq!(status["thingName"], thing.as_str(), "{status}");
        if status["link"]["state"] == "connected" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not connected: {status}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = client
        .call(
            "register",
            json!({ "activationCode": "ABCD-EFGH" }),
            ANSWER_WAIT,
        )
        .await
        .expect_err("already registered");
    assert_eq!(again.kind(), "alreadyRegistered", "{again}");
    assert!(agent.terminate().await.success(), "{}", agent.log());
}

/// `devicehub-emulator scale serial --protocol mt-sics` on a pseudo-terminal; stopped when
/// dropped (its standard input closes).
struct SerialScale {
    child: std::process::Child,
    _stdin: std::process::ChildStdin,
    pty: String,
    control: String,
}

impl SerialScale {
    fn start() -> SerialScale {
        use std::io::BufRead;
        let mut child = Command::new(support::emulator_bin())
            .args([
                "scale",
                "serial",
                "--protocol",
                "mt-sics",
                "--control",
                "127.0.0.1:0",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the scale simulator");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the simulator's announcement");
        let announced: Value = serde_json::from_str(&line).expect("announcement JSON");
        SerialScale {
            child,
            _stdin: stdin,
            pty: announced["pty"].as_str().expect("pty").to_string(),
            control: announced["control"].as_str().expect("control").to_string(),
        }
    }
}

impl Drop for SerialScale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn rpc_reads_a_scale_in_the_asked_unit_and_publishes_the_reading() {
    let scale = SerialScale::start();
    let row = format!(
        "[[devices]]\nid = \"desk-scale\"\naddress = \"serial://{}\"\nplugin = \"serial-scale\"\n\
         profile = \"mt-sics\"\n",
        scale.pty
    );
    let mut desk = Desk::start_with(&[ZEBRA, "devicehub_driver_serial_scale"], &row).await;
    let response = support::http_client()
        .post(format!("{}/scale", scale.control))
        .json(&json!({"weight": "1.250", "unit": "kg"}))
        .send()
        .await
        .expect("POST /scale");
    assert!(response.status().is_success());

    let mut client = desk.client().await;
    let mut events = client
        .subscribe(&["scale", "health"])
        .await
        .expect("subscribe");
    next_event(&mut events, |topic, _| topic == "health").await;
    // With one scale attached, the device may be left out.
    let reading = client
        .call("scale.read", json!({"unit": "g"}), ANSWER_WAIT)
        .await
        .expect("scale.read");
    assert_eq!(reading["device"], "desk-scale", "{reading}");
    assert_eq!(reading["state"], "stable", "{reading}");
    assert_eq!(reading["micrograms"], 1_250_000_000i64, "{reading}");
    assert_eq!(reading["weight"], 1250.0, "{reading}");
    assert_eq!(reading["unit"], "g", "{reading}");
    assert_eq!(reading["displayUnit"], "kg", "{reading}");
    let event = next_event(&mut events, |topic, _| topic == "scale").await;
    assert_eq!(event["device"], "desk-scale", "{event}");
    assert_eq!(event["reading"]["micrograms"], 1_250_000_000i64, "{event}");

    let out = desk.cli(&["scale", "--device", "desk-scale", "--unit", "lb", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reading: Value = serde_json::from_slice(&out.stdout).expect("scale JSON");
    let pounds = reading["weight"].as_f64().expect("a number");
    assert!((pounds - 2.755_778_6).abs() < 1e-6, "{reading}");
    assert!(
        desk.agent.terminate().await.success(),
        "{}",
        desk.agent.log()
    );
}

#[test]
fn cli_logs_shows_the_last_lines_across_rotated_files_oldest_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = dir.path().join("data").join("logs");
    std::fs::create_dir_all(&logs).expect("logs folder");
    std::fs::write(logs.join("devicehub.log.2"), "one\ntwo\n").expect("write");
    std::fs::write(logs.join("devicehub.log.1"), "three\nfour\n").expect("write");
    std::fs::write(logs.join("devicehub.log"), "five\nsix\n").expect("write");
    let config = dir.path().join("devicehub.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n", toml_path(&dir.path().join("data"))),
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_devicehub"))
        .arg("--config")
        .arg(&config)
        .args(["logs", "-n", "3"])
        .output()
        .expect("run devicehub logs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "four\nfive\nsix\n");
}

/// Sends SIGTERM to `agent`, releases `relay` once the agent logged that it is stopping (so
/// that the held print finishes during the shutdown), and waits for the agent to exit.
pub(crate) async fn terminate_releasing(
    mut agent: Agent,
    log: &Path,
    relay: &HeldPrinter,
) -> (std::process::ExitStatus, String) {
    let stopping = tokio::spawn(async move {
        let exit = agent.terminate().await;
        (exit, agent.log())
    });
    let deadline = Instant::now() + ANSWER_WAIT;
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("SIGTERM: stopping")
    {
        assert!(Instant::now() < deadline, "the agent never saw SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.release();
    stopping.await.expect("the stopping task")
}

/// A TCP relay between the agent and a printer simulator that holds the first chunk carrying a
/// label (`^XA`) until released, so that a print is in flight for as long as the test wants.
/// Status queries before it pass, so the plugin has checked the printer and is writing.
pub(crate) struct HeldPrinter {
    pub(crate) addr: String,
    /// (label held, released).
    gate: std::sync::Arc<(std::sync::Mutex<(bool, bool)>, std::sync::Condvar)>,
}

impl HeldPrinter {
    pub(crate) fn start(printer: &str) -> HeldPrinter {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("relay address").to_string();
        let gate = std::sync::Arc::new((
            std::sync::Mutex::new((false, false)),
            std::sync::Condvar::new(),
        ));
        let printer = printer.to_string();
        let relay_gate = gate.clone();
        // The threads end when either side closes its connection.
        std::thread::spawn(move || {
            for agent_side in listener.incoming() {
                let Ok(mut agent_side) = agent_side else {
                    return;
                };
                let mut printer_side =
                    std::net::TcpStream::connect(&printer).expect("connect to the simulator");
                let mut answers_in = printer_side.try_clone().expect("clone");
                let mut answers_out = agent_side.try_clone().expect("clone");
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut answers_in, &mut answers_out);
                });
                let gate = relay_gate.clone();
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 64 * 1024];
                    loop {
                        let n = match agent_side.read(&mut buffer) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let chunk = &buffer[..n];
                        if chunk.windows(3).any(|w| w == b"^XA") {
                            let (state, changed) = &*gate;
                            let mut state = state.lock().unwrap();
                            state.0 = true;
                            changed.notify_all();
                            while !state.1 {
                                state = changed.wait(state).unwrap();
                            }
                        }
                        if printer_side.write_all(chunk).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HeldPrinter { addr, gate }
    }

    /// Waits until a label is being held.
    pub(crate) async fn wait_held(&self, agent: &Agent) {
        let deadline = Instant::now() + ANSWER_WAIT;
        while !self.gate.0.lock().unwrap().0 {
            assert!(
                Instant::now() < deadline,
                "no label reached the relay:\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn release(&self) {
        let (state, changed) = &*self.gate;
        state.lock().unwrap().1 = true;
        changed.notify_all();
    }
}

#[tokio::test]
async fn sigterm_during_a_print_lets_it_finish_once_and_exits_cleanly() {
    let held_sim = Simulator::zebra(&["--language", "zpl"]);
    let relay = HeldPrinter::start(&held_sim.print_addr);
    let desk = Desk::start_with(&[ZEBRA], &zebra_row("held-1", &relay.addr, "")).await;

    // `devicehub print` through the running service, in flight while the label is held.
    let file = support::fixture("indicia.gif");
    let print = Command::new(env!("CARGO_BIN_EXE_devicehub"))
        .arg("--config")
        .arg(&desk.config)
        .args([
            "print",
            file.to_str().expect("UTF-8 path"),
            "--device",
            "held-1",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run devicehub print");
    relay.wait_held(&desk.agent).await;

    let agent = desk.agent;
    let log = desk._dir.path().join("run.log");
    let (exit, agent_log) = terminate_releasing(agent, &log, &relay).await;
    assert!(exit.success(), "exit {exit} after SIGTERM:\n{agent_log}");
    let out = tokio::task::spawn_blocking(move || print.wait_with_output())
        .await
        .expect("join")
        .expect("devicehub print ends");
    assert!(
        out.status.success(),
        "the in-flight print failed: {}\n{agent_log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("print JSON");
    assert_eq!(printed["source"], "service", "{printed}");
    assert_eq!(printed["labels"], 1, "{printed}");
    assert_eq!(held_sim.labels().await.len(), 1, "printed exactly once");
}
