//! The plugin itself: the manifest (USB ID table, IEEE-1284 rules, profiles), the settings,
//! the check that a job fits the loaded labels, and the printer that asks `<ESC>!?`, sends one
//! label program per page built by [`crate::encode`], and asks again.
//!
//! # Settings
//! Per device (config file) or per job; job settings win:
//! - `density`: print darkness 0..=15 (`DENSITY`).
//! - `speed`: inches per second, 1..=18 (`SPEED`); what a model accepts varies.
//! - `media`: `gap` (default), `mark` (black mark, `BLINE`) or `continuous` (`GAP 0,0`).
//! - `gap_mm`: the gap between labels, or the height of the black mark (default 3).
//! - `label_width_mm`, `label_length_mm`: the labels loaded. A page larger than them is
//!   refused before any byte is sent; the label program then describes the loaded label
//!   (`SIZE`) rather than the page. Without them the label is the size of each page, or the
//!   media the job says it was laid out for when that is larger (its kind also chooses the
//!   sensing when `media` is not set).
//! - `direction`: `0` (default) or `1` (the label turned by 180 degrees).
//! - `status_timeout_ms`: how long to wait for the status byte (default 2000).
//! - `check_status`: `false` for printers with no way back (some USB printers lack a bulk IN
//!   endpoint and are detected as such without this setting).

use devicehub_plugin_api::{
    choice_setting, number_setting, setting, DeviceKind, ErrorKind, Ieee1284Match, InputKind,
    MediaKind, OpenRequest, PluginError, PluginManifest, PrintInput, PrintJob, PrintReport,
    Printer, PrinterProfile, PrinterState, PrinterStatus, RasterPage, Setting, SupportLevel,
    TransportBox, TransportErrorKind, UsbModel, API_VERSION,
};

use crate::{
    encode::{dots_to_mm, encode_label, format_mm, EncodeError, LabelOptions, MediaSensing},
    status::{StatusByte, STATUS_REQUEST},
};

/// TSC Auto ID Technology's USB vendor ID.
const VENDOR_TSC: u16 = 0x1203;

/// The USB ID table: (product ID, model, support level, profile). Only IDs with a public
/// source are listed: 0x0140 from the usb.ids database, 0x0160 from a published driver's
/// table of known printers. Other TSPL printers are matched by their IEEE-1284 ID.
const MODELS: &[(u16, &str, SupportLevel, &str)] = &[
    (0x0140, "TTP-245C", SupportLevel::Experimental, "tspl-203"),
    (0x0160, "TDP-225", SupportLevel::Experimental, "tspl-203"),
];

/// IEEE-1284 rules: (manufacturer, model prefix, command set, profile). Checked in order; an
/// empty field matches anything.
const IEEE1284_RULES: &[(&str, &str, &str, &str)] = &[
    // Rollo's USB 4 x 6 printer identifies itself only generically (its wireless model says
    // `MFG:Rollo;CMD:TSPL`, which the command-set rules below match).
    ("Printer", "Thermal Printer", "XPP", "tspl-203"),
    // TSC's own printers.
    ("TSC", "", "", "tspl-203"),
    // Any printer that lists TSPL or TSPL2 among its command sets: Munbyn's RW403B reports
    // `MFG:Munbyn;CMD:TSPL;MDL:RW403B;`, iDPRT's SP410 `MFG:iDPRT;MDL:SP410;CMD:TSPL;`,
    // Xprinter's `CMD:TSPL,ESC/POS`, 4BARCODE's 3B-363B `CMD:TSPL2`.
    ("", "", "TSPL", "tspl-203"),
    ("", "", "TSPL2", "tspl-203"),
];

/// A conservative longest label: 1 m. TSC's desktop models take longer labels, but a shipping
/// desk never prints one, and a runaway page is better refused than fed out.
const MAX_LENGTH_MM: u32 = 1000;

/// The default gap between die-cut labels.
const DEFAULT_GAP_MM: f32 = 3.0;

