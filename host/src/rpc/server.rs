//! The request socket (ROUTER, so that a slow print does not hold up a status request) and the
//! methods behind it. Each request runs as its own task; the socket task only reads requests,
//! starts them and sends the answers back, so a bad or slow request never stops the server.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use devicehub_plugin_api::{DeviceKind, ScaleReading, ScaleState, Setting, WeightUnit};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use zeromq::{RouterSocket, SocketRecv, SocketSend, ZmqMessage};

use super::protocol::{self, method, ErrorBody, Reply};
use super::RegistrationProgress;
use crate::agent::{epoch_seconds, Agent, LocalEvent, ReadingView};
use crate::config::{Config, DeviceAddress, DeviceEntry};
use crate::devices::{self, DeviceError, OpenedDevice};
use crate::print::{self, FileFormat, PrintOptions};
use crate::render::{Halftone, Rotation};

/// Requests handled at once; more are answered `busy` at once rather than queued without bound.
const MAX_IN_FLIGHT: usize = 32;
/// How long requests still running at shutdown may take to answer (a print in progress).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long one answer may wait for a client that does not read; then it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// The default and the longest wait for a scale's answer.
const SCALE_TIMEOUT_MS: (u32, u32) = (2_000, 30_000);

/// What the methods need: the agent, the token, and where registration progress goes.
#[derive(Debug)]
pub(super) struct Methods {
    agent: Arc<Agent>,
    token: String,
    progress: broadcast::Sender<RegistrationProgress>,
    /// Numbers the jobs printed through RPC, for their job events.
    jobs: AtomicU64,
}

impl Methods {
    pub(super) fn new(
        agent: Arc<Agent>,
        token: String,
        progress: broadcast::Sender<RegistrationProgress>,
    ) -> Methods {
        Methods {
            agent,
            token,
            progress,
            jobs: AtomicU64::new(0),
        }
    }
}

/// Serves requests on `socket` until `shutdown`.
pub(super) async fn run(socket: RouterSocket, methods: Methods, shutdown: CancellationToken) {
    let methods = Arc::new(methods);
    let (mut send, mut recv) = socket.split();
    let mut running: JoinSet<(Vec<Bytes>, Reply)> = JoinSet::new();
    // Who is waiting for each running request, so that even a request whose task panicked is
    // answered (a REQ client would otherwise wait for ever).
    let mut waiting: HashMap<tokio::task::Id, Vec<Bytes>> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            received = recv.recv() => {
                let message = match received {
                    Ok(message) => message,
                    Err(e) => {
                        // A peer's broken frame ends that peer, not the server.
                        tracing::debug!("local RPC receive failed: {e}");
                        continue;
                    }
                };
                let Some((envelope, body)) = split_envelope(message.into_vec()) else {
                    continue;
                };
                match body {
                    Err(reply) => answer(&mut send, envelope, reply).await,
                    Ok(_) if running.len() >= MAX_IN_FLIGHT => {
                        let busy = Reply::failed(
                            Value::Null,
                            ErrorBody::new(
                                "busy",
                                format!("{MAX_IN_FLIGHT} requests are already running; try again"),
                            ),
                        );
                        answer(&mut send, envelope, busy).await;
                    }
                    Ok(body) => {
                        let methods = methods.clone();
                        let reply_to = envelope.clone();
                        let task = running.spawn(async move {
                            let reply = methods.handle(&body).await;
                            (reply_to, reply)
                        });
                        waiting.insert(task.id(), envelope);
                    }
                }
            }
            Some(done) = running.join_next_with_id() => {
                finished(&mut send, &mut waiting, done).await;
            }
        }
    }
    // Requests still running (a print on its way to the printer) may finish and answer.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, running.join_next_with_id()).await {
            Ok(Some(done)) => finished(&mut send, &mut waiting, done).await,
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    requests = running.len(),
                    "local RPC requests did not finish in time; they are dropped"
                );
                running.shutdown().await;
                break;
            }
        }
    }
}

