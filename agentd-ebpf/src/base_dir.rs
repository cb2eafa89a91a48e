//! The directory a relative path argument is resolved against, taken in the kernel during
//! the call: the task's `fs->pwd`, or the directory of its `dirfd`. A record built later
//! from `/proc/PID/cwd` would guess: the process may have changed directory or exited by
//! then.
//!
//! The walk goes from that `(vfsmount, dentry)` up `d_parent`, crossing into the parent
//! mount at each mount root, until it reaches the task's root (`fs->root`); a directory
//! it cannot reach the root from (a detached mount, outside a chroot) is unknown. Each
//! dentry's name is copied into a per-CPU scratch buffer, innermost
//! first, NUL after each. It runs only for a refused (or, in observed runs, recorded) call
//! whose path is relative, never on the host's common path.

use agentd_common::{
    denials::{BASE_MAX_STEPS, DENIAL_AT_FDCWD, DENIAL_PATH_LEN},
    fsrules::FsOffsets,
};
use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_task_btf, bpf_loop, bpf_probe_read_kernel, bpf_probe_read_kernel_str,
    },
    macros::map,
    maps::PerCpuArray,
};
use core::ffi::c_void;

use crate::{
    fsrules::{fd_file, AGENTD_FS_OFFSETS},
    kernel::read_at,
};

/// Twice the record's field: a name copied at any offset below `DENIAL_PATH_LEN` has
/// `DENIAL_PATH_LEN` bytes after it, which the verifier can prove.
const SCRATCH_LEN: usize = 2 * DENIAL_PATH_LEN;

/// [`Scratch::outcome`] while the walk goes on, once it reached the root, or when it
/// cannot tell the directory.
const WALKING: u32 = 0;
const REACHED: u32 = 1;
const FAILED: u32 = 2;

/// The walk's per-CPU state, shared by the `bpf_loop` steps.
#[repr(C)]
struct Scratch {
    /// The components copied so far, innermost first.
    names: [u8; SCRATCH_LEN],
    /// The task's root (`struct vfsmount *`, `struct dentry *`).
    root_mnt: u64,
    root_dentry: u64,
    /// Where the walk is.
    vfs: u64,
    dentry: u64,
    /// Bytes of `names` used.
    used: u32,
    outcome: u32,
}

