//! One-bit pages to TSPL/TSPL2 command streams.
//!
//! Every page becomes one self-contained label program, as TSC's "TSPL/TSPL2 Programming
//! Manual" lays them out: the setup commands (`SIZE`, `GAP` or `BLINE`, `DIRECTION`,
//! `REFERENCE`, optional `DENSITY` and `SPEED`), `CLS` to clear the image buffer, one `BITMAP`
//! holding the whole page, and `PRINT` with the copy count. Commands end with CR LF.
//!
//! `BITMAP x,y,width,height,mode,data` takes `width` in bytes and `height` in dots, then exactly
//! `width * height` raw bytes, most significant bit first. Its polarity is the opposite of the
//! host's pages: in TSPL a 0 bit is a black (burned) dot and a 1 bit is white, so the encoder
//! inverts every byte and sends the padding bits after a row's last dot as 1 (white).

use thiserror::Error;

/// The line end TSC's manual uses in its examples.
const EOL: &str = "\r\n";

/// How the printer finds the start of each label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MediaSensing {
    /// Die-cut labels separated by a gap of this many millimetres (`GAP g mm,0 mm`).
    Gap {
        /// Gap between labels in millimetres.
        gap_mm: f32,
    },
    /// Labels marked by a black mark of this height on the back (`BLINE m mm,0 mm`).
    BlackMark {
        /// Height of the mark in millimetres.
        mark_mm: f32,
    },
    /// Continuous media: no gap, no mark (`GAP 0,0`).
    Continuous,
}

/// Everything besides the bitmap that goes into a label program.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelOptions {
    /// Print resolution, to turn dots into millimetres for `SIZE`.
    pub dpi: u32,
    /// Label width in dots (`SIZE`); at least the page width.
    pub label_width_dots: u32,
    /// Label length in dots (`SIZE`); at least the page height.
    pub label_length_dots: u32,
    /// Gap, black mark or continuous.
    pub media: MediaSensing,
    /// `DENSITY 0..=15`; `None` keeps the printer's setting.
    pub density: Option<u8>,
    /// `SPEED` in inches per second; `None` keeps the printer's setting.
    pub speed_ips: Option<f32>,
    /// `DIRECTION 0` or `DIRECTION 1` (the label turned by 180 degrees).
    pub direction: u8,
    /// Copies of the label (`PRINT copies,1`).
    pub copies: u32,
}

/// Why a page cannot be turned into a label program.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The page has no dots.
    #[error("the page is empty ({width} x {height} dots)")]
    EmptyPage {
        /// Width in dots.
        width: u32,
        /// Height in dots.
        height: u32,
    },
    /// The data does not hold `height` rows of `ceil(width / 8)` bytes.
    #[error("a page of {width} x {height} dots needs {expected} bytes, but {actual} were given")]
    LengthMismatch {
        /// Width in dots.
        width: u32,
        /// Height in dots.
        height: u32,
        /// Bytes the size calls for.
        expected: u64,
        /// Bytes given.
        actual: usize,
    },
    /// The label set in the options is smaller than the page.
    #[error("the page ({width} x {height} dots) is larger than the label ({label_width} x {label_length} dots)")]
    LabelTooSmall {
        /// Page width in dots.
        width: u32,
        /// Page height in dots.
        height: u32,
        /// Label width in dots.
        label_width: u32,
        /// Label length in dots.
        label_length: u32,
    },
    /// A setting is outside what TSPL accepts.
    #[error("{0}")]
    BadOption(String),
}

