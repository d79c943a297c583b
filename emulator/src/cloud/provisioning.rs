//! Fleet provisioning by claim, as AWS IoT Core's MQTT API defines it: `CreateKeysAndCertificate`,
//! `CreateCertificateFromCsr` and `RegisterThing` (`$aws/provisioning-templates/{t}/provision`).
//!
//! Provisioning templates are kept in `<data-dir>/provisioning-templates/{name}.json` in AWS's
//! own template body shape (`Parameters`, `Resources` with `AWS::IoT::Thing`,
//! `AWS::IoT::Certificate`, `AWS::IoT::Policy`, `DeviceConfiguration`). The template's
//! pre-provisioning hook is played by the activation-code check: an unknown, used or expired
//! `ActivationCode` is refused, as a hook answering `allowProvisioning: false` would be. Only
//! the `json` payload format is served.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::files::{write_atomic, Visibility};
use super::pki::CertificateAuthority;
use super::registry::{ActivationRefusal, CertificateRole, Registry, RegistryError};
use super::Outgoing;

/// The template DeviceHub provisions with; created on first start.
pub const DEFAULT_TEMPLATE_NAME: &str = "DeviceHubFleet";
/// How long a certificate ownership token stays valid (AWS: one hour).
pub const OWNERSHIP_TOKEN_TTL_S: u64 = 60 * 60;
/// Common name given to certificates issued by fleet provisioning. Their identity is the
/// certificate id, bound to a thing at registration.
const PROVISIONED_COMMON_NAME: &str = "devicehub-device";

/// What failed while loading the provisioning service.
#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    #[error("cannot read provisioning templates in {path}: {source}")]
    ReadTemplates {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the default provisioning template {path}: {source}")]
    WriteTemplate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("provisioning template {path} is not valid: {source}")]
    BadTemplate {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A provisioning template as stored on disk: AWS's template attributes with the body as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningTemplate {
    pub template_name: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Present when the template has a pre-provisioning hook; the emulator's hook checks the
    /// `ActivationCode` parameter against the registry.
    #[serde(default)]
    pub pre_provisioning_hook: Option<Value>,
    /// The template body, in AWS's JSON template format.
    pub template_body: Value,
}

fn default_true() -> bool {
    true
}

/// The default template: a thing named after the serial number, the registering certificate
/// activated and attached, and DeviceHub's thing policy.
pub fn default_template() -> ProvisioningTemplate {
    ProvisioningTemplate {
        template_name: DEFAULT_TEMPLATE_NAME.to_string(),
        enabled: true,
        pre_provisioning_hook: Some(json!({
            "targetArn": "arn:aws:lambda:local:000000000000:function:devicehub-activation-code",
            "payloadVersion": "2020-04-01"
        })),
        template_body: json!({
            "Parameters": {
                "SerialNumber": {"Type": "String"},
                "ActivationCode": {"Type": "String"},
                "AWS::IoT::Certificate::Id": {"Type": "String"}
            },
            "Resources": {
                "thing": {
                    "Type": "AWS::IoT::Thing",
                    "Properties": {
                        "ThingName": {"Fn::Join": ["", ["devicehub-", {"Ref": "SerialNumber"}]]},
                        "AttributePayload": {"serialNumber": {"Ref": "SerialNumber"}}
                    },
                    "OverrideSettings": {"AttributePayload": "MERGE"}
                },
                "certificate": {
                    "Type": "AWS::IoT::Certificate",
                    "Properties": {
                        "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                        "Status": "ACTIVE"
                    }
                },
                "policy": {
                    "Type": "AWS::IoT::Policy",
                    "Properties": {"PolicyName": "DeviceHubThingPolicy"}
                }
            },
            "DeviceConfiguration": {}
        }),
    }
}

#[derive(Debug)]
struct OwnershipToken {
    certificate_id: String,
    expires_at: u64,
}

/// An AWS fleet provisioning error answer.
#[derive(Debug)]
struct Rejection {
    status: u16,
    code: &'static str,
    message: String,
}

impl Rejection {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn payload(&self) -> Vec<u8> {
        json!({
            "statusCode": self.status,
            "errorCode": self.code,
            "errorMessage": self.message,
        })
        .to_string()
        .into_bytes()
    }
}

