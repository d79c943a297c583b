//! The dispatcher: the one reader of the link's incoming messages. It routes each message by
//! topic to the task that owns that part of the protocol (jobs, shadow), each through its own
//! bounded channel, so that a slow consumer never holds up the other.
//!
//! A consumer that falls behind first fills its channel, then a small backlog kept here; when
//! that is full too, further messages for it are dropped and logged. Both protocols recover from
//! a lost message: the jobs task asks `start-next` again on every connection and after every job,
//! the shadow task asks `get` again on every connection.

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::InboundMessage;

/// Capacity of each route's channel.
pub const ROUTE_CAPACITY: usize = 64;
/// Messages held here for a route whose channel is full, before new ones are dropped.
pub const ROUTE_BACKLOG: usize = 64;

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `$aws/things/THING/jobs/...`
    Jobs,
    /// `$aws/things/THING/shadow/...` (the classic shadow and named shadows).
    Shadow,
}

/// Classifies a topic of `thing`; `None` for topics no task reads (another thing's, unknown).
pub fn route(thing: &str, topic: &str) -> Option<Route> {
    let rest = topic
        .strip_prefix("$aws/things/")?
        .strip_prefix(thing)?
        .strip_prefix('/')?;
    if rest.starts_with("jobs/") {
        Some(Route::Jobs)
    } else if rest.starts_with("shadow/") {
        Some(Route::Shadow)
    } else {
        None
    }
}

/// The receiving ends handed to the jobs and shadow tasks.
#[derive(Debug)]
pub struct RouteReceivers {
    pub jobs: mpsc::Receiver<InboundMessage>,
    pub shadow: mpsc::Receiver<InboundMessage>,
}

/// One route's sending side and the messages waiting for room in its channel.
#[derive(Debug)]
struct Outlet {
    route: Route,
    sender: mpsc::Sender<InboundMessage>,
    backlog: VecDeque<InboundMessage>,
    /// Messages dropped since the last warning, so that a flood logs once, not per message.
    dropped: u64,
    /// Set once the receiving task has gone: its messages are discarded quietly.
    closed: bool,
}

impl Outlet {
    fn new(route: Route) -> (Outlet, mpsc::Receiver<InboundMessage>) {
        let (sender, receiver) = mpsc::channel(ROUTE_CAPACITY);
        let outlet = Outlet {
            route,
            sender,
            backlog: VecDeque::new(),
            dropped: 0,
            closed: false,
        };
        (outlet, receiver)
    }

    /// Hands `message` on without waiting: straight into the channel when it has room and
    /// nothing is waiting before it, else into the backlog, else it is dropped.
    fn offer(&mut self, message: InboundMessage) {
        if self.closed {
            return;
        }
        if self.backlog.is_empty() {
            match self.sender.try_send(message) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.closed = true;
                    return;
                }
                Err(mpsc::error::TrySendError::Full(message)) => {
                    self.backlog.push_back(message);
                    return;
                }
            }
        }
        if self.backlog.len() < ROUTE_BACKLOG {
            self.backlog.push_back(message);
        } else {
            self.dropped += 1;
            if self.dropped == 1 || self.dropped.is_multiple_of(100) {
                tracing::error!(
                    route = ?self.route,
                    dropped = self.dropped,
                    "a cloud task is not keeping up: messages for it are dropped"
                );
            }
        }
    }

    /// Waits for room in the channel and moves the oldest waiting message into it.
    async fn drain_one(&mut self) {
        match self.sender.reserve().await {
            Ok(permit) => {
                if let Some(message) = self.backlog.pop_front() {
                    permit.send(message);
                }
                if self.backlog.is_empty() {
                    self.dropped = 0;
                }
            }
            Err(_) => {
                self.closed = true;
                self.backlog.clear();
            }
        }
    }
}

