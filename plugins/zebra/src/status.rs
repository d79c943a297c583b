//! Parsers for the status answers of Zebra printers: ZPL `~HS` (host status) and EPL2 `^ee`.
//!
//! `~HS` is answered with three strings, each framed `STX ... ETX CR LF`. Bytes before the first
//! STX (a stale CR LF, line noise) are skipped, and [`host_status_answer_len`] tells a reader
//! whether its buffer already holds the whole answer, so a transport that returns partial reads
//! can keep reading until it does. [`HostStatus::summary`] reduces the many flags to the state a
//! shipping desk cares about.
//!
//! Note that ZPL printers stay silent to `~HS` in some error conditions (media out, ribbon out,
//! head open, head over temperature on several models): a missing answer is itself a sign of a
//! fault, which the caller reports when its read times out.
//!
//! EPL2 printers answer `^ee` with two-digit codes and CR LF; see [`parse_epl_error_report`].

use std::fmt;

use thiserror::Error;

const STX: u8 = 0x02;
const ETX: u8 = 0x03;

/// The ZPL host status request. It is a tilde command: the printer answers at once, even in the
/// middle of a job, without waiting for `^XA ... ^XZ`.
pub const HOST_STATUS_REQUEST: &[u8] = b"~HS";

/// The EPL2 error report request; EPL2 commands end with a line feed.
pub const EPL_ERROR_REPORT_REQUEST: &[u8] = b"^ee\r\n";

/// Why a status answer could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StatusError {
    /// The buffer does not yet hold a complete answer.
    #[error("incomplete status answer: {frames} of 3 framed strings received")]
    Incomplete {
        /// Complete `STX ... ETX` strings found so far.
        frames: usize,
    },
    /// A string holds bytes that are not printable ASCII.
    #[error("~HS string {string} contains a byte that is not printable ASCII")]
    NotAscii {
        /// Which string (1..=3).
        string: u8,
    },
    /// A string does not have the documented number of comma-separated fields.
    #[error("~HS string {string} has {found} fields, expected {expected}")]
    FieldCount {
        /// Which string (1..=3).
        string: u8,
        /// Documented number of fields.
        expected: usize,
        /// Number found.
        found: usize,
    },
    /// A numeric field does not hold a decimal number.
    #[error("~HS string {string} field {field} is not a number: {value:?}")]
    InvalidNumber {
        /// Which string (1..=3).
        string: u8,
        /// The field's name.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// A flag field holds something other than `0` or `1`.
    #[error("~HS string {string} flag {field} is not 0 or 1: {value:?}")]
    InvalidFlag {
        /// Which string (1..=3).
        string: u8,
        /// The field's name.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// The print mode field is not a single character.
    #[error("~HS print mode is not a single character: {value:?}")]
    InvalidPrintMode {
        /// The text found.
        value: String,
    },
    /// The buffer does not yet hold a complete `^ee` answer line.
    #[error("incomplete EPL2 error report: no line end received yet")]
    IncompleteErrorReport,
    /// The EPL2 `^ee` answer is not a list of two-digit codes.
    #[error("EPL2 error report is not a list of two-digit codes: {line:?}")]
    InvalidErrorReport {
        /// The line found, with control characters removed.
        line: String,
    },
}

/// The state a printer is in, reduced to what an operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrinterState {
    /// Ready to print.
    Ready,
    /// Out of labels (on EPL2 printers: out of labels or out of ribbon; they do not tell them apart).
    PaperOut,
    /// Print head open (raised).
    HeadOpen,
    /// Paused from the front panel or by a command.
    Paused,
    /// Out of ribbon (thermal transfer printing).
    RibbonOut,
    /// Printing or holding work: labels remain in the current batch or formats wait in the
    /// receive buffer. New jobs queue behind it.
    Busy,
    /// Another condition that stops printing; the summary's detail names it.
    Error,
}

/// A printer state plus a sentence naming every other condition worth showing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSummary {
    /// The most important condition.
    pub state: PrinterState,
    /// Other active conditions, joined with "; ", or `None` when there are none.
    pub detail: Option<String>,
}

impl StatusSummary {
    fn from_conditions(state: PrinterState, details: Vec<String>) -> Self {
        StatusSummary {
            state,
            detail: if details.is_empty() {
                None
            } else {
                Some(details.join("; "))
            },
        }
    }
}

