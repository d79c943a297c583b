//! Plugin sets installed by bundle updates: where they live, the state file saying which one is
//! active, and the confirm-or-roll-back step when DeviceHub starts.
//!
//! # Layout in the data directory
//! - `bundles/<version>/`: an installed set, the signed `default.bundle.json` (and its `.sig`)
//!   with the libraries it lists. Written whole by the updater (see
//!   [`crate::cloud::bundle_update`]) before it is named here.
//! - `bundles/staging-<version>/`: a set being downloaded; never loaded.
//! - `bundles/state.json`: [`BundleState`], written atomically.
//!
//! # Which plugins load
//! The plugins folder (installed with DeviceHub) and, on top of it, the active updated set: a
//! library of the set replaces the plugins folder's file of the same name, and a plugin of the
//! set replaces the plugins folder's plugin of the same name. The set is checked as the plugins
//! folder is: its manifest must be signed by a trusted key (release keys and the config's
//! `trusted_keys`; never the development flag) and every file must match it. A set whose bundle
//! version is not newer than the plugins folder's signed default bundle is ignored: the
//! platform installer shipped newer plugins since.
//!
//! # Trying a new set
//! The updater records a finished set as `trying` and restarts DeviceHub. At the next start
//! [`load_at_start`] loads it; when every plugin its manifest lists loads from it, it becomes
//! `active` (the old one `previous`) and the outcome is `installed`. Otherwise the outcome is
//! `rolledBack` with the reason, the previous set stays active and the plugins are loaded again
//! without the refused set (its libraries stay mapped, unused, until the next restart: a loaded
//! library cannot be unloaded safely). Once a set is confirmed, sets other than the active and
//! previous ones are removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::bundle::{self, Approval, BundleManifest, FolderCheck, TrustStore};
use super::{OverlayFiles, PluginSet, RefusedPlugin, Selection};
use crate::storage::{Loaded, StateFile, Visibility};

/// The manifest name of an updated set (the default bundle).
pub const DEFAULT_MANIFEST: &str = "default.bundle.json";

/// The platform plugin libraries must be built for, as `devicehub-bundle` writes it in
/// manifests (`ARCH-OS`, e.g. `x86_64-linux`).
pub fn this_target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Where updated sets and their state live: `DATA/bundles`.
pub fn bundles_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("bundles")
}

/// The state file of updated sets.
pub fn state_file(data_dir: &Path) -> StateFile<BundleState> {
    StateFile::new(
        bundles_dir(data_dir).join("state.json"),
        "devicehub-bundles",
        1,
        Visibility::OwnerOnly,
    )
}

/// Which updated plugin sets exist and which one runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleState {
    /// The bundle version whose set is loaded on top of the plugins folder.
    #[serde(default)]
    pub active: Option<String>,
    /// The set that was active before `active`, kept for a roll back.
    #[serde(default)]
    pub previous: Option<String>,
    /// A set staged and swapped in, to be confirmed by the next start.
    #[serde(default)]
    pub trying: Option<String>,
    /// Where the set being tried was announced, for its outcome.
    #[serde(default)]
    pub trying_manifest_url: Option<String>,
    /// How the last update ended, reported in the shadow until another one starts.
    #[serde(default)]
    pub last: Option<UpdateOutcome>,
}

/// How an update ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateOutcome {
    pub version: String,
    /// Where the announcement pointed, so that the same announcement is not tried again after
    /// a final failure.
    #[serde(default)]
    pub manifest_url: String,
    pub state: OutcomeState,
    /// Why it failed or rolled back.
    #[serde(default)]
    pub error: Option<String>,
    /// A failure that may pass (the network): tried again at the next start.
    #[serde(default)]
    pub retryable: bool,
    /// Whether the outcome's event was queued, so that each outcome is announced once.
    #[serde(default)]
    pub announced: bool,
}

/// The end states of an update, as the shadow reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OutcomeState {
    Installed,
    Failed,
    RolledBack,
}

/// Reads the state file; a damaged one is moved aside (by [`StateFile`]) and read as empty,
/// which loads the plugins folder alone.
pub fn read_state(data_dir: &Path) -> BundleState {
    match state_file(data_dir).load() {
        Ok(Loaded::Present(state)) => state,
        Ok(Loaded::Absent) => BundleState::default(),
        Ok(Loaded::MovedAside { moved_to, reason }) => {
            tracing::error!(
                moved_to = %moved_to.display(),
                "the plugin bundle state was damaged ({reason}) and was moved aside; loading \
                 the plugins folder alone"
            );
            BundleState::default()
        }
        Err(e) => {
            tracing::error!(
                "cannot read the plugin bundle state: {e}; loading the plugins folder alone"
            );
            BundleState::default()
        }
    }
}

/// The trust updated sets are checked with: the release keys and the config's keys, never
/// the development flag nor files trusted by hash.
pub fn update_trust(trusted_keys: &[String]) -> Result<TrustStore, bundle::BundleError> {
    TrustStore::new(trusted_keys, Vec::new(), false)
}