#[map]
static BASE_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Writes the base directory of a relative path passed with `dirfd` (or
/// [`DENIAL_AT_FDCWD`]) into `dst` (`DENIAL_PATH_LEN` bytes of a reserved record), encoded
/// as `DenialEvent::base`. Returns the bytes used, or -1 when the directory cannot be
/// told: no offsets, a bad `dirfd`, a fault, deeper than [`BASE_MAX_STEPS`] or longer
/// than `DENIAL_PATH_LEN`.
///
/// The steps run under `bpf_loop`, so the verifier checks one step once, however many
/// the walk takes; an unrolled loop, with a name or a mount crossing at each step, would
/// be a state of its own per path through it. One BPF subprogram (not inlined), since
/// the tracker calls it from three places.
#[inline(never)]
pub(crate) fn write_base(dirfd: i32, dst: *mut u8) -> i64 {
    match walk(dirfd, dst) {
        Some(used) => i64::from(used),
        None => -1,
    }
}

#[inline(always)]
fn walk(dirfd: i32, dst: *mut u8) -> Option<u32> {
    let offs = AGENTD_FS_OFFSETS.load();
    if offs.valid == 0 {
        return None;
    }
    let state = BASE_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: argument-less helper; current's task_struct.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    // SAFETY: fault-tolerant reads at offsets from the running kernel's BTF: current's
    // fs_struct, its root and (for AT_FDCWD) pwd, or the dirfd's file's f_path; then
    // plain writes into this CPU's map value, which nothing else touches meanwhile.
    unsafe {
        let fs = read_at::<*const u8>(task, offs.task_fs).ok()?;
        if fs.is_null() {
            return None;
        }
        let (base, at) = if dirfd == DENIAL_AT_FDCWD {
            (fs, offs.fs_pwd)
        } else {
            (fd_file(&offs, dirfd as u32 as u64)?, offs.file_f_path)
        };
        (*state).root_mnt = read_at::<u64>(fs, offs.fs_root + offs.path_mnt).ok()?;
        (*state).root_dentry = read_at::<u64>(fs, offs.fs_root + offs.path_dentry).ok()?;
        (*state).vfs = read_at::<u64>(base, at + offs.path_mnt).ok()?;
        (*state).dentry = read_at::<u64>(base, at + offs.path_dentry).ok()?;
        (*state).used = 0;
        (*state).outcome = WALKING;
        bpf_loop(
            BASE_MAX_STEPS,
            step as *const () as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
        let used = (*state).used;
        if (*state).outcome != REACHED || used as usize > DENIAL_PATH_LEN {
            return None;
        }
        let names = core::ptr::addr_of!((*state).names).cast::<c_void>();
        let rc = bpf_probe_read_kernel(dst.cast::<c_void>(), DENIAL_PATH_LEN as u32, names);
        (rc == 0).then_some(used)
    }
}

/// One step of the walk (a `bpf_loop` callback): 0 to go on, 1 to stop.
#[inline(never)]
extern "C" fn step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(state) = BASE_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let offs = AGENTD_FS_OFFSETS.load();
    // SAFETY: this CPU's map value (see `walk`).
    let outcome = match unsafe { step_on(&offs, state) } {
        Some(WALKING) => return 0,
        Some(outcome) => outcome,
        None => FAILED,
    };
    // SAFETY: as above.
    unsafe { (*state).outcome = outcome };
    1
}

/// Moves the walk one step up: past a mount root into its parent mount, or from a
/// dentry to its parent, copying the dentry's name. `None` on a fault.
///
/// # Safety
/// `state` is this CPU's `BASE_SCRATCH` value.
#[inline(always)]
unsafe fn step_on(offs: &FsOffsets, state: *mut Scratch) -> Option<u32> {
    // SAFETY: the caller's map value; fault-tolerant reads of the live vfsmount, its
    // struct mount (the vfsmount is embedded at `mount_mnt`) and the dentry, at BTF
    // offsets.
    unsafe {
        let vfs = (*state).vfs as *const u8;
        let dentry = (*state).dentry as *const u8;
        if dentry as u64 == (*state).root_dentry && vfs as u64 == (*state).root_mnt {
            return Some(REACHED);
        }
        let mnt_root = read_at::<*const u8>(vfs, offs.vfsmount_mnt_root).ok()?;
        if dentry == mnt_root {
            let mount = vfs.wrapping_sub(offs.mount_mnt as usize);
            let parent = read_at::<*const u8>(mount, offs.mount_mnt_parent).ok()?;
            if parent == mount || parent.is_null() {
                // The top of the mount tree without passing the task's root: a detached
                // (lazily unmounted) mount, or a directory outside the root. No path
                // the task could name.
                return Some(FAILED);
            }
            (*state).dentry = read_at::<u64>(mount, offs.mount_mnt_mountpoint).ok()?;
            (*state).vfs = parent.wrapping_add(offs.mount_mnt as usize) as u64;
            return Some(WALKING);
        }
        let up = read_at::<u64>(dentry, offs.dentry_d_parent).ok()?;
        if up == dentry as u64 {
            // A filesystem root that is not its mount's root: a disconnected dentry.
            return Some(FAILED);
        }
        let name = read_at::<*const u8>(dentry, offs.dentry_d_name_name).ok()?;
        let used = (*state).used;
        if used as usize >= DENIAL_PATH_LEN {
            return Some(FAILED);
        }
        // The mask keeps the offset provably below DENIAL_PATH_LEN (it already is).
        let at = core::ptr::addr_of_mut!((*state).names)
            .cast::<u8>()
            .add(used as usize & (DENIAL_PATH_LEN - 1));
        let copied = bpf_probe_read_kernel_str(
            at.cast::<c_void>(),
            DENIAL_PATH_LEN as u32,
            name.cast::<c_void>(),
        );
        if copied <= 0 {
            return None;
        }
        (*state).used = used + copied as u32;
        (*state).dentry = up;
        Some(WALKING)
    }
}
