//! The chaos scenario, smaller and faster, as part of `make test`: real api, worker and
//! stripe-sim processes with every fault on, workers SIGKILLed repeatedly, Redis emptied once.
//! (The Postgres restart is left to `make chaos`: it would disturb tests running beside it.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tools::chaos::{self, Scenario};
use tools::stack::default_bin_dir;

#[tokio::test(flavor = "multi_thread")]
async fn no_payment_is_lost_stuck_or_charged_twice_under_faults_kills_and_a_redis_wipe() {
    let bin_dir = default_bin_dir();
    let report = chaos::run(Scenario {
        payments: 300,
        workers: 3,
        concurrency: 16,
        kill_every: Duration::from_millis(700),
        max_kills: 8,
        empty_redis: true,
        restart_postgres: false,
        seed: 11,
        drain_timeout: Duration::from_secs(180),
        search_lag: Duration::from_secs(60),
        // Longer than the run's SWEEP_AFTER_MS (4 s), short enough for `make test`.
        outage: Duration::from_millis(4_500),
        disconnect_every: 20,
        late_confirm_every: 2,
        log_dir: bin_dir.join("chaos-logs-test"),
        bin_dir,
    })
    .await
    .expect("chaos run");
    println!("{}", report.table());
    let v = &report.verdicts;
    assert_eq!(v.payments, 300, "every payment must be accepted");
    assert_eq!(v.complete + v.failed, 300);
    assert_eq!(
        (v.lost, v.stuck, v.double_charged, v.mismatched),
        (0, 0, 0, 0)
    );
    assert_eq!(
        v.charged_but_failed, 0,
        "Stripe charged a payment we say failed"
    );
    assert_eq!(
        v.failed_confirmable, 0,
        "a failed payment's intent was left confirmable"
    );
    assert!(
        report.load.disconnected > 0 && v.abandoned > 0,
        "the run must exercise both"
    );
    assert_eq!(report.outages, 1);
    assert_eq!(
        report.workers_exited, 0,
        "workers must survive a Redis wipe by themselves"
    );
    assert!(
        report.worker_kills >= 2,
        "the run must actually kill workers"
    );
    assert!(
        report.redis_keys_deleted > 0,
        "the run must actually empty Redis"
    );
    let injected: u64 = report
        .faults
        .as_object()
        .unwrap()
        .values()
        .filter_map(|n| n.as_u64())
        .sum();
    assert!(injected > 0, "the run must actually inject faults");
}
