//! Finding, checking and loading driver plugins, and choosing a plugin for a device.
//!
//! Every library in the plugins folder is tried on its own; one bad file refuses itself with a
//! one-line reason and never stops the others (or the host) from loading.
//!
//! # Conflict rule
//! When several loaded plugins claim the same USB vendor/product ID, the device goes to:
//! 1. the plugin a device-table entry in the config file names, if any;
//! 2. otherwise the plugin with the better [`SupportLevel`] for that model;
//! 3. otherwise the plugin whose name sorts first.
//!
//! Each conflict is logged once at load time and listed by `devicehub plugins`.
//!
//! When two libraries carry the same plugin name, the higher plugin version is kept and the
//! other refused as a duplicate; on equal versions the file whose name sorts first is kept.
//!
//! # Verification
//! No library is opened before [`bundle::FolderCheck::approve_file`] approves it (signed by a
//! trusted key, trusted by its hash, or unsigned under the development flag); a refusal is a
//! [`RefusedPlugin`] with the reason, like any other. Each [`LoadedPlugin`] records its
//! [`Approval`]. Only the bundle tool, which loads libraries to learn what it is about to sign,
//! uses [`PluginSet::load_dir_unverified`].
//!
//! # Rescans
//! [`PluginSet::rescan`] makes the next set from the current one: plugins already loaded stay
//! (a library cannot be unloaded safely while devices use it), new approved files load, and a
//! loaded plugin's file that changed is reported as needing a restart. [`SharedPlugins`] holds
//! the current set for everything that runs, and is swapped whole on a rescan.

pub mod bundle;
pub mod folder_watch;
mod library_check;
pub mod trusted_files;
pub mod update;

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use abi_stable::library::{lib_header_from_path, LibraryError};
pub use bundle::Approval;
use bundle::{FolderCheck, TrustStore};
use devicehub_plugin_api::{
    DeviceKind, Ieee1284Match, PluginManifest, PluginMod_Ref, SupportLevel, API_FEATURES,
    API_VERSION,
};
pub use library_check::{check_library_bytes, check_library_file, LibraryCheckError};

/// The file name extension of shared libraries on this platform.
pub const LIBRARY_EXTENSION: &str = std::env::consts::DLL_EXTENSION;

/// A plugin that loaded and passed every check.
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub manifest: PluginManifest,
    pub version: semver::Version,
    pub module: PluginMod_Ref,
    /// Why this file was allowed to load.
    pub approval: Approval,
    /// SHA-256 (hex) of the file when it was checked: a rescan that finds other bytes at the
    /// same path reports that a restart is needed, since the loaded code cannot be swapped.
    pub sha256: String,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.manifest.name.as_str())
            .field("version", &self.version)
            .field("path", &self.path)
            .field("approval", &self.approval)
            .finish()
    }
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        self.manifest.name.as_str()
    }
}

/// A file in the plugins folder that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedPlugin {
    pub path: PathBuf,
    /// One line a user can act on.
    pub reason: String,
}

/// Which plugin drives a USB ID, and with which model row.
#[derive(Debug, Clone)]
pub struct UsbBinding {
    pub plugin: Arc<LoadedPlugin>,
    pub model: String,
    pub profile: String,
    pub support: SupportLevel,
}

/// Two or more plugins claiming one USB ID, and which one won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbConflict {
    pub vendor_id: u16,
    pub product_id: u16,
    pub winner: String,
    pub losers: Vec<String>,
}

/// The plugins loaded from a folder, and the registry from USB IDs to plugins built from them.
#[derive(Debug, Default)]
pub struct PluginSet {
    pub dir: PathBuf,
    /// How files were picked out of `dir`; a rescan picks the same way.
    pub selection: Selection,
    /// Whether the development flag was on when the set was loaded: said at start-up, in the
    /// status and in every heartbeat.
    pub allow_unsigned: bool,
    pub plugins: Vec<Arc<LoadedPlugin>>,
    pub refused: Vec<RefusedPlugin>,
    pub conflicts: Vec<UsbConflict>,
    /// The updated bundle set laid over the folder, if any; a rescan keeps it.
    pub overlay: OverlayFiles,
    usb: BTreeMap<(u16, u16), Vec<UsbBinding>>,
}

