//! DeviceHub driver for USB HID point-of-sale scales (HID usage page 0x8D: DYMO M10/M25,
//! Stamps.com, Mettler Toledo, Fairbanks, Pitney Bowes and others).
//!
//! [`report`] decodes the scale's input report into an exact reading and performs no I/O;
//! [`driver`] holds the manifest and the scale that talks to the host's HID transport.

pub mod driver;
pub mod report;

#[cfg(test)]
mod tests;

devicehub_plugin_api::export_plugin! {
    manifest: driver::manifest,
    scale: driver::open,
}
