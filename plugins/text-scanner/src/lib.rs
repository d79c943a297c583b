//! DeviceHub driver for scanners that deliver text: pen scanners and OCR desk applications that
//! send lines over a serial port, and keyboard-wedge scanners that type through HID keyboard
//! reports.
//!
//! [`ascii`] normalises text to printable ASCII, [`block`] assembles lines into address
//! blocks, [`keyboard`] turns HID keyboard reports into characters; none of them performs I/O.
//! [`driver`] holds the manifest and the scanner that reads the host's transport.

pub mod ascii;
pub mod block;
pub mod driver;
pub mod keyboard;

#[cfg(test)]
mod tests;

devicehub_plugin_api::export_plugin! {
    manifest: driver::manifest,
    scanner: driver::open,
}
