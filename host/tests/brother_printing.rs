//! Printing through the real Brother QL plugin library into the Brother QL simulator over TCP,
//! comparing the label the simulator decoded (the right way round, as it leaves the printer)
//! with what the host rendered, dot for dot; and the status, media and fault paths.

use std::sync::Arc;

use devicehub::{
    devices::{self, Connection, DeviceSpec, DeviceTable, DeviceWorker},
    plugins::{PluginSet, Selection},
    print::{self, PrintOptions},
    render::MonoBitmap,
};
use devicehub_plugin_api::{
    abi_stable::std_types::ROption, ErrorKind, MediaKind, MediaRequest, PrinterState, Setting,
};
use serde_json::json;

use crate::support::{self, Simulator};

/// The plugin library's crate name.
const BROTHER_QL: &str = "devicehub_driver_brother_ql";
/// QL-820NWB (profile `ql-810w`) and QL-1100 (profile `ql-1100`) USB IDs.
const QL_820NWB: (u16, u16) = (0x04F9, 0x209D);
const QL_1100: (u16, u16) = (0x04F9, 0x20A7);

struct Rig {
    _plugins_dir: tempfile::TempDir,
    plugins: PluginSet,
    table: DeviceTable,
}

impl Rig {
    fn new() -> Rig {
        let dir = support::plugins_folder(&[BROTHER_QL]);
        let plugins =
            PluginSet::load_dir(dir.path(), Selection::AllLibraries, &support::test_trust());
        assert!(plugins.refused.is_empty(), "{:?}", plugins.refused);
        Rig {
            _plugins_dir: dir,
            plugins,
            table: DeviceTable::default(),
        }
    }

    /// Attaches the printer with `usb_id` at the simulator's print port.
    fn attach(&self, sim: &Simulator, usb_id: (u16, u16)) -> Arc<DeviceWorker> {
        self.attach_with(sim, usb_id, &[])
    }

    /// [`Rig::attach`] with device settings.
    fn attach_with(
        &self,
        sim: &Simulator,
        usb_id: (u16, u16),
        settings: &[(&str, &str)],
    ) -> Arc<DeviceWorker> {
        let chosen = devices::choose_plugin(&self.plugins, Some(usb_id), None).unwrap();
        let spec = DeviceSpec {
            id: format!("brother-{:04x}", usb_id.1),
            kind: chosen.plugin.manifest.kind,
            plugin: chosen.plugin,
            profile: chosen.profile.expect("the USB table names a profile"),
            model: chosen.model,
            usb_id: Some(usb_id),
            connection: Some(Connection::Tcp(sim.print_addr.clone())),
            settings: settings.iter().map(|(k, v)| Setting::new(k, v)).collect(),
        };
        let transport = devices::open_transport(spec.connection.as_ref().unwrap(), None).unwrap();
        self.table.attach(spec, transport).unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.table.shutdown();
    }
}

/// The rendered page on a label of `width` x `height` dots: at the top left, white elsewhere,
/// as the plugin places a page narrower or shorter than the roll's printable area.
fn on_label(page: &MonoBitmap, width: u32, height: u32) -> MonoBitmap {
    let mut label = MonoBitmap::new(width, height);
    for y in 0..page.height.min(height) {
        for x in 0..page.width.min(width) {
            if page.get(x, y) {
                label.set(x, y, true);
            }
        }
    }
    label
}

/// The simulator's `GET /status`.
async fn sim_status(sim: &Simulator) -> serde_json::Value {
    support::http_client()
        .get(format!("{}/status", sim.control))
        .send()
        .await
        .expect("GET /status")
        .json()
        .await
        .expect("status JSON")
}

