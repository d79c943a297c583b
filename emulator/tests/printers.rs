//! Printer simulator tests: each starts a simulator on loopback port 0, prints hand-made ZPL
//! and EPL2 byte streams over TCP, and checks the decoded labels pixel for pixel, the status
//! answers and the fault behaviour through the control API.
//!
//! Modules:
//! - `brother`: the Brother QL raster simulator.
//! - `support`: starting simulators, print-port connections, a tiny HTTP client, and test-local
//!   encoders (hex, ACS, Z64/B64, CRC-16/XMODEM) independent of the simulator's decoders.
//! - `tspl`: the TSPL simulator's tests.

#[path = "printers/support.rs"]
mod support;

/// The Brother QL raster simulator.
#[path = "printers/brother.rs"]
mod brother;
/// The DYMO LabelWriter simulator: 450 series raster and 550 series jobs, status and faults.
#[path = "printers/dymo.rs"]
mod dymo;
/// The TSPL simulator: label programs, the status byte, faults, dropped connections.
#[path = "printers/tspl.rs"]
mod tspl;

use devicehub_emulator::printers::zebra::{ZebraConfig, ZebraLanguage, ZebraSimulator};
use serde_json::json;
use support::*;

/// Label and graphic geometry shared by the pixel tests: the graphic sits at an offset that is
/// not a multiple of 8, so every byte of it straddles two label bytes.
const LABEL_WIDTH: u32 = 96;
const LABEL_HEIGHT: u32 = 48;
const GRAPHIC_WIDTH: u32 = 48;
const GRAPHIC_HEIGHT: u32 = 30;
const ORIGIN: (u32, u32) = (11, 5);

fn graphic() -> TestImage {
    text_like_pattern(GRAPHIC_WIDTH, GRAPHIC_HEIGHT)
}

fn expected_label() -> TestImage {
    graphic().on_label(LABEL_WIDTH, LABEL_HEIGHT, ORIGIN.0, ORIGIN.1)
}

/// A ZPL image label in DeviceHub's layout, with `^GF` type `kind`, byte count `b` and data.
fn zpl_label(kind: &str, stated: usize, data: &[u8], copies: u32) -> Vec<u8> {
    zpl_label_sized(
        kind,
        stated,
        data,
        copies,
        (GRAPHIC_WIDTH, GRAPHIC_HEIGHT),
        (LABEL_WIDTH, LABEL_HEIGHT),
    )
}

/// [`zpl_label`] with a graphic and a label of the given sizes in dots.
fn zpl_label_sized(
    kind: &str,
    stated: usize,
    data: &[u8],
    copies: u32,
    (graphic_width, graphic_height): (u32, u32),
    (label_width, label_height): (u32, u32),
) -> Vec<u8> {
    let bytes_per_row = graphic_width.div_ceil(8) as usize;
    let total = bytes_per_row * graphic_height as usize;
    let mut zpl = format!(
        "^XA^PW{label_width}^LL{label_height}^LH0,0^FO{},{}^GF{kind},{stated},{total},{bytes_per_row},",
        ORIGIN.0, ORIGIN.1
    )
    .into_bytes();
    zpl.extend_from_slice(data);
    zpl.extend(format!("^FS^PQ{copies},0,1,Y^XZ\r\n").bytes());
    zpl
}

async fn assert_label_pixels(
    printer: &devicehub_emulator::printers::RunningPrinter,
    index: usize,
    expected: &TestImage,
) {
    let (width, height, bits) = label_bits(printer, index).await;
    assert_eq!((width, height), (expected.width, expected.height));
    let want = expected.packed(false);
    if bits != want {
        let differing: Vec<(u32, u32)> = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let byte = (y * width.div_ceil(8) + x / 8) as usize;
                (bits[byte] & (0x80 >> (x % 8)) != 0) != expected.get(x, y)
            })
            .take(10)
            .collect();
        panic!("label {index} differs from the expected bitmap, first dots: {differing:?}");
    }
}

#[test]
fn test_crc_routine_matches_the_xmodem_check_value() {
    assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
}

