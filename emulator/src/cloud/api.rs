//! The shipping application's HTTP API (plain HTTP on loopback) and the HTTPS server print files
//! are downloaded from on short-lived signed URLs.
//!
//! The API is described in `docs/emulator-openapi.yaml`. Requests that act on a thing (print,
//! scale, cancel) must be signed with the thing's device signature secret (see
//! [`super::signing`]); a missing or wrong signature is refused with 401.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rumqttc::AsyncClient;
use rustls::ServerConfig;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::activity::{ThingMessage, ThingStatus};
use super::files::{write_atomic, Visibility};
use super::jobs::JobsError;
use super::mosquitto::CLAIM_COMMON_NAME;
use super::pki::CertificateAuthority;
use super::registry::{valid_thing_name, CertificateRole, Registry, RegistryError, Thing};
use super::runtime::{publish_all, Clock, Services, Shutdown};
use super::signing::{self, UrlSigner};

/// Largest print file accepted (a multi-page PDF label sheet fits easily).
pub const MAX_PRINT_FILE_BYTES: usize = 32 * 1024 * 1024;
/// Default lifetime of an activation code.
const DEFAULT_ACTIVATION_CODE_TTL_S: u64 = 24 * 60 * 60;

/// Everything the handlers share.
#[derive(Debug)]
pub struct ApiState {
    pub registry: Arc<Mutex<Registry>>,
    pub ca: Arc<CertificateAuthority>,
    pub services: Services,
    /// The services' MQTT client, to publish the notifications a new or cancelled job causes.
    pub mqtt: AsyncClient,
    pub clock: Arc<dyn Clock>,
    pub url_signer: UrlSigner,
    /// Where uploaded print files are kept, named by content hash.
    pub files_dir: PathBuf,
    /// Base URL of the print-file server, e.g. `https://localhost:8081`.
    pub files_url: String,
    pub print_url_ttl_s: u64,
    /// Published plugin bundles, served beside the print files.
    pub bundles: super::bundles::BundleShelf,
}

