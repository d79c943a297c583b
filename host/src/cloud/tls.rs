//! The TLS client configuration of the cloud link: TLS 1.2 or 1.3 only, the server verified
//! against a CA bundle (Amazon Root CA 1 and 3 unless another is configured), the device's
//! client certificate, and ALPN when the transport needs it.
//!
//! The configuration carries its own crypto provider (ring), so it does not depend on a
//! process-wide default provider having been installed.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// Amazon Root CA 1 (RSA), which AWS IoT Core's RSA server certificates chain to.
pub const AMAZON_ROOT_CA_1: &str = include_str!("../../../assets/ca/AmazonRootCA1.pem");
/// Amazon Root CA 3 (ECC), which AWS IoT Core's ECC server certificates chain to.
pub const AMAZON_ROOT_CA_3: &str = include_str!("../../../assets/ca/AmazonRootCA3.pem");

/// The ALPN protocol AWS IoT Core requires for MQTT with client certificates on port 443.
pub const ALPN_MQTT_CA: &[u8] = b"x-amzn-mqtt-ca";

/// What is wrong with the TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the CA bundle is not valid PEM: {0}")]
    CaPem(String),
    #[error("the CA bundle holds no certificate")]
    EmptyCaBundle,
    #[error("the CA bundle's certificate number {index} is unusable as a trust anchor: {reason}")]
    CaCertificate { index: usize, reason: String },
    #[error("the client certificate is not valid PEM: {0}")]
    CertificatePem(String),
    #[error("the client certificate PEM holds no certificate")]
    NoCertificate,
    #[error("the private key is not a PEM private key: {0}")]
    KeyPem(String),
    #[error("the client certificate and private key are unusable together: {0}")]
    ClientAuth(rustls::Error),
    #[error("the TLS protocol versions cannot be set: {0}")]
    Versions(rustls::Error),
}

/// The trust anchors used when the config names no CA bundle.
pub fn amazon_roots_pem() -> String {
    format!("{AMAZON_ROOT_CA_1}{AMAZON_ROOT_CA_3}")
}

/// Builds the root store from a PEM bundle.
pub fn root_store(ca_bundle_pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let certs = CertificateDer::pem_slice_iter(ca_bundle_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::CaPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::EmptyCaBundle);
    }
    let mut roots = RootCertStore::empty();
    for (index, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::CaCertificate {
            index: index + 1,
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A client configuration for mutual TLS with `alpn` offered when given.
pub fn client_config(
    ca_bundle_pem: &[u8],
    certificate_pem: &[u8],
    private_key_pem: &[u8],
    alpn: Option<&[u8]>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_store(ca_bundle_pem)?;
    let chain = CertificateDer::pem_slice_iter(certificate_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::CertificatePem(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(private_key_pem)
        .map_err(|e| TlsError::KeyPem(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // TLS 1.2 and 1.3 are all rustls speaks; naming them keeps that true if rustls ever adds
    // an older version behind a feature.
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(TlsError::ClientAuth)?;
    if let Some(alpn) = alpn {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    Ok(Arc::new(config))
}

/// The rustls error somewhere in `error`'s chain. I/O errors hide theirs behind `get_ref`,
/// since `io::Error::source` skips the wrapped error itself.
pub(crate) fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = find_rustls_error(inner) {
                    return Some(found);
                }
            }
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_amazon_roots_load() {
        let roots = root_store(amazon_roots_pem().as_bytes()).expect("Amazon roots");
        assert_eq!(roots.len(), 2);
    }

    #[test]
    fn an_empty_bundle_is_refused() {
        assert!(matches!(root_store(b""), Err(TlsError::EmptyCaBundle)));
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["desk-1".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let other = rcgen::KeyPair::generate().expect("other key");
        let error = client_config(
            amazon_roots_pem().as_bytes(),
            cert.pem().as_bytes(),
            other.serialize_pem().as_bytes(),
            None,
        )
        .expect_err("mismatch");
        assert!(matches!(error, TlsError::ClientAuth(_)), "{error}");
        let config = client_config(
            amazon_roots_pem().as_bytes(),
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            Some(ALPN_MQTT_CA),
        )
        .expect("matching pair");
        assert_eq!(config.alpn_protocols, vec![ALPN_MQTT_CA.to_vec()]);
    }
}
