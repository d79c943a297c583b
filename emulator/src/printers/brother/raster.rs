//! The Brother QL raster stream decoder.
//!
//! Commands (Brother Raster Command References, "Print command list"): `00h` invalidate,
//! `ESC @` initialize, `ESC i S` status request, `ESC i a n` command mode, `ESC i !` automatic
//! status notification, `ESC i z` print information (10 bytes), `ESC i M` various mode,
//! `ESC i A` cut every n labels, `ESC i K` expanded mode, `ESC i d` margin (2 bytes), `M n`
//! compression, `g 00 n` + n bytes a raster line, `Z` a blank line, `FF` print a page,
//! `Control-Z` print the last page. Raster lines cover the whole head and arrive mirrored:
//! their first bit is the dot at the right-hand end of the head as the label comes out.
//!
//! Anything the decoder cannot read is recorded as an error and the rest of the job is
//! skipped until the host sends invalidate (at least 100 bytes of 00h) followed by `ESC @`,
//! which is how the references tell a host to return a printer to the receiving state.

use std::collections::{BTreeMap, BTreeSet};

use super::{status_type, BrotherShared, ERROR2_REPLACE_MEDIA};
use crate::printers::bitmap::Bitmap;
use crate::printers::store::{DecodedLabel, ErrorKind, PrinterState};
use crate::printers::{PrintStreamDecoder, StreamEnd};

/// The language name in label records and `GET /status`.
pub(crate) const LANGUAGE: &str = "brother-ql-raster";

/// More raster lines than the longest label (3 m at 300 dpi) is not a label.
const MAX_LINES: usize = 40_000;

/// Zero bytes that make an invalidate command good enough to leave the error state.
const MIN_INVALIDATE: usize = 100;

/// What has arrived for the page being built.
#[derive(Debug, Default)]
struct Page {
    /// The `ESC i z` parameters, when sent.
    info: Option<[u8; 10]>,
    /// Decoded raster lines, each `bytes_per_line` bytes.
    lines: Vec<Vec<u8>>,
    /// Whether the lines were PackBits-compressed.
    compressed: bool,
}

impl Page {
    fn started(&self) -> bool {
        self.info.is_some() || !self.lines.is_empty()
    }
}

/// Decodes the raster stream arriving on one connection.
pub(crate) struct RasterDecoder {
    shared: BrotherShared,
    /// Bytes received and not consumed yet: at most one incomplete command.
    pending: Vec<u8>,
    /// Stream offset of `pending[0]`.
    offset: u64,
    /// Stream offset where the current page's bytes began.
    page_start: u64,
    /// `M 02` is in force.
    compression: bool,
    page: Page,
    /// Raw parameters of the setting commands since `ESC @`, keyed by command.
    settings: BTreeMap<String, String>,
    unsupported: BTreeSet<String>,
    /// After an error: skipping until invalidate and `ESC @`.
    discarding: bool,
    /// Zero bytes seen in a row while discarding.
    zeros: usize,
}

enum Step {
    NeedMore,
    Consumed(usize),
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Expands PackBits data: a header 0..=127 is followed by that many plus one literal bytes,
/// a header -1..=-127 by one byte repeated one minus that many times.
fn unpack(packed: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < packed.len() {
        let header = packed[i] as i8;
        if header >= 0 {
            let len = header as usize + 1;
            let data = packed
                .get(i + 1..i + 1 + len)
                .ok_or_else(|| format!("PackBits literal at byte {i} runs past the line"))?;
            out.extend_from_slice(data);
            i += 1 + len;
        } else if header == -128 {
            return Err(format!("PackBits header 80h at byte {i}"));
        } else {
            let byte = *packed
                .get(i + 1)
                .ok_or_else(|| format!("PackBits run at byte {i} has no data byte"))?;
            out.extend(std::iter::repeat_n(byte, (1 - i16::from(header)) as usize));
            i += 2;
        }
    }
    Ok(out)
}

fn describe_media(kind: u8, width: u8, length: u8) -> String {
    match kind {
        0x0A => format!("{width} mm continuous tape"),
        0x0B => format!("{width} x {length} mm die-cut labels"),
        other => format!("media type {other:02X}h, {width} x {length} mm"),
    }
}

impl RasterDecoder {
    pub(crate) fn new(shared: BrotherShared) -> Self {
        Self {
            shared,
            pending: Vec::new(),
            offset: 0,
            page_start: 0,
            compression: false,
            page: Page::default(),
            settings: BTreeMap::new(),
            unsupported: BTreeSet::new(),
            discarding: false,
            zeros: 0,
        }
    }

    /// Sends a status to the host, unless the printer plays a silent network port.
    fn answer(&self, reply: &mut Vec<u8>, status: [u8; 32]) {
        if !self.shared.silent {
            reply.extend_from_slice(&status);
        }
    }

