//! Scale simulators: a serial scale on a pseudo-terminal speaking MT-SICS or NCI, and a model
//! of a USB HID point-of-sale scale that produces its input reports.
//!
//! # Layout
//! - this file: the simulated load every serial scale shares: the gross weight as the display
//!   shows it, the tare set by zeroing, motion, over and under capacity, faults, and commands
//!   received, with exact decimal arithmetic (no floating point: what the test sets is exactly
//!   what the scale prints).
//! - [`serial`]: the MT-SICS and NCI command handlers and the pseudo-terminal server.
//! - [`control`]: the control HTTP API (loopback only) that sets weight, unit and state.
//! - [`hid`]: the HID POS scale model, a pure state machine for tests of HID transports.
//! - [`cli`]: the `devicehub-emulator scale ...` subcommand.
//!
//! The simulators' protocol knowledge comes from the protocols' documentation (the MT-SICS
//! reference manual, the NCI general serial protocol, the HID point-of-sale usage tables),
//! never from DeviceHub's code.

pub mod cli;
#[cfg(unix)]
pub mod control;
pub mod hid;
#[cfg(unix)]
pub mod serial;

use serde::{Deserialize, Serialize};

/// A decimal number as a scale displays it: `12.50` is mantissa 1250 with 2 decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayNumber {
    pub mantissa: i64,
    pub decimals: u32,
}

/// A value the simulated scale cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{0:?} is not a decimal weight such as 1.25 or -0.5")]
    NotADecimal(String),
    #[error("unit {unit:?} is not one this scale displays (it displays {allowed})")]
    Unit { unit: String, allowed: String },
    #[error("the weight is beyond what the simulator handles")]
    Overflow,
}

impl DisplayNumber {
    /// Parses `[-]digits[.digits]`, at most 15 digits.
    pub fn parse(text: &str) -> Result<DisplayNumber, LoadError> {
        let bad = || LoadError::NotADecimal(text.to_string());
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty()
            || whole.len() + fraction.len() > 15
            || !whole
                .bytes()
                .chain(fraction.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let magnitude: i64 = format!("{whole}{fraction}").parse().map_err(|_| bad())?;
        Ok(DisplayNumber {
            mantissa: if negative { -magnitude } else { magnitude },
            decimals: u32::try_from(fraction.len()).map_err(|_| bad())?,
        })
    }

    /// The same value with `decimals` digits after the point (more digits only).
    pub fn with_decimals(self, decimals: u32) -> Result<DisplayNumber, LoadError> {
        let extra = decimals
            .checked_sub(self.decimals)
            .ok_or(LoadError::Overflow)?;
        Ok(DisplayNumber {
            mantissa: self
                .mantissa
                .checked_mul(10i64.checked_pow(extra).ok_or(LoadError::Overflow)?)
                .ok_or(LoadError::Overflow)?,
            decimals,
        })
    }

    /// `self - other`, with the larger number of decimals.
    pub fn minus(self, other: DisplayNumber) -> Result<DisplayNumber, LoadError> {
        let decimals = self.decimals.max(other.decimals);
        let a = self.with_decimals(decimals)?;
        let b = other.with_decimals(decimals)?;
        Ok(DisplayNumber {
            mantissa: a
                .mantissa
                .checked_sub(b.mantissa)
                .ok_or(LoadError::Overflow)?,
            decimals,
        })
    }

    /// Zero with the same number of decimals.
    pub fn zero_like(self) -> DisplayNumber {
        DisplayNumber {
            mantissa: 0,
            decimals: self.decimals,
        }
    }

    /// The digits of the magnitude with the point, e.g. `12.50` (no sign).
    pub fn magnitude_text(self) -> String {
        let digits = self.mantissa.unsigned_abs().to_string();
        let decimals = self.decimals as usize;
        if decimals == 0 {
            return digits;
        }
        let padded = format!("{digits:0>width$}", width = decimals + 1);
        let (whole, fraction) = padded.split_at(padded.len() - decimals);
        format!("{whole}.{fraction}")
    }

    /// The value as printed, e.g. `-12.50`.
    pub fn text(self) -> String {
        if self.mantissa < 0 {
            format!("-{}", self.magnitude_text())
        } else {
            self.magnitude_text()
        }
    }

    pub fn is_negative(self) -> bool {
        self.mantissa < 0
    }
}

/// A condition the simulated scale is put in through the control API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// Weighing normally.
    #[default]
    Normal,
    /// The load is above the weighing range.
    OverCapacity,
    /// The load is below the weighing range (pan lifted).
    UnderCapacity,
    /// A hardware fault (NCI: RAM error).
    Fault,
    /// The calibration is faulty (NCI status byte 2 bit 3).
    NeedsCalibration,
}

