//! Plugin bundles published by the cloud: a folder (manifest, signature, libraries) copied into
//! the data directory and served over the print-file HTTPS server as
//! `/bundles/{version}/{file}`, with `Range` requests, a count of the bytes served per file, and
//! a fault switch that cuts downloads of a file at a byte offset.
//!
//! The emulator does not read or check the libraries: the bundle is whatever the test or the
//! user built (signed with their own key), so that a tampered file can be served as such.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api::{internal, ApiError, ApiState};
use super::files::{write_atomic, Visibility};

/// The manifest every published folder must hold.
const MANIFEST: &str = "default.bundle.json";
/// How much of a file each body chunk carries: small enough that a cut lands where asked.
const CHUNK: usize = 16 * 1024;

/// What was served of one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    /// Body bytes sent.
    pub bytes: u64,
    pub requests: u64,
    /// Requests that asked for a range (a resumed download).
    pub range_requests: u64,
}

/// A cut of the next downloads of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// The file offset at which a download stops: the connection is dropped mid-body.
    pub cut_at_byte: u64,
    /// How many downloads are cut (then the fault is gone).
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

/// The published bundles' counters and faults.
#[derive(Debug)]
pub struct BundleShelf {
    dir: PathBuf,
    /// By `version/file`.
    served: Mutex<BTreeMap<String, Served>>,
    /// By `version/file`.
    faults: Mutex<BTreeMap<String, Fault>>,
}

impl BundleShelf {
    /// The shelf kept under `dir` (the data directory's `bundles/`).
    pub fn new(dir: PathBuf) -> BundleShelf {
        BundleShelf {
            dir,
            served: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(BTreeMap::new()),
        }
    }

    fn served(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Served>> {
        self.served.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Fault>> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one use of the fault on `key`, if any.
    fn take_fault(&self, key: &str) -> Option<Fault> {
        let mut faults = self.faults();
        let fault = *faults.get(key)?;
        if fault.times <= 1 {
            faults.remove(key);
        } else if let Some(f) = faults.get_mut(key) {
            f.times -= 1;
        }
        Some(fault)
    }
}

/// A plain file or version name: no separators, not hidden, not empty.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// A local folder with `default.bundle.json`, its signature and the libraries.
    dir: PathBuf,
}

/// `POST /bundles`: copies a bundle folder and answers its manifest URL.
pub async fn publish(
    State(state): State<Arc<ApiState>>,
    Json(request): Json<PublishRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let manifest = std::fs::read(request.dir.join(MANIFEST)).map_err(|e| {
        ApiError::BadRequest(format!(
            "{} has no readable {MANIFEST}: {e}",
            request.dir.display()
        ))
    })?;
    let manifest: Value = serde_json::from_slice(&manifest)
        .map_err(|e| ApiError::BadRequest(format!("{MANIFEST} is not JSON: {e}")))?;
    let version = manifest["bundleVersion"]
        .as_str()
        .filter(|v| plain(v))
        .ok_or_else(|| ApiError::BadRequest(format!("{MANIFEST} has no usable bundleVersion")))?
        .to_string();
    let target = state.bundles.dir.join(&version);
    let from = request.dir.clone();
    tokio::task::spawn_blocking(move || copy_folder(&from, &target))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    // A new publication of a version starts its counters afresh.
    state
        .bundles
        .served()
        .retain(|key, _| !key.starts_with(&format!("{version}/")));
    let manifest_url = format!("{}/bundles/{version}/{MANIFEST}", state.files_url);
    Ok((
        StatusCode::CREATED,
        Json(json!({"version": version, "manifestUrl": manifest_url})),
    ))
}

fn copy_folder(from: &Path, to: &Path) -> std::io::Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| plain(n)) else {
            continue;
        };
        if entry.file_type()?.is_file() {
            write_atomic(
                &to.join(name),
                &std::fs::read(entry.path())?,
                Visibility::Public,
            )?;
        }
    }
    Ok(())
}

