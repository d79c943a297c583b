//! Typed JSON state files with a format version and a checksum.
//!
//! On disk a state file is an envelope:
//! `{"format":"devicehub-journal","version":1,"sha256":"<hex>","body":{...}}`. The checksum
//! covers the compact serialization of `body`, so a truncated file, a flipped byte or a
//! hand edit that broke the JSON is detected rather than half-read.
//!
//! A file that cannot be trusted is never silently dropped: it is renamed to
//! `NAME.corrupt-<UTC timestamp>` beside the original, the event is logged with both paths and
//! what to do, and the caller gets [`Loaded::MovedAside`], which it treats like an absent file
//! (DeviceHub rebuilds shadow and job state from the cloud). A file written by a newer
//! DeviceHub is not corrupt: it is left alone and reported as [`StorageError::NewerFormat`].

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::atomic::{write_atomic, Visibility};
use super::StorageError;

/// What loading a state file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded<T> {
    /// The file was there and intact.
    Present(T),
    /// There was no file.
    Absent,
    /// The file was corrupt; it was renamed to `moved_to` and the caller starts afresh.
    MovedAside {
        /// Where the corrupt file now is, for the operator (and support) to inspect.
        moved_to: PathBuf,
        /// Why the file was not trusted.
        reason: String,
    },
}

impl<T> Loaded<T> {
    /// The value, or `None` when the file was absent or corrupt.
    pub fn into_option(self) -> Option<T> {
        match self {
            Loaded::Present(value) => Some(value),
            Loaded::Absent | Loaded::MovedAside { .. } => None,
        }
    }
}

/// The envelope around a state file's body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    /// What the file is, so that one state file copied over another is caught.
    format: String,
    version: u32,
    /// Hex SHA-256 of the compact JSON of `body`.
    sha256: String,
    body: serde_json::Value,
}

