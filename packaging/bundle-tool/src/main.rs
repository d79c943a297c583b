//! `devicehub-bundle`: makes signing keys, builds the signed plugin bundle from built driver
//! libraries, and checks a plugins folder the way DeviceHub will before it loads anything.
//!
//! ```sh
//! devicehub-bundle keygen --out release.key          # prints the public key to trust
//! devicehub-bundle build --from target/release --key release.key --version 1.0.0 --out dist/plugins
//! devicehub-bundle verify dist/plugins --trust <public key>
//! devicehub-bundle udev-rules --from dist/plugins --out 60-devicehub.rules
//! ```

mod udev_rules;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use devicehub::plugins::bundle::{
    self, Approval, BundleEntry, BundleManifest, FolderCheck, TrustStore, BUNDLE_FORMAT,
    FORMAT_VERSION,
};
use devicehub::plugins::{PluginSet, Selection};
use ed25519_dalek::SigningKey;

/// The default bundle's manifest file name.
const DEFAULT_MANIFEST: &str = "default.bundle.json";

#[derive(Debug, Parser)]
#[command(
    name = "devicehub-bundle",
    version,
    about = "Build and sign DeviceHub plugin bundles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Makes a new Ed25519 signing key (owner-only file) and prints its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints the public key of a signing key file.
    PublicKey { key: PathBuf },
    /// Copies the driver libraries found in FROM into OUT with a manifest signed by KEY.
    Build {
        /// A folder with built driver libraries (e.g. target/release).
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// The bundle's version (semver).
        #[arg(long)]
        version: String,
        /// The plugins folder to write (created; existing bundle files are replaced).
        #[arg(long)]
        out: PathBuf,
        /// The manifest's file name.
        #[arg(long, default_value = DEFAULT_MANIFEST)]
        manifest: String,
        /// Only these plugins (by plugin name); all drivers found when absent.
        #[arg(long = "plugin")]
        plugins: Vec<String>,
    },
    /// Checks a plugins folder as DeviceHub will: which files would load, and why not.
    Verify {
        dir: PathBuf,
        /// A public key to trust besides the release keys (repeatable).
        #[arg(long = "trust")]
        trust: Vec<String>,
    },
    /// Writes udev rules giving the devicehub group access to every USB ID the plugins in
    /// FROM claim (printers: the USB device; scales and scanners: hidraw).
    UdevRules {
        /// A plugins folder (e.g. a built bundle).
        #[arg(long)]
        from: PathBuf,
        /// The rules file to write; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keygen { out } => keygen(&out),
        Command::PublicKey { key } => {
            println!("{}", bundle::public_key_text(&read_key(&key)?));
            Ok(())
        }
        Command::Build {
            from,
            key,
            version,
            out,
            manifest,
            plugins,
        } => build(&from, &read_key(&key)?, &version, &out, &manifest, &plugins),
        Command::Verify { dir, trust } => verify(&dir, &trust),
        Command::UdevRules { from, out } => udev_rules(&from, out.as_deref()),
    }
}

fn keygen(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        bail!(
            "{} exists: refusing to overwrite a signing key",
            out.display()
        );
    }
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let text = base64::engine::general_purpose::STANDARD.encode(key.to_bytes());
    write_private(out, &text)?;
    println!("{}", bundle::public_key_text(&key));
    Ok(())
}

/// Writes the key so that only its owner can read it, created with that mode (no window in
/// which it is readable by others).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the signing key {}", path.display()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .with_context(|| format!("{} is not a signing key (base64)", path.display()))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} is not a 32-byte Ed25519 key", path.display()))?;
    Ok(SigningKey::from_bytes(&bytes))
}

