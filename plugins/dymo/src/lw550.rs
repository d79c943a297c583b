//! The LabelWriter 550 series protocol (550, 550 Turbo, 5XL): from one-bit pages to the bytes of
//! a print job.
//!
//! Source: DYMO's "LabelWriter 550 Series Technical Reference" (sections "Print Job Header",
//! "Label Print Data" and the command reference), cross-checked with labelle's LabelWriter 550
//! implementation. A job is framed by `ESC s` (with a 32-bit job ID, least significant byte
//! first) and `ESC Q`; each label is `ESC n` (16-bit label index, least significant byte first),
//! then `ESC D` with a 12-byte header (ESC, D, bits per pixel = 1, alignment = 2, the number of
//! lines and the dots per line as 32-bit values, most significant byte first) and the raw lines,
//! then `ESC G` between labels or `ESC E` after the last one. There is no compression.
//!
//! The printer answers `ESC A n` (n = 1 asks for the print lock) with 32 status bytes and
//! `ESC U` with the 64-byte SKU record read from the label roll's NFC tag; see
//! [`crate::status`].

use devicehub_plugin_api::RasterPage;

use crate::raster::{check_page, masked_row, Quality, RasterError, ESC};

/// Status request without the lock: 32 bytes come back.
pub const STATUS_REQUEST: &[u8] = &[ESC, b'A', 0];
/// Status request that also asks for the print lock, sent before a job.
pub const LOCK_REQUEST: &[u8] = &[ESC, b'A', 1];
/// The SKU request: the 64-byte record of the loaded labels comes back.
pub const SKU_REQUEST: &[u8] = &[ESC, b'U'];
/// End of job: also releases a lock taken by [`LOCK_REQUEST`].
pub const END_OF_JOB: &[u8] = &[ESC, b'Q'];

/// How to print a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lw550Options {
    /// The job ID the printer reports in its status while it prints the job.
    pub job_id: u32,
    /// Copies of every page, printed one after another before the next page.
    pub copies: u32,
    /// Strobe time as a percentage of the standard duty cycle (`ESC C`, 0..=200); `None`
    /// leaves the printer's setting.
    pub density_percent: Option<u8>,
    pub quality: Quality,
}

/// The `ESC D` header of one label: bits per pixel, alignment, lines, dots per line.
pub fn label_header(lines: u32, dots_per_line: u32) -> [u8; 12] {
    let mut header = [0u8; 12];
    header[0] = ESC;
    header[1] = b'D';
    header[2] = 1; // bits per pixel
    header[3] = 2; // alignment
    header[4..8].copy_from_slice(&lines.to_be_bytes());
    header[8..12].copy_from_slice(&dots_per_line.to_be_bytes());
    header
}

/// Encodes a whole job.
pub fn encode_job(
    pages: &[RasterPage],
    head_dots: u32,
    options: &Lw550Options,
) -> Result<Vec<u8>, RasterError> {
    if pages.is_empty() {
        return Err(RasterError::NoPages);
    }
    if options.copies == 0 {
        return Err(RasterError::NoCopies);
    }
    let mut out = vec![ESC, b's'];
    out.extend_from_slice(&options.job_id.to_le_bytes());
    if let Some(percent) = options.density_percent {
        out.extend_from_slice(&[ESC, b'C', percent]);
    }
    out.extend_from_slice(&[ESC, options.quality.command()]);
    let labels = pages.len() * options.copies as usize;
    let mut index: usize = 0;
    for (page_index, page) in pages.iter().enumerate() {
        let stride = check_page(page_index, page, head_dots)?;
        let mut data = Vec::with_capacity(page.data.len());
        for row in page.data.chunks(stride) {
            data.extend(masked_row(row, page.width));
        }
        for _ in 0..options.copies {
            // The index is 16 bits; it wraps on jobs of more than 65535 labels, as it only
            // tells the host which label the printer is on.
            out.extend_from_slice(&[ESC, b'n']);
            out.extend_from_slice(&(index as u16).to_le_bytes());
            out.extend_from_slice(&label_header(page.height, page.width));
            out.extend_from_slice(&data);
            index += 1;
            out.extend_from_slice(if index == labels {
                &[ESC, b'E']
            } else {
                &[ESC, b'G']
            });
        }
    }
    out.extend_from_slice(END_OF_JOB);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use devicehub_plugin_api::abi_stable::std_types::RVec;

    use super::*;

    fn options(copies: u32) -> Lw550Options {
        Lw550Options {
            job_id: 42,
            copies,
            density_percent: None,
            quality: Quality::Graphics,
        }
    }

    #[test]
    fn commands_match_the_technical_reference_bytes() {
        // LabelWriter 550 Technical Reference, command reference: "ESC s Start of Print Job"
        // with job ID 42 is 1B 73 2A 00 00 00; "ESC n Set Label Index" 0 is 1B 6E 00 00;
        // "ESC D Start of Label Print Data" for 4 lines of 2 bytes is 1B 44 01 02 00 00 00 04
        // followed by the dots per line.
        let page = RasterPage {
            width: 16,
            height: 4,
            data: RVec::from(vec![0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF, 0x00, 0x11]),
        };
        let job = encode_job(&[page], 1248, &options(1)).unwrap();
        let mut expected = vec![0x1B, 0x73, 0x2A, 0x00, 0x00, 0x00];
        expected.extend_from_slice(&[0x1B, 0x69]); // graphics mode
        expected.extend_from_slice(&[0x1B, 0x6E, 0x00, 0x00]);
        expected.extend_from_slice(&[
            0x1B, 0x44, 0x01, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x10,
        ]);
        expected.extend_from_slice(&[0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF, 0x00, 0x11]);
        expected.extend_from_slice(&[0x1B, 0x45]); // feed to tear position
        expected.extend_from_slice(&[0x1B, 0x51]); // end of print job
        assert_eq!(job, expected);
    }

    #[test]
    fn copies_get_consecutive_label_indexes_and_short_feeds_between() {
        let page = RasterPage {
            width: 8,
            height: 1,
            data: RVec::from(vec![0x81]),
        };
        let mut dense = options(3);
        dense.density_percent = Some(130);
        let job = encode_job(&[page.clone(), page], 1248, &dense).unwrap();
        assert!(job.windows(3).any(|w| w == [0x1B, b'C', 130]));
        for index in 0u8..6 {
            assert!(
                job.windows(4).any(|w| w == [0x1B, b'n', index, 0]),
                "label index {index}"
            );
        }
        let feeds = job.windows(2).filter(|w| *w == [0x1B, b'G']).count();
        assert_eq!(feeds, 5);
        assert!(job.ends_with(&[0x1B, b'E', 0x1B, b'Q']));
    }
}
