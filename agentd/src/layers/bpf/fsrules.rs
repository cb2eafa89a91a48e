//! Inode rules (`fs.deny`, `fs.secret`) and the run's taint flag: userspace half.
//!
//! At run start every entry is resolved to (kernel device, inode) pairs: the entry itself
//! and, for a directory, every file and directory below it (so a hardlink made elsewhere
//! to a file inside a denied tree still matches by inode). The pairs go into `FS_RULES`
//! for the run's slot; then `lsm/file_open` is loaded and attached, or (fallback) the open
//! check of the `tp_btf/sys_exit` program is turned on. See `agentd_common::fsrules` for
//! the kernel side and the taint contract the network programs rely on.

use std::collections::HashMap as StdHashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use agentd_common::budget::PT_REGS_ORIG_AX_OFFSET;
use agentd_common::fsrules::{
    kernel_dev, names, FsOffsets, FsRuleKey, FsRuleValue, TaintState, DENTRY_HEAD_BYTES,
    FS_RULE_DENY, FS_RULE_FLAG_AUDIT_ONLY, FS_RULE_SECRET, MAX_FS_RULES,
};
use agentd_common::syscalls::HOOK_FS_OPEN;

use super::btf::{BtfError, KernelBtf};
use super::{map_error, progs, BpfError, BpfRuntime, RunBpf};
use crate::policy::{FsPolicy, PathRule};

/// ELF sections of the two programs, for messages.
pub mod section {
    /// The BPF LSM program.
    pub const LSM_FILE_OPEN: &str = "lsm/file_open";
    /// The path-operation LSM programs (unlink, rename, link, setattr, create, ...).
    pub const LSM_FS_OPS: &str = "lsm/inode_* (fs.deny path operations)";
    /// The tainted-run packet dropper.
    pub const TAINT_EGRESS: &str = "cgroup_skb/egress";
}

/// Files and directories enumerated below one directory entry at most.
const MAX_ENTRIES_PER_RULE: usize = 1024;

/// Which kernel mechanism enforces the inode rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsPath {
    /// BPF LSM: `lsm/file_open` denies with EACCES.
    Lsm,
    /// `tp_btf/sys_exit` (the shared program's open check): a successful open of a denied
    /// file gets SIGKILL.
    Tracepoint,
}

impl FsPath {
    /// Layer name in audit records, the Plan and doctor output.
    pub fn layer(self) -> &'static str {
        match self {
            FsPath::Lsm => crate::layers::name::LSM,
            FsPath::Tracepoint => crate::layers::name::TRACEPOINT,
        }
    }
}

/// One resolved (device, inode) entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsRuleEntry {
    /// Kernel device number.
    pub dev: u32,
    /// Inode number.
    pub ino: u64,
    /// What the kernel side does on a match.
    pub value: FsRuleValue,
}

/// Errors resolving rule entries.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// An entry could not be inspected.
    #[error("{}: {error}", .path.display())]
    Stat {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// More entries than `FS_RULES` holds.
    #[error("fs.deny and fs.secret resolve to more than {limit} files and directories (at {})", .path.display())]
    TooMany {
        /// Capacity.
        limit: usize,
        /// Where the limit was reached.
        path: PathBuf,
    },
}

/// Resolves `fs.deny` and `fs.secret` to inode entries. A file in both lists is denied.
pub fn resolve(fs: &FsPolicy, audit_only: bool) -> Result<Vec<FsRuleEntry>, ResolveError> {
    let flags = if audit_only {
        FS_RULE_FLAG_AUDIT_ONLY
    } else {
        0
    };
    let mut out: StdHashMap<(u32, u64), FsRuleValue> = StdHashMap::new();
    // Secrets first, so deny entries overwrite them.
    for (kind, rules) in [(FS_RULE_SECRET, &fs.secret), (FS_RULE_DENY, &fs.deny)] {
        for (index, rule) in rules.iter().enumerate() {
            if !rule.exists {
                continue;
            }
            let value = FsRuleValue {
                kind,
                rule_index: index as u32,
                flags,
                _pad: 0,
            };
            let mut seen = 0usize;
            collect(&rule.path, &mut seen, &mut |dev, ino| {
                out.insert((dev, ino), value);
            })?;
            if out.len() > MAX_FS_RULES as usize {
                return Err(ResolveError::TooMany {
                    limit: MAX_FS_RULES as usize,
                    path: rule.path.clone(),
                });
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|((dev, ino), value)| FsRuleEntry { dev, ino, value })
        .collect())
}

/// Calls `add` for `path` and, if it is a directory, everything below it (symlinks are
/// not followed: what they point to is matched when it is opened).
fn collect(
    path: &Path,
    seen: &mut usize,
    add: &mut dyn FnMut(u32, u64),
) -> Result<(), ResolveError> {
    let meta = std::fs::symlink_metadata(path).map_err(|error| ResolveError::Stat {
        path: path.to_path_buf(),
        error,
    })?;
    *seen += 1;
    if *seen > MAX_ENTRIES_PER_RULE {
        return Err(ResolveError::TooMany {
            limit: MAX_ENTRIES_PER_RULE,
            path: path.to_path_buf(),
        });
    }
    add(kernel_dev(meta.dev()), meta.ino());
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|error| ResolveError::Stat {
            path: path.to_path_buf(),
            error,
        })?;
        for entry in entries {
            let entry = entry.map_err(|error| ResolveError::Stat {
                path: path.to_path_buf(),
                error,
            })?;
            collect(&entry.path(), seen, add)?;
        }
    }
    Ok(())
}

