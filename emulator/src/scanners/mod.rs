//! Scanner simulators: a text scanner on a pseudo-terminal that sends an address block when
//! told to, as a pen scanner or an OCR desk application sends one over a serial port, and a
//! model of a keyboard-wedge scanner's HID reports.
//!
//! # Layout
//! - this file: how a block goes on the wire ([`ScanRequest`], [`encode`]).
//! - [`serial`]: the pseudo-terminal writer and the control HTTP API (loopback only).
//! - [`cli`]: the `devicehub-emulator scanner ...` subcommand.
//! - [`keyboard`]: the HID boot keyboard reports a keyboard-wedge scanner types a block with.
//!
//! The wire form comes from what such devices send (lines separated by CR LF, a block ended
//! by an empty line or a terminator byte), never from DeviceHub's code.

pub mod cli;
pub mod keyboard;
#[cfg(unix)]
pub mod serial;

use serde::Deserialize;

/// How a simulated block ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    /// CR LF after the last line and an empty line (CR LF again).
    #[default]
    BlankLine,
    /// ETX (0x03) right after the last line.
    Etx,
    /// Nothing after the last line's CR LF: the receiver must notice the idle gap.
    None,
}

/// How the text is encoded on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    #[default]
    Utf8,
    /// ISO 8859-1, as older devices send; characters beyond it become `?`.
    Latin1,
}

/// One block to send (the control API's `POST /scan` body).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    pub lines: Vec<String>,
    #[serde(default)]
    pub ending: Ending,
    #[serde(default)]
    pub encoding: Encoding,
    /// Bytes sent before the block, e.g. STX from devices that frame blocks.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// A block the simulator refuses to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("a block needs at least one line")]
    Empty,
    #[error("line {0} holds a line break; send each line as its own entry")]
    LineBreak(usize),
}

/// The bytes a scanner sends for `request`.
pub fn encode(request: &ScanRequest) -> Result<Vec<u8>, ScanError> {
    if request.lines.is_empty() {
        return Err(ScanError::Empty);
    }
    if let Some(n) = request.lines.iter().position(|l| l.contains(['\r', '\n'])) {
        return Err(ScanError::LineBreak(n + 1));
    }
    let text = |s: &str| -> Vec<u8> {
        match request.encoding {
            Encoding::Utf8 => s.as_bytes().to_vec(),
            Encoding::Latin1 => s
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
        }
    };
    let mut bytes = request.prefix.as_deref().map(text).unwrap_or_default();
    let last = request.lines.len() - 1;
    for (n, line) in request.lines.iter().enumerate() {
        bytes.extend(text(line));
        if n < last || request.ending != Ending::Etx {
            bytes.extend_from_slice(b"\r\n");
        }
    }
    match request.ending {
        Ending::BlankLine => bytes.extend_from_slice(b"\r\n"),
        Ending::Etx => bytes.push(0x03),
        Ending::None => {}
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[&str], ending: Ending, encoding: Encoding) -> ScanRequest {
        ScanRequest {
            lines: lines.iter().map(|l| l.to_string()).collect(),
            ending,
            encoding,
            prefix: None,
        }
    }

    #[test]
    fn blocks_go_out_with_crlf_and_their_ending() {
        let lines = ["A B", "C"];
        assert_eq!(
            encode(&request(&lines, Ending::BlankLine, Encoding::Utf8)).expect("encode"),
            b"A B\r\nC\r\n\r\n"
        );
        assert_eq!(
            encode(&request(&lines, Ending::Etx, Encoding::Utf8)).expect("encode"),
            b"A B\r\nC\x03"
        );
        assert_eq!(
            encode(&request(&lines, Ending::None, Encoding::Utf8)).expect("encode"),
            b"A B\r\nC\r\n"
        );
    }

    #[test]
    fn latin1_encoding_is_one_byte_per_character() {
        assert_eq!(
            encode(&request(&["Müller €"], Ending::None, Encoding::Latin1)).expect("encode"),
            b"M\xfcller ?\r\n"
        );
    }

    #[test]
    fn empty_blocks_and_embedded_line_breaks_are_refused() {
        assert_eq!(
            encode(&request(&[], Ending::BlankLine, Encoding::Utf8)),
            Err(ScanError::Empty)
        );
        assert_eq!(
            encode(&request(&["a", "b\nc"], Ending::BlankLine, Encoding::Utf8)),
            Err(ScanError::LineBreak(2))
        );
    }
}
