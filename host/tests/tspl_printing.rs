//! Printing through the real TSPL plugin library into the TSPL simulator over TCP, comparing
//! what the simulator decoded with what the host rendered, dot for dot; faults, a label larger
//! than the loaded one, a dropped connection; and USB printers matched by their IEEE-1284
//! device ID when no plugin lists their USB ID.

use std::sync::{Arc, Mutex};

use devicehub::{
    devices::{
        self,
        usb_watch::{ScannedDevice, UsbAttachments, UsbScanner},
        Connection, DeviceSpec, DeviceTable, DeviceWorker,
    },
    plugins::{PluginSet, Selection},
    print::{self, PrintOptions},
    transport::usb::{UsbDeviceInfo, PRINTER_CLASS},
};
use devicehub_plugin_api::{ErrorKind, PrinterState, Setting, TransportBox};
use serde_json::json;

use crate::support::{self, Simulator, ZEBRA};

/// The TSPL plugin's library (crate name with underscores).
const TSPL: &str = "devicehub_driver_tspl";

/// A USB ID of TSC's in the plugin's table.
const TDP_225: (u16, u16) = (0x1203, 0x0160);

struct Rig {
    _plugins_dir: tempfile::TempDir,
    plugins: Arc<PluginSet>,
    table: Arc<DeviceTable>,
}

impl Rig {
    /// The Zebra and TSPL plugins loaded from a plugins folder.
    fn new() -> Rig {
        let dir = support::plugins_folder(&[ZEBRA, TSPL]);
        let plugins =
            PluginSet::load_dir(dir.path(), Selection::AllLibraries, &support::test_trust());
        assert!(plugins.refused.is_empty(), "{:?}", plugins.refused);
        Rig {
            _plugins_dir: dir,
            plugins: Arc::new(plugins),
            table: Arc::new(DeviceTable::default()),
        }
    }

    /// Attaches a TSC printer at the simulator's print port.
    fn attach(&self, sim: &Simulator, settings: &[(&str, &str)]) -> Arc<DeviceWorker> {
        let chosen = devices::choose_plugin(&self.plugins, Some(TDP_225), None)
            .expect("the TSPL plugin lists the TDP-225");
        assert_eq!(chosen.plugin.name(), "tspl");
        let spec = DeviceSpec {
            id: "tsc".to_string(),
            kind: chosen.plugin.manifest.kind,
            plugin: chosen.plugin,
            profile: chosen.profile.expect("the model's profile"),
            model: chosen.model,
            usb_id: Some(TDP_225),
            connection: Some(Connection::Tcp(sim.print_addr.clone())),
            settings: settings.iter().map(|(k, v)| Setting::new(k, v)).collect(),
        };
        let transport = devices::open_transport(spec.connection.as_ref().expect("tcp"), None)
            .expect("a TCP transport");
        self.table.attach(spec, transport).expect("attached")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.table.shutdown();
    }
}

fn tspl_simulator() -> Simulator {
    Simulator::start("tspl", &["--dpi", "203"])
}

/// Prints `fixture` and checks every page and copy count the simulator recorded.
async fn print_and_compare(sim: &Simulator, printer: &DeviceWorker, fixture: &str, copies: u32) {
    let before = sim.labels().await.len();
    let file = std::fs::read(support::fixture(fixture)).expect("fixture");
    let profile = printer.spec().printer_profile().expect("profile").clone();
    let options = PrintOptions {
        copies,
        ..PrintOptions::default()
    };
    let prepared = print::prepare_job(&file, &profile, &options).expect("prepared");
    let report = printer.print_async(prepared.job).await.expect("printed");
    let expected = support::render_for(
        &support::fixture(fixture),
        profile.dpi,
        profile.width_dots,
        profile.max_length_dots,
    );
    assert_eq!(report.labels as usize, expected.len() * copies as usize);

    let labels = sim.labels().await;
    assert_eq!(
        labels.len(),
        before + expected.len(),
        "{fixture}: labels recorded"
    );
    for (page, want) in expected.iter().enumerate() {
        let index = before + page;
        let meta = &labels[index];
        assert_eq!(meta["copies"], json!(copies), "{fixture} page {page}");
        assert_eq!(meta["encoding"], json!("BITMAP"), "{fixture} page {page}");
        assert_eq!(meta["clipped"], json!(false), "{fixture} page {page}");
        let got = sim.label_bitmap(index).await;
        support::assert_same_bitmap(want, &got, &format!("{fixture} page {page}"));
    }
}

