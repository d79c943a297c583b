//! MQTT 3.1.1 and MQTT 5 framing for the embedded broker.
//!
//! The broker works with the protocol-neutral [`ClientPacket`] and [`ServerPacket`]; this module
//! detects which protocol a client speaks from its CONNECT and translates with rumqttc's codecs
//! for that version. MQTT 5 features the broker does not offer are announced in the CONNACK
//! (no retained messages, no shared subscriptions, no subscription identifiers, no topic
//! aliases), as AWS IoT Core announces what it lacks.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::mqttbytes::{Error as V4Error, QoS};
use rumqttc::v5::mqttbytes::v5;
use rumqttc::v5::mqttbytes::{Error as V5Error, QoS as V5QoS};

/// The MQTT version a client connected with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

/// Properties of an MQTT 5 publish, forwarded to MQTT 5 subscribers.
pub type PublishProperties = v5::PublishProperties;

/// A client's last will.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub properties: Option<Box<PublishProperties>>,
}

/// What a CONNECT asked for.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub version: Version,
    pub client_id: String,
    pub keep_alive_s: u16,
    /// MQTT 3.1.1 clean session, MQTT 5 clean start.
    pub clean_start: bool,
    /// MQTT 5 session expiry interval; MQTT 3.1.1 sessions last until a clean session.
    pub session_expiry_s: Option<u32>,
    pub will: Option<Will>,
}

impl ConnectRequest {
    /// Whether the session outlives this connection.
    pub fn persistent(&self) -> bool {
        match self.version {
            Version::V311 => !self.clean_start,
            Version::V5 => self.session_expiry_s.unwrap_or(0) > 0,
        }
    }
}

/// A message as published.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    /// Boxed: most messages have none, and a message is moved through channels often.
    pub properties: Option<Box<PublishProperties>>,
}

/// One filter of a SUBSCRIBE.
#[derive(Debug, Clone)]
pub struct SubscriptionRequest {
    pub filter: String,
    pub qos: QoS,
    /// MQTT 5 "no local": do not send the client its own publishes.
    pub no_local: bool,
}

/// A packet from a client.
#[derive(Debug)]
pub enum ClientPacket {
    Connect(ConnectRequest),
    Publish {
        pkid: u16,
        message: Message,
    },
    PubAck(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<SubscriptionRequest>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// `publish_will`: an MQTT 5 client may ask for its will on a normal disconnect.
    Disconnect {
        publish_will: bool,
    },
    /// A packet a client must not send, or that the broker does not support (QoS 2 flow,
    /// AUTH).
    Unexpected(String),
}

/// The answer to a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    Accepted {
        session_present: bool,
        /// The keepalive the broker applies, when it differs from the client's.
        server_keep_alive_s: Option<u16>,
    },
    NotAuthorized,
    BadClientId,
    UnsupportedVersion,
}

/// The answer to one subscription filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    Granted(QoS),
    NotAuthorized,
    InvalidFilter,
}

/// Why the broker closes a connection (sent as DISCONNECT to MQTT 5 clients only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    NotAuthorized,
    SessionTakenOver,
    KeepAliveTimeout,
    ShuttingDown,
    ProtocolError,
    PacketTooLarge,
    QosNotSupported,
}

/// A packet to a client.
#[derive(Debug)]
pub enum ServerPacket<'a> {
    ConnAck(ConnectOutcome),
    Publish {
        pkid: u16,
        message: &'a Message,
    },
    PubAck(u16),
    SubAck {
        pkid: u16,
        outcomes: Vec<SubscribeOutcome>,
    },
    UnsubAck {
        pkid: u16,
        count: usize,
    },
    PingResp,
    Disconnect(DisconnectReason),
}

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("protocol level {0} is neither MQTT 3.1.1 (4) nor MQTT 5 (5)")]
    UnsupportedVersion(u8),
    #[error("packet larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed packet: {0}")]
    Malformed(String),
}

