//! The Jobs service: job executions per thing over AWS IoT Core's reserved MQTT topics, their
//! state machine, step timers and notifications.
//!
//! [`JobsService`] is a synchronous engine that knows nothing of sockets. The runtime subscribes
//! to [`JobsService::SUBSCRIPTIONS`], hands every message it receives to [`JobsService::handle`],
//! calls [`JobsService::tick`] periodically, and publishes everything these return. The
//! shipping application's HTTP API creates and cancels work with [`JobsService::create_job`] and
//! [`JobsService::cancel_job`] and reads it with [`JobsService::execution`] and
//! [`JobsService::list`].
//!
//! # Behaviour (AWS IoT Developer Guide: jobs-mqtt-api, jobs-api, jobs-comm-notifications,
//! iot-jobs-lifecycle)
//! - Requests on `$aws/things/{thing}/jobs/` `get`, `start-next`, `{jobId}/get` (`$next` allowed)
//!   and `{jobId}/update` are answered on `TOPIC/accepted` or `TOPIC/rejected`. Any other topic
//!   under the prefix that is not one of the service's own answers gets `InvalidTopic`.
//! - The pending list of a thing is its IN_PROGRESS executions, then its QUEUED ones, each in the
//!   order they were created; its head is "the next job". `notify` is published when the pending
//!   list gains or loses an execution or one changes status; `notify-next` when the head changes
//!   (without `execution` when nothing is pending).
//! - `start-next` returns an execution that is already IN_PROGRESS as it is (its
//!   `statusDetails` and step timer are only set when it moves a QUEUED execution to
//!   IN_PROGRESS); an update changes them.
//! - Only the device statuses IN_PROGRESS, SUCCEEDED, FAILED and REJECTED may be set by an
//!   update, and only from QUEUED or IN_PROGRESS: anything else is `InvalidStateTransition`
//!   with the current `executionState`.
//! - `{jobId}/get` on an execution that reached a terminal status answers
//!   `TerminalStateReached`, the code the guide gives for describing a finished job; `$next`
//!   with nothing pending is accepted without `execution`, as `start-next` is.
//! - A step timer starts when an execution goes IN_PROGRESS (the request's
//!   `stepTimeoutInMinutes`, else the job's), is replaced by a later update's value, cleared by
//!   `-1` or a terminal status, and on expiry [`JobsService::tick`] moves the execution to
//!   TIMED_OUT.
//! - Timestamps are epoch seconds from the caller's clock.
//!
//! # Throttling
//! As with shadows, nothing is ever in flight inside a synchronous engine, so each thing may make
//! [`DEFAULT_REQUESTS_PER_THING_PER_SECOND`] requests within one second of the caller's clock;
//! the requests beyond that are answered with `RequestThrottled`.
//!
//! # Persistence
//! An append-only log, `STATE_DIR/executions.log` (module `log`): every change appends the
//! whole current record of its execution, `<crc32 hex> <compact JSON>\n`, and syncs it with one
//! `fdatasync` (no rename, no directory sync) before the change is taken into memory; a failed
//! write or sync is answered with `InternalError` and changes nothing. At
//! [`JobsService::open`] the last record of each execution wins; a torn last record (a crash
//! mid-append) is cut off, and a log with a damaged record in its middle is moved aside, listed
//! by [`JobsService::quarantined`], and rewritten from its good records. When the log holds over
//! 1024 records and over four per execution, it is rewritten atomically with one record per
//! execution.
//!
//! Earlier versions kept one file per execution, `STATE_DIR/{thing}/{jobId}.json`. Such files
//! still load (a damaged one is moved aside and listed as before); they are written into the log
//! by a rewrite and removed once that is durable.

mod log;
#[cfg(test)]
mod tests;

use crate::cloud::throttle::PerThingThrottle;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use self::log::ExecutionLog;
use super::shadow::state_file::{encode_file_name, load_records, QuarantinedFile};
use super::shadow::{error_chain, is_valid_thing_name};
use super::Outgoing;

/// The largest job document, in bytes of compact JSON.
pub const MAX_JOB_DOCUMENT_BYTES: usize = 32 * 1024;
/// The most summaries per status list in a `notify` message.
pub const MAX_NOTIFY_SUMMARIES: usize = 10;
/// The shortest step timeout, in minutes.
pub const MIN_STEP_TIMEOUT_MINUTES: u32 = 1;
/// The longest step timeout (seven days), in minutes.
pub const MAX_STEP_TIMEOUT_MINUTES: u32 = 10_080;
/// Requests one thing may make within one second before it is answered with `RequestThrottled`.
///
/// A device printing labels back to back makes two requests per job (`start-next`, then the
/// final `update`); at 20 a desk printing ten small labels a second was throttled. AWS limits
/// the Jobs data plane per account rather than per thing.
pub const DEFAULT_REQUESTS_PER_THING_PER_SECOND: u32 = 100;
/// The longest `clientToken`, in bytes.
pub const MAX_CLIENT_TOKEN_BYTES: usize = 64;
/// The longest job ID.
pub const MAX_JOB_ID_LEN: usize = 64;
/// The longest key of `statusDetails`.
pub const MAX_STATUS_DETAILS_KEY_LEN: usize = 128;
/// The longest value of `statusDetails`.
pub const MAX_STATUS_DETAILS_VALUE_LEN: usize = 1024;

/// The job ID that stands for the next pending execution in `{jobId}/get`.
const NEXT_JOB_ID: &str = "$next";

