//! Scanners end to end: the real text-scanner and ocr plugin libraries loaded from disk.
//!
//! The text scanner is the emulator's simulator process on a pseudo-terminal, opened through
//! the host's serial transport from a config row, exactly as a pen scanner on `/dev/ttyUSB0`
//! would be. The scanner poller runs over the device table and publishes each block to the
//! agent's live events. The OCR device is a `none://` row that reads images it is handed.
//!
//! Keyboard-wedge scanners cannot exist on a build machine, so the far side of their HID
//! transport is the emulator's keyboard model typing blocks; they are found, attached and
//! detached by the host's HID watcher through a stand-in HID source, as `devicehub run` does.

use std::{
    collections::{BTreeMap, VecDeque},
    io::{BufRead, BufReader},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
    time::{Duration, Instant},
};

use devicehub::{
    agent::{Agent, LocalEvent},
    cloud::events::SharedHealth,
    config::{Config, DeviceEntry},
    devices::{hid_watch::HidWatcher, DeviceTable, DeviceWorker, OpenedDevice},
    plugins::{PluginSet, Selection},
    scanning::ScanPoller,
    storage::DataDir,
    transport::hid::{HidDeviceInfo, HidError, HidSource, GENERIC_DESKTOP_USAGE_PAGE},
};
use devicehub_emulator::scanners::keyboard;
use devicehub_plugin_api::{
    abi_stable::std_types::{RResult, RSlice, RVec},
    ErrorKind, GrayImage, PluginError, Transport, TransportBox, TransportError, TransportErrorKind,
    TransportInfo, TransportKind,
};
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

// Keyboard-wedge scanners over HID

/// The far side of a keyboard-wedge scanner's HID transport: the reports the emulator's model
/// types, queued as the operating system queues a keyboard's reports.
#[derive(Default)]
struct Wedge {
    reports: Mutex<VecDeque<[u8; 8]>>,
    arrived: Condvar,
    unplugged: AtomicBool,
}

impl Wedge {
    /// Types `lines` as one block, as the scanner does when a person scans an address.
    fn scan(&self, lines: &[&str]) {
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let reports = keyboard::type_block(&lines).expect("the test types only ASCII");
        self.reports.lock().unwrap().extend(reports);
        self.arrived.notify_all();
    }

    fn unplug(&self) {
        self.unplugged.store(true, Ordering::SeqCst);
        self.arrived.notify_all();
    }
}

/// The HID transport handed to the plugin.
struct WedgeTransport(Arc<Wedge>);

fn stream_refused() -> TransportError {
    TransportError::new(
        TransportErrorKind::Unsupported,
        "a HID device exchanges reports",
    )
}

impl Transport for WedgeTransport {
    fn info(&self) -> TransportInfo {
        TransportInfo {
            kind: TransportKind::Hid,
            description: "hid model keyboard-wedge scanner".into(),
            ieee1284_id: None.into(),
        }
    }

    fn write(&mut self, _data: RSlice<'_, u8>) -> RResult<(), TransportError> {
        RResult::RErr(stream_refused())
    }

    fn read(&mut self, _max_len: u32, _timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        RResult::RErr(stream_refused())
    }

    fn write_report(&mut self, _report: RSlice<'_, u8>) -> RResult<(), TransportError> {
        // Keyboards take LED output reports; a scanner ignores them.
        RResult::ROk(())
    }

    fn read_report(&mut self, timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
        let mut reports = self.0.reports.lock().unwrap();
        loop {
            if self.0.unplugged.load(Ordering::SeqCst) {
                return RResult::RErr(TransportError::new(
                    TransportErrorKind::Disconnected,
                    "the scanner was unplugged",
                ));
            }
            if let Some(report) = reports.pop_front() {
                return RResult::ROk(report.to_vec().into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return RResult::RErr(TransportError::new(
                    TransportErrorKind::Timeout,
                    "no report",
                ));
            }
            reports = self.0.arrived.wait_timeout(reports, left).unwrap().0;
        }
    }
}

/// The HID devices plugged in, shared between the test and the watcher's source.
type Plugged = Arc<Mutex<Vec<(HidDeviceInfo, Arc<Wedge>)>>>;

/// A HID source listing model devices, standing in for hidapi.
struct WedgeSource(Plugged);

impl HidSource for WedgeSource {
    fn list(&mut self) -> Result<Vec<HidDeviceInfo>, HidError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(i, _)| i.clone())
            .collect())
    }

    fn open(&mut self, device: &HidDeviceInfo) -> Result<TransportBox, HidError> {
        let plugged = self.0.lock().unwrap();
        let (_, wedge) = plugged
            .iter()
            .find(|(info, _)| info == device)
            .ok_or_else(|| HidError::Open {
                path: device.path.clone(),
                message: "not plugged in".into(),
            })?;
        Ok(devicehub::transport::boxed(WedgeTransport(wedge.clone())))
    }
}

