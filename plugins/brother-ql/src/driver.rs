//! The plugin itself: the manifest with the USB ID table and profiles, and the printer that
//! reads the status, checks the job against the loaded roll, sends the raster stream and waits
//! for the printer to report every label printed.
//!
//! # Settings
//! Per device (config file) or per job; job settings win:
//! - `compression`: `auto` (default: PackBits on models that take it, per page when it makes
//!   the page smaller), `packbits` or `none`.
//! - `cut`: `each` (default: cut after every label), `end` (once after the job) or `none`.
//! - `priority`: `quality` (default) or `speed` (the `ESC i z` quality flag).
//! - `media`: the loaded roll (`62`, `29x90`, `102x152`...) when the printer cannot be asked
//!   (`check_status = false`) and for [`Printer::encode`]; by default 62 mm tape (102 mm on
//!   the QL-1100 family).
//! - `status_timeout_ms`: how long to wait for a status reply (default 2000).
//! - `page_timeout_ms`: how long to wait for the printer to report each label printed
//!   (default 20000: a metre of tape takes about ten seconds).
//! - `check_status`: `false` for transports with no way back from the printer.
//!
//! # Network printers
//! A QL on its network port (TCP 9100) prints what it receives and sends nothing back: the
//! references' "Normal flow for network (Standard TCP/IP port) connection" has no status
//! exchange. Over TCP the plugin therefore asks once; when the printer stays silent it
//! remembers that, prints on the roll named by `media` without a status check, and does not
//! wait for labels to be reported. A printer that answers (over USB, or a simulator) is
//! checked before and after every job.

use devicehub_plugin_api::{
    choice_setting, number_setting, setting, DeviceKind, ErrorKind, InputKind, MediaKind,
    OpenRequest, PluginError, PluginManifest, PrintInput, PrintJob, PrintReport, Printer,
    PrinterProfile, PrinterState, PrinterStatus, Setting, SupportLevel, TransportBox,
    TransportErrorKind, TransportKind, UsbModel, API_VERSION,
};

use crate::{
    media::{self, Media},
    raster::{self, Compression, CutMode, HeadModel, Page, RasterError, RasterOptions},
    status::{Condition, StatusReply, StatusType, STATUS_LEN, STATUS_REQUEST},
};

const VENDOR_BROTHER: u16 = 0x04F9;

/// The USB ID table: (product ID, model, support level, profile). Brother's printers with an
/// "Editor Lite" mode also enumerate as a USB mass-storage device while that mode is on: the
/// QL-700 as 04F9:2049 and the QL-1100 family as 04F9:20A9 (devices.md). Those IDs are not
/// printers and are deliberately absent: the user turns Editor Lite off to print.
const MODELS: &[(u16, &str, SupportLevel, &str)] = &[
    (0x2042, "QL-700", SupportLevel::Supported, "ql-700"),
    (0x2043, "QL-710W", SupportLevel::Supported, "ql-710w"),
    (0x2044, "QL-720NW", SupportLevel::Supported, "ql-710w"),
    (0x209B, "QL-800", SupportLevel::Supported, "ql-800"),
    (0x209C, "QL-810W", SupportLevel::Supported, "ql-810w"),
    (0x209D, "QL-820NWB", SupportLevel::Supported, "ql-810w"),
    (0x20A7, "QL-1100", SupportLevel::Supported, "ql-1100"),
    (0x20A8, "QL-1110NWB", SupportLevel::Supported, "ql-1100"),
    (0x20AB, "QL-1115NWB", SupportLevel::Supported, "ql-1100"),
];

/// The narrow models (QL-700/710W/720NW/800/810W/820NWB): 720-dot head, 62 mm rolls at most,
/// labels of 150 dots to 1 m.
const NARROW: HeadModel = HeadModel {
    bytes_per_line: 90,
    extra_right_margin: 0,
    compression: true,
    mode_switch: true,
    invalidate_len: 200,
    min_length_dots: 150,
    max_length_dots: 11811,
    wide: false,
};

