//! Container → its init pid, through the runtime's own interface (`podman inspect`,
//! `docker inspect`, `crictl inspect`), or, when none answers, by finding the
//! container's id in the cgroup paths of `/proc/*/cgroup`. The client resolves (it
//! has the caller's runtime configuration); the daemon re-checks the pid's cgroup.

use std::process::Command;

/// Container runtimes `--runtime` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Podman,
    Docker,
    Containerd,
}

impl Runtime {
    pub const ALL: [Runtime; 3] = [Runtime::Podman, Runtime::Docker, Runtime::Containerd];

    pub fn parse(s: &str) -> Option<Vec<Runtime>> {
        Some(match s {
            "auto" => Self::ALL.to_vec(),
            "podman" => vec![Runtime::Podman],
            "docker" => vec![Runtime::Docker],
            "containerd" | "crictl" => vec![Runtime::Containerd],
            _ => return None,
        })
    }

    fn inspect(self, id: &str) -> Command {
        let mut c = match self {
            Runtime::Podman => Command::new("podman"),
            Runtime::Docker => Command::new("docker"),
            Runtime::Containerd => Command::new("crictl"),
        };
        match self {
            Runtime::Podman | Runtime::Docker => {
                c.args([
                    "inspect",
                    "--type",
                    "container",
                    "--format",
                    "{{.State.Pid}}",
                    id,
                ]);
            }
            Runtime::Containerd => {
                c.args([
                    "inspect",
                    "--output",
                    "go-template",
                    "--template",
                    "{{.info.pid}}",
                    id,
                ]);
            }
        }
        c
    }
}

/// Why a container could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContainerError {
    #[error("container `{id}`: no runtime knows it ({tried}), and no process's cgroup names it")]
    NotFound { id: String, tried: String },
    #[error("container `{id}` is not running (its init pid is 0)")]
    NotRunning { id: String },
}

/// The init pid of container `id` (a name or an id), asking `runtimes` in turn, then
/// scanning /proc.
pub fn resolve(id: &str, runtimes: &[Runtime]) -> Result<u32, ContainerError> {
    let mut tried = Vec::new();
    for r in runtimes {
        match r.inspect(id).output() {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                match text.trim().parse::<u32>() {
                    Ok(0) => return Err(ContainerError::NotRunning { id: id.into() }),
                    Ok(pid) => return Ok(pid),
                    Err(_) => tried.push(format!("{r:?}: unexpected answer `{}`", text.trim())),
                }
            }
            Ok(o) => tried.push(format!(
                "{r:?}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => tried.push(format!("{r:?}: {e}")),
        }
    }
    scan_proc(id).ok_or_else(|| ContainerError::NotFound {
        id: id.into(),
        tried: tried.join("; "),
    })
}

/// The lowest pid whose cgroup path names container `id` (an id or its prefix of at
/// least 12 hex digits).
fn scan_proc(id: &str) -> Option<u32> {
    if id.len() < 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .is_some_and(|text| {
                text.lines()
                    .filter_map(|l| l.splitn(3, ':').nth(2))
                    .filter_map(container_id)
                    .any(|c| c.starts_with(id))
            })
    })
}

/// The container id a cgroup path names, in the layouts runtimes use:
/// systemd (`…/libpod-ID.scope`, `docker-ID.scope`, `cri-containerd-ID.scope`,
/// `crio-ID.scope`) and cgroupfs (`…/libpod-ID`, `/docker/ID`, `/kubepods/…/ID`).
/// An id is 64 hex digits.
pub fn container_id(cgroup_path: &str) -> Option<&str> {
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    for comp in cgroup_path.rsplit('/') {
        let comp = comp.strip_suffix(".scope").unwrap_or(comp);
        // A `container` child (podman's cgroupfs layout with a conmon sibling).
        if comp == "container" {
            continue;
        }
        for prefix in ["libpod-", "docker-", "cri-containerd-", "crio-", ""] {
            if let Some(id) = comp.strip_prefix(prefix) {
                if is_id(id) {
                    return Some(id);
                }
            }
        }
        if !comp.is_empty() {
            return None;
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_ids_are_read_from_systemd_and_cgroupfs_paths() {
        for path in [
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods.slice/crio-{ID}.scope"),
            format!("/process_api/x/libpod-{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/docker/{ID}"),
            format!("/kubepods/besteffort/pod1234/{ID}"),
        ] {
            assert_eq!(container_id(&path), Some(ID), "{path}");
        }
        for path in [
            "/",
            "/user.slice/user-1000.slice/session-2.scope",
            "/process_api/x",
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            &format!("/docker/{}", &ID[..63]),
        ] {
            assert_eq!(container_id(path), None, "{path}");
        }
    }

    #[test]
    fn runtimes_are_named() {
        assert_eq!(Runtime::parse("auto").unwrap().len(), 3);
        assert_eq!(Runtime::parse("docker"), Some(vec![Runtime::Docker]));
        assert_eq!(Runtime::parse("crictl"), Some(vec![Runtime::Containerd]));
        assert_eq!(Runtime::parse("lxc"), None);
    }

    #[test]
    fn an_unknown_container_says_what_was_tried() {
        let e = resolve("no-such-container-agentd-test", &[]).unwrap_err();
        assert!(matches!(e, ContainerError::NotFound { .. }));
    }
}
