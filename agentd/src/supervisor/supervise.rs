//! The phases of a run: `run_start`, set-up, launch, supervision, teardown, `run_end`.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
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
use crate::layers::{caps, landlock, name, seccomp};
use crate::net::dns::DnsDecision;

use super::records::{errno_name, signal_name, RunAudit};
use super::resources::RunResources;
use super::spec::{Control, PreparedRun, RunHooks, RunSpec, StartedRun};
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
#[expect(dead_code, reason = "the daemon reads every field (next)")]
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
    spec: RunSpec,
    mut controls: mpsc::Receiver<Control>,
    mut hooks: Box<dyn RunHooks>,
) -> RunOutcome {
    let launch_cwd = spec
        .cwd
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    let handle = match host.audit(&spec.id) {
        Ok(h) => h,
        Err(e) => return setup_failed(&spec.id, &e),
    };
    let mut audit = RunAudit::new(handle, launch_cwd);
    record_start(&host, &spec, &mut audit);
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
        eprintln!(
            "agentd: exec: {}: command not found",
            spec.argv
                .first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default()
        );
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
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("agentd: {e}");
            let end = RunFailed {
                exit_code: EXIT_SETUP_FAILED,
                error: e.to_string(),
                failed_layer: Some(e.layer.into()),
                errno: None,
            };
            audit.record(name::AGENTD, None, end.into());
            setup_failed(&spec.id, &e)
        }
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
        uid,
        gid,
        user,
        groups: spec.user.as_ref().map(|u| u.groups.clone()),
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
}

fn prepare_child(spec: &RunSpec, program: &Path) -> Result<ChildParts, SetupError> {
    let caps = if spec.plan.caps {
        Some(caps::prepare().map_err(|e| setup_err(name::CAPS, e))?)
    } else {
        None
    };
    let landlock = match &spec.plan.landlock {
        Some(req) => Some(landlock::prepare(req).map_err(|e| setup_err(name::LANDLOCK, e))?),
        None => None,
    };
    let seccomp = if spec.plan.seccomp {
        Some(seccomp::prepare().map_err(|e| setup_err(name::SECCOMP, e))?)
    } else {
        None
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
) -> Result<RunOutcome, SetupError> {
    let mut res = RunResources::prepare(host, spec, audit).await?;
    let parts = prepare_child(spec, program)?;
    let cgroups = res.cgroups()?;
    let procs_fds = cgroups.procs_fds();
    let v2_leaf = cgroups.identity().path.clone();
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
        landlock: parts.landlock.as_ref(),
        seccomp: parts.seccomp.as_ref(),
        stdio,
        tied_to_parent: spec.tied_to_agentd,
    };
    let prepared = PreparedRun {
        id: spec.id.clone(),
        cgroup_paths: cgroups
            .leaves()
            .map(|l| (l.hierarchy.clone(), l.path.clone()))
            .collect(),
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
    if spec.tied_to_agentd {
        // From here on, agentd dying (even by SIGKILL) kills the whole run.
        res.guard = Some(
            crate::run_guard::RunGuard::arm(&v2_leaf)
                .map_err(|e| setup_err(name::AGENTD, format!("run guard: {e}")))?,
        );
    }
    let outcome = launch::spawn(&setup).map_err(|e| setup_err(name::AGENTD, e))?;
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
        cgroup_id: res.cgroup_id(),
    });
    res.budgets.start();
    let (ending, killed_by) = supervise(host, spec, pid, &mut res, audit, controls).await?;
    let mut budget_kill = None;
    let report = res.teardown(spec, audit, &mut budget_kill).await;
    let killed_by = killed_by.or(budget_kill);
    let code = match killed_by {
        Some(_) => EXIT_KILLED,
        None => ending.exit_code(),
    };
    let (exit_code, signal) = match ending {
        Ending::Exited(c) => (Some(c), None),
        Ending::Signaled(s) => (None, Some(signal_name(s))),
    };
    let end = RunEnded {
        exit_code,
        signal,
        status: code,
        killed_by: killed_by.map(str::to_owned),
        stragglers_killed: report.stragglers_killed,
        cgroups: report.cgroups,
        cgroups_removed: report.cgroups_removed,
        elapsed_ms: audit.started.elapsed().as_millis() as u64,
        budgets: res.budgets.figures(),
        tainted: report.tainted,
        egress_packets_dropped_after_taint: report.egress_dropped,
        denials: audit.denials,
    };
    audit.record(name::AGENTD, None, end.into());
    if !res.budgets.is_empty() {
        eprint!("{}", res.budgets.table());
    }
    if let Some(e) = report.cgroup_error {
        eprintln!("agentd: cgroup: {e}");
    }
    let code = if audit.failed {
        EXIT_SETUP_FAILED
    } else {
        code
    };
    Ok(RunOutcome {
        id: spec.id.clone(),
        code,
        ending: Some(ending),
        killed_by,
        setup_error: None,
    })
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
        eprintln!("agentd: exec: {}: {}", program.display(), err.desc());
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
    eprintln!("agentd: {}: {}", stage.layer(), msg);
    let end = RunFailed {
        exit_code: EXIT_SETUP_FAILED,
        error: msg,
        failed_layer: Some(stage.layer().into()),
        errno: Some(errno_name(errno)),
    };
    audit.record(name::AGENTD, None, end.into());
    EXIT_SETUP_FAILED
}

