//! The HID point-of-sale scale input report (usage page 0x8D), decoded into an exact reading.
//!
//! A weight report is six bytes: report ID (3, some scales send 4), status (1..=8), unit
//! (1..=12), a signed 8-bit decimal exponent and the 16-bit little-endian weight. The weight is
//! `raw x 10^exponent` in the unit. This module is pure: it performs no I/O, so every status,
//! unit and exponent the report can carry is tested byte by byte.
//!
//! # Exactness
//! Every unit is converted to integer micrograms with integer arithmetic only, never floating
//! point. A unit's size is an exact fraction of a microgram (an ounce is 28 349 523.125 ug =
//! 226 796 185 / 8 ug, a grain 6 479 891 / 100 ug), so `raw x 10^exponent x size` is an exact
//! rational number; it is rounded once, to the nearest microgram, halves away from zero. A
//! reading of 5.3 oz is 150 252 472.5625 ug and is reported as 150 252 473 ug.
//!
//! Units are handled as follows:
//! - mg, g, kg, oz, lb: converted exactly and displayed as themselves.
//! - carat (200 mg), grain (64.798 91 mg), pennyweight (24 grains), troy ounce (480 grains)
//!   and metric ton (1000 kg): defined exactly by law, so converted exactly; the reading's
//!   display unit is the gram (the metric ton's the kilogram) and its detail names the unit the
//!   scale shows.
//! - taels and avoirdupois tons: refused with [`ReportError::AmbiguousUnit`], because their
//!   size is not one number (a tael is 37.5 g in Taiwan, 37.799 g in Hong Kong and 50 g in
//!   mainland China; an avoirdupois ton is 2000 lb in the US and 2240 lb in the UK), so no
//!   exact conversion exists.

use devicehub_plugin_api::{ScaleReading, ScaleState, WeightUnit};

/// The length of a weight report, report ID included.
pub const REPORT_LEN: usize = 6;

/// The output report that zeroes (tares) the scale: report ID 2, "zero scale" set.
pub const ZERO_REPORT: [u8; 2] = [0x02, 0x02];

/// The weight units of the HID POS usage table, by their report code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HidUnit {
    Milligram,
    Gram,
    Kilogram,
    Carat,
    Tael,
    Grain,
    Pennyweight,
    MetricTon,
    AvoirTon,
    TroyOunce,
    Ounce,
    Pound,
}

impl HidUnit {
    /// Every unit, in report-code order (code 1 first).
    pub const ALL: [HidUnit; 12] = [
        HidUnit::Milligram,
        HidUnit::Gram,
        HidUnit::Kilogram,
        HidUnit::Carat,
        HidUnit::Tael,
        HidUnit::Grain,
        HidUnit::Pennyweight,
        HidUnit::MetricTon,
        HidUnit::AvoirTon,
        HidUnit::TroyOunce,
        HidUnit::Ounce,
        HidUnit::Pound,
    ];

    /// The unit with report code `code` (1..=12).
    pub fn from_code(code: u8) -> Option<HidUnit> {
        HidUnit::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// The unit's report code.
    pub fn code(self) -> u8 {
        let index = HidUnit::ALL
            .iter()
            .position(|u| *u == self)
            .expect("every unit is in ALL");
        u8::try_from(index + 1).expect("twelve units fit a byte")
    }

    /// The unit's usual abbreviation.
    pub fn symbol(self) -> &'static str {
        match self {
            HidUnit::Milligram => "mg",
            HidUnit::Gram => "g",
            HidUnit::Kilogram => "kg",
            HidUnit::Carat => "ct",
            HidUnit::Tael => "tael",
            HidUnit::Grain => "gr",
            HidUnit::Pennyweight => "dwt",
            HidUnit::MetricTon => "t",
            HidUnit::AvoirTon => "ton",
            HidUnit::TroyOunce => "oz t",
            HidUnit::Ounce => "oz",
            HidUnit::Pound => "lb",
        }
    }

