//! DeviceHub driver for Zebra label printers.
//!
//! The modules below are pure: they turn a one-bit label bitmap into the bytes of a ZPL II or EPL2
//! print job, and parse the status answers those printers send back. They perform no I/O, so the
//! plugin's transport code can be changed without touching them and they can be tested byte by byte.

pub mod bitmap;
pub mod driver;
pub mod epl;
pub mod status;
pub mod zpl;

devicehub_plugin_api::export_plugin! {
    manifest: driver::manifest,
    printer: driver::open,
}
