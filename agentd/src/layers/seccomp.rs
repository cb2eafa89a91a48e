//! Seccomp layer: a deny-list filter over the kernel attack surface and the
//! escape hatches that the other layers don't cover.
//!
//! The filter is compiled with libseccomp in the parent and exported as classic
//! BPF through a memfd (the system libseccomp 2.5.4 predates
//! `seccomp_export_bpf_mem`). The child installs the instructions with a raw
//! `seccomp(SECCOMP_SET_MODE_FILTER)`; `no_new_privs` is already set by the caps
//! layer.
//!
//! Shape of the filter:
//! * default action ALLOW;
//! * every syscall in [`DENIED_SYSCALLS`] fails with `EPERM`;
//! * `clone` with any namespace flag in [`NAMESPACE_CLONE_FLAGS`] fails with `EPERM`;
//! * `clone3` fails with `ENOSYS` (see [`CLONE3_ERRNO`]);
//! * `socket(AF_NETLINK, _, protocol != NETLINK_ROUTE)` and `socket(AF_PACKET, ..)` fail
//!   with `EPERM`: glibc needs only NETLINK_ROUTE, and the cgroup `sock_create` hook
//!   never sees netlink or packet sockets (the kernel runs it for inet sockets only);
//! * `ioctl(_, TIOCSTI | TIOCLINUX)`, low 32 bits of the request, fails with `EPERM`
//!   (see [`TERMINAL_INJECTION_IOCTLS`]);
//! * any other architecture (x86 `int 0x80` / `sysenter` on x86_64, and x32
//!   syscall numbers) kills the whole process with SIGSYS, so the deny list
//!   can't be bypassed through another syscall table.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::errno::Errno;

/// Syscalls that fail with [`DENY_ERRNO`]. Most already need a capability the
/// caps layer dropped; denying them here as well removes the kernel code behind
/// them from reach (defence in depth against kernel bugs) and closes the ones
/// that need no capability at all.
pub const DENIED_SYSCALLS: &[&str] = &[
    // Inspecting or writing other processes' memory and registers. Under the
    // same uid these need no capability; ptrace would also let the agent
    // rewrite syscalls after seccomp has looked at them.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    // Steals a file descriptor from another process (ptrace-level access).
    "pidfd_getfd",
    // eBPF and perf: large kernel attack surface, and perf reads other processes.
    "bpf",
    "perf_event_open",
    // Mount-table changes (old and new mount API): could remount paths that
    // landlock restricts or build a new root.
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // Namespaces: a new user namespace hands back a full capability set inside it
    // and exposes much more kernel code. (`clone` is filtered by flag below.)
    "unshare",
    "setns",
    // Kernel keyrings: shared across the user's processes, frequent kernel CVEs.
    "keyctl",
    "add_key",
    "request_key",
    // Loading kernels and kernel modules.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    // io_uring performs file and network operations in kernel workers that this
    // filter never sees, and has a long CVE history.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // userfaultfd stalls kernel page faults at will: a classic exploit primitive.
    "userfaultfd",
    // personality can turn off ASLR (ADDR_NO_RANDOMIZE) or set READ_IMPLIES_EXEC.
    "personality",
    // System administration.
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "syslog",
    "vhangup",
    // Open files by handle, bypassing path-based checks (landlock).
    "name_to_handle_at",
    "open_by_handle_at",
    // Obsolete interfaces with a history of bugs.
    "lookup_dcookie",
    "nfsservctl",
];

/// Errno returned by every denied syscall and namespace `clone`.
pub const DENY_ERRNO: i32 = libc::EPERM;

/// Errno returned by `clone3`. Its flags live in a `struct clone_args` in user
/// memory that a seccomp filter can't read (BPF sees only the pointer), so
/// namespace flags can't be filtered there. `ENOSYS` makes glibc (and other
/// libcs) fall back to `clone`, whose flags are a register argument the filter
/// does inspect. This is what Docker, systemd and Chromium do.
pub const CLONE3_ERRNO: i32 = libc::ENOSYS;

