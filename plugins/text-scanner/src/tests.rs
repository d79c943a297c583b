//! The plugin run in-process against scripted devices: serial text in the ways pen scanners
//! and OCR desk applications send it, and keyboard reports as a keyboard-wedge scanner types.

use std::time::{Duration, Instant};

use devicehub_plugin_api::{
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RResult, RSlice, RVec},
    },
    testing::{ScriptHandle, ScriptedTransport},
    ErrorKind, GrayImage, OpenRequest, ScannedText, Scanner, Setting, Transport, TransportBox,
    TransportError, TransportInfo, TransportKind,
};

use crate::{
    driver::{self, TextScanner, HID_KEYBOARD, SERIAL},
    keyboard::tests::type_text,
};

fn open(profile: &str, settings: &[(&str, &str)]) -> (TextScanner, ScriptHandle) {
    let (transport, script) = ScriptedTransport::new("text scanner");
    let request = OpenRequest {
        device_id: "desk".into(),
        profile: profile.into(),
        model: None.into(),
        settings: settings
            .iter()
            .map(|(k, v)| Setting::new(k, v))
            .collect::<Vec<_>>()
            .into(),
    };
    let scanner = driver::open(&request, transport.into_box()).expect("open");
    (scanner, script)
}

fn lines(text: &ScannedText) -> Vec<String> {
    text.lines.iter().map(|l| l.to_string()).collect()
}

/// Polls until a block arrives, for at most ten seconds.
fn next_block(scanner: &mut TextScanner) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(text) = scanner.poll(100).expect("poll") {
            return lines(&text);
        }
        assert!(Instant::now() < deadline, "no block within 10 s");
    }
}

#[test]
fn a_serial_block_ending_with_an_empty_line_is_delivered_whole() {
    let (mut scanner, script) = open(SERIAL, &[("idle_ms", "0")]);
    assert!(scanner.poll(20).expect("poll").is_none());
    script.push_read(b"Jane Roe\r\nACME Shipping\r\n");
    // Part of a block is not a block, however long it waits.
    assert!(scanner.poll(50).expect("poll").is_none());
    script.push_read(b"1 Main St\r\nSpringfield IL 62701\r\n\r\n");
    assert_eq!(
        next_block(&mut scanner),
        [
            "Jane Roe",
            "ACME Shipping",
            "1 Main St",
            "Springfield IL 62701"
        ]
    );
    assert!(script.written().is_empty(), "a text scanner is only read");
}

#[test]
fn two_blocks_in_one_read_come_one_poll_each() {
    let (mut scanner, script) = open(SERIAL, &[]);
    script.push_read(b"A One\r\nB Two\r\n\r\nC Three\r\n\r\n");
    assert_eq!(next_block(&mut scanner), ["A One", "B Two"]);
    assert_eq!(next_block(&mut scanner), ["C Three"]);
}

#[test]
fn the_terminator_setting_ends_blocks() {
    let (mut scanner, script) = open(SERIAL, &[("terminator", "etx"), ("idle_ms", "0")]);
    script.push_read(b"\x02Max Mustermann\r\nHauptstra\xdfe 1\r\n10115 Berlin\x03");
    assert_eq!(
        next_block(&mut scanner),
        ["Max Mustermann", "Hauptstrasse 1", "10115 Berlin"]
    );
}

#[test]
fn an_idle_gap_ends_a_block_without_an_end_mark() {
    let (mut scanner, script) = open(SERIAL, &[("idle_ms", "30")]);
    script.push_read(b"Jean-Fran\xc3\xa7ois L\xc3\xa9ger\r\n12 rue de l'\xc3\x89glise");
    assert_eq!(
        next_block(&mut scanner),
        ["Jean-Francois Leger", "12 rue de l'Eglise"]
    );
}

#[test]
fn bounded_blocks_keep_the_first_lines() {
    let (mut scanner, script) = open(
        SERIAL,
        &[
            ("max_lines", "2"),
            ("max_line_length", "8"),
            ("idle_ms", "0"),
        ],
    );
    script.push_read(b"Alexandra Longname\r\nLine two\r\nLine three\r\n\r\n");
    assert_eq!(next_block(&mut scanner), ["Alexandr", "Line two"]);
}