/// Formats a length in millimetres with at most two decimals, trailing zeros dropped
/// (`101.6`, `3`), which TSPL's numeric parameters accept. Two decimals keep the size within a
/// tenth of a dot of the page at 300 dpi.
pub fn format_mm(mm: f64) -> String {
    let text = format!("{mm:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// Millimetres covered by `dots` at `dpi`.
pub fn dots_to_mm(dots: u32, dpi: u32) -> f64 {
    f64::from(dots) * 25.4 / f64::from(dpi)
}

fn check_options(options: &LabelOptions) -> Result<(), EncodeError> {
    if options.dpi == 0 {
        return Err(EncodeError::BadOption(
            "the resolution must not be 0".into(),
        ));
    }
    if options.copies == 0 {
        return Err(EncodeError::BadOption("copies must be at least 1".into()));
    }
    if options.density.is_some_and(|d| d > 15) {
        return Err(EncodeError::BadOption(format!(
            "density {} is outside 0..15",
            options.density.unwrap_or_default()
        )));
    }
    if let Some(speed) = options.speed_ips {
        if !(1.0..=18.0).contains(&speed) {
            return Err(EncodeError::BadOption(format!(
                "speed {speed} is outside 1..18 inches per second"
            )));
        }
    }
    if options.direction > 1 {
        return Err(EncodeError::BadOption(format!(
            "direction {} is not 0 or 1",
            options.direction
        )));
    }
    let distance = match options.media {
        MediaSensing::Gap { gap_mm } => gap_mm,
        MediaSensing::BlackMark { mark_mm } => mark_mm,
        MediaSensing::Continuous => 0.0,
    };
    if !(0.0..=25.4).contains(&distance) {
        return Err(EncodeError::BadOption(format!(
            "a gap or mark of {distance} mm is outside 0..25.4 mm"
        )));
    }
    Ok(())
}

/// The TSPL label program for one page of `width` x `height` dots (`data`: rows of
/// `ceil(width / 8)` bytes, MSB first, bit 1 = black).
pub fn encode_label(
    width: u32,
    height: u32,
    data: &[u8],
    options: &LabelOptions,
) -> Result<Vec<u8>, EncodeError> {
    if width == 0 || height == 0 {
        return Err(EncodeError::EmptyPage { width, height });
    }
    let stride = (width as usize).div_ceil(8);
    let expected = u64::from(width).div_ceil(8) * u64::from(height);
    if expected != data.len() as u64 {
        return Err(EncodeError::LengthMismatch {
            width,
            height,
            expected,
            actual: data.len(),
        });
    }
    check_options(options)?;
    if width > options.label_width_dots || height > options.label_length_dots {
        return Err(EncodeError::LabelTooSmall {
            width,
            height,
            label_width: options.label_width_dots,
            label_length: options.label_length_dots,
        });
    }

    let mut program = String::new();
    let mut line = |text: String| {
        program.push_str(&text);
        program.push_str(EOL);
    };
    line(format!(
        "SIZE {} mm,{} mm",
        format_mm(dots_to_mm(options.label_width_dots, options.dpi)),
        format_mm(dots_to_mm(options.label_length_dots, options.dpi))
    ));
    line(match options.media {
        MediaSensing::Gap { gap_mm } => format!("GAP {} mm,0 mm", format_mm(gap_mm.into())),
        MediaSensing::BlackMark { mark_mm } => {
            format!("BLINE {} mm,0 mm", format_mm(mark_mm.into()))
        }
        MediaSensing::Continuous => "GAP 0,0".to_string(),
    });
    line(format!("DIRECTION {}", options.direction));
    line("REFERENCE 0,0".to_string());
    if let Some(density) = options.density {
        line(format!("DENSITY {density}"));
    }
    if let Some(speed) = options.speed_ips {
        line(format!("SPEED {}", format_mm(speed.into())));
    }
    line("CLS".to_string());

    let mut bytes = program.into_bytes();
    bytes.extend(format!("BITMAP 0,0,{stride},{height},0,").bytes());
    let pad_mask = match width % 8 {
        0 => 0x00,
        // The low `8 - dots` bits of the last byte are padding; they go out as 1 (white).
        dots => 0xFFu8 >> dots,
    };
    for row in data.chunks_exact(stride) {
        let start = bytes.len();
        bytes.extend(row.iter().map(|b| !b));
        if let Some(last) = bytes[start..].last_mut() {
            *last |= pad_mask;
        }
    }
    bytes.extend(EOL.bytes());
    bytes.extend(format!("PRINT {},1{EOL}", options.copies).bytes());
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LabelOptions {
        LabelOptions {
            dpi: 203,
            label_width_dots: 812,
            label_length_dots: 1218,
            media: MediaSensing::Gap { gap_mm: 3.0 },
            density: None,
            speed_ips: None,
            direction: 0,
            copies: 1,
        }
    }

    fn split_program(bytes: &[u8]) -> (String, &[u8], String) {
        let at = bytes
            .windows(7)
            .position(|w| w == b"BITMAP ")
            .expect("a BITMAP command");
        let header = String::from_utf8(bytes[..at].to_vec()).expect("text header");
        let commas = bytes[at..]
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b',')
            .nth(4)
            .map(|(i, _)| at + i + 1)
            .expect("five commas");
        let params = String::from_utf8(bytes[at..commas].to_vec()).expect("text params");
        (header, &bytes[commas..], params)
    }

    #[test]
    fn a_4x6_label_program_has_the_manual_layout() {
        let data = vec![0u8; 102 * 1218];
        let mut page = data.clone();
        page[0] = 0x80;
        let mut opts = options();
        opts.copies = 2;
        opts.density = Some(8);
        opts.speed_ips = Some(4.0);
        let bytes = encode_label(812, 1218, &page, &opts).expect("encodes");
        let (header, rest, params) = split_program(&bytes);
        assert_eq!(
            header,
            "SIZE 101.6 mm,152.4 mm\r\nGAP 3 mm,0 mm\r\nDIRECTION 0\r\nREFERENCE 0,0\r\n\
             DENSITY 8\r\nSPEED 4\r\nCLS\r\n"
        );
        assert_eq!(params, "BITMAP 0,0,102,1218,0,");
        assert_eq!(rest.len(), 102 * 1218 + b"\r\nPRINT 2,1\r\n".len());
        // Inverted: the one black dot is the only 0 bit, and 812 = 101 * 8 + 4 leaves four
        // padding bits per row, sent white (1).
        assert_eq!(rest[0], 0x7F);
        assert_eq!(rest[101], 0xFF);
        assert!(rest.ends_with(b"\r\nPRINT 2,1\r\n"));
    }

    #[test]
    fn padding_bits_go_out_white_whatever_the_input_holds() {
        // 10 dots wide: two bytes per row, the last six bits of the second are padding.
        let bytes = encode_label(10, 1, &[0xFF, 0xFF], &options()).expect("encodes");
        let (_, rest, params) = split_program(&bytes);
        assert_eq!(params, "BITMAP 0,0,2,1,0,");
        assert_eq!(&rest[..2], &[0x00, 0x3F]);
    }

    #[test]
    fn black_mark_and_continuous_media_use_bline_and_gap_zero() {
        let mut opts = options();
        opts.media = MediaSensing::BlackMark { mark_mm: 2.5 };
        let text = String::from_utf8_lossy(&encode_label(8, 1, &[0], &opts).expect("encodes"))
            .into_owned();
        assert!(text.contains("\r\nBLINE 2.5 mm,0 mm\r\n"), "{text}");
        opts.media = MediaSensing::Continuous;
        let text = String::from_utf8_lossy(&encode_label(8, 1, &[0], &opts).expect("encodes"))
            .into_owned();
        assert!(text.contains("\r\nGAP 0,0\r\n"), "{text}");
    }

    #[test]
    fn a_page_larger_than_the_label_is_refused() {
        let mut opts = options();
        opts.label_length_dots = 100;
        let err = encode_label(8, 101, &[0; 101], &opts).unwrap_err();
        assert!(matches!(
            err,
            EncodeError::LabelTooSmall { height: 101, .. }
        ));
    }

    #[test]
    fn bad_sizes_and_options_are_named() {
        assert!(matches!(
            encode_label(9, 2, &[0; 3], &options()),
            Err(EncodeError::LengthMismatch { expected: 4, .. })
        ));
        assert!(matches!(
            encode_label(0, 2, &[], &options()),
            Err(EncodeError::EmptyPage { .. })
        ));
        let mut opts = options();
        opts.density = Some(16);
        let err = encode_label(8, 1, &[0], &opts).unwrap_err();
        assert!(err.to_string().contains("density 16"), "{err}");
    }

    #[test]
    fn millimetres_keep_two_decimals_at_most() {
        assert_eq!(format_mm(dots_to_mm(812, 203)), "101.6");
        assert_eq!(format_mm(dots_to_mm(1800, 300)), "152.4");
        assert_eq!(format_mm(3.0), "3");
        assert_eq!(format_mm(dots_to_mm(1201, 300)), "101.68");
    }
}