fn profile(name: &str, dpi: u32, width_dots: u32) -> PrinterProfile {
    PrinterProfile {
        name: name.into(),
        language: "TSPL2".into(),
        dpi,
        width_dots,
        max_length_dots: MAX_LENGTH_MM * dpi * 10 / 254,
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
        name: "tspl".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        required_features: vec![
            "printer.raster".into(),
            "transport.stream".into(),
            "match.ieee1284".into(),
        ]
        .into(),
        kind: DeviceKind::Printer,
        description: "TSPL/TSPL2 label printers: TSC, Rollo and other 4x6 desktop printers".into(),
        usb_models: UsbModel::table(VENDOR_TSC, MODELS),
        ieee1284_matches: Ieee1284Match::table(IEEE1284_RULES),
        // 4 in heads: 832 dots at 203 dpi (104 mm), 1248 dots at 300 dpi (105.7 mm). TSC's
        // 4 in models print 104 to 108 mm wide; the narrower figure fits all of them.
        printer_profiles: vec![
            profile("tspl-203", 203, 832),
            profile("tspl-300", 300, 1248),
        ]
        .into(),
        default_profile: Some("tspl-203".into()).into(),
    }
}

/// An open TSPL printer.
#[derive(Debug)]
pub struct TsplPrinter {
    device_id: String,
    dpi: u32,
    head_width_dots: u32,
    max_length_dots: u32,
    settings: Vec<Setting>,
    transport: TransportBox,
}

/// Opens a TSPL printer (no I/O happens here).
pub fn open(request: &OpenRequest, transport: TransportBox) -> Result<TsplPrinter, PluginError> {
    let manifest = manifest();
    let profile = manifest
        .printer_profile(request.profile.as_str())
        .ok_or_else(|| {
            PluginError::new(
                ErrorKind::InvalidJob,
                format!(
                    "unknown TSPL profile '{}' (it has tspl-203, tspl-300)",
                    request.profile
                ),
            )
        })?;
    Ok(TsplPrinter {
        device_id: request.device_id.to_string(),
        dpi: profile.dpi,
        head_width_dots: profile.width_dots,
        max_length_dots: profile.max_length_dots,
        settings: request.settings.to_vec(),
        transport,
    })
}

fn invalid(message: String) -> PluginError {
    PluginError::new(ErrorKind::InvalidJob, message)
}

/// "101.6 x 152.4 mm (812 x 1218 dots)".
fn describe_size(width: u32, length: u32, dpi: u32) -> String {
    format!(
        "{} x {} mm ({width} x {length} dots)",
        format_mm(dots_to_mm(width, dpi)),
        format_mm(dots_to_mm(length, dpi))
    )
}

impl TsplPrinter {
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

    fn mm_to_dots(&self, mm: f32) -> u32 {
        // Rounded to the nearest dot; the settings are checked to be positive and bounded.
        (f64::from(mm) * f64::from(self.dpi) / 25.4).round() as u32
    }

    /// The loaded label's size in dots, when the settings say.
    fn configured_label(&self, job: &PrintJob) -> Result<Option<(u32, u32)>, PluginError> {
        let width = self.number::<f32>(Some(job), "label_width_mm")?;
        let length = self.number::<f32>(Some(job), "label_length_mm")?;
        for (key, value) in [("label_width_mm", width), ("label_length_mm", length)] {
            if let Some(mm) = value {
                if !(1.0..=MAX_LENGTH_MM as f32).contains(&mm) {
                    return Err(invalid(format!(
                        "setting {key} = {mm} is outside 1..{MAX_LENGTH_MM} mm"
                    )));
                }
            }
        }
        Ok(match (width, length) {
            (None, None) => None,
            (Some(w), Some(l)) => Some((self.mm_to_dots(w), self.mm_to_dots(l))),
            _ => {
                return Err(invalid(
                    "set both label_width_mm and label_length_mm, or neither".to_string(),
                ))
            }
        })
    }

    fn media(&self, job: &PrintJob) -> Result<MediaSensing, PluginError> {
        let distance = self
            .number::<f32>(Some(job), "gap_mm")?
            .unwrap_or(DEFAULT_GAP_MM);
        // Without a setting, the media the job was laid out for decides.
        let from_job = job.media.as_ref().into_option().map(|m| match m.kind {
            MediaKind::Continuous => "continuous",
            MediaKind::BlackMark => "mark",
            MediaKind::DieCut | MediaKind::Sheet => "gap",
        });
        let gap = MediaSensing::Gap { gap_mm: distance };
        let sensing = choice_setting(
            "media",
            self.setting(Some(job), "media").or(from_job),
            &[
                ("gap", gap),
                ("mark", MediaSensing::BlackMark { mark_mm: distance }),
                ("continuous", MediaSensing::Continuous),
            ],
        )?;
        Ok(sensing.unwrap_or(gap))
    }

