//! The Device Shadow service: classic and named shadows over AWS IoT Core's reserved MQTT topics.
//!
//! [`ShadowService`] is a synchronous engine that knows nothing of sockets. The runtime
//! subscribes to [`ShadowService::SUBSCRIPTIONS`], hands every request it receives to
//! [`ShadowService::handle`] and publishes what comes back. The HTTP API can drive it the same way
//! (a synthetic publish to [`ShadowService::request_topic`]) and read state with
//! [`ShadowService::document`].
//!
//! # Behaviour (AWS IoT Developer Guide: device-shadow-mqtt, device-shadow-document,
//! device-shadow-data-flow, device-shadow-error-messages)
//! - `PREFIX/get`, `PREFIX/update`, `PREFIX/delete` where `PREFIX` is
//!   `$aws/things/{thing}/shadow` or `$aws/things/{thing}/shadow/name/{shadow}`. Answers go to
//!   `.../accepted` or `.../rejected`; an accepted update is followed by `update/delta` (when
//!   desired and reported differ) and `update/documents`.
//! - Every accepted update increments the version. A deleted shadow keeps its version for 48
//!   hours, so a shadow created again within that time continues the count.
//! - Timestamps are epoch seconds, taken from the caller's clock so that tests control time.
//!
//! # Layout
//! - `document`: the document model and its pure operations (merge, delta, size, depth).
//! - [`state_file`]: record file names and loading with damaged files moved aside; the jobs
//!   engine uses it too. Writes go through [`crate::cloud::files::write_atomic`].
//!
//! # Throttling: what "in flight" means here
//! AWS IoT answers 429 when more than 10 requests are in flight. This engine completes each
//! request before it returns, so nothing is ever in flight in the literal sense. It counts
//! instead the requests each thing made within the current second of the caller's clock (all of
//! its shadows and operations together): a burst of more than
//! [`DEFAULT_REQUESTS_PER_THING_PER_SECOND`] requests inside the same instant is what would pile
//! up in flight against the real service, and the requests beyond that number are rejected with
//! 429. Requests refused before they reach the shadow (bad topic names, payloads that are not
//! UTF-8 or not JSON) and requests answered with 429 do not count. The limit can be changed with
//! [`ShadowService::set_requests_per_thing_per_second`].

mod document;
pub mod state_file;
#[cfg(test)]
mod tests;

use crate::cloud::throttle::PerThingThrottle;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use self::document::{compact_len, depth, metadata_of, Object, Section, ShadowDocument};
use self::state_file::{encode_file_name, load_records, QuarantinedFile};
use super::files::{write_atomic, Visibility};
use super::Outgoing;

/// The largest `desired` plus `reported`, in bytes of compact JSON (metadata excluded).
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024;
/// The deepest nesting allowed inside `desired` or `reported` (see `document::depth`).
pub const MAX_DEPTH: usize = 6;
/// The longest `clientToken`, in bytes.
pub const MAX_CLIENT_TOKEN_BYTES: usize = 64;
/// Requests one thing may make within one second before it is answered with 429.
pub const DEFAULT_REQUESTS_PER_THING_PER_SECOND: u32 = 10;
/// How long a deleted shadow's version is remembered, in seconds.
pub const VERSION_KEPT_AFTER_DELETE_S: u64 = 48 * 60 * 60;

/// What can go wrong outside the request/answer protocol: loading state, or saving it (a failed
/// save is answered with 500 and logged with this error).
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    /// The shadow state directory could not be created or listed.
    #[error("cannot load shadow state from {path}")]
    Load {
        /// The directory.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
    /// A shadow could not be written to disk.
    #[error("cannot save shadow state to {path}")]
    Save {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: io::Error,
    },
}

/// The three shadow operations a device can request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowOperation {
    /// Read the whole document.
    Get,
    /// Merge a state change.
    Update,
    /// Delete the shadow.
    Delete,
}

