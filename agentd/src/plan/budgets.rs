//! Which layer enforces or accounts each budget, and which budget programs must load.

use serde::Serialize;

use super::Builder;
use crate::layers::name;
use crate::policy::{show, BudgetKey, Policy};
use crate::probe::Probe;

/// The budget counters that need an eBPF program of their own. The exec counter lives
/// in the always-loaded exec tracker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BudgetPrograms {
    /// The `syscalls` counter of the `tp_btf/sys_exit` program.
    pub syscall_counter: bool,
    /// The `fs_write_bytes` counter of the `tp_btf/sys_exit` program.
    pub fs_write_counter: bool,
    /// `cgroup_skb/egress` + `cgroup_skb/ingress` on the run's v2 cgroup.
    pub cgroup_skb: bool,
}

impl Builder {
    pub(super) fn budgets(&mut self, policy: &Policy, probe: &Probe) -> BudgetPrograms {
        let mut programs = BudgetPrograms::default();
        for b in &policy.budgets.items {
            let mut rule = format!("budgets.{} {}", b.key.name(), show(b.key.unit(), b.limit));
            if let Some(w) = b.window {
                rule.push_str(&format!(
                    " per {}",
                    show(crate::policy::Unit::Millis, w.as_millis() as u64)
                ));
            }
            let steps = policy
                .budgets
                .steps(b)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let (layer, how, needs) = match b.key {
                // Covered with the cgroup layer.
                BudgetKey::Memory | BudgetKey::Pids => continue,
                BudgetKey::WallTime => (
                    name::AGENTD,
                    format!("agentd clock, checked every {} ms; {steps}", crate::budgets::TICK.as_millis()),
                    None,
                ),
                BudgetKey::CpuQuota => (name::CGROUP, "CFS bandwidth (v1 cpu.cfs_quota_us / v2 cpu.max); the kernel throttles".to_owned(), None),
                BudgetKey::MemoryHigh => (name::CGROUP, "soft limit (v1 memory.soft_limit_in_bytes / v2 memory.high); the kernel reclaims".to_owned(), None),
                BudgetKey::CpuTime => (name::AGENTD, format!("cpuacct.usage (v1) / cpu.stat (v2), polled; {steps}"), None),
                BudgetKey::Syscalls => {
                    programs.syscall_counter = true;
                    (name::BPF, format!("tp_btf/sys_exit per-CPU counter of the run's cgroup id; {steps}"), Some(&probe.tp_btf))
                }
                BudgetKey::Execs => (name::BPF, format!("exec tracker counter; {steps}"), Some(&probe.tp_btf)),
                BudgetKey::FsWriteBytes => {
                    programs.fs_write_counter = true;
                    (name::BPF, format!("tp_btf/sys_exit byte counter of write-family calls; {steps}"), Some(&probe.tp_btf))
                }
                BudgetKey::NetEgressBytes | BudgetKey::NetIngressBytes => {
                    programs.cgroup_skb = true;
                    (name::BPF, format!("cgroup_skb byte counter on the run's v2 cgroup (packets dropped past a kill step); {steps}"), Some(&probe.cgroup_bpf))
                }
            };
            if let Some(feature) = needs.filter(|f| !f.available) {
                self.refuse(
                    name::BPF,
                    format!(
                        "budgets.{} needs a program this kernel refuses: {}",
                        b.key.name(),
                        feature.detail
                    ),
                );
                continue;
            }
            let how = if b.window.is_some() {
                format!(
                    "{how} (sliding window over counters agentd polls every {} ms)",
                    crate::budgets::TICK.as_millis()
                )
            } else {
                how
            };
            cover!(self, rule, layer, how);
        }
        programs
    }
}
