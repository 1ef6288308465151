//! The targets of the issue, each held or missed, and for each the figures that say what bounds
//! it: the CPU split of the run, the Postgres ceiling, the api without the worker.

use std::fmt::Write;
use std::time::Duration;

use crate::Results;
use crate::latency;
use crate::machine::Machine;
use crate::markdown::{header, row};
use crate::probe::CpuSplit;
use crate::stats::ms;

/// The Stripe calls a charge makes in turn when nothing goes wrong: create the intent, then
/// confirm it.
const STRIPE_CALLS_PER_CHARGE: f64 = 2.0;

fn find(
    r: &Results,
    lat: u64,
    workers: usize,
    conc: usize,
) -> Option<&(crate::e2e::Config, crate::e2e::Throughput)> {
    r.e2e
        .iter()
        .find(|(c, _)| c.sim_latency_ms == lat && c.workers == workers && c.concurrency == conc)
}

/// What the CPU split of a run says bounds it: the whole machine's cores busy (everyone's, as
/// the machine is shared), or, when cores were left idle, waiting (I/O wait is the WAL flush).
fn bound_by(cpu: &CpuSplit, cores: usize) -> String {
    let machine = cpu.machine_cores_busy();
    let ours = if cpu.wall > 0.0 {
        cpu.total() / cpu.wall
    } else {
        0.0
    };
    let (who, c) = cpu.busiest();
    if machine >= 0.9 * cores as f64 {
        format!(
            "CPU: the machine's {cores} cores were {:.0} % busy ({ours:.2} cores this deployment and the generator, {:.2} others and the kernel); the largest share is {who} ({c:.2} cores). Split: {}",
            100.0 * machine / cores as f64,
            (machine - ours).max(0.0),
            cpu.describe()
        )
    } else {
        format!(
            "not CPU alone: the machine was {:.0} % busy; waiting on commits (I/O wait {:.2} cores), round trips and the pools. Split: {}",
            100.0 * machine / cores.max(1) as f64,
            cpu.machine_iowait / cpu.wall.max(1e-9),
            cpu.describe()
        )
    }
}

/// What the perf profile of the ceiling says about Postgres' own work per statement (only the
/// parts the profile found).
fn postgres_profile(r: &Results) -> String {
    let Some(p) = r.ceiling.as_ref().and_then(|c| c.pg_profile.as_ref()) else {
        return String::new();
    };
    let share = |what: &str| p.parts.iter().find(|(w, _)| *w == what).map(|(_, s)| *s);
    let prepare: Vec<f64> = ["parse SQL text", "analyze and rewrite", "plan"]
        .iter()
        .filter_map(|w| share(w))
        .collect();
    let mut said = Vec::new();
    if !prepare.is_empty() {
        said.push(format!(
            "{:.0} % of its CPU parses, analyzes and plans statements",
            prepare.iter().sum::<f64>()
        ));
    }
    if let Some(s) = share("send results (send syscall)") {
        said.push(format!("{s:.0} % sends results"));
    }
    if let Some(s) = share("commit") {
        said.push(format!("{s:.0} % commits"));
    }
    if said.is_empty() {
        return String::new();
    }
    format!(
        ". Inside Postgres (perf, ceiling loop): {}.",
        said.join(", ")
    )
}

