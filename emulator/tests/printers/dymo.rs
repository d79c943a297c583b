//! DYMO LabelWriter simulator tests: hand-made 450 series raster streams and 550 series jobs
//! sent over TCP, built here from the technical references without the simulator's code, and
//! checked pixel for pixel, with the status answers in every fault state.

use devicehub_emulator::printers::dymo::{DymoConfig, DymoModel, DymoSimulator};
use devicehub_emulator::printers::RunningPrinter;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

const ESC: u8 = 0x1B;
const SYN: u8 = 0x16;
const ETB: u8 = 0x17;

async fn start(model: DymoModel) -> RunningPrinter {
    DymoSimulator::start(DymoConfig {
        model,
        ..DymoConfig::default()
    })
    .await
    .expect("the simulator starts on port 0")
}

/// A print-port connection that reads fixed-size binary answers.
struct Port(TcpStream);

impl Port {
    async fn open(printer: &RunningPrinter) -> Port {
        let stream = TcpStream::connect(printer.print_addr())
            .await
            .expect("the print port accepts connections");
        stream.set_nodelay(true).expect("TCP_NODELAY can be set");
        Port(stream)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0
            .write_all(bytes)
            .await
            .expect("the print port takes data");
    }

    /// Sends `request` and reads exactly `len` answer bytes, within a bounded wait.
    async fn ask(&mut self, request: &[u8], len: usize) -> Vec<u8> {
        self.send(request).await;
        let mut answer = vec![0u8; len];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.0.read_exact(&mut answer),
        )
        .await
        .expect("the simulator answers within 10 s")
        .expect("the answer arrives");
        answer
    }
}

/// The run-length form of a line as the 450 Technical Reference describes `ETB` data, written
/// here independently of the plugin: runs of up to 128 dots, bit 7 set for black.
fn etb_line(row: &[u8]) -> Vec<u8> {
    let mut out = vec![ETB];
    let dots: Vec<bool> = (0..row.len() * 8)
        .map(|i| row[i / 8] & (0x80 >> (i % 8)) != 0)
        .collect();
    let mut i = 0;
    while i < dots.len() {
        let colour = dots[i];
        let mut run = 1;
        while i + run < dots.len() && dots[i + run] == colour && run < 128 {
            run += 1;
        }
        out.push(if colour { 0x80 } else { 0 } | (run as u8 - 1));
        i += run;
    }
    out
}

/// A 450 series label of `image`: even rows as `SYN`, odd rows as `ETB`, at dot tab `tab`.
fn raster_label(image: &TestImage, tab: u8) -> Vec<u8> {
    let stride = image.width.div_ceil(8) as usize;
    let packed = image.packed(false);
    let mut job = vec![ESC, b'B', tab, ESC, b'D', stride as u8, ESC, b'L'];
    job.extend_from_slice(&(image.height as u16).to_be_bytes());
    for (y, row) in packed.chunks(stride).enumerate() {
        if y % 2 == 0 {
            job.push(SYN);
            job.extend_from_slice(row);
        } else {
            job.extend(etb_line(row));
        }
    }
    job
}

fn reset() -> Vec<u8> {
    let mut bytes = vec![ESC; 156];
    bytes.extend_from_slice(&[ESC, b'@']);
    bytes
}

/// A 550 series label: `ESC n`, the 12-byte `ESC D` header, the raw rows.
fn lw550_label(image: &TestImage, index: u16) -> Vec<u8> {
    let mut label = vec![ESC, b'n'];
    label.extend_from_slice(&index.to_le_bytes());
    label.extend_from_slice(&[ESC, b'D', 1, 2]);
    label.extend_from_slice(&image.height.to_be_bytes());
    label.extend_from_slice(&image.width.to_be_bytes());
    label.extend(image.packed(false));
    label
}

async fn assert_label(printer: &RunningPrinter, index: usize, expected: &TestImage) {
    let (width, height, bits) = label_bits(printer, index).await;
    assert_eq!(
        (width, height),
        (expected.width, expected.height),
        "label {index} size"
    );
    assert!(
        bits == expected.packed(false),
        "label {index} differs from the expected bitmap"
    );
}

