//! `agentd run`: parse the arguments, build the run's spec, hand it to the supervisor
//! (in this process: standalone), print what happened and exit as the command did.

use crate::layers::protect::ProtectedFile;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::audit_opts::AuditRunArgs;
use crate::audit::DEFAULT_AUDIT_PATH;
use crate::plan::{Plan, DNS};
use crate::policy;
use crate::probe::Probe;
use crate::supervisor::{
    self, setup_err, Control, Host, HostKind, HostOptions, NoHooks, RunSpec, SetupError, UserSpec,
    EXIT_SETUP_FAILED,
};

/// The built-in policy used when `--policy` is absent: the strict preset.
const DEFAULT_POLICY: &str = include_str!("../../../policies/default.yaml");
/// The base of `--learn` without `--policy`: allows nothing, denies nothing.
const LEARN_POLICY: &str = include_str!("../../../policies/learn.yaml");

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Policy file (default: the built-in strict preset).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Learn mode: deny nothing and record what the command uses, for `agentd policy
    /// suggest` (the policy, default one that allows nothing, runs as `mode: learn`).
    #[arg(long)]
    learn: bool,
    /// Directory that `{workspace}` stands for (default: the current directory).
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// Audit log file (standalone runs; the daemon writes to its own).
    #[arg(long)]
    audit: Option<PathBuf>,
    #[command(flatten)]
    audit_opts: AuditRunArgs,
    /// Upstream DNS server for the run's resolver (IP or IP:PORT; repeatable). Default:
    /// the nameservers of /etc/resolv.conf. Only used when the run has its resolver: the
    /// policy has domain rules, or `--learn` / `mode: learn`.
    #[arg(long = "dns-upstream", value_name = "ADDR")]
    dns_upstream: Vec<String>,
    /// Run the command as USER[:GROUP] (name or number). As root without sudo this is
    /// required: `--user root` is the explicit way to run an agent as root.
    #[arg(long, env = "AGENTD_USER", value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Confine the command in this process, even when a daemon is reachable (root only).
    #[arg(long)]
    standalone: bool,
    /// Through the daemon: print the run id and return once the command runs; the run
    /// outlives this client (`agentd logs`, `agentd stop`).
    #[arg(long)]
    detach: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<OsString>,
}

pub fn run(args: RunArgs) -> ExitCode {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !args.standalone {
        let socket = super::client::socket_path();
        match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(_) => return through_daemon(&args, &socket),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!(
                    "agentd: {}",
                    super::client::ClientError::Denied { path: socket }
                );
                return ExitCode::from(EXIT_SETUP_FAILED);
            }
            Err(e) if !root => {
                eprintln!(
                    "agentd: cannot reach the agentd daemon at {}: {e} (runs of non-root users go through the daemon: is `agentd daemon` running?)",
                    socket.display()
                );
                return ExitCode::from(EXIT_SETUP_FAILED);
            }
            Err(_) => {}
        }
    }
    if args.detach {
        eprintln!("agentd: --detach needs the daemon (a standalone run ends with its agentd)");
        return ExitCode::from(EXIT_SETUP_FAILED);
    }
    match prepare(&args) {
        Ok(prepared) => execute(prepared),
        Err(e) => {
            eprintln!("agentd: {e}");
            ExitCode::from(EXIT_SETUP_FAILED)
        }
    }
}

/// Everything decided before the audit log is opened.
struct Prepared {
    spec: RunSpec,
    host_options: HostOptions,
}

