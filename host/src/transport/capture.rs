//! A transport with no device behind it: it keeps what is written, for encoding a job into a
//! file, and answers every read with a timeout.

use std::sync::{Arc, Mutex};

use devicehub_plugin_api::{
    abi_stable::std_types::{RResult, RSlice, RVec},
    Transport, TransportError, TransportErrorKind, TransportInfo, TransportKind,
};

/// Keeps written bytes in a shared buffer.
#[derive(Debug, Clone, Default)]
pub struct CaptureTransport {
    written: Arc<Mutex<Vec<u8>>>,
}

impl CaptureTransport {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything written so far.
    pub fn written(&self) -> Vec<u8> {
        self.written
            .lock()
            .map(|w| w.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

fn no_device() -> TransportError {
    TransportError::new(
        TransportErrorKind::Timeout,
        "no device is attached (the job is being written to a file)",
    )
}

impl Transport for CaptureTransport {
    fn info(&self) -> TransportInfo {
        TransportInfo {
            kind: TransportKind::Capture,
            description: "capture to file".into(),
            ieee1284_id: None.into(),
        }
    }

    fn write(&mut self, data: RSlice<'_, u8>) -> RResult<(), TransportError> {
        match self.written.lock() {
            Ok(mut w) => w.extend_from_slice(&data),
            Err(poisoned) => poisoned.into_inner().extend_from_slice(&data),
        }
        RResult::ROk(())
    }

    fn read(&mut self, _max_len: u32, _timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        RResult::RErr(no_device())
    }

    fn write_report(&mut self, _report: RSlice<'_, u8>) -> RResult<(), TransportError> {
        RResult::RErr(no_device())
    }

    fn read_report(&mut self, _timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        RResult::RErr(no_device())
    }
}
