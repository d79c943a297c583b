//! Size-capped, rotated log files for `tracing_subscriber`: `devicehub.log` is renamed to
//! `devicehub.log.1` (and `.1` to `.2`, ...) once it would grow past a size limit, and only the
//! newest `keep` rotated files are kept. (`tracing-appender` rotates by time only, which does
//! not bound disk use on a desk PC that logs a burst of errors.)
//!
//! Each formatted event reaches the writer as one `write` call, and rotation happens only
//! between calls, so a line is never split across two files. A line longer than the limit is
//! written whole into a fresh file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::atomic::{ensure_dir, Visibility};
use super::StorageError;

/// The log file's name inside `logs/`.
pub const LOG_FILE: &str = "devicehub.log";

/// A writer that rotates `logs/devicehub.log` by size. Clones share the same file.
#[derive(Debug, Clone)]
pub struct RotatingLog {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    file: Option<File>,
    /// Bytes in the current file, so that rotation needs no `stat` per event.
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl RotatingLog {
    /// Opens (appending to) `dir/devicehub.log`, rotating once it would pass `max_bytes` and
    /// keeping `keep` older files. `dir` is created owner-only: logs name devices and jobs.
    pub fn open(dir: &Path, max_bytes: u64, keep: usize) -> Result<Self, StorageError> {
        ensure_dir(dir, Visibility::OwnerOnly)?;
        let path = dir.join(LOG_FILE);
        let file = open_append(&path).map_err(|source| StorageError::Write {
            path: path.clone(),
            source,
        })?;
        let size = file
            .metadata()
            .map_err(|source| StorageError::Read {
                path: path.clone(),
                source,
            })?
            .len();
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                path,
                file: Some(file),
                size,
                max_bytes: max_bytes.max(1),
                keep,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves at worst a partly written line; keep logging.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The path of rotated file number `n` (1 is the newest).
    pub fn rotated_path(path: &Path, n: usize) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

impl Inner {
    fn rotate(&mut self) -> io::Result<()> {
        // Close the current file first: Windows cannot rename an open file.
        self.file = None;
        if self.keep == 0 {
            fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            fs::remove_file(RotatingLog::rotated_path(&self.path, self.keep))
                .or_else(ignore_missing)?;
            for n in (1..self.keep).rev() {
                let from = RotatingLog::rotated_path(&self.path, n);
                fs::rename(&from, RotatingLog::rotated_path(&self.path, n + 1))
                    .or_else(ignore_missing)?;
            }
            fs::rename(&self.path, RotatingLog::rotated_path(&self.path, 1))
                .or_else(ignore_missing)?;
        }
        self.file = Some(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = buf.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                // An earlier rotation failed half-way; try to reopen rather than stop logging.
                let file = open_append(&self.path)?;
                self.size = file.metadata()?.len();
                self.file.insert(file)
            }
        };
        file.write_all(buf)?;
        self.size += len;
        Ok(buf.len())
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.lock().file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RotatingLog {
    type Writer = RotatingLog;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotates_at_the_limit_and_keeps_k_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = RotatingLog::open(dir.path(), 20, 2).expect("open");
        for line in [
            "line-01 aaaaa\n",
            "line-02 bbbbb\n",
            "line-03 ccccc\n",
            "line-04 ddddd\n",
        ] {
            log.write_all(line.as_bytes()).expect("write");
        }
        let current = dir.path().join(LOG_FILE);
        assert_eq!(read(&current), "line-04 ddddd\n");
        assert_eq!(
            read(&RotatingLog::rotated_path(&current, 1)),
            "line-03 ccccc\n"
        );
        assert_eq!(
            read(&RotatingLog::rotated_path(&current, 2)),
            "line-02 bbbbb\n"
        );
        assert!(!RotatingLog::rotated_path(&current, 3).exists());
    }

    #[test]
    fn appends_to_an_existing_log_and_counts_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(LOG_FILE), "0123456789\n").expect("seed");
        let mut log = RotatingLog::open(dir.path(), 16, 1).expect("open");
        log.write_all(b"abcd\n").expect("fits: 11 + 5 = 16");
        assert_eq!(read(&dir.path().join(LOG_FILE)), "0123456789\nabcd\n");
        log.write_all(b"x\n").expect("rotates");
        assert_eq!(read(&dir.path().join(LOG_FILE)), "x\n");
    }

    #[test]
    fn a_line_longer_than_the_limit_is_kept_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = RotatingLog::open(dir.path(), 8, 1).expect("open");
        let long = "this line is longer than eight bytes\n";
        log.write_all(long.as_bytes()).expect("write");
        assert_eq!(read(&dir.path().join(LOG_FILE)), long);
    }

    #[test]
    fn keep_zero_keeps_only_the_current_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = RotatingLog::open(dir.path(), 4, 0).expect("open");
        log.write_all(b"abc\n").expect("write");
        log.write_all(b"def\n").expect("write");
        assert_eq!(read(&dir.path().join(LOG_FILE)), "def\n");
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    #[test]
    fn works_as_a_tracing_writer() {
        use tracing_subscriber::layer::SubscriberExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let log = RotatingLog::open(dir.path(), 200, 3).expect("open");
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(log)
                .with_ansi(false),
        );
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..20 {
                tracing::info!(event = i, "printer ready");
            }
        });
        let current = dir.path().join(LOG_FILE);
        let files: Vec<PathBuf> = std::iter::once(current.clone())
            .chain((1..=3).map(|n| RotatingLog::rotated_path(&current, n)))
            .collect();
        for file in &files {
            let text = read(file);
            assert!(
                text.len() <= 200,
                "{} is {} bytes",
                file.display(),
                text.len()
            );
            // Every line is whole: rotation happens only between events.
            for line in text.lines() {
                assert!(line.contains("printer ready"), "{line:?}");
            }
        }
        assert!(!RotatingLog::rotated_path(&current, 4).exists());
        assert!(read(&current).contains("event=19"));
    }
}
