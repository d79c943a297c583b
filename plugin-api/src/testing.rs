//! Test support: a scripted transport, so that a plugin's own tests run the plugin in-process
//! against device answers written out in the test.
//!
//! ```text
//! let (transport, script) = ScriptedTransport::new("test printer");
//! script.reply_when(b"~HS", HEALTHY_STATUS);
//! let mut printer = open_printer(&request, transport.into_box())?;
//! printer.print(&job)?;
//! assert!(script.written().starts_with(b"^XA"));
//! ```
//!
//! The plugin author's kit adds, for a plugin's own tests:
//! - [`check_manifest`] (and [`manifest_problems`]): the manifest conformance check.
//! - [`render_sample_label`], [`page_from_rows`], [`raster_job`], [`open_request`]: inputs.
//! - [`exercise_printer`]: open, encode, status, print, status over a scripted transport,
//!   returning what was written at each step.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RSlice, RVec},
};

use crate::transport::{
    Transport, TransportBox, TransportError, TransportErrorKind, TransportInfo, TransportKind,
};

mod manifest_check;
mod printer_run;

pub use manifest_check::{check_manifest, manifest_problems, ManifestProblem};
pub use printer_run::{
    exercise_printer, open_request, page_from_rows, raster_job, render_sample_label, PrinterRun,
};

#[derive(Debug, Default)]
struct Script {
    /// Everything the plugin wrote, in order.
    written: Vec<u8>,
    /// Where the search for the next trigger starts in `written`, so that one write answers
    /// each trigger once.
    scanned: usize,
    /// (trigger, reply): each time the written stream contains `trigger`, `reply` becomes
    /// readable.
    triggers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes waiting to be read.
    readable: VecDeque<u8>,
    reports_in: VecDeque<Vec<u8>>,
    reports_out: Vec<Vec<u8>>,
    /// When set, every call fails as if the device had been unplugged.
    disconnected: bool,
    ieee1284_id: Option<String>,
}

/// A transport whose answers are scripted by the test.
#[derive(Debug, Clone)]
pub struct ScriptedTransport {
    description: String,
    shared: Arc<(Mutex<Script>, Condvar)>,
}

/// The test's handle on a [`ScriptedTransport`]: scripts answers and inspects what was written.
#[derive(Debug, Clone)]
pub struct ScriptHandle {
    shared: Arc<(Mutex<Script>, Condvar)>,
}

impl ScriptedTransport {
    /// A transport named `description`, and the handle that scripts it.
    pub fn new(description: &str) -> (ScriptedTransport, ScriptHandle) {
        let shared = Arc::new((Mutex::new(Script::default()), Condvar::new()));
        (
            ScriptedTransport {
                description: description.to_string(),
                shared: shared.clone(),
            },
            ScriptHandle { shared },
        )
    }

    /// Boxes the transport for a plugin's `open_*` function.
    pub fn into_box(self) -> TransportBox {
        TransportBox::from_value(self, TD_Opaque)
    }

    fn lock(&self) -> MutexGuard<'_, Script> {
        lock(&self.shared.0)
    }
}

fn lock(mutex: &Mutex<Script>) -> MutexGuard<'_, Script> {
    // A test that panicked while holding the lock has already failed; keep going so that the
    // original panic is what the test reports.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn disconnected() -> TransportError {
    TransportError::new(TransportErrorKind::Disconnected, "device disconnected")
}

impl ScriptHandle {
    /// Each time the plugin's written bytes contain `trigger`, `reply` becomes readable.
    pub fn reply_when(&self, trigger: &[u8], reply: &[u8]) {
        lock(&self.shared.0)
            .triggers
            .push((trigger.to_vec(), reply.to_vec()));
    }

    /// Makes `bytes` readable now.
    pub fn push_read(&self, bytes: &[u8]) {
        lock(&self.shared.0).readable.extend(bytes);
        self.shared.1.notify_all();
    }

    /// Queues one HID input report.
    pub fn push_report(&self, report: &[u8]) {
        lock(&self.shared.0).reports_in.push_back(report.to_vec());
        self.shared.1.notify_all();
    }

    /// Everything the plugin has written so far.
    pub fn written(&self) -> Vec<u8> {
        lock(&self.shared.0).written.clone()
    }

    /// Every HID output report the plugin has sent.
    pub fn reports_written(&self) -> Vec<Vec<u8>> {
        lock(&self.shared.0).reports_out.clone()
    }

    /// Forgets what was written so far.
    pub fn clear_written(&self) {
        let mut script = lock(&self.shared.0);
        script.written.clear();
        script.scanned = 0;
    }

