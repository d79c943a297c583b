//! The thing's classic Device Shadow: DeviceHub reports what it is (agent version, plugins,
//! attached devices, effective settings) and takes the settings the cloud wants from `desired`.
//!
//! # Protocol (AWS IoT Developer Guide: device-shadow-mqtt, device-shadow-data-flow)
//! - Subscriptions under `$aws/things/{thing}/shadow/`: `get/accepted`, `get/rejected`,
//!   `update/accepted`, `update/rejected`, `update/delta`.
//! - On every connection: `get` with a fresh `clientToken`. Its answer is the truth about the
//!   shadow: `state.desired.config` is applied (this is how changes made while DeviceHub was
//!   offline arrive), `state.reported` becomes the view the next report is compared with. A 404
//!   means there is no shadow yet: everything is reported.
//! - Reports are `update` with only the `reported` fields that changed (removed fields are sent
//!   as `null`, which deletes them), the last known `version` and a `clientToken`. One update is
//!   in flight at a time. A 409 (version conflict: someone else updated in between) is answered
//!   with a new `get` and the report is recomputed from its answer.
//! - `update/delta` carries desired values that differ from reported: they are applied and the
//!   new effective values are reported, which ends the delta.
//! - Every [`REFRESH`] the report is recomputed, so that devices attached or detached later are
//!   reported without a separate hook.
//!
//! # Settings (`desired.config`)
//! See [`AgentSettings`]. A valid value is applied and reported back; an invalid one (wrong
//! type, out of range, unknown key) leaves the effective value unchanged and is reported under
//! `reported.configErrors.{key}` with the reason, until the desired value is fixed. Applied at
//! runtime, through the settings channel: `heartbeatIntervalS` (the heartbeat task),
//! `logLevel` (the process's log filter, see `service.rs`), `defaultPrinter` (the jobs task's
//! printer choice per job kind), `updateChannel` (which announcement in `desired.releases`
//! applies, below) and `scaleUnits` (the unit of scale readings when a job names none).
//!
//! # Releases (`desired.releases`)
//! The newest agent and plugin versions per update channel (see [`super::upgrades`]). They are
//! reported back unchanged (which ends the delta) with `upgradeAvailable`, the notice for
//! DeviceHub's channel, also left on the health board for the heartbeat and the upgrade
//! event.
//!
//! # Plugin bundles (`desired.bundle`)
//! `{"version", "manifestUrl"}`: the plugin bundle the cloud wants installed, handed to the
//! bundle updater (see [`super::bundle_update`]), whose progress and outcome are reported as
//! `reported.bundle`.
//!
//! # Clock
//! Every answer carries the cloud's `timestamp`: the difference from the local clock is left
//! on the health board (the heartbeat's clock skew check).
//!
//! # Storage
//! The last known shadow (version, reported view, desired settings, effective settings) is kept
//! in `DataDir::shadow_file`, so that a restart without a connection uses the settings the cloud
//! last asked for. It holds device IDs, models and settings only: no personal data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::events::{board, SharedHealth};
use super::link::{InboundMessage, LinkError, LinkHandle, LinkState, Qos};
use super::upgrades;
use crate::devices::DeviceTable;
use crate::storage::{Loaded, StateFile};

/// How often the report is recomputed and sent when it changed.
pub const REFRESH: Duration = Duration::from_secs(2);
/// How long a `get` or `update` may go unanswered before it is sent again.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// The default heartbeat interval, seconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_S: u64 = 60;
/// The accepted range of `heartbeatIntervalS`.
pub const HEARTBEAT_INTERVAL_RANGE_S: std::ops::RangeInclusive<u64> = 1..=86_400;

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
const SCALE_UNITS: [&str; 4] = ["g", "kg", "oz", "lb"];
const UPDATE_CHANNELS: [&str; 3] = ["stable", "beta", "off"];
const PRINT_JOB_KINDS: [&str; 3] = ["label", "indicia", "sheet"];

/// The settings the cloud may set through `desired.config`; reported as `reported.config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentSettings {
    /// Seconds between heartbeats.
    pub heartbeat_interval_s: u64,
    /// The log filter wanted (one of error, warn, info, debug, trace).
    pub log_level: String,
    /// The device ID to print each kind of job on when the job names none.
    pub default_printer: DefaultPrinters,
    /// The unit scale readings are reported in (g, kg, oz, lb).
    pub scale_units: String,
    /// Which releases the installation follows (stable, beta, off).
    pub update_channel: String,
}

