//! The control API of a serial scale simulator (axum, loopback only): read the scale, set
//! weight, unit, motion, condition and injected replies, and see the commands received.
//!
//! Routes:
//! - `GET /scale`: the scale as JSON (protocol, weight, unit, tare, net, motion_reads,
//!   condition, fail_with, commands).
//! - `POST /scale`: changes the fields given, e.g. `{"weight":"1.25","unit":"lb"}`,
//!   `{"motion_reads":3}`, `{"condition":"over-capacity"}` (or `under-capacity`, `fault`,
//!   `needs-calibration`, `normal`), `{"fail_with":"ES"}` (`"none"` clears it). Answers the
//!   scale as JSON, or 400 with `{"error": ...}`.
//! - `DELETE /commands`: forgets the commands received.

use std::sync::Arc;

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get},
    Json, Router,
};
use serde::Serialize;

use super::{serial::SerialScaleShared, LoadError, ScaleUpdate, ScaleView};

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

/// A change the scale refused.
#[derive(Debug)]
struct ApiError(LoadError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(ErrorBody {
                error: self.0.to_string(),
            }),
        )
            .into_response()
    }
}

/// The control API's routes over one scale.
pub fn router(shared: Arc<SerialScaleShared>) -> Router {
    Router::new()
        .route("/scale", get(scale).post(update))
        .route("/commands", delete(clear_commands))
        .with_state(shared)
}

async fn scale(State(shared): State<Arc<SerialScaleShared>>) -> Json<ScaleView> {
    Json(shared.view())
}

async fn update(
    State(shared): State<Arc<SerialScaleShared>>,
    Json(change): Json<ScaleUpdate>,
) -> Result<Json<ScaleView>, ApiError> {
    shared.update(change).map(Json).map_err(ApiError)
}

async fn clear_commands(State(shared): State<Arc<SerialScaleShared>>) -> StatusCode {
    shared.clear_commands();
    StatusCode::NO_CONTENT
}
