//! The run guard: if agentd dies without ending the run (SIGKILL, OOM kill, crash),
//! every process of the run dies too.
//!
//! PR_SET_PDEATHSIG covers only the command agentd started. A process it forked and
//! that outlived it (a double-forked daemon) would keep running with agentd's eBPF
//! programs gone, because their links close with agentd: no network rules, no inode
//! rules, no audit. So before the command starts, agentd forks a small guard process
//! outside the run's cgroup. The guard blocks reading a pipe whose only write end agentd
//! holds. At a normal end agentd writes one byte and the guard exits. If agentd dies
//! first, the read sees end-of-file and the guard writes `1` to the run's v2
//! `cgroup.kill`, which kills every process in the cgroup, then exits.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

/// Errors arming the guard. The run does not start without one.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot open {path} (needs Linux 5.14+ cgroup v2): {source}")]
    KillFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open /dev/null: {0}")]
    DevNull(std::io::Error),
    #[error("pipe: {0}")]
    Pipe(nix::Error),
    #[error("fork: {0}")]
    Fork(nix::Error),
}

/// An armed guard. [`RunGuard::disarm`] ends it at a normal run end; dropping it armed
/// (an error path) also makes the guard kill the run's cgroup, which is what those
/// paths want anyway.
pub struct RunGuard {
    /// agentd's end of the pipe; closing it without writing means "kill".
    write_end: Option<OwnedFd>,
    pid: Pid,
}

impl RunGuard {
    /// Forks the guard for the run whose v2 cgroup is `v2_leaf`.
    pub fn arm(v2_leaf: &Path) -> Result<Self, GuardError> {
        let kill_path = v2_leaf.join("cgroup.kill");
        let kill_file = OpenOptions::new()
            .write(true)
            .open(&kill_path)
            .map_err(|source| GuardError::KillFile {
                path: kill_path,
                source,
            })?;
        let dev_null = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(GuardError::DevNull)?;
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(GuardError::Pipe)?;
        let fds = GuardFds {
            read: read_end.as_raw_fd(),
            write: write_end.as_raw_fd(),
            kill: kill_file.as_raw_fd(),
            dev_null: dev_null.as_raw_fd(),
        };
        // agentd is multi-threaded, so between fork and _exit the child calls only
        // `guard_main`, which never returns.
        // SAFETY: the child makes raw async-signal-safe syscalls on integers only.
        match unsafe { nix::unistd::fork() }.map_err(GuardError::Fork)? {
            ForkResult::Child => guard_main(&fds),
            ForkResult::Parent { child } => {
                drop(read_end);
                Ok(Self {
                    write_end: Some(write_end),
                    pid: child,
                })
            }
        }
    }

    /// The run ended normally: the guard exits without killing, and is reaped.
    pub fn disarm(mut self) {
        if let Some(fd) = self.write_end.take() {
            // A failed write still closes the pipe, which makes the guard kill the
            // cgroup: at this point the run is over, so that is harmless.
            let _ = nix::unistd::write(&fd, b"d");
        }
        let _ = waitpid(self.pid, None);
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.write_end.take().is_some() {
            // Closed without the byte: the guard kills the cgroup; reap it.
            let _ = waitpid(self.pid, None);
        }
    }
}

#[derive(Clone, Copy)]
struct GuardFds {
    read: i32,
    write: i32,
    kill: i32,
    dev_null: i32,
}

/// The guard process. Only async-signal-safe libc calls: this runs in a fork of a
/// multi-threaded process.
fn guard_main(fds: &GuardFds) -> ! {
    // The guard leaves agentd's session and process group so a terminal's Ctrl-C
    // (which agentd forwards to the command) does not end it, and it holds nothing of
    // agentd's except the fds it needs (an inherited pipe to a test harness or the
    // audit log lock would otherwise outlive agentd).
    // SAFETY: raw syscalls on fds and constants prepared before fork; no allocation.
    unsafe {
        libc::setsid();
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::close(fds.write);
        // Move the two fds we keep out of the way first (agentd may have been started
        // with 0-2 closed, so they could be among them), then to 3 and 4, and close
        // everything above.
        let read = libc::fcntl(fds.read, libc::F_DUPFD_CLOEXEC, 1000);
        let kill = libc::fcntl(fds.kill, libc::F_DUPFD_CLOEXEC, 1000);
        for std_fd in 0..3 {
            libc::dup2(fds.dev_null, std_fd);
        }
        libc::dup2(read, 3);
        libc::dup2(kill, 4);
        libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32);
        let mut byte = 0u8;
        let n = loop {
            let n = libc::read(3, (&raw mut byte).cast(), 1);
            if n >= 0 || *libc::__errno_location() != libc::EINTR {
                break n;
            }
        };
        if n != 1 {
            libc::write(4, b"1".as_ptr().cast(), 1);
        }
        libc::_exit(0)
    }
}
