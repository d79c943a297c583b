//! Plugin bundles: signed manifests that say which plugin libraries may be loaded.
//!
//! A bundle is a manifest, `NAME.bundle.json`, listing plugin files with their name, version,
//! API version, target, size and SHA-256, and a detached Ed25519 signature over the manifest's
//! exact bytes, `NAME.bundle.json.sig` (the signature's 64 bytes in base64). Both sit in the
//! plugins folder beside the libraries. The default bundle is one manifest for every plugin
//! shipped; a drop-in driver brings a manifest of its own.
//!
//! [`TrustStore`] holds what DeviceHub trusts: the built-in release keys, keys added in the
//! config, and single files trusted by their hash (`devicehub plugins trust FILE`).
//! [`FolderCheck`] decides, for each library file of a folder, whether it may be loaded: signed
//! by a trusted key with a matching hash, or trusted by its hash, or (only with the development
//! flag) unsigned. A file whose bytes differ from what a valid manifest signed is tampered and
//! never loads.
//!
//! The check reads and hashes each file before it is loaded. A file swapped between the check
//! and the load would escape it: the plugins folder must be writable only by the administrator
//! (the packages install it so).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `format` of a bundle manifest.
pub const BUNDLE_FORMAT: &str = "devicehub-plugin-bundle";
/// The manifest format version this DeviceHub reads.
pub const FORMAT_VERSION: u32 = 1;
/// How a manifest's file name ends.
pub const MANIFEST_SUFFIX: &str = ".bundle.json";
/// Appended to a manifest's file name for its signature.
pub const SIGNATURE_SUFFIX: &str = ".sig";
/// The largest manifest read; a bundle of a hundred plugins is a few kilobytes.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// DeviceHub's release signing keys (Ed25519 public keys, base64). The private keys are held by
/// the release process, never in this repository.
pub const RELEASE_KEYS: &[&str] = &["BGs7fvmjFmCygRmkYgg2HRdhfBsLw9YWuMSWdGACB8w="];

/// A signed list of plugin files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleManifest {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Always [`FORMAT_VERSION`] for this reader.
    pub format_version: u32,
    /// The bundle's own version (semver): what updates compare.
    pub bundle_version: String,
    /// The platform the libraries are built for, e.g. `x86_64-unknown-linux-gnu`.
    pub target: String,
    /// When the bundle was built, epoch seconds.
    pub created_at: u64,
    pub plugins: Vec<BundleEntry>,
}

/// One plugin file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleEntry {
    /// The file's name in the plugins folder (no directories).
    pub file: String,
    /// The plugin's name from its manifest.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// The plugin API version it was built against.
    pub api_version: String,
    pub size: u64,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
}

/// Why a bundle could not be made, signed or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_MANIFEST_BYTES} bytes: not a bundle manifest")]
    TooLarge { path: PathBuf },
    #[error("{path} is not a bundle manifest: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error("{path} has no signature ({path}{SIGNATURE_SUFFIX} is missing)")]
    Unsigned { path: PathBuf },
    #[error("{path}: the signature is not base64 of 64 bytes")]
    BadSignature { path: PathBuf },
    #[error("{path} is not signed by a trusted key")]
    UntrustedSignature { path: PathBuf },
    #[error("{0:?} is not an Ed25519 public key (base64 of 32 bytes)")]
    BadKey(String),
    #[error("cannot build the bundle: {0}")]
    Build(String),
    #[error(transparent)]
    Write(#[from] crate::storage::StorageError),
}

/// A public key DeviceHub trusts, with a short ID for messages.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub id: String,
    key: VerifyingKey,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedKey({})", self.id)
    }
}

impl TrustedKey {
    /// Reads a key written as base64 of its 32 bytes.
    pub fn parse(text: &str) -> Result<TrustedKey, BundleError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| BundleError::BadKey(text.to_string()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| BundleError::BadKey(text.to_string()))?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|_| BundleError::BadKey(text.to_string()))?;
        Ok(TrustedKey {
            id: key_id(&key),
            key,
        })
    }
}

/// The first 8 bytes of the key's SHA-256, hex: enough to tell keys apart in messages.
fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// What DeviceHub trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    keys: Vec<TrustedKey>,
    /// SHA-256 (hex) of single files trusted by hand.
    hashes: BTreeSet<String>,
    /// The development flag: unsigned files load too (loudly).
    pub allow_unsigned: bool,
}

