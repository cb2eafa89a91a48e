//! Kernel boundary of the inode rules (`fs.deny`, `fs.secret`) and of the run's taint flag.
//!
//! Userspace resolves every rule entry to a (device, inode) pair at run start and writes
//! it into [`names::MAP_FS_RULES`]. The programs (`lsm/file_open` where BPF LSM loads,
//! else `tp_btf/sys_exit` after a successful open) walk the opened file's dentry and up to
//! [`FS_MAX_DEPTH`] - 1 ancestors (`d_parent`), looking each (run slot, `s_dev`, `i_ino`)
//! up. A match on a deny rule denies the open (LSM: -EACCES) or kills the process
//! (tracepoint: SIGKILL); a match on a secret rule sets the run's taint flag. Either way
//! one [`FsEvent`] goes to the `EVENTS` ring buffer.
//!
//! # Taint contract (for the network programs)
//!
//! [`names::MAP_RUN_TAINT`] is a `HashMap<u64, TaintState>` keyed by the run's v2 cgroup
//! id (what `bpf_get_current_cgroup_id()` returns for every task of the run, so the flag
//! covers forks, execs and concurrent children). The fs programs insert the entry the
//! first time a secret is opened and update it on later opens; nothing ever clears it
//! while the run lives (userspace deletes it at run end). A network program treats the
//! run as tainted iff a lookup of its cgroup id finds an entry with `tainted != 0`.
//!
//! Device numbers are the kernel's internal `dev_t` (`major << 20 | minor`, what
//! `inode->i_sb->s_dev` holds), not the userspace encoding `stat()` returns: see
//! [`kernel_dev`].

/// Names of the maps, programs and globals of the inode rules.
pub mod names {
    /// `HashMap<FsRuleKey, FsRuleValue>`: resolved rule entries of every run.
    pub const MAP_FS_RULES: &str = "FS_RULES";
    /// `HashMap<u64, TaintState>`: v2 cgroup id to the run's taint state.
    pub const MAP_RUN_TAINT: &str = "RUN_TAINT";
    /// `lsm/file_open` program (BPF LSM path).
    pub const PROG_LSM_FILE_OPEN: &str = "fs_lsm_file_open";
    /// LSM hook of [`PROG_LSM_FILE_OPEN`].
    pub const LSM_HOOK_FILE_OPEN: &str = "file_open";
    /// `HashMap<u64, u64>`: v2 cgroup id to packets dropped because the run was tainted.
    pub const MAP_TAINT_EGRESS_DROPS: &str = "TAINT_EGRESS_DROPS";
    /// `cgroup_skb/egress` program dropping a tainted run's packets.
    pub const PROG_TAINT_EGRESS: &str = "taint_egress";
    /// `HashMap<FsRuleKey, FsRuleValue>`: `exec.allow` and `exec.libraries` entries.
    pub const MAP_EXEC_RULES: &str = "EXEC_RULES";
    /// `lsm/bprm_check_security`: the executed inode must be in `exec.allow`.
    pub const PROG_LSM_BPRM_CHECK: &str = "exec_lsm_bprm_check";
    /// `lsm/mmap_file`: PROT_EXEC mappings only from `exec.allow` / `exec.libraries`.
    pub const PROG_LSM_MMAP_FILE: &str = "exec_lsm_mmap_file";
    /// `tp_btf/sched_process_exec` fallback: kill an image outside `exec.allow`.
    pub const PROG_TP_EXEC_CHECK: &str = "exec_tp_check";
    /// LSM hooks and tracepoints of the programs above.
    pub const LSM_HOOK_BPRM_CHECK: &str = "bprm_check_security";
    /// See [`PROG_LSM_MMAP_FILE`].
    pub const LSM_HOOK_MMAP_FILE: &str = "mmap_file";
    /// LSM mprotect check (a mapping made executable).
    pub const PROG_LSM_FILE_MPROTECT: &str = "exec_lsm_file_mprotect";
    /// See [`PROG_LSM_FILE_MPROTECT`].
    pub const LSM_HOOK_FILE_MPROTECT: &str = "file_mprotect";
    /// See [`PROG_TP_EXEC_CHECK`].
    pub const TP_SCHED_PROCESS_EXEC: &str = "sched_process_exec";
    /// BPF LSM programs denying path operations on `fs.deny` inodes (see
    /// [`super::FS_OP_UNLINK`] and the following), with their hooks: (program, hook).
    pub const LSM_FS_OPS: [(&str, &str); 9] = [
        ("fs_lsm_inode_unlink", "inode_unlink"),
        ("fs_lsm_inode_rmdir", "inode_rmdir"),
        ("fs_lsm_inode_rename", "inode_rename"),
        ("fs_lsm_inode_link", "inode_link"),
        ("fs_lsm_inode_setattr", "inode_setattr"),
        ("fs_lsm_inode_create", "inode_create"),
        ("fs_lsm_inode_mkdir", "inode_mkdir"),
        ("fs_lsm_inode_mknod", "inode_mknod"),
        ("fs_lsm_inode_symlink", "inode_symlink"),
    ];
    /// `.rodata` global holding an [`super::FsOffsets`].
    pub const GLOBAL_FS_OFFSETS: &str = "AGENTD_FS_OFFSETS";
}

