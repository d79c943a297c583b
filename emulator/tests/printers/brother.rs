//! Brother QL simulator tests: raster streams built here, independently of the simulator's
//! decoder, sent over TCP; the labels checked pixel for pixel the right way round, the 32-byte
//! status replies byte by byte, and media and fault refusals through the control API.

use devicehub_emulator::printers::brother::{BrotherConfig, BrotherModel, BrotherSimulator};
use devicehub_emulator::printers::RunningPrinter;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::{get_json, label_bits, set_faults, text_like_pattern, TestImage};

async fn start(model: BrotherModel, media: &str) -> RunningPrinter {
    BrotherSimulator::start(BrotherConfig {
        model,
        media: media.to_owned(),
        ..BrotherConfig::default()
    })
    .await
    .expect("the simulator starts on port 0")
}

/// A print-port connection that reads 32-byte status replies.
struct Connection {
    stream: TcpStream,
}

impl Connection {
    async fn open(printer: &RunningPrinter) -> Self {
        let stream = TcpStream::connect(printer.print_addr())
            .await
            .expect("the print port accepts connections");
        Self { stream }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("the print port takes data");
    }

    /// Reads `count` status replies, failing the test after ten seconds.
    async fn statuses(&mut self, count: usize) -> Vec<[u8; 32]> {
        let mut replies = Vec::with_capacity(count);
        for _ in 0..count {
            let mut reply = [0u8; 32];
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.stream.read_exact(&mut reply),
            )
            .await
            .expect("a status reply within ten seconds")
            .expect("the printer sends 32 bytes");
            replies.push(reply);
        }
        replies
    }

    /// Invalidate, `ESC @`, `ESC i S` and the reply, as the references' flow charts ask a
    /// host to do (after a refused job the printer skips everything until invalidate and
    /// initialize). The printer handles a connection's bytes in order, so everything sent
    /// before is decoded once this returns.
    async fn status(&mut self) -> [u8; 32] {
        let mut request = job_start(400);
        request.extend_from_slice(b"\x1B\x69\x53");
        self.send(&request).await;
        self.statuses(1).await[0]
    }
}

/// Head geometry for the streams built here: bytes per line and the offset of the printable
/// area from the right-hand end of the head (roll margin plus the model's extra margin).
struct Head {
    bytes_per_line: usize,
    offset: u32,
}

/// The image's rows as raster lines: padded with white to `lines`, mirrored onto the head.
fn head_lines(image: &TestImage, printable: u32, head: &Head, lines: u32) -> Vec<Vec<u8>> {
    (0..lines)
        .map(|y| {
            let mut line = vec![0u8; head.bytes_per_line];
            for x in 0..image.width {
                if image.get(x, y) {
                    let dot = head.offset + printable - 1 - x;
                    line[(dot / 8) as usize] |= 0x80 >> (dot % 8);
                }
            }
            line
        })
        .collect()
}

/// A plain PackBits encoder: runs of three or more equal bytes, literals otherwise.
fn packbits(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let run = line[i..]
            .iter()
            .take(128)
            .take_while(|&&b| b == line[i])
            .count();
        if run >= 3 {
            out.push((1 - run as i16) as u8);
            out.push(line[i]);
            i += run;
        } else {
            let start = i;
            while i < line.len() && i - start < 128 {
                let ahead = line[i..]
                    .iter()
                    .take(3)
                    .take_while(|&&b| b == line[i])
                    .count();
                if ahead >= 3 {
                    break;
                }
                i += 1;
            }
            out.push((i - start - 1) as u8);
            out.extend_from_slice(&line[start..i]);
        }
    }
    out
}

