//! Print jobs from the cloud over AWS IoT Jobs: each job is taken with `start-next`, printed at
//! most once, and answered with `{jobId}/update`.
//!
//! # Protocol (AWS IoT Developer Guide: jobs-mqtt-api)
//! - Subscriptions under `$aws/things/{thing}/jobs/`: `notify-next`, `start-next/accepted`,
//!   `start-next/rejected`, `+/update/accepted`, `+/update/rejected`.
//! - `start-next` is published after every (re)connection (the link acknowledges QoS 1 messages
//!   as soon as it reads them, so a notification in flight when DeviceHub stopped is lost:
//!   asking is the only reliable way to learn what is pending), when `notify-next` names a job
//!   while nothing is running, and after each job ends. Every request carries a fresh
//!   `clientToken`; a `start-next` answer whose token is not the latest request's is stale and
//!   ignored.
//! - One job runs at a time. `start-next` returns IN_PROGRESS executions first, so a job
//!   interrupted by a lost connection comes back by itself; the journal decides what to do
//!   with it.
//!
//! # At most once
//! The [`JobJournal`] records `Received` when a job is taken, `Printing{device}` before the first
//! byte goes to the printer, and the outcome afterwards. A job the journal knows as finished is
//! answered with its recorded outcome without printing; a job found in `Printing` (DeviceHub
//! stopped mid-print) is reported FAILED so that a person checks the printer, never printed
//! again. Refusals are journaled as `Failed` with the reason prefixed by
//! [`REJECTED_PREFIX`], so that a replay answers REJECTED again.
//!
//! # Device choice
//! A print document may name a `device`. Without one, the job goes to the first printer of the
//! config's device table that is attached, else to the attached printer whose ID sorts first
//! (USB printers found by discovery).
//!
//! # Privacy
//! Job documents and print files never reach the journal or the logs: the logs name job IDs,
//! device IDs, sizes and outcomes; print files are held in memory only; download URLs (whose
//! query strings are signatures) are never logged or reported.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use devicehub_plugin_api::{DeviceKind, ErrorKind, PrinterProfile};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::link::{InboundMessage, LinkError, LinkHandle, LinkState, Qos};
use super::tls::{self, TlsError};
use crate::devices::{DeviceError, DeviceTable};
use crate::print::{self, FileFormat, PrintOptions, MAX_COPIES};
use crate::storage::journal::JournalError;
use crate::storage::{JobJournal, JobState, StartDecision};

/// The largest print file DeviceHub downloads: far above any label or indicia, small enough to
/// hold in memory.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// How long one download may take from request to last byte.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for a print that has started before reporting it failed.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long shutdown waits for the cloud to confirm the last job's status.
const FINAL_REPORT_WAIT: Duration = Duration::from_secs(5);
/// How long to wait before asking again when the cloud keeps handing back a job already
/// answered from the journal.
const START_NEXT_RETRY: Duration = Duration::from_secs(5);
/// How long to wait before asking again after the cloud refused a `start-next` (throttling
/// counts requests per second, so one second is enough for the window to pass).
const START_NEXT_REFUSED_RETRY: Duration = Duration::from_secs(1);
/// AWS limits each `statusDetails` value to 1024 characters; reasons are cut well below.
const MAX_DETAIL_LEN: usize = 512;
/// Journal reasons that begin with this were REJECTED, not FAILED.
pub const REJECTED_PREFIX: &str = "rejected: ";

/// The operations a job document may ask for.
pub const OPERATIONS: [&str; 2] = ["print", "scale.read"];

/// A parsed job document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobDocument {
    Print(PrintDocument),
    ScaleRead(ScaleDocument),
}

/// `{"operation":"print", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrintDocument {
    pub file: PrintFile,
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
}

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
    #[error("no scale is attached")]
    NoScale,
    #[error("reading scale '{0}' is not supported by this DeviceHub yet")]
    ScaleNotSupported(String),
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
                | JobFailure::ScaleNotSupported(_)
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
}

