//! The chaos scenario: thousands of payments through the real api with several workers,
//! stripe-sim injecting every fault it knows (stored 500s, drops, hangs, 429s, 409s, search
//! lagging, late and repeated webhooks), workers SIGKILLed and restarted over and over, Redis
//! emptied once, a Stripe outage longer than `SWEEP_AFTER_MS`, clients that disconnect after
//! sending, 3-D Secure abandoned, customers confirming failed payments' intents after the fact,
//! and (in the full run) Postgres restarted once. Then: wait for every payment to finish, and
//! check Postgres against the ledger.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use serde_json::json;

use crate::load::{self, LoadStats};
use crate::stack::{Stack, StackConfig};
use crate::verify::{self, Verdicts};

#[derive(Clone, Debug)]
pub struct Scenario {
    pub payments: usize,
    pub workers: usize,
    pub concurrency: usize,
    pub kill_every: Duration,
    pub max_kills: usize,
    pub empty_redis: bool,
    pub restart_postgres: bool,
    pub seed: u64,
    pub drain_timeout: Duration,
    /// How long new intents stay out of Stripe's search.
    pub search_lag: Duration,
    /// A Stripe outage (every call 500) this long, once, after half the payments (0: none).
    pub outage: Duration,
    /// Every n-th client sends and disconnects before it asks again (0: none).
    pub disconnect_every: usize,
    /// Confirm every n-th failed payment's intent as the customer, after the fact (0: none).
    pub late_confirm_every: usize,
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
}

#[derive(Debug)]
pub struct Report {
    pub scenario: Scenario,
    pub load: LoadStats,
    pub verdicts: Verdicts,
    pub faults: serde_json::Value,
    pub sim_requests: u64,
    pub worker_kills: usize,
    pub redis_keys_deleted: usize,
    pub postgres_restarts: usize,
    pub outages: usize,
    /// Late confirms tried, and how many charged the card.
    pub late_confirms: (usize, usize),
    /// Worker processes that died on their own (they must not).
    pub workers_exited: usize,
    pub submit_time: Duration,
    pub drain_time: Duration,
}

/// Faults stripe-sim injects, each with a probability per create, confirm and cancel; search
/// lags by `search_lag`, webhooks arrive late and sometimes twice, reads sometimes fail.
pub fn sim_faults(seed: u64, search_lag: Duration) -> serde_json::Value {
    json!({
        "seed": seed,
        "latency_ms": 10, "latency_jitter_ms": 40,
        "error_500_before": 0.03, "error_500_after": 0.02,
        "drop_after": 0.02, "hang": 0.01, "hang_ms": 3000,
        "rate_limit_429": 0.02, "retry_after_secs": 1,
        "conflict_409": 0.02,
        "read_error_500": 0.02,
        "search_lag_ms": search_lag.as_millis() as u64,
        "webhook_delay_ms": 300, "webhook_repeat": 0.1
    })
}

/// Stripe down: every call answers 500 (nothing executes), every read too.
fn outage_faults(seed: u64) -> serde_json::Value {
    json!({"seed": seed, "latency_ms": 10, "error_500_before": 1.0, "read_error_500": 1.0})
}