/// The default printer per print job kind; unset kinds follow the jobs task's own rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultPrinters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicia: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
}

impl DefaultPrinters {
    fn slot(&mut self, kind: &str) -> Option<&mut Option<String>> {
        match kind {
            "label" => Some(&mut self.label),
            "indicia" => Some(&mut self.indicia),
            "sheet" => Some(&mut self.sheet),
            _ => None,
        }
    }
}

impl AgentSettings {
    /// The settings before the cloud said anything: the config file's log level, the rest
    /// built in.
    pub fn defaults(log_level: &str) -> AgentSettings {
        AgentSettings {
            heartbeat_interval_s: DEFAULT_HEARTBEAT_INTERVAL_S,
            log_level: log_level.to_string(),
            default_printer: DefaultPrinters::default(),
            scale_units: "g".to_string(),
            update_channel: "stable".to_string(),
        }
    }

    /// The heartbeat interval as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_s)
    }

    /// Applies the desired values in `desired` (the `config` object of `desired` or of a
    /// delta; objects merge key by key). Returns the rejected keys (dotted paths) with the
    /// reason; their effective values are left as they were.
    pub fn apply(&mut self, desired: &Map<String, Value>) -> BTreeMap<String, String> {
        let mut errors = BTreeMap::new();
        for (key, value) in desired {
            // `null` in desired deletes the key: nothing is wanted any more, keep what runs.
            if value.is_null() {
                continue;
            }
            match key.as_str() {
                "heartbeatIntervalS" => match value.as_u64() {
                    Some(s) if HEARTBEAT_INTERVAL_RANGE_S.contains(&s) => {
                        self.heartbeat_interval_s = s;
                    }
                    _ => {
                        errors.insert(
                            key.clone(),
                            format!(
                                "must be a whole number of seconds from {} to {}",
                                HEARTBEAT_INTERVAL_RANGE_S.start(),
                                HEARTBEAT_INTERVAL_RANGE_S.end()
                            ),
                        );
                    }
                },
                "logLevel" => set_choice(&mut self.log_level, key, value, &LOG_LEVELS, &mut errors),
                "scaleUnits" => {
                    set_choice(&mut self.scale_units, key, value, &SCALE_UNITS, &mut errors)
                }
                "updateChannel" => set_choice(
                    &mut self.update_channel,
                    key,
                    value,
                    &UPDATE_CHANNELS,
                    &mut errors,
                ),
                "defaultPrinter" => match value.as_object() {
                    Some(kinds) => {
                        for (kind, device) in kinds {
                            let path = format!("defaultPrinter.{kind}");
                            let Some(slot) = self.default_printer.slot(kind) else {
                                errors.insert(
                                    path,
                                    format!(
                                        "unknown job kind; one of {}",
                                        PRINT_JOB_KINDS.join(", ")
                                    ),
                                );
                                continue;
                            };
                            match device {
                                Value::Null => {}
                                Value::String(id) if valid_device_id(id) => {
                                    *slot = Some(id.clone())
                                }
                                _ => {
                                    errors.insert(
                                        path,
                                        "must be a device ID (1 to 64 of A-Z a-z 0-9 . _ : -)"
                                            .to_string(),
                                    );
                                }
                            }
                        }
                    }
                    None => {
                        errors.insert(
                            key.clone(),
                            "must be an object of job kind to device ID".to_string(),
                        );
                    }
                },
                _ => {
                    errors.insert(key.clone(), "unknown setting".to_string());
                }
            }
        }
        errors
    }
}

fn set_choice(
    target: &mut String,
    key: &str,
    value: &Value,
    choices: &[&str],
    errors: &mut BTreeMap<String, String>,
) {
    match value.as_str() {
        Some(v) if choices.contains(&v) => *target = v.to_string(),
        _ => {
            errors.insert(
                key.to_string(),
                format!("must be one of {}", choices.join(", ")),
            );
        }
    }
}

fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

/// What is kept on disk between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowRecord {
    /// The shadow's version when last seen.
    pub version: Option<u64>,
    /// `desired.config` as last seen (only settings, never personal data).
    pub desired_config: Map<String, Value>,
    /// The reported state DeviceHub last sent or read.
    pub reported: Value,
    /// The effective settings.
    pub settings: AgentSettings,
    /// `desired.releases` as last seen.
    #[serde(default)]
    pub desired_releases: Value,
    /// `desired.bundle` as last seen: the plugin bundle the cloud wants installed.
    #[serde(default)]
    pub desired_bundle: Value,
}

