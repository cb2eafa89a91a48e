//! A private `/proc` for a launched run: a new procfs instance with
//! `hidepid=invisible`, mounted over `/proc` in the run's own mount namespace.
//!
//! `hidepid=invisible` hides every process for which the reader fails the kernel's
//! ptrace read check (`ptrace_may_access(PTRACE_MODE_READ_FSCREDS)`), and landlock
//! makes that check fail for any process outside the reader's landlock domain, of the
//! same uid included. So a process of the run sees only the run's own processes in
//! `/proc`: the others (agentd, the user's shells, the rest of the host) are not there
//! (`ENOENT`), neither their `cmdline`, `environ`, `maps`, `mem` nor `fd`.
//!
//! The instance is created in agentd (`fsopen`/`fsmount`), so the landlock rules of
//! paths under `/proc` can be opened in it before fork, through
//! `/proc/self/fd/N/…` of agentd's own `/proc`. The child, after `unshare(CLONE_NEWNS)`,
//! only moves it into place (`move_mount`) and makes the kernel's tunables read-only
//! (`/proc/sys`, `/proc/sysrq-trigger`, …), as the host's /proc may have had them.
//!
//! Cost: one procfs superblock per run (a few µs to create, no per-syscall cost); a
//! lookup in `/proc` pays one ptrace check per process listed.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::landlock::LandlockRequest;

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Entries of the new instance that are bound read-only onto themselves: the kernel's
/// tunables and triggers, which a process without capabilities but with uid 0 could
/// otherwise write (the container runtimes make the same set read-only).
const READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("private /proc: {call}: {errno}")]
    Create { call: &'static str, errno: Errno },
}

/// The procfs instance a run will see as `/proc`, not yet mounted anywhere.
#[derive(Debug)]
pub struct PrivateProc {
    mount: OwnedFd,
}

impl PrivateProc {
    /// A new procfs instance with `hidepid=invisible`, `nosuid,nodev,noexec`.
    pub fn create() -> Result<Self, ProcError> {
        let fail = |call| ProcError::Create {
            call,
            errno: Errno::last(),
        };
        // SAFETY: fsopen with a static NUL-terminated name; returns a new fd or -1.
        let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"proc".as_ptr(), FSOPEN_CLOEXEC) };
        if fs < 0 {
            return Err(fail("fsopen(proc)"));
        }
        // SAFETY: a new fd that nothing else owns.
        let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
        // SAFETY: fsconfig on our fs context with static NUL-terminated key and value.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                c"hidepid".as_ptr(),
                c"invisible".as_ptr(),
                0,
            )
        };
        if rc != 0 {
            return Err(fail("fsconfig(hidepid=invisible)"));
        }
        // SAFETY: as above, a command without key or value.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        if rc != 0 {
            return Err(fail("fsconfig(create)"));
        }
        let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
        // SAFETY: fsmount of the created context; returns a new fd or -1.
        let mnt =
            unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
        if mnt < 0 {
            return Err(fail("fsmount"));
        }
        // SAFETY: a new fd that nothing else owns.
        let mount = unsafe { OwnedFd::from_raw_fd(mnt as i32) };
        Ok(Self { mount })
    }

    /// Where agentd reaches `path` of the new instance, for a path under `/proc` (the
    /// landlock rules are opened there); other paths are returned as they are.
    pub fn reach(&self, path: &Path) -> PathBuf {
        match path.strip_prefix("/proc") {
            Ok(rest) => Path::new(&format!("/proc/self/fd/{}", self.mount.as_raw_fd())).join(rest),
            Err(_) => path.to_path_buf(),
        }
    }

    /// The child's part, prepared: which read-only binds exist in this instance.
    pub fn prepare(&self) -> PreparedProc {
        let read_only = READ_ONLY
            .iter()
            .filter(|e| self.reach(&Path::new("/proc").join(e)).exists())
            .filter_map(|e| CString::new(format!("/proc/{e}").as_bytes()).ok())
            .collect();
        PreparedProc {
            mount: self.mount.as_raw_fd(),
            read_only,
        }
    }

    /// `req` with its paths under `/proc` reached in this instance ([`Self::reach`]).
    pub fn landlock_request(&self, req: &LandlockRequest) -> LandlockRequest {
        let mut req = req.clone();
        for paths in [&mut req.read, &mut req.write, &mut req.exec] {
            for p in paths.iter_mut() {
                *p = self.reach(p);
            }
        }
        req
    }
}

/// [`PrivateProc`] for the child: the mount's fd (kept open by the parent until the
/// child has exec'd) and the read-only binds.
#[derive(Debug)]
pub struct PreparedProc {
    mount: i32,
    read_only: Vec<CString>,
}

impl PreparedProc {
    /// In the child, inside its own mount namespace (slaved), before the capability
    /// drop: the instance goes over `/proc`, then the tunables become read-only. Raw
    /// syscalls only. Returns the errno of the first call that failed.
    pub fn apply_in_child(&self) -> Result<(), i32> {
        let errno = || Errno::last() as i32;
        // SAFETY: move_mount of a detached mount fd onto a static path.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                self.mount,
                c"".as_ptr(),
                libc::AT_FDCWD,
                c"/proc".as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if rc != 0 {
            return Err(errno());
        }
        for entry in &self.read_only {
            super::protect::bind(entry, libc::MS_REC, libc::MS_RDONLY)?;
        }
        Ok(())
    }
}

/// Whether `path` is `/proc` or below it.
pub fn is_under_proc(path: &Path) -> bool {
    path.starts_with("/proc")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_proc_are_reached_through_the_new_instance() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: creating a procfs instance needs root");
            return;
        }
        let proc = PrivateProc::create().unwrap();
        let fd = proc.mount.as_raw_fd();
        assert_eq!(
            proc.reach(Path::new("/proc/sys/kernel")),
            PathBuf::from(format!("/proc/self/fd/{fd}/sys/kernel"))
        );
        assert_eq!(proc.reach(Path::new("/usr")), PathBuf::from("/usr"));
        assert!(proc.reach(Path::new("/proc/self/status")).exists());
        // A different superblock from the host's /proc.
        use std::os::unix::fs::MetadataExt;
        let ours = std::fs::metadata(proc.reach(Path::new("/proc")))
            .unwrap()
            .dev();
        assert_ne!(ours, std::fs::metadata("/proc").unwrap().dev());
        let prepared = proc.prepare();
        assert!(prepared
            .read_only
            .iter()
            .any(|p| p.as_bytes() == b"/proc/sys"));
    }
}
