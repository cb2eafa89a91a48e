//! The phases of a run: `run_start`, set-up, launch, supervision, teardown, `run_end`.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use tokio::sync::mpsc;

use crate::audit::event::{CommandDenied, Pause, RunEnded, RunFailed, RunStart, Stop};
use crate::audit::judge::Judge;
use crate::audit::Decision;
use crate::budgets;
use crate::launch::{self, CStrArray, ChildSetup, SpawnOutcome, Stage};
use crate::layers::procfs::{PreparedProc, PrivateProc};
use crate::layers::{caps, landlock, name, seccomp};
use crate::net::dns::DnsDecision;

use super::records::{errno_name, signal_name, wait_status, RunAudit, Say};
use super::resources::RunResources;
use super::spec::{Control, PreparedRun, RunHooks, RunSpec, StartedRun};
use super::timing::PhaseTimer;
use super::{
    setup_err, Host, SetupError, EXIT_EXEC_DENIED, EXIT_KILLED, EXIT_NOT_FOUND, EXIT_SETUP_FAILED,
};

/// How the command ended, as agentd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    Signaled(i32),
}

impl Ending {
    fn exit_code(self) -> u8 {
        match self {
            Ending::Exited(c) => (c & 0xff) as u8,
            Ending::Signaled(s) => (128 + s).clamp(0, 255) as u8,
        }
    }
}

/// The end of a run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub id: String,
    /// The exit status agentd (or the client) exits with.
    pub code: u8,
    /// `None` when the command never ran.
    pub ending: Option<Ending>,
    pub killed_by: Option<&'static str>,
    /// Why the run could not be set up, when it could not.
    pub setup_error: Option<String>,
}

pub(super) async fn run(
    host: Arc<Host>,
    mut spec: RunSpec,
    mut controls: mpsc::Receiver<Control>,
    mut hooks: Box<dyn RunHooks>,
) -> RunOutcome {
    let mut timer = PhaseTimer::start();
    // The one place both the CLI's and the daemon's runs pass: `env` applies to each.
    spec.env = spec.policy.env.apply(&spec.env);
    let launch_cwd = spec
        .cwd
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    let mut audit = match open_audit(&host, &spec, launch_cwd) {
        Ok(a) => a,
        Err(outcome) => return outcome,
    };
    timer.mark("audit");
    record_start(&host, &spec, &mut audit);
    timer.mark("run_start");
    if audit.failed {
        return RunOutcome {
            id: spec.id.clone(),
            code: EXIT_SETUP_FAILED,
            ending: None,
            killed_by: None,
            setup_error: Some("audit: run_start could not be written".into()),
        };
    }
    let Some(program) = spec.program.clone() else {
        audit.say.line(&format!(
            "exec: {}: command not found",
            spec.argv
                .first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default()
        ));
        let end = RunFailed {
            exit_code: EXIT_NOT_FOUND,
            error: "command not found".into(),
            failed_layer: None,
            errno: None,
        };
        audit.record(name::AGENTD, None, end.into());
        return RunOutcome {
            id: spec.id.clone(),
            code: EXIT_NOT_FOUND,
            ending: None,
            killed_by: None,
            setup_error: Some("exec: command not found".into()),
        };
    };
    match launch_and_wait(
        &host,
        &spec,
        &program,
        &mut audit,
        &mut controls,
        hooks.as_mut(),
        timer,
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(e) => {
            audit.say.line(&e.to_string());
            let end = run_failed(EXIT_SETUP_FAILED, e.to_string(), &e);
            audit.record(name::AGENTD, None, end.into());
            setup_failed(&spec.id, &e)
        }
    }
}

/// The caller's stderr when the spec carries it (the daemon), else agentd's own.
fn say_for(spec: &RunSpec) -> Say {
    match spec.stdio.as_ref().map(|fds| fds[2].try_clone()) {
        Some(Ok(fd)) => Say::Fd(std::fs::File::from(fd)),
        _ => Say::Stderr,
    }
}