/// Each profile's head. The QL-700 has neither compression nor `ESC i a`, the QL-800 no
/// compression ("The QL-800 does not support the compression mode", QL-800 series Raster
/// Command Reference, "M: Select compression mode"); the QL-800 series is sent 400 invalidate
/// bytes as its reference asks. The QL-1100 family has a 1296-dot head and takes labels of
/// 301 dots to 3 m.
const PROFILES: &[(&str, HeadModel)] = &[
    (
        "ql-700",
        HeadModel {
            compression: false,
            mode_switch: false,
            ..NARROW
        },
    ),
    ("ql-710w", NARROW),
    (
        "ql-800",
        HeadModel {
            compression: false,
            invalidate_len: 400,
            ..NARROW
        },
    ),
    (
        "ql-810w",
        HeadModel {
            invalidate_len: 400,
            ..NARROW
        },
    ),
    (
        "ql-1100",
        HeadModel {
            bytes_per_line: 162,
            extra_right_margin: 44,
            compression: true,
            mode_switch: true,
            invalidate_len: 200,
            min_length_dots: 301,
            max_length_dots: 35434,
            wide: true,
        },
    ),
];

/// IEEE-1284 model prefixes for printers whose USB ID is not in the table, most specific
/// first: the host takes the first rule that matches.
const IEEE1284_RULES: &[(&str, &str, &str, &str)] = &[
    ("Brother", "QL-11", "", "ql-1100"),
    ("Brother", "QL-10", "", "ql-1100"),
    ("Brother", "QL-800", "", "ql-800"),
    ("Brother", "QL-8", "", "ql-810w"),
    ("Brother", "QL-700", "", "ql-700"),
    ("Brother", "QL-7", "", "ql-710w"),
];

const LANGUAGE: &str = "Brother QL raster";

/// Reads of leftover data before a status request; a QL leaves at most a few statuses.
const MAX_STALE_READS: usize = 64;
/// Statuses sent on the printer's own (phase changes, notifications) skipped while waiting for
/// the answer to a status request.
const MAX_UNASKED_STATUSES: usize = 16;
const DPI: u32 = 300;

fn head(profile: &str) -> Option<&'static HeadModel> {
    PROFILES
        .iter()
        .find(|(name, _)| *name == profile)
        .map(|(_, head)| head)
}

/// The widest roll a head takes: what the host renders for.
fn widest_roll(head: &HeadModel) -> &'static Media {
    let id = if head.wide { "102" } else { "62" };
    media::by_id(id).expect("the media table has 62 and 102 mm tape")
}

/// The plugin's manifest.
pub fn manifest() -> PluginManifest {
    PluginManifest {
        name: "brother-ql".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        required_features: vec!["printer.raster".into(), "transport.stream".into()].into(),
        kind: DeviceKind::Printer,
        description: "Brother QL label printers (raster command protocol, DK rolls)".into(),
        usb_models: UsbModel::table(VENDOR_BROTHER, MODELS),
        ieee1284_matches: devicehub_plugin_api::Ieee1284Match::table(IEEE1284_RULES),
        printer_profiles: PROFILES
            .iter()
            .map(|(name, head)| PrinterProfile {
                name: (*name).into(),
                language: LANGUAGE.into(),
                dpi: DPI,
                width_dots: widest_roll(head).printable_width,
                max_length_dots: head.max_length_dots,
                media: vec![MediaKind::Continuous, MediaKind::DieCut].into(),
                inputs: vec![InputKind::Raster, InputKind::Raw].into(),
            })
            .collect::<Vec<_>>()
            .into(),
        default_profile: Some("ql-810w".into()).into(),
    }
}

/// An open Brother QL printer.
#[derive(Debug)]
pub struct BrotherPrinter {
    device_id: String,
    head: HeadModel,
    settings: Vec<Setting>,
    transport: TransportBox,
    /// Bytes read from the printer that do not yet make a whole 32-byte status.
    pending: Vec<u8>,
    /// Whether the printer answers status requests: unknown until it is first asked. Only a
    /// network connection can learn "no" (see the module documentation).
    answers_status: Option<bool>,
}

