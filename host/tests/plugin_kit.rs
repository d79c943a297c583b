//! The plugin author's kit end to end: the template plugin and the ESC/POS plugin grown from
//! it load from disk through the host's loader, match their printers by USB and IEEE-1284 ID,
//! and the labels the host renders come back dot for dot from the `GS v 0` bands they encode,
//! both decoded here and printed over TCP into the ESC/POS simulator, which also reports
//! faults through the real-time status.

use devicehub::{
    devices::{self, Connection, DeviceSpec, DeviceTable},
    plugins::{PluginSet, Selection},
    print::{self, PrintOptions},
    render::MonoBitmap,
};

use devicehub_plugin_api::{ErrorKind, PrinterState};
use serde_json::json;

use crate::support::{self, Simulator};

/// The template plugin's library (crate name with underscores).
const TEMPLATE: &str = "devicehub_plugin_template";
/// The ESC/POS plugin's library.
const ESCPOS: &str = "devicehub_driver_escpos";

fn load() -> (tempfile::TempDir, PluginSet) {
    let dir = support::plugins_folder(&[TEMPLATE, ESCPOS]);
    let set = PluginSet::load_dir(dir.path(), Selection::AllLibraries, &support::test_trust());
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    (dir, set)
}

fn spec(set: &PluginSet, plugin: &str, profile: &str) -> DeviceSpec {
    let chosen = devices::choose_plugin(set, None, Some(plugin)).expect("loaded");
    DeviceSpec {
        id: format!("{plugin}-printer"),
        kind: chosen.plugin.manifest.kind,
        plugin: chosen.plugin,
        profile: profile.to_string(),
        model: None,
        usb_id: None,
        connection: None,
        settings: Vec::new(),
    }
}

/// Reads an ESC/POS stream as a printer would for the commands these plugins send: `ESC @`,
/// `GS v 0` bands stacked into one label until a `GS V` cut ends it. Panics on anything else.
fn decode_labels(mut bytes: &[u8]) -> Vec<MonoBitmap> {
    let mut labels = Vec::new();
    let mut current: Option<MonoBitmap> = None;
    while !bytes.is_empty() {
        match bytes {
            [0x1B, b'@', rest @ ..] => bytes = rest,
            [0x1D, b'v', b'0', 0, xl, xh, yl, yh, rest @ ..] => {
                let stride = usize::from(u16::from_le_bytes([*xl, *xh]));
                let rows = usize::from(u16::from_le_bytes([*yl, *yh]));
                let (band, rest) = rest.split_at(stride * rows);
                let label = current.get_or_insert_with(|| MonoBitmap::new(stride as u32 * 8, 0));
                assert_eq!(label.stride(), stride, "every band of a label is as wide");
                label.data.extend_from_slice(band);
                label.height += rows as u32;
                bytes = rest;
            }
            [0x1D, b'V', b'A' | b'B', _, rest @ ..] => {
                labels.push(current.take().expect("a cut after a label"));
                bytes = rest;
            }
            other => panic!("unexpected bytes {:02X?}", &other[..other.len().min(8)]),
        }
    }
    assert!(current.is_none(), "the last label was not cut off");
    labels
}

/// `expected` widened to whole bytes, as `GS v 0` sends it (its padding bits are white).
fn padded(expected: &MonoBitmap) -> MonoBitmap {
    MonoBitmap {
        width: expected.stride() as u32 * 8,
        height: expected.height,
        data: expected.data.clone(),
    }
}

#[test]
fn the_kit_plugins_load_from_disk_and_match_their_printers() {
    let (_dir, set) = load();
    let mut names: Vec<&str> = set.plugins.iter().map(|p| p.name()).collect();
    names.sort();
    assert_eq!(names, ["escpos", "template"]);

    let tm_l100 = set.lookup_usb(0x04B8, 0x0E31, None).expect("TM-L100");
    assert_eq!(
        (
            tm_l100.plugin.name(),
            tm_l100.model.as_str(),
            tm_l100.profile.as_str()
        ),
        ("escpos", "TM-L100", "escpos-80mm")
    );
    // Both claim the TM-T20 at the same support level: the name sorting first wins, and the
    // conflict is reported.
    assert_eq!(
        set.lookup_usb(0x04B8, 0x0E03, None)
            .map(|b| b.plugin.name()),
        Some("escpos")
    );
    assert!(set
        .conflicts
        .iter()
        .any(|c| c.product_id == 0x0E03 && c.losers == ["template"]));

    for (device_id, profile) in [
        (
            "MFG:EPSON;CMD:ESC/POS;MDL:TM-T88V;CLS:PRINTER;",
            "escpos-80mm",
        ),
        ("MFG:Xprinter;MDL:XP-58;CMD:ESC/POS;", "escpos-58mm"),
        (
            "MFG:Printer;MDL:POS-80;CMD:ESC/POS;CLS:PRINTER;",
            "escpos-80mm",
        ),
    ] {
        let (plugin, chosen) = set.lookup_ieee1284(device_id).expect(device_id);
        assert_eq!(
            (plugin.name(), chosen.as_str()),
            ("escpos", profile),
            "{device_id}"
        );
    }
    assert!(set
        .lookup_ieee1284("MFG:Zebra;MDL:ZD620;CMD:ZPL;")
        .is_none());
}