/// The run's audit, with the directory its relative paths were given in; `Err` is the
/// outcome of a run whose chain cannot be written (it never starts).
fn open_audit(host: &Host, spec: &RunSpec, launch_cwd: PathBuf) -> Result<RunAudit, RunOutcome> {
    let handle = host
        .audit(&spec.id)
        .map_err(|e| setup_failed(&spec.id, &e))?;
    let mut audit = RunAudit::new(handle, launch_cwd, say_for(spec));
    // (A plan that cannot be built stops the launch itself, at the mounts layer.)
    audit.protect = spec.protect_plan().unwrap_or_default();
    Ok(audit)
}

/// The `run_failed` record of a set-up error `e`, with the exit status the run gets.
fn run_failed(exit_code: u8, error: String, e: &SetupError) -> RunFailed {
    RunFailed {
        exit_code,
        error,
        failed_layer: Some(e.layer.into()),
        errno: None,
    }
}

/// Supervises a run that is already going (re-adopted or attached) to its end.
async fn finish_going(
    host: &Arc<Host>,
    spec: &RunSpec,
    res: RunResources,
    audit: &mut RunAudit,
    controls: &mut mpsc::Receiver<Control>,
    hooks: &mut dyn RunHooks,
    waiter: Waiter,
) -> RunOutcome {
    match finish(host, spec, res, audit, controls, hooks, waiter).await {
        Ok(o) => o,
        Err(e) => setup_failed(&spec.id, &e),
    }
}

fn setup_failed(id: &str, e: &SetupError) -> RunOutcome {
    RunOutcome {
        id: id.to_owned(),
        code: EXIT_SETUP_FAILED,
        ending: None,
        killed_by: None,
        setup_error: Some(e.to_string()),
    }
}

fn record_start(host: &Host, spec: &RunSpec, audit: &mut RunAudit) {
    let p = &spec.policy;
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    let (own_uid, own_gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let (uid, gid, user) = match &spec.user {
        Some(u) => (u.uid, u.gid, u.name.clone()),
        None => (own_uid, own_gid, None),
    };
    let start = RunStart {
        policy: p.origin.clone(),
        policy_name: p.name.clone(),
        policy_hash: p.hash.clone(),
        mode: format!("{:?}", p.mode).to_lowercase(),
        argv: spec
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        program: spec.program.as_ref().map(|p| p.display().to_string()),
        workspace: spec.workspace.display().to_string(),
        cwd: audit.launch_cwd.display().to_string(),
        agentd_pid: std::process::id(),
        kernel: host.probe.kernel.clone(),
        plan: spec.plan.summary_json(),
        signed: host.signed,
        signing_key: host.signing_key.clone(),
        uid,
        gid,
        user,
        groups: spec.user.as_ref().map(|u| u.groups.clone()),
        env: crate::policy::env::names(&spec.env),
        extra: spec.start_fields.clone(),
    };
    audit.record(name::AGENTD, None, start.into());
}

/// Everything the child uses, prepared in the parent (the pre-exec code allocates
/// nothing).
struct ChildParts {
    program: CString,
    argv: CStrArray,
    envp: CStrArray,
    cwd: Option<CString>,
    caps: Option<caps::PreparedCaps>,
    user: Option<super::user::PreparedUser>,
    landlock: Option<landlock::PreparedLandlock>,
    seccomp: Option<seccomp::PreparedSeccomp>,
    protect: Option<crate::layers::protect::PreparedProtect>,
    /// Kept open until the child is forked: it moves this mount over its /proc.
    _private_proc: Option<PrivateProc>,
    proc: Option<PreparedProc>,
}

fn prepare_child(spec: &RunSpec, program: &Path) -> Result<ChildParts, SetupError> {
    let caps = if spec.plan.caps {
        Some(caps::prepare().map_err(|e| setup_err(name::CAPS, e))?)
    } else {
        None
    };
    // The private /proc comes first: landlock's rules under /proc are opened in it.
    let private_proc = if spec.plan.private_proc {
        Some(PrivateProc::create().map_err(|e| setup_err(name::MOUNTS, e))?)
    } else {
        None
    };
    let landlock = match &spec.plan.landlock {
        Some(req) => {
            let req = match &private_proc {
                Some(proc) => std::borrow::Cow::Owned(proc.landlock_request(req)),
                None => std::borrow::Cow::Borrowed(req),
            };
            Some(landlock::prepare(&req).map_err(|e| setup_err(name::LANDLOCK, e))?)
        }
        None => None,
    };
    let proc = private_proc.as_ref().map(PrivateProc::prepare);
    let seccomp = if spec.plan.seccomp {
        Some(seccomp::prepare().map_err(|e| setup_err(name::SECCOMP, e))?)
    } else {
        None
    };
    let protect = spec
        .protect_plan()
        .map_err(|e| setup_err(name::MOUNTS, e))?;
    let protect = if protect.is_empty() {
        None
    } else {
        Some(protect.prepare().map_err(|e| setup_err(name::MOUNTS, e))?)
    };
    let program = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| setup_err(name::EXEC, "command path contains a NUL byte"))?;
    let argv = cstrings(spec.argv.iter().map(|a| a.as_bytes().to_vec()))
        .map_err(|_| setup_err(name::EXEC, "an argument contains a NUL byte"))?;
    let envp = cstrings(spec.env.iter().map(|v| v.as_bytes().to_vec()))
        .map_err(|_| setup_err(name::EXEC, "an environment variable contains a NUL byte"))?;
    let cwd = match &spec.cwd {
        Some(d) => Some(
            CString::new(d.as_os_str().as_bytes())
                .map_err(|_| setup_err(name::EXEC, "the working directory contains a NUL byte"))?,
        ),
        None => None,
    };
    Ok(ChildParts {
        program,
        argv,
        envp,
        cwd,
        caps,
        user: spec.user.as_ref().map(super::user::UserSpec::prepare),
        landlock,
        seccomp,
        protect,
        _private_proc: private_proc,
        proc,
    })
}

