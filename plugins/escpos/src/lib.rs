//! DeviceHub driver for printers that take ESC/POS raster graphics: Epson's TM-L100 liner-free
//! label printer, the TM-T20 and the many 58 and 80 mm thermal printers that speak Epson's
//! command set.
//!
//! It grew from `plugins/template` as the worked example of docs/plugin-guide.md: a second
//! profile, IEEE-1284 rules, cut and band settings, and the full real-time status.
//!
//! # Layout
//! - [`encode`]: pure: one-bit pages to `GS v 0` raster bands with cuts between labels.
//! - [`status`]: pure: the four `DLE EOT n` status bytes and what they mean for a job.
//! - [`driver`]: the manifest with the USB ID table and IEEE-1284 rules, settings, and the
//!   printer that talks over the host's transport.

pub mod driver;
pub mod encode;
pub mod status;

devicehub_plugin_api::export_plugin! {
    manifest: driver::manifest,
    printer: driver::open,
}