/// What can go wrong when loading state or when the shipping application creates or cancels a job.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// The jobs state directory could not be created or listed.
    #[error("cannot load jobs state from {path}")]
    Load {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// A thing name outside AWS IoT's rules (1..128 of `[a-zA-Z0-9:_-]`).
    #[error(
        "invalid thing name {0:?}: it must be 1 to 128 characters of a-z, A-Z, 0-9, ':', '_', '-'"
    )]
    InvalidThingName(String),
    /// A job ID outside AWS IoT's rules (1..64 of `[a-zA-Z0-9_-]`).
    #[error("invalid job ID {0:?}: it must be 1 to 64 characters of a-z, A-Z, 0-9, '_', '-'")]
    InvalidJobId(String),
    /// A job document that is not a JSON object.
    #[error("the document of job {job_id:?} is not a JSON object")]
    DocumentNotAnObject {
        /// The job.
        job_id: String,
    },
    /// A job document over 32 KB: large content travels by URL instead.
    #[error("the document of job {job_id:?} is {size} bytes, over the {limit}-byte limit")]
    DocumentTooLarge {
        /// The job.
        job_id: String,
        /// Its size as compact JSON.
        size: usize,
        /// [`MAX_JOB_DOCUMENT_BYTES`].
        limit: usize,
    },
    /// A step timeout outside 1..10080 minutes.
    #[error("step timeout of {0} minutes is outside 1..=10080")]
    InvalidStepTimeout(u32),
    /// The thing already has an execution of this job.
    #[error("thing {thing_name:?} already has an execution of job {job_id:?}")]
    ExecutionExists {
        /// The thing.
        thing_name: String,
        /// The job.
        job_id: String,
    },
    /// The thing has no execution of this job.
    #[error("thing {thing_name:?} has no execution of job {job_id:?}")]
    ExecutionNotFound {
        /// The thing.
        thing_name: String,
        /// The job.
        job_id: String,
    },
    /// The execution already reached a terminal status and can no longer change.
    #[error("the execution of job {job_id:?} on {thing_name:?} is already {status}")]
    AlreadyTerminal {
        /// The thing.
        thing_name: String,
        /// The job.
        job_id: String,
        /// Its terminal status.
        status: JobExecutionStatus,
    },
    /// An execution could not be written to disk.
    #[error("cannot save job execution to {path}")]
    Save {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
}

/// The status of a job execution, spelled as AWS IoT spells it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobExecutionStatus {
    /// Waiting for the device to start it.
    Queued,
    /// Started by the device.
    InProgress,
    /// Finished successfully (set by the device).
    Succeeded,
    /// Finished unsuccessfully (set by the device).
    Failed,
    /// The step timer expired (set by the service).
    TimedOut,
    /// The device refused it.
    Rejected,
    /// Removed from the thing's job (set by the service).
    Removed,
    /// Canceled by the application (set by the service).
    Canceled,
}

impl JobExecutionStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobExecutionStatus::Queued => "QUEUED",
            JobExecutionStatus::InProgress => "IN_PROGRESS",
            JobExecutionStatus::Succeeded => "SUCCEEDED",
            JobExecutionStatus::Failed => "FAILED",
            JobExecutionStatus::TimedOut => "TIMED_OUT",
            JobExecutionStatus::Rejected => "REJECTED",
            JobExecutionStatus::Removed => "REMOVED",
            JobExecutionStatus::Canceled => "CANCELED",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            JobExecutionStatus::Queued,
            JobExecutionStatus::InProgress,
            JobExecutionStatus::Succeeded,
            JobExecutionStatus::Failed,
            JobExecutionStatus::TimedOut,
            JobExecutionStatus::Rejected,
            JobExecutionStatus::Removed,
            JobExecutionStatus::Canceled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Every status but QUEUED and IN_PROGRESS is final.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            JobExecutionStatus::Queued | JobExecutionStatus::InProgress
        )
    }

    /// Whether a device may set this status with an update.
    fn settable_by_device(self) -> bool {
        matches!(
            self,
            JobExecutionStatus::InProgress
                | JobExecutionStatus::Succeeded
                | JobExecutionStatus::Failed
                | JobExecutionStatus::Rejected
        )
    }
}

impl std::fmt::Display for JobExecutionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error codes of the Jobs MQTT API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorCode {
    InvalidTopic,
    InvalidJson,
    InvalidRequest,
    InvalidStateTransition,
    ResourceNotFound,
    VersionMismatch,
    InternalError,
    RequestThrottled,
    TerminalStateReached,
}

impl ErrorCode {
    fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidTopic => "InvalidTopic",
            ErrorCode::InvalidJson => "InvalidJson",
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::InvalidStateTransition => "InvalidStateTransition",
            ErrorCode::ResourceNotFound => "ResourceNotFound",
            ErrorCode::VersionMismatch => "VersionMismatch",
            ErrorCode::InternalError => "InternalError",
            ErrorCode::RequestThrottled => "RequestThrottled",
            ErrorCode::TerminalStateReached => "TerminalStateReached",
        }
    }
}

/// A rejected request: code, message, and for version and transition errors the execution's
/// current state so that the device can recover without another round trip.
#[derive(Debug)]
struct Rejection {
    code: ErrorCode,
    message: String,
    execution_state: Option<Value>,
}

impl Rejection {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            execution_state: None,
        }
    }

    fn with_state(
        code: ErrorCode,
        message: impl Into<String>,
        execution: &StoredExecution,
    ) -> Self {
        Rejection {
            code,
            message: message.into(),
            execution_state: Some(execution.state_json()),
        }
    }
}

/// One job execution as it is kept on disk and in memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredExecution {
    thing_name: String,
    job_id: String,
    job_document: Value,
    status: JobExecutionStatus,
    status_details: BTreeMap<String, String>,
    queued_at: u64,
    /// Set when the execution first went IN_PROGRESS.
    started_at: Option<u64>,
    last_updated_at: u64,
    /// Starts at 1 and grows with every change, for optimistic locking (`expectedVersion`).
    version_number: u64,
    /// Identifies this execution of the job on this thing.
    execution_number: u64,
    /// The job's step timeout, applied when the execution goes IN_PROGRESS without its own.
    default_step_timeout_minutes: Option<u32>,
    /// When the running step timer expires, epoch seconds.
    step_deadline: Option<u64>,
    /// Creation order across all executions: queue order, and the tie-break for equal
    /// `queued_at`.
    sequence: u64,
}