fn cstrings(items: impl Iterator<Item = Vec<u8>>) -> Result<CStrArray, std::ffi::NulError> {
    let v: Result<Vec<CString>, _> = items.map(CString::new).collect();
    Ok(CStrArray::new(v?))
}

async fn launch_and_wait(
    host: &Arc<Host>,
    spec: &RunSpec,
    program: &Path,
    audit: &mut RunAudit,
    controls: &mut mpsc::Receiver<Control>,
    hooks: &mut dyn RunHooks,
    mut timer: PhaseTimer,
) -> Result<RunOutcome, SetupError> {
    // The programs every run of this plan attaches, verified together (a no-op where
    // the daemon loaded everything at its start).
    let unix_cgroup = spec.plan.unix == Some(crate::layers::bpf::UnixPath::Cgroup);
    {
        let mut bpf = host.bpf();
        let progs = crate::layers::bpf::progs::for_plan(&spec.plan, bpf.syscall_exits());
        bpf.preload(&progs, unix_cgroup)
            .map_err(|e| setup_err(name::BPF, e))?;
    }
    timer.mark("preload");
    let mut res = RunResources::create(host, spec, audit)?;
    timer.mark("cgroups");
    let outcome = launch(spec, program, &mut res, audit, hooks, &mut timer).await?;
    tracing::debug!("launch of {}: {}", spec.id, timer.summary());
    let pid = match outcome {
        SpawnOutcome::Running(pid) => pid,
        SpawnOutcome::Failed { stage, errno } => {
            let code = report_spawn_failure(spec, program, stage, errno, audit);
            let mut kill = None;
            res.teardown(spec, audit, &mut kill).await;
            return Ok(RunOutcome {
                id: spec.id.clone(),
                code,
                ending: None,
                killed_by: None,
                setup_error: Some(format!("{}: {}", stage.layer(), errno_name(errno))),
            });
        }
    };
    hooks.started(&StartedRun {
        id: spec.id.clone(),
        pid: pid.as_raw() as u32,
    });
    res.budgets.start();
    let waiter = Waiter::child(pid)?;
    finish(host, spec, res, audit, controls, hooks, waiter).await
}

