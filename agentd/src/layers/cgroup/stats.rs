//! What a run has used, read from its cgroups: v1 controller files on hybrid hosts,
//! the v2 leaf's files otherwise.
//!
//! | figure | v1 (hybrid) | v2 |
//! |---|---|---|
//! | cpu time | `cpuacct.usage` (ns) | `cpu.stat` `usage_usec` |
//! | memory, peak | `memory.usage_in_bytes`, `memory.max_usage_in_bytes` | `memory.current`, `memory.peak` |
//! | OOM kills | `memory.oom_control` `oom_kill` | `memory.events` `oom_kill` |
//! | pids, fork failures at the limit | `pids.current`, `pids.events` `max` | same files |

use super::leaf::{Leaf, RunCgroups};

/// One reading of the run's cgroup counters; `None` where the host has no such file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_ns: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    pub pids: Option<u64>,
    /// Forks refused because the run was at its pids limit.
    pub pids_max_hits: Option<u64>,
}

impl RunCgroups {
    /// Reads every counter the run's cgroups have. Cheap: a handful of small reads.
    pub fn usage(&self) -> Usage {
        let v2 = self.identity();
        let memory = self.controller("memory").unwrap_or(v2);
        let pids = self.controller("pids").unwrap_or(v2);
        let (memory_bytes, memory_peak_bytes, oom_kills) = if memory.has("memory") {
            (
                number(memory, "memory.usage_in_bytes"),
                number(memory, "memory.max_usage_in_bytes"),
                keyed(memory, "memory.oom_control", "oom_kill"),
            )
        } else {
            (
                number(v2, "memory.current"),
                number(v2, "memory.peak"),
                keyed(v2, "memory.events", "oom_kill"),
            )
        };
        let cpu_ns = match self.controller("cpuacct") {
            Some(leaf) => number(leaf, "cpuacct.usage"),
            None => keyed(v2, "cpu.stat", "usage_usec").map(|us| us.saturating_mul(1000)),
        };
        Usage {
            cpu_ns,
            memory_bytes,
            memory_peak_bytes,
            oom_kills,
            pids: number(pids, "pids.current"),
            pids_max_hits: keyed(pids, "pids.events", "max"),
        }
    }
}

fn number(leaf: &Leaf, file: &str) -> Option<u64> {
    leaf.read(file).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`key value` per line).
fn keyed(leaf: &Leaf, file: &str, key: &str) -> Option<u64> {
    parse_keyed(&leaf.read(file).ok()?, key)
}

fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files() {
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_keyed(oom, "oom_kill"), Some(3));
        assert_eq!(parse_keyed(oom, "oom"), None);
        assert_eq!(
            parse_keyed("usage_usec 1234\nuser_usec 1000\n", "usage_usec"),
            Some(1234)
        );
    }
}
