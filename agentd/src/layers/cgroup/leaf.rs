//! One created cgroup directory, and the set of them that make up a run.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CgroupError;

/// A cgroup directory this run created, with its `cgroup.procs` opened for the
/// child to join by writing "0" (no allocation needed after fork).
#[derive(Debug)]
pub struct Leaf {
    pub path: PathBuf,
    /// "cgroup2" or the v1 controller name, for messages.
    pub hierarchy: String,
    procs: File,
}

impl Leaf {
    /// Creates `parent/name`. An existing directory is an error: it is not ours to reuse.
    pub fn create(parent: &Path, name: &str, hierarchy: &str) -> Result<Self, CgroupError> {
        let path = parent.join(name);
        std::fs::create_dir(&path).map_err(|source| CgroupError::Create {
            path: path.clone(),
            source,
        })?;
        let procs_path = path.join("cgroup.procs");
        let procs = match OpenOptions::new().write(true).open(&procs_path) {
            Ok(f) => f,
            Err(source) => {
                let _ = std::fs::remove_dir(&path);
                return Err(CgroupError::Open {
                    path: procs_path,
                    source,
                });
            }
        };
        Ok(Self {
            path,
            hierarchy: hierarchy.to_owned(),
            procs,
        })
    }

    /// Opens a leaf an earlier agentd created (a re-adopted run): it must exist.
    pub fn open(path: &Path, hierarchy: &str) -> Result<Self, CgroupError> {
        let procs_path = path.join("cgroup.procs");
        let procs = OpenOptions::new()
            .write(true)
            .open(&procs_path)
            .map_err(|source| CgroupError::Open {
                path: procs_path,
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            hierarchy: hierarchy.to_owned(),
            procs,
        })
    }

    /// The fd the child writes "0" to in order to join this cgroup.
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    /// Whether this leaf holds `controller` ("cgroup2" for the identity leaf).
    pub fn has(&self, controller: &str) -> bool {
        self.hierarchy.split(',').any(|c| c == controller)
    }

    pub fn write(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        write_file(&self.path.join(file), value)
    }

    pub fn read(&self, file: &str) -> Result<String, CgroupError> {
        let path = self.path.join(file);
        std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.read("cgroup.procs")
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Waits until no process is left, then removes the directory.
    fn remove(&self, timeout: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + timeout;
        loop {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    let pids = self.pids();
                    if pids.is_empty() {
                        return Err(CgroupError::Remove {
                            path: self.path.clone(),
                            source: e,
                        });
                    }
                    return Err(CgroupError::NotEmpty {
                        path: self.path.clone(),
                        pids,
                    });
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
    }
}

pub(super) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let res = OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    res.map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    })
}

/// The hierarchy name a state file gives an attached run's cgroup.
pub const ATTACHED: &str = "attached";

/// All cgroups of one run. Dropping it kills what is left in them and removes them.
#[derive(Debug)]
pub struct RunCgroups {
    /// The v2 leaf: the run's identity in BPF.
    identity: Leaf,
    /// v1 leaves holding controllers (hybrid hosts), in creation order.
    controllers: Vec<Leaf>,
    cgroup_id: u64,
    removed: bool,
    /// An existing cgroup an attached run confines (`agentd attach`): not ours, so it
    /// is never removed, and its processes are killed only by an explicit stop.
    foreign: bool,
}

impl RunCgroups {
    pub fn new(identity: Leaf, controllers: Vec<Leaf>) -> Result<Self, CgroupError> {
        let cgroup_id = std::fs::metadata(&identity.path)
            .map_err(|source| CgroupError::Read {
                path: identity.path.clone(),
                source,
            })?
            .ino();
        Ok(Self {
            identity,
            controllers,
            cgroup_id,
            removed: false,
            foreign: false,
        })
    }

    /// An existing v2 cgroup that an attached run confines. It is not agentd's: dropping
    /// or removing the result leaves the directory and its processes alone.
    pub fn attach(path: &Path) -> Result<Self, CgroupError> {
        let mut c = Self::new(Leaf::open(path, "cgroup2")?, Vec::new())?;
        c.foreign = true;
        Ok(c)
    }

