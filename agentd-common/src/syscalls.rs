//! The one `tp_btf/sys_exit` program (`sys_exit_dispatch`) that serves every per-syscall
//! check of a run: the denial tracker, the inode-rule open fallback, the unix-socket
//! backstop, the exec-integrity mmap/mprotect fallback and the `syscalls` and
//! `fs_write_bytes` budget counters.
//!
//! Why one program on one tracepoint: while any program is attached to `raw_syscalls`,
//! every syscall of every process on the host takes the kernel's slow path, and each
//! attached program adds its own dispatch on top (measured on this project's build host,
//! Linux 6.18, getpid: 145 ns bare; +75 ns for one empty program on `sys_enter`, +88 ns
//! for one on `sys_exit`, +123 ns for one on each, +440 ns for four on each). Every check
//! above can be made once the syscall has returned (its arguments are still in the
//! saved user registers), so a single `sys_exit` program is the cheapest shape.
//!
//! `SYSCALL_HOOKS` (an `Array<u32>` with one entry) holds the `HOOK_*` bits of the
//! checks the loader enabled; the program skips the others. Each agentd process loads
//! its own object, so the bits are that process's run's.

/// Map and program names.
pub mod names {
    /// `Array<u32>` with one entry: the enabled `HOOK_*` bits.
    pub const MAP_SYSCALL_HOOKS: &str = "SYSCALL_HOOKS";
    /// The `tp_btf/sys_exit` program.
    pub const PROG_SYS_EXIT: &str = "sys_exit_dispatch";
    /// Its kernel tracepoint (`raw_syscalls:sys_exit`).
    pub const TP_SYS_EXIT: &str = "sys_exit";
    /// `LruHashMap<ObservedKey, u8>`: what the file observer already reported.
    pub const MAP_OBSERVED_SEEN: &str = "OBSERVED_SEEN";
    /// `PerCpuArray<ObservedKey>` with one entry: where the observer builds its key.
    pub const MAP_OBSERVED_SCRATCH: &str = "OBSERVED_SCRATCH";
}

/// The denial tracker: failed file, exec and socket syscalls (EACCES/EPERM).
pub const HOOK_DENIALS: u32 = 1 << 0;
/// `fs.deny` / `fs.secret` fallback: a successful open of a denied inode is killed.
pub const HOOK_FS_OPEN: u32 = 1 << 1;
/// Unix-socket backstop: a successful AF_UNIX `connect()` to a peer outside the
/// allowed inodes is killed.
pub const HOOK_UNIX_CONNECT: u32 = 1 << 2;
/// Exec-integrity fallback: a successful PROT_EXEC `mmap`/`mprotect` of a file outside
/// `exec.allow`/`exec.libraries` is killed.
pub const HOOK_EXEC_MAPS: u32 = 1 << 3;
/// `syscalls` budget counter.
pub const HOOK_SYSCALL_COUNT: u32 = 1 << 4;
/// `fs_write_bytes` budget counter.
pub const HOOK_FS_WRITE_BYTES: u32 = 1 << 5;
/// Audit and learn modes' file observer: a successful file syscall of a run marked
/// [`RUN_OBSERVE_FILES`] is reported (a `DenialEvent` with `DENIAL_FLAG_OBSERVED`), so
/// that agentd can record what the policy's fs rules would have denied.
pub const HOOK_FS_OBSERVE: u32 = 1 << 6;
/// `net.bind` on `listen()`: a successful listen of a TCP socket the kernel bound
/// itself is killed unless a `net.bind` rule allows the wildcard address, port 0.
pub const HOOK_LISTEN: u32 = 1 << 7;
/// Non-native syscall ABIs in a run without agentd's seccomp filter (an attached
/// workload, `mode: audit`): an `int 0x80` or x32 call, whose number the other hooks
/// would misread as a native one, is reported and (unless the run only audits, marked
/// [`RUN_OBSERVE_FILES`]) killed after the call. It costs every syscall on the host one
/// load of the task's `thread_info.status` while such a run is live.
pub const HOOK_COMPAT: u32 = 1 << 8;
/// Every bit above.
pub const HOOK_ALL: u32 = (1 << 9) - 1;

/// In a `RUN_CGROUPS` value, above the run slot: the run's successful file syscalls are
/// reported ([`HOOK_FS_OBSERVE`]). Slots stay below `MAX_WATCHED_CGROUPS`.
pub const RUN_OBSERVE_FILES: u32 = 1 << 31;
/// The run slot of a `RUN_CGROUPS` value.
pub const RUN_SLOT_MASK: u32 = RUN_OBSERVE_FILES - 1;
