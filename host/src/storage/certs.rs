//! The device's identity in `certs/`: its X.509 certificate, private key, the CA bundle it
//! trusts for the cloud, and its thing name.
//!
//! | file | content | mode |
//! |---|---|---|
//! | `certificate.pem.crt` | the device certificate (and any intermediates), PEM | 0600 |
//! | `private.pem.key` | its private key, PEM (PKCS#8, PKCS#1 or SEC1) | 0600 |
//! | `ca.pem` | the CA bundle for the server, PEM; absent means Amazon's roots | 0600 |
//! | `thing.json` | the thing name, as a checksummed state file | 0600 |
//!
//! `certs/` itself is 0700. `thing.json` is written last, so a save that was interrupted
//! leaves no `thing.json` for a new device (it registers again) and, when replacing an
//! identity, a certificate/key pair that [`DeviceIdentity::check`] refuses on load, with an
//! error that says to register again, rather than a device that fails TLS handshakes forever.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use super::atomic::{ensure_dir, write_atomic, Visibility};
use super::state_file::{Loaded, StateFile};
use super::StorageError;

pub const CERTIFICATE_FILE: &str = "certificate.pem.crt";
pub const PRIVATE_KEY_FILE: &str = "private.pem.key";
pub const CA_BUNDLE_FILE: &str = "ca.pem";
pub const THING_FILE: &str = "thing.json";

/// What is wrong with a certificate, key or CA bundle.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("the device certificate holds no PEM certificate")]
    NoCertificate,
    #[error("the device certificate is not valid PEM: {0}")]
    CertificatePem(String),
    #[error("the device certificate cannot be parsed as X.509: {0}")]
    CertificateParse(String),
    #[error("the private key is not a PEM private key: {0}")]
    KeyPem(String),
    #[error("the private key's algorithm is not supported (RSA, ECDSA P-256/P-384 and Ed25519 are): {0}")]
    UnsupportedKey(String),
    #[error("the private key does not belong to the device certificate")]
    KeyMismatch,
    #[error("cannot compare the private key with the certificate: {0}")]
    KeyCheck(String),
    #[error("the CA bundle holds no PEM certificate")]
    EmptyCaBundle,
    #[error("the CA bundle is not valid PEM: {0}")]
    CaBundlePem(String),
    #[error("thing name {0:?} is not 1 to 128 characters of a-z, A-Z, 0-9, ':', '_' and '-'")]
    ThingName(String),
}

/// What is wrong with the stored identity.
#[derive(Debug, thiserror::Error)]
pub enum CertStoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{dir}: {missing} is missing while {THING_FILE} is present; register the device again to replace the incomplete identity")]
    Incomplete { dir: PathBuf, missing: &'static str },
    #[error("{dir}: the stored identity is unusable ({source}); register the device again to replace it")]
    Invalid {
        dir: PathBuf,
        #[source]
        source: CertError,
    },
    #[error("refusing to store an invalid identity: {0}")]
    Refused(#[source] CertError),
}

/// The device's identity towards the cloud.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// The thing name, which is also the MQTT client ID.
    pub thing_name: String,
    /// The device certificate, first in the chain, PEM.
    pub certificate_pem: String,
    /// The private key, PEM. Never logged: `Debug` shows only that it is there.
    pub private_key_pem: String,
    /// The CA bundle the server's certificate must chain to; `None` means Amazon Root CA 1 and 3.
    pub ca_bundle_pem: Option<String>,
}

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("thing_name", &self.thing_name)
            .field(
                "certificate_pem",
                &format_args!("{} bytes", self.certificate_pem.len()),
            )
            .field("private_key_pem", &format_args!("(redacted)"))
            .field(
                "ca_bundle_pem",
                &self.ca_bundle_pem.as_ref().map(|c| c.len()),
            )
            .finish()
    }
}

/// Facts about the device certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject, e.g. `CN=desk-1`.
    pub subject: String,
    /// Start and end of validity, epoch seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertificateInfo {
    /// Whole days from `now` until the certificate expires; negative once it has.
    pub fn days_until_expiry(&self, now: SystemTime) -> i64 {
        let now = epoch_seconds(now);
        (self.not_after - now).div_euclid(86_400)
    }
}

fn epoch_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

