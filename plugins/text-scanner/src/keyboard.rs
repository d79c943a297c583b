//! Keyboard-wedge scanners: HID boot keyboard reports to characters (US layout).
//!
//! A keyboard-wedge scanner types what it read as a USB keyboard would. Each input report is
//! the boot keyboard report: a modifier byte, a reserved byte and up to six usage codes of the
//! keys held down (HID Usage Tables, page 0x07), optionally preceded by a report ID. A key
//! types its character when it appears in a report, not while it stays held.
//!
//! # Limits
//! - Only the US layout is known: a scanner set to another layout types other characters for
//!   some keys (Y and Z swap on German layouts), so set the scanner to US.
//! - Shift is honoured; Caps Lock, AltGr, Ctrl and the numeric keypad's Num Lock state are
//!   not (keypad keys type their digits and operators). Alt+keypad character entry, which some
//!   scanners use for characters beyond ASCII, is not decoded.
//! - Enter and keypad Enter end a line, Tab types a tab (normalised to a space), Backspace
//!   removes the last character; other non-printing keys are ignored.

/// The left and right Shift bits of the modifier byte.
const SHIFT: u8 = 0x02 | 0x20;
/// The usage code a keyboard reports in every slot when too many keys are held.
const ROLLOVER: u8 = 0x01;

/// Turns successive keyboard reports into the bytes they type.
#[derive(Debug, Default)]
pub struct KeyboardDecoder {
    /// The keys held down in the last report.
    held: Vec<u8>,
}

impl KeyboardDecoder {
    /// The bytes typed by the keys that went down in `report`; `None` when the report is not a
    /// keyboard report (wrong length).
    pub fn feed(&mut self, report: &[u8]) -> Option<Vec<u8>> {
        let report = match report.len() {
            8 => report,
            // A report ID precedes the boot report on devices with several reports.
            9 => &report[1..],
            _ => return None,
        };
        let modifiers = report[0];
        let keys: Vec<u8> = report[2..].iter().copied().filter(|&k| k != 0).collect();
        if keys.contains(&ROLLOVER) {
            // The keyboard cannot say which keys are down; wait for a report that can.
            return Some(Vec::new());
        }
        let shifted = modifiers & SHIFT != 0;
        let typed = keys
            .iter()
            .filter(|k| !self.held.contains(k))
            .filter_map(|&k| key_byte(k, shifted))
            .collect();
        self.held = keys;
        Some(typed)
    }
}

/// The byte a key types in the US layout, with or without Shift.
pub fn key_byte(usage: u8, shifted: bool) -> Option<u8> {
    const DIGITS: &[u8; 10] = b"1234567890";
    const SHIFTED_DIGITS: &[u8; 10] = b"!@#$%^&*()";
    // Usages 0x2D to 0x38: - = [ ] \ (non-US #) ; ' ` , . /
    const PUNCTUATION: &[u8; 12] = b"-=[]\\#;'`,./";
    const SHIFTED_PUNCTUATION: &[u8; 12] = b"_+{}|~:\"~<>?";
    const KEYPAD: &[u8; 16] = b"/*-+\r1234567890.";
    Some(match usage {
        0x04..=0x1d => {
            let letter = b'a' + (usage - 0x04);
            if shifted {
                letter.to_ascii_uppercase()
            } else {
                letter
            }
        }
        0x1e..=0x27 => {
            let index = usize::from(usage - 0x1e);
            if shifted {
                SHIFTED_DIGITS[index]
            } else {
                DIGITS[index]
            }
        }
        0x28 => b'\r',
        0x2a => 0x08,
        0x2b => b'\t',
        0x2c => b' ',
        0x2d..=0x38 => {
            let index = usize::from(usage - 0x2d);
            if shifted {
                SHIFTED_PUNCTUATION[index]
            } else {
                PUNCTUATION[index]
            }
        }
        0x54..=0x63 => KEYPAD[usize::from(usage - 0x54)],
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Reports typing `text` (US layout), each key pressed then released.
    pub fn type_text(text: &str) -> Vec<[u8; 8]> {
        let mut reports = Vec::new();
        for byte in text.bytes() {
            let (usage, shifted) = (0u8..=0x63)
                .flat_map(|u| [(u, false), (u, true)])
                .find(|&(u, s)| key_byte(u, s) == Some(byte))
                .expect("typable character");
            let modifiers = if shifted { 0x02 } else { 0 };
            reports.push([modifiers, 0, usage, 0, 0, 0, 0, 0]);
            reports.push([0; 8]);
        }
        reports
    }

    #[test]
    fn typed_text_comes_back_with_shift() {
        let text = "Jane O'Neil, #5 (Apt B) 10-12 Elm St.\r";
        let mut decoder = KeyboardDecoder::default();
        let typed: Vec<u8> = type_text(text)
            .iter()
            .flat_map(|r| decoder.feed(r).expect("keyboard report"))
            .collect();
        assert_eq!(String::from_utf8(typed).expect("ascii"), text);
    }

    #[test]
    fn a_held_key_types_once_and_rollover_is_ignored() {
        let mut decoder = KeyboardDecoder::default();
        assert_eq!(
            decoder.feed(&[0, 0, 0x04, 0, 0, 0, 0, 0]),
            Some(b"a".to_vec())
        );
        assert_eq!(decoder.feed(&[0, 0, 0x04, 0, 0, 0, 0, 0]), Some(Vec::new()));
        assert_eq!(
            decoder.feed(&[0, 0, 0x04, 0x05, 0, 0, 0, 0]),
            Some(b"b".to_vec())
        );
        assert_eq!(decoder.feed(&[0, 0, 1, 1, 1, 1, 1, 1]), Some(Vec::new()));
        // With a report ID in front.
        assert_eq!(
            decoder.feed(&[1, 0x20, 0, 0x06, 0, 0, 0, 0, 0]),
            Some(b"C".to_vec())
        );
        assert_eq!(decoder.feed(&[0, 0, 0]), None);
    }
}