/// Creates the routes and returns the dispatcher loop and the receivers for the tasks.
pub fn dispatcher(
    thing: String,
    incoming: mpsc::Receiver<InboundMessage>,
) -> (Dispatcher, RouteReceivers) {
    let (jobs, jobs_rx) = Outlet::new(Route::Jobs);
    let (shadow, shadow_rx) = Outlet::new(Route::Shadow);
    (
        Dispatcher {
            thing,
            incoming,
            jobs,
            shadow,
        },
        RouteReceivers {
            jobs: jobs_rx,
            shadow: shadow_rx,
        },
    )
}

/// The routing loop; see the module docs.
#[derive(Debug)]
pub struct Dispatcher {
    thing: String,
    incoming: mpsc::Receiver<InboundMessage>,
    jobs: Outlet,
    shadow: Outlet,
}

impl Dispatcher {
    /// Routes messages until the link closes its channel or `shutdown` is cancelled. Dropping
    /// the dispatcher closes both routes, which tells the tasks that nothing more will come.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let jobs_waiting = !self.jobs.backlog.is_empty();
            let shadow_waiting = !self.shadow.backlog.is_empty();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.incoming.recv() => {
                    let Some(message) = message else { break };
                    match route(&self.thing, &message.topic) {
                        Some(Route::Jobs) => self.jobs.offer(message),
                        Some(Route::Shadow) => self.shadow.offer(message),
                        None => tracing::debug!(topic = %message.topic, "no task reads this topic"),
                    }
                }
                _ = self.jobs.drain_one(), if jobs_waiting => {}
                _ = self.shadow.drain_one(), if shadow_waiting => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::link::Qos;

    fn message(topic: &str) -> InboundMessage {
        InboundMessage {
            topic: topic.to_string(),
            payload: bytes::Bytes::from_static(b"{}"),
            qos: Qos::AtLeastOnce,
            retain: false,
            duplicate: false,
        }
    }

    #[test]
    fn topics_are_routed_by_prefix_of_the_own_thing_only() {
        assert_eq!(
            route("desk-1", "$aws/things/desk-1/jobs/notify-next"),
            Some(Route::Jobs)
        );
        assert_eq!(
            route("desk-1", "$aws/things/desk-1/shadow/update/delta"),
            Some(Route::Shadow)
        );
        assert_eq!(route("desk-1", "$aws/things/desk-10/jobs/notify"), None);
        assert_eq!(route("desk-1", "$aws/things/desk-2/shadow/get"), None);
        assert_eq!(route("desk-1", "devicehub/desk-1/heartbeat"), None);
    }

    #[tokio::test]
    async fn a_stalled_jobs_task_does_not_hold_up_the_shadow() {
        let (link_tx, link_rx) = mpsc::channel(8);
        let (dispatcher, mut receivers) = dispatcher("desk-1".into(), link_rx);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(dispatcher.run(shutdown.clone()));
        // Nobody reads the jobs route: more than it and its backlog can hold.
        let feeder = tokio::spawn(async move {
            for _ in 0..(ROUTE_CAPACITY + ROUTE_BACKLOG + 10) {
                link_tx
                    .send(message("$aws/things/desk-1/jobs/notify-next"))
                    .await
                    .expect("dispatcher reads");
            }
            link_tx
                .send(message("$aws/things/desk-1/shadow/update/delta"))
                .await
                .expect("dispatcher reads");
            link_tx
        });
        let shadow = receivers.shadow.recv().await.expect("shadow message");
        assert_eq!(shadow.topic, "$aws/things/desk-1/shadow/update/delta");
        let _link_tx = feeder.await.expect("feeder");
        // The jobs route kept what fits in its channel and backlog, oldest first.
        let mut jobs = 0;
        while receivers.jobs.try_recv().is_ok() {
            jobs += 1;
        }
        assert_eq!(jobs, ROUTE_CAPACITY);
        tokio::task::yield_now().await;
        shutdown.cancel();
        task.await.expect("dispatcher stops");
    }
}
