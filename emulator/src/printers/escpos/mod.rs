//! The ESC/POS printer simulator: an Epson TM-L100 (a liner-free label printer, 72 mm of
//! 80 mm paper at 203 dpi) on a raw TCP print port, decoding ESC/POS raster graphics back into
//! bitmaps and answering real-time status requests, plus the common control API.
//!
//! Epson's ESC/POS command reference: `GS v 0 m xL xH yL yH d1...dk` prints a raster image of
//! `xL + xH * 256` bytes per row and `yL + yH * 256` rows, bit 1 = black, at once in standard
//! mode; the printed paper becomes a label when `GS V` cuts it (`GS V m` with m = 0, 1, 48, 49,
//! or `GS V m n` with m = 65, 66). Paper printed but not cut when the connection ends is
//! recorded as a label too: it has left the printer. `ESC @` resets settings but not paper
//! already printed. `DLE EOT n` (n = 1..4) is answered with one status byte in which bits 1
//! and 4 are always set: n = 1 bit 3 offline; n = 2 bit 2 cover open, bit 5 paper end stop,
//! bit 6 error; n = 3 no error bits (the simulator has no cutter or head faults); n = 4 bits 5
//! and 6 paper out.
//!
//! Faults map to the status as a TM printer reports them: head open is the cover open, paper
//! out sets the paper end and the roll sensor, paused is offline. While a fault is set printed
//! labels are held and come out when it clears, like the other simulators.
//!
//! The simulator answers `DLE EOT` only between commands; a real printer also acts on it inside
//! raster data, which the plugin copes with by clearing stale answers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use super::bitmap::Bitmap;
use super::store::{DecodedLabel, ErrorKind, PrinterInfo, PrinterState};
use super::{
    start_printer, DecoderFactory, PrintStreamDecoder, RunningPrinter, ServerConfig, StartError,
    StreamEnd,
};

/// The language name in announcements, label records and errors.
pub const LANGUAGE: &str = "escpos";

/// The TM-L100's printable width at 203 dpi: 72 mm.
const HEAD_WIDTH_DOTS: u32 = 576;

/// The longest uncut paper the simulator keeps, 10 m: a stream that never cuts cannot grow the
/// simulator's memory without bound.
const MAX_LABEL_ROWS: u32 = 81_200;

/// How to start an ESC/POS simulator.
#[derive(Debug, Clone)]
pub struct EscPosConfig {
    /// Print head width in dots; `None` means the TM-L100's 576.
    pub width_dots: Option<u32>,
    /// The print port (port 0 picks a free port). Real printers use 9100.
    pub listen: SocketAddr,
    /// The control API (port 0 picks a free port).
    pub control: SocketAddr,
    /// When set, every printed label is also written there as `label-NNNN.png`.
    pub out_dir: Option<PathBuf>,
}

impl Default for EscPosConfig {
    fn default() -> Self {
        Self {
            width_dots: None,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            out_dir: None,
        }
    }
}

/// Starts ESC/POS simulators.
#[derive(Debug)]
pub struct EscPosSimulator;

impl EscPosSimulator {
    /// Binds the print port and the control API and serves until the returned handle is shut
    /// down or dropped. Must be called inside a tokio runtime.
    pub async fn start(config: EscPosConfig) -> Result<RunningPrinter, StartError> {
        let width = config.width_dots.unwrap_or(HEAD_WIDTH_DOTS);
        if !(8..=4096).contains(&width) {
            return Err(StartError::Config(format!(
                "width must be 8 to 4096 dots, not {width}"
            )));
        }
        let info = PrinterInfo {
            family: "escpos".to_owned(),
            model: "TM-L100".to_owned(),
            language: LANGUAGE.to_owned(),
            dpi: 203,
            width_dots: width,
        };
        let decoders: DecoderFactory = Arc::new(move || -> Box<dyn PrintStreamDecoder> {
            Box::new(EscPosDecoder::new(width))
        });
        start_printer(
            info,
            ServerConfig {
                listen: config.listen,
                control: config.control,
                out_dir: config.out_dir,
            },
            decoders,
        )
        .await
    }
}

/// Paper printed since the last cut.
#[derive(Debug, Default)]
struct Paper {
    /// Each printed row, `stride` bytes wide, as the images sent it.
    rows: Vec<Vec<u8>>,
    /// Raster images (`GS v 0`) that printed on it.
    bands: u32,
    /// Bytes of the stream since the previous label.
    bytes: u64,
    /// Commands accepted but not simulated.
    unsupported: BTreeSet<String>,
}

