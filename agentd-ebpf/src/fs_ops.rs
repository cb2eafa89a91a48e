//! `fs.deny` beyond `open`, on the BPF LSM path only: removing, renaming, linking,
//! changing the attributes of (truncate, chmod, chown, utimes) a denied file or directory,
//! and creating anything inside a denied directory, fail with -EACCES. Each hook hands
//! over dentries; the decision is the same bounded ancestor walk as `lsm/file_open`
//! (`inode_walk`), over the same `FS_RULES`. Only deny rules apply: `fs.secret` files
//! stay as writable as `fs.write` makes them (reading one is what taints).
//!
//! The `inode_*` hooks exist on every kernel with BPF LSM (unlike the `path_*` ones,
//! which need `CONFIG_SECURITY_PATH`). The tracepoint fallback has no equivalent: a path
//! operation opens no file, so these are documented residuals there.

use agentd_common::fsrules::{
    FsRuleValue, FS_ACTION_DENY, FS_ACTION_WOULD_DENY, FS_EVENT_FLAG_NEW_ENTRY, FS_LAYER_LSM,
    FS_OP_CREATE, FS_OP_LINK, FS_OP_RENAME, FS_OP_RMDIR, FS_OP_SETATTR, FS_OP_UNLINK, FS_RULE_DENY,
    FS_RULE_FLAG_AUDIT_ONLY,
};
use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::{
    fsrules::{emit, Found, AGENTD_FS_OFFSETS, EACCES, FS_RULES},
    inode_walk::walk_ancestors,
    kernel::read_at,
    maps::watched_cgroup,
};

/// What a hook asks about a dentry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The dentry itself (an existing file or directory) and its ancestors.
    Existing,
    /// A new entry: its parent directory and the parent's ancestors.
    NewIn,
}

/// -EACCES if `dentry` (or, for [`Target::NewIn`], its parent) is inside an `fs.deny`
/// tree of the current task's run; records the decision with operation `op`.
#[inline(always)]
fn judge(dentry: *const u8, target: Target, op: u32) -> i32 {
    let offs = AGENTD_FS_OFFSETS.load();
    if offs.valid == 0 || dentry.is_null() {
        return 0;
    }
    let Some((cgroup_id, run_slot)) = watched_cgroup() else {
        return 0;
    };
    let start = match target {
        Target::Existing => dentry,
        // SAFETY: `dentry` is the hook's `struct dentry *`; BTF offset, fault tolerant.
        Target::NewIn => match unsafe { read_at::<*const u8>(dentry, offs.dentry_d_parent) } {
            Ok(parent) if !parent.is_null() => parent,
            _ => return 0,
        },
    };
    let mut deny: Option<Found> = None;
    let Some(walked) = walk_ancestors(
        &offs,
        start,
        run_slot,
        &FS_RULES,
        |value: FsRuleValue, depth| {
            if value.kind == FS_RULE_DENY {
                deny = Some(Found { value, depth });
                return true;
            }
            false
        },
    ) else {
        return 0;
    };
    let Some(found) = deny else {
        return 0;
    };
    let audit_only = found.value.flags & FS_RULE_FLAG_AUDIT_ONLY != 0;
    let action = if audit_only {
        FS_ACTION_WOULD_DENY
    } else {
        FS_ACTION_DENY
    };
    // The record names the entry the process touched (a new one: its own name).
    emit(
        &offs,
        dentry,
        cgroup_id,
        run_slot,
        FS_LAYER_LSM,
        action,
        found,
        walked.dev,
        walked.ino,
        op,
        if target == Target::NewIn {
            FS_EVENT_FLAG_NEW_ENTRY
        } else {
            0
        },
    );
    if audit_only {
        0
    } else {
        -EACCES
    }
}

