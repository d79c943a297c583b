//! The LabelWriter 450 series raster protocol (LabelWriter 450, 450 Turbo, 4XL): from one-bit
//! pages to the bytes of a print job.
//!
//! Sources: DYMO's "LabelWriter 450 Series Printers Technical Reference Manual" (section
//! "Printer Commands and Control") and the LabelWriter raster code of DYMO's CUPS driver
//! (`dymo-cups-drivers`, `LabelWriterDriver`), which this encoder follows command for command:
//!
//! - a run of ESC bytes followed by `ESC @` resets the printer even when it was left in the
//!   middle of a raster line (the ESC bytes complete any unfinished line);
//! - `ESC B n` sets the dot tab (left margin in bytes), `ESC D n` the bytes per line;
//! - `ESC L n1 n2` sets the label length in lines, most significant byte first;
//! - `ESC c`, `ESC d`, `ESC e`, `ESC g` select light, medium, normal or dark density;
//!   `ESC h` text quality and `ESC i` barcode and graphics quality;
//! - every dot line is `SYN` followed by exactly the bytes per line, or `ETB` followed by
//!   run-length bytes (bit 7 the colour, 1 = black; bits 0..6 the run length minus one);
//!   blank lines are fed with `ESC f 1 n` instead (n lines, at most 255 per command);
//! - `ESC G` feeds to the next label between labels and `ESC E` feeds the last one out.
//!
//! The module is pure: it only builds bytes.

use devicehub_plugin_api::RasterPage;
use thiserror::Error;

/// The escape byte that starts every command.
pub const ESC: u8 = 0x1B;
/// Starts an uncompressed dot line.
pub const SYN: u8 = 0x16;
/// Starts a run-length compressed dot line.
pub const ETB: u8 = 0x17;

/// ESC bytes sent before `ESC @`: as many as the widest printer's line (4XL, 156 bytes), so
/// that a line left unfinished by an interrupted job is completed before the reset is read.
pub const RESET_ESC_RUN: usize = 156;

/// The status request: the printer answers one status byte.
pub const STATUS_REQUEST: &[u8] = &[ESC, b'A'];

/// Print density, `ESC c` / `ESC d` / `ESC e` / `ESC g`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Density {
    Light,
    Medium,
    Normal,
    Dark,
}

impl Density {
    fn command(self) -> u8 {
        match self {
            Density::Light => b'c',
            Density::Medium => b'd',
            Density::Normal => b'e',
            Density::Dark => b'g',
        }
    }
}

/// Print quality, `ESC h` (text, faster) or `ESC i` (barcodes and graphics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Text,
    Graphics,
}

impl Quality {
    /// The command letter after ESC.
    pub fn command(self) -> u8 {
        match self {
            Quality::Text => b'h',
            Quality::Graphics => b'i',
        }
    }
}

/// How to print a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RasterOptions {
    /// Copies of every page, printed one after another before the next page.
    pub copies: u32,
    pub density: Density,
    pub quality: Quality,
}

/// Why pages cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RasterError {
    #[error("the job has no pages")]
    NoPages,
    #[error("copies must be at least 1")]
    NoCopies,
    #[error("page {page} is empty ({width} x {height} dots)")]
    EmptyPage {
        page: usize,
        width: u32,
        height: u32,
    },
    #[error("page {page} holds {actual} bytes; {width} x {height} dots need {expected}")]
    Malformed {
        page: usize,
        width: u32,
        height: u32,
        expected: usize,
        actual: usize,
    },
    #[error("page {page} is {width} dots wide; this printer's head has {head} dots")]
    TooWide { page: usize, width: u32, head: u32 },
    #[error("page {page} is {height} lines long; the label length command takes at most 65535")]
    TooLong { page: usize, height: u32 },
}