/// The complete `~HS` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    /// String 1: communication settings, paper, pause, buffer and temperature flags.
    pub string1: HostStatusString1,
    /// String 2: function settings, head, ribbon, print mode and batch progress.
    pub string2: HostStatusString2,
    /// String 3: password and memory.
    pub string3: HostStatusString3,
}

/// `~HS` string 1: `aaa,b,c,dddd,eee,f,g,h,iii,j,k,l`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatusString1 {
    /// `aaa`: serial interface settings, a decimal rendering of a 9-bit field (baud, parity...).
    pub communication_settings: u16,
    /// `b`: out of paper.
    pub paper_out: bool,
    /// `c`: paused.
    pub paused: bool,
    /// `dddd`: label length in dots.
    pub label_length_dots: u32,
    /// `eee`: formats waiting in the receive buffer.
    pub formats_in_buffer: u32,
    /// `f`: receive buffer full.
    pub buffer_full: bool,
    /// `g`: communications diagnostic mode (the printer dumps data instead of printing it).
    pub diagnostic_mode: bool,
    /// `h`: a format is partly received.
    pub partial_format: bool,
    /// `iii`: unused, always 000; kept so that every field of the answer is available.
    pub unused: u32,
    /// `j`: configuration data lost.
    pub corrupt_ram: bool,
    /// `k`: head under temperature.
    pub under_temperature: bool,
    /// `l`: head over temperature.
    pub over_temperature: bool,
}

/// `~HS` string 2: `mmm,n,o,p,q,r,s,t,uuuuuuuu,v,www`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatusString2 {
    /// `mmm`: function settings (media type, sensor profile...), a decimal rendering of a bit field.
    pub function_settings: u16,
    /// `n`: unused.
    pub unused: u32,
    /// `o`: print head up (open).
    pub head_up: bool,
    /// `p`: ribbon out.
    pub ribbon_out: bool,
    /// `q`: thermal transfer mode selected (otherwise direct thermal).
    pub thermal_transfer: bool,
    /// `r`: print mode.
    pub print_mode: ReportedPrintMode,
    /// `s`: print width mode.
    pub print_width_mode: u32,
    /// `t`: a printed label waits to be taken (peel-off mode).
    pub label_waiting: bool,
    /// `uuuuuuuu`: labels remaining in the current batch.
    pub labels_remaining: u32,
    /// `v`: format while printing (always 1 on current firmware).
    pub format_while_printing: bool,
    /// `www`: graphic images stored in memory.
    pub graphics_stored: u32,
}

/// `~HS` string 3: `xxxx,y`.
#[derive(Clone, PartialEq, Eq)]
pub struct HostStatusString3 {
    /// `xxxx`: the front panel password. Kept private from `Debug` output so it never reaches logs.
    pub password: u16,
    /// `y`: static RAM installed.
    pub static_ram_installed: bool,
}

impl fmt::Debug for HostStatusString3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostStatusString3")
            .field("password", &"****")
            .field("static_ram_installed", &self.static_ram_installed)
            .finish()
    }
}

/// The print mode reported in `~HS` string 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportedPrintMode {
    /// `0`
    Rewind,
    /// `1`
    PeelOff,
    /// `2`
    TearOff,
    /// `3`
    Cutter,
    /// `4`
    Applicator,
    /// `5`
    DelayedCut,
    /// Any other code (reserved values, RFID, kiosk and linerless modes vary by firmware).
    Other(char),
}

impl ReportedPrintMode {
    fn from_code(code: char) -> Self {
        match code {
            '0' => ReportedPrintMode::Rewind,
            '1' => ReportedPrintMode::PeelOff,
            '2' => ReportedPrintMode::TearOff,
            '3' => ReportedPrintMode::Cutter,
            '4' => ReportedPrintMode::Applicator,
            '5' => ReportedPrintMode::DelayedCut,
            other => ReportedPrintMode::Other(other),
        }
    }
}

/// Returns how many bytes of `buf` the first complete `~HS` answer takes, counting skipped
/// noise before it and the CR LF after its last ETX when already received, or `None` while the
/// answer is incomplete.
///
/// An STX inside a string means the string before it was cut short (a stale partial answer):
/// the string restarts at the new STX.
pub fn host_status_answer_len(buf: &[u8]) -> Option<usize> {
    let (frames, end) = host_status_frames(buf);
    if frames.len() < 3 {
        return None;
    }
    let mut end = end;
    if buf.get(end) == Some(&b'\r') {
        end += 1;
    }
    if buf.get(end) == Some(&b'\n') {
        end += 1;
    }
    Some(end)
}

