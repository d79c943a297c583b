//! The NCI general serial protocol (NCI, Avery Weigh-Tronix, Brecknell and compatible bench
//! scales): the commands the plugin sends and the frames it reads.
//!
//! Commands are one letter and CR:
//! - `W`: weight. Answer `<LF>weight<CR><LF>status<CR><ETX>`, the weight as displayed with its
//!   unit (`0001.25lb`, `-001.25lb`, ` 1234g `, or `  2lb  3.5oz` on scales showing pounds and
//!   ounces).
//! - `H`: the same weight at ten times the resolution (one more digit).
//! - `S`: status only, `<LF>status<CR><ETX>`.
//! - `Z`: zero; answers the status.
//! - anything else: `<LF>?<CR><ETX>` (some indicators answer `<CR>?<LF>` instead).
//!
//! The status is two or more bytes whose bits 4 and 5 are always set (so they print as
//! characters `0`..`?`); bit 7 is parity and bit 6, in the second and later bytes, says that
//! another byte follows:
//! - byte 1: bit 0 in motion, bit 1 at zero, bit 2 RAM error, bit 3 EEPROM error;
//! - byte 2: bit 0 under capacity, bit 1 over capacity, bit 2 ROM error, bit 3 faulty
//!   calibration;
//! - byte 3 (optional): range, net or gross weight and initial zero error, not used here.

use crate::exact::{Decimal, Micrograms, Unit};

/// End of text: the last byte of every answer.
pub const ETX: u8 = 0x03;
/// The weight command.
pub const WEIGHT: &[u8] = b"W\r";
/// The high-resolution weight command.
pub const HIGH_RESOLUTION_WEIGHT: &[u8] = b"H\r";
/// The status command.
pub const STATUS: &[u8] = b"S\r";
/// The zero command.
pub const ZERO: &[u8] = b"Z\r";

/// The decoded status bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub motion: bool,
    pub at_zero: bool,
    pub ram_error: bool,
    pub eeprom_error: bool,
    pub under_capacity: bool,
    pub over_capacity: bool,
    pub rom_error: bool,
    pub calibration_error: bool,
}

impl Status {
    /// Decodes the status bytes of a frame.
    pub fn parse(bytes: &[u8]) -> Result<Status, FrameError> {
        if bytes.is_empty() {
            return Err(FrameError::NoStatus);
        }
        let mut bits = [0u8; 2];
        for (index, &byte) in bytes.iter().enumerate() {
            // Bit 7 carries parity on 7-bit links; it says nothing about the scale.
            let byte = byte & 0x7F;
            if byte & 0x30 != 0x30 {
                return Err(FrameError::BadStatusByte(byte));
            }
            if let Some(slot) = bits.get_mut(index) {
                *slot = byte & 0x0F;
            }
        }
        let bit = |byte: usize, n: u8| bits[byte] & (1 << n) != 0;
        Ok(Status {
            motion: bit(0, 0),
            at_zero: bit(0, 1),
            ram_error: bit(0, 2),
            eeprom_error: bit(0, 3),
            under_capacity: bit(1, 0),
            over_capacity: bit(1, 1),
            rom_error: bit(1, 2),
            calibration_error: bit(1, 3),
        })
    }

    /// The faults in words, if any.
    pub fn faults(&self) -> Vec<&'static str> {
        let mut faults = Vec::new();
        for (set, name) in [
            (self.ram_error, "RAM error"),
            (self.eeprom_error, "EEPROM error"),
            (self.rom_error, "ROM error"),
            (self.calibration_error, "faulty calibration"),
        ] {
            if set {
                faults.push(name);
            }
        }
        faults
    }

    /// The status in words, e.g. "in motion; over capacity".
    pub fn describe(&self) -> String {
        let mut words: Vec<&str> = Vec::new();
        for (set, name) in [
            (self.motion, "in motion"),
            (self.at_zero, "at zero"),
            (self.under_capacity, "under capacity"),
            (self.over_capacity, "over capacity"),
        ] {
            if set {
                words.push(name);
            }
        }
        words.extend(self.faults());
        if words.is_empty() {
            "stable".to_string()
        } else {
            words.join("; ")
        }
    }
}