/// `clone` flags that create a namespace; `clone` with any of them fails with
/// [`DENY_ERRNO`]. `CLONE_NEWTIME` shares its bit with the exit-signal byte of
/// `clone` and the kernel only honours it in `clone3`/`unshare`, but denying it
/// costs nothing (no valid exit signal uses that bit).
pub const NAMESPACE_CLONE_FLAGS: &[(&str, u64)] = &[
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER as u64),
    ("CLONE_NEWNS", libc::CLONE_NEWNS as u64),
    ("CLONE_NEWPID", libc::CLONE_NEWPID as u64),
    ("CLONE_NEWNET", libc::CLONE_NEWNET as u64),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS as u64),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC as u64),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP as u64),
    ("CLONE_NEWTIME", libc::CLONE_NEWTIME as u64),
];

/// Index of `clone`'s flags argument (s390 swaps the first two arguments).
const CLONE_FLAGS_ARG: u32 = if cfg!(target_arch = "s390x") { 1 } else { 0 };

/// `BPF_MAXINSNS`: the kernel rejects longer classic-BPF programs.
const BPF_MAXINSNS: usize = 4096;

/// Size of one exported instruction (`struct sock_filter`).
const INSN_SIZE: usize = std::mem::size_of::<libc::sock_filter>();

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("syscall {name} is not known to libseccomp on this architecture")]
    UnknownSyscall { name: String },
    #[error("cannot {step} for the seccomp filter: {source}")]
    Build {
        step: String,
        source: libseccomp::error::SeccompError,
    },
    #[error("cannot create a memfd for the seccomp filter export: {}", .errno.desc())]
    Memfd { errno: Errno },
    #[error("cannot read back the exported seccomp filter: {0}")]
    ReadBack(std::io::Error),
    #[error("the exported seccomp filter is malformed: {len} bytes is not a whole number of instructions")]
    Malformed { len: usize },
    #[error(
        "the seccomp filter has {count} instructions; the kernel accepts at most {BPF_MAXINSNS}"
    )]
    TooLong { count: usize },
}

/// The classic-BPF program, compiled in the parent, ready for the child.
pub struct PreparedSeccomp {
    filter: Vec<libc::sock_filter>,
    /// `filter.len()`, checked against `BPF_MAXINSNS` in [`prepare`].
    len: u16,
}

impl std::fmt::Debug for PreparedSeccomp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSeccomp")
            .field("instructions", &self.filter.len())
            .finish()
    }
}

/// One line for audit records: `<n> BPF instructions, <m> syscalls denied, ...`.
impl std::fmt::Display for PreparedSeccomp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} BPF instructions, {} syscalls denied, namespace clone denied, clone3 ENOSYS, other arches killed",
            self.instruction_count(),
            DENIED_SYSCALLS.len()
        )
    }
}

/// Compiles the filter described in the module docs (parent side).
pub fn prepare() -> Result<PreparedSeccomp, SeccompError> {
    build(DENIED_SYSCALLS, DENY_ERRNO)
}

fn build_step<T>(
    step: &str,
    r: Result<T, libseccomp::error::SeccompError>,
) -> Result<T, SeccompError> {
    r.map_err(|source| SeccompError::Build {
        step: step.to_string(),
        source,
    })
}

/// Resolves `name` to this architecture's syscall number; names libseccomp
/// doesn't know, or knows only on other architectures, are an error.
fn resolve(name: &str) -> Result<ScmpSyscall, SeccompError> {
    let unknown = || SeccompError::UnknownSyscall {
        name: name.to_string(),
    };
    let syscall =
        ScmpSyscall::from_name_by_arch(name, ScmpArch::native()).map_err(|_| unknown())?;
    // libseccomp returns negative pseudo numbers for syscalls that exist only on
    // other architectures; a rule on one would be silently dropped.
    if syscall.as_raw_syscall() < 0 {
        return Err(unknown());
    }
    Ok(syscall)
}

/// This architecture's name of syscall `nr`, for audit records (the number when
/// libseccomp does not know it).
pub fn syscall_name(nr: u32) -> String {
    i32::try_from(nr)
        .ok()
        .and_then(|n| ScmpSyscall::from(n).get_name().ok())
        .unwrap_or_else(|| nr.to_string())
}

/// The syscall table a call went through, as a seccomp-killed call's record names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// x86_64, the only table agentd's filter lets through.
    Native,
    /// i386 (`int 0x80` from a 64-bit process).
    I386,
    /// x32 (a number with `__X32_SYSCALL_BIT`).
    X32,
}

