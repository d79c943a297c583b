//! The LabelWriter print stream decoder, one per connection: the 450 series raster protocol or
//! the 550 series protocol, fed bytes split wherever TCP split them.
//!
//! 450 series: `ESC @` resets (a run of ESC bytes before it is skipped, as the printer skips
//! it); `ESC B n` dot tab, `ESC D n` bytes per line, `ESC L n1 n2` label length (recorded),
//! `ESC c/d/e/g` density, `ESC h/i` quality, `ESC f 1 n` blank lines, `SYN` + raw line,
//! `ETB` + run-length line, `ESC G` / `ESC E` end the label, `ESC A` asks for the status byte.
//!
//! 550 series: `ESC s` + job ID starts a job and `ESC Q` ends it; `ESC n` + index, `ESC D` +
//! 10 header bytes (bits per pixel, alignment, lines and dots per line, most significant byte
//! first) + raw lines; `ESC G` / `ESC E` end the label; `ESC A n` asks for the 32-byte status
//! and `ESC U` for the 64-byte SKU record; `ESC C n`, `ESC e`, `ESC h/i`, `ESC T n`, `ESC o n`
//! and `ESC L` are settings.
//!
//! A label is recorded at its feed with the head's full width: the printer burns lines from the
//! left edge of its head, so dots the host did not send are white.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use super::{
    loaded_media, lw450_status, lw550_status, sku_record, DymoModel, JobProgress, PrintEngine,
};
use crate::printers::bitmap::Bitmap;
use crate::printers::store::{DecodedLabel, ErrorKind, PrinterState};
use crate::printers::{PrintStreamDecoder, StreamEnd};

const ESC: u8 = 0x1B;
const SYN: u8 = 0x16;
const ETB: u8 = 0x17;

/// A label larger than this (in bytes of its bitmap) is refused instead of allocated: far more
/// than the 12 inches the longest LabelWriter label needs.
const MAX_LABEL_BYTES: usize = 64 * 1024 * 1024;

enum Step {
    NeedMore,
    Consumed(usize),
}

/// The label being received, until its feed.
#[derive(Debug, Default)]
struct LabelInProgress {
    /// Rows of the head's width, packed, top first.
    rows: Vec<u8>,
    row_count: u32,
    /// How lines came: `SYN`, `ETB`, `raw`.
    encodings: BTreeSet<&'static str>,
    clipped: bool,
    /// The first thing found wrong: the label becomes an error instead.
    error: Option<String>,
    unsupported: BTreeSet<String>,
}

/// Decodes the LabelWriter protocol arriving on one connection.
pub(crate) struct DymoDecoder {
    model: DymoModel,
    /// Bytes received and not consumed yet: at most one incomplete command or line.
    pending: Vec<u8>,
    /// Stream offset of `pending[0]`.
    offset: u64,
    /// Stream offset where the current label's bytes began.
    label_start: u64,
    /// 450 series: bytes per line (`ESC D`) and dot tab in bytes (`ESC B`).
    bytes_per_line: usize,
    dot_tab: usize,
    /// Settings in force, recorded with each label.
    settings: BTreeMap<String, String>,
    label: LabelInProgress,
    /// 550 series: this connection's job and density.
    progress: JobProgress,
    /// 550 series: the print engine every connection shares, and this connection's number.
    engine: Arc<PrintEngine>,
    connection: u64,
}

impl DymoDecoder {
    pub(crate) fn new(model: DymoModel, engine: Arc<PrintEngine>, connection: u64) -> Self {
        Self {
            model,
            pending: Vec::new(),
            offset: 0,
            label_start: 0,
            bytes_per_line: (model.head_dots() / 8) as usize,
            dot_tab: 0,
            settings: BTreeMap::new(),
            label: LabelInProgress::default(),
            progress: JobProgress {
                density_percent: 100,
                ..JobProgress::default()
            },
            engine,
            connection,
        }
    }

    fn head_stride(&self) -> usize {
        (self.model.head_dots() / 8) as usize
    }

    fn run(&mut self, printer: &PrinterState, reply: &mut Vec<u8>) {
        let buf = std::mem::take(&mut self.pending);
        let mut pos = 0;
        while pos < buf.len() {
            match self.step(&buf, pos, printer, reply) {
                Step::NeedMore => break,
                Step::Consumed(end) => pos = end,
            }
        }
        self.offset += pos as u64;
        self.pending = buf[pos..].to_vec();
    }