/// The libraries of an updated bundle set (see [`update`]), each already approved by the set's
/// own signed manifest, and the plugins folder's files they replace.
#[derive(Debug, Clone, Default)]
pub struct OverlayFiles {
    /// Each library with its approval and SHA-256 (hex), as the set's check found them.
    pub files: Vec<(PathBuf, bundle::Approval, String)>,
    /// File names in the plugins folder that are not loaded because the set replaces them.
    pub replaced_files: std::collections::BTreeSet<String>,
}

/// How library files are picked out of the plugins folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Selection {
    /// Every shared library in the folder (an installed plugins folder).
    #[default]
    AllLibraries,
    /// Only libraries whose name starts with `devicehub_driver_` (or `libdevicehub_driver_`):
    /// used when the folder is a build output directory that holds other libraries too.
    DriversOnly,
}

impl PluginSet {
    /// Loads every plugin in `dir` that `trust` approves; the others are refused with the
    /// reason. A missing folder gives an empty set and one refusal naming it.
    pub fn load_dir(dir: &Path, selection: Selection, trust: &TrustStore) -> PluginSet {
        PluginSet::load_with_overlay(dir, selection, trust, OverlayFiles::default())
    }

    /// [`PluginSet::load_dir`] with an updated bundle set laid over the folder: the set's
    /// libraries load too, and replace the folder's files of the same name and the folder's
    /// plugins of the same name.
    pub fn load_with_overlay(
        dir: &Path,
        selection: Selection,
        trust: &TrustStore,
        overlay: OverlayFiles,
    ) -> PluginSet {
        let empty = PluginSet {
            dir: dir.to_path_buf(),
            selection,
            overlay,
            ..PluginSet::default()
        };
        empty.rescan(trust).0
    }

    /// Loads every library in `dir` without checking signatures or hashes. Only for the bundle
    /// tool, which loads libraries to learn their names and versions before it signs them; the
    /// plugins are marked [`Approval::NotChecked`].
    pub fn load_dir_unverified(dir: &Path, selection: Selection) -> PluginSet {
        let mut set = PluginSet {
            dir: dir.to_path_buf(),
            selection,
            ..PluginSet::default()
        };
        let files = match set.candidates() {
            Ok(files) => files,
            Err(refusal) => {
                set.refused.push(refusal);
                return set;
            }
        };
        let mut loaded = Vec::new();
        for path in files {
            let digest = bundle::file_digest(&path)
                .map(|(_, sha256)| sha256)
                .map_err(|e| format!("cannot read it: {e}"));
            match digest.and_then(|sha256| load_plugin(&path, Approval::NotChecked, sha256)) {
                Ok(plugin) => loaded.push(plugin),
                Err(reason) => set.refused.push(RefusedPlugin { path, reason }),
            }
        }
        set.add_deduplicated(loaded);
        set.build_registry();
        set
    }

