//! Inode rules of a run: resolve `fs.deny` / `fs.secret` to inodes at run start,
//! hand them to the eBPF layer, and turn its `Event::Fs` records into audit records.

use std::path::{Path, PathBuf};

use crate::audit::event::{
    EgressBlocked, FsRuleDenied, InodeHit, SocketsAborted, Taint, TaintSocketsAborted,
};
use crate::audit::{AuditEvent, Decision, Entry};
use crate::events::Event;
use crate::layers::bpf::{exec, fs, BpfRuntime, FsPath, RunBpf};
use crate::policy::Policy;
use agentd_common::fsrules::{
    FS_ACTION_DENY, FS_ACTION_KILL, FS_ACTION_TAINT, FS_ACTION_WOULD_DENY, FS_EVENT_EXEC_OUTSIDE,
    FS_EVENT_FLAG_NEW_ENTRY, FS_EVENT_MMAP_OUTSIDE, FS_EVENT_MPROTECT_OUTSIDE, FS_LAYER_LSM,
    FS_OP_CREATE, FS_OP_LINK, FS_OP_RENAME, FS_OP_RMDIR, FS_OP_SETATTR, FS_OP_UNLINK, FS_RULE_DENY,
};

/// Resolves the rules, enables the program of `path` and, for a policy with secrets
/// in enforce mode, the tainted-run packet dropper on the run's v2 cgroup `cgroup_dir`.
pub fn enable(
    bpf: &mut BpfRuntime,
    run: &mut RunBpf,
    path: FsPath,
    policy: &Policy,
    cgroup_dir: &Path,
) -> Result<(), String> {
    let audit_only = policy.mode.records_only();
    let entries = fs::resolve(&policy.fs, audit_only).map_err(|e| e.to_string())?;
    bpf.enable_fs_rules(run, path, &entries)
        .map_err(|e| e.to_string())?;
    if !policy.fs.secret.is_empty() && !audit_only {
        bpf.enable_taint_egress(run, cgroup_dir)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Resolves `exec.allow` (with the interpreters it implies) and `exec.libraries` and
/// enables exec integrity on `path`.
pub fn enable_exec(
    bpf: &mut BpfRuntime,
    run: &mut RunBpf,
    path: FsPath,
    policy: &Policy,
) -> Result<(), String> {
    let mut executables: Vec<PathBuf> = policy
        .exec
        .allow
        .iter()
        .filter(|r| r.exists)
        .map(|r| r.path.clone())
        .collect();
    executables.extend(
        crate::layers::landlock::implied_exec_paths(&executables)
            .into_iter()
            .map(|(p, _)| p),
    );
    let libraries: Vec<PathBuf> = match &policy.exec.libraries {
        Some(rules) => rules
            .iter()
            .filter(|r| r.exists)
            .map(|r| r.path.clone())
            .collect(),
        None => crate::policy::DEFAULT_LIBRARIES
            .iter()
            .map(PathBuf::from)
            .collect(),
    };
    let entries = exec::resolve(&executables, &libraries);
    bpf.enable_exec_integrity(run, path, &entries, policy.mode.records_only())
        .map_err(|e| e.to_string())
}

/// The record of a tainted run's dropped packets (one per run, at its end).
pub fn egress_record(policy: &Policy, packets: u64) -> Entry {
    let blocked = EgressBlocked {
        packets,
        rule: "fs.secret taint: no egress after taint".into(),
        after_taint: policy
            .net
            .as_ref()
            .map(|n| n.after_taint.len())
            .unwrap_or(0),
    };
    Entry {
        layer: crate::layers::name::BPF,
        decision: Some(Decision::Deny),
        event: blocked.into(),
    }
}

/// How long the end of a tainted run waits for killed stragglers to be gone before it
/// aborts the run's sockets (a process still alive could open new ones).
const STRAGGLERS_GONE: std::time::Duration = std::time::Duration::from_secs(2);

/// End of a tainted run: destroys every TCP socket of the run's cgroup (SOCK_DESTROY,
/// as the network-budget kill does) before the programs are detached. A socket closed
/// by an exiting process keeps its unsent data and retransmits it; the taint egress
/// program drops it only while attached, so without this, bytes queued while tainted
/// would leave once the run is over. Untainted runs keep the kernel's graceful close:
/// their queued data was allowed. Returns the record (count, or the error: then the
/// data may still leave, which the record says).
/// The second value says whether the sockets were aborted.
pub async fn abort_tainted_sockets(cgroups: &crate::layers::cgroup::RunCgroups) -> (Entry, bool) {
    let deadline = std::time::Instant::now() + STRAGGLERS_GONE;
    while !cgroups.pids().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let aborted = SocketsAborted::from_result(crate::budgets::sockets::abort_tcp_sockets(
        cgroups.cgroup_id(),
    ));
    let ok = matches!(aborted, SocketsAborted::Count(_));
    let event = TaintSocketsAborted {
        tcp_sockets_aborted: aborted,
        rule: "fs.secret taint: nothing queued while tainted leaves after the run".into(),
    };
    let entry = Entry {
        layer: crate::layers::name::BPF,
        decision: ok.then_some(Decision::Deny),
        event: event.into(),
    };
    (entry, ok)
}

/// The name of inode (`dev`, `ino`) that the kernel gave (`bpf_d_path`), as agentd's root
/// sees it. The kernel resolves against the task's root, and a file the run did not
/// open itself (a descriptor handed in, as its stdin) is on a mount of agentd's
/// namespace, which a run in a mount namespace of its own does not reach from its root:
/// the kernel then names it from the top of agentd's namespace (`/newroot/tmp/f` where
/// agentd runs chrooted in `/newroot`). Kept: the kernel's name if it leads to that
/// inode, else the longest of its suffixes that does, else the kernel's as it came.
fn seen_from_agentd(path: &str, dev: u32, ino: u64) -> String {
    use std::os::unix::fs::MetadataExt;
    let is_it = |p: &Path| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.ino() == ino && agentd_common::fsrules::kernel_dev(m.dev()) == dev)
    };
    let kernel = Path::new(path);
    if !kernel.is_absolute() || is_it(kernel) {
        return path.to_owned();
    }
    let parts: Vec<_> = kernel.components().skip(1).collect();
    for skip in 1..parts.len() {
        let candidate: PathBuf = std::iter::once(std::path::Component::RootDir)
            .chain(parts[skip..].iter().copied())
            .collect();
        if is_it(&candidate) {
            return candidate.display().to_string();
        }
    }
    path.to_owned()
}