#[tokio::test]
async fn fresh_printer_answers_host_status_like_the_manual_example() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let mut connection = PrintConnection::open(&printer).await;
    assert_eq!(
        connection.host_status().await,
        "\x02030,0,0,1218,000,0,0,0,000,0,0,0\x03\r\n\x02001,0,0,0,1,2,4,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n"
    );
}

#[tokio::test]
async fn hex_graphic_prints_pixel_for_pixel_with_copies() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let bytes_per_row = GRAPHIC_WIDTH.div_ceil(8) as usize;
    let packed = graphic().packed(false);
    let hex = hex_rows(&packed, bytes_per_row);
    let job = zpl_label("A", packed.len(), hex.as_bytes(), 3);
    let mut connection = PrintConnection::open(&printer).await;
    connection.send(&job).await;
    connection.host_status().await;

    let labels = get_json(&printer, "/labels").await;
    let label = &labels.as_array().expect("a list")[0];
    assert_eq!(label["index"], 0);
    assert_eq!(label["width"], LABEL_WIDTH);
    assert_eq!(label["height"], LABEL_HEIGHT);
    assert_eq!(label["copies"], 3);
    assert_eq!(label["language"], "zpl");
    assert_eq!(label["encoding"], "hex");
    assert_eq!(label["clipped"], false);
    // The job is everything from ^XA to ^XZ: the trailing CR LF is not part of it.
    assert_eq!(label["bytes_received"], job.len() as u64 - 2);
    assert_label_pixels(&printer, 0, &expected_label()).await;
    let status = get_json(&printer, "/status").await;
    assert_eq!(status["counters"]["copies_printed"], 3);
}

#[tokio::test]
async fn acs_compressed_graphic_prints_pixel_for_pixel() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    // Wide enough for runs of 20 digits and more.
    let (width, height) = (400, GRAPHIC_HEIGHT);
    let glyphs = graphic();
    let image = TestImage::from_fn(width, height, |x, y| {
        if x < GRAPHIC_WIDTH {
            glyphs.get(x, y)
        } else {
            (x == width - 1 && y % 3 == 0)
                || (y == 25 && (100..300).contains(&x))
                || (20..23).contains(&y)
        }
    });
    let packed = image.packed(false);
    let acs = acs_encode(&packed, width.div_ceil(8) as usize);
    for code in [':', ',', '!'] {
        assert!(
            acs.contains(code),
            "the pattern exercises ACS {code:?}: {acs}"
        );
    }
    assert!(
        acs.chars().any(|c| ('g'..='z').contains(&c)),
        "a count of 20 or more: {acs}"
    );
    let label = (420, LABEL_HEIGHT);
    let mut connection = PrintConnection::open(&printer).await;
    connection
        .send(&zpl_label_sized(
            "A",
            packed.len(),
            acs.as_bytes(),
            1,
            (width, height),
            label,
        ))
        .await;
    connection.host_status().await;

    let labels = get_json(&printer, "/labels").await;
    assert_eq!(labels[0]["encoding"], "ACS");
    let expected = image.on_label(label.0, label.1, ORIGIN.0, ORIGIN.1);
    assert_label_pixels(&printer, 0, &expected).await;
    assert_eq!(get_json(&printer, "/errors").await, json!([]));
}

#[tokio::test]
async fn z64_and_b64_graphics_print_pixel_for_pixel() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let packed = graphic().packed(false);
    let mut connection = PrintConnection::open(&printer).await;
    for compressed in [true, false] {
        let field = base64_field(&packed, compressed);
        connection
            .send(&zpl_label("A", field.len(), field.as_bytes(), 1))
            .await;
    }
    connection.host_status().await;

    let labels = get_json(&printer, "/labels").await;
    assert_eq!(labels[0]["encoding"], "Z64");
    assert_eq!(labels[1]["encoding"], "B64");
    assert_label_pixels(&printer, 0, &expected_label()).await;
    assert_label_pixels(&printer, 1, &expected_label()).await;
}