fn to_v5_qos(qos: QoS) -> V5QoS {
    match qos {
        QoS::AtMostOnce => V5QoS::AtMostOnce,
        QoS::AtLeastOnce => V5QoS::AtLeastOnce,
        QoS::ExactlyOnce => V5QoS::ExactlyOnce,
    }
}

fn from_v5_qos(qos: V5QoS) -> QoS {
    match qos {
        V5QoS::AtMostOnce => QoS::AtMostOnce,
        V5QoS::AtLeastOnce => QoS::AtLeastOnce,
        V5QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// The protocol level of the CONNECT at the start of `buf`, or `None` if more bytes are needed.
fn connect_level(buf: &[u8]) -> Result<Option<u8>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first >> 4 != 1 {
        return Err(DecodeError::Malformed(
            "the first packet is not CONNECT".into(),
        ));
    }
    // Skip the remaining-length varint (at most four bytes).
    let mut offset = 1;
    loop {
        let Some(&byte) = buf.get(offset) else {
            return Ok(None);
        };
        offset += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if offset > 4 {
            return Err(DecodeError::Malformed("bad remaining length".into()));
        }
    }
    // Protocol name: two length bytes and "MQTT", then the level.
    let level_at = offset + 2 + 4;
    match buf.get(offset..=level_at) {
        None => Ok(None),
        Some(header) if &header[2..6] == b"MQTT" => Ok(Some(header[6])),
        Some(_) => Err(DecodeError::Malformed("protocol name is not MQTT".into())),
    }
}

/// Decodes the next packet in `buf`, or `None` if more bytes are needed. Before CONNECT
/// (`version` is `None`) the version is read from the CONNECT itself.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<Version>,
    max_packet: usize,
) -> Result<Option<ClientPacket>, DecodeError> {
    let version = match version {
        Some(v) => v,
        None => match connect_level(buf)? {
            None => return Ok(None),
            Some(4) => Version::V311,
            Some(5) => Version::V5,
            Some(other) => return Err(DecodeError::UnsupportedVersion(other)),
        },
    };
    match version {
        Version::V311 => decode_v4(buf, max_packet),
        Version::V5 => decode_v5(buf, max_packet),
    }
}

fn decode_v4(buf: &mut BytesMut, max_packet: usize) -> Result<Option<ClientPacket>, DecodeError> {
    let packet = match v4::Packet::read(buf, max_packet) {
        Ok(packet) => packet,
        Err(V4Error::InsufficientBytes(_)) => return Ok(None),
        Err(V4Error::PayloadSizeLimitExceeded(_)) => return Err(DecodeError::TooLarge(max_packet)),
        Err(e) => return Err(DecodeError::Malformed(e.to_string())),
    };
    Ok(Some(match packet {
        v4::Packet::Connect(c) => ClientPacket::Connect(ConnectRequest {
            version: Version::V311,
            client_id: c.client_id,
            keep_alive_s: c.keep_alive,
            clean_start: c.clean_session,
            session_expiry_s: None,
            will: c.last_will.map(|w| Will {
                topic: w.topic,
                payload: w.message,
                qos: w.qos,
                properties: None,
            }),
        }),
        v4::Packet::Publish(p) => ClientPacket::Publish {
            pkid: p.pkid,
            message: Message {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                properties: None,
            },
        },
        v4::Packet::PubAck(ack) => ClientPacket::PubAck(ack.pkid),
        v4::Packet::Subscribe(s) => ClientPacket::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscriptionRequest {
                    filter: f.path,
                    qos: f.qos,
                    no_local: false,
                })
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => ClientPacket::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => ClientPacket::PingReq,
        v4::Packet::Disconnect => ClientPacket::Disconnect {
            publish_will: false,
        },
        other => ClientPacket::Unexpected(format!("{other:?}")),
    }))
}

/// Removes what must not travel from publisher to subscriber: the publisher's topic alias and
/// subscription identifiers.
fn forwardable(properties: Option<PublishProperties>) -> Option<Box<PublishProperties>> {
    properties.map(|mut p| {
        p.topic_alias = None;
        p.subscription_identifiers.clear();
        Box::new(p)
    })
}