pub fn section(out: &mut String, m: &Machine, r: &Results) {
    let _ = writeln!(out, "## Targets\n");
    header(out, &["target", "measured", "held", "what bounds it"]);
    let pg = r.ceiling_pg();
    let best0 = r
        .e2e
        .iter()
        .filter(|(c, _)| c.sim_latency_ms == 0)
        .max_by(|a, b| a.1.per_sec().total_cmp(&b.1.per_sec()));
    if let Some((cfg, t)) = best0 {
        let held = pg > 0.0 && t.per_sec() >= 0.5 * pg;
        row(
            out,
            &[
                "end to end at sim latency 0 ≥ ½ the Postgres ceiling".into(),
                format!(
                    "best {:.0}/s ({} × {}) = {:.0} % of {pg:.0}/s",
                    t.per_sec(),
                    cfg.workers,
                    cfg.concurrency,
                    100.0 * t.per_sec() / pg.max(1.0)
                ),
                yes_no(held),
                bound_by(&t.cpu, m.cores) + &postgres_profile(r),
            ],
        );
    }
    if let Some(l) = &r.latency
        && let Some(median) = latency::median_p99(&l.repeats)
    {
        let p99s: Vec<String> = l.repeats.iter().map(|s| ms(s.latency.p99)).collect();
        let worst = l
            .repeats
            .iter()
            .map(|s| s.latency.p99)
            .max()
            .unwrap_or_default();
        let errors: u64 = l.repeats.iter().map(|s| s.errors.total()).sum();
        let held =
            median < Duration::from_millis(10) && worst <= Duration::from_millis(20) && errors == 0;
        let hey: Vec<String> = l
            .hey
            .iter()
            .map(|h| match &h.outcome {
                Ok(r) => format!(
                    "`hey -c {} -q {}` p99 {} ms ({:.0}/s, {} not 202)",
                    h.connections,
                    h.per_connection,
                    ms(r.p99),
                    r.requests_per_sec,
                    r.non_202()
                ),
                Err(e) => format!("`hey -c {} -q {}`: {e}", h.connections, h.per_connection),
            })
            .collect();
        let mut why = String::new();
        if let Some(s) = l.repeats.iter().find(|s| s.latency.p99 == median) {
            why = bound_by(&s.cpu, m.cores);
        }
        if let Some(a) = &l.post_alone {
            let _ = write!(
                why,
                ". With the worker stopped, POST at 1,000/s: p99 {} ms",
                ms(a.latency.p99)
            );
        }
        row(
            out,
            &[
                format!(
                    "POST /transactions p99 < 10 ms at 1,000/s with the worker charging: the median of {} runs, none above 20 ms",
                    l.repeats.len()
                ),
                format!(
                    "median {} ms (runs: {}), errors {errors}; {}",
                    ms(median),
                    p99s.join(", "),
                    hey.join("; ")
                ),
                yes_no(held),
                why,
            ],
        );
    }
    if let Some(b) = &r.burst
        && let Some(d) = b.deployed()
    {
        let before = b.write_by_write().map_or(String::new(), |w| {
            format!(
                " (write by write in the same run: {:.3} ms)",
                w.cpu_ms_per_payment()
            )
        });
        row(
            out,
            &[
                "≤ 0.5 ms of CPU per payment over api, worker, Postgres and Redis".into(),
                format!("{:.3} ms{before}", d.cpu_ms_per_payment()),
                yes_no(d.cpu_ms_per_payment() <= 0.5),
                format!(
                    "where it goes: see \"To the last payment\". Split: {}",
                    d.cpu.describe()
                ),
            ],
        );
        if let Some(naive) = b.naive_ceiling {
            let ratio = d.per_sec() / naive.max(1.0);
            row(
                out,
                &[
                    "to the last payment ≥ ½ the pgbench ceiling of the naive three statements"
                        .into(),
                    format!(
                        "{:.0}/s = {:.2}× of {naive:.0}/s (the bench's ceiling: {:.0}/s); time to final p50 {} / p99 {} / p99.9 {} / max {} ms; windowed {:.0}/s",
                        d.per_sec(),
                        ratio,
                        pg,
                        ms(d.time_to_final.p50),
                        ms(d.time_to_final.p99),
                        ms(d.p999),
                        ms(d.time_to_final.max),
                        d.windowed_per_sec
                    ),
                    yes_no(ratio >= 0.5 && d.not_final == 0),
                    bound_by(&d.cpu, m.cores),
                ],
            );
        }
    }
    if let Some(l) = &r.at_limit {
        let held = l.sim_429 == 0
            && l.new_not_complete == 0
            && l.new_accepted > 0
            && l.new_time_to_final.p99 < Duration::from_secs(1)
            && l.drained_in.is_some();
        row(
            out,
            &[
                "at `STRIPE_RATE_LIMIT=25` with a backlog of background work: new payments first, no 429".into(),
                format!(
                    "new payments' time to final p50 {} / p99 {} / max {} ms ({} of {} complete); Stripe calls meanwhile {} new / {} background; backlog drained {} after; 429s from the sim: {}",
                    ms(l.new_time_to_final.p50),
                    ms(l.new_time_to_final.p99),
                    ms(l.new_time_to_final.max),
                    l.new_accepted - l.new_not_complete,
                    l.new_offered,
                    l.calls_new,
                    l.calls_background,
                    l.drained_in.map_or("- (not within 60 s)".into(), |d| format!("{:.1} s", d.as_secs_f64())),
                    l.sim_429
                ),
                yes_no(held),
                "background calls take a place only while no customer's call waits and the last second holds under half the budget (`worker/src/stripe/ratelimit.rs`)".into(),
            ],
        );
    }
    if let Some((cfg, t)) = find(r, 250, 1, 1000) {
        let bound = cfg.latency_bound().unwrap_or(0.0);
        let held = t.per_sec() >= 0.8 * bound;
        let mut why = String::new();
        if pg > 0.0 && pg < 0.8 * bound {
            let _ = write!(
                why,
                "Postgres: alone it allows {pg:.0} payments/s here, below the {:.0}/s the target needs, so the target cannot hold on this machine. ",
                0.8 * bound
            );
        }
        // Every payment costs CPU in each process on the machine; the cores divided by that cost
        // is the most this deployment can complete here, whatever the concurrency.
        let cores_busy = if t.cpu.wall > 0.0 {
            t.cpu.total() / t.cpu.wall
        } else {
            0.0
        };
        // The target's alternative: the report shows, with figures, the resource that stops
        // it. Here that is the CPU when the cores were (nearly) all busy and what they allow
        // is below what the target needs.
        let mut stopped_by_cpu = false;
        if cores_busy > 0.0 && t.per_sec() > 0.0 {
            let per_payment = cores_busy / t.per_sec();
            let most = m.cores as f64 / per_payment;
            stopped_by_cpu = most < 0.8 * bound && cores_busy >= 0.85 * m.cores as f64;
            let _ = write!(
                why,
                "CPU per payment, all processes together (the load generator included): {:.2} ms, so {} cores complete at most {most:.0} payments/s{}. ",
                per_payment * 1000.0,
                m.cores,
                if most < 0.8 * bound {
                    format!(
                        ", below the {:.0}/s the target needs: it cannot hold on this machine",
                        0.8 * bound
                    )
                } else {
                    String::new()
                }
            );
        }
        // Stripe's side: a payment makes its calls in turn (create, then confirm), and a worker
        // keeps at most `STRIPE_MAX_CONCURRENT_REQUESTS` of them open at once.
        let latency = cfg.sim_latency_ms as f64 / 1000.0;
        let open = std::env::var("STRIPE_MAX_CONCURRENT_REQUESTS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(shared::settings::DEFAULT_MAX_CONCURRENT_REQUESTS);
        let by_calls = cfg.slots() as f64 / (STRIPE_CALLS_PER_CHARGE * latency);
        let by_open = open as f64 / (STRIPE_CALLS_PER_CHARGE * latency);
        let stopped_by_open = by_open < 0.8 * bound && t.per_sec() >= 0.9 * by_open;
        let _ = write!(
            why,
            "Stripe's side: each payment makes {STRIPE_CALLS_PER_CHARGE:.0} calls in turn (create, confirm) of {:.0} ms, so {} in flight complete at most {by_calls:.0}/s; and the worker keeps at most {open} requests open toward Stripe (`STRIPE_MAX_CONCURRENT_REQUESTS`: its memory, and Stripe's own limit on concurrent requests), so at most {by_open:.0} payments/s{}. ",
            latency * 1000.0,
            cfg.slots(),
            if stopped_by_open {
                format!(
                    ": the run completed {:.0} % of that",
                    100.0 * t.per_sec() / by_open
                )
            } else {
                String::new()
            }
        );
        let _ = write!(
            why,
            "Stripe requests open on average ≈ {:.0} (throughput × {STRIPE_CALLS_PER_CHARGE:.0} × {:.0} ms); stripe-sim saw {} connections. {}",
            t.per_sec() * STRIPE_CALLS_PER_CHARGE * latency,
            latency * 1000.0,
            t.sim_connections,
            bound_by(&t.cpu, m.cores)
        );
        why.push_str(&postgres_profile(r));
        row(
            out,
            &[
                "sim latency 250 ms, 1 worker × 1,000: ≥ 80 % of concurrency ÷ latency, or the resource that stops it shown".into(),
                format!(
                    "{:.0}/s = {:.0} % of {bound:.0}/s",
                    t.per_sec(),
                    100.0 * t.per_sec() / bound
                ),
                if held {
                    yes_no(true)
                } else if stopped_by_cpu {
                    "by its alternative: what stops it is shown (CPU)".into()
                } else if stopped_by_open {
                    "by its alternative: what stops it is shown (open Stripe requests)".into()
                } else {
                    yes_no(false)
                },
                why,
            ],
        );
        row(
            out,
            &[
                "the worker's peak RSS < 64 MB with 1,000 charges in flight (250 ms, 1 × 1,000)"
                    .into(),
                format!("{:.1} MB", t.worker_rss_mb),
                yes_no(t.worker_rss_mb > 0.0 && t.worker_rss_mb < 64.0),
                "-".into(),
            ],
        );
    }
    let _ = writeln!(out);
}

fn yes_no(held: bool) -> String {
    if held { "yes".into() } else { "**no**".into() }
}
