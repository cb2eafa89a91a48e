//! Exec integrity: only inodes in `exec.allow` (and the interpreters it implies) may be
//! executed, and PROT_EXEC file mappings must come from `exec.allow` or
//! `exec.libraries`. Landlock restricts exec by path but lets memfds (an internal
//! mount) through and does not look at mmap, so `fexecve(memfd)` and
//! `ld.so /copy/of/binary` need these programs.
//!
//! - BPF LSM: `lsm/bprm_check_security` and `lsm/mmap_file` deny with -EACCES.
//! - Fallback: `tp_btf/sched_process_exec` kills a new image outside `exec.allow` before
//!   it runs a user instruction; the `tp_btf/sys_exit` dispatcher ([`on_mmapped`]) kills
//!   a process whose `mmap(PROT_EXEC)` of a file outside the sets succeeded, before it
//!   returns to user space (residual: another thread of the process could jump into the
//!   new mapping in that window; the LSM path has none).
//! - `mprotect`/`pkey_mprotect` adding PROT_EXEC to a file mapping: `lsm/file_mprotect`
//!   denies with -EACCES; the fallback ([`on_mprotected`], at `sys_exit`) finds the VMAs of the range
//!   with `bpf_find_vma` (the first [`MPROTECT_MAX_VMAS`]; a longer range is checked that
//!   far) and kills on a file outside the sets. Anonymous memory made executable (JITs)
//!   stays allowed on both paths: it has no inode to judge, and landlock/seccomp already
//!   decide what may write code into it.
//!
//! A run has exec integrity iff `EXEC_RULES` holds its config entry (dev 0, inode 0),
//! whose flags carry the audit-only bit.

use core::ffi::c_void;

use agentd_common::fsrules::{
    FsRuleKey, FsRuleValue, EXEC_RULE_ALLOW, EXEC_RULE_LIBRARY, FS_ACTION_DENY, FS_ACTION_KILL,
    FS_ACTION_WOULD_DENY, FS_EVENT_EXEC_OUTSIDE, FS_EVENT_MMAP_OUTSIDE, FS_EVENT_MPROTECT_OUTSIDE,
    FS_LAYER_LSM, FS_LAYER_TRACEPOINT, FS_OP_OPEN, FS_RULE_FLAG_AUDIT_ONLY, MAX_FS_RULES,
    MPROTECT_MAX_VMAS,
};
use aya_ebpf::{
    helpers::generated::{bpf_find_vma, bpf_get_current_task_btf, bpf_send_signal},
    macros::{btf_tracepoint, lsm, map},
    maps::HashMap,
    programs::{BtfTracePointContext, LsmContext},
};

use crate::{
    fsrules::{emit_with, fd_file, Found, Verdict, AGENTD_FS_OFFSETS, EACCES},
    inode_walk::walk_ancestors,
    kernel::{read_at, SIGKILL},
    maps::watched_cgroup,
};

/// `exec.allow` / `exec.libraries` entries and the per-run config entry.
#[map]
pub static EXEC_RULES: HashMap<FsRuleKey, FsRuleValue> = HashMap::with_max_entries(MAX_FS_RULES, 0);

const PROT_EXEC: u64 = 0x4;
const MAP_ANONYMOUS: u64 = 0x20;

#[lsm(hook = "bprm_check_security")]
pub fn exec_lsm_bprm_check(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let bprm: *const u8 = ctx.arg(0);
    match bprm_file_btf(bprm).map(|f| check::<true>(f, FS_LAYER_LSM, FS_EVENT_EXEC_OUTSIDE)) {
        Some(Verdict::Deny) => -EACCES,
        _ => 0,
    }
}

/// `mmap_file(struct file *file, unsigned long reqprot, unsigned long prot,
/// unsigned long flags)`.
#[lsm(hook = "mmap_file")]
pub fn exec_lsm_mmap_file(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let file: *const u8 = ctx.arg(0);
    let prot: u64 = ctx.arg(2);
    if file.is_null() || prot & PROT_EXEC == 0 {
        return 0;
    }
    match check::<true>(file, FS_LAYER_LSM, FS_EVENT_MMAP_OUTSIDE) {
        Verdict::Deny => -EACCES,
        Verdict::Allow => 0,
    }
}