fn decode_v5(buf: &mut BytesMut, max_packet: usize) -> Result<Option<ClientPacket>, DecodeError> {
    let limit = u32::try_from(max_packet).unwrap_or(u32::MAX);
    let packet = match v5::Packet::read(buf, Some(limit)) {
        Ok(packet) => packet,
        Err(V5Error::InsufficientBytes(_)) => return Ok(None),
        Err(V5Error::PayloadSizeLimitExceeded { .. }) => {
            return Err(DecodeError::TooLarge(max_packet))
        }
        Err(e) => return Err(DecodeError::Malformed(e.to_string())),
    };
    let utf8 = |bytes: Bytes| {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| DecodeError::Malformed("topic is not UTF-8".into()))
    };
    Ok(Some(match packet {
        v5::Packet::Connect(c, will, _login) => ClientPacket::Connect(ConnectRequest {
            version: Version::V5,
            client_id: c.client_id,
            keep_alive_s: c.keep_alive,
            clean_start: c.clean_start,
            session_expiry_s: c.properties.and_then(|p| p.session_expiry_interval),
            will: match will {
                Some(w) => Some(Will {
                    topic: utf8(w.topic)?,
                    payload: w.message,
                    qos: from_v5_qos(w.qos),
                    // Will properties (delay, expiry) are not forwarded.
                    properties: None,
                }),
                None => None,
            },
        }),
        v5::Packet::Publish(p) => {
            if p.properties
                .as_ref()
                .is_some_and(|p| p.topic_alias.is_some())
            {
                // The CONNACK announced a topic alias maximum of 0.
                return Err(DecodeError::Malformed(
                    "topic aliases are not supported".into(),
                ));
            }
            ClientPacket::Publish {
                pkid: p.pkid,
                message: Message {
                    topic: utf8(p.topic)?,
                    payload: p.payload,
                    qos: from_v5_qos(p.qos),
                    properties: forwardable(p.properties),
                },
            }
        }
        v5::Packet::PubAck(ack) => ClientPacket::PubAck(ack.pkid),
        v5::Packet::Subscribe(s) => ClientPacket::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscriptionRequest {
                    filter: f.path,
                    qos: from_v5_qos(f.qos),
                    no_local: f.nolocal,
                })
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => ClientPacket::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => ClientPacket::PingReq,
        v5::Packet::Disconnect(d) => ClientPacket::Disconnect {
            publish_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
        },
        other => ClientPacket::Unexpected(format!("{other:?}")),
    }))
}

/// Encodes `packet` for a client speaking `version`. Packets MQTT 3.1.1 has no form for (a
/// server DISCONNECT) encode to nothing.
pub fn encode(
    packet: &ServerPacket<'_>,
    version: Version,
    max_packet: usize,
    out: &mut BytesMut,
) -> Result<(), String> {
    match version {
        Version::V311 => encode_v4(packet, max_packet, out),
        Version::V5 => encode_v5(packet, max_packet, out),
    }
}

