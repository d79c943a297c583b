//! ZPL II encoder: turns a label bitmap into one complete label format (`^XA ... ^XZ`).
//!
//! The image travels in a single `^GFA` graphic field, compressed one of two ways:
//!
//! - **ACS**, Zebra's "alternative compression scheme": hexadecimal text where runs of one hex
//!   digit are written as a repeat count (`G`..`Y` = 1..19, `g`..`z` = 20..400) followed by the
//!   digit, `,` fills the rest of a row with `0`, `!` fills it with `F`, and `:` repeats the
//!   previous row. Every ZPL II firmware understands it.
//! - **Z64**: `:Z64:` + base64(zlib(raw bitmap)) + `:` + CRC-16/XMODEM of the base64 text as four
//!   upper-case hex digits. It is usually far smaller for photographs and dithered images.
//!
//! With [`ZplCompression::Auto`] both are produced and the smaller is sent, label by label.
//! The encoder performs no I/O: the bytes it returns are written to the printer by the caller.

use std::fmt::Write as _;
use std::io::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use thiserror::Error;

use crate::bitmap::{Bitmap, BitmapError};

/// Largest quantity `^PQ` accepts.
pub const MAX_COPIES: u32 = 99_999_999;

/// How the graphic field's data is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZplCompression {
    /// `:Z64:` zlib + base64 with a CRC.
    Z64,
    /// ASCII hex with ACS run-length codes.
    Acs,
    /// Encode both and send whichever is shorter (ACS wins a tie, as older firmware reads it).
    #[default]
    Auto,
}

/// Print darkness. Zebra offers an absolute setting and a per-format adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Darkness {
    /// `~SD{nn}`: absolute darkness 0..=30, sent just before the format.
    Absolute(u8),
    /// `^MD{n}`: adjustment -30..=30 added to the printer's configured darkness for this format.
    Relative(i8),
}

/// How the printer finds the start of the next label (`^MN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTracking {
    /// `^MNY`: non-continuous media with a web (gap) or notch between labels.
    Gap,
    /// `^MNM`: non-continuous media with a black mark on the back.
    BlackMark,
    /// `^MNN`: continuous media; the label length comes from `^LL`.
    Continuous,
}

/// What the printer does with a label once printed (`^MM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrintMode {
    /// `^MMT`: feed the label to the tear bar.
    TearOff,
    /// `^MMP`: peel the label off its liner.
    PeelOff,
    /// `^MMC`: cut after each label (needs a cutter).
    Cutter,
    /// `^MMR`: rewind the printed labels.
    Rewind,
}

/// Settings for one ZPL label job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZplOptions {
    /// Number of copies printed (`^PQ`), 1..=99,999,999.
    pub copies: u32,
    /// Graphic field compression.
    pub compression: ZplCompression,
    /// Print darkness, or `None` to keep the printer's setting.
    pub darkness: Option<Darkness>,
    /// Print speed in inches per second (`^PR`), 1..=14, or `None` to keep the printer's setting.
    pub speed_ips: Option<u8>,
    /// Media tracking, or `None` to keep the printer's setting.
    pub media: Option<MediaTracking>,
    /// Post-print action, or `None` to keep the printer's setting.
    pub print_mode: Option<PrintMode>,
}

impl Default for ZplOptions {
    fn default() -> Self {
        ZplOptions {
            copies: 1,
            compression: ZplCompression::Auto,
            darkness: None,
            speed_ips: None,
            media: None,
            print_mode: None,
        }
    }
}

