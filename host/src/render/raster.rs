//! GIF, PNG and JPEG input: decoded (GIF with the `gif` crate, PNG and JPEG with `image`) after
//! the header's dimensions have been checked, composited over white, then printed one pixel
//! per dot.

use std::io::Cursor;
use std::num::NonZeroU64;

use image::codecs::jpeg::JpegDecoder;
use image::codecs::png::PngDecoder;
use image::{DynamicImage, ImageDecoder, ImageError, Limits};

use super::bitmap::GreyPlane;
use super::halftone::halftone;
use super::layout;
use super::{Halftone, InputFormat, Placement, RenderError, RenderOptions, RenderedPage};

/// Decodes, turns, shrinks if needed and halftones one image.
pub(crate) fn render(
    input: &[u8],
    format: InputFormat,
    options: &RenderOptions,
) -> Result<RenderedPage, RenderError> {
    let plane = match format {
        InputFormat::Gif => decode_gif(input, options.limits.max_pixels)?,
        _ => grey_over_white(decode(input, format, options.limits.max_pixels)?),
    };
    let (source_width, source_height) = (plane.width, plane.height);

    let turns = layout::quarter_turns(
        f64::from(source_width),
        f64::from(source_height),
        &options.target,
        options.rotation,
    );
    let plane = plane.rotate_clockwise(turns);
    let (width, height) = shrunk_size(plane.width, plane.height, options);
    let plane = plane.scale_nearest(width, height);

    Ok(RenderedPage {
        bitmap: halftone(&plane, options.halftone),
        placement: Placement {
            source_width,
            source_height,
            quarter_turns: turns,
            width,
            height,
        },
    })
}

/// The size an already turned `width` x `height` image is printed at.
///
/// With a threshold (indicia, barcodes) the image shrinks by a whole divisor, so modules stay
/// equally wide; with dithering (photographs) it shrinks by the exact factor that fits, since
/// there uneven columns do not matter and the larger print does.
fn shrunk_size(width: u32, height: u32, options: &RenderOptions) -> (u32, u32) {
    let target = &options.target;
    if layout::fits(f64::from(width), f64::from(height), target) {
        return (width, height);
    }
    match options.halftone {
        Halftone::Threshold { .. } => {
            let divisor = layout::integer_divisor(width, height, target);
            (width.div_ceil(divisor), height.div_ceil(divisor))
        }
        Halftone::Dither => {
            let scale = layout::fit_scale(f64::from(width), f64::from(height), target);
            // Rounding down keeps the result inside the media; `max(1)` keeps a sliver visible.
            let shrink = |dots: u32| ((f64::from(dots) * scale).floor() as u32).clamp(1, dots);
            (shrink(width), shrink(height))
        }
    }
}

