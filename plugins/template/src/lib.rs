//! The template DeviceHub printer plugin: the smallest complete driver, meant to be copied.
//!
//! It drives receipt-width thermal printers that take ESC/POS raster graphics, with the least
//! a driver needs: a manifest with one USB model and one profile, host-rendered pages turned
//! into the printer's language, the paper sensor read as a status, and unit tests written
//! with the plugin API's test kit. `plugins/escpos` is what it grows into; the steps are in
//! docs/plugin-guide.md.
//!
//! # Layout
//! - [`encode`]: pure: one-bit pages to printer bytes. No I/O, so it is tested byte for byte.
//! - [`status`]: pure: the printer's status answer and what it means for a job.
//! - [`driver`]: the manifest (USB table, profile) and the printer that talks over the host's
//!   transport.

pub mod driver;
pub mod encode;
pub mod status;

// The one exported root module: the host finds it by name in the built library. Every entry
// point it generates catches panics, so a bug in the driver fails a call, not the host.
devicehub_plugin_api::export_plugin! {
    manifest: driver::manifest,
    printer: driver::open,
}
