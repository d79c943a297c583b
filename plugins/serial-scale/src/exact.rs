//! Exact weights: decimal numbers as scales print them, units as exact fractions of a
//! microgram, and the one rounding step to integer micrograms.
//!
//! Nothing here uses floating point. A printed weight such as `5.3` with unit `oz` is the exact
//! rational number 53/10 x 226 796 185/8 ug; it is rounded once, to the nearest microgram, with
//! halves rounded away from zero (5.3 oz = 150 252 472.5625 ug, reported as 150 252 473 ug).

use devicehub_plugin_api::WeightUnit;

/// A decimal number as a scale prints it: sign, digits and the number of digits after the
/// decimal point (which also gives the display step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub negative: bool,
    /// All digits, without the point: `12.50` is 1250.
    pub mantissa: u64,
    /// Digits after the point: `12.50` has 2.
    pub decimals: u32,
}

impl Decimal {
    /// Parses `[+-]digits[.digits]` (at most 18 digits), ignoring surrounding spaces and spaces
    /// between the sign and the digits (`-   12.5` is how some scales pad).
    pub fn parse(text: &str) -> Option<Decimal> {
        let text = text.trim();
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, text[1..].trim_start()),
            b'+' => (false, text[1..].trim_start()),
            _ => (false, text),
        };
        let (whole, fraction) = rest.split_once('.').unwrap_or((rest, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.len() + fraction.len() == 0
            || whole.len() + fraction.len() > 18
            || !all_digits(whole)
            || !all_digits(fraction)
        {
            return None;
        }
        let mantissa = format!("{whole}{fraction}").parse().ok()?;
        Some(Decimal {
            negative,
            mantissa,
            decimals: u32::try_from(fraction.len()).ok()?,
        })
    }

    /// Whether the value is zero (whatever its sign).
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }
}

/// The weight units serial scales print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Milligram,
    Gram,
    Kilogram,
    Ounce,
    Pound,
    Carat,
    Grain,
    Pennyweight,
    TroyOunce,
}

impl Unit {
    /// The unit for a symbol as MT-SICS and NCI scales print it (units are case-sensitive in
    /// MT-SICS: `GN` is grains).
    pub fn from_symbol(symbol: &str) -> Option<Unit> {
        Some(match symbol {
            "mg" => Unit::Milligram,
            "g" => Unit::Gram,
            "kg" => Unit::Kilogram,
            "oz" => Unit::Ounce,
            "lb" => Unit::Pound,
            "ct" => Unit::Carat,
            "GN" => Unit::Grain,
            "dwt" => Unit::Pennyweight,
            "ozt" => Unit::TroyOunce,
            _ => return None,
        })
    }

    /// The unit's size in micrograms as an exact fraction `(numerator, denominator)`.
    pub fn micrograms(self) -> (i128, i128) {
        match self {
            Unit::Milligram => (1_000, 1),
            Unit::Gram => (1_000_000, 1),
            Unit::Kilogram => (1_000_000_000, 1),
            // 437.5 grains = 28 349 523.125 ug.
            Unit::Ounce => (226_796_185, 8),
            // 7000 grains.
            Unit::Pound => (453_592_370, 1),
            // The metric carat: 200 mg.
            Unit::Carat => (200_000, 1),
            // 64.798 91 mg.
            Unit::Grain => (6_479_891, 100),
            // 24 grains.
            Unit::Pennyweight => (155_517_384, 100),
            // 480 grains.
            Unit::TroyOunce => (311_034_768, 10),
        }
    }

    /// The unit a reading says the scale displays. Units the plugin API does not name
    /// (carat, grain, pennyweight, troy ounce) are reported as grams; the reading's detail keeps
    /// the scale's own text.
    pub fn display_unit(self) -> WeightUnit {
        match self {
            Unit::Milligram => WeightUnit::Milligram,
            Unit::Kilogram => WeightUnit::Kilogram,
            Unit::Ounce => WeightUnit::Ounce,
            Unit::Pound => WeightUnit::Pound,
            Unit::Gram | Unit::Carat | Unit::Grain | Unit::Pennyweight | Unit::TroyOunce => {
                WeightUnit::Gram
            }
        }
    }
}

/// An exact number of micrograms, `numerator / denominator` (denominator positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Micrograms {
    numerator: i128,
    denominator: i128,
}

