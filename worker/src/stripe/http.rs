//! Our HTTP client for async-stripe's typed requests.
//!
//! async-stripe's own client opens a new connection for every call and drops the response
//! headers that matter for retrying (`Retry-After`, `Stripe-Should-Retry`). This one implements
//! the same `StripeClient` trait, so the typed PaymentIntent calls are unchanged, but keeps
//! connections alive and returns those headers with every error. It never retries by itself:
//! retries belong to the job, which owns the idempotency key.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stripe_client_core::{CustomizedStripeRequest, StripeClient, StripeClientErr, StripeMethod};
use stripe_shared::ApiErrors;

/// An error object Stripe answered with, as we read it.
#[derive(Clone, Debug, Default)]
pub struct ErrorObject {
    /// `card_error`, `idempotency_error`, `invalid_request_error`, `api_error`, ...
    pub type_: String,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: Option<String>,
    /// The intent a card error embeds.
    pub payment_intent: Option<String>,
}

impl From<&ApiErrors> for ErrorObject {
    fn from(e: &ApiErrors) -> Self {
        Self {
            type_: e.type_.as_str().to_owned(),
            code: e.code.as_ref().map(|c| c.as_str().to_owned()),
            decline_code: e.decline_code.clone(),
            message: e.message.clone(),
            payment_intent: e.payment_intent.as_ref().map(|pi| pi.id.to_string()),
        }
    }
}

/// Why a call did not return a PaymentIntent.
#[derive(Debug)]
pub enum CallError {
    /// Stripe answered with an error object.
    Api {
        status: u16,
        /// Boxed: an error answer is rare, and the variant would make every result large.
        error: Box<ErrorObject>,
        retry_after: Option<Duration>,
        should_retry: Option<bool>,
    },
    /// An answer we could not read (a proxy's HTML 502, a truncated body): outcome unknown.
    Unreadable { status: Option<u16>, detail: String },
    /// No answer within the timeout: the request may or may not have executed.
    Timeout,
    /// The connection could not be made: the request never left.
    Connect(String),
    /// The connection broke after the request was sent: outcome unknown.
    Broken(String),
    /// Not sent at all (the attempt's lease could not be kept, a key Stripe would refuse).
    NotSent(String),
}

impl StripeClientErr for CallError {
    fn deserialize_err(msg: impl std::fmt::Display) -> Self {
        CallError::Unreadable {
            status: None,
            detail: msg.to_string(),
        }
    }
}

impl std::fmt::Display for CallError {
    /// Log-safe: never includes request headers (the secret key) or bodies.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Api { status, error, .. } => write!(
                f,
                "stripe {status} {} {}",
                error.type_,
                error.code.as_deref().unwrap_or("-")
            ),
            CallError::Unreadable { status, detail } => {
                write!(f, "unreadable response ({status:?}): {detail}")
            }
            CallError::Timeout => f.write_str("timeout"),
            CallError::Connect(e) => write!(f, "connect: {e}"),
            CallError::Broken(e) => write!(f, "connection broken: {e}"),
            CallError::NotSent(e) => write!(f, "not sent: {e}"),
        }
    }
}

/// An HTTP/1.1 client for `https://` (rustls, webpki roots) and `http://` URLs that keeps
/// connections alive: Stripe's calls and the merchant's webhooks.
pub fn https_client(
    connect_timeout: Duration,
) -> Client<HttpsConnector<HttpConnector>, Full<Bytes>> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    auth: HeaderValue,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(base: &str, secret_key: &str, timeout: Duration) -> Result<Self, String> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {secret_key}"))
            .map_err(|_| "STRIPE_SECRET_KEY is not a valid header value".to_owned())?;
        // Marks the header so hyper's own debug output redacts it.
        auth.set_sensitive(true);
        Ok(Self {
            inner: https_client(timeout),
            base: base.trim_end_matches('/').to_owned(),
            auth,
            timeout,
        })
    }

    async fn send(&self, req: CustomizedStripeRequest) -> Result<Bytes, CallError> {
        let (rb, config) = req.into_pieces();
        let mut uri = format!("{}/v1{}", self.base, rb.path);
        if let Some(q) = &rb.query {
            uri.push('?');
            uri.push_str(q);
        }
        let method = match rb.method {
            StripeMethod::Get => Method::GET,
            StripeMethod::Post => Method::POST,
            StripeMethod::Delete => Method::DELETE,
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(AUTHORIZATION, self.auth.clone())
            .header(
                USER_AGENT,
                concat!("payments-worker/", env!("CARGO_PKG_VERSION")),
            )
            .header("stripe-version", stripe_client_core::VERSION.as_str());
        if let Some(key) = config.request_strategy.as_ref().and_then(|s| s.get_key()) {
            builder = builder.header("idempotency-key", key.as_str());
        }
        if rb.body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = builder
            .body(Full::new(Bytes::from(rb.body.unwrap_or_default())))
            .map_err(|e| CallError::Connect(e.to_string()))?;

        let call = async {
            let response = self.inner.request(request).await.map_err(|e| {
                if e.is_connect() {
                    CallError::Connect(e.to_string())
                } else {
                    CallError::Broken(e.to_string())
                }
            })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Broken(e.to_string()))?
                .to_bytes();
            Ok::<_, CallError>((status, headers, body))
        };
        let timeout = config.timeout.unwrap_or(self.timeout);
        let (status, headers, body) = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| CallError::Timeout)??;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let retry_after = header("retry-after")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(600.0)));
        let should_retry = header("stripe-should-retry").and_then(|v| v.parse::<bool>().ok());
        let text = std::str::from_utf8(&body).unwrap_or_default();
        match miniserde::json::from_str::<stripe_shared::Error>(text) {
            Ok(e) => Err(CallError::Api {
                status,
                error: Box::new(ErrorObject::from(&*e.error)),
                retry_after,
                should_retry,
            }),
            Err(_) => Err(CallError::Unreadable {
                status: Some(status),
                detail: "error body is not a Stripe error".into(),
            }),
        }
    }
}

impl StripeClient for HttpClient {
    type Err = CallError;

    fn execute(
        &self,
        req: CustomizedStripeRequest,
    ) -> impl std::future::Future<Output = Result<Bytes, CallError>> + Send {
        self.send(req)
    }
}
