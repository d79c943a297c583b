//! Render + encode benchmark: a 4x6 in label at 203 dpi, from GIF and from PDF, through the
//! host's print pipeline (rendering at the printer's resolution) and the Zebra plugin's ZPL
//! encoder (Auto compression: the smaller of Z64 and ACS), as one print job costs.
//!
//! Run with `cargo bench -p devicehub --bench print_pipeline`. Figures are recorded in
//! `docs/performance.md` under "Render and encode".

use std::{hint::black_box, path::Path};

use criterion::{criterion_group, criterion_main, Criterion};
use devicehub::print::{prepare_job, PrintOptions};
use devicehub_driver_zebra::{
    bitmap::Bitmap,
    epl::{encode_epl2, EplOptions},
    zpl::{encode_zpl, ZplCompression, ZplOptions},
};
use devicehub_plugin_api::{PrintInput, PrinterProfile};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/labels")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The Zebra plugin's "zpl-203" profile, as its manifest declares it.
fn zebra_203() -> PrinterProfile {
    devicehub_driver_zebra::driver::manifest()
        .printer_profile("zpl-203")
        .expect("the Zebra plugin has a zpl-203 profile")
        .clone()
}

enum Encoder {
    Zpl(ZplCompression),
    Epl2,
}

/// Renders `file` and encodes every page as the plugin would.
fn render_and_encode(file: &[u8], profile: &PrinterProfile, encoder: &Encoder) -> usize {
    let prepared = prepare_job(file, profile, &PrintOptions::default()).expect("prepare");
    let PrintInput::Raster(pages) = &prepared.job.input else {
        panic!("a raster job")
    };
    pages
        .iter()
        .map(|page| {
            let bitmap = Bitmap::new(page.width, page.height, &page.data).expect("bitmap");
            let bytes = match encoder {
                Encoder::Zpl(compression) => encode_zpl(
                    &bitmap,
                    &ZplOptions {
                        compression: *compression,
                        ..ZplOptions::default()
                    },
                )
                .expect("encode ZPL"),
                Encoder::Epl2 => encode_epl2(&bitmap, &EplOptions::default()).expect("encode EPL2"),
            };
            bytes.len()
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let profile = zebra_203();
    let gif = fixture("label.gif");
    let pdf = fixture("label-4x6.pdf");
    let mut group = c.benchmark_group("render_encode_4x6_203dpi");
    for (name, file, encoder) in [
        ("gif_to_zpl_auto", &gif, Encoder::Zpl(ZplCompression::Auto)),
        ("pdf_to_zpl_auto", &pdf, Encoder::Zpl(ZplCompression::Auto)),
        ("gif_to_zpl_acs", &gif, Encoder::Zpl(ZplCompression::Acs)),
        ("gif_to_zpl_z64", &gif, Encoder::Zpl(ZplCompression::Z64)),
        ("pdf_to_zpl_acs", &pdf, Encoder::Zpl(ZplCompression::Acs)),
        ("gif_to_epl2", &gif, Encoder::Epl2),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| render_and_encode(black_box(file), &profile, &encoder))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
