//! The Jobs engine's durable state: an append-only log of job executions.
//!
//! Every committed change appends one line holding the whole current record of the execution,
//! `<crc32 as 8 lower-case hex digits> <compact JSON>\n`, and syncs it with one `fdatasync`
//! before the change is taken into memory. The last record of an execution wins when the log is
//! read back. Compact JSON never holds a raw newline, so a line is a record.
//!
//! A crash in the middle of an append leaves an incomplete or unchecked last record (a torn
//! tail): it is cut off when the log is opened. A bad record followed by good ones cannot come
//! from a crash; the log is then moved aside like any damaged state file, and a clean log is
//! written from the good records on both sides of it.
//!
//! When the log holds many more records than there are executions, it is rewritten with one
//! record per execution ([`crate::cloud::files::write_atomic`]: temporary file, fsync, rename)
//! and appending continues in the new file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::StoredExecution;
use crate::cloud::files::{write_atomic, Visibility};
use crate::cloud::shadow::state_file::{quarantine, QuarantinedFile};

/// The log's file name inside the jobs state directory.
pub(super) const LOG_FILE_NAME: &str = "executions.log";
/// Below this many records the log is never compacted: rewriting a small file saves nothing.
const COMPACTION_MIN_RECORDS: u64 = 1024;
/// The log is compacted once it holds more than this many records per execution.
const COMPACTION_RECORDS_PER_EXECUTION: u64 = 4;

/// What reading the log at open found.
#[derive(Debug, Default)]
pub(super) struct LoadedLog {
    /// Every good record in log order; a later record of an execution replaces an earlier one.
    pub records: Vec<StoredExecution>,
    /// The damaged log, moved aside, when a record in its middle was bad.
    pub quarantined: Option<QuarantinedFile>,
}

/// The open log, positioned for appending.
#[derive(Debug)]
pub(super) struct ExecutionLog {
    /// `STATE_DIR/executions.log`.
    path: PathBuf,
    /// The file appends go to. `None` after a failed append left it in a state a later append
    /// must not follow (an unsynced or partly written record that could not be cut off): the
    /// next change rewrites the whole log instead.
    file: Option<File>,
    /// The length of the log up to its last complete, synced record: where a failed append is
    /// cut back to.
    len: u64,
    /// Records in the file, to tell when compaction pays.
    records: u64,
    /// No compaction is tried before the log holds this many records; raised after a failed
    /// compaction so that a file system that refuses it is not asked again on every change.
    compaction_floor: u64,
}

/// Why one record of the log cannot be used.
type BadRecord = String;

/// Checks a record beyond its checksum (the engine's validity rules).
pub(super) type RecordCheck<'a> = &'a dyn Fn(&StoredExecution) -> Result<(), String>;

