//! USB devices through libusb (`rusb`): discovery, hot-plug, and printer-class bulk transport.
//!
//! This layer is kept thin on purpose: it finds devices, reads their IDs and IEEE-1284 device
//! ID, and moves bytes over the bulk endpoints. Everything above it is tested against simulators.
//! On a machine without USB (no libusb context can be created) the host says so once and runs
//! without USB devices.

use std::time::Duration;

use devicehub_plugin_api::{
    abi_stable::std_types::{RResult, RSlice, RVec},
    Transport, TransportError, TransportErrorKind, TransportInfo, TransportKind,
};
use rusb::UsbContext;

/// USB interface class of printers.
pub const PRINTER_CLASS: u8 = 0x07;
/// USB interface class of HID devices (scales are opened through a HID API, not here).
pub const HID_CLASS: u8 = 0x03;
/// How long one bulk write may take before the printer is considered stalled.
const BULK_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A USB device found on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDeviceInfo {
    pub vendor_id: u16,
    pub product_id: u16,
    pub bus: u8,
    pub address: u8,
    /// The port path, e.g. "1-4.2": stable while the device stays in the same socket.
    pub port_path: String,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    pub serial_number: Option<String>,
    /// The interface classes the device offers.
    pub classes: Vec<u8>,
}

impl UsbDeviceInfo {
    /// A stable identifier: the serial number when the device has one, else the port path.
    pub fn stable_key(&self) -> String {
        match &self.serial_number {
            Some(serial) if !serial.is_empty() => {
                format!("{:04x}:{:04x}:{serial}", self.vendor_id, self.product_id)
            }
            _ => format!(
                "{:04x}:{:04x}@{}",
                self.vendor_id, self.product_id, self.port_path
            ),
        }
    }
}

/// Why USB cannot be used on this machine.
#[derive(Debug, thiserror::Error)]
#[error("USB is not available on this machine: {0}")]
pub struct UsbUnavailable(pub String);

/// The libusb context, when USB is available.
#[derive(Debug, Clone)]
pub struct UsbBus {
    context: rusb::Context,
}

impl UsbBus {
    /// Opens libusb; fails on machines (or sandboxes) without USB.
    pub fn open() -> Result<Self, UsbUnavailable> {
        rusb::Context::new()
            .map(|context| UsbBus { context })
            .map_err(|e| UsbUnavailable(e.to_string()))
    }

    /// Whether the platform reports plug and unplug events (otherwise the host polls).
    pub fn has_hotplug() -> bool {
        rusb::has_hotplug()
    }

    /// Every device on the bus, with the strings that could be read.
    pub fn list(&self) -> Vec<UsbDeviceInfo> {
        let Ok(devices) = self.context.devices() else {
            return Vec::new();
        };
        devices.iter().filter_map(|d| describe(&d)).collect()
    }

    /// Opens the printer-class interface of the device described by `info`.
    pub fn open_printer(
        &self,
        info: &UsbDeviceInfo,
    ) -> Result<UsbPrinterTransport, TransportError> {
        let devices = self.context.devices().map_err(usb_error)?;
        let device = devices
            .iter()
            .find(|d| d.bus_number() == info.bus && d.address() == info.address)
            .ok_or_else(|| {
                TransportError::new(
                    TransportErrorKind::Disconnected,
                    format!("USB device {} is no longer attached", info.port_path),
                )
            })?;
        UsbPrinterTransport::open(device, info.clone())
    }
}

fn describe(device: &rusb::Device<rusb::Context>) -> Option<UsbDeviceInfo> {
    let desc = device.device_descriptor().ok()?;
    let ports = device
        .port_numbers()
        .map(|p| p.iter().map(u8::to_string).collect::<Vec<_>>().join("."))
        .unwrap_or_default();
    let mut classes = Vec::new();
    if let Ok(config) = device.active_config_descriptor() {
        for interface in config.interfaces() {
            for alt in interface.descriptors() {
                if !classes.contains(&alt.class_code()) {
                    classes.push(alt.class_code());
                }
            }
        }
    }
    // Strings need the device opened; a device we may not open still gets listed by ID.
    let (manufacturer, product, serial_number) = match device.open() {
        Ok(handle) => (
            handle.read_manufacturer_string_ascii(&desc).ok(),
            handle.read_product_string_ascii(&desc).ok(),
            handle.read_serial_number_string_ascii(&desc).ok(),
        ),
        Err(_) => (None, None, None),
    };
    Some(UsbDeviceInfo {
        vendor_id: desc.vendor_id(),
        product_id: desc.product_id(),
        bus: device.bus_number(),
        address: device.address(),
        port_path: format!("{}-{}", device.bus_number(), ports),
        manufacturer,
        product,
        serial_number,
        classes,
    })
}

fn usb_error(err: rusb::Error) -> TransportError {
    let kind = match err {
        rusb::Error::Timeout => TransportErrorKind::Timeout,
        rusb::Error::NoDevice | rusb::Error::NotFound | rusb::Error::Pipe => {
            TransportErrorKind::Disconnected
        }
        _ => TransportErrorKind::Io,
    };
    TransportError::new(kind, format!("USB: {err}"))
}

/// The bulk endpoints of a USB printer-class interface.
#[derive(Debug)]
pub struct UsbPrinterTransport {
    handle: rusb::DeviceHandle<rusb::Context>,
    info: UsbDeviceInfo,
    interface: u8,
    out_endpoint: u8,
    in_endpoint: Option<u8>,
    ieee1284_id: Option<String>,
}

