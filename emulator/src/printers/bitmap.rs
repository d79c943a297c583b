//! The 1-bit label bitmap every printer simulator decodes into, and its PNG rendering.
//!
//! Rows are `ceil(width / 8)` bytes, most significant bit first, bit 1 = black dot: the same
//! convention DeviceHub uses on the wire, so a test compares packed rows byte for byte. Padding
//! bits past the label's width in the last byte of a row are always 0.

use image::{codecs::png::PngEncoder, ImageEncoder, ImageError};

/// A monochrome label image: what the print head would burn onto the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    width: u32,
    height: u32,
    /// Packed rows, `bytes_per_row()` bytes each, top row first.
    data: Vec<u8>,
}

impl Bitmap {
    /// A white (all 0) bitmap of `width` x `height` dots.
    pub fn new(width: u32, height: u32) -> Self {
        let bytes_per_row = width.div_ceil(8) as usize;
        Self {
            width,
            height,
            data: vec![0; bytes_per_row * height as usize],
        }
    }

    /// Width in dots.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in dots (rows).
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes in one packed row.
    pub fn bytes_per_row(&self) -> usize {
        self.width.div_ceil(8) as usize
    }

    /// The packed rows, top row first.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// Whether the dot at (`x`, `y`) is black. Dots outside the bitmap are white.
    pub fn get(&self, x: u32, y: u32) -> bool {
        if x >= self.width || y >= self.height {
            return false;
        }
        let index = y as usize * self.bytes_per_row() + (x / 8) as usize;
        self.data[index] & (0x80 >> (x % 8)) != 0
    }

    /// Sets the dot at (`x`, `y`) black or white. Dots outside the bitmap are clipped, as
    /// the print head simply has no element there.
    pub fn set(&mut self, x: u32, y: u32, black: bool) {
        if x >= self.width || y >= self.height {
            return;
        }
        let index = y as usize * self.bytes_per_row() + (x / 8) as usize;
        let mask = 0x80 >> (x % 8);
        if black {
            self.data[index] |= mask;
        } else {
            self.data[index] &= !mask;
        }
    }

    /// Draws a packed image (`bytes_per_row` bytes per row, MSB first) with its top-left
    /// corner at (`x`, `y`). With `black_is_one` false the image's polarity is inverted (EPL2:
    /// bit 0 = black). Black dots are OR-ed onto the label, the way overlapping fields print;
    /// whatever falls outside the label is clipped. Returns whether anything was clipped.
    pub fn draw_packed(
        &mut self,
        x: u32,
        y: u32,
        bytes_per_row: usize,
        rows: &[u8],
        black_is_one: bool,
    ) -> bool {
        let mut clipped = false;
        if bytes_per_row == 0 {
            return clipped;
        }
        for (row_index, row) in rows.chunks(bytes_per_row).enumerate() {
            let dy = y as u64 + row_index as u64;
            for (byte_index, &byte) in row.iter().enumerate() {
                let byte = if black_is_one { byte } else { !byte };
                if byte == 0 {
                    continue;
                }
                for bit in 0..8u64 {
                    if byte & (0x80 >> bit) == 0 {
                        continue;
                    }
                    let dx = x as u64 + byte_index as u64 * 8 + bit;
                    if dx >= self.width as u64 || dy >= self.height as u64 {
                        clipped = true;
                        continue;
                    }
                    self.set(dx as u32, dy as u32, true);
                }
            }
        }
        clipped
    }

    /// The bitmap turned by 180 degrees, as a printer prints a format with inverted
    /// orientation (ZPL `^POI`).
    pub fn rotated_180(&self) -> Self {
        let mut turned = Self::new(self.width, self.height);
        for y in 0..self.height {
            for x in 0..self.width {
                if self.get(x, y) {
                    turned.set(self.width - 1 - x, self.height - 1 - y, true);
                }
            }
        }
        turned
    }

    /// Number of black dots, a cheap summary for logs and status.
    pub fn black_dots(&self) -> u64 {
        self.data.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    /// Renders the bitmap as an 8-bit grayscale PNG: black for 1 bits, white for 0 bits.
    pub fn to_png(&self) -> Result<Vec<u8>, ImageError> {
        let mut pixels = Vec::with_capacity(self.width as usize * self.height as usize);
        for y in 0..self.height {
            for x in 0..self.width {
                pixels.push(if self.get(x, y) { 0u8 } else { 255u8 });
            }
        }
        let mut png = Vec::new();
        PngEncoder::new(&mut png).write_image(
            &pixels,
            self.width,
            self.height,
            image::ExtendedColorType::L8,
        )?;
        Ok(png)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draw_packed_clips_and_keeps_padding_white() {
        let mut bitmap = Bitmap::new(10, 2);
        let clipped = bitmap.draw_packed(4, 1, 1, &[0xFF, 0xFF], true);
        assert!(clipped);
        assert_eq!(bitmap.as_bytes(), &[0x00, 0x00, 0x0F, 0xC0]);
    }

    #[test]
    fn inverted_polarity_draws_zero_bits() {
        let mut bitmap = Bitmap::new(8, 1);
        bitmap.draw_packed(0, 0, 1, &[0x0F], false);
        assert_eq!(bitmap.as_bytes(), &[0xF0]);
    }

    #[test]
    fn rotation_moves_the_top_left_dot_to_the_bottom_right() {
        let mut bitmap = Bitmap::new(9, 3);
        bitmap.set(0, 0, true);
        let turned = bitmap.rotated_180();
        assert!(turned.get(8, 2));
        assert_eq!(turned.black_dots(), 1);
    }
}
