//! The plugin itself: the manifest (USB ID table, IEEE-1284 rules, profiles), the settings,
//! and the printer that reads the real-time status, sends the job built by
//! [`crate::encode`], and reads the status again.
//!
//! # Settings
//! Per device (config file) or per job; job settings win:
//! - `cut`: `each` (default: a full cut after every label), `partial` (a partial cut after
//!   every label), `end` (one full cut after the job), `none` (printers without a cutter).
//! - `band_rows`: rows per `GS v 0` image, 1..=2303 (default 256); lower it for printers with
//!   small receive buffers that drop data.
//! - `status_timeout_ms`: how long to wait for each status byte (default 2000).
//! - `check_status`: `false` for printers with no way back (output-only connections).

use devicehub_plugin_api::{
    choice_setting, number_setting, setting, DeviceKind, ErrorKind, Ieee1284Match, InputKind,
    MediaKind, OpenRequest, PluginError, PluginManifest, PrintInput, PrintJob, PrintReport,
    Printer, PrinterProfile, PrinterState, PrinterStatus, Setting, SupportLevel, TransportBox,
    TransportErrorKind, UsbModel, API_VERSION,
};

use crate::{
    encode::{encode_job, Cut, JobOptions, DEFAULT_BAND_ROWS, MAX_BAND_ROWS},
    status::{
        is_status_byte, RealTimeStatus, ERROR_REQUEST, OFFLINE_REQUEST, PAPER_REQUEST,
        PRINTER_REQUEST,
    },
};

/// Seiko Epson's USB vendor ID.
const VENDOR_EPSON: u16 = 0x04B8;

/// The USB ID table: (product ID, model, support level, profile). Only IDs with a public
/// source are listed, both from the Linux usb.ids database: 0x0E31 "Thermal Receipt Printer
/// [TM-L100]" and 0x0E03 "Thermal Receipt Printer [TM-T20]". Other printers are matched by
/// their IEEE-1284 ID, or bound to this plugin in the device table.
const MODELS: &[(u16, &str, SupportLevel, &str)] = &[
    (0x0E31, "TM-L100", SupportLevel::Experimental, "escpos-80mm"),
    (0x0E03, "TM-T20", SupportLevel::Experimental, "escpos-80mm"),
];

/// IEEE-1284 rules: (manufacturer, model prefix, command set, profile). An empty field matches
/// anything; the host picks the most specific matching rule.
const IEEE1284_RULES: &[(&str, &str, &str, &str)] = &[
    // Epson's TM printers, e.g. `MFG:EPSON;CMD:ESC/POS;MDL:TM-T88V;CLS:PRINTER;`.
    ("EPSON", "TM-", "", "escpos-80mm"),
    // 58 mm printers that name their width, e.g. `MFG:Xprinter;MDL:XP-58;CMD:ESC/POS;`.
    ("", "XP-58", "ESC/POS", "escpos-58mm"),
    ("", "POS-58", "ESC/POS", "escpos-58mm"),
    // Any other printer listing ESC/POS, e.g. `MFG:Printer;MDL:POS-80;CMD:ESC/POS;`; some
    // Epson firmware spells it without the slash.
    ("", "", "ESC/POS", "escpos-80mm"),
    ("", "", "ESCPOS", "escpos-80mm"),
];

/// The longest label taken, 1 m: roll printers take any length, but a runaway page is better
/// refused than fed out.
const MAX_LENGTH_MM: u32 = 1000;

const DEFAULT_STATUS_TIMEOUT_MS: u32 = 2000;

/// How long to wait for more stale bytes when clearing the way back before a status request.
const DRAIN_WAIT_MS: u32 = 1;

fn profile(name: &str, width_dots: u32) -> PrinterProfile {
    PrinterProfile {
        name: name.into(),
        language: "ESC/POS".into(),
        dpi: 203,
        width_dots,
        max_length_dots: MAX_LENGTH_MM * 203 * 10 / 254,
        media: vec![MediaKind::Continuous].into(),
        inputs: vec![InputKind::Raster, InputKind::Raw].into(),
    }
}