#[tokio::test]
async fn binary_and_compressed_binary_graphics_print_pixel_for_pixel() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    // A pattern whose bytes include '^' (0x5E) and '~' (0x7E): binary data must not be
    // mistaken for commands.
    let image = TestImage::from_fn(GRAPHIC_WIDTH, GRAPHIC_HEIGHT, |x, y| {
        let byte = if y % 2 == 0 { 0x5Eu8 } else { 0x7E };
        byte & (0x80 >> (x % 8)) != 0
    });
    let packed = image.packed(false);
    let compressed = zlib(&packed);
    let mut connection = PrintConnection::open(&printer).await;
    connection
        .send(&zpl_label("B", packed.len(), &packed, 1))
        .await;
    connection
        .send(&zpl_label("C", compressed.len(), &compressed, 2))
        .await;
    connection.host_status().await;

    let labels = get_json(&printer, "/labels").await;
    assert_eq!(labels[0]["encoding"], "binary");
    assert_eq!(labels[1]["encoding"], "compressed-binary");
    assert_eq!(labels[1]["copies"], 2);
    let expected = image.on_label(LABEL_WIDTH, LABEL_HEIGHT, ORIGIN.0, ORIGIN.1);
    assert_label_pixels(&printer, 0, &expected).await;
    assert_label_pixels(&printer, 1, &expected).await;
}

#[tokio::test]
async fn several_formats_split_across_writes_with_status_queries_between() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let packed = graphic().packed(false);
    let field = base64_field(&packed, true);
    let bytes_per_row = GRAPHIC_WIDTH.div_ceil(8) as usize;
    let acs = acs_encode(&packed, bytes_per_row);
    // Two formats, a status query between them and one inside the second format's hex data.
    let mut stream = zpl_label("A", field.len(), field.as_bytes(), 1);
    stream.extend_from_slice(b"~HS");
    let mut second = zpl_label("A", packed.len(), acs.as_bytes(), 2);
    let middle = second.len() - 40;
    second.splice(middle..middle, b"~HS".iter().copied());
    stream.extend_from_slice(&second);

    let mut connection = PrintConnection::open(&printer).await;
    connection.send_in_pieces(&stream, 7).await;
    let first_answer = String::from_utf8(connection.read_lines(3).await).expect("ASCII");
    let second_answer = String::from_utf8(connection.read_lines(3).await).expect("ASCII");
    // The first query came between formats, the second inside one.
    assert_eq!(
        first_answer,
        expected_host_status(false, false, false, LABEL_HEIGHT, 0, false, 0)
    );
    assert_eq!(
        second_answer,
        expected_host_status(false, false, false, LABEL_HEIGHT, 0, true, 0)
    );
    connection.host_status().await;

    let labels = get_json(&printer, "/labels").await;
    assert_eq!(labels.as_array().map(Vec::len), Some(2));
    assert_eq!(labels[1]["copies"], 2);
    assert_label_pixels(&printer, 0, &expected_label()).await;
    assert_label_pixels(&printer, 1, &expected_label()).await;
}

#[tokio::test]
async fn one_byte_writes_decode_the_same_label() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let packed = graphic().packed(false);
    let field = base64_field(&packed, true);
    let mut connection = PrintConnection::open(&printer).await;
    connection
        .send_in_pieces(&zpl_label("A", field.len(), field.as_bytes(), 1), 1)
        .await;
    connection.host_status().await;
    assert_label_pixels(&printer, 0, &expected_label()).await;
}

