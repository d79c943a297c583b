//! Decoding of ZPL `^GF` graphic field data: ASCII hex with or without ACS run-length
//! compression, `:Z64:` and `:B64:` base64 fields with their CRC, raw binary (`B`) and
//! compressed binary (`C`).
//!
//! Every function checks the data against the sizes the command announced and says exactly
//! what is wrong, because a simulator that silently pads or truncates would hide the very
//! encoder bugs it exists to catch.

use std::io::Read;

use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
use base64::Engine;
use flate2::read::ZlibDecoder;

/// How a graphic field's data was encoded, as the label metadata names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphicEncoding {
    /// Plain ASCII hex, two digits per byte.
    Hex,
    /// ASCII hex with the alternative compression scheme (repeat counts, `,`, `!`, `:`).
    Acs,
    /// `:Z64:` base64 of zlib-deflated bytes.
    Z64,
    /// `:B64:` base64 of the raw bytes.
    B64,
    /// `^GFB`: raw binary.
    Binary,
    /// `^GFC`: compressed binary.
    CompressedBinary,
}

impl GraphicEncoding {
    /// The name used in label metadata.
    pub fn name(self) -> &'static str {
        match self {
            GraphicEncoding::Hex => "hex",
            GraphicEncoding::Acs => "ACS",
            GraphicEncoding::Z64 => "Z64",
            GraphicEncoding::B64 => "B64",
            GraphicEncoding::Binary => "binary",
            GraphicEncoding::CompressedBinary => "compressed-binary",
        }
    }
}

/// What is wrong with a graphic field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphicError {
    /// `c` is not a whole number of rows of `d` bytes, or a size is zero.
    #[error("^GF sizes do not fit: total {total} bytes is not a positive multiple of {bytes_per_row} bytes per row")]
    Sizes {
        /// Parameter `c`.
        total: usize,
        /// Parameter `d`.
        bytes_per_row: usize,
    },
    /// An image too large for any label stock.
    #[error("^GF image of {0} bytes is larger than the simulator accepts")]
    TooLarge(usize),
    /// A character that is neither hex nor an ACS code.
    #[error("unexpected character {found:?} at offset {offset} of the ^GF hex data")]
    BadCharacter {
        /// The character.
        found: char,
        /// Its offset in the data field.
        offset: usize,
    },
    /// An ACS repeat count not followed by a hex digit.
    #[error("ACS repeat count at offset {offset} is not followed by a hex digit")]
    DanglingCount {
        /// Offset of the character that ended the count.
        offset: usize,
    },
    /// `:` with no previous row, or in the middle of a row.
    #[error("ACS ':' at offset {offset} {why}")]
    BadRowRepeat {
        /// Offset of the `:`.
        offset: usize,
        /// Why it cannot repeat a row.
        why: &'static str,
    },
    /// The data ended before the announced image size.
    #[error("^GF data ends after {got} of {expected} image bytes")]
    Short {
        /// Bytes decoded.
        got: usize,
        /// Parameter `c`.
        expected: usize,
    },
    /// Base64 or decompressed data of the wrong size.
    #[error("^GF {encoding} data decodes to {got} bytes, but the field announces {expected}")]
    SizeMismatch {
        /// Encoding name.
        encoding: &'static str,
        /// Bytes decoded.
        got: usize,
        /// Parameter `c`.
        expected: usize,
    },
    /// A `:Z64:`/`:B64:` field without the `:CRC` trailer.
    #[error("^GF {encoding} field has no ':' CRC trailer")]
    MissingCrc {
        /// Encoding name.
        encoding: &'static str,
    },
    /// The CRC trailer is not four hex digits.
    #[error("^GF {encoding} CRC {text:?} is not four hex digits")]
    MalformedCrc {
        /// Encoding name.
        encoding: &'static str,
        /// The trailer as received.
        text: String,
    },
    /// The CRC does not match the base64 text.
    #[error("^GF {encoding} CRC mismatch: field says {stated:04X}, data gives {computed:04X}")]
    CrcMismatch {
        /// Encoding name.
        encoding: &'static str,
        /// CRC in the trailer.
        stated: u16,
        /// CRC-16/XMODEM of the base64 text.
        computed: u16,
    },
    /// `b` does not match the length of the `:Z64:`/`:B64:` field.
    #[error("^GF {encoding} byte count {stated} does not match the {actual}-byte field")]
    FieldLength {
        /// Encoding name.
        encoding: &'static str,
        /// Parameter `b`.
        stated: usize,
        /// Length of `:Z64:...:CRC`.
        actual: usize,
    },
    /// Base64 that does not decode.
    #[error("^GF {encoding} base64 is invalid: {reason}")]
    Base64 {
        /// Encoding name.
        encoding: &'static str,
        /// The decoder's reason.
        reason: String,
    },
    /// zlib data that does not inflate.
    #[error("^GF {encoding} zlib data is invalid: {reason}")]
    Inflate {
        /// Encoding name.
        encoding: &'static str,
        /// The inflater's reason.
        reason: String,
    },
    /// `^GFB` whose byte count differs from the image size.
    #[error("^GFB sends {stated} bytes for an image of {expected} bytes")]
    BinaryCount {
        /// Parameter `b`.
        stated: usize,
        /// Parameter `c`.
        expected: usize,
    },
}