impl ExecutionLog {
    /// Opens the log in `root` (creating an empty one when missing), cutting off a torn tail
    /// and moving a log with a damaged middle aside. `check` refuses records that decode but
    /// break the engine's rules; they count as damaged.
    pub(super) fn open(root: &Path, check: RecordCheck<'_>) -> io::Result<(Self, LoadedLog)> {
        let path = root.join(LOG_FILE_NAME);
        remove_interrupted_rewrites(root)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                // Creating it through write_atomic syncs the directory, so that the file exists
                // durably before the first append relies on fdatasync alone.
                write_atomic(&path, b"", Visibility::Public)?;
                Vec::new()
            }
            Err(error) => return Err(error),
        };
        let parsed = parse(&bytes, check);
        let mut loaded = LoadedLog {
            records: parsed.records,
            quarantined: None,
        };
        let records = u64::try_from(loaded.records.len()).unwrap_or(u64::MAX);
        let mut log = ExecutionLog {
            path,
            file: None,
            len: parsed.good_len,
            records,
            compaction_floor: COMPACTION_MIN_RECORDS,
        };
        match parsed.damage {
            None => {}
            Some(Damage::Tail { offset, reason }) => {
                tracing::warn!(
                    file = %log.path.display(),
                    offset,
                    cut = bytes.len() as u64 - parsed.good_len,
                    %reason,
                    "torn record at the end of the jobs log cut off"
                );
                let file = OpenOptions::new().write(true).open(&log.path)?;
                file.set_len(parsed.good_len)?;
                file.sync_all()?;
            }
            Some(Damage::Middle { offset, reason }) => {
                let moved_to = quarantine(&log.path)?;
                tracing::error!(
                    file = %log.path.display(),
                    moved_to = %moved_to.display(),
                    offset,
                    %reason,
                    "damaged record in the jobs log: log moved aside, its good records kept"
                );
                loaded.quarantined = Some(QuarantinedFile {
                    original: log.path.clone(),
                    moved_to,
                    reason: format!("record at byte {offset}: {reason}"),
                });
                let latest = latest_per_execution(&loaded.records);
                log.rewrite(latest)?;
                return Ok((log, loaded));
            }
        }
        log.file = Some(open_for_append(&log.path)?);
        Ok((log, loaded))
    }

    /// Appends `execution` durably (write, then `fdatasync`). When the log must be rewritten
    /// first, `snapshot` gives every execution as it will be after this change, and the log is
    /// replaced by one record of each. On error nothing was committed and the log is left so
    /// that the next append is safe.
    pub(super) fn append<'a>(
        &mut self,
        execution: &StoredExecution,
        snapshot: impl FnOnce() -> Vec<&'a StoredExecution>,
    ) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return self.rewrite(snapshot());
        };
        let line = encode(execution)?;
        if let Err(error) = file.write_all(&line) {
            // A partial line at the end would be followed by the next record and read back as
            // a damaged middle; cutting it off keeps appending safe, and when even that fails
            // the next change rewrites the log instead.
            if file.set_len(self.len).is_err() {
                self.file = None;
            }
            return Err(error);
        }
        if let Err(error) = file.sync_data() {
            // After a failed sync the kernel may have dropped the dirty pages, so what the
            // file holds on disk is unknown: only a complete rewrite is trustworthy again.
            let _ = file.set_len(self.len);
            self.file = None;
            return Err(error);
        }
        self.len += line.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Whether the log holds enough superseded records for a compaction to pay, given how many
    /// executions there are (counted only once the log is past its floor).
    pub(super) fn wants_compaction(&self, executions: impl FnOnce() -> usize) -> bool {
        self.file.is_some()
            && self.records > self.compaction_floor
            && self.records
                > u64::try_from(executions())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(COMPACTION_RECORDS_PER_EXECUTION)
    }

    /// Rewrites the log as one record per execution. A failure leaves the current log in use
    /// (nothing is lost: it still holds every change) and postpones the next attempt.
    pub(super) fn compact(&mut self, executions: Vec<&StoredExecution>) {
        let before = self.len;
        match self.rewrite(executions) {
            Ok(()) => tracing::debug!(
                file = %self.path.display(),
                before,
                after = self.len,
                "jobs log compacted"
            ),
            Err(error) => {
                self.compaction_floor = self.records.saturating_mul(2);
                tracing::warn!(
                    file = %self.path.display(),
                    error = %error,
                    "jobs log not compacted; it keeps growing until the next attempt"
                );
            }
        }
    }

    /// Replaces the log atomically with one record per execution, in creation order, and
    /// reopens it for appending.
    pub(super) fn rewrite(&mut self, mut executions: Vec<&StoredExecution>) -> io::Result<()> {
        executions.sort_by_key(|execution| execution.sequence);
        let mut contents = Vec::new();
        for execution in &executions {
            contents.extend_from_slice(&encode(execution)?);
        }
        write_atomic(&self.path, &contents, Visibility::Public)?;
        // The old handle points at the replaced file; until the new one is open, the next
        // change has to rewrite again.
        self.file = None;
        self.len = contents.len() as u64;
        self.records = u64::try_from(executions.len()).unwrap_or(u64::MAX);
        self.compaction_floor = COMPACTION_MIN_RECORDS;
        self.file = Some(open_for_append(&self.path)?);
        Ok(())
    }

    /// Where the log is, for error messages.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// How many records the log file holds.
    #[cfg(test)]
    pub(super) fn records(&self) -> u64 {
        self.records
    }

    /// Replaces the file appends go to, so that tests can make appends fail for real (with a
    /// device that answers every write with "no space left").
    #[cfg(test)]
    pub(super) fn replace_file_for_test(&mut self, file: File) {
        self.file = Some(file);
    }
}

