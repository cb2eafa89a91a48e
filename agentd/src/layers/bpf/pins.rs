//! The bpffs directory a daemon pins into, so that its programs, links and maps outlive
//! it:
//!
//! ```text
//! ROOT/<object id>/maps/<MAP>        every map (reused by the next daemon)
//! ROOT/<object id>/links/<program>   global programs attached while runs need them
//! ROOT/<object id>/runs/<run>/<prog> the links of one run's cgroup programs
//! ```
//!
//! aya 0.14 reuses a pinned map without checking its layout, so the directory is named
//! after the eBPF object itself: a daemon built with other programs (or other map
//! layouts) never opens maps it does not understand.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::BpfError;

/// `BPF_FS_MAGIC` from `<linux/magic.h>`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A prepared pin directory.
#[derive(Debug, Clone)]
pub struct PinDir {
    dir: PathBuf,
}

/// The directory name that identifies `object`: the first 16 hex digits of its SHA-256.
pub fn object_id(object: &[u8]) -> String {
    let digest = Sha256::digest(object);
    hex::encode(&digest[..8])
}

impl PinDir {
    /// `root/<object id>` with its subdirectories, on bpffs: when `root`'s parent is not
    /// on a bpffs, one is mounted there.
    pub fn prepare(root: &Path, object: &[u8]) -> Result<Self, BpfError> {
        let parent = root.parent().unwrap_or(root);
        ensure_bpffs(parent)?;
        let dir = root.join(object_id(object));
        for sub in ["maps", "links", "runs"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|error| BpfError::PinDir {
                path: d.clone(),
                error,
            })?;
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where map `name` is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join("maps").join(name)
    }

    /// Where the links of global programs are pinned.
    pub fn links_dir(&self) -> PathBuf {
        self.dir.join("links")
    }

    /// Creates (or reuses) the pin directory of run `name`.
    pub fn run_dir(&self, name: &str) -> Result<PathBuf, BpfError> {
        let d = self.dir.join("runs").join(name);
        std::fs::create_dir_all(&d).map_err(|error| BpfError::PinDir {
            path: d.clone(),
            error,
        })?;
        Ok(d)
    }

    /// Run names with a pin directory.
    pub fn runs(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("runs"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every pinned object (maps, global links, run links), for `agentd status`.
    pub fn count(&self) -> usize {
        let count = |d: PathBuf| std::fs::read_dir(d).map(|rd| rd.count()).unwrap_or(0);
        count(self.dir.join("maps"))
            + count(self.dir.join("links"))
            + self
                .runs()
                .into_iter()
                .map(|r| count(self.dir.join("runs").join(r)))
                .sum::<usize>()
    }
}

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

/// Mounts a bpffs on `dir` (created if missing) unless it already is one.
fn ensure_bpffs(dir: &Path) -> Result<(), BpfError> {
    if is_bpffs(dir) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|error| BpfError::PinDir {
        path: dir.to_path_buf(),
        error,
    })?;
    nix::mount::mount(
        Some("bpf"),
        dir,
        Some("bpf"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(|e| BpfError::PinDir {
        path: dir.to_path_buf(),
        error: std::io::Error::other(format!("mount bpffs: {e}")),
    })?;
    tracing::info!("mounted bpffs on {}", dir.display());
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn object_id_is_stable_and_short() {
        assert_eq!(object_id(b"abc"), "ba7816bf8f01cfea");
        assert_ne!(object_id(b"abc"), object_id(b"abd"));
    }
}
