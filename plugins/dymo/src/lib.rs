//! DeviceHub driver for DYMO LabelWriter printers.
//!
//! # Layout
//! - [`raster`]: the 450 series raster protocol (450, 450 Turbo, 4XL): reset, line commands,
//!   `SYN`/`ETB` dot lines.
//! - [`lw550`]: the 550 series protocol (550, 550 Turbo, 5XL): framed jobs with uncompressed
//!   labels.
//! - [`status`]: the printers' answers: the 450's status byte, the 550's 32-byte status and its
//!   64-byte record of the loaded labels.
//! - [`driver`]: the manifest (USB IDs, profiles) and the printer that uses the modules above
//!   over the host's transport.
//!
//! The first three modules are pure: they build and read bytes and perform no I/O.

pub mod driver;
pub mod lw550;
pub mod raster;
pub mod status;

devicehub_plugin_api::export_plugin! {
    manifest: driver::manifest,
    printer: driver::open,
}
