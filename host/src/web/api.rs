//! The JSON API behind the pages: the status snapshot, starting and following a registration,
//! and the health answer for service managers.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::registration::StartError;
use super::Shared;

/// An API failure: the status and a plain message for the page; details stay in the log.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request is not the JSON this API takes: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Registration(#[from] StartError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Registration(StartError::CodeTooLong) => StatusCode::BAD_REQUEST,
            ApiError::Registration(_) => StatusCode::CONFLICT,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "badRequest",
            ApiError::Registration(StartError::AlreadyRunning) => "alreadyRunning",
            ApiError::Registration(StartError::AlreadyRegistered(_)) => "alreadyRegistered",
            ApiError::Registration(StartError::CodeTooLong) => "codeTooLong",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.kind(), "message": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}

/// `POST /api/register`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegisterRequest {
    activation_code: String,
}

/// `GET /healthz`: the process answers; whether it is registered and connected.
pub(super) async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let snapshot = shared.agent.snapshot();
    Json(json!({
        "status": "ok",
        "version": snapshot.agent_version,
        "registered": snapshot.thing_name.is_some(),
        "link": snapshot.link.state,
    }))
    .into_response()
}

/// `GET /api/status`: the agent's status snapshot.
pub(super) async fn status(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.agent.snapshot()).into_response()
}

/// `POST /api/register`: starts registering with the activation code; 202 with the progress.
pub(super) async fn register(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let progress = shared
        .registrations
        .start(shared.agent.clone(), &request.activation_code)?;
    Ok((StatusCode::ACCEPTED, Json(progress)).into_response())
}

/// `GET /api/register/progress`: where the last registration from the pages stands.
pub(super) async fn progress(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.registrations.progress()).into_response()
}
