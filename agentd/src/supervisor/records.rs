//! A run's side of the audit chain: its handle, the rule that a failed append stops the
//! run (fail closed), and the translation of kernel events into records.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use crate::audit::denial::canonical;
use crate::audit::event::{DeniedRepeated, Exec, Exit, FileDenied, SyscallDenied};
use crate::audit::judge::Judge;
use crate::audit::{AuditEvent, AuditHandle, Decision, Entry};
use crate::budgets::Notice;
use crate::events::Event;
use crate::layers::bpf::dns_record;
use crate::layers::name;
use crate::layers::protect::ProtectPlan;
use crate::net::dns::DnsDecision;
use crate::plan::{Plan, DNS};
use crate::policy::Policy;
use agentd_common::denials::DENIAL_FLAG_OBSERVED;
use agentd_common::denials::{DENIAL_FLAG_COMPAT_CALL, DENIAL_FLAG_SECCOMP_KILL};

/// Where the lines agentd prints about a run go: its own stderr (standalone), or the
/// caller's stderr (the daemon holds the client's descriptor).
pub enum Say {
    Stderr,
    Fd(std::fs::File),
}

impl Say {
    /// Writes `text` as it is (the budget table).
    pub fn raw(&mut self, text: &str) {
        match self {
            Say::Stderr => eprint!("{text}"),
            Say::Fd(f) => {
                let _ = f.write_all(text.as_bytes());
            }
        }
    }

    /// Writes `agentd: LINE`.
    pub fn line(&mut self, line: &str) {
        match self {
            Say::Stderr => eprintln!("agentd: {line}"),
            Say::Fd(f) => {
                let _ = writeln!(f, "agentd: {line}");
                tracing::info!("{line}");
            }
        }
    }
}

/// One run's audit handle and what it needs to describe its events.
pub struct RunAudit {
    handle: AuditHandle,
    /// Where its lines for a person go.
    pub say: Say,
    /// Set once an append fails; the run is then stopped (fail closed).
    pub failed: bool,
    /// The command starts here; relative denied paths of a process that is already gone
    /// are resolved against it.
    pub launch_cwd: PathBuf,
    /// Denials recorded so far (`agentd ps`), repeats included.
    pub denials: u64,
    /// The run is an attached workload, whose processes may live in mount namespaces of
    /// their own (a container's). A launched run's is agentd's, or agentd's copy with its
    /// own files bind-mounted read-only (`layers::protect`; the seccomp baseline refuses
    /// any other), so its exec'd files are named as agentd sees them.
    pub attached: bool,
    /// agentd's own files that are read-only to the run: their refusals (`EROFS`,
    /// `EBUSY`) are denials.
    pub protect: ProtectPlan,
    /// Path-less syscall denials already written once, by process and record: how often
    /// each happened since (see [`RunAudit::syscall_denied`]).
    repeats: HashMap<(u32, SyscallDenied), Repeat>,
}

/// A path-less syscall denial a process met again.
struct Repeat {
    layer: &'static str,
    /// Times in all, the first (written) one included.
    count: u64,
}

/// At most this many distinct (process, denial) pairs are counted at once; past it a
/// denial is written each time, as before (nothing is lost, the log is only longer).
const MAX_REPEAT_KEYS: usize = 4096;

impl RunAudit {
    pub fn new(handle: AuditHandle, launch_cwd: PathBuf, say: Say) -> Self {
        Self {
            handle,
            say,
            failed: false,
            launch_cwd,
            denials: 0,
            attached: false,
            protect: ProtectPlan::default(),
            repeats: HashMap::new(),
        }
    }

    /// Writes a path-less syscall denial the first time a process meets it; a repeat of
    /// the same record (the thread aside) is counted and written once, as a
    /// `denied_repeated` with the total, when the process exits or the run ends
    /// ([`Self::flush_repeats`]). glibc probes `clone3` at every thread and process it
    /// makes: without this, each one is an fsync'd record.
    fn syscall_denied(&mut self, layer: &'static str, decision: Decision, denied: SyscallDenied) {
        let key = (
            denied.pid,
            SyscallDenied {
                tid: 0,
                ..denied.clone()
            },
        );
        if let Some(r) = self.repeats.get_mut(&key) {
            r.count += 1;
            self.denials += 1;
            return;
        }
        if self.repeats.len() < MAX_REPEAT_KEYS {
            self.repeats.insert(key, Repeat { layer, count: 1 });
        }
        self.record(layer, Some(decision), denied.into());
    }