/// The largest image the simulator decodes: far above a 4 x 12 inch label at 600 dpi, low
/// enough that a hostile size cannot exhaust memory.
pub const MAX_GRAPHIC_BYTES: usize = 16 * 1024 * 1024;

/// CRC-16/XMODEM: polynomial 0x1021, initial value 0, no reflection, no final XOR. ZPL uses it
/// over the base64 text of `:Z64:` and `:B64:` fields.
pub fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Checks `c` and `d` before any data is decoded.
pub fn check_sizes(total: usize, bytes_per_row: usize) -> Result<(), GraphicError> {
    if total == 0 || bytes_per_row == 0 || !total.is_multiple_of(bytes_per_row) {
        return Err(GraphicError::Sizes {
            total,
            bytes_per_row,
        });
    }
    if total > MAX_GRAPHIC_BYTES {
        return Err(GraphicError::TooLarge(total));
    }
    Ok(())
}

/// Decodes the data of `^GFA`: `:Z64:`/`:B64:` fields, or hex with optional ACS.
/// `stated` is parameter `b`, checked against the field length for base64 fields.
pub fn decode_ascii(
    field: &[u8],
    stated: usize,
    total: usize,
    bytes_per_row: usize,
) -> Result<(Vec<u8>, GraphicEncoding), GraphicError> {
    check_sizes(total, bytes_per_row)?;
    let field = field.trim_ascii();
    if let Some(body) = field.strip_prefix(b":Z64:") {
        let data = decode_base64_field(body, GraphicEncoding::Z64, field.len(), stated)?;
        let raw = inflate(&data, total, GraphicEncoding::Z64)?;
        return Ok((raw, GraphicEncoding::Z64));
    }
    if let Some(body) = field.strip_prefix(b":B64:") {
        let raw = decode_base64_field(body, GraphicEncoding::B64, field.len(), stated)?;
        if raw.len() != total {
            return Err(GraphicError::SizeMismatch {
                encoding: GraphicEncoding::B64.name(),
                got: raw.len(),
                expected: total,
            });
        }
        return Ok((raw, GraphicEncoding::B64));
    }
    expand_acs(field, total, bytes_per_row)
}

/// Decodes `^GFB` data: exactly the image bytes.
pub fn decode_binary(
    data: &[u8],
    total: usize,
    bytes_per_row: usize,
) -> Result<Vec<u8>, GraphicError> {
    check_sizes(total, bytes_per_row)?;
    if data.len() != total {
        return Err(GraphicError::BinaryCount {
            stated: data.len(),
            expected: total,
        });
    }
    Ok(data.to_vec())
}

