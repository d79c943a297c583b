//! The TSPL/TSPL2 stream decoder.
//!
//! TSPL is line based: each command is a name, a space and comma-separated parameters, ended
//! by LF (usually CR LF). Two things break the pattern: `BITMAP x,y,width,height,mode,` is
//! followed by exactly `width * height` raw bytes (width in bytes, any byte value), and the
//! immediate commands `<ESC>!x` have no line end at all.
//!
//! Decoded: `SIZE` (inches, `mm` or `dot`), `GAP` and `BLINE`, `DIRECTION` (turn and mirror),
//! `REFERENCE`, `DENSITY`, `SPEED`, `CLS` (clears the image buffer), `BITMAP` (modes 0
//! overwrite, 1 OR, 2 XOR; bit 0 = black), `PRINT m[,n]` (m x n copies of the image buffer,
//! which stays until the next `CLS`), and `<ESC>!?` (the status byte). Other valid TSPL
//! commands (text, barcodes, boxes...) are accepted but not drawn, and listed as unsupported.
//! Anything else is a syntax error: it is recorded at once, naming the command but never its
//! parameters (they may hold label text), and the job it belongs to prints nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{status_byte, TsplShared, LANGUAGE};
use crate::printers::bitmap::Bitmap;
use crate::printers::store::{DecodedLabel, ErrorKind, PrinterState};
use crate::printers::{PrintStreamDecoder, StreamEnd};

/// A line longer than this without LF is not TSPL; it is dropped instead of buffered.
const MAX_LINE: usize = 64 * 1024;

/// The largest `BITMAP` payload accepted: a 4 in label at 300 dpi is under 300 KiB.
const MAX_BITMAP_BYTES: usize = 16 * 1024 * 1024;

/// Valid TSPL commands the simulator accepts without drawing them.
const ACCEPTED_NOT_DRAWN: &[&str] = &[
    "BAR",
    "BARCODE",
    "BLOCK",
    "BOX",
    "CIRCLE",
    "CODEPAGE",
    "COUNTRY",
    "CUT",
    "DMATRIX",
    "ELLIPSE",
    "EOP",
    "ERASE",
    "FEED",
    "BACKFEED",
    "FORMFEED",
    "HOME",
    "LIMITFEED",
    "MAXICODE",
    "OFFSET",
    "PDF417",
    "PUTBMP",
    "PUTPCX",
    "QRCODE",
    "REVERSE",
    "SET",
    "SHIFT",
    "SOUND",
    "TEXT",
];

/// One `BITMAP` command, drawn when the label prints.
#[derive(Debug)]
struct PlacedBitmap {
    x: u32,
    y: u32,
    bytes_per_row: usize,
    /// 0 overwrite, 1 OR, 2 XOR.
    mode: u8,
    data: Vec<u8>,
}

/// What was said about the job in progress since the last `PRINT`.
#[derive(Debug, Default)]
struct Job {
    unsupported: BTreeSet<String>,
    settings: BTreeMap<String, String>,
    /// Whether a syntax or data error was recorded: its `PRINT` prints nothing.
    failed: bool,
    /// Whether anything was drawn since the last `PRINT`, so that a stream ending here leaves
    /// an unprinted job behind.
    drawn: bool,
}

/// Decodes the TSPL arriving on one connection.
pub(crate) struct TsplDecoder {
    shared: Arc<TsplShared>,
    /// Bytes received and not consumed yet: at most one incomplete command.
    pending: Vec<u8>,
    /// Stream offset of `pending[0]`.
    offset: u64,
    /// The image buffer: bitmaps drawn since the last `CLS`.
    image: Vec<PlacedBitmap>,
    job: Job,
    /// Stream offset where the current job's bytes begin: the end of the last `PRINT`.
    job_start: u64,
    /// Whether the stream ended inside `BITMAP` data.
    cut_inside_bitmap: bool,
}

enum Step {
    NeedMore,
    Consumed(usize),
}

/// A length parameter in dots: inches by default, or with a `mm` or `dot` unit.
fn length_in_dots(text: &str, dpi: u32) -> Option<f64> {
    let text = text.trim();
    let (number, per_unit) = if let Some(mm) = text.strip_suffix("mm") {
        (mm, f64::from(dpi) / 25.4)
    } else if let Some(dots) = text.strip_suffix("dot") {
        (dots, 1.0)
    } else {
        (text, f64::from(dpi))
    };
    let value: f64 = number.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * per_unit)
}