/// Why the shadow task stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error("cannot subscribe to the shadow topics: {0}")]
    Subscribe(#[source] LinkError),
}

/// The plugins as reported: name, version and how the file was approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginReport {
    pub name: String,
    pub version: String,
    /// `signed`, `trustedHash`, `unsigned` (the development flag) or `builtIn`; empty when
    /// not known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub approval: String,
}

/// The reports of every plugin in `set`.
pub fn plugin_reports(set: &crate::plugins::PluginSet) -> Vec<PluginReport> {
    set.plugins
        .iter()
        .map(|p| PluginReport {
            name: p.manifest.name.to_string(),
            version: p.version.to_string(),
            approval: p.approval.kind().to_string(),
        })
        .collect()
}

/// The topics of one thing's classic shadow.
#[derive(Debug, Clone)]
struct Topics {
    prefix: String,
}

impl Topics {
    fn new(thing: &str) -> Topics {
        Topics {
            prefix: format!("$aws/things/{thing}/shadow"),
        }
    }

    fn get(&self) -> String {
        format!("{}/get", self.prefix)
    }

    fn update(&self) -> String {
        format!("{}/update", self.prefix)
    }

    fn filters(&self) -> Vec<String> {
        [
            "get/accepted",
            "get/rejected",
            "update/accepted",
            "update/rejected",
            "update/delta",
        ]
        .iter()
        .map(|tail| format!("{}/{tail}", self.prefix))
        .collect()
    }

    fn classify(&self, topic: &str) -> Option<Answer> {
        match topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?
        {
            "get/accepted" => Some(Answer::GetAccepted),
            "get/rejected" => Some(Answer::GetRejected),
            "update/accepted" => Some(Answer::UpdateAccepted),
            "update/rejected" => Some(Answer::UpdateRejected),
            "update/delta" => Some(Answer::Delta),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    GetAccepted,
    GetRejected,
    UpdateAccepted,
    UpdateRejected,
    Delta,
}

/// The fields of shadow answers DeviceHub reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShadowMessage {
    #[serde(default)]
    state: Option<Value>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    client_token: Option<String>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    message: Option<String>,
    /// The cloud's clock, epoch seconds.
    #[serde(default)]
    timestamp: Option<i64>,
}

/// What the shadow task needs besides the link and its messages.
#[derive(Debug)]
pub struct ShadowSettings {
    pub thing_name: String,
    /// The loaded plugins, as reported.
    pub plugins: Vec<PluginReport>,
    pub devices: Arc<DeviceTable>,
    pub file: StateFile<ShadowRecord>,
    /// Where effective settings are published for the other tasks.
    pub settings: watch::Sender<AgentSettings>,
    /// Where the upgrade notice and clock skew are left for the heartbeat.
    pub health: SharedHealth,
}

/// The shadow sync task; see the module docs.
#[derive(Debug)]
pub struct ShadowTask {
    link: LinkHandle,
    topics: Topics,
    plugins: Vec<PluginReport>,
    /// The running agent's plugins, re-read before each report so that plugins a rescan added
    /// are reported; `None` keeps `plugins` as given.
    following: Option<Arc<crate::plugins::SharedPlugins>>,
    devices: Arc<DeviceTable>,
    file: StateFile<ShadowRecord>,
    settings: watch::Sender<AgentSettings>,
    health: SharedHealth,
    record: ShadowRecord,
    /// The rejected desired keys and why, reported under `configErrors`.
    errors: BTreeMap<String, String>,
    /// The token and send time of the `get` being waited for.
    pending_get: Option<(String, Instant)>,
    /// The token and send time of the `update` in flight.
    pending_update: Option<(String, Instant)>,
    /// Set once a `get` was answered on this connection: only then is `record.reported` known
    /// well enough to send differences against.
    synced: bool,
    /// Where `desired.bundle` goes (the bundle updater), when one follows it.
    bundle_desired: Option<watch::Sender<Value>>,
    /// The updater's `reported.bundle`.
    bundle_report: Option<watch::Receiver<Value>>,
}

impl ShadowTask {
    /// Loads the stored shadow (a corrupt file is moved aside and reported) and publishes its
    /// settings, so that the other tasks start with what the cloud last asked for.
    pub fn new(link: LinkHandle, options: ShadowSettings, defaults: AgentSettings) -> ShadowTask {
        let record = match options.file.load() {
            Ok(Loaded::Present(record)) => record,
            Ok(Loaded::Absent) => fresh_record(defaults),
            Ok(Loaded::MovedAside { moved_to, reason }) => {
                tracing::error!(
                    moved_to = %moved_to.display(),
                    "the stored shadow was damaged ({reason}) and was moved aside"
                );
                fresh_record(defaults)
            }
            Err(e) => {
                tracing::error!("cannot read the stored shadow: {e}");
                fresh_record(defaults)
            }
        };
        options.settings.send_replace(record.settings.clone());
        let mut task = ShadowTask {
            link,
            topics: Topics::new(&options.thing_name),
            plugins: options.plugins,
            following: None,
            devices: options.devices,
            file: options.file,
            settings: options.settings,
            health: options.health,
            record,
            errors: BTreeMap::new(),
            pending_get: None,
            pending_update: None,
            synced: false,
            bundle_desired: None,
            bundle_report: None,
        };
        task.update_upgrade();
        task
    }