impl StoredExecution {
    /// The JobExecution object of the MQTT API.
    fn execution_json(&self, include_document: bool) -> Value {
        let mut out = Map::new();
        out.insert("jobId".into(), json!(self.job_id));
        out.insert("thingName".into(), json!(self.thing_name));
        if include_document {
            out.insert("jobDocument".into(), self.job_document.clone());
        }
        out.insert("status".into(), json!(self.status.as_str()));
        out.insert("statusDetails".into(), json!(self.status_details));
        out.insert("queuedAt".into(), json!(self.queued_at));
        if let Some(started_at) = self.started_at {
            out.insert("startedAt".into(), json!(started_at));
        }
        out.insert("lastUpdatedAt".into(), json!(self.last_updated_at));
        out.insert("versionNumber".into(), json!(self.version_number));
        out.insert("executionNumber".into(), json!(self.execution_number));
        Value::Object(out)
    }

    /// The JobExecutionSummary object of `get` and `notify`.
    fn summary_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("jobId".into(), json!(self.job_id));
        out.insert("queuedAt".into(), json!(self.queued_at));
        if let Some(started_at) = self.started_at {
            out.insert("startedAt".into(), json!(started_at));
        }
        out.insert("lastUpdatedAt".into(), json!(self.last_updated_at));
        out.insert("versionNumber".into(), json!(self.version_number));
        out.insert("executionNumber".into(), json!(self.execution_number));
        Value::Object(out)
    }

    /// The JobExecutionState object: status, details and version.
    fn state_json(&self) -> Value {
        json!({
            "status": self.status.as_str(),
            "statusDetails": self.status_details,
            "versionNumber": self.version_number,
        })
    }

    /// Moves to `status` at `now`, counting a new version and keeping the step timer only
    /// while the execution is still running.
    fn transition(&mut self, status: JobExecutionStatus, now_epoch_s: u64) {
        if status == JobExecutionStatus::InProgress && self.started_at.is_none() {
            self.started_at = Some(now_epoch_s);
        }
        if status.is_terminal() {
            self.step_deadline = None;
        }
        self.status = status;
        self.last_updated_at = now_epoch_s;
        self.version_number += 1;
    }
}

/// What the notifications are computed from: the pending list as (job, status) pairs, in order.
#[derive(Debug, PartialEq, Eq)]
struct PendingView {
    entries: Vec<(String, JobExecutionStatus)>,
}

impl PendingView {
    fn head(&self) -> Option<&str> {
        self.entries.first().map(|(job_id, _)| job_id.as_str())
    }
}

/// Which Jobs API a request topic names.
#[derive(Debug, PartialEq, Eq)]
enum JobsRequest {
    /// `jobs/get`: list pending executions.
    List,
    /// `jobs/start-next`.
    StartNext,
    /// `jobs/{jobId}/get`.
    Describe(String),
    /// `jobs/{jobId}/update`.
    Update(String),
}

/// A parsed request body and its validated client token.
struct RequestBody {
    fields: Map<String, Value>,
    client_token: Option<String>,
}

/// The Jobs engine: every execution of every thing, persisted in an append-only log,
/// `STATE_DIR/executions.log`.
#[derive(Debug)]
pub struct JobsService {
    /// The log every change is appended to before it is taken into memory.
    log: ExecutionLog,
    /// Executions by thing, then by job ID.
    executions: BTreeMap<String, BTreeMap<String, StoredExecution>>,
    /// The `sequence` of the next execution created.
    next_sequence: u64,
    /// Per-thing request counts for `RequestThrottled`.
    throttle: PerThingThrottle,
    /// Damaged files found by [`JobsService::open`]: per-execution files of earlier versions,
    /// and the log itself when a record in its middle was damaged.
    quarantined: Vec<QuarantinedFile>,
}

