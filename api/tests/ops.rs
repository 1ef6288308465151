//! `/ops`: the page and its JSON need the admin token; the summary shows the queue, payments
//! and dead jobs; the retry button puts a dead job back and the payment then completes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, Options, TestApp};
use serde_json::Value;

async fn get(app: &TestApp, path: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(format!("{}{path}", app.base));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

#[tokio::test(flavor = "multi_thread")]
async fn ops_refuses_everyone_without_the_admin_token() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    for path in ["/ops", "/ops/api/summary"] {
        for auth in [
            None,
            Some("Bearer not-the-admin-token"),
            Some("Basic b3BzOndyb25n"),
        ] {
            let res = get(&app, path, auth).await;
            assert_eq!(res.status(), 401, "{path} {auth:?}");
            assert!(
                res.headers()
                    .get("www-authenticate")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("Basic")
            );
        }
    }
    let res = app
        .client
        .post(format!("{}/ops/api/dead/abc/retry", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // A browser's Basic prompt (any user name, the token as password) works like the Bearer.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{ADMIN_TOKEN}"));
    let page = get(&app, "/ops", Some(&format!("Basic {basic}"))).await;
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(page.text().await.unwrap().contains("Dead jobs"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_job_is_listed_and_its_retry_button_gets_the_payment_charged() {
    let mut app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let id = app.pay("basic", "pm_card_visa").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Make the job dead the way apalis' handle_results script does after its last attempt:
    // out of the schedule, into the dead set, meta status Killed.
    let queue = app.settings.charge_queue();
    let client = redis::Client::open(app.settings.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut tasks: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{queue}:scheduled"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let active: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{queue}:active"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    tasks.extend(active);
    assert_eq!(tasks.len(), 1, "one job queued");
    let task = tasks[0].clone();
    redis::pipe()
        .cmd("ZREM")
        .arg(format!("{queue}:scheduled"))
        .arg(&task)
        .cmd("LREM")
        .arg(format!("{queue}:active"))
        .arg(0)
        .arg(&task)
        .cmd("SADD")
        .arg(format!("{queue}:dead"))
        .arg(&task)
        .cmd("HSET")
        .arg(format!("{queue}:meta:{task}"))
        .arg("status")
        .arg("Killed")
        .arg("attempts")
        .arg(25)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    let summary: Value = get(&app, "/ops/api/summary", Some(&bearer()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(summary["queue"]["dead"], 1, "{summary}");
    assert_eq!(summary["transactions"]["pending"], 1, "{summary}");
    assert_eq!(summary["dead"][0]["task_id"], task.as_str());
    assert_eq!(summary["dead"][0]["transaction_id"], id.as_str());

    // Another site's page posts a form to the retry button: the browser adds the Basic
    // credentials it holds for our origin, and says where the request comes from.
    let basic = {
        use base64::Engine;
        let pair = format!("ops:{ADMIN_TOKEN}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    for (site, origin) in [
        ("cross-site", "https://evil.example"),
        ("same-site", "https://x.example"),
    ] {
        let forged = app
            .client
            .post(format!("{}/ops/api/dead/{task}/retry", app.base))
            .header("authorization", &basic)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", origin)
            .header("sec-fetch-site", site)
            .body("")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403, "{site}");
        let body: Value = forged.json().await.unwrap();
        assert_eq!(body["error"]["code"], "cross_site_request", "{body}");
    }
    // An older browser says only `Origin`.
    let forged = app
        .client
        .post(format!("{}/ops/api/dead/{task}/retry", app.base))
        .header("authorization", &basic)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let summary: Value = get(&app, "/ops/api/summary", Some(&bearer()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        summary["queue"]["dead"], 1,
        "a forged request changed something: {summary}"
    );

    let unknown = app
        .client
        .post(format!("{}/ops/api/dead/01NOTADEADJOB/retry", app.base))
        .header("authorization", bearer())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    // The ops page's own button: same origin, Basic credentials.
    let retried = app
        .client
        .post(format!("{}/ops/api/dead/{task}/retry", app.base))
        .header("authorization", &basic)
        .header("origin", app.base.as_str())
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 202);

    app.start_worker();
    let t = app
        .wait_for_state(&id, &["complete"], Duration::from_secs(20))
        .await;
    assert_eq!(t["state"], "complete");
    assert_eq!(app.charges_for(&id), 1);
    let summary: Value = get(&app, "/ops/api/summary", Some(&bearer()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(summary["queue"]["dead"], 0, "{summary}");
    assert_eq!(summary["transactions"]["complete"], 1);
}