impl ShadowOperation {
    /// The last level of the request topic.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowOperation::Get => "get",
            ShadowOperation::Update => "update",
            ShadowOperation::Delete => "delete",
        }
    }

    fn parse(level: &str) -> Option<Self> {
        match level {
            "get" => Some(ShadowOperation::Get),
            "update" => Some(ShadowOperation::Update),
            "delete" => Some(ShadowOperation::Delete),
            _ => None,
        }
    }
}

/// Which shadow: a thing's classic shadow (`shadow_name` is `None`) or one of its named shadows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ShadowKey {
    thing_name: String,
    shadow_name: Option<String>,
}

impl ShadowKey {
    /// `$aws/things/{thing}/shadow` or `$aws/things/{thing}/shadow/name/{shadow}`.
    fn topic_prefix(&self) -> String {
        match &self.shadow_name {
            None => format!("$aws/things/{}/shadow", self.thing_name),
            Some(name) => format!("$aws/things/{}/shadow/name/{name}", self.thing_name),
        }
    }

    /// How AWS IoT names the shadow in its 404 message.
    fn display_name(&self) -> String {
        match &self.shadow_name {
            None => self.thing_name.clone(),
            Some(name) => format!("{}~{name}", self.thing_name),
        }
    }

    /// `ROOT/{thing}/classic.json` or `ROOT/{thing}/named-{shadow}.json`, names percent-encoded.
    fn file_path(&self, root: &Path) -> PathBuf {
        let file = match &self.shadow_name {
            None => "classic.json".to_owned(),
            Some(name) => format!("named-{}.json", encode_file_name(name)),
        };
        root.join(encode_file_name(&self.thing_name)).join(file)
    }
}

/// One shadow as it is kept on disk and in memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredShadow {
    /// Repeated inside the record so that loading never has to decode file names.
    thing_name: String,
    /// `None` for the classic shadow.
    shadow_name: Option<String>,
    /// The version of the last accepted update; kept after a delete.
    version: u64,
    /// When the last accepted update or the delete happened, epoch seconds.
    updated_at: u64,
    /// Set when the shadow was deleted: the record then only remembers the version.
    deleted_at: Option<u64>,
    /// The state; empty after a delete.
    document: ShadowDocument,
}

impl StoredShadow {
    fn key(&self) -> ShadowKey {
        ShadowKey {
            thing_name: self.thing_name.clone(),
            shadow_name: self.shadow_name.clone(),
        }
    }

    fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }

    /// `{"state", "metadata", "version"}` as `update/documents` shows each side.
    fn snapshot(&self) -> Value {
        json!({
            "state": self.document.state_json(),
            "metadata": self.document.metadata_json(),
            "version": self.version,
        })
    }

    /// The full document of `get/accepted`: state with the delta when there is one.
    fn full_document(&self, timestamp: u64) -> Object {
        let mut state = self.document.state_json();
        if let Some(delta) = self.document.delta() {
            state.insert("delta".into(), Value::Object(delta));
        }
        let mut out = Object::new();
        out.insert("state".into(), Value::Object(state));
        out.insert(
            "metadata".into(),
            Value::Object(self.document.metadata_json()),
        );
        out.insert("version".into(), json!(self.version));
        out.insert("timestamp".into(), json!(timestamp));
        out
    }
}

/// A rejected request: the HTTP-like code and AWS IoT's message for it.
#[derive(Debug)]
struct Rejection {
    code: u16,
    message: String,
}

