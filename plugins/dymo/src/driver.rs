//! The plugin itself: the manifest with the USB ID table and the profiles, and the printer that
//! checks status (and, on the 550 series, the loaded labels), encodes pages with
//! [`crate::raster`] or [`crate::lw550`], and sends them over the host's transport.
//!
//! The protocol is chosen by the profile, never by the USB ID: the 550 series' product IDs
//! differ between sources, so a printer whose ID is missing or wrong in the table is still
//! driven correctly once its row in the device table names `lw550` or `lw5xl`.
//!
//! # Settings
//! Per device (config file) or per job; job settings win:
//! - `density`: 450 series `light`, `medium`, `normal` (default) or `dark`; 550 series a
//!   percentage of the standard strobe time, 0..=200 (default: the printer's own setting).
//! - `quality`: `graphics` (default, best for barcodes and indicia) or `text` (faster).
//! - `status_timeout_ms`: how long to wait for a status answer (default 2000).
//! - `check_status`: `false` to skip status and media checks for links with no way back.

use devicehub_plugin_api::{
    choice_setting, number_setting, setting, DeviceKind, ErrorKind, InputKind, LoadedMedia,
    MediaKind, OpenRequest, PluginError, PluginManifest, PrintInput, PrintJob, PrintReport,
    Printer, PrinterProfile, PrinterState, PrinterStatus, RasterPage, Setting, SupportLevel,
    TransportBox, TransportErrorKind, UsbModel, API_VERSION,
};

use crate::{
    lw550::{self, Lw550Options},
    raster::{self, Density, Quality, RasterError, RasterOptions},
    status::{
        LabelKind, Lw450Status, Lw550Status, PrintEngine, SkuRecord, StatusSummary,
        LW550_STATUS_LEN, SKU_RECORD_LEN,
    },
};

const VENDOR_DYMO: u16 = 0x0922;

/// Every LabelWriter prints at 300 dpi.
const DPI: u32 = 300;
/// Head width of the 450, 450 Turbo and 550 (672 dots, 84 bytes per line).
const NARROW_HEAD: u32 = 672;
/// Head width of the 4XL and 5XL (1248 dots, 156 bytes per line).
const WIDE_HEAD: u32 = 1248;
/// The longest label the profiles accept: 12 inches, longer than any DYMO die-cut label
/// (the 4XL's 4 x 6 in shipping label is the longest) with room for continuous rolls.
const MAX_LENGTH: u32 = 12 * DPI;

/// A loaded label may be this much smaller than a page (1 mm at 300 dpi) and the page still
/// fits: renderers round page sizes to whole dots and label sizes come in tenths of a mm.
const FIT_TOLERANCE_DOTS: u32 = 12;

/// Language names of the two protocols, as the profiles declare them.
const LANGUAGE_450: &str = "LabelWriter raster";
const LANGUAGE_550: &str = "LabelWriter 550";

/// The USB ID table: (product ID, model, support level, profile).
///
/// The 450 series IDs come from DYMO's documentation and agree in every source. The 550
/// series IDs do not: some sources list 0x0028 (550) and 0x002A (5XL), others 0x0052 to
/// 0x0054; all are listed as experimental until confirmed on a device.
const MODELS: &[(u16, &str, SupportLevel, &str)] = &[
    (0x0020, "LabelWriter 450", SupportLevel::Supported, "lw450"),
    (
        0x0021,
        "LabelWriter 450 Turbo",
        SupportLevel::Supported,
        "lw450",
    ),
    (0x0025, "LabelWriter 4XL", SupportLevel::Supported, "lw4xl"),
    (
        0x0028,
        "LabelWriter 550",
        SupportLevel::Experimental,
        "lw550",
    ),
    (
        0x002A,
        "LabelWriter 5XL",
        SupportLevel::Experimental,
        "lw5xl",
    ),
    (
        0x0052,
        "LabelWriter 550",
        SupportLevel::Experimental,
        "lw550",
    ),
    (
        0x0053,
        "LabelWriter 550 Turbo",
        SupportLevel::Experimental,
        "lw550",
    ),
    (
        0x0054,
        "LabelWriter 5XL",
        SupportLevel::Experimental,
        "lw5xl",
    ),
];

