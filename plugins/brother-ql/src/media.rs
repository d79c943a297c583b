//! The DK rolls Brother QL printers take, and how a job is checked against the loaded one.
//!
//! Every figure comes from the "page size" tables of Brother's Raster Command References
//! (QL-700 series, QL-800 series and QL-1100 series, section "Page data details"), as also
//! encoded by the brother_ql project's label table: the printable width and length in dots at
//! 300 dpi, and the margin, in dots, between the right-hand edge of the print head's raster
//! line and the first printable dot. The printer identifies a roll by its media type, width
//! and length in millimetres in its status reply, which is what [`find`] looks up.

use devicehub_plugin_api::{LoadedMedia, MediaKind, MediaRequest};

/// Continuous tape or die-cut labels, as the status reply and `ESC i z` encode them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaForm {
    /// Continuous length tape (media type 0Ah): the label is as long as the job.
    Continuous,
    /// Die-cut labels (media type 0Bh): every label has the same length.
    DieCut,
}

impl MediaForm {
    /// The media type byte of `ESC i z` and of the status reply.
    pub fn code(self) -> u8 {
        match self {
            MediaForm::Continuous => 0x0A,
            MediaForm::DieCut => 0x0B,
        }
    }

    /// The form for a media type byte, `None` for "no media" (00h) and unknown codes.
    pub fn from_code(code: u8) -> Option<MediaForm> {
        match code {
            0x0A => Some(MediaForm::Continuous),
            0x0B => Some(MediaForm::DieCut),
            _ => None,
        }
    }

    /// The plugin API's name for the form.
    pub fn kind(self) -> MediaKind {
        match self {
            MediaForm::Continuous => MediaKind::Continuous,
            MediaForm::DieCut => MediaKind::DieCut,
        }
    }
}

/// One roll type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Media {
    /// The short name used in settings and by the simulator, e.g. `62` or `29x90`.
    pub id: &'static str,
    pub form: MediaForm,
    /// Tape width in millimetres, as the status reply reports it and `ESC i z` sends it.
    pub width_mm: u8,
    /// Label length in millimetres as the printer reports it; 0 for continuous tape.
    pub length_mm: u8,
    /// The length printed on the box, for messages (the 102 x 152 mm labels report 153).
    pub nominal_length_mm: u8,
    /// Printable width in dots.
    pub printable_width: u32,
    /// Printable length in dots; 0 for continuous tape.
    pub printable_length: u32,
    /// Dots between the right-hand end of the head's raster line and the first printable dot,
    /// before any model-specific addition.
    pub right_margin: u32,
    /// Only the wide QL-1100 family takes this roll.
    pub wide_only: bool,
}

const fn continuous(
    id: &'static str,
    width_mm: u8,
    printable_width: u32,
    right_margin: u32,
    wide_only: bool,
) -> Media {
    Media {
        id,
        form: MediaForm::Continuous,
        width_mm,
        length_mm: 0,
        nominal_length_mm: 0,
        printable_width,
        printable_length: 0,
        right_margin,
        wide_only,
    }
}

#[allow(clippy::too_many_arguments)]
const fn die_cut(
    id: &'static str,
    width_mm: u8,
    length_mm: u8,
    nominal_length_mm: u8,
    printable_width: u32,
    printable_length: u32,
    right_margin: u32,
    wide_only: bool,
) -> Media {
    Media {
        id,
        form: MediaForm::DieCut,
        width_mm,
        length_mm,
        nominal_length_mm,
        printable_width,
        printable_length,
        right_margin,
        wide_only,
    }
}

/// Every rectangular roll the driver knows. Round die-cut labels are left out: a round label
/// cannot hold a rectangular shipping label or indicium.
pub const MEDIA: &[Media] = &[
    continuous("12", 12, 106, 29, false),
    continuous("29", 29, 306, 6, false),
    continuous("38", 38, 413, 12, false),
    continuous("50", 50, 554, 12, false),
    continuous("54", 54, 590, 0, false),
    continuous("62", 62, 696, 12, false),
    continuous("102", 102, 1164, 12, true),
    die_cut("17x54", 17, 54, 54, 165, 566, 0, false),
    die_cut("17x87", 17, 87, 87, 165, 956, 0, false),
    die_cut("23x23", 23, 23, 23, 202, 202, 42, false),
    die_cut("29x42", 29, 42, 42, 306, 425, 6, false),
    die_cut("29x90", 29, 90, 90, 306, 991, 6, false),
    die_cut("38x90", 38, 90, 90, 413, 991, 12, false),
    die_cut("39x48", 39, 48, 48, 425, 495, 6, false),
    die_cut("52x29", 52, 29, 29, 578, 271, 0, false),
    die_cut("62x29", 62, 29, 29, 696, 271, 12, false),
    die_cut("62x100", 62, 100, 100, 696, 1109, 12, false),
    die_cut("102x51", 102, 51, 51, 1164, 526, 12, true),
    die_cut("102x152", 102, 153, 152, 1164, 1660, 12, true),
];

/// The roll the printer reports, by media type and size in millimetres.
pub fn find(form: MediaForm, width_mm: u8, length_mm: u8) -> Option<&'static Media> {
    MEDIA.iter().find(|m| {
        m.form == form
            && m.width_mm == width_mm
            && (form == MediaForm::Continuous || m.length_mm == length_mm)
    })
}

/// The roll with the short name `id`.
pub fn by_id(id: &str) -> Option<&'static Media> {
    MEDIA.iter().find(|m| m.id == id)
}

/// Dots to whole millimetres at 300 dpi, for messages.
pub fn dots_to_mm(dots: u32) -> u32 {
    // 300 dots per 25.4 mm; rounded to the nearest millimetre.
    (u64::from(dots) * 254 + 1500).div_euclid(3000) as u32
}

