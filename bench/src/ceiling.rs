//! The ceiling: what Postgres and Redis alone allow on this machine, with nothing else running.
//!
//! - Postgres: the statements one payment costs, issued by the code's own query functions
//!   (`transactions::insert`, `claim`, `record(Complete)`), each on its own pool checkout as the
//!   api and the worker do, in a loop at high concurrency over `shared::db::pool`. Two shorter
//!   diagnostic variants show what two costs weigh: a test query on every checkout (which the
//!   pool no longer sends), and waiting for the WAL flush at every commit
//!   (`synchronous_commit=off`); four more show what the list API's indexes and live status's
//!   NOTIFY cost the writes.
//! - Redis: the api's push (`ChargeQueue::enqueue`) and, concurrently, a consumer doing what
//!   apalis' fetch and ack scripts do to the same keys (one script call per batch of 10 fetched,
//!   one per job acked). The consumer is an approximation: the real one also decodes and
//!   dispatches; it is cheaper, so the figure is an upper bound.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::bb8::Pool;
use shared::db::PgPool;
use shared::models::NewTransaction;
use shared::queue::{ChargeQueue, queue_config, redis_connection};
use shared::state_machine::change::{Transition, change, claim};
use shared::state_machine::outcome::Outcome;
use shared::transactions::{self as txq, Inserted};
use uuid::Uuid;

use crate::probe::{CpuSplit, Probe};
use crate::{Bench, CEILING_TASKS};
use tools::stack::Stack;

/// Operations per second a loop sustained, and the ones that failed (never hidden).
#[derive(Clone, Copy, Debug, Default)]
pub struct Rate {
    pub done: u64,
    pub errors: u64,
    pub secs: f64,
}

