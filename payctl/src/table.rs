//! Human output: aligned tables, key/value blocks and the small formatting rules they share.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::duration::human_secs;

/// Longest cell printed in a table; the JSON output always has the full text.
const MAX_CELL: usize = 90;

pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.into_iter().map(|c| cell(&c)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, columns two spaces apart, no trailing blanks.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in row.iter().enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                let _ = write!(line, "{c:<width$}  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One line, at most `MAX_CELL` characters: newlines would break the columns.
fn cell(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > MAX_CELL {
        let cut: String = flat.chars().take(MAX_CELL - 1).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// `key  value` lines with the values aligned.
pub fn block(pairs: &[(&str, String)]) -> Vec<String> {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {}", cell(v)).trim_end().to_owned())
        .collect()
}

/// Two blocks next to each other, each under its title.
pub fn side_by_side(
    left_title: &str,
    left: &[String],
    right_title: &str,
    right: &[String],
) -> String {
    let left: Vec<String> = std::iter::once(left_title.to_owned())
        .chain(left.iter().cloned())
        .collect();
    let right: Vec<String> = std::iter::once(right_title.to_owned())
        .chain(right.iter().cloned())
        .collect();
    let width = left.iter().map(|l| l.chars().count()).max().unwrap_or(0) + 4;
    let mut out = String::new();
    for i in 0..left.len().max(right.len()) {
        let l = left.get(i).map_or("", String::as_str);
        let r = right.get(i).map_or("", String::as_str);
        out.push_str(format!("{l:<width$}{r}").trim_end());
        out.push('\n');
    }
    out
}

/// `2026-11-29 13:14:05`, or `-`.
pub fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// `2026-11-29 13:14:05 (12s ago)` or `(in 5m00s)`, relative to `now`.
pub fn time_rel(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let secs = (now - t).num_seconds();
            let rel = if secs >= 0 {
                format!("{} ago", human_secs(secs))
            } else {
                format!("in {}", human_secs(-secs))
            };
            format!("{} ({rel})", time(Some(t)))
        }
    }
}

pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide value".into(), "x".into()]);
        t.row(vec!["y".into(), "line\nbreak".into()]);
        assert_eq!(
            t.render(),
            "A           LONGER\nwide value  x\ny           line break\n"
        );
    }

    #[test]
    fn long_cells_are_cut() {
        let mut t = Table::new(&["A"]);
        t.row(vec!["x".repeat(200)]);
        assert!(t.render().lines().nth(1).unwrap().chars().count() <= MAX_CELL);
    }

    #[test]
    fn blocks_sit_side_by_side() {
        let out = side_by_side(
            "job",
            &["a  1".into()],
            "transaction",
            &["b  2".into(), "c  3".into()],
        );
        assert_eq!(out, "job     transaction\na  1    b  2\n        c  3\n");
    }
}
