//! fork, the pre-exec sequence (stdio → cgroup → bounding set → user → capabilities →
//! cwd → landlock → seccomp → exec), and the report of a failure back to the parent.
//!
//! Everything the child needs is prepared before fork: the child makes only raw
//! syscalls on that memory. It never allocates, locks or unwinds. If a step fails
//! it writes (stage, errno) to a close-on-exec pipe and exits 125; if exec
//! succeeds the pipe closes and the parent reads EOF.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::unistd::Pid;

use crate::layers::caps::PreparedCaps;
use crate::layers::landlock::PreparedLandlock;
use crate::layers::name;
use crate::layers::protect::PreparedProtect;
use crate::layers::seccomp::PreparedSeccomp;
use crate::supervisor::user::PreparedUser;

/// Which pre-exec step failed; the integer is what crosses the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Setup = 1,
    Cgroup = 2,
    Caps = 3,
    Landlock = 4,
    Seccomp = 5,
    Exec = 6,
    User = 7,
    Cwd = 8,
    Mounts = 9,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Setup,
            2 => Self::Cgroup,
            3 => Self::Caps,
            4 => Self::Landlock,
            5 => Self::Seccomp,
            6 => Self::Exec,
            7 => Self::User,
            8 => Self::Cwd,
            9 => Self::Mounts,
            _ => return None,
        })
    }

    pub fn layer(self) -> &'static str {
        match self {
            Self::Setup => name::AGENTD,
            Self::Cgroup => name::CGROUP,
            Self::Caps => name::CAPS,
            Self::Landlock => name::LANDLOCK,
            Self::Seccomp => name::SECCOMP,
            Self::Exec => name::EXEC,
            Self::User => name::USER,
            Self::Cwd => name::EXEC,
            Self::Mounts => name::MOUNTS,
        }
    }
}

/// Everything the child uses, prepared in the parent.
pub struct ChildSetup<'a> {
    pub program: &'a CStr,
    pub argv: &'a [*const libc::c_char],
    pub envp: &'a [*const libc::c_char],
    pub cgroup_procs_fds: &'a [RawFd],
    pub caps: Option<&'a PreparedCaps>,
    /// Whom the command runs as; `None`: agentd's own uid.
    pub user: Option<&'a PreparedUser>,
    /// Where the command starts (after the user switch, so the user's permissions
    /// apply); `None`: agentd's own directory.
    pub cwd: Option<&'a CStr>,
    /// The command's umask; `None`: agentd's own.
    pub umask: Option<libc::mode_t>,
    pub landlock: Option<&'a PreparedLandlock>,
    pub seccomp: Option<&'a PreparedSeccomp>,
    /// agentd's own files, read-only to the run (a mount namespace of its own).
    pub protect: Option<&'a PreparedProtect>,
    /// The run's private /proc (`layers::procfs`), in that same mount namespace.
    pub proc: Option<&'a crate::layers::procfs::PreparedProc>,
    /// Descriptors that become the command's stdin, stdout and stderr.
    pub stdio: Option<[RawFd; 3]>,
    /// The command dies with agentd (`PR_SET_PDEATHSIG`). Off for the daemon's runs,
    /// which outlive it; those get a session of their own instead.
    pub tied_to_parent: bool,
}

/// A NULL-terminated C string array that owns its strings.
pub struct CStrArray {
    _owned: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

impl CStrArray {
    pub fn new(items: Vec<CString>) -> Self {
        let mut ptrs: Vec<*const libc::c_char> = items.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Self {
            _owned: items,
            ptrs,
        }
    }