fn prepare(args: &RunArgs) -> Result<Prepared, SetupError> {
    let opts = super::load_options(args.workspace.clone()).map_err(|e| setup_err("policy", e))?;
    let mut policy = match (&args.policy, args.learn) {
        (Some(path), _) => policy::load_file(path, &opts),
        (None, false) => policy::parse_str(DEFAULT_POLICY, "<preset:default>", &opts),
        (None, true) => policy::parse_str(LEARN_POLICY, "<preset:learn>", &opts),
    }
    .map_err(|e| setup_err("policy", e))?;
    if args.learn {
        policy.mode = policy::Mode::Learn;
    }
    let user = run_as(args.user.as_deref())?;
    let probe = Probe::detect();
    let plan = Plan::for_run(&policy, &probe);
    if let Some(r) = plan.refusals.first() {
        return Err(setup_err(r.layer, r.reason.clone()));
    }
    let dns_upstream = args
        .dns_upstream
        .iter()
        .map(|a| {
            supervisor::parse_upstream(a).ok_or_else(|| {
                setup_err(DNS, format!("--dns-upstream `{a}`: expected IP or IP:PORT"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let audit_path = absolute(
        args.audit
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_AUDIT_PATH)),
    )
    .map_err(|e| setup_err("audit", e))?;
    check_audit_outside_writable_roots(&audit_path, &plan)?;
    let audit_setup = args.audit_opts.load().map_err(|e| setup_err("audit", e))?;
    let cwd = std::env::current_dir().map_err(|e| {
        setup_err(
            crate::layers::name::EXEC,
            format!("cannot read the current directory: {e}"),
        )
    })?;
    let program =
        supervisor::resolve_command(&args.cmd[0], std::env::var_os("PATH").as_ref(), &cwd);
    let id = supervisor::new_run_id();
    let mut protect: Vec<ProtectedFile> = args
        .policy
        .iter()
        .map(|p| ProtectedFile {
            path: p.clone(),
            what: "policy",
        })
        .collect();
    if let Some(key) = &audit_setup.signing_key {
        protect.push(ProtectedFile {
            path: PathBuf::from(&key.path),
            what: "signing key",
        });
    }
    let spec = RunSpec {
        id: id.clone(),
        policy,
        plan,
        argv: args.cmd.clone(),
        program,
        env: std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                kv
            })
            .collect(),
        cwd: None,
        umask: None,
        user,
        workspace: opts.workspace,
        dns_upstream,
        stdio: None,
        tied_to_agentd: true,
        start_fields: serde_json::Map::new(),
        protect,
    };
    let host_options = HostOptions {
        kind: HostKind::Standalone,
        probe,
        audit_path,
        audit_label: id,
        checkpoints: audit_setup.checkpoints,
        signing_key: audit_setup.signing_key,
        flush: audit_setup.flush,
        dropped_poll: audit_setup.dropped_poll,
        pin_root: None,
        drops_reported: 0,
        router_paused: false,
    };
    Ok(Prepared { spec, host_options })
}

/// `agentd run` through the daemon at `socket`.
fn through_daemon(args: &RunArgs, socket: &Path) -> ExitCode {
    match client_request(args) {
        Ok(req) => super::client::run(socket, req),
        Err(e) => {
            eprintln!("agentd: {e}");
            ExitCode::from(EXIT_SETUP_FAILED)
        }
    }
}

/// The `run` request: the policy read as the caller, and the caller's command line,
/// environment, directory and home.
fn client_request(args: &RunArgs) -> Result<crate::daemon::protocol::RunRequest, SetupError> {
    use crate::daemon::protocol::{PolicySource, RunRequest};
    if args.audit.is_some() {
        return Err(setup_err(
            "audit",
            "--audit is for standalone runs; the daemon writes to its own log (`agentd status` names it; `agentd logs RUN` shows a run's records), or pass --standalone",
        ));
    }
    let utf8 = |what: &str, s: &std::ffi::OsStr| {
        s.to_str().map(str::to_owned).ok_or_else(|| {
            setup_err(
                crate::layers::name::EXEC,
                format!("{what} is not UTF-8: {}", s.to_string_lossy()),
            )
        })
    };
    let opts = super::load_options(args.workspace.clone()).map_err(|e| setup_err("policy", e))?;
    let policy = match &args.policy {
        Some(p) => {
            let path = absolute(p).map_err(|e| setup_err("policy", e))?;
            let text = std::fs::read_to_string(&path).map_err(|e| {
                setup_err(
                    "policy",
                    format!("{}: cannot read policy: {e}", p.display()),
                )
            })?;
            Some(PolicySource {
                origin: path.display().to_string(),
                text,
            })
        }
        // The daemon takes the policy's own mode: send the learn preset as the policy.
        None if args.learn => Some(PolicySource {
            origin: "<preset:learn>".into(),
            text: LEARN_POLICY.into(),
        }),
        None => None,
    };
    if args.learn && args.policy.is_some() {
        return Err(setup_err(
            "policy",
            "--learn with --policy is for standalone runs; through the daemon, write `mode: learn` in the policy (or pass --standalone)",
        ));
    }
    let cwd = std::env::current_dir().map_err(|e| {
        setup_err(
            crate::layers::name::EXEC,
            format!("cannot read the current directory: {e}"),
        )
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = if unsafe { libc::geteuid() } == 0 {
        Some(daemon_run_as(args.user.as_deref())?)
    } else {
        if args.user.is_some() {
            return Err(setup_err(
                crate::layers::name::USER,
                "--user is for root; your run goes through the daemon and runs as you",
            ));
        }
        None
    };
    Ok(RunRequest {
        policy,
        workspace: utf8("the workspace", opts.workspace.as_os_str())?,
        cwd: utf8("the current directory", cwd.as_os_str())?,
        home: utf8("the home directory", opts.home.as_os_str())?,
        argv: args
            .cmd
            .iter()
            .map(|a| utf8("an argument", a))
            .collect::<Result<_, _>>()?,
        env: std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                utf8("an environment variable", &kv)
            })
            .collect::<Result<_, _>>()?,
        dns_upstream: args.dns_upstream.clone(),
        detach: args.detach,
        user,
        umask: own_umask(),
    })
}

/// This process's umask, from /proc/self/status (reading it with umask(2) would change it
/// for a moment); `None` where the kernel does not show it.
fn own_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
}

/// Whom the command runs as: `--user`, else the user sudo ran agentd for. As root with
/// neither, agentd refuses: the agent never runs as uid 0 by accident.
fn run_as(user: Option<&str>) -> Result<Option<UserSpec>, SetupError> {
    let layer = crate::layers::name::USER;
    if let Some(u) = user {
        return UserSpec::parse(u)
            .map(Some)
            .map_err(|e| setup_err(layer, e));
    }
    if let Some(u) = UserSpec::from_sudo_env().map_err(|e| setup_err(layer, e))? {
        return Ok(Some(u));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Err(setup_err(layer, ROOT_REFUSED));
    }
    Ok(None)
}

/// [`run_as`] for a request to the daemon, as the `--user` spec the daemon resolves:
/// `--user` as given (the daemon reports a user it cannot find), else sudo's `UID:GID`.
/// The client looks nothing up: the daemon does, for the name and groups it runs with.
fn daemon_run_as(user: Option<&str>) -> Result<String, SetupError> {
    let layer = crate::layers::name::USER;
    if let Some(u) = user {
        return Ok(u.to_owned());
    }
    match UserSpec::sudo_spec().map_err(|e| setup_err(layer, e))? {
        Some(spec) => Ok(spec),
        None => Err(setup_err(layer, ROOT_REFUSED)),
    }
}

/// Why a root agentd with neither `--user` nor sudo's variables does not start the command.
const ROOT_REFUSED: &str =
    "refusing to run the agent as root: pass --user USER (or run agentd through \
     sudo, which sets SUDO_UID); --user root runs it as root on purpose";

fn execute(p: Prepared) -> ExitCode {
    let Prepared { spec, host_options } = p;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentd: agentd: cannot start the event loop: {e}");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
    };
    // Orphans of the run come to agentd, not init, and are reaped before it returns.
    if let Err(e) = supervisor::become_subreaper() {
        eprintln!("agentd: {e}");
        return ExitCode::from(EXIT_SETUP_FAILED);
    }
    rt.block_on(async move {
        let host = match Host::start(host_options) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("agentd: {e}");
                return ExitCode::from(EXIT_SETUP_FAILED);
            }
        };
        // Handlers go in before the command exists, so a signal sent as soon as it runs
        // is forwarded rather than killing agentd (and leaving the run unaudited).
        let controls = match forward_signals() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("agentd: {e}");
                return ExitCode::from(EXIT_SETUP_FAILED);
            }
        };
        let outcome = supervisor::run(Arc::clone(&host), spec, controls, Box::new(NoHooks)).await;
        // Teardown killed the run's cgroup: what is left of it are zombies to reap.
        if let (_, true) = supervisor::reap_orphans(std::time::Duration::from_secs(2)) {
            eprintln!("agentd: agentd: children still running after the run's teardown");
        }
        // Flush, sign the chain head, and stop the writer; a log we could not write fails
        // the run.
        if let Err(e) = host.finish_audit() {
            eprintln!("agentd: audit: {e}");
            return ExitCode::from(EXIT_SETUP_FAILED);
        }
        ExitCode::from(outcome.code)
    })
}

/// INT, TERM and HUP go to the command; USR1 resumes a frozen run and USR2 stops it
/// (`agentd resume|stop RUN` in standalone mode, see `budgets::control`).
fn forward_signals() -> Result<tokio::sync::mpsc::Receiver<Control>, SetupError> {
    use nix::sys::signal::Signal;
    use tokio::signal::unix::{signal, SignalKind};
    let layer = crate::layers::name::AGENTD;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for (kind, control) in [
        (SignalKind::interrupt(), Control::Signal(Signal::SIGINT)),
        (SignalKind::terminate(), Control::Signal(Signal::SIGTERM)),
        (SignalKind::hangup(), Control::Signal(Signal::SIGHUP)),
        (SignalKind::user_defined1(), Control::Resume),
        (SignalKind::user_defined2(), Control::Stop),
    ] {
        let mut s = signal(kind).map_err(|e| setup_err(layer, e))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(control).await.is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
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
