//! Turning an 8-bit grey plane into a 1-bit bitmap: a fixed threshold for indicia, barcodes and
//! labels, Floyd-Steinberg error diffusion for photographs.

use super::bitmap::{GreyPlane, MonoBitmap};
use super::Halftone;

/// Halftones `plane` as `halftone` says.
pub(crate) fn halftone(plane: &GreyPlane, halftone: Halftone) -> MonoBitmap {
    match halftone {
        Halftone::Threshold { level } => threshold(plane, level),
        Halftone::Dither => floyd_steinberg(plane),
    }
}

/// Black wherever the grey value is below `level`. Nothing is spread to neighbours, so a
/// barcode module stays exactly as wide as it was drawn.
fn threshold(plane: &GreyPlane, level: u8) -> MonoBitmap {
    let mut bitmap = MonoBitmap::new(plane.width, plane.height);
    let stride = bitmap.stride();
    if stride == 0 {
        return bitmap;
    }
    let width = plane.width as usize;
    for (src, dst) in plane
        .data
        .chunks_exact(width)
        .zip(bitmap.data.chunks_exact_mut(stride))
    {
        // Eight dots at a time make one output byte; the last chunk may be shorter and leaves
        // its padding bits 0 (white).
        for (group, byte) in src.chunks(8).zip(dst.iter_mut()) {
            let mut bits = 0u8;
            for (i, &grey) in group.iter().enumerate() {
                bits |= u8::from(grey < level) << (7 - i);
            }
            *byte = bits;
        }
    }
    bitmap
}

/// Floyd-Steinberg error diffusion with serpentine scanning (left to right on even rows, right
/// to left on odd rows), which avoids the diagonal "worm" artefacts of one-way scanning.
///
/// Each dot is black when its grey value plus the error carried to it is below 128; the
/// difference between the wanted and the printed value is spread 7/16 to the next dot on the
/// row and 3/16, 5/16, 1/16 to the three dots below.
fn floyd_steinberg(plane: &GreyPlane) -> MonoBitmap {
    let mut bitmap = MonoBitmap::new(plane.width, plane.height);
    let width = plane.width as usize;
    let stride = bitmap.stride();
    if width == 0 {
        return bitmap;
    }
    // Errors for the current and the next row, with one guard cell on each side so that the
    // edges need no special cases. Values stay within about -255..=510, well inside i32.
    let mut current = vec![0i32; width + 2];
    let mut next = vec![0i32; width + 2];
    for y in 0..plane.height {
        let row = &plane.data[y as usize * width..(y as usize + 1) * width];
        let leftwards = y % 2 == 1;
        for step in 0..width {
            let x = if leftwards { width - 1 - step } else { step };
            let cell = x + 1;
            let wanted = i32::from(row[x]) + current[cell];
            let black = wanted < 128;
            if black {
                bitmap.data[y as usize * stride + x / 8] |= 0x80 >> (x % 8);
            }
            let error = wanted - if black { 0 } else { 255 };
            let (ahead, behind) = if leftwards {
                (cell - 1, cell + 1)
            } else {
                (cell + 1, cell - 1)
            };
            current[ahead] += error * 7 / 16;
            next[behind] += error * 3 / 16;
            next[cell] += error * 5 / 16;
            next[ahead] += error / 16;
        }
        std::mem::swap(&mut current, &mut next);
        next.iter_mut().for_each(|e| *e = 0);
    }
    bitmap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(width: u32, height: u32, grey: u8) -> GreyPlane {
        GreyPlane {
            width,
            height,
            data: vec![grey; (width * height) as usize],
        }
    }

    #[test]
    fn threshold_is_strictly_below_level() {
        let plane = GreyPlane {
            width: 9,
            height: 1,
            data: vec![0, 127, 128, 129, 255, 10, 200, 50, 0],
        };
        let bitmap = threshold(&plane, 128);
        // Dots 0, 1, 5, 7 and 8 are darker than 128.
        assert_eq!(bitmap.row(0), &[0b1100_0101, 0b1000_0000]);
    }

    #[test]
    fn dither_of_flat_grey_prints_about_that_much_black() {
        // A 25 % grey (value 191) should come out close to a quarter black, and pure black and
        // pure white must stay pure.
        let bitmap = floyd_steinberg(&flat(64, 64, 191));
        let share = bitmap.black_dots() as f64 / (64.0 * 64.0);
        assert!((0.22..0.28).contains(&share), "black share {share}");
        assert_eq!(floyd_steinberg(&flat(16, 4, 0)).black_dots(), 64);
        assert_eq!(floyd_steinberg(&flat(16, 4, 255)).black_dots(), 0);
    }

    #[test]
    fn dither_leaves_row_padding_white() {
        let bitmap = floyd_steinberg(&flat(3, 2, 0));
        assert_eq!(bitmap.row(0), &[0b1110_0000]);
        assert_eq!(bitmap.row(1), &[0b1110_0000]);
    }
}
