//! Registering this computer with the cloud by AWS IoT fleet provisioning by claim
//! (`devicehub register --code CODE`).
//!
//! # The flow
//! 1. A stable serial number for this installation is read from `serial.json` in the data
//!    directory, or generated once and kept there.
//! 2. A private key (ECDSA P-256) is generated locally, with a certificate signing request.
//!    The key never leaves the computer: only the CSR is sent.
//! 3. A short MQTT session with the claim certificate, client ID = the serial number (AWS lets
//!    provisioning clients pick any client ID; the claim policy allows only the provisioning
//!    topics). Clean session and no last will: nothing of it should outlive registration.
//! 4. Subscribe to the `accepted` and `rejected` answers *before* publishing, as AWS requires.
//! 5. `$aws/certificates/create-from-csr/json` with the CSR: the cloud answers with the
//!    certificate and a certificate ownership token (valid one hour).
//! 6. `$aws/provisioning-templates/{template}/provision/json` with the token and the parameters
//!    `SerialNumber` and `ActivationCode`: the cloud (its pre-provisioning hook) checks the code
//!    and answers with the thing name and `deviceConfiguration`.
//! 7. Disconnect; store the certificate, key (0600), CA bundle and thing name through
//!    [`CertStore`], and `deviceConfiguration` beside them.
//! 8. Connect with the new identity through the real [`MqttLink`] (client ID = thing name) to
//!    prove that it works, then disconnect.
//!
//! One request is in flight at a time (fleet provisioning has no client tokens to match answers
//! with), and every step has a timeout. Each completed step is reported to a callback as a
//! [`RegistrationStep`], so that the command line (and later a web page) can show progress.
//!
//! # Errors
//! [`RegistrationError`] says what failed and what to do: a refused activation code (with the
//! cloud's own reason), an expired ownership token, an unreachable endpoint (DNS, refused,
//! timeout), a server that is not trusted, a computer clock that is wrong (told from the server
//! certificate's validity, with the size of the error where it can be known), a missing claim
//! certificate. Nothing is stored unless the cloud registered the thing.
//!
//! # Clock
//! The TLS verification of the server uses [`RegistrationSettings::clock`], the system clock
//! unless another [`TimeProvider`] is injected; this is how the clock checks are tested.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, NetworkOptions, Outgoing, Packet, QoS,
    SubscribeFilter, SubscribeReasonCode, TlsConfiguration,
};
use rustls::pki_types::UnixTime;
use rustls::time_provider::{DefaultTimeProvider, TimeProvider};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::link::{self, LinkConfig, LinkState, LinkTransport, MqttLink, MAX_PACKET};
use super::tls::{self, TlsError};
use crate::config::{CloudConfig, CloudTransport};
use crate::storage::atomic::ensure_dir;
use crate::storage::certs::{CertStoreError, CertificateInfo};
use crate::storage::{DataDir, DeviceIdentity, StateFile, StorageError, Visibility};

/// The serial number file in the data directory.
pub const SERIAL_FILE: &str = "serial.json";
/// The `deviceConfiguration` the cloud returned, in the `certs/` directory (owner-only: it may
/// hold secrets such as the emulator's `deviceSignature`).
pub const DEVICE_CONFIGURATION_FILE: &str = "device-configuration.json";
/// How long each step may take unless the settings say otherwise.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The path of the MQTT WebSocket endpoint (AWS: `wss://HOST/mqtt`).
const WEBSOCKET_PATH: &str = "/mqtt";
/// How long disconnecting the claim session may take before it is abandoned.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);
/// The claim session's keepalive: AWS's smallest, since the session is short.
const CLAIM_KEEP_ALIVE: Duration = Duration::from_secs(30);

const CREATE_FROM_CSR_TOPIC: &str = "$aws/certificates/create-from-csr/json";

/// Where and how to register.
#[derive(Clone)]
pub struct RegistrationSettings {
    /// The endpoint host name, also the TLS server name.
    pub endpoint: String,
    pub transport: LinkTransport,
    /// The CA bundle the server must chain to; `None` means Amazon Root CA 1 and 3.
    pub ca_bundle_pem: Option<String>,
    pub claim_certificate: PathBuf,
    pub claim_private_key: PathBuf,
    /// The fleet provisioning template's name.
    pub template: String,
    /// The longest each step (connecting, each request, the final connection) may take.
    pub step_timeout: Duration,
    /// The clock the server's certificate is checked against.
    pub clock: Arc<dyn TimeProvider>,
}

impl fmt::Debug for RegistrationSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationSettings")
            .field("endpoint", &self.endpoint)
            .field("transport", &self.transport)
            .field(
                "ca_bundle_pem",
                &self.ca_bundle_pem.as_ref().map(|c| c.len()),
            )
            .field("claim_certificate", &self.claim_certificate)
            .field("claim_private_key", &self.claim_private_key)
            .field("template", &self.template)
            .field("step_timeout", &self.step_timeout)
            .field("clock", &self.clock)
            .finish()
    }
}