/// Whether `buf` holds a complete `~HS` answer (three framed strings).
pub fn is_host_status_complete(buf: &[u8]) -> bool {
    host_status_answer_len(buf).is_some()
}

/// Finds up to three complete `STX ... ETX` strings; returns them and the index after the last
/// ETX consumed.
fn host_status_frames(buf: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut frames = Vec::with_capacity(3);
    let mut position = 0;
    let mut end = 0;
    while frames.len() < 3 {
        let Some(offset) = buf[position..].iter().position(|&b| b == STX) else {
            break;
        };
        let start = position + offset + 1;
        match buf[start..].iter().position(|&b| b == ETX || b == STX) {
            Some(length) if buf[start + length] == ETX => {
                frames.push(&buf[start..start + length]);
                position = start + length + 1;
                end = position;
            }
            // A new STX before the ETX: restart the string there.
            Some(length) => position = start + length,
            None => break,
        }
    }
    (frames, end)
}

/// Parses the first complete `~HS` answer in `buf`.
pub fn parse_host_status(buf: &[u8]) -> Result<HostStatus, StatusError> {
    let (frames, _) = host_status_frames(buf);
    let [one, two, three] = frames[..] else {
        return Err(StatusError::Incomplete {
            frames: frames.len(),
        });
    };
    Ok(HostStatus {
        string1: parse_string1(one)?,
        string2: parse_string2(two)?,
        string3: parse_string3(three)?,
    })
}

/// Splits one framed string into exactly `expected` trimmed fields.
fn fields(frame: &[u8], string: u8, expected: usize) -> Result<Vec<&str>, StatusError> {
    if !frame.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
        return Err(StatusError::NotAscii { string });
    }
    let text = std::str::from_utf8(frame).map_err(|_| StatusError::NotAscii { string })?;
    let fields: Vec<&str> = text.split(',').map(str::trim).collect();
    if fields.len() != expected {
        return Err(StatusError::FieldCount {
            string,
            expected,
            found: fields.len(),
        });
    }
    Ok(fields)
}

fn number<T: std::str::FromStr>(
    value: &str,
    string: u8,
    field: &'static str,
) -> Result<T, StatusError> {
    // `parse` alone would accept a leading '+'; the printer only ever sends digits.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StatusError::InvalidNumber {
            string,
            field,
            value: value.to_string(),
        });
    }
    value.parse().map_err(|_| StatusError::InvalidNumber {
        string,
        field,
        value: value.to_string(),
    })
}

fn flag(value: &str, string: u8, field: &'static str) -> Result<bool, StatusError> {
    match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(StatusError::InvalidFlag {
            string,
            field,
            value: value.to_string(),
        }),
    }
}

fn parse_string1(frame: &[u8]) -> Result<HostStatusString1, StatusError> {
    let f = fields(frame, 1, 12)?;
    Ok(HostStatusString1 {
        communication_settings: number(f[0], 1, "communication_settings")?,
        paper_out: flag(f[1], 1, "paper_out")?,
        paused: flag(f[2], 1, "paused")?,
        label_length_dots: number(f[3], 1, "label_length_dots")?,
        formats_in_buffer: number(f[4], 1, "formats_in_buffer")?,
        buffer_full: flag(f[5], 1, "buffer_full")?,
        diagnostic_mode: flag(f[6], 1, "diagnostic_mode")?,
        partial_format: flag(f[7], 1, "partial_format")?,
        unused: number(f[8], 1, "unused")?,
        corrupt_ram: flag(f[9], 1, "corrupt_ram")?,
        under_temperature: flag(f[10], 1, "under_temperature")?,
        over_temperature: flag(f[11], 1, "over_temperature")?,
    })
}

