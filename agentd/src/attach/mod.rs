//! `agentd attach`: finding the cgroup of a workload that is already running, and the
//! checks that keep attach from confining what it was not asked to (the host's root
//! cgroup, agentd's own, processes outside the given tree). The daemon then confines
//! that cgroup like a run of its own (`supervisor::attach`), but never removes it.

pub mod container;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::layers::cgroup::CgroupLayout;

/// Why a workload cannot be attached.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttachError {
    #[error("name one of --cgroup, --pid and --container")]
    NoTarget,
    #[error("this host has no cgroup2 hierarchy: attach keys everything by a v2 cgroup")]
    NoV2,
    #[error("process {pid}: {why}")]
    Process { pid: u32, why: String },
    #[error("{path}: {why}", path = .path.display())]
    Cgroup { path: PathBuf, why: String },
    #[error("{path} is the host's root cgroup: attaching would confine every process", path = .path.display())]
    RootCgroup { path: PathBuf },
    #[error("{path} holds agentd itself (pid {pid}): refusing to confine the daemon", path = .path.display())]
    OwnCgroup { path: PathBuf, pid: u32 },
    #[error("{path} holds processes outside the tree of pid {pid} ({others:?}); pass --force to confine them too", path = .path.display())]
    Shared {
        path: PathBuf,
        pid: u32,
        others: Vec<u32>,
    },
}

/// What an attach confines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The v2 cgroup directory.
    pub cgroup: PathBuf,
    /// What was named, for the records: `cgroup:PATH`, `pid:N`, `container:NAME`.
    pub described: String,
    /// The processes in it now.
    pub pids: Vec<u32>,
    /// `--force` was needed (and given).
    pub forced: bool,
}

/// The v2 cgroup path (relative to the mount, with a leading `/`) of a process, from
/// the text of `/proc/PID/cgroup`: its `0::PATH` line.
pub fn v2_path_of(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
        .filter(|p| p.starts_with('/'))
}

/// The parent of every process, from /proc.
fn parents() -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(ppid) = ppid_of_stat(&stat) {
                out.insert(pid, ppid);
            }
        }
    }
    out
}

