//! From one-bit pages to a Brother QL raster command stream. Pure: no I/O.
//!
//! The stream follows "Print data overview" in Brother's Raster Command References
//! (QL-700 series section 3.1, QL-710W/720NW and QL-800 series section 2.1):
//!
//! 1. invalidate (200 or 400 x 00h), then `ESC @` (initialize), once per job;
//! 2. per page: `ESC i a 01` (raster mode, where the model has the command), `ESC i z` (media
//!    type, width and length in mm, raster line count, first or later page), `ESC i M` (auto
//!    cut), `ESC i A 01` (cut every label), `ESC i K` (cut at end), `ESC i d` (feed margin),
//!    `M 02` or `M 00` (PackBits or not, where the model compresses);
//! 3. the raster lines: `g 00 n` and `n` bytes per line, or `Z` for a blank line when
//!    compressing;
//! 4. `FF` (0Ch) after every page but the last, `Control-Z` (1Ah) after the last.
//!
//! Copies are pages sent again: the protocol has no copy count. A raster line covers the
//! whole print head (720 dots, 1296 on the QL-1100 family) and is sent mirrored: the first
//! bit of a line is the dot at the right-hand end of the head as the label comes out, so a
//! label's left edge lands on the bit `offset + printable width - 1`, where `offset` is the
//! roll's right margin plus the model's extra margin.

use crate::media::{Media, MediaForm};
use crate::packbits;

/// `ESC @`.
const INITIALIZE: &[u8] = b"\x1B\x40";
/// `ESC i a 01`: switch to raster mode.
const RASTER_MODE: &[u8] = b"\x1B\x69\x61\x01";
/// Print information flags of `ESC i z`: media type, width, length valid; quality first;
/// "printer recovery", which the manual says is always on.
const PI_KIND: u8 = 0x02;
const PI_WIDTH: u8 = 0x04;
const PI_LENGTH: u8 = 0x08;
const PI_QUALITY: u8 = 0x40;
const PI_RECOVER: u8 = 0x80;
/// The feed margin for continuous tape: 35 dots, the 3 mm of the manual's example.
pub const CONTINUOUS_MARGIN_DOTS: u16 = 35;

/// What differs between the QL models, as far as the raster stream is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadModel {
    /// Bytes in one raster line: 90 (720 dots), or 162 (1296 dots) on the QL-1100 family.
    pub bytes_per_line: usize,
    /// Dots added to every roll's right margin (44 on the QL-1100 family's wider head).
    pub extra_right_margin: u32,
    /// Whether the model takes `M 02` (the QL-700 and QL-800 do not).
    pub compression: bool,
    /// Whether the model knows `ESC i a` (the QL-700 is always in raster mode).
    pub mode_switch: bool,
    /// Zero bytes of the invalidate command.
    pub invalidate_len: usize,
    /// Shortest label in dots the printer feeds on continuous tape.
    pub min_length_dots: u32,
    /// Longest label in dots.
    pub max_length_dots: u32,
    /// Whether the model takes the 102 mm rolls.
    pub wide: bool,
}

impl HeadModel {
    /// Dots across the print head.
    pub fn head_dots(&self) -> u32 {
        (self.bytes_per_line * 8) as u32
    }
}

/// How raster lines are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// PackBits where the model has it and it makes the page smaller.
    Auto,
    /// Always PackBits (refused on models without it).
    PackBits,
    /// Never.
    None,
}

/// When the cutter cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// After every label.
    EachLabel,
    /// Once, after the last label of the job.
    EndOfJob,
    /// Never: the user tears the tape.
    Never,
}

/// Job options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RasterOptions {
    pub compression: Compression,
    pub cut: CutMode,
    /// `PI_QUALITY`: priority to print quality over speed.
    pub quality: bool,
    /// Copies of every page, collated.
    pub copies: u32,
}

impl Default for RasterOptions {
    fn default() -> Self {
        RasterOptions {
            compression: Compression::Auto,
            cut: CutMode::EachLabel,
            quality: true,
            copies: 1,
        }
    }
}

/// One page: `height` rows of `ceil(width / 8)` bytes, MSB first, 1 = black.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
}

