//! Plugin files trusted by hand (`devicehub plugins trust FILE`): their SHA-256, file name and
//! when they were trusted, kept in `trusted-plugins.json` in the data directory.
//!
//! The file is a checksummed state file (see [`crate::storage::StateFile`]) written atomically
//! and owner-only; a corrupt one is moved aside and reported, and then trusts nothing (the safe
//! direction: files it listed are refused until trusted again).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::{DataDir, Loaded, StateFile, StorageError, Visibility};

/// The file's name in the data directory.
pub const TRUSTED_PLUGINS_FILE: &str = "trusted-plugins.json";

/// The files trusted by their hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustedFiles {
    pub files: Vec<TrustedFile>,
}

/// One file trusted by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustedFile {
    /// SHA-256 of the file, lower-case hex: what the loader compares.
    pub sha256: String,
    /// The file's name when it was trusted, for people reading the list.
    pub file_name: String,
    /// When it was trusted, epoch seconds.
    pub trusted_at: u64,
}

/// Why the trusted list could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {path} to trust it: {source}")]
    ReadPlugin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a plugin library file")]
    NotALibrary(PathBuf),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no trusted plugin file matches {0:?} (give the file or its SHA-256)")]
    NotTrusted(String),
}

/// The state file in `data_dir`.
pub fn state_file(data_dir: &DataDir) -> StateFile<TrustedFiles> {
    StateFile::new(
        data_dir.root().join(TRUSTED_PLUGINS_FILE),
        "devicehub-trusted-plugins",
        1,
        Visibility::OwnerOnly,
    )
}

/// The trusted files; absent or moved-aside (corrupt) means none.
pub fn load(data_dir: &DataDir) -> Result<TrustedFiles, StorageError> {
    Ok(match state_file(data_dir).load()? {
        Loaded::Present(files) => files,
        Loaded::Absent => TrustedFiles::default(),
        Loaded::MovedAside { moved_to, reason } => {
            tracing::error!(
                moved_to = %moved_to.display(),
                "the list of plugin files trusted by hash was damaged ({reason}) and was moved \
                 aside; trust the files again with `devicehub plugins trust FILE`"
            );
            TrustedFiles::default()
        }
    })
}

/// Trusts the library at `path` by its SHA-256; trusting a file already trusted refreshes its
/// name and time. The data directory must exist.
pub fn trust(data_dir: &DataDir, path: &Path) -> Result<TrustedFile, TrustError> {
    if !crate::plugins::is_library(path) {
        return Err(TrustError::NotALibrary(path.to_path_buf()));
    }
    let (_, sha256) =
        super::bundle::file_digest(path).map_err(|source| TrustError::ReadPlugin {
            path: path.to_path_buf(),
            source,
        })?;
    let entry = TrustedFile {
        sha256,
        file_name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        trusted_at: crate::agent::epoch_seconds(),
    };
    let mut files = load(data_dir)?;
    files.files.retain(|f| f.sha256 != entry.sha256);
    files.files.push(entry.clone());
    state_file(data_dir).save(&files)?;
    Ok(entry)
}

/// Stops trusting the files that `file_or_hash` names: a SHA-256 (full hex), or a path whose
/// current content's hash or whose file name is listed. Returns what was removed.
pub fn untrust(data_dir: &DataDir, file_or_hash: &str) -> Result<Vec<TrustedFile>, TrustError> {
    let wanted = file_or_hash.trim().to_ascii_lowercase();
    let path = Path::new(file_or_hash);
    let digest = super::bundle::file_digest(path).ok().map(|(_, h)| h);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut files = load(data_dir)?;
    let (removed, kept): (Vec<TrustedFile>, Vec<TrustedFile>) =
        files.files.into_iter().partition(|f| {
            f.sha256 == wanted
                || digest.as_deref() == Some(f.sha256.as_str())
                || (digest.is_none() && name.as_deref() == Some(f.file_name.as_str()))
        });
    if removed.is_empty() {
        return Err(TrustError::NotTrusted(file_or_hash.to_string()));
    }
    files.files = kept;
    state_file(data_dir).save(&files)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir() -> (tempfile::TempDir, DataDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = DataDir::new(dir.path().join("data"));
        data.create().expect("create data dir");
        (dir, data)
    }

    fn library(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(format!("{name}.{}", crate::plugins::LIBRARY_EXTENSION));
        std::fs::write(&path, bytes).expect("write library");
        path
    }

    #[test]
    fn trusting_records_the_hash_owner_only_and_untrusting_removes_it() {
        let (dir, data) = data_dir();
        let lib = library(dir.path(), "libx", b"plugin bytes");
        let entry = trust(&data, &lib).expect("trusted");
        let (_, sha256) = super::super::bundle::file_digest(&lib).expect("digest");
        assert_eq!(entry.sha256, sha256);
        assert_eq!(load(&data).expect("load").files, vec![entry.clone()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(state_file(&data).path())
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Trusting again keeps one entry.
        trust(&data, &lib).expect("trusted again");
        assert_eq!(load(&data).expect("load").files.len(), 1);

        let removed = untrust(&data, &sha256.to_uppercase()).expect("untrusted by hash");
        assert_eq!(removed.len(), 1);
        assert!(load(&data).expect("load").files.is_empty());
        trust(&data, &lib).expect("trusted");
        untrust(&data, &lib.display().to_string()).expect("untrusted by file");
        assert!(matches!(
            untrust(&data, "0000"),
            Err(TrustError::NotTrusted(_))
        ));
    }

    #[test]
    fn a_corrupt_list_is_moved_aside_and_trusts_nothing() {
        let (_dir, data) = data_dir();
        let path = state_file(&data).path().to_path_buf();
        std::fs::write(&path, b"{ not json").expect("write");
        assert!(load(&data).expect("load").files.is_empty());
        assert!(!path.exists(), "the corrupt file was moved aside");
    }

    #[test]
    fn only_library_files_are_trusted() {
        let (dir, data) = data_dir();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, b"x").expect("write");
        assert!(matches!(
            trust(&data, &text),
            Err(TrustError::NotALibrary(_))
        ));
    }
}