/// Worker settings tuned so faults resolve in seconds: short Stripe timeout and lease, fast
/// heartbeats (a killed worker's jobs return in ~1.5 s), a quick sweeper.
pub fn service_env() -> Vec<(String, String)> {
    [
        ("STRIPE_TIMEOUT_MS", "1000"),
        ("WORKER_LEASE_MS", "2500"),
        ("WORKER_HEARTBEAT_MS", "500"),
        ("WORKER_MISSED_HEARTBEATS", "3"),
        ("WORKER_POLL_INTERVAL_MS", "50"),
        ("WORKER_CONCURRENCY", "20"),
        // Pools are opened whole at start: 8 each keeps four workers, the api and the harness
        // well under Postgres' 100 connections.
        ("DATABASE_POOL_SIZE", "8"),
        ("RETRY_MAX_ATTEMPTS", "10"),
        ("RETRY_BASE_DELAY_MS", "100"),
        ("RETRY_MAX_DELAY_MS", "2000"),
        ("SWEEP_INTERVAL_MS", "1000"),
        ("SWEEP_AFTER_MS", "4000"),
        ("STRIPE_RATE_LIMIT", "0"),
        ("RATE_LIMIT_PER_MINUTE", "0"),
        ("STRIPE_BREAKER_THRESHOLD", "20"),
        ("STRIPE_BREAKER_COOLDOWN_MS", "1000"),
        ("WORKER_SHUTDOWN_TIMEOUT_MS", "3000"),
        ("REQUIRES_ACTION_TIMEOUT_MS", "5000"),
        ("RECONCILE_INTERVAL_MS", "2000"),
        ("RECONCILE_WINDOW_MS", "900000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub async fn run(s: Scenario) -> anyhow::Result<Report> {
    let mut stack = Stack::start(StackConfig {
        apis: 1,
        pooler_port: None,
        database_url: None,
        bin_dir: s.bin_dir.clone(),
        log_dir: s.log_dir.clone(),
        workers: s.workers,
        sim_faults: sim_faults(s.seed, s.search_lag),
        env: service_env(),
        redis_url: None,
        webhooks: true,
    })
    .await?;
    let result = drive(&s, &mut stack).await;
    let teardown = stack.teardown().await;
    let report = result?;
    teardown?;
    Ok(report)
}

async fn drive(s: &Scenario, stack: &mut Stack) -> anyhow::Result<Report> {
    let progress = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut load = tokio::spawn({
        let (url, progress, n, c) = (
            stack.api_url.clone(),
            progress.clone(),
            s.payments,
            s.concurrency,
        );
        let every = s.disconnect_every;
        async move { load::submit(&url, n, c, progress, Duration::from_secs(120), every).await }
    });
    let confirmed = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let confirmer = tokio::spawn(late_confirms(
        stack.database_url.clone(),
        stack.sim_url.clone(),
        s.late_confirm_every,
        confirmed.clone(),
    ));

    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
    let (mut kills, mut deleted, mut pg_restarts) = (0, 0, 0);
    let (mut emptied, mut restarted) = (!s.empty_redis, !s.restart_postgres);
    let (mut outage_at, mut outages) = (None::<Instant>, 0);
    let mut last_kill = Instant::now();
    let mut submitted: Option<(Vec<load::Accepted>, LoadStats, Duration)> = None;
    let mut drain_started = Instant::now();
    // Faults keep coming while payments are submitted *and* while they drain: a kill in the
    // middle of a charge is the interesting one. Kills stop after `max_kills` so the run ends.
    let drain_time = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if submitted.is_none() && load.is_finished() {
            let (accepted, stats) = (&mut load).await?;
            submitted = Some((accepted, stats, started.elapsed()));
            drain_started = Instant::now();
        }
        if submitted.is_some() {
            let left = verify::unfinished(&stack.database_url)
                .await
                .unwrap_or(i64::MAX);
            if left == 0 || drain_started.elapsed() > s.drain_timeout {
                break drain_started.elapsed();
            }
        }
        if kills < s.max_kills && last_kill.elapsed() >= s.kill_every && !stack.workers.is_empty() {
            let victim = rng.random_range(0..stack.workers.len());
            stack.kill_worker(victim).await?;
            stack.start_worker()?;
            kills += 1;
            last_kill = Instant::now();
        }
        let done = progress.load(Ordering::Relaxed);
        if !emptied && done >= s.payments / 3 {
            deleted = stack.empty_redis().await?;
            emptied = true;
        }
        if !restarted && done >= s.payments / 2 {
            restart_postgres().await?;
            restarted = true;
            pg_restarts += 1;
        }
        if !s.outage.is_zero() && outages == 0 && done >= s.payments * 3 / 5 {
            set_faults(&stack.sim_url, &outage_faults(s.seed)).await?;
            outage_at = Some(Instant::now());
            outages = 1;
        }
        if outage_at.is_some_and(|at| at.elapsed() >= s.outage) {
            set_faults(&stack.sim_url, &sim_faults(s.seed, s.search_lag)).await?;
            outage_at = None;
        }
    };
    if outage_at.is_some() {
        set_faults(&stack.sim_url, &sim_faults(s.seed, s.search_lag)).await?;
    }
    confirmer.abort();
    let late_confirms = (
        confirmed.0.load(Ordering::Relaxed),
        confirmed.1.load(Ordering::Relaxed),
    );
    let Some((accepted, load_stats, submit_time)) = submitted else {
        anyhow::bail!("load generator did not finish");
    };
    // Corrections (a late confirm, Stripe's word arriving after an outage) may still be on their
    // way through a webhook, a cancel or the reconciler: let them settle.
    let verdicts = verify::check_settled(
        &stack.database_url,
        &stack.sim_url,
        &accepted,
        Duration::from_secs(30),
    )
    .await?;
    let stats: serde_json::Value = reqwest::get(format!("{}/sim/stats", stack.sim_url))
        .await?
        .json()
        .await?;
    Ok(Report {
        scenario: s.clone(),
        load: load_stats,
        verdicts,
        faults: stats["faults"].clone(),
        sim_requests: stats["requests"].as_u64().unwrap_or(0),
        worker_kills: kills,
        redis_keys_deleted: deleted,
        postgres_restarts: pg_restarts,
        outages,
        late_confirms,
        workers_exited: stack.workers_exited(),
        submit_time,
        drain_time,
    })
}

async fn set_faults(sim_url: &str, faults: &serde_json::Value) -> anyhow::Result<()> {
    let res = reqwest::Client::new()
        .post(format!("{sim_url}/sim/faults"))
        .json(faults)
        .send()
        .await?;
    anyhow::ensure!(
        res.status().is_success(),
        "setting faults: {}",
        res.status()
    );
    Ok(())
}

/// The customer confirms every `every`-th failed payment's intent after the fact, from a
/// browser with its client secret (0: never): only a cancel the worker made first stops it.
/// Counts what it tried and what charged the card into `counts` until aborted.
async fn late_confirms(
    database_url: String,
    sim_url: String,
    every: usize,
    counts: Arc<(AtomicUsize, AtomicUsize)>,
) {
    if every == 0 {
        return;
    }
    let client = reqwest::Client::new();
    let mut seen = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let Ok(failed) = verify::failed_with_intent(&database_url).await else {
            continue;
        };
        for (id, pi) in failed {
            if !seen.insert(id) || seen.len() % every != 0 {
                continue;
            }
            counts.0.fetch_add(1, Ordering::Relaxed);
            let url = format!("{sim_url}/sim/payment_intents/{pi}/customer_confirm");
            if let Ok(r) = client.post(url).send().await
                && r.status().is_success()
            {
                counts.1.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Restarts the local Postgres cluster (`PG_RESTART_CMD` overrides the command).
async fn restart_postgres() -> anyhow::Result<()> {
    let cmd = std::env::var("PG_RESTART_CMD").unwrap_or_else(|_| {
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main restart".into()
    });
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .status()
        .await?;
    anyhow::ensure!(status.success(), "`{cmd}` failed");
    Ok(())
}

impl Report {
    /// The table `make chaos` prints.
    /// The promise held, and no worker gave up by itself.
    pub fn ok(&self) -> bool {
        self.verdicts.ok() && self.workers_exited == 0
    }

    pub fn table(&self) -> String {
        let v = &self.verdicts;
        let mut rows = vec![
            ("payments accepted".to_owned(), v.payments.to_string()),
            ("  complete".into(), v.complete.to_string()),
            ("  failed (declined)".into(), v.failed.to_string()),
            (
                "requests resent by the client".into(),
                self.load.resent.to_string(),
            ),
            (
                "payments never accepted".into(),
                self.load.gave_up.to_string(),
            ),
            ("workers".into(), self.scenario.workers.to_string()),
            (
                "worker kills (SIGKILL)".into(),
                self.worker_kills.to_string(),
            ),
            (
                "Redis emptied (keys deleted)".into(),
                self.redis_keys_deleted.to_string(),
            ),
            (
                "Postgres restarts".into(),
                self.postgres_restarts.to_string(),
            ),
            (
                format!(
                    "Stripe outages ({:.0} s)",
                    self.scenario.outage.as_secs_f64()
                ),
                self.outages.to_string(),
            ),
            (
                "search lag (s)".to_owned(),
                format!("{:.0}", self.scenario.search_lag.as_secs_f64()),
            ),
            (
                "clients that disconnected".into(),
                self.load.disconnected.to_string(),
            ),
            ("3-D Secure abandoned".into(), v.abandoned.to_string()),
            (
                "late confirms tried / charged".into(),
                format!("{} / {}", self.late_confirms.0, self.late_confirms.1),
            ),
            (
                "workers that died on their own".into(),
                self.workers_exited.to_string(),
            ),
            ("Stripe requests".into(), self.sim_requests.to_string()),
        ];
        if let Some(faults) = self.faults.as_object() {
            for (kind, n) in faults {
                rows.push((format!("fault: {kind}"), n.to_string()));
            }
        }
        rows.extend([
            ("lost".into(), v.lost.to_string()),
            ("stuck".into(), v.stuck.to_string()),
            ("double-charged".into(), v.double_charged.to_string()),
            ("mismatched".into(), v.mismatched.to_string()),
            (
                "charged but recorded failed".into(),
                v.charged_but_failed.to_string(),
            ),
            (
                "failed, intent still confirmable".into(),
                v.failed_confirmable.to_string(),
            ),
            (
                "discrepancies found / fixed".into(),
                format!("{} / {}", v.discrepancies, v.corrected),
            ),
            (
                "unexpected outcome (ledger agrees)".into(),
                v.unexpected_outcome.to_string(),
            ),
            (
                "time to submit".into(),
                format!("{:.1} s", self.submit_time.as_secs_f64()),
            ),
            (
                "time to drain".into(),
                format!("{:.1} s", self.drain_time.as_secs_f64()),
            ),
        ]);
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, val) in rows {
            out.push_str(&format!("| {k:<width$} | {val:>8} |\n"));
        }
        for e in &v.examples {
            out.push_str(&format!("  ! {e}\n"));
        }
        out
    }
}
