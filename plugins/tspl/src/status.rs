//! The `<ESC>!?` status byte of TSPL printers and what it means for a job.
//!
//! TSC's "TSPL/TSPL2 Programming Manual", section "Status Polling Commands", `<ESC>!?`: the
//! printer answers at any time, even while in error, with one byte whose bits flag its state;
//! 0 means ready to print. Bit 0 head opened, bit 1 paper jam, bit 2 out of paper, bit 3 out
//! of ribbon, bit 4 pause, bit 5 printing, bit 6 cover opened (option), bit 7 environment
//! temperature over range (option).

use devicehub_plugin_api::PrinterState;

/// The status request: ESC, `!`, `?`.
pub const STATUS_REQUEST: &[u8] = b"\x1b!?";

/// One status byte, as the printer sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusByte(pub u8);

/// Each flag bit with the words a user reads, in the manual's order.
const FLAGS: [(u8, &str); 8] = [
    (0x01, "head open"),
    (0x02, "paper jam"),
    (0x04, "paper out"),
    (0x08, "ribbon out"),
    (0x10, "paused"),
    (0x20, "printing"),
    (0x40, "cover open"),
    (0x80, "temperature out of range"),
];

impl StatusByte {
    fn has(self, mask: u8) -> bool {
        self.0 & mask != 0
    }

    /// The one state that decides whether a job may be sent. When several flags are set, the
    /// one a user must fix first wins: an open head or cover before missing paper, paper before
    /// a jam, and so on; "printing" alone still takes jobs (they queue).
    pub fn state(self) -> PrinterState {
        if self.has(0x01) || self.has(0x40) {
            PrinterState::HeadOpen
        } else if self.has(0x04) {
            PrinterState::PaperOut
        } else if self.has(0x02) || self.has(0x80) {
            PrinterState::Error
        } else if self.has(0x08) {
            PrinterState::RibbonOut
        } else if self.has(0x10) {
            PrinterState::Paused
        } else if self.has(0x20) {
            PrinterState::Busy
        } else {
            PrinterState::Ready
        }
    }

    /// Every flag set, in words, e.g. "head open; paper out"; "ready" when none is.
    pub fn describe(self) -> String {
        let set: Vec<&str> = FLAGS
            .iter()
            .filter(|(mask, _)| self.has(*mask))
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

    /// The example answers tabulated under `<ESC>!?` in TSC's "TSPL/TSPL2 Programming Manual"
    /// (Status Polling Commands), with the state each must give.
    #[test]
    fn the_manual_status_table_reads_as_documented() {
        let table = [
            (0x00, PrinterState::Ready, "ready"),
            (0x01, PrinterState::HeadOpen, "head open"),
            (0x02, PrinterState::Error, "paper jam"),
            (0x03, PrinterState::HeadOpen, "head open; paper jam"),
            (0x04, PrinterState::PaperOut, "paper out"),
            (0x05, PrinterState::HeadOpen, "head open; paper out"),
            (0x08, PrinterState::RibbonOut, "ribbon out"),
            (0x09, PrinterState::HeadOpen, "head open; ribbon out"),
            (0x0A, PrinterState::Error, "paper jam; ribbon out"),
            (
                0x0B,
                PrinterState::HeadOpen,
                "head open; paper jam; ribbon out",
            ),
            (0x0C, PrinterState::PaperOut, "paper out; ribbon out"),
            (
                0x0D,
                PrinterState::HeadOpen,
                "head open; paper out; ribbon out",
            ),
            (0x10, PrinterState::Paused, "paused"),
            (0x20, PrinterState::Busy, "printing"),
        ];
        for (byte, state, words) in table {
            let status = StatusByte(byte);
            assert_eq!(status.state(), state, "0x{byte:02X}");
            assert_eq!(status.describe(), words, "0x{byte:02X}");
        }
    }

    #[test]
    fn optional_flags_stop_printing() {
        assert_eq!(StatusByte(0x40).state(), PrinterState::HeadOpen);
        assert_eq!(StatusByte(0x80).state(), PrinterState::Error);
        assert_eq!(StatusByte(0x30).state(), PrinterState::Paused);
        assert!(StatusByte(0x20).state().can_print());
        assert!(!StatusByte(0x10).state().can_print());
    }
}
