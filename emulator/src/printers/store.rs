//! The state one simulated printer shares between its print port and its control API:
//! fault flags, printed labels, labels held back by a fault, decoding errors and counters.
//!
//! Locking: one `std::sync::Mutex` guards everything, held only for short, non-blocking
//! updates (never across an `.await` or a file write), so both the async connection tasks and
//! the HTTP handlers may take it directly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::bitmap::Bitmap;

/// What a simulator says about itself in `GET /status`.
#[derive(Debug, Clone, Serialize)]
pub struct PrinterInfo {
    /// Printer family, e.g. `zebra`.
    pub family: String,
    /// The model the simulator plays, e.g. `ZD620`.
    pub model: String,
    /// The printer language it decodes, e.g. `zpl` or `epl2`.
    pub language: String,
    /// Print resolution in dots per inch.
    pub dpi: u32,
    /// Print head width in dots: the label width when a job does not set one.
    pub width_dots: u32,
}

/// Faults injected through the control API. Every field defaults to "no fault", so a body
/// naming only some fields clears the others: the body is the whole new fault state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// No media: the printer holds jobs and reports paper out.
    #[serde(default)]
    pub paper_out: bool,
    /// Print head lifted: the printer holds jobs and reports head open.
    #[serde(default)]
    pub head_open: bool,
    /// Paused from the front panel: the printer holds jobs and reports paused.
    #[serde(default)]
    pub paused: bool,
    /// When set, the printer closes the connection that delivers the N-th byte counted from
    /// the moment this was set, right after that byte. It fires once, then clears itself.
    #[serde(default)]
    pub drop_after_bytes: Option<u64>,
    /// The labels the printer reports as loaded instead of its default, for printers that read
    /// the roll's size themselves (DYMO's 550 series, from the roll's NFC tag). `None`: the
    /// simulator's default labels.
    #[serde(default)]
    pub loaded_media: Option<MediaSize>,
}

/// Labels loaded in a printer, as [`Faults::loaded_media`] sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSize {
    /// Width across the print head, in millimetres.
    pub width_mm: u16,
    /// Length of one label, in millimetres; 0 for a continuous roll.
    pub length_mm: u16,
    /// Labels the printer does not recognise as its maker's (no valid tag): a DYMO 550
    /// reports them as counterfeit and prints nothing on them.
    #[serde(default)]
    pub unrecognized: bool,
}

impl Faults {
    /// Whether a fault keeps the printer from printing.
    pub fn blocks_printing(&self) -> bool {
        self.paper_out || self.head_open || self.paused
    }
}

/// A label as a decoder hands it over, before it is printed or held.
#[derive(Debug, Clone)]
pub struct DecodedLabel {
    /// What the print head would print on one copy.
    pub bitmap: Bitmap,
    /// Copies requested (`^PQ`, EPL2 `P`).
    pub copies: u32,
    /// Language of the job, e.g. `zpl`.
    pub language: String,
    /// How the graphic data was encoded, e.g. `Z64`, `ACS`, `hex`, `binary`, `EPL2`,
    /// several joined by `+`, or `none` for a label without graphics.
    pub encoding: String,
    /// Bytes of the stream that made up this label's job.
    pub bytes_received: u64,
    /// Whether some black dots of a graphic fell outside the label and were cut off.
    pub clipped: bool,
    /// Commands the simulator accepted but ignored.
    pub unsupported_commands: BTreeSet<String>,
    /// Raw parameters of setting commands (print rate, darkness, media tracking...), keyed by
    /// the command, e.g. `"^PR": "4,4,4"`.
    pub settings: BTreeMap<String, String>,
}

