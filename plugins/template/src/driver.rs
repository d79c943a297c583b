//! The plugin itself: the manifest (USB table, profile) and the printer that checks the paper
//! sensor, sends the job built by [`crate::encode`], and reports.
//!
//! # Settings
//! Per device (config file) or per job; job settings win:
//! - `status_timeout_ms`: how long to wait for the status byte (default 2000).

use devicehub_plugin_api::{
    number_setting, setting, DeviceKind, ErrorKind, InputKind, MediaKind, OpenRequest, PluginError,
    PluginManifest, PrintInput, PrintJob, PrintReport, Printer, PrinterProfile, PrinterState,
    PrinterStatus, Setting, SupportLevel, TransportBox, TransportErrorKind, UsbModel, API_VERSION,
};

use crate::{
    encode::encode_job,
    status::{PaperSensor, PAPER_SENSOR_REQUEST},
};

/// The plugin's name: unique among plugins, lower case, shown by `devicehub plugins`.
pub const PLUGIN_NAME: &str = "template";

/// The one profile: 80 mm paper at 203 dpi, 72 mm (576 dots) printable.
pub const PROFILE: &str = "template-80mm";

/// Seiko Epson's USB vendor ID.
const VENDOR_EPSON: u16 = 0x04B8;

/// The USB ID table: (product ID, model, support level, profile). Every row needs a public
/// source; this one is in the Linux usb.ids database ("Thermal Receipt Printer [TM-T20]").
const MODELS: &[(u16, &str, SupportLevel, &str)] =
    &[(0x0E03, "TM-T20", SupportLevel::Experimental, PROFILE)];

/// The longest label taken, 1 m: a runaway page is better refused than fed out.
const MAX_LENGTH_DOTS: u32 = 8000;

const DEFAULT_STATUS_TIMEOUT_MS: u32 = 2000;

/// The plugin's manifest. The host reads it once when it loads the library.
pub fn manifest() -> PluginManifest {
    PluginManifest {
        name: PLUGIN_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        required_features: vec!["printer.raster".into(), "transport.stream".into()].into(),
        kind: DeviceKind::Printer,
        description: "Template driver: ESC/POS raster receipt printers (copy it to start a driver)"
            .into(),
        usb_models: UsbModel::table(VENDOR_EPSON, MODELS),
        ieee1284_matches: Vec::new().into(),
        printer_profiles: vec![PrinterProfile {
            name: PROFILE.into(),
            language: "ESC/POS".into(),
            dpi: 203,
            width_dots: 576,
            max_length_dots: MAX_LENGTH_DOTS,
            media: vec![MediaKind::Continuous].into(),
            inputs: vec![InputKind::Raster, InputKind::Raw].into(),
        }]
        .into(),
        default_profile: Some(PROFILE.into()).into(),
    }
}

/// An open printer. Opening does no I/O; the first call talks to the device.
#[derive(Debug)]
pub struct TemplatePrinter {
    device_id: String,
    width_dots: u32,
    settings: Vec<Setting>,
    transport: TransportBox,
}

/// Opens a printer over `transport` with the profile the host chose from the manifest.
pub fn open(
    request: &OpenRequest,
    transport: TransportBox,
) -> Result<TemplatePrinter, PluginError> {
    let manifest = manifest();
    let profile = manifest
        .printer_profile(request.profile.as_str())
        .ok_or_else(|| {
            PluginError::new(
                ErrorKind::InvalidJob,
                format!(
                    "unknown profile '{}' (this plugin has {PROFILE})",
                    request.profile
                ),
            )
        })?;
    Ok(TemplatePrinter {
        device_id: request.device_id.to_string(),
        width_dots: profile.width_dots,
        settings: request.settings.to_vec(),
        transport,
    })
}

fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::new(ErrorKind::InvalidJob, message)
}

impl TemplatePrinter {
    fn status_timeout_ms(&self, job: Option<&PrintJob>) -> Result<u32, PluginError> {
        let key = "status_timeout_ms";
        let value = job
            .and_then(|j| setting(&j.settings, key))
            .or_else(|| setting(&self.settings, key));
        Ok(number_setting(key, value)?.unwrap_or(DEFAULT_STATUS_TIMEOUT_MS))
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
                    if !page.is_well_formed() || page.height > MAX_LENGTH_DOTS {
                        return Err(invalid(format!(
                            "page {} is malformed or longer than {MAX_LENGTH_DOTS} dots",
                            number + 1
                        )));
                    }
                    if page.width > self.width_dots {
                        return Err(PluginError::new(
                            ErrorKind::MediaMismatch,
                            format!(
                                "page {} is {} dots wide; this printer prints at most {} dots",
                                number + 1,
                                page.width,
                                self.width_dots
                            ),
                        ));
                    }
                }
                Ok(encode_job(pages, job.copies))
            }
            PrintInput::Raw(bytes) => Ok(bytes.to_vec()),
            PrintInput::Pdf(_) => Err(invalid(
                "this printer does not take PDF; the host renders it first",
            )),
        }
    }

    /// Asks for the paper sensor byte.
    fn paper_sensor(&mut self, job: Option<&PrintJob>) -> Result<PaperSensor, PluginError> {
        let timeout = self.status_timeout_ms(job)?;
        self.transport
            .write(PAPER_SENSOR_REQUEST.into())
            .into_result()?;
        match self.transport.read(1, timeout).into_result() {
            Ok(bytes) => match bytes.first().map(|&b| PaperSensor(b)) {
                Some(sensor) if sensor.is_status() => Ok(sensor),
                _ => Err(PluginError::new(
                    ErrorKind::Protocol,
                    format!("the printer answered {bytes:02X?}, not a status byte"),
                )),
            },
            Err(err) if err.kind == TransportErrorKind::Timeout => Err(PluginError::not_ready(
                PrinterState::Offline,
                format!("the printer did not answer a status request within {timeout} ms"),
            )),
            Err(err) => Err(err.into()),
        }
    }
}

