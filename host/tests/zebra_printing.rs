//! Printing through the real Zebra plugin library into the Zebra simulator over TCP, comparing
//! what the simulator decoded with what the host rendered, dot for dot.

use std::sync::Arc;

use devicehub::{
    devices::{self, Connection, DeviceSpec, DeviceTable, DeviceWorker},
    plugins::{PluginSet, Selection},
    print::{self, PrintOptions},
};
use devicehub_plugin_api::{ErrorKind, PrinterState, Setting};
use serde_json::json;

use crate::support::{self, Simulator, ZEBRA};

struct Rig {
    _plugins_dir: tempfile::TempDir,
    plugins: PluginSet,
    table: DeviceTable,
}

impl Rig {
    fn new() -> Rig {
        let dir = support::plugins_folder(&[ZEBRA]);
        let plugins =
            PluginSet::load_dir(dir.path(), Selection::AllLibraries, &support::test_trust());
        assert!(plugins.refused.is_empty(), "{:?}", plugins.refused);
        Rig {
            _plugins_dir: dir,
            plugins,
            table: DeviceTable::default(),
        }
    }

    /// Attaches a Zebra printer at the simulator's print port.
    fn attach(
        &self,
        sim: &Simulator,
        profile: &str,
        settings: &[(&str, &str)],
    ) -> Arc<DeviceWorker> {
        let chosen = devices::choose_plugin(&self.plugins, Some((0x0A5F, 0x0141)), None).unwrap();
        let spec = DeviceSpec {
            id: format!("zebra-{profile}"),
            kind: chosen.plugin.manifest.kind,
            plugin: chosen.plugin,
            profile: profile.to_string(),
            model: chosen.model,
            usb_id: Some((0x0A5F, 0x0141)),
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

/// Prints `fixture` and checks every page and copy count the simulator recorded.
async fn print_and_compare(
    sim: &Simulator,
    printer: &DeviceWorker,
    fixture: &str,
    copies: u32,
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
    let expected = support::render_for_zebra(&support::fixture(fixture));
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
        assert_eq!(
            meta["copies"],
            json!(copies),
            "{fixture} page {page}: copies"
        );
        assert_eq!(
            meta["encoding"],
            json!(expected_encoding),
            "{fixture} page {page}: graphic encoding"
        );
        let got = sim.label_bitmap(index).await;
        support::assert_same_bitmap(want, &got, &format!("{fixture} page {page}"));
    }
}

#[tokio::test]
async fn zpl_z64_prints_gif_png_and_pdf_pixel_exact() {
    let sim = Simulator::zebra(&["--language", "zpl"]);
    let rig = Rig::new();
    let printer = rig.attach(&sim, "zpl-203", &[("compression", "z64")]);
    for fixture in ["indicia.gif", "label.png", "label-4x6.pdf"] {
        print_and_compare(&sim, &printer, fixture, 1, "Z64").await;
    }
    assert!(sim.errors().await.is_empty());
}

#[tokio::test]
async fn zpl_acs_prints_gif_png_and_multi_page_pdf_pixel_exact() {
    let sim = Simulator::zebra(&["--language", "zpl"]);
    let rig = Rig::new();
    let printer = rig.attach(&sim, "zpl-203", &[("compression", "acs")]);
    for fixture in ["indicia.gif", "label.png", "two-page.pdf"] {
        print_and_compare(&sim, &printer, fixture, 2, "ACS").await;
    }
    assert!(sim.errors().await.is_empty());
}

#[tokio::test]
async fn epl2_prints_gif_and_pdf_pixel_exact() {
    let sim = Simulator::zebra(&["--language", "epl2"]);
    let rig = Rig::new();
    let printer = rig.attach(&sim, "epl2-203", &[]);
    for fixture in ["indicia.gif", "label-4x6.pdf"] {
        print_and_compare(&sim, &printer, fixture, 3, "EPL2").await;
    }
    assert!(sim.errors().await.is_empty());
}

async fn assert_fault_stops_the_job(
    language: &str,
    profile: &str,
    fault: &str,
    state: PrinterState,
) {
    let sim = Simulator::zebra(&["--language", language]);
    let rig = Rig::new();
    let printer = rig.attach(&sim, profile, &[]);
    assert_eq!(
        printer.printer_status_async().await.unwrap().state,
        PrinterState::Ready
    );

    sim.set_faults(json!({ fault: true })).await;
    let status = printer.printer_status_async().await.unwrap();
    assert_eq!(status.state, state, "{language} {fault}: {}", status.detail);

    let file = std::fs::read(support::fixture("indicia.gif")).unwrap();
    let profile = printer.spec().printer_profile().unwrap().clone();
    let job = print::prepare_job(&file, &profile, &PrintOptions::default()).unwrap();
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
}

#[tokio::test]
async fn paper_out_surfaces_as_status_and_print_error() {
    assert_fault_stops_the_job("zpl", "zpl-203", "paper_out", PrinterState::PaperOut).await;
    assert_fault_stops_the_job("epl2", "epl2-203", "paper_out", PrinterState::PaperOut).await;
}

#[tokio::test]
async fn head_open_surfaces_as_status_and_print_error() {
    assert_fault_stops_the_job("zpl", "zpl-203", "head_open", PrinterState::HeadOpen).await;
    assert_fault_stops_the_job("epl2", "epl2-203", "head_open", PrinterState::HeadOpen).await;
}

#[tokio::test]
async fn paused_printer_refuses_the_job() {
    assert_fault_stops_the_job("zpl", "zpl-203", "paused", PrinterState::Paused).await;
}

#[tokio::test]
async fn a_connection_dropped_mid_job_fails_the_job_and_the_next_job_reconnects() {
    let sim = Simulator::zebra(&["--language", "zpl"]);
    let rig = Rig::new();
    let printer = rig.attach(&sim, "zpl-203", &[("compression", "acs")]);
    let file = std::fs::read(support::fixture("label-4x6.pdf")).unwrap();
    let profile = printer.spec().printer_profile().unwrap().clone();
    let job = print::prepare_job(&file, &profile, &PrintOptions::default()).unwrap();

    // Let the status request through, then cut the job after 200 bytes.
    sim.set_faults(json!({ "drop_after_bytes": 203 })).await;
    let err = printer.print_async(job.job.clone()).await.unwrap_err();
    let kind = err.plugin_error().map(|e| e.kind);
    assert!(
        matches!(kind, Some(ErrorKind::Transport) | Some(ErrorKind::NotReady)),
        "a dropped connection fails the job: {err}"
    );
    assert!(sim.labels().await.is_empty(), "a cut job is not a label");

    let report = printer.print_async(job.job).await.unwrap();
    assert_eq!(report.labels, 1);
    assert_eq!(sim.labels().await.len(), 1);
}
