//! DeviceHub driver for serial scales: Mettler Toledo MT-SICS and the NCI general serial
//! protocol (NCI, Avery Weigh-Tronix, Brecknell), chosen by profile.
//!
//! [`exact`] turns printed decimals into exact micrograms, [`mtsics`] and [`nci`] decode each
//! protocol's answers; none of them performs I/O. [`driver`] holds the manifest and the scale
//! that talks to the host's serial transport.

pub mod driver;
pub mod exact;
pub mod mtsics;
pub mod nci;

#[cfg(test)]
mod tests;

devicehub_plugin_api::export_plugin! {
    manifest: driver::manifest,
    scale: driver::open,
}
