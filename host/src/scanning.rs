//! Scans: every attached scanner that delivers text (a text-scanner device) is polled on its
//! device thread while it is attached, and each address block it delivers is published to local
//! subscribers as [`LocalEvent::Scan`], from where the events task sends it to the cloud's
//! scanner topic.
//!
//! # Privacy
//! A scan is an address, personal data. It travels only in memory, to local subscribers and
//! the cloud; nothing here logs it or writes it to disk. The log says only "scan of N lines
//! from DEVICE". Plugin error messages are logged with the device, and the scanner plugins
//! never put scanned text in them.
//!
//! # Tasks
//! [`ScanPoller`] owns one task that looks at the device table every [`DEVICE_LOOK`] and owns
//! one polling task per scanner in a `JoinSet`. A poller ends when its device is detached
//! (and starts again if it comes back), or when the plugin says the device cannot be polled
//! ([`ErrorKind::Unsupported`]: the OCR device, which reads images sent to it instead); such a
//! device is not polled again while it stays attached.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use devicehub_plugin_api::{DeviceKind, ErrorKind, PluginError, ScannedText};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, LocalEvent, ScannedLines};
use crate::devices::{DeviceError, DeviceWorker, OpenedDevice};

/// How often the device table is looked at for scanners attached or detached.
pub const DEVICE_LOOK: Duration = Duration::from_millis(500);
/// How long one poll waits on the device. Other calls on the device (status, OCR) wait at
/// most this long behind a poll.
pub const POLL_MS: u32 = 200;
/// The pause after a failed poll, so that a broken port is not hammered.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The task that polls scanners; stopped by [`ScanPoller::stop`].
#[derive(Debug)]
pub struct ScanPoller {
    stop: CancellationToken,
    /// `None` once stopped.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ScanPoller {
    /// Starts polling the agent's scanners; must be called inside a tokio runtime.
    pub fn start(agent: Arc<Agent>) -> ScanPoller {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(agent, stop.clone()));
        ScanPoller {
            stop,
            task: Some(task),
        }
    }

    /// Stops every poller and waits for them.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::error!("the scanner task failed: {e}");
            }
        }
    }
}

impl Drop for ScanPoller {
    // When the service ends early on an error, the pollers still stop: they see the token
    // within one poll.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Why a poller ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Stopped,
    Detached,
    /// The device cannot be polled (OCR).
    Unpollable,
}

async fn run(agent: Arc<Agent>, stop: CancellationToken) {
    let devices = agent.devices().clone();
    let mut pollers: JoinSet<(String, Ended)> = JoinSet::new();
    // The workers being polled, by device ID, to notice a device replaced under the same ID.
    let mut polled: BTreeMap<String, Arc<DeviceWorker>> = BTreeMap::new();
    let mut unpollable: BTreeMap<String, Arc<DeviceWorker>> = BTreeMap::new();
    let mut look = tokio::time::interval(DEVICE_LOOK);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = look.tick() => {
                let scanners: BTreeSet<String> = devices
                    .list()
                    .into_iter()
                    .filter(|d| d.kind == DeviceKind::Scanner.as_str())
                    .map(|d| d.id)
                    .collect();
                unpollable.retain(|id, worker| {
                    devices.get(id).is_ok_and(|now| Arc::ptr_eq(&now, worker))
                });
                for id in scanners {
                    if polled.contains_key(&id) || unpollable.contains_key(&id) {
                        continue;
                    }
                    let Ok(worker) = devices.get(&id) else { continue };
                    polled.insert(id.clone(), worker.clone());
                    pollers.spawn(poll_device(worker, agent.clone(), stop.child_token()));
                }
            }
            Some(joined) = pollers.join_next() => match joined {
                Ok((id, ended)) => {
                    if let Some(worker) = polled.remove(&id) {
                        if ended == Ended::Unpollable {
                            unpollable.insert(id, worker);
                        }
                    }
                }
                Err(e) => tracing::error!("a scanner poller failed: {e}"),
            },
        }
    }
    while let Some(joined) = pollers.join_next().await {
        if let Err(e) = joined {
            tracing::error!("a scanner poller failed: {e}");
        }
    }
}

/// Polls one scanner until it is detached, cannot be polled, or `stop`.
async fn poll_device(
    worker: Arc<DeviceWorker>,
    agent: Arc<Agent>,
    stop: CancellationToken,
) -> (String, Ended) {
    let id = worker.spec().id.clone();
    tracing::debug!(device = %id, "polling scanner");
    loop {
        let polled = tokio::select! {
            _ = stop.cancelled() => return (id, Ended::Stopped),
            polled = worker.call_async(poll_task) => polled,
        };
        match polled {
            Ok(Ok(Some(text))) => publish(&agent, &id, text),
            Ok(Ok(None)) => {}
            Ok(Err(error)) if error.kind == ErrorKind::Unsupported => {
                tracing::debug!(device = %id, "scanner cannot be polled: {}", error.message);
                return (id, Ended::Unpollable);
            }
            Ok(Err(error)) => {
                tracing::warn!(device = %id, kind = error.kind.as_str(), "scanner poll failed: {}", error.message);
                tokio::select! {
                    _ = stop.cancelled() => return (id, Ended::Stopped),
                    _ = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
                }
            }
            Err(DeviceError::Detached(_)) => return (id, Ended::Detached),
            Err(other) => {
                tracing::warn!(device = %id, "scanner cannot be polled: {other}");
                return (id, Ended::Detached);
            }
        }
    }
}

/// One poll on the device thread.
fn poll_task(device: &mut OpenedDevice) -> Result<Option<ScannedText>, PluginError> {
    match device {
        OpenedDevice::Scanner(scanner) => scanner
            .poll(POLL_MS)
            .into_result()
            .map(|text| text.into_option()),
        _ => Err(PluginError::new(
            ErrorKind::Unsupported,
            "the device is not a scanner",
        )),
    }
}

/// Hands a scan to local subscribers (and through them to the cloud). Logs its size only.
fn publish(agent: &Agent, device: &str, text: ScannedText) {
    let lines: Vec<String> = text.lines.iter().map(|l| l.to_string()).collect();
    if lines.is_empty() {
        return;
    }
    tracing::info!(device, "scan of {} lines from {device}", lines.len());
    agent.publish_local(LocalEvent::Scan {
        device: device.to_string(),
        text: ScannedLines(lines),
    });
}