    /// Writes the counts of the repeated denials of process `tgid` (every process: `None`)
    /// and forgets them.
    pub fn flush_repeats(&mut self, tgid: Option<u32>) {
        let mut done: Vec<(u32, SyscallDenied)> = self
            .repeats
            .keys()
            .filter(|(pid, _)| tgid.is_none_or(|t| t == *pid))
            .cloned()
            .collect();
        done.sort_by_key(|(pid, d)| (*pid, d.nr));
        for key in done {
            let Some(r) = self.repeats.remove(&key) else {
                continue;
            };
            if r.count < 2 {
                continue;
            }
            let d = key.1;
            let rep = DeniedRepeated {
                op: d.op,
                syscall: d.syscall,
                nr: d.nr,
                errno: d.errno,
                rule: d.rule,
                pid: d.pid,
                count: r.count,
                arg: d.arg,
                signal: d.signal,
            };
            // The repeats were counted in `denials` as they happened.
            if let Err(e) = self
                .handle
                .append(r.layer, Some(Decision::Deny), rep.into())
            {
                self.append_failed(&e);
            }
        }
    }

    fn append_failed(&mut self, e: &crate::audit::AuditError) {
        if !self.failed {
            self.say.line(&format!("audit: {e}; stopping the run"));
            tracing::error!(run = self.handle.run(), "audit: {e}; stopping the run");
        }
        self.failed = true;
    }

    /// Appends one record; a failure marks the run failed (the supervisor then kills it).
    pub fn record(&mut self, layer: &str, decision: Option<Decision>, event: AuditEvent) {
        if matches!(
            decision,
            Some(Decision::Deny | Decision::Kill | Decision::WouldDeny)
        ) {
            self.denials += 1;
        }
        if let Err(e) = self.handle.append(layer, decision, event) {
            self.append_failed(&e);
        }
    }

    /// Starts a burst of records acknowledged with one fsync.
    pub fn hold(&mut self) {
        self.handle.hold();
    }

    /// Ends a burst.
    pub fn release(&mut self) {
        if let Err(e) = self.handle.release() {
            self.say.line(&format!("audit: {e}; stopping the run"));
            self.failed = true;
        }
    }

