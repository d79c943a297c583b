//! The Device Shadow document: the `desired` and `reported` sections with their per-leaf
//! metadata, and the pure operations on them that AWS IoT defines: merging an update (where
//! `null` deletes), computing the delta, and measuring size and nesting depth.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// A JSON object, the shape of every section and of every metadata tree.
pub(crate) type Object = Map<String, Value>;

/// One of the two writable sections of a shadow's `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Desired,
    Reported,
}

impl Section {
    /// The section's key in `state` and `metadata`.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Section::Desired => "desired",
            Section::Reported => "reported",
        }
    }
}

/// The stored state of one shadow. Metadata mirrors the shape of its section: every leaf value
/// has `{"timestamp": EPOCH_S}` in the same place, and an array has an array of such entries, one
/// per element, as AWS IoT reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowDocument {
    /// What applications want the device to be; `None` when the section does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) desired: Option<Object>,
    /// What the device says it is; `None` when the section does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reported: Option<Object>,
    /// When each leaf of `desired` was last written.
    #[serde(default)]
    pub(crate) desired_metadata: Object,
    /// When each leaf of `reported` was last written.
    #[serde(default)]
    pub(crate) reported_metadata: Object,
}

impl ShadowDocument {
    /// Applies one section of an update request. `patch` is `null` (delete the whole section) or
    /// an object merged key by key, in which `null` deletes a key. A section left empty is
    /// removed, as AWS IoT removes a section whose properties have all been deleted.
    pub(crate) fn apply(&mut self, section: Section, patch: &Value, now_epoch_s: u64) {
        let (values, metadata) = match section {
            Section::Desired => (&mut self.desired, &mut self.desired_metadata),
            Section::Reported => (&mut self.reported, &mut self.reported_metadata),
        };
        match patch {
            Value::Object(patch) => {
                let target = values.get_or_insert_with(Object::new);
                merge_object(target, metadata, patch, now_epoch_s);
                if target.is_empty() {
                    *values = None;
                    metadata.clear();
                }
            }
            // Validation admits only an object or `null` here; anything else deletes the
            // section, which is what `null` asks for.
            _ => {
                *values = None;
                metadata.clear();
            }
        }
    }

    /// `{"desired"?, "reported"?}`: the `state` node of `get/accepted` (without the delta) and of
    /// `update/documents`.
    pub(crate) fn state_json(&self) -> Object {
        let mut state = Object::new();
        if let Some(desired) = &self.desired {
            state.insert("desired".into(), Value::Object(desired.clone()));
        }
        if let Some(reported) = &self.reported {
            state.insert("reported".into(), Value::Object(reported.clone()));
        }
        state
    }

    /// `{"desired"?, "reported"?}` of metadata, present for the sections that exist.
    pub(crate) fn metadata_json(&self) -> Object {
        let mut metadata = Object::new();
        if self.desired.is_some() {
            metadata.insert(
                "desired".into(),
                Value::Object(self.desired_metadata.clone()),
            );
        }
        if self.reported.is_some() {
            metadata.insert(
                "reported".into(),
                Value::Object(self.reported_metadata.clone()),
            );
        }
        metadata
    }

    /// The fields of `desired` that `reported` does not match, or `None` when they agree.
    pub(crate) fn delta(&self) -> Option<Object> {
        let desired = self.desired.as_ref()?;
        let delta = delta(desired, self.reported.as_ref());
        (!delta.is_empty()).then_some(delta)
    }

    /// The metadata of the delta: the `desired` metadata of exactly the fields in `delta`.
    pub(crate) fn delta_metadata(&self, delta: &Object) -> Object {
        metadata_for(delta, &self.desired_metadata)
    }

    /// Bytes of `desired` plus `reported` as compact JSON: the figure AWS IoT holds to its 8 KB
    /// document limit. Metadata does not count.
    pub(crate) fn state_size(&self) -> usize {
        compact_len(&Value::Object(self.state_json()))
    }
}

/// Length of a value serialised as compact JSON.
pub(crate) fn compact_len(value: &Value) -> usize {
    serde_json::to_vec(value)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX)
}

/// Nesting depth of a value: a scalar is 0, an object or array is one more than its deepest
/// member. A section `{"a": 1}` is 1 deep and `{"a": {"b": 1}}` is 2 deep.
pub(crate) fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The metadata AWS IoT records for a value written at `now_epoch_s`: objects are walked to
/// their leaves, arrays give one entry per element, every leaf (including a `null` that deleted
/// something) gets `{"timestamp": now}`.
pub(crate) fn metadata_of(value: &Value, now_epoch_s: u64) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), metadata_of(value, now_epoch_s)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| metadata_of(item, now_epoch_s))
                .collect(),
        ),
        _ => json!({ "timestamp": now_epoch_s }),
    }
}

/// Merges `patch` into `target` and its `metadata`: `null` deletes, objects merge recursively,
/// everything else (scalars and whole arrays) replaces. Objects emptied by the merge are removed
/// so that no empty husk stays behind after its last property was deleted.
fn merge_object(target: &mut Object, metadata: &mut Object, patch: &Object, now_epoch_s: u64) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
                metadata.remove(key);
            }
            Value::Object(sub_patch) => {
                if !matches!(target.get(key), Some(Value::Object(_))) {
                    target.insert(key.clone(), Value::Object(Object::new()));
                    metadata.insert(key.clone(), Value::Object(Object::new()));
                }
                if !matches!(metadata.get(key), Some(Value::Object(_))) {
                    metadata.insert(key.clone(), Value::Object(Object::new()));
                }
                let now_empty = match (target.get_mut(key), metadata.get_mut(key)) {
                    (Some(Value::Object(sub_target)), Some(Value::Object(sub_metadata))) => {
                        merge_object(sub_target, sub_metadata, sub_patch, now_epoch_s);
                        sub_target.is_empty()
                    }
                    // Both entries were made objects just above.
                    _ => false,
                };
                if now_empty {
                    target.remove(key);
                    metadata.remove(key);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
                metadata.insert(key.clone(), metadata_of(other, now_epoch_s));
            }
        }
    }
}

/// Every field of `desired` that `reported` lacks or holds with another value. Nested objects
/// keep the path down to the differing leaves; arrays and scalars are compared whole; fields
/// only in `reported` never appear.
fn delta(desired: &Object, reported: Option<&Object>) -> Object {
    let mut out = Object::new();
    for (key, wanted) in desired {
        let actual = reported.and_then(|reported| reported.get(key));
        match (wanted, actual) {
            (Value::Object(wanted), Some(Value::Object(actual))) => {
                let nested = delta(wanted, Some(actual));
                if !nested.is_empty() {
                    out.insert(key.clone(), Value::Object(nested));
                }
            }
            (wanted, Some(actual)) if wanted == actual => {}
            (wanted, _) => {
                out.insert(key.clone(), wanted.clone());
            }
        }
    }
    out
}

/// Picks from `metadata` the entries for exactly the fields of `values`.
fn metadata_for(values: &Object, metadata: &Object) -> Object {
    let mut out = Object::new();
    for (key, value) in values {
        let Some(entry) = metadata.get(key) else {
            continue;
        };
        match (value, entry) {
            (Value::Object(values), Value::Object(entries)) => {
                out.insert(key.clone(), Value::Object(metadata_for(values, entries)));
            }
            _ => {
                out.insert(key.clone(), entry.clone());
            }
        }
    }
    out
}