/// Answers a request whose task ended, with its reply or, when the task failed, an error.
async fn finished(
    send: &mut zeromq::RouterSendHalf,
    waiting: &mut HashMap<tokio::task::Id, Vec<Bytes>>,
    done: Result<(tokio::task::Id, (Vec<Bytes>, Reply)), tokio::task::JoinError>,
) {
    match done {
        Ok((id, (envelope, reply))) => {
            waiting.remove(&id);
            answer(send, envelope, reply).await;
        }
        Err(e) => {
            tracing::error!("a local RPC request failed: {e}");
            if let Some(envelope) = waiting.remove(&e.id()) {
                let failed = Reply::failed(
                    Value::Null,
                    ErrorBody::new(
                        "internal",
                        "the request failed inside DeviceHub; see its log",
                    ),
                );
                answer(send, envelope, failed).await;
            }
        }
    }
}

/// Splits a ROUTER message into the envelope to answer to (the peer's identity, and for REQ
/// clients everything up to the empty delimiter frame) and the one body frame. `None` for a
/// message that cannot be answered at all; a body error when there is no single body frame.
fn split_envelope(frames: Vec<Bytes>) -> Option<(Vec<Bytes>, Result<Bytes, Reply>)> {
    if frames.is_empty() {
        return None;
    }
    // REQ clients put an empty delimiter after the routing frames; DEALER clients may not.
    let split_at = frames
        .iter()
        .position(|f| f.is_empty())
        .map_or(1, |delimiter| delimiter + 1);
    let mut envelope = frames;
    let mut body = envelope.split_off(split_at.min(envelope.len()));
    let body = if body.len() == 1 {
        Ok(body.remove(0))
    } else {
        Err(Reply::failed(
            Value::Null,
            ErrorBody::new(
                "malformed",
                format!(
                    "a request is one frame of JSON, this message had {}",
                    body.len()
                ),
            ),
        ))
    };
    Some((envelope, body))
}

/// Sends `reply` to the peer `envelope` names; a peer that went away or does not read is
/// dropped, never waited for.
async fn answer(send: &mut zeromq::RouterSendHalf, envelope: Vec<Bytes>, reply: Reply) {
    let mut frames = envelope;
    frames.push(Bytes::from(reply.to_bytes()));
    let message = ZmqMessage::try_from(frames).expect("an envelope and a body are not empty");
    match tokio::time::timeout(SEND_TIMEOUT, send.send(message)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("local RPC answer not delivered: {e}"),
        Err(_) => tracing::debug!("local RPC answer dropped: the client does not read"),
    }
}

fn bad_params(error: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new("badParams", format!("invalid params: {error}"))
}

/// Reads a method's params; absent params are an empty object.
fn params<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, ErrorBody> {
    let value = if value.is_null() {
        Value::Object(Default::default())
    } else {
        value.clone()
    };
    serde_json::from_value(value).map_err(bad_params)
}

fn device_error(error: &DeviceError) -> ErrorBody {
    let kind = match error {
        DeviceError::NoSuchDevice(_) => "noSuchDevice",
        DeviceError::WrongKind { .. } => "wrongKind",
        DeviceError::Detached(_) => "detached",
        DeviceError::Plugin { error, .. } => error.kind.as_str(),
        _ => "device",
    };
    ErrorBody::new(kind, error.to_string())
}

fn json_of<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("DeviceHub's own types serialize to JSON")
}

/// `print` params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PrintParams {
    /// An absolute path on this computer (the service's working folder is not the caller's).
    path: PathBuf,
    device: String,
    #[serde(default = "one")]
    copies: u32,
    /// gif, png, jpeg, pdf or raw; sniffed when absent.
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    dither: bool,
    /// auto, none, 90, 180 or 270.
    #[serde(default)]
    rotate: Option<String>,
    /// Per-job plugin settings.
    #[serde(default)]
    settings: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// `scale.read` params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ScaleParams {
    /// The scale; may be left out when exactly one scale is attached.
    #[serde(default)]
    device: Option<String>,
    /// mg, g, kg, oz or lb; the scale's own display unit when absent.
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u32>,
}

/// `register` params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RegisterParams {
    activation_code: String,
}

/// Methods that take no params still refuse unknown ones, so that a typo is not ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

