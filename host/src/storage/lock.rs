//! One running agent per data directory.
//!
//! Two agents on the same data directory would share one identity and one job journal file but
//! keep separate journals in memory: each would take the other's MQTT session over in turn and
//! could print a job the other had already printed. [`DataDirLock`] holds an exclusive lock on
//! `<data dir>/devicehub.lock` for as long as an agent runs; a second agent is refused with the
//! process ID of the first.
//!
//! The lock is the operating system's (`flock` on Unix, `LockFileEx` on Windows, through
//! `std::fs::File::try_lock`), so it is released when the process ends however it ends: a crash
//! or a `kill -9` never leaves a stale lock behind. The process ID written into the file is only
//! there for the message; it is written in place, not atomically, because the lock belongs to
//! the file that is open, and replacing the file would leave the lock on a removed one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "devicehub.lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another agent runs on this data directory.
    #[error(
        "another DeviceHub{} is already running with the data directory {dir}; stop it first \
         (two agents sharing a data directory could print a job twice)",
        holder.map(|pid| format!(" (process {pid})")).unwrap_or_default()
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The process ID the running agent wrote, when it could be read.
        holder: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases the data directory.
#[derive(Debug)]
pub struct DataDirLock {
    // Kept open: closing the file releases the lock.
    _file: File,
}

impl DataDirLock {
    /// Locks `dir` (which must exist) for this process, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder: read_holder(&mut file),
                })
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

/// The process ID in a held lock file; `None` when it is being written or is not a number.
fn read_holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = DataDirLock::acquire(dir.path()).expect("first lock");
        // Locks belong to open files, so a second open in this process conflicts as another
        // process's would.
        match DataDirLock::acquire(dir.path()) {
            Err(LockError::Held { dir: held, holder }) => {
                assert_eq!(held, dir.path());
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected the lock to be held, got {other:?}"),
        }
        let message = DataDirLock::acquire(dir.path())
            .expect_err("still held")
            .to_string();
        assert!(
            message.contains(&format!("(process {})", std::process::id())),
            "{message}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once dropped");
    }

    #[test]
    fn a_stale_file_from_a_dead_process_does_not_hold_the_lock() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(LOCK_FILE), "999999\n").expect("stale lock file");
        DataDirLock::acquire(dir.path()).expect("a file nobody locks is free");
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).expect("lock file");
        assert_eq!(text.trim(), std::process::id().to_string());
    }

    #[cfg(unix)]
    #[test]
    fn the_lock_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let _lock = DataDirLock::acquire(dir.path()).expect("lock");
        let mode = std::fs::metadata(dir.path().join(LOCK_FILE))
            .expect("lock file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
