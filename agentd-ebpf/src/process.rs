//! Process lifecycle of watched cgroups: `tp_btf/sched_process_exec` and
//! `tp_btf/sched_process_exit`.
//!
//! Both programs return early unless the current task's v2 cgroup is in `RUN_CGROUPS`,
//! so unwatched processes cost one hash lookup. Records are reserved directly in the
//! `EVENTS` ring buffer (no stack copy; the exec record is larger than the 512-byte
//! stack allows comfortably); a failed reservation is counted in `DROPPED`.
//!
//! Prototypes on Linux 6.18 (from `btf_trace_*` in vmlinux BTF; the first `void *` is the
//! tracepoint's private data and not visible to the program):
//! - `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`
//! - `sched_process_exit(struct task_struct *p, bool group_dead)` (`group_dead` since 6.16)

use core::{ffi::c_void, ptr::addr_of_mut};

use agentd_common::{
    budget::PT_REGS_ORIG_AX_OFFSET,
    denials::{
        DenialEvent, DENIAL_FLAG_ABI_I386, DENIAL_FLAG_ABI_X32, DENIAL_FLAG_COMPAT_CALL,
        DENIAL_FLAG_PATH_UNREADABLE, DENIAL_FLAG_SECCOMP_KILL, EVENT_KIND_DENIAL, X32_SYSCALL_BIT,
    },
    syscalls::{RUN_OBSERVE_FILES, RUN_SLOT_MASK},
    EventHeader, ExecEvent, ExitEvent, KernelOffsets, COMM_LEN, EVENT_KIND_EXEC, EVENT_KIND_EXIT,
    EXEC_FLAG_FILENAME_TRUNCATED, EXEC_FLAG_FILENAME_UNREADABLE, EXEC_FLAG_PPID_UNREADABLE,
    EXIT_FLAG_CODE_UNREADABLE, FILENAME_LEN, SECCOMP_MODE_DEAD, SIGNAL_GROUP_EXIT, TS_COMPAT,
};
use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task_btf,
        bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel_str, bpf_send_signal,
        bpf_task_pt_regs,
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use crate::{
    kernel::{offsets, read_at, SIGKILL},
    maps::{count_drop, current_cgroup_id, run_value, submit, watched_cgroup, EVENTS},
};

/// Argument positions (the hidden `void *__data` is not counted).
const EXEC_ARG_TASK: usize = 0;
const EXEC_ARG_BPRM: usize = 2;
const EXIT_ARG_TASK: usize = 0;
const EXIT_ARG_GROUP_DEAD: usize = 1;

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    on_exec(&ctx);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    on_exit(&ctx);
    0
}