impl Methods {
    /// Answers one request frame.
    async fn handle(&self, frame: &[u8]) -> Reply {
        let request = match protocol::parse_request(frame) {
            Ok(request) => request,
            Err(reply) => return reply,
        };
        if !protocol::token_matches(&request.token, &self.token) {
            tracing::warn!(method = %request.method, "local RPC request refused: wrong token");
            return Reply::failed(
                request.id,
                ErrorBody::new(
                    "unauthorized",
                    "the token is missing or wrong: send the contents of rpc.token in \
                     DeviceHub's data directory",
                ),
            );
        }
        let id = request.id.clone();
        let outcome = match request.method.as_str() {
            method::STATUS => {
                params::<NoParams>(&request.params).map(|_| json_of(&self.agent.snapshot()))
            }
            method::DEVICES => params::<NoParams>(&request.params).map(|_| {
                json!({
                    "devices": self.agent.devices().list(),
                    "problems": self.agent.devices().problems(),
                })
            }),
            method::PLUGINS => params::<NoParams>(&request.params)
                .map(|_| json_of(&crate::cli::plugin_listing(&self.agent.plugins()))),
            method::PRINT => match params(&request.params) {
                Ok(p) => self.print(p).await,
                Err(e) => Err(e),
            },
            method::SCALE_READ => match params(&request.params) {
                Ok(p) => self.read_scale(p).await,
                Err(e) => Err(e),
            },
            method::REGISTER => match params(&request.params) {
                Ok(p) => self.register(&id, p).await,
                Err(e) => Err(e),
            },
            method::CONFIG_RELOAD => match params::<NoParams>(&request.params) {
                Ok(_) => self.reload_config().await,
                Err(e) => Err(e),
            },
            method::PLUGINS_RESCAN => match params::<NoParams>(&request.params) {
                Ok(_) => Ok(json_of(&self.agent.rescan_plugins().await)),
                Err(e) => Err(e),
            },
            other => Err(ErrorBody::new(
                "unknownMethod",
                format!(
                    "no method {other:?}; the methods are status, devices, plugins, print, \
                     scale.read, register, config.reload and plugins.rescan"
                ),
            )),
        };
        match outcome {
            Ok(result) => Reply::ok(id, result),
            Err(error) => Reply::failed(id, error),
        }
    }

    /// Prints a local file on a device through the same steps as `devicehub print --device`,
    /// and publishes the job's end on the `job` topic.
    async fn print(&self, p: PrintParams) -> Result<Value, ErrorBody> {
        if !p.path.is_absolute() {
            return Err(bad_params(format!(
                "path {} must be absolute: the service does not share the caller's folder",
                p.path.display()
            )));
        }
        let options = PrintOptions {
            job_id: format!(
                "local-rpc-{}-{}",
                std::process::id(),
                self.jobs.fetch_add(1, Ordering::Relaxed) + 1
            ),
            copies: p.copies,
            format: p
                .format
                .as_deref()
                .map(|f| {
                    FileFormat::parse(f).ok_or_else(|| {
                        bad_params(format!(
                            "format {f:?} is not one of gif, png, jpeg, pdf, raw"
                        ))
                    })
                })
                .transpose()?,
            halftone: if p.dither {
                Halftone::Dither
            } else {
                Halftone::default()
            },
            rotation: match p.rotate.as_deref() {
                None | Some("auto") => Rotation::Auto,
                Some("none" | "0") => Rotation::None,
                Some("90") => Rotation::Deg90,
                Some("180") => Rotation::Deg180,
                Some("270") => Rotation::Deg270,
                Some(other) => {
                    return Err(bad_params(format!(
                        "rotate {other:?} is not one of auto, none, 90, 180, 270"
                    )))
                }
            },
            settings: p
                .settings
                .iter()
                .map(|(k, v)| Setting::new(k.as_str(), v.as_str()))
                .collect(),
        };
        let worker = self
            .agent
            .devices()
            .get(&p.device)
            .map_err(|e| device_error(&e))?;
        let profile = worker.spec().printer_profile().cloned().ok_or_else(|| {
            ErrorBody::new(
                "wrongKind",
                format!(
                    "device '{}' is a {}, not a printer",
                    p.device,
                    worker.spec().kind.as_str()
                ),
            )
        })?;
        let file = tokio::fs::read(&p.path).await.map_err(|e| {
            ErrorBody::new(
                "fileUnreadable",
                format!("cannot read {}: {e}", p.path.display()),
            )
        })?;
        let job_id = options.job_id.clone();
        // Rendering a PDF or a large image is CPU work: off the async workers.
        let prepared =
            tokio::task::spawn_blocking(move || print::prepare_job(&file, &profile, &options))
                .await
                .map_err(|e| ErrorBody::new("internal", format!("rendering stopped: {e}")))?
                .map_err(|e| ErrorBody::new("printError", e.to_string()))?;
        let pages: Vec<Value> = prepared
            .placements
            .iter()
            .map(|p| {
                json!({
                    "widthDots": p.width,
                    "heightDots": p.height,
                    "rotated": p.is_rotated(),
                    "shrunk": p.is_scaled(),
                })
            })
            .collect();
        let outcome = worker.print_async(prepared.job).await;
        let (event, result) = match outcome {
            Ok(report) => (
                json!({
                    "jobId": job_id,
                    "device": p.device,
                    "status": "SUCCEEDED",
                    "labels": report.labels,
                    "source": "local",
                    "endedAt": epoch_seconds(),
                }),
                Ok(json!({
                    "jobId": job_id,
                    "device": p.device,
                    "bytes": report.bytes_sent,
                    "labels": report.labels,
                    "detail": report.detail.to_string(),
                    "pages": pages,
                })),
            ),
            Err(e) => (
                json!({
                    "jobId": job_id,
                    "device": p.device,
                    "status": "FAILED",
                    "reason": e.to_string(),
                    "source": "local",
                    "endedAt": epoch_seconds(),
                }),
                Err(device_error(&e)),
            ),
        };
        self.agent.publish_local(LocalEvent::Job(event));
        result
    }

