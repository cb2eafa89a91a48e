//! Kernel-boundary types of the denial tracker (`agentd-ebpf/src/denials.rs`):
//! `tp_btf/sys_enter` stashes the path argument of file and exec syscalls made in watched
//! cgroups, and the family/type/protocol of raw and packet `socket(2)` calls;
//! `tp_btf/sys_exit` reports those that failed with `EACCES` or `EPERM`.

/// [`crate::EventHeader::kind`] of a [`DenialEvent`].
pub const EVENT_KIND_DENIAL: u32 = 3;

/// Bytes reserved for the path argument, NUL included.
pub const DENIAL_PATH_LEN: usize = 256;

/// [`DenialEvent::flags`] bit: the path was cut at [`DENIAL_PATH_LEN`] - 1 bytes.
pub const DENIAL_FLAG_PATH_TRUNCATED: u32 = 1 << 0;
/// [`DenialEvent::flags`] bit: reading the path from user memory failed; `path` is empty.
pub const DENIAL_FLAG_PATH_UNREADABLE: u32 = 1 << 1;

/// [`DenialEvent::flags`] bit: a seccomp filter killed the thread in this syscall (reported
/// by `tp_btf/sched_process_exit`, where the task's `seccomp.mode` is
/// `SECCOMP_MODE_DEAD`). `errno` is 0, `dirfd` the signal the task exits with (the
/// low 7 bits of its exit code), `nr` the syscall number as the filter saw it
/// (`orig_ax`, with [`X32_SYSCALL_BIT`] for an x32 call), `open_flags` 0, no path.
pub const DENIAL_FLAG_SECCOMP_KILL: u32 = 1 << 2;
/// [`DenialEvent::flags`] bit, with [`DENIAL_FLAG_SECCOMP_KILL`]: the syscall was a 32-bit
/// one (`int 0x80`, `TS_COMPAT` set): `nr` is an i386 number.
pub const DENIAL_FLAG_ABI_I386: u32 = 1 << 3;
/// [`DenialEvent::flags`] bit, with [`DENIAL_FLAG_SECCOMP_KILL`]: the number carries
/// [`X32_SYSCALL_BIT`] (the x32 ABI).
pub const DENIAL_FLAG_ABI_X32: u32 = 1 << 4;
/// [`DenialEvent::flags`] bit: not a refusal but a file syscall that succeeded in an
/// observed run (audit and learn modes' file observer, `HOOK_FS_OBSERVE`). `errno` is 0.
pub const DENIAL_FLAG_OBSERVED: u32 = 1 << 5;
/// [`DenialEvent::flags`] bit: the path is relative and `base` holds the directory it was
/// resolved against (the cwd, or `dirfd`'s directory), walked in the kernel during the
/// call. Without it a relative path's directory is unknown.
pub const DENIAL_FLAG_BASE: u32 = 1 << 6;
/// [`DenialEvent::flags`] bit: a non-native syscall (with [`DENIAL_FLAG_ABI_I386`] or
/// [`DENIAL_FLAG_ABI_X32`]) of a run without agentd's seccomp filter, seen by the
/// `sys_exit` program ([`crate::syscalls::HOOK_COMPAT`]) after the call. `dirfd` is the
/// signal it was killed with (`SIGKILL`), 0 when the run only audits; `errno` 0; no path.
pub const DENIAL_FLAG_COMPAT_CALL: u32 = 1 << 7;
/// The bit that marks an x32 syscall number (`__X32_SYSCALL_BIT`).
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// [`crate::EventHeader::kind`] of a [`ReferDenialEvent`].
pub const EVENT_KIND_REFER_DENIAL: u32 = 9;