impl Printer for TemplatePrinter {
    fn status(&mut self) -> Result<PrinterStatus, PluginError> {
        let (state, detail) = match self.paper_sensor(None) {
            Ok(sensor) => (sensor.state(), sensor.describe().to_string()),
            // A printer that does not answer or is gone has a status: offline.
            Err(err) if err.printer_state.is_some() || err.kind == ErrorKind::Transport => (
                err.printer_state
                    .into_option()
                    .unwrap_or(PrinterState::Offline),
                err.message.to_string(),
            ),
            Err(err) => return Err(err),
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
        // Encode first: a job that cannot be printed never disturbs the printer.
        let bytes = self.encode_job(job)?;
        let sensor = self.paper_sensor(Some(job))?;
        if !sensor.state().can_print() {
            return Err(PluginError::not_ready(
                sensor.state(),
                format!("printer {} reports {}", self.device_id, sensor.describe()),
            ));
        }
        self.transport
            .write(bytes.as_slice().into())
            .into_result()?;
        let pages = match &job.input {
            PrintInput::Raster(pages) => pages.len() as u32,
            _ => 1,
        };
        Ok(PrintReport {
            bytes_sent: bytes.len() as u64,
            labels: pages.saturating_mul(job.copies),
            detail: format!("ESC/POS raster; printer {}", sensor.describe()).into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use devicehub_plugin_api::testing::{
        check_manifest, exercise_printer, open_request, page_from_rows, raster_job,
        render_sample_label,
    };

    use super::*;

    #[test]
    fn the_manifest_conforms() {
        check_manifest(&manifest());
    }

    /// Encode, status, print and status through the kit, on a page small enough to write the
    /// expected bytes out by hand.
    #[test]
    fn a_ready_printer_gets_the_encoded_job_after_one_status_request() {
        let job = raster_job(vec![page_from_rows(9, &["#.......#"])], 2);
        let run = exercise_printer(
            open,
            &open_request(PROFILE, &[]),
            |script| script.reply_when(PAPER_SENSOR_REQUEST, &[0x12]),
            &job,
        );
        let label: &[u8] = &[
            0x1D, b'v', b'0', 0, 2, 0, 1, 0, 0x80, 0x80, 0x1D, b'V', b'A', 0,
        ];
        let expected = [b"\x1b@".as_slice(), label, label].concat();
        assert_eq!(run.encoded.as_ref().expect("encodes"), &expected);
        assert_eq!(
            run.written_for_print,
            [PAPER_SENSOR_REQUEST, expected.as_slice()].concat()
        );
        assert_eq!(run.expect_printed().labels, 2);
        assert_eq!(
            run.status_before.expect("status").state,
            PrinterState::Ready
        );
    }

    #[test]
    fn paper_out_refuses_the_job_before_sending_it() {
        let m = manifest();
        let profile = m.printer_profile(PROFILE).expect("profile");
        let run = exercise_printer(
            open,
            &open_request(PROFILE, &[]),
            |script| script.reply_when(PAPER_SENSOR_REQUEST, &[0x72]),
            &raster_job(vec![render_sample_label(profile)], 1),
        );
        let err = run.report.expect_err("paper out");
        assert_eq!(
            err.printer_state.into_option(),
            Some(PrinterState::PaperOut)
        );
        assert_eq!(
            run.written_for_print, PAPER_SENSOR_REQUEST,
            "no label bytes"
        );
        assert_eq!(
            run.status_after.expect("status").state,
            PrinterState::PaperOut
        );
    }

    #[test]
    fn a_silent_printer_is_offline() {
        let run = exercise_printer(
            open,
            &open_request(PROFILE, &[("status_timeout_ms", "10")]),
            |_| {},
            &raster_job(vec![page_from_rows(8, &["#"])], 1),
        );
        assert_eq!(
            run.status_before.expect("status").state,
            PrinterState::Offline
        );
        let err = run.report.expect_err("offline");
        assert_eq!(err.printer_state.into_option(), Some(PrinterState::Offline));
    }

    #[test]
    fn a_page_wider_than_the_head_is_refused() {
        let run = exercise_printer(
            open,
            &open_request(PROFILE, &[]),
            |script| script.reply_when(PAPER_SENSOR_REQUEST, &[0x12]),
            &raster_job(vec![page_from_rows(577, &["#"])], 1),
        );
        let err = run.encoded.expect_err("too wide");
        assert_eq!(err.kind, ErrorKind::MediaMismatch);
        assert!(run.written_for_print.is_empty(), "nothing was sent");
    }
}
