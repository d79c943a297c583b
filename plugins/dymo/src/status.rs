//! Parsing what LabelWriter printers answer: the one status byte of the 450 series, the 32-byte
//! print engine status and the 64-byte SKU record of the 550 series.
//!
//! 450 series (DYMO "LabelWriter 400 Series Technical Reference Manual", "ESC A Return Print
//! Engine Status"; the 450 series keeps the 400 series' raster command set): bit 0 ready
//! (always 1), bit 1 top of form, bit 5 out of paper, bit 6 paper jam, bit 7 error (also set
//! with out of paper); bits 2 to 4 are reserved.
//!
//! 550 series (DYMO "LabelWriter 550 Series Technical Reference", "ESC A Request Print Engine
//! Status" and "ESC U Get SKU Information", with the field layout labelle reads). DYMO's CUPS
//! language monitor reads the same offsets for the engine state, job ID, head status and main
//! bay; it takes the head voltage from byte 21, inside the SKU field of that layout, so the
//! voltage is read from byte 30 as labelle does. Multi-byte values are least significant byte
//! first.

use devicehub_plugin_api::PrinterState;
use thiserror::Error;

/// Why an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StatusError {
    #[error("expected {expected} bytes, got {actual}")]
    Length { expected: usize, actual: usize },
    #[error("the SKU record starts with {found:#06X}, not the magic number 0xCAB6")]
    Magic { found: u16 },
}

/// A state and the words that explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSummary {
    pub state: PrinterState,
    pub detail: String,
}

/// The 450 series status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lw450Status(pub u8);

impl Lw450Status {
    pub const READY: u8 = 0x01;
    pub const TOP_OF_FORM: u8 = 0x02;
    pub const PAPER_OUT: u8 = 0x20;
    pub const PAPER_JAM: u8 = 0x40;
    pub const ERROR: u8 = 0x80;

    /// Reads the answer to `ESC A`: exactly one byte.
    pub fn parse(answer: &[u8]) -> Result<Self, StatusError> {
        match answer {
            [byte] => Ok(Lw450Status(*byte)),
            _ => Err(StatusError::Length {
                expected: 1,
                actual: answer.len(),
            }),
        }
    }

    /// What the byte means for a job.
    pub fn summary(self) -> StatusSummary {
        let bits = self.0;
        let (state, detail) = if bits & Self::PAPER_OUT != 0 {
            (PrinterState::PaperOut, "paper out".to_string())
        } else if bits & Self::PAPER_JAM != 0 {
            (PrinterState::Error, "paper jam".to_string())
        } else if bits & Self::ERROR != 0 {
            (
                PrinterState::Error,
                "the printer reports an error (check the label path and the cover)".to_string(),
            )
        } else if bits & Self::TOP_OF_FORM != 0 {
            (PrinterState::Ready, "ready, at top of form".to_string())
        } else {
            (PrinterState::Ready, "ready".to_string())
        };
        StatusSummary {
            state,
            detail: format!("{detail} (status byte {bits:#04X})"),
        }
    }
}

/// What the 550's print engine is doing (status byte 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrintEngine {
    Idle,
    Printing,
    Error,
    Cancelling,
    Busy,
    Unlocked,
    Unknown(u8),
}

impl From<u8> for PrintEngine {
    fn from(value: u8) -> Self {
        match value {
            0 => PrintEngine::Idle,
            1 => PrintEngine::Printing,
            2 => PrintEngine::Error,
            3 => PrintEngine::Cancelling,
            4 => PrintEngine::Busy,
            5 => PrintEngine::Unlocked,
            other => PrintEngine::Unknown(other),
        }
    }
}

/// The 550's main bay (label roll) status, status byte 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MainBay {
    Unknown,
    Open,
    NoMedia,
    NotInsertedProperly,
    MediaStatusUnknown,
    Empty,
    CriticallyLow,
    Low,
    Ok,
    Jammed,
    Counterfeit,
    Other(u8),
}

