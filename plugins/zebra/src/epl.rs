//! EPL2 encoder for LP2844-class printers (page mode): one label as `N`, `q`, `Q`, `GW`, `P`.
//!
//! EPL2 has no compression for direct graphics: `GW` carries raw bytes, one bit per dot, with
//! the polarity INVERTED relative to DeviceHub's bitmaps (in `GW` data a 0 bit is a black dot),
//! so every byte is complemented on the way out. The encoder performs no I/O.

use std::io::Write as _;

use thiserror::Error;

use crate::bitmap::{Bitmap, BitmapError};

/// Largest quantity `P` accepts.
pub const MAX_COPIES: u32 = 65_535;

/// How the printer finds the start of the next label (second and third parameters of `Q`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EplMedia {
    /// Labels separated by a gap of this many dots (`Q{len},{gap}`), e.g. 24 dots = 3 mm at 203 dpi.
    Gap(u32),
    /// Labels marked by a black line of this many dots on the back (`Q{len},B{mark}`).
    BlackMark(u32),
    /// Continuous media: the printer feeds exactly the label length (`Q{len},0`).
    Continuous,
}

/// Settings for one EPL2 label job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EplOptions {
    /// Number of copies printed (`P`), 1..=65,535.
    pub copies: u32,
    /// Label separation.
    pub media: EplMedia,
    /// Print density `D`, 0..=15, or `None` to keep the printer's setting.
    pub density: Option<u8>,
    /// Print speed `S` as the model's speed code (1..=6 on LP2844-class printers), or `None`.
    pub speed: Option<u8>,
}

impl Default for EplOptions {
    fn default() -> Self {
        EplOptions {
            copies: 1,
            media: EplMedia::Gap(24),
            density: None,
            speed: None,
        }
    }
}

