//! The plugin itself: the manifest with the USB ID table, and the printer that checks status,
//! encodes pages with [`crate::zpl`] or [`crate::epl`], and sends them over the host's transport.
//!
//! # Settings
//! Per device (config file) or per job; job settings win:
//! - `compression`: `auto` (default: the smaller of Z64 and ACS per label), `z64` or `acs`.
//! - `darkness`: 0..=30 (ZPL `~SD`) or 0..=15 (EPL2 `D`).
//! - `speed`: inches per second (ZPL `^PR`) or the EPL2 speed code (`S`).
//! - `media`: `gap`, `mark` or `continuous`.
//! - `print_mode`: `tear`, `peel`, `cut` or `rewind` (ZPL only).
//! - `status_timeout_ms`: how long to wait for a status answer (default 2000).
//! - `check_status`: `false` to skip status checks for printers with no back channel.

use devicehub_plugin_api::{
    choice_setting, number_setting, setting, DeviceKind, ErrorKind, InputKind, LoadedMedia,
    MediaKind, OpenRequest, PluginError, PluginManifest, PrintInput, PrintJob, PrintReport,
    Printer, PrinterProfile, PrinterState, PrinterStatus, RasterPage, Setting, SupportLevel,
    TransportBox, TransportErrorKind, UsbModel, API_VERSION,
};

use crate::{
    bitmap::Bitmap,
    epl::{encode_epl2, EplMedia, EplOptions},
    status::{
        epl_error_report_len, host_status_answer_len, parse_epl_error_report, parse_host_status,
        PrinterState as ZebraState, StatusSummary, EPL_ERROR_REPORT_REQUEST, HOST_STATUS_REQUEST,
    },
    zpl::{encode_zpl, Darkness, MediaTracking, PrintMode, ZplCompression, ZplOptions},
};

const VENDOR_ZEBRA: u16 = 0x0A5F;

/// Says whether the bytes read so far hold a whole status answer.
type AnswerComplete = fn(&[u8]) -> bool;

/// The USB ID table: (product ID, model, support level, profile). Resolution cannot be told
/// from the USB ID (203 and 300 dpi variants share IDs): 300 dpi printers set `profile`.
const MODELS: &[(u16, &str, SupportLevel, &str)] = &[
    (0x0009, "LP2844", SupportLevel::Supported, "epl2-203"),
    (0x0027, "LP2844-Z", SupportLevel::Supported, "zpl-203"),
    (0x0062, "GK420d", SupportLevel::Supported, "zpl-203"),
    (0x0080, "GK420d", SupportLevel::Supported, "zpl-203"),
    (0x0081, "GK420t", SupportLevel::Supported, "zpl-203"),
    (0x0084, "GX420d", SupportLevel::Supported, "zpl-203"),
    (0x008C, "ZP450", SupportLevel::Supported, "zpl-203"),
    (
        0x00A1,
        "TLP2824 Plus",
        SupportLevel::Supported,
        "zpl-203-2in",
    ),
    (0x00D1, "GC420d", SupportLevel::Supported, "zpl-203"),
    (0x0110, "ZD500", SupportLevel::Supported, "zpl-203"),
    (0x011C, "ZD410", SupportLevel::Supported, "zpl-203-2in"),
    (0x0141, "ZD620", SupportLevel::Supported, "zpl-203"),
    (0x0172, "ZT411", SupportLevel::Limited, "zpl-203"),
];

/// Longest label the desktop models take: 39 in at 203 dpi.
const MAX_LENGTH_203: u32 = 7900;

fn profile(name: &str, language: &str, dpi: u32, width_dots: u32) -> PrinterProfile {
    PrinterProfile {
        name: name.into(),
        language: language.into(),
        dpi,
        width_dots,
        max_length_dots: MAX_LENGTH_203 * dpi / 203,
        media: vec![
            MediaKind::DieCut,
            MediaKind::BlackMark,
            MediaKind::Continuous,
        ]
        .into(),
        inputs: vec![InputKind::Raster, InputKind::Raw].into(),
    }
}

