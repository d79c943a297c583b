//! The running agent's shared state, as the local servers see it: what DeviceHub is (version,
//! plugins, devices), whether and how it is connected, what it did lately, and the one way to
//! register it from a local page or tool.
//!
//! `devicehub run` builds one [`Agent`] before it connects and hands it to every local server
//! (the registration and status pages, the local RPC). Everything in a [`StatusSnapshot`] is
//! safe to show on a local page: device IDs, models, versions, job IDs and DeviceHub-written
//! outcomes; never label contents, addresses or file URLs.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use crate::cloud::events::{board, SharedHealth};
use crate::cloud::link::LinkState;
use crate::cloud::registration::{
    self, Registration, RegistrationError, RegistrationSettings, RegistrationStep,
};
use crate::cloud::upgrades::UpgradeNotice;
use crate::config::{Config, DeviceAddress, DeviceEntry};
use crate::devices::{self, DeviceProblem, DeviceSummary, DeviceTable};
use crate::plugins::{PluginSet, SharedPlugins};
use crate::storage::DataDir;

/// The running agent, shared by the local servers.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    data_dir: DataDir,
    plugins: Arc<SharedPlugins>,
    devices: Arc<DeviceTable>,
    /// The device table rows in effect: the config's at start, replaced by `config.reload`;
    /// a plugin rescan attaches the rows whose plugin it loaded. Held across both so that they
    /// never interleave.
    device_rows: tokio::sync::Mutex<Vec<DeviceEntry>>,
    health: SharedHealth,
    started: Instant,
    /// The registered thing's name; `None` until registered.
    thing: watch::Sender<Option<String>>,
    /// The cloud link's state once it runs.
    link: watch::Sender<Option<LinkState>>,
    /// One registration at a time.
    registering: tokio::sync::Mutex<()>,
    /// Live events for local tools (WebSocket, RPC publish socket).
    local: broadcast::Sender<LocalEvent>,
    /// Where the local servers listen once bound, for a caller that shows or opens them (the
    /// sandbox prints the status page's address; with port 0 only the bound socket knows it).
    local_servers: watch::Sender<LocalServers>,
    /// Told of activity (a job ended, the link connected) so that memory is released once the
    /// agent is quiet again.
    quiet: crate::memory::Quiet,
}

/// The loopback addresses the local servers listen on; `None` while a server is not running
/// (not started yet, its port taken, or stopped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalServers {
    /// The registration and status pages (`http://ADDR/`, the status page at `/status`).
    pub pages: Option<std::net::SocketAddr>,
    /// The local WebSocket server.
    pub websocket: Option<std::net::SocketAddr>,
}

/// How many live events a slow local subscriber may fall behind before it misses some.
pub const LOCAL_EVENTS_BACKLOG: usize = 256;

/// Something local tools follow live. Scans are personal data: they travel only to local
/// subscribers (and the cloud's scanner topic), never to logs or disk; their `Debug` output
/// is redacted.
#[derive(Debug, Clone)]
pub enum LocalEvent {
    /// A scale's reading changed.
    Scale {
        device: String,
        reading: ReadingView,
    },
    /// A scanner delivered an address block.
    Scan { device: String, text: ScannedLines },
    /// A device was attached or detached (`attached` false).
    Device {
        device: DeviceSummary,
        attached: bool,
    },
    /// A job ended (the same object as the heartbeat's `lastJob`).
    Job(Value),
}

/// A scale reading as local tools and the cloud see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadingView {
    /// `stable`, `stable at zero`, `in motion`, `under zero`, `over capacity`,
    /// `needs calibration`, `needs re-zero` or `fault`.
    pub state: &'static str,
    /// The weight in whole micrograms.
    pub micrograms: i64,
    /// One display step of the scale, micrograms.
    pub resolution_micrograms: u64,
    /// The unit the scale displays: `mg`, `g`, `kg`, `oz` or `lb`.
    pub display_unit: &'static str,
    /// When it was read, milliseconds since the epoch.
    pub at_ms: u64,
}

/// Scanned text lines (an address block: personal data).
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct ScannedLines(pub Vec<String>);

impl std::fmt::Debug for ScannedLines {
    // Keeps addresses out of debug output and therefore out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScannedLines({} lines, redacted)", self.0.len())
    }
}