    fn step(
        &mut self,
        buf: &[u8],
        pos: usize,
        printer: &PrinterState,
        reply: &mut Vec<u8>,
    ) -> Step {
        let series_550 = self.model.is_550_series();
        match buf[pos] {
            ESC => self.command(buf, pos, printer, reply),
            SYN if !series_550 => self.raw_line(buf, pos),
            ETB if !series_550 => self.compressed_line(buf, pos),
            other => {
                self.label
                    .unsupported
                    .insert(format!("byte 0x{other:02X} outside a command"));
                Step::Consumed(pos + 1)
            }
        }
    }

    /// `need` bytes from `pos`, or `None` when they have not all arrived.
    fn take(buf: &[u8], pos: usize, need: usize) -> Option<&[u8]> {
        buf.get(pos..pos + need)
    }

    fn command(
        &mut self,
        buf: &[u8],
        pos: usize,
        printer: &PrinterState,
        reply: &mut Vec<u8>,
    ) -> Step {
        let Some(&letter) = buf.get(pos + 1) else {
            return Step::NeedMore;
        };
        if letter == ESC {
            // A run of ESC bytes (the reset preamble): each ESC before the last is skipped.
            return Step::Consumed(pos + 1);
        }
        let series_550 = self.model.is_550_series();
        // Commands with a fixed number of parameter bytes, by protocol.
        let params = match (series_550, letter) {
            (false, b'A') => 0,
            (true, b'A') => 1,
            (false, b'B' | b'D') => 1,
            (false, b'L') => 2,
            (false, b'f') => 2,
            (true, b's') => 4,
            (true, b'n') => 2,
            (true, b'C' | b'T' | b'o') => 1,
            (true, b'D') => return self.label_data(buf, pos),
            _ => 0,
        };
        let Some(command) = Self::take(buf, pos, 2 + params) else {
            return Step::NeedMore;
        };
        let after = pos + 2 + params;
        let end_offset = self.offset + after as u64;
        match (series_550, letter) {
            (_, b'@') => {
                // The reset clears what the printer had received of an unfinished label.
                self.label = LabelInProgress::default();
                self.bytes_per_line = self.head_stride();
                self.dot_tab = 0;
                self.settings.clear();
                self.label_start = end_offset;
            }
            (false, b'A') => {
                printer.note_status_query();
                reply.push(lw450_status(printer));
            }
            (true, b'A') => {
                printer.note_status_query();
                reply.extend_from_slice(&lw550_status(
                    self.model,
                    printer,
                    self.engine.active(),
                    &self.progress,
                ));
            }
            (true, b'U') => {
                printer.note_status_query();
                reply.extend_from_slice(&sku_record(self.model, printer));
            }
            (_, b'G' | b'E') => self.form_feed(printer, end_offset),
            (_, b'h') => self.set("quality", "text"),
            (_, b'i') => self.set("quality", "graphics"),
            (false, b'B') => {
                self.dot_tab = usize::from(command[2]);
                self.set("ESC B", &command[2].to_string());
            }
            (false, b'D') => {
                self.bytes_per_line = usize::from(command[2]);
                self.set("ESC D", &command[2].to_string());
            }
            (false, b'L') => {
                let length = u16::from_be_bytes([command[2], command[3]]);
                self.set("ESC L", &length.to_string());
            }
            (false, b'c') => self.set("density", "light"),
            (false, b'd') => self.set("density", "medium"),
            (false, b'e') => self.set("density", "normal"),
            (false, b'g') => self.set("density", "dark"),
            (false, b'f') => {
                // ESC f 1 n: feed n blank lines.
                let blank = vec![0u8; self.bytes_per_line];
                for _ in 0..command[3] {
                    self.add_line(&blank);
                }
            }
            (true, b's') => {
                let job_id = u32::from_le_bytes([command[2], command[3], command[4], command[5]]);
                self.progress.job_id = Some(job_id);
                self.engine.begin(self.connection, job_id);
                self.set("job_id", &job_id.to_string());
                self.label_start = self.offset + pos as u64;
            }
            (true, b'n') => {
                let index = u16::from_le_bytes([command[2], command[3]]);
                self.engine.set_label_index(self.connection, index);
                self.set("label_index", &index.to_string());
            }
            (true, b'C') => {
                self.progress.density_percent = command[2];
                self.set("density", &format!("{}%", command[2]));
            }
            (true, b'e') => {
                self.progress.density_percent = 100;
                self.set("density", "100%");
            }
            (true, b'T') => self.set("content_type", &format!("0x{:02X}", command[2])),
            (true, b'o') => self.set("label_count", &command[2].to_string()),
            (true, b'L') => self.set("ESC L", "maximum label length"),
            (true, b'Q') => {
                if self.label.row_count > 0 || self.label.error.is_some() {
                    self.form_feed(printer, end_offset);
                }
                self.progress.job_id = None;
                self.engine.end(self.connection);
                self.settings.remove("job_id");
                self.label_start = end_offset;
            }
            (_, other) => {
                let name = if other.is_ascii_graphic() {
                    format!("ESC {}", char::from(other))
                } else {
                    format!("ESC 0x{other:02X}")
                };
                self.label.unsupported.insert(name);
            }
        }
        Step::Consumed(after)
    }

