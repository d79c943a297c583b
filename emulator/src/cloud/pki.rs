//! The emulator's certificate authority: the CA and server certificate it creates on first
//! start, and the client certificates it issues to things, claims and its own cloud services.
//!
//! Every file lives in `<data-dir>/pki/`; private keys are written owner-only (0600). A
//! certificate's id is the lower-case hex SHA-256 of its DER encoding, as in AWS IoT Core.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::files::{write_atomic, Visibility};

/// Common name of the certificate the emulator's own cloud services connect with.
pub const CLOUD_SERVICE_NAME: &str = "devicehub-emulator-cloud";

/// How long issued client certificates stay valid.
const CLIENT_VALIDITY_DAYS: i64 = 365 * 10;
/// How long the CA and the server certificate stay valid.
const CA_VALIDITY_DAYS: i64 = 365 * 20;

/// What failed while creating, loading or issuing certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid PEM file: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("the certificate signing request is not valid: {0}")]
    InvalidCsr(rcgen::Error),
    #[error("cannot generate or sign a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A freshly issued client certificate.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// Hex SHA-256 of the DER certificate, the id AWS IoT Core also uses.
    pub certificate_id: String,
    pub certificate_pem: String,
}

/// A client certificate together with the private key the emulator generated for it.
#[derive(Debug, Clone)]
pub struct IssuedKeyPair {
    pub certificate: IssuedCertificate,
    pub private_key_pem: String,
}

/// The emulator's CA, its TLS server identity, and the identity of its own cloud services.
pub struct CertificateAuthority {
    dir: PathBuf,
    ca_certificate_pem: String,
    issuer: Issuer<'static, KeyPair>,
    server_certificate_pem: String,
    server_key_pem: String,
    cloud_client: IssuedKeyPair,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are left out on purpose: debug output ends up in logs.
        f.debug_struct("CertificateAuthority")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Opens the CA in `<data_dir>/pki`, creating the CA, the server certificate (SAN
    /// `localhost`, `127.0.0.1`) and the cloud services' client certificate on first use.
    pub fn open(data_dir: &Path) -> Result<Self, PkiError> {
        let dir = data_dir.join("pki");
        let ca_cert_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        let (ca_certificate_pem, ca_key) = if ca_cert_path.exists() && ca_key_path.exists() {
            let key_pem = read(&ca_key_path)?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadPem {
                path: ca_key_path.clone(),
                reason: e.to_string(),
            })?;
            (read(&ca_cert_path)?, key)
        } else {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = name("DeviceHub Emulator CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            set_validity(&mut params, CA_VALIDITY_DAYS);
            let cert = params.self_signed(&key)?;
            // The key is written first: a CA certificate without its key would be useless.
            write(
                &ca_key_path,
                key.serialize_pem().as_bytes(),
                Visibility::OwnerOnly,
            )?;
            write(&ca_cert_path, cert.pem().as_bytes(), Visibility::Public)?;
            (cert.pem(), key)
        };
        let issuer = Issuer::from_ca_cert_pem(&ca_certificate_pem, ca_key).map_err(|e| {
            PkiError::BadPem {
                path: ca_cert_path.clone(),
                reason: e.to_string(),
            }
        })?;

        let mut ca = Self {
            dir: dir.clone(),
            ca_certificate_pem,
            issuer,
            server_certificate_pem: String::new(),
            server_key_pem: String::new(),
            cloud_client: IssuedKeyPair {
                certificate: IssuedCertificate {
                    certificate_id: String::new(),
                    certificate_pem: String::new(),
                },
                private_key_pem: String::new(),
            },
        };

        let server_cert_path = dir.join("server.crt");
        let server_key_path = dir.join("server.key");
        if server_cert_path.exists() && server_key_path.exists() {
            ca.server_certificate_pem = read(&server_cert_path)?;
            ca.server_key_pem = read(&server_key_path)?;
        } else {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
            params
                .subject_alt_names
                .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
            params.distinguished_name = name("localhost");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            set_validity(&mut params, CA_VALIDITY_DAYS);
            params.serial_number = Some(random_serial());
            let cert = params.signed_by(&key, &ca.issuer)?;
            write(
                &server_key_path,
                key.serialize_pem().as_bytes(),
                Visibility::OwnerOnly,
            )?;
            write(&server_cert_path, cert.pem().as_bytes(), Visibility::Public)?;
            ca.server_certificate_pem = cert.pem();
            ca.server_key_pem = key.serialize_pem();
        }

        let cloud_cert_path = dir.join("cloud.crt");
        let cloud_key_path = dir.join("cloud.key");
        ca.cloud_client = if cloud_cert_path.exists() && cloud_key_path.exists() {
            let certificate_pem = read(&cloud_cert_path)?;
            IssuedKeyPair {
                certificate: IssuedCertificate {
                    certificate_id: certificate_id_from_pem(&certificate_pem).ok_or_else(|| {
                        PkiError::BadPem {
                            path: cloud_cert_path.clone(),
                            reason: "no certificate in the file".to_string(),
                        }
                    })?,
                    certificate_pem,
                },
                private_key_pem: read(&cloud_key_path)?,
            }
        } else {
            let issued = ca.create_key_and_certificate(CLOUD_SERVICE_NAME)?;
            write(
                &cloud_key_path,
                issued.private_key_pem.as_bytes(),
                Visibility::OwnerOnly,
            )?;
            write(
                &cloud_cert_path,
                issued.certificate.certificate_pem.as_bytes(),
                Visibility::Public,
            )?;
            issued
        };
        Ok(ca)
    }

    /// Path of the CA certificate clients must trust.
    pub fn ca_certificate_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn ca_certificate_pem(&self) -> &str {
        &self.ca_certificate_pem
    }

    /// The CA certificate in DER, for building trust stores.
    pub fn ca_certificate_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        CertificateDer::from_pem_slice(self.ca_certificate_pem.as_bytes()).map_err(|e| {
            PkiError::BadPem {
                path: self.ca_certificate_path(),
                reason: e.to_string(),
            }
        })
    }

