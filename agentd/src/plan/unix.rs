//! The pathname unix-socket part of the Plan: which kernel path mediates connect and
//! send to pathname sockets, or why none can (refused unless the policy opts out).
//!
//! A socket is allowed when it lies under an `fs.write` path or a `net.unix` entry;
//! `fs.read` alone never allows one (a policy reading `/` must not reach
//! `/var/run/docker.sock`). Abstract and unnamed sockets are landlock's (scoping).

use super::Builder;
use crate::layers::bpf::UnixPath;
use crate::layers::name;
use crate::policy::Policy;
use crate::probe::Probe;

/// The path this kernel offers, if any: BPF LSM first, else the cgroup unix hooks with
/// the `tp_btf` backstop. `agentd doctor` prints the same answer.
pub fn unix_path(probe: &Probe) -> Option<UnixPath> {
    if probe.bpf_lsm.available {
        Some(UnixPath::Lsm)
    } else if probe.cgroup_unix.available && probe.tp_btf.available {
        Some(UnixPath::Cgroup)
    } else {
        None
    }
}

/// One line for doctor and explain.
pub fn describe(path: Option<UnixPath>) -> &'static str {
    match path {
        Some(UnixPath::Lsm) => {
            "lsm path (lsm/unix_stream_connect + unix_may_send judge the peer socket's inode; EPERM)"
        }
        Some(UnixPath::Cgroup) => {
            "cgroup fallback (cgroup/connect_unix + sendmsg_unix judge the canonical path string, EPERM; tp_btf/sys_exit backstop SIGKILLs a connect() whose peer inode is outside the allowed trees)"
        }
        None => "unavailable (needs BPF LSM, or cgroup connect_unix/sendmsg_unix (Linux 6.7+) and tp_btf)",
    }
}

impl Builder {
    pub(super) fn unix(&mut self, policy: &Policy, probe: &Probe, enforce: bool) {
        let best_effort = policy.net.as_ref().is_some_and(|n| n.unix_best_effort);
        let Some(path) = unix_path(probe) else {
            let why = format!(
                "pathname unix sockets cannot be mediated: {}; BPF LSM: {}; cgroup connect_unix: {}",
                describe(None),
                probe.bpf_lsm.detail,
                probe.cgroup_unix.detail
            );
            if best_effort {
                self.layer(
                    name::BPF,
                    "off",
                    format!("{why} (net.unix_mediation: best_effort)"),
                );
                cover!(
                self,
                    "socket: AF_UNIX pathname",
                    name::BPF,
                    "NOT mediated (net.unix_mediation: best_effort): the run can connect/send to any pathname socket its uid may write",
                );
            } else {
                self.refuse(
                    name::BPF,
                    format!("{why}; set net.unix_mediation: best_effort to run without it"),
                );
            }
            return;
        };
        let layer = match path {
            UnixPath::Lsm => name::LSM,
            UnixPath::Cgroup => name::BPF,
        };
        self.layer(
            layer,
            "on",
            format!("pathname unix sockets: {}", describe(Some(path))),
        );
        let outcome = if !enforce {
            "not enforced (mode: audit): recorded as would_deny"
        } else {
            match path {
                UnixPath::Lsm => "connect/sendto elsewhere fails with EPERM (judged by the peer socket's inode: symlinks, hardlinks, relative paths and `..` all resolve first)",
                UnixPath::Cgroup => "connect/sendto elsewhere fails with EPERM. The address must be absolute and canonical: relative paths and `.`/`..`/`//` components are refused with EPERM (the string cannot be judged). A symlink or hardlink inside a writable tree leading to a socket elsewhere: connect() succeeds in the kernel, then the process is killed with SIGKILL before it returns (tp_btf/sys_exit backstop, audited). NOT covered by the backstop: an unconnected datagram sendto() through such a symlink (delivered), and other threads of the process using the connected fd in the microseconds before the kill",
            }
        };
        for r in &policy.fs.write {
            if r.exists {
                cover!(
                    self,
                    format!(
                        "fs.write {} (line {}) → unix sockets",
                        r.written, r.span.line
                    ),
                    layer,
                    format!(
                        "sockets under {} may be connected and sent to",
                        r.path.display()
                    ),
                );
            }
        }
        if let Some(net) = &policy.net {
            for r in &net.unix {
                let how = if r.exists {
                    format!("sockets at or under {} may be connected and sent to (a socket by directory + name, so one its server re-creates still matches)", r.path.display())
                } else {
                    format!("optional and {} does not exist: a connect to exactly that path reaches the kernel, which fails it with ENOENT (no denial), or connects to the socket if its server has created it since", r.path.display())
                };
                cover!(
                    self,
                    format!("net.unix {} (line {})", r.written, r.span.line),
                    layer,
                    how,
                );
            }
        }
        cover!(
            self,
            "socket: AF_UNIX pathname (everything else)",
            layer,
            outcome
        );
        self.unix = Some(path);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn probe(lsm: bool, cgroup_unix: bool) -> Probe {
        let mut p = crate::probe::all_available();
        p.bpf_lsm.available = lsm;
        p.cgroup_unix.available = cgroup_unix;
        p
    }

    fn policy(extra: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::policy::LoadOptions {
            workspace: dir.path().to_path_buf(),
            home: dir.path().to_path_buf(),
        };
        let src = format!("version: 1\nname: t\nfs:\n  write: [\"{{workspace}}\"]\n{extra}");
        crate::policy::parse_str(&src, "<test>", &opts).unwrap()
    }

    fn plan(extra: &str, lsm: bool, cgroup_unix: bool) -> Builder {
        let mut b = Builder::explaining();
        b.unix(&policy(extra), &probe(lsm, cgroup_unix), true);
        b
    }

    #[test]
    fn lsm_is_chosen_first_then_the_cgroup_hooks() {
        assert_eq!(plan("", true, true).unix, Some(UnixPath::Lsm));
        assert_eq!(plan("", false, true).unix, Some(UnixPath::Cgroup));
        let b = plan("", false, true);
        assert!(b.refusals.is_empty());
        assert!(b
            .coverage
            .iter()
            .any(|c| c.rule.starts_with("fs.write {workspace}") && c.layer == name::BPF));
    }

    #[test]
    fn without_any_hook_the_run_is_refused() {
        let b = plan("", false, false);
        assert_eq!(b.unix, None);
        assert_eq!(b.refusals.len(), 1);
        assert_eq!(b.refusals[0].layer, name::BPF);
        assert!(b.refusals[0]
            .reason
            .contains("net.unix_mediation: best_effort"));
    }

    #[test]
    fn best_effort_runs_unmediated_and_says_so() {
        let b = plan("net:\n  unix_mediation: best_effort\n", false, false);
        assert_eq!(b.unix, None);
        assert!(b.refusals.is_empty());
        assert!(b.coverage.iter().any(|c| c
            .how
            .starts_with("NOT mediated (net.unix_mediation: best_effort)")));
        assert!(b.layers.iter().any(|l| l.status == "off"));
    }

    #[test]
    fn net_unix_entries_are_covered() {
        let b = plan(
            "net:\n  unix: [{path: /nonexistent/x.sock, optional: true}]\n",
            false,
            true,
        );
        let c = b
            .coverage
            .iter()
            .find(|c| c.rule.starts_with("net.unix /nonexistent/x.sock"))
            .unwrap();
        assert!(c.how.starts_with("optional and"), "{}", c.how);
    }
}
