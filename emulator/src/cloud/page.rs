//! The emulator's web page: a person plays the shipping application in a browser. The page
//! lists things, submits print jobs (a built-in sample or an uploaded GIF, PNG or PDF) and
//! scale readings, follows each job through its states by polling the jobs API, and shows the
//! labels a printer simulator printed for a job as PNG images.
//!
//! # Routes
//! - `GET /`, `GET /page.js`, `GET /page.css`: the page, self-contained (no external scripts,
//!   fonts or styles), embedded in the binary.
//! - `GET /page/samples`: the built-in sample files.
//! - `POST /page/things/{thing}/print-jobs?sample=NAME&copies=N&device=ID&kind=K`: a print job
//!   from a sample (empty body) or from the uploaded file (the body).
//! - `POST /page/things/{thing}/scale-requests`: a `scale.read` job (`{"unit": ..}` or empty).
//! - `GET /page/things/{thing}/jobs/{job}/labels`: the labels printed for a job that succeeded.
//! - `GET /printers`, `POST /printers` (`{"name": .., "control": "http://127.0.0.1:PORT"}`):
//!   the printer simulators the cloud knows, by the device ID DeviceHub gives them.
//! - `GET /printers/{name}/labels`, `GET /printers/{name}/labels/{index}/png`: their labels,
//!   fetched from the simulator's control API.
//!
//! # Why the page's own job endpoints are safe without a device signature
//! The signed API wants the thing's device signature secret, which a browser must not hold.
//! The page's endpoints create the same jobs without it, but only for requests that come from
//! the page itself: the `Host` must be a loopback name (so that a DNS-rebinding site cannot
//! become same-origin), an `Origin` or `Sec-Fetch-Site` header, when the browser sends one,
//! must say the request is same-origin, and the request must carry the random token the page
//! was served with in the `x-devicehub-page-token` header. A custom header cannot be sent
//! cross-origin without a CORS preflight, which this server never grants.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{
    create_job, create_scale_job, find_thing, internal, uploaded_print_document, ApiError, ApiState,
};

/// The header the page's scripts send its token in.
pub const TOKEN_HEADER: &str = "x-devicehub-page-token";
/// How long a request to a printer simulator's control API may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// Labels listed for one job at most (a job of many copies or pages shows its first ones).
const MAX_LABELS_PER_JOB: usize = 20;

const PAGE_HTML: &str = include_str!("../../assets/page/index.html");
const PAGE_JS: &str = include_str!("../../assets/page/page.js");
const PAGE_CSS: &str = include_str!("../../assets/page/page.css");

/// A built-in print file a person can send without having one at hand.
struct Sample {
    name: &'static str,
    title: &'static str,
    kind: &'static str,
    bytes: &'static [u8],
}

/// The samples are the host's test fixtures, so the page prints exactly what the tests print.
const SAMPLES: &[Sample] = &[
    Sample {
        name: "label-4x6.pdf",
        title: "4 x 6 in shipping label (PDF)",
        kind: "label",
        bytes: include_bytes!("../../../tests/fixtures/labels/label-4x6.pdf"),
    },
    Sample {
        name: "indicia.gif",
        title: "Postage indicium (GIF)",
        kind: "indicia",
        bytes: include_bytes!("../../../tests/fixtures/labels/indicia.gif"),
    },
    Sample {
        name: "label.png",
        title: "4 x 6 in raster label (PNG)",
        kind: "label",
        bytes: include_bytes!("../../../tests/fixtures/labels/label.png"),
    },
];

/// A printer simulator the cloud was told about.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredPrinter {
    /// The device ID DeviceHub knows the printer by (job outcomes name it).
    pub name: String,
    /// The simulator's control API, `http://127.0.0.1:PORT`.
    pub control: String,
    /// Family and model as the simulator reports them.
    pub family: String,
    pub model: String,
}

/// What the page's handlers share besides the API state.
#[derive(Debug)]
struct PageState {
    api: Arc<ApiState>,
    /// Random per start; the page carries it into its own POSTs.
    token: String,
    printers: Mutex<BTreeMap<String, RegisteredPrinter>>,
    /// Talks to the simulators' control APIs (plain HTTP on loopback); why it could not be
    /// built, if it could not, is reported on the first request that needs it.
    http: Result<reqwest::Client, String>,
}

