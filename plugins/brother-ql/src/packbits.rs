//! TIFF PackBits, as the Brother raster protocol compresses each raster line (`M 02`).
//!
//! A header byte `n` followed by data: `n` in 0..=127 means "the next `n + 1` bytes are
//! literal"; `n` in -127..=-1 (81h..FFh) means "repeat the next byte `1 - n` times". Brother's
//! Raster Command Reference (QL-800/810W/820NWB, section 4 "M: Select compression mode")
//! encodes every repetition of two or more bytes as a run, and when compression would make a
//! line longer than the line itself, sends the line as literal data instead.

/// The longest literal or run one header byte can describe.
const MAX_CHUNK: usize = 128;

/// Compresses one raster line. The result is never longer than the line plus one header byte
/// per started 128 bytes.
pub fn encode(line: &[u8]) -> Vec<u8> {
    let packed = encode_runs(line);
    let literal_len = line.len() + line.len().div_ceil(MAX_CHUNK);
    if packed.len() > literal_len {
        encode_literal(line)
    } else {
        packed
    }
}

/// The line as literal chunks only: what the printer is sent when runs do not pay.
fn encode_literal(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + line.len().div_ceil(MAX_CHUNK));
    for chunk in line.chunks(MAX_CHUNK) {
        // A chunk holds 1..=128 bytes, so `len - 1` fits in 0..=127.
        out.push((chunk.len() - 1) as u8);
        out.extend_from_slice(chunk);
    }
    out
}

fn encode_runs(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 2);
    let mut literal_start = None::<usize>;
    let mut i = 0;
    let flush_literal = |out: &mut Vec<u8>, from: usize, to: usize| {
        for chunk in line[from..to].chunks(MAX_CHUNK) {
            out.push((chunk.len() - 1) as u8);
            out.extend_from_slice(chunk);
        }
    };
    while i < line.len() {
        let byte = line[i];
        let run = line[i..]
            .iter()
            .take(MAX_CHUNK)
            .take_while(|&&b| b == byte)
            .count();
        if run >= 2 {
            if let Some(start) = literal_start.take() {
                flush_literal(&mut out, start, i);
            }
            // A run of 2..=128 is written as 1 - run, i.e. -1..=-127 as a two's complement byte.
            out.push((1i16 - run as i16) as u8);
            out.push(byte);
            i += run;
        } else {
            literal_start.get_or_insert(i);
            i += 1;
        }
    }
    if let Some(start) = literal_start {
        flush_literal(&mut out, start, line.len());
    }
    out
}

/// Why packed data could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A header promised more bytes than the data holds.
    #[error("packed data ends inside a chunk at byte {at}")]
    Truncated { at: usize },
    /// 80h is not a valid header in Brother's description of PackBits.
    #[error("header 80h at byte {at} is not used by PackBits")]
    BadHeader { at: usize },
}

/// Expands packed data (the inverse of [`encode`]).
pub fn decode(packed: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < packed.len() {
        let header = packed[i] as i8;
        match header {
            0..=127 => {
                let len = header as usize + 1;
                let data = packed
                    .get(i + 1..i + 1 + len)
                    .ok_or(DecodeError::Truncated { at: i })?;
                out.extend_from_slice(data);
                i += 1 + len;
            }
            -128 => return Err(DecodeError::BadHeader { at: i }),
            _ => {
                let byte = *packed.get(i + 1).ok_or(DecodeError::Truncated { at: i })?;
                let count = (1 - i16::from(header)) as usize;
                out.extend(std::iter::repeat_n(byte, count));
                i += 2;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brother, "Software Developer's Manual, Raster Command Reference QL-800/810W/820NWB",
    /// version 1.01, section 4 "Printing Command Details", "M: Select compression mode",
    /// example: twenty 00h, 22h 22h, then 23 BA BF A2 22 2B compress to
    /// `ED 00 FF 22 05 23 BA BF A2 22 2B`. The manual says the rest of the 90-byte line
    /// cannot be omitted even when it is all 00h; here it is 62 bytes of 00h: `C3 00`.
    #[test]
    fn the_reference_manual_example_compresses_byte_for_byte() {
        let mut line = vec![0u8; 20];
        line.extend([0x22, 0x22, 0x23, 0xBA, 0xBF, 0xA2, 0x22, 0x2B]);
        line.resize(90, 0);
        assert_eq!(
            encode(&line),
            [0xED, 0x00, 0xFF, 0x22, 0x05, 0x23, 0xBA, 0xBF, 0xA2, 0x22, 0x2B, 0xC3, 0x00]
        );
        assert_eq!(decode(&encode(&line)), Ok(line));
    }

    /// Same section: "If the above process results in more than 90 bytes of compressed data,
    /// the data is treated as being all different. As a result, the data will be 91 bytes,
    /// including the 1 byte that specifies the data length."
    #[test]
    fn a_line_that_would_grow_is_sent_as_one_literal_of_91_bytes() {
        // Pairs of equal bytes alternating with single bytes cost more as runs.
        let line: Vec<u8> = (0..90u8)
            .map(|i| if i % 3 == 2 { i } else { (i / 3) | 0x80 })
            .collect();
        assert!(encode_runs(&line).len() > 91);
        let packed = encode(&line);
        assert_eq!(packed.len(), 91);
        assert_eq!(packed[0], 89);
        assert_eq!(&packed[1..], &line[..]);
    }

    #[test]
    fn long_lines_use_several_chunks_and_round_trip() {
        let lines: Vec<Vec<u8>> = vec![
            vec![0; 162],
            vec![0xFF; 162],
            (0..162u32).map(|i| (i * 37 % 251) as u8).collect(),
            (0..162u32)
                .map(|i| if i < 100 { 0 } else { i as u8 })
                .collect(),
        ];
        for line in lines {
            let packed = encode(&line);
            assert!(packed.len() <= 164, "{}", packed.len());
            assert_eq!(decode(&packed), Ok(line));
        }
        assert_eq!(encode(&[0; 162]), [0x81, 0x00, 0xDF, 0x00]);
    }

    #[test]
    fn truncated_and_invalid_data_is_reported() {
        assert_eq!(decode(&[0x03, 1, 2]), Err(DecodeError::Truncated { at: 0 }));
        assert_eq!(decode(&[0xFE]), Err(DecodeError::Truncated { at: 0 }));
        assert_eq!(decode(&[0x80, 0]), Err(DecodeError::BadHeader { at: 0 }));
    }
}
