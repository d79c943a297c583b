//! Tests of the renderer through its public entry point, with inputs generated in code and the
//! committed label fixtures.
//!
//! - `pdf_writer`: a minimal PDF writer for documents whose geometry the tests control;
//! - `fixtures`: how the committed fixtures are drawn, and a check that they still match;
//! - this file: raster, PDF, layout, limit and error cases.

mod fixtures;
mod pdf_writer;

use std::io::Cursor;

use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgba, RgbaImage};

use super::*;
use fixtures::*;
use pdf_writer::{write_compressed_pdf, write_pdf, DeclaredImage, PdfPage};

fn target_4x6() -> RenderTarget {
    RenderTarget {
        dpi: 203,
        width_dots: LABEL_WIDTH,
        max_length_dots: Some(LABEL_HEIGHT),
    }
}

fn options(target: RenderTarget) -> RenderOptions {
    RenderOptions::for_target(target)
}

fn render_one(input: &[u8], format: InputFormat, options: &RenderOptions) -> RenderedPage {
    let mut pages = render(input, format, options)
        .unwrap_or_else(|error| panic!("rendering {format}: {error}"));
    assert_eq!(pages.len(), 1, "one page expected");
    pages.remove(0)
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, format)
        .expect("encoding in memory");
    out.into_inner()
}

fn gif_frames(frames: Vec<RgbaImage>) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder
            .encode_frames(frames.into_iter().map(image::Frame::new))
            .expect("encoding a GIF in memory");
    }
    out
}

