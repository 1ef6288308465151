//! `results.md` and the data of `results.svg`: the machine, the settings, every figure with its
//! error counts, the targets held or missed, and what the CPU split says bounds each miss.

use std::fmt::Write;

use crate::latency::{self, Step};
use crate::machine::Machine;
use crate::markdown::{header, row};
use crate::stats::ms;
use crate::{Bench, CEILING_TASKS, Results};

pub fn markdown(bench: &Bench, m: &Machine, r: &Results, elapsed_secs: f64) -> String {
    let mut out = String::new();
    let t = &bench.timing;
    let _ = writeln!(out, "# Benchmark results\n");
    let _ = writeln!(
        out,
        "Written by `make bench` (`target/release/bench{}`) on {}, in {:.0} s. **{}** The machine \
         may have been shared while this ran (1-minute load average before the run: {}), so \
         treat the figures as a lower bound for a quiet machine.\n",
        if bench.opts.quick { " --quick" } else { "" },
        m.date,
        elapsed_secs,
        if bench.opts.quick {
            "Quick mode: a few seconds per step, to check the harness, not to quote."
        } else {
            "Full run."
        },
        m.load_before
    );
    header(&mut out, &["machine", ""]);
    row(&mut out, &["cores (nproc)".into(), m.cores.to_string()]);
    row(&mut out, &["CPU".into(), m.cpu_model.clone()]);
    row(&mut out, &["memory".into(), format!("{:.1} GB", m.mem_gb)]);
    row(&mut out, &["Postgres".into(), m.postgres.clone()]);
    row(&mut out, &["Redis".into(), m.redis.clone()]);
    let _ = writeln!(out);
    header(&mut out, &["settings", ""]);
    for (k, v) in [
        ("binaries", "release, one process each (api, worker × N, stripe-sim), all on this machine with Postgres and Redis".to_owned()),
        ("service environment", "`STRIPE_RATE_LIMIT=0`, `RATE_LIMIT_PER_MINUTE=0`, `RUST_LOG=warn`, `LOG_FORMAT=json`, `WORKER_POLL_INTERVAL_MS=20`, `SWEEP_AFTER_MS=120000`".to_owned()),
        ("payments", "`pm_card_visa` (all succeed), price `basic`, a fresh `Idempotency-Key` each".to_owned()),
        ("ceiling", format!("{CEILING_TASKS} tasks over a pool of {CEILING_TASKS}, {:.0} s each", t.ceiling.as_secs_f64())),
        ("end to end", format!("backlog held at max(1000, 2 × slots) unfinished payments by 32 POSTs in flight; warm-up ≥ {:.0} s, window {:.0} s", t.warmup.as_secs_f64(), t.window.as_secs_f64())),
        ("latency", format!("open loop, {:.0} s per rate, 1 worker × {} running, sim latency 0; a rate holds while p99 ≤ {} ms and errors ≤ 0.1 %", t.step.as_secs_f64(), latency::WORKER_CONCURRENCY, latency::P99_LIMIT.as_millis())),
    ] {
        row(&mut out, &[k.to_owned(), v]);
    }
    let _ = writeln!(out);
    ceiling_section(&mut out, r);
    e2e_section(&mut out, r);
    latency_section(&mut out, r);
    burst_section(&mut out, r);
    limit_section(&mut out, r);
    cost_section(&mut out, r);
    streams_section(&mut out, r);
    crate::targets::section(&mut out, m, r);
    // Hand-written: what earlier runs found and what was changed because of it.
    let _ = writeln!(out, "{}", include_str!("fixes.md"));
    method_section(&mut out);
    out
}

