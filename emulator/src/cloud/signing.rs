//! HMAC signatures: the shipping application's requests signed with a thing's device signature
//! secret, and the short-lived signed URLs print files are served on (like S3 presigned URLs).
//!
//! Request signature: hex HMAC-SHA256, keyed with the thing's `deviceSignature` string, over
//! `METHOD "\n" PATH "\n" TIMESTAMP "\n" hex(SHA-256(body))`, sent in the headers
//! `X-DeviceHub-Timestamp` (epoch seconds) and `X-DeviceHub-Signature`. A timestamp more than
//! [`MAX_CLOCK_SKEW_S`] away from the server's clock is refused, so a captured request cannot
//! be replayed later.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::files::{write_atomic, Visibility};

type HmacSha256 = Hmac<Sha256>;

/// How far a signed request's timestamp may be from the server's clock.
pub const MAX_CLOCK_SKEW_S: u64 = 300;
pub const TIMESTAMP_HEADER: &str = "x-devicehub-timestamp";
pub const SIGNATURE_HEADER: &str = "x-devicehub-signature";

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

fn request_message(method: &str, path: &str, timestamp: u64, body: &[u8]) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        timestamp,
        hex::encode(Sha256::digest(body))
    )
}

/// Signs a request to the shipping application's API for a thing.
pub fn sign_request(secret: &str, method: &str, path: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = mac(secret.as_bytes());
    mac.update(request_message(method, path, timestamp, body).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a request signature in constant time, and that its timestamp is recent.
pub fn verify_request(
    secret: &str,
    method: &str,
    path: &str,
    timestamp: u64,
    body: &[u8],
    signature_hex: &str,
    now: u64,
) -> bool {
    if timestamp.abs_diff(now) > MAX_CLOCK_SKEW_S {
        return false;
    }
    let Ok(signature) = hex::decode(signature_hex) else {
        return false;
    };
    let mut mac = mac(secret.as_bytes());
    mac.update(request_message(method, path, timestamp, body).as_bytes());
    mac.verify_slice(&signature).is_ok()
}

/// Signs and checks the URLs print files are downloaded from.
#[derive(Clone)]
pub struct UrlSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner")
    }
}

impl UrlSigner {
    /// Loads the signing key from `<data_dir>/pki/url-signing.key`, creating it on first use,
    /// so that URLs handed out before a restart stay valid until they expire.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join("pki").join("url-signing.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{} does not hold a 32-byte hex key", path.display()),
                        )
                    })?;
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                Ok(Self { key })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                write_atomic(&path, hex::encode(key).as_bytes(), Visibility::OwnerOnly)?;
                Ok(Self { key })
            }
            Err(e) => Err(e),
        }
    }

    /// The signature of `path` valid until `expires` (epoch seconds).
    pub fn sign(&self, path: &str, expires: u64) -> String {
        let mut mac = mac(&self.key);
        mac.update(format!("{path}\n{expires}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn verify(&self, path: &str, expires: u64, signature_hex: &str, now: u64) -> bool {
        if now >= expires {
            return false;
        }
        let Ok(signature) = hex::decode(signature_hex) else {
            return false;
        };
        let mut mac = mac(&self.key);
        mac.update(format!("{path}\n{expires}").as_bytes());
        mac.verify_slice(&signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_signatures_verify_and_reject_tampering() {
        let sig = sign_request("secret", "POST", "/things/a/print-jobs", 100, b"body");
        assert!(verify_request(
            "secret",
            "POST",
            "/things/a/print-jobs",
            100,
            b"body",
            &sig,
            120
        ));
        assert!(!verify_request(
            "secret",
            "POST",
            "/things/a/print-jobs",
            100,
            b"bodY",
            &sig,
            120
        ));
        assert!(!verify_request(
            "other",
            "POST",
            "/things/a/print-jobs",
            100,
            b"body",
            &sig,
            120
        ));
        assert!(!verify_request(
            "secret",
            "POST",
            "/things/a/print-jobs",
            100,
            b"body",
            &sig,
            100 + MAX_CLOCK_SKEW_S + 1
        ));
        assert!(!verify_request(
            "secret",
            "POST",
            "/things/a/print-jobs",
            100,
            b"body",
            "zz",
            100
        ));
    }

    #[test]
    fn signed_urls_expire_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let signer = UrlSigner::open(dir.path()).expect("create key");
        let sig = signer.sign("/files/abc", 1000);
        let reopened = UrlSigner::open(dir.path()).expect("load key");
        assert!(reopened.verify("/files/abc", 1000, &sig, 999));
        assert!(!reopened.verify("/files/abc", 1000, &sig, 1000));
        assert!(!reopened.verify("/files/abd", 1000, &sig, 999));
    }
}
