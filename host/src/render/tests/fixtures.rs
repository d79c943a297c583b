//! The committed label fixtures under `tests/fixtures/labels/`: how each one is drawn, the
//! geometry the tests check against, and a test that the committed files still match.
//!
//! To rewrite the files after changing a drawing, run
//! `DEVICEHUB_REGENERATE_FIXTURES=1 cargo test -p devicehub render::tests::fixtures`.

use std::io::{Cursor, Write as _};
use std::path::{Path, PathBuf};

use image::codecs::gif::GifEncoder;
use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgba, RgbaImage};

use super::pdf_writer::{write_compressed_pdf, write_pdf, DeclaredImage, PdfPage};
use crate::render::{render, InputFormat, RenderOptions, RenderTarget};

/// `tests/fixtures/labels/` at the root of the repository.
pub(crate) fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/labels")
}

/// Reads a committed fixture, naming the command that recreates it when it is missing.
pub(crate) fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read fixture {}: {error}; recreate it with \
             DEVICEHUB_REGENERATE_FIXTURES=1 cargo test -p devicehub render::tests::fixtures",
            path.display()
        )
    })
}

/// A 4x6 in label at 203 dpi in dots.
pub(crate) const LABEL_WIDTH: u32 = 812;
pub(crate) const LABEL_HEIGHT: u32 = 1218;

/// Dots per PDF point at 203 dpi.
pub(crate) const DOTS_PER_POINT: f64 = 203.0 / 72.0;

/// A rectangle in dots, `x0..x1` by `y0..y1`, top-down.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DotRect {
    pub(crate) x0: u32,
    pub(crate) y0: u32,
    pub(crate) x1: u32,
    pub(crate) y1: u32,
}

/// Whether the Data-Matrix-like symbol of `size` x `size` modules has a black module at
/// (`column`, `row`): a solid L finder on the left and bottom, alternating timing modules on
/// the top and right, and a fixed pseudo-random data area.
pub(crate) fn matrix_module(column: u32, row: u32, size: u32) -> bool {
    if column == 0 || row == size - 1 {
        true
    } else if row == 0 {
        column.is_multiple_of(2)
    } else if column == size - 1 {
        row % 2 == 1
    } else {
        (column * 73 + row * 151 + column * row * 29) % 7 < 3
    }
}

/// Where the indicium's symbol sits: top-left corner in dots, module size and module count.
pub(crate) const INDICIA_SYMBOL: (u32, u32, u32, u32) = (30, 30, 6, 24);
/// The indicium's "text line" bars.
pub(crate) fn indicia_text_bars() -> Vec<DotRect> {
    (0..5)
        .map(|i| DotRect {
            x0: 220,
            y0: 40 + i * 40,
            x1: 560,
            y1: 54 + i * 40,
        })
        .collect()
}
/// The indicium's vertical bars: widths 2, 4, 6, ... dots with equal gaps.
pub(crate) fn indicia_vertical_bars() -> Vec<DotRect> {
    let mut x = 30;
    (1..=12)
        .map(|i| {
            let bar = DotRect {
                x0: x,
                y0: 250,
                x1: x + 2 * i,
                y1: 370,
            };
            x += 4 * i;
            bar
        })
        .collect()
}

/// `indicia.gif`: 600 x 400, transparent background (transparent black, which must print as
/// white), a 24 x 24 module symbol of 6-dot modules, text-line bars and vertical bars.
pub(crate) fn indicia_image() -> RgbaImage {
    let mut image = RgbaImage::from_pixel(600, 400, Rgba([0, 0, 0, 0]));
    let black = Rgba([0, 0, 0, 255]);
    let (left, top, module, size) = INDICIA_SYMBOL;
    for row in 0..size {
        for column in 0..size {
            if matrix_module(column, row, size) {
                fill(
                    &mut image,
                    rect_at(left + column * module, top + row * module, module, module),
                    black,
                );
            }
        }
    }
    for bar in indicia_text_bars()
        .into_iter()
        .chain(indicia_vertical_bars())
    {
        fill(&mut image, bar, black);
    }
    image
}

fn rect_at(x: u32, y: u32, width: u32, height: u32) -> DotRect {
    DotRect {
        x0: x,
        y0: y,
        x1: x + width,
        y1: y + height,
    }
}

fn fill<P: image::Pixel>(
    image: &mut image::ImageBuffer<P, Vec<P::Subpixel>>,
    rect: DotRect,
    pixel: P,
) {
    for y in rect.y0..rect.y1 {
        for x in rect.x0..rect.x1 {
            image.put_pixel(x, y, pixel);
        }
    }
}

/// The raster label's filled box.
pub(crate) const RASTER_BOX: DotRect = DotRect {
    x0: 40,
    y0: 40,
    x1: 240,
    y1: 240,
};
/// The raster label's border: 4 dots wide, outer edge 16 dots from the label edge.
pub(crate) const RASTER_BORDER_OUTER: DotRect = DotRect {
    x0: 16,
    y0: 16,
    x1: 796,
    y1: 1202,
};