    pub fn as_slice(&self) -> &[*const libc::c_char] {
        &self.ptrs
    }
}

#[derive(Debug)]
pub enum SpawnOutcome {
    /// exec succeeded; the child runs the command.
    Running(Pid),
    /// A pre-exec step failed; the child has been reaped.
    Failed { stage: Stage, errno: i32 },
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot create the set-up pipe: {0}")]
    Pipe(nix::Error),
    #[error("fork failed: {0}")]
    Fork(nix::Error),
    #[error("reading the child's set-up report failed: {0}")]
    Report(nix::Error),
}

/// A forked child that has set itself up (cgroups, user, capabilities, landlock,
/// seccomp) and waits for [`Paused::start`] before it execs the command. The parent
/// finishes the run's setup meanwhile: the child's cgroup join (a kernel RCU grace
/// period on a host without `favordynmods`, about 10 ms) overlaps the parent's work.
/// Dropped without `start`, the child exits 125 before exec and is reaped.
pub struct Paused {
    child: Pid,
    go: Option<OwnedFd>,
    report: Option<OwnedFd>,
}

/// Forks the child, which sets itself up and waits (see [`Paused`]).
pub fn fork_paused(setup: &ChildSetup<'_>) -> Result<Paused, LaunchError> {
    // Held across fork, so that the daemon's zombie sweeps never reap this leader (its
    // supervisor waits for it) before it is known. The child never releases it: it
    // execs or exits. Held from before the pipes exist until the parent has closed the
    // child's ends, so that a concurrent launch never forks a copy of them (which would
    // keep the report pipe open past this child's exec).
    let mut leaders = crate::supervisor::leaders();
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LaunchError::Pipe)?;
    let (go_read, go_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LaunchError::Pipe)?;
    let parent = nix::unistd::getpid();
    // SAFETY: between fork and exec/_exit the child calls only `child_main`,
    // which makes raw async-signal-safe syscalls on memory prepared before fork.
    match unsafe { nix::unistd::fork() }.map_err(LaunchError::Fork)? {
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            drop(go_write);
            let (stage, errno) =
                child_main(setup, parent, write_end.as_raw_fd(), go_read.as_raw_fd());
            report_and_exit(write_end.as_raw_fd(), stage, errno)
        }
        nix::unistd::ForkResult::Parent { child } => {
            leaders.insert(child.as_raw());
            drop(write_end);
            drop(go_read);
            drop(leaders);
            Ok(Paused {
                child,
                go: Some(go_write),
                report: Some(read_end),
            })
        }
    }
}

impl Paused {
    pub fn pid(&self) -> Pid {
        self.child
    }

    /// Lets the child exec the command, and returns how its setup and exec went.
    pub fn start(mut self) -> Result<SpawnOutcome, LaunchError> {
        if let Some(go) = self.go.take() {
            // The child waits for this byte; a failed write means it is gone, which its
            // report says.
            let _ = nix::unistd::write(&go, b"g");
        }
        match self.report.take() {
            Some(report) => read_report(report, self.child),
            None => Ok(SpawnOutcome::Running(self.child)),
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // End of file on the go pipe: the child exits 125 before exec; its report (or
        // the pipe closing) says it is gone, and `read_report` reaps it.
        drop(self.go.take());
        if let Some(report) = self.report.take() {
            if let Ok(SpawnOutcome::Running(pid)) = read_report(report, self.child) {
                // It exited without a report: reap it here.
                let _ = nix::sys::wait::waitpid(pid, None);
                crate::supervisor::forget_leader(pid);
            }
        }
    }
}

fn read_report(read_end: OwnedFd, child: Pid) -> Result<SpawnOutcome, LaunchError> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(&read_end, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(LaunchError::Report(e)),
        }
    }
    if got == 0 {
        return Ok(SpawnOutcome::Running(child));
    }
    // The child is exiting with 125; reap it so it leaves no zombie.
    let _ = nix::sys::wait::waitpid(child, None);
    crate::supervisor::forget_leader(child);
    let stage_raw = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let stage = Stage::from_u32(stage_raw).unwrap_or(Stage::Setup);
    Ok(SpawnOutcome::Failed { stage, errno })
}