/// (tgid, pid) of the current task.
#[inline(always)]
fn current_tgid_pid() -> (u32, u32) {
    // SAFETY: argument-less helper, allowed in tracing programs.
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    ((pid_tgid >> 32) as u32, pid_tgid as u32)
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: argument-less helper.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn on_exec(ctx: &BtfTracePointContext) {
    let Some(offs) = offsets() else {
        return;
    };
    let Some((cgroup_id, run_slot)) = watched_cgroup() else {
        return;
    };
    crate::budget::count_exec(cgroup_id);
    let task: *const u8 = ctx.arg(EXEC_ARG_TASK);
    let bprm: *const u8 = ctx.arg(EXEC_ARG_BPRM);
    let (tgid, pid) = current_tgid_pid();

    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop();
        return;
    };
    let event: *mut ExecEvent = entry.as_mut_ptr();
    let mut flags = 0u32;

    // SAFETY: task is the tracepoint's `struct task_struct *p`; the offsets come from the
    // running kernel's BTF. read_at is fault tolerant.
    let ppid = match unsafe { read_at::<*const u8>(task, offs.task_real_parent) } {
        // SAFETY: as above, `parent` is `p->real_parent`, a task_struct.
        Ok(parent) => match unsafe { read_at::<i32>(parent, offs.task_tgid) } {
            Ok(ppid) => ppid as u32,
            Err(_) => {
                flags |= EXEC_FLAG_PPID_UNREADABLE;
                0
            }
        },
        Err(_) => {
            flags |= EXEC_FLAG_PPID_UNREADABLE;
            0
        }
    };
    // SAFETY: argument-less helper; the low 32 bits are the real uid.
    let uid = unsafe { bpf_get_current_uid_gid() } as u32;

    // `event` points at a reserved, writable ring-buffer record of ExecEvent's size.
    // SAFETY: the helper writes COMM_LEN bytes through a raw pointer (no reference to
    // uninitialised memory is created) and zero-fills them on failure.
    unsafe {
        let comm = addr_of_mut!((*event).comm).cast::<c_void>();
        bpf_get_current_comm(comm, COMM_LEN as u32);
    }

    let filename_len = read_filename(bprm, &offs, event, &mut flags);

    // SAFETY: as above; plain field writes into the reserved record.
    unsafe {
        addr_of_mut!((*event).header).write(EventHeader {
            kind: EVENT_KIND_EXEC,
            run_slot,
            tgid,
            pid,
            cgroup_id,
            ktime_ns: now_ns(),
        });
        addr_of_mut!((*event).ppid).write(ppid);
        addr_of_mut!((*event).uid).write(uid);
        addr_of_mut!((*event).filename_len).write(filename_len);
        addr_of_mut!((*event).flags).write(flags);
    }
    submit(entry);
}

/// Copies `bprm->filename` into `event.filename`; returns its length without the NUL.
#[inline(always)]
fn read_filename(
    bprm: *const u8,
    offs: &KernelOffsets,
    event: *mut ExecEvent,
    flags: &mut u32,
) -> u32 {
    // SAFETY: `event` is the reserved record (see on_exec).
    let dst = unsafe { addr_of_mut!((*event).filename) }.cast::<u8>();
    // SAFETY: bprm is the tracepoint's `struct linux_binprm *`; the offset is from BTF.
    let Ok(src) = (unsafe { read_at::<*const u8>(bprm, offs.binprm_filename) }) else {
        // SAFETY: dst is FILENAME_LEN writable bytes of the reserved record.
        unsafe { dst.write(0) };
        *flags |= EXEC_FLAG_FILENAME_UNREADABLE;
        return 0;
    };
    // SAFETY: dst is FILENAME_LEN writable bytes; the helper writes at most that many.
    let copied =
        unsafe { bpf_probe_read_kernel_str(dst.cast::<c_void>(), FILENAME_LEN as u32, src.cast()) };
    if copied <= 0 {
        // SAFETY: as above.
        unsafe { dst.write(0) };
        *flags |= EXEC_FLAG_FILENAME_UNREADABLE;
        return 0;
    }
    let copied = copied as u32;
    if copied as usize >= FILENAME_LEN {
        // The buffer is full: the name is truncated unless it was exactly
        // FILENAME_LEN - 1 bytes long. Look at the source byte that did not fit.
        // SAFETY: fault-tolerant read of one byte of the kernel string.
        match unsafe { read_at::<u8>(src, (FILENAME_LEN - 1) as u32) } {
            Ok(0) => {}
            _ => *flags |= EXEC_FLAG_FILENAME_TRUNCATED,
        }
        return (FILENAME_LEN - 1) as u32;
    }
    copied - 1
}

