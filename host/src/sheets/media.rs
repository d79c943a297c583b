//! Media sizes by their IPP names (PWG 5101.1 self-describing keywords such as
//! `na_number-10_4.125x9.5in` or `iso_a4_210x297mm`, and custom `WxHmm` sizes) and the
//! `orientation-requested` values.
//!
//! A self-describing keyword carries its own size after the last `_`, so any standard size is
//! understood without a table; the table below only adds the short names people type.

/// A named page size. Dimensions are in hundredths of a millimetre, IPP's unit for
/// `media-size`, so that inch sizes convert exactly (1 in = 2540).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// The PWG keyword, e.g. `na_number-10_4.125x9.5in`; custom sizes get
    /// `custom_WxHmm_WxHmm`.
    pub keyword: String,
    /// Width (the short edge, portrait) in 1/100 mm.
    pub width_hmm: u32,
    /// Height (the long edge, portrait) in 1/100 mm.
    pub height_hmm: u32,
}

/// Short names accepted besides PWG keywords.
const ALIASES: &[(&str, &str)] = &[
    ("letter", "na_letter_8.5x11in"),
    ("legal", "na_legal_8.5x14in"),
    ("a4", "iso_a4_210x297mm"),
    ("a5", "iso_a5_148x210mm"),
    ("a6", "iso_a6_105x148mm"),
    ("dl", "iso_dl_110x220mm"),
    ("c5", "iso_c5_162x229mm"),
    ("c6", "iso_c6_114x162mm"),
    ("number-10", "na_number-10_4.125x9.5in"),
    ("#10", "na_number-10_4.125x9.5in"),
    ("monarch", "na_monarch_3.875x7.5in"),
    ("4x6", "na_index-4x6_4x6in"),
];

/// The largest page accepted: 1.2 m a side (A0 is 841 x 1189 mm); anything larger is a typo.
const MAX_SIDE_HMM: u32 = 120_000;

impl Media {
    /// Parses a PWG media keyword, a short alias (`letter`, `a4`, `dl`, `#10`...), or a custom
    /// size `WxHmm` / `WxHin` (e.g. `100x150mm`).
    pub fn parse(text: &str) -> Result<Media, String> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        if let Some((_, keyword)) = ALIASES.iter().find(|(alias, _)| *alias == lower) {
            return Media::parse(keyword);
        }
        if !lower.contains('_') {
            // A bare size: make it a PWG custom keyword.
            let (w, h) = parse_size(&lower)
                .ok_or_else(|| format!("media {text:?} is not a media name or WxHmm size"))?;
            let size = &lower;
            return Media::checked(format!("custom_{size}_{size}"), w, h, text);
        }
        let size = lower.rsplit('_').next().unwrap_or_default();
        let (w, h) = parse_size(size).ok_or_else(|| {
            format!("media {text:?} does not end with a size such as _4x6in or _210x297mm")
        })?;
        Media::checked(lower.clone(), w, h, text)
    }

    fn checked(keyword: String, w: u32, h: u32, text: &str) -> Result<Media, String> {
        if w == 0 || h == 0 || w > MAX_SIDE_HMM || h > MAX_SIDE_HMM {
            return Err(format!("media {text:?} has an impossible size"));
        }
        Ok(Media {
            keyword,
            width_hmm: w,
            height_hmm: h,
        })
    }

    /// Whether this is a custom size rather than a named one.
    pub fn is_custom(&self) -> bool {
        self.keyword.starts_with("custom_")
    }

    pub fn width_mm(&self) -> f64 {
        f64::from(self.width_hmm) / 100.0
    }

    pub fn height_mm(&self) -> f64 {
        f64::from(self.height_hmm) / 100.0
    }

    /// Width and height in mm as printed with `orientation`: landscape swaps them.
    pub fn page_mm(&self, orientation: Option<Orientation>) -> (f64, f64) {
        match orientation {
            Some(Orientation::Landscape | Orientation::ReverseLandscape) => {
                (self.height_mm(), self.width_mm())
            }
            _ => (self.width_mm(), self.height_mm()),
        }
    }
}