impl RegistrationSettings {
    /// Settings from the `[cloud]` section; `data_dir` places the default claim files. Reads
    /// the CA bundle file when one is configured.
    pub fn from_config(cloud: &CloudConfig, data_dir: &Path) -> Result<Self, RegistrationError> {
        let endpoint = cloud
            .endpoint
            .clone()
            .ok_or(RegistrationError::NotConfigured("cloud.endpoint"))?;
        let port = cloud.port();
        let transport = match cloud.transport {
            CloudTransport::Mqtts => LinkTransport::MutualTls { port },
            CloudTransport::Alpn443 => LinkTransport::Alpn { port },
            CloudTransport::Wss => LinkTransport::WebSocket {
                port,
                path: WEBSOCKET_PATH.to_string(),
            },
        };
        let ca_bundle_pem = match &cloud.ca_bundle {
            None => None,
            Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                RegistrationError::CaBundleUnreadable {
                    path: path.clone(),
                    source,
                }
            })?),
        };
        Ok(Self {
            endpoint,
            transport,
            ca_bundle_pem,
            claim_certificate: cloud.claim_certificate_path(data_dir),
            claim_private_key: cloud.claim_private_key_path(data_dir),
            template: cloud.provisioning_template.clone(),
            step_timeout: DEFAULT_STEP_TIMEOUT,
            clock: Arc::new(DefaultTimeProvider),
        })
    }

    fn port(&self) -> u16 {
        match &self.transport {
            LinkTransport::MutualTls { port }
            | LinkTransport::Alpn { port }
            | LinkTransport::WebSocket { port, .. } => *port,
        }
    }

    fn now(&self) -> Option<u64> {
        self.clock.current_time().map(|t| t.as_secs())
    }
}

/// A completed step of the registration, reported as it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "step",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum RegistrationStep {
    /// The private key and its signing request were generated on this computer.
    KeyGenerated { serial_number: String },
    /// The claim session is up.
    ClaimConnected { endpoint: String, client_id: String },
    /// The cloud signed the CSR.
    CertificateIssued { certificate_id: String },
    /// The cloud accepted the activation code and registered the thing.
    ThingRegistered { thing_name: String },
    /// The identity is on disk.
    IdentityStored { dir: PathBuf },
    /// A connection with the new identity succeeded.
    Connected { thing_name: String },
}

impl fmt::Display for RegistrationStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KeyGenerated { serial_number } => write!(
                f,
                "Private key generated (ECDSA P-256) for serial number {serial_number}; it never leaves this computer"
            ),
            Self::ClaimConnected {
                endpoint,
                client_id,
            } => write!(
                f,
                "Connected to {endpoint} with the claim certificate (client ID {client_id})"
            ),
            Self::CertificateIssued { certificate_id } => {
                write!(f, "Certificate issued: {certificate_id}")
            }
            Self::ThingRegistered { thing_name } => write!(f, "Registered as thing {thing_name}"),
            Self::IdentityStored { dir } => write!(f, "Identity stored in {}", dir.display()),
            Self::Connected { thing_name } => write!(
                f,
                "Connected as {thing_name} with the new certificate: registration complete"
            ),
        }
    }
}

/// The outcome of a successful registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub thing_name: String,
    pub serial_number: String,
    pub certificate_id: String,
    /// The device certificate's expiry, epoch seconds.
    pub certificate_not_after: i64,
    /// Where the identity is stored.
    pub certs_dir: PathBuf,
    /// What the template's `DeviceConfiguration` gave the device.
    #[serde(skip)]
    pub device_configuration: Map<String, Value>,
}

/// A fleet provisioning error answer: `{statusCode, errorCode, errorMessage}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningRejection {
    #[serde(default)]
    pub status_code: u16,
    #[serde(default)]
    pub error_code: String,
    #[serde(default)]
    pub error_message: String,
}