    fn set(&mut self, key: &str, value: &str) {
        self.settings.insert(key.to_owned(), value.to_owned());
    }

    fn fail(&mut self, reason: String) {
        self.label.error.get_or_insert(reason);
    }

    /// Adds one line of the 450 series at the dot tab; what falls past the head is clipped.
    fn add_line(&mut self, line: &[u8]) {
        let stride = self.head_stride();
        if self.label.rows.len() + stride > MAX_LABEL_BYTES {
            self.fail(format!(
                "the label is longer than {} lines",
                MAX_LABEL_BYTES / stride
            ));
            return;
        }
        let mut row = vec![0u8; stride];
        for (i, &byte) in line.iter().enumerate() {
            match row.get_mut(self.dot_tab + i) {
                Some(slot) => *slot = byte,
                None if byte != 0 => self.label.clipped = true,
                None => {}
            }
        }
        self.label.rows.extend_from_slice(&row);
        self.label.row_count += 1;
    }

    /// `SYN` + exactly bytes-per-line raw bytes.
    fn raw_line(&mut self, buf: &[u8], pos: usize) -> Step {
        let Some(line) = Self::take(buf, pos + 1, self.bytes_per_line) else {
            return Step::NeedMore;
        };
        let line = line.to_vec();
        self.add_line(&line);
        self.label.encodings.insert("SYN");
        Step::Consumed(pos + 1 + self.bytes_per_line)
    }

    /// `ETB` + run bytes until the runs cover the line's dots.
    fn compressed_line(&mut self, buf: &[u8], pos: usize) -> Step {
        let dots = self.bytes_per_line * 8;
        let mut line = vec![0u8; self.bytes_per_line];
        let mut filled = 0;
        let mut at = pos + 1;
        while filled < dots {
            let Some(&run) = buf.get(at) else {
                return Step::NeedMore;
            };
            at += 1;
            let count = usize::from(run & 0x7F) + 1;
            if filled + count > dots {
                self.fail(format!(
                    "an ETB run of {count} dots overruns the line: {} of {dots} dots were filled",
                    filled
                ));
                return Step::Consumed(at);
            }
            if run & 0x80 != 0 {
                for dot in filled..filled + count {
                    line[dot / 8] |= 0x80 >> (dot % 8);
                }
            }
            filled += count;
        }
        self.add_line(&line);
        self.label.encodings.insert("ETB");
        Step::Consumed(at)
    }