impl Rejection {
    fn new(code: u16, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

/// A parsed request body: its JSON object and its (validated) client token.
struct RequestBody {
    fields: Object,
    client_token: Option<String>,
}

/// The Device Shadow engine: every shadow of every thing, persisted one file per shadow as
/// `STATE_DIR/{thing}/classic.json` and `STATE_DIR/{thing}/named-{shadow}.json`.
#[derive(Debug)]
pub struct ShadowService {
    /// The directory given to [`ShadowService::open`], which the service has to itself.
    root: PathBuf,
    /// Live shadows and the tombstones of deleted ones (which keep the version).
    shadows: BTreeMap<ShadowKey, StoredShadow>,
    /// Per-thing request counts for the 429 rule.
    throttle: PerThingThrottle,
    /// Damaged files found by [`ShadowService::open`], kept so that the runtime can report them.
    quarantined: Vec<QuarantinedFile>,
}

impl ShadowService {
    /// The topic filters that carry shadow requests.
    pub const SUBSCRIPTIONS: &'static [&'static str] = &[
        "$aws/things/+/shadow/get",
        "$aws/things/+/shadow/update",
        "$aws/things/+/shadow/delete",
        "$aws/things/+/shadow/name/+/get",
        "$aws/things/+/shadow/name/+/update",
        "$aws/things/+/shadow/name/+/delete",
    ];

    /// Opens (creating when missing) the shadow state in `state_dir`, a directory the service
    /// has to itself (the runtime gives it `DATA_DIR/shadows`). A damaged
    /// shadow file is renamed to `*.corrupt`, logged, and listed by
    /// [`ShadowService::quarantined`]; the other shadows load normally.
    pub fn open(state_dir: &Path) -> Result<Self, ShadowError> {
        let root = state_dir.to_path_buf();
        let loaded = load_records::<StoredShadow>(&root, |path, record| {
            if !is_valid_thing_name(&record.thing_name) {
                return Err(format!("invalid thing name {:?}", record.thing_name));
            }
            if let Some(name) = &record.shadow_name {
                if !is_valid_shadow_name(name) {
                    return Err(format!("invalid shadow name {name:?}"));
                }
            }
            if record.key().file_path(&root) != path {
                return Err("the record names another shadow than its file does".into());
            }
            Ok(())
        })
        .map_err(|source| ShadowError::Load {
            path: root.clone(),
            source,
        })?;
        let shadows = loaded
            .records
            .into_iter()
            .map(|(_, record)| (record.key(), record))
            .collect();
        Ok(ShadowService {
            root,
            shadows,
            throttle: PerThingThrottle::new(DEFAULT_REQUESTS_PER_THING_PER_SECOND),
            quarantined: loaded.quarantined,
        })
    }

    /// Damaged state files that [`ShadowService::open`] moved aside.
    pub fn quarantined(&self) -> &[QuarantinedFile] {
        &self.quarantined
    }

    /// Changes how many requests one thing may make within one second before getting 429.
    pub fn set_requests_per_thing_per_second(&mut self, limit: u32) {
        self.throttle.set_limit(limit);
    }

    /// The request topic for an operation on a classic (`shadow_name` `None`) or named shadow.
    pub fn request_topic(
        thing_name: &str,
        shadow_name: Option<&str>,
        operation: ShadowOperation,
    ) -> String {
        let key = ShadowKey {
            thing_name: thing_name.to_owned(),
            shadow_name: shadow_name.map(str::to_owned),
        };
        format!("{}/{}", key.topic_prefix(), operation.as_str())
    }

    /// The current document of a shadow as `get/accepted` shows it (`state` with `delta` when
    /// there is one, `metadata`, `version`, and `timestamp` of the last change), or `None` when
    /// the shadow does not exist.
    pub fn document(&self, thing_name: &str, shadow_name: Option<&str>) -> Option<Value> {
        let key = ShadowKey {
            thing_name: thing_name.to_owned(),
            shadow_name: shadow_name.map(str::to_owned),
        };
        self.shadows
            .get(&key)
            .filter(|shadow| shadow.is_live())
            .map(|shadow| Value::Object(shadow.full_document(shadow.updated_at)))
    }

    /// The names of a thing's existing named shadows, sorted.
    pub fn named_shadows(&self, thing_name: &str) -> Vec<String> {
        self.shadows
            .values()
            .filter(|shadow| shadow.thing_name == thing_name && shadow.is_live())
            .filter_map(|shadow| shadow.shadow_name.clone())
            .collect()
    }

    /// Handles one request published by a device; returns what to publish in answer. Topics
    /// that are not shadow requests give nothing back.
    pub fn handle(&mut self, topic: &str, payload: &[u8], now_epoch_s: u64) -> Vec<Outgoing> {
        let Some((key, operation)) = parse_request_topic(topic) else {
            return Vec::new();
        };
        let rejected_topic = format!("{topic}/rejected");
        let reject = |rejection: Rejection, client_token: Option<&str>| {
            vec![rejection_message(
                &rejected_topic,
                &rejection,
                client_token,
                now_epoch_s,
            )]
        };
        if !is_valid_thing_name(&key.thing_name) {
            return reject(Rejection::new(400, "Invalid thing name"), None);
        }
        if let Some(name) = &key.shadow_name {
            if !is_valid_shadow_name(name) {
                return reject(Rejection::new(400, "Invalid shadow name"), None);
            }
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            return reject(
                Rejection::new(
                    415,
                    "Unsupported documented encoding; supported encoding is UTF-8",
                ),
                None,
            );
        };
        let body = match parse_body(text, operation != ShadowOperation::Update) {
            Ok(body) => body,
            Err(rejection) => return reject(rejection, None),
        };
        let client_token = body.client_token.clone();
        if !self.throttle.admit(&key.thing_name, now_epoch_s) {
            return reject(
                Rejection::new(429, "Too Many Requests"),
                client_token.as_deref(),
            );
        }
        let result = match operation {
            ShadowOperation::Get => self.get(&key, &body, now_epoch_s),
            ShadowOperation::Update => self.update(&key, &body, now_epoch_s),
            ShadowOperation::Delete => self.delete(&key, &body, now_epoch_s),
        };
        result.unwrap_or_else(|rejection| reject(rejection, client_token.as_deref()))
    }

    fn live(&self, key: &ShadowKey) -> Option<&StoredShadow> {
        self.shadows.get(key).filter(|shadow| shadow.is_live())
    }

    fn get(
        &self,
        key: &ShadowKey,
        body: &RequestBody,
        now_epoch_s: u64,
    ) -> Result<Vec<Outgoing>, Rejection> {
        let shadow = self.live(key).ok_or_else(|| not_found(key))?;
        let mut answer = shadow.full_document(now_epoch_s);
        add_client_token(&mut answer, body.client_token.as_deref());
        Ok(vec![outgoing(
            format!("{}/get/accepted", key.topic_prefix()),
            answer,
        )])
    }

    fn delete(
        &mut self,
        key: &ShadowKey,
        body: &RequestBody,
        now_epoch_s: u64,
    ) -> Result<Vec<Outgoing>, Rejection> {
        let shadow = self.live(key).ok_or_else(|| not_found(key))?;
        let tombstone = StoredShadow {
            thing_name: shadow.thing_name.clone(),
            shadow_name: shadow.shadow_name.clone(),
            version: shadow.version,
            updated_at: now_epoch_s,
            deleted_at: Some(now_epoch_s),
            document: ShadowDocument::default(),
        };
        self.store(tombstone.clone())?;
        let mut answer = Object::new();
        answer.insert("version".into(), json!(tombstone.version));
        answer.insert("timestamp".into(), json!(now_epoch_s));
        add_client_token(&mut answer, body.client_token.as_deref());
        Ok(vec![outgoing(
            format!("{}/delete/accepted", key.topic_prefix()),
            answer,
        )])
    }

    fn update(
        &mut self,
        key: &ShadowKey,
        body: &RequestBody,
        now_epoch_s: u64,
    ) -> Result<Vec<Outgoing>, Rejection> {
        let request = UpdateRequest::parse(&body.fields)?;
        let existing = self.shadows.get(key);
        let previous = existing.filter(|shadow| shadow.is_live());
        // A tombstone younger than 48 hours carries its version over to the new shadow.
        let base_version = match existing {
            Some(shadow) if shadow.is_live() => shadow.version,
            Some(shadow) => match shadow.deleted_at {
                Some(deleted_at)
                    if now_epoch_s.saturating_sub(deleted_at) <= VERSION_KEPT_AFTER_DELETE_S =>
                {
                    shadow.version
                }
                _ => 0,
            },
            None => 0,
        };
        if let Some(expected) = request.version {
            if expected != base_version {
                return Err(Rejection::new(409, "Version conflict"));
            }
        }
        let mut document = previous
            .map(|shadow| shadow.document.clone())
            .unwrap_or_default();
        for (section, patch) in &request.sections {
            document.apply(*section, patch, now_epoch_s);
        }
        if document.state_size() > MAX_DOCUMENT_BYTES {
            return Err(Rejection::new(
                413,
                "The payload exceeds the maximum size allowed",
            ));
        }
        let previous_snapshot = previous.map(StoredShadow::snapshot);
        let updated = StoredShadow {
            thing_name: key.thing_name.clone(),
            shadow_name: key.shadow_name.clone(),
            version: base_version + 1,
            updated_at: now_epoch_s,
            deleted_at: None,
            document,
        };
        self.store(updated.clone())?;

        let prefix = key.topic_prefix();
        let token = body.client_token.as_deref();
        let mut messages = Vec::with_capacity(3);

        let mut metadata = Object::new();
        for (section, patch) in &request.sections {
            metadata.insert(section.key().into(), metadata_of(patch, now_epoch_s));
        }
        let mut accepted = Object::new();
        accepted.insert("state".into(), Value::Object(request.state.clone()));
        accepted.insert("metadata".into(), Value::Object(metadata));
        accepted.insert("version".into(), json!(updated.version));
        accepted.insert("timestamp".into(), json!(now_epoch_s));
        add_client_token(&mut accepted, token);
        messages.push(outgoing(format!("{prefix}/update/accepted"), accepted));

        if let Some(delta) = updated.document.delta() {
            let mut message = Object::new();
            message.insert("state".into(), Value::Object(delta.clone()));
            message.insert(
                "metadata".into(),
                Value::Object(updated.document.delta_metadata(&delta)),
            );
            message.insert("version".into(), json!(updated.version));
            message.insert("timestamp".into(), json!(now_epoch_s));
            add_client_token(&mut message, token);
            messages.push(outgoing(format!("{prefix}/update/delta"), message));
        }

        let mut documents = Object::new();
        if let Some(previous) = previous_snapshot {
            documents.insert("previous".into(), previous);
        }
        documents.insert("current".into(), updated.snapshot());
        documents.insert("timestamp".into(), json!(now_epoch_s));
        add_client_token(&mut documents, token);
        messages.push(outgoing(format!("{prefix}/update/documents"), documents));
        Ok(messages)
    }

    /// Writes a shadow record to disk, then takes it into memory. When the write fails the
    /// memory keeps the previous state, so that what devices see never runs ahead of the disk.
    fn store(&mut self, record: StoredShadow) -> Result<(), Rejection> {
        let key = record.key();
        let path = key.file_path(&self.root);
        let bytes = serde_json::to_vec(&record).map_err(|error| {
            tracing::error!(%error, "cannot serialise a shadow record");
            Rejection::new(500, "Internal service failure")
        })?;
        if let Err(source) = write_atomic(&path, &bytes, Visibility::Public) {
            let error = ShadowError::Save { path, source };
            tracing::error!(error = %error, cause = %error_chain(&error), "shadow not saved");
            return Err(Rejection::new(500, "Internal service failure"));
        }
        self.shadows.insert(key, record);
        Ok(())
    }
}

/// A validated update request.
struct UpdateRequest {
    /// The `state` node exactly as sent, echoed in `update/accepted`.
    state: Object,
    /// The sections to apply, in the order desired then reported; each an object or `null`.
    sections: Vec<(Section, Value)>,
    /// The version the client expects the shadow to have.
    version: Option<u64>,
}

impl UpdateRequest {
    fn parse(fields: &Object) -> Result<Self, Rejection> {
        let state = match fields.get("state") {
            None => return Err(Rejection::new(400, "Missing required node: state")),
            Some(Value::Object(state)) => state.clone(),
            Some(_) => return Err(Rejection::new(400, "State node must be an object")),
        };
        if state
            .keys()
            .any(|key| key != "desired" && key != "reported")
        {
            return Err(Rejection::new(400, "State contains an invalid node"));
        }
        let mut sections = Vec::new();
        for section in [Section::Desired, Section::Reported] {
            let Some(patch) = state.get(section.key()) else {
                continue;
            };
            if !(patch.is_object() || patch.is_null()) {
                let message = match section {
                    Section::Desired => "Desired node must be an object",
                    Section::Reported => "Reported node must be an object",
                };
                return Err(Rejection::new(400, message));
            }
            if depth(patch) > MAX_DEPTH {
                return Err(Rejection::new(
                    400,
                    "JSON contains too many levels of nesting; maximum is 6",
                ));
            }
            sections.push((section, patch.clone()));
        }
        let version = match fields.get("version") {
            None => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .ok_or_else(|| Rejection::new(400, "Invalid version"))?,
            ),
        };
        if compact_len(&Value::Object(state.clone())) > MAX_DOCUMENT_BYTES {
            return Err(Rejection::new(
                413,
                "The payload exceeds the maximum size allowed",
            ));
        }
        Ok(UpdateRequest {
            state,
            sections,
            version,
        })
    }
}

