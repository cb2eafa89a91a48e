//! Inode rules of a run: resolve `fs.deny` / `fs.secret` to inodes at run start,
//! hand them to the eBPF layer, and turn its `Event::Fs` records into audit records.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::audit::Decision;
use crate::events::Event;
use crate::layers::bpf::{exec, fs, BpfRuntime, FsPath, RunBpf};
use crate::policy::{Mode, Policy};
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
    let audit_only = policy.mode == Mode::Audit;
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
    bpf.enable_exec_integrity(run, path, &entries, policy.mode == Mode::Audit)
        .map_err(|e| e.to_string())
}

/// The record of a tainted run's dropped packets (one per run, at its end).
pub fn egress_record(policy: &Policy, packets: u64) -> FsRecord {
    FsRecord {
        layer: crate::layers::name::BPF,
        event: "egress_blocked",
        decision: Some(Decision::Deny),
        detail: json!({
            "packets": packets,
            "rule": "fs.secret taint: no egress after taint",
            "after_taint": policy.net.as_ref().map(|n| n.after_taint.len()).unwrap_or(0),
        }),
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
pub async fn abort_tainted_sockets(
    cgroups: &crate::layers::cgroup::RunCgroups,
) -> (FsRecord, bool) {
    let deadline = std::time::Instant::now() + STRAGGLERS_GONE;
    while !cgroups.pids().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (aborted, decision) = match crate::budgets::sockets::abort_tcp_sockets(cgroups.cgroup_id())
    {
        Ok(n) => (json!(n), Some(Decision::Deny)),
        Err(e) => (json!(format!("error: {e}")), None),
    };
    let ok = decision.is_some();
    let record = FsRecord {
        layer: crate::layers::name::BPF,
        event: "taint_sockets_aborted",
        decision,
        detail: json!({
            "tcp_sockets_aborted": aborted,
            "rule": "fs.secret taint: nothing queued while tainted leaves after the run",
        }),
    };
    (record, ok)
}

/// One audit record to append.
pub struct FsRecord {
    pub layer: &'static str,
    pub event: &'static str,
    pub decision: Option<Decision>,
    pub detail: serde_json::Value,
}

/// The audit record of an `Event::Fs`: the resolved path, the rule as written, the layer
/// that decided and what the process saw.
pub fn audit_record(policy: &Policy, ev: &Event) -> Option<FsRecord> {
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
    if *rule_kind == FS_EVENT_EXEC_OUTSIDE
        || *rule_kind == FS_EVENT_MMAP_OUTSIDE
        || *rule_kind == FS_EVENT_MPROTECT_OUTSIDE
    {
        return Some(exec_record(policy, ev));
    }
    let (section, rules) = if *rule_kind == FS_RULE_DENY {
        ("fs.deny", &policy.fs.deny)
    } else {
        ("fs.secret", &policy.fs.secret)
    };
    let rule = rules.get(*rule_index as usize);
    let op_name = fs_op_name(*op);
    let new_entry = flags & FS_EVENT_FLAG_NEW_ENTRY != 0;
    // The kernel's own resolution (bpf_d_path on the LSM path: the name actually opened,
    // e.g. a hard link's), else the inode located under the rule.
    let path = kernel_path.clone().or_else(|| {
        rule.and_then(|r| fs::locate(r, *depth, *dev, *ino))
            // A new entry's record carries its directory's inode and its own name.
            .map(|p| if new_entry { p.join(name) } else { p })
            .map(|p| p.display().to_string())
    });
    let rule_text = rule
        .map(|r| format!("{section} {}", r.written))
        .unwrap_or_else(|| format!("{section}[{rule_index}]"));
    let layer = if *layer == FS_LAYER_LSM {
        FsPath::Lsm.layer()
    } else {
        FsPath::Tracepoint.layer()
    };
    let mut detail = json!({
        "path_source": if kernel_path.is_some() { "bpf_d_path" } else { "inode lookup" },
        "op": op_name,
        "pid": tgid,
        "tid": pid,
        "path": path,
        "name": name,
        "dev": dev,
        "ino": ino,
        "rule": rule_text,
        "rule_path": rule.map(|r| r.path.display().to_string()),
    });
    let (event, decision) = match *action {
        FS_ACTION_DENY => {
            detail["action"] = json!("deny");
            detail["errno"] = json!("EACCES");
            ("denied", Some(Decision::Deny))
        }
        FS_ACTION_KILL => {
            detail["action"] = json!("kill");
            detail["signal"] = json!("SIGKILL");
            ("denied", Some(Decision::Kill))
        }
        FS_ACTION_WOULD_DENY => {
            detail["action"] = json!("would_deny");
            ("denied", Some(Decision::WouldDeny))
        }
        FS_ACTION_TAINT => {
            detail["action"] = json!("taint");
            detail["secret"] = json!(path);
            ("taint", Some(Decision::Allow))
        }
        _ => {
            detail["action"] = json!(format!("unknown action {action}"));
            ("denied", None)
        }
    };
    Some(FsRecord {
        layer,
        event,
        decision,
        detail,
    })
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

/// The audit record of an exec-integrity decision. No rule matched, so the path comes
/// from the process's open files while it still exists, else from a search of the
/// `fs.write` roots (the only places a copy of a binary can be made).
fn exec_record(policy: &Policy, ev: &Event) -> FsRecord {
    let Event::Fs {
        tgid,
        pid,
        rule_kind,
        layer,
        action,
        dev,
        ino,
        name,
        kernel_path,
        ..
    } = ev
    else {
        return FsRecord {
            layer: crate::layers::name::BPF,
            event: "denied",
            decision: None,
            detail: json!({}),
        };
    };
    let (op, rule) = if *rule_kind == FS_EVENT_EXEC_OUTSIDE {
        ("exec", "not in exec.allow")
    } else if *rule_kind == FS_EVENT_MPROTECT_OUTSIDE {
        ("mprotect_exec", "not in exec.allow or exec.libraries")
    } else {
        ("mmap_exec", "not in exec.allow or exec.libraries")
    };
    let layer = if *layer == FS_LAYER_LSM {
        FsPath::Lsm.layer()
    } else {
        FsPath::Tracepoint.layer()
    };
    let located = || {
        exec::locate_in_proc(*tgid, *dev, *ino).or_else(|| {
            policy
                .fs
                .write
                .iter()
                .filter(|r| r.exists)
                .find_map(|r| fs::locate(r, 0, *dev, *ino))
        })
    };
    // The kernel's own resolution where the hook gave one (bpf_d_path), else a lookup.
    let path = kernel_path
        .clone()
        .or_else(|| located().map(|p| p.display().to_string()));
    let mut detail = json!({
        "path_source": if kernel_path.is_some() { "bpf_d_path" } else { "inode lookup" },
        "op": op,
        "pid": tgid,
        "tid": pid,
        "path": path,
        "name": name,
        "dev": dev,
        "ino": ino,
        "rule": rule,
    });
    let decision = match *action {
        FS_ACTION_DENY => {
            detail["action"] = json!("deny");
            detail["errno"] = json!("EACCES");
            Some(Decision::Deny)
        }
        FS_ACTION_KILL => {
            detail["action"] = json!("kill");
            detail["signal"] = json!("SIGKILL");
            Some(Decision::Kill)
        }
        FS_ACTION_WOULD_DENY => {
            detail["action"] = json!("would_deny");
            Some(Decision::WouldDeny)
        }
        _ => None,
    };
    FsRecord {
        layer,
        event: "denied",
        decision,
        detail,
    }
}