    /// The unit's size in micrograms as an exact fraction `(numerator, denominator)`, or `None`
    /// when the unit has no single size (see the module documentation).
    pub fn micrograms(self) -> Option<(u128, u128)> {
        match self {
            HidUnit::Milligram => Some((1_000, 1)),
            HidUnit::Gram => Some((1_000_000, 1)),
            HidUnit::Kilogram => Some((1_000_000_000, 1)),
            // The metric carat: 200 mg exactly.
            HidUnit::Carat => Some((200_000, 1)),
            // The grain is 64.798 91 mg exactly (international yard and pound agreement, 1959).
            HidUnit::Grain => Some((6_479_891, 100)),
            // 24 grains.
            HidUnit::Pennyweight => Some((155_517_384, 100)),
            HidUnit::MetricTon => Some((1_000_000_000_000, 1)),
            // 480 grains.
            HidUnit::TroyOunce => Some((311_034_768, 10)),
            // 437.5 grains = 28 349 523.125 ug.
            HidUnit::Ounce => Some((226_796_185, 8)),
            // 7000 grains = 453 592 370 ug.
            HidUnit::Pound => Some((453_592_370, 1)),
            HidUnit::Tael | HidUnit::AvoirTon => None,
        }
    }

    /// The unit a reading reports as displayed (see the module documentation).
    pub fn display_unit(self) -> WeightUnit {
        match self {
            HidUnit::Milligram => WeightUnit::Milligram,
            HidUnit::Kilogram | HidUnit::MetricTon => WeightUnit::Kilogram,
            HidUnit::Ounce => WeightUnit::Ounce,
            HidUnit::Pound | HidUnit::AvoirTon => WeightUnit::Pound,
            HidUnit::Gram
            | HidUnit::Carat
            | HidUnit::Tael
            | HidUnit::Grain
            | HidUnit::Pennyweight
            | HidUnit::TroyOunce => WeightUnit::Gram,
        }
    }
}

/// One weight report, decoded field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightReport {
    pub report_id: u8,
    pub state: ScaleState,
    pub unit: HidUnit,
    pub exponent: i8,
    /// The weight's magnitude in units of `10^exponent` of `unit`. The field is unsigned; a scale
    /// below zero reports the magnitude with status "under zero".
    pub raw: u16,
}

/// Why a report could not be turned into a reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("the scale sent a {len}-byte report; a weight report has 6 bytes")]
    TooShort { len: usize },
    #[error("report ID {0} is not a weight report (3 or 4)")]
    NotWeightReport(u8),
    #[error("the scale reports status {0}, which the HID POS usage table does not define (1..8)")]
    UnknownStatus(u8),
    #[error(
        "the scale reports unit code {0}, which the HID POS usage table does not define (1..12)"
    )]
    UnknownUnit(u8),
    #[error(
        "the scale weighs in {0}, whose size differs from country to country; set the scale to g, kg, oz or lb"
    )]
    AmbiguousUnit(&'static str),
    #[error("the scale reports {raw} x 10^{exponent} {unit}, which is beyond any weight a scale can hold")]
    OutOfRange {
        raw: u16,
        exponent: i8,
        unit: &'static str,
    },
}

/// The scale state for a report's status byte.
pub fn state_from_status(status: u8) -> Option<ScaleState> {
    Some(match status {
        1 => ScaleState::Fault,
        2 => ScaleState::StableAtZero,
        3 => ScaleState::InMotion,
        4 => ScaleState::Stable,
        5 => ScaleState::UnderZero,
        6 => ScaleState::OverCapacity,
        7 => ScaleState::NeedsCalibration,
        8 => ScaleState::NeedsRezero,
        _ => return None,
    })
}

/// Whether `report` is a weight report (by its ID), so that other reports a scale sends can be
/// skipped without being an error.
pub fn is_weight_report(report: &[u8]) -> bool {
    matches!(report.first(), Some(3 | 4))
}

