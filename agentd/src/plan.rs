//! Policy + Probe → Plan. This is the only place that decides which layer
//! enforces which rule, and what is refused. `policy explain`, the `run_start`
//! record and `run` itself all read the Plan; nothing else re-decides coverage.

use std::path::PathBuf;

use serde::Serialize;

/// Records how a rule is enforced, evaluating its texts only when the Plan explains
/// itself (`Plan::build`): a run's Plan (`Plan::for_run`) reads no coverage, and
/// formatting it cost a daemon launch ~0.7 ms for a 1,000-rule net allow list.
macro_rules! cover {
    ($builder:expr, $rule:expr, $layer:expr, $how:expr $(,)?) => {
        if $builder.explain {
            $builder.cover($rule, $layer, $how)
        }
    };
}

pub mod attach;
mod budgets;

pub use budgets::BudgetPrograms;

use crate::layers::bpf::{FsPath, NetRequest};
use crate::layers::cgroup::Limits;
use crate::layers::landlock::{self, LandlockRequest};
use crate::layers::{name, seccomp};
use crate::policy::{BudgetKey, Mode, Policy};
use crate::probe::Probe;

/// Landlock scoping of abstract unix sockets and signals arrived in ABI 6.
const LANDLOCK_ABI_SCOPE: i32 = 6;
/// Landlock TCP bind/connect rules arrived in ABI 4.
const LANDLOCK_ABI_NET: i32 = 4;

mod net;
mod unix;

pub use net::DNS;
pub use unix::{describe as describe_unix, unix_path};

#[derive(Debug, Clone, Serialize)]
pub struct LayerStatus {
    pub layer: &'static str,
    /// `on`, `off` or `refused`.
    pub status: &'static str,
    pub detail: String,
}

/// How one rule of the policy is enforced.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    pub rule: String,
    pub layer: &'static str,
    pub how: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub layer: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub layers: Vec<LayerStatus>,
    pub coverage: Vec<Coverage>,
    /// Set when the policy cannot be enforced as written; `run` refuses to start.
    pub refusals: Vec<Refusal>,
    pub landlock: Option<LandlockRequest>,
    pub seccomp: bool,
    pub caps: bool,
    pub limits: Limits,
    /// What the eBPF network programs enforce; `None` when cgroup-BPF is unavailable.
    pub net: Option<NetRequest>,
    /// The budget counters' eBPF programs this run loads.
    pub budget_programs: BudgetPrograms,
    /// How `fs.deny` / `fs.secret` are enforced; `None` when the policy has neither.
    pub fs_rules: Option<FsPath>,
    /// How exec integrity (`exec.allow` by inode, `exec.libraries`) is enforced.
    pub exec_integrity: Option<FsPath>,
    /// How pathname unix sockets are mediated; `None` when not (refused, or best effort).
    pub unix: Option<crate::layers::bpf::UnixPath>,
    /// Paths the run may write (resolved), for checks such as "the audit log is not writable by the run".
    pub writable_roots: Vec<PathBuf>,
    /// A launched run sees a private /proc that shows only its own processes
    /// (`layers::procfs`); set with landlock in enforce mode.
    pub private_proc: bool,
}

impl Plan {
    /// The Plan with its coverage: how each rule is enforced (`policy explain`).
    pub fn build(policy: &Policy, probe: &Probe) -> Plan {
        Self::decide(policy, probe, Builder::explaining())
    }

    /// The Plan a run enforces: the same decisions as [`Plan::build`], with no coverage.
    pub fn for_run(policy: &Policy, probe: &Probe) -> Plan {
        Self::decide(policy, probe, Builder::default())
    }

