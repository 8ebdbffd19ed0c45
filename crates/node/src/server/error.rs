//! Errors of the REST API, mapped to status codes in one place. Bodies are `{"error": "..."}`
//! (plus `params` for Guardian rejections, as Ritual's clients expect).

use std::time::Duration;

use axum::{
    Json,
    extract::{FromRequestParts, Query},
    http::{HeaderValue, StatusCode, header::RETRY_AFTER, request::Parts},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{guardian::Rejection, store::StoreError};

/// What a job refused for a container's `max_jobs` is told to wait: no job's end can be
/// predicted, and a second is about the shortest model call worth retrying for.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// An error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The request's signature does not check out (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the resource's state (409).
    #[error("{0}")]
    Conflict(String),
    /// Unknown path (404).
    #[error("not found")]
    NotFound,
    /// The Guardian refused the job (405, as Ritual's node answers).
    #[error("{}", .0.error)]
    Rejected(Rejection),
    /// Wrong method for this path (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is larger than `server.max_body_size` (413).
    #[error("request body too large (limit {0} bytes, see server.max_body_size)")]
    TooLarge(usize),
    /// Rate limit hit (429 with `Retry-After`).
    #[error("too many requests; retry in {}s", retry_after.as_secs_f64().ceil())]
    TooManyRequests {
        /// When a request fits again.
        retry_after: Duration,
    },
    /// A container of the job runs its most jobs at once (429 with `Retry-After`).
    #[error(transparent)]
    Busy(#[from] crate::orchestrator::Busy),
    /// Large jobs use the node's whole buffer (503 with `Retry-After`).
    #[error(transparent)]
    OverBudget(#[from] crate::orchestrator::budget::OverBudget),
    /// An item of a batch past the client's rate limit (429 in the batch's answer).
    #[error("too many requests: this job is past your rate limit (server.rate_limit); submit it again later")]
    BatchItemLimited,
    /// The node cannot do this with its configuration (501).
    #[error("{0}")]
    NotImplemented(String),
    /// A container of the job is not serving right now (503).
    #[error("{0}")]
    Unavailable(String),
    /// The node takes no new jobs now: paused, draining or outside its provider's hours (503).
    #[error("{reason}")]
    Closed {
        /// Why.
        reason: String,
        /// When it takes jobs again (RFC 3339), if its schedule says.
        available_at: Option<String>,
    },
    /// The job store failed (503).
    #[error("job store unavailable: {0}")]
    Store(#[from] StoreError),
}

impl From<infernet_types::RequestError> for ApiError {
    /// A body that does not parse is the client's fault (400, the parser's message).
    fn from(e: infernet_types::RequestError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl ApiError {
    /// The status code of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Rejected(_) | Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests { .. } | Self::Busy(_) | Self::BatchItemLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable(_) | Self::Closed { .. } | Self::Store(_) | Self::OverBudget(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Value {
        match self {
            Self::Rejected(r) => json!({"error": r.error, "params": r.params}),
            Self::Closed { reason, available_at } => json!({"error": reason, "available_at": available_at}),
            other => json!({"error": other.to_string()}),
        }
    }
}

/// A query string parsed into `T`; one that does not fit is a JSON 400 saying why (axum's own
/// rejection is plain text).
pub(super) struct ApiQuery<T>(pub(super) T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(query)| Self(query))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Store(e) = &self {
            tracing::error!(error = %e, "job store error");
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        let retry_after = match self {
            Self::TooManyRequests { retry_after } => Some(retry_after),
            Self::Busy(_) | Self::OverBudget(_) => Some(BUSY_RETRY_AFTER),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
