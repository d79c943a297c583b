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

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use devicehub::plugins::bundle::{
    self, Approval, BundleRequest, FolderCheck, TrustStore, DEFAULT_MANIFEST,
};
use devicehub::plugins::{PluginSet, Selection};
use ed25519_dalek::SigningKey;

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
    bundle::write_signing_key(out, &key)?;
    println!("{}", bundle::public_key_text(&key));
    Ok(())
}

fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    Ok(bundle::read_signing_key(path)?)
}

fn build(
    from: &Path,
    key: &SigningKey,
    version: &str,
    out: &Path,
    manifest_name: &str,
    only: &[String],
) -> anyhow::Result<()> {
    let manifest = bundle::build_bundle(
        &BundleRequest {
            from,
            out,
            version,
            manifest_name,
            only,
        },
        key,
    )?;
    for entry in &manifest.plugins {
        println!(
            "{} {} {} ({} bytes)",
            entry.file, entry.name, entry.version, entry.size
        );
    }
    println!(
        "{} signed by key {}",
        out.join(manifest_name).display(),
        bundle::public_key_text(key)
    );
    Ok(())
}

fn verify(dir: &Path, trust: &[String]) -> anyhow::Result<()> {
    let store = TrustStore::new(trust, Vec::new(), false)?;
    let check = FolderCheck::run(dir, &store);
    for problem in &check.manifest_problems {
        println!("manifest refused: {}", problem.reason);
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
    let set = PluginSet::load_dir_unverified(from, Selection::AllLibraries);
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

/// Temp file in the same folder, fsync, rename: DeviceHub's own atomic write.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    devicehub::storage::write_atomic(path, bytes, devicehub::storage::Visibility::Default)
        .with_context(|| format!("cannot write {}", path.display()))
}
