//! The plugin run in-process against scripted serial answers, byte sequences taken from the
//! MT-SICS reference manual and the NCI protocol documents.

use std::{
    thread::JoinHandle,
    time::{Duration, Instant},
};

use devicehub_plugin_api::{
    testing::{ScriptHandle, ScriptedTransport},
    ErrorKind, OpenRequest, Scale, ScaleState, Setting, WeightUnit,
};

use crate::driver::{self, SerialScale, MT_SICS, NCI};

fn open(profile: &str, settings: &[(&str, &str)]) -> (SerialScale, ScriptHandle) {
    let (transport, script) = ScriptedTransport::new("serial scale");
    let request = OpenRequest {
        device_id: "bench".into(),
        profile: profile.into(),
        model: None.into(),
        settings: settings
            .iter()
            .map(|(k, v)| Setting::new(k, v))
            .collect::<Vec<_>>()
            .into(),
    };
    // Short pauses keep the motion tests quick; the defaults suit real scales.
    let mut all = vec![Setting::new("poll_interval_ms", "1")];
    all.extend(request.settings.iter().cloned());
    let request = OpenRequest {
        settings: all.into(),
        ..request
    };
    let scale = driver::open(&request, transport.into_box()).expect("open");
    (scale, script)
}

/// Answers the n-th occurrence of `command` with `replies[n]`, like a scale whose load is
/// settling; a background thread watches what the plugin writes.
fn answer_in_turn(script: &ScriptHandle, command: &[u8], replies: &[&[u8]]) -> JoinHandle<()> {
    let script = script.clone();
    let command = command.to_vec();
    let replies: Vec<Vec<u8>> = replies.iter().map(|r| r.to_vec()).collect();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        for (n, reply) in replies.iter().enumerate() {
            while count(&script.written(), &command) <= n {
                assert!(Instant::now() < deadline, "the plugin stopped asking");
                std::thread::sleep(Duration::from_millis(1));
            }
            script.push_read(reply);
        }
    })
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

// ---------------------------------------------------------------------------------------------
// MT-SICS

#[test]
fn mt_sics_stable_weights_in_every_unit_are_exact() {
    for (reply, micrograms, resolution, unit) in [
        (
            &b"S S     100.00 g\r\n"[..],
            100_000_000,
            10_000,
            WeightUnit::Gram,
        ),
        (
            b"S S     12.345 kg\r\n",
            12_345_000_000,
            1_000_000,
            WeightUnit::Kilogram,
        ),
        (
            b"S S     1250.0 mg\r\n",
            1_250_000,
            100,
            WeightUnit::Milligram,
        ),
        (
            b"S S       5.30 oz\r\n",
            150_252_473,
            283_495,
            WeightUnit::Ounce,
        ),
        (
            b"S S      1.250 lb\r\n",
            566_990_463,
            453_592,
            WeightUnit::Pound,
        ),
        (b"S S       2.50 ct\r\n", 500_000, 2_000, WeightUnit::Gram),
    ] {
        let (mut scale, script) = open(MT_SICS, &[]);
        script.reply_when(b"SI\r\n", reply);
        let reading = scale.read(1000).unwrap();
        assert_eq!(
            (
                reading.state,
                reading.micrograms,
                reading.resolution_micrograms,
                reading.display_unit
            ),
            (ScaleState::Stable, micrograms, resolution, unit),
            "{}",
            String::from_utf8_lossy(reply)
        );
        assert_eq!(
            reading.detail.as_str(),
            String::from_utf8_lossy(reply).trim_end()
        );
    }
}

#[test]
fn mt_sics_zero_and_negative_weights() {
    let (mut scale, script) = open(MT_SICS, &[]);
    script.reply_when(b"SI\r\n", b"S S       0.00 g\r\n");
    assert_eq!(scale.read(1000).unwrap().state, ScaleState::StableAtZero);
    let (mut scale, script) = open(MT_SICS, &[]);
    script.reply_when(b"SI\r\n", b"S S     -12.50 g\r\n");
    let reading = scale.read(1000).unwrap();
    assert_eq!(reading.state, ScaleState::UnderZero);
    assert_eq!(reading.micrograms, -12_500_000);
}

#[test]
fn mt_sics_motion_waits_until_stable() {
    let (mut scale, script) = open(MT_SICS, &[]);
    let balance = answer_in_turn(
        &script,
        b"SI\r\n",
        &[
            b"S D     129.07 g\r\n",
            b"S D     100.12 g\r\n",
            b"S S     100.00 g\r\n",
        ],
    );
    let reading = scale.read(5000).unwrap();
    balance.join().unwrap();
    assert_eq!(reading.state, ScaleState::Stable);
    assert_eq!(reading.micrograms, 100_000_000);
}