    fn label_options(
        &self,
        page: &RasterPage,
        job: &PrintJob,
    ) -> Result<LabelOptions, PluginError> {
        if page.width > self.head_width_dots {
            return Err(PluginError::new(
                ErrorKind::MediaMismatch,
                format!(
                    "the label is {} dots wide; this printer prints at most {} dots ({} mm)",
                    page.width,
                    self.head_width_dots,
                    format_mm(dots_to_mm(self.head_width_dots, self.dpi))
                ),
            ));
        }
        if page.height > self.max_length_dots {
            return Err(PluginError::new(
                ErrorKind::MediaMismatch,
                format!(
                    "the label is {} dots long; this printer takes labels up to {} dots ({MAX_LENGTH_MM} mm)",
                    page.height, self.max_length_dots
                ),
            ));
        }
        let (label_width, label_length) = match self.configured_label(job)? {
            Some((width, length)) => {
                if page.width > width || page.height > length {
                    return Err(PluginError::new(
                        ErrorKind::MediaMismatch,
                        format!(
                            "the label to print is {}, larger than the {} labels printer {} is \
                             set up for (settings label_width_mm and label_length_mm); load \
                             larger labels and change those settings, or send a smaller label",
                            describe_size(page.width, page.height, self.dpi),
                            describe_size(width, length, self.dpi),
                            self.device_id
                        ),
                    ));
                }
                (width, length)
            }
            // A job laid out for a label larger than its page (a small indicium on a 4 x 6
            // label) describes that label; otherwise the label is the page.
            None => match job.media.as_ref().into_option() {
                Some(media) => (
                    page.width.max(media.width_dots),
                    page.height.max(media.length_dots),
                ),
                None => (page.width, page.height),
            },
        };
        let direction = self.number::<u8>(Some(job), "direction")?.unwrap_or(0);
        Ok(LabelOptions {
            dpi: self.dpi,
            label_width_dots: label_width,
            label_length_dots: label_length,
            media: self.media(job)?,
            density: self.number(Some(job), "density")?,
            speed_ips: self.number(Some(job), "speed")?,
            direction,
            copies: job.copies,
        })
    }

    fn encode_job(&self, job: &PrintJob) -> Result<Vec<u8>, PluginError> {
        if job.copies == 0 {
            return Err(invalid("copies must be at least 1".to_string()));
        }
        match &job.input {
            PrintInput::Raster(pages) => {
                if pages.is_empty() {
                    return Err(invalid("the job has no pages".to_string()));
                }
                let mut bytes = Vec::new();
                for (number, page) in pages.iter().enumerate() {
                    let options = self.label_options(page, job)?;
                    let program = encode_label(page.width, page.height, &page.data, &options)
                        .map_err(|err| match err {
                            EncodeError::LabelTooSmall { .. } => {
                                PluginError::new(ErrorKind::MediaMismatch, err.to_string())
                            }
                            other => invalid(format!("page {}: {other}", number + 1)),
                        })?;
                    bytes.extend(program);
                }
                Ok(bytes)
            }
            PrintInput::Raw(bytes) => Ok(bytes.to_vec()),
            PrintInput::Pdf(_) => Err(invalid(
                "TSPL printers do not take PDF; the host renders it first".to_string(),
            )),
        }
    }

    /// Asks for the status byte; `None` when the transport has no way back from the printer.
    fn query_status(&mut self) -> Result<Option<StatusByte>, PluginError> {
        if self.setting(None, "check_status") == Some("false") {
            return Ok(None);
        }
        let timeout = self
            .number::<u32>(None, "status_timeout_ms")?
            .unwrap_or(2000);
        self.transport.write(STATUS_REQUEST.into()).into_result()?;
        match self.transport.read_until(timeout, |b| !b.is_empty()) {
            // A byte that arrived after an earlier request timed out can come first; the
            // printer answers requests in order, so the last byte answers this one.
            Ok(answer) => Ok(answer.last().map(|&byte| StatusByte(byte))),
            Err(err) if err.kind == TransportErrorKind::Unsupported => Ok(None),
            Err(err) if err.kind == TransportErrorKind::Timeout => Err(PluginError::not_ready(
                PrinterState::Offline,
                format!(
                    "the printer did not answer a status request within {timeout} ms \
                     (it may be off or not speak TSPL)"
                ),
            )),
            Err(err) => Err(err.into()),
        }
    }
}

