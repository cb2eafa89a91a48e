//! Per-run cgroups behind one interface, with v1, v2 and hybrid backends.
//!
//! The v2 leaf is the run's identity for BPF (its inode number is what
//! `bpf_get_current_cgroup_id()` returns). Resource limits go wherever the
//! controller lives: v2 on a pure-v2 host, v1 on a hybrid host.
//!
//! Machine-safety rule: every cgroup is created as a child of the calling
//! process's *own* cgroup in that hierarchy (read from /proc/self/cgroup), and
//! only what was created here is ever removed.

pub mod gc;
mod hybrid;
mod layout;
mod leaf;
mod stats;
mod v1;
mod v2;

pub use hybrid::HybridManager;
pub use layout::{CgroupLayout, CgroupMode};
pub use leaf::RunCgroups;
pub use stats::Usage;
pub use v1::V1Manager;
pub use v2::V2Manager;

use std::path::PathBuf;

/// Limits the kernel enforces by itself through cgroup controllers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// Soft limit in bytes (v1 `memory.soft_limit_in_bytes`, v2 `memory.high`).
    pub memory_high_bytes: Option<u64>,
    /// CPU bandwidth in percent of one CPU (v1 `cpu.cfs_quota_us`, v2 `cpu.max`).
    pub cpu_quota_percent: Option<u64>,
}

/// The CFS period agentd uses for `cpu_quota` (the kernel's default, 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The CFS quota in microseconds per [`CPU_PERIOD_US`] for `percent` of one CPU.
pub fn cpu_quota_us(percent: u64) -> u64 {
    (CPU_PERIOD_US.saturating_mul(percent) / 100).max(1000)
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to write {value} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup {path} still has processes after kill: {pids:?}")]
    NotEmpty { path: PathBuf, pids: Vec<u32> },
    #[error("no cgroup2 hierarchy is mounted; agentd needs one to identify a run in BPF")]
    NoV2,
    #[error("controller `{controller}` is not available ({why})")]
    MissingController {
        controller: &'static str,
        why: String,
    },
    #[error("cannot find this process's own {hierarchy} cgroup in /proc/self/cgroup")]
    NoOwnCgroup { hierarchy: String },
}

/// Creates the cgroups of one run. Chosen once from the probed [`CgroupLayout`].
pub trait CgroupManager: Send + Sync {
    /// Which backend this is, for doctor and the plan.
    fn mode(&self) -> CgroupMode;
    /// Creates the run's leaves and applies `limits`. On error nothing created is left behind.
    fn create_run(&self, run_id: &str, limits: &Limits) -> Result<RunCgroups, CgroupError>;
}

/// Picks the backend for this host.
pub fn manager_for(layout: &CgroupLayout) -> Result<Box<dyn CgroupManager>, CgroupError> {
    match layout.mode {
        CgroupMode::V2 => Ok(Box::new(V2Manager::from_layout(layout)?)),
        CgroupMode::Hybrid => Ok(Box::new(HybridManager::from_layout(layout)?)),
        CgroupMode::V1 => Err(CgroupError::NoV2),
    }
}

/// The directory name of a run's leaf in every hierarchy.
pub fn leaf_name(run_id: &str) -> String {
    format!("{LEAF_PREFIX}{run_id}")
}

/// Every run leaf's name starts with this.
pub const LEAF_PREFIX: &str = "agentd-";