    /// Reads a scale through its device thread.
    async fn read_scale(&self, p: ScaleParams) -> Result<Value, ErrorBody> {
        let unit = p
            .unit
            .as_deref()
            .map(|u| {
                unit_by_name(u).ok_or_else(|| {
                    bad_params(format!("unit {u:?} is not one of mg, g, kg, oz, lb"))
                })
            })
            .transpose()?;
        let devices = self.agent.devices();
        let id = match p.device {
            Some(id) => id,
            None => {
                let scales: Vec<String> = devices
                    .list()
                    .into_iter()
                    .filter(|d| d.kind == DeviceKind::Scale.as_str())
                    .map(|d| d.id)
                    .collect();
                match scales.as_slice() {
                    [only] => only.clone(),
                    [] => {
                        return Err(ErrorBody::new(
                            "noScale",
                            "no scale is attached (see `devicehub devices`)",
                        ))
                    }
                    several => {
                        return Err(bad_params(format!(
                            "several scales are attached ({}); say which with \"device\"",
                            several.join(", ")
                        )))
                    }
                }
            }
        };
        let worker = devices.get(&id).map_err(|e| device_error(&e))?;
        if worker.spec().kind != DeviceKind::Scale {
            return Err(ErrorBody::new(
                "wrongKind",
                format!(
                    "device '{id}' is a {}, not a scale",
                    worker.spec().kind.as_str()
                ),
            ));
        }
        let timeout_ms = p
            .timeout_ms
            .unwrap_or(SCALE_TIMEOUT_MS.0)
            .clamp(1, SCALE_TIMEOUT_MS.1);
        let read_id = id.clone();
        let reading = worker
            .call_async(move |device| match device {
                OpenedDevice::Scale(scale) => scale
                    .read(timeout_ms)
                    .into_result()
                    .map_err(|error| DeviceError::Plugin { id: read_id, error }),
                _ => Err(DeviceError::WrongKind {
                    id: read_id,
                    wanted: "scale",
                    actual: "other device",
                }),
            })
            .await
            .and_then(|read| read)
            .map_err(|e| device_error(&e))?;
        let view = reading_view(&reading);
        self.agent.publish_local(LocalEvent::Scale {
            device: id.clone(),
            reading: view.clone(),
        });
        let unit = unit.unwrap_or(reading.display_unit);
        Ok(json!({
            "device": id,
            "state": view.state,
            "weight": reading.micrograms as f64 / micrograms_per(unit),
            "unit": unit_name(unit),
            "micrograms": view.micrograms,
            "resolutionMicrograms": view.resolution_micrograms,
            "displayUnit": view.display_unit,
            "atMs": view.at_ms,
        }))
    }

