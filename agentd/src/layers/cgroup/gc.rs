//! Leaves of runs whose agentd is gone.
//!
//! A run's cgroups are removed when the run ends. An agentd that was SIGKILLed (or lost
//! its machine mid-run) cannot do that; its run guard kills the processes, but the empty
//! leaves stay. The next agentd removes them: a leaf `agentd-RUN` beneath agentd's own
//! cgroups is stale when no live agentd owns RUN (its pid file is gone or names another
//! process) and it is older than [`MIN_AGE`] (a run being set up creates its leaves
//! before it writes its pid file). Only leaves beneath this process's own cgroups are
//! ever touched, and only ones named like agentd's.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{CgroupLayout, LEAF_PREFIX};

/// A leaf younger than this may belong to a run that is still starting.
pub const MIN_AGE: Duration = Duration::from_secs(30);

/// What [`collect_stale`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Leaves removed.
    pub removed: Vec<PathBuf>,
    /// Processes of dead runs killed through their v2 `cgroup.kill` (they ran without
    /// agentd's eBPF programs); their leaves go on the next collection.
    pub killed_in: Vec<PathBuf>,
}

/// Removes the stale leaves beneath this process's own cgroups. `owner_alive(run_id)`
/// says whether a live agentd owns the run.
pub fn collect_stale(layout: &CgroupLayout, owner_alive: impl Fn(&str) -> bool) -> Collected {
    let mut parents: Vec<(PathBuf, bool)> = Vec::new();
    if let Ok(dir) = layout.own_v2_dir() {
        parents.push((dir, true));
    }
    for controller in ["memory", "pids", "cpu", "cpuacct"] {
        if let Ok(dir) = layout.own_v1_dir(controller) {
            if !parents.iter().any(|(p, _)| *p == dir) {
                parents.push((dir, false));
            }
        }
    }
    let now = SystemTime::now();
    let mut done = Collected::default();
    for (parent, is_v2) in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(run_id) = name.to_str().and_then(run_id_of) else {
                continue;
            };
            let path = entry.path();
            if !old_enough(&path, now) || owner_alive(run_id) {
                continue;
            }
            if has_processes(&path) {
                if is_v2 && std::fs::write(path.join("cgroup.kill"), "1").is_ok() {
                    done.killed_in.push(path);
                }
                continue;
            }
            if std::fs::remove_dir(&path).is_ok() {
                done.removed.push(path);
            }
        }
    }
    done
}

/// `agentd-<12 lower-case hex digits>` → the run id.
pub fn run_id_of(name: &str) -> Option<&str> {
    let id = name.strip_prefix(LEAF_PREFIX)?;
    (id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(id)
}

fn old_enough(path: &Path, now: SystemTime) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|age| age >= MIN_AGE)
}

fn has_processes(path: &Path) -> bool {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .map(|s| !s.trim().is_empty())
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_agentd_leaf_names_are_candidates() {
        assert_eq!(run_id_of("agentd-0123456789ab"), Some("0123456789ab"));
        assert_eq!(run_id_of("agentd-0123456789AB"), None);
        assert_eq!(run_id_of("agentd-0123456789a"), None);
        assert_eq!(run_id_of("agentd-probe-1234"), None);
        assert_eq!(run_id_of("user.slice"), None);
    }
}