fn parse_string2(frame: &[u8]) -> Result<HostStatusString2, StatusError> {
    let f = fields(frame, 2, 11)?;
    let mut mode = f[5].chars();
    let print_mode = match (mode.next(), mode.next()) {
        (Some(code), None) => ReportedPrintMode::from_code(code),
        _ => {
            return Err(StatusError::InvalidPrintMode {
                value: f[5].to_string(),
            })
        }
    };
    Ok(HostStatusString2 {
        function_settings: number(f[0], 2, "function_settings")?,
        unused: number(f[1], 2, "unused")?,
        head_up: flag(f[2], 2, "head_up")?,
        ribbon_out: flag(f[3], 2, "ribbon_out")?,
        thermal_transfer: flag(f[4], 2, "thermal_transfer")?,
        print_mode,
        print_width_mode: number(f[6], 2, "print_width_mode")?,
        label_waiting: flag(f[7], 2, "label_waiting")?,
        labels_remaining: number(f[8], 2, "labels_remaining")?,
        format_while_printing: flag(f[9], 2, "format_while_printing")?,
        graphics_stored: number(f[10], 2, "graphics_stored")?,
    })
}

fn parse_string3(frame: &[u8]) -> Result<HostStatusString3, StatusError> {
    let f = fields(frame, 3, 2)?;
    Ok(HostStatusString3 {
        password: number(f[0], 3, "password")?,
        static_ram_installed: flag(f[1], 3, "static_ram_installed")?,
    })
}

impl HostStatus {
    /// Reduces the answer to one state plus the other conditions worth showing.
    ///
    /// Precedence follows what the operator must fix first: an open head hides every other
    /// problem, then missing paper, then missing ribbon, then faults that stop printing, then
    /// a pause (which paper-out and head-open also cause, so it comes last). A printer with
    /// none of these but with work in hand is [`PrinterState::Busy`].
    pub fn summary(&self) -> StatusSummary {
        let s1 = &self.string1;
        let s2 = &self.string2;
        let conditions = [
            (s2.head_up, PrinterState::HeadOpen, "print head open"),
            (s1.paper_out, PrinterState::PaperOut, "paper out"),
            (s2.ribbon_out, PrinterState::RibbonOut, "ribbon out"),
            (
                s1.over_temperature,
                PrinterState::Error,
                "print head over temperature",
            ),
            (
                s1.diagnostic_mode,
                PrinterState::Error,
                "communications diagnostic mode active",
            ),
            (s1.paused, PrinterState::Paused, "paused"),
            (
                s1.under_temperature,
                PrinterState::Ready,
                "print head under temperature",
            ),
            (
                s1.corrupt_ram,
                PrinterState::Ready,
                "configuration data lost (corrupt RAM)",
            ),
            (s1.buffer_full, PrinterState::Ready, "receive buffer full"),
            (
                s1.partial_format,
                PrinterState::Ready,
                "partial format in progress",
            ),
            (
                s2.label_waiting,
                PrinterState::Ready,
                "label waiting to be taken",
            ),
        ];
        let mut state = PrinterState::Ready;
        let mut details = Vec::new();
        for (active, condition_state, text) in conditions {
            if !active {
                continue;
            }
            // The first stopping condition becomes the state; the rest are listed as detail.
            if state == PrinterState::Ready && condition_state != PrinterState::Ready {
                state = condition_state;
                if condition_state != PrinterState::Error {
                    continue;
                }
            }
            details.push(text.to_string());
        }
        // Work in hand is worth showing whatever the state: a paused printer with labels left
        // will print them once resumed.
        if s2.labels_remaining > 0 {
            details.push(format!(
                "{} remaining in batch",
                count(s2.labels_remaining, "label", "labels")
            ));
        }
        if s1.formats_in_buffer > 0 {
            details.push(format!(
                "{} waiting in receive buffer",
                count(s1.formats_in_buffer, "format", "formats")
            ));
        }
        if state == PrinterState::Ready && (s2.labels_remaining > 0 || s1.formats_in_buffer > 0) {
            state = PrinterState::Busy;
        }
        StatusSummary::from_conditions(state, details)
    }
}

