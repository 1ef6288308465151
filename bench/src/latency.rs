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
    /// POST at 1,000/s, [`REPEATS`] runs in a row: the target is their median p99.
    pub repeats: Vec<Step>,
    /// The same rate from `hey`, an ordinary load generator: `-c 10 -q 100` and `-c 50 -q 20`.
    pub hey: Vec<HeyRun>,
}

/// The median p99 of `runs` (the middle one of an odd count).
pub fn median_p99(runs: &[Step]) -> Option<Duration> {
    let mut p99s: Vec<Duration> = runs.iter().map(|s| s.latency.p99).collect();
    p99s.sort_unstable();
    p99s.get(p99s.len() / 2).copied()
}

/// Consecutive runs at 1,000/s whose median p99 the target takes.
pub const REPEATS: usize = 5;

/// One `hey` run against `POST /transactions`.
#[derive(Clone, Debug)]
pub struct HeyRun {
    pub connections: u32,
    pub per_connection: u32,
    /// What hey reported, or why it could not run.
    pub outcome: Result<HeyReport, String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeyReport {
    pub requests_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub slowest: Duration,
    /// Responses by status code.
    pub statuses: Vec<(u16, u64)>,
}

impl HeyReport {
    pub fn non_202(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(c, _)| *c != 202)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Reads hey's summary: `Requests/sec:`, `Slowest:`, the `50%` and `99%` lines of the latency
/// distribution and the status code distribution (`[202]\t5000 responses`).
pub fn parse_hey(out: &str) -> Option<HeyReport> {
    let secs = |l: &str| -> Option<Duration> {
        let n: f64 = l.split_whitespace().find_map(|w| w.parse().ok())?;
        Some(Duration::from_secs_f64(n))
    };
    let mut r = HeyReport::default();
    let mut in_status = false;
    for line in out.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Requests/sec:") {
            r.requests_per_sec = rest.trim().parse().ok()?;
        } else if let Some(rest) = t.strip_prefix("Slowest:") {
            r.slowest = secs(rest)?;
        } else if let Some(rest) = t.strip_prefix("50% in") {
            r.p50 = secs(rest)?;
        } else if let Some(rest) = t.strip_prefix("99% in") {
            r.p99 = secs(rest)?;
        } else if t.starts_with("Status code distribution") {
            in_status = true;
        } else if in_status && t.starts_with('[') {
            let code = t.get(1..4)?.parse().ok()?;
            let n = t[5..].split_whitespace().next()?.parse().ok()?;
            r.statuses.push((code, n));
        } else if in_status && !t.is_empty() {
            in_status = false;
        }
    }
    (r.requests_per_sec > 0.0 && !r.statuses.is_empty()).then_some(r)
}

/// `hey -z <secs> -c <connections> -q <per connection>` POSTing a payment (no Idempotency-Key:
/// each request is a new payment). Debian's package; `scripts/bench.sh` installs it.
async fn hey(api_url: &str, connections: u32, per_connection: u32, run_for: Duration) -> HeyRun {
    let body = r#"{"price":"basic","email":"bench@example.com","payment_method":"pm_card_visa"}"#;
    let out = tokio::process::Command::new("hey")
        .arg("-z")
        .arg(format!("{}s", run_for.as_secs().max(1)))
        .arg("-c")
        .arg(connections.to_string())
        .arg("-q")
        .arg(per_connection.to_string())
        .args(["-m", "POST", "-T", "application/json", "-d", body])
        .arg(format!("{api_url}/transactions"))
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    let outcome = match out {
        Err(e) => Err(format!("hey did not run ({e}); `apt-get install hey`")),
        Ok(o) if !o.status.success() => Err(format!(
            "hey failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(o) => parse_hey(&String::from_utf8_lossy(&o.stdout))
            .ok_or_else(|| "hey's output had no summary".to_owned()),
    };
    HeyRun {
        connections,
        per_connection,
        outcome,
    }
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
    let mut repeats = Vec::new();
    for _ in 0..REPEATS {
        repeats.push(step(&ctx, &mut conn, Request::Post, 1000.0, &mut ids).await?);
    }
    let mut hey_runs = Vec::new();
    for (c, q) in [(10, 100), (50, 20)] {
        pg::drain(&mut conn, bench.timing.drain).await?;
        let run = hey(&stack.api_url, c, q, bench.timing.step).await;
        bench.progress(&match &run.outcome {
            Ok(r) => format!(
                "hey -c {c} -q {q}: {:.0}/s, p50 {} p99 {} slowest {} ms, non-202 {}",
                r.requests_per_sec,
                crate::stats::ms(r.p50),
                crate::stats::ms(r.p99),
                crate::stats::ms(r.slowest),
                r.non_202()
            ),
            Err(e) => format!("hey -c {c} -q {q}: {e}"),
        });
        hey_runs.push(run);
    }
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
        repeats,
        hey: hey_runs,
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_heys_summary() {
        let out = "
Summary:
  Total:	5.0104 secs
  Slowest:	0.0412 secs
  Fastest:	0.0011 secs
  Average:	0.0023 secs
  Requests/sec:	998.1234

Latency distribution:
  10% in 0.0015 secs
  50% in 0.0020 secs
  99% in 0.0091 secs

Status code distribution:
  [202]	4990 responses
  [503]	10 responses
";
        let r = parse_hey(out).unwrap();
        assert_eq!(r.requests_per_sec, 998.1234);
        assert_eq!(r.p50, Duration::from_secs_f64(0.0020));
        assert_eq!(r.p99, Duration::from_secs_f64(0.0091));
        assert_eq!(r.slowest, Duration::from_secs_f64(0.0412));
        assert_eq!(r.statuses, vec![(202, 4990), (503, 10)]);
        assert_eq!(r.non_202(), 10);
        assert_eq!(parse_hey("Error: connection refused"), None);
    }
}