fn build(
    from: &Path,
    key: &SigningKey,
    version: &str,
    out: &Path,
    manifest_name: &str,
    only: &[String],
) -> anyhow::Result<()> {
    semver::Version::parse(version)
        .with_context(|| format!("{version:?} is not a semantic version"))?;
    if !manifest_name.ends_with(bundle::MANIFEST_SUFFIX) {
        bail!(
            "the manifest's name must end with {}",
            bundle::MANIFEST_SUFFIX
        );
    }
    // Loading each library is how its name, version and API version are learnt: the same
    // checks DeviceHub makes, so that a library it would refuse never enters a bundle.
    let found = PluginSet::load_dir(from, Selection::DriversOnly);
    let mut chosen: Vec<_> = found
        .plugins
        .iter()
        .filter(|p| only.is_empty() || only.iter().any(|n| n == p.name()))
        .collect();
    chosen.sort_by(|a, b| a.name().cmp(b.name()));
    for name in only {
        if !chosen.iter().any(|p| p.name() == name) {
            bail!("no loadable driver named {name} in {}", from.display());
        }
    }
    if chosen.is_empty() {
        bail!("no driver libraries in {}", from.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut entries = Vec::new();
    for plugin in chosen {
        let file = plugin
            .path
            .file_name()
            .context("a plugin path without a file name")?
            .to_string_lossy()
            .into_owned();
        let target = out.join(&file);
        copy_atomic(&plugin.path, &target)?;
        let (size, sha256) = bundle::file_digest(&target)?;
        entries.push(BundleEntry {
            file,
            name: plugin.name().to_string(),
            version: plugin.version.to_string(),
            api_version: plugin.manifest.api_version.to_string(),
            size,
            sha256,
        });
    }
    let manifest = BundleManifest {
        format: BUNDLE_FORMAT.to_string(),
        format_version: FORMAT_VERSION,
        bundle_version: version.to_string(),
        target: target_triple(),
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        plugins: entries,
    };
    let bytes = serde_json::to_vec_pretty(&manifest)?;
    let manifest_path = out.join(manifest_name);
    write_atomic(&manifest_path, &bytes)?;
    write_atomic(
        &bundle::signature_path(&manifest_path),
        bundle::sign(key, &bytes).as_bytes(),
    )?;
    for entry in &manifest.plugins {
        println!(
            "{} {} {} ({} bytes)",
            entry.file, entry.name, entry.version, entry.size
        );
    }
    println!(
        "{} signed by key {}",
        manifest_path.display(),
        bundle::public_key_text(key)
    );
    Ok(())
}

fn verify(dir: &Path, trust: &[String]) -> anyhow::Result<()> {
    let store = TrustStore::new(trust, Vec::new(), false)?;
    let check = FolderCheck::run(dir, &store);
    for problem in &check.manifest_problems {
        println!("manifest refused: {problem}");
    }
    let mut refused = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| devicehub::plugins::is_library(p))
        .collect();
    files.sort();
    for file in files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        match check.approve_file(&file, &store) {
            Ok(Approval::Signed {
                manifest, key_id, ..
            }) => println!("ok {name}: signed in {manifest} by key {key_id}"),
            Ok(other) => println!("ok {name}: {other:?}"),
            Err(reason) => {
                refused += 1;
                println!("refused {name}: {reason}");
            }
        }
    }
    if refused > 0 || !check.manifest_problems.is_empty() {
        bail!("{refused} file(s) would be refused");
    }
    Ok(())
}

fn udev_rules(from: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    // The same loader and checks as the agent: a library it would refuse gets no rules, and
    // a refusal is an error here, since a package with a broken plugin must not be built.
    let set = PluginSet::load_dir(from, Selection::AllLibraries);
    if let Some(refused) = set.refused.first() {
        bail!(
            "{} was refused: {} (rules are only written for a folder whose every plugin loads)",
            refused.path.display(),
            refused.reason
        );
    }
    if set.plugins.is_empty() {
        bail!("no plugins in {}", from.display());
    }
    let plugins: Vec<_> = set.plugins.iter().map(|p| p.as_ref()).collect();
    let ids = udev_rules::claimed_ids(&plugins);
    let mut names: Vec<String> = plugins
        .iter()
        .map(|p| format!("{} {}", p.name(), p.version))
        .collect();
    names.sort();
    let text = udev_rules::rules_text(&ids, &names);
    match out {
        Some(path) => {
            write_atomic(path, text.as_bytes())?;
            eprintln!(
                "{}: rules for {} USB IDs of {} plugins",
                path.display(),
                ids.len(),
                plugins.len()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn copy_atomic(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    write_atomic(to, &bytes)
}

/// Temp file in the same folder, fsync, rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().context("a path without a folder")?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The platform this tool was built for, which is the drivers' when built together.
fn target_triple() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}