/// The topics of one thing's jobs.
#[derive(Debug, Clone)]
struct Topics {
    prefix: String,
}

impl Topics {
    fn new(thing: &str) -> Topics {
        Topics {
            prefix: format!("$aws/things/{thing}/jobs"),
        }
    }

    fn notify_next(&self) -> String {
        format!("{}/notify-next", self.prefix)
    }

    fn start_next(&self) -> String {
        format!("{}/start-next", self.prefix)
    }

    fn update(&self, job_id: &str) -> String {
        format!("{}/{job_id}/update", self.prefix)
    }

    fn filters(&self) -> Vec<String> {
        vec![
            self.notify_next(),
            format!("{}/start-next/accepted", self.prefix),
            format!("{}/start-next/rejected", self.prefix),
            format!("{}/+/update/accepted", self.prefix),
            format!("{}/+/update/rejected", self.prefix),
        ]
    }

    /// What a received topic is.
    fn classify<'a>(&self, topic: &'a str) -> Option<Answer<'a>> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?;
        match rest {
            "notify-next" => Some(Answer::NotifyNext),
            "start-next/accepted" => Some(Answer::StartNextAccepted),
            "start-next/rejected" => Some(Answer::StartNextRejected),
            _ => {
                let (job_id, tail) = rest.split_once('/')?;
                match tail {
                    "update/accepted" => Some(Answer::UpdateAccepted(job_id)),
                    "update/rejected" => Some(Answer::UpdateRejected(job_id)),
                    _ => None,
                }
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Answer<'a> {
    NotifyNext,
    StartNextAccepted,
    StartNextRejected,
    UpdateAccepted(&'a str),
    UpdateRejected(&'a str),
}

/// A JobExecution as far as DeviceHub reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Execution {
    job_id: String,
    #[serde(default)]
    job_document: Option<Value>,
}

/// The answer of `start-next` or the payload of `notify-next`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NextAnswer {
    #[serde(default)]
    execution: Option<Execution>,
    #[serde(default)]
    client_token: Option<String>,
}

/// A Jobs API error answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorAnswer {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Where a running job is, for shutdown: a job that has not reached the printer can be
/// dropped (it is resumed at the next start), one that has must finish or be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Preparing,
    Printing { device: String },
}

/// Everything a job needs, shared by the task that runs it.
#[derive(Debug)]
struct JobContext {
    devices: Arc<DeviceTable>,
    journal: Arc<Mutex<JobJournal>>,
    http: reqwest::Client,
    download: DownloadSettings,
    preferred_devices: Vec<String>,
}

/// The job that is running.
#[derive(Debug)]
struct RunningJob {
    job_id: String,
    task: JoinHandle<JobOutcome>,
    phase: Arc<Mutex<Phase>>,
}

/// The jobs task: follows the cloud's job queue and runs one job at a time.
#[derive(Debug)]
pub struct JobsTask {
    link: LinkHandle,
    topics: Topics,
    context: Arc<JobContext>,
    shutdown_grace: Duration,
    /// The client token of the latest `start-next`; answers to older ones are ignored.
    start_next_token: Option<String>,
    /// Set when the cloud refused `start-next` (throttling, an internal error): ask again
    /// after [`START_NEXT_REFUSED_RETRY`].
    retry_wanted: bool,
    /// The job last answered from the journal, to notice the cloud handing it back again.
    last_replayed: Option<String>,
    /// A notify-next named a job while a start-next was outstanding.
    notified_while_asking: bool,
}

