//! Heartbeats and device events on DeviceHub's own topics.
//!
//! # Topics (see docs/protocol.md, "Heartbeats and events")
//! - `devicehub/{thing}/heartbeat`, QoS 0, every `heartbeatIntervalS` seconds (the shadow
//!   setting, followed at runtime) and right after each connection: health checks (link,
//!   plugins, devices, free disk space of the data directory, certificate days left, the event
//!   outbox).
//! - `devicehub/{thing}/events/device`, QoS 1: a device was attached or detached. The device
//!   table is polled every [`DEVICE_POLL`] and differences are published.
//! - `devicehub/{thing}/events/job`, QoS 1: a job ended, with its status details.
//! - `devicehub/{thing}/scale`, QoS 1: a scale's reading changed (see [`crate::scales`]); at
//!   most one per scale per [`DEVICE_POLL`], the newest. Readings are queued only while the
//!   link is up: a weight from while it was down is stale.
//! - `devicehub/{thing}/events/upgrade`, QoS 1: the cloud announced a newer agent or plugin
//!   version for DeviceHub's update channel (see [`super::upgrades`]); sent once per notice.
//!   Plugin bundle updates are told on the same topic with `type: "bundle"` (see
//!   [`super::bundle_update`]).
//! - `devicehub/{thing}/scanner`, QoS 1: a scanner delivered an address block
//!   (`{"timestamp","event":"scan","device","lines":[...]}`), taken from the agent's live
//!   events ([`EventsTask::forward_scans`]). The lines are personal data: they are sent, never
//!   logged, and wait only in the in-memory outbox.
//!
//! The jobs and shadow tasks leave what the heartbeat reports about them (last job, clock
//! skew, upgrade notice) and job events on a shared [`HealthBoard`], read at every poll.
//!
//! # Offline
//! Events wait in a bounded in-memory outbox ([`OUTBOX_CAPACITY`]) while the link is down and
//! are sent oldest first once it is up. When the outbox is full the oldest event is dropped;
//! the next heartbeat counts the drops. Heartbeats are not queued: a missed heartbeat is the
//! news that the link was down.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::link::{LinkHandle, LinkState, Qos};
use super::shadow::AgentSettings;
use super::upgrades::UpgradeNotice;
use crate::agent::LocalEvent;
use crate::devices::{DeviceSummary, DeviceTable};
use crate::storage::certs::CertificateInfo;

/// How many events wait while the link is down.
pub const OUTBOX_CAPACITY: usize = 256;
/// How often the device table is compared with the last look.
pub const DEVICE_POLL: Duration = Duration::from_secs(1);

/// What the heartbeat reports that does not change while DeviceHub runs, and the board the
/// other tasks write to.
#[derive(Debug, Clone)]
pub struct HealthInputs {
    /// The running agent's plugins: counts, and whether the development flag let unsigned ones
    /// load (a `warn` health check in every heartbeat).
    pub plugins: Arc<crate::plugins::SharedPlugins>,
    /// The data directory, whose free space is reported.
    pub data_dir: PathBuf,
    /// The device certificate, whose days left are reported.
    pub certificate: CertificateInfo,
    pub board: SharedHealth,
}

/// What the jobs and shadow tasks tell the heartbeat.
#[derive(Debug, Default)]
pub struct HealthBoard {
    /// The last job that ended.
    pub last_job: Option<Value>,
    /// The last [`RECENT_JOBS`] jobs that ended, oldest first, for local status pages.
    pub recent_jobs: VecDeque<Value>,
    /// Local clock minus the cloud's, seconds, from the last shadow answer.
    pub clock_skew_s: Option<i64>,
    /// What the cloud announced as newer for DeviceHub's channel.
    pub upgrade: Option<UpgradeNotice>,
    /// Job events not yet in the outbox.
    pub job_events: Vec<Value>,
    /// The newest changed reading of each scale not yet in the outbox, by device ID: keeping
    /// only the newest limits the scale topic to one reading per scale per device poll.
    pub scale_readings: BTreeMap<String, Value>,
    /// Plugin bundle update events (`type: "bundle"`) not yet in the outbox; they go out on
    /// the upgrade topic.
    pub bundle_events: Vec<Value>,
}

/// How many ended jobs the board keeps for local status pages.
pub const RECENT_JOBS: usize = 20;

impl HealthBoard {
    /// Records a job that ended: the last job, the recent list and a job event.
    pub fn job_ended(&mut self, ended: Value) {
        self.last_job = Some(ended.clone());
        if self.recent_jobs.len() == RECENT_JOBS {
            self.recent_jobs.pop_front();
        }
        self.recent_jobs.push_back(ended.clone());
        let mut event = ended;
        event["event"] = "job-ended".into();
        self.job_events.push(event);
    }
}

