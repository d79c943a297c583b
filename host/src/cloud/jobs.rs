//! Print jobs from the cloud over AWS IoT Jobs: each job is printed at most once and answered
//! with `{jobId}/update`; one job at a time per device, devices in parallel.
//!
//! # Layout
//! - this file: job documents, failures and outcomes, running one job (download, render,
//!   print), print file downloads.
//! - `queue`: the jobs task: which jobs are pending, in which order they start, the requests
//!   to the cloud (see its docs for the protocol).
//!
//! # At most once
//! The [`JobJournal`] records `Printing{device}` before the first byte goes to the printer,
//! and the outcome afterwards. A job the journal knows as finished is answered with its
//! recorded outcome without printing; a job found in `Printing` (DeviceHub stopped mid-print)
//! is reported FAILED so that a person checks the printer, never printed again. Refusals are
//! journaled as `Failed` with the reason prefixed by [`REJECTED_PREFIX`], so that a replay
//! answers REJECTED again.
//!
//! # Device choice
//! A print document may name a `device`. Without one, the cloud's default printer for the
//! document's `kind` applies (the shadow's `desired.config.defaultPrinter`; a default that is
//! not attached fails the job rather than printing postage on another printer's media), else
//! the first printer of the config's device table that is attached, else the attached printer
//! whose ID sorts first (USB printers found by discovery).
//!
//! # Privacy
//! Job documents and print files never reach the journal or the logs: the logs name job IDs,
//! device IDs, sizes and outcomes; print files are held in memory only; download URLs (whose
//! query strings are signatures) are never logged or reported.

mod queue;

pub use queue::JobsTask;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use abi_stable::std_types::ROption;
use devicehub_plugin_api::{
    DeviceKind, ErrorKind, InputKind, MediaKind, MediaRequest, PrinterProfile, ScaleState,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::link::LinkError;
use super::shadow::AgentSettings;
use super::tls::{self, TlsError};
use crate::devices::{DeviceError, DeviceTable};
use crate::print::{self, FileFormat, PrintOptions, MAX_COPIES};
use crate::scales;
use crate::sheets::compose::{ImagePlacement, INDICIA_DPI};
use crate::sheets::media::{Media, Orientation};
use crate::sheets::{SheetContent, SheetJob};
use crate::storage::journal::JournalError;
use crate::storage::{JobJournal, JobState, StartDecision};

/// The largest print file DeviceHub downloads: far above any label or indicia, small enough to
/// hold in memory.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// How long one download may take from request to last byte.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for a print that has started before reporting it failed.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// AWS limits each `statusDetails` value to 1024 characters; reasons are cut well below.
const MAX_DETAIL_LEN: usize = 512;
/// Journal reasons that begin with this were REJECTED, not FAILED.
pub const REJECTED_PREFIX: &str = "rejected: ";

/// The operations a job document may ask for.
pub const OPERATIONS: [&str; 2] = ["print", "scale.read"];

/// A parsed job document.
#[derive(Debug, Clone, PartialEq)]
pub enum JobDocument {
    Print(PrintDocument),
    ScaleRead(ScaleDocument),
}

/// `{"operation":"print", ...}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrintDocument {
    pub file: PrintFile,
    /// What is printed: it picks the default printer and how the file is rendered.
    #[serde(default)]
    pub kind: JobKind,
    /// The media the file was laid out for; a printer that can tell what is loaded refuses a
    /// job that does not fit it.
    #[serde(default)]
    pub media: Option<MediaSpec>,
    /// For office (sheet) printers: the envelope or sheet, and where an image goes on it.
    #[serde(default)]
    pub sheet: Option<SheetSpec>,
    /// Labels to print of each page, 1..=[`MAX_COPIES`].
    #[serde(default = "one")]
    pub copies: u32,
    /// The device to print on; the default rule applies when absent (see the module docs).
    #[serde(default)]
    pub device: Option<String>,
}

fn one() -> u32 {
    1
}

/// What a print job prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// A shipping label.
    #[default]
    Label,
    /// Postage indicia (stamps, envelopes).
    Indicia,
    /// A sheet for an office printer (stamp sheets, letters).
    Sheet,
}

impl JobKind {
    /// The name used in documents and settings.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Label => "label",
            JobKind::Indicia => "indicia",
            JobKind::Sheet => "sheet",
        }
    }
}

/// `"media": {"widthMm": 102, "heightMm": 152, "type": "die-cut"}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MediaSpec {
    /// The label's width in millimetres.
    pub width_mm: f64,
    /// The label's length in millimetres; absent on continuous media cut to the page's length.
    #[serde(default)]
    pub height_mm: Option<f64>,
    #[serde(rename = "type", default)]
    pub media_type: MediaType,
}

/// The kind of media a job was laid out for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaType {
    #[default]
    DieCut,
    Continuous,
    BlackMark,
    Sheet,
}

/// `"sheet": {"media": "na_number-10_4.125x9.5in", "orientation": "landscape",
/// "imageDpi": 300, "xMm": 165, "yMm": 8}`: how a job prints on an office printer. `media` is
/// an IPP media name or size (see docs/printing-sheets.md); an image (an indicium GIF) is
/// composed onto a page of that media at `xMm`, `yMm` from the top-left corner at its native
/// resolution `imageDpi` (default 300).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SheetSpec {
    #[serde(default)]
    pub media: Option<String>,
    #[serde(default)]
    pub orientation: Option<String>,
    #[serde(default)]
    pub image_dpi: Option<u32>,
    #[serde(default)]
    pub x_mm: Option<f64>,
    #[serde(default)]
    pub y_mm: Option<f64>,
}

