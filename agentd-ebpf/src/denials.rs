//! Denial tracker: file and exec syscalls of watched cgroups that fail with `EACCES` or
//! `EPERM` (what landlock answers), with the path the process passed.
//!
//! Called from the `tp_btf/sys_exit` dispatcher (`syscalls.rs`) for every failed syscall,
//! or, where trampolines attach, from the `fexit` programs of `syscall_exits.rs`.
//! The syscall number (`orig_ax`) and the arguments are read back from the saved user
//! registers, which a failed syscall leaves as they were; the path is copied from user
//! memory, still mapped since the syscall failed. A full ring buffer is counted in
//! `DROPPED`.
//!
//! `socket(2)` failures are recognised the same way (`failed_socket`): a seccomp `ERRNO`
//! refuses packet and netlink sockets, and the kernel's `CAP_NET_RAW` check refuses raw
//! sockets before the cgroup `sock_create` hook could audit them.
//!
//! Path-less refusals are recognised by number (`failed_plain`): the seccomp deny list
//! (`EPERM`, `clone3` `ENOSYS`) and the kill family (`EPERM`, landlock's signal scope).
//! This adds no hook: it is a compare chain on the failed-syscall path only.
//!
//! The link/rename family (`failed_refer`) has two paths and fails with `EXDEV` as well
//! (landlock's `refer` right, or two mounts): a `ReferDenialEvent` with both.

use core::{ffi::c_void, ptr::addr_of_mut};

use agentd_common::{
    denials::seccomp_denied_nr,
    denials::{
        is_refer_nr, nr, DenialEvent, ObservedKey, PendingSyscall, ReferDenialEvent,
        DENIAL_AF_INET, DENIAL_AF_INET6, DENIAL_AF_NETLINK, DENIAL_AF_PACKET, DENIAL_AT_FDCWD,
        DENIAL_EACCES, DENIAL_EBUSY, DENIAL_ENOSYS, DENIAL_EPERM, DENIAL_EROFS, DENIAL_EXDEV,
        DENIAL_FLAG_BASE, DENIAL_FLAG_OBSERVED, DENIAL_FLAG_PATH_TRUNCATED,
        DENIAL_FLAG_PATH_UNREADABLE, DENIAL_PATH_LEN, DENIAL_SOCK_RAW, DENIAL_SOCK_TYPE_MASK,
        EVENT_KIND_DENIAL, EVENT_KIND_REFER_DENIAL, OBSERVED_SEEN_ENTRIES, PT_REGS_DI, PT_REGS_DX,
        PT_REGS_R10, PT_REGS_SI, REFER_FLAG_NEW_BASE, REFER_FLAG_NEW_TRUNCATED,
        REFER_FLAG_NEW_UNREADABLE, REFER_FLAG_OLD_BASE, REFER_FLAG_OLD_TRUNCATED,
        REFER_FLAG_OLD_UNREADABLE,
    },
    EventHeader,
};
use aya_ebpf::{
    helpers::{
        bpf_probe_read_user,
        generated::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user_str},
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};

use crate::{
    base_dir::write_base,
    maps::{count_drop, observed_cgroup, submit, watched_cgroup, EVENTS},
    syscalls::reg,
};

/// What the file observer already reported: a repeat of the same access to the same
/// absolute path by the same run is not sent again (a loop of opens would otherwise fill
/// the ring buffer with copies and crowd out the records of other files).
#[map]
static OBSERVED_SEEN: LruHashMap<ObservedKey, u8> =
    LruHashMap::with_max_entries(OBSERVED_SEEN_ENTRIES, 0);
/// Per-CPU space for the key (272 bytes do not fit the program's stack budget).
#[map]
static OBSERVED_SCRATCH: PerCpuArray<ObservedKey> = PerCpuArray::with_max_entries(1, 0);

/// The `open` flags that change what an open is recorded as (`O_ACCMODE`, `O_CREAT`,
/// `O_TRUNC`).
const OBSERVED_OPEN_BITS: u64 = 0o3 | 0o100 | 0o1000;

