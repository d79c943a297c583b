//! The 32-byte status reply of a Brother QL printer, decoded.
//!
//! Layout (Brother, Raster Command Reference QL-700/710W/720NW and QL-800/810W/820NWB,
//! section "Status information"): 0 print head mark 80h, 1 size 20h, 2 "B" (42h), 3 series
//! code, 4 model code, 8 error information 1, 9 error information 2, 10 media width (mm),
//! 11 media type, 15 mode, 17 media length (mm), 18 status type, 19 phase type, 20..21 phase
//! number (big-endian), 22 notification number. The printer sends it in answer to `ESC i S`,
//! and on its own while printing: a phase change when printing starts, "printing completed"
//! after each page, an error status when something goes wrong, and a phase change back to the
//! receiving state.

use crate::media::{self, Media, MediaForm};

/// Length of every status reply.
pub const STATUS_LEN: usize = 32;

/// `ESC i S`: the status information request.
pub const STATUS_REQUEST: &[u8] = b"\x1B\x69\x53";

/// Error information 1 (byte 8): bit, meaning, and whether it means "no paper".
const ERRORS_1: &[(u8, &str)] = &[
    (0x01, "no media"),
    (0x02, "end of media"),
    (0x04, "cutter jam"),
    (0x10, "main unit in use"),
    (0x20, "printer turned off"),
    (0x40, "high-voltage adapter"),
    (0x80, "fan does not work"),
];

/// Error information 2 (byte 9).
const ERRORS_2: &[(u8, &str)] = &[
    (0x01, "wrong media loaded (replace media)"),
    (0x02, "expansion buffer full"),
    (0x04, "communication error"),
    (0x08, "communication buffer full"),
    (0x10, "cover open"),
    (0x20, "overheated"),
    (0x40, "media cannot be fed"),
    (0x80, "system error"),
];

/// Error information 1, bit "no media".
pub const ERROR1_NO_MEDIA: u8 = 0x01;
/// Error information 1, bit "end of media" (die-cut labels).
pub const ERROR1_END_OF_MEDIA: u8 = 0x02;
/// Error information 2, bit "replace media": the job's media is not the loaded one.
pub const ERROR2_REPLACE_MEDIA: u8 = 0x01;
/// Error information 2, bit "cover opened".
pub const ERROR2_COVER_OPEN: u8 = 0x10;

/// Why the printer sent a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusType {
    /// 00h: the answer to `ESC i S`.
    Reply,
    /// 01h: a page was printed.
    PrintingCompleted,
    /// 02h: an error occurred; the error bytes say which.
    ErrorOccurred,
    /// 04h: the printer is being turned off.
    TurnedOff,
    /// 05h: a notification (cooling started or finished).
    Notification,
    /// 06h: the phase changed (receiving or printing).
    PhaseChange,
    /// Any other value.
    Other(u8),
}

impl StatusType {
    fn from_byte(byte: u8) -> StatusType {
        match byte {
            0x00 => StatusType::Reply,
            0x01 => StatusType::PrintingCompleted,
            0x02 => StatusType::ErrorOccurred,
            0x04 => StatusType::TurnedOff,
            0x05 => StatusType::Notification,
            0x06 => StatusType::PhaseChange,
            other => StatusType::Other(other),
        }
    }
}

/// What the printer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// 00h: waiting for data.
    Receiving,
    /// 01h: printing (or cooling the head between pages).
    Printing,
    /// Any other value.
    Other(u8),
}

/// Why a status reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// Fewer than 32 bytes arrived.
    #[error("the status reply has {0} bytes, not 32")]
    Short(usize),
    /// The first three bytes are not 80h 20h 42h.
    #[error("the status reply starts {0:02X?}, not 80 20 42")]
    BadHeader([u8; 3]),
}

/// A decoded status reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReply {
    /// Bytes 3 and 4: series and model code.
    pub model_code: [u8; 2],
    /// Byte 8.
    pub error1: u8,
    /// Byte 9.
    pub error2: u8,
    /// Byte 10: loaded tape width in mm (0 without media).
    pub media_width_mm: u8,
    /// Byte 11: 0Ah continuous, 0Bh die-cut, 00h none.
    pub media_type: u8,
    /// Byte 17: label length in mm (0 for continuous tape).
    pub media_length_mm: u8,
    /// Byte 18.
    pub status_type: StatusType,
    /// Byte 19.
    pub phase: Phase,
    /// Byte 22: 03h cooling started, 04h cooling finished.
    pub notification: u8,
}

/// What the status means for a job, reduced to the plugin API's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Ready,
    Busy,
    PaperOut,
    CoverOpen,
    WrongMedia,
    Error,
}

