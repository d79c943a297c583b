//! The byte pipe between a plugin and its device, implemented by the host.
//!
//! The host opens USB endpoints, TCP sockets, serial ports and HID devices; a plugin only ever
//! sees this interface. That keeps every plugin testable against a scripted transport and keeps
//! native driver code away from the operating system's device APIs.

use abi_stable::{
    sabi_trait,
    std_types::{RBox, ROption, RResult, RSlice, RString, RVec},
    StableAbi,
};

/// How the device is attached.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// USB bulk endpoints (printer class).
    Usb,
    /// A raw TCP socket (port 9100 convention for printers).
    Tcp,
    /// A serial port.
    Serial,
    /// HID reports.
    Hid,
    /// No device: writes are kept or refused by the host (encoding to a file, tests).
    Capture,
}

/// What the host knows about the attachment.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct TransportInfo {
    pub kind: TransportKind,
    /// For messages, e.g. "tcp 127.0.0.1:9100" or "usb 1-4".
    pub description: RString,
    /// The printer's IEEE-1284 device ID string, when the transport can read it.
    pub ieee1284_id: ROption<RString>,
}

/// Why a transport call failed.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportErrorKind {
    /// Nothing arrived before the timeout.
    Timeout,
    /// The device went away (unplugged, connection closed).
    Disconnected,
    /// The transport cannot do this (HID reports on a TCP socket...).
    Unsupported,
    /// Any other I/O failure.
    Io,
}

/// A transport failure.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    pub kind: TransportErrorKind,
    pub message: RString,
}

impl TransportError {
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        TransportError {
            kind,
            message: RString::from(message.into()),
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransportError {}

/// A device connection handed to a plugin. Calls block; the host calls plugins from a
/// dedicated thread per device.
#[sabi_trait]
pub trait Transport: Send {
    /// How the device is attached.
    fn info(&self) -> TransportInfo;

    /// Writes all of `data` to the device.
    fn write(&mut self, data: RSlice<'_, u8>) -> RResult<(), TransportError>;

    /// Returns the bytes available, at most `max_len`, waiting at most `timeout_ms` for the first
    /// one; [`TransportErrorKind::Timeout`] when none arrived.
    fn read(&mut self, max_len: u32, timeout_ms: u32) -> RResult<RVec<u8>, TransportError>;

    /// Sends one HID output report (the first byte is the report ID).
    fn write_report(&mut self, report: RSlice<'_, u8>) -> RResult<(), TransportError>;

    /// Waits at most `timeout_ms` for one HID input report.
    #[sabi(last_prefix_field)]
    fn read_report(&mut self, timeout_ms: u32) -> RResult<RVec<u8>, TransportError>;
}

/// An owned transport trait object.
pub type TransportBox = Transport_TO<'static, RBox<()>>;

impl TransportBox {
    /// Reads until `complete` says the bytes gathered so far hold a whole answer, or `timeout_ms`
    /// passes in total. Returns what was gathered.
    pub fn read_until(
        &mut self,
        timeout_ms: u32,
        mut complete: impl FnMut(&[u8]) -> bool,
    ) -> Result<Vec<u8>, TransportError> {
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms.into());
        let mut gathered = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(TransportError::new(
                    TransportErrorKind::Timeout,
                    format!("no complete answer within {timeout_ms} ms"),
                ));
            }
            let left_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
            match self.read(4096, left_ms).into_result() {
                Ok(chunk) => {
                    gathered.extend_from_slice(&chunk);
                    if complete(&gathered) {
                        return Ok(gathered);
                    }
                }
                Err(err) if err.kind == TransportErrorKind::Timeout => {}
                Err(err) => return Err(err),
            }
        }
    }
}

impl std::fmt::Debug for TransportBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transport({})", self.info().description)
    }
}