impl JobsService {
    /// The topic filter that carries job requests. It covers the whole `jobs/` subtree so that a
    /// request on a topic no API uses can be answered with `InvalidTopic`; the service's own
    /// answers and notifications that come back through it are ignored by [`JobsService::handle`].
    pub const SUBSCRIPTIONS: &'static [&'static str] = &["$aws/things/+/jobs/#"];

    /// Opens (creating when missing) the jobs state in `state_dir`, a directory the service has
    /// to itself (the runtime gives it `DATA_DIR/jobs`). A torn last record of the log is cut
    /// off; a log with a damaged record in its middle, and a damaged execution file of an
    /// earlier version, are moved aside (`*.corrupt`), logged and listed by
    /// [`JobsService::quarantined`], and the good records load normally. Execution files of
    /// earlier versions are written into the log and then removed.
    pub fn open(state_dir: &Path) -> Result<Self, JobsError> {
        let root = state_dir.to_path_buf();
        let load_error = |source| JobsError::Load {
            path: root.clone(),
            source,
        };
        let legacy = load_records::<StoredExecution>(&root, |path, record| {
            check_record(record)?;
            if legacy_execution_path(&root, &record.thing_name, &record.job_id) != path {
                return Err("the record names another execution than its file does".into());
            }
            Ok(())
        })
        .map_err(load_error)?;
        let (log, loaded) = ExecutionLog::open(&root, &check_record).map_err(load_error)?;
        let mut quarantined = legacy.quarantined;
        quarantined.extend(loaded.quarantined);
        let legacy_files: Vec<PathBuf> = legacy
            .records
            .iter()
            .map(|(path, _)| path.clone())
            .collect();
        // The log is newer than any execution file: once it exists, changes go only to it.
        let records = legacy
            .records
            .into_iter()
            .map(|(_, record)| record)
            .chain(loaded.records);
        let mut executions: BTreeMap<String, BTreeMap<String, StoredExecution>> = BTreeMap::new();
        let mut next_sequence = 0;
        for record in records {
            next_sequence = next_sequence.max(record.sequence + 1);
            executions
                .entry(record.thing_name.clone())
                .or_default()
                .insert(record.job_id.clone(), record);
        }
        let mut service = JobsService {
            log,
            executions,
            next_sequence,
            throttle: PerThingThrottle::new(DEFAULT_REQUESTS_PER_THING_PER_SECOND),
            quarantined,
        };
        if !legacy_files.is_empty() {
            service.migrate(&root, &legacy_files).map_err(load_error)?;
        }
        Ok(service)
    }

    /// Writes the executions loaded from the per-execution files of an earlier version into
    /// the log, then removes those files. They are removed only after the rewritten log is
    /// durable: a crash in between loads them again, and the log's records win over them.
    fn migrate(&mut self, root: &Path, legacy_files: &[PathBuf]) -> io::Result<()> {
        let all = all_executions(&self.executions);
        self.log.rewrite(all)?;
        for file in legacy_files {
            fs::remove_file(file)?;
        }
        // A thing's directory goes when it is empty; one that still holds a damaged file
        // moved aside stays, so that its bytes remain available.
        let mut dirs: Vec<&Path> = legacy_files
            .iter()
            .filter_map(|file| file.parent())
            .collect();
        dirs.dedup();
        for dir in dirs {
            let _ = fs::remove_dir(dir);
        }
        tracing::info!(
            root = %root.display(),
            executions = legacy_files.len(),
            "job execution files moved into the jobs log"
        );
        Ok(())
    }

    /// Damaged state files that [`JobsService::open`] moved aside.
    pub fn quarantined(&self) -> &[QuarantinedFile] {
        &self.quarantined
    }

    /// Changes how many requests one thing may make within one second before `RequestThrottled`.
    pub fn set_requests_per_thing_per_second(&mut self, limit: u32) {
        self.throttle.set_limit(limit);
    }

    /// Handles one message published under `$aws/things/{thing}/jobs/`; returns what to publish
    /// in answer (the answer first, then any notifications). Topics outside the Jobs namespace
    /// and the service's own answers give nothing back.
    pub fn handle(&mut self, topic: &str, payload: &[u8], now_epoch_s: u64) -> Vec<Outgoing> {
        let Some((thing_name, rest)) = split_jobs_topic(topic) else {
            return Vec::new();
        };
        if is_service_output(&rest) {
            return Vec::new();
        }
        let rejected_topic = format!("{topic}/rejected");
        let reject = |rejection: Rejection, client_token: Option<&str>| {
            vec![rejection_message(
                &rejected_topic,
                &rejection,
                client_token,
                now_epoch_s,
            )]
        };
        let Some(request) = parse_request(&rest) else {
            return reject(
                Rejection::new(
                    ErrorCode::InvalidTopic,
                    format!("{topic} does not map to any Jobs API"),
                ),
                None,
            );
        };
        if !is_valid_thing_name(thing_name) {
            return reject(
                Rejection::new(
                    ErrorCode::InvalidTopic,
                    format!("invalid thing name {thing_name:?}"),
                ),
                None,
            );
        }
        let body = match parse_body(payload) {
            Ok(body) => body,
            Err(rejection) => return reject(rejection, None),
        };
        let client_token = body.client_token.clone();
        if !self.throttle.admit(thing_name, now_epoch_s) {
            return reject(
                Rejection::new(
                    ErrorCode::RequestThrottled,
                    "too many requests for this thing; retry later",
                ),
                client_token.as_deref(),
            );
        }
        let accepted_topic = format!("{topic}/accepted");
        let result = match request {
            JobsRequest::List => self
                .list_pending(thing_name, &body, now_epoch_s)
                .map(|a| (a, Vec::new())),
            JobsRequest::StartNext => self.start_next(thing_name, &body, now_epoch_s),
            JobsRequest::Describe(job_id) => self
                .describe(thing_name, &job_id, &body, now_epoch_s)
                .map(|a| (a, Vec::new())),
            JobsRequest::Update(job_id) => self.update(thing_name, &job_id, &body, now_epoch_s),
        };
        match result {
            Ok((mut answer, notifications)) => {
                answer.insert("timestamp".into(), json!(now_epoch_s));
                if let Some(token) = &client_token {
                    answer.insert("clientToken".into(), json!(token));
                }
                let mut messages = vec![outgoing(accepted_topic, Value::Object(answer))];
                messages.extend(notifications);
                messages
            }
            Err(rejection) => reject(rejection, client_token.as_deref()),
        }
    }

    /// Queues a new execution of `job_id` on `thing_name` and returns the notifications to
    /// publish. `document` must be a JSON object of at most 32 KB; `step_timeout_minutes`
    /// (1..10080) is the default step timer of the execution.
    pub fn create_job(
        &mut self,
        thing_name: &str,
        job_id: &str,
        document: Value,
        step_timeout_minutes: Option<u32>,
        now_epoch_s: u64,
    ) -> Result<Vec<Outgoing>, JobsError> {
        if !is_valid_thing_name(thing_name) {
            return Err(JobsError::InvalidThingName(thing_name.to_owned()));
        }
        if !is_valid_job_id(job_id) {
            return Err(JobsError::InvalidJobId(job_id.to_owned()));
        }
        if !document.is_object() {
            return Err(JobsError::DocumentNotAnObject {
                job_id: job_id.to_owned(),
            });
        }
        let size = serde_json::to_vec(&document)
            .map(|bytes| bytes.len())
            .unwrap_or(usize::MAX);
        if size > MAX_JOB_DOCUMENT_BYTES {
            return Err(JobsError::DocumentTooLarge {
                job_id: job_id.to_owned(),
                size,
                limit: MAX_JOB_DOCUMENT_BYTES,
            });
        }
        if let Some(minutes) = step_timeout_minutes {
            if !(MIN_STEP_TIMEOUT_MINUTES..=MAX_STEP_TIMEOUT_MINUTES).contains(&minutes) {
                return Err(JobsError::InvalidStepTimeout(minutes));
            }
        }
        if self.find(thing_name, job_id).is_some() {
            return Err(JobsError::ExecutionExists {
                thing_name: thing_name.to_owned(),
                job_id: job_id.to_owned(),
            });
        }
        let execution = StoredExecution {
            thing_name: thing_name.to_owned(),
            job_id: job_id.to_owned(),
            job_document: document,
            status: JobExecutionStatus::Queued,
            status_details: BTreeMap::new(),
            queued_at: now_epoch_s,
            started_at: None,
            last_updated_at: now_epoch_s,
            version_number: 1,
            execution_number: 1,
            default_step_timeout_minutes: step_timeout_minutes,
            step_deadline: None,
            sequence: self.next_sequence,
        };
        let notifications = self.commit(execution, now_epoch_s)?;
        self.next_sequence += 1;
        Ok(notifications)
    }

    /// Cancels a queued or running execution (status CANCELED) and returns the notifications.
    pub fn cancel_job(
        &mut self,
        thing_name: &str,
        job_id: &str,
        now_epoch_s: u64,
    ) -> Result<Vec<Outgoing>, JobsError> {
        let current =
            self.find(thing_name, job_id)
                .ok_or_else(|| JobsError::ExecutionNotFound {
                    thing_name: thing_name.to_owned(),
                    job_id: job_id.to_owned(),
                })?;
        if current.status.is_terminal() {
            return Err(JobsError::AlreadyTerminal {
                thing_name: thing_name.to_owned(),
                job_id: job_id.to_owned(),
                status: current.status,
            });
        }
        let mut execution = current.clone();
        execution.transition(JobExecutionStatus::Canceled, now_epoch_s);
        self.commit(execution, now_epoch_s)
    }

    /// Moves every running execution whose step timer expired at or before `now_epoch_s` to
    /// TIMED_OUT and returns the notifications. An execution that cannot be saved stays as it
    /// was (the error is logged) and is retried on the next tick.
    pub fn tick(&mut self, now_epoch_s: u64) -> Vec<Outgoing> {
        let expired: Vec<StoredExecution> = self
            .executions
            .values()
            .flat_map(BTreeMap::values)
            .filter(|execution| {
                execution.status == JobExecutionStatus::InProgress
                    && execution
                        .step_deadline
                        .is_some_and(|deadline| deadline <= now_epoch_s)
            })
            .cloned()
            .collect();
        let mut messages = Vec::new();
        for mut execution in expired {
            execution.transition(JobExecutionStatus::TimedOut, now_epoch_s);
            match self.commit(execution, now_epoch_s) {
                Ok(notifications) => messages.extend(notifications),
                Err(error) => {
                    tracing::error!(error = %error_chain(&error), "step timeout not applied; retrying on the next tick");
                }
            }
        }
        messages
    }

    /// The JobExecution JSON (with `jobDocument`) of one execution, whatever its status.
    pub fn execution(&self, thing_name: &str, job_id: &str) -> Option<Value> {
        self.find(thing_name, job_id)
            .map(|execution| execution.execution_json(true))
    }

    /// Every execution of a thing, whatever its status, as JobExecution JSON in creation order.
    pub fn list(&self, thing_name: &str) -> Vec<Value> {
        let Some(executions) = self.executions.get(thing_name) else {
            return Vec::new();
        };
        let mut all: Vec<&StoredExecution> = executions.values().collect();
        all.sort_by_key(|execution| execution.sequence);
        all.into_iter()
            .map(|execution| execution.execution_json(true))
            .collect()
    }

    fn find(&self, thing_name: &str, job_id: &str) -> Option<&StoredExecution> {
        self.executions
            .get(thing_name)
            .and_then(|executions| executions.get(job_id))
    }

    /// The pending executions: IN_PROGRESS ones, then QUEUED ones, each in creation order.
    fn pending(&self, thing_name: &str) -> Vec<&StoredExecution> {
        let Some(executions) = self.executions.get(thing_name) else {
            return Vec::new();
        };
        let mut pending: Vec<&StoredExecution> = executions
            .values()
            .filter(|execution| !execution.status.is_terminal())
            .collect();
        pending.sort_by_key(|execution| {
            (
                execution.status != JobExecutionStatus::InProgress,
                execution.sequence,
            )
        });
        pending
    }

    fn pending_view(&self, thing_name: &str) -> PendingView {
        PendingView {
            entries: self
                .pending(thing_name)
                .into_iter()
                .map(|execution| (execution.job_id.clone(), execution.status))
                .collect(),
        }
    }

    /// Saves an execution, takes it into memory, and returns the notifications its change
    /// caused. Nothing changes in memory when the save fails.
    fn commit(
        &mut self,
        execution: StoredExecution,
        now_epoch_s: u64,
    ) -> Result<Vec<Outgoing>, JobsError> {
        let thing_name = execution.thing_name.clone();
        let before = self.pending_view(&thing_name);
        let executions = &self.executions;
        // When the log has to be rewritten before this append, it is rewritten with every
        // execution as it will be once this change is in.
        let snapshot = || {
            executions
                .values()
                .flat_map(BTreeMap::values)
                .filter(|stored| {
                    stored.thing_name != execution.thing_name || stored.job_id != execution.job_id
                })
                .chain(std::iter::once(&execution))
                .collect()
        };
        self.log
            .append(&execution, snapshot)
            .map_err(|source| JobsError::Save {
                path: self.log.path().to_path_buf(),
                source,
            })?;
        self.executions
            .entry(thing_name.clone())
            .or_default()
            .insert(execution.job_id.clone(), execution);
        let executions = &self.executions;
        if self
            .log
            .wants_compaction(|| executions.values().map(BTreeMap::len).sum())
        {
            let all = all_executions(&self.executions);
            self.log.compact(all);
        }
        Ok(self.notifications(&thing_name, &before, now_epoch_s))
    }

    /// `notify` when the pending list changed, `notify-next` when its head changed.
    fn notifications(
        &self,
        thing_name: &str,
        before: &PendingView,
        now_epoch_s: u64,
    ) -> Vec<Outgoing> {
        let after = self.pending_view(thing_name);
        let mut messages = Vec::new();
        if after != *before {
            let pending = self.pending(thing_name);
            let mut jobs = Map::new();
            for status in [JobExecutionStatus::InProgress, JobExecutionStatus::Queued] {
                let summaries: Vec<Value> = pending
                    .iter()
                    .filter(|execution| execution.status == status)
                    .take(MAX_NOTIFY_SUMMARIES)
                    .map(|execution| execution.summary_json())
                    .collect();
                if !summaries.is_empty() {
                    jobs.insert(status.as_str().into(), Value::Array(summaries));
                }
            }
            messages.push(outgoing(
                format!("$aws/things/{thing_name}/jobs/notify"),
                json!({ "timestamp": now_epoch_s, "jobs": jobs }),
            ));
        }
        if after.head() != before.head() {
            let mut body = Map::new();
            body.insert("timestamp".into(), json!(now_epoch_s));
            if let Some(next) = self.pending(thing_name).first() {
                body.insert("execution".into(), next.execution_json(true));
            }
            messages.push(outgoing(
                format!("$aws/things/{thing_name}/jobs/notify-next"),
                Value::Object(body),
            ));
        }
        messages
    }

    /// `jobs/get`: the pending executions as summaries.
    fn list_pending(
        &self,
        thing_name: &str,
        _body: &RequestBody,
        _now: u64,
    ) -> Result<Map<String, Value>, Rejection> {
        let pending = self.pending(thing_name);
        let summaries = |status: JobExecutionStatus| -> Vec<Value> {
            pending
                .iter()
                .filter(|execution| execution.status == status)
                .map(|execution| execution.summary_json())
                .collect()
        };
        let mut answer = Map::new();
        answer.insert(
            "inProgressJobs".into(),
            Value::Array(summaries(JobExecutionStatus::InProgress)),
        );
        answer.insert(
            "queuedJobs".into(),
            Value::Array(summaries(JobExecutionStatus::Queued)),
        );
        Ok(answer)
    }

    /// `jobs/start-next`: the running execution, or the oldest queued one moved to IN_PROGRESS.
    fn start_next(
        &mut self,
        thing_name: &str,
        body: &RequestBody,
        now_epoch_s: u64,
    ) -> Result<(Map<String, Value>, Vec<Outgoing>), Rejection> {
        let status_details = parse_status_details(&body.fields)?;
        let step_timeout = parse_step_timeout(&body.fields)?;
        let mut answer = Map::new();
        let Some(next) = self
            .pending(thing_name)
            .first()
            .map(|execution| (*execution).clone())
        else {
            return Ok((answer, Vec::new()));
        };
        if next.status == JobExecutionStatus::InProgress {
            answer.insert("execution".into(), next.execution_json(true));
            return Ok((answer, Vec::new()));
        }
        let mut execution = next;
        execution.transition(JobExecutionStatus::InProgress, now_epoch_s);
        if let Some(details) = status_details {
            execution.status_details = details;
        }
        execution.step_deadline = step_deadline(
            step_timeout,
            execution.default_step_timeout_minutes,
            now_epoch_s,
        );
        answer.insert("execution".into(), execution.execution_json(true));
        let notifications = self
            .commit(execution, now_epoch_s)
            .map_err(internal_error)?;
        Ok((answer, notifications))
    }

    /// `jobs/{jobId}/get`.
    fn describe(
        &self,
        thing_name: &str,
        job_id: &str,
        body: &RequestBody,
        _now: u64,
    ) -> Result<Map<String, Value>, Rejection> {
        let execution_number = parse_execution_number(&body.fields)?;
        let include_document = parse_flag(&body.fields, "includeJobDocument", true)?;
        let mut answer = Map::new();
        let execution = if job_id == NEXT_JOB_ID {
            match self.pending(thing_name).first() {
                Some(next) => *next,
                None => return Ok(answer),
            }
        } else {
            let execution = self.find_execution(thing_name, job_id, execution_number)?;
            if execution.status.is_terminal() {
                return Err(Rejection::new(
                    ErrorCode::TerminalStateReached,
                    format!("job execution {job_id} is already {}", execution.status),
                ));
            }
            execution
        };
        answer.insert(
            "execution".into(),
            execution.execution_json(include_document),
        );
        Ok(answer)
    }

    /// `jobs/{jobId}/update`.
    fn update(
        &mut self,
        thing_name: &str,
        job_id: &str,
        body: &RequestBody,
        now_epoch_s: u64,
    ) -> Result<(Map<String, Value>, Vec<Outgoing>), Rejection> {
        if job_id == NEXT_JOB_ID {
            return Err(Rejection::new(
                ErrorCode::InvalidRequest,
                "$next can only be used to get a job execution",
            ));
        }
        let fields = &body.fields;
        let status = match fields.get("status") {
            None => {
                return Err(Rejection::new(
                    ErrorCode::InvalidRequest,
                    "status is required",
                ))
            }
            Some(Value::String(text)) => JobExecutionStatus::parse(text).ok_or_else(|| {
                Rejection::new(
                    ErrorCode::InvalidRequest,
                    format!("unknown job execution status {text:?}"),
                )
            })?,
            Some(_) => {
                return Err(Rejection::new(
                    ErrorCode::InvalidRequest,
                    "status must be a string",
                ))
            }
        };
        let status_details = parse_status_details(fields)?;
        let expected_version = match fields.get("expectedVersion") {
            None => None,
            Some(value) => Some(value.as_u64().ok_or_else(|| {
                Rejection::new(
                    ErrorCode::InvalidRequest,
                    "expectedVersion must be a non-negative integer",
                )
            })?),
        };
        let execution_number = parse_execution_number(fields)?;
        let include_state = parse_flag(fields, "includeJobExecutionState", false)?;
        let include_document = parse_flag(fields, "includeJobDocument", false)?;
        let step_timeout = parse_step_timeout(fields)?;

        let current = self.find_execution(thing_name, job_id, execution_number)?;
        if let Some(expected) = expected_version {
            if expected != current.version_number {
                return Err(Rejection::with_state(
                    ErrorCode::VersionMismatch,
                    format!(
                        "expected version {expected} but the job execution is at version {}",
                        current.version_number
                    ),
                    current,
                ));
            }
        }
        if current.status.is_terminal() {
            return Err(Rejection::with_state(
                ErrorCode::InvalidStateTransition,
                format!(
                    "job execution {job_id} is already {} and cannot change",
                    current.status
                ),
                current,
            ));
        }
        if !status.settable_by_device() {
            return Err(Rejection::with_state(
                ErrorCode::InvalidStateTransition,
                format!(
                    "a device cannot move a job execution from {} to {status}",
                    current.status
                ),
                current,
            ));
        }
        let mut execution = current.clone();
        let was_queued = execution.status == JobExecutionStatus::Queued;
        execution.transition(status, now_epoch_s);
        if let Some(details) = status_details {
            execution.status_details = details;
        }
        if !status.is_terminal() {
            execution.step_deadline = match step_timeout {
                Some(_) => step_deadline(step_timeout, None, now_epoch_s),
                None if was_queued => {
                    step_deadline(None, execution.default_step_timeout_minutes, now_epoch_s)
                }
                None => execution.step_deadline,
            };
        }
        let mut answer = Map::new();
        if include_state {
            answer.insert("executionState".into(), execution.state_json());
        }
        if include_document {
            answer.insert("jobDocument".into(), execution.job_document.clone());
        }
        let notifications = self
            .commit(execution, now_epoch_s)
            .map_err(internal_error)?;
        Ok((answer, notifications))
    }

    /// The execution a request names, checking `executionNumber` when one was sent.
    fn find_execution(
        &self,
        thing_name: &str,
        job_id: &str,
        execution_number: Option<u64>,
    ) -> Result<&StoredExecution, Rejection> {
        let not_found = || {
            Rejection::new(
                ErrorCode::ResourceNotFound,
                format!("job execution {job_id} does not exist for thing {thing_name}"),
            )
        };
        let execution = self.find(thing_name, job_id).ok_or_else(not_found)?;
        match execution_number {
            Some(number) if number != execution.execution_number => Err(not_found()),
            _ => Ok(execution),
        }
    }
}