    fn decide(policy: &Policy, probe: &Probe, mut b: Builder) -> Plan {
        b.cgroups(policy, probe);
        b.exec_tracker(probe);
        let budget_programs = b.budgets(policy, probe);
        let enforce = policy.mode == Mode::Enforce;
        b.caps(enforce);
        b.landlock(policy, probe, enforce);
        b.private_proc(policy, probe);
        b.seccomp(probe, enforce);
        b.fs_rules(policy, probe, enforce);
        b.exec_integrity(policy, probe, enforce);
        b.unix(policy, probe, enforce);
        Plan {
            layers: b.layers,
            coverage: b.coverage,
            refusals: b.refusals,
            landlock: b.landlock,
            seccomp: b.seccomp,
            fs_rules: b.fs_rules,
            exec_integrity: b.exec_integrity,
            caps: enforce,
            limits: Limits {
                memory_bytes: policy.budgets.memory,
                pids: policy.budgets.pids,
                memory_high_bytes: policy.budgets.get(BudgetKey::MemoryHigh).map(|b| b.limit),
                cpu_quota_percent: policy.budgets.get(BudgetKey::CpuQuota).map(|b| b.limit),
            },
            net: b.net_request,
            unix: b.unix,
            private_proc: b.private_proc,
            budget_programs,
            writable_roots: policy
                .fs
                .write
                .iter()
                .filter(|r| r.exists)
                .map(|r| r.path.clone())
                .collect(),
        }
    }

    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::json!({
            "layers": self.layers,
            "refusals": self.refusals,
        })
    }
}

#[derive(Default)]
struct Builder {
    /// Whether `coverage` is filled in (see [`cover!`]).
    explain: bool,
    layers: Vec<LayerStatus>,
    coverage: Vec<Coverage>,
    refusals: Vec<Refusal>,
    landlock: Option<LandlockRequest>,
    seccomp: bool,
    net_request: Option<NetRequest>,
    fs_rules: Option<FsPath>,
    exec_integrity: Option<FsPath>,
    unix: Option<crate::layers::bpf::UnixPath>,
    private_proc: bool,
}

impl Builder {
    /// A builder that records coverage.
    fn explaining() -> Self {
        Self {
            explain: true,
            ..Self::default()
        }
    }

    fn layer(&mut self, layer: &'static str, status: &'static str, detail: impl Into<String>) {
        self.layers.push(LayerStatus {
            layer,
            status,
            detail: detail.into(),
        });
    }

    fn cover(&mut self, rule: impl Into<String>, layer: &'static str, how: impl Into<String>) {
        self.coverage.push(Coverage {
            rule: rule.into(),
            layer,
            how: how.into(),
        });
    }

    fn refuse(&mut self, layer: &'static str, reason: impl Into<String>) {
        let reason = reason.into();
        self.layer(layer, "refused", reason.clone());
        self.refusals.push(Refusal { layer, reason });
    }

    fn cgroups(&mut self, policy: &Policy, probe: &Probe) {
        match (&probe.cgroups.layout, &probe.cgroups.error) {
            (Some(l), _) if l.v2_mount.is_some() => {
                let mut detail = format!(
                    "{} host: v2 leaf for identity{}",
                    l.mode,
                    if l.mode == crate::layers::cgroup::CgroupMode::Hybrid {
                        ", v1 memory, pids, cpuacct (and cpu for cpu_quota) leaves under agentd's own v1 cgroups"
                    } else {
                        ""
                    }
                );
                if let Some(m) = policy.budgets.memory {
                    detail.push_str(&format!("; memory limit {m} bytes"));
                    cover!(
                        self,
                        format!("budgets.memory {m}"),
                        name::CGROUP,
                        "memory controller limit (kernel OOM-kills above it)",
                    );
                }
                if let Some(p) = policy.budgets.pids {
                    detail.push_str(&format!("; pids limit {p}"));
                    cover!(
                        self,
                        format!("budgets.pids {p}"),
                        name::CGROUP,
                        "pids controller limit (fork fails with EAGAIN above it)",
                    );
                }
                self.layer(name::CGROUP, "on", detail);
            }
            (Some(_), _) => self.refuse(
                name::CGROUP,
                "no cgroup2 hierarchy: a run needs a v2 cgroup as its identity in BPF",
            ),
            (None, err) => self.refuse(
                name::CGROUP,
                format!(
                    "cgroup layout unknown: {}",
                    err.as_deref().unwrap_or("not probed")
                ),
            ),
        }
    }

    fn exec_tracker(&mut self, probe: &Probe) {
        if probe.tp_btf.available {
            self.layer(
                name::BPF,
                "on",
                "tp_btf sched_process_exec/exit tracker and the tp_btf/sys_exit denial tracker (one raw-syscall program for the whole run), keyed by the run's cgroup id",
            );
        } else {
            self.refuse(
                name::BPF,
                format!(
                    "tp_btf is unavailable, so execs and exits cannot be audited: {}",
                    probe.tp_btf.detail
                ),
            );
        }
    }