/// Why a ZPL label could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ZplError {
    /// The bitmap's dimensions and data disagree.
    #[error("invalid label bitmap")]
    Bitmap(#[from] BitmapError),
    /// An option lies outside the range the printer accepts.
    #[error("ZPL option {option} = {value} is outside {min}..={max}")]
    OptionOutOfRange {
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: i64,
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
}

/// Encodes `label` as one complete ZPL II label format.
///
/// Layout: `[~SDnn]^XA[^MNx][^MMx][^PRn][^MDn]^PW{w}^LL{h}^LH0,0^FO0,0^GFA,{b},{c},{d},{data}^FS^PQ{copies},0,1,Y^XZ`.
///
/// Fails with [`ZplError::Bitmap`] when the bitmap's data does not match its dimensions and
/// with [`ZplError::OptionOutOfRange`] when an option is outside what the printer accepts.
pub fn encode_zpl(label: &Bitmap, opts: &ZplOptions) -> Result<Vec<u8>, ZplError> {
    label.validate()?;
    check_range("copies", i64::from(opts.copies), 1, i64::from(MAX_COPIES))?;
    if let Some(speed) = opts.speed_ips {
        check_range("speed_ips", i64::from(speed), 1, 14)?;
    }
    match opts.darkness {
        Some(Darkness::Absolute(level)) => check_range("darkness", i64::from(level), 0, 30)?,
        Some(Darkness::Relative(delta)) => check_range("darkness", i64::from(delta), -30, 30)?,
        None => {}
    }

    let field = graphic_field(label, opts.compression);

    let mut out = String::with_capacity(field.text.len() + 128);
    // `~SD` is a tilde command: the printer acts on it as soon as it arrives, so it goes before
    // the format it should apply to.
    if let Some(Darkness::Absolute(level)) = opts.darkness {
        push_fmt(&mut out, format_args!("~SD{level:02}"));
    }
    out.push_str("^XA");
    if let Some(media) = opts.media {
        out.push_str(match media {
            MediaTracking::Gap => "^MNY",
            MediaTracking::BlackMark => "^MNM",
            MediaTracking::Continuous => "^MNN",
        });
    }
    if let Some(mode) = opts.print_mode {
        out.push_str(match mode {
            PrintMode::TearOff => "^MMT",
            PrintMode::PeelOff => "^MMP",
            PrintMode::Cutter => "^MMC",
            PrintMode::Rewind => "^MMR",
        });
    }
    if let Some(speed) = opts.speed_ips {
        push_fmt(&mut out, format_args!("^PR{speed}"));
    }
    if let Some(Darkness::Relative(delta)) = opts.darkness {
        push_fmt(&mut out, format_args!("^MD{delta}"));
    }
    push_fmt(
        &mut out,
        format_args!(
            "^PW{}^LL{}^LH0,0^FO0,0^GFA,{},{},{},",
            label.width,
            label.height,
            field.byte_count,
            label.data.len(),
            label.bytes_per_row()
        ),
    );
    out.push_str(&field.text);
    push_fmt(&mut out, format_args!("^FS^PQ{},0,1,Y^XZ", opts.copies));
    Ok(out.into_bytes())
}

/// The data part of a `^GFA` command and the byte count (`b`) that announces it.
#[derive(Debug)]
struct GraphicField {
    text: String,
    byte_count: usize,
}

fn graphic_field(label: &Bitmap, compression: ZplCompression) -> GraphicField {
    // For ACS data the guide asks for `b` to equal the uncompressed size `c`; for Z64 it is the
    // length of the whole `:Z64:...:CRC` text.
    let acs = || GraphicField {
        text: encode_acs(label),
        byte_count: label.data.len(),
    };
    let z64 = || {
        let text = encode_z64(label);
        GraphicField {
            byte_count: text.len(),
            text,
        }
    };
    match compression {
        ZplCompression::Acs => acs(),
        ZplCompression::Z64 => z64(),
        ZplCompression::Auto => {
            let acs = acs();
            let z64 = z64();
            if z64.text.len() < acs.text.len() {
                z64
            } else {
                acs
            }
        }
    }
}

/// Encodes the bitmap as ACS-compressed hexadecimal text (the data of a `^GFA` field).
///
/// Padding bits after the last dot of each row are sent as white. The bitmap must be valid
/// (see [`Bitmap::validate`]).
pub fn encode_acs(label: &Bitmap) -> String {
    let mut out = String::new();
    let mut previous: Option<Vec<u8>> = None;
    let mut nibbles = Vec::with_capacity(label.bytes_per_row() * 2);
    for row in label.clean_rows() {
        if previous.as_ref() == Some(&row) {
            out.push(':');
            continue;
        }
        nibbles.clear();
        nibbles.extend(row.iter().flat_map(|byte| [byte >> 4, byte & 0x0F]));
        encode_acs_row(&nibbles, &mut out);
        previous = Some(row);
    }
    out
}

/// Encodes one row given as hex digit values (0..=15).
fn encode_acs_row(nibbles: &[u8], out: &mut String) {
    let mut i = 0;
    while i < nibbles.len() {
        let digit = nibbles[i];
        let run = nibbles[i..].iter().take_while(|&&n| n == digit).count();
        let reaches_end = i + run == nibbles.len();
        if reaches_end && (digit == 0x0 || digit == 0xF) {
            // `,` and `!` are only used on a byte boundary: the programming guide's own examples
            // write an odd trailing zero out before the comma, and some firmware fills whole
            // bytes, so a fill that starts mid-byte is not portable.
            if i % 2 == 1 {
                out.push(hex_digit(digit));
                if run == 1 {
                    // That digit completed the row: a fill now would be read as a whole new row.
                    return;
                }
            }
            out.push(if digit == 0 { ',' } else { '!' });
            return;
        }
        push_run(digit, run, out);
        i += run;
    }
}

/// Writes `count` copies of one hex digit, using repeat codes when they are shorter.
fn push_run(digit: u8, mut count: usize, out: &mut String) {
    let symbol = hex_digit(digit);
    while count > 0 {
        // One repeat group covers at most 400 digits (`z`); longer runs take several groups.
        let chunk = count.min(400);
        if chunk <= 2 {
            // Writing one or two digits out costs no more than a repeat code.
            for _ in 0..chunk {
                out.push(symbol);
            }
        } else {
            let (twenties, units) = (chunk / 20, chunk % 20);
            if twenties > 0 {
                // `g` = 20 .. `z` = 400; `twenties` is 1..=20 here.
                out.push(char::from(b'f' + twenties as u8));
            }
            if units > 0 {
                // `G` = 1 .. `Y` = 19.
                out.push(char::from(b'F' + units as u8));
            }
            out.push(symbol);
        }
        count -= chunk;
    }
}

fn hex_digit(value: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(value & 0x0F)])
}