/// `$aws/things/{thing}/jobs/REST` split into the thing name and the levels after `jobs`.
fn split_jobs_topic(topic: &str) -> Option<(&str, Vec<&str>)> {
    let rest = topic.strip_prefix("$aws/things/")?;
    let (thing_name, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("jobs/")?;
    Some((thing_name, rest.split('/').collect()))
}

/// Whether the levels after `jobs/` are one of the service's own publications.
fn is_service_output(rest: &[&str]) -> bool {
    matches!(rest, ["notify"] | ["notify-next"])
        || rest.len() >= 2 && matches!(rest.last(), Some(&"accepted") | Some(&"rejected"))
}

fn parse_request(rest: &[&str]) -> Option<JobsRequest> {
    match rest {
        ["get"] => Some(JobsRequest::List),
        ["start-next"] => Some(JobsRequest::StartNext),
        [job_id, "get"] if !job_id.is_empty() => Some(JobsRequest::Describe((*job_id).to_owned())),
        [job_id, "update"] if !job_id.is_empty() => Some(JobsRequest::Update((*job_id).to_owned())),
        _ => None,
    }
}

/// Parses a request body: UTF-8 JSON object (an empty payload counts as `{}`), with an optional
/// client token of at most 64 bytes.
fn parse_body(payload: &[u8]) -> Result<RequestBody, Rejection> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| Rejection::new(ErrorCode::InvalidJson, "the request is not UTF-8 encoded"))?;
    let fields = if text.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => {
                return Err(Rejection::new(
                    ErrorCode::InvalidJson,
                    "the request is not a JSON object",
                ))
            }
            Err(error) => {
                return Err(Rejection::new(
                    ErrorCode::InvalidJson,
                    format!("the request is not valid JSON: {error}"),
                ))
            }
        }
    };
    let client_token = match fields.get("clientToken") {
        None => None,
        Some(Value::String(token))
            if !token.is_empty() && token.len() <= MAX_CLIENT_TOKEN_BYTES =>
        {
            Some(token.clone())
        }
        Some(_) => {
            return Err(Rejection::new(
                ErrorCode::InvalidRequest,
                "clientToken must be a string of 1 to 64 bytes",
            ))
        }
    };
    Ok(RequestBody {
        fields,
        client_token,
    })
}