/// The plugins folder's signed default bundle version, if it has a valid one.
pub fn base_bundle_version(plugins_dir: &Path, trust: &TrustStore) -> Option<semver::Version> {
    let (manifest, _) = bundle::read_verified(&plugins_dir.join(DEFAULT_MANIFEST), trust).ok()?;
    semver::Version::parse(&manifest.bundle_version).ok()
}

/// An updated set checked and ready to be loaded over the plugins folder.
#[derive(Debug)]
pub struct Overlay {
    pub version: String,
    pub dir: PathBuf,
    pub manifest: BundleManifest,
    /// The ID of the key that signed the set's manifest.
    pub key_id: String,
    /// The set's libraries that passed the check, with their SHA-256 (hex).
    pub files: Vec<(PathBuf, String)>,
    /// The set's libraries that did not, and why.
    pub refused: Vec<RefusedPlugin>,
}

/// Why an updated set cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("the set {version} has no usable manifest: {reason}")]
    Manifest { version: String, reason: String },
    #[error("the set {version} is for {target}, this DeviceHub runs on {ours}")]
    Target {
        version: String,
        target: String,
        ours: String,
    },
    #[error("the set {version} is not newer than the plugins folder's bundle {base}")]
    NotNewer { version: String, base: String },
}

/// Checks the set `version` in `bundles` against `trust`; `base` is the plugins folder's
/// bundle version, which the set must be newer than.
pub fn check_overlay(
    bundles: &Path,
    version: &str,
    trust: &TrustStore,
    base: Option<&semver::Version>,
) -> Result<Overlay, OverlayError> {
    let dir = bundles.join(version);
    let manifest_error = |reason: String| OverlayError::Manifest {
        version: version.to_string(),
        reason,
    };
    let (manifest, key_id) = bundle::read_verified(&dir.join(DEFAULT_MANIFEST), trust)
        .map_err(|e| manifest_error(e.to_string()))?;
    if manifest.bundle_version != version {
        return Err(manifest_error(format!(
            "it says it is version {}",
            manifest.bundle_version
        )));
    }
    if manifest.target != this_target() {
        return Err(OverlayError::Target {
            version: version.to_string(),
            target: manifest.target.clone(),
            ours: this_target(),
        });
    }
    let parsed = semver::Version::parse(version).map_err(|e| manifest_error(e.to_string()))?;
    if let Some(base) = base {
        if &parsed <= base {
            return Err(OverlayError::NotNewer {
                version: version.to_string(),
                base: base.to_string(),
            });
        }
    }
    let check = FolderCheck::run(&dir, trust);
    let mut files = Vec::new();
    let mut refused = Vec::new();
    for entry in &manifest.plugins {
        let path = dir.join(&entry.file);
        if !path.is_file() {
            refused.push(RefusedPlugin {
                path,
                reason: "listed in the bundle manifest but missing".to_string(),
            });
            continue;
        }
        match check.approve_file(&path, trust) {
            Ok(_) => {
                // A signed file was hashed by the check; one approved otherwise is read.
                let sha256 = match check.signed_digest(&path) {
                    Some(sha256) => Ok(sha256.to_string()),
                    None => bundle::file_digest(&path).map(|(_, sha256)| sha256),
                };
                match sha256 {
                    Ok(sha256) => files.push((path, sha256)),
                    Err(e) => refused.push(RefusedPlugin {
                        path,
                        reason: format!("cannot read it: {e}"),
                    }),
                }
            }
            Err(reason) => refused.push(RefusedPlugin { path, reason }),
        }
    }
    Ok(Overlay {
        version: version.to_string(),
        dir,
        manifest,
        key_id,
        files,
        refused,
    })
}

/// Loads the plugins folder (checked with `trust`) and the overlay on top of it (see the module
/// docs).
pub fn load_with_overlay(
    dir: &Path,
    selection: Selection,
    trust: &TrustStore,
    overlay: Option<&Overlay>,
) -> PluginSet {
    let Some(overlay) = overlay else {
        return PluginSet::load_dir(dir, selection, trust);
    };
    let approval = Approval::Signed {
        manifest: format!("{}/{DEFAULT_MANIFEST}", overlay.version),
        key_id: overlay.key_id.clone(),
        bundle_version: overlay.manifest.bundle_version.clone(),
    };
    let files = OverlayFiles {
        files: overlay
            .files
            .iter()
            .map(|(path, sha256)| (path.clone(), approval.clone(), sha256.clone()))
            .collect(),
        replaced_files: overlay
            .manifest
            .plugins
            .iter()
            .map(|e| e.file.clone())
            .collect(),
    };
    let mut set = PluginSet::load_with_overlay(dir, selection, trust, files);
    set.refused.extend(overlay.refused.iter().cloned());
    set
}