    /// The TLS server chain and key for every listener the emulator opens.
    pub fn server_identity(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let bad = |reason: String| PkiError::BadPem {
            path: self.dir.join("server.crt"),
            reason,
        };
        let chain = vec![
            CertificateDer::from_pem_slice(self.server_certificate_pem.as_bytes())
                .map_err(|e| bad(e.to_string()))?,
            self.ca_certificate_der()?,
        ];
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())
            .map_err(|e| bad(e.to_string()))?;
        Ok((chain, key))
    }

    /// The client identity the emulator's own services connect to the broker with.
    pub fn cloud_client(&self) -> &IssuedKeyPair {
        &self.cloud_client
    }

    /// Paths of the cloud services' certificate and key, for an external broker's ACL setup.
    pub fn cloud_client_paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("cloud.crt"), self.dir.join("cloud.key"))
    }

    /// Paths of the server certificate and key, for an external broker's listener.
    pub fn server_paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("server.crt"), self.dir.join("server.key"))
    }

    /// Issues a client certificate for the public key in `csr_pem`. The subject is replaced by
    /// `common_name`: the requester does not choose the identity it is given.
    pub fn issue_from_csr(
        &self,
        csr_pem: &str,
        common_name: &str,
    ) -> Result<IssuedCertificate, PkiError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::InvalidCsr)?;
        csr.params = client_params(common_name);
        let cert = csr.signed_by(&self.issuer)?;
        Ok(IssuedCertificate {
            certificate_id: certificate_id(cert.der()),
            certificate_pem: cert.pem(),
        })
    }

    /// Generates a key pair and issues a client certificate for it.
    pub fn create_key_and_certificate(&self, common_name: &str) -> Result<IssuedKeyPair, PkiError> {
        let key = KeyPair::generate()?;
        let cert = client_params(common_name).signed_by(&key, &self.issuer)?;
        Ok(IssuedKeyPair {
            certificate: IssuedCertificate {
                certificate_id: certificate_id(cert.der()),
                certificate_pem: cert.pem(),
            },
            private_key_pem: key.serialize_pem(),
        })
    }
}

/// The certificate id (hex SHA-256 of the DER) of a DER certificate.
pub fn certificate_id(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The certificate id of the first certificate in a PEM text, if there is one.
pub fn certificate_id_from_pem(pem: &str) -> Option<String> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|der| certificate_id(&der))
}

/// Writes a certificate and its key as `certificate.pem.crt` and `private.pem.key` (the names
/// AWS IoT Core's console uses) plus the CA as `AmazonRootCA1.pem`'s stand-in `ca.pem`.
pub fn write_client_bundle(
    dir: &Path,
    issued: &IssuedKeyPair,
    ca_certificate_pem: &str,
) -> Result<ClientBundlePaths, PkiError> {
    let paths = ClientBundlePaths {
        certificate: dir.join("certificate.pem.crt"),
        private_key: dir.join("private.pem.key"),
        ca_certificate: dir.join("ca.pem"),
    };
    write(
        &paths.private_key,
        issued.private_key_pem.as_bytes(),
        Visibility::OwnerOnly,
    )?;
    write(
        &paths.certificate,
        issued.certificate.certificate_pem.as_bytes(),
        Visibility::Public,
    )?;
    write(
        &paths.ca_certificate,
        ca_certificate_pem.as_bytes(),
        Visibility::Public,
    )?;
    Ok(paths)
}

/// Where [`write_client_bundle`] put each file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClientBundlePaths {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub ca_certificate: PathBuf,
}

fn client_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(random_serial());
    set_validity(&mut params, CLIENT_VALIDITY_DAYS);
    params
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "DeviceHub Emulator");
    dn
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    // A day of slack before now tolerates clocks that are slightly behind.
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(days);
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // A positive serial: the top bit clear keeps the DER INTEGER from reading as negative.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, contents: &[u8], visibility: Visibility) -> Result<(), PkiError> {
    write_atomic(path, contents, visibility).map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_reuses_afterwards() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let first = CertificateAuthority::open(dir.path()).expect("create");
        let second = CertificateAuthority::open(dir.path()).expect("reopen");
        assert_eq!(first.ca_certificate_pem(), second.ca_certificate_pem());
        assert_eq!(
            first.cloud_client().certificate.certificate_id,
            second.cloud_client().certificate.certificate_id
        );
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temporary directory");
        CertificateAuthority::open(dir.path()).expect("create");
        for key in ["ca.key", "server.key", "cloud.key"] {
            let mode = fs::metadata(dir.path().join("pki").join(key))
                .expect("key exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }

    #[test]
    fn issues_from_a_csr_with_the_given_name() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = CertificateAuthority::open(dir.path()).expect("create");
        let key = KeyPair::generate().expect("key");
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("csr pem");
        let issued = ca.issue_from_csr(&csr, "desk-1").expect("issue");
        let der = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).expect("pem");
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let cn = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok());
        assert_eq!(cn, Some("desk-1"));
        assert_eq!(issued.certificate_id, certificate_id(&der));
        assert!(ca.issue_from_csr("not a csr", "x").is_err());
    }
}
