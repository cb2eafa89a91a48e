//! The files that decide how agentd confines runs (the policy file, the daemon's config,
//! the signing key) are read-only to the run when they sit inside a tree it may write,
//! such as `.agentd/policy.yaml` in the repository it works on.
//!
//! Landlock only grants (it cannot take a file back out of an allowed tree), and the
//! tracepoint fallback of the inode rules acts after the call, when an `O_TRUNC` has
//! already emptied the file. So the child, before exec, enters a mount namespace of its
//! own (a copy of agentd's, its mounts slaved so nothing it does propagates back) and
//! bind-mounts each protected file read-only onto itself:
//! - writes, `truncate` and `chmod` fail with `EROFS`;
//! - `unlink`, `rename` and `link` of the file fail with `EBUSY` or `EXDEV` (it is a
//!   mount point);
//! - each directory between the writable root and the file is bind-mounted onto itself
//!   too, so it cannot be renamed away (`EBUSY`) and replaced by one holding another
//!   file of that name. Renames across those directories' edges get `EXDEV`.
//!
//! What it does not cover: another hard link to the same inode that already exists
//! elsewhere in a writable tree (the mount protects a path, not an inode).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One file to keep read-only, and what it is (for records and errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedFile {
    pub path: PathBuf,
    /// `policy`, `config`, `signing key`.
    pub what: &'static str,
}

/// The mounts a run's child makes: directories bound onto themselves (outermost
/// first), then the files, read-only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtectPlan {
    pub dirs: Vec<PathBuf>,
    pub files: Vec<ProtectedFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    #[error("{what} file {path}: {source}")]
    Resolve {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the path contains a NUL byte")]
    Nul { path: PathBuf },
}

impl ProtectPlan {
    /// Which of `files` the run could write: those inside one of `writable_roots`
    /// (canonical), or every one when the run has no fs rules (`all_writable`). Paths are
    /// canonicalized, so a symlink in the way protects the file it leads to.
    pub fn build(
        files: &[ProtectedFile],
        writable_roots: &[PathBuf],
        all_writable: bool,
    ) -> Result<Self, ProtectError> {
        let mut plan = Self::default();
        for f in files {
            let path = std::fs::canonicalize(&f.path).map_err(|source| ProtectError::Resolve {
                what: f.what,
                path: f.path.clone(),
                source,
            })?;
            let root = writable_roots
                .iter()
                .filter(|r| path.starts_with(r) && path != **r)
                .max_by_key(|r| r.as_os_str().len());
            // Without fs rules the whole tree is writable: binding every directory from
            // `/` down would put mount edges all over the host's tree, so only the
            // file's own directory is held in place.
            let dirs_from = match (root, all_writable) {
                (Some(root), _) => root.clone(),
                (None, true) => match path.parent().and_then(Path::parent) {
                    Some(grandparent) => grandparent.to_path_buf(),
                    None => PathBuf::from("/"),
                },
                (None, false) => continue,
            };
            for dir in dirs_between(&dirs_from, &path) {
                if !plan.dirs.contains(&dir) {
                    plan.dirs.push(dir);
                }
            }
            if !plan.files.iter().any(|p| p.path == path) {
                plan.files.push(ProtectedFile { path, what: f.what });
            }
        }
        // Outer directories first: binding one later would hide the mounts below it.
        plan.dirs.sort_by_key(|d| d.components().count());
        Ok(plan)
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Why `path` (canonical) is read-only to the run, if it is: one of the files, or a
    /// directory held in place above one.
    pub fn rule_for(&self, path: &Path) -> Option<String> {
        if let Some(f) = self.files.iter().find(|f| f.path == path) {
            return Some(format!(
                "agentd's {} file is read-only to the run (a read-only bind mount)",
                f.what
            ));
        }
        let f = self
            .files
            .iter()
            .find(|f| self.dirs.iter().any(|d| d == path) && f.path.starts_with(path))?;
        Some(format!(
            "holds agentd's {} file {}: cannot be renamed or removed by the run (a bind mount)",
            f.what,
            f.path.display()
        ))
    }

    pub fn prepare(&self) -> Result<PreparedProtect, ProtectError> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| ProtectError::Nul {
                path: p.to_path_buf(),
            })
        };
        Ok(PreparedProtect {
            dirs: self.dirs.iter().map(|d| c(d)).collect::<Result<_, _>>()?,
            files: self
                .files
                .iter()
                .map(|f| c(&f.path))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// The directories strictly between `root` and `file` (`root` itself excluded: it is a
/// writable root, whose own parent the run cannot write).
fn dirs_between(root: &Path, file: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) {
            break;
        }
        dirs.push(d.to_path_buf());
        dir = d.parent();
    }
    dirs.reverse();
    dirs
}