/// The plugin's manifest.
pub fn manifest() -> PluginManifest {
    PluginManifest {
        name: "escpos".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        required_features: vec![
            "printer.raster".into(),
            "transport.stream".into(),
            "match.ieee1284".into(),
        ]
        .into(),
        kind: DeviceKind::Printer,
        description:
            "ESC/POS raster label and receipt printers: Epson TM-L100, TM-T20 and compatibles"
                .into(),
        usb_models: UsbModel::table(VENDOR_EPSON, MODELS),
        ieee1284_matches: Ieee1284Match::table(IEEE1284_RULES),
        // 203 dpi heads: 72 mm (576 dots) printable on 80 mm paper, 48 mm (384 dots) on 58 mm.
        printer_profiles: vec![profile("escpos-80mm", 576), profile("escpos-58mm", 384)].into(),
        default_profile: Some("escpos-80mm".into()).into(),
    }
}

/// An open ESC/POS printer.
#[derive(Debug)]
pub struct EscPosPrinter {
    device_id: String,
    width_dots: u32,
    max_length_dots: u32,
    settings: Vec<Setting>,
    transport: TransportBox,
}

/// Opens an ESC/POS printer (no I/O happens here).
pub fn open(request: &OpenRequest, transport: TransportBox) -> Result<EscPosPrinter, PluginError> {
    let manifest = manifest();
    let profile = manifest
        .printer_profile(request.profile.as_str())
        .ok_or_else(|| {
            invalid(format!(
                "unknown ESC/POS profile '{}' (it has escpos-80mm, escpos-58mm)",
                request.profile
            ))
        })?;
    Ok(EscPosPrinter {
        device_id: request.device_id.to_string(),
        width_dots: profile.width_dots,
        max_length_dots: profile.max_length_dots,
        settings: request.settings.to_vec(),
        transport,
    })
}

fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::new(ErrorKind::InvalidJob, message)
}

impl EscPosPrinter {
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

    fn job_options(&self, job: &PrintJob) -> Result<JobOptions, PluginError> {
        let cut = choice_setting(
            "cut",
            self.setting(Some(job), "cut"),
            &[
                ("each", Cut::Each),
                ("partial", Cut::Partial),
                ("end", Cut::End),
                ("none", Cut::None),
            ],
        )?
        .unwrap_or(Cut::Each);
        let band_rows = self
            .number::<u16>(Some(job), "band_rows")?
            .unwrap_or(DEFAULT_BAND_ROWS);
        if !(1..=MAX_BAND_ROWS).contains(&band_rows) {
            return Err(invalid(format!(
                "setting band_rows = {band_rows} is outside 1..={MAX_BAND_ROWS}"
            )));
        }
        Ok(JobOptions {
            cut,
            band_rows,
            copies: job.copies,
        })
    }

    fn encode_job(&self, job: &PrintJob) -> Result<Vec<u8>, PluginError> {
        if job.copies == 0 {
            return Err(invalid("copies must be at least 1"));
        }
        match &job.input {
            PrintInput::Raster(pages) => {
                if pages.is_empty() {
                    return Err(invalid("the job has no pages"));
                }
                for (number, page) in pages.iter().enumerate() {
                    if !page.is_well_formed() {
                        return Err(invalid(format!(
                            "page {}: its data does not match its size",
                            number + 1
                        )));
                    }
                    if page.width > self.width_dots {
                        return Err(PluginError::new(
                            ErrorKind::MediaMismatch,
                            format!(
                                "the label is {} dots wide; this printer prints at most {} dots ({} mm)",
                                page.width,
                                self.width_dots,
                                self.width_dots * 254 / 2030
                            ),
                        ));
                    }
                    if page.height > self.max_length_dots {
                        return Err(PluginError::new(
                            ErrorKind::MediaMismatch,
                            format!(
                                "the label is {} dots long; this plugin prints labels up to {} dots ({MAX_LENGTH_MM} mm)",
                                page.height, self.max_length_dots
                            ),
                        ));
                    }
                }
                Ok(encode_job(pages, &self.job_options(job)?))
            }
            PrintInput::Raw(bytes) => Ok(bytes.to_vec()),
            PrintInput::Pdf(_) => Err(invalid(
                "ESC/POS printers do not take PDF; the host renders it first",
            )),
        }
    }

