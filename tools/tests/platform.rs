//! The production platform, with the real binaries as processes: several api and worker
//! processes on one Postgres and one Redis; the pools through PgBouncer (session mode); TLS to
//! Postgres and Redis end to end; and a certificate that does not verify stopping a service
//! with the reason instead of retrying forever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use shared::testing::servers::{PgBouncer, PrivatePostgres, TestCa, TlsRedis, postgres_port};
use tools::chaos::service_env;
use tools::load::Accepted;
use tools::stack::{Stack, StackConfig, default_bin_dir};

const MERCHANT_KEY: &str = "mk_platform_0123456789abcdef";

async fn stack(
    name: &str,
    apis: usize,
    workers: usize,
    extra: &[(&str, &str)],
    pooler_port: Option<u16>,
) -> Stack {
    let mut env = service_env();
    env.push(("MERCHANT_API_KEY".into(), MERCHANT_KEY.into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Stack::start(StackConfig {
        apis,
        pooler_port,
        database_url: None,
        bin_dir: default_bin_dir(),
        log_dir: default_bin_dir().join(format!("platform-logs/{name}")),
        workers,
        sim_faults: json!({}),
        env,
        redis_url: None,
        webhooks: false,
    })
    .await
    .expect("stack")
}

/// A payment by the merchant's backend (not rate limited) through `api`.
async fn pay(api: &str, key: &str, pm: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{api}/transactions"))
        .bearer_auth(MERCHANT_KEY)
        .header("idempotency-key", key)
        .json(&json!({"amount": 1500, "currency": "usd", "email": "p@example.com", "payment_method": pm}))
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or_default())
}

async fn wait_final(api: &str, id: &str, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let t: Value = reqwest::get(format!("{api}/transactions/{id}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if t["state"] == "complete" || t["state"] == "failed" {
            return t;
        }
        assert!(
            start.elapsed() < within,
            "{id} not final after {within:?}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ledger check once it holds, or as it stands after 30 s: a declined payment is final
/// before the worker's follow-up job has canceled its intent, which the check counts as still
/// confirmable until then.
async fn settled_verdicts(stack: &Stack, accepted: &[Accepted]) -> tools::verify::Verdicts {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = tools::verify::check(&stack.database_url, &stack.sim_url, accepted)
            .await
            .unwrap();
        if v.ok() || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(database_url: &str, sql: &str) -> i64 {
    let mut conn = shared::db::connect(database_url).await.unwrap();
    diesel::sql_query(sql)
        .get_result::<Count>(&mut conn)
        .await
        .unwrap()
        .n
}

/// Reads SSE `state` events from `url` until one is final; returns the states seen.
async fn live_states(url: &str, within: Duration) -> Vec<String> {
    let mut res = reqwest::get(url).await.unwrap();
    assert_eq!(res.status(), 200);
    let deadline = tokio::time::Instant::now() + within;
    let (mut buf, mut states) = (String::new(), Vec::new());
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if !block.lines().any(|l| l.trim() == "event: state") {
                continue;
            }
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .collect();
            let v: Value = serde_json::from_str(data.trim()).unwrap();
            let state = v["state"].as_str().unwrap().to_owned();
            states.push(state.clone());
            if state == "complete" || state == "failed" {
                return states;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .unwrap_or_else(|_| panic!("no final state on {url} within {within:?}: {states:?}"));
        match chunk.unwrap() {
            Some(bytes) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            None => panic!("the stream ended before a final state: {states:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_apis_and_two_workers_make_one_deployment() {
    // Both apis start together on a database that does not exist yet: each creates it (one
    // wins) and migrates it (one does, under the advisory lock; the other finds it current).
    let stack = stack("instances", 2, 2, &[("RATE_LIMIT_PER_MINUTE", "4")], None).await;
    let (a, b) = (stack.api_urls[0].clone(), stack.api_urls[1].clone());
    let applied = count(
        &stack.database_url,
        "SELECT count(*) AS n FROM __diesel_schema_migrations",
    )
    .await;
    assert_eq!(applied as usize, shared::db::known_migrations());
    for log in ["api.err", "api-2.err"] {
        let text = std::fs::read_to_string(stack.log_dir().join(log)).unwrap_or_default();
        assert!(!text.contains("migration failed"), "{log}: {text}");
    }

    // The same payment sent to both instances at once, as a client retrying through a load
    // balancer does: one payment, one charge.
    let mut accepted = Vec::new();
    for i in 0..10 {
        let key = format!("both-{i}-{}", uuid::Uuid::new_v4().simple());
        let pm = if i % 3 == 2 {
            "pm_card_visa_chargeDeclined"
        } else {
            "pm_card_visa"
        };
        let ((sa, va), (sb, vb)) = tokio::join!(pay(&a, &key, pm), pay(&b, &key, pm));
        assert!(sa == 202 && sb == 202, "{sa} {va} / {sb} {vb}");
        assert_eq!(va["id"], vb["id"], "one key made two payments");
        accepted.push(Accepted {
            id: va["id"].as_str().unwrap().parse().unwrap(),
            payment_method: pm.into(),
        });
    }
    for p in &accepted {
        wait_final(&a, &p.id.to_string(), Duration::from_secs(30)).await;
    }
    let rows = count(
        &stack.database_url,
        "SELECT count(*) AS n FROM transactions",
    )
    .await;
    assert_eq!(rows, 10);
    let verdicts = settled_verdicts(&stack, &accepted).await;
    assert!(
        verdicts.ok() && verdicts.complete == 7 && verdicts.failed == 3,
        "{verdicts:?}"
    );

    // The per-client limit is one count for both: 4 a minute, whichever instance is asked.
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let api = if i % 2 == 0 { &a } else { &b };
        let res = client
            .post(format!("{api}/transactions"))
            .json(&json!({"price": "basic", "email": "l@example.com", "payment_method": "pm_card_visa"}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(
        statuses,
        [202, 202, 202, 202, 429, 429],
        "the limit is per process"
    );

    // The checkout's live status works whichever instance serves it: made on one, watched on
    // the other.
    let key = format!("live-{}", uuid::Uuid::new_v4().simple());
    let (status, created) = pay(&a, &key, "pm_card_visa").await;
    assert_eq!(status, 202);
    let id = created["id"].as_str().unwrap();
    let states = live_states(
        &format!("{b}/transactions/{id}/events"),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        states.last().map(String::as_str),
        Some("complete"),
        "{states:?}"
    );

    stack.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_runs_through_pgbouncer_in_session_mode() {
    let bouncer = PgBouncer::start(postgres_port(), "session", 40);
    let stack = stack("pgbouncer", 1, 2, &[], Some(bouncer.port)).await;
    let mut accepted = Vec::new();
    for i in 0..12 {
        let pm = if i % 4 == 3 {
            "pm_card_visa_chargeDeclined"
        } else {
            "pm_card_visa"
        };
        let (status, v) = pay(&stack.api_url, &format!("pgb-{i}-{}", stack.namespace), pm).await;
        assert_eq!(status, 202, "{v}");
        accepted.push(Accepted {
            id: v["id"].as_str().unwrap().parse().unwrap(),
            payment_method: pm.into(),
        });
    }
    for p in &accepted {
        wait_final(&stack.api_url, &p.id.to_string(), Duration::from_secs(30)).await;
    }
    let verdicts = settled_verdicts(&stack, &accepted).await;
    assert!(
        verdicts.ok() && verdicts.complete == 9 && verdicts.failed == 3,
        "{verdicts:?}"
    );
    // The pools really were PgBouncer's clients.
    let db = shared::db::split_database_url(&stack.database_url)
        .unwrap()
        .1
        .to_owned();
    let log = bouncer.log();
    assert!(
        log.contains(&format!("db={db}")),
        "PgBouncer saw no client for {db}: {log}"
    );
    stack.teardown().await.unwrap();
}

/// Runs `bin` with `env` and returns its exit success and stderr; panics if it is still
/// running after `within` (it should have stopped).
async fn run_until_exit(bin: &str, env: &[(&str, String)], within: Duration) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(default_bin_dir().join(bin));
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("WORKER_METRICS_ADDR", "off")
        .env("API_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap();
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{bin} was still running after {within:?}"))
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_that_does_not_verify_stops_each_service_with_the_reason() {
    let ca = TestCa::new();
    let pg = PrivatePostgres::start(&ca);
    let redis = TlsRedis::start(&ca);
    let root = ca.ca_cert.display().to_string();
    // Dialled by address, the certificate (for `localhost`) does not match.
    let wrong_name = pg.url("127.0.0.1", "sslmode=verify-full");
    for bin in ["api", "worker"] {
        let (ok, stderr) = run_until_exit(
            bin,
            &[
                ("DATABASE_URL", wrong_name.clone()),
                ("DATABASE_CA_FILE", root.clone()),
            ],
            Duration::from_secs(20),
        )
        .await;
        assert!(!ok, "{bin} exited successfully");
        assert!(
            stderr.contains("TLS certificate was refused")
                && stderr.contains("certificate not valid for name"),
            "{bin}: {stderr}"
        );
    }
    // Postgres verifies; Redis's certificate is from a CA the api was not given.
    let (ok, stderr) = run_until_exit(
        "api",
        &[
            ("DATABASE_URL", pg.url("localhost", "sslmode=verify-full")),
            ("DATABASE_CA_FILE", root.clone()),
            ("REDIS_URL", format!("rediss://localhost:{}", redis.port)),
        ],
        Duration::from_secs(20),
    )
    .await;
    assert!(!ok);
    assert!(
        stderr.contains("REDIS_URL: the Redis server's TLS certificate was refused"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn payments_complete_with_tls_to_postgres_and_redis() {
    let ca = TestCa::new();
    let pg = PrivatePostgres::start(&ca);
    let redis = TlsRedis::start(&ca);
    let root = ca.ca_cert.display().to_string();
    // Verified against the CA, by name, on both connections.
    let database_url = pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    );
    let redis_url = format!("rediss://localhost:{}", redis.port);
    let mut s = service_env();
    s.push(("MERCHANT_API_KEY".into(), MERCHANT_KEY.into()));
    s.push(("REDIS_CA_FILE".into(), root.clone()));
    let stack = Stack::start(StackConfig {
        apis: 1,
        pooler_port: None,
        database_url: Some(database_url),
        bin_dir: default_bin_dir(),
        log_dir: default_bin_dir().join("platform-logs/tls"),
        workers: 1,
        sim_faults: json!({}),
        env: s,
        redis_url: Some(redis_url),
        webhooks: false,
    })
    .await
    .expect("a stack over TLS");
    let (status, v) = pay(&stack.api_url, "tls-1", "pm_card_visa").await;
    assert_eq!(status, 202, "{v}");
    let t = wait_final(
        &stack.api_url,
        v["id"].as_str().unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(t["state"], "complete", "{t}");
    // Both connections were encrypted: Postgres says so of every backend of the database.
    let plain = count(
        &stack.database_url,
        "SELECT count(*) AS n FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE datname = current_database() AND NOT ssl",
    )
    .await;
    assert_eq!(plain, 0, "a connection to Postgres without TLS");
    drop(stack);
}