/// `GET /bundles/downloads`: what was served, by `version/file`.
pub async fn downloads(State(state): State<Arc<ApiState>>) -> Json<Value> {
    Json(json!({ "files": *state.bundles.served() }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRequest {
    version: String,
    file: String,
    #[serde(flatten)]
    fault: Fault,
}

/// `POST /bundles/faults`: cuts the next downloads of a file.
pub async fn set_fault(
    State(state): State<Arc<ApiState>>,
    Json(request): Json<FaultRequest>,
) -> Result<StatusCode, ApiError> {
    if !plain(&request.version) || !plain(&request.file) {
        return Err(ApiError::BadRequest(
            "version and file must be plain names".into(),
        ));
    }
    state.bundles.faults().insert(
        format!("{}/{}", request.version, request.file),
        request.fault,
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /bundles/faults`: removes every fault.
pub async fn clear_faults(State(state): State<Arc<ApiState>>) -> StatusCode {
    state.bundles.faults().clear();
    StatusCode::NO_CONTENT
}

/// `GET /bundles/{version}/{file}` on the HTTPS server, with `Range: bytes=N-` or `bytes=N-M`.
pub async fn serve(
    State(state): State<Arc<ApiState>>,
    UrlPath((version, file)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !plain(&version) || !plain(&file) {
        return Err(ApiError::NotFound(file));
    }
    let bytes = match tokio::fs::read(state.bundles.dir.join(&version).join(&file)).await {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ApiError::NotFound(file)),
        Err(e) => return Err(internal(e)),
    };
    let size = bytes.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, size));
    let (start, end) = match range {
        None => (0, size),
        Some(Some(range)) => range,
        Some(None) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response())
        }
    };
    let key = format!("{version}/{file}");
    {
        let mut served = state.bundles.served();
        let entry = served.entry(key.clone()).or_default();
        entry.requests += 1;
        if range.is_some() {
            entry.range_requests += 1;
        }
    }
    let cut = state.bundles.take_fault(&key).map(|f| f.cut_at_byte);
    let stop = cut.map_or(end, |cut| cut.clamp(start, end));
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    let mut at = start;
    while at < stop {
        let next = (at + CHUNK as u64).min(stop);
        chunks.push(Ok(bytes.slice(at as usize..next as usize)));
        at = next;
    }
    if stop < end {
        // The declared length is not reached: the client sees the connection drop mid-body.
        chunks.push(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "download cut by the fault switch",
        )));
    }
    let shelf = state.clone();
    let body = futures_util::stream::iter(chunks).map(move |chunk| {
        if let Ok(chunk) = &chunk {
            shelf.bundles.served().entry(key.clone()).or_default().bytes += chunk.len() as u64;
        }
        chunk
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(if file.ends_with(".json") {
            "application/json"
        } else {
            "application/octet-stream"
        }),
    );
    headers.insert(
        header::ACCEPT_RANGES,
        header::HeaderValue::from_static("bytes"),
    );
    headers.insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from(end - start),
    );
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let content_range = format!("bytes {start}-{}/{size}", end.saturating_sub(1));
        if let Ok(value) = header::HeaderValue::from_str(&content_range) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// `bytes=N-` or `bytes=N-M` as a half-open range within `size`; `None` when unsatisfiable.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let start: u64 = first.trim().parse().ok()?;
    let end = match last.trim() {
        "" => size,
        last => last.parse::<u64>().ok()?.saturating_add(1).min(size),
    };
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_within_the_file() {
        assert_eq!(parse_range("bytes=10-", 100), Some((10, 100)));
        assert_eq!(parse_range("bytes=10-19", 100), Some((10, 20)));
        assert_eq!(parse_range("bytes=10-500", 100), Some((10, 100)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("items=1-", 100), None);
        assert_eq!(parse_range("bytes=-5", 100), None);
    }

    #[test]
    fn names_with_separators_are_not_plain() {
        assert!(plain("2.0.0"));
        assert!(plain("libdevicehub_driver_zebra.so"));
        for bad in ["", "..", ".hidden", "a/b", "a\\b"] {
            assert!(!plain(bad), "{bad}");
        }
    }

    #[test]
    fn a_fault_is_used_up() {
        let shelf = BundleShelf::new(PathBuf::from("unused"));
        shelf.faults().insert(
            "1.0.0/a".into(),
            Fault {
                cut_at_byte: 5,
                times: 2,
            },
        );
        assert!(shelf.take_fault("1.0.0/a").is_some());
        assert!(shelf.take_fault("1.0.0/a").is_some());
        assert!(shelf.take_fault("1.0.0/a").is_none());
    }
}