/// The plugin's manifest.
pub fn manifest() -> PluginManifest {
    PluginManifest {
        name: "zebra".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        required_features: vec!["printer.raster".into(), "transport.stream".into()].into(),
        kind: DeviceKind::Printer,
        description: "Zebra label printers: ZPL II (Z64/ACS graphics) and EPL2".into(),
        usb_models: UsbModel::table(VENDOR_ZEBRA, MODELS),
        ieee1284_matches: devicehub_plugin_api::Ieee1284Match::table(&[(
            "Zebra Technologies",
            "",
            "ZPL",
            "zpl-203",
        )]),
        printer_profiles: vec![
            profile("zpl-203", "ZPL II", 203, 832),
            profile("zpl-300", "ZPL II", 300, 1248),
            profile("zpl-203-2in", "ZPL II", 203, 448),
            profile("epl2-203", "EPL2", 203, 832),
        ]
        .into(),
        default_profile: Some("zpl-203".into()).into(),
    }
}

/// The printer language a profile speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Language {
    Zpl,
    Epl2,
}

/// An open Zebra printer.
#[derive(Debug)]
pub struct ZebraPrinter {
    device_id: String,
    language: Language,
    width_dots: u32,
    settings: Vec<Setting>,
    transport: TransportBox,
}

/// Opens a Zebra printer (no I/O happens here).
pub fn open(request: &OpenRequest, transport: TransportBox) -> Result<ZebraPrinter, PluginError> {
    let manifest = manifest();
    let profile = manifest
        .printer_profile(request.profile.as_str())
        .ok_or_else(|| {
            PluginError::new(
                ErrorKind::InvalidJob,
                format!("unknown Zebra profile '{}'", request.profile),
            )
        })?;
    Ok(ZebraPrinter {
        device_id: request.device_id.to_string(),
        language: if profile.language.as_str() == "EPL2" {
            Language::Epl2
        } else {
            Language::Zpl
        },
        width_dots: profile.width_dots,
        settings: request.settings.to_vec(),
        transport,
    })
}

impl ZebraPrinter {
    /// A setting from the job, else from the device.
    fn setting<'a>(&'a self, job: Option<&'a PrintJob>, key: &str) -> Option<&'a str> {
        job.and_then(|j| setting(&j.settings, key))
            .or_else(|| setting(&self.settings, key))
    }

    fn number<T: std::str::FromStr>(
        &self,
        job: Option<&PrintJob>,
        key: &str,
    ) -> Result<Option<T>, PluginError> {
        number_setting(key, self.setting(job, key))
    }

    fn choice<T: Copy>(
        &self,
        job: &PrintJob,
        key: &str,
        choices: &[(&str, T)],
    ) -> Result<Option<T>, PluginError> {
        choice_setting(key, self.setting(Some(job), key), choices)
    }

    fn status_timeout_ms(&self) -> Result<u32, PluginError> {
        Ok(self.number(None, "status_timeout_ms")?.unwrap_or(2000))
    }

    fn zpl_options(&self, job: &PrintJob) -> Result<ZplOptions, PluginError> {
        let compression = self
            .choice(
                job,
                "compression",
                &[
                    ("auto", ZplCompression::Auto),
                    ("z64", ZplCompression::Z64),
                    ("acs", ZplCompression::Acs),
                ],
            )?
            .unwrap_or(ZplCompression::Auto);
        let media = self.choice(
            job,
            "media",
            &[
                ("gap", MediaTracking::Gap),
                ("mark", MediaTracking::BlackMark),
                ("continuous", MediaTracking::Continuous),
            ],
        )?;
        let print_mode = self.choice(
            job,
            "print_mode",
            &[
                ("tear", PrintMode::TearOff),
                ("peel", PrintMode::PeelOff),
                ("cut", PrintMode::Cutter),
                ("rewind", PrintMode::Rewind),
            ],
        )?;
        Ok(ZplOptions {
            copies: job.copies,
            compression,
            darkness: self
                .number::<u8>(Some(job), "darkness")?
                .map(Darkness::Absolute),
            speed_ips: self.number(Some(job), "speed")?,
            media,
            print_mode,
        })
    }

    fn epl_options(&self, job: &PrintJob) -> Result<EplOptions, PluginError> {
        let media = self
            .choice(
                job,
                "media",
                &[
                    ("gap", EplMedia::Gap(24)),
                    ("mark", EplMedia::BlackMark(24)),
                    ("continuous", EplMedia::Continuous),
                ],
            )?
            .unwrap_or(EplMedia::Gap(24));
        Ok(EplOptions {
            copies: job.copies,
            media,
            density: self.number(Some(job), "darkness")?,
            speed: self.number(Some(job), "speed")?,
        })
    }