/// Prints `fixture` and checks every label the simulator recorded: pages in order, copies
/// collated, each page on a `label_width` label of `label_height` dots (0: the page's height).
async fn print_and_compare(
    sim: &Simulator,
    printer: &DeviceWorker,
    fixture: &str,
    copies: u32,
    (label_width, label_height): (u32, u32),
    expected_encoding: &str,
) {
    let before = sim.labels().await.len();
    let file = std::fs::read(support::fixture(fixture)).unwrap();
    let profile = printer.spec().printer_profile().unwrap().clone();
    let options = PrintOptions {
        copies,
        ..PrintOptions::default()
    };
    let prepared = print::prepare_job(&file, &profile, &options).unwrap();
    let report = printer.print_async(prepared.job).await.unwrap();
    let pages = support::render_for(
        &support::fixture(fixture),
        300,
        profile.width_dots,
        profile.max_length_dots,
    );
    let labels = pages.len() * copies as usize;
    assert_eq!(
        report.labels as usize, labels,
        "{fixture}: {}",
        report.detail
    );

    let recorded = sim.labels().await;
    assert_eq!(
        recorded.len(),
        before + labels,
        "{fixture}: labels recorded"
    );
    for copy in 0..copies as usize {
        for (page, want) in pages.iter().enumerate() {
            let index = before + copy * pages.len() + page;
            let meta = &recorded[index];
            assert_eq!(meta["copies"], json!(1), "{fixture} label {index}");
            assert_eq!(
                meta["encoding"],
                json!(expected_encoding),
                "{fixture} label {index}: line encoding"
            );
            assert_eq!(meta["clipped"], json!(false), "{fixture} label {index}");
            let height = if label_height == 0 {
                want.height.max(150)
            } else {
                label_height
            };
            let got = sim.label_bitmap(index).await;
            support::assert_same_bitmap(
                &on_label(want, label_width, height),
                &got,
                &format!("{fixture} copy {copy} page {page}"),
            );
        }
    }
}

#[tokio::test]
async fn gif_indicia_and_pdf_label_print_pixel_exact_on_62_mm_tape() {
    let sim = Simulator::start("brother-ql", &["--model", "ql-820nwb", "--media", "62"]);
    let rig = Rig::new();
    let printer = rig.attach(&sim, QL_820NWB);
    let status = printer.printer_status_async().await.unwrap();
    assert_eq!(status.state, PrinterState::Ready, "{}", status.detail);
    let media = status.media.into_option().expect("the loaded roll");
    assert_eq!(media.description.as_str(), "62 mm continuous tape");
    assert_eq!((media.kind, media.width_dots), (MediaKind::Continuous, 696));

    // The indicium is thresholded at one image pixel per dot; the 4 x 6 in PDF is scaled to
    // the tape's 696 printable dots.
    print_and_compare(&sim, &printer, "indicia.gif", 1, (696, 0), "PackBits").await;
    print_and_compare(&sim, &printer, "label-4x6.pdf", 1, (696, 0), "PackBits").await;
    assert!(sim.errors().await.is_empty());
}

#[tokio::test]
async fn multi_page_pdf_prints_every_copy_collated() {
    let sim = Simulator::start("brother-ql", &["--model", "ql-820nwb", "--media", "62"]);
    let rig = Rig::new();
    let printer = rig.attach(&sim, QL_820NWB);
    print_and_compare(&sim, &printer, "two-page.pdf", 2, (696, 0), "PackBits").await;
    assert!(sim.errors().await.is_empty());
}

#[tokio::test]
async fn ql_1100_prints_wide_lines_on_102_mm_tape_and_102_x_152_labels() {
    let sim = Simulator::start("brother-ql", &["--model", "ql-1100", "--media", "102"]);
    let rig = Rig::new();
    let printer = rig.attach(&sim, QL_1100);
    print_and_compare(&sim, &printer, "label-4x6.pdf", 1, (1164, 0), "PackBits").await;

    let sim = Simulator::start("brother-ql", &["--model", "ql-1100", "--media", "102x152"]);
    let printer = rig.attach(&sim, QL_1100);
    let status = printer.printer_status_async().await.unwrap();
    let media = status.media.into_option().expect("the loaded roll");
    assert_eq!(media.description.as_str(), "102 x 152 mm die-cut labels");
    assert_eq!((media.width_dots, media.length_dots), (1164, 1660));
    // Die-cut labels always come out whole: the page sits at the top of a 1164 x 1660 label.
    print_and_compare(&sim, &printer, "label.png", 1, (1164, 1660), "PackBits").await;
    print_and_compare(&sim, &printer, "indicia.gif", 2, (1164, 1660), "PackBits").await;
    assert!(sim.errors().await.is_empty());
}

