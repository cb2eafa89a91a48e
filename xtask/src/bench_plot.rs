//! The PNG plots of results.md: ratios to bare (a group of bars per workload, a bar per
//! tool, log scale) and the launch-latency distribution (every launch a dot, a row per
//! tool).
//! Text goes through plotters' ab_glyph backend with DejaVu Sans read at run time
//! (`fonts-dejavu-core`, which the bench installs), so nothing needs fontconfig.
//! The launch plot marks p50 (thick) and p99 (thin) on each row.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::bench_report::WorkloadResult;

pub const FONT_PACKAGE: &str = "fonts-dejavu-core";
const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT: &str = "sans-serif";

/// Registers the font once; plotters draws no text without it.
fn font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT_FILE)
            .map_err(|e| format!("read {FONT_FILE} (package {FONT_PACKAGE}): {e}"))?;
        // plotters keeps a 'static reference; the font lives as long as the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT_FILE} is not a font plotters can read"))
    })
    .clone()
}

/// A fixed colour per tool, so the two plots agree.
fn colour(tool: &str) -> RGBColor {
    match tool {
        "bare" => RGBColor(40, 40, 40),
        "env" => RGBColor(150, 150, 150),
        "agentd" => RGBColor(214, 39, 40),
        "agentd daemon" => RGBColor(255, 127, 14),
        "bwrap" => RGBColor(31, 119, 180),
        "firejail" => RGBColor(44, 160, 44),
        _ => RGBColor(148, 103, 189),
    }
}

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

