//! DeviceHub driver for TSPL/TSPL2 label printers: TSC desktop printers, Rollo and the many
//! 4 x 6 in shipping label printers that speak TSC's language.
//!
//! # Layout
//! - [`encode`]: pure: one-bit pages to TSPL command streams (`SIZE`, `GAP`/`BLINE`,
//!   `DENSITY`, `SPEED`, `CLS`, `BITMAP`, `PRINT`).
//! - [`status`]: pure: the `<ESC>!?` status byte and what it means for a job.
//! - [`driver`]: the manifest with the USB ID table and IEEE-1284 rules, settings, the label
//!   size check, and the printer that talks over the host's transport.

pub mod driver;
pub mod encode;
pub mod status;

devicehub_plugin_api::export_plugin! {
    manifest: driver::manifest,
    printer: driver::open,
}