/// Takes over a run an earlier daemon started: its resources are re-opened, its budgets
/// continue where they were, and it is supervised to its end like any other.
pub(super) async fn adopt(
    host: Arc<Host>,
    spec: RunSpec,
    adoption: Adoption,
    mut controls: mpsc::Receiver<Control>,
    mut hooks: Box<dyn RunHooks>,
) -> RunOutcome {
    let mut audit = match open_audit(&host, &spec, spec.cwd.clone().unwrap_or_default()) {
        Ok(a) => a,
        Err(outcome) => return outcome,
    };
    let res = match RunResources::adopt(&host, &spec, &adoption, &mut audit).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(run = %spec.id, "re-adopting the run: {e}");
            // What was re-opened went again on the way out: the run's processes are
            // killed (fail closed), so it ends as a kill.
            let error = format!("re-adoption failed: {e}; the run was killed");
            let end = run_failed(EXIT_KILLED, error, &e);
            audit.record(name::AGENTD, Some(Decision::Kill), end.into());
            return setup_failed(&spec.id, &e);
        }
    };
    audit.attached = res.cgroups.as_ref().is_some_and(|c| c.is_foreign());
    let waiter = match res.cgroups.as_ref().filter(|c| c.is_foreign()) {
        Some(c) => Waiter::Attached {
            pid: Pid::from_raw(adoption.pid as i32),
            cgroup: c.identity().path.clone(),
        },
        None => Waiter::adopted(adoption.pid),
    };
    let hooks = hooks.as_mut();
    finish_going(&host, &spec, res, &mut audit, &mut controls, hooks, waiter).await
}

/// Confines an existing workload (`agentd attach`): `cgroups` is its existing v2
/// cgroup, `pid` its main process (signals go there). Supervised until the cgroup
/// empties or `Control::Detach`; the workload is never killed on the way out.
pub(super) async fn attach(
    host: Arc<Host>,
    spec: RunSpec,
    cgroups: crate::layers::cgroup::RunCgroups,
    attach: crate::audit::event::Attach,
    mut controls: mpsc::Receiver<Control>,
    mut hooks: Box<dyn RunHooks>,
) -> RunOutcome {
    let mut audit = match open_audit(&host, &spec, spec.cwd.clone().unwrap_or_default()) {
        Ok(a) => a,
        Err(outcome) => return outcome,
    };
    audit.attached = true;
    record_start(&host, &spec, &mut audit);
    let pid = cgroups.pids().first().copied().unwrap_or(0);
    let path = cgroups.identity().path.clone();
    let res = match RunResources::prepare_attached(&host, &spec, cgroups, &mut audit).await {
        Ok(r) => r,
        Err(e) => {
            let end = run_failed(EXIT_SETUP_FAILED, e.to_string(), &e);
            audit.record(name::AGENTD, None, end.into());
            return setup_failed(&spec.id, &e);
        }
    };
    audit.record(name::AGENTD, None, attach.into());
    let prepared = PreparedRun {
        cgroup_paths: res
            .cgroups
            .as_ref()
            .map(|c| c.describe_state())
            .unwrap_or_default(),
        bpf: res.bpf.as_ref().map(|b| b.state()).unwrap_or_default(),
    };
    if let Err(e) = hooks
        .before_start(&prepared)
        .and_then(|()| hooks.forked(pid))
    {
        let e = SetupError {
            layer: name::AGENTD,
            source: e,
        };
        drop(res);
        return setup_failed(&spec.id, &e);
    }
    hooks.started(&StartedRun {
        id: spec.id.clone(),
        pid,
    });
    let waiter = Waiter::Attached {
        pid: Pid::from_raw(pid as i32),
        cgroup: path,
    };
    let hooks = hooks.as_mut();
    finish_going(&host, &spec, res, &mut audit, &mut controls, hooks, waiter).await
}

/// What a re-adopted run was, from the state an earlier daemon kept.
#[derive(Debug, Clone)]
pub struct Adoption {
    /// The command's pid.
    pub pid: u32,
    pub bpf: crate::layers::bpf::RunBpfState,
    pub cgroups: Vec<(String, std::path::PathBuf)>,
    pub budgets: crate::budgets::Progress,
    /// Time since the command started (the daemon's downtime included).
    pub elapsed: Duration,
}