/// Barcode-like bars as (start, end) columns: 3-dot modules, bars and spaces of 1 to 4
/// modules, starting at `start`.
pub(crate) fn bars_from(start: u32, count: u32) -> Vec<(u32, u32)> {
    let mut x = start;
    (0..count)
        .map(|i| {
            let bar = 3 * (1 + (i * 5 + 1) % 4);
            let space = 3 * (1 + (i * 3 + 2) % 4);
            let edges = (x, x + bar);
            x += bar + space;
            edges
        })
        .collect()
}

/// The raster label's barcode rows.
pub(crate) const RASTER_BARS_ROWS: (u32, u32) = (700, 900);
pub(crate) fn raster_bars() -> Vec<(u32, u32)> {
    bars_from(100, 30)
}

/// `label.png` and `label.gif`: a 4x6 in label at 203 dpi with a border, a filled box, text
/// lines, barcode-like bars and a matrix symbol.
pub(crate) fn raster_label() -> GrayImage {
    let mut image = GrayImage::from_pixel(LABEL_WIDTH, LABEL_HEIGHT, Luma([255]));
    let black = Luma([0]);
    let outer = RASTER_BORDER_OUTER;
    for edge in [
        DotRect {
            y1: outer.y0 + 4,
            ..outer
        },
        DotRect {
            y0: outer.y1 - 4,
            ..outer
        },
        DotRect {
            x1: outer.x0 + 4,
            ..outer
        },
        DotRect {
            x0: outer.x1 - 4,
            ..outer
        },
    ] {
        fill(&mut image, edge, black);
    }
    fill(&mut image, RASTER_BOX, black);
    for i in 0..5 {
        fill(&mut image, rect_at(280, 60 + i * 36, 480, 16), black);
    }
    let (top, bottom) = RASTER_BARS_ROWS;
    for (x0, x1) in raster_bars() {
        fill(
            &mut image,
            DotRect {
                x0,
                y0: top,
                x1,
                y1: bottom,
            },
            black,
        );
    }
    for row in 0..24 {
        for column in 0..24 {
            if matrix_module(column, row, 24) {
                fill(
                    &mut image,
                    rect_at(560 + column * 8, 960 + row * 8, 8, 8),
                    black,
                );
            }
        }
    }
    image
}

/// The PDF label's filled box in points (PDF coordinates, y up): x, y, width, height.
pub(crate) const PDF_BOX_PT: (f64, f64, f64, f64) = (18.0, 342.0, 108.0, 72.0);
/// The PDF label's 60 % grey box in points, which a threshold prints white and a dither
/// prints about 40 % black.
pub(crate) const PDF_GREY_BOX_PT: (f64, f64, f64, f64) = (18.0, 200.0, 108.0, 72.0);
/// The PDF label's bars are drawn in dot units (a `cm` of 72/203), as label services that
/// target 203 dpi printers do, so their edges fall on whole dots.
pub(crate) const PDF_BARS_ROWS: (u32, u32) = (700, 900);
pub(crate) fn pdf_bars() -> Vec<(u32, u32)> {
    bars_from(120, 36)
}

fn box_pt((x, y, w, h): (f64, f64, f64, f64)) -> String {
    format!("{x} {y} {w} {h} re f\n")
}

/// The content of the 4x6 label page.
fn label_content() -> String {
    let mut content = String::new();
    content.push_str("2 w 9 9 270 414 re S\n");
    content.push_str(&format!("0 g {}", box_pt(PDF_BOX_PT)));
    content.push_str(&format!("0.6 g {}0 g\n", box_pt(PDF_GREY_BOX_PT)));
    content.push_str(
        "BT /F1 11 Tf 135 400 Td (SHIP TO:) Tj 0 -15 Td (DEVICEHUB TEST DESK) Tj \
         0 -15 Td (1 LABEL STREET) Tj 0 -15 Td (SPRINGFIELD 12345) Tj ET\n",
    );
    content.push_str("1 w 18 290 m 270 290 l S\n");
    content.push_str("q 0.354679802955665 0 0 0.354679802955665 0 0 cm\n");
    let (top, bottom) = PDF_BARS_ROWS;
    for (x0, x1) in pdf_bars() {
        content.push_str(&format!(
            "{x0} {} {} {} re f\n",
            LABEL_HEIGHT - bottom,
            x1 - x0,
            bottom - top
        ));
    }
    content.push_str("Q\n");
    content
}

/// `label-4x6.pdf`: one 4x6 in page with a border, text, a rule, a black and a grey box and
/// barcode-like bars.
pub(crate) fn label_pdf() -> Vec<u8> {
    write_pdf(
        &[PdfPage {
            width_pt: 288.0,
            height_pt: 432.0,
            content: label_content(),
        }],
        None,
    )
}

/// The second page's box in points: bottom right, so page order is visible.
pub(crate) const PDF_PAGE2_BOX_PT: (f64, f64, f64, f64) = (162.0, 18.0, 108.0, 72.0);

