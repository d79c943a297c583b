//! A ZeroMQ PUB socket of DeviceHub's own: a TCP listener speaking ZMTP 3.0 and 3.1 with the
//! NULL mechanism, which the local RPC publishes its live events on.
//!
//! # Why not the `zeromq` crate's `PubSocket`
//! Its PUB socket creates a queue of 100 000 message slots when it is made and initialises every
//! slot: some 4 MB of resident memory for a socket that local tools subscribe to now and then,
//! which alone would take a quarter of the agent's idle memory budget. This publisher allocates
//! nothing until a subscriber connects, and then only what that subscriber's messages need.
//! The request socket and the client side keep using the crate.
//!
//! # What it speaks (rfc.zeromq.org 23/ZMTP for 3.0, 37/ZMTP for 3.1, 29/PUBSUB)
//! - Greeting, 64 bytes each way: signature `FF 00×8 7F`, version 3.1 (a 3.0 peer is served as
//!   3.0: the only difference that matters here is how it subscribes), mechanism `NULL` padded
//!   with zeros to 20 bytes, as-server 0, 31 bytes of filler.
//! - NULL handshake: each side sends a READY command; ours names Socket-Type `PUB`, and the
//!   peer's must name `SUB` or `XSUB` (anything else gets an ERROR command and is disconnected).
//! - Frames: a flags byte (bit 0 more, bit 1 long, bit 2 command), a size of one byte or, for a
//!   long frame, eight bytes big-endian, then the body. A command's body is a one-byte name
//!   length, the name, and the command's data.
//! - Subscriptions: a 3.0 peer sends one-frame messages whose first byte is 1 (subscribe) or 0
//!   (cancel) followed by the prefix; a 3.1 peer sends SUBSCRIBE and CANCEL commands. Both are
//!   accepted whatever the greeting said. PING is answered with a PONG carrying its context.
//! - Filtering happens here: a message goes to a subscriber when one of its prefixes is a
//!   prefix of the message's first frame (the empty prefix matches everything).
//!
//! # Limits
//! A subscriber sends only small frames, so a frame over [`MAX_FRAME`] ends its connection, as
//! do more than [`MAX_SUBSCRIPTIONS`] prefixes and a handshake slower than
//! [`HANDSHAKE_TIMEOUT`]. Each subscriber has a queue of at most [`HIGH_WATER_MARK`] messages
//! (libzmq's default); when it is full, messages are dropped for that subscriber alone, so a
//! subscriber that stops reading never holds up the publisher or the other subscribers.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::{CancellationToken, DropGuard};

/// The most messages waiting for one subscriber; more are dropped for it (libzmq's default
/// send high-water mark).
pub const HIGH_WATER_MARK: usize = 1000;
/// The largest frame a subscriber may send. Subscriptions and commands are a few bytes; a
/// larger frame is not a subscriber's, and its connection is closed before it is buffered.
pub const MAX_FRAME: usize = 64 * 1024;
/// The most distinct prefixes one subscriber may hold, so that a peer cannot grow the
/// publisher's memory without bound.
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// The most subscribers connected at once; further connections are closed at once.
pub const MAX_SUBSCRIBERS: usize = 64;
/// How long a peer may take from connecting to sending its READY command.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The greeting's length, fixed by the specification.
const GREETING_LEN: usize = 64;
/// The signature: the first ten bytes of every ZMTP 3 greeting.
const SIGNATURE_LEN: usize = 10;
/// The ZMTP version this publisher announces: 3.1, the newest.
const VERSION: (u8, u8) = (3, 1);
/// Frame flag: more frames of the same message follow.
const FLAG_MORE: u8 = 0b001;
/// Frame flag: the size is eight bytes rather than one.
const FLAG_LONG: u8 = 0b010;
/// Frame flag: the frame is a command, not message data.
const FLAG_COMMAND: u8 = 0b100;
/// How long to wait before accepting again after the listener failed (say, out of file
/// descriptors), so that a persistent failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A PUB socket listening on 127.0.0.1; stops, closing every connection, when closed or dropped.
#[derive(Debug)]
pub struct ZmtpPublisher {
    port: u16,
    hub: Arc<Hub>,
    /// Cancels the listener and every connection's task when the publisher goes away.
    stop_on_drop: DropGuard,
    acceptor: JoinHandle<()>,
}

