//! One error type for every handler: a status per variant and `{"error": "..."}`.
//! Internal errors are logged with their cause and shown as "internal error".

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no channel named `{0}` of this kind")]
    UnknownChannel(String),
    #[error("bad signature")]
    BadSignature,
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    /// Not now, try again shortly (503 + `Retry-After`): the store cannot write, the
    /// conversation's queue is full, or kefu is stopping. Platforms retry on their own.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Conflict(String),
    /// Another agent owns the conversation (their id; the answer names them).
    #[error("another agent has claimed this conversation: {0}")]
    ClaimedBy(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Rate limited (`/api/chat`) or paused (console logins after wrong passwords):
    /// `Retry-After` carries the whole seconds to wait.
    #[error("{reason}; try again in {retry_after_s} s")]
    TooManyRequests {
        reason: &'static str,
        retry_after_s: u64,
    },
    /// The request body stalled (server.idle_timeout_ms).
    #[error("the request body stopped arriving")]
    BodyTimeout,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownChannel(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadSignature | ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict(_) | ApiError::ClaimedBy(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(e) => tracing::error!(error = ?e, "internal error"),
            ApiError::BadSignature => tracing::warn!("callback refused: bad signature"),
            ApiError::Unavailable(why) => tracing::warn!(why, "answered 503"),
            other => tracing::debug!(error = %other, "request refused"),
        }
        let mut body = serde_json::json!({ "error": self.to_string() });
        if let ApiError::ClaimedBy(agent) = &self {
            body["agent"] = serde_json::json!(agent);
        }
        let mut resp = (self.status(), Json(body)).into_response();
        if matches!(self, ApiError::Unavailable(_)) {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if let ApiError::TooManyRequests { retry_after_s, .. } = self {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_s),
            );
        }
        resp
    }
}

impl From<adapters::DecodeError> for ApiError {
    fn from(e: adapters::DecodeError) -> Self {
        if e.is_auth() {
            ApiError::BadSignature
        } else {
            tracing::warn!(error = %e, "callback refused");
            ApiError::BadRequest(e.to_string())
        }
    }
}

/// What a customer or platform reads when the store failed (the cause is logged).
pub const STORE_UNAVAILABLE: &str = "storage is unavailable; nothing was kept, try again shortly";

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Backend(why) => {
                tracing::error!(error = %why, "store failed");
                ApiError::Unavailable(STORE_UNAVAILABLE.into())
            }
            corrupt => ApiError::Internal(corrupt.into()),
        }
    }
}

impl From<crate::engine::EngineError> for ApiError {
    fn from(e: crate::engine::EngineError) -> Self {
        match e {
            crate::engine::EngineError::UnknownConversation => {
                ApiError::NotFound("unknown conversation".into())
            }
            crate::engine::EngineError::Store(e) => e.into(),
            crate::engine::EngineError::ClaimedBy(agent) => ApiError::ClaimedBy(agent),
            crate::engine::EngineError::NotHandedOff => {
                ApiError::Conflict("the conversation is not handed off: the bot answers it".into())
            }
        }
    }
}

/// Read a whole body, refusing more than `limit` bytes with 413 and a body that stalls
/// (the server's idle timeout) with 408.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<tower_http::timeout::TimeoutError>() {
                return ApiError::BodyTimeout;
            }
            source = err.source();
        }
        ApiError::TooLarge(limit)
    })
}