    fn encode_page(&self, page: &RasterPage, job: &PrintJob) -> Result<Vec<u8>, PluginError> {
        if page.width > self.width_dots {
            return Err(PluginError::new(
                ErrorKind::MediaMismatch,
                format!(
                    "the page is {} dots wide; this printer prints at most {} dots",
                    page.width, self.width_dots
                ),
            ));
        }
        let bitmap = Bitmap::new(page.width, page.height, &page.data)
            .map_err(|e| PluginError::new(ErrorKind::InvalidJob, format!("bad page: {e}")))?;
        let invalid =
            |e: &dyn std::fmt::Display| PluginError::new(ErrorKind::InvalidJob, e.to_string());
        match self.language {
            Language::Zpl => encode_zpl(&bitmap, &self.zpl_options(job)?).map_err(|e| invalid(&e)),
            Language::Epl2 => {
                encode_epl2(&bitmap, &self.epl_options(job)?).map_err(|e| invalid(&e))
            }
        }
    }

    fn encode_job(&self, job: &PrintJob) -> Result<Vec<u8>, PluginError> {
        if job.copies == 0 {
            return Err(PluginError::new(
                ErrorKind::InvalidJob,
                "copies must be at least 1",
            ));
        }
        match &job.input {
            PrintInput::Raster(pages) => {
                if pages.is_empty() {
                    return Err(PluginError::new(
                        ErrorKind::InvalidJob,
                        "the job has no pages",
                    ));
                }
                let mut bytes = Vec::new();
                for page in pages.iter() {
                    bytes.extend(self.encode_page(page, job)?);
                }
                Ok(bytes)
            }
            PrintInput::Raw(bytes) => Ok(bytes.to_vec()),
            PrintInput::Pdf(_) => Err(PluginError::new(
                ErrorKind::InvalidJob,
                "Zebra printers do not take PDF; the host renders it first",
            )),
        }
    }

    /// Asks for status; `None` when the transport has no way back from the printer.
    fn query_status(&mut self) -> Result<Option<StatusSummary>, PluginError> {
        if self.setting(None, "check_status") == Some("false") {
            return Ok(None);
        }
        let timeout = self.status_timeout_ms()?;
        let (request, complete): (&[u8], AnswerComplete) = match self.language {
            Language::Zpl => (HOST_STATUS_REQUEST, |b| host_status_answer_len(b).is_some()),
            Language::Epl2 => (EPL_ERROR_REPORT_REQUEST, |b| {
                epl_error_report_len(b).is_some()
            }),
        };
        self.transport.write(request.into()).into_result()?;
        let answer = match self.transport.read_until(timeout, complete) {
            Ok(answer) => answer,
            Err(err) if err.kind == TransportErrorKind::Unsupported => return Ok(None),
            Err(err) if err.kind == TransportErrorKind::Timeout => {
                // Zebra documents that some printers stay silent while faulted.
                return Err(PluginError::not_ready(
                    PrinterState::Offline,
                    format!(
                        "the printer did not answer a status request within {timeout} ms \
                         (it may be off, out of paper or have its head open)"
                    ),
                ));
            }
            Err(err) => return Err(err.into()),
        };
        let summary = match self.language {
            Language::Zpl => parse_host_status(&answer).map(|s| s.summary()),
            Language::Epl2 => parse_epl_error_report(&answer).map(|s| s.summary()),
        }
        .map_err(|e| {
            PluginError::new(
                ErrorKind::Protocol,
                format!("the printer's status answer could not be read: {e}"),
            )
        })?;
        Ok(Some(summary))
    }
}

fn map_state(state: ZebraState) -> PrinterState {
    match state {
        ZebraState::Ready => PrinterState::Ready,
        ZebraState::Busy => PrinterState::Busy,
        ZebraState::PaperOut => PrinterState::PaperOut,
        ZebraState::HeadOpen => PrinterState::HeadOpen,
        ZebraState::Paused => PrinterState::Paused,
        ZebraState::RibbonOut => PrinterState::RibbonOut,
        ZebraState::Error => PrinterState::Error,
    }
}

