//! Scales end to end: the real serial-scale and hid-scale plugin libraries loaded from disk.
//!
//! Serial scales are the emulator's simulator process on a pseudo-terminal, opened through the
//! host's serial transport from a config row, exactly as a scale on `/dev/ttyUSB0` would be.
//! HID scales cannot exist on a build machine, so the far side of their transport is the
//! emulator's HID scale model, sending reports on its own thread as a scale does; the scales
//! are found and attached by the host's HID scanner through a stand-in HID source.

use std::{
    collections::{BTreeMap, VecDeque},
    io::{BufRead, BufReader},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use devicehub::{
    config::DeviceEntry,
    devices::{hid_watch::HidScanner, DeviceTable, DeviceWorker, OpenedDevice},
    plugins::{PluginSet, Selection},
    transport::{
        self,
        hid::{HidDeviceInfo, HidError, HidSource, POS_USAGE_PAGE},
        serial::SerialSettings,
    },
};
use devicehub_emulator::scales::hid::{unit, HidCondition, HidScaleModel};
use devicehub_plugin_api::{
    abi_stable::std_types::{RResult, RSlice, RVec},
    ErrorKind, PluginError, ScaleReading, ScaleState, Transport, TransportError,
    TransportErrorKind, TransportInfo, TransportKind, WeightUnit,
};
use serde_json::json;

use crate::support;

pub(crate) const SERIAL_SCALE: &str = "devicehub_driver_serial_scale";
const HID_SCALE: &str = "devicehub_driver_hid_scale";

/// The plugins folder and its loaded plugins.
struct Plugins {
    _dir: tempfile::TempDir,
    set: PluginSet,
}

fn plugins(library: &str) -> Plugins {
    let dir = support::plugins_folder(&[library]);
    let set = PluginSet::load_dir(dir.path(), Selection::AllLibraries, &support::test_trust());
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    Plugins { _dir: dir, set }
}

/// Reads the scale on its device thread.
async fn read(worker: &DeviceWorker, timeout_ms: u32) -> Result<ScaleReading, PluginError> {
    worker
        .call_async(move |device| match device {
            OpenedDevice::Scale(scale) => scale.read(timeout_ms).into_result(),
            other => panic!("{other:?} is not a scale"),
        })
        .await
        .expect("the device thread answers")
}

/// Zeroes the scale on its device thread.
async fn zero(worker: &DeviceWorker) -> Result<(), PluginError> {
    worker
        .call_async(|device| match device {
            OpenedDevice::Scale(scale) => scale.zero().into_result(),
            other => panic!("{other:?} is not a scale"),
        })
        .await
        .expect("the device thread answers")
}

// ---------------------------------------------------------------------------------------------
// Serial scales

/// `devicehub-emulator scale serial` running as its own process.
pub(crate) struct SerialScale {
    child: Child,
    /// Held open: the simulator stops when its standard input closes, so it cannot outlive the
    /// test.
    _stdin: ChildStdin,
    pub(crate) pty: String,
    control: String,
    http: reqwest::Client,
}

impl SerialScale {
    pub(crate) fn start(protocol: &str) -> SerialScale {
        let mut child = Command::new(support::emulator_bin())
            .args(["scale", "serial", "--protocol", protocol])
            .args(["--control", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the scale simulator");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the simulator's announcement");
        let announced: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bad announcement {line:?}: {e}"));
        assert_eq!(announced["protocol"], protocol);
        SerialScale {
            child,
            _stdin: stdin,
            pty: announced["pty"].as_str().expect("pty path").to_string(),
            control: announced["control"]
                .as_str()
                .expect("control URL")
                .to_string(),
            http: support::http_client(),
        }
    }

    /// Changes the simulated scale through its control API.
    pub(crate) async fn set(&self, change: serde_json::Value) {
        let response = self
            .http
            .post(format!("{}/scale", self.control))
            .json(&change)
            .send()
            .await
            .expect("POST /scale");
        assert!(
            response.status().is_success(),
            "{change}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// The commands the scale received so far.
    async fn commands(&self) -> Vec<String> {
        let view: serde_json::Value = self
            .http
            .get(format!("{}/scale", self.control))
            .send()
            .await
            .expect("GET /scale")
            .json()
            .await
            .expect("scale JSON");
        serde_json::from_value(view["commands"].clone()).expect("command list")
    }

    /// Attaches the scale from a config row, with `profile` and line settings (the row's
    /// `serial` table and `query` after the address's path), as `devicehub run` does.
    fn attach(
        &self,
        plugins: &PluginSet,
        profile: &str,
        serial: SerialSettings,
        query: &str,
    ) -> (DeviceTable, Arc<DeviceWorker>) {
        let entry = DeviceEntry {
            id: format!("{profile}-scale"),
            address: format!("serial://{}{query}", self.pty),
            usb_id: None,
            plugin: Some("serial-scale".into()),
            profile: Some(profile.into()),
            serial: Some(serial),
            settings: BTreeMap::from([("poll_interval_ms".to_string(), "20".to_string())]),
        };
        let table = DeviceTable::from_config(&[entry], plugins);
        assert!(table.problems().is_empty(), "{:?}", table.problems());
        let worker = table.get(&format!("{profile}-scale")).expect("attached");
        (table, worker)
    }
}

impl Drop for SerialScale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 7 data bits, even parity, as many NCI bench scales are set.
fn seven_even_one() -> SerialSettings {
    SerialSettings {
        data_bits: 7,
        parity: "even".into(),
        ..SerialSettings::default()
    }
}

async fn assert_stable_weights(
    sim: &SerialScale,
    worker: &DeviceWorker,
    cases: &[(&str, &str, i64, u64, WeightUnit)],
) {
    for &(weight, unit, micrograms, resolution, display) in cases {
        sim.set(json!({"weight": weight, "unit": unit})).await;
        let reading = read(worker, 2000).await.expect("reading");
        assert_eq!(
            (
                reading.state,
                reading.micrograms,
                reading.resolution_micrograms,
                reading.display_unit
            ),
            (ScaleState::Stable, micrograms, resolution, display),
            "{weight} {unit}: {}",
            reading.detail
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mt_sics_stable_weight_in_each_unit_is_exact() {
    let plugins = plugins(SERIAL_SCALE);
    let sim = SerialScale::start("mt-sics");
    let (_table, worker) = sim.attach(&plugins.set, "mt-sics", SerialSettings::default(), "");
    assert_stable_weights(
        &sim,
        &worker,
        &[
            ("100.00", "g", 100_000_000, 10_000, WeightUnit::Gram),
            (
                "12.345",
                "kg",
                12_345_000_000,
                1_000_000,
                WeightUnit::Kilogram,
            ),
            ("1250.0", "mg", 1_250_000, 100, WeightUnit::Milligram),
            // 5.3 oz = 150 252 472.5625 ug.
            ("5.30", "oz", 150_252_473, 283_495, WeightUnit::Ounce),
            // 1.25 lb = 566 990 462.5 ug.
            ("1.250", "lb", 566_990_463, 453_592, WeightUnit::Pound),
            ("2.50", "ct", 500_000, 2_000, WeightUnit::Gram),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nci_stable_weight_in_each_unit_is_exact_over_7e1() {
    let plugins = plugins(SERIAL_SCALE);
    let sim = SerialScale::start("nci");
    let (_table, worker) = sim.attach(
        &plugins.set,
        "nci",
        seven_even_one(),
        "?baud=9600&stop_bits=1",
    );
    assert_stable_weights(
        &sim,
        &worker,
        &[
            ("1.25", "lb", 566_990_463, 4_535_924, WeightUnit::Pound),
            ("5.3", "oz", 150_252_473, 2_834_952, WeightUnit::Ounce),
            (
                "12.345",
                "kg",
                12_345_000_000,
                1_000_000,
                WeightUnit::Kilogram,
            ),
            ("1234", "g", 1_234_000_000, 1_000_000, WeightUnit::Gram),
            // 35.5 oz shown as 2 lb 3.5 oz = 1 006 408 070.9375 ug.
            ("35.5", "lb-oz", 1_006_408_071, 2_834_952, WeightUnit::Pound),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn motion_is_waited_out_until_stable() {
    let plugins = plugins(SERIAL_SCALE);
    for (protocol, request) in [("mt-sics", "SI"), ("nci", "W")] {
        let sim = SerialScale::start(protocol);
        let (_table, worker) = sim.attach(&plugins.set, protocol, SerialSettings::default(), "");
        sim.set(json!({"weight": "2.50", "unit": "lb", "motion_reads": 3}))
            .await;
        let reading = read(&worker, 10_000).await.expect("reading");
        assert_eq!(reading.state, ScaleState::Stable, "{protocol}");
        assert_eq!(reading.micrograms, 1_133_980_925, "{protocol}");
        let asked = sim
            .commands()
            .await
            .iter()
            .filter(|c| *c == request)
            .count();
        // Three answers in motion, then the stable one (more only if an answer came late).
        assert!(asked >= 4, "{protocol}: asked {asked} times");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn motion_past_the_timeout_returns_the_last_state() {
    let plugins = plugins(SERIAL_SCALE);
    let sim = SerialScale::start("nci");
    let (_table, worker) = sim.attach(&plugins.set, "nci", SerialSettings::default(), "");
    sim.set(json!({"weight": "2.50", "motion_reads": 1_000_000}))
        .await;
    let reading = read(&worker, 200).await.expect("reading");
    assert_eq!(reading.state, ScaleState::InMotion);
    assert_eq!(reading.micrograms, 1_133_980_925);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_and_under_capacity_are_reported() {
    let plugins = plugins(SERIAL_SCALE);
    for protocol in ["mt-sics", "nci"] {
        let sim = SerialScale::start(protocol);
        let (_table, worker) = sim.attach(&plugins.set, protocol, SerialSettings::default(), "");
        sim.set(json!({"weight": "31.00", "unit": "lb", "condition": "over-capacity"}))
            .await;
        let reading = read(&worker, 2000).await.expect("reading");
        assert_eq!(reading.state, ScaleState::OverCapacity, "{protocol}");
        sim.set(json!({"condition": "under-capacity"})).await;
        let reading = read(&worker, 2000).await.expect("reading");
        assert_eq!(reading.state, ScaleState::UnderZero, "{protocol}");
        let refused = zero(&worker).await.expect_err("zeroing under capacity");
        assert_eq!(refused.kind, ErrorKind::NotReady, "{protocol}: {refused}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_tares_the_load() {
    let plugins = plugins(SERIAL_SCALE);
    for (protocol, unit) in [("mt-sics", "g"), ("nci", "lb")] {
        let sim = SerialScale::start(protocol);
        let (_table, worker) = sim.attach(&plugins.set, protocol, SerialSettings::default(), "");
        sim.set(json!({"weight": "1.25", "unit": unit})).await;
        assert_ne!(read(&worker, 2000).await.expect("reading").micrograms, 0);
        zero(&worker).await.expect("zero");
        assert!(
            sim.commands().await.contains(&"Z".to_string()),
            "{protocol}"
        );
        let reading = read(&worker, 2000).await.expect("reading");
        assert_eq!(reading.state, ScaleState::StableAtZero, "{protocol}");
        assert_eq!(reading.micrograms, 0, "{protocol}");
        // A box taken off a zeroed scale weighs below zero.
        sim.set(json!({"weight": "0.75"})).await;
        let reading = read(&worker, 2000).await.expect("reading");
        assert_eq!(reading.state, ScaleState::UnderZero, "{protocol}");
        assert!(reading.micrograms < 0, "{protocol}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_commands_are_errors_naming_the_cause() {
    let plugins = plugins(SERIAL_SCALE);
    let sim = SerialScale::start("mt-sics");
    let (_table, worker) = sim.attach(&plugins.set, "mt-sics", SerialSettings::default(), "");
    for (reply, kind) in [
        ("ES", ErrorKind::Protocol),
        ("ET", ErrorKind::Transport),
        ("EL", ErrorKind::NotReady),
    ] {
        sim.set(json!({"fail_with": reply})).await;
        let err = read(&worker, 2000).await.expect_err(reply);
        assert_eq!(err.kind, kind, "{reply}: {err}");
        assert!(err.message.contains(reply), "{err}");
    }
    sim.set(json!({"fail_with": "none"})).await;
    read(&worker, 2000).await.expect("answers again");
    let sim = SerialScale::start("nci");
    let (_table, worker) = sim.attach(&plugins.set, "nci", SerialSettings::default(), "");
    sim.set(json!({"fail_with": "?"})).await;
    let err = read(&worker, 2000).await.expect_err("unrecognised");
    assert_eq!(err.kind, ErrorKind::Protocol, "{err}");
}

// ---------------------------------------------------------------------------------------------
// HID scales

/// How often the simulated scale sends a report. Real scales report every few tens of
/// milliseconds; a short interval keeps the tests quick.
const REPORT_INTERVAL: Duration = Duration::from_millis(5);

/// Reports the host's HID layer keeps per device (Linux hidraw keeps 64).
const QUEUE_LIMIT: usize = 64;

/// The far side of a HID transport: the emulator's scale model sending reports on its own
/// thread into a bounded queue, as the operating system queues a real scale's reports.
struct ModelScale {
    model: Mutex<HidScaleModel>,
    queue: Mutex<VecDeque<[u8; 6]>>,
    arrived: Condvar,
    written: Mutex<Vec<Vec<u8>>>,
    unplugged: AtomicBool,
}

/// A running [`ModelScale`] and the thread sending its reports.
struct ModelRig {
    scale: Arc<ModelScale>,
    sender: Option<JoinHandle<()>>,
}

impl ModelRig {
    fn start(model: HidScaleModel) -> ModelRig {
        let scale = Arc::new(ModelScale {
            model: Mutex::new(model),
            queue: Mutex::new(VecDeque::new()),
            arrived: Condvar::new(),
            written: Mutex::new(Vec::new()),
            unplugged: AtomicBool::new(false),
        });
        let sending = scale.clone();
        let sender = std::thread::spawn(move || {
            while !sending.unplugged.load(Ordering::Relaxed) {
                let report = sending.model.lock().unwrap().next_report();
                let mut queue = sending.queue.lock().unwrap();
                if queue.len() == QUEUE_LIMIT {
                    queue.pop_front();
                }
                queue.push_back(report);
                drop(queue);
                sending.arrived.notify_all();
                std::thread::sleep(REPORT_INTERVAL);
            }
        });
        ModelRig {
            scale,
            sender: Some(sender),
        }
    }

    fn with_model<R>(&self, change: impl FnOnce(&mut HidScaleModel) -> R) -> R {
        change(&mut self.scale.model.lock().unwrap())
    }
}

impl Drop for ModelRig {
    fn drop(&mut self) {
        self.scale.unplugged.store(true, Ordering::Relaxed);
        self.scale.arrived.notify_all();
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
    }
}

/// The test HID transport handed to the plugin.
struct ModelTransport {
    scale: Arc<ModelScale>,
}

fn unplugged() -> TransportError {
    TransportError::new(TransportErrorKind::Disconnected, "the scale was unplugged")
}

impl Transport for ModelTransport {
    fn info(&self) -> TransportInfo {
        TransportInfo {
            kind: TransportKind::Hid,
            description: "hid model scale".into(),
            ieee1284_id: None.into(),
        }
    }

    fn write(&mut self, _data: RSlice<'_, u8>) -> RResult<(), TransportError> {
        RResult::RErr(TransportError::new(
            TransportErrorKind::Unsupported,
            "a HID device exchanges reports",
        ))
    }

    fn read(&mut self, _max_len: u32, _timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        RResult::RErr(TransportError::new(
            TransportErrorKind::Unsupported,
            "a HID device exchanges reports",
        ))
    }

    fn write_report(&mut self, report: RSlice<'_, u8>) -> RResult<(), TransportError> {
        if self.scale.unplugged.load(Ordering::Relaxed) {
            return RResult::RErr(unplugged());
        }
        self.scale.written.lock().unwrap().push(report.to_vec());
        match self
            .scale
            .model
            .lock()
            .unwrap()
            .handle_output_report(&report)
        {
            Ok(()) => RResult::ROk(()),
            Err(err) => RResult::RErr(TransportError::new(TransportErrorKind::Io, err.to_string())),
        }
    }

    fn read_report(&mut self, timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
        let mut queue = self.scale.queue.lock().unwrap();
        loop {
            if self.scale.unplugged.load(Ordering::Relaxed) {
                return RResult::RErr(unplugged());
            }
            if let Some(report) = queue.pop_front() {
                return RResult::ROk(report.to_vec().into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return RResult::RErr(TransportError::new(
                    TransportErrorKind::Timeout,
                    "no report",
                ));
            }
            queue = self.scale.arrived.wait_timeout(queue, left).unwrap().0;
        }
    }
}

/// A HID source listing model scales, standing in for hidapi.
#[derive(Default)]
struct ModelSource {
    devices: Vec<(HidDeviceInfo, Arc<ModelScale>)>,
}

impl ModelSource {
    fn plug(&mut self, vendor_id: u16, product_id: u16, rig: &ModelRig) {
        let path = format!("/dev/hidraw{}", self.devices.len());
        self.devices.push((
            HidDeviceInfo {
                vendor_id,
                product_id,
                path,
                serial_number: None,
                usage_page: POS_USAGE_PAGE,
            },
            rig.scale.clone(),
        ));
    }
}

impl HidSource for ModelSource {
    fn list(&mut self) -> Result<Vec<HidDeviceInfo>, HidError> {
        Ok(self.devices.iter().map(|(info, _)| info.clone()).collect())
    }

    fn open(
        &mut self,
        device: &HidDeviceInfo,
    ) -> Result<devicehub_plugin_api::TransportBox, HidError> {
        let (_, scale) = self
            .devices
            .iter()
            .find(|(info, _)| info == device)
            .ok_or_else(|| HidError::Open {
                path: device.path.clone(),
                message: "not plugged in".into(),
            })?;
        Ok(transport::boxed(ModelTransport {
            scale: scale.clone(),
        }))
    }
}

/// A HID scale attached by the host's scanner, as `devicehub run` attaches one.
struct HidRig {
    _plugins: Plugins,
    table: Arc<DeviceTable>,
    worker: Arc<DeviceWorker>,
    rig: ModelRig,
}

/// Plugs `model` in as a DYMO M10 (0922:8003) and lets the HID scanner attach it. The load is
/// set on the model beforehand: a change made afterwards shows only in reports sent after it,
/// and a read may come first, as on a real scale.
fn attach_hid(model: HidScaleModel) -> HidRig {
    let plugins = plugins(HID_SCALE);
    let rig = ModelRig::start(model);
    let mut source = ModelSource::default();
    source.plug(0x0922, 0x8003, &rig);
    let table = Arc::new(DeviceTable::default());
    let mut scanner = HidScanner::default();
    scanner.scan(&mut source, &plugins.set, &table, &[]);
    let ids = scanner.attached_ids();
    assert_eq!(ids.len(), 1, "{:?}", table.problems());
    let worker = table.get(&ids[0]).expect("attached");
    assert_eq!(worker.spec().plugin.name(), "hid-scale");
    assert_eq!(worker.spec().model.as_deref(), Some("DYMO M10"));
    HidRig {
        _plugins: plugins,
        table,
        worker,
        rig,
    }
}

impl Drop for HidRig {
    fn drop(&mut self) {
        self.table.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hid_representative_reports_read_exactly() {
    // (unit, exponent, capacity and load in steps, expected state, micrograms, display unit)
    let cases = [
        (
            unit::POUND,
            -2,
            2500,
            125,
            ScaleState::Stable,
            566_990_463,
            WeightUnit::Pound,
        ),
        (
            unit::OUNCE,
            -1,
            4000,
            53,
            ScaleState::Stable,
            150_252_473,
            WeightUnit::Ounce,
        ),
        (
            unit::GRAM,
            0,
            5000,
            1234,
            ScaleState::Stable,
            1_234_000_000,
            WeightUnit::Gram,
        ),
        (
            unit::KILOGRAM,
            -3,
            15000,
            12345,
            ScaleState::Stable,
            12_345_000_000,
            WeightUnit::Kilogram,
        ),
        (
            unit::OUNCE,
            -1,
            4000,
            -5,
            ScaleState::UnderZero,
            -14_174_762,
            WeightUnit::Ounce,
        ),
        (
            unit::POUND,
            -1,
            250,
            0,
            ScaleState::StableAtZero,
            0,
            WeightUnit::Pound,
        ),
        // Above a 25 lb capacity.
        (
            unit::POUND,
            -1,
            250,
            251,
            ScaleState::OverCapacity,
            11_385_168_487,
            WeightUnit::Pound,
        ),
    ];
    for (unit_code, exponent, capacity, load, state, micrograms, display) in cases {
        let mut model = HidScaleModel::new(unit_code, exponent, capacity);
        model.place(load, 0);
        let hid = attach_hid(model);
        let reading = read(&hid.worker, 2000).await.expect("reading");
        assert_eq!(
            (reading.state, reading.micrograms, reading.display_unit),
            (state, micrograms, display),
            "{}",
            reading.detail
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hid_report_id_4_scales_read_too() {
    let mut model = HidScaleModel::new(unit::GRAM, 0, 10_000).with_report_id(4);
    model.place(500, 0);
    let hid = attach_hid(model);
    assert_eq!(
        read(&hid.worker, 2000).await.unwrap().micrograms,
        500_000_000
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hid_stale_first_report_is_skipped() {
    // The scale's first report describes 9.00 lb left from before; the pan is empty now.
    let hid = attach_hid(HidScaleModel::new(unit::POUND, -2, 2500).with_stale_load(900));
    let reading = read(&hid.worker, 2000).await.expect("reading");
    assert_eq!(
        reading.state,
        ScaleState::StableAtZero,
        "{}",
        reading.detail
    );
    assert_eq!(reading.micrograms, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hid_motion_is_waited_out() {
    let mut model = HidScaleModel::new(unit::POUND, -2, 2500);
    model.place(125, 20);
    let hid = attach_hid(model);
    let reading = read(&hid.worker, 10_000).await.expect("reading");
    assert_eq!(reading.state, ScaleState::Stable);
    assert_eq!(reading.micrograms, 566_990_463);
}

#[tokio::test(flavor = "multi_thread")]
async fn hid_zero_sends_02_02_and_tares() {
    let mut model = HidScaleModel::new(unit::POUND, -2, 2500);
    model.place(125, 0);
    let hid = attach_hid(model);
    assert_eq!(
        read(&hid.worker, 2000).await.unwrap().micrograms,
        566_990_463
    );
    zero(&hid.worker).await.expect("zero");
    assert_eq!(
        *hid.rig.scale.written.lock().unwrap(),
        vec![vec![0x02, 0x02]]
    );
    assert_eq!(hid.rig.with_model(|m| m.zeroes()), 1);
    let reading = read(&hid.worker, 2000).await.expect("reading");
    assert_eq!(
        reading.state,
        ScaleState::StableAtZero,
        "{}",
        reading.detail
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hid_scale_faults_are_readings() {
    for (condition, state) in [
        (HidCondition::Fault, ScaleState::Fault),
        (HidCondition::NeedsCalibration, ScaleState::NeedsCalibration),
        (HidCondition::NeedsRezero, ScaleState::NeedsRezero),
    ] {
        let mut model = HidScaleModel::new(unit::POUND, -2, 2500);
        model.set_condition(condition);
        let hid = attach_hid(model);
        assert_eq!(read(&hid.worker, 2000).await.unwrap().state, state);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hid_scales_detach_when_unplugged() {
    let plugins = plugins(HID_SCALE);
    let rig = ModelRig::start(HidScaleModel::new(unit::POUND, -2, 2500));
    let mut source = ModelSource::default();
    source.plug(0x0922, 0x8003, &rig);
    // A Zebra printer's ID is no scale: nothing attaches for an ID no scale plugin claims.
    source.plug(0x0A5F, 0x0141, &rig);
    let table = DeviceTable::default();
    let mut scanner = HidScanner::default();
    scanner.scan(&mut source, &plugins.set, &table, &[]);
    assert_eq!(table.list().len(), 1);
    assert_eq!(table.list()[0].kind, "scale");
    source.devices.clear();
    scanner.scan(&mut source, &plugins.set, &table, &[]);
    assert!(table.list().is_empty());
}
