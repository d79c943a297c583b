//! The local WebSocket server on 127.0.0.1:10101 (`[local] ws_port`): desk tools and the
//! shipping application's browser pages list devices, follow scale readings, device events and
//! scanner results, ask for a reading or a zero, and send images for OCR. The messages are in
//! [`protocol`] and docs/protocol.md, "Local WebSocket".
//!
//! # Origins
//! Browsers always send an `Origin` header; local tools usually send none. A connection with no
//! Origin, or one listed in `[local] ws_allowed_origins`, is accepted; any other is refused at
//! the handshake with HTTP 403, so that an arbitrary web page cannot read the scale.
//!
//! # Slow clients
//! Each connection has its own outgoing queue, filled from the agent's live events without
//! waiting on the socket. Answers to requests wait for room (a client that does not read its
//! answers stops being read); pushed events never wait: a newer reading of a scale replaces the
//! unsent older one of that scale, and other events beyond [`MAX_QUEUED_EVENTS`] push out the
//! oldest. A client that stops reading therefore only ever delays itself.
//!
//! # Tasks
//! One accept task owns a task per connection; stopping the server cancels them all and waits.

pub mod protocol;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsProtocolError, Message};
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::config::LocalConfig;
use protocol::Subscriptions;

/// How many answers may wait for a client before its next request is not read.
pub const MAX_QUEUED_ANSWERS: usize = 64;
/// How many pushed events (other than the newest reading of each scale) may wait for a client;
/// beyond it the oldest is dropped.
pub const MAX_QUEUED_EVENTS: usize = 256;
/// How long a connection may take to complete the WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection may take to send its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("cannot listen on 127.0.0.1:{port} for the local WebSocket server: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// The running server; [`WsServer::stop`] ends it and every connection.
#[derive(Debug)]
pub struct WsServer {
    addr: SocketAddr,
    /// Told where the server listens, and that it stopped.
    agent: Arc<Agent>,
    task: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

impl WsServer {
    /// Listens on 127.0.0.1 at the configured port and serves `agent`.
    pub async fn start(agent: Arc<Agent>, config: &LocalConfig) -> Result<WsServer, WsError> {
        let listener = TcpListener::bind(("127.0.0.1", config.ws_port))
            .await
            .map_err(|source| WsError::Bind {
                port: config.ws_port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| WsError::Bind {
            port: config.ws_port,
            source,
        })?;
        tracing::info!("local WebSocket server listening on ws://{addr}");
        let shutdown = CancellationToken::new();
        let origins = Arc::new(config.ws_allowed_origins.clone());
        agent.set_websocket_address(Some(addr));
        let task = tokio::spawn(accept_loop(
            listener,
            agent.clone(),
            origins,
            shutdown.clone(),
        ));
        Ok(WsServer {
            addr,
            agent,
            task,
            shutdown,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and stops listening.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Err(e) = self.task.await {
            tracing::error!("the WebSocket server failed: {e}");
        }
        self.agent.set_websocket_address(None);
    }
}

async fn accept_loop(
    listener: TcpListener,
    agent: Arc<Agent>,
    origins: Arc<Vec<String>>,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(
                        stream,
                        agent.clone(),
                        origins.clone(),
                        shutdown.child_token(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!("cannot accept a WebSocket connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Whether a handshake with `origin` (absent for local tools) is accepted.
pub fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    match origin {
        None => true,
        Some(origin) => allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin)),
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(protocol::MAX_MESSAGE_BYTES))
        .max_frame_size(Some(protocol::MAX_MESSAGE_BYTES))
}

async fn serve(
    stream: TcpStream,
    agent: Arc<Agent>,
    origins: Arc<Vec<String>>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // The callback's signature is tungstenite's: its error is the HTTP response sent instead.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let origin = request
            .headers()
            .get("origin")
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        if origin_allowed(origin, &origins) {
            Ok(response)
        } else {
            tracing::info!(
                origin = origin.unwrap_or(""),
                "WebSocket connection refused: origin not allowed"
            );
            let mut refused = ErrorResponse::new(Some("origin not allowed".to_string()));
            *refused.status_mut() = StatusCode::FORBIDDEN;
            Err(refused)
        }
    };
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(ws_config()));
    let socket = tokio::select! {
        _ = shutdown.cancelled() => return,
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match done {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => {
                tracing::debug!("WebSocket handshake failed: {e}");
                return;
            }
            Err(_) => return,
        },
    };
    let (sink, source) = socket.split();
    let queue = Outgoing::default();
    let (subscriptions, followed) = watch::channel(Subscriptions::default());
    tokio::join!(
        read_requests(source, &agent, &queue, &subscriptions, &shutdown),
        forward_events(&agent, followed, &queue, &shutdown),
        write_messages(sink, &queue, &shutdown),
    );
}

type Source = futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<TcpStream>>;
type Sink = futures_util::stream::SplitSink<tokio_tungstenite::WebSocketStream<TcpStream>, Message>;

/// Reads requests and queues their answers until the client leaves or the server stops.
async fn read_requests(
    mut source: Source,
    agent: &Agent,
    queue: &Outgoing,
    subscriptions: &watch::Sender<Subscriptions>,
    shutdown: &CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = source.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let answer = protocol::handle(agent, text.as_str(), subscriptions).await;
                if !queue.push_answer(answer.to_string(), shutdown).await {
                    break;
                }
            }
            Some(Ok(Message::Binary(_))) => {
                let answer = protocol::answer(
                    serde_json::Value::Null,
                    Err(protocol::RequestError::bad_request(
                        "binary messages are not supported: send JSON text",
                    )),
                );
                if !queue.push_answer(answer.to_string(), shutdown).await {
                    break;
                }
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(WsProtocolError::Capacity(e))) => {
                queue.close_with(CloseFrame {
                    code: CloseCode::Size,
                    reason: format!("message too large: {e}").into(),
                });
                break;
            }
            Some(Err(e)) => {
                tracing::debug!("WebSocket connection ended: {e}");
                break;
            }
        }
    }
    shutdown.cancel();
}

