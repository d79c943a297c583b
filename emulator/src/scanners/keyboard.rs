//! A model of a keyboard-wedge scanner: the HID boot keyboard input reports it sends to type an
//! address block, as a scanner set to the US keyboard layout types one.
//!
//! The model is pure, with no I/O and no clock: [`type_block`] returns the reports in the order
//! the scanner sends them. A test wraps them in a transport of its own to stand in for HID
//! hardware, which cannot exist on a build machine.
//!
//! The report, from the HID specification's boot keyboard protocol: `[modifiers, reserved (0),
//! key 1, ..., key 6]`, the keys being usage codes of the Keyboard/Keypad page (0x07). A scanner
//! types one character as a report holding its key (with left Shift, bit 0x02, for shifted
//! characters) followed by a report with no key held, so that the same character twice is two
//! presses. Each line ends with Enter (0x28); a block ends with one more Enter, an empty line.

/// Left Shift in the modifier byte.
const LEFT_SHIFT: u8 = 0x02;
/// The Enter key.
const ENTER: u8 = 0x28;

/// A character a US keyboard cannot type (the model sends no Alt+keypad sequences).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} holds a character a US keyboard cannot type")]
pub struct Untypable {
    pub line: usize,
}

/// The key and whether Shift is held for `c` on the US layout (HID Usage Tables, page 0x07).
pub fn key_for(c: char) -> Option<(bool, u8)> {
    let unshifted = |key: u8| Some((false, key));
    let shifted = |key: u8| Some((true, key));
    match c {
        'a'..='z' => unshifted(0x04 + (c as u8 - b'a')),
        'A'..='Z' => shifted(0x04 + (c as u8 - b'A')),
        '1'..='9' => unshifted(0x1E + (c as u8 - b'1')),
        '0' => unshifted(0x27),
        '!' => shifted(0x1E),
        '@' => shifted(0x1F),
        '#' => shifted(0x20),
        '$' => shifted(0x21),
        '%' => shifted(0x22),
        '^' => shifted(0x23),
        '&' => shifted(0x24),
        '*' => shifted(0x25),
        '(' => shifted(0x26),
        ')' => shifted(0x27),
        '\t' => unshifted(0x2B),
        ' ' => unshifted(0x2C),
        '-' => unshifted(0x2D),
        '_' => shifted(0x2D),
        '=' => unshifted(0x2E),
        '+' => shifted(0x2E),
        '[' => unshifted(0x2F),
        '{' => shifted(0x2F),
        ']' => unshifted(0x30),
        '}' => shifted(0x30),
        '\\' => unshifted(0x31),
        '|' => shifted(0x31),
        ';' => unshifted(0x33),
        ':' => shifted(0x33),
        '\'' => unshifted(0x34),
        '"' => shifted(0x34),
        '`' => unshifted(0x35),
        '~' => shifted(0x35),
        ',' => unshifted(0x36),
        '<' => shifted(0x36),
        '.' => unshifted(0x37),
        '>' => shifted(0x37),
        '/' => unshifted(0x38),
        '?' => shifted(0x38),
        _ => None,
    }
}

fn press(shift: bool, key: u8) -> [u8; 8] {
    [if shift { LEFT_SHIFT } else { 0 }, 0, key, 0, 0, 0, 0, 0]
}

const RELEASE: [u8; 8] = [0; 8];

/// The reports a keyboard-wedge scanner sends to type `lines` as one block.
pub fn type_block(lines: &[String]) -> Result<Vec<[u8; 8]>, Untypable> {
    let mut reports = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        for c in line.chars() {
            let (shift, key) = key_for(c).ok_or(Untypable { line: n + 1 })?;
            reports.push(press(shift, key));
            reports.push(RELEASE);
        }
        reports.push(press(false, ENTER));
        reports.push(RELEASE);
    }
    reports.push(press(false, ENTER));
    reports.push(RELEASE);
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_key_presses_and_releases_ending_in_two_enters() {
        let reports = type_block(&["Ab 1!".to_string()]).expect("typable");
        assert_eq!(
            reports,
            [
                [0x02, 0, 0x04, 0, 0, 0, 0, 0],
                RELEASE,
                [0, 0, 0x05, 0, 0, 0, 0, 0],
                RELEASE,
                [0, 0, 0x2C, 0, 0, 0, 0, 0],
                RELEASE,
                [0, 0, 0x1E, 0, 0, 0, 0, 0],
                RELEASE,
                [0x02, 0, 0x1E, 0, 0, 0, 0, 0],
                RELEASE,
                [0, 0, ENTER, 0, 0, 0, 0, 0],
                RELEASE,
                [0, 0, ENTER, 0, 0, 0, 0, 0],
                RELEASE,
            ]
        );
    }

    #[test]
    fn every_printable_ascii_character_has_a_key_and_others_do_not() {
        for c in ' '..='~' {
            assert!(key_for(c).is_some(), "{c:?}");
        }
        assert_eq!(
            type_block(&["ok".into(), "Müller".into()]),
            Err(Untypable { line: 2 })
        );
    }
}