    /// Sends one `DLE EOT n` request and reads its byte.
    fn ask(&mut self, request: &[u8], timeout_ms: u32) -> Result<u8, PluginError> {
        self.transport.write(request.into()).into_result()?;
        match self.transport.read(1, timeout_ms).into_result() {
            Ok(bytes) => match bytes.first() {
                Some(&byte) if is_status_byte(byte) => Ok(byte),
                _ => Err(PluginError::new(
                    ErrorKind::Protocol,
                    format!(
                        "the printer answered {:02X?} to a status request; ESC/POS answers one byte of the form 0xx1xx10",
                        bytes.as_slice()
                    ),
                )),
            },
            Err(err) if err.kind == TransportErrorKind::Timeout => Err(PluginError::not_ready(
                PrinterState::Offline,
                format!(
                    "the printer did not answer a status request within {timeout_ms} ms \
                     (it may be off or not speak ESC/POS)"
                ),
            )),
            Err(err) => Err(err.into()),
        }
    }

    /// Reads the real-time status; `None` when the settings say there is no way back.
    fn query_status(
        &mut self,
        job: Option<&PrintJob>,
    ) -> Result<Option<RealTimeStatus>, PluginError> {
        if self.setting(job, "check_status") == Some("false") {
            return Ok(None);
        }
        let timeout = self
            .number::<u32>(job, "status_timeout_ms")?
            .unwrap_or(DEFAULT_STATUS_TIMEOUT_MS);
        // A byte still on its way from an earlier request that timed out, or an answer to a
        // `DLE EOT` sequence that happened to occur inside raster data (printers act on those
        // anywhere in the stream), would be read as the answer to this request: clear them.
        self.drain()?;
        // Epson's reference asks to wait for each answer before sending the next request.
        let printer = self.ask(PRINTER_REQUEST, timeout)?;
        let offline = self.ask(OFFLINE_REQUEST, timeout)?;
        let error = if RealTimeStatus::offline_reports_error(offline) {
            Some(self.ask(ERROR_REQUEST, timeout)?)
        } else {
            None
        };
        let paper = self.ask(PAPER_REQUEST, timeout)?;
        Ok(Some(RealTimeStatus {
            printer,
            offline,
            error,
            paper,
        }))
    }

    /// Discards whatever the printer has already sent.
    fn drain(&mut self) -> Result<(), PluginError> {
        loop {
            match self.transport.read(64, DRAIN_WAIT_MS).into_result() {
                Ok(bytes) if !bytes.is_empty() => continue,
                Ok(_) => return Ok(()),
                Err(err) if err.kind == TransportErrorKind::Timeout => return Ok(()),
                Err(err) => return Err(err.into()),
            }
        }
    }
}

impl Printer for EscPosPrinter {
    fn status(&mut self) -> Result<PrinterStatus, PluginError> {
        let (state, detail) = match self.query_status(None) {
            Ok(Some(status)) => (status.state(), status.describe()),
            Ok(None) => (
                PrinterState::Ready,
                "the printer cannot report status over this connection".to_string(),
            ),
            Err(err) => match err.printer_state.into_option() {
                Some(state) => (state, err.message.to_string()),
                None if err.kind == ErrorKind::Transport => {
                    (PrinterState::Offline, err.message.to_string())
                }
                None => return Err(err),
            },
        };
        Ok(PrinterStatus {
            state,
            detail: detail.into(),
            media: None.into(),
        })
    }

    fn encode(&mut self, job: &PrintJob) -> Result<Vec<u8>, PluginError> {
        self.encode_job(job)
    }

