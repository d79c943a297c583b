//! Registration from the local pages: one run at a time in its own task, its progress kept for
//! the page to poll, and every failure turned into plain words with what to do next.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::agent::{Agent, RegisterError};
use crate::cloud::registration::RegistrationStep;

/// The longest activation code accepted; real codes are far shorter, and a bound keeps a
/// pasted document out of the registration request.
pub const MAX_CODE_LENGTH: usize = 256;

/// Where a registration from the pages stands, as `GET /api/register/progress` answers.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// `idle`, `running`, `done` or `failed`.
    pub state: &'static str,
    /// The steps reached so far, in order.
    pub steps: Vec<StepView>,
    /// The thing name, once registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thing_name: Option<String>,
    /// Why the last run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureView>,
}

/// One registration step as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    /// A stable name: `keyGenerated`, `claimConnected`, `certificateIssued`,
    /// `thingRegistered`, `identityStored` or `connected`.
    pub step: &'static str,
    /// The step in words.
    pub text: String,
}

/// A failed registration in plain words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureView {
    /// The error kind (`RegistrationError::kind`), for scripts and tests.
    pub kind: &'static str,
    /// What went wrong, in a short sentence.
    pub title: &'static str,
    /// What the person at the desk should do next.
    pub next: &'static str,
    /// The full message, for whoever sets DeviceHub up.
    pub detail: String,
}

impl StepView {
    fn of(step: &RegistrationStep) -> StepView {
        let name = match step {
            RegistrationStep::KeyGenerated { .. } => "keyGenerated",
            RegistrationStep::ClaimConnected { .. } => "claimConnected",
            RegistrationStep::CertificateIssued { .. } => "certificateIssued",
            RegistrationStep::ThingRegistered { .. } => "thingRegistered",
            RegistrationStep::IdentityStored { .. } => "identityStored",
            RegistrationStep::Connected { .. } => "connected",
        };
        StepView {
            step: name,
            text: step.to_string(),
        }
    }
}

/// Plain words for a failure kind: what went wrong and what to do next.
pub fn explain(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "emptyActivationCode" => (
            "No activation code was entered.",
            "Type the activation code the shipping application shows, then press Register.",
        ),
        "activationCodeRefused" => (
            "The activation code was not accepted.",
            "Codes work once and expire. Check that you typed it exactly, or get a new code \
             from the shipping application and try again.",
        ),
        "ownershipTokenExpired" | "timeout" | "connectionLost" => (
            "Registration was interrupted before it finished.",
            "Press Register again. If it happens again, check this computer's network \
             connection.",
        ),
        "clockWrong" | "claimCertificateExpired" => (
            "This computer's date or time is wrong.",
            "Set the correct date and time (or turn on automatic time), then register again.",
        ),
        "dns" | "connectionRefused" | "endpointTimeout" | "unreachable" | "handshake" => (
            "DeviceHub cannot reach the cloud.",
            "Check that this computer is connected to the internet. If it is, a firewall may \
             block DeviceHub: ask your IT support to allow it, then register again.",
        ),
        "serverNotTrusted" => (
            "The cloud server could not be verified.",
            "Something on the network may be intercepting connections. Ask your IT support to \
             check the network and DeviceHub's cloud settings.",
        ),
        "alreadyRegistered" => (
            "This computer is already registered.",
            "Nothing more to do: open the status page to see the devices.",
        ),
        "verify" => (
            "This computer was registered, but connecting with its new certificate failed.",
            "DeviceHub keeps trying to connect on its own. If the status page does not show \
             it connected within a few minutes, ask your IT support.",
        ),
        "rejected" | "invalidAnswer" | "templateNotFound" => (
            "The cloud did not accept the registration.",
            "Try again in a few minutes. If it keeps failing, contact the shipping \
             application's support with the details below.",
        ),
        _ => (
            "DeviceHub is not set up to register this computer.",
            "Its installation is incomplete or damaged. Ask your IT support to check \
             DeviceHub's settings with the details below.",
        ),
    }
}

impl FailureView {
    fn of(error: &RegisterError) -> FailureView {
        let kind = error.kind();
        let (title, next) = explain(kind);
        FailureView {
            kind,
            title,
            next,
            detail: error.to_string(),
        }
    }
}

/// Why a registration could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("a registration is already running")]
    AlreadyRunning,
    #[error("this computer is already registered as {0}")]
    AlreadyRegistered(String),
    #[error("the activation code is longer than {MAX_CODE_LENGTH} characters")]
    CodeTooLong,
}

/// The pages' registration runs: at most one at a time, its task owned here.
#[derive(Debug, Default)]
pub struct RegistrationRuns {
    progress: Arc<Mutex<Progress>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl RegistrationRuns {
    pub fn new() -> RegistrationRuns {
        RegistrationRuns {
            progress: Arc::new(Mutex::new(Progress {
                state: "idle",
                ..Progress::default()
            })),
            task: Mutex::new(None),
        }
    }

    /// The progress now.
    pub fn progress(&self) -> Progress {
        lock(&self.progress).clone()
    }

    /// Starts registering with `code` unless a run is going or the agent is registered.
    pub fn start(&self, agent: Arc<Agent>, code: &str) -> Result<Progress, StartError> {
        if let Some(thing) = agent.thing().borrow().clone() {
            return Err(StartError::AlreadyRegistered(thing));
        }
        let code = code.trim().to_string();
        if code.len() > MAX_CODE_LENGTH {
            return Err(StartError::CodeTooLong);
        }
        let mut task = lock(&self.task);
        if lock(&self.progress).state == "running" {
            return Err(StartError::AlreadyRunning);
        }
        let started = Progress {
            state: "running",
            ..Progress::default()
        };
        *lock(&self.progress) = started.clone();
        let progress = self.progress.clone();
        *task = Some(tokio::spawn(async move {
            let steps = progress.clone();
            let mut on_step = move |step: &RegistrationStep| {
                lock(&steps).steps.push(StepView::of(step));
            };
            let outcome = agent.register(&code, &mut on_step).await;
            let mut progress = lock(&progress);
            match outcome {
                Ok(done) => {
                    tracing::info!(thing = %done.thing_name, "registered from the local pages");
                    progress.state = "done";
                    progress.thing_name = Some(done.thing_name);
                }
                Err(e) => {
                    tracing::warn!(
                        kind = e.kind(),
                        "registration from the local pages failed: {e}"
                    );
                    progress.state = "failed";
                    progress.failure = Some(FailureView::of(&e));
                }
            }
        }));
        Ok(started)
    }

    /// Stops a run that is still going (the server is stopping) and waits for its task.
    pub async fn stop(&self) {
        let task = lock(&self.task).take();
        if let Some(task) = task {
            task.abort();
            // A cancelled task ends with a JoinError by design; a panic is worth a log line.
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!("the registration task failed: {e}");
                }
            }
        }
    }
}

/// Locks `mutex`; a panic while it was held leaves plain data behind, still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_kind_has_words_and_a_next_step() {
        let kinds = [
            "notConfigured",
            "emptyActivationCode",
            "claimCertificateMissing",
            "clockWrong",
            "dns",
            "serverNotTrusted",
            "activationCodeRefused",
            "ownershipTokenExpired",
            "alreadyRegistered",
            "verify",
            "rejected",
        ];
        for kind in kinds {
            let (title, next) = explain(kind);
            assert!(title.ends_with('.') && next.ends_with('.'), "{kind}");
        }
        assert_ne!(explain("activationCodeRefused"), explain("clockWrong"));
        assert_ne!(explain("dns"), explain("notConfigured"));
    }
}
