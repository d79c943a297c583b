//! The one-bit label bitmap that the ZPL and EPL2 encoders take as input.
//!
//! Convention (shared by every DeviceHub driver): the image is stored row by row, top to bottom;
//! each row takes `ceil(width / 8)` bytes; within a byte the most significant bit is the leftmost
//! dot; a bit set to 1 is a black (burned) dot. The bits after the last dot of a row are padding:
//! the encoders ignore them and always send them as white.

use thiserror::Error;

/// A borrowed one-bit image, laid out as described in the module documentation.
///
/// The fields are public so that callers can build one from any buffer they already hold; the
/// encoders call [`Bitmap::validate`] before reading it, so an inconsistent value is reported as
/// an error rather than read out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bitmap<'a> {
    /// Width of the image in dots.
    pub width: u32,
    /// Height of the image in dots (rows).
    pub height: u32,
    /// `height` rows of `ceil(width / 8)` bytes each.
    pub data: &'a [u8],
}

/// Why a [`Bitmap`] cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BitmapError {
    /// A label with no dots cannot be described to the printer (`^GF` and `GW` need at least one byte).
    #[error("bitmap is empty ({width} x {height} dots)")]
    Empty {
        /// Width given, in dots.
        width: u32,
        /// Height given, in dots.
        height: u32,
    },
    /// The data buffer does not hold exactly `height * ceil(width / 8)` bytes.
    #[error(
        "bitmap of {width} x {height} dots needs {expected} bytes of data, but {actual} were given"
    )]
    LengthMismatch {
        /// Width given, in dots.
        width: u32,
        /// Height given, in dots.
        height: u32,
        /// Bytes the dimensions call for.
        expected: u64,
        /// Bytes actually present.
        actual: usize,
    },
}

impl<'a> Bitmap<'a> {
    /// Builds a bitmap and checks that `data` matches the dimensions.
    pub fn new(width: u32, height: u32, data: &'a [u8]) -> Result<Self, BitmapError> {
        let bitmap = Bitmap {
            width,
            height,
            data,
        };
        bitmap.validate()?;
        Ok(bitmap)
    }

    /// Number of bytes in one row: `ceil(width / 8)`.
    pub fn bytes_per_row(&self) -> usize {
        // u32 -> usize cannot lose bits on the 32- and 64-bit targets DeviceHub supports.
        (self.width as usize).div_ceil(8)
    }

    /// Checks that the image is not empty and that `data` holds exactly `height` rows.
    pub fn validate(&self) -> Result<(), BitmapError> {
        if self.width == 0 || self.height == 0 {
            return Err(BitmapError::Empty {
                width: self.width,
                height: self.height,
            });
        }
        // Computed in u64 so that absurd dimensions are reported instead of overflowing.
        let expected = u64::from(self.width).div_ceil(8) * u64::from(self.height);
        if expected != self.data.len() as u64 {
            return Err(BitmapError::LengthMismatch {
                width: self.width,
                height: self.height,
                expected,
                actual: self.data.len(),
            });
        }
        Ok(())
    }

    /// The mask that keeps the real dots of a row's last byte and clears its padding bits.
    pub fn last_byte_mask(&self) -> u8 {
        match self.width % 8 {
            0 => 0xFF,
            // `dots` is 1..=7, so the shift amount stays within 1..=7.
            dots => 0xFFu8 << (8 - dots),
        }
    }

    /// Returns the rows top to bottom with padding bits cleared (white), one owned row at a time
    /// so that the caller never sees stray padding dots.
    ///
    /// The bitmap must have been validated; a short buffer simply yields fewer rows.
    pub fn clean_rows(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        let mask = self.last_byte_mask();
        self.data
            .chunks_exact(self.bytes_per_row())
            .map(move |row| {
                let mut row = row.to_vec();
                if let Some(last) = row.last_mut() {
                    *last &= mask;
                }
                row
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_row_rounds_up() {
        let data = [0u8; 3];
        assert_eq!(Bitmap::new(17, 1, &data).map(|b| b.bytes_per_row()), Ok(3));
        let data = [0u8; 2];
        assert_eq!(Bitmap::new(16, 1, &data).map(|b| b.bytes_per_row()), Ok(2));
        let data = [0u8; 1];
        assert_eq!(Bitmap::new(1, 1, &data).map(|b| b.bytes_per_row()), Ok(1));
    }

    #[test]
    fn length_mismatch_is_reported_with_both_sizes() {
        let data = [0u8; 5];
        assert_eq!(
            Bitmap::new(9, 3, &data),
            Err(BitmapError::LengthMismatch {
                width: 9,
                height: 3,
                expected: 6,
                actual: 5
            })
        );
    }

    #[test]
    fn empty_bitmaps_are_rejected() {
        assert_eq!(
            Bitmap::new(0, 10, &[]),
            Err(BitmapError::Empty {
                width: 0,
                height: 10
            })
        );
        assert_eq!(
            Bitmap::new(10, 0, &[]),
            Err(BitmapError::Empty {
                width: 10,
                height: 0
            })
        );
    }

    #[test]
    fn huge_dimensions_do_not_overflow() {
        let bitmap = Bitmap {
            width: u32::MAX,
            height: u32::MAX,
            data: &[],
        };
        assert!(matches!(
            bitmap.validate(),
            Err(BitmapError::LengthMismatch { actual: 0, .. })
        ));
    }

    #[test]
    fn clean_rows_clear_padding_bits_only() {
        // 10 dots wide: the second byte keeps its two leftmost bits.
        let data = [0xFF, 0xFF, 0x12, 0xC0];
        let bitmap = Bitmap::new(10, 2, &data).expect("valid test bitmap");
        let rows: Vec<Vec<u8>> = bitmap.clean_rows().collect();
        assert_eq!(rows, vec![vec![0xFF, 0xC0], vec![0x12, 0xC0]]);
    }

    #[test]
    fn whole_byte_widths_are_left_untouched() {
        let data = [0xA5, 0x5A];
        let bitmap = Bitmap::new(8, 2, &data).expect("valid test bitmap");
        assert_eq!(bitmap.last_byte_mask(), 0xFF);
        let rows: Vec<Vec<u8>> = bitmap.clean_rows().collect();
        assert_eq!(rows, vec![vec![0xA5], vec![0x5A]]);
    }
}