/// Decodes one connection's ESC/POS stream.
struct EscPosDecoder {
    head_width: u32,
    /// Bytes received but not yet a whole command.
    pending: Vec<u8>,
    paper: Paper,
}

/// What the next bytes of the stream hold.
enum Parsed {
    /// A whole command of this many bytes was handled.
    Consumed(usize),
    /// The command is not complete yet.
    NeedMore,
}

impl EscPosDecoder {
    fn new(head_width: u32) -> Self {
        Self {
            head_width,
            pending: Vec::new(),
            paper: Paper::default(),
        }
    }

    /// The status byte `DLE EOT n` answers.
    fn status_byte(n: u8, printer: &PrinterState) -> u8 {
        let faults = printer.faults();
        let mut byte = 0x12;
        match n {
            1 if faults.blocks_printing() => byte |= 0x08,
            2 => {
                if faults.head_open {
                    byte |= 0x04;
                }
                if faults.paper_out {
                    byte |= 0x20;
                }
            }
            4 if faults.paper_out => byte |= 0x60,
            _ => {}
        }
        byte
    }

    fn parse(&mut self, printer: &PrinterState, reply: &mut Vec<u8>) -> Parsed {
        let input = self.pending.as_slice();
        match input {
            [0x1B, b'@', ..] => Parsed::Consumed(2),
            [0x1B] | [0x1D] | [0x10] | [0x10, 0x04] | [0x1D, b'v'] | [0x1D, b'V'] => {
                Parsed::NeedMore
            }
            [0x10, 0x04, n, ..] => {
                if (1..=4).contains(n) {
                    printer.note_status_query();
                    reply.push(Self::status_byte(*n, printer));
                } else {
                    self.paper.unsupported.insert(format!("DLE EOT {n}"));
                }
                Parsed::Consumed(3)
            }
            [0x1D, b'v', b'0', rest @ ..] => {
                let [m, xl, xh, yl, yh, data @ ..] = rest else {
                    return Parsed::NeedMore;
                };
                let stride = usize::from(u16::from_le_bytes([*xl, *xh]));
                let rows = usize::from(u16::from_le_bytes([*yl, *yh]));
                let size = stride * rows;
                if data.len() < size {
                    return Parsed::NeedMore;
                }
                if *m == 0 && stride > 0 {
                    let image: Vec<Vec<u8>> =
                        data[..size].chunks(stride).map(<[u8]>::to_vec).collect();
                    self.paper.rows.extend(image);
                    self.paper.bands += 1;
                } else {
                    // Scaled images (m = 1..3) are not simulated: recorded, not guessed at.
                    self.paper.unsupported.insert(format!("GS v 0 m={m}"));
                }
                Parsed::Consumed(8 + size)
            }
            [0x1D, b'V', m, ..] => {
                let (length, kind) = match m {
                    0 | 48 => (3, "full"),
                    1 | 49 => (3, "partial"),
                    65 => (4, "full"),
                    66 => (4, "partial"),
                    other => {
                        self.paper.unsupported.insert(format!("GS V {other}"));
                        return Parsed::Consumed(3);
                    }
                };
                if input.len() < length {
                    return Parsed::NeedMore;
                }
                self.cut(printer, kind);
                Parsed::Consumed(length)
            }
            [other, ..] => {
                self.paper.unsupported.insert(format!("byte 0x{other:02X}"));
                Parsed::Consumed(1)
            }
            [] => Parsed::NeedMore,
        }
    }

    /// Ends the label at a cut (`Some(kind)`) or at the end of the stream (`None`).
    fn cut(&mut self, printer: &PrinterState, kind: &str) {
        let paper = std::mem::take(&mut self.paper);
        if paper.rows.is_empty() {
            // A cut with nothing printed since the last one: blank paper, not a label.
            self.paper.unsupported = paper.unsupported;
            return;
        }
        let stride = paper.rows[0].len();
        let width = (stride as u32 * 8).min(self.head_width);
        let height = paper.rows.len() as u32;
        let mut bitmap = Bitmap::new(width, height);
        let mut clipped = false;
        for (y, row) in paper.rows.iter().enumerate() {
            // Rows of images of different widths print from the left edge; dots beyond the
            // head are lost.
            clipped |= bitmap.draw_packed(0, y as u32, row.len(), row, true);
        }
        let mut settings = BTreeMap::new();
        settings.insert("cut".to_owned(), kind.to_owned());
        settings.insert("bands".to_owned(), paper.bands.to_string());
        printer.submit_label(DecodedLabel {
            bitmap,
            copies: 1,
            language: LANGUAGE.to_owned(),
            encoding: "GS v 0".to_owned(),
            bytes_received: paper.bytes,
            clipped,
            unsupported_commands: paper.unsupported,
            settings,
        });
    }
}

