//! `GET /transactions`, the merchant's list: newest first, cursor paging that neither repeats
//! nor skips a row while payments keep arriving, the filters, and bad queries refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::{MERCHANT_KEY, Options, TestApp};
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};

async fn list(app: &TestApp, query: &str) -> (u16, Value) {
    let res = app
        .client
        .get(format!("{}/transactions?{query}", app.base))
        .header("authorization", format!("Bearer {MERCHANT_KEY}"))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or_default())
}

async fn make(app: &TestApp, email: &str, reference: Option<&str>) -> String {
    let mut body = json!({"amount": 500, "currency": "usd", "email": email,
                          "payment_method": "pm_card_visa"});
    if let Some(r) = reference {
        body["reference"] = json!(r);
    }
    let auth = format!("Bearer {MERCHANT_KEY}");
    let (status, v, _) = app.post(&body, &[("authorization", &auth)]).await;
    assert_eq!(status, 202, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page from the start, following `starting_after`.
async fn all_pages(app: &TestApp, filter: &str, limit: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after
            .as_ref()
            .map_or(String::new(), |a| format!("&starting_after={a}"));
        let (status, page) = list(app, &format!("limit={limit}{filter}{cursor}")).await;
        assert_eq!(status, 200, "{page}");
        let got = ids(&page);
        assert!(got.len() <= limit);
        let more = page["has_more"].as_bool().unwrap();
        after = got.last().cloned();
        pages.push(got);
        if !more {
            return pages;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_list_pages_newest_first_and_filters() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let mut made = Vec::new();
    for i in 0..23 {
        let email = if i % 3 == 0 {
            "a@example.com"
        } else {
            "b@example.com"
        };
        let reference = (i == 5).then_some("order-5");
        made.push(make(&app, email, reference).await);
    }
    let pages = all_pages(&app, "", 10).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 3]);
    let listed: Vec<String> = pages.concat();
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);

    // The default page is 10; each row is the merchant's view.
    let (_, page) = list(&app, "").await;
    assert_eq!(ids(&page).len(), 10);
    assert_eq!(page["has_more"], true);
    serde_json::from_value::<api::views::MerchantTransactionView>(page["data"][0].clone()).unwrap();

    let (_, by_email) = list(&app, "limit=100&email=a@example.com").await;
    assert_eq!(ids(&by_email).len(), 8);
    assert!(
        by_email["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["email"] == "a@example.com")
    );
    let (_, by_reference) = list(&app, "reference=order-5").await;
    assert_eq!(ids(&by_reference), [made[5].clone()]);

    // States: one payment failed, the rest pending.
    let mut conn = app.db().await;
    diesel::sql_query(format!(
        "UPDATE transactions SET state = 'failed', error_code = 'card_declined', \
         error_message = 'declined' WHERE id = '{}'",
        made[7]
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let (_, failed) = list(&app, "state=failed").await;
    assert_eq!(ids(&failed), [made[7].clone()]);
    let (_, pending) = list(&app, "state=pending&limit=100").await;
    assert_eq!(ids(&pending).len(), 22);
    let (_, none) = list(&app, "state=complete").await;
    assert_eq!((ids(&none).len(), &none["has_more"]), (0, &json!(false)));

    // Creation time: move three payments a day back, and ask by unix seconds.
    diesel::sql_query(format!(
        "UPDATE transactions SET created_at = created_at - interval '1 day' WHERE id IN ('{}', '{}', '{}')",
        made[0], made[1], made[2]
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let hour_ago = chrono::Utc::now().timestamp() - 3600;
    let (_, old) = list(&app, &format!("created[lte]={hour_ago}")).await;
    let old: HashSet<String> = ids(&old).into_iter().collect();
    assert_eq!(old, made[..3].iter().cloned().collect());
    let (_, recent) = list(&app, &format!("limit=100&created%5Bgte%5D={hour_ago}")).await;
    assert_eq!(ids(&recent).len(), 20);
    let (_, window) = list(
        &app,
        &format!(
            "created[gt]={}&created[lt]={hour_ago}",
            hour_ago - 2 * 86_400
        ),
    )
    .await;
    assert_eq!(ids(&window).len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn paging_never_repeats_or_skips_a_row_while_payments_arrive() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let mut before = HashSet::new();
    for _ in 0..60 {
        before.insert(make(&app, "c@example.com", None).await);
    }
    // Payments keep arriving while the merchant pages through.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, base) = (stop.clone(), app.base.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0;
            while !std::sync::atomic::AtomicBool::load(&stop, std::sync::atomic::Ordering::Relaxed)
            {
                let res = client
                    .post(format!("{base}/transactions"))
                    .header("authorization", format!("Bearer {MERCHANT_KEY}"))
                    .json(&json!({"amount": 500, "currency": "usd",
                                  "email": "c@example.com", "payment_method": "pm_card_visa"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202);
                n += 1;
            }
            n
        })
    };
    let pages = all_pages(&app, "&email=c@example.com", 7).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 0, "nothing arrived while paging");

    let seen: Vec<String> = pages.concat();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a row was listed twice");
    let missing: Vec<&String> = before.iter().filter(|id| !unique.contains(id)).collect();
    assert!(missing.is_empty(), "rows skipped: {missing:?}");

    // And the order held across pages: strictly newest first by (created_at, id).
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: uuid::Uuid,
    }
    let mut conn = app.db().await;
    let ordered: Vec<Row> =
        diesel::sql_query("SELECT id FROM transactions ORDER BY created_at DESC, id DESC")
            .load(&mut conn)
            .await
            .unwrap();
    let position: std::collections::HashMap<String, usize> = ordered
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.to_string(), i))
        .collect();
    let ranks: Vec<usize> = seen.iter().map(|id| position[id]).collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_list_request_is_a_4xx_naming_what_is_wrong() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    make(&app, "d@example.com", None).await;
    let (status, _) = app.get("/transactions").await;
    assert_eq!(status, 401, "the list is the merchant's");
    let res = app
        .client
        .get(format!("{}/transactions", app.base))
        .header("authorization", "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let unknown = uuid::Uuid::new_v4();
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("state=paid", "state"),
        ("created[gte]=monday", "created[gte]"),
        ("starting_after=xyz", "starting_after"),
        (
            &format!("starting_after={unknown}") as &str,
            "starting_after",
        ),
        ("email=nobody", "email"),
        ("sort=asc", "query"),
        ("limit=5&limit=6", "limit"),
    ] {
        let (status, v) = list(&app, query).await;
        assert_eq!(status, 422, "{query}: {v}");
        assert_eq!(v["error"]["field"], field, "{query}: {v}");
    }
}
