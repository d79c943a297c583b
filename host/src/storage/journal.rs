//! The job journal (`journal.json`): what DeviceHub last did with each cloud job, written
//! before each step so that a crash or power cut can never make a label print twice.
//!
//! The order is: record [`JobState::Printing`] (durably), then send the label to the printer,
//! then record the outcome. After a restart, a job found in `Printing` was interrupted mid-print:
//! the label may or may not have come out, so [`JobJournal::may_start`] answers
//! [`StartDecision::Interrupted`] and the job is reported to the cloud as failed for a person to
//! check, never printed again automatically.
//!
//! **No personal data goes in the journal.** It holds job IDs (opaque identifiers the cloud
//! assigned), states, device IDs from the config and short, DeviceHub-written summaries such as
//! "printed 2 labels" or "printer out of paper". Never job documents, addresses, print files
//! or their contents. Job IDs are checked against AWS's job ID alphabet and summaries are capped
//! at [`MAX_NOTE_LEN`] bytes, so that nothing larger can slip in by mistake.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::atomic::Visibility;
use super::state_file::{Loaded, StateFile};
use super::StorageError;

/// Format name and version written into `journal.json`.
const FORMAT: &str = "devicehub-journal";
const VERSION: u32 = 1;

/// The longest summary, reason or device ID kept, in bytes.
pub const MAX_NOTE_LEN: usize = 200;

/// How many finished jobs are kept by default; older ones are pruned.
pub const DEFAULT_MAX_FINISHED: usize = 500;

/// What DeviceHub last did with a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum JobState {
    /// The job arrived and was accepted; nothing has been sent to a device yet.
    Received,
    /// Bytes are (or may be) on their way to `device`. Recorded before the first byte is sent.
    Printing { device: String },
    /// The job finished; `summary` is a short DeviceHub-written note ("printed 2 labels").
    Succeeded { summary: String },
    /// The job failed; `reason` is a short DeviceHub-written note ("printer out of paper").
    Failed { reason: String },
    /// The cloud canceled the job, or it was rejected before anything was printed.
    Canceled,
}

impl JobState {
    /// Whether nothing more will happen to the job.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded { .. } | JobState::Failed { .. } | JobState::Canceled
        )
    }

    fn name(&self) -> &'static str {
        match self {
            JobState::Received => "received",
            JobState::Printing { .. } => "printing",
            JobState::Succeeded { .. } => "succeeded",
            JobState::Failed { .. } => "failed",
            JobState::Canceled => "canceled",
        }
    }

    /// Caps free-text fields (see the module documentation).
    fn capped(self) -> JobState {
        match self {
            JobState::Printing { device } => JobState::Printing {
                device: cap(device),
            },
            JobState::Succeeded { summary } => JobState::Succeeded {
                summary: cap(summary),
            },
            JobState::Failed { reason } => JobState::Failed {
                reason: cap(reason),
            },
            other => other,
        }
    }
}