/// Whether every plugin the overlay's manifest lists was loaded from the overlay; the error
/// names what did not.
pub fn overlay_complete(set: &PluginSet, overlay: &Overlay) -> Result<(), String> {
    let mut missing = Vec::new();
    for entry in &overlay.manifest.plugins {
        let loaded = set.plugins.iter().any(|p| {
            p.path.parent() == Some(overlay.dir.as_path())
                && p.path.file_name().and_then(|n| n.to_str()) == Some(entry.file.as_str())
        });
        if !loaded {
            let reason = set
                .refused
                .iter()
                .find(|r| r.path == overlay.dir.join(&entry.file))
                .map_or("it did not load".to_string(), |r| r.reason.clone());
            missing.push(format!("{}: {reason}", entry.file));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// Loads the plugins for commands: the plugins folder and the active updated set, if it
/// passes its checks. The state is only read.
pub fn load_installed(
    dir: &Path,
    selection: Selection,
    data_dir: &Path,
    trust: &TrustStore,
) -> PluginSet {
    let state = read_state(data_dir);
    let overlay = state
        .active
        .as_deref()
        .and_then(|version| usable_overlay(dir, data_dir, version, trust));
    load_with_overlay(dir, selection, trust, overlay.as_ref())
}

/// The checked set `version`, or `None` (logged) when it cannot be used.
fn usable_overlay(
    dir: &Path,
    data_dir: &Path,
    version: &str,
    trust: &TrustStore,
) -> Option<Overlay> {
    // Updated sets are approved by trusted keys only: never by the development flag nor by
    // files trusted by hash.
    let trust = trust.keys_only();
    let base = base_bundle_version(dir, &trust);
    match check_overlay(&bundles_dir(data_dir), version, &trust, base.as_ref()) {
        Ok(overlay) => Some(overlay),
        Err(e @ OverlayError::NotNewer { .. }) => {
            tracing::info!("updated plugins are not loaded: {e}");
            None
        }
        Err(e) => {
            tracing::error!("updated plugins are not loaded: {e}");
            None
        }
    }
}

/// Removes installed sets other than the active and previous ones, so that updates do not fill
/// the disk; staging folders stay, to be resumed. A set that cannot be removed (a library the
/// platform keeps open) is left for the next time.
fn prune_sets(bundles: &Path, state: &BundleState) {
    let Ok(entries) = std::fs::read_dir(bundles) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let kept = [&state.active, &state.previous]
            .iter()
            .any(|v| v.as_deref() == Some(name.as_str()));
        let is_set =
            entry.file_type().is_ok_and(|t| t.is_dir()) && semver::Version::parse(&name).is_ok();
        if is_set && !kept {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::info!(version = %name, "an old plugin bundle set was removed"),
                Err(e) => {
                    tracing::warn!(version = %name, "cannot remove an old plugin bundle set: {e}")
                }
            }
        }
    }
}

/// Loads the plugins when the agent starts: a set being tried is confirmed or rolled back
/// (see the module docs) and the state file updated.
pub fn load_at_start(
    dir: &Path,
    selection: Selection,
    data_dir: &Path,
    trust: &TrustStore,
) -> PluginSet {
    let mut state = read_state(data_dir);
    let Some(trying) = state.trying.clone() else {
        return load_installed(dir, selection, data_dir, trust);
    };
    let overlay = usable_overlay(dir, data_dir, &trying, trust);
    let (set, failure) = match &overlay {
        Some(overlay) => {
            let set = load_with_overlay(dir, selection, trust, Some(overlay));
            let complete = overlay_complete(&set, overlay);
            (Some(set), complete.err())
        }
        None => (
            None,
            Some(format!(
                "the set {trying} could not be checked (see the log)"
            )),
        ),
    };
    let manifest_url = state.trying_manifest_url.take().unwrap_or_default();
    state.trying = None;
    let set = match failure {
        None => {
            tracing::info!(version = %trying, "the updated plugin bundle is installed");
            if state.active.as_deref() != Some(trying.as_str()) {
                state.previous = state.active.take();
            }
            state.active = Some(trying.clone());
            prune_sets(&bundles_dir(data_dir), &state);
            state.last = Some(UpdateOutcome {
                version: trying,
                manifest_url,
                state: OutcomeState::Installed,
                error: None,
                retryable: false,
                announced: false,
            });
            set.expect("a confirmed set was loaded")
        }
        Some(reason) => {
            tracing::error!(version = %trying, "the updated plugin bundle does not load, rolling back: {reason}");
            state.last = Some(UpdateOutcome {
                version: trying,
                manifest_url,
                state: OutcomeState::RolledBack,
                error: Some(reason),
                retryable: false,
                announced: false,
            });
            let previous = state
                .active
                .as_deref()
                .and_then(|version| usable_overlay(dir, data_dir, version, trust));
            load_with_overlay(dir, selection, trust, previous.as_ref())
        }
    };
    if let Err(e) = state_file(data_dir).save(&state) {
        tracing::error!("cannot record the plugin bundle state: {e}");
    }
    set
}