#[tokio::test]
async fn host_status_reports_every_fault_and_held_labels_print_when_cleared() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let packed = graphic().packed(false);
    let field = base64_field(&packed, true);
    let job = zpl_label("A", field.len(), field.as_bytes(), 3);
    let mut connection = PrintConnection::open(&printer).await;
    // One healthy label first, so that ^LL is in force for the status answers.
    connection.send(&job).await;
    assert_eq!(
        connection.host_status().await,
        expected_host_status(false, false, false, LABEL_HEIGHT, 0, false, 0)
    );

    let cases = [
        (json!({"paper_out": true}), (true, false, false)),
        (json!({"head_open": true}), (false, false, true)),
        (json!({"paused": true}), (false, true, false)),
        (
            json!({"paper_out": true, "head_open": true, "paused": true}),
            (true, true, true),
        ),
    ];
    for (faults, (paper_out, paused, head_open)) in cases {
        let answer = set_faults(&printer, faults.clone()).await;
        assert_eq!(answer["paper_out"], paper_out);
        assert_eq!(
            connection.host_status().await,
            expected_host_status(paper_out, paused, head_open, LABEL_HEIGHT, 0, false, 0),
            "faults {faults}"
        );
    }

    // While faulted, complete formats are held in the buffer, not printed.
    connection.send(&job).await;
    connection.send(&job).await;
    assert_eq!(
        connection.host_status().await,
        expected_host_status(true, true, true, LABEL_HEIGHT, 2, false, 6)
    );
    assert_eq!(
        get_json(&printer, "/labels").await.as_array().map(Vec::len),
        Some(1)
    );
    let status = get_json(&printer, "/status").await;
    assert_eq!(status["held_labels"], 2);

    // Clearing only some faults keeps them held; clearing the last one prints them.
    set_faults(&printer, json!({"paused": true})).await;
    assert_eq!(
        get_json(&printer, "/labels").await.as_array().map(Vec::len),
        Some(1)
    );
    set_faults(&printer, json!({})).await;
    let labels = get_json(&printer, "/labels").await;
    assert_eq!(labels.as_array().map(Vec::len), Some(3));
    assert_eq!(labels[2]["copies"], 3);
    assert_label_pixels(&printer, 2, &expected_label()).await;
    assert_eq!(
        connection.host_status().await,
        expected_host_status(false, false, false, LABEL_HEIGHT, 0, false, 0)
    );
}

#[tokio::test]
async fn cancel_all_discards_held_labels() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    set_faults(&printer, json!({"head_open": true})).await;
    let mut connection = PrintConnection::open(&printer).await;
    connection.send(b"^XA^PW16^LL8^XZ").await;
    connection.send(b"~JA").await;
    connection.host_status().await;
    set_faults(&printer, json!({})).await;
    assert_eq!(get_json(&printer, "/labels").await, json!([]));
}

#[tokio::test]
async fn partial_format_flag_is_set_inside_a_format() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let mut connection = PrintConnection::open(&printer).await;
    connection.send(b"^XA^PW16^LL8").await;
    assert_eq!(
        connection.host_status().await,
        expected_host_status(false, false, false, 1218, 0, true, 0)
    );
    connection.send(b"^XZ").await;
    assert_eq!(
        connection.host_status().await,
        expected_host_status(false, false, false, 8, 0, false, 0)
    );
}

#[tokio::test]
async fn bad_z64_crc_is_an_error_not_a_label() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let packed = graphic().packed(false);
    let field = base64_field(&packed, true);
    let (body, crc) = field.rsplit_once(':').expect("a CRC trailer");
    let wrong = u16::from_str_radix(crc, 16).expect("hex CRC") ^ 0x0001;
    let bad = format!("{body}:{wrong:04X}");
    let mut connection = PrintConnection::open(&printer).await;
    connection
        .send(&zpl_label("A", bad.len(), bad.as_bytes(), 1))
        .await;
    connection.host_status().await;

    assert_eq!(get_json(&printer, "/labels").await, json!([]));
    let errors = get_json(&printer, "/errors").await;
    assert_eq!(errors[0]["kind"], "decode");
    let reason = errors[0]["reason"].as_str().expect("a reason");
    assert!(reason.contains("CRC mismatch"), "{reason}");
    assert!(reason.contains(&format!("{wrong:04X}")), "{reason}");
}

#[tokio::test]
async fn short_hex_data_is_an_error_not_a_label() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let mut connection = PrintConnection::open(&printer).await;
    connection
        .send(b"^XA^PW16^LL4^FO0,0^GFA,8,8,2,FFFF00FF^FS^XZ")
        .await;
    connection.host_status().await;
    assert_eq!(get_json(&printer, "/labels").await, json!([]));
    let errors = get_json(&printer, "/errors").await;
    assert_eq!(
        errors[0]["reason"],
        "^GF data ends after 4 of 8 image bytes"
    );
}

#[tokio::test]
async fn unsupported_commands_are_recorded_and_settings_kept() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let mut connection = PrintConnection::open(&printer).await;
    connection
        .send(b"^XA^CI28^PR4,4,4^MD10^MNY^PON^PW16^LL2^FO0,0^A0N,20,20^FDHello^FS^FO0,0^GFA,4,4,2,F00F\n8001^FS^XZ")
        .await;
    connection.host_status().await;
    let labels = get_json(&printer, "/labels").await;
    assert_eq!(labels[0]["unsupported_commands"], json!(["^A0", "^FD"]));
    assert_eq!(labels[0]["settings"]["^CI"], "28");
    assert_eq!(labels[0]["settings"]["^PR"], "4,4,4");
    let (_, _, bits) = label_bits(&printer, 0).await;
    assert_eq!(bits, vec![0xF0, 0x0F, 0x80, 0x01]);
}

