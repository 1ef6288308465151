//! A small line-chart writer for `results.svg`: panels side by side, each with labelled axes
//! (linear or log), a legend, series as polylines with point markers, and dashed reference lines
//! (a ceiling, a target). Plain SVG text, so no plotting tool is needed.

use std::fmt::Write;

/// Colours that stay apart for readers with the common colour-vision deficiencies.
pub const PALETTE: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];

#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: &'static str,
    pub dashed: bool,
}

/// A horizontal line across the panel, labelled at its right end.
#[derive(Clone, Debug)]
pub struct RefLine {
    pub label: String,
    pub y: f64,
    pub color: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub y_log: bool,
    pub series: Vec<Series>,
    pub lines: Vec<RefLine>,
}

const PANEL_W: f64 = 520.0;
const PANEL_H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
/// Room under the plot for the x label and a two-column legend.
const BOTTOM: f64 = 110.0;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Round tick values for a linear axis over `[lo, hi]`: steps of 1, 2 or 5 × 10^n, at most ~6.
pub fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let range = (hi - lo).max(f64::EPSILON);
    let raw = range / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| range / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut ticks = Vec::new();
    let mut v = (lo / step).ceil() * step;
    while v <= hi + step * 1e-9 {
        ticks.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    ticks
}

/// 1, 2 and 5 × 10^n within `[lo, hi]` (both > 0) for a log axis.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    for e in first..=last {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                ticks.push(v);
            }
        }
    }
    ticks
}

/// The nearest 1, 2 or 5 × 10^n at or below `v` (`up`: at or above).
fn step_125(v: f64, up: bool) -> f64 {
    let e = v.log10().floor() as i32;
    let candidates = (e - 1..=e + 1).flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)));
    let fits = |c: &f64| {
        if up {
            *c >= v * (1.0 - 1e-9)
        } else {
            *c <= v * (1.0 + 1e-9)
        }
    };
    let pick = candidates.filter(fits);
    if up {
        pick.fold(f64::INFINITY, f64::min)
    } else {
        pick.fold(0.0, f64::max)
    }
}

/// A tick label without trailing zeros: 0.5, 10, 2500, 10k.
pub fn label(v: f64) -> String {
    if v >= 10_000.0 && (v / 1000.0).fract() == 0.0 {
        format!("{}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// One axis' mapping from data to pixels.
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    from: f64,
    to: f64,
}

impl Axis {
    fn new(values: &[f64], log: bool, from: f64, to: f64) -> Self {
        let vals: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .collect();
        let (mut lo, mut hi) = vals
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if !lo.is_finite() {
            (lo, hi) = (1.0, 10.0);
        }
        if log {
            // Widen to the 1-2-5 ticks either side, so both ends carry a label.
            lo = step_125(lo, false);
            hi = step_125(hi, true).max(lo * 2.0);
        } else {
            lo = lo.min(0.0);
            hi = if hi <= lo { lo + 1.0 } else { hi * 1.1 };
        }
        Self {
            lo,
            hi,
            log,
            from,
            to,
        }
    }

    fn px(&self, v: f64) -> f64 {
        let f = |x: f64| if self.log { x.max(self.lo).log10() } else { x };
        let t = (f(v) - f(self.lo)) / (f(self.hi) - f(self.lo));
        self.from + t * (self.to - self.from)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            log_ticks(self.lo, self.hi)
        } else {
            linear_ticks(self.lo, self.hi)
        }
    }
}

/// The panels side by side, as one SVG document.
pub fn render(title: &str, panels: &[Panel]) -> String {
    let width = PANEL_W * panels.len().max(1) as f64;
    let height = PANEL_H + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="20" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<g transform="translate({},30)">"#,
            i as f64 * PANEL_W
        );
        draw_panel(&mut out, panel);
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
    out
}