    fn caps(&mut self, enforce: bool) {
        if enforce {
            self.layer(
                name::CAPS,
                "on",
                "bounding, ambient, inheritable, effective and permitted sets emptied; securebits locked; no_new_privs",
            );
        } else {
            self.layer(name::CAPS, "off", "mode: audit denies nothing");
        }
    }

    fn landlock(&mut self, policy: &Policy, probe: &Probe, enforce: bool) {
        let paths = |rules: &[crate::policy::PathRule]| -> Vec<PathBuf> {
            rules
                .iter()
                .filter(|r| r.exists)
                .map(|r| r.path.clone())
                .collect()
        };
        let read = paths(&policy.fs.read);
        let write = paths(&policy.fs.write);
        let exec = paths(&policy.exec.allow);
        let how = if enforce {
            "landlock: denied with EACCES"
        } else {
            "not enforced (mode: audit): a file access outside them is recorded as would_deny"
        };
        for r in &policy.fs.read {
            self.cover_path("fs.read", r, how);
        }
        for r in &policy.fs.write {
            self.cover_path("fs.write", r, how);
        }
        for r in &policy.exec.allow {
            self.cover_path("exec.allow", r, how);
        }
        let implied = landlock::implied_exec_paths(&exec);
        for (path, because) in &implied {
            cover!(
                self,
                format!("exec (implied) {}", path.display()),
                name::LANDLOCK,
                format!(
                    "interpreter of {}; the kernel opens it for exec",
                    because.display()
                ),
            );
        }
        for p in landlock::IMPLICIT_READ_WRITE {
            cover!(
                self,
                format!("fs (implicit) {p}"),
                name::LANDLOCK,
                "read+write, always allowed",
            );
        }
        for p in landlock::IMPLICIT_READ {
            cover!(
                self,
                format!("fs (implicit) {p}"),
                name::LANDLOCK,
                "read, always allowed",
            );
        }

        let (tcp_connect_ports, tcp_bind_ports) = self.net(policy, probe, enforce);

        if !enforce {
            self.layer(name::LANDLOCK, "off", "mode: audit denies nothing");
            return;
        }
        let abi = probe.landlock_abi;
        if !probe.landlock.available {
            self.refuse(
                name::LANDLOCK,
                format!("landlock is unavailable: {}", probe.landlock.detail),
            );
            return;
        }
        if abi < LANDLOCK_ABI_SCOPE {
            self.refuse(
                name::LANDLOCK,
                format!("ABI {abi} lacks scoping of abstract unix sockets and signals (needs ABI {LANDLOCK_ABI_SCOPE})"),
            );
            return;
        }
        if (tcp_connect_ports.is_some() || tcp_bind_ports.is_some()) && abi < LANDLOCK_ABI_NET {
            self.refuse(
                name::LANDLOCK,
                format!("ABI {abi} cannot restrict TCP ports (needs ABI {LANDLOCK_ABI_NET})"),
            );
            return;
        }
        let mut exec_all = exec;
        exec_all.extend(implied.into_iter().map(|(p, _)| p));
        self.layer(
            name::LANDLOCK,
            "on",
            format!(
                "ABI {abi}: {} read, {} write, {} exec roots; abstract unix sockets and signals scoped to the run{}",
                read.len(),
                write.len(),
                exec_all.len(),
                if tcp_connect_ports.is_some() || tcp_bind_ports.is_some() { "; TCP ports restricted" } else { "" }
            ),
        );
        cover!(
            self,
            "scope: abstract unix sockets, signals",
            name::LANDLOCK,
            "the run cannot connect to abstract sockets or signal processes outside it",
        );
        self.landlock = Some(LandlockRequest {
            read,
            write,
            exec: exec_all,
            tcp_connect_ports,
            tcp_bind_ports,
            scope_abstract_unix: true,
            scope_signal: true,
        });
    }