/// A checker of 4-dot modules following `matrix_module`, transparent where white.
fn checker_gif_image(modules: u32) -> RgbaImage {
    RgbaImage::from_fn(modules * 4, modules * 4, |x, y| {
        if matrix_module(x / 4, y / 4, modules) {
            Rgba([0, 0, 0, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    })
}

fn expected_bitmap(width: u32, height: u32, black: impl Fn(u32, u32) -> bool) -> MonoBitmap {
    let mut bitmap = MonoBitmap::new(width, height);
    for y in 0..height {
        for x in 0..width {
            if black(x, y) {
                bitmap.set(x, y, true);
            }
        }
    }
    bitmap
}

/// Counts black dots inside `rect` (dots, top-down, end exclusive).
fn black_in(bitmap: &MonoBitmap, rect: DotRect) -> u64 {
    let mut count = 0;
    for y in rect.y0..rect.y1 {
        for x in rect.x0..rect.x1 {
            count += u64::from(bitmap.get(x, y));
        }
    }
    count
}

fn area(rect: DotRect) -> u64 {
    u64::from(rect.x1 - rect.x0) * u64::from(rect.y1 - rect.y0)
}

/// The dots strictly inside a PDF box given in points (y up on a page `page_height_pt` tall),
/// shrunk by `inset` dots on every side to stay clear of anti-aliased edges.
fn inside_pt((x, y, w, h): (f64, f64, f64, f64), page_height_pt: f64, inset: u32) -> DotRect {
    let top = page_height_pt - (y + h);
    DotRect {
        x0: (x * DOTS_PER_POINT).ceil() as u32 + inset,
        y0: (top * DOTS_PER_POINT).ceil() as u32 + inset,
        x1: ((x + w) * DOTS_PER_POINT).floor() as u32 - inset,
        y1: ((top + h) * DOTS_PER_POINT).floor() as u32 - inset,
    }
}

// ---------------------------------------------------------------------------------------------
// Format detection

#[test]
fn sniff_recognises_magic_bytes() {
    assert_eq!(
        InputFormat::sniff(b"GIF89a\x01\x00"),
        Some(InputFormat::Gif)
    );
    assert_eq!(InputFormat::sniff(b"GIF87a"), Some(InputFormat::Gif));
    assert_eq!(
        InputFormat::sniff(b"\x89PNG\r\n\x1a\n\0\0"),
        Some(InputFormat::Png)
    );
    assert_eq!(
        InputFormat::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]),
        Some(InputFormat::Jpeg)
    );
    assert_eq!(InputFormat::sniff(b"%PDF-1.7\n"), Some(InputFormat::Pdf));
    assert_eq!(
        InputFormat::sniff(b"\r\n\xEF\xBB\xBF%PDF-1.4"),
        Some(InputFormat::Pdf)
    );
    assert_eq!(InputFormat::sniff(b"PK\x03\x04"), None);
    assert_eq!(InputFormat::sniff(b""), None);
    for name in ["label-4x6.pdf", "indicia.gif", "label.png"] {
        assert!(InputFormat::sniff(&read_fixture(name)).is_some(), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Raster images

#[test]
fn gif_checker_renders_dot_for_dot_with_transparency_as_white() {
    let modules = 16;
    let gif = gif_frames(vec![checker_gif_image(modules)]);
    let page = render_one(&gif, InputFormat::Gif, &options(target_4x6()));
    let expected = expected_bitmap(64, 64, |x, y| matrix_module(x / 4, y / 4, modules));
    assert_eq!(page.bitmap, expected);
    assert!(!page.placement.is_rotated() && !page.placement.is_scaled());
}

#[test]
fn animated_gif_prints_its_first_frame_only() {
    let first = checker_gif_image(8);
    let second = RgbaImage::from_pixel(32, 32, Rgba([0, 0, 0, 255]));
    let gif = gif_frames(vec![first, second]);
    let page = render_one(&gif, InputFormat::Gif, &options(target_4x6()));
    assert_eq!(
        page.bitmap,
        expected_bitmap(32, 32, |x, y| matrix_module(x / 4, y / 4, 8))
    );
}

/// A GIF with an 8 x 4 screen and one all-black frame of `width` x `height` at (`left`, `top`),
/// written with the `gif` crate because `image` always makes the screen the frame's size.
fn gif_with_offset_frame(left: u16, top: u16, width: u16, height: u16) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder =
            gif::Encoder::new(&mut out, 8, 4, &[255, 255, 255, 0, 0, 0]).expect("GIF header");
        let frame = gif::Frame {
            left,
            top,
            width,
            height,
            buffer: vec![1u8; usize::from(width) * usize::from(height)].into(),
            ..gif::Frame::default()
        };
        encoder.write_frame(&frame).expect("GIF frame");
    }
    out
}

#[test]
fn gif_frame_smaller_than_its_screen_sits_on_white_and_is_clipped_to_it() {
    let page = render_one(
        &gif_with_offset_frame(2, 1, 4, 2),
        InputFormat::Gif,
        &options(target_4x6()),
    );
    assert_eq!(
        page.bitmap,
        expected_bitmap(8, 4, |x, y| (2..6).contains(&x) && (1..3).contains(&y))
    );
    // A frame reaching past the right and bottom edges of the screen is cut off there.
    let page = render_one(
        &gif_with_offset_frame(6, 2, 4, 4),
        InputFormat::Gif,
        &options(target_4x6()),
    );
    assert_eq!(page.bitmap, expected_bitmap(8, 4, |x, y| x >= 6 && y >= 2));
}

#[test]
fn png_alpha_composites_over_white() {
    // Columns: opaque black, fully transparent black, half transparent black, 40 % opaque
    // black, opaque white.
    let alphas = [255u8, 0, 128, 100, 255];
    let image = RgbaImage::from_fn(5, 1, |x, _| {
        let grey = if x == 4 { 255 } else { 0 };
        Rgba([grey, grey, grey, alphas[x as usize]])
    });
    let png = encode(&DynamicImage::ImageRgba8(image), ImageFormat::Png);
    let page = render_one(&png, InputFormat::Png, &options(target_4x6()));
    // Half transparent black is grey 127 (black at level 128); 40 % is grey 153 (white).
    assert_eq!(page.bitmap.row(0), &[0b1010_0000]);
}

#[test]
fn jpeg_renders_black_and_white_halves() {
    let image = GrayImage::from_fn(64, 32, |x, _| Luma([if x < 32 { 0 } else { 255 }]));
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&DynamicImage::ImageLuma8(image))
        .expect("encoding a JPEG in memory");
    let page = render_one(&jpeg, InputFormat::Jpeg, &options(target_4x6()));
    assert_eq!((page.bitmap.width, page.bitmap.height), (64, 32));
    // Compression ringing is confined to the 8x8 blocks that touch the edge at x = 32.
    let left = DotRect {
        x0: 0,
        y0: 0,
        x1: 24,
        y1: 32,
    };
    let right = DotRect {
        x0: 40,
        y0: 0,
        x1: 64,
        y1: 32,
    };
    assert_eq!(black_in(&page.bitmap, left), area(left));
    assert_eq!(black_in(&page.bitmap, right), 0);
}

/// A 60 x 40 image with a single black dot at (`x`, `y`).
fn marker_png(x: u32, y: u32) -> Vec<u8> {
    let image = GrayImage::from_fn(60, 40, |px, py| {
        Luma([if (px, py) == (x, y) { 0 } else { 255 }])
    });
    encode(&DynamicImage::ImageLuma8(image), ImageFormat::Png)
}

#[test]
fn wide_image_is_turned_clockwise_when_that_fits() {
    let narrow = RenderTarget {
        dpi: 203,
        width_dots: 40,
        max_length_dots: None,
    };
    let page = render_one(&marker_png(0, 0), InputFormat::Png, &options(narrow));
    assert_eq!((page.bitmap.width, page.bitmap.height), (40, 60));
    // A clockwise turn takes the top-left corner to the top-right.
    assert!(page.bitmap.get(39, 0));
    assert_eq!(page.bitmap.black_dots(), 1);
    assert_eq!(page.placement.quarter_turns, 1);
    assert!(!page.placement.is_scaled());
    assert!(page.placement.to_string().contains("turned 90 degrees"));
}

#[test]
fn explicit_rotations_are_applied_as_asked() {
    let wide = options(target_4x6());
    let cases = [
        (Rotation::None, (60, 40), (5, 3)),
        (Rotation::Deg90, (40, 60), (40 - 1 - 3, 5)),
        (Rotation::Deg180, (60, 40), (60 - 1 - 5, 40 - 1 - 3)),
        (Rotation::Deg270, (40, 60), (3, 60 - 1 - 5)),
    ];
    for (rotation, size, dot) in cases {
        let page = render_one(
            &marker_png(5, 3),
            InputFormat::Png,
            &RenderOptions { rotation, ..wide },
        );
        assert_eq!(
            (page.bitmap.width, page.bitmap.height),
            size,
            "{rotation:?}"
        );
        assert!(page.bitmap.get(dot.0, dot.1), "{rotation:?}");
        assert_eq!(page.bitmap.black_dots(), 1, "{rotation:?}");
    }
}

#[test]
fn too_wide_barcode_shrinks_by_a_whole_divisor_keeping_modules_even() {
    // 6-dot modules alternating black and white, 120 dots wide, on a 50-dot printer that may
    // not turn it: a threshold shrinks by the whole divisor 3 (to 40 dots), so every module
    // becomes exactly 2 dots instead of a mix of 2 and 3.
    let image = GrayImage::from_fn(120, 10, |x, _| {
        Luma([if (x / 6) % 2 == 0 { 0 } else { 255 }])
    });
    let png = encode(&DynamicImage::ImageLuma8(image), ImageFormat::Png);
    let narrow = RenderOptions {
        rotation: Rotation::None,
        ..options(RenderTarget {
            dpi: 203,
            width_dots: 50,
            max_length_dots: None,
        })
    };
    let page = render_one(&png, InputFormat::Png, &narrow);
    assert_eq!((page.bitmap.width, page.bitmap.height), (40, 4));
    assert!(page.placement.is_scaled());
    assert!(page.placement.to_string().contains("scaled down to 40x4"));
    let expected = expected_bitmap(40, 4, |x, _| (x / 2) % 2 == 0);
    assert_eq!(page.bitmap, expected);

    // A photograph is dithered and shrunk by the exact factor that fills the width.
    let dithered = render_one(
        &png,
        InputFormat::Png,
        &RenderOptions {
            halftone: Halftone::Dither,
            ..narrow
        },
    );
    assert_eq!((dithered.bitmap.width, dithered.bitmap.height), (50, 4));
}

#[test]
fn die_cut_length_limits_tall_images_too() {
    let image = GrayImage::from_pixel(100, 300, Luma([0]));
    let png = encode(&DynamicImage::ImageLuma8(image), ImageFormat::Png);
    let short_label = options(RenderTarget {
        dpi: 203,
        width_dots: 200,
        max_length_dots: Some(150),
    });
    let page = render_one(&png, InputFormat::Png, &short_label);
    // Upright the label length allows 1/2; turned (300 x 100) the width allows 2/3, so the
    // image turns, then shrinks by the whole divisor 2.
    assert_eq!((page.bitmap.width, page.bitmap.height), (150, 50));
    assert_eq!(page.placement.quarter_turns, 1);
    assert!(page.placement.is_scaled());
}

// ---------------------------------------------------------------------------------------------
// Decompression bombs, limits and broken files

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    chunk.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    chunk
}

