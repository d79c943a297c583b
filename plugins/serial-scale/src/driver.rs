//! The plugin itself: the manifest, and the scale that polls a serial scale in its protocol
//! (chosen by profile) until the weight is stable or the caller's timeout passes.
//!
//! # Profiles
//! - `mt-sics`: Mettler Toledo MT-SICS ([`crate::mtsics`]).
//! - `nci`: the NCI general serial protocol ([`crate::nci`]).
//!
//! Line settings (baud, data bits, parity, stop bits) belong to the host's serial transport and
//! are set per device in the config file.
//!
//! # Reading
//! A read asks for the weight now (`SI`, `W`), and while the scale reports motion asks again
//! every `poll_interval_ms` until the weight is stable or the timeout passes, when the last
//! reading (in motion) is returned. Over and under capacity and scale faults are readings with
//! their state, not errors: the caller decides what to tell the user. A command the scale
//! refuses or cannot execute, or an answer the plugin cannot decode, is an error.
//!
//! # Settings
//! - `poll_interval_ms`: pause between two weight requests while the scale is in motion
//!   (default 100).
//! - `answer_timeout_ms`: how long one command waits for its answer (default 1000).
//! - `zero_timeout_ms`: how long zeroing waits for its answer; balances zero only once stable
//!   (default 5000).
//! - `high_resolution` (NCI): `true` reads with `H`, ten times the displayed resolution.

use std::time::{Duration, Instant};

use devicehub_plugin_api::{
    abi_stable::std_types::RSlice, number_setting, setting, DeviceKind, ErrorKind, OpenRequest,
    PluginError, PluginManifest, Scale, ScaleReading, ScaleState, TransportBox, TransportErrorKind,
    API_VERSION,
};

use crate::{
    exact::{Decimal, Micrograms, Unit},
    mtsics::{self, Reply},
    nci::{self, Frame},
};

/// The MT-SICS profile's name.
pub const MT_SICS: &str = "mt-sics";
/// The NCI profile's name.
pub const NCI: &str = "nci";

/// The plugin's manifest. Serial scales have no USB IDs: they are configured by address
/// (`serial:///dev/ttyUSB0`) with a profile.
pub fn manifest() -> PluginManifest {
    PluginManifest {
        name: "serial-scale".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        required_features: vec!["scale".into(), "transport.stream".into()].into(),
        kind: DeviceKind::Scale,
        description:
            "Serial scales: Mettler Toledo MT-SICS (profile mt-sics) and NCI / Avery Weigh-Tronix / Brecknell (profile nci)"
                .into(),
        usb_models: Vec::new().into(),
        ieee1284_matches: Vec::new().into(),
        printer_profiles: Vec::new().into(),
        default_profile: Some(MT_SICS.into()).into(),
    }
}

/// The protocol a profile speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    MtSics,
    Nci,
}

/// An open serial scale.
#[derive(Debug)]
pub struct SerialScale {
    device_id: String,
    protocol: Protocol,
    transport: TransportBox,
    poll_interval: Duration,
    answer_timeout_ms: u32,
    zero_timeout_ms: u32,
    high_resolution: bool,
    /// The unit and step of the last weight seen, for readings that carry no weight (MT-SICS
    /// overload and underload).
    last_unit: Option<(Unit, u64)>,
}

fn invalid(message: String) -> PluginError {
    PluginError::new(ErrorKind::InvalidJob, message)
}

/// The number setting `key` of the device, or `default` when it is not set.
fn number_or(request: &OpenRequest, key: &str, default: u32) -> Result<u32, PluginError> {
    Ok(number_setting(key, setting(&request.settings, key))?.unwrap_or(default))
}

