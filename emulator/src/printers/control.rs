//! The control API every printer simulator serves (axum, loopback only): status, printed
//! labels as JSON metadata, PNG and packed bits, decoding errors, and fault injection.
//!
//! Routes:
//! - `GET /status`: family, model, language, dpi, faults, counters.
//! - `GET /labels`: the printed labels' metadata, oldest first.
//! - `GET /labels/{index}`: one label's metadata.
//! - `GET /labels/{index}/png`: the label as a PNG, black for 1 bits.
//! - `GET /labels/{index}/bits`: the packed rows (`application/octet-stream`), with the size in
//!   the `x-label-width`, `x-label-height` and `x-bytes-per-row` headers.
//! - `DELETE /labels`: forgets printed labels, held labels and errors.
//! - `GET /faults`, `POST /faults`: reads or replaces the fault state.
//! - `GET /errors`, `DELETE /errors`: jobs that could not be printed.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::store::{ErrorRecord, Faults, LabelRecord, PrinterState, StatusReport};

/// Header carrying a label's width in dots on `GET /labels/{index}/bits`.
pub const WIDTH_HEADER: &str = "x-label-width";
/// Header carrying a label's height in dots on `GET /labels/{index}/bits`.
pub const HEIGHT_HEADER: &str = "x-label-height";
/// Header carrying the bytes per packed row on `GET /labels/{index}/bits`.
pub const BYTES_PER_ROW_HEADER: &str = "x-bytes-per-row";

/// What a control request can fail with. Internal details are logged, not sent.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("no label with index {0}")]
    NoSuchLabel(usize),
    #[error("the label could not be rendered as PNG")]
    Render(#[source] image::ImageError),
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::NoSuchLabel(_) => StatusCode::NOT_FOUND,
            ApiError::Render(source) => {
                tracing::error!(error = %source, "rendering a label PNG failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// The control API's routes over one printer's state.
pub fn router(state: Arc<PrinterState>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/labels", get(labels).delete(clear_labels))
        .route("/labels/{index}", get(label))
        .route("/labels/{index}/png", get(label_png))
        .route("/labels/{index}/bits", get(label_bits))
        .route("/faults", get(faults).post(set_faults))
        .route("/errors", get(errors).delete(clear_errors))
        .with_state(state)
}

async fn status(State(state): State<Arc<PrinterState>>) -> Json<StatusReport> {
    Json(state.status())
}

async fn labels(State(state): State<Arc<PrinterState>>) -> Json<Vec<LabelRecord>> {
    Json(state.labels())
}

async fn clear_labels(State(state): State<Arc<PrinterState>>) -> StatusCode {
    state.clear_labels();
    StatusCode::NO_CONTENT
}

async fn label(
    State(state): State<Arc<PrinterState>>,
    Path(index): Path<usize>,
) -> Result<Json<LabelRecord>, ApiError> {
    let (record, _) = state.label(index).ok_or(ApiError::NoSuchLabel(index))?;
    Ok(Json(record))
}

async fn label_png(
    State(state): State<Arc<PrinterState>>,
    Path(index): Path<usize>,
) -> Result<Response, ApiError> {
    let (_, bitmap) = state.label(index).ok_or(ApiError::NoSuchLabel(index))?;
    let png = bitmap.to_png().map_err(ApiError::Render)?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

async fn label_bits(
    State(state): State<Arc<PrinterState>>,
    Path(index): Path<usize>,
) -> Result<Response, ApiError> {
    let (_, bitmap) = state.label(index).ok_or(ApiError::NoSuchLabel(index))?;
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
        (
            HeaderName::from_static(WIDTH_HEADER),
            HeaderValue::from(bitmap.width()),
        ),
        (
            HeaderName::from_static(HEIGHT_HEADER),
            HeaderValue::from(bitmap.height()),
        ),
        (
            HeaderName::from_static(BYTES_PER_ROW_HEADER),
            HeaderValue::from(bitmap.bytes_per_row()),
        ),
    ];
    Ok((headers, bitmap.as_bytes().to_vec()).into_response())
}

async fn faults(State(state): State<Arc<PrinterState>>) -> Json<Faults> {
    Json(state.faults())
}

async fn set_faults(
    State(state): State<Arc<PrinterState>>,
    Json(faults): Json<Faults>,
) -> Json<Faults> {
    state.set_faults(faults);
    Json(state.faults())
}

async fn errors(State(state): State<Arc<PrinterState>>) -> Json<Vec<ErrorRecord>> {
    Json(state.errors())
}

async fn clear_errors(State(state): State<Arc<PrinterState>>) -> StatusCode {
    state.clear_errors();
    StatusCode::NO_CONTENT
}
