//! Stripe-shaped error bodies (`{"error": {...}}`) and the standard messages we send.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// The inner object of a Stripe error, as found under `error` in a response and under
/// `last_payment_error` in a PaymentIntent. Absent fields are omitted, as Stripe does.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorObject {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doc_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<Value>,
}

impl ErrorObject {
    pub fn new(type_: &str, code: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            type_: type_.to_owned(),
            code: code.map(str::to_owned),
            decline_code: None,
            message: message.into(),
            param: None,
            charge: None,
            // Stripe links every coded error to its page; the slug uses dashes.
            doc_url: code.map(|c| {
                format!(
                    "https://stripe.com/docs/error-codes/{}",
                    c.replace('_', "-")
                )
            }),
            payment_intent: None,
        }
    }
}

/// An error response: status, body, and the few headers some errors carry.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Boxed to keep `Result<_, ApiError>` small.
    pub error: Box<ErrorObject>,
    pub retry_after_secs: Option<u64>,
    pub should_retry: Option<bool>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: ErrorObject) -> Self {
        Self {
            status,
            error: Box::new(error),
            retry_after_secs: None,
            should_retry: None,
        }
    }

    pub fn invalid_request(
        status: StatusCode,
        code: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(
            status,
            ErrorObject::new("invalid_request_error", code, message),
        )
    }

    pub fn param(mut self, param: &str) -> Self {
        self.error.param = Some(param.to_owned());
        self
    }

    pub fn missing_param(param: &str) -> Self {
        Self::invalid_request(
            StatusCode::BAD_REQUEST,
            Some("parameter_missing"),
            format!("Missing required param: {param}."),
        )
        .param(param)
    }

    pub fn no_such(kind: &str, id: &str, param: &str, status: StatusCode) -> Self {
        Self::invalid_request(
            status,
            Some("resource_missing"),
            format!("No such {kind}: '{id}'"),
        )
        .param(param)
    }

    pub fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorObject::new(
                "api_error",
                None,
                "Sorry, something went wrong. We've already been notified of the problem, \
                 but if you need any help, you can reach us at support.stripe.com/contact.",
            ),
        )
    }

    pub fn key_in_use(key: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            ErrorObject::new(
                "idempotency_error",
                Some("idempotency_key_in_use"),
                format!(
                    "There is currently another in-progress request using this Idempotent Key \
                     (that probably means you submitted twice, and the other request is still \
                     going through): {key}. Please try again later."
                ),
            ),
        )
    }

    pub fn key_reused(key: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorObject::new(
                "idempotency_error",
                None,
                format!(
                    "Keys for idempotent requests can only be used with the same parameters they \
                     were first used with. Try using a key other than '{key}' if you meant to \
                     execute a different request."
                ),
            ),
        )
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorObject::new(
                "rate_limit_error",
                Some("rate_limit"),
                "Too many requests hit the API too quickly. We recommend an exponential \
                 backoff of your requests.",
            ),
        );
        e.retry_after_secs = Some(retry_after_secs);
        e.should_retry = Some(true);
        e
    }

    /// A refused key: Stripe says retrying it as it is cannot help.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = Self::invalid_request(StatusCode::UNAUTHORIZED, None, message);
        e.should_retry = Some(false);
        e
    }

    /// The JSON body, `{"error": {...}}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.error }).to_string()
    }
}

/// A JSON response from a pre-serialized body.
pub fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = json_response(self.status, self.body());
        let headers = resp.headers_mut();
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(retry) = self.should_retry {
            headers.insert(
                "stripe-should-retry",
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        resp
    }
}