/// The board shared between the tasks.
pub type SharedHealth = Arc<Mutex<HealthBoard>>;

/// Locks the board; a panic elsewhere leaves it valid (every field is replaced whole).
pub fn board(shared: &SharedHealth) -> MutexGuard<'_, HealthBoard> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Events waiting to be sent, oldest first, with a count of those dropped for room.
#[derive(Debug)]
pub struct Outbox {
    /// (topic, payload)
    events: VecDeque<(String, Value)>,
    capacity: usize,
    /// Dropped since the last heartbeat reported them.
    dropped: u64,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Adds an event for `topic`, dropping the oldest when full.
    pub fn push(&mut self, topic: &str, event: Value) {
        if self.events.len() == self.capacity {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back((topic.to_string(), event));
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The drops since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

/// The heartbeat and events task; see the module docs.
#[derive(Debug)]
pub struct EventsTask {
    link: LinkHandle,
    heartbeat_topic: String,
    device_topic: String,
    job_topic: String,
    upgrade_topic: String,
    scale_topic: String,
    /// The upgrade notice last queued, so that each is sent once.
    announced: Option<UpgradeNotice>,
    devices: Arc<DeviceTable>,
    health: HealthInputs,
    settings: watch::Receiver<AgentSettings>,
    outbox: Outbox,
    /// The devices seen at the last poll, by ID.
    known: BTreeMap<String, DeviceSummary>,
    started: Instant,
    sequence: u64,
    /// Connections made since start, so that a flapping link shows in the heartbeat.
    connections: u64,
    /// How many events wait in the outbox, for whoever shows DeviceHub's state locally.
    queued: watch::Sender<usize>,
    scanner_topic: String,
    /// The agent's live events, from which scans are forwarded; `None` when not forwarded.
    scans: Option<broadcast::Receiver<LocalEvent>>,
}

impl EventsTask {
    pub fn new(
        thing_name: &str,
        link: LinkHandle,
        devices: Arc<DeviceTable>,
        health: HealthInputs,
        settings: watch::Receiver<AgentSettings>,
    ) -> EventsTask {
        // Devices attached at start are in the shadow's report; events are about changes.
        let known = devices
            .list()
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        EventsTask {
            link,
            heartbeat_topic: format!("devicehub/{thing_name}/heartbeat"),
            device_topic: format!("devicehub/{thing_name}/events/device"),
            job_topic: format!("devicehub/{thing_name}/events/job"),
            upgrade_topic: format!("devicehub/{thing_name}/events/upgrade"),
            scale_topic: format!("devicehub/{thing_name}/scale"),
            scanner_topic: format!("devicehub/{thing_name}/scanner"),
            scans: None,
            announced: None,
            devices,
            health,
            settings,
            outbox: Outbox::new(OUTBOX_CAPACITY),
            known,
            started: Instant::now(),
            sequence: 0,
            connections: 0,
            queued: watch::Sender::new(0),
        }
    }

    /// Forwards the scans among `events` (the agent's live events) to the scanner topic.
    pub fn forward_scans(mut self, events: broadcast::Receiver<LocalEvent>) -> EventsTask {
        self.scans = Some(events);
        self
    }

    /// The number of events waiting in the outbox, updated after every device poll and send.
    pub fn queued(&self) -> watch::Receiver<usize> {
        self.queued.subscribe()
    }

    /// Runs until `shutdown` or until the link task ends.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut state = self.link.state();
        let mut connected = matches!(*state.borrow_and_update(), LinkState::Connected { .. });
        let mut interval = self.settings.borrow_and_update().heartbeat_interval();
        let mut next_heartbeat = Box::pin(tokio::time::sleep(interval));
        if connected {
            self.connections += 1;
            self.heartbeat().await;
        }
        let mut settings_open = true;
        let mut poll = tokio::time::interval(DEVICE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scans = self.scans.take();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = next_local(&mut scans), if scans.is_some() => {
                    match event {
                        Ok(LocalEvent::Scan { device, text }) => {
                            self.outbox.push(&self.scanner_topic, scan_event(&device, text.0));
                            if connected {
                                self.flush().await;
                            }
                            self.queued.send_replace(self.outbox.len());
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "live events were missed; scans among them are not sent");
                        }
                        Err(broadcast::error::RecvError::Closed) => scans = None,
                    }
                }
                changed = state.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = matches!(*state.borrow_and_update(), LinkState::Connected { .. });
                    if now && !connected {
                        self.connections += 1;
                        self.flush().await;
                        self.queued.send_replace(self.outbox.len());
                        self.heartbeat().await;
                        next_heartbeat.as_mut().reset(tokio::time::Instant::now() + interval);
                    }
                    connected = now;
                }
                changed = self.settings.changed(), if settings_open => {
                    if changed.is_err() {
                        // The shadow task ended; keep the interval that runs.
                        settings_open = false;
                        continue;
                    }
                    let wanted = self.settings.borrow_and_update().heartbeat_interval();
                    if wanted != interval {
                        tracing::info!(seconds = wanted.as_secs(), "heartbeat interval changed");
                        interval = wanted;
                        next_heartbeat.as_mut().reset(tokio::time::Instant::now() + interval);
                    }
                }
                _ = poll.tick() => {
                    self.poll_devices();
                    // The link may have come up since `connected` was last updated (the change
                    // is handled next): readings the scale service left because it saw the
                    // link up must wait for that, not be dropped as stale.
                    let up_now = matches!(*state.borrow(), LinkState::Connected { .. });
                    self.poll_board(connected, up_now);
                    if connected {
                        self.flush().await;
                    }
                    self.queued.send_replace(self.outbox.len());
                }
                _ = &mut next_heartbeat => {
                    if connected {
                        self.heartbeat().await;
                    }
                    next_heartbeat.as_mut().reset(tokio::time::Instant::now() + interval);
                }
            }
        }
    }

    /// Compares the device table with the last look and queues an event per difference.
    fn poll_devices(&mut self) {
        let now: BTreeMap<String, DeviceSummary> = self
            .devices
            .list()
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        for (id, device) in &now {
            if self.known.get(id) != Some(device) {
                self.outbox
                    .push(&self.device_topic, device_event("attached", device));
            }
        }
        for (id, device) in &self.known {
            if !now.contains_key(id) {
                self.outbox
                    .push(&self.device_topic, device_event("detached", device));
            }
        }
        self.known = now;
    }

    /// Queues the job events, scale readings (while `connected`) and a new upgrade notice left
    /// on the board. Readings left while the link is down are dropped as stale, unless the link
    /// is `up_now` (its change not handled yet): then they stay for the next poll.
    fn poll_board(&mut self, connected: bool, up_now: bool) {
        let (jobs, upgrade, readings, bundle_events) = {
            let mut board = board(&self.health.board);
            let readings = if connected || !up_now {
                std::mem::take(&mut board.scale_readings)
            } else {
                BTreeMap::new()
            };
            (
                std::mem::take(&mut board.job_events),
                board.upgrade.clone(),
                readings,
                std::mem::take(&mut board.bundle_events),
            )
        };
        for event in bundle_events {
            self.outbox.push(&self.upgrade_topic, event);
        }
        for event in jobs {
            self.outbox.push(&self.job_topic, event);
        }
        if connected {
            for (_, reading) in readings {
                self.outbox.push(&self.scale_topic, reading);
            }
        }
        if upgrade != self.announced {
            if let Some(notice) = &upgrade {
                let mut event = json!({
                    "timestamp": epoch_seconds(),
                    "event": "upgrade-available",
                });
                if let (Value::Object(event), Ok(Value::Object(notice))) =
                    (&mut event, serde_json::to_value(notice))
                {
                    event.extend(notice);
                }
                self.outbox.push(&self.upgrade_topic, event);
            }
            self.announced = upgrade;
        }
    }

    /// Sends the queued events, oldest first; one that cannot be queued on the link stays.
    async fn flush(&mut self) {
        while let Some((topic, event)) = self.outbox.events.front() {
            let payload = event.to_string();
            match self.link.publish(topic, payload, Qos::AtLeastOnce).await {
                Ok(()) => {
                    self.outbox.events.pop_front();
                }
                Err(e) => {
                    tracing::warn!("cannot send an event: {e}");
                    break;
                }
            }
        }
    }

    async fn heartbeat(&mut self) {
        self.sequence += 1;
        let (last_job, clock_skew_s, upgrade) = {
            let board = board(&self.health.board);
            (
                board.last_job.clone(),
                board.clock_skew_s,
                board.upgrade.clone(),
            )
        };
        let plugins = self.health.plugins.current();
        let mut payload = json!({
            "timestamp": epoch_seconds(),
            "sequence": self.sequence,
            "agentVersion": env!("CARGO_PKG_VERSION"),
            "uptimeS": self.started.elapsed().as_secs(),
            "heartbeatIntervalS": self.settings.borrow().heartbeat_interval_s,
            "link": { "connected": true, "connections": self.connections },
            "plugins": {
                "loaded": plugins.plugins.len(),
                "refused": plugins.refused.len(),
                "unsigned": plugins.unsigned_count(),
            },
            "devices": { "attached": self.known.len() },
            "disk": { "freeBytes": free_bytes(&self.health.data_dir) },
            "certificate": {
                "daysLeft": self.health.certificate.days_until_expiry(SystemTime::now()),
            },
            "events": {
                "queued": self.outbox.len(),
                "dropped": self.outbox.take_dropped(),
            },
            "clock": { "skewS": clock_skew_s },
            "lastJob": last_job,
        });
        if let Some(upgrade) = upgrade {
            payload["upgradeAvailable"] = json!(upgrade);
        }
        payload["checks"] = json!(health_checks(&plugins));
        if let Err(e) = self
            .link
            .publish(&self.heartbeat_topic, payload.to_string(), Qos::AtMostOnce)
            .await
        {
            tracing::warn!("cannot send a heartbeat: {e}");
        }
    }
}