/// Why registration failed. Every message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("{0} is not set: add it to the [cloud] section of the config file")]
    NotConfigured(&'static str),
    #[error("the activation code is empty: enter the code the shipping application shows")]
    EmptyActivationCode,
    #[error("the claim certificate {path} is missing: install the claim certificate that came with DeviceHub there, or set cloud.claim_certificate / cloud.claim_private_key")]
    ClaimCertificateMissing { path: PathBuf },
    #[error("cannot read the claim certificate file {path}: {source}")]
    ClaimCertificateUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the claim certificate {path} is unusable ({reason}): install a valid claim certificate and its key")]
    ClaimCertificateInvalid { path: PathBuf, reason: String },
    #[error("the claim certificate {path} expired at {not_after} (epoch seconds) by this computer's clock: install a current claim certificate, or set the clock if it is wrong")]
    ClaimCertificateExpired { path: PathBuf, not_after: i64 },
    #[error("cannot read the CA bundle {path}: {source}; fix cloud.ca_bundle or remove it to trust Amazon's roots")]
    CaBundleUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the TLS settings are unusable: {0}; check cloud.ca_bundle and the claim certificate files"
    )]
    Tls(#[source] TlsError),
    #[error("cannot find the endpoint {endpoint}: {reason}; check cloud.endpoint and this computer's DNS and network")]
    Dns { endpoint: String, reason: String },
    #[error("{endpoint} refused the connection on port {port}: check cloud.endpoint, cloud.port and cloud.transport, and that a firewall lets the port out")]
    ConnectionRefused { endpoint: String, port: u16 },
    #[error("{endpoint} did not answer on port {port} in time: check the network, cloud.port and that a firewall lets the port out")]
    EndpointTimeout { endpoint: String, port: u16 },
    #[error(
        "cannot reach {endpoint} on port {port}: {reason}; check the network, cloud.endpoint, and that cloud.transport is what the port expects"
    )]
    Unreachable {
        endpoint: String,
        port: u16,
        reason: String,
    },
    #[error("the server at {endpoint} is not trusted ({reason}): check cloud.endpoint and cloud.ca_bundle (without it, only Amazon's roots are trusted)")]
    ServerNotTrusted { endpoint: String, reason: String },
    #[error("the computer's clock is wrong by {}: {detail}; set the date and time (or turn on network time) and register again", describe_duration(*.by))]
    ClockWrong { by: Duration, detail: String },
    #[error("the server refused the claim certificate ({reason}): it is unknown to the cloud, inactive, revoked or expired; install a current claim certificate")]
    ClaimCertificateRefused { reason: String },
    #[error(
        "the TLS handshake with {endpoint} failed: {reason}; check cloud.transport and cloud.port"
    )]
    Handshake { endpoint: String, reason: String },
    #[error("the broker refused the claim connection ({reason}): the claim certificate's policy does not allow it to connect")]
    ConnectRefused { reason: String },
    #[error("the cloud refused the subscription to {filter}: the claim certificate's policy does not allow fleet provisioning with template {template}")]
    SubscriptionRefused { filter: String, template: String },
    #[error("the connection dropped while {step}: {reason}; check cloud.provisioning_template and that the claim policy allows it, then try again")]
    ConnectionLost { step: &'static str, reason: String },
    #[error("no answer within {} while {step}: the cloud may be overloaded or the network slow; try again", describe_duration(*.after))]
    StepTimeout { step: &'static str, after: Duration },
    #[error("the activation code was refused: {message}. Codes are single-use and expire: check the code, or get a new one from the shipping application")]
    ActivationCodeRefused { message: String },
    #[error("the certificate ownership token expired before the thing was registered ({message}); it lasts one hour: run the registration again")]
    OwnershipTokenExpired { message: String },
    #[error("the provisioning template {template} does not exist or is disabled ({message}): check cloud.provisioning_template")]
    TemplateNotFound { template: String, message: String },
    #[error("the cloud rejected the request to {request}: {} {} ({})", .rejection.status_code, .rejection.error_code, .rejection.error_message)]
    Rejected {
        request: &'static str,
        rejection: ProvisioningRejection,
    },
    #[error("the cloud's answer to {request} is not what fleet provisioning defines: {reason}")]
    InvalidAnswer {
        request: &'static str,
        reason: String,
    },
    #[error("cannot generate the private key or signing request: {0}")]
    Key(#[source] rcgen::Error),
    #[error("the certificate the cloud issued is unusable with the generated key: {0}")]
    IssuedCertificateUnusable(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot store the new identity: {0}")]
    Store(#[source] CertStoreError),
    #[error(
        "the thing {thing_name} was registered and stored, but connecting with it failed: {reason}"
    )]
    Verify { thing_name: String, reason: String },
}

impl RegistrationError {
    /// A stable name for the kind of failure, for machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotConfigured(_) => "notConfigured",
            Self::EmptyActivationCode => "emptyActivationCode",
            Self::ClaimCertificateMissing { .. } => "claimCertificateMissing",
            Self::ClaimCertificateUnreadable { .. } => "claimCertificateUnreadable",
            Self::ClaimCertificateInvalid { .. } => "claimCertificateInvalid",
            Self::ClaimCertificateExpired { .. } => "claimCertificateExpired",
            Self::CaBundleUnreadable { .. } => "caBundleUnreadable",
            Self::Tls(_) => "tlsSettings",
            Self::Dns { .. } => "dns",
            Self::ConnectionRefused { .. } => "connectionRefused",
            Self::EndpointTimeout { .. } => "endpointTimeout",
            Self::Unreachable { .. } => "unreachable",
            Self::ServerNotTrusted { .. } => "serverNotTrusted",
            Self::ClockWrong { .. } => "clockWrong",
            Self::ClaimCertificateRefused { .. } => "claimCertificateRefused",
            Self::Handshake { .. } => "handshake",
            Self::ConnectRefused { .. } => "connectRefused",
            Self::SubscriptionRefused { .. } => "subscriptionRefused",
            Self::ConnectionLost { .. } => "connectionLost",
            Self::StepTimeout { .. } => "timeout",
            Self::ActivationCodeRefused { .. } => "activationCodeRefused",
            Self::OwnershipTokenExpired { .. } => "ownershipTokenExpired",
            Self::TemplateNotFound { .. } => "templateNotFound",
            Self::Rejected { .. } => "rejected",
            Self::InvalidAnswer { .. } => "invalidAnswer",
            Self::Key(_) => "key",
            Self::IssuedCertificateUnusable(_) => "issuedCertificateUnusable",
            Self::Storage(_) | Self::Store(_) => "storage",
            Self::Verify { .. } => "verify",
        }
    }
}

/// "3 days 4 hours", "2 hours 5 minutes", "42 seconds": the two largest units.
pub fn describe_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let units = [
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut parts = Vec::new();
    let mut rest = seconds;
    for (size, name) in units {
        let count = rest / size;
        rest %= size;
        if count > 0 && parts.len() < 2 {
            parts.push(format!(
                "{count} {name}{}",
                if count == 1 { "" } else { "s" }
            ));
        } else if !parts.is_empty() {
            // Only adjacent units: "1 day 3 minutes" would read as more precise than it is.
            break;
        }
    }
    if parts.is_empty() {
        format!("{} ms", duration.as_millis())
    } else {
        parts.join(" ")
    }
}

/// The body of `serial.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SerialRecord {
    serial_number: String,
}

fn serial_file(data_dir: &DataDir) -> StateFile<SerialRecord> {
    StateFile::new(
        data_dir.root().join(SERIAL_FILE),
        "devicehub-serial",
        1,
        Visibility::OwnerOnly,
    )
}

/// This installation's serial number: read from `serial.json`, or generated (16 hex digits
/// from the system's random source) and stored on first use. A corrupt file is moved aside
/// (see [`StateFile`]) and a new number made: the device then registers as a new thing.
pub fn serial_number(data_dir: &DataDir) -> Result<String, StorageError> {
    let file = serial_file(data_dir);
    if let Some(record) = file.load()?.into_option() {
        if valid_serial(&record.serial_number) {
            return Ok(record.serial_number);
        }
        tracing::warn!(
            path = %file.path().display(),
            "the stored serial number is not 1 to 64 letters, digits or '-'; making a new one"
        );
    }
    let serial = hex::encode(rand::random::<[u8; 8]>());
    file.save(&SerialRecord {
        serial_number: serial.clone(),
    })?;
    Ok(serial)
}