impl From<u8> for MainBay {
    fn from(value: u8) -> Self {
        match value {
            0 => MainBay::Unknown,
            1 => MainBay::Open,
            2 => MainBay::NoMedia,
            3 => MainBay::NotInsertedProperly,
            4 => MainBay::MediaStatusUnknown,
            5 => MainBay::Empty,
            6 => MainBay::CriticallyLow,
            7 => MainBay::Low,
            8 => MainBay::Ok,
            9 => MainBay::Jammed,
            10 => MainBay::Counterfeit,
            other => MainBay::Other(other),
        }
    }
}

/// The 32-byte answer to `ESC A` on the 550 series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lw550Status {
    /// Byte 0.
    pub engine: PrintEngine,
    /// Bytes 1..5: the job being printed (or holding the lock), 0 when none.
    pub job_id: u32,
    /// Bytes 5..7: the label index being printed.
    pub label_index: u16,
    /// Byte 8: 0 ok, 1 overheated, 2 unknown.
    pub head_status: u8,
    /// Byte 9: print density in percent.
    pub density_percent: u8,
    /// Byte 10.
    pub main_bay: MainBay,
    /// Bytes 11..23: the SKU of the loaded labels, ASCII, NUL padded.
    pub sku: String,
    /// Bytes 23..27: the error present, 0 when none.
    pub error_id: u32,
    /// Bytes 27..29: labels left on the roll.
    pub labels_left: u16,
    /// Byte 30: 0 unknown, 1 ok, 2 low, 3 critically low, 4 too low to print.
    pub head_voltage: u8,
}

/// The length of the 550's status answer.
pub const LW550_STATUS_LEN: usize = 32;
/// The length of the 550's SKU record.
pub const SKU_RECORD_LEN: usize = 64;
/// The first two bytes of a valid SKU record, least significant byte first.
pub const SKU_MAGIC: u16 = 0xCAB6;

fn u16_le(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_le(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn ascii(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take_while(|&&b| b != 0)
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|&b| char::from(b))
        .collect()
}

impl Lw550Status {
    /// Reads a 32-byte status answer.
    pub fn parse(answer: &[u8]) -> Result<Self, StatusError> {
        if answer.len() != LW550_STATUS_LEN {
            return Err(StatusError::Length {
                expected: LW550_STATUS_LEN,
                actual: answer.len(),
            });
        }
        Ok(Lw550Status {
            engine: PrintEngine::from(answer[0]),
            job_id: u32_le(answer, 1),
            label_index: u16_le(answer, 5),
            head_status: answer[8],
            density_percent: answer[9],
            main_bay: MainBay::from(answer[10]),
            sku: ascii(&answer[11..23]),
            error_id: u32_le(answer, 23),
            labels_left: u16_le(answer, 27),
            head_voltage: answer[30],
        })
    }

    /// What the status means for a job. Faults of the label roll come first, since they are
    /// what a user must fix; then the print head; then what the engine is doing.
    pub fn summary(&self) -> StatusSummary {
        let (state, detail): (PrinterState, String) = match self.main_bay {
            MainBay::Open => (PrinterState::HeadOpen, "cover open".into()),
            MainBay::NoMedia => (PrinterState::PaperOut, "no labels loaded".into()),
            MainBay::NotInsertedProperly => (
                PrinterState::PaperOut,
                "labels not inserted properly".into(),
            ),
            MainBay::Empty => (PrinterState::PaperOut, "paper out: label roll empty".into()),
            MainBay::Jammed => (PrinterState::Error, "label jam".into()),
            MainBay::Counterfeit => (
                PrinterState::Error,
                "the loaded labels are not DYMO labels; the printer refuses them".into(),
            ),
            _ if self.head_status == 1 => (PrinterState::Error, "print head overheated".into()),
            _ if self.head_voltage == 4 => (
                PrinterState::Error,
                "print head voltage too low to print (check the power supply)".into(),
            ),
            _ => match self.engine {
                PrintEngine::Idle | PrintEngine::Unlocked => (PrinterState::Ready, "ready".into()),
                PrintEngine::Printing => (
                    PrinterState::Busy,
                    format!("printing label {} of job {}", self.label_index, self.job_id),
                ),
                PrintEngine::Busy => (PrinterState::Busy, "busy".into()),
                PrintEngine::Cancelling => (PrinterState::Busy, "cancelling a job".into()),
                PrintEngine::Error => (
                    PrinterState::Error,
                    format!("print engine error {}", self.error_id),
                ),
                PrintEngine::Unknown(code) => (
                    PrinterState::Error,
                    format!("unknown print engine state {code}"),
                ),
            },
        };
        let roll = match self.main_bay {
            MainBay::Low => "; labels low",
            MainBay::CriticallyLow => "; labels critically low",
            _ => "",
        };
        StatusSummary {
            state,
            detail: format!("{detail}{roll}"),
        }
    }
}

/// What kind of labels a SKU record describes (byte 23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    Continuous,
    DieCut,
    Card,
    Other(u8),
}

