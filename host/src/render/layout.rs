//! Deciding how a page or image goes onto the media: which way round, and how far it must be
//! scaled down to fit the printable width and, on die-cut labels, the label length.

use super::{RenderTarget, Rotation};

/// Float comparisons on page sizes get this much slack (in dots), so that a 4 in wide PDF page
/// at 203 dpi (exactly 812.0 dots on paper, 811.9999 after arithmetic) is not "too wide".
const SLACK_DOTS: f64 = 0.01;

/// Clockwise quarter turns the source needs on `target`, as the caller asked or, for
/// [`Rotation::Auto`], by what fits. `width` and `height` are the source size in dots.
pub(crate) fn quarter_turns(
    width: f64,
    height: f64,
    target: &RenderTarget,
    rotation: Rotation,
) -> u8 {
    match rotation {
        Rotation::None => 0,
        Rotation::Deg90 => 1,
        Rotation::Deg180 => 2,
        Rotation::Deg270 => 3,
        Rotation::Auto => {
            if fits(width, height, target) {
                0
            } else if fits(height, width, target) {
                1
            } else if fit_scale(height, width, target) > fit_scale(width, height, target) {
                // Neither way fits: take the way that needs less shrinking, so the print stays
                // as large (and as legible) as the media allows.
                1
            } else {
                0
            }
        }
    }
}

/// Whether a `width` x `height` dot area fits on `target` unscaled.
pub(crate) fn fits(width: f64, height: f64, target: &RenderTarget) -> bool {
    width <= f64::from(target.width_dots) + SLACK_DOTS
        && target
            .max_length_dots
            .is_none_or(|length| height <= f64::from(length) + SLACK_DOTS)
}

/// The largest factor (at most 1) by which a `width` x `height` area must be multiplied to fit
/// on `target`.
pub(crate) fn fit_scale(width: f64, height: f64, target: &RenderTarget) -> f64 {
    if fits(width, height, target) {
        return 1.0;
    }
    let across = f64::from(target.width_dots) / width;
    let along = target
        .max_length_dots
        .map_or(f64::INFINITY, |length| f64::from(length) / height);
    across.min(along).min(1.0)
}

/// The integer divisor k for shrinking a `width` x `height` raster to 1/k of its size so that
/// it fits on `target`. Keeping k whole means every output dot stands for a k x k block, so
/// barcode modules that were k dots wide stay equally wide: fractional factors would make some
/// modules one dot narrower than others.
pub(crate) fn integer_divisor(width: u32, height: u32, target: &RenderTarget) -> u32 {
    let across = width.div_ceil(target.width_dots.max(1));
    let along = target
        .max_length_dots
        .map_or(1, |length| height.div_ceil(length.max(1)));
    across.max(along).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(width_dots: u32, max_length_dots: Option<u32>) -> RenderTarget {
        RenderTarget {
            dpi: 203,
            width_dots,
            max_length_dots,
        }
    }

    #[test]
    fn auto_keeps_what_fits_and_turns_landscape_pages() {
        let four_by_six = target(812, Some(1218));
        assert_eq!(
            quarter_turns(812.0, 1218.0, &four_by_six, Rotation::Auto),
            0
        );
        assert_eq!(
            quarter_turns(1218.0, 812.0, &four_by_six, Rotation::Auto),
            1
        );
        assert_eq!(quarter_turns(600.0, 400.0, &four_by_six, Rotation::Auto), 0);
        // Letter landscape on a 4 in printer: neither way fits; turning shrinks less.
        assert_eq!(
            quarter_turns(2233.0, 1726.0, &four_by_six, Rotation::Auto),
            1
        );
        assert_eq!(
            quarter_turns(812.0, 1218.0, &four_by_six, Rotation::Deg270),
            3
        );
    }

    #[test]
    fn scale_respects_width_and_die_cut_length() {
        let continuous = target(812, None);
        assert_eq!(fit_scale(812.0, 5000.0, &continuous), 1.0);
        assert_eq!(fit_scale(1624.0, 100.0, &continuous), 0.5);
        let die_cut = target(812, Some(1218));
        assert_eq!(fit_scale(812.0, 2436.0, &die_cut), 0.5);
        assert_eq!(integer_divisor(1700, 100, &continuous), 3);
        assert_eq!(integer_divisor(812, 2437, &die_cut), 3);
        assert_eq!(integer_divisor(600, 400, &die_cut), 1);
    }
}