impl PageState {
    fn printers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RegisteredPrinter>> {
        self.printers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn printer(&self, name: &str) -> Result<RegisteredPrinter, ApiError> {
        self.printers()
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("no printer named {name}")))
    }
}

/// The page's routes over the API's state.
pub fn router(api: Arc<ApiState>) -> Router {
    let token: [u8; 16] = rand::random();
    let state = Arc::new(PageState {
        api,
        token: hex::encode(token),
        printers: Mutex::new(BTreeMap::new()),
        http: control_client().map_err(|e| e.to_string()),
    });
    Router::new()
        .route("/", get(page))
        .route("/page.js", get(page_js))
        .route("/page.css", get(page_css))
        .route("/page/samples", get(samples))
        .route("/page/things/{thing}/print-jobs", post(page_print_job))
        .route(
            "/page/things/{thing}/scale-requests",
            post(page_scale_request),
        )
        .route("/page/things/{thing}/jobs/{job_id}/labels", get(job_labels))
        .route("/printers", get(list_printers).post(register_printer))
        .route("/printers/{name}/labels", get(printer_labels))
        .route(
            "/printers/{name}/labels/{index}/png",
            get(printer_label_png),
        )
        .with_state(state)
}

/// The client for the simulators' control APIs. They are plain HTTP, but reqwest's rustls
/// backend needs a crypto provider all the same: the emulator's own is handed over.
fn control_client() -> Result<reqwest::Client, Box<dyn std::error::Error>> {
    let tls = rustls::ClientConfig::builder_with_provider(super::listeners::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .timeout(CONTROL_TIMEOUT)
        .no_proxy()
        .use_preconfigured_tls(tls)
        .build()?)
}

/// Whether a `Host` header names this computer's loopback interface.
fn loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

/// Refuses requests whose `Host` is not loopback, and cross-origin ones: what every page route
/// checks, the token aside.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST).unwrap_or("");
    if !loopback_host(host) {
        return Err(ApiError::Forbidden(
            "the page answers only on a loopback address".into(),
        ));
    }
    if let Some(origin) = text(header::ORIGIN) {
        if origin != format!("http://{host}") {
            return Err(ApiError::Forbidden(
                "cross-origin requests are refused".into(),
            ));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return Err(ApiError::Forbidden(
                "cross-site requests are refused".into(),
            ));
        }
    }
    Ok(())
}

/// Compares without stopping at the first difference, so that timing does not reveal how much
/// of a guessed token was right.
fn tokens_match(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// What the page's POSTs must pass: same origin and the page's token.
fn from_page(page: &PageState, headers: &HeaderMap) -> Result<(), ApiError> {
    same_origin(headers)?;
    let given = headers
        .get(TOKEN_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if tokens_match(given, page.token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "the page token is missing or wrong; reload the page".into(),
        ))
    }
}

/// Headers every page asset carries: nothing but this origin may be loaded or framed.
fn asset(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'; \
                 form-action 'self'; base-uri 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn page(
    State(page): State<Arc<PageState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    Ok(asset(
        "text/html; charset=utf-8",
        PAGE_HTML.replace("{{PAGE_TOKEN}}", &page.token),
    ))
}

async fn page_js() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS.to_string())
}

async fn page_css() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS.to_string())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SampleView {
    name: &'static str,
    title: &'static str,
    kind: &'static str,
}

