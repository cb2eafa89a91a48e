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

use super::audit_opts::{AuditRunArgs, AuditSetup};
use super::{EXIT_EXEC_DENIED, EXIT_NOT_FOUND, EXIT_SETUP_FAILED};
use crate::audit::dropped::DropReporter;
use crate::audit::{AuditHandle, AuditLog, Decision, DEFAULT_AUDIT_PATH};
use crate::budgets::{self, Budgets, Notice, PidFile};
use crate::events::Event;
use crate::launch::{self, CStrArray, ChildSetup, SpawnOutcome, Stage};
use crate::layers::bpf::{dns_record, BpfRuntime};
use crate::layers::cgroup::{self, RunCgroups};
use crate::layers::{caps, landlock, name, seccomp};
use crate::net::dns::DnsDecision;
use crate::net::run_resolver::RunResolver;
use crate::plan::Plan;
use crate::plan::DNS;
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
    #[command(flatten)]
    audit_opts: AuditRunArgs,
    /// Upstream DNS server for the run's resolver (IP or IP:PORT; repeatable). Default:
    /// the nameservers of /etc/resolv.conf. Only used when the policy has domain rules.
    #[arg(long = "dns-upstream", value_name = "ADDR")]
    dns_upstream: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<OsString>,
}

/// A failure before the command ran: one line naming the layer, exit 125.
pub(super) struct SetupError {
    layer: &'static str,
    message: String,
}

