//! Fixtures for the printer simulator tests: starting simulators on port 0, a print-port
//! connection that can ask for status, a minimal HTTP client for the control API, and
//! independent encoders (hex, ACS, Z64, CRC-16/XMODEM) that build test data without the
//! simulator's own code.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;

use devicehub_emulator::printers::zebra::{ZebraConfig, ZebraLanguage, ZebraSimulator};
use devicehub_emulator::printers::RunningPrinter;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts a Zebra simulator on loopback port 0 for both servers.
pub async fn start_zebra(language: ZebraLanguage) -> RunningPrinter {
    ZebraSimulator::start(ZebraConfig {
        language,
        ..ZebraConfig::default()
    })
    .await
    .expect("the simulator starts on port 0")
}

/// A connection to a simulator's print port.
pub struct PrintConnection {
    stream: TcpStream,
}

impl PrintConnection {
    /// Connects to the print port.
    pub async fn open(printer: &RunningPrinter) -> Self {
        let stream = TcpStream::connect(printer.print_addr())
            .await
            .expect("the print port accepts connections");
        stream.set_nodelay(true).expect("TCP_NODELAY can be set");
        Self { stream }
    }

    /// Sends bytes in one write.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("the print port takes data");
    }

    /// Sends bytes in pieces of `piece` bytes, each its own write.
    pub async fn send_in_pieces(&mut self, bytes: &[u8], piece: usize) {
        for chunk in bytes.chunks(piece) {
            self.send(chunk).await;
            self.stream.flush().await.expect("flush");
        }
    }

    /// Reads until `frames` CR LF line ends have arrived, and returns what came.
    pub async fn read_lines(&mut self, frames: usize) -> Vec<u8> {
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while answer.windows(2).filter(|w| w == b"\r\n").count() < frames {
            let read = self
                .stream
                .read(&mut byte)
                .await
                .expect("the answer arrives");
            assert_eq!(
                read, 1,
                "the printer closed the connection inside an answer: {answer:?}"
            );
            answer.push(byte[0]);
        }
        answer
    }

    /// Sends `~HS` and returns the three-line answer. As the printer handles a connection's
    /// bytes in order, everything sent before is decoded once this returns.
    pub async fn host_status(&mut self) -> String {
        self.send(b"~HS").await;
        String::from_utf8(self.read_lines(3).await).expect("~HS answers ASCII")
    }

    /// Sends EPL2 `^ee` and returns the answer.
    pub async fn epl_status(&mut self) -> String {
        self.send(b"^ee\r\n").await;
        String::from_utf8(self.read_lines(1).await).expect("^ee answers ASCII")
    }

    /// Reads until the printer closes the connection (cleanly or with a reset).
    pub async fn read_until_closed(&mut self) -> Vec<u8> {
        let mut received = Vec::new();
        let _ = self.stream.read_to_end(&mut received).await;
        received
    }
}

/// An HTTP response from the control API.
pub struct HttpResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the control API answers JSON")
    }
}

/// Sends one HTTP/1.1 request to the control API and reads the whole response.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("the control API accepts connections");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = Vec::new();
    write!(
        request,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("writing to a Vec");
    stream
        .write_all(&request)
        .await
        .expect("the request is sent");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .expect("the response arrives");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the response has a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("the response has a status line");
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut chunked: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = chunked
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = usize::from_str_radix(String::from_utf8_lossy(&chunked[..line_end]).trim(), 16)
            .expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&chunked[line_end + 2..line_end + 2 + size]);
        chunked = &chunked[line_end + 2 + size + 2..];
    }
}

