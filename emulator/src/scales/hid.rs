//! A model of a USB HID point-of-sale scale (usage page 0x8D): the input reports it sends for
//! the load on it, and the zero output report it obeys.
//!
//! The model is a pure state machine with no I/O and no clock: each call to
//! [`HidScaleModel::next_report`] is the next report the scale sends. A test wraps it in a
//! transport of its own to stand in for HID hardware, which cannot exist on a build machine.
//!
//! The report, from the HID point-of-sale usage tables: `[report ID (3), status, unit,
//! exponent (signed), weight low byte, weight high byte]`, the weight being `raw x 10^exponent`
//! units. Status: 1 fault, 2 stable at zero, 3 in motion, 4 stable, 5 under zero (the weight
//! field holds the magnitude), 6 over limit, 7 needs calibration, 8 needs re-zeroing. Units: 1
//! mg, 2 g, 3 kg, 4 carat, 5 taels, 6 grains, 7 pennyweight, 8 metric ton, 9 avoirdupois ton,
//! 10 troy ounce, 11 ounce, 12 pound. The output report `02 02` zeroes (tares) the scale.

/// Unit codes of the HID point-of-sale usage tables.
pub mod unit {
    pub const MILLIGRAM: u8 = 1;
    pub const GRAM: u8 = 2;
    pub const KILOGRAM: u8 = 3;
    pub const CARAT: u8 = 4;
    pub const TAEL: u8 = 5;
    pub const GRAIN: u8 = 6;
    pub const PENNYWEIGHT: u8 = 7;
    pub const METRIC_TON: u8 = 8;
    pub const AVOIR_TON: u8 = 9;
    pub const TROY_OUNCE: u8 = 10;
    pub const OUNCE: u8 = 11;
    pub const POUND: u8 = 12;
}

/// A condition the scale reports whatever its load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HidCondition {
    #[default]
    Normal,
    Fault,
    NeedsCalibration,
    NeedsRezero,
}

/// An output report the model does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("output report {0:02x?} is not the zero report 02 02")]
pub struct UnknownOutputReport(pub Vec<u8>);

/// A HID POS scale: the load on it, its tare, and the reports it will send.
#[derive(Debug, Clone)]
pub struct HidScaleModel {
    report_id: u8,
    unit: u8,
    exponent: i8,
    /// The largest net load, in display steps, before the scale reports over limit.
    capacity: i64,
    /// The gross load in display steps (`10^exponent` units).
    gross: i64,
    /// Set by the zero report.
    tare: i64,
    /// How many more reports show the load in motion.
    motion_reports: u32,
    condition: HidCondition,
    /// The report describing the load before this session, sent first.
    stale: Option<[u8; 6]>,
    /// How many zero reports the scale obeyed.
    zeroes: u32,
}

impl HidScaleModel {
    /// An empty scale weighing in `unit` with display step `10^exponent`, over limit above
    /// `capacity` steps.
    pub fn new(unit: u8, exponent: i8, capacity: u16) -> HidScaleModel {
        HidScaleModel {
            report_id: 3,
            unit,
            exponent,
            capacity: i64::from(capacity),
            gross: 0,
            tare: 0,
            motion_reports: 0,
            condition: HidCondition::Normal,
            stale: None,
            zeroes: 0,
        }
    }

    /// Sends reports with another report ID (some scales use 4).
    pub fn with_report_id(mut self, report_id: u8) -> HidScaleModel {
        self.report_id = report_id;
        self
    }

    /// Makes the first report describe `steps` on the scale, as scales send a stale report
    /// when opened.
    pub fn with_stale_load(mut self, steps: i64) -> HidScaleModel {
        let current = (self.gross, self.motion_reports);
        self.gross = steps;
        self.motion_reports = 0;
        self.stale = Some(self.report_now());
        (self.gross, self.motion_reports) = current;
        self
    }

    /// Puts a load of `steps` on the scale; the next `settle_reports` reports show motion.
    pub fn place(&mut self, steps: i64, settle_reports: u32) {
        self.gross = steps;
        self.motion_reports = settle_reports;
    }

    pub fn set_condition(&mut self, condition: HidCondition) {
        self.condition = condition;
    }

    /// How many zero reports the scale obeyed.
    pub fn zeroes(&self) -> u32 {
        self.zeroes
    }

    /// The next input report the scale sends.
    pub fn next_report(&mut self) -> [u8; 6] {
        if let Some(stale) = self.stale.take() {
            return stale;
        }
        let report = self.report_now();
        self.motion_reports = self.motion_reports.saturating_sub(1);
        report
    }

    fn report_now(&self) -> [u8; 6] {
        let net = self.gross - self.tare;
        let status = match self.condition {
            HidCondition::Fault => 1,
            HidCondition::NeedsCalibration => 7,
            HidCondition::NeedsRezero => 8,
            HidCondition::Normal if net > self.capacity => 6,
            HidCondition::Normal if self.motion_reports > 0 => 3,
            HidCondition::Normal if net < 0 => 5,
            HidCondition::Normal if net == 0 => 2,
            HidCondition::Normal => 4,
        };
        let raw = u16::try_from(net.unsigned_abs()).unwrap_or(u16::MAX);
        let [low, high] = raw.to_le_bytes();
        [
            self.report_id,
            status,
            self.unit,
            self.exponent.to_le_bytes()[0],
            low,
            high,
        ]
    }

    /// Obeys an output report from the host.
    pub fn handle_output_report(&mut self, report: &[u8]) -> Result<(), UnknownOutputReport> {
        if report != [0x02, 0x02] {
            return Err(UnknownOutputReport(report.to_vec()));
        }
        self.tare = self.gross;
        self.motion_reports = 0;
        self.zeroes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_follow_the_load() {
        let mut scale = HidScaleModel::new(unit::POUND, -2, 2500).with_stale_load(900);
        assert_eq!(scale.next_report(), [3, 4, 12, 0xFE, 0x84, 0x03]);
        assert_eq!(scale.next_report(), [3, 2, 12, 0xFE, 0, 0]);
        scale.place(125, 2);
        assert_eq!(scale.next_report()[1], 3);
        assert_eq!(scale.next_report()[1], 3);
        assert_eq!(scale.next_report(), [3, 4, 12, 0xFE, 125, 0]);
        scale.handle_output_report(&[2, 2]).unwrap();
        assert_eq!(scale.next_report(), [3, 2, 12, 0xFE, 0, 0]);
        scale.place(100, 0);
        assert_eq!(scale.next_report(), [3, 5, 12, 0xFE, 25, 0]);
        scale.place(3000, 0);
        assert_eq!(scale.next_report()[1], 6);
        scale.set_condition(HidCondition::Fault);
        assert_eq!(scale.next_report()[1], 1);
        assert!(scale.handle_output_report(&[2, 1]).is_err());
        assert_eq!(scale.zeroes(), 1);
    }
}
