//! The browser-facing routes: the checkout page and its headers, its static files, the
//! transaction event stream (SSE) and the 3-D Secure confirm endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Options, TestApp};
use serde_json::Value;
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(20);

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Reads `event: state` payloads from a Server-Sent Events response.
struct Events {
    res: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(app: &TestApp, id: &str) -> Self {
        let res = app.get_raw(&format!("/transactions/{id}/events")).await;
        assert_eq!(res.status(), 200);
        assert!(header(&res, "content-type").starts_with("text/event-stream"));
        Self {
            res,
            buf: String::new(),
        }
    }

    /// The next state event, `None` once the server ended the stream; panics past `deadline`.
    async fn next(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut kind = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = Some(k.trim().to_owned());
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if kind.as_deref() == Some("state") {
                    return Some(serde_json::from_str(&data).unwrap());
                }
                continue; // a keep-alive comment
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk())
                .await
                .expect("the event stream neither sent nor ended before the deadline")
                .unwrap();
            match chunk {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_checkout_page_shows_the_product_and_amount_with_a_strict_policy() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        tweak: |s| {
            s.prices =
                shared::money::Prices::parse("basic=1000:usd,pro=2500:eur,yen=1000:jpy").unwrap()
        },
    })
    .await;
    let res = app.get_raw("/checkout?price=basic").await;
    assert_eq!(res.status(), 200);
    assert!(header(&res, "content-type").starts_with("text/html"));
    let csp = header(&res, "content-security-policy").to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self';",
        "style-src 'self';",
        "connect-src 'self';",
        "img-src 'self' data:",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    // The simulator's challenge page is the one other place the checkout sends people.
    assert!(
        csp.contains(&format!(
            "form-action 'self' {}",
            app.sim.base_url().trim_end_matches('/')
        )),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header(&res, "x-content-type-options"), "nosniff");
    assert_eq!(header(&res, "referrer-policy"), "no-referrer");
    assert_eq!(header(&res, "x-frame-options"), "DENY");
    let html = res.text().await.unwrap();
    assert!(
        html.contains("<h1 id=\"product-name\">Basic</h1>"),
        "{html}"
    );
    assert!(html.contains("Pay $10.00"));
    assert!(html.contains("name=\"viewport\""));
    assert!(html.contains("<legend>Test card</legend>"));
    assert!(html.contains("value=\"pm_card_threeDSecure2Required\""));
    assert!(html.contains("/static/checkout.js?v="));
    assert!(!html.contains("<script>"), "no inline script");
    assert!(!html.contains("style="), "no inline style");

    let pro = app
        .get_raw("/checkout?price=pro")
        .await
        .text()
        .await
        .unwrap();
    assert!(pro.contains("Pay €25.00"));
    let yen = app
        .get_raw("/checkout?price=yen")
        .await
        .text()
        .await
        .unwrap();
    assert!(yen.contains("Pay ¥1,000"), "JPY has no decimals");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_price_is_a_404_page_and_the_root_redirects_to_the_default_price() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let res = app.get_raw("/checkout?price=gold%3Cb%3E").await;
    assert_eq!(res.status(), 404);
    assert!(header(&res, "content-type").starts_with("text/html"));
    assert!(header(&res, "content-security-policy").contains("default-src 'none'"));
    let html = res.text().await.unwrap();
    assert!(
        html.contains("There is no product called “gold&lt;b&gt;”."),
        "{html}"
    );

    for path in ["/", "/checkout"] {
        let res = app.get_raw(path).await;
        assert_eq!(res.status(), 303, "{path}");
        assert_eq!(header(&res, "location"), "/checkout?price=basic", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn static_files_are_served_with_their_types_and_cache_headers() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let v = api::pages::assets::version();
    let js = app.get_raw(&format!("/static/checkout.js?v={v}")).await;
    assert_eq!(js.status(), 200);
    assert!(header(&js, "content-type").starts_with("text/javascript"));
    assert!(header(&js, "cache-control").contains("immutable"));
    assert_eq!(header(&js, "x-content-type-options"), "nosniff");
    let css = app.get_raw("/static/checkout.css").await;
    assert!(header(&css, "content-type").starts_with("text/css"));
    assert_eq!(
        header(&css, "cache-control"),
        "no-cache",
        "an unversioned URL revalidates"
    );
    assert_eq!(app.get_raw("/static/nope.js").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_publishable_key_card_entry_is_stripes_payment_element() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        tweak: |s| s.stripe.publishable_key = Some("pk_test_e2e".into()),
    })
    .await;
    let res = app.get_raw("/checkout?price=basic").await;
    let csp = header(&res, "content-security-policy").to_owned();
    assert!(
        csp.contains("script-src 'self' https://js.stripe.com"),
        "{csp}"
    );
    assert!(
        csp.contains("connect-src 'self' https://api.stripe.com"),
        "{csp}"
    );
    assert!(csp.contains("frame-src https://js.stripe.com"), "{csp}");
    assert!(
        csp.contains("form-action 'self';"),
        "no simulator without it: {csp}"
    );
    let html = res.text().await.unwrap();
    assert!(html.contains("<script src=\"https://js.stripe.com/v3/\"></script>"));
    assert!(html.contains("\"publishableKey\":\"pk_test_e2e\""));
    assert!(!html.contains("pm_card_visa"));
    assert!(!html.contains("simBase"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_sends_the_current_state_then_the_final_one_and_ends() {
    let mut app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let id = app.pay("basic", "pm_card_visa").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + WITHIN;
    let mut events = Events::open(&app, &id).await;
    let first = events.next(deadline).await.expect("an event on connect");
    assert_eq!(first["id"], id.as_str());
    assert_eq!(first["state"], "pending", "no worker yet: {first}");
    assert_eq!(first["amount"], 1000);

    app.start_worker();
    let mut last = first;
    while let Some(event) = events.next(deadline).await {
        assert_ne!(event, last, "an unchanged transaction was sent again");
        last = event;
    }
    assert_eq!(last["state"], "complete", "{last}");
    assert!(last["stripe_id"].as_str().unwrap().starts_with("pi_"));
}

/// How late Postgres may count an idle backend's transactions (PGSTAT_IDLE_INTERVAL, 10 s).
const STATS_LAG: Duration = Duration::from_secs(11);

/// Transactions this test's database has committed so far (every query is one).
async fn commits(app: &TestApp) -> i64 {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = app.db().await;
    diesel::sql_query("SELECT pg_stat_force_next_flush()")
        .execute(&mut conn)
        .await
        .ok();
    let n: N = diesel::sql_query(
        "SELECT (xact_commit + xact_rollback)::bigint AS n FROM pg_stat_database \
         WHERE datname = current_database()",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    n.n
}

/// Waits until this app's listening connection shows in `pg_stat_activity`.
async fn wait_for_listener(app: &TestApp) {
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let deadline = Instant::now() + WITHIN;
    loop {
        let mut conn = app.db().await;
        let n: N = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'payments-api-listen' AND query ILIKE 'LISTEN%'",
        )
        .get_result(&mut conn)
        .await
        .unwrap();
        if n.n == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "the api never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn open_event_streams_cost_no_queries_while_nothing_changes() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    wait_for_listener(&app).await;
    let deadline = Instant::now() + WITHIN;
    let mut streams = Vec::new();
    for _ in 0..50 {
        let id = app.pay("basic", "pm_card_visa").await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut events = Events::open(&app, &id).await;
        assert_eq!(events.next(deadline).await.unwrap()["state"], "pending");
        streams.push((id, events));
    }
    // An idle backend reports its statistics up to 10 s late: let the POSTs and first reads be
    // counted before the quiet interval, and what the interval did after it.
    tokio::time::sleep(STATS_LAG).await;
    let before = commits(&app).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the quiet interval being measured
    tokio::time::sleep(STATS_LAG).await;
    let after = commits(&app).await;
    // A SELECT per stream every 300 ms would be over 1,000 here; the statistics reads are ours.
    assert!(
        after - before <= 10,
        "50 idle streams made {} transactions in 3 s (+ {STATS_LAG:?} of quiet)",
        after - before
    );

    // And a change still reaches its stream at once: the worker takes every payment on.
    let deadline = Instant::now() + WITHIN;
    let mut app = app;
    app.start_worker();
    for (id, events) in &mut streams {
        let mut last = None;
        while let Some(e) = events.next(deadline).await {
            last = Some(e);
        }
        assert_eq!(last.unwrap()["state"], "complete", "{id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_re_reads_its_payment_when_the_listener_reconnects() {
    // The listener reaches Postgres through a hop the test can cut; the pool does not.
    let (host, port) = shared::testing::base_urls()
        .0
        .parse::<reqwest::Url>()
        .map(|u| (u.host_str().unwrap().to_owned(), u.port().unwrap_or(5432)))
        .unwrap();
    let proxy = shared::testing::proxy::Proxy::start(format!("{host}:{port}")).await;
    let p = proxy.clone();
    let app = TestApp::spawn_configured(false, move |s| {
        let mut url: reqwest::Url = s.database_url.parse().unwrap();
        url.set_port(Some(p.port)).unwrap();
        s.database_direct_url = url.to_string();
    })
    .await;
    wait_for_listener(&app).await;
    let id = app.pay("basic", "pm_card_visa").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + WITHIN;
    let mut events = Events::open(&app, &id).await;
    assert_eq!(events.next(deadline).await.unwrap()["state"], "pending");

    // The listener's connection drops, and the payment changes while nobody listens: its
    // notification is lost.
    proxy.cut();
    let mut conn = app.db().await;
    let claimed = shared::state_machine::change::change(
        &mut conn,
        id.parse().unwrap(),
        shared::state_machine::change::Transition::Claim {
            owner: "test",
            lease: Duration::from_secs(60),
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert!(claimed.applied);
    let quiet = tokio::time::timeout(Duration::from_secs(1), events.next(deadline)).await;
    assert!(
        quiet.is_err(),
        "the stream heard of a change nobody could notify"
    );

    // The listener is back: the stream re-reads the row and sends what it missed.
    let accepted = proxy.accepted();
    proxy.restore();
    let event = events.next(deadline).await.expect("the missed change");
    assert_eq!(event["state"], "processing", "{event}");
    assert!(proxy.accepted() > accepted, "the listener reconnected");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_and_confirm_answer_404_for_unknown_or_malformed_ids() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let unknown = uuid::Uuid::new_v4();
    for id in [unknown.to_string(), "not-a-uuid".into()] {
        let (status, body) = app.get(&format!("/transactions/{id}/events")).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
        let res = app
            .client
            .post(format!("{}/transactions/{id}/confirm", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
}

async fn confirm(app: &TestApp, id: &str) -> (u16, Value) {
    let res = app
        .client
        .post(format!("{}/transactions/{id}/confirm", app.base))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn confirm_after_a_3ds_challenge_has_the_worker_read_the_payment_at_once() {
    let app = TestApp::spawn_with(Options {
        worker: true,
        // The worker's own re-check of waiting payments comes far too late for this test:
        // only the confirm can bring the payment forward in time.
        tweak: |s| s.worker.sweep_after = Duration::from_secs(600),
    })
    .await;
    let id = app.pay("basic", "pm_card_threeDSecure2Required").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting = app.wait_for_state(&id, &["requires_action"], WITHIN).await;
    assert!(waiting["client_secret"].as_str().is_some(), "{waiting}");
    let pi = waiting["stripe_id"].as_str().unwrap();
    app.sim.sim.complete_challenge(pi, true).unwrap();

    let (status, body) = confirm(&app, &id).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"], id.as_str());
    let done = app
        .wait_for_state(&id, &["complete", "failed"], WITHIN)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(app.charges_for(&id), 1);

    // Confirming a finished payment changes nothing and still answers with it.
    let (status, body) = confirm(&app, &id).await;
    assert_eq!((status, body["state"].as_str()), (202, Some("complete")));
}

#[tokio::test(flavor = "multi_thread")]
async fn confirm_leaves_a_payment_that_is_not_waiting_for_the_customer_alone() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let id = app.pay("basic", "pm_card_visa").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.jobs_pushed().await, 1);
    let (status, body) = confirm(&app, &id).await;
    assert_eq!((status, body["state"].as_str()), (202, Some("pending")));
    assert_eq!(
        app.jobs_pushed().await,
        1,
        "no job for a payment not in 3-D Secure"
    );
}