async fn assert_fault_stops_the_job(fault: &str, state: PrinterState, words: &str) {
    let sim = Simulator::start("brother-ql", &["--model", "ql-820nwb", "--media", "62"]);
    let rig = Rig::new();
    let printer = rig.attach(&sim, QL_820NWB);
    assert_eq!(
        printer.printer_status_async().await.unwrap().state,
        PrinterState::Ready
    );

    sim.set_faults(json!({ fault: true })).await;
    let status = printer.printer_status_async().await.unwrap();
    assert_eq!(status.state, state, "{fault}: {}", status.detail);
    assert!(status.detail.contains(words), "{}", status.detail);

    let file = std::fs::read(support::fixture("indicia.gif")).unwrap();
    let profile = printer.spec().printer_profile().unwrap().clone();
    let job = print::prepare_job(&file, &profile, &PrintOptions::default()).unwrap();
    let err = printer.print_async(job.job.clone()).await.unwrap_err();
    let plugin_error = err.plugin_error().expect("the plugin refused the job");
    assert_eq!(plugin_error.kind, ErrorKind::NotReady);
    assert_eq!(plugin_error.printer_state.into_option(), Some(state));
    assert!(
        err.to_string().contains(state.as_str()) && err.to_string().contains(words),
        "the error names the fault: {err}"
    );
    assert!(
        sim.labels().await.is_empty(),
        "nothing printed while faulted"
    );
    assert!(sim.errors().await.is_empty(), "the job was never sent");

    // Cleared, the same job prints.
    sim.set_faults(json!({})).await;
    let report = printer.print_async(job.job).await.unwrap();
    assert_eq!(report.labels, 1);
}

#[tokio::test]
async fn cover_open_surfaces_as_status_and_print_error() {
    assert_fault_stops_the_job("head_open", PrinterState::HeadOpen, "cover open").await;
}

#[tokio::test]
async fn no_media_surfaces_as_status_and_print_error() {
    assert_fault_stops_the_job("paper_out", PrinterState::PaperOut, "no media").await;
}

#[tokio::test]
async fn a_job_that_does_not_fit_the_loaded_roll_is_refused_before_any_byte_is_sent() {
    // A QL-1100 with 62 mm tape: the host renders for the head's 102 mm.
    let sim = Simulator::start("brother-ql", &["--model", "ql-1100", "--media", "62"]);
    let rig = Rig::new();
    let printer = rig.attach(&sim, QL_1100);
    let file = std::fs::read(support::fixture("label-4x6.pdf")).unwrap();
    let profile = printer.spec().printer_profile().unwrap().clone();
    let prepared = print::prepare_job(&file, &profile, &PrintOptions::default()).unwrap();
    // The status request the plugin sends first: invalidate (200 bytes), ESC @, ESC i S.
    let status_request = 200 + 2 + 3;

    let before = sim_status(&sim).await["counters"]["bytes_received"].clone();
    let err = printer.print_async(prepared.job.clone()).await.unwrap_err();
    let plugin_error = err.plugin_error().expect("the plugin refused the job");
    assert_eq!(plugin_error.kind, ErrorKind::MediaMismatch);
    assert!(
        plugin_error
            .message
            .starts_with("loaded 62 mm continuous tape; job needs a print 99 mm wide"),
        "{}",
        plugin_error.message
    );
    let after = sim_status(&sim).await["counters"]["bytes_received"].clone();
    assert_eq!(
        after.as_u64().unwrap() - before.as_u64().unwrap(),
        status_request,
        "only the status request reached the printer"
    );

    let mut shipping = prepared.job;
    shipping.media = ROption::RSome(MediaRequest {
        kind: MediaKind::DieCut,
        width_dots: 1200,
        length_dots: 1800,
    });
    let err = printer.print_async(shipping).await.unwrap_err();
    assert_eq!(
        err.plugin_error().map(|e| e.message.to_string()),
        Some("loaded 62 mm continuous tape; job needs 102 x 152 mm die-cut".to_string())
    );
    assert!(sim.labels().await.is_empty());
    assert!(sim.errors().await.is_empty(), "no job reached the printer");
}

