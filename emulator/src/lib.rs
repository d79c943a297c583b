//! `devicehub-emulator`: a local cloud that speaks AWS IoT Core's protocols, and simulated
//! shipping-desk devices, so that DeviceHub runs and is tested on one machine with no cloud
//! account and no hardware.
//!
//! # Layout
//! - [`cloud`]: the AWS IoT Core role (broker, device shadow, jobs, fleet provisioning) and the
//!   shipping application's HTTP API.
//! - [`printers`]: printer simulators that listen on TCP like network printers and decode what
//!   they receive back into bitmaps.
//! - [`scales`]: a serial scale on a pseudo-terminal (MT-SICS, NCI) with a control API, and a
//!   model of a USB HID point-of-sale scale.
//! - [`scanners`]: a text scanner on a pseudo-terminal that sends address blocks on request.
//! - [`pty`]: what the serial simulators share: the pseudo-terminal and its control API.
//!
//! The emulator shares no code with DeviceHub itself: the two meet only on the wire.

pub mod cloud;
mod command;
pub mod printers;
#[cfg(unix)]
pub mod pty;
pub mod scales;
pub mod scanners;
pub mod stop;