#[tokio::test]
async fn inverted_orientation_turns_the_label() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let mut connection = PrintConnection::open(&printer).await;
    connection
        .send(b"^XA^POI^PW16^LL2^FO0,0^GFA,2,2,1,8000^FS^XZ")
        .await;
    connection.host_status().await;
    let (_, _, bits) = label_bits(&printer, 0).await;
    assert_eq!(bits, vec![0x00, 0x00, 0x00, 0x01]);
}

#[tokio::test]
async fn drop_after_bytes_closes_the_connection_mid_job_once() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let packed = graphic().packed(false);
    let field = base64_field(&packed, true);
    let job = zpl_label("A", field.len(), field.as_bytes(), 1);
    set_faults(&printer, json!({"drop_after_bytes": 40})).await;

    let mut connection = PrintConnection::open(&printer).await;
    connection.send(&job).await;
    connection.read_until_closed().await;

    assert_eq!(get_json(&printer, "/labels").await, json!([]));
    let errors = get_json(&printer, "/errors").await;
    assert_eq!(errors[0]["kind"], "incomplete");
    assert_eq!(errors[0]["bytes_received"], 40);
    let status = get_json(&printer, "/status").await;
    assert_eq!(status["counters"]["connections_dropped"], 1);
    assert_eq!(status["faults"]["drop_after_bytes"], json!(null));

    // The fault fired once: the retry prints.
    let mut retry = PrintConnection::open(&printer).await;
    retry.send(&job).await;
    retry.host_status().await;
    assert_label_pixels(&printer, 0, &expected_label()).await;
}

#[tokio::test]
async fn epl2_graphic_uses_inverted_polarity_and_copies() {
    let printer = start_zebra(ZebraLanguage::Epl2).await;
    let bytes_per_row = GRAPHIC_WIDTH.div_ceil(8);
    // EPL2 sends bit 0 for black.
    let packed = graphic().packed(true);
    let mut job = format!(
        "\r\nN\r\nq{LABEL_WIDTH}\r\nQ{LABEL_HEIGHT},24\r\nGW{},{},{bytes_per_row},{GRAPHIC_HEIGHT},",
        ORIGIN.0, ORIGIN.1
    )
    .into_bytes();
    job.extend_from_slice(&packed);
    job.extend_from_slice(b"\r\nP2\r\n");
    let mut connection = PrintConnection::open(&printer).await;
    connection.send_in_pieces(&job, 5).await;
    assert_eq!(connection.epl_status().await, "00\r\n");

    let labels = get_json(&printer, "/labels").await;
    assert_eq!(labels[0]["language"], "epl2");
    assert_eq!(labels[0]["encoding"], "EPL2");
    assert_eq!(labels[0]["copies"], 2);
    assert_eq!(labels[0]["bytes_received"], job.len() as u64 - 2);
    assert_label_pixels(&printer, 0, &expected_label()).await;
}

#[tokio::test]
async fn epl2_status_reports_head_open_and_paper_out_but_not_pause() {
    let printer = start_zebra(ZebraLanguage::Epl2).await;
    let mut connection = PrintConnection::open(&printer).await;
    for (faults, answer) in [
        (json!({}), "00\r\n"),
        (json!({"head_open": true}), "07\r\n"),
        (json!({"paper_out": true}), "08\r\n"),
        (json!({"paper_out": true, "head_open": true}), "07\r\n"),
        (json!({"paused": true}), "00\r\n"),
    ] {
        set_faults(&printer, faults.clone()).await;
        assert_eq!(connection.epl_status().await, answer, "faults {faults}");
    }
    // Paused still holds the label.
    connection
        .send(b"N\r\nq16\r\nQ2,24\r\nGW0,0,1,1,\x00\r\nP1\r\n")
        .await;
    connection.epl_status().await;
    assert_eq!(get_json(&printer, "/labels").await, json!([]));
    set_faults(&printer, json!({})).await;
    let (_, _, bits) = label_bits(&printer, 0).await;
    assert_eq!(bits, vec![0xFF, 0x00, 0x00, 0x00]);
}