/// `statusDetails`: a map of string to string with AWS IoT's key and value rules.
fn parse_status_details(
    fields: &Map<String, Value>,
) -> Result<Option<BTreeMap<String, String>>, Rejection> {
    let Some(value) = fields.get("statusDetails") else {
        return Ok(None);
    };
    let invalid = |message: String| Rejection::new(ErrorCode::InvalidRequest, message);
    let Value::Object(map) = value else {
        return Err(invalid("statusDetails must be an object of strings".into()));
    };
    let mut details = BTreeMap::new();
    for (key, value) in map {
        let key_ok = (1..=MAX_STATUS_DETAILS_KEY_LEN).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'));
        if !key_ok {
            return Err(invalid(format!(
                "statusDetails key {key:?} must be 1 to 128 characters of a-z, A-Z, 0-9, ':', '_', '-'"
            )));
        }
        let Value::String(text) = value else {
            return Err(invalid(format!(
                "statusDetails value of {key:?} must be a string"
            )));
        };
        let length = text.chars().count();
        if !(1..=MAX_STATUS_DETAILS_VALUE_LEN).contains(&length)
            || text.chars().any(char::is_control)
        {
            return Err(invalid(format!(
                "statusDetails value of {key:?} must be 1 to 1024 characters without control characters"
            )));
        }
        details.insert(key.clone(), text.clone());
    }
    Ok(Some(details))
}

