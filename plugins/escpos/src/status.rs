//! The real-time status of ESC/POS printers and what it means for a job.
//!
//! Epson's ESC/POS command reference, `DLE EOT n` ("Transmit real-time status"): the printer
//! answers one byte at once, even when offline. In every answer bits 1 and 4 are 1 and bits 0
//! and 7 are 0 (`0xx1 xx10`).
//! - n = 1, printer status: bit 3 offline.
//! - n = 2, offline cause: bit 2 cover open, bit 3 paper being fed by the FEED button, bit 5
//!   printing stopped at paper end, bit 6 an error occurred.
//! - n = 3, error cause: bit 3 autocutter error, bit 5 unrecoverable error, bit 6
//!   automatically recoverable error (print head too hot, for instance).
//! - n = 4, roll paper sensor: bits 2 and 3 paper near its end, bits 5 and 6 paper out.

use devicehub_plugin_api::PrinterState;

/// `DLE EOT 1`: printer status.
pub const PRINTER_REQUEST: &[u8] = b"\x10\x04\x01";
/// `DLE EOT 2`: offline cause.
pub const OFFLINE_REQUEST: &[u8] = b"\x10\x04\x02";
/// `DLE EOT 3`: error cause.
pub const ERROR_REQUEST: &[u8] = b"\x10\x04\x03";
/// `DLE EOT 4`: roll paper sensor.
pub const PAPER_REQUEST: &[u8] = b"\x10\x04\x04";

/// Whether `byte` has the fixed bits every `DLE EOT` answer has.
pub fn is_status_byte(byte: u8) -> bool {
    byte & 0x93 == 0x12
}

/// The answers to `DLE EOT 1`, `2` and `4`, and to `3` when `2` reports an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealTimeStatus {
    pub printer: u8,
    pub offline: u8,
    pub error: Option<u8>,
    pub paper: u8,
}

impl RealTimeStatus {
    /// Whether the offline cause reports an error, so that the error cause is worth asking.
    pub fn offline_reports_error(offline: u8) -> bool {
        offline & 0x40 != 0
    }

    /// The one state that decides whether a job may be sent. When several conditions hold, the
    /// one a user must fix first wins: an open cover before missing paper, paper before an
    /// error (paper end is itself reported as an error cause by some models).
    pub fn state(&self) -> PrinterState {
        if self.offline & 0x04 != 0 {
            PrinterState::HeadOpen
        } else if self.offline & 0x20 != 0 || self.paper & 0x60 != 0 {
            PrinterState::PaperOut
        } else if self.offline & 0x40 != 0 {
            PrinterState::Error
        } else if self.offline & 0x08 != 0 {
            // The FEED button is held: the printer is busy feeding and takes the job after.
            PrinterState::Busy
        } else if self.printer & 0x08 != 0 {
            PrinterState::Paused
        } else {
            PrinterState::Ready
        }
    }

    /// Every condition set, in words, e.g. "cover open; paper out"; "ready" when none is.
    pub fn describe(&self) -> String {
        let error = self.error.unwrap_or(0);
        let conditions = [
            (self.offline & 0x04 != 0, "cover open"),
            (
                self.offline & 0x20 != 0 || self.paper & 0x60 != 0,
                "paper out",
            ),
            (self.paper & 0x0C != 0, "paper near its end"),
            (error & 0x08 != 0, "autocutter error"),
            (error & 0x20 != 0, "unrecoverable error"),
            (
                error & 0x40 != 0,
                "recoverable error (print head temperature)",
            ),
            (self.offline & 0x40 != 0 && error & 0x68 == 0, "error"),
            (self.offline & 0x08 != 0, "feeding paper"),
            (self.printer & 0x08 != 0, "offline"),
        ];
        let set: Vec<&str> = conditions
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, words)| *words)
            .collect();
        if set.is_empty() {
            "ready".to_string()
        } else {
            set.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(printer: u8, offline: u8, error: Option<u8>, paper: u8) -> RealTimeStatus {
        RealTimeStatus {
            printer,
            offline,
            error,
            paper,
        }
    }

    /// The bit tables of `DLE EOT` in Epson's reference, one condition at a time, with the
    /// state each must give; a printer that is offline sets bit 3 of `DLE EOT 1` as well.
    #[test]
    fn each_documented_condition_reads_as_its_state() {
        let table = [
            (status(0x12, 0x12, None, 0x12), PrinterState::Ready, "ready"),
            (
                status(0x1A, 0x16, None, 0x12),
                PrinterState::HeadOpen,
                "cover open; offline",
            ),
            (
                status(0x1A, 0x32, None, 0x72),
                PrinterState::PaperOut,
                "paper out; offline",
            ),
            (
                status(0x12, 0x12, None, 0x1E),
                PrinterState::Ready,
                "paper near its end",
            ),
            (
                status(0x1A, 0x52, Some(0x1A), 0x12),
                PrinterState::Error,
                "autocutter error; offline",
            ),
            (
                status(0x1A, 0x52, Some(0x52), 0x12),
                PrinterState::Error,
                "recoverable error (print head temperature); offline",
            ),
            (
                status(0x1A, 0x52, Some(0x12), 0x12),
                PrinterState::Error,
                "error; offline",
            ),
            (
                status(0x1A, 0x1A, None, 0x12),
                PrinterState::Busy,
                "feeding paper; offline",
            ),
            (
                status(0x1A, 0x12, None, 0x12),
                PrinterState::Paused,
                "offline",
            ),
            (
                status(0x1A, 0x36, None, 0x72),
                PrinterState::HeadOpen,
                "cover open; paper out; offline",
            ),
        ];
        for (status, state, words) in table {
            assert_eq!(status.state(), state, "{status:?}");
            assert_eq!(status.describe(), words, "{status:?}");
        }
    }

    #[test]
    fn only_bytes_with_the_fixed_bits_are_status_answers() {
        for byte in [0x12, 0x16, 0x1A, 0x32, 0x52, 0x72, 0x7E] {
            assert!(is_status_byte(byte), "0x{byte:02X}");
        }
        for byte in [0x00, 0x10, 0x13, 0x92, 0xFF] {
            assert!(!is_status_byte(byte), "0x{byte:02X}");
        }
    }
}