impl ApiState {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every error the API answers with; the body is `{"error": CODE, "message": TEXT}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the request signature is missing or does not match")]
    BadSignature,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            Self::BadSignature => (StatusCode::UNAUTHORIZED, "BadSignature"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            Self::UnsupportedMedia(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType")
            }
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            Self::BadGateway(_) => (StatusCode::BAD_GATEWAY, "BadGateway"),
            Self::Internal(detail) => {
                // Details stay in the log; the client learns only that it failed.
                tracing::error!("API request failed: {detail}");
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
            }
        };
        (
            status,
            Json(json!({"error": code, "message": self.to_string()})),
        )
            .into_response()
    }
}

pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/activation-codes", post(create_activation_code))
        .route("/claim-certificates", post(create_claim_certificate))
        .route("/things", get(list_things).post(create_thing))
        .route("/things/{thing}", get(get_thing))
        .route("/things/{thing}/messages", get(thing_messages))
        .route("/things/{thing}/print-jobs", post(submit_print_job))
        .route("/things/{thing}/scale-requests", post(submit_scale_request))
        .route("/things/{thing}/jobs", get(list_jobs))
        .route("/bundles", post(super::bundles::publish))
        .route("/bundles/downloads", get(super::bundles::downloads))
        .route(
            "/bundles/faults",
            post(super::bundles::set_fault).delete(super::bundles::clear_faults),
        )
        .route(
            "/things/{thing}/jobs/{job_id}",
            get(get_job).delete(cancel_job),
        )
        .layer(DefaultBodyLimit::max(MAX_PRINT_FILE_BYTES))
        .with_state(state.clone())
        // The page for people, its own endpoints and the printer simulators it shows.
        .merge(super::page::router(state))
}

/// Serves the API until shutdown.
pub async fn serve_api(listener: TcpListener, state: Arc<ApiState>, mut shutdown: Shutdown) {
    let app = router(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
    {
        tracing::error!("the HTTP API stopped: {e}");
    }
}

/// Serves print files and published plugin bundles over HTTPS until shutdown.
pub async fn serve_files(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: Arc<ApiState>,
    mut shutdown: Shutdown,
) {
    let app = Router::new()
        .route("/files/{name}", get(get_file))
        .route("/bundles/{version}/{file}", get(super::bundles::serve))
        .with_state(state);
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                let mut shutdown = shutdown.clone();
                connections.spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = shutdown.wait() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.wait() => break,
        }
    }
    while connections.join_next().await.is_some() {}
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ActivationCodeRequest {
    ttl_seconds: Option<u64>,
}

async fn create_activation_code(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: ActivationCodeRequest = if body.is_empty() {
        ActivationCodeRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?
    };
    let now = state.clock.now_epoch_s();
    let code = state
        .registry()
        .create_activation_code(
            now,
            request.ttl_seconds.unwrap_or(DEFAULT_ACTIVATION_CODE_TTL_S),
        )
        .map_err(internal)?;
    Ok((StatusCode::CREATED, Json(json!(code))))
}

async fn create_claim_certificate(
    State(state): State<Arc<ApiState>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let issued = state
        .ca
        .create_key_and_certificate(CLAIM_COMMON_NAME)
        .map_err(internal)?;
    state
        .registry()
        .set_certificate_role(
            &issued.certificate.certificate_id,
            CertificateRole::Claim,
            state.clock.now_epoch_s(),
        )
        .map_err(internal)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "certificateId": issued.certificate.certificate_id,
            "certificatePem": issued.certificate.certificate_pem,
            "privateKey": issued.private_key_pem,
            "caCertificatePem": state.ca.ca_certificate_pem(),
        })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateThingRequest {
    thing_name: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

async fn create_thing(
    State(state): State<Arc<ApiState>>,
    Json(request): Json<CreateThingRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !valid_thing_name(&request.thing_name) {
        return Err(ApiError::BadRequest(format!(
            "thing name {:?} is not 1..128 characters of [a-zA-Z0-9:_-]",
            request.thing_name
        )));
    }
    if state.registry().thing(&request.thing_name).is_some() {
        return Err(ApiError::Conflict(format!(
            "thing {} already exists",
            request.thing_name
        )));
    }
    let issued = state
        .ca
        .create_key_and_certificate(&request.thing_name)
        .map_err(internal)?;
    let thing = state
        .registry()
        .create_thing(
            &request.thing_name,
            &issued.certificate.certificate_id,
            request.attributes,
            state.clock.now_epoch_s(),
        )
        .map_err(|e| match e {
            RegistryError::ThingExists(_) => ApiError::Conflict(e.to_string()),
            other => internal(other),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "thingName": thing.thing_name,
            "certificateId": issued.certificate.certificate_id,
            "certificatePem": issued.certificate.certificate_pem,
            "privateKey": issued.private_key_pem,
            "caCertificatePem": state.ca.ca_certificate_pem(),
            "deviceSignature": thing.device_signature,
        })),
    ))
}

/// A thing as the API lists it (the device signature secret is never listed).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ThingView {
    thing_name: String,
    certificate_id: String,
    attributes: BTreeMap<String, String>,
    created_at: u64,
    #[serde(flatten)]
    status: ThingStatus,
}

fn view(thing: &Thing, status: ThingStatus) -> ThingView {
    ThingView {
        thing_name: thing.thing_name.clone(),
        certificate_id: thing.certificate_id.clone(),
        attributes: thing.attributes.clone(),
        created_at: thing.created_at,
        status,
    }
}

async fn list_things(State(state): State<Arc<ApiState>>) -> Json<Vec<ThingView>> {
    let things: Vec<Thing> = state.registry().things().cloned().collect();
    Json(
        things
            .iter()
            .map(|t| view(t, state.services.activity.status(&t.thing_name)))
            .collect(),
    )
}

pub(super) fn find_thing(state: &ApiState, name: &str) -> Result<Thing, ApiError> {
    state
        .registry()
        .thing(name)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no thing named {name}")))
}

async fn get_thing(
    State(state): State<Arc<ApiState>>,
    Path(thing): Path<String>,
) -> Result<Json<ThingView>, ApiError> {
    let found = find_thing(&state, &thing)?;
    Ok(Json(view(&found, state.services.activity.status(&thing))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    /// Only messages with a larger sequence number.
    #[serde(default)]
    after: u64,
    #[serde(default = "default_message_limit")]
    limit: usize,
}

fn default_message_limit() -> usize {
    100
}

async fn thing_messages(
    State(state): State<Arc<ApiState>>,
    Path(thing): Path<String>,
    Query(query): Query<MessagesQuery>,
) -> Result<Json<Vec<ThingMessage>>, ApiError> {
    find_thing(&state, &thing)?;
    Ok(Json(state.services.activity.messages(
        &thing,
        query.after,
        query.limit,
    )))
}

/// Checks the request's signature against the thing's device signature secret.
fn verify_signature(
    state: &ApiState,
    thing: &Thing,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let timestamp = header(signing::TIMESTAMP_HEADER)
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or(ApiError::BadSignature)?;
    let signature = header(signing::SIGNATURE_HEADER).ok_or(ApiError::BadSignature)?;
    if signing::verify_request(
        &thing.device_signature,
        method.as_str(),
        uri.path(),
        timestamp,
        body,
        signature,
        state.clock.now_epoch_s(),
    ) {
        Ok(())
    } else {
        Err(ApiError::BadSignature)
    }
}

/// Print file formats the API accepts, recognised by their leading bytes.
fn detect_format(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("gif")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(b"%PDF-") {
        Some("pdf")
    } else {
        None
    }
}

fn content_type_of(format: &str) -> &'static str {
    match format {
        "gif" => "image/gif",
        "png" => "image/png",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrintQuery {
    #[serde(default = "one")]
    copies: u32,
    step_timeout_minutes: Option<u32>,
    /// The device the job names; DeviceHub's default rule applies when absent.
    device: Option<String>,
    /// `label`, `indicia` or `sheet`.
    kind: Option<String>,
    /// For office printers: the media name (`sheet.media`).
    sheet_media: Option<String>,
    /// For office printers: where an image goes, `X,Y` in mm (`sheet.xMm`, `sheet.yMm`).
    sheet_at: Option<String>,
    /// For office printers: the image's resolution (`sheet.imageDpi`).
    sheet_dpi: Option<u32>,
    /// For office printers: `portrait`, `landscape`, ... (`sheet.orientation`).
    sheet_orientation: Option<String>,
}

impl PrintQuery {
    /// The `sheet` object of the job document, when any of its parameters is given.
    fn sheet(&self) -> Result<Option<Value>, ApiError> {
        if self.sheet_media.is_none()
            && self.sheet_at.is_none()
            && self.sheet_dpi.is_none()
            && self.sheet_orientation.is_none()
        {
            return Ok(None);
        }
        let mut sheet = serde_json::Map::new();
        if let Some(media) = &self.sheet_media {
            sheet.insert("media".into(), json!(media));
        }
        if let Some(at) = &self.sheet_at {
            let parsed = at.split_once(',').and_then(|(x, y)| {
                Some((x.trim().parse::<f64>().ok()?, y.trim().parse::<f64>().ok()?))
            });
            let Some((x, y)) = parsed else {
                return Err(ApiError::BadRequest(format!(
                    "sheetAt {at:?} is not X,Y in millimetres"
                )));
            };
            sheet.insert("xMm".into(), json!(x));
            sheet.insert("yMm".into(), json!(y));
        }
        if let Some(dpi) = self.sheet_dpi {
            sheet.insert("imageDpi".into(), json!(dpi));
        }
        if let Some(orientation) = &self.sheet_orientation {
            sheet.insert("orientation".into(), json!(orientation));
        }
        Ok(Some(Value::Object(sheet)))
    }
}

fn one() -> u32 {
    1
}

/// A print job given by URL instead of uploaded bytes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrintByUrl {
    url: String,
    format: String,
    sha256: Option<String>,
    size: Option<u64>,
    #[serde(default = "one")]
    copies: u32,
    device: Option<String>,
    kind: Option<String>,
    /// The media the file was laid out for, passed through to the job document.
    media: Option<Value>,
    /// How the job prints on an office printer, passed through to the job document.
    sheet: Option<Value>,
}

/// Adds the optional targeting fields of a print request to its job document.
fn target(
    mut document: Value,
    device: Option<String>,
    kind: Option<String>,
    media: Option<Value>,
    sheet: Option<Value>,
) -> Result<Value, ApiError> {
    if let Some(kind) = kind {
        if !["label", "indicia", "sheet"].contains(&kind.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "kind {kind} is not label, indicia or sheet"
            )));
        }
        document["kind"] = Value::String(kind);
    }
    if let Some(device) = device {
        document["device"] = Value::String(device);
    }
    if let Some(media) = media {
        document["media"] = media;
    }
    if let Some(sheet) = sheet {
        document["sheet"] = sheet;
    }
    Ok(document)
}

/// Maps a jobs engine error to the HTTP answer it deserves.
fn jobs_error(e: JobsError) -> ApiError {
    match e {
        JobsError::ExecutionNotFound { .. } => ApiError::NotFound(e.to_string()),
        JobsError::AlreadyTerminal { .. } | JobsError::ExecutionExists { .. } => {
            ApiError::Conflict(e.to_string())
        }
        JobsError::Load { .. } | JobsError::Save { .. } => internal(e),
        other => ApiError::BadRequest(other.to_string()),
    }
}

fn new_job_id(kind: &str) -> String {
    let id: [u8; 8] = rand::random();
    format!("{kind}-{}", hex::encode(id))
}

/// Creates the job in the engine and publishes its notifications.
pub(super) async fn create_job(
    state: &ApiState,
    thing: &str,
    kind: &str,
    document: Value,
    step_timeout_minutes: Option<u32>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let job_id = new_job_id(kind);
    let now = state.clock.now_epoch_s();
    let outgoing = state
        .services
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .create_job(thing, &job_id, document.clone(), step_timeout_minutes, now)
        .map_err(jobs_error)?;
    publish_all(&state.mqtt, outgoing).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"jobId": job_id, "thingName": thing, "document": document})),
    ))
}

/// Stores an uploaded print file under its content hash and builds the print job document
/// that points at it through a signed, short-lived URL. Shared by the signed API and the page.
pub(super) fn uploaded_print_document(
    state: &ApiState,
    body: &[u8],
    content_type: &str,
    copies: u32,
    device: Option<String>,
    kind: Option<String>,
    sheet: Option<Value>,
) -> Result<Value, ApiError> {
    if !(1..=1000).contains(&copies) {
        return Err(ApiError::BadRequest("copies must be 1..1000".into()));
    }
    let Some(format) = detect_format(body) else {
        return Err(ApiError::UnsupportedMedia(
            "the print file is not a GIF, PNG or PDF".into(),
        ));
    };
    let declared = content_type.split(';').next().unwrap_or("").trim();
    if declared != "application/octet-stream" && declared != content_type_of(format) {
        return Err(ApiError::UnsupportedMedia(format!(
            "Content-Type {declared} does not match the file, which is {format}"
        )));
    }
    let sha256 = hex::encode(Sha256::digest(body));
    let name = format!("{sha256}.{format}");
    let path = state.files_dir.join(&name);
    if !path.exists() {
        write_atomic(&path, body, Visibility::Public).map_err(internal)?;
    }
    let url_path = format!("/files/{name}");
    let expires = state.clock.now_epoch_s() + state.print_url_ttl_s;
    let signature = state.url_signer.sign(&url_path, expires);
    let url = format!(
        "{}{url_path}?expires={expires}&signature={signature}",
        state.files_url
    );
    target(
        json!({
            "operation": "print",
            "file": {"url": url, "sha256": sha256, "size": body.len(), "format": format},
            "copies": copies,
        }),
        device,
        kind,
        None,
        sheet,
    )
}

async fn submit_print_job(
    State(state): State<Arc<ApiState>>,
    Path(thing_name): Path<String>,
    Query(query): Query<PrintQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let thing = find_thing(&state, &thing_name)?;
    verify_signature(&state, &thing, &method, &uri, &headers, &body)?;
    if !(1..=1000).contains(&query.copies) {
        return Err(ApiError::BadRequest("copies must be 1..1000".into()));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let document = if content_type.starts_with("application/json") {
        let request: PrintByUrl =
            serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if !request.url.starts_with("https://") {
            return Err(ApiError::BadRequest(
                "the print file URL must be https".into(),
            ));
        }
        if !["gif", "png", "pdf"].contains(&request.format.as_str()) {
            return Err(ApiError::UnsupportedMedia(format!(
                "format {} is not gif, png or pdf",
                request.format
            )));
        }
        let mut file = json!({"url": request.url, "format": request.format});
        if let Some(sha) = request.sha256 {
            file["sha256"] = Value::String(sha);
        }
        if let Some(size) = request.size {
            file["size"] = Value::from(size);
        }
        target(
            json!({"operation": "print", "file": file, "copies": request.copies}),
            request.device,
            request.kind,
            request.media,
            request.sheet,
        )?
    } else {
        uploaded_print_document(
            &state,
            &body,
            content_type,
            query.copies,
            query.device.clone(),
            query.kind.clone(),
            query.sheet()?,
        )?
    };
    create_job(
        &state,
        &thing_name,
        "print",
        document,
        query.step_timeout_minutes,
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScaleRequest {
    /// Unit the reading should be reported in (`g`, `kg`, `oz`, `lb`); the device's own when absent.
    unit: Option<String>,
    step_timeout_minutes: Option<u32>,
}

async fn submit_scale_request(
    State(state): State<Arc<ApiState>>,
    Path(thing_name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let thing = find_thing(&state, &thing_name)?;
    verify_signature(&state, &thing, &method, &uri, &headers, &body)?;
    create_scale_job(&state, &thing_name, &body).await
}

/// Creates a `scale.read` job from a request body (`{"unit": ..}` or empty). Shared by the
/// signed API and the page.
pub(super) async fn create_scale_job(
    state: &ApiState,
    thing_name: &str,
    body: &[u8],
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: ScaleRequest = if body.is_empty() {
        ScaleRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(e.to_string()))?
    };
    if let Some(unit) = &request.unit {
        if !["g", "kg", "oz", "lb"].contains(&unit.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unit {unit} is not g, kg, oz or lb"
            )));
        }
    }
    let mut document = json!({"operation": "scale.read"});
    if let Some(unit) = request.unit {
        document["unit"] = Value::String(unit);
    }
    create_job(
        state,
        thing_name,
        "scale",
        document,
        request.step_timeout_minutes,
    )
    .await
}

async fn list_jobs(
    State(state): State<Arc<ApiState>>,
    Path(thing): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    find_thing(&state, &thing)?;
    Ok(Json(
        state
            .services
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list(&thing),
    ))
}

/// The longest `waitMs` a request may ask for.
pub const MAX_JOB_WAIT_MS: u64 = 60_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JobQuery {
    /// Answer once the execution has ended (SUCCEEDED, FAILED, REJECTED, TIMED_OUT, CANCELED,
    /// REMOVED), or after this many milliseconds with its status then, instead of at once.
    wait_ms: Option<u64>,
}

async fn get_job(
    State(state): State<Arc<ApiState>>,
    Path((thing, job_id)): Path<(String, String)>,
    Query(query): Query<JobQuery>,
) -> Result<Json<Value>, ApiError> {
    let wait = match query.wait_ms {
        Some(ms) if ms > MAX_JOB_WAIT_MS => {
            return Err(ApiError::BadRequest(format!(
                "waitMs {ms} is over the {MAX_JOB_WAIT_MS} ms limit"
            )))
        }
        Some(ms) => Duration::from_millis(ms),
        None => Duration::ZERO,
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before reading, so that a change between the read and the wait wakes it.
        let changed = state.services.jobs_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let execution = current_execution(&state, &thing, &job_id)?;
        let ended = !matches!(execution["status"].as_str(), Some("QUEUED" | "IN_PROGRESS"));
        if ended || tokio::time::Instant::now() >= deadline {
            return Ok(Json(execution));
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The execution as the Jobs engine holds it now.
fn current_execution(state: &ApiState, thing: &str, job_id: &str) -> Result<Value, ApiError> {
    state
        .services
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .execution(thing, job_id)
        .ok_or_else(|| ApiError::NotFound(format!("no job {job_id} for thing {thing}")))
}

async fn cancel_job(
    State(state): State<Arc<ApiState>>,
    Path((thing_name, job_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let thing = find_thing(&state, &thing_name)?;
    verify_signature(&state, &thing, &method, &uri, &headers, &body)?;
    let now = state.clock.now_epoch_s();
    let outgoing = state
        .services
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .cancel_job(&thing_name, &job_id, now)
        .map_err(jobs_error)?;
    state.services.jobs_changed.notify_waiters();
    publish_all(&state.mqtt, outgoing).await;
    current_execution(&state, &thing_name, &job_id).map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQuery {
    expires: u64,
    signature: String,
}

async fn get_file(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(query): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let url_path = format!("/files/{name}");
    if !state.url_signer.verify(
        &url_path,
        query.expires,
        &query.signature,
        state.clock.now_epoch_s(),
    ) {
        // S3 answers an expired or tampered presigned URL with 403.
        return Ok((
            StatusCode::FORBIDDEN,
            Json(json!({"error": "AccessDenied", "message": "the URL signature is invalid or has expired"})),
        )
            .into_response());
    }
    // The name was signed by us, so it is one of our own `<sha256>.<ext>` names; checking the
    // shape anyway keeps a path separator from ever reaching the file system.
    let Some((hash, ext)) = name.split_once('.') else {
        return Err(ApiError::NotFound(name));
    };
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::NotFound(name));
    }
    let bytes = match tokio::fs::read(state.files_dir.join(&name)).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ApiError::NotFound(name)),
        Err(e) => return Err(internal(e)),
    };
    Ok(([(header::CONTENT_TYPE, content_type_of(ext))], bytes).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_recognised_by_their_magic_bytes() {
        assert_eq!(detect_format(b"GIF89a..."), Some("gif"));
        assert_eq!(detect_format(b"\x89PNG\r\n\x1a\nrest"), Some("png"));
        assert_eq!(detect_format(b"%PDF-1.7"), Some("pdf"));
        assert_eq!(detect_format(b"<html>"), None);
    }
}