/// Serial numbers become client IDs and part of the thing name, so they keep to characters
/// both allow.
fn valid_serial(serial: &str) -> bool {
    (1..=64).contains(&serial.len())
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn device_configuration_file(data_dir: &DataDir) -> StateFile<Map<String, Value>> {
    StateFile::new(
        data_dir.certs_dir().join(DEVICE_CONFIGURATION_FILE),
        "devicehub-device-configuration",
        1,
        Visibility::OwnerOnly,
    )
}

/// The `deviceConfiguration` stored by the last registration, if any.
pub fn load_device_configuration(
    data_dir: &DataDir,
) -> Result<Option<Map<String, Value>>, StorageError> {
    Ok(device_configuration_file(data_dir).load()?.into_option())
}

/// The locally generated key and its signing request.
struct GeneratedKey {
    private_key_pem: String,
    csr_pem: String,
}

fn generate_key(serial: &str) -> Result<GeneratedKey, RegistrationError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(RegistrationError::Key)?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(RegistrationError::Key)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("devicehub-{serial}"));
    let csr = params
        .serialize_request(&key)
        .map_err(RegistrationError::Key)?;
    Ok(GeneratedKey {
        private_key_pem: key.serialize_pem(),
        csr_pem: csr.pem().map_err(RegistrationError::Key)?,
    })
}

/// Registers this computer: see the module documentation. `on_step` is called after each
/// step. Nothing is written to `certs/` unless the cloud registered the thing.
pub async fn register(
    settings: &RegistrationSettings,
    data_dir: &DataDir,
    activation_code: &str,
    on_step: &mut (dyn FnMut(&RegistrationStep) + Send),
) -> Result<Registration, RegistrationError> {
    let activation_code = activation_code.trim();
    if activation_code.is_empty() {
        return Err(RegistrationError::EmptyActivationCode);
    }
    let claim = read_claim(settings)?;
    data_dir.create()?;
    let serial = serial_number(data_dir)?;

    let key = generate_key(&serial)?;
    on_step(&RegistrationStep::KeyGenerated {
        serial_number: serial.clone(),
    });

    let mut session = ClaimSession::connect(settings, &serial, &claim).await?;
    on_step(&RegistrationStep::ClaimConnected {
        endpoint: settings.endpoint.clone(),
        client_id: serial.clone(),
    });
    let outcome = provision(
        settings,
        &mut session,
        &serial,
        &key,
        activation_code,
        on_step,
    )
    .await;
    session.disconnect().await;
    let (certificate_id, certificate_pem, thing_name, device_configuration) = outcome?;

    let identity = DeviceIdentity {
        thing_name: thing_name.clone(),
        certificate_pem,
        private_key_pem: key.private_key_pem,
        ca_bundle_pem: settings.ca_bundle_pem.clone(),
    };
    // The device configuration goes first: `thing.json`, written last by the certificate store,
    // then means a complete registration.
    ensure_dir(&data_dir.certs_dir(), Visibility::OwnerOnly)?;
    device_configuration_file(data_dir).save(&device_configuration)?;
    let info = data_dir
        .cert_store()
        .save(&identity)
        .map_err(RegistrationError::Store)?;
    on_step(&RegistrationStep::IdentityStored {
        dir: data_dir.certs_dir(),
    });

    verify(settings, identity).await?;
    on_step(&RegistrationStep::Connected {
        thing_name: thing_name.clone(),
    });
    Ok(Registration {
        thing_name,
        serial_number: serial,
        certificate_id,
        certificate_not_after: info.not_after,
        certs_dir: data_dir.certs_dir(),
        device_configuration,
    })
}

/// The claim certificate and key, read and checked.
struct ClaimMaterial {
    certificate_pem: String,
    private_key_pem: String,
}

fn read_claim(settings: &RegistrationSettings) -> Result<ClaimMaterial, RegistrationError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                RegistrationError::ClaimCertificateMissing {
                    path: path.to_path_buf(),
                }
            } else {
                RegistrationError::ClaimCertificateUnreadable {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })
    };
    let claim = ClaimMaterial {
        certificate_pem: read(&settings.claim_certificate)?,
        private_key_pem: read(&settings.claim_private_key)?,
    };
    // The same checks the stored identity gets (parsable, key matches), under a placeholder
    // name since a claim certificate belongs to no thing.
    let info = DeviceIdentity {
        thing_name: "claim".into(),
        certificate_pem: claim.certificate_pem.clone(),
        private_key_pem: claim.private_key_pem.clone(),
        ca_bundle_pem: None,
    }
    .check()
    .map_err(|e| RegistrationError::ClaimCertificateInvalid {
        path: settings.claim_certificate.clone(),
        reason: e.to_string(),
    })?;
    if let Some(now) = settings.now() {
        if i64::try_from(now).unwrap_or(i64::MAX) > info.not_after {
            return Err(RegistrationError::ClaimCertificateExpired {
                path: settings.claim_certificate.clone(),
                not_after: info.not_after,
            });
        }
    }
    Ok(claim)
}

