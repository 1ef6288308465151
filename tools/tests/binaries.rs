//! Every binary behaves on its command line: `--help` and `--version` print and exit 0 at once
//! with no database or Redis to be had, a mistyped flag exits 2 with a message naming it, every
//! subcommand is listed; `api healthcheck`, `worker healthcheck` and `stripe-sim healthcheck`
//! exit 0 against a running service and 1 when none answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::json;
use tools::chaos::service_env;
use tools::stack::{Stack, StackConfig, default_bin_dir, free_port};

/// Runs a debug binary with nothing reachable: DATABASE_URL and REDIS_URL name a closed port.
async fn run(bin: &str, args: &[&str], env: &[(&str, String)]) -> (Output, Duration) {
    let mut cmd = tokio::process::Command::new(default_bin_dir().join(bin));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{bin} {args:?} did not exit within 20 s"))
        .unwrap();
    (out, started.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Each binary and the subcommands its help must list.
const BINARIES: [(&str, &[&str]); 6] = [
    ("api", &["serve", "migrate", "healthcheck"]),
    ("worker", &["run", "healthcheck"]),
    ("stripe-sim", &["serve", "healthcheck"]),
    (
        "payctl",
        &[
            "stats",
            "dead",
            "list",
            "show",
            "retry",
            "purge-done",
            "stuck",
            "reconcile",
            "webhooks",
        ],
    ),
    ("bench", &[]),
    ("chaos", &[]),
];

#[tokio::test(flavor = "multi_thread")]
async fn help_and_version_exit_0_without_touching_anything_and_bad_flags_exit_2() {
    for (bin, subcommands) in BINARIES {
        let (help, took) = run(bin, &["--help"], &[]).await;
        let out = text(&help.stdout);
        assert_eq!(
            help.status.code(),
            Some(0),
            "{bin} --help: {out}{}",
            text(&help.stderr)
        );
        assert!(out.contains("Usage:"), "{bin} --help: {out}");
        // No migration, no wait for Postgres: the api used to retry for a minute first.
        assert!(took < Duration::from_secs(5), "{bin} --help took {took:?}");
        for sub in subcommands {
            assert!(
                out.lines().any(|l| l.trim_start().starts_with(sub)),
                "{bin} --help does not list `{sub}`: {out}"
            );
        }

        let (version, _) = run(bin, &["--version"], &[]).await;
        assert_eq!(version.status.code(), Some(0), "{bin} --version");
        assert_eq!(
            text(&version.stdout).trim(),
            format!("{bin} {}", env!("CARGO_PKG_VERSION"))
        );

        let (bad, _) = run(bin, &["--no-such-flag"], &[]).await;
        let err = text(&bad.stderr);
        assert_eq!(bad.status.code(), Some(2), "{bin} --no-such-flag: {err}");
        assert!(err.contains("--no-such-flag"), "{bin}: {err}");
        assert!(
            bad.stdout.is_empty(),
            "{bin} printed to stdout on a usage error"
        );
    }
    // A bad value is a usage error too.
    let (bad, _) = run("bench", &["--only", "everything"], &[]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    let (bad, _) = run("chaos", &["--payments", "many"], &[]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn healthchecks_say_whether_a_service_answers() {
    // Nothing listens: 1 for each, quickly.
    let closed = format!("127.0.0.1:{}", free_port().unwrap());
    for (bin, var) in [
        ("api", "API_ADDR"),
        ("worker", "WORKER_METRICS_ADDR"),
        ("stripe-sim", "STRIPE_SIM_ADDR"),
    ] {
        let (out, took) = run(bin, &["healthcheck"], &[(var, closed.clone())]).await;
        assert_eq!(out.status.code(), Some(1), "{bin}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("unhealthy"), "{bin}");
        assert!(
            took < Duration::from_secs(5),
            "{bin} healthcheck took {took:?}"
        );
    }

    let metrics_port = free_port().unwrap();
    let mut env = service_env();
    env.push((
        "WORKER_METRICS_ADDR".into(),
        format!("0.0.0.0:{metrics_port}"),
    ));
    let stack = Stack::start(StackConfig {
        apis: 1,
        pooler_port: None,
        database_url: None,
        bin_dir: default_bin_dir(),
        log_dir: default_bin_dir().join("binaries-logs"),
        workers: 1,
        sim_faults: json!({}),
        env,
        redis_url: None,
        webhooks: false,
    })
    .await
    .expect("stack");
    let api_addr = stack.api_url.trim_start_matches("http://").to_owned();
    let sim_addr = stack.sim_url.trim_start_matches("http://").to_owned();
    let (api, _) = run("api", &["healthcheck"], &[("API_ADDR", api_addr.clone())]).await;
    assert_eq!(api.status.code(), Some(0), "{}", text(&api.stderr));
    let (ready, _) = run(
        "api",
        &["healthcheck", "--ready"],
        &[("API_ADDR", api_addr)],
    )
    .await;
    assert_eq!(ready.status.code(), Some(0), "{}", text(&ready.stderr));
    // The worker's metrics server comes up with it: wait for its first answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (worker, _) = run(
            "worker",
            &["healthcheck"],
            &[("WORKER_METRICS_ADDR", format!("0.0.0.0:{metrics_port}"))],
        )
        .await;
        if worker.status.code() == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "{}", text(&worker.stderr));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (sim, _) = run(
        "stripe-sim",
        &["healthcheck"],
        &[("STRIPE_SIM_ADDR", sim_addr)],
    )
    .await;
    assert_eq!(sim.status.code(), Some(0), "{}", text(&sim.stderr));
    stack.teardown().await.unwrap();
}