#[test]
fn mt_sics_motion_past_the_timeout_returns_the_last_reading() {
    let (mut scale, script) = open(MT_SICS, &[]);
    script.reply_when(b"SI\r\n", b"S D     129.07 g\r\n");
    let reading = scale.read(50).unwrap();
    assert_eq!(reading.state, ScaleState::InMotion);
    assert_eq!(reading.micrograms, 129_070_000);
}

#[test]
fn mt_sics_overload_and_underload_are_readings() {
    let (mut scale, script) = open(MT_SICS, &[]);
    let balance = answer_in_turn(&script, b"SI\r\n", &[b"S S       1.00 lb\r\n", b"S +\r\n"]);
    scale.read(1000).unwrap();
    let reading = scale.read(1000).unwrap();
    balance.join().unwrap();
    assert_eq!(reading.state, ScaleState::OverCapacity);
    // The unit of the last weight seen is kept.
    assert_eq!(reading.display_unit, WeightUnit::Pound);
    let (mut scale, script) = open(MT_SICS, &[]);
    script.reply_when(b"SI\r\n", b"S -\r\n");
    assert_eq!(scale.read(1000).unwrap().state, ScaleState::UnderZero);
}

#[test]
fn mt_sics_refusals_are_errors() {
    for (reply, kind, words) in [
        (&b"ES\r\n"[..], ErrorKind::Protocol, "ES"),
        (b"ET\r\n", ErrorKind::Transport, "parity"),
        (b"EL\r\n", ErrorKind::NotReady, "EL"),
        (b"S S 1.00 st\r\n", ErrorKind::Protocol, "\"st\""),
        (b"garbage\r\n", ErrorKind::Protocol, "garbage"),
    ] {
        let (mut scale, script) = open(MT_SICS, &[]);
        script.reply_when(b"SI\r\n", reply);
        let err = scale.read(1000).unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        assert!(err.message.contains(words), "{err}");
    }
}

#[test]
fn mt_sics_busy_until_the_timeout_is_not_ready() {
    let (mut scale, script) = open(MT_SICS, &[]);
    script.reply_when(b"SI\r\n", b"S I\r\n");
    let err = scale.read(30).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotReady);
    assert!(err.message.contains("S I"), "{err}");
}

#[test]
fn mt_sics_silence_is_a_timeout() {
    let (mut scale, _script) = open(MT_SICS, &[("answer_timeout_ms", "10")]);
    assert_eq!(scale.read(30).unwrap_err().kind, ErrorKind::Timeout);
}

#[test]
fn mt_sics_late_answers_are_drained_before_the_next_command() {
    let (mut scale, script) = open(MT_SICS, &[]);
    // A reply to an earlier command that arrived after its timeout.
    script.push_read(b"S S     999.99 g\r\n");
    script.reply_when(b"SI\r\n", b"S S       1.00 g\r\n");
    assert_eq!(scale.read(1000).unwrap().micrograms, 1_000_000);
}

#[test]
fn mt_sics_zero() {
    for (reply, result) in [
        (&b"Z A\r\n"[..], None),
        (b"Z I\r\n", Some(ErrorKind::NotReady)),
        (b"Z +\r\n", Some(ErrorKind::NotReady)),
        (b"Z -\r\n", Some(ErrorKind::NotReady)),
        (b"ES\r\n", Some(ErrorKind::Protocol)),
    ] {
        let (mut scale, script) = open(MT_SICS, &[]);
        script.reply_when(b"Z\r\n", reply);
        assert_eq!(scale.zero().err().map(|e| e.kind), result, "{reply:?}");
        assert_eq!(script.written(), b"Z\r\n");
    }
}

// ---------------------------------------------------------------------------------------------
// NCI

#[test]
fn nci_stable_weights_in_every_unit_are_exact() {
    for (answer, micrograms, resolution, unit) in [
        (
            &b"\n0001.25lb\r\n00\r\x03"[..],
            566_990_463,
            4_535_924,
            WeightUnit::Pound,
        ),
        (
            b"\n0005.3oz\r\n00\r\x03",
            150_252_473,
            2_834_952,
            WeightUnit::Ounce,
        ),
        (
            b"\n012.345kg\r\n00\r\x03",
            12_345_000_000,
            1_000_000,
            WeightUnit::Kilogram,
        ),
        (
            b"\n 1234g \r\n00\r\x03",
            1_234_000_000,
            1_000_000,
            WeightUnit::Gram,
        ),
        (
            b"\n  2lb  3.5oz\r\n00\r\x03",
            1_006_408_071,
            2_834_952,
            WeightUnit::Pound,
        ),
    ] {
        let (mut scale, script) = open(NCI, &[]);
        script.reply_when(b"W\r", answer);
        let reading = scale.read(1000).unwrap();
        assert_eq!(
            (
                reading.state,
                reading.micrograms,
                reading.resolution_micrograms,
                reading.display_unit
            ),
            (ScaleState::Stable, micrograms, resolution, unit),
            "{answer:?}"
        );
    }
}

