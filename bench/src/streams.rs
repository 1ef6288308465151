//! Open checkout pages: what 1,000 event streams (`GET /transactions/{id}/events`) cost while
//! nothing changes. Postgres transactions per second in the deployment's database over a quiet
//! window (the goal: about zero; a SELECT per page every 300 ms, as the streams did before
//! `LISTEN/NOTIFY`, would be about 3,300/s), and the api's resident memory before and with them
//! open. Then a worker starts and every stream must see its payment complete, so the figure is
//! of streams that work, not of connections that went deaf.

use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::Bench;
use crate::procstat::rss_bytes;

/// Pages held open.
pub const STREAMS: usize = 1000;
/// How late Postgres may count a backend's transactions, and a margin.
const STATS_LAG: Duration = Duration::from_secs(11);

#[derive(Clone, Debug, Default)]
pub struct Streams {
    pub open: usize,
    /// Postgres transactions per second in our database while the streams were open and idle
    /// (our own two statistics reads excluded).
    pub pg_per_sec: f64,
    pub window_secs: f64,
    pub rss_before: u64,
    pub rss_open: u64,
    /// Streams that saw `complete` once a worker ran, and how long the last one took.
    pub completed: usize,
    pub completed_within_secs: f64,
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Transactions committed or rolled back in the current database so far.
async fn transactions(conn: &mut AsyncPgConnection) -> anyhow::Result<i64> {
    diesel::sql_query("SELECT pg_stat_force_next_flush()")
        .execute(conn)
        .await
        .ok();
    let n: N = diesel::sql_query(
        "SELECT (xact_commit + xact_rollback)::bigint AS n FROM pg_stat_database \
         WHERE datname = current_database()",
    )
    .get_result(conn)
    .await?;
    Ok(n.n)
}

pub async fn run(bench: &Bench) -> anyhow::Result<Streams> {
    let mut stack = bench.start_stack("streams", 0, 0, 100).await?;
    let result = measure(bench, &mut stack).await;
    bench.teardown(stack).await?;
    result
}

async fn measure(bench: &Bench, stack: &mut tools::stack::Stack) -> anyhow::Result<Streams> {
    let client = crate::http::client()?;
    let api = stack.api_url.clone();
    let mut ids = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        let res = client
            .post(format!("{api}/transactions"))
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(
                &serde_json::json!({"price": "basic", "email": "bench@example.com",
                                      "payment_method": "pm_card_visa"}),
            )
            .send()
            .await?;
        anyhow::ensure!(res.status().as_u16() == 202, "POST: {}", res.status());
        let v: serde_json::Value = res.json().await?;
        ids.push(v["id"].as_str().unwrap_or_default().to_owned());
    }
    let pid = stack.api_pid();
    let rss_before = pid.and_then(rss_bytes).unwrap_or(0);
    // Each stream on its own task: it reads the first event, says so, then waits for the end.
    let (opened_tx, mut opened) = tokio::sync::mpsc::channel::<()>(STREAMS);
    let mut tasks = Vec::with_capacity(STREAMS);
    let streaming = reqwest::Client::builder()
        .pool_max_idle_per_host(STREAMS)
        .build()?;
    for id in &ids {
        let (client, url, opened_tx) = (
            streaming.clone(),
            format!("{api}/transactions/{id}/events"),
            opened_tx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut res = client.get(url).send().await.ok()?;
            let mut seen = String::new();
            let mut told = false;
            while let Some(chunk) = res.chunk().await.ok()? {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if !told && seen.contains("\n\n") {
                    told = true;
                    let _ = opened_tx.send(()).await;
                }
                if seen.contains("\"state\":\"complete\"") {
                    return Some(Instant::now());
                }
            }
            None
        }));
    }
    drop(opened_tx);
    let mut open = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while open < STREAMS {
        match tokio::time::timeout_at(deadline, opened.recv()).await {
            Ok(Some(())) => open += 1,
            _ => break,
        }
    }
    bench.progress(&format!("streams: {open} of {STREAMS} open"));
    let window = if bench.opts.quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    let mut conn = crate::pg::connect(&stack.database_url).await?;
    // An idle backend reports its statistics up to 10 s late (PGSTAT_IDLE_INTERVAL): wait that
    // out, so the POSTs and first reads above are counted before the window, not in it...
    tokio::time::sleep(STATS_LAG).await;
    let before = transactions(&mut conn).await?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let rss_open = pid.and_then(rss_bytes).unwrap_or(0);
    // ...and whatever the window did is counted after it (nothing happens meanwhile).
    tokio::time::sleep(STATS_LAG).await;
    let after = transactions(&mut conn).await?;
    let window_secs = started.elapsed().as_secs_f64();
    // Our own statistics reads: the flush and the count, once each side. The rate is over the
    // whole quiet span between the two reads.
    let pg_per_sec = ((after - before - 2).max(0)) as f64 / window_secs;
    bench.progress(&format!(
        "streams: {pg_per_sec:.1} Postgres transactions/s over {window_secs:.0} s with {open} idle; api RSS {:.1} → {:.1} MB",
        rss_before as f64 / 1e6,
        rss_open as f64 / 1e6
    ));
    // Now the payments are charged: every stream must hear of it.
    let charging = Instant::now();
    stack.start_worker()?;
    let mut completed = 0;
    let mut last = Duration::ZERO;
    for t in tasks {
        if let Ok(Ok(Some(at))) = tokio::time::timeout(Duration::from_secs(120), t).await {
            completed += 1;
            last = last.max(at.saturating_duration_since(charging));
        }
    }
    bench.progress(&format!(
        "streams: {completed} of {open} saw their payment complete, the last after {:.1} s",
        last.as_secs_f64()
    ));
    Ok(Streams {
        open,
        pg_per_sec,
        window_secs,
        rss_before,
        rss_open,
        completed,
        completed_within_secs: last.as_secs_f64(),
    })
}
