//! Loading plugins from a folder: the good ones load, every bad file is refused with one line,
//! and a panicking plugin is contained.

use devicehub::{
    devices::{self, DeviceSpec, DeviceTable},
    plugins::{PluginSet, Selection},
    print::{self, PrintOptions},
    transport::{self, capture::CaptureTransport},
};
use devicehub_plugin_api::ErrorKind;

use crate::support::{self, INCOMPATIBLE, NOT_A_PLUGIN, PANICKING, ZEBRA};

fn refusal<'a>(set: &'a PluginSet, file_part: &str) -> &'a str {
    let refused = set
        .refused
        .iter()
        .find(|r| r.path.to_string_lossy().contains(file_part))
        .unwrap_or_else(|| panic!("{file_part} was not refused: {:?}", set.refused));
    assert!(
        !refused.reason.contains('\n') && refused.reason.len() < 200,
        "reason is not one short line: {:?}",
        refused.reason
    );
    &refused.reason
}

#[test]
fn bad_files_are_refused_one_line_each_and_the_rest_load() {
    let dir = support::plugins_folder(&[ZEBRA, PANICKING, INCOMPATIBLE, NOT_A_PLUGIN]);
    std::fs::write(dir.path().join("notes.so"), b"this is not a library\n").unwrap();
    let zebra = std::fs::read(support::library(ZEBRA)).unwrap();
    std::fs::write(dir.path().join("truncated.so"), &zebra[..zebra.len() / 2]).unwrap();
    // Files with other extensions are not candidates at all.
    std::fs::write(dir.path().join("README.txt"), b"plugins go here").unwrap();
    // Signed, so that each refusal is about what the file is, not about trust.
    support::sign_folder(dir.path());

    let set = PluginSet::load_dir(dir.path(), Selection::AllLibraries, &support::test_trust());

    let mut names: Vec<&str> = set.plugins.iter().map(|p| p.name()).collect();
    names.sort();
    assert_eq!(names, ["panicking", "zebra"]);
    assert!(refusal(&set, "incompatible").contains("incompatible plugin API"));
    assert!(refusal(&set, "not_a_plugin").contains("not a DeviceHub plugin"));
    assert!(refusal(&set, "notes.so").contains("not a shared library"));
    assert!(refusal(&set, "truncated.so").contains("truncated"));
    assert_eq!(set.refused.len(), 4, "{:?}", set.refused);
    assert!(set.lookup_usb(0x0A5F, 0x0141, None).is_some());
}

#[test]
fn a_duplicate_plugin_is_refused() {
    let dir = support::plugins_folder(&[ZEBRA]);
    std::fs::copy(support::library(ZEBRA), dir.path().join("zebra-copy.so")).unwrap();
    support::sign_folder(dir.path());
    let set = PluginSet::load_dir(dir.path(), Selection::AllLibraries, &support::test_trust());
    assert_eq!(set.plugins.len(), 1);
    assert!(refusal(&set, "zebra").contains("duplicate of plugin 'zebra'"));
}

#[test]
fn a_missing_folder_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let set = PluginSet::load_dir(
        &dir.path().join("nope"),
        Selection::AllLibraries,
        &support::test_trust(),
    );
    assert!(set.plugins.is_empty());
    assert!(set.refused[0]
        .reason
        .contains("cannot read the plugins folder"));
}

fn spec_for(set: &PluginSet, plugin: &str, id: &str) -> DeviceSpec {
    let chosen = devices::choose_plugin(set, None, Some(plugin)).unwrap();
    DeviceSpec {
        id: id.to_string(),
        kind: chosen.plugin.manifest.kind,
        profile: chosen
            .plugin
            .manifest
            .default_profile
            .clone()
            .unwrap()
            .to_string(),
        plugin: chosen.plugin,
        model: None,
        usb_id: None,
        connection: None,
        settings: Vec::new(),
    }
}

#[test]
fn a_panicking_plugin_fails_its_job_and_the_host_and_other_plugins_carry_on() {
    let dir = support::plugins_folder(&[ZEBRA, PANICKING]);
    let set = PluginSet::load_dir(dir.path(), Selection::AllLibraries, &support::test_trust());
    let table = DeviceTable::default();

    let bad = table
        .attach(
            spec_for(&set, "panicking", "bad"),
            transport::boxed(CaptureTransport::new()),
        )
        .unwrap();
    let profile = bad.spec().printer_profile().unwrap().clone();
    let label = std::fs::read(support::fixture("indicia.gif")).unwrap();
    let job = print::prepare_job(&label, &profile, &PrintOptions::default()).unwrap();

    let err = bad.print(job.job.clone()).unwrap_err();
    let plugin_error = err.plugin_error().expect("a plugin error");
    assert_eq!(plugin_error.kind, ErrorKind::Panic);
    assert!(plugin_error.message.contains("print exploded"), "{err}");
    // The device thread survived the panic and answers the next call.
    let err = bad.printer_status().unwrap_err();
    assert!(err.to_string().contains("status exploded"), "{err}");

    // Another plugin in the same process still works.
    let capture = CaptureTransport::new();
    let mut zebra_spec = spec_for(&set, "zebra", "good");
    zebra_spec.settings = vec![devicehub_plugin_api::Setting::new("check_status", "false")];
    let good = table
        .attach(zebra_spec, transport::boxed(capture.clone()))
        .unwrap();
    let report = good.print(job.job).unwrap();
    assert_eq!(report.labels, 1);
    assert!(capture.written().starts_with(b"^XA"));
    table.shutdown();
}

#[test]
fn a_rescan_keeps_loaded_plugins_and_asks_for_a_restart_for_changed_files() {
    let dir = support::plugins_folder(&[ZEBRA]);
    let trust = support::test_trust();
    let set = PluginSet::load_dir(dir.path(), Selection::AllLibraries, &trust);
    assert_eq!(set.plugins.len(), 1, "{:?}", set.refused);
    let zebra = set.plugins[0].clone();

    // Nothing changed: nothing new, the same plugin kept.
    let (same, added) = set.rescan(&trust);
    assert!(added.is_empty());
    assert!(std::sync::Arc::ptr_eq(&same.plugins[0], &zebra));
    assert!(same.refused.is_empty(), "{:?}", same.refused);

    // The loaded file replaced by other (validly signed) bytes: the running code stays, and the
    // change waits for a restart.
    // A new file (new inode), as an installer writes it: the mapped library stays intact.
    let file = zebra.path.clone();
    std::fs::remove_file(&file).expect("remove");
    std::fs::copy(support::library("devicehub_driver_tspl"), &file).expect("replace");
    support::sign_folder(dir.path());
    let (changed, added) = same.rescan(&trust);
    assert!(added.is_empty());
    assert_eq!(changed.plugins.len(), 1);
    assert!(std::sync::Arc::ptr_eq(&changed.plugins[0], &zebra));
    let reason = refusal(&changed, "zebra");
    assert!(
        reason.contains("restart DeviceHub to use version 0.1.0"),
        "{reason}"
    );
}

#[test]
fn a_second_file_of_a_loaded_plugin_waits_for_a_restart() {
    let dir = support::plugins_folder(&[ZEBRA]);
    let trust = support::test_trust();
    let set = PluginSet::load_dir(dir.path(), Selection::AllLibraries, &trust);
    std::fs::copy(support::library(ZEBRA), dir.path().join("zebra-newer.so")).expect("copy");
    support::sign_folder(dir.path());
    let (next, added) = set.rescan(&trust);
    assert!(added.is_empty());
    assert_eq!(next.plugins.len(), 1);
    assert!(refusal(&next, "zebra-newer.so").contains("is already loaded from"));
}