#[tokio::test]
async fn control_api_serves_png_metadata_and_clears() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let packed = graphic().packed(false);
    let field = base64_field(&packed, true);
    let mut connection = PrintConnection::open(&printer).await;
    connection
        .send(&zpl_label("A", field.len(), field.as_bytes(), 1))
        .await;
    connection.host_status().await;

    let png = http(printer.control_addr(), "GET", "/labels/0/png", None).await;
    assert_eq!(png.status, 200);
    assert_eq!(png.headers["content-type"], "image/png");
    let decoded = image::load_from_memory(&png.body)
        .expect("a PNG")
        .to_luma8();
    let expected = expected_label();
    assert_eq!(decoded.dimensions(), (expected.width, expected.height));
    for (x, y, pixel) in decoded.enumerate_pixels() {
        assert_eq!(pixel.0[0] == 0, expected.get(x, y), "dot {x},{y}");
    }

    let status = get_json(&printer, "/status").await;
    assert_eq!(status["family"], "zebra");
    assert_eq!(status["language"], "zpl");
    assert_eq!(status["dpi"], 203);
    assert_eq!(status["labels"], 1);

    let missing = http(printer.control_addr(), "GET", "/labels/5/png", None).await;
    assert_eq!(missing.status, 404);
    let bad_faults = http(
        printer.control_addr(),
        "POST",
        "/faults",
        Some(&json!({"paper_gone": true})),
    )
    .await;
    assert!(bad_faults.status >= 400 && bad_faults.status < 500);

    let cleared = http(printer.control_addr(), "DELETE", "/labels", None).await;
    assert_eq!(cleared.status, 204);
    assert_eq!(get_json(&printer, "/labels").await, json!([]));
}

#[tokio::test]
async fn out_dir_receives_a_png_per_label() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let printer = ZebraSimulator::start(ZebraConfig {
        out_dir: Some(dir.path().to_path_buf()),
        ..ZebraConfig::default()
    })
    .await
    .expect("the simulator starts");
    let mut connection = PrintConnection::open(&printer).await;
    connection
        .send(b"^XA^PW8^LL1^GFA,1,1,1,81^FS^XZ^XA^PW8^LL1^GFA,1,1,1,18^FS^XZ")
        .await;
    connection.host_status().await;
    printer.shutdown().await;

    for (name, expected) in [
        (
            "label-0000.png",
            [true, false, false, false, false, false, false, true],
        ),
        (
            "label-0001.png",
            [false, false, false, true, true, false, false, false],
        ),
    ] {
        let png = image::open(dir.path().join(name))
            .expect("the PNG was written")
            .to_luma8();
        let black: Vec<bool> = png.pixels().map(|p| p.0[0] == 0).collect();
        assert_eq!(black, expected, "{name}");
    }
}

#[tokio::test]
async fn non_loopback_addresses_are_refused() {
    let refused = ZebraSimulator::start(ZebraConfig {
        listen: "0.0.0.0:0".parse().expect("an address"),
        ..ZebraConfig::default()
    })
    .await;
    assert!(refused.is_err());
}

