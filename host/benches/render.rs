//! Rendering benchmark: a 4x6 in label at 203 dpi from the committed GIF, PNG and PDF fixtures
//! (vector content, and a raster label embedded in a PDF) to a 1-bit bitmap, plus the
//! 600 x 400 indicium GIF.
//!
//! Run with `cargo bench -p devicehub --bench render`. Figures are recorded in
//! `docs/performance.md` under "Rendering".

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use devicehub::render::{render, Halftone, InputFormat, RenderOptions, RenderTarget};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/labels")
        .join(name);
    std::fs::read(&path)
        .unwrap_or_else(|error| panic!("cannot read fixture {}: {error}", path.display()))
}

fn four_by_six() -> RenderOptions {
    RenderOptions::for_target(RenderTarget {
        dpi: 203,
        width_dots: 812,
        max_length_dots: Some(1218),
    })
}

fn bench_render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render_4x6_203dpi");
    let threshold = four_by_six();
    let dither = RenderOptions {
        halftone: Halftone::Dither,
        ..four_by_six()
    };
    let cases = [
        ("gif_label", "label.gif", InputFormat::Gif, threshold),
        (
            "gif_indicia_600x400",
            "indicia.gif",
            InputFormat::Gif,
            threshold,
        ),
        ("png_label", "label.png", InputFormat::Png, threshold),
        (
            "pdf_label_threshold",
            "label-4x6.pdf",
            InputFormat::Pdf,
            threshold,
        ),
        (
            "pdf_label_dither",
            "label-4x6.pdf",
            InputFormat::Pdf,
            dither,
        ),
        (
            "pdf_embedded_image",
            "label-image.pdf",
            InputFormat::Pdf,
            threshold,
        ),
    ];
    for (name, file, format, options) in cases {
        let input = fixture(file);
        // Render once outside the timing so that a broken fixture fails loudly, not as a
        // suspiciously fast figure.
        if let Err(error) = render(&input, format, &options) {
            panic!("{file} does not render: {error}");
        }
        group.bench_function(name, |b| {
            b.iter(|| render(black_box(&input), format, black_box(&options)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