/// Decodes `^GFC` data. Zebra documents the compression only as "Zebra's compression
/// algorithm"; the simulator takes it to be the zlib (LZ77) stream that `:Z64:` also carries,
/// sent as raw bytes instead of base64.
pub fn decode_compressed_binary(
    data: &[u8],
    total: usize,
    bytes_per_row: usize,
) -> Result<Vec<u8>, GraphicError> {
    check_sizes(total, bytes_per_row)?;
    inflate(data, total, GraphicEncoding::CompressedBinary)
}

fn decode_base64_field(
    body: &[u8],
    encoding: GraphicEncoding,
    field_length: usize,
    stated: usize,
) -> Result<Vec<u8>, GraphicError> {
    let name = encoding.name();
    let colon = body
        .iter()
        .rposition(|&b| b == b':')
        .ok_or(GraphicError::MissingCrc { encoding: name })?;
    let (text, trailer) = (&body[..colon], &body[colon + 1..]);
    let stated_crc = parse_crc(trailer).ok_or_else(|| GraphicError::MalformedCrc {
        encoding: name,
        text: String::from_utf8_lossy(trailer).into_owned(),
    })?;
    let computed = crc16_xmodem(text);
    if stated_crc != computed {
        return Err(GraphicError::CrcMismatch {
            encoding: name,
            stated: stated_crc,
            computed,
        });
    }
    if stated != field_length {
        return Err(GraphicError::FieldLength {
            encoding: name,
            stated,
            actual: field_length,
        });
    }
    // Zebra's own tools sometimes leave out the `=` padding, so padding is optional here.
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    engine.decode(text).map_err(|error| GraphicError::Base64 {
        encoding: name,
        reason: error.to_string(),
    })
}

fn parse_crc(trailer: &[u8]) -> Option<u16> {
    if trailer.len() != 4 || !trailer.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let text = std::str::from_utf8(trailer).ok()?;
    u16::from_str_radix(text, 16).ok()
}

fn inflate(data: &[u8], total: usize, encoding: GraphicEncoding) -> Result<Vec<u8>, GraphicError> {
    let mut raw = Vec::with_capacity(total);
    // Reading one byte past the announced size is enough to tell "too long" without letting
    // a small hostile stream inflate without bound.
    ZlibDecoder::new(data)
        .take(total as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|error| GraphicError::Inflate {
            encoding: encoding.name(),
            reason: error.to_string(),
        })?;
    if raw.len() != total {
        return Err(GraphicError::SizeMismatch {
            encoding: encoding.name(),
            got: raw.len(),
            expected: total,
        });
    }
    Ok(raw)
}