#[inline(always)]
fn on_exit(ctx: &BtfTracePointContext) {
    let Some(offs) = offsets() else {
        return;
    };
    let (tgid, pid) = current_tgid_pid();
    let task: *const u8 = ctx.arg(EXIT_ARG_TASK);
    // A thread a seccomp filter killed: the filter set `seccomp.mode` to DEAD before the
    // fatal SIGSYS; any thread of the process may be the one (not only the last).
    let seccomp_killed = offs.task_seccomp_mode != 0
        // SAFETY: task is the tracepoint's `struct task_struct *p`; the offset is from BTF
        // (0: the kernel has no seccomp), and read_at is fault tolerant.
        && unsafe { read_at::<i32>(task, offs.task_seccomp_mode) } == Ok(SECCOMP_MODE_DEAD);
    let process_exit = if offs.exit_has_group_dead != 0 {
        // One record per process: when its last thread exits. (The verifier prunes this
        // branch on kernels without the argument, where reading it would be rejected.)
        let group_dead: u64 = ctx.arg(EXIT_ARG_GROUP_DEAD);
        group_dead & 0xff != 0
    } else {
        // Older kernels: report the thread-group leader's exit.
        pid == tgid
    };
    if !process_exit && !seccomp_killed {
        return;
    }
    let Some((cgroup_id, run_slot)) = watched_cgroup() else {
        return;
    };
    let header = EventHeader {
        kind: EVENT_KIND_EXIT,
        run_slot,
        tgid,
        pid,
        cgroup_id,
        ktime_ns: now_ns(),
    };
    if seccomp_killed {
        seccomp_kill(task, &offs, header);
    }
    if !process_exit {
        return;
    }

    let mut flags = 0u32;
    let exit_code = match wait_status(task, &offs) {
        Ok(code) => code,
        Err(_) => {
            flags |= EXIT_FLAG_CODE_UNREADABLE;
            0
        }
    };

    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count_drop();
        return;
    };
    entry.write(ExitEvent {
        header,
        exit_code,
        flags,
    });
    submit(entry);
}

/// The denial record of a thread a seccomp filter killed: the syscall number it was
/// killed in (`orig_ax` of its saved user registers, which the kill leaves in place), its
/// ABI (`TS_COMPAT` for `int 0x80`, the x32 bit in the number) and its exit signal.
#[inline(always)]
fn seccomp_kill(task: *const u8, offs: &KernelOffsets, header: EventHeader) {
    // SAFETY: task is the tracepoint's trusted `struct task_struct *`, which is what the
    // helper takes; it returns the task's user `struct pt_regs *` (or NULL).
    let regs = unsafe { bpf_task_pt_regs(task as *mut _) } as *const u8;
    // SAFETY: fault-tolerant reads at BTF-checked offsets (orig_ax is the fixed x86-64
    // ABI offset the sys_exit program uses too).
    let nr = unsafe { read_at::<u64>(regs, PT_REGS_ORIG_AX_OFFSET) }.unwrap_or(u64::MAX);
    // SAFETY: as above.
    let status = unsafe { read_at::<u32>(task, offs.task_thread_status) }.unwrap_or(0);
    // SAFETY: as above.
    let exit_code = unsafe { read_at::<i32>(task, offs.task_exit_code) }.unwrap_or(0);
    let nr = nr as u32;
    let mut flags = DENIAL_FLAG_SECCOMP_KILL | DENIAL_FLAG_PATH_UNREADABLE;
    if offs.task_thread_status != 0 && status & TS_COMPAT != 0 {
        flags |= DENIAL_FLAG_ABI_I386;
    } else if nr & X32_SYSCALL_BIT != 0 {
        flags |= DENIAL_FLAG_ABI_X32;
    }
    syscall_event(header, nr, flags, exit_code & 0x7f);
}

/// A path-less `DenialEvent` of syscall `nr` with `flags`; `dirfd` carries `signal`.
#[inline(always)]
fn syscall_event(header: EventHeader, nr: u32, flags: u32, signal: i32) {
    let Some(mut entry) = EVENTS.reserve::<DenialEvent>(0) else {
        count_drop();
        return;
    };
    let event: *mut DenialEvent = entry.as_mut_ptr();
    // SAFETY: plain field writes into the reserved record (no reference to uninitialised
    // memory is made); the path is left empty.
    unsafe {
        addr_of_mut!((*event).header).write(EventHeader {
            kind: EVENT_KIND_DENIAL,
            ..header
        });
        addr_of_mut!((*event).open_flags).write(0);
        addr_of_mut!((*event).nr).write(nr);
        addr_of_mut!((*event).errno).write(0);
        addr_of_mut!((*event).dirfd).write(signal);
        addr_of_mut!((*event).flags).write(flags);
        addr_of_mut!((*event).path_len).write(0);
        addr_of_mut!((*event).base_len).write(0);
        addr_of_mut!((*event).path).cast::<u8>().write(0);
    }
    submit(entry);
}