/// Checks a page against the head width and returns its bytes per line.
pub(crate) fn check_page(
    index: usize,
    page: &RasterPage,
    head_dots: u32,
) -> Result<usize, RasterError> {
    if page.width == 0 || page.height == 0 {
        return Err(RasterError::EmptyPage {
            page: index + 1,
            width: page.width,
            height: page.height,
        });
    }
    if !page.is_well_formed() {
        return Err(RasterError::Malformed {
            page: index + 1,
            width: page.width,
            height: page.height,
            expected: page.stride() * page.height as usize,
            actual: page.data.len(),
        });
    }
    if page.width > head_dots {
        return Err(RasterError::TooWide {
            page: index + 1,
            width: page.width,
            head: head_dots,
        });
    }
    Ok(page.stride())
}

/// The reset that starts every job: [`RESET_ESC_RUN`] ESC bytes, then `ESC @`.
pub fn reset() -> Vec<u8> {
    let mut bytes = vec![ESC; RESET_ESC_RUN];
    bytes.extend_from_slice(&[ESC, b'@']);
    bytes
}

/// Appends one dot line: `SYN` + raw bytes, or `ETB` + run-length bytes when that is shorter.
/// `row` holds exactly the bytes per line; padding bits past the page width must be 0 (white).
pub fn encode_line(row: &[u8], out: &mut Vec<u8>) {
    let runs = run_lengths(row);
    if runs.len() < row.len() {
        out.push(ETB);
        out.extend_from_slice(&runs);
    } else {
        out.push(SYN);
        out.extend_from_slice(row);
    }
}

/// The run-length form of a line: one byte per run of up to 128 dots of one colour, bit 7 set
/// for black, bits 0..6 the run length minus one. Longer runs are split greedily into runs of
/// 128 and a remainder.
pub fn run_lengths(row: &[u8]) -> Vec<u8> {
    let mut runs = Runs::default();
    for &byte in row {
        // Whole white or black bytes are most of a label; they extend a run in one step.
        match byte {
            0x00 => runs.add(false, 8),
            0xFF => runs.add(true, 8),
            _ => {
                for bit in 0..8 {
                    runs.add(byte & (0x80 >> bit) != 0, 1);
                }
            }
        }
    }
    runs.finish()
}

/// Run-length bytes under construction: the finished runs and the run in progress.
#[derive(Default)]
struct Runs {
    bytes: Vec<u8>,
    black: bool,
    count: u32,
}

impl Runs {
    fn add(&mut self, black: bool, dots: u32) {
        if self.count > 0 && black != self.black {
            self.flush();
        }
        self.black = black;
        self.count += dots;
        while self.count > 128 {
            self.bytes.push(run_byte(black, 128));
            self.count -= 128;
        }
    }

