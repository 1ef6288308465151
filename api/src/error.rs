//! One error type for every handler, one `match` from variant to status and stable code.
//! Internal detail is logged, never sent: the client sees `{"error": {"code", "message"}}`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::http::json_guard;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidJson(String),
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("missing or invalid API key")]
    Unauthorized,
    /// `/ops` and `/metrics` without the admin token; answered with `WWW-Authenticate`, so a
    /// browser shows its login prompt.
    #[error("missing or invalid admin token")]
    AdminRequired,
    /// A state-changing `/ops` request sent by a browser on another site's behalf.
    #[error("cross-site requests may not change anything here")]
    CrossSite,
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(axum::http::Method),
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the webhook signature is missing, invalid or too old")]
    InvalidSignature,
    #[error("webhooks are not configured on this server")]
    WebhooksDisabled,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    /// A checkout session's attempt is in flight or complete: no other may start.
    #[error("this checkout already has a payment in progress or complete")]
    SessionTaken(uuid::Uuid),
    #[error("this checkout has expired")]
    SessionExpired,
    #[error("the service cannot record payments right now; retry shortly")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
    /// Nothing was done: the request took longer than the server allows (a slow body).
    #[error("the request took too long and was not processed; send it again")]
    RequestTimeout,
    /// The request was taken on but its answer was lost (the deadline passed, or Postgres went
    /// away after the insert was sent): the payment may have been recorded.
    #[error(
        "the payment may have been recorded, but its outcome is not known yet: send the same \
         request with the same Idempotency-Key to learn it"
    )]
    OutcomeUnknown,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unauthorized | ApiError::AdminRequired => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::CrossSite => (StatusCode::FORBIDDEN, "cross_site_request"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::InvalidSignature => (StatusCode::BAD_REQUEST, "invalid_signature"),
            // Stripe retries a 503: events sent before the secret is configured still arrive.
            ApiError::WebhooksDisabled => {
                (StatusCode::SERVICE_UNAVAILABLE, "webhooks_not_configured")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::IdempotencyMismatch => (StatusCode::CONFLICT, "idempotency_key_reused"),
            ApiError::SessionTaken(_) => (StatusCode::CONFLICT, "session_has_payment"),
            ApiError::SessionExpired => (StatusCode::GONE, "session_expired"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::OutcomeUnknown => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
        }
    }

    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::Validation {
            field,
            message: message.into(),
        }
    }
}

/// Every error response: `{"error": {"code", "message"[, "field"]}}`. The response is built
/// from this type, so the OpenAPI description of it cannot drift.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `validation_failed`, `invalid_json`, `unauthorized`,
    /// `not_found`, `idempotency_key_reused`, `rate_limited`, `invalid_signature`,
    /// `request_timeout` (nothing was done), `service_unavailable` (nothing was recorded),
    /// `outcome_unknown` (a payment may have been recorded: resend with the same
    /// Idempotency-Key), `session_has_payment`, `session_expired`, ...
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// The request field a validation error is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `session_has_payment`: the checkout's payment that is in flight or complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<uuid::Uuid>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::Internal(detail) => tracing::error!(%detail, "internal error"),
            ApiError::Unavailable(detail) => tracing::warn!(%detail, "dependency unavailable"),
            _ => {}
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
                field: match &self {
                    ApiError::Validation { field, .. } => Some((*field).to_owned()),
                    _ => None,
                },
                transaction_id: match &self {
                    ApiError::SessionTaken(id) => Some(*id),
                    _ => None,
                },
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = match &self {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(2),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, ApiError::AdminRequired) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="payments ops", charset="UTF-8""#),
            );
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge
            }
            // serde's message names the field and the problem ("missing field `email`",
            // "unknown field `x`", "invalid type: string, expected i64"), without echoing input.
            JsonRejection::JsonDataError(e) => ApiError::InvalidJson(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => ApiError::InvalidJson(e.body_text()),
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<shared::db::PoolError> for ApiError {
    fn from(e: shared::db::PoolError) -> Self {
        ApiError::Unavailable(format!("postgres pool: {e}"))
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::Error as E;
        match e {
            // A connection that died under us (Postgres restarting) is an outage, not a bug.
            E::DatabaseError(diesel::result::DatabaseErrorKind::ClosedConnection, _)
            | E::BrokenTransactionManager => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    }
}

/// `axum::Json` whose rejections come back as [`ApiError`]s, and which refuses bodies nested
/// too deep or holding overlong strings before serde parses them ([`json_guard::REQUEST`]).
pub struct AppJson<T>(pub T);

/// `application/json` or any `+json` type, as `axum::Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await?;
        json_guard::check(&bytes, json_guard::REQUEST)
            .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(AppJson(value))
    }
}

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}
