//! The jobs task: follows the thing's pending job executions and runs one job at a time per
//! device, devices in parallel.
//!
//! # Protocol (AWS IoT Developer Guide: jobs-mqtt-api, jobs-comm-notifications)
//! `start-next` hands out one job per thing (it returns IN_PROGRESS executions first), so a desk
//! whose label printer is busy could never print an indicia on its envelope printer meanwhile.
//! DeviceHub therefore takes each job explicitly:
//! 1. **Discover**: `notify-next` (the head of the queue, with its document), `notify` (up to
//!    ten pending summaries) and, after every connection, `get` (the pending list) name the jobs.
//! 2. **Describe**: `{jobId}/get` with `includeJobDocument` fetches a named job's document and
//!    version (not needed when `notify-next` brought it). At most [`MAX_DESCRIBING`] are asked
//!    at once, so that a long queue does not spend the thing's request allowance in one burst.
//! 3. **Wait for the device**: the document says which device (or the default for its kind);
//!    the job waits in that device's lane. A job starts only when its device is free and no
//!    older job is still undescribed (its device is unknown and might be the same), so each
//!    device prints its jobs in the order they were queued.
//! 4. **Start**: `{jobId}/update` to IN_PROGRESS with the execution's `expectedVersion`; only
//!    its acceptance lets the job reach the printer, so a job canceled in the meantime is never
//!    printed. While the answer travels, a print's file is downloaded and rendered in memory
//!    (a [`Prefetch`]), so that the label is ready the moment the job may print; a refused
//!    start drops it. A job already IN_PROGRESS (DeviceHub stopped while it ran) needs no
//!    start.
//! 5. **Run and report**: the job runs on its own task (see [`super::execute`]); its terminal
//!    status is published as soon as it is known, then recorded in the journal.
//!
//! Jobs that need no device (refused documents, outcomes replayed from the journal) are
//! answered at once, from QUEUED or IN_PROGRESS alike. Requests whose answer does not come
//! within [`ANSWER_TIMEOUT`] are sent again, as are all unanswered ones after a reconnection;
//! a refusal for throttling is retried after [`THROTTLE_RETRY`].
//!
//! A job stays known to the task until the cloud has answered its terminal status and the
//! journal holds it, so that a pending list already in flight cannot bring it back as new.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    execute, lock, record, JobContext, JobDocument, JobFailure, JobOutcome, JobsError,
    JobsSettings, Phase, Plan, Prefetch,
};
use crate::agent::{Agent, LocalEvent};
use crate::cloud::events::{board, SharedHealth};
use crate::cloud::link::{InboundMessage, LinkHandle, LinkState, Qos};
use crate::devices::DeviceTable;
use crate::storage::{JobJournal, StartDecision};

/// The most `{jobId}/get` requests outstanding at once.
pub const MAX_DESCRIBING: usize = 8;
/// How long a request may go unanswered before it is sent again.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait before repeating a request the cloud refused as throttled.
pub const THROTTLE_RETRY: Duration = Duration::from_secs(1);
/// How long shutdown waits for the cloud to confirm the last statuses.
const FINAL_REPORT_WAIT: Duration = Duration::from_secs(5);
/// How often unanswered requests are checked.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The topics of one thing's jobs.
#[derive(Debug, Clone)]
pub(super) struct Topics {
    prefix: String,
}

impl Topics {
    pub(super) fn new(thing: &str) -> Topics {
        Topics {
            prefix: format!("$aws/things/{thing}/jobs"),
        }
    }

    fn list(&self) -> String {
        format!("{}/get", self.prefix)
    }

    fn describe(&self, job_id: &str) -> String {
        format!("{}/{job_id}/get", self.prefix)
    }

    fn update(&self, job_id: &str) -> String {
        format!("{}/{job_id}/update", self.prefix)
    }

    pub(super) fn filters(&self) -> Vec<String> {
        [
            "notify",
            "notify-next",
            "get/accepted",
            "get/rejected",
            "+/get/accepted",
            "+/get/rejected",
            "+/update/accepted",
            "+/update/rejected",
        ]
        .iter()
        .map(|tail| format!("{}/{tail}", self.prefix))
        .collect()
    }

