//! The daemon's client: `agentd run` through the daemon, `ps`, `stop`, `pause`,
//! `resume`, `logs`, `status`.
//!
//! A run through the daemon: the client sends the policy text (read as the caller),
//! its argv, environment, working directory and home, and its stdin, stdout and stderr
//! (SCM_RIGHTS). The daemon forks the command as the caller, in the caller's directory,
//! on the caller's terminal. The client forwards SIGINT, SIGTERM and SIGHUP, and exits
//! with the run's status. If the connection drops (the daemon restarting), the client
//! reconnects and follows the same run.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::daemon::protocol::{self, Op, Response, RunInfo};

/// The default control socket (`AGENTD_SOCKET` overrides it).
pub const DEFAULT_SOCKET: &str = "/run/agentd/agentd.sock";

/// How long a client keeps trying to reach a daemon that went away mid-run.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// The default token socket (`AGENTD_TOKEN_SOCKET` overrides it): mode 0666, for
/// requests that carry a token.
pub const DEFAULT_TOKEN_SOCKET: &str = "/run/agentd/agentd-token.sock";

static TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// `--token` / `AGENTD_TOKEN`: every request of this process carries it, and goes to the
/// token socket.
pub fn set_token(token: Option<String>) {
    let _ = TOKEN.set(token.filter(|t| !t.is_empty()));
}

fn token() -> Option<String> {
    TOKEN.get().cloned().flatten()
}

pub fn has_token() -> bool {
    token().is_some()
}

/// The socket path: with a token, `AGENTD_TOKEN_SOCKET` or its default; else
/// `AGENTD_SOCKET`, else the default.
pub fn socket_path() -> PathBuf {
    let (var, default) = if has_token() {
        ("AGENTD_TOKEN_SOCKET", DEFAULT_TOKEN_SOCKET)
    } else {
        ("AGENTD_SOCKET", DEFAULT_SOCKET)
    };
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Why the daemon could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agentd daemon at {path}: {source}", path = .path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("permission denied: {path} is for root and the daemon's group (`agentd` unless configured otherwise); ask to be added to it", path = .path.display())]
    Denied { path: PathBuf },
    #[error("the daemon at {path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the daemon sent something this client does not understand: {0}")]
    Protocol(String),
    #[error("{message}")]
    Refused { code: u8, message: String },
}

impl ClientError {
    /// The exit status this error means.
    pub fn code(&self) -> u8 {
        match self {
            ClientError::Refused { code, .. } => *code,
            _ => 1,
        }
    }
}

/// A connection to the daemon.
pub struct Connection {
    path: PathBuf,
    stream: UnixStream,
    lines: BufReader<UnixStream>,
}

impl Connection {
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                ClientError::Denied {
                    path: path.to_path_buf(),
                }
            } else {
                ClientError::Connect {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let read = stream.try_clone().map_err(|source| ClientError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            stream,
            lines: BufReader::new(read),
        })
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Sends a request (with `fds` attached).
    pub fn send(&mut self, op: Op, fds: &[i32]) -> Result<(), ClientError> {
        let line = protocol::encode_request(op, token());
        crate::daemon::socket::send_with_fds(self.stream.as_raw_fd(), &line, fds)
            .map_err(|e| self.io(e))
    }

    /// The next response; `Ok(None)` when the daemon closed the connection.
    pub fn next(&mut self) -> Result<Option<Response>, ClientError> {
        let mut line = String::new();
        let n = self.lines.read_line(&mut line).map_err(|e| self.io(e))?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_str(line.trim_end())
            .map(Some)
            .map_err(|e| ClientError::Protocol(format!("{e}: {line}")))
    }

    /// One request, one response.
    pub fn call(path: &Path, op: Op) -> Result<Response, ClientError> {
        let mut c = Self::open(path)?;
        c.send(op, &[])?;
        match c.next()? {
            Some(Response::Error { code, message, .. }) => {
                Err(ClientError::Refused { code, message })
            }
            Some(r) => Ok(r),
            None => Err(ClientError::Protocol(
                "the daemon closed the connection without an answer".into(),
            )),
        }
    }

    fn writer(&self) -> Result<UnixStream, ClientError> {
        self.stream.try_clone().map_err(|e| self.io(e))
    }
}

/// Prints the daemon's refusal (`PREFIX: LAYER: MESSAGE`) and returns its exit code.
pub(super) fn refused(prefix: &str, layer: Option<&str>, message: &str, code: u8) -> ExitCode {
    match layer {
        Some(l) => eprintln!("{prefix}: {l}: {message}"),
        None => eprintln!("{prefix}: {message}"),
    }
    ExitCode::from(code)
}

