//! `agentd run`: load the policy, plan, set up the layers, launch the command,
//! stream its events to the audit log, and exit as it did.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde_json::json;

use super::{EXIT_EXEC_DENIED, EXIT_NOT_FOUND, EXIT_SETUP_FAILED};
use crate::audit::{AuditLog, Decision, DEFAULT_AUDIT_PATH};
use crate::events::Event;
use crate::launch::{self, CStrArray, ChildSetup, SpawnOutcome, Stage};
use crate::layers::bpf::BpfRuntime;
use crate::layers::cgroup::{self, RunCgroups};
use crate::layers::{caps, landlock, name, seccomp};
use crate::plan::Plan;
use crate::policy::{self, Policy};
use crate::probe::Probe;

/// The built-in policy used when `--policy` is absent: the strict preset.
const DEFAULT_POLICY: &str = include_str!("../../../policies/default.yaml");

/// 128 + SIGKILL: the status of a run that agentd killed.
const EXIT_KILLED: u8 = 137;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Policy file (default: the built-in strict preset).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Directory that `{workspace}` stands for (default: the current directory).
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// Audit log file.
    #[arg(long, default_value = DEFAULT_AUDIT_PATH)]
    audit: PathBuf,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<OsString>,
}

/// A failure before the command ran: one line naming the layer, exit 125.
struct SetupError {
    layer: &'static str,
    message: String,
}

fn setup_err(layer: &'static str, message: impl std::fmt::Display) -> SetupError {
    SetupError {
        layer,
        message: message.to_string(),
    }
}

pub fn run(args: RunArgs) -> ExitCode {
    match prepare(&args) {
        Ok(prepared) => prepared.execute(),
        Err(e) => {
            eprintln!("agentd: {}: {}", e.layer, e.message);
            ExitCode::from(EXIT_SETUP_FAILED)
        }
    }
}

/// Everything decided before the audit log is opened.
struct Prepared {
    policy: Policy,
    probe: Probe,
    plan: Plan,
    audit_path: PathBuf,
    cmd: Vec<OsString>,
    workspace: PathBuf,
}

fn prepare(args: &RunArgs) -> Result<Prepared, SetupError> {
    let opts = super::load_options(args.workspace.clone()).map_err(|e| setup_err("policy", e))?;
    let policy = match &args.policy {
        Some(path) => policy::load_file(path, &opts),
        None => policy::parse_str(DEFAULT_POLICY, "<preset:default>", &opts),
    }
    .map_err(|e| setup_err("policy", e))?;
    let probe = Probe::detect();
    let plan = Plan::build(&policy, &probe);
    if let Some(r) = plan.refusals.first() {
        return Err(setup_err(r.layer, &r.reason));
    }
    let audit_path = absolute(&args.audit).map_err(|e| setup_err("audit", e))?;
    check_audit_outside_writable_roots(&audit_path, &plan)?;
    Ok(Prepared {
        policy,
        probe,
        plan,
        audit_path,
        cmd: args.cmd.clone(),
        workspace: opts.workspace,
    })
}