/// Dentries looked at per open: the file itself and up to `FS_MAX_DEPTH - 1` ancestors.
/// Rules on directories further up do not match (documented limit). The walk also stops
/// at the root of the file's mount (`d_parent` of a filesystem root is itself), so a rule
/// on a directory does not cover files of another filesystem mounted below it.
pub const FS_MAX_DEPTH: u32 = 16;
/// Bytes the ancestor walk copies from the start of each `struct dentry` in one read
/// (`d_parent`, `d_inode` and `d_name.name` must lie inside; the loader checks it).
pub const DENTRY_HEAD_BYTES: u32 = 64;
/// Maximum resolved entries over all runs in `FS_RULES`.
pub const MAX_FS_RULES: u32 = 4096;
/// Bytes of the opened file's own name (`d_name`) carried in an [`FsEvent`], NUL included.
pub const FS_NAME_LEN: usize = 64;

/// [`FsRuleValue::kind`]: the inode (or anything below it) must not be opened.
pub const FS_RULE_DENY: u32 = 1;
/// [`FsRuleValue::kind`]: opening the inode (or anything below it) taints the run.
pub const FS_RULE_SECRET: u32 = 2;

/// [`FsRuleValue::kind`] in `EXEC_RULES`: `exec.allow` (or an interpreter it implies):
/// may be executed and mapped executable.
pub const EXEC_RULE_ALLOW: u32 = 3;
/// [`FsRuleValue::kind`] in `EXEC_RULES`: `exec.libraries`: may be mapped executable.
pub const EXEC_RULE_LIBRARY: u32 = 4;
/// [`FsEvent::rule_kind`]: an exec of an inode outside `exec.allow` (no rule matched).
pub const FS_EVENT_EXEC_OUTSIDE: u32 = 5;
/// [`FsEvent::rule_kind`]: a PROT_EXEC mapping of an inode outside `exec.allow` and
/// `exec.libraries` (no rule matched).
pub const FS_EVENT_MMAP_OUTSIDE: u32 = 6;
/// [`FsEvent::rule_kind`]: `mprotect` adding PROT_EXEC to a mapping of an inode outside
/// `exec.allow` and `exec.libraries` (anonymous memory, e.g. a JIT, stays allowed).
pub const FS_EVENT_MPROTECT_OUTSIDE: u32 = 7;
/// x86-64 `mmap(2)`.
pub const NR_MMAP: u64 = 9;
/// x86-64 `mprotect(2)`.
pub const NR_MPROTECT: u64 = 10;
/// x86-64 `pkey_mprotect(2)`.
pub const NR_PKEY_MPROTECT: u64 = 329;
/// VMAs the fallback looks at for one `mprotect(PROT_EXEC)` range (`bpf_find_vma` each).
pub const MPROTECT_MAX_VMAS: u32 = 4;

/// [`FsRuleValue::flags`] bit: the policy is in audit mode; report, never deny or kill.
pub const FS_RULE_FLAG_AUDIT_ONLY: u32 = 1 << 0;

/// [`FsEvent::layer`]: decided by `lsm/file_open`.
pub const FS_LAYER_LSM: u32 = 1;
/// [`FsEvent::layer`]: decided by `tp_btf/sys_exit`.
pub const FS_LAYER_TRACEPOINT: u32 = 2;

