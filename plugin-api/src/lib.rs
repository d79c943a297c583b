//! The stable ABI between DeviceHub and its device driver plugins.
//!
//! Every printer family, scale model and scanner is driven by a plugin: a separately compiled
//! shared library that DeviceHub loads at start-up. This crate is the only thing the two sides
//! share, so everything in it is FFI-safe (`#[derive(StableAbi)]`, `#[repr(C)]`, `RString`,
//! `RVec`, `RResult`, `ROption`, `#[sabi_trait]` traits): no std collections, no tokio, no
//! futures cross the boundary.
//!
//! # Layout
//! - [`manifest`]: what a plugin declares about itself: name, versions, device kind, the static
//!   table of USB IDs it drives, and each model's capabilities.
//! - [`device`]: the device interfaces a plugin implements (printer, scale, scanner) and the
//!   values that cross them (print jobs, statuses, readings).
//! - [`transport`]: the byte pipe the host opens and hands to the plugin. Plugins never open
//!   devices, files or sockets themselves.
//! - [`error`]: the error type every call returns.
//! - [`module`]: the root module a plugin exports, and [`export_plugin!`], which builds it
//!   from plain Rust functions with panics caught at the boundary.
//! - [`author`]: plain-Rust traits for plugin authors and the guard that turns a panic into an
//!   error instead of letting it end the host process.
//! - `testing` (feature `test-support`): a scripted transport so a plugin's own tests run it
//!   in-process.
//!
//! # Versioning
//! [`API_VERSION`] is this crate's semver. abi_stable checks at load time that the plugin was
//! built against a compatible version and that every type's layout matches; the host then
//! checks the plugin's declared [`API_VERSION`] and [`PluginManifest::required_features`]
//! against its own [`API_FEATURES`].

// `#[sabi_trait]` and `#[derive(StableAbi)]` expand to impls inside generated consts, and the
// prefix-type reference keeps abi_stable's `_Ref` naming.
#![allow(non_local_definitions, non_camel_case_types)]

pub mod author;
pub mod device;
pub mod error;
pub mod manifest;
pub mod module;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod transport;

pub use abi_stable;

pub use author::{guard, Printer, PrinterGuard, Scale, ScaleGuard, Scanner, ScannerGuard};
pub use device::*;
pub use error::{ErrorKind, PluginError};
pub use manifest::*;
pub use module::{PluginMod, PluginMod_Ref};
pub use transport::*;

/// The version of the plugin API a plugin is built against (this crate's version).
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Optional parts of the API this build of the host provides. A plugin lists the ones it needs
/// in [`PluginManifest::required_features`]; the host refuses a plugin that needs one it lacks.
pub const API_FEATURES: &[&str] = &[
    "printer.raster",
    "printer.raw",
    "printer.pdf",
    "scale",
    "scanner",
    "transport.stream",
    "transport.hid",
    "match.ieee1284",
];
