//! The first run needs nothing: with nothing answering at DATABASE_URL / REDIS_URL and no
//! Docker, `scripts/services.sh` (what `make run` and `make test` call) starts a private
//! Postgres (initdb on first use, as an unprivileged user when we are root) and Redis on those
//! addresses, a payment completes against them, they stop, and the data is kept for the next
//! run; with nothing installed either, it says what to install.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::json;
use tools::chaos::service_env;
use tools::stack::{Stack, StackConfig, default_bin_dir, free_port};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn services(action: &str, env: &[(&str, String)]) -> Output {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("scripts/services.sh")
        .arg(action)
        .current_dir(root())
        .env("SERVICES_NO_DOCKER", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("services.sh took over 2 minutes")
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn answers(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_nothing_running_private_servers_are_started_and_a_payment_completes() {
    let (pg_port, redis_port) = (free_port().unwrap(), free_port().unwrap());
    let dir = std::env::temp_dir().join(format!("first-run-{pg_port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let base = format!("postgres://postgres@127.0.0.1:{pg_port}/postgres");
    let redis = format!("redis://127.0.0.1:{redis_port}");
    let env = [
        ("DATABASE_URL", base.clone()),
        ("REDIS_URL", redis.clone()),
        ("SERVICES_DIR", dir.to_string_lossy().into_owned()),
    ];
    assert!(!answers(pg_port).await && !answers(redis_port).await);

    let up = services("up", &env).await;
    let said = text(&up.stdout);
    assert!(up.status.success(), "{said}{}", text(&up.stderr));
    assert!(
        said.contains("Postgres: initialised a private cluster"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "Postgres: nothing answered at 127.0.0.1:{pg_port}, so a private one was started"
        )),
        "{said}"
    );
    assert!(said.contains("Redis: nothing answered"), "{said}");

    // The whole pipeline on them: a payment reaches `complete`.
    let stack = Stack::start(StackConfig {
        apis: 1,
        pooler_port: None,
        database_url: Some(base.clone()),
        bin_dir: default_bin_dir(),
        log_dir: default_bin_dir().join("first-run-logs"),
        workers: 1,
        sim_faults: json!({}),
        env: service_env(),
        redis_url: Some(redis.clone()),
        webhooks: false,
    })
    .await
    .expect("the stack on the private servers");
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{}/transactions", stack.api_url))
        .json(&json!({"price": "basic", "email": "first@example.com",
                      "payment_method": "pm_card_visa"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("a transaction").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t: serde_json::Value = client
            .get(format!("{}/transactions/{id}", stack.api_url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if t["state"] == "complete" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Something to find on the next run.
    let mut conn = shared::db::connect(&base).await.unwrap();
    diesel_async::RunQueryDsl::execute(diesel::sql_query("CREATE DATABASE kept"), &mut conn)
        .await
        .unwrap();
    drop(conn);
    stack.teardown().await.unwrap();

    let down = services("down", &env).await;
    assert!(down.status.success(), "{}", text(&down.stderr));
    assert!(!answers(pg_port).await, "Postgres still answers");
    assert!(!answers(redis_port).await, "Redis still answers");

    // The next run starts the same cluster again: no initdb, and the data is there.
    let again = services("up", &env).await;
    let said = text(&again.stdout);
    assert!(again.status.success(), "{said}{}", text(&again.stderr));
    assert!(!said.contains("initialised"), "{said}");
    let kept = shared::db::connect(&format!("postgres://postgres@127.0.0.1:{pg_port}/kept")).await;
    assert!(kept.is_ok(), "the database made on the first run is gone");
    drop(kept);
    assert!(services("down", &env).await.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_nothing_installed_it_says_what_to_install() {
    let (pg_port, redis_port) = (free_port().unwrap(), free_port().unwrap());
    let dir = std::env::temp_dir().join(format!("first-run-none-{pg_port}"));
    let env = [
        (
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{pg_port}/payments"),
        ),
        ("REDIS_URL", format!("redis://127.0.0.1:{redis_port}")),
        ("SERVICES_DIR", dir.to_string_lossy().into_owned()),
        ("SERVICES_NO_PRIVATE", "1".to_owned()),
    ];
    let out = services("up", &env).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("apt-get install postgresql"), "{err}");
    assert!(err.contains("apt-get install redis-server"), "{err}");
    assert!(err.contains("start Docker"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
