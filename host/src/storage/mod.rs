//! DeviceHub's data directory: its identity, the state it must not lose, and its logs.
//!
//! ```text
//! <data dir>/                 (Config::data_dir())
//!   certs/                    0700: device certificate, private key, CA bundle, thing name
//!   shadow.json               the last shadow state (rebuilt from the cloud if lost)
//!   journal.json              job IDs and states only, never job documents or files
//!   devicehub.lock            held by the running agent (its process ID inside)
//!   logs/devicehub.log[.N]    size-capped, rotated logs
//! ```
//!
//! Every file is written atomically ([`write_atomic`]); state files carry a format, a version
//! and a checksum ([`StateFile`]), and a corrupt one is moved aside and reported rather than
//! half-read or silently dropped.
//!
//! # Layout
//! - [`atomic`]: atomic writes and owner-only permissions.
//! - [`state_file`]: versioned, checksummed JSON state files.
//! - [`journal`]: the job journal that enforces "print at most once".
//! - [`certs`]: the device identity in `certs/`.
//! - [`rotating_log`]: the size-rotated log writer.
//! - [`lock`]: one running agent per data directory.

pub mod atomic;
pub mod certs;
pub mod journal;
pub mod lock;
pub mod rotating_log;
pub mod state_file;

use std::path::{Path, PathBuf};

pub use atomic::{write_atomic, Visibility};
pub use certs::{CertStore, DeviceIdentity};
pub use journal::{JobJournal, JobState, StartDecision};
pub use lock::{DataDirLock, LockError};
pub use rotating_log::RotatingLog;
pub use state_file::{Loaded, StateFile};

/// What failed in the storage layer; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot move the corrupt file {path} aside: {source}; move or delete it by hand")]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialize the content of {path}: {source}")]
    Serialize {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} was written by a newer DeviceHub (format version {found}, this one reads up to {supported}); upgrade DeviceHub or move the file away")]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{0} is not a file path")]
    NotAFile(PathBuf),
}

/// The data directory and the paths of everything in it.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Creates the directory tree: the root and `logs/` owner-only too, since the state and
    /// logs name devices and jobs, and `certs/` owner-only because it holds the key.
    pub fn create(&self) -> Result<(), StorageError> {
        atomic::ensure_dir(&self.root, Visibility::OwnerOnly)?;
        atomic::ensure_dir(&self.certs_dir(), Visibility::OwnerOnly)?;
        atomic::ensure_dir(&self.logs_dir(), Visibility::OwnerOnly)?;
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.root.join("certs")
    }

    pub fn cert_store(&self) -> CertStore {
        CertStore::new(self.certs_dir())
    }

    pub fn shadow_path(&self) -> PathBuf {
        self.root.join("shadow.json")
    }

    /// The shadow state file, for whatever body type the shadow code keeps.
    pub fn shadow_file<T: serde::Serialize + serde::de::DeserializeOwned>(&self) -> StateFile<T> {
        StateFile::new(
            self.shadow_path(),
            "devicehub-shadow",
            1,
            Visibility::OwnerOnly,
        )
    }

    pub fn journal_path(&self) -> PathBuf {
        self.root.join("journal.json")
    }

    /// Opens the job journal (see [`JobJournal::open`]).
    pub fn open_journal(&self) -> Result<(JobJournal, Loaded<()>), StorageError> {
        JobJournal::open(self.journal_path(), journal::DEFAULT_MAX_FINISHED)
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Locks the directory for this process (see [`DataDirLock`]); the directory must exist.
    pub fn lock(&self) -> Result<DataDirLock, LockError> {
        DataDirLock::acquire(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn creates_the_tree_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = DataDir::new(dir.path().join("devicehub"));
        data.create().expect("create");
        for path in [data.root().to_path_buf(), data.certs_dir(), data.logs_dir()] {
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", path.display());
        }
    }

    #[test]
    fn the_shadow_file_round_trips_any_json_body() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = DataDir::new(dir.path().to_path_buf());
        let file = data.shadow_file::<serde_json::Value>();
        let state = serde_json::json!({"reported": {"printers": ["zebra-1"]}, "version": 7});
        file.save(&state).expect("save");
        assert_eq!(file.load().expect("load"), Loaded::Present(state));
        let (journal, loaded) = data.open_journal().expect("journal");
        assert!(journal.is_empty());
        assert_eq!(loaded, Loaded::Absent);
    }
}