    /// Whether this is an attached (existing, not agentd's) cgroup.
    pub fn is_foreign(&self) -> bool {
        self.foreign
    }

    /// The cgroups of a run an earlier agentd created, from `(hierarchy, path)` pairs
    /// (the `cgroup2` one is the identity).
    pub fn adopt(leaves: &[(String, PathBuf)]) -> Result<Self, CgroupError> {
        // An attached run's one cgroup is recorded as `attached` (see `describe_state`).
        if let [(h, path)] = leaves {
            if h == ATTACHED {
                return Self::attach(path);
            }
        }
        let mut identity = None;
        let mut controllers = Vec::new();
        for (hierarchy, path) in leaves {
            let leaf = Leaf::open(path, hierarchy)?;
            if hierarchy == "cgroup2" && identity.is_none() {
                identity = Some(leaf);
            } else {
                controllers.push(leaf);
            }
        }
        let identity = identity.ok_or(CgroupError::NoV2)?;
        Self::new(identity, controllers)
    }

    /// The v2 cgroup id (inode) that BPF programs see for processes of this run.
    pub fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }

    pub fn identity(&self) -> &Leaf {
        &self.identity
    }

    pub fn leaves(&self) -> impl Iterator<Item = &Leaf> {
        std::iter::once(&self.identity).chain(self.controllers.iter())
    }

    /// `{hierarchy: path}` of every leaf, for the audit log.
    pub fn describe(&self) -> std::collections::BTreeMap<String, String> {
        self.leaves()
            .map(|l| (l.hierarchy.clone(), l.path.display().to_string()))
            .collect()
    }

    /// `(hierarchy, path)` of every leaf as a state file keeps them; an attached cgroup
    /// is `("attached", path)` so that a restarted daemon re-opens it as not its own.
    pub fn describe_state(&self) -> Vec<(String, PathBuf)> {
        if self.foreign {
            return vec![(ATTACHED.to_owned(), self.identity.path.clone())];
        }
        self.leaves()
            .map(|l| (l.hierarchy.clone(), l.path.clone()))
            .collect()
    }

    /// fds of every leaf's `cgroup.procs`, for the child to join all of them.
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.leaves().map(Leaf::procs_fd).collect()
    }

    /// The v1 leaf holding `controller`, if the run has one (hybrid hosts).
    pub fn controller(&self, controller: &str) -> Option<&Leaf> {
        self.controllers.iter().find(|l| l.has(controller))
    }

    /// Freezes (`true`) or thaws every process of the run through the v2 leaf's
    /// `cgroup.freeze`, which every non-root cgroup2 directory has, controllers or not.
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        self.identity
            .write("cgroup.freeze", if frozen { "1" } else { "0" })
    }

    /// Processes still in the run.
    pub fn pids(&self) -> Vec<u32> {
        self.identity.pids()
    }

    /// Kills every process of the run: `cgroup.kill` where the kernel has it,
    /// else SIGKILL to each member (all of them are processes this run started).
    pub fn kill_all(&self) -> usize {
        let pids = self.pids();
        if pids.is_empty() {
            return 0;
        }
        if self.identity.write("cgroup.kill", "1").is_err() {
            for pid in &pids {
                if let Ok(pid) = i32::try_from(*pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        pids.len()
    }

    /// Kills stragglers and removes every leaf (controllers first, identity last).
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.removed = true;
        self.remove_all()
    }

    fn remove_all(&self) -> Result<(), CgroupError> {
        if self.foreign {
            return Ok(());
        }
        self.kill_all();
        let mut first_err = None;
        for leaf in self
            .controllers
            .iter()
            .rev()
            .chain(std::iter::once(&self.identity))
        {
            if let Err(e) = leaf.remove(Duration::from_secs(5)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for RunCgroups {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = self.remove_all() {
                tracing::error!("cleaning up run cgroups: {e}");
            }
        }
    }
}
