//! DeviceHub driver that reads an address block from an image with Tesseract OCR.
//!
//! The device is virtual: a row in the device table (`address = "none://"`, plugin `ocr`)
//! that local tools hand images to through [`ScannerDevice::recognize`]. [`text`] turns what
//! Tesseract read into printable ASCII lines; [`driver`] holds the manifest and the engine.
//!
//! The plugin links the system's libtesseract and libleptonica (Debian:
//! `libtesseract-dev libleptonica-dev tesseract-ocr-eng`); only this plugin does, so the host
//! runs without them when no OCR device is used.
//!
//! [`ScannerDevice::recognize`]: devicehub_plugin_api::ScannerDevice::recognize

pub mod driver;
pub mod text;

devicehub_plugin_api::export_plugin! {
    manifest: driver::manifest,
    scanner: driver::open,
}
