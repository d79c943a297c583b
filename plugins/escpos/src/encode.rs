//! One-bit pages to ESC/POS raster: `ESC @` once per job, then each label as `GS v 0` bands
//! followed by the cut the settings ask for.
//!
//! Epson's ESC/POS command reference, `GS v 0`: `GS v 0 m xL xH yL yH d1...dk` prints a raster
//! bit image of `xL + xH * 256` bytes per row and `yL + yH * 256` rows, most significant bit
//! first, bit 1 = black: exactly the layout of the host's pages, so rows are sent unchanged
//! (their padding bits are white). One image is limited in height (2303 dots on several TM
//! models, less on some low-cost printers), so a page goes out in bands printed edge to edge.
//!
//! `GS V` cuts: `GS V 65 n` feeds to the cutting position and cuts fully, `GS V 66 n` partly
//! (one point left uncut), each after feeding `n` more motion units (0 here).

use devicehub_plugin_api::RasterPage;

/// `ESC @`: initialize the printer, clearing settings a previous job left behind.
pub const INITIALIZE: &[u8] = b"\x1b@";

/// `GS V 65 0`: feed to the cutting position and cut fully.
pub const FULL_CUT: &[u8] = b"\x1dVA\x00";

/// `GS V 66 0`: feed to the cutting position and cut partly.
pub const PARTIAL_CUT: &[u8] = b"\x1dVB\x00";

/// The default band height: well below every documented `GS v 0` limit, and small enough for
/// the receive buffers of low-cost printers.
pub const DEFAULT_BAND_ROWS: u16 = 256;

/// The tallest band allowed by the setting: the smallest `GS v 0` height limit Epson documents
/// for its TM printers.
pub const MAX_BAND_ROWS: u16 = 2303;

/// When labels are cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A full cut after every label (the default).
    Each,
    /// A partial cut after every label: the strip stays in one piece to tear.
    Partial,
    /// One full cut after the job's last label.
    End,
    /// No cut and no feed: for printers without a cutter.
    None,
}

/// How a job is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOptions {
    pub cut: Cut,
    /// Rows per `GS v 0` band, 1..=[`MAX_BAND_ROWS`].
    pub band_rows: u16,
    /// How many times every page is printed; at least 1.
    pub copies: u32,
}

/// Appends `page` as `GS v 0` bands of at most `band_rows` rows.
pub fn encode_page(page: &RasterPage, band_rows: u16, out: &mut Vec<u8>) {
    let stride = page.stride();
    if stride == 0 || page.height == 0 {
        return;
    }
    for band in page.data.chunks(stride * usize::from(band_rows.max(1))) {
        let rows = band.len() / stride;
        // GS v 0, m = 0 (normal size), then bytes per row and rows, least significant first.
        out.extend_from_slice(b"\x1dv0\x00");
        out.extend_from_slice(&(stride as u16).to_le_bytes());
        out.extend_from_slice(&(rows as u16).to_le_bytes());
        out.extend_from_slice(band);
    }
}

/// The whole job: initialize, then each page `copies` times (all copies of a page before the
/// next page), cut as `options.cut` says.
pub fn encode_job(pages: &[RasterPage], options: &JobOptions) -> Vec<u8> {
    let mut out = INITIALIZE.to_vec();
    for page in pages {
        for _ in 0..options.copies {
            encode_page(page, options.band_rows, &mut out);
            match options.cut {
                Cut::Each => out.extend_from_slice(FULL_CUT),
                Cut::Partial => out.extend_from_slice(PARTIAL_CUT),
                Cut::End | Cut::None => {}
            }
        }
    }
    if options.cut == Cut::End {
        out.extend_from_slice(FULL_CUT);
    }
    out
}

#[cfg(test)]
mod tests {
    use devicehub_plugin_api::testing::page_from_rows;

    use super::*;

    fn options(cut: Cut, band_rows: u16, copies: u32) -> JobOptions {
        JobOptions {
            cut,
            band_rows,
            copies,
        }
    }

    /// A 12 x 3 page worked out by hand. Two bytes per row, the last 4 bits of each row padding:
    /// row 0 `#..........#` = 1000 0000, 0001 (0000) = 0x80 0x10;
    /// row 1 `.##########.` = 0111 1111, 1110 (0000) = 0x7F 0xE0;
    /// row 2 `####....####` = 1111 0000, 1111 (0000) = 0xF0 0xF0.
    #[test]
    fn a_small_page_goes_out_as_one_band_exactly() {
        let page = page_from_rows(12, &["#..........#", ".##########.", "####....####"]);
        let bytes = encode_job(&[page], &options(Cut::Each, DEFAULT_BAND_ROWS, 1));
        #[rustfmt::skip]
        let expected = [
            0x1B, 0x40,                               // ESC @
            0x1D, 0x76, 0x30, 0x00, 0x02, 0x00, 0x03, 0x00, // GS v 0 0, x = 2, y = 3
            0x80, 0x10, 0x7F, 0xE0, 0xF0, 0xF0,       // rows
            0x1D, 0x56, 0x41, 0x00,                   // GS V 65 0
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn bands_split_the_page_and_the_last_band_is_shorter() {
        let page = page_from_rows(8, &["#", ".#", "..#"]);
        let bytes = encode_job(&[page], &options(Cut::None, 2, 1));
        #[rustfmt::skip]
        let expected = [
            0x1B, 0x40,
            0x1D, 0x76, 0x30, 0x00, 0x01, 0x00, 0x02, 0x00, 0x80, 0x40,
            0x1D, 0x76, 0x30, 0x00, 0x01, 0x00, 0x01, 0x00, 0x20,
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn copies_and_cuts_follow_the_setting() {
        let a = page_from_rows(8, &["#"]);
        let b = page_from_rows(8, &["##"]);
        let band = |byte: u8| [0x1D, 0x76, 0x30, 0x00, 0x01, 0x00, 0x01, 0x00, byte];
        let partial = encode_job(&[a.clone(), b.clone()], &options(Cut::Partial, 256, 2));
        let want: Vec<u8> = [
            INITIALIZE,
            &band(0x80),
            PARTIAL_CUT,
            &band(0x80),
            PARTIAL_CUT,
            &band(0xC0),
            PARTIAL_CUT,
            &band(0xC0),
            PARTIAL_CUT,
        ]
        .concat();
        assert_eq!(partial, want);
        let at_end = encode_job(&[a, b], &options(Cut::End, 256, 1));
        assert_eq!(
            at_end,
            [INITIALIZE, &band(0x80), &band(0xC0), FULL_CUT].concat()
        );
    }
}