#[tokio::test]
async fn raster_labels_print_pixel_for_pixel_at_the_dot_tab() {
    let printer = start(DymoModel::Lw450).await;
    let image = text_like_pattern(200, 40);
    let second = TestImage::from_fn(96, 30, |x, y| (x * y) % 7 == 0);
    let mut job = reset();
    job.extend_from_slice(&[ESC, b'e', ESC, b'i']);
    job.extend(raster_label(&image, 3));
    job.extend_from_slice(&[ESC, b'G']);
    job.extend(raster_label(&second, 0));
    job.extend_from_slice(&[ESC, b'E']);
    let mut port = Port::open(&printer).await;
    port.send(&job).await;
    assert_eq!(
        port.ask(&[ESC, b'A'], 1).await,
        vec![0x03],
        "ready, top of form"
    );

    let labels = get_json(&printer, "/labels").await;
    assert_eq!(labels.as_array().expect("a list").len(), 2);
    assert_eq!(labels[0]["language"], "lw-raster");
    assert_eq!(labels[0]["encoding"], "ETB+SYN");
    assert_eq!(labels[0]["copies"], 1);
    assert_eq!(labels[0]["settings"]["ESC L"], "40");
    assert_eq!(labels[0]["settings"]["density"], "normal");
    assert_eq!(labels[0]["settings"]["quality"], "graphics");
    assert_label(&printer, 0, &image.on_label(672, 40, 24, 0)).await;
    assert_label(&printer, 1, &second.on_label(672, 30, 0, 0)).await;
    assert_eq!(get_json(&printer, "/errors").await, json!([]));
}

#[tokio::test]
async fn raster_status_byte_follows_every_fault_and_held_labels_print_when_cleared() {
    let printer = start(DymoModel::Lw4xl).await;
    let mut port = Port::open(&printer).await;
    for (faults, byte) in [
        (json!({}), 0x03),
        (json!({"paper_out": true}), 0xA1),
        (json!({"head_open": true}), 0x83),
    ] {
        set_faults(&printer, faults.clone()).await;
        assert_eq!(port.ask(&[ESC, b'A'], 1).await, vec![byte], "{faults}");
    }
    set_faults(&printer, json!({"paper_out": true})).await;
    let image = text_like_pattern(1248, 12);
    let mut job = reset();
    job.extend(raster_label(&image, 0));
    job.extend_from_slice(&[ESC, b'E']);
    port.send(&job).await;
    port.ask(&[ESC, b'A'], 1).await;
    assert_eq!(get_json(&printer, "/status").await["held_labels"], 1);
    set_faults(&printer, json!({})).await;
    assert_label(&printer, 0, &image).await;
}

#[tokio::test]
async fn lw550_job_prints_and_status_reports_the_job_and_the_roll() {
    let printer = start(DymoModel::Lw550).await;
    let mut port = Port::open(&printer).await;
    let idle = port.ask(&[ESC, b'A', 1], 32).await;
    assert_eq!(idle[0], 0, "idle");
    assert_eq!(&idle[1..5], &[0, 0, 0, 0], "no job holds the printer");
    assert_eq!(idle[10], 8, "media present and ok");
    assert_eq!(&idle[11..16], b"99014");

    let sku = port.ask(&[ESC, b'U'], 64).await;
    assert_eq!(&sku[0..2], &[0xB6, 0xCA], "magic 0xCAB6");
    assert_eq!(u16::from_le_bytes([sku[40], sku[41]]), 1010, "101 mm long");
    assert_eq!(u16::from_le_bytes([sku[42], sku[43]]), 540, "54 mm wide");

    let image = text_like_pattern(604, 25);
    let mut job = vec![ESC, b's'];
    job.extend_from_slice(&0x0102_0304u32.to_le_bytes());
    job.extend_from_slice(&[ESC, b'i']);
    job.extend(lw550_label(&image, 0));
    job.extend_from_slice(&[ESC, b'G']);
    job.extend(lw550_label(&image, 1));
    port.send(&job).await;
    let printing = port.ask(&[ESC, b'A', 0], 32).await;
    assert_eq!(printing[0], 1, "printing");
    assert_eq!(
        &printing[1..5],
        &[4, 3, 2, 1],
        "the job ID, least significant byte first"
    );
    assert_eq!(&printing[5..7], &[1, 0], "label index 1");
    port.send(&[ESC, b'E', ESC, b'Q']).await;
    assert_eq!(port.ask(&[ESC, b'A', 0], 32).await[0], 0, "idle again");

    let labels = get_json(&printer, "/labels").await;
    assert_eq!(labels.as_array().expect("a list").len(), 2);
    assert_eq!(labels[1]["language"], "lw550");
    assert_eq!(labels[1]["encoding"], "raw");
    assert_eq!(labels[1]["settings"]["job_id"], "16909060");
    assert_eq!(labels[1]["settings"]["label_index"], "1");
    assert_eq!(labels[1]["settings"]["loaded_media"], "54x101 mm");
    for index in 0..2 {
        assert_label(&printer, index, &image.on_label(672, 25, 0, 0)).await;
    }
}