#[test]
fn command_line_announces_itself_and_stops_when_stdin_closes() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_devicehub-emulator"))
        .args([
            "printer",
            "zebra",
            "--language",
            "epl2",
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the emulator binary starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("the announcement line");
    let announcement: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let keys: Vec<&String> = announcement
        .as_object()
        .expect("an object")
        .keys()
        .collect();
    assert_eq!(keys, ["control", "family", "language", "print"]);
    assert!(
        line.starts_with(r#"{"family":"zebra","language":"epl2","print":"127.0.0.1:"#),
        "{line}"
    );
    let control = announcement["control"].as_str().expect("a URL");
    assert!(control.starts_with("http://127.0.0.1:"), "{control}");

    // Print through the announced port and read the status through the announced API.
    let print: std::net::SocketAddr = announcement["print"]
        .as_str()
        .expect("an address")
        .parse()
        .expect("host:port");
    let mut socket = std::net::TcpStream::connect(print).expect("the print port");
    socket
        .write_all(b"N\r\nq8\r\nQ1,24\r\nGW0,0,1,1,\x0F\r\nP1\r\n^ee\r\n")
        .expect("sent");
    let mut answer = [0u8; 4];
    socket.read_exact(&mut answer).expect("the status answer");
    assert_eq!(&answer, b"00\r\n");
    let control_addr: std::net::SocketAddr = control
        .trim_start_matches("http://")
        .parse()
        .expect("host:port");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let labels = runtime
        .block_on(http(control_addr, "GET", "/labels", None))
        .json();
    assert_eq!(labels[0]["black_dots"], 4);

    drop(child.stdin.take());
    // Waiting is bounded so that a simulator that ignores the closed stdin fails the test
    // instead of hanging it.
    for _ in 0..300 {
        if let Some(status) = child.try_wait().expect("the child can be polled") {
            assert!(status.success(), "{status}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the simulator did not stop after its standard input closed");
}

#[tokio::test]
async fn configuration_dump_and_300_dpi_defaults() {
    let printer = ZebraSimulator::start(ZebraConfig {
        dpi: 300,
        ..ZebraConfig::default()
    })
    .await
    .expect("the simulator starts");
    let status = get_json(&printer, "/status").await;
    assert_eq!(status["dpi"], 300);
    assert_eq!(status["width_dots"], 1200);
    assert_eq!(status["model"], "ZD620");

    let mut connection = PrintConnection::open(&printer).await;
    assert_eq!(
        connection.host_status().await,
        expected_host_status(false, false, false, 1800, 0, false, 0)
    );
    connection.send(b"^XA^MD15^PR6^HH^XZ").await;
    let mut dump = Vec::new();
    while !dump.ends_with(b"\x03\r\n") {
        dump.extend(connection.read_lines(1).await);
    }
    let dump = String::from_utf8(dump).expect("ASCII");
    assert!(dump.starts_with('\x02'), "{dump:?}");
    for line in [
        "+15.0",
        "DARKNESS",
        "6 IPS",
        "PRINT SPEED",
        "1200",
        "PRINT WIDTH",
        "1800",
        "LABEL LENGTH",
        "300 DPI",
    ] {
        assert!(dump.contains(line), "{line} missing from {dump:?}");
    }
}

#[tokio::test]
async fn graphic_outside_the_label_is_clipped_and_flagged() {
    let printer = start_zebra(ZebraLanguage::Zpl).await;
    let mut connection = PrintConnection::open(&printer).await;
    // A 16-dot wide graphic at x = 4 on a 12-dot label: its last 8 dots fall off.
    connection
        .send(b"^XA^PW12^LL1^FO4,0^GFA,2,2,2,FFFF^FS^XZ")
        .await;
    connection.host_status().await;
    let labels = get_json(&printer, "/labels").await;
    assert_eq!(labels[0]["clipped"], true);
    let (width, _, bits) = label_bits(&printer, 0).await;
    assert_eq!(width, 12);
    assert_eq!(bits, vec![0x0F, 0xF0]);
}

#[cfg(unix)]
#[test]
fn command_line_stops_on_sigterm_when_told_to_ignore_stdin() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_devicehub-emulator"))
        .args([
            "printer",
            "zebra",
            "--listen",
            "127.0.0.1:0",
            "--ignore-stdin",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the emulator binary starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("the announcement line");
    // With stdin at end of file from the start, only --ignore-stdin keeps it serving.
    assert!(line.contains(r#""language":"zpl""#), "{line}");
    let announcement: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let control: std::net::SocketAddr = announcement["control"]
        .as_str()
        .and_then(|url| url.strip_prefix("http://"))
        .and_then(|addr| addr.parse().ok())
        .expect("a control URL");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let status = runtime.block_on(http(control, "GET", "/status", None));
    assert_eq!(status.status, 200, "it still serves after stdin ended");
    assert!(
        child.try_wait().expect("pollable").is_none(),
        "it serves on"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    for _ in 0..300 {
        if let Some(status) = child.try_wait().expect("the child can be polled") {
            assert!(status.success(), "{status}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the simulator did not stop on SIGTERM");
}