impl Micrograms {
    /// `value` of `unit`, exactly.
    pub fn of(value: Decimal, unit: Unit) -> Micrograms {
        let (num, den) = unit.micrograms();
        let magnitude = i128::from(value.mantissa) * num;
        Micrograms {
            numerator: if value.negative {
                -magnitude
            } else {
                magnitude
            },
            // At most 18 decimals (the parser's limit) times a denominator of at most 100.
            denominator: den * 10i128.pow(value.decimals),
        }
    }

    /// One display step: one unit of the last printed digit.
    pub fn step(decimals: u32, unit: Unit) -> Micrograms {
        Micrograms::of(
            Decimal {
                negative: false,
                mantissa: 1,
                decimals,
            },
            unit,
        )
    }

    /// The exact sum (pounds and ounces on one display).
    pub fn plus(self, other: Micrograms) -> Option<Micrograms> {
        Some(Micrograms {
            numerator: self
                .numerator
                .checked_mul(other.denominator)?
                .checked_add(other.numerator.checked_mul(self.denominator)?)?,
            denominator: self.denominator.checked_mul(other.denominator)?,
        })
    }

    /// Rounded to the nearest microgram, halves away from zero; `None` beyond `i64`.
    pub fn rounded(self) -> Option<i64> {
        let magnitude = self.numerator.unsigned_abs();
        let denominator = self.denominator.unsigned_abs();
        let (quotient, remainder) = (magnitude / denominator, magnitude % denominator);
        let rounded = quotient + u128::from(2 * remainder >= denominator);
        let rounded = i64::try_from(rounded).ok()?;
        Some(if self.numerator < 0 {
            -rounded
        } else {
            rounded
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ug(text: &str, unit: Unit) -> i64 {
        Micrograms::of(Decimal::parse(text).unwrap(), unit)
            .rounded()
            .unwrap()
    }

    #[test]
    fn decimals_parse_as_printed() {
        assert_eq!(
            Decimal::parse("  -100.00"),
            Some(Decimal {
                negative: true,
                mantissa: 10000,
                decimals: 2
            })
        );
        assert_eq!(Decimal::parse("0001.25").unwrap().mantissa, 125);
        assert_eq!(Decimal::parse("-  1.5").unwrap().mantissa, 15);
        assert_eq!(Decimal::parse("12").unwrap().decimals, 0);
        assert_eq!(Decimal::parse(".5").unwrap().mantissa, 5);
        for bad in [
            "",
            "-",
            ".",
            "1.2.3",
            "12a",
            "^^^^^^",
            "1 2",
            "1234567890123456789",
        ] {
            assert_eq!(Decimal::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn units_convert_exactly_with_one_rounding() {
        assert_eq!(ug("5.3", Unit::Ounce), 150_252_473);
        assert_eq!(ug("0.5", Unit::Ounce), 14_174_762);
        assert_eq!(ug("-0.5", Unit::Ounce), -14_174_762);
        assert_eq!(ug("1.25", Unit::Pound), 566_990_463);
        assert_eq!(ug("100.00", Unit::Gram), 100_000_000);
        assert_eq!(ug("0.001", Unit::Milligram), 1);
        assert_eq!(ug("0.0004", Unit::Milligram), 0);
        assert_eq!(ug("12.345", Unit::Kilogram), 12_345_000_000);
        assert_eq!(ug("1", Unit::Grain), 64_799);
        assert_eq!(ug("1", Unit::TroyOunce), 31_103_477);
        assert_eq!(ug("2.5", Unit::Carat), 500_000);
        assert_eq!(ug("1", Unit::Pennyweight), 1_555_174);
    }

    #[test]
    fn pounds_and_ounces_add_exactly() {
        let lb = Micrograms::of(Decimal::parse("2").unwrap(), Unit::Pound);
        let oz = Micrograms::of(Decimal::parse("3.5").unwrap(), Unit::Ounce);
        // 2 lb = 907 184 740 ug; 3.5 oz = 99 223 330.9375 ug.
        assert_eq!(lb.plus(oz).unwrap().rounded(), Some(1_006_408_071));
    }

    #[test]
    fn the_step_is_one_last_digit() {
        assert_eq!(Micrograms::step(1, Unit::Ounce).rounded(), Some(2_834_952));
        assert_eq!(Micrograms::step(2, Unit::Pound).rounded(), Some(4_535_924));
        assert_eq!(Micrograms::step(0, Unit::Gram).rounded(), Some(1_000_000));
    }
}
