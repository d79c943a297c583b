//! The thing registry: things, the certificates the emulator issued and what each one may do,
//! and the activation codes that gate fleet provisioning. Persisted as `<data-dir>/things.json`
//! (owner-only, written atomically) because it holds each thing's device signature secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::files::{write_atomic, Visibility};

/// Thing names follow AWS IoT Core's rule: 1..128 characters of `[a-zA-Z0-9:_-]`.
pub fn valid_thing_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

/// What failed in the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid registry: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("thing name {0:?} is not 1..128 characters of [a-zA-Z0-9:_-]")]
    InvalidThingName(String),
    #[error("thing {0} already exists")]
    ThingExists(String),
    #[error("no thing named {0}")]
    NoSuchThing(String),
}

/// A registered thing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Thing {
    pub thing_name: String,
    /// The certificate the thing was registered with; its connections are tied to this name.
    pub certificate_id: String,
    /// Secret shared with the device at registration; the shipping application signs the
    /// requests it makes for this thing with it (HMAC-SHA256).
    pub device_signature: String,
    /// Attributes set by the provisioning template (e.g. `SerialNumber`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub created_at: u64,
}

/// What a certificate the emulator issued is for; the broker authorizes by it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "role", rename_all = "camelCase")]
pub enum CertificateRole {
    /// Issued by fleet provisioning and not yet registered: it cannot connect
    /// (AWS's `PENDING_ACTIVATION`).
    Pending,
    /// A claim certificate: may only use the fleet provisioning topics.
    Claim,
    /// A thing's certificate: may only use that thing's topics, with the thing name as client id.
    #[serde(rename_all = "camelCase")]
    Thing { thing_name: String },
    /// The emulator's own cloud services: may use every topic.
    Service,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRecord {
    #[serde(flatten)]
    pub role: CertificateRole,
    pub created_at: u64,
}

/// A one-time code the shipping application hands to a customer to activate a device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ActivationCode {
    pub code: String,
    pub created_at: u64,
    pub expires_at: u64,
    /// The thing that consumed the code; a used code is refused afterwards.
    pub used_by: Option<String>,
}

/// Why an activation code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationRefusal {
    Unknown,
    Used,
    Expired,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryState {
    #[serde(default)]
    things: BTreeMap<String, Thing>,
    #[serde(default)]
    certificates: BTreeMap<String, CertificateRecord>,
    #[serde(default)]
    activation_codes: BTreeMap<String, ActivationCode>,
}

/// The registry, loaded in memory and saved after every change.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    state: RegistryState,
}

impl Registry {
    /// Opens `<data_dir>/things.json`, starting empty when it does not exist yet.
    pub fn open(data_dir: &Path) -> Result<Self, RegistryError> {
        let path = data_dir.join("things.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| RegistryError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistryState::default(),
            Err(source) => return Err(RegistryError::Read { path, source }),
        };
        Ok(Self { path, state })
    }

    /// Reads a registry without taking part in writing it (the CLI, next to a running server).
    pub fn read_only(data_dir: &Path) -> Result<Self, RegistryError> {
        Self::open(data_dir)
    }