/// The fleet provisioning service.
pub struct ProvisioningService {
    ca: Arc<CertificateAuthority>,
    registry: Arc<Mutex<Registry>>,
    templates: BTreeMap<String, ProvisioningTemplate>,
    tokens: HashMap<String, OwnershipToken>,
}

impl std::fmt::Debug for ProvisioningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningService")
            .field("templates", &self.templates.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ProvisioningService {
    /// Request topics the service answers (JSON payload format only).
    pub const SUBSCRIPTIONS: &'static [&'static str] = &[
        "$aws/certificates/create/json",
        "$aws/certificates/create-from-csr/json",
        "$aws/provisioning-templates/+/provision/json",
    ];

    /// Loads the templates in `<data_dir>/provisioning-templates`, writing the default
    /// template there on first start.
    pub fn open(
        data_dir: &Path,
        ca: Arc<CertificateAuthority>,
        registry: Arc<Mutex<Registry>>,
    ) -> Result<Self, ProvisioningError> {
        let dir = data_dir.join("provisioning-templates");
        let default_path = dir.join(format!("{DEFAULT_TEMPLATE_NAME}.json"));
        if !default_path.exists() {
            let body = serde_json::to_vec_pretty(&default_template())
                .expect("the default template is plain JSON");
            write_atomic(&default_path, &body, Visibility::Public).map_err(|source| {
                ProvisioningError::WriteTemplate {
                    path: default_path.clone(),
                    source,
                }
            })?;
        }
        let mut templates = BTreeMap::new();
        let entries =
            std::fs::read_dir(&dir).map_err(|source| ProvisioningError::ReadTemplates {
                path: dir.clone(),
                source,
            })?;
        for entry in entries {
            let entry = entry.map_err(|source| ProvisioningError::ReadTemplates {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes =
                std::fs::read(&path).map_err(|source| ProvisioningError::ReadTemplates {
                    path: path.clone(),
                    source,
                })?;
            let template: ProvisioningTemplate =
                serde_json::from_slice(&bytes).map_err(|source| {
                    ProvisioningError::BadTemplate {
                        path: path.clone(),
                        source,
                    }
                })?;
            templates.insert(template.template_name.clone(), template);
        }
        Ok(Self {
            ca,
            registry,
            templates,
            tokens: HashMap::new(),
        })
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one request; returns the answer to publish.
    pub fn handle(&mut self, topic: &str, payload: &[u8], now: u64) -> Vec<Outgoing> {
        self.tokens.retain(|_, t| t.expires_at > now);
        let answer = |suffix: &str, body: Vec<u8>| {
            vec![Outgoing {
                topic: format!("{topic}/{suffix}"),
                payload: body,
            }]
        };
        let result = match serde_json::from_slice::<Value>(payload) {
            Err(e) => Err(Rejection::new(
                400,
                "InvalidPayload",
                format!("the request is not valid JSON: {e}"),
            )),
            Ok(request) => {
                if topic == "$aws/certificates/create/json" {
                    self.create_keys_and_certificate(now)
                } else if topic == "$aws/certificates/create-from-csr/json" {
                    self.create_certificate_from_csr(&request, now)
                } else if let Some(template) = topic
                    .strip_prefix("$aws/provisioning-templates/")
                    .and_then(|rest| rest.strip_suffix("/provision/json"))
                {
                    self.register_thing(template, &request, now)
                } else {
                    return Vec::new();
                }
            }
        };
        match result {
            Ok(body) => answer("accepted", body.to_string().into_bytes()),
            Err(rejection) => answer("rejected", rejection.payload()),
        }
    }

    fn issue_token(&mut self, certificate_id: &str, now: u64) -> Result<String, Rejection> {
        self.registry()
            .set_certificate_role(certificate_id, CertificateRole::Pending, now)
            .map_err(internal)?;
        let token: [u8; 32] = rand::random();
        let token = hex::encode(token);
        self.tokens.insert(
            token.clone(),
            OwnershipToken {
                certificate_id: certificate_id.to_string(),
                expires_at: now + OWNERSHIP_TOKEN_TTL_S,
            },
        );
        Ok(token)
    }

    fn create_keys_and_certificate(&mut self, now: u64) -> Result<Value, Rejection> {
        let issued = self
            .ca
            .create_key_and_certificate(PROVISIONED_COMMON_NAME)
            .map_err(|e| Rejection::new(500, "InternalFailure", e.to_string()))?;
        let token = self.issue_token(&issued.certificate.certificate_id, now)?;
        Ok(json!({
            "certificateId": issued.certificate.certificate_id,
            "certificatePem": issued.certificate.certificate_pem,
            "privateKey": issued.private_key_pem,
            "certificateOwnershipToken": token,
        }))
    }

    fn create_certificate_from_csr(
        &mut self,
        request: &Value,
        now: u64,
    ) -> Result<Value, Rejection> {
        let Some(csr) = request
            .get("certificateSigningRequest")
            .and_then(Value::as_str)
        else {
            return Err(Rejection::new(
                400,
                "InvalidPayload",
                "certificateSigningRequest is missing or not a string",
            ));
        };
        let issued = self
            .ca
            .issue_from_csr(csr, PROVISIONED_COMMON_NAME)
            .map_err(|e| Rejection::new(400, "InvalidCSR", e.to_string()))?;
        let token = self.issue_token(&issued.certificate_id, now)?;
        Ok(json!({
            "certificateId": issued.certificate_id,
            "certificatePem": issued.certificate_pem,
            "certificateOwnershipToken": token,
        }))
    }

    fn register_thing(
        &mut self,
        template_name: &str,
        request: &Value,
        now: u64,
    ) -> Result<Value, Rejection> {
        let template = self
            .templates
            .get(template_name)
            .filter(|t| t.enabled)
            .cloned()
            .ok_or_else(|| {
                Rejection::new(
                    404,
                    "ResourceNotFound",
                    format!("provisioning template {template_name} does not exist"),
                )
            })?;
        let Some(token) = request
            .get("certificateOwnershipToken")
            .and_then(Value::as_str)
        else {
            return Err(Rejection::new(
                400,
                "InvalidPayload",
                "certificateOwnershipToken is missing or not a string",
            ));
        };
        let mut parameters: BTreeMap<String, String> = BTreeMap::new();
        match request.get("parameters") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    let Some(v) = v.as_str() else {
                        return Err(Rejection::new(
                            400,
                            "InvalidPayload",
                            format!("parameter {k} is not a string"),
                        ));
                    };
                    parameters.insert(k.clone(), v.to_string());
                }
            }
            Some(_) => {
                return Err(Rejection::new(
                    400,
                    "InvalidPayload",
                    "parameters must be an object of strings",
                ))
            }
        }
        // An unknown token and an expired one look the same to the device: expired tokens are
        // forgotten at the start of every request.
        let certificate_id = match self.tokens.get(token) {
            Some(t) => t.certificate_id.clone(),
            None => {
                return Err(Rejection::new(
                    400,
                    "InvalidCertificateOwnershipToken",
                    "the certificate ownership token is unknown or has expired",
                ))
            }
        };
        parameters.insert("AWS::IoT::Certificate::Id".into(), certificate_id.clone());
        let body = &template.template_body;
        let declared = body
            .get("Parameters")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (name, declaration) in &declared {
            if parameters.contains_key(name) {
                continue;
            }
            match declaration.get("Default").and_then(Value::as_str) {
                Some(default) => {
                    parameters.insert(name.clone(), default.to_string());
                }
                None => {
                    return Err(Rejection::new(
                        400,
                        "InvalidParameters",
                        format!("parameter {name} is required by template {template_name}"),
                    ))
                }
            }
        }

        if template.pre_provisioning_hook.is_some() {
            let code = parameters
                .get("ActivationCode")
                .cloned()
                .unwrap_or_default();
            if let Err(refusal) = self.registry().check_activation_code(&code, now) {
                let why = match refusal {
                    ActivationRefusal::Unknown => "the activation code is unknown",
                    ActivationRefusal::Used => "the activation code has already been used",
                    ActivationRefusal::Expired => "the activation code has expired",
                };
                return Err(Rejection::new(
                    403,
                    "AccessDenied",
                    format!("pre-provisioning hook refused the request: {why}"),
                ));
            }
        }

        let resources = body
            .get("Resources")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let thing_resource = resources
            .values()
            .find(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::IoT::Thing"))
            .ok_or_else(|| {
                Rejection::new(
                    400,
                    "InvalidRequest",
                    format!("template {template_name} has no AWS::IoT::Thing resource"),
                )
            })?;
        let properties = thing_resource
            .get("Properties")
            .cloned()
            .unwrap_or(Value::Null);
        let thing_name = properties
            .get("ThingName")
            .map(|v| evaluate(v, &parameters))
            .transpose()?
            .ok_or_else(|| Rejection::new(400, "InvalidRequest", "the thing has no ThingName"))?;
        let mut attributes = BTreeMap::new();
        if let Some(Value::Object(payload)) = properties.get("AttributePayload") {
            for (k, v) in payload {
                attributes.insert(k.clone(), evaluate(v, &parameters)?);
            }
        }

        let thing = {
            let mut registry = self.registry();
            let thing = registry
                .register_thing(&thing_name, &certificate_id, attributes, now)
                .map_err(|e| match e {
                    RegistryError::InvalidThingName(_) => {
                        Rejection::new(400, "InvalidParameters", e.to_string())
                    }
                    other => internal(other),
                })?;
            if let Some(code) = parameters.get("ActivationCode") {
                if template.pre_provisioning_hook.is_some() {
                    registry
                        .consume_activation_code(code, &thing_name)
                        .map_err(internal)?;
                }
            }
            thing
        };
        self.tokens.remove(token);

        let mut device_configuration = Map::new();
        if let Some(Value::Object(config)) = body.get("DeviceConfiguration") {
            for (k, v) in config {
                device_configuration.insert(k.clone(), Value::String(evaluate(v, &parameters)?));
            }
        }
        device_configuration.insert(
            "deviceSignature".into(),
            Value::String(thing.device_signature.clone()),
        );
        Ok(json!({
            "thingName": thing.thing_name,
            "deviceConfiguration": device_configuration,
        }))
    }
}

fn internal(e: impl std::fmt::Display) -> Rejection {
    tracing::error!("fleet provisioning failed: {e}");
    Rejection::new(500, "InternalFailure", "internal error")
}

/// Evaluates a template value: a literal string, `{"Ref": name}` or
/// `{"Fn::Join": [separator, [values...]]}`.
fn evaluate(value: &Value, parameters: &BTreeMap<String, String>) -> Result<String, Rejection> {
    let invalid = |what: String| Rejection::new(400, "InvalidRequest", what);
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Object(map) if map.len() == 1 => {
            if let Some(name) = map.get("Ref").and_then(Value::as_str) {
                return parameters.get(name).cloned().ok_or_else(|| {
                    Rejection::new(
                        400,
                        "InvalidParameters",
                        format!("parameter {name} is missing"),
                    )
                });
            }
            if let Some(Value::Array(args)) = map.get("Fn::Join") {
                if let [Value::String(separator), Value::Array(parts)] = args.as_slice() {
                    let parts = parts
                        .iter()
                        .map(|p| evaluate(p, parameters))
                        .collect::<Result<Vec<_>, _>>()?;
                    return Ok(parts.join(separator));
                }
            }
            Err(invalid(format!("unsupported template expression {value}")))
        }
        other => Err(invalid(format!("unsupported template value {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn evaluates_ref_and_join() {
        let p = params(&[("SerialNumber", "42")]);
        let v = json!({"Fn::Join": ["", ["devicehub-", {"Ref": "SerialNumber"}]]});
        assert_eq!(evaluate(&v, &p).ok(), Some("devicehub-42".to_string()));
        assert!(evaluate(&json!({"Ref": "Missing"}), &p).is_err());
        assert!(evaluate(&json!({"Fn::GetAtt": ["a", "b"]}), &p).is_err());
    }

    #[test]
    fn default_template_round_trips() {
        let text = serde_json::to_string(&default_template()).expect("serialize");
        let back: ProvisioningTemplate = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.template_name, DEFAULT_TEMPLATE_NAME);
        assert!(back.template_body["Resources"]["thing"]["Type"] == "AWS::IoT::Thing");
    }
}