pub(super) fn setup_err(layer: &'static str, message: impl std::fmt::Display) -> SetupError {
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
    audit_setup: AuditSetup,
    cmd: Vec<OsString>,
    workspace: PathBuf,
    dns_upstream: Vec<std::net::SocketAddr>,
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
    let dns_upstream = args
        .dns_upstream
        .iter()
        .map(|a| {
            parse_upstream(a).ok_or_else(|| {
                setup_err(DNS, format!("--dns-upstream `{a}`: expected IP or IP:PORT"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let audit_path = absolute(&args.audit).map_err(|e| setup_err("audit", e))?;
    check_audit_outside_writable_roots(&audit_path, &plan)?;
    let audit_setup = args.audit_opts.load().map_err(|e| setup_err("audit", e))?;
    Ok(Prepared {
        policy,
        probe,
        plan,
        audit_path,
        audit_setup,
        cmd: args.cmd.clone(),
        workspace: opts.workspace,
        dns_upstream,
    })
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`; port 53 when absent.
fn parse_upstream(text: &str) -> Option<std::net::SocketAddr> {
    text.parse().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| (ip, 53).into())
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
        let audit = match AuditLog::open(&self.audit_path, &run_id).and_then(|log| {
            let log = log.with_checkpoints(self.audit_setup.checkpoints.clone());
            AuditHandle::spawn(log, self.audit_setup.flush)
        }) {
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
            started: std::time::Instant::now(),
            launch_cwd: std::env::current_dir().unwrap_or_default(),
            drops: DropReporter::new("ring buffer", self.audit_setup.dropped_poll),
        };
        let code = run.execute(&self);
        // Flush, sign the chain head, and stop the writer; a log we could not write fails the run.
        if let Err(e) = run.audit.finish() {
            eprintln!("agentd: audit: {e}");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
        ExitCode::from(code)
    }
}

struct Run {
    id: String,
    audit: AuditHandle,
    started: std::time::Instant,
    /// The command starts in agentd's cwd; relative denied paths of a process that is
    /// already gone are resolved against it.
    launch_cwd: PathBuf,
    /// Set once an append fails; the run is then stopped (fail closed).
    audit_failed: bool,
    /// What the ring buffer lost, written to the chain while the run goes on.
    drops: DropReporter,
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
                "signed": p.audit_setup.checkpoints.is_some(),
                "signing_key": p.audit_setup.signing_key_json(),
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
        let stale = cgroup::gc::collect_stale(layout, crate::budgets::run_is_live);
        if !stale.removed.is_empty() || !stale.killed_in.is_empty() {
            let paths = |v: &[std::path::PathBuf]| {
                v.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
            };
            self.record(
                name::CGROUP,
                "stale_cgroups",
                None,
                json!({"removed": paths(&stale.removed), "killed_in": paths(&stale.killed_in)}),
            );
        }
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
        let mut bpf = BpfRuntime::take_probed_or_load().map_err(|e| setup_err(name::BPF, e))?;
        bpf.watch_cgroup(cgroups.cgroup_id(), 0)
            .map_err(|e| setup_err(name::BPF, e))?;
        let mut resolver = match &p.plan.net {
            Some(req) if !req.domains.is_empty() => {
                let r = rt
                    .block_on(RunResolver::start(
                        &mut bpf,
                        0,
                        cgroups.cgroup_id(),
                        req,
                        &p.policy,
                        &p.dns_upstream,
                    ))
                    .map_err(|e| setup_err(DNS, e))?;
                self.record(
                    DNS,
                    "resolver",
                    None,
                    json!({
                        "listen": r.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                        "upstream": r.upstream.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                        "grace_s": crate::net::run_resolver::GRACE.as_secs(),
                    }),
                );
                Some(r)
            }
            _ => None,
        };
        let net = match &p.plan.net {
            Some(req) => Some(
                bpf.enforce_net(&cgroups.identity().path, 0, req)
                    .map_err(|e| setup_err(name::BPF, e))?,
            ),
            None => None,
        };
        let events = bpf.take_events().map_err(|e| setup_err(name::BPF, e))?;
        if let Some(path) = p.plan.fs_rules {
            super::run_fsrules::enable(&mut bpf, path, &p.policy, &cgroups.identity().path)
                .map_err(|e| setup_err(path.layer(), e))?;
        }
        if let Some(path) = p.plan.exec_integrity {
            super::run_fsrules::enable_exec(&mut bpf, path, &p.policy)
                .map_err(|e| setup_err(path.layer(), e))?;
        }
        let unix_entries = super::run_unix::enable(&mut bpf, &p.plan, &p.policy, &cgroups)?;
        let mut budgets = Budgets::new(&p.policy, &self.id);
        let counters = bpf
            .start_budgets(
                p.plan.budget_programs,
                cgroups.cgroup_id(),
                &cgroups.identity().path,
                budgets.kernel_thresholds(),
            )
            .map_err(|e| setup_err(name::BPF, e))?;
        budgets.attach(counters);
        let _pid_file = PidFile::create(&self.id).map_err(|e| setup_err(name::AGENTD, e))?;

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

        // Handlers go in before the command exists, so a signal sent as soon as it runs
        // is forwarded rather than killing agentd (and leaving the run unaudited).
        let signals = Signals::install()?;
        // From here on, agentd dying (even by SIGKILL) kills the whole run.
        let guard = crate::run_guard::RunGuard::arm(&cgroups.identity().path)
            .map_err(|e| setup_err(name::AGENTD, format!("run guard: {e}")))?;
        let outcome = launch::spawn(&setup).map_err(|e| setup_err(name::AGENTD, e))?;
        let pid = match outcome {
            SpawnOutcome::Running(pid) => pid,
            SpawnOutcome::Failed { stage, errno } => {
                return Ok(self.report_spawn_failure(p, program, stage, errno, &cgroups));
            }
        };
        budgets.start();
        let result = rt.block_on(self.supervise(
            p,
            pid,
            &cgroups,
            &bpf,
            events,
            signals,
            resolver.as_mut().map(|r| &mut r.decisions),
            &mut budgets,
        ));
        let mut budget_kill = None;
        for n in budgets.finish(&cgroups) {
            budget_kill = budget_kill.or(self.notice(n));
        }
        if let Some(r) = resolver {
            let dropped = r.sink.dropped_decisions();
            if dropped > 0 {
                self.record(
                    DNS,
                    "dropped",
                    None,
                    json!({"count": dropped, "source": "resolver decisions"}),
                );
            }
            rt.block_on(r.stop());
        }
        let stragglers = cgroups.kill_all();
        // mode: audit lets a tainted run's traffic go, so there is nothing to stop.
        if p.policy.mode != policy::Mode::Audit && bpf.taint(cgroups.cgroup_id()).is_some() {
            let r = super::run_fsrules::abort_tainted_sockets(&cgroups);
            self.record(r.layer, r.event, r.decision, r.detail);
        }
        self.poll_drops(&bpf);
        if let Some(net) = net {
            let _ = bpf.release_net(net);
        }
        let _ = bpf.unwatch_cgroup(cgroups.cgroup_id());
        budgets.release();
        let taint = bpf.taint(cgroups.cgroup_id());
        let egress_dropped = bpf.taint_egress_drops(cgroups.cgroup_id());
        if egress_dropped > 0 {
            let r = super::run_fsrules::egress_record(&p.policy, egress_dropped);
            self.record(r.layer, r.event, r.decision, r.detail);
        }
        bpf.clear_fs_rules(0, cgroups.cgroup_id());
        bpf.clear_exec_integrity(0);
        if let Some(entries) = &unix_entries {
            bpf.clear_unix(0, entries);
        }
        let cgroups_desc = cgroups.describe();
        let cleanup = cgroups.remove();
        guard.disarm();
        let (ending, killed_by) = result?;
        let killed_by = killed_by.or(budget_kill);
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
                "elapsed_ms": self.started.elapsed().as_millis() as u64,
                "budgets": budgets.summary_json(),
                "tainted": taint.is_some(),
                "egress_packets_dropped_after_taint": egress_dropped,
            }),
        );
        if !budgets.is_empty() {
            eprint!("{}", budgets.table());
        }
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
    #[allow(clippy::too_many_arguments)]
    async fn supervise(
        &mut self,
        p: &Prepared,
        pid: Pid,
        cgroups: &RunCgroups,
        bpf: &BpfRuntime,
        mut events: crate::layers::bpf::EventStream,
        signals: Signals,
        mut dns: Option<&mut tokio::sync::mpsc::Receiver<DnsDecision>>,
        budgets: &mut Budgets,
    ) -> Result<(Ending, Option<&'static str>), SetupError> {
        let Signals {
            mut sigint,
            mut sigterm,
            mut sighup,
            mut resume,
            mut stop,
        } = signals;
        let pidfd = launch::pidfd_open(pid)
            .map_err(|e| setup_err(name::AGENTD, format!("pidfd_open: {e}")))?;
        // SAFETY: the OwnedFd is moved into the AsyncFd, so it stays open and
        // refers to the same pidfd for the AsyncFd's whole lifetime.
        let pidfd = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
            .map_err(|e| setup_err(name::AGENTD, format!("pidfd: {e}")))?;
        let judge = crate::audit::judge::Judge::new(&p.policy);
        let mut tick = tokio::time::interval(budgets::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drop_poll = tokio::time::interval(self.drops.every());
        drop_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = sigint.recv() => forward(pid, Signal::SIGINT),
                _ = sigterm.recv() => forward(pid, Signal::SIGTERM),
                _ = sighup.recv() => forward(pid, Signal::SIGHUP),
                Some(ev) = events.next() => {
                    // Group commit: everything already in the ring, then one fsync.
                    self.audit.hold();
                    self.record_event(ev, &judge, p);
                    for ev in events.drain() {
                        self.record_event(ev, &judge, p);
                    }
                    if let Err(e) = self.audit.release() {
                        eprintln!("agentd: audit: {e}; stopping the run");
                        self.audit_failed = true;
                    }
                }
                Some(d) = next_dns(&mut dns) => self.record_dns(d),
                _ = tick.tick(), if killed_by.is_none() && !budgets.is_empty() => {}
                _ = drop_poll.tick() => {}
                _ = resume.recv() => {
                    let n = budgets.resume(cgroups);
                    self.notice(n);
                }
                _ = stop.recv(), if killed_by.is_none() => {
                    killed_by = Some("stop");
                    let n = cgroups.kill_all();
                    eprintln!("agentd: stop: run {} stopped; killed {n} process(es)", self.id);
                    self.record(name::AGENTD, "stop", Some(Decision::Kill), json!({"processes_killed": n}));
                }
            }
            if self.drops.due() {
                self.poll_drops(bpf);
            }
            if killed_by.is_none() && budgets.due() {
                for n in budgets.tick(cgroups) {
                    killed_by = killed_by.or(self.notice(n));
                }
            }
            if self.audit_failed && killed_by.is_none() {
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
        for ev in events.drain() {
            self.record_event(ev, &judge, p);
        }
        if let Some(rx) = dns {
            while let Ok(d) = rx.try_recv() {
                self.record_dns(d);
            }
        }
        Ok((ending, killed_by))
    }

    /// Writes a `dropped` record if the ring buffer lost events since the last one.
    fn poll_drops(&mut self, bpf: &BpfRuntime) {
        match bpf.dropped() {
            Ok(total) => {
                if let Some(detail) = self.drops.observe(total) {
                    self.record(name::BPF, "dropped", None, detail);
                }
            }
            Err(e) => tracing::warn!("reading the ring buffer's drop counters: {e}"),
        }
    }

    fn record_dns(&mut self, d: DnsDecision) {
        let (event, decision, detail) = dns_record(d);
        self.record(DNS, event, decision, detail);
    }

    /// Audits and prints what the budget engine did; returns the budget that killed the run.
    fn notice(&mut self, n: Notice) -> Option<&'static str> {
        eprintln!("agentd: {}", n.line);
        self.record(n.layer, n.event, n.decision, n.detail);
        n.killed_by
    }

    fn record_event(&mut self, ev: Event, judge: &crate::audit::judge::Judge<'_>, p: &Prepared) {
        match ev {
            Event::Denial {
                pid,
                tgid,
                nr,
                errno,
                dirfd,
                open_flags,
                ..
            } if nr == agentd_common::denials::nr::SOCKET => {
                let (layer, detail) = crate::audit::denial::socket_denial_record(
                    tgid,
                    pid,
                    &errno_name(errno),
                    open_flags,
                    dirfd,
                    p.plan.seccomp,
                    p.plan.caps,
                    p.policy.net.as_ref().is_some_and(|n| n.raw),
                );
                self.record(layer, "denied", Some(Decision::Deny), detail);
            }
            Event::Denial {
                pid,
                tgid,
                nr,
                errno,
                dirfd,
                open_flags,
                path,
                ..
            } => {
                let (layer, detail) = crate::audit::denial::denial_record(
                    judge,
                    p.plan.landlock.is_some(),
                    &self.launch_cwd,
                    tgid,
                    pid,
                    nr,
                    &errno_name(errno),
                    dirfd,
                    open_flags,
                    &path,
                );
                self.record(layer, "denied", Some(Decision::Deny), detail);
            }
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
            Event::Unix(denial) => {
                self.record(
                    denial.layer_name(),
                    "denied",
                    Some(denial.decision()),
                    denial.audit_detail(),
                );
            }
            Event::Net(denial) => {
                let decision = if denial.would_deny {
                    Decision::WouldDeny
                } else {
                    Decision::Deny
                };
                self.record(name::BPF, "denied", Some(decision), denial.audit_detail());
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

/// The signals agentd forwards to the command.
struct Signals {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    sighup: tokio::signal::unix::Signal,
    /// `agentd resume RUN` (see budgets::control).
    resume: tokio::signal::unix::Signal,
    /// `agentd stop RUN`.
    stop: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, SetupError> {
        use tokio::signal::unix::{signal, SignalKind};
        let s = |k| signal(k).map_err(|e| setup_err(name::AGENTD, e));
        Ok(Self {
            sigint: s(SignalKind::interrupt())?,
            sigterm: s(SignalKind::terminate())?,
            sighup: s(SignalKind::hangup())?,
            resume: s(SignalKind::user_defined1())?,
            stop: s(SignalKind::user_defined2())?,
        })
    }
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

fn cstrings<'a>(items: impl Iterator<Item = &'a [u8]>) -> Result<CStrArray, std::ffi::NulError> {
    let v: Result<Vec<CString>, _> = items.map(CString::new).collect();
    Ok(CStrArray::new(v?))
}
