//! The paper sensor status and what it means for a job.
//!
//! ESC/POS `DLE EOT 4` (Epson's ESC/POS command reference, "Transmit real-time status"):
//! the printer answers one byte at once, even when offline. Bits 1 and 4 are always 1, bits 0
//! and 7 always 0; bits 2 and 3 are set when the roll is near its end, bits 5 and 6 when the
//! paper is out.

use devicehub_plugin_api::PrinterState;

/// `DLE EOT 4`: transmit the roll paper sensor status.
pub const PAPER_SENSOR_REQUEST: &[u8] = b"\x10\x04\x04";

/// One paper sensor status byte as the printer sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaperSensor(pub u8);

impl PaperSensor {
    /// Whether the byte has the fixed bits of a status answer (0xx1 xx10 in binary).
    pub fn is_status(self) -> bool {
        self.0 & 0x93 == 0x12
    }

    /// Ready, or paper out.
    pub fn state(self) -> PrinterState {
        if self.0 & 0x60 != 0 {
            PrinterState::PaperOut
        } else {
            PrinterState::Ready
        }
    }

    /// The status in words.
    pub fn describe(self) -> &'static str {
        if self.0 & 0x60 != 0 {
            "paper out"
        } else if self.0 & 0x0C != 0 {
            "paper near its end"
        } else {
            "ready"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_values_read_as_documented() {
        for (byte, state, words) in [
            (0x12, PrinterState::Ready, "ready"),
            (0x1E, PrinterState::Ready, "paper near its end"),
            (0x72, PrinterState::PaperOut, "paper out"),
            (0x7E, PrinterState::PaperOut, "paper out"),
        ] {
            let sensor = PaperSensor(byte);
            assert!(sensor.is_status(), "0x{byte:02X}");
            assert_eq!(sensor.state(), state, "0x{byte:02X}");
            assert_eq!(sensor.describe(), words, "0x{byte:02X}");
        }
        assert!(!PaperSensor(0x00).is_status());
        assert!(!PaperSensor(0x93).is_status());
    }
}
