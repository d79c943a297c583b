//! Printing through the real DYMO plugin library into the LabelWriter simulator over TCP, for a
//! 450 (raster protocol) and a 5XL (550 series protocol): pages compared dot for dot with what
//! the host rendered, copies, multi-page PDFs, paper out, labels that do not fit, dropped links.

use std::sync::Arc;

use devicehub::{
    devices::{self, Connection, DeviceSpec, DeviceTable, DeviceWorker},
    plugins::{PluginSet, Selection},
    print::{self, PrintOptions},
    render::MonoBitmap,
};
use devicehub_plugin_api::{ErrorKind, PrinterState};
use serde_json::json;

use crate::support::{self, Simulator};

/// The DYMO plugin's library name.
const DYMO: &str = "devicehub_driver_dymo";

/// A model as the simulator plays it and the plugin drives it.
struct Model {
    /// `--model` of `devicehub-emulator printer dymo`.
    simulator: &'static str,
    /// A USB ID from the plugin's table.
    usb_id: (u16, u16),
    /// The plugin profile.
    profile: &'static str,
    /// The simulator's label language.
    language: &'static str,
    /// Print head width in dots: the width of every label the simulator records.
    head_dots: u32,
}

const LW450: Model = Model {
    simulator: "450",
    usb_id: (0x0922, 0x0020),
    profile: "lw450",
    language: "lw-raster",
    head_dots: 672,
};

const LW5XL: Model = Model {
    simulator: "5xl",
    usb_id: (0x0922, 0x002A),
    profile: "lw5xl",
    language: "lw550",
    head_dots: 1248,
};

struct Rig {
    _plugins_dir: tempfile::TempDir,
    plugins: PluginSet,
    table: DeviceTable,
}

impl Rig {
    fn new() -> Rig {
        let dir = support::plugins_folder(&[DYMO]);
        let plugins =
            PluginSet::load_dir(dir.path(), Selection::AllLibraries, &support::test_trust());
        assert!(plugins.refused.is_empty(), "{:?}", plugins.refused);
        Rig {
            _plugins_dir: dir,
            plugins,
            table: DeviceTable::default(),
        }
    }