#[tokio::test]
async fn tspl_prints_gif_indicia_and_a_4x6_pdf_pixel_exact() {
    let sim = tspl_simulator();
    let rig = Rig::new();
    let printer = rig.attach(&sim, &[("density", "8"), ("speed", "4")]);
    assert_eq!(printer.spec().profile, "tspl-203");
    for fixture in ["indicia.gif", "label-4x6.pdf"] {
        print_and_compare(&sim, &printer, fixture, 1).await;
    }
    let labels = sim.labels().await;
    assert_eq!(labels[1]["settings"]["SIZE"], json!("101.6 mm,152.4 mm"));
    assert_eq!(labels[1]["settings"]["DENSITY"], json!("8"));
    assert!(sim.errors().await.is_empty());
}

#[tokio::test]
async fn tspl_prints_copies_and_a_multi_page_pdf_pixel_exact() {
    let sim = tspl_simulator();
    let rig = Rig::new();
    let printer = rig.attach(&sim, &[]);
    for fixture in ["label.png", "two-page.pdf"] {
        print_and_compare(&sim, &printer, fixture, 3).await;
    }
    assert!(sim.errors().await.is_empty());
}

async fn assert_fault_stops_the_job(fault: &str, state: PrinterState) {
    let sim = tspl_simulator();
    let rig = Rig::new();
    let printer = rig.attach(&sim, &[]);
    assert_eq!(
        printer.printer_status_async().await.expect("status").state,
        PrinterState::Ready
    );

    sim.set_faults(json!({ fault: true })).await;
    let status = printer.printer_status_async().await.expect("status");
    assert_eq!(status.state, state, "{fault}: {}", status.detail);

    let file = std::fs::read(support::fixture("indicia.gif")).expect("fixture");
    let profile = printer.spec().printer_profile().expect("profile").clone();
    let job = print::prepare_job(&file, &profile, &PrintOptions::default()).expect("prepared");
    let err = printer.print_async(job.job).await.unwrap_err();
    let plugin_error = err.plugin_error().expect("the plugin refused the job");
    assert_eq!(plugin_error.kind, ErrorKind::NotReady);
    assert_eq!(plugin_error.printer_state.into_option(), Some(state));
    assert!(
        err.to_string().contains(state.as_str()),
        "the error names the fault: {err}"
    );
    assert!(
        sim.labels().await.is_empty(),
        "nothing printed while faulted"
    );
    let status = support::http_client()
        .get(format!("{}/status", sim.control))
        .send()
        .await
        .expect("GET /status")
        .json::<serde_json::Value>()
        .await
        .expect("status JSON");
    assert_eq!(status["held_labels"], json!(0), "no label bytes were sent");
}

#[tokio::test]
async fn paper_out_surfaces_as_status_and_print_error() {
    assert_fault_stops_the_job("paper_out", PrinterState::PaperOut).await;
}

#[tokio::test]
async fn head_open_surfaces_as_status_and_print_error() {
    assert_fault_stops_the_job("head_open", PrinterState::HeadOpen).await;
}

#[tokio::test]
async fn a_label_larger_than_the_loaded_labels_is_refused_before_sending() {
    let sim = tspl_simulator();
    let rig = Rig::new();
    // 2 x 1 in labels loaded; the job is a 4 x 6 in label.
    let printer = rig.attach(
        &sim,
        &[("label_width_mm", "50.8"), ("label_length_mm", "25.4")],
    );
    let file = std::fs::read(support::fixture("label-4x6.pdf")).expect("fixture");
    let profile = printer.spec().printer_profile().expect("profile").clone();
    let job = print::prepare_job(&file, &profile, &PrintOptions::default()).expect("prepared");
    let err = printer.print_async(job.job).await.unwrap_err();
    let plugin_error = err.plugin_error().expect("the plugin refused the job");
    assert_eq!(plugin_error.kind, ErrorKind::MediaMismatch);
    let message = plugin_error.message.as_str();
    assert!(
        message.contains("101.6 x 152.4 mm") && message.contains("50.8 x 25.4 mm"),
        "the message names both sizes: {message}"
    );
    assert!(sim.labels().await.is_empty());
    assert!(sim.errors().await.is_empty(), "nothing reached the printer");

    // A label that fits prints on the loaded label's size.
    let small = std::fs::read(support::fixture("indicia.gif")).expect("fixture");
    let mut fits = print::prepare_job(&small, &profile, &PrintOptions::default())
        .expect("prepared")
        .job;
    fits.settings = vec![
        Setting::new("label_width_mm", "76.2"),
        Setting::new("label_length_mm", "50.8"),
    ]
    .into();
    printer.print_async(fits).await.expect("printed");
    let labels = sim.labels().await;
    assert_eq!(
        (labels[0]["width"].clone(), labels[0]["height"].clone()),
        (json!(609), json!(406))
    );
}

