//! What plugin authors write against: plain Rust traits returning `Result`, and guards that
//! adapt them to the FFI-safe device interfaces.
//!
//! A panic must never cross the boundary: abi_stable turns a panic escaping an FFI call into an
//! abort of the whole host process, which would take every other device down with it. Every
//! call through a guard runs inside [`guard`], which turns a panic into a
//! [`ErrorKind::Panic`](crate::ErrorKind::Panic) error instead.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::{ROption, RResult, RVec};

use crate::{
    device::{
        GrayImage, PrintJob, PrintReport, PrinterDevice, PrinterStatus, ScaleDevice, ScaleReading,
        ScannedText, ScannerDevice,
    },
    error::{ErrorKind, PluginError},
};

/// Runs `body`, turning a panic into a [`ErrorKind::Panic`] error.
pub fn guard<T>(body: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result.into(),
        Err(payload) => {
            let what = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "unknown panic payload".to_string()
            };
            RResult::RErr(PluginError::new(
                ErrorKind::Panic,
                format!("the plugin panicked: {what}"),
            ))
        }
    }
}

/// A printer, as a plugin author implements it.
pub trait Printer: Send + 'static {
    /// Asks the printer for its status.
    fn status(&mut self) -> Result<PrinterStatus, PluginError>;
    /// The bytes `print` would send for `job`, without touching the device.
    fn encode(&mut self, job: &PrintJob) -> Result<Vec<u8>, PluginError>;
    /// Prints `job`.
    fn print(&mut self, job: &PrintJob) -> Result<PrintReport, PluginError>;
}

/// A scale, as a plugin author implements it.
pub trait Scale: Send + 'static {
    fn read(&mut self, timeout_ms: u32) -> Result<ScaleReading, PluginError>;
    fn zero(&mut self) -> Result<(), PluginError>;
}

/// A scanner, as a plugin author implements it.
pub trait Scanner: Send + 'static {
    fn poll(&mut self, timeout_ms: u32) -> Result<Option<ScannedText>, PluginError>;
    fn recognize(&mut self, image: &GrayImage) -> Result<ScannedText, PluginError>;
}

/// Adapts a [`Printer`] to [`PrinterDevice`] with every call guarded.
#[derive(Debug)]
pub struct PrinterGuard<P>(pub P);

impl<P: Printer> PrinterDevice for PrinterGuard<P> {
    fn status(&mut self) -> RResult<PrinterStatus, PluginError> {
        guard(|| self.0.status())
    }
    fn encode(&mut self, job: &PrintJob) -> RResult<RVec<u8>, PluginError> {
        guard(|| self.0.encode(job).map(RVec::from))
    }
    fn print(&mut self, job: &PrintJob) -> RResult<PrintReport, PluginError> {
        guard(|| self.0.print(job))
    }
}

/// Adapts a [`Scale`] to [`ScaleDevice`] with every call guarded.
#[derive(Debug)]
pub struct ScaleGuard<S>(pub S);

impl<S: Scale> ScaleDevice for ScaleGuard<S> {
    fn read(&mut self, timeout_ms: u32) -> RResult<ScaleReading, PluginError> {
        guard(|| self.0.read(timeout_ms))
    }
    fn zero(&mut self) -> RResult<(), PluginError> {
        guard(|| self.0.zero())
    }
}

/// Adapts a [`Scanner`] to [`ScannerDevice`] with every call guarded.
#[derive(Debug)]
pub struct ScannerGuard<S>(pub S);

impl<S: Scanner> ScannerDevice for ScannerGuard<S> {
    fn poll(&mut self, timeout_ms: u32) -> RResult<ROption<ScannedText>, PluginError> {
        guard(|| self.0.poll(timeout_ms).map(ROption::from))
    }
    fn recognize(&mut self, image: &GrayImage) -> RResult<ScannedText, PluginError> {
        guard(|| self.0.recognize(image))
    }
}