/// `stepTimeoutInMinutes`: 1..10080, or -1 to clear the timer (`Some(None)`).
fn parse_step_timeout(fields: &Map<String, Value>) -> Result<Option<Option<u32>>, Rejection> {
    let Some(value) = fields.get("stepTimeoutInMinutes") else {
        return Ok(None);
    };
    match value.as_i64() {
        Some(-1) => Ok(Some(None)),
        Some(minutes)
            if (i64::from(MIN_STEP_TIMEOUT_MINUTES)..=i64::from(MAX_STEP_TIMEOUT_MINUTES))
                .contains(&minutes) =>
        {
            Ok(Some(Some(
                u32::try_from(minutes).expect("checked to be within 1..=10080"),
            )))
        }
        _ => Err(Rejection::new(
            ErrorCode::InvalidRequest,
            "stepTimeoutInMinutes must be an integer from 1 to 10080, or -1 to clear the timer",
        )),
    }
}

/// When a step timer set now expires: the request's timeout when it sent one (`-1` clears),
/// else the job's default, else no timer.
fn step_deadline(
    requested: Option<Option<u32>>,
    job_default: Option<u32>,
    now_epoch_s: u64,
) -> Option<u64> {
    let minutes = match requested {
        Some(requested) => requested,
        None => job_default,
    }?;
    Some(now_epoch_s + u64::from(minutes) * 60)
}