    /// Audits and prints what the budget engine did; returns the budget that killed the run.
    pub fn notice(&mut self, n: Notice) -> Option<&'static str> {
        self.say.line(&n.line);
        self.entry(n.entry);
        n.killed_by
    }

    /// Appends an entry built elsewhere.
    pub fn entry(&mut self, e: Entry) {
        self.record(e.layer, e.decision, e.event);
    }

    pub fn record_dns(&mut self, d: DnsDecision) {
        let (decision, event) = dns_record(d);
        self.record(DNS, decision, event);
    }

    /// The record of one kernel event of the run.
    pub fn record_event(&mut self, ev: Event, judge: &Judge<'_>, policy: &Policy, plan: &Plan) {
        match ev {
            // A file syscall that succeeded in an audit or learn run (the file observer):
            // a record only if the policy's fs rules would have denied it.
            Event::Denial {
                pid,
                tgid,
                nr,
                open_flags,
                path,
                base,
                flags,
                ..
            } if flags & DENIAL_FLAG_OBSERVED != 0 => {
                let enforced = judge.as_enforced();
                let (layer, denied) = crate::audit::denial::denial_record(
                    &enforced,
                    true,
                    tgid,
                    pid,
                    nr,
                    "",
                    open_flags,
                    &path,
                    base.as_deref(),
                );
                if layer != name::LANDLOCK {
                    return; // allowed as typed and where it leads
                }
                // Landlock judges the file the kernel reached. `denial_record` followed a
                // symlink only from a path allowed as typed (`symlink_target`: denied
                // there); a path denied as typed may lead somewhere allowed (`/lib` →
                // `usr/lib`), so judge where it leads.
                let reached = match &denied.symlink_target {
                    Some(target) => Some(PathBuf::from(target)),
                    None => {
                        let reached = canonical(Path::new(&denied.path));
                        let allowed_there = reached.as_ref().is_some_and(|real| {
                            let mut subject = serde_json::json!(
                                {"event": "denied", "op": denied.op, "path": real}
                            );
                            if let Some(a) = &denied.access {
                                subject["access"] = serde_json::json!(a);
                            }
                            enforced.judge(&subject).is_some_and(|(_, v)| !v.is_deny())
                        });
                        if allowed_there {
                            return;
                        }
                        reached
                    }
                };
                // Name the file itself (the rule a policy needs), the path as the
                // process passed it beside it.
                let mut denied = FileDenied {
                    would_errno: Some("EACCES".into()),
                    ..denied
                };
                if let Some(real) = reached.map(|r| r.display().to_string()) {
                    if real != denied.path {
                        let typed = std::mem::replace(&mut denied.path, real);
                        denied.path_arg.get_or_insert(typed);
                        denied.symlink_target = None;
                    }
                }
                self.record(layer, Some(Decision::WouldDeny), denied.into());
            }
            Event::Denial {
                pid,
                tgid,
                nr,
                dirfd,
                flags,
                ..
            } if flags & (DENIAL_FLAG_COMPAT_CALL | DENIAL_FLAG_SECCOMP_KILL) != 0 => {
                if flags & DENIAL_FLAG_COMPAT_CALL != 0 {
                    // dirfd: the signal it was killed with, 0 where the run only audits.
                    let killed = dirfd != 0;
                    let denied =
                        crate::audit::denial::compat_call_record(tgid, pid, nr, flags, killed);
                    let decision = if killed {
                        Decision::Kill
                    } else {
                        Decision::WouldDeny
                    };
                    self.record(name::TRACEPOINT, Some(decision), denied.into());
                } else {
                    let (layer, denied) = crate::audit::denial::seccomp_kill_record(
                        plan.seccomp,
                        tgid,
                        pid,
                        nr,
                        flags,
                        &signal_name(dirfd),
                    );
                    self.record(layer, Some(Decision::Kill), denied.into());
                }
            }
            Event::Denial {
                pid,
                tgid,
                nr,
                errno,
                dirfd,
                open_flags,
                ..
            } if nr == agentd_common::denials::nr::SOCKET => {
                let (layer, denied) = crate::audit::denial::socket_denial_record(
                    tgid,
                    pid,
                    &errno_name(errno),
                    open_flags,
                    dirfd,
                    plan.seccomp,
                    plan.caps,
                    policy.net.as_ref().is_some_and(|n| n.raw),
                );
                self.record(layer, Some(Decision::Deny), denied.into());
            }
            Event::Denial {
                pid,
                tgid,
                nr,
                errno,
                dirfd,
                open_flags,
                ..
            } if crate::audit::denial::is_plain_syscall(nr) => {
                let layers = crate::audit::denial::PlainLayers {
                    seccomp: plan.seccomp,
                    scope_signal: plan.landlock.as_ref().is_some_and(|l| l.scope_signal),
                };
                let (layer, denied) = crate::audit::denial::syscall_denial_record(
                    layers,
                    tgid,
                    pid,
                    nr,
                    &errno_name(errno),
                    open_flags,
                    &signal_name(dirfd),
                );
                self.syscall_denied(layer, Decision::Deny, denied);
            }
            Event::Denial {
                pid,
                tgid,
                nr,
                errno,
                open_flags,
                path,
                base,
                ..
            } if errno == libc::EROFS || errno == libc::EBUSY => {
                // A refusal of one of agentd's protected files; any other read-only
                // mount or busy mount point is not the run's policy at work.
                if let Some(denied) = crate::audit::denial::protected_denial_record(
                    &self.protect,
                    tgid,
                    pid,
                    nr,
                    &errno_name(errno),
                    open_flags,
                    &path,
                    base.as_deref(),
                ) {
                    self.record(name::MOUNTS, Some(Decision::Deny), denied.into());
                }
            }
            Event::Denial {
                pid,
                tgid,
                nr,
                errno,
                open_flags,
                path,
                base,
                ..
            } => {
                let (layer, denied) = crate::audit::denial::denial_record(
                    judge,
                    plan.landlock.is_some(),
                    tgid,
                    pid,
                    nr,
                    &errno_name(errno),
                    open_flags,
                    &path,
                    base.as_deref(),
                );
                self.record(layer, Some(Decision::Deny), denied.into());
            }
            Event::ReferDenial {
                pid,
                tgid,
                nr,
                errno,
                old_path,
                new_path,
                old_base,
                new_base,
                ..
            } => {
                // A protected file is a mount point: moving it is EBUSY in its directory
                // and EXDEV out of it.
                let protected = matches!(errno, libc::EROFS | libc::EBUSY | libc::EXDEV)
                    .then(|| {
                        crate::audit::denial::protected_refer_record(
                            &self.protect,
                            tgid,
                            pid,
                            nr,
                            &errno_name(errno),
                            [&old_path, &new_path],
                            [old_base.as_deref(), new_base.as_deref()],
                        )
                    })
                    .flatten();
                if let Some(denied) = protected {
                    self.record(name::MOUNTS, Some(Decision::Deny), denied.into());
                    return;
                }
                if errno == libc::EROFS || errno == libc::EBUSY {
                    return; // another read-only mount or mount point: not the policy
                }
                let call = crate::audit::denial::ReferCall {
                    shared_mounts: plan.seccomp,
                    tgid,
                    tid: pid,
                    nr,
                    errno,
                    old_path: &old_path,
                    new_path: &new_path,
                    old_base: old_base.as_deref(),
                    new_base: new_base.as_deref(),
                };
                let (layer, denied) = crate::audit::denial::refer_denial_record(
                    judge,
                    plan.landlock.is_some(),
                    &call,
                    &errno_name(errno),
                );
                self.record(layer, Some(Decision::Deny), denied.into());
            }
            fs @ Event::Fs { .. } => {
                if let Some(e) = super::fsrules::audit_record(policy, &fs) {
                    self.entry(e);
                }
            }
            Event::Exec {
                pid,
                tgid,
                ppid,
                uid,
                comm,
                filename,
                ..
            } => {
                let exec = Exec {
                    pid: tgid,
                    tid: pid,
                    ppid,
                    uid,
                    comm,
                    path: resolve_exec_path(tgid, &filename, self.attached),
                    filename,
                };
                self.record(name::BPF, Some(Decision::Allow), exec.into());
            }
            Event::Unix(denial) => {
                self.record(
                    denial.layer_name(),
                    Some(denial.decision()),
                    denial.audit_event().into(),
                );
            }
            Event::Net(denial) => {
                self.record(
                    name::BPF,
                    Some(denial.decision()),
                    denial.audit_event().into(),
                );
            }
            Event::Exit {
                tgid, exit_code, ..
            } => {
                self.flush_repeats(Some(tgid));
                let (exit_code, signal) = wait_status(exit_code);
                let exit = Exit {
                    pid: tgid,
                    exit_code,
                    signal,
                };
                self.record(name::BPF, None, exit.into());
            }
        }
    }
}

