//! The device interfaces a plugin implements, and the values that cross them.

use abi_stable::{
    sabi_trait,
    std_types::{RBox, ROption, RResult, RString, RVec},
    StableAbi,
};

use crate::{error::PluginError, manifest::MediaKind};

/// A key/value setting passed to a plugin (per device from the config file, or per job).
/// Each plugin documents the keys it reads; unknown keys are ignored.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: RString,
    pub value: RString,
}

impl Setting {
    pub fn new(key: &str, value: &str) -> Self {
        Setting {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Looks up `key` in a settings list.
pub fn setting<'a>(settings: &'a [Setting], key: &str) -> Option<&'a str> {
    settings
        .iter()
        .find(|s| s.key.as_str() == key)
        .map(|s| s.value.as_str())
}

/// A setting's value as a number, surrounding spaces ignored: `Ok(None)` when the setting is
/// absent, an [`ErrorKind::InvalidJob`](crate::ErrorKind::InvalidJob) error naming the setting
/// and its value when it is not a number.
pub fn number_setting<T: std::str::FromStr>(
    key: &str,
    value: Option<&str>,
) -> Result<Option<T>, PluginError> {
    value
        .map(|v| {
            v.trim().parse::<T>().map_err(|_| {
                PluginError::new(
                    crate::ErrorKind::InvalidJob,
                    format!("setting {key} = {v:?} is not a number"),
                )
            })
        })
        .transpose()
}

/// A setting's value as one of `choices`, `(word, value)`: `Ok(None)` when the setting is
/// absent, an [`ErrorKind::InvalidJob`](crate::ErrorKind::InvalidJob) error naming the setting,
/// its value and the words allowed when it is another word.
pub fn choice_setting<T: Copy>(
    key: &str,
    value: Option<&str>,
    choices: &[(&str, T)],
) -> Result<Option<T>, PluginError> {
    let Some(value) = value else {
        return Ok(None);
    };
    match choices.iter().find(|(word, _)| *word == value) {
        Some(&(_, chosen)) => Ok(Some(chosen)),
        None => {
            let words = choices
                .iter()
                .map(|(word, _)| *word)
                .collect::<Vec<_>>()
                .join(", ");
            Err(PluginError::new(
                crate::ErrorKind::InvalidJob,
                format!("setting {key} = {value:?} is not one of {words}"),
            ))
        }
    }
}

/// What the host tells a plugin when it opens a device.
///
/// Opening does no I/O: a plugin may talk to the device first in a later call, so a device
/// opened to encode a job into a file never needs to answer.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// The host's ID for the device, for messages.
    pub device_id: RString,
    /// The profile chosen from the plugin's manifest for this device.
    pub profile: RString,
    /// The model name, when known.
    pub model: ROption<RString>,
    /// Per-device settings from the config file.
    pub settings: RVec<Setting>,
}

// ---------------------------------------------------------------------------------------------
// Printers

/// One page rendered by the host: `height` rows of `ceil(width / 8)` bytes, most significant bit
/// first, bit 1 = black dot.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RasterPage {
    pub width: u32,
    pub height: u32,
    pub data: RVec<u8>,
}

impl RasterPage {
    /// Bytes per row.
    pub fn stride(&self) -> usize {
        (self.width as usize).div_ceil(8)
    }

    /// Whether `data` holds exactly `height` rows of `stride` bytes.
    pub fn is_well_formed(&self) -> bool {
        self.data.len() == self.stride() * self.height as usize
    }
}

/// What to print.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub enum PrintInput {
    /// Pages rendered to the printer's resolution by the host.
    Raster(RVec<RasterPage>),
    /// A PDF document, for printers that accept PDF.
    Pdf(RVec<u8>),
    /// Bytes in the printer's own language, sent unchanged.
    Raw(RVec<u8>),
}

/// A print job as the plugin sees it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PrintJob {
    /// The job's ID, for messages only.
    pub job_id: RString,
    pub input: PrintInput,
    /// How many copies of every page; at least 1.
    pub copies: u32,
    /// The media the job was laid out for, when the job says.
    pub media: ROption<MediaRequest>,
    /// Per-job settings (see each plugin's documentation).
    pub settings: RVec<Setting>,
}

/// The media a job needs.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct MediaRequest {
    pub kind: MediaKind,
    /// Width in dots at the printer's resolution.
    pub width_dots: u32,
    /// Length in dots; 0 for "as long as the page".
    pub length_dots: u32,
}

/// What a plugin reports after a successful print.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PrintReport {
    /// Bytes written to the transport.
    pub bytes_sent: u64,
    /// Labels or sheets the printer was asked to produce (pages x copies).
    pub labels: u32,
    /// Anything worth telling the user, e.g. the compression chosen.
    pub detail: RString,
}

/// The state of a printer, reduced to what a user and a job need to know.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrinterState {
    Ready,
    /// Busy printing; jobs queue.
    Busy,
    PaperOut,
    /// Print head or cover open.
    HeadOpen,
    RibbonOut,
    Paused,
    /// The printer does not answer or the transport is gone.
    Offline,
    /// Any other error the printer reports; see the detail.
    Error,
}