fn parse_execution_number(fields: &Map<String, Value>) -> Result<Option<u64>, Rejection> {
    match fields.get("executionNumber") {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|number| *number >= 1)
            .map(Some)
            .ok_or_else(|| {
                Rejection::new(
                    ErrorCode::InvalidRequest,
                    "executionNumber must be a positive integer",
                )
            }),
    }
}

fn parse_flag(fields: &Map<String, Value>, name: &str, default: bool) -> Result<bool, Rejection> {
    match fields.get(name) {
        None => Ok(default),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(_) => Err(Rejection::new(
            ErrorCode::InvalidRequest,
            format!("{name} must be true or false"),
        )),
    }
}

/// Job IDs: 1 to 64 of `[a-zA-Z0-9_-]`.
pub fn is_valid_job_id(job_id: &str) -> bool {
    (1..=MAX_JOB_ID_LEN).contains(&job_id.len())
        && job_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Every execution of every thing.
fn all_executions(
    executions: &BTreeMap<String, BTreeMap<String, StoredExecution>>,
) -> Vec<&StoredExecution> {
    executions.values().flat_map(BTreeMap::values).collect()
}

/// Where an earlier version kept an execution: `STATE_DIR/{thing}/{jobId}.json`.
fn legacy_execution_path(root: &Path, thing_name: &str, job_id: &str) -> PathBuf {
    root.join(encode_file_name(thing_name))
        .join(format!("{}.json", encode_file_name(job_id)))
}

/// The rules every stored execution must meet, wherever it was read from.
fn check_record(record: &StoredExecution) -> Result<(), String> {
    if !is_valid_thing_name(&record.thing_name) {
        return Err(format!("invalid thing name {:?}", record.thing_name));
    }
    if !is_valid_job_id(&record.job_id) {
        return Err(format!("invalid job ID {:?}", record.job_id));
    }
    Ok(())
}

/// A failed save, as the device sees it: logged here with its cause, answered as InternalError.
fn internal_error(error: JobsError) -> Rejection {
    tracing::error!(error = %error_chain(&error), "job execution not saved");
    Rejection::new(
        ErrorCode::InternalError,
        "internal error; the request was not applied",
    )
}

fn rejection_message(
    topic: &str,
    rejection: &Rejection,
    client_token: Option<&str>,
    now_epoch_s: u64,
) -> Outgoing {
    let mut body = Map::new();
    body.insert("code".into(), json!(rejection.code.as_str()));
    body.insert("message".into(), json!(rejection.message));
    if let Some(token) = client_token {
        body.insert("clientToken".into(), json!(token));
    }
    body.insert("timestamp".into(), json!(now_epoch_s));
    if let Some(state) = &rejection.execution_state {
        body.insert("executionState".into(), state.clone());
    }
    outgoing(topic.to_owned(), Value::Object(body))
}

fn outgoing(topic: String, body: Value) -> Outgoing {
    Outgoing {
        topic,
        payload: serde_json::to_vec(&body).expect("a JSON value always serialises"),
    }
}