/// The audit record of an `Event::Fs`: the resolved path, the rule as written, the layer
/// that decided and what the process saw.
pub fn audit_record(policy: &Policy, ev: &Event) -> Option<Entry> {
    let Event::Fs {
        tgid,
        pid,
        rule_kind,
        rule_index,
        layer,
        action,
        dev,
        ino,
        depth,
        name,
        op,
        flags,
        kernel_path,
        ..
    } = ev
    else {
        return None;
    };
    let layer = if *layer == FS_LAYER_LSM {
        FsPath::Lsm.layer()
    } else {
        FsPath::Tracepoint.layer()
    };
    let kernel_path = &kernel_path
        .as_deref()
        .map(|p| seen_from_agentd(p, *dev, *ino));
    // Exec integrity has no rule (nothing matched) and so no `rule_path`.
    let (op, path, rule, rule_path) = match *rule_kind {
        FS_EVENT_EXEC_OUTSIDE | FS_EVENT_MMAP_OUTSIDE | FS_EVENT_MPROTECT_OUTSIDE => {
            let (op, rule) = exec_op(*rule_kind);
            let path = exec_path(policy, *tgid, *dev, *ino, kernel_path);
            (op, path, rule.to_owned(), None)
        }
        _ => {
            let (section, rules) = if *rule_kind == FS_RULE_DENY {
                ("fs.deny", &policy.fs.deny)
            } else {
                ("fs.secret", &policy.fs.secret)
            };
            let rule = rules.get(*rule_index as usize);
            let new_entry = flags & FS_EVENT_FLAG_NEW_ENTRY != 0;
            // The kernel's own resolution (bpf_d_path on the LSM path: the name actually
            // opened, e.g. a hard link's), else the inode located under the rule.
            let path = kernel_path.clone().or_else(|| {
                rule.and_then(|r| fs::locate(r, *depth, *dev, *ino))
                    // A new entry's record carries its directory's inode and its own name.
                    .map(|p| if new_entry { p.join(name) } else { p })
                    .map(|p| p.display().to_string())
            });
            let rule_text = rule
                .map(|r| format!("{section} {}", r.written))
                .unwrap_or_else(|| format!("{section}[{rule_index}]"));
            let rule_path = rule.map(|r| r.path.display().to_string());
            (fs_op_name(*op), path, rule_text, Some(rule_path))
        }
    };
    let mut hit = InodeHit {
        path_source: if kernel_path.is_some() {
            "bpf_d_path"
        } else {
            "inode lookup"
        }
        .into(),
        op: op.into(),
        pid: *tgid,
        tid: *pid,
        path,
        name: name.clone(),
        dev: *dev,
        ino: *ino,
        rule,
        action: None,
        errno: None,
        signal: None,
    };
    let mut decision = apply_action(&mut hit, *action);
    let event: AuditEvent = match rule_path {
        None => hit.into(),
        Some(rule_path) if *action == FS_ACTION_TAINT => {
            hit.action = Some("taint".into());
            decision = Some(Decision::Allow);
            Taint {
                secret: hit.path.clone(),
                hit,
                rule_path,
            }
            .into()
        }
        Some(rule_path) => {
            if decision.is_none() {
                hit.action = Some(format!("unknown action {action}"));
            }
            FsRuleDenied { hit, rule_path }.into()
        }
    };
    Some(Entry {
        layer,
        decision,
        event,
    })
}