/// The run must not be able to write its own evidence.
fn check_audit_outside_writable_roots(audit: &Path, plan: &Plan) -> Result<(), SetupError> {
    let resolved = resolve_existing_prefix(audit);
    for root in &plan.writable_roots {
        if resolved.starts_with(root) {
            return Err(setup_err(
                "audit",
                format!(
                    "audit log {} is inside {}, which the run may write; choose a path outside every fs.write root",
                    resolved.display(),
                    root.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Canonicalizes the longest existing prefix of `path` and appends the rest.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(f), Some(p)) => {
                rest.push(f.to_owned());
                existing = p.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for part in rest.iter().rev() {
        out.push(part);
    }
    out
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    std::env::current_dir()
        .map(|d| d.join(p))
        .map_err(|e| format!("cannot read the current directory: {e}"))
}

/// Finds CMD like execvp would, but in the parent (before any restriction).
fn resolve_command(cmd: &OsString) -> Option<PathBuf> {
    let p = Path::new(cmd);
    if cmd.as_bytes().contains(&b'/') {
        return absolute(p).ok().filter(|p| p.exists());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(p))
        .find(|c| is_executable_file(c))
}

fn is_executable_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn new_run_id() -> String {
    let mut buf = [0u8; 6];
    // SAFETY: getrandom writes at most buf.len() bytes into our buffer.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // Fall back to time and pid; uniqueness, not secrecy, is what matters here.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        return format!(
            "{:012x}",
            (t ^ u64::from(std::process::id()) << 32) & 0xffff_ffff_ffff
        );
    }
    hex::encode(buf)
}

fn errno_name(errno: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

/// How the command ended, as agentd reports it.
#[derive(Debug, Clone, Copy)]
enum Ending {
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

impl Prepared {
    fn execute(self) -> ExitCode {
        let run_id = new_run_id();
        let audit = match AuditLog::open(&self.audit_path, &run_id) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("agentd: audit: {e}");
                return ExitCode::from(EXIT_SETUP_FAILED);
            }
        };
        let mut run = Run {
            id: run_id,
            audit,
            audit_failed: false,
        };
        let code = run.execute(&self);
        ExitCode::from(code)
    }
}

struct Run {
    id: String,
    audit: AuditLog,
    /// Set once an append fails; the run is then stopped (fail closed).
    audit_failed: bool,
}

impl Run {
    fn record(
        &mut self,
        layer: &str,
        event: &str,
        decision: Option<Decision>,
        detail: serde_json::Value,
    ) {
        if let Err(e) = self.audit.append(layer, event, decision, detail) {
            if !self.audit_failed {
                eprintln!("agentd: audit: {e}; stopping the run");
            }
            self.audit_failed = true;
        }
    }

    fn execute(&mut self, p: &Prepared) -> u8 {
        let program = resolve_command(&p.cmd[0]);
        self.record(
            name::AGENTD,
            "run_start",
            None,
            json!({
                "policy": p.policy.origin,
                "policy_name": p.policy.name,
                "policy_hash": p.policy.hash,
                "mode": format!("{:?}", p.policy.mode).to_lowercase(),
                "argv": p.cmd.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
                "program": program.as_ref().map(|p| p.display().to_string()),
                "workspace": p.workspace.display().to_string(),
                "agentd_pid": std::process::id(),
                "kernel": p.probe.kernel,
                "plan": p.plan.summary_json(),
            }),
        );
        if self.audit_failed {
            return EXIT_SETUP_FAILED;
        }
        let Some(program) = program else {
            eprintln!(
                "agentd: exec: {}: command not found",
                p.cmd[0].to_string_lossy()
            );
            self.record(
                name::AGENTD,
                "run_end",
                None,
                json!({"exit_code": EXIT_NOT_FOUND, "error": "command not found"}),
            );
            return EXIT_NOT_FOUND;
        };
        match self.launch_and_wait(p, &program) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("agentd: {}: {}", e.layer, e.message);
                self.record(
                    name::AGENTD,
                    "run_end",
                    None,
                    json!({"exit_code": EXIT_SETUP_FAILED, "error": format!("{}: {}", e.layer, e.message), "failed_layer": e.layer}),
                );
                EXIT_SETUP_FAILED
            }
        }
    }

    fn launch_and_wait(&mut self, p: &Prepared, program: &Path) -> Result<u8, SetupError> {
        let layout = p
            .probe
            .cgroups
            .layout
            .as_ref()
            .ok_or_else(|| setup_err(name::CGROUP, "cgroup layout unknown"))?;
        let manager = cgroup::manager_for(layout).map_err(|e| setup_err(name::CGROUP, e))?;
        let cgroups = manager
            .create_run(&self.id, &p.plan.limits)
            .map_err(|e| setup_err(name::CGROUP, e))?;
        tracing::debug!("{} cgroups: {}", manager.mode(), cgroups.describe());

        // The event stream registers with the runtime's reactor, so enter it first.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| setup_err(name::AGENTD, format!("cannot start the event loop: {e}")))?;
        let _rt_guard = rt.enter();
        let mut bpf = BpfRuntime::load().map_err(|e| setup_err(name::BPF, e))?;
        bpf.watch_cgroup(cgroups.cgroup_id(), 0)
            .map_err(|e| setup_err(name::BPF, e))?;
        let events = bpf.take_events().map_err(|e| setup_err(name::BPF, e))?;
        if let Some(path) = p.plan.fs_rules {
            super::run_fsrules::enable(&mut bpf, path, &p.policy, &cgroups.identity().path)
                .map_err(|e| setup_err(path.layer(), e))?;
        }
        if let Some(path) = p.plan.exec_integrity {
            super::run_fsrules::enable_exec(&mut bpf, path, &p.policy)
                .map_err(|e| setup_err(path.layer(), e))?;
        }

        let caps = if p.plan.caps {
            Some(caps::prepare().map_err(|e| setup_err(name::CAPS, e))?)
        } else {
            None
        };
        let landlock = match &p.plan.landlock {
            Some(req) => Some(landlock::prepare(req).map_err(|e| setup_err(name::LANDLOCK, e))?),
            None => None,
        };
        let seccomp = if p.plan.seccomp {
            Some(seccomp::prepare().map_err(|e| setup_err(name::SECCOMP, e))?)
        } else {
            None
        };

        let c_program = CString::new(program.as_os_str().as_bytes())
            .map_err(|_| setup_err(name::EXEC, "command path contains a NUL byte"))?;
        let argv = cstrings(p.cmd.iter().map(|a| a.as_bytes()))
            .map_err(|_| setup_err(name::EXEC, "an argument contains a NUL byte"))?;
        let envp = cstrings(
            std::env::vars_os()
                .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
                .collect::<Vec<_>>()
                .iter()
                .map(|v| v.as_slice()),
        )
        .map_err(|_| setup_err(name::EXEC, "an environment variable contains a NUL byte"))?;
        let procs_fds = cgroups.procs_fds();
        let setup = ChildSetup {
            program: &c_program,
            argv: argv.as_slice(),
            envp: envp.as_slice(),
            cgroup_procs_fds: &procs_fds,
            caps: caps.as_ref(),
            landlock: landlock.as_ref(),
            seccomp: seccomp.as_ref(),
        };

        // Handlers exist before the child does, so a signal that arrives as soon
        // as the command runs is forwarded, not fatal to agentd. (The child resets
        // its dispositions to the defaults before exec.)
        let signals = ForwardedSignals::install().map_err(|e| setup_err(name::AGENTD, e))?;
        let outcome = launch::spawn(&setup).map_err(|e| setup_err(name::AGENTD, e))?;
        let pid = match outcome {
            SpawnOutcome::Running(pid) => pid,
            SpawnOutcome::Failed { stage, errno } => {
                return Ok(self.report_spawn_failure(p, program, stage, errno, &cgroups));
            }
        };
        let result = rt.block_on(self.supervise(p, pid, &cgroups, events, signals));
        let stragglers = cgroups.kill_all();
        let dropped = bpf.dropped().unwrap_or(0);
        if dropped > 0 {
            self.record(
                name::BPF,
                "dropped",
                None,
                json!({"count": dropped, "source": "ring buffer"}),
            );
        }
        let _ = bpf.unwatch_cgroup(cgroups.cgroup_id());
        let taint = bpf.taint(cgroups.cgroup_id());
        let egress_dropped = bpf.taint_egress_drops(cgroups.cgroup_id());
        if egress_dropped > 0 {
            let r = super::run_fsrules::egress_record(&p.policy, egress_dropped);
            self.record(r.layer, r.event, r.decision, r.detail);
        }
        bpf.clear_fs_rules(0, cgroups.cgroup_id());
        bpf.clear_exec_integrity(0);
        let cgroups_desc = cgroups.describe();
        let cleanup = cgroups.remove();
        let (ending, killed_by) = result?;
        let code = match killed_by {
            Some(_) => EXIT_KILLED,
            None => ending.exit_code(),
        };
        let (exit_code, signal) = match ending {
            Ending::Exited(c) => (Some(c), None),
            Ending::Signaled(s) => (None, Some(signal_name(s))),
        };
        self.record(
            name::AGENTD,
            "run_end",
            None,
            json!({
                "exit_code": exit_code,
                "signal": signal,
                "status": code,
                "killed_by": killed_by,
                "stragglers_killed": stragglers,
                "cgroups": cgroups_desc,
                "cgroups_removed": cleanup.is_ok(),
                "tainted": taint.is_some(),
                "egress_packets_dropped_after_taint": egress_dropped,
            }),
        );
        if let Err(e) = cleanup {
            eprintln!("agentd: cgroup: {e}");
        }
        if self.audit_failed {
            return Ok(EXIT_SETUP_FAILED);
        }
        Ok(code)
    }

    fn report_spawn_failure(
        &mut self,
        p: &Prepared,
        program: &Path,
        stage: Stage,
        errno: i32,
        _cgroups: &RunCgroups,
    ) -> u8 {
        let err = nix::errno::Errno::from_raw(errno);
        if stage == Stage::Exec {
            let denied = matches!(err, nix::errno::Errno::EACCES | nix::errno::Errno::EPERM);
            let layer = if denied && p.plan.landlock.is_some() {
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
                self.record(
                    layer,
                    "denied",
                    Some(Decision::Deny),
                    json!({
                        "op": "exec",
                        "path": std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf()).display().to_string(),
                        "rule": "not in exec.allow",
                        "errno": errno_name(errno),
                    }),
                );
            }
            self.record(
                name::AGENTD,
                "run_end",
                None,
                json!({"exit_code": code, "error": format!("exec {}: {}", program.display(), err.desc())}),
            );
            return code;
        }
        let msg = format!("{} failed in the child: {}", stage.layer(), err.desc());
        eprintln!("agentd: {}: {}", stage.layer(), msg);
        self.record(
            name::AGENTD,
            "run_end",
            None,
            json!({"exit_code": EXIT_SETUP_FAILED, "error": msg, "failed_layer": stage.layer(), "errno": errno_name(errno)}),
        );
        EXIT_SETUP_FAILED
    }

    /// Waits for the command, forwarding signals, streaming events and enforcing wall time.
    async fn supervise(
        &mut self,
        p: &Prepared,
        pid: Pid,
        cgroups: &RunCgroups,
        mut events: crate::layers::bpf::EventStream,
        mut signals: ForwardedSignals,
    ) -> Result<(Ending, Option<&'static str>), SetupError> {
        let pidfd = launch::pidfd_open(pid)
            .map_err(|e| setup_err(name::AGENTD, format!("pidfd_open: {e}")))?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, so it stays open and
        // refers to the same pidfd for the AsyncFd's whole lifetime.
        let pidfd = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
            .map_err(|e| setup_err(name::AGENTD, format!("pidfd: {e}")))?;
        let deadline = p.plan.wall_time.map(|d| tokio::time::Instant::now() + d);
        let mut killed_by: Option<&'static str> = None;
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
                _ = signals.int.recv() => forward(pid, Signal::SIGINT),
                _ = signals.term.recv() => forward(pid, Signal::SIGTERM),
                _ = signals.hup.recv() => forward(pid, Signal::SIGHUP),
                Some(ev) = events.next() => self.record_event(p, ev),
                _ = sleep_until(deadline), if killed_by.is_none() => {
                    killed_by = Some("wall_time");
                    let n = cgroups.kill_all();
                    let limit = p.plan.wall_time.unwrap_or_default();
                    eprintln!("agentd: budget: wall_time {}s exceeded; killed {n} process(es)", limit.as_secs_f64());
                    self.record(name::AGENTD, "budget", Some(Decision::Kill), json!({
                        "budget": "wall_time",
                        "limit_ms": limit.as_millis() as u64,
                        "processes_killed": n,
                    }));
                }
            }
            if self.audit_failed && killed_by.is_none() {
                killed_by = Some("audit_failure");
                cgroups.kill_all();
            }
        };
        // Let the tracker's last events (the exits) arrive, then drain.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for ev in events.drain() {
            self.record_event(p, ev);
        }
        Ok((ending, killed_by))
    }

    fn record_event(&mut self, p: &Prepared, ev: Event) {
        match ev {
            fs @ Event::Fs { .. } => {
                if let Some(r) = super::run_fsrules::audit_record(&p.policy, &fs) {
                    self.record(r.layer, r.event, r.decision, r.detail);
                }
            }
            Event::Exec {
                pid,
                tgid,
                ppid,
                uid,
                comm,
                filename,
                ..
            } => {
                let path = resolve_exec_path(tgid, &filename);
                self.record(
                    name::BPF,
                    "exec",
                    Some(Decision::Allow),
                    json!({"pid": tgid, "tid": pid, "ppid": ppid, "uid": uid, "comm": comm, "path": path, "filename": filename}),
                );
            }
            Event::Exit {
                tgid, exit_code, ..
            } => {
                let status = exit_code;
                let (code, signal) = if status & 0x7f == 0 {
                    (Some((status >> 8) & 0xff), None)
                } else {
                    (None, Some(signal_name(status & 0x7f)))
                };
                self.record(
                    name::BPF,
                    "exit",
                    None,
                    json!({"pid": tgid, "exit_code": code, "signal": signal}),
                );
            }
        }
    }
}

/// The exec'd file as the kernel resolved it. `filename` is what was passed to
/// execve; an absolute one is canonicalized, a relative one is read back from /proc.
fn resolve_exec_path(tgid: u32, filename: &str) -> String {
    if filename.starts_with('/') {
        if let Ok(p) = std::fs::canonicalize(filename) {
            return p.display().to_string();
        }
    }
    std::fs::read_link(format!("/proc/{tgid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| filename.to_owned())
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("SIG{sig}"))
}

/// SIGINT, SIGTERM and SIGHUP to agentd go to the command instead.
struct ForwardedSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl ForwardedSignals {
    /// Needs a tokio runtime context.
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

fn forward(pid: Pid, sig: Signal) {
    let _ = nix::sys::signal::kill(pid, sig);
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn cstrings<'a>(items: impl Iterator<Item = &'a [u8]>) -> Result<CStrArray, std::ffi::NulError> {
    let v: Result<Vec<CString>, _> = items.map(CString::new).collect();
    Ok(CStrArray::new(v?))
}