/// [`ReferDenialEvent::flags`] bits: the old / new path was cut, or unreadable.
pub const REFER_FLAG_OLD_TRUNCATED: u32 = 1 << 0;
pub const REFER_FLAG_OLD_UNREADABLE: u32 = 1 << 1;
pub const REFER_FLAG_NEW_TRUNCATED: u32 = 1 << 2;
pub const REFER_FLAG_NEW_UNREADABLE: u32 = 1 << 3;
/// [`ReferDenialEvent::flags`] bits: the old / new path is relative and its `*_base` holds
/// the directory it was resolved against (as [`DENIAL_FLAG_BASE`]).
pub const REFER_FLAG_OLD_BASE: u32 = 1 << 4;
pub const REFER_FLAG_NEW_BASE: u32 = 1 << 5;

/// Most steps (path components plus mount crossings) of the kernel's walk from a base
/// directory up to the task's root; a deeper directory is left unknown.
pub const BASE_MAX_STEPS: u32 = 32;

/// `AT_FDCWD` as the kernel passes it in a register.
pub const DENIAL_AT_FDCWD: i32 = -100;

/// x86_64 syscall numbers the tracker watches (`arch/x86/entry/syscalls/syscall_64.tbl`).
pub mod nr {
    pub const OPEN: u32 = 2;
    pub const CREAT: u32 = 85;
    pub const TRUNCATE: u32 = 76;
    pub const MKDIR: u32 = 83;
    pub const RMDIR: u32 = 84;
    pub const UNLINK: u32 = 87;
    pub const EXECVE: u32 = 59;
    pub const OPENAT: u32 = 257;
    pub const MKDIRAT: u32 = 258;
    pub const UNLINKAT: u32 = 263;
    pub const EXECVEAT: u32 = 322;
    pub const OPENAT2: u32 = 437;
    /// `socket(2)`: raw inet, `AF_PACKET` and `AF_NETLINK` sockets refused before any
    /// cgroup hook runs (the kernel's `CAP_NET_RAW` check, the seccomp layer). Seen at
    /// `sys_exit` only, with the arguments read back from the registers, because a
    /// seccomp `ERRNO` skips `sys_enter`. Its [`super::DenialEvent`] carries no path:
    /// `open_flags` is `family | protocol << 32`, `dirfd` the type (without
    /// `SOCK_NONBLOCK`/`SOCK_CLOEXEC`).
    pub const SOCKET: u32 = 41;
    /// `clone(2)`: refused by the seccomp layer (`EPERM`) when a namespace flag is set.
    /// Its [`super::DenialEvent`] carries no path; `open_flags` is the flags argument.
    pub const CLONE: u32 = 56;
    /// `clone3(2)`: always refused by the seccomp layer with `ENOSYS`.
    pub const CLONE3: u32 = 435;
    /// `kill`, `tkill`, `tgkill`: `EPERM` from landlock's signal scope (a target outside
    /// the run's landlock domain) or the kernel's permission check. `open_flags` is the
    /// target (pid, tid or tgid), `dirfd` the signal.
    pub const KILL: u32 = 62;
    pub const TKILL: u32 = 200;
    pub const TGKILL: u32 = 234;
    /// `link`, `linkat`, `rename`, `renameat`, `renameat2`: two paths, refused with
    /// `EXDEV` (landlock's `refer`, or two mounts), `EACCES` or `EPERM`. Reported as a
    /// [`super::ReferDenialEvent`].
    pub const RENAME: u32 = 82;
    pub const LINK: u32 = 86;
    pub const RENAMEAT: u32 = 264;
    pub const LINKAT: u32 = 265;
    pub const RENAMEAT2: u32 = 316;
}

/// Whether `nr` is one of the two-path syscalls of [`ReferDenialEvent`].
#[inline(always)]
pub const fn is_refer_nr(nr: u32) -> bool {
    matches!(
        nr,
        nr::RENAME | nr::LINK | nr::RENAMEAT | nr::LINKAT | nr::RENAMEAT2
    )
}