    /// Records the job as failed and skips the rest of it.
    fn fail(&mut self, printer: &PrinterState, kind: ErrorKind, reason: String, at: u64) {
        printer.record_error(kind, LANGUAGE, reason, at.saturating_sub(self.page_start));
        self.page = Page::default();
        self.discarding = true;
        self.zeros = 0;
    }

    fn initialize(&mut self, at: u64) {
        self.compression = false;
        self.page = Page::default();
        self.settings.clear();
        self.page_start = at;
    }

    fn run(&mut self, printer: &PrinterState, reply: &mut Vec<u8>) {
        let buf = std::mem::take(&mut self.pending);
        let mut pos = 0;
        while pos < buf.len() {
            let step = if self.discarding {
                self.skip(&buf, pos)
            } else {
                self.command(&buf, pos, printer, reply)
            };
            match step {
                Step::NeedMore => break,
                Step::Consumed(end) => pos = end,
            }
        }
        self.offset += pos as u64;
        self.pending = buf[pos..].to_vec();
    }

    /// While discarding: looks for invalidate followed by `ESC @`.
    fn skip(&mut self, buf: &[u8], pos: usize) -> Step {
        let mut i = pos;
        while i < buf.len() {
            match buf[i] {
                0x00 => self.zeros += 1,
                0x1B if self.zeros >= MIN_INVALIDATE => match buf.get(i + 1) {
                    None if i > pos => return Step::Consumed(i),
                    None => return Step::NeedMore,
                    Some(0x40) => {
                        self.discarding = false;
                        self.zeros = 0;
                        let at = self.offset + (i + 2) as u64;
                        self.initialize(at);
                        return Step::Consumed(i + 2);
                    }
                    Some(_) => self.zeros = 0,
                },
                _ => self.zeros = 0,
            }
            i += 1;
        }
        Step::Consumed(i)
    }

    fn command(
        &mut self,
        buf: &[u8],
        pos: usize,
        printer: &PrinterState,
        reply: &mut Vec<u8>,
    ) -> Step {
        let at = |i: usize| self.offset + i as u64;
        let rest = &buf[pos..];
        match rest[0] {
            0x00 => {
                let run = rest.iter().take_while(|&&b| b == 0).count();
                Step::Consumed(pos + run)
            }
            0x1B => {
                let Some(&second) = rest.get(1) else {
                    return Step::NeedMore;
                };
                match second {
                    0x40 => {
                        self.initialize(at(pos + 2));
                        Step::Consumed(pos + 2)
                    }
                    0x69 => self.escape_i(buf, pos, printer, reply),
                    other => {
                        let reason = format!("unknown command ESC {other:02X}h");
                        self.fail(printer, ErrorKind::Decode, reason, at(pos));
                        Step::Consumed(pos + 2)
                    }
                }
            }
            b'M' => {
                let Some(&mode) = rest.get(1) else {
                    return Step::NeedMore;
                };
                match mode {
                    0x00 => self.compression = false,
                    0x02 if self.shared.model.compression => self.compression = true,
                    0x02 => {
                        let reason = format!(
                            "the {} does not take compressed raster data (M 02)",
                            self.shared.model.name
                        );
                        self.fail(printer, ErrorKind::Decode, reason, at(pos));
                        return Step::Consumed(pos + 2);
                    }
                    other => {
                        let reason = format!("compression mode {other:02X}h is not 00h or 02h");
                        self.fail(printer, ErrorKind::Decode, reason, at(pos));
                        return Step::Consumed(pos + 2);
                    }
                }
                self.settings.insert("M".to_owned(), hex(&[mode]));
                Step::Consumed(pos + 2)
            }
            b'g' => self.raster_line(buf, pos, printer),
            b'Z' => {
                if self.push_line(vec![0; self.shared.model.bytes_per_line], printer, at(pos)) {
                    self.page.compressed |= self.compression;
                }
                Step::Consumed(pos + 1)
            }
            0x0C | 0x1A => {
                self.print_page(printer, reply, at(pos + 1));
                Step::Consumed(pos + 1)
            }
            other => {
                let reason = format!("unknown command byte {other:02X}h");
                self.fail(printer, ErrorKind::Decode, reason, at(pos));
                Step::Consumed(pos + 1)
            }
        }
    }