/// Decodes the first frame of a GIF straight to grey.
///
/// The `gif` crate is used directly rather than through `image`, which only offers RGBA
/// output: decoding palette indices (one byte per dot) and mapping them through a 256-entry
/// grey table does a quarter of the memory traffic, and GIF indicia are the hot path.
fn decode_gif(input: &[u8], max_pixels: u64) -> Result<GreyPlane, RenderError> {
    let format = InputFormat::Gif;
    let decode_error = |error: gif::DecodingError| RenderError::Decode {
        format,
        reason: error.to_string(),
    };
    let too_large = |what: &str, width: u16, height: u16| RenderError::TooManyPixels {
        format,
        what: what.to_owned(),
        width: width.into(),
        height: height.into(),
        limit: max_pixels,
    };
    let pixels = |width: u16, height: u16| u64::from(width) * u64::from(height);

    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    // The decoder's own cap on a frame buffer, in case a frame claims more than the screen.
    if let Some(limit) = NonZeroU64::new(max_pixels) {
        options.set_memory_limit(gif::MemoryLimit::Bytes(limit));
    }
    let mut decoder = options
        .read_info(Cursor::new(input))
        .map_err(decode_error)?;
    let (width, height) = (decoder.width(), decoder.height());
    if pixels(width, height) > max_pixels {
        return Err(too_large("image", width, height));
    }
    if pixels(width, height) == 0 {
        return Err(RenderError::Decode {
            format,
            reason: format!("image has no pixels ({width}x{height})"),
        });
    }
    let frame = decoder
        .next_frame_info()
        .map_err(decode_error)?
        .ok_or_else(|| RenderError::Decode {
            format,
            reason: "file holds no image frame".to_owned(),
        })?;
    let (left, top, frame_width, frame_height) = (frame.left, frame.top, frame.width, frame.height);
    let transparent = frame.transparent;
    if pixels(frame_width, frame_height) > max_pixels {
        return Err(too_large("image frame", frame_width, frame_height));
    }

    // Grey for each palette index. Indices past the end of a short palette print white, as
    // browsers show them transparent; the transparent index is paper.
    let mut grey = [255u8; 256];
    let palette = decoder.palette().map_err(decode_error)?;
    for (entry, rgb) in grey.iter_mut().zip(palette.chunks_exact(3)) {
        *entry = luma(rgb[0], rgb[1], rgb[2]);
    }
    if let Some(index) = transparent {
        grey[usize::from(index)] = 255;
    }

    let mut indices = vec![0u8; decoder.buffer_size()];
    decoder
        .read_into_buffer(&mut indices)
        .map_err(decode_error)?;

    let (width, height) = (u32::from(width), u32::from(height));
    let data =
        if (left, top, u32::from(frame_width), u32::from(frame_height)) == (0, 0, width, height) {
            // The usual case, a frame covering the whole screen: map the indices in place.
            for dot in &mut indices {
                *dot = grey[usize::from(*dot)];
            }
            indices
        } else {
            // The first frame on a white canvas the size of the logical screen; any part of the
            // frame outside the screen is cut off, as viewers do.
            let mut data = vec![255u8; width as usize * height as usize];
            let (left, top) = (u32::from(left), u32::from(top));
            let visible_width = u32::from(frame_width).min(width.saturating_sub(left)) as usize;
            let visible_height = u32::from(frame_height).min(height.saturating_sub(top));
            if visible_width > 0 {
                for (row, source) in indices
                    .chunks_exact(usize::from(frame_width))
                    .take(visible_height as usize)
                    .enumerate()
                {
                    let start = (top as usize + row) * width as usize + left as usize;
                    for (dot, &index) in data[start..start + visible_width]
                        .iter_mut()
                        .zip(&source[..visible_width])
                    {
                        *dot = grey[usize::from(index)];
                    }
                }
            }
            data
        };
    Ok(GreyPlane {
        width,
        height,
        data,
    })
}

/// Reads the header, refuses images larger than `max_pixels`, then decodes.
fn decode(input: &[u8], format: InputFormat, max_pixels: u64) -> Result<DynamicImage, RenderError> {
    let decode_error = |error: ImageError| RenderError::Decode {
        format,
        reason: error.to_string(),
    };
    let cursor = Cursor::new(input);
    match format {
        InputFormat::Png => {
            let decoder =
                PngDecoder::with_limits(cursor, image_limits(max_pixels)).map_err(decode_error)?;
            decode_bounded(decoder, format, max_pixels)
        }
        InputFormat::Jpeg => {
            // zune-jpeg, which `image` uses, fills a truncated scan with grey instead of
            // failing; a label with half a barcode must not print, so the file's structure is
            // checked first.
            check_jpeg_complete(input).map_err(|reason| RenderError::Decode { format, reason })?;
            let decoder = JpegDecoder::new(cursor).map_err(decode_error)?;
            decode_bounded(decoder, format, max_pixels)
        }
        InputFormat::Gif | InputFormat::Pdf => {
            unreachable!("GIF and PDF input have decoders of their own")
        }
    }
}

/// Limits handed to the decoders as a second line of defence: they bound the output buffer and
/// any intermediate frame buffer (a GIF frame may claim more than its logical screen).
fn image_limits(max_pixels: u64) -> Limits {
    let mut limits = Limits::default();
    // RGBA at 16 bits per channel is the widest buffer a decoder allocates per pixel, plus the
    // same again for a GIF frame decoded apart from its canvas.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_mul(2));
    limits
}