/// Encodes the bitmap as a complete `:Z64:<base64>:<CRC>` field.
///
/// The zlib stream is compressed at zlib's default level 6: on a 4x6 in label at 203 dpi it
/// costs about 0.5 ms against 2.3 ms at the best level, for about 15 % more bytes (5.7 KB
/// against 4.9 KB), which even a slow USB link sends in a few milliseconds.
/// Padding bits are sent as white.
pub fn encode_z64(label: &Bitmap) -> String {
    let mut encoder = ZlibEncoder::new(
        Vec::with_capacity(label.data.len() / 4),
        Compression::default(),
    );
    for row in label.clean_rows() {
        encoder
            .write_all(&row)
            .expect("compressing into a Vec in memory cannot fail");
    }
    let compressed = encoder
        .finish()
        .expect("compressing into a Vec in memory cannot fail");
    let text = BASE64.encode(compressed);
    let crc = crc16_xmodem(text.as_bytes());
    format!(":Z64:{text}:{crc:04X}")
}

/// CRC-16/XMODEM: polynomial 0x1021, initial value 0, no reflection, no final XOR.
///
/// This is the checksum `:Z64:` and `:B64:` fields carry, computed over the base64 text.
pub fn crc16_xmodem(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ CRC16_XMODEM_TABLE[usize::from((crc >> 8) as u8 ^ byte)]
    })
}

/// Byte-at-a-time table for [`crc16_xmodem`], built at compile time.
const CRC16_XMODEM_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = (index as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
};

fn check_range(option: &'static str, value: i64, min: i64, max: i64) -> Result<(), ZplError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ZplError::OptionOutOfRange {
            option,
            value,
            min,
            max,
        })
    }
}