/// GET returning JSON, asserting 200.
pub async fn get_json(printer: &RunningPrinter, path: &str) -> Value {
    let response = http(printer.control_addr(), "GET", path, None).await;
    assert_eq!(
        response.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

/// POST /faults with the given body, asserting 200.
pub async fn set_faults(printer: &RunningPrinter, faults: Value) -> Value {
    let response = http(printer.control_addr(), "POST", "/faults", Some(&faults)).await;
    assert_eq!(
        response.status,
        200,
        "POST /faults: {}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

/// The packed bits of label `index` as served by `GET /labels/{index}/bits`, with its size.
pub async fn label_bits(printer: &RunningPrinter, index: usize) -> (u32, u32, Vec<u8>) {
    let response = http(
        printer.control_addr(),
        "GET",
        &format!("/labels/{index}/bits"),
        None,
    )
    .await;
    assert_eq!(response.status, 200);
    let header = |name: &str| -> u32 {
        response.headers[name]
            .parse()
            .expect("a numeric size header")
    };
    let (width, height) = (header("x-label-width"), header("x-label-height"));
    assert_eq!(header("x-bytes-per-row"), width.div_ceil(8));
    (width, height, response.body)
}

/// A 1-bit image built by the tests, independently of the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestImage {
    pub width: u32,
    pub height: u32,
    pub black: Vec<bool>,
}

impl TestImage {
    /// An image whose dot (x, y) is black when `pattern(x, y)` says so.
    pub fn from_fn(width: u32, height: u32, pattern: impl Fn(u32, u32) -> bool) -> Self {
        let mut black = Vec::with_capacity((width * height) as usize);
        for y in 0..height {
            for x in 0..width {
                black.push(pattern(x, y));
            }
        }
        Self {
            width,
            height,
            black,
        }
    }

    pub fn get(&self, x: u32, y: u32) -> bool {
        x < self.width && y < self.height && self.black[(y * self.width + x) as usize]
    }

    /// Packed rows, MSB first, 1 = black (or 0 = black with `inverted`).
    pub fn packed(&self, inverted: bool) -> Vec<u8> {
        let bytes_per_row = self.width.div_ceil(8) as usize;
        let mut packed = vec![0u8; bytes_per_row * self.height as usize];
        for y in 0..self.height {
            for x in 0..self.width {
                if self.get(x, y) {
                    packed[y as usize * bytes_per_row + (x / 8) as usize] |= 0x80 >> (x % 8);
                }
            }
        }
        if inverted {
            for byte in &mut packed {
                *byte = !*byte;
            }
        }
        packed
    }

    /// This image drawn at (`x`, `y`) on a white label of `width` x `height`, clipped.
    pub fn on_label(&self, width: u32, height: u32, x: u32, y: u32) -> TestImage {
        TestImage::from_fn(width, height, |lx, ly| {
            lx >= x && ly >= y && self.get(lx - x, ly - y)
        })
    }
}

/// A glyph-like test pattern: 4 x 4 checkerboard blocks on the left, a solid bar, a diagonal
/// stroke, blank rows and repeated rows, so that every ACS code has something to do.
pub fn text_like_pattern(width: u32, height: u32) -> TestImage {
    TestImage::from_fn(width, height, |x, y| {
        if (10..14).contains(&y) {
            return false;
        }
        if (20..23).contains(&y) {
            return true;
        }
        if x < width / 3 {
            return (x / 4 + y / 4) % 2 == 0;
        }
        if x < width / 3 + 6 {
            return true;
        }
        (x + y) % 17 == 0 || x == width - 1
    })
}

/// Plain ASCII hex, one line per row.
pub fn hex_rows(packed: &[u8], bytes_per_row: usize) -> String {
    packed
        .chunks(bytes_per_row)
        .map(|row| row.iter().map(|b| format!("{b:02X}")).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A test-local ACS encoder: `:` for a repeated row, `,` and `!` for trailing 0 and F runs,
/// repeat counts for other runs.
pub fn acs_encode(packed: &[u8], bytes_per_row: usize) -> String {
    let mut out = String::new();
    let mut previous: Option<&[u8]> = None;
    for row in packed.chunks(bytes_per_row) {
        if previous == Some(row) {
            out.push(':');
            continue;
        }
        previous = Some(row);
        let digits: Vec<char> = row
            .iter()
            .flat_map(|b| {
                let text = format!("{b:02X}");
                text.chars().collect::<Vec<_>>()
            })
            .collect();
        let mut i = 0;
        while i < digits.len() {
            let digit = digits[i];
            let mut run = 1;
            while i + run < digits.len() && digits[i + run] == digit {
                run += 1;
            }
            if i + run == digits.len() && digit == '0' {
                out.push(',');
            } else if i + run == digits.len() && digit == 'F' {
                out.push('!');
            } else {
                let mut left = run;
                while left > 0 {
                    let piece = left.min(400);
                    out.push_str(&acs_count(piece));
                    out.push(digit);
                    left -= piece;
                }
            }
            i += run;
        }
    }
    out
}

/// The ACS repeat code for `count` (1..=400): `g`..`z` for multiples of 20, `G`..`Y` for the
/// rest; a count of 1 is written as the bare digit.
fn acs_count(count: usize) -> String {
    assert!((1..=400).contains(&count));
    if count == 1 {
        return String::new();
    }
    let mut code = String::new();
    let (twenties, ones) = (count / 20, count % 20);
    if twenties > 0 {
        code.push(char::from(b'f' + twenties as u8));
    }
    if ones > 0 {
        code.push(char::from(b'F' + ones as u8));
    }
    code
}

/// CRC-16/XMODEM, written here independently of the simulator.
pub fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            }
        })
    })
}

/// zlib-deflates bytes.
pub fn zlib(raw: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(raw).expect("writing to a Vec");
    encoder.finish().expect("finishing a Vec")
}

/// A `:Z64:` (compressed) or `:B64:` field with its CRC.
pub fn base64_field(raw: &[u8], compressed: bool) -> String {
    use base64::Engine;
    let (tag, payload) = if compressed {
        ("Z64", zlib(raw))
    } else {
        ("B64", raw.to_vec())
    };
    let text = base64::engine::general_purpose::STANDARD.encode(payload);
    format!(":{tag}:{text}:{:04X}", crc16_xmodem(text.as_bytes()))
}

/// The `~HS` answer for the given flags, per the ZPL manual's layout.
pub fn expected_host_status(
    paper_out: bool,
    paused: bool,
    head_open: bool,
    label_length: u32,
    formats: u32,
    partial: bool,
    remaining: u32,
) -> String {
    let f = |on: bool| u8::from(on);
    format!(
        "\x02030,{},{},{label_length:04},{formats:03},0,0,{},000,0,0,0\x03\r\n\x02001,0,{},0,1,2,4,0,{remaining:08},1,000\x03\r\n\x021234,0\x03\r\n",
        f(paper_out),
        f(paused),
        f(partial),
        f(head_open)
    )
}