/// Opens a Brother QL printer (no I/O happens here).
pub fn open(request: &OpenRequest, transport: TransportBox) -> Result<BrotherPrinter, PluginError> {
    let head = head(request.profile.as_str()).ok_or_else(|| {
        PluginError::new(
            ErrorKind::InvalidJob,
            format!("unknown Brother QL profile '{}'", request.profile),
        )
    })?;
    Ok(BrotherPrinter {
        device_id: request.device_id.to_string(),
        head: *head,
        settings: request.settings.to_vec(),
        transport,
        pending: Vec::new(),
        answers_status: None,
    })
}

fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::new(ErrorKind::InvalidJob, message)
}

fn state_of(condition: Condition) -> PrinterState {
    match condition {
        Condition::Ready => PrinterState::Ready,
        Condition::Busy => PrinterState::Busy,
        Condition::PaperOut => PrinterState::PaperOut,
        Condition::CoverOpen => PrinterState::HeadOpen,
        Condition::WrongMedia | Condition::Error => PrinterState::Error,
    }
}

impl BrotherPrinter {
    /// A setting from the job, else from the device.
    fn setting<'a>(&'a self, job: Option<&'a PrintJob>, key: &str) -> Option<&'a str> {
        job.and_then(|j| setting(&j.settings, key))
            .or_else(|| setting(&self.settings, key))
    }

    fn millis(&self, key: &str, default: u32) -> Result<u32, PluginError> {
        Ok(number_setting(key, self.setting(None, key))?.unwrap_or(default))
    }

    fn options(&self, job: &PrintJob) -> Result<RasterOptions, PluginError> {
        let job_setting = |key| self.setting(Some(job), key);
        let compression = choice_setting(
            "compression",
            job_setting("compression"),
            &[
                ("auto", Compression::Auto),
                ("packbits", Compression::PackBits),
                ("none", Compression::None),
            ],
        )?
        .unwrap_or(Compression::Auto);
        let cut = choice_setting(
            "cut",
            job_setting("cut"),
            &[
                ("each", CutMode::EachLabel),
                ("end", CutMode::EndOfJob),
                ("none", CutMode::Never),
            ],
        )?
        .unwrap_or(CutMode::EachLabel);
        let quality = choice_setting(
            "priority",
            job_setting("priority"),
            &[("quality", true), ("speed", false)],
        )?
        .unwrap_or(true);
        Ok(RasterOptions {
            compression,
            cut,
            quality,
            copies: job.copies,
        })
    }

