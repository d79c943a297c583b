//! Atomic, permission-aware file writes: a reader (or DeviceHub after a power cut) sees either
//! the old file or the new one, never a mix or a truncated file.
//!
//! The recipe is the classic one: write a temporary file in the same directory (so the rename
//! cannot cross file systems), fsync it, rename it over the target, then fsync the directory so
//! the rename itself survives a crash.
//!
//! # Permissions
//! On Unix, [`Visibility::OwnerOnly`] files are created with mode 0600 from the first byte
//! (the temporary file is opened with that mode, so a key is never readable by others even
//! briefly) and owner-only directories get 0700. On Windows, std can only set the read-only
//! flag; files inherit the ACL of their directory, so the installer must give the data
//! directory an ACL that grants access to the service account and Administrators only
//! (`icacls DIR /inheritance:r /grant:r "SYSTEM:(OI)(CI)F" "Administrators:(OI)(CI)F"`).
//! Everything written here then inherits that ACL.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::StorageError;

/// Who may read a file or directory DeviceHub writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Owner read/write only (0600 files, 0700 directories): keys, certificates, anything that
    /// identifies the device.
    OwnerOnly,
    /// The process umask decides (typically 0644 / 0755).
    Default,
}

/// Writes `bytes` to `path` atomically with the given visibility. The parent directory must
/// exist. On success the file holds exactly `bytes`; on failure the old file (if any) is
/// untouched and no temporary file is left behind.
pub fn write_atomic(path: &Path, bytes: &[u8], visibility: Visibility) -> Result<(), StorageError> {
    let dir = parent_of(path)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| StorageError::NotAFile(path.to_path_buf()))?;
    let write_err = |source| StorageError::Write {
        path: path.to_path_buf(),
        source,
    };
    let temp = temp_path(dir, &file_name.to_string_lossy());
    let result = (|| {
        let mut file = create_new(&temp, visibility)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)
    })();
    if let Err(e) = result {
        // The temporary file is ours alone: removing it cannot lose anything.
        let _ = fs::remove_file(&temp);
        return Err(write_err(e));
    }
    sync_dir(dir).map_err(write_err)?;
    Ok(())
}

/// Creates `dir` (and its parents) if missing and, for [`Visibility::OwnerOnly`], makes it
/// 0700 even when it already existed with looser permissions.
pub fn ensure_dir(dir: &Path, visibility: Visibility) -> Result<(), StorageError> {
    let err = |source| StorageError::CreateDir {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(err)?;
    if visibility == Visibility::OwnerOnly {
        restrict_dir(dir).map_err(err)?;
    }
    Ok(())
}

/// Fsyncs a directory so that a rename or a newly created entry in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Windows has no way to open a directory for fsync through std; NTFS journals the
        // rename's metadata itself.
        let _ = dir;
        Ok(())
    }
}

fn parent_of(path: &Path) -> Result<&Path, StorageError> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        Some(_) => Ok(Path::new(".")),
        None => Err(StorageError::NotAFile(path.to_path_buf())),
    }
}

/// A temporary name beside the target. The process id and a counter make it unique within the
/// directory, and the leading dot plus `.tmp` mark it as DeviceHub's own scratch file.
fn temp_path(dir: &Path, file_name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{file_name}.{}.{n}.tmp", std::process::id()))
}

fn create_new(path: &Path, visibility: Visibility) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if visibility == Visibility::OwnerOnly {
            options.mode(0o600);
        }
    }
    #[cfg(not(unix))]
    let _ = visibility;
    options.open(path)
}

#[cfg(unix)]
fn restrict_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn restrict_dir(_dir: &Path) -> std::io::Result<()> {
    // See the module documentation: on Windows the data directory's ACL, set at install time,
    // is inherited by everything in it.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomic(&path, b"a much longer first version", Visibility::Default).expect("write");
        write_atomic(&path, b"short", Visibility::Default).expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"short");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_partial_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old", Visibility::Default).expect("write");
        // Renaming a file over a non-empty directory fails, which is the last step of the write.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).expect("mkdir");
        fs::write(blocked.join("inside"), b"x").expect("fill");
        let error = write_atomic(&blocked, b"new", Visibility::Default).expect_err("must fail");
        assert!(error.to_string().contains("blocked"), "{error}");
        assert_eq!(fs::read(&path).expect("read"), b"old");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn writing_into_a_missing_directory_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("state.json");
        let error = write_atomic(&path, b"x", Visibility::Default).expect_err("must fail");
        assert!(error.to_string().contains("state.json"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn owner_only_files_and_directories_get_0600_and_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        fs::create_dir(&certs).expect("mkdir");
        fs::set_permissions(&certs, fs::Permissions::from_mode(0o755)).expect("chmod");
        ensure_dir(&certs, Visibility::OwnerOnly).expect("ensure");
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&certs), 0o700);
        let key = certs.join("private.pem.key");
        write_atomic(&key, b"secret", Visibility::OwnerOnly).expect("write");
        assert_eq!(mode(&key), 0o600);
        // Rewriting keeps it owner-only: the new file is created 0600, not chmod-ed afterwards.
        write_atomic(&key, b"secret 2", Visibility::OwnerOnly).expect("rewrite");
        assert_eq!(mode(&key), 0o600);
    }
}