/// The path of the opened file for the audit record (a userspace lookup by inode): the
/// rule's own path when that is the inode, else a bounded search below it, at exactly
/// `depth` levels when the match was an ancestor, at any depth when the file's own inode
/// was the enumerated entry (`depth == 0`, e.g. a hardlink elsewhere).
pub fn locate(rule: &PathRule, depth: u32, dev: u32, ino: u64) -> Option<PathBuf> {
    if let Ok(meta) = std::fs::symlink_metadata(&rule.path) {
        if meta.ino() == ino && kernel_dev(meta.dev()) == dev {
            return Some(rule.path.clone());
        }
    }
    let mut budget = MAX_ENTRIES_PER_RULE * 4;
    let levels = if depth == 0 { None } else { Some(depth) };
    find_below(&rule.path, levels, dev, ino, &mut budget)
}

/// Searches `dir` for (dev, ino): at exactly `levels` levels down, or at any level.
fn find_below(
    dir: &Path,
    levels: Option<u32>,
    dev: u32,
    ino: u64,
    budget: &mut usize,
) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        *budget = budget.checked_sub(1)?;
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let here = levels.is_none_or(|l| l == 1);
        if here && meta.ino() == ino && kernel_dev(meta.dev()) == dev {
            return Some(path);
        }
        let deeper = levels.is_none_or(|l| l > 1);
        if deeper && meta.is_dir() {
            if let Some(found) = find_below(&path, levels.map(|l| l - 1), dev, ino, budget) {
                return Some(found);
            }
        }
    }
    None
}

/// Offsets the inode-rule programs read, checked for size.
pub fn fs_offsets(btf: &KernelBtf<'_>) -> Result<FsOffsets, BtfError> {
    const PTR: u32 = 8;
    let field =
        |strukt: &str, member: &str, size: Option<u32>| btf.member_offset(strukt, member, size);
    // The ancestor walk copies the first DENTRY_HEAD_BYTES of each dentry at once and
    // picks these three pointers out of that copy (agentd-ebpf/src/inode_walk.rs).
    let in_head = |member: &str, offset: u32| -> Result<u32, BtfError> {
        if !offset.is_multiple_of(PTR) || offset + PTR > DENTRY_HEAD_BYTES {
            return Err(BtfError::UnexpectedMember {
                strukt: "dentry".to_owned(),
                member: member.to_owned(),
                problem: format!(
                    "sits at offset {offset}, not an aligned pointer in the first \
                     {DENTRY_HEAD_BYTES} bytes"
                ),
            });
        }
        Ok(offset)
    };
    Ok(FsOffsets {
        file_f_path: field("file", "f_path", Some(16))?,
        path_dentry: field("path", "dentry", Some(PTR))?,
        dentry_d_parent: in_head("d_parent", field("dentry", "d_parent", Some(PTR))?)?,
        dentry_d_inode: in_head("d_inode", field("dentry", "d_inode", Some(PTR))?)?,
        dentry_d_name_name: in_head(
            "d_name.name",
            field("dentry", "d_name", None)? + field("qstr", "name", Some(PTR))?,
        )?,
        inode_i_ino: field("inode", "i_ino", Some(8))?,
        inode_i_sb: field("inode", "i_sb", Some(PTR))?,
        sb_s_dev: field("super_block", "s_dev", Some(4))?,
        task_files: field("task_struct", "files", Some(PTR))?,
        files_fdt: field("files_struct", "fdt", Some(PTR))?,
        fdtable_max_fds: field("fdtable", "max_fds", Some(4))?,
        fdtable_fd: field("fdtable", "fd", Some(PTR))?,
        // tp_btf/sys_exit loads orig_ax at this compile-time offset (a direct BTF load).
        regs_orig_ax: match field("pt_regs", "orig_ax", Some(8))? {
            PT_REGS_ORIG_AX_OFFSET => PT_REGS_ORIG_AX_OFFSET,
            other => {
                return Err(BtfError::UnexpectedMember {
                    strukt: "pt_regs".to_owned(),
                    member: "orig_ax".to_owned(),
                    problem: format!("sits at offset {other}, expected {PT_REGS_ORIG_AX_OFFSET}"),
                })
            }
        },
        binprm_file: field("linux_binprm", "file", Some(PTR))?,
        regs_dx: field("pt_regs", "dx", Some(8))?,
        regs_r10: field("pt_regs", "r10", Some(8))?,
        regs_r8: field("pt_regs", "r8", Some(8))?,
        vma_vm_file: field("vm_area_struct", "vm_file", Some(PTR))?,
        vma_vm_end: field("vm_area_struct", "vm_end", None)?,
        // The walk to a relative path's base directory (agentd-ebpf/src/base_dir.rs).
        task_fs: field("task_struct", "fs", Some(PTR))?,
        fs_root: field("fs_struct", "root", Some(16))?,
        fs_pwd: field("fs_struct", "pwd", Some(16))?,
        path_mnt: field("path", "mnt", Some(PTR))?,
        mount_mnt: field("mount", "mnt", None)?,
        mount_mnt_parent: field("mount", "mnt_parent", Some(PTR))?,
        mount_mnt_mountpoint: field("mount", "mnt_mountpoint", Some(PTR))?,
        vfsmount_mnt_root: field("vfsmount", "mnt_root", Some(PTR))?,
        valid: 1,
    })
}