/// The two provisioning requests; returns certificate ID, certificate, thing name and device
/// configuration.
async fn provision(
    settings: &RegistrationSettings,
    session: &mut ClaimSession,
    serial: &str,
    key: &GeneratedKey,
    activation_code: &str,
    on_step: &mut (dyn FnMut(&RegistrationStep) + Send),
) -> Result<(String, String, String, Map<String, Value>), RegistrationError> {
    let provision_topic = format!(
        "$aws/provisioning-templates/{}/provision/json",
        settings.template
    );
    session
        .subscribe(
            &[CREATE_FROM_CSR_TOPIC, &provision_topic],
            &settings.template,
        )
        .await?;

    let request = "create a certificate from the CSR";
    let answer = session
        .request(
            "issuing the certificate",
            CREATE_FROM_CSR_TOPIC,
            serde_json::json!({ "certificateSigningRequest": key.csr_pem }),
        )
        .await?
        .map_err(|rejection| RegistrationError::Rejected { request, rejection })?;
    let field = |name: &str| -> Result<String, RegistrationError> {
        answer
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| RegistrationError::InvalidAnswer {
                request,
                reason: format!("{name} is missing or not a string"),
            })
    };
    let certificate_id = field("certificateId")?;
    let certificate_pem = field("certificatePem")?;
    let token = field("certificateOwnershipToken")?;
    check_issued(serial, &certificate_pem, &key.private_key_pem)?;
    on_step(&RegistrationStep::CertificateIssued {
        certificate_id: certificate_id.clone(),
    });

    let answer = session
        .request(
            "registering the thing",
            &provision_topic,
            serde_json::json!({
                "certificateOwnershipToken": token,
                "parameters": {
                    "SerialNumber": serial,
                    "ActivationCode": activation_code,
                },
            }),
        )
        .await?
        .map_err(|rejection| provision_rejection(&settings.template, rejection))?;
    let request = "register the thing";
    let thing_name = answer
        .get("thingName")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| RegistrationError::InvalidAnswer {
            request,
            reason: "thingName is missing or not a string".into(),
        })?;
    if !crate::storage::certs::valid_thing_name(&thing_name) {
        return Err(RegistrationError::InvalidAnswer {
            request,
            reason: format!("thingName {thing_name:?} is not a valid thing name"),
        });
    }
    let device_configuration = match answer.get("deviceConfiguration") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => {
            return Err(RegistrationError::InvalidAnswer {
                request,
                reason: "deviceConfiguration is not an object".into(),
            })
        }
    };
    on_step(&RegistrationStep::ThingRegistered {
        thing_name: thing_name.clone(),
    });
    Ok((
        certificate_id,
        certificate_pem,
        thing_name,
        device_configuration,
    ))
}

/// Checks that the issued certificate parses and carries the generated key, before the
/// activation code is spent on it.
fn check_issued(
    serial: &str,
    certificate_pem: &str,
    private_key_pem: &str,
) -> Result<CertificateInfo, RegistrationError> {
    DeviceIdentity {
        thing_name: serial.to_string(),
        certificate_pem: certificate_pem.to_string(),
        private_key_pem: private_key_pem.to_string(),
        ca_bundle_pem: None,
    }
    .check()
    .map_err(|e| RegistrationError::IssuedCertificateUnusable(e.to_string()))
}

/// Turns a rejection of the provision request into the error that says what to do.
pub fn provision_rejection(template: &str, rejection: ProvisioningRejection) -> RegistrationError {
    let message = rejection.error_message.clone();
    match (rejection.status_code, rejection.error_code.as_str()) {
        (_, "InvalidCertificateOwnershipToken") => {
            RegistrationError::OwnershipTokenExpired { message }
        }
        (403, _) | (_, "AccessDenied") => RegistrationError::ActivationCodeRefused { message },
        (404, _) | (_, "ResourceNotFound") => RegistrationError::TemplateNotFound {
            template: template.to_string(),
            message,
        },
        _ => RegistrationError::Rejected {
            request: "register the thing",
            rejection,
        },
    }
}

/// Connects with the new identity through the link DeviceHub runs with, and stops again.
async fn verify(
    settings: &RegistrationSettings,
    identity: DeviceIdentity,
) -> Result<(), RegistrationError> {
    let thing_name = identity.thing_name.clone();
    let mut config = LinkConfig::new(
        settings.endpoint.clone(),
        settings.transport.clone(),
        identity,
    );
    config.connect_timeout = settings.step_timeout;
    let shutdown = CancellationToken::new();
    let started =
        MqttLink::start(config, shutdown.clone()).map_err(|e| RegistrationError::Verify {
            thing_name: thing_name.clone(),
            reason: e.to_string(),
        })?;
    let mut state = started.handle.state();
    let outcome = tokio::time::timeout(
        settings.step_timeout,
        state.wait_for(|s| {
            matches!(
                s,
                LinkState::Connected { .. } | LinkState::Reconnecting { .. } | LinkState::Stopped
            )
        }),
    )
    .await
    // Owned, so that the watch channel is not held while the link task stops.
    .map(|found| found.map(|state| state.clone()));
    let result = match outcome {
        Err(_) => Err(RegistrationError::StepTimeout {
            step: "connecting with the new identity",
            after: settings.step_timeout,
        }),
        Ok(Err(_)) => Err(RegistrationError::Verify {
            thing_name: thing_name.clone(),
            reason: "the link stopped".into(),
        }),
        Ok(Ok(found)) => match &found {
            LinkState::Connected { .. } => Ok(()),
            LinkState::Reconnecting { failure, .. } => Err(RegistrationError::Verify {
                thing_name: thing_name.clone(),
                reason: failure.message.clone(),
            }),
            other => Err(RegistrationError::Verify {
                thing_name: thing_name.clone(),
                reason: format!("the link is {other:?}"),
            }),
        },
    };
    shutdown.cancel();
    if let Err(e) = started.task.await {
        tracing::warn!("the verification link task failed: {e}");
    }
    result
}

/// A fleet provisioning answer: the accepted body, or the rejection.
type Answer = Result<Value, ProvisioningRejection>;

/// The short MQTT session with the claim certificate. The registration flow polls the event
/// loop itself, since it does one thing at a time and waits for each answer anyway.
struct ClaimSession {
    client: AsyncClient,
    eventloop: EventLoop,
    endpoint: String,
    port: u16,
    timeout: Duration,
    /// Set by the CONNACK: failures before it are about reaching the server, after it about
    /// the session.
    connected: bool,
    /// The server's clock-related failures are told against this clock.
    clock: Arc<dyn TimeProvider>,
}

