//! Rendering print inputs (GIF, PNG, JPEG, PDF) into 1-bit bitmaps at a printer's resolution.
//!
//! Rendering happens here, in the host, and never in driver plugins: a plugin receives
//! [`MonoBitmap`]s and only encodes them in its printer's language.
//!
//! Layout:
//! - `bitmap`: [`MonoBitmap`] and the grey plane every format is converted to first;
//! - `raster`: GIF (through the `gif` crate), PNG and JPEG (through `image`), 1 image pixel =
//!   1 dot;
//! - `pdf`: PDF pages through the pure-Rust `hayro` rasterizer, at the printer's dpi;
//! - `layout`: orientation and shrink-to-fit decisions shared by both paths;
//! - `halftone`: threshold and Floyd-Steinberg dithering.
//!
//! Untrusted input is bounded before anything large is allocated: the input size is capped,
//! image dimensions are read from the header and checked against [`RenderLimits::max_pixels`]
//! before decoding, and for a PDF the page count, each page's size times the dpi, the declared
//! size of embedded images and the inflated size of Flate streams are checked before
//! rasterizing.
//!
//! Rendering is CPU-bound and synchronous: async callers run it on `spawn_blocking`.

mod bitmap;
mod halftone;
mod layout;
mod pdf;
mod raster;

use std::fmt;

pub use bitmap::MonoBitmap;

/// The file formats the renderer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputFormat {
    /// GIF: postage indicia. Only the first frame of an animation is printed.
    Gif,
    /// PNG, with or without transparency.
    Png,
    /// JPEG (baseline or progressive).
    Jpeg,
    /// PDF: shipping labels, one bitmap per page.
    Pdf,
}

impl InputFormat {
    /// Recognises a format from its magic bytes, whatever the file was called.
    ///
    /// A PDF header may follow a little leading junk (the PDF specification lets readers look
    /// through the first 1024 bytes), which some label services do emit.
    pub fn sniff(input: &[u8]) -> Option<InputFormat> {
        if input.starts_with(b"GIF87a") || input.starts_with(b"GIF89a") {
            Some(InputFormat::Gif)
        } else if input.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(InputFormat::Png)
        } else if input.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(InputFormat::Jpeg)
        } else if input[..input.len().min(1024)]
            .windows(5)
            .any(|window| window == b"%PDF-")
        {
            Some(InputFormat::Pdf)
        } else {
            None
        }
    }

    /// The conventional lower-case name, as used in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Gif => "GIF",
            InputFormat::Png => "PNG",
            InputFormat::Jpeg => "JPEG",
            InputFormat::Pdf => "PDF",
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the printer, with the media it has loaded, can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderTarget {
    /// Print resolution in dots per inch: 203, 300, 600...
    pub dpi: u32,
    /// Printable width in dots.
    pub width_dots: u32,
    /// Label length in dots for die-cut media; `None` for continuous media, where any length
    /// prints.
    pub max_length_dots: Option<u32>,
}

/// How grey becomes black or white dots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halftone {
    /// A dot is black when its grey value (0 black ..= 255 white, over white paper) is below
    /// `level`. For indicia, barcodes and labels: edges stay sharp and nothing is smoothed.
    Threshold {
        /// The grey level below which a dot is black; 128 suits almost everything.
        level: u8,
    },
    /// Floyd-Steinberg error diffusion with serpentine scanning, for photographs and grey
    /// artwork. Never for barcodes: diffusion moves bar edges.
    Dither,
}

impl Default for Halftone {
    fn default() -> Self {
        Halftone::Threshold { level: 128 }
    }
}

/// Which way round the input goes onto the media. Quarter turns are clockwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotation {
    /// Turn 90 degrees clockwise when that makes the page fit and it does not fit as it is (a
    /// landscape 6x4 label on a 4 in printer); when neither way fits, the way that needs less
    /// shrinking.
    #[default]
    Auto,
    /// Never turn.
    None,
    /// A quarter turn clockwise.
    Deg90,
    /// A half turn.
    Deg180,
    /// Three quarter turns clockwise (a quarter turn anticlockwise).
    Deg270,
}

/// Bounds on untrusted input, checked before anything large is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderLimits {
    /// Largest input file accepted, in bytes.
    pub max_input_bytes: usize,
    /// Largest image (as declared in its header) or rasterized page accepted, in pixels. A
    /// PDF's compressed streams may together inflate to at most 8 bytes per such pixel (room
    /// for one largest image at 16-bit RGBA).
    pub max_pixels: u64,
    /// Most pages a PDF may have.
    pub max_pages: u32,
}

impl Default for RenderLimits {
    /// 32 MiB of input, 20 million pixels (a 4x6 in label at 600 dpi is 8.6 million; a Letter
    /// page at 300 dpi is 8.4 million), 100 pages. Decoding 20 million pixels needs at most
    /// 80 MB of RGBA, which a desk PC can spare.
    fn default() -> Self {
        RenderLimits {
            max_input_bytes: 32 * 1024 * 1024,
            max_pixels: 20_000_000,
            max_pages: 100,
        }
    }
}

/// Everything [`render`] needs besides the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// The printer and its media.
    pub target: RenderTarget,
    /// Threshold for indicia and labels, dither for photographs.
    pub halftone: Halftone,
    /// Which way round the input is printed.
    pub rotation: Rotation,
    /// Bounds on the input.
    pub limits: RenderLimits,
}