fn ceiling_section(out: &mut String, r: &Results) {
    let _ = writeln!(out, "## 1. The ceiling: Postgres and Redis alone\n");
    let Some(c) = &r.ceiling else {
        let _ = writeln!(out, "Not run.\n");
        return;
    };
    header(out, &["what", "rate", "errors", "CPU (cores busy)"]);
    row(
        out,
        &[
            "Postgres: insert + claim + record(Complete), one pool checkout each (`shared::db::pool`)".into(),
            format!("**{:.0} payments/s**", c.postgres.rate.per_sec()),
            c.postgres.rate.errors.to_string(),
            c.postgres.cpu.describe(),
        ],
    );
    for v in &c.variants {
        row(
            out,
            &[
                format!("the same, {} (diagnostic)", v.name),
                format!("{:.0} payments/s", v.rate.per_sec()),
                v.rate.errors.to_string(),
                v.cpu.describe(),
            ],
        );
    }
    row(
        out,
        &[
            "Redis: `ChargeQueue::enqueue` (pushed, while the consumer runs)".into(),
            format!("{:.0} jobs/s", c.redis_push.per_sec()),
            c.redis_push.errors.to_string(),
            "(below)".into(),
        ],
    );
    row(
        out,
        &[
            "Redis: fetch + ack as apalis' scripts do (consumed)".into(),
            format!("**{:.0} jobs/s**", c.redis_consume.rate.per_sec()),
            c.redis_consume.rate.errors.to_string(),
            c.redis_consume.cpu.describe(),
        ],
    );
    match &c.pg_profile {
        Some(p) => {
            let parts: Vec<String> = p
                .parts
                .iter()
                .map(|(what, share)| format!("{what} {share:.1} %"))
                .collect();
            let _ = writeln!(
                out,
                "\nWhere the Postgres backends' CPU went during the first loop (`perf record -e \
                 cpu-clock -F 499 -a -g`; share of the {} Postgres backend samples with the function on the stack): {}.",
                p.samples,
                parts.join(", ")
            );
        }
        None => {
            let _ = writeln!(
                out,
                "\nNo profile: `perf record -e cpu-clock -a` was not available (install \
                 linux-perf; it needs root or `kernel.perf_event_paranoid` ≤ 0)."
            );
        }
    }
    let _ = writeln!(
        out,
        "\nThe Redis consumer is an approximation of apalis' fetch and ack (same keys and commands, \
         without decoding or dispatch), so jobs/s is an upper bound.\n"
    );
}

fn e2e_section(out: &mut String, r: &Results) {
    let _ = writeln!(out, "## 2. End to end: POST to `complete`\n");
    if r.e2e.is_empty() {
        let _ = writeln!(out, "Not run.\n");
        return;
    }
    let pg = r.ceiling_pg();
    header(
        out,
        &[
            "sim latency",
            "workers × concurrency",
            "payments/s",
            "÷ Postgres ceiling",
            "÷ concurrency/latency",
            "backlog min / avg",
            "POST errors",
            "warnings logged",
            "CPU (cores busy)",
        ],
    );
    for (cfg, t) in &r.e2e {
        row(
            out,
            &[
                format!("{} ms", cfg.sim_latency_ms),
                format!("{} × {}", cfg.workers, cfg.concurrency),
                format!("**{:.0}**", t.per_sec()),
                if pg > 0.0 {
                    format!("{:.0} %", 100.0 * t.per_sec() / pg)
                } else {
                    "-".into()
                },
                cfg.latency_bound().map_or("-".into(), |b| {
                    format!("{:.0} % of {b:.0}", 100.0 * t.per_sec() / b)
                }),
                format!(
                    "{} / {:.0}{}",
                    t.backlog_min,
                    t.backlog_avg,
                    if t.backlog_avg < cfg.slots() as f64 {
                        " †"
                    } else {
                        ""
                    }
                ),
                t.post_errors.to_string(),
                match &t.logged.example {
                    Some(e) => format!("{} ({})", t.logged.count, e.replace('|', "/")),
                    None => t.logged.count.to_string(),
                } + &if t.workers_exited > 0 {
                    format!(
                        " **⚠ {} worker process(es) exited during the run**",
                        t.workers_exited
                    )
                } else {
                    String::new()
                },
                t.cpu.describe(),
            ],
        );
    }
    let _ = writeln!(
        out,
        "\nCompletions are counted in Postgres (`updated_at` of `complete` rows inside the window). \
         \"Backlog\" is unfinished payments sampled every 100 ms: above zero throughout means the \
         workers never waited for work; † marks runs where it averaged fewer than the workers' slots: \
         the api accepted payments more slowly than the workers finished them, so the figure is \
         the api's accept rate under that load. Failed payments after the runs: {}.\n",
        r.e2e.iter().map(|(_, t)| t.failed).sum::<i64>()
    );
}

fn step_rows(out: &mut String, steps: &[Step]) {
    for s in steps {
        row(
            out,
            &[
                s.method.into(),
                format!("{:.0}", s.rate),
                s.offered.to_string(),
                ms(s.latency.p50),
                ms(s.latency.p99),
                ms(s.latency.max),
                s.errors.to_string(),
                if s.holds() {
                    "yes".into()
                } else {
                    "**no**".into()
                },
                s.backlog_before.to_string(),
                s.cpu.describe(),
            ],
        );
    }
}

