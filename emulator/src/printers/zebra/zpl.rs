//! The ZPL II stream decoder: finds `^XA`...`^XZ` formats in a byte stream split anywhere,
//! answers `~HS` and `^HH` at once, and turns each format into a label or an error.
//!
//! ZPL commands are a prefix (`^` or `~`) and two letters; a command's parameters run up to
//! the next prefix. `^GF` is the exception: its data is either ASCII up to the next `^`, or
//! exactly `b` binary bytes, which may contain any byte, prefixes included. Tilde commands are
//! acted on wherever they appear, also between formats and inside ASCII graphic data, as the
//! printer processes them on arrival.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::graphic::{self, GraphicEncoding, MAX_GRAPHIC_BYTES};
use super::{host_status, ZebraShared, ZplSettings};
use crate::printers::bitmap::Bitmap;
use crate::printers::store::{DecodedLabel, ErrorKind, PrinterState};
use crate::printers::{PrintStreamDecoder, StreamEnd};

const LANGUAGE: &str = "zpl";

/// Parameters of a command longer than this without reaching the next prefix are not waited
/// for: the stream is not ZPL, and buffering it would only grow memory.
const MAX_PENDING_PARAMETERS: usize = 64 * 1024;

/// A graphic decoded from `^GF`, placed where `^LH` and `^FO` put it.
#[derive(Debug)]
struct PlacedGraphic {
    x: u32,
    y: u32,
    bytes_per_row: usize,
    data: Vec<u8>,
}

/// A format between `^XA` and `^XZ`, as far as it has arrived.
#[derive(Debug)]
struct Format {
    /// Stream offset of its `^XA`, to count the bytes it took.
    start: u64,
    settings: ZplSettings,
    /// `^FO` of the current field; `^FS` resets it.
    origin: (u32, u32),
    copies: u32,
    graphics: Vec<PlacedGraphic>,
    encodings: Vec<&'static str>,
    unsupported: BTreeSet<String>,
    /// The first thing found wrong: the format becomes an error instead of a label.
    error: Option<String>,
}

/// What handling one command did with the buffered bytes.
enum Step {
    /// The command is not complete yet: keep the bytes from its prefix on.
    NeedMore,
    /// The command was handled; go on from this position.
    Consumed(usize),
}

/// Decodes the ZPL arriving on one connection.
pub(crate) struct ZplDecoder {
    zebra: Arc<ZebraShared>,
    /// Bytes received and not consumed yet: at most one incomplete command.
    pending: Vec<u8>,
    /// Stream offset of `pending[0]`.
    offset: u64,
    format: Option<Format>,
}

impl ZplDecoder {
    pub(crate) fn new(zebra: Arc<ZebraShared>) -> Self {
        Self {
            zebra,
            pending: Vec::new(),
            offset: 0,
            format: None,
        }
    }

    fn run(&mut self, printer: &PrinterState, reply: &mut Vec<u8>, at_eof: bool) {
        let mut buf = std::mem::take(&mut self.pending);
        let mut pos = 0;
        loop {
            let Some(found) = buf[pos..].iter().position(|&b| is_prefix(b)) else {
                pos = buf.len();
                break;
            };
            let start = pos + found;
            if buf.len() - start < 3 {
                pos = if at_eof { buf.len() } else { start };
                break;
            }
            let name = [
                buf[start + 1].to_ascii_uppercase(),
                buf[start + 2].to_ascii_uppercase(),
            ];
            let step = if buf[start] == b'~' {
                self.tilde(name, printer, reply);
                Step::Consumed(start + 3)
            } else {
                self.caret(name, &buf, start, at_eof, printer, reply)
            };
            match step {
                Step::NeedMore => {
                    pos = start;
                    break;
                }
                Step::Consumed(end) => pos = end,
            }
        }
        buf.drain(..pos);
        self.offset += pos as u64;
        self.pending = buf;
    }

    fn tilde(&mut self, name: [u8; 2], printer: &PrinterState, reply: &mut Vec<u8>) {
        match &name {
            b"HS" => {
                printer.note_status_query();
                let length = self.zebra.settings().length;
                reply.extend(host_status(printer, length, self.format.is_some()));
            }
            b"JA" => {
                // Cancel all: the printer drops its buffered formats and the one in progress.
                let discarded = printer.discard_held();
                tracing::info!(discarded, "~JA cancelled all buffered formats");
                self.format = None;
            }
            _ => self.note_unsupported(printer, format!("~{}", String::from_utf8_lossy(&name))),
        }
    }

    fn note_unsupported(&mut self, printer: &PrinterState, command: String) {
        match &mut self.format {
            Some(format) => {
                format.unsupported.insert(command);
            }
            None => printer.note_unsupported_outside_job(&command),
        }
    }

