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

/// Where trampoline programs attach (kernels with BPF LSM), the denial tracker and the
/// `listen()` check need no `raw_syscalls` program: `fexit` programs on the entry points
/// of the syscalls they watch see the same result and the same saved registers, and
/// cost only those syscalls, not every syscall of every process on the host.
///
/// Each x86-64 syscall entry point `__x64_sys_<name>(const struct pt_regs *regs)` takes
/// the user registers and returns the syscall's result. A syscall agentd's seccomp
/// filter refuses never reaches its entry point: the exit of `__secure_computing`
/// (which runs only for tasks under a seccomp filter) sees those.
pub mod exits {
    /// One syscall exit of the denial tracker.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct SyscallExit {
        /// The program's name in the object.
        pub prog: &'static str,
        /// The kernel function it attaches to.
        pub function: &'static str,
        /// `fexit/<function>`, for messages.
        pub section: &'static str,
        /// The syscall's x86-64 number.
        pub nr: u32,
    }

    macro_rules! exits {
        ($($prog:literal, $function:literal, $nr:expr;)*) => {
            [$(SyscallExit {
                prog: $prog,
                function: $function,
                section: concat!("fexit/", $function),
                nr: $nr,
            }),*]
        };
    }

    /// The denial tracker's exits: the syscalls whose failures [`crate::denials`]
    /// reports other than through seccomp.
    pub const DENIAL_EXITS: [SyscallExit; 21] = {
        use crate::denials::nr;
        exits! {
            "exit_open", "__x64_sys_open", nr::OPEN;
            "exit_creat", "__x64_sys_creat", nr::CREAT;
            "exit_truncate", "__x64_sys_truncate", nr::TRUNCATE;
            "exit_mkdir", "__x64_sys_mkdir", nr::MKDIR;
            "exit_rmdir", "__x64_sys_rmdir", nr::RMDIR;
            "exit_unlink", "__x64_sys_unlink", nr::UNLINK;
            "exit_execve", "__x64_sys_execve", nr::EXECVE;
            "exit_openat", "__x64_sys_openat", nr::OPENAT;
            "exit_mkdirat", "__x64_sys_mkdirat", nr::MKDIRAT;
            "exit_unlinkat", "__x64_sys_unlinkat", nr::UNLINKAT;
            "exit_execveat", "__x64_sys_execveat", nr::EXECVEAT;
            "exit_openat2", "__x64_sys_openat2", nr::OPENAT2;
            "exit_socket", "__x64_sys_socket", nr::SOCKET;
            "exit_kill", "__x64_sys_kill", nr::KILL;
            "exit_tkill", "__x64_sys_tkill", nr::TKILL;
            "exit_tgkill", "__x64_sys_tgkill", nr::TGKILL;
            "exit_rename", "__x64_sys_rename", nr::RENAME;
            "exit_link", "__x64_sys_link", nr::LINK;
            "exit_renameat", "__x64_sys_renameat", nr::RENAMEAT;
            "exit_linkat", "__x64_sys_linkat", nr::LINKAT;
            "exit_renameat2", "__x64_sys_renameat2", nr::RENAMEAT2;
        }
    };
    /// The syscall number of the exit named `prog` in [`DENIAL_EXITS`], for the eBPF
    /// side (in a `const` block, so a name missing from the table fails the build).
    pub const fn nr_of(prog: &str) -> u32 {
        let mut i = 0;
        while i < DENIAL_EXITS.len() {
            let name = DENIAL_EXITS[i].prog.as_bytes();
            let want = prog.as_bytes();
            if name.len() == want.len() {
                let mut j = 0;
                while j < name.len() && name[j] == want[j] {
                    j += 1;
                }
                if j == name.len() {
                    return DENIAL_EXITS[i].nr;
                }
            }
            i += 1;
        }
        panic!("not a program of DENIAL_EXITS");
    }

    /// The exit of the seccomp filter's check: syscalls the filter refused.
    pub const PROG_SECCOMP_EXIT: &str = "exit_seccomp";
    pub const SECCOMP_FUNCTION: &str = "__secure_computing";
    pub const SECCOMP_SECTION: &str = "fexit/__secure_computing";
    /// The `listen()` check of `net.bind` ([`super::HOOK_LISTEN`]).
    pub const PROG_LISTEN_EXIT: &str = "exit_listen";
    pub const LISTEN_FUNCTION: &str = "__x64_sys_listen";
    pub const LISTEN_SECTION: &str = "fexit/__x64_sys_listen";
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

#[cfg(test)]
mod tests {
    use super::exits::{nr_of, DENIAL_EXITS};

    #[test]
    fn every_exit_is_found_by_its_name_with_its_number() {
        for e in DENIAL_EXITS {
            assert_eq!(nr_of(e.prog), e.nr, "{}", e.prog);
        }
    }
}
