//! Turns a kernel-reported denial (a file or exec syscall that failed with `EACCES` or
//! `EPERM`) into an audit record: the operation, the resolved path, the errno, and — by
//! re-judging it under the run's own policy — the layer and rule that denied it.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::event::{FileDenied, SocketDenied, SyscallDenied};
use super::judge::{Judge, Verdict};
use crate::layers::protect::ProtectPlan;
use agentd_common::denials::nr;

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
        nr::SOCKET => "socket",
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
        nr::SOCKET => "socket",
        nr::LINK => "link",
        nr::LINKAT => "linkat",
        nr::RENAME => "rename",
        nr::RENAMEAT => "renameat",
        nr::RENAMEAT2 => "renameat2",
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
    /// Absolute already, or joined to the directory the kernel walked during the call.
    Exact,
    /// Relative, and the kernel could not tell its directory: kept as passed.
    Unresolved,
}

/// An absolute path for `path` as the process passed it: a relative one joined to `base`,
/// the directory (cwd or `dirfd`'s) the kernel walked during the call. Never resolved
/// later through /proc: the process may have changed directory, or exited, by then.
fn resolve(path: &str, base: Option<&str>) -> (String, Base) {
    if path.starts_with('/') {
        return (path.to_owned(), Base::Exact);
    }
    match base {
        Some(dir) => (
            normalize(&Path::new(dir).join(path)).display().to_string(),
            Base::Exact,
        ),
        None => (path.to_owned(), Base::Unresolved),
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
    let real = canonical(path)?;
    (real != path).then(|| real.display().to_string())
}

/// `path` with every symlink resolved; for a file that does not exist (unlinked,
/// renamed), its directory resolved and its name kept. `None` if the directory is gone
/// too.
pub fn canonical(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok().or_else(|| {
        let dir = std::fs::canonicalize(path.parent()?).ok()?;
        Some(dir.join(path.file_name()?))
    })
}

/// The record of a raw inet, packet or netlink `socket(2)` that failed with
/// `EPERM`/`EACCES` before any cgroup hook ran: the seccomp baseline refuses packet
/// sockets and netlink other than `NETLINK_ROUTE`; the kernel's `CAP_NET_RAW` check
/// (the caps layer dropped it) refuses raw sockets. `open_flags` and `sock_type` are
/// the tracker's encoding (`family | protocol << 32`, the type); `seccomp` and
/// `caps_dropped` say which of those layers the run has, `raw_allowed` is `net.raw`.
#[allow(clippy::too_many_arguments)]
pub fn socket_denial_record(
    tgid: u32,
    tid: u32,
    errno: &str,
    open_flags: u64,
    sock_type: i32,
    seccomp: bool,
    caps_dropped: bool,
    raw_allowed: bool,
) -> (&'static str, SocketDenied) {
    let family = (open_flags & 0xffff_ffff) as i32;
    let protocol = (open_flags >> 32) as i32;
    let cap_rule = if raw_allowed {
        "CAP_NET_RAW dropped (the caps layer drops it even with net.raw: true)"
    } else {
        "CAP_NET_RAW dropped (net.raw not allowed)"
    };
    let (layer, rule) = match family {
        libc::AF_PACKET if seccomp => {
            ("seccomp", "AF_PACKET sockets are denied (seccomp baseline)")
        }
        libc::AF_NETLINK if seccomp => (
            "seccomp",
            "netlink other than NETLINK_ROUTE is denied (seccomp baseline)",
        ),
        libc::AF_INET | libc::AF_INET6 | libc::AF_PACKET if caps_dropped => ("caps", cap_rule),
        _ => (
            "kernel",
            "no rule: agentd's layers allow this socket; the kernel refused it",
        ),
    };
    let family_name = match family {
        libc::AF_INET => "AF_INET".to_owned(),
        libc::AF_INET6 => "AF_INET6".to_owned(),
        libc::AF_PACKET => "AF_PACKET".to_owned(),
        libc::AF_NETLINK => "AF_NETLINK".to_owned(),
        other => other.to_string(),
    };
    let type_name = match sock_type {
        libc::SOCK_RAW => "SOCK_RAW".to_owned(),
        libc::SOCK_DGRAM => "SOCK_DGRAM".to_owned(),
        libc::SOCK_STREAM => "SOCK_STREAM".to_owned(),
        10 => "SOCK_PACKET".to_owned(),
        other => other.to_string(),
    };
    let denied = SocketDenied {
        op: "socket".into(),
        family: family_name,
        sock_type: type_name,
        protocol,
        errno: errno.into(),
        rule: rule.into(),
        pid: tgid,
        tid,
        syscall: "socket".into(),
    };
    (layer, denied)
}

/// Whether the tracker's event for syscall `nr` is a path-less one
/// ([`syscall_denial_record`]).
pub fn is_plain_syscall(nr: u32) -> bool {
    agentd_common::denials::seccomp_denied_nr(nr)
        || matches!(
            nr,
            nr::CLONE | nr::CLONE3 | nr::KILL | nr::TKILL | nr::TGKILL
        )
}

/// What the run's layers are, for [`syscall_denial_record`].
#[derive(Debug, Clone, Copy)]
pub struct PlainLayers {
    pub seccomp: bool,
    pub scope_signal: bool,
}

/// Real and effective uid of a live process, from /proc (`None` once it is gone).
fn uids(tgid: u32) -> Option<(u32, u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{tgid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let mut it = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// Layer and rule of a refused signal. The kernel's credential check
/// (`kill_ok_by_cred`) runs before landlock's signal scope, so landlock is named only when
/// the sender could signal the target by uid; nothing is judged once either is gone.
fn signal_verdict(layers: PlainLayers, sender: u32, target: i64) -> (&'static str, String) {
    let target = u32::try_from(target).ok().filter(|t| *t > 0);
    let (Some(s), Some(t)) = (uids(sender), target.and_then(uids)) else {
        return (
            "kernel",
            "not judged: the sender or the target was gone before agentd could read its credentials".into(),
        );
    };
    let (s_uid, s_euid, _) = s;
    let (t_uid, _, t_suid) = t;
    let cred_ok = s_euid == 0 || [s_uid, s_euid].iter().any(|u| *u == t_uid || *u == t_suid);
    if cred_ok && layers.scope_signal {
        (
            "landlock",
            "landlock scope signal: no signals to processes outside the run".into(),
        )
    } else {
        (
            "kernel",
            "no rule: the sender's uid may not signal the target (kernel permission check)".into(),
        )
    }
}

/// The record of a path-less syscall the tracker saw fail: the seccomp deny list,
/// `clone` with namespace flags, `clone3`, and the kill family. `arg0` and `signal` are
/// the tracker's `open_flags` and the name of its `dirfd` (the signal).
pub fn syscall_denial_record(
    layers: PlainLayers,
    tgid: u32,
    tid: u32,
    syscall: u32,
    errno: &str,
    arg0: u64,
    signal: &str,
) -> (&'static str, SyscallDenied) {
    let ns_flags: u64 = crate::layers::seccomp::NAMESPACE_CLONE_FLAGS
        .iter()
        .map(|(_, f)| f)
        .fold(0, |a, f| a | f);
    let kill = matches!(syscall, nr::KILL | nr::TKILL | nr::TGKILL);
    let (layer, rule): (&'static str, String) = match syscall {
        _ if kill => signal_verdict(layers, tgid, arg0 as i32 as i64),
        _ if !layers.seccomp => (
            "kernel",
            "no rule: the run has no seccomp layer; the kernel refused it".into(),
        ),
        nr::CLONE if arg0 & ns_flags != 0 => (
            "seccomp",
            "clone with a namespace flag is denied (seccomp baseline)".into(),
        ),
        nr::CLONE => (
            "kernel",
            "no rule: clone without a namespace flag; the kernel refused it".into(),
        ),
        nr::CLONE3 => (
            "seccomp",
            "clone3 is denied with ENOSYS, its flags cannot be inspected (seccomp baseline)".into(),
        ),
        _ => ("seccomp", "on the deny list (seccomp baseline)".into()),
    };
    let arg = match syscall {
        nr::CLONE => Some(format!("{arg0:#x}")),
        _ if kill => Some((arg0 as i32).to_string()),
        _ => None,
    };
    let denied = SyscallDenied {
        op: "syscall".into(),
        syscall: crate::layers::seccomp::syscall_name(syscall),
        nr: syscall,
        errno: Some(errno.into()),
        rule,
        pid: tgid,
        tid,
        abi: None,
        arg,
        signal: kill.then(|| signal.to_owned()),
    };
    (layer, denied)
}

/// The syscall table a `DenialEvent`'s ABI bits name (none: the native one).
fn abi_of(flags: u32) -> crate::layers::seccomp::Abi {
    use agentd_common::denials::{DENIAL_FLAG_ABI_I386, DENIAL_FLAG_ABI_X32};
    if flags & DENIAL_FLAG_ABI_I386 != 0 {
        crate::layers::seccomp::Abi::I386
    } else if flags & DENIAL_FLAG_ABI_X32 != 0 {
        crate::layers::seccomp::Abi::X32
    } else {
        crate::layers::seccomp::Abi::Native
    }
}

/// The record of a thread a seccomp filter killed (the tracker's
/// `DENIAL_FLAG_SECCOMP_KILL` event): `nr` as the filter saw it, `flags` the event's
/// ABI bits, `signal` the name of the signal it exits with. agentd's filter kills only
/// non-native ABIs, so a kill of a native call is named as the process's own filter's.
pub fn seccomp_kill_record(
    seccomp: bool,
    tgid: u32,
    tid: u32,
    nr: u32,
    flags: u32,
    signal: &str,
) -> (&'static str, SyscallDenied) {
    let abi = abi_of(flags);
    let (layer, rule) = match abi {
        crate::layers::seccomp::Abi::Native => (
            "kernel",
            "no rule of agentd: a seccomp filter the process installed killed it (agentd's filter kills only non-native syscall ABIs)",
        ),
        _ if !seccomp => (
            "kernel",
            "no rule of agentd: the run has no seccomp layer; a filter the process installed killed it",
        ),
        _ => ("seccomp", SECCOMP_ABI_RULE),
    };
    let denied = SyscallDenied {
        op: "syscall".into(),
        syscall: crate::layers::seccomp::syscall_name_of(abi, nr),
        nr,
        errno: None,
        rule: rule.into(),
        pid: tgid,
        tid,
        abi: Some(abi.as_str().into()),
        arg: None,
        signal: Some(signal.to_owned()),
    };
    (layer, denied)
}

/// The record of a non-native syscall (`int 0x80`, x32) the `sys_exit` program saw in a
/// run without agentd's seccomp filter (`DENIAL_FLAG_COMPAT_CALL`): killed after the call
/// (`killed`), or only reported where the run audits.
pub fn compat_call_record(tgid: u32, tid: u32, nr: u32, flags: u32, killed: bool) -> SyscallDenied {
    let abi = abi_of(flags);
    SyscallDenied {
        op: "syscall".into(),
        syscall: crate::layers::seccomp::syscall_name_of(abi, nr),
        nr,
        errno: None,
        // In audit mode, what enforce mode's seccomp filter would have done.
        rule: if killed {
            COMPAT_CALL_RULE
        } else {
            SECCOMP_ABI_RULE
        }
        .into(),
        pid: tgid,
        tid,
        abi: Some(abi.as_str().into()),
        arg: None,
        signal: killed.then(|| "SIGKILL".into()),
    }
}

/// The `rule` of a non-native call agentd's seccomp filter kills.
pub const SECCOMP_ABI_RULE: &str =
    "non-native syscall ABI (int 0x80, x32) kills the process (seccomp baseline)";

/// The `rule` of [`compat_call_record`] for a killed call.
pub const COMPAT_CALL_RULE: &str = "non-native syscall ABI (int 0x80, x32) in a run without agentd's seccomp filter: the process is killed (SIGKILL) after the call, which the kernel has made";

/// The record's layer and fields.
#[allow(clippy::too_many_arguments)]
pub fn denial_record(
    judge: &Judge<'_>,
    landlock_active: bool,
    tgid: u32,
    tid: u32,
    syscall: u32,
    errno: &str,
    open_flags: u64,
    path: &str,
    base: Option<&str>,
) -> (&'static str, FileDenied) {
    let op = op_name(syscall);
    let (resolved, base) = resolve(path, base);
    let access = access(op, open_flags);
    let mut subject = json!({"event": "denied", "op": op, "path": resolved});
    if let Some(a) = access {
        subject["access"] = json!(a);
    }
    // Landlock judges the file the kernel reached, so a symlink to somewhere the policy
    // does not allow is denied even though the path as typed is allowed: judge the
    // target too (resolved now, after the fact).
    let mut target = None;
    let mut verdict = if base == Base::Exact {
        judge.judge(&subject).map(|(_, v)| v)
    } else {
        None
    };
    if base == Base::Exact && !matches!(verdict, Some(Verdict::Deny(_))) {
        if let Some(real) = symlink_target(Path::new(&resolved)) {
            let mut by_target = subject.clone();
            by_target["path"] = json!(real);
            verdict = judge.judge(&by_target).map(|(_, v)| v);
            target = Some(real);
        }
    }
    let (layer, rule) = match verdict {
        _ if base == Base::Unresolved => (
            "kernel",
            "not judged: a relative path whose directory the kernel could not tell".to_owned(),
        ),
        Some(Verdict::Deny(rule)) if landlock_active => ("landlock", rule),
        _ => (
            "kernel",
            "no rule: the policy allows this access; the kernel refused it (file permissions or another LSM)".to_owned(),
        ),
    };
    let denied = FileDenied {
        op: op.into(),
        path_arg: (path != resolved).then(|| path.to_owned()),
        path: resolved,
        errno: errno.into(),
        would_errno: None,
        rule,
        pid: tgid,
        tid,
        syscall: syscall_name(syscall).into(),
        access: access.map(str::to_owned),
        symlink_target: target,
        path_unresolved: base == Base::Unresolved,
        new_path: None,
    };
    (layer, denied)
}

/// The record of a call refused with `EROFS` or `EBUSY` on one of agentd's own files
/// (or a directory held above one), which are read-only to the run
/// (`layers::protect`); `None` for any other read-only mount or busy mount point.
#[allow(clippy::too_many_arguments)]
pub fn protected_denial_record(
    protect: &ProtectPlan,
    tgid: u32,
    tid: u32,
    syscall: u32,
    errno: &str,
    open_flags: u64,
    path: &str,
    base: Option<&str>,
) -> Option<FileDenied> {
    let (resolved, base) = resolve(path, base);
    if base != Base::Exact {
        return None;
    }
    let real = canonical(Path::new(&resolved))?;
    let rule = protect.rule_for(&real)?;
    let op = op_name(syscall);
    Some(FileDenied {
        op: op.into(),
        path_arg: (path != real.as_os_str()).then(|| path.to_owned()),
        path: real.display().to_string(),
        errno: errno.into(),
        would_errno: None,
        rule,
        pid: tgid,
        tid,
        syscall: syscall_name(syscall).into(),
        access: access(op, open_flags).map(str::to_owned),
        symlink_target: None,
        path_unresolved: false,
        new_path: None,
    })
}

/// [`protected_denial_record`] for a `link`/`rename` family call: the protected one of
/// its two paths.
pub fn protected_refer_record(
    protect: &ProtectPlan,
    tgid: u32,
    tid: u32,
    syscall: u32,
    errno: &str,
    paths: [&str; 2],
    bases: [Option<&str>; 2],
) -> Option<FileDenied> {
    let link = matches!(syscall, nr::LINK | nr::LINKAT);
    let resolved = |i: usize| {
        let (p, base) = resolve(paths[i], bases[i]);
        (base == Base::Exact).then_some(p)
    };
    let (old, new) = (resolved(0), resolved(1));
    let hit = [&old, &new].into_iter().flatten().find_map(|p| {
        let real = canonical(Path::new(p))?;
        protect.rule_for(&real).map(|rule| (real, rule))
    })?;
    Some(FileDenied {
        op: if link { "link" } else { "rename" }.into(),
        path_arg: None,
        path: old.unwrap_or_else(|| paths[0].to_owned()),
        errno: errno.into(),
        would_errno: None,
        rule: format!("{} ({})", hit.1, hit.0.display()),
        pid: tgid,
        tid,
        syscall: syscall_name(syscall).into(),
        access: Some("write".into()),
        symlink_target: None,
        path_unresolved: false,
        new_path: Some(new.unwrap_or_else(|| paths[1].to_owned())),
    })
}

/// What a `link`/`rename` family call passed, for [`refer_denial_record`].
pub struct ReferCall<'a> {
    /// The run cannot have made a mount namespace of its own (agentd makes none, and the
    /// seccomp layer refuses `unshare`/`clone` with `CLONE_NEWNS`): its mounts are
    /// agentd's, also once the process is gone.
    pub shared_mounts: bool,
    pub tgid: u32,
    pub tid: u32,
    pub nr: u32,
    pub errno: i32,
    pub old_path: &'a str,
    pub new_path: &'a str,
    /// The directories the kernel resolved relative paths against (see [`resolve`]).
    pub old_base: Option<&'a str>,
    pub new_base: Option<&'a str>,
}

/// The mount id of directory `dir` as process `tgid` sees it: through its root while it
/// lives, else (`shared_mounts`: the run cannot have a mount namespace of its own) as
/// agentd sees it.
fn mount_id(tgid: u32, dir: &Path, shared_mounts: bool) -> Option<u64> {
    statx_mnt_id(&format!("/proc/{tgid}/root{}", dir.display()))
        .or_else(|| shared_mounts.then(|| statx_mnt_id(&dir.display().to_string()))?)
}

fn statx_mnt_id(path: &str) -> Option<u64> {
    let p = std::ffi::CString::new(path).ok()?;
    // SAFETY: an all-zero statx is valid; statx fills it.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a writable statx.
    let rc = unsafe { libc::statx(libc::AT_FDCWD, p.as_ptr(), 0, libc::STATX_MNT_ID, &mut stx) };
    (rc == 0 && stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id)
}

/// Whether the policy lets the run write under `dir` (`fs.write`), and exec there.
fn rights(judge: &Judge<'_>, dir: &Path) -> (bool, bool) {
    let d = dir.display().to_string();
    let allowed =
        |rec: serde_json::Value| matches!(judge.judge(&rec), Some((_, Verdict::Allow(_))));
    (
        allowed(json!({"event": "denied", "op": "open", "path": d, "access": "write"})),
        allowed(json!({"event": "exec", "path": d})),
    )
}

/// The record of a `link`/`rename` family call that failed with `EXDEV`, `EACCES` or
/// `EPERM`. `EXDEV` is landlock's only when both directories are on one mount (the
/// kernel refuses a cross-mount link or rename before any LSM runs) and the policy
/// explains it: the source directory lacks the `refer` right (only `fs.write` grants it),
/// or the file would gain `execute` where it goes. Anything else is named as not judged.
pub fn refer_denial_record(
    judge: &Judge<'_>,
    landlock_active: bool,
    call: &ReferCall<'_>,
    errno: &str,
) -> (&'static str, FileDenied) {
    let link = matches!(call.nr, nr::LINK | nr::LINKAT);
    let op = if link { "link" } else { "rename" };
    let (old, old_base) = resolve(call.old_path, call.old_base);
    let (new, new_base) = resolve(call.new_path, call.new_base);
    let old_dir = Path::new(&old).parent().unwrap_or(Path::new("/"));
    let new_dir = Path::new(&new).parent().unwrap_or(Path::new("/"));
    let not_judged = |why: &str| ("kernel", format!("not judged: {why}"));
    let (layer, rule): (&'static str, String) = if old_base != Base::Exact
        || new_base != Base::Exact
    {
        not_judged("a relative path whose directory the kernel could not tell")
    } else if !landlock_active {
        (
            "kernel",
            "no rule: the run has no landlock layer; the kernel refused it".into(),
        )
    } else if call.errno == libc::EXDEV {
        let mnt = |d: &Path| mount_id(call.tgid, d, call.shared_mounts);
        match (mnt(old_dir), mnt(new_dir)) {
            (Some(a), Some(b)) if a != b => (
                "kernel",
                "no rule: the paths are on different mounts (the kernel refuses a link or rename across mounts with EXDEV, before landlock)".into(),
            ),
            (Some(_), Some(_)) if old_dir == new_dir => {
                not_judged("one directory on one mount: landlock's refer check does not apply")
            }
            (Some(_), Some(_)) => {
                let (w_old, x_old) = rights(judge, old_dir);
                let (w_new, x_new) = rights(judge, new_dir);
                if !w_old {
                    (
                        "landlock",
                        format!("landlock refer: {} is not in fs.write (a link or rename to another directory needs LANDLOCK_ACCESS_FS_REFER on both, which fs.write grants)", old_dir.display()),
                    )
                } else if w_new && x_new && !x_old {
                    (
                        "landlock",
                        format!("landlock refer: the file would gain execute (exec.allow) in {} that it has not in {}", new_dir.display(), old_dir.display()),
                    )
                } else {
                    not_judged("the policy lets landlock allow this on one mount; EXDEV came from elsewhere")
                }
            }
            _ => not_judged("a directory could not be looked up (the process or the path was gone)"),
        }
    } else {
        // EACCES/EPERM: the new name needs fs.write (a make right); a rename also removes
        // the old one (a remove right).
        let deny_of = |p: &str| match judge
            .judge(&json!({"event": "denied", "op": op, "path": p, "access": "write"}))
        {
            Some((_, Verdict::Deny(rule))) => Some(format!("{rule} ({p})")),
            _ => None,
        };
        let denied = (!link)
            .then(|| deny_of(&old))
            .flatten()
            .or_else(|| deny_of(&new));
        match denied {
            Some(rule) => ("landlock", rule),
            None => (
                "kernel",
                "no rule: the policy allows this access; the kernel refused it (file permissions or another LSM)".into(),
            ),
        }
    };
    let denied = FileDenied {
        op: op.into(),
        path_arg: (call.old_path != old).then(|| call.old_path.to_owned()),
        path: old,
        errno: errno.into(),
        would_errno: None,
        rule,
        pid: call.tgid,
        tid: call.tid,
        syscall: syscall_name(call.nr).into(),
        access: Some("write".into()),
        symlink_target: None,
        path_unresolved: old_base == Base::Unresolved || new_base == Base::Unresolved,
        new_path: Some(new),
    };
    (layer, denied)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn flags(family: i32, protocol: i32) -> u64 {
        family as u64 | ((protocol as u64) << 32)
    }

    #[test]
    fn socket_denials_name_the_layer_that_refused_them() {
        let raw = flags(libc::AF_INET, libc::IPPROTO_ICMP);
        let (layer, d) =
            socket_denial_record(7, 8, "EPERM", raw, libc::SOCK_RAW, true, true, false);
        assert_eq!(layer, "caps");
        assert_eq!(d.rule, "CAP_NET_RAW dropped (net.raw not allowed)");
        assert_eq!(d.family, "AF_INET");
        assert_eq!(d.sock_type, "SOCK_RAW");
        assert_eq!(d.protocol, 1);
        assert_eq!(d.op, "socket");
        let (layer, _) = socket_denial_record(7, 8, "EPERM", raw, 3, true, false, false);
        assert_eq!(layer, "kernel");
        let packet = flags(libc::AF_PACKET, 0x0300);
        let (layer, d) = socket_denial_record(7, 8, "EPERM", packet, 3, true, true, true);
        assert_eq!(layer, "seccomp");
        assert_eq!(d.family, "AF_PACKET");
        let (layer, d) = socket_denial_record(7, 8, "EPERM", packet, 3, false, true, true);
        assert_eq!(layer, "caps");
        assert_eq!(
            d.rule,
            "CAP_NET_RAW dropped (the caps layer drops it even with net.raw: true)"
        );
    }
}
