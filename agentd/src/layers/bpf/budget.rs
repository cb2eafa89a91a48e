//! The budget counters and maps (see `agentd-ebpf/src/budget.rs`): the `syscalls` and
//! `fs_write_bytes` counters of the `tp_btf/sys_exit` program and the `cgroup_skb`
//! programs are turned on only when the Plan asks for them, since the `sys_exit`
//! program runs on every syscall of the host.

use std::os::fd::AsFd;
use std::path::Path;

use agentd_common::budget::{names, BudgetCounters, WINDOW_KINDS};
use agentd_common::syscalls::{HOOK_FS_WRITE_BYTES, HOOK_SYSCALL_COUNT};
use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};

use super::{map_error, program, take_map, BpfError, BpfRuntime};
use crate::plan::BudgetPrograms;

/// ELF sections, for messages.
const SKB_EGRESS: &str = "cgroup_skb/egress";
const SKB_INGRESS: &str = "cgroup_skb/ingress";

/// What the kernel counted for one run so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounts {
    pub syscalls: u64,
    pub execs: u64,
    pub net_egress_bytes: u64,
    pub net_ingress_bytes: u64,
    pub fs_write_bytes: u64,
    pub net_dropped_packets: u64,
    /// Which rate windows (`WINDOW_*` index) the kernel found past their limit.
    pub windows_fired: [bool; WINDOW_KINDS],
}

/// The budget maps of one run (registered under its cgroup id).
pub struct BudgetCounterMaps {
    cgroup_id: u64,
    runs: HashMap<MapData, u64, BudgetCounters>,
    /// The syscall slot's cgroup-id table and counters.
    syscalls: Option<(Array<MapData, u64>, PerCpuArray<MapData, u64>)>,
}

/// The slot this run's syscall count uses (each agentd run loads its own object).
const SYSCALL_SLOT: u32 = 0;

impl BpfRuntime {
    /// Turns on the budget counters in `programs`, and registers the run
    /// `cgroup_id` (directory `cgroup_dir`) with `thresholds` (counters must be zero).
    /// The exec count needs no program of its own: the exec tracker keeps it.
    pub fn start_budgets(
        &mut self,
        programs: BudgetPrograms,
        cgroup_id: u64,
        cgroup_dir: &Path,
        thresholds: BudgetCounters,
    ) -> Result<BudgetCounterMaps, BpfError> {
        let mut runs: HashMap<MapData, u64, BudgetCounters> =
            HashMap::try_from(take_map(&mut self.ebpf, names::MAP_BUDGET_RUNS)?)
                .map_err(|error| map_error("open", names::MAP_BUDGET_RUNS, error))?;
        runs.insert(cgroup_id, thresholds, 0).map_err(|error| {
            map_error(
                format!("insert cgroup {cgroup_id} into"),
                names::MAP_BUDGET_RUNS,
                error,
            )
        })?;
        let mut syscalls = None;
        if programs.syscall_counter {
            let mut ids: Array<MapData, u64> =
                Array::try_from(take_map(&mut self.ebpf, names::MAP_BUDGET_SYSCALL_CGROUPS)?)
                    .map_err(|error| map_error("open", names::MAP_BUDGET_SYSCALL_CGROUPS, error))?;
            let mut counts: PerCpuArray<MapData, u64> =
                PerCpuArray::try_from(take_map(&mut self.ebpf, names::MAP_BUDGET_SYSCALLS)?)
                    .map_err(|error| map_error("open", names::MAP_BUDGET_SYSCALLS, error))?;
            let cpus = aya::util::nr_cpus()
                .map_err(|(path, e)| BpfError::Budget(format!("read {path}: {e}")))?;
            let zeros = PerCpuValues::try_from(vec![0u64; cpus])
                .map_err(|e| BpfError::Budget(format!("per-cpu values for {cpus} cpus: {e}")))?;
            counts.set(SYSCALL_SLOT, zeros, 0).map_err(|error| {
                map_error(
                    format!("zero slot {SYSCALL_SLOT} of"),
                    names::MAP_BUDGET_SYSCALLS,
                    error,
                )
            })?;
            ids.set(SYSCALL_SLOT, cgroup_id, 0).map_err(|error| {
                map_error(
                    format!("put cgroup {cgroup_id} in slot {SYSCALL_SLOT} of"),
                    names::MAP_BUDGET_SYSCALL_CGROUPS,
                    error,
                )
            })?;
            syscalls = Some((ids, counts));
        }
        if programs.syscall_counter {
            self.enable_syscall_hooks(HOOK_SYSCALL_COUNT, "the syscalls budget counter")?;
        }
        if programs.fs_write_counter {
            self.enable_syscall_hooks(HOOK_FS_WRITE_BYTES, "the fs_write_bytes budget counter")?;
        }
        if programs.cgroup_skb {
            let dir = std::fs::File::open(cgroup_dir).map_err(|error| BpfError::Cgroup {
                path: cgroup_dir.to_path_buf(),
                error,
            })?;
            for (name, section, attach) in [
                (
                    names::PROG_BUDGET_SKB_EGRESS,
                    SKB_EGRESS,
                    CgroupSkbAttachType::Egress,
                ),
                (
                    names::PROG_BUDGET_SKB_INGRESS,
                    SKB_INGRESS,
                    CgroupSkbAttachType::Ingress,
                ),
            ] {
                let program: &mut CgroupSkb = program(&mut self.ebpf, name, section)?;
                program
                    .load()
                    .map_err(|error| BpfError::Load { section, error })?;
                program
                    .attach(dir.as_fd(), attach, CgroupAttachMode::Single)
                    .map_err(|error| BpfError::AttachCgroup {
                        section,
                        cgroup: cgroup_dir.to_path_buf(),
                        error,
                    })?;
            }
        }
        Ok(BudgetCounterMaps {
            cgroup_id,
            runs,
            syscalls,
        })
    }
}

impl BudgetCounterMaps {
    /// The run's counters as the kernel has them now (syscalls summed over CPUs).
    pub fn read(&self) -> Result<KernelCounts, BpfError> {
        let c = self
            .runs
            .get(&self.cgroup_id, 0)
            .map_err(|error| map_error("read", names::MAP_BUDGET_RUNS, error))?;
        let syscalls = match &self.syscalls {
            Some((_, counts)) => counts
                .get(&SYSCALL_SLOT, 0)
                .map_err(|error| map_error("read", names::MAP_BUDGET_SYSCALLS, error))?
                .iter()
                .fold(0u64, |sum, n| sum.saturating_add(*n)),
            None => 0,
        };
        Ok(KernelCounts {
            syscalls,
            execs: c.execs,
            net_egress_bytes: c.net_egress_bytes,
            net_ingress_bytes: c.net_ingress_bytes,
            fs_write_bytes: c.fs_write_bytes,
            net_dropped_packets: c.net_dropped_packets,
            windows_fired: c.windows.map(|w| w.fired != 0),
        })
    }

    /// Unregisters the run (its counters stop; a missing entry is fine).
    pub fn remove(&mut self) {
        let ok = |r: Result<(), MapError>| match r {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => tracing::warn!("budget maps: remove cgroup: {e}"),
        };
        ok(self.runs.remove(&self.cgroup_id));
        if let Some((ids, _)) = self.syscalls.as_mut() {
            ok(ids.set(SYSCALL_SLOT, 0, 0));
        }
    }
}