    fn caret(
        &mut self,
        name: [u8; 2],
        buf: &[u8],
        start: usize,
        at_eof: bool,
        printer: &PrinterState,
        reply: &mut Vec<u8>,
    ) -> Step {
        let after = start + 3;
        match &name {
            b"XA" => {
                if self.format.is_none() {
                    self.format = Some(Format {
                        start: self.offset + start as u64,
                        settings: self.zebra.settings(),
                        origin: (0, 0),
                        copies: 1,
                        graphics: Vec::new(),
                        encodings: Vec::new(),
                        unsupported: BTreeSet::new(),
                        error: None,
                    });
                }
                return Step::Consumed(after);
            }
            b"XZ" => {
                if let Some(format) = self.format.take() {
                    self.complete(format, self.offset + after as u64, printer);
                }
                return Step::Consumed(after);
            }
            b"FS" => {
                if let Some(format) = &mut self.format {
                    format.origin = (0, 0);
                }
                return Step::Consumed(after);
            }
            b"HH" => {
                let settings = match &self.format {
                    Some(format) => format.settings.clone(),
                    None => self.zebra.settings(),
                };
                reply.extend(self.zebra.configuration_report(printer, &settings));
                return Step::Consumed(after);
            }
            b"GF" => return self.graphic_field(buf, after, at_eof, printer, reply),
            _ => {}
        }
        let end = match buf[after..].iter().position(|&b| is_prefix(b)) {
            Some(found) => after + found,
            None if at_eof || buf.len() - after > MAX_PENDING_PARAMETERS => buf.len(),
            None => return Step::NeedMore,
        };
        let params = String::from_utf8_lossy(&buf[after..end]).trim().to_owned();
        let command = format!("^{}", String::from_utf8_lossy(&name));
        let Some(format) = &mut self.format else {
            printer.note_unsupported_outside_job(&command);
            return Step::Consumed(end);
        };
        let fields: Vec<&str> = params.split(',').map(str::trim).collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok());
        match &name {
            b"PW" => {
                if let Some(width) = number(0).filter(|w| (2..=32_000).contains(w)) {
                    format.settings.width = width;
                }
            }
            b"LL" => {
                if let Some(length) = number(0).filter(|l| (1..=32_000).contains(l)) {
                    format.settings.length = length;
                }
            }
            b"LH" => {
                format.settings.home = (number(0).unwrap_or(0), number(1).unwrap_or(0));
            }
            b"FO" => format.origin = (number(0).unwrap_or(0), number(1).unwrap_or(0)),
            b"PQ" => format.copies = number(0).unwrap_or(1).max(1),
            b"PO" => {
                format.settings.inverted = fields[0].eq_ignore_ascii_case("I");
                format.settings.values.insert(command, params);
            }
            b"PR" | b"MD" | b"MN" | b"CI" => {
                format.settings.values.insert(command, params);
            }
            _ => {
                format.unsupported.insert(command);
            }
        }
        Step::Consumed(end)
    }

    /// `^GFa,b,c,d,data`.
    fn graphic_field(
        &mut self,
        buf: &[u8],
        after: usize,
        at_eof: bool,
        printer: &PrinterState,
        reply: &mut Vec<u8>,
    ) -> Step {
        // The four parameters before the data end at the fourth comma.
        let mut commas = Vec::with_capacity(4);
        let mut scan = after;
        while commas.len() < 4 {
            match buf.get(scan) {
                Some(&b',') => commas.push(scan),
                Some(&b) if is_prefix(b) => {
                    self.fail(format!(
                        "^GF has fewer than five parameters: {:?}",
                        String::from_utf8_lossy(&buf[after..scan])
                    ));
                    return Step::Consumed(scan);
                }
                Some(_) if scan - after > 64 => {
                    self.fail("^GF parameters are not numbers followed by commas".to_owned());
                    return Step::Consumed(scan);
                }
                Some(_) => {}
                None if at_eof => {
                    self.fail("the stream ends inside ^GF parameters".to_owned());
                    return Step::Consumed(buf.len());
                }
                None => return Step::NeedMore,
            }
            scan += 1;
        }
        let text =
            |from: usize, to: usize| String::from_utf8_lossy(&buf[from..to]).trim().to_owned();
        let kind = text(after, commas[0]).to_ascii_uppercase();
        let numbers: Option<Vec<usize>> = [
            (commas[0], commas[1]),
            (commas[1], commas[2]),
            (commas[2], commas[3]),
        ]
        .iter()
        .map(|&(from, to)| text(from + 1, to).parse::<usize>().ok())
        .collect();
        let data_start = commas[3] + 1;
        let Some(&[stated, total, bytes_per_row]) = numbers.as_deref() else {
            self.fail(format!(
                "^GF byte counts are not numbers: {:?}",
                String::from_utf8_lossy(&buf[after..commas[3]])
            ));
            return Step::Consumed(data_start);
        };
        let (decoded, end) = match kind.as_str() {
            "" | "A" => {
                let end = match buf[data_start..].iter().position(|&b| b == b'^') {
                    Some(found) => data_start + found,
                    None if at_eof => buf.len(),
                    None if buf.len() - data_start > 2 * MAX_GRAPHIC_BYTES + 64 => {
                        self.fail(
                            "^GF ASCII data is longer than any image the simulator accepts"
                                .to_owned(),
                        );
                        return Step::Consumed(buf.len());
                    }
                    None => return Step::NeedMore,
                };
                let data = self.strip_tilde_commands(&buf[data_start..end], printer, reply);
                (
                    graphic::decode_ascii(&data, stated, total, bytes_per_row),
                    end,
                )
            }
            "B" | "C" => {
                if stated > MAX_GRAPHIC_BYTES {
                    self.fail(format!(
                        "^GF{kind} announces {stated} bytes, more than the simulator accepts"
                    ));
                    return Step::Consumed(data_start);
                }
                let end = data_start + stated;
                if end > buf.len() {
                    if at_eof {
                        self.fail(format!(
                            "the stream ends after {} of {stated} ^GF{kind} bytes",
                            buf.len() - data_start
                        ));
                        return Step::Consumed(buf.len());
                    }
                    return Step::NeedMore;
                }
                let data = &buf[data_start..end];
                let decoded = if kind == "B" {
                    graphic::decode_binary(data, total, bytes_per_row)
                        .map(|raw| (raw, GraphicEncoding::Binary))
                } else {
                    graphic::decode_compressed_binary(data, total, bytes_per_row)
                        .map(|raw| (raw, GraphicEncoding::CompressedBinary))
                };
                (decoded, end)
            }
            other => {
                self.fail(format!("^GF compression type {other:?} is not A, B or C"));
                return Step::Consumed(data_start);
            }
        };
        match decoded {
            Ok((data, encoding)) => {
                if let Some(format) = &mut self.format {
                    let (home_x, home_y) = format.settings.home;
                    format.graphics.push(PlacedGraphic {
                        x: home_x.saturating_add(format.origin.0),
                        y: home_y.saturating_add(format.origin.1),
                        bytes_per_row,
                        data,
                    });
                    format.encodings.push(encoding.name());
                }
            }
            Err(error) => self.fail(error.to_string()),
        }
        Step::Consumed(end)
    }

    /// Acts on tilde commands found inside ASCII graphic data and returns the data without
    /// them. Hex, ACS and base64 never contain `~`, so every `~` there starts a command.
    fn strip_tilde_commands(
        &mut self,
        data: &[u8],
        printer: &PrinterState,
        reply: &mut Vec<u8>,
    ) -> Vec<u8> {
        if !data.contains(&b'~') {
            return data.to_vec();
        }
        let mut kept = Vec::with_capacity(data.len());
        let mut i = 0;
        while i < data.len() {
            if data[i] == b'~' && i + 2 < data.len() {
                let name = [
                    data[i + 1].to_ascii_uppercase(),
                    data[i + 2].to_ascii_uppercase(),
                ];
                self.tilde(name, printer, reply);
                i += 3;
            } else {
                kept.push(data[i]);
                i += 1;
            }
        }
        kept
    }

    /// Marks the format in progress as failed (the first reason wins).
    fn fail(&mut self, reason: String) {
        match &mut self.format {
            Some(format) => {
                format.error.get_or_insert(reason);
            }
            None => tracing::debug!(%reason, "malformed ^GF outside a format ignored"),
        }
    }

    fn complete(&mut self, format: Format, end: u64, printer: &PrinterState) {
        let bytes = end - format.start;
        // Setting commands stay in force for later formats, as on the printer.
        self.zebra.store_settings(&format.settings);
        if let Some(reason) = format.error {
            printer.record_error(ErrorKind::Decode, LANGUAGE, reason, bytes);
            return;
        }
        let settings = format.settings;
        let mut bitmap = Bitmap::new(settings.width, settings.length);
        let mut clipped = false;
        for graphic in &format.graphics {
            clipped |= bitmap.draw_packed(
                graphic.x,
                graphic.y,
                graphic.bytes_per_row,
                &graphic.data,
                true,
            );
        }
        if settings.inverted {
            bitmap = bitmap.rotated_180();
        }
        let mut encodings: Vec<&str> = Vec::new();
        for encoding in format.encodings {
            if !encodings.contains(&encoding) {
                encodings.push(encoding);
            }
        }
        let encoding = if encodings.is_empty() {
            "none".to_owned()
        } else {
            encodings.join("+")
        };
        let values: BTreeMap<String, String> = settings.values;
        printer.submit_label(DecodedLabel {
            bitmap,
            copies: format.copies,
            language: LANGUAGE.to_owned(),
            encoding,
            bytes_received: bytes,
            clipped,
            unsupported_commands: format.unsupported,
            settings: values,
        });
    }
}