/// The 64-byte SKU record of the loaded labels (`ESC U`), read by the printer from the roll's
/// NFC tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuRecord {
    /// Bytes 8..20, e.g. "30256".
    pub sku: String,
    /// Byte 23.
    pub kind: LabelKind,
    /// Bytes 40..42: label length in tenths of a millimetre.
    pub length_tenth_mm: u16,
    /// Bytes 42..44: label width in tenths of a millimetre.
    pub width_tenth_mm: u16,
    /// Bytes 50..52: labels on a full roll.
    pub total_labels: u16,
}

impl SkuRecord {
    /// Reads a 64-byte SKU record. `Ok(None)` when the record is all zero: the printer answers
    /// that while its NFC reader is still waking up, and for rolls without a tag.
    pub fn parse(answer: &[u8]) -> Result<Option<Self>, StatusError> {
        if answer.len() != SKU_RECORD_LEN {
            return Err(StatusError::Length {
                expected: SKU_RECORD_LEN,
                actual: answer.len(),
            });
        }
        let magic = u16_le(answer, 0);
        if magic == 0 {
            return Ok(None);
        }
        if magic != SKU_MAGIC {
            return Err(StatusError::Magic { found: magic });
        }
        Ok(Some(SkuRecord {
            sku: ascii(&answer[8..20]),
            kind: match answer[23] {
                0 => LabelKind::Continuous,
                1 => LabelKind::DieCut,
                2 => LabelKind::Card,
                other => LabelKind::Other(other),
            },
            length_tenth_mm: u16_le(answer, 40),
            width_tenth_mm: u16_le(answer, 42),
            total_labels: u16_le(answer, 50),
        }))
    }

    /// Label width in dots at `dpi`.
    pub fn width_dots(&self, dpi: u32) -> u32 {
        tenth_mm_to_dots(self.width_tenth_mm, dpi)
    }

    /// Label length in dots at `dpi`; 0 for continuous labels.
    pub fn length_dots(&self, dpi: u32) -> u32 {
        if self.kind == LabelKind::Continuous {
            0
        } else {
            tenth_mm_to_dots(self.length_tenth_mm, dpi)
        }
    }

    /// How a user names the labels, e.g. "54 x 101 mm labels (SKU 99014)".
    pub fn describe(&self) -> String {
        let mm = |tenths: u16| (f64::from(tenths) / 10.0).round() as u32;
        match self.kind {
            LabelKind::Continuous => format!(
                "{} mm continuous labels (SKU {})",
                mm(self.width_tenth_mm),
                self.sku
            ),
            _ => format!(
                "{} x {} mm labels (SKU {})",
                mm(self.width_tenth_mm),
                mm(self.length_tenth_mm),
                self.sku
            ),
        }
    }
}

