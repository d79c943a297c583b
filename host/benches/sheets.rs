//! Sheet printing benchmark: composing the 600 x 400 indicium GIF onto a #10 envelope PDF
//! (threshold, 1-bit image, PDF written by printpdf), and turning a sheet job into the
//! plugin-level print job.
//!
//! Run with `cargo bench -p devicehub --bench sheets`. Figures are recorded in
//! `docs/performance.md` under "Sheet printing".

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use devicehub::sheets::{
    compose::compose_image, ImagePlacement, Media, Orientation, SheetContent, SheetJob,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/labels")
        .join(name);
    std::fs::read(&path)
        .unwrap_or_else(|error| panic!("cannot read fixture {}: {error}", path.display()))
}

fn bench_sheets(c: &mut Criterion) {
    let gif = fixture("indicia.gif");
    let pdf = fixture("two-page.pdf");
    let envelope = Media::parse("na_number-10_4.125x9.5in").expect("a PWG media name");
    let placement = ImagePlacement {
        dpi: 300,
        x_mm: 180.0,
        y_mm: 8.0,
    };
    let mut group = c.benchmark_group("sheets");
    group.bench_function("compose_indicia_on_number10_envelope", |b| {
        b.iter(|| {
            compose_image(
                black_box(&gif),
                &envelope,
                Some(Orientation::Landscape),
                placement,
            )
            .expect("composed")
        })
    });
    group.bench_function("pdf_sheet_job_to_print_job", |b| {
        b.iter(|| {
            SheetJob {
                job_id: "bench".into(),
                content: SheetContent::Pdf(black_box(pdf.clone())),
                media: Some(envelope.clone()),
                orientation: None,
                copies: 1,
            }
            .into_print_job()
            .expect("a print job")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_sheets);
criterion_main!(benches);
