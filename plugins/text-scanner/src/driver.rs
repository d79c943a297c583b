//! The plugin itself: the manifest, and the scanner that reads text from the host's transport
//! and hands over complete address blocks.
//!
//! # Profiles
//! - `serial` (default): text over a serial port (pen scanners, OCR desk applications), lines
//!   separated by CR LF. Configured by address, e.g. `serial:///dev/ttyUSB0?baud=9600`.
//! - `hid-keyboard`: a keyboard-wedge scanner's HID boot keyboard reports, US layout (see
//!   [`crate::keyboard`] for the limits).
//!
//! No scanner model is in a USB table: text scanners either sit behind a USB serial adapter
//! (whose IDs say nothing about what is attached) or are generic keyboards, so each is
//! configured in the device table. A keyboard-wedge scanner is bound by its USB ID
//! (`address = "usb://VID:PID"`, `profile = "hid-keyboard"`); the host attaches it when it
//! appears among the HID devices. A profile that cannot read the transport the host opened
//! (`serial` on a HID device, `hid-keyboard` on a byte stream) is refused when the device is
//! opened, naming the profile to use, rather than failing on every poll.
//!
//! # Blocks
//! A block ends with an empty line, with the `terminator` byte when one is set, or when
//! nothing arrived for `idle_ms` after part of a block (see [`crate::block`]). Lines are
//! normalised to printable ASCII ([`crate::ascii`]).
//!
//! # Settings
//! - `terminator`: a byte that ends a block: `etx` (0x03), `eot` (0x04), `gs` (0x1d), or a
//!   hex byte such as `0x1e`; `none` (default) for the empty line alone.
//! - `idle_ms`: a started block ends after this long without a byte; `0` turns it off
//!   (default 500).
//! - `max_lines` (default 12) and `max_line_length` (default 120): bounds of a block; more is
//!   dropped.
//!
//! # Privacy
//! Scanned text is an address. Nothing here logs it, and error messages never quote it.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use devicehub_plugin_api::{
    number_setting, setting, DeviceKind, ErrorKind, GrayImage, OpenRequest, PluginError,
    PluginManifest, ScannedText, Scanner, TransportBox, TransportErrorKind, TransportKind,
    API_VERSION,
};

use crate::{
    block::{Block, BlockAssembler, Limits},
    keyboard::KeyboardDecoder,
};

/// The serial profile's name.
pub const SERIAL: &str = "serial";
/// The keyboard-wedge profile's name.
pub const HID_KEYBOARD: &str = "hid-keyboard";

/// The plugin's manifest.
pub fn manifest() -> PluginManifest {
    PluginManifest {
        name: "text-scanner".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        required_features: vec![
            "scanner".into(),
            "transport.stream".into(),
            "transport.hid".into(),
        ]
        .into(),
        kind: DeviceKind::Scanner,
        description: "Scanners that deliver text: serial pen scanners and OCR desk applications \
                      (profile serial), keyboard-wedge scanners over HID (profile hid-keyboard)"
            .into(),
        usb_models: Vec::new().into(),
        ieee1284_matches: Vec::new().into(),
        printer_profiles: Vec::new().into(),
        default_profile: Some(SERIAL.into()).into(),
    }
}

/// How the device delivers text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Serial,
    Keyboard,
}

/// An open text scanner.
#[derive(Debug)]
pub struct TextScanner {
    device_id: String,
    delivery: Delivery,
    transport: TransportBox,
    assembler: BlockAssembler,
    keyboard: KeyboardDecoder,
    /// `None` when blocks do not end on an idle gap.
    idle: Option<Duration>,
    /// When the last byte of the block being received arrived.
    last_byte: Option<Instant>,
    /// Blocks completed by bytes that arrived together with an earlier block.
    ready: VecDeque<Block>,
}

fn invalid(message: String) -> PluginError {
    PluginError::new(ErrorKind::InvalidJob, message)
}

/// The number setting `key` of the device, or `default` when it is not set.
fn number_or(request: &OpenRequest, key: &str, default: usize) -> Result<usize, PluginError> {
    Ok(number_setting(key, setting(&request.settings, key))?.unwrap_or(default))
}

/// Parses the `terminator` setting.
pub fn parse_terminator(text: &str) -> Result<Option<u8>, String> {
    let text = text.trim().to_ascii_lowercase();
    Ok(Some(match text.as_str() {
        "none" | "" => return Ok(None),
        "etx" => 0x03,
        "eot" => 0x04,
        "gs" => 0x1d,
        other => {
            let hex = other.strip_prefix("0x").ok_or_else(|| {
                format!("terminator {text:?} is not etx, eot, gs, none or a hex byte like 0x1e")
            })?;
            let byte = u8::from_str_radix(hex, 16)
                .map_err(|_| format!("terminator {text:?} is not a hex byte"))?;
            if byte == b'\r' || byte == b'\n' || byte.is_ascii_graphic() || byte == b' ' {
                return Err(format!(
                    "terminator {text:?} would cut lines: choose a control byte other than CR and LF"
                ));
            }
            byte
        }
    }))
}