    /// Processes outside the run are hidden from it by a private /proc, which takes
    /// landlock's domain (the ptrace check that `hidepid=invisible` applies) and so only
    /// comes with it. Inode rules cannot name entries of a procfs instance that does
    /// not exist yet: such a rule is refused.
    fn private_proc(&mut self, policy: &Policy, probe: &Probe) {
        if self.landlock.is_none() {
            return;
        }
        if !probe.private_proc.available {
            self.refuse(
                name::MOUNTS,
                format!(
                    "a private /proc (hidepid=invisible) cannot be mounted: {}",
                    probe.private_proc.detail
                ),
            );
            return;
        }
        for (section, rules) in [
            ("fs.deny", &policy.fs.deny),
            ("fs.secret", &policy.fs.secret),
        ] {
            for r in rules
                .iter()
                .filter(|r| crate::layers::procfs::is_under_proc(&r.path))
            {
                self.refuse(
                    name::MOUNTS,
                    format!(
                        "{section} {} (line {}): the run sees a private /proc of its own, whose files cannot be named by inode before it exists; leave the entry out (the run's /proc shows only its own processes, and only what fs.read grants is readable)",
                        r.written, r.span.line
                    ),
                );
            }
        }
        self.private_proc = true;
        self.layer(
            name::MOUNTS,
            "on",
            "a private /proc (hidepid=invisible): processes outside the run are not there",
        );
        cover!(
                self,
            "processes outside the run",
            name::MOUNTS,
            "invisible in the run's own /proc (hidepid=invisible, with landlock's ptrace scope): their cmdline, environ, maps, mem and fd cannot be read; /proc/sys and the other kernel tunables are read-only",
        );
    }

    fn cover_path(&mut self, section: &str, r: &crate::policy::PathRule, how: &str) {
        if !self.explain {
            return;
        }
        let rule = format!(
            "{section} {}{} (line {})",
            r.written,
            if r.optional { " (optional)" } else { "" },
            r.span.line
        );
        if r.exists {
            let kind = if r.is_dir { "tree" } else { "file" };
            cover!(
                self,
                rule,
                name::LANDLOCK,
                format!("{how}; allows the {kind} {}", r.path.display()),
            );
        } else {
            cover!(
                self,
                rule,
                name::LANDLOCK,
                format!("skipped: optional and {} does not exist", r.path.display()),
            );
        }
    }

    fn seccomp(&mut self, probe: &Probe, enforce: bool) {
        if !enforce {
            self.layer(name::SECCOMP, "off", "mode: audit denies nothing");
            return;
        }
        if !probe.seccomp_filter.available {
            self.refuse(
                name::SECCOMP,
                format!(
                    "seccomp filters are unavailable: {}",
                    probe.seccomp_filter.detail
                ),
            );
            return;
        }
        self.seccomp = true;
        self.layer(
            name::SECCOMP,
            "on",
            format!(
                "{} syscalls denied with EPERM, clone with namespace flags EPERM, clone3 ENOSYS, non-native ABIs killed",
                seccomp::DENIED_SYSCALLS.len()
            ),
        );
        cover!(
            self,
            format!("baseline: {}", seccomp::DENIED_SYSCALLS.join(", ")),
            name::SECCOMP,
            "denied with EPERM",
        );
        cover!(
            self,
            "baseline: x86 int 0x80 and x32 syscalls",
            name::SECCOMP,
            "the process is killed with SIGSYS",
        );
    }

    /// `fs.deny` and `fs.secret`: BPF LSM where it loads (clean EACCES), else the
    /// `tp_btf/sys_exit` fallback (SIGKILL after the open), else refused.
    fn fs_rules(&mut self, policy: &Policy, probe: &Probe, enforce: bool) {
        if policy.fs.deny.is_empty() && policy.fs.secret.is_empty() {
            return;
        }
        let path = if probe.bpf_lsm.available {
            FsPath::Lsm
        } else if probe.tp_btf.available {
            FsPath::Tracepoint
        } else {
            self.refuse(
                name::TRACEPOINT,
                format!(
                    "fs.deny and fs.secret need BPF LSM or tp_btf, and neither loads: {}; {}",
                    probe.bpf_lsm.detail, probe.tp_btf.detail
                ),
            );
            return;
        };
        let layer = path.layer();
        let (deny_how, detail) = match path {
            FsPath::Lsm => (
                "lsm/file_open: open denied with EACCES; lsm/inode_*: unlink, rmdir, rename out of or into, hard links to or inside, truncate/chmod/chown/utimes of, and new entries inside a denied tree, denied with EACCES",
                "BPF LSM lsm/file_open and lsm/inode_* (path operations): inode rules deny cleanly with EACCES",
            ),
            FsPath::Tracepoint => (
                "tp_btf/sys_exit: a successful open kills the process with SIGKILL (agentd exits 137); NOT covered: truncate(2), chmod/chown, unlink, rmdir, rename and link of a denied file, and mkdir/symlink inside a denied tree (they open no file, and landlock cannot deny inside an allowed tree); a file created inside one is killed on its open",
                "BPF LSM unavailable: tp_btf/sys_exit fallback kills on a denied open",
            ),
        };
        self.layer(layer, "on", detail);
        for r in &policy.fs.deny {
            let how = if enforce {
                deny_how
            } else {
                "not enforced (mode: audit): recorded as would_deny"
            };
            self.cover_inode_rule("fs.deny", r, layer, how);
        }
        for r in &policy.fs.secret {
            self.cover_inode_rule(
                "fs.secret",
                r,
                layer,
                "opening it sets the run's taint flag (RUN_TAINT, keyed by the run's cgroup)",
            );
        }
        if !policy.fs.secret.is_empty() && !self.taint_egress(policy, probe, enforce) {
            return;
        }
        self.fs_rules = Some(path);
    }