fn latency_section(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "## 3. API latency at a fixed offered rate (open loop)\n"
    );
    let Some(l) = &r.latency else {
        let _ = writeln!(out, "Not run.\n");
        return;
    };
    header(
        out,
        &[
            "request",
            "offered/s",
            "requests",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "holds",
            "backlog before",
            "CPU (cores busy)",
        ],
    );
    step_rows(out, &l.post);
    step_rows(out, &l.get);
    step_rows(out, l.post_alone.as_slice());
    let best = |steps: &[Step]| {
        latency::Results::highest(steps).map_or("none".to_owned(), |s| format!("{:.0}/s", s.rate))
    };
    let _ = writeln!(
        out,
        "\nHighest rate that holds: POST {}, GET {} (the next step up is the first that did not, \
         or the ramp ended). Latency runs from each request's scheduled send time to its checked \
         response.\n",
        best(&l.post),
        best(&l.get)
    );
    repeats_section(out, l);
    let f = &l.time_to_final;
    let _ = writeln!(out, "## 4. Time to final state\n");
    header(
        out,
        &[
            "offered",
            "payments",
            "p50 ms",
            "p99 ms",
            "max ms",
            "not complete",
            "POST errors",
        ],
    );
    row(
        out,
        &[
            format!("{:.0} POST/s", f.rate),
            f.payments.to_string(),
            ms(f.latency.p50),
            ms(f.latency.p99),
            ms(f.latency.max),
            f.not_complete.to_string(),
            f.post_errors.to_string(),
        ],
    );
    let _ = writeln!(
        out,
        "\nFrom the row's `created_at` (insert) to its `updated_at` when it became `complete`, \
         1 worker × {}, sim latency 0.\n",
        latency::WORKER_CONCURRENCY
    );
}

/// The five runs at 1,000/s in a row, and hey's at the same rate.
fn repeats_section(out: &mut String, l: &latency::Results) {
    if l.repeats.is_empty() && l.hey.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### POST at 1,000/s: {} runs in a row, and `hey`\n",
        l.repeats.len()
    );
    header(
        out,
        &[
            "generator",
            "run",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "CPU (cores busy)",
        ],
    );
    for (i, s) in l.repeats.iter().enumerate() {
        row(
            out,
            &[
                "bench, open loop".into(),
                (i + 1).to_string(),
                ms(s.latency.p50),
                ms(s.latency.p99),
                ms(s.latency.max),
                s.errors.to_string(),
                s.cpu.describe(),
            ],
        );
    }
    for h in &l.hey {
        let what = format!("`hey -c {} -q {}`", h.connections, h.per_connection);
        match &h.outcome {
            Ok(r) => row(
                out,
                &[
                    what,
                    format!("{:.0}/s", r.requests_per_sec),
                    ms(r.p50),
                    ms(r.p99),
                    ms(r.slowest),
                    format!("{} not 202", r.non_202()),
                    "-".into(),
                ],
            ),
            Err(e) => row(
                out,
                &[
                    what,
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    e.clone(),
                    "-".into(),
                ],
            ),
        }
    }
    let _ = writeln!(
        out,
        "\nMedian p99 of the bench's runs: {} ms. hey paces each of its connections (`-q` \
         requests/s each) and times from its own send, so `-c 50 -q 20` sends bursts of 50 at \
         once; it sends no `Idempotency-Key`, so each of its requests is a new payment too.\n",
        latency::median_p99(&l.repeats).map_or("-".into(), ms)
    );
}

