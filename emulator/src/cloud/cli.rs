//! The cloud's command-line subcommands: `serve` runs the cloud; the others talk to a running
//! emulator over its HTTP API (found through `<data-dir>/endpoints.json`) or read its data
//! directory. `main.rs` only parses arguments and calls these.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::files::{write_atomic, Visibility};
use super::pki::{write_client_bundle, IssuedCertificate, IssuedKeyPair};
use super::registry::Registry;
use super::runtime::{start, BrokerMode, Clock, CloudConfig, Endpoints, SystemClock};
use super::signing;

/// What failed in a cloud subcommand.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Cloud(#[from] super::runtime::CloudError),
    #[error("no running emulator found for {data_dir} ({source}); start one with `devicehub-emulator serve --data-dir {data_dir}`")]
    NotRunning {
        data_dir: PathBuf,
        source: std::io::Error,
    },
    #[error("the emulator's API at {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("the emulator refused the request ({status}): {body}")]
    Refused { status: u16, body: String },
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
    #[error(transparent)]
    Pki(#[from] super::pki::PkiError),
    #[error(transparent)]
    Registry(#[from] super::registry::RegistryError),
    #[error("no thing named {0} in the registry")]
    NoSuchThing(String),
    #[error("--broker must look like mqtts://HOST:PORT, not {0:?}")]
    BadBrokerUrl(String),
    #[error("the API answered with something that is not the expected JSON: {0}")]
    BadAnswer(String),
    #[error(transparent)]
    Tls(#[from] super::listeners::ListenerError),
    #[error("cannot wait for the shutdown signal: {0}")]
    Signal(std::io::Error),
}

/// The data directory option every subcommand shares.
#[derive(Debug, Clone, Args)]
pub struct DataDirArgs {
    /// The emulator's data directory (CA, registry, shadows, jobs, endpoints.json).
    /// Defaults to the platform data directory, e.g. ~/.local/share/devicehub-emulator.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

impl DataDirArgs {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }
}

/// The platform data directory for the emulator.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("devicehub-emulator"))
        .unwrap_or_else(|| PathBuf::from(".devicehub-emulator"))
}

/// `serve`: run the cloud until interrupted.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: DataDirArgs,
    /// Port of MQTT over mutual TLS (AWS port 8883's role); 0 picks a free port.
    #[arg(long, default_value_t = 8883)]
    pub mqtt_port: u16,
    /// Port of MQTT over mutual TLS with ALPN x-amzn-mqtt-ca (AWS port 443's role).
    #[arg(long, default_value_t = 8443)]
    pub alpn_port: u16,
    /// Port of MQTT over WebSocket (wss://localhost:PORT/mqtt).
    #[arg(long, default_value_t = 8444)]
    pub websocket_port: u16,
    /// Port of the shipping application's HTTP API.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Port of the HTTPS server print files are downloaded from.
    #[arg(long, default_value_t = 8081)]
    pub files_port: u16,
    /// Run the services against an external broker (Mosquitto) at mqtts://HOST:PORT instead of
    /// the embedded one. Start it with the mosquitto.conf written into the data directory.
    #[arg(long)]
    pub broker: Option<String>,
    /// How long a print file's signed URL stays valid, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub print_url_ttl: u64,
}

/// `activation-code`: create an activation code.
#[derive(Debug, Clone, Args)]
pub struct ActivationCodeArgs {
    #[command(flatten)]
    pub common: DataDirArgs,
    /// How long the code stays valid, in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub ttl_seconds: u64,
}

/// `claim-certificate DIR`: issue a claim certificate for fleet provisioning into DIR.
#[derive(Debug, Clone, Args)]
pub struct ClaimCertificateArgs {
    #[command(flatten)]
    pub common: DataDirArgs,
    /// Directory to write certificate.pem.crt, private.pem.key, ca.pem and claim.json into.
    pub dir: PathBuf,
}