#[tokio::test]
async fn a_connection_dropped_mid_job_fails_the_job_and_the_next_job_reconnects() {
    let sim = Simulator::start("brother-ql", &["--model", "ql-820nwb", "--media", "62"]);
    let rig = Rig::new();
    let printer = rig.attach(&sim, QL_820NWB);
    let file = std::fs::read(support::fixture("label-4x6.pdf")).unwrap();
    let profile = printer.spec().printer_profile().unwrap().clone();
    let job = print::prepare_job(&file, &profile, &PrintOptions::default()).unwrap();

    // Let the status request (400 + 2 + 3 bytes) and the job's invalidate and initialize
    // (400 + 2) through, then cut the job 2000 bytes into its first page.
    sim.set_faults(json!({ "drop_after_bytes": 405 + 402 + 2000 }))
        .await;
    let err = printer.print_async(job.job.clone()).await.unwrap_err();
    let kind = err.plugin_error().map(|e| e.kind);
    assert_eq!(
        kind,
        Some(ErrorKind::Transport),
        "a dropped connection: {err}"
    );
    assert!(sim.labels().await.is_empty(), "a cut job is not a label");
    let errors = sim.errors().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["kind"], "incomplete");

    let report = printer.print_async(job.job).await.unwrap();
    assert_eq!(report.labels, 1);
    assert_eq!(sim.labels().await.len(), 1);
}

#[tokio::test]
async fn a_network_printer_that_never_answers_is_printed_to_without_status() {
    // A QL on its network port sends nothing back; the simulator plays that with --silent.
    let sim = Simulator::start(
        "brother-ql",
        &["--model", "ql-820nwb", "--media", "62x100", "--silent"],
    );
    let rig = Rig::new();
    let printer = rig.attach_with(
        &sim,
        QL_820NWB,
        &[("media", "62x100"), ("status_timeout_ms", "300")],
    );
    let file = std::fs::read(support::fixture("indicia.gif")).unwrap();
    let profile = printer.spec().printer_profile().unwrap().clone();
    let job = print::prepare_job(&file, &profile, &PrintOptions::default()).unwrap();

    let report = printer.print_async(job.job.clone()).await.unwrap();
    assert_eq!(report.labels, 1);
    assert!(
        report.detail.contains("62 x 100 mm die-cut labels")
            && report.detail.contains("status not available"),
        "{}",
        report.detail
    );
    // The second job is sent straight away: only its own bytes reach the printer.
    let before = sim_status(&sim).await["counters"]["bytes_received"]
        .as_u64()
        .unwrap();
    let report = printer.print_async(job.job).await.unwrap();
    // The job ends when its bytes are written; the simulator counts them as it reads them, so
    // wait (bounded) until it has read them all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let received = loop {
        let after = sim_status(&sim).await["counters"]["bytes_received"]
            .as_u64()
            .unwrap();
        if after - before >= report.bytes_sent || std::time::Instant::now() > deadline {
            break after - before;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(received, report.bytes_sent);

    let page = &support::render_for(&support::fixture("indicia.gif"), 300, 696, 11811)[0];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sim.labels().await.len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(sim.labels().await.len(), 2);
    support::assert_same_bitmap(
        &on_label(page, 696, 1109),
        &sim.label_bitmap(1).await,
        "indicia on 62 x 100 mm labels",
    );
    let status = printer.printer_status_async().await.unwrap();
    assert_eq!(status.state, PrinterState::Ready);
    assert!(
        status.detail.contains("does not report its status"),
        "{}",
        status.detail
    );
}