fn profile(name: &str, language: &str, width_dots: u32) -> PrinterProfile {
    PrinterProfile {
        name: name.into(),
        language: language.into(),
        dpi: DPI,
        width_dots,
        max_length_dots: MAX_LENGTH,
        media: vec![MediaKind::DieCut, MediaKind::Continuous].into(),
        inputs: vec![InputKind::Raster, InputKind::Raw].into(),
    }
}

/// The plugin's manifest.
pub fn manifest() -> PluginManifest {
    PluginManifest {
        name: "dymo".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        required_features: vec!["printer.raster".into(), "transport.stream".into()].into(),
        kind: DeviceKind::Printer,
        description: "DYMO LabelWriter printers: 450 series raster and 550 series".into(),
        usb_models: UsbModel::table(VENDOR_DYMO, MODELS),
        // The host takes the first rule that matches, so the specific models come before the
        // catch-all for the 450 series' raster protocol.
        ieee1284_matches: devicehub_plugin_api::Ieee1284Match::table(&[
            ("DYMO", "LabelWriter 550", "", "lw550"),
            ("DYMO", "LabelWriter 5XL", "", "lw5xl"),
            ("DYMO", "LabelWriter 4XL", "", "lw4xl"),
            ("DYMO", "LabelWriter", "", "lw450"),
        ]),
        printer_profiles: vec![
            profile("lw450", LANGUAGE_450, NARROW_HEAD),
            profile("lw4xl", LANGUAGE_450, WIDE_HEAD),
            profile("lw550", LANGUAGE_550, NARROW_HEAD),
            profile("lw5xl", LANGUAGE_550, WIDE_HEAD),
        ]
        .into(),
        default_profile: Some("lw450".into()).into(),
    }
}

/// Which of the two LabelWriter protocols a profile speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// 450, 450 Turbo, 4XL: raster lines, one status byte.
    Lw450,
    /// 550, 550 Turbo, 5XL: framed jobs, 32-byte status, SKU record.
    Lw550,
}

/// Whether a status exchange may find the connection closed and open a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Before a job or for a status: a printer may close idle connections.
    MayReconnect,
    /// Right after a job was sent: a closed connection means the job may be lost.
    MustHoldJob,
}

/// An open LabelWriter.
#[derive(Debug)]
pub struct DymoPrinter {
    device_id: String,
    protocol: Protocol,
    head_dots: u32,
    settings: Vec<Setting>,
    transport: TransportBox,
}

/// Opens a LabelWriter (no I/O happens here).
pub fn open(request: &OpenRequest, transport: TransportBox) -> Result<DymoPrinter, PluginError> {
    let manifest = manifest();
    let profile = manifest
        .printer_profile(request.profile.as_str())
        .ok_or_else(|| {
            PluginError::new(
                ErrorKind::InvalidJob,
                format!(
                    "unknown DYMO profile '{}' (lw450, lw4xl, lw550, lw5xl)",
                    request.profile
                ),
            )
        })?;
    Ok(DymoPrinter {
        device_id: request.device_id.to_string(),
        protocol: if profile.language.as_str() == LANGUAGE_550 {
            Protocol::Lw550
        } else {
            Protocol::Lw450
        },
        head_dots: profile.width_dots,
        settings: request.settings.to_vec(),
        transport,
    })
}