fn burst_section(out: &mut String, r: &Results) {
    let _ = writeln!(out, "## To the last payment\n");
    let Some(b) = &r.burst else {
        let _ = writeln!(out, "Not run.\n");
        return;
    };
    header(
        out,
        &[
            "worker writes",
            "accepted",
            "to the last final",
            "payments/s to the last",
            "÷ pgbench naive",
            "windowed payments/s",
            "time to final p50 / p99 / p99.9 / max ms",
            "not final",
            "POST errors",
            "CPU ms / payment (api + worker + Postgres + Redis)",
            "CPU (cores busy)",
        ],
    );
    for run in &b.runs {
        let c = &run.cpu;
        let per = |x: f64| x * 1000.0 / run.accepted.max(1) as f64;
        row(
            out,
            &[
                crate::burst::label(run).into(),
                run.accepted.to_string(),
                format!("{:.1} s", run.to_last.as_secs_f64()),
                format!("**{:.0}**", run.per_sec()),
                b.naive_ceiling.map_or("-".into(), |n| {
                    format!("{:.2}×", run.per_sec() / n.max(1.0))
                }),
                format!("{:.0}", run.windowed_per_sec),
                format!(
                    "{} / {} / {} / {}",
                    ms(run.time_to_final.p50),
                    ms(run.time_to_final.p99),
                    ms(run.p999),
                    ms(run.time_to_final.max)
                ),
                run.not_final.to_string(),
                run.post_errors.to_string(),
                format!(
                    "**{:.3}**: api {:.3}, worker {:.3}, Postgres {:.3}, Redis {:.3}",
                    run.cpu_ms_per_payment(),
                    per(c.api),
                    per(c.workers),
                    per(c.postgres),
                    per(c.redis)
                ),
                c.describe(),
            ],
        );
    }
    let _ = writeln!(
        out,
        "\nPOSTs for {:.0} s (write by write: half that) as fast as {} connections go (closed loop), 1 worker × {}, sim \
         latency 0; then until every accepted payment is final. Payments/s to the last is \
         accepted ÷ (first POST to the last payment's final `updated_at`). pgbench, the naive \
         three statements (an insert and two updates by primary key, each its own commit, 32 \
         clients, prepared) in the same run: **{}**; the bench's own ceiling (section 1): {:.0}/s. \
         CPU is utime + stime from /proc of the api, the worker, the Postgres backends serving \
         the run's database and redis-server, from the first POST to the last final state, \
         divided by the payments accepted (stripe-sim and the generator excluded).\n",
        r.burst
            .as_ref()
            .and_then(|b| b.deployed())
            .map_or(0.0, |b| b.posting.as_secs_f64()),
        crate::burst::CONNECTIONS,
        crate::burst::WORKER_CONCURRENCY,
        b.naive_ceiling
            .map_or("not measured".into(), |n| format!("{n:.0} payments/s")),
        r.ceiling_pg()
    );
}

fn limit_section(out: &mut String, r: &Results) {
    let _ = writeln!(out, "## At Stripe's rate limit\n");
    let Some(l) = &r.at_limit else {
        let _ = writeln!(out, "Not run.\n");
        return;
    };
    header(out, &["", ""]);
    let rows = [
        (
            "limit",
            format!(
                "`STRIPE_RATE_LIMIT={}` in the worker; stripe-sim refuses what goes over {}/s with 429",
                crate::limit::RATE_LIMIT,
                crate::limit::RATE_LIMIT
            ),
        ),
        (
            "backlog before the new payments",
            format!(
                "{} declined payments (an intent each to cancel), {} 3-D Secure payments re-checked from 2 s on, the reconciler every 2 s",
                crate::limit::DECLINED,
                crate::limit::THREE_DS
            ),
        ),
        (
            "new payments",
            format!(
                "{:.0}/s for {:.0} s: {} offered, {} accepted, {} not complete",
                crate::limit::NEW_RATE,
                l.window.as_secs_f64(),
                l.new_offered,
                l.new_accepted,
                l.new_not_complete
            ),
        ),
        (
            "new payments' time to final (insert to `complete`)",
            format!(
                "p50 {} ms, p99 {} ms, max {} ms",
                ms(l.new_time_to_final.p50),
                ms(l.new_time_to_final.p99),
                ms(l.new_time_to_final.max)
            ),
        ),
        (
            "Stripe calls while they ran",
            format!(
                "{} for new payments (create, confirm), {} background (cancel, retrieve, list)",
                l.calls_new, l.calls_background
            ),
        ),
        (
            "background left when they stopped",
            format!(
                "{} intents to cancel; all canceled {}",
                l.cancels_left,
                l.drained_in
                    .map_or("- (not within 60 s)".into(), |d| format!(
                        "{:.1} s later",
                        d.as_secs_f64()
                    ))
            ),
        ),
        (
            "429s from stripe-sim (whole run)",
            format!("**{}**", l.sim_429),
        ),
    ];
    for (k, v) in rows {
        row(out, &[k.into(), v]);
    }
    let _ = writeln!(out);
}