impl Rate {
    pub fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.done as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Runs `op` in `tasks` concurrent loops for `run_for`; counts successes and failures.
pub async fn timed_loop<F, Fut>(tasks: usize, run_for: Duration, op: F) -> Rate
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let deadline = started + run_for;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (op, done, errors) = (op.clone(), done.clone(), errors.clone());
        handles.push(tokio::spawn(async move {
            let mut i = t as u64;
            while Instant::now() < deadline {
                match op(i).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                i += tasks as u64;
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    Rate {
        done: done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        secs: started.elapsed().as_secs_f64(),
    }
}

/// A pool like `shared::db::pool` but with diesel-async's default check: a `SELECT 1` round
/// trip on every checkout, as the services did before. Its cost, measured for the report.
pub fn pool_with_test_query(database_url: &str, max_size: u32) -> PgPool {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(database_url);
    Pool::builder()
        .max_size(max_size)
        .connection_timeout(Duration::from_secs(3))
        .test_on_check_out(true)
        .build_unchecked(manager)
}

/// One payment's statements: what the api (insert) and the worker (claim, then record) issue.
async fn one_payment(pool: &PgPool, run: &str, i: u64) -> anyhow::Result<()> {
    let id = Uuid::new_v4();
    let new = NewTransaction {
        id,
        amount: 1000,
        currency: "usd".into(),
        email: format!("c{i}@example.com"),
        price: Some("basic".into()),
        payment_method: "pm_card_visa".into(),
        stripe_idempotency_key: NewTransaction::stripe_key_for(id),
        request_key: Some(format!("public:ceiling-{run}-{i}")),
        // The api stores a SHA-256 hex digest: same width.
        request_fingerprint: Some(format!("{:064x}", u128::from(id.as_u64_pair().0))),
        reference: None,
        metadata: serde_json::json!({}),
        session_id: None,
    };
    {
        let mut conn = pool.get().await?;
        match txq::insert(&mut conn, &new).await? {
            Inserted::Created(_) => {}
            Inserted::Existing(_) => anyhow::bail!("key reused"),
        }
    }
    let owner = "bench-ceiling";
    {
        let mut conn = pool.get().await?;
        claim(&mut conn, id, owner, Duration::from_secs(15))
            .await?
            .map_err(|why| anyhow::anyhow!("not claimed: {why:?}"))?;
    }
    let mut conn = pool.get().await?;
    let outcome = Outcome::Complete {
        stripe_id: format!("pi_{}", id.simple()),
    };
    let record = Transition::Record {
        owner,
        outcome: &outcome,
    };
    change(&mut conn, id, record)
        .await?
        .and_then(|c| c.applied_row())
        .ok_or_else(|| anyhow::anyhow!("not recorded"))?;
    Ok(())
}

/// Payments per second the three statements allow, `tasks` at a time over `pool`.
pub async fn postgres(pool: PgPool, tasks: usize, run_for: Duration) -> Rate {
    let run = Uuid::new_v4().simple().to_string();
    // Warm the pool so connection set-up is not timed.
    let _ = timed_loop(tasks, Duration::from_millis(300), {
        let (pool, run) = (pool.clone(), format!("{run}w"));
        move |i| {
            let (pool, run) = (pool.clone(), run.clone());
            async move { one_payment(&pool, &run, i).await }
        }
    })
    .await;
    timed_loop(tasks, run_for, move |i| {
        let (pool, run) = (pool.clone(), run.clone());
        async move { one_payment(&pool, &run, i).await }
    })
    .await
}

/// apalis' fetch (fetch_next.lua, minus the worker registration check): promote the due
/// scheduled jobs (every push lands in the scheduled set, due now), then take up to ARGV[1].
const FETCH: &str = r"
local due = redis.call('zrangebyscore', KEYS[5], 0, ARGV[2])
if #due > 0 then
  redis.call('rpush', KEYS[1], unpack(due))
  redis.call('zrem', KEYS[5], unpack(due))
  redis.call('del', KEYS[6])
  redis.call('lpush', KEYS[6], 1)
end
local ids = redis.call('lrange', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then return {} end
redis.call('sadd', KEYS[2], unpack(ids))
redis.call('ltrim', KEYS[1], #ids, -1)
redis.call('hmget', KEYS[3], unpack(ids))
for _, id in ipairs(ids) do redis.call('hgetall', KEYS[4] .. ':' .. id) end
return ids";

/// apalis' ack of one finished job (handle_results.lua, status Done).
const ACK: &str = r"
redis.call('srem', KEYS[1], ARGV[1])
redis.call('sadd', KEYS[2], ARGV[1])
redis.call('hset', KEYS[3] .. ':' .. ARGV[1], 'result', 'null', 'status', 'Done', 'attempts', 1, 'done_at', ARGV[2])
return 1";

/// Jobs per second through the queue: pushes by the real producer, with a consumer taking and
/// acknowledging them at the same time. Returns (pushed, consumed).
pub async fn redis(
    redis_url: &str,
    namespace: &str,
    tasks: usize,
    run_for: Duration,
) -> anyhow::Result<(Rate, Rate)> {
    let queue = ChargeQueue::new(redis_connection(redis_url, None)?, namespace);
    let config = queue_config(namespace);
    let mut consumer = redis_connection(redis_url, None)?;
    let ack_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(ACK)
        .query_async(&mut consumer)
        .await?;
    let keys = Arc::new(Keys {
        active: config.active_jobs_list(),
        inflight: format!("{}:bench", config.inflight_jobs_set()),
        data: config.job_data_hash(),
        meta: config.job_meta_hash(),
        scheduled: config.scheduled_jobs_set(),
        signal: config.signal_list(),
        done: config.done_jobs_set(),
        ack_sha,
    });
    let push = tokio::spawn(timed_loop(tasks, run_for, move |_| {
        let queue = queue.clone();
        async move { Ok(queue.enqueue(Uuid::new_v4(), None).await?) }
    }));
    let jobs = Arc::new(AtomicU64::new(0));
    // Fewer consumer loops than producers: each moves up to ten jobs per fetch, as a worker
    // with a small batch does.
    let consumed = timed_loop(tasks.div_ceil(4), run_for, {
        let jobs = jobs.clone();
        move |_| {
            let (mut conn, keys, jobs) = (consumer.clone(), keys.clone(), jobs.clone());
            async move {
                let n = consume_batch(&mut conn, &keys).await?;
                jobs.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
        }
    })
    .await;
    let pushed = push.await?;
    let consumed = Rate {
        done: jobs.load(Ordering::Relaxed),
        ..consumed
    };
    Ok((pushed, consumed))
}

struct Keys {
    active: String,
    inflight: String,
    data: String,
    meta: String,
    scheduled: String,
    signal: String,
    done: String,
    ack_sha: String,
}

/// Fetches up to ten jobs and acks each (one pipelined round trip for the acks); returns how
/// many it moved. An empty queue waits a millisecond, as a polling worker would wait longer.
async fn consume_batch(conn: &mut redis::aio::ConnectionManager, k: &Keys) -> anyhow::Result<u64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let ids: Vec<String> = redis::Script::new(FETCH)
        .key(&k.active)
        .key(&k.inflight)
        .key(&k.data)
        .key(&k.meta)
        .key(&k.scheduled)
        .key(&k.signal)
        .arg(10)
        .arg(now)
        .invoke_async(conn)
        .await?;
    if ids.is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("EVALSHA")
            .arg(&k.ack_sha)
            .arg(3)
            .arg(&k.inflight)
            .arg(&k.done)
            .arg(&k.meta)
            .arg(id)
            .arg(now)
            .ignore();
    }
    pipe.query_async::<()>(conn).await?;
    Ok(ids.len() as u64)
}

/// One measured rate and where the CPU went meanwhile.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub name: String,
    pub rate: Rate,
    pub cpu: CpuSplit,
}

#[derive(Clone, Debug, Default)]
pub struct Ceiling {
    /// The statements as the services issue them: the ceiling the targets refer to.
    pub postgres: Measured,
    /// Diagnostic variants of the same loop.
    pub variants: Vec<Measured>,
    pub redis_push: Rate,
    pub redis_consume: Measured,
    /// Where the Postgres backends' time went during the main loop (`None`: no usable perf).
    pub pg_profile: Option<crate::profile::PgProfile>,
}

/// Runs against a deployment with no worker (the api idles): its database and namespace are
/// fresh and are removed afterwards.
pub async fn run(bench: &Bench) -> anyhow::Result<Ceiling> {
    let stack = bench.start_stack("ceiling", 0, 0, 10).await?;
    let result = measure(bench, &stack).await;
    bench.teardown(stack).await?;
    result
}

async fn probed<F: Future<Output = Rate>>(
    stack: &Stack,
    conn: &mut AsyncPgConnection,
    name: &str,
    f: F,
) -> Measured {
    let probe = Probe::start(stack, conn).await;
    let rate = f.await;
    Measured {
        name: name.to_owned(),
        rate,
        cpu: probe.finish(stack, conn).await,
    }
}

async fn measure(bench: &Bench, stack: &Stack) -> anyhow::Result<Ceiling> {
    let t = &bench.timing;
    let url = &stack.database_url;
    let mut conn = crate::pg::connect(url).await?;
    let n = CEILING_TASKS;
    // Each pool outlives its probe: its backends must still exist when their CPU is read.
    let pool = shared::db::pool(url, n as u32)?;
    // Profile the middle of the main loop (after its pool warm-up), when perf allows.
    let perf_for = t
        .ceiling
        .saturating_sub(Duration::from_secs(1))
        .clamp(Duration::from_millis(500), Duration::from_secs(5));
    let perf = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        crate::profile::record(perf_for).await
    });
    let as_issued = probed(
        stack,
        &mut conn,
        "as issued",
        postgres(pool.clone(), n, t.ceiling),
    )
    .await;
    drop(pool);
    let pg_profile = match perf.await.ok().flatten() {
        Some(path) => crate::profile::summarize(path).await,
        None => None,
    };
    bench.progress(&format!(
        "ceiling: Postgres {:.0} payments/s ({} errors) {}",
        as_issued.rate.per_sec(),
        as_issued.rate.errors,
        as_issued.cpu.describe()
    ));
    let test_query = pool_with_test_query(url, n as u32);
    // tokio-postgres passes `options` to the server like libpq: a per-session setting.
    let async_url = format!("{url}?options=-c%20synchronous_commit%3Doff");
    let variants = [
        ("with a `SELECT 1` test query on every checkout", test_query),
        (
            "with synchronous_commit=off",
            shared::db::pool(&async_url, n as u32)?,
        ),
    ];
    let mut measured = Vec::new();
    for (name, pool) in variants {
        let run = postgres(pool.clone(), n, t.ceiling_variant);
        let m = probed(stack, &mut conn, name, run).await;
        drop(pool);
        bench.progress(&format!(
            "ceiling: Postgres {name}: {:.0} payments/s ({} errors) {}",
            m.rate.per_sec(),
            m.rate.errors,
            m.cpu.describe()
        ));
        measured.push(m);
    }
    // What the list API's two indexes, and live status's NOTIFY, cost every payment's writes:
    // the same loop without each, then with it again (second, on the larger table, so the cost
    // is not understated).
    for (name, sql) in [
        (
            "without the list API's indexes (`(created_at, id)`, `(email, created_at, id)`)",
            "DROP INDEX transactions_created_id_idx, transactions_email_created_idx",
        ),
        (
            "with them again (as deployed; compare with the row above)",
            "CREATE INDEX transactions_created_id_idx ON transactions (created_at, id); \
             CREATE INDEX transactions_email_created_idx ON transactions (email, created_at, id)",
        ),
        // And what live status costs them: the NOTIFY each event sends at commit.
        (
            "without the live-status NOTIFY (trigger disabled)",
            "ALTER TABLE payment_events DISABLE TRIGGER payment_events_notify",
        ),
        (
            "with the NOTIFY again (as deployed; compare with the row above)",
            "ALTER TABLE payment_events ENABLE TRIGGER payment_events_notify",
        ),
    ] {
        diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, sql).await?;
        let pool = shared::db::pool(url, n as u32)?;
        let m = probed(
            stack,
            &mut conn,
            name,
            postgres(pool.clone(), n, t.ceiling_variant),
        )
        .await;
        drop(pool);
        bench.progress(&format!(
            "ceiling: Postgres {name}: {:.0} payments/s ({} errors)",
            m.rate.per_sec(),
            m.rate.errors
        ));
        measured.push(m);
    }
    let probe = Probe::start(stack, &mut conn).await;
    let (redis_push, consumed) = redis(&stack.redis_url, &stack.namespace, n, t.ceiling).await?;
    let redis_consume = Measured {
        name: "fetch + ack".into(),
        rate: consumed,
        cpu: probe.finish(stack, &mut conn).await,
    };
    bench.progress(&format!(
        "ceiling: Redis {:.0} jobs/s pushed, {:.0} jobs/s fetched+acked ({} + {} errors) {}",
        redis_push.per_sec(),
        consumed.per_sec(),
        redis_push.errors,
        consumed.errors,
        redis_consume.cpu.describe()
    ));
    Ok(Ceiling {
        postgres: as_issued,
        variants: measured,
        redis_push,
        redis_consume,
        pg_profile,
    })
}