/// A printed label as the control API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct LabelRecord {
    /// Position in the list, from 0; `DELETE /labels` starts again at 0.
    pub index: usize,
    /// Width in dots.
    pub width: u32,
    /// Height in dots.
    pub height: u32,
    /// Copies printed.
    pub copies: u32,
    /// Language of the job.
    pub language: String,
    /// Graphic encoding seen.
    pub encoding: String,
    /// Bytes of the stream that made up this label's job.
    pub bytes_received: u64,
    /// When the job was complete, RFC 3339 UTC.
    pub time: String,
    /// Number of black dots on one copy.
    pub black_dots: u64,
    /// Whether some black dots of a graphic fell outside the label and were cut off: a sign
    /// that the job's `^PW`/`^LL` (or `q`/`Q`) do not fit its graphic.
    pub clipped: bool,
    /// Commands accepted but ignored.
    pub unsupported_commands: BTreeSet<String>,
    /// Raw parameters of setting commands.
    pub settings: BTreeMap<String, String>,
}

/// Why a job did not become a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The job was complete but its data could not be decoded (bad CRC, bad ACS...).
    Decode,
    /// The connection ended in the middle of a job.
    Incomplete,
    /// The printer refused the job: its media does not match the loaded media, or a fault
    /// stopped it (printers that report errors instead of holding jobs, such as Brother QL).
    Refused,
}

/// A job the simulator could not print, as `GET /errors` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord {
    /// Position in the list, from 0.
    pub index: usize,
    /// Decode error, incomplete or refused job.
    pub kind: ErrorKind,
    /// Language of the job.
    pub language: String,
    /// What was wrong, in words.
    pub reason: String,
    /// Bytes of the stream that made up the failed job.
    pub bytes_received: u64,
    /// When the error was found, RFC 3339 UTC.
    pub time: String,
}

/// Running totals since the simulator started (not reset by `DELETE /labels`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counters {
    /// Print-port connections accepted.
    pub connections: u64,
    /// Bytes received on the print port.
    pub bytes_received: u64,
    /// Labels recorded as printed (one per job, whatever its copies).
    pub labels_printed: u64,
    /// Copies printed, summed over labels.
    pub copies_printed: u64,
    /// Jobs that became errors.
    pub errors: u64,
    /// Status queries answered (`~HS`, `^ee`...).
    pub status_queries: u64,
    /// Connections closed on purpose by `drop_after_bytes`.
    pub connections_dropped: u64,
}

/// A PNG the writer thread must store in the output directory.
#[derive(Debug)]
pub(crate) struct PngJob {
    pub(crate) path: PathBuf,
    pub(crate) bitmap: Bitmap,
}

struct StoredLabel {
    record: LabelRecord,
    bitmap: Bitmap,
}

/// A label decoded while a fault was set, waiting like a format in the printer's buffer.
struct HeldLabel {
    label: DecodedLabel,
    time: String,
}

#[derive(Default)]
struct Inner {
    faults: Faults,
    /// Bytes counted against `faults.drop_after_bytes` since it was armed.
    drop_counted: u64,
    labels: Vec<StoredLabel>,
    held: Vec<HeldLabel>,
    errors: Vec<ErrorRecord>,
    counters: Counters,
    /// Commands seen outside any job, which no label's metadata can carry.
    unsupported_outside_jobs: BTreeSet<String>,
    /// Sequence number of the next PNG file; it never restarts, so files are not overwritten.
    next_file_number: u64,
}

/// How much of a read the connection may hand to the decoder before an armed drop fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadBudget {
    /// Bytes of the read to decode.
    pub(crate) accept: usize,
    /// Whether to close the connection after those bytes.
    pub(crate) drop_connection: bool,
}

/// The shared state of one simulated printer.
pub struct PrinterState {
    info: PrinterInfo,
    out_dir: Option<PathBuf>,
    inner: Mutex<Inner>,
    /// Hands PNGs to the writer thread; taken (closed) at shutdown so the thread ends.
    png_writer: Mutex<Option<mpsc::Sender<PngJob>>>,
}

impl std::fmt::Debug for PrinterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrinterState")
            .field("info", &self.info)
            .field("out_dir", &self.out_dir)
            .finish_non_exhaustive()
    }
}

