//! The one bounded dentry-ancestor walk behind every inode rule (`fs.deny`, `fs.secret`,
//! `exec.allow`, `exec.libraries`): from a dentry up its `d_parent` chain, looking each
//! (run slot, device, inode) up in a rule map.
//!
//! Cost matters: on the fallback path this runs in `tp_btf/sys_exit` for every open of a
//! watched run. Each level is two fault-tolerant reads: the first
//! [`DENTRY_HEAD_BYTES`] of the dentry (`d_parent`, `d_inode`, `d_name`) in one copy,
//! then `d_inode->i_ino`. The device is read once: `d_parent` never leaves the
//! superblock (a filesystem root is its own parent), so every level shares the opened
//! file's `i_sb->s_dev`.

use agentd_common::fsrules::{FsOffsets, FsRuleKey, DENTRY_HEAD_BYTES, FS_MAX_DEPTH};
use aya_ebpf::maps::HashMap;

use crate::kernel::read_at;

const HEAD_WORDS: usize = (DENTRY_HEAD_BYTES / 8) as usize;

/// The first [`DENTRY_HEAD_BYTES`] of a dentry.
#[derive(Clone, Copy)]
pub(crate) struct DentryHead([u64; HEAD_WORDS]);

impl DentryHead {
    /// Reads the head of `dentry`; `None` if the read faults.
    #[inline(always)]
    pub(crate) fn read(dentry: *const u8) -> Option<Self> {
        // SAFETY: `dentry` is a kernel `struct dentry *` of at least DENTRY_HEAD_BYTES
        // bytes (the loader checks the struct size); the read is fault tolerant.
        unsafe { read_at::<[u64; HEAD_WORDS]>(dentry, 0) }
            .ok()
            .map(Self)
    }

    /// The pointer-sized member at `offset` (8-aligned, inside the head: the loader
    /// checks both; the mask only keeps the index provably in bounds).
    #[inline(always)]
    pub(crate) fn ptr(&self, offset: u32) -> *const u8 {
        self.0[((offset / 8) as usize) & (HEAD_WORDS - 1)] as *const u8
    }
}

/// The opened file's identity, as the walk read it.
#[derive(Clone, Copy)]
pub(crate) struct Walked {
    /// Kernel device number (`i_sb->s_dev`).
    pub(crate) dev: u32,
    /// Inode number.
    pub(crate) ino: u64,
}

/// Walks `dentry` and up to `FS_MAX_DEPTH - 1` ancestors, calling `visit(value, depth)`
/// for each level whose (run_slot, dev, ino) is in `map` (depth 0 is the file itself);
/// stops early once `visit` returns `true`. Returns the file's (dev, ino), or `None` when
/// the dentry is negative or unreadable (then nothing was visited).
#[inline(always)]
pub(crate) fn walk_ancestors<V: Copy>(
    offs: &FsOffsets,
    dentry: *const u8,
    run_slot: u32,
    map: &HashMap<FsRuleKey, V>,
    mut visit: impl FnMut(V, u32) -> bool,
) -> Option<Walked> {
    let mut head = DentryHead::read(dentry)?;
    let inode = head.ptr(offs.dentry_d_inode);
    if inode.is_null() {
        return None;
    }
    // SAFETY: `inode` is the dentry's `struct inode *`; offsets from BTF; fault-tolerant.
    let (ino, dev) = unsafe {
        let ino = read_at::<u64>(inode, offs.inode_i_ino).ok()?;
        let sb = read_at::<*const u8>(inode, offs.inode_i_sb).ok()?;
        (ino, read_at::<u32>(sb, offs.sb_s_dev).ok()?)
    };
    let file = Walked { dev, ino };
    let mut current = dentry;
    let mut current_ino = ino;
    let mut depth = 0u32;
    while depth < FS_MAX_DEPTH {
        let key = FsRuleKey {
            run_slot,
            dev,
            ino: current_ino,
        };
        // SAFETY: the value is copied out at once.
        if let Some(value) = unsafe { map.get(key) }.copied() {
            if visit(value, depth) {
                break;
            }
        }
        let parent = head.ptr(offs.dentry_d_parent);
        if parent.is_null() || parent == current {
            break;
        }
        let Some(parent_head) = DentryHead::read(parent) else {
            break;
        };
        let parent_inode = parent_head.ptr(offs.dentry_d_inode);
        if parent_inode.is_null() {
            break;
        }
        // SAFETY: as above, the parent's inode.
        let Ok(parent_ino) = (unsafe { read_at::<u64>(parent_inode, offs.inode_i_ino) }) else {
            break;
        };
        current = parent;
        head = parent_head;
        current_ino = parent_ino;
        depth += 1;
    }
    Some(file)
}

/// (device, inode) of `dentry`, each read through its own inode and superblock: for walks
/// that cross mount points (the unix-socket backstop), where the device changes.
#[inline(always)]
pub(crate) fn dentry_id(offs: &FsOffsets, dentry: *const u8) -> Option<(u32, u64)> {
    // SAFETY: fault-tolerant reads through BTF offsets.
    unsafe {
        let inode = read_at::<*const u8>(dentry, offs.dentry_d_inode).ok()?;
        if inode.is_null() {
            return None;
        }
        let ino = read_at::<u64>(inode, offs.inode_i_ino).ok()?;
        let sb = read_at::<*const u8>(inode, offs.inode_i_sb).ok()?;
        let dev = read_at::<u32>(sb, offs.sb_s_dev).ok()?;
        Some((dev, ino))
    }
}