/// One typed state file: its path, the format name written into it, and the body type.
#[derive(Debug, Clone)]
pub struct StateFile<T> {
    path: PathBuf,
    format: &'static str,
    version: u32,
    visibility: Visibility,
    _body: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> StateFile<T> {
    /// A state file at `path` whose envelope says `format` (e.g. `devicehub-journal`) and
    /// `version`, the newest body version this build reads and writes.
    pub fn new(path: PathBuf, format: &'static str, version: u32, visibility: Visibility) -> Self {
        Self {
            path,
            format,
            version,
            visibility,
            _body: PhantomData,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the file. Absent and corrupt files are not errors (see the module documentation);
    /// errors are I/O failures other than "not found", and files from a newer DeviceHub.
    pub fn load(&self) -> Result<Loaded<T>, StorageError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Absent),
            Err(source) => {
                return Err(StorageError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        match self.decode(&bytes) {
            Ok(value) => Ok(Loaded::Present(value)),
            Err(Decode::Newer(found)) => Err(StorageError::NewerFormat {
                path: self.path.clone(),
                found,
                supported: self.version,
            }),
            Err(Decode::Corrupt(reason)) => {
                let moved_to = move_aside(&self.path)?;
                tracing::error!(
                    path = %self.path.display(),
                    moved_to = %moved_to.display(),
                    "state file is corrupt ({reason}); it was moved aside and DeviceHub starts \
                     from an empty state, which it rebuilds from the cloud. Nothing needs to be \
                     done; keep the moved file if you report the problem."
                );
                Ok(Loaded::MovedAside { moved_to, reason })
            }
        }
    }

    /// Writes `value` atomically.
    pub fn save(&self, value: &T) -> Result<(), StorageError> {
        let bytes = self.encode(value)?;
        write_atomic(&self.path, &bytes, self.visibility)
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>, StorageError> {
        let serialize_err = |source| StorageError::Serialize {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_value(value).map_err(serialize_err)?;
        let envelope = Envelope {
            format: self.format.to_string(),
            version: self.version,
            sha256: checksum(&body),
            body,
        };
        let mut bytes = serde_json::to_vec_pretty(&envelope).map_err(serialize_err)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, Decode> {
        let envelope: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| Decode::Corrupt(format!("not a DeviceHub state file: {e}")))?;
        if envelope.format != self.format {
            return Err(Decode::Corrupt(format!(
                "holds {:?}, expected {:?}",
                envelope.format, self.format
            )));
        }
        if envelope.version > self.version {
            return Err(Decode::Newer(envelope.version));
        }
        let actual = checksum(&envelope.body);
        if actual != envelope.sha256 {
            return Err(Decode::Corrupt(format!(
                "checksum mismatch (file says {}, content hashes to {actual})",
                envelope.sha256
            )));
        }
        serde_json::from_value(envelope.body)
            .map_err(|e| Decode::Corrupt(format!("unexpected content: {e}")))
    }
}

enum Decode {
    Corrupt(String),
    Newer(u32),
}

/// The checksum of a body: SHA-256 of its compact JSON. Parsing and re-serializing a
/// `serde_json::Value` reproduces the same bytes, so the checksum survives the round trip.
fn checksum(body: &serde_json::Value) -> String {
    let compact = serde_json::to_vec(body).expect("a JSON value always serializes");
    hex::encode(Sha256::digest(&compact))
}

/// Renames a corrupt file to `NAME.corrupt-YYYYMMDDTHHMMSSZ` (with `-N` appended if that
/// name is taken) and returns the new path.
pub fn move_aside(path: &Path) -> Result<PathBuf, StorageError> {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let name = path
        .file_name()
        .ok_or_else(|| StorageError::NotAFile(path.to_path_buf()))?
        .to_string_lossy()
        .into_owned();
    let base = format!("{name}.corrupt-{stamp}");
    let mut candidate = path.with_file_name(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = path.with_file_name(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &candidate).map_err(|source| StorageError::MoveAside {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        count: u32,
    }

    fn sample_file(dir: &Path) -> StateFile<Sample> {
        StateFile::new(
            dir.join("sample.json"),
            "devicehub-sample",
            2,
            Visibility::Default,
        )
    }

    fn sample() -> Sample {
        Sample {
            name: "zebra".into(),
            count: 3,
        }
    }

    fn corrupt_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().contains(".corrupt-"))
            .collect()
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = sample_file(dir.path());
        assert_eq!(file.load().expect("load"), Loaded::Absent);
        file.save(&sample()).expect("save");
        assert_eq!(file.load().expect("load"), Loaded::Present(sample()));
    }

    #[test]
    fn a_truncated_file_is_moved_aside_and_reported_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = sample_file(dir.path());
        file.save(&sample()).expect("save");
        let bytes = std::fs::read(file.path()).expect("read");
        std::fs::write(file.path(), &bytes[..bytes.len() / 2]).expect("truncate");
        let Loaded::MovedAside { moved_to, reason } = file.load().expect("load") else {
            panic!("a truncated file must be moved aside");
        };
        assert!(reason.contains("not a DeviceHub state file"), "{reason}");
        assert!(!file.path().exists());
        assert_eq!(corrupt_files(dir.path()), vec![moved_to.clone()]);
        // The moved file keeps the evidence.
        assert_eq!(
            std::fs::read(&moved_to).expect("read moved"),
            &bytes[..bytes.len() / 2]
        );
        // And the next load starts from nothing.
        assert_eq!(file.load().expect("load"), Loaded::Absent);
    }

    #[test]
    fn a_changed_value_fails_the_checksum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = sample_file(dir.path());
        file.save(&sample()).expect("save");
        let text = std::fs::read_to_string(file.path()).expect("read");
        std::fs::write(file.path(), text.replace("\"count\": 3", "\"count\": 4")).expect("edit");
        match file.load().expect("load") {
            Loaded::MovedAside { reason, .. } => assert!(reason.contains("checksum"), "{reason}"),
            other => panic!("expected the file to be moved aside, got {other:?}"),
        }
    }

    #[test]
    fn another_state_file_copied_over_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other: StateFile<Sample> = StateFile::new(
            dir.path().join("sample.json"),
            "devicehub-other",
            1,
            Visibility::Default,
        );
        other.save(&sample()).expect("save");
        assert!(matches!(
            sample_file(dir.path()).load().expect("load"),
            Loaded::MovedAside { .. }
        ));
    }

    #[test]
    fn a_file_from_a_newer_devicehub_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let newer: StateFile<Sample> = StateFile::new(
            dir.path().join("sample.json"),
            "devicehub-sample",
            3,
            Visibility::Default,
        );
        newer.save(&sample()).expect("save");
        let error = sample_file(dir.path()).load().expect_err("must refuse");
        assert!(matches!(
            error,
            StorageError::NewerFormat {
                found: 3,
                supported: 2,
                ..
            }
        ));
        assert!(newer.path().exists());
        assert!(corrupt_files(dir.path()).is_empty());
    }

    #[test]
    fn moving_aside_twice_in_one_second_keeps_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.json");
        std::fs::write(&path, b"1").expect("write");
        let first = move_aside(&path).expect("first");
        std::fs::write(&path, b"2").expect("write");
        let second = move_aside(&path).expect("second");
        assert_ne!(first, second);
        assert_eq!(corrupt_files(dir.path()).len(), 2);
    }
}