/// Where `agentd-ebpf/src/fs_ops.rs` reads a `struct dentry *` in each path-operation
/// hook, and how many arguments the hook has (the earlier LSM's verdict comes after
/// them): (hook, argument count, dentry positions).
const FS_OPS_PROTOTYPES: [(&str, usize, &[usize]); 9] = [
    ("inode_unlink", 2, &[1]),
    ("inode_rmdir", 2, &[1]),
    ("inode_rename", 4, &[1, 3]),
    ("inode_link", 3, &[0, 2]),
    ("inode_setattr", 3, &[1]),
    ("inode_create", 3, &[1]),
    ("inode_mkdir", 3, &[1]),
    ("inode_mknod", 4, &[1]),
    ("inode_symlink", 3, &[1]),
];

/// Checks the BPF LSM path-operation hooks against [`FS_OPS_PROTOTYPES`], so a kernel
/// whose hooks take other arguments is refused by name instead of misread.
pub fn fs_ops_prototypes(btf: &KernelBtf<'_>) -> Result<(), String> {
    for (hook, count, dentries) in FS_OPS_PROTOTYPES {
        let func = format!("bpf_lsm_{hook}");
        let args = btf
            .func_args(&func)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("kernel BTF has no {func} (BPF LSM hook {hook})"))?;
        let ok = args.len() == count
            && dentries
                .iter()
                .all(|&i| args.get(i).map(String::as_str) == Some("struct dentry *"));
        if !ok {
            return Err(format!(
                "LSM hook {hook} takes ({}); agentd reads a struct dentry * at argument(s) {dentries:?} of {count}",
                args.join(", ")
            ));
        }
    }
    Ok(())
}

impl BpfRuntime {
    /// Writes `entries` for `run`, then attaches the programs of `path` (BPF LSM hooks,
    /// or the open check of the `sys_exit` program).
    pub fn enable_fs_rules(
        &mut self,
        run: &mut RunBpf,
        path: FsPath,
        entries: &[FsRuleEntry],
    ) -> Result<(), BpfError> {
        if let Err(e) = &self.fs_offsets {
            return Err(BpfError::Btf(BtfError::Malformed(format!(
                "offsets for the inode rules: {e}"
            ))));
        }
        let run_slot = run.slot();
        for entry in entries {
            let key = FsRuleKey {
                run_slot,
                dev: entry.dev,
                ino: entry.ino,
            };
            self.maps
                .fs_rules
                .insert(key, entry.value, 0)
                .map_err(|error| {
                    map_error(
                        format!("insert inode {}:{} into", entry.dev, entry.ino),
                        names::MAP_FS_RULES,
                        error,
                    )
                })?;
        }
        match path {
            FsPath::Lsm => {
                super::fs_ops_prototypes().map_err(|e| BpfError::Btf(BtfError::Malformed(e)))?;
                for p in progs::lsm_fs_rules() {
                    self.acquire_global(run, &p)?;
                }
            }
            FsPath::Tracepoint => {
                self.enable_syscall_hooks(run, HOOK_FS_OPEN, "the inode-rule open check")?;
            }
        }
        Ok(())
    }

