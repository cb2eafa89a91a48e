//! Inode rules (`fs.deny`, `fs.secret`) on both paths; see `agentd_common::fsrules` for
//! the maps, the record and the taint contract.
//!
//! - BPF LSM: `lsm/file_open` denies with -EACCES before the file is opened.
//! - Fallback: the `tp_btf/sys_exit` dispatcher (`syscalls.rs`) hands every successful
//!   open/openat/openat2/creat to [`on_opened`], which (for a watched run) finds the new `struct file` through `current->files->fdt->fd[ret]` and
//!   sends SIGKILL to the process on a deny match. The signal is delivered before the
//!   syscall returns to user space, so the thread that opened the file never runs
//!   another instruction. Residual race: other threads of the same process share the fd
//!   table and can use the new fd between fd_install and the kill (a window of a few
//!   microseconds); the LSM path has no such window.

use core::ptr::addr_of_mut;

use agentd_common::{
    fsrules::{
        FsEvent, FsOffsets, FsRuleKey, FsRuleValue, TaintState, EVENT_KIND_FS, FS_ACTION_DENY,
        FS_ACTION_KILL, FS_ACTION_TAINT, FS_ACTION_WOULD_DENY, FS_EVENT_FLAG_KERNEL_PATH,
        FS_LAYER_LSM, FS_LAYER_TRACEPOINT, FS_NAME_LEN, FS_OP_OPEN, FS_PATH_LEN, FS_RULE_DENY,
        FS_RULE_FLAG_AUDIT_ONLY, FS_RULE_SECRET, MAX_FS_RULES,
    },
    EventHeader, MAX_WATCHED_CGROUPS,
};
use aya_ebpf::{
    bindings::path,
    helpers::generated::{
        bpf_d_path, bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_kernel_str, bpf_send_signal,
    },
    macros::{lsm, map},
    maps::HashMap,
    programs::LsmContext,
    Global,
};

use crate::{
    inode_walk::walk_ancestors,
    kernel::{read_at, SIGKILL},
    maps::{count_drop, submit, watched_cgroup, EVENTS},
};

/// Resolved rule entries (`agentd_common::fsrules::names::MAP_FS_RULES`).
#[map]
pub static FS_RULES: HashMap<FsRuleKey, FsRuleValue> = HashMap::with_max_entries(MAX_FS_RULES, 0);

/// Taint flag per run cgroup (`agentd_common::fsrules::names::MAP_RUN_TAINT`).
#[map]
pub static RUN_TAINT: HashMap<u64, TaintState> = HashMap::with_max_entries(MAX_WATCHED_CGROUPS, 0);

/// Offsets from the loader (`.rodata`), inert while `valid == 0`.
#[unsafe(no_mangle)]
pub(crate) static AGENTD_FS_OFFSETS: Global<FsOffsets> = Global::new(FsOffsets::UNSET);

pub(crate) const EACCES: i32 = 13;

/// `file_open(struct file *file)`; the last argument is the previous LSM's verdict.
#[lsm(hook = "file_open")]
pub fn fs_lsm_file_open(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let offs = AGENTD_FS_OFFSETS.load();
    if offs.valid == 0 {
        return 0;
    }
    let Some(run) = watched_cgroup() else {
        return 0;
    };
    let file: *const u8 = ctx.arg(0);
    match check_file::<true>(&offs, file, run, FS_LAYER_LSM) {
        Verdict::Deny => -EACCES,
        Verdict::Allow => 0,
    }
}

/// A watched process's open/openat/openat2/creat returned `fd`: kill it if the file
/// is denied (and taint the run if it is a secret). Called from the `tp_btf/sys_exit`
/// dispatcher; the SIGKILL lands before the process returns to user space.
#[inline(never)]
pub(crate) fn on_opened(fd: u64) {
    let offs = AGENTD_FS_OFFSETS.load();
    if offs.valid == 0 {
        return;
    }
    let Some(run) = watched_cgroup() else {
        return;
    };
    let Some(file) = fd_file(&offs, fd) else {
        return;
    };
    if let Verdict::Deny = check_file::<false>(&offs, file, run, FS_LAYER_TRACEPOINT) {
        // SAFETY: argument-less apart from the signal number; signals the current
        // process (thread group), which is what we want to stop.
        unsafe { bpf_send_signal(SIGKILL) };
    }
}