    /// Hands `desired.bundle` to `desired` (the bundle updater) and reports what `report`
    /// holds as `reported.bundle`.
    pub fn follow_bundle(
        mut self,
        desired: watch::Sender<Value>,
        report: watch::Receiver<Value>,
    ) -> ShadowTask {
        desired.send_replace(self.record.desired_bundle.clone());
        self.bundle_desired = Some(desired);
        self.bundle_report = Some(report);
        self
    }

    /// Passes the desired bundle on to the updater.
    fn update_bundle(&self) {
        if let Some(desired) = &self.bundle_desired {
            desired.send_if_modified(|current| {
                let changed = *current != self.record.desired_bundle;
                if changed {
                    *current = self.record.desired_bundle.clone();
                }
                changed
            });
        }
    }

    /// Reports the plugins `plugins` holds at each report instead of the fixed list.
    pub fn follow_plugins(mut self, plugins: Arc<crate::plugins::SharedPlugins>) -> Self {
        self.plugins = plugin_reports(&plugins.current());
        self.following = Some(plugins);
        self
    }

    /// Takes the followed plugin list again; a change also changes the upgrade notice.
    fn refresh_plugins(&mut self) {
        let Some(shared) = &self.following else {
            return;
        };
        let now = plugin_reports(&shared.current());
        if now != self.plugins {
            self.plugins = now;
            self.update_upgrade();
        }
    }

    /// Recomputes the upgrade notice for the channel in effect and leaves it on the board.
    fn update_upgrade(&mut self) {
        let (notice, problems) = upgrades::available(
            &self.record.desired_releases,
            &self.record.settings.update_channel,
            env!("CARGO_PKG_VERSION"),
            &self.plugins,
        );
        for problem in problems {
            tracing::warn!("the cloud's release announcement is unreadable: {problem}");
        }
        let mut board = board(&self.health);
        if notice != board.upgrade {
            if let Some(notice) = &notice {
                tracing::info!(channel = %notice.channel, "the cloud announces a newer version");
            }
            board.upgrade = notice;
        }
    }