/// What the process saw under `action` (deny: `EACCES`; kill: `SIGKILL`; would_deny:
/// nothing) and the decision; any other action is left to the caller.
fn apply_action(hit: &mut InodeHit, action: u32) -> Option<Decision> {
    match action {
        FS_ACTION_DENY => {
            hit.action = Some("deny".into());
            hit.errno = Some("EACCES".into());
            Some(Decision::Deny)
        }
        FS_ACTION_KILL => {
            hit.action = Some("kill".into());
            hit.signal = Some("SIGKILL".into());
            Some(Decision::Kill)
        }
        FS_ACTION_WOULD_DENY => {
            hit.action = Some("would_deny".into());
            Some(Decision::WouldDeny)
        }
        _ => None,
    }
}

/// The audit name of an `FS_OP_*`.
fn fs_op_name(op: u32) -> &'static str {
    match op {
        FS_OP_UNLINK => "unlink",
        FS_OP_RMDIR => "rmdir",
        FS_OP_RENAME => "rename",
        FS_OP_LINK => "link",
        FS_OP_SETATTR => "setattr",
        FS_OP_CREATE => "create",
        _ => "open",
    }
}

/// The `op` and `rule` of an exec-integrity decision.
fn exec_op(rule_kind: u32) -> (&'static str, &'static str) {
    match rule_kind {
        FS_EVENT_EXEC_OUTSIDE => ("exec", "not in exec.allow"),
        FS_EVENT_MPROTECT_OUTSIDE => ("mprotect_exec", "not in exec.allow or exec.libraries"),
        _ => ("mmap_exec", "not in exec.allow or exec.libraries"),
    }
}

/// The path of an exec-integrity decision. No rule matched, so it comes from the kernel
/// (bpf_d_path) where the hook gave one, else from the process's open files while it
/// still exists, else from a search of the `fs.write` roots (the only places a copy of a
/// binary can be made).
fn exec_path(
    policy: &Policy,
    tgid: u32,
    dev: u32,
    ino: u64,
    kernel_path: &Option<String>,
) -> Option<String> {
    let located = || {
        exec::locate_in_proc(tgid, dev, ino).or_else(|| {
            policy
                .fs
                .write
                .iter()
                .filter(|r| r.exists)
                .find_map(|r| fs::locate(r, 0, dev, ino))
        })
    };
    // A name read from the run's /proc/PID/fd is the kernel's too: where the run's mount
    // namespace is not agentd's (a private /proc), it is spelled from that namespace's
    // top, which agentd's root may not be (a chroot, as in the test VM).
    kernel_path
        .clone()
        .or_else(|| located().map(|p| seen_from_agentd(&p.display().to_string(), dev, ino)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_name_from_the_top_of_agentds_namespace_is_cut_to_the_one_agentd_sees() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("id");
        std::fs::write(&file, "x").unwrap();
        let m = std::fs::metadata(&file).unwrap();
        let (dev, ino) = (agentd_common::fsrules::kernel_dev(m.dev()), m.ino());
        let seen = file.display().to_string();
        assert_eq!(seen_from_agentd(&seen, dev, ino), seen);
        let from_top = format!("/newroot{seen}");
        assert_eq!(seen_from_agentd(&from_top, dev, ino), seen);
        // No suffix is that inode: the kernel's name stays.
        assert_eq!(seen_from_agentd(&from_top, dev, ino + 1), from_top);
        assert_eq!(seen_from_agentd("relative/id", dev, ino), "relative/id");
    }
}