impl SheetSpec {
    fn check(&self) -> Result<(), String> {
        if let Some(media) = &self.media {
            Media::parse(media).map_err(|e| format!("sheet.media: {e}"))?;
        }
        if let Some(orientation) = &self.orientation {
            if Orientation::parse(orientation).is_none() {
                return Err(format!(
                    "sheet.orientation {orientation:?} is not portrait, landscape, \
                     reverse-landscape or reverse-portrait"
                ));
            }
        }
        if let Some(dpi) = self.image_dpi {
            if !INDICIA_DPI.contains(&dpi) {
                return Err(format!(
                    "sheet.imageDpi must be one of {INDICIA_DPI:?}, not {dpi}"
                ));
            }
        }
        for (name, value) in [("xMm", self.x_mm), ("yMm", self.y_mm)] {
            if value.is_some_and(|mm| !(0.0..=1000.0).contains(&mm)) {
                return Err(format!("sheet.{name} must be 0 to 1000 mm"));
            }
        }
        Ok(())
    }

    /// The sheet job for `file` (a PDF, or an image to place).
    fn job(&self, job_id: &str, file: Vec<u8>, copies: u32) -> Result<SheetJob, JobFailure> {
        let bad = |e: String| JobFailure::BadFile(e);
        let media = self
            .media
            .as_deref()
            .map(Media::parse)
            .transpose()
            .map_err(bad)?;
        let content = if file.starts_with(b"%PDF-") {
            SheetContent::Pdf(file)
        } else {
            SheetContent::Image {
                data: file,
                placement: ImagePlacement {
                    dpi: self.image_dpi.unwrap_or(300),
                    x_mm: self.x_mm.unwrap_or(0.0),
                    y_mm: self.y_mm.unwrap_or(0.0),
                },
            }
        };
        Ok(SheetJob {
            job_id: job_id.to_string(),
            content,
            media,
            orientation: self.orientation.as_deref().and_then(Orientation::parse),
            copies,
        })
    }
}

/// The range of media sizes a document may give, in millimetres.
const MEDIA_MM: std::ops::RangeInclusive<f64> = 5.0..=1000.0;

impl MediaSpec {
    /// The media in dots at `dpi`, as plugins see it.
    pub fn request(&self, dpi: u32) -> MediaRequest {
        let dots = |mm: f64| (mm * f64::from(dpi) / 25.4).round() as u32;
        MediaRequest {
            kind: match self.media_type {
                MediaType::DieCut => MediaKind::DieCut,
                MediaType::Continuous => MediaKind::Continuous,
                MediaType::BlackMark => MediaKind::BlackMark,
                MediaType::Sheet => MediaKind::Sheet,
            },
            width_dots: dots(self.width_mm),
            length_dots: self.height_mm.map(dots).unwrap_or(0),
        }
    }

    fn check(&self) -> Result<(), String> {
        let in_range = |mm: f64| mm.is_finite() && MEDIA_MM.contains(&mm);
        if !in_range(self.width_mm) || !self.height_mm.is_none_or(in_range) {
            return Err(format!(
                "media sizes must be {} to {} mm",
                MEDIA_MM.start(),
                MEDIA_MM.end()
            ));
        }
        Ok(())
    }
}

/// Where the print file is and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrintFile {
    /// An HTTPS URL, usually presigned and short-lived.
    pub url: String,
    /// The file's SHA-256, hex; checked when given.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The file's size in bytes; checked when given.
    #[serde(default)]
    pub size: Option<u64>,
    /// `gif`, `png`, `jpeg`, `pdf` or `raw`.
    pub format: String,
}

/// `{"operation":"scale.read", "unit"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleDocument {
    /// `g`, `kg`, `oz` or `lb`; the scale's own unit when absent.
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    /// How long to wait for a stable reading, 100 ms to [`MAX_SCALE_TIMEOUT_MS`]; default
    /// [`DEFAULT_SCALE_TIMEOUT_MS`].
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}

/// How long a scale job waits for a stable reading when its document does not say.
pub const DEFAULT_SCALE_TIMEOUT_MS: u32 = 5_000;
/// The longest a scale job may wait for a stable reading.
pub const MAX_SCALE_TIMEOUT_MS: u32 = 60_000;

impl JobDocument {
    /// Parses and checks a job document. The error is the reason the job is rejected.
    pub fn parse(document: &Value) -> Result<JobDocument, JobFailure> {
        let Some(object) = document.as_object() else {
            return Err(JobFailure::InvalidDocument(
                "the job document is not a JSON object".into(),
            ));
        };
        let operation = match object.get("operation") {
            Some(Value::String(op)) => op.as_str(),
            Some(_) => {
                return Err(JobFailure::InvalidDocument(
                    "\"operation\" is not a string".into(),
                ))
            }
            None => {
                return Err(JobFailure::InvalidDocument(
                    "the job document has no \"operation\"".into(),
                ))
            }
        };
        let mut rest: Map<String, Value> = object.clone();
        rest.remove("operation");
        let rest = Value::Object(rest);
        let invalid = |e: serde_json::Error| JobFailure::InvalidDocument(e.to_string());
        match operation {
            "print" => {
                let doc: PrintDocument = serde_json::from_value(rest).map_err(invalid)?;
                if !(1..=MAX_COPIES).contains(&doc.copies) {
                    return Err(JobFailure::InvalidDocument(format!(
                        "copies must be 1 to {MAX_COPIES}, not {}",
                        doc.copies
                    )));
                }
                if FileFormat::parse(&doc.file.format).is_none() {
                    return Err(JobFailure::UnsupportedFormat(cap(doc.file.format.clone())));
                }
                if !doc.file.url.starts_with("https://") {
                    return Err(JobFailure::InvalidDocument(
                        "the print file URL is not https".into(),
                    ));
                }
                if let Some(media) = &doc.media {
                    media.check().map_err(JobFailure::InvalidDocument)?;
                }
                if let Some(sheet) = &doc.sheet {
                    sheet.check().map_err(JobFailure::InvalidDocument)?;
                }
                if let Some(sha) = &doc.file.sha256 {
                    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(JobFailure::InvalidDocument(
                            "file.sha256 is not 64 hex digits".into(),
                        ));
                    }
                }
                Ok(JobDocument::Print(doc))
            }
            "scale.read" => {
                let doc: ScaleDocument = serde_json::from_value(rest).map_err(invalid)?;
                if let Some(unit) = &doc.unit {
                    if !["g", "kg", "oz", "lb"].contains(&unit.as_str()) {
                        return Err(JobFailure::InvalidDocument(format!(
                            "unit {:?} is not g, kg, oz or lb",
                            cap(unit.clone())
                        )));
                    }
                }
                if let Some(timeout) = doc.timeout_ms {
                    if !(100..=MAX_SCALE_TIMEOUT_MS).contains(&timeout) {
                        return Err(JobFailure::InvalidDocument(format!(
                            "timeoutMs must be 100 to {MAX_SCALE_TIMEOUT_MS}, not {timeout}"
                        )));
                    }
                }
                Ok(JobDocument::ScaleRead(doc))
            }
            other => Err(JobFailure::UnknownOperation(cap(other.to_string()))),
        }
    }
}