/// Why a job cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RasterError {
    #[error("the job has no pages")]
    NoPages,
    #[error("copies must be at least 1")]
    NoCopies,
    #[error("page {page} is empty or its data does not match {width} x {height} dots")]
    BadPage {
        page: usize,
        width: u32,
        height: u32,
    },
    #[error("page {page} is {width} dots wide; the loaded roll prints at most {printable} dots")]
    TooWide {
        page: usize,
        width: u32,
        printable: u32,
    },
    #[error("page {page} is {height} dots long; the labels print at most {printable} dots")]
    TooLongForLabel {
        page: usize,
        height: u32,
        printable: u32,
    },
    #[error("page {page} is {height} dots long; this printer prints at most {max} dots")]
    TooLong { page: usize, height: u32, max: u32 },
    #[error("this printer does not take compressed raster data")]
    CompressionUnsupported,
    #[error("the {0} roll does not fit this printer's print head")]
    RollTooWide(&'static str),
}

/// What the encoder did, for the print report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncodeSummary {
    /// Pages sent, copies included.
    pub pages_sent: u32,
    /// Pages sent with PackBits lines.
    pub compressed_pages: u32,
}

/// Encodes `pages` for `media` on `model`.
pub fn encode_job(
    model: &HeadModel,
    media: &Media,
    pages: &[Page<'_>],
    options: &RasterOptions,
) -> Result<(Vec<u8>, EncodeSummary), RasterError> {
    if pages.is_empty() {
        return Err(RasterError::NoPages);
    }
    if options.copies == 0 {
        return Err(RasterError::NoCopies);
    }
    if options.compression == Compression::PackBits && !model.compression {
        return Err(RasterError::CompressionUnsupported);
    }
    let offset = media.right_margin + model.extra_right_margin;
    if offset + media.printable_width > model.head_dots() || (media.wide_only && !model.wide) {
        return Err(RasterError::RollTooWide(media.id));
    }
    // Lay out every page first: a job with one bad page sends nothing.
    let mut laid_out = Vec::with_capacity(pages.len());
    for (index, page) in pages.iter().enumerate() {
        laid_out.push(lay_out(model, media, offset, index, page)?);
    }

    let mut out = vec![0u8; model.invalidate_len];
    out.extend_from_slice(INITIALIZE);
    let mut summary = EncodeSummary::default();
    let total = laid_out.len() as u64 * u64::from(options.copies);
    let mut sent = 0u64;
    for _ in 0..options.copies {
        for lines in &laid_out {
            let compress = match options.compression {
                Compression::None => false,
                Compression::PackBits => true,
                Compression::Auto => model.compression && compression_pays(lines),
            };
            page_header(
                &mut out,
                model,
                media,
                lines.len() as u32,
                sent == 0,
                options,
            );
            if model.compression {
                out.extend_from_slice(if compress { b"M\x02" } else { b"M\x00" });
            }
            for line in lines {
                push_line(&mut out, line, compress);
            }
            sent += 1;
            out.push(if sent == total { 0x1A } else { 0x0C });
            summary.pages_sent += 1;
            if compress {
                summary.compressed_pages += 1;
            }
        }
    }
    Ok((out, summary))
}

/// The page's raster lines, mirrored onto the head, padded to the label length.
fn lay_out(
    model: &HeadModel,
    media: &Media,
    offset: u32,
    index: usize,
    page: &Page<'_>,
) -> Result<Vec<Vec<u8>>, RasterError> {
    let stride = page.width.div_ceil(8) as usize;
    if page.width == 0 || page.height == 0 || page.data.len() != stride * page.height as usize {
        return Err(RasterError::BadPage {
            page: index,
            width: page.width,
            height: page.height,
        });
    }
    if page.width > media.printable_width {
        return Err(RasterError::TooWide {
            page: index,
            width: page.width,
            printable: media.printable_width,
        });
    }
    let lines = match media.form {
        MediaForm::DieCut => {
            if page.height > media.printable_length {
                return Err(RasterError::TooLongForLabel {
                    page: index,
                    height: page.height,
                    printable: media.printable_length,
                });
            }
            // A die-cut label is always sent whole, so the printer feeds to the next one.
            media.printable_length
        }
        MediaForm::Continuous => {
            if page.height > model.max_length_dots {
                return Err(RasterError::TooLong {
                    page: index,
                    height: page.height,
                    max: model.max_length_dots,
                });
            }
            page.height.max(model.min_length_dots)
        }
    };
    let left_edge = offset + media.printable_width - 1;
    let mut out = Vec::with_capacity(lines as usize);
    for row in page.data.chunks_exact(stride) {
        let mut line = vec![0u8; model.bytes_per_line];
        for x in 0..page.width {
            if row[(x / 8) as usize] & (0x80 >> (x % 8)) != 0 {
                let bit = left_edge - x;
                line[(bit / 8) as usize] |= 0x80 >> (bit % 8);
            }
        }
        out.push(line);
    }
    out.resize(lines as usize, vec![0u8; model.bytes_per_line]);
    Ok(out)
}

/// Whether PackBits makes the page's line data smaller than plain lines.
fn compression_pays(lines: &[Vec<u8>]) -> bool {
    let plain: usize = lines.iter().map(|l| 3 + l.len()).sum();
    let packed: usize = lines
        .iter()
        .map(|l| {
            if l.iter().all(|&b| b == 0) {
                1
            } else {
                3 + packbits::encode(l).len()
            }
        })
        .sum();
    packed < plain
}

fn page_header(
    out: &mut Vec<u8>,
    model: &HeadModel,
    media: &Media,
    lines: u32,
    first_page: bool,
    options: &RasterOptions,
) {
    if model.mode_switch {
        out.extend_from_slice(RASTER_MODE);
    }
    let mut flags = PI_RECOVER | PI_KIND | PI_WIDTH;
    if media.form == MediaForm::DieCut {
        flags |= PI_LENGTH;
    }
    if options.quality {
        flags |= PI_QUALITY;
    }
    out.extend_from_slice(b"\x1B\x69\x7A");
    out.extend_from_slice(&[flags, media.form.code(), media.width_mm, media.length_mm]);
    out.extend_from_slice(&lines.to_le_bytes());
    out.extend_from_slice(&[u8::from(!first_page), 0x00]);
    let auto_cut = options.cut == CutMode::EachLabel;
    out.extend_from_slice(&[0x1B, 0x69, 0x4D, if auto_cut { 0x40 } else { 0x00 }]);
    if auto_cut {
        out.extend_from_slice(b"\x1B\x69\x41\x01");
    }
    let cut_at_end = options.cut != CutMode::Never;
    out.extend_from_slice(&[0x1B, 0x69, 0x4B, if cut_at_end { 0x08 } else { 0x00 }]);
    let margin = match media.form {
        MediaForm::Continuous => CONTINUOUS_MARGIN_DOTS,
        MediaForm::DieCut => 0,
    };
    out.extend_from_slice(b"\x1B\x69\x64");
    out.extend_from_slice(&margin.to_le_bytes());
}

fn push_line(out: &mut Vec<u8>, line: &[u8], compress: bool) {
    if compress {
        if line.iter().all(|&b| b == 0) {
            out.push(b'Z');
            return;
        }
        let packed = packbits::encode(line);
        out.extend_from_slice(&[b'g', 0x00, packed.len() as u8]);
        out.extend_from_slice(&packed);
    } else {
        out.extend_from_slice(&[b'g', 0x00, line.len() as u8]);
        out.extend_from_slice(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media;

    pub(crate) const QL_710: HeadModel = HeadModel {
        bytes_per_line: 90,
        extra_right_margin: 0,
        compression: true,
        mode_switch: true,
        invalidate_len: 200,
        min_length_dots: 150,
        max_length_dots: 11811,
        wide: false,
    };

    pub(crate) const QL_1100: HeadModel = HeadModel {
        bytes_per_line: 162,
        extra_right_margin: 44,
        compression: true,
        mode_switch: true,
        invalidate_len: 200,
        min_length_dots: 301,
        max_length_dots: 35434,
        wide: true,
    };

    const QL_700: HeadModel = HeadModel {
        compression: false,
        mode_switch: false,
        ..QL_710
    };

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// Brother, "Software Developer's Manual, Raster Command Reference QL-710W/720NW",
    /// section 2.1 "Print data overview", control codes for 102-mm-wide continuous length
    /// tape: `1B 69 7A 86 0A 66 00 09 07 00 00 00 00` (1801 raster lines, starting page),
    /// `1B 69 4D 40` (auto cut), `1B 69 41 01` (cut every label), `1B 69 4B 08` (cut at end),
    /// `1B 69 64 23 00` (3 mm margin), `4D 02` (TIFF compression). The QL-1100 family takes
    /// the same control codes for its 102 mm tape.
    #[test]
    fn control_codes_match_the_reference_example_for_102_mm_tape() {
        let tape = media::by_id("102").expect("102 mm tape");
        let data = vec![0xFFu8; 1801 * 2];
        let page = Page {
            width: 16,
            height: 1801,
            data: &data,
        };
        let options = RasterOptions {
            compression: Compression::PackBits,
            quality: false,
            ..RasterOptions::default()
        };
        let (bytes, summary) = encode_job(&QL_1100, tape, &[page], &options).unwrap();
        assert_eq!(summary.pages_sent, 1);
        let mut expected = vec![0u8; 200];
        expected.extend_from_slice(b"\x1B\x40\x1B\x69\x61\x01");
        expected.extend_from_slice(&[
            0x1B, 0x69, 0x7A, 0x86, 0x0A, 0x66, 0x00, 0x09, 0x07, 0x00, 0x00, 0x00, 0x00,
        ]);
        expected.extend_from_slice(&[0x1B, 0x69, 0x4D, 0x40]);
        expected.extend_from_slice(&[0x1B, 0x69, 0x41, 0x01]);
        expected.extend_from_slice(&[0x1B, 0x69, 0x4B, 0x08]);
        expected.extend_from_slice(&[0x1B, 0x69, 0x64, 0x23, 0x00]);
        expected.extend_from_slice(&[0x4D, 0x02]);
        assert_eq!(&bytes[..expected.len()], &expected[..]);
        assert_eq!(bytes.last(), Some(&0x1A));
    }

    /// Brother, "QL-500/550/560/570/580N/650TD/700/1050/1060N Command Reference", section 3.1
    /// "Print data overview": the print information command for the starting page of die-cut
    /// 29 mm x 90 mm labels with priority given to print speed is
    /// `1B 69 7A 0E 0B 1D 5A DF 03 00 00 00 00` (991 raster lines). The same manual's
    /// definition of the flags says PI_RECOVER (80h) is "always ON", which the driver follows,
    /// so its flag byte is 8Eh; every other byte is the example's.
    #[test]
    fn print_information_matches_the_reference_example_for_29x90_labels() {
        let labels = media::by_id("29x90").expect("29 x 90 labels");
        let data = vec![0u8; 4 * 100];
        let page = Page {
            width: 32,
            height: 100,
            data: &data,
        };
        let options = RasterOptions {
            quality: false,
            ..RasterOptions::default()
        };
        let (bytes, _) = encode_job(&QL_700, labels, &[page], &options).unwrap();
        let at = find(&bytes, b"\x1B\x69\x7A").expect("ESC i z");
        assert_eq!(
            &bytes[at..at + 13],
            &[0x1B, 0x69, 0x7A, 0x8E, 0x0B, 0x1D, 0x5A, 0xDF, 0x03, 0x00, 0x00, 0x00, 0x00]
        );
        // The QL-700 is always in raster mode and does not compress.
        assert_eq!(find(&bytes, RASTER_MODE), None);
        assert_eq!(find(&bytes, b"\x1B\x69\x64\x00\x00g"), Some(at + 25));
        // Die-cut pages are padded to the whole label: 991 uncompressed lines of 90 bytes.
        let lines = bytes[at + 13 + 17..bytes.len() - 1].chunks(93);
        assert_eq!(lines.len(), 991);
        assert!(lines
            .into_iter()
            .all(|l| l.len() == 93 && l[..3] == [b'g', 0, 90]));
    }

    #[test]
    fn lines_are_mirrored_onto_the_head_after_the_right_margin() {
        let tape = media::by_id("62").expect("62 mm tape");
        // One row: only the leftmost dot and the dot at x = 9 are black.
        let data = [0x80, 0x40];
        let page = Page {
            width: 16,
            height: 1,
            data: &data,
        };
        let options = RasterOptions {
            compression: Compression::None,
            ..RasterOptions::default()
        };
        let (bytes, _) = encode_job(&QL_710, tape, &[page], &options).unwrap();
        let at = find(&bytes, b"M\x00g\x00\x5A").expect("first line") + 5;
        let line = &bytes[at..at + 90];
        // Left edge: bit 12 + 696 - 1 = 707 -> byte 88, bit 3; x = 9 -> bit 698 -> byte 87, bit 2.
        let black: Vec<usize> = (0..720)
            .filter(|&bit| line[bit / 8] & (0x80 >> (bit % 8)) != 0)
            .collect();
        assert_eq!(black, vec![698, 707]);
        // Continuous tape is fed at least the model's minimum length.
        let lines = bytes[at - 3..bytes.len() - 1].chunks(93).count();
        assert_eq!(lines, 150);
    }

    #[test]
    fn copies_repeat_pages_collated_with_form_feeds_and_one_final_control_z() {
        let tape = media::by_id("62").expect("62 mm tape");
        let a = [0xF0u8; 200];
        let b = [0x0Fu8; 200];
        let pages = [
            Page {
                width: 8,
                height: 200,
                data: &a,
            },
            Page {
                width: 8,
                height: 200,
                data: &b,
            },
        ];
        let options = RasterOptions {
            copies: 2,
            ..RasterOptions::default()
        };
        let (bytes, summary) = encode_job(&QL_710, tape, &pages, &options).unwrap();
        assert_eq!(summary.pages_sent, 4);
        assert_eq!(summary.compressed_pages, 4);
        let starts: Vec<usize> = bytes
            .windows(3)
            .enumerate()
            .filter(|(_, w)| *w == b"\x1B\x69\x7A")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(starts.len(), 4);
        // Page byte: 0 on the first page only.
        let page_flags: Vec<u8> = starts.iter().map(|&i| bytes[i + 11]).collect();
        assert_eq!(page_flags, vec![0, 1, 1, 1]);
        // Each page but the last ends with FF right before the next page's raster-mode switch.
        for &start in &starts[1..] {
            assert_eq!(&bytes[start - 5..start], b"\x0C\x1B\x69\x61\x01");
        }
        assert_eq!(bytes.last(), Some(&0x1A));
        assert_eq!(bytes.iter().filter(|&&b| b == 0x1A).count(), 1);
    }

    #[test]
    fn blank_lines_are_z_when_compressing_and_auto_picks_the_smaller() {
        let tape = media::by_id("62").expect("62 mm tape");
        let blank = [0u8; 300];
        let page = Page {
            width: 8,
            height: 300,
            data: &blank,
        };
        let (bytes, summary) =
            encode_job(&QL_710, tape, &[page], &RasterOptions::default()).unwrap();
        assert_eq!(summary.compressed_pages, 1);
        let at = find(&bytes, b"M\x02").expect("PackBits selected") + 2;
        assert_eq!(&bytes[at..], [&[b'Z'; 300][..], &[0x1A]].concat());
    }

    #[test]
    fn pages_that_do_not_fit_are_refused_before_anything_is_encoded() {
        let labels = media::by_id("29x90").expect("29 x 90 labels");
        let wide = vec![0u8; 40 * 10];
        let page = Page {
            width: 320,
            height: 10,
            data: &wide,
        };
        assert_eq!(
            encode_job(&QL_710, labels, &[page], &RasterOptions::default()),
            Err(RasterError::TooWide {
                page: 0,
                width: 320,
                printable: 306
            })
        );
        let shipping = media::by_id("102x152").expect("102 x 152 labels");
        let small = [0u8; 10];
        let page = Page {
            width: 8,
            height: 10,
            data: &small,
        };
        assert_eq!(
            encode_job(&QL_710, shipping, &[page], &RasterOptions::default()),
            Err(RasterError::RollTooWide("102x152"))
        );
        let options = RasterOptions {
            compression: Compression::PackBits,
            ..RasterOptions::default()
        };
        assert_eq!(
            encode_job(&QL_700, labels, &[page], &options),
            Err(RasterError::CompressionUnsupported)
        );
    }

    #[test]
    fn wide_heads_send_162_byte_lines() {
        let shipping = media::by_id("102x152").expect("102 x 152 labels");
        let row = [0x80u8; 146];
        let page = Page {
            width: 1164,
            height: 1,
            data: &row,
        };
        let options = RasterOptions {
            compression: Compression::None,
            ..RasterOptions::default()
        };
        let (bytes, _) = encode_job(&QL_1100, shipping, &[page], &options).unwrap();
        let at = find(&bytes, b"M\x00").expect("compression off") + 2;
        assert_eq!(&bytes[at..at + 3], &[b'g', 0x00, 162]);
        assert_eq!(bytes.len() - at - 1, 1660 * 165);
    }
}