/// Splits `$aws/things/{thing}/shadow[/name/{shadow}]/{get|update|delete}`.
fn parse_request_topic(topic: &str) -> Option<(ShadowKey, ShadowOperation)> {
    let levels: Vec<&str> = topic.split('/').collect();
    match levels.as_slice() {
        ["$aws", "things", thing, "shadow", operation] => Some((
            ShadowKey {
                thing_name: (*thing).to_owned(),
                shadow_name: None,
            },
            ShadowOperation::parse(operation)?,
        )),
        ["$aws", "things", thing, "shadow", "name", shadow, operation] => Some((
            ShadowKey {
                thing_name: (*thing).to_owned(),
                shadow_name: Some((*shadow).to_owned()),
            },
            ShadowOperation::parse(operation)?,
        )),
        _ => None,
    }
}

/// Parses a request body. `get` and `delete` may have an empty body; `update` may not.
fn parse_body(text: &str, empty_allowed: bool) -> Result<RequestBody, Rejection> {
    if text.trim().is_empty() {
        if empty_allowed {
            return Ok(RequestBody {
                fields: Object::new(),
                client_token: None,
            });
        }
        return Err(Rejection::new(400, "Invalid JSON"));
    }
    let fields = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => fields,
        _ => return Err(Rejection::new(400, "Invalid JSON")),
    };
    let client_token = match fields.get("clientToken") {
        None => None,
        Some(Value::String(token)) if token.len() <= MAX_CLIENT_TOKEN_BYTES => Some(token.clone()),
        Some(_) => return Err(Rejection::new(400, "Invalid clientToken")),
    };
    Ok(RequestBody {
        fields,
        client_token,
    })
}