fn describe(summary: &StatusSummary) -> String {
    let state = map_state(summary.state).as_str();
    match &summary.detail {
        Some(detail) => format!("{state}; {detail}"),
        None => state.to_string(),
    }
}

impl Printer for ZebraPrinter {
    fn status(&mut self) -> Result<PrinterStatus, PluginError> {
        match self.query_status() {
            Ok(Some(summary)) => Ok(PrinterStatus {
                state: map_state(summary.state),
                detail: describe(&summary).into(),
                media: None::<LoadedMedia>.into(),
            }),
            Ok(None) => Ok(PrinterStatus {
                state: PrinterState::Ready,
                detail: "status not available over this connection".into(),
                media: None::<LoadedMedia>.into(),
            }),
            Err(err) if err.kind == ErrorKind::NotReady => Ok(PrinterStatus {
                state: err
                    .printer_state
                    .into_option()
                    .unwrap_or(PrinterState::Offline),
                detail: err.message,
                media: None::<LoadedMedia>.into(),
            }),
            Err(err) if matches!(err.kind, ErrorKind::Transport) => Ok(PrinterStatus {
                state: PrinterState::Offline,
                detail: err.message,
                media: None::<LoadedMedia>.into(),
            }),
            Err(err) => Err(err),
        }
    }

    fn encode(&mut self, job: &PrintJob) -> Result<Vec<u8>, PluginError> {
        self.encode_job(job)
    }

