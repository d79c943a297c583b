//! Measures the LabelWriter encoders on synthetic labels: bytes sent against the raw bitmap
//! (how much `ETB` run-length lines save on the 450 series; the 550 series sends raw lines) and
//! time per label.
//!
//! Run with `cargo bench -p devicehub-driver-dymo`. It prints a table; it asserts nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use devicehub_driver_dymo::lw550::{self, Lw550Options};
use devicehub_driver_dymo::raster::{self, Density, Quality, RasterOptions};
use devicehub_driver_dymo::status::Lw550Status;
use devicehub_plugin_api::{abi_stable::std_types::RVec, RasterPage};

/// A synthetic shipping label: a frame, lines of text-like glyphs, a 1D barcode, a
/// 2D-code-like square of pseudo-random modules and blank space.
fn shipping_label(width: u32, height: u32) -> RasterPage {
    let stride = width.div_ceil(8) as usize;
    let mut data = vec![0u8; stride * height as usize];
    let mut set = |x: u32, y: u32| {
        if x < width && y < height {
            data[y as usize * stride + (x / 8) as usize] |= 0x80 >> (x % 8);
        }
    };
    let mut state: u32 = 0x9E37_79B9;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    for x in 0..width {
        for t in 0..4 {
            set(x, t);
            set(x, height - 1 - t);
        }
    }
    for y in 0..height {
        for t in 0..4 {
            set(t, y);
            set(width - 1 - t, y);
        }
    }
    for line in 0..10 {
        let top = 30 + line * 34;
        for cell in 0..(width - 60) / 20 {
            let glyph = random();
            for gy in 0..28 {
                for gx in 0..18 {
                    if (glyph >> ((gx / 5) + (gy / 7) * 4)) & 1 == 1 {
                        set(30 + cell * 20 + gx, top + gy);
                    }
                }
            }
        }
    }
    let mut x = 30;
    let bar_top = height / 2;
    while x < width - 30 {
        let bar = 3 + random() % 4 * 3;
        for dx in 0..bar {
            for y in bar_top..bar_top + height / 8 {
                set(x + dx, y);
            }
        }
        x += bar * 2;
    }
    let code_top = height - height / 4;
    for my in 0..40 {
        for mx in 0..40 {
            if random() & 1 == 1 {
                for dy in 0..8 {
                    for dx in 0..8 {
                        set(30 + mx * 8 + dx, code_top + my * 8 + dy);
                    }
                }
            }
        }
    }
    RasterPage {
        width,
        height,
        data: RVec::from(data),
    }
}

fn time<T>(iterations: u32, mut f: impl FnMut() -> T) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(f());
    }
    start.elapsed() / iterations
}

fn main() {
    let iterations = 20;
    println!(
        "{:<36} {:>10} {:>12} {:>12}",
        "case", "raw bytes", "sent bytes", "time/label"
    );
    for (name, width, height, blank_below) in [
        ("54 x 101 mm on a 450 (672 dots)", 638u32, 1193u32, None),
        ("4 x 6 in on a 4XL/5XL (1248 dots)", 1200, 1800, None),
        // Printed matter in the top half only, as an indicium on a shipping label: the blank
        // lines below are fed with ESC f on the 450 series.
        ("54 x 101 mm, lower half blank", 638, 1193, Some(596u32)),
    ] {
        let mut page = shipping_label(width, height);
        if let Some(from) = blank_below {
            let stride = width.div_ceil(8) as usize;
            for byte in page.data.iter_mut().skip(from as usize * stride) {
                *byte = 0;
            }
        }
        let pages = [page];
        let raw = pages[0].data.len();
        let raster_options = RasterOptions {
            copies: 1,
            density: Density::Normal,
            quality: Quality::Graphics,
        };
        let sent = raster::encode_job(&pages, 1248, &raster_options)
            .expect("encodes")
            .len();
        let elapsed = time(iterations, || {
            raster::encode_job(&pages, 1248, &raster_options)
        });
        println!(
            "{:<36} {:>10} {:>12} {:>10.2?}",
            format!("{name}, raster"),
            raw,
            sent,
            elapsed
        );
        let options = Lw550Options {
            job_id: 1,
            copies: 1,
            density_percent: None,
            quality: Quality::Graphics,
        };
        let sent = lw550::encode_job(&pages, 1248, &options)
            .expect("encodes")
            .len();
        let elapsed = time(iterations, || lw550::encode_job(&pages, 1248, &options));
        println!(
            "{:<36} {:>10} {:>12} {:>10.2?}",
            format!("{name}, 550"),
            raw,
            sent,
            elapsed
        );
    }
    let mut answer = [0u8; 32];
    answer[10] = 8;
    let elapsed = time(10_000, || Lw550Status::parse(&answer).map(|s| s.summary()));
    println!(
        "{:<36} {:>10} {:>12} {:>10.2?}",
        "550 status parse", 32, "-", elapsed
    );
}