impl JobsTask {
    /// Prepares the task (the download client, the topics); [`JobsTask::run`] starts it.
    pub fn new(
        settings: JobsSettings,
        link: LinkHandle,
        devices: Arc<DeviceTable>,
        journal: JobJournal,
    ) -> Result<JobsTask, JobsError> {
        let http = download_client(&settings.download)?;
        Ok(JobsTask {
            link,
            topics: Topics::new(&settings.thing_name),
            context: Arc::new(JobContext {
                devices,
                journal: Arc::new(Mutex::new(journal)),
                http,
                download: settings.download,
                preferred_devices: settings.preferred_devices,
            }),
            shutdown_grace: settings.shutdown_grace,
            start_next_token: None,
            retry_wanted: false,
            notified_while_asking: false,
            last_replayed: None,
        })
    }

    /// Runs until `shutdown`: subscribes, asks for work after every connection, runs jobs one
    /// at a time. On shutdown no new job is taken; a job that is printing gets
    /// `shutdown_grace` to finish, then is reported failed; a job that has not reached the
    /// printer is dropped and resumed at the next start.
    pub async fn run(
        mut self,
        mut incoming: mpsc::Receiver<InboundMessage>,
        shutdown: CancellationToken,
    ) -> Result<(), JobsError> {
        self.subscribe().await?;
        let mut state = self.link.state();
        let mut connected = matches!(*state.borrow_and_update(), LinkState::Connected { .. });
        let mut running: Option<RunningJob> = None;
        let mut retry: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        if connected {
            // Connected between the first subscribe and now: see the comment in the loop.
            self.subscribe().await?;
            self.start_next().await;
        }
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                outcome = wait_job(&mut running) => {
                    let finished = running.take().expect("wait_job only completes for a running job");
                    let outcome = match outcome {
                        Ok(outcome) => outcome,
                        Err(e) => {
                            // A panic in the job's own code (not in a plugin: those are
                            // caught at the boundary). The journal may say Printing; the
                            // next start reports it as interrupted.
                            tracing::error!(job = %finished.job_id, "the job task failed: {e}");
                            continue;
                        }
                    };
                    self.report(&finished.job_id, &outcome).await;
                    // The same job answered from the journal twice in a row means the cloud
                    // keeps refusing its status: ask again later instead of in a tight loop.
                    let replayed = outcome.details.contains_key("replayed");
                    let again = replayed && self.last_replayed.as_deref() == Some(finished.job_id.as_str());
                    self.last_replayed = replayed.then_some(finished.job_id);
                    if again {
                        retry.get_or_insert_with(|| Box::pin(tokio::time::sleep(START_NEXT_RETRY)));
                    } else if connected {
                        self.start_next().await;
                    }
                }
                changed = state.changed() => {
                    if changed.is_err() {
                        // The link task ended: nothing more will arrive.
                        break;
                    }
                    let now = matches!(*state.borrow_and_update(), LinkState::Connected { .. });
                    if now && !connected {
                        // The link re-sends registered filters only when the broker lost the
                        // session; filters registered while disconnected into a session the
                        // broker kept (one left by registration) would never be sent. A
                        // repeated SUBSCRIBE is harmless, so send them on every connection.
                        self.subscribe().await?;
                        if running.is_none() {
                            self.start_next().await;
                        }
                    }
                    connected = now;
                }
                message = incoming.recv() => {
                    let Some(message) = message else { break };
                    if let Some(job) = self.handle(&message, running.is_some()).await {
                        running = Some(self.spawn(job));
                    }
                    if std::mem::take(&mut self.retry_wanted) && retry.is_none() {
                        retry = Some(Box::pin(tokio::time::sleep(START_NEXT_REFUSED_RETRY)));
                    }
                }
                _ = async { retry.as_mut().expect("guarded by the condition").await }, if retry.is_some() => {
                    retry = None;
                    if running.is_none() && connected {
                        self.start_next().await;
                    }
                }
            }
        }
        if let Some(job) = running.take() {
            if let Some(job_id) = self.finish_on_shutdown(job).await {
                if connected {
                    self.await_update_answer(&job_id, &mut incoming).await;
                }
            }
        }
        Ok(())
    }

    /// Registers the jobs filters with the link (and sends them when connected).
    async fn subscribe(&self) -> Result<(), JobsError> {
        for filter in self.topics.filters() {
            self.link
                .subscribe(&filter, Qos::AtLeastOnce)
                .await
                .map_err(JobsError::Subscribe)?;
        }
        Ok(())
    }

    /// Publishes `start-next` with a fresh client token.
    async fn start_next(&mut self) {
        let token = client_token();
        let payload = serde_json::json!({ "clientToken": token }).to_string();
        match self
            .link
            .publish(&self.topics.start_next(), payload, Qos::AtLeastOnce)
            .await
        {
            Ok(()) => self.start_next_token = Some(token),
            Err(e) => tracing::warn!("cannot ask the cloud for the next job: {e}"),
        }
    }

    /// Handles one message; returns a job to start.
    async fn handle(&mut self, message: &InboundMessage, busy: bool) -> Option<Execution> {
        let answer = self.topics.classify(&message.topic)?;
        match answer {
            Answer::NotifyNext => {
                let next: NextAnswer = parse_or_log(&message.payload, "notify-next")?;
                // A start-next already on its way usually brings this job, and asking twice
                // spends the thing's request allowance (the cloud throttles per second). It
                // may have been answered before the job existed, though: remember to ask again
                // if its answer comes back empty.
                if next.execution.is_some() && !busy {
                    if self.start_next_token.is_none() {
                        self.start_next().await;
                    } else {
                        self.notified_while_asking = true;
                    }
                }
                None
            }
            Answer::StartNextAccepted => {
                let next: NextAnswer = parse_or_log(&message.payload, "start-next answer")?;
                if next.client_token.is_none() || next.client_token != self.start_next_token {
                    tracing::debug!("ignoring the answer to an earlier start-next");
                    return None;
                }
                self.start_next_token = None;
                let notified = std::mem::take(&mut self.notified_while_asking);
                let Some(execution) = next.execution else {
                    if notified && !busy {
                        self.start_next().await;
                    }
                    return None;
                };
                if busy {
                    // Cannot happen with one request at a time; the job comes back after
                    // the running one ends.
                    tracing::debug!(job = %execution.job_id, "a job is running; taking this one later");
                    return None;
                }
                tracing::info!(job = %execution.job_id, "job taken");
                Some(execution)
            }
            Answer::StartNextRejected => {
                let error: ErrorAnswer = parse_or_log(&message.payload, "start-next refusal")?;
                self.start_next_token = None;
                self.retry_wanted = true;
                tracing::warn!(
                    code = error.code.as_deref().unwrap_or("?"),
                    "the cloud refused start-next: {}; asking again shortly",
                    error.message.as_deref().unwrap_or("no message")
                );
                None
            }
            Answer::UpdateAccepted(job_id) => {
                tracing::debug!(job = %job_id, "the cloud took the job's status");
                None
            }
            Answer::UpdateRejected(job_id) => {
                let error: ErrorAnswer = parse_or_log(&message.payload, "update refusal")?;
                tracing::warn!(
                    job = %job_id,
                    code = error.code.as_deref().unwrap_or("?"),
                    "the cloud refused the job's status: {}",
                    error.message.as_deref().unwrap_or("no message")
                );
                None
            }
        }
    }

    fn spawn(&self, execution: Execution) -> RunningJob {
        let phase = Arc::new(Mutex::new(Phase::Preparing));
        let job_id = execution.job_id.clone();
        let task = tokio::spawn(execute(self.context.clone(), execution, phase.clone()));
        RunningJob {
            job_id,
            task,
            phase,
        }
    }

    /// Publishes the job's terminal status.
    async fn report(&self, job_id: &str, outcome: &JobOutcome) {
        let payload = serde_json::json!({
            "status": outcome.status,
            "statusDetails": outcome.details,
            "clientToken": client_token(),
        })
        .to_string();
        tracing::info!(job = %job_id, status = ?outcome.status, reason = outcome.details.get("reason").map(String::as_str).unwrap_or(""), "job finished");
        if let Err(e) = self
            .link
            .publish(&self.topics.update(job_id), payload, Qos::AtLeastOnce)
            .await
        {
            // The journal holds the outcome: the next start reports it again.
            tracing::warn!(job = %job_id, "cannot report the job's status: {e}");
        }
    }

    /// Waits (bounded) for the cloud's answer to the job's status report, so that the link is
    /// not closed before the report has reached the cloud.
    async fn await_update_answer(
        &self,
        job_id: &str,
        incoming: &mut mpsc::Receiver<InboundMessage>,
    ) {
        let answered = tokio::time::timeout(FINAL_REPORT_WAIT, async {
            while let Some(message) = incoming.recv().await {
                match self.topics.classify(&message.topic) {
                    Some(Answer::UpdateAccepted(id)) if id == job_id => return true,
                    Some(Answer::UpdateRejected(id)) if id == job_id => {
                        tracing::warn!(job = %job_id, "the cloud refused the job's last status");
                        return true;
                    }
                    _ => {}
                }
            }
            false
        })
        .await;
        if !matches!(answered, Ok(true)) {
            tracing::warn!(job = %job_id, "the cloud did not confirm the job's last status before stopping; the next start reports it again");
        }
    }

    /// Shutdown with a job running: see [`JobsTask::run`]. Returns the job whose status was
    /// reported.
    async fn finish_on_shutdown(&self, mut job: RunningJob) -> Option<String> {
        let phase = lock(&job.phase).clone();
        let device = match phase {
            Phase::Preparing => {
                job.task.abort();
                let _ = (&mut job.task).await;
                tracing::info!(job = %job.job_id, "stopped before printing; the job resumes at the next start");
                return None;
            }
            Phase::Printing { device } => device,
        };
        tracing::info!(job = %job.job_id, device = %device, "waiting for the print to finish before stopping");
        match tokio::time::timeout(self.shutdown_grace, &mut job.task).await {
            Ok(Ok(outcome)) => self.report(&job.job_id, &outcome).await,
            Ok(Err(e)) => {
                tracing::error!(job = %job.job_id, "the job task failed: {e}");
                return None;
            }
            Err(_) => {
                job.task.abort();
                let _ = (&mut job.task).await;
                let failure = JobFailure::StoppedWhilePrinting { device };
                let outcome = JobOutcome::failure(&failure);
                if let Err(e) =
                    record(&self.context.journal, &job.job_id, outcome.journal_state()).await
                {
                    tracing::error!(job = %job.job_id, "cannot record the job's outcome: {e}");
                }
                self.report(&job.job_id, &outcome).await;
            }
        }
        Some(job.job_id)
    }
}