impl ClaimSession {
    async fn connect(
        settings: &RegistrationSettings,
        client_id: &str,
        claim: &ClaimMaterial,
    ) -> Result<Self, RegistrationError> {
        let endpoint = settings.endpoint.clone();
        let port = settings.port();
        resolve(&endpoint, port, settings.step_timeout).await?;
        let ca = settings
            .ca_bundle_pem
            .clone()
            .unwrap_or_else(tls::amazon_roots_pem);
        let alpn = match settings.transport {
            LinkTransport::Alpn { .. } => Some(tls::ALPN_MQTT_CA),
            _ => None,
        };
        let config = tls::client_config(
            ca.as_bytes(),
            claim.certificate_pem.as_bytes(),
            claim.private_key_pem.as_bytes(),
            alpn,
        )
        .map_err(RegistrationError::Tls)?;
        let mut config = (*config).clone();
        config.time_provider = settings.clock.clone();
        let tls_config = TlsConfiguration::Rustls(Arc::new(config));
        let mut options =
            link::transport_options(client_id, &endpoint, &settings.transport, tls_config);
        options
            .set_keep_alive(CLAIM_KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let mut network = NetworkOptions::new();
        network.set_connection_timeout(settings.step_timeout.as_secs().max(1));
        eventloop.set_network_options(network);
        let mut session = Self {
            client,
            eventloop,
            endpoint,
            port,
            timeout: settings.step_timeout,
            connected: false,
            clock: settings.clock.clone(),
        };
        session
            .poll_until("connecting with the claim certificate", |event| {
                Ok(matches!(event, Event::Incoming(Packet::ConnAck(_))).then_some(()))
            })
            .await?;
        session.connected = true;
        Ok(session)
    }

    /// Polls the event loop until `wanted` returns a value, within the step timeout.
    async fn poll_until<T>(
        &mut self,
        step: &'static str,
        mut wanted: impl FnMut(Event) -> Result<Option<T>, RegistrationError>,
    ) -> Result<T, RegistrationError> {
        let eventloop = &mut self.eventloop;
        let polled = tokio::time::timeout(self.timeout, async {
            loop {
                match eventloop.poll().await {
                    Ok(event) => match wanted(event) {
                        Ok(Some(value)) => return Ok(value),
                        Ok(None) => {}
                        Err(e) => return Err(PollFailure::Answer(e)),
                    },
                    Err(error) => return Err(PollFailure::Connection(error)),
                }
            }
        })
        .await;
        match polled {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(PollFailure::Answer(error))) => Err(error),
            Ok(Err(PollFailure::Connection(error))) => Err(self.classify(step, &error)),
            Err(_) if !self.connected => Err(RegistrationError::EndpointTimeout {
                endpoint: self.endpoint.clone(),
                port: self.port,
            }),
            Err(_) => Err(RegistrationError::StepTimeout {
                step,
                after: self.timeout,
            }),
        }
    }