/// Parses `WxHin` or `WxHmm` into hundredths of a millimetre, short edge first as PWG names do.
fn parse_size(text: &str) -> Option<(u32, u32)> {
    let (numbers, per_unit) = if let Some(n) = text.strip_suffix("mm") {
        (n, 100.0)
    } else if let Some(n) = text.strip_suffix("in") {
        (n, 2540.0)
    } else {
        return None;
    };
    let (w, h) = numbers.split_once('x')?;
    let convert = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return None;
        }
        let value: f64 = s.parse().ok()?;
        let hmm = (value * per_unit).round();
        (hmm.is_finite() && hmm >= 0.0 && hmm <= f64::from(u32::MAX)).then_some(hmm as u32)
    };
    Some((convert(w)?, convert(h)?))
}

/// `orientation-requested` (RFC 8011 section 5.2.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Orientation {
    Portrait,
    Landscape,
    ReverseLandscape,
    ReversePortrait,
}

impl Orientation {
    /// Parses the IPP keyword (`portrait`, `landscape`, `reverse-landscape`,
    /// `reverse-portrait`).
    pub fn parse(text: &str) -> Option<Orientation> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "portrait" => Orientation::Portrait,
            "landscape" => Orientation::Landscape,
            "reverse-landscape" => Orientation::ReverseLandscape,
            "reverse-portrait" => Orientation::ReversePortrait,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Orientation::Portrait => "portrait",
            Orientation::Landscape => "landscape",
            Orientation::ReverseLandscape => "reverse-landscape",
            Orientation::ReversePortrait => "reverse-portrait",
        }
    }

    /// The enum value IPP sends.
    pub fn ipp_enum(self) -> i32 {
        match self {
            Orientation::Portrait => 3,
            Orientation::Landscape => 4,
            Orientation::ReverseLandscape => 5,
            Orientation::ReversePortrait => 6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_self_describing_names() {
        let envelope = Media::parse("na_number-10_4.125x9.5in").unwrap();
        assert_eq!((envelope.width_hmm, envelope.height_hmm), (10478, 24130));
        assert!(!envelope.is_custom());
        let a4 = Media::parse("iso_a4_210x297mm").unwrap();
        assert_eq!((a4.width_hmm, a4.height_hmm), (21000, 29700));
        let dl = Media::parse("iso_dl_110x220mm").unwrap();
        assert_eq!((dl.width_mm(), dl.height_mm()), (110.0, 220.0));
        let card = Media::parse("na_index-4x6_4x6in").unwrap();
        assert_eq!((card.width_hmm, card.height_hmm), (10160, 15240));
        let letter = Media::parse("na_letter_8.5x11in").unwrap();
        assert_eq!((letter.width_hmm, letter.height_hmm), (21590, 27940));
    }

    #[test]
    fn reads_aliases_and_custom_sizes() {
        assert_eq!(
            Media::parse("#10").unwrap().keyword,
            "na_number-10_4.125x9.5in"
        );
        assert_eq!(Media::parse("A4").unwrap().keyword, "iso_a4_210x297mm");
        let custom = Media::parse("100x150mm").unwrap();
        assert_eq!(custom.keyword, "custom_100x150mm_100x150mm");
        assert!(custom.is_custom());
        assert_eq!((custom.width_hmm, custom.height_hmm), (10000, 15000));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "",
            "envelope",
            "na_foo_bar",
            "0x10mm",
            "10x-1mm",
            "5000x5000mm",
            "1x2cm",
        ] {
            assert!(Media::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn landscape_swaps_the_page() {
        let envelope = Media::parse("na_number-10_4.125x9.5in").unwrap();
        assert_eq!(
            envelope.page_mm(Some(Orientation::Landscape)),
            (241.3, 104.78)
        );
        assert_eq!(envelope.page_mm(None), (104.78, 241.3));
        assert_eq!(
            Orientation::parse("Reverse-Landscape").unwrap().ipp_enum(),
            5
        );
        assert!(Orientation::parse("sideways").is_none());
    }
}