/// The verdict of an earlier LSM in the chain (argument `n`), or ours.
#[inline(always)]
fn chain(ctx: &LsmContext, previous_arg: usize, ours: impl FnOnce() -> i32) -> i32 {
    let previous: i32 = ctx.arg(previous_arg);
    if previous != 0 {
        previous
    } else {
        ours()
    }
}

/// `inode_unlink(struct inode *dir, struct dentry *dentry)`.
#[lsm(hook = "inode_unlink")]
pub fn fs_lsm_inode_unlink(ctx: LsmContext) -> i32 {
    chain(&ctx, 2, || {
        judge(ctx.arg(1), Target::Existing, FS_OP_UNLINK)
    })
}

/// `inode_rmdir(struct inode *dir, struct dentry *dentry)`.
#[lsm(hook = "inode_rmdir")]
pub fn fs_lsm_inode_rmdir(ctx: LsmContext) -> i32 {
    chain(&ctx, 2, || judge(ctx.arg(1), Target::Existing, FS_OP_RMDIR))
}

/// `inode_rename(struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
/// struct dentry *new_dentry)`: the entry moved must not be (or be inside) a denied
/// tree, and it must not land in one. `RENAME_EXCHANGE` calls the hook both ways.
#[lsm(hook = "inode_rename")]
pub fn fs_lsm_inode_rename(ctx: LsmContext) -> i32 {
    chain(&ctx, 4, || {
        let moved = judge(ctx.arg(1), Target::Existing, FS_OP_RENAME);
        if moved != 0 {
            return moved;
        }
        judge(ctx.arg(3), Target::NewIn, FS_OP_RENAME)
    })
}

/// `inode_link(struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry)`:
/// no new name for a denied file, and no new entry inside a denied directory.
#[lsm(hook = "inode_link")]
pub fn fs_lsm_inode_link(ctx: LsmContext) -> i32 {
    chain(&ctx, 3, || {
        let linked = judge(ctx.arg(0), Target::Existing, FS_OP_LINK);
        if linked != 0 {
            return linked;
        }
        judge(ctx.arg(2), Target::NewIn, FS_OP_LINK)
    })
}

/// `inode_setattr(struct mnt_idmap *idmap, struct dentry *dentry, struct iattr *attr)`:
/// truncate (by path and `ftruncate`), chmod, chown, utimes. The loader checks this
/// prototype in the kernel's BTF.
#[lsm(hook = "inode_setattr")]
pub fn fs_lsm_inode_setattr(ctx: LsmContext) -> i32 {
    chain(&ctx, 3, || {
        judge(ctx.arg(1), Target::Existing, FS_OP_SETATTR)
    })
}

/// `inode_create(struct inode *dir, struct dentry *dentry, umode_t mode)`.
#[lsm(hook = "inode_create")]
pub fn fs_lsm_inode_create(ctx: LsmContext) -> i32 {
    chain(&ctx, 3, || judge(ctx.arg(1), Target::NewIn, FS_OP_CREATE))
}

/// `inode_mkdir(struct inode *dir, struct dentry *dentry, umode_t mode)`.
#[lsm(hook = "inode_mkdir")]
pub fn fs_lsm_inode_mkdir(ctx: LsmContext) -> i32 {
    chain(&ctx, 3, || judge(ctx.arg(1), Target::NewIn, FS_OP_CREATE))
}

/// `inode_mknod(struct inode *dir, struct dentry *dentry, umode_t mode, dev_t dev)`.
#[lsm(hook = "inode_mknod")]
pub fn fs_lsm_inode_mknod(ctx: LsmContext) -> i32 {
    chain(&ctx, 4, || judge(ctx.arg(1), Target::NewIn, FS_OP_CREATE))
}

/// `inode_symlink(struct inode *dir, struct dentry *dentry, const char *old_name)`.
#[lsm(hook = "inode_symlink")]
pub fn fs_lsm_inode_symlink(ctx: LsmContext) -> i32 {
    chain(&ctx, 3, || judge(ctx.arg(1), Target::NewIn, FS_OP_CREATE))
}