    fn print(&mut self, job: &PrintJob) -> Result<PrintReport, PluginError> {
        // Encode first: a job that cannot be printed as asked never disturbs the printer.
        let bytes = self.encode_job(job)?;
        let before = self.query_status(Some(job))?;
        if let Some(status) = before {
            if !status.state().can_print() {
                return Err(PluginError::not_ready(
                    status.state(),
                    format!("printer {} reports {}", self.device_id, status.describe()),
                ));
            }
        }
        self.transport
            .write(bytes.as_slice().into())
            .into_result()?;
        let pages = match &job.input {
            PrintInput::Raster(pages) => pages.len() as u32,
            _ => 1,
        };
        let mut detail = "ESC/POS raster; status not available".to_string();
        // A fault that appears while the labels go out (paper running out mid-batch) shows in
        // the next status; report it instead of claiming success.
        if before.is_some() {
            if let Some(after) = self.query_status(Some(job))? {
                if !after.state().can_print() {
                    return Err(PluginError::not_ready(
                        after.state(),
                        format!(
                            "printer {} reports {} after the job was sent; it may be partly printed",
                            self.device_id,
                            after.describe()
                        ),
                    ));
                }
                detail = format!("ESC/POS raster; printer {}", after.describe());
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
        abi_stable::std_types::RVec,
        testing::{
            check_manifest, exercise_printer, open_request, page_from_rows, raster_job,
            render_sample_label, ScriptHandle,
        },
    };

    use super::*;

    /// Scripts the four status answers.
    fn answers(printer: u8, offline: u8, error: u8, paper: u8) -> impl FnOnce(&ScriptHandle) {
        move |script| {
            script.reply_when(PRINTER_REQUEST, &[printer]);
            script.reply_when(OFFLINE_REQUEST, &[offline]);
            script.reply_when(ERROR_REQUEST, &[error]);
            script.reply_when(PAPER_REQUEST, &[paper]);
        }
    }

    fn ready() -> impl FnOnce(&ScriptHandle) {
        answers(0x12, 0x12, 0x12, 0x12)
    }

    const STATUS_REQUESTS: &[u8] = b"\x10\x04\x01\x10\x04\x02\x10\x04\x04";

    #[test]
    fn the_manifest_conforms_and_lists_the_tm_l100() {
        let m = manifest();
        check_manifest(&m);
        let model = m.usb_model(0x04B8, 0x0E31).expect("TM-L100");
        assert_eq!(model.model.as_str(), "TM-L100");
        assert_eq!(
            m.printer_profile("escpos-58mm").map(|p| p.width_dots),
            Some(384)
        );
    }

    /// The worked example's hand-computed bytes, through the whole printer: a 16 x 2 label
    /// with a frame corner (row 0 `##..............` = 0xC0 0x00, row 1 `#..............#` =
    /// 0x80 0x01), two copies, each fully cut, framed by the status requests.
    #[test]
    fn a_small_label_prints_exactly_between_status_requests() {
        let job = raster_job(vec![page_from_rows(16, &["##", "#..............#"])], 2);
        let run = exercise_printer(open, &open_request("escpos-80mm", &[]), ready(), &job);
        #[rustfmt::skip]
        let label: &[u8] = &[
            0x1D, 0x76, 0x30, 0x00, 0x02, 0x00, 0x02, 0x00, // GS v 0 0, x = 2, y = 2
            0xC0, 0x00, 0x80, 0x01,
            0x1D, 0x56, 0x41, 0x00,                         // GS V 65 0
        ];
        let job_bytes = [b"\x1b@".as_slice(), label, label].concat();
        assert_eq!(run.encoded.as_ref().expect("encodes"), &job_bytes);
        assert_eq!(
            run.written_for_print,
            [STATUS_REQUESTS, job_bytes.as_slice(), STATUS_REQUESTS].concat()
        );
        let report = run.expect_printed();
        assert_eq!(report.labels, 2);
        assert_eq!(report.bytes_sent, job_bytes.len() as u64);
        assert_eq!(report.detail.as_str(), "ESC/POS raster; printer ready");
        assert_eq!(run.written_for_status, STATUS_REQUESTS);
    }

    #[test]
    fn the_sample_label_goes_out_as_encoded() {
        let m = manifest();
        let profile = m.printer_profile("escpos-58mm").expect("profile");
        let page = render_sample_label(profile);
        assert_eq!((page.width, page.height), (384, 203));
        let run = exercise_printer(
            open,
            &open_request("escpos-58mm", &[("band_rows", "100")]),
            ready(),
            &raster_job(vec![page], 1),
        );
        run.expect_printed();
        assert!(run.print_sent_the_encoded_bytes());
        let encoded = run.encoded.as_ref().expect("encodes");
        // 203 rows in bands of 100: 100, 100, 3.
        let bands: Vec<&[u8]> = encoded
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"\x1dv0\x00")
            .map(|(at, _)| &encoded[at + 4..at + 8])
            .collect();
        assert_eq!(bands, [[48, 0, 100, 0], [48, 0, 100, 0], [48, 0, 3, 0]]);
    }

    #[test]
    fn an_open_cover_refuses_the_job_before_sending_it() {
        let run = exercise_printer(
            open,
            &open_request("escpos-80mm", &[]),
            answers(0x1A, 0x16, 0x12, 0x12),
            &raster_job(vec![page_from_rows(8, &["#"])], 1),
        );
        let err = run.report.expect_err("cover open");
        assert_eq!(
            err.printer_state.into_option(),
            Some(PrinterState::HeadOpen)
        );
        assert!(err.message.contains("cover open"), "{}", err.message);
        assert_eq!(run.written_for_print, STATUS_REQUESTS, "no label bytes");
        let status = run.status_after.expect("status");
        assert_eq!(status.state, PrinterState::HeadOpen);
        assert_eq!(status.detail.as_str(), "cover open; offline");
    }

    #[test]
    fn an_error_is_explained_by_the_error_cause() {
        let run = exercise_printer(
            open,
            &open_request("escpos-80mm", &[]),
            answers(0x1A, 0x52, 0x1A, 0x12),
            &raster_job(vec![page_from_rows(8, &["#"])], 1),
        );
        let status = run.status_before.expect("status");
        assert_eq!(status.state, PrinterState::Error);
        assert_eq!(status.detail.as_str(), "autocutter error; offline");
        assert_eq!(
            run.written_for_status,
            b"\x10\x04\x01\x10\x04\x02\x10\x04\x03\x10\x04\x04"
        );
    }

    #[test]
    fn a_fault_after_the_job_fails_it_as_partly_printed() {
        let run = exercise_printer(
            open,
            &open_request("escpos-80mm", &[]),
            |script: &ScriptHandle| {
                // The request right after the cut is answered "offline"; when two triggers end
                // at the same byte, the one scripted first answers.
                script.reply_when(b"\x1dVA\x00\x10\x04\x01", &[0x1A]);
                ready()(script);
            },
            &raster_job(vec![page_from_rows(8, &["#"])], 1),
        );
        assert_eq!(
            run.status_before.expect("status").state,
            PrinterState::Ready
        );
        let err = run.report.expect_err("offline after the job");
        assert_eq!(err.printer_state.into_option(), Some(PrinterState::Paused));
        assert!(
            err.message
                .contains("offline after the job was sent; it may be partly printed"),
            "{}",
            err.message
        );
    }

    #[test]
    fn stale_bytes_are_not_taken_for_the_answer() {
        let (transport, script) = devicehub_plugin_api::testing::ScriptedTransport::new("t");
        // Paper-out answers left over from an earlier request, then a ready printer.
        script.push_read(&[0x72, 0x72]);
        ready()(&script);
        let mut printer =
            open(&open_request("escpos-80mm", &[]), transport.into_box()).expect("opens");
        assert_eq!(printer.status().expect("status").state, PrinterState::Ready);
    }

    #[test]
    fn a_silent_printer_is_offline_and_a_garbled_one_a_protocol_error() {
        let run = exercise_printer(
            open,
            &open_request("escpos-80mm", &[("status_timeout_ms", "10")]),
            |_| {},
            &raster_job(vec![page_from_rows(8, &["#"])], 1),
        );
        assert_eq!(
            run.status_before.expect("status").state,
            PrinterState::Offline
        );
        let err = run.report.expect_err("offline");
        assert_eq!(err.printer_state.into_option(), Some(PrinterState::Offline));

        let run = exercise_printer(
            open,
            &open_request("escpos-80mm", &[]),
            |script: &ScriptHandle| script.reply_when(PRINTER_REQUEST, b"?"),
            &raster_job(vec![page_from_rows(8, &["#"])], 1),
        );
        let err = run.report.expect_err("garbled");
        assert_eq!(err.kind, ErrorKind::Protocol);
    }

    #[test]
    fn a_disconnected_printer_is_offline() {
        let (transport, script) = devicehub_plugin_api::testing::ScriptedTransport::new("t");
        let mut printer =
            open(&open_request("escpos-80mm", &[]), transport.into_box()).expect("opens");
        script.disconnect();
        assert_eq!(
            printer.status().expect("status").state,
            PrinterState::Offline
        );
        let err = printer
            .print(&raster_job(vec![page_from_rows(8, &["#"])], 1))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Transport);
    }