/// `current->files->fdt->fd[fd]`, or `None` if any step fails.
///
/// Every step is a `bpf_probe_read_kernel` at an offset from the kernel's BTF. Direct
/// loads through the BTF pointers were tried, and were cheaper by nothing measurable
/// (an open loop inside a run: 1.38 against 1.36 times bare, 7 runs each), but each
/// load of a pointer member makes the verifier search the whole kernel BTF by name, up
/// to four times (`btf_nested_type_is_trusted`, for the `__safe_trusted` and `__safe_rcu`
/// variants), for every state that reaches it: 8% of a standalone start's CPU (perf), and
/// a standalone start went from 141 to 127 ms at p50 (25 alternating launches each)
/// without them.
#[inline(always)]
pub(crate) fn fd_file(offs: &FsOffsets, fd: u64) -> Option<*const u8> {
    // SAFETY: argument-less helper; returns current's task_struct as a BTF pointer.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    // SAFETY: fault-tolerant reads at offsets from the running kernel's BTF.
    let (max_fds, fds) = unsafe {
        let files = read_at::<*const u8>(task, offs.task_files).ok()?;
        if files.is_null() {
            return None;
        }
        let fdt = read_at::<*const u8>(files, offs.files_fdt).ok()?;
        if fdt.is_null() {
            return None;
        }
        (
            read_at::<u32>(fdt, offs.fdtable_max_fds).ok()?,
            read_at::<*const u8>(fdt, offs.fdtable_fd).ok()?,
        )
    };
    if fd >= u64::from(max_fds) {
        return None;
    }
    // SAFETY: fault-tolerant read of entry `fd` (< max_fds) of the fd array.
    let file = unsafe { read_at::<*const u8>(fds, (fd as u32).wrapping_mul(8)) }.ok()?;
    if file.is_null() {
        None
    } else {
        Some(file)
    }
}

pub(crate) enum Verdict {
    Allow,
    Deny,
}

/// A rule found on the walk up from the opened file.
#[derive(Clone, Copy)]
pub(crate) struct Found {
    pub(crate) value: FsRuleValue,
    pub(crate) depth: u32,
}

/// Matches `file` against the rules of the run `(cgroup_id, run_slot)`, records the
/// decision and applies taint. `LSM`: `file` is the hook's trusted BTF pointer, so the
/// record also gets the path `bpf_d_path` resolves (a compile-time switch: the helper
/// is refused in the tracepoint programs, so it must not even appear there).
#[inline(always)]
fn check_file<const LSM: bool>(
    offs: &FsOffsets,
    file: *const u8,
    (cgroup_id, run_slot): (u64, u32),
    layer: u32,
) -> Verdict {
    // SAFETY: `file` is a `struct file *` (LSM argument or fd-table entry); offsets from
    // BTF, fault-tolerant reads.
    let Ok(dentry) = (unsafe { read_at::<*const u8>(file, offs.file_f_path + offs.path_dentry) })
    else {
        return Verdict::Allow;
    };

    // Deny wins over secret wherever each matched: the walk goes on past a secret, and
    // stops at the nearest deny.
    let mut deny: Option<Found> = None;
    let mut secret: Option<Found> = None;
    let Some(walked) = walk_ancestors(offs, dentry, run_slot, &FS_RULES, |value, depth| {
        let found = Found { value, depth };
        if value.kind == FS_RULE_DENY {
            deny = Some(found);
            return true;
        }
        if value.kind == FS_RULE_SECRET && secret.is_none() {
            secret = Some(found);
        }
        false
    }) else {
        return Verdict::Allow;
    };
    let (dev, ino) = (walked.dev, walked.ino);

    if let Some(found) = deny {
        let audit_only = found.value.flags & FS_RULE_FLAG_AUDIT_ONLY != 0;
        let action = if audit_only {
            FS_ACTION_WOULD_DENY
        } else if layer == FS_LAYER_LSM {
            FS_ACTION_DENY
        } else {
            FS_ACTION_KILL
        };
        emit_with::<LSM>(
            offs, dentry, cgroup_id, run_slot, layer, action, found, dev, ino, FS_OP_OPEN, 0, file,
        );
        return if audit_only {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
    }
    if let Some(found) = secret {
        taint(cgroup_id, found.value.rule_index);
        emit_with::<LSM>(
            offs,
            dentry,
            cgroup_id,
            run_slot,
            layer,
            FS_ACTION_TAINT,
            found,
            dev,
            ino,
            FS_OP_OPEN,
            0,
            file,
        );
    }
    Verdict::Allow
}

/// Sets the run's taint flag (see the taint contract in `agentd_common::fsrules`).
#[inline(always)]
fn taint(cgroup_id: u64, rule_index: u32) {
    // SAFETY: copied out at once.
    let first = match unsafe { RUN_TAINT.get(cgroup_id) } {
        Some(state) => state.first_ktime_ns,
        // SAFETY: argument-less helper.
        None => unsafe { bpf_ktime_get_ns() },
    };
    let state = TaintState {
        tainted: 1,
        rule_index,
        first_ktime_ns: first,
    };
    // A full map cannot happen (one entry per watched cgroup, same capacity); if it
    // did, the record below still reaches userspace, which stops the run.
    let _ = RUN_TAINT.insert(cgroup_id, state, 0);
}

/// Records an inode-rule decision about `dentry` (its name; the path is left to the
/// userspace lookup).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn emit(
    offs: &FsOffsets,
    dentry: *const u8,
    cgroup_id: u64,
    run_slot: u32,
    layer: u32,
    action: u32,
    found: Found,
    dev: u32,
    ino: u64,
    op: u32,
    flags: u32,
) {
    emit_with::<false>(
        offs,
        dentry,
        cgroup_id,
        run_slot,
        layer,
        action,
        found,
        dev,
        ino,
        op,
        flags,
        core::ptr::null(),
    );
}