/// Thing names: 1 to 128 of `[a-zA-Z0-9:_-]`.
pub fn is_valid_thing_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

/// Shadow names: 1 to 64 of `[$a-zA-Z0-9:_-]`.
pub fn is_valid_shadow_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'$' | b':' | b'_' | b'-'))
}

fn not_found(key: &ShadowKey) -> Rejection {
    Rejection::new(
        404,
        format!("No shadow exists with name: '{}'", key.display_name()),
    )
}

fn add_client_token(message: &mut Object, client_token: Option<&str>) {
    if let Some(token) = client_token {
        message.insert("clientToken".into(), json!(token));
    }
}

fn rejection_message(
    topic: &str,
    rejection: &Rejection,
    client_token: Option<&str>,
    now_epoch_s: u64,
) -> Outgoing {
    let mut body = Object::new();
    body.insert("code".into(), json!(rejection.code));
    body.insert("message".into(), json!(rejection.message));
    body.insert("timestamp".into(), json!(now_epoch_s));
    add_client_token(&mut body, client_token);
    outgoing(topic.to_owned(), body)
}

fn outgoing(topic: String, body: Object) -> Outgoing {
    Outgoing {
        topic,
        payload: serde_json::to_vec(&Value::Object(body)).expect("a JSON object always serialises"),
    }
}

/// The whole `source()` chain of an error on one line, for logs.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