/// The x86_64 numbers of the seccomp layer's deny list (`DENIED_SYSCALLS` in agentd's
/// `layers/seccomp.rs`; a unit test there checks the two agree). The tracker reports a
/// failed syscall with one of these numbers and `EPERM`: under the seccomp filter such a
/// syscall never reaches its kernel implementation, so its `EPERM` can only be the
/// filter's. This keeps the filter a plain `ERRNO` (no notifier round trip, no distinct
/// errno the program could notice) and costs the tracker one compare chain, only on a
/// failed syscall. Its [`DenialEvent`] carries no path; `open_flags` is arg0.
#[inline(always)]
pub const fn seccomp_denied_nr(nr: u32) -> bool {
    matches!(
        nr,
        101 | 310 | 311 | 438 | 321 | 298 // ptrace, process_vm_*, pidfd_getfd, bpf, perf
            | 165 | 166 | 155 | 429 | 428 | 430 | 431 | 432 | 433 | 442 // mount API
            | 272 | 308 // unshare, setns
            | 250 | 248 | 249 // keyctl, add_key, request_key
            | 246 | 320 | 175 | 313 | 176 // kexec, modules
            | 425 | 426 | 427 // io_uring
            | 323 | 135 // userfaultfd, personality
            | 167 | 168 | 169 | 163 | 179 | 103 | 153 // administration
            | 303 | 304 | 212 | 180 // by handle, obsolete
    )
}

/// `AF_INET`, `AF_INET6`, `AF_NETLINK`, `AF_PACKET` and `SOCK_RAW`, for the `socket` watch.
pub const DENIAL_AF_INET: u64 = 2;
pub const DENIAL_AF_NETLINK: u64 = 16;
pub const DENIAL_AF_INET6: u64 = 10;
pub const DENIAL_AF_PACKET: u64 = 17;
pub const DENIAL_SOCK_RAW: u64 = 3;
/// The type bits of `socket(2)`'s type argument (the rest are `SOCK_*` flags).
pub const DENIAL_SOCK_TYPE_MASK: u64 = 0xf;

/// Errno values (positive) the tracker reports.
pub const DENIAL_EPERM: i32 = 1;
pub const DENIAL_EACCES: i32 = 13;
pub const DENIAL_ENOSYS: i32 = 38;
pub const DENIAL_EXDEV: i32 = 18;
/// A write to a read-only mount: agentd's own files, bind-mounted read-only in the run's
/// mount namespace (`layers::protect`).
pub const DENIAL_EROFS: i32 = 30;
/// An unlink or rename of a mount point (the same protected files and their directories).
pub const DENIAL_EBUSY: i32 = 16;

/// Byte offsets of the argument registers in x86_64 `struct pt_regs` (a fixed ABI:
/// `arch/x86/include/asm/ptrace.h`): arg0 = di, arg1 = si, arg2 = dx.
pub const PT_REGS_DI: u32 = 112;
pub const PT_REGS_SI: u32 = 104;
pub const PT_REGS_DX: u32 = 96;
/// arg3 of a syscall (`r10`: the x86-64 syscall ABI passes it there, not in `cx`).
pub const PT_REGS_R10: u32 = 56;
/// `orig_ax`: the syscall number, still there at `sys_exit`.
pub const PT_REGS_ORIG_AX: u32 = 120;
/// `ax`: the syscall's result, which a seccomp `ERRNO` action sets before the syscall is
/// skipped (read back by the `__secure_computing` exit).
pub const PT_REGS_AX: u32 = 80;

/// What the denial tracker reads back from a failed syscall's saved registers (an
/// eBPF-side value; its layout is pinned like the boundary structs').
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingSyscall {
    /// User pointer to the path argument.
    pub path_ptr: u64,
    /// `open` flags (`O_*`) where the syscall has them, else 0.
    pub open_flags: u64,
    /// Syscall number (one of [`nr`]).
    pub nr: u32,
    /// Directory fd of the `*at` variants, else [`DENIAL_AT_FDCWD`].
    pub dirfd: i32,
}