/// Where a watched syscall keeps (path, dirfd or none, open flags or none); `None` for
/// every other syscall.
#[inline(always)]
fn path_syscall_regs(id: u32) -> Option<(u32, u32, u32)> {
    match id {
        nr::OPEN => Some((PT_REGS_DI, 0, PT_REGS_SI)),
        nr::CREAT | nr::TRUNCATE | nr::MKDIR | nr::RMDIR | nr::UNLINK | nr::EXECVE => {
            Some((PT_REGS_DI, 0, 0))
        }
        nr::OPENAT => Some((PT_REGS_SI, PT_REGS_DI, PT_REGS_DX)),
        nr::OPENAT2 | nr::MKDIRAT | nr::UNLINKAT | nr::EXECVEAT => {
            Some((PT_REGS_SI, PT_REGS_DI, 0))
        }
        _ => None,
    }
}

/// The path syscall `id`'s arguments, read back from the saved registers.
#[inline(always)]
fn failed_path_syscall(regs: *const u8, id: u32) -> Option<PendingSyscall> {
    let (path_reg, dirfd_reg, flags_reg) = path_syscall_regs(id)?;
    let mut open_flags = if flags_reg != 0 {
        reg(regs, flags_reg)
    } else {
        0
    };
    if id == nr::OPENAT2 {
        // struct open_how { u64 flags; ... } in user memory, pointed to by arg2.
        let how = reg(regs, PT_REGS_DX) as *const u64;
        // SAFETY: bpf_probe_read_user tolerates faults; a bad pointer yields Err.
        open_flags = unsafe { bpf_probe_read_user(how) }.unwrap_or(0);
    }
    Some(PendingSyscall {
        path_ptr: reg(regs, path_reg),
        open_flags,
        nr: id,
        dirfd: if dirfd_reg != 0 {
            reg(regs, dirfd_reg) as i32
        } else {
            DENIAL_AT_FDCWD
        },
    })
}

/// A `socket(family, type, protocol)` that failed: the arguments are read back from the
/// registers (unchanged by the syscall). Only raw inet, packet and netlink sockets count:
/// other inet sockets reach the cgroup `sock_create` hook, which audits its own denials.
#[inline(always)]
fn failed_socket(regs: *const u8, id: u32) -> Option<PendingSyscall> {
    if id != nr::SOCKET {
        return None;
    }
    let family = reg(regs, PT_REGS_DI) & 0xffff_ffff;
    let sock_type = reg(regs, PT_REGS_SI) & DENIAL_SOCK_TYPE_MASK;
    let raw_inet =
        (family == DENIAL_AF_INET || family == DENIAL_AF_INET6) && sock_type == DENIAL_SOCK_RAW;
    if !raw_inet && family != DENIAL_AF_PACKET && family != DENIAL_AF_NETLINK {
        return None;
    }
    let protocol = reg(regs, PT_REGS_DX) & 0xffff_ffff;
    Some(PendingSyscall {
        path_ptr: 0,
        open_flags: family | (protocol << 32),
        nr: nr::SOCKET,
        dirfd: sock_type as i32,
    })
}

/// A syscall without a path that the seccomp layer refuses (its deny list, `clone` with
/// namespace flags, `clone3`), or a signal that landlock's scope (or the kernel's
/// permission check) refused. No path: `open_flags` is arg0 and `dirfd` the signal for
/// the kill family. Userspace judges the layer (`clone` counts only with a namespace
/// flag; a signal only when its target is outside the run).
#[inline(always)]
fn failed_plain(regs: *const u8, id: u32, errno: i32) -> Option<PendingSyscall> {
    let signal = match id {
        nr::CLONE3 if errno == DENIAL_ENOSYS => 0,
        _ if errno != DENIAL_EPERM => return None,
        nr::KILL | nr::TKILL => reg(regs, PT_REGS_SI),
        nr::TGKILL => reg(regs, PT_REGS_DX),
        nr::CLONE => 0,
        _ if seccomp_denied_nr(id) => 0,
        _ => return None,
    };
    Some(PendingSyscall {
        path_ptr: 0,
        open_flags: reg(regs, PT_REGS_DI),
        nr: id,
        dirfd: signal as i32,
    })
}