/// Waits for the command, applying controls, streaming events and enforcing budgets.
async fn supervise(
    host: &Arc<Host>,
    spec: &RunSpec,
    pid: Pid,
    res: &mut RunResources,
    audit: &mut RunAudit,
    controls: &mut mpsc::Receiver<Control>,
) -> Result<(Ending, Option<&'static str>), SetupError> {
    let pidfd =
        launch::pidfd_open(pid).map_err(|e| setup_err(name::AGENTD, format!("pidfd_open: {e}")))?;
    // SAFETY: the OwnedFd is moved into the AsyncFd, so it stays open and
    // refers to the same pidfd for the AsyncFd's whole lifetime.
    let pidfd = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
        .map_err(|e| setup_err(name::AGENTD, format!("pidfd: {e}")))?;
    let judge = Judge::new(&spec.policy);
    let mut events = res
        .events
        .take()
        .ok_or_else(|| setup_err(name::BPF, "the run's event route is gone"))?;
    let mut dns = res.resolver.as_mut().map(|r| &mut r.decisions);
    let mut tick = tokio::time::interval(budgets::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut killed_by: Option<&'static str> = None;
    let mut controls_open = true;
    let cgroups = res
        .cgroups
        .as_ref()
        .ok_or_else(|| setup_err(name::CGROUP, "the run's cgroups are gone"))?;
    let budgets = &mut res.budgets;
    let ending = loop {
        tokio::select! {
            ready = pidfd.readable() => {
                if let Ok(mut guard) = ready {
                    guard.clear_ready();
                }
                match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, c)) => break Ending::Exited(c),
                    Ok(WaitStatus::Signaled(_, s, _)) => break Ending::Signaled(s as i32),
                    Ok(_) => continue,
                    Err(e) => return Err(setup_err(name::AGENTD, format!("waitpid: {e}"))),
                }
            }
            c = controls.recv(), if controls_open => match c {
                Some(Control::Signal(sig)) => forward(pid, sig),
                Some(Control::Resume) => {
                    let n = budgets.resume(cgroups);
                    audit.notice(n);
                }
                Some(Control::Pause) => {
                    let frozen = cgroups.freeze(true).is_ok();
                    eprintln!("agentd: pause: run {} paused", spec.id);
                    audit.record(name::AGENTD, None, Pause { frozen }.into());
                }
                Some(Control::Stop) if killed_by.is_none() => {
                    killed_by = Some("stop");
                    let n = cgroups.kill_all();
                    eprintln!("agentd: stop: run {} stopped; killed {n} process(es)", spec.id);
                    audit.record(name::AGENTD, Some(Decision::Kill), Stop { processes_killed: n }.into());
                }
                Some(Control::Stop) => {}
                None => controls_open = false,
            },
            Some(ev) = events.recv() => {
                // Group commit: everything already queued, then one fsync.
                audit.hold();
                audit.record_event(ev, &judge, &spec.policy, &spec.plan);
                while let Ok(ev) = events.try_recv() {
                    audit.record_event(ev, &judge, &spec.policy, &spec.plan);
                }
                audit.release();
            }
            Some(d) = next_dns(&mut dns) => audit.record_dns(d),
            _ = tick.tick(), if killed_by.is_none() && !budgets.is_empty() => {}
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
            Some(ev) = events.recv() => audit.record_event(ev, &judge, &spec.policy, &spec.plan),
            _ = &mut flushed => break,
        }
    }
    while let Ok(ev) = events.try_recv() {
        audit.record_event(ev, &judge, &spec.policy, &spec.plan);
    }
    if let Some(rx) = dns {
        while let Ok(d) = rx.try_recv() {
            audit.record_dns(d);
        }
    }
    Ok((ending, killed_by))
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