/// One page: print information, cut settings, margin, optional compression, lines.
fn page(media: (u8, u8, u8), lines: &[Vec<u8>], compress: Option<bool>, first: bool) -> Vec<u8> {
    let (kind, width, length) = media;
    let flags = if kind == 0x0B { 0x8E } else { 0x86 };
    let mut out = b"\x1B\x69\x61\x01\x1B\x69\x7A".to_vec();
    out.extend_from_slice(&[flags, kind, width, length]);
    out.extend_from_slice(&(lines.len() as u32).to_le_bytes());
    out.extend_from_slice(&[u8::from(!first), 0]);
    out.extend_from_slice(b"\x1B\x69\x4D\x40\x1B\x69\x41\x01\x1B\x69\x4B\x08");
    out.extend_from_slice(if kind == 0x0B {
        b"\x1B\x69\x64\x00\x00"
    } else {
        b"\x1B\x69\x64\x23\x00"
    });
    match compress {
        Some(true) => out.extend_from_slice(b"M\x02"),
        Some(false) => out.extend_from_slice(b"M\x00"),
        None => {}
    }
    for line in lines {
        if compress == Some(true) {
            if line.iter().all(|&b| b == 0) {
                out.push(b'Z');
            } else {
                let packed = packbits(line);
                out.extend_from_slice(&[b'g', 0, packed.len() as u8]);
                out.extend_from_slice(&packed);
            }
        } else {
            out.extend_from_slice(&[b'g', 0, line.len() as u8]);
            out.extend_from_slice(line);
        }
    }
    out
}

