//! `GET /api/events`: the agent's live events as server-sent events, for the status page.
//!
//! Events: `scale` (`{device, reading}`), `device` (`{device, attached}`), `job` (the ended
//! job's record) and `lagged` (this stream fell behind and missed some: fetch the status
//! again). Scans are personal data and are not sent to pages.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::Shared;
use crate::agent::LocalEvent;

/// How often an idle stream sends a comment, so that proxies and the browser keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The event a page receives for `event`, if pages get it at all.
fn page_event(event: LocalEvent) -> Option<Event> {
    let (name, data) = match event {
        LocalEvent::Scale { device, reading } => {
            ("scale", json!({ "device": device, "reading": reading }))
        }
        LocalEvent::Device { device, attached } => {
            ("device", json!({ "device": device, "attached": attached }))
        }
        LocalEvent::Job(job) => ("job", job),
        LocalEvent::Scan { .. } => return None,
    };
    Some(Event::default().event(name).data(data.to_string()))
}

pub(super) async fn stream(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let receiver = shared.agent.subscribe_local();
    let stop = shared.shutdown.clone();
    let events =
        futures_util::stream::unfold((receiver, stop), |(mut receiver, stop)| async move {
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return None,
                    next = receiver.recv() => next,
                };
                let event = match next {
                    Ok(event) => page_event(event),
                    Err(RecvError::Lagged(missed)) => {
                        Some(Event::default().event("lagged").data(missed.to_string()))
                    }
                    Err(RecvError::Closed) => return None,
                };
                if let Some(event) = event {
                    return Some((Ok::<_, Infallible>(event), (receiver, stop)));
                }
            }
        });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