    fn print(&mut self, job: &PrintJob) -> Result<PrintReport, PluginError> {
        // Encode first: a job that cannot be encoded never disturbs the printer.
        let bytes = self.encode_job(job)?;
        let checked = match self.query_status()? {
            Some(summary) => {
                let state = map_state(summary.state);
                if !state.can_print() {
                    return Err(PluginError::not_ready(
                        state,
                        format!("printer {} reports {}", self.device_id, describe(&summary)),
                    ));
                }
                true
            }
            None => false,
        };
        self.transport
            .write(bytes.as_slice().into())
            .into_result()?;
        let pages = match &job.input {
            PrintInput::Raster(pages) => pages.len() as u32,
            _ => 1,
        };
        let mut detail = format!(
            "{} {}",
            match self.language {
                Language::Zpl => "ZPL",
                Language::Epl2 => "EPL2",
            },
            if checked {
                "status checked"
            } else {
                "status not available"
            }
        );
        // A fault that appears while the job is taken in (paper running out mid-batch) shows in
        // the next status answer; report it instead of claiming success.
        if checked {
            if let Some(summary) = self.query_status()? {
                let state = map_state(summary.state);
                if !state.can_print() {
                    return Err(PluginError::not_ready(
                        state,
                        format!(
                            "printer {} reports {} after the job was sent; it may be partly printed",
                            self.device_id,
                            describe(&summary)
                        ),
                    ));
                }
                detail = format!("{detail}; printer {}", describe(&summary));
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

    const HEALTHY: &[u8] = b"\x02030,0,0,1218,000,0,0,0,000,0,0,0\x03\r\n\
\x02001,0,0,0,1,2,4,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n";
    const PAPER_OUT: &[u8] = b"\x02030,1,0,1218,000,0,0,0,000,0,0,0\x03\r\n\
\x02001,0,0,0,1,2,4,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n";

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

    /// A 16 x 2 label: a black left half on the first row, all white on the second.
    fn job(copies: u32) -> PrintJob {
        PrintJob {
            job_id: "job-1".into(),
            input: PrintInput::Raster(RVec::from(vec![RasterPage {
                width: 16,
                height: 2,
                data: RVec::from(vec![0xFF, 0x00, 0x00, 0x00]),
            }])),
            copies,
            media: ROption::RNone,
            settings: RVec::new(),
        }
    }

    #[test]
    fn manifest_profiles_cover_every_model() {
        let m = manifest();
        for model in m.usb_models.iter() {
            assert!(
                m.printer_profile(model.profile.as_str()).is_some(),
                "{}",
                model.model
            );
        }
        assert_eq!(
            m.usb_model(0x0A5F, 0x0009).map(|m| m.profile.as_str()),
            Some("epl2-203")
        );
    }

    #[test]
    fn print_checks_status_sends_the_format_and_checks_again() {
        let (transport, script) = ScriptedTransport::new("zebra");
        script.reply_when(b"~HS", HEALTHY);
        let mut printer = open(
            &request("zpl-203", &[("compression", "acs")]),
            transport.into_box(),
        )
        .unwrap();
        let report = printer.print(&job(3)).unwrap();
        assert_eq!(report.labels, 3);
        let written = script.written();
        // ~HS, the label format, ~HS again.
        assert!(
            written.starts_with(b"~HS^XA"),
            "{:?}",
            String::from_utf8_lossy(&written)
        );
        assert!(written.ends_with(b"^XZ~HS"));
        let text = String::from_utf8_lossy(&written);
        assert!(
            text.contains("^PW16") && text.contains("^LL2") && text.contains("^PQ3"),
            "{text}"
        );
        assert_eq!(report.bytes_sent as usize, written.len() - 6);
    }

    #[test]
    fn paper_out_refuses_the_job_before_sending_it() {
        let (transport, script) = ScriptedTransport::new("zebra");
        script.reply_when(b"~HS", PAPER_OUT);
        let mut printer = open(&request("zpl-203", &[]), transport.into_box()).unwrap();
        let err = printer.print(&job(1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotReady);
        assert_eq!(
            err.printer_state.into_option(),
            Some(PrinterState::PaperOut)
        );
        assert!(err.message.contains("paper out"), "{}", err.message);
        assert_eq!(script.written(), b"~HS", "no label bytes were sent");
        assert_eq!(printer.status().unwrap().state, PrinterState::PaperOut);
    }

    #[test]
    fn a_silent_printer_is_reported_offline() {
        let (transport, _script) = ScriptedTransport::new("zebra");
        let mut printer = open(
            &request("zpl-203", &[("status_timeout_ms", "20")]),
            transport.into_box(),
        )
        .unwrap();
        let err = printer.print(&job(1)).unwrap_err();
        assert_eq!(err.printer_state.into_option(), Some(PrinterState::Offline));
        assert_eq!(printer.status().unwrap().state, PrinterState::Offline);
    }

    #[test]
    fn epl2_profile_speaks_epl2_and_reads_the_error_report() {
        let (transport, script) = ScriptedTransport::new("lp2844");
        script.reply_when(b"^ee\r\n", b"07\r\n");
        let mut printer = open(&request("epl2-203", &[]), transport.into_box()).unwrap();
        let err = printer.print(&job(1)).unwrap_err();
        assert_eq!(
            err.printer_state.into_option(),
            Some(PrinterState::HeadOpen)
        );
        script.clear_written();
        let bytes = printer.encode(&job(2)).unwrap();
        assert!(bytes.starts_with(b"\r\nN\r\n"));
        assert!(bytes.ends_with(b"P2\r\n"));
    }

    #[test]
    fn a_page_wider_than_the_head_is_refused_with_both_widths() {
        let (transport, _script) = ScriptedTransport::new("zebra");
        let mut printer = open(&request("zpl-203-2in", &[]), transport.into_box()).unwrap();
        let mut wide = job(1);
        wide.input = PrintInput::Raster(RVec::from(vec![RasterPage {
            width: 800,
            height: 1,
            data: RVec::from(vec![0u8; 100]),
        }]));
        let err = printer.encode(&wide).unwrap_err();
        assert_eq!(err.kind, ErrorKind::MediaMismatch);
        assert!(
            err.message.contains("800") && err.message.contains("448"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let (transport, _script) = ScriptedTransport::new("zebra");
        let mut printer = open(
            &request("zpl-203", &[("compression", "lzw")]),
            transport.into_box(),
        )
        .unwrap();
        let err = printer.encode(&job(1)).unwrap_err();
        assert!(err.message.contains("compression") && err.message.contains("lzw"));
    }

    #[test]
    fn raw_input_passes_through_unchanged() {
        let (transport, script) = ScriptedTransport::new("zebra");
        script.reply_when(b"~HS", HEALTHY);
        let mut printer = open(&request("zpl-203", &[]), transport.into_box()).unwrap();
        let mut raw = job(1);
        raw.input = PrintInput::Raw(RVec::from(b"^XA^FO10,10^FDHello^FS^XZ".to_vec()));
        printer.print(&raw).unwrap();
        assert_eq!(script.written(), b"~HS^XA^FO10,10^FDHello^FS^XZ~HS");
    }
}
