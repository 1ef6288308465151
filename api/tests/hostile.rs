//! Hostile clients: nested and oversized JSON, slow clients, floods, wrong credentials,
//! foreign origins. Each gets a clean 4xx (or a closed connection) and changes nothing; and
//! the OpenAPI description covers every route the router has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{MERCHANT_KEY, Options, TestApp};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn app_with(tweak: fn(&mut shared::settings::Settings)) -> TestApp {
    TestApp::spawn_with(Options {
        worker: false,
        tweak,
    })
    .await
}

fn ok_body() -> Value {
    json!({"price": "basic", "email": "a@example.com", "payment_method": "pm_card_visa"})
}

#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_or_overlong_json_gets_a_clean_400() {
    let app = app_with(|_| {}).await;
    let deep = format!(
        r#"{{"price":"basic","email":"a@example.com","payment_method":"pm_card_visa","x":{}{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let long = format!(
        r#"{{"price":"{}","email":"a@example.com","payment_method":"pm_card_visa"}}"#,
        "b".repeat(5000)
    );
    for (case, body) in [("deep", deep), ("long", long)] {
        let (status, answer) = app.post_raw(body, "application/json").await;
        assert_eq!(status, 400, "{case}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_json", "{case}");
    }
    assert_eq!(app.count_rows().await, 0);
}