impl WeightReport {
    /// Decodes a weight report.
    pub fn parse(report: &[u8]) -> Result<WeightReport, ReportError> {
        if let Some(&id) = report.first() {
            if !is_weight_report(report) {
                return Err(ReportError::NotWeightReport(id));
            }
        }
        let &[report_id, status, unit, exponent, low, high, ..] = report else {
            return Err(ReportError::TooShort { len: report.len() });
        };
        Ok(WeightReport {
            report_id,
            state: state_from_status(status).ok_or(ReportError::UnknownStatus(status))?,
            unit: HidUnit::from_code(unit).ok_or(ReportError::UnknownUnit(unit))?,
            exponent: i8::from_le_bytes([exponent]),
            raw: u16::from_le_bytes([low, high]),
        })
    }

    /// The exact reading this report stands for (see the module documentation).
    pub fn to_reading(&self) -> Result<ScaleReading, ReportError> {
        let (num, den) = self
            .unit
            .micrograms()
            .ok_or(ReportError::AmbiguousUnit(self.unit.symbol()))?;
        let out_of_range = || ReportError::OutOfRange {
            raw: self.raw,
            exponent: self.exponent,
            unit: self.unit.symbol(),
        };
        let magnitude = scaled_micrograms(u128::from(self.raw), self.exponent, num, den)
            .ok_or_else(out_of_range)?;
        let magnitude = i64::try_from(magnitude).map_err(|_| out_of_range())?;
        let micrograms = if self.state == ScaleState::UnderZero {
            -magnitude
        } else {
            magnitude
        };
        // A step finer than a microgram cannot show in a reading in micrograms.
        let step = scaled_micrograms(1, self.exponent, num, den).ok_or_else(out_of_range)?;
        let resolution = u64::try_from(step).map_err(|_| out_of_range())?.max(1);
        Ok(ScaleReading {
            state: self.state,
            micrograms,
            resolution_micrograms: resolution,
            display_unit: self.unit.display_unit(),
            detail: self.describe().into(),
        })
    }

    /// The report in words, e.g. "report 3: stable, 53 x 10^-1 oz".
    pub fn describe(&self) -> String {
        format!(
            "report {}: {}, {} x 10^{} {}",
            self.report_id,
            state_name(self.state),
            self.raw,
            self.exponent,
            self.unit.symbol()
        )
    }
}

/// `raw x 10^exponent x num / den` rounded to the nearest integer, halves up (the value is never
/// negative here); `None` when it does not fit 128 bits.
fn scaled_micrograms(raw: u128, exponent: i8, num: u128, den: u128) -> Option<u128> {
    let power = 10u128.checked_pow(u32::from(exponent.unsigned_abs()));
    let (numerator, denominator) = if exponent >= 0 {
        (raw.checked_mul(num)?.checked_mul(power?)?, den)
    } else {
        match power.and_then(|p| p.checked_mul(den)) {
            Some(denominator) => (raw.checked_mul(num)?, denominator),
            // A divisor beyond 128 bits dwarfs any numerator here (raw x num < 2^64): the value
            // rounds to zero.
            None => return Some(0),
        }
    };
    // Every denominator here is 1 or even (unit denominators 1, 8, 10 and 100, times powers of
    // ten), so adding half of it rounds an exact half up, as the rounding rule asks.
    Some((numerator + denominator / 2) / denominator)
}

/// The lower-case name of a scale state, for details and messages.
pub fn state_name(state: ScaleState) -> &'static str {
    match state {
        ScaleState::Stable => "stable",
        ScaleState::StableAtZero => "stable at zero",
        ScaleState::InMotion => "in motion",
        ScaleState::UnderZero => "under zero",
        ScaleState::OverCapacity => "over capacity",
        ScaleState::NeedsCalibration => "needs calibration",
        ScaleState::NeedsRezero => "needs re-zeroing",
        ScaleState::Fault => "fault",
    }
}