fn draw_panel(out: &mut String, p: &Panel) {
    let (x0, x1, y0, y1) = (LEFT, PANEL_W - RIGHT, PANEL_H - BOTTOM, TOP);
    let xs: Vec<f64> = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|pt| pt.0))
        .collect();
    let mut ys: Vec<f64> = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|pt| pt.1))
        .collect();
    ys.extend(p.lines.iter().map(|l| l.y));
    let (xa, ya) = (
        Axis::new(&xs, p.x_log, x0, x1),
        Axis::new(&ys, p.y_log, y0, y1),
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13" font-weight="bold">{}</text>"#,
        (x0 + x1) / 2.0,
        TOP - 14.0,
        escape(&p.title)
    );
    for t in xa.ticks() {
        let x = xa.px(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{y0}" stroke="#e5e5e5"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            y0 + 16.0,
            label(t)
        );
    }
    for t in ya.ticks() {
        let y = ya.px(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            label(t)
        );
    }
    let _ = writeln!(
        out,
        r#"<rect x="{x0}" y="{y1}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        x1 - x0,
        y0 - y1
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        y0 + 38.0,
        escape(&p.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(16,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (y0 + y1) / 2.0,
        escape(&p.y_label)
    );
    for l in &p.lines {
        let y = ya.px(l.y);
        let _ = writeln!(
            out,
            r#"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="{}" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" text-anchor="end" fill="{}" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"#,
            l.color,
            x1 - 4.0,
            y - 4.0,
            l.color,
            escape(&l.label)
        );
    }
    for (i, s) in p.series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", xa.px(x), ya.px(y)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="3 3""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            pts.join(" "),
            s.color
        );
        for pt in &pts {
            let (x, y) = pt.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                out,
                r#"<circle cx="{x}" cy="{y}" r="3" fill="{}"/>"#,
                s.color
            );
        }
        // Legend under the x label, two columns, so it never hides a line.
        let lx = x0 + (i % 2) as f64 * (x1 - x0) / 2.0;
        let ly = y0 + 58.0 + (i / 2) as f64 * 16.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 20.0,
            s.color,
            lx + 24.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_round_and_cover_the_range() {
        assert_eq!(
            linear_ticks(0.0, 1000.0),
            vec![0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
        );
        let t = linear_ticks(0.0, 3520.0);
        assert_eq!(t.first(), Some(&0.0));
        assert!(t.len() <= 7 && t.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn log_ticks_are_one_two_five() {
        assert_eq!(
            log_ticks(1.0, 100.0),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(log_ticks(10.0, 1000.0).len(), 7);
    }

    #[test]
    fn log_axes_end_on_a_labelled_tick() {
        assert_eq!(step_125(130.0, false), 100.0);
        assert_eq!(step_125(130.0, true), 200.0);
        assert_eq!(step_125(8000.0, true), 10000.0);
        assert_eq!(step_125(0.7, false), 0.5);
        assert_eq!(step_125(200.0, false), 200.0);
    }

    #[test]
    fn labels_drop_trailing_zeros() {
        assert_eq!(label(0.5), "0.5");
        assert_eq!(label(1000.0), "1000");
        assert_eq!(label(20000.0), "20k");
        assert_eq!(label(0.25), "0.25");
    }

    #[test]
    fn a_chart_has_its_labels_a_line_per_series_and_escaped_text() {
        let panel = Panel {
            title: "throughput <e2e>".into(),
            x_label: "WORKER_CONCURRENCY".into(),
            y_label: "payments/s".into(),
            x_log: true,
            y_log: false,
            series: vec![
                Series {
                    name: "1 worker".into(),
                    points: vec![(10.0, 100.0), (100.0, 800.0), (1000.0, 900.0)],
                    color: PALETTE[0],
                    dashed: false,
                },
                Series {
                    name: "2 workers".into(),
                    points: vec![(10.0, 150.0), (1000.0, 950.0)],
                    color: PALETTE[1],
                    dashed: true,
                },
            ],
            lines: vec![RefLine {
                label: "Postgres ceiling".into(),
                y: 1500.0,
                color: "#555",
            }],
        };
        let svg = render("bench & co", &[panel.clone(), panel]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert_eq!(svg.matches("<circle").count(), 10);
        assert!(svg.contains("WORKER_CONCURRENCY") && svg.contains("payments/s"));
        assert!(svg.contains("throughput &lt;e2e&gt;") && svg.contains("bench &amp; co"));
        assert!(svg.contains("Postgres ceiling") && svg.contains("stroke-dasharray"));
    }

    #[test]
    fn points_map_inside_the_plot_area() {
        let a = Axis::new(&[10.0, 1000.0], true, 70.0, 500.0);
        assert!((a.px(10.0) - 70.0).abs() < 1e-9 && (a.px(1000.0) - 500.0).abs() < 1e-9);
        assert!((a.px(100.0) - 285.0).abs() < 1e-9);
        let lin = Axis::new(&[0.0, 1000.0], false, 400.0, 40.0);
        assert!(lin.px(0.0) == 400.0 && lin.px(1000.0) > 40.0);
        let empty = Axis::new(&[], false, 0.0, 100.0);
        assert!(empty.px(0.0).is_finite());
    }
}
