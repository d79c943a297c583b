//! The plugin itself: the manifest with the USB ID table, and the scale that reads weight
//! reports from the host's HID transport and zeroes with the `02 02` output report.
//!
//! # Reading
//! HID scales send input reports on their own; the host's HID layer queues them until they are
//! read. A read therefore takes the newest report queued (older ones describe a load that may
//! have gone) and, while the scale reports motion, keeps reading until a report of any other
//! state arrives or the timeout passes, when the last report's state is returned. The first
//! report after opening is skipped: scales often send one describing the load at power-on or at
//! the previous session's end. Zeroing drops the queued reports and skips the next lone report
//! in the same way, since they describe the load before the zero.
//!
//! The plugin reads no settings.

use std::time::{Duration, Instant};

use devicehub_plugin_api::{
    abi_stable::std_types::RSlice, DeviceKind, ErrorKind, OpenRequest, PluginError, PluginManifest,
    Scale, ScaleReading, ScaleState, SupportLevel, TransportBox, TransportErrorKind, UsbModel,
    API_VERSION,
};

use crate::report::{is_weight_report, ReportError, WeightReport, ZERO_REPORT};

/// The one profile: the HID POS scale report, which every model in the table speaks.
pub const PROFILE: &str = "hid-pos";

/// How many queued reports one read drains at most to reach the newest. Operating systems keep
/// a bounded queue per open device (Linux hidraw keeps 64 reports); the bound keeps a scale that
/// reports faster than it is read from holding a read forever.
const MAX_DRAINED: usize = 64;

/// The USB ID table: (vendor ID, product ID, model with vendor name).
const MODELS: &[(u16, u16, &str)] = &[
    (0x0922, 0x8003, "DYMO M10"),
    (0x0922, 0x8004, "DYMO M25"),
    (0x0922, 0x8009, "DYMO S250 / S180"),
    (0x1446, 0x6A73, "Stamps.com Model 510"),
    (0x1446, 0x6A78, "DYMO Endicia 75 lb"),
    (0x1446, 0x6A79, "USPS DS25"),
    (0x2474, 0x0550, "Stamps.com stainless steel"),
    (0x2474, 0x3550, "Stamps.com stainless steel"),
    (0x0EB8, 0xF000, "Mettler Toledo POS scale"),
    (0x0EB8, 0xF001, "Mettler Toledo POS scale"),
    (0x0B67, 0x555E, "Fairbanks SCB-R9000"),
    (0x7B7C, 0x0100, "Elane PS311"),
    (0x6096, 0x0158, "Sanford DYMO 10 lb"),
    (0x0D8F, 0x0200, "Pitney Bowes 397-B"),
];

/// The plugin's manifest.
pub fn manifest() -> PluginManifest {
    PluginManifest {
        name: "hid-scale".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        required_features: vec!["scale".into(), "transport.hid".into()].into(),
        kind: DeviceKind::Scale,
        description: "USB HID point-of-sale scales (DYMO, Stamps.com, Mettler Toledo, Fairbanks, Pitney Bowes...)".into(),
        usb_models: MODELS
            .iter()
            .map(|&(vendor_id, product_id, model)| UsbModel {
                vendor_id,
                product_id,
                model: model.into(),
                // None of these has been verified on the device by this project yet.
                support: SupportLevel::Experimental,
                profile: PROFILE.into(),
            })
            .collect::<Vec<_>>()
            .into(),
        ieee1284_matches: Vec::new().into(),
        printer_profiles: Vec::new().into(),
        default_profile: Some(PROFILE.into()).into(),
    }
}

/// An open HID scale.
#[derive(Debug)]
pub struct HidScale {
    device_id: String,
    transport: TransportBox,
    /// Set until the first report after opening has been seen and dropped.
    skip_stale: bool,
}

/// Opens a HID scale (no I/O happens here).
pub fn open(request: &OpenRequest, transport: TransportBox) -> Result<HidScale, PluginError> {
    if request.profile.as_str() != PROFILE {
        return Err(PluginError::new(
            ErrorKind::InvalidJob,
            format!(
                "unknown HID scale profile '{}' (the only one is '{PROFILE}')",
                request.profile
            ),
        ));
    }
    Ok(HidScale {
        device_id: request.device_id.to_string(),
        transport,
        skip_stale: true,
    })
}

fn protocol(err: ReportError) -> PluginError {
    PluginError::new(ErrorKind::Protocol, err.to_string())
}

fn millis_left(deadline: Instant) -> u32 {
    let left = deadline.saturating_duration_since(Instant::now());
    u32::try_from(left.as_millis()).unwrap_or(u32::MAX)
}

impl HidScale {
    /// Waits at most `timeout_ms` for a weight report, then drains the queue and returns the
    /// newest weight report with the number of weight reports seen. `None` on timeout.
    fn newest_report(&mut self, timeout_ms: u32) -> Result<Option<(Vec<u8>, usize)>, PluginError> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
        let first = loop {
            match self
                .transport
                .read_report(millis_left(deadline))
                .into_result()
            {
                Ok(report) if is_weight_report(&report) => break report.into_vec(),
                // Scales may send other reports (attributes, vendor data): not weights.
                Ok(_) if millis_left(deadline) > 0 => continue,
                Ok(_) => return Ok(None),
                Err(err) if err.kind == TransportErrorKind::Timeout => return Ok(None),
                Err(err) => return Err(err.into()),
            }
        };
        let mut newest = first;
        let mut seen = 1;
        for _ in 0..MAX_DRAINED {
            match self.transport.read_report(0).into_result() {
                Ok(report) if is_weight_report(&report) => {
                    newest = report.into_vec();
                    seen += 1;
                }
                Ok(_) => {}
                Err(err) if err.kind == TransportErrorKind::Timeout => break,
                Err(err) => return Err(err.into()),
            }
        }
        Ok(Some((newest, seen)))
    }
}

impl Scale for HidScale {
    fn read(&mut self, timeout_ms: u32) -> Result<ScaleReading, PluginError> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
        let mut last: Option<ScaleReading> = None;
        // At least one attempt is made, so a zero timeout takes whatever report is queued now.
        loop {
            if let Some((report, seen)) = self.newest_report(millis_left(deadline))? {
                // When the only report so far is the stale one (sent on opening, or from before
                // a zero), it is dropped and a fresh one awaited.
                let stale = std::mem::take(&mut self.skip_stale) && seen == 1;
                if !stale {
                    let reading = WeightReport::parse(&report)
                        .and_then(|r| r.to_reading())
                        .map_err(protocol)?;
                    if reading.state != ScaleState::InMotion {
                        return Ok(reading);
                    }
                    last = Some(reading);
                }
            }
            if millis_left(deadline) == 0 {
                break;
            }
        }
        last.ok_or_else(|| {
            PluginError::new(
                ErrorKind::Timeout,
                format!(
                    "scale '{}' sent no weight report within {timeout_ms} ms",
                    self.device_id
                ),
            )
        })
    }

    fn zero(&mut self) -> Result<(), PluginError> {
        self.transport
            .write_report(RSlice::from_slice(&ZERO_REPORT))
            .into_result()?;
        // Reports queued before the zero describe the load before it, and one may still be on
        // its way: drop what is queued and treat the next lone report as stale.
        for _ in 0..MAX_DRAINED {
            match self.transport.read_report(0).into_result() {
                Ok(_) => {}
                Err(err) if err.kind == TransportErrorKind::Timeout => break,
                Err(err) => return Err(err.into()),
            }
        }
        self.skip_stale = true;
        Ok(())
    }
}
