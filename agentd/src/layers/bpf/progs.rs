//! The programs of the object as data: which kind each is, where it attaches, and the
//! two ways a program is attached.
//!
//! - **Global** programs (tracepoints, BPF LSM hooks, `fexit` programs) see every task of the host and
//!   filter by cgroup themselves. They are attached while at least one run needs them
//!   and detached when the last such run ends ([`Globals`]), so a runtime with no run
//!   costs the host nothing, and fifty runs cost what one does.
//! - **Cgroup** programs attach to one run's v2 cgroup and run only for its tasks; each
//!   run holds its own links ([`HeldLink`]).
//!
//! Every program is loaded (verified) at most once per runtime and shared by every run.
//! With a pin directory (the daemon), links are pinned in bpffs so that they outlive
//! the process: a daemon restart detaches nothing.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use agentd_common::{
    budget::names as budget_names, fsrules::names as fs_names, names, net::names as net_names,
    syscalls::exits, syscalls::names as syscall_names, unix::names as unix_names,
};
use aya::programs::{
    cgroup_skb::CgroupSkbAttachType, links::CgroupAttachMode, links::FdLink, links::PinnedLink,
    BtfTracePoint, CgroupSkb, CgroupSock, CgroupSockAddr, FExit, Lsm,
};
use aya::Ebpf;

use super::{program, BpfError, SharedBtf};

/// Where and how a program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// `tp_btf/<tracepoint>`: global.
    TpBtf(&'static str),
    /// `lsm/<hook>`: global.
    Lsm(&'static str),
    /// `fexit` on the kernel function named: global.
    FExit(&'static str),
    /// `cgroup/connect4` and friends: per run cgroup.
    SockAddr,
    /// `cgroup/sock_create`: per run cgroup.
    Sock,
    /// `cgroup_skb/*`: per run cgroup.
    Skb(SkbDirection),
}

/// Direction of a `cgroup_skb` program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkbDirection {
    Egress,
    Ingress,
}

impl SkbDirection {
    fn aya(self) -> CgroupSkbAttachType {
        match self {
            SkbDirection::Egress => CgroupSkbAttachType::Egress,
            SkbDirection::Ingress => CgroupSkbAttachType::Ingress,
        }
    }
}

/// One program of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prog {
    /// Function name in the object.
    pub name: &'static str,
    /// ELF section, as used in messages.
    pub section: &'static str,
    pub attach: Attach,
}

const fn prog(name: &'static str, section: &'static str, attach: Attach) -> Prog {
    Prog {
        name,
        section,
        attach,
    }
}

/// The exec tracker.
pub const SCHED_PROCESS_EXEC: Prog = prog(
    names::PROG_SCHED_PROCESS_EXEC,
    super::section::SCHED_PROCESS_EXEC,
    Attach::TpBtf(names::TP_SCHED_PROCESS_EXEC),
);
/// The exit tracker.
pub const SCHED_PROCESS_EXIT: Prog = prog(
    names::PROG_SCHED_PROCESS_EXIT,
    super::section::SCHED_PROCESS_EXIT,
    Attach::TpBtf(names::TP_SCHED_PROCESS_EXIT),
);
/// The one raw-syscall program (denial tracker and the per-syscall checks).
pub const SYS_EXIT: Prog = prog(
    syscall_names::PROG_SYS_EXIT,
    super::section::SYS_EXIT,
    Attach::TpBtf(syscall_names::TP_SYS_EXIT),
);
/// The fallback exec-integrity check.
pub const TP_EXEC_CHECK: Prog = prog(
    fs_names::PROG_TP_EXEC_CHECK,
    super::exec_integrity::section::SCHED_PROCESS_EXEC,
    Attach::TpBtf(fs_names::TP_SCHED_PROCESS_EXEC),
);

/// What every run needs: the exec and exit trackers. The denial tracker, also on for
/// every run, is the `sys_exit` program's or [`denial_exits`]'s ([`SyscallExits`]).
pub const TRACKERS: [Prog; 2] = [SCHED_PROCESS_EXEC, SCHED_PROCESS_EXIT];