fn job_start(invalidate: usize) -> Vec<u8> {
    let mut out = vec![0u8; invalidate];
    out.extend_from_slice(b"\x1B\x40");
    out
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

fn assert_printed_statuses(statuses: &[[u8; 32]]) {
    for page in statuses.chunks(3) {
        assert_eq!((page[0][18], page[0][19]), (0x06, 0x01), "phase: printing");
        assert_eq!(
            (page[1][18], page[1][19]),
            (0x01, 0x01),
            "printing completed"
        );
        assert_eq!((page[2][18], page[2][19]), (0x06, 0x00), "phase: receiving");
    }
}

#[tokio::test]
async fn status_reply_describes_the_loaded_roll_byte_for_byte() {
    let printer = start(BrotherModel::Ql820nwb, "62").await;
    let mut connection = Connection::open(&printer).await;
    let reply = connection.status().await;
    let mut expected = [0u8; 32];
    expected[..8].copy_from_slice(&[0x80, 0x20, 0x42, b'4', b'A', b'0', b'0', 0x00]);
    expected[10] = 62;
    expected[11] = 0x0A;
    expected[14] = 0x3F;
    assert_eq!(reply, expected);

    let printer = start(BrotherModel::Ql700, "29x90").await;
    let mut connection = Connection::open(&printer).await;
    let reply = connection.status().await;
    assert_eq!((reply[10], reply[11], reply[17]), (29, 0x0B, 90));
    let status = get_json(&printer, "/status").await;
    assert_eq!(status["family"], "brother-ql");
    assert_eq!(status["model"], "QL-700");
    assert_eq!(status["width_dots"], 306);
    assert_eq!(status["counters"]["status_queries"], 1);
}

#[tokio::test]
async fn an_uncompressed_die_cut_label_decodes_the_right_way_round() {
    let printer = start(BrotherModel::Ql700, "29x90").await;
    let head = Head {
        bytes_per_line: 90,
        offset: 6,
    };
    let image = text_like_pattern(100, 60);
    let lines = head_lines(&image, 306, &head, 991);
    let mut job = job_start(200);
    job.extend(page((0x0B, 29, 90), &lines, None, true));
    job.push(0x1A);
    let mut connection = Connection::open(&printer).await;
    connection.send(&job).await;
    assert_printed_statuses(&connection.statuses(3).await);

    let labels = get_json(&printer, "/labels").await;
    let label = &labels[0];
    assert_eq!(label["width"], 306);
    assert_eq!(label["height"], 991);
    assert_eq!(label["copies"], 1);
    assert_eq!(label["language"], "brother-ql-raster");
    assert_eq!(label["encoding"], "uncompressed");
    assert_eq!(label["clipped"], false);
    assert_eq!(label["bytes_received"], (job.len() - 202) as u64);
    assert_eq!(label["settings"]["raster_lines"], "991");
    assert_eq!(
        label["settings"]["ESC i z"],
        "8E 0B 1D 5A DF 03 00 00 00 00"
    );
    assert_label(&printer, 0, &image.on_label(306, 991, 0, 0)).await;
}

#[tokio::test]
async fn packbits_pages_on_the_wide_head_decode_pixel_for_pixel() {
    let printer = start(BrotherModel::Ql1100, "102").await;
    let head = Head {
        bytes_per_line: 162,
        offset: 12 + 44,
    };
    let first = text_like_pattern(1164, 400);
    let second = TestImage::from_fn(700, 350, |x, y| (x / 7 + y / 5) % 3 == 0 || y == 349);
    let mut job = job_start(200);
    job.extend(page(
        (0x0A, 102, 0),
        &head_lines(&first, 1164, &head, 400),
        Some(true),
        true,
    ));
    job.push(0x0C);
    job.extend(page(
        (0x0A, 102, 0),
        &head_lines(&second, 1164, &head, 350),
        Some(true),
        false,
    ));
    job.push(0x1A);
    let mut connection = Connection::open(&printer).await;
    // Split writes must decode the same as one.
    for piece in job.chunks(997) {
        connection.send(piece).await;
    }
    assert_printed_statuses(&connection.statuses(6).await);

    let labels = get_json(&printer, "/labels").await;
    assert_eq!(labels.as_array().map(Vec::len), Some(2));
    assert_eq!(labels[0]["encoding"], "PackBits");
    assert_eq!(labels[1]["height"], 350);
    assert_label(&printer, 0, &first).await;
    assert_label(&printer, 1, &second.on_label(1164, 350, 0, 0)).await;
}

#[tokio::test]
async fn a_job_for_other_media_is_refused_with_the_replace_media_bit() {
    let printer = start(BrotherModel::Ql820nwb, "62").await;
    let head = Head {
        bytes_per_line: 90,
        offset: 12,
    };
    let image = text_like_pattern(200, 150);
    let lines = head_lines(&image, 696, &head, 150);
    let mut wrong = job_start(400);
    wrong.extend(page((0x0B, 102, 153), &lines, Some(false), true));
    wrong.push(0x1A);
    let mut connection = Connection::open(&printer).await;
    connection.send(&wrong).await;
    let refusal = connection.statuses(1).await[0];
    assert_eq!(refusal[18], 0x02, "error occurred");
    assert_eq!(refusal[9] & 0x01, 0x01, "replace media");
    assert_eq!((refusal[10], refusal[11]), (62, 0x0A), "the loaded roll");
    let errors = get_json(&printer, "/errors").await;
    assert_eq!(errors[0]["kind"], "refused");
    assert_eq!(
        errors[0]["reason"],
        "the job is for 102 x 153 mm die-cut labels but 62 mm continuous tape is loaded (replace media)"
    );

    // The rest of the refused job was skipped; invalidate and initialize start afresh.
    let mut right = job_start(400);
    right.extend(page((0x0A, 62, 0), &lines, Some(false), true));
    right.push(0x1A);
    connection.send(&right).await;
    assert_printed_statuses(&connection.statuses(3).await);
    assert_eq!(
        get_json(&printer, "/labels").await.as_array().map(Vec::len),
        Some(1)
    );
    assert_label(&printer, 0, &image.on_label(696, 150, 0, 0)).await;
}

#[tokio::test]
async fn cover_open_and_no_media_show_in_status_and_refuse_pages() {
    let printer = start(BrotherModel::Ql820nwb, "62").await;
    let lines = vec![vec![0xFFu8; 90]; 150];
    let mut job = job_start(400);
    job.extend(page((0x0A, 62, 0), &lines, None, true));
    job.push(0x1A);

    set_faults(&printer, json!({"head_open": true})).await;
    let mut connection = Connection::open(&printer).await;
    let reply = connection.status().await;
    assert_eq!((reply[8], reply[9], reply[18]), (0x00, 0x10, 0x00));
    connection.send(&job).await;
    let refusal = connection.statuses(1).await[0];
    assert_eq!((refusal[9], refusal[18]), (0x10, 0x02));

    set_faults(&printer, json!({"paper_out": true})).await;
    let reply = connection.status().await;
    assert_eq!(
        (reply[8], reply[9], reply[10], reply[11]),
        (0x01, 0x00, 0, 0),
        "no media and no roll"
    );
    connection.send(&job).await;
    let refusal = connection.statuses(1).await[0];
    assert_eq!((refusal[8], refusal[18]), (0x01, 0x02));

    let errors = get_json(&printer, "/errors").await;
    assert_eq!(errors[0]["reason"], "printer reports cover open");
    assert_eq!(errors[1]["reason"], "printer reports no media");
    assert_eq!(errors[1]["kind"], "refused");
    assert_eq!(get_json(&printer, "/labels").await, json!([]));

    set_faults(&printer, json!({})).await;
    connection.send(&job).await;
    assert_printed_statuses(&connection.statuses(3).await);
    let labels = get_json(&printer, "/labels").await;
    // Every dot of the head was black: those outside the 62 mm tape are flagged as clipped.
    assert_eq!(labels[0]["clipped"], true);
    assert_eq!(labels[0]["black_dots"], 696 * 150);
}

#[tokio::test]
async fn protocol_mistakes_are_errors_not_labels() {
    // The QL-800 takes no compression.
    let printer = start(BrotherModel::Ql800, "62").await;
    let lines = vec![vec![0x0Fu8; 90]; 150];
    let mut job = job_start(400);
    job.extend(page((0x0A, 62, 0), &lines, Some(true), true));
    job.push(0x1A);
    let mut connection = Connection::open(&printer).await;
    connection.send(&job).await;
    connection.status().await;
    let errors = get_json(&printer, "/errors").await;
    assert_eq!(errors[0]["kind"], "decode");
    assert_eq!(
        errors[0]["reason"],
        "the QL-800 does not take compressed raster data (M 02)"
    );

    // A page with fewer lines than its print information announced.
    let mut short = job_start(400);
    let mut body = page((0x0A, 62, 0), &lines, None, true);
    body.truncate(body.len() - 93);
    short.extend(body);
    short.push(0x1A);
    connection.send(&short).await;
    connection.status().await;
    let errors = get_json(&printer, "/errors").await;
    assert_eq!(
        errors[1]["reason"],
        "ESC i z announced 150 raster lines but 149 arrived"
    );
    assert_eq!(get_json(&printer, "/labels").await, json!([]));
}

#[tokio::test]
async fn a_connection_dropped_mid_page_is_an_incomplete_job() {
    let printer = start(BrotherModel::Ql820nwb, "62").await;
    let lines = vec![vec![0x3Cu8; 90]; 200];
    let mut job = job_start(400);
    job.extend(page((0x0A, 62, 0), &lines, None, true));
    job.push(0x1A);
    set_faults(&printer, json!({"drop_after_bytes": 1000})).await;
    let mut connection = Connection::open(&printer).await;
    connection.send(&job).await;
    let mut rest = Vec::new();
    let _ = connection.stream.read_to_end(&mut rest).await;
    let errors = get_json(&printer, "/errors").await;
    assert_eq!(errors[0]["kind"], "incomplete");
    assert_eq!(get_json(&printer, "/labels").await, json!([]));
}

#[tokio::test]
async fn unknown_media_and_rolls_too_wide_for_the_model_are_refused_at_start() {
    let unknown = BrotherSimulator::start(BrotherConfig {
        media: "99".to_owned(),
        ..BrotherConfig::default()
    })
    .await
    .expect_err("no such roll");
    assert!(unknown.to_string().contains("29x90"), "{unknown}");
    let wide = BrotherSimulator::start(BrotherConfig {
        model: BrotherModel::Ql800,
        media: "102x152".to_owned(),
        ..BrotherConfig::default()
    })
    .await
    .expect_err("the QL-800 takes no 102 mm rolls");
    assert!(wide.to_string().contains("QL-800"), "{wide}");
}

#[tokio::test]
async fn a_silent_printer_prints_and_sends_nothing_back() {
    let printer = BrotherSimulator::start(BrotherConfig {
        silent: true,
        ..BrotherConfig::default()
    })
    .await
    .expect("the simulator starts on port 0");
    let lines = vec![vec![0x81u8; 90]; 150];
    let mut job = job_start(400);
    job.extend_from_slice(b"\x1B\x69\x53");
    job.extend(page((0x0A, 62, 0), &lines, None, true));
    job.push(0x1A);
    let mut connection = Connection::open(&printer).await;
    connection.send(&job).await;
    connection
        .stream
        .shutdown()
        .await
        .expect("the write half closes");
    // The simulator decodes everything before it closes its side.
    let mut received = Vec::new();
    connection
        .stream
        .read_to_end(&mut received)
        .await
        .expect("the connection ends cleanly");
    assert!(received.is_empty(), "{received:02X?}");
    assert_eq!(
        get_json(&printer, "/labels").await.as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        get_json(&printer, "/status").await["counters"]["status_queries"],
        0
    );
}