/// `thing ...`
#[derive(Debug, Clone, Subcommand)]
pub enum ThingCommand {
    /// Register a thing directly (without fleet provisioning) and write its credentials to DIR.
    Create {
        #[command(flatten)]
        common: DataDirArgs,
        /// Thing name: 1..128 characters of [a-zA-Z0-9:_-].
        name: String,
        /// Directory to write certificate.pem.crt, private.pem.key, ca.pem and device.json into.
        dir: PathBuf,
    },
}

/// `job ...`
#[derive(Debug, Clone, Subcommand)]
pub enum JobCommand {
    /// Send a print job (GIF, PNG or PDF file) to a thing.
    Print {
        #[command(flatten)]
        common: DataDirArgs,
        thing: String,
        file: PathBuf,
        #[arg(long, default_value_t = 1)]
        copies: u32,
        /// The device to print on (DeviceHub's default for the kind when absent).
        #[arg(long)]
        device: Option<String>,
        /// What is printed: label, indicia or sheet.
        #[arg(long)]
        kind: Option<String>,
        /// For office printers: the envelope or sheet (an IPP media name such as
        /// na_number-10_4.125x9.5in, or letter, a4, ...).
        #[arg(long)]
        sheet_media: Option<String>,
        /// For office printers: where the image goes, X,Y in mm from the top-left corner.
        #[arg(long)]
        sheet_at: Option<String>,
        /// For office printers: the image's resolution in dpi.
        #[arg(long)]
        sheet_dpi: Option<u32>,
        /// For office printers: portrait, landscape, reverse-landscape or reverse-portrait.
        #[arg(long)]
        sheet_orientation: Option<String>,
    },
    /// Ask a thing for a scale reading.
    Scale {
        #[command(flatten)]
        common: DataDirArgs,
        thing: String,
        /// Unit to report in: g, kg, oz or lb.
        #[arg(long)]
        unit: Option<String>,
    },
    /// Cancel a job.
    Cancel {
        #[command(flatten)]
        common: DataDirArgs,
        thing: String,
        job_id: String,
    },
    /// Show a job execution's status.
    Status {
        #[command(flatten)]
        common: DataDirArgs,
        thing: String,
        job_id: String,
    },
}

/// `things`: list things with their connection state.
#[derive(Debug, Clone, Args)]
pub struct ThingsArgs {
    #[command(flatten)]
    pub common: DataDirArgs,
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    crate::command::runtime(None).map_err(CliError::Runtime)
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("a JSON value always serializes")
    );
}

/// Runs `serve`.
pub fn serve(args: ServeArgs) -> Result<(), CliError> {
    crate::command::log_to_stderr();
    let data_dir = args.common.data_dir();
    let mut config = CloudConfig::new(data_dir);
    config.http_port = args.http_port;
    config.files_port = args.files_port;
    config.print_url_ttl_s = args.print_url_ttl;
    config.broker = match &args.broker {
        None => BrokerMode::Embedded {
            mqtt_port: args.mqtt_port,
            alpn_port: args.alpn_port,
            websocket_port: args.websocket_port,
        },
        Some(url) => {
            let rest = url
                .strip_prefix("mqtts://")
                .ok_or_else(|| CliError::BadBrokerUrl(url.clone()))?;
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| CliError::BadBrokerUrl(url.clone()))?;
            let port = port
                .trim_end_matches('/')
                .parse()
                .map_err(|_| CliError::BadBrokerUrl(url.clone()))?;
            BrokerMode::External {
                host: host.to_string(),
                port,
            }
        }
    };
    runtime()?.block_on(async {
        let cloud = start(config).await?;
        let endpoints = cloud.endpoints().clone();
        if args.common.json {
            print_json(&json!(endpoints));
        } else {
            println!("DeviceHub emulator running");
            match &endpoints.external_broker {
                Some(broker) => println!("  MQTT (external broker):   {broker}"),
                None => {
                    println!("  MQTT endpoint:            {}", endpoints.mqtt_host);
                    println!("  MQTT over mutual TLS:     port {}", endpoints.mqtt_port);
                    if let Some(p) = endpoints.alpn_port {
                        println!("  MQTT with ALPN x-amzn-mqtt-ca: port {p}");
                    }
                    if let Some(url) = &endpoints.websocket_url {
                        println!("  MQTT over WebSocket:      {url}");
                    }
                }
            }
            println!("  HTTP API:                 {}", endpoints.api_url);
            println!("  Print files:              {}", endpoints.files_url);
            println!(
                "  CA certificate:           {}",
                endpoints.ca_certificate.display()
            );
            println!(
                "  Provisioning template:    {}",
                endpoints.provisioning_template
            );
            println!(
                "  Mosquitto configuration:  {}",
                endpoints.mosquitto_config.display()
            );
            println!(
                "  Data directory:           {}",
                endpoints.data_dir.display()
            );
        }
        wait_for_signal().await?;
        cloud.shutdown(Duration::from_secs(10)).await;
        // endpoints.json describes a running emulator only.
        let _ = std::fs::remove_file(Endpoints::path(&endpoints.data_dir));
        Ok(())
    })
}

