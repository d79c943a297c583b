//! The EPL2 stream decoder (LP2844-class printers in page mode): `N` clears the image buffer,
//! `q` and `Q` set the label size, `GW` draws raw binary graphics, `P` prints, and `^ee`
//! asks for the error status. Other commands are ignored and recorded as unsupported.
//!
//! EPL2 is line based (each command ends with LF, usually CR LF), except that `GW` carries
//! `bytes_per_row x rows` raw bytes after its fourth comma, which may contain any byte.
//! GW polarity is inverted compared to ZPL: bit 0 is a black dot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::graphic::MAX_GRAPHIC_BYTES;
use super::{epl_status, ZebraShared};
use crate::printers::bitmap::Bitmap;
use crate::printers::store::{DecodedLabel, ErrorKind, PrinterState};
use crate::printers::{PrintStreamDecoder, StreamEnd};

const LANGUAGE: &str = "epl2";

/// A line longer than this without LF is not EPL2; it is dropped instead of buffered.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug)]
struct PlacedGraphic {
    x: u32,
    y: u32,
    bytes_per_row: usize,
    data: Vec<u8>,
}

/// The image buffer and what was said about it since the last `N`.
#[derive(Debug, Default)]
struct Form {
    graphics: Vec<PlacedGraphic>,
    unsupported: BTreeSet<String>,
    settings: BTreeMap<String, String>,
    /// The first thing found wrong: printing it records an error instead of a label.
    error: Option<String>,
}

/// Decodes the EPL2 arriving on one connection.
pub(crate) struct EplDecoder {
    zebra: Arc<ZebraShared>,
    /// Bytes received and not consumed yet: at most one incomplete command.
    pending: Vec<u8>,
    /// Stream offset of `pending[0]`.
    offset: u64,
    form: Form,
    /// Stream offset where the bytes of the next label begin: the last `N`, or the end of the
    /// last `P`.
    job_start: u64,
    /// Whether the stream ended inside `GW` data.
    cut_inside_graphic: bool,
}

enum Step {
    NeedMore,
    Consumed(usize),
}

impl EplDecoder {
    pub(crate) fn new(zebra: Arc<ZebraShared>) -> Self {
        Self {
            zebra,
            pending: Vec::new(),
            offset: 0,
            form: Form::default(),
            job_start: 0,
            cut_inside_graphic: false,
        }
    }