    /// 550 series `ESC D`: the 12-byte header, then lines x ceil(dots / 8) raw bytes.
    fn label_data(&mut self, buf: &[u8], pos: usize) -> Step {
        let Some(header) = Self::take(buf, pos, 12) else {
            return Step::NeedMore;
        };
        let (bits, alignment) = (header[2], header[3]);
        let lines = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let dots = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let bytes_per_line = dots.div_ceil(8) as usize;
        let size = (lines as usize).saturating_mul(bytes_per_line);
        if bits != 1 || size == 0 || size > MAX_LABEL_BYTES {
            // Without a usable size the data cannot be skipped: the rest of the stream is
            // read as commands, as the printer would.
            self.fail(format!(
                "ESC D header asks for {bits} bits per pixel, alignment {alignment}, \
                 {lines} lines of {dots} dots: not a printable label"
            ));
            return Step::Consumed(pos + 12);
        }
        let Some(data) = Self::take(buf, pos + 12, size) else {
            return Step::NeedMore;
        };
        let stride = self.head_stride();
        for line in data.chunks(bytes_per_line) {
            let mut row = vec![0u8; stride];
            for (i, &byte) in line.iter().enumerate() {
                // Bits past the line's dots are padding and never print.
                let byte = if i == bytes_per_line - 1 && dots % 8 != 0 {
                    byte & (0xFFu8 << (8 - dots % 8))
                } else {
                    byte
                };
                match row.get_mut(i) {
                    Some(slot) => *slot = byte,
                    None if byte != 0 => self.label.clipped = true,
                    None => {}
                }
            }
            self.label.rows.extend_from_slice(&row);
            self.label.row_count += 1;
        }
        self.label.encodings.insert("raw");
        self.set("ESC D", &format!("{lines} lines x {dots} dots"));
        Step::Consumed(pos + 12 + size)
    }

    /// `ESC G` or `ESC E`: the label in progress is printed (or becomes an error).
    fn form_feed(&mut self, printer: &PrinterState, end_offset: u64) {
        let label = std::mem::take(&mut self.label);
        let bytes = end_offset - self.label_start;
        self.label_start = end_offset;
        let language = self.model.language();
        if let Some(reason) = label.error {
            printer.record_error(ErrorKind::Decode, language, reason, bytes);
            return;
        }
        if label.row_count == 0 {
            // A feed without lines only advances the roll.
            return;
        }
        let mut settings = self.settings.clone();
        if self.model.is_550_series() {
            let media = loaded_media(self.model, printer);
            if media.unrecognized {
                printer.record_error(
                    ErrorKind::Decode,
                    language,
                    "the loaded labels are not recognised as DYMO labels; the printer refuses \
                     to print on them"
                        .to_owned(),
                    bytes,
                );
                return;
            }
            settings.insert(
                "loaded_media".to_owned(),
                format!("{}x{} mm", media.width_mm, media.length_mm),
            );
        }
        let head = self.model.head_dots();
        let mut bitmap = Bitmap::new(head, label.row_count);
        bitmap.draw_packed(0, 0, self.head_stride(), &label.rows, true);
        printer.submit_label(DecodedLabel {
            bitmap,
            copies: 1,
            language: language.to_owned(),
            encoding: label.encodings.into_iter().collect::<Vec<_>>().join("+"),
            bytes_received: bytes,
            clipped: label.clipped,
            unsupported_commands: label.unsupported,
            settings,
        });
    }
}

impl PrintStreamDecoder for DymoDecoder {
    fn feed(&mut self, input: &[u8], printer: &PrinterState, reply: &mut Vec<u8>) {
        self.pending.extend_from_slice(input);
        self.run(printer, reply);
    }