/// Opens a serial scale (no I/O happens here).
pub fn open(request: &OpenRequest, transport: TransportBox) -> Result<SerialScale, PluginError> {
    let protocol = match request.profile.as_str() {
        MT_SICS => Protocol::MtSics,
        NCI => Protocol::Nci,
        other => {
            return Err(invalid(format!(
                "unknown serial scale profile '{other}' (known: {MT_SICS}, {NCI})"
            )))
        }
    };
    let high_resolution = match setting(&request.settings, "high_resolution") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(invalid(format!(
                "setting high_resolution = {other:?} is not true or false"
            )))
        }
    };
    Ok(SerialScale {
        device_id: request.device_id.to_string(),
        protocol,
        transport,
        poll_interval: Duration::from_millis(number_or(request, "poll_interval_ms", 100)?.into()),
        answer_timeout_ms: number_or(request, "answer_timeout_ms", 1000)?.max(1),
        zero_timeout_ms: number_or(request, "zero_timeout_ms", 5000)?.max(1),
        high_resolution,
        last_unit: None,
    })
}

fn millis_left(deadline: Instant) -> u32 {
    u32::try_from(
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis(),
    )
    .unwrap_or(u32::MAX)
}

fn protocol_error(message: impl Into<String>) -> PluginError {
    PluginError::new(ErrorKind::Protocol, message)
}

fn not_ready(message: impl Into<String>) -> PluginError {
    PluginError::new(ErrorKind::NotReady, message)
}

/// What one weight request gave.
enum Poll {
    /// A reading; `settled` is false while the scale is in motion.
    Reading(ScaleReading),
    /// No answer in time, or the scale could not answer now (MT-SICS `S I`).
    NoReading(PluginError),
}