    /// Runs until `shutdown` or until the dispatcher closes the channel.
    pub async fn run(
        mut self,
        mut incoming: mpsc::Receiver<InboundMessage>,
        shutdown: CancellationToken,
    ) -> Result<(), ShadowError> {
        self.subscribe().await?;
        let mut state = self.link.state();
        let mut connected = matches!(*state.borrow_and_update(), LinkState::Connected { .. });
        if connected {
            // Connected before the filters were registered: send them now (see jobs.rs).
            self.subscribe().await?;
            self.request_get().await;
        }
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = state.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = matches!(*state.borrow_and_update(), LinkState::Connected { .. });
                    if now && !connected {
                        self.subscribe().await?;
                        self.request_get().await;
                    } else if !now {
                        // Answers to requests of a lost connection may never come.
                        self.synced = false;
                        self.pending_get = None;
                        self.pending_update = None;
                    }
                    connected = now;
                }
                message = incoming.recv() => {
                    let Some(message) = message else { break };
                    self.handle(&message).await;
                }
                _ = refresh.tick() => {
                    if !connected {
                        continue;
                    }
                    let expired = |p: &Option<(String, Instant)>| {
                        p.as_ref().is_some_and(|(_, at)| at.elapsed() > ANSWER_TIMEOUT)
                    };
                    if expired(&self.pending_update) {
                        self.pending_update = None;
                        self.request_get().await;
                    } else if !self.synced && (self.pending_get.is_none() || expired(&self.pending_get)) {
                        self.request_get().await;
                    } else {
                        self.refresh_plugins();
                        self.report_changes().await;
                    }
                }
            }
        }
        Ok(())
    }

    async fn subscribe(&self) -> Result<(), ShadowError> {
        for filter in self.topics.filters() {
            self.link
                .subscribe(&filter, Qos::AtLeastOnce)
                .await
                .map_err(ShadowError::Subscribe)?;
        }
        Ok(())
    }

    async fn request_get(&mut self) {
        self.synced = false;
        let token = client_token();
        let payload = json!({ "clientToken": token }).to_string();
        match self
            .link
            .publish(&self.topics.get(), payload, Qos::AtLeastOnce)
            .await
        {
            Ok(()) => self.pending_get = Some((token, Instant::now())),
            Err(e) => tracing::warn!("cannot ask for the shadow: {e}"),
        }
    }

    async fn handle(&mut self, message: &InboundMessage) {
        let Some(answer) = self.topics.classify(&message.topic) else {
            return;
        };
        let parsed: ShadowMessage = match serde_json::from_slice(&message.payload) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::warn!(topic = %message.topic, "ignoring a shadow message that does not parse: {e}");
                return;
            }
        };
        if let (Some(timestamp), Answer::GetAccepted | Answer::UpdateAccepted) =
            (parsed.timestamp, answer)
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            board(&self.health).clock_skew_s = Some(now - timestamp);
        }
        if let Some(version) = parsed.version {
            if matches!(
                answer,
                Answer::GetAccepted | Answer::UpdateAccepted | Answer::Delta
            ) {
                self.record.version = Some(self.record.version.map_or(version, |v| v.max(version)));
            }
        }
        let ours = |pending: &Option<(String, Instant)>| {
            pending
                .as_ref()
                .is_some_and(|(token, _)| parsed.client_token.as_deref() == Some(token.as_str()))
        };
        match answer {
            Answer::GetAccepted if ours(&self.pending_get) => {
                self.pending_get = None;
                // The document's version is authoritative, also when it went down (a shadow
                // deleted and created again).
                self.record.version = parsed.version;
                let state = parsed.state.unwrap_or(Value::Null);
                self.record.reported = state.get("reported").cloned().unwrap_or_else(|| json!({}));
                let desired = state
                    .get("desired")
                    .and_then(|d| d.get("config"))
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                self.record.desired_config = desired.clone();
                self.record.desired_releases = state
                    .get("desired")
                    .and_then(|d| d.get("releases"))
                    .cloned()
                    .unwrap_or(Value::Null);
                self.record.desired_bundle = state
                    .get("desired")
                    .and_then(|d| d.get("bundle"))
                    .cloned()
                    .unwrap_or(Value::Null);
                self.apply(&desired, true);
                self.update_upgrade();
                self.update_bundle();
                self.synced = true;
                self.save().await;
                self.report_changes().await;
            }
            Answer::GetRejected if ours(&self.pending_get) => {
                self.pending_get = None;
                if parsed.code == Some(404) {
                    // No shadow yet: report everything.
                    self.record.version = None;
                    self.record.reported = json!({});
                    self.synced = true;
                    self.report_changes().await;
                } else {
                    // Asked again at the next refresh after the answer timeout.
                    tracing::warn!(
                        code = parsed.code,
                        "the cloud refused the shadow: {}",
                        parsed.message.unwrap_or_default()
                    );
                    self.pending_get = Some((String::new(), Instant::now()));
                }
            }
            Answer::UpdateAccepted if ours(&self.pending_update) => {
                self.pending_update = None;
                self.save().await;
            }
            Answer::UpdateRejected if ours(&self.pending_update) => {
                self.pending_update = None;
                if parsed.code == Some(409) {
                    tracing::info!("the shadow changed meanwhile; reading it again");
                } else {
                    tracing::warn!(
                        code = parsed.code,
                        "the cloud refused the shadow report: {}",
                        parsed.message.unwrap_or_default()
                    );
                }
                // What the cloud holds is no longer known: read it, then report against it.
                self.request_get().await;
            }
            Answer::Delta => {
                let delta = parsed
                    .state
                    .as_ref()
                    .and_then(|s| s.get("config"))
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let releases = parsed.state.as_ref().and_then(|s| s.get("releases"));
                let bundle = parsed.state.as_ref().and_then(|s| s.get("bundle"));
                if delta.is_empty() && releases.is_none() && bundle.is_none() {
                    return;
                }
                if let Some(bundle) = bundle {
                    // As for releases, the delta holds only the changed parts of the object.
                    match (&mut self.record.desired_bundle, bundle) {
                        (Value::Object(current), Value::Object(patch)) => merge(current, patch),
                        (current, patch) => *current = patch.clone(),
                    }
                    self.update_bundle();
                }
                if let Some(releases) = releases {
                    // A delta names the desired value whole for a key whose reported value
                    // differs; the shadow merges objects, so the delta of `releases` holds
                    // only the changed parts.
                    match (&mut self.record.desired_releases, releases) {
                        (Value::Object(current), Value::Object(patch)) => merge(current, patch),
                        (current, patch) => *current = patch.clone(),
                    }
                }
                merge(&mut self.record.desired_config, &delta);
                self.apply(&delta, false);
                self.update_upgrade();
                self.save().await;
                if self.synced {
                    self.report_changes().await;
                }
            }
            _ => {}
        }
    }

    /// Applies desired settings. A full desired document (`full`) replaces the error list; a
    /// delta only touches the keys it names.
    fn apply(&mut self, desired: &Map<String, Value>, full: bool) {
        let mut settings = self.record.settings.clone();
        let errors = settings.apply(desired);
        if full {
            self.errors.clear();
        } else {
            for key in desired.keys() {
                self.errors
                    .retain(|k, _| k != key && !k.starts_with(&format!("{key}.")));
            }
        }
        for (key, reason) in &errors {
            tracing::warn!(setting = %key, "the cloud's desired setting is refused: {reason}");
        }
        self.errors.extend(errors);
        if settings != self.record.settings {
            tracing::info!(?settings, "settings from the cloud applied");
            self.record.settings = settings.clone();
            self.settings.send_replace(settings);
        }
    }

    /// The reported state as it should be now.
    fn reported_now(&self) -> Value {
        let devices: Vec<Value> = self
            .devices
            .list()
            .into_iter()
            .map(|d| {
                json!({
                    "id": d.id,
                    "kind": d.kind,
                    "usbId": d.usb_id,
                    "model": d.model,
                    "plugin": d.plugin,
                    // The table holds attached devices only: configured devices that opened
                    // and USB devices that are plugged in.
                    "status": "attached",
                })
            })
            .collect();
        let mut reported = json!({
            "agent": { "version": env!("CARGO_PKG_VERSION") },
            "plugins": self.plugins,
            "devices": devices,
            "config": self.record.settings,
        });
        if !self.errors.is_empty() {
            reported["configErrors"] = json!(self.errors);
        }
        if !self.record.desired_releases.is_null() {
            reported["releases"] = self.record.desired_releases.clone();
        }
        if let Some(notice) = &board(&self.health).upgrade {
            reported["upgradeAvailable"] = json!(notice);
        }
        if let Some(bundle) = &self.bundle_report {
            let bundle = bundle.borrow().clone();
            if !bundle.is_null() {
                reported["bundle"] = bundle;
            }
        }
        reported
    }

    /// Sends the differences between the reported view and the state now, if any and if no
    /// other report is in flight.
    async fn report_changes(&mut self) {
        if !self.synced || self.pending_update.is_some() {
            return;
        }
        let now = self.reported_now();
        let Some(patch) = difference(&self.record.reported, &now) else {
            return;
        };
        let token = client_token();
        let mut payload = json!({ "state": { "reported": patch }, "clientToken": token });
        if let Some(version) = self.record.version {
            payload["version"] = json!(version);
        }
        match self
            .link
            .publish(&self.topics.update(), payload.to_string(), Qos::AtLeastOnce)
            .await
        {
            Ok(()) => {
                self.record.reported = now;
                self.pending_update = Some((token, Instant::now()));
            }
            Err(e) => tracing::warn!("cannot report to the shadow: {e}"),
        }
    }

    async fn save(&self) {
        let file = self.file.clone();
        let record = self.record.clone();
        let saved = tokio::task::spawn_blocking(move || file.save(&record)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot store the shadow: {e}"),
            Err(e) => tracing::error!("storing the shadow failed: {e}"),
        }
    }
}