/// [`FsEvent::action`]: the open failed with -EACCES (LSM).
pub const FS_ACTION_DENY: u32 = 1;
/// [`FsEvent::action`]: the process was sent SIGKILL (tracepoint).
pub const FS_ACTION_KILL: u32 = 2;
/// [`FsEvent::action`]: the run was tainted; the open went ahead.
pub const FS_ACTION_TAINT: u32 = 3;
/// [`FsEvent::action`]: a deny rule matched in audit mode; nothing was done.
pub const FS_ACTION_WOULD_DENY: u32 = 4;

/// [`FsEvent::op`]: the file was opened (and exec-integrity events, whose `rule_kind`
/// says what happened).
pub const FS_OP_OPEN: u32 = 0;
/// [`FsEvent::op`]: unlink of a denied file (BPF LSM only).
pub const FS_OP_UNLINK: u32 = 1;
/// [`FsEvent::op`]: rmdir of a denied directory.
pub const FS_OP_RMDIR: u32 = 2;
/// [`FsEvent::op`]: rename of a denied file, or into a denied directory.
pub const FS_OP_RENAME: u32 = 3;
/// [`FsEvent::op`]: a hard link to a denied file, or made inside a denied directory.
pub const FS_OP_LINK: u32 = 4;
/// [`FsEvent::op`]: attribute change (truncate, chmod, chown, utimes) of a denied file.
pub const FS_OP_SETATTR: u32 = 5;
/// [`FsEvent::op`]: a new file, directory, device node or symlink inside a denied
/// directory.
pub const FS_OP_CREATE: u32 = 6;

/// [`FsEvent::flags`] bit: the record is about a new entry (being created, linked or
/// renamed into a denied directory): `dev`/`ino` are its directory's, `name` its own.
pub const FS_EVENT_FLAG_NEW_ENTRY: u32 = 1 << 0;

/// [`FsEvent::flags`] bit: [`FsEvent::path`] holds the path `bpf_d_path` resolved.
pub const FS_EVENT_FLAG_KERNEL_PATH: u32 = 1 << 1;
/// Bytes of [`FsEvent::path`], NUL included (`bpf_d_path` fails on longer paths; the
/// record then falls back to the userspace lookup).
pub const FS_PATH_LEN: usize = 256;

/// [`crate::EventHeader::kind`] of an [`FsEvent`].
pub const EVENT_KIND_FS: u32 = 5;

/// x86-64 syscall numbers the fallback looks at (`orig_ax` at `sys_exit`).
pub const NR_OPEN: u64 = 2;
/// `openat(2)`.
pub const NR_OPENAT: u64 = 257;
/// `openat2(2)`.
pub const NR_OPENAT2: u64 = 437;
/// `creat(2)`.
pub const NR_CREAT: u64 = 85;

/// Key of `FS_RULES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FsRuleKey {
    /// Run slot (value of the run's cgroup in `RUN_CGROUPS`).
    pub run_slot: u32,
    /// Kernel-internal device number of the inode's filesystem (`s_dev`).
    pub dev: u32,
    /// Inode number.
    pub ino: u64,
}

/// Value of `FS_RULES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsRuleValue {
    /// [`FS_RULE_DENY`] or [`FS_RULE_SECRET`].
    pub kind: u32,
    /// Index of the entry in its policy list (`fs.deny[i]` / `fs.secret[i]`).
    pub rule_index: u32,
    /// `FS_RULE_FLAG_*` bits.
    pub flags: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
}

/// Value of `RUN_TAINT` (see the module's taint contract).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaintState {
    /// 1 once a secret was opened by any process of the run.
    pub tainted: u32,
    /// `fs.secret` index of the most recent secret opened.
    pub rule_index: u32,
    /// `bpf_ktime_get_ns()` of the first taint.
    pub first_ktime_ns: u64,
}