    /// `ESC i` commands.
    fn escape_i(
        &mut self,
        buf: &[u8],
        pos: usize,
        printer: &PrinterState,
        reply: &mut Vec<u8>,
    ) -> Step {
        let Some(&letter) = buf.get(pos + 2) else {
            return Step::NeedMore;
        };
        let params = match letter {
            b'S' => 0,
            b'a' | b'!' | b'M' | b'A' | b'K' => 1,
            b'd' => 2,
            b'z' => 10,
            other => {
                let reason = format!("unknown command ESC i {}", char::from(other));
                let at = self.offset + pos as u64;
                self.fail(printer, ErrorKind::Decode, reason, at);
                return Step::Consumed(pos + 3);
            }
        };
        let end = pos + 3 + params;
        let Some(values) = buf.get(pos + 3..end) else {
            return Step::NeedMore;
        };
        let name = format!("ESC i {}", char::from(letter));
        match letter {
            b'S' => {
                if !self.shared.silent {
                    printer.note_status_query();
                }
                self.answer(
                    reply,
                    self.shared.status(printer, status_type::REPLY, false, 0),
                );
            }
            b'z' => {
                let mut info = [0u8; 10];
                info.copy_from_slice(values);
                if !self.media_matches(&info, printer) {
                    self.answer(
                        reply,
                        self.shared.status(
                            printer,
                            status_type::ERROR_OCCURRED,
                            false,
                            ERROR2_REPLACE_MEDIA,
                        ),
                    );
                    let reason = format!(
                        "the job is for {} but {} is loaded (replace media)",
                        describe_media(info[1], info[2], info[3]),
                        self.shared.roll.describe()
                    );
                    self.fail(
                        printer,
                        ErrorKind::Refused,
                        reason,
                        self.offset + end as u64,
                    );
                    return Step::Consumed(end);
                }
                if self.page.lines.is_empty() {
                    self.page.info = Some(info);
                }
                self.settings.insert(name, hex(values));
            }
            _ => {
                self.settings.insert(name, hex(values));
            }
        }
        Step::Consumed(end)
    }

    /// Whether the media the print information names (in its valid fields) is loaded.
    fn media_matches(&self, info: &[u8; 10], printer: &PrinterState) -> bool {
        // Without a roll the "no media" error comes when the page is printed.
        if printer.faults().paper_out {
            return true;
        }
        let roll = &self.shared.roll;
        let flags = info[0];
        let kind_ok = flags & 0x02 == 0 || info[1] == roll.type_code();
        let width_ok = flags & 0x04 == 0 || info[2] == roll.width_mm;
        let length_ok = flags & 0x08 == 0 || !roll.die_cut || info[3] == roll.length_mm;
        kind_ok && width_ok && length_ok
    }

    /// `g 00 n` and n bytes.
    fn raster_line(&mut self, buf: &[u8], pos: usize, printer: &PrinterState) -> Step {
        let (Some(&zero), Some(&len)) = (buf.get(pos + 1), buf.get(pos + 2)) else {
            return Step::NeedMore;
        };
        let at = self.offset + pos as u64;
        if zero != 0 {
            let reason = format!("raster line command g is followed by {zero:02X}h, not 00h");
            self.fail(printer, ErrorKind::Decode, reason, at);
            return Step::Consumed(pos + 1);
        }
        let end = pos + 3 + usize::from(len);
        let Some(data) = buf.get(pos + 3..end) else {
            return Step::NeedMore;
        };
        let expected = self.shared.model.bytes_per_line;
        let line = if self.compression {
            match unpack(data) {
                Ok(line) if line.len() == expected => line,
                Ok(line) => {
                    let reason = format!(
                        "a compressed raster line expands to {} bytes; the {} takes {expected}",
                        line.len(),
                        self.shared.model.name
                    );
                    self.fail(printer, ErrorKind::Decode, reason, at);
                    return Step::Consumed(end);
                }
                Err(reason) => {
                    self.fail(printer, ErrorKind::Decode, reason, at);
                    return Step::Consumed(end);
                }
            }
        } else if data.len() == expected {
            data.to_vec()
        } else {
            let reason = format!(
                "a raster line of {} bytes; the {} takes {expected}",
                data.len(),
                self.shared.model.name
            );
            self.fail(printer, ErrorKind::Decode, reason, at);
            return Step::Consumed(end);
        };
        if self.push_line(line, printer, at) {
            self.page.compressed |= self.compression;
        }
        Step::Consumed(end)
    }

    /// Adds a line to the page; false (and an error) when the page is longer than any label.
    fn push_line(&mut self, line: Vec<u8>, printer: &PrinterState, at: u64) -> bool {
        if self.page.lines.len() >= MAX_LINES {
            let reason = format!("a page of more than {MAX_LINES} raster lines");
            self.fail(printer, ErrorKind::Decode, reason, at);
            return false;
        }
        self.page.lines.push(line);
        true
    }