impl SerialScale {
    /// Throws away anything the scale sent unasked (late answers to earlier commands), so
    /// that the next answer read belongs to the next command.
    fn drain(&mut self) -> Result<(), PluginError> {
        loop {
            match self.transport.read(4096, 0).into_result() {
                Ok(bytes) if !bytes.is_empty() => continue,
                Ok(_) => return Ok(()),
                Err(err) if err.kind == TransportErrorKind::Timeout => return Ok(()),
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Sends `command` and reads its answer for at most `timeout_ms`.
    fn exchange(
        &mut self,
        command: &[u8],
        timeout_ms: u32,
        complete: fn(&[u8]) -> bool,
    ) -> Result<Vec<u8>, PluginError> {
        self.drain()?;
        self.transport
            .write(RSlice::from_slice(command))
            .into_result()?;
        self.transport
            .read_until(timeout_ms.max(1), complete)
            .map_err(|err| {
                if err.kind == TransportErrorKind::Timeout {
                    PluginError::new(
                        ErrorKind::Timeout,
                        format!(
                            "scale '{}' did not answer {:?} within {timeout_ms} ms",
                            self.device_id,
                            String::from_utf8_lossy(command).trim_end()
                        ),
                    )
                } else {
                    err.into()
                }
            })
    }

    fn reading(&mut self, state: ScaleState, weight: Weighed, detail: String) -> ScaleReading {
        self.last_unit = Some((weight.unit, weight.step));
        ScaleReading {
            state,
            micrograms: weight.micrograms,
            resolution_micrograms: weight.step,
            display_unit: weight.unit.display_unit(),
            detail: detail.into(),
        }
    }

    /// A reading that carries no weight value (MT-SICS overload or underload).
    fn weightless(&self, state: ScaleState, detail: &str) -> ScaleReading {
        let (unit, step) = self.last_unit.unwrap_or((Unit::Gram, 1));
        ScaleReading {
            state,
            micrograms: 0,
            resolution_micrograms: step,
            display_unit: unit.display_unit(),
            detail: detail.into(),
        }
    }

    fn poll_mt_sics(&mut self, timeout_ms: u32) -> Result<Poll, PluginError> {
        let line = match self.exchange(mtsics::WEIGHT_IMMEDIATELY, timeout_ms, mtsics::is_complete)
        {
            Ok(line) => line,
            Err(err) if err.kind == ErrorKind::Timeout => return Ok(Poll::NoReading(err)),
            Err(err) => return Err(err),
        };
        let reply = mtsics::parse_reply(&line).map_err(|e| protocol_error(e.to_string()))?;
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        Ok(Poll::Reading(match reply {
            Reply::Weight {
                stable,
                value,
                unit,
            } => {
                let weight = Weighed::decimal(value, &unit)?;
                let state = match (stable, weight.micrograms) {
                    (false, _) => ScaleState::InMotion,
                    (true, 0) => ScaleState::StableAtZero,
                    (true, n) if n < 0 => ScaleState::UnderZero,
                    (true, _) => ScaleState::Stable,
                };
                self.reading(state, weight, text)
            }
            Reply::Overload => self.weightless(
                ScaleState::OverCapacity,
                "S +: balance in overload range (no weight value)",
            ),
            Reply::Underload => self.weightless(
                ScaleState::UnderZero,
                "S -: balance in underload range (no weight value)",
            ),
            Reply::WeightNotExecutable => {
                return Ok(Poll::NoReading(not_ready(format!(
                    "scale '{}' cannot weigh now (S I: busy, or not stable in time)",
                    self.device_id
                ))))
            }
            other => return Err(mt_sics_error(&other, "SI")),
        }))
    }

    fn poll_nci(&mut self, timeout_ms: u32) -> Result<Poll, PluginError> {
        let command = if self.high_resolution {
            nci::HIGH_RESOLUTION_WEIGHT
        } else {
            nci::WEIGHT
        };
        let answer = match self.exchange(command, timeout_ms, nci::is_complete) {
            Ok(answer) => answer,
            Err(err) if err.kind == ErrorKind::Timeout => return Ok(Poll::NoReading(err)),
            Err(err) => return Err(err),
        };
        let frame = nci::parse_frame(&answer).map_err(|e| protocol_error(e.to_string()))?;
        let (field, status) = match frame {
            Frame::Weight { field, status } => (field, status),
            Frame::Unrecognized => {
                return Err(protocol_error(format!(
                    "scale '{}' does not know the weight command (answered ?): check the profile",
                    self.device_id
                )))
            }
            Frame::Status(_) => {
                return Err(protocol_error(
                    "the scale answered the weight command with a status only",
                ))
            }
        };
        let detail = format!("{}; {}", field.trim(), status.describe());
        let weight = nci::parse_weight(&field);
        let faults = status.faults();
        let state = if status.ram_error || status.eeprom_error || status.rom_error {
            ScaleState::Fault
        } else if status.calibration_error {
            ScaleState::NeedsCalibration
        } else if status.over_capacity {
            ScaleState::OverCapacity
        } else if status.under_capacity || weight.is_some_and(|w| w.negative) {
            ScaleState::UnderZero
        } else if status.motion {
            ScaleState::InMotion
        } else if status.at_zero || weight.is_some_and(|w| w.zero) {
            ScaleState::StableAtZero
        } else {
            ScaleState::Stable
        };
        Ok(Poll::Reading(match weight {
            Some(weight) => {
                let weighed = Weighed::exact(weight.micrograms, weight.step, weight.unit)?;
                self.reading(state, weighed, detail)
            }
            // Over or under capacity and faults blank the display: the state says why.
            None if !faults.is_empty() || status.over_capacity || status.under_capacity => {
                self.weightless(state, &detail)
            }
            None => {
                return Err(protocol_error(format!(
                    "the scale's weight {:?} is not a number with a unit the plugin knows",
                    field.trim()
                )))
            }
        }))
    }
}

/// A weight converted for a reading.
#[derive(Debug, Clone, Copy)]
struct Weighed {
    micrograms: i64,
    step: u64,
    unit: Unit,
}

impl Weighed {
    fn decimal(value: Decimal, symbol: &str) -> Result<Weighed, PluginError> {
        let unit = Unit::from_symbol(symbol).ok_or_else(|| {
            protocol_error(format!(
                "the scale weighs in {symbol:?}, a unit the plugin does not know; set it to g, kg, oz or lb"
            ))
        })?;
        Weighed::exact(
            Micrograms::of(value, unit),
            Micrograms::step(value.decimals, unit),
            unit,
        )
    }

    fn exact(value: Micrograms, step: Micrograms, unit: Unit) -> Result<Weighed, PluginError> {
        let too_big = || protocol_error("the scale reports a weight beyond 9 x 10^18 ug");
        Ok(Weighed {
            micrograms: value.rounded().ok_or_else(too_big)?,
            step: step
                .rounded()
                .and_then(|s| u64::try_from(s).ok())
                .ok_or_else(too_big)?
                // A step finer than a microgram cannot show in micrograms.
                .max(1),
            unit,
        })
    }
}

/// The error for an MT-SICS reply that refuses `command`.
fn mt_sics_error(reply: &Reply, command: &str) -> PluginError {
    match reply {
        Reply::SyntaxError => protocol_error(format!(
            "the balance did not recognise {command} (ES: syntax error)"
        )),
        Reply::TransmissionError => PluginError::new(
            ErrorKind::Transport,
            format!(
                "the balance received {command} garbled (ET: transmission error); check baud, parity, data and stop bits"
            ),
        ),
        Reply::LogicalError => not_ready(format!(
            "the balance cannot execute {command} (EL: logical error)"
        )),
        other => protocol_error(format!("the balance answered {command} with {other:?}")),
    }
}

impl Scale for SerialScale {
    fn read(&mut self, timeout_ms: u32) -> Result<ScaleReading, PluginError> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
        let mut last: Option<ScaleReading> = None;
        let mut why_none: Option<PluginError> = None;
        loop {
            let answer_ms = self.answer_timeout_ms.min(millis_left(deadline)).max(1);
            let poll = match self.protocol {
                Protocol::MtSics => self.poll_mt_sics(answer_ms)?,
                Protocol::Nci => self.poll_nci(answer_ms)?,
            };
            match poll {
                Poll::Reading(reading) if reading.state != ScaleState::InMotion => {
                    return Ok(reading)
                }
                Poll::Reading(reading) => last = Some(reading),
                Poll::NoReading(err) => why_none = Some(err),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(self.poll_interval.min(left));
        }
        match (last, why_none) {
            (Some(reading), _) => Ok(reading),
            (None, Some(err)) => Err(err),
            (None, None) => Err(PluginError::new(
                ErrorKind::Timeout,
                format!(
                    "scale '{}' gave no weight within {timeout_ms} ms",
                    self.device_id
                ),
            )),
        }
    }

    fn zero(&mut self) -> Result<(), PluginError> {
        match self.protocol {
            Protocol::MtSics => {
                let line =
                    self.exchange(mtsics::ZERO, self.zero_timeout_ms, mtsics::is_complete)?;
                match mtsics::parse_reply(&line).map_err(|e| protocol_error(e.to_string()))? {
                    Reply::Zeroed => Ok(()),
                    Reply::ZeroNotExecutable => Err(not_ready(
                        "the balance did not zero (Z I: busy, or not stable in time)",
                    )),
                    Reply::ZeroAboveRange => Err(not_ready(
                        "the balance did not zero: the load is above its zeroing range (Z +)",
                    )),
                    Reply::ZeroBelowRange => Err(not_ready(
                        "the balance did not zero: the load is below its zeroing range (Z -)",
                    )),
                    other => Err(mt_sics_error(&other, "Z")),
                }
            }
            Protocol::Nci => {
                let answer = self.exchange(nci::ZERO, self.zero_timeout_ms, nci::is_complete)?;
                let status =
                    match nci::parse_frame(&answer).map_err(|e| protocol_error(e.to_string()))? {
                        Frame::Status(status) | Frame::Weight { status, .. } => status,
                        Frame::Unrecognized => {
                            return Err(protocol_error(
                                "the scale does not recognise the zero command (answered ?)",
                            ))
                        }
                    };
                let faults = status.faults();
                if !faults.is_empty() {
                    Err(not_ready(format!(
                        "the scale did not zero: {}",
                        faults.join(", ")
                    )))
                } else if status.over_capacity || status.under_capacity {
                    Err(not_ready(format!(
                        "the scale did not zero: {}",
                        status.describe()
                    )))
                } else if status.motion && !status.at_zero {
                    Err(not_ready("the scale did not zero: it is in motion"))
                } else {
                    Ok(())
                }
            }
        }
    }
}
