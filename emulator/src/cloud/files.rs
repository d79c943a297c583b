//! Atomic file writes for everything the emulator keeps in its data directory.
//!
//! A crash or a power cut in the middle of a write must leave either the old file or the new
//! one, never half of each: every write goes to a temporary file in the same directory, is
//! flushed to disk, then renamed over the target (rename is atomic within one file system).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Who may read a file the emulator writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Readable by everyone who can read the directory (certificates, state).
    Public,
    /// Readable by the owner only (mode 0600): private keys and the registry of secrets.
    OwnerOnly,
}

/// Writes `contents` to `path` atomically, creating the parent directory when needed.
pub fn write_atomic(path: &Path, contents: &[u8], visibility: Visibility) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp_path = dir.join(tmp_name);

    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The mode is set at creation so that a private key is never readable by others,
        // not even for the moment between creation and a later chmod.
        options.mode(match visibility {
            Visibility::Public => 0o644,
            Visibility::OwnerOnly => 0o600,
        });
    }
    #[cfg(not(unix))]
    let _ = visibility;
    let result = (|| {
        let mut file = options.open(&tmp_path)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp_path, path)?;
        // Syncing the directory makes the rename itself durable.
        #[cfg(unix)]
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("sub").join("state.json");
        write_atomic(&path, b"one", Visibility::Public).expect("first write");
        write_atomic(&path, b"two", Visibility::Public).expect("second write");
        assert_eq!(fs::read(&path).expect("read back"), b"two");
        let entries: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .collect();
        assert_eq!(entries.len(), 1, "only the target file remains");
    }

    #[cfg(unix)]
    #[test]
    fn owner_only_files_are_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("key.pem");
        write_atomic(&path, b"secret", Visibility::OwnerOnly).expect("write");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