impl Abi {
    pub fn as_str(self) -> &'static str {
        match self {
            Abi::Native => "x86_64",
            Abi::I386 => "i386",
            Abi::X32 => "x32",
        }
    }
}

/// The name of syscall `nr` in `abi`'s table (the number when libseccomp does not know
/// it). An x32 number carries its bit, as the filter saw it.
pub fn syscall_name_of(abi: Abi, nr: u32) -> String {
    let arch = match abi {
        Abi::Native => return syscall_name(nr),
        Abi::I386 => ScmpArch::X86,
        Abi::X32 => ScmpArch::X32,
    };
    i32::try_from(nr)
        .ok()
        .and_then(|n| ScmpSyscall::from(n).get_name_by_arch(arch).ok())
        .unwrap_or_else(|| nr.to_string())
}

/// Builds the filter with `denied` syscalls failing with `errno`.
fn build(denied: &[&str], errno: i32) -> Result<PreparedSeccomp, SeccompError> {
    let mut ctx = build_step(
        "create the filter",
        ScmpFilterContext::new(ScmpAction::Allow),
    )?;
    // Only the native architecture is in the filter: every other one (i386 via
    // int 0x80, x32) takes the bad-arch action.
    build_step(
        "set the bad-architecture action",
        ctx.set_act_badarch(ScmpAction::KillProcess),
    )?;
    // no_new_privs is set by the caps layer; the filter is installed by hand, so
    // libseccomp's own NNP handling is irrelevant, but keep it off for clarity.
    build_step("disable libseccomp's no_new_privs", ctx.set_ctl_nnp(false))?;

    for name in denied {
        let syscall = resolve(name)?;
        build_step(
            &format!("add the rule for {name}"),
            ctx.add_rule_exact(ScmpAction::Errno(errno), syscall),
        )?;
    }

    let clone = resolve("clone")?;
    for (flag_name, flag) in NAMESPACE_CLONE_FLAGS {
        // (flags & FLAG) == FLAG, one rule per flag: rules are OR-ed together,
        // the comparisons inside one rule are AND-ed.
        let cmp = ScmpArgCompare::new(CLONE_FLAGS_ARG, ScmpCompareOp::MaskedEqual(*flag), *flag);
        build_step(
            &format!("add the rule for clone with {flag_name}"),
            ctx.add_rule_conditional_exact(ScmpAction::Errno(errno), clone, &[cmp]),
        )?;
    }

    // The domain is an int: compare the low 32 bits only, so high garbage bits cannot
    // slip past. Any non-zero protocol (full 64 bits) counts as "not NETLINK_ROUTE".
    let socket = resolve("socket")?;
    let netlink = ScmpArgCompare::new(
        0,
        ScmpCompareOp::MaskedEqual(0xffff_ffff),
        libc::AF_NETLINK as u64,
    );
    let not_route = ScmpArgCompare::new(2, ScmpCompareOp::Greater, libc::NETLINK_ROUTE as u64);
    build_step(
        "add the rule for netlink sockets other than NETLINK_ROUTE",
        ctx.add_rule_conditional_exact(ScmpAction::Errno(errno), socket, &[netlink, not_route]),
    )?;
    let packet = ScmpArgCompare::new(
        0,
        ScmpCompareOp::MaskedEqual(0xffff_ffff),
        libc::AF_PACKET as u64,
    );
    build_step(
        "add the rule for packet sockets",
        ctx.add_rule_conditional_exact(ScmpAction::Errno(errno), socket, &[packet]),
    )?;

    deny_terminal_injection(&mut ctx, errno)?;

    let clone3 = resolve("clone3")?;
    build_step(
        "add the rule for clone3",
        ctx.add_rule_exact(ScmpAction::Errno(CLONE3_ERRNO), clone3),
    )?;

    let filter = export(&ctx)?;
    let len = u16::try_from(filter.len())
        .ok()
        .filter(|len| usize::from(*len) <= BPF_MAXINSNS)
        .ok_or(SeccompError::TooLong {
            count: filter.len(),
        })?;
    Ok(PreparedSeccomp { filter, len })
}