/// Copies the user string at `src` into `dst` (DENIAL_PATH_LEN bytes); returns its
/// length and the `truncated` / `unreadable` flag that applies.
#[inline(always)]
fn copy_path(dst: *mut u8, src: u64, truncated: u32, unreadable: u32) -> (u32, u32) {
    // SAFETY: `dst` is DENIAL_PATH_LEN writable bytes of a reserved record; the helper
    // writes at most that many, NUL-terminated, and tolerates faults on `src`.
    let copied = unsafe {
        bpf_probe_read_user_str(
            dst.cast::<c_void>(),
            DENIAL_PATH_LEN as u32,
            src as *const c_void,
        )
    };
    if copied <= 0 {
        // SAFETY: as above.
        unsafe { dst.write(0) };
        return (0, unreadable);
    }
    let len = (copied as u32).saturating_sub(1);
    let flag = if len as usize >= DENIAL_PATH_LEN - 1 {
        truncated
    } else {
        0
    };
    (len, flag)
}

/// For a relative path copied to `path` (`len` bytes), the directory it was resolved
/// against, walked now (during the call) into `base`: its length and `flag`, or (0, 0)
/// when the path is absolute, empty, or the directory cannot be told.
#[inline(always)]
fn base_of(path: *const u8, len: u32, dirfd: i32, base: *mut u8, flag: u32) -> (u32, u32) {
    // SAFETY: `path` is the first byte of a path field of the reserved record.
    if len == 0 || unsafe { path.read() } == b'/' {
        return (0, 0);
    }
    match write_base(dirfd, base) {
        used if used >= 0 => (used as u32, flag),
        _ => (0, 0),
    }
}

/// A `link`/`rename` family call that failed with EXDEV, EACCES or EPERM: both paths.
#[inline(always)]
fn failed_refer(regs: *const u8, id: u32, errno: i32) {
    if errno != DENIAL_EXDEV
        && errno != DENIAL_EACCES
        && errno != DENIAL_EPERM
        && errno != DENIAL_EBUSY
        && errno != DENIAL_EROFS
    {
        return;
    }
    let Some((cgroup_id, run_slot)) = watched_cgroup() else {
        return;
    };
    // (old dirfd, old path, new dirfd, new path) registers; 0: AT_FDCWD.
    let (old_dfd, old_reg, new_dfd, new_reg) = match id {
        nr::LINK | nr::RENAME => (0, PT_REGS_DI, 0, PT_REGS_SI),
        _ => (PT_REGS_DI, PT_REGS_SI, PT_REGS_DX, PT_REGS_R10),
    };
    let dirfd = |r: u32| {
        if r == 0 {
            DENIAL_AT_FDCWD
        } else {
            reg(regs, r) as i32
        }
    };
    let Some(mut entry) = EVENTS.reserve::<ReferDenialEvent>(0) else {
        count_drop();
        return;
    };
    let event: *mut ReferDenialEvent = entry.as_mut_ptr();
    // SAFETY: pointers to the two path arrays of the reserved record.
    let (old_dst, new_dst) = unsafe {
        (
            addr_of_mut!((*event).old_path).cast::<u8>(),
            addr_of_mut!((*event).new_path).cast::<u8>(),
        )
    };
    let (old_len, f1) = copy_path(
        old_dst,
        reg(regs, old_reg),
        REFER_FLAG_OLD_TRUNCATED,
        REFER_FLAG_OLD_UNREADABLE,
    );
    let (new_len, f2) = copy_path(
        new_dst,
        reg(regs, new_reg),
        REFER_FLAG_NEW_TRUNCATED,
        REFER_FLAG_NEW_UNREADABLE,
    );
    // SAFETY: pointers to the two base arrays of the reserved record.
    let (old_base, new_base) = unsafe {
        (
            addr_of_mut!((*event).old_base).cast::<u8>(),
            addr_of_mut!((*event).new_base).cast::<u8>(),
        )
    };
    let (old_base_len, b1) = base_of(
        old_dst,
        old_len,
        dirfd(old_dfd),
        old_base,
        REFER_FLAG_OLD_BASE,
    );
    let (new_base_len, b2) = base_of(
        new_dst,
        new_len,
        dirfd(new_dfd),
        new_base,
        REFER_FLAG_NEW_BASE,
    );
    // SAFETY: argument-less helpers.
    let (pid_tgid, now) = unsafe { (bpf_get_current_pid_tgid(), bpf_ktime_get_ns()) };
    // SAFETY: plain field writes into the reserved record.
    unsafe {
        addr_of_mut!((*event).header).write(EventHeader {
            kind: EVENT_KIND_REFER_DENIAL,
            run_slot,
            tgid: (pid_tgid >> 32) as u32,
            pid: pid_tgid as u32,
            cgroup_id,
            ktime_ns: now,
        });
        addr_of_mut!((*event).nr).write(id);
        addr_of_mut!((*event).errno).write(errno);
        addr_of_mut!((*event).old_dirfd).write(dirfd(old_dfd));
        addr_of_mut!((*event).new_dirfd).write(dirfd(new_dfd));
        addr_of_mut!((*event).flags).write(f1 | f2 | b1 | b2);
        addr_of_mut!((*event).old_len).write(old_len);
        addr_of_mut!((*event).new_len).write(new_len);
        addr_of_mut!((*event).old_base_len).write(old_base_len);
        addr_of_mut!((*event).new_base_len).write(new_base_len);
        addr_of_mut!((*event)._pad).write(0);
    }
    submit(entry);
}

