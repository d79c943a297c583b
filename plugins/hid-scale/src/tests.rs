//! The plugin run in-process against scripted HID reports: every status, unit and exponent the
//! report can carry, decoded through the real driver and checked against an exact oracle
//! written independently of the driver's own conversion table.

use devicehub_plugin_api::{
    testing::{ScriptHandle, ScriptedTransport},
    ErrorKind, OpenRequest, PluginError, Scale, ScaleReading, ScaleState, WeightUnit,
};

use crate::driver::{self, HidScale, PROFILE};

fn request() -> OpenRequest {
    OpenRequest {
        device_id: "test-scale".into(),
        profile: PROFILE.into(),
        model: None.into(),
        settings: Vec::new().into(),
    }
}

/// An open scale whose stale first report has already been consumed.
fn scale() -> (HidScale, ScriptHandle) {
    let (transport, script) = ScriptedTransport::new("hid scale");
    let mut scale = driver::open(&request(), transport.into_box()).expect("open");
    script.push_report(&[3, 2, 2, 0, 0, 0]);
    script.push_report(&[3, 2, 2, 0, 0, 0]);
    let first = scale.read(0).expect("first read");
    assert_eq!(first.state, ScaleState::StableAtZero);
    (scale, script)
}

fn report(status: u8, unit: u8, exponent: i8, raw: u16) -> [u8; 6] {
    let [low, high] = raw.to_le_bytes();
    [3, status, unit, exponent.to_le_bytes()[0], low, high]
}

/// Unit sizes in micrograms, written as decimals from the definitions (not from the driver's
/// fractions): `None` for the units the driver must refuse.
fn unit_size(code: u8) -> Option<&'static str> {
    match code {
        1 => Some("1000"),
        2 => Some("1000000"),
        3 => Some("1000000000"),
        4 => Some("200000"),
        5 => None,
        6 => Some("64798.91"),
        7 => Some("1555173.84"),
        8 => Some("1000000000000"),
        9 => None,
        10 => Some("31103476.8"),
        11 => Some("28349523.125"),
        12 => Some("453592370"),
        _ => unreachable!("unit codes are 1..=12"),
    }
}

/// A decimal string as an exact fraction.
fn fraction(decimal: &str) -> (u128, u128) {
    let (whole, frac) = decimal.split_once('.').unwrap_or((decimal, ""));
    let digits: u128 = format!("{whole}{frac}").parse().expect("digits");
    (digits, 10u128.pow(frac.len() as u32))
}

fn expected_state(status: u8) -> ScaleState {
    [
        ScaleState::Fault,
        ScaleState::StableAtZero,
        ScaleState::InMotion,
        ScaleState::Stable,
        ScaleState::UnderZero,
        ScaleState::OverCapacity,
        ScaleState::NeedsCalibration,
        ScaleState::NeedsRezero,
    ][usize::from(status - 1)]
}

fn expected_display(code: u8) -> WeightUnit {
    match code {
        1 => WeightUnit::Milligram,
        3 | 8 => WeightUnit::Kilogram,
        11 => WeightUnit::Ounce,
        12 => WeightUnit::Pound,
        _ => WeightUnit::Gram,
    }
}

/// What `raw x 10^exponent` of a unit of `size` is in micrograms: `Some(exact numerator,
/// denominator)`, or `None` when the numerator alone is beyond 128 bits (the driver must
/// refuse it as out of range).
fn exact(raw: u128, exponent: i8, (num, den): (u128, u128)) -> Option<(u128, u128)> {
    if exponent >= 0 {
        let n = raw
            .checked_mul(num)?
            .checked_mul(10u128.checked_pow(exponent as u32)?)?;
        Some((n, den))
    } else {
        match 10u128
            .checked_pow(u32::from(exponent.unsigned_abs()))
            .and_then(|p| p.checked_mul(den))
        {
            Some(d) => Some((raw * num, d)),
            // Beyond 10^38 the value is below a microgram by far: zero after rounding.
            None => Some((0, 1)),
        }
    }
}