    /// The library files of the folder, sorted, or the refusal of the folder itself.
    fn candidates(&self) -> Result<Vec<PathBuf>, RefusedPlugin> {
        let entries = std::fs::read_dir(&self.dir).map_err(|err| RefusedPlugin {
            path: self.dir.clone(),
            reason: format!("cannot read the plugins folder: {err}"),
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| is_candidate(p, self.selection))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_none_or(|n| !self.overlay.replaced_files.contains(n))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// The set the folder gives now, built from this one: loaded plugins stay loaded (their
    /// `Arc`s are shared), approved new files load, everything else is refused with its reason
    /// (manifest problems included, under the manifest's path). Returns the new set and the
    /// plugins it added. Loading blocks (file reads, dlopen): call it off the async workers.
    pub fn rescan(&self, trust: &TrustStore) -> (PluginSet, Vec<Arc<LoadedPlugin>>) {
        let mut next = PluginSet {
            dir: self.dir.clone(),
            selection: self.selection,
            allow_unsigned: trust.allow_unsigned,
            overlay: self.overlay.clone(),
            ..PluginSet::default()
        };
        let files = match next.candidates() {
            Ok(files) => files,
            Err(refusal) => {
                next.refused.push(refusal);
                next.plugins = self.plugins.clone();
                next.build_registry();
                return (next, Vec::new());
            }
        };
        let check = FolderCheck::run(&self.dir, trust);
        for problem in &check.manifest_problems {
            next.refused.push(RefusedPlugin {
                path: problem.path.clone(),
                reason: problem.reason.clone(),
            });
        }
        let mut loaded = Vec::new();
        // The updated set's libraries first: they were approved by the set's own signed
        // manifest, and their plugins replace the folder's plugins of the same name.
        for (path, approval, sha256) in &self.overlay.files {
            if self.plugins.iter().any(|p| &p.path == path) {
                continue;
            }
            match load_plugin(path, approval.clone(), sha256.clone()) {
                Ok(plugin) => loaded.push(plugin),
                Err(reason) => next.refused.push(RefusedPlugin {
                    path: path.clone(),
                    reason,
                }),
            }
        }
        let from_overlay: std::collections::BTreeSet<String> = loaded
            .iter()
            .map(|p| p.name().to_string())
            .chain(
                self.plugins
                    .iter()
                    .filter(|p| self.overlay.files.iter().any(|(path, ..)| *path == p.path))
                    .map(|p| p.name().to_string()),
            )
            .collect();
        // Signed files were hashed by the check; others are read here.
        let digest = |path: &Path| match check.signed_digest(path) {
            Some(sha256) => Ok(sha256.to_string()),
            None => bundle::file_digest(path)
                .map(|(_, sha256)| sha256)
                .map_err(|e| format!("cannot read it: {e}")),
        };
        for path in files {
            if let Some(kept) = self.plugins.iter().find(|p| p.path == path) {
                // dlopen of a path already open returns the library already loaded, so a
                // changed file at the same path can only take effect after a restart.
                match digest(&path) {
                    Ok(sha256) if sha256 != kept.sha256 => {
                        let version = check
                            .manifest_entry(&path)
                            .map(|entry| format!("version {}", entry.version))
                            .unwrap_or_else(|| "the new file".to_string());
                        next.refused.push(RefusedPlugin {
                            path: path.clone(),
                            reason: format!(
                                "changed since plugin '{}' {} was loaded from it; restart \
                                 DeviceHub to use {version}",
                                kept.name(),
                                kept.version
                            ),
                        });
                    }
                    _ => {}
                }
                continue;
            }
            let outcome = check
                .approve_file(&path, trust)
                .and_then(|approval| load_plugin(&path, approval, digest(&path)?));
            match outcome {
                Ok(plugin) if from_overlay.contains(plugin.name()) => {
                    tracing::info!(
                        path = %plugin.path.display(),
                        "plugin replaced by an updated bundle"
                    );
                }
                Ok(plugin) => match self.plugin(plugin.name()) {
                    // A second file of a plugin already loaded: its code cannot replace the
                    // running one.
                    Some(running) => next.refused.push(RefusedPlugin {
                        reason: format!(
                            "plugin '{}' {} is already loaded from {}; restart DeviceHub to use \
                             version {}",
                            running.name(),
                            running.version,
                            running.path.display(),
                            plugin.version
                        ),
                        path,
                    }),
                    None => loaded.push(plugin),
                },
                Err(reason) => next.refused.push(RefusedPlugin { path, reason }),
            }
        }
        next.add_deduplicated(loaded);
        let added: Vec<Arc<LoadedPlugin>> = next.plugins.clone();
        for plugin in &added {
            tracing::info!(
                plugin = plugin.name(),
                version = %plugin.version,
                path = %plugin.path.display(),
                approval = %plugin.approval,
                "plugin loaded"
            );
        }
        next.plugins.extend(self.plugins.iter().cloned());
        next.plugins.sort_by(|a, b| a.name().cmp(b.name()));
        next.build_registry();
        (next, added)
    }

    /// Plugins loaded only because of the development flag.
    pub fn unsigned_count(&self) -> usize {
        self.plugins
            .iter()
            .filter(|p| p.approval == Approval::Unsigned)
            .count()
    }

    /// Keeps one plugin per name (see the module docs), refusing the others.
    fn add_deduplicated(&mut self, loaded: Vec<LoadedPlugin>) {
        let mut by_name: BTreeMap<String, LoadedPlugin> = BTreeMap::new();
        for plugin in loaded {
            let name = plugin.name().to_string();
            match by_name.remove(&name) {
                None => {
                    by_name.insert(name, plugin);
                }
                Some(kept) => {
                    let (keep, drop) = if plugin.version > kept.version {
                        (plugin, kept)
                    } else {
                        (kept, plugin)
                    };
                    let reason = format!(
                        "duplicate of plugin '{}' {} from {}",
                        keep.name(),
                        keep.version,
                        keep.path.display()
                    );
                    tracing::warn!(path = %drop.path.display(), "plugin refused: {reason}");
                    self.refused.push(RefusedPlugin {
                        path: drop.path.clone(),
                        reason,
                    });
                    by_name.insert(name, keep);
                }
            }
        }
        self.plugins = by_name.into_values().map(Arc::new).collect();
    }

    fn build_registry(&mut self) {
        self.usb.clear();
        for plugin in &self.plugins {
            for model in plugin.manifest.usb_models.iter() {
                self.usb
                    .entry((model.vendor_id, model.product_id))
                    .or_default()
                    .push(UsbBinding {
                        plugin: plugin.clone(),
                        model: model.model.to_string(),
                        profile: model.profile.to_string(),
                        support: model.support,
                    });
            }
        }
        self.conflicts.clear();
        for ((vid, pid), bindings) in self.usb.iter_mut() {
            // Best first: better support, then plugin name.
            bindings.sort_by(|a, b| {
                b.support
                    .cmp(&a.support)
                    .then_with(|| a.plugin.name().cmp(b.plugin.name()))
            });
            if bindings.len() > 1 {
                let conflict = UsbConflict {
                    vendor_id: *vid,
                    product_id: *pid,
                    winner: bindings[0].plugin.name().to_string(),
                    losers: bindings[1..]
                        .iter()
                        .map(|b| b.plugin.name().to_string())
                        .collect(),
                };
                tracing::warn!(
                    usb_id = %format_usb_id(*vid, *pid),
                    winner = %conflict.winner,
                    losers = ?conflict.losers,
                    "several plugins claim this USB ID; the winner drives it unless the config names another"
                );
                self.conflicts.push(conflict);
            }
        }
    }

    /// The plugin named `name`.
    pub fn plugin(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.iter().find(|p| p.name() == name)
    }

    /// The binding that drives `vendor_id:product_id`, following the conflict rule; `preferred`
    /// names a plugin from the config file's device table.
    pub fn lookup_usb(
        &self,
        vendor_id: u16,
        product_id: u16,
        preferred: Option<&str>,
    ) -> Option<&UsbBinding> {
        let bindings = self.usb.get(&(vendor_id, product_id))?;
        preferred
            .and_then(|name| bindings.iter().find(|b| b.plugin.name() == name))
            .or_else(|| bindings.first())
    }

    /// Every USB ID in the registry with the plugin that drives it.
    pub fn usb_ids(&self) -> impl Iterator<Item = ((u16, u16), &UsbBinding)> {
        self.usb
            .iter()
            .filter_map(|(id, bindings)| bindings.first().map(|b| (*id, b)))
    }

    /// The plugin and profile for a printer identified only by its IEEE-1284 device ID.
    ///
    /// When rules of several plugins match, the most specific wins: a rule naming the
    /// manufacturer beats one that does not, then the longer model prefix, then a rule naming
    /// a command set; on a tie, the plugin whose name sorts first.
    pub fn lookup_ieee1284(&self, device_id: &str) -> Option<(Arc<LoadedPlugin>, String)> {
        let fields = parse_ieee1284(device_id);
        let specificity = |rule: &Ieee1284Match| {
            (
                !rule.manufacturer.is_empty(),
                rule.model_prefix.len(),
                !rule.command_set.is_empty(),
            )
        };
        let mut best: Option<(&Arc<LoadedPlugin>, &Ieee1284Match)> = None;
        for plugin in &self.plugins {
            for rule in plugin.manifest.ieee1284_matches.iter() {
                if !ieee1284_rule_matches(rule, &fields) {
                    continue;
                }
                // Plugins are in name order; only a strictly more specific rule replaces.
                if best.is_none_or(|(_, kept)| specificity(rule) > specificity(kept)) {
                    best = Some((plugin, rule));
                }
            }
        }
        best.map(|(plugin, rule)| (plugin.clone(), rule.profile.to_string()))
    }
}

/// The plugin set everything running shares, swapped whole when a rescan loads more plugins.
///
/// Readers take [`SharedPlugins::current`] (a cheap `Arc` clone) and use that snapshot for the
/// work at hand; the next call sees a newer set. The lock is held only to clone or replace the
/// `Arc`, never across plugin calls.
#[derive(Debug, Default)]
pub struct SharedPlugins {
    current: RwLock<Arc<PluginSet>>,
    /// One rescan at a time, so that two rescans never load the same new file twice.
    rescanning: std::sync::Mutex<()>,
}

impl From<Arc<PluginSet>> for SharedPlugins {
    fn from(set: Arc<PluginSet>) -> SharedPlugins {
        SharedPlugins {
            current: RwLock::new(set),
            rescanning: std::sync::Mutex::new(()),
        }
    }
}

impl SharedPlugins {
    pub fn new(set: PluginSet) -> SharedPlugins {
        SharedPlugins::from(Arc::new(set))
    }

    /// The set in effect now.
    pub fn current(&self) -> Arc<PluginSet> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Rescans the folder with `trust` and puts the result in effect; returns the new set and
    /// the plugins it added. Blocks (file reads, dlopen).
    pub fn rescan(&self, trust: &TrustStore) -> (Arc<PluginSet>, Vec<Arc<LoadedPlugin>>) {
        let _one_at_a_time = self
            .rescanning
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (next, added) = self.current().rescan(trust);
        let next = Arc::new(next);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next.clone();
        (next, added)
    }
}

/// The fields of an IEEE-1284 device ID (`MFG:Zebra;MDL:ZD620;CMD:ZPL;`), keys upper-cased and
/// long names folded to the short ones.
pub fn parse_ieee1284(device_id: &str) -> BTreeMap<String, String> {
    device_id
        .split(';')
        .filter_map(|pair| pair.split_once(':'))
        .map(|(k, v)| {
            let key = match k.trim().to_ascii_uppercase().as_str() {
                "MANUFACTURER" => "MFG".to_string(),
                "MODEL" => "MDL".to_string(),
                "COMMAND SET" => "CMD".to_string(),
                other => other.to_string(),
            };
            (key, v.trim().to_string())
        })
        .collect()
}

fn ieee1284_rule_matches(rule: &Ieee1284Match, fields: &BTreeMap<String, String>) -> bool {
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    // An empty manufacturer matches any, like the other fields: generic rules such as "every
    // printer that lists command set X" need it.
    let mfg_ok =
        rule.manufacturer.is_empty() || get("MFG").eq_ignore_ascii_case(rule.manufacturer.as_str());
    let mdl_ok = get("MDL")
        .to_ascii_lowercase()
        .starts_with(&rule.model_prefix.as_str().to_ascii_lowercase());
    let cmd_ok = rule.command_set.is_empty()
        || get("CMD")
            .split(',')
            .any(|c| c.trim().eq_ignore_ascii_case(rule.command_set.as_str()));
    mfg_ok && mdl_ok && cmd_ok
}

/// `0A5F:0141`.
pub fn format_usb_id(vendor_id: u16, product_id: u16) -> String {
    format!("{vendor_id:04X}:{product_id:04X}")
}

/// Parses `0A5F:0141` (hex, case-insensitive).
pub fn parse_usb_id(text: &str) -> Option<(u16, u16)> {
    let (v, p) = text.trim().split_once(':')?;
    let v = u16::from_str_radix(v.trim_start_matches("0x"), 16).ok()?;
    let p = u16::from_str_radix(p.trim_start_matches("0x"), 16).ok()?;
    Some((v, p))
}

/// Whether `path` is a shared library file of this platform (a plugin candidate).
pub fn is_library(path: &Path) -> bool {
    is_candidate(path, Selection::AllLibraries)
}

fn is_candidate(path: &Path, selection: Selection) -> bool {
    let ext_ok = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case(LIBRARY_EXTENSION));
    if !ext_ok || !path.is_file() {
        return false;
    }
    match selection {
        Selection::AllLibraries => true,
        Selection::DriversOnly => path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.starts_with("devicehub_driver_") || n.starts_with("libdevicehub_driver_")
        }),
    }
}