/// A 60-byte PNG whose header claims 100000 x 100000 8-bit grey pixels (10 GB decoded).
fn png_bomb() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = 100_000u32.to_be_bytes().to_vec();
    header.extend_from_slice(&100_000u32.to_be_bytes());
    header.extend_from_slice(&[8, 0, 0, 0, 0]);
    png.extend(png_chunk(b"IHDR", &header));
    // An empty zlib stream: the decoder would only notice missing rows after allocating.
    png.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

/// A GIF whose screen and only frame claim 65535 x 65535 pixels, the most a GIF header can
/// express (16 GB as RGBA).
fn gif_bomb() -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x00, 0x00]);
    gif.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x00]);
    gif.extend_from_slice(&[0x02, 0x02, 0x44, 0x01, 0x00, 0x3B]);
    gif
}

#[test]
fn image_bombs_are_refused_from_their_headers() {
    let png = png_bomb();
    assert!(png.len() < 100);
    match render(&png, InputFormat::Png, &options(target_4x6())) {
        Err(RenderError::TooManyPixels {
            format: InputFormat::Png,
            width: 100_000,
            height: 100_000,
            ..
        }) => {}
        other => panic!("expected the PNG bomb to be refused, got {other:?}"),
    }
    match render(&gif_bomb(), InputFormat::Gif, &options(target_4x6())) {
        Err(RenderError::TooManyPixels {
            format: InputFormat::Gif,
            width: 65_535,
            height: 65_535,
            ..
        }) => {}
        other => panic!("expected the GIF bomb to be refused, got {other:?}"),
    }
}

