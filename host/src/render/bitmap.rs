//! The 1-bit bitmap handed to printer drivers, and the 8-bit grey plane the renderer works on
//! before halftoning.

use std::fmt;

/// A 1-bit bitmap: `height` rows of `ceil(width / 8)` bytes, most significant bit first,
/// bit 1 = black dot.
///
/// This is the layout ZPL `^GF`, ESC/POS `GS v 0` and the DYMO and Brother raster lines use, so
/// most drivers can send rows as they are. Drivers whose printers use the opposite polarity
/// (EPL2, TSPL) invert the bytes themselves. The padding bits at the end of each row are always 0
/// (white), so a driver may send whole bytes without printing stray dots.
#[derive(Clone, PartialEq, Eq)]
pub struct MonoBitmap {
    /// Width in dots.
    pub width: u32,
    /// Height in dots (rows).
    pub height: u32,
    /// `height * stride()` bytes, row after row.
    pub data: Vec<u8>,
}

impl MonoBitmap {
    /// A white (all zero) bitmap of the given size.
    pub fn new(width: u32, height: u32) -> Self {
        let stride = stride_for(width);
        Self {
            width,
            height,
            data: vec![0; stride * height as usize],
        }
    }

    /// Bytes per row: `ceil(width / 8)`.
    pub fn stride(&self) -> usize {
        stride_for(self.width)
    }

    /// Whether the dot at (`x`, `y`) is black. Dots outside the bitmap are white.
    pub fn get(&self, x: u32, y: u32) -> bool {
        if x >= self.width || y >= self.height {
            return false;
        }
        let byte = self.data[y as usize * self.stride() + (x / 8) as usize];
        byte & (0x80 >> (x % 8)) != 0
    }

    /// Makes the dot at (`x`, `y`) black or white.
    ///
    /// # Panics
    /// When the dot lies outside the bitmap: writing there would be a bug in the caller.
    pub fn set(&mut self, x: u32, y: u32, black: bool) {
        assert!(
            x < self.width && y < self.height,
            "dot ({x}, {y}) outside a {}x{} bitmap",
            self.width,
            self.height
        );
        let index = y as usize * self.stride() + (x / 8) as usize;
        let mask = 0x80 >> (x % 8);
        if black {
            self.data[index] |= mask;
        } else {
            self.data[index] &= !mask;
        }
    }

    /// The bytes of row `y`.
    ///
    /// # Panics
    /// When `y >= height`.
    pub fn row(&self, y: u32) -> &[u8] {
        let stride = self.stride();
        let start = y as usize * stride;
        &self.data[start..start + stride]
    }

    /// Iterates over the rows, top to bottom.
    pub fn rows(&self) -> impl Iterator<Item = &[u8]> {
        // `chunks_exact(0)` would panic; a zero-width bitmap has no bytes and so yields no rows.
        self.data.chunks_exact(self.stride().max(1))
    }

    /// How many dots are black: a cheap figure for logs and for tests.
    pub fn black_dots(&self) -> u64 {
        self.data.iter().map(|b| u64::from(b.count_ones())).sum()
    }
}

impl fmt::Debug for MonoBitmap {
    // The pixel data runs to hundreds of kilobytes; a debug print shows only what identifies it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonoBitmap")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("black_dots", &self.black_dots())
            .finish()
    }
}

fn stride_for(width: u32) -> usize {
    width.div_ceil(8) as usize
}

/// An 8-bit grey plane (0 = black, 255 = white), one byte per dot, already composited over
/// white paper. Every input format is brought to this form before rotation, scaling and
/// halftoning, so those steps exist once.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct GreyPlane {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) data: Vec<u8>,
}

