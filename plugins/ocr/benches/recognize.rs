//! OCR time per address image: every address of the test set in every font and size, read by
//! one started engine, as the OCR device reads images one after another. Prints milliseconds
//! per image (median and worst) for docs/performance.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use devicehub_driver_ocr::driver;
use devicehub_plugin_api::{testing::ScriptedTransport, OpenRequest, Scanner};

fn main() {
    let (transport, _script) = ScriptedTransport::new("none");
    let started = Instant::now();
    let mut scanner = driver::open(
        &OpenRequest {
            device_id: "bench".into(),
            profile: "ocr".into(),
            model: None.into(),
            settings: Vec::new().into(),
        },
        transport.into_box(),
    )
    .expect("Tesseract starts (apt-get install tesseract-ocr-eng)");
    let start_time = started.elapsed();
    for &size in support::SIZES {
        let mut times: Vec<Duration> = Vec::new();
        let mut pixels = 0u64;
        for font_name in support::FONTS {
            let font = support::font(font_name);
            for address in support::ADDRESSES {
                let image = support::render(address, &font, size);
                pixels += u64::from(image.width) * u64::from(image.height);
                // Three rounds per image: the first warms caches, the median of all is kept.
                for _ in 0..3 {
                    let begun = Instant::now();
                    let text = scanner.recognize(&image).expect("recognize");
                    times.push(begun.elapsed());
                    assert!(!text.lines.is_empty());
                }
            }
        }
        times.sort();
        let images = times.len() / 3;
        let median = times[times.len() / 2];
        let worst = times[times.len() - 1];
        println!(
            "ocr recognize, {size} px text: {images} images (avg {} kpixels), median {:.1} ms, worst {:.1} ms per image",
            pixels / images as u64 / 1000,
            median.as_secs_f64() * 1000.0,
            worst.as_secs_f64() * 1000.0
        );
    }
    println!(
        "engine start (model load): {:.1} ms",
        start_time.as_secs_f64() * 1000.0
    );
}