impl ZmtpPublisher {
    /// Listens on 127.0.0.1:`port` (0: any free port) and starts accepting subscribers.
    pub async fn bind(port: u16) -> std::io::Result<ZmtpPublisher> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
        let port = listener.local_addr()?.port();
        let hub = Arc::new(Hub::default());
        let stop = CancellationToken::new();
        let acceptor = tokio::spawn(accept(listener, hub.clone(), stop.clone()));
        Ok(ZmtpPublisher {
            port,
            hub,
            stop_on_drop: stop.drop_guard(),
            acceptor,
        })
    }

    /// The port the publisher listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many subscribers would receive a message whose first frame is `topic`.
    pub fn subscribers_for(&self, topic: &[u8]) -> usize {
        self.hub
            .subscribers()
            .iter()
            .filter(|s| s.wants(topic))
            .count()
    }

    /// Queues the message made of `frames` for every subscriber whose prefixes match its first
    /// frame, and returns how many it was queued for. Never waits: a subscriber whose queue is
    /// full misses this message.
    pub fn publish(&self, frames: &[&[u8]]) -> usize {
        let Some(topic) = frames.first() else {
            return 0;
        };
        let wanting: Vec<Arc<Subscriber>> = self
            .hub
            .subscribers()
            .into_iter()
            .filter(|s| s.wants(topic))
            .collect();
        if wanting.is_empty() {
            return 0;
        }
        let message = encode_message(frames);
        wanting
            .iter()
            .filter(|subscriber| subscriber.offer(&message))
            .count()
    }

    /// Stops listening, closes every subscriber's connection and waits until they are closed.
    pub async fn close(self) {
        let ZmtpPublisher {
            stop_on_drop,
            acceptor,
            ..
        } = self;
        drop(stop_on_drop);
        if let Err(e) = acceptor.await {
            tracing::error!("the publish socket's listener task failed: {e}");
        }
    }
}

/// The subscribers connected now.
#[derive(Debug, Default)]
struct Hub {
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    next_id: AtomicU64,
}

impl Hub {
    /// A snapshot of the subscribers, so that no lock is held while messages are queued.
    fn subscribers(&self) -> Vec<Arc<Subscriber>> {
        self.subscribers
            .lock()
            .expect("the subscriber list is never left poisoned")
            .clone()
    }

    fn add(&self, subscriber: Arc<Subscriber>) {
        self.subscribers
            .lock()
            .expect("the subscriber list is never left poisoned")
            .push(subscriber);
    }

    fn remove(&self, id: u64) {
        self.subscribers
            .lock()
            .expect("the subscriber list is never left poisoned")
            .retain(|s| s.id != id);
    }
}

/// One connected subscriber as the publishing side sees it.
#[derive(Debug)]
struct Subscriber {
    id: u64,
    /// The prefixes it asked for, each with how many times: like libzmq, a prefix subscribed
    /// twice stays until it is cancelled twice.
    prefixes: Mutex<Vec<(Bytes, u32)>>,
    /// Encoded messages waiting to be written to its connection.
    queue: mpsc::Sender<Bytes>,
    /// Whether the last message offered was dropped, so that falling behind is logged once
    /// when it starts rather than for every message missed.
    dropping: AtomicBool,
}

impl Subscriber {
    fn wants(&self, topic: &[u8]) -> bool {
        self.prefixes
            .lock()
            .expect("a prefix list is never left poisoned")
            .iter()
            .any(|(prefix, _)| topic.starts_with(prefix))
    }

    /// Queues `message` unless the queue is full; true when queued.
    fn offer(&self, message: &Bytes) -> bool {
        match self.queue.try_send(message.clone()) {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::debug!(subscriber = self.id, "a local subscriber caught up");
                }
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::debug!(
                        subscriber = self.id,
                        "a local subscriber fell {HIGH_WATER_MARK} messages behind: dropping \
                         messages for it"
                    );
                }
                false
            }
            // The connection is ending; its task removes it from the hub.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Applies a subscription (`subscribe`) or cancellation of `prefix`.
    fn change(&self, subscribe: bool, prefix: &[u8]) -> Result<(), PeerError> {
        let mut prefixes = self
            .prefixes
            .lock()
            .expect("a prefix list is never left poisoned");
        let at = prefixes.iter().position(|(p, _)| p.as_ref() == prefix);
        match (subscribe, at) {
            (true, Some(at)) => prefixes[at].1 = prefixes[at].1.saturating_add(1),
            (true, None) if prefixes.len() >= MAX_SUBSCRIPTIONS => {
                return Err(PeerError::TooManySubscriptions)
            }
            (true, None) => prefixes.push((Bytes::copy_from_slice(prefix), 1)),
            (false, Some(at)) => {
                prefixes[at].1 -= 1;
                if prefixes[at].1 == 0 {
                    prefixes.swap_remove(at);
                }
            }
            // Cancelling what was never subscribed is ignored, as libzmq does.
            (false, None) => {}
        }
        Ok(())
    }
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("the peer does not speak ZMTP (bad greeting signature)")]
    NotZmtp,
    #[error("the peer speaks ZMTP {0}.{1}; 3.0 or later is needed")]
    Version(u8, u8),
    #[error("the peer asks for the {0} security mechanism; only NULL is offered")]
    Mechanism(String),
    #[error("the peer did not finish its handshake within {} s", HANDSHAKE_TIMEOUT.as_secs())]
    HandshakeTimeout,
    #[error("the peer sent a frame of {0} bytes, more than a subscriber ever sends")]
    TooLarge(u64),
    #[error("the peer sent a malformed frame: {0}")]
    Malformed(&'static str),
    #[error("the peer sent {0} instead of READY")]
    NotReady(String),
    #[error("the peer's socket type {0} cannot subscribe to a PUB socket")]
    SocketType(String),
    #[error("the peer holds more than {MAX_SUBSCRIPTIONS} subscriptions")]
    TooManySubscriptions,
}

