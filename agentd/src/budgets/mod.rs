//! Budget accounting and the graduated response: every tick agentd reads what the run
//! has used (cgroup files, the eBPF counters, the clock), fires the `on_exceed` steps
//! the use has gone past (warn → freeze → kill), and audits what the kernel enforced by
//! itself (OOM kills, forks refused at the pids limit).
//!
//! Which figure feeds which budget:
//!
//! | budget | figure |
//! |---|---|
//! | `wall_time` | time since the command was started |
//! | `cpu_time` | `cpuacct.usage` (v1) / `cpu.stat` `usage_usec` (v2) |
//! | `syscalls`, `execs`, `net_*`, `fs_write_bytes` | the run's `BUDGET_RUNS` / `BUDGET_SYSCALLS` entries |
//! | `memory`, `memory_high`, `pids`, `cpu_quota` | enforced by the kernel; the table shows the use |
//!
//! Each step fires once, in order. Kill steps of counter budgets are also written into
//! the kernel map, so the eBPF side stops the offending process at the threshold itself
//! (within one syscall batch) rather than a tick later: for an absolute budget on the
//! counter, for a rate form (`execs: 100/1h`) on a sliding window of eight buckets kept in
//! the map (`agentd_common::budget::RateWindow`). agentd keeps its own sliding window over
//! the sampled counters for the warn and freeze steps, the table and the record.

mod control;
pub mod history;
pub mod sockets;
mod table;
mod window;

use std::time::{Duration, Instant};

use agentd_common::budget::{
    BudgetCounters, RateWindow, WINDOW_EXECS, WINDOW_FS_WRITE, WINDOW_NET_EGRESS,
    WINDOW_NET_INGRESS, WINDOW_SYSCALLS,
};
use std::collections::BTreeMap;

use crate::audit::event::{
    self, AbortSockets, BudgetFigures, BudgetFreeze, BudgetKill, BudgetResume, BudgetStep,
    BudgetWarn, ForkRefused, OomKill, SocketsAborted,
};
use crate::audit::{Decision, Entry};
use crate::layers::bpf::{BudgetCounterMaps, KernelCounts};
use crate::layers::cgroup::{RunCgroups, Usage};
use crate::layers::name;
use crate::policy::{show, Action, Budget, BudgetKey, Policy, Step, Unit};

pub use control::{run_is_live, signal_run, PidFile, RESUME_SIGNAL, STOP_SIGNAL};
use history::History;
use window::SlidingWindow;

/// How often the counters are sampled and the steps checked.
pub const TICK: Duration = Duration::from_millis(20);

/// Refused forks are audited at most this often (with the count since the last record).
const FORK_REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Something the engine did or saw, for the caller to audit and print.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The `budget` record. Its layer: `cgroup` for what the kernel's controllers did,
    /// `bpf` for kills the eBPF side made at its threshold, else `agentd`.
    pub entry: Entry,
    /// The line for agentd's stderr (without the `agentd: ` prefix).
    pub line: String,
    /// Set when the run was killed: the budget that did it.
    pub killed_by: Option<&'static str>,
}

/// How far a run's budgets have gone (kept in the daemon's state file).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Budget name, index of its next step, peak so far.
    pub next_steps: Vec<(String, usize, u64)>,
    /// The budget whose step froze the run.
    pub frozen_by: Option<String>,
}

/// One budget being tracked.
#[derive(Debug)]
struct Tracked {
    budget: Budget,
    steps: Vec<Step>,
    signal: Option<i32>,
    /// Index of the next step to fire.
    next: usize,
    used: u64,
    peak: u64,
    window: Option<SlidingWindow>,
    /// Per-interval growth of a counter budget, for replaying other rate forms.
    history: Option<History>,
}

/// The run's budgets, their use and the state of their responses.
pub struct Budgets {
    tracked: Vec<Tracked>,
    started: Instant,
    counters: Option<BudgetCounterMaps>,
    kernel: KernelCounts,
    usage: Usage,
    seen_oom_kills: u64,
    seen_pids_max_hits: u64,
    pids_peak: u64,
    last_tick: Instant,
    /// Set once a network budget killed the run: its TCP sockets are aborted.
    net_killed: bool,
    last_fork_report: Option<Instant>,
    /// The budget whose step froze the run, while it is frozen.
    frozen_by: Option<&'static str>,
    run_id: String,
}