/// Supervises a launched or adopted run to its end, tears it down and writes `run_end`.
async fn finish(
    host: &Arc<Host>,
    spec: &RunSpec,
    mut res: RunResources,
    audit: &mut RunAudit,
    controls: &mut mpsc::Receiver<Control>,
    hooks: &mut dyn RunHooks,
    waiter: Waiter,
) -> Result<RunOutcome, SetupError> {
    let attached = matches!(waiter, Waiter::Attached { .. });
    let (ending, killed_by) =
        supervise(host, spec, waiter, &mut res, audit, controls, hooks).await?;
    let mut timer = PhaseTimer::start();
    let mut budget_kill = None;
    let report = res.teardown(spec, audit, &mut budget_kill).await;
    timer.mark("teardown");
    let killed_by = killed_by.or(budget_kill);
    // Processes whose exit record did not come (killed at teardown, lost) end here.
    audit.flush_repeats(None);
    let code = match (killed_by, ending) {
        (Some(_), _) => EXIT_KILLED,
        // An attached workload is not ours to wait for: its run ends with its cgroup
        // emptying or a detach, which is no failure.
        (None, _) if attached => 0,
        (None, Some(e)) => e.exit_code(),
        (None, None) => EXIT_STATUS_LOST,
    };
    let (exit_code, signal) = match ending {
        Some(Ending::Exited(c)) => (Some(c), None),
        Some(Ending::Signaled(s)) => (None, Some(signal_name(s))),
        None => (None, None),
    };
    let end = RunEnded {
        exit_code,
        signal,
        status: code,
        killed_by: killed_by.map(str::to_owned),
        stragglers_killed: report.stragglers_killed,
        cgroups: report.cgroups,
        cgroups_removed: report.cgroups_removed,
        elapsed_ms: res.budgets.elapsed().as_millis() as u64,
        budgets: res.budgets.figures(),
        tainted: report.tainted,
        egress_packets_dropped_after_taint: report.egress_dropped,
        denials: audit.denials,
        status_unknown: (ending.is_none() && !attached)
            .then(|| "the command's exit was not seen: the kernel's ring buffer lost it".into()),
    };
    audit.record(name::AGENTD, None, end.into());
    timer.mark("run_end");
    if !res.budgets.is_empty() {
        audit.say.raw(&res.budgets.table());
    }
    timer.mark("say");
    tracing::debug!("end of {}: {}", spec.id, timer.summary());
    if let Some(e) = report.cgroup_error {
        audit.say.line(&format!("cgroup: {e}"));
    }
    let code = if audit.failed {
        EXIT_SETUP_FAILED
    } else {
        code
    };
    Ok(RunOutcome {
        id: spec.id.clone(),
        code,
        ending,
        killed_by,
        setup_error: None,
    })
}

/// How the end of the command is seen.
enum Waiter {
    /// agentd's own child: its pidfd and `waitpid`.
    Child {
        pid: Pid,
        pidfd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    },
    /// A process an earlier daemon started (not our child): its pidfd says when it is
    /// gone, and its exit record in the ring says how; `None` when it was already gone.
    Adopted {
        pid: Pid,
        pidfd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    },
    /// An attached workload: gone when its cgroup holds no process.
    Attached {
        pid: Pid,
        cgroup: std::path::PathBuf,
    },
}

/// How often an attached run's cgroup is checked for emptiness.
const ATTACHED_POLL: Duration = Duration::from_millis(250);

impl Waiter {
    fn child(pid: Pid) -> Result<Self, SetupError> {
        let pidfd = launch::pidfd_open(pid)
            .map_err(|e| setup_err(name::AGENTD, format!("pidfd_open: {e}")))?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, so it stays open and
        // refers to the same pidfd for the AsyncFd's whole lifetime.
        let pidfd = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
            .map_err(|e| setup_err(name::AGENTD, format!("pidfd: {e}")))?;
        Ok(Waiter::Child { pid, pidfd })
    }

    fn adopted(pid: u32) -> Self {
        let pid = Pid::from_raw(pid as i32);
        let pidfd = launch::pidfd_open(pid).ok().and_then(|fd| {
            // SAFETY: as in `child`: the AsyncFd owns the pidfd for its lifetime.
            unsafe { tokio::io::unix::AsyncFd::register(fd) }.ok()
        });
        Waiter::Adopted { pid, pidfd }
    }

    fn pid(&self) -> Pid {
        match self {
            Waiter::Child { pid, .. }
            | Waiter::Adopted { pid, .. }
            | Waiter::Attached { pid, .. } => *pid,
        }
    }