/// A body trickled in past the request deadline: a JSON `408` that says nothing was done, and
/// nothing was.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_slower_than_the_request_deadline_gets_a_json_408_and_changes_nothing() {
    let app = app_with(|s| s.http.request_timeout = Duration::from_millis(500)).await;
    let mut stream = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /transactions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"price\":",
        )
        .await
        .unwrap();
    let (_, answer) = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("answered and closed within 5 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert_eq!(app.count_rows().await, 0);
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, String)> {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((start.elapsed(), String::from_utf8_lossy(&seen).into_owned()));
            }
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// A body over the limit that the client is still sending when the api decides: the api reads
/// the rest off before answering, so the client can finish and read the 413. (Answering at once
/// closes the connection with the body unread; the kernel then resets it, the client's next
/// write fails and the answer is lost.)
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_body_still_being_sent_gets_a_readable_413() {
    let app = app_with(|_| {}).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let (chunks, chunk) = (10, vec![b' '; 20_000]);
    let head = format!(
        "POST /transactions HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        chunks * chunk.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for i in 0..chunks {
        conn.write_all(&chunk)
            .await
            .unwrap_or_else(|e| panic!("chunk {i}: the api stopped reading: {e}"));
        // A slow client: the api has its answer long before the body is all sent.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (_, answer) = read_until_closed(&mut conn, Duration::from_secs(5))
        .await
        .expect("the api answers and closes");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert_eq!(app.count_rows().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_is_disconnected_within_the_header_timeout() {
    let app = app_with(|s| s.http.header_read_timeout = Duration::from_secs(1)).await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    // Slowloris: a request line and one header, then nothing more.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /transactions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // An idle connection that never sends a byte is closed the same way.
    let mut idle = TcpStream::connect(&addr).await.unwrap();

    for (case, stream) in [("partial request", &mut slow), ("idle", &mut idle)] {
        let (after, _) = read_until_closed(stream, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{case}: the connection is still open after 5 s"));
        assert!(
            after < Duration::from_secs(4),
            "{case}: closed only after {after:?}"
        );
    }
    // A normal client is served meanwhile.
    assert_eq!(app.get("/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_over_its_rate_limit_gets_429_with_retry_after() {
    let app = app_with(|s| s.http.rate_limit_per_minute = 3).await;
    for _ in 0..3 {
        let (status, body, _) = app.post(&ok_body(), &[]).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body, headers) = app.post(&ok_body(), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    // Reading is not limited, and neither is the merchant's backend with its key.
    assert_eq!(app.get("/healthz").await.0, 200);
    let auth = format!("Bearer {MERCHANT_KEY}");
    let merchant = json!({"amount": 500, "currency": "usd", "email": "a@example.com",
                          "payment_method": "pm_card_visa"});
    let (status, body, _) = app.post(&merchant, &[("authorization", &auth)]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(app.count_rows().await, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let app = app_with(|s| {
        s.http.rate_limit_per_minute = 2;
        s.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    // The proxy (us, on 127.0.0.1) appends the address it saw; what the client wrote to the
    // left of it is not believed.
    let from = |client: &'static str| [("x-forwarded-for", client)];
    for _ in 0..2 {
        let (status, body, _) = app.post(&ok_body(), &from("6.6.6.6, 198.51.100.1")).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, _, _) = app.post(&ok_body(), &from("7.7.7.7, 198.51.100.1")).await;
    assert_eq!(status, 429, "a forged leftmost entry escaped the limit");
    let (status, body, _) = app.post(&ok_body(), &from("198.51.100.2")).await;
    assert_eq!(status, 202, "another customer shares no count: {body}");
    let forwarded = [("forwarded", r#"for="[2001:db8::7]:4711";proto=https"#)];
    let (status, body, _) = app.post(&ok_body(), &forwarded).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(app.count_rows().await, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_3ds_confirm_endpoint_has_a_limit_of_its_own() {
    let app = app_with(|s| s.http.confirm_rate_limit_per_minute = 2).await;
    let id = uuid::Uuid::new_v4();
    let confirm = || async {
        app.client
            .post(format!("{}/transactions/{id}/confirm", app.base))
            .send()
            .await
            .unwrap()
    };
    for _ in 0..2 {
        assert_eq!(confirm().await.status(), 404, "an unknown payment");
    }
    let limited = confirm().await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    // Creating payments counts separately.
    assert_eq!(app.post(&ok_body(), &[]).await.0, 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn while_redis_is_unreachable_the_limit_lets_requests_through() {
    // Nothing listens on port 1: every limiter call fails at once.
    let app = app_with(|s| {
        s.http.rate_limit_per_minute = 1;
        s.redis_url = "redis://127.0.0.1:1".into();
    })
    .await;
    for _ in 0..3 {
        let (status, body, _) = app.post(&ok_body(), &[]).await;
        assert_ne!(status, 429, "{body}");
        assert_eq!(
            status, 202,
            "the row is stored and the sweeper enqueues it later: {body}"
        );
    }
    assert_eq!(app.count_rows().await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_wrong_credential_gets_the_same_401() {
    let app = app_with(|_| {}).await;
    let merchant = json!({"amount": 500, "currency": "usd", "email": "a@example.com",
                          "payment_method": "pm_card_visa"});
    let wrong = format!("Bearer {}x", MERCHANT_KEY);
    let almost = format!("Bearer {}", &MERCHANT_KEY[..MERCHANT_KEY.len() - 1]);
    let mut answers = BTreeSet::new();
    for headers in [
        vec![],
        vec![("authorization", wrong.as_str())],
        vec![("authorization", almost.as_str())],
        vec![("authorization", "Basic bWs6")],
        vec![("authorization", "Bearer ")],
    ] {
        let (status, body, _) = app.post(&merchant, &headers).await;
        assert_eq!(status, 401, "{headers:?}: {body}");
        answers.insert(body.to_string());
    }
    assert_eq!(answers.len(), 1, "the answers differ: {answers:?}");
    assert_eq!(app.count_rows().await, 0);
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/transactions", app.base),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,idempotency-key",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_configured_origins_may_call_from_a_browser() {
    let app = app_with(|s| {
        s.http.cors_allowed_origins = vec!["https://shop.example".into()];
    })
    .await;
    let res = preflight(&app, "https://shop.example").await;
    assert!(res.status().is_success(), "{}", res.status());
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("idempotency-key"), "{allowed}");
    assert!(!allowed.contains("authorization"), "{allowed}");

    let res = preflight(&app, "https://evil.example").await;
    assert!(res.headers().get("access-control-allow-origin").is_none());
    let res = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());

    // Nothing configured: same-origin only, no CORS headers for anyone.
    let closed = app_with(|_| {}).await;
    let res = preflight(&closed, "https://shop.example").await;
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

/// `(method, path)` of every `.route(..)` in the router's source, with `{param}` kept.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/startup.rs");
    let mut routes = BTreeSet::new();
    for chunk in src.split(".route(").skip(1) {
        let Some(path) = chunk
            .trim_start()
            .strip_prefix('"')
            .and_then(|rest| rest.split_once('"'))
            .map(|(path, _)| path.to_owned())
        else {
            continue;
        };
        // The method router runs to the matching close paren of `.route(`.
        let mut depth = 1;
        let end = chunk
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(chunk.len(), |(i, _)| i);
        let call = &chunk[..end];
        for method in ["get", "post", "put", "patch", "delete"] {
            let needle = format!("{method}(");
            let found = call.match_indices(&needle).any(|(i, _)| {
                i == 0 || !call[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if found {
                routes.insert((method.to_owned(), path.clone()));
            }
        }
    }
    routes
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_every_route() {
    let app = app_with(|_| {}).await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    // Operations behind ADMIN_TOKEN are not part of the public API (src/openapi.rs).
    let routed: BTreeSet<_> = routes_in_source()
        .into_iter()
        .filter(|(_, path)| path != "/metrics" && !path.starts_with("/ops"))
        .collect();
    assert!(
        routed.len() >= 11,
        "the source scan found too little: {routed:?}"
    );
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from /openapi.json: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );
    for schema in ["TransactionView", "CreateTransaction", "ErrorBody"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
