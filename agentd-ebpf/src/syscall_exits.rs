//! `fexit` programs that replace the `sys_exit` program's denial tracker and `listen()`
//! check where trampoline programs attach (see `agentd_common::syscalls::exits`).
//!
//! A program runs only when its syscall returns, for every process on the host (it
//! filters by cgroup like the tracker): a getpid loop outside any run pays nothing, an
//! open loop one trampoline call and a compare. The loader attaches each program to the
//! kernel function named in `DENIAL_EXITS`; the ELF sections carry no target.
//!
//! The syscall number of each program is a constant, so the inlined tracker keeps only
//! that syscall's branch and each program verifies in a fraction of the dispatcher's
//! instructions.

use agentd_common::{
    budget::PT_REGS_ORIG_AX_OFFSET,
    denials::{PT_REGS_AX, PT_REGS_DI},
    syscalls::exits,
};
use aya_ebpf::{
    helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    macros::fexit,
    programs::FExitContext,
};

use crate::{denials, net, process, syscalls::reg};

/// An `__x64_sys_*(const struct pt_regs *regs)` entry point returned: audits the
/// failure if it is a watched one.
#[inline(always)]
fn syscall_returned(ctx: &FExitContext, id: u32) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    // The return value follows the one argument in the trampoline's context.
    let ret: i64 = ctx.arg(1);
    if ret < 0 {
        denials::judge_failed(regs, id, ret);
    }
    0
}

macro_rules! denial_exit {
    ($($prog:ident)*) => {
        $(
            #[fexit]
            pub fn $prog(ctx: FExitContext) -> i32 {
                syscall_returned(&ctx, const { exits::nr_of(stringify!($prog)) })
            }
        )*
    };
}

// The programs of `agentd_common::syscalls::exits::DENIAL_EXITS`, whose table gives each
// its syscall number (and the loader its kernel function).
denial_exit! {
    exit_open
    exit_creat
    exit_truncate
    exit_mkdir
    exit_rmdir
    exit_unlink
    exit_execve
    exit_openat
    exit_mkdirat
    exit_unlinkat
    exit_execveat
    exit_openat2
    exit_socket
    exit_kill
    exit_tkill
    exit_tgkill
    exit_rename
    exit_link
    exit_renameat
    exit_linkat
    exit_renameat2
}

/// `__secure_computing` returned: non-zero means the filter's action skips the syscall
/// (`ERRNO`, or a notifier's error answer), whose result the filter has put in the
/// user registers' `ax`. `KILL` actions never return here.
#[fexit]
pub fn exit_seccomp(ctx: FExitContext) -> i32 {
    let Ok(skipped) = ctx.ret::<i64>() else {
        return 0;
    };
    // An `int`: the upper half of the register is not part of it.
    if skipped as i32 == 0 {
        return 0;
    }
    // SAFETY: argument-less helper; the current task as a BTF pointer.
    let task = unsafe { bpf_get_current_task_btf() };
    // SAFETY: `task` is the current task's trusted BTF pointer, which the helper takes.
    let regs = unsafe { bpf_task_pt_regs(task.cast()) } as *const u8;
    let id = reg(regs, PT_REGS_ORIG_AX_OFFSET);
    let result = reg(regs, PT_REGS_AX) as i64;
    // A non-native call's number is not a native one: the tracker would misread it.
    if result < 0 && process::compat_abi(id) == 0 {
        denials::on_failed(regs, id as u32, result);
    }
    0
}

/// `listen()` returned: the `net.bind` check of a socket the kernel bound itself.
#[fexit]
pub fn exit_listen(ctx: FExitContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    if ret == 0 {
        net::on_listened(reg(regs, PT_REGS_DI));
    }
    0
}