    /// Waits until the command is gone; for a child, returns how it ended.
    async fn gone(&self) -> Result<Option<Ending>, SetupError> {
        let pidfd = match self {
            Waiter::Child { pidfd, .. } => pidfd,
            Waiter::Adopted { pidfd: Some(p), .. } => p,
            Waiter::Adopted { pidfd: None, .. } => return Ok(None),
            Waiter::Attached { cgroup, .. } => {
                // cgroup.events would say "populated 0" through inotify; a poll is
                // enough for a run that lasts as long as a container.
                let procs = cgroup.join("cgroup.procs");
                loop {
                    match std::fs::read_to_string(&procs) {
                        Ok(s) if !s.trim().is_empty() => {}
                        _ => return Ok(None),
                    }
                    tokio::time::sleep(ATTACHED_POLL).await;
                }
            }
        };
        loop {
            if let Ok(mut guard) = pidfd.readable().await {
                guard.clear_ready();
            }
            let Waiter::Child { pid, .. } = self else {
                return Ok(None);
            };
            match nix::sys::wait::waitpid(*pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, c)) => {
                    super::forget_leader(*pid);
                    return Ok(Some(Ending::Exited(c)));
                }
                Ok(WaitStatus::Signaled(_, s, _)) => {
                    super::forget_leader(*pid);
                    return Ok(Some(Ending::Signaled(s as i32)));
                }
                Ok(_) => continue,
                Err(e) => return Err(setup_err(name::AGENTD, format!("waitpid: {e}"))),
            }
        }
    }
}

/// The exit status when the command's end was not seen (a re-adopted run whose exit
/// record the ring lost while the daemon was down).
pub const EXIT_STATUS_LOST: u8 = 255;

/// Prepares the child's parts, tells the hooks, arms the guard and forks. Synchronous:
/// the child's parts hold raw pointers that must not live across an await.
/// Forks the child into the run's cgroups, confines the run (eBPF slot, resolver,
/// rules) while the child sets itself up, and lets it exec once the run is ready.
async fn launch(
    spec: &RunSpec,
    program: &Path,
    res: &mut RunResources,
    audit: &mut RunAudit,
    hooks: &mut dyn RunHooks,
    timer: &mut PhaseTimer,
) -> Result<SpawnOutcome, SetupError> {
    let cgroups = res.cgroups()?;
    let v2_leaf = cgroups.identity().path.clone();
    let cgroup_paths = cgroups
        .leaves()
        .map(|l| (l.hierarchy.clone(), l.path.clone()))
        .collect();
    // From here on, an error drops `child`: it exits 125 before exec and is reaped.
    let child = fork_child(spec, program, cgroups)?;
    timer.mark("fork");
    res.confine(spec, audit, timer).await?;
    let prepared = PreparedRun {
        cgroup_paths,
        bpf: res
            .bpf
            .as_ref()
            .map(|b| b.state())
            .ok_or_else(|| setup_err(name::BPF, "the run has no eBPF slot"))?,
    };
    hooks.before_start(&prepared).map_err(|e| SetupError {
        layer: name::AGENTD,
        source: e,
    })?;
    timer.mark("state");
    if spec.tied_to_agentd {
        // From here on, agentd dying (even by SIGKILL) kills the whole run. (Before,
        // the child dies with agentd by PR_SET_PDEATHSIG, before it execs.)
        res.guard = Some(
            crate::run_guard::RunGuard::arm(&v2_leaf)
                .map_err(|e| setup_err(name::AGENTD, format!("run guard: {e}")))?,
        );
    }
    hooks
        .forked(child.pid().as_raw() as u32)
        .map_err(|e| SetupError {
            layer: name::AGENTD,
            source: e,
        })?;
    let started = child.start().map_err(|e| setup_err(name::AGENTD, e));
    timer.mark("start");
    started
}