/// "1 label", "3 labels".
fn count(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The answer to EPL2 `^ee`: one or more two-digit error codes (`00` = no error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EplErrorReport {
    /// The codes in the order the printer sent them.
    pub codes: Vec<u8>,
}

impl EplErrorReport {
    /// Reduces the codes to one state plus a description of the others.
    ///
    /// `07` (head up) wins over `08` (paper or ribbon out, which EPL2 does not tell apart and is
    /// therefore reported as [`PrinterState::PaperOut`]); any other non-zero code is a
    /// [`PrinterState::Error`]. EPL2 has no pause report, so a paused printer reads as ready.
    pub fn summary(&self) -> StatusSummary {
        let mut codes: Vec<u8> = self.codes.iter().copied().filter(|&c| c != 0).collect();
        codes.dedup();
        let state = if codes.contains(&7) {
            PrinterState::HeadOpen
        } else if codes.contains(&8) {
            PrinterState::PaperOut
        } else if codes.is_empty() {
            PrinterState::Ready
        } else {
            PrinterState::Error
        };
        let details = codes
            .iter()
            .filter(|&&code| match state {
                PrinterState::HeadOpen => code != 7,
                // Code 08 stays in the detail: it says the ribbon may be the missing supply.
                _ => true,
            })
            .map(|&code| epl_error_description(code))
            .collect();
        StatusSummary::from_conditions(state, details)
    }
}

/// Describes an EPL2 error code as listed in the EPL2 programming guide.
pub fn epl_error_description(code: u8) -> String {
    let text = match code {
        0 => "no error",
        1 => "syntax error",
        2 => "object exceeded label border",
        3 => "bar code data length error",
        4 => "insufficient memory to store data",
        5 => "memory configuration error",
        6 => "RS-232 interface error",
        7 => "print head up (open)",
        8 => "out of paper or ribbon (label not detected)",
        9 => "duplicate name (form, graphic or soft font)",
        10 => "name not found (form, graphic or soft font)",
        11 => "not in data entry mode",
        12 => "PCX image processing error",
        13 => "print head too hot",
        81 => "cutter jammed or not installed",
        other => return format!("printer error code {other:02}"),
    };
    format!("{text} ({code:02})")
}

/// Returns how many bytes of `buf` the first complete `^ee` answer takes (including its line
/// end and anything skipped before it), or `None` while it is incomplete.
///
/// Empty lines and control characters (XON/XOFF flow control bytes some EPL2 printers send on
/// errors, a stray CR LF) are skipped.
pub fn epl_error_report_len(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(offset) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + offset];
        let end = start + offset + 1;
        if line.iter().any(|b| b.is_ascii_graphic()) {
            return Some(end);
        }
        start = end;
    }
    None
}