/// A raw wait status as (exit code, signal name).
pub fn wait_status(status: i32) -> (Option<i32>, Option<String>) {
    if status & 0x7f == 0 {
        (Some((status >> 8) & 0xff), None)
    } else {
        (None, Some(signal_name(status & 0x7f)))
    }
}

pub fn errno_name(errno: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("SIG{sig}"))
}

/// The exec'd file as the kernel resolved it. `filename` is what was passed to
/// execve; an absolute one is canonicalized, unless the process is in another mount
/// namespace (a container's `/bin/sh` is not the daemon's). That one, and a relative
/// one, are read back from /proc (as the process's own namespace names the file), or
/// left as given once the process is gone. A process already gone is taken to share
/// agentd's namespace unless the run is `attached` (see [`RunAudit::attached`]): a
/// short-lived `python3` of a launched run is still named `/usr/bin/python3.11`.
fn resolve_exec_path(tgid: u32, filename: &str, attached: bool) -> String {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let own_ns = !attached
        || match ns(&tgid.to_string()) {
            Some(theirs) => Some(theirs) == ns("self"),
            None => false,
        };
    if filename.starts_with('/') && own_ns {
        if let Ok(p) = std::fs::canonicalize(filename) {
            return p.display().to_string();
        }
    }
    std::fs::read_link(format!("/proc/{tgid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| filename.to_owned())
}