/// Ring-buffer record of one inode-rule decision.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsEvent {
    /// `kind` is [`EVENT_KIND_FS`].
    pub header: crate::EventHeader,
    /// [`FS_RULE_DENY`] or [`FS_RULE_SECRET`].
    pub rule_kind: u32,
    /// Index in `fs.deny` / `fs.secret`.
    pub rule_index: u32,
    /// `FS_LAYER_*`.
    pub layer: u32,
    /// `FS_ACTION_*`.
    pub action: u32,
    /// Kernel device number of the opened file.
    pub dev: u32,
    /// Dentries walked up from the opened file to the matching one (0: the file itself).
    pub depth: u32,
    /// Inode number of the opened file.
    pub ino: u64,
    /// `FS_OP_*`: what the process tried.
    pub op: u32,
    /// `FS_EVENT_FLAG_*` bits.
    pub flags: u32,
    /// The opened file's own name (`d_name`), NUL-terminated, possibly cut.
    pub name: [u8; FS_NAME_LEN],
    /// With [`FS_EVENT_FLAG_KERNEL_PATH`]: the path the process opened, as `bpf_d_path`
    /// resolved it (BPF LSM `file_open`), NUL-terminated.
    pub path: [u8; FS_PATH_LEN],
}

/// Member offsets the inode-rule programs read, from the running kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsOffsets {
    /// `file.f_path` (a `struct path`).
    pub file_f_path: u32,
    /// `path.dentry`.
    pub path_dentry: u32,
    /// `dentry.d_parent`.
    pub dentry_d_parent: u32,
    /// `dentry.d_inode`.
    pub dentry_d_inode: u32,
    /// `dentry.d_name` + `qstr.name` (a `const unsigned char *`).
    pub dentry_d_name_name: u32,
    /// `inode.i_ino`.
    pub inode_i_ino: u32,
    /// `inode.i_sb`.
    pub inode_i_sb: u32,
    /// `super_block.s_dev`.
    pub sb_s_dev: u32,
    /// `task_struct.files`.
    pub task_files: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.max_fds`.
    pub fdtable_max_fds: u32,
    /// `fdtable.fd` (a `struct file **`).
    pub fdtable_fd: u32,
    /// `pt_regs.orig_ax` (x86-64: the syscall number at `sys_exit`).
    pub regs_orig_ax: u32,
    /// `linux_binprm.file`.
    pub binprm_file: u32,
    /// `pt_regs.dx` (x86-64: third syscall argument, `prot` of mmap).
    pub regs_dx: u32,
    /// `pt_regs.r10` (fourth argument, `flags` of mmap).
    pub regs_r10: u32,
    /// `pt_regs.r8` (fifth argument, `fd` of mmap).
    pub regs_r8: u32,
    /// `vm_area_struct.vm_file`.
    pub vma_vm_file: u32,
    /// `vm_area_struct.vm_end`.
    pub vma_vm_end: u32,
    /// `task_struct.fs` (a `struct fs_struct *`).
    pub task_fs: u32,
    /// `fs_struct.root` (a `struct path`): where the task's `/` is.
    pub fs_root: u32,
    /// `fs_struct.pwd` (a `struct path`): the task's working directory.
    pub fs_pwd: u32,
    /// `path.mnt` (a `struct vfsmount *`).
    pub path_mnt: u32,
    /// `mount.mnt`: where the `struct vfsmount` sits inside its `struct mount`.
    pub mount_mnt: u32,
    /// `mount.mnt_parent` (a `struct mount *`; the mount itself at the top).
    pub mount_mnt_parent: u32,
    /// `mount.mnt_mountpoint` (a `struct dentry *` in the parent mount).
    pub mount_mnt_mountpoint: u32,
    /// `vfsmount.mnt_root` (a `struct dentry *`).
    pub vfsmount_mnt_root: u32,
    /// 1 once the loader filled this struct; the programs do nothing while it is 0.
    pub valid: u32,
}

impl FsOffsets {
    /// All-zero value compiled into the object; keeps the programs inert.
    pub const UNSET: Self = Self {
        file_f_path: 0,
        path_dentry: 0,
        dentry_d_parent: 0,
        dentry_d_inode: 0,
        dentry_d_name_name: 0,
        inode_i_ino: 0,
        inode_i_sb: 0,
        sb_s_dev: 0,
        task_files: 0,
        files_fdt: 0,
        fdtable_max_fds: 0,
        fdtable_fd: 0,
        regs_orig_ax: 0,
        binprm_file: 0,
        regs_dx: 0,
        regs_r10: 0,
        regs_r8: 0,
        vma_vm_file: 0,
        vma_vm_end: 0,
        task_fs: 0,
        fs_root: 0,
        fs_pwd: 0,
        path_mnt: 0,
        mount_mnt: 0,
        mount_mnt_parent: 0,
        mount_mnt_mountpoint: 0,
        vfsmount_mnt_root: 0,
        valid: 0,
    };
}

/// The kernel's internal `dev_t` (`MKDEV`: `major << 20 | minor`) of a device given in
/// the userspace (glibc `makedev`) encoding that `stat()` returns.
pub const fn kernel_dev(user_dev: u64) -> u32 {
    // glibc: major = bits 8..20 and 32..44; minor = bits 0..8 and 20..32.
    let major = ((user_dev >> 8) & 0xfff) | ((user_dev >> 32) & 0xffff_f000);
    let minor = (user_dev & 0xff) | ((user_dev >> 12) & 0xffff_ff00);
    ((major << 20) | (minor & 0xf_ffff)) as u32
}

/// Size of [`FsRuleKey`].
pub const FS_RULE_KEY_SIZE: usize = 16;
/// Size of [`FsRuleValue`].
pub const FS_RULE_VALUE_SIZE: usize = 16;
/// Size of [`TaintState`].
pub const TAINT_STATE_SIZE: usize = 16;
/// Size of [`FsEvent`].
pub const FS_EVENT_SIZE: usize = 72 + FS_NAME_LEN + FS_PATH_LEN;
/// Size of [`FsOffsets`].
pub const FS_OFFSETS_SIZE: usize = 112;

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<FsRuleKey>() == FS_RULE_KEY_SIZE);
    assert!(offset_of!(FsRuleKey, run_slot) == 0);
    assert!(offset_of!(FsRuleKey, dev) == 4);
    assert!(offset_of!(FsRuleKey, ino) == 8);
    assert!(size_of::<FsRuleValue>() == FS_RULE_VALUE_SIZE);
    assert!(offset_of!(FsRuleValue, kind) == 0);
    assert!(offset_of!(FsRuleValue, rule_index) == 4);
    assert!(offset_of!(FsRuleValue, flags) == 8);
    assert!(offset_of!(FsRuleValue, _pad) == 12);
    assert!(size_of::<TaintState>() == TAINT_STATE_SIZE);
    assert!(offset_of!(TaintState, tainted) == 0);
    assert!(offset_of!(TaintState, rule_index) == 4);
    assert!(offset_of!(TaintState, first_ktime_ns) == 8);
    assert!(size_of::<FsEvent>() == FS_EVENT_SIZE);
    assert!(align_of::<FsEvent>() == 8);
    assert!(offset_of!(FsEvent, header) == 0);
    assert!(offset_of!(FsEvent, rule_kind) == 32);
    assert!(offset_of!(FsEvent, rule_index) == 36);
    assert!(offset_of!(FsEvent, layer) == 40);
    assert!(offset_of!(FsEvent, action) == 44);
    assert!(offset_of!(FsEvent, dev) == 48);
    assert!(offset_of!(FsEvent, depth) == 52);
    assert!(offset_of!(FsEvent, ino) == 56);
    assert!(offset_of!(FsEvent, op) == 64);
    assert!(offset_of!(FsEvent, flags) == 68);
    assert!(offset_of!(FsEvent, name) == 72);
    assert!(offset_of!(FsEvent, path) == 72 + FS_NAME_LEN);
    assert!(FS_EVENT_SIZE.is_multiple_of(8));
    assert!(size_of::<FsOffsets>() == FS_OFFSETS_SIZE);
    assert!(align_of::<FsOffsets>() == 4);
    assert!(offset_of!(FsOffsets, regs_r8) == 64);
    assert!(offset_of!(FsOffsets, vma_vm_file) == 68);
    assert!(offset_of!(FsOffsets, vma_vm_end) == 72);
    assert!(offset_of!(FsOffsets, task_fs) == 76);
    assert!(offset_of!(FsOffsets, vfsmount_mnt_root) == 104);
    assert!(offset_of!(FsOffsets, valid) == 108);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, integer fields only, no implicit padding (const asserts above).
    unsafe impl aya::Pod for super::FsRuleKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FsRuleValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TaintState {}
    // SAFETY: as above; integers and a byte array.
    unsafe impl aya::Pod for super::FsEvent {}
    // SAFETY: as above; `u32` fields only.
    unsafe impl aya::Pod for super::FsOffsets {}
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, offset_of, size_of};

    use super::*;

    #[test]
    fn fs_rule_key_and_value_layout() {
        assert_eq!(size_of::<FsRuleKey>(), 16);
        assert_eq!(align_of::<FsRuleKey>(), 8);
        assert_eq!(offset_of!(FsRuleKey, dev), 4);
        assert_eq!(offset_of!(FsRuleKey, ino), 8);
        assert_eq!(size_of::<FsRuleValue>(), 16);
        assert_eq!(offset_of!(FsRuleValue, flags), 8);
    }

    #[test]
    fn taint_state_layout() {
        assert_eq!(size_of::<TaintState>(), 16);
        assert_eq!(offset_of!(TaintState, tainted), 0);
        assert_eq!(offset_of!(TaintState, first_ktime_ns), 8);
    }

    #[test]
    fn fs_event_layout() {
        assert_eq!(size_of::<FsEvent>(), 392);
        assert_eq!(offset_of!(FsEvent, ino), 56);
        assert_eq!(offset_of!(FsEvent, op), 64);
        assert_eq!(offset_of!(FsEvent, name), 72);
        assert_eq!(offset_of!(FsEvent, path), 136);
        assert_eq!(
            offset_of!(FsEvent, path) + FS_PATH_LEN,
            size_of::<FsEvent>()
        );
    }

    #[test]
    fn fs_offsets_layout() {
        assert_eq!(size_of::<FsOffsets>(), 112);
        assert_eq!(offset_of!(FsOffsets, regs_orig_ax), 48);
        assert_eq!(offset_of!(FsOffsets, binprm_file), 52);
        assert_eq!(offset_of!(FsOffsets, regs_dx), 56);
        assert_eq!(offset_of!(FsOffsets, regs_r10), 60);
        assert_eq!(offset_of!(FsOffsets, regs_r8), 64);
        assert_eq!(offset_of!(FsOffsets, vma_vm_file), 68);
        assert_eq!(offset_of!(FsOffsets, vma_vm_end), 72);
        assert_eq!(offset_of!(FsOffsets, task_fs), 76);
        assert_eq!(offset_of!(FsOffsets, fs_root), 80);
        assert_eq!(offset_of!(FsOffsets, fs_pwd), 84);
        assert_eq!(offset_of!(FsOffsets, path_mnt), 88);
        assert_eq!(offset_of!(FsOffsets, mount_mnt), 92);
        assert_eq!(offset_of!(FsOffsets, mount_mnt_parent), 96);
        assert_eq!(offset_of!(FsOffsets, mount_mnt_mountpoint), 100);
        assert_eq!(offset_of!(FsOffsets, vfsmount_mnt_root), 104);
        assert_eq!(offset_of!(FsOffsets, valid), 108);
        assert_eq!(FsOffsets::UNSET.valid, 0);
    }

    #[test]
    fn kernel_dev_encoding() {
        // /dev/vda (254:0) -> stat 0xfe00 -> kernel 254 << 20.
        assert_eq!(kernel_dev(0xfe00), 254 << 20);
        // tmpfs anonymous device 0:45.
        assert_eq!(kernel_dev(45), 45);
        // 8:17 (sdb1).
        assert_eq!(kernel_dev(0x811), (8 << 20) | 17);
        // A minor above 255: 259:300 -> glibc puts minor bits 8.. at 20..
        let user = (259u64 << 8) | (300 & 0xff) | ((300u64 & !0xff) << 12);
        assert_eq!(kernel_dev(user), (259 << 20) | 300);
    }

    #[test]
    fn kinds_and_actions_are_distinct() {
        assert_ne!(FS_RULE_DENY, FS_RULE_SECRET);
        assert_ne!(EVENT_KIND_FS, crate::EVENT_KIND_EXEC);
        assert_ne!(EVENT_KIND_FS, crate::EVENT_KIND_EXIT);
        let actions = [
            FS_ACTION_DENY,
            FS_ACTION_KILL,
            FS_ACTION_TAINT,
            FS_ACTION_WOULD_DENY,
        ];
        for (i, a) in actions.iter().enumerate() {
            assert!(!actions[i + 1..].contains(a));
        }
    }
}