/// `ioctl` requests that push input into a terminal: TIOCSTI (fake a typed byte) and
/// TIOCLINUX, whose paste subcommands (TIOCL_SETSEL, TIOCL_PASTESEL) are chosen by the
/// first byte *behind* the pointer argument, which seccomp cannot read; so all of
/// TIOCLINUX is denied (it only serves Linux virtual consoles).
pub const TERMINAL_INJECTION_IOCTLS: &[(&str, u64)] =
    &[("TIOCSTI", libc::TIOCSTI), ("TIOCLINUX", libc::TIOCLINUX)];

/// The kernel truncates the request to 32 bits (`unsigned int cmd`), so only the low 32
/// bits are compared: `TIOCSTI | 1 << 32` is TIOCSTI too. Other ABIs are killed by the
/// bad-arch action before any rule, so this covers every ABI.
fn deny_terminal_injection(ctx: &mut ScmpFilterContext, errno: i32) -> Result<(), SeccompError> {
    let ioctl = resolve("ioctl")?;
    for (name, request) in TERMINAL_INJECTION_IOCTLS {
        let cmp = ScmpArgCompare::new(1, ScmpCompareOp::MaskedEqual(0xffff_ffff), *request);
        build_step(
            &format!("add the rule for ioctl {name}"),
            ctx.add_rule_conditional_exact(ScmpAction::Errno(errno), ioctl, &[cmp]),
        )?;
    }
    Ok(())
}

/// Exports `ctx` as classic BPF through a memfd and decodes the instructions.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    // SAFETY: the name is a NUL-terminated static string; memfd_create returns a
    // new file descriptor or -1.
    let raw = unsafe { libc::memfd_create(c"agentd-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(SeccompError::Memfd {
            errno: Errno::last(),
        });
    }
    // SAFETY: `raw` is a fresh file descriptor owned by nothing else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    build_step("export the filter", ctx.export_bpf(&file))?;
    file.seek(SeekFrom::Start(0))
        .map_err(SeccompError::ReadBack)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(SeccompError::ReadBack)?;
    decode(&bytes)
}