/// How the denial tracker and the `listen()` check see a syscall return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyscallExits {
    /// The one `tp_btf/sys_exit` program: every syscall of the host takes the slow
    /// path while it is attached.
    #[default]
    Tracepoint,
    /// `fexit` programs on the watched syscalls ([`denial_exits`], [`LISTEN_EXIT`]),
    /// where trampoline programs attach.
    FExit,
}

/// The denial tracker's `fexit` programs: one per watched syscall, and the seccomp
/// filter's.
pub fn denial_exits() -> Vec<Prog> {
    let mut v: Vec<Prog> = exits::DENIAL_EXITS
        .iter()
        .map(|e| prog(e.prog, e.section, Attach::FExit(e.function)))
        .collect();
    v.push(prog(
        exits::PROG_SECCOMP_EXIT,
        exits::SECCOMP_SECTION,
        Attach::FExit(exits::SECCOMP_FUNCTION),
    ));
    v
}

/// The `listen()` check's `fexit` program.
pub const LISTEN_EXIT: Prog = prog(
    exits::PROG_LISTEN_EXIT,
    exits::LISTEN_SECTION,
    Attach::FExit(exits::LISTEN_FUNCTION),
);

/// The BPF LSM inode-rule programs: `file_open`, then the path operations.
pub fn lsm_fs_rules() -> Vec<Prog> {
    let mut v = vec![prog(
        fs_names::PROG_LSM_FILE_OPEN,
        super::fsrules::section::LSM_FILE_OPEN,
        Attach::Lsm(fs_names::LSM_HOOK_FILE_OPEN),
    )];
    v.extend(
        fs_names::LSM_FS_OPS
            .iter()
            .map(|(name, hook)| prog(name, super::fsrules::section::LSM_FS_OPS, Attach::Lsm(hook))),
    );
    v
}

/// The BPF LSM exec-integrity programs.
pub const LSM_EXEC: [Prog; 3] = [
    prog(
        fs_names::PROG_LSM_BPRM_CHECK,
        super::exec_integrity::section::BPRM_CHECK,
        Attach::Lsm(fs_names::LSM_HOOK_BPRM_CHECK),
    ),
    prog(
        fs_names::PROG_LSM_MMAP_FILE,
        super::exec_integrity::section::MMAP_FILE,
        Attach::Lsm(fs_names::LSM_HOOK_MMAP_FILE),
    ),
    prog(
        fs_names::PROG_LSM_FILE_MPROTECT,
        super::exec_integrity::section::FILE_MPROTECT,
        Attach::Lsm(fs_names::LSM_HOOK_FILE_MPROTECT),
    ),
];

/// The BPF LSM unix-socket programs.
pub const LSM_UNIX: [Prog; 2] = [
    prog(
        unix_names::PROG_LSM_STREAM_CONNECT,
        super::unix::section::LSM_STREAM_CONNECT,
        Attach::Lsm(unix_names::LSM_HOOK_STREAM_CONNECT),
    ),
    prog(
        unix_names::PROG_LSM_MAY_SEND,
        super::unix::section::LSM_MAY_SEND,
        Attach::Lsm(unix_names::LSM_HOOK_MAY_SEND),
    ),
];

/// The network programs attached to a run's cgroup (recvmsg only with DNS redirection).
pub const NET: [Prog; 7] = [
    prog(
        net_names::PROG_CONNECT4,
        super::net::section::CONNECT4,
        Attach::SockAddr,
    ),
    prog(
        net_names::PROG_CONNECT6,
        super::net::section::CONNECT6,
        Attach::SockAddr,
    ),
    prog(
        net_names::PROG_SENDMSG4,
        super::net::section::SENDMSG4,
        Attach::SockAddr,
    ),
    prog(
        net_names::PROG_SENDMSG6,
        super::net::section::SENDMSG6,
        Attach::SockAddr,
    ),
    prog(
        net_names::PROG_BIND4,
        super::net::section::BIND4,
        Attach::SockAddr,
    ),
    prog(
        net_names::PROG_BIND6,
        super::net::section::BIND6,
        Attach::SockAddr,
    ),
    prog(
        net_names::PROG_SOCK_CREATE,
        super::net::section::SOCK_CREATE,
        Attach::Sock,
    ),
];