    /// Subscribes to the accepted and rejected answers of each request topic and waits for
    /// the SUBACK.
    async fn subscribe(
        &mut self,
        request_topics: &[&str],
        template: &str,
    ) -> Result<(), RegistrationError> {
        let filters: Vec<String> = request_topics
            .iter()
            .flat_map(|t| [format!("{t}/accepted"), format!("{t}/rejected")])
            .collect();
        let step = "subscribing to the provisioning answers";
        self.client
            .subscribe_many(
                filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
            )
            .await
            .map_err(|e| RegistrationError::ConnectionLost {
                step,
                reason: e.to_string(),
            })?;
        let codes = self
            .poll_until(step, |event| match event {
                Event::Incoming(Packet::SubAck(ack)) => Ok(Some(ack.return_codes)),
                _ => Ok(None),
            })
            .await?;
        for (code, filter) in codes.iter().zip(&filters) {
            if *code == SubscribeReasonCode::Failure {
                return Err(RegistrationError::SubscriptionRefused {
                    filter: filter.clone(),
                    template: template.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Publishes one request and waits for its accepted or rejected answer.
    async fn request(
        &mut self,
        step: &'static str,
        topic: &str,
        body: Value,
    ) -> Result<Answer, RegistrationError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, body.to_string())
            .await
            .map_err(|e| RegistrationError::ConnectionLost {
                step,
                reason: e.to_string(),
            })?;
        let accepted = format!("{topic}/accepted");
        let rejected = format!("{topic}/rejected");
        let request = step;
        self.poll_until(step, |event| {
            let Event::Incoming(Packet::Publish(publish)) = event else {
                return Ok(None);
            };
            if publish.topic == accepted {
                let body = serde_json::from_slice::<Value>(&publish.payload).map_err(|e| {
                    RegistrationError::InvalidAnswer {
                        request,
                        reason: format!("the accepted answer is not JSON: {e}"),
                    }
                })?;
                Ok(Some(Ok(body)))
            } else if publish.topic == rejected {
                let rejection = serde_json::from_slice::<ProvisioningRejection>(&publish.payload)
                    .unwrap_or_else(|e| ProvisioningRejection {
                        status_code: 0,
                        error_code: "Unreadable".into(),
                        error_message: format!("the rejection is not the documented JSON: {e}"),
                    });
                Ok(Some(Err(rejection)))
            } else {
                Ok(None)
            }
        })
        .await
    }

    /// Ends the session with a DISCONNECT, waiting a little for it to leave.
    async fn disconnect(mut self) {
        if self.client.try_disconnect().is_err() {
            return;
        }
        let eventloop = &mut self.eventloop;
        let drained = tokio::time::timeout(DISCONNECT_GRACE, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::debug!("the claim session's DISCONNECT did not leave in time");
        }
    }

    fn classify(&self, step: &'static str, error: &ConnectionError) -> RegistrationError {
        let now = self.clock.current_time();
        classify_connection_error(&self.endpoint, self.port, self.connected, step, error, now)
    }
}

/// Why polling the claim session stopped short.
enum PollFailure {
    /// An answer arrived but was unusable.
    Answer(RegistrationError),
    /// The connection failed.
    Connection(ConnectionError),
}

/// Resolves the endpoint first, so that a DNS failure is told apart from the rest.
async fn resolve(endpoint: &str, port: u16, timeout: Duration) -> Result<(), RegistrationError> {
    let dns = |reason: String| RegistrationError::Dns {
        endpoint: endpoint.to_string(),
        reason,
    };
    match tokio::time::timeout(timeout, tokio::net::lookup_host((endpoint, port))).await {
        Err(_) => Err(dns(format!(
            "the name lookup took longer than {}",
            describe_duration(timeout)
        ))),
        Ok(Err(e)) => Err(dns(e.to_string())),
        Ok(Ok(mut addresses)) => {
            if addresses.next().is_some() {
                Ok(())
            } else {
                Err(dns("the name has no address".into()))
            }
        }
    }
}

/// Says what a connection failure means for registration. `now` is the clock the server
/// certificate was checked against.
fn classify_connection_error(
    endpoint: &str,
    port: u16,
    connected: bool,
    step: &'static str,
    error: &ConnectionError,
    now: Option<UnixTime>,
) -> RegistrationError {
    if let ConnectionError::ConnectionRefused(code) = error {
        return RegistrationError::ConnectRefused {
            reason: format!("{code:?}"),
        };
    }
    if let Some(tls_error) = tls::find_rustls_error(error) {
        return classify_tls(endpoint, tls_error, now);
    }
    if connected {
        return RegistrationError::ConnectionLost {
            step,
            reason: error.to_string(),
        };
    }
    let io = match error {
        ConnectionError::Io(io) | ConnectionError::Tls(rumqttc::TlsError::Io(io)) => Some(io),
        _ => None,
    };
    match (error, io) {
        (ConnectionError::NetworkTimeout, _) => RegistrationError::EndpointTimeout {
            endpoint: endpoint.to_string(),
            port,
        },
        (_, Some(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            RegistrationError::ConnectionRefused {
                endpoint: endpoint.to_string(),
                port,
            }
        }
        (_, Some(io)) if io.kind() == std::io::ErrorKind::TimedOut => {
            RegistrationError::EndpointTimeout {
                endpoint: endpoint.to_string(),
                port,
            }
        }
        _ => RegistrationError::Unreachable {
            endpoint: endpoint.to_string(),
            port,
            reason: error.to_string(),
        },
    }
}

/// Says what a TLS failure means: an untrusted server, a wrong clock, a refused claim
/// certificate, or another handshake problem.
fn classify_tls(endpoint: &str, error: &rustls::Error, now: Option<UnixTime>) -> RegistrationError {
    use rustls::{AlertDescription as Alert, CertificateError as C, Error as E};
    match error {
        E::InvalidCertificate(C::NotValidYetContext { time, not_before }) => {
            let by = Duration::from_secs(not_before.as_secs().saturating_sub(time.as_secs()));
            RegistrationError::ClockWrong {
                by,
                detail: format!(
                    "it is behind: it says {} but the server's certificate is only valid from {}",
                    format_epoch(time.as_secs()),
                    format_epoch(not_before.as_secs())
                ),
            }
        }
        E::InvalidCertificate(C::ExpiredContext { time, not_after }) => {
            let by = Duration::from_secs(time.as_secs().saturating_sub(not_after.as_secs()));
            RegistrationError::ClockWrong {
                by,
                detail: format!(
                    "it is ahead, or the server's certificate has expired: the clock says {} but the server's certificate ended at {}",
                    format_epoch(time.as_secs()),
                    format_epoch(not_after.as_secs())
                ),
            }
        }
        E::InvalidCertificate(reason @ (C::NotValidYet | C::Expired)) => {
            RegistrationError::ClockWrong {
                by: Duration::ZERO,
                detail: format!(
                    "the server's certificate is {} by this computer's clock ({}); the size of the error cannot be told",
                    if matches!(reason, C::Expired) { "expired" } else { "not yet valid" },
                    now.map_or_else(|| "unknown time".to_string(), |t| format_epoch(t.as_secs()))
                ),
            }
        }
        E::InvalidCertificate(reason) => RegistrationError::ServerNotTrusted {
            endpoint: endpoint.to_string(),
            reason: format!("{reason:?}"),
        },
        E::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateRequired
            | Alert::CertificateUnknown
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::UnsupportedCertificate
            | Alert::AccessDenied),
        ) => RegistrationError::ClaimCertificateRefused {
            reason: format!("TLS alert {alert:?}"),
        },
        other => RegistrationError::Handshake {
            endpoint: endpoint.to_string(),
            reason: other.to_string(),
        },
    }
}

/// `2026-11-24 04:05:00 UTC`, or the raw seconds when out of range.
fn format_epoch(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_else(|| format!("{seconds} s after 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_ownership_token_says_to_run_again() {
        let rejection: ProvisioningRejection = serde_json::from_str(
            r#"{"statusCode":400,"errorCode":"InvalidCertificateOwnershipToken",
                "errorMessage":"the certificate ownership token is unknown or has expired"}"#,
        )
        .expect("rejection JSON");
        let error = provision_rejection("DeviceHubFleet", rejection);
        assert_eq!(error.kind(), "ownershipTokenExpired");
        let text = error.to_string();
        assert!(text.contains("one hour"), "{text}");
        assert!(text.contains("run the registration again"), "{text}");
    }

    #[test]
    fn provisioning_rejections_map_to_what_to_do() {
        let rejection = |status, code: &str, message: &str| ProvisioningRejection {
            status_code: status,
            error_code: code.into(),
            error_message: message.into(),
        };
        let refused = provision_rejection(
            "T",
            rejection(
                403,
                "AccessDenied",
                "pre-provisioning hook refused the request: the activation code has already been used",
            ),
        );
        assert_eq!(refused.kind(), "activationCodeRefused");
        assert!(
            refused.to_string().contains("already been used"),
            "{refused}"
        );
        assert!(refused.to_string().contains("get a new one"), "{refused}");
        let missing = provision_rejection("Fleet", rejection(404, "ResourceNotFound", "gone"));
        assert!(
            missing.to_string().contains("cloud.provisioning_template"),
            "{missing}"
        );
        let other = provision_rejection("T", rejection(500, "InternalFailure", "boom"));
        assert_eq!(other.kind(), "rejected");
        assert!(
            other.to_string().contains("500 InternalFailure (boom)"),
            "{other}"
        );
    }

    #[test]
    fn a_server_certificate_from_the_future_tells_how_far_the_clock_is_behind() {
        let error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidYetContext {
                time: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
                not_before: UnixTime::since_unix_epoch(Duration::from_secs(
                    1_700_000_000 + 3 * 86_400 + 2 * 3_600 + 59,
                )),
            });
        let classified = classify_tls("localhost", &error, None);
        assert_eq!(classified.kind(), "clockWrong");
        let text = classified.to_string();
        assert!(
            text.contains("the computer's clock is wrong by 3 days 2 hours"),
            "{text}"
        );
        assert!(text.contains("behind"), "{text}");
        assert!(text.contains("2023-11-14 22:13:20 UTC"), "{text}");
    }

    #[test]
    fn an_expired_server_certificate_tells_how_far_ahead_the_clock_is() {
        let error = rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(2_000_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(2_000_000_000 - 90)),
        });
        let text = classify_tls("localhost", &error, None).to_string();
        assert!(text.contains("wrong by 1 minute 30 seconds"), "{text}");
        assert!(text.contains("ahead"), "{text}");
    }

    #[test]
    fn other_tls_failures_are_untrusted_servers_or_refused_claims() {
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let error = classify_tls("iot.example", &unknown, None);
        assert_eq!(error.kind(), "serverNotTrusted");
        assert!(error.to_string().contains("cloud.ca_bundle"), "{error}");
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked);
        assert_eq!(
            classify_tls("iot.example", &alert, None).kind(),
            "claimCertificateRefused"
        );
    }

    #[test]
    fn network_failures_name_the_endpoint_and_port() {
        let refused =
            ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let error =
            classify_connection_error("localhost", 8883, false, "connecting", &refused, None);
        assert_eq!(error.kind(), "connectionRefused");
        assert!(error.to_string().contains("port 8883"), "{error}");
        let timeout = classify_connection_error(
            "localhost",
            443,
            false,
            "connecting",
            &ConnectionError::NetworkTimeout,
            None,
        );
        assert_eq!(timeout.kind(), "endpointTimeout");
        let lost = classify_connection_error(
            "localhost",
            443,
            true,
            "registering the thing",
            &refused,
            None,
        );
        assert_eq!(lost.kind(), "connectionLost");
        assert!(lost.to_string().contains("registering the thing"), "{lost}");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(describe_duration(Duration::from_secs(42)), "42 seconds");
        assert_eq!(
            describe_duration(Duration::from_secs(3_660)),
            "1 hour 1 minute"
        );
        assert_eq!(describe_duration(Duration::from_secs(86_400 + 60)), "1 day");
        assert_eq!(describe_duration(Duration::from_millis(300)), "300 ms");
    }

    #[test]
    fn the_serial_number_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = DataDir::new(dir.path().to_path_buf());
        data.create().expect("create");
        let first = serial_number(&data).expect("serial");
        assert_eq!(first.len(), 16);
        assert!(valid_serial(&first));
        assert_eq!(serial_number(&data).expect("again"), first);
        let other = tempfile::tempdir().expect("tempdir");
        let other = DataDir::new(other.path().to_path_buf());
        other.create().expect("create");
        assert_ne!(serial_number(&other).expect("serial"), first);
    }

    #[test]
    fn the_csr_carries_a_p256_key_that_stays_here() {
        let key = generate_key("0123456789abcdef").expect("key");
        assert!(key.csr_pem.contains("BEGIN CERTIFICATE REQUEST"));
        assert!(!key.csr_pem.contains("PRIVATE KEY"));
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(key.csr_pem.as_bytes())
            .map(|d: rustls::pki_types::CertificateSigningRequestDer<'_>| d)
            .expect("CSR PEM");
        let params = rcgen::CertificateSigningRequestParams::from_der(&der).expect("CSR parses");
        assert_eq!(
            params.public_key.algorithm(),
            &rcgen::PKCS_ECDSA_P256_SHA256
        );
    }

    #[test]
    fn a_missing_claim_certificate_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = RegistrationSettings {
            endpoint: "localhost".into(),
            transport: LinkTransport::MutualTls { port: 8883 },
            ca_bundle_pem: None,
            claim_certificate: dir.path().join("claim.crt"),
            claim_private_key: dir.path().join("claim.key"),
            template: "DeviceHubFleet".into(),
            step_timeout: DEFAULT_STEP_TIMEOUT,
            clock: Arc::new(DefaultTimeProvider),
        };
        let error = read_claim(&settings).err().expect("missing");
        assert_eq!(error.kind(), "claimCertificateMissing");
        assert!(error.to_string().contains("claim.crt"), "{error}");
    }
}