impl TrustStore {
    /// The built-in release keys plus `extra_keys` (base64), files trusted by `hashes`, and
    /// the development flag.
    pub fn new(
        extra_keys: &[String],
        hashes: impl IntoIterator<Item = String>,
        allow_unsigned: bool,
    ) -> Result<TrustStore, BundleError> {
        let mut keys = Vec::new();
        for text in RELEASE_KEYS
            .iter()
            .map(|k| k.to_string())
            .chain(extra_keys.iter().cloned())
        {
            let key = TrustedKey::parse(&text)?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(TrustStore {
            keys,
            hashes: hashes.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            allow_unsigned,
        })
    }

    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The same keys without files trusted by hash and without the development flag: what
    /// approves a plugin bundle update.
    pub fn keys_only(&self) -> TrustStore {
        TrustStore {
            keys: self.keys.clone(),
            hashes: BTreeSet::new(),
            allow_unsigned: false,
        }
    }

    /// The trusted key that made `signature` over `message`, if any.
    fn signer(&self, message: &[u8], signature: &Signature) -> Option<&TrustedKey> {
        self.keys
            .iter()
            .find(|k| k.key.verify(message, signature).is_ok())
    }
}

/// Why a file may be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Listed, with this hash, in a manifest signed by a trusted key.
    Signed {
        manifest: String,
        key_id: String,
        bundle_version: String,
    },
    /// Its hash was trusted by hand.
    TrustedHash,
    /// Unsigned, loaded only because of the development flag.
    Unsigned,
    /// Loaded without any check: only the bundle tool does this, to learn what it signs.
    NotChecked,
    /// A driver compiled into DeviceHub itself (the sheet printers'): no file to check.
    BuiltIn,
}

impl Approval {
    /// A stable name for machine-readable listings.
    pub fn kind(&self) -> &'static str {
        match self {
            Approval::Signed { .. } => "signed",
            Approval::TrustedHash => "trustedHash",
            Approval::Unsigned => "unsigned",
            Approval::NotChecked => "notChecked",
            Approval::BuiltIn => "builtIn",
        }
    }
}

impl fmt::Display for Approval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approval::Signed {
                manifest,
                key_id,
                bundle_version,
            } => write!(
                f,
                "signed by key {key_id} (bundle {manifest} version {bundle_version})"
            ),
            Approval::TrustedHash => write!(f, "trusted by its hash"),
            Approval::Unsigned => write!(f, "UNSIGNED, allowed by the development flag"),
            Approval::NotChecked => write!(f, "not checked"),
            Approval::BuiltIn => write!(f, "built into DeviceHub"),
        }
    }
}

/// A manifest in the folder that approves nothing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestProblem {
    pub path: PathBuf,
    /// One line: the manifest's path and what is wrong with it.
    pub reason: String,
}

/// The verdicts for one plugins folder.
#[derive(Debug, Default)]
pub struct FolderCheck {
    /// Files approved by a valid signed manifest, by file name, with their SHA-256 (hex).
    signed: BTreeMap<String, (Approval, String)>,
    /// Files whose bytes differ from what a valid manifest signed, with the reason.
    tampered: BTreeMap<String, String>,
    /// Files listed by a readable manifest that approves nothing (unsigned, untrusted or
    /// broken signature), with that manifest's problem: the reason such a file is refused.
    unverified: BTreeMap<String, String>,
    /// Manifests that could not be used, and why (reported, never fatal).
    pub manifest_problems: Vec<ManifestProblem>,
    /// The valid manifests, by file name.
    pub manifests: BTreeMap<String, BundleManifest>,
}

impl FolderCheck {
    /// The entry of a valid manifest that lists the file at `path`, if any.
    pub fn manifest_entry(&self, path: &Path) -> Option<&BundleEntry> {
        let name = file_name(path);
        self.manifests
            .values()
            .flat_map(|m| m.plugins.iter())
            .find(|e| e.file == name)
    }

    /// The SHA-256 (hex) of a file a valid signed manifest approved, as [`FolderCheck::run`]
    /// hashed it: callers need not read the file again.
    pub fn signed_digest(&self, path: &Path) -> Option<&str> {
        self.signed
            .get(&file_name(path))
            .map(|(_, sha256)| sha256.as_str())
    }

