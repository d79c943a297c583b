//! Composes an indicium (a GIF at 203 or 300 dpi) onto a one-page PDF of an envelope or sheet,
//! at the position the job gives, so that an office printer prints it at its true size.
//!
//! The image is thresholded to 1 bit at its native pixel size (the renderer's rule for indicia:
//! no scaling, no dithering) and embedded as a 1-bit DeviceGray image XObject with
//! `/Interpolate false`, drawn with a matrix that makes one image pixel exactly `72 / dpi`
//! points. A printer then has nothing to smooth: the Data Matrix or PDF417 modules arrive with
//! the edges they were drawn with and stay scannable.

use std::collections::BTreeMap;

use printpdf::{
    DictItem, ExternalStream, ExternalXObject, Mm, Op, PdfDocument, PdfPage, PdfSaveOptions, Pt,
    Px, XObjectTransform,
};

use super::media::{Media, Orientation};
use crate::render::{
    self, Halftone, InputFormat, MonoBitmap, RenderLimits, RenderOptions, RenderTarget, Rotation,
};

/// Millimetres per inch and points per inch.
const MM_PER_INCH: f64 = 25.4;
const PT_PER_INCH: f64 = 72.0;

/// The resolutions indicia come in; anything else is most likely a mistake in the job.
pub const INDICIA_DPI: &[u32] = &[203, 300, 600];

/// Where an image goes on a page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImagePlacement {
    /// The image's resolution: one pixel is `1 / dpi` inch on paper.
    pub dpi: u32,
    /// Distance of the image's left edge from the page's left edge, in mm.
    pub x_mm: f64,
    /// Distance of the image's top edge from the page's top edge, in mm.
    pub y_mm: f64,
}

/// Why an image cannot be composed onto a page.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot read the image: {0}")]
    Image(#[from] render::RenderError),
    #[error("the image resolution must be one of {INDICIA_DPI:?} dpi, not {0}")]
    Resolution(u32),
    #[error("the position {x_mm} mm, {y_mm} mm is not on the page")]
    Position { x_mm: f64, y_mm: f64 },
    #[error(
        "a {width_mm:.1} x {height_mm:.1} mm image at {x_mm} mm, {y_mm} mm does not fit on a \
         {page_width_mm:.1} x {page_height_mm:.1} mm page"
    )]
    DoesNotFit {
        width_mm: f64,
        height_mm: f64,
        x_mm: f64,
        y_mm: f64,
        page_width_mm: f64,
        page_height_mm: f64,
    },
}

/// A composed page: the PDF and the bitmap it carries, for reports and tests.
#[derive(Debug, Clone)]
pub struct ComposedPage {
    pub pdf: Vec<u8>,
    pub bitmap: MonoBitmap,
    /// The page size in mm (width, height) as laid out.
    pub page_mm: (f64, f64),
}

/// Composes `gif` onto one page of `media` (turned for `orientation`), at `placement`.
pub fn compose_image(
    gif: &[u8],
    media: &Media,
    orientation: Option<Orientation>,
    placement: ImagePlacement,
) -> Result<ComposedPage, ComposeError> {
    let ImagePlacement { dpi, x_mm, y_mm } = placement;
    if !INDICIA_DPI.contains(&dpi) {
        return Err(ComposeError::Resolution(dpi));
    }
    let (page_width_mm, page_height_mm) = media.page_mm(orientation);
    if !(x_mm.is_finite() && y_mm.is_finite())
        || x_mm < 0.0
        || y_mm < 0.0
        || x_mm >= page_width_mm
        || y_mm >= page_height_mm
    {
        return Err(ComposeError::Position { x_mm, y_mm });
    }
    let mm_to_dots = |mm: f64| (mm / MM_PER_INCH * f64::from(dpi)).floor() as u32;
    // The renderer keeps images at their pixel size and only shrinks what does not fit; the
    // target is the page, so anything it would shrink is refused below instead.
    let options = RenderOptions {
        target: RenderTarget {
            dpi,
            width_dots: mm_to_dots(page_width_mm).max(1),
            max_length_dots: Some(mm_to_dots(page_height_mm).max(1)),
        },
        halftone: Halftone::Threshold { level: 128 },
        rotation: Rotation::None,
        limits: RenderLimits::default(),
    };
    // Indicia are GIFs; PNG and JPEG images are taken too. A PDF is no image to place.
    let format = match InputFormat::sniff(gif) {
        Some(InputFormat::Pdf) | None => InputFormat::Gif,
        Some(image) => image,
    };
    let mut pages = render::render(gif, format, &options)?;
    let page = pages.remove(0);
    let bitmap = page.bitmap;
    let width_mm = f64::from(page.placement.source_width) * MM_PER_INCH / f64::from(dpi);
    let height_mm = f64::from(page.placement.source_height) * MM_PER_INCH / f64::from(dpi);
    // A little slack: a 4.125 in envelope is 104.775 mm and float rounding must not refuse an
    // image that fills it exactly.
    let slack = 0.01;
    if page.placement.is_scaled()
        || x_mm + width_mm > page_width_mm + slack
        || y_mm + height_mm > page_height_mm + slack
    {
        return Err(ComposeError::DoesNotFit {
            width_mm,
            height_mm,
            x_mm,
            y_mm,
            page_width_mm,
            page_height_mm,
        });
    }

    let mut document = PdfDocument::new("DeviceHub sheet");
    let image = document.add_xobject(&image_xobject(&bitmap, dpi));
    // PDF's origin is the bottom-left corner; the job measures from the top-left.
    let to_pt = |mm: f64| (mm / MM_PER_INCH * PT_PER_INCH) as f32;
    let transform = XObjectTransform {
        translate_x: Some(Pt(to_pt(x_mm))),
        translate_y: Some(Pt(to_pt(page_height_mm - y_mm - height_mm))),
        dpi: Some(dpi as f32),
        ..XObjectTransform::default()
    };
    let ops = vec![Op::UseXobject {
        id: image,
        transform,
    }];
    let pdf_page = PdfPage::new(Mm(page_width_mm as f32), Mm(page_height_mm as f32), ops);
    let mut warnings = Vec::new();
    let pdf = document
        .with_pages(vec![pdf_page])
        .save(&PdfSaveOptions::default(), &mut warnings);
    for warning in &warnings {
        tracing::debug!("PDF composition: {warning:?}");
    }
    Ok(ComposedPage {
        pdf,
        bitmap,
        page_mm: (page_width_mm, page_height_mm),
    })
}