/// Why a registration asked of the running agent did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("this computer is already registered as {0}")]
    AlreadyRegistered(String),
    #[error(transparent)]
    Registration(#[from] RegistrationError),
}

impl RegisterError {
    /// A stable name for the kind of failure, for machine-readable answers.
    pub fn kind(&self) -> &'static str {
        match self {
            RegisterError::AlreadyRegistered(_) => "alreadyRegistered",
            RegisterError::Registration(e) => e.kind(),
        }
    }
}

/// The link as a local page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkView {
    /// `not registered`, `connecting`, `connected`, `reconnecting` or `stopped`.
    pub state: &'static str,
    /// Why the last attempt failed, while reconnecting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A loaded plugin as a local page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginView {
    pub name: String,
    pub version: String,
    pub kind: &'static str,
    pub file: String,
    /// How the file was allowed to load: `signed`, `trustedHash` or `unsigned`.
    pub approval: &'static str,
    /// The same in words (the signing key's ID and bundle version, for a signed file).
    pub approval_detail: String,
}

impl PluginView {
    pub fn of(plugin: &crate::plugins::LoadedPlugin) -> PluginView {
        PluginView {
            name: plugin.manifest.name.to_string(),
            version: plugin.version.to_string(),
            kind: plugin.manifest.kind.as_str(),
            file: file_name(&plugin.path),
            approval: plugin.approval.kind(),
            approval_detail: plugin.approval.to_string(),
        }
    }
}

/// What a plugin rescan did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RescanOutcome {
    /// The plugins it loaded.
    pub loaded: Vec<PluginView>,
    /// The config's devices it attached because their plugin is now loaded.
    pub attached: Vec<String>,
    /// Devices whose plugin is now loaded but which could not be opened, and why.
    pub failed: Vec<DeviceProblem>,
    /// Every file of the folder that is not loaded, and why.
    pub refused: Vec<RefusedView>,
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A plugin file that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedView {
    pub file: String,
    pub reason: String,
}

/// Everything a status page or `devicehub status` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusSnapshot {
    pub agent_version: &'static str,
    pub uptime_s: u64,
    pub thing_name: Option<String>,
    pub link: LinkView,
    pub plugins: Vec<PluginView>,
    pub refused_plugins: Vec<RefusedView>,
    /// The development flag is on: unsigned plugins may load.
    pub unsigned_plugins_allowed: bool,
    pub devices: Vec<DeviceSummary>,
    pub device_problems: Vec<DeviceProblem>,
    /// The last jobs that ended, newest first.
    pub recent_jobs: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_available: Option<UpgradeNotice>,
    pub clock_skew_s: Option<i64>,
}

impl Agent {
    /// The agent before it connects; `thing` is the stored identity's thing name, if any.
    pub fn new(
        config: Config,
        data_dir: DataDir,
        plugins: Arc<SharedPlugins>,
        devices: Arc<DeviceTable>,
        health: SharedHealth,
        thing: Option<String>,
    ) -> Agent {
        let device_rows = tokio::sync::Mutex::new(config.devices.clone());
        Agent {
            config,
            data_dir,
            plugins,
            devices,
            device_rows,
            health,
            started: Instant::now(),
            thing: watch::Sender::new(thing),
            link: watch::Sender::new(None),
            registering: tokio::sync::Mutex::new(()),
            local: broadcast::Sender::new(LOCAL_EVENTS_BACKLOG),
            local_servers: watch::Sender::new(LocalServers::default()),
            quiet: crate::memory::Quiet::default(),
        }
    }

    /// The quiet-time memory release this agent tells of its activity; the service runs it.
    pub fn quiet(&self) -> crate::memory::Quiet {
        self.quiet.clone()
    }

    /// Where the local servers listen now, followed as they start and stop.
    pub fn local_servers(&self) -> watch::Receiver<LocalServers> {
        self.local_servers.subscribe()
    }

    /// Records where the local pages listen (`None` once they stop).
    pub fn set_pages_address(&self, addr: Option<std::net::SocketAddr>) {
        self.local_servers
            .send_modify(|servers| servers.pages = addr);
    }

    /// Records where the local WebSocket server listens (`None` once it stops).
    pub fn set_websocket_address(&self, addr: Option<std::net::SocketAddr>) {
        self.local_servers
            .send_modify(|servers| servers.websocket = addr);
    }