#[test]
fn pdf_pages_too_long_to_rasterize_are_refused_before_rendering() {
    // 4 in wide and 2000 in long: 812 x 406000 dots on continuous media.
    let pdf = write_pdf(
        &[PdfPage {
            width_pt: 288.0,
            height_pt: 144_000.0,
            content: "0 0 10 10 re f".to_owned(),
        }],
        None,
    );
    let continuous = RenderTarget {
        max_length_dots: None,
        ..target_4x6()
    };
    match render(&pdf, InputFormat::Pdf, &options(continuous)) {
        Err(RenderError::TooManyPixels {
            what,
            width: 812,
            height: 406_000,
            ..
        }) => {
            assert_eq!(what, "page 1");
        }
        other => panic!("expected the long page to be refused, got {other:?}"),
    }
}

#[test]
fn pdf_with_an_enormous_embedded_image_is_refused() {
    let pdf = write_pdf(
        &[PdfPage {
            width_pt: 288.0,
            height_pt: 432.0,
            content: "q 288 0 0 432 0 0 cm /Im1 Do Q".to_owned(),
        }],
        Some(&DeclaredImage {
            width: 100_000,
            height: 100_000,
            data: vec![0; 16],
        }),
    );
    match render(&pdf, InputFormat::Pdf, &options(target_4x6())) {
        Err(RenderError::TooManyPixels { what, .. }) => assert_eq!(what, "embedded image"),
        other => panic!("expected the embedded image to be refused, got {other:?}"),
    }
}