fn cost_section(out: &mut String, r: &Results) {
    let _ = writeln!(out, "## 5. Cost\n");
    if r.e2e.is_empty() {
        let _ = writeln!(out, "Not run.\n");
        return;
    }
    header(
        out,
        &[
            "sim latency",
            "workers × concurrency",
            "api peak RSS MB",
            "worker peak RSS MB (largest)",
            "api CPU s / 1,000",
            "worker CPU s / 1,000",
            "Stripe requests / payment",
            "Stripe connections / payment",
        ],
    );
    for (cfg, t) in &r.e2e {
        let per = |n: u64| {
            if t.total_complete > 0 {
                n as f64 / t.total_complete as f64
            } else {
                0.0
            }
        };
        row(
            out,
            &[
                format!("{} ms", cfg.sim_latency_ms),
                format!("{} × {}", cfg.workers, cfg.concurrency),
                format!("{:.1}", t.api_rss_mb),
                format!("{:.1}", t.worker_rss_mb),
                format!("{:.2}", t.api_cpu_per_1000()),
                format!("{:.2}", t.worker_cpu_per_1000()),
                format!("{:.2}", per(t.sim_requests)),
                format!(
                    "{:.4} ({} / {})",
                    t.connections_per_payment(),
                    t.sim_connections,
                    t.total_complete
                ),
            ],
        );
    }
    let _ = writeln!(
        out,
        "\nCPU is utime + stime from `/proc/<pid>/stat` over the window: api per payment accepted, \
         workers per payment completed. Peak RSS is `VmHWM` at the end of the run. Connections are \
         stripe-sim's count of accepted TCP connections over the whole run (including the \
         harness's own one or two) ÷ payments completed; Stripe requests likewise, so charges still in \
         flight when a run stopped push that ratio a little above 1.\n"
    );
}

fn streams_section(out: &mut String, r: &Results) {
    let _ = writeln!(out, "## 6. Open checkout pages\n");
    let Some(s) = &r.streams else {
        let _ = writeln!(out, "Not run.\n");
        return;
    };
    header(out, &["what", "figure"]);
    let mb = |b: u64| b as f64 / 1e6;
    for (k, v) in [
        (
            "event streams open (`GET /transactions/{id}/events`, payments pending)".to_owned(),
            format!("{} of {}", s.open, crate::streams::STREAMS),
        ),
        (
            format!(
                "Postgres transactions/s in the deployment's database while they idle ({:.0} s)",
                s.window_secs
            ),
            format!("**{:.1}/s**", s.pg_per_sec),
        ),
        (
            "api resident memory (VmRSS) before → with the streams open".to_owned(),
            format!(
                "{:.1} → {:.1} MB ({:.1} kB per stream)",
                mb(s.rss_before),
                mb(s.rss_open),
                (s.rss_open.saturating_sub(s.rss_before)) as f64 / 1e3 / s.open.max(1) as f64
            ),
        ),
        (
            "streams that then saw their payment complete (a worker started)".to_owned(),
            format!(
                "{} of {}, the last {:.1} s after the worker started",
                s.completed, s.open, s.completed_within_secs
            ),
        ),
    ] {
        row(out, &[k, v]);
    }
    let _ = writeln!(
        out,
        "\nThe streams wait on the api's one `LISTEN payment_events` connection; a SELECT per page \
         every 300 ms (the design before) would be about {:.0}/s here. Transactions are \
         `xact_commit + xact_rollback` of `pg_stat_database` over the window, less the harness's \
         own two reads.\n",
        crate::streams::STREAMS as f64 / 0.3
    );
}

fn method_section(out: &mut String) {
    let _ = writeln!(
        out,
        "## How it was measured\n\n\
         - Every deployment is `tools::stack::Stack`: fresh database and Redis namespace, removed \
         after the run. The load generator is `bench/src/main.rs` in the same machine, so it \
         competes for the same cores (its share is the `bench` entry of each CPU split).\n\
         - \"CPU (cores busy)\" adds utime + stime of the api, the workers, stripe-sim, the Postgres \
         backends serving the run's database (not Postgres' WAL writer or checkpointer), the whole \
         redis-server and the generator over the window, divided by its length.\n\
         - Every response is checked (status, and the body's id and state); errors are counted by \
         kind and never dropped. \"Warnings logged\" counts WARN/ERROR lines in the api and worker \
         logs (`target/release/bench-logs/`), with the most frequent one.\n"
    );
}