    /// Sends a live event to local subscribers (none listening is fine).
    pub fn publish_local(&self, event: LocalEvent) {
        // A job's buffers are freed when it ends: they go back to the system once quiet.
        if matches!(event, LocalEvent::Job(_)) {
            self.quiet.poke();
        }
        let _ = self.local.send(event);
    }

    /// Follows live events; a subscriber that falls [`LOCAL_EVENTS_BACKLOG`] behind is told how
    /// many it missed (`RecvError::Lagged`) and goes on with the newest.
    pub fn subscribe_local(&self) -> broadcast::Receiver<LocalEvent> {
        self.local.subscribe()
    }

    /// How many live-event subscribers there are now; the scale readings service reads scales
    /// only while someone listens (or the cloud link is up).
    pub fn local_subscribers(&self) -> usize {
        self.local.receiver_count()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// The plugin set in effect now (a snapshot: a rescan makes a new one).
    pub fn plugins(&self) -> Arc<PluginSet> {
        self.plugins.current()
    }

    /// The plugins as everything running follows them.
    pub fn shared_plugins(&self) -> &Arc<SharedPlugins> {
        &self.plugins
    }

    /// The device table rows in effect (see the field's documentation).
    pub fn device_rows(&self) -> &tokio::sync::Mutex<Vec<DeviceEntry>> {
        &self.device_rows
    }

    /// Rescans the plugins folder: loads the new files the trust store approves (signed by a
    /// trusted key or trusted by hash, read again now), attaches the device rows whose plugin
    /// was missing, and tells local subscribers about each attached device. Refusals that are
    /// new since the last scan are logged once. The cloud hears of the devices through the
    /// events task and of the plugins through the shadow task, which both follow the tables.
    pub async fn rescan_plugins(self: &Arc<Self>) -> RescanOutcome {
        let rows = self.device_rows.lock().await;
        let entries = rows.clone();
        let agent = self.clone();
        let outcome = tokio::task::spawn_blocking(move || agent.rescan_blocking(&entries)).await;
        drop(rows);
        outcome.unwrap_or_else(|e| {
            tracing::error!("the plugin rescan failed: {e}");
            RescanOutcome {
                loaded: Vec::new(),
                attached: Vec::new(),
                failed: Vec::new(),
                refused: Vec::new(),
            }
        })
    }

    fn rescan_blocking(&self, rows: &[DeviceEntry]) -> RescanOutcome {
        let trust = crate::service::trust_store(&self.config);
        let before = self.plugins.current();
        let (now, added) = self.plugins.rescan(&trust);
        for refused in now.refused.iter().filter(|r| !before.refused.contains(r)) {
            tracing::warn!(path = %refused.path.display(), "plugin refused: {}", refused.reason);
        }
        let mut attached = Vec::new();
        let mut failed = Vec::new();
        if !added.is_empty() {
            for entry in rows {
                // USB rows are the USB watcher's, which uses the new set at its next pass.
                let usb_bound = matches!(
                    DeviceAddress::parse(&entry.address),
                    Ok(DeviceAddress::Usb { .. })
                );
                let missing_plugin = devices::resolve_entry(entry, &before).is_err();
                if usb_bound || !missing_plugin || self.devices.get(&entry.id).is_ok() {
                    continue;
                }
                let outcome = devices::resolve_entry(entry, &now).and_then(|spec| {
                    let device =
                        devices::open_connected(&spec, None, &self.config.system_printers)?;
                    self.devices.attach_opened(spec, device)
                });
                match outcome {
                    Ok(worker) => {
                        attached.push(entry.id.clone());
                        self.publish_local(LocalEvent::Device {
                            device: devices::summarize(worker.spec()),
                            attached: true,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(device = %entry.id, "device not attached: {e}");
                        self.devices.problem(&entry.id, e.to_string());
                        failed.push(DeviceProblem {
                            id: entry.id.clone(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        tracing::info!(
            loaded = added.len(),
            attached = attached.len(),
            refused = now.refused.len(),
            "plugins rescanned"
        );
        RescanOutcome {
            loaded: added.iter().map(|p| PluginView::of(p)).collect(),
            attached,
            failed,
            refused: refused_views(&now),
        }
    }

    pub fn devices(&self) -> &Arc<DeviceTable> {
        &self.devices
    }

    pub fn health(&self) -> &SharedHealth {
        &self.health
    }

    /// The registered thing's name, following registration.
    pub fn thing(&self) -> watch::Receiver<Option<String>> {
        self.thing.subscribe()
    }

    /// The cloud link's state (`None` before the link runs), following it.
    pub fn link(&self) -> watch::Receiver<Option<LinkState>> {
        self.link.subscribe()
    }

    /// Follows `state` (the link's own watch) until the link ends; the service calls it once
    /// the link runs.
    pub fn follow_link(self: &Arc<Self>, mut state: watch::Receiver<LinkState>) {
        let agent = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let current = state.borrow_and_update().clone();
                match agent.upgrade() {
                    Some(agent) => {
                        // Connecting ends start-up's work (TLS handshake, subscriptions).
                        if matches!(current, LinkState::Connected { .. }) {
                            agent.quiet.poke();
                        }
                        agent.link.send_replace(Some(current));
                    }
                    None => return,
                }
                if state.changed().await.is_err() {
                    if let Some(agent) = agent.upgrade() {
                        agent.link.send_replace(Some(LinkState::Stopped));
                    }
                    return;
                }
            }
        });
    }

    /// Registers this computer with the activation code, by the same code as `devicehub
    /// register`; `on_step` hears each step. On success the waiting service connects.
    pub async fn register(
        &self,
        activation_code: &str,
        on_step: &mut (dyn FnMut(&RegistrationStep) + Send),
    ) -> Result<Registration, RegisterError> {
        let _one_at_a_time = self.registering.lock().await;
        if let Some(thing) = self.thing.borrow().clone() {
            return Err(RegisterError::AlreadyRegistered(thing));
        }
        let settings = RegistrationSettings::from_config(&self.config.cloud, self.data_dir.root())?;
        let done =
            registration::register(&settings, &self.data_dir, activation_code, on_step).await?;
        self.thing.send_replace(Some(done.thing_name.clone()));
        Ok(done)
    }

    /// Notes a registration made outside the running agent (`devicehub register` in another
    /// process).
    pub fn registered_elsewhere(&self, thing_name: &str) {
        self.thing.send_if_modified(|thing| {
            let changed = thing.as_deref() != Some(thing_name);
            *thing = Some(thing_name.to_string());
            changed
        });
    }

    /// What a status page shows now.
    pub fn snapshot(&self) -> StatusSnapshot {
        let (recent_jobs, upgrade_available, clock_skew_s) = {
            let board = board(&self.health);
            (
                board.recent_jobs.iter().rev().cloned().collect(),
                board.upgrade.clone(),
                board.clock_skew_s,
            )
        };
        let thing_name = self.thing.borrow().clone();
        let link = match (&thing_name, &*self.link.borrow()) {
            (None, _) => LinkView {
                state: "not registered",
                detail: None,
            },
            (Some(_), None | Some(LinkState::Connecting)) => LinkView {
                state: "connecting",
                detail: None,
            },
            (Some(_), Some(LinkState::Connected { .. })) => LinkView {
                state: "connected",
                detail: None,
            },
            (Some(_), Some(LinkState::Reconnecting { failure, .. })) => LinkView {
                state: "reconnecting",
                detail: Some(failure.message.clone()),
            },
            (Some(_), Some(LinkState::Stopped)) => LinkView {
                state: "stopped",
                detail: None,
            },
        };
        let plugins = self.plugins.current();
        StatusSnapshot {
            agent_version: env!("CARGO_PKG_VERSION"),
            uptime_s: self.started.elapsed().as_secs(),
            thing_name,
            link,
            plugins: plugins.plugins.iter().map(|p| PluginView::of(p)).collect(),
            refused_plugins: refused_views(&plugins),
            unsigned_plugins_allowed: plugins.allow_unsigned,
            devices: self.devices.list(),
            device_problems: self.devices.problems(),
            recent_jobs,
            upgrade_available,
            clock_skew_s,
        }
    }
}

fn refused_views(set: &PluginSet) -> Vec<RefusedView> {
    set.refused
        .iter()
        .map(|r| RefusedView {
            file: file_name(&r.path),
            reason: r.reason.clone(),
        })
        .collect()
}

/// Seconds since the epoch, for records made here.
pub fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
