//! `results.svg`: end-to-end throughput against worker concurrency, next to API latency
//! against the offered rate.

use crate::Results;
use crate::svg::{self, Panel, RefLine, Series};

/// The two panels of `results.svg`.
pub fn chart(r: &Results) -> String {
    let mut left = Panel {
        title: "End to end throughput".into(),
        x_label: "WORKER_CONCURRENCY (per worker process)".into(),
        y_label: "payments/s, POST to complete".into(),
        x_log: true,
        ..Panel::default()
    };
    let mut i = 0;
    for lat in [0, 250] {
        for workers in [1, 2] {
            let points: Vec<(f64, f64)> = r
                .e2e
                .iter()
                .filter(|(c, _)| c.sim_latency_ms == lat && c.workers == workers)
                .map(|(c, t)| (c.concurrency as f64, t.per_sec()))
                .collect();
            if !points.is_empty() {
                left.series.push(Series {
                    name: format!(
                        "sim {lat} ms, {workers} worker{}",
                        if workers > 1 { "s" } else { "" }
                    ),
                    points,
                    color: svg::PALETTE[i % svg::PALETTE.len()],
                    dashed: workers == 2,
                });
            }
            i += 1;
        }
    }
    let pg = r.ceiling_pg();
    if pg > 0.0 {
        left.lines.push(RefLine {
            label: format!("Postgres ceiling {pg:.0}/s"),
            y: pg,
            color: "#555555",
        });
        left.lines.push(RefLine {
            label: "½ ceiling (target)".into(),
            y: pg / 2.0,
            color: "#999999",
        });
    }
    let mut right = Panel {
        title: "API latency, open loop".into(),
        x_label: "offered rate (requests/s)".into(),
        y_label: "latency (ms, log scale)".into(),
        x_log: true,
        y_log: true,
        ..Panel::default()
    };
    if let Some(l) = &r.latency {
        for (k, (steps, name)) in [(&l.post, "POST"), (&l.get, "GET")].into_iter().enumerate() {
            for median in [true, false] {
                let points = steps
                    .iter()
                    .map(|s| {
                        let d = if median { s.latency.p50 } else { s.latency.p99 };
                        (s.rate, (d.as_secs_f64() * 1000.0).max(0.01))
                    })
                    .collect();
                right.series.push(Series {
                    name: format!("{name} {}", if median { "p50" } else { "p99" }),
                    points,
                    // One colour per request, dashed for the median.
                    color: svg::PALETTE[k % svg::PALETTE.len()],
                    dashed: median,
                });
            }
        }
        right.lines.push(RefLine {
            label: "10 ms (POST p99 target)".into(),
            y: 10.0,
            color: "#555555",
        });
    }
    svg::render("payments benchmark", &[left, right])
}
