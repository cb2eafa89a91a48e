//! Exec integrity, userspace half: `exec.allow` (plus the interpreters it implies) and
//! `exec.libraries` resolved to inodes in `EXEC_RULES`, and the programs of the chosen
//! path attached (see `agentd-ebpf/src/exec_integrity.rs`).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use agentd_common::fsrules::{
    kernel_dev, names, FsRuleKey, FsRuleValue, EXEC_RULE_ALLOW, EXEC_RULE_LIBRARY,
    FS_RULE_FLAG_AUDIT_ONLY, MAX_FS_RULES,
};
use agentd_common::syscalls::HOOK_EXEC_MAPS;

use super::fsrules::{FsPath, FsRuleEntry};
use super::{map_error, progs, BpfError, BpfRuntime, RunBpf};

/// ELF sections, for messages.
pub mod section {
    /// LSM exec check.
    pub const BPRM_CHECK: &str = "lsm/bprm_check_security";
    /// LSM mmap check.
    pub const MMAP_FILE: &str = "lsm/mmap_file";
    /// LSM mprotect check.
    pub const FILE_MPROTECT: &str = "lsm/file_mprotect";
    /// Fallback exec check.
    pub const SCHED_PROCESS_EXEC: &str = "tp_btf/sched_process_exec";
}

/// Resolves the executable and library roots that exist to inode entries (directories
/// are matched by the kernel side's ancestor walk, not enumerated).
pub fn resolve(executables: &[PathBuf], libraries: &[PathBuf]) -> Vec<FsRuleEntry> {
    let mut out: Vec<FsRuleEntry> = Vec::new();
    for (kind, paths) in [
        (EXEC_RULE_LIBRARY, libraries),
        (EXEC_RULE_ALLOW, executables),
    ] {
        for (index, path) in paths.iter().enumerate() {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let (dev, ino) = (kernel_dev(meta.dev()), meta.ino());
            let value = FsRuleValue {
                kind,
                rule_index: index as u32,
                flags: 0,
                _pad: 0,
            };
            // An executable that is also a library root stays executable.
            match out.iter_mut().find(|e| e.dev == dev && e.ino == ino) {
                Some(existing) => existing.value = value,
                None => out.push(FsRuleEntry { dev, ino, value }),
            }
        }
    }
    out
}

/// The path a process has open on (dev, ino), from `/proc/PID/fd` (for audit records;
/// `None` once the process is gone).
pub fn locate_in_proc(tgid: u32, dev: u32, ino: u64) -> Option<PathBuf> {
    let dir = PathBuf::from(format!("/proc/{tgid}/fd"));
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if meta.ino() == ino && kernel_dev(meta.dev()) == dev {
            return std::fs::read_link(entry.path()).ok();
        }
    }
    None
}

impl BpfRuntime {
    /// Writes `run`'s exec entries and config, then attaches the programs of `path`.
    pub fn enable_exec_integrity(
        &mut self,
        run: &mut RunBpf,
        path: FsPath,
        entries: &[FsRuleEntry],
        audit_only: bool,
    ) -> Result<(), BpfError> {
        if let Err(e) = &self.fs_offsets {
            return Err(BpfError::Btf(super::BtfError::Malformed(format!(
                "offsets for exec integrity: {e}"
            ))));
        }
        if entries.len() + 1 > MAX_FS_RULES as usize {
            return Err(BpfError::Btf(super::BtfError::Malformed(format!(
                "{} exec entries exceed {MAX_FS_RULES}",
                entries.len()
            ))));
        }
        let run_slot = run.slot();
        let config = FsRuleValue {
            kind: 0,
            rule_index: 0,
            flags: if audit_only {
                FS_RULE_FLAG_AUDIT_ONLY
            } else {
                0
            },
            _pad: 0,
        };
        let config_key = FsRuleKey {
            run_slot,
            dev: 0,
            ino: 0,
        };
        let all = entries
            .iter()
            .map(|e| {
                (
                    FsRuleKey {
                        run_slot,
                        dev: e.dev,
                        ino: e.ino,
                    },
                    e.value,
                )
            })
            .chain(std::iter::once((config_key, config)));
        for (key, value) in all {
            self.maps
                .exec_rules
                .insert(key, value, 0)
                .map_err(|error| {
                    map_error(
                        format!("insert inode {}:{} into", key.dev, key.ino),
                        names::MAP_EXEC_RULES,
                        error,
                    )
                })?;
        }
        match path {
            FsPath::Lsm => {
                for p in progs::LSM_EXEC {
                    self.acquire_global(run, &p)?;
                }
            }
            FsPath::Tracepoint => {
                self.acquire_global(run, &progs::TP_EXEC_CHECK)?;
                self.enable_syscall_hooks(
                    run,
                    HOOK_EXEC_MAPS,
                    "the PROT_EXEC mmap/mprotect check",
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn executables_win_over_library_roots_and_missing_paths_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_path_buf();
        let entries = resolve(
            std::slice::from_ref(&p),
            &[p.clone(), PathBuf::from("/nonexistent/lib")],
        );
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].value.kind, EXEC_RULE_ALLOW);
        assert_eq!(entries[0].ino, std::fs::metadata(&p).unwrap().ino());
    }
}