/// One answer from the scale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The answer to `W` or `H`: the weight field as printed, and the status.
    Weight { field: String, status: Status },
    /// The answer to `S` or `Z`.
    Status(Status),
    /// The scale did not recognise the command.
    Unrecognized,
}

/// Why an answer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the scale's answer has no status bytes")]
    NoStatus,
    #[error("status byte 0x{0:02X} does not have bits 4 and 5 set, as NCI status bytes do")]
    BadStatusByte(u8),
    #[error("the scale's answer {0:?} is not an NCI frame")]
    NotAFrame(String),
}

/// Whether `bytes` hold a whole answer.
pub fn is_complete(bytes: &[u8]) -> bool {
    bytes.contains(&ETX) || bytes.ends_with(b"\r?\n")
}

/// Decodes one answer.
pub fn parse_frame(bytes: &[u8]) -> Result<Frame, FrameError> {
    let body = match bytes.iter().position(|&b| b == ETX) {
        Some(end) => &bytes[..end],
        None => bytes,
    };
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\r' || b == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    match lines.as_slice() {
        [b"?"] => Ok(Frame::Unrecognized),
        [status] => Ok(Frame::Status(Status::parse(status)?)),
        [weight, status] => Ok(Frame::Weight {
            field: String::from_utf8_lossy(weight).into_owned(),
            status: Status::parse(status)?,
        }),
        _ => Err(FrameError::NotAFrame(
            String::from_utf8_lossy(bytes).into_owned(),
        )),
    }
}

/// A weight field decoded into an exact value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weight {
    pub micrograms: Micrograms,
    /// The display step: one unit of the last printed digit (of the ounces on a pounds and
    /// ounces display).
    pub step: Micrograms,
    pub unit: Unit,
    pub negative: bool,
    pub zero: bool,
}

/// Decodes a weight field such as `0001.25lb`, `-001.25lb`, ` 1234g ` or `  2lb  3.5oz`.
/// `None` when the field holds no number (scales print dashes or carets when over or under
/// capacity) or a unit the plugin does not know.
pub fn parse_weight(field: &str) -> Option<Weight> {
    let pairs = number_unit_pairs(field)?;
    match pairs.as_slice() {
        [(value, unit)] => {
            let unit = Unit::from_symbol(unit)?;
            Some(Weight {
                micrograms: Micrograms::of(*value, unit),
                step: Micrograms::step(value.decimals, unit),
                unit,
                negative: value.negative && !value.is_zero(),
                zero: value.is_zero(),
            })
        }
        [(pounds, "lb"), (ounces, "oz")] if !ounces.negative => {
            // The sign of a pounds-and-ounces display stands before the pounds.
            let ounces = Decimal {
                negative: pounds.negative,
                ..*ounces
            };
            Some(Weight {
                micrograms: Micrograms::of(*pounds, Unit::Pound)
                    .plus(Micrograms::of(ounces, Unit::Ounce))?,
                step: Micrograms::step(ounces.decimals, Unit::Ounce),
                unit: Unit::Pound,
                negative: pounds.negative && !(pounds.is_zero() && ounces.is_zero()),
                zero: pounds.is_zero() && ounces.is_zero(),
            })
        }
        _ => None,
    }
}