/// Waits for the running job, or forever when there is none.
async fn wait_job(running: &mut Option<RunningJob>) -> Result<JobOutcome, tokio::task::JoinError> {
    match running {
        Some(job) => (&mut job.task).await,
        None => std::future::pending().await,
    }
}

fn parse_or_log<T: serde::de::DeserializeOwned>(payload: &[u8], what: &str) -> Option<T> {
    match serde_json::from_slice(payload) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!("ignoring a {what} that does not parse: {e}");
            None
        }
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

/// Runs one job from the journal's decision to its outcome, which is recorded before it is
/// returned.
async fn execute(
    context: Arc<JobContext>,
    execution: Execution,
    phase: Arc<Mutex<Phase>>,
) -> JobOutcome {
    let job_id = execution.job_id;
    let decision = lock(&context.journal).may_start(&job_id);
    match decision {
        StartDecision::Finished(state) => {
            tracing::info!(job = %job_id, "already finished; reporting the recorded outcome again");
            return JobOutcome::from_journal(&state);
        }
        StartDecision::Interrupted { device } => {
            let outcome = JobOutcome::failure(&JobFailure::Interrupted { device });
            if let Err(e) = record(&context.journal, &job_id, outcome.journal_state()).await {
                tracing::error!(job = %job_id, "cannot record the job's outcome: {e}");
            }
            return outcome;
        }
        StartDecision::New => {
            if let Err(e) = record(&context.journal, &job_id, JobState::Received).await {
                return JobOutcome::failure(&JobFailure::Journal(e));
            }
        }
        StartDecision::NotStarted => {}
    }
    let started = Instant::now();
    let result = match execution.job_document.as_ref().map(JobDocument::parse) {
        None => Err(JobFailure::InvalidDocument(
            "the execution carries no job document".into(),
        )),
        Some(Err(failure)) => Err(failure),
        Some(Ok(JobDocument::Print(document))) => {
            print_job(&context, &job_id, &document, &phase, started).await
        }
        Some(Ok(JobDocument::ScaleRead(document))) => Err(scale_job(&context, &document)),
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(failure) => JobOutcome::failure(&failure),
    };
    if let Err(e) = record(&context.journal, &job_id, outcome.journal_state()).await {
        tracing::error!(job = %job_id, "cannot record the job's outcome: {e}");
    }
    outcome
}

