//! Plugin bundle updates announced by the cloud in `desired.bundle`: download only what
//! changed, verify, stage, swap in, restart.
//!
//! # Steps
//! 1. The announcement `{"version", "manifestUrl"}` names a signed default bundle. A version not
//!    newer than the installed one (the plugins folder's bundle or the active updated set) is
//!    ignored, as is one that already failed for good.
//! 2. The manifest and its signature (`manifestUrl` + `.sig`) are downloaded into
//!    `DATA/bundles/staging-<version>/` (size-capped) and verified: signed by a trusted key
//!    (release keys and the config's `trusted_keys`, never the development flag), the announced
//!    version, this build's target.
//! 3. Each library: a file already there from an interrupted update, or an installed file with
//!    the same SHA-256, is copied; the rest are downloaded over HTTPS (the cloud's CA bundle
//!    plus the public roots) from the manifest's folder into `<file>.part`, resumed with
//!    `Range: bytes=N-` after a cut or a restart, repeated with backoff a few times, then
//!    checked (size and SHA-256) and renamed. Nothing installed changes until here.
//! 4. The staging folder is renamed to `DATA/bundles/<version>/`, the state file records it as
//!    `trying`, and DeviceHub restarts ([`RestartRequest`]); the next start confirms or rolls
//!    back (see [`crate::plugins::update`]).
//!
//! Progress and outcome are left on a watch channel the shadow task reports as
//! `reported.bundle`, and as events (`type: "bundle"`) on the upgrade events topic.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::events::{board, SharedHealth};
use super::jobs::{download_client, tls_refusal, DownloadSettings};
use crate::plugins::bundle::{self, BundleEntry, BundleManifest, MAX_MANIFEST_BYTES};
use crate::plugins::update::{
    self, read_state, state_file, BundleState, OutcomeState, UpdateOutcome, DEFAULT_MANIFEST,
};
use crate::storage::{write_atomic, Visibility};

/// The largest signature file read (a base64 Ed25519 signature is 88 bytes).
const MAX_SIGNATURE_BYTES: u64 = 4096;
/// Pauses before each repeated download of a file: a server that blinked gets a few seconds.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// How long a restart waits for the update's events to be taken by the events task.
const EVENTS_GRACE: Duration = Duration::from_secs(3);

/// What the cloud announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub version: semver::Version,
    pub manifest_url: String,
}

impl Announcement {
    /// Reads `desired.bundle`; `Ok(None)` when there is none.
    pub fn parse(value: &Value) -> Result<Option<Announcement>, String> {
        if value.is_null() {
            return Ok(None);
        }
        let version = value
            .get("version")
            .and_then(Value::as_str)
            .ok_or("bundle.version is missing or not a string")?;
        let version = semver::Version::parse(version)
            .map_err(|e| format!("bundle.version {version:?}: {e}"))?;
        let manifest_url = value
            .get("manifestUrl")
            .and_then(Value::as_str)
            .ok_or("bundle.manifestUrl is missing or not a string")?;
        if !manifest_url.starts_with("https://") {
            return Err("bundle.manifestUrl must be https".to_string());
        }
        Ok(Some(Announcement {
            version,
            manifest_url: manifest_url.to_string(),
        }))
    }

    /// The URL of a file beside the manifest.
    fn file_url(&self, file: &str) -> String {
        let base = self
            .manifest_url
            .split('?')
            .next()
            .unwrap_or(&self.manifest_url);
        let folder = base.rsplit_once('/').map_or(base, |(folder, _)| folder);
        format!("{folder}/{file}")
    }
}

/// Asks the service to stop gracefully and start again (see `service::run_until_restart`).
#[derive(Debug, Clone)]
pub struct RestartRequest {
    requested: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl RestartRequest {
    /// A request that stops the service through `stop`.
    pub fn new(stop: CancellationToken) -> RestartRequest {
        RestartRequest {
            requested: Arc::new(AtomicBool::new(false)),
            stop,
        }
    }

    /// Stops the service and marks the stop as a restart.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.stop.cancel();
    }