/// The recvmsg programs of DNS redirection.
pub const NET_RECVMSG: [Prog; 2] = [
    prog(
        net_names::PROG_RECVMSG4,
        super::net::section::RECVMSG4,
        Attach::SockAddr,
    ),
    prog(
        net_names::PROG_RECVMSG6,
        super::net::section::RECVMSG6,
        Attach::SockAddr,
    ),
];

/// The budget byte counters.
pub const BUDGET_SKB: [Prog; 2] = [
    prog(
        budget_names::PROG_BUDGET_SKB_EGRESS,
        "cgroup_skb/egress",
        Attach::Skb(SkbDirection::Egress),
    ),
    prog(
        budget_names::PROG_BUDGET_SKB_INGRESS,
        "cgroup_skb/ingress",
        Attach::Skb(SkbDirection::Ingress),
    ),
];

/// The tainted-run packet dropper.
pub const TAINT_EGRESS: Prog = prog(
    fs_names::PROG_TAINT_EGRESS,
    super::fsrules::section::TAINT_EGRESS,
    Attach::Skb(SkbDirection::Egress),
);

/// Every program a daemon may need, verified once at its start: the global programs of
/// the fallback paths (with `lsm`, the BPF LSM ones instead; with `exits`, the syscall
/// exits' `fexit` programs too) and the cgroup programs.
pub fn all_for(lsm: bool, exits: SyscallExits) -> Vec<Prog> {
    let mut v: Vec<Prog> = TRACKERS.to_vec();
    // Still needed by the hooks the exits do not replace (budgets, the audit mode's
    // observer, runs without agentd's seccomp filter).
    v.push(SYS_EXIT);
    if exits == SyscallExits::FExit {
        v.extend(denial_exits());
        v.push(LISTEN_EXIT);
    }
    v.extend(NET);
    v.extend(NET_RECVMSG);
    v.extend(BUDGET_SKB);
    v.push(TAINT_EGRESS);
    if lsm {
        v.extend(lsm_fs_rules());
        v.extend(LSM_EXEC);
        v.extend(LSM_UNIX);
    } else {
        v.push(TP_EXEC_CHECK);
    }
    v
}

/// A link this process holds: dropping it detaches the program unless it is pinned
/// (then removing the pin does).
#[derive(Debug)]
pub enum HeldLink {
    /// An aya link owned by this process.
    Owned(FdLink),
    /// An aya link pinned in bpffs.
    Pinned(PinnedLink),
    /// A link made with raw `BPF_LINK_CREATE` (the unix-socket programs aya cannot load).
    Raw(OwnedFd),
    /// A raw link pinned at the path.
    RawPinned(
        #[allow(
            dead_code,
            reason = "held: closing it would not detach a pinned link, but it keeps the link referenced until the pin goes"
        )]
        OwnedFd,
        PathBuf,
    ),
}

impl HeldLink {
    /// Pins the link at `path` (its directory must exist on bpffs).
    pub fn pin(self, path: &Path) -> Result<Self, BpfError> {
        let pin_error = |error: std::io::Error| BpfError::Pin {
            path: path.to_path_buf(),
            error,
        };
        match self {
            HeldLink::Owned(link) => link
                .pin(path)
                .map(HeldLink::Pinned)
                .map_err(|e| pin_error(std::io::Error::other(e.to_string()))),
            HeldLink::Raw(fd) => {
                super::sys::obj_pin(&fd, path).map_err(pin_error)?;
                Ok(HeldLink::RawPinned(fd, path.to_path_buf()))
            }
            pinned => Ok(pinned),
        }
    }

    /// Detaches the program: a pinned link's pin is removed, then the fd is closed.
    pub fn release(self) {
        match self {
            HeldLink::Owned(_) | HeldLink::Raw(_) => {}
            HeldLink::Pinned(link) => {
                if let Err(e) = link.unpin() {
                    tracing::warn!("unpin a bpf link: {e}");
                }
            }
            HeldLink::RawPinned(_, path) => {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!("unpin {}: {e}", path.display());
                }
            }
        }
    }
}

