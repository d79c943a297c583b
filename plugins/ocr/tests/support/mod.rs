//! Address images for the OCR tests and benchmark: address blocks drawn with TrueType fonts
//! from Debian's font packages, black on white, as a desk scanner would deliver a label.

use std::path::PathBuf;

use ab_glyph::{point, Font, FontVec, PxScale, ScaleFont};
use devicehub_plugin_api::GrayImage;

/// The fonts drawn with: sans, serif and monospaced faces of two families.
pub const FONTS: &[&str] = &[
    "dejavu/DejaVuSans.ttf",
    "dejavu/DejaVuSerif.ttf",
    "dejavu/DejaVuSansMono.ttf",
    "liberation/LiberationSans-Regular.ttf",
    "liberation/LiberationSerif-Regular.ttf",
    "liberation/LiberationMono-Regular.ttf",
];

/// Addresses in the forms a shipping desk sees: US, UK, German, with a company and a unit.
pub const ADDRESSES: &[&[&str]] = &[
    &[
        "Jane Roe",
        "ACME Shipping Co",
        "1200 Market Street",
        "Springfield IL 62704",
    ],
    &[
        "Oliver Twist",
        "Flat 3, Baker House",
        "221 Baker Street",
        "London SW7 2RL",
        "United Kingdom",
    ],
    &[
        "Max Mustermann",
        "Hauptstrasse 17",
        "10115 Berlin",
        "Germany",
    ],
];

/// Text heights in pixels (the font's em size): about 8 and 12 point at 300 dpi.
pub const SIZES: &[f32] = &[34.0, 50.0];

/// Loads a font from the system's TrueType folder, or fails saying what to install.
pub fn font(name: &str) -> FontVec {
    let path = PathBuf::from("/usr/share/fonts/truetype").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the font {} ({e}): install the Debian packages fonts-dejavu-core and \
             fonts-liberation2 (.ci/run does)",
            path.display()
        )
    });
    FontVec::try_from_vec(bytes).unwrap_or_else(|e| panic!("{} is not a font: {e}", path.display()))
}

/// Draws `lines` left-aligned in `font` at `size` pixels, with a margin, as an 8-bit greyscale
/// image (0 black, 255 white).
pub fn render(lines: &[&str], font: &FontVec, size: f32) -> GrayImage {
    let scale = PxScale::from(size);
    let scaled = font.as_scaled(scale);
    let line_height = (scaled.ascent() - scaled.descent() + scaled.line_gap()) * 1.15;
    let margin = size;
    let widest = lines
        .iter()
        .map(|line| {
            let mut width = 0.0;
            let mut previous = None;
            for c in line.chars() {
                let id = scaled.glyph_id(c);
                if let Some(p) = previous {
                    width += scaled.kern(p, id);
                }
                width += scaled.h_advance(id);
                previous = Some(id);
            }
            width
        })
        .fold(0.0f32, f32::max);
    let width = (widest + 2.0 * margin).ceil() as u32;
    let height = (line_height * lines.len() as f32 + 2.0 * margin).ceil() as u32;
    let mut pixels = vec![255u8; (width * height) as usize];
    for (n, line) in lines.iter().enumerate() {
        let baseline = margin + scaled.ascent() + line_height * n as f32;
        let mut x = margin;
        let mut previous = None;
        for c in line.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = previous {
                x += scaled.kern(p, id);
            }
            let glyph = id.with_scale_and_position(scale, point(x, baseline));
            x += scaled.h_advance(id);
            previous = Some(id);
            if let Some(outlined) = font.outline_glyph(glyph) {
                let bounds = outlined.px_bounds();
                outlined.draw(|gx, gy, coverage| {
                    let px = bounds.min.x as i64 + i64::from(gx);
                    let py = bounds.min.y as i64 + i64::from(gy);
                    if (0..i64::from(width)).contains(&px) && (0..i64::from(height)).contains(&py) {
                        let index = (py as u32 * width + px as u32) as usize;
                        let ink = (coverage.clamp(0.0, 1.0) * 255.0) as u8;
                        pixels[index] = pixels[index].min(255 - ink);
                    }
                });
            }
        }
    }
    GrayImage {
        width,
        height,
        pixels: pixels.into(),
    }
}