fn tenth_mm_to_dots(tenths: u16, dpi: u32) -> u32 {
    // Rounded to the nearest dot: 254 tenths of a millimetre make an inch.
    (u32::from(tenths) * dpi + 127) / 254
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lw450_status_bits_follow_the_manual() {
        // Technical Reference, "ESC A": an idle printer at top of form answers 0x03.
        assert_eq!(Lw450Status(0x03).summary().state, PrinterState::Ready);
        // Out of paper sets bit 5 and the error bit 7.
        let out = Lw450Status(0xA1).summary();
        assert_eq!(out.state, PrinterState::PaperOut);
        assert!(out.detail.contains("paper out"), "{}", out.detail);
        assert_eq!(Lw450Status(0xC1).summary().state, PrinterState::Error);
        assert_eq!(Lw450Status(0x81).summary().state, PrinterState::Error);
        assert_eq!(
            Lw450Status::parse(&[]),
            Err(StatusError::Length {
                expected: 1,
                actual: 0
            })
        );
    }

    /// A status answer laid out as the 550 Technical Reference's "ESC A" table.
    fn lw550_answer(engine: u8, bay: u8) -> Vec<u8> {
        let mut answer = vec![0u8; 32];
        answer[0] = engine;
        answer[1..5].copy_from_slice(&7u32.to_le_bytes());
        answer[5..7].copy_from_slice(&2u16.to_le_bytes());
        answer[9] = 100;
        answer[10] = bay;
        answer[11..16].copy_from_slice(b"99014");
        answer[27..29].copy_from_slice(&220u16.to_le_bytes());
        answer[29] = 1;
        answer[30] = 1;
        answer
    }

    #[test]
    fn lw550_status_fields_are_at_the_documented_offsets() {
        let status = Lw550Status::parse(&lw550_answer(1, 8)).unwrap();
        assert_eq!(status.engine, PrintEngine::Printing);
        assert_eq!(status.job_id, 7);
        assert_eq!(status.label_index, 2);
        assert_eq!(status.density_percent, 100);
        assert_eq!(status.main_bay, MainBay::Ok);
        assert_eq!(status.sku, "99014");
        assert_eq!(status.labels_left, 220);
        assert_eq!(status.summary().state, PrinterState::Busy);
    }

    #[test]
    fn lw550_bay_states_map_to_what_a_user_must_fix() {
        let state = |bay| Lw550Status::parse(&lw550_answer(0, bay)).unwrap().summary();
        assert_eq!(state(1).state, PrinterState::HeadOpen);
        assert_eq!(state(2).state, PrinterState::PaperOut);
        assert_eq!(state(5).state, PrinterState::PaperOut);
        assert_eq!(state(9).state, PrinterState::Error);
        assert!(state(10).detail.contains("not DYMO labels"));
        assert_eq!(state(8).state, PrinterState::Ready);
        assert!(state(7).detail.ends_with("labels low"));
        assert!(Lw550Status::parse(&[0; 31]).is_err());
    }

    #[test]
    fn sku_record_gives_the_label_size_in_dots() {
        let mut record = vec![0u8; 64];
        record[0..2].copy_from_slice(&0xCAB6u16.to_le_bytes());
        record[8..13].copy_from_slice(b"99014");
        record[23] = 1; // die-cut
        record[40..42].copy_from_slice(&1010u16.to_le_bytes());
        record[42..44].copy_from_slice(&540u16.to_le_bytes());
        let sku = SkuRecord::parse(&record).unwrap().unwrap();
        assert_eq!(sku.describe(), "54 x 101 mm labels (SKU 99014)");
        assert_eq!(sku.width_dots(300), 638);
        assert_eq!(sku.length_dots(300), 1193);
        assert_eq!(SkuRecord::parse(&[0u8; 64]), Ok(None));
        record[0] = 0x12;
        assert!(matches!(
            SkuRecord::parse(&record),
            Err(StatusError::Magic { .. })
        ));
    }
}