/// A syscall of the host failed with `ret` (negative); `regs` are its saved user
/// registers, `id` its number. Audits it if it is a watched syscall of a watched cgroup
/// that failed with EACCES or EPERM (EXDEV too for the link/rename family).
#[inline(never)]
pub(crate) fn on_failed(regs: *const u8, id: u32, ret: i64) {
    judge_failed(regs, id, ret);
}

/// [`on_failed`], inlined: where `id` is a constant (each syscall's `fexit` program,
/// `syscall_exits.rs`), only that syscall's branch is left for the verifier to check.
#[inline(always)]
pub(crate) fn judge_failed(regs: *const u8, id: u32, ret: i64) {
    let errno = -(ret as i32);
    if is_refer_nr(id) {
        failed_refer(regs, id, errno);
        return;
    }
    if errno != DENIAL_EACCES
        && errno != DENIAL_EPERM
        && errno != DENIAL_ENOSYS
        && errno != DENIAL_EROFS
        && errno != DENIAL_EBUSY
    {
        return;
    }
    let pending = if errno == DENIAL_ENOSYS {
        failed_plain(regs, id, errno)
    } else if errno == DENIAL_EROFS || errno == DENIAL_EBUSY {
        // Only a path can be one of agentd's protected files; userspace keeps those.
        failed_path_syscall(regs, id)
    } else {
        failed_path_syscall(regs, id)
            .or_else(|| failed_socket(regs, id))
            .or_else(|| failed_plain(regs, id, errno))
    };
    let Some(pending) = pending else {
        return;
    };
    let Some((cgroup_id, run_slot)) = watched_cgroup() else {
        return;
    };
    emit(&pending, errno, 0, cgroup_id, run_slot);
}

/// A file syscall of the host succeeded (`ret` >= 0): reports it (`DENIAL_FLAG_OBSERVED`,
/// errno 0) if the current task's run is observed (`RUN_OBSERVE_FILES`: audit and learn modes, where
/// nothing refuses the accesses agentd must record). execve/execveat are left out: the
/// exec tracker records them, and a successful exec has replaced the memory the path
/// was in.
#[inline(never)]
pub(crate) fn on_observed(regs: *const u8, id: u32) {
    if id == nr::EXECVE || id == nr::EXECVEAT {
        return;
    }
    let Some(pending) = failed_path_syscall(regs, id) else {
        return;
    };
    let Some((cgroup_id, run_slot)) = observed_cgroup() else {
        return;
    };
    if already_reported(&pending, cgroup_id) {
        return;
    }
    emit(&pending, 0, DENIAL_FLAG_OBSERVED, cgroup_id, run_slot);
}