/// `agentd run` through the daemon: sends `request`, follows the run, exits as it did.
pub fn run(path: &Path, request: protocol::RunRequest) -> ExitCode {
    let detach = request.detach;
    let mut conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agentd: {e}");
            return ExitCode::from(crate::supervisor::EXIT_SETUP_FAILED);
        }
    };
    let stdio = [0, 1, 2];
    if let Err(e) = conn.send(Op::Run(Box::new(request)), &stdio) {
        eprintln!("agentd: {e}");
        return ExitCode::from(crate::supervisor::EXIT_SETUP_FAILED);
    }
    let signals = match forward_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("agentd: signals: {e}");
            return ExitCode::from(crate::supervisor::EXIT_SETUP_FAILED);
        }
    };
    let mut run_id: Option<String> = None;
    loop {
        if let Ok(w) = conn.writer() {
            signals.set_target(w);
        }
        let reply = conn.next();
        match reply {
            Ok(Some(Response::Accepted { run })) => run_id = Some(run),
            Ok(Some(Response::Started { run, pid })) => {
                if detach {
                    println!("{run}");
                    eprintln!("agentd: run {run} started detached (pid {pid})");
                    return ExitCode::SUCCESS;
                }
                run_id = Some(run);
            }
            Ok(Some(Response::Exited { code, .. })) => return ExitCode::from(code),
            Ok(Some(Response::Message { text })) => eprintln!("agentd: {text}"),
            Ok(Some(Response::Error {
                code,
                message,
                layer,
            })) => return refused("agentd", layer.as_deref(), &message, code),
            Ok(Some(other)) => tracing::debug!("ignored response: {other:?}"),
            Ok(None) | Err(_) => {
                // The daemon went away (a restart): follow the same run through the next one.
                let Some(id) = run_id.clone() else {
                    eprintln!("agentd: the daemon closed the connection before the run started");
                    return ExitCode::from(crate::supervisor::EXIT_SETUP_FAILED);
                };
                match reconnect(path, &id) {
                    Some(c) => conn = c,
                    None => {
                        eprintln!(
                            "agentd: lost the daemon at {} and could not reach it again within {}s; run {id} may still be running (agentd ps)",
                            path.display(),
                            RECONNECT_FOR.as_secs()
                        );
                        return ExitCode::from(crate::supervisor::EXIT_SETUP_FAILED);
                    }
                }
            }
        }
    }
}

/// Reconnects and follows run `id`.
fn reconnect(path: &Path, id: &str) -> Option<Connection> {
    let deadline = Instant::now() + RECONNECT_FOR;
    while Instant::now() < deadline {
        if let Ok(mut c) = Connection::open(path) {
            if c.send(Op::Wait { run: id.to_owned() }, &[]).is_ok() {
                return Some(c);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Forwards SIGINT, SIGTERM and SIGHUP to the run as `signal` requests on the current
/// connection (a thread waits for them with signalfd-like blocking).
struct SignalForwarder {
    target: std::sync::Arc<std::sync::Mutex<Option<UnixStream>>>,
}

impl SignalForwarder {
    fn set_target(&self, s: UnixStream) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }
}

fn forward_signals() -> std::io::Result<SignalForwarder> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    // Blocked in this thread (and inherited by the waiter); the waiter takes them.
    set.thread_block().map_err(std::io::Error::from)?;
    let target: std::sync::Arc<std::sync::Mutex<Option<UnixStream>>> = Default::default();
    let t = std::sync::Arc::clone(&target);
    std::thread::Builder::new()
        .name("agentd-signals".into())
        .spawn(move || loop {
            let Ok(sig) = set.wait() else { return };
            let line = protocol::encode_request(
                Op::Signal {
                    signal: sig.as_str().to_owned(),
                },
                None,
            );
            if let Some(s) = t.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                let _ = s.write_all(&line);
            }
        })?;
    Ok(SignalForwarder { target })
}

/// `agentd ps [--json]`.
pub fn ps(json: bool) -> ExitCode {
    let path = socket_path();
    match Connection::call(&path, Op::Ps) {
        Ok(Response::Runs { runs }) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&runs).unwrap_or_default()
                );
            } else {
                print!("{}", ps_table(&runs));
            }
            ExitCode::SUCCESS
        }
        Ok(other) => unexpected(other),
        Err(e) => failed(e),
    }
}

/// The `agentd ps` table.
pub fn ps_table(runs: &[RunInfo]) -> String {
    let mut out = format!(
        "{:<14}{:>7}{:>9}  {:<16}{:<8}{:>9}{:>9}  {}\n",
        "RUN", "UID", "PID", "POLICY", "MODE", "UPTIME", "DENIALS", "BUDGETS"
    );
    for r in runs {
        let budgets: Vec<String> = r
            .budgets
            .iter()
            .map(|(name, u)| format!("{name} {}/{} {}", u.used, u.limit, u.unit))
            .collect();
        let mut tags = Vec::new();
        if r.adopted {
            tags.push("re-adopted".to_owned());
        }
        match &r.attached {
            Some(target) => tags.push(format!("attached {target}")),
            None if r.detached => tags.push("detached".to_owned()),
            None => {}
        }
        let policy = if tags.is_empty() {
            r.policy.clone()
        } else {
            format!("{} ({})", r.policy, tags.join(", "))
        };
        out.push_str(&format!(
            "{:<14}{:>7}{:>9}  {:<16}{:<8}{:>8}s{:>9}  {}\n",
            r.run,
            r.uid,
            r.pid,
            policy,
            r.mode,
            r.uptime_ms / 1000,
            r.denials,
            if budgets.is_empty() {
                "-".to_owned()
            } else {
                budgets.join(", ")
            }
        ));
    }
    out
}