/// Detaches `links`, one after the other. Detaching a trampoline link (`fexit`, BPF
/// LSM) waits in the kernel for RCU-tasks grace periods (ftrace's shutdown of its direct
/// call, serialized by ftrace's own lock, so threads do not help): 7 global programs
/// took 0.71 s under TCG in the VM (measured). The time is logged.
fn detach_all(links: Vec<HeldLink>) {
    if links.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let n = links.len();
    links.into_iter().for_each(HeldLink::release);
    tracing::debug!("detached {n} global program(s) in {:?}", started.elapsed());
}

/// Loads `p` unless this runtime has already loaded it.
pub(super) fn ensure_loaded(ebpf: &mut Ebpf, btf: SharedBtf, p: &Prog) -> Result<(), BpfError> {
    let program = ebpf
        .program_mut(p.name)
        .ok_or(BpfError::MissingProgram { name: p.name })?;
    if program.fd().is_ok() {
        return Ok(());
    }
    let btf = match p.attach {
        Attach::TpBtf(_) | Attach::Lsm(_) | Attach::FExit(_) => Some(btf.get()?),
        _ => None,
    };
    load_program(program, p, btf.as_deref())
}

/// Loads every program of `progs` this runtime has not loaded yet, on several threads:
/// a load's verifier runs on the CPU of the thread that asked, so separate threads
/// verify at once (the `sys_exit` program alone takes ~0.2 s).
pub(super) fn load_all(ebpf: &mut Ebpf, btf: SharedBtf, progs: &[Prog]) -> Result<(), BpfError> {
    for p in progs {
        if ebpf.program(p.name).is_none() {
            return Err(BpfError::MissingProgram { name: p.name });
        }
    }
    let mut work: Vec<(usize, &Prog, &mut aya::programs::Program)> = ebpf
        .programs_mut()
        .filter(|(_, program)| program.fd().is_err())
        .filter_map(|(name, program)| {
            let at = progs.iter().position(|p| p.name == name)?;
            Some((at, &progs[at], program))
        })
        .collect();
    if work.is_empty() {
        return Ok(());
    }
    let btf = if work.iter().any(|(_, p, _)| {
        matches!(
            p.attach,
            Attach::TpBtf(_) | Attach::Lsm(_) | Attach::FExit(_)
        )
    }) {
        Some(btf.get()?)
    } else {
        None
    };
    // Taken from the end: the caller's order is the start order.
    work.sort_by_key(|(at, _, _)| std::cmp::Reverse(*at));
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(work.len());
    let queue = std::sync::Mutex::new(work);
    let btf = btf.as_deref();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| loop {
                    let next = queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .pop();
                    let Some((_, p, program)) = next else {
                        return Ok(());
                    };
                    load_program(program, p, btf)?;
                })
            })
            .collect();
        let mut result = Ok(());
        for w in workers {
            let r = w.join().unwrap_or(Err(BpfError::LoaderPanicked));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// Loads (verifies) `program`, which is `p`.
fn load_program(
    program: &mut aya::programs::Program,
    p: &Prog,
    btf: Option<&aya::Btf>,
) -> Result<(), BpfError> {
    use aya::programs::Program;
    let section = p.section;
    let load = |error| BpfError::Load { section, error };
    let btf = || {
        btf.ok_or(BpfError::Load {
            section,
            error: aya::programs::ProgramError::UnexpectedProgramType,
        })
    };
    match (p.attach, program) {
        (Attach::TpBtf(tracepoint), Program::BtfTracePoint(prog)) => {
            prog.load(tracepoint, btf()?).map_err(load)
        }
        (Attach::Lsm(hook), Program::Lsm(prog)) => prog.load(hook, btf()?).map_err(load),
        (Attach::FExit(function), Program::FExit(prog)) => {
            prog.load(function, btf()?).map_err(load)
        }
        (Attach::SockAddr, Program::CgroupSockAddr(prog)) => prog.load().map_err(load),
        (Attach::Sock, Program::CgroupSock(prog)) => prog.load().map_err(load),
        (Attach::Skb(_), Program::CgroupSkb(prog)) => prog.load().map_err(load),
        _ => Err(load(aya::programs::ProgramError::UnexpectedProgramType)),
    }
}

/// The programs a run of `plan` attaches on every path: the trackers, the denial
/// tracker's syscall exits, and its network programs. Loaded together before the run
/// starts ([`load_all`]); the rest load on first use.
pub fn for_plan(plan: &crate::plan::Plan, exits: SyscallExits) -> Vec<Prog> {
    let mut v: Vec<Prog> = TRACKERS.to_vec();
    match exits {
        SyscallExits::Tracepoint => v.push(SYS_EXIT),
        SyscallExits::FExit => v.extend(denial_exits()),
    }
    if let Some(net) = &plan.net {
        v.extend(NET);
        if net.resolver {
            v.extend(NET_RECVMSG);
        }
    }
    v
}

/// Attaches the global program `p` (loading it first if needed).
fn attach_global(ebpf: &mut Ebpf, btf: SharedBtf, p: &Prog) -> Result<FdLink, BpfError> {
    ensure_loaded(ebpf, btf, p)?;
    // What a host pays for: `cargo xtask vm-bench` lists these lines.
    tracing::debug!("attach global program {} ({})", p.name, p.section);
    let section = p.section;
    let attach = |error| BpfError::Attach { section, error };
    match p.attach {
        Attach::TpBtf(_) => {
            let prog: &mut BtfTracePoint = program(ebpf, p.name, section)?;
            let id = prog.attach().map_err(attach)?;
            Ok(prog.take_link(id).map_err(attach)?.into())
        }
        Attach::Lsm(_) => {
            let prog: &mut Lsm = program(ebpf, p.name, section)?;
            let id = prog.attach().map_err(attach)?;
            Ok(prog.take_link(id).map_err(attach)?.into())
        }
        Attach::FExit(_) => {
            let prog: &mut FExit = program(ebpf, p.name, section)?;
            let id = prog.attach().map_err(attach)?;
            Ok(prog.take_link(id).map_err(attach)?.into())
        }
        _ => Err(BpfError::NotGlobal { section }),
    }
}

/// Attaches the cgroup program `p` to the v2 cgroup directory `dir`.
pub(super) fn attach_cgroup(
    ebpf: &mut Ebpf,
    btf: SharedBtf,
    p: &Prog,
    dir: &Path,
    cgroup: &File,
) -> Result<HeldLink, BpfError> {
    ensure_loaded(ebpf, btf, p)?;
    let section = p.section;
    let attach = |error| BpfError::AttachCgroup {
        section,
        cgroup: dir.to_path_buf(),
        error,
    };
    let fd_link = |e: aya::programs::links::LinkError| BpfError::Link {
        section,
        reason: e.to_string(),
    };
    let link = match p.attach {
        Attach::SockAddr => {
            let prog: &mut CgroupSockAddr = program(ebpf, p.name, section)?;
            let id = prog
                .attach(cgroup, CgroupAttachMode::Single)
                .map_err(attach)?;
            FdLink::try_from(prog.take_link(id).map_err(attach)?).map_err(fd_link)?
        }
        Attach::Sock => {
            let prog: &mut CgroupSock = program(ebpf, p.name, section)?;
            let id = prog
                .attach(cgroup, CgroupAttachMode::Single)
                .map_err(attach)?;
            FdLink::try_from(prog.take_link(id).map_err(attach)?).map_err(fd_link)?
        }
        Attach::Skb(direction) => {
            let prog: &mut CgroupSkb = program(ebpf, p.name, section)?;
            let id = prog
                .attach(cgroup, direction.aya(), CgroupAttachMode::Single)
                .map_err(attach)?;
            FdLink::try_from(prog.take_link(id).map_err(attach)?).map_err(fd_link)?
        }
        Attach::TpBtf(_) | Attach::Lsm(_) | Attach::FExit(_) => {
            return Err(BpfError::NotCgroup { section })
        }
    };
    Ok(HeldLink::Owned(link))
}

/// Global programs attached on behalf of runs, with the number of runs that need each.
///
/// A program no run holds any more stays attached for `linger` (the daemon's
/// `programs_linger_ms`), so that a run launched right after another does not pay for a
/// detach and a fresh attach: attaching a tracepoint program after its last one went
/// waits for an RCU grace period and patches the kernel's text on every CPU, which made
/// up most of a daemon launch (7–8 ms of 17, measured). While it lingers the program runs
/// for every process it hooks and returns at its first map lookup; [`Globals::reap`]
/// detaches it once `linger` has passed.
///
/// The reaper detaches on a thread of its own ([`Detaching`]): detaching trampoline
/// links waits for the kernel (see [`detach_all`]), and the caller holds the runtime's
/// lock, which every launch needs.
#[derive(Debug, Default)]
pub struct Globals {
    attached: HashMap<&'static str, Held>,
    linger: std::time::Duration,
    detaching: Option<Detaching>,
}

/// Programs [`Globals::reap`] is detaching on a thread. A run that needs one of them
/// again waits for that detach first: the kernel refuses a second link of a program on
/// one trampoline (EBUSY), and two on a tracepoint would report each event twice.
#[derive(Debug)]
struct Detaching {
    names: Vec<&'static str>,
    thread: std::thread::JoinHandle<()>,
}

impl Detaching {
    fn wait(self) {
        if self.thread.join().is_err() {
            tracing::warn!("the thread detaching {} panicked", self.names.join(", "));
        }
    }
}

#[derive(Debug)]
struct Held {
    runs: u32,
    link: HeldLink,
    /// When its last run let go (`runs == 0`).
    idle_since: Option<std::time::Instant>,
}

impl Globals {
    /// How long a program no run holds stays attached (zero: it goes with its last run).
    pub fn linger(&self) -> std::time::Duration {
        self.linger
    }

    pub fn set_linger(&mut self, linger: std::time::Duration) {
        self.linger = linger;
    }

    /// Takes a reference on `p` for one run, attaching it if no run had one. With
    /// `pin_dir`, a new link is pinned there (and an existing pin is adopted).
    pub(super) fn acquire(
        &mut self,
        ebpf: &mut Ebpf,
        btf: SharedBtf,
        p: &Prog,
        pin_dir: Option<&Path>,
    ) -> Result<(), BpfError> {
        if self
            .detaching
            .as_ref()
            .is_some_and(|d| d.names.contains(&p.name))
        {
            if let Some(detaching) = self.detaching.take() {
                detaching.wait();
            }
        }
        if let Some(held) = self.attached.get_mut(p.name) {
            held.runs += 1;
            held.idle_since = None;
            return Ok(());
        }
        let link = match pin_dir.map(|d| d.join(p.name)) {
            Some(path) if path.exists() => {
                // Left attached by an earlier agentd daemon: hold that link, never
                // attach a second copy (events would be reported twice).
                let pinned = PinnedLink::from_pin(&path).map_err(|e| BpfError::Pin {
                    path: path.clone(),
                    error: std::io::Error::other(e.to_string()),
                })?;
                HeldLink::Pinned(pinned)
            }
            Some(path) => HeldLink::Owned(attach_global(ebpf, btf, p)?).pin(&path)?,
            None => HeldLink::Owned(attach_global(ebpf, btf, p)?),
        };
        self.attached.insert(
            p.name,
            Held {
                runs: 1,
                link,
                idle_since: None,
            },
        );
        Ok(())
    }

    /// Drops one run's reference on each program named in `names`. The last one
    /// detaches it, or with a linger, starts its idle time.
    pub fn release(&mut self, names: &[&'static str]) {
        let mut detach = Vec::new();
        for name in names {
            let Some(held) = self.attached.get_mut(name) else {
                continue;
            };
            held.runs = held.runs.saturating_sub(1);
            if held.runs > 0 {
                continue;
            }
            if self.linger.is_zero() {
                if let Some(held) = self.attached.remove(name) {
                    detach.push(held.link);
                }
            } else {
                held.idle_since = Some(std::time::Instant::now());
            }
        }
        detach_all(detach);
    }

    /// Detaches the programs no run has held for `linger` by `now` (with `all_idle`,
    /// every one no run holds: the daemon's stop). Returns their names.
    pub fn reap(&mut self, now: std::time::Instant, all_idle: bool) -> Vec<&'static str> {
        match self.detaching.take() {
            Some(d) if d.thread.is_finished() || all_idle => d.wait(),
            // One batch at a time: the next waits for this one.
            Some(d) => {
                self.detaching = Some(d);
                return Vec::new();
            }
            None => {}
        }
        let linger = self.linger;
        let expired: Vec<&'static str> = self
            .attached
            .iter()
            .filter(|(_, h)| {
                h.runs == 0
                    && h.idle_since
                        .is_none_or(|t| all_idle || now.saturating_duration_since(t) >= linger)
            })
            .map(|(name, _)| *name)
            .collect();
        let links: Vec<HeldLink> = expired
            .iter()
            .filter_map(|name| self.attached.remove(name))
            .map(|held| held.link)
            .collect();
        if all_idle || links.is_empty() {
            // The daemon's stop: nothing may be left attached when it returns.
            detach_all(links);
            return expired;
        }
        let (tx, rx) = std::sync::mpsc::channel::<Vec<HeldLink>>();
        let thread = std::thread::Builder::new()
            .name("agentd-detach".into())
            .spawn(move || {
                if let Ok(links) = rx.recv() {
                    detach_all(links);
                }
            });
        match thread {
            Ok(thread) => {
                if let Err(std::sync::mpsc::SendError(links)) = tx.send(links) {
                    detach_all(links);
                }
                self.detaching = Some(Detaching {
                    names: expired.clone(),
                    thread,
                });
            }
            // No thread to be had: detached here, holding the caller's lock.
            Err(_) => detach_all(links),
        }
        expired
    }

    /// Waits until the programs [`Globals::reap`] handed to its thread are detached.
    #[cfg(test)]
    pub fn wait_detached(&mut self) {
        if let Some(detaching) = self.detaching.take() {
            detaching.wait();
        }
    }

    /// Global programs attached now, with the number of runs holding each.
    pub fn attached(&self) -> Vec<(&'static str, u32)> {
        let mut v: Vec<_> = self
            .attached
            .iter()
            .map(|(name, held)| (*name, held.runs))
            .collect();
        v.sort();
        v
    }

    #[cfg(test)]
    /// Forgets every link without detaching pinned ones (the daemon's shutdown: what is
    /// pinned stays attached for the next daemon).
    pub fn keep_pinned(&mut self) {
        self.attached.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The syscall exits the loader attaches are `fexit` programs of the object, one per
    /// kernel function: the eBPF side's list and `DENIAL_EXITS` agree.
    #[test]
    fn every_syscall_exit_is_an_fexit_program_of_the_object() {
        if super::super::object().is_empty() {
            eprintln!("SKIP: built without the eBPF object (AYA_BUILD_SKIP=1)");
            return;
        }
        let obj = aya_obj::Object::parse(super::super::object())
            .unwrap_or_else(|e| panic!("parse the object: {e}"));
        let mut exits = denial_exits();
        exits.push(LISTEN_EXIT);
        let mut functions: Vec<&str> = Vec::new();
        for p in &exits {
            let program = obj
                .programs
                .get(p.name)
                .unwrap_or_else(|| panic!("{} missing from the object", p.name));
            assert!(
                matches!(
                    program.section,
                    aya_obj::ProgramSection::FExit { sleepable: false }
                ),
                "{}: {:?}",
                p.name,
                program.section
            );
            let Attach::FExit(function) = p.attach else {
                panic!("{p:?}");
            };
            assert_eq!(p.section, format!("fexit/{function}"));
            functions.push(function);
        }
        let n = functions.len();
        functions.sort_unstable();
        functions.dedup();
        assert_eq!(functions.len(), n, "a kernel function twice: {functions:?}");
        // The fallback's programs stay what they were; the exits come only with FExit.
        assert!(!all_for(false, SyscallExits::Tracepoint)
            .iter()
            .any(|p| matches!(p.attach, Attach::FExit(_))));
        assert!(all_for(true, SyscallExits::FExit).contains(&LISTEN_EXIT));
    }
}