/// Loads and checks one plugin library that `approval` allowed, or says in one line why not.
/// `sha256` is the file's digest as checked.
pub fn load_plugin(
    path: &Path,
    approval: Approval,
    sha256: String,
) -> Result<LoadedPlugin, String> {
    check_library_file(path).map_err(|e| e.to_string())?;
    let header = lib_header_from_path(path).map_err(|e| describe_library_error(&e))?;
    let module = header
        .init_root_module::<PluginMod_Ref>()
        .map_err(|e| describe_library_error(&e))?;
    let manifest = module.manifest()()
        .into_result()
        .map_err(|e| format!("its manifest could not be read: {e}"))?;
    let version = check_manifest(&manifest)?;
    Ok(LoadedPlugin {
        path: path.to_path_buf(),
        manifest,
        version,
        module,
        approval,
        sha256,
    })
}

/// Checks the API handshake and the manifest's own consistency; returns the plugin's version.
fn check_manifest(manifest: &PluginManifest) -> Result<semver::Version, String> {
    let name = manifest.name.as_str();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("invalid plugin name {name:?}"));
    }
    let version = semver::Version::parse(manifest.version.as_str())
        .map_err(|e| format!("plugin '{name}' has an invalid version: {e}"))?;
    let theirs = semver::Version::parse(manifest.api_version.as_str())
        .map_err(|e| format!("plugin '{name}' declares an invalid API version: {e}"))?;
    let ours = semver::Version::parse(API_VERSION).expect("the crate version is semver");
    if !api_compatible(&ours, &theirs) {
        return Err(format!(
            "plugin '{name}' was built for plugin API {theirs}; this DeviceHub provides {ours}"
        ));
    }
    let missing: Vec<&str> = manifest
        .required_features
        .iter()
        .map(|f| f.as_str())
        .filter(|f| !API_FEATURES.contains(f))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "plugin '{name}' needs API features this DeviceHub lacks: {}",
            missing.join(", ")
        ));
    }
    if manifest.kind == DeviceKind::Printer {
        for model in manifest.usb_models.iter() {
            if manifest.printer_profile(model.profile.as_str()).is_none() {
                return Err(format!(
                    "plugin '{name}' lists model {} with unknown profile '{}'",
                    model.model, model.profile
                ));
            }
        }
    }
    Ok(version)
}