impl StatusReply {
    /// Decodes the first 32 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<StatusReply, StatusError> {
        if bytes.len() < STATUS_LEN {
            return Err(StatusError::Short(bytes.len()));
        }
        if bytes[..3] != [0x80, 0x20, 0x42] {
            return Err(StatusError::BadHeader([bytes[0], bytes[1], bytes[2]]));
        }
        Ok(StatusReply {
            model_code: [bytes[3], bytes[4]],
            error1: bytes[8],
            error2: bytes[9],
            media_width_mm: bytes[10],
            media_type: bytes[11],
            media_length_mm: bytes[17],
            status_type: StatusType::from_byte(bytes[18]),
            phase: match bytes[19] {
                0x00 => Phase::Receiving,
                0x01 => Phase::Printing,
                other => Phase::Other(other),
            },
            notification: bytes[22],
        })
    }

    /// The errors the printer reports, in words, in bit order.
    pub fn errors(&self) -> Vec<&'static str> {
        let named = |byte: u8, table: &[(u8, &'static str)]| {
            table
                .iter()
                .filter(move |(bit, _)| byte & bit != 0)
                .map(|(_, name)| *name)
                .collect::<Vec<_>>()
        };
        let mut errors = named(self.error1, ERRORS_1);
        errors.extend(named(self.error2, ERRORS_2));
        errors
    }

    /// The loaded roll, when the printer reports one the driver knows.
    pub fn media(&self) -> Option<&'static Media> {
        MediaForm::from_code(self.media_type)
            .and_then(|form| media::find(form, self.media_width_mm, self.media_length_mm))
    }

    /// The loaded roll in words, also when the driver does not know it.
    pub fn media_description(&self) -> String {
        match (self.media(), MediaForm::from_code(self.media_type)) {
            (Some(known), _) => known.description(),
            (None, None) => "no roll loaded".to_string(),
            (None, Some(MediaForm::Continuous)) => {
                format!("unknown {} mm continuous tape", self.media_width_mm)
            }
            (None, Some(MediaForm::DieCut)) => format!(
                "unknown {} x {} mm die-cut labels",
                self.media_width_mm, self.media_length_mm
            ),
        }
    }

    /// The condition that matters most: faults that need the user first, then busy or ready.
    pub fn condition(&self) -> Condition {
        if self.error2 & ERROR2_COVER_OPEN != 0 {
            Condition::CoverOpen
        } else if self.error1 & (ERROR1_NO_MEDIA | ERROR1_END_OF_MEDIA) != 0
            || (self.media_type == 0 && self.error1 == 0 && self.error2 == 0)
        {
            // No roll at all reports media type 00h even before a job finds out.
            Condition::PaperOut
        } else if self.error2 & ERROR2_REPLACE_MEDIA != 0 {
            Condition::WrongMedia
        } else if self.error1 != 0 || self.error2 != 0 {
            Condition::Error
        } else if self.phase == Phase::Printing {
            Condition::Busy
        } else {
            Condition::Ready
        }
    }

    /// The status in words, e.g. "cover open; 62 mm continuous tape".
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.errors().into_iter().map(str::to_string).collect();
        if parts.is_empty() {
            parts.push(
                match self.phase {
                    Phase::Printing if self.notification == 0x03 => "cooling the print head",
                    Phase::Printing => "printing",
                    _ => "ready",
                }
                .to_string(),
            );
        }
        parts.push(self.media_description());
        parts.join("; ")
    }
}

/// Whether `bytes` holds at least one whole status reply.
pub fn reply_complete(bytes: &[u8]) -> bool {
    bytes.len() >= STATUS_LEN
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A status reply as a QL-820NWB sends it, with the given fields.
    pub(crate) fn reply(
        error1: u8,
        error2: u8,
        (media_type, width, length): (u8, u8, u8),
        status_type: u8,
        phase: u8,
    ) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&[0x80, 0x20, 0x42, 0x34, 0x41, 0x30, 0x30, 0x00]);
        bytes[8] = error1;
        bytes[9] = error2;
        bytes[10] = width;
        bytes[11] = media_type;
        bytes[14] = 0x3F;
        bytes[17] = length;
        bytes[18] = status_type;
        bytes[19] = phase;
        bytes
    }

    #[test]
    fn a_ready_printer_with_tape() {
        let status = StatusReply::parse(&reply(0, 0, (0x0A, 62, 0), 0, 0)).unwrap();
        assert_eq!(status.condition(), Condition::Ready);
        assert_eq!(status.status_type, StatusType::Reply);
        assert_eq!(status.describe(), "ready; 62 mm continuous tape");
        assert_eq!(status.media().map(|m| m.printable_width), Some(696));
    }

    #[test]
    fn faults_map_to_conditions_in_priority_order() {
        let parse = |e1, e2, media| StatusReply::parse(&reply(e1, e2, media, 2, 0)).unwrap();
        let tape = (0x0A, 62, 0);
        assert_eq!(parse(0x01, 0, tape).condition(), Condition::PaperOut);
        assert_eq!(parse(0, 0, (0, 0, 0)).condition(), Condition::PaperOut);
        assert_eq!(parse(0x01, 0x10, tape).condition(), Condition::CoverOpen);
        assert_eq!(parse(0, 0x01, tape).condition(), Condition::WrongMedia);
        assert_eq!(parse(0x04, 0, tape).condition(), Condition::Error);
        let both = parse(0x01, 0x10, (0, 0, 0));
        assert_eq!(both.describe(), "no media; cover open; no roll loaded");
        let jam = parse(0x04, 0x80, (0x0B, 29, 90));
        assert_eq!(
            jam.describe(),
            "cutter jam; system error; 29 x 90 mm die-cut labels"
        );
    }

    #[test]
    fn printing_phase_is_busy_and_unknown_media_is_described() {
        let status = StatusReply::parse(&reply(0, 0, (0x0B, 60, 33), 6, 1)).unwrap();
        assert_eq!(status.status_type, StatusType::PhaseChange);
        assert_eq!(status.condition(), Condition::Busy);
        assert_eq!(status.media(), None);
        assert_eq!(
            status.describe(),
            "printing; unknown 60 x 33 mm die-cut labels"
        );
    }

    #[test]
    fn short_and_foreign_replies_are_refused() {
        assert_eq!(StatusReply::parse(&[0x80; 10]), Err(StatusError::Short(10)));
        let mut bytes = reply(0, 0, (0x0A, 62, 0), 0, 0);
        bytes[2] = 0x41;
        assert_eq!(
            StatusReply::parse(&bytes),
            Err(StatusError::BadHeader([0x80, 0x20, 0x41]))
        );
    }
}