impl UsbPrinterTransport {
    fn open(
        device: rusb::Device<rusb::Context>,
        info: UsbDeviceInfo,
    ) -> Result<Self, TransportError> {
        let config = device.active_config_descriptor().map_err(usb_error)?;
        let mut found = None;
        for interface in config.interfaces() {
            for alt in interface.descriptors() {
                if alt.class_code() != PRINTER_CLASS {
                    continue;
                }
                let mut out_ep = None;
                let mut in_ep = None;
                for ep in alt.endpoint_descriptors() {
                    if ep.transfer_type() != rusb::TransferType::Bulk {
                        continue;
                    }
                    match ep.direction() {
                        rusb::Direction::Out => out_ep = out_ep.or(Some(ep.address())),
                        rusb::Direction::In => in_ep = in_ep.or(Some(ep.address())),
                    }
                }
                if let Some(out_ep) = out_ep {
                    found = Some((alt.interface_number(), alt.setting_number(), out_ep, in_ep));
                    break;
                }
            }
            if found.is_some() {
                break;
            }
        }
        let (interface, alt_setting, out_endpoint, in_endpoint) = found.ok_or_else(|| {
            TransportError::new(
                TransportErrorKind::Unsupported,
                format!(
                    "USB device {:04X}:{:04X} has no printer interface with a bulk OUT endpoint",
                    info.vendor_id, info.product_id
                ),
            )
        })?;
        let handle = device.open().map_err(usb_error)?;
        // The kernel's usblp driver may own the interface; detach it while we hold it.
        let _ = handle.set_auto_detach_kernel_driver(true);
        handle.claim_interface(interface).map_err(usb_error)?;
        if alt_setting != 0 {
            handle
                .set_alternate_setting(interface, alt_setting)
                .map_err(usb_error)?;
        }
        let ieee1284_id = read_ieee1284_id(&handle, config.number(), interface, alt_setting);
        Ok(UsbPrinterTransport {
            handle,
            info,
            interface,
            out_endpoint,
            in_endpoint,
            ieee1284_id,
        })
    }

    /// The printer's IEEE-1284 device ID, read when the interface was opened.
    pub fn ieee1284_id(&self) -> Option<&str> {
        self.ieee1284_id.as_deref()
    }
}

impl Drop for UsbPrinterTransport {
    fn drop(&mut self) {
        let _ = self.handle.release_interface(self.interface);
    }
}

/// The printer class GET_DEVICE_ID request: a big-endian length then the ID string.
fn read_ieee1284_id(
    handle: &rusb::DeviceHandle<rusb::Context>,
    config: u8,
    interface: u8,
    alt_setting: u8,
) -> Option<String> {
    let mut buf = [0u8; 1024];
    let request_type = rusb::request_type(
        rusb::Direction::In,
        rusb::RequestType::Class,
        rusb::Recipient::Interface,
    );
    let index = (u16::from(interface) << 8) | u16::from(alt_setting);
    let n = handle
        .read_control(
            request_type,
            0,
            u16::from(config.saturating_sub(1)),
            index,
            &mut buf,
            Duration::from_secs(2),
        )
        .ok()?;
    if n < 2 {
        return None;
    }
    let len = (usize::from(buf[0]) << 8 | usize::from(buf[1])).min(n);
    String::from_utf8(buf[2..len].to_vec()).ok()
}

impl Transport for UsbPrinterTransport {
    fn info(&self) -> TransportInfo {
        TransportInfo {
            kind: TransportKind::Usb,
            description: format!(
                "usb {} ({:04X}:{:04X})",
                self.info.port_path, self.info.vendor_id, self.info.product_id
            )
            .into(),
            ieee1284_id: self.ieee1284_id.clone().map(Into::into).into(),
        }
    }

    fn write(&mut self, data: RSlice<'_, u8>) -> RResult<(), TransportError> {
        let mut sent = 0;
        while sent < data.len() {
            match self
                .handle
                .write_bulk(self.out_endpoint, &data[sent..], BULK_WRITE_TIMEOUT)
            {
                Ok(n) => sent += n,
                Err(e) => return RResult::RErr(usb_error(e)),
            }
        }
        RResult::ROk(())
    }

    fn read(&mut self, max_len: u32, timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        let Some(endpoint) = self.in_endpoint else {
            return RResult::RErr(TransportError::new(
                TransportErrorKind::Unsupported,
                "this USB printer has no bulk IN endpoint: it cannot report status",
            ));
        };
        let mut buf = vec![0u8; max_len.clamp(1, 65536) as usize];
        match self.handle.read_bulk(
            endpoint,
            &mut buf,
            Duration::from_millis(timeout_ms.max(1).into()),
        ) {
            Ok(n) => {
                buf.truncate(n);
                RResult::ROk(buf.into())
            }
            Err(e) => RResult::RErr(usb_error(e)),
        }
    }

    fn write_report(&mut self, _report: RSlice<'_, u8>) -> RResult<(), TransportError> {
        RResult::RErr(TransportError::new(
            TransportErrorKind::Unsupported,
            "HID reports are not available on a USB printer interface",
        ))
    }

    fn read_report(&mut self, _timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        RResult::RErr(TransportError::new(
            TransportErrorKind::Unsupported,
            "HID reports are not available on a USB printer interface",
        ))
    }
}