#[test]
fn nci_status_bits_set_the_state() {
    for (answer, state) in [
        (&b"\n0000.00lb\r\n20\r\x03"[..], ScaleState::StableAtZero),
        (b"\n0001.00lb\r\n10\r\x03", ScaleState::InMotion),
        (b"\n^^^^^^^lb\r\n02\r\x03", ScaleState::OverCapacity),
        (b"\n0031.00lb\r\n02\r\x03", ScaleState::OverCapacity),
        (b"\n-------\r\n01\r\x03", ScaleState::UnderZero),
        (b"\n-000.50lb\r\n00\r\x03", ScaleState::UnderZero),
        (b"\n-------\r\n40\r\x03", ScaleState::Fault),
        (b"\n-------\r\n80\r\x03", ScaleState::Fault),
        (b"\n-------\r\n04\r\x03", ScaleState::Fault),
        (b"\n0001.00lb\r\n08\r\x03", ScaleState::NeedsCalibration),
    ] {
        let (mut scale, script) = open(NCI, &[]);
        script.reply_when(b"W\r", answer);
        let reading = scale.read(20).unwrap_or_else(|e| panic!("{answer:?}: {e}"));
        assert_eq!(reading.state, state, "{answer:?}");
    }
}

#[test]
fn nci_motion_waits_until_stable() {
    let (mut scale, script) = open(NCI, &[]);
    let bench = answer_in_turn(
        &script,
        b"W\r",
        &[
            b"\n0001.31lb\r\n10\r\x03",
            b"\n0001.26lb\r\n10\r\x03",
            b"\n0001.25lb\r\n00\r\x03",
        ],
    );
    let reading = scale.read(5000).unwrap();
    bench.join().unwrap();
    assert_eq!(reading.state, ScaleState::Stable);
    assert_eq!(reading.micrograms, 566_990_463);
}

#[test]
fn nci_high_resolution_uses_h() {
    let (mut scale, script) = open(NCI, &[("high_resolution", "true")]);
    script.reply_when(b"H\r", b"\n001.250lb\r\n00\r\x03");
    let reading = scale.read(1000).unwrap();
    assert_eq!(reading.resolution_micrograms, 453_592);
    assert_eq!(script.written(), b"H\r");
}

#[test]
fn nci_unrecognised_commands_and_garbage_are_protocol_errors() {
    for answer in [
        &b"\n?\r\x03"[..],
        b"\r?\n",
        b"\n12.5\r\n00\r\x03",
        b"\n0001.00lb\r\nAB\r\x03",
    ] {
        let (mut scale, script) = open(NCI, &[]);
        script.reply_when(b"W\r", answer);
        assert_eq!(
            scale.read(1000).unwrap_err().kind,
            ErrorKind::Protocol,
            "{answer:?}"
        );
    }
}

#[test]
fn nci_zero() {
    for (answer, result) in [
        (&b"\n20\r\x03"[..], None),
        (b"\n00\r\x03", None),
        (b"\n10\r\x03", Some(ErrorKind::NotReady)),
        (b"\n02\r\x03", Some(ErrorKind::NotReady)),
        (b"\n40\r\x03", Some(ErrorKind::NotReady)),
        (b"\n?\r\x03", Some(ErrorKind::Protocol)),
    ] {
        let (mut scale, script) = open(NCI, &[]);
        script.reply_when(b"Z\r", answer);
        assert_eq!(scale.zero().err().map(|e| e.kind), result, "{answer:?}");
        assert_eq!(script.written(), b"Z\r");
    }
}

#[test]
fn nci_silence_is_a_timeout() {
    let (mut scale, _script) = open(NCI, &[("answer_timeout_ms", "10")]);
    assert_eq!(scale.read(30).unwrap_err().kind, ErrorKind::Timeout);
}

// ---------------------------------------------------------------------------------------------
// Opening

#[test]
fn bad_profiles_and_settings_are_refused() {
    for (profile, settings) in [
        ("zpl-203", vec![]),
        (NCI, vec![("high_resolution", "yes")]),
        (MT_SICS, vec![("poll_interval_ms", "soon")]),
    ] {
        let (transport, _script) = ScriptedTransport::new("serial scale");
        let request = OpenRequest {
            device_id: "bench".into(),
            profile: profile.into(),
            model: None.into(),
            settings: settings
                .iter()
                .map(|(k, v)| Setting::new(k, v))
                .collect::<Vec<_>>()
                .into(),
        };
        assert_eq!(
            driver::open(&request, transport.into_box())
                .unwrap_err()
                .kind,
            ErrorKind::InvalidJob
        );
    }
}

#[test]
fn manifest_names_both_profiles() {
    let manifest = driver::manifest();
    assert_eq!(manifest.name.as_str(), "serial-scale");
    assert_eq!(manifest.kind, devicehub_plugin_api::DeviceKind::Scale);
    assert!(manifest.description.contains("mt-sics") && manifest.description.contains("nci"));
    assert!(manifest.usb_models.is_empty());
}
