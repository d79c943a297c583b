//! Measures the Zebra encoders on synthetic shipping labels: output size per compression and
//! time per label, so that the cost of `Auto` (which encodes twice) stays visible.
//!
//! Run with `cargo bench -p devicehub-driver-zebra`. It prints a table; it asserts nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use devicehub_driver_zebra::bitmap::Bitmap;
use devicehub_driver_zebra::epl::{encode_epl2, EplOptions};
use devicehub_driver_zebra::status::parse_host_status;
use devicehub_driver_zebra::zpl::{encode_zpl, ZplCompression, ZplOptions};

/// A synthetic 4 x 6 in shipping label: a frame, text-like blocks of small glyph dots, a
/// 1D barcode, a 2D-barcode-like square of pseudo-random modules, and blank space.
fn shipping_label(width: u32, height: u32) -> Vec<u8> {
    let bytes_per_row = (width as usize).div_ceil(8);
    let mut data = vec![0u8; bytes_per_row * height as usize];
    let mut set = |x: u32, y: u32| {
        if x < width && y < height {
            data[y as usize * bytes_per_row + (x / 8) as usize] |= 0x80 >> (x % 8);
        }
    };
    let mut state: u32 = 0x1234_5678;
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
    // Text lines: glyph cells 16 x 24 dots, each filled with a sparse random pattern.
    for line in 0..12 {
        let top = 40 + line * 32;
        for cell in 0..(width - 80) / 18 {
            let left = 40 + cell * 18;
            let glyph = random();
            for gy in 0..24 {
                for gx in 0..16 {
                    if (glyph >> ((gx / 4) + (gy / 6) * 4)) & 1 == 1 {
                        set(left + gx, top + gy);
                    }
                }
            }
        }
    }
    // A 1D barcode: bars of 2 to 8 dots.
    let mut x = 40;
    let bar_top = height / 2;
    while x < width - 40 {
        let bar = 2 + random() % 4 * 2;
        for dx in 0..bar {
            for y in bar_top..bar_top + height / 6 {
                set(x + dx, y);
            }
        }
        x += bar * 2;
    }
    // A 2D code: 48 x 48 modules of 6 dots.
    let code_top = height - height / 4;
    for my in 0..48 {
        for mx in 0..48 {
            if random() & 1 == 1 {
                for dy in 0..6 {
                    for dx in 0..6 {
                        set(40 + mx * 6 + dx, code_top + my * 6 + dy);
                    }
                }
            }
        }
    }
    data
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
        "{:<28} {:>10} {:>12} {:>12}",
        "case", "raw bytes", "sent bytes", "time/label"
    );
    for (name, width, height) in [
        ("4x6 in @ 203 dpi", 812u32, 1218u32),
        ("4x6 in @ 300 dpi", 1200, 1800),
    ] {
        let data = shipping_label(width, height);
        let bitmap = Bitmap::new(width, height, &data).expect("synthetic label is consistent");
        for (label, compression) in [
            ("ZPL ACS", ZplCompression::Acs),
            ("ZPL Z64", ZplCompression::Z64),
            ("ZPL Auto", ZplCompression::Auto),
        ] {
            let options = ZplOptions {
                compression,
                ..ZplOptions::default()
            };
            let bytes = encode_zpl(&bitmap, &options).expect("encodes").len();
            let elapsed = time(iterations, || encode_zpl(&bitmap, &options));
            println!(
                "{:<28} {:>10} {:>12} {:>10.2?}",
                format!("{name} {label}"),
                data.len(),
                bytes,
                elapsed
            );
        }
        let options = EplOptions::default();
        let bytes = encode_epl2(&bitmap, &options).expect("encodes").len();
        let elapsed = time(iterations, || encode_epl2(&bitmap, &options));
        println!(
            "{:<28} {:>10} {:>12} {:>10.2?}",
            format!("{name} EPL2"),
            data.len(),
            bytes,
            elapsed
        );
    }
    let answer = b"\x02030,0,0,1218,000,0,0,0,000,0,0,0\x03\r\n\x02001,0,0,0,1,2,4,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n";
    let elapsed = time(10_000, || parse_host_status(answer));
    println!(
        "{:<28} {:>10} {:>12} {:>10.2?}",
        "~HS parse",
        answer.len(),
        "-",
        elapsed
    );
}