/// Moves the live events the client follows into its queue; never waits on the socket.
async fn forward_events(
    agent: &Agent,
    mut followed: watch::Receiver<Subscriptions>,
    queue: &Outgoing,
    shutdown: &CancellationToken,
) {
    let mut current = Subscriptions::default();
    // Subscribed to the agent's events only while following something, so that the scale
    // readings service reads scales only while someone listens.
    let mut events: Option<broadcast::Receiver<crate::agent::LocalEvent>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = followed.changed() => {
                if changed.is_err() {
                    break;
                }
                current = *followed.borrow_and_update();
                if current.any() && events.is_none() {
                    events = Some(agent.subscribe_local());
                } else if !current.any() {
                    events = None;
                }
            }
            event = async {
                match events.as_mut() {
                    Some(events) => events.recv().await,
                    None => std::future::pending().await,
                }
            } => match event {
                Ok(event) => {
                    if let Some((key, text)) = protocol::event_message(&event, &current) {
                        queue.push_event(key, text);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "a WebSocket client missed live events");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

/// Sends queued messages, answers first; ends with a close frame.
async fn write_messages(mut sink: Sink, queue: &Outgoing, shutdown: &CancellationToken) {
    loop {
        let next = queue.pop();
        match next {
            Some(text) => {
                let sent = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    sent = sink.send(Message::text(text)) => sent,
                };
                if sent.is_err() {
                    break;
                }
            }
            None => {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = queue.ready.notified() => {}
                }
            }
        }
    }
    shutdown.cancel();
    let frame = queue.closing();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = sink.send(Message::Close(frame)).await;
        let _ = sink.close().await;
    })
    .await;
}

/// One client's outgoing messages.
#[derive(Debug, Default)]
struct Outgoing {
    state: Mutex<QueueState>,
    /// Wakes the writer when something was queued.
    ready: Notify,
    /// Wakes the reader when an answer was sent and there is room again.
    room: Notify,
}

