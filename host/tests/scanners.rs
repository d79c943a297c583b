//! Scanners end to end: the real text-scanner and ocr plugin libraries loaded from disk.
//!
//! The text scanner is the emulator's simulator process on a pseudo-terminal, opened through
//! the host's serial transport from a config row, exactly as a pen scanner on `/dev/ttyUSB0`
//! would be. The scanner poller runs over the device table and publishes each block to the
//! agent's live events. The OCR device is a `none://` row that reads images it is handed.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, ChildStdin, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use devicehub::{
    agent::{Agent, LocalEvent},
    cloud::events::SharedHealth,
    config::{Config, DeviceEntry},
    devices::{DeviceTable, DeviceWorker, OpenedDevice},
    plugins::{PluginSet, Selection},
    scanning::ScanPoller,
    storage::DataDir,
};
use devicehub_plugin_api::{ErrorKind, GrayImage, PluginError};
use serde_json::{json, Value};

use crate::support;

pub const TEXT_SCANNER: &str = "devicehub_driver_text_scanner";
pub const OCR: &str = "devicehub_driver_ocr";
/// The longest a test waits for a scan; a passing test never waits this long.
const SCAN_WAIT: Duration = Duration::from_secs(20);

/// A `devicehub-emulator` simulator process and its announcement line. It stops when its
/// standard input closes, so it cannot outlive the test.
pub struct SimulatorProcess {
    child: Child,
    _stdin: ChildStdin,
    pub announced: Value,
}

impl SimulatorProcess {
    pub fn start(args: &[&str]) -> SimulatorProcess {
        let mut child = Command::new(support::emulator_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the simulator (cargo build -p devicehub-emulator)");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the simulator's announcement");
        let announced: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bad announcement {line:?}: {e}"));
        SimulatorProcess {
            child,
            _stdin: stdin,
            announced,
        }
    }

    pub fn field(&self, key: &str) -> String {
        self.announced[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {}", self.announced))
            .to_string()
    }

    /// Posts `body` to the control API at `path` and returns the JSON answer.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = support::http_client()
            .post(format!("{}{path}", self.field("control")))
            .json(&body)
            .send()
            .await
            .expect("control API reachable");
        let status = response.status();
        let answer: Value = response.json().await.expect("control API JSON");
        assert!(status.is_success(), "{path} refused: {answer}");
        answer
    }
}

impl Drop for SimulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `devicehub-emulator scanner serial`.
pub fn text_scanner() -> SimulatorProcess {
    let scanner = SimulatorProcess::start(&["scanner", "serial", "--control", "127.0.0.1:0"]);
    assert_eq!(scanner.announced["kind"], "scanner");
    scanner
}

/// The plugins folder and its loaded plugins.
struct Plugins {
    _dir: tempfile::TempDir,
    set: Arc<PluginSet>,
}

fn plugins(libraries: &[&str]) -> Plugins {
    let dir = support::plugins_folder(libraries);
    let set = PluginSet::load_dir(dir.path(), Selection::AllLibraries, &support::test_trust());
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    Plugins {
        _dir: dir,
        set: Arc::new(set),
    }
}