/// Forks the run's child (see [`launch::Paused`]). What it needs is built here, before
/// fork (the child may not allocate), and dropped in the parent once it is forked.
fn fork_child(
    spec: &RunSpec,
    program: &Path,
    cgroups: &crate::layers::cgroup::RunCgroups,
) -> Result<launch::Paused, SetupError> {
    let parts = prepare_child(spec, program)?;
    let procs_fds = cgroups.procs_fds();
    let stdio = spec
        .stdio
        .as_ref()
        .map(|fds| [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()]);
    let setup = ChildSetup {
        program: &parts.program,
        argv: parts.argv.as_slice(),
        envp: parts.envp.as_slice(),
        cgroup_procs_fds: &procs_fds,
        caps: parts.caps.as_ref(),
        user: parts.user.as_ref(),
        cwd: parts.cwd.as_deref(),
        umask: spec.umask.map(|m| m as libc::mode_t),
        landlock: parts.landlock.as_ref(),
        seccomp: parts.seccomp.as_ref(),
        protect: parts.protect.as_ref(),
        proc: parts.proc.as_ref(),
        stdio,
        tied_to_parent: spec.tied_to_agentd,
    };
    launch::fork_paused(&setup).map_err(|e| setup_err(name::AGENTD, e))
}

fn report_spawn_failure(
    spec: &RunSpec,
    program: &Path,
    stage: Stage,
    errno: i32,
    audit: &mut RunAudit,
) -> u8 {
    let err = nix::errno::Errno::from_raw(errno);
    if stage == Stage::Exec {
        let denied = matches!(err, nix::errno::Errno::EACCES | nix::errno::Errno::EPERM);
        let layer = if denied && spec.plan.landlock.is_some() {
            name::LANDLOCK
        } else {
            name::EXEC
        };
        let code = if err == nix::errno::Errno::ENOENT {
            EXIT_NOT_FOUND
        } else {
            EXIT_EXEC_DENIED
        };
        audit
            .say
            .line(&format!("exec: {}: {}", program.display(), err.desc()));
        if denied {
            let path = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
            let denied = CommandDenied {
                op: "exec".into(),
                path: path.display().to_string(),
                rule: "not in exec.allow".into(),
                errno: errno_name(errno),
            };
            audit.record(layer, Some(Decision::Deny), denied.into());
        }
        let end = RunFailed {
            exit_code: code,
            error: format!("exec {}: {}", program.display(), err.desc()),
            failed_layer: None,
            errno: None,
        };
        audit.record(name::AGENTD, None, end.into());
        return code;
    }
    let msg = format!("{} failed in the child: {}", stage.layer(), err.desc());
    audit.say.line(&format!("{}: {}", stage.layer(), msg));
    let end = RunFailed {
        exit_code: EXIT_SETUP_FAILED,
        error: msg,
        failed_layer: Some(stage.layer().into()),
        errno: Some(errno_name(errno)),
    };
    audit.record(name::AGENTD, None, end.into());
    EXIT_SETUP_FAILED
}

