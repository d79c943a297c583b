//! The process's log output: standard error and, for the service, size-capped files in the
//! data directory, behind one filter that can be changed while DeviceHub runs (the cloud sets
//! `logLevel` through the shadow).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::storage::RotatingLog;

/// The handle that swaps the filter of the installed subscriber.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Why the log filter could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("{0:?} is not a log filter (error, warn, info, debug, trace, or per module)")]
    BadFilter(String),
    #[error("logging was not set up by DeviceHub in this process")]
    NotInstalled,
    #[error("the log filter could not be replaced: {0}")]
    Reload(String),
}

/// Installs the subscriber: `filter` (an `EnvFilter` directive; `warn` when it does not
/// parse), standard error, and `file` when given. Does nothing when a subscriber is already
/// installed (tests that call the command line in-process).
pub fn init(filter: &str, file: Option<RotatingLog>) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn"));
    let (filter, handle) = reload::Layer::new(filter);
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let file = file.map(|writer| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(writer)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .try_init();
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the log filter of the running process.
pub fn set_filter(filter: &str) -> Result<(), LoggingError> {
    let parsed = EnvFilter::try_new(filter).map_err(|_| LoggingError::BadFilter(filter.into()))?;
    FILTER
        .get()
        .ok_or(LoggingError::NotInstalled)?
        .reload(parsed)
        .map_err(|e| LoggingError::Reload(e.to_string()))
}