/// [`ProtectPlan`] as C strings, for the child.
pub struct PreparedProtect {
    dirs: Vec<CString>,
    files: Vec<CString>,
}

impl PreparedProtect {
    /// In the child, inside its own mount namespace ([`enter_namespace`]), before the
    /// capability drop (mounting needs CAP_SYS_ADMIN): the bind mounts. Raw syscalls
    /// only. Returns the errno of the first call that failed.
    pub fn apply_in_child(&self) -> Result<(), i32> {
        for dir in &self.dirs {
            // Recursive: mounts below the directory stay visible through it.
            bind(dir, libc::MS_REC, 0)?;
        }
        for file in &self.files {
            bind(file, 0, libc::MS_RDONLY)?;
        }
        Ok(())
    }
}

/// In the child: a mount namespace of its own (a copy of agentd's), every mount slaved
/// so the host's later mounts still show and the run's never go back. Raw syscalls only.
pub fn enter_namespace() -> Result<(), i32> {
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: unshare takes a flag set.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(errno());
    }
    // SAFETY: mount(2) with a static path and NULL source/type/data.
    if unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        )
    } != 0
    {
        return Err(errno());
    }
    Ok(())
}

/// Binds `path` onto itself (`bind_flags`: `MS_REC` or 0), then, with `remount_flags`,
/// remounts that bind with them (`MS_RDONLY`).
pub(super) fn bind(
    path: &CString,
    bind_flags: libc::c_ulong,
    remount_flags: libc::c_ulong,
) -> Result<(), i32> {
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: mount(2) with prepared NUL-terminated paths and NULL type/data.
    if unsafe {
        libc::mount(
            path.as_ptr(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | bind_flags,
            std::ptr::null(),
        )
    } != 0
    {
        return Err(errno());
    }
    if remount_flags == 0 {
        return Ok(());
    }
    // SAFETY: as above; a remount of the bind just made.
    if unsafe {
        libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | remount_flags,
            std::ptr::null(),
        )
    } != 0
    {
        return Err(errno());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_file_inside_a_writable_root_is_protected_with_the_directories_above_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/policy.yaml"), "x").unwrap();
        std::fs::write(root.join("outside.yaml"), "x").unwrap();
        let files = [
            ProtectedFile {
                path: root.join("a/b/policy.yaml"),
                what: "policy",
            },
            ProtectedFile {
                path: root.join("a/../a/b/policy.yaml"),
                what: "policy",
            },
        ];
        let plan = ProtectPlan::build(&files, std::slice::from_ref(&root), false).unwrap();
        assert_eq!(plan.dirs, vec![root.join("a"), root.join("a/b")]);
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.files[0].path, root.join("a/b/policy.yaml"));
        assert!(plan.rule_for(&root.join("a/b/policy.yaml")).is_some());
        let held = plan.rule_for(&root.join("a")).unwrap();
        assert!(held.starts_with("holds agentd's policy file "), "{held}");
        assert_eq!(plan.rule_for(&root), None);
        // Outside every writable root: nothing to do, unless everything is writable.
        let out = [ProtectedFile {
            path: root.join("outside.yaml"),
            what: "config",
        }];
        let sub = root.join("a");
        assert!(ProtectPlan::build(&out, &[sub], false).unwrap().is_empty());
        let all = ProtectPlan::build(&out, &[], true).unwrap();
        assert_eq!(all.files[0].path, root.join("outside.yaml"));
        assert_eq!(all.dirs, vec![root.clone()]);
        // A file that is not there is an error that names it.
        let gone = [ProtectedFile {
            path: root.join("gone.yaml"),
            what: "policy",
        }];
        let err = ProtectPlan::build(&gone, &[], true)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("policy file "), "{err}");
    }
}