impl Budgets {
    pub fn new(policy: &Policy, run_id: &str) -> Self {
        let now = Instant::now();
        let tracked = policy
            .budgets
            .items
            .iter()
            .map(|b| Tracked {
                budget: b.clone(),
                steps: if b.key.kernel_enforced() {
                    Vec::new()
                } else {
                    policy.budgets.steps(b)
                },
                signal: policy.budgets.signal(b),
                next: 0,
                used: 0,
                peak: 0,
                window: b.window.map(|w| SlidingWindow::new(w, now)),
                history: b.key.allows_rate().then(History::default),
            })
            .collect();
        Self {
            tracked,
            started: now,
            last_tick: now,
            net_killed: false,
            last_fork_report: None,
            counters: None,
            kernel: KernelCounts::default(),
            usage: Usage::default(),
            seen_oom_kills: 0,
            seen_pids_max_hits: 0,
            pids_peak: 0,
            frozen_by: None,
            run_id: run_id.to_owned(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty()
    }

    /// Kill thresholds for the kernel side: counter budgets with a kill step (on the
    /// counter, or on a window for a rate form).
    pub fn kernel_thresholds(&self) -> BudgetCounters {
        let mut c = BudgetCounters::NEW;
        for t in &self.tracked {
            let Some(kill) = t.steps.iter().find(|s| s.action == Action::Kill) else {
                continue;
            };
            let at = kill.threshold(t.budget.limit);
            if let Some(w) = t.budget.window {
                if let Some(kind) = window_kind(t.budget.key) {
                    let ns = u64::try_from(w.as_nanos()).unwrap_or(u64::MAX);
                    c.windows[kind] = RateWindow::new(ns, at);
                }
                continue;
            }
            match t.budget.key {
                BudgetKey::Syscalls => c.kill_syscalls = at,
                BudgetKey::Execs => c.kill_execs = at,
                BudgetKey::NetEgressBytes => c.drop_net_egress = at,
                BudgetKey::NetIngressBytes => c.drop_net_ingress = at,
                BudgetKey::FsWriteBytes => c.kill_fs_write = at,
                _ => {}
            }
        }
        c
    }

    /// Starts reading the kernel counters from `maps`.
    pub fn attach(&mut self, maps: BudgetCounterMaps) {
        self.counters = Some(maps);
    }

    /// Unregisters the run from the kernel counters (call once the run is over).
    pub fn release(&mut self) {
        if let Some(mut maps) = self.counters.take() {
            maps.remove();
        }
    }

    /// Starts the clock (call when the command starts).
    pub fn start(&mut self) {
        self.started = Instant::now();
        for t in &mut self.tracked {
            if let Some(w) = t.budget.window {
                t.window = Some(SlidingWindow::new(w, self.started));
            }
        }
    }

    /// Whether a tick is due. The supervise loop checks this after every wake-up as well
    /// as on its timer: a busy event stream can keep the loop from ever parking, and then
    /// the timer alone would never fire.
    pub fn due(&self) -> bool {
        !self.tracked.is_empty() && self.last_tick.elapsed() >= TICK
    }

    /// Samples every figure, audits what the kernel enforced, and fires due steps.
    pub fn tick(&mut self, cgroups: &RunCgroups) -> Vec<Notice> {
        self.last_tick = Instant::now();
        let mut notices = self.sample(cgroups, false);
        let now = Instant::now();
        for i in 0..self.tracked.len() {
            if let Some(n) = self.advance(i, now, cgroups) {
                let killed = n.killed_by.is_some();
                notices.push(n);
                if killed {
                    break;
                }
            }
        }
        notices
    }

    /// The last sample after the command ended: kernel events, and the steps of the
    /// counters the eBPF side enforces (it may have killed the command before a tick saw
    /// the counter go past the threshold). Time budgets fire nothing after the end.
    pub fn finish(&mut self, cgroups: &RunCgroups) -> Vec<Notice> {
        let mut notices = self.sample(cgroups, true);
        if self.net_killed {
            // The processes are gone, but the sockets they closed are orphans that keep
            // sending what was queued. Abort them while the kernel still drops the run's
            // data (its resets, which carry none, still leave), and only then stop
            // counting: released first, an orphan flushed its queue to the peer.
            let aborted = self.abort_sockets(cgroups);
            self.release();
            let line = match &aborted {
                SocketsAborted::Count(n) => {
                    format!("budget: aborted the run's tcp connections ({n})")
                }
                SocketsAborted::Error(e) => {
                    format!("budget: aborted the run's tcp connections (\"{e}\")")
                }
            };
            let abort = AbortSockets {
                tcp_sockets_aborted: aborted,
            };
            notices.push(Notice {
                entry: budget_entry(
                    name::AGENTD,
                    Some(Decision::Kill),
                    event::Budget::AbortSockets(abort),
                ),
                line,
                killed_by: None,
            });
        }
        let now = Instant::now();
        for i in 0..self.tracked.len() {
            let key = self.tracked[i].budget.key;
            if key.counted_in_kernel() {
                notices.extend(self.advance(i, now, cgroups));
            } else if !key.kernel_enforced() {
                let counter = figure(key, &self.kernel, &self.usage, self.started, now);
                let at_ms = now.saturating_duration_since(self.started).as_millis() as u64;
                observe(&mut self.tracked[i], counter, now, at_ms);
            }
        }
        notices
    }

    /// Aborts the run's TCP connections, so data already queued in their send buffers is
    /// not delivered after the kill. Returns the count, or the error, for the record.
    fn abort_sockets(&self, cgroups: &RunCgroups) -> SocketsAborted {
        let r = sockets::abort_tcp_sockets(cgroups.cgroup_id());
        if let Err(e) = &r {
            tracing::warn!("aborting the run's tcp sockets: {e}");
        }
        SocketsAborted::from_result(r)
    }

    /// Thaws a run a freeze step froze (`agentd resume RUN`).
    pub fn resume(&mut self, cgroups: &RunCgroups) -> Notice {
        let by = self.frozen_by.take();
        let thawed = by.is_some() && cgroups.freeze(false).is_ok();
        let resume = BudgetResume {
            budget: by.map(str::to_owned),
            thawed,
        };
        Notice {
            entry: budget_entry(name::AGENTD, None, event::Budget::Resume(resume)),
            line: match by {
                Some(b) => format!("budget: {b}: run {} resumed", self.run_id),
                None => format!("budget: resume: run {} is not frozen", self.run_id),
            },
            killed_by: None,
        }
    }

    /// Reads every figure. Refused forks are reported at most once per
    /// [`FORK_REFUSAL_REPORT_EVERY`] (a fork bomb would otherwise write a record per tick),
    /// and always when `flush` is set.
    fn sample(&mut self, cgroups: &RunCgroups, flush: bool) -> Vec<Notice> {
        let usage = cgroups.usage();
        // Keep the last figures of a live run: after the end the files read zero.
        if usage.pids.unwrap_or(0) > 0 || self.usage == Usage::default() {
            self.usage = usage;
        } else {
            self.usage.oom_kills = usage.oom_kills.or(self.usage.oom_kills);
            self.usage.pids_max_hits = usage.pids_max_hits.or(self.usage.pids_max_hits);
            self.usage.cpu_ns = usage.cpu_ns.or(self.usage.cpu_ns);
            self.usage.memory_peak_bytes = usage.memory_peak_bytes.or(self.usage.memory_peak_bytes);
        }
        self.pids_peak = self.pids_peak.max(usage.pids.unwrap_or(0));
        if let Some(maps) = &self.counters {
            match maps.read() {
                Ok(k) => self.kernel = k,
                Err(e) => tracing::warn!("reading budget counters: {e}"),
            }
        }
        let mut notices = Vec::new();
        let oom = usage.oom_kills.unwrap_or(0);
        if oom > self.seen_oom_kills {
            let new = oom - self.seen_oom_kills;
            self.seen_oom_kills = oom;
            let limit = self.limit_of(BudgetKey::Memory);
            let oom_kill = OomKill {
                budget: "memory".into(),
                enforced_by: "kernel".into(),
                limit,
                unit: "bytes".into(),
                oom_kills: oom,
                new_oom_kills: new,
                peak: self.usage.memory_peak_bytes,
            };
            notices.push(Notice {
                entry: budget_entry(
                    name::CGROUP,
                    Some(Decision::Kill),
                    event::Budget::OomKill(oom_kill),
                ),
                line: format!(
                    "budget: memory {}: the kernel OOM-killed {new} process(es)",
                    limit.map_or_else(|| "-".into(), |l| show(Unit::Bytes, l))
                ),
                killed_by: None,
            });
        }
        let hits = usage.pids_max_hits.unwrap_or(0);
        let report_due = flush
            || self
                .last_fork_report
                .is_none_or(|t| t.elapsed() >= FORK_REFUSAL_REPORT_EVERY);
        if hits > self.seen_pids_max_hits && report_due {
            self.last_fork_report = Some(Instant::now());
            let new = hits - self.seen_pids_max_hits;
            self.seen_pids_max_hits = hits;
            let limit = self.limit_of(BudgetKey::Pids);
            let refused = ForkRefused {
                budget: "pids".into(),
                enforced_by: "kernel".into(),
                limit,
                unit: "count".into(),
                errno: "EAGAIN".into(),
                refused_forks: hits,
                new_refused_forks: new,
            };
            notices.push(Notice {
                entry: budget_entry(
                    name::CGROUP,
                    Some(Decision::Deny),
                    event::Budget::ForkRefused(refused),
                ),
                line: format!(
                    "budget: pids {}: the kernel refused {new} fork(s) (EAGAIN)",
                    limit.map_or_else(|| "-".into(), |l| l.to_string())
                ),
                killed_by: None,
            });
        }
        notices
    }

    fn limit_of(&self, key: BudgetKey) -> Option<u64> {
        self.tracked
            .iter()
            .find(|t| t.budget.key == key)
            .map(|t| t.budget.limit)
    }

    /// Updates budget `i` and fires its next step if the use went past it.
    fn advance(&mut self, i: usize, now: Instant, cgroups: &RunCgroups) -> Option<Notice> {
        let counter = {
            let t = &self.tracked[i];
            if t.budget.key.kernel_enforced() {
                return None;
            }
            figure(t.budget.key, &self.kernel, &self.usage, self.started, now)
        };
        let at_ms = now.saturating_duration_since(self.started).as_millis() as u64;
        let t = &mut self.tracked[i];
        let used = observe(t, counter, now, at_ms);
        // The kernel's window saw a rate form past its kill step (a burst between two
        // samples can escape agentd's own window): that step and those before it fire.
        let kernel_fired = t.window.is_some()
            && window_kind(t.budget.key).is_some_and(|k| self.kernel.windows_fired[k]);
        // Fire the highest step already passed; steps it skipped over are reported with it.
        let mut fire = None;
        while let Some(step) = t.steps.get(t.next) {
            let passed = used > step.threshold(t.budget.limit);
            if !passed && !kernel_fired {
                break;
            }
            fire = Some(*step);
            t.next += 1;
        }
        let step = fire?;
        let key = t.budget.key;
        let name = key.name();
        let unit = key.unit();
        let (limit, signal, window) = (t.budget.limit, t.signal, t.budget.window);
        let figures = BudgetStep {
            budget: name.into(),
            step: step.to_string(),
            limit,
            unit: unit_name(unit).into(),
            threshold: step.threshold(limit),
            used,
            window_ms: window.map(|w| w.as_millis() as u64),
            kernel_window_exceeded: window.is_some() && kernel_fired,
        };
        let shown = format!(
            "{name} {}{} exceeded ({} used, step {step})",
            show(unit, limit),
            window.map_or(String::new(), |w| format!(
                "/{}",
                show(Unit::Millis, w.as_millis() as u64)
            )),
            show(unit, used),
        );
        let (decision, budget, line, killed_by) = match step.action {
            Action::Warn => {
                let signalled = signal.map(|sig| signal_members(cgroups, sig));
                let extra = signal.map_or(String::new(), |s| {
                    format!(
                        "; sent {} to {} process(es)",
                        sig_name(s),
                        signalled.unwrap_or(0)
                    )
                });
                let warn = BudgetWarn {
                    step: figures,
                    signal: signal.map(sig_name),
                    processes_signalled: signalled,
                };
                (
                    None,
                    event::Budget::Warn(warn),
                    format!("budget: warning: {shown}{extra}"),
                    None,
                )
            }
            Action::Freeze => {
                let frozen = cgroups.freeze(true);
                let freeze = BudgetFreeze {
                    step: figures,
                    frozen: frozen.is_ok(),
                    error: frozen.err().map(|e| e.to_string()),
                };
                self.frozen_by = Some(name);
                (
                    None,
                    event::Budget::Freeze(freeze),
                    format!(
                        "budget: {shown}; froze the run: `agentd resume {id}` thaws it, `agentd stop {id}` kills it",
                        id = self.run_id
                    ),
                    None,
                )
            }
            Action::Kill => {
                let n = cgroups.kill_all();
                if matches!(key, BudgetKey::NetEgressBytes | BudgetKey::NetIngressBytes) {
                    // The sockets are aborted at the end of the run (see `finish`).
                    self.net_killed = true;
                }
                let call = match key {
                    BudgetKey::FsWriteBytes => self.kernel.fs_write_kill,
                    _ => None,
                };
                let kill = BudgetKill {
                    step: figures,
                    processes_killed: n,
                    call: call.map(|(nr, _)| fs_write_call_name(nr)),
                    call_bytes: call.map(|(_, bytes)| bytes),
                };
                (
                    Some(Decision::Kill),
                    event::Budget::Kill(kill),
                    format!("budget: {shown}; killed {n} process(es)"),
                    Some(name),
                )
            }
        };
        let in_kernel = step.action == Action::Kill && key.counted_in_kernel();
        let layer = if in_kernel { name::BPF } else { name::AGENTD };
        Some(Notice {
            entry: budget_entry(layer, decision, budget),
            line,
            killed_by,
        })
    }

    /// Every budget's figures by name, for the run_end record. Counter budgets also
    /// carry `history` (see [`history`]), so replay can judge rate forms with other
    /// windows.
    pub fn figures(&self) -> BTreeMap<String, BudgetFigures> {
        self.rows()
            .into_iter()
            .zip(&self.tracked)
            .map(|(r, t)| {
                let figures = BudgetFigures {
                    limit: r.limit,
                    window_ms: r.window_ms,
                    unit: r.unit.to_owned(),
                    used: r.used,
                    peak: r.peak,
                    history: t.history.as_ref().map(History::record),
                };
                (r.name.to_owned(), figures)
            })
            .collect()
    }

    /// Time since the command started (for a re-adopted run, since it first started).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Each budget's use now (for `agentd ps`): name, used, limit, unit.
    pub fn uses(&self) -> Vec<(&'static str, u64, u64, &'static str)> {
        self.rows()
            .into_iter()
            .map(|r| (r.name, r.used.unwrap_or(0), r.limit, r.unit))
            .collect()
    }

    /// How far each budget's graduated response has gone, and what froze the run: what
    /// a restarted daemon needs so that no step fires twice.
    pub fn progress(&self) -> Progress {
        Progress {
            next_steps: self
                .tracked
                .iter()
                .map(|t| (t.budget.key.name().to_owned(), t.next, t.peak))
                .collect(),
            frozen_by: self.frozen_by.map(str::to_owned),
        }
    }

    /// Continues a run an earlier daemon supervised: the clock started `elapsed` ago
    /// (the time the daemon was down included) and the steps already fired stay fired.
    pub fn restore(&mut self, progress: &Progress, elapsed: Duration) {
        let now = Instant::now();
        self.started = now.checked_sub(elapsed).unwrap_or(now);
        for t in &mut self.tracked {
            if let Some((_, next, peak)) = progress
                .next_steps
                .iter()
                .find(|(name, _, _)| name == t.budget.key.name())
            {
                t.next = (*next).min(t.steps.len());
                t.peak = *peak;
            }
        }
        self.frozen_by = progress.frozen_by.as_deref().and_then(|f| {
            self.tracked
                .iter()
                .map(|t| t.budget.key.name())
                .find(|n| *n == f)
        });
    }

    /// The table printed on stderr at the end of the run.
    pub fn table(&self) -> String {
        table::render(&self.rows())
    }

    fn rows(&self) -> Vec<table::Row> {
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        self.tracked
            .iter()
            .map(|t| {
                let key = t.budget.key;
                let (used, peak) = match key {
                    BudgetKey::Memory | BudgetKey::MemoryHigh => {
                        (self.usage.memory_bytes, self.usage.memory_peak_bytes)
                    }
                    BudgetKey::Pids => (self.usage.pids, Some(self.pids_peak)),
                    BudgetKey::CpuQuota => {
                        // Average CPU use over the run, in percent of one CPU.
                        let cpu_ms = self.usage.cpu_ns.unwrap_or(0) / 1_000_000;
                        (Some(cpu_ms * 100 / elapsed_ms.max(1)), None)
                    }
                    _ => (Some(t.used), Some(t.peak)),
                };
                table::Row {
                    name: key.name(),
                    unit: unit_name(key.unit()),
                    shown_unit: key.unit(),
                    limit: t.budget.limit,
                    window_ms: t.budget.window.map(|w| w.as_millis() as u64),
                    used,
                    peak,
                }
            })
            .collect()
    }
}

/// A `budget` record.
fn budget_entry(layer: &'static str, decision: Option<Decision>, b: event::Budget) -> Entry {
    Entry {
        layer,
        decision,
        event: b.into(),
    }
}

/// The kernel window of a counter budget's rate form.
fn window_kind(key: BudgetKey) -> Option<usize> {
    match key {
        BudgetKey::Syscalls => Some(WINDOW_SYSCALLS),
        BudgetKey::Execs => Some(WINDOW_EXECS),
        BudgetKey::FsWriteBytes => Some(WINDOW_FS_WRITE),
        BudgetKey::NetEgressBytes => Some(WINDOW_NET_EGRESS),
        BudgetKey::NetIngressBytes => Some(WINDOW_NET_INGRESS),
        _ => None,
    }
}

/// The raw (cumulative) figure of a budget now.
fn figure(key: BudgetKey, k: &KernelCounts, u: &Usage, started: Instant, now: Instant) -> u64 {
    match key {
        BudgetKey::WallTime => now.duration_since(started).as_millis() as u64,
        BudgetKey::CpuTime => u.cpu_ns.unwrap_or(0) / 1_000_000,
        BudgetKey::Syscalls => k.syscalls,
        BudgetKey::Execs => k.execs,
        BudgetKey::NetEgressBytes => k.net_egress_bytes,
        BudgetKey::NetIngressBytes => k.net_ingress_bytes,
        BudgetKey::FsWriteBytes => k.fs_write_bytes,
        BudgetKey::CpuQuota | BudgetKey::Memory | BudgetKey::MemoryHigh | BudgetKey::Pids => 0,
    }
}

/// Feeds a cumulative figure (read `at_ms` after the start) to a budget; returns the use
/// its steps are checked against (the windowed use for a rate form).
fn observe(t: &mut Tracked, counter: u64, now: Instant, at_ms: u64) -> u64 {
    if let Some(h) = &mut t.history {
        h.observe(at_ms, counter);
    }
    let used = match &mut t.window {
        Some(w) => {
            let u = w.observe(now, counter);
            t.peak = w.peak();
            u
        }
        None => {
            t.peak = t.peak.max(counter);
            counter
        }
    };
    // For a rate form "used" in the table is the total; steps see the window.
    t.used = counter;
    used
}

fn unit_name(unit: Unit) -> &'static str {
    match unit {
        Unit::Millis => "ms",
        Unit::Bytes => "bytes",
        Unit::Count => "count",
        Unit::Percent => "percent",
    }
}

/// Sends `sig` to every process of the run (all started by this run).
fn signal_members(cgroups: &RunCgroups, sig: i32) -> usize {
    let Ok(sig) = nix::sys::signal::Signal::try_from(sig) else {
        return 0;
    };
    cgroups
        .pids()
        .into_iter()
        .filter_map(|p| i32::try_from(p).ok())
        .filter(|&p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig).is_ok())
        .count()
}