impl DeviceIdentity {
    /// The certificate chain, first the device's own certificate.
    pub fn certificate_chain(&self) -> Result<Vec<CertificateDer<'static>>, CertError> {
        parse_certificates(self.certificate_pem.as_bytes())
            .map_err(CertError::CertificatePem)
            .and_then(|chain| {
                if chain.is_empty() {
                    Err(CertError::NoCertificate)
                } else {
                    Ok(chain)
                }
            })
    }

    /// The private key.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, CertError> {
        PrivateKeyDer::from_pem_slice(self.private_key_pem.as_bytes())
            .map_err(|e| CertError::KeyPem(e.to_string()))
    }

    /// The CA bundle's certificates, when one is set.
    pub fn ca_certificates(&self) -> Result<Option<Vec<CertificateDer<'static>>>, CertError> {
        let Some(pem) = &self.ca_bundle_pem else {
            return Ok(None);
        };
        let certs = parse_certificates(pem.as_bytes()).map_err(CertError::CaBundlePem)?;
        if certs.is_empty() {
            return Err(CertError::EmptyCaBundle);
        }
        Ok(Some(certs))
    }

    /// Checks everything the TLS handshake will need: a valid thing name, a parsable
    /// certificate, a supported private key that belongs to it, and a parsable CA bundle.
    pub fn check(&self) -> Result<CertificateInfo, CertError> {
        if !valid_thing_name(&self.thing_name) {
            return Err(CertError::ThingName(self.thing_name.clone()));
        }
        let chain = self.certificate_chain()?;
        let info = certificate_info(&chain[0])?;
        let key = self.private_key()?;
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| CertError::UnsupportedKey(e.to_string()))?;
        match rustls::sign::CertifiedKey::new(chain, signing_key).keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(CertError::KeyMismatch)
            }
            Err(e) => return Err(CertError::KeyCheck(e.to_string())),
        }
        self.ca_certificates()?;
        Ok(info)
    }
}

/// AWS IoT thing names: 1..128 characters of `[a-zA-Z0-9:_-]`.
pub fn valid_thing_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// Subject and validity of a DER certificate.
pub fn certificate_info(der: &CertificateDer<'_>) -> Result<CertificateInfo, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| CertError::CertificateParse(e.to_string()))?;
    let validity = cert.validity();
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// The body of `thing.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ThingRecord {
    thing_name: String,
}

/// The `certs/` directory.
#[derive(Debug, Clone)]
pub struct CertStore {
    dir: PathBuf,
}

impl CertStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn thing_file(&self) -> StateFile<ThingRecord> {
        StateFile::new(
            self.dir.join(THING_FILE),
            "devicehub-thing",
            1,
            Visibility::OwnerOnly,
        )
    }

    /// Stores `identity` after checking it (see [`DeviceIdentity::check`]); returns the
    /// certificate's facts. A stale `ca.pem` is removed when the identity has no CA bundle.
    pub fn save(&self, identity: &DeviceIdentity) -> Result<CertificateInfo, CertStoreError> {
        let info = identity.check().map_err(CertStoreError::Refused)?;
        ensure_dir(&self.dir, Visibility::OwnerOnly)?;
        let private = Visibility::OwnerOnly;
        write_atomic(
            &self.dir.join(PRIVATE_KEY_FILE),
            identity.private_key_pem.as_bytes(),
            private,
        )?;
        write_atomic(
            &self.dir.join(CERTIFICATE_FILE),
            identity.certificate_pem.as_bytes(),
            private,
        )?;
        let ca_path = self.dir.join(CA_BUNDLE_FILE);
        match &identity.ca_bundle_pem {
            Some(ca) => write_atomic(&ca_path, ca.as_bytes(), private)?,
            None => match std::fs::remove_file(&ca_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StorageError::Write {
                        path: ca_path,
                        source,
                    }
                    .into())
                }
            },
        }
        self.thing_file().save(&ThingRecord {
            thing_name: identity.thing_name.clone(),
        })?;
        Ok(info)
    }

    /// Loads the stored identity: `None` when the device has not been registered (no
    /// `thing.json`, or a corrupt one, which is moved aside), an error when the files are
    /// incomplete or do not fit together.
    pub fn load(&self) -> Result<Option<(DeviceIdentity, CertificateInfo)>, CertStoreError> {
        let record = match self.thing_file().load()? {
            Loaded::Present(record) => record,
            Loaded::Absent | Loaded::MovedAside { .. } => return Ok(None),
        };
        let read = |name: &'static str| -> Result<Option<String>, CertStoreError> {
            let path = self.dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(StorageError::Read { path, source }.into()),
            }
        };
        let incomplete = |missing| CertStoreError::Incomplete {
            dir: self.dir.clone(),
            missing,
        };
        let identity = DeviceIdentity {
            thing_name: record.thing_name,
            certificate_pem: read(CERTIFICATE_FILE)?.ok_or_else(|| incomplete(CERTIFICATE_FILE))?,
            private_key_pem: read(PRIVATE_KEY_FILE)?.ok_or_else(|| incomplete(PRIVATE_KEY_FILE))?,
            ca_bundle_pem: read(CA_BUNDLE_FILE)?,
        };
        let info = identity.check().map_err(|source| CertStoreError::Invalid {
            dir: self.dir.clone(),
            source,
        })?;
        Ok(Some((identity, info)))
    }
}

