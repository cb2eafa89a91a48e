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
use aya::{
    maps::{HashMap, MapData},
    programs::{BtfTracePoint, Lsm},
};

use super::fsrules::{FsPath, FsRuleEntry};
use super::{map_error, program, take_map, BpfError, BpfRuntime};

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
    /// Writes the run's exec entries and config, then loads and attaches the programs of
    /// `path`.
    pub fn enable_exec_integrity(
        &mut self,
        path: FsPath,
        run_slot: u32,
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
        let mut rules: HashMap<MapData, FsRuleKey, FsRuleValue> =
            HashMap::try_from(take_map(&mut self.ebpf, names::MAP_EXEC_RULES)?)
                .map_err(|error| map_error("open", names::MAP_EXEC_RULES, error))?;
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
            rules.insert(key, value, 0).map_err(|error| {
                map_error(
                    format!("insert inode {}:{} into", key.dev, key.ino),
                    names::MAP_EXEC_RULES,
                    error,
                )
            })?;
        }
        self.exec_rules = Some(rules);
        match path {
            FsPath::Lsm => {
                for (name, section, hook) in [
                    (
                        names::PROG_LSM_BPRM_CHECK,
                        section::BPRM_CHECK,
                        names::LSM_HOOK_BPRM_CHECK,
                    ),
                    (
                        names::PROG_LSM_MMAP_FILE,
                        section::MMAP_FILE,
                        names::LSM_HOOK_MMAP_FILE,
                    ),
                    (
                        names::PROG_LSM_FILE_MPROTECT,
                        section::FILE_MPROTECT,
                        names::LSM_HOOK_FILE_MPROTECT,
                    ),
                ] {
                    let prog: &mut Lsm = program(&mut self.ebpf, name, section)?;
                    prog.load(hook, &self.btf)
                        .map_err(|error| BpfError::Load { section, error })?;
                    prog.attach()
                        .map_err(|error| BpfError::Attach { section, error })?;
                }
            }
            FsPath::Tracepoint => {
                let section = section::SCHED_PROCESS_EXEC;
                let prog: &mut BtfTracePoint =
                    program(&mut self.ebpf, names::PROG_TP_EXEC_CHECK, section)?;
                prog.load(names::TP_SCHED_PROCESS_EXEC, &self.btf)
                    .map_err(|error| BpfError::Load { section, error })?;
                prog.attach()
                    .map_err(|error| BpfError::Attach { section, error })?;
                self.enable_syscall_hooks(HOOK_EXEC_MAPS, "the PROT_EXEC mmap/mprotect check")?;
            }
        }
        Ok(())
    }

    /// Forgets the run's exec entries (cleanup).
    pub fn clear_exec_integrity(&mut self, run_slot: u32) {
        let Some(rules) = self.exec_rules.as_mut() else {
            return;
        };
        let keys: Vec<FsRuleKey> = rules
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.run_slot == run_slot)
            .collect();
        for key in keys {
            let _ = rules.remove(&key);
        }
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
