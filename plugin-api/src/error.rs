//! The error every plugin call returns across the boundary.

use std::fmt;

use abi_stable::{
    std_types::{ROption, RString},
    StableAbi,
};

use crate::device::PrinterState;

/// What kind of failure a plugin reports; the host maps it to a job's outcome.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The job cannot be printed as asked (bad input for this printer, too many copies...).
    InvalidJob,
    /// The job does not fit the loaded media (width, length, continuous versus die-cut).
    MediaMismatch,
    /// The device reports a state in which it cannot work (paper out, head open, paused...).
    NotReady,
    /// The transport failed: the device went away or an I/O error occurred.
    Transport,
    /// The device did not answer in time.
    Timeout,
    /// The device answered something the plugin could not understand.
    Protocol,
    /// The plugin does not offer this operation (for example a printer plugin asked for a scale).
    Unsupported,
    /// The plugin panicked; the guard at the boundary caught it.
    Panic,
    /// Any other failure inside the plugin.
    Internal,
}

impl ErrorKind {
    /// A short lower-case name for logs and job status details.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidJob => "invalid job",
            ErrorKind::MediaMismatch => "media mismatch",
            ErrorKind::NotReady => "device not ready",
            ErrorKind::Transport => "transport error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Panic => "plugin panicked",
            ErrorKind::Internal => "internal plugin error",
        }
    }
}

/// An error reported by a plugin, with a message a user can act on.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// The category, which decides how the host reacts.
    pub kind: ErrorKind,
    /// A complete sentence for the user, e.g. "printer reports paper out".
    pub message: RString,
    /// For [`ErrorKind::NotReady`]: the printer state that stopped the job.
    pub printer_state: ROption<PrinterState>,
}

impl PluginError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: RString::from(message.into()),
            printer_state: ROption::RNone,
        }
    }

    /// A printer that cannot print because of `state`.
    pub fn not_ready(state: PrinterState, message: impl Into<String>) -> Self {
        PluginError {
            kind: ErrorKind::NotReady,
            message: RString::from(message.into()),
            printer_state: ROption::RSome(state),
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<crate::transport::TransportError> for PluginError {
    fn from(err: crate::transport::TransportError) -> Self {
        let kind = match err.kind {
            crate::transport::TransportErrorKind::Timeout => ErrorKind::Timeout,
            crate::transport::TransportErrorKind::Unsupported => ErrorKind::Unsupported,
            _ => ErrorKind::Transport,
        };
        PluginError::new(kind, err.message.to_string())
    }
}