    fn save(&self) -> Result<(), RegistryError> {
        let bytes = serde_json::to_vec_pretty(&self.state)
            .expect("the registry is plain data and always serializes");
        write_atomic(&self.path, &bytes, Visibility::OwnerOnly).map_err(|source| {
            RegistryError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }

    pub fn certificate(&self, certificate_id: &str) -> Option<&CertificateRecord> {
        self.state.certificates.get(certificate_id)
    }

    /// Records what a certificate is for (replacing any earlier role).
    pub fn set_certificate_role(
        &mut self,
        certificate_id: &str,
        role: CertificateRole,
        now: u64,
    ) -> Result<(), RegistryError> {
        let created_at = self
            .state
            .certificates
            .get(certificate_id)
            .map_or(now, |c| c.created_at);
        if self.state.certificates.get(certificate_id).map(|c| &c.role) == Some(&role) {
            return Ok(());
        }
        self.state.certificates.insert(
            certificate_id.to_string(),
            CertificateRecord { role, created_at },
        );
        self.save()
    }

    pub fn thing(&self, name: &str) -> Option<&Thing> {
        self.state.things.get(name)
    }

    pub fn things(&self) -> impl Iterator<Item = &Thing> {
        self.state.things.values()
    }

    /// Registers a thing bound to `certificate_id`, generating its device signature secret.
    pub fn create_thing(
        &mut self,
        thing_name: &str,
        certificate_id: &str,
        attributes: BTreeMap<String, String>,
        now: u64,
    ) -> Result<Thing, RegistryError> {
        if !valid_thing_name(thing_name) {
            return Err(RegistryError::InvalidThingName(thing_name.to_string()));
        }
        if self.state.things.contains_key(thing_name) {
            return Err(RegistryError::ThingExists(thing_name.to_string()));
        }
        let secret: [u8; 32] = rand::random();
        let thing = Thing {
            thing_name: thing_name.to_string(),
            certificate_id: certificate_id.to_string(),
            device_signature: hex::encode(secret),
            attributes,
            created_at: now,
        };
        self.state
            .things
            .insert(thing_name.to_string(), thing.clone());
        self.state.certificates.insert(
            certificate_id.to_string(),
            CertificateRecord {
                role: CertificateRole::Thing {
                    thing_name: thing_name.to_string(),
                },
                created_at: now,
            },
        );
        self.save()?;
        Ok(thing)
    }

    /// Registers a thing the way a provisioning template does: a new thing is created; an
    /// existing one (a device provisioned again after a reset) is bound to the new certificate,
    /// its attributes merged, and its previous certificate can no longer connect.
    pub fn register_thing(
        &mut self,
        thing_name: &str,
        certificate_id: &str,
        attributes: BTreeMap<String, String>,
        now: u64,
    ) -> Result<Thing, RegistryError> {
        let Some(existing) = self.state.things.get_mut(thing_name) else {
            return self.create_thing(thing_name, certificate_id, attributes, now);
        };
        let previous = std::mem::replace(&mut existing.certificate_id, certificate_id.to_string());
        existing.attributes.extend(attributes);
        let thing = existing.clone();
        if previous != certificate_id {
            if let Some(record) = self.state.certificates.get_mut(&previous) {
                record.role = CertificateRole::Pending;
            }
        }
        self.state.certificates.insert(
            certificate_id.to_string(),
            CertificateRecord {
                role: CertificateRole::Thing {
                    thing_name: thing_name.to_string(),
                },
                created_at: now,
            },
        );
        self.save()?;
        Ok(thing)
    }

    /// Creates a new activation code valid for `ttl_s` seconds.
    pub fn create_activation_code(
        &mut self,
        now: u64,
        ttl_s: u64,
    ) -> Result<ActivationCode, RegistryError> {
        // Eight characters from an alphabet without look-alikes (0/O, 1/I/L), easy to type.
        const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
        let code: String = loop {
            let candidate: String = (0..8)
                .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
                .collect();
            if !self.state.activation_codes.contains_key(&candidate) {
                break candidate;
            }
        };
        let entry = ActivationCode {
            code: code.clone(),
            created_at: now,
            expires_at: now.saturating_add(ttl_s),
            used_by: None,
        };
        self.state.activation_codes.insert(code, entry.clone());
        self.save()?;
        Ok(entry)
    }

    /// Checks an activation code the way a pre-provisioning hook would.
    pub fn check_activation_code(&self, code: &str, now: u64) -> Result<(), ActivationRefusal> {
        match self.state.activation_codes.get(code) {
            None => Err(ActivationRefusal::Unknown),
            Some(c) if c.used_by.is_some() => Err(ActivationRefusal::Used),
            Some(c) if now >= c.expires_at => Err(ActivationRefusal::Expired),
            Some(_) => Ok(()),
        }
    }

    /// Marks a code as used by `thing_name`.
    pub fn consume_activation_code(
        &mut self,
        code: &str,
        thing_name: &str,
    ) -> Result<(), RegistryError> {
        if let Some(c) = self.state.activation_codes.get_mut(code) {
            c.used_by = Some(thing_name.to_string());
        }
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn things_and_codes_survive_reopening() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut registry = Registry::open(dir.path()).expect("open");
        let thing = registry
            .create_thing("desk-1", "abc", BTreeMap::new(), 10)
            .expect("create");
        let code = registry.create_activation_code(10, 60).expect("code");
        let reopened = Registry::open(dir.path()).expect("reopen");
        assert_eq!(reopened.thing("desk-1"), Some(&thing));
        assert_eq!(reopened.check_activation_code(&code.code, 20), Ok(()));
        assert_eq!(
            reopened.certificate("abc").map(|c| c.role.clone()),
            Some(CertificateRole::Thing {
                thing_name: "desk-1".into()
            })
        );
    }

    #[test]
    fn activation_codes_are_refused_when_unknown_used_or_expired() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut registry = Registry::open(dir.path()).expect("open");
        let code = registry.create_activation_code(100, 60).expect("code").code;
        assert_eq!(
            registry.check_activation_code("NOPE", 100),
            Err(ActivationRefusal::Unknown)
        );
        assert_eq!(
            registry.check_activation_code(&code, 160),
            Err(ActivationRefusal::Expired)
        );
        registry
            .consume_activation_code(&code, "desk-1")
            .expect("consume");
        assert_eq!(
            registry.check_activation_code(&code, 110),
            Err(ActivationRefusal::Used)
        );
    }

    #[test]
    fn thing_names_follow_aws_rules() {
        assert!(valid_thing_name("desk-1:a_b"));
        assert!(!valid_thing_name(""));
        assert!(!valid_thing_name("a/b"));
        assert!(!valid_thing_name(&"x".repeat(129)));
    }
}