async fn samples() -> Json<Vec<SampleView>> {
    Json(
        SAMPLES
            .iter()
            .map(|s| SampleView {
                name: s.name,
                title: s.title,
                kind: s.kind,
            })
            .collect(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PagePrintQuery {
    /// A built-in sample's name; the body is the file when absent.
    sample: Option<String>,
    #[serde(default = "one")]
    copies: u32,
    device: Option<String>,
    kind: Option<String>,
}

fn one() -> u32 {
    1
}

/// An empty form field means "not chosen".
fn chosen(field: Option<String>) -> Option<String> {
    field.filter(|v| !v.trim().is_empty())
}

async fn page_print_job(
    State(page): State<Arc<PageState>>,
    Path(thing): Path<String>,
    Query(query): Query<PagePrintQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    from_page(&page, &headers)?;
    find_thing(&page.api, &thing)?;
    let (bytes, content_type, sample_kind): (&[u8], &str, Option<&str>) = match chosen(query.sample)
    {
        Some(name) => {
            let sample = SAMPLES
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| ApiError::BadRequest(format!("no sample named {name}")))?;
            (sample.bytes, "application/octet-stream", Some(sample.kind))
        }
        None => (
            &body,
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream"),
            None,
        ),
    };
    if bytes.is_empty() {
        return Err(ApiError::BadRequest(
            "choose a sample or a file to print".into(),
        ));
    }
    let kind = chosen(query.kind).or_else(|| sample_kind.map(str::to_string));
    let document = uploaded_print_document(
        &page.api,
        bytes,
        content_type,
        query.copies,
        chosen(query.device),
        kind,
        None,
    )?;
    create_job(&page.api, &thing, "print", document, None).await
}

async fn page_scale_request(
    State(page): State<Arc<PageState>>,
    Path(thing): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    from_page(&page, &headers)?;
    find_thing(&page.api, &thing)?;
    create_scale_job(&page.api, &thing, &body).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrinterRegistration {
    /// The device ID DeviceHub uses for the printer.
    name: String,
    /// The simulator's control API.
    control: String,
}

/// Accepts only `http://127.0.0.1:PORT` or `http://localhost:PORT` (an optional trailing
/// slash): the cloud fetches from this URL, so it must not be a way to reach anything else.
fn loopback_control_url(text: &str) -> Option<String> {
    let rest = text.strip_prefix("http://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest.rsplit_once(':')?;
    if !matches!(host, "127.0.0.1" | "localhost") {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some(format!("http://{host}:{port}"))
}

fn valid_printer_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

async fn register_printer(
    State(page): State<Arc<PageState>>,
    headers: HeaderMap,
    Json(request): Json<PrinterRegistration>,
) -> Result<(StatusCode, Json<RegisteredPrinter>), ApiError> {
    same_origin(&headers)?;
    if !valid_printer_name(&request.name) {
        return Err(ApiError::BadRequest(format!(
            "printer name {:?} is not 1..64 characters of [a-zA-Z0-9._-]",
            request.name
        )));
    }
    let control = loopback_control_url(&request.control).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "control URL {} is not http://127.0.0.1:PORT or http://localhost:PORT",
            request.control
        ))
    })?;
    // Asking the simulator for its status proves it is one and names its family and model.
    let status = control_json(&page, &control, "/status").await?;
    let field = |name: &str| {
        status
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::BadGateway(format!(
                    "{control}/status did not answer like a printer simulator"
                ))
            })
    };
    let (family, model) = (field("family")?, field("model")?);
    let printer = RegisteredPrinter {
        name: request.name.clone(),
        control,
        family,
        model,
    };
    page.printers().insert(request.name, printer.clone());
    Ok((StatusCode::CREATED, Json(printer)))
}

async fn list_printers(State(page): State<Arc<PageState>>) -> Json<Vec<RegisteredPrinter>> {
    Json(page.printers().values().cloned().collect())
}

/// Fetches a response from a simulator's control API; a simulator that is gone or answers
/// with an error is a bad gateway, not this server's failure.
async fn control_get(
    page: &PageState,
    control: &str,
    path: &str,
) -> Result<reqwest::Response, ApiError> {
    let url = format!("{control}{path}");
    let http = page.http.as_ref().map_err(internal)?;
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|e| ApiError::BadGateway(format!("{url} did not answer: {e}")))?;
    match response.status() {
        s if s.is_success() => Ok(response),
        reqwest::StatusCode::NOT_FOUND => Err(ApiError::NotFound(format!("{url} was not found"))),
        s => Err(ApiError::BadGateway(format!("{url} answered {s}"))),
    }
}

async fn control_json(page: &PageState, control: &str, path: &str) -> Result<Value, ApiError> {
    control_get(page, control, path)
        .await?
        .json()
        .await
        .map_err(|e| ApiError::BadGateway(format!("{control}{path} answered no JSON: {e}")))
}

async fn printer_labels(
    State(page): State<Arc<PageState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let printer = page.printer(&name)?;
    Ok(Json(
        control_json(&page, &printer.control, "/labels").await?,
    ))
}

async fn printer_label_png(
    State(page): State<Arc<PageState>>,
    Path((name, index)): Path<(String, usize)>,
) -> Result<Response, ApiError> {
    let printer = page.printer(&name)?;
    let png = control_get(&page, &printer.control, &format!("/labels/{index}/png"))
        .await?
        .bytes()
        .await
        .map_err(|e| ApiError::BadGateway(format!("reading a label from {name} failed: {e}")))?;
    if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(ApiError::BadGateway(format!(
            "{name} answered something that is not a PNG"
        )));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        png,
    )
        .into_response())
}