impl Printer for TsplPrinter {
    fn status(&mut self) -> Result<PrinterStatus, PluginError> {
        match self.query_status() {
            Ok(Some(status)) => Ok(PrinterStatus {
                state: status.state(),
                detail: status.describe().into(),
                media: None.into(),
            }),
            Ok(None) => Ok(PrinterStatus {
                state: PrinterState::Ready,
                detail: "the printer cannot report status over this connection".into(),
                media: None.into(),
            }),
            Err(err) => match err.printer_state.into_option() {
                Some(state) => Ok(PrinterStatus {
                    state,
                    detail: err.message,
                    media: None.into(),
                }),
                None if err.kind == ErrorKind::Transport => Ok(PrinterStatus {
                    state: PrinterState::Offline,
                    detail: err.message,
                    media: None.into(),
                }),
                None => Err(err),
            },
        }
    }

    fn encode(&mut self, job: &PrintJob) -> Result<Vec<u8>, PluginError> {
        self.encode_job(job)
    }

    fn print(&mut self, job: &PrintJob) -> Result<PrintReport, PluginError> {
        // Encode first: a job that cannot be printed as asked never disturbs the printer.
        let bytes = self.encode_job(job)?;
        let checked = match self.query_status()? {
            Some(status) => {
                let state = status.state();
                if !state.can_print() {
                    return Err(PluginError::not_ready(
                        state,
                        format!("printer {} reports {}", self.device_id, status.describe()),
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
            "TSPL {}",
            if checked {
                "status checked"
            } else {
                "status not available"
            }
        );
        // A fault that appears while the labels go out (paper running out mid-batch) shows in
        // the next status byte; report it instead of claiming success.
        if checked {
            if let Some(status) = self.query_status()? {
                let state = status.state();
                if !state.can_print() {
                    return Err(PluginError::not_ready(
                        state,
                        format!(
                            "printer {} reports {} after the job was sent; it may be partly printed",
                            self.device_id,
                            status.describe()
                        ),
                    ));
                }
                detail = format!("{detail}; printer {}", status.describe());
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

    fn request(profile: &str, settings: &[(&str, &str)]) -> OpenRequest {
        OpenRequest {
            device_id: "desk-1".into(),
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
        RasterPage {
            width,
            height,
            data: RVec::from(vec![0u8; (width as usize).div_ceil(8) * height as usize]),
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

    fn printer(
        settings: &[(&str, &str)],
    ) -> (TsplPrinter, devicehub_plugin_api::testing::ScriptHandle) {
        let (transport, script) = ScriptedTransport::new("tspl");
        let printer = open(&request("tspl-203", settings), transport.into_box()).expect("opens");
        (printer, script)
    }

    #[test]
    fn manifest_profiles_cover_every_model_and_rule() {
        let m = manifest();
        for model in m.usb_models.iter() {
            assert!(
                m.printer_profile(model.profile.as_str()).is_some(),
                "{}",
                model.model
            );
        }
        for rule in m.ieee1284_matches.iter() {
            assert!(m.printer_profile(rule.profile.as_str()).is_some());
        }
        assert_eq!(
            m.usb_model(0x1203, 0x0160).map(|m| m.model.as_str()),
            Some("TDP-225")
        );
        assert_eq!(
            m.printer_profile("tspl-300").map(|p| p.width_dots),
            Some(1248)
        );
    }

    #[test]
    fn the_manifest_conforms() {
        devicehub_plugin_api::testing::check_manifest(&manifest());
    }

    /// The author kit's run (encode, status, print, status) on its sample label: what `print`
    /// sends is what `encode` gives, framed by the two status requests.
    #[test]
    fn the_sample_label_prints_as_encoded_between_status_requests() {
        use devicehub_plugin_api::testing::{
            exercise_printer, open_request, raster_job, render_sample_label,
        };
        let m = manifest();
        let profile = m.printer_profile("tspl-203").expect("profile");
        let job = raster_job(vec![render_sample_label(profile)], 1);
        let run = exercise_printer(
            open,
            &open_request("tspl-203", &[]),
            |script| script.reply_when(STATUS_REQUEST, &[0x00]),
            &job,
        );
        assert_eq!(run.expect_printed().labels, 1);
        assert!(run.print_sent_the_encoded_bytes());
        let encoded = run.encoded.as_ref().expect("encodes");
        assert!(encoded.starts_with(b"SIZE 50.8 mm,25.4 mm\r\n"));
        assert_eq!(
            run.written_for_print,
            [STATUS_REQUEST, encoded.as_slice(), STATUS_REQUEST].concat()
        );
        assert_eq!(run.written_for_status, STATUS_REQUEST);
        assert_eq!(run.status_after.expect("status").state, PrinterState::Ready);
    }

    #[test]
    fn print_checks_status_sends_every_page_and_checks_again() {
        let (mut printer, script) = printer(&[("density", "10"), ("speed", "3")]);
        script.reply_when(STATUS_REQUEST, &[0x00]);
        let report = printer
            .print(&job(vec![page(16, 2), page(8, 3)], 2))
            .expect("prints");
        assert_eq!(report.labels, 4);
        let written = script.written();
        assert!(
            written.starts_with(b"\x1b!?SIZE 2 mm,0.25 mm\r\n"),
            "{:?}",
            String::from_utf8_lossy(&written)
        );
        assert!(written.ends_with(b"PRINT 2,1\r\n\x1b!?"));
        let text = String::from_utf8_lossy(&written);
        assert_eq!(text.matches("CLS\r\n").count(), 2, "one program per page");
        assert_eq!(text.matches("PRINT 2,1\r\n").count(), 2);
        assert!(text.contains("DENSITY 10\r\nSPEED 3\r\n"), "{text}");
        // All white, inverted: every data byte is 0xFF.
        let bitmap: &[u8] = b"BITMAP 0,0,2,2,0,\xFF\xFF\xFF\xFF\r\nPRINT 2,1\r\n";
        assert!(written.windows(bitmap.len()).any(|w| w == bitmap), "{text}");
        assert_eq!(
            report.bytes_sent as usize,
            written.len() - 2 * STATUS_REQUEST.len()
        );
    }

    #[test]
    fn paper_out_refuses_the_job_before_sending_it() {
        let (mut printer, script) = printer(&[]);
        script.reply_when(STATUS_REQUEST, &[0x04]);
        let err = printer.print(&job(vec![page(8, 1)], 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotReady);
        assert_eq!(
            err.printer_state.into_option(),
            Some(PrinterState::PaperOut)
        );
        assert!(err.message.contains("paper out"), "{}", err.message);
        assert_eq!(script.written(), STATUS_REQUEST, "no label bytes were sent");
        let status = printer.status().expect("status");
        assert_eq!(status.state, PrinterState::PaperOut);
    }

    #[test]
    fn head_open_with_paper_out_names_both() {
        let (mut printer, script) = printer(&[]);
        script.reply_when(STATUS_REQUEST, &[0x05]);
        let status = printer.status().expect("status");
        assert_eq!(status.state, PrinterState::HeadOpen);
        assert_eq!(status.detail.as_str(), "head open; paper out");
    }

    #[test]
    fn a_fault_after_the_job_fails_it_as_partly_printed() {
        let (mut printer, script) = printer(&[]);
        script.push_read(&[0x00]);
        script.reply_when(b"PRINT 1,1\r\n\x1b!?", &[0x04]);
        let err = printer.print(&job(vec![page(8, 1)], 1)).unwrap_err();
        assert_eq!(
            err.printer_state.into_option(),
            Some(PrinterState::PaperOut)
        );
        assert!(
            err.message.contains("after the job was sent"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_late_answer_to_an_earlier_request_is_skipped() {
        let (mut printer, script) = printer(&[]);
        // A byte left over from a request that timed out, then the answer to this one.
        script.push_read(&[0x04]);
        script.reply_when(STATUS_REQUEST, &[0x00]);
        assert_eq!(printer.status().expect("status").state, PrinterState::Ready);
    }

    #[test]
    fn a_silent_printer_is_offline() {
        let (mut printer, _script) = printer(&[("status_timeout_ms", "20")]);
        let err = printer.print(&job(vec![page(8, 1)], 1)).unwrap_err();
        assert_eq!(err.printer_state.into_option(), Some(PrinterState::Offline));
        assert_eq!(
            printer.status().expect("status").state,
            PrinterState::Offline
        );
    }

    #[test]
    fn a_disconnected_printer_fails_the_job_as_a_transport_error() {
        let (mut printer, script) = printer(&[]);
        script.disconnect();
        let err = printer.print(&job(vec![page(8, 1)], 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Transport);
        assert_eq!(
            printer.status().expect("status").state,
            PrinterState::Offline
        );
    }

    #[test]
    fn a_label_larger_than_the_loaded_one_is_refused_in_words() {
        let (mut printer, script) =
            printer(&[("label_width_mm", "50.8"), ("label_length_mm", "25.4")]);
        script.reply_when(STATUS_REQUEST, &[0x00]);
        let err = printer.print(&job(vec![page(812, 1218)], 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::MediaMismatch);
        assert!(
            err.message.contains("101.6 x 152.4 mm")
                && err.message.contains("50.8 x 25.4 mm")
                && err.message.contains("load larger labels"),
            "{}",
            err.message
        );
        assert!(script.written().is_empty(), "nothing was sent");
        // A label that fits goes out with SIZE set to the loaded label.
        let bytes = printer.encode(&job(vec![page(400, 200)], 1)).expect("fits");
        assert!(bytes.starts_with(b"SIZE 50.8 mm,25.4 mm\r\n"));
    }

    #[test]
    fn a_page_wider_than_the_head_is_refused() {
        let (mut printer, _script) = printer(&[]);
        let err = printer.encode(&job(vec![page(840, 10)], 1)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::MediaMismatch);
        assert!(
            err.message.contains("840") && err.message.contains("832"),
            "{}",
            err.message
        );
    }

    #[test]
    fn media_settings_choose_gap_mark_or_continuous() {
        let (mut printer, _script) = printer(&[("media", "mark"), ("gap_mm", "4")]);
        let text = String::from_utf8(
            printer.encode(&job(vec![page(8, 1)], 1)).expect("encodes")[..60].to_vec(),
        )
        .unwrap_or_default();
        assert!(text.contains("BLINE 4 mm,0 mm"), "{text}");
        let mut continuous = job(vec![page(8, 1)], 1);
        continuous.settings = RVec::from(vec![Setting::new("media", "continuous")]);
        let bytes = printer.encode(&continuous).expect("encodes");
        assert!(String::from_utf8_lossy(&bytes).contains("\r\nGAP 0,0\r\n"));
        continuous.settings = RVec::from(vec![Setting::new("media", "roll")]);
        let err = printer.encode(&continuous).unwrap_err();
        assert!(err.message.contains("media") && err.message.contains("roll"));
    }

    #[test]
    fn the_media_a_job_was_laid_out_for_sets_size_and_sensing() {
        let (mut printer, _script) = printer(&[]);
        let mut laid_out = job(vec![page(400, 200)], 1);
        laid_out.media = ROption::RSome(devicehub_plugin_api::MediaRequest {
            kind: MediaKind::Continuous,
            width_dots: 812,
            length_dots: 0,
        });
        let text =
            String::from_utf8_lossy(&printer.encode(&laid_out).expect("encodes")).into_owned();
        assert!(
            text.starts_with("SIZE 101.6 mm,25.02 mm\r\nGAP 0,0\r\n"),
            "{text:.60}"
        );
    }

    #[test]
    fn bad_numbers_are_named() {
        let (mut printer, _script) = printer(&[("density", "dark")]);
        let err = printer.encode(&job(vec![page(8, 1)], 1)).unwrap_err();
        assert!(err.message.contains("density"), "{}", err.message);
        let (mut printer, _script) = self::printer(&[("density", "20")]);
        let err = printer.encode(&job(vec![page(8, 1)], 1)).unwrap_err();
        assert!(err.message.contains("density 20"), "{}", err.message);
        let (mut printer, _script) = self::printer(&[("label_width_mm", "50")]);
        let err = printer.encode(&job(vec![page(8, 1)], 1)).unwrap_err();
        assert!(err.message.contains("label_length_mm"), "{}", err.message);
    }

    #[test]
    fn raw_input_passes_through_unchanged() {
        let (mut printer, script) = printer(&[]);
        script.reply_when(STATUS_REQUEST, &[0x00]);
        let mut raw = job(vec![], 1);
        raw.input = PrintInput::Raw(RVec::from(b"SIZE 4,6\r\nCLS\r\nPRINT 1\r\n".to_vec()));
        printer.print(&raw).expect("prints");
        assert_eq!(
            script.written(),
            b"\x1b!?SIZE 4,6\r\nCLS\r\nPRINT 1\r\n\x1b!?"
        );
    }

    #[test]
    fn no_status_check_when_told() {
        let (mut printer, script) = printer(&[("check_status", "false")]);
        let report = printer.print(&job(vec![page(8, 1)], 1)).expect("prints");
        assert!(report.detail.contains("status not available"));
        assert!(script.written().starts_with(b"SIZE"));
    }
}