    /// `FF` or `Control-Z`: prints the page built so far.
    fn print_page(&mut self, printer: &PrinterState, reply: &mut Vec<u8>, end: u64) {
        let page = std::mem::take(&mut self.page);
        if !page.started() {
            // A print command with nothing before it prints nothing.
            self.page_start = end;
            return;
        }
        if let Some(info) = page.info {
            let declared = u32::from_le_bytes([info[4], info[5], info[6], info[7]]);
            if declared as usize != page.lines.len() {
                let reason = format!(
                    "ESC i z announced {declared} raster lines but {} arrived",
                    page.lines.len()
                );
                self.fail(printer, ErrorKind::Decode, reason, end);
                return;
            }
        }
        let faults = printer.faults();
        if faults.paper_out || faults.head_open {
            self.answer(
                reply,
                self.shared
                    .status(printer, status_type::ERROR_OCCURRED, false, 0),
            );
            let what = match (faults.paper_out, faults.head_open) {
                (true, true) => "no media and cover open",
                (true, false) => "no media",
                _ => "cover open",
            };
            let reason = format!("printer reports {what}");
            self.fail(printer, ErrorKind::Refused, reason, end);
            return;
        }
        let (bitmap, clipped) = self.label_bitmap(&page.lines);
        let mut settings = self.settings.clone();
        settings.insert("raster_lines".to_owned(), page.lines.len().to_string());
        printer.submit_label(DecodedLabel {
            bitmap,
            copies: 1,
            language: LANGUAGE.to_owned(),
            encoding: if page.compressed {
                "PackBits".to_owned()
            } else {
                "uncompressed".to_owned()
            },
            bytes_received: end - self.page_start,
            clipped,
            unsupported_commands: self.unsupported.clone(),
            settings,
        });
        self.answer(
            reply,
            self.shared
                .status(printer, status_type::PHASE_CHANGE, true, 0),
        );
        if !printer.faults().paused {
            self.answer(
                reply,
                self.shared
                    .status(printer, status_type::PRINTING_COMPLETED, true, 0),
            );
            self.answer(
                reply,
                self.shared
                    .status(printer, status_type::PHASE_CHANGE, false, 0),
            );
        }
        self.page_start = end;
    }

    /// The label as it comes out of the printer, the right way round: the roll's printable
    /// width across, the lines (a die-cut label's printable length) along. Returns whether
    /// black dots fell outside the printable area.
    fn label_bitmap(&self, lines: &[Vec<u8>]) -> (Bitmap, bool) {
        let roll = &self.shared.roll;
        let width = roll.printable_width;
        let height = if roll.die_cut {
            roll.printable_length
        } else {
            lines.len() as u32
        };
        let offset = roll.right_margin + self.shared.model.extra_right_margin;
        let printable = offset as usize..(offset + width) as usize;
        let mut bitmap = Bitmap::new(width, height);
        let mut clipped = false;
        for (y, line) in lines.iter().enumerate() {
            for (index, &byte) in line.iter().enumerate() {
                if byte == 0 {
                    continue;
                }
                for bit in 0..8 {
                    if byte & (0x80 >> bit) == 0 {
                        continue;
                    }
                    let head_dot = index * 8 + bit;
                    if !printable.contains(&head_dot) || y as u32 >= height {
                        clipped = true;
                        continue;
                    }
                    // The first printable dot of a line is the label's right-hand edge.
                    let x = offset + width - 1 - head_dot as u32;
                    bitmap.set(x, y as u32, true);
                }
            }
        }
        (bitmap, clipped)
    }
}

impl PrintStreamDecoder for RasterDecoder {
    fn feed(&mut self, input: &[u8], printer: &PrinterState, reply: &mut Vec<u8>) {
        self.pending.extend_from_slice(input);
        self.run(printer, reply);
    }

    fn finish(&mut self, printer: &PrinterState, end: StreamEnd) {
        let leftover = self.pending.iter().any(|&b| b != 0);
        if !self.discarding && (self.page.started() || leftover) {
            let reason = match end {
                StreamEnd::Shutdown => "the simulator stopped in the middle of a page",
                StreamEnd::Closed | StreamEnd::Dropped => {
                    "the connection ended in the middle of a page"
                }
            };
            let at = self.offset + self.pending.len() as u64;
            printer.record_error(
                ErrorKind::Incomplete,
                LANGUAGE,
                format!("{reason} ({} raster lines received)", self.page.lines.len()),
                at.saturating_sub(self.page_start),
            );
        }
        self.page = Page::default();
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_follows_the_reference_example() {
        let packed = [
            0xED, 0x00, 0xFF, 0x22, 0x05, 0x23, 0xBA, 0xBF, 0xA2, 0x22, 0x2B,
        ];
        let mut expected = vec![0u8; 20];
        expected.extend([0x22, 0x22, 0x23, 0xBA, 0xBF, 0xA2, 0x22, 0x2B]);
        assert_eq!(unpack(&packed), Ok(expected));
        assert!(unpack(&[0x05, 1]).is_err());
        assert!(unpack(&[0x80, 1]).is_err());
    }
}
