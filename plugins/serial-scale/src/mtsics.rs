//! Mettler Toledo MT-SICS (level 0): the commands the plugin sends and the replies it reads.
//!
//! Commands and replies are ASCII lines ended by CR LF. The plugin uses:
//! - `SI`: the weight now, stable or not. Replies `S S <value> <unit>` (stable), `S D <value>
//!   <unit>` (dynamic: in motion), `S I` (not executable now: the balance is busy), `S +`
//!   (overload range) or `S -` (underload range).
//! - `S`: the next stable weight. Same replies without `S D`; the balance holds the answer until
//!   it is stable, so the plugin prefers `SI` and waits for stability itself, within the
//!   caller's timeout.
//! - `Z`: zero. Replies `Z A` (zeroed), `Z I` (not executable: busy or not stable in time),
//!   `Z +` (above the zeroing range) or `Z -` (below it).
//!
//! Any command may instead be answered by a general error: `ES` (syntax error: the balance
//! did not recognise the command), `ET` (transmission error: a character was received
//! garbled, usually mismatched line settings) or `EL` (logical error: the command cannot be
//! executed, e.g. a parameter out of range).

use crate::exact::Decimal;

/// The command for the weight now, stable or not.
pub const WEIGHT_IMMEDIATELY: &[u8] = b"SI\r\n";
/// The command for the next stable weight.
pub const STABLE_WEIGHT: &[u8] = b"S\r\n";
/// The command that zeroes the balance.
pub const ZERO: &[u8] = b"Z\r\n";

/// One reply line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `S S` or `S D`: a weight value with its unit symbol.
    Weight {
        stable: bool,
        value: Decimal,
        unit: String,
    },
    /// `S I`: the balance cannot execute the command now.
    WeightNotExecutable,
    /// `S +`: the load is above the weighing range.
    Overload,
    /// `S -`: the load is below the weighing range (pan removed, for instance).
    Underload,
    /// `Z A`: zeroed.
    Zeroed,
    /// `Z I`: not zeroed, busy or not stable in time.
    ZeroNotExecutable,
    /// `Z +`: above the zeroing range.
    ZeroAboveRange,
    /// `Z -`: below the zeroing range.
    ZeroBelowRange,
    /// `ES`.
    SyntaxError,
    /// `ET`.
    TransmissionError,
    /// `EL`.
    LogicalError,
}

/// A reply line that is not MT-SICS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the balance answered {line:?}, which is not an MT-SICS reply the plugin knows")]
pub struct UnknownReply {
    pub line: String,
}

/// Whether `bytes` hold a whole reply line.
pub fn is_complete(bytes: &[u8]) -> bool {
    bytes.ends_with(b"\r\n")
}

/// Parses one reply line (with or without its CR LF).
pub fn parse_reply(line: &[u8]) -> Result<Reply, UnknownReply> {
    let text = String::from_utf8_lossy(line);
    let unknown = || UnknownReply {
        line: text.trim_end().to_string(),
    };
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    Ok(match tokens.as_slice() {
        ["ES"] => Reply::SyntaxError,
        ["ET"] => Reply::TransmissionError,
        ["EL"] => Reply::LogicalError,
        ["S", "I"] => Reply::WeightNotExecutable,
        ["S", "+"] => Reply::Overload,
        ["S", "-"] => Reply::Underload,
        ["Z", "A"] => Reply::Zeroed,
        ["Z", "I"] => Reply::ZeroNotExecutable,
        ["Z", "+"] => Reply::ZeroAboveRange,
        ["Z", "-"] => Reply::ZeroBelowRange,
        ["S", status @ ("S" | "D"), number @ .., unit] if !number.is_empty() => Reply::Weight {
            stable: *status == "S",
            // The sign may stand apart from the digits in the right-aligned field.
            value: Decimal::parse(&number.concat()).ok_or_else(unknown)?,
            unit: (*unit).to_string(),
        },
        _ => return Err(unknown()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(stable: bool, value: &str, unit: &str) -> Reply {
        Reply::Weight {
            stable,
            value: Decimal::parse(value).unwrap(),
            unit: unit.into(),
        }
    }

    /// The replies as the MT-SICS reference manual prints them.
    #[test]
    fn manual_replies_parse() {
        for (line, reply) in [
            (&b"S S     100.00 g\r\n"[..], weight(true, "100.00", "g")),
            (b"S D     129.07 g\r\n", weight(false, "129.07", "g")),
            (b"S S    -12.345 kg\r\n", weight(true, "-12.345", "kg")),
            (b"S S  -   1.5 lb\r\n", weight(true, "-1.5", "lb")),
            (b"S S       5.30 oz\r\n", weight(true, "5.30", "oz")),
            (b"S I\r\n", Reply::WeightNotExecutable),
            (b"S +\r\n", Reply::Overload),
            (b"S -\r\n", Reply::Underload),
            (b"Z A\r\n", Reply::Zeroed),
            (b"Z I\r\n", Reply::ZeroNotExecutable),
            (b"Z +\r\n", Reply::ZeroAboveRange),
            (b"Z -\r\n", Reply::ZeroBelowRange),
            (b"ES\r\n", Reply::SyntaxError),
            (b"ET\r\n", Reply::TransmissionError),
            (b"EL\r\n", Reply::LogicalError),
        ] {
            assert_eq!(
                parse_reply(line),
                Ok(reply),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn foreign_lines_are_refused_with_the_line() {
        for line in [
            &b"S X 1 g\r\n"[..],
            b"S S g\r\n",
            b"S S 1.2.3 g\r\n",
            b"hello\r\n",
            b"\r\n",
        ] {
            let err = parse_reply(line).unwrap_err();
            assert_eq!(err.line, String::from_utf8_lossy(line).trim_end());
        }
    }

    #[test]
    fn a_line_is_complete_at_cr_lf() {
        assert!(!is_complete(b"S S   1.00 g"));
        assert!(!is_complete(b"S S   1.00 g\r"));
        assert!(is_complete(b"S S   1.00 g\r\n"));
    }
}
