//! PDF input: each page rasterized by `hayro` (pure Rust) straight at the printer's dpi, turned
//! and shrunk by the rasterizer's transform rather than by resampling pixels afterwards.

use std::io::{self, Read};
use std::panic::{self, AssertUnwindSafe};

use flate2::read::{DeflateDecoder, ZlibDecoder};
use std::sync::Arc;

use hayro::hayro_interpret::util::TransformExt;
use hayro::hayro_interpret::InterpreterSettings;
use hayro::hayro_syntax::object::{Name, Stream};
use hayro::hayro_syntax::page::Page;
use hayro::hayro_syntax::Filter;
use hayro::hayro_syntax::{LoadPdfError, Pdf};
use hayro::kurbo::Affine;
use hayro::vello_cpu::color::palette::css::WHITE;
use hayro::vello_cpu::{Pixmap, RasterizerSettings, RenderContext, Resources, TargetInit};
use hayro::{RenderCache, RenderSettings};

use super::bitmap::GreyPlane;
use super::halftone::halftone;
use super::layout;
use super::raster::luma;
use super::{InputFormat, Placement, RenderError, RenderOptions, RenderedPage};

/// PDF user space has 72 units per inch.
const POINTS_PER_INCH: f64 = 72.0;

/// Renders every page of a PDF document.
pub(crate) fn render(
    input: &[u8],
    options: &RenderOptions,
) -> Result<Vec<RenderedPage>, RenderError> {
    let pdf =
        Pdf::new(Arc::new(input.to_vec())).map_err(|error| decode_error(load_reason(error)))?;
    let page_count = pdf.pages().len();
    if page_count == 0 {
        return Err(decode_error("document has no pages".to_owned()));
    }
    if page_count > options.limits.max_pages as usize {
        return Err(RenderError::TooManyPages {
            pages: page_count,
            limit: options.limits.max_pages,
        });
    }
    check_streams(&pdf, options.limits.max_pixels)?;

    // The cache holds parsed fonts and glyph outlines; labels repeat them from page to page.
    let cache = RenderCache::new();
    let interpreter_settings = InterpreterSettings::default();
    let render_settings = RenderSettings::default();
    pdf.pages()
        .iter()
        .enumerate()
        .map(|(index, page)| {
            render_page(
                page,
                index + 1,
                &cache,
                &interpreter_settings,
                &render_settings,
                options,
            )
        })
        .collect()
}

fn render_page<'a>(
    page: &'a Page<'a>,
    number: usize,
    cache: &RenderCache<'a>,
    interpreter_settings: &InterpreterSettings,
    render_settings: &RenderSettings,
    options: &RenderOptions,
) -> Result<RenderedPage, RenderError> {
    let target = &options.target;
    let dots_per_point = f64::from(target.dpi) / POINTS_PER_INCH;
    // The page as it is meant to be seen: crop box, with the page's own /Rotate applied.
    let (width_pt, height_pt) = page.render_dimensions();
    let natural_width = f64::from(width_pt) * dots_per_point;
    let natural_height = f64::from(height_pt) * dots_per_point;

    let turns = layout::quarter_turns(natural_width, natural_height, target, options.rotation);
    let (turned_width, turned_height) = if turns % 2 == 1 {
        (natural_height, natural_width)
    } else {
        (natural_width, natural_height)
    };
    let scale = layout::fit_scale(turned_width, turned_height, target);
    // Rounded to whole dots, and never past the printable width after rounding.
    let width = ((turned_width * scale).round() as u64).clamp(1, u64::from(target.width_dots));
    let height = ((turned_height * scale).round() as u64).max(1);

    let too_large = |width: u64, height: u64| RenderError::TooManyPixels {
        format: InputFormat::Pdf,
        what: format!("page {number}"),
        width,
        height,
        limit: options.limits.max_pixels,
    };
    // vello_cpu addresses pixels with u16 coordinates, so a longer page cannot be rasterized
    // in one piece whatever the limits say.
    if width * height > options.limits.max_pixels
        || width > u64::from(u16::MAX)
        || height > u64::from(u16::MAX)
    {
        return Err(too_large(width, height));
    }
    let (canvas_width, canvas_height) = (width as u16, height as u16);

    // Device transform, applied right to left: the page's own transform (PDF y-up to y-down,
    // crop box offset, /Rotate), then points to dots with any shrink, then our quarter turns.
    let (w, h) = (f64::from(canvas_width), f64::from(canvas_height));
    let turn = match turns {
        // (x, y) -> (W - y, x) where W is the turned width, i.e. the unturned height.
        1 => Affine::new([0.0, 1.0, -1.0, 0.0, w, 0.0]),
        2 => Affine::new([-1.0, 0.0, 0.0, -1.0, w, h]),
        // (x, y) -> (y, H - x) where H is the turned height, i.e. the unturned width.
        3 => Affine::new([0.0, -1.0, 1.0, 0.0, 0.0, h]),
        _ => Affine::IDENTITY,
    };
    let transform =
        turn * Affine::scale(dots_per_point * scale) * page.initial_transform(true).to_kurbo();

    // hayro is written to tolerate malformed files, but it is still a large parser fed with
    // untrusted bytes: a panic inside it must fail this print, not the agent.
    let pixmap = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut context = RenderContext::new(canvas_width, canvas_height);
        hayro::render_into(
            page,
            cache,
            interpreter_settings,
            render_settings,
            &mut context,
            transform,
        );
        context.flush();
        let mut pixmap = Pixmap::new(canvas_width, canvas_height);
        context.render_with(
            &mut pixmap,
            &mut Resources::default(),
            RasterizerSettings {
                target_init: TargetInit::Clear(WHITE),
                ..Default::default()
            },
        );
        pixmap
    }))
    .map_err(|_| decode_error(format!("the rasterizer failed on page {number}")))?;

    // The pixmap was cleared to opaque white, so every pixel is opaque and premultiplied
    // equals straight colour.
    let plane = GreyPlane {
        width: u32::from(canvas_width),
        height: u32::from(canvas_height),
        data: pixmap
            .data_as_u8_slice()
            .chunks_exact(4)
            .map(|p| luma(p[0], p[1], p[2]))
            .collect(),
    };
    let unturned = |a: f64, b: f64| (a.round() as u32, b.round() as u32);
    let (source_width, source_height) = unturned(natural_width, natural_height);
    Ok(RenderedPage {
        bitmap: halftone(&plane, options.halftone),
        placement: Placement {
            source_width,
            source_height,
            quarter_turns: turns,
            width: plane.width,
            height: plane.height,
        },
    })
}