/// A plugin built for API `theirs` runs on a host providing `ours` when the breaking part of
/// the version matches (major, or minor below 1.0) and the host is at least as new.
fn api_compatible(ours: &semver::Version, theirs: &semver::Version) -> bool {
    let same_line = if ours.major == 0 {
        theirs.major == 0 && theirs.minor == ours.minor
    } else {
        theirs.major == ours.major
    };
    same_line && theirs <= ours
}

/// One line for a loader error; abi_stable's own text for layout errors runs to hundreds of lines.
fn describe_library_error(err: &LibraryError) -> String {
    match err {
        LibraryError::OpenError { err, .. } => {
            format!("not a loadable library: {}", first_line(&err.to_string()))
        }
        LibraryError::GetSymbolError { .. } => {
            "not a DeviceHub plugin (it exports no DeviceHub root module)".to_string()
        }
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => {
            "built with an incompatible version of abi_stable or of the Rust C ABI".to_string()
        }
        LibraryError::ParseVersionError(e) => format!("unreadable plugin API version: {e}"),
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => format!(
            "built against plugin API {actual_version}; this DeviceHub provides {expected_version}"
        ),
        LibraryError::AbiInstability(_) => {
            "built against an incompatible plugin API (its types' layout differs)".to_string()
        }
        LibraryError::RootModule { err, .. } => {
            format!(
                "its root module failed to start: {}",
                first_line(&err.to_string())
            )
        }
        LibraryError::Many(errors) => errors
            .iter()
            .next()
            .map(describe_library_error)
            .unwrap_or_else(|| "unknown loader error".to_string()),
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_compatibility_follows_semver() {
        let v = |s: &str| semver::Version::parse(s).unwrap();
        assert!(api_compatible(&v("0.1.3"), &v("0.1.0")));
        assert!(
            !api_compatible(&v("0.1.0"), &v("0.1.3")),
            "host older than plugin"
        );
        assert!(!api_compatible(&v("0.2.0"), &v("0.1.0")));
        assert!(api_compatible(&v("1.4.0"), &v("1.2.0")));
        assert!(!api_compatible(&v("2.0.0"), &v("1.2.0")));
    }

    #[test]
    fn usb_ids_parse_and_format() {
        assert_eq!(parse_usb_id("0A5F:0141"), Some((0x0a5f, 0x0141)));
        assert_eq!(parse_usb_id("0x0a5f:0x0141"), Some((0x0a5f, 0x0141)));
        assert_eq!(parse_usb_id("zebra"), None);
        assert_eq!(format_usb_id(0x0a5f, 0x141), "0A5F:0141");
    }

    #[test]
    fn ieee1284_rules_match_fields() {
        let rule = Ieee1284Match {
            manufacturer: "Printer".into(),
            model_prefix: "Thermal".into(),
            command_set: "XPP".into(),
            profile: "tspl-203".into(),
        };
        let rollo = parse_ieee1284("MFG:Printer;MDL:Thermal Printer;CMD:XPP,XL;");
        assert!(ieee1284_rule_matches(&rule, &rollo));
        let other = parse_ieee1284("MANUFACTURER:Zebra;MODEL:ZD620;COMMAND SET:ZPL;");
        assert!(!ieee1284_rule_matches(&rule, &other));
        assert_eq!(other.get("MFG").map(String::as_str), Some("Zebra"));
    }

    #[test]
    fn an_empty_manufacturer_matches_any_with_the_command_set() {
        let generic = Ieee1284Match {
            manufacturer: "".into(),
            model_prefix: "".into(),
            command_set: "TSPL".into(),
            profile: "tspl-203".into(),
        };
        let printer = parse_ieee1284("MFG:Label Co;MDL:LP-400;CMD:TSPL,EPL;");
        assert!(ieee1284_rule_matches(&generic, &printer));
        let zpl = parse_ieee1284("MFG:Label Co;MDL:LP-400;CMD:ZPL;");
        assert!(!ieee1284_rule_matches(&generic, &zpl));
    }
}