/// Expands ASCII hex with ACS codes into `total` image bytes of `bytes_per_row` bytes a row.
/// CR, LF, spaces and tabs are ignored; digits after the image is complete are ignored, as
/// the ZPL manual specifies.
pub fn expand_acs(
    text: &[u8],
    total: usize,
    bytes_per_row: usize,
) -> Result<(Vec<u8>, GraphicEncoding), GraphicError> {
    check_sizes(total, bytes_per_row)?;
    let nibbles_per_row = bytes_per_row * 2;
    let mut image: Vec<u8> = Vec::with_capacity(total);
    // The row being assembled, one nibble per element.
    let mut row: Vec<u8> = Vec::with_capacity(nibbles_per_row);
    let mut count: usize = 0;
    let mut compressed = false;

    // Completes `row` into `image` when it is full; returns whether the image is complete.
    fn flush_row(
        row: &mut Vec<u8>,
        image: &mut Vec<u8>,
        nibbles_per_row: usize,
        total: usize,
    ) -> bool {
        if row.len() == nibbles_per_row {
            image.extend(row.chunks(2).map(|pair| (pair[0] << 4) | pair[1]));
            row.clear();
        }
        image.len() >= total
    }

    for (offset, &byte) in text.iter().enumerate() {
        if image.len() >= total {
            break;
        }
        match byte {
            b'\r' | b'\n' | b' ' | b'\t' => {}
            b'G'..=b'Y' => {
                count += usize::from(byte - b'F');
                compressed = true;
            }
            b'g'..=b'z' => {
                count += usize::from(byte - b'f') * 20;
                compressed = true;
            }
            b'0'..=b'9' | b'A'..=b'F' | b'a'..=b'f' => {
                let nibble = hex_value(byte);
                let mut repeat = count.max(1);
                count = 0;
                while repeat > 0 {
                    let room = nibbles_per_row - row.len();
                    let take = room.min(repeat);
                    row.extend(std::iter::repeat_n(nibble, take));
                    repeat -= take;
                    if flush_row(&mut row, &mut image, nibbles_per_row, total) {
                        break;
                    }
                }
            }
            b',' | b'!' => {
                if count != 0 {
                    return Err(GraphicError::DanglingCount { offset });
                }
                compressed = true;
                let fill = if byte == b',' { 0x0 } else { 0xF };
                row.resize(nibbles_per_row, fill);
                flush_row(&mut row, &mut image, nibbles_per_row, total);
            }
            b':' => {
                if count != 0 {
                    return Err(GraphicError::DanglingCount { offset });
                }
                compressed = true;
                if !row.is_empty() {
                    return Err(GraphicError::BadRowRepeat {
                        offset,
                        why: "is in the middle of a row",
                    });
                }
                let Some(start) = image.len().checked_sub(bytes_per_row) else {
                    return Err(GraphicError::BadRowRepeat {
                        offset,
                        why: "has no previous row to repeat",
                    });
                };
                image.extend_from_within(start..start + bytes_per_row);
            }
            other => {
                return Err(GraphicError::BadCharacter {
                    found: char::from(other),
                    offset,
                })
            }
        }
    }
    if count != 0 {
        return Err(GraphicError::DanglingCount { offset: text.len() });
    }
    if image.len() < total {
        return Err(GraphicError::Short {
            got: image.len(),
            expected: total,
        });
    }
    image.truncate(total);
    let encoding = if compressed {
        GraphicEncoding::Acs
    } else {
        GraphicEncoding::Hex
    };
    Ok((image, encoding))
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'A'..=b'F' => digit - b'A' + 10,
        _ => digit - b'a' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_xmodem_matches_the_check_value() {
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }

    #[test]
    fn acs_counts_add_and_fill_codes_complete_rows() {
        // Row 1: "hIF" = (40 + 3) x F, then "0" is nibble 44 of 44 (22 bytes per row).
        // Row 2: ","; row 3: "!"; row 4: ":" repeats row 3.
        let (image, encoding) = expand_acs(b"hIF0\n,\n!\n:", 88, 22).expect("valid ACS");
        assert_eq!(encoding, GraphicEncoding::Acs);
        let mut expected = vec![0xFF; 21];
        expected.push(0xF0);
        expected.extend([0x00; 22]);
        expected.extend([0xFF; 44]);
        assert_eq!(image, expected);
    }

    #[test]
    fn acs_count_order_does_not_matter() {
        // The ZPL manual's example: "vMB" and "MvB" both mean 320 + 7 = 327 x B.
        let expected = expand_acs(&[b'B'; 328][..], 164, 164).expect("plain hex").0;
        let mut with_tail = b"vMB".to_vec();
        with_tail.push(b'B');
        assert_eq!(expand_acs(&with_tail, 164, 164).expect("vMB").0, expected);
        with_tail[..3].copy_from_slice(b"MvB");
        assert_eq!(expand_acs(&with_tail, 164, 164).expect("MvB").0, expected);
    }

    #[test]
    fn plain_hex_is_reported_as_hex() {
        let (image, encoding) = expand_acs(b"00ff\r\n8001", 4, 2).expect("valid hex");
        assert_eq!(encoding, GraphicEncoding::Hex);
        assert_eq!(image, vec![0x00, 0xFF, 0x80, 0x01]);
    }

    #[test]
    fn repeat_of_missing_row_is_an_error() {
        assert!(matches!(
            expand_acs(b":", 2, 1),
            Err(GraphicError::BadRowRepeat { .. })
        ));
    }

    #[test]
    fn short_hex_is_an_error() {
        assert_eq!(
            expand_acs(b"FF", 2, 1),
            Err(GraphicError::Short {
                got: 1,
                expected: 2
            })
        );
    }
}