/// Refuses documents that would make hayro allocate without bound, before it renders them:
/// an image XObject declaring more than `max_pixels` (hayro decodes embedded images whole), or
/// Flate streams inflating past 8 bytes per allowed pixel in total (hayro inflates streams
/// into memory with no cap, so a few kilobytes of deflated zeros can ask for gigabytes).
///
/// Inflating is measured by streaming into a sink, so the check itself holds only a small
/// buffer. It covers streams whose first filter is Flate, which is how PDF writers compress
/// content, fonts and images; Flate behind another filter, LZW, and the object streams hayro
/// reads while opening the document are not covered.
fn check_streams(pdf: &Pdf, max_pixels: u64) -> Result<(), RenderError> {
    let inflate_limit = max_pixels.saturating_mul(8);
    let mut inflated_total = 0u64;
    for object in pdf.objects() {
        let Some(stream) = object.into_stream() else {
            continue;
        };
        let dict = stream.dict();
        let is_image = dict
            .get::<Name<'_>>(b"Subtype")
            .is_some_and(|subtype| subtype.as_ref() == b"Image");
        if is_image {
            let dimension = |key: &[u8]| dict.get::<f64>(key).unwrap_or(0.0).max(0.0) as u64;
            let (width, height) = (dimension(b"Width"), dimension(b"Height"));
            if width.saturating_mul(height) > max_pixels {
                return Err(RenderError::TooManyPixels {
                    format: InputFormat::Pdf,
                    what: "embedded image".to_owned(),
                    width,
                    height,
                    limit: max_pixels,
                });
            }
        }
        let budget = inflate_limit.saturating_sub(inflated_total);
        inflated_total += inflated_size(&stream, budget);
        if inflated_total > inflate_limit {
            return Err(RenderError::InflatesTooFar {
                format: InputFormat::Pdf,
                limit: inflate_limit,
            });
        }
    }
    Ok(())
}

/// How many bytes `stream` inflates to, counting at most `budget + 1` (enough to tell that it
/// is over budget). Streams that are not Flate-compressed count as nothing, and a corrupt
/// Flate stream counts what inflated before the corruption: hayro decodes no more than that.
fn inflated_size(stream: &Stream<'_>, budget: u64) -> u64 {
    if stream.filters().first() != Some(&Filter::FlateDecode) {
        return 0;
    }
    let raw = stream.raw_data();
    // PDF says zlib, but some writers emit raw deflate; hayro accepts both, and so must the
    // measurement.
    let zlib = count_bytes(ZlibDecoder::new(raw.as_ref()), budget);
    if zlib.valid {
        zlib.count
    } else {
        zlib.count
            .max(count_bytes(DeflateDecoder::new(raw.as_ref()), budget).count)
    }
}

struct Inflated {
    count: u64,
    /// Whether inflating got past the header without an error.
    valid: bool,
}

fn count_bytes(reader: impl Read, budget: u64) -> Inflated {
    let mut limited = reader.take(budget.saturating_add(1));
    let mut buffer = [0u8; 16 * 1024];
    let mut count = 0u64;
    loop {
        match limited.read(&mut buffer) {
            Ok(0) => return Inflated { count, valid: true },
            Ok(read) => count += read as u64,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                return Inflated {
                    count,
                    valid: count > 0,
                }
            }
        }
    }
}

fn load_reason(error: LoadPdfError) -> String {
    match error {
        LoadPdfError::Decryption(reason) => format!("document is encrypted ({reason:?})"),
        LoadPdfError::Invalid => "not a readable PDF document (broken or truncated)".to_owned(),
    }
}

fn decode_error(reason: String) -> RenderError {
    RenderError::Decode {
        format: InputFormat::Pdf,
        reason,
    }
}
