//! Turns a kernel-reported denial (a file or exec syscall that failed with `EACCES` or
//! `EPERM`) into an audit record: the operation, the resolved path, the errno, and — by
//! re-judging it under the run's own policy — the layer and rule that denied it.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::judge::{Judge, Verdict};
use agentd_common::denials::{nr, DENIAL_AT_FDCWD};

/// What the process tried, as the audit record names it.
pub fn op_name(syscall: u32) -> &'static str {
    match syscall {
        nr::OPEN | nr::OPENAT | nr::OPENAT2 => "open",
        nr::CREAT => "create",
        nr::TRUNCATE => "truncate",
        nr::MKDIR | nr::MKDIRAT => "mkdir",
        nr::RMDIR => "rmdir",
        nr::UNLINK | nr::UNLINKAT => "unlink",
        nr::EXECVE | nr::EXECVEAT => "exec",
        _ => "syscall",
    }
}

fn syscall_name(syscall: u32) -> &'static str {
    match syscall {
        nr::OPEN => "open",
        nr::OPENAT => "openat",
        nr::OPENAT2 => "openat2",
        nr::CREAT => "creat",
        nr::TRUNCATE => "truncate",
        nr::MKDIR => "mkdir",
        nr::MKDIRAT => "mkdirat",
        nr::RMDIR => "rmdir",
        nr::UNLINK => "unlink",
        nr::UNLINKAT => "unlinkat",
        nr::EXECVE => "execve",
        nr::EXECVEAT => "execveat",
        _ => "unknown",
    }
}

/// `read` or `write` for file operations; `None` for exec.
fn access(op: &str, open_flags: u64) -> Option<&'static str> {
    match op {
        "exec" => None,
        "open" => {
            let writes = open_flags & (libc::O_ACCMODE as u64) != libc::O_RDONLY as u64
                || open_flags & ((libc::O_CREAT | libc::O_TRUNC) as u64) != 0;
            Some(if writes { "write" } else { "read" })
        }
        _ => Some("write"),
    }
}

/// How a relative path was made absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    /// Absolute already, or resolved through the live process's /proc entry.
    Exact,
    /// The process was gone; resolved against the cwd the command was launched in.
    LaunchCwd,
    /// Not resolvable (a dirfd of a process that is gone).
    Unresolved,
}

/// An absolute path for `path` as the process passed it, resolving a relative one against
/// its cwd or `dirfd` (read from /proc while the process still exists).
fn resolve(tgid: u32, dirfd: i32, path: &str, launch_cwd: &Path) -> (String, Base) {
    if path.starts_with('/') {
        return (path.to_owned(), Base::Exact);
    }
    let base = if dirfd == DENIAL_AT_FDCWD {
        std::fs::read_link(format!("/proc/{tgid}/cwd"))
    } else {
        std::fs::read_link(format!("/proc/{tgid}/fd/{dirfd}"))
    };
    match base {
        Ok(b) => (normalize(&b.join(path)).display().to_string(), Base::Exact),
        Err(_) if dirfd == DENIAL_AT_FDCWD => (
            normalize(&launch_cwd.join(path)).display().to_string(),
            Base::LaunchCwd,
        ),
        Err(_) => (path.to_owned(), Base::Unresolved),
    }
}

/// Lexical `.`/`..` removal (the path may not exist, so no canonicalize).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Where `path` really leads when a symlink is on the way (the file itself, or for a
/// file that does not exist, its directory); `None` when it leads to itself.
fn symlink_target(path: &Path) -> Option<String> {
    let real = std::fs::canonicalize(path).ok().or_else(|| {
        let dir = std::fs::canonicalize(path.parent()?).ok()?;
        Some(dir.join(path.file_name()?))
    })?;
    (real != path).then(|| real.display().to_string())
}

/// The record's layer and fields.
#[allow(clippy::too_many_arguments)]
pub fn denial_record(
    judge: &Judge<'_>,
    landlock_active: bool,
    launch_cwd: &Path,
    tgid: u32,
    tid: u32,
    syscall: u32,
    errno: &str,
    dirfd: i32,
    open_flags: u64,
    path: &str,
) -> (&'static str, Value) {
    let op = op_name(syscall);
    let (resolved, base) = resolve(tgid, dirfd, path, launch_cwd);
    let access = access(op, open_flags);
    let mut subject = json!({"event": "denied", "op": op, "path": resolved});
    if let Some(a) = access {
        subject["access"] = json!(a);
    }
    // Landlock judges the file the kernel reached, so a symlink to somewhere the policy
    // does not allow is denied even though the path as typed is allowed: judge the
    // target too (resolved now, after the fact).
    let mut target = None;
    let mut verdict = judge.judge(&subject).map(|(_, v)| v);
    if !matches!(verdict, Some(Verdict::Deny(_))) {
        if let Some(real) = symlink_target(Path::new(&resolved)) {
            let mut by_target = subject.clone();
            by_target["path"] = json!(real);
            verdict = judge.judge(&by_target).map(|(_, v)| v);
            target = Some(real);
        }
    }
    let (layer, rule) = match verdict {
        Some(Verdict::Deny(rule)) if landlock_active => ("landlock", rule),
        _ => (
            "kernel",
            "no rule: the policy allows this access; the kernel refused it (file permissions or another LSM)".to_owned(),
        ),
    };
    let mut detail = json!({
        "op": op,
        "path": resolved,
        "errno": errno,
        "rule": rule,
        "pid": tgid,
        "tid": tid,
        "syscall": syscall_name(syscall),
    });
    if let Some(a) = access {
        detail["access"] = json!(a);
    }
    if path != resolved {
        detail["path_arg"] = json!(path);
    }
    if let Some(t) = target {
        detail["symlink_target"] = json!(t);
    }
    match base {
        Base::Exact => {}
        // Honest about the guess: the process may have changed directory before exiting.
        Base::LaunchCwd => detail["path_base"] = json!("launch cwd (process gone)"),
        Base::Unresolved => detail["path_unresolved"] = json!(true),
    }
    (layer, detail)
}