/// [`emit`]; with `D_PATH`, `file` is a trusted BTF `struct file *` (an LSM hook's
/// argument) and the record also carries `bpf_d_path(&file->f_path)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn emit_with<const D_PATH: bool>(
    offs: &FsOffsets,
    dentry: *const u8,
    cgroup_id: u64,
    run_slot: u32,
    layer: u32,
    action: u32,
    found: Found,
    dev: u32,
    ino: u64,
    op: u32,
    mut flags: u32,
    file: *const u8,
) {
    let Some(mut entry) = EVENTS.reserve::<FsEvent>(0) else {
        count_drop();
        return;
    };
    let event: *mut FsEvent = entry.as_mut_ptr();
    // SAFETY: argument-less helper.
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    // The string helper writes at most FS_NAME_LEN bytes, NUL-terminated, and tolerates
    // faults; bpf_d_path writes at most FS_PATH_LEN bytes into `path`.
    // SAFETY: `event` is a reserved, writable record of size_of::<FsEvent>() bytes; every
    // write below goes through raw pointers into it, within the sizes above.
    unsafe {
        let name = addr_of_mut!((*event).name).cast::<u8>();
        name.write(0);
        if let Ok(src) = read_at::<*const u8>(dentry, offs.dentry_d_name_name) {
            bpf_probe_read_kernel_str(name.cast(), FS_NAME_LEN as u32, src.cast());
        }
        addr_of_mut!((*event).header).write(EventHeader {
            kind: EVENT_KIND_FS,
            run_slot,
            tgid: (pid_tgid >> 32) as u32,
            pid: pid_tgid as u32,
            cgroup_id,
            ktime_ns: bpf_ktime_get_ns(),
        });
        addr_of_mut!((*event).rule_kind).write(found.value.kind);
        addr_of_mut!((*event).rule_index).write(found.value.rule_index);
        addr_of_mut!((*event).layer).write(layer);
        addr_of_mut!((*event).action).write(action);
        addr_of_mut!((*event).dev).write(dev);
        addr_of_mut!((*event).depth).write(found.depth);
        addr_of_mut!((*event).ino).write(ino);
        addr_of_mut!((*event).op).write(op);
        let path = addr_of_mut!((*event).path).cast::<u8>();
        path.write(0);
        if D_PATH {
            // `&file->f_path`, at a constant offset from a trusted pointer: what the
            // helper's BTF-typed argument accepts.
            let f_path = file.byte_add(offs.file_f_path as usize) as *mut path;
            if bpf_d_path(f_path, path.cast(), FS_PATH_LEN as u32) > 0 {
                flags |= FS_EVENT_FLAG_KERNEL_PATH;
            }
        }
        addr_of_mut!((*event).flags).write(flags);
    }
    submit(entry);
}