fn push_fmt(out: &mut String, args: std::fmt::Arguments<'_>) {
    out.write_fmt(args)
        .expect("formatting into a String cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read as _;

    /// An ACS decoder written for the tests from the programming guide's description, sharing
    /// nothing with the encoder, so that a round trip checks the encoder against the format.
    fn decode_acs(text: &str, bytes_per_row: usize) -> Result<Vec<u8>, String> {
        let digits_per_row = bytes_per_row * 2;
        let mut rows: Vec<Vec<u8>> = Vec::new();
        let mut current: Vec<u8> = Vec::new();
        let mut repeat = 0usize;
        for (position, c) in text.chars().enumerate() {
            match c {
                'G'..='Y' => repeat += c as usize - 'F' as usize,
                'g'..='z' => repeat += (c as usize - 'f' as usize) * 20,
                '0'..='9' | 'A'..='F' | 'a'..='f' => {
                    let value = c.to_digit(16).ok_or("not a hex digit")? as u8;
                    for _ in 0..repeat.max(1) {
                        current.push(value);
                    }
                    repeat = 0;
                }
                ',' | '!' => {
                    if repeat != 0 {
                        return Err(format!("fill after a repeat count at {position}"));
                    }
                    let fill = if c == ',' { 0 } else { 15 };
                    if current.len() > digits_per_row {
                        return Err(format!("row overflow before fill at {position}"));
                    }
                    current.resize(digits_per_row, fill);
                }
                ':' => {
                    if !current.is_empty() || repeat != 0 {
                        return Err(format!("':' in the middle of a row at {position}"));
                    }
                    let previous = rows.last().ok_or("':' before the first row")?.clone();
                    current = previous;
                }
                other => return Err(format!("unexpected {other:?} at {position}")),
            }
            if current.len() > digits_per_row {
                return Err(format!(
                    "row longer than {digits_per_row} digits at {position}"
                ));
            }
            if current.len() == digits_per_row {
                rows.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() || repeat != 0 {
            return Err("text ends in the middle of a row".to_string());
        }
        Ok(rows
            .concat()
            .chunks(2)
            .map(|pair| (pair[0] << 4) | pair[1])
            .collect())
    }

    /// Splits a `:Z64:` field, checks its CRC and returns the inflated bitmap bytes.
    fn decode_z64(field: &str) -> Vec<u8> {
        let body = field
            .strip_prefix(":Z64:")
            .expect("field starts with :Z64:");
        let (text, crc) = body.rsplit_once(':').expect("field has a CRC part");
        assert_eq!(crc.len(), 4);
        assert!(crc
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
        assert_eq!(
            u16::from_str_radix(crc, 16),
            Ok(crc16_xmodem(text.as_bytes()))
        );
        let compressed = BASE64.decode(text).expect("valid base64");
        let mut raw = Vec::new();
        ZlibDecoder::new(compressed.as_slice())
            .read_to_end(&mut raw)
            .expect("valid zlib stream");
        raw
    }

    /// A small deterministic pseudo-random generator (xorshift) for noisy test images.
    fn noise(len: usize, mut state: u32) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            })
            .collect()
    }

    fn field_of(label: &[u8]) -> String {
        let text = String::from_utf8(label.to_vec()).expect("ZPL is ASCII");
        let start = text.find("^GFA,").expect("label has a ^GFA field") + 5;
        let end = text.find("^FS").expect("label has ^FS");
        // Skip the `b,c,d,` parameters that precede the data.
        text[start..end]
            .splitn(4, ',')
            .nth(3)
            .expect("four parameters")
            .to_string()
    }

    #[test]
    fn crc16_xmodem_check_value() {
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(crc16_xmodem(b""), 0x0000);
        assert_eq!(crc16_xmodem(b"A"), 0x58E5);
    }

    #[test]
    fn repeat_codes_follow_the_guide_examples() {
        // "M6" sends seven 6s, "hB" sends forty Bs, and counts add up ("vMB" = 327 Bs).
        let mut out = String::new();
        push_run(0x6, 7, &mut out);
        assert_eq!(out, "M6");
        out.clear();
        push_run(0xB, 40, &mut out);
        assert_eq!(out, "hB");
        out.clear();
        push_run(0xB, 327, &mut out);
        assert_eq!(out, "vMB");
        out.clear();
        push_run(0xA, 43, &mut out);
        assert_eq!(out, "hIA");
        out.clear();
        push_run(0x1, 400, &mut out);
        assert_eq!(out, "z1");
        out.clear();
        // Beyond 400 a second group follows.
        push_run(0x1, 421, &mut out);
        assert_eq!(out, "z1gG1");
        out.clear();
        push_run(0x3, 2, &mut out);
        assert_eq!(out, "33");
        out.clear();
        push_run(0x3, 3, &mut out);
        assert_eq!(out, "I3");
    }

    #[test]
    fn acs_triangle_from_the_guide() {
        // The guide's triangle, 6 bytes per row: F0..., FF..., FFF0..., FFFFF0..., FFFFFF...
        let data = [
            0xF0, 0, 0, 0, 0, 0, //
            0xFF, 0, 0, 0, 0, 0, //
            0xFF, 0xF0, 0, 0, 0, 0, //
            0xFF, 0xFF, 0xF0, 0, 0, 0, //
            0xFF, 0xFF, 0xFF, 0, 0, 0, //
        ];
        let bitmap = Bitmap::new(48, 5, &data).expect("valid bitmap");
        assert_eq!(encode_acs(&bitmap), "F0,FF,IF0,KF0,LF,");
        // The guide's own condensed form decodes to the same bytes.
        assert_eq!(
            decode_acs(
                "F0,\nFF,\nFFF0,\nFFFFF0,\nFFFFFF,"
                    .replace('\n', "")
                    .as_str(),
                6
            ),
            Ok(data.to_vec())
        );
    }

    #[test]
    fn acs_uses_fills_and_row_repeats() {
        // Row 1 all white, row 2 all black, row 3 equal to row 2, row 4 black then white,
        // row 5 white then black.
        let data = [
            0x00, 0x00, 0x00, 0x00, //
            0xFF, 0xFF, 0xFF, 0xFF, //
            0xFF, 0xFF, 0xFF, 0xFF, //
            0xFF, 0x00, 0x00, 0x00, //
            0x00, 0x0F, 0xFF, 0xFF, //
        ];
        let bitmap = Bitmap::new(32, 5, &data).expect("valid bitmap");
        assert_eq!(encode_acs(&bitmap), ",!:FF,I0F!");
    }

    #[test]
    fn acs_fill_never_starts_mid_byte() {
        // In 0x10 0x00 the zero run starts on an odd digit, so one 0 is written before the
        // comma; likewise for the F run of 0x1F 0xFF before the exclamation mark.
        let data = [0x1F, 0xFF, 0x10, 0x00];
        let bitmap = Bitmap::new(16, 2, &data).expect("valid bitmap");
        assert_eq!(encode_acs(&bitmap), "1F!10,");
    }

    #[test]
    fn acs_sends_padding_bits_as_white() {
        // 12 dots wide: the low nibble of each row's second byte is padding. That 0 digit
        // completes its row, so no fill follows it: a fill there would add a white row.
        let data = [0xFF, 0xFF, 0xAB, 0xCD];
        let bitmap = Bitmap::new(12, 2, &data).expect("valid bitmap");
        let text = encode_acs(&bitmap);
        assert_eq!(text, "IF0ABC0");
        assert_eq!(decode_acs(&text, 2), Ok(vec![0xFF, 0xF0, 0xAB, 0xC0]));
    }

    #[test]
    fn acs_round_trips_varied_images() {
        let widths = [1u32, 7, 8, 9, 100, 203, 812, 3300];
        for (seed, &width) in widths.iter().enumerate() {
            let bytes_per_row = (width as usize).div_ceil(8);
            let height = 40;
            let mut data = noise(bytes_per_row * height, seed as u32 + 1);
            // Mix in structure: blank rows, repeated rows, long runs and dense noise.
            for row in 0..height {
                let line = &mut data[row * bytes_per_row..(row + 1) * bytes_per_row];
                match row % 5 {
                    0 => line.fill(0),
                    1 => line.fill(0xFF),
                    2 => line[..bytes_per_row / 2].fill(0x0F),
                    _ => {}
                }
            }
            let copy = data[2 * bytes_per_row..3 * bytes_per_row].to_vec();
            data[3 * bytes_per_row..4 * bytes_per_row].copy_from_slice(&copy);
            let bitmap = Bitmap::new(width, height as u32, &data).expect("valid bitmap");
            let expected: Vec<u8> = bitmap.clean_rows().flatten().collect();
            let text = encode_acs(&bitmap);
            assert_eq!(
                decode_acs(&text, bytes_per_row),
                Ok(expected),
                "width {width}"
            );
        }
    }

    #[test]
    fn acs_round_trips_rows_longer_than_one_repeat_group() {
        // 3304 dots = 413 bytes = 826 digits per row: one run needs three groups.
        let data = vec![0xAA; 413 * 2];
        let bitmap = Bitmap::new(3304, 2, &data).expect("valid bitmap");
        let text = encode_acs(&bitmap);
        assert_eq!(text, "zAzAgLA:");
        assert_eq!(decode_acs(&text, 413), Ok(data));
    }

    #[test]
    fn z64_round_trips_and_carries_a_valid_crc() {
        let mut data = noise(102 * 300, 7);
        data[..102 * 100].fill(0);
        let bitmap = Bitmap::new(812, 300, &data).expect("valid bitmap");
        let expected: Vec<u8> = bitmap.clean_rows().flatten().collect();
        let field = encode_z64(&bitmap);
        assert!(
            decode_z64(&field) == expected,
            "Z64 round trip changed the image"
        );
    }

    #[test]
    fn z64_clears_padding_bits() {
        let data = [0xFF; 4];
        let bitmap = Bitmap::new(9, 2, &data).expect("valid bitmap");
        assert_eq!(
            decode_z64(&encode_z64(&bitmap)),
            vec![0xFF, 0x80, 0xFF, 0x80]
        );
    }

    #[test]
    fn acs_label_is_byte_exact() {
        // 16 x 3 dots: a black bar across the middle row.
        let data = [0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00];
        let bitmap = Bitmap::new(16, 3, &data).expect("valid bitmap");
        let options = ZplOptions {
            copies: 2,
            compression: ZplCompression::Acs,
            ..ZplOptions::default()
        };
        let label = encode_zpl(&bitmap, &options).expect("valid label");
        assert_eq!(
            String::from_utf8(label).expect("ASCII"),
            "^XA^PW16^LL3^LH0,0^FO0,0^GFA,6,6,2,,!,^FS^PQ2,0,1,Y^XZ"
        );
    }

    #[test]
    fn z64_label_announces_the_field_length() {
        let data = [0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00];
        let bitmap = Bitmap::new(16, 3, &data).expect("valid bitmap");
        let options = ZplOptions {
            compression: ZplCompression::Z64,
            ..ZplOptions::default()
        };
        let label =
            String::from_utf8(encode_zpl(&bitmap, &options).expect("valid label")).expect("ASCII");
        let field = field_of(label.as_bytes());
        let expected_head = format!("^XA^PW16^LL3^LH0,0^FO0,0^GFA,{},6,2,:Z64:", field.len());
        assert!(label.starts_with(&expected_head), "{label}");
        assert!(label.ends_with("^FS^PQ1,0,1,Y^XZ"), "{label}");
        assert_eq!(decode_z64(&field), data);
    }

    #[test]
    fn settings_appear_in_order_inside_the_format() {
        let data = [0x80];
        let bitmap = Bitmap::new(1, 1, &data).expect("valid bitmap");
        let options = ZplOptions {
            copies: 1,
            compression: ZplCompression::Acs,
            darkness: Some(Darkness::Relative(-5)),
            speed_ips: Some(4),
            media: Some(MediaTracking::Continuous),
            print_mode: Some(PrintMode::TearOff),
        };
        let label = encode_zpl(&bitmap, &options).expect("valid label");
        assert_eq!(
            String::from_utf8(label).expect("ASCII"),
            "^XA^MNN^MMT^PR4^MD-5^PW1^LL1^LH0,0^FO0,0^GFA,1,1,1,80^FS^PQ1,0,1,Y^XZ"
        );

        let options = ZplOptions {
            darkness: Some(Darkness::Absolute(8)),
            media: Some(MediaTracking::Gap),
            compression: ZplCompression::Acs,
            ..ZplOptions::default()
        };
        let label = encode_zpl(&bitmap, &options).expect("valid label");
        assert_eq!(
            String::from_utf8(label).expect("ASCII"),
            "~SD08^XA^MNY^PW1^LL1^LH0,0^FO0,0^GFA,1,1,1,80^FS^PQ1,0,1,Y^XZ"
        );
    }

    #[test]
    fn auto_keeps_the_smaller_encoding() {
        // Whatever the image, the field sent is exactly the shorter of the two encodings.
        let blank = vec![0u8; 102 * 1218];
        let noisy = noise(102 * 1218, 99);
        let structured: Vec<u8> = (0..1218)
            .flat_map(|row: usize| {
                (0..102).map(move |col: usize| {
                    if (row / 8 + col).is_multiple_of(3) {
                        0xFF
                    } else {
                        0x18
                    }
                })
            })
            .collect();
        for data in [&blank, &noisy, &structured] {
            let bitmap = Bitmap::new(812, 1218, data).expect("valid bitmap");
            let acs = encode_acs(&bitmap);
            let z64 = encode_z64(&bitmap);
            let options = ZplOptions::default();
            let field = field_of(&encode_zpl(&bitmap, &options).expect("valid label"));
            let smaller = if z64.len() < acs.len() { z64 } else { acs };
            assert_eq!(field, smaller);
        }
    }

    #[test]
    fn auto_picks_z64_for_noise_and_acs_for_tiny_labels() {
        let noisy = noise(102 * 200, 5);
        let bitmap = Bitmap::new(812, 200, &noisy).expect("valid bitmap");
        let field = field_of(&encode_zpl(&bitmap, &ZplOptions::default()).expect("valid"));
        assert!(field.starts_with(":Z64:"), "noise should favour Z64");

        // Three rows of fills beat the fixed cost of a zlib header, base64 and the CRC.
        let bar = [0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00];
        let bitmap = Bitmap::new(16, 3, &bar).expect("valid bitmap");
        let field = field_of(&encode_zpl(&bitmap, &ZplOptions::default()).expect("valid"));
        assert_eq!(field, ",!,");
    }

    #[test]
    fn out_of_range_options_are_rejected() {
        let data = [0u8];
        let bitmap = Bitmap::new(8, 1, &data).expect("valid bitmap");
        let cases = [
            (
                ZplOptions {
                    copies: 0,
                    ..ZplOptions::default()
                },
                "copies",
            ),
            (
                ZplOptions {
                    copies: MAX_COPIES + 1,
                    ..ZplOptions::default()
                },
                "copies",
            ),
            (
                ZplOptions {
                    speed_ips: Some(15),
                    ..ZplOptions::default()
                },
                "speed_ips",
            ),
            (
                ZplOptions {
                    darkness: Some(Darkness::Absolute(31)),
                    ..ZplOptions::default()
                },
                "darkness",
            ),
            (
                ZplOptions {
                    darkness: Some(Darkness::Relative(-31)),
                    ..ZplOptions::default()
                },
                "darkness",
            ),
        ];
        for (options, name) in cases {
            assert!(
                matches!(
                    encode_zpl(&bitmap, &options),
                    Err(ZplError::OptionOutOfRange { option, .. }) if option == name
                ),
                "{options:?}"
            );
        }
    }

    #[test]
    fn invalid_bitmaps_are_rejected() {
        let bitmap = Bitmap {
            width: 16,
            height: 2,
            data: &[0u8; 3],
        };
        assert!(matches!(
            encode_zpl(&bitmap, &ZplOptions::default()),
            Err(ZplError::Bitmap(BitmapError::LengthMismatch { .. }))
        ));
    }
}