/// Accepts subscribers until `stop`, then waits for every connection to close.
async fn accept(listener: TcpListener, hub: Arc<Hub>, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            // Reaps connections that ended, so that the set holds only live ones.
            Some(ended) = connections.join_next(), if !connections.is_empty() => log_panic(ended),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if connections.len() >= MAX_SUBSCRIBERS => {
                    tracing::debug!("refused a local subscriber: {MAX_SUBSCRIBERS} are connected");
                    drop(stream);
                }
                Ok((stream, _)) => {
                    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(serve(stream, id, hub.clone(), stop.clone()));
                }
                Err(e) => {
                    tracing::warn!("the publish socket cannot accept connections: {e}");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
        }
    }
    // Closing the listener first means no new subscriber arrives while the others close.
    drop(listener);
    while let Some(ended) = connections.join_next().await {
        log_panic(ended);
    }
}

/// Logs a connection task that panicked; the others and the listener carry on.
fn log_panic(ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended {
        tracing::error!("a local subscriber's connection task failed: {e}");
    }
}

/// Serves one connection until it ends or `stop`; closing it on the way out.
async fn serve(stream: TcpStream, id: u64, hub: Arc<Hub>, stop: CancellationToken) {
    let outcome = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        outcome = converse(stream, id, &hub) => outcome,
    };
    hub.remove(id);
    match outcome {
        Ok(()) | Err(PeerError::Closed) => {
            tracing::debug!(subscriber = id, "a local subscriber disconnected");
        }
        Err(e) => tracing::debug!(
            subscriber = id,
            "closed a local subscriber's connection: {e}"
        ),
    }
}