#[tokio::test]
async fn a_connection_dropped_mid_job_fails_the_job_and_the_next_job_reconnects() {
    let sim = tspl_simulator();
    let rig = Rig::new();
    let printer = rig.attach(&sim, &[]);
    let file = std::fs::read(support::fixture("label-4x6.pdf")).expect("fixture");
    let profile = printer.spec().printer_profile().expect("profile").clone();
    let job = print::prepare_job(&file, &profile, &PrintOptions::default()).expect("prepared");

    // Let the status request through, then cut the job inside its BITMAP data.
    sim.set_faults(json!({ "drop_after_bytes": 403 })).await;
    let err = printer.print_async(job.job.clone()).await.unwrap_err();
    let kind = err.plugin_error().map(|e| e.kind);
    assert!(
        matches!(kind, Some(ErrorKind::Transport) | Some(ErrorKind::NotReady)),
        "a dropped connection fails the job: {err}"
    );
    assert!(sim.labels().await.is_empty(), "a cut job is not a label");
    let errors = sim.errors().await;
    assert_eq!(errors[0]["kind"], json!("incomplete"));

    let report = printer.print_async(job.job).await.expect("printed");
    assert_eq!(report.labels, 1);
    assert_eq!(sim.labels().await.len(), 1);
}

/// A USB bus fed by the test: devices with the IEEE-1284 IDs they would report, whose printer
/// interfaces open onto the simulator's print port.
struct FedBus {
    devices: Vec<(UsbDeviceInfo, Option<String>)>,
    print_addr: String,
    /// The stable keys of the devices whose IEEE-1284 ID the watcher asked for.
    asked: Arc<Mutex<Vec<String>>>,
}

impl UsbScanner for FedBus {
    fn scan(&mut self, wants_id: &mut dyn FnMut(&UsbDeviceInfo) -> bool) -> Vec<ScannedDevice> {
        self.devices
            .iter()
            .map(|(info, id)| {
                let wanted = wants_id(info);
                if wanted {
                    self.asked
                        .lock()
                        .expect("test lock")
                        .push(info.stable_key());
                }
                ScannedDevice {
                    info: info.clone(),
                    ieee1284_id: if wanted { id.clone() } else { None },
                }
            })
            .collect()
    }

    fn open_printer(&mut self, _info: &UsbDeviceInfo) -> Result<TransportBox, String> {
        devices::open_transport(&Connection::Tcp(self.print_addr.clone()), None)
    }
}

fn usb_printer(vendor_id: u16, product_id: u16, serial: &str) -> UsbDeviceInfo {
    UsbDeviceInfo {
        vendor_id,
        product_id,
        bus: 1,
        address: 4,
        port_path: "1-4".to_string(),
        manufacturer: None,
        product: None,
        serial_number: Some(serial.to_string()),
        classes: vec![PRINTER_CLASS],
    }
}

const ROLLO_ID: &str = "MFG:Printer;MDL:Thermal Printer;CMD:XPP,XL;";

#[tokio::test]
async fn an_unknown_usb_printer_with_a_rollo_ieee1284_id_is_attached_to_the_tspl_plugin() {
    let sim = tspl_simulator();
    let rig = Rig::new();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let mut bus = FedBus {
        // A USB ID in no plugin's table.
        devices: vec![(
            usb_printer(0x0483, 0x5720, "R1"),
            Some(ROLLO_ID.to_string()),
        )],
        print_addr: sim.print_addr.clone(),
        asked: asked.clone(),
    };
    let mut attachments = UsbAttachments::new(rig.plugins.clone(), rig.table.clone(), Vec::new());
    attachments.rescan(&mut bus);
    attachments.rescan(&mut bus);

    assert_eq!(
        attachments.attached_ids(),
        vec!["usb-0483-5720-r1".to_string()]
    );
    assert_eq!(
        asked.lock().expect("test lock").len(),
        1,
        "the ID is read once while the printer stays plugged in"
    );
    let printer = rig.table.get("usb-0483-5720-r1").expect("attached");
    assert_eq!(printer.spec().plugin.name(), "tspl");
    assert_eq!(printer.spec().profile, "tspl-203");
    assert_eq!(printer.spec().model.as_deref(), Some("Thermal Printer"));

    // It really is a TSPL printer now: a label goes through to the simulator.
    print_and_compare(&sim, &printer, "indicia.gif", 1).await;

    // Unplugged: detached, and the ID is forgotten so a new plug-in reads it again.
    bus.devices.clear();
    attachments.rescan(&mut bus);
    assert!(attachments.attached_ids().is_empty());
    assert!(rig.table.get("usb-0483-5720-r1").is_err());
}