    /// Registers this computer; each step is published on the `registration` topic under the
    /// request's id as it happens.
    async fn register(&self, id: &Value, p: RegisterParams) -> Result<Value, ErrorBody> {
        let progress = self.progress.clone();
        let request_id = id.clone();
        let mut on_step = move |step: &crate::cloud::registration::RegistrationStep| {
            // Nobody following the progress is fine: the answer says how it ended.
            let _ = progress.send(RegistrationProgress {
                request_id: request_id.clone(),
                step: json_of(step),
            });
        };
        match self.agent.register(&p.activation_code, &mut on_step).await {
            Ok(done) => Ok(json_of(&done)),
            Err(e) => Err(ErrorBody::new(e.kind(), e.to_string())),
        }
    }

    /// Reads the config file again: device table rows that changed are detached and attached
    /// again; everything else is reported as needing a restart.
    async fn reload_config(&self) -> Result<Value, ErrorBody> {
        let path = self.agent.config().loaded_from.clone().ok_or_else(|| {
            ErrorBody::new(
                "noConfigFile",
                "DeviceHub started without a config file; there is nothing to reload",
            )
        })?;
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| ErrorBody::new("internal", format!("reading the config stopped: {e}")))?
            .map_err(|e| ErrorBody::new("configInvalid", e.to_string()))?;
        let mut needs_restart = restart_only_changes(self.agent.config(), &loaded);

        let mut rows = self.agent.device_rows().lock().await;
        let old: BTreeMap<&str, &DeviceEntry> = rows.iter().map(|d| (d.id.as_str(), d)).collect();
        let new: BTreeMap<&str, &DeviceEntry> =
            loaded.devices.iter().map(|d| (d.id.as_str(), d)).collect();
        let ids: BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
        let mut to_detach = Vec::new();
        let mut to_attach = Vec::new();
        for id in ids {
            let (before, after) = (old.get(id).copied(), new.get(id).copied());
            if before == after {
                continue;
            }
            // USB-bound rows are matched by the USB watcher, which takes its bindings at start.
            if before.is_some_and(is_usb_bound) || after.is_some_and(is_usb_bound) {
                needs_restart.push(format!("devices.{id} (bound to USB)"));
                continue;
            }
            if before.is_some() {
                to_detach.push(id.to_string());
            }
            if let Some(after) = after {
                to_attach.push(after.clone());
            }
        }
        let agent = self.agent.clone();
        let detach = to_detach.clone();
        let changes = tokio::task::spawn_blocking(move || {
            // Detaching joins a device thread and opening a serial port blocks.
            let table = agent.devices();
            for id in &detach {
                if let Ok(worker) = table.get(id) {
                    let summary = devices::summarize(worker.spec());
                    drop(worker);
                    if table.detach(id) {
                        agent.publish_local(LocalEvent::Device {
                            device: summary,
                            attached: false,
                        });
                    }
                }
            }
            let mut attached = Vec::new();
            let mut failed = Vec::new();
            for entry in &to_attach {
                let outcome = devices::resolve_entry(entry, &agent.plugins()).and_then(|spec| {
                    let connection = spec.connection.clone().ok_or_else(|| DeviceError::Open {
                        id: spec.id.clone(),
                        message: "it has no connection".into(),
                    })?;
                    let transport =
                        devices::open_transport(&connection, None).map_err(|message| {
                            DeviceError::Open {
                                id: spec.id.clone(),
                                message,
                            }
                        })?;
                    table.attach(spec, transport)
                });
                match outcome {
                    Ok(worker) => {
                        attached.push(entry.id.clone());
                        agent.publish_local(LocalEvent::Device {
                            device: devices::summarize(worker.spec()),
                            attached: true,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(device = %entry.id, "device not attached: {e}");
                        failed.push(json!({ "id": entry.id, "reason": e.to_string() }));
                    }
                }
            }
            (attached, failed)
        })
        .await
        .map_err(|e| ErrorBody::new("internal", format!("applying the config stopped: {e}")))?;
        let (attached, failed) = changes;
        // The rows now in effect are the file's, except USB-bound ones, which keep their
        // start-up binding until a restart.
        *rows = loaded
            .devices
            .iter()
            .filter(|d| !is_usb_bound(d))
            .cloned()
            .chain(rows.iter().filter(|d| is_usb_bound(d)).cloned())
            .collect();
        tracing::info!(
            attached = attached.len(),
            detached = to_detach.len(),
            "config reloaded"
        );
        Ok(json!({
            "detached": to_detach,
            "attached": attached,
            "failed": failed,
            "needsRestart": needs_restart,
        }))
    }
}

fn is_usb_bound(entry: &DeviceEntry) -> bool {
    matches!(
        DeviceAddress::parse(&entry.address),
        Ok(DeviceAddress::Usb { .. })
    )
}

/// The config keys other than the device table that differ: they take effect at a restart.
fn restart_only_changes(running: &Config, file: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |name: &str, same: bool| {
        if !same {
            changed.push(name.to_string());
        }
    };
    check("data_dir", running.data_dir == file.data_dir);
    check("plugins_dir", running.plugins_dir == file.plugins_dir);
    check("log_level", running.log_level == file.log_level);
    check("usb", running.usb == file.usb);
    check("cloud", running.cloud == file.cloud);
    check("local", running.local == file.local);
    check("plugins", running.plugins == file.plugins);
    changed
}

fn unit_by_name(name: &str) -> Option<WeightUnit> {
    Some(match name.to_ascii_lowercase().as_str() {
        "mg" => WeightUnit::Milligram,
        "g" => WeightUnit::Gram,
        "kg" => WeightUnit::Kilogram,
        "oz" => WeightUnit::Ounce,
        "lb" => WeightUnit::Pound,
        _ => return None,
    })
}

fn unit_name(unit: WeightUnit) -> &'static str {
    match unit {
        WeightUnit::Milligram => "mg",
        WeightUnit::Gram => "g",
        WeightUnit::Kilogram => "kg",
        WeightUnit::Ounce => "oz",
        WeightUnit::Pound => "lb",
    }
}

