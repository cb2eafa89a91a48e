//! What a benchmark run found: the statistics of each (workload, tool) cell, written as
//! results.json and results.md, and the check `cargo xtask test` makes of them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bench_workloads::{Kind, Samples, Unit, Workload};

/// Min, median and the samples themselves.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Stat {
    pub min: f64,
    pub median: f64,
    pub samples: Vec<f64>,
}

impl Stat {
    pub fn of(samples: &[f64]) -> Self {
        Self {
            min: samples.iter().copied().fold(f64::INFINITY, f64::min),
            median: percentile(samples, 50.0),
            samples: samples.to_vec(),
        }
    }

    /// The samples, comma-separated with `decimals`.
    pub fn shown(&self, decimals: usize) -> String {
        self.samples
            .iter()
            .map(|x| format!("{x:.decimals$}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The `p`th percentile (nearest rank) of `v`; NaN for an empty slice.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// One tool's figures for one workload, in nanoseconds per operation.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Cell {
    pub tool: String,
    pub wall_ns: Stat,
    pub cpu_ns: Option<Stat>,
    /// Median over median of bare.
    pub ratio_median: f64,
    /// Min over min of bare.
    pub ratio_min: f64,
    pub cpu_ratio_median: Option<f64>,
    /// Launch only: over every launch, not per repetition.
    pub p50_ns: Option<f64>,
    pub p99_ns: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct WorkloadResult {
    pub key: String,
    pub title: String,
    pub section: String,
    pub unit: String,
    pub cells: Vec<Cell>,
}

/// Builds the cells of `workloads` from the samples, `tools[0]` being bare.
pub fn cells(
    workloads: &[Workload],
    tools: &[&str],
    samples: &[Vec<Samples>],
) -> Vec<WorkloadResult> {
    workloads
        .iter()
        .zip(samples)
        .map(|(w, row)| {
            let launch = matches!(w.kind, Kind::Launch { .. });
            let bare = Stat::of(&row[0].wall);
            let bare_cpu = (!row[0].cpu.is_empty()).then(|| Stat::of(&row[0].cpu));
            let cells = tools
                .iter()
                .zip(row)
                .map(|(name, s)| {
                    let wall = Stat::of(&s.wall);
                    let cpu = (!s.cpu.is_empty()).then(|| Stat::of(&s.cpu));
                    let (p50, p99) = if launch {
                        (
                            Some(percentile(&s.wall, 50.0)),
                            Some(percentile(&s.wall, 99.0)),
                        )
                    } else {
                        (None, None)
                    };
                    Cell {
                        tool: (*name).to_owned(),
                        ratio_median: wall.median / bare.median,
                        ratio_min: wall.min / bare.min,
                        cpu_ratio_median: match (&cpu, &bare_cpu) {
                            (Some(c), Some(b)) => Some(c.median / b.median),
                            _ => None,
                        },
                        wall_ns: wall,
                        cpu_ns: cpu,
                        p50_ns: p50,
                        p99_ns: p99,
                    }
                })
                .collect();
            WorkloadResult {
                key: w.key.clone(),
                title: w.title.clone(),
                section: w.section().into(),
                unit: w.unit.name().into(),
                cells,
            }
        })
        .collect()
}

#[derive(Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub distribution: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
}

#[derive(Serialize, Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub settings: String,
    pub version: String,
    pub skipped: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct Results {
    pub date: String,
    pub mode: String,
    /// `release`, or `debug` when `cargo xtask test` runs the quick mode on its build.
    pub build: String,
    pub seconds: f64,
    pub repetitions: usize,
    pub machine: Machine,
    pub agentd_path: String,
    pub doctor: String,
    pub tools: Vec<ToolInfo>,
    pub workloads: Vec<WorkloadResult>,
    /// The getpid loop outside any run while one empty program sits on
    /// `raw_syscalls:sys_exit`: the floor under any such program.
    pub floor: FloorResult,
    pub audit: crate::bench_audit::Results,
    /// The daemon's memory; absent from older results and where no daemon runs.
    #[serde(default)]
    pub daemon_memory: Option<crate::bench_daemon::Results>,
}

#[derive(Serialize, Deserialize)]
pub struct FloorResult {
    pub bare_ns: Stat,
    pub with_empty_program_ns: Stat,
    pub ratio_median: f64,
}

/// Unit of a workload key's samples, for tables.
fn unit_of(w: &WorkloadResult) -> Unit {
    match w.unit.as_str() {
        "µs" => Unit::Us,
        "ms" => Unit::Ms,
        _ => Unit::Ns,
    }
}

pub fn markdown(r: &Results) -> String {
    let mut md = format!(
        "# agentd benchmarks\n\n\
         {} run of {}, {} build, {:.0} s, {} interleaved repetitions (tools interleaved \
         within each, in an order that rotates every repetition).\n\n\
         - machine: {} cores ({}), {:.0} GiB, {}; kernel {}\n\
         - load average at start / end: {} / {}\n\
         - agentd path measured: {}\n\n\
         Ratios are to bare **in this run**. The machine is shared with other work (builds, \
         tests, other root tests that attach BPF programs), so absolute times are noise; the \
         `env` column (a no-op wrapper) shows how much. Ratios in one run are what count. \
         Every tool runs the same programs with the same arguments on the same files, and \
         no tool gets a warm-up: the first repetition counts for all. After each \
         measurement through the daemon, the next tool waits until the daemon's global \
         programs, which linger for `programs_linger_ms` (2 s) after its last run, are \
         detached: no other tool is measured while they cost the host.\n",
        r.mode,
        r.date,
        r.build,
        r.seconds,
        r.repetitions,
        r.machine.cores,
        r.machine.cpu,
        r.machine.memory_gib,
        r.machine.distribution,
        r.machine.kernel,
        r.machine.loadavg_start,
        r.machine.loadavg_end,
        r.agentd_path,
    );
    md.push_str(
        "\n## Tools and their settings\n\nEach tool gets the confinement of the python-agent \
         preset as far as it can express it; what it cannot is said.\n\n\
         | tool | version | confinement |\n|---|---|---|\n",
    );
    for t in &r.tools {
        let settings = match &t.skipped {
            Some(why) => format!("**skipped**: {why}"),
            None => t.settings.clone(),
        };
        md.push_str(&format!("| {} | {} | {} |\n", t.name, t.version, settings));
    }
    md.push_str(&format!(
        "\n## Ratios to bare (median of {} repetitions)\n\n![ratios](ratios.png)\n\n{}",
        r.repetitions,
        ratio_table(r)
    ));
    for (section, heading, note) in [
        (
            "inside",
            "Workloads inside each tool",
            "Each loop times itself (`agentd-benchprog`, the mix script), so the tool's \
             start-up is not in these figures. Per operation; CPU is user + system time of \
             the loop's process (and its children), which does not count waiting for a CPU.",
        ),
        (
            "outside",
            "What a run costs processes outside it",
            "The loop runs bare, outside any run, while the given number of runs of each \
             tool sleep (`TOOL /usr/bin/sleep 3600`, each started and confined before the \
             loop). bare: nothing else running. This is the cost to every other process on \
             the host.",
        ),
    ] {
        md.push_str(&format!("\n## {heading}\n\n{note}\n\n"));
        md.push_str("| workload | tool | min | median | ratio (median) | ratio (min) | CPU median | CPU ratio | samples |\n|---|---|---|---|---|---|---|---|---|\n");
        for w in r.workloads.iter().filter(|w| w.section == section) {
            let u = unit_of(w);
            for c in &w.cells {
                let cpu = c.cpu_ns.as_ref();
                md.push_str(&format!(
                    "| {} | {} | {:.2} {} | {:.2} {} | {:.2} | {:.2} | {} | {} | {} |\n",
                    w.title,
                    c.tool,
                    u.scale(c.wall_ns.min),
                    u.name(),
                    u.scale(c.wall_ns.median),
                    u.name(),
                    c.ratio_median,
                    c.ratio_min,
                    cpu.map_or("".into(), |s| format!(
                        "{:.2} {}",
                        u.scale(s.median),
                        u.name()
                    )),
                    c.cpu_ratio_median.map_or("".into(), |x| format!("{x:.2}")),
                    c.wall_ns
                        .samples
                        .iter()
                        .map(|x| format!("{:.2}", u.scale(*x)))
                        .collect::<Vec<_>>()
                        .join(", "),
                ));
            }
        }
        if section == "outside" {
            let f = &r.floor;
            md.push_str(&format!(
                "\nThe floor: the same getpid loop, outside any run, while one **empty** program \
                 (`r0 = 0; exit`) is attached to `raw_syscalls:sys_exit`: {:.1} ns against \
                 {:.1} ns with nothing attached (median of pairs, {:.2}×). Any program on that \
                 tracepoint sets SYSCALL_WORK_SYSCALL_TRACEPOINT on every task of the host, so \
                 every syscall of every process takes the slow path, and no raw-syscall \
                 program, agentd's or another's, can cost the host less. On this kernel (no \
                 BPF LSM, no kprobes) agentd's fallback needs one `tp_btf/sys_exit` program \
                 per run: that, plus its seccomp filter for the run's own syscalls, is what \
                 bounds agentd's getpid figures here.\n",
                f.with_empty_program_ns.median, f.bare_ns.median, f.ratio_median
            ));
        }
    }
    for w in r.workloads.iter().filter(|w| w.section == "launch") {
        let u = unit_of(w);
        md.push_str(&format!(
            "\n## Launch latency: {}\n\n![launch latency](launch.png)\n\n\
             Spawn to exit of the tool running /usr/bin/true, measured from outside; every \
             launch counts in the percentiles. Within a repetition each tool's launches \
             follow one another: the daemon's first one attaches its global programs, the \
             next ones find them lingering, as back-to-back launches do.\n\n\
             | tool | p50 | p99 | min | ratio p50 | ratio p99 | launches |\n|---|---|---|---|---|---|---|\n",
            w.title
        ));
        let (b50, b99) = (
            w.cells[0].p50_ns.unwrap_or(f64::NAN),
            w.cells[0].p99_ns.unwrap_or(f64::NAN),
        );
        for c in &w.cells {
            let (p50, p99) = (c.p50_ns.unwrap_or(f64::NAN), c.p99_ns.unwrap_or(f64::NAN));
            md.push_str(&format!(
                "| {} | {:.2} {u} | {:.2} {u} | {:.2} {u} | {:.1} | {:.1} | {} |\n",
                c.tool,
                u.scale(p50),
                u.scale(p99),
                u.scale(c.wall_ns.min),
                p50 / b50,
                p99 / b99,
                c.wall_ns.samples.len(),
                u = u.name(),
            ));
        }
    }
    md.push_str(&crate::bench_audit::markdown(&r.audit));
    if let Some(d) = &r.daemon_memory {
        md.push_str(&crate::bench_daemon::markdown(d));
    }
    md.push_str(&format!(
        "\n## agentd doctor\n\n```\n{}\n```\n\nThe full data, every sample included: \
         results.json.\n",
        r.doctor.trim_end()
    ));
    md
}

/// One row per workload, one column per tool: the median ratio to bare (launch: p50).
pub fn ratio_table(r: &Results) -> String {
    let tools: Vec<&str> = r
        .workloads
        .first()
        .map(|w| w.cells.iter().map(|c| c.tool.as_str()).collect())
        .unwrap_or_default();
    let mut md = format!(
        "| workload | {} |\n|---|{}\n",
        tools.join(" | "),
        "---|".repeat(tools.len())
    );
    for w in &r.workloads {
        let ratios: Vec<String> = w
            .cells
            .iter()
            .map(|c| match (c.p50_ns, w.cells[0].p50_ns) {
                (Some(p), Some(b)) => format!("{:.2}", p / b),
                _ => format!("{:.2}", c.ratio_median),
            })
            .collect();
        md.push_str(&format!("| {} | {} |\n", w.title, ratios.join(" | ")));
    }
    md
}

/// Writes results.json and results.md into `dir`.
pub fn write(dir: &Path, r: &Results) -> Result<(), String> {
    let json = serde_json::to_string_pretty(r).map_err(|e| format!("results.json: {e}"))?;
    for (name, text) in [("results.json", json), ("results.md", markdown(r))] {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))?;
    }
    Ok(())
}

/// What `cargo xtask test` asks of a quick run: the files exist, and every workload has
/// a cell for every tool that was not skipped, with one finite, positive sample per
/// repetition. Not performance: ratios on a shared machine are noise at these counts.
pub fn check(dir: &Path, r: &Results, tools: &[&str]) -> Result<(), String> {
    let mut missing = Vec::new();
    for f in ["results.json", "results.md", "ratios.png", "launch.png"] {
        if std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0) == 0 {
            missing.push(format!("{f} was not written"));
        }
    }
    for w in &r.workloads {
        for t in tools {
            match w.cells.iter().find(|c| c.tool == *t) {
                None => missing.push(format!("{} has no {t} cell", w.key)),
                Some(c) => {
                    let s = &c.wall_ns.samples;
                    if s.len() < r.repetitions || s.iter().any(|x| !x.is_finite() || *x <= 0.0) {
                        missing.push(format!("{} / {t}: samples {s:?}", w.key));
                    }
                }
            }
        }
    }
    let a = &r.audit;
    if !(a.append_rate.median > 0.0 && a.verify_mbs.median > 0.0) {
        missing.push("audit: no append or verify rate".into());
    }
    if !a.flood.every_event_accounted {
        missing.push("audit flood: written + dropped differs from what the kernel denied".into());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("bench --quick: {}", missing.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 99.0), 5.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert!(percentile(&[], 50.0).is_nan());
        let s = Stat::of(&v);
        assert_eq!((s.min, s.median), (1.0, 3.0));
        assert_eq!(s.shown(1), "5.0, 1.0, 4.0, 2.0, 3.0");
    }
}