#[test]
fn pdf_flate_bomb_is_measured_and_refused_without_being_held() {
    // 16 MB of spaces deflate to about 16 kB; with room for 1 million pixels the streams may
    // inflate to 8 MB.
    let mut content = " ".repeat(16 * 1024 * 1024);
    content.push_str("0 0 10 10 re f");
    let bomb = write_compressed_pdf(
        &[PdfPage {
            width_pt: 288.0,
            height_pt: 432.0,
            content,
        }],
        None,
    );
    assert!(bomb.len() < 100_000, "bomb is {} bytes", bomb.len());
    let mut small = options(target_4x6());
    small.limits.max_pixels = 1_000_000;
    match render(&bomb, InputFormat::Pdf, &small) {
        Err(RenderError::InflatesTooFar {
            limit: 8_000_000, ..
        }) => {}
        other => panic!("expected the Flate bomb to be refused, got {other:?}"),
    }
}

#[test]
fn compressed_pdf_content_renders_like_plain_content() {
    let page = |content: &str| PdfPage {
        width_pt: 288.0,
        height_pt: 432.0,
        content: content.to_owned(),
    };
    let content = format!(
        "{}BT /F1 12 Tf 18 200 Td (COMPRESSED) Tj ET",
        "18 342 108 72 re f "
    );
    let plain = render(
        &write_pdf(&[page(&content)], None),
        InputFormat::Pdf,
        &options(target_4x6()),
    )
    .expect("rendering plain content");
    let compressed = render(
        &write_compressed_pdf(&[page(&content)], None),
        InputFormat::Pdf,
        &options(target_4x6()),
    )
    .expect("rendering compressed content");
    assert_eq!(plain, compressed);
    let filled = inside_pt(PDF_BOX_PT, 432.0, 1);
    assert_eq!(black_in(&compressed[0].bitmap, filled), area(filled));
}

#[test]
fn input_and_page_limits_are_enforced() {
    let pdf = read_fixture("two-page.pdf");
    let mut limited = options(target_4x6());
    limited.limits.max_input_bytes = 100;
    assert!(matches!(
        render(&pdf, InputFormat::Pdf, &limited),
        Err(RenderError::InputTooLarge { limit: 100, .. })
    ));
    let mut limited = options(target_4x6());
    limited.limits.max_pages = 1;
    assert!(matches!(
        render(&pdf, InputFormat::Pdf, &limited),
        Err(RenderError::TooManyPages { pages: 2, limit: 1 })
    ));
}

#[test]
fn invalid_targets_are_refused() {
    let png = marker_png(0, 0);
    for target in [
        RenderTarget {
            dpi: 0,
            ..target_4x6()
        },
        RenderTarget {
            width_dots: 0,
            ..target_4x6()
        },
        RenderTarget {
            max_length_dots: Some(0),
            ..target_4x6()
        },
    ] {
        assert!(matches!(
            render(&png, InputFormat::Png, &options(target)),
            Err(RenderError::InvalidTarget { .. })
        ));
    }
}

