//! What each thing has been doing, as the shipping application sees it: whether it is
//! connected (from the broker's lifecycle events), when it last sent a heartbeat, and the last
//! messages it published on its `devicehub/<thing>/...` topics, kept in a bounded ring per thing.
//!
//! Nothing here is written to disk: scans carry addresses, which are personal data.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use base64::Engine;
use serde::Serialize;
use serde_json::Value;

/// Messages kept per thing; the oldest are dropped first.
pub const MESSAGES_PER_THING: usize = 256;

/// Topic filters the activity log listens to.
pub const SUBSCRIPTIONS: &[&str] = &["devicehub/+/#", "$aws/events/presence/+/+"];

/// One message a thing published.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingMessage {
    /// Increases by one for every message recorded, across all things: a reader asks for
    /// what came after the last sequence it saw.
    pub sequence: u64,
    pub topic: String,
    /// The part of the topic after `devicehub/<thing>/`, e.g. `heartbeat` or `events/scale`.
    pub channel: String,
    pub received_at: u64,
    /// The payload as JSON when it is JSON, otherwise `{"base64": "..."}`.
    pub payload: Value,
}

/// Connection state and heartbeat of one thing.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingStatus {
    /// `None` when the broker reports no lifecycle events (an external broker) and the thing
    /// has not been seen.
    pub connected: Option<bool>,
    pub last_connected_at: Option<u64>,
    pub last_disconnected_at: Option<u64>,
    pub last_disconnect_reason: Option<String>,
    pub last_heartbeat_at: Option<u64>,
    pub last_heartbeat: Option<Value>,
}

#[derive(Debug, Default)]
struct ThingLog {
    status: ThingStatus,
    /// `sessionIdentifier` of the connection last reported connected.
    session: Option<String>,
    messages: VecDeque<ThingMessage>,
}

#[derive(Debug, Default)]
struct ActivityState {
    things: HashMap<String, ThingLog>,
    next_sequence: u64,
}

/// The activity log of every thing.
#[derive(Debug, Default)]
pub struct ThingActivity {
    state: Mutex<ActivityState>,
}

impl ThingActivity {
    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a message received on one of [`SUBSCRIPTIONS`].
    pub fn record(&self, topic: &str, payload: &[u8], now: u64) {
        let levels: Vec<&str> = topic.split('/').collect();
        match levels.as_slice() {
            ["devicehub", thing, rest @ ..] if !rest.is_empty() => {
                let payload = match serde_json::from_slice::<Value>(payload) {
                    Ok(json) => json,
                    Err(_) => serde_json::json!({
                        "base64": base64::engine::general_purpose::STANDARD.encode(payload)
                    }),
                };
                let channel = rest.join("/");
                let mut state = self.lock();
                state.next_sequence += 1;
                let sequence = state.next_sequence;
                let log = state.things.entry((*thing).to_string()).or_default();
                if channel == "heartbeat" {
                    log.status.last_heartbeat_at = Some(now);
                    log.status.last_heartbeat = Some(payload.clone());
                    // A heartbeat proves the link is up even where no lifecycle events exist.
                    if log.status.connected.is_none() {
                        log.status.connected = Some(true);
                    }
                }
                if log.messages.len() >= MESSAGES_PER_THING {
                    log.messages.pop_front();
                }
                log.messages.push_back(ThingMessage {
                    sequence,
                    topic: topic.to_string(),
                    channel,
                    received_at: now,
                    payload,
                });
            }
            ["$aws", "events", "presence", event, client_id] => {
                let event_body = serde_json::from_slice::<Value>(payload).ok();
                let field = |name: &str| {
                    event_body
                        .as_ref()
                        .and_then(|v| v.get(name)?.as_str().map(str::to_string))
                };
                let session = field("sessionIdentifier");
                let mut state = self.lock();
                let log = state.things.entry((*client_id).to_string()).or_default();
                match *event {
                    "connected" => {
                        log.status.connected = Some(true);
                        log.status.last_connected_at = Some(now);
                        log.session = session;
                    }
                    "disconnected" => {
                        log.status.last_disconnected_at = Some(now);
                        log.status.last_disconnect_reason = field("disconnectReason");
                        // When a new connection takes over the client id, the old one's
                        // disconnection is reported after the new one's connection: it must
                        // not mark the thing offline.
                        if session.is_none() || log.session == session {
                            log.status.connected = Some(false);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    pub fn status(&self, thing: &str) -> ThingStatus {
        self.lock()
            .things
            .get(thing)
            .map(|log| log.status.clone())
            .unwrap_or_default()
    }

    /// Messages of `thing` with a sequence above `after`, oldest first, at most `limit`.
    pub fn messages(&self, thing: &str, after: u64, limit: usize) -> Vec<ThingMessage> {
        self.lock()
            .things
            .get(thing)
            .map(|log| {
                log.messages
                    .iter()
                    .filter(|m| m.sequence > after)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_disconnection_of_a_taken_over_connection_does_not_mark_the_thing_offline() {
        let activity = ThingActivity::default();
        let topic = |e: &str| format!("$aws/events/presence/{e}/desk-1");
        activity.record(&topic("connected"), br#"{"sessionIdentifier":"a"}"#, 1);
        activity.record(&topic("connected"), br#"{"sessionIdentifier":"b"}"#, 2);
        activity.record(
            &topic("disconnected"),
            br#"{"sessionIdentifier":"a","disconnectReason":"DUPLICATE_CLIENTID"}"#,
            3,
        );
        assert_eq!(activity.status("desk-1").connected, Some(true));
        activity.record(&topic("disconnected"), br#"{"sessionIdentifier":"b"}"#, 4);
        assert_eq!(activity.status("desk-1").connected, Some(false));
    }

    #[test]
    fn keeps_a_bounded_ring_and_tracks_heartbeats_and_presence() {
        let activity = ThingActivity::default();
        for i in 0..(MESSAGES_PER_THING + 10) {
            activity.record(
                "devicehub/desk-1/events/scale",
                format!("{{\"n\":{i}}}").as_bytes(),
                5,
            );
        }
        activity.record("devicehub/desk-1/heartbeat", b"{\"uptime\":1}", 7);
        activity.record(
            "$aws/events/presence/disconnected/desk-1",
            b"{\"disconnectReason\":\"CONNECTION_LOST\"}",
            9,
        );
        let all = activity.messages("desk-1", 0, usize::MAX);
        assert_eq!(all.len(), MESSAGES_PER_THING);
        assert_eq!(all.last().map(|m| m.channel.as_str()), Some("heartbeat"));
        let status = activity.status("desk-1");
        assert_eq!(status.last_heartbeat_at, Some(7));
        assert_eq!(status.connected, Some(false));
        assert_eq!(
            status.last_disconnect_reason.as_deref(),
            Some("CONNECTION_LOST")
        );
        let last = all.last().map(|m| m.sequence).unwrap_or(0);
        assert!(activity.messages("desk-1", last, 10).is_empty());
        activity.record("devicehub/desk-1/scan", b"\xff\x00", 10);
        assert!(activity.messages("desk-1", last, 10)[0]
            .payload
            .get("base64")
            .is_some());
    }
}