/// Why an EPL2 label could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EplError {
    /// The bitmap's dimensions and data disagree.
    #[error("invalid label bitmap")]
    Bitmap(#[from] BitmapError),
    /// An option lies outside the range the printer accepts.
    #[error("EPL2 option {option} = {value} is outside {min}..={max}")]
    OptionOutOfRange {
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: u32,
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
}

/// Encodes `label` as one EPL2 print job.
///
/// Layout: `\r\nN\r\nq{w}\r\nQ{h},{gap}\r\n[D{d}\r\n][S{s}\r\n]GW0,0,{bytes_per_row},{rows},{data}\r\nP{copies}\r\n`.
/// The leading CR LF ends any half-received command left in the printer's buffer before `N`.
///
/// Fails with [`EplError::Bitmap`] when the bitmap's data does not match its dimensions and
/// with [`EplError::OptionOutOfRange`] when an option is outside what the printer accepts.
pub fn encode_epl2(label: &Bitmap, opts: &EplOptions) -> Result<Vec<u8>, EplError> {
    label.validate()?;
    check_range("copies", opts.copies, 1, MAX_COPIES)?;
    if let Some(density) = opts.density {
        check_range("density", u32::from(density), 0, 15)?;
    }
    if let Some(speed) = opts.speed {
        check_range("speed", u32::from(speed), 1, 6)?;
    }
    match opts.media {
        EplMedia::Gap(dots) => check_range("gap", dots, 0, 65_535)?,
        EplMedia::BlackMark(dots) => check_range("black_mark", dots, 1, 65_535)?,
        EplMedia::Continuous => {}
    }

    let mut out: Vec<u8> = Vec::with_capacity(label.data.len() + 96);
    // Writing into a Vec cannot fail, so every `write!` below is infallible.
    let infallible = "writing into a Vec in memory cannot fail";
    write!(out, "\r\nN\r\nq{}\r\nQ{},", label.width, label.height).expect(infallible);
    match opts.media {
        EplMedia::Gap(dots) => write!(out, "{dots}\r\n"),
        EplMedia::BlackMark(dots) => write!(out, "B{dots}\r\n"),
        EplMedia::Continuous => write!(out, "0\r\n"),
    }
    .expect(infallible);
    if let Some(density) = opts.density {
        write!(out, "D{density}\r\n").expect(infallible);
    }
    if let Some(speed) = opts.speed {
        write!(out, "S{speed}\r\n").expect(infallible);
    }
    write!(out, "GW0,0,{},{},", label.bytes_per_row(), label.height).expect(infallible);
    // Padding bits are cleared (white) before the inversion, so they go out as 1 (white) too.
    for row in label.clean_rows() {
        out.extend(row.iter().map(|byte| !byte));
    }
    write!(out, "\r\nP{}\r\n", opts.copies).expect(infallible);
    Ok(out)
}

fn check_range(option: &'static str, value: u32, min: u32, max: u32) -> Result<(), EplError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(EplError::OptionOutOfRange {
            option,
            value,
            min,
            max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_example_from_zebra_gw_note() {
        // Zebra's GW support note draws a 16 x 16 box whose GW data reads 0000, fourteen times
        // 7FFE, then 0000 (0 = black). In DeviceHub's polarity that is FFFF, 8001 x 14, FFFF.
        let mut data = vec![0xFF, 0xFF];
        for _ in 0..14 {
            data.extend([0x80, 0x01]);
        }
        data.extend([0xFF, 0xFF]);
        let bitmap = Bitmap::new(16, 16, &data).expect("valid bitmap");
        let job = encode_epl2(&bitmap, &EplOptions::default()).expect("valid job");

        let mut expected = b"\r\nN\r\nq16\r\nQ16,24\r\nGW0,0,2,16,".to_vec();
        expected.extend([0x00, 0x00]);
        for _ in 0..14 {
            expected.extend([0x7F, 0xFE]);
        }
        expected.extend([0x00, 0x00]);
        expected.extend(b"\r\nP1\r\n");
        assert_eq!(job, expected);
    }

    #[test]
    fn four_by_six_label_header_and_size() {
        let data = vec![0u8; 102 * 1218];
        let bitmap = Bitmap::new(812, 1218, &data).expect("valid bitmap");
        let options = EplOptions {
            copies: 3,
            ..EplOptions::default()
        };
        let job = encode_epl2(&bitmap, &options).expect("valid job");
        let head = b"\r\nN\r\nq812\r\nQ1218,24\r\nGW0,0,102,1218,";
        let tail = b"\r\nP3\r\n";
        assert!(job.starts_with(head));
        assert!(job.ends_with(tail));
        assert_eq!(job.len(), head.len() + 102 * 1218 + tail.len());
        // A blank label is all white: every data byte is 0xFF in EPL2 polarity.
        assert!(job[head.len()..job.len() - tail.len()]
            .iter()
            .all(|&b| b == 0xFF));
    }

    #[test]
    fn padding_bits_go_out_white() {
        // 12 dots wide, all black: the last 4 bits of each row are padding and must be 1 (white).
        let data = [0xFF; 4];
        let bitmap = Bitmap::new(12, 2, &data).expect("valid bitmap");
        let job = encode_epl2(&bitmap, &EplOptions::default()).expect("valid job");
        let mut expected = b"\r\nN\r\nq12\r\nQ2,24\r\nGW0,0,2,2,".to_vec();
        expected.extend([0x00, 0x0F, 0x00, 0x0F]);
        expected.extend(b"\r\nP1\r\n");
        assert_eq!(job, expected);
    }

    #[test]
    fn media_density_and_speed_settings() {
        let data = [0x80];
        let bitmap = Bitmap::new(8, 1, &data).expect("valid bitmap");
        let options = EplOptions {
            copies: 2,
            media: EplMedia::Continuous,
            density: Some(10),
            speed: Some(3),
        };
        let job = encode_epl2(&bitmap, &options).expect("valid job");
        let mut expected = b"\r\nN\r\nq8\r\nQ1,0\r\nD10\r\nS3\r\nGW0,0,1,1,".to_vec();
        expected.push(0x7F);
        expected.extend(b"\r\nP2\r\n");
        assert_eq!(job, expected);

        let options = EplOptions {
            media: EplMedia::BlackMark(16),
            ..EplOptions::default()
        };
        let job = encode_epl2(&bitmap, &options).expect("valid job");
        assert!(job.starts_with(b"\r\nN\r\nq8\r\nQ1,B16\r\nGW0,0,1,1,"));
    }

    #[test]
    fn out_of_range_options_are_rejected() {
        let data = [0u8];
        let bitmap = Bitmap::new(8, 1, &data).expect("valid bitmap");
        let cases = [
            (
                EplOptions {
                    copies: 0,
                    ..EplOptions::default()
                },
                "copies",
            ),
            (
                EplOptions {
                    density: Some(16),
                    ..EplOptions::default()
                },
                "density",
            ),
            (
                EplOptions {
                    speed: Some(0),
                    ..EplOptions::default()
                },
                "speed",
            ),
            (
                EplOptions {
                    media: EplMedia::BlackMark(0),
                    ..EplOptions::default()
                },
                "black_mark",
            ),
        ];
        for (options, name) in cases {
            assert!(
                matches!(
                    encode_epl2(&bitmap, &options),
                    Err(EplError::OptionOutOfRange { option, .. }) if option == name
                ),
                "{options:?}"
            );
        }
    }

    #[test]
    fn invalid_bitmaps_are_rejected() {
        let bitmap = Bitmap {
            width: 8,
            height: 2,
            data: &[0u8; 1],
        };
        assert!(matches!(
            encode_epl2(&bitmap, &EplOptions::default()),
            Err(EplError::Bitmap(BitmapError::LengthMismatch { .. }))
        ));
    }
}