/// Bars of the median ratio to bare, one group per workload, a bar per tool: the work
/// on the left, launch (p50, a different order of magnitude) on its own scale at right.
pub fn ratios(path: &Path, workloads: &[WorkloadResult], caption: &str) -> Result<(), String> {
    font()?;
    let root = BitMapBackend::new(path, (1600, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let body = root.titled(caption, (FONT, 26)).map_err(err)?;
    let (work, launch): (Vec<&WorkloadResult>, Vec<&WorkloadResult>) =
        workloads.iter().partition(|w| w.section != "launch");
    if launch.is_empty() {
        bars(&body, &work, true)?;
    } else {
        let (left, right) = body.split_horizontally(1300);
        bars(&left, &work, true)?;
        bars(&right, &launch, false)?;
    }
    root.present().map_err(err)
}

/// The median ratio of `tool` in `w` (launch: the p50 ratio).
fn ratio(w: &WorkloadResult, tool: &str) -> Option<f64> {
    let c = w.cells.iter().find(|c| c.tool == tool)?;
    Some(match (c.p50_ns, w.cells[0].p50_ns) {
        (Some(p), Some(b)) => p / b,
        _ => c.ratio_median,
    })
}

fn bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    workloads: &[&WorkloadResult],
    legend: bool,
) -> Result<(), String> {
    let tools: Vec<&str> = workloads
        .first()
        .map(|w| w.cells.iter().skip(1).map(|c| c.tool.as_str()).collect())
        .unwrap_or_default();
    let all: Vec<f64> = workloads
        .iter()
        .flat_map(|w| tools.iter().filter_map(|t| ratio(w, t)))
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    let hi = all.iter().copied().fold(1.0, f64::max) * 1.6;
    let lo = all.iter().copied().fold(1.0, f64::min).min(0.8) * 0.9;
    let groups = workloads.len();
    let mut chart = ChartBuilder::on(area)
        .margin(15)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..groups as f64, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("ratio to bare (log scale)")
        .y_label_formatter(&|y| short(*y, 1))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 1.0), (groups as f64, 1.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
    let width = 0.8 / tools.len().max(1) as f64;
    for (ti, t) in tools.iter().enumerate() {
        let c = colour(t);
        let bars: Vec<(f64, f64, f64)> = workloads
            .iter()
            .enumerate()
            .filter_map(|(wi, w)| {
                let x0 = wi as f64 + 0.1 + ti as f64 * width;
                ratio(w, t).map(|r| (x0, x0 + width * 0.9, r))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x0, x1, r)| {
                let (top, bottom) = if r >= 1.0 { (r, 1.0) } else { (1.0, r) };
                Rectangle::new([(x0, top), (x1, bottom)], c.filled())
            }))
            .map_err(err)?
            .label(*t)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        chart
            .draw_series(bars.iter().map(|&(x0, x1, r)| {
                Text::new(
                    short(r, 2),
                    ((x0 + x1) / 2.0, r.max(1.0) * 1.03),
                    TextStyle::from((FONT, 12).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(err)?;
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    // Workload names under their groups, on two lines where they are long.
    let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (wi, w) in workloads.iter().enumerate() {
        // backend_coord is absolute; `area` draws relative to its own corner.
        let (x, y) = chart.backend_coord(&(wi as f64 + 0.5, lo));
        let (ax, ay) = area.get_base_pixel();
        let (x, y) = (x - ax, y - ay);
        let label = if w.section == "launch" {
            "launch p50"
        } else {
            w.key.as_str()
        };
        let (first, second) = split_label(label);
        area.draw(&Text::new(first, (x, y + 8), style.clone()))
            .map_err(err)?;
        if let Some(second) = second {
            area.draw(&Text::new(second, (x, y + 28), style.clone()))
                .map_err(err)?;
        }
    }
    Ok(())
}

/// `x` with `decimals` below 10, as a whole number from 10 up.
fn short(x: f64, decimals: usize) -> String {
    if x >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.decimals$}")
    }
}

/// `outside getpid, 50 runs` → (`outside getpid`, `50 runs`).
fn split_label(key: &str) -> (String, Option<String>) {
    match key.split_once(", ") {
        Some((a, b)) => (a.to_owned(), Some(b.to_owned())),
        None => (key.to_owned(), None),
    }
}

/// Every launch as a dot on a log time axis, a row per tool, with its p50 and p99 marked.
pub fn launch(path: &Path, w: &WorkloadResult, caption: &str) -> Result<(), String> {
    font()?;
    let rows = w.cells.len();
    let ms = |ns: f64| ns / 1e6;
    let all = w
        .cells
        .iter()
        .flat_map(|c| c.wall_ns.samples.iter().map(|&ns| ms(ns)));
    let lo = all.clone().fold(f64::INFINITY, f64::min).max(1e-3) * 0.7;
    let hi = all.fold(0.0, f64::max).max(lo * 2.0) * 1.6;
    let root = BitMapBackend::new(path, (1400, 140 + 90 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(240)
        .build_cartesian_2d((lo..hi).log_scale(), -0.5f64..rows as f64 - 0.5)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("spawn to exit, ms (log scale)")
        .x_label_formatter(&|x| short(*x, 1))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(err)?;
    let name_style =
        TextStyle::from((FONT, 18).into_font()).pos(Pos::new(HPos::Right, VPos::Bottom));
    let note_style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Right, VPos::Top));
    for (i, c) in w.cells.iter().enumerate() {
        // Top row first, as in the tables.
        let y = (rows - 1 - i) as f64;
        let colour = colour(&c.tool);
        // A fixed spread within the row (golden-ratio sequence), so dots do not pile up.
        let dots = c.wall_ns.samples.iter().enumerate().map(|(k, &ns)| {
            let jitter = ((k as f64 * 0.618_034) % 1.0 - 0.5) * 0.5;
            Circle::new((ms(ns), y + jitter), 3, colour.mix(0.5).filled())
        });
        chart.draw_series(dots).map_err(err)?;
        let (p50, p99) = (
            ms(c.p50_ns.unwrap_or(f64::NAN)),
            ms(c.p99_ns.unwrap_or(f64::NAN)),
        );
        for (x, thick) in [(p50, 4), (p99, 2)] {
            chart
                .draw_series(LineSeries::new(
                    [(x, y - 0.35), (x, y + 0.35)],
                    BLACK.stroke_width(thick),
                ))
                .map_err(err)?;
        }
        // The row's name and its percentiles, left of the axis.
        let (px, py) = chart.backend_coord(&(lo, y));
        root.draw(&Text::new(
            c.tool.clone(),
            (px - 12, py - 4),
            name_style.clone(),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
            (px - 12, py),
            note_style.clone(),
        ))
        .map_err(err)?;
    }
    root.present().map_err(err)
}