/// Decodes native-endian `struct sock_filter` records (u16 code, u8 jt, u8 jf, u32 k).
fn decode(bytes: &[u8]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(INSN_SIZE) {
        return Err(SeccompError::Malformed { len: bytes.len() });
    }
    Ok(bytes
        .chunks_exact(INSN_SIZE)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

impl PreparedSeccomp {
    /// Number of BPF instructions in the filter.
    pub fn instruction_count(&self) -> usize {
        self.filter.len()
    }

    /// Child side: `seccomp(SECCOMP_SET_MODE_FILTER, 0, &prog)`. Requires
    /// `no_new_privs` (set by the caps layer) or `CAP_SYS_ADMIN`.
    pub fn apply_in_child(&self) -> Result<(), Errno> {
        let prog = libc::sock_fprog {
            len: self.len,
            filter: self.filter.as_ptr().cast_mut(),
        };
        // Async-signal-safe: one raw syscall on memory prepared before fork.
        // SAFETY: `prog` points at `len` valid instructions that outlive the call; the
        // kernel only reads (copies) them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0 as libc::c_uint,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(Errno::last());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;

    use crate::layers::test_support::{exit_code, in_child};

    /// Installs `filter` in a child with no_new_privs (as the caps layer leaves
    /// it), then runs `check`; exit 100 + errno if installing failed.
    fn filtered(filter: PreparedSeccomp, check: impl FnOnce() -> i32) -> WaitStatus {
        in_child(move || {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return 99;
            }
            if let Err(e) = filter.apply_in_child() {
                return 100 + e as i32;
            }
            check()
        })
    }

    /// 0 if the raw syscall result `rc` is -1 with errno `want`, else a code
    /// naming what happened instead.
    fn expect_errno(rc: libc::c_long, want: i32) -> i32 {
        if rc != -1 {
            return 1;
        }
        let got = Errno::last() as i32;
        if got == want {
            0
        } else {
            got
        }
    }

    #[test]
    fn prepare_exports_a_filter_checking_the_arch_first() {
        let filter = prepare().expect("prepare");
        let count = filter.instruction_count();
        assert!(count > DENIED_SYSCALLS.len(), "only {count} instructions");
        assert!(count <= BPF_MAXINSNS);
        // libseccomp always starts with: ld [4] (seccomp_data.arch).
        let first = filter.filter[0];
        assert_eq!(
            first.code,
            (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16
        );
        assert_eq!(first.k, 4);
    }

    #[test]
    fn unknown_syscall_name_is_an_error() {
        let err = build(&["ptrace", "no_such_syscall"], DENY_ERRNO).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "syscall no_such_syscall is not known to libseccomp on this architecture"
        );
        // Known to libseccomp, but not a syscall on x86_64 / aarch64.
        let err = build(&["socketcall"], DENY_ERRNO).expect_err("foreign");
        assert_eq!(
            err.to_string(),
            "syscall socketcall is not known to libseccomp on this architecture"
        );
    }

    #[test]
    fn decode_rejects_partial_instructions() {
        assert!(matches!(
            decode(&[0; 12]),
            Err(SeccompError::Malformed { len: 12 })
        ));
        assert!(matches!(
            decode(&[]),
            Err(SeccompError::Malformed { len: 0 })
        ));
        assert_eq!(decode(&[0; 16]).expect("two").len(), 2);
    }

    #[test]
    fn ptrace_and_unshare_are_eperm() {
        let status = filtered(prepare().expect("prepare"), || {
            // SAFETY: PTRACE_TRACEME takes no pointers.
            let rc = unsafe {
                libc::ptrace(
                    libc::PTRACE_TRACEME,
                    0,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                )
            };
            if expect_errno(rc, libc::EPERM) != 0 {
                return 2;
            }
            // SAFETY: unshare takes an integer flag set.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
            if expect_errno(rc.into(), libc::EPERM) != 0 {
                return 3;
            }
            0
        });
        assert_eq!(exit_code(status), Some(0), "{status:?}");
    }

    /// Raw clone(flags, 0, 0, 0, 0): a fork-like clone on success.
    fn raw_clone(flags: libc::c_ulong) -> libc::c_long {
        // SAFETY: a null stack makes this fork-like: the child continues on a copy
        // of this stack and `_exit`s right away below.
        let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
        if rc == 0 {
            // SAFETY: in the cloned child: leave immediately.
            unsafe { libc::_exit(0) };
        }
        rc
    }

    #[test]
    fn namespace_clone_is_eperm_plain_clone_works() {
        let status = filtered(prepare().expect("prepare"), || {
            let sigchld = libc::SIGCHLD as libc::c_ulong;
            for (i, (_, flag)) in NAMESPACE_CLONE_FLAGS.iter().enumerate() {
                if *flag == libc::CLONE_NEWTIME as u64 {
                    continue; // not a clone() flag; see NAMESPACE_CLONE_FLAGS
                }
                let rc = raw_clone(sigchld | *flag as libc::c_ulong);
                if expect_errno(rc, libc::EPERM) != 0 {
                    return 10 + i as i32;
                }
            }
            // Without namespace flags clone still works (fork-like).
            let pid = raw_clone(sigchld);
            if pid <= 0 {
                return 2;
            }
            let mut wstatus = 0;
            // SAFETY: waits for the child just created; `wstatus` is a valid out-pointer.
            let waited = unsafe { libc::waitpid(pid as libc::pid_t, &mut wstatus, 0) };
            if waited as libc::c_long != pid || !libc::WIFEXITED(wstatus) {
                return 3;
            }
            0
        });
        assert_eq!(exit_code(status), Some(0), "{status:?}");
    }

    #[test]
    fn clone3_is_enosys() {
        let call_clone3 = || {
            // SAFETY: a NULL clone_args with size 0 is rejected before any memory is read.
            let rc = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
            if rc == -1 {
                Errno::last() as i32
            } else {
                1
            }
        };
        let status = filtered(prepare().expect("prepare"), call_clone3);
        assert_eq!(exit_code(status), Some(libc::ENOSYS), "{status:?}");
        // Control: unfiltered, the kernel has clone3 and rejects size 0 with EINVAL.
        let status = in_child(call_clone3);
        assert_eq!(exit_code(status), Some(libc::EINVAL), "{status:?}");
    }

    /// getpid through the i386 syscall table (`int 0x80`, eax = 20).
    #[cfg(target_arch = "x86_64")]
    fn int80_getpid() -> i32 {
        let ret: i32;
        // SAFETY: i386 getpid reads no memory; the 32-bit entry may clobber r8-r11.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("eax") 20i32 => ret,
                lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
                options(nostack)
            );
        }
        ret
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn int80_kills_with_sigsys() {
        // Control: IA32 emulation is on, so unfiltered int 0x80 getpid works.
        let status = in_child(|| {
            // SAFETY: getpid has no preconditions.
            if int80_getpid() == unsafe { libc::getpid() } {
                0
            } else {
                1
            }
        });
        assert_eq!(exit_code(status), Some(0), "{status:?}");
        let status = filtered(prepare().expect("prepare"), || {
            int80_getpid();
            2
        });
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
            "{status:?}"
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn non_native_names_come_from_their_own_table() {
        assert_eq!(syscall_name_of(Abi::I386, 20), "getpid");
        assert_eq!(syscall_name_of(Abi::I386, 26), "ptrace");
        assert_eq!(syscall_name_of(Abi::X32, 0x4000_0027), "getpid");
        assert_eq!(syscall_name_of(Abi::Native, 39), "getpid");
        assert_eq!(syscall_name_of(Abi::I386, 99_999), "99999");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_syscall_kills_with_sigsys() {
        const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
        let status = filtered(prepare().expect("prepare"), || {
            // SAFETY: x32 getpid takes no arguments.
            unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) };
            2
        });
        assert!(
            matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
            "{status:?}"
        );
    }

    /// Every listed syscall is in the filter. The child drops all capabilities
    /// first, so even a syscall missing from the filter would fail harmlessly,
    /// and the filter uses a marker errno so the two cases can be told apart.
    #[test]
    fn the_denial_tracker_knows_the_deny_list_by_number() {
        let want: std::collections::BTreeSet<i32> = DENIED_SYSCALLS
            .iter()
            .map(|n| resolve(n).map_or(-1, |s| s.as_raw_syscall()))
            .collect();
        let have: std::collections::BTreeSet<i32> = (0..1024u32)
            .filter(|&n| agentd_common::denials::seccomp_denied_nr(n))
            .map(|n| n as i32)
            .collect();
        assert_eq!(have, want);
        assert_eq!(syscall_name(101), "ptrace");
        assert_eq!(syscall_name(agentd_common::denials::nr::CLONE3), "clone3");
    }

    #[test]
    fn every_denied_syscall_is_filtered() {
        const MARKER: i32 = libc::ENOTRECOVERABLE;
        let numbers: Vec<(&str, libc::c_long)> = DENIED_SYSCALLS
            .iter()
            .map(|name| {
                let nr = resolve(name).expect("resolve").as_raw_syscall();
                (*name, libc::c_long::from(nr))
            })
            .collect();
        let filter = build(DENIED_SYSCALLS, MARKER).expect("build");
        let caps = crate::layers::caps::prepare().expect("caps");
        let status = in_child(move || {
            if caps.apply_in_child().is_err() {
                return 99;
            }
            if filter.apply_in_child().is_err() {
                return 98;
            }
            for (i, (_, nr)) in numbers.iter().enumerate() {
                // SAFETY: every argument is 0; the filter answers before the kernel reads any.
                let rc =
                    unsafe { libc::syscall(*nr, 0usize, 0usize, 0usize, 0usize, 0usize, 0usize) };
                if expect_errno(rc, MARKER) != 0 {
                    return 10 + i as i32;
                }
            }
            0
        });
        let code = exit_code(status);
        let failed = code
            .and_then(|c| usize::try_from(c - 10).ok())
            .and_then(|i| DENIED_SYSCALLS.get(i));
        assert_eq!(code, Some(0), "{status:?}: {failed:?} not filtered");
    }

    /// The kernel's seccomp action cache (`seccomp_is_const_allow`, kernel/seccomp.c):
    /// at attach, the kernel runs the filter for each native syscall number with only
    /// `nr` and `arch` known. Where that reaches `RET ALLOW` through instructions it can
    /// emulate, the syscall skips the filter from then on. A mirror of that emulator;
    /// `None` where the kernel gives up (a load of anything but nr and arch, or an
    /// instruction outside its list), which means the filter runs on every call.
    fn kernel_cache_allows(filter: &[libc::sock_filter], nr: u32) -> Option<bool> {
        const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
        let mut reg = 0u32;
        let mut pc = 0usize;
        loop {
            let insn = filter.get(pc)?;
            let code = u32::from(insn.code);
            let k = insn.k;
            let (ld_abs, ret_k, ja, and_k) = (
                libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
                libc::BPF_RET | libc::BPF_K,
                libc::BPF_JMP | libc::BPF_JA,
                libc::BPF_ALU | libc::BPF_AND | libc::BPF_K,
            );
            let jump = |op: u32| libc::BPF_JMP | op | libc::BPF_K;
            if code == ld_abs {
                reg = match k {
                    0 => nr,
                    4 => AUDIT_ARCH_X86_64,
                    _ => return None,
                };
            } else if code == ret_k {
                return Some(k == libc::SECCOMP_RET_ALLOW);
            } else if code == ja {
                pc += k as usize;
            } else if code == and_k {
                reg &= k;
            } else {
                let taken = match code {
                    c if c == jump(libc::BPF_JEQ) => reg == k,
                    c if c == jump(libc::BPF_JGE) => reg >= k,
                    c if c == jump(libc::BPF_JGT) => reg > k,
                    c if c == jump(libc::BPF_JSET) => reg & k != 0,
                    _ => return None,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            pc += 1;
        }
    }

    /// The filter costs a syscall the agent makes all the time (getpid, read, openat)
    /// no filter run at all: every syscall the filter does not name is one the kernel's
    /// action cache allows outright. A rule reading arguments, or an instruction the
    /// kernel cannot emulate, on the common path would put every call through the
    /// filter; this pins that it does not.
    #[test]
    fn every_syscall_the_filter_does_not_name_skips_it_through_the_kernels_cache() {
        let filter = prepare().expect("prepare");
        let named: std::collections::BTreeSet<i32> = DENIED_SYSCALLS
            .iter()
            .chain(&["clone", "clone3", "socket", "ioctl"])
            .map(|n| resolve(n).expect("resolve").as_raw_syscall())
            .collect();
        // x86-64 syscall numbers run to about 470.
        for nr in 0..512u32 {
            let cached = kernel_cache_allows(&filter.filter, nr);
            let name = syscall_name(nr);
            if named.contains(&(nr as i32)) {
                assert_ne!(cached, Some(true), "{name} ({nr}) must reach the filter");
            } else {
                assert_eq!(
                    cached,
                    Some(true),
                    "{name} ({nr}) runs the filter on every call"
                );
            }
        }
    }

    /// The three child-side layers in the model's order, then a real exec.
    #[test]
    fn caps_landlock_seccomp_in_order_then_exec() {
        use crate::layers::landlock::{self, LandlockRequest};
        use std::ffi::CString;
        use std::path::PathBuf;
        let caps = crate::layers::caps::prepare().expect("caps");
        let mut exec = vec![PathBuf::from("/usr/bin")];
        exec.extend(
            landlock::implied_exec_paths(&exec)
                .into_iter()
                .map(|(p, _)| p),
        );
        let ll = landlock::prepare(&LandlockRequest {
            read: vec![PathBuf::from("/usr"), PathBuf::from("/proc")],
            exec,
            scope_signal: true,
            scope_abstract_unix: true,
            ..Default::default()
        })
        .expect("landlock");
        let sc = prepare().expect("seccomp");
        let sh = CString::new("/bin/sh").expect("cstr");
        let dash_c = CString::new("-c").expect("cstr");
        let script = CString::new(
            "grep -q '^CapEff:[[:space:]]*0000000000000000$' /proc/self/status || exit 3; \
             grep -q '^NoNewPrivs:[[:space:]]*1$' /proc/self/status || exit 4; \
             grep -q '^Seccomp:[[:space:]]*2$' /proc/self/status || exit 5; \
             cat /etc/hostname >/dev/null 2>&1 && exit 6; exit 0",
        )
        .expect("cstr");
        let status = in_child(move || {
            if let Err(e) = caps.apply_in_child() {
                return 10 + e as i32;
            }
            if let Err(e) = ll.apply_in_child() {
                return 40 + e as i32;
            }
            if let Err(e) = sc.apply_in_child() {
                return 70 + e as i32;
            }
            let argv = [
                sh.as_ptr(),
                dash_c.as_ptr(),
                script.as_ptr(),
                std::ptr::null(),
            ];
            // SAFETY: argv is a NULL-terminated array of valid C strings.
            unsafe { libc::execv(sh.as_ptr(), argv.as_ptr()) };
            2
        });
        assert_eq!(exit_code(status), Some(0), "{status:?}");
    }
}