/// Checks that `got` is `n / d` rounded to the nearest integer, halves away from zero.
fn assert_rounded(got: u128, (n, d): (u128, u128), what: &str) {
    let twice_error = (2 * got * d).abs_diff(2 * n);
    assert!(
        twice_error <= d,
        "{what}: {got} is not the nearest to {n}/{d}"
    );
    if twice_error == d {
        assert!(got * d > n, "{what}: a half must round away from zero");
    }
}

#[test]
fn every_status_unit_and_exponent_decodes_exactly() {
    let (mut scale, script) = scale();
    let mut checked = 0;
    for status in 1..=8u8 {
        for unit in 1..=12u8 {
            for exponent in i8::MIN..=i8::MAX {
                for raw in [0u16, 1, 7, 53, 1250, 65535] {
                    script.push_report(&report(status, unit, exponent, raw));
                    let what = format!("status {status} unit {unit} exponent {exponent} raw {raw}");
                    let result = scale.read(0);
                    check(result, status, unit, exponent, raw, &what);
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 8 * 12 * 256 * 6);
}

fn check(
    result: Result<ScaleReading, PluginError>,
    status: u8,
    unit: u8,
    exponent: i8,
    raw: u16,
    what: &str,
) {
    let Some(size) = unit_size(unit) else {
        let err = result.expect_err(what);
        assert_eq!(err.kind, ErrorKind::Protocol, "{what}");
        assert!(err.message.contains("differs"), "{what}: {}", err.message);
        return;
    };
    let size = fraction(size);
    let value = exact(u128::from(raw), exponent, size);
    let step = exact(1, exponent, size);
    let fits = |v: Option<(u128, u128)>, max: u128| v.is_some_and(|(n, d)| (n + d / 2) / d <= max);
    if !fits(value, i64::MAX as u128) || !fits(step, u128::from(u64::MAX)) {
        let err = result.expect_err(what);
        assert_eq!(err.kind, ErrorKind::Protocol, "{what}");
        assert!(err.message.contains("beyond"), "{what}: {}", err.message);
        return;
    }
    let reading = result.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(reading.state, expected_state(status), "{what}");
    assert_eq!(reading.display_unit, expected_display(unit), "{what}");
    let value = value.expect("fits");
    let magnitude = reading.micrograms.unsigned_abs() as u128;
    assert_rounded(magnitude, value, what);
    if status == 5 {
        assert!(reading.micrograms <= 0, "{what}: under zero is negative");
    } else {
        assert!(reading.micrograms >= 0, "{what}");
    }
    let step = step.expect("fits");
    if (step.0 + step.1 / 2) / step.1 == 0 {
        assert_eq!(reading.resolution_micrograms, 1, "{what}: finest step");
    } else {
        assert_rounded(u128::from(reading.resolution_micrograms), step, what);
    }
}

/// Readings worked out by hand, as a shipping desk sees them.
#[test]
fn known_readings() {
    let cases: &[([u8; 6], ScaleState, i64, u64, WeightUnit)] = &[
        // 5.3 oz = 150 252 472.5625 ug; one step 0.1 oz = 2 834 952.3125 ug.
        (
            report(4, 11, -1, 53),
            ScaleState::Stable,
            150_252_473,
            2_834_952,
            WeightUnit::Ounce,
        ),
        // 1.25 lb = 566 990 462.5 ug: the half rounds up.
        (
            report(4, 12, -2, 125),
            ScaleState::Stable,
            566_990_463,
            4_535_924,
            WeightUnit::Pound,
        ),
        // 0.5 oz = 14 174 761.5625 ug.
        (
            report(4, 11, -1, 5),
            ScaleState::Stable,
            14_174_762,
            2_834_952,
            WeightUnit::Ounce,
        ),
        // -0.3 lb below zero.
        (
            report(5, 12, -1, 3),
            ScaleState::UnderZero,
            -136_077_711,
            45_359_237,
            WeightUnit::Pound,
        ),
        // -0.5 oz below zero: the half rounds away from zero.
        (
            report(5, 11, -1, 5),
            ScaleState::UnderZero,
            -14_174_762,
            2_834_952,
            WeightUnit::Ounce,
        ),
        // 1234 g on a scale counting grams.
        (
            report(4, 2, 0, 1234),
            ScaleState::Stable,
            1_234_000_000,
            1_000_000,
            WeightUnit::Gram,
        ),
        // 12.345 kg.
        (
            report(4, 3, -3, 12345),
            ScaleState::Stable,
            12_345_000_000,
            1_000_000,
            WeightUnit::Kilogram,
        ),
        // Over capacity on a 25 lb scale: the weight field is still decoded.
        (
            report(6, 12, -1, 251),
            ScaleState::OverCapacity,
            11_385_168_487,
            45_359_237,
            WeightUnit::Pound,
        ),
        // Stable at zero.
        (
            report(2, 11, -1, 0),
            ScaleState::StableAtZero,
            0,
            2_834_952,
            WeightUnit::Ounce,
        ),
        // 100 troy ounces x 10^-2 = 1 ozt = 31 103 476.8 ug.
        (
            report(4, 10, -2, 100),
            ScaleState::Stable,
            31_103_477,
            311_035,
            WeightUnit::Gram,
        ),
        // One grain: 64 798.91 ug.
        (
            report(4, 6, 0, 1),
            ScaleState::Stable,
            64_799,
            64_799,
            WeightUnit::Gram,
        ),
    ];
    let (mut scale, script) = scale();
    for (bytes, state, micrograms, resolution, unit) in cases {
        script.push_report(bytes);
        let reading = scale.read(0).expect("reading");
        assert_eq!(
            (
                reading.state,
                reading.micrograms,
                reading.resolution_micrograms,
                reading.display_unit
            ),
            (*state, *micrograms, *resolution, *unit),
            "{bytes:02x?}"
        );
    }
}

#[test]
fn report_id_4_is_a_weight_report_too() {
    let (mut scale, script) = scale();
    script.push_report(&[4, 4, 2, 0, 0x10, 0x27]);
    let reading = scale.read(0).unwrap();
    assert_eq!(reading.micrograms, 10_000_000_000);
}

#[test]
fn the_stale_first_report_is_skipped() {
    let (transport, script) = ScriptedTransport::new("hid scale");
    let mut scale = driver::open(&request(), transport.into_box()).unwrap();
    // The load that was on the scale when it was last used.
    script.push_report(&report(4, 12, -2, 900));
    let err = scale.read(20).unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Timeout,
        "the stale report must not be read"
    );
    script.push_report(&report(4, 12, -2, 125));
    assert_eq!(scale.read(20).unwrap().micrograms, 566_990_463);
}

#[test]
fn a_stale_report_followed_by_a_fresh_one_gives_the_fresh_one() {
    let (transport, script) = ScriptedTransport::new("hid scale");
    let mut scale = driver::open(&request(), transport.into_box()).unwrap();
    script.push_report(&report(4, 12, -2, 900));
    script.push_report(&report(4, 12, -2, 125));
    assert_eq!(scale.read(20).unwrap().micrograms, 566_990_463);
}

#[test]
fn the_newest_queued_report_wins() {
    let (mut scale, script) = scale();
    script.push_report(&report(4, 12, -2, 100));
    script.push_report(&report(4, 12, -2, 200));
    script.push_report(&report(4, 12, -2, 300));
    assert_eq!(scale.read(20).unwrap().micrograms, 3 * 453_592_370);
}

#[test]
fn motion_waits_for_a_stable_report() {
    let (mut scale, script) = scale();
    script.push_report(&report(3, 12, -2, 120));
    let pusher = {
        let script = script.clone();
        std::thread::spawn(move || {
            // The scale settles after reporting motion; the read must wait for it.
            script.push_report(&report(3, 12, -2, 124));
            script.push_report(&report(4, 12, -2, 125));
        })
    };
    let reading = scale.read(5_000).unwrap();
    pusher.join().unwrap();
    assert_eq!(reading.state, ScaleState::Stable);
    assert_eq!(reading.micrograms, 566_990_463);
}

#[test]
fn motion_until_the_timeout_returns_the_last_motion_reading() {
    let (mut scale, script) = scale();
    script.push_report(&report(3, 12, -2, 120));
    let reading = scale.read(30).unwrap();
    assert_eq!(reading.state, ScaleState::InMotion);
    assert_eq!(reading.micrograms, 544_310_844);
}

#[test]
fn other_reports_are_skipped() {
    let (mut scale, script) = scale();
    script.push_report(&[1, 0x8d, 0x20]);
    script.push_report(&report(4, 2, 0, 5));
    assert_eq!(scale.read(20).unwrap().micrograms, 5_000_000);
}

#[test]
fn malformed_reports_are_protocol_errors() {
    for (bytes, words) in [
        (&[3u8, 4, 2][..], "6 bytes"),
        (&[3, 0, 2, 0, 1, 0][..], "status 0"),
        (&[3, 9, 2, 0, 1, 0][..], "status 9"),
        (&[3, 4, 0, 0, 1, 0][..], "unit code 0"),
        (&[3, 4, 13, 0, 1, 0][..], "unit code 13"),
    ] {
        let (mut scale, script) = scale();
        script.push_report(bytes);
        let err = scale.read(0).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Protocol, "{bytes:?}");
        assert!(err.message.contains(words), "{bytes:?}: {}", err.message);
    }
}

#[test]
fn zero_sends_the_zero_output_report() {
    let (mut scale, script) = scale();
    scale.zero().unwrap();
    assert_eq!(script.reports_written(), vec![vec![0x02, 0x02]]);
}

#[test]
fn reports_from_before_a_zero_are_not_read_after_it() {
    let (mut scale, script) = scale();
    script.push_report(&report(4, 12, -2, 125));
    scale.zero().unwrap();
    // One report sent before the zero arrives after it.
    script.push_report(&report(4, 12, -2, 125));
    assert_eq!(scale.read(20).unwrap_err().kind, ErrorKind::Timeout);
    script.push_report(&report(2, 12, -2, 0));
    assert_eq!(scale.read(20).unwrap().state, ScaleState::StableAtZero);
}

#[test]
fn an_unplugged_scale_is_a_transport_error() {
    let (mut scale, script) = scale();
    script.disconnect();
    assert_eq!(scale.read(10).unwrap_err().kind, ErrorKind::Transport);
    assert_eq!(scale.zero().unwrap_err().kind, ErrorKind::Transport);
}

#[test]
fn no_report_at_all_is_a_timeout() {
    let (mut scale, _script) = scale();
    assert_eq!(scale.read(10).unwrap_err().kind, ErrorKind::Timeout);
}

#[test]
fn manifest_lists_every_known_scale() {
    let manifest = driver::manifest();
    assert_eq!(manifest.name.as_str(), "hid-scale");
    assert_eq!(manifest.kind, devicehub_plugin_api::DeviceKind::Scale);
    for (vid, pid, vendor) in [
        (0x0922, 0x8003, "DYMO"),
        (0x0922, 0x8004, "DYMO"),
        (0x0922, 0x8009, "DYMO"),
        (0x1446, 0x6A73, "Stamps.com"),
        (0x1446, 0x6A78, "DYMO"),
        (0x1446, 0x6A79, "USPS"),
        (0x2474, 0x0550, "Stamps.com"),
        (0x2474, 0x3550, "Stamps.com"),
        (0x0EB8, 0xF000, "Mettler Toledo"),
        (0x0EB8, 0xF001, "Mettler Toledo"),
        (0x0B67, 0x555E, "Fairbanks"),
        (0x7B7C, 0x0100, "Elane"),
        (0x6096, 0x0158, "DYMO"),
        (0x0D8F, 0x0200, "Pitney Bowes"),
    ] {
        let model = manifest
            .usb_model(vid, pid)
            .unwrap_or_else(|| panic!("{vid:04X}:{pid:04X} missing"));
        assert!(model.model.contains(vendor), "{}", model.model);
        assert_eq!(model.profile.as_str(), PROFILE);
    }
    assert_eq!(manifest.usb_models.len(), 14);
}

#[test]
fn unknown_profile_is_refused() {
    let (transport, _script) = ScriptedTransport::new("hid scale");
    let mut request = request();
    request.profile = "zpl-203".into();
    assert_eq!(
        driver::open(&request, transport.into_box())
            .unwrap_err()
            .kind,
        ErrorKind::InvalidJob
    );
}