/// Scale jobs: refused until DeviceHub reads scales, with the reason that applies.
fn scale_job(context: &JobContext, document: &ScaleDocument) -> JobFailure {
    let scales: Vec<String> = context
        .devices
        .list()
        .into_iter()
        .filter(|d| d.kind == DeviceKind::Scale.as_str())
        .map(|d| d.id)
        .collect();
    match (&document.device, scales.first()) {
        (Some(id), _) if !scales.contains(id) => JobFailure::NoSuchDevice(id.clone()),
        (Some(id), _) => JobFailure::ScaleNotSupported(id.clone()),
        (None, Some(id)) => JobFailure::ScaleNotSupported(id.clone()),
        (None, None) => JobFailure::NoScale,
    }
}

/// Chooses the printer: the named device, else the default rule (see the module docs).
pub fn choose_printer(
    devices: &DeviceTable,
    preferred: &[String],
    requested: Option<&str>,
) -> Result<String, JobFailure> {
    let attached = devices.list();
    let printer = DeviceKind::Printer.as_str();
    if let Some(id) = requested {
        return match attached.iter().find(|d| d.id == id) {
            None => Err(JobFailure::NoSuchDevice(cap(id.to_string()))),
            Some(d) if d.kind != printer => Err(JobFailure::NotAPrinter(d.id.clone())),
            Some(d) => Ok(d.id.clone()),
        };
    }
    let printers: Vec<&str> = attached
        .iter()
        .filter(|d| d.kind == printer)
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

async fn print_job(
    context: &JobContext,
    job_id: &str,
    document: &PrintDocument,
    phase: &Mutex<Phase>,
    started: Instant,
) -> Result<JobOutcome, JobFailure> {
    let device_id = choose_printer(
        &context.devices,
        &context.preferred_devices,
        document.device.as_deref(),
    )?;
    let worker = context
        .devices
        .get(&device_id)
        .map_err(|_| JobFailure::NoSuchDevice(device_id.clone()))?;
    let profile: PrinterProfile = worker
        .spec()
        .printer_profile()
        .cloned()
        .ok_or_else(|| JobFailure::NotAPrinter(device_id.clone()))?;

    let download_started = Instant::now();
    let file = download(&context.http, &document.file, context.download.max_bytes).await?;
    let download_time = download_started.elapsed();
    let file_bytes = file.len();

    let render_started = Instant::now();
    let options = PrintOptions {
        job_id: job_id.to_string(),
        copies: document.copies,
        format: FileFormat::parse(&document.file.format),
        ..PrintOptions::default()
    };
    let prepared =
        tokio::task::spawn_blocking(move || print::prepare_job(&file, &profile, &options))
            .await
            .map_err(|e| JobFailure::BadFile(format!("rendering stopped: {e}")))?
            .map_err(|e| JobFailure::BadFile(e.to_string()))?;
    let render_time = render_started.elapsed();

    // Printing is recorded durably before the first byte goes to the printer: from here on a
    // crash leaves `Printing`, which is never printed again.
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
    .await
    .map_err(JobFailure::Journal)?;
    let print_started = Instant::now();
    let report = worker
        .print_async(prepared.job)
        .await
        .map_err(|e| print_failure(&device_id, e))?;
    let print_time = print_started.elapsed();

    let mut details = BTreeMap::new();
    details.insert("device".to_string(), device_id.clone());
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
fn download_client(settings: &DownloadSettings) -> Result<reqwest::Client, JobsError> {
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

/// Downloads the print file into memory, within `max_bytes`, and checks its size and hash.
async fn download(
    client: &reqwest::Client,
    file: &PrintFile,
    max_bytes: u64,
) -> Result<Vec<u8>, JobFailure> {
    if let Some(size) = file.size {
        if size > max_bytes {
            return Err(JobFailure::FileTooLarge {
                size,
                max: max_bytes,
            });
        }
    }
    let failed = |e: reqwest::Error| JobFailure::DownloadFailed(cap(e.without_url().to_string()));
    let mut response = client.get(&file.url).send().await.map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        let hint = match status.as_u16() {
            403 => " (the link may have expired)",
            404 => " (the file is gone)",
            _ => "",
        };
        return Err(JobFailure::DownloadFailed(format!(
            "the file server answered {status}{hint}"
        )));
    }
    if let Some(length) = response.content_length() {
        if length > max_bytes {
            return Err(JobFailure::FileTooLarge {
                size: length,
                max: max_bytes,
            });
        }
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > max_bytes {
            return Err(JobFailure::FileTooLarge {
                size: bytes.len() as u64,
                max: max_bytes,
            });
        }
    }
    if let Some(expected) = file.size {
        if expected != bytes.len() as u64 {
            return Err(JobFailure::SizeMismatch {
                expected,
                actual: bytes.len() as u64,
            });
        }
    }
    if let Some(expected) = &file.sha256 {
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(JobFailure::HashMismatch {
                expected: expected.to_ascii_lowercase(),
                actual,
            });
        }
    }
    Ok(bytes)
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
                device: None
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
    fn topics_are_classified() {
        let topics = Topics::new("desk-1");
        assert_eq!(
            topics.classify("$aws/things/desk-1/jobs/notify-next"),
            Some(Answer::NotifyNext)
        );
        assert_eq!(
            topics.classify("$aws/things/desk-1/jobs/print-1/update/rejected"),
            Some(Answer::UpdateRejected("print-1"))
        );
        assert_eq!(
            topics.classify("$aws/things/desk-1/jobs/start-next/accepted"),
            Some(Answer::StartNextAccepted)
        );
        assert_eq!(topics.classify("$aws/things/desk-2/jobs/notify-next"), None);
        assert_eq!(topics.classify("$aws/things/desk-1/jobs/notify"), None);
        assert_eq!(topics.filters().len(), 5);
    }

    #[test]
    fn without_devices_there_is_no_printer() {
        let table = DeviceTable::default();
        assert_eq!(
            choose_printer(&table, &["zebra-1".into()], None),
            Err(JobFailure::NoPrinter)
        );
        assert_eq!(
            choose_printer(&table, &[], Some("zebra-9")),
            Err(JobFailure::NoSuchDevice("zebra-9".into()))
        );
    }

    #[test]
    fn reasons_are_capped_for_status_details() {
        let long = "x".repeat(5000);
        let outcome = JobOutcome::failure(&JobFailure::BadFile(long));
        assert!(outcome.details["reason"].len() <= MAX_DETAIL_LEN);
    }
}
