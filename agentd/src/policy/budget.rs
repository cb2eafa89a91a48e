//! The `budgets` section: what a run may consume, and how agentd responds in steps
//! (`on_exceed: [warn@80%, freeze@100%, kill@120%]`) when it goes past a limit.

use std::time::Duration;

use super::model::Span;

/// Every budget key the policy accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BudgetKey {
    WallTime,
    CpuTime,
    CpuQuota,
    Memory,
    MemoryHigh,
    Pids,
    Syscalls,
    Execs,
    NetEgressBytes,
    NetIngressBytes,
    FsWriteBytes,
}

/// What a budget's number measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds (written `500ms`, `30s`, `10m`, `2h`).
    Millis,
    /// Bytes (written `4096`, `512KiB`, `1MiB`, `2GiB`).
    Bytes,
    /// A plain count.
    Count,
    /// Percent of one CPU (written `50%`).
    Percent,
}

impl BudgetKey {
    pub const ALL: [BudgetKey; 11] = [
        BudgetKey::WallTime,
        BudgetKey::CpuTime,
        BudgetKey::CpuQuota,
        BudgetKey::Memory,
        BudgetKey::MemoryHigh,
        BudgetKey::Pids,
        BudgetKey::Syscalls,
        BudgetKey::Execs,
        BudgetKey::NetEgressBytes,
        BudgetKey::NetIngressBytes,
        BudgetKey::FsWriteBytes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BudgetKey::WallTime => "wall_time",
            BudgetKey::CpuTime => "cpu_time",
            BudgetKey::CpuQuota => "cpu_quota",
            BudgetKey::Memory => "memory",
            BudgetKey::MemoryHigh => "memory_high",
            BudgetKey::Pids => "pids",
            BudgetKey::Syscalls => "syscalls",
            BudgetKey::Execs => "execs",
            BudgetKey::NetEgressBytes => "net_egress_bytes",
            BudgetKey::NetIngressBytes => "net_ingress_bytes",
            BudgetKey::FsWriteBytes => "fs_write_bytes",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn unit(self) -> Unit {
        match self {
            BudgetKey::WallTime | BudgetKey::CpuTime => Unit::Millis,
            BudgetKey::CpuQuota => Unit::Percent,
            BudgetKey::Memory
            | BudgetKey::MemoryHigh
            | BudgetKey::NetEgressBytes
            | BudgetKey::NetIngressBytes
            | BudgetKey::FsWriteBytes => Unit::Bytes,
            BudgetKey::Pids | BudgetKey::Syscalls | BudgetKey::Execs => Unit::Count,
        }
    }

    /// Limits the kernel applies by itself (a cgroup controller setting). They take no
    /// `on_exceed`: the kernel's own response (OOM kill, failed fork, throttling) is the
    /// response, and agentd audits it.
    pub fn kernel_enforced(self) -> bool {
        matches!(
            self,
            BudgetKey::CpuQuota | BudgetKey::Memory | BudgetKey::MemoryHigh | BudgetKey::Pids
        )
    }

    /// Counters the eBPF side keeps (and stops the run at, for a kill step).
    pub fn counted_in_kernel(self) -> bool {
        matches!(
            self,
            BudgetKey::Syscalls
                | BudgetKey::Execs
                | BudgetKey::NetEgressBytes
                | BudgetKey::NetIngressBytes
                | BudgetKey::FsWriteBytes
        )
    }

    /// Counters that accept a rate form such as `100/1h`.
    pub fn allows_rate(self) -> bool {
        matches!(
            self,
            BudgetKey::Syscalls
                | BudgetKey::Execs
                | BudgetKey::NetEgressBytes
                | BudgetKey::NetIngressBytes
                | BudgetKey::FsWriteBytes
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// An audit record, a line on agentd's stderr and optionally a signal to the run.
    Warn,
    /// Freeze every process of the run until `agentd resume RUN`.
    Freeze,
    /// Kill every process of the run; agentd exits 137.
    Kill,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Warn, Action::Freeze, Action::Kill];

    pub fn name(self) -> &'static str {
        match self {
            Action::Warn => "warn",
            Action::Freeze => "freeze",
            Action::Kill => "kill",
        }
    }
}

/// One step of a graduated response: `action@percent%` of the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    /// Fires once the use goes past `limit * percent / 100`.
    pub percent: u32,
}

impl Step {
    /// The use past which this step fires.
    pub fn threshold(self, limit: u64) -> u64 {
        let t = u128::from(limit) * u128::from(self.percent) / 100;
        u64::try_from(t).unwrap_or(u64::MAX)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}%", self.action.name(), self.percent)
    }
}

/// The response when neither the budget nor the section names one.
pub const DEFAULT_STEPS: [Step; 1] = [Step {
    action: Action::Kill,
    percent: 100,
}];

/// One budget as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub key: BudgetKey,
    /// In the key's [`Unit`]: milliseconds, bytes, a count or percent.
    pub limit: u64,
    /// `Some` for a rate form (`100/1h`): the limit applies to any sliding window this long.
    pub window: Option<Duration>,
    /// The budget's own steps; `None` takes the section default.
    pub on_exceed: Option<Vec<Step>>,
    /// Signal sent to every process of the run by `warn` steps (e.g. SIGUSR1).
    pub signal: Option<i32>,
    pub span: Span,
}

#[derive(Debug, Clone, Default)]
pub struct Budgets {
    /// Every budget, in policy order.
    pub items: Vec<Budget>,
    /// `budgets.on_exceed`: the default response of budgets that name none.
    pub on_exceed: Option<Vec<Step>>,
    /// `budgets.signal`: the default warn signal.
    pub signal: Option<i32>,
    /// Shorthands of the kernel-enforced and timer entries of `items`.
    pub wall_time: Option<Duration>,
    /// Bytes.
    pub memory: Option<u64>,
    pub pids: Option<u64>,
}

impl Budgets {
    pub fn get(&self, key: BudgetKey) -> Option<&Budget> {
        self.items.iter().find(|b| b.key == key)
    }

    /// The steps that apply to `budget` (its own, else the section's, else kill@100%).
    pub fn steps(&self, budget: &Budget) -> Vec<Step> {
        budget
            .on_exceed
            .clone()
            .or_else(|| self.on_exceed.clone())
            .unwrap_or_else(|| DEFAULT_STEPS.to_vec())
    }

    /// The warn signal of `budget` (its own, else the section's).
    pub fn signal(&self, budget: &Budget) -> Option<i32> {
        budget.signal.or(self.signal)
    }
}

/// A limit shown in its unit, e.g. `1MiB`, `10s`, `50%`, `100`.
pub fn show(unit: Unit, value: u64) -> String {
    match unit {
        Unit::Millis if value.is_multiple_of(1000) => format!("{}s", value / 1000),
        Unit::Millis => format!("{value}ms"),
        Unit::Bytes => show_bytes(value),
        Unit::Count => value.to_string(),
        Unit::Percent => format!("{value}%"),
    }
}

fn show_bytes(v: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if v >= 1 << shift && v.is_multiple_of(1 << shift) {
            return format!("{}{unit}", v >> shift);
        }
    }
    if v >= 1 << 20 {
        return format!("{:.1}MiB", v as f64 / f64::from(1u32 << 20));
    }
    format!("{v}B")
}