/// How often the caller hears of the run's budgets and denials (`agentd ps`).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Waits for the command, applying controls, streaming events and enforcing budgets.
/// `None` as the ending: the command is gone and how it ended is unknown.
async fn supervise(
    host: &Arc<Host>,
    spec: &RunSpec,
    waiter: Waiter,
    res: &mut RunResources,
    audit: &mut RunAudit,
    controls: &mut mpsc::Receiver<Control>,
    hooks: &mut dyn RunHooks,
) -> Result<(Option<Ending>, Option<&'static str>), SetupError> {
    let pid = waiter.pid();
    let main_tgid = pid.as_raw() as u32;
    let judge = Judge::new(&spec.policy);
    let mut events = res
        .events
        .take()
        .ok_or_else(|| setup_err(name::BPF, "the run's event route is gone"))?;
    let mut dns = res.resolver.as_mut().map(|r| &mut r.decisions);
    let mut tick = tokio::time::interval(budgets::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut killed_by: Option<&'static str> = None;
    let mut controls_open = true;
    // The command's own exit record: how an adopted command ended.
    let mut main_exit: Option<i32> = None;
    let cgroups = res
        .cgroups
        .as_ref()
        .ok_or_else(|| setup_err(name::CGROUP, "the run's cgroups are gone"))?;
    let budgets = &mut res.budgets;
    let gone = waiter.gone();
    tokio::pin!(gone);
    let record = |audit: &mut RunAudit, ev: crate::events::Event, main_exit: &mut Option<i32>| {
        if let crate::events::Event::Exit {
            tgid, exit_code, ..
        } = &ev
        {
            if *tgid == main_tgid {
                *main_exit = Some(*exit_code);
            }
        }
        audit.record_event(ev, &judge, &spec.policy, &spec.plan);
    };
    let ending = loop {
        tokio::select! {
            e = &mut gone => break e?,
            c = controls.recv(), if controls_open => match c {
                Some(Control::Signal(sig)) => forward(pid, sig),
                Some(Control::Resume) => {
                    let n = budgets.resume(cgroups);
                    audit.notice(n);
                }
                Some(Control::Pause) => {
                    let frozen = cgroups.freeze(true).is_ok();
                    audit.say.line(&format!("pause: run {} paused", spec.id));
                    audit.record(name::AGENTD, None, Pause { frozen }.into());
                }
                Some(Control::Stop) if killed_by.is_none() => {
                    killed_by = Some("stop");
                    let n = cgroups.kill_all();
                    audit.say.line(&format!("stop: run {} stopped; killed {n} process(es)", spec.id));
                    audit.record(name::AGENTD, Some(Decision::Kill), Stop { processes_killed: n }.into());
                }
                Some(Control::Stop) => {}
                Some(Control::Detach) => {
                    let processes = cgroups.pids().len();
                    audit.say.line(&format!("detach: run {} detached; {processes} process(es) keep running", spec.id));
                    audit.record(name::AGENTD, None, crate::audit::event::Detach { processes }.into());
                    break None;
                }
                None => controls_open = false,
            },
            Some(ev) = events.recv() => {
                // Group commit: everything already queued, then one fsync.
                audit.hold();
                record(audit, ev, &mut main_exit);
                while let Ok(ev) = events.try_recv() {
                    record(audit, ev, &mut main_exit);
                }
                audit.release();
            }
            Some(d) = next_dns(&mut dns) => audit.record_dns(d),
            _ = tick.tick(), if killed_by.is_none() && !budgets.is_empty() => {}
            _ = progress.tick() => hooks.progress(&RunProgress {
                budgets: budgets.uses(),
                denials: audit.denials,
                budget_progress: budgets.progress(),
            }),
        }
        if killed_by.is_none() && budgets.due() {
            for n in budgets.tick(cgroups) {
                killed_by = killed_by.or(audit.notice(n));
            }
        }
        if audit.failed && killed_by.is_none() {
            killed_by = Some("audit_failure");
            cgroups.kill_all();
        }
    };
    // The records of every process that has exited are in the ring already:
    // sched_process_exit and the syscall hooks run before a task becomes a zombie,
    // and a committed ring record is visible at once. Only processes still in the
    // cgroup (what the command left behind, perhaps exiting right now) get a moment
    // to deliver theirs; a run that ended cleanly does not pay for that wait.
    if !cgroups.identity().pids().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Everything committed so far reaches this run's queue; keep taking it meanwhile
    // (the router may be waiting for room).
    let mut flushed = host.router.flush().await;
    loop {
        tokio::select! {
            Some(ev) = events.recv() => record(audit, ev, &mut main_exit),
            _ = &mut flushed => break,
        }
    }
    while let Ok(ev) = events.try_recv() {
        record(audit, ev, &mut main_exit);
    }
    if let Some(rx) = dns {
        while let Ok(d) = rx.try_recv() {
            audit.record_dns(d);
        }
    }
    let ending = ending.or_else(|| {
        main_exit.map(|status| match wait_status(status) {
            (Some(code), _) => Ending::Exited(code),
            _ => Ending::Signaled(status & 0x7f),
        })
    });
    Ok((ending, killed_by))
}

/// What the caller hears about a live run.
#[derive(Debug, Clone)]
pub struct RunProgress {
    /// Budget name, used, limit, unit.
    pub budgets: Vec<(&'static str, u64, u64, &'static str)>,
    pub denials: u64,
    /// For a restarted daemon: how far the graduated responses have gone.
    pub budget_progress: crate::budgets::Progress,
}

fn forward(pid: Pid, sig: Signal) {
    let _ = nix::sys::signal::kill(pid, sig);
}

/// The next resolver decision, or never when the run has no resolver.
async fn next_dns(
    rx: &mut Option<&mut tokio::sync::mpsc::Receiver<DnsDecision>>,
) -> Option<DnsDecision> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