    fn flush(&mut self) {
        if self.count > 0 {
            self.bytes.push(run_byte(self.black, self.count));
            self.count = 0;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.flush();
        self.bytes
    }
}

fn run_byte(black: bool, count: u32) -> u8 {
    // `count` is 1..=128, so `count - 1` fits the 7 bits.
    (if black { 0x80 } else { 0x00 }) | (count - 1) as u8
}

/// Encodes a whole job: reset, density and quality, then per page the dot tab, bytes per line
/// and label length, each copy's lines, `ESC G` between labels and `ESC E` after the last.
pub fn encode_job(
    pages: &[RasterPage],
    head_dots: u32,
    options: &RasterOptions,
) -> Result<Vec<u8>, RasterError> {
    if pages.is_empty() {
        return Err(RasterError::NoPages);
    }
    if options.copies == 0 {
        return Err(RasterError::NoCopies);
    }
    let mut out = reset();
    out.extend_from_slice(&[ESC, options.density.command()]);
    out.extend_from_slice(&[ESC, options.quality.command()]);
    out.extend_from_slice(&[ESC, b'B', 0]);
    let labels = pages.len() * options.copies as usize;
    let mut printed = 0;
    for (index, page) in pages.iter().enumerate() {
        let stride = check_page(index, page, head_dots)?;
        let height = u16::try_from(page.height).map_err(|_| RasterError::TooLong {
            page: index + 1,
            height: page.height,
        })?;
        // The bytes-per-line count is one byte; a head of 1248 dots has 156, well below 256.
        let stride_byte = u8::try_from(stride).map_err(|_| RasterError::TooWide {
            page: index + 1,
            width: page.width,
            head: head_dots,
        })?;
        out.extend_from_slice(&[ESC, b'D', stride_byte]);
        out.extend_from_slice(&[ESC, b'L']);
        out.extend_from_slice(&height.to_be_bytes());
        let mut lines = Vec::with_capacity(page.data.len() / 4);
        let mut blank = 0u32;
        for row in page.data.chunks(stride) {
            let row = masked_row(row, page.width);
            if row.iter().all(|&b| b == 0) {
                blank += 1;
                continue;
            }
            skip_lines(blank, &mut lines);
            blank = 0;
            encode_line(&row, &mut lines);
        }
        skip_lines(blank, &mut lines);
        for _ in 0..options.copies {
            out.extend_from_slice(&lines);
            printed += 1;
            out.extend_from_slice(if printed == labels {
                &[ESC, b'E']
            } else {
                &[ESC, b'G']
            });
        }
    }
    Ok(out)
}

/// Appends `ESC f 1 n` commands that feed `count` blank lines, at most 255 per command: four
/// bytes where even one run-length blank line takes seven (672 dots) or eleven (1248 dots).
pub fn skip_lines(mut count: u32, out: &mut Vec<u8>) {
    while count > 0 {
        let n = count.min(255);
        out.extend_from_slice(&[ESC, b'f', 1, n as u8]);
        count -= n;
    }
}

/// A row with the padding bits past `width` cleared, so that stray padding never prints.
pub(crate) fn masked_row(row: &[u8], width: u32) -> Vec<u8> {
    let mut row = row.to_vec();
    let used = (width % 8) as u8;
    if used != 0 {
        if let Some(last) = row.last_mut() {
            *last &= 0xFFu8 << (8 - used);
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use devicehub_plugin_api::abi_stable::std_types::RVec;

    use super::*;

    fn page(width: u32, height: u32, data: Vec<u8>) -> RasterPage {
        RasterPage {
            width,
            height,
            data: RVec::from(data),
        }
    }

    const OPTIONS: RasterOptions = RasterOptions {
        copies: 1,
        density: Density::Normal,
        quality: Quality::Graphics,
    };

    #[test]
    fn reset_is_156_escapes_then_esc_at() {
        // DYMO's CUPS driver (dymo-cups-drivers, LabelWriter raster driver) starts every job
        // with 156 ESC characters, enough to end any line in progress on the widest head, then
        // the ESC @ reset of the Technical Reference's "Printer Commands and Control".
        let reset = reset();
        assert_eq!(reset.len(), 158);
        assert!(reset[..157].iter().all(|&b| b == 0x1B));
        assert_eq!(reset[157], b'@');
    }

    #[test]
    fn run_lengths_follow_the_compressed_line_format() {
        // Technical Reference, "<ETB> Transfer Compressed Print Data": each byte is one run,
        // bit 7 the colour (1 = black), bits 0..6 the count minus one. A line of 8 black dots
        // then 8 white dots is 0x87 0x07.
        assert_eq!(run_lengths(&[0xFF, 0x00]), vec![0x87, 0x07]);
        // 0xF0 0x0F: 4 black, 8 white, 4 black.
        assert_eq!(run_lengths(&[0xF0, 0x0F]), vec![0x83, 0x07, 0x83]);
        // A white line of 84 bytes (672 dots) is 5 full runs of 128 and one of 32.
        assert_eq!(
            run_lengths(&[0u8; 84]),
            vec![0x7F, 0x7F, 0x7F, 0x7F, 0x7F, 0x1F]
        );
        // A black run of exactly 128 dots then one more black dot and a white one.
        let mut row = vec![0xFFu8; 16];
        row.push(0x80);
        assert_eq!(run_lengths(&row), vec![0xFF, 0x80, 0x06]);
    }

    #[test]
    fn each_line_uses_the_shorter_form() {
        // Technical Reference, "<SYN> Transfer Print Data": SYN then exactly bytes-per-line
        // bytes, no length byte.
        let mut out = Vec::new();
        encode_line(&[0xAA, 0x55], &mut out);
        assert_eq!(
            out,
            vec![0x16, 0xAA, 0x55],
            "alternating dots do not compress"
        );
        out.clear();
        encode_line(&[0x00; 4], &mut out);
        assert_eq!(out, vec![0x17, 0x1F], "32 white dots are one run");
    }

    #[test]
    fn a_job_has_the_commands_in_the_reference_order() {
        // 16 x 2 dots: the first line black on the left half, the second white.
        let pages = [page(16, 2, vec![0xFF, 0x00, 0x00, 0x00])];
        let job = encode_job(&pages, 672, &OPTIONS).unwrap();
        let mut expected = vec![0x1B; 156];
        expected.extend_from_slice(&[0x1B, b'@']); // reset
        expected.extend_from_slice(&[0x1B, b'e']); // normal density
        expected.extend_from_slice(&[0x1B, b'i']); // barcode and graphics quality
        expected.extend_from_slice(&[0x1B, b'B', 0]); // dot tab 0
        expected.extend_from_slice(&[0x1B, b'D', 2]); // 2 bytes per line
        expected.extend_from_slice(&[0x1B, b'L', 0x00, 0x02]); // 2 lines, big-endian
                                                               // 8 black, 8 white: two runs are no shorter than two raw bytes, so SYN.
        expected.extend_from_slice(&[0x16, 0xFF, 0x00]);
        expected.extend_from_slice(&[0x1B, b'f', 1, 1]); // one blank line: ESC f 1 n
        expected.extend_from_slice(&[0x1B, b'E']); // form feed at the end of the job
        assert_eq!(job, expected);
    }

    #[test]
    fn copies_and_pages_are_separated_by_short_form_feeds() {
        let pages = [page(8, 1, vec![0xFF]), page(8, 300, vec![0x00; 300])];
        let options = RasterOptions {
            copies: 2,
            ..OPTIONS
        };
        let job = encode_job(&pages, 672, &options).unwrap();
        let body = &job[158..];
        let count = |needle: &[u8]| body.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(&[0x1B, b'G']), 3, "four labels, three gaps");
        assert!(job.ends_with(&[0x1B, b'E']));
        // The second page's label length is 300 = 0x012C, most significant byte first.
        assert_eq!(count(&[0x1B, b'L', 0x01, 0x2C]), 1);
    }

    #[test]
    fn runs_of_blank_lines_are_fed_with_esc_f() {
        // 300 blank lines, one black line, 2 blank lines.
        let mut data = vec![0u8; 303];
        data[300] = 0xFF;
        let job = encode_job(&[page(8, 303, data)], 672, &OPTIONS).unwrap();
        let body = &job[158..];
        let lines_start = body
            .windows(4)
            .position(|w| w == [0x1B, b'L', 0x01, 0x2F])
            .expect("ESC L 303")
            + 4;
        assert_eq!(
            &body[lines_start..],
            &[
                0x1B, b'f', 1, 255, 0x1B, b'f', 1, 45, // 300 blank lines
                0x16, 0xFF, // the black line
                0x1B, b'f', 1, 2, // 2 blank lines
                0x1B, b'E',
            ]
        );
    }

    #[test]
    fn padding_bits_never_print() {
        let pages = [page(4, 1, vec![0xFF]), page(20, 1, vec![0xFF, 0xFF, 0xFF])];
        let job = encode_job(&pages, 672, &OPTIONS).unwrap();
        // 4 black then 4 white, although the padding bits were set.
        assert!(job.windows(2).any(|w| w == [0x16, 0xF0]), "{job:02X?}");
        // 20 black then 4 white as runs.
        assert!(
            job.windows(3).any(|w| w == [0x17, 0x93, 0x03]),
            "{job:02X?}"
        );
    }

    #[test]
    fn pages_wider_than_the_head_or_malformed_are_refused() {
        let wide = [page(680, 1, vec![0; 85])];
        assert_eq!(
            encode_job(&wide, 672, &OPTIONS),
            Err(RasterError::TooWide {
                page: 1,
                width: 680,
                head: 672
            })
        );
        let short = [page(16, 2, vec![0; 3])];
        assert!(matches!(
            encode_job(&short, 672, &OPTIONS),
            Err(RasterError::Malformed { .. })
        ));
        assert_eq!(encode_job(&[], 672, &OPTIONS), Err(RasterError::NoPages));
    }
}
