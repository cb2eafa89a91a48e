//! What this kernel can do, detected once at start-up. `agentd doctor` prints it,
//! the Plan decides from it, and no other module probes again.

use serde::Serialize;

use crate::layers::cgroup::CgroupLayout;
use crate::layers::{bpf, landlock};

#[derive(Debug, Clone, Serialize)]
pub struct Feature {
    pub available: bool,
    /// What was found, or the kernel's reason for refusing.
    pub detail: String,
}

impl Feature {
    fn from_result(r: Result<String, String>) -> Self {
        match r {
            Ok(detail) => Self {
                available: true,
                detail,
            },
            Err(detail) => Self {
                available: false,
                detail,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CgroupInfo {
    pub mode: String,
    pub v2_mount: Option<String>,
    pub v2_controllers: Vec<String>,
    pub v1_controllers: Vec<String>,
    #[serde(skip)]
    pub layout: Option<CgroupLayout>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub kernel: String,
    pub bpf_lsm: Feature,
    /// `fexit` programs (trampolines): the denial tracker's syscall exits, which spare
    /// the host the `raw_syscalls` program.
    pub fexit: Feature,
    pub tp_btf: Feature,
    pub cgroup_bpf: Feature,
    /// cgroup `connect_unix` + `sendmsg_unix` (Linux 6.7+), loaded with raw bpf(2):
    /// aya 0.14 lacks them.
    pub cgroup_unix: Feature,
    pub landlock: Feature,
    /// The landlock ABI version, 0 when unavailable.
    pub landlock_abi: i32,
    pub seccomp_filter: Feature,
    pub seccomp_user_notif: Feature,
    /// `SOCK_DESTROY` over `NETLINK_SOCK_DIAG` (`CONFIG_INET_DIAG_DESTROY`): aborting a
    /// tainted or over-budget run's TCP sockets so queued data never leaves.
    pub sock_destroy: Feature,
    /// A new procfs instance with `hidepid=invisible` (`layers::procfs`): a launched
    /// run's private /proc.
    pub private_proc: Feature,
    pub cgroups: CgroupInfo,
}

impl Probe {
    pub fn detect() -> Self {
        let started = std::time::Instant::now();
        let cgroups = probe_cgroups();
        let landlock_abi = landlock::abi_version().unwrap_or(0);
        let probe = Self {
            kernel: kernel_release(),
            bpf_lsm: timed("bpf_lsm", || Feature::from_result(probe_bpf_lsm())),
            fexit: timed("fexit", || {
                Feature::from_result(bpf::probe_fexit().map(|section| format!("{section} loads")))
            }),
            tp_btf: timed("tp_btf", || {
                Feature::from_result(
                    bpf::probe_tp_btf().map(|()| "sched_process_exec/exit attach".to_owned()),
                )
            }),
            cgroup_bpf: timed("cgroup_bpf", || {
                Feature::from_result(probe_cgroup_bpf(cgroups.layout.as_ref()))
            }),
            cgroup_unix: timed("cgroup_unix", || {
                Feature::from_result(probe_cgroup_unix(cgroups.layout.as_ref()))
            }),
            landlock: Feature::from_result(match landlock::abi_version() {
                Ok(abi) => Ok(format!("ABI {abi}")),
                Err(e) => Err(e.to_string()),
            }),
            landlock_abi,
            seccomp_filter: Feature::from_result(probe_seccomp_filter()),
            seccomp_user_notif: Feature::from_result(probe_seccomp_action(
                SECCOMP_RET_USER_NOTIF,
                "SECCOMP_RET_USER_NOTIF",
            )),
            sock_destroy: Feature::from_result(crate::budgets::sockets::probe_destroy()),
            private_proc: timed("private_proc", || {
                Feature::from_result(
                    crate::layers::procfs::PrivateProc::create()
                        .map(|_| "fsopen(proc) with hidepid=invisible, fsmount".to_owned())
                        .map_err(|e| e.to_string()),
                )
            }),
            cgroups,
        };
        // What the probes loaded goes now: a run loads its own runtime.
        bpf::end_probes();
        tracing::debug!("probes done in {:?}", started.elapsed());
        probe
    }
}

/// Runs the probe `f`, logging how long it took (`AGENTD_LOG=agentd=debug`).
fn timed<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = f();
    tracing::debug!("probe {name}: {:?}", started.elapsed());
    out
}

/// A probe where everything is available (detail "probe said so"), for Plan unit tests
/// to switch single features off.
#[cfg(test)]
pub(crate) fn all_available() -> Probe {
    let on = || Feature {
        available: true,
        detail: "probe said so".into(),
    };
    Probe {
        kernel: "test".into(),
        bpf_lsm: on(),
        fexit: on(),
        tp_btf: on(),
        cgroup_bpf: on(),
        cgroup_unix: on(),
        landlock: on(),
        landlock_abi: 7,
        seccomp_filter: on(),
        seccomp_user_notif: on(),
        sock_destroy: on(),
        private_proc: on(),
        cgroups: CgroupInfo {
            mode: "test".into(),
            v2_mount: None,
            v2_controllers: vec![],
            v1_controllers: vec![],
            layout: None,
            error: None,
        },
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn probe_bpf_lsm() -> Result<String, String> {
    let (source, lsms) = lsm_list();
    let listed = lsms.split(',').any(|l| l == "bpf");
    let list = format!("{source}: {lsms}");
    match bpf::probe_bpf_lsm() {
        Ok(()) => Ok(format!("lsm/file_open loads and attaches ({list})")),
        Err(e) if listed => Err(format!("`bpf` is in the LSM list ({list}) but {e}")),
        Err(e) => Err(format!("`bpf` is not in the LSM list ({list}); {e}")),
    }
}

/// The active LSM list from securityfs; where securityfs is not mounted (agentd
/// does not mount it), the configured list from the kernel config.
fn lsm_list() -> (&'static str, String) {
    if let Ok(s) = std::fs::read_to_string("/sys/kernel/security/lsm") {
        return ("/sys/kernel/security/lsm", s.trim().to_owned());
    }
    let config = std::fs::File::open("/proc/config.gz").and_then(|f| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(f), &mut text)?;
        Ok(text)
    });
    match config {
        Ok(text) => {
            let list = text
                .lines()
                .find_map(|l| l.strip_prefix("CONFIG_LSM="))
                .map(|v| v.trim_matches('"').to_owned())
                .unwrap_or_default();
            (
                "securityfs not mounted; CONFIG_LSM in /proc/config.gz",
                list,
            )
        }
        Err(e) => (
            "securityfs not mounted and /proc/config.gz unreadable",
            e.to_string(),
        ),
    }
}

fn probe_cgroup_bpf(layout: Option<&CgroupLayout>) -> Result<String, String> {
    let layout = layout.ok_or("cgroup layout unknown")?;
    let parent = layout.own_v2_dir().map_err(|e| e.to_string())?;
    let dir = parent.join(format!("agentd-probe-{}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let res = bpf::probe_cgroup_bpf(&dir);
    let _ = std::fs::remove_dir(&dir);
    res.map(|()| format!("attach to a v2 cgroup under {}", parent.display()))
}

fn probe_cgroup_unix(layout: Option<&CgroupLayout>) -> Result<String, String> {
    let layout = layout.ok_or("cgroup layout unknown")?;
    let parent = layout.own_v2_dir().map_err(|e| e.to_string())?;
    let dir = parent.join(format!("agentd-probe-unix-{}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let res = bpf::probe_cgroup_unix_connect(&dir);
    let _ = std::fs::remove_dir(&dir);
    res.map(|()| "cgroup/connect_unix and sendmsg_unix load (raw bpf) and attach".to_owned())
}

fn probe_cgroups() -> CgroupInfo {
    match CgroupLayout::detect() {
        Ok(l) => CgroupInfo {
            mode: l.mode.to_string(),
            v2_mount: l.v2_mount.as_ref().map(|p| p.display().to_string()),
            v2_controllers: l.v2_controllers.clone(),
            v1_controllers: l.v1_mounts.keys().cloned().collect(),
            layout: Some(l),
            error: None,
        },
        Err(e) => CgroupInfo {
            mode: "unknown".into(),
            v2_mount: None,
            v2_controllers: vec![],
            v1_controllers: vec![],
            layout: None,
            error: Some(e.to_string()),
        },
    }
}

const SECCOMP_GET_ACTION_AVAIL: libc::c_uint = 2;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;

fn probe_seccomp_action(action: u32, name: &str) -> Result<String, String> {
    // SAFETY: SECCOMP_GET_ACTION_AVAIL only reads the u32 we pass by pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if rc == 0 {
        Ok(format!("{name} available"))
    } else {
        Err(format!("{name}: {}", std::io::Error::last_os_error()))
    }
}

fn probe_seccomp_filter() -> Result<String, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    if !status.lines().any(|l| l.starts_with("Seccomp:")) {
        return Err("kernel built without CONFIG_SECCOMP".into());
    }
    probe_seccomp_action(SECCOMP_RET_KILL_PROCESS, "SECCOMP_RET_KILL_PROCESS")
        .map(|_| "filter mode with KILL_PROCESS and ERRNO actions".to_owned())
}