    /// Attaches the model at the simulator's print port.
    fn attach(&self, sim: &Simulator, model: &Model) -> Arc<DeviceWorker> {
        let chosen = devices::choose_plugin(&self.plugins, Some(model.usb_id), None)
            .expect("the DYMO plugin claims the USB ID");
        assert_eq!(chosen.profile.as_deref(), Some(model.profile));
        let spec = DeviceSpec {
            id: format!("dymo-{}", model.profile),
            kind: chosen.plugin.manifest.kind,
            plugin: chosen.plugin,
            profile: model.profile.to_string(),
            model: chosen.model,
            usb_id: Some(model.usb_id),
            connection: Some(Connection::Tcp(sim.print_addr.clone())),
            settings: Vec::new(),
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

fn start(model: &Model) -> Simulator {
    Simulator::start("dymo", &["--model", model.simulator])
}

/// `page` as the printer burns it: the head's full width, the page's lines from its left edge.
fn on_head(page: &MonoBitmap, head_dots: u32) -> MonoBitmap {
    let mut label = MonoBitmap::new(head_dots, page.height);
    let (from, to) = (page.stride(), label.stride());
    for y in 0..page.height as usize {
        label.data[y * to..y * to + from].copy_from_slice(&page.data[y * from..(y + 1) * from]);
    }
    label
}

fn prepare(printer: &DeviceWorker, fixture: &str, copies: u32) -> devicehub_plugin_api::PrintJob {
    let file = std::fs::read(support::fixture(fixture)).unwrap();
    let profile = printer.spec().printer_profile().unwrap().clone();
    let options = PrintOptions {
        copies,
        ..PrintOptions::default()
    };
    print::prepare_job(&file, &profile, &options).unwrap().job
}

/// Prints `fixture` with `copies` and checks every label the simulator recorded: pages in
/// order, each page `copies` times, dot for dot.
async fn print_and_compare(
    sim: &Simulator,
    printer: &DeviceWorker,
    model: &Model,
    fixture: &str,
    copies: u32,
) {
    let before = sim.labels().await.len();
    let report = printer
        .print_async(prepare(printer, fixture, copies))
        .await
        .unwrap();
    let profile = printer.spec().printer_profile().unwrap().clone();
    let pages = support::render_for(
        &support::fixture(fixture),
        profile.dpi,
        profile.width_dots,
        profile.max_length_dots,
    );
    let labels = sim.labels().await;
    let expected = pages.len() * copies as usize;
    assert_eq!(
        report.labels as usize, expected,
        "{fixture}: labels reported"
    );
    assert_eq!(
        labels.len(),
        before + expected,
        "{fixture}: labels recorded"
    );
    for (page_index, page) in pages.iter().enumerate() {
        let want = on_head(page, model.head_dots);
        for copy in 0..copies as usize {
            let index = before + page_index * copies as usize + copy;
            assert_eq!(labels[index]["language"], json!(model.language));
            let got = sim.label_bitmap(index).await;
            support::assert_same_bitmap(
                &want,
                &got,
                &format!("{fixture} page {page_index} copy {copy}"),
            );
        }
    }
}

#[tokio::test]
async fn lw450_prints_gif_indicia_and_pdf_label_pixel_exact_with_copies() {
    let sim = start(&LW450);
    let rig = Rig::new();
    let printer = rig.attach(&sim, &LW450);
    print_and_compare(&sim, &printer, &LW450, "indicia.gif", 2).await;
    print_and_compare(&sim, &printer, &LW450, "label-4x6.pdf", 1).await;
    print_and_compare(&sim, &printer, &LW450, "two-page.pdf", 2).await;
    assert!(sim.errors().await.is_empty());
}

#[tokio::test]
async fn lw5xl_prints_gif_indicia_and_multi_page_pdf_pixel_exact() {
    let sim = start(&LW5XL);
    let rig = Rig::new();
    let printer = rig.attach(&sim, &LW5XL);
    let status = printer.printer_status_async().await.unwrap();
    assert_eq!(status.state, PrinterState::Ready, "{}", status.detail);
    let media = status
        .media
        .into_option()
        .expect("the 5XL reports its roll");
    assert_eq!(
        media.description.as_str(),
        "104 x 159 mm labels (SKU 1744907)"
    );
    print_and_compare(&sim, &printer, &LW5XL, "indicia.gif", 1).await;
    print_and_compare(&sim, &printer, &LW5XL, "label-4x6.pdf", 3).await;
    print_and_compare(&sim, &printer, &LW5XL, "two-page.pdf", 1).await;
    assert!(sim.errors().await.is_empty());
}

async fn assert_paper_out_stops_the_job(model: &Model) {
    let sim = start(model);
    let rig = Rig::new();
    let printer = rig.attach(&sim, model);
    sim.set_faults(json!({ "paper_out": true })).await;
    let status = printer.printer_status_async().await.unwrap();
    assert_eq!(status.state, PrinterState::PaperOut, "{}", status.detail);

    let err = printer
        .print_async(prepare(&printer, "indicia.gif", 1))
        .await
        .unwrap_err();
    let plugin_error = err.plugin_error().expect("the plugin refused the job");
    assert_eq!(plugin_error.kind, ErrorKind::NotReady);
    assert_eq!(
        plugin_error.printer_state.into_option(),
        Some(PrinterState::PaperOut)
    );
    assert!(err.to_string().contains("paper out"), "{err}");
    assert!(sim.labels().await.is_empty(), "nothing printed");
    let held = support::http_client()
        .get(format!("{}/status", sim.control))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(held["held_labels"], 0, "no label bytes were sent");

    sim.set_faults(json!({})).await;
    printer
        .print_async(prepare(&printer, "indicia.gif", 1))
        .await
        .unwrap();
    assert_eq!(sim.labels().await.len(), 1);
}

#[tokio::test]
async fn paper_out_surfaces_as_status_and_print_error() {
    assert_paper_out_stops_the_job(&LW450).await;
    assert_paper_out_stops_the_job(&LW5XL).await;
}

#[tokio::test]
async fn a_550_refuses_jobs_the_loaded_labels_cannot_take_before_printing() {
    let sim = start(&LW5XL);
    let rig = Rig::new();
    let printer = rig.attach(&sim, &LW5XL);
    sim.set_faults(json!({ "loaded_media": { "width_mm": 54, "length_mm": 101 } }))
        .await;
    let status = printer.printer_status_async().await.unwrap();
    let media = status.media.into_option().expect("the roll is reported");
    assert_eq!(media.description.as_str(), "54 x 101 mm labels (SKU 99014)");

    let err = printer
        .print_async(prepare(&printer, "label-4x6.pdf", 1))
        .await
        .unwrap_err();
    let plugin_error = err.plugin_error().expect("the plugin refused the job");
    assert_eq!(plugin_error.kind, ErrorKind::MediaMismatch);
    assert!(
        plugin_error
            .message
            .contains("loaded 54 x 101 mm labels (SKU 99014); job needs 102 x 152 mm"),
        "{}",
        plugin_error.message
    );
    assert!(sim.labels().await.is_empty(), "nothing printed");
    assert!(sim.errors().await.is_empty(), "no job reached the printer");

    // The refusal released the printer: a job that fits prints at once.
    print_and_compare(&sim, &printer, &LW5XL, "indicia.gif", 1).await;

    // Labels without DYMO's tag: the printer reports them counterfeit and the job is refused.
    sim.set_faults(
        json!({ "loaded_media": { "width_mm": 104, "length_mm": 159, "unrecognized": true } }),
    )
    .await;
    let err = printer
        .print_async(prepare(&printer, "indicia.gif", 1))
        .await
        .unwrap_err();
    let plugin_error = err.plugin_error().expect("the plugin refused the job");
    assert_eq!(plugin_error.kind, ErrorKind::NotReady);
    assert_eq!(
        plugin_error.printer_state.into_option(),
        Some(PrinterState::Error)
    );
    assert!(
        plugin_error.message.contains("not DYMO labels"),
        "{}",
        plugin_error.message
    );
    assert_eq!(sim.labels().await.len(), 1, "nothing more printed");
    assert!(sim.errors().await.is_empty(), "no job reached the printer");
}

async fn assert_dropped_connection_fails_the_job_and_the_next_reconnects(model: &Model) {
    let sim = start(model);
    let rig = Rig::new();
    let printer = rig.attach(&sim, model);
    // Let the status requests through, then cut the job in its first label's data. The status
    // asked after the job must not quietly reconnect: a fresh connection would answer "ready"
    // for a job that was cut.
    sim.set_faults(json!({ "drop_after_bytes": 600 })).await;
    let err = printer
        .print_async(prepare(&printer, "label-4x6.pdf", 1))
        .await
        .unwrap_err();
    let kind = err.plugin_error().map(|e| e.kind);
    assert!(
        matches!(kind, Some(ErrorKind::Transport) | Some(ErrorKind::NotReady)),
        "a dropped connection fails the job: {err}"
    );
    assert!(sim.labels().await.is_empty(), "a cut job is not a label");
    let errors = sim.errors().await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["kind"], "incomplete");

    print_and_compare(&sim, &printer, model, "label-4x6.pdf", 1).await;
}

#[tokio::test]
async fn a_connection_dropped_mid_job_fails_the_job_and_the_next_job_reconnects() {
    assert_dropped_connection_fails_the_job_and_the_next_reconnects(&LW450).await;
    assert_dropped_connection_fails_the_job_and_the_next_reconnects(&LW5XL).await;
}

#[tokio::test]
async fn a_550_busy_with_another_hosts_job_refuses_ours_until_it_ends() {
    use std::io::{Read, Write};

    let sim = start(&LW5XL);
    let rig = Rig::new();
    let printer = rig.attach(&sim, &LW5XL);
    // Another host starts job 77 and keeps its connection open.
    let mut other = std::net::TcpStream::connect(&sim.print_addr).unwrap();
    other
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    other
        .write_all(&[0x1B, b's', 77, 0, 0, 0, 0x1B, b'A', 0])
        .unwrap();
    let mut status = [0u8; 32];
    other.read_exact(&mut status).unwrap();
    assert_eq!(status[0], 1, "the other job holds the printer");

    let err = printer
        .print_async(prepare(&printer, "indicia.gif", 1))
        .await
        .unwrap_err();
    let plugin_error = err.plugin_error().expect("the plugin refused the job");
    assert_eq!(plugin_error.kind, ErrorKind::NotReady);
    assert_eq!(
        plugin_error.printer_state.into_option(),
        Some(PrinterState::Busy)
    );
    assert!(
        plugin_error.message.contains("job 77"),
        "{}",
        plugin_error.message
    );
    assert!(sim.labels().await.is_empty());

    // The other host finishes; ours prints.
    other.write_all(&[0x1B, b'Q']).unwrap();
    other.write_all(&[0x1B, b'A', 0]).unwrap();
    other.read_exact(&mut status).unwrap();
    assert_eq!(status[0], 0, "the printer is free");
    print_and_compare(&sim, &printer, &LW5XL, "indicia.gif", 1).await;
}
