//! Record files of the emulator's cloud engines: file names built from MQTT names, and loading a
//! directory of JSON records in which a damaged file is moved aside and reported instead of being
//! dropped.
//!
//! The Device Shadow engine keeps one small JSON file per record under
//! `ROOT/{thing}/{record}.json`, written with [`crate::cloud::files::write_atomic`] (temporary
//! file, fsync, rename), so that a crash leaves either the old or the new record, never a torn
//! one. The Jobs engine kept its executions the same way in earlier versions and still loads
//! such files; it now appends to a log, and moves a damaged log aside with [`quarantine`] too.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// The suffix of a record file; anything else in a thing's directory is not a record.
const RECORD_SUFFIX: &str = ".json";
/// What the name of a temporary file of [`crate::cloud::files::write_atomic`] holds after the
/// record's name: it is written as `.NAME.tmpPID` beside the record.
const TEMP_MARKER: &str = ".tmp";
/// The suffix given to a damaged record when it is moved aside.
const CORRUPT_SUFFIX: &str = ".corrupt";

/// A record file that could not be read back and was moved aside so that its bytes stay
/// available for inspection while the service starts without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedFile {
    /// Where the record was.
    pub original: PathBuf,
    /// Where its bytes are now.
    pub moved_to: PathBuf,
    /// Why it could not be loaded.
    pub reason: String,
}

/// What loading a state directory found: the good records and the files moved aside.
#[derive(Debug)]
pub(crate) struct LoadedRecords<T> {
    /// Each readable record with the file it came from.
    pub records: Vec<(PathBuf, T)>,
    /// Each damaged record, already renamed out of the way.
    pub quarantined: Vec<QuarantinedFile>,
}

/// Makes a name from an MQTT topic safe and unambiguous as a file name on every platform:
/// lower-case ASCII letters, digits, `_` and `-` stay as they are, every other byte becomes
/// `%XX`. Upper-case letters are encoded too because thing names are case-sensitive while the
/// default file systems of macOS and Windows are not: `Desk-1` and `desk-1` must not share a file.
pub(crate) fn encode_file_name(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Reads every `ROOT/*/*.json` record. A record that does not parse, or that `check` refuses
/// (for example because it names another thing than its folder), is renamed to
/// `NAME.json.corrupt` (or `.corrupt.N` when that exists) and listed in the result. Temporary
/// files left by an interrupted write (`.NAME.json.tmpPID`) are removed: their rename never
/// happened, so the record file beside them is still the last complete version.
pub(crate) fn load_records<T: DeserializeOwned>(
    root: &Path,
    check: impl Fn(&Path, &T) -> Result<(), String>,
) -> io::Result<LoadedRecords<T>> {
    fs::create_dir_all(root)?;
    let mut loaded = LoadedRecords {
        records: Vec::new(),
        quarantined: Vec::new(),
    };
    let mut thing_dirs = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            thing_dirs.push(entry.path());
        }
    }
    thing_dirs.sort();
    for dir in thing_dirs {
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                files.push(entry.path());
            }
        }
        files.sort();
        for path in files {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if name.starts_with('.') && name.contains(&format!("{RECORD_SUFFIX}{TEMP_MARKER}")) {
                fs::remove_file(&path)?;
                continue;
            }
            if !name.ends_with(RECORD_SUFFIX) {
                continue;
            }
            let parsed = fs::read(&path)
                .map_err(|e| format!("cannot read: {e}"))
                .and_then(|bytes| {
                    serde_json::from_slice::<T>(&bytes)
                        .map_err(|e| format!("not a valid record: {e}"))
                })
                .and_then(|record| check(&path, &record).map(|()| record));
            match parsed {
                Ok(record) => loaded.records.push((path, record)),
                Err(reason) => {
                    let moved_to = quarantine(&path)?;
                    tracing::error!(
                        file = %path.display(),
                        moved_to = %moved_to.display(),
                        %reason,
                        "damaged state file moved aside"
                    );
                    loaded.quarantined.push(QuarantinedFile {
                        original: path,
                        moved_to,
                        reason,
                    });
                }
            }
        }
    }
    Ok(loaded)
}

/// Renames a damaged record out of the way without overwriting an earlier damaged copy.
pub(crate) fn quarantine(path: &Path) -> io::Result<PathBuf> {
    let mut base = path.as_os_str().to_os_string();
    base.push(CORRUPT_SUFFIX);
    let mut candidate = PathBuf::from(&base);
    let mut counter = 1u32;
    while candidate.exists() {
        let mut numbered = base.clone();
        numbered.push(format!(".{counter}"));
        candidate = PathBuf::from(numbered);
        counter += 1;
    }
    fs::rename(path, &candidate)?;
    Ok(candidate)
}