#[derive(Debug, Default)]
struct QueueState {
    answers: VecDeque<String>,
    /// Pushed events in order; a keyed one (a scale's reading) is replaced in place by a newer
    /// one with the same key while unsent.
    events: VecDeque<(Option<String>, String)>,
    /// Events pushed out for room, for the debug log.
    dropped: u64,
    close: Option<CloseFrame>,
}

impl Outgoing {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Every change leaves the queue valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an answer, waiting for room; false when the connection ended first.
    async fn push_answer(&self, text: String, shutdown: &CancellationToken) -> bool {
        loop {
            let room = self.room.notified();
            {
                let mut state = self.lock();
                if state.answers.len() < MAX_QUEUED_ANSWERS {
                    state.answers.push_back(text);
                    drop(state);
                    self.ready.notify_one();
                    return true;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = room => {}
            }
        }
    }

    /// Queues a pushed event without waiting (see the module docs).
    fn push_event(&self, key: Option<String>, text: String) {
        {
            let mut state = self.lock();
            let existing = key.as_ref().and_then(|key| {
                state
                    .events
                    .iter_mut()
                    .find(|(k, _)| k.as_ref() == Some(key))
            });
            match existing {
                Some(entry) => entry.1 = text,
                None => {
                    if state.events.len() >= MAX_QUEUED_EVENTS {
                        state.events.pop_front();
                        state.dropped += 1;
                        tracing::debug!(
                            dropped = state.dropped,
                            "a slow WebSocket client lost an event"
                        );
                    }
                    state.events.push_back((key, text));
                }
            }
        }
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<String> {
        let mut state = self.lock();
        if let Some(answer) = state.answers.pop_front() {
            drop(state);
            self.room.notify_one();
            return Some(answer);
        }
        state.events.pop_front().map(|(_, text)| text)
    }

    fn close_with(&self, frame: CloseFrame) {
        self.lock().close = Some(frame);
    }

    fn closing(&self) -> Option<CloseFrame> {
        self.lock().close.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_origin_and_listed_origins_are_allowed() {
        let allowed = vec!["https://ship.example.com".to_string()];
        assert!(origin_allowed(None, &allowed));
        assert!(origin_allowed(Some("https://ship.example.com"), &allowed));
        assert!(origin_allowed(Some("HTTPS://SHIP.example.com"), &allowed));
        assert!(!origin_allowed(Some("https://evil.example"), &allowed));
        assert!(!origin_allowed(Some("null"), &[]));
    }

    #[test]
    fn a_newer_reading_replaces_the_unsent_one_of_its_scale_in_place() {
        let queue = Outgoing::default();
        queue.push_event(Some("a".into()), "a1".into());
        queue.push_event(None, "device".into());
        queue.push_event(Some("b".into()), "b1".into());
        queue.push_event(Some("a".into()), "a2".into());
        let sent: Vec<String> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(sent, ["a2", "device", "b1"]);
    }

    #[test]
    fn unkeyed_events_beyond_the_limit_push_out_the_oldest() {
        let queue = Outgoing::default();
        for i in 0..MAX_QUEUED_EVENTS + 3 {
            queue.push_event(None, i.to_string());
        }
        assert_eq!(queue.pop().as_deref(), Some("3"));
        assert_eq!(queue.lock().dropped, 3);
    }

    #[tokio::test]
    async fn answers_go_before_events_and_wait_for_room() {
        let queue = Outgoing::default();
        let shutdown = CancellationToken::new();
        queue.push_event(None, "event".into());
        for i in 0..MAX_QUEUED_ANSWERS {
            assert!(queue.push_answer(i.to_string(), &shutdown).await);
        }
        assert_eq!(queue.pop().as_deref(), Some("0"));
        // Room for one more now; a second waits until the connection ends.
        assert!(queue.push_answer("late".into(), &shutdown).await);
        shutdown.cancel();
        assert!(!queue.push_answer("never".into(), &shutdown).await);
    }
}
