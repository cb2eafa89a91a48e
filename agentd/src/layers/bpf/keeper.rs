//! Keeps the kernel's cgroup-BPF static keys on between a daemon's runs.
//!
//! The kernel enables the socket hooks of one attach type (`connect4`, `sendmsg6`,
//! `sock_create`, …) with a static key that is on while any cgroup holds a program of
//! that type. A run's cgroup programs were the only ones, so every launch turned nine
//! keys on and its end turned them off again: each flip patches kernel text on every CPU
//! (`smp_call_function_many_cond`, IPIs to the whole host), 8.5% of the daemon's CPU per
//! launch in a profile, and the attaches waited behind the patching lock (one launch in
//! five spent 6–27 ms in them, measured 2026-12-07).
//!
//! The daemon gives the runtime an empty cgroup of its own (`agentd-keep-PID` beside
//! the run cgroups). The first run to attach a cgroup program also attaches it there;
//! those links go when the global programs do, `programs_linger_ms` after the last run.
//! The kept links cost the host what a live run's already do: while they hold, every
//! socket operation on the host takes the cgroup-BPF path and finds its own cgroup's
//! program list empty. No task is ever in that cgroup; one moved there by root would
//! meet the net programs, which deny whatever no run owns.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::progs::HeldLink;

/// The name prefix of a keeper cgroup; its PID follows.
pub const KEEPER_PREFIX: &str = "agentd-keep-";

/// The empty cgroup and the links it holds.
pub(super) struct CgroupKeeper {
    dir: PathBuf,
    cgroup: Option<File>,
    links: HashMap<&'static str, HeldLink>,
}

impl CgroupKeeper {
    /// A keeper whose cgroup will be `dir` (made on first need). The keeper cgroups of
    /// earlier daemons that were killed go now.
    pub fn new(dir: PathBuf) -> Self {
        if let Some(parent) = dir.parent() {
            remove_stale(parent);
        }
        Self {
            dir,
            cgroup: None,
            links: HashMap::new(),
        }
    }

    /// The keeper cgroup, made on first need.
    fn cgroup(&mut self) -> std::io::Result<(&Path, &File)> {
        if self.cgroup.is_none() {
            match std::fs::create_dir(&self.dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            self.cgroup = Some(File::open(&self.dir)?);
        }
        match &self.cgroup {
            Some(f) => Ok((&self.dir, f)),
            None => Err(std::io::Error::other("keeper cgroup not open")),
        }
    }

    /// Keeps the program `name` on the keeper cgroup unless it is kept: `attach` links
    /// it to the cgroup (directory, open file). A failure costs only speed: it is
    /// logged, and the run that needed the program goes on.
    pub fn keep_with(
        &mut self,
        name: &'static str,
        attach: impl FnOnce(&Path, &File) -> Result<HeldLink, String>,
    ) {
        if self.links.contains_key(name) {
            return;
        }
        let linked = self
            .cgroup()
            .map_err(|e| e.to_string())
            .and_then(|(dir, file)| attach(dir, file));
        match linked {
            Ok(link) => {
                self.links.insert(name, link);
            }
            Err(e) => tracing::warn!("keeper cgroup: attach {name}: {e}"),
        }
    }

    /// Lets every kept link go (the kernel's keys follow the runs' links again).
    pub fn release_all(&mut self) -> usize {
        let n = self.links.len();
        for (_, link) in self.links.drain() {
            link.release();
        }
        n
    }

    pub fn kept(&self) -> usize {
        self.links.len()
    }
}

impl Drop for CgroupKeeper {
    fn drop(&mut self) {
        self.release_all();
        self.cgroup = None;
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("remove {}: {e}", self.dir.display());
            }
        }
    }
}

/// Removes the keeper cgroups in `parent` of processes that are gone (a daemon that
/// was killed): their links went with their processes.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(KEEPER_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        if let Err(err) = std::fs::remove_dir(e.path()) {
            tracing::warn!("remove stale {}: {err}", e.path().display());
        }
    }
}

/// The keeper cgroup of this process in `parent`.
pub fn keeper_dir(parent: &Path) -> PathBuf {
    parent.join(format!("{KEEPER_PREFIX}{}", std::process::id()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_keeper_cgroup_is_not_a_run_leaf() {
        let name = keeper_dir(Path::new("/x"));
        let name = name.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(crate::layers::cgroup::LEAF_PREFIX));
        assert_eq!(
            crate::layers::cgroup::gc::run_id_of(name),
            None,
            "the stale-run collector never takes it for a run"
        );
    }

    #[test]
    fn stale_keepers_of_dead_processes_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mine = keeper_dir(dir.path());
        std::fs::create_dir(&mine).unwrap();
        // PIDs are below 2^22 on Linux.
        let dead = dir.path().join(format!("{KEEPER_PREFIX}4999999"));
        std::fs::create_dir(&dead).unwrap();
        let other = dir.path().join("agentd-0123456789ab");
        std::fs::create_dir(&other).unwrap();
        remove_stale(dir.path());
        assert!(mine.exists());
        assert!(!dead.exists());
        assert!(
            other.exists(),
            "run leaves are the collector's, not the keeper's"
        );
    }
}