async fn wait_for_signal() -> Result<(), CliError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(CliError::Signal)?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(CliError::Signal),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(CliError::Signal)
    }
}

/// A client of a running emulator's API.
struct ApiClient {
    base: String,
    http: reqwest::Client,
    data_dir: PathBuf,
}

impl ApiClient {
    fn connect(data_dir: &Path) -> Result<(Self, Endpoints), CliError> {
        let endpoints = Endpoints::load(data_dir).map_err(|source| CliError::NotRunning {
            data_dir: data_dir.to_path_buf(),
            source,
        })?;
        // An explicit TLS configuration (trusting the emulator's CA) keeps reqwest from looking
        // for a process-wide rustls provider, and lets the client fetch print files too.
        let ca_pem = std::fs::read(&endpoints.ca_certificate).map_err(|source| CliError::Read {
            path: endpoints.ca_certificate.clone(),
            source,
        })?;
        let tls = super::listeners::client_config_trusting(&ca_pem)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|source| CliError::Http {
                url: endpoints.api_url.clone(),
                source,
            })?;
        Ok((
            Self {
                base: endpoints.api_url.clone(),
                http,
                data_dir: data_dir.to_path_buf(),
            },
            endpoints,
        ))
    }

    async fn send(&self, request: reqwest::RequestBuilder, path: &str) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let http_error = |source| CliError::Http {
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(http_error)?;
        let status = response.status();
        let body = response.text().await.map_err(http_error)?;
        if !status.is_success() {
            return Err(CliError::Refused {
                status: status.as_u16(),
                body,
            });
        }
        serde_json::from_str(&body).map_err(|_| CliError::BadAnswer(body))
    }

    async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.get(format!("{}{path}", self.base)), path)
            .await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(
            self.http.post(format!("{}{path}", self.base)).json(body),
            path,
        )
        .await
    }

    /// Sends a request signed with the thing's device signature secret.
    /// The signature covers the path without the query string.
    async fn send_signed(
        &self,
        method: reqwest::Method,
        thing: &str,
        path: &str,
        query: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Value, CliError> {
        let registry = Registry::read_only(&self.data_dir)?;
        let secret = registry
            .thing(thing)
            .map(|t| t.device_signature.clone())
            .ok_or_else(|| CliError::NoSuchThing(thing.to_string()))?;
        let timestamp = SystemClock.now_epoch_s();
        let signature = signing::sign_request(&secret, method.as_str(), path, timestamp, &body);
        let request = self
            .http
            .request(method, format!("{}{path}{query}", self.base))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(signing::TIMESTAMP_HEADER, timestamp.to_string())
            .header(signing::SIGNATURE_HEADER, signature)
            .body(body);
        self.send(request, path).await
    }
}