/// The whole conversation with one peer: handshake, then its queue out and its subscriptions in.
async fn converse(stream: TcpStream, id: u64, hub: &Hub) -> Result<(), PeerError> {
    // Small messages go out at once rather than waiting to be coalesced.
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut reader, &mut write)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(PeerError::HandshakeTimeout),
    }

    let (queue, mut outgoing) = mpsc::channel(HIGH_WATER_MARK);
    let subscriber = Arc::new(Subscriber {
        id,
        prefixes: Mutex::new(Vec::new()),
        queue,
        dropping: AtomicBool::new(false),
    });
    hub.add(subscriber.clone());
    tracing::debug!(subscriber = id, "a local subscriber connected");
    // Frames that belong to a multi-frame message are not subscriptions: they are skipped
    // until the frame that ends the message.
    let mut in_message = false;
    loop {
        tokio::select! {
            message = outgoing.recv() => match message {
                Some(message) => write.write_all(&message).await?,
                // The sender lives in `subscriber`, held above: the queue cannot close first.
                None => return Ok(()),
            },
            frame = reader.next_frame() => {
                let frame = frame?;
                if frame.is_command() {
                    let (name, data) = frame.command()?;
                    match name {
                        b"SUBSCRIBE" => subscriber.change(true, data)?,
                        b"CANCEL" => subscriber.change(false, data)?,
                        b"PING" => {
                            let context = data.get(2..).ok_or(PeerError::Malformed("PING without a TTL"))?;
                            if context.len() > 16 {
                                return Err(PeerError::Malformed("PING context over 16 bytes"));
                            }
                            write.write_all(&encode_command(b"PONG", context)).await?;
                        }
                        // Other commands (PONG, a late READY, ERROR) need nothing from a
                        // publisher.
                        _ => {}
                    }
                } else {
                    let single = !in_message && !frame.more();
                    in_message = frame.more();
                    match frame.body.split_first() {
                        Some((1, prefix)) if single => subscriber.change(true, prefix)?,
                        Some((0, prefix)) if single => subscriber.change(false, prefix)?,
                        // Other messages to a PUB socket are ignored (29/PUBSUB).
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Exchanges greetings and READY commands; on success, the peer is a subscriber.
async fn handshake(reader: &mut FrameReader, write: &mut OwnedWriteHalf) -> Result<(), PeerError> {
    write.write_all(&greeting()).await?;
    let signature = reader.read_exact(SIGNATURE_LEN).await?;
    if signature[0] != 0xFF || signature[SIGNATURE_LEN - 1] != 0x7F {
        return Err(PeerError::NotZmtp);
    }
    let rest = reader.read_exact(GREETING_LEN - SIGNATURE_LEN).await?;
    let (major, minor) = (rest[0], rest[1]);
    if major < 3 {
        return Err(PeerError::Version(major, minor));
    }
    let mechanism = &rest[2..22];
    if mechanism != mechanism_field(b"NULL") {
        let name = String::from_utf8_lossy(mechanism)
            .trim_end_matches('\0')
            .to_string();
        return Err(PeerError::Mechanism(name));
    }

    write
        .write_all(&encode_command(
            b"READY",
            &encode_property(b"Socket-Type", b"PUB"),
        ))
        .await?;
    let frame = reader.next_frame().await?;
    if !frame.is_command() {
        return Err(PeerError::NotReady("a message".into()));
    }
    let (name, data) = frame.command()?;
    if name != b"READY" {
        let name = String::from_utf8_lossy(name).into_owned();
        return Err(PeerError::NotReady(name));
    }
    let socket_type = socket_type(data)?;
    if socket_type != b"SUB" && socket_type != b"XSUB" {
        let socket_type = String::from_utf8_lossy(socket_type).into_owned();
        // The reason is sent as a courtesy: the connection closes whether it arrives or not.
        let reason = b"invalid socket type";
        let mut data = vec![reason.len() as u8];
        data.extend_from_slice(reason);
        let _ = write.write_all(&encode_command(b"ERROR", &data)).await;
        let _ = write.shutdown().await;
        return Err(PeerError::SocketType(socket_type));
    }
    Ok(())
}

/// Our greeting: ZMTP 3.1, NULL mechanism, not as server.
fn greeting() -> [u8; GREETING_LEN] {
    let mut greeting = [0u8; GREETING_LEN];
    greeting[0] = 0xFF;
    greeting[SIGNATURE_LEN - 1] = 0x7F;
    greeting[10] = VERSION.0;
    greeting[11] = VERSION.1;
    greeting[12..32].copy_from_slice(&mechanism_field(b"NULL"));
    greeting
}

/// A mechanism name as the greeting carries it: padded with zeros to 20 bytes.
fn mechanism_field(name: &[u8]) -> [u8; 20] {
    let mut field = [0u8; 20];
    field[..name.len()].copy_from_slice(name);
    field
}

/// The Socket-Type property of a READY command's `properties`.
fn socket_type(mut properties: &[u8]) -> Result<&[u8], PeerError> {
    let mut found = None;
    while !properties.is_empty() {
        let name_len = usize::from(properties[0]);
        let name = properties.get(1..1 + name_len).ok_or(PeerError::Malformed(
            "a property name runs past the command",
        ))?;
        let rest = &properties[1 + name_len..];
        let value_len = rest
            .get(..4)
            .ok_or(PeerError::Malformed("a property has no value length"))?;
        let value_len =
            u32::from_be_bytes(value_len.try_into().expect("the slice is four bytes")) as usize;
        let value = rest.get(4..4 + value_len).ok_or(PeerError::Malformed(
            "a property value runs past the command",
        ))?;
        // Property names are case-insensitive (23/ZMTP).
        if name.eq_ignore_ascii_case(b"Socket-Type") {
            found = Some(value);
        }
        properties = &rest[4 + value_len..];
    }
    found.ok_or(PeerError::Malformed("READY has no Socket-Type"))
}

/// One READY property: a one-byte name length, the name, a four-byte value length, the value.
fn encode_property(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut property = Vec::with_capacity(1 + name.len() + 4 + value.len());
    property.push(u8::try_from(name.len()).expect("property names are short constants"));
    property.extend_from_slice(name);
    property.extend_from_slice(
        &u32::try_from(value.len())
            .expect("property values are short constants")
            .to_be_bytes(),
    );
    property.extend_from_slice(value);
    property
}

/// A command frame: `name` (at most 255 bytes) followed by `data`.
fn encode_command(name: &[u8], data: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(1 + name.len() + data.len());
    body.push(u8::try_from(name.len()).expect("command names are short constants"));
    body.extend_from_slice(name);
    body.extend_from_slice(data);
    let mut frame = BytesMut::with_capacity(9 + body.len());
    put_frame(&mut frame, FLAG_COMMAND, &body);
    frame.freeze()
}

/// A whole message as it goes on the wire, encoded once and shared by every subscriber.
fn encode_message(frames: &[&[u8]]) -> Bytes {
    let size: usize = frames.iter().map(|f| 9 + f.len()).sum();
    let mut message = BytesMut::with_capacity(size);
    for (i, frame) in frames.iter().enumerate() {
        let more = if i + 1 < frames.len() { FLAG_MORE } else { 0 };
        put_frame(&mut message, more, frame);
    }
    message.freeze()
}

/// Appends one frame with `flags` (the long flag is added when the body needs it).
fn put_frame(out: &mut BytesMut, flags: u8, body: &[u8]) {
    match u8::try_from(body.len()) {
        Ok(short) => {
            out.put_u8(flags);
            out.put_u8(short);
        }
        Err(_) => {
            out.put_u8(flags | FLAG_LONG);
            out.put_u64(body.len() as u64);
        }
    }
    out.put_slice(body);
}

/// A frame received from a peer.
#[derive(Debug)]
struct Frame {
    flags: u8,
    body: Bytes,
}

impl Frame {
    fn is_command(&self) -> bool {
        self.flags & FLAG_COMMAND != 0
    }

    fn more(&self) -> bool {
        self.flags & FLAG_MORE != 0
    }

    /// A command frame's name and data.
    fn command(&self) -> Result<(&[u8], &[u8]), PeerError> {
        let (&name_len, rest) = self
            .body
            .split_first()
            .ok_or(PeerError::Malformed("an empty command"))?;
        let name_len = usize::from(name_len);
        if rest.len() < name_len {
            return Err(PeerError::Malformed("a command name runs past its frame"));
        }
        Ok(rest.split_at(name_len))
    }
}

/// Reads frames from a peer. Everything read is kept in `buffer`, so that a read interrupted
/// by `select!` loses nothing.
struct FrameReader {
    read: OwnedReadHalf,
    buffer: BytesMut,
}

impl FrameReader {
    fn new(read: OwnedReadHalf) -> FrameReader {
        FrameReader {
            read,
            buffer: BytesMut::new(),
        }
    }

    /// Reads more bytes into the buffer; the peer closing is an error.
    async fn fill(&mut self) -> Result<(), PeerError> {
        self.buffer.reserve(512);
        if self.read.read_buf(&mut self.buffer).await? == 0 {
            return Err(PeerError::Closed);
        }
        Ok(())
    }

    /// The next `n` bytes (used for the greeting, which is not framed).
    async fn read_exact(&mut self, n: usize) -> Result<Bytes, PeerError> {
        while self.buffer.len() < n {
            self.fill().await?;
        }
        Ok(self.buffer.split_to(n).freeze())
    }

    /// The next whole frame. Cancel-safe: bytes already read stay in the buffer.
    async fn next_frame(&mut self) -> Result<Frame, PeerError> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buffer)? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }
}

/// Takes one whole frame off the front of `buffer`, or `None` when more bytes are needed.
fn decode_frame(buffer: &mut BytesMut) -> Result<Option<Frame>, PeerError> {
    let Some(&flags) = buffer.first() else {
        return Ok(None);
    };
    if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
        return Err(PeerError::Malformed("reserved flag bits are set"));
    }
    if flags & FLAG_COMMAND != 0 && flags & FLAG_MORE != 0 {
        return Err(PeerError::Malformed("a command cannot have more frames"));
    }
    let (header, size) = if flags & FLAG_LONG != 0 {
        let Some(size) = buffer.get(1..9) else {
            return Ok(None);
        };
        (
            9,
            u64::from_be_bytes(size.try_into().expect("the slice is eight bytes")),
        )
    } else {
        let Some(&size) = buffer.get(1) else {
            return Ok(None);
        };
        (2, u64::from(size))
    };
    if size > MAX_FRAME as u64 {
        return Err(PeerError::TooLarge(size));
    }
    let size = size as usize;
    if buffer.len() < header + size {
        return Ok(None);
    }
    buffer.advance(header);
    let body = buffer.split_to(size).freeze();
    Ok(Some(Frame { flags, body }))
}

#[cfg(test)]
mod tests {
    //! The publisher over real loopback sockets: the `zeromq` crate's SUB socket (ZMTP 3.0,
    //! subscriptions as messages), hand-written ZMTP 3.1 peers (SUBSCRIBE/CANCEL commands,
    //! PING, bad peers) and libzmq through pyzmq.

    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;
    use zeromq::{Socket, SocketRecv, SubSocket};

    /// The longest any one step may take; a passing test never waits this long.
    const WAIT: Duration = Duration::from_secs(20);

    /// Waits until `condition` holds, polling; panics naming `what` after [`WAIT`].
    async fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn subscriber(port: u16, prefixes: &[&str]) -> SubSocket {
        let mut socket = SubSocket::new();
        socket
            .connect(&format!("tcp://127.0.0.1:{port}"))
            .await
            .expect("connect the SUB socket");
        for prefix in prefixes {
            socket.subscribe(prefix).await.expect("subscribe");
        }
        socket
    }

    /// The next message's frames as text.
    async fn next(socket: &mut SubSocket) -> Vec<String> {
        let message = tokio::time::timeout(WAIT, socket.recv())
            .await
            .expect("a message in time")
            .expect("receive a message");
        message
            .into_vec()
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect()
    }

    fn strings(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| f.to_string()).collect()
    }

    #[tokio::test]
    async fn rpc_publisher_sends_a_sub_socket_only_what_matches_its_prefix() {
        let publisher = ZmtpPublisher::bind(0).await.expect("bind");
        let mut socket = subscriber(publisher.port(), &["dev"]).await;
        wait_until("the subscription", || {
            publisher.subscribers_for(b"device") == 1
        })
        .await;
        assert_eq!(publisher.subscribers_for(b"job"), 0);

        assert_eq!(publisher.publish(&[b"job", b"{}"]), 0);
        assert_eq!(publisher.publish(&[b"device", b"{\"n\":1}"]), 1);
        assert_eq!(publisher.publish(&[b"health", b"{}"]), 0);
        // Over 255 bytes: a long frame.
        let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(300));
        assert_eq!(publisher.publish(&[b"devices", long.as_bytes()]), 1);
        assert_eq!(publisher.publish(&[b"de", b"{}"]), 0);
        assert_eq!(publisher.publish(&[b"dev", b"last"]), 1);
        // Messages arrive in order on one connection: anything unmatched would show up here.
        assert_eq!(next(&mut socket).await, strings(&["device", "{\"n\":1}"]));
        assert_eq!(next(&mut socket).await, strings(&["devices", &long]));
        assert_eq!(next(&mut socket).await, strings(&["dev", "last"]));
        publisher.close().await;
    }

    #[tokio::test]
    async fn rpc_publisher_stops_sending_what_was_unsubscribed() {
        let publisher = ZmtpPublisher::bind(0).await.expect("bind");
        let mut socket = subscriber(publisher.port(), &["a", "b"]).await;
        wait_until("both subscriptions", || {
            publisher.subscribers_for(b"a") == 1 && publisher.subscribers_for(b"b") == 1
        })
        .await;
        publisher.publish(&[b"a", b"1"]);
        assert_eq!(next(&mut socket).await, strings(&["a", "1"]));

        socket.unsubscribe("a").await.expect("unsubscribe");
        wait_until("the cancellation", || publisher.subscribers_for(b"a") == 0).await;
        assert_eq!(publisher.publish(&[b"a", b"2"]), 0);
        publisher.publish(&[b"b", b"3"]);
        assert_eq!(next(&mut socket).await, strings(&["b", "3"]));
        publisher.close().await;
    }

    #[tokio::test]
    async fn rpc_publisher_serves_two_subscribers_their_own_prefixes() {
        let publisher = ZmtpPublisher::bind(0).await.expect("bind");
        let mut devices = subscriber(publisher.port(), &["device"]).await;
        let mut jobs = subscriber(publisher.port(), &["job"]).await;
        let mut everything = subscriber(publisher.port(), &[""]).await;
        wait_until("three subscriptions", || {
            publisher.subscribers_for(b"device") == 2 && publisher.subscribers_for(b"job") == 2
        })
        .await;
        assert_eq!(publisher.publish(&[b"device", b"d1"]), 2);
        assert_eq!(publisher.publish(&[b"job", b"j1"]), 2);
        assert_eq!(publisher.publish(&[b"health", b"h1"]), 1);
        assert_eq!(publisher.publish(&[b"device", b"d2"]), 2);
        assert_eq!(publisher.publish(&[b"job", b"j2"]), 2);
        assert_eq!(next(&mut devices).await, strings(&["device", "d1"]));
        assert_eq!(next(&mut devices).await, strings(&["device", "d2"]));
        assert_eq!(next(&mut jobs).await, strings(&["job", "j1"]));
        assert_eq!(next(&mut jobs).await, strings(&["job", "j2"]));
        for expected in [
            ["device", "d1"],
            ["job", "j1"],
            ["health", "h1"],
            ["device", "d2"],
            ["job", "j2"],
        ] {
            assert_eq!(next(&mut everything).await, strings(&expected));
        }
        publisher.close().await;
    }

    /// A hand-written ZMTP 3.1 peer on a blocking socket, for what the `zeromq` crate does not
    /// do: 3.1 commands, PING, wrong socket types, no reading at all.
    struct RawPeer {
        stream: std::net::TcpStream,
    }

    impl RawPeer {
        fn connect(port: u16) -> RawPeer {
            let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream
                .set_read_timeout(Some(WAIT))
                .expect("set a read timeout");
            RawPeer { stream }
        }

        /// Greets as ZMTP 3.1 and sends READY as `socket_type`; returns the publisher's greeting.
        fn handshake(&mut self, socket_type: &[u8]) -> Vec<u8> {
            let mut greeting = [0u8; GREETING_LEN];
            greeting[0] = 0xFF;
            greeting[9] = 0x7F;
            greeting[10] = 3;
            greeting[11] = 1;
            greeting[12..16].copy_from_slice(b"NULL");
            self.send(&greeting);
            let theirs = self.read(GREETING_LEN);
            self.send(&encode_command(
                b"READY",
                &encode_property(b"Socket-Type", socket_type),
            ));
            theirs
        }

        fn send(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).expect("send to the publisher");
        }

        fn read(&mut self, n: usize) -> Vec<u8> {
            let mut bytes = vec![0; n];
            self.stream
                .read_exact(&mut bytes)
                .expect("read from the publisher");
            bytes
        }

        /// The next frame: its flags and body.
        fn frame(&mut self) -> (u8, Vec<u8>) {
            let header = self.read(2);
            let size = if header[0] & FLAG_LONG != 0 {
                let mut size = header[1..].to_vec();
                size.extend(self.read(7));
                u64::from_be_bytes(size.try_into().expect("eight bytes")) as usize
            } else {
                usize::from(header[1])
            };
            (header[0], self.read(size))
        }

        /// True when the publisher closed the connection (after whatever it sent first).
        fn closed_by_publisher(&mut self) -> bool {
            let mut rest = Vec::new();
            match self.stream.read_to_end(&mut rest) {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        }
    }

    #[tokio::test]
    async fn rpc_publisher_speaks_zmtp_3_1_commands_and_answers_ping() {
        let publisher = ZmtpPublisher::bind(0).await.expect("bind");
        let port = publisher.port();
        let mut peer = tokio::task::spawn_blocking(move || {
            let mut peer = RawPeer::connect(port);
            let greeting = peer.handshake(b"SUB");
            assert_eq!(&greeting[..10], &[0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F]);
            assert_eq!(&greeting[10..12], &[3, 1], "version 3.1");
            assert_eq!(&greeting[12..32], &mechanism_field(b"NULL"));
            assert_eq!(greeting[32], 0, "not as-server");
            let (flags, ready) = peer.frame();
            assert_eq!(flags, FLAG_COMMAND);
            let expected = [&b"\x05READY"[..], &encode_property(b"Socket-Type", b"PUB")].concat();
            assert_eq!(ready, expected);
            peer.send(&encode_command(b"SUBSCRIBE", b"job"));
            peer.send(&encode_command(b"PING", b"\x00\x0actx-1"));
            let (flags, pong) = peer.frame();
            assert_eq!(flags, FLAG_COMMAND);
            assert_eq!(pong, b"\x04PONGctx-1");
            peer
        })
        .await
        .expect("the peer's thread");
        wait_until("the SUBSCRIBE command", || {
            publisher.subscribers_for(b"job") == 1
        })
        .await;
        assert_eq!(publisher.publish(&[b"device", b"no"]), 0);
        let body = vec![b'j'; 1000];
        assert_eq!(publisher.publish(&[b"job", &body]), 1);

        let peer = tokio::task::spawn_blocking(move || {
            assert_eq!(peer.frame(), (FLAG_MORE, b"job".to_vec()));
            assert_eq!(peer.frame(), (FLAG_LONG, body));
            peer.send(&encode_command(b"CANCEL", b"job"));
            peer
        })
        .await
        .expect("the peer's thread");
        wait_until("the CANCEL command", || {
            publisher.subscribers_for(b"job") == 0
        })
        .await;
        drop(peer);
        publisher.close().await;
    }

    #[tokio::test]
    async fn rpc_publisher_disconnects_garbage_wrong_socket_types_and_huge_frames_only() {
        let publisher = ZmtpPublisher::bind(0).await.expect("bind");
        let mut healthy = subscriber(publisher.port(), &["health"]).await;
        wait_until("the healthy subscriber", || {
            publisher.subscribers_for(b"health") == 1
        })
        .await;
        let port = publisher.port();
        tokio::task::spawn_blocking(move || {
            let mut garbage = RawPeer::connect(port);
            garbage.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
            assert!(garbage.closed_by_publisher(), "a non-ZMTP peer is closed");

            let mut request = RawPeer::connect(port);
            request.handshake(b"REQ");
            let (_, ready) = request.frame();
            assert!(ready.starts_with(b"\x05READY"));
            let (flags, error) = request.frame();
            assert_eq!(flags, FLAG_COMMAND);
            assert_eq!(error, b"\x05ERROR\x13invalid socket type");
            assert!(request.closed_by_publisher(), "a REQ peer is closed");

            let mut huge = RawPeer::connect(port);
            huge.handshake(b"SUB");
            huge.frame();
            let mut header = vec![FLAG_LONG];
            header.extend_from_slice(&(1u64 << 20).to_be_bytes());
            huge.send(&header);
            assert!(huge.closed_by_publisher(), "a 1 MiB frame is refused");

            let mut old = RawPeer::connect(port);
            let mut greeting = [0u8; GREETING_LEN];
            greeting[0] = 0xFF;
            greeting[9] = 0x7F;
            greeting[10] = 3;
            greeting[12..17].copy_from_slice(b"CURVE");
            old.send(&greeting);
            old.read(GREETING_LEN);
            assert!(old.closed_by_publisher(), "a CURVE peer is closed");
        })
        .await
        .expect("the bad peers' thread");

        assert_eq!(publisher.subscribers_for(b"health"), 1);
        assert_eq!(publisher.publish(&[b"health", b"still here"]), 1);
        assert_eq!(next(&mut healthy).await, strings(&["health", "still here"]));
        publisher.close().await;
    }

    #[tokio::test]
    async fn rpc_publisher_drops_for_a_subscriber_that_never_reads_and_serves_the_others() {
        let publisher = ZmtpPublisher::bind(0).await.expect("bind");
        let port = publisher.port();
        let stalled = tokio::task::spawn_blocking(move || {
            let mut peer = RawPeer::connect(port);
            peer.handshake(b"SUB");
            peer.frame();
            peer.send(&encode_command(b"SUBSCRIBE", b"bulk"));
            // From here on it reads nothing.
            peer
        })
        .await
        .expect("the stalled peer's thread");
        let mut reader = subscriber(port, &["device"]).await;
        wait_until("both subscribers", || {
            publisher.subscribers_for(b"bulk") == 1 && publisher.subscribers_for(b"device") == 1
        })
        .await;

        // The kernel's socket buffers take some messages and the queue up to the high-water
        // mark; after that, publishing drops for the stalled subscriber instead of waiting.
        let body = vec![b'b'; 16 * 1024];
        let mut published = 0;
        while publisher.publish(&[b"bulk", &body]) == 1 {
            published += 1;
            assert!(
                published < 1_000_000,
                "the stalled subscriber's queue never filled"
            );
            // Lets the connection's task move what it can into the kernel's buffers.
            tokio::task::yield_now().await;
        }
        assert!(published >= HIGH_WATER_MARK, "dropped after {published}");
        for n in 0..3 {
            let body = n.to_string();
            assert_eq!(publisher.publish(&[b"device", body.as_bytes()]), 1);
            assert_eq!(next(&mut reader).await, strings(&["device", &body]));
        }
        drop(stalled);
        publisher.close().await;
    }

    #[tokio::test]
    async fn rpc_publisher_close_ends_every_connection() {
        let publisher = ZmtpPublisher::bind(0).await.expect("bind");
        let port = publisher.port();
        let mut peer = tokio::task::spawn_blocking(move || {
            let mut peer = RawPeer::connect(port);
            peer.handshake(b"XSUB");
            peer.frame();
            peer.send(&[0x00, 0x02, 0x01, b'x']);
            peer
        })
        .await
        .expect("the peer's thread");
        wait_until("the subscription", || publisher.subscribers_for(b"x") == 1).await;
        publisher.close().await;
        let closed = tokio::task::spawn_blocking(move || peer.closed_by_publisher())
            .await
            .expect("the peer's thread");
        assert!(closed, "closing the publisher closes its connections");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens after close"
        );
    }

    #[tokio::test]
    async fn rpc_publisher_interoperates_with_a_libzmq_sub_socket() {
        let publisher = ZmtpPublisher::bind(0).await.expect("bind");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/interop/pub_subscriber.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(&script)
            .arg(publisher.port().to_string())
            .arg("dev")
            .arg("3")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (scripts/install-deps test installs it with python3-zmq)");
        let deadline = Instant::now() + WAIT;
        while publisher.subscribers_for(b"device") == 0 {
            if let Some(status) = child.try_wait().expect("poll the pyzmq subscriber") {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                panic!(
                    "the pyzmq subscriber ended before subscribing ({status}; is python3-zmq \
                     installed? scripts/install-deps test installs it): {stderr}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "the libzmq subscriber never subscribed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        publisher.publish(&[b"job", b"{}"]);
        publisher.publish(&[b"device", b"{\"n\":1}"]);
        publisher.publish(&[b"health", b"{}"]);
        let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(400));
        publisher.publish(&[b"device", long.as_bytes()]);
        publisher.publish(&[b"dev", b"{\"n\":3}"]);
        let output = tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .expect("the pyzmq subscriber ends in time")
            .expect("run the pyzmq subscriber");
        assert!(
            output.status.success(),
            "the pyzmq subscriber failed (is python3-zmq installed? scripts/install-deps test \
             installs it): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seen: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("the subscriber's JSON");
        assert_eq!(
            seen,
            serde_json::json!([
                ["device", "{\"n\":1}"],
                ["device", long],
                ["dev", "{\"n\":3}"],
            ])
        );
        publisher.close().await;
    }

    #[test]
    fn rpc_publisher_encodes_short_and_long_frames() {
        let message = encode_message(&[b"t", &[7u8; 256]]);
        assert_eq!(&message[..3], &[FLAG_MORE, 1, b't']);
        assert_eq!(message[3], FLAG_LONG);
        assert_eq!(&message[4..12], &256u64.to_be_bytes());
        assert_eq!(message.len(), 12 + 256);

        let mut buffer = BytesMut::from(&message[..]);
        let first = decode_frame(&mut buffer).expect("valid").expect("whole");
        assert!(first.more() && !first.is_command());
        let second = decode_frame(&mut buffer).expect("valid").expect("whole");
        assert_eq!(second.body.len(), 256);
        assert!(buffer.is_empty());

        let mut partial = BytesMut::from(&[FLAG_LONG, 0, 0][..]);
        assert!(decode_frame(&mut partial).expect("valid so far").is_none());
        let mut reserved = BytesMut::from(&[0x80, 0][..]);
        assert!(decode_frame(&mut reserved).is_err());
    }
}