#[test]
fn escpos_and_template_labels_decode_to_what_the_host_rendered() {
    let (_dir, set) = load();
    for (plugin, profile_name) in [
        ("escpos", "escpos-80mm"),
        ("escpos", "escpos-58mm"),
        ("template", "template-80mm"),
    ] {
        let spec = spec(&set, plugin, profile_name);
        let profile = spec.printer_profile().expect("profile").clone();
        for fixture in ["label.png", "indicia.gif", "two-page.pdf"] {
            let file = std::fs::read(support::fixture(fixture)).expect("fixture");
            let prepared =
                print::prepare_job(&file, &profile, &PrintOptions::default()).expect("prepared");
            let bytes = devices::encode_offline(&spec, &prepared.job).expect("encoded");
            let labels = decode_labels(&bytes);
            let expected = support::render_for(
                &support::fixture(fixture),
                profile.dpi,
                profile.width_dots,
                profile.max_length_dots,
            );
            let what = format!("{plugin} {profile_name} {fixture}");
            assert_eq!(labels.len(), expected.len(), "{what}: labels");
            for (page, (got, want)) in labels.iter().zip(&expected).enumerate() {
                support::assert_same_bitmap(&padded(want), got, &format!("{what} page {page}"));
            }
        }
    }
}

/// Prints through the ESC/POS plugin over TCP into the ESC/POS simulator: every label comes out
/// as the host rendered it, a fault refuses the job with the condition named and nothing
/// printed, and the job goes through once the fault clears.
#[tokio::test]
async fn escpos_prints_into_the_simulator_and_stops_on_faults() {
    let sim = Simulator::start("escpos", &[]);
    let (_dir, set) = load();
    let table = DeviceTable::default();
    let chosen = devices::choose_plugin(&set, Some((0x04B8, 0x0E31)), None).expect("TM-L100");
    let spec = DeviceSpec {
        id: "tm-l100".to_string(),
        kind: chosen.plugin.manifest.kind,
        plugin: chosen.plugin,
        profile: chosen.profile.expect("the model's profile"),
        model: chosen.model,
        usb_id: Some((0x04B8, 0x0E31)),
        connection: Some(Connection::Tcp(sim.print_addr.clone())),
        settings: vec![devicehub_plugin_api::Setting::new("band_rows", "100")],
    };
    let transport = devices::open_transport(spec.connection.as_ref().expect("tcp"), None)
        .expect("a TCP transport");
    let printer = table.attach(spec, transport).expect("attached");
    let profile = printer.spec().printer_profile().expect("profile").clone();
    assert_eq!(
        printer.printer_status_async().await.expect("status").state,
        PrinterState::Ready
    );

    let mut printed = 0;
    for fixture in ["label.png", "two-page.pdf"] {
        let file = std::fs::read(support::fixture(fixture)).expect("fixture");
        let options = PrintOptions {
            copies: 2,
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
        assert_eq!(report.labels as usize, expected.len() * 2, "{fixture}");
        let labels = sim.labels().await;
        assert_eq!(labels.len(), printed + expected.len() * 2, "{fixture}");
        // Copies are sent as labels of their own, all copies of a page before the next page.
        for (page, want) in expected.iter().enumerate() {
            for copy in 0..2 {
                let index = printed + page * 2 + copy;
                assert_eq!(labels[index]["encoding"], json!("GS v 0"));
                assert_eq!(labels[index]["settings"]["cut"], json!("full"));
                assert_eq!(labels[index]["clipped"], json!(false));
                let got = sim.label_bitmap(index).await;
                support::assert_same_bitmap(
                    &padded(want),
                    &got,
                    &format!("{fixture} page {page} copy {copy}"),
                );
            }
        }
        printed = labels.len();
    }

    let label = std::fs::read(support::fixture("indicia.gif")).expect("fixture");
    let job = print::prepare_job(&label, &profile, &PrintOptions::default()).expect("prepared");
    for (fault, state, words) in [
        ("paper_out", PrinterState::PaperOut, "paper out"),
        ("head_open", PrinterState::HeadOpen, "cover open"),
        ("paused", PrinterState::Paused, "offline"),
    ] {
        sim.set_faults(json!({ fault: true })).await;
        let status = printer.printer_status_async().await.expect("status");
        assert_eq!(status.state, state, "{fault}");
        let err = printer
            .print_async(job.job.clone())
            .await
            .expect_err("refused");
        let plugin_error = err.plugin_error().expect("a plugin error");
        assert_eq!(plugin_error.kind, ErrorKind::NotReady, "{fault}");
        assert_eq!(plugin_error.printer_state.into_option(), Some(state));
        assert!(plugin_error.message.contains(words), "{fault}: {err}");
        assert_eq!(
            sim.labels().await.len(),
            printed,
            "{fault}: nothing printed"
        );
    }
    sim.set_faults(json!({})).await;
    printer
        .print_async(job.job)
        .await
        .expect("printed after the fault cleared");
    assert_eq!(sim.labels().await.len(), printed + 1);
    assert!(sim.errors().await.is_empty());
    table.shutdown();
}
