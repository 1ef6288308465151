//! At Stripe's real limit: `STRIPE_RATE_LIMIT=25` (test mode) in the worker and the same limit
//! enforced by stripe-sim (`rate_limit_per_second`: what goes over it gets 429, as Stripe's
//! account limit does). A backlog of background work first (declined payments whose intents
//! are to cancel, 3-D Secure payments being re-checked, the reconciler every 2 s), then new
//! payments at a steady rate beside it: their time to final, what the backlog got meanwhile,
//! how long it took to drain afterwards, and the 429s the sim answered (none expected).

use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::http;
use crate::stats::Summary;
use crate::{Bench, pg};

pub const RATE_LIMIT: u64 = 25;
/// Declined payments (each leaves an intent to cancel) and 3-D Secure ones (re-checked).
pub const DECLINED: usize = 60;
pub const THREE_DS: usize = 40;
/// New payments per second while the backlog waits: 2 Stripe calls each, 64 % of the limit.
pub const NEW_RATE: f64 = 8.0;

#[derive(Clone, Debug, Default)]
pub struct AtLimit {
    pub new_offered: u64,
    pub new_accepted: usize,
    /// Insert to `complete` of the new payments.
    pub new_time_to_final: Summary,
    pub new_not_complete: usize,
    /// Stripe calls while the new payments ran: theirs (create, confirm) and the background's
    /// (cancel, retrieve, list).
    pub calls_new: u64,
    pub calls_background: u64,
    pub window: Duration,
    /// Intents still to cancel when the new payments stopped, and how long they took to drain.
    pub cancels_left: i64,
    pub drained_in: Option<Duration>,
    /// 429s stripe-sim answered over the whole run (its limit and injected ones).
    pub sim_429: u64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> anyhow::Result<i64> {
    let row: Count = diesel::sql_query(sql).get_result(conn).await?;
    Ok(row.n)
}

const CANCELS_LEFT: &str = "SELECT count(*) AS n FROM transactions WHERE state = 'failed' \
     AND cancel_requested_at IS NOT NULL AND canceled_at IS NULL";
const NOT_CHARGED_YET: &str =
    "SELECT count(*) AS n FROM transactions WHERE state IN ('pending', 'processing')";

/// stripe-sim's counters: (create + confirm, cancel + retrieve + list, 429s).
async fn sim_calls(client: &reqwest::Client, sim_url: &str) -> anyhow::Result<(u64, u64, u64)> {
    let s: serde_json::Value = client
        .get(format!("{sim_url}/sim/stats"))
        .send()
        .await?
        .json()
        .await?;
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let c = &s["calls"];
    Ok((
        n(&c["create"]) + n(&c["confirm"]),
        n(&c["cancel"]) + n(&c["retrieve"]) + n(&c["list"]),
        n(&s["rate_limited"]) + n(&s["faults"]["rate_limit_429"]),
    ))
}

async fn wait_for(
    conn: &mut AsyncPgConnection,
    sql: &str,
    within: Duration,
) -> anyhow::Result<(i64, Duration)> {
    let started = Instant::now();
    loop {
        let left = count(conn, sql).await?;
        if left == 0 || started.elapsed() >= within {
            return Ok((left, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(bench: &Bench) -> anyhow::Result<AtLimit> {
    let extra = [
        ("STRIPE_RATE_LIMIT", RATE_LIMIT.to_string()),
        // 3-D Secure re-checks from 2 s on (doubling), the reconciler every 2 s.
        ("SWEEP_AFTER_MS", "2000".to_owned()),
        ("RECONCILE_INTERVAL_MS", "2000".to_owned()),
    ];
    let stack = bench
        .start_stack_with("at-limit", 1, 0, 200, &extra)
        .await?;
    stack
        .set_sim_faults(&serde_json::json!({ "rate_limit_per_second": RATE_LIMIT }))
        .await?;
    let result = measure(bench, &stack).await;
    bench.teardown_checked(stack).await?;
    let r = result?;
    bench.progress(&format!(
        "at Stripe's limit ({RATE_LIMIT}/s): new payments {} of {} complete, time to final p50 {} p99 {} max {} ms; Stripe calls meanwhile: new {} / background {}; {} cancels left, drained in {}; sim 429s {}",
        r.new_accepted - r.new_not_complete,
        r.new_offered,
        crate::stats::ms(r.new_time_to_final.p50),
        crate::stats::ms(r.new_time_to_final.p99),
        crate::stats::ms(r.new_time_to_final.max),
        r.calls_new,
        r.calls_background,
        r.cancels_left,
        r.drained_in
            .map_or("- (not within 60 s)".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        r.sim_429
    ));
    Ok(r)
}

async fn measure(bench: &Bench, stack: &tools::stack::Stack) -> anyhow::Result<AtLimit> {
    let client = http::client()?;
    let mut conn = pg::connect(&stack.database_url).await?;
    // The backlog: every one charged (create + confirm) first, at the limit.
    let run = Uuid::new_v4().simple().to_string();
    let cards = std::iter::repeat_n("pm_card_chargeDeclined", DECLINED).chain(std::iter::repeat_n(
        "pm_card_threeDSecure2Required",
        THREE_DS,
    ));
    let posts: Vec<_> = cards
        .enumerate()
        .map(|(i, card)| {
            let (client, api) = (client.clone(), stack.api_url.clone());
            let key = format!("limit-{run}-{i}");
            tokio::spawn(async move { http::post_with(&client, &api, &key, card).await })
        })
        .collect();
    for p in posts {
        anyhow::ensure!(
            p.await.ok().flatten().is_some(),
            "a backlog payment was refused"
        );
    }
    let (left, _) = wait_for(&mut conn, NOT_CHARGED_YET, Duration::from_secs(60)).await?;
    anyhow::ensure!(left == 0, "{left} backlog payments were never charged");

    // New payments beside the backlog.
    let window = bench.timing.window.min(Duration::from_secs(15));
    let before = sim_calls(&client, &stack.sim_url).await?;
    let mut new = http::open_loop(
        &client,
        &stack.api_url,
        http::Request::Post,
        NEW_RATE,
        window,
    )
    .await;
    let cancels_left = count(&mut conn, CANCELS_LEFT).await?;
    let after = sim_calls(&client, &stack.sim_url).await?;
    pg::drain_ids(&mut conn, &new.created, Duration::from_secs(30)).await?;
    let mut times = pg::time_to_complete(&mut conn, &new.created).await?;
    // The background drains once the new payments are gone.
    let (left, took) = wait_for(&mut conn, CANCELS_LEFT, Duration::from_secs(60)).await?;
    let end = sim_calls(&client, &stack.sim_url).await?;
    Ok(AtLimit {
        new_offered: new.offered,
        new_accepted: new.created.len(),
        new_not_complete: new.created.len() - times.len(),
        new_time_to_final: Summary::of(&mut times),
        calls_new: after.0 - before.0,
        calls_background: after.1 - before.1,
        window: std::mem::take(&mut new.elapsed),
        cancels_left,
        drained_in: (left == 0).then_some(took),
        sim_429: end.2,
    })
}