fn field(value: &Value, name: &str) -> Result<String, CliError> {
    value
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| CliError::BadAnswer(format!("no {name} in {value}")))
}

/// Runs `activation-code`.
pub fn activation_code(args: ActivationCodeArgs) -> Result<(), CliError> {
    let data_dir = args.common.data_dir();
    runtime()?.block_on(async {
        let (client, _) = ApiClient::connect(&data_dir)?;
        let code = client
            .post_json(
                "/activation-codes",
                &json!({"ttlSeconds": args.ttl_seconds}),
            )
            .await?;
        if args.common.json {
            print_json(&code);
        } else {
            println!("{}", field(&code, "code")?);
        }
        Ok(())
    })
}

fn issued_from(answer: &Value) -> Result<(IssuedKeyPair, String), CliError> {
    Ok((
        IssuedKeyPair {
            certificate: IssuedCertificate {
                certificate_id: field(answer, "certificateId")?,
                certificate_pem: field(answer, "certificatePem")?,
            },
            private_key_pem: field(answer, "privateKey")?,
        },
        field(answer, "caCertificatePem")?,
    ))
}

fn write_json(path: &Path, value: &Value, visibility: Visibility) -> Result<(), CliError> {
    let text = serde_json::to_vec_pretty(value).expect("a JSON value always serializes");
    write_atomic(path, &text, visibility).map_err(|source| CliError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `claim-certificate DIR`.
pub fn claim_certificate(args: ClaimCertificateArgs) -> Result<(), CliError> {
    let data_dir = args.common.data_dir();
    runtime()?.block_on(async {
        let (client, endpoints) = ApiClient::connect(&data_dir)?;
        let answer = client.post_json("/claim-certificates", &json!({})).await?;
        let (issued, ca_pem) = issued_from(&answer)?;
        let paths = write_client_bundle(&args.dir, &issued, &ca_pem)?;
        let summary = json!({
            "certificateId": issued.certificate.certificate_id,
            "files": paths,
            "mqttHost": endpoints.mqtt_host,
            "mqttPort": endpoints.mqtt_port,
            "provisioningTemplate": endpoints.provisioning_template,
        });
        write_json(&args.dir.join("claim.json"), &summary, Visibility::Public)?;
        if args.common.json {
            print_json(&summary);
        } else {
            println!(
                "Claim certificate {} written to {}",
                issued.certificate.certificate_id,
                args.dir.display()
            );
        }
        Ok(())
    })
}

/// Runs `thing ...`.
pub fn thing(command: ThingCommand) -> Result<(), CliError> {
    let ThingCommand::Create { common, name, dir } = command;
    let data_dir = common.data_dir();
    runtime()?.block_on(async {
        let (client, endpoints) = ApiClient::connect(&data_dir)?;
        let answer = client
            .post_json("/things", &json!({"thingName": name}))
            .await?;
        let (issued, ca_pem) = issued_from(&answer)?;
        let paths = write_client_bundle(&dir, &issued, &ca_pem)?;
        let device = json!({
            "thingName": name,
            "certificateId": issued.certificate.certificate_id,
            "deviceSignature": field(&answer, "deviceSignature")?,
            "files": paths,
            "mqttHost": endpoints.mqtt_host,
            "mqttPort": endpoints.mqtt_port,
        });
        // The device signature is a secret: owner-only like the private key.
        write_json(&dir.join("device.json"), &device, Visibility::OwnerOnly)?;
        if common.json {
            let mut shown = device.clone();
            shown["deviceSignature"] = Value::String("(written to device.json)".into());
            print_json(&shown);
        } else {
            println!(
                "Thing {name} created; credentials written to {}",
                dir.display()
            );
        }
        Ok(())
    })
}

/// Runs `job ...`.
/// The query string of a print upload.
fn print_query(copies: u32, options: &[(&str, Option<String>)]) -> String {
    let mut query = format!("?copies={copies}");
    for (name, value) in options {
        if let Some(value) = value {
            query.push_str(&format!("&{name}={}", query_escape(value)));
        }
    }
    query
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub fn job(command: JobCommand) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let (answer, json_output) = match command {
            JobCommand::Print {
                common,
                thing,
                file,
                copies,
                device,
                kind,
                sheet_media,
                sheet_at,
                sheet_dpi,
                sheet_orientation,
            } => {
                let (client, _) = ApiClient::connect(&common.data_dir())?;
                let bytes = std::fs::read(&file).map_err(|source| CliError::Read {
                    path: file.clone(),
                    source,
                })?;
                let path = format!("/things/{thing}/print-jobs");
                // The server identifies the format from the file's first bytes.
                let answer = client
                    .send_signed(
                        reqwest::Method::POST,
                        &thing,
                        &path,
                        &print_query(
                            copies,
                            &[
                                ("device", device),
                                ("kind", kind),
                                ("sheetMedia", sheet_media),
                                ("sheetAt", sheet_at),
                                ("sheetDpi", sheet_dpi.map(|d| d.to_string())),
                                ("sheetOrientation", sheet_orientation),
                            ],
                        ),
                        "application/octet-stream",
                        bytes,
                    )
                    .await?;
                (answer, common.json)
            }
            JobCommand::Scale {
                common,
                thing,
                unit,
            } => {
                let (client, _) = ApiClient::connect(&common.data_dir())?;
                let body = match unit {
                    Some(unit) => json!({"unit": unit}),
                    None => json!({}),
                };
                let answer = client
                    .send_signed(
                        reqwest::Method::POST,
                        &thing,
                        &format!("/things/{thing}/scale-requests"),
                        "",
                        "application/json",
                        body.to_string().into_bytes(),
                    )
                    .await?;
                (answer, common.json)
            }
            JobCommand::Cancel {
                common,
                thing,
                job_id,
            } => {
                let (client, _) = ApiClient::connect(&common.data_dir())?;
                let answer = client
                    .send_signed(
                        reqwest::Method::DELETE,
                        &thing,
                        &format!("/things/{thing}/jobs/{job_id}"),
                        "",
                        "application/json",
                        Vec::new(),
                    )
                    .await?;
                (answer, common.json)
            }
            JobCommand::Status {
                common,
                thing,
                job_id,
            } => {
                let (client, _) = ApiClient::connect(&common.data_dir())?;
                (
                    client
                        .get(&format!("/things/{thing}/jobs/{job_id}"))
                        .await?,
                    common.json,
                )
            }
        };
        if json_output {
            print_json(&answer);
        } else if let Some(job_id) = answer.get("jobId").and_then(Value::as_str) {
            let status = answer
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("QUEUED");
            println!("{job_id} {status}");
        } else {
            print_json(&answer);
        }
        Ok(())
    })
}

/// Runs `things`.
pub fn things(args: ThingsArgs) -> Result<(), CliError> {
    let data_dir = args.common.data_dir();
    runtime()?.block_on(async {
        let (client, _) = ApiClient::connect(&data_dir)?;
        let things = client.get("/things").await?;
        if args.common.json {
            print_json(&things);
            return Ok(());
        }
        let list = things.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            println!("No things registered.");
        }
        for thing in list {
            let name = thing
                .get("thingName")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let state = match thing.get("connected").and_then(Value::as_bool) {
                Some(true) => "connected",
                Some(false) => "disconnected",
                None => "not seen",
            };
            let heartbeat = thing
                .get("lastHeartbeatAt")
                .and_then(Value::as_u64)
                .map(|t| format!("last heartbeat at {t}"))
                .unwrap_or_else(|| "no heartbeat".to_string());
            println!("{name}\t{state}\t{heartbeat}");
        }
        Ok(())
    })
}
