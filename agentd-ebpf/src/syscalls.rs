//! The one `raw_syscalls:sys_exit` program of a run (see `agentd_common::syscalls` for why
//! there is exactly one, and for the `HOOK_*` bits).
//!
//! It runs for every syscall of every process on the host, so the order is: one array
//! load for the enabled hooks, one direct load of the syscall number, then compares;
//! helpers and map lookups come only once a hook's syscall matched. Each hook reads what
//! it needs from the saved user registers: a syscall leaves its argument registers as the
//! process passed them (only `ax` carries the result).
//!
//! The larger hooks are BPF subprograms (`#[inline(never)]`), not inlined: each keeps its
//! stack frame out of the dispatcher's, so that the deepest call chain (`on_mprotected`
//! then the global `agentd_mprotect_step`) fits the verifier's 512 bytes, and the
//! verifier drops a hook's internal states when it returns. Calling one costs a few
//! instructions, and only once its syscall matched.

use agentd_common::{
    budget::PT_REGS_ORIG_AX_OFFSET,
    denials::{PT_REGS_DI, PT_REGS_DX, PT_REGS_SI},
    fsrules::{NR_CREAT, NR_MMAP, NR_MPROTECT, NR_OPEN, NR_OPENAT, NR_OPENAT2, NR_PKEY_MPROTECT},
    syscalls::{
        HOOK_COMPAT, HOOK_DENIALS, HOOK_EXEC_MAPS, HOOK_FS_OBSERVE, HOOK_FS_OPEN,
        HOOK_FS_WRITE_BYTES, HOOK_LISTEN, HOOK_SYSCALL_COUNT, HOOK_UNIX_CONNECT,
    },
    unix::{NR_CONNECT, NR_LISTEN},
};
use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::Array,
    programs::BtfTracePointContext,
};

use crate::{
    budget, denials, exec_integrity, fsrules, fsrules::AGENTD_FS_OFFSETS, kernel::read_at, net,
    process, unix,
};

/// The enabled `HOOK_*` bits (entry 0), written by the loader.
#[map]
pub static SYSCALL_HOOKS: Array<u32> = Array::with_max_entries(1, 0);

/// `btf_trace_sys_exit(void *, struct pt_regs *regs, long ret)`.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_dispatch(ctx: BtfTracePointContext) -> i32 {
    let hooks = match SYSCALL_HOOKS.get(0) {
        Some(hooks) => *hooks,
        None => return 0,
    };
    if hooks == 0 {
        return 0;
    }
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // A direct load is much cheaper than a probe-read helper call; the loader checks the
    // offset (orig_ax, x86-64 user ABI) against BTF.
    // SAFETY: `struct pt_regs *` is a BTF pointer: the verifier allows a direct, fault
    // tolerant load of a member at a constant offset.
    let nr = unsafe {
        regs.byte_add(PT_REGS_ORIG_AX_OFFSET as usize)
            .cast::<u64>()
            .read_volatile()
    };
    if hooks & HOOK_SYSCALL_COUNT != 0 {
        budget::count_syscall();
    }
    // A non-native call's number is not a native one: no hook below may read it as such.
    if hooks & HOOK_COMPAT != 0 {
        let abi = process::compat_abi(nr);
        if abi != 0 {
            process::on_compat_call(nr, abi);
            return 0;
        }
    }
    if ret < 0 {
        if hooks & HOOK_DENIALS != 0 {
            denials::on_failed(regs, nr as u32, ret);
        }
        return 0;
    }
    if hooks & HOOK_FS_OBSERVE != 0 {
        denials::on_observed(regs, nr as u32);
    }
    match nr {
        NR_OPEN | NR_OPENAT | NR_OPENAT2 | NR_CREAT => {
            if hooks & HOOK_FS_OPEN != 0 {
                fsrules::on_opened(ret as u64);
            }
        }
        NR_CONNECT => {
            if hooks & HOOK_UNIX_CONNECT != 0 && ret == 0 {
                unix::on_connected(reg(regs, PT_REGS_DI));
            }
        }
        NR_LISTEN => {
            if hooks & HOOK_LISTEN != 0 && ret == 0 {
                net::on_listened(reg(regs, PT_REGS_DI));
            }
        }
        NR_MMAP => {
            if hooks & HOOK_EXEC_MAPS != 0 {
                let offs = AGENTD_FS_OFFSETS.load();
                exec_integrity::on_mmapped(
                    reg(regs, PT_REGS_DX),
                    reg(regs, offs.regs_r10),
                    reg(regs, offs.regs_r8),
                );
            }
        }
        NR_MPROTECT | NR_PKEY_MPROTECT => {
            if hooks & HOOK_EXEC_MAPS != 0 && ret == 0 {
                exec_integrity::on_mprotected(
                    reg(regs, PT_REGS_DI),
                    reg(regs, PT_REGS_SI),
                    reg(regs, PT_REGS_DX),
                );
            }
        }
        _ => {
            if hooks & HOOK_FS_WRITE_BYTES != 0 {
                budget::count_written(regs, nr, ret);
            }
        }
    }
    0
}

/// Saved user register at byte offset `off` of `regs` (0 if unreadable).
#[inline(always)]
pub(crate) fn reg(regs: *const u8, off: u32) -> u64 {
    // SAFETY: `regs` is the tracepoint's `struct pt_regs *`; read_at is fault tolerant.
    unsafe { read_at::<u64>(regs, off) }.unwrap_or(0)
}
