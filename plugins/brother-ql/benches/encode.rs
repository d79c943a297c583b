//! Measures the Brother QL raster encoder on synthetic shipping labels: bytes sent with and
//! without PackBits and time per label, on 62 mm tape (QL-810W) and 102 x 152 mm labels
//! (QL-1100), plus the status parse.
//!
//! Run with `cargo bench -p devicehub-driver-brother-ql`. It prints a table; it asserts nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use devicehub_driver_brother_ql::media;
use devicehub_driver_brother_ql::raster::{
    encode_job, Compression, HeadModel, Page, RasterOptions,
};
use devicehub_driver_brother_ql::status::StatusReply;

/// A synthetic label: a frame, rows of glyph-like blocks, a 1D barcode of 3-dot modules and a
/// 2D code of 8-dot modules, the rest white; the pattern comes from a fixed xorshift sequence.
fn synthetic_label(width: u32, height: u32) -> Vec<u8> {
    let stride = width.div_ceil(8) as usize;
    let mut data = vec![0u8; stride * height as usize];
    let mut state: u32 = 0x9E37_79B9;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut black = |x: u32, y: u32| {
        if x < width && y < height {
            data[y as usize * stride + (x / 8) as usize] |= 0x80 >> (x % 8);
        }
    };
    for y in 0..height {
        for x in 0..width {
            let frame = x < 6 || y < 6 || x >= width - 6 || y >= height - 6;
            if frame {
                black(x, y);
            }
        }
    }
    for line in 0..10 {
        for cell in 0..(width - 60) / 20 {
            let glyph = next();
            for gy in 0..28 {
                for gx in 0..16 {
                    if (glyph >> ((gx / 4) + (gy / 7) * 4)) & 1 == 1 {
                        black(30 + cell * 20 + gx, 40 + line * 40 + gy);
                    }
                }
            }
        }
    }
    let bar_top = height / 2;
    let mut x = 30;
    while x < width - 30 {
        if next() & 1 == 1 {
            for dx in 0..3 {
                for y in bar_top..bar_top + height / 8 {
                    black(x + dx, y);
                }
            }
        }
        x += 3;
    }
    let code_top = height - height / 4;
    for my in 0..40 {
        for mx in 0..40 {
            if next() & 1 == 1 {
                for d in 0..64 {
                    black(30 + mx * 8 + d % 8, code_top + my * 8 + d / 8);
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
    let narrow = HeadModel {
        bytes_per_line: 90,
        extra_right_margin: 0,
        compression: true,
        mode_switch: true,
        invalidate_len: 400,
        min_length_dots: 150,
        max_length_dots: 11811,
        wide: false,
    };
    let wide = HeadModel {
        bytes_per_line: 162,
        extra_right_margin: 44,
        invalidate_len: 200,
        min_length_dots: 301,
        max_length_dots: 35434,
        wide: true,
        ..narrow
    };
    println!(
        "{:<38} {:>10} {:>12} {:>12}",
        "case", "raw bytes", "sent bytes", "time/label"
    );
    let cases = [
        (
            "62 mm tape, 696 x 1044, QL-810W",
            narrow,
            "62",
            696u32,
            1044u32,
        ),
        (
            "102 x 152 mm, 1164 x 1660, QL-1100",
            wide,
            "102x152",
            1164,
            1660,
        ),
    ];
    for (name, head, roll, width, height) in cases {
        let roll = media::by_id(roll).expect("the roll is in the table");
        let data = synthetic_label(width, height);
        let page = Page {
            width,
            height,
            data: &data,
        };
        for (label, compression) in [("none", Compression::None), ("auto", Compression::Auto)] {
            let options = RasterOptions {
                compression,
                ..RasterOptions::default()
            };
            let (bytes, _) = encode_job(&head, roll, &[page], &options).expect("encodes");
            let elapsed = time(20, || encode_job(&head, roll, &[page], &options));
            println!(
                "{:<38} {:>10} {:>12} {:>10.2?}",
                format!("{name} {label}"),
                data.len(),
                bytes.len(),
                elapsed
            );
        }
    }
    let mut reply = [0u8; 32];
    reply[..3].copy_from_slice(&[0x80, 0x20, 0x42]);
    reply[10] = 62;
    reply[11] = 0x0A;
    let elapsed = time(100_000, || StatusReply::parse(black_box(&reply)));
    println!(
        "{:<38} {:>10} {:>12} {:>10.2?}",
        "status parse", 32, "-", elapsed
    );
}