    /// Reads and verifies every manifest in `dir` against `trust` and hashes the files they
    /// list.
    pub fn run(dir: &Path, trust: &TrustStore) -> FolderCheck {
        let mut check = FolderCheck::default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return check;
        };
        let mut manifests: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(MANIFEST_SUFFIX))
            })
            .collect();
        manifests.sort();
        for path in manifests {
            match read_verified(&path, trust) {
                Ok((manifest, key_id)) => check.approve(dir, &path, manifest, &key_id),
                Err(e) => {
                    let reason = e.to_string();
                    // A manifest that reads but whose signature does not hold still says which
                    // files it meant to vouch for: their refusal names the real problem.
                    if let Ok(manifest) =
                        read_bounded(&path).and_then(|b| parse_manifest(&path, &b))
                    {
                        for entry in manifest.plugins {
                            check
                                .unverified
                                .entry(entry.file)
                                .or_insert_with(|| reason.clone());
                        }
                    }
                    check
                        .manifest_problems
                        .push(ManifestProblem { path, reason });
                }
            }
        }
        check
    }

    fn approve(&mut self, dir: &Path, path: &Path, manifest: BundleManifest, key_id: &str) {
        let manifest_name = file_name(path);
        for entry in &manifest.plugins {
            let file = dir.join(&entry.file);
            match file_digest(&file) {
                Ok((size, sha256)) if size == entry.size && sha256 == entry.sha256 => {
                    self.signed.insert(
                        entry.file.clone(),
                        (
                            Approval::Signed {
                                manifest: manifest_name.clone(),
                                key_id: key_id.to_string(),
                                bundle_version: manifest.bundle_version.clone(),
                            },
                            sha256,
                        ),
                    );
                }
                Ok((size, sha256)) => {
                    self.tampered.insert(
                        entry.file.clone(),
                        format!(
                            "does not match the signed manifest {manifest_name}: it is {size} \
                             bytes with sha256 {sha256}, the manifest says {} bytes with sha256 {}; \
                             reinstall the plugin",
                            entry.size, entry.sha256
                        ),
                    );
                }
                // A listed file that is absent is not an error here: the folder may hold a
                // subset (a plugin removed by the user).
                Err(_) => {}
            }
        }
        self.manifests.insert(manifest_name, manifest);
    }

    /// Whether the library at `path` may be loaded, and why; the error is the refusal.
    pub fn approve_file(&self, path: &Path, trust: &TrustStore) -> Result<Approval, String> {
        let name = file_name(path);
        if let Some(reason) = self.tampered.get(&name) {
            return Err(reason.clone());
        }
        if let Some((approval, _)) = self.signed.get(&name) {
            return Ok(approval.clone());
        }
        if !trust.hashes.is_empty() {
            let (_, sha256) =
                file_digest(path).map_err(|e| format!("cannot read it to check it: {e}"))?;
            if trust.hashes.contains(&sha256) {
                return Ok(Approval::TrustedHash);
            }
        }
        if trust.allow_unsigned {
            return Ok(Approval::Unsigned);
        }
        if let Some(problem) = self.unverified.get(&name) {
            return Err(format!(
                "its bundle manifest approves nothing: {problem}; or trust this file with \
                 `devicehub plugins trust {}`",
                path.display()
            ));
        }
        Err(format!(
            "not signed by a trusted key and not trusted by its hash: install it with its signed \
             bundle manifest, or trust this file with `devicehub plugins trust {}`",
            path.display()
        ))
    }
}

/// Reads a manifest and checks its signature; returns it with the signing key's ID.
pub fn read_verified(
    path: &Path,
    trust: &TrustStore,
) -> Result<(BundleManifest, String), BundleError> {
    let bytes = read_bounded(path)?;
    let signature_path = signature_path(path);
    let signature_text = match std::fs::read_to_string(&signature_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BundleError::Unsigned {
                path: path.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(BundleError::Read {
                path: signature_path,
                source,
            })
        }
    };
    let signature = parse_signature(&signature_text).ok_or_else(|| BundleError::BadSignature {
        path: path.to_path_buf(),
    })?;
    let key = trust
        .signer(&bytes, &signature)
        .ok_or_else(|| BundleError::UntrustedSignature {
            path: path.to_path_buf(),
        })?;
    let manifest = parse_manifest(path, &bytes)?;
    Ok((manifest, key.id.clone()))
}