impl Media {
    /// How a user names the roll, e.g. "62 mm continuous tape", "29 x 90 mm die-cut labels".
    pub fn description(&self) -> String {
        match self.form {
            MediaForm::Continuous => format!("{} mm continuous tape", self.width_mm),
            MediaForm::DieCut => format!(
                "{} x {} mm die-cut labels",
                self.width_mm, self.nominal_length_mm
            ),
        }
    }

    /// The roll as the plugin API reports it.
    pub fn loaded(&self) -> LoadedMedia {
        LoadedMedia {
            kind: self.form.kind(),
            width_dots: self.printable_width,
            length_dots: self.printable_length,
            description: self.description().into(),
        }
    }

    /// Checks that pages of the given sizes (width, height in dots), and the media the job
    /// asks for, fit this roll. The error says what is loaded and what the job needs.
    pub fn check_fit(
        &self,
        pages: &[(u32, u32)],
        request: Option<&MediaRequest>,
    ) -> Result<(), MediaMismatch> {
        let mismatch = |needs: String| MediaMismatch {
            loaded: self.description(),
            needs,
        };
        if let Some(request) = request {
            let needs = describe_request(request);
            match (request.kind, self.form) {
                (MediaKind::Continuous, MediaForm::Continuous) => {}
                (MediaKind::DieCut, MediaForm::DieCut) => {
                    if request.length_dots > self.printable_length {
                        return Err(mismatch(needs));
                    }
                }
                _ => return Err(mismatch(needs)),
            }
            if request.width_dots > self.printable_width {
                return Err(mismatch(needs));
            }
        }
        for &(width, height) in pages {
            let too_long = self.form == MediaForm::DieCut && height > self.printable_length;
            if width > self.printable_width || too_long {
                let needs = match self.form {
                    MediaForm::Continuous => format!(
                        "a print {} mm wide ({width} dots; this tape prints {})",
                        dots_to_mm(width),
                        self.printable_width
                    ),
                    MediaForm::DieCut => format!(
                        "a print {} x {} mm ({width} x {height} dots; these labels print {} x {})",
                        dots_to_mm(width),
                        dots_to_mm(height),
                        self.printable_width,
                        self.printable_length
                    ),
                };
                return Err(mismatch(needs));
            }
        }
        Ok(())
    }
}

/// How a job's media request reads to a user, e.g. "102 x 152 mm die-cut".
fn describe_request(request: &MediaRequest) -> String {
    let width = dots_to_mm(request.width_dots);
    match request.kind {
        MediaKind::Continuous => format!("{width} mm continuous tape"),
        MediaKind::DieCut if request.length_dots > 0 => {
            format!("{width} x {} mm die-cut", dots_to_mm(request.length_dots))
        }
        MediaKind::DieCut => format!("{width} mm die-cut labels"),
        MediaKind::BlackMark => format!("{width} mm black-mark labels"),
        MediaKind::Sheet => format!("{width} mm sheets"),
    }
}

/// A job that does not fit the loaded roll.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("loaded {loaded}; job needs {needs}")]
pub struct MediaMismatch {
    /// The loaded roll, e.g. "62 mm continuous tape".
    pub loaded: String,
    /// What the job needs, e.g. "102 x 152 mm die-cut".
    pub needs: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sizes_find_their_rolls() {
        let tape = find(MediaForm::Continuous, 62, 0).expect("62 mm tape");
        assert_eq!(tape.printable_width, 696);
        assert_eq!(tape.description(), "62 mm continuous tape");
        let labels = find(MediaForm::DieCut, 29, 90).expect("29 x 90 labels");
        assert_eq!(
            (labels.printable_width, labels.printable_length),
            (306, 991)
        );
        assert_eq!(labels.description(), "29 x 90 mm die-cut labels");
        let shipping = find(MediaForm::DieCut, 102, 153).expect("102 x 152 labels");
        assert_eq!(shipping.description(), "102 x 152 mm die-cut labels");
        assert_eq!(find(MediaForm::DieCut, 62, 0), None);
    }

    #[test]
    fn ids_are_unique() {
        for (i, a) in MEDIA.iter().enumerate() {
            assert!(MEDIA[i + 1..].iter().all(|b| b.id != a.id), "{}", a.id);
        }
    }

    #[test]
    fn a_die_cut_request_on_tape_names_both() {
        let tape = by_id("62").expect("62 mm tape");
        let request = MediaRequest {
            kind: MediaKind::DieCut,
            width_dots: 1200,
            length_dots: 1800,
        };
        let err = tape.check_fit(&[], Some(&request)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "loaded 62 mm continuous tape; job needs 102 x 152 mm die-cut"
        );
    }

    #[test]
    fn pages_are_checked_across_and_on_labels_along() {
        let tape = by_id("62").expect("62 mm tape");
        assert_eq!(tape.check_fit(&[(696, 20_000)], None), Ok(()));
        let err = tape.check_fit(&[(697, 10)], None).unwrap_err();
        assert!(err.needs.contains("697 dots"), "{err}");
        let labels = by_id("29x90").expect("29 x 90 labels");
        assert_eq!(labels.check_fit(&[(306, 991)], None), Ok(()));
        let err = labels.check_fit(&[(306, 992)], None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("loaded 29 x 90 mm die-cut labels; job needs a print 26 x 84 mm"),
            "{err}"
        );
    }

    #[test]
    fn millimetres_round_to_nearest() {
        assert_eq!(dots_to_mm(1200), 102);
        assert_eq!(dots_to_mm(1800), 152);
        assert_eq!(dots_to_mm(696), 59);
    }
}