/// `HOOK_COMPAT`: the ABI flag of the current syscall (`nr` is `orig_ax`) if it is not a
/// native one (the x32 bit in the number, or `TS_COMPAT` for `int 0x80`), else 0.
#[inline(always)]
pub(crate) fn compat_abi(nr: u64) -> u32 {
    if nr <= u64::from(u32::MAX) && nr as u32 & X32_SYSCALL_BIT != 0 {
        return DENIAL_FLAG_ABI_X32;
    }
    let Some(offs) = offsets() else {
        return 0;
    };
    if offs.task_thread_status == 0 {
        return 0;
    }
    // SAFETY: argument-less helper; current's task_struct as a BTF pointer.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    // SAFETY: a direct BTF load at an offset from the running kernel's BTF (frozen
    // .rodata), which the verifier checks and the JIT makes fault tolerant.
    let status = unsafe {
        task.byte_add(offs.task_thread_status as usize)
            .cast::<u32>()
            .read_volatile()
    };
    if status & TS_COMPAT != 0 {
        DENIAL_FLAG_ABI_I386
    } else {
        0
    }
}

/// A non-native syscall (`abi`: its `DENIAL_FLAG_ABI_*`) of a process of a run: it is
/// reported and, unless the run only audits (`RUN_OBSERVE_FILES`), the process is
/// killed on its way back. The other hooks never see it (its number is not a native one).
#[inline(never)]
pub(crate) fn on_compat_call(nr: u64, abi: u32) {
    let cgroup_id = current_cgroup_id();
    let Some(value) = run_value(cgroup_id) else {
        return;
    };
    let audit = value & RUN_OBSERVE_FILES != 0;
    let (tgid, pid) = current_tgid_pid();
    let header = EventHeader {
        kind: EVENT_KIND_DENIAL,
        run_slot: value & RUN_SLOT_MASK,
        tgid,
        pid,
        cgroup_id,
        ktime_ns: now_ns(),
    };
    let flags = DENIAL_FLAG_COMPAT_CALL | DENIAL_FLAG_PATH_UNREADABLE | abi;
    syscall_event(
        header,
        nr as u32,
        flags,
        if audit { 0 } else { SIGKILL as i32 },
    );
    if !audit {
        // SAFETY: signals the current thread group, the process that made the call.
        unsafe { bpf_send_signal(SIGKILL) };
    }
}

/// The status `wait4` will report for this process, as `wait_task_zombie` computes it:
/// `signal->group_exit_code` during a group exit (exit_group, fatal signal), else the
/// thread-group leader's `exit_code` (already set: do_exit stores it before the
/// tracepoint fires).
#[inline(always)]
fn wait_status(task: *const u8, offs: &KernelOffsets) -> Result<i32, i32> {
    // SAFETY: task is the tracepoint's `struct task_struct *p`; offsets come from BTF and
    // every read is fault tolerant.
    unsafe {
        let signal = read_at::<*const u8>(task, offs.task_signal)?;
        let signal_flags = read_at::<u32>(signal, offs.signal_flags)?;
        if signal_flags & SIGNAL_GROUP_EXIT != 0 {
            return read_at::<i32>(signal, offs.signal_group_exit_code);
        }
        let leader = read_at::<*const u8>(task, offs.task_group_leader)?;
        read_at::<i32>(leader, offs.task_exit_code)
    }
}