/// Splits `  2lb  3.5oz` into `[(2, "lb"), (3.5, "oz")]`.
fn number_unit_pairs(field: &str) -> Option<Vec<(Decimal, &str)>> {
    let mut pairs = Vec::new();
    let mut rest = field.trim();
    while !rest.is_empty() {
        let unit_start = rest.find(|c: char| c.is_ascii_alphabetic())?;
        let unit_end = rest[unit_start..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .map_or(rest.len(), |n| unit_start + n);
        let value = Decimal::parse(&rest[..unit_start])?;
        pairs.push((value, &rest[unit_start..unit_end]));
        rest = rest[unit_end..].trim_start();
    }
    (!pairs.is_empty()).then_some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bits_decode() {
        let s = Status::parse(b"10").unwrap();
        assert!(s.motion && !s.at_zero);
        let s = Status::parse(b"20").unwrap();
        assert!(s.at_zero && !s.motion);
        let s = Status::parse(b"02").unwrap();
        assert!(s.over_capacity && !s.under_capacity);
        let s = Status::parse(b"01").unwrap();
        assert!(s.under_capacity);
        let s = Status::parse(b"4<").unwrap();
        assert!(s.ram_error && s.rom_error && s.calibration_error);
        let s = Status::parse(b"8\x30").unwrap();
        assert!(s.eeprom_error);
        // A third byte follows when the second has bit 6 set.
        let s = Status::parse(b"0\x70\x34").unwrap();
        assert_eq!(s, Status::default());
        // Parity in bit 7 is ignored.
        assert!(Status::parse(&[0xB1, 0x30]).unwrap().motion);
        assert_eq!(Status::parse(b"A0"), Err(FrameError::BadStatusByte(b'A')));
        assert_eq!(Status::parse(b""), Err(FrameError::NoStatus));
    }

    /// Frames as the NCI protocol documents print them.
    #[test]
    fn documented_frames_parse() {
        assert_eq!(
            parse_frame(b"\n0001.25lb\r\n00\r\x03"),
            Ok(Frame::Weight {
                field: "0001.25lb".into(),
                status: Status::default()
            })
        );
        assert_eq!(
            parse_frame(b"\n20\r\x03"),
            Ok(Frame::Status(Status {
                at_zero: true,
                ..Status::default()
            }))
        );
        assert_eq!(parse_frame(b"\n?\r\x03"), Ok(Frame::Unrecognized));
        assert_eq!(parse_frame(b"\r?\n"), Ok(Frame::Unrecognized));
        assert!(matches!(
            parse_frame(b"\na\r\nb\r\nc\r\x03"),
            Err(FrameError::NotAFrame(_))
        ));
    }

    #[test]
    fn answers_are_complete_at_etx() {
        assert!(!is_complete(b"\n0001.25lb\r\n00\r"));
        assert!(is_complete(b"\n0001.25lb\r\n00\r\x03"));
        assert!(is_complete(b"\r?\n"));
    }

    #[test]
    fn weight_fields_decode_exactly() {
        let w = parse_weight("0001.25lb").unwrap();
        assert_eq!(w.micrograms.rounded(), Some(566_990_463));
        assert_eq!(w.step.rounded(), Some(4_535_924));
        assert_eq!(w.unit, Unit::Pound);
        let w = parse_weight("-001.25lb").unwrap();
        assert_eq!(w.micrograms.rounded(), Some(-566_990_463));
        assert!(w.negative);
        let w = parse_weight(" 1234g ").unwrap();
        assert_eq!(w.micrograms.rounded(), Some(1_234_000_000));
        assert_eq!(w.step.rounded(), Some(1_000_000));
        let w = parse_weight("0005.3oz").unwrap();
        assert_eq!(w.micrograms.rounded(), Some(150_252_473));
        let w = parse_weight("012.345kg").unwrap();
        assert_eq!(w.micrograms.rounded(), Some(12_345_000_000));
        let w = parse_weight("0000.00lb").unwrap();
        assert!(w.zero && !w.negative);
    }

    #[test]
    fn pounds_and_ounces_decode_exactly() {
        let w = parse_weight("  2lb  3.5oz").unwrap();
        assert_eq!(w.micrograms.rounded(), Some(1_006_408_071));
        assert_eq!(w.step.rounded(), Some(2_834_952));
        assert_eq!(w.unit, Unit::Pound);
        let w = parse_weight("- 0lb  3.5oz").unwrap();
        assert_eq!(w.micrograms.rounded(), Some(-99_223_331));
        assert!(w.negative);
    }

    #[test]
    fn fields_without_a_number_or_known_unit_are_none() {
        for field in ["^^^^^^^lb", "-------", "", "12.5", "1.0st", "1oz 2lb"] {
            assert_eq!(parse_weight(field), None, "{field:?}");
        }
    }
}
