//! The budget counters and maps (see `agentd-ebpf/src/budget.rs`): the `syscalls` and
//! `fs_write_bytes` counters of the `tp_btf/sys_exit` program and the `cgroup_skb`
//! programs are turned on only when the Plan asks for them, since the `sys_exit`
//! program runs on every syscall of the host.

use std::path::Path;

use agentd_common::budget::{names, BudgetCounters, SYSCALL_SLOTS, WINDOW_KINDS};
use agentd_common::syscalls::{HOOK_FS_WRITE_BYTES, HOOK_SYSCALL_COUNT};
use aya::maps::{HashMap, IterableMap, MapData, PerCpuArray, PerCpuValues};

use super::{map_error, progs, BpfError, BpfRuntime, RunBpf};
use crate::plan::BudgetPrograms;

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
    /// The syscall (x86-64 number) that took `fs_write_bytes` past its kill step, and
    /// the bytes it counted.
    pub fs_write_kill: Option<(u64, u64)>,
}

/// The budget maps of one run (registered under its cgroup id), on duplicated fds so
/// the run's budget engine reads them without the runtime's lock.
pub struct BudgetCounterMaps {
    cgroup_id: u64,
    runs: HashMap<MapData, u64, BudgetCounters>,
    /// The run's slot in the syscall counters, with those counters.
    syscalls: Option<(u32, PerCpuArray<MapData, u64>)>,
}

impl BpfRuntime {
    /// Turns on the budget counters in `programs` for `run` (v2 cgroup directory
    /// `cgroup_dir`) and registers it with `thresholds` (counters start at zero). The
    /// exec count needs no program of its own: the exec tracker keeps it.
    pub fn start_budgets(
        &mut self,
        run: &mut RunBpf,
        programs: BudgetPrograms,
        cgroup_dir: &Path,
        thresholds: BudgetCounters,
    ) -> Result<BudgetCounterMaps, BpfError> {
        let cgroup_id = run.cgroup_id();
        self.maps
            .budget_runs
            .insert(cgroup_id, thresholds, 0)
            .map_err(|error| {
                map_error(
                    format!("insert cgroup {cgroup_id} into"),
                    names::MAP_BUDGET_RUNS,
                    error,
                )
            })?;
        let mut syscalls = None;
        if programs.syscall_counter {
            let slot = self.take_syscall_slot(run)?;
            let counts = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(super::maps::dup(
                self.maps.budget_syscalls.map(),
                names::MAP_BUDGET_SYSCALLS,
            )?))
            .map_err(|error| map_error("open", names::MAP_BUDGET_SYSCALLS, error))?;
            syscalls = Some((slot, counts));
            self.enable_syscall_hooks(run, HOOK_SYSCALL_COUNT, "the syscalls budget counter")?;
        }
        if programs.fs_write_counter {
            self.enable_syscall_hooks(
                run,
                HOOK_FS_WRITE_BYTES,
                "the fs_write_bytes budget counter",
            )?;
        }
        if programs.cgroup_skb {
            let dir = std::fs::File::open(cgroup_dir).map_err(|error| BpfError::Cgroup {
                path: cgroup_dir.to_path_buf(),
                error,
            })?;
            for p in progs::BUDGET_SKB {
                self.attach_to_run(run, &p, cgroup_dir, &dir)?;
            }
        }
        let runs = HashMap::try_from(aya::maps::Map::HashMap(super::maps::dup(
            self.maps.budget_runs.map(),
            names::MAP_BUDGET_RUNS,
        )?))
        .map_err(|error| map_error("open", names::MAP_BUDGET_RUNS, error))?;
        Ok(BudgetCounterMaps {
            cgroup_id,
            runs,
            syscalls,
        })
    }

    /// Budget counter handles of a re-adopted run (its entries are already there).
    pub fn budget_maps(&self, run: &RunBpf) -> Result<BudgetCounterMaps, BpfError> {
        let runs = HashMap::try_from(aya::maps::Map::HashMap(super::maps::dup(
            self.maps.budget_runs.map(),
            names::MAP_BUDGET_RUNS,
        )?))
        .map_err(|error| map_error("open", names::MAP_BUDGET_RUNS, error))?;
        let syscalls = match run.syscall_slot {
            Some(slot) => Some((
                slot,
                PerCpuArray::try_from(aya::maps::Map::PerCpuArray(super::maps::dup(
                    self.maps.budget_syscalls.map(),
                    names::MAP_BUDGET_SYSCALLS,
                )?))
                .map_err(|error| map_error("open", names::MAP_BUDGET_SYSCALLS, error))?,
            )),
            None => None,
        };
        Ok(BudgetCounterMaps {
            cgroup_id: run.cgroup_id(),
            runs,
            syscalls,
        })
    }

    /// A free slot of the syscall counters for `run`, zeroed and claimed with its
    /// cgroup id. The `sys_exit` program scans every slot on every syscall of the host,
    /// so there are few ([`SYSCALL_SLOTS`]).
    fn take_syscall_slot(&mut self, run: &mut RunBpf) -> Result<u32, BpfError> {
        let cgroup_id = run.cgroup_id();
        let free = (0..SYSCALL_SLOTS)
            .find(|s| self.maps.budget_syscall_cgroups.get(s, 0).ok() == Some(0))
            .ok_or(BpfError::Budget(format!(
                "every one of the {SYSCALL_SLOTS} syscall-budget slots is in use: at most \
                 {SYSCALL_SLOTS} runs with a `syscalls` budget can run at once"
            )))?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(path, e)| BpfError::Budget(format!("read {path}: {e}")))?;
        let zeros = PerCpuValues::try_from(vec![0u64; cpus])
            .map_err(|e| BpfError::Budget(format!("per-cpu values for {cpus} cpus: {e}")))?;
        self.maps
            .budget_syscalls
            .set(free, zeros, 0)
            .map_err(|error| {
                map_error(
                    format!("zero slot {free} of"),
                    names::MAP_BUDGET_SYSCALLS,
                    error,
                )
            })?;
        self.maps
            .budget_syscall_cgroups
            .set(free, cgroup_id, 0)
            .map_err(|error| {
                map_error(
                    format!("put cgroup {cgroup_id} in slot {free} of"),
                    names::MAP_BUDGET_SYSCALL_CGROUPS,
                    error,
                )
            })?;
        run.syscall_slot = Some(free);
        Ok(free)
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
            Some((slot, counts)) => counts
                .get(slot, 0)
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
            fs_write_kill: (c.fs_write_kill_nr != 0)
                .then_some((c.fs_write_kill_nr, c.fs_write_kill_bytes)),
        })
    }

    /// Unregisters the run from the byte and syscall checks (its counters stop, and the
    /// skb programs stop dropping its packets); a missing entry is fine.
    pub fn remove(&mut self) {
        match self.runs.remove(&self.cgroup_id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => tracing::warn!("budget maps: remove cgroup {}: {e}", self.cgroup_id),
        }
    }
}