/// A watched process's file or exec syscall failed with `EACCES` or `EPERM`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenialEvent {
    /// `kind` is [`EVENT_KIND_DENIAL`].
    pub header: crate::EventHeader,
    /// `open` flags, as in [`PendingSyscall::open_flags`].
    pub open_flags: u64,
    /// Syscall number.
    pub nr: u32,
    /// Positive errno the process saw.
    pub errno: i32,
    /// As in [`PendingSyscall::dirfd`].
    pub dirfd: i32,
    /// `DENIAL_FLAG_*` bits.
    pub flags: u32,
    /// Bytes of `path` before the NUL.
    pub path_len: u32,
    /// With [`DENIAL_FLAG_BASE`]: bytes of `base` used.
    pub base_len: u32,
    /// The path argument as the process passed it, NUL-terminated.
    pub path: [u8; DENIAL_PATH_LEN],
    /// With [`DENIAL_FLAG_BASE`]: the base directory's components from the innermost
    /// out, each NUL-terminated (`ro\0w\0` is `/w/ro`; empty is `/`), as the task's root
    /// sees it.
    pub base: [u8; DENIAL_PATH_LEN],
}

/// A watched process's `link`/`rename` family call failed with `EXDEV`, `EACCES` or
/// `EPERM`: both paths as the process passed them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReferDenialEvent {
    /// `kind` is [`EVENT_KIND_REFER_DENIAL`].
    pub header: crate::EventHeader,
    /// Syscall number (one of the [`is_refer_nr`] ones).
    pub nr: u32,
    /// Positive errno the process saw.
    pub errno: i32,
    /// Directory fds of the `*at` variants, else [`DENIAL_AT_FDCWD`].
    pub old_dirfd: i32,
    pub new_dirfd: i32,
    /// `REFER_FLAG_*` bits.
    pub flags: u32,
    /// Bytes of each path before the NUL.
    pub old_len: u32,
    pub new_len: u32,
    /// With [`REFER_FLAG_OLD_BASE`] / [`REFER_FLAG_NEW_BASE`]: bytes of each base used.
    pub old_base_len: u32,
    pub new_base_len: u32,
    pub _pad: u32,
    /// The paths as passed, NUL-terminated (`link(old, new)`, `rename(old, new)`).
    pub old_path: [u8; DENIAL_PATH_LEN],
    pub new_path: [u8; DENIAL_PATH_LEN],
    /// The base directory of each relative path, encoded as [`DenialEvent::base`].
    pub old_base: [u8; DENIAL_PATH_LEN],
    pub new_base: [u8; DENIAL_PATH_LEN],
}

/// Key of the file observer's `OBSERVED_SEEN` map (kernel side only): a run, an access
/// and an absolute path it already reported, so that a repeat is not sent again. The
/// whole path is the key (no hash a crafted path could collide with); the bytes after
/// the NUL are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObservedKey {
    pub cgroup_id: u64,
    /// Syscall number (low 32 bits) and its access bits of `open_flags` (high 32).
    pub access: u64,
    pub path: [u8; DENIAL_PATH_LEN],
}

/// Size of [`ObservedKey`].
pub const OBSERVED_KEY_SIZE: usize = 16 + DENIAL_PATH_LEN;
/// `OBSERVED_SEEN` entries (least recently used accesses are forgotten first, and an
/// ended run's entries age out: cgroup ids are not reused).
pub const OBSERVED_SEEN_ENTRIES: u32 = 4096;

/// Size of [`ReferDenialEvent`].
pub const REFER_DENIAL_EVENT_SIZE: usize = 32 + 40 + 4 * DENIAL_PATH_LEN;

