//! Transports: the host side of the byte pipe each plugin talks to its device through.
//!
//! The host opens every device connection (TCP sockets, serial ports, USB endpoints) and hands
//! the plugin a [`TransportBox`]; plugins never touch the operating system's device APIs.
//! Every call here blocks, so transports are only ever used from a device's own thread.

pub mod capture;
pub mod hid;
pub mod serial;
pub mod tcp;
pub mod usb;

use devicehub_plugin_api::{abi_stable::sabi_trait::TD_Opaque, Transport, TransportBox};

/// Boxes a host transport for a plugin.
pub fn boxed(transport: impl Transport + 'static) -> TransportBox {
    TransportBox::from_value(transport, TD_Opaque)
}