    fn run(&mut self, printer: &PrinterState, reply: &mut Vec<u8>, at_eof: bool) {
        let mut buf = std::mem::take(&mut self.pending);
        let mut pos = 0;
        loop {
            while pos < buf.len() && matches!(buf[pos], b'\r' | b'\n') {
                pos += 1;
            }
            if pos == buf.len() {
                break;
            }
            let step = if buf[pos..].starts_with(b"GW") {
                self.graphic(&buf, pos, at_eof)
            } else {
                self.line(&buf, pos, at_eof, printer, reply)
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

    /// `GWx,y,bytes_per_row,rows,<raw>`.
    fn graphic(&mut self, buf: &[u8], start: usize, at_eof: bool) -> Step {
        let mut commas = Vec::with_capacity(4);
        let mut scan = start + 2;
        while commas.len() < 4 {
            match buf.get(scan) {
                Some(&b',') => commas.push(scan),
                Some(&b'\n') => {
                    self.fail(format!(
                        "GW has fewer than five parameters: {:?}",
                        String::from_utf8_lossy(&buf[start..scan]).trim_end()
                    ));
                    return Step::Consumed(scan + 1);
                }
                Some(_) if scan - start > 64 => {
                    self.fail("GW parameters are not numbers followed by commas".to_owned());
                    return Step::Consumed(scan);
                }
                Some(_) => {}
                None if at_eof => {
                    self.cut_inside_graphic = true;
                    return Step::Consumed(buf.len());
                }
                None => return Step::NeedMore,
            }
            scan += 1;
        }
        let field = |from: usize, to: usize| {
            String::from_utf8_lossy(&buf[from..to])
                .trim()
                .parse::<usize>()
                .ok()
        };
        let parsed = (
            field(start + 2, commas[0]),
            field(commas[0] + 1, commas[1]),
            field(commas[1] + 1, commas[2]),
            field(commas[2] + 1, commas[3]),
        );
        let data_start = commas[3] + 1;
        let (Some(x), Some(y), Some(bytes_per_row), Some(rows)) = parsed else {
            self.fail(format!(
                "GW parameters are not numbers: {:?}",
                String::from_utf8_lossy(&buf[start..commas[3]])
            ));
            return Step::Consumed(data_start);
        };
        let size = bytes_per_row.saturating_mul(rows);
        if bytes_per_row == 0 || rows == 0 || size > MAX_GRAPHIC_BYTES {
            self.fail(format!(
                "GW size {bytes_per_row} bytes x {rows} rows is not a usable image"
            ));
            return Step::Consumed(data_start);
        }
        let end = data_start + size;
        if end > buf.len() {
            if at_eof {
                self.cut_inside_graphic = true;
                return Step::Consumed(buf.len());
            }
            return Step::NeedMore;
        }
        self.form.graphics.push(PlacedGraphic {
            x: u32::try_from(x).unwrap_or(u32::MAX),
            y: u32::try_from(y).unwrap_or(u32::MAX),
            bytes_per_row,
            data: buf[data_start..end].to_vec(),
        });
        Step::Consumed(end)
    }

    fn line(
        &mut self,
        buf: &[u8],
        start: usize,
        at_eof: bool,
        printer: &PrinterState,
        reply: &mut Vec<u8>,
    ) -> Step {
        let (line_end, next) = match buf[start..].iter().position(|&b| b == b'\n') {
            Some(found) => (start + found, start + found + 1),
            None if at_eof || buf.len() - start > MAX_LINE => (buf.len(), buf.len()),
            None => return Step::NeedMore,
        };
        let line = String::from_utf8_lossy(&buf[start..line_end])
            .trim_end_matches('\r')
            .to_owned();
        let line_start = self.offset + start as u64;
        let after_line = self.offset + next as u64;
        if line.eq_ignore_ascii_case("^ee") {
            printer.note_status_query();
            reply.extend(epl_status(printer));
        } else if line == "N" {
            self.form = Form::default();
            self.job_start = line_start;
        } else if let Some(width) = line.strip_prefix('q') {
            match width.trim().parse::<u32>() {
                Ok(width) if (8..=32_000).contains(&width) => {
                    let mut settings = self.zebra.settings();
                    settings.width = width;
                    self.zebra.store_settings(&settings);
                    self.form.settings.insert("q".to_owned(), width.to_string());
                }
                _ => self.fail(format!(
                    "q width {:?} is not a number of dots",
                    width.trim()
                )),
            }
        } else if let Some(size) = line.strip_prefix('Q') {
            let length = size.split(',').next().unwrap_or_default().trim();
            match length.parse::<u32>() {
                Ok(length) if (1..=32_000).contains(&length) => {
                    let mut settings = self.zebra.settings();
                    settings.length = length;
                    self.zebra.store_settings(&settings);
                    self.form
                        .settings
                        .insert("Q".to_owned(), size.trim().to_owned());
                }
                _ => self.fail(format!("Q length {length:?} is not a number of dots")),
            }
        } else if let Some(quantity) = line.strip_prefix('P').filter(|rest| {
            rest.chars()
                .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
        }) {
            let mut numbers = quantity.split(',').map(|n| n.trim().parse::<u32>().ok());
            let sets = numbers.next().flatten().unwrap_or(1).max(1);
            let copies_each = numbers.next().flatten().unwrap_or(1).max(1);
            self.print(
                sets.saturating_mul(copies_each),
                after_line - self.job_start,
                printer,
            );
            self.job_start = after_line;
        } else if !line.trim().is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .take(2)
                .collect();
            let name = if name.is_empty() {
                line.chars().take(2).collect()
            } else {
                name
            };
            self.form.unsupported.insert(name);
        }
        Step::Consumed(next)
    }

    fn fail(&mut self, reason: String) {
        self.form.error.get_or_insert(reason);
    }

    fn print(&mut self, copies: u32, bytes: u64, printer: &PrinterState) {
        if let Some(reason) = &self.form.error {
            printer.record_error(ErrorKind::Decode, LANGUAGE, reason.clone(), bytes);
            return;
        }
        let settings = self.zebra.settings();
        let mut bitmap = Bitmap::new(settings.width, settings.length);
        let mut clipped = false;
        for graphic in &self.form.graphics {
            // EPL2 GW: bit 0 is black.
            clipped |= bitmap.draw_packed(
                graphic.x,
                graphic.y,
                graphic.bytes_per_row,
                &graphic.data,
                false,
            );
        }
        let encoding = if self.form.graphics.is_empty() {
            "none"
        } else {
            "EPL2"
        };
        printer.submit_label(DecodedLabel {
            bitmap,
            copies,
            language: LANGUAGE.to_owned(),
            encoding: encoding.to_owned(),
            bytes_received: bytes,
            clipped,
            unsupported_commands: self.form.unsupported.clone(),
            settings: self.form.settings.clone(),
        });
    }
}

impl PrintStreamDecoder for EplDecoder {
    fn feed(&mut self, input: &[u8], printer: &PrinterState, reply: &mut Vec<u8>) {
        self.pending.extend_from_slice(input);
        self.run(printer, reply, false);
    }

    fn finish(&mut self, printer: &PrinterState, end: StreamEnd) {
        let mut unsent = Vec::new();
        self.run(printer, &mut unsent, true);
        if self.cut_inside_graphic {
            let bytes = self.offset - self.job_start;
            let how = match end {
                StreamEnd::Closed => "the connection closed",
                StreamEnd::Dropped => "the simulator dropped the connection",
                StreamEnd::Shutdown => "the simulator shut down",
            };
            printer.record_error(
                ErrorKind::Incomplete,
                LANGUAGE,
                format!("{how} inside GW graphic data after {bytes} bytes of the job"),
                bytes,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printers::store::PrinterInfo;

    /// What a stream decoded to: replies, each label's bits with its copies, error reasons.
    type Decoded = (Vec<u8>, Vec<(Vec<u8>, u32)>, Vec<String>);

    /// Feeds `stream` cut at `cuts`, then ends it.
    fn decode(stream: &[u8], cuts: &[usize]) -> Decoded {
        let printer = PrinterState::new(
            PrinterInfo {
                family: "zebra".to_owned(),
                model: "LP2844".to_owned(),
                language: LANGUAGE.to_owned(),
                dpi: 203,
                width_dots: 812,
            },
            None,
            None,
        );
        let mut decoder = EplDecoder::new(ZebraShared::for_tests(812, 1218));
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
                (bitmap.as_bytes().to_vec(), record.copies)
            })
            .collect();
        let errors = printer.errors().into_iter().map(|e| e.reason).collect();
        (reply, labels, errors)
    }

    fn stream() -> Vec<u8> {
        // GW data holding LF, CR and '^' bytes, which must not end the command.
        let mut stream = b"\r\nN\r\nq16\r\nQ2,24\r\nA10,10,0,1,1,1,N,\"X\"\r\nGW4,0,1,2,".to_vec();
        stream.extend([0x0A, 0x5E]);
        stream.extend(b"\r\nP2,3\r\n^ee\r\nN\nGW0,1,2,1,\x0D\xF0\nP1\n");
        stream
    }

    #[test]
    fn every_split_point_decodes_the_same() {
        let whole = decode(&stream(), &[]);
        assert_eq!(whole.0, b"00\r\n");
        assert!(whole.2.is_empty(), "{whole:?}");
        // Bit 0 is black: 0x0A = 0000_1010 at x = 4 blackens x 4..8, 9 and 11.
        assert_eq!(
            whole.1,
            vec![
                (vec![0x0F, 0x50, 0x0A, 0x10], 6),
                (vec![0x00, 0x00, 0xF2, 0x0F], 1)
            ]
        );
        for cut in 1..stream().len() {
            assert_eq!(decode(&stream(), &[cut]), whole, "split at {cut}");
        }
    }

    #[test]
    fn a_stream_ending_inside_gw_data_is_an_incomplete_error() {
        let (_, labels, errors) = decode(b"N\r\nq16\r\nQ2,24\r\nGW0,0,2,2,\xFF\xFF", &[]);
        assert!(labels.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("inside GW"), "{errors:?}");
    }
}