fn integer(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

impl TsplDecoder {
    pub(crate) fn new(shared: Arc<TsplShared>) -> Self {
        Self {
            shared,
            pending: Vec::new(),
            offset: 0,
            image: Vec::new(),
            job: Job::default(),
            job_start: 0,
            cut_inside_bitmap: false,
        }
    }

    fn run(&mut self, printer: &PrinterState, reply: &mut Vec<u8>, at_eof: bool) {
        let mut buf = std::mem::take(&mut self.pending);
        let mut pos = 0;
        loop {
            while pos < buf.len() && matches!(buf[pos], b'\r' | b'\n' | b' ' | b'\t') {
                pos += 1;
            }
            if pos == buf.len() {
                break;
            }
            let step = if buf[pos] == 0x1B {
                self.immediate(&buf, pos, at_eof, printer, reply)
            } else if buf.len() - pos >= 7 && buf[pos..pos + 7].eq_ignore_ascii_case(b"BITMAP ") {
                self.bitmap(&buf, pos, at_eof, printer)
            } else {
                self.line(&buf, pos, at_eof, printer)
            };
            match step {
                Step::NeedMore => break,
                Step::Consumed(end) => pos = end,
            }
        }
        buf.drain(..pos);
        self.offset += pos as u64;
        self.pending = buf;
    }

    /// `<ESC>!x`: answered at once, whatever the printer is doing.
    fn immediate(
        &mut self,
        buf: &[u8],
        start: usize,
        at_eof: bool,
        printer: &PrinterState,
        reply: &mut Vec<u8>,
    ) -> Step {
        if buf.len() - start < 3 {
            return if at_eof {
                Step::Consumed(buf.len())
            } else {
                Step::NeedMore
            };
        }
        match (buf[start + 1], buf[start + 2]) {
            (b'!', b'?') => {
                printer.note_status_query();
                reply.push(status_byte(printer));
                Step::Consumed(start + 3)
            }
            (b'!', other) => {
                printer.note_unsupported_outside_job(&format!("<ESC>!{}", char::from(other)));
                Step::Consumed(start + 3)
            }
            _ => {
                printer.note_unsupported_outside_job("<ESC>");
                Step::Consumed(start + 1)
            }
        }
    }

    /// `BITMAP x,y,width_bytes,height,mode,<raw>`.
    fn bitmap(&mut self, buf: &[u8], start: usize, at_eof: bool, printer: &PrinterState) -> Step {
        let mut commas = Vec::with_capacity(5);
        let mut scan = start + 7;
        while commas.len() < 5 {
            match buf.get(scan) {
                Some(&b',') => commas.push(scan),
                Some(&b'\n') => {
                    self.syntax_error(printer, start, "BITMAP has fewer than six parameters");
                    return Step::Consumed(scan + 1);
                }
                Some(_) if scan - start > 80 => {
                    self.syntax_error(printer, start, "BITMAP parameters are not numbers");
                    return Step::Consumed(scan);
                }
                Some(_) => {}
                None if at_eof => {
                    self.cut_inside_bitmap = true;
                    return Step::Consumed(buf.len());
                }
                None => return Step::NeedMore,
            }
            scan += 1;
        }
        let field = |from: usize, to: usize| integer(&String::from_utf8_lossy(&buf[from..to]));
        let parsed = (
            field(start + 7, commas[0]),
            field(commas[0] + 1, commas[1]),
            field(commas[1] + 1, commas[2]),
            field(commas[2] + 1, commas[3]),
            field(commas[3] + 1, commas[4]),
        );
        let data_start = commas[4] + 1;
        let (Some(x), Some(y), Some(width), Some(height), Some(mode)) = parsed else {
            self.syntax_error(printer, start, "BITMAP parameters are not numbers");
            return Step::Consumed(data_start);
        };
        let size = (width as usize).saturating_mul(height as usize);
        if width == 0 || height == 0 || size > MAX_BITMAP_BYTES || mode > 2 {
            self.syntax_error(
                printer,
                start,
                &format!("BITMAP of {width} bytes x {height} rows in mode {mode} is not usable"),
            );
            return Step::Consumed(data_start);
        }
        let end = data_start + size;
        if end > buf.len() {
            if at_eof {
                self.cut_inside_bitmap = true;
                return Step::Consumed(buf.len());
            }
            return Step::NeedMore;
        }
        let (ref_x, ref_y) = self.shared.settings().reference;
        self.image.push(PlacedBitmap {
            x: x.saturating_add(ref_x),
            y: y.saturating_add(ref_y),
            bytes_per_row: width as usize,
            mode: mode as u8,
            data: buf[data_start..end].to_vec(),
        });
        self.job.drawn = true;
        Step::Consumed(end)
    }

    fn line(&mut self, buf: &[u8], start: usize, at_eof: bool, printer: &PrinterState) -> Step {
        let (line_end, next) = match buf[start..].iter().position(|&b| b == b'\n') {
            Some(found) => (start + found, start + found + 1),
            None if buf.len() - start > MAX_LINE => {
                self.syntax_error(printer, start, "a command line longer than 64 KiB");
                return Step::Consumed(buf.len());
            }
            None if at_eof => (buf.len(), buf.len()),
            None => return Step::NeedMore,
        };
        let line = String::from_utf8_lossy(&buf[start..line_end]);
        let line = line.trim_end_matches('\r').trim();
        let (name, params) = match line.split_once(char::is_whitespace) {
            Some((name, params)) => (name.to_ascii_uppercase(), params.trim()),
            None => (line.to_ascii_uppercase(), ""),
        };
        let after_line = self.offset + next as u64;
        if let Err(problem) = self.command(&name, params, printer, after_line) {
            self.syntax_error(printer, start, &problem);
        }
        Step::Consumed(next)
    }

    /// Carries out one text command; `Err` describes a syntax error without quoting text.
    fn command(
        &mut self,
        name: &str,
        params: &str,
        printer: &PrinterState,
        after_line: u64,
    ) -> Result<(), String> {
        let dpi = self.shared.dpi;
        let parts: Vec<&str> = if params.is_empty() {
            Vec::new()
        } else {
            params.split(',').map(str::trim).collect()
        };
        let two_lengths = |what: &str| -> Result<(f64, f64), String> {
            match parts.as_slice() {
                [a, b] => match (length_in_dots(a, dpi), length_in_dots(b, dpi)) {
                    (Some(a), Some(b)) => Ok((a, b)),
                    _ => Err(format!("{what} parameters are not lengths")),
                },
                _ => Err(format!("{what} takes two parameters, not {}", parts.len())),
            }
        };
        match name {
            "SIZE" => {
                let (width, length) = two_lengths("SIZE")?;
                let (width, length) = (width.round(), length.round());
                if !(1.0..=32_000.0).contains(&width) || !(1.0..=32_000.0).contains(&length) {
                    return Err(format!("SIZE of {width} x {length} dots is not a label"));
                }
                self.shared.update(|s| {
                    s.width = width as u32;
                    s.length = length as u32;
                });
                self.record("SIZE", params);
            }
            "GAP" | "BLINE" => {
                two_lengths(name)?;
                self.record(name, params);
            }
            "DIRECTION" => {
                let values: Option<Vec<u32>> = parts.iter().map(|p| integer(p)).collect();
                match values.as_deref() {
                    Some([n]) if *n <= 1 => {
                        self.shared.update(|s| {
                            s.direction = *n as u8;
                            s.mirror = false;
                        });
                    }
                    Some([n, m]) if *n <= 1 && *m <= 1 => {
                        self.shared.update(|s| {
                            s.direction = *n as u8;
                            s.mirror = *m == 1;
                        });
                    }
                    _ => return Err("DIRECTION takes 0 or 1, and optionally 0 or 1".into()),
                }
                self.record("DIRECTION", params);
            }
            "REFERENCE" => match parts.as_slice() {
                [x, y] => match (integer(x), integer(y)) {
                    (Some(x), Some(y)) => {
                        self.shared.update(|s| s.reference = (x, y));
                        self.record("REFERENCE", params);
                    }
                    _ => return Err("REFERENCE parameters are not dot counts".into()),
                },
                _ => return Err("REFERENCE takes two parameters".into()),
            },
            "DENSITY" => match parts.as_slice() {
                [n] if integer(n).is_some_and(|n| n <= 15) => self.record("DENSITY", params),
                _ => return Err("DENSITY takes one number from 0 to 15".into()),
            },
            "SPEED" => match parts.as_slice() {
                [n] if n.parse::<f64>().is_ok_and(|s| s > 0.0 && s <= 18.0) => {
                    self.record("SPEED", params)
                }
                _ => return Err("SPEED takes one number of inches per second".into()),
            },
            "CLS" => {
                if !parts.is_empty() {
                    return Err("CLS takes no parameters".into());
                }
                self.image.clear();
            }
            "PRINT" => {
                let values: Option<Vec<u32>> = parts.iter().map(|p| integer(p)).collect();
                let copies = match values.as_deref() {
                    Some([m]) if *m >= 1 => *m,
                    Some([m, n]) if *m >= 1 && *n >= 1 => m.saturating_mul(*n),
                    _ => return Err("PRINT takes one or two counts of at least 1".into()),
                };
                self.print(copies, after_line - self.job_start, printer);
                self.job_start = after_line;
            }
            _ if ACCEPTED_NOT_DRAWN.contains(&name) => {
                self.job.unsupported.insert(name.to_owned());
                self.job.drawn = true;
            }
            _ if name.starts_with("~!") => printer.note_unsupported_outside_job(name),
            _ => {
                // Only the name: the rest of an unknown line may be label text.
                let shown: String = name.chars().take(16).collect();
                return Err(format!("unknown command {shown:?}"));
            }
        }
        Ok(())
    }

    fn record(&mut self, command: &str, params: &str) {
        self.job
            .settings
            .insert(command.to_owned(), params.to_owned());
    }

    /// Records a syntax error at once and fails the job it belongs to.
    fn syntax_error(&mut self, printer: &PrinterState, at: usize, problem: &str) {
        let bytes = (self.offset + at as u64).saturating_sub(self.job_start);
        printer.record_error(
            ErrorKind::Decode,
            LANGUAGE,
            format!("syntax error: {problem}"),
            bytes,
        );
        self.job.failed = true;
    }

    fn print(&mut self, copies: u32, bytes: u64, printer: &PrinterState) {
        let job = std::mem::take(&mut self.job);
        if job.failed {
            // The error was recorded when it was found.
            return;
        }
        let settings = self.shared.settings();
        let width = settings.width.min(self.shared.head_width);
        let mut label = Bitmap::new(width, settings.length);
        let mut clipped = settings.width > self.shared.head_width;
        for placed in &self.image {
            clipped |= draw(&mut label, placed);
        }
        if settings.mirror {
            label = mirrored(&label);
        }
        if settings.direction == 1 {
            label = label.rotated_180();
        }
        let encoding = if self.image.is_empty() {
            "none"
        } else {
            "BITMAP"
        };
        printer.submit_label(DecodedLabel {
            bitmap: label,
            copies,
            language: LANGUAGE.to_owned(),
            encoding: encoding.to_owned(),
            bytes_received: bytes,
            clipped,
            unsupported_commands: job.unsupported,
            settings: job.settings,
        });
    }
}

/// Draws a `BITMAP` (bit 0 = black) onto the label in its mode. Returns whether black dots
/// fell outside the label.
fn draw(label: &mut Bitmap, placed: &PlacedBitmap) -> bool {
    let mut clipped = false;
    for (row_index, row) in placed.data.chunks(placed.bytes_per_row).enumerate() {
        let y = u64::from(placed.y) + row_index as u64;
        for (byte_index, &byte) in row.iter().enumerate() {
            for bit in 0..8u64 {
                let black = byte & (0x80 >> bit) == 0;
                let x = u64::from(placed.x) + byte_index as u64 * 8 + bit;
                if x >= u64::from(label.width()) || y >= u64::from(label.height()) {
                    clipped |= black;
                    continue;
                }
                let (x, y) = (x as u32, y as u32);
                match placed.mode {
                    0 => label.set(x, y, black),
                    1 if black => label.set(x, y, true),
                    2 if black => label.set(x, y, !label.get(x, y)),
                    _ => {}
                }
            }
        }
    }
    clipped
}

/// The label mirrored left to right (`DIRECTION n,1`).
fn mirrored(label: &Bitmap) -> Bitmap {
    let mut turned = Bitmap::new(label.width(), label.height());
    for y in 0..label.height() {
        for x in 0..label.width() {
            if label.get(x, y) {
                turned.set(label.width() - 1 - x, y, true);
            }
        }
    }
    turned
}

impl PrintStreamDecoder for TsplDecoder {
    fn feed(&mut self, input: &[u8], printer: &PrinterState, reply: &mut Vec<u8>) {
        self.pending.extend_from_slice(input);
        self.run(printer, reply, false);
    }

    fn finish(&mut self, printer: &PrinterState, end: StreamEnd) {
        let mut unsent = Vec::new();
        self.run(printer, &mut unsent, true);
        let how = match end {
            StreamEnd::Closed => "the connection closed",
            StreamEnd::Dropped => "the simulator dropped the connection",
            StreamEnd::Shutdown => "the simulator shut down",
        };
        let bytes = self.offset - self.job_start;
        let reason = if self.cut_inside_bitmap {
            format!("{how} inside BITMAP data after {bytes} bytes of the job")
        } else if self.job.drawn && !self.job.failed {
            format!("{how} before PRINT, {bytes} bytes into the job")
        } else {
            return;
        };
        printer.record_error(ErrorKind::Incomplete, LANGUAGE, reason, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printers::store::PrinterInfo;

    /// What a stream decoded to: replies, each label's size, bits and copies, error reasons.
    type Decoded = (Vec<u8>, Vec<((u32, u32), Vec<u8>, u32)>, Vec<String>);

    fn decode_with(stream: &[u8], cuts: &[usize], dpi: u32) -> Decoded {
        let printer = PrinterState::new(
            PrinterInfo {
                family: "tspl".to_owned(),
                model: "TE200".to_owned(),
                language: LANGUAGE.to_owned(),
                dpi,
                width_dots: 864,
            },
            None,
            None,
        );
        let mut decoder = TsplDecoder::new(Arc::new(TsplShared::new(dpi, 864)));
        let mut reply = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
            decoder.feed(&stream[from..cut], &printer, &mut reply);
            from = cut;
        }
        decoder.finish(&printer, StreamEnd::Closed);
        let labels = printer
            .labels()
            .iter()
            .map(|record| {
                let (_, bitmap) = printer.label(record.index).expect("listed");
                (
                    (record.width, record.height),
                    bitmap.as_bytes().to_vec(),
                    record.copies,
                )
            })
            .collect();
        let errors = printer.errors().into_iter().map(|e| e.reason).collect();
        (reply, labels, errors)
    }

    fn decode(stream: &[u8], cuts: &[usize]) -> Decoded {
        decode_with(stream, cuts, 203)
    }

    fn stream() -> Vec<u8> {
        // BITMAP data holding LF, CR, ESC and 'P' bytes, which must not end or start commands.
        let mut stream = b"SIZE 16 dot,2 dot\r\nGAP 3 mm,0 mm\r\nDIRECTION 0\r\n\
REFERENCE 0,0\r\nCLS\r\nTEXT 1,1,\"3\",0,1,1,\"X\"\r\nBITMAP 4,0,1,2,1,"
            .to_vec();
        stream.extend([0x0A, 0x1B]);
        stream.extend(b"\r\nPRINT 2,3\r\n\x1b!?CLS\nBITMAP 0,1,2,1,0,\x0D\x50\nPRINT 1\n");
        stream
    }

    #[test]
    fn every_split_point_decodes_the_same() {
        let whole = decode(&stream(), &[]);
        assert_eq!(whole.0, vec![0x00]);
        assert!(whole.2.is_empty(), "{whole:?}");
        // Bit 0 is black: 0x0A = 0000_1010 at x = 4 blackens x 4..8, 9 and 11; 0x1B =
        // 0001_1011 on the second row blackens x 4..6 and 9.
        assert_eq!(
            whole.1,
            vec![
                ((16, 2), vec![0x0F, 0x50, 0x0E, 0x40], 6),
                ((16, 2), vec![0x00, 0x00, 0xF2, 0xAF], 1),
            ]
        );
        for cut in 1..stream().len() {
            assert_eq!(decode(&stream(), &[cut]), whole, "split at {cut}");
        }
    }

    /// `SIZE` examples from TSC's "TSPL/TSPL2 Programming Manual" (Setup and System
    /// Commands, SIZE): `SIZE 3.5, 3.00` in inches and `SIZE 100 mm, 100 mm` in millimetres.
    #[test]
    fn size_in_inches_millimetres_and_dots() {
        let (_, labels, errors) = decode(b"SIZE 3.5, 3.00\r\nCLS\r\nPRINT 1\r\n", &[]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(labels[0].0, (711, 609));
        let (_, labels, _) = decode(b"SIZE 100 mm, 100 mm\r\nCLS\r\nPRINT 1\r\n", &[]);
        assert_eq!(labels[0].0, (799, 799));
        let (_, labels, _) = decode_with(b"SIZE 101.6 mm,152.4 mm\r\nPRINT 1\r\n", &[], 300);
        assert_eq!(labels[0].0, (864, 1800), "clipped to the head width");
    }

    #[test]
    fn overwrite_and_xor_modes_replace_and_flip_dots() {
        // A black first byte, then overwrite its left half white, then XOR the right half.
        let stream = b"SIZE 8 dot,1 dot\r\nCLS\r\nBITMAP 0,0,1,1,1,\x00\r\n\
BITMAP 0,0,1,1,0,\xF0\r\nBITMAP 0,0,1,1,2,\xFC\r\nPRINT 1\r\n";
        let (_, labels, errors) = decode(stream, &[]);
        assert!(errors.is_empty(), "{errors:?}");
        // After overwrite: 0000_1111; XOR with 0000_0011 black: 0000_1100.
        assert_eq!(labels[0].1, vec![0x0C]);
    }

    #[test]
    fn direction_one_turns_the_label() {
        let stream =
            b"SIZE 16 dot,2 dot\r\nDIRECTION 1\r\nCLS\r\nBITMAP 0,0,1,1,0,\x7F\r\nPRINT 1\r\n";
        let (_, labels, _) = decode(stream, &[]);
        assert_eq!(labels[0].1, vec![0x00, 0x00, 0x00, 0x01]);
    }

    #[test]
    fn unknown_commands_are_syntax_errors_without_their_text() {
        let stream = b"SIZE 16 dot,2 dot\r\nCLS\r\nHELLO Jane Doe, 1 Main St\r\nPRINT 1\r\n";
        let (_, labels, errors) = decode(stream, &[]);
        assert!(
            labels.is_empty(),
            "a job with a syntax error prints nothing"
        );
        assert_eq!(
            errors,
            vec!["syntax error: unknown command \"HELLO\"".to_owned()]
        );
        let (_, labels, errors) = decode(b"SIZE 4\r\nDENSITY 20\r\nPRINT 0\r\nPRINT 1\r\n", &[]);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(labels.is_empty(), "the failed job's PRINT prints nothing");
    }

    #[test]
    fn a_stream_ending_inside_bitmap_data_is_incomplete() {
        let (_, labels, errors) = decode(
            b"SIZE 16 dot,2 dot\r\nCLS\r\nBITMAP 0,0,2,2,0,\xFF\xFF",
            &[],
        );
        assert!(labels.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("inside BITMAP"), "{errors:?}");
        let (_, _, errors) = decode(b"CLS\r\nBITMAP 0,0,1,1,0,\x00\r\n", &[]);
        assert!(errors[0].contains("before PRINT"), "{errors:?}");
    }

    #[test]
    fn settings_stay_in_force_across_connections() {
        let shared = Arc::new(TsplShared::new(203, 864));
        let printer = PrinterState::new(
            PrinterInfo {
                family: "tspl".to_owned(),
                model: "TE200".to_owned(),
                language: LANGUAGE.to_owned(),
                dpi: 203,
                width_dots: 864,
            },
            None,
            None,
        );
        let mut first = TsplDecoder::new(Arc::clone(&shared));
        first.feed(b"SIZE 2,1\r\n", &printer, &mut Vec::new());
        let mut second = TsplDecoder::new(shared);
        second.feed(b"CLS\r\nPRINT 1\r\n", &printer, &mut Vec::new());
        let labels = printer.labels();
        assert_eq!((labels[0].width, labels[0].height), (406, 203));
    }
}
