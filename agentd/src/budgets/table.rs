//! The end-of-run table on stderr:
//!
//! ```text
//! budget            limit     used      peak
//! wall_time         10s       2.3s      2.3s
//! execs             100/1h    12        12
//! memory            512MiB    12.4MiB   30.1MiB
//! ```

use crate::policy::{show, Unit};

/// One budget's figures; `None` where the host gives no such figure.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: &'static str,
    /// Unit name for JSON (`ms`, `bytes`, `count`, `percent`).
    pub unit: &'static str,
    pub shown_unit: Unit,
    pub limit: u64,
    pub window_ms: Option<u64>,
    pub used: Option<u64>,
    pub peak: Option<u64>,
}

pub fn render(rows: &[Row]) -> String {
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            let limit = match r.window_ms {
                Some(w) => format!("{}/{}", show(r.shown_unit, r.limit), show(Unit::Millis, w)),
                None => show(r.shown_unit, r.limit),
            };
            let fig = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| show(r.shown_unit, v));
            [r.name.to_owned(), limit, fig(r.used), fig(r.peak)]
        })
        .collect();
    let header = ["budget", "limit", "used", "peak"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(cells.iter()) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str("agentd: ");
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn aligned_columns() {
        let t = render(&[
            Row {
                name: "wall_time",
                unit: "ms",
                shown_unit: Unit::Millis,
                limit: 10_000,
                window_ms: None,
                used: Some(2_300),
                peak: Some(2_300),
            },
            Row {
                name: "execs",
                unit: "count",
                shown_unit: Unit::Count,
                limit: 100,
                window_ms: Some(3_600_000),
                used: Some(12),
                peak: None,
            },
        ]);
        assert_eq!(
            t,
            "agentd: budget     limit      used    peak\n\
             agentd: wall_time  10s        2300ms  2300ms\n\
             agentd: execs      100/3600s  12      -\n"
        );
    }
}