fn encode_v4(
    packet: &ServerPacket<'_>,
    max_packet: usize,
    out: &mut BytesMut,
) -> Result<(), String> {
    let packet = match packet {
        ServerPacket::ConnAck(outcome) => {
            let (code, session_present) = match *outcome {
                ConnectOutcome::Accepted {
                    session_present, ..
                } => (v4::ConnectReturnCode::Success, session_present),
                ConnectOutcome::NotAuthorized => (v4::ConnectReturnCode::NotAuthorized, false),
                ConnectOutcome::BadClientId => (v4::ConnectReturnCode::BadClientId, false),
                ConnectOutcome::UnsupportedVersion => {
                    (v4::ConnectReturnCode::RefusedProtocolVersion, false)
                }
            };
            v4::Packet::ConnAck(v4::ConnAck::new(code, session_present))
        }
        ServerPacket::Publish { pkid, message } => {
            let mut publish = v4::Publish::from_bytes(
                message.topic.clone(),
                message.qos,
                message.payload.clone(),
            );
            publish.pkid = *pkid;
            v4::Packet::Publish(publish)
        }
        ServerPacket::PubAck(pkid) => v4::Packet::PubAck(v4::PubAck::new(*pkid)),
        ServerPacket::SubAck { pkid, outcomes } => v4::Packet::SubAck(v4::SubAck::new(
            *pkid,
            outcomes
                .iter()
                .map(|o| match o {
                    SubscribeOutcome::Granted(qos) => v4::SubscribeReasonCode::Success(*qos),
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        ServerPacket::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck::new(*pkid)),
        ServerPacket::PingResp => v4::Packet::PingResp,
        ServerPacket::Disconnect(_) => return Ok(()),
    };
    packet
        .write(out, max_packet)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn encode_v5(
    packet: &ServerPacket<'_>,
    max_packet: usize,
    out: &mut BytesMut,
) -> Result<(), String> {
    let packet = match packet {
        ServerPacket::ConnAck(outcome) => {
            let (code, session_present, keep_alive) = match *outcome {
                ConnectOutcome::Accepted {
                    session_present,
                    server_keep_alive_s,
                } => (
                    v5::ConnectReturnCode::Success,
                    session_present,
                    server_keep_alive_s,
                ),
                ConnectOutcome::NotAuthorized => {
                    (v5::ConnectReturnCode::NotAuthorized, false, None)
                }
                ConnectOutcome::BadClientId => {
                    (v5::ConnectReturnCode::ClientIdentifierNotValid, false, None)
                }
                ConnectOutcome::UnsupportedVersion => (
                    v5::ConnectReturnCode::UnsupportedProtocolVersion,
                    false,
                    None,
                ),
            };
            let properties =
                (code == v5::ConnectReturnCode::Success).then(|| v5::ConnAckProperties {
                    session_expiry_interval: None,
                    receive_max: None,
                    max_qos: Some(1),
                    retain_available: Some(0),
                    max_packet_size: Some(u32::try_from(max_packet).unwrap_or(u32::MAX)),
                    assigned_client_identifier: None,
                    topic_alias_max: Some(0),
                    reason_string: None,
                    user_properties: Vec::new(),
                    wildcard_subscription_available: Some(1),
                    subscription_identifiers_available: Some(0),
                    shared_subscription_available: Some(0),
                    server_keep_alive: keep_alive,
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                });
            v5::Packet::ConnAck(v5::ConnAck {
                session_present,
                code,
                properties,
            })
        }
        ServerPacket::Publish { pkid, message } => v5::Packet::Publish(v5::Publish {
            dup: false,
            qos: to_v5_qos(message.qos),
            retain: false,
            topic: Bytes::from(message.topic.clone()),
            pkid: *pkid,
            payload: message.payload.clone(),
            properties: message.properties.as_deref().cloned(),
        }),
        ServerPacket::PubAck(pkid) => v5::Packet::PubAck(v5::PubAck::new(*pkid, None)),
        ServerPacket::SubAck { pkid, outcomes } => v5::Packet::SubAck(v5::SubAck {
            pkid: *pkid,
            return_codes: outcomes
                .iter()
                .map(|o| match o {
                    SubscribeOutcome::Granted(qos) => {
                        v5::SubscribeReasonCode::Success(to_v5_qos(*qos))
                    }
                    SubscribeOutcome::NotAuthorized => v5::SubscribeReasonCode::NotAuthorized,
                    SubscribeOutcome::InvalidFilter => v5::SubscribeReasonCode::TopicFilterInvalid,
                })
                .collect(),
            properties: None,
        }),
        ServerPacket::UnsubAck { pkid, count } => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid: *pkid,
            reasons: vec![v5::UnsubAckReason::Success; *count],
            properties: None,
        }),
        ServerPacket::PingResp => v5::Packet::PingResp(v5::PingResp),
        ServerPacket::Disconnect(reason) => {
            let (code, why) = match reason {
                DisconnectReason::NotAuthorized => (
                    v5::DisconnectReasonCode::NotAuthorized,
                    "not allowed by the certificate's policy",
                ),
                DisconnectReason::SessionTakenOver => (
                    v5::DisconnectReasonCode::SessionTakenOver,
                    "another connection took over this client id",
                ),
                DisconnectReason::KeepAliveTimeout => (
                    v5::DisconnectReasonCode::KeepAliveTimeout,
                    "no packet within 1.5 times the keepalive",
                ),
                DisconnectReason::ShuttingDown => (
                    v5::DisconnectReasonCode::ServerShuttingDown,
                    "the emulator is stopping",
                ),
                DisconnectReason::ProtocolError => {
                    (v5::DisconnectReasonCode::ProtocolError, "protocol error")
                }
                DisconnectReason::PacketTooLarge => (
                    v5::DisconnectReasonCode::PacketTooLarge,
                    "payload larger than 128 KB",
                ),
                DisconnectReason::QosNotSupported => (
                    v5::DisconnectReasonCode::QoSNotSupported,
                    "QoS 2 is not supported",
                ),
            };
            // The reason string is also what makes rumqttc 0.25 encode the packet correctly:
            // without properties it miscounts the remaining length, and with an empty property
            // set it falls back to the two-byte normal-disconnection form.
            v5::Packet::Disconnect(v5::Disconnect {
                reason_code: code,
                properties: Some(v5::DisconnectProperties {
                    session_expiry_interval: None,
                    reason_string: Some(why.to_string()),
                    user_properties: Vec::new(),
                    server_reference: None,
                }),
            })
        }
    };
    packet
        .write(out, Some(u32::try_from(max_packet).unwrap_or(u32::MAX)))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_the_connect() {
        let mut v4_connect = BytesMut::new();
        v4::Packet::Connect(v4::Connect::new("desk-1"))
            .write(&mut v4_connect, 1024)
            .expect("encode");
        assert_eq!(connect_level(&v4_connect).expect("level"), Some(4));
        assert_eq!(connect_level(&v4_connect[..3]).expect("partial"), None);
        let decoded = decode(&mut v4_connect, None, 1024).expect("decode");
        assert!(matches!(decoded, Some(ClientPacket::Connect(c)) if c.version == Version::V311));

        let mut v5_connect = BytesMut::new();
        v5::Packet::Connect(
            v5::Connect {
                keep_alive: 30,
                client_id: "desk-1".into(),
                clean_start: false,
                properties: None,
            },
            None,
            None,
        )
        .write(&mut v5_connect, None)
        .expect("encode");
        let decoded = decode(&mut v5_connect, None, 1024).expect("decode");
        assert!(
            matches!(decoded, Some(ClientPacket::Connect(c)) if c.version == Version::V5 && !c.persistent())
        );
        assert!(decode(&mut BytesMut::from(&b"\x30\x02ab"[..]), None, 1024).is_err());
    }

    #[test]
    fn a_server_disconnect_keeps_its_reason_code_on_the_wire() {
        let mut out = BytesMut::new();
        encode(
            &ServerPacket::Disconnect(DisconnectReason::NotAuthorized),
            Version::V5,
            1024,
            &mut out,
        )
        .expect("encode");
        match v5::Packet::read(&mut out, None) {
            Ok(v5::Packet::Disconnect(d)) => {
                assert_eq!(d.reason_code, v5::DisconnectReasonCode::NotAuthorized)
            }
            other => panic!("decoded {other:?}"),
        }
        let mut v311 = BytesMut::new();
        encode(
            &ServerPacket::Disconnect(DisconnectReason::NotAuthorized),
            Version::V311,
            1024,
            &mut v311,
        )
        .expect("encode");
        assert!(v311.is_empty(), "MQTT 3.1.1 has no server DISCONNECT");
    }
}
