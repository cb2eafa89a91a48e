//! Which cgroup hierarchies are mounted, with which controllers, and where this
//! process sits in each of them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::CgroupError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only v1 hierarchies.
    V1,
    /// One unified cgroup2 hierarchy holding the controllers.
    V2,
    /// cgroup2 mounted beside v1 hierarchies that hold the controllers.
    Hybrid,
}

impl fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CgroupMode::V1 => "v1",
            CgroupMode::V2 => "v2",
            CgroupMode::Hybrid => "hybrid",
        })
    }
}

#[derive(Debug, Clone)]
pub struct CgroupLayout {
    pub mode: CgroupMode,
    /// Mount point of the cgroup2 hierarchy, if any.
    pub v2_mount: Option<PathBuf>,
    /// Controllers the cgroup2 root offers (`cgroup.controllers`).
    pub v2_controllers: Vec<String>,
    /// v1 controller name → mount point (a co-mounted hierarchy appears once per controller).
    pub v1_mounts: BTreeMap<String, PathBuf>,
    /// This process's own cgroup path per hierarchy: "" for v2, else the controller name.
    pub own: BTreeMap<String, String>,
}

impl CgroupLayout {
    /// Reads the live layout from /proc/self/mountinfo and /proc/self/cgroup.
    pub fn detect() -> Result<Self, CgroupError> {
        let mountinfo = read("/proc/self/mountinfo")?;
        let own = read("/proc/self/cgroup")?;
        let mut layout = Self::parse(&mountinfo, &own);
        if let Some(mount) = &layout.v2_mount {
            let path = mount.join("cgroup.controllers");
            layout.v2_controllers = read(&path)?.split_whitespace().map(str::to_owned).collect();
        }
        Ok(layout)
    }

    /// Parses the two files; `v2_controllers` is left empty (it needs the live mount).
    pub fn parse(mountinfo: &str, proc_self_cgroup: &str) -> Self {
        let mut v2_mount = None;
        let mut v1_mounts = BTreeMap::new();
        for line in mountinfo.lines() {
            // Fields: id parent major:minor root mountpoint options [optional...] - fstype source superopts
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (Some(mountpoint), Some(fstype)) = (left.get(4), right.first()) else {
                continue;
            };
            let mountpoint = PathBuf::from(unescape_mountinfo(mountpoint));
            match *fstype {
                "cgroup2" => v2_mount = v2_mount.or(Some(mountpoint)),
                "cgroup" => {
                    let superopts = right.get(2).copied().unwrap_or("");
                    for opt in superopts.split(',') {
                        if is_v1_controller(opt) {
                            v1_mounts
                                .entry(opt.to_owned())
                                .or_insert_with(|| mountpoint.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        let mut own = BTreeMap::new();
        for line in proc_self_cgroup.lines() {
            // hierarchy-id:controller-list:path
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if controllers.is_empty() {
                own.insert(String::new(), path.to_owned());
            } else {
                for c in controllers.split(',') {
                    own.insert(c.to_owned(), path.to_owned());
                }
            }
        }
        let has_v1_controllers = !v1_mounts.is_empty();
        let mode = match (&v2_mount, has_v1_controllers) {
            (Some(_), true) => CgroupMode::Hybrid,
            (Some(_), false) => CgroupMode::V2,
            (None, _) => CgroupMode::V1,
        };
        Self {
            mode,
            v2_mount,
            v2_controllers: Vec::new(),
            v1_mounts,
            own,
        }
    }

    /// This process's own cgroup directory in the v2 hierarchy.
    pub fn own_v2_dir(&self) -> Result<PathBuf, CgroupError> {
        let mount = self.v2_mount.as_ref().ok_or(CgroupError::NoV2)?;
        let own = self.own.get("").ok_or_else(|| CgroupError::NoOwnCgroup {
            hierarchy: "cgroup2".into(),
        })?;
        Ok(join_cgroup(mount, own))
    }

    /// This process's own cgroup directory in the v1 hierarchy of `controller`.
    pub fn own_v1_dir(&self, controller: &'static str) -> Result<PathBuf, CgroupError> {
        let mount =
            self.v1_mounts
                .get(controller)
                .ok_or_else(|| CgroupError::MissingController {
                    controller,
                    why: "no v1 hierarchy has it mounted".into(),
                })?;
        let own = self
            .own
            .get(controller)
            .ok_or_else(|| CgroupError::NoOwnCgroup {
                hierarchy: controller.into(),
            })?;
        Ok(join_cgroup(mount, own))
    }
}

/// Joins a cgroup path such as `/process_api/abc` onto its mount point.
pub(super) fn join_cgroup(mount: &Path, cgroup_path: &str) -> PathBuf {
    let rel = cgroup_path.trim_start_matches('/');
    if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    }
}

fn is_v1_controller(opt: &str) -> bool {
    matches!(
        opt,
        "cpu"
            | "cpuacct"
            | "cpuset"
            | "memory"
            | "devices"
            | "freezer"
            | "net_cls"
            | "net_prio"
            | "blkio"
            | "perf_event"
            | "hugetlb"
            | "pids"
            | "rdma"
            | "misc"
    )
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn read(path: impl AsRef<Path>) -> Result<String, CgroupError> {
    let path = path.as_ref();
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
36 31 0:33 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_SELF: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/f3ed
1:cpu:/
0::/
";

    #[test]
    fn parses_a_hybrid_host() {
        let l = CgroupLayout::parse(HYBRID_MOUNTINFO, HYBRID_SELF);
        assert_eq!(l.mode, CgroupMode::Hybrid);
        assert_eq!(l.v2_mount, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(
            l.own_v1_dir("memory").unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/process_api/f3ed")
        );
        assert_eq!(
            l.own_v1_dir("pids").unwrap(),
            PathBuf::from("/sys/fs/cgroup/pids")
        );
        assert_eq!(
            l.own_v2_dir().unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert!(!l.v1_mounts.contains_key("name=systemd"));
    }

    #[test]
    fn parses_a_pure_v2_host() {
        let l = CgroupLayout::parse(
            "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
            "0::/user.slice/session-1.scope\n",
        );
        assert_eq!(l.mode, CgroupMode::V2);
        assert_eq!(
            l.own_v2_dir().unwrap(),
            PathBuf::from("/sys/fs/cgroup/user.slice/session-1.scope")
        );
        assert!(matches!(
            l.own_v1_dir("memory"),
            Err(CgroupError::MissingController { .. })
        ));
    }

    #[test]
    fn a_v1_only_host_has_no_v2_identity() {
        let l = CgroupLayout::parse(
            "36 31 0:33 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
            "4:memory:/\n",
        );
        assert_eq!(l.mode, CgroupMode::V1);
        assert!(matches!(l.own_v2_dir(), Err(CgroupError::NoV2)));
    }
}