    /// Taint → egress: `cgroup_skb/egress` on the run's cgroup drops every packet once
    /// the run is tainted, but those to `net.after_taint` destinations and the run's
    /// resolver (connect/sendmsg: `plan::net`). Returns false when refused.
    fn taint_egress(&mut self, policy: &Policy, probe: &Probe, enforce: bool) -> bool {
        if !probe.cgroup_bpf.available {
            self.refuse(
                name::BPF,
                format!(
                    "fs.secret needs cgroup_skb/egress to stop a tainted run's traffic: {}",
                    probe.cgroup_bpf.detail
                ),
            );
            return false;
        }
        let abort_best_effort = policy
            .net
            .as_ref()
            .is_some_and(|n| n.taint_abort_best_effort);
        let at_run_end = if !enforce || probe.sock_destroy.available {
            "at run end the run's TCP sockets are destroyed (SOCK_DESTROY) before the programs are detached, so nothing queued while tainted leaves later".to_owned()
        } else if abort_best_effort {
            format!(
                "NOT guaranteed at run end (net.taint_socket_abort: best_effort): this kernel cannot destroy the run's TCP sockets ({}), so data queued while tainted can leave once the programs are detached; the taint_sockets_aborted record says so",
                probe.sock_destroy.detail
            )
        } else {
            self.refuse(
                name::BPF,
                format!(
                    "fs.secret needs SOCK_DESTROY to abort a tainted run's TCP sockets at run end (else data queued while tainted leaves after it): {}; set net.taint_socket_abort: best_effort to run without it",
                    probe.sock_destroy.detail
                ),
            );
            return false;
        };
        cover!(
            self,
            "fs.secret taint → egress",
            name::BPF,
            if enforce {
                let after = policy.net.as_ref().map_or(0, |n| n.after_taint.len());
                format!("cgroup_skb/egress on the run's cgroup drops every packet once the run is tainted, on new and already-open connections, except to the {after} net.after_taint destination(s) and the run's resolver; {at_run_end}")
            } else {
                "not enforced (mode: audit): a tainted run keeps its network".to_owned()
            },
        );
        true
    }

    fn cover_inode_rule(
        &mut self,
        section: &str,
        r: &crate::policy::PathRule,
        layer: &'static str,
        how: &str,
    ) {
        if !self.explain {
            return;
        }
        let rule = format!("{section} {} (line {})", r.written, r.span.line);
        if r.exists {
            cover!(
                self,
                rule,
                layer,
                format!(
                    "{how}; matches the inodes of {} and below (by inode: symlinks, hardlinks, /proc/self/root included)",
                    r.path.display()
                ),
            );
        } else {
            cover!(
                self,
                rule,
                layer,
                format!("skipped: optional and {} does not exist", r.path.display()),
            );
        }
    }