/// The heartbeat's health checks that are not `ok`: each a name, `warn` or `error`, and a
/// message for the person who reads the fleet's health.
pub fn health_checks(plugins: &crate::plugins::PluginSet) -> Vec<Value> {
    let mut checks = Vec::new();
    if plugins.allow_unsigned {
        checks.push(json!({
            "name": "plugins.unsigned",
            "status": "warn",
            "message": format!(
                "unsigned plugins allowed: {} loaded unsigned",
                plugins.unsigned_count()
            ),
        }));
    }
    checks
}

/// The next live event, for a `select!` branch guarded by `events.is_some()`.
async fn next_local(
    events: &mut Option<broadcast::Receiver<LocalEvent>>,
) -> Result<LocalEvent, broadcast::error::RecvError> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// The scanner topic's payload: the address lines, which are personal data.
fn scan_event(device: &str, lines: Vec<String>) -> Value {
    json!({
        "timestamp": epoch_seconds(),
        "event": "scan",
        "device": device,
        "lines": lines,
    })
}

fn device_event(event: &str, device: &DeviceSummary) -> Value {
    json!({
        "timestamp": epoch_seconds(),
        "event": event,
        "device": {
            "id": device.id,
            "kind": device.kind,
            "plugin": device.plugin,
            "model": device.model,
            "usbId": device.usb_id,
        },
    })
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Free space for unprivileged users on the file system holding `dir`; `None` when unknown.
#[cfg(unix)]
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stats` points to
    // writable memory of the right type, which statvfs fills when it returns 0.
    let result = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if result != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `stats`.
    let stats = unsafe { stats.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Some((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

/// Free space is not measured on this platform yet.
#[cfg(not(unix))]
fn free_bytes(_dir: &std::path::Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_flag_is_a_warn_check_with_the_unsigned_count() {
        use crate::plugins::{bundle::TrustStore, PluginSet, Selection};
        let dir = tempfile::tempdir().expect("temp dir");
        let load = |allow_unsigned| {
            let trust = TrustStore::new(&[], Vec::new(), allow_unsigned).expect("trust store");
            PluginSet::load_dir(dir.path(), Selection::AllLibraries, &trust)
        };
        assert!(health_checks(&load(false)).is_empty());
        let development = load(true);
        assert_eq!(
            health_checks(&development),
            vec![json!({
                "name": "plugins.unsigned",
                "status": "warn",
                "message": "unsigned plugins allowed: 0 loaded unsigned",
            })]
        );
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts_it() {
        let mut outbox = Outbox::new(3);
        for n in 0..5 {
            outbox.push("devicehub/t/events/device", json!({ "n": n }));
        }
        assert_eq!(outbox.len(), 3);
        assert_eq!(outbox.take_dropped(), 2);
        assert_eq!(outbox.take_dropped(), 0);
        let kept: Vec<i64> = outbox
            .events
            .iter()
            .map(|(_, e)| e["n"].as_i64().expect("n"))
            .collect();
        assert_eq!(kept, [2, 3, 4]);
    }

    #[test]
    fn free_space_of_a_real_directory_is_known() {
        let dir = tempfile::tempdir().expect("temp dir");
        #[cfg(unix)]
        assert!(free_bytes(dir.path()).is_some());
        #[cfg(not(unix))]
        assert!(free_bytes(dir.path()).is_none());
    }
}
