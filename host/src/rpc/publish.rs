//! The publish socket: the agent's live events and a periodic health message, each a two-frame
//! message `[topic, json]` so that subscribers filter by topic prefix. Scans are never published
//! here: the socket has no token, and scanned addresses are personal data.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::protocol::topic;
use super::zmtp_pub::ZmtpPublisher;
use super::RegistrationProgress;
use crate::agent::{Agent, LocalEvent};

/// How often a `health` message is published.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Publishes until `shutdown`.
pub(super) async fn run(
    socket: ZmtpPublisher,
    agent: Arc<Agent>,
    mut progress: broadcast::Receiver<RegistrationProgress>,
    shutdown: CancellationToken,
) {
    let mut events = agent.subscribe_local();
    let mut health = tokio::time::interval(HEALTH_INTERVAL);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (name, body) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = health.tick() => {
                // The agent's snapshot is the costly part: none is taken for nobody.
                if socket.subscribers_for(topic::HEALTH.as_bytes()) == 0 {
                    continue;
                }
                (topic::HEALTH, health_message(&agent))
            }
            event = events.recv() => match event {
                Ok(event) => match event_message(event) {
                    Some(message) => message,
                    None => continue,
                },
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "local RPC subscribers missed live events");
                    continue;
                }
                Err(RecvError::Closed) => break,
            },
            step = progress.recv() => match step {
                Ok(step) => (
                    topic::REGISTRATION,
                    json!({ "requestId": step.request_id, "step": step.step }),
                ),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            },
        };
        // Nobody listening is the usual case: the body is not even encoded then.
        if socket.subscribers_for(name.as_bytes()) == 0 {
            continue;
        }
        let body = serde_json::to_vec(&body).expect("events are plain JSON");
        // A PUB socket drops messages for slow subscribers instead of blocking, by design.
        socket.publish(&[name.as_bytes(), &body]);
    }
    // Closing the socket closes its listener and every subscriber's connection.
    socket.close().await;
}

/// The topic and body of a live event; `None` for events that are not published here.
fn event_message(event: LocalEvent) -> Option<(&'static str, Value)> {
    Some(match event {
        LocalEvent::Device { device, attached } => (
            topic::DEVICE,
            json!({ "device": device, "attached": attached }),
        ),
        LocalEvent::Job(job) => (topic::JOB, job),
        LocalEvent::Scale { device, reading } => (
            topic::SCALE,
            json!({ "device": device, "reading": reading }),
        ),
        // Personal data: only token-holding local tools (the WebSocket) may see scans.
        LocalEvent::Scan { .. } => return None,
    })
}

/// A short health summary: enough for a tray icon or a monitoring script.
fn health_message(agent: &Agent) -> Value {
    let snapshot = agent.snapshot();
    json!({
        "agentVersion": snapshot.agent_version,
        "uptimeS": snapshot.uptime_s,
        "thingName": snapshot.thing_name,
        "link": snapshot.link,
        "devices": snapshot.devices.len(),
        "deviceProblems": snapshot.device_problems.len(),
        "pluginsLoaded": snapshot.plugins.len(),
        "pluginsRefused": snapshot.refused_plugins.len(),
    })
}