/// Why a job did not succeed. The `Display` text is the reason sent to the cloud.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobFailure {
    #[error("invalid job document: {0}")]
    InvalidDocument(String),
    #[error("unknown operation {0:?} (this DeviceHub does print and scale.read)")]
    UnknownOperation(String),
    #[error("unsupported file format {0:?} (gif, png, jpeg, pdf or raw)")]
    UnsupportedFormat(String),
    #[error("no such device: '{0}' is not attached")]
    NoSuchDevice(String),
    #[error("device '{0}' is not a printer")]
    NotAPrinter(String),
    #[error("no printer is attached")]
    NoPrinter,
    #[error("the default {kind} printer '{device}' is not attached")]
    DefaultPrinterMissing { kind: &'static str, device: String },
    #[error("no scale is attached")]
    NoScale,
    #[error("device '{0}' is not a scale")]
    NotAScale(String),
    #[error("scale '{device}' still in motion after {timeout_ms} ms")]
    ScaleInMotion { device: String, timeout_ms: u32 },
    #[error("scale '{device}' {state}")]
    ScaleState { device: String, state: String },
    #[error("reading scale '{device}' failed: {message}")]
    ScaleFailed { device: String, message: String },
    #[error("the file is {size} bytes; the largest DeviceHub accepts is {max}")]
    FileTooLarge { size: u64, max: u64 },
    #[error("download failed: {0}")]
    DownloadFailed(String),
    #[error(
        "file hash mismatch: the document says sha256 {expected}, the downloaded file has {actual}"
    )]
    HashMismatch { expected: String, actual: String },
    #[error("file size mismatch: the document says {expected} bytes, {actual} were downloaded")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("bad file: {0}")]
    BadFile(String),
    #[error("printer not ready: {state} ({message})")]
    NotReady { state: String, message: String },
    #[error("printing on {device} failed ({kind}): {message}")]
    PrintFailed {
        device: String,
        kind: String,
        message: String,
    },
    #[error("cannot record the job in the journal, so it was not printed: {0}")]
    Journal(String),
    #[error(
        "interrupted while printing on {device}; it may have printed: check before reprinting"
    )]
    Interrupted { device: String },
    #[error("DeviceHub stopped while printing on {device}; it may have printed: check before reprinting")]
    StoppedWhilePrinting { device: String },
}

impl JobFailure {
    /// Whether the job is refused as asked (REJECTED) rather than tried and failed (FAILED).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            JobFailure::InvalidDocument(_)
                | JobFailure::UnknownOperation(_)
                | JobFailure::UnsupportedFormat(_)
                | JobFailure::NoSuchDevice(_)
                | JobFailure::NotAPrinter(_)
                | JobFailure::NoPrinter
                | JobFailure::NoScale
                | JobFailure::NotAScale(_)
                | JobFailure::FileTooLarge { .. }
        )
    }
}

/// The terminal status DeviceHub reports for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportedStatus {
    Succeeded,
    Failed,
    Rejected,
}

/// What a job ended with: the status and `statusDetails` for the cloud, and the journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    pub status: ReportedStatus,
    /// AWS `statusDetails`: string keys and string values.
    pub details: BTreeMap<String, String>,
}

impl JobOutcome {
    fn failure(failure: &JobFailure) -> JobOutcome {
        let status = if failure.is_rejection() {
            ReportedStatus::Rejected
        } else {
            ReportedStatus::Failed
        };
        let mut details = BTreeMap::new();
        details.insert("reason".to_string(), cap(failure.to_string()));
        JobOutcome { status, details }
    }

    /// The journal entry for this outcome.
    fn journal_state(&self) -> JobState {
        let reason = self.details.get("reason").cloned().unwrap_or_default();
        match self.status {
            ReportedStatus::Succeeded => JobState::Succeeded {
                summary: self.details.get("summary").cloned().unwrap_or_default(),
            },
            ReportedStatus::Failed => JobState::Failed { reason },
            ReportedStatus::Rejected => JobState::Failed {
                reason: format!("{REJECTED_PREFIX}{reason}"),
            },
        }
    }