#[tokio::test]
async fn the_usb_id_table_wins_over_the_ieee1284_id_and_unmatched_printers_stay_detached() {
    let sim = tspl_simulator();
    let rig = Rig::new();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let mut not_a_printer = usb_printer(0x0483, 0x0001, "K1");
    not_a_printer.classes = vec![0x03];
    let mut bus = FedBus {
        devices: vec![
            // A Zebra ZD620 by USB ID, even though its ID would match the generic TSPL rule.
            (
                usb_printer(0x0A5F, 0x0141, "Z1"),
                Some("MFG:Zebra Technologies;MDL:ZD620;CMD:ZPL,TSPL;".to_string()),
            ),
            // An unknown printer that speaks nothing a plugin knows.
            (
                usb_printer(0x1234, 0x5678, "P1"),
                Some("MFG:Acme;MDL:Laser 9;CMD:PCL,PJL;".to_string()),
            ),
            // A keyboard-like HID device: its ID is never asked for.
            (not_a_printer, None),
            // Printers that list TSPL or TSPL2 among their command sets (IDs they report).
            (
                usb_printer(0x2D37, 0x0001, "G1"),
                Some("MFG:Munbyn;CMD:TSPL;MDL:RW403B;CMT:Label Printer;".to_string()),
            ),
            (
                usb_printer(0x2D37, 0x0002, "G2"),
                Some("MFG:4BARCODE;CMD:TSPL2;MDL:3B-363B;CLS:PRINTER;".to_string()),
            ),
        ],
        print_addr: sim.print_addr.clone(),
        asked: asked.clone(),
    };
    let mut attachments = UsbAttachments::new(rig.plugins.clone(), rig.table.clone(), Vec::new());
    attachments.rescan(&mut bus);
    attachments.rescan(&mut bus);

    let zebra = rig
        .table
        .get("usb-0a5f-0141-z1")
        .expect("the Zebra is attached");
    assert_eq!(zebra.spec().plugin.name(), "zebra");
    assert_eq!(zebra.spec().model.as_deref(), Some("ZD620"));
    for (id, model) in [
        ("usb-2d37-0001-g1", "RW403B"),
        ("usb-2d37-0002-g2", "3B-363B"),
    ] {
        let printer = rig.table.get(id).expect("the TSPL printer is attached");
        assert_eq!(printer.spec().plugin.name(), "tspl");
        assert_eq!(printer.spec().model.as_deref(), Some(model));
    }
    assert!(
        rig.table.get("usb-1234-5678-p1").is_err(),
        "no plugin matches PCL"
    );
    assert_eq!(attachments.attached_ids().len(), 3);

    let mut asked = asked.lock().expect("test lock").clone();
    asked.sort();
    assert_eq!(
        asked,
        vec![
            "1234:5678:P1".to_string(),
            "2d37:0001:G1".to_string(),
            "2d37:0002:G2".to_string()
        ],
        "only unclaimed printers are opened for their ID, once each"
    );
}

#[test]
fn devicehub_plugins_lists_the_tspl_usb_ids_and_ieee1284_rules() {
    let dir = support::plugins_folder(&[TSPL]);
    let config = dir.path().join("devicehub.toml");
    std::fs::write(&config, support::trust_toml()).expect("config trusting the test key");
    let run = |json: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_devicehub"));
        command
            .args(["--config", config.to_str().expect("utf-8 path")])
            .args(["--plugins-dir", dir.path().to_str().expect("utf-8 path")])
            .arg("plugins")
            .env("DEVICEHUB_CONFIG", "/nonexistent/devicehub.toml");
        if json {
            command.arg("--json");
        }
        let out = command.output().expect("run devicehub");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let listing: serde_json::Value = serde_json::from_slice(&run(true)).expect("JSON");
    let tspl = &listing["plugins"][0];
    assert_eq!(tspl["name"], "tspl");
    assert_eq!(tspl["usb_ids"][1]["usb_id"], "1203:0160");
    assert_eq!(
        tspl["ieee1284_rules"][0],
        json!({
            "manufacturer": "Printer",
            "model_prefix": "Thermal Printer",
            "command_set": "XPP",
            "profile": "tspl-203",
        })
    );
    let text = String::from_utf8(run(false)).expect("UTF-8 listing");
    assert!(
        text.contains("IEEE-1284 MFG:Printer MDL:Thermal Printer... CMD:XPP  tspl-203")
            && text.contains("IEEE-1284 MFG:* MDL:* CMD:TSPL  tspl-203"),
        "{text}"
    );
}