/// How long before expiry DeviceHub starts warning about the certificate.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(name: &str, days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(days);
        let cert = params.self_signed(&key).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    fn identity(days: i64) -> DeviceIdentity {
        let (certificate_pem, private_key_pem) = issue("desk-1", days);
        let (ca, _) = issue("test-ca", 3650);
        DeviceIdentity {
            thing_name: "desk-1".into(),
            certificate_pem,
            private_key_pem,
            ca_bundle_pem: Some(ca),
        }
    }

    #[test]
    fn saves_loads_and_reports_days_to_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CertStore::new(dir.path().join("certs"));
        assert!(store.load().expect("load").is_none());
        let identity = identity(90);
        let info = store.save(&identity).expect("save");
        assert_eq!(info.subject, "CN=desk-1");
        let (loaded, loaded_info) = store.load().expect("load").expect("present");
        assert_eq!(loaded, identity);
        assert_eq!(loaded_info, info);
        // 90 days from issue, minus the part of today already gone: 89 whole days remain.
        let days = loaded_info.days_until_expiry(SystemTime::now());
        assert!((89..=90).contains(&days), "{days}");
        let later = SystemTime::now() + Duration::from_secs(100 * 86_400);
        assert!(loaded_info.days_until_expiry(later) < 0);
    }

    #[cfg(unix)]
    #[test]
    fn everything_in_certs_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CertStore::new(dir.path().join("certs"));
        store.save(&identity(90)).expect("save");
        let mode = |p: PathBuf| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(store.dir().to_path_buf()), 0o700);
        for name in [
            CERTIFICATE_FILE,
            PRIVATE_KEY_FILE,
            CA_BUNDLE_FILE,
            THING_FILE,
        ] {
            assert_eq!(mode(store.dir().join(name)), 0o600, "{name}");
        }
    }

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        let mut identity = identity(90);
        identity.private_key_pem = issue("other", 90).1;
        assert!(matches!(identity.check(), Err(CertError::KeyMismatch)));
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CertStore::new(dir.path().join("certs"));
        assert!(matches!(
            store.save(&identity),
            Err(CertStoreError::Refused(CertError::KeyMismatch))
        ));
        assert!(!store.dir().join(PRIVATE_KEY_FILE).exists());
    }

    #[test]
    fn a_mismatched_pair_on_disk_is_reported_with_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CertStore::new(dir.path().join("certs"));
        store.save(&identity(90)).expect("save");
        std::fs::write(store.dir().join(PRIVATE_KEY_FILE), issue("other", 90).1).expect("swap");
        let error = store.load().expect_err("must refuse");
        let text = error.to_string();
        assert!(text.contains("register the device again"), "{text}");
        assert!(matches!(
            error,
            CertStoreError::Invalid {
                source: CertError::KeyMismatch,
                ..
            }
        ));
    }

    #[test]
    fn a_missing_key_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CertStore::new(dir.path().join("certs"));
        store.save(&identity(90)).expect("save");
        std::fs::remove_file(store.dir().join(PRIVATE_KEY_FILE)).expect("rm");
        let error = store.load().expect_err("must refuse");
        assert!(error.to_string().contains(PRIVATE_KEY_FILE), "{error}");
    }

    #[test]
    fn without_a_ca_bundle_the_stale_one_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CertStore::new(dir.path().join("certs"));
        store.save(&identity(90)).expect("save");
        let mut without = identity(90);
        without.ca_bundle_pem = None;
        store.save(&without).expect("save");
        assert!(!store.dir().join(CA_BUNDLE_FILE).exists());
        let (loaded, _) = store.load().expect("load").expect("present");
        assert_eq!(loaded.ca_bundle_pem, None);
    }

    #[test]
    fn bad_inputs_are_named() {
        let mut bad = identity(90);
        bad.certificate_pem = "not a certificate".into();
        assert!(matches!(bad.check(), Err(CertError::NoCertificate)));
        let mut bad = identity(90);
        bad.thing_name = "desk 1".into();
        assert!(matches!(bad.check(), Err(CertError::ThingName(_))));
        let mut bad = identity(90);
        bad.private_key_pem = "nothing".into();
        assert!(matches!(bad.check(), Err(CertError::KeyPem(_))));
        let mut bad = identity(90);
        bad.ca_bundle_pem = Some(String::new());
        assert!(matches!(bad.check(), Err(CertError::EmptyCaBundle)));
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let identity = identity(90);
        let shown = format!("{identity:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
