//! `devicehub-bundle`: makes signing keys, builds the signed plugin bundle from built driver
//! libraries, and checks a plugins folder the way DeviceHub will before it loads anything.
//!
//! ```sh
//! devicehub-bundle keygen --out release.key          # prints the public key to trust
//! devicehub-bundle build --from target/release --key release.key --version 1.0.0 --out dist/plugins
//! devicehub-bundle verify dist/plugins --trust <public key>
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use devicehub::plugins::bundle::{
    self, Approval, BundleRequest, FolderCheck, TrustStore, DEFAULT_MANIFEST,
};
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