/// Parses the first complete `^ee` answer in `buf`: codes such as `00`, `07` or `07,08`,
/// terminated by CR LF (a bare LF is accepted).
pub fn parse_epl_error_report(buf: &[u8]) -> Result<EplErrorReport, StatusError> {
    let end = epl_error_report_len(buf).ok_or(StatusError::IncompleteErrorReport)?;
    let line: String = buf[..end]
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|&b| char::from(b))
        .collect();
    let invalid = || StatusError::InvalidErrorReport { line: line.clone() };
    let codes = line
        .trim()
        .split(',')
        .map(|code| {
            let code = code.trim();
            if code.len() == 2 && code.bytes().all(|b| b.is_ascii_digit()) {
                code.parse::<u8>().map_err(|_| invalid())
            } else {
                Err(invalid())
            }
        })
        .collect::<Result<Vec<u8>, StatusError>>()?;
    Ok(EplErrorReport { codes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTHY: &[u8] = b"\x02030,0,0,1218,000,0,0,0,000,0,0,0\x03\r\n\x02001,0,0,0,1,2,4,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n";

    /// Builds an answer from the three strings' texts.
    fn answer(one: &str, two: &str, three: &str) -> Vec<u8> {
        format!("\x02{one}\x03\r\n\x02{two}\x03\r\n\x02{three}\x03\r\n").into_bytes()
    }

    #[test]
    fn healthy_answer_parses_every_field() {
        let status = parse_host_status(HEALTHY).expect("healthy answer parses");
        assert_eq!(
            status.string1,
            HostStatusString1 {
                communication_settings: 30,
                paper_out: false,
                paused: false,
                label_length_dots: 1218,
                formats_in_buffer: 0,
                buffer_full: false,
                diagnostic_mode: false,
                partial_format: false,
                unused: 0,
                corrupt_ram: false,
                under_temperature: false,
                over_temperature: false,
            }
        );
        assert_eq!(
            status.string2,
            HostStatusString2 {
                function_settings: 1,
                unused: 0,
                head_up: false,
                ribbon_out: false,
                thermal_transfer: true,
                print_mode: ReportedPrintMode::TearOff,
                print_width_mode: 4,
                label_waiting: false,
                labels_remaining: 0,
                format_while_printing: true,
                graphics_stored: 0,
            }
        );
        assert_eq!(
            status.string3,
            HostStatusString3 {
                password: 1234,
                static_ram_installed: false,
            }
        );
        assert_eq!(
            status.summary(),
            StatusSummary {
                state: PrinterState::Ready,
                detail: None
            }
        );
    }

    #[test]
    fn password_is_hidden_from_debug_output() {
        let status = parse_host_status(HEALTHY).expect("healthy answer parses");
        let text = format!("{status:?}");
        assert!(!text.contains("1234"), "{text}");
        assert!(text.contains("****"), "{text}");
    }

    #[test]
    fn paper_out_answer() {
        // Running out of paper also pauses the printer.
        let buf = answer(
            "030,1,1,1218,000,0,0,0,000,0,0,0",
            "001,0,0,0,1,2,4,0,00000000,1,000",
            "1234,0",
        );
        let status = parse_host_status(&buf).expect("parses");
        assert!(status.string1.paper_out);
        assert_eq!(
            status.summary(),
            StatusSummary {
                state: PrinterState::PaperOut,
                detail: Some("paused".to_string())
            }
        );
    }

    #[test]
    fn head_open_answer() {
        let buf = answer(
            "030,0,1,1218,000,0,0,0,000,0,0,0",
            "001,0,1,0,1,2,4,0,00000000,1,000",
            "1234,0",
        );
        let status = parse_host_status(&buf).expect("parses");
        assert!(status.string2.head_up);
        assert_eq!(status.summary().state, PrinterState::HeadOpen);
        assert_eq!(status.summary().detail.as_deref(), Some("paused"));
    }

    #[test]
    fn paused_answer() {
        let buf = answer(
            "030,0,1,1218,000,0,0,0,000,0,0,0",
            "001,0,0,0,1,2,4,0,00000000,1,000",
            "1234,0",
        );
        let summary = parse_host_status(&buf).expect("parses").summary();
        assert_eq!(
            summary,
            StatusSummary {
                state: PrinterState::Paused,
                detail: None
            }
        );
    }

    #[test]
    fn ribbon_out_answer() {
        let buf = answer(
            "030,0,0,1218,000,0,0,0,000,0,0,0",
            "001,0,0,1,1,2,4,0,00000003,1,000",
            "1234,0",
        );
        let status = parse_host_status(&buf).expect("parses");
        assert!(status.string2.ribbon_out);
        assert_eq!(status.string2.labels_remaining, 3);
        assert_eq!(
            status.summary(),
            StatusSummary {
                state: PrinterState::RibbonOut,
                detail: Some("3 labels remaining in batch".to_string())
            }
        );
    }

    #[test]
    fn head_open_wins_over_paper_out_and_both_are_reported() {
        let buf = answer(
            "030,1,1,1218,000,0,0,0,000,0,0,0",
            "001,0,1,1,1,2,4,0,00000000,1,000",
            "1234,0",
        );
        let summary = parse_host_status(&buf).expect("parses").summary();
        assert_eq!(summary.state, PrinterState::HeadOpen);
        assert_eq!(
            summary.detail.as_deref(),
            Some("paper out; ribbon out; paused")
        );
    }

    #[test]
    fn faults_and_warnings_are_described() {
        let buf = answer(
            "030,0,0,1218,002,1,0,1,000,1,1,1",
            "001,0,0,0,0,1,4,1,00000000,1,002",
            "1234,1",
        );
        let status = parse_host_status(&buf).expect("parses");
        assert_eq!(status.string1.formats_in_buffer, 2);
        assert_eq!(status.string2.print_mode, ReportedPrintMode::PeelOff);
        assert_eq!(status.string2.graphics_stored, 2);
        assert!(status.string3.static_ram_installed);
        assert_eq!(
            status.summary(),
            StatusSummary {
                state: PrinterState::Error,
                detail: Some(
                    "print head over temperature; print head under temperature; \
                     configuration data lost (corrupt RAM); receive buffer full; \
                     partial format in progress; label waiting to be taken; \
                     2 formats waiting in receive buffer"
                        .to_string()
                ),
            }
        );
    }

    #[test]
    fn warnings_alone_leave_the_printer_ready() {
        let buf = answer(
            "030,0,0,1218,000,1,0,0,000,0,0,0",
            "001,0,0,0,1,2,4,0,00000000,1,000",
            "1234,0",
        );
        let summary = parse_host_status(&buf).expect("parses").summary();
        assert_eq!(summary.state, PrinterState::Ready);
        assert_eq!(summary.detail.as_deref(), Some("receive buffer full"));
    }

    #[test]
    fn printing_answer_is_busy() {
        let buf = answer(
            "030,0,0,1218,001,0,0,0,000,0,0,0",
            "001,0,0,0,1,2,4,0,00000012,1,000",
            "1234,0",
        );
        assert_eq!(
            parse_host_status(&buf).expect("parses").summary(),
            StatusSummary {
                state: PrinterState::Busy,
                detail: Some(
                    "12 labels remaining in batch; 1 format waiting in receive buffer".to_string()
                )
            }
        );
    }

    #[test]
    fn noise_before_the_first_stx_is_skipped() {
        let mut buf = b"\r\n\x11garbage\x03,,\r\n".to_vec();
        buf.extend_from_slice(HEALTHY);
        assert_eq!(host_status_answer_len(&buf), Some(buf.len()));
        assert_eq!(
            parse_host_status(&buf),
            parse_host_status(HEALTHY),
            "noise must not change the result"
        );
    }

    #[test]
    fn a_cut_short_string_restarts_at_the_next_stx() {
        let mut buf = b"\x02030,0,0,12".to_vec();
        buf.extend_from_slice(HEALTHY);
        assert_eq!(parse_host_status(&buf), parse_host_status(HEALTHY));
    }

    #[test]
    fn partial_reads_are_incomplete_until_the_third_etx() {
        for cut in 0..HEALTHY.len() {
            let part = &HEALTHY[..cut];
            let third_etx = HEALTHY
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == ETX)
                .nth(2)
                .map(|(i, _)| i)
                .expect("three ETX");
            let complete = cut > third_etx;
            assert_eq!(is_host_status_complete(part), complete, "cut at {cut}");
            if !complete {
                assert!(matches!(
                    parse_host_status(part),
                    Err(StatusError::Incomplete { .. })
                ));
            }
        }
        assert_eq!(host_status_answer_len(HEALTHY), Some(HEALTHY.len()));
        // Without the final CR LF the answer is still complete; the length stops at the ETX.
        let short = &HEALTHY[..HEALTHY.len() - 2];
        assert_eq!(host_status_answer_len(short), Some(short.len()));
    }

    #[test]
    fn answer_length_leaves_following_bytes_alone() {
        let mut buf = HEALTHY.to_vec();
        buf.extend_from_slice(b"\x02030,");
        assert_eq!(host_status_answer_len(&buf), Some(HEALTHY.len()));
    }

    #[test]
    fn incomplete_reports_how_many_strings_arrived() {
        assert_eq!(
            parse_host_status(&HEALTHY[..40]),
            Err(StatusError::Incomplete { frames: 1 })
        );
        assert_eq!(
            parse_host_status(b""),
            Err(StatusError::Incomplete { frames: 0 })
        );
    }

    #[test]
    fn garbage_is_rejected_with_typed_errors() {
        assert_eq!(
            parse_host_status(b"\x02hello\x03\x02world\x03\x02!\x03"),
            Err(StatusError::FieldCount {
                string: 1,
                expected: 12,
                found: 1
            })
        );
        let buf = answer(
            "030,x,0,1218,000,0,0,0,000,0,0,0",
            "001,0,0,0,1,2,4,0,00000000,1,000",
            "1234,0",
        );
        assert_eq!(
            parse_host_status(&buf),
            Err(StatusError::InvalidFlag {
                string: 1,
                field: "paper_out",
                value: "x".to_string()
            })
        );
        let buf = answer(
            "030,0,0,12a8,000,0,0,0,000,0,0,0",
            "001,0,0,0,1,2,4,0,00000000,1,000",
            "1234,0",
        );
        assert_eq!(
            parse_host_status(&buf),
            Err(StatusError::InvalidNumber {
                string: 1,
                field: "label_length_dots",
                value: "12a8".to_string()
            })
        );
        let buf = answer(
            "030,0,0,1218,000,0,0,0,000,0,0,0",
            "001,0,0,0,1,2,4,0,00000000,1",
            "1234,0",
        );
        assert_eq!(
            parse_host_status(&buf),
            Err(StatusError::FieldCount {
                string: 2,
                expected: 11,
                found: 10
            })
        );
        let buf = answer(
            "030,0,0,1218,000,0,0,0,000,0,0,0",
            "001,0,0,0,1,22,4,0,00000000,1,000",
            "1234,0",
        );
        assert_eq!(
            parse_host_status(&buf),
            Err(StatusError::InvalidPrintMode {
                value: "22".to_string()
            })
        );
        let buf = answer(
            "030,0,0,1218,000,0,0,0,000,0,0,0",
            "001,0,0,0,1,2,4,0,00000000,1,000",
            "12\u{7f}4,0",
        );
        assert_eq!(
            parse_host_status(&buf),
            Err(StatusError::NotAscii { string: 3 })
        );
        let buf = answer(
            "030,0,0,1218,000,0,0,0,000,0,0,0",
            "001,0,0,0,1,2,4,0,99999999999,1,000",
            "1234,0",
        );
        assert!(matches!(
            parse_host_status(&buf),
            Err(StatusError::InvalidNumber {
                string: 2,
                field: "labels_remaining",
                ..
            })
        ));
        // Random bytes without framing never parse.
        let noise: Vec<u8> = (0u8..=255).filter(|&b| b != STX).collect();
        assert!(matches!(
            parse_host_status(&noise),
            Err(StatusError::Incomplete { frames: 0 })
        ));
    }

    #[test]
    fn unknown_print_modes_are_kept() {
        let buf = answer(
            "030,0,0,1218,000,0,0,0,000,0,0,0",
            "001,0,0,0,1,K,4,0,00000000,1,000",
            "1234,0",
        );
        let status = parse_host_status(&buf).expect("parses");
        assert_eq!(status.string2.print_mode, ReportedPrintMode::Other('K'));
    }

    #[test]
    fn epl_no_error() {
        let report = parse_epl_error_report(b"00\r\n").expect("parses");
        assert_eq!(report.codes, vec![0]);
        assert_eq!(
            report.summary(),
            StatusSummary {
                state: PrinterState::Ready,
                detail: None
            }
        );
    }

    #[test]
    fn epl_head_open() {
        let report = parse_epl_error_report(b"07\r\n").expect("parses");
        assert_eq!(
            report.summary(),
            StatusSummary {
                state: PrinterState::HeadOpen,
                detail: None
            }
        );
    }

    #[test]
    fn epl_paper_or_ribbon_out() {
        let report = parse_epl_error_report(b"08\r\n").expect("parses");
        assert_eq!(
            report.summary(),
            StatusSummary {
                state: PrinterState::PaperOut,
                detail: Some("out of paper or ribbon (label not detected) (08)".to_string())
            }
        );
    }

    #[test]
    fn epl_several_codes_and_flow_control_noise() {
        // An XOFF byte and a stale empty line before the answer are skipped.
        let buf = b"\r\n\x1308,07\r\n";
        assert_eq!(epl_error_report_len(buf), Some(buf.len()));
        let report = parse_epl_error_report(buf).expect("parses");
        assert_eq!(report.codes, vec![8, 7]);
        let summary = report.summary();
        assert_eq!(summary.state, PrinterState::HeadOpen);
        assert_eq!(
            summary.detail.as_deref(),
            Some("out of paper or ribbon (label not detected) (08)")
        );
    }

    #[test]
    fn epl_other_codes_are_faults() {
        let report = parse_epl_error_report(b"81\r\n").expect("parses");
        assert_eq!(
            report.summary(),
            StatusSummary {
                state: PrinterState::Error,
                detail: Some("cutter jammed or not installed (81)".to_string())
            }
        );
        let report = parse_epl_error_report(b"42\n").expect("parses");
        assert_eq!(
            report.summary().detail.as_deref(),
            Some("printer error code 42")
        );
    }

    #[test]
    fn epl_partial_and_garbage_answers() {
        assert_eq!(epl_error_report_len(b"0"), None);
        assert_eq!(epl_error_report_len(b"00\r"), None);
        assert_eq!(epl_error_report_len(b"\r\n"), None);
        assert_eq!(
            parse_epl_error_report(b"07"),
            Err(StatusError::IncompleteErrorReport)
        );
        assert_eq!(
            parse_epl_error_report(b"OK\r\n"),
            Err(StatusError::InvalidErrorReport {
                line: "OK".to_string()
            })
        );
        assert_eq!(
            parse_epl_error_report(b"7\r\n"),
            Err(StatusError::InvalidErrorReport {
                line: "7".to_string()
            })
        );
        assert!(parse_epl_error_report(b"00,\r\n").is_err());
    }
}
