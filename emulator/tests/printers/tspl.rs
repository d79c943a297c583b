//! TSPL simulator tests over TCP: label programs written by hand after TSC's "TSPL/TSPL2
//! Programming Manual", decoded pixel for pixel; the `<ESC>!?` status byte under each fault;
//! held labels; a connection dropped inside `BITMAP` data; syntax errors in the store.

use devicehub_emulator::printers::tspl::{TsplConfig, TsplSimulator};
use devicehub_emulator::printers::RunningPrinter;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{get_json, label_bits, set_faults, text_like_pattern, TestImage};

async fn start(config: TsplConfig) -> RunningPrinter {
    TsplSimulator::start(config)
        .await
        .expect("the simulator starts on port 0")
}

/// A print-port connection that reads the one-byte status answers.
struct Connection {
    stream: TcpStream,
}

impl Connection {
    async fn open(printer: &RunningPrinter) -> Self {
        let stream = TcpStream::connect(printer.print_addr())
            .await
            .expect("the print port accepts connections");
        stream.set_nodelay(true).expect("TCP_NODELAY can be set");
        Self { stream }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("the print port takes data");
    }

    /// Sends `<ESC>!?` and returns the status byte. The printer handles a connection's bytes
    /// in order, so everything sent before is decoded once this returns.
    async fn status(&mut self) -> u8 {
        self.send(b"\x1b!?").await;
        let mut byte = [0u8; 1];
        self.stream
            .read_exact(&mut byte)
            .await
            .expect("the status byte arrives");
        byte[0]
    }

    async fn read_until_closed(&mut self) {
        let mut sink = Vec::new();
        let _ = self.stream.read_to_end(&mut sink).await;
    }
}

/// A label program in the manual's layout: setup, CLS, one BITMAP of `image` at (`x`, `y`)
/// (bit 0 = black), PRINT.
fn program(size: &str, image: &TestImage, (x, y): (u32, u32), print: &str) -> Vec<u8> {
    let mut bytes = format!(
        "SIZE {size}\r\nGAP 3 mm,0 mm\r\nDIRECTION 0\r\nREFERENCE 0,0\r\nDENSITY 8\r\nSPEED 4\r\nCLS\r\nBITMAP {x},{y},{},{},0,",
        image.width.div_ceil(8),
        image.height
    )
    .into_bytes();
    bytes.extend(image.packed(true));
    bytes.extend(format!("\r\nPRINT {print}\r\n").bytes());
    bytes
}

async fn assert_pixels(printer: &RunningPrinter, index: usize, expected: &TestImage) {
    let (width, height, bits) = label_bits(printer, index).await;
    assert_eq!((width, height), (expected.width, expected.height));
    assert!(
        bits == expected.packed(false),
        "label {index} differs from the expected bitmap"
    );
}

#[tokio::test]
async fn a_4x6_bitmap_label_prints_pixel_for_pixel_with_copies_and_a_png() {
    let out = tempfile::tempdir().expect("temp dir");
    let printer = start(TsplConfig {
        out_dir: Some(out.path().to_path_buf()),
        ..TsplConfig::default()
    })
    .await;
    let image = text_like_pattern(812, 1218);
    let mut connection = Connection::open(&printer).await;
    assert_eq!(connection.status().await, 0x00, "a fresh printer is ready");
    connection
        .send(&program("101.6 mm,152.4 mm", &image, (0, 0), "3,1"))
        .await;
    assert_eq!(connection.status().await, 0x00);

    let labels = get_json(&printer, "/labels").await;
    let label = &labels[0];
    assert_eq!(label["width"], 812);
    assert_eq!(label["height"], 1218);
    assert_eq!(label["copies"], 3);
    assert_eq!(label["language"], "tspl");
    assert_eq!(label["encoding"], "BITMAP");
    assert_eq!(label["clipped"], false);
    assert_eq!(label["settings"]["DENSITY"], "8");
    assert_eq!(label["settings"]["GAP"], "3 mm,0 mm");
    assert_pixels(&printer, 0, &image).await;
    assert_eq!(get_json(&printer, "/errors").await, json!([]));

    printer.shutdown().await;
    let png = std::fs::read(out.path().join("label-0000.png")).expect("the label PNG");
    assert!(png.starts_with(b"\x89PNG"));
}

#[tokio::test]
async fn a_bitmap_off_the_origin_and_sets_times_copies() {
    let printer = start(TsplConfig::default()).await;
    let image = text_like_pattern(45, 30);
    let mut connection = Connection::open(&printer).await;
    connection
        .send(&program("2,1", &image, (13, 7), "2,3"))
        .await;
    connection.status().await;
    let labels = get_json(&printer, "/labels").await;
    assert_eq!(
        labels[0]["copies"], 6,
        "PRINT m,n prints m sets of n copies"
    );
    assert_pixels(&printer, 0, &image.on_label(406, 203, 13, 7)).await;
}

#[tokio::test]
async fn the_status_byte_reports_each_fault_and_held_labels_print_when_cleared() {
    let printer = start(TsplConfig::default()).await;
    let mut connection = Connection::open(&printer).await;
    for (faults, byte) in [
        (json!({"head_open": true}), 0x01),
        (json!({"paper_out": true}), 0x04),
        (json!({"paused": true}), 0x10),
        (json!({"head_open": true, "paper_out": true}), 0x05),
    ] {
        set_faults(&printer, faults.clone()).await;
        assert_eq!(connection.status().await, byte, "{faults}");
    }

    let image = text_like_pattern(16, 8);
    connection
        .send(&program("16 dot,8 dot", &image, (0, 0), "1"))
        .await;
    connection.status().await;
    assert_eq!(get_json(&printer, "/labels").await, json!([]));
    assert_eq!(get_json(&printer, "/status").await["held_labels"], 1);

    set_faults(&printer, json!({})).await;
    assert_eq!(connection.status().await, 0x00);
    assert_pixels(&printer, 0, &image).await;
    let status = get_json(&printer, "/status").await;
    assert_eq!(status["counters"]["status_queries"], 6);
}