/// The parent pid in the text of `/proc/PID/stat` (after the `(comm)`, which may hold
/// spaces and parentheses).
pub fn ppid_of_stat(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The processes of `pids` that are not `root` or one of its descendants.
pub fn outside_tree(root: u32, pids: &[u32], parents: &BTreeMap<u32, u32>) -> Vec<u32> {
    let mut inside = BTreeSet::from([root]);
    pids.iter()
        .copied()
        .filter(|&p| {
            let mut cur = p;
            let mut chain = Vec::new();
            // Walk up until the tree's root, a known member, or pid 1/0.
            loop {
                if inside.contains(&cur) {
                    inside.extend(chain);
                    return false;
                }
                chain.push(cur);
                match parents.get(&cur) {
                    Some(&pp) if pp > 1 && chain.len() < 4096 => cur = pp,
                    _ => return true,
                }
            }
        })
        .collect()
}

fn read_pids(dir: &Path) -> Result<Vec<u32>, AttachError> {
    let procs = dir.join("cgroup.procs");
    std::fs::read_to_string(&procs)
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .map_err(|e| AttachError::Cgroup {
            path: dir.to_path_buf(),
            why: format!("not a cgroup2 directory ({}: {e})", procs.display()),
        })
}

/// Resolves and checks what to attach: `cgroup` (a v2 directory, absolute or relative
/// to the mount) or the cgroup of `pid`. Refuses the root cgroup, the cgroup of agentd
/// (`self_pid`), and, for a pid, a cgroup holding processes outside its tree unless
/// `force` (or, for the init pid of `container`, the cgroup is that container's own).
pub fn resolve(
    layout: &CgroupLayout,
    cgroup: Option<&str>,
    pid: Option<u32>,
    container: Option<&str>,
    force: bool,
    self_pid: u32,
) -> Result<Target, AttachError> {
    let mount = layout.v2_mount.as_ref().ok_or(AttachError::NoV2)?;
    let (dir, described) = match (cgroup, pid) {
        (Some(c), _) => {
            let p = Path::new(c);
            let dir = if p.starts_with(mount) {
                p.to_path_buf()
            } else {
                mount.join(c.trim_start_matches('/'))
            };
            (dir, format!("cgroup:{c}"))
        }
        (None, Some(pid)) => {
            let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| {
                AttachError::Process {
                    pid,
                    why: e.to_string(),
                }
            })?;
            let rel = v2_path_of(&text).ok_or_else(|| AttachError::Process {
                pid,
                why: "it has no cgroup2 membership (no `0::` line in /proc/PID/cgroup)".into(),
            })?;
            let described = match container {
                Some(c) => format!("container:{c}"),
                None => format!("pid:{pid}"),
            };
            (mount.join(rel.trim_start_matches('/')), described)
        }
        (None, None) => return Err(AttachError::NoTarget),
    };
    let dir = dir.canonicalize().map_err(|e| AttachError::Cgroup {
        path: dir.clone(),
        why: e.to_string(),
    })?;
    let mount = mount.canonicalize().unwrap_or_else(|_| mount.clone());
    if !dir.starts_with(&mount) {
        return Err(AttachError::Cgroup {
            path: dir,
            why: format!("not under the cgroup2 mount {}", mount.display()),
        });
    }
    if dir == mount {
        return Err(AttachError::RootCgroup { path: dir });
    }
    let pids = read_pids(&dir)?;
    if pids.contains(&self_pid) {
        return Err(AttachError::OwnCgroup {
            path: dir,
            pid: self_pid,
        });
    }
    // A container's own cgroup (its path names a container id) holds the container and
    // what `podman exec` started in it, which is not in the init's tree but is the
    // container's all the same. Any other cgroup a pid leads to is checked.
    let own_container_cgroup =
        container.is_some() && container::container_id(&dir.display().to_string()).is_some();
    let mut forced = false;
    if let Some(pid) = pid.filter(|_| cgroup.is_none() && !own_container_cgroup) {
        let others = outside_tree(pid, &pids, &parents());
        if !others.is_empty() {
            if !force {
                return Err(AttachError::Shared {
                    path: dir,
                    pid,
                    others,
                });
            }
            forced = true;
        }
    }
    Ok(Target {
        cgroup: dir,
        described,
        pids,
        forced,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_line_of_proc_cgroup_is_found() {
        let hybrid = "12:memory:/process_api/x\n1:name=systemd:/\n0::/process_api/x/libpod-ab12\n";
        assert_eq!(v2_path_of(hybrid), Some("/process_api/x/libpod-ab12"));
        assert_eq!(v2_path_of("0::/\n"), Some("/"));
        assert_eq!(v2_path_of("4:pids:/a\n"), None);
    }

    #[test]
    fn ppid_is_read_past_a_strange_comm() {
        assert_eq!(ppid_of_stat("42 (a) b (c)) S 7 42 42 0"), Some(7));
        assert_eq!(ppid_of_stat("1 (init) S 0 1 1"), Some(0));
        assert_eq!(ppid_of_stat("garbage"), None);
    }

    #[test]
    fn processes_outside_the_tree_are_named() {
        // 10 → 11 → 12; 20 is a sibling tree under 1.
        let parents = BTreeMap::from([(10, 1), (11, 10), (12, 11), (20, 1), (21, 20)]);
        assert_eq!(outside_tree(10, &[10, 11, 12], &parents), Vec::<u32>::new());
        assert_eq!(outside_tree(10, &[10, 12, 20, 21], &parents), vec![20, 21]);
        assert_eq!(outside_tree(11, &[10, 12], &parents), vec![10]);
    }
}