/// Micrograms in one `unit` (the avoirdupois ounce and pound are defined exactly in grams).
fn micrograms_per(unit: WeightUnit) -> f64 {
    match unit {
        WeightUnit::Milligram => 1_000.0,
        WeightUnit::Gram => 1_000_000.0,
        WeightUnit::Kilogram => 1_000_000_000.0,
        WeightUnit::Ounce => 28_349_523.125,
        WeightUnit::Pound => 453_592_370.0,
    }
}

fn reading_view(reading: &ScaleReading) -> ReadingView {
    ReadingView {
        state: match reading.state {
            ScaleState::Stable => "stable",
            ScaleState::StableAtZero => "stable at zero",
            ScaleState::InMotion => "in motion",
            ScaleState::UnderZero => "under zero",
            ScaleState::OverCapacity => "over capacity",
            ScaleState::NeedsCalibration => "needs calibration",
            ScaleState::NeedsRezero => "needs re-zero",
            ScaleState::Fault => "fault",
        },
        micrograms: reading.micrograms,
        resolution_micrograms: reading.resolution_micrograms,
        display_unit: unit_name(reading.display_unit),
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
    }

    #[test]
    fn req_envelopes_keep_everything_up_to_the_delimiter() {
        let (envelope, body) = split_envelope(frames(&[b"peer", b"", b"{}"])).expect("answerable");
        assert_eq!(envelope, frames(&[b"peer", b""]));
        assert_eq!(body.expect("one body frame"), Bytes::from_static(b"{}"));
    }

    #[test]
    fn dealer_messages_without_a_delimiter_are_answered_to_the_peer() {
        let (envelope, body) = split_envelope(frames(&[b"peer", b"{}"])).expect("answerable");
        assert_eq!(envelope, frames(&[b"peer"]));
        assert!(body.is_ok());
    }

    #[test]
    fn several_body_frames_are_refused_but_answered() {
        let (envelope, body) =
            split_envelope(frames(&[b"peer", b"", b"{}", b"{}"])).expect("answerable");
        assert_eq!(envelope.len(), 2);
        assert_eq!(
            body.expect_err("two frames").error.expect("error").kind,
            "malformed"
        );
        let (_, body) = split_envelope(frames(&[b"peer", b""])).expect("answerable");
        assert!(body.is_err());
    }

    #[test]
    fn ounces_and_pounds_convert_exactly() {
        assert_eq!(453_592_370.0 / micrograms_per(WeightUnit::Pound), 1.0);
        assert_eq!(
            micrograms_per(WeightUnit::Pound) / micrograms_per(WeightUnit::Ounce),
            16.0
        );
        assert_eq!(unit_by_name("KG"), Some(WeightUnit::Kilogram));
        assert_eq!(unit_by_name("stone"), None);
    }
}
