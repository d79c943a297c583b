//! HID devices (point-of-sale scales, keyboard-wedge scanners) through the `hidapi` crate.
//!
//! On macOS and Windows the operating system's HID driver owns these devices, so they are
//! opened through its HID API rather than by claiming the USB interface; on Linux hidapi uses
//! the hidraw driver. This layer is deliberately thin: listing devices, opening one, and moving
//! input and output reports. Everything above it (choosing a plugin, attaching, decoding
//! reports) works on [`HidSource`] and [`TransportBox`], so it is tested without hardware.

use std::fmt;

use devicehub_plugin_api::{
    abi_stable::std_types::{RResult, RSlice, RVec},
    Transport, TransportBox, TransportError, TransportErrorKind, TransportInfo, TransportKind,
};

/// The HID usage page of point-of-sale devices (scales among them).
pub const POS_USAGE_PAGE: u16 = 0x8D;

/// The HID usage page of keyboards, mice and other generic desktop controls: a keyboard-wedge
/// scanner's keyboard collection is on it.
pub const GENERIC_DESKTOP_USAGE_PAGE: u16 = 0x01;

/// The longest input report read; HID POS scale reports are 6 bytes, full-speed USB interrupt
/// reports at most 64.
const MAX_REPORT_LEN: usize = 64;

/// One HID device (one top-level collection) as the operating system lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HidDeviceInfo {
    pub vendor_id: u16,
    pub product_id: u16,
    /// The platform's path for the collection (`/dev/hidraw3`, an IOService path...).
    pub path: String,
    pub serial_number: Option<String>,
    /// 0 where the platform does not report it.
    pub usage_page: u16,
}

impl HidDeviceInfo {
    /// A key that stays the same while the device stays plugged in.
    pub fn stable_key(&self) -> String {
        format!(
            "{:04x}:{:04x}@{}",
            self.vendor_id, self.product_id, self.path
        )
    }
}

/// Why HID could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HidError {
    #[error("HID devices cannot be used on this machine: {0}")]
    Unavailable(String),
    #[error("listing HID devices failed: {0}")]
    List(String),
    #[error("cannot open HID device {path}: {message}")]
    Open { path: String, message: String },
}

/// Where HID devices come from: the operating system through hidapi, or a stand-in in tests.
pub trait HidSource: Send {
    /// The devices present now.
    fn list(&mut self) -> Result<Vec<HidDeviceInfo>, HidError>;
    /// Opens one of them as a transport for a plugin.
    fn open(&mut self, device: &HidDeviceInfo) -> Result<TransportBox, HidError>;
}

/// The operating system's HID devices, through hidapi.
pub struct HidBus {
    api: hidapi::HidApi,
}

impl fmt::Debug for HidBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HidBus")
    }
}

impl HidBus {
    /// Initialises hidapi.
    pub fn open() -> Result<HidBus, HidError> {
        hidapi::HidApi::new()
            .map(|api| HidBus { api })
            .map_err(|e| HidError::Unavailable(e.to_string()))
    }
}

impl HidSource for HidBus {
    fn list(&mut self) -> Result<Vec<HidDeviceInfo>, HidError> {
        self.api
            .refresh_devices()
            .map_err(|e| HidError::List(e.to_string()))?;
        Ok(self
            .api
            .device_list()
            .map(|d| HidDeviceInfo {
                vendor_id: d.vendor_id(),
                product_id: d.product_id(),
                path: d.path().to_string_lossy().into_owned(),
                serial_number: d.serial_number().map(str::to_string),
                usage_page: d.usage_page(),
            })
            .collect())
    }

    fn open(&mut self, device: &HidDeviceInfo) -> Result<TransportBox, HidError> {
        let open_error = |message: String| HidError::Open {
            path: device.path.clone(),
            message,
        };
        let path = std::ffi::CString::new(device.path.clone())
            .map_err(|_| open_error("the path holds a NUL byte".into()))?;
        let handle = self
            .api
            .open_path(&path)
            .map_err(|e| open_error(e.to_string()))?;
        Ok(super::boxed(HidTransport {
            device: handle,
            description: format!(
                "hid {} ({:04x}:{:04x})",
                device.path, device.vendor_id, device.product_id
            ),
        }))
    }
}

/// An open HID device: input and output reports only.
pub struct HidTransport {
    device: hidapi::HidDevice,
    description: String,
}

impl fmt::Debug for HidTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HidTransport")
            .field("device", &self.description)
            .finish()
    }
}

impl HidTransport {
    fn error(&self, err: hidapi::HidError) -> TransportError {
        TransportError::new(
            TransportErrorKind::Io,
            format!("{}: {err}", self.description),
        )
    }
}

fn no_stream() -> TransportError {
    TransportError::new(
        TransportErrorKind::Unsupported,
        "a HID device exchanges reports, not a byte stream",
    )
}

impl Transport for HidTransport {
    fn info(&self) -> TransportInfo {
        TransportInfo {
            kind: TransportKind::Hid,
            description: self.description.as_str().into(),
            ieee1284_id: None.into(),
        }
    }

    fn write(&mut self, _data: RSlice<'_, u8>) -> RResult<(), TransportError> {
        RResult::RErr(no_stream())
    }

    fn read(&mut self, _max_len: u32, _timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        RResult::RErr(no_stream())
    }

    fn write_report(&mut self, report: RSlice<'_, u8>) -> RResult<(), TransportError> {
        match self.device.write(&report) {
            Ok(_) => RResult::ROk(()),
            Err(e) => RResult::RErr(self.error(e)),
        }
    }

    fn read_report(&mut self, timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        let mut buffer = [0u8; MAX_REPORT_LEN];
        let timeout = i32::try_from(timeout_ms).unwrap_or(i32::MAX);
        match self.device.read_timeout(&mut buffer, timeout) {
            Ok(0) => RResult::RErr(TransportError::new(
                TransportErrorKind::Timeout,
                format!("{} sent no report within {timeout_ms} ms", self.description),
            )),
            Ok(n) => RResult::ROk(buffer[..n].to_vec().into()),
            Err(e) => RResult::RErr(self.error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_hid_works_or_says_why() {
        // Containers and CI machines may have no hidraw devices, or hidapi may not start; both
        // must be reported as errors, never as a panic, and listing must not fail when it
        // starts.
        match HidBus::open() {
            Ok(mut bus) => {
                let devices = bus.list().expect("listing after a successful start");
                for device in devices {
                    assert!(!device.path.is_empty());
                }
            }
            Err(err) => assert!(err.to_string().contains("HID devices cannot be used")),
        }
    }

    #[test]
    fn stable_keys_name_the_id_and_path() {
        let info = HidDeviceInfo {
            vendor_id: 0x0922,
            product_id: 0x8003,
            path: "/dev/hidraw0".into(),
            serial_number: None,
            usage_page: POS_USAGE_PAGE,
        };
        assert_eq!(info.stable_key(), "0922:8003@/dev/hidraw0");
    }
}