/// Size of [`PendingSyscall`].
pub const PENDING_SYSCALL_SIZE: usize = 24;
/// Size of [`DenialEvent`].
pub const DENIAL_EVENT_SIZE: usize = 32 + 32 + 2 * DENIAL_PATH_LEN;

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<PendingSyscall>() == PENDING_SYSCALL_SIZE);
    assert!(offset_of!(PendingSyscall, path_ptr) == 0);
    assert!(offset_of!(PendingSyscall, open_flags) == 8);
    assert!(offset_of!(PendingSyscall, nr) == 16);
    assert!(offset_of!(PendingSyscall, dirfd) == 20);
    assert!(size_of::<DenialEvent>() == DENIAL_EVENT_SIZE);
    assert!(align_of::<DenialEvent>() == 8);
    assert!(offset_of!(DenialEvent, header) == 0);
    assert!(offset_of!(DenialEvent, open_flags) == 32);
    assert!(offset_of!(DenialEvent, nr) == 40);
    assert!(offset_of!(DenialEvent, errno) == 44);
    assert!(offset_of!(DenialEvent, dirfd) == 48);
    assert!(offset_of!(DenialEvent, flags) == 52);
    assert!(offset_of!(DenialEvent, path_len) == 56);
    assert!(offset_of!(DenialEvent, base_len) == 60);
    assert!(offset_of!(DenialEvent, path) == 64);
    assert!(offset_of!(DenialEvent, base) == 64 + DENIAL_PATH_LEN);
    assert!(DENIAL_EVENT_SIZE.is_multiple_of(8));
    assert!(size_of::<ObservedKey>() == OBSERVED_KEY_SIZE);
    assert!(align_of::<ObservedKey>() == 8);
    assert!(offset_of!(ObservedKey, access) == 8);
    assert!(offset_of!(ObservedKey, path) == 16);
    assert!(size_of::<ReferDenialEvent>() == REFER_DENIAL_EVENT_SIZE);
    assert!(align_of::<ReferDenialEvent>() == 8);
    assert!(offset_of!(ReferDenialEvent, nr) == 32);
    assert!(offset_of!(ReferDenialEvent, errno) == 36);
    assert!(offset_of!(ReferDenialEvent, old_dirfd) == 40);
    assert!(offset_of!(ReferDenialEvent, new_dirfd) == 44);
    assert!(offset_of!(ReferDenialEvent, flags) == 48);
    assert!(offset_of!(ReferDenialEvent, old_len) == 52);
    assert!(offset_of!(ReferDenialEvent, new_len) == 56);
    assert!(offset_of!(ReferDenialEvent, old_base_len) == 60);
    assert!(offset_of!(ReferDenialEvent, new_base_len) == 64);
    assert!(offset_of!(ReferDenialEvent, old_path) == 72);
    assert!(offset_of!(ReferDenialEvent, new_path) == 72 + DENIAL_PATH_LEN);
    assert!(offset_of!(ReferDenialEvent, old_base) == 72 + 2 * DENIAL_PATH_LEN);
    assert!(offset_of!(ReferDenialEvent, new_base) == 72 + 3 * DENIAL_PATH_LEN);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, integer fields and byte arrays only, no implicit padding
    // (pinned by the const asserts above), so every bit pattern is valid.
    unsafe impl aya::Pod for super::PendingSyscall {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DenialEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ReferDenialEvent {}
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn denial_layouts() {
        assert_eq!(size_of::<PendingSyscall>(), 24);
        assert_eq!(size_of::<DenialEvent>(), 576);
        assert_eq!(offset_of!(DenialEvent, base), 320);
        assert_eq!(offset_of!(DenialEvent, path), 64);
        assert_ne!(EVENT_KIND_DENIAL, crate::EVENT_KIND_EXEC);
        assert_ne!(EVENT_KIND_DENIAL, crate::EVENT_KIND_EXIT);
        assert_eq!(size_of::<ReferDenialEvent>(), 1096);
        assert_eq!(offset_of!(ReferDenialEvent, new_path), 328);
        assert_eq!(offset_of!(ReferDenialEvent, new_base), 840);
        assert_eq!(size_of::<ObservedKey>(), 272);
        assert_eq!(offset_of!(ObservedKey, path), 16);
    }
}