    #[test]
    fn labels_wider_than_the_head_or_too_long_are_refused() {
        let run = exercise_printer(
            open,
            &open_request("escpos-58mm", &[]),
            ready(),
            &raster_job(vec![page_from_rows(385, &["#"])], 1),
        );
        let err = run.report.expect_err("too wide");
        assert_eq!(err.kind, ErrorKind::MediaMismatch);
        assert!(err.message.contains("384 dots (48 mm)"), "{}", err.message);
        assert!(run.written_for_print.is_empty());

        let tall = vec![""; 7994];
        let run = exercise_printer(
            open,
            &open_request("escpos-80mm", &[]),
            ready(),
            &raster_job(vec![page_from_rows(8, &tall)], 1),
        );
        assert_eq!(
            run.encoded.expect_err("too long").kind,
            ErrorKind::MediaMismatch
        );
    }

    #[test]
    fn settings_are_checked_and_job_settings_win() {
        let mut job = raster_job(vec![page_from_rows(8, &["#"])], 1);
        job.settings = RVec::from(vec![Setting::new("cut", "partial")]);
        let run = exercise_printer(
            open,
            &open_request("escpos-80mm", &[("cut", "none")]),
            ready(),
            &job,
        );
        assert!(run.encoded.expect("encodes").ends_with(b"\x80\x1dVB\x00"));

        for (key, value, words) in [
            ("cut", "sometimes", "each, partial, end, none"),
            ("band_rows", "0", "1..=2303"),
            ("band_rows", "many", "not a number"),
        ] {
            let run = exercise_printer(
                open,
                &open_request("escpos-80mm", &[(key, value)]),
                ready(),
                &raster_job(vec![page_from_rows(8, &["#"])], 1),
            );
            let err = run.encoded.expect_err("refused");
            assert!(
                err.message.contains(key) && err.message.contains(words),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn raw_input_passes_through_and_status_can_be_skipped() {
        let mut job = raster_job(vec![], 1);
        job.input = PrintInput::Raw(RVec::from(b"\x1b@hello\n".to_vec()));
        let run = exercise_printer(
            open,
            &open_request("escpos-80mm", &[("check_status", "false")]),
            |_| {},
            &job,
        );
        assert_eq!(run.written_for_print, b"\x1b@hello\n");
        assert!(run.expect_printed().detail.contains("status not available"));
        assert_eq!(run.status_after.expect("status").state, PrinterState::Ready);
    }
}