impl RenderOptions {
    /// Options for `target` with a threshold at 128, automatic rotation and default limits.
    pub fn for_target(target: RenderTarget) -> Self {
        RenderOptions {
            target,
            halftone: Halftone::default(),
            rotation: Rotation::Auto,
            limits: RenderLimits::default(),
        }
    }
}

/// How a page or image was put onto the media: what the caller should log when the print will
/// not come out at its natural size or orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Natural width in dots before turning and scaling: image pixels, or the PDF page width
    /// at the target dpi (rounded).
    pub source_width: u32,
    /// Natural height in dots before turning and scaling.
    pub source_height: u32,
    /// Clockwise quarter turns applied (0..=3).
    pub quarter_turns: u8,
    /// Final width in dots (the bitmap's width).
    pub width: u32,
    /// Final height in dots (the bitmap's height).
    pub height: u32,
}

impl Placement {
    /// Whether the print was turned.
    pub fn is_rotated(&self) -> bool {
        self.quarter_turns != 0
    }

    /// Whether the print was shrunk to fit the media, which makes it smaller than intended and
    /// may make barcodes harder to scan: worth a warning in the log.
    pub fn is_scaled(&self) -> bool {
        let (width, height) = if self.quarter_turns % 2 == 1 {
            (self.source_height, self.source_width)
        } else {
            (self.source_width, self.source_height)
        };
        (width, height) != (self.width, self.height)
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{} dots", self.source_width, self.source_height)?;
        if self.is_rotated() {
            write!(
                f,
                ", turned {} degrees clockwise",
                u32::from(self.quarter_turns) * 90
            )?;
        }
        if self.is_scaled() {
            write!(
                f,
                ", scaled down to {}x{} to fit the media",
                self.width, self.height
            )?;
        }
        Ok(())
    }
}

/// One rendered page (PDF) or image, ready for a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPage {
    /// The dots to print.
    pub bitmap: MonoBitmap,
    /// How the source was turned and scaled to get there.
    pub placement: Placement,
}

/// Why an input could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The input file is larger than [`RenderLimits::max_input_bytes`].
    #[error("input of {size} bytes exceeds the limit of {limit} bytes")]
    InputTooLarge {
        /// Size of the input.
        size: usize,
        /// The limit it exceeded.
        limit: usize,
    },
    /// An image's header, or a PDF page at the target dpi, declares more pixels than
    /// [`RenderLimits::max_pixels`] (or more than the rasterizer can address); nothing was
    /// allocated for it.
    #[error("{format} {what} of {width}x{height} pixels exceeds the limit of {limit} pixels")]
    TooManyPixels {
        /// The input's format.
        format: InputFormat,
        /// What was too large: "image", "page 3", "embedded image".
        what: String,
        /// Declared width.
        width: u64,
        /// Declared height.
        height: u64,
        /// The limit it exceeded.
        limit: u64,
    },
    /// A compressed stream inside a PDF inflates to more than the renderer will hold: a zip
    /// bomb. It was measured without being kept, and nothing was rasterized.
    #[error("{format} holds compressed streams that inflate past the limit of {limit} bytes")]
    InflatesTooFar {
        /// The input's format.
        format: InputFormat,
        /// The limit on the inflated size of all streams together, in bytes.
        limit: u64,
    },
    /// A PDF has more pages than [`RenderLimits::max_pages`].
    #[error("PDF of {pages} pages exceeds the limit of {limit} pages")]
    TooManyPages {
        /// Pages in the document.
        pages: usize,
        /// The limit it exceeded.
        limit: u32,
    },
    /// The input is broken, truncated, encrypted or uses something the decoder cannot read.
    #[error("cannot decode {format}: {reason}")]
    Decode {
        /// The input's format.
        format: InputFormat,
        /// What is wrong, in the decoder's words.
        reason: String,
    },
    /// The render target cannot be printed on (zero dpi or zero width).
    #[error("invalid render target: {reason}")]
    InvalidTarget {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Renders `input` for the printer described in `options`: one page per PDF page, one for an
/// image (the first frame of an animated GIF).
///
/// Images are printed at native resolution, one pixel per dot. PDF pages are rasterized at the
/// target's dpi, so a 4x6 in page becomes 812 x 1218 dots at 203 dpi. Anything that does not
/// fit is turned (with [`Rotation::Auto`]) and, failing that, shrunk; [`Placement`] says so.
pub fn render(
    input: &[u8],
    format: InputFormat,
    options: &RenderOptions,
) -> Result<Vec<RenderedPage>, RenderError> {
    if options.target.dpi == 0 {
        return Err(RenderError::InvalidTarget {
            reason: "resolution is 0 dpi",
        });
    }
    if options.target.width_dots == 0 || options.target.max_length_dots == Some(0) {
        return Err(RenderError::InvalidTarget {
            reason: "printable area is 0 dots",
        });
    }
    if input.len() > options.limits.max_input_bytes {
        return Err(RenderError::InputTooLarge {
            size: input.len(),
            limit: options.limits.max_input_bytes,
        });
    }
    match format {
        InputFormat::Gif | InputFormat::Png | InputFormat::Jpeg => {
            raster::render(input, format, options).map(|page| vec![page])
        }
        InputFormat::Pdf => pdf::render(input, options),
    }
}

#[cfg(test)]
mod tests;