impl PrinterState {
    /// The lower-case name used in status output and events.
    pub fn as_str(self) -> &'static str {
        match self {
            PrinterState::Ready => "ready",
            PrinterState::Busy => "busy",
            PrinterState::PaperOut => "paper out",
            PrinterState::HeadOpen => "head open",
            PrinterState::RibbonOut => "ribbon out",
            PrinterState::Paused => "paused",
            PrinterState::Offline => "offline",
            PrinterState::Error => "error",
        }
    }

    /// Whether a job can be sent.
    pub fn can_print(self) -> bool {
        matches!(self, PrinterState::Ready | PrinterState::Busy)
    }
}

/// The media a printer reports as loaded, when it can tell.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct LoadedMedia {
    pub kind: MediaKind,
    pub width_dots: u32,
    /// 0 for continuous media.
    pub length_dots: u32,
    /// How the user would name it, e.g. "62 mm continuous tape".
    pub description: RString,
}

/// A printer's status.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PrinterStatus {
    pub state: PrinterState,
    /// The printer's raw answer, decoded into words, e.g. "paper out; head up".
    pub detail: RString,
    pub media: ROption<LoadedMedia>,
}

/// A printer opened by a plugin. Every call may block on the transport; the host calls it from
/// a dedicated thread, never from async workers.
#[sabi_trait]
pub trait PrinterDevice: Send {
    /// Asks the printer for its status.
    fn status(&mut self) -> RResult<PrinterStatus, PluginError>;

    /// The bytes [`PrinterDevice::print`] would send for `job`, without touching the device.
    fn encode(&mut self, job: &PrintJob) -> RResult<RVec<u8>, PluginError>;

    /// Prints `job`: checks the printer can take it, sends it, and reports.
    #[sabi(last_prefix_field)]
    fn print(&mut self, job: &PrintJob) -> RResult<PrintReport, PluginError>;
}

/// An owned printer trait object.
pub type PrinterBox = PrinterDevice_TO<'static, RBox<()>>;

// ---------------------------------------------------------------------------------------------
// Scales

/// Units a scale can display; readings always carry exact micrograms as well.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightUnit {
    Milligram,
    Gram,
    Kilogram,
    Ounce,
    Pound,
}

/// The state of a scale reading.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleState {
    Stable,
    StableAtZero,
    InMotion,
    UnderZero,
    OverCapacity,
    NeedsCalibration,
    NeedsRezero,
    Fault,
}

/// One weight reading.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ScaleReading {
    pub state: ScaleState,
    /// The weight in integer micrograms (exact for every unit a scale reports).
    pub micrograms: i64,
    /// The scale's resolution (one display step) in micrograms.
    pub resolution_micrograms: u64,
    /// The unit the scale displays.
    pub display_unit: WeightUnit,
    /// The scale's raw answer in words, for diagnosis.
    pub detail: RString,
}

/// A scale opened by a plugin.
#[sabi_trait]
pub trait ScaleDevice: Send {
    /// Reads the current weight, waiting at most `timeout_ms` for the scale to answer.
    fn read(&mut self, timeout_ms: u32) -> RResult<ScaleReading, PluginError>;

    /// Zeroes (tares) the scale.
    #[sabi(last_prefix_field)]
    fn zero(&mut self) -> RResult<(), PluginError>;
}

/// An owned scale trait object.
pub type ScaleBox = ScaleDevice_TO<'static, RBox<()>>;

// ---------------------------------------------------------------------------------------------
// Scanners

/// An 8-bit greyscale image (0 = black), row-major, for OCR.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct GrayImage {
    pub width: u32,
    pub height: u32,
    pub pixels: RVec<u8>,
}

/// Text read by a scanner: an address block, one entry per line, printable ASCII.
///
/// This is personal data: the host never logs it or writes it to disk.
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq, Eq)]
pub struct ScannedText {
    pub lines: RVec<RString>,
}

impl std::fmt::Debug for ScannedText {
    // Scanned text is an address: keep it out of debug output and therefore out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScannedText({} lines, redacted)", self.lines.len())
    }
}

/// A scanner opened by a plugin.
#[sabi_trait]
pub trait ScannerDevice: Send {
    /// Waits at most `timeout_ms` for a complete scan from the device.
    fn poll(&mut self, timeout_ms: u32) -> RResult<ROption<ScannedText>, PluginError>;

    /// Reads the text in `image` (OCR plugins).
    #[sabi(last_prefix_field)]
    fn recognize(&mut self, image: &GrayImage) -> RResult<ScannedText, PluginError>;
}

/// An owned scanner trait object.
pub type ScannerBox = ScannerDevice_TO<'static, RBox<()>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn number_settings_are_parsed_or_named_when_wrong() {
        assert_eq!(number_setting::<u32>("speed", None).unwrap(), None);
        assert_eq!(
            number_setting::<u32>("speed", Some(" 4 ")).unwrap(),
            Some(4)
        );
        assert_eq!(
            number_setting::<f32>("gap_mm", Some("2.5")).unwrap(),
            Some(2.5)
        );
        let err = number_setting::<u8>("darkness", Some("300")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidJob);
        assert_eq!(err.message, "setting darkness = \"300\" is not a number");
    }

    #[test]
    fn choice_settings_take_only_their_words_and_list_them_when_wrong() {
        let choices = [("gap", 1), ("mark", 2), ("continuous", 3)];
        assert_eq!(choice_setting("media", None, &choices).unwrap(), None);
        assert_eq!(
            choice_setting("media", Some("mark"), &choices).unwrap(),
            Some(2)
        );
        let err = choice_setting("media", Some("Mark"), &choices).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidJob);
        assert_eq!(
            err.message,
            "setting media = \"Mark\" is not one of gap, mark, continuous"
        );
    }
}