/// The labels printed for one job, as the page shows them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobLabels {
    /// The device the job printed on (from its outcome).
    device: String,
    /// Whether the cloud knows that device's simulator; without it there are no images.
    known_printer: bool,
    /// `/printers/{device}/labels/{index}/png` for each label.
    labels: Vec<JobLabel>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobLabel {
    index: usize,
    width: u64,
    height: u64,
    png: String,
}

/// When a job ran on its device, in whole seconds: from the device taking it (`startedAt`, or
/// `queuedAt` when it went straight to an outcome) to its last update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    from: u64,
    until: u64,
}

impl Window {
    fn of(execution: &Value) -> Self {
        Window {
            from: execution
                .get("startedAt")
                .or_else(|| execution.get("queuedAt"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
            until: execution
                .get("lastUpdatedAt")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX),
        }
    }

    fn contains(&self, second: u64) -> bool {
        (self.from..=self.until).contains(&second)
    }

    fn overlaps(&self, other: &Window) -> bool {
        self.from <= other.until && other.from <= self.until
    }
}

/// Picks the labels of job `job` among `jobs` (the succeeded print jobs on one device, in the
/// order the device took them) from `labels` (index and time in seconds, in print order).
///
/// A device prints one job at a time, so the labels of jobs whose windows overlap come in job
/// order. When those jobs and the labels in their windows are equally many (one label record
/// per job, the common case), each job gets its own label even within one second. Otherwise
/// the job gets every label in its window, which can include a neighbour's.
fn labels_of_job(job: usize, jobs: &[Window], labels: &[(usize, u64)]) -> Vec<usize> {
    let window = jobs[job];
    let group: Vec<usize> = (0..jobs.len())
        .filter(|&other| jobs[other].overlaps(&window))
        .collect();
    let from = group
        .iter()
        .map(|&j| jobs[j].from)
        .min()
        .unwrap_or(window.from);
    let until = group
        .iter()
        .map(|&j| jobs[j].until)
        .max()
        .unwrap_or(window.until);
    let candidates: Vec<usize> = labels
        .iter()
        .filter(|(_, second)| (from..=until).contains(second))
        .map(|(index, _)| *index)
        .collect();
    if candidates.len() == group.len() {
        if let Some(position) = group.iter().position(|&j| j == job) {
            return vec![candidates[position]];
        }
    }
    labels
        .iter()
        .filter(|(_, second)| window.contains(*second))
        .map(|(index, _)| *index)
        .collect()
}

/// The labels of a succeeded print job, found by the device its outcome names and by when it
/// ran (see [`labels_of_job`]).
async fn job_labels(
    State(page): State<Arc<PageState>>,
    Path((thing, job_id)): Path<(String, String)>,
) -> Result<Json<JobLabels>, ApiError> {
    let executions = page
        .api
        .services
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .list(&thing);
    let execution = executions
        .iter()
        .find(|e| e.get("jobId").and_then(Value::as_str) == Some(job_id.as_str()))
        .ok_or_else(|| ApiError::NotFound(format!("no job {job_id} for thing {thing}")))?;
    if execution.get("status").and_then(Value::as_str) != Some("SUCCEEDED") {
        return Err(ApiError::Conflict(format!(
            "job {job_id} has not succeeded (yet)"
        )));
    }
    let device_of = |e: &Value| {
        e.pointer("/statusDetails/device")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let device = device_of(execution)
        .ok_or_else(|| ApiError::Conflict(format!("job {job_id} names no device")))?;
    let Some(printer) = page.printers().get(&device).cloned() else {
        return Ok(Json(JobLabels {
            device,
            known_printer: false,
            labels: Vec::new(),
        }));
    };
    // The succeeded print jobs on the same device, in the order the device took them.
    let mut on_device: Vec<&Value> = executions
        .iter()
        .filter(|e| {
            e.get("status").and_then(Value::as_str) == Some("SUCCEEDED")
                && e.pointer("/jobDocument/operation").and_then(Value::as_str) == Some("print")
                && device_of(e).as_deref() == Some(device.as_str())
        })
        .collect();
    // A stable sort keeps creation order among jobs taken in the same second.
    on_device.sort_by_key(|e| Window::of(e).from);
    let position = on_device
        .iter()
        .position(|e| e.get("jobId").and_then(Value::as_str) == Some(job_id.as_str()))
        .ok_or_else(|| internal("a succeeded print job is missing from its device's jobs"))?;
    let windows: Vec<Window> = on_device.iter().map(|e| Window::of(e)).collect();

    let listed = control_json(&page, &printer.control, "/labels").await?;
    let listed = listed.as_array().map(Vec::as_slice).unwrap_or_default();
    let printed: Vec<(usize, u64)> = listed
        .iter()
        .filter_map(|label| {
            let index = usize::try_from(label.get("index")?.as_u64()?).ok()?;
            let second = epoch_seconds(label.get("time")?.as_str()?)?;
            Some((index, second))
        })
        .collect();
    let labels = labels_of_job(position, &windows, &printed)
        .into_iter()
        .filter_map(|index| {
            let label = listed
                .iter()
                .find(|l| l.get("index").and_then(Value::as_u64) == Some(index as u64))?;
            Some(JobLabel {
                index,
                width: label.get("width").and_then(Value::as_u64).unwrap_or(0),
                height: label.get("height").and_then(Value::as_u64).unwrap_or(0),
                png: format!("/printers/{device}/labels/{index}/png"),
            })
        })
        .take(MAX_LABELS_PER_JOB)
        .collect();
    Ok(Json(JobLabels {
        device,
        known_printer: true,
        labels,
    }))
}

/// Seconds since the epoch of an RFC 3339 UTC time as the simulators write it
/// (`2026-01-01T00:00:00.000Z`); fractions are dropped.
fn epoch_seconds(text: &str) -> Option<u64> {
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[10] != b'T'
        || bytes[13] != b':'
        || bytes[16] != b':'
        || !text.ends_with('Z')
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulator_times_become_epoch_seconds() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            epoch_seconds("2026-01-01T00:00:00.000Z"),
            Some(1_767_225_600)
        );
        assert_eq!(
            epoch_seconds("2024-02-29T12:34:56.789Z"),
            Some(1_709_210_096)
        );
        assert_eq!(epoch_seconds("2026-13-01T00:00:00Z"), None);
        assert_eq!(epoch_seconds("yesterday"), None);
    }

