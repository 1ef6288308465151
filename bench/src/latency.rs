//! API latency at fixed offered rates (open loop), stepping the rate up until the p99 or the
//! errors blow up; and the time from POST to `complete` at a moderate rate.
//!
//! Both run against one deployment with a worker charging what the POSTs create, as in
//! production: the api shares the cores with the worker, Postgres, Redis and stripe-sim.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::http::{self, Errors, Request};
use crate::probe::{CpuSplit, Probe};
use crate::stats::Summary;
use crate::{Bench, pg};
use tools::stack::Stack;

/// Rates always measured (the targets name them), then the ramp while each step holds.
pub const FIXED_RATES: [f64; 2] = [200.0, 1000.0];
pub const RAMP: [f64; 8] = [
    1500.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0, 12000.0, 16000.0,
];
/// Tried when 1,000/s already fails, to bracket the highest sustained rate.
pub const BELOW: f64 = 500.0;

/// A step "holds" while its p99 stays under this and errors stay at or under 0.1 %: ten times
/// the 10 ms target is a server whose queue is growing, not one that is merely busy.
pub const P99_LIMIT: Duration = Duration::from_millis(100);

/// The deployment the latency runs use.
pub const WORKER_CONCURRENCY: usize = 100;

#[derive(Clone, Debug)]
pub struct Step {
    pub method: &'static str,
    pub rate: f64,
    pub offered: u64,
    pub latency: Summary,
    pub errors: Errors,
    /// Unfinished payments when the step began (left from the step before).
    pub backlog_before: i64,
    pub cpu: CpuSplit,
}

impl Step {
    pub fn holds(&self) -> bool {
        self.latency.p99 <= P99_LIMIT && self.errors.total() * 1000 <= self.offered
    }
}

#[derive(Clone, Debug, Default)]
pub struct TimeToFinal {
    pub rate: f64,
    pub payments: usize,
    /// Insert to `complete`, from the rows' `created_at` and `updated_at`.
    pub latency: Summary,
    /// Of the accepted payments, how many were not complete when the wait ended.
    pub not_complete: usize,
    pub post_errors: Errors,
}

#[derive(Clone, Debug, Default)]
pub struct Results {
    pub post: Vec<Step>,
    pub get: Vec<Step>,
    /// POST at 1,000/s once the worker is stopped: the api's own path, without the charges
    /// competing for the cores (diagnostic).
    pub post_alone: Option<Step>,
    pub time_to_final: TimeToFinal,
}

impl Results {
    /// The highest rate whose step held.
    pub fn highest(steps: &[Step]) -> Option<&Step> {
        steps
            .iter()
            .filter(|s| s.holds())
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
    }

    pub fn at(steps: &[Step], rate: f64) -> Option<&Step> {
        steps.iter().find(|s| s.rate == rate)
    }
}

pub async fn run(bench: &Bench) -> anyhow::Result<Results> {
    let mut stack = bench
        .start_stack("latency", 1, 0, WORKER_CONCURRENCY)
        .await?;
    let result = measure(bench, &mut stack).await;
    bench.teardown_checked(stack).await?;
    result
}

async fn measure(bench: &Bench, stack: &mut Stack) -> anyhow::Result<Results> {
    let client = http::client()?;
    // One connection for all the counting, taken before any load (see `e2e`).
    let mut conn = pg::connect(&stack.database_url).await?;
    let ctx = Ctx {
        bench,
        stack,
        client: &client,
    };
    let time_to_final = time_to_final(&ctx, &mut conn).await?;
    let mut ids: Vec<Uuid> = Vec::new();
    let post = ramp(&ctx, &mut conn, Request::Post, &mut ids).await?;
    let get_ids = Request::Get(Arc::new(ids.clone()));
    let get = ramp(&ctx, &mut conn, get_ids, &mut ids).await?;
    pg::drain(&mut conn, bench.timing.drain).await?;
    // SIGTERM: the worker finishes what it holds and exits; the stack forgets it.
    stack.terminate_worker(0).await?;
    let ctx = Ctx {
        bench,
        stack,
        client: &client,
    };
    let post_alone = step(&ctx, &mut conn, Request::Post, 1000.0, &mut ids).await?;
    Ok(Results {
        post,
        get,
        post_alone: Some(Step {
            method: "POST, no worker running",
            ..post_alone
        }),
        time_to_final,
    })
}