/// The state of one simulated serial scale.
#[derive(Debug, Clone)]
pub struct ScaleLoad {
    /// The gross load as the display would show it without tare.
    pub gross: DisplayNumber,
    /// The unit symbol shown (`g`, `kg`, `lb`, `oz`... or `lb-oz`).
    pub unit: String,
    /// Set by zeroing: subtracted from the gross load.
    pub tare: DisplayNumber,
    /// How many more weight requests see the load in motion.
    pub motion_reads: u32,
    pub condition: Condition,
    /// When set, every command is answered with this reply instead (MT-SICS `ES`, `ET`, `EL`
    /// or `I` for "not executable"; NCI `?`).
    pub fail_with: Option<String>,
    /// Every command received, in order, without its line ending.
    pub commands: Vec<String>,
    /// The units this scale's protocol displays.
    allowed_units: &'static [&'static str],
}

/// What the control API shows of a scale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleView {
    pub protocol: String,
    pub weight: String,
    pub unit: String,
    pub tare: String,
    pub net: String,
    pub motion_reads: u32,
    pub condition: Condition,
    pub fail_with: Option<String>,
    pub commands: Vec<String>,
}

/// A change made through the control API; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleUpdate {
    /// The gross load as displayed, e.g. `"1.25"`; for `lb-oz`, in ounces (`"35.5"` shows
    /// `2 lb 3.5 oz`).
    pub weight: Option<String>,
    /// The unit; changing it clears the tare.
    pub unit: Option<String>,
    pub motion_reads: Option<u32>,
    pub condition: Option<Condition>,
    /// A reply to give to every command; `"none"` clears it.
    pub fail_with: Option<String>,
}

impl ScaleLoad {
    /// An empty scale displaying `unit`, one of `allowed_units`.
    pub fn new(unit: &str, decimals: u32, allowed_units: &'static [&'static str]) -> ScaleLoad {
        let zero = DisplayNumber {
            mantissa: 0,
            decimals,
        };
        ScaleLoad {
            gross: zero,
            unit: unit.to_string(),
            tare: zero,
            motion_reads: 0,
            condition: Condition::Normal,
            fail_with: None,
            commands: Vec::new(),
            allowed_units,
        }
    }

    /// The displayed (net) weight.
    pub fn net(&self) -> Result<DisplayNumber, LoadError> {
        self.gross.minus(self.tare)
    }

    /// Zeroes: the current gross load becomes the tare.
    pub fn zero(&mut self) {
        self.tare = self.gross;
    }

    /// Applies a control API change.
    pub fn update(&mut self, update: ScaleUpdate) -> Result<(), LoadError> {
        if let Some(unit) = &update.unit {
            if !self.allowed_units.contains(&unit.as_str()) {
                return Err(LoadError::Unit {
                    unit: unit.clone(),
                    allowed: self.allowed_units.join(", "),
                });
            }
        }
        let gross = update
            .weight
            .as_deref()
            .map(DisplayNumber::parse)
            .transpose()?;
        if let Some(unit) = update.unit {
            if unit != self.unit {
                self.tare = self.tare.zero_like();
            }
            self.unit = unit;
        }
        if let Some(gross) = gross {
            if gross.decimals != self.tare.decimals {
                // A display with another resolution: the old tare no longer applies.
                self.tare = gross.zero_like();
            }
            self.gross = gross;
        }
        if let Some(motion) = update.motion_reads {
            self.motion_reads = motion;
        }
        if let Some(condition) = update.condition {
            self.condition = condition;
        }
        if let Some(fail_with) = update.fail_with {
            self.fail_with = (fail_with != "none").then_some(fail_with);
        }
        Ok(())
    }

    /// Takes one weight request's worth of motion: whether the load is still moving.
    pub fn take_motion(&mut self) -> bool {
        if self.motion_reads > 0 {
            self.motion_reads -= 1;
            true
        } else {
            false
        }
    }

    /// The control API's view.
    pub fn view(&self, protocol: &str) -> ScaleView {
        ScaleView {
            protocol: protocol.to_string(),
            weight: self.gross.text(),
            unit: self.unit.clone(),
            tare: self.tare.text(),
            net: self
                .net()
                .map(DisplayNumber::text)
                .unwrap_or_else(|e| e.to_string()),
            motion_reads: self.motion_reads,
            condition: self.condition,
            fail_with: self.fail_with.clone(),
            commands: self.commands.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_numbers_round_trip() {
        for text in ["0", "1.25", "-12.50", "0.001", "-0.5", "100.00"] {
            assert_eq!(DisplayNumber::parse(text).unwrap().text(), text);
        }
        for bad in ["", "-", "1.2.3", "abc", ".5", "1e3"] {
            assert!(DisplayNumber::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tare_is_subtracted_exactly() {
        let mut load = ScaleLoad::new("lb", 2, &["lb", "kg"]);
        load.update(ScaleUpdate {
            weight: Some("1.25".into()),
            ..ScaleUpdate::default()
        })
        .unwrap();
        load.zero();
        load.update(ScaleUpdate {
            weight: Some("2.00".into()),
            ..ScaleUpdate::default()
        })
        .unwrap();
        assert_eq!(load.net().unwrap().text(), "0.75");
        load.update(ScaleUpdate {
            unit: Some("kg".into()),
            ..ScaleUpdate::default()
        })
        .unwrap();
        assert_eq!(load.net().unwrap().text(), "2.00");
        assert!(load
            .update(ScaleUpdate {
                unit: Some("st".into()),
                ..ScaleUpdate::default()
            })
            .is_err());
    }
}