/// Runs in the forked child. Returns only on failure.
fn child_main(
    setup: &ChildSetup<'_>,
    parent: Pid,
    _report_fd: RawFd,
    go_fd: RawFd,
) -> (Stage, i32) {
    // SAFETY (whole function): only raw syscalls; no allocation, no locks.
    if setup.tied_to_parent {
        // Die with agentd, so a confined process never runs unaudited.
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
            return (Stage::Setup, errno());
        }
        // agentd may have died between fork and prctl.
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != parent.as_raw() {
            return (Stage::Setup, libc::ESRCH);
        }
    } else {
        // Out of the daemon's session and process group: its signals are not the run's.
        // SAFETY: setsid has no memory arguments.
        if unsafe { libc::setsid() } < 0 {
            return (Stage::Setup, errno());
        }
    }
    if let Err(e) = reset_signals() {
        return (Stage::Setup, e);
    }
    if let Some(fds) = setup.stdio {
        for (target, fd) in fds.iter().enumerate() {
            // SAFETY: dup2 of fds the parent opened onto 0..=2 (clears close-on-exec).
            if unsafe { libc::dup2(*fd, target as libc::c_int) } < 0 {
                return (Stage::Setup, errno());
            }
        }
    }
    // Only stdio crosses into the command: an inherited fd could reach outside the sandbox.
    // SAFETY: close_range marks fds close-on-exec; the ones we still need work until exec.
    if unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } != 0
    {
        return (Stage::Setup, errno());
    }

    for &fd in setup.cgroup_procs_fds {
        // Writing "0" to cgroup.procs moves the writing process.
        // SAFETY: writing a static 1-byte buffer to an fd opened by the parent.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return (Stage::Cgroup, errno());
        }
    }
    // Mounting needs CAP_SYS_ADMIN, so before any capability is dropped.
    if setup.protect.is_some() || setup.proc.is_some() {
        if let Err(e) = crate::layers::protect::enter_namespace() {
            return (Stage::Mounts, e);
        }
    }
    if let Some(proc) = setup.proc {
        if let Err(e) = proc.apply_in_child() {
            return (Stage::Mounts, e);
        }
    }
    if let Some(protect) = setup.protect {
        if let Err(e) = protect.apply_in_child() {
            return (Stage::Mounts, e);
        }
    }
    // The bounding set needs CAP_SETPCAP and the user switch CAP_SETUID/CAP_SETGID, so:
    // bounding set, then user, then the remaining capability sets.
    if let Some(caps) = setup.caps {
        if let Err(e) = caps.drop_bounding_in_child() {
            return (Stage::Caps, e as i32);
        }
    }
    if let Some(user) = setup.user {
        if let Err(e) = user.apply_in_child() {
            return (Stage::User, e);
        }
    }
    if let Some(caps) = setup.caps {
        if let Err(e) = caps.clear_in_child() {
            return (Stage::Caps, e as i32);
        }
    }
    if let Some(mask) = setup.umask {
        // SAFETY: umask(2) cannot fail and touches only this process.
        unsafe { libc::umask(mask) };
    }
    if let Some(cwd) = setup.cwd {
        // SAFETY: chdir to a NUL-terminated path prepared by the parent.
        if unsafe { libc::chdir(cwd.as_ptr()) } != 0 {
            return (Stage::Cwd, errno());
        }
    }
    if let Some(ll) = setup.landlock {
        if let Err(e) = ll.apply_in_child() {
            return (Stage::Landlock, e as i32);
        }
    }
    if let Some(sc) = setup.seccomp {
        if let Err(e) = sc.apply_in_child() {
            return (Stage::Seccomp, e as i32);
        }
    }
    // Wait for the parent's go (it records the pid first); end of file: it gave up.
    let mut go = [0u8; 1];
    // SAFETY: read(2) of one byte into a stack buffer from a pipe the parent made.
    if unsafe { libc::read(go_fd, go.as_mut_ptr().cast(), 1) } != 1 {
        return (Stage::Setup, libc::ESRCH);
    }
    // SAFETY: program, argv and envp are NUL-terminated C strings and
    // NULL-terminated pointer arrays kept alive by the parent's stack frame.
    unsafe {
        libc::execve(
            setup.program.as_ptr(),
            setup.argv.as_ptr(),
            setup.envp.as_ptr(),
        )
    };
    (Stage::Exec, errno())
}

/// Restores default dispositions and an empty mask: exec keeps ignored signals
/// (Rust ignores SIGPIPE) and the mask, and the command must not inherit them.
fn reset_signals() -> Result<(), i32> {
    for sig in 1..=31 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting SIG_DFL is async-signal-safe.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an all-zero sigset is valid; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t on our stack.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: unblocking with a valid set; old set not requested.
    if unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) } != 0 {
        return Err(errno());
    }
    Ok(())
}

fn report_and_exit(fd: RawFd, stage: Stage, errno: i32) -> ! {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
    buf[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: writing a stack buffer to our pipe; then _exit without running destructors.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), buf.len());
        libc::_exit(125)
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Owns a pidfd for the child, so waiting can be async without a SIGCHLD handler.
pub fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
