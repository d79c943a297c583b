//! DeviceHub driver for Brother QL label printers (QL-700, QL-710W/720NW, QL-800/810W/820NWB,
//! QL-1100/1110NWB/1115NWB), which all speak Brother's raster command protocol.
//!
//! # Layout
//! - [`media`]: the DK rolls the printers take (continuous tape and die-cut labels), their
//!   printable areas in dots, and how a job is checked against the loaded roll.
//! - [`packbits`]: the TIFF PackBits row compression the raster protocol uses.
//! - [`raster`]: from one-bit pages to the raster command stream (pure, no I/O).
//! - [`status`]: the printer's 32-byte status reply, decoded.
//! - [`driver`]: the manifest with the USB ID table and profiles, and the printer itself.

pub mod driver;
pub mod media;
pub mod packbits;
pub mod raster;
pub mod status;

devicehub_plugin_api::export_plugin! {
    manifest: driver::manifest,
    printer: driver::open,
}