    /// Attaches `cgroup_skb/egress` to `run`'s v2 cgroup directory: once the run is
    /// tainted, its packets are dropped.
    pub fn enable_taint_egress(
        &mut self,
        run: &mut RunBpf,
        cgroup_dir: &Path,
    ) -> Result<(), BpfError> {
        let cgroup = std::fs::File::open(cgroup_dir).map_err(|error| BpfError::Cgroup {
            path: cgroup_dir.to_path_buf(),
            error,
        })?;
        self.attach_to_run(run, &progs::TAINT_EGRESS, cgroup_dir, &cgroup)
    }

    /// Packets of the run dropped because it was tainted.
    pub fn taint_egress_drops(&self, cgroup_id: u64) -> u64 {
        self.maps.taint_egress_drops.get(&cgroup_id, 0).unwrap_or(0)
    }

    /// Whether the run's cgroup is tainted, and by which `fs.secret` index.
    pub fn taint(&self, cgroup_id: u64) -> Option<TaintState> {
        self.maps
            .run_taint
            .get(&cgroup_id, 0)
            .ok()
            .filter(|t| t.tainted != 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use crate::layers::test_support::path_rule as rule;

    #[test]
    fn deny_wins_over_secret_and_directories_are_enumerated() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f"), "x").unwrap();
        let fs = FsPolicy {
            deny: vec![rule(&d)],
            secret: vec![rule(&d.join("f"))],
            ..FsPolicy::default()
        };
        let entries = resolve(&fs, false).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.value.kind == FS_RULE_DENY));
        let f = std::fs::metadata(d.join("f")).unwrap();
        let found = entries.iter().find(|e| e.ino == f.ino()).unwrap();
        assert_eq!(found.dev, kernel_dev(f.dev()));
        assert_eq!(
            locate(&rule(&d), 1, found.dev, found.ino),
            Some(d.join("f"))
        );
        assert_eq!(
            locate(&rule(&d), 0, found.dev, found.ino),
            Some(d.join("f"))
        );
    }

    #[test]
    fn audit_mode_marks_entries() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsPolicy {
            secret: vec![rule(dir.path())],
            ..FsPolicy::default()
        };
        let entries = resolve(&fs, true).unwrap();
        assert_eq!(entries[0].value.flags, FS_RULE_FLAG_AUDIT_ONLY);
        assert_eq!(entries[0].value.kind, FS_RULE_SECRET);
    }

    #[test]
    fn offsets_from_the_running_kernel() {
        let raw = super::super::btf::read_vmlinux().unwrap();
        let btf = KernelBtf::parse(&raw).unwrap();
        let offs = fs_offsets(&btf).unwrap();
        assert_eq!(offs.valid, 1);
        assert_eq!(offs.path_dentry, 8);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod decode_tests {
    use agentd_common::{
        fsrules::{FsEvent, EVENT_KIND_FS, FS_ACTION_KILL, FS_LAYER_TRACEPOINT, FS_NAME_LEN},
        EventHeader,
    };

    use crate::events::Event;

    #[test]
    fn an_fs_record_decodes_field_by_field() {
        let mut name = [0u8; FS_NAME_LEN];
        name[..2].copy_from_slice(b"id");
        let ev = FsEvent {
            header: EventHeader {
                kind: EVENT_KIND_FS,
                run_slot: 0,
                tgid: 10,
                pid: 11,
                cgroup_id: 12,
                ktime_ns: 13,
            },
            rule_kind: agentd_common::fsrules::FS_RULE_DENY,
            rule_index: 2,
            layer: FS_LAYER_TRACEPOINT,
            action: FS_ACTION_KILL,
            dev: 254 << 20,
            depth: 1,
            ino: 99,
            op: agentd_common::fsrules::FS_OP_RENAME,
            flags: agentd_common::fsrules::FS_EVENT_FLAG_NEW_ENTRY,
            name,
            path: [0; agentd_common::fsrules::FS_PATH_LEN],
        };
        // SAFETY: FsEvent is repr(C) with no implicit padding (const asserts in
        // agentd-common); viewing it as bytes for its size is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const FsEvent).cast::<u8>(),
                std::mem::size_of::<FsEvent>(),
            )
        };
        let Event::Fs {
            tgid,
            pid,
            rule_index,
            action,
            dev,
            ino,
            depth,
            op,
            flags,
            name,
            ..
        } = Event::from_record(bytes).unwrap()
        else {
            panic!("not an fs event");
        };
        assert_eq!((tgid, pid, rule_index, action), (10, 11, 2, FS_ACTION_KILL));
        assert_eq!((dev, ino, depth), (254 << 20, 99, 1));
        assert_eq!(
            (op, flags),
            (
                agentd_common::fsrules::FS_OP_RENAME,
                agentd_common::fsrules::FS_EVENT_FLAG_NEW_ENTRY
            )
        );
        assert_eq!(name, "id");
        assert!(Event::from_record(&bytes[..100]).is_err(), "short record");
    }
}