/// Plugs a scanner in with its keyboard collection and a vendor-defined one beside it, as
/// composite scanners list them.
fn plug(plugged: &Plugged, vendor_id: u16, product_id: u16) -> Arc<Wedge> {
    let wedge = Arc::new(Wedge::default());
    let mut plugged = plugged.lock().unwrap();
    for usage_page in [GENERIC_DESKTOP_USAGE_PAGE, 0xFF00] {
        let path = format!("/dev/hidraw{}", plugged.len());
        plugged.push((
            HidDeviceInfo {
                vendor_id,
                product_id,
                path,
                serial_number: None,
                usage_page,
            },
            wedge.clone(),
        ));
    }
    wedge
}

fn wedge_row(id: &str, usb: &str, profile: Option<&str>) -> DeviceEntry {
    DeviceEntry {
        id: id.into(),
        address: format!("usb://{usb}"),
        usb_id: None,
        plugin: Some("text-scanner".into()),
        profile: profile.map(str::to_string),
        serial: None,
        settings: BTreeMap::new(),
    }
}

/// Waits until `id` is attached (`true`) or detached (`false`).
async fn wait_attached(table: &DeviceTable, id: &str, attached: bool) {
    let deadline = Instant::now() + SCAN_WAIT;
    while table.get(id).is_ok() != attached {
        assert!(
            Instant::now() < deadline,
            "{id} not {} within {SCAN_WAIT:?}; problems: {:?}",
            if attached { "attached" } else { "detached" },
            table.problems()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the next scan published by `device`.
async fn next_scan(
    events: &mut tokio::sync::broadcast::Receiver<LocalEvent>,
    device: &str,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + SCAN_WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no scan from {device} within {SCAN_WAIT:?}"))
            .expect("live events open");
        if let LocalEvent::Scan { device: from, text } = event {
            if from == device {
                return text.0;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keyboard_wedge_scanners_bound_in_the_config_attach_publish_scans_and_detach() {
    let plugins = plugins(&[TEXT_SCANNER]);
    let rows = vec![
        wedge_row("wedge", "1a2b:3c4d", Some("hid-keyboard")),
        // The plugin's default profile reads serial ports: it refuses a HID device.
        wedge_row("no-profile", "1a2b:3c4e", None),
    ];
    let table = DeviceTable::from_config(&rows, &plugins.set);
    assert!(
        table.list().is_empty(),
        "USB-bound rows wait for their device"
    );
    let data = tempfile::tempdir().expect("temp dir");
    let agent = agent(&plugins, table, &data);
    let mut events = agent.subscribe_local();
    let poller = ScanPoller::start(agent.clone());
    let plugged: Plugged = Arc::default();
    let wedge = plug(&plugged, 0x1a2b, 0x3c4d);
    let unprofiled = plug(&plugged, 0x1a2b, 0x3c4e);
    let mut watcher = HidWatcher::start(
        Box::new(WedgeSource(plugged.clone())),
        Arc::new(devicehub::plugins::SharedPlugins::from(plugins.set.clone())),
        agent.devices().clone(),
        rows,
        Duration::from_millis(20),
    );
    wait_attached(agent.devices(), "wedge", true).await;
    let summary = agent.devices().list();
    assert_eq!(
        summary.len(),
        1,
        "only the keyboard collection of the bound scanner: {summary:?}"
    );
    assert_eq!(summary[0].kind, "scanner");
    assert_eq!(summary[0].profile, "hid-keyboard");
    assert_eq!(summary[0].usb_id.as_deref(), Some("1A2B:3C4D"));

    wedge.scan(&[
        "Jane Roe",
        "ACME Shipping, Inc.",
        "1200 Market St #4",
        "Springfield IL 62704",
    ]);
    unprofiled.scan(&["Not Attached"]);
    assert_eq!(
        next_scan(&mut events, "wedge").await,
        [
            "Jane Roe",
            "ACME Shipping, Inc.",
            "1200 Market St #4",
            "Springfield IL 62704"
        ]
    );
    assert!(agent.devices().get("no-profile").is_err());

    // Unplugged, the scanner is detached; plugged in again, it is attached and polled again.
    wedge.unplug();
    plugged
        .lock()
        .unwrap()
        .retain(|(info, _)| info.product_id != 0x3c4d);
    wait_attached(agent.devices(), "wedge", false).await;
    let again = plug(&plugged, 0x1a2b, 0x3c4d);
    wait_attached(agent.devices(), "wedge", true).await;
    again.scan(&["B Two", "2 Second Ave"]);
    assert_eq!(
        next_scan(&mut events, "wedge").await,
        ["B Two", "2 Second Ave"]
    );

    watcher.stop();
    assert!(
        agent.devices().list().is_empty(),
        "the watcher detaches what it attached"
    );
    poller.stop().await;
    agent.devices().shutdown();
}