/// Everything `GET /status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Family, model, language, resolution.
    #[serde(flatten)]
    pub info: PrinterInfo,
    /// Current faults.
    pub faults: Faults,
    /// Labels decoded while a fault was set, not printed yet.
    pub held_labels: usize,
    /// Labels printed since the last `DELETE /labels`.
    pub labels: usize,
    /// Errors since the last `DELETE /labels` or `DELETE /errors`.
    pub errors: usize,
    /// Running totals.
    pub counters: Counters,
    /// Commands seen outside any job that the simulator ignores.
    pub unsupported_outside_jobs: BTreeSet<String>,
}

impl PrinterState {
    pub(crate) fn new(
        info: PrinterInfo,
        out_dir: Option<PathBuf>,
        png_writer: Option<mpsc::Sender<PngJob>>,
    ) -> Self {
        Self {
            info,
            out_dir,
            inner: Mutex::new(Inner::default()),
            png_writer: Mutex::new(png_writer),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, still consistent enough
        // for a simulator to go on serving, so a poisoned lock is used as is.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Who this printer is.
    pub fn info(&self) -> &PrinterInfo {
        &self.info
    }

    /// The current faults.
    pub fn faults(&self) -> Faults {
        self.lock().faults
    }

    /// Replaces the fault state. When no fault blocks printing any more, the held labels are
    /// printed, as a real printer prints the formats in its buffer once it is ready again.
    pub fn set_faults(&self, faults: Faults) {
        let mut pngs = Vec::new();
        {
            let mut inner = self.lock();
            inner.faults = faults;
            inner.drop_counted = 0;
            if !faults.blocks_printing() {
                let held = std::mem::take(&mut inner.held);
                for HeldLabel { label, time } in held {
                    pngs.extend(self.print_locked(&mut inner, label, time));
                }
            }
        }
        self.send_pngs(pngs);
    }

    /// Hands a decoded label to the printer: printed at once, or held while a fault is set.
    pub fn submit_label(&self, label: DecodedLabel) {
        let time = rfc3339_now();
        let png = {
            let mut inner = self.lock();
            if inner.faults.blocks_printing() {
                inner.held.push(HeldLabel { label, time });
                None
            } else {
                self.print_locked(&mut inner, label, time)
            }
        };
        self.send_pngs(png);
    }

    fn print_locked(&self, inner: &mut Inner, label: DecodedLabel, time: String) -> Option<PngJob> {
        let index = inner.labels.len();
        let record = LabelRecord {
            index,
            width: label.bitmap.width(),
            height: label.bitmap.height(),
            copies: label.copies,
            language: label.language,
            encoding: label.encoding,
            bytes_received: label.bytes_received,
            time,
            black_dots: label.bitmap.black_dots(),
            clipped: label.clipped,
            unsupported_commands: label.unsupported_commands,
            settings: label.settings,
        };
        inner.counters.labels_printed += 1;
        inner.counters.copies_printed += u64::from(record.copies);
        let png = self.out_dir.as_ref().map(|dir| {
            let number = inner.next_file_number;
            inner.next_file_number += 1;
            PngJob {
                path: dir.join(format!("label-{number:04}.png")),
                bitmap: label.bitmap.clone(),
            }
        });
        inner.labels.push(StoredLabel {
            record,
            bitmap: label.bitmap,
        });
        png
    }

    fn send_pngs(&self, pngs: impl IntoIterator<Item = PngJob>) {
        let writer = self
            .png_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(writer) = writer.as_ref() {
            for png in pngs {
                if writer.send(png).is_err() {
                    tracing::warn!("the label PNG writer has stopped; label not written");
                }
            }
        }
    }

    /// Closes the PNG queue so the writer thread ends once it has written what is queued.
    pub(crate) fn close_png_writer(&self) {
        self.png_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }

    /// Records a job that did not become a label.
    pub fn record_error(&self, kind: ErrorKind, language: &str, reason: String, bytes: u64) {
        tracing::info!(%reason, ?kind, "print job rejected");
        let mut inner = self.lock();
        let index = inner.errors.len();
        inner.errors.push(ErrorRecord {
            index,
            kind,
            language: language.to_owned(),
            reason,
            bytes_received: bytes,
            time: rfc3339_now(),
        });
        inner.counters.errors += 1;
    }

    /// Notes a command seen outside any job that the simulator ignores.
    pub fn note_unsupported_outside_job(&self, command: &str) {
        let mut inner = self.lock();
        if !inner.unsupported_outside_jobs.contains(command) {
            inner.unsupported_outside_jobs.insert(command.to_owned());
        }
    }

    /// Counts an answered status query.
    pub fn note_status_query(&self) {
        self.lock().counters.status_queries += 1;
    }

    /// Number of held labels and the copies they still owe.
    pub fn held_summary(&self) -> (usize, u64) {
        let inner = self.lock();
        let copies = inner.held.iter().map(|h| u64::from(h.label.copies)).sum();
        (inner.held.len(), copies)
    }

    /// Discards the held labels, as a printer's "cancel all" does.
    pub fn discard_held(&self) -> usize {
        let mut inner = self.lock();
        let count = inner.held.len();
        inner.held.clear();
        count
    }

    /// Counts a new connection.
    pub(crate) fn note_connection(&self) {
        self.lock().counters.connections += 1;
    }

    /// Counts `received` bytes and decides how many of them reach the decoder before an
    /// armed `drop_after_bytes` closes the connection.
    pub(crate) fn budget_read(&self, received: usize) -> ReadBudget {
        let mut inner = self.lock();
        let Some(limit) = inner.faults.drop_after_bytes else {
            inner.counters.bytes_received += received as u64;
            return ReadBudget {
                accept: received,
                drop_connection: false,
            };
        };
        let remaining = limit.saturating_sub(inner.drop_counted);
        if (received as u64) < remaining {
            inner.drop_counted += received as u64;
            inner.counters.bytes_received += received as u64;
            return ReadBudget {
                accept: received,
                drop_connection: false,
            };
        }
        // `remaining` is below `received`, so it fits in usize.
        let accept = remaining as usize;
        inner.counters.bytes_received += accept as u64;
        inner.counters.connections_dropped += 1;
        inner.faults.drop_after_bytes = None;
        inner.drop_counted = 0;
        ReadBudget {
            accept,
            drop_connection: true,
        }
    }

    /// The printed labels, oldest first.
    pub fn labels(&self) -> Vec<LabelRecord> {
        self.lock()
            .labels
            .iter()
            .map(|l| l.record.clone())
            .collect()
    }

    /// One printed label's record and bitmap.
    pub fn label(&self, index: usize) -> Option<(LabelRecord, Bitmap)> {
        self.lock()
            .labels
            .get(index)
            .map(|l| (l.record.clone(), l.bitmap.clone()))
    }

    /// The errors, oldest first.
    pub fn errors(&self) -> Vec<ErrorRecord> {
        self.lock().errors.clone()
    }

    /// Forgets printed labels, held labels and errors.
    pub fn clear_labels(&self) {
        let mut inner = self.lock();
        inner.labels.clear();
        inner.held.clear();
        inner.errors.clear();
    }

    /// Forgets the errors only.
    pub fn clear_errors(&self) {
        self.lock().errors.clear();
    }

    /// The `GET /status` report.
    pub fn status(&self) -> StatusReport {
        let inner = self.lock();
        StatusReport {
            info: self.info.clone(),
            faults: inner.faults,
            held_labels: inner.held.len(),
            labels: inner.labels.len(),
            errors: inner.errors.len(),
            counters: inner.counters,
            unsupported_outside_jobs: inner.unsupported_outside_jobs.clone(),
        }
    }
}

/// The current time as RFC 3339 UTC with milliseconds, e.g. `2026-11-24T03:10:40.123Z`.
pub(crate) fn rfc3339_now() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since_epoch.as_secs(), since_epoch.subsec_millis())
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC. The civil date comes from Howard
/// Hinnant's `civil_from_days` algorithm, exact for every date after 1970.
fn rfc3339(seconds: u64, millis: u32) -> String {
    let days = seconds / 86_400;
    let second_of_day = seconds % 86_400;
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_489_840, 123), "2026-11-24T03:10:40.123Z");
    }
}
