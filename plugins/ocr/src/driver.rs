//! The plugin itself: the manifest and the OCR engine behind a virtual scanner device.
//!
//! # Device
//! Configured in the device table with the address `none://` (no transport: the host hands a
//! transport that refuses I/O, which the plugin never uses):
//! ```toml
//! [[devices]]
//! id = "ocr"
//! plugin = "ocr"
//! address = "none://"
//! ```
//! [`Scanner::recognize`] reads an 8-bit greyscale image and answers the address lines.
//! [`Scanner::poll`] answers [`ErrorKind::Unsupported`]: the device has no scans of its own,
//! and the host stops polling it.
//!
//! # Settings
//! - `language`: Tesseract's language (default `eng`; its traineddata must be installed).
//! - `tessdata`: the folder holding traineddata files (default: Tesseract's own).
//! - `dpi`: the images' resolution, which helps Tesseract size characters (default 300).
//! - `max_lines` (default 12).
//!
//! Images larger than [`MAX_PIXELS`] are refused, so that one request cannot take the
//! machine's memory and minutes of CPU.
//!
//! # Privacy
//! What is read is an address: nothing here logs it, and errors never quote it.

use devicehub_plugin_api::{
    number_setting, setting, DeviceKind, ErrorKind, GrayImage, OpenRequest, PluginError,
    PluginManifest, ScannedText, Scanner, TransportBox, API_VERSION,
};
use tesseract::{PageSegMode, Tesseract};

use crate::text;

/// The plugin's only profile.
pub const OCR: &str = "ocr";
/// The largest image accepted: 40 megapixels, an A4 page at 600 dpi with room to spare.
pub const MAX_PIXELS: u64 = 40_000_000;

/// The plugin's manifest.
pub fn manifest() -> PluginManifest {
    PluginManifest {
        name: "ocr".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        required_features: vec!["scanner".into()].into(),
        kind: DeviceKind::Scanner,
        description: "Reads address blocks from images with Tesseract OCR (a virtual device: \
                      address none://)"
            .into(),
        usb_models: Vec::new().into(),
        ieee1284_matches: Vec::new().into(),
        printer_profiles: Vec::new().into(),
        default_profile: Some(OCR.into()).into(),
    }
}

/// What Tesseract is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EngineSettings {
    language: String,
    tessdata: Option<String>,
    dpi: i32,
    max_lines: usize,
}

/// An OCR device.
pub struct OcrScanner {
    device_id: String,
    settings: EngineSettings,
    /// The engine, started on first use and kept: starting Tesseract loads its model, which
    /// takes longer than reading an address. `None` after a failed call, to start afresh.
    engine: Option<Tesseract>,
    /// The transport the host handed over; held, never used.
    _transport: TransportBox,
}

impl std::fmt::Debug for OcrScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcrScanner")
            .field("device_id", &self.device_id)
            .field("settings", &self.settings)
            .field("engine_started", &self.engine.is_some())
            .finish()
    }
}

fn invalid(message: String) -> PluginError {
    PluginError::new(ErrorKind::InvalidJob, message)
}

fn internal(message: String) -> PluginError {
    PluginError::new(ErrorKind::Internal, message)
}

/// Opens an OCR device and starts Tesseract, so that a missing language model shows when the
/// device is attached rather than at the first image.
pub fn open(request: &OpenRequest, transport: TransportBox) -> Result<OcrScanner, PluginError> {
    if request.profile.as_str() != OCR {
        return Err(invalid(format!(
            "unknown ocr profile '{}' (known: {OCR})",
            request.profile
        )));
    }
    let number = |key: &str, default: i64| -> Result<i64, PluginError> {
        Ok(number_setting(key, setting(&request.settings, key))?.unwrap_or(default))
    };
    let dpi = number("dpi", 300)?;
    if !(70..=2400).contains(&dpi) {
        return Err(invalid(format!(
            "setting dpi = {dpi} is not between 70 and 2400"
        )));
    }
    let max_lines = number("max_lines", 12)?.clamp(1, 100);
    let settings = EngineSettings {
        language: setting(&request.settings, "language")
            .unwrap_or("eng")
            .to_string(),
        tessdata: setting(&request.settings, "tessdata").map(str::to_string),
        dpi: dpi as i32,
        max_lines: max_lines as usize,
    };
    let engine = start_engine(&settings)?;
    Ok(OcrScanner {
        device_id: request.device_id.to_string(),
        settings,
        engine: Some(engine),
        _transport: transport,
    })
}

fn start_engine(settings: &EngineSettings) -> Result<Tesseract, PluginError> {
    let mut engine = Tesseract::new(settings.tessdata.as_deref(), Some(&settings.language))
        .map_err(|e| {
            PluginError::new(
                ErrorKind::NotReady,
                format!(
                    "Tesseract cannot start with language '{}' ({e}): install its traineddata \
                     (Debian: tesseract-ocr-{})",
                    settings.language, settings.language
                ),
            )
        })?;
    // An address is one block of left-aligned lines.
    engine.set_page_seg_mode(PageSegMode::PsmSingleBlock);
    Ok(engine)
}

impl OcrScanner {
    fn read(&mut self, image: &GrayImage) -> Result<Vec<String>, PluginError> {
        let (width, height) = (image.width, image.height);
        if width == 0 || height == 0 {
            return Err(invalid("the image is empty".to_string()));
        }
        let pixels = u64::from(width) * u64::from(height);
        if pixels > MAX_PIXELS {
            return Err(invalid(format!(
                "the image has {pixels} pixels; at most {MAX_PIXELS} are read"
            )));
        }
        if image.pixels.len() as u64 != pixels {
            return Err(invalid(format!(
                "the image holds {} bytes, not {width} x {height}",
                image.pixels.len()
            )));
        }
        let engine = match self.engine.take() {
            Some(engine) => engine,
            None => start_engine(&self.settings)?,
        };
        // Both fit in i32: their product is at most MAX_PIXELS.
        let (w, h) = (width as i32, height as i32);
        let mut engine = engine
            .set_frame(&image.pixels, w, h, 1, w)
            .map_err(|e| internal(format!("Tesseract refused the image: {e}")))?
            .set_source_resolution(self.settings.dpi)
            .recognize()
            .map_err(|e| internal(format!("Tesseract failed to read the image: {e}")))?;
        let read = engine
            .get_text()
            .map_err(|e| internal(format!("Tesseract's text could not be taken: {e}")))?;
        self.engine = Some(engine);
        Ok(text::address_lines(&read, self.settings.max_lines))
    }
}

impl Scanner for OcrScanner {
    fn poll(&mut self, _timeout_ms: u32) -> Result<Option<ScannedText>, PluginError> {
        Err(PluginError::new(
            ErrorKind::Unsupported,
            format!(
                "'{}' is an OCR device: it reads images sent to it and has no scans to poll",
                self.device_id
            ),
        ))
    }

    fn recognize(&mut self, image: &GrayImage) -> Result<ScannedText, PluginError> {
        let lines = self.read(image)?;
        Ok(ScannedText {
            lines: lines.into_iter().map(Into::into).collect::<Vec<_>>().into(),
        })
    }
}