impl PrintStreamDecoder for EscPosDecoder {
    fn feed(&mut self, input: &[u8], printer: &PrinterState, reply: &mut Vec<u8>) {
        self.pending.extend_from_slice(input);
        self.paper.bytes += input.len() as u64;
        while let Parsed::Consumed(n) = self.parse(printer, reply) {
            self.pending.drain(..n);
            if self.paper.rows.len() as u32 > MAX_LABEL_ROWS {
                printer.record_error(
                    ErrorKind::Refused,
                    LANGUAGE,
                    format!("more than {MAX_LABEL_ROWS} rows printed without a cut"),
                    self.paper.bytes,
                );
                self.paper = Paper::default();
            }
        }
    }

    fn finish(&mut self, printer: &PrinterState, end: StreamEnd) {
        if !self.pending.is_empty() {
            printer.record_error(
                ErrorKind::Incomplete,
                LANGUAGE,
                format!(
                    "the stream ended ({end:?}) inside a command ({} bytes left)",
                    self.pending.len()
                ),
                self.paper.bytes,
            );
            self.pending.clear();
        }
        // Printed paper has left the printer whether or not it was cut.
        self.cut(printer, "none");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printers::store::Faults;

    fn printer() -> PrinterState {
        PrinterState::new(
            PrinterInfo {
                family: "escpos".to_owned(),
                model: "TM-L100".to_owned(),
                language: LANGUAGE.to_owned(),
                dpi: 203,
                width_dots: HEAD_WIDTH_DOTS,
            },
            None,
            None,
        )
    }

    #[test]
    fn bands_split_anywhere_become_one_label_at_the_cut() {
        let state = printer();
        let mut decoder = EscPosDecoder::new(HEAD_WIDTH_DOTS);
        let stream: &[u8] = &[
            0x1B, b'@', 0x1D, b'v', b'0', 0, 2, 0, 1, 0, 0xC0, 0x01, 0x1D, b'v', b'0', 0, 2, 0, 1,
            0, 0x80, 0x00, 0x1D, b'V', b'A', 0,
        ];
        let mut reply = Vec::new();
        for byte in stream {
            decoder.feed(&[*byte], &state, &mut reply);
        }
        assert!(reply.is_empty());
        let labels = state.labels();
        assert_eq!(labels.len(), 1);
        assert_eq!((labels[0].width, labels[0].height), (16, 2));
        assert_eq!(labels[0].settings["bands"], "2");
        let (_, bitmap) = state.label(0).expect("label");
        assert!(bitmap.get(0, 0) && bitmap.get(1, 0) && bitmap.get(15, 0));
        assert!(bitmap.get(0, 1) && !bitmap.get(1, 1));
    }

    #[test]
    fn status_requests_report_the_faults() {
        let state = printer();
        let mut decoder = EscPosDecoder::new(HEAD_WIDTH_DOTS);
        let mut reply = Vec::new();
        let ask = b"\x10\x04\x01\x10\x04\x02\x10\x04\x03\x10\x04\x04";
        decoder.feed(ask, &state, &mut reply);
        assert_eq!(reply, [0x12, 0x12, 0x12, 0x12]);
        state.set_faults(Faults {
            paper_out: true,
            head_open: true,
            ..Faults::default()
        });
        reply.clear();
        decoder.feed(ask, &state, &mut reply);
        assert_eq!(reply, [0x1A, 0x36, 0x12, 0x72]);
    }

    #[test]
    fn uncut_paper_is_a_label_at_the_end_and_a_cut_command_cut_short_an_error() {
        let state = printer();
        let mut decoder = EscPosDecoder::new(HEAD_WIDTH_DOTS);
        let mut reply = Vec::new();
        decoder.feed(b"\x1dv0\x00\x01\x00\x01\x00\xff\x1dV", &state, &mut reply);
        decoder.finish(&state, StreamEnd::Closed);
        assert_eq!(state.labels().len(), 1);
        assert_eq!(state.labels()[0].settings["cut"], "none");
        assert_eq!(state.errors().len(), 1);
        assert_eq!(state.errors()[0].kind, ErrorKind::Incomplete);
    }
}