    fn finish(&mut self, printer: &PrinterState, end: StreamEnd) {
        // A job cut off with its connection no longer holds the printer.
        self.engine.end(self.connection);
        let cut_command = !self.pending.is_empty();
        let open_job = self.progress.job_id.is_some();
        if !(cut_command || open_job || self.label.row_count > 0) {
            return;
        }
        let bytes = self.offset + self.pending.len() as u64 - self.label_start;
        let how = match end {
            StreamEnd::Closed => "the connection closed",
            StreamEnd::Dropped => "the simulator dropped the connection",
            StreamEnd::Shutdown => "the simulator shut down",
        };
        let inside = if cut_command {
            "inside a command or line"
        } else if open_job {
            "inside a job (no ESC Q)"
        } else {
            "before the label's feed (no ESC G or ESC E)"
        };
        printer.record_error(
            ErrorKind::Incomplete,
            self.model.language(),
            format!("{how} {inside} after {bytes} bytes of the label"),
            bytes,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printers::store::PrinterInfo;

    fn printer(model: DymoModel) -> PrinterState {
        PrinterState::new(
            PrinterInfo {
                family: "dymo".to_owned(),
                model: model.name().to_owned(),
                language: model.language().to_owned(),
                dpi: 300,
                width_dots: model.head_dots(),
            },
            None,
            None,
        )
    }

    /// What a stream decoded to: replies, each label's packed bits and height, error reasons.
    type Decoded = (Vec<u8>, Vec<(Vec<u8>, u32)>, Vec<String>);

    /// Decodes `stream` fed in two pieces cut at `cut`, then ends it.
    fn decode(model: DymoModel, stream: &[u8], cut: usize) -> Decoded {
        let printer = printer(model);
        let mut decoder = DymoDecoder::new(model, Arc::new(PrintEngine::default()), 0);
        let mut reply = Vec::new();
        decoder.feed(&stream[..cut], &printer, &mut reply);
        decoder.feed(&stream[cut..], &printer, &mut reply);
        decoder.finish(&printer, StreamEnd::Closed);
        let labels = printer
            .labels()
            .iter()
            .map(|record| {
                let (_, bitmap) = printer.label(record.index).expect("listed");
                (bitmap.as_bytes().to_vec(), bitmap.height())
            })
            .collect();
        let errors = printer.errors().into_iter().map(|e| e.reason).collect();
        (reply, labels, errors)
    }

    #[test]
    fn raster_stream_decodes_the_same_at_every_split() {
        let mut stream = vec![ESC; 156];
        stream.extend_from_slice(&[ESC, b'@', ESC, b'A', ESC, b'B', 1, ESC, b'D', 2]);
        stream.extend_from_slice(&[SYN, 0xFF, 0x81]);
        stream.extend_from_slice(&[ETB, 0x83, 0x0B]); // 4 black, 12 white
        stream.extend_from_slice(&[ESC, b'E']);
        let whole = decode(DymoModel::Lw450, &stream, 0);
        assert_eq!(whole.0, vec![0x03], "a ready printer at top of form");
        assert!(whole.2.is_empty(), "{:?}", whole.2);
        let mut expected = vec![0u8; 84 * 2];
        expected[1] = 0xFF; // dot tab of one byte
        expected[2] = 0x81;
        expected[84 + 1] = 0xF0;
        assert_eq!(whole.1, vec![(expected, 2)]);
        for cut in 1..stream.len() {
            assert_eq!(
                decode(DymoModel::Lw450, &stream, cut),
                whole,
                "split at {cut}"
            );
        }
    }

    #[test]
    fn lw550_job_decodes_and_answers_status_and_sku() {
        let mut stream = vec![
            ESC, b'A', 1, ESC, b'U', ESC, b's', 9, 0, 0, 0, ESC, b'n', 0, 0,
        ];
        stream.extend_from_slice(&[ESC, b'D', 1, 2, 0, 0, 0, 2, 0, 0, 0, 12]);
        stream.extend_from_slice(&[0xFF, 0xFF, 0x80, 0x10]);
        stream.extend_from_slice(&[ESC, b'E', ESC, b'Q']);
        let whole = decode(DymoModel::Lw550, &stream, 0);
        assert_eq!(whole.0.len(), 32 + 64);
        assert_eq!(whole.0[10], 8, "media ok");
        assert_eq!(&whole.0[32..34], &[0xB6, 0xCA], "SKU magic");
        assert!(whole.2.is_empty(), "{:?}", whole.2);
        let mut expected = vec![0u8; 84 * 2];
        expected[0] = 0xFF;
        expected[1] = 0xF0; // the 4 padding bits after 12 dots never print
        expected[84] = 0x80;
        expected[85] = 0x10;
        assert_eq!(whole.1, vec![(expected, 2)]);
        for cut in 1..stream.len() {
            assert_eq!(
                decode(DymoModel::Lw550, &stream, cut),
                whole,
                "split at {cut}"
            );
        }
    }

    #[test]
    fn a_cut_job_is_incomplete_and_an_overrunning_run_is_an_error() {
        let (_, labels, errors) =
            decode(DymoModel::Lw550, &[ESC, b's', 1, 0, 0, 0, ESC, b'n', 0], 0);
        assert!(labels.is_empty());
        assert!(errors[0].contains("inside a command"), "{errors:?}");

        let stream = [ESC, b'D', 1, ETB, 0x8F, ESC, b'E'];
        let (_, labels, errors) = decode(DymoModel::Lw450, &stream, 0);
        assert!(labels.is_empty());
        assert!(errors[0].contains("overruns"), "{errors:?}");
    }
}