/// `agentd stop|pause|resume RUN` through the daemon. `Ok(None)`: no daemon answers.
pub fn control(run: &str, action: &str) -> Result<Option<ExitCode>, ClientError> {
    let path = socket_path();
    let op = match action {
        "stop" => Op::Stop { run: run.into() },
        "pause" => Op::Pause { run: run.into() },
        _ => Op::Resume { run: run.into() },
    };
    match Connection::call(&path, op) {
        Ok(Response::Done { run, action }) => {
            println!("asked the daemon to {action} run {run}");
            Ok(Some(ExitCode::SUCCESS))
        }
        Ok(other) => Ok(Some(unexpected(other))),
        Err(ClientError::Connect { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `agentd logs RUN [-f]`: that run's records, one readable line each (`--json`: as
/// written).
pub fn logs(run: &str, follow: bool, json: bool) -> ExitCode {
    let path = socket_path();
    let mut conn = match Connection::open(&path) {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    if let Err(e) = conn.send(
        Op::Logs {
            run: run.into(),
            follow,
        },
        &[],
    ) {
        return failed(e);
    }
    loop {
        match conn.next() {
            Ok(Some(Response::Record { line })) => {
                if json {
                    println!("{line}");
                } else {
                    println!("{}", crate::cli::audit::readable_line(&line));
                }
            }
            Ok(Some(Response::Error { code, message, .. })) => {
                eprintln!("agentd: logs: {message}");
                return ExitCode::from(code);
            }
            Ok(Some(other)) => return unexpected(other),
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => return failed(e),
        }
    }
}

/// `agentd status [--json]`.
pub fn status(json: bool) -> ExitCode {
    let path = socket_path();
    match Connection::call(&path, Op::Status) {
        Ok(Response::Status(s)) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                println!(
                    "agentd daemon {} (pid {}), up {}s",
                    s.version,
                    s.pid,
                    s.uptime_ms / 1000
                );
                println!("  socket           {}", path.display());
                println!(
                    "  runs             {} ({} re-adopted at start, {} restart(s))",
                    s.runs, s.adopted, s.restarts
                );
                let progs: Vec<String> = s
                    .programs
                    .iter()
                    .map(|(p, n)| match n {
                        0 => format!("{p} (idle, lingering)"),
                        n => format!("{p} ({n})"),
                    })
                    .collect();
                println!(
                    "  programs         {}",
                    if progs.is_empty() {
                        "none attached".into()
                    } else {
                        progs.join(", ")
                    }
                );
                println!(
                    "  pins             {} object(s) in {}",
                    s.pinned_objects,
                    s.pin_dir.as_deref().unwrap_or("-")
                );
                println!(
                    "  map entries      {} ({} idle shared net rule table(s))",
                    s.map_entries, s.idle_net_tables
                );
                println!("  kept cgroup progs {}", s.kept_cgroup_programs);
                println!(
                    "  ring drops       {} ({} unrouted event(s))",
                    s.ring_dropped, s.unrouted_events
                );
                println!(
                    "  audit            {} (head seq {})",
                    s.audit,
                    s.audit_head_seq.map_or("-".into(), |n| n.to_string())
                );
            }
            ExitCode::SUCCESS
        }
        Ok(other) => unexpected(other),
        Err(e) => failed(e),
    }
}

/// `agentd token create --run ID --allow LIST [--ttl T]`: prints the token on stdout
/// (and its id and expiry on stderr).
pub fn token_create(run: &str, allow: Vec<String>, ttl_secs: u64) -> ExitCode {
    let op = Op::TokenCreate {
        run: run.to_owned(),
        allow,
        ttl_secs,
    };
    match Connection::call(&socket_path(), op) {
        Ok(Response::Token {
            id,
            token,
            expires_unix,
        }) => {
            println!("{token}");
            eprintln!("agentd: token {id} for run {run}, expires at unix time {expires_unix}");
            ExitCode::SUCCESS
        }
        Ok(other) => unexpected(other),
        Err(e) => failed(e),
    }
}

/// `agentd token revoke ID`.
pub fn token_revoke(id: &str) -> ExitCode {
    match Connection::call(&socket_path(), Op::TokenRevoke { id: id.to_owned() }) {
        Ok(Response::Done { run, action }) => {
            println!("{action}: token {run}");
            ExitCode::SUCCESS
        }
        Ok(other) => unexpected(other),
        Err(e) => failed(e),
    }
}

fn unexpected(r: Response) -> ExitCode {
    eprintln!("agentd: unexpected answer from the daemon: {r:?}");
    ExitCode::FAILURE
}

fn failed(e: ClientError) -> ExitCode {
    eprintln!("agentd: {e}");
    ExitCode::from(e.code())
}