#[test]
fn keyboard_wedge_reports_type_the_block() {
    let (mut scanner, script) = open(HID_KEYBOARD, &[("idle_ms", "0")]);
    for report in type_text("John Smith\rPO Box 42\rAnytown, NY 10001\r\r") {
        script.push_report(&report);
    }
    assert_eq!(
        next_block(&mut scanner),
        ["John Smith", "PO Box 42", "Anytown, NY 10001"]
    );
}

#[test]
fn an_unplugged_scanner_is_a_transport_error() {
    let (mut scanner, script) = open(SERIAL, &[]);
    script.disconnect();
    let err = scanner.poll(100).expect_err("disconnected");
    assert_eq!(err.kind, ErrorKind::Transport);
}

#[test]
fn bad_settings_and_profiles_are_refused_by_name() {
    for (profile, settings, named) in [
        ("laser", vec![], "laser"),
        (SERIAL, vec![("terminator", "A")], "terminator"),
        (SERIAL, vec![("terminator", "0x0d")], "terminator"),
        (SERIAL, vec![("idle_ms", "soon")], "idle_ms"),
    ] {
        let (transport, _script) = ScriptedTransport::new("text scanner");
        let request = OpenRequest {
            device_id: "desk".into(),
            profile: profile.into(),
            model: None.into(),
            settings: settings
                .iter()
                .map(|(k, v)| Setting::new(k, v))
                .collect::<Vec<_>>()
                .into(),
        };
        let err = driver::open(&request, transport.into_box()).expect_err("refused");
        assert_eq!(err.kind, ErrorKind::InvalidJob);
        assert!(err.message.contains(named), "{}", err.message);
    }
}

#[test]
fn images_are_refused_as_unsupported() {
    let (mut scanner, _script) = open(SERIAL, &[]);
    let image = GrayImage {
        width: 1,
        height: 1,
        pixels: vec![255].into(),
    };
    let err = scanner.recognize(&image).expect_err("unsupported");
    assert_eq!(err.kind, ErrorKind::Unsupported);
}

/// A transport that only says what it is attached to, for checking which profiles open on it.
struct KindOnly(TransportKind);

impl Transport for KindOnly {
    fn info(&self) -> TransportInfo {
        TransportInfo {
            kind: self.0,
            description: "kind only".into(),
            ieee1284_id: None.into(),
        }
    }
    fn write(&mut self, _data: RSlice<'_, u8>) -> RResult<(), TransportError> {
        RResult::ROk(())
    }
    fn read(&mut self, _max_len: u32, _timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        RResult::ROk(RVec::new())
    }
    fn write_report(&mut self, _report: RSlice<'_, u8>) -> RResult<(), TransportError> {
        RResult::ROk(())
    }
    fn read_report(&mut self, _timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        RResult::ROk(RVec::new())
    }
}

#[test]
fn a_profile_that_cannot_read_the_transport_is_refused_naming_the_right_one() {
    for (profile, kind, opens, named) in [
        (SERIAL, TransportKind::Hid, false, HID_KEYBOARD),
        (HID_KEYBOARD, TransportKind::Serial, false, SERIAL),
        (HID_KEYBOARD, TransportKind::Tcp, false, SERIAL),
        (HID_KEYBOARD, TransportKind::Hid, true, ""),
        (SERIAL, TransportKind::Serial, true, ""),
    ] {
        let request = OpenRequest {
            device_id: "desk".into(),
            profile: profile.into(),
            model: None.into(),
            settings: RVec::new(),
        };
        let transport = TransportBox::from_value(KindOnly(kind), TD_Opaque);
        match driver::open(&request, transport) {
            Ok(_) => assert!(opens, "{profile} opened on {kind:?}"),
            Err(err) => {
                assert!(!opens, "{profile} refused on {kind:?}: {}", err.message);
                assert_eq!(err.kind, ErrorKind::InvalidJob);
                assert!(err.message.contains(named), "{}", err.message);
            }
        }
    }
}