fn sig_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("SIG{sig}"))
}

/// The name of a syscall `fs_write_bytes` counts (x86-64 numbers).
fn fs_write_call_name(nr: u64) -> String {
    let name = match nr {
        1 => "write",
        18 => "pwrite64",
        20 => "writev",
        40 => "sendfile",
        76 => "truncate",
        77 => "ftruncate",
        275 => "splice",
        276 => "tee",
        278 => "vmsplice",
        285 => "fallocate",
        296 => "pwritev",
        326 => "copy_file_range",
        328 => "pwritev2",
        _ => return format!("syscall {nr}"),
    };
    name.to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use agentd_common::budget::BUDGET_NEVER;

    use super::*;
    use crate::policy::{parse_str, LoadOptions};

    fn budgets(section: &str) -> Budgets {
        let opts = LoadOptions {
            workspace: std::env::temp_dir(),
            home: std::env::temp_dir(),
        };
        let policy = parse_str(
            &format!("version: 1\nname: t\nbudgets:\n{section}"),
            "<test>",
            &opts,
        )
        .unwrap();
        Budgets::new(&policy, "r1")
    }

    #[test]
    fn only_absolute_counters_with_a_kill_step_get_a_kernel_threshold() {
        let b = budgets(
            "  on_exceed: [warn@50%, kill@120%]\n  execs: 100\n  syscalls: 5000/1s\n  fs_write_bytes: {limit: 1MiB, on_exceed: [freeze@100%]}\n  net_egress_bytes: {limit: 1000, on_exceed: [kill]}\n  wall_time: 1s\n",
        );
        let t = b.kernel_thresholds();
        assert_eq!(t.kill_execs, 120);
        assert_eq!(
            t.kill_syscalls, BUDGET_NEVER,
            "a rate form has no threshold on the total"
        );
        let w = t.windows[WINDOW_SYSCALLS];
        assert_eq!(
            (w.bucket_ns, w.limit),
            (125_000_000, 6000),
            "1 s / 8, 120% of 5000"
        );
        assert_eq!(t.windows[WINDOW_EXECS].bucket_ns, 0, "execs is absolute");
        assert_eq!(t.kill_fs_write, BUDGET_NEVER, "no kill step");
        assert_eq!(t.drop_net_egress, 1000);
        assert_eq!(t.drop_net_ingress, BUDGET_NEVER);
    }

    #[test]
    fn kernel_enforced_budgets_have_no_steps() {
        let b = budgets("  memory: 1GiB\n  pids: 5\n  execs: 3\n");
        let steps: Vec<usize> = b.tracked.iter().map(|t| t.steps.len()).collect();
        assert_eq!(steps, vec![0, 0, 1]);
        assert!(!b.is_empty());
    }

    #[test]
    fn a_rate_budget_sees_its_window_and_reports_the_total() {
        let b = budgets("  execs: 10/1s\n");
        let mut t = b.tracked.into_iter().next().unwrap();
        let t0 = b.started;
        assert_eq!(observe(&mut t, 8, t0 + Duration::from_millis(500), 500), 8);
        // 1.6 s: the window starts at 0.6 s, after the 0.5 s sample (8).
        assert_eq!(
            observe(&mut t, 12, t0 + Duration::from_millis(1600), 1600),
            4
        );
        assert_eq!((t.used, t.peak), (12, 8));
        let h = t.history.unwrap().record();
        assert_eq!(h.interval_ms, 100);
        assert_eq!(
            h.counts,
            [0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]
        );
    }
}