#[tokio::test]
async fn lw550_faults_show_in_the_status_and_the_loaded_roll_can_be_changed() {
    let printer = start(DymoModel::Lw5xl).await;
    let mut port = Port::open(&printer).await;
    let sku = port.ask(&[ESC, b'U'], 64).await;
    assert_eq!(
        u16::from_le_bytes([sku[42], sku[43]]),
        1040,
        "4 in roll on a 5XL"
    );
    for (faults, bay) in [
        (json!({"head_open": true}), 1),
        (json!({"paper_out": true}), 5),
        (
            json!({"loaded_media": {"width_mm": 54, "length_mm": 25, "unrecognized": true}}),
            10,
        ),
    ] {
        set_faults(&printer, faults.clone()).await;
        assert_eq!(port.ask(&[ESC, b'A', 0], 32).await[10], bay, "{faults}");
    }
    assert_eq!(
        port.ask(&[ESC, b'U'], 64).await,
        vec![0u8; 64],
        "no DYMO tag"
    );
    // Counterfeit labels: the job is refused, not printed.
    let image = text_like_pattern(64, 4);
    let mut job = vec![ESC, b's', 1, 0, 0, 0];
    job.extend(lw550_label(&image, 0));
    job.extend_from_slice(&[ESC, b'E', ESC, b'Q']);
    port.send(&job).await;
    port.ask(&[ESC, b'A', 0], 32).await;
    let errors = get_json(&printer, "/errors").await;
    assert!(
        errors[0]["reason"]
            .as_str()
            .expect("a reason")
            .contains("not recognised"),
        "{errors}"
    );

    set_faults(
        &printer,
        json!({"loaded_media": {"width_mm": 54, "length_mm": 25}}),
    )
    .await;
    let sku = port.ask(&[ESC, b'U'], 64).await;
    assert_eq!(u16::from_le_bytes([sku[40], sku[41]]), 250);
    assert_eq!(port.ask(&[ESC, b'A', 0], 32).await[10], 8);
    port.send(&job).await;
    port.ask(&[ESC, b'A', 0], 32).await;
    assert_label(&printer, 0, &image.on_label(1248, 4, 0, 0)).await;
}

#[tokio::test]
async fn a_connection_dropped_mid_label_is_an_incomplete_error() {
    let printer = start(DymoModel::Lw550).await;
    set_faults(&printer, json!({"drop_after_bytes": 40})).await;
    let image = text_like_pattern(600, 20);
    let mut job = vec![ESC, b's', 5, 0, 0, 0];
    job.extend(lw550_label(&image, 0));
    job.extend_from_slice(&[ESC, b'E', ESC, b'Q']);
    let mut port = Port::open(&printer).await;
    // The write may fail once the simulator resets the connection; either way the job is cut.
    let _ = port.0.write_all(&job).await;
    let mut rest = Vec::new();
    let _ = port.0.read_to_end(&mut rest).await;
    // The error is recorded when the connection task ends; poll with a bounded wait.
    for _ in 0..100 {
        let errors = get_json(&printer, "/errors").await;
        if let Some(error) = errors.as_array().and_then(|e| e.first()) {
            assert_eq!(error["kind"], "incomplete");
            assert_eq!(error["bytes_received"], 40);
            assert!(get_json(&printer, "/labels").await == json!([]));
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no incomplete error was recorded after the drop");
}

#[test]
fn command_line_plays_a_5xl() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_devicehub-emulator"))
        .args([
            "printer",
            "dymo",
            "--model",
            "5xl",
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
    assert!(
        line.starts_with(r#"{"family":"dymo","language":"lw550","print":"127.0.0.1:"#),
        "{line}"
    );
    drop(child.stdin.take());
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
async fn lw550_status_shows_another_connections_job_until_it_ends() {
    let printer = start(DymoModel::Lw550).await;
    let mut first = Port::open(&printer).await;
    let mut second = Port::open(&printer).await;
    let mut start_job = vec![ESC, b's'];
    start_job.extend_from_slice(&77u32.to_le_bytes());
    start_job.extend_from_slice(&[ESC, b'n', 3, 0]);
    first.send(&start_job).await;
    // The first connection's own status confirms the job arrived before the second asks.
    assert_eq!(first.ask(&[ESC, b'A', 0], 32).await[0], 1);
    let busy = second.ask(&[ESC, b'A', 1], 32).await;
    assert_eq!(busy[0], 1, "printing");
    assert_eq!(
        &busy[1..5],
        &77u32.to_le_bytes(),
        "the other connection's job"
    );
    assert_eq!(&busy[5..7], &[3, 0], "its label index");

    // Its connection ends without ESC Q: the job is incomplete and the engine is free again.
    drop(first);
    for _ in 0..100 {
        if second.ask(&[ESC, b'A', 1], 32).await[0] == 0 {
            let errors = get_json(&printer, "/errors").await;
            assert_eq!(errors[0]["kind"], "incomplete", "{errors}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the engine stayed busy after the job's connection closed");
}