/// Whether the run already reported this access to this absolute path; if not, it is
/// remembered now. A path that cannot be read, is cut at `DENIAL_PATH_LEN`, or is
/// relative (its file depends on the working directory) is always reported.
#[inline(always)]
fn already_reported(pending: &PendingSyscall, cgroup_id: u64) -> bool {
    let Some(key) = OBSERVED_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // The path is zeroed first: the bytes after the NUL are part of the key.
    // SAFETY: `key` is this CPU's map value (size_of::<ObservedKey>() bytes, 8-aligned);
    // plain writes within it.
    unsafe {
        (*key).cgroup_id = cgroup_id;
        (*key).access = pending.nr as u64 | ((pending.open_flags & OBSERVED_OPEN_BITS) << 32);
        let words = addr_of_mut!((*key).path).cast::<u64>();
        let mut i = 0;
        while i < DENIAL_PATH_LEN / 8 {
            words.add(i).write(0);
            i += 1;
        }
    }
    // SAFETY: the helper writes at most DENIAL_PATH_LEN bytes into the key's path,
    // NUL-terminated, and tolerates faults on the user pointer.
    let copied = unsafe {
        bpf_probe_read_user_str(
            addr_of_mut!((*key).path).cast::<c_void>(),
            DENIAL_PATH_LEN as u32,
            pending.path_ptr as *const c_void,
        )
    };
    if copied <= 1 || copied as usize >= DENIAL_PATH_LEN {
        return false;
    }
    // SAFETY: `key` is a live map value that nothing else on this CPU touches while the
    // program runs; the map helpers copy the key.
    let key = unsafe { &*key };
    if key.path[0] != b'/' {
        return false;
    }
    // SAFETY: the value is a plain u8, only tested for presence.
    if unsafe { OBSERVED_SEEN.get(key) }.is_some() {
        return true;
    }
    let _ = OBSERVED_SEEN.insert(key, 1, 0);
    false
}

/// Writes one `DenialEvent` for `pending` (with its path copied from user memory), with
/// `kind_flags` among its flags.
#[inline(always)]
fn emit(pending: &PendingSyscall, errno: i32, kind_flags: u32, cgroup_id: u64, run_slot: u32) {
    let Some(mut entry) = EVENTS.reserve::<DenialEvent>(0) else {
        count_drop();
        return;
    };
    let event: *mut DenialEvent = entry.as_mut_ptr();
    let pathless = path_syscall_regs(pending.nr).is_none();
    let copied = if pathless {
        // No path to copy; the record's path is left empty below.
        1
    } else {
        // `event` points at a reserved record of size_of::<DenialEvent>() bytes.
        // SAFETY: the helper writes at most DENIAL_PATH_LEN bytes into `path`,
        // NUL-terminated, and tolerates faults on the user pointer.
        unsafe {
            let dst = addr_of_mut!((*event).path).cast::<c_void>();
            bpf_probe_read_user_str(
                dst,
                DENIAL_PATH_LEN as u32,
                pending.path_ptr as *const c_void,
            )
        }
    };
    let (path_len, flags) = if copied <= 0 {
        (0u32, DENIAL_FLAG_PATH_UNREADABLE)
    } else {
        let len = (copied as u32).saturating_sub(1);
        let truncated = if len as usize >= DENIAL_PATH_LEN - 1 {
            DENIAL_FLAG_PATH_TRUNCATED
        } else {
            0
        };
        (len, truncated)
    };
    let (base_len, based) = if pathless {
        (0, 0)
    } else {
        // SAFETY: pointers to the path and base arrays of the reserved record.
        let (path, base) = unsafe {
            (
                addr_of_mut!((*event).path).cast::<u8>(),
                addr_of_mut!((*event).base).cast::<u8>(),
            )
        };
        base_of(path, path_len, pending.dirfd, base, DENIAL_FLAG_BASE)
    };
    // SAFETY: argument-less helpers.
    let (pid_tgid, now) = unsafe { (bpf_get_current_pid_tgid(), bpf_ktime_get_ns()) };
    // SAFETY: plain field writes into the reserved record.
    unsafe {
        addr_of_mut!((*event).header).write(EventHeader {
            kind: EVENT_KIND_DENIAL,
            run_slot,
            tgid: (pid_tgid >> 32) as u32,
            pid: pid_tgid as u32,
            cgroup_id,
            ktime_ns: now,
        });
        addr_of_mut!((*event).open_flags).write(pending.open_flags);
        addr_of_mut!((*event).nr).write(pending.nr);
        addr_of_mut!((*event).errno).write(errno);
        addr_of_mut!((*event).dirfd).write(pending.dirfd);
        addr_of_mut!((*event).flags).write(flags | kind_flags | based);
        addr_of_mut!((*event).path_len).write(path_len);
        addr_of_mut!((*event).base_len).write(base_len);
        if copied <= 0 || pathless {
            addr_of_mut!((*event).path).cast::<u8>().write(0);
        }
    }
    submit(entry);
}