    #[test]
    fn jobs_within_one_second_get_a_label_each() {
        let same = Window {
            from: 20,
            until: 21,
        };
        // Two jobs in the same seconds, one label each: paired in order.
        let labels = [(0, 20), (1, 21)];
        assert_eq!(labels_of_job(0, &[same, same], &labels), [0]);
        assert_eq!(labels_of_job(1, &[same, same], &labels), [1]);
        // A later job in its own window only gets what was printed then.
        let later = Window {
            from: 30,
            until: 31,
        };
        let labels = [(0, 20), (1, 21), (2, 30), (3, 31)];
        assert_eq!(labels_of_job(1, &[same, later], &labels), [2, 3]);
        // Counts that do not pair up fall back to the time window.
        let labels = [(0, 20), (1, 20), (2, 21)];
        assert_eq!(labels_of_job(0, &[same, same], &labels), [0, 1, 2]);
        // Nothing printed in the window: no labels.
        assert!(labels_of_job(0, &[later], &[(0, 20)]).is_empty());
    }

    #[test]
    fn only_loopback_control_urls_are_accepted() {
        assert_eq!(
            loopback_control_url("http://127.0.0.1:4000/").as_deref(),
            Some("http://127.0.0.1:4000")
        );
        assert!(loopback_control_url("http://localhost:4000").is_some());
        assert!(loopback_control_url("http://10.0.0.1:4000").is_none());
        assert!(loopback_control_url("http://127.0.0.1:4000/admin").is_none());
        assert!(loopback_control_url("http://127.0.0.1@evil.example:80").is_none());
        assert!(loopback_control_url("https://127.0.0.1:4000").is_none());
    }

    #[test]
    fn hosts_and_origins_are_checked() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().expect("header"));
        assert!(same_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            "http://127.0.0.1:8080".parse().expect("header"),
        );
        assert!(same_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            "http://evil.example".parse().expect("header"),
        );
        assert!(same_origin(&headers).is_err());
        let mut rebound = HeaderMap::new();
        rebound.insert(header::HOST, "evil.example:8080".parse().expect("header"));
        assert!(same_origin(&rebound).is_err());
        assert!(tokens_match(b"abc", b"abc"));
        assert!(!tokens_match(b"abd", b"abc"));
        assert!(!tokens_match(b"", b"abc"));
    }
}