/// Opens a text scanner (no I/O happens here).
pub fn open(request: &OpenRequest, transport: TransportBox) -> Result<TextScanner, PluginError> {
    let delivery = match request.profile.as_str() {
        SERIAL => Delivery::Serial,
        HID_KEYBOARD => Delivery::Keyboard,
        other => {
            return Err(invalid(format!(
                "unknown text scanner profile '{other}' (known: {SERIAL}, {HID_KEYBOARD})"
            )))
        }
    };
    check_transport(delivery, transport.info().kind)?;
    let terminator = match setting(&request.settings, "terminator") {
        Some(text) => parse_terminator(text).map_err(invalid)?,
        None => None,
    };
    let limits = Limits {
        max_lines: number_or(request, "max_lines", Limits::default().max_lines)?.max(1),
        max_line_len: number_or(request, "max_line_length", Limits::default().max_line_len)?.max(1),
    };
    let idle_ms = number_or(request, "idle_ms", 500)?;
    Ok(TextScanner {
        device_id: request.device_id.to_string(),
        delivery,
        transport,
        assembler: BlockAssembler::new(limits, terminator),
        keyboard: KeyboardDecoder::default(),
        idle: (idle_ms > 0).then(|| Duration::from_millis(idle_ms as u64)),
        last_byte: None,
        ready: VecDeque::new(),
    })
}

/// Refuses a profile that cannot read `kind`: HID devices deliver reports, serial ports and
/// sockets deliver bytes. Capture transports (encoding, tests) take either.
fn check_transport(delivery: Delivery, kind: TransportKind) -> Result<(), PluginError> {
    match (delivery, kind) {
        (Delivery::Serial, TransportKind::Hid) => Err(invalid(format!(
            "profile '{SERIAL}' reads a byte stream, but this is a HID device: set profile = \"{HID_KEYBOARD}\""
        ))),
        (Delivery::Keyboard, TransportKind::Serial | TransportKind::Tcp | TransportKind::Usb) => {
            Err(invalid(format!(
                "profile '{HID_KEYBOARD}' reads HID keyboard reports, but this device delivers a \
                 byte stream: set profile = \"{SERIAL}\""
            )))
        }
        _ => Ok(()),
    }
}

fn scanned(block: Block) -> ScannedText {
    ScannedText {
        lines: block
            .lines
            .into_iter()
            .map(Into::into)
            .collect::<Vec<_>>()
            .into(),
    }
}

impl TextScanner {
    /// When the block being received ends for want of bytes, if it does.
    fn idle_deadline(&self) -> Option<Instant> {
        match (self.idle, self.last_byte) {
            (Some(idle), Some(last)) if self.assembler.is_started() => Some(last + idle),
            _ => None,
        }
    }

    /// Reads once, waiting at most `wait`; returns the bytes typed or sent (possibly none).
    fn read_once(&mut self, wait: Duration) -> Result<Vec<u8>, PluginError> {
        let wait_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
        let result = match self.delivery {
            Delivery::Serial => self
                .transport
                .read(4096, wait_ms)
                .into_result()
                .map(Vec::from),
            Delivery::Keyboard => self
                .transport
                .read_report(wait_ms)
                .into_result()
                // A report that is not a keyboard report (another collection of a composite
                // device) types nothing.
                .map(|report| self.keyboard.feed(&report).unwrap_or_default()),
        };
        match result {
            Ok(bytes) => Ok(bytes),
            Err(err) if err.kind == TransportErrorKind::Timeout => Ok(Vec::new()),
            Err(err) => Err(PluginError::new(
                ErrorKind::Transport,
                format!("scanner '{}': {}", self.device_id, err.message),
            )),
        }
    }
}

impl Scanner for TextScanner {
    fn poll(&mut self, timeout_ms: u32) -> Result<Option<ScannedText>, PluginError> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
        loop {
            if let Some(block) = self.ready.pop_front() {
                return Ok(Some(scanned(block)));
            }
            let now = Instant::now();
            if let Some(idle_end) = self.idle_deadline() {
                if idle_end <= now {
                    self.last_byte = None;
                    if let Some(block) = self.assembler.finish() {
                        return Ok(Some(scanned(block)));
                    }
                    continue;
                }
            }
            if now >= deadline {
                return Ok(None);
            }
            let until = self
                .idle_deadline()
                .map_or(deadline, |idle_end| idle_end.min(deadline));
            let bytes = self.read_once(until.saturating_duration_since(now))?;
            if !bytes.is_empty() {
                self.last_byte = Some(Instant::now());
                self.ready.extend(self.assembler.feed(&bytes));
            }
        }
    }

    fn recognize(&mut self, _image: &GrayImage) -> Result<ScannedText, PluginError> {
        Err(PluginError::new(
            ErrorKind::Unsupported,
            format!(
                "scanner '{}' delivers text and cannot read images: use an ocr device",
                self.device_id
            ),
        ))
    }
}