    /// From now on every call fails as if the device were unplugged.
    pub fn disconnect(&self) {
        lock(&self.shared.0).disconnected = true;
        self.shared.1.notify_all();
    }

    /// Sets the IEEE-1284 device ID the transport reports.
    pub fn set_ieee1284_id(&self, id: &str) {
        lock(&self.shared.0).ieee1284_id = Some(id.to_string());
    }
}

impl Script {
    /// Answers every trigger found in the bytes written since the last scan.
    fn fire_triggers(&mut self) {
        loop {
            let unscanned = &self.written[self.scanned..];
            let earliest = self
                .triggers
                .iter()
                .filter_map(|(trigger, reply)| {
                    find(unscanned, trigger).map(|at| (at + trigger.len(), reply.clone()))
                })
                .min_by_key(|(end, _)| *end);
            match earliest {
                Some((end, reply)) => {
                    self.scanned += end;
                    self.readable.extend(reply);
                }
                None => break,
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Transport for ScriptedTransport {
    fn info(&self) -> TransportInfo {
        TransportInfo {
            kind: TransportKind::Capture,
            description: format!("scripted {}", self.description).into(),
            ieee1284_id: self.lock().ieee1284_id.clone().map(Into::into).into(),
        }
    }

    fn write(&mut self, data: RSlice<'_, u8>) -> RResult<(), TransportError> {
        let mut script = self.lock();
        if script.disconnected {
            return RResult::RErr(disconnected());
        }
        script.written.extend_from_slice(&data);
        script.fire_triggers();
        drop(script);
        self.shared.1.notify_all();
        RResult::ROk(())
    }

    fn read(&mut self, max_len: u32, timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
        let mut script = self.lock();
        loop {
            if script.disconnected {
                return RResult::RErr(disconnected());
            }
            if !script.readable.is_empty() {
                let n = script.readable.len().min(max_len as usize);
                let bytes: Vec<u8> = script.readable.drain(..n).collect();
                return RResult::ROk(bytes.into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return RResult::RErr(TransportError::new(
                    TransportErrorKind::Timeout,
                    "the scripted device sent nothing",
                ));
            }
            script = self
                .shared
                .1
                .wait_timeout(script, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }

    fn write_report(&mut self, report: RSlice<'_, u8>) -> RResult<(), TransportError> {
        let mut script = self.lock();
        if script.disconnected {
            return RResult::RErr(disconnected());
        }
        script.reports_out.push(report.to_vec());
        RResult::ROk(())
    }

    fn read_report(&mut self, timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
        let mut script = self.lock();
        loop {
            if script.disconnected {
                return RResult::RErr(disconnected());
            }
            if let Some(report) = script.reports_in.pop_front() {
                return RResult::ROk(report.into());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return RResult::RErr(TransportError::new(
                    TransportErrorKind::Timeout,
                    "the scripted device sent no report",
                ));
            }
            script = self
                .shared
                .1
                .wait_timeout(script, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_answers_once_per_occurrence() {
        let (transport, script) = ScriptedTransport::new("t");
        script.reply_when(b"~HS", b"OK");
        let mut t = transport.into_box();
        t.write(RSlice::from_slice(b"~HS~HS")).unwrap();
        assert_eq!(t.read(10, 10).unwrap().as_slice(), b"OKOK");
        assert_eq!(t.read(10, 1).unwrap_err().kind, TransportErrorKind::Timeout);
    }

    #[test]
    fn trigger_split_across_writes_still_fires() {
        let (transport, script) = ScriptedTransport::new("t");
        script.reply_when(b"~HS", b"OK");
        let mut t = transport.into_box();
        t.write(RSlice::from_slice(b"^XZ~H")).unwrap();
        t.write(RSlice::from_slice(b"S")).unwrap();
        assert_eq!(t.read(10, 10).unwrap().as_slice(), b"OK");
    }

    #[test]
    fn disconnect_fails_every_call() {
        let (transport, script) = ScriptedTransport::new("t");
        let mut t = transport.into_box();
        script.disconnect();
        assert_eq!(
            t.write(RSlice::from_slice(b"x")).unwrap_err().kind,
            TransportErrorKind::Disconnected
        );
        assert_eq!(
            t.read(1, 1).unwrap_err().kind,
            TransportErrorKind::Disconnected
        );
    }

    #[test]
    fn read_until_gathers_split_answers() {
        let (transport, script) = ScriptedTransport::new("t");
        let mut t = transport.into_box();
        script.push_read(b"ab");
        script.push_read(b"c\n");
        let got = t.read_until(100, |b| b.ends_with(b"\n")).unwrap();
        assert_eq!(got, b"abc\n");
    }
}