    /// The roll named by the `media` setting, else the widest roll the head takes.
    fn configured_roll(&self, job: Option<&PrintJob>) -> Result<&'static Media, PluginError> {
        match self.setting(job, "media") {
            None => Ok(widest_roll(&self.head)),
            Some(id) => media::by_id(id.trim()).ok_or_else(|| {
                let known: Vec<&str> = media::MEDIA.iter().map(|m| m.id).collect();
                invalid(format!(
                    "setting media = {id:?} is not one of {}",
                    known.join(", ")
                ))
            }),
        }
    }

    fn checks_status(&self) -> bool {
        self.setting(None, "check_status") != Some("false")
    }

    /// Reads the next whole status the printer sends, waiting at most `timeout_ms`.
    fn next_status(&mut self, timeout_ms: u32) -> Result<StatusReply, PluginError> {
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms.into());
        while self.pending.len() < STATUS_LEN {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(PluginError::new(
                    ErrorKind::Timeout,
                    format!("no status from the printer within {timeout_ms} ms"),
                ));
            }
            let left_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
            match self.transport.read(4096, left_ms).into_result() {
                Ok(chunk) => self.pending.extend_from_slice(&chunk),
                Err(err) if err.kind == TransportErrorKind::Timeout => {}
                Err(err) => return Err(err.into()),
            }
        }
        let frame: Vec<u8> = self.pending.drain(..STATUS_LEN).collect();
        StatusReply::parse(&frame).map_err(|e| {
            self.pending.clear();
            PluginError::new(
                ErrorKind::Protocol,
                format!("the printer's status could not be read: {e}"),
            )
        })
    }

    /// Forgets whatever the printer sent earlier (late phase changes after a job), so that
    /// the next status read answers the next request.
    fn discard_stale(&mut self) -> Result<(), PluginError> {
        self.pending.clear();
        // A printer sends a few statuses after a job; one that keeps sending is not a QL.
        for _ in 0..MAX_STALE_READS {
            match self.transport.read(4096, 1).into_result() {
                Ok(chunk) if !chunk.is_empty() => {}
                Ok(_) => return Ok(()),
                Err(err) if err.kind == TransportErrorKind::Timeout => return Ok(()),
                Err(err) if err.kind == TransportErrorKind::Unsupported => return Ok(()),
                Err(err) => return Err(err.into()),
            }
        }
        Err(PluginError::new(
            ErrorKind::Protocol,
            format!(
                "printer {} keeps sending data without being asked",
                self.device_id
            ),
        ))
    }

    /// Asks for the status; `None` when the transport has no way back from the printer.
    fn query_status(&mut self) -> Result<Option<StatusReply>, PluginError> {
        if !self.checks_status() || self.answers_status == Some(false) {
            return Ok(None);
        }
        let timeout = self.millis("status_timeout_ms", 2000)?;
        self.discard_stale()?;
        // The reference's flow charts start with invalidate and initialize, so that a printer
        // left in the middle of a command by an interrupted job reads the request afresh.
        let mut request = vec![0u8; self.head.invalidate_len];
        request.extend_from_slice(b"\x1B\x40");
        request.extend_from_slice(STATUS_REQUEST);
        self.transport
            .write(request.as_slice().into())
            .into_result()?;
        for _ in 0..MAX_UNASKED_STATUSES {
            match self.next_status(timeout) {
                Ok(status) if status.status_type == StatusType::Reply => {
                    self.answers_status = Some(true);
                    return Ok(Some(status));
                }
                // A phase change or notification sent on the printer's own: not our answer.
                Ok(_) => continue,
                Err(err) if err.kind == ErrorKind::Unsupported => return Ok(None),
                Err(err)
                    if err.kind == ErrorKind::Timeout
                        && self.answers_status.is_none()
                        && self.transport.info().kind == TransportKind::Tcp =>
                {
                    // A QL on its network port never answers: print without status from now on.
                    self.answers_status = Some(false);
                    return Ok(None);
                }
                Err(err) if err.kind == ErrorKind::Timeout => {
                    return Err(PluginError::not_ready(
                        PrinterState::Offline,
                        format!(
                            "printer {} did not answer a status request within {timeout} ms",
                            self.device_id
                        ),
                    ))
                }
                Err(err) => return Err(err),
            }
        }
        Err(PluginError::new(
            ErrorKind::Protocol,
            format!(
                "printer {} sent {MAX_UNASKED_STATUSES} statuses but no answer to the status \
                 request",
                self.device_id
            ),
        ))
    }

    /// The pages of a raster job, as the encoder takes them.
    fn pages<'a>(job: &'a PrintJob) -> Result<Vec<Page<'a>>, PluginError> {
        match &job.input {
            PrintInput::Raster(pages) => Ok(pages
                .iter()
                .map(|p| Page {
                    width: p.width,
                    height: p.height,
                    data: p.data.as_slice(),
                })
                .collect()),
            PrintInput::Raw(_) => Ok(Vec::new()),
            PrintInput::Pdf(_) => Err(invalid(
                "Brother QL printers do not take PDF; the host renders it first",
            )),
        }
    }

    fn encode_for(
        &self,
        job: &PrintJob,
        roll: &Media,
    ) -> Result<(Vec<u8>, raster::EncodeSummary), PluginError> {
        if job.copies == 0 {
            return Err(invalid("copies must be at least 1"));
        }
        if let PrintInput::Raw(bytes) = &job.input {
            return Ok((bytes.to_vec(), raster::EncodeSummary::default()));
        }
        let pages = Self::pages(job)?;
        let options = self.options(job)?;
        raster::encode_job(&self.head, roll, &pages, &options).map_err(|e| match e {
            RasterError::TooWide { .. }
            | RasterError::TooLongForLabel { .. }
            | RasterError::RollTooWide(_) => {
                PluginError::new(ErrorKind::MediaMismatch, e.to_string())
            }
            _ => invalid(e.to_string()),
        })
    }

    /// Waits until the printer reports `pages` labels printed, or an error.
    fn await_pages(&mut self, pages: u32) -> Result<String, PluginError> {
        let timeout = self.millis("page_timeout_ms", 20_000)?;
        let mut printed = 0;
        while printed < pages {
            let status = match self.next_status(timeout) {
                Ok(status) => status,
                Err(err) if err.kind == ErrorKind::Timeout => {
                    return Err(PluginError::new(
                        ErrorKind::Timeout,
                        format!(
                            "printer {} reported {printed} of {pages} labels printed and then \
                             nothing for {timeout} ms",
                            self.device_id
                        ),
                    ))
                }
                Err(err) => return Err(err),
            };
            match status.status_type {
                StatusType::PrintingCompleted => printed += 1,
                StatusType::ErrorOccurred | StatusType::TurnedOff => {
                    let condition = status.condition();
                    let state = match condition {
                        Condition::Ready | Condition::Busy => PrinterState::Error,
                        other => state_of(other),
                    };
                    return Err(PluginError::not_ready(
                        state,
                        format!(
                            "printer {} reports {} after {printed} of {pages} labels",
                            self.device_id,
                            describe_state(&status)
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(format!("printer reported {printed} labels printed"))
    }
}

/// The plugin API state's name followed by the printer's own words, e.g.
/// "head open; cover open; 62 mm continuous tape".
fn describe_state(status: &StatusReply) -> String {
    format!(
        "{}; {}",
        state_of(status.condition()).as_str(),
        status.describe()
    )
}

impl Printer for BrotherPrinter {
    fn status(&mut self) -> Result<PrinterStatus, PluginError> {
        match self.query_status() {
            Ok(Some(status)) => Ok(PrinterStatus {
                state: state_of(status.condition()),
                detail: status.describe().into(),
                media: status.media().map(Media::loaded).into(),
            }),
            Ok(None) => Ok(PrinterStatus {
                state: PrinterState::Ready,
                detail: "the printer does not report its status on this connection; the roll \
                         is taken from the media setting"
                    .into(),
                media: Some(self.configured_roll(None)?.loaded()).into(),
            }),
            Err(err) => match err.printer_state.into_option() {
                Some(state) => Ok(PrinterStatus {
                    state,
                    detail: err.message,
                    media: None.into(),
                }),
                None => Err(err),
            },
        }
    }

    fn encode(&mut self, job: &PrintJob) -> Result<Vec<u8>, PluginError> {
        let roll = self.configured_roll(Some(job))?;
        Ok(self.encode_for(job, roll)?.0)
    }

    fn print(&mut self, job: &PrintJob) -> Result<PrintReport, PluginError> {
        // Check what needs no printer first: bad settings never disturb it.
        self.options(job)?;
        let pages = Self::pages(job)?;
        let status = self.query_status()?;
        let roll = match &status {
            Some(status) => {
                let condition = status.condition();
                if !state_of(condition).can_print() {
                    return Err(PluginError::not_ready(
                        state_of(condition),
                        format!(
                            "printer {} reports {}",
                            self.device_id,
                            describe_state(status)
                        ),
                    ));
                }
                match status.media() {
                    Some(roll) => roll,
                    None if matches!(job.input, PrintInput::Raw(_)) => widest_roll(&self.head),
                    None => {
                        return Err(PluginError::new(
                            ErrorKind::MediaMismatch,
                            format!(
                                "loaded {}, which this driver does not know the printable \
                                 area of",
                                status.media_description()
                            ),
                        ))
                    }
                }
            }
            None => self.configured_roll(Some(job))?,
        };
        if !matches!(job.input, PrintInput::Raw(_)) {
            let sizes: Vec<(u32, u32)> = pages.iter().map(|p| (p.width, p.height)).collect();
            roll.check_fit(&sizes, job.media.as_ref().into_option())
                .map_err(|e| PluginError::new(ErrorKind::MediaMismatch, e.to_string()))?;
            if roll.wide_only && !self.head.wide {
                return Err(PluginError::new(
                    ErrorKind::MediaMismatch,
                    format!(
                        "loaded {}, which this model cannot print on",
                        roll.description()
                    ),
                ));
            }
        }
        let (bytes, summary) = self.encode_for(job, roll)?;
        self.transport
            .write(bytes.as_slice().into())
            .into_result()?;
        let mut detail = format!(
            "{LANGUAGE} on {}; {} of {} pages PackBits",
            roll.description(),
            summary.compressed_pages,
            summary.pages_sent
        );
        if status.is_some() && summary.pages_sent > 0 {
            detail = format!("{detail}; {}", self.await_pages(summary.pages_sent)?);
        } else {
            detail = format!("{detail}; status not available, printed without checks");
        }
        let labels = match &job.input {
            PrintInput::Raw(_) => job.copies,
            _ => summary.pages_sent,
        };
        Ok(PrintReport {
            bytes_sent: bytes.len() as u64,
            labels,
            detail: detail.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use devicehub_plugin_api::{
        abi_stable::std_types::{ROption, RVec},
        testing::ScriptedTransport,
        MediaRequest, RasterPage,
    };

    use super::*;
    use crate::status::tests::reply;

    const TAPE_62: (u8, u8, u8) = (0x0A, 62, 0);

    fn request(profile: &str, settings: &[(&str, &str)]) -> OpenRequest {
        OpenRequest {
            device_id: "test".into(),
            profile: profile.into(),
            model: ROption::RNone,
            settings: settings
                .iter()
                .map(|(k, v)| Setting::new(k, v))
                .collect::<Vec<_>>()
                .into(),
        }
    }

    /// A job of `pages` pages, 16 x 200 dots, with a black bar on the first row only. No byte
    /// of the encoded stream other than the final one is 1Ah, so a script can answer on it.
    fn job(pages: usize, copies: u32) -> PrintJob {
        let mut data = vec![0u8; 2 * 200];
        data[0] = 0xFF;
        PrintJob {
            job_id: "job-1".into(),
            input: PrintInput::Raster(RVec::from(vec![
                RasterPage {
                    width: 16,
                    height: 200,
                    data: RVec::from(data),
                };
                pages
            ])),
            copies,
            media: ROption::RNone,
            settings: RVec::new(),
        }
    }

    fn ready(media: (u8, u8, u8)) -> [u8; 32] {
        reply(0, 0, media, 0x00, 0x00)
    }

    /// What a QL sends after each page: printing phase, printing completed, receiving phase.
    fn page_printed(media: (u8, u8, u8)) -> Vec<u8> {
        [
            reply(0, 0, media, 0x06, 0x01),
            reply(0, 0, media, 0x01, 0x01),
            reply(0, 0, media, 0x06, 0x00),
        ]
        .concat()
    }

    #[test]
    fn manifest_profiles_cover_every_model_and_skip_mass_storage_ids() {
        let m = manifest();
        for model in m.usb_models.iter() {
            assert!(
                m.printer_profile(model.profile.as_str()).is_some(),
                "{}",
                model.model
            );
        }
        assert!(m.usb_model(0x04F9, 0x2049).is_none());
        assert!(m.usb_model(0x04F9, 0x20A9).is_none());
        assert_eq!(
            m.usb_model(0x04F9, 0x20A7).map(|m| m.profile.as_str()),
            Some("ql-1100")
        );
        let wide = m.printer_profile("ql-1100").expect("ql-1100 profile");
        assert_eq!((wide.dpi, wide.width_dots), (300, 1164));
        let narrow = m.printer_profile("ql-800").expect("ql-800 profile");
        assert_eq!(narrow.width_dots, 696);
    }

    #[test]
    fn ieee1284_rules_pick_the_most_specific_profile_first() {
        let m = manifest();
        let profile_for = |model: &str| {
            m.ieee1284_matches
                .iter()
                .find(|rule| model.starts_with(rule.model_prefix.as_str()))
                .map(|rule| rule.profile.to_string())
        };
        assert_eq!(profile_for("QL-1110NWB").as_deref(), Some("ql-1100"));
        assert_eq!(profile_for("QL-800").as_deref(), Some("ql-800"));
        assert_eq!(profile_for("QL-820NWB").as_deref(), Some("ql-810w"));
        assert_eq!(profile_for("QL-700").as_deref(), Some("ql-700"));
        assert_eq!(profile_for("QL-720NW").as_deref(), Some("ql-710w"));
        assert_eq!(profile_for("PT-P750W"), None);
    }

    #[test]
    fn print_reads_status_sends_the_job_and_waits_for_every_label() {
        let (transport, script) = ScriptedTransport::new("ql");
        script.reply_when(STATUS_REQUEST, &ready(TAPE_62));
        script.reply_when(b"\x0C", &page_printed(TAPE_62));
        script.reply_when(b"\x1A", &page_printed(TAPE_62));
        let mut printer = open(&request("ql-810w", &[]), transport.into_box()).unwrap();
        let report = printer.print(&job(2, 2)).unwrap();
        assert_eq!(report.labels, 4);
        assert!(
            report.detail.contains("62 mm continuous tape")
                && report.detail.contains("4 labels printed"),
            "{}",
            report.detail
        );
        let written = script.written();
        let status_request_len = 400 + 2 + 3;
        assert!(written[..400].iter().all(|&b| b == 0));
        assert_eq!(&written[400..status_request_len], b"\x1B\x40\x1B\x69\x53");
        assert_eq!(
            report.bytes_sent as usize,
            written.len() - status_request_len
        );
        assert_eq!(written.last(), Some(&0x1A));
    }

    #[test]
    fn cover_open_refuses_the_job_before_sending_it() {
        let (transport, script) = ScriptedTransport::new("ql");
        script.reply_when(STATUS_REQUEST, &reply(0, 0x10, TAPE_62, 0, 0));
        let mut printer = open(&request("ql-800", &[]), transport.into_box()).unwrap();
        let err = printer.print(&job(1, 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotReady);
        assert_eq!(
            err.printer_state.into_option(),
            Some(PrinterState::HeadOpen)
        );
        assert!(err.message.contains("cover open"), "{}", err.message);
        assert!(
            script.written().ends_with(STATUS_REQUEST),
            "no job bytes sent"
        );
        let status = printer.status().unwrap();
        assert_eq!(status.state, PrinterState::HeadOpen);
        assert_eq!(
            status
                .media
                .into_option()
                .map(|m| m.description.to_string()),
            Some("62 mm continuous tape".to_string())
        );
    }

    #[test]
    fn a_die_cut_job_on_tape_is_refused_with_both_media_named() {
        let (transport, script) = ScriptedTransport::new("ql");
        script.reply_when(STATUS_REQUEST, &ready(TAPE_62));
        let mut printer = open(&request("ql-1100", &[]), transport.into_box()).unwrap();
        let mut shipping = job(1, 1);
        shipping.media = ROption::RSome(MediaRequest {
            kind: MediaKind::DieCut,
            width_dots: 1200,
            length_dots: 1800,
        });
        let err = printer.print(&shipping).unwrap_err();
        assert_eq!(err.kind, ErrorKind::MediaMismatch);
        assert_eq!(
            err.message.as_str(),
            "loaded 62 mm continuous tape; job needs 102 x 152 mm die-cut"
        );
        assert!(
            script.written().ends_with(STATUS_REQUEST),
            "no job bytes sent"
        );
    }

    #[test]
    fn an_error_while_printing_fails_the_job_with_the_count_printed() {
        let (transport, script) = ScriptedTransport::new("ql");
        let labels = (0x0B, 29, 90);
        script.reply_when(STATUS_REQUEST, &ready(labels));
        let mut after_first = page_printed(labels);
        after_first.extend_from_slice(&reply(0x02, 0, labels, 0x02, 0x00));
        script.reply_when(b"\x0C", &after_first);
        let mut printer = open(&request("ql-810w", &[]), transport.into_box()).unwrap();
        let err = printer.print(&job(1, 3)).unwrap_err();
        assert_eq!(
            err.printer_state.into_option(),
            Some(PrinterState::PaperOut)
        );
        assert!(
            err.message.contains("end of media") && err.message.contains("after 1 of 3 labels"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_silent_printer_is_offline_and_a_dropped_one_is_a_transport_error() {
        let (transport, script) = ScriptedTransport::new("ql");
        let mut printer = open(
            &request("ql-810w", &[("status_timeout_ms", "20")]),
            transport.into_box(),
        )
        .unwrap();
        let err = printer.print(&job(1, 1)).unwrap_err();
        assert_eq!(err.printer_state.into_option(), Some(PrinterState::Offline));
        assert_eq!(printer.status().unwrap().state, PrinterState::Offline);
        script.disconnect();
        assert_eq!(
            printer.print(&job(1, 1)).unwrap_err().kind,
            ErrorKind::Transport
        );
    }

    #[test]
    fn stale_statuses_are_skipped_before_a_status_request() {
        let (transport, script) = ScriptedTransport::new("ql");
        script.push_read(&reply(0, 0, TAPE_62, 0x06, 0x00));
        script.reply_when(STATUS_REQUEST, &reply(0, 0x10, TAPE_62, 0, 0));
        let mut printer = open(&request("ql-810w", &[]), transport.into_box()).unwrap();
        assert_eq!(printer.status().unwrap().state, PrinterState::HeadOpen);
    }

    #[test]
    fn a_printer_that_only_sends_unasked_statuses_is_a_protocol_error() {
        let (transport, script) = ScriptedTransport::new("ql");
        let chatter: Vec<u8> = (0..MAX_UNASKED_STATUSES)
            .flat_map(|_| reply(0, 0, TAPE_62, 0x06, 0x01))
            .collect();
        script.reply_when(STATUS_REQUEST, &chatter);
        let mut printer = open(&request("ql-810w", &[]), transport.into_box()).unwrap();
        let err = printer.print(&job(1, 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Protocol);
        assert!(err.message.contains("no answer"), "{}", err.message);
        assert!(
            script.written().ends_with(STATUS_REQUEST),
            "no job bytes sent"
        );
    }

    #[test]
    fn encode_uses_the_media_setting_without_touching_the_printer() {
        let (transport, script) = ScriptedTransport::new("ql");
        let mut printer = open(
            &request("ql-700", &[("media", "29x90")]),
            transport.into_box(),
        )
        .unwrap();
        let bytes = printer.encode(&job(1, 1)).unwrap();
        assert!(script.written().is_empty());
        // The QL-700: 200 invalidate bytes, no raster-mode switch, 991 lines for the label.
        assert_eq!(&bytes[200..205], b"\x1B\x40\x1B\x69\x7A");
        assert_eq!(
            &bytes[205..213],
            &[0xCE, 0x0B, 29, 90, 0xDF, 0x03, 0x00, 0x00]
        );
        let err = open(&request("ql-700", &[("media", "99")]), {
            let (t, _) = ScriptedTransport::new("ql");
            t.into_box()
        })
        .unwrap()
        .encode(&job(1, 1))
        .unwrap_err();
        assert!(err.message.contains("media") && err.message.contains("29x90"));
    }

    #[test]
    fn without_a_back_channel_the_configured_roll_is_used() {
        let (transport, script) = ScriptedTransport::new("ql");
        let mut printer = open(
            &request("ql-810w", &[("check_status", "false"), ("media", "62x29")]),
            transport.into_box(),
        )
        .unwrap();
        let report = printer.print(&job(1, 1)).unwrap();
        assert_eq!(report.labels, 1);
        assert_eq!(report.bytes_sent as usize, script.written().len());
        let mut long = job(1, 1);
        long.input = PrintInput::Raster(RVec::from(vec![RasterPage {
            width: 16,
            height: 300,
            data: RVec::from(vec![0u8; 600]),
        }]));
        let err = printer.print(&long).unwrap_err();
        assert_eq!(err.kind, ErrorKind::MediaMismatch);
        assert!(
            err.message
                .starts_with("loaded 62 x 29 mm die-cut labels; job needs a print"),
            "{}",
            err.message
        );
    }
}