/// A 1-bit DeviceGray image XObject of `bitmap`. Rows are the bitmap's own bytes (1 = black,
/// padded to whole bytes, as PDF wants them); `/Decode [1 0]` tells PDF that 1 is black.
fn image_xobject(bitmap: &MonoBitmap, dpi: u32) -> ExternalXObject {
    let mut dict = BTreeMap::new();
    dict.insert("Type".to_string(), DictItem::Name(b"XObject".to_vec()));
    dict.insert("Subtype".to_string(), DictItem::Name(b"Image".to_vec()));
    dict.insert("Width".to_string(), DictItem::Int(i64::from(bitmap.width)));
    dict.insert(
        "Height".to_string(),
        DictItem::Int(i64::from(bitmap.height)),
    );
    dict.insert("BitsPerComponent".to_string(), DictItem::Int(1));
    dict.insert(
        "ColorSpace".to_string(),
        DictItem::Name(b"DeviceGray".to_vec()),
    );
    dict.insert(
        "Decode".to_string(),
        DictItem::Array(vec![DictItem::Int(1), DictItem::Int(0)]),
    );
    dict.insert("Interpolate".to_string(), DictItem::Bool(false));
    ExternalXObject {
        stream: ExternalStream {
            dict,
            content: bitmap.data.clone(),
            compress: true,
        },
        width: Some(Px(bitmap.width as usize)),
        height: Some(Px(bitmap.height as usize)),
        dpi: Some(dpi as f32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDICIA: &[u8] = include_bytes!("../../../tests/fixtures/labels/indicia.gif");

    fn envelope() -> Media {
        Media::parse("na_number-10_4.125x9.5in").unwrap()
    }

    #[test]
    fn composes_a_one_page_pdf_with_the_image_unscaled() {
        let page = compose_image(
            INDICIA,
            &envelope(),
            Some(Orientation::Landscape),
            ImagePlacement {
                dpi: 300,
                x_mm: 180.0,
                y_mm: 8.0,
            },
        )
        .unwrap();
        assert!(page.pdf.starts_with(b"%PDF-"));
        assert!(page.bitmap.black_dots() > 0);
        assert_eq!(page.page_mm, (241.3, 104.78));
        let text = String::from_utf8_lossy(&page.pdf);
        assert!(text.contains("/Interpolate false"), "no /Interpolate false");
        assert!(text.contains("/BitsPerComponent 1"), "not a 1-bit image");
    }

    #[test]
    fn refuses_what_would_be_cut_off_or_scaled() {
        let err = compose_image(
            INDICIA,
            &envelope(),
            None,
            ImagePlacement {
                dpi: 300,
                x_mm: 100.0,
                y_mm: 10.0,
            },
        )
        .unwrap_err();
        assert!(matches!(err, ComposeError::DoesNotFit { .. }), "{err}");
        let err = compose_image(
            INDICIA,
            &envelope(),
            None,
            ImagePlacement {
                dpi: 300,
                x_mm: -1.0,
                y_mm: 10.0,
            },
        )
        .unwrap_err();
        assert!(matches!(err, ComposeError::Position { .. }), "{err}");
        let err = compose_image(
            INDICIA,
            &envelope(),
            None,
            ImagePlacement {
                dpi: 72,
                x_mm: 1.0,
                y_mm: 1.0,
            },
        )
        .unwrap_err();
        assert!(matches!(err, ComposeError::Resolution(72)), "{err}");
        let err = compose_image(
            b"GIF89a not really",
            &envelope(),
            None,
            ImagePlacement {
                dpi: 300,
                x_mm: 1.0,
                y_mm: 1.0,
            },
        )
        .unwrap_err();
        assert!(matches!(err, ComposeError::Image(_)), "{err}");
    }
}