/// `two-page.pdf`: the label page, then a page with only a box at the bottom right and text.
pub(crate) fn two_page_pdf() -> Vec<u8> {
    write_pdf(
        &[
            PdfPage {
                width_pt: 288.0,
                height_pt: 432.0,
                content: label_content(),
            },
            PdfPage {
                width_pt: 288.0,
                height_pt: 432.0,
                content: format!(
                    "{}BT /F1 12 Tf 18 200 Td (PAGE 2) Tj ET\n",
                    box_pt(PDF_PAGE2_BOX_PT)
                ),
            },
        ],
        None,
    )
}

/// The landscape page's box in points: top left of the 6x4 in page.
pub(crate) const PDF_LANDSCAPE_BOX_PT: (f64, f64, f64, f64) = (18.0, 198.0, 108.0, 72.0);

/// `landscape.pdf`: a 6x4 in page (wider than a 4 in printer) with a box at its top left.
pub(crate) fn landscape_pdf() -> Vec<u8> {
    write_pdf(
        &[PdfPage {
            width_pt: 432.0,
            height_pt: 288.0,
            content: format!(
                "{}BT /F1 12 Tf 144 250 Td (LANDSCAPE 6X4) Tj ET\n",
                box_pt(PDF_LANDSCAPE_BOX_PT)
            ),
        }],
        None,
    )
}

/// `label-image.pdf`: the raster label (`label.png`) as a Flate-compressed grey image filling
/// a 4x6 in page, the way many carriers deliver labels.
pub(crate) fn label_image_pdf() -> Vec<u8> {
    let label = raster_label();
    write_compressed_pdf(
        &[PdfPage {
            width_pt: 288.0,
            height_pt: 432.0,
            content: "q 288 0 0 432 0 0 cm /Im1 Do Q".to_owned(),
        }],
        Some(&DeclaredImage {
            width: u64::from(label.width()),
            height: u64::from(label.height()),
            data: label.into_raw(),
        }),
    )
}

fn encode_png(image: &DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, ImageFormat::Png)
        .expect("encoding a PNG in memory");
    out.into_inner()
}

fn encode_gif(image: RgbaImage) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder
            .encode_frame(image::Frame::new(image))
            .expect("encoding a GIF in memory");
    }
    out
}

/// Every committed fixture and the bytes its generator produces now.
fn generated() -> Vec<(&'static str, Vec<u8>)> {
    let label = raster_label();
    vec![
        ("label-4x6.pdf", label_pdf()),
        ("two-page.pdf", two_page_pdf()),
        ("landscape.pdf", landscape_pdf()),
        ("label-image.pdf", label_image_pdf()),
        ("indicia.gif", encode_gif(indicia_image())),
        (
            "label.png",
            encode_png(&DynamicImage::ImageLuma8(label.clone())),
        ),
        (
            "label.gif",
            encode_gif(DynamicImage::ImageLuma8(label).to_rgba8()),
        ),
    ]
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, renamed.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let dir = path.parent().expect("fixture paths have a parent folder");
    std::fs::create_dir_all(dir).expect("creating the fixture folder");
    let mut file = tempfile::NamedTempFile::new_in(dir).expect("creating a temporary fixture file");
    file.write_all(bytes).expect("writing a fixture");
    // Temporary files are created owner-only; fixtures are ordinary, world-readable files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .expect("making a fixture readable");
    }
    file.as_file().sync_all().expect("syncing a fixture");
    file.persist(path).expect("renaming a fixture into place");
}

/// The committed fixtures are what the drawings above produce, compared by what they print:
/// PDFs rendered at 203 dpi, images decoded pixel for pixel. Comparing bytes would break
/// whenever a compressor or encoder changed its output without changing the picture.
#[test]
fn committed_fixtures_match_their_generators() {
    let regenerate = std::env::var_os("DEVICEHUB_REGENERATE_FIXTURES").is_some();
    for (name, bytes) in generated() {
        let path = fixture_dir().join(name);
        if regenerate {
            write_atomically(&path, &bytes);
            continue;
        }
        let committed = read_fixture(name);
        if name.ends_with(".pdf") {
            let options = RenderOptions::for_target(RenderTarget {
                dpi: 203,
                width_dots: LABEL_WIDTH,
                max_length_dots: None,
            });
            let print = |data: &[u8]| {
                render(data, InputFormat::Pdf, &options)
                    .unwrap_or_else(|error| panic!("rendering {name}: {error}"))
            };
            assert!(
                print(&committed) == print(&bytes),
                "{name} differs from its generator"
            );
        } else {
            let decode = |data: &[u8]| {
                image::load_from_memory(data)
                    .unwrap_or_else(|error| panic!("decoding {name}: {error}"))
                    .to_rgba8()
            };
            assert!(
                decode(&committed) == decode(&bytes),
                "{name} differs from its generator"
            );
        }
    }
}