/// Parses and checks a manifest's content (not its signature).
pub fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<BundleManifest, BundleError> {
    let bad = |reason: String| BundleError::BadManifest {
        path: path.to_path_buf(),
        reason,
    };
    let manifest: BundleManifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if manifest.format != BUNDLE_FORMAT {
        return Err(bad(format!("format is {:?}", manifest.format)));
    }
    if manifest.format_version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {} (this DeviceHub reads {FORMAT_VERSION})",
            manifest.format_version
        )));
    }
    semver::Version::parse(&manifest.bundle_version)
        .map_err(|e| bad(format!("bundle version: {e}")))?;
    for entry in &manifest.plugins {
        let plain = Path::new(&entry.file)
            .file_name()
            .is_some_and(|n| n == entry.file.as_str());
        if !plain || entry.file.starts_with('.') {
            return Err(bad(format!("{:?} is not a plain file name", entry.file)));
        }
        if entry.sha256.len() != 64 || !entry.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "the sha256 of {} is not 64 hex digits",
                entry.file
            )));
        }
    }
    Ok(manifest)
}

/// The default bundle's manifest file name.
pub const DEFAULT_MANIFEST: &str = "default.bundle.json";

/// What [`build_bundle`] makes.
#[derive(Debug, Clone)]
pub struct BundleRequest<'a> {
    /// A folder with built driver libraries (a build output: drivers are picked by name).
    pub from: &'a Path,
    /// The plugins folder to write (created; bundle files already there are replaced).
    pub out: &'a Path,
    /// The bundle's version (semver).
    pub version: &'a str,
    /// The manifest's file name, ending in [`MANIFEST_SUFFIX`].
    pub manifest_name: &'a str,
    /// Only these plugins, by plugin name; every driver found when empty.
    pub only: &'a [String],
}