/// What every step needs.
struct Ctx<'a> {
    bench: &'a Bench,
    stack: &'a Stack,
    client: &'a reqwest::Client,
}

async fn ramp(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    request: Request,
    ids: &mut Vec<Uuid>,
) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    for rate in FIXED_RATES {
        steps.push(step(ctx, conn, request.clone(), rate, ids).await?);
    }
    let held_1000 = steps.last().is_some_and(Step::holds);
    if !held_1000 {
        steps.push(step(ctx, conn, request.clone(), BELOW, ids).await?);
        steps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        return Ok(steps);
    }
    for rate in RAMP {
        let s = step(ctx, conn, request.clone(), rate, ids).await?;
        let held = s.holds();
        steps.push(s);
        if !held {
            break;
        }
    }
    Ok(steps)
}

async fn step(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    request: Request,
    rate: f64,
    ids: &mut Vec<Uuid>,
) -> anyhow::Result<Step> {
    let Ctx {
        bench,
        stack,
        client,
    } = *ctx;
    // Let the worker finish what the step before created, so steps do not inherit its backlog
    // (bounded: a step past the worker's throughput leaves more than it can clear quickly).
    let backlog_before = pg::drain(conn, bench.timing.drain).await?;
    let method = match request {
        Request::Post => "POST",
        Request::Get(_) => "GET",
    };
    let probe = Probe::start(stack, conn).await;
    let mut run = http::open_loop(client, &stack.api_url, request, rate, bench.timing.step).await;
    let cpu = probe.finish(stack, conn).await;
    ids.append(&mut run.created);
    let s = Step {
        method,
        rate,
        offered: run.offered,
        latency: Summary::of(&mut run.latencies),
        errors: run.errors,
        backlog_before,
        cpu,
    };
    bench.progress(&format!(
        "{method} {rate:>5.0}/s: p50 {} p99 {} max {} ms, errors {}{}",
        crate::stats::ms(s.latency.p50),
        crate::stats::ms(s.latency.p99),
        crate::stats::ms(s.latency.max),
        s.errors,
        if s.holds() { "" } else { "  (does not hold)" }
    ));
    Ok(s)
}

/// POSTs at a moderate rate, waits for every payment to finish, and reads insert-to-complete
/// times from the rows.
async fn time_to_final(ctx: &Ctx<'_>, conn: &mut AsyncPgConnection) -> anyhow::Result<TimeToFinal> {
    let Ctx {
        bench,
        stack,
        client,
    } = *ctx;
    let rate = 100.0;
    let run = http::open_loop(
        client,
        &stack.api_url,
        Request::Post,
        rate,
        bench.timing.ttf,
    )
    .await;
    pg::drain(conn, Duration::from_secs(30)).await?;
    let mut times = pg::time_to_complete(conn, &run.created).await?;
    let t = TimeToFinal {
        rate,
        payments: run.created.len(),
        not_complete: run.created.len() - times.len(),
        latency: Summary::of(&mut times),
        post_errors: run.errors,
    };
    bench.progress(&format!(
        "time to complete at {rate:.0}/s: p50 {} p99 {} max {} ms over {} payments ({} not complete, POST errors {})",
        crate::stats::ms(t.latency.p50),
        crate::stats::ms(t.latency.p99),
        crate::stats::ms(t.latency.max),
        t.payments,
        t.not_complete,
        t.post_errors
    ));
    Ok(t)
}