fn fresh_record(defaults: AgentSettings) -> ShadowRecord {
    ShadowRecord {
        version: None,
        desired_config: Map::new(),
        reported: json!({}),
        settings: defaults,
        desired_releases: Value::Null,
        desired_bundle: Value::Null,
    }
}

/// Merges `patch` into `target` as the shadow merges a document: objects key by key, `null`
/// deletes, anything else replaces.
fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match (target.get_mut(key), value) {
            (_, Value::Null) => {
                target.remove(key);
            }
            (Some(Value::Object(inner)), Value::Object(sub)) => merge(inner, sub),
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The update that turns the shadow's `old` reported state into `new`: changed and new
/// fields, objects recursively, removed fields as `null`. `None` when nothing changed.
fn difference(old: &Value, new: &Value) -> Option<Value> {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return (old != new).then(|| new.clone());
    };
    let mut patch = Map::new();
    for (key, value) in new {
        match old.get(key) {
            Some(previous) if previous == value => {}
            Some(previous) if previous.is_object() && value.is_object() => {
                if let Some(sub) = difference(previous, value) {
                    patch.insert(key.clone(), sub);
                }
            }
            _ => {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// A fresh client token: 24 hex digits, well under AWS's 64 bytes.
fn client_token() -> String {
    let bytes: [u8; 12] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().expect("an object").clone()
    }

    #[test]
    fn valid_settings_are_applied_and_invalid_ones_named_and_left_unchanged() {
        let mut settings = AgentSettings::defaults("info");
        let errors = settings.apply(&object(json!({
            "heartbeatIntervalS": 5,
            "logLevel": "debug",
            "defaultPrinter": {"label": "zebra-1", "parcel": "x", "sheet": 7},
            "scaleUnits": "stone",
            "updateChannel": "beta",
            "colour": "blue",
        })));
        assert_eq!(settings.heartbeat_interval_s, 5);
        assert_eq!(settings.log_level, "debug");
        assert_eq!(settings.default_printer.label.as_deref(), Some("zebra-1"));
        assert_eq!(settings.default_printer.sheet, None);
        assert_eq!(settings.scale_units, "g");
        assert_eq!(settings.update_channel, "beta");
        let keys: Vec<&str> = errors.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "colour",
                "defaultPrinter.parcel",
                "defaultPrinter.sheet",
                "scaleUnits"
            ]
        );
        let errors = settings.apply(&object(json!({"heartbeatIntervalS": 0})));
        assert!(errors.contains_key("heartbeatIntervalS"));
        let errors = settings.apply(&object(json!({"heartbeatIntervalS": "10"})));
        assert!(errors.contains_key("heartbeatIntervalS"));
        assert_eq!(settings.heartbeat_interval_s, 5);
    }

    #[test]
    fn the_difference_sends_changes_and_deletes_removed_fields() {
        let old = json!({"agent": {"version": "0.1.0"}, "config": {"a": 1, "b": 2}, "configErrors": {"x": "bad"}});
        let new = json!({"agent": {"version": "0.1.0"}, "config": {"a": 1, "b": 3}, "devices": []});
        assert_eq!(
            difference(&old, &new),
            Some(json!({"config": {"b": 3}, "configErrors": null, "devices": []}))
        );
        assert_eq!(difference(&new, &new), None);
    }

    #[test]
    fn deltas_merge_into_the_desired_settings() {
        let mut desired = object(json!({"defaultPrinter": {"label": "a"}, "logLevel": "info"}));
        merge(
            &mut desired,
            &object(json!({"defaultPrinter": {"sheet": "b"}, "logLevel": null})),
        );
        assert_eq!(
            Value::Object(desired),
            json!({"defaultPrinter": {"label": "a", "sheet": "b"}})
        );
    }

    #[test]
    fn shadow_topics_are_classified() {
        let topics = Topics::new("desk-1");
        assert_eq!(
            topics.classify("$aws/things/desk-1/shadow/update/delta"),
            Some(Answer::Delta)
        );
        assert_eq!(
            topics.classify("$aws/things/desk-1/shadow/get/accepted"),
            Some(Answer::GetAccepted)
        );
        assert_eq!(
            topics.classify("$aws/things/desk-1/shadow/update/documents"),
            None
        );
        assert_eq!(topics.filters().len(), 5);
    }
}