    /// The outcome recorded in the journal, reported again when the cloud still has the job
    /// pending (the first report was lost).
    pub fn from_journal(state: &JobState) -> JobOutcome {
        let mut details = BTreeMap::new();
        details.insert("replayed".to_string(), "true".to_string());
        let status = match state {
            JobState::Succeeded { summary } => {
                details.insert("summary".into(), summary.clone());
                ReportedStatus::Succeeded
            }
            JobState::Failed { reason } => match reason.strip_prefix(REJECTED_PREFIX) {
                Some(reason) => {
                    details.insert("reason".into(), reason.to_string());
                    ReportedStatus::Rejected
                }
                None => {
                    details.insert("reason".into(), reason.clone());
                    ReportedStatus::Failed
                }
            },
            JobState::Canceled => {
                details.insert("reason".into(), "the job was canceled".into());
                ReportedStatus::Rejected
            }
            // `may_start` never reports these as finished; answer conservatively if it did.
            JobState::Received | JobState::Printing { .. } => {
                details.insert(
                    "reason".into(),
                    "the journal holds no outcome for this job".into(),
                );
                ReportedStatus::Failed
            }
        };
        JobOutcome { status, details }
    }
}

/// Caps a text for `statusDetails` (on a character boundary).
fn cap(mut text: String) -> String {
    if text.len() > MAX_DETAIL_LEN {
        let mut end = MAX_DETAIL_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Why the jobs task could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("the CA bundle for print file downloads is unusable: {0}")]
    Tls(#[source] TlsError),
    #[error("cannot build the HTTPS client for print file downloads: {0}")]
    HttpClient(String),
    #[error("cannot subscribe to the jobs topics: {0}")]
    Subscribe(#[source] LinkError),
}

/// How print files are downloaded.
#[derive(Debug, Clone)]
pub struct DownloadSettings {
    /// The cloud's CA bundle (PEM), trusted besides the public roots (the emulator's CA; a
    /// private CA in front of the file store).
    pub ca_bundle_pem: Option<String>,
    pub max_bytes: u64,
    pub timeout: Duration,
}

impl Default for DownloadSettings {
    fn default() -> Self {
        DownloadSettings {
            ca_bundle_pem: None,
            max_bytes: DEFAULT_MAX_FILE_BYTES,
            timeout: DEFAULT_DOWNLOAD_TIMEOUT,
        }
    }
}

/// What the jobs task needs besides the link, the devices and the journal.
#[derive(Debug, Clone)]
pub struct JobsSettings {
    pub thing_name: String,
    pub download: DownloadSettings,
    /// How long shutdown lets a print that has started finish.
    pub shutdown_grace: Duration,
    /// Device IDs in config order: the default printer is the first of these that is attached.
    pub preferred_devices: Vec<String>,
    /// The settings the cloud asked for (the default printer per job kind), when the shadow
    /// task runs beside the jobs task.
    pub settings: Option<watch::Receiver<AgentSettings>>,
}

/// Where a running job is, for shutdown: a job that has not reached the printer can be
/// dropped (it is resumed at the next start), one that has must finish or be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Preparing,
    Printing { device: String },
}

/// What a described job needs.
#[derive(Debug, Clone)]
enum Plan {
    /// The journal knows the job as finished or interrupted: it is answered from there.
    Journal,
    /// The document is refused (or asks for what this desk cannot do).
    Refuse(JobFailure),
    /// A print on `device`.
    Print {
        document: PrintDocument,
        device: String,
    },
    /// A reading of scale `device`.
    ScaleRead {
        document: ScaleDocument,
        device: String,
    },
}

impl Plan {
    /// The device the job waits for, if any.
    fn lane(&self) -> Option<&str> {
        match self {
            Plan::Print { device, .. } | Plan::ScaleRead { device, .. } => Some(device),
            Plan::Journal | Plan::Refuse(_) => None,
        }
    }
}

/// Everything a job needs, shared by the tasks that run jobs.
#[derive(Debug)]
struct JobContext {
    devices: Arc<DeviceTable>,
    journal: Arc<Mutex<JobJournal>>,
    http: reqwest::Client,
    download: DownloadSettings,
    preferred_devices: Vec<String>,
    settings: Option<watch::Receiver<AgentSettings>>,
}

impl JobContext {
    /// The printer for `document`: the one it names, else the cloud's default printer for its
    /// kind, else the config-order rule (see the module docs).
    fn choose_printer(&self, document: &PrintDocument) -> Result<String, JobFailure> {
        let default = self.settings.as_ref().and_then(|settings| {
            let settings = settings.borrow();
            let defaults = &settings.default_printer;
            match document.kind {
                JobKind::Label => defaults.label.clone(),
                JobKind::Indicia => defaults.indicia.clone(),
                JobKind::Sheet => defaults.sheet.clone(),
            }
        });
        choose_printer(
            &self.devices,
            &self.preferred_devices,
            document.device.as_deref(),
            document.kind,
            default.as_deref().map(|device| (document.kind, device)),
        )
    }
}

/// A fresh client token: 24 hex digits, well under AWS's 64 bytes.
fn client_token() -> String {
    let bytes: [u8; 12] = rand::random();
    hex::encode(bytes)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay valid after a panic elsewhere (the journal only changes after
    // its file did): keep going.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records `state` for `job_id`, off the async workers (the journal fsyncs).
async fn record(
    journal: &Arc<Mutex<JobJournal>>,
    job_id: &str,
    state: JobState,
) -> Result<(), String> {
    let journal = journal.clone();
    let job_id = job_id.to_string();
    tokio::task::spawn_blocking(move || lock(&journal).record(&job_id, state))
        .await
        .map_err(|e| format!("the journal write did not complete: {e}"))?
        .map_err(|e: JournalError| e.to_string())
}

/// Runs one planned job to its outcome. The journal is asked again here, right before
/// anything reaches a printer; the caller records the outcome.
async fn execute(
    context: &JobContext,
    job_id: &str,
    plan: Plan,
    phase: &Mutex<Phase>,
    prefetch: Option<Prefetch>,
) -> JobOutcome {
    let decision = lock(&context.journal).may_start(job_id);
    match decision {
        StartDecision::Finished(state) => {
            tracing::info!(job = %job_id, "already finished; reporting the recorded outcome again");
            return JobOutcome::from_journal(&state);
        }
        StartDecision::Interrupted { device } => {
            return JobOutcome::failure(&JobFailure::Interrupted { device });
        }
        // `Received` is not written: a job that never reached `Printing` is simply new, and
        // leaving the write out keeps one fsync off every job's way to the printer.
        StartDecision::New | StartDecision::NotStarted => {}
    }
    let started = Instant::now();
    let result = match plan {
        Plan::Journal => Err(JobFailure::Journal(
            "the journal changed while the job waited".into(),
        )),
        Plan::Refuse(failure) => Err(failure),
        Plan::Print { document, device } => {
            print_job(
                context, job_id, &document, &device, phase, started, prefetch,
            )
            .await
        }
        Plan::ScaleRead { document, device } => {
            scale_job(context, &document, &device, started).await
        }
    };
    match result {
        Ok(outcome) => outcome,
        Err(failure) => JobOutcome::failure(&failure),
    }
}

/// The scale for a scale job: the one its document names, else the first attached scale in
/// config order (see [`scales::choose_scale`]).
fn choose_scale(context: &JobContext, document: &ScaleDocument) -> Result<String, JobFailure> {
    scales::choose_scale(
        &context.devices,
        &context.preferred_devices,
        document.device.as_deref(),
    )
    .map_err(|e| match e {
        scales::ScaleError::NoSuchDevice(id) => JobFailure::NoSuchDevice(cap(id)),
        scales::ScaleError::NotAScale(id) => JobFailure::NotAScale(id),
        _ => JobFailure::NoScale,
    })
}

/// Reads the scale until its weight is stable or the document's timeout passes, and reports
/// the weight in the document's unit (else the shadow's `scaleUnits`, else grams).
async fn scale_job(
    context: &JobContext,
    document: &ScaleDocument,
    device: &str,
    started: Instant,
) -> Result<JobOutcome, JobFailure> {
    let timeout_ms = document.timeout_ms.unwrap_or(DEFAULT_SCALE_TIMEOUT_MS);
    let unit_name = document.unit.clone().unwrap_or_else(|| {
        context
            .settings
            .as_ref()
            .map_or_else(|| "g".to_string(), |s| s.borrow().scale_units.clone())
    });
    let unit = scales::ReportUnit::parse(&unit_name).unwrap_or(scales::ReportUnit::Gram);
    let reading = scales::read_scale(&context.devices, device, timeout_ms)
        .await
        .map_err(|e| match e {
            scales::ScaleError::NoSuchDevice(id) => JobFailure::NoSuchDevice(cap(id)),
            scales::ScaleError::NotAScale(id) => JobFailure::NotAScale(id),
            other => JobFailure::ScaleFailed {
                device: device.to_string(),
                message: cap(match other {
                    scales::ScaleError::Plugin { error, .. } => {
                        format!("{} ({})", error.message, error.kind.as_str())
                    }
                    other => other.to_string(),
                }),
            },
        })?;
    match reading.state {
        ScaleState::Stable | ScaleState::StableAtZero => {}
        ScaleState::InMotion => {
            return Err(JobFailure::ScaleInMotion {
                device: device.to_string(),
                timeout_ms,
            })
        }
        other => {
            return Err(JobFailure::ScaleState {
                device: device.to_string(),
                state: scales::state_name(other).to_string(),
            })
        }
    }
    let view = scales::view(&reading);
    let json = scales::reading_json(&view, Some(unit));
    let text = |key: &str| match &json[key] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut details = BTreeMap::new();
    details.insert("device".to_string(), device.to_string());
    for key in [
        "state",
        "micrograms",
        "value",
        "unit",
        "resolutionMicrograms",
        "displayUnit",
        "atMs",
    ] {
        details.insert(key.to_string(), text(key));
    }
    details.insert("totalMs".to_string(), millis(started.elapsed()));
    details.insert(
        "summary".to_string(),
        format!("read {} {} on {device}", text("value"), unit.as_str()),
    );
    Ok(JobOutcome {
        status: ReportedStatus::Succeeded,
        details,
    })
}

/// Chooses the printer: the named device, else the default for the job's kind when one is set
/// (`(kind, device)`), else the config-order rule among the printers that suit `kind` (see the
/// module docs).
pub fn choose_printer(
    devices: &DeviceTable,
    preferred: &[String],
    requested: Option<&str>,
    kind: JobKind,
    default_for_kind: Option<(JobKind, &str)>,
) -> Result<String, JobFailure> {
    let attached = devices.list();
    let printer = DeviceKind::Printer.as_str();
    let named = |id: &str| match attached.iter().find(|d| d.id == id) {
        None => Err(JobFailure::NoSuchDevice(cap(id.to_string()))),
        Some(d) if d.kind != printer => Err(JobFailure::NotAPrinter(d.id.clone())),
        Some(d) => Ok(d.id.clone()),
    };
    if let Some(id) = requested {
        return named(id);
    }
    if let Some((kind, id)) = default_for_kind {
        return named(id).map_err(|failure| match failure {
            JobFailure::NoSuchDevice(device) => JobFailure::DefaultPrinterMissing {
                kind: kind.as_str(),
                device,
            },
            other => other,
        });
    }
    // Without a named or default printer, labels go to label printers and sheets to office
    // printers; indicia (stamp rolls or envelopes) to either.
    let office = |plugin: &str| {
        plugin == crate::sheets::IPP_DRIVER || plugin == crate::sheets::SYSTEM_DRIVER
    };
    let printers: Vec<&str> = attached
        .iter()
        .filter(|d| d.kind == printer)
        .filter(|d| match kind {
            JobKind::Label => !office(&d.plugin),
            JobKind::Sheet => office(&d.plugin),
            JobKind::Indicia => true,
        })
        .map(|d| d.id.as_str())
        .collect();
    preferred
        .iter()
        .find(|id| printers.contains(&id.as_str()))
        .cloned()
        .or_else(|| printers.iter().min().map(|id| id.to_string()))
        .ok_or(JobFailure::NoPrinter)
}

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// A print file downloaded, checked and rendered for its printer, held in memory only.
#[derive(Debug)]
struct PreparedPrint {
    job: devicehub_plugin_api::PrintJob,
    file_bytes: usize,
    download_time: Duration,
    render_time: Duration,
}

/// A print's download and rendering, begun while the cloud answers the request to start the
/// job, so that the label is ready when the job may print. Nothing reaches a printer here: the
/// job still prints only once its start is accepted and the journal allows it. Dropping it
/// (the start was refused, the job was canceled) stops the work.
#[derive(Debug)]
struct Prefetch {
    task: tokio::task::JoinHandle<Result<PreparedPrint, JobFailure>>,
    /// Set once the file is downloaded and checked: only rendering is left.
    downloaded: Arc<AtomicBool>,
}

impl Prefetch {
    /// Begins preparing a print of `document` on `device`.
    fn begin(
        context: &Arc<JobContext>,
        job_id: &str,
        document: &PrintDocument,
        device: &str,
    ) -> Prefetch {
        let context = context.clone();
        let job_id = job_id.to_string();
        let document = document.clone();
        let device = device.to_string();
        let downloaded = Arc::new(AtomicBool::new(false));
        let flag = downloaded.clone();
        let task = tokio::spawn(async move {
            prepare_print(&context, &job_id, &document, &device, Some(&flag)).await
        });
        Prefetch { task, downloaded }
    }

    /// Whether the file is downloaded and checked, so that only rendering is left.
    fn downloaded(&self) -> bool {
        self.downloaded.load(Ordering::Acquire)
    }

    async fn wait(mut self) -> Result<PreparedPrint, JobFailure> {
        match (&mut self.task).await {
            Ok(prepared) => prepared,
            Err(e) => Err(JobFailure::BadFile(format!(
                "preparing the print stopped: {e}"
            ))),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Downloads the print file (checking its size and hash) and renders it for `device_id`;
/// sets `downloaded` between the two.
async fn prepare_print(
    context: &JobContext,
    job_id: &str,
    document: &PrintDocument,
    device_id: &str,
    downloaded: Option<&AtomicBool>,
) -> Result<PreparedPrint, JobFailure> {
    let worker = context
        .devices
        .get(device_id)
        .map_err(|_| JobFailure::NoSuchDevice(device_id.to_string()))?;
    let profile: PrinterProfile = worker
        .spec()
        .printer_profile()
        .cloned()
        .ok_or_else(|| JobFailure::NotAPrinter(device_id.to_string()))?;

    let download_started = Instant::now();
    let file = download(&context.http, &document.file, context.download.max_bytes).await?;
    let download_time = download_started.elapsed();
    let file_bytes = file.len();
    if let Some(downloaded) = downloaded {
        downloaded.store(true, Ordering::Release);
    }

    let render_started = Instant::now();
    // Every kind is thresholded (the default): indicia and labels carry barcodes.
    let options = PrintOptions {
        job_id: job_id.to_string(),
        copies: document.copies,
        format: FileFormat::parse(&document.file.format),
        ..PrintOptions::default()
    };
    let media = document.media.as_ref().map(|m| m.request(profile.dpi));
    let sheet_printer =
        !profile.inputs.contains(&InputKind::Raster) && profile.inputs.contains(&InputKind::Pdf);
    let job = if sheet_printer {
        // Office printers take PDF: a PDF passes through, an image (an indicium) is composed
        // onto a page of the sheet's media at its native resolution.
        let sheet = document.sheet.clone().unwrap_or(SheetSpec {
            media: None,
            orientation: None,
            image_dpi: None,
            x_mm: None,
            y_mm: None,
        });
        let job_id = job_id.to_string();
        let copies = document.copies;
        tokio::task::spawn_blocking(move || {
            sheet
                .job(&job_id, file, copies)?
                .into_print_job()
                .map_err(|e| JobFailure::BadFile(e.to_string()))
        })
        .await
        .map_err(|e| JobFailure::BadFile(format!("composing stopped: {e}")))??
    } else {
        let mut prepared =
            tokio::task::spawn_blocking(move || print::prepare_job(&file, &profile, &options))
                .await
                .map_err(|e| JobFailure::BadFile(format!("rendering stopped: {e}")))?
                .map_err(|e| JobFailure::BadFile(e.to_string()))?;
        prepared.job.media = media.map_or(ROption::RNone, ROption::RSome);
        prepared.job
    };
    Ok(PreparedPrint {
        job,
        file_bytes,
        download_time,
        render_time: render_started.elapsed(),
    })
}

/// Prints a prepared (or, without `prefetch`, a freshly prepared) print file on `device_id`.
async fn print_job(
    context: &JobContext,
    job_id: &str,
    document: &PrintDocument,
    device_id: &str,
    phase: &Mutex<Phase>,
    started: Instant,
    prefetch: Option<Prefetch>,
) -> Result<JobOutcome, JobFailure> {
    let device_id = device_id.to_string();
    // Printing is recorded durably before the first byte goes to the printer: from then on a
    // crash leaves `Printing`, which is never printed again.
    let printing = || {
        *lock(phase) = Phase::Printing {
            device: device_id.clone(),
        };
        record(
            &context.journal,
            job_id,
            JobState::Printing {
                device: device_id.clone(),
            },
        )
    };
    let (prepared, recorded) = match prefetch {
        // With the file downloaded and checked, only rendering is left (bounded, and failing
        // only on a bad file): the record is made while it finishes, which takes the journal's
        // fsync off the way to the printer. A crash meanwhile is reported "interrupted, may
        // have printed", the safe side; a stop lets the job finish as a printing one.
        Some(prefetch) if prefetch.downloaded() => {
            let (prepared, recorded) = tokio::join!(prefetch.wait(), printing());
            recorded.map_err(JobFailure::Journal)?;
            (prepared?, true)
        }
        Some(prefetch) => (prefetch.wait().await?, false),
        None => (
            prepare_print(context, job_id, document, &device_id, None).await?,
            false,
        ),
    };
    let PreparedPrint {
        job,
        file_bytes,
        download_time,
        render_time,
    } = prepared;
    let worker = context
        .devices
        .get(&device_id)
        .map_err(|_| JobFailure::NoSuchDevice(device_id.clone()))?;
    if !recorded {
        printing().await.map_err(JobFailure::Journal)?;
    }
    let print_started = Instant::now();
    let report = worker
        .print_async(job)
        .await
        .map_err(|e| print_failure(&device_id, e))?;
    let print_time = print_started.elapsed();

    let mut details = BTreeMap::new();
    details.insert("device".to_string(), device_id.clone());
    details.insert("kind".to_string(), document.kind.as_str().to_string());
    details.insert("copies".to_string(), document.copies.to_string());
    details.insert("labels".to_string(), report.labels.to_string());
    details.insert("bytes".to_string(), file_bytes.to_string());
    details.insert("printerBytes".to_string(), report.bytes_sent.to_string());
    details.insert("downloadMs".to_string(), millis(download_time));
    details.insert("renderMs".to_string(), millis(render_time));
    details.insert("printMs".to_string(), millis(print_time));
    details.insert("totalMs".to_string(), millis(started.elapsed()));
    details.insert(
        "summary".to_string(),
        format!("printed {} label(s) on {device_id}", report.labels),
    );
    Ok(JobOutcome {
        status: ReportedStatus::Succeeded,
        details,
    })
}

fn print_failure(device: &str, error: DeviceError) -> JobFailure {
    match error.plugin_error() {
        Some(e) if e.kind == ErrorKind::NotReady => JobFailure::NotReady {
            state: e
                .printer_state
                .into_option()
                .map(|s| s.as_str())
                .unwrap_or("not ready")
                .to_string(),
            message: cap(e.message.to_string()),
        },
        Some(e) => JobFailure::PrintFailed {
            device: device.to_string(),
            kind: e.kind.as_str().to_string(),
            message: cap(e.message.to_string()),
        },
        None => JobFailure::PrintFailed {
            device: device.to_string(),
            kind: "device".to_string(),
            message: cap(error.to_string()),
        },
    }
}

/// The HTTPS client for print files: TLS 1.2+, the cloud's CA bundle plus the public roots,
/// no redirects (a presigned URL names the file itself), HTTPS only.
pub(crate) fn download_client(settings: &DownloadSettings) -> Result<reqwest::Client, JobsError> {
    let mut roots = match &settings.ca_bundle_pem {
        Some(pem) => tls::root_store(pem.as_bytes()).map_err(JobsError::Tls)?,
        None => rustls::RootCertStore::empty(),
    };
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| JobsError::HttpClient(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10).min(settings.timeout))
        .timeout(settings.timeout)
        .build()
        .map_err(|e| JobsError::HttpClient(e.without_url().to_string()))
}

/// Pauses before each repeated download: a file server that blinked (a restart, a dropped
/// connection, a 5xx) gets a few seconds to come back before the job fails.
const DOWNLOAD_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// Downloads the print file into memory, within `max_bytes`, checking its size and hash, and
/// repeating a download that failed for a reason that may pass: a network error or the
/// server's 5xx or 429. A refusal (403, 404, an untrusted certificate), a file too large or a
/// wrong hash fails at once.
async fn download(
    client: &reqwest::Client,
    file: &PrintFile,
    max_bytes: u64,
) -> Result<Vec<u8>, JobFailure> {
    let mut delays = DOWNLOAD_RETRY_DELAYS.iter();
    loop {
        match download_checked(client, file, max_bytes).await {
            Ok(bytes) => return Ok(bytes),
            Err(Attempt::Transient(failure)) => match delays.next() {
                Some(delay) => {
                    tracing::info!("the print file download failed ({failure}); trying again");
                    tokio::time::sleep(*delay).await;
                }
                None => return Err(failure),
            },
            Err(Attempt::Final(failure)) => return Err(failure),
        }
    }
}

/// How a download attempt failed.
enum Attempt {
    /// Worth another try.
    Transient(JobFailure),
    Final(JobFailure),
}

impl From<JobFailure> for Attempt {
    fn from(failure: JobFailure) -> Attempt {
        Attempt::Final(failure)
    }
}

/// One download attempt.
async fn download_checked(
    client: &reqwest::Client,
    file: &PrintFile,
    max_bytes: u64,
) -> Result<Vec<u8>, Attempt> {
    if let Some(size) = file.size {
        if size > max_bytes {
            return Err(JobFailure::FileTooLarge {
                size,
                max: max_bytes,
            }
            .into());
        }
    }
    // Network errors (connect, timeout, a body cut short) may pass; a refused TLS handshake
    // (an untrusted certificate) fails the same way again.
    let failed = |e: reqwest::Error| {
        let transient = !(e.is_connect() && tls_refusal(&e))
            && (e.is_connect() || e.is_timeout() || e.is_body() || e.is_request());
        let failure = JobFailure::DownloadFailed(cap(e.without_url().to_string()));
        if transient {
            Attempt::Transient(failure)
        } else {
            Attempt::Final(failure)
        }
    };
    let mut response = client.get(&file.url).send().await.map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        let hint = match status.as_u16() {
            403 => " (the link may have expired)",
            404 => " (the file is gone)",
            _ => "",
        };
        let failure =
            JobFailure::DownloadFailed(format!("the file server answered {status}{hint}"));
        return Err(
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                Attempt::Transient(failure)
            } else {
                Attempt::Final(failure)
            },
        );
    }
    if let Some(length) = response.content_length() {
        if length > max_bytes {
            return Err(JobFailure::FileTooLarge {
                size: length,
                max: max_bytes,
            }
            .into());
        }
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > max_bytes {
            return Err(JobFailure::FileTooLarge {
                size: bytes.len() as u64,
                max: max_bytes,
            }
            .into());
        }
    }
    if let Some(expected) = file.size {
        if expected != bytes.len() as u64 {
            return Err(JobFailure::SizeMismatch {
                expected,
                actual: bytes.len() as u64,
            }
            .into());
        }
    }
    if let Some(expected) = &file.sha256 {
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(JobFailure::HashMismatch {
                expected: expected.to_ascii_lowercase(),
                actual,
            }
            .into());
        }
    }
    Ok(bytes)
}

/// Whether a connect error is the TLS handshake refusing the server (which no retry fixes).
pub(crate) fn tls_refusal(error: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn print_doc() -> Value {
        json!({"operation": "print", "file": {"url": "https://files.example/f.gif?sig=1",
            "sha256": "a".repeat(64), "size": 10, "format": "gif"}, "copies": 2})
    }

    #[test]
    fn print_and_scale_documents_parse() {
        let JobDocument::Print(doc) = JobDocument::parse(&print_doc()).expect("print") else {
            panic!("not a print document");
        };
        assert_eq!(doc.copies, 2);
        assert_eq!(doc.file.format, "gif");
        assert_eq!(doc.device, None);
        assert_eq!(
            JobDocument::parse(&json!({"operation": "scale.read", "unit": "kg"})).expect("scale"),
            JobDocument::ScaleRead(ScaleDocument {
                unit: Some("kg".into()),
                device: None,
                timeout_ms: None,
            })
        );
    }

    #[test]
    fn bad_documents_are_rejected_with_a_precise_reason() {
        let cases = [
            (json!({"operation": "fold"}), "unknown operation \"fold\""),
            (json!([1]), "not a JSON object"),
            (json!({"copies": 1}), "no \"operation\""),
            (
                json!({"operation": "print", "file": {"url": "https://x/y", "format": "gif"}, "colour": true}),
                "unknown field `colour`",
            ),
            (
                json!({"operation": "print", "file": {"url": "http://x/y", "format": "gif"}}),
                "not https",
            ),
            (
                json!({"operation": "print", "file": {"url": "https://x/y", "format": "bmp"}}),
                "unsupported file format \"bmp\"",
            ),
            (
                json!({"operation": "print", "file": {"url": "https://x/y", "format": "gif"}, "copies": 0}),
                "copies must be 1 to 999",
            ),
            (
                json!({"operation": "scale.read", "unit": "stone"}),
                "is not g, kg, oz or lb",
            ),
            (
                json!({"operation": "scale.read", "timeoutMs": 3_600_000}),
                "timeoutMs must be 100 to 60000",
            ),
        ];
        for (document, reason) in cases {
            let failure = JobDocument::parse(&document).expect_err("refused");
            assert!(failure.is_rejection(), "{failure}");
            assert!(
                failure.to_string().contains(reason),
                "{document}: {failure}"
            );
        }
    }

    #[test]
    fn outcomes_round_trip_through_the_journal() {
        let rejected = JobOutcome::failure(&JobFailure::NoScale);
        assert_eq!(rejected.status, ReportedStatus::Rejected);
        let replayed = JobOutcome::from_journal(&rejected.journal_state());
        assert_eq!(replayed.status, ReportedStatus::Rejected);
        assert_eq!(replayed.details["reason"], "no scale is attached");

        let failed = JobOutcome::failure(&JobFailure::Interrupted {
            device: "zebra-1".into(),
        });
        assert_eq!(failed.status, ReportedStatus::Failed);
        assert_eq!(
            failed.details["reason"],
            "interrupted while printing on zebra-1; it may have printed: check before reprinting"
        );
        let replayed = JobOutcome::from_journal(&failed.journal_state());
        assert_eq!(replayed.status, ReportedStatus::Failed);
        assert_eq!(replayed.details["reason"], failed.details["reason"]);

        let replayed = JobOutcome::from_journal(&JobState::Succeeded {
            summary: "printed 2 label(s) on zebra-1".into(),
        });
        assert_eq!(replayed.status, ReportedStatus::Succeeded);
        assert_eq!(replayed.details["summary"], "printed 2 label(s) on zebra-1");
    }

    #[test]
    fn without_devices_there_is_no_printer() {
        let table = DeviceTable::default();
        assert_eq!(
            choose_printer(&table, &["zebra-1".into()], None, JobKind::Label, None),
            Err(JobFailure::NoPrinter)
        );
        assert_eq!(
            choose_printer(&table, &[], Some("zebra-9"), JobKind::Label, None),
            Err(JobFailure::NoSuchDevice("zebra-9".into()))
        );
        assert_eq!(
            choose_printer(
                &table,
                &[],
                None,
                JobKind::Indicia,
                Some((JobKind::Indicia, "envelopes"))
            ),
            Err(JobFailure::DefaultPrinterMissing {
                kind: "indicia",
                device: "envelopes".into()
            })
        );
    }

    #[test]
    fn reasons_are_capped_for_status_details() {
        let long = "x".repeat(5000);
        let outcome = JobOutcome::failure(&JobFailure::BadFile(long));
        assert!(outcome.details["reason"].len() <= MAX_DETAIL_LEN);
    }
}