fn cap(mut text: String) -> String {
    if text.len() > MAX_NOTE_LEN {
        let mut end = MAX_NOTE_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Whether a job may be started, decided from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartDecision {
    /// Never seen: go ahead (record [`JobState::Printing`] before the first byte).
    New,
    /// Received but nothing sent to a device yet (DeviceHub stopped in between): go ahead.
    NotStarted,
    /// DeviceHub stopped while printing on `device`: the label may have come out. Do not print
    /// again; report the job as failed so that a person checks the printer.
    Interrupted { device: String },
    /// Already finished: do not run it again; report the recorded outcome if the cloud asks.
    Finished(JobState),
}

impl StartDecision {
    /// Whether the job may be sent to a device now.
    pub fn may_print(&self) -> bool {
        matches!(self, StartDecision::New | StartDecision::NotStarted)
    }
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JournalEntry {
    pub state: JobState,
    /// When the state was recorded (epoch seconds), for the operator reading the file.
    pub updated_at: u64,
    /// Order of the last change; pruning drops the finished entries with the smallest.
    pub sequence: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JournalBody {
    next_sequence: u64,
    jobs: BTreeMap<String, JournalEntry>,
}

/// What went wrong recording a job's state.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("job ID {0:?} is not 1 to 64 characters of a-z, A-Z, 0-9, '-' and '_'")]
    InvalidJobId(String),
    #[error("job {job_id} cannot go from {from} to {to}")]
    InvalidTransition {
        job_id: String,
        from: &'static str,
        to: &'static str,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The job journal. Every change is on disk before the call that made it returns.
#[derive(Debug)]
pub struct JobJournal {
    file: StateFile<JournalBody>,
    body: JournalBody,
    max_finished: usize,
}

impl JobJournal {
    /// Opens the journal at `path`, keeping at most `max_finished` finished jobs. A missing
    /// file is an empty journal; a corrupt one is moved aside (see
    /// [`state_file`](super::state_file)) and the journal starts empty, which the returned
    /// [`Loaded`] tells the caller so that it asks the cloud which jobs are in progress.
    pub fn open(path: PathBuf, max_finished: usize) -> Result<(Self, Loaded<()>), StorageError> {
        let file = StateFile::new(path, FORMAT, VERSION, Visibility::OwnerOnly);
        let (body, loaded) = match file.load()? {
            Loaded::Present(body) => (body, Loaded::Present(())),
            Loaded::Absent => (JournalBody::default(), Loaded::Absent),
            Loaded::MovedAside { moved_to, reason } => (
                JournalBody::default(),
                Loaded::MovedAside { moved_to, reason },
            ),
        };
        Ok((
            Self {
                file,
                body,
                max_finished,
            },
            loaded,
        ))
    }

    /// Decides whether `job_id` may be started (see [`StartDecision`]).
    pub fn may_start(&self, job_id: &str) -> StartDecision {
        match self.body.jobs.get(job_id).map(|e| &e.state) {
            None => StartDecision::New,
            Some(JobState::Received) => StartDecision::NotStarted,
            Some(JobState::Printing { device }) => StartDecision::Interrupted {
                device: device.clone(),
            },
            Some(state) => StartDecision::Finished(state.clone()),
        }
    }

    /// The recorded state of a job.
    pub fn get(&self, job_id: &str) -> Option<&JournalEntry> {
        self.body.jobs.get(job_id)
    }

    /// Jobs that were received or printing: what a restart has to resolve.
    pub fn unfinished(&self) -> impl Iterator<Item = (&str, &JournalEntry)> {
        self.body
            .jobs
            .iter()
            .filter(|(_, e)| !e.state.is_terminal())
            .map(|(id, e)| (id.as_str(), e))
    }

    pub fn len(&self) -> usize {
        self.body.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.body.jobs.is_empty()
    }

    /// Records `state` for `job_id` and writes the journal atomically before returning.
    ///
    /// Allowed moves: (new) -> any state (a job goes straight to Printing, or to an outcome
    /// when refused); Received -> Printing or an outcome; Printing -> an outcome (an
    /// interrupted job, Printing after a restart, -> Failed). Anything else, in particular
    /// Printing twice or leaving a finished state, is refused: that is how "print at most
    /// once" is enforced.
    pub fn record(&mut self, job_id: &str, state: JobState) -> Result<(), JournalError> {
        if !is_valid_job_id(job_id) {
            return Err(JournalError::InvalidJobId(job_id.to_string()));
        }
        let state = state.capped();
        let current = self.body.jobs.get(job_id).map(|e| &e.state);
        let allowed = match (current, &state) {
            (None, _) => true,
            (Some(JobState::Received), s) => !matches!(s, JobState::Received),
            (Some(JobState::Printing { .. }), s) => s.is_terminal(),
            (Some(_), _) => false,
        };
        if !allowed {
            return Err(JournalError::InvalidTransition {
                job_id: job_id.to_string(),
                from: current.map_or("new", JobState::name),
                to: state.name(),
            });
        }
        let mut body = self.body.clone();
        let sequence = body.next_sequence;
        body.next_sequence += 1;
        body.jobs.insert(
            job_id.to_string(),
            JournalEntry {
                state,
                updated_at: now_epoch_s(),
                sequence,
            },
        );
        prune(&mut body, self.max_finished);
        // The in-memory journal changes only once the file does, so that memory never claims
        // a step the disk would not remember after a crash.
        self.file.save(&body)?;
        self.body = body;
        Ok(())
    }
}

/// Drops the oldest finished entries beyond `max_finished`. Unfinished entries are never
/// dropped: they are what prevents a second print.
fn prune(body: &mut JournalBody, max_finished: usize) {
    let mut finished: Vec<(u64, String)> = body
        .jobs
        .iter()
        .filter(|(_, e)| e.state.is_terminal())
        .map(|(id, e)| (e.sequence, id.clone()))
        .collect();
    if finished.len() <= max_finished {
        return;
    }
    finished.sort();
    let excess = finished.len() - max_finished;
    for (_, id) in finished.into_iter().take(excess) {
        body.jobs.remove(&id);
    }
}

/// AWS IoT job IDs: 1..64 characters of `[a-zA-Z0-9_-]`.
pub fn is_valid_job_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn now_epoch_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path, max_finished: usize) -> JobJournal {
        JobJournal::open(dir.join("journal.json"), max_finished)
            .expect("open")
            .0
    }

    fn printed(summary: &str) -> JobState {
        JobState::Succeeded {
            summary: summary.into(),
        }
    }

    #[test]
    fn round_trips_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = open(dir.path(), 10);
        assert_eq!(journal.may_start("job-1"), StartDecision::New);
        journal
            .record("job-1", JobState::Received)
            .expect("received");
        journal
            .record(
                "job-1",
                JobState::Printing {
                    device: "zebra-1".into(),
                },
            )
            .expect("printing");
        journal
            .record("job-2", JobState::Received)
            .expect("received");
        let (reopened, loaded) =
            JobJournal::open(dir.path().join("journal.json"), 10).expect("reopen");
        assert_eq!(loaded, Loaded::Present(()));
        assert_eq!(
            reopened.may_start("job-1"),
            StartDecision::Interrupted {
                device: "zebra-1".into()
            }
        );
        assert_eq!(reopened.may_start("job-2"), StartDecision::NotStarted);
        assert!(reopened.may_start("job-2").may_print());
        assert!(!reopened.may_start("job-1").may_print());
        let unfinished: Vec<&str> = reopened.unfinished().map(|(id, _)| id).collect();
        assert_eq!(unfinished, vec!["job-1", "job-2"]);
    }

    #[test]
    fn a_job_cannot_print_twice_or_leave_a_finished_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = open(dir.path(), 10);
        journal.record("j", JobState::Received).expect("received");
        let printing = JobState::Printing {
            device: "zebra-1".into(),
        };
        journal.record("j", printing.clone()).expect("printing");
        let again = journal
            .record("j", printing.clone())
            .expect_err("second print");
        assert!(
            again.to_string().contains("printing to printing"),
            "{again}"
        );
        journal
            .record("j", printed("printed 1 label"))
            .expect("done");
        assert_eq!(
            journal.may_start("j"),
            StartDecision::Finished(printed("printed 1 label"))
        );
        assert!(journal.record("j", JobState::Received).is_err());
        assert!(journal.record("j", printing).is_err());
        // A job the journal never saw goes straight to printing, once.
        let k_printing = JobState::Printing {
            device: "zebra-1".into(),
        };
        journal
            .record("k", k_printing.clone())
            .expect("new to printing");
        assert!(journal.record("k", k_printing).is_err());
    }

    #[test]
    fn job_ids_outside_the_aws_alphabet_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = open(dir.path(), 10);
        for bad in ["", "a b", "../x", &"x".repeat(65), "jöb"] {
            assert!(
                matches!(
                    journal.record(bad, JobState::Received),
                    Err(JournalError::InvalidJobId(_))
                ),
                "{bad:?} accepted"
            );
        }
        assert!(journal.is_empty());
    }

    #[test]
    fn long_notes_are_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = open(dir.path(), 10);
        journal.record("j", JobState::Received).expect("received");
        journal
            .record(
                "j",
                JobState::Failed {
                    reason: "é".repeat(MAX_NOTE_LEN),
                },
            )
            .expect("failed");
        let Some(JournalEntry {
            state: JobState::Failed { reason },
            ..
        }) = journal.get("j")
        else {
            panic!("expected a failed entry");
        };
        assert!(reason.len() <= MAX_NOTE_LEN);
    }

    #[test]
    fn pruning_drops_the_oldest_finished_jobs_and_keeps_unfinished_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = open(dir.path(), 3);
        journal.record("open-1", JobState::Received).expect("r");
        for i in 0..6 {
            let id = format!("done-{i}");
            journal.record(&id, JobState::Received).expect("r");
            journal.record(&id, printed("ok")).expect("s");
        }
        journal.record("open-2", JobState::Received).expect("r");
        let reopened = open(dir.path(), 3);
        let mut ids: Vec<&str> = reopened.body.jobs.keys().map(String::as_str).collect();
        ids.sort();
        assert_eq!(ids, vec!["done-3", "done-4", "done-5", "open-1", "open-2"]);
        assert_eq!(reopened.may_start("done-0"), StartDecision::New);
    }

    #[test]
    fn a_corrupt_journal_is_moved_aside_and_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = open(dir.path(), 10);
        journal.record("j", JobState::Received).expect("r");
        std::fs::write(dir.path().join("journal.json"), b"{\"format\":").expect("corrupt");
        let (journal, loaded) =
            JobJournal::open(dir.path().join("journal.json"), 10).expect("open");
        assert!(journal.is_empty());
        let Loaded::MovedAside { moved_to, .. } = loaded else {
            panic!("expected the journal to be moved aside, got {loaded:?}");
        };
        assert!(moved_to.exists());
    }

    #[test]
    fn the_file_holds_only_ids_states_and_notes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = open(dir.path(), 10);
        journal.record("j", JobState::Received).expect("r");
        journal
            .record(
                "j",
                JobState::Printing {
                    device: "zebra-1".into(),
                },
            )
            .expect("p");
        let text = std::fs::read_to_string(dir.path().join("journal.json")).expect("read");
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            value["body"]["jobs"]["j"],
            serde_json::json!({
                "state": {"kind": "printing", "device": "zebra-1"},
                "updatedAt": value["body"]["jobs"]["j"]["updatedAt"],
                "sequence": 1
            })
        );
    }
}