    /// Whether a restart was asked for.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// What the updater needs besides its channels.
#[derive(Debug, Clone)]
pub struct UpdaterSettings {
    pub data_dir: PathBuf,
    /// The plugins folder installed with DeviceHub.
    pub plugins_dir: PathBuf,
    /// The config's `[plugins] trusted_keys`.
    pub trusted_keys: Vec<String>,
    /// The cloud's CA bundle and the timeout, as for print files.
    pub download: DownloadSettings,
}

/// Why an update failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Download(String),
    #[error("{0}")]
    Storage(String),
}

impl UpdateError {
    /// A failure that may pass by itself, tried again at the next start.
    fn retryable(&self) -> bool {
        matches!(self, UpdateError::Download(_) | UpdateError::Storage(_))
    }
}

/// `reported.bundle`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleReport {
    pub version: String,
    /// The announcement's manifest URL, so that a finished update matches `desired.bundle`
    /// and ends the shadow's delta.
    pub manifest_url: String,
    /// downloading, staged, restarting, installed, failed or rolledBack.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Bytes of a bundle in place, copied or downloaded, out of its total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// The update task.
#[derive(Debug)]
pub struct BundleUpdater {
    settings: UpdaterSettings,
    trust: bundle::TrustStore,
    client: reqwest::Client,
    report: watch::Sender<Value>,
    health: SharedHealth,
    restart: RestartRequest,
    /// Announcements that failed in this run: not tried again until the next start.
    failed_here: BTreeSet<(String, String)>,
}

impl BundleUpdater {
    /// The updater; `report` receives `reported.bundle`, `restart` is asked once a set is
    /// swapped in.
    pub fn new(
        settings: UpdaterSettings,
        report: watch::Sender<Value>,
        health: SharedHealth,
        restart: RestartRequest,
    ) -> Result<BundleUpdater, UpdateError> {
        let trust = update::update_trust(&settings.trusted_keys)
            .map_err(|e| UpdateError::Refused(e.to_string()))?;
        let client = download_client(&settings.download)
            .map_err(|e| UpdateError::Download(e.to_string()))?;
        Ok(BundleUpdater {
            settings,
            trust,
            client,
            report,
            health,
            restart,
            failed_here: BTreeSet::new(),
        })
    }