    /// Exec integrity: what landlock cannot see (memfd execs, `ld.so /copy`, PROT_EXEC
    /// mappings). LSM where it loads, else the tracepoint fallback.
    fn exec_integrity(&mut self, policy: &Policy, probe: &Probe, enforce: bool) {
        let path = if probe.bpf_lsm.available {
            FsPath::Lsm
        } else if probe.tp_btf.available {
            FsPath::Tracepoint
        } else {
            // The exec tracker already refused the run (it needs tp_btf).
            return;
        };
        let layer = path.layer();
        let (exec_how, mmap_how) = match (path, enforce) {
            (_, false) => (
                "not enforced (mode: audit): recorded as would_deny",
                "not enforced (mode: audit): recorded as would_deny",
            ),
            (FsPath::Lsm, true) => (
                "lsm/bprm_check_security: an exec of any other inode (memfd, copies, /proc/self/fd, execveat) fails with EACCES",
                "lsm/mmap_file + lsm/file_mprotect: a PROT_EXEC mapping of any other file, or mprotect adding PROT_EXEC to one, fails with EACCES (anonymous memory, e.g. JITs, stays allowed)",
            ),
            (FsPath::Tracepoint, true) => (
                "tp_btf/sched_process_exec: a new image of any other inode (memfd, copies, /proc/self/fd, execveat) is killed with SIGKILL before its first instruction",
                "tp_btf/sys_exit: a successful mmap(PROT_EXEC) of any other file, or mprotect adding PROT_EXEC to one (first 4 VMAs of the range, found with bpf_find_vma), is killed with SIGKILL before the call returns to user space (anonymous memory, e.g. JITs, stays allowed)",
            ),
        };
        cover!(self, "exec integrity: exec.allow by inode", layer, exec_how);
        let libraries: Vec<String> = match &policy.exec.libraries {
            Some(rules) => rules.iter().map(|r| r.written.clone()).collect(),
            None => crate::policy::DEFAULT_LIBRARIES
                .iter()
                .map(|s| format!("{s} (default)"))
                .collect(),
        };
        cover!(
            self,
            format!("exec.libraries [{}]", libraries.join(", ")),
            layer,
            mmap_how,
        );
        self.exec_integrity = Some(path);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `plan` without its coverage, as text: what a run acts on.
    fn decisions(plan: Plan) -> String {
        format!(
            "{:?}",
            Plan {
                coverage: Vec::new(),
                ..plan
            }
        )
    }

    /// A run's Plan makes every decision the explained Plan makes, for every preset and
    /// for a policy with each kind of per-rule coverage, on the LSM path and the
    /// fallback; only the coverage is left out.
    #[test]
    fn a_runs_plan_decides_what_the_explained_plan_decides() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join(".env"), "K=v").unwrap();
        let opts = crate::policy::LoadOptions {
            workspace: dir.path().to_path_buf(),
            home: dir.path().to_path_buf(),
        };
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut sources = Vec::new();
        for entry in std::fs::read_dir(repo.join("policies")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "yaml") {
                sources.push((
                    path.display().to_string(),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
        assert!(sources.len() >= 4, "only {} presets", sources.len());
        let allow: String = (0..50)
            .map(|i| format!("    - 127.0.{}.{}:{}\n", i / 10, i % 10, 1000 + i))
            .collect();
        sources.push((
            "<every kind of rule>".into(),
            format!(
                "version: 1\nname: t\nfs:\n  read: [/usr, {{path: /nonexistent-x, optional: true}}]\n  write: [\"{ws}\"]\n  deny: [\"{ws}/src\"]\n  secret: [\"{ws}/.env\"]\nexec:\n  allow: [/usr/bin/python3, /usr/bin]\nnet:\n  allow:\n{allow}    - example.com:443\n  bind: [127.0.0.1:8080]\n  after_taint: [127.0.0.1:9000]\n",
                ws = dir.path().display()
            ),
        ));
        let lsm = crate::probe::all_available();
        let mut fallback = crate::probe::all_available();
        fallback.bpf_lsm.available = false;
        for (origin, src) in &sources {
            let policy = crate::policy::parse_str(src, origin, &opts)
                .unwrap_or_else(|e| panic!("{origin}: {e}"));
            for probe in [&lsm, &fallback] {
                let explained = Plan::build(&policy, probe);
                let run = Plan::for_run(&policy, probe);
                assert!(!explained.coverage.is_empty(), "{origin}");
                assert!(run.coverage.is_empty(), "{origin}");
                assert_eq!(decisions(explained), decisions(run), "{origin}");
            }
        }
    }
}
