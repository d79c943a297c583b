//! One-bit pages to ESC/POS: `ESC @` once per job, then per label the page as `GS v 0` raster
//! bands and a feed-and-cut.
//!
//! The host hands pages in the layout `GS v 0` wants (rows of `ceil(width / 8)` bytes, most
//! significant bit first, bit 1 = black), so rows are sent as they are. Epson's ESC/POS
//! reference limits one `GS v 0` image in height (2303 dots on some models), so a page goes
//! out in bands of at most [`BAND_ROWS`] rows, which printers print edge to edge.

use devicehub_plugin_api::RasterPage;

/// `ESC @`: initialize the printer, clearing settings a previous job left behind.
pub const INITIALIZE: &[u8] = b"\x1b@";

/// `GS V 65 0`: feed the paper to the cutting position and cut it fully.
pub const FEED_AND_CUT: &[u8] = b"\x1dVA\x00";

/// The tallest band sent as one image: well below every documented `GS v 0` limit, and small
/// enough for the receive buffers of low-cost printers.
pub const BAND_ROWS: usize = 256;

/// Appends `page` as `GS v 0` bands: `GS v 0 m xL xH yL yH` (m = 0, normal size; x = bytes per
/// row; y = rows), then the rows.
pub fn encode_page(page: &RasterPage, out: &mut Vec<u8>) {
    let stride = page.stride();
    for band in page.data.chunks(stride * BAND_ROWS) {
        let rows = band.len() / stride;
        out.extend_from_slice(b"\x1dv0\x00");
        out.extend_from_slice(&(stride as u16).to_le_bytes());
        out.extend_from_slice(&(rows as u16).to_le_bytes());
        out.extend_from_slice(band);
    }
}

/// The whole job: initialize, then each page `copies` times, each cut off on its own.
pub fn encode_job(pages: &[RasterPage], copies: u32) -> Vec<u8> {
    let mut out = INITIALIZE.to_vec();
    for page in pages {
        for _ in 0..copies {
            encode_page(page, &mut out);
            out.extend_from_slice(FEED_AND_CUT);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use devicehub_plugin_api::testing::page_from_rows;

    use super::*;

    /// A 10 x 2 page, worked out by hand: row 0 is dots 0 and 9 black (bytes 0x80 0x40), row 1
    /// is dots 1..=8 black (0x7F 0x80); 2 bytes per row, 2 rows.
    #[test]
    fn a_small_page_is_one_band_with_its_rows_as_they_are() {
        let page = page_from_rows(10, &["#........#", ".########"]);
        let bytes = encode_job(&[page], 1);
        assert_eq!(
            bytes,
            [
                0x1B, b'@', // ESC @
                0x1D, b'v', b'0', 0, 2, 0, 2, 0, // GS v 0, m 0, 2 bytes x 2 rows
                0x80, 0x40, 0x7F, 0x80, // the rows
                0x1D, b'V', b'A', 0, // GS V 65 0
            ]
        );
    }

    #[test]
    fn a_tall_page_is_split_into_bands() {
        let rows = vec!["#"; BAND_ROWS + 1];
        let page = page_from_rows(8, &rows);
        let mut out = Vec::new();
        encode_page(&page, &mut out);
        let first = [0x1D, b'v', b'0', 0, 1, 0, 0, 1];
        assert!(out.starts_with(&first));
        let second_at = first.len() + BAND_ROWS;
        assert_eq!(&out[second_at..], &[0x1D, b'v', b'0', 0, 1, 0, 1, 0, 0x80]);
    }
}