fn assert_decode_error(input: &[u8], format: InputFormat) -> String {
    match render(input, format, &options(target_4x6())) {
        Err(RenderError::Decode {
            format: got,
            reason,
        }) => {
            assert_eq!(got, format);
            assert!(!reason.is_empty());
            reason
        }
        other => panic!("expected a {format} decode error, got {other:?}"),
    }
}

#[test]
fn truncated_and_broken_files_give_decode_errors() {
    let gif = read_fixture("indicia.gif");
    let png = read_fixture("label.png");
    let image = GrayImage::from_fn(64, 64, |x, y| Luma([((x * 4) ^ (y * 4)) as u8]));
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&DynamicImage::ImageLuma8(image))
        .expect("encoding a JPEG in memory");
    let pdf = read_fixture("label-4x6.pdf");

    for (input, format) in [
        (&gif, InputFormat::Gif),
        (&png, InputFormat::Png),
        (&jpeg, InputFormat::Jpeg),
    ] {
        for cut in [input.len() / 2, input.len() - 20, 10, 0] {
            assert_decode_error(&input[..cut], format);
        }
    }
    assert!(assert_decode_error(&jpeg[..jpeg.len() - 2], InputFormat::Jpeg).contains("truncated"));
    assert_decode_error(&pdf[..40], InputFormat::Pdf);
    assert_decode_error(
        b"%PDF-1.4\nthis is not a PDF document\n%%EOF\n",
        InputFormat::Pdf,
    );
    // Data in the wrong format for its label fails the same way, never with a panic.
    assert_decode_error(&pdf, InputFormat::Png);
    assert_decode_error(&png, InputFormat::Jpeg);
    assert_decode_error(&gif, InputFormat::Pdf);
}

// ---------------------------------------------------------------------------------------------
// Committed fixtures: raster

#[test]
fn indicia_gif_fixture_prints_its_symbol_and_bars_exactly() {
    let page = render_one(
        &read_fixture("indicia.gif"),
        InputFormat::Gif,
        &options(target_4x6()),
    );
    let bitmap = &page.bitmap;
    assert_eq!((bitmap.width, bitmap.height), (600, 400));
    let expected = indicia_image();
    for y in 0..400 {
        for x in 0..600 {
            let black = expected.get_pixel(x, y).0[3] == 255;
            assert_eq!(bitmap.get(x, y), black, "dot ({x}, {y})");
        }
    }
    // The L finder: the left column of modules is solid.
    let (left, top, module, size) = INDICIA_SYMBOL;
    let finder = DotRect {
        x0: left,
        y0: top,
        x1: left + module,
        y1: top + size * module,
    };
    assert_eq!(black_in(bitmap, finder), area(finder));
}