/// `file_mprotect(struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot)`.
#[lsm(hook = "file_mprotect")]
pub fn exec_lsm_file_mprotect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return 0;
    }
    let offs = AGENTD_FS_OFFSETS.load();
    if offs.valid == 0 {
        return 0;
    }
    let vma: *const u8 = ctx.arg(0);
    // SAFETY: vma is the hook's `struct vm_area_struct *`; offset from BTF; fault tolerant.
    let Ok(file) = (unsafe { read_at::<*const u8>(vma, offs.vma_vm_file) }) else {
        return 0;
    };
    if file.is_null() {
        return 0;
    }
    match check::<false>(file, FS_LAYER_LSM, FS_EVENT_MPROTECT_OUTSIDE) {
        Verdict::Deny => -EACCES,
        Verdict::Allow => 0,
    }
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_tp_check(ctx: BtfTracePointContext) -> i32 {
    let bprm: *const u8 = ctx.arg(2);
    if let Some(Verdict::Deny) =
        bprm_file(bprm).map(|f| check::<false>(f, FS_LAYER_TRACEPOINT, FS_EVENT_EXEC_OUTSIDE))
    {
        // SAFETY: signals the current process, which just became the new image.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    0
}

/// A watched process's `mmap(addr, len, prot, flags, fd, off)` succeeded: kill it if
/// the mapping is PROT_EXEC of a file outside the sets. Called from the `tp_btf/sys_exit`
/// dispatcher (`syscalls.rs`) with the arguments read back from the saved registers; the
/// SIGKILL lands before the process returns to user space, so no instruction of the new
/// mapping runs in the calling thread.
#[inline(never)]
pub(crate) fn on_mmapped(prot: u64, flags: u64, fd: u64) {
    let fd = fd as i32;
    if prot & PROT_EXEC == 0 || flags & MAP_ANONYMOUS != 0 || fd < 0 {
        return;
    }
    let offs = AGENTD_FS_OFFSETS.load();
    if offs.valid == 0 || watched_cgroup().is_none() {
        return;
    }
    let Some(file) = fd_file(&offs, fd as u64) else {
        return;
    };
    if let Verdict::Deny = check::<false>(file, FS_LAYER_TRACEPOINT, FS_EVENT_MMAP_OUTSIDE) {
        // SAFETY: signals the current process (thread group).
        unsafe { bpf_send_signal(SIGKILL) };
    }
}

/// What [`vma_found`] reports about the VMA `bpf_find_vma` found.
#[repr(C)]
struct VmaFound {
    file: u64,
    end: u64,
}

/// `bpf_find_vma` callback: copies the VMA's file and end into the caller's [`VmaFound`].
#[inline(never)]
extern "C" fn vma_found(_task: *mut c_void, vma: *mut c_void, out: *mut c_void) -> i64 {
    let offs = AGENTD_FS_OFFSETS.load();
    let vma = vma as *const u8;
    // SAFETY: `vma` is the VMA the helper found (it holds the mmap lock); offsets from BTF;
    // fault-tolerant reads. `out` is the caller's VmaFound on its stack.
    unsafe {
        let file = read_at::<u64>(vma, offs.vma_vm_file).unwrap_or(0);
        let end = read_at::<u64>(vma, offs.vma_vm_end).unwrap_or(0);
        let out = out as *mut VmaFound;
        (*out).file = file;
        (*out).end = end;
    }
    0
}

/// `mprotect(addr, len, prot)` / `pkey_mprotect(addr, len, prot, pkey)` succeeded: kill
/// the process if PROT_EXEC was set on a file mapping outside the sets. Called from the
/// `tp_btf/sys_exit` dispatcher with the arguments read back from the saved registers.
#[inline(never)]
pub(crate) fn on_mprotected(addr: u64, len: u64, prot: u64) {
    let offs = AGENTD_FS_OFFSETS.load();
    if offs.valid == 0 {
        return;
    }
    if prot & PROT_EXEC == 0 || watched_cgroup().is_none() {
        return;
    }
    let end = addr.saturating_add(len);
    let mut at = addr;
    for _ in 0..MPROTECT_MAX_VMAS {
        at = agentd_mprotect_step(at, end);
        if at == 0 {
            return;
        }
    }
}

/// One VMA of an mprotect range: judges the file mapped at `at`, and returns where the
/// next VMA of the range starts (0: the range is done, or the process was killed).
///
/// A *global* BPF function (exported, so its BTF linkage is global): the verifier checks
/// it once, for any scalar arguments, and each call in the loop above as a call that
/// returns a scalar. Inlined, [`check`] was verified once per iteration and per path
/// through the iterations before: 186k of the `sys_exit` program's 240k verified
/// instructions, about 0.25 s of every standalone launch. Its 272-byte frame stacks on
/// the dispatcher's and `on_mprotected`'s, which is why the dispatcher's hooks are
/// subprograms (`#[inline(never)]`): their frames are not the dispatcher's own, and the
/// chain stays within the kernel's 512 bytes.
#[inline(never)]
#[no_mangle]
pub extern "C" fn agentd_mprotect_step(at: u64, end: u64) -> u64 {
    // SAFETY: argument-less helper; the BTF task pointer bpf_find_vma requires.
    let task = unsafe { bpf_get_current_task_btf() };
    let mut found = VmaFound { file: 0, end: 0 };
    // SAFETY: `task` is current; the callback only writes the VmaFound passed along.
    let ret = unsafe {
        bpf_find_vma(
            task,
            at,
            vma_found as *mut c_void,
            (&raw mut found).cast::<c_void>(),
            0,
        )
    };
    if ret != 0 {
        // No VMA there: mprotect fails with ENOMEM by itself.
        return 0;
    }
    if found.file != 0 {
        if let Verdict::Deny = check::<false>(
            found.file as *const u8,
            FS_LAYER_TRACEPOINT,
            FS_EVENT_MPROTECT_OUTSIDE,
        ) {
            // SAFETY: signals the current process; it dies before it returns to user
            // space.
            unsafe { bpf_send_signal(SIGKILL) };
            return 0;
        }
    }
    if found.end >= end || found.end <= at {
        return 0;
    }
    found.end
}

#[inline(always)]
fn bprm_file(bprm: *const u8) -> Option<*const u8> {
    let offs = AGENTD_FS_OFFSETS.load();
    if offs.valid == 0 {
        return None;
    }
    // SAFETY: bprm is a `struct linux_binprm *`; offset from BTF; fault tolerant.
    let file = unsafe { read_at::<*const u8>(bprm, offs.binprm_file) }.ok()?;
    if file.is_null() {
        None
    } else {
        Some(file)
    }
}

/// `bprm->file` through a BTF load (`linux_binprm.file` is a trusted member), so that the
/// record can carry `bpf_d_path` of it: `/memfd:NAME (deleted)` for a memfd.
#[inline(always)]
fn bprm_file_btf(bprm: *const u8) -> Option<*const u8> {
    let offs = AGENTD_FS_OFFSETS.load();
    if offs.valid == 0 {
        return None;
    }
    // SAFETY: `bprm` is the hook's trusted `struct linux_binprm *`; a BTF-checked load at
    // an offset from the kernel's BTF.
    let file = unsafe {
        bprm.byte_add(offs.binprm_file as usize)
            .cast::<*const u8>()
            .read_volatile()
    };
    if file.is_null() {
        None
    } else {
        Some(file)
    }
}

/// `event_kind` is [`FS_EVENT_EXEC_OUTSIDE`] (only `exec.allow` matches),
/// [`FS_EVENT_MMAP_OUTSIDE`] or [`FS_EVENT_MPROTECT_OUTSIDE`] (`exec.libraries` matches
/// too). `D_PATH`: `file` is a trusted BTF pointer and the record gets `bpf_d_path`.
#[inline(always)]
fn check<const D_PATH: bool>(file: *const u8, layer: u32, event_kind: u32) -> Verdict {
    let offs = AGENTD_FS_OFFSETS.load();
    if offs.valid == 0 {
        return Verdict::Allow;
    }
    let Some((cgroup_id, run_slot)) = watched_cgroup() else {
        return Verdict::Allow;
    };
    let config_key = FsRuleKey {
        run_slot,
        dev: 0,
        ino: 0,
    };
    // SAFETY: copied out at once.
    let Some(config) = unsafe { EXEC_RULES.get(config_key) }.copied() else {
        return Verdict::Allow;
    };
    // SAFETY: `file` is a `struct file *`; BTF offsets; fault-tolerant reads.
    let Ok(dentry) = (unsafe { read_at::<*const u8>(file, offs.file_f_path + offs.path_dentry) })
    else {
        return Verdict::Allow;
    };
    let mut allowed = false;
    let Some(walked) = walk_ancestors(&offs, dentry, run_slot, &EXEC_RULES, |value, _| {
        allowed = value.kind == EXEC_RULE_ALLOW
            || (value.kind == EXEC_RULE_LIBRARY && event_kind != FS_EVENT_EXEC_OUTSIDE);
        allowed
    }) else {
        return Verdict::Allow;
    };
    if allowed {
        return Verdict::Allow;
    }
    let (dev, ino) = (walked.dev, walked.ino);
    let audit_only = config.flags & FS_RULE_FLAG_AUDIT_ONLY != 0;
    let action = if audit_only {
        FS_ACTION_WOULD_DENY
    } else if layer == FS_LAYER_LSM {
        FS_ACTION_DENY
    } else {
        FS_ACTION_KILL
    };
    let found = Found {
        value: FsRuleValue {
            kind: event_kind,
            rule_index: 0,
            flags: config.flags,
            _pad: 0,
        },
        depth: 0,
    };
    emit_with::<D_PATH>(
        &offs, dentry, cgroup_id, run_slot, layer, action, found, dev, ino, FS_OP_OPEN, 0, file,
    );
    if audit_only {
        Verdict::Allow
    } else {
        Verdict::Deny
    }
}