/// Removes the temporary files of rewrites that a crash interrupted before their rename
/// (`.executions.log.tmpPID`): the log beside them is still the last complete one.
fn remove_interrupted_rewrites(root: &Path) -> io::Result<()> {
    let prefix = format!(".{LOG_FILE_NAME}.tmp");
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let is_leftover = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(&prefix));
        if is_leftover && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn open_for_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

/// One log line for `execution`.
fn encode(execution: &StoredExecution) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(execution).map_err(io::Error::other)?;
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

/// One line without its newline, checked and decoded.
fn decode(line: &[u8], check: RecordCheck<'_>) -> Result<StoredExecution, BadRecord> {
    let (Some(crc_hex), Some(b' '), Some(json)) = (line.get(..8), line.get(8), line.get(9..))
    else {
        return Err("too short for a record".into());
    };
    let expected = std::str::from_utf8(crc_hex)
        .ok()
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or("no checksum")?;
    if crc32fast::hash(json) != expected {
        return Err("checksum mismatch".into());
    }
    let record: StoredExecution =
        serde_json::from_slice(json).map_err(|e| format!("not a valid record: {e}"))?;
    check(&record)?;
    Ok(record)
}

/// What is wrong with a log, if anything.
#[derive(Debug, PartialEq, Eq)]
enum Damage {
    /// The records from `offset` to the end are bad: an interrupted append.
    Tail { offset: u64, reason: String },
    /// A bad record at `offset` has good ones after it.
    Middle { offset: u64, reason: String },
}

/// The log read back.
#[derive(Debug)]
struct ParsedLog {
    records: Vec<StoredExecution>,
    /// The length of the log up to the end of its last good record.
    good_len: u64,
    damage: Option<Damage>,
}

fn parse(bytes: &[u8], check: RecordCheck<'_>) -> ParsedLog {
    let mut parsed = ParsedLog {
        records: Vec::new(),
        good_len: 0,
        damage: None,
    };
    // The first bad record; it becomes a damaged middle as soon as a good one follows it.
    let mut first_bad: Option<(u64, String)> = None;
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], offset + end + 1),
            None => (rest, bytes.len()),
        };
        let complete = next <= bytes.len() && bytes.get(next - 1) == Some(&b'\n');
        let result = if complete {
            decode(line, check)
        } else {
            Err("incomplete record".into())
        };
        match result {
            Ok(record) => {
                if let Some((bad_offset, reason)) = first_bad.take() {
                    parsed.damage = Some(Damage::Middle {
                        offset: bad_offset,
                        reason,
                    });
                }
                parsed.records.push(record);
                if parsed.damage.is_none() {
                    parsed.good_len = next as u64;
                }
            }
            Err(reason) => {
                if first_bad.is_none() && parsed.damage.is_none() {
                    first_bad = Some((offset as u64, reason));
                }
            }
        }
        offset = next;
    }
    if parsed.damage.is_none() {
        if let Some((offset, reason)) = first_bad {
            parsed.damage = Some(Damage::Tail { offset, reason });
        }
    }
    parsed
}

/// The last record of each execution.
fn latest_per_execution(records: &[StoredExecution]) -> Vec<&StoredExecution> {
    let mut latest = std::collections::BTreeMap::new();
    for record in records {
        latest.insert((&record.thing_name, &record.job_id), record);
    }
    latest.into_values().collect()
}