#[test]
fn label_png_and_gif_fixtures_print_at_native_size() {
    for name in ["label.png", "label.gif"] {
        let format = InputFormat::sniff(&read_fixture(name)).expect("fixture format");
        let page = render_one(&read_fixture(name), format, &options(target_4x6()));
        let bitmap = &page.bitmap;
        assert_eq!(
            (bitmap.width, bitmap.height),
            (LABEL_WIDTH, LABEL_HEIGHT),
            "{name}"
        );
        assert_eq!(black_in(bitmap, RASTER_BOX), area(RASTER_BOX), "{name}");
        let margin = DotRect {
            x0: 0,
            y0: 0,
            x1: 16,
            y1: LABEL_HEIGHT,
        };
        assert_eq!(black_in(bitmap, margin), 0, "{name}");
        let (top, bottom) = RASTER_BARS_ROWS;
        for (x0, x1) in raster_bars() {
            let bar = DotRect {
                x0,
                y0: top,
                x1,
                y1: bottom,
            };
            assert_eq!(black_in(bitmap, bar), area(bar), "{name} bar at {x0}");
            assert!(
                !bitmap.get(x0 - 1, top) && !bitmap.get(x1, top),
                "{name} bar at {x0}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Committed fixtures: PDF

#[test]
fn pdf_label_renders_at_203_dpi_with_boxes_margins_text_and_bars() {
    let page = render_one(
        &read_fixture("label-4x6.pdf"),
        InputFormat::Pdf,
        &options(target_4x6()),
    );
    let bitmap = &page.bitmap;
    assert_eq!((bitmap.width, bitmap.height), (LABEL_WIDTH, LABEL_HEIGHT));
    assert_eq!(
        (page.placement.source_width, page.placement.source_height),
        (LABEL_WIDTH, LABEL_HEIGHT)
    );
    assert!(!page.placement.is_rotated() && !page.placement.is_scaled());

    let filled = inside_pt(PDF_BOX_PT, 432.0, 1);
    assert_eq!(black_in(bitmap, filled), area(filled));
    // 60 % grey is lighter than the threshold: white.
    let grey = inside_pt(PDF_GREY_BOX_PT, 432.0, 1);
    assert_eq!(black_in(bitmap, grey), 0);
    // Outside the 2 pt border (8..10 pt) the margin is white, and so is the gap between the
    // border and the filled box.
    let margin = DotRect {
        x0: 0,
        y0: 0,
        x1: 20,
        y1: LABEL_HEIGHT,
    };
    assert_eq!(black_in(bitmap, margin), 0);
    let gap = DotRect {
        x0: 31,
        y0: 60,
        x1: 48,
        y1: 240,
    };
    assert_eq!(black_in(bitmap, gap), 0);
    // The border itself is black at 9 pt from the left edge (25.4 dots).
    assert!(bitmap.get(25, 600));
    // The address text is drawn: its area holds a fair number of black dots.
    let text = DotRect {
        x0: 370,
        y0: 60,
        x1: 780,
        y1: 200,
    };
    assert!(black_in(bitmap, text) > 1000, "text area is nearly empty");

    // Bars drawn on whole dots: every bar edge is within one dot of where it was drawn.
    let (top, bottom) = PDF_BARS_ROWS;
    let row = (top + bottom) / 2;
    for (x0, x1) in pdf_bars() {
        assert!(
            bitmap.get(x0 + 1, row) && bitmap.get(x1 - 2, row),
            "bar {x0}..{x1}"
        );
        assert!(
            !bitmap.get(x0 - 2, row) && !bitmap.get(x1 + 1, row),
            "bar {x0}..{x1}"
        );
        let bar = DotRect {
            x0: x0 + 1,
            y0: top + 1,
            x1: x1 - 1,
            y1: bottom - 1,
        };
        assert_eq!(black_in(bitmap, bar), area(bar), "bar {x0}..{x1}");
    }
}

#[test]
fn pdf_grey_is_dithered_when_asked() {
    let dither = RenderOptions {
        halftone: Halftone::Dither,
        ..options(target_4x6())
    };
    let page = render_one(&read_fixture("label-4x6.pdf"), InputFormat::Pdf, &dither);
    let grey = inside_pt(PDF_GREY_BOX_PT, 432.0, 2);
    let share = black_in(&page.bitmap, grey) as f64 / area(grey) as f64;
    assert!(
        (0.3..0.5).contains(&share),
        "black share of 60 % grey: {share}"
    );
    let filled = inside_pt(PDF_BOX_PT, 432.0, 1);
    assert_eq!(black_in(&page.bitmap, filled), area(filled));
}

#[test]
fn two_page_pdf_gives_two_bitmaps_in_order() {
    let pages = render(
        &read_fixture("two-page.pdf"),
        InputFormat::Pdf,
        &options(target_4x6()),
    )
    .expect("rendering two pages");
    assert_eq!(pages.len(), 2);
    let first_box = inside_pt(PDF_BOX_PT, 432.0, 1);
    let second_box = inside_pt(PDF_PAGE2_BOX_PT, 432.0, 1);
    assert_eq!(black_in(&pages[0].bitmap, first_box), area(first_box));
    assert_eq!(black_in(&pages[0].bitmap, second_box), 0);
    assert_eq!(black_in(&pages[1].bitmap, second_box), area(second_box));
    assert_eq!(black_in(&pages[1].bitmap, first_box), 0);
}

#[test]
fn landscape_pdf_is_turned_onto_a_portrait_label() {
    let page = render_one(
        &read_fixture("landscape.pdf"),
        InputFormat::Pdf,
        &options(target_4x6()),
    );
    assert_eq!(
        (page.bitmap.width, page.bitmap.height),
        (LABEL_WIDTH, LABEL_HEIGHT)
    );
    assert_eq!(
        (page.placement.source_width, page.placement.source_height),
        (LABEL_HEIGHT, LABEL_WIDTH)
    );
    assert_eq!(page.placement.quarter_turns, 1);
    assert!(!page.placement.is_scaled());
    // On the landscape page the box spans x 18..126 pt and y 18..90 pt from the top. A
    // clockwise turn maps (x, y) to (812 - y, x).
    let turned = DotRect {
        x0: LABEL_WIDTH - (90.0 * DOTS_PER_POINT).floor() as u32 + 1,
        y0: (18.0 * DOTS_PER_POINT).ceil() as u32 + 1,
        x1: LABEL_WIDTH - (18.0 * DOTS_PER_POINT).ceil() as u32 - 1,
        y1: (126.0 * DOTS_PER_POINT).floor() as u32 - 1,
    };
    assert_eq!(black_in(&page.bitmap, turned), area(turned));
    // Where the box would be without the turn is white.
    let unturned = inside_pt(PDF_LANDSCAPE_BOX_PT, 288.0, 1);
    assert_eq!(black_in(&page.bitmap, unturned), 0);
}

#[test]
fn letter_page_is_shrunk_onto_a_4x6_label() {
    let pdf = write_pdf(
        &[PdfPage {
            width_pt: 612.0,
            height_pt: 792.0,
            content: "0 0 612 792 re f".to_owned(),
        }],
        None,
    );
    let page = render_one(&pdf, InputFormat::Pdf, &options(target_4x6()));
    // 8.5 x 11 in fits 4 x 6 in at 4/8.5 upright (6/11 would overflow the width), giving
    // 812 x 1051 dots, and the whole page is black.
    assert_eq!((page.bitmap.width, page.bitmap.height), (812, 1051));
    assert!(page.placement.is_scaled() && !page.placement.is_rotated());
    assert_eq!(page.bitmap.black_dots(), 812 * 1051);
}

#[test]
fn pdf_with_an_embedded_label_image_prints_it_dot_for_dot() {
    // Many carriers deliver a label as a raster image inside a PDF. At 203 dpi each image
    // pixel covers exactly one dot, and must print as exactly that dot.
    let page = render_one(
        &read_fixture("label-image.pdf"),
        InputFormat::Pdf,
        &options(target_4x6()),
    );
    let expected = raster_label();
    assert_eq!(
        (page.bitmap.width, page.bitmap.height),
        expected.dimensions()
    );
    let mut wrong = 0;
    for (x, y, pixel) in expected.enumerate_pixels() {
        wrong += u32::from(page.bitmap.get(x, y) != (pixel.0[0] < 128));
    }
    assert_eq!(wrong, 0, "{wrong} dots differ from the embedded image");
}

#[test]
fn pdf_renders_at_other_resolutions() {
    let at_300 = RenderTarget {
        dpi: 300,
        width_dots: 1200,
        max_length_dots: Some(1800),
    };
    let page = render_one(
        &read_fixture("label-4x6.pdf"),
        InputFormat::Pdf,
        &options(at_300),
    );
    assert_eq!((page.bitmap.width, page.bitmap.height), (1200, 1800));
}
