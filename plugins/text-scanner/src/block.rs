//! Assembling the lines a scanner sends into address blocks.
//!
//! A device sends an address as lines separated by CR LF (LF or CR alone are taken too). A
//! block ends with an empty line, with the configured terminator byte (such as ETX, 0x03) when
//! there is one, or, decided by the caller, after an idle gap ([`BlockAssembler::finish`]).
//! Empty lines before a block starts are skipped, so a CR LF CR LF ending never yields an
//! empty block.
//!
//! A backspace (0x08) removes the last byte of the line being received.
//!
//! Sizes are bounded so that a device streaming garbage cannot exhaust memory: a line keeps at
//! most [`Limits::max_line_len`] characters after normalising (the raw bytes kept for it are
//! bounded by four times that, the longest UTF-8 form), and a block keeps at most
//! [`Limits::max_lines`] lines; what goes beyond is dropped and counted.

use crate::ascii;

/// Size limits of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_lines: usize,
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // An address label holds at most 6 to 8 lines of at most 40 to 50 characters; the
        // defaults leave room for notes an OCR application adds without taking in pages.
        Limits {
            max_lines: 12,
            max_line_len: 120,
        }
    }
}

/// A complete address block: normalised, non-empty lines.
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    pub lines: Vec<String>,
    /// Lines dropped because the block was full.
    pub dropped_lines: usize,
}

impl std::fmt::Debug for Block {
    // A block is an address: keep its text out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Block({} lines, redacted)", self.lines.len())
    }
}

/// Gathers bytes into lines and lines into blocks; performs no I/O.
#[derive(Debug)]
pub struct BlockAssembler {
    limits: Limits,
    terminator: Option<u8>,
    /// The raw bytes of the line being received.
    line: Vec<u8>,
    /// The last byte was CR, so an LF right after it ends nothing more.
    after_cr: bool,
    lines: Vec<String>,
    dropped_lines: usize,
}

impl BlockAssembler {
    pub fn new(limits: Limits, terminator: Option<u8>) -> BlockAssembler {
        BlockAssembler {
            limits,
            terminator,
            line: Vec::new(),
            after_cr: false,
            lines: Vec::new(),
            dropped_lines: 0,
        }
    }

    /// Whether part of a block has been received.
    pub fn is_started(&self) -> bool {
        !self.lines.is_empty() || self.line.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// Takes in bytes from the device and returns the blocks they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Block> {
        let mut done = Vec::new();
        for &byte in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            if Some(byte) == self.terminator {
                done.extend(self.finish());
                continue;
            }
            match byte {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    if let Some(block) = self.end_line() {
                        done.push(block);
                    }
                }
                // Backspace: keyboard-wedge scanners and desk applications correct what they
                // typed. A correction never reaches back into a line already ended.
                0x08 => {
                    self.line.pop();
                }
                _ => {
                    if self.line.len() < self.limits.max_line_len.saturating_mul(4) {
                        self.line.push(byte);
                    }
                }
            }
        }
        done
    }

    /// Ends the line being received; an empty line after a started block ends the block.
    fn end_line(&mut self) -> Option<Block> {
        let raw = std::mem::take(&mut self.line);
        let line = ascii::normalize_line(&ascii::decode(&raw), self.limits.max_line_len);
        if line.is_empty() {
            return if self.lines.is_empty() && self.dropped_lines == 0 {
                None
            } else {
                self.take()
            };
        }
        if self.lines.len() < self.limits.max_lines {
            self.lines.push(line);
        } else {
            self.dropped_lines += 1;
        }
        None
    }

    /// Ends the block now (terminator byte, idle gap): what has been received, if anything.
    pub fn finish(&mut self) -> Option<Block> {
        if !self.line.is_empty() {
            // A last line without its line end still belongs to the block.
            if let Some(block) = self.end_line() {
                return Some(block);
            }
        }
        self.take()
    }

    fn take(&mut self) -> Option<Block> {
        let lines = std::mem::take(&mut self.lines);
        let dropped_lines = std::mem::take(&mut self.dropped_lines);
        (!lines.is_empty()).then_some(Block {
            lines,
            dropped_lines,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(block: &Block) -> Vec<&str> {
        block.lines.iter().map(String::as_str).collect()
    }

    #[test]
    fn an_empty_line_ends_a_block() {
        let mut a = BlockAssembler::new(Limits::default(), None);
        let blocks = a.feed(b"\r\n\r\nJane Roe\r\n1 Main St\r\nSpringfield IL 62701\r\n\r\nNext");
        assert_eq!(blocks.len(), 1);
        assert_eq!(
            lines(&blocks[0]),
            ["Jane Roe", "1 Main St", "Springfield IL 62701"]
        );
        assert!(a.is_started());
        assert_eq!(a.finish().map(|b| b.lines), Some(vec!["Next".to_string()]));
        assert!(!a.is_started());
    }

    #[test]
    fn lines_split_across_reads_and_bare_lf_or_cr_assemble() {
        let mut a = BlockAssembler::new(Limits::default(), None);
        assert!(a.feed(b"Jo").is_empty());
        assert!(a.feed(b"hn\nACME Co\r").is_empty());
        assert!(a.feed(b"\n5 Elm\rTown\n\n").len() == 1);
    }

    #[test]
    fn utf8_split_across_reads_decodes() {
        let mut a = BlockAssembler::new(Limits::default(), None);
        let bytes = "Zoë\r\n\r\n".as_bytes();
        assert!(a.feed(&bytes[..3]).is_empty());
        let blocks = a.feed(&bytes[3..]);
        assert_eq!(lines(&blocks[0]), ["Zoe"]);
    }

    #[test]
    fn the_terminator_ends_a_block_without_an_empty_line() {
        let mut a = BlockAssembler::new(Limits::default(), Some(0x03));
        let blocks = a.feed(b"A\r\nB\x03\x02C\r\nD\r\n\x03");
        let all: Vec<Vec<&str>> = blocks.iter().map(lines).collect();
        assert_eq!(all, [vec!["A", "B"], vec!["C", "D"]]);
    }

    #[test]
    fn blocks_and_lines_are_bounded() {
        let limits = Limits {
            max_lines: 2,
            max_line_len: 4,
        };
        let mut a = BlockAssembler::new(limits, None);
        let long = vec![b'x'; 10_000];
        a.feed(&long);
        let blocks = a.feed(b"\r\nsecond\r\nthird\r\n\r\n");
        assert_eq!(blocks.len(), 1);
        assert_eq!(lines(&blocks[0]), ["xxxx", "seco"]);
        assert_eq!(blocks[0].dropped_lines, 1);
    }

    #[test]
    fn debug_output_hides_the_text() {
        let mut a = BlockAssembler::new(Limits::default(), None);
        let blocks = a.feed(b"Secret Name\r\n\r\n");
        let shown = format!("{:?}", blocks[0]);
        assert!(!shown.contains("Secret"), "{shown}");
    }
}