/// FNV-1a over the job's ID: the 550 shows the job ID in its status, and a stable number per
/// job lets a status answer be matched to the job that caused it. Never 0, which means "none".
fn numeric_job_id(job_id: &str) -> u32 {
    let hash = job_id.bytes().fold(0x811C_9DC5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash.max(1)
}

/// Dots at 300 dpi in whole millimetres, for messages.
fn dots_to_mm(dots: u32) -> u32 {
    (f64::from(dots) * 25.4 / f64::from(DPI)).round() as u32
}

impl DymoPrinter {
    /// A setting from the job, else from the device.
    fn setting<'a>(&'a self, job: Option<&'a PrintJob>, key: &str) -> Option<&'a str> {
        job.and_then(|j| setting(&j.settings, key))
            .or_else(|| setting(&self.settings, key))
    }

    fn invalid(message: String) -> PluginError {
        PluginError::new(ErrorKind::InvalidJob, message)
    }

    fn status_timeout_ms(&self) -> Result<u32, PluginError> {
        let key = "status_timeout_ms";
        Ok(number_setting(key, self.setting(None, key))?.unwrap_or(2000))
    }

    fn quality(&self, job: &PrintJob) -> Result<Quality, PluginError> {
        let choices = [("graphics", Quality::Graphics), ("text", Quality::Text)];
        Ok(
            choice_setting("quality", self.setting(Some(job), "quality"), &choices)?
                .unwrap_or(Quality::Graphics),
        )
    }

    fn encode_pages(&self, pages: &[RasterPage], job: &PrintJob) -> Result<Vec<u8>, PluginError> {
        let quality = self.quality(job)?;
        let encoded = match self.protocol {
            Protocol::Lw450 => {
                let choices = [
                    ("light", Density::Light),
                    ("medium", Density::Medium),
                    ("normal", Density::Normal),
                    ("dark", Density::Dark),
                ];
                let density =
                    choice_setting("density", self.setting(Some(job), "density"), &choices)?
                        .unwrap_or(Density::Normal);
                raster::encode_job(
                    pages,
                    self.head_dots,
                    &RasterOptions {
                        copies: job.copies,
                        density,
                        quality,
                    },
                )
            }
            Protocol::Lw550 => {
                let density_percent = match self.setting(Some(job), "density") {
                    None => None,
                    Some(value) => match value.trim().parse::<u8>() {
                        Ok(percent) if percent <= 200 => Some(percent),
                        _ => {
                            return Err(Self::invalid(format!(
                                "setting density = {value:?} is not a percentage from 0 to 200 \
                                 (LabelWriter 550 series)"
                            )))
                        }
                    },
                };
                lw550::encode_job(
                    pages,
                    self.head_dots,
                    &Lw550Options {
                        job_id: numeric_job_id(job.job_id.as_str()),
                        copies: job.copies,
                        density_percent,
                        quality,
                    },
                )
            }
        };
        encoded.map_err(|err| match err {
            RasterError::TooWide { .. } => {
                PluginError::new(ErrorKind::MediaMismatch, err.to_string())
            }
            _ => Self::invalid(err.to_string()),
        })
    }

    fn encode_job(&self, job: &PrintJob) -> Result<Vec<u8>, PluginError> {
        if job.copies == 0 {
            return Err(Self::invalid("copies must be at least 1".into()));
        }
        match &job.input {
            PrintInput::Raster(pages) => self.encode_pages(pages, job),
            PrintInput::Raw(bytes) => Ok(bytes.to_vec()),
            PrintInput::Pdf(_) => Err(Self::invalid(
                "LabelWriter printers do not take PDF; the host renders it first".into(),
            )),
        }
    }

    /// Sends `request` and reads an answer of exactly `len` bytes; `None` when status checks
    /// are off or the transport has no way back from the printer.
    fn exchange(
        &mut self,
        request: &[u8],
        len: usize,
        link: Link,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        if self.setting(None, "check_status") == Some("false") {
            return Ok(None);
        }
        let timeout = self.status_timeout_ms()?;
        self.discard_stale(link)?;
        self.transport.write(request.into()).into_result()?;
        match self.transport.read_until(timeout, |b| b.len() >= len) {
            Ok(mut answer) => {
                answer.truncate(len);
                Ok(Some(answer))
            }
            Err(err) if err.kind == TransportErrorKind::Unsupported => Ok(None),
            Err(err) if err.kind == TransportErrorKind::Timeout => Err(PluginError::not_ready(
                PrinterState::Offline,
                format!(
                    "the printer did not answer a status request within {timeout} ms \
                     (it may be off or disconnected)"
                ),
            )),
            Err(err) => Err(err.into()),
        }
    }

    /// Reads and drops whatever the printer sent unasked, such as a late answer to a request
    /// that timed out, so that it is never taken for the answer to the next request.
    ///
    /// A connection found closed is an error when `link` is [`Link::MustHoldJob`]: the job just
    /// sent may have been cut, and the request that follows would only reach a fresh
    /// connection that knows nothing of it. Otherwise ([`Link::MayReconnect`], before a job or
    /// for a status) the printer closed an idle connection and the request reconnects.
    fn discard_stale(&mut self, link: Link) -> Result<(), PluginError> {
        // Bounded: a printer that streams without pause cannot keep the plugin here.
        for _ in 0..16 {
            match self.transport.read(4096, 1).into_result() {
                Ok(bytes) if !bytes.is_empty() => continue,
                Ok(_) => break,
                Err(err) if err.kind == TransportErrorKind::Timeout => break,
                Err(err) if err.kind == TransportErrorKind::Unsupported => break,
                Err(err) if link == Link::MustHoldJob => {
                    return Err(PluginError::new(
                        ErrorKind::Transport,
                        format!(
                            "the connection to printer {} failed while it took the job;                              the job may be partly printed: {}",
                            self.device_id, err.message
                        ),
                    ))
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn protocol_error(what: &str, err: impl std::fmt::Display) -> PluginError {
        PluginError::new(
            ErrorKind::Protocol,
            format!("the printer's {what} could not be read: {err}"),
        )
    }

    /// Asks for the status with `request` and sums it up.
    fn query_status(
        &mut self,
        request: &[u8],
        link: Link,
    ) -> Result<Option<StatusSummary>, PluginError> {
        match self.protocol {
            Protocol::Lw450 => match self.exchange(raster::STATUS_REQUEST, 1, link)? {
                Some(answer) => Lw450Status::parse(&answer)
                    .map(|s| Some(s.summary()))
                    .map_err(|e| Self::protocol_error("status byte", e)),
                None => Ok(None),
            },
            Protocol::Lw550 => match self.exchange(request, LW550_STATUS_LEN, link)? {
                Some(answer) => Lw550Status::parse(&answer)
                    .map(|s| Some(s.summary()))
                    .map_err(|e| Self::protocol_error("status", e)),
                None => Ok(None),
            },
        }
    }

    /// The 550's record of the loaded labels; `None` without a way back or without a tag.
    fn query_media(&mut self) -> Result<Option<SkuRecord>, PluginError> {
        match self.exchange(lw550::SKU_REQUEST, SKU_RECORD_LEN, Link::MayReconnect)? {
            Some(answer) => {
                SkuRecord::parse(&answer).map_err(|e| Self::protocol_error("label record", e))
            }
            None => Ok(None),
        }
    }

    /// Refuses pages that do not fit the loaded labels, naming both sizes.
    fn check_media(&self, job: &PrintJob, media: &SkuRecord) -> Result<(), PluginError> {
        let PrintInput::Raster(pages) = &job.input else {
            return Ok(());
        };
        let (width, length) = (media.width_dots(DPI), media.length_dots(DPI));
        for page in pages.iter() {
            let too_wide = page.width > width + FIT_TOLERANCE_DOTS;
            let too_long = length > 0 && page.height > length + FIT_TOLERANCE_DOTS;
            if too_wide || too_long {
                return Err(PluginError::new(
                    ErrorKind::MediaMismatch,
                    format!(
                        "printer {}: loaded {}; job needs {} x {} mm",
                        self.device_id,
                        media.describe(),
                        dots_to_mm(page.width),
                        dots_to_mm(page.height)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks the printer can take a job; on the 550 also takes the print lock and checks the
    /// loaded labels. Returns whether a status was available.
    fn check_before(&mut self, job: &PrintJob) -> Result<bool, PluginError> {
        if self.protocol == Protocol::Lw550 {
            return self.lock_550(job);
        }
        let Some(summary) = self.query_status(raster::STATUS_REQUEST, Link::MayReconnect)? else {
            return Ok(false);
        };
        if !summary.state.can_print() {
            return Err(PluginError::not_ready(
                summary.state,
                format!("printer {} reports {}", self.device_id, summary.detail),
            ));
        }
        Ok(true)
    }

    /// The 550's lock request (`ESC A 1`): the printer grants the lock when it answers idle
    /// with no job ID, as DYMO's language monitor checks. A job another host is printing keeps
    /// the lock, and this job is refused without touching it; a lock granted to a job that is
    /// then refused (a fault, labels that do not fit) is released with `ESC Q`.
    fn lock_550(&mut self, job: &PrintJob) -> Result<bool, PluginError> {
        let Some(answer) =
            self.exchange(lw550::LOCK_REQUEST, LW550_STATUS_LEN, Link::MayReconnect)?
        else {
            return Ok(false);
        };
        let status = Lw550Status::parse(&answer).map_err(|e| Self::protocol_error("status", e))?;
        let summary = status.summary();
        let granted = status.engine == PrintEngine::Idle && status.job_id == 0;
        let refusal = if !summary.state.can_print() {
            Some(PluginError::not_ready(
                summary.state,
                format!("printer {} reports {}", self.device_id, summary.detail),
            ))
        } else if !granted {
            Some(PluginError::not_ready(
                PrinterState::Busy,
                format!(
                    "printer {} is busy with another job (job {}); this job was not sent",
                    self.device_id, status.job_id
                ),
            ))
        } else {
            match self.query_media()? {
                Some(media) => self.check_media(job, &media).err(),
                None => None,
            }
        };
        match refusal {
            Some(refusal) => {
                if granted {
                    self.transport
                        .write(lw550::END_OF_JOB.into())
                        .into_result()?;
                }
                Err(refusal)
            }
            None => Ok(true),
        }
    }
}

impl Printer for DymoPrinter {
    fn status(&mut self) -> Result<PrinterStatus, PluginError> {
        let request = match self.protocol {
            Protocol::Lw450 => raster::STATUS_REQUEST,
            Protocol::Lw550 => lw550::STATUS_REQUEST,
        };
        let queried = self
            .query_status(request, Link::MayReconnect)
            .and_then(|summary| {
                let media = match (self.protocol, &summary) {
                    (Protocol::Lw550, Some(_)) => self.query_media()?,
                    _ => None,
                };
                Ok((summary, media))
            });
        match queried {
            Ok((Some(summary), media)) => Ok(PrinterStatus {
                state: summary.state,
                detail: summary.detail.into(),
                media: media
                    .map(|m| LoadedMedia {
                        kind: if m.kind == LabelKind::Continuous {
                            MediaKind::Continuous
                        } else {
                            MediaKind::DieCut
                        },
                        width_dots: m.width_dots(DPI),
                        length_dots: m.length_dots(DPI),
                        description: m.describe().into(),
                    })
                    .into(),
            }),
            Ok((None, _)) => Ok(PrinterStatus {
                state: PrinterState::Ready,
                detail: "status not available over this connection".into(),
                media: None::<LoadedMedia>.into(),
            }),
            Err(err) if matches!(err.kind, ErrorKind::NotReady | ErrorKind::Transport) => {
                Ok(PrinterStatus {
                    state: err
                        .printer_state
                        .into_option()
                        .unwrap_or(PrinterState::Offline),
                    detail: err.message,
                    media: None::<LoadedMedia>.into(),
                })
            }
            Err(err) => Err(err),
        }
    }

    fn encode(&mut self, job: &PrintJob) -> Result<Vec<u8>, PluginError> {
        self.encode_job(job)
    }

    fn print(&mut self, job: &PrintJob) -> Result<PrintReport, PluginError> {
        // Encode first: a job that cannot be encoded never disturbs the printer.
        let bytes = self.encode_job(job)?;
        let checked = self.check_before(job)?;
        self.transport
            .write(bytes.as_slice().into())
            .into_result()?;
        let pages = match &job.input {
            PrintInput::Raster(pages) => pages.len() as u32,
            _ => 1,
        };
        let protocol = match self.protocol {
            Protocol::Lw450 => "LabelWriter 450 raster",
            Protocol::Lw550 => "LabelWriter 550",
        };
        let mut detail = format!(
            "{protocol}, {}",
            if checked {
                "status checked"
            } else {
                "status not available"
            }
        );
        // A fault that appears while the job is taken in (the roll running out) shows in the
        // next status answer; report it instead of claiming success.
        if checked {
            let request = match self.protocol {
                Protocol::Lw450 => raster::STATUS_REQUEST,
                Protocol::Lw550 => lw550::STATUS_REQUEST,
            };
            if let Some(summary) = self.query_status(request, Link::MustHoldJob)? {
                if !summary.state.can_print() {
                    return Err(PluginError::not_ready(
                        summary.state,
                        format!(
                            "printer {} reports {} after the job was sent; it may be partly printed",
                            self.device_id, summary.detail
                        ),
                    ));
                }
                detail = format!("{detail}; printer {}", summary.detail);
            }
        }
        Ok(PrintReport {
            bytes_sent: bytes.len() as u64,
            labels: pages.saturating_mul(job.copies),
            detail: detail.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use devicehub_plugin_api::{
        abi_stable::std_types::{ROption, RVec},
        testing::ScriptedTransport,
    };

    use super::*;

    /// 450 status byte of an idle printer at top of form.
    const LW450_READY: &[u8] = &[0x03];
    /// 450 status byte when out of paper (bits 5 and 7, ready bit always set).
    const LW450_PAPER_OUT: &[u8] = &[0xA1];

    fn request(profile: &str, settings: &[(&str, &str)]) -> OpenRequest {
        OpenRequest {
            device_id: "desk-dymo".into(),
            profile: profile.into(),
            model: ROption::RNone,
            settings: settings
                .iter()
                .map(|(k, v)| Setting::new(k, v))
                .collect::<Vec<_>>()
                .into(),
        }
    }

    fn page(width: u32, height: u32) -> RasterPage {
        let stride = width.div_ceil(8) as usize;
        let mut data = vec![0u8; stride * height as usize];
        data[0] = 0xF0;
        RasterPage {
            width,
            height,
            data: RVec::from(data),
        }
    }

    fn job(pages: Vec<RasterPage>, copies: u32) -> PrintJob {
        PrintJob {
            job_id: "job-1".into(),
            input: PrintInput::Raster(RVec::from(pages)),
            copies,
            media: ROption::RNone,
            settings: RVec::new(),
        }
    }

    /// A 550 status answer: engine state in byte 0, main bay in byte 10.
    fn lw550_status(engine: u8, bay: u8) -> Vec<u8> {
        let mut answer = vec![0u8; 32];
        answer[0] = engine;
        answer[10] = bay;
        answer[30] = 1;
        answer
    }

    /// A 550 SKU record for die-cut labels of the given size in tenths of a millimetre.
    fn sku(sku: &str, width: u16, length: u16) -> Vec<u8> {
        let mut record = vec![0u8; 64];
        record[0..2].copy_from_slice(&0xCAB6u16.to_le_bytes());
        record[8..8 + sku.len()].copy_from_slice(sku.as_bytes());
        record[23] = 1;
        record[40..42].copy_from_slice(&length.to_le_bytes());
        record[42..44].copy_from_slice(&width.to_le_bytes());
        record
    }

    #[test]
    fn manifest_profiles_cover_every_model_and_550_ids_are_experimental() {
        let m = manifest();
        for model in m.usb_models.iter() {
            assert!(
                m.printer_profile(model.profile.as_str()).is_some(),
                "{}",
                model.model
            );
            if model.model.contains("550") || model.model.contains("5XL") {
                assert_eq!(model.support, SupportLevel::Experimental, "{}", model.model);
            }
        }
        assert_eq!(
            m.usb_model(0x0922, 0x0025).map(|m| m.profile.as_str()),
            Some("lw4xl")
        );
        let wide = m.printer_profile("lw5xl").unwrap();
        assert_eq!((wide.dpi, wide.width_dots), (300, 1248));
        assert_eq!(m.printer_profile("lw450").unwrap().width_dots, 672);
    }

    #[test]
    fn ieee1284_rules_send_each_model_to_its_protocol() {
        let m = manifest();
        // The first rule whose model prefix matches wins, as in the host.
        let profile_for = |model: &str| {
            m.ieee1284_matches
                .iter()
                .find(|rule| {
                    model
                        .to_ascii_lowercase()
                        .starts_with(&rule.model_prefix.as_str().to_ascii_lowercase())
                })
                .map(|rule| rule.profile.to_string())
        };
        assert_eq!(
            profile_for("LabelWriter 550 Turbo").as_deref(),
            Some("lw550")
        );
        assert_eq!(profile_for("LabelWriter 5XL").as_deref(), Some("lw5xl"));
        assert_eq!(profile_for("LabelWriter 4XL").as_deref(), Some("lw4xl"));
        assert_eq!(
            profile_for("LabelWriter 450 Turbo").as_deref(),
            Some("lw450")
        );
    }

    #[test]
    fn lw450_print_checks_status_sends_raster_and_checks_again() {
        let (transport, script) = ScriptedTransport::new("lw450");
        script.reply_when(&[0x1B, b'A'], LW450_READY);
        let mut printer = open(&request("lw450", &[]), transport.into_box()).unwrap();
        let report = printer.print(&job(vec![page(16, 2)], 2)).unwrap();
        assert_eq!(report.labels, 2);
        let written = script.written();
        assert!(
            written.starts_with(&[0x1B, b'A', 0x1B, 0x1B]),
            "status first"
        );
        assert!(written.ends_with(&[0x1B, b'E', 0x1B, b'A']), "status last");
        assert_eq!(report.bytes_sent as usize, written.len() - 4);
        assert!(report.detail.contains("ready"), "{}", report.detail);
    }

    #[test]
    fn lw450_paper_out_refuses_the_job_before_sending_it() {
        let (transport, script) = ScriptedTransport::new("lw450");
        script.reply_when(&[0x1B, b'A'], LW450_PAPER_OUT);
        let mut printer = open(&request("lw450", &[]), transport.into_box()).unwrap();
        let err = printer.print(&job(vec![page(16, 2)], 1)).unwrap_err();
        assert_eq!(
            err.printer_state.into_option(),
            Some(PrinterState::PaperOut)
        );
        assert!(err.message.contains("paper out"), "{}", err.message);
        assert_eq!(
            script.written(),
            vec![0x1B, b'A'],
            "no label bytes were sent"
        );
        assert_eq!(printer.status().unwrap().state, PrinterState::PaperOut);
    }

    #[test]
    fn a_late_answer_is_not_taken_for_the_next_one() {
        let (transport, script) = ScriptedTransport::new("lw450");
        // A paper-out byte that answered an earlier request after it had timed out.
        script.push_read(LW450_PAPER_OUT);
        script.reply_when(&[0x1B, b'A'], LW450_READY);
        let mut printer = open(&request("lw450", &[]), transport.into_box()).unwrap();
        assert_eq!(printer.status().unwrap().state, PrinterState::Ready);
    }

    #[test]
    fn a_silent_printer_is_offline() {
        let (transport, _script) = ScriptedTransport::new("lw450");
        let mut printer = open(
            &request("lw450", &[("status_timeout_ms", "20")]),
            transport.into_box(),
        )
        .unwrap();
        let err = printer.print(&job(vec![page(8, 1)], 1)).unwrap_err();
        assert_eq!(err.printer_state.into_option(), Some(PrinterState::Offline));
        assert_eq!(printer.status().unwrap().state, PrinterState::Offline);
    }

    #[test]
    fn lw550_print_locks_checks_the_labels_and_frames_the_job() {
        let (transport, script) = ScriptedTransport::new("lw550");
        script.reply_when(&[0x1B, b'A', 1], &lw550_status(0, 8));
        script.reply_when(&[0x1B, b'A', 0], &lw550_status(1, 8));
        script.reply_when(&[0x1B, b'U'], &sku("99014", 540, 1010));
        let mut printer = open(&request("lw550", &[]), transport.into_box()).unwrap();
        let report = printer.print(&job(vec![page(600, 400)], 1)).unwrap();
        assert_eq!(report.labels, 1);
        let written = script.written();
        let job_start = [0x1B, b's'];
        let start = written
            .windows(2)
            .position(|w| w == job_start)
            .expect("ESC s");
        assert_eq!(&written[..start], &[0x1B, b'A', 1, 0x1B, b'U']);
        assert!(written.ends_with(&[0x1B, b'E', 0x1B, b'Q', 0x1B, b'A', 0]));
        assert!(report.detail.contains("printing"), "{}", report.detail);
        let status = printer.status().unwrap();
        let media = status.media.into_option().expect("the SKU record is read");
        assert_eq!(media.description.as_str(), "54 x 101 mm labels (SKU 99014)");
        assert_eq!((media.width_dots, media.length_dots), (638, 1193));
    }

    #[test]
    fn lw550_refuses_a_job_longer_than_the_loaded_labels_and_frees_the_printer() {
        let (transport, script) = ScriptedTransport::new("lw5xl");
        script.reply_when(&[0x1B, b'A', 1], &lw550_status(0, 8));
        script.reply_when(&[0x1B, b'U'], &sku("99014", 540, 1010));
        let mut printer = open(&request("lw5xl", &[]), transport.into_box()).unwrap();
        // A 4 x 6 in label at 300 dpi.
        let err = printer.print(&job(vec![page(1200, 1800)], 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::MediaMismatch);
        assert!(
            err.message
                .contains("loaded 54 x 101 mm labels (SKU 99014); job needs 102 x 152 mm"),
            "{}",
            err.message
        );
        assert_eq!(
            script.written(),
            vec![0x1B, b'A', 1, 0x1B, b'U', 0x1B, b'Q'],
            "only the lock, the SKU request and the end of job that frees the lock"
        );
    }

    #[test]
    fn lw550_cover_open_and_empty_roll_are_reported() {
        for (bay, state) in [(1, PrinterState::HeadOpen), (5, PrinterState::PaperOut)] {
            let (transport, script) = ScriptedTransport::new("lw550");
            script.reply_when(&[0x1B, b'A'], &lw550_status(0, bay));
            let mut printer = open(&request("lw550", &[]), transport.into_box()).unwrap();
            let err = printer.print(&job(vec![page(8, 1)], 1)).unwrap_err();
            assert_eq!(err.printer_state.into_option(), Some(state));
            assert!(script.written().ends_with(&[0x1B, b'Q']), "lock released");
        }
    }

    #[test]
    fn lw550_busy_with_another_job_refuses_without_ending_it() {
        let (transport, script) = ScriptedTransport::new("lw550");
        let mut busy = lw550_status(1, 8);
        busy[1..5].copy_from_slice(&77u32.to_le_bytes());
        script.reply_when(&[0x1B, b'A'], &busy);
        let mut printer = open(&request("lw550", &[]), transport.into_box()).unwrap();
        let err = printer.print(&job(vec![page(8, 1)], 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotReady);
        assert_eq!(err.printer_state.into_option(), Some(PrinterState::Busy));
        assert!(err.message.contains("job 77"), "{}", err.message);
        assert_eq!(
            script.written(),
            vec![0x1B, b'A', 1],
            "the other job's lock is left alone"
        );
    }

    #[test]
    fn settings_are_checked_per_protocol() {
        let (transport, _script) = ScriptedTransport::new("lw450");
        let mut printer = open(
            &request("lw450", &[("density", "130")]),
            transport.into_box(),
        )
        .unwrap();
        let err = printer.encode(&job(vec![page(8, 1)], 1)).unwrap_err();
        assert!(err.message.contains("density"), "{}", err.message);

        let (transport, _script) = ScriptedTransport::new("lw550");
        let mut printer = open(
            &request("lw550", &[("density", "130"), ("quality", "text")]),
            transport.into_box(),
        )
        .unwrap();
        let bytes = printer.encode(&job(vec![page(8, 1)], 1)).unwrap();
        assert!(bytes.windows(3).any(|w| w == [0x1B, b'C', 130]));
        assert!(bytes.windows(2).any(|w| w == [0x1B, b'h']));
    }

    #[test]
    fn a_page_wider_than_the_head_is_a_media_mismatch() {
        let (transport, _script) = ScriptedTransport::new("lw450");
        let mut printer = open(&request("lw450", &[]), transport.into_box()).unwrap();
        let err = printer.encode(&job(vec![page(1200, 2)], 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::MediaMismatch);
        assert!(err.message.contains("1200") && err.message.contains("672"));
    }

    #[test]
    fn job_ids_are_stable_and_never_zero() {
        assert_eq!(numeric_job_id("job-1"), numeric_job_id("job-1"));
        assert_ne!(numeric_job_id("job-1"), numeric_job_id("job-2"));
        // FNV-1a of the empty string is its offset basis.
        assert_eq!(numeric_job_id(""), 0x811C_9DC5);
    }
}