impl GreyPlane {
    /// Rotates by `turns` quarter turns clockwise. A pure permutation of the dots: nothing is
    /// interpolated, so barcode modules stay exact.
    pub(crate) fn rotate_clockwise(self, turns: u8) -> GreyPlane {
        let (w, h) = (self.width as usize, self.height as usize);
        match turns % 4 {
            0 => self,
            2 => {
                let mut data = self.data;
                data.reverse();
                GreyPlane {
                    width: self.width,
                    height: self.height,
                    data,
                }
            }
            turns => {
                // Output is h wide and w tall. For a clockwise turn the output dot (x', y') comes
                // from source (y', h - 1 - x'); for three turns from (w - 1 - y', x').
                let mut data = vec![0u8; w * h];
                for y in 0..h {
                    let src_row = &self.data[y * w..(y + 1) * w];
                    for (x, &value) in src_row.iter().enumerate() {
                        let (nx, ny) = if turns == 1 {
                            (h - 1 - y, x)
                        } else {
                            (y, w - 1 - x)
                        };
                        data[ny * h + nx] = value;
                    }
                }
                GreyPlane {
                    width: self.height,
                    height: self.width,
                    data,
                }
            }
        }
    }

    /// Scales to `width` x `height` by nearest neighbour: each output dot copies the source dot
    /// under its centre, so no grey is invented. When the source size is an exact multiple of
    /// the output size this takes every k-th dot, which keeps barcode modules of k dots whole.
    pub(crate) fn scale_nearest(self, width: u32, height: u32) -> GreyPlane {
        if width == self.width && height == self.height {
            return self;
        }
        let (sw, sh) = (u64::from(self.width), u64::from(self.height));
        let (ow, oh) = (u64::from(width), u64::from(height));
        // Source column for each output column, computed once: centre of output dot x maps to
        // (x + 0.5) * sw / ow in the source.
        let columns: Vec<usize> = (0..ow)
            .map(|x| (((2 * x + 1) * sw) / (2 * ow)).min(sw - 1) as usize)
            .collect();
        let mut data = Vec::with_capacity((ow * oh) as usize);
        for y in 0..oh {
            let sy = (((2 * y + 1) * sh) / (2 * oh)).min(sh - 1) as usize;
            let src_row = &self.data[sy * sw as usize..(sy + 1) * sw as usize];
            data.extend(columns.iter().map(|&sx| src_row[sx]));
        }
        GreyPlane {
            width,
            height,
            data,
        }
    }
}

impl fmt::Debug for GreyPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GreyPlane")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_msb_first_with_one_as_black_and_padding_stays_white() {
        let mut bitmap = MonoBitmap::new(10, 2);
        assert_eq!(bitmap.stride(), 2);
        bitmap.set(0, 0, true);
        bitmap.set(9, 1, true);
        assert_eq!(bitmap.row(0), &[0x80, 0x00]);
        assert_eq!(bitmap.row(1), &[0x00, 0x40]);
        assert!(bitmap.get(0, 0) && bitmap.get(9, 1));
        assert!(!bitmap.get(1, 0) && !bitmap.get(10, 1) && !bitmap.get(0, 2));
        bitmap.set(0, 0, false);
        assert_eq!(bitmap.black_dots(), 1);
        assert_eq!(bitmap.rows().count(), 2);
    }

    fn numbered(width: u32, height: u32) -> GreyPlane {
        GreyPlane {
            width,
            height,
            data: (0..width * height).map(|v| v as u8).collect(),
        }
    }

    #[test]
    fn quarter_turns_permute_dots_exactly() {
        // 3 x 2 source:  0 1 2
        //                3 4 5
        let plane = numbered(3, 2);
        let cw = plane.clone().rotate_clockwise(1);
        assert_eq!((cw.width, cw.height), (2, 3));
        assert_eq!(cw.data, vec![3, 0, 4, 1, 5, 2]);
        let half = plane.clone().rotate_clockwise(2);
        assert_eq!(half.data, vec![5, 4, 3, 2, 1, 0]);
        let ccw = plane.clone().rotate_clockwise(3);
        assert_eq!((ccw.width, ccw.height), (2, 3));
        assert_eq!(ccw.data, vec![2, 5, 1, 4, 0, 3]);
        assert_eq!(cw.rotate_clockwise(3), plane);
    }

    #[test]
    fn integer_nearest_neighbour_keeps_whole_modules() {
        // Modules of 2 dots: 0 0 255 255 0 0 255 255 halved must give 0 255 0 255.
        let plane = GreyPlane {
            width: 8,
            height: 2,
            data: [0, 0, 255, 255, 0, 0, 255, 255].repeat(2),
        };
        let half = plane.scale_nearest(4, 1);
        assert_eq!(half.data, vec![0, 255, 0, 255]);
    }
}