    /// What a received topic is.
    pub(super) fn classify<'a>(&self, topic: &'a str) -> Option<Answer<'a>> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?;
        match rest {
            "notify" => return Some(Answer::Notify),
            "notify-next" => return Some(Answer::NotifyNext),
            "get/accepted" => return Some(Answer::ListAccepted),
            "get/rejected" => return Some(Answer::ListRejected),
            _ => {}
        }
        let (job_id, tail) = rest.split_once('/')?;
        match tail {
            "get/accepted" => Some(Answer::DescribeAccepted(job_id)),
            "get/rejected" => Some(Answer::DescribeRejected(job_id)),
            "update/accepted" => Some(Answer::UpdateAccepted(job_id)),
            "update/rejected" => Some(Answer::UpdateRejected(job_id)),
            _ => None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer<'a> {
    Notify,
    NotifyNext,
    ListAccepted,
    ListRejected,
    DescribeAccepted(&'a str),
    DescribeRejected(&'a str),
    UpdateAccepted(&'a str),
    UpdateRejected(&'a str),
}

/// A JobExecutionSummary or JobExecution, as far as DeviceHub reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Execution {
    job_id: String,
    #[serde(default)]
    job_document: Option<Value>,
    /// Absent in summaries: their list says it.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    version_number: Option<u64>,
    #[serde(default)]
    queued_at: Option<i64>,
}

/// `notify-next` and `{jobId}/get/accepted`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecutionAnswer {
    #[serde(default)]
    execution: Option<Execution>,
    #[serde(default)]
    client_token: Option<String>,
}

/// `notify`.
#[derive(Debug, Deserialize)]
struct ListNotification {
    #[serde(default)]
    jobs: BTreeMap<String, Vec<Execution>>,
}

/// `get/accepted`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingList {
    #[serde(default)]
    in_progress_jobs: Vec<Execution>,
    #[serde(default)]
    queued_jobs: Vec<Execution>,
}

/// `{jobId}/update/accepted` and every refusal.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reply {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    client_token: Option<String>,
    #[serde(default)]
    execution_state: Option<ExecutionState>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecutionState {
    #[serde(default)]
    status: Option<String>,
}

/// An outstanding request: its client token and when it was sent (`None` while it waits to be
/// sent, after a throttling refusal or while offline).
#[derive(Debug, Clone)]
struct Request {
    token: String,
    sent: Option<Instant>,
}

impl Request {
    fn unsent() -> Request {
        Request {
            token: String::new(),
            sent: None,
        }
    }
}

/// Where a known job is.
#[derive(Debug)]
enum Stage {
    /// Named by a list; its document has not been asked for yet.
    Discovered,
    /// `{jobId}/get` asked.
    Describing(Request),
    /// Its document is known; it waits for its device.
    Waiting {
        plan: Plan,
        in_progress: bool,
        version: Option<u64>,
    },
    /// `update` to IN_PROGRESS asked.
    Starting {
        plan: Plan,
        version: Option<u64>,
        request: Request,
        /// A print's file being downloaded and rendered meanwhile.
        prefetch: Option<Prefetch>,
    },
    /// Running on its task.
    Running { lane: Option<String> },
    /// Its terminal status was published; waiting for the cloud's answer and the journal.
    Reporting {
        outcome: JobOutcome,
        request: Request,
        answered: bool,
        recorded: bool,
    },
}

/// A known job.
#[derive(Debug)]
struct Tracked {
    /// Queue order: when the cloud queued it (seconds), then the order DeviceHub learnt of it.
    order: (i64, u64),
    stage: Stage,
}

/// A job's task reports its outcome on this channel before it records it in the journal.
type OutcomeSender = mpsc::UnboundedSender<(String, JobOutcome)>;

/// The running jobs, for shutdown.
#[derive(Debug)]
struct RunningJob {
    job_id: String,
    phase: Arc<Mutex<Phase>>,
    abort: tokio::task::AbortHandle,
}

/// The jobs task; see the module docs.
#[derive(Debug)]
pub struct JobsTask {
    link: LinkHandle,
    topics: Topics,
    context: Arc<JobContext>,
    shutdown_grace: Duration,
    jobs: HashMap<String, Tracked>,
    /// Devices with a job starting or running.
    busy: HashSet<String>,
    next_seq: u64,
    /// The outstanding `get` (pending list) request.
    list_request: Option<Request>,
    /// When throttled requests are sent again.
    retry_at: Option<Instant>,
    running: Vec<RunningJob>,
    tasks: JoinSet<()>,
    outcomes_tx: OutcomeSender,
    outcomes: mpsc::UnboundedReceiver<(String, JobOutcome)>,
    connected: bool,
    /// Where the last job and job events are left for the heartbeat and the events task.
    health: Option<SharedHealth>,
    /// Local tools following jobs live (status page, WebSocket, RPC publish socket).
    agent: Option<Arc<Agent>>,
}

impl JobsTask {
    /// Prepares the task (the download client, the topics); [`JobsTask::run`] starts it.
    pub fn new(
        settings: JobsSettings,
        link: LinkHandle,
        devices: Arc<DeviceTable>,
        journal: JobJournal,
    ) -> Result<JobsTask, JobsError> {
        let http = super::download_client(&settings.download)?;
        let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
        Ok(JobsTask {
            link,
            topics: Topics::new(&settings.thing_name),
            context: Arc::new(JobContext {
                devices,
                journal: Arc::new(Mutex::new(journal)),
                http,
                download: settings.download,
                preferred_devices: settings.preferred_devices,
                settings: settings.settings,
            }),
            shutdown_grace: settings.shutdown_grace,
            jobs: HashMap::new(),
            busy: HashSet::new(),
            next_seq: 0,
            list_request: None,
            retry_at: None,
            running: Vec::new(),
            tasks: JoinSet::new(),
            outcomes_tx,
            outcomes,
            connected: false,
            health: None,
            agent: None,
        })
    }

    /// Also announces every job's end to local subscribers (`LocalEvent::Job`).
    pub fn announce_to(mut self, agent: Arc<Agent>) -> JobsTask {
        self.agent = Some(agent);
        self
    }

    /// Leaves every job's end on `health`: the heartbeat's last job and a job event.
    pub fn report_to(mut self, health: SharedHealth) -> JobsTask {
        self.health = Some(health);
        self
    }

    /// Runs until `shutdown`: subscribes, follows the pending jobs, runs them. On shutdown no
    /// new job is started; a job that is printing gets `shutdown_grace` to finish, then is
    /// reported failed; a job that has not reached its printer is dropped and resumed at the
    /// next start.
    pub async fn run(
        mut self,
        mut incoming: mpsc::Receiver<InboundMessage>,
        shutdown: CancellationToken,
    ) -> Result<(), JobsError> {
        self.subscribe().await?;
        let mut state = self.link.state();
        self.connected = matches!(*state.borrow_and_update(), LinkState::Connected { .. });
        if self.connected {
            // Connected between the first subscribe and now: see the comment in the loop.
            self.subscribe().await?;
            self.on_connected().await;
        }
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some((job_id, outcome)) = self.outcomes.recv() => {
                    self.on_outcome(job_id, outcome).await;
                    self.pump().await;
                }
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.on_task_end(joined);
                    self.pump().await;
                }
                changed = state.changed() => {
                    if changed.is_err() {
                        // The link task ended: nothing more will arrive.
                        break;
                    }
                    let now = matches!(*state.borrow_and_update(), LinkState::Connected { .. });
                    let reconnected = now && !self.connected;
                    self.connected = now;
                    if reconnected {
                        // The link re-sends registered filters only when the broker lost the
                        // session; filters registered while disconnected into a session the
                        // broker kept (one left by registration) would never be sent. A
                        // repeated SUBSCRIBE is harmless, so send them on every connection.
                        self.subscribe().await?;
                        self.on_connected().await;
                    }
                }
                message = incoming.recv() => {
                    let Some(message) = message else { break };
                    self.handle(&message).await;
                    self.pump().await;
                }
                _ = sweep.tick() => {
                    if self.connected {
                        self.resend_stale().await;
                        self.pump().await;
                    }
                }
            }
        }
        self.finish(&mut incoming).await;
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

    /// After every connection: ask for the pending list (a notification in flight while
    /// DeviceHub was away is lost: asking is the only reliable way to learn what is pending)
    /// and repeat every request whose answer may have been lost.
    async fn on_connected(&mut self) {
        self.list().await;
        let ids: Vec<String> = self.jobs.keys().cloned().collect();
        for job_id in ids {
            self.resend(&job_id, true).await;
        }
        self.pump().await;
    }

    /// Publishes `get` (the pending list).
    async fn list(&mut self) {
        let token = client_token();
        let payload = serde_json::json!({ "clientToken": token }).to_string();
        match self
            .link
            .publish(&self.topics.list(), payload, Qos::AtLeastOnce)
            .await
        {
            Ok(()) => {
                self.list_request = Some(Request {
                    token,
                    sent: Some(Instant::now()),
                })
            }
            Err(e) => tracing::warn!("cannot ask the cloud for the pending jobs: {e}"),
        }
    }

    /// Sends `request` for `job_id` again when it is unsent, or stale, or `always`.
    async fn resend(&mut self, job_id: &str, always: bool) {
        let stale = |request: &Request| {
            always
                || match request.sent {
                    None => true,
                    Some(at) => at.elapsed() >= ANSWER_TIMEOUT,
                }
        };
        let Some(tracked) = self.jobs.get(job_id) else {
            return;
        };
        match &tracked.stage {
            Stage::Describing(request) if stale(request) => self.describe(job_id).await,
            Stage::Starting { request, .. } if stale(request) => self.start(job_id).await,
            Stage::Reporting {
                request,
                answered: false,
                outcome,
                ..
            } if stale(request) => {
                let outcome = outcome.clone();
                self.report(job_id, &outcome).await;
            }
            _ => {}
        }
    }

    /// Repeats stale requests; after a throttling refusal, those waiting for the retry time.
    async fn resend_stale(&mut self) {
        let retry_due = self.retry_at.is_some_and(|at| Instant::now() >= at);
        if retry_due {
            self.retry_at = None;
        }
        if self.retry_at.is_some() {
            return;
        }
        if self
            .list_request
            .as_ref()
            .is_some_and(|r| r.sent.is_none_or(|at| at.elapsed() >= ANSWER_TIMEOUT))
        {
            self.list().await;
        }
        let ids: Vec<String> = self.jobs.keys().cloned().collect();
        for job_id in ids {
            self.resend(&job_id, false).await;
        }
    }

    /// Learns of a job from a list or notification.
    fn discover(&mut self, execution: &Execution) {
        if self.jobs.contains_key(&execution.job_id) {
            return;
        }
        if !crate::storage::journal::is_valid_job_id(&execution.job_id) {
            tracing::warn!("ignoring a job whose ID is not a valid AWS job ID");
            return;
        }
        let order = (execution.queued_at.unwrap_or(0), self.next_seq);
        self.next_seq += 1;
        tracing::debug!(job = %execution.job_id, "job discovered");
        self.jobs.insert(
            execution.job_id.clone(),
            Tracked {
                order,
                stage: Stage::Discovered,
            },
        );
    }

    /// Publishes `{jobId}/get` for a discovered job.
    async fn describe(&mut self, job_id: &str) {
        let token = client_token();
        let payload =
            serde_json::json!({ "clientToken": token, "includeJobDocument": true }).to_string();
        let sent = self
            .link
            .publish(&self.topics.describe(job_id), payload, Qos::AtLeastOnce)
            .await;
        if let Err(e) = &sent {
            tracing::warn!(job = %job_id, "cannot ask for the job's document: {e}");
        }
        if let Some(tracked) = self.jobs.get_mut(job_id) {
            tracked.stage = Stage::Describing(Request {
                token,
                sent: sent.is_ok().then(Instant::now),
            });
        }
    }

    /// A job's execution with its document is known: plan it.
    fn describe_done(&mut self, execution: Execution) {
        let in_progress = match execution.status.as_deref() {
            Some("QUEUED") => false,
            Some("IN_PROGRESS") => true,
            other => {
                // Terminal (canceled, timed out, answered by another run): nothing to do.
                tracing::info!(job = %execution.job_id, status = other.unwrap_or("?"), "the job is no longer pending");
                self.jobs.remove(&execution.job_id);
                return;
            }
        };
        let plan = self.plan(&execution.job_id, execution.job_document.as_ref());
        if let Some(tracked) = self.jobs.get_mut(&execution.job_id) {
            tracked.stage = Stage::Waiting {
                plan,
                in_progress,
                version: execution.version_number,
            };
        }
    }

    /// Decides what a job needs: the journal first (a job it knows as finished or interrupted
    /// is answered from it and needs no device), then the document.
    fn plan(&self, job_id: &str, document: Option<&Value>) -> Plan {
        let decision = lock(&self.context.journal).may_start(job_id);
        match decision {
            StartDecision::Finished(_) | StartDecision::Interrupted { .. } => return Plan::Journal,
            StartDecision::New | StartDecision::NotStarted => {}
        }
        let document = match document.map(JobDocument::parse) {
            None => {
                return Plan::Refuse(JobFailure::InvalidDocument(
                    "the execution carries no job document".into(),
                ))
            }
            Some(Err(failure)) => return Plan::Refuse(failure),
            Some(Ok(document)) => document,
        };
        match &document {
            JobDocument::Print(print) => match self.context.choose_printer(print) {
                Ok(device) => Plan::Print {
                    document: print.clone(),
                    device,
                },
                Err(failure) => Plan::Refuse(failure),
            },
            JobDocument::ScaleRead(scale) => match super::choose_scale(&self.context, scale) {
                Ok(device) => Plan::ScaleRead {
                    document: scale.clone(),
                    device,
                },
                Err(failure) => Plan::Refuse(failure),
            },
        }
    }

    /// Starts every job whose turn has come; see the module docs for the order.
    async fn pump(&mut self) {
        if !self.connected {
            return;
        }
        let mut order: Vec<((i64, u64), String)> = self
            .jobs
            .iter()
            .map(|(id, t)| (t.order, id.clone()))
            .collect();
        order.sort();
        let mut describing = self
            .jobs
            .values()
            .filter(|t| matches!(t.stage, Stage::Describing(_)))
            .count();
        let mut undescribed_before = false;
        for (_, job_id) in order {
            let Some(tracked) = self.jobs.get(&job_id) else {
                continue;
            };
            match &tracked.stage {
                Stage::Discovered => {
                    undescribed_before = true;
                    if describing < MAX_DESCRIBING && self.retry_at.is_none() {
                        describing += 1;
                        self.describe(&job_id).await;
                    }
                }
                Stage::Describing(_) => undescribed_before = true,
                Stage::Waiting { plan, .. } => match plan.lane() {
                    None => self.launch(&job_id),
                    Some(device) => {
                        if undescribed_before || self.busy.contains(device) {
                            continue;
                        }
                        self.busy.insert(device.to_string());
                        let Some(Stage::Waiting { in_progress, .. }) =
                            self.jobs.get(&job_id).map(|t| &t.stage)
                        else {
                            continue;
                        };
                        if *in_progress {
                            self.launch(&job_id);
                        } else {
                            self.start(&job_id).await;
                        }
                    }
                },
                Stage::Starting { .. } | Stage::Running { .. } | Stage::Reporting { .. } => {}
            }
        }
    }

    /// Publishes `{jobId}/update` to IN_PROGRESS for a waiting job, or again for a starting one.
    async fn start(&mut self, job_id: &str) {
        let Some(tracked) = self.jobs.get_mut(job_id) else {
            return;
        };
        let stage = std::mem::replace(&mut tracked.stage, Stage::Discovered);
        let (plan, version, prefetch) = match stage {
            Stage::Waiting { plan, version, .. } => {
                // The answer takes a round trip to the cloud: the print file is fetched and
                // rendered meanwhile, so that the label is ready when the job may print.
                let prefetch = match &plan {
                    Plan::Print { document, device } => {
                        Some(Prefetch::begin(&self.context, job_id, document, device))
                    }
                    _ => None,
                };
                (plan, version, prefetch)
            }
            Stage::Starting {
                plan,
                version,
                prefetch,
                ..
            } => (plan, version, prefetch),
            other => {
                tracked.stage = other;
                return;
            }
        };
        let token = client_token();
        let mut body = serde_json::json!({ "status": "IN_PROGRESS", "clientToken": token });
        if let Some(version) = version {
            body["expectedVersion"] = version.into();
        }
        let sent = self
            .link
            .publish(
                &self.topics.update(job_id),
                body.to_string(),
                Qos::AtLeastOnce,
            )
            .await;
        if let Err(e) = &sent {
            tracing::warn!(job = %job_id, "cannot start the job: {e}");
        }
        if let Some(tracked) = self.jobs.get_mut(job_id) {
            tracked.stage = Stage::Starting {
                plan,
                version,
                request: Request {
                    token,
                    sent: sent.is_ok().then(Instant::now),
                },
                prefetch,
            };
        }
    }

    /// Runs a waiting or starting job on its own task.
    fn launch(&mut self, job_id: &str) {
        let Some(tracked) = self.jobs.get_mut(job_id) else {
            return;
        };
        let stage = std::mem::replace(&mut tracked.stage, Stage::Discovered);
        let (plan, prefetch) = match stage {
            Stage::Waiting { plan, .. } => (plan, None),
            Stage::Starting { plan, prefetch, .. } => (plan, prefetch),
            other => {
                tracked.stage = other;
                return;
            }
        };
        let lane = plan.lane().map(str::to_string);
        tracked.stage = Stage::Running { lane: lane.clone() };
        let phase = Arc::new(Mutex::new(Phase::Preparing));
        let context = self.context.clone();
        let outcomes = self.outcomes_tx.clone();
        let id = job_id.to_string();
        let task_phase = phase.clone();
        let abort = self.tasks.spawn(async move {
            let outcome = execute(&context, &id, plan, &task_phase, prefetch).await;
            let replayed = outcome.details.contains_key("replayed");
            let state = outcome.journal_state();
            // The status goes to the cloud first: the journal write (an fsync) is not on the
            // way to the confirmation. A crash between the two leaves `Printing` in the
            // journal, which is reported as "interrupted, may have printed": never a reprint.
            let _ = outcomes.send((id.clone(), outcome));
            if !replayed {
                if let Err(e) = record(&context.journal, &id, state).await {
                    tracing::error!(job = %id, "cannot record the job's outcome: {e}");
                }
            }
        });
        tracing::info!(job = %job_id, device = lane.as_deref().unwrap_or("-"), "job started");
        self.running.push(RunningJob {
            job_id: job_id.to_string(),
            phase,
            abort,
        });
    }

    /// A job's task has its outcome: free its device and publish the status.
    async fn on_outcome(&mut self, job_id: String, outcome: JobOutcome) {
        if let Some(Tracked {
            stage: Stage::Running { lane: Some(device) },
            ..
        }) = self.jobs.get(&job_id)
        {
            self.busy.remove(device);
        }
        self.report(&job_id, &outcome).await;
        if let Some(health) = &self.health {
            // Status details are DeviceHub-written (device, counts, durations, reasons): no
            // personal data.
            let ended = serde_json::json!({
                "jobId": job_id,
                "status": outcome.status,
                "at": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                "statusDetails": outcome.details,
            });
            if let Some(agent) = &self.agent {
                agent.publish_local(LocalEvent::Job(ended.clone()));
            }
            board(health).job_ended(ended);
        }
    }

    /// A job's task ended: its outcome is in the journal (or the task failed).
    fn on_task_end(&mut self, joined: Result<(), tokio::task::JoinError>) {
        let ended: Vec<String> = self
            .running
            .iter()
            .filter(|r| r.abort.is_finished())
            .map(|r| r.job_id.clone())
            .collect();
        self.running.retain(|r| !r.abort.is_finished());
        if let Err(e) = joined {
            if e.is_panic() {
                // A panic in the job's own code (not in a plugin: those are caught at the
                // boundary). The journal may say Printing; the next start reports it as
                // interrupted.
                tracing::error!("a job task failed: {e}");
            }
        }
        for job_id in ended {
            let Some(tracked) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            match &mut tracked.stage {
                Stage::Reporting {
                    recorded, answered, ..
                } => {
                    *recorded = true;
                    if *answered {
                        self.jobs.remove(&job_id);
                    }
                }
                Stage::Running { lane } => {
                    // Ended without an outcome: it panicked. Forget it so that the pending
                    // list brings it back and the journal decides.
                    if let Some(device) = lane.take() {
                        self.busy.remove(&device);
                    }
                    self.jobs.remove(&job_id);
                }
                _ => {}
            }
        }
    }

    /// Publishes the job's terminal status.
    async fn report(&mut self, job_id: &str, outcome: &JobOutcome) {
        let token = client_token();
        let payload = serde_json::json!({
            "status": outcome.status,
            "statusDetails": outcome.details,
            "clientToken": token,
        })
        .to_string();
        tracing::info!(job = %job_id, status = ?outcome.status, reason = outcome.details.get("reason").map(String::as_str).unwrap_or(""), "job finished");
        let sent = self
            .link
            .publish(&self.topics.update(job_id), payload, Qos::AtLeastOnce)
            .await;
        if let Err(e) = &sent {
            // Sent again after the reconnection; the journal holds the outcome for a restart.
            tracing::warn!(job = %job_id, "cannot report the job's status: {e}");
        }
        let request = Request {
            token,
            sent: sent.is_ok().then(Instant::now),
        };
        let Some(tracked) = self.jobs.get_mut(job_id) else {
            return;
        };
        match &mut tracked.stage {
            Stage::Reporting {
                request: current, ..
            } => *current = request,
            stage => {
                // A job answered from the journal has nothing to record; a running one
                // records on its task.
                let recorded = !matches!(stage, Stage::Running { .. });
                *stage = Stage::Reporting {
                    outcome: outcome.clone(),
                    request,
                    answered: false,
                    recorded,
                };
            }
        }
    }

    /// Handles one message from the cloud.
    async fn handle(&mut self, message: &InboundMessage) {
        let Some(answer) = self.topics.classify(&message.topic) else {
            return;
        };
        match answer {
            Answer::Notify => {
                let Some(list) = parse_or_log::<ListNotification>(&message.payload, "notify")
                else {
                    return;
                };
                for execution in list.jobs.values().flatten() {
                    self.discover(execution);
                }
            }
            Answer::NotifyNext => {
                let Some(next) = parse_or_log::<ExecutionAnswer>(&message.payload, "notify-next")
                else {
                    return;
                };
                let Some(execution) = next.execution else {
                    return;
                };
                let known = self.jobs.contains_key(&execution.job_id);
                self.discover(&execution);
                // It carries the document: no need to describe the job.
                let undescribed = matches!(
                    self.jobs.get(&execution.job_id).map(|t| &t.stage),
                    Some(Stage::Discovered | Stage::Describing(_))
                );
                if (!known || undescribed)
                    && execution.job_document.is_some()
                    && execution.status.is_some()
                {
                    self.describe_done(execution);
                }
            }
            Answer::ListAccepted => {
                let Some(list) = parse_or_log::<PendingList>(&message.payload, "pending list")
                else {
                    return;
                };
                self.list_request = None;
                for execution in list.in_progress_jobs.iter().chain(&list.queued_jobs) {
                    self.discover(execution);
                }
            }
            Answer::ListRejected => {
                let reply = parse_or_log::<Reply>(&message.payload, "pending list refusal");
                self.refused("the pending list", reply.as_ref());
                if let Some(request) = &mut self.list_request {
                    request.sent = None;
                }
            }
            Answer::DescribeAccepted(job_id) => {
                let Some(answer) =
                    parse_or_log::<ExecutionAnswer>(&message.payload, "job description")
                else {
                    return;
                };
                if !self.answers(job_id, answer.client_token.as_deref()) {
                    return;
                }
                match answer.execution {
                    Some(execution) => self.describe_done(execution),
                    None => {
                        self.jobs.remove(job_id);
                    }
                }
            }
            Answer::DescribeRejected(job_id) => {
                let reply = parse_or_log::<Reply>(&message.payload, "job description refusal");
                if !self.answers(
                    job_id,
                    reply.as_ref().and_then(|r| r.client_token.as_deref()),
                ) {
                    return;
                }
                if self.refused(job_id, reply.as_ref()) {
                    if let Some(Tracked {
                        stage: Stage::Describing(request),
                        ..
                    }) = self.jobs.get_mut(job_id)
                    {
                        request.sent = None;
                    }
                } else {
                    self.jobs.remove(job_id);
                }
            }
            Answer::UpdateAccepted(job_id) => {
                let reply = parse_or_log::<Reply>(&message.payload, "update answer");
                if !self.answers(
                    job_id,
                    reply.as_ref().and_then(|r| r.client_token.as_deref()),
                ) {
                    return;
                }
                self.update_answered(job_id, None);
            }
            Answer::UpdateRejected(job_id) => {
                let reply = parse_or_log::<Reply>(&message.payload, "update refusal");
                if !self.answers(
                    job_id,
                    reply.as_ref().and_then(|r| r.client_token.as_deref()),
                ) {
                    return;
                }
                self.update_answered(job_id, Some(reply));
            }
        }
    }

    /// Whether an answer with `token` is the answer to the job's outstanding request.
    fn answers(&self, job_id: &str, token: Option<&str>) -> bool {
        let Some(tracked) = self.jobs.get(job_id) else {
            return false;
        };
        let expected = match &tracked.stage {
            Stage::Describing(request)
            | Stage::Starting { request, .. }
            | Stage::Reporting { request, .. } => request.token.as_str(),
            _ => return false,
        };
        token == Some(expected)
    }

    /// The cloud answered a start or a terminal status (`refusal` is `Some` for a refusal).
    fn update_answered(&mut self, job_id: &str, refusal: Option<Option<Reply>>) {
        let code = refusal
            .as_ref()
            .and_then(|reply| reply.as_ref())
            .and_then(|r| r.code.clone());
        let message = refusal
            .as_ref()
            .and_then(|reply| reply.as_ref())
            .and_then(|r| r.message.clone())
            .unwrap_or_else(|| "no message".into());
        let throttled = code.as_deref() == Some("RequestThrottled");
        let Some(tracked) = self.jobs.get_mut(job_id) else {
            return;
        };
        match &mut tracked.stage {
            Stage::Starting { request, .. } => {
                if refusal.is_none() {
                    self.launch(job_id);
                    return;
                }
                if throttled {
                    request.sent = None;
                    self.retry_at = Some(Instant::now() + THROTTLE_RETRY);
                    return;
                }
                let status = refusal
                    .as_ref()
                    .and_then(|reply| reply.as_ref())
                    .and_then(|r| r.execution_state.as_ref())
                    .and_then(|s| s.status.clone());
                tracing::info!(
                    job = %job_id,
                    code = code.as_deref().unwrap_or("?"),
                    status = status.as_deref().unwrap_or("?"),
                    "the cloud refused to start the job: {message}"
                );
                if let Some(Stage::Starting { plan, .. }) =
                    self.jobs.remove(job_id).map(|t| t.stage)
                {
                    if let Some(device) = plan.lane() {
                        self.busy.remove(device);
                    }
                }
                // A version mismatch means the execution changed (it may have been started
                // before a restart): the pending list brings it back, described afresh,
                // unless it has ended.
                if code.as_deref() == Some("VersionMismatch") {
                    self.list_request.get_or_insert_with(Request::unsent);
                }
            }
            Stage::Reporting {
                request,
                answered,
                recorded,
                ..
            } => {
                if refusal.is_some() {
                    if throttled {
                        request.sent = None;
                        self.retry_at = Some(Instant::now() + THROTTLE_RETRY);
                        return;
                    }
                    tracing::warn!(
                        job = %job_id,
                        code = code.as_deref().unwrap_or("?"),
                        "the cloud refused the job's status: {message}"
                    );
                } else {
                    tracing::debug!(job = %job_id, "the cloud took the job's status");
                }
                *answered = true;
                if *recorded {
                    self.jobs.remove(job_id);
                }
            }
            _ => {}
        }
    }

    /// Logs a refusal; returns whether it was throttling (the request is to be repeated).
    fn refused(&mut self, what: &str, reply: Option<&Reply>) -> bool {
        let code = reply.and_then(|r| r.code.as_deref()).unwrap_or("?");
        let message = reply
            .and_then(|r| r.message.as_deref())
            .unwrap_or("no message");
        if code == "RequestThrottled" {
            tracing::debug!("the cloud throttled a request for {what}; asking again shortly");
            self.retry_at = Some(Instant::now() + THROTTLE_RETRY);
            true
        } else {
            tracing::warn!(code, "the cloud refused a request for {what}: {message}");
            false
        }
    }

    /// Shutdown: see [`JobsTask::run`].
    async fn finish(&mut self, incoming: &mut mpsc::Receiver<InboundMessage>) {
        // Jobs that have not reached their printer stop here and resume at the next start.
        for job in &self.running {
            if *lock(&job.phase) == Phase::Preparing {
                job.abort.abort();
            }
        }
        let printing: Vec<(String, String)> = self
            .running
            .iter()
            .filter_map(|job| match &*lock(&job.phase) {
                Phase::Printing { device } => Some((job.job_id.clone(), device.clone())),
                Phase::Preparing => None,
            })
            .collect();
        for (job_id, device) in &printing {
            tracing::info!(job = %job_id, device = %device, "waiting for the print to finish before stopping");
        }
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        while !self.tasks.is_empty() {
            tokio::select! {
                Some((job_id, outcome)) = self.outcomes.recv() => {
                    self.on_outcome(job_id, outcome).await;
                }
                Some(joined) = self.tasks.join_next() => self.on_task_end(joined),
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        while let Ok((job_id, outcome)) = self.outcomes.try_recv() {
            self.on_outcome(job_id, outcome).await;
        }
        // Prints still going after the grace: reported failed for a person to check.
        for job in std::mem::take(&mut self.running) {
            if job.abort.is_finished() {
                continue;
            }
            job.abort.abort();
            let Some((_, device)) = printing.iter().find(|(id, _)| *id == job.job_id) else {
                continue;
            };
            let outcome = JobOutcome::failure(&JobFailure::StoppedWhilePrinting {
                device: device.clone(),
            });
            if let Err(e) =
                record(&self.context.journal, &job.job_id, outcome.journal_state()).await
            {
                tracing::error!(job = %job.job_id, "cannot record the job's outcome: {e}");
            }
            if let Some(tracked) = self.jobs.get_mut(&job.job_id) {
                tracked.stage = Stage::Discovered;
            }
            self.report(&job.job_id, &outcome).await;
            if let Some(Tracked {
                stage: Stage::Reporting { recorded, .. },
                ..
            }) = self.jobs.get_mut(&job.job_id)
            {
                *recorded = true;
            }
        }
        // Aborted tasks and journal writes still going.
        while let Some(joined) = self.tasks.join_next().await {
            self.on_task_end(joined);
        }
        if !self.connected {
            return;
        }
        // The link is closed after this task ends: wait (bounded) until the cloud has the
        // statuses sent, so that they are not lost with the connection.
        let waiting = |jobs: &HashMap<String, Tracked>| {
            jobs.values().any(|t| {
                matches!(
                    t.stage,
                    Stage::Reporting {
                        answered: false,
                        request: Request { sent: Some(_), .. },
                        ..
                    }
                )
            })
        };
        let answered = tokio::time::timeout(FINAL_REPORT_WAIT, async {
            while waiting(&self.jobs) {
                let Some(message) = incoming.recv().await else {
                    return false;
                };
                if let Some(Answer::UpdateAccepted(_) | Answer::UpdateRejected(_)) =
                    self.topics.classify(&message.topic)
                {
                    self.handle(&message).await;
                }
            }
            true
        })
        .await;
        if !matches!(answered, Ok(true)) {
            tracing::warn!("the cloud did not confirm every job status before stopping; the next start reports them again");
        }
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

fn client_token() -> String {
    super::client_token()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_classified() {
        let topics = Topics::new("desk-1");
        assert_eq!(
            topics.classify("$aws/things/desk-1/jobs/notify-next"),
            Some(Answer::NotifyNext)
        );
        assert_eq!(
            topics.classify("$aws/things/desk-1/jobs/notify"),
            Some(Answer::Notify)
        );
        assert_eq!(
            topics.classify("$aws/things/desk-1/jobs/get/accepted"),
            Some(Answer::ListAccepted)
        );
        assert_eq!(
            topics.classify("$aws/things/desk-1/jobs/print-1/get/accepted"),
            Some(Answer::DescribeAccepted("print-1"))
        );
        assert_eq!(
            topics.classify("$aws/things/desk-1/jobs/print-1/update/rejected"),
            Some(Answer::UpdateRejected("print-1"))
        );
        assert_eq!(topics.classify("$aws/things/desk-2/jobs/notify-next"), None);
        assert_eq!(topics.classify("$aws/things/desk-1/jobs/start-next"), None);
        assert_eq!(topics.filters().len(), 8);
    }
}