    /// Follows `desired` (the shadow's `desired.bundle`) until `shutdown`.
    pub async fn run(mut self, mut desired: watch::Receiver<Value>, shutdown: CancellationToken) {
        self.report_last_outcome();
        loop {
            let wanted = desired.borrow_and_update().clone();
            match Announcement::parse(&wanted) {
                Ok(Some(announcement)) if self.should_try(&announcement) => {
                    tokio::select! {
                        // A download stopped here leaves its `.part` files to resume from.
                        _ = shutdown.cancelled() => return,
                        outcome = self.update(&announcement) => {
                            if let Err(e) = outcome {
                                self.failed(&announcement, &e);
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(problem) => {
                    tracing::warn!("the cloud's bundle announcement is unreadable: {problem}")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The installed bundle version: the active updated set's, else the plugins folder's.
    fn installed_version(&self, state: &BundleState) -> Option<semver::Version> {
        let base = update::base_bundle_version(&self.settings.plugins_dir, &self.trust);
        let active = state
            .active
            .as_deref()
            .and_then(|v| semver::Version::parse(v).ok());
        base.into_iter().chain(active).max()
    }

    fn should_try(&self, announcement: &Announcement) -> bool {
        let state = read_state(&self.settings.data_dir);
        if state.trying.is_some() {
            return false;
        }
        if self
            .installed_version(&state)
            .is_some_and(|installed| announcement.version <= installed)
        {
            tracing::debug!(version = %announcement.version, "the announced plugin bundle is installed already");
            return false;
        }
        let key = (
            announcement.version.to_string(),
            announcement.manifest_url.clone(),
        );
        if self.failed_here.contains(&key) {
            return false;
        }
        // A failure that cannot pass by itself (a refused signature, a tampered file, a set
        // that did not load) is not tried again until the cloud announces something else.
        !state.last.as_ref().is_some_and(|last| {
            last.version == key.0
                && last.manifest_url == key.1
                && last.state != OutcomeState::Installed
                && !last.retryable
        })
    }

    /// Reports the outcome the state file holds, with an event when it is new.
    fn report_last_outcome(&mut self) {
        let mut state = read_state(&self.settings.data_dir);
        let Some(last) = state.last.clone() else {
            return;
        };
        let report = BundleReport {
            version: last.version.clone(),
            manifest_url: last.manifest_url.clone(),
            state: match last.state {
                OutcomeState::Installed => "installed",
                OutcomeState::Failed => "failed",
                OutcomeState::RolledBack => "rolledBack",
            },
            progress: None,
            error: last.error.clone(),
        };
        self.publish(&report, !last.announced);
        if !last.announced {
            if let Some(last) = state.last.as_mut() {
                last.announced = true;
            }
            if let Err(e) = state_file(&self.settings.data_dir).save(&state) {
                tracing::error!("cannot record the plugin bundle state: {e}");
            }
        }
    }

    /// Leaves `report` for the shadow and, with `event`, queues it as an event.
    fn publish(&self, report: &BundleReport, event: bool) {
        let value = serde_json::to_value(report).unwrap_or(Value::Null);
        self.report.send_replace(value.clone());
        if event {
            let mut event = json!({
                "timestamp": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                "type": "bundle",
                "event": format!("bundle-{}", report.state),
            });
            if let (Value::Object(event), Value::Object(report)) = (&mut event, value) {
                event.extend(report);
            }
            board(&self.health).bundle_events.push(event);
        }
    }

    fn failed(&mut self, announcement: &Announcement, error: &UpdateError) {
        let version = announcement.version.to_string();
        tracing::error!(%version, "the plugin bundle update failed: {error}");
        self.failed_here
            .insert((version.clone(), announcement.manifest_url.clone()));
        let mut state = read_state(&self.settings.data_dir);
        state.last = Some(UpdateOutcome {
            version: version.clone(),
            manifest_url: announcement.manifest_url.clone(),
            state: OutcomeState::Failed,
            error: Some(error.to_string()),
            retryable: error.retryable(),
            announced: true,
        });
        if let Err(e) = state_file(&self.settings.data_dir).save(&state) {
            tracing::error!("cannot record the plugin bundle state: {e}");
        }
        if !error.retryable() {
            // Nothing of a refused bundle is worth keeping; a network failure keeps its
            // partial files to resume from.
            let staging =
                update::bundles_dir(&self.settings.data_dir).join(format!("staging-{version}"));
            if let Err(e) = std::fs::remove_dir_all(&staging) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("cannot remove {}: {e}", staging.display());
                }
            }
        }
        self.publish(
            &BundleReport {
                version,
                manifest_url: announcement.manifest_url.clone(),
                state: "failed",
                progress: None,
                error: Some(error.to_string()),
            },
            true,
        );
    }

    /// Steps 2 to 4 of the module docs.
    async fn update(&mut self, announcement: &Announcement) -> Result<(), UpdateError> {
        let version = announcement.version.to_string();
        tracing::info!(%version, "downloading the announced plugin bundle");
        let bundles = update::bundles_dir(&self.settings.data_dir);
        let staging = bundles.join(format!("staging-{version}"));
        let storage = |what: &str, e: &dyn std::fmt::Display| {
            UpdateError::Storage(format!("cannot {what}: {e}"))
        };
        tokio::fs::create_dir_all(&staging)
            .await
            .map_err(|e| storage("create the staging folder", &e))?;
        let mut report = BundleReport {
            version: version.clone(),
            manifest_url: announcement.manifest_url.clone(),
            state: "downloading",
            progress: Some(Progress {
                bytes_done: 0,
                bytes_total: 0,
            }),
            error: None,
        };
        self.publish(&report, true);

        let manifest_path = staging.join(DEFAULT_MANIFEST);
        let manifest_bytes = self
            .fetch_small(&announcement.manifest_url, MAX_MANIFEST_BYTES)
            .await?;
        let signature = self
            .fetch_small(
                &format!("{}{}", announcement.manifest_url, bundle::SIGNATURE_SUFFIX),
                MAX_SIGNATURE_BYTES,
            )
            .await?;
        write_atomic(&manifest_path, &manifest_bytes, Visibility::Default)
            .map_err(|e| storage("write the manifest", &e))?;
        write_atomic(
            &bundle::signature_path(&manifest_path),
            &signature,
            Visibility::Default,
        )
        .map_err(|e| storage("write the signature", &e))?;
        let manifest = self.verify_manifest(&manifest_path, &version)?;

        let total: u64 = manifest.plugins.iter().map(|e| e.size).sum();
        let mut done = 0u64;
        report.progress = Some(Progress {
            bytes_done: 0,
            bytes_total: total,
        });
        self.publish(&report, false);
        for entry in &manifest.plugins {
            // Hashing and copying libraries blocks: off the async workers.
            let (data_dir, plugins_dir) = (
                self.settings.data_dir.clone(),
                self.settings.plugins_dir.clone(),
            );
            let (wanted, dest) = (entry.clone(), staging.join(&entry.file));
            let placed = tokio::task::spawn_blocking(move || {
                place_locally(&data_dir, &plugins_dir, &wanted, &dest)
            })
            .await
            .map_err(|e| storage("check the installed plugins", &e))?
            .map_err(|e| storage("copy a plugin", &e))?;
            if placed {
                done += entry.size;
                continue;
            }
            let url = announcement.file_url(&entry.file);
            self.download(&url, &staging, entry, &mut report, done)
                .await?;
            done += entry.size;
        }
        report.progress = Some(Progress {
            bytes_done: done,
            bytes_total: total,
        });
        report.state = "staged";
        self.publish(&report, true);

        // The swap: nothing installed changed until here.
        let target = bundles.join(&version);
        if target.exists() {
            // A set of this version that never became active (a roll back, an older try).
            std::fs::remove_dir_all(&target).map_err(|e| storage("replace an old set", &e))?;
        }
        for entry in std::fs::read_dir(&staging)
            .map_err(|e| storage("list the staging folder", &e))?
            .flatten()
        {
            // Left-over partial files of an earlier manifest are not part of the set.
            if entry.file_name().to_string_lossy().ends_with(".part") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        std::fs::rename(&staging, &target).map_err(|e| storage("swap the set in", &e))?;
        crate::storage::atomic::sync_dir(&bundles)
            .map_err(|e| storage("sync the bundles folder", &e))?;
        let mut state = read_state(&self.settings.data_dir);
        state.trying = Some(version.clone());
        state.trying_manifest_url = Some(announcement.manifest_url.clone());
        state.last = None;
        state_file(&self.settings.data_dir)
            .save(&state)
            .map_err(|e| storage("record the new set", &e))?;
        report.state = "restarting";
        self.publish(&report, true);
        tracing::info!(%version, "the plugin bundle is staged; restarting to load it");
        self.wait_for_events_taken().await;
        self.restart.request();
        Ok(())
    }

    /// Gives the events task a moment to take the update's events off the board before the
    /// restart stops it (its outbox is in memory); bounded, so a stopped link never holds the
    /// restart back.
    async fn wait_for_events_taken(&self) {
        let deadline = tokio::time::Instant::now() + EVENTS_GRACE;
        while !board(&self.health).bundle_events.is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Checks the staged manifest: signature, version, target.
    fn verify_manifest(&self, path: &Path, version: &str) -> Result<BundleManifest, UpdateError> {
        let (manifest, key) = bundle::read_verified(path, &self.trust)
            .map_err(|e| UpdateError::Refused(format!("the bundle manifest is refused: {e}")))?;
        if manifest.bundle_version != version {
            return Err(UpdateError::Refused(format!(
                "the manifest is version {}, the announcement {version}",
                manifest.bundle_version
            )));
        }
        let ours = update::this_target();
        if manifest.target != ours {
            return Err(UpdateError::Refused(format!(
                "the bundle is for {}, this DeviceHub runs on {ours}",
                manifest.target
            )));
        }
        tracing::info!(%version, key = %key, plugins = manifest.plugins.len(), "the bundle manifest is signed by a trusted key");
        Ok(manifest)
    }

    /// A small file (the manifest, its signature) into memory, within `max` bytes.
    async fn fetch_small(&self, url: &str, max: u64) -> Result<Vec<u8>, UpdateError> {
        let mut delays = RETRY_DELAYS.iter();
        loop {
            let attempt = async {
                let mut response = self.client.get(url).send().await.map_err(request_failure)?;
                let status = response.status();
                if !status.is_success() {
                    return Err(status_failure(status, url));
                }
                let mut bytes = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(request_failure)? {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() as u64 > max {
                        return Err(Attempt::Final(UpdateError::Refused(format!(
                            "{} is larger than {max} bytes",
                            url_path(url)
                        ))));
                    }
                }
                Ok(bytes)
            };
            match attempt.await {
                Ok(bytes) => return Ok(bytes),
                Err(Attempt::Transient(e)) => match delays.next() {
                    Some(delay) => {
                        tracing::info!("{e}; trying again");
                        tokio::time::sleep(*delay).await;
                    }
                    None => return Err(e),
                },
                Err(Attempt::Final(e)) => return Err(e),
            }
        }
    }

    /// Downloads one library into `staging`, resuming its `.part` file, then checks it.
    async fn download(
        &self,
        url: &str,
        staging: &Path,
        entry: &BundleEntry,
        report: &mut BundleReport,
        done_before: u64,
    ) -> Result<(), UpdateError> {
        let part = staging.join(format!("{}.part", entry.file));
        let mut delays = RETRY_DELAYS.iter();
        loop {
            match self
                .download_attempt(url, &part, entry, report, done_before)
                .await
            {
                Ok(()) => break,
                Err(Attempt::Transient(e)) => match delays.next() {
                    Some(delay) => {
                        tracing::info!(file = %entry.file, "{e}; resuming");
                        tokio::time::sleep(*delay).await;
                    }
                    None => return Err(e),
                },
                Err(Attempt::Final(e)) => return Err(e),
            }
        }
        let (checked, wanted) = (part.clone(), entry.clone());
        let intact = tokio::task::spawn_blocking(move || matches_entry(&checked, &wanted))
            .await
            .unwrap_or(false);
        if !intact {
            let _ = std::fs::remove_file(&part);
            return Err(UpdateError::Refused(format!(
                "{} does not match the signed manifest (size or SHA-256 differ): refused",
                entry.file
            )));
        }
        std::fs::rename(&part, staging.join(&entry.file))
            .map_err(|e| UpdateError::Storage(format!("cannot keep {}: {e}", entry.file)))?;
        tracing::info!(file = %entry.file, bytes = entry.size, "plugin downloaded and verified");
        Ok(())
    }

    /// One request for the rest of `part`.
    async fn download_attempt(
        &self,
        url: &str,
        part: &Path,
        entry: &BundleEntry,
        report: &mut BundleReport,
        done_before: u64,
    ) -> Result<(), Attempt> {
        let storage = |e: std::io::Error| {
            Attempt::Final(UpdateError::Storage(format!(
                "cannot write {}: {e}",
                part.display()
            )))
        };
        let mut have = tokio::fs::metadata(part).await.map_or(0, |m| m.len());
        if have > entry.size {
            have = 0;
        }
        if have == entry.size && have > 0 {
            return Ok(());
        }
        let mut request = self.client.get(url);
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut response = request.send().await.map_err(request_failure)?;
        let status = response.status();
        let append = match status.as_u16() {
            206 => {
                let range_start = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if range_start != Some(have) {
                    // Not the part asked for: start over.
                    let _ = tokio::fs::remove_file(part).await;
                    return Err(Attempt::Transient(UpdateError::Download(format!(
                        "the server sent another range of {}",
                        entry.file
                    ))));
                }
                true
            }
            200 => {
                have = 0;
                false
            }
            416 => {
                let _ = tokio::fs::remove_file(part).await;
                return Err(Attempt::Transient(UpdateError::Download(format!(
                    "the server refused the range of {}",
                    entry.file
                ))));
            }
            _ => return Err(status_failure(status, url)),
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .await
            .map_err(storage)?;
        let outcome = async {
            while let Some(chunk) = response.chunk().await.map_err(request_failure)? {
                if have + chunk.len() as u64 > entry.size {
                    return Err(Attempt::Final(UpdateError::Refused(format!(
                        "{} is larger than the signed manifest says ({} bytes): refused",
                        entry.file, entry.size
                    ))));
                }
                file.write_all(&chunk).await.map_err(storage)?;
                have += chunk.len() as u64;
                if let Some(progress) = report.progress.as_mut() {
                    progress.bytes_done = done_before + have;
                }
                self.publish(report, false);
            }
            Ok(())
        }
        .await;
        // What arrived is kept (synced) for the next attempt, also after a cut.
        file.flush().await.map_err(storage)?;
        file.sync_all().await.map_err(storage)?;
        if matches!(outcome, Err(Attempt::Final(_))) {
            let _ = tokio::fs::remove_file(part).await;
        }
        outcome?;
        if have < entry.size {
            return Err(Attempt::Transient(UpdateError::Download(format!(
                "the download of {} ended after {have} of {} bytes",
                entry.file, entry.size
            ))));
        }
        Ok(())
    }
}

/// How one request failed.
enum Attempt {
    /// Worth another try.
    Transient(UpdateError),
    Final(UpdateError),
}

/// A request that failed before or while its body arrived: a refused certificate is final,
/// network trouble transient.
fn request_failure(e: reqwest::Error) -> Attempt {
    let refused = tls_refusal(&e);
    let failure = UpdateError::Download(format!("download failed: {}", e.without_url()));
    if refused {
        Attempt::Final(failure)
    } else {
        Attempt::Transient(failure)
    }
}

fn status_failure(status: reqwest::StatusCode, url: &str) -> Attempt {
    let failure = UpdateError::Download(format!(
        "the server answered {status} for {}",
        url_path(url)
    ));
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Attempt::Transient(failure)
    } else {
        Attempt::Final(failure)
    }
}

/// The URL without its query (which may hold a signature).
fn url_path(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Puts the entry's library into `dest` without downloading it, when possible: `dest` is
/// there already (an interrupted update), or an installed file has the same size and SHA-256.
fn place_locally(
    data_dir: &Path,
    plugins_dir: &Path,
    entry: &BundleEntry,
    dest: &Path,
) -> std::io::Result<bool> {
    if matches_entry(dest, entry) {
        return Ok(true);
    }
    let mut folders = vec![plugins_dir.to_path_buf()];
    if let Some(active) = read_state(data_dir).active {
        folders.push(update::bundles_dir(data_dir).join(active));
    }
    for folder in folders {
        let Ok(files) = std::fs::read_dir(&folder) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            let same_size = file
                .metadata()
                .is_ok_and(|m| m.is_file() && m.len() == entry.size);
            if same_size && matches_entry(&path, entry) {
                copy_file(&path, dest, entry)?;
                tracing::info!(file = %entry.file, "plugin unchanged: copied from the installed set");
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Whether `path` has the entry's size and SHA-256.
fn matches_entry(path: &Path, entry: &BundleEntry) -> bool {
    bundle::file_digest(path)
        .is_ok_and(|(size, sha256)| size == entry.size && sha256 == entry.sha256)
}

/// Copies `from` to `to` through a temporary file in the same folder, checking the copy.
fn copy_file(from: &Path, to: &Path, entry: &BundleEntry) -> std::io::Result<()> {
    let bytes = std::fs::read(from)?;
    write_atomic(to, &bytes, Visibility::Default).map_err(std::io::Error::other)?;
    if !matches_entry(to, entry) {
        let _ = std::fs::remove_file(to);
        return Err(std::io::Error::other(format!(
            "{} changed while it was copied",
            from.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn updater(data_dir: &Path) -> BundleUpdater {
        let (report, _) = watch::channel(Value::Null);
        BundleUpdater::new(
            UpdaterSettings {
                data_dir: data_dir.to_path_buf(),
                plugins_dir: data_dir.join("no-plugins"),
                trusted_keys: Vec::new(),
                download: DownloadSettings::default(),
            },
            report,
            SharedHealth::default(),
            RestartRequest::new(CancellationToken::new()),
        )
        .expect("updater")
    }

    fn announcement(version: &str) -> Announcement {
        Announcement {
            version: semver::Version::parse(version).expect("version"),
            manifest_url: format!("https://cloud/bundles/{version}/default.bundle.json"),
        }
    }

    fn failed(version: &str, retryable: bool) -> Option<UpdateOutcome> {
        Some(UpdateOutcome {
            version: version.into(),
            manifest_url: announcement(version).manifest_url,
            state: OutcomeState::Failed,
            error: Some("no".into()),
            retryable,
            announced: true,
        })
    }

    #[test]
    fn only_newer_announcements_that_did_not_fail_for_good_are_tried() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut updater = updater(dir.path());
        let save = |state: &BundleState| state_file(dir.path()).save(state).expect("save");
        std::fs::create_dir_all(update::bundles_dir(dir.path())).expect("bundles dir");

        // Nothing installed: anything is newer.
        assert!(updater.should_try(&announcement("1.0.0")));
        save(&BundleState {
            active: Some("2.0.0".into()),
            ..BundleState::default()
        });
        assert!(!updater.should_try(&announcement("2.0.0")));
        assert!(!updater.should_try(&announcement("1.5.0")));
        assert!(updater.should_try(&announcement("3.0.0")));

        // A refusal holds until the cloud announces something else; a network failure is
        // tried again by a new run.
        save(&BundleState {
            active: Some("2.0.0".into()),
            last: failed("3.0.0", false),
            ..BundleState::default()
        });
        assert!(!updater.should_try(&announcement("3.0.0")));
        let mut moved = announcement("3.0.0");
        moved.manifest_url.push_str("?fixed");
        assert!(updater.should_try(&moved));
        save(&BundleState {
            active: Some("2.0.0".into()),
            last: failed("3.0.0", true),
            ..BundleState::default()
        });
        assert!(updater.should_try(&announcement("3.0.0")));
        updater
            .failed_here
            .insert(("3.0.0".into(), announcement("3.0.0").manifest_url));
        assert!(!updater.should_try(&announcement("3.0.0")));

        // A set waiting for the restart holds every other update back.
        save(&BundleState {
            active: Some("2.0.0".into()),
            trying: Some("4.0.0".into()),
            ..BundleState::default()
        });
        assert!(!updater.should_try(&announcement("5.0.0")));
    }

    #[test]
    fn announcements_are_read_and_checked() {
        let parsed = Announcement::parse(&json!({
            "version": "2.0.0", "manifestUrl": "https://h:1/bundles/2.0.0/default.bundle.json?x=1"
        }))
        .expect("valid")
        .expect("present");
        assert_eq!(parsed.version, semver::Version::new(2, 0, 0));
        assert_eq!(
            parsed.file_url("liba.so"),
            "https://h:1/bundles/2.0.0/liba.so"
        );
        assert_eq!(Announcement::parse(&Value::Null), Ok(None));
        for bad in [
            json!({"version": "two", "manifestUrl": "https://h/x"}),
            json!({"version": "2.0.0", "manifestUrl": "http://h/x"}),
            json!({"version": "2.0.0"}),
        ] {
            assert!(Announcement::parse(&bad).is_err(), "{bad}");
        }
    }
}