fn scanner_row(id: &str, pty: &str, settings: &[(&str, &str)]) -> DeviceEntry {
    DeviceEntry {
        id: id.into(),
        address: format!("serial://{pty}"),
        usb_id: None,
        plugin: Some("text-scanner".into()),
        profile: None,
        serial: None,
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn ocr_row() -> DeviceEntry {
    DeviceEntry {
        id: "ocr".into(),
        address: "none://".into(),
        usb_id: None,
        plugin: Some("ocr".into()),
        profile: None,
        serial: None,
        settings: BTreeMap::new(),
    }
}

/// Polls the scanner on its device thread until a block arrives.
async fn next_block(worker: &DeviceWorker) -> Vec<String> {
    let deadline = Instant::now() + SCAN_WAIT;
    loop {
        let polled = worker
            .call_async(|device| match device {
                OpenedDevice::Scanner(s) => s.poll(100).into_result().map(|t| t.into_option()),
                other => panic!("not a scanner: {other:?}"),
            })
            .await
            .expect("attached")
            .expect("poll");
        if let Some(text) = polled {
            return text.lines.iter().map(|l| l.to_string()).collect();
        }
        assert!(Instant::now() < deadline, "no scan within {SCAN_WAIT:?}");
    }
}

#[tokio::test]
async fn blocks_from_the_simulator_arrive_as_ascii_lines_with_each_ending() {
    let plugins = plugins(&[TEXT_SCANNER]);
    let scanner = text_scanner();
    let pty = scanner.field("pty");
    let table = DeviceTable::from_config(
        &[scanner_row(
            "pen",
            &pty,
            &[("terminator", "etx"), ("idle_ms", "300")],
        )],
        &plugins.set,
    );
    assert!(table.problems().is_empty(), "{:?}", table.problems());
    let worker = table.get("pen").expect("attached");

    scanner
        .post("/scan", json!({"lines": ["Jane Roe", "ACME Shipping", "1200 Market Street", "Springfield IL 62704"]}))
        .await;
    assert_eq!(
        next_block(&worker).await,
        [
            "Jane Roe",
            "ACME Shipping",
            "1200 Market Street",
            "Springfield IL 62704"
        ]
    );
    scanner
        .post("/scan", json!({"lines": ["Max Müller", "Hauptstraße 17", "10115 Berlin"], "ending": "etx", "encoding": "latin1", "prefix": "\u{2}"}))
        .await;
    assert_eq!(
        next_block(&worker).await,
        ["Max Muller", "Hauptstrasse 17", "10115 Berlin"]
    );
    scanner
        .post(
            "/scan",
            json!({"lines": ["Zoë Ångström", "Kungsgatan 5"], "ending": "none"}),
        )
        .await;
    assert_eq!(next_block(&worker).await, ["Zoe Angstrom", "Kungsgatan 5"]);
    table.shutdown();
}

/// The agent for `table`, as `devicehub run` builds it (not registered).
fn agent(plugins: &Plugins, table: DeviceTable, data: &tempfile::TempDir) -> Arc<Agent> {
    Arc::new(Agent::new(
        Config::default(),
        DataDir::new(data.path().to_path_buf()),
        Arc::new(devicehub::plugins::SharedPlugins::from(plugins.set.clone())),
        Arc::new(table),
        SharedHealth::default(),
        None,
    ))
}

#[tokio::test]
async fn the_poller_publishes_every_scan_to_live_subscribers_and_skips_ocr() {
    let plugins = plugins(&[TEXT_SCANNER, OCR]);
    let first = text_scanner();
    let second = text_scanner();
    let table = DeviceTable::from_config(
        &[
            scanner_row("desk-1", &first.field("pty"), &[]),
            scanner_row("desk-2", &second.field("pty"), &[]),
            ocr_row(),
        ],
        &plugins.set,
    );
    assert!(table.problems().is_empty(), "{:?}", table.problems());
    let data = tempfile::tempdir().expect("temp dir");
    let agent = agent(&plugins, table, &data);
    let mut events = agent.subscribe_local();
    let poller = ScanPoller::start(agent.clone());

    first
        .post("/scan", json!({"lines": ["A One", "1 First St"]}))
        .await;
    second
        .post("/scan", json!({"lines": ["B Two", "2 Second Ave"]}))
        .await;
    let mut scans = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + SCAN_WAIT;
    while scans.len() < 2 {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("scans within {SCAN_WAIT:?}: got {scans:?}"))
            .expect("live events open");
        if let LocalEvent::Scan { device, text } = event {
            // Debug output of a scan never shows the address.
            assert!(!format!("{text:?}").contains("First"));
            scans.insert(device, text.0);
        }
    }
    assert_eq!(scans["desk-1"], ["A One", "1 First St"]);
    assert_eq!(scans["desk-2"], ["B Two", "2 Second Ave"]);

    // The OCR device is attached and still answers images while the scanners are polled.
    let ocr = agent.devices().get("ocr").expect("ocr attached");
    let blank = GrayImage {
        width: 200,
        height: 100,
        pixels: vec![255; 200 * 100].into(),
    };
    let read: Result<_, PluginError> = ocr
        .call_async(move |device| match device {
            OpenedDevice::Scanner(s) => s.recognize(&blank).into_result(),
            other => panic!("not a scanner: {other:?}"),
        })
        .await
        .expect("attached");
    assert!(read.expect("recognize").lines.is_empty());
    poller.stop().await;
    agent.devices().shutdown();
}

#[tokio::test]
async fn a_text_scanner_refuses_images_through_the_host() {
    let plugins = plugins(&[TEXT_SCANNER]);
    let scanner = text_scanner();
    let table = DeviceTable::from_config(
        &[scanner_row("pen", &scanner.field("pty"), &[])],
        &plugins.set,
    );
    let worker = table.get("pen").expect("attached");
    let err = worker
        .call_async(|device| match device {
            OpenedDevice::Scanner(s) => s
                .recognize(&GrayImage {
                    width: 1,
                    height: 1,
                    pixels: vec![0].into(),
                })
                .into_result(),
            other => panic!("not a scanner: {other:?}"),
        })
        .await
        .expect("attached")
        .expect_err("unsupported");
    assert_eq!(err.kind, ErrorKind::Unsupported);
    table.shutdown();
}