#[tokio::test]
async fn a_connection_dropped_inside_bitmap_data_is_an_incomplete_job() {
    let printer = start(TsplConfig::default()).await;
    let image = text_like_pattern(64, 40);
    let job = program("64 dot,40 dot", &image, (0, 0), "1");
    set_faults(&printer, json!({"drop_after_bytes": 150})).await;
    let mut connection = Connection::open(&printer).await;
    connection.send(&job).await;
    connection.read_until_closed().await;

    assert_eq!(get_json(&printer, "/labels").await, json!([]));
    let errors = get_json(&printer, "/errors").await;
    assert_eq!(errors[0]["kind"], "incomplete");
    assert_eq!(errors[0]["language"], "tspl");
    let reason = errors[0]["reason"].as_str().expect("a reason");
    assert!(reason.contains("inside BITMAP"), "{reason}");

    let mut retry = Connection::open(&printer).await;
    retry.send(&job).await;
    retry.status().await;
    assert_pixels(&printer, 0, &image).await;
}

#[tokio::test]
async fn syntax_errors_are_recorded_and_their_job_prints_nothing() {
    let printer = start(TsplConfig::default()).await;
    let mut connection = Connection::open(&printer).await;
    connection
        .send(b"SIZE 2,1\r\nCLS\r\nPRNT 1\r\nBITMAP 0,0,x,1,0,\r\nPRINT 1\r\n")
        .await;
    connection.status().await;
    assert_eq!(get_json(&printer, "/labels").await, json!([]));
    let errors = get_json(&printer, "/errors").await;
    let reasons: Vec<&str> = errors
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["reason"].as_str().expect("a reason"))
        .collect();
    assert_eq!(
        reasons,
        vec![
            "syntax error: unknown command \"PRNT\"",
            "syntax error: BITMAP parameters are not numbers"
        ]
    );
    assert_eq!(errors[0]["kind"], "decode");

    // The next job starts clean.
    connection.send(b"CLS\r\nPRINT 1\r\n").await;
    connection.status().await;
    assert_eq!(get_json(&printer, "/labels").await[0]["encoding"], "none");
}

#[tokio::test]
async fn a_300_dpi_printer_reads_millimetres_at_its_resolution() {
    let printer = start(TsplConfig {
        dpi: 300,
        ..TsplConfig::default()
    })
    .await;
    let status = get_json(&printer, "/status").await;
    assert_eq!(status["model"], "TE300");
    assert_eq!(status["width_dots"], 1248);
    let mut connection = Connection::open(&printer).await;
    connection
        .send(b"SIZE 101.6 mm,152.4 mm\r\nCLS\r\nPRINT 1\r\n")
        .await;
    connection.status().await;
    let label = &get_json(&printer, "/labels").await[0];
    assert_eq!(
        (label["width"].clone(), label["height"].clone()),
        (json!(1200), json!(1800))
    );
}

#[test]
fn command_line_plays_a_300_dpi_tspl_printer_and_refuses_other_resolutions() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_devicehub-emulator"))
        .args([
            "printer",
            "tspl",
            "--dpi",
            "300",
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
        line.starts_with(r#"{"family":"tspl","language":"tspl","print":"127.0.0.1:"#),
        "{line}"
    );
    let announcement: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let print: std::net::SocketAddr = announcement["print"]
        .as_str()
        .expect("an address")
        .parse()
        .expect("host:port");
    let mut socket = std::net::TcpStream::connect(print).expect("the print port");
    socket
        .write_all(b"SIZE 8 dot,1 dot\r\nCLS\r\nBITMAP 0,0,1,1,0,\x0F\r\nPRINT 1\r\n\x1b!?")
        .expect("sent");
    let mut status = [0u8; 1];
    socket.read_exact(&mut status).expect("the status byte");
    assert_eq!(status, [0x00]);
    let control: std::net::SocketAddr = announcement["control"]
        .as_str()
        .expect("a URL")
        .trim_start_matches("http://")
        .parse()
        .expect("host:port");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime
        .block_on(crate::support::http(control, "GET", "/status", None))
        .json();
    assert_eq!(report["model"], "TE300");
    assert_eq!(report["dpi"], 300);
    let labels = runtime
        .block_on(crate::support::http(control, "GET", "/labels", None))
        .json();
    assert_eq!(labels[0]["black_dots"], 4);

    drop(child.stdin.take());
    // Bounded, so that a simulator ignoring its closed stdin fails the test instead of hanging.
    let mut stopped = false;
    for _ in 0..300 {
        if let Some(status) = child.try_wait().expect("the child can be polled") {
            assert!(status.success(), "{status}");
            stopped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !stopped {
        let _ = child.kill();
        panic!("the simulator did not stop after its standard input closed");
    }

    let refused = Command::new(env!("CARGO_BIN_EXE_devicehub-emulator"))
        .args(["printer", "tspl", "--dpi", "250", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .expect("the emulator binary runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("250 is not 203 or 300"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