fn decode_bounded(
    mut decoder: impl ImageDecoder,
    format: InputFormat,
    max_pixels: u64,
) -> Result<DynamicImage, RenderError> {
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(RenderError::TooManyPixels {
            format,
            what: "image".to_owned(),
            width: width.into(),
            height: height.into(),
            limit: max_pixels,
        });
    }
    if pixels == 0 {
        return Err(RenderError::Decode {
            format,
            reason: format!("image has no pixels ({width}x{height})"),
        });
    }
    let to_render_error = |error: ImageError| match error {
        ImageError::Limits(_) => RenderError::TooManyPixels {
            format,
            what: "image frame".to_owned(),
            width: width.into(),
            height: height.into(),
            limit: max_pixels,
        },
        other => RenderError::Decode {
            format,
            reason: other.to_string(),
        },
    };
    decoder
        .set_limits(image_limits(max_pixels))
        .map_err(to_render_error)?;
    DynamicImage::from_decoder(decoder).map_err(to_render_error)
}

/// Integer luma (ITU-R BT.601 weights scaled to 256) of an sRGB pixel.
pub(crate) fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 77 + u32::from(g) * 150 + u32::from(b) * 29 + 128) >> 8) as u8
}

/// `grey` seen through `alpha` on white paper: transparent pixels print as paper.
fn over_white(grey: u8, alpha: u8) -> u8 {
    let (grey, alpha) = (u32::from(grey), u32::from(alpha));
    ((grey * alpha + 255 * (255 - alpha) + 127) / 255) as u8
}

/// Converts any decoded image to a grey plane composited over white.
pub(crate) fn grey_over_white(image: DynamicImage) -> GreyPlane {
    let (width, height) = (image.width(), image.height());
    let data: Vec<u8> = match image {
        DynamicImage::ImageLuma8(buffer) => buffer.into_raw(),
        DynamicImage::ImageLumaA8(buffer) => buffer
            .as_raw()
            .chunks_exact(2)
            .map(|p| over_white(p[0], p[1]))
            .collect(),
        DynamicImage::ImageRgb8(buffer) => buffer
            .as_raw()
            .chunks_exact(3)
            .map(|p| luma(p[0], p[1], p[2]))
            .collect(),
        DynamicImage::ImageRgba8(buffer) => rgba_over_white(buffer.as_raw()),
        // 16-bit and float images are rare on labels; converting them costs one extra pass.
        other => rgba_over_white(other.to_rgba8().as_raw()),
    };
    GreyPlane {
        width,
        height,
        data,
    }
}

fn rgba_over_white(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .map(|p| match p[3] {
            // Fully opaque and fully transparent pixels are nearly all of an indicium.
            255 => luma(p[0], p[1], p[2]),
            0 => 255,
            alpha => over_white(luma(p[0], p[1], p[2]), alpha),
        })
        .collect()
}

/// Walks a JPEG's marker segments and entropy-coded scans and fails unless it reaches the
/// end-of-image marker: a file cut off in transit would otherwise decode into a partly grey
/// picture without an error.
fn check_jpeg_complete(input: &[u8]) -> Result<(), String> {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    let truncated =
        |at: usize| format!("file is truncated (ends at byte {at} before the end-of-image marker)");
    if input.get(..2) != Some(&[0xFF, SOI]) {
        return Err("missing start-of-image marker".to_owned());
    }
    let mut pos = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while input.get(pos) == Some(&0xFF) && input.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (input.get(pos), input.get(pos + 1)) else {
            return Err(if pos >= input.len() {
                truncated(input.len())
            } else {
                format!("expected a marker at byte {pos}")
            });
        };
        pos += 2;
        match marker {
            EOI => return Ok(()),
            // Restart markers and TEM stand alone, without a length.
            0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        let length = match input.get(pos..pos + 2) {
            Some(bytes) => usize::from(u16::from_be_bytes([bytes[0], bytes[1]])),
            None => return Err(truncated(input.len())),
        };
        if length < 2 {
            return Err(format!(
                "segment at byte {pos} has an invalid length {length}"
            ));
        }
        pos += length;
        if pos > input.len() {
            return Err(truncated(input.len()));
        }
        if marker == SOS {
            // Entropy-coded data runs until a 0xFF that is neither a stuffed 0x00 nor a restart
            // marker.
            loop {
                match (input.get(pos), input.get(pos + 1)) {
                    (Some(&0xFF), Some(&next)) if next == 0x00 || (0xD0..=0xD7).contains(&next) => {
                        pos += 2
                    }
                    (Some(&0xFF), Some(_)) => break,
                    (Some(_), _) => pos += 1,
                    (None, _) => return Err(truncated(input.len())),
                }
            }
        }
    }
}