impl PrintStreamDecoder for ZplDecoder {
    fn feed(&mut self, input: &[u8], printer: &PrinterState, reply: &mut Vec<u8>) {
        self.pending.extend_from_slice(input);
        self.run(printer, reply, false);
    }

    fn finish(&mut self, printer: &PrinterState, end: StreamEnd) {
        // Commands still waiting for their parameters' end are complete now; answers can no
        // longer be sent.
        let mut unsent = Vec::new();
        self.run(printer, &mut unsent, true);
        if let Some(format) = self.format.take() {
            let bytes = self.offset - format.start;
            let how = match end {
                StreamEnd::Closed => "the connection closed",
                StreamEnd::Dropped => "the simulator dropped the connection",
                StreamEnd::Shutdown => "the simulator shut down",
            };
            printer.record_error(
                ErrorKind::Incomplete,
                LANGUAGE,
                format!("{how} inside a format (^XA without ^XZ) after {bytes} bytes"),
                bytes,
            );
        }
    }
}

fn is_prefix(byte: u8) -> bool {
    byte == b'^' || byte == b'~'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printers::store::PrinterInfo;

    fn printer() -> PrinterState {
        let info = PrinterInfo {
            family: "zebra".to_owned(),
            model: "ZD620".to_owned(),
            language: LANGUAGE.to_owned(),
            dpi: 203,
            width_dots: 812,
        };
        PrinterState::new(info, None, None)
    }

    /// Feeds `stream` in the given pieces, then ends it; returns the replies, the labels'
    /// bits and the errors' reasons.
    fn decode(stream: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<Vec<u8>>, Vec<String>) {
        let printer = printer();
        let mut decoder = ZplDecoder::new(ZebraShared::for_tests(812, 1218));
        let mut reply = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
            decoder.feed(&stream[from..cut], &printer, &mut reply);
            from = cut;
        }
        decoder.finish(&printer, StreamEnd::Closed);
        let bits = (0..printer.labels().len())
            .map(|i| printer.label(i).expect("listed").1.as_bytes().to_vec())
            .collect();
        let errors = printer.errors().into_iter().map(|e| e.reason).collect();
        (reply, bits, errors)
    }

    fn stream() -> Vec<u8> {
        // Binary data holding both prefixes, hex with a status query inside, and ACS.
        let mut stream = b"^XA^PW16^LL3^FO4,1^GFB,2,2,1,".to_vec();
        stream.extend([b'^', b'~']);
        stream.extend(b"^FS^PQ2^XZ\r\n~HS^xa^pw16^ll2^gfa,4,4,2,F0~HS0F\r\n8001^fs^xz");
        stream.extend(b"^XA^PW16^LL2^FO0,0^GFA,4,4,2,H0HF\n:^FS^XZ");
        stream
    }

    #[test]
    fn every_split_point_decodes_the_same() {
        let whole = decode(&stream(), &[]);
        assert_eq!(whole.1.len(), 3, "{whole:?}");
        assert!(whole.2.is_empty(), "{whole:?}");
        assert_eq!(whole.0.iter().filter(|&&b| b == 0x02).count(), 6);
        for cut in 1..stream().len() {
            assert_eq!(decode(&stream(), &[cut]), whole, "split at {cut}");
        }
        let every_byte: Vec<usize> = (1..stream().len()).collect();
        assert_eq!(decode(&stream(), &every_byte), whole);
    }

    #[test]
    fn binary_prefix_bytes_land_in_the_bitmap() {
        let (_, bits, _) = decode(&stream(), &[]);
        // 0x5E = 0101_1110 at x = 4 on row 1, 0x7E on row 2; row 0 is blank.
        assert_eq!(bits[0], vec![0x00, 0x00, 0x05, 0xE0, 0x07, 0xE0]);
        assert_eq!(bits[1], vec![0xF0, 0x0F, 0x80, 0x01]);
        assert_eq!(bits[2], vec![0x00, 0xFF, 0x00, 0xFF]);
    }

    #[test]
    fn a_stream_ending_inside_a_format_is_an_incomplete_error() {
        let (_, bits, errors) = decode(b"^XA^PW16^LL2^GFA,2,2,1,FF", &[]);
        assert!(bits.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("inside a format"), "{errors:?}");
    }
}