/// Copies the driver libraries of `request.from` into `request.out` with a manifest listing
/// them, signed by `key`; every file is written atomically. Each library is loaded first (the
/// same checks DeviceHub makes, without signatures: it is about to be signed) to learn its
/// name and version, so a library the agent would refuse never enters a bundle.
pub fn build_bundle(
    request: &BundleRequest<'_>,
    key: &SigningKey,
) -> Result<BundleManifest, BundleError> {
    use crate::storage::{write_atomic, Visibility};
    let build = |message: String| BundleError::Build(message);
    semver::Version::parse(request.version).map_err(|e| {
        build(format!(
            "{:?} is not a semantic version: {e}",
            request.version
        ))
    })?;
    if !request.manifest_name.ends_with(MANIFEST_SUFFIX)
        || Path::new(request.manifest_name).file_name() != Some(request.manifest_name.as_ref())
    {
        return Err(build(format!(
            "the manifest's name must be a file name ending with {MANIFEST_SUFFIX}"
        )));
    }
    let found = crate::plugins::PluginSet::load_dir_unverified(
        request.from,
        crate::plugins::Selection::DriversOnly,
    );
    let mut chosen: Vec<_> = found
        .plugins
        .iter()
        .filter(|p| request.only.is_empty() || request.only.iter().any(|n| n == p.name()))
        .collect();
    chosen.sort_by(|a, b| a.name().cmp(b.name()));
    for name in request.only {
        if !chosen.iter().any(|p| p.name() == name) {
            return Err(build(format!(
                "no loadable driver named {name} in {}",
                request.from.display()
            )));
        }
    }
    if chosen.is_empty() {
        return Err(build(format!(
            "no driver libraries in {}",
            request.from.display()
        )));
    }
    crate::storage::atomic::ensure_dir(request.out, Visibility::Default)?;
    let mut entries = Vec::new();
    for plugin in chosen {
        let file = file_name(&plugin.path);
        let bytes = std::fs::read(&plugin.path).map_err(|source| BundleError::Read {
            path: plugin.path.clone(),
            source,
        })?;
        write_atomic(&request.out.join(&file), &bytes, Visibility::Default)?;
        entries.push(BundleEntry {
            file,
            name: plugin.name().to_string(),
            version: plugin.version.to_string(),
            api_version: plugin.manifest.api_version.to_string(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
        });
    }
    let manifest = BundleManifest {
        format: BUNDLE_FORMAT.to_string(),
        format_version: FORMAT_VERSION,
        bundle_version: request.version.to_string(),
        target: target_triple(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        plugins: entries,
    };
    let bytes = serde_json::to_vec_pretty(&manifest).expect("a manifest always serializes");
    let manifest_path = request.out.join(request.manifest_name);
    write_atomic(&manifest_path, &bytes, Visibility::Default)?;
    write_atomic(
        &signature_path(&manifest_path),
        sign(key, &bytes).as_bytes(),
        Visibility::Default,
    )?;
    Ok(manifest)
}

/// The platform this DeviceHub was built for, which is the drivers' when built together.
pub fn target_triple() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Reads a signing key file (base64 of the 32-byte Ed25519 secret).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, BundleError> {
    let text = std::fs::read_to_string(path).map_err(|source| BundleError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            BundleError::Build(format!(
                "{} is not a 32-byte Ed25519 signing key in base64",
                path.display()
            ))
        })?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Writes `key` to a new owner-only file (created with that mode: no window in which others
/// can read it); an existing file is never overwritten.
pub fn write_signing_key(path: &Path, key: &SigningKey) -> Result<(), BundleError> {
    use std::io::Write as _;
    let write_error = |source| {
        BundleError::Write(crate::storage::StorageError::Write {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(write_error)?;
    file.write_all(
        base64::engine::general_purpose::STANDARD
            .encode(key.to_bytes())
            .as_bytes(),
    )
    .map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    Ok(())
}

/// Signs manifest bytes; the text written to the `.sig` file.
pub fn sign(key: &SigningKey, manifest: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.sign(manifest).to_bytes())
}

/// The public key of `key`, as [`TrustedKey::parse`] reads it.
pub fn public_key_text(key: &SigningKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())
}

/// Where a manifest's signature is.
pub fn signature_path(manifest: &Path) -> PathBuf {
    let mut name = manifest.as_os_str().to_owned();
    name.push(SIGNATURE_SUFFIX);
    PathBuf::from(name)
}

fn parse_signature(text: &str) -> Option<Signature> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    let bytes: [u8; 64] = bytes.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, BundleError> {
    let read_error = |source| BundleError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(BundleError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// The size and SHA-256 (lower-case hex) of a file, read in chunks.
pub fn file_digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// A folder with two "libraries" and a manifest for them signed by `signer`.
    fn folder(signer: &SigningKey) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut plugins = Vec::new();
        for (file, bytes) in [("liba.so", b"aaaa".as_slice()), ("libb.so", b"bbbbbb")] {
            std::fs::write(dir.path().join(file), bytes).expect("write");
            plugins.push(BundleEntry {
                file: file.into(),
                name: file.trim_end_matches(".so").into(),
                version: "1.0.0".into(),
                api_version: "0.1.0".into(),
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(bytes)),
            });
        }
        let manifest = BundleManifest {
            format: BUNDLE_FORMAT.into(),
            format_version: FORMAT_VERSION,
            bundle_version: "1.0.0".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            created_at: 0,
            plugins,
        };
        let bytes = serde_json::to_vec_pretty(&manifest).expect("encode");
        let path = dir.path().join("default.bundle.json");
        std::fs::write(&path, &bytes).expect("write manifest");
        std::fs::write(signature_path(&path), sign(signer, &bytes)).expect("write signature");
        dir
    }

    fn trust(keys: &[&SigningKey], allow_unsigned: bool) -> TrustStore {
        let keys: Vec<String> = keys.iter().map(|k| public_key_text(k)).collect();
        TrustStore::new(&keys, Vec::new(), allow_unsigned).expect("trust store")
    }

    #[test]
    fn files_of_a_manifest_signed_by_a_trusted_key_are_approved() {
        let signer = key(1);
        let dir = folder(&signer);
        let trust = trust(&[&signer], false);
        let check = FolderCheck::run(dir.path(), &trust);
        assert!(
            check.manifest_problems.is_empty(),
            "{:?}",
            check.manifest_problems
        );
        for file in ["liba.so", "libb.so"] {
            let approval = check
                .approve_file(&dir.path().join(file), &trust)
                .expect("approved");
            assert!(matches!(approval, Approval::Signed { .. }), "{approval:?}");
        }
        // A file the manifest does not list is not approved by it.
        std::fs::write(dir.path().join("libc.so"), b"c").expect("write");
        let refused = check
            .approve_file(&dir.path().join("libc.so"), &trust)
            .expect_err("unlisted");
        assert!(refused.contains("devicehub plugins trust"), "{refused}");
    }

    #[test]
    fn a_changed_file_is_tampered_even_with_the_development_flag() {
        let signer = key(1);
        let dir = folder(&signer);
        std::fs::write(dir.path().join("libb.so"), b"bbbbbX").expect("tamper");
        let trust = trust(&[&signer], true);
        let check = FolderCheck::run(dir.path(), &trust);
        let refused = check
            .approve_file(&dir.path().join("libb.so"), &trust)
            .expect_err("tampered");
        assert!(
            refused.contains("does not match the signed manifest"),
            "{refused}"
        );
        assert!(check
            .approve_file(&dir.path().join("liba.so"), &trust)
            .is_ok());
    }

    #[test]
    fn an_untrusted_or_broken_signature_approves_nothing() {
        let dir = folder(&key(1));
        let stranger = trust(&[&key(2)], false);
        let check = FolderCheck::run(dir.path(), &stranger);
        assert_eq!(check.manifest_problems.len(), 1);
        assert!(
            check.manifest_problems[0]
                .reason
                .contains("not signed by a trusted key"),
            "{:?}",
            check.manifest_problems
        );
        let refused = check
            .approve_file(&dir.path().join("liba.so"), &stranger)
            .expect_err("untrusted");
        assert!(
            refused.contains("approves nothing") && refused.contains("not signed by a trusted key"),
            "{refused}"
        );

        // The manifest changed after signing: the signature no longer holds.
        let trusted = trust(&[&key(1)], false);
        let path = dir.path().join("default.bundle.json");
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, text.replace("1.0.0", "9.9.9")).expect("edit");
        let check = FolderCheck::run(dir.path(), &trusted);
        assert_eq!(
            check.manifest_problems.len(),
            1,
            "{:?}",
            check.manifest_problems
        );

        std::fs::remove_file(signature_path(&path)).expect("remove signature");
        let check = FolderCheck::run(dir.path(), &trusted);
        assert!(check.manifest_problems[0]
            .reason
            .contains("has no signature"));
    }

    #[test]
    fn unsigned_files_load_only_by_hash_or_with_the_development_flag() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("libx.so");
        std::fs::write(&file, b"x").expect("write");
        let (_, sha256) = file_digest(&file).expect("digest");

        let strict = TrustStore::new(&[], Vec::new(), false).expect("trust");
        let check = FolderCheck::run(dir.path(), &strict);
        assert!(check.approve_file(&file, &strict).is_err());

        let by_hash = TrustStore::new(&[], [sha256.to_uppercase()], false).expect("trust");
        assert_eq!(
            check.approve_file(&file, &by_hash),
            Ok(Approval::TrustedHash)
        );
        let development = TrustStore::new(&[], Vec::new(), true).expect("trust");
        assert_eq!(
            check.approve_file(&file, &development),
            Ok(Approval::Unsigned)
        );
    }

    #[test]
    fn manifests_with_paths_or_bad_fields_are_refused() {
        let path = Path::new("x.bundle.json");
        let good = serde_json::json!({
            "format": BUNDLE_FORMAT, "formatVersion": 1, "bundleVersion": "1.0.0",
            "target": "t", "createdAt": 0,
            "plugins": [{"file": "liba.so", "name": "a", "version": "1.0.0", "apiVersion": "0.1.0",
                         "size": 1, "sha256": "a".repeat(64)}]
        });
        assert!(parse_manifest(path, good.to_string().as_bytes()).is_ok());
        for (field, value, reason) in [
            (
                "file",
                serde_json::json!("../liba.so"),
                "not a plain file name",
            ),
            ("sha256", serde_json::json!("xyz"), "64 hex digits"),
        ] {
            let mut bad = good.clone();
            bad["plugins"][0][field] = value;
            let error = parse_manifest(path, bad.to_string().as_bytes()).expect_err("refused");
            assert!(error.to_string().contains(reason), "{error}");
        }
        let mut bad = good.clone();
        bad["formatVersion"] = 2.into();
        assert!(parse_manifest(path, bad.to_string().as_bytes()).is_err());
        assert!(TrustedKey::parse("not a key").is_err());
    }

    #[test]
    fn the_release_keys_parse() {
        let trust = TrustStore::new(&[], Vec::new(), false).expect("release keys");
        assert_eq!(trust.keys().len(), RELEASE_KEYS.len());
    }
}
