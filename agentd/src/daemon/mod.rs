//! `agentd daemon`: one process confines many runs for the users of group `agentd`, and
//! survives its own restart.
//!
//! - The eBPF runtime is loaded once, with maps and links pinned under the config's
//!   `pin_root` (bpffs), so killing the daemon detaches nothing.
//! - Each live run has a state file (`state`), written before its command starts.
//! - On start the daemon re-adopts every live run (`adopt`), lets the event router drain
//!   what the pinned ring kept while it was down, writes a `daemon_start` record naming
//!   the gap, and continues the same audit chain.
//! - The control socket (`socket`, `session`) speaks the protocol of `protocol`.
//! - sd_notify: `READY=1` once runs are re-adopted and the socket listens, `STATUS=`
//!   lines, `WATCHDOG=1` when the unit sets `WatchdogSec`, `RELOADING=1` on SIGHUP.

mod adopt;
mod attach;
pub mod config;
mod metrics;
mod policies;
pub mod protocol;
mod runs;
mod session;
pub mod socket;
mod state;
pub mod tokens;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::audit::event::{AuditEvent, DaemonReload, DaemonStart, DaemonStop};
use crate::audit::{AuditHandle, CheckpointPolicy, Decision, Flush};
use crate::layers::name;
use crate::probe::Probe;
use crate::supervisor::{Host, HostKind, HostOptions, RunOutcome};

pub use config::{Config, DEFAULT_CONFIG};

/// The built-in policy of a run that names none.
pub const DEFAULT_POLICY: &str = include_str!("../../../policies/default.yaml");

/// How often daemon.json's heartbeat is written.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("config: {0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Setup(#[from] crate::supervisor::SetupError),
    #[error("socket: {0}")]
    Socket(#[from] socket::SocketError),
    #[error("state: {0}")]
    State(#[from] state::StateError),
    #[error("audit: signing key {path}: {reason} (create one with `agentd keygen`, or set `unsigned_audit: true`)", path = .path.display())]
    Key { path: PathBuf, reason: String },
    #[error("tokens: {0}")]
    Tokens(#[from] tokens::StoreError),
    #[error("metrics: cannot listen on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the event loop: {0}")]
    Runtime(std::io::Error),
}

/// What every connection of the daemon shares.
pub struct Daemon {
    config: Mutex<Config>,
    pub host: Arc<Host>,
    pub registry: Arc<runs::Registry>,
    /// The gid of `group`, when it exists.
    pub group_gid: Option<u32>,
    pub group: String,
    /// The pin directory name of this daemon's eBPF object.
    pub object_id: String,
    started: Instant,
    restarts: u64,
    adopted: std::sync::atomic::AtomicUsize,
    audit: Mutex<AuditHandle>,
    pub tokens: tokens::Tokens,
    /// The policy texts of live runs, which their state files name by hash.
    pub policies: Arc<policies::PolicyStore>,
    /// The daemon's config and signing key: read-only to every run (`layers::protect`).
    pub protected: Vec<crate::layers::protect::ProtectedFile>,
}

impl Daemon {
    pub fn max_request(&self) -> usize {
        self.config().max_request_bytes
    }

    fn config(&self) -> std::sync::MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.config().runs_dir()
    }

    /// A record of the daemon's own (`run: daemon`).
    pub fn record(&self, decision: Option<Decision>, event: impl Into<AuditEvent>) {
        let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = audit.append(name::AGENTD, decision, event.into()) {
            tracing::error!("audit: {e}");
        }
    }

    /// Runs `fut` (a run's supervision) as a task; when it ends, the run's row says so
    /// and its state file goes, then its hold on its policy file.
    pub fn spawn_supervised<F>(self: &Arc<Self>, id: String, policy: policies::PolicyHold, fut: F)
    where
        F: Future<Output = RunOutcome> + Send + 'static,
    {
        let daemon = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = fut.await;
            state::remove_if_present(&state::run_path(&daemon.runs_dir(), &id));
            // After the state file: a state file always finds its policy file.
            drop(policy);
            tracing::info!(run = %id, code = outcome.code, "run ended");
            daemon.registry.finish(&id, runs::exited(&outcome));
            daemon.notify_status();
        });
    }

    /// `agentd status`.
    pub fn status(&self) -> protocol::DaemonStatus {
        let (rt, pinned, entries, dropped) = {
            let bpf = self.host.bpf();
            (
                bpf.status(),
                bpf.pinned_objects(),
                bpf.entries_total(),
                bpf.dropped().unwrap_or(0),
            )
        };
        protocol::DaemonStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            runs: self.registry.live(),
            programs: rt.globals,
            pin_dir: rt.pin_dir.map(|p| p.display().to_string()),
            pinned_objects: pinned,
            map_entries: entries,
            idle_net_tables: rt.idle_net_tables,
            kept_cgroup_programs: rt.kept_cgroup_programs,
            ring_dropped: dropped,
            unrouted_events: self.host.router.unrouted(),
            audit: self.host.audit_path.display().to_string(),
            audit_head_seq: audit_head_seq(&self.host.audit_path),
            restarts: self.restarts,
            adopted: self.adopted.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn notify_status(&self) {
        let runs = self.registry.live();
        notify(&[sd_notify::NotifyState::Status(&format!(
            "{runs} run(s); pid {}",
            std::process::id()
        ))]);
    }
}

/// The `seq` of the chain's last record (from the `.head` file, else the log's tail).
fn audit_head_seq(path: &Path) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))
        .ok()?;
    let mut tail = String::new();
    f.read_to_string(&mut tail).ok()?;
    tail.lines().rev().find_map(|l| {
        serde_json::from_str::<serde_json::Value>(l)
            .ok()?
            .get("seq")?
            .as_u64()
    })
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Not under a service manager (or an empty NOTIFY_SOCKET): nothing to tell.
    if std::env::var_os("NOTIFY_SOCKET").is_none_or(|s| s.is_empty()) {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("sd_notify: {e}");
    }
}

/// `agentd daemon [--config FILE]`.
pub fn main(config_path: Option<PathBuf>, metrics: Option<std::net::SocketAddr>) -> ExitCode {
    crate::heap::single_arena();
    let explicit = config_path.is_some();
    let path = config_path.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let config = match Config::load(&path, explicit) {
        Ok(mut c) => {
            c.metrics = metrics.or(c.metrics);
            c
        }
        Err(e) => {
            eprintln!("agentd: daemon: {e}");
            return ExitCode::from(crate::supervisor::EXIT_SETUP_FAILED);
        }
    };
    init_tracing(&config.log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("{}", DaemonError::Runtime(e));
            return ExitCode::from(crate::supervisor::EXIT_SETUP_FAILED);
        }
    };
    match rt.block_on(serve(config, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            notify(&[sd_notify::NotifyState::Status(&format!("failed: {e}"))]);
            ExitCode::from(crate::supervisor::EXIT_SETUP_FAILED)
        }
    }
}

/// Logs to stderr in a form journald keeps as it is: no colours, no timestamps (the
/// journal adds its own), the level first.
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

async fn serve(config: Config, config_path: PathBuf) -> Result<(), DaemonError> {
    let (checkpoints, signing_key) = if config.unsigned_audit {
        tracing::warn!("audit: unsigned_audit is set: checkpoints are not signed");
        (None, None)
    } else {
        let (key, path, generated) = daemon_key(&config.signing_key)?;
        let public_key = crate::audit::keys::key_hex(&key.verifying_key());
        if generated {
            tracing::warn!(
                "audit: no host signing key yet: generated {} (public key {public_key})",
                path.display()
            );
        }
        (
            Some(CheckpointPolicy {
                key,
                every: 1000,
                interval: Duration::from_secs(10),
            }),
            Some(crate::audit::event::SigningKeyUsed {
                path: path.display().to_string(),
                public_key,
                generated,
            }),
        )
    };
    // Tokens are MACed with a key derived from the host signing key.
    let token_secret = checkpoints.as_ref().map(|c| c.key.to_bytes());
    let tokens = tokens::Tokens::open(&config.state_dir, token_secret.as_ref())?;
    let daemon_state_path = config.state_dir.join("daemon.json");
    let previous: Option<state::DaemonState> = state::read_json(&daemon_state_path).ok();
    // Orphans of the runs come to the daemon, not init, and are reaped (SIGCHLD, and at
    // each run's teardown), so nothing of a run outlives it, not even a zombie.
    crate::supervisor::become_subreaper()?;
    let probe = Probe::detect();
    let host = Host::start(HostOptions {
        kind: HostKind::Daemon,
        probe,
        audit_path: config.audit.clone(),
        audit_label: "daemon".into(),
        checkpoints,
        signing_key,
        flush: Flush::Batch(Duration::from_millis(50)),
        dropped_poll: Duration::from_secs(1),
        pin_root: Some(config.pin_root.clone()),
        drops_reported: previous.as_ref().map_or(0, |p| p.drops_reported),
        router_paused: true,
    })?;
    // Every program is verified now, once, not at some run's launch.
    let lsm = host.probe.bpf_lsm.available;
    let unix_cgroup =
        crate::plan::unix_path(&host.probe) == Some(crate::layers::bpf::UnixPath::Cgroup);
    {
        let mut bpf = host.bpf();
        let progs = crate::layers::bpf::progs::all_for(lsm, bpf.syscall_exits());
        bpf.preload(&progs, unix_cgroup)
            .map_err(|e| crate::supervisor::setup_err(name::BPF, e))?;
    }
    host.bpf()
        .set_programs_linger(Duration::from_millis(config.programs_linger_ms));
    // Between back-to-back runs the kernel's cgroup-BPF keys stay on (see
    // layers::bpf::keeper), while the programs linger.
    match host.layout.own_v2_dir() {
        Ok(dir) => host.bpf().keep_cgroup_keys(&dir),
        Err(e) => tracing::warn!("no keeper cgroup: {e}"),
    }
    // Every program is loaded: aya's parse of the kernel BTF is needed no more.
    crate::layers::bpf::release_kernel_btf();
    let object_id = crate::layers::bpf::pins::object_id(crate::layers::bpf::object());
    let group_gid = nix::unistd::Group::from_name(&config.group)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw());
    if group_gid.is_none() {
        tracing::warn!(
            "group `{}` does not exist: only root can use the daemon",
            config.group
        );
    }
    let audit = host.audit("daemon")?;
    let mut protected = Vec::new();
    if config_path.exists() {
        protected.push(crate::layers::protect::ProtectedFile {
            path: config_path.clone(),
            what: "config",
        });
    }
    if let Some(key) = &host.signing_key {
        protected.push(crate::layers::protect::ProtectedFile {
            path: PathBuf::from(&key.path),
            what: "signing key",
        });
    }
    let daemon = Arc::new(Daemon {
        config: Mutex::new(config.clone()),
        host: Arc::clone(&host),
        registry: Arc::default(),
        group_gid,
        group: config.group.clone(),
        object_id,
        started: Instant::now(),
        restarts: previous.as_ref().map_or(0, |p| p.restarts + 1),
        adopted: std::sync::atomic::AtomicUsize::new(0),
        audit: Mutex::new(audit),
        tokens,
        policies: policies::PolicyStore::new(config.policies_dir()),
        protected,
    });
    // Re-adopt before anything is read from the ring, so what it kept reaches its runs.
    let report = adopt::adopt_all(&daemon, &config).await;
    daemon
        .adopted
        .store(report.adopted.len(), std::sync::atomic::Ordering::Relaxed);
    // The adopted runs hold their policy files; the rest are of runs that are gone.
    daemon.policies.sweep();
    let settled = daemon.host.bpf().settle(&report.adopted);
    match settled {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(
                "removed pins of runs no longer live: {}",
                removed.join(", ")
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("settling inherited eBPF state: {e}"),
    }
    let now = state::now_unix_ms();
    let pin_dir = daemon.host.bpf().pin_dir().map(|p| p.display().to_string());
    daemon.record(
        None,
        DaemonStart {
            pid: std::process::id(),
            config: config_path.display().to_string(),
            socket: config.socket.display().to_string(),
            pin_dir,
            restarts: daemon.restarts,
            previous_pid: previous.as_ref().map(|p| p.pid),
            // The gap: the previous daemon's last heartbeat until now.
            down_since_unix_ms: previous.as_ref().map(|p| p.heartbeat_unix_ms),
            down_ms: previous
                .as_ref()
                .map(|p| now.saturating_sub(p.heartbeat_unix_ms)),
            adopted: report.adopted.clone(),
            not_adopted: report.failed.clone(),
            kernel: daemon.host.probe.kernel.clone(),
        },
    );
    // Now the ring: what it kept while no daemon ran goes to the re-adopted runs, and
    // what it could not keep is counted in a `dropped` record.
    daemon.host.router.resume();
    let listener = socket::bind(&config.socket, group_gid)?;
    let token_listener = socket::bind_open(&config.token_socket)?;
    if let Some(addr) = config.metrics {
        let l = metrics::bind(addr)
            .await
            .map_err(|source| DaemonError::Metrics { addr, source })?;
        tracing::info!("metrics on http://{addr}/metrics");
        metrics::spawn(Arc::clone(&daemon), l);
    }
    write_daemon_state(&daemon, &daemon_state_path, now)?;
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!(
            "listening on {}; {} run(s) re-adopted",
            config.socket.display(),
            report.adopted.len()
        )),
    ]);
    tracing::info!(
        "agentd daemon ready on {} ({} run(s) re-adopted)",
        config.socket.display(),
        report.adopted.len()
    );
    spawn_heartbeat(Arc::clone(&daemon), daemon_state_path.clone(), now);
    spawn_heap_trim();
    spawn_program_reaper(Arc::clone(&daemon));
    accept_loop(daemon, listener, token_listener, config_path).await
}

/// How often the daemon looks for global programs whose linger has passed.
const REAP_PROGRAMS_EVERY: Duration = Duration::from_millis(250);

/// Detaches the global programs no run has held for `programs_linger_ms`.
fn spawn_program_reaper(daemon: Arc<Daemon>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REAP_PROGRAMS_EVERY);
        loop {
            tick.tick().await;
            let detached = daemon.host.bpf().reap_idle_programs(false);
            if !detached.is_empty() {
                tracing::debug!("detached idle programs: {}", detached.join(", "));
            }
        }
    });
}

/// How often the daemon gives its heap's free pages back to the kernel.
const HEAP_TRIM_EVERY: Duration = Duration::from_secs(10);

/// glibc keeps the pages of freed memory for later allocations: the ~5 MB of kernel BTF
/// that start-up parses and drops, and what each run's set-up and teardown free, would
/// stay in the daemon's RSS for good (about 8 MiB after start-up, measured). Trimming
/// once now and then every [`HEAP_TRIM_EVERY`] costs a walk of the arenas' free lists.
fn spawn_heap_trim() {
    crate::heap::trim();
    tokio::spawn(async {
        let mut tick = tokio::time::interval(HEAP_TRIM_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            crate::heap::trim();
        }
    });
}

/// The key that signs the daemon's chain: the configured file; when that is the host
/// key's default place and neither half exists, a new host key is made there (the first
/// start on a fresh host), as a standalone root run would.
fn daemon_key(path: &Path) -> Result<(ed25519_dalek::SigningKey, PathBuf, bool), DaemonError> {
    let key_err = |reason: String| DaemonError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let host_dir = crate::audit::keys::host_key_dir();
    if path == host_dir.join(crate::audit::keys::SECRET_FILE) {
        let host = crate::audit::keys::host_key(&host_dir).map_err(|e| key_err(e.to_string()))?;
        return Ok((host.key, host.path, host.generated));
    }
    crate::audit::keys::load_signing_key(path)
        .map(|k| (k, path.to_path_buf(), false))
        .map_err(|e| key_err(e.to_string()))
}

fn write_daemon_state(
    daemon: &Daemon,
    path: &Path,
    started_unix_ms: u64,
) -> Result<(), state::StateError> {
    state::write_json(
        path,
        &state::DaemonState {
            pid: std::process::id(),
            started_unix_ms,
            heartbeat_unix_ms: state::now_unix_ms(),
            drops_reported: daemon.host.router.drops_reported(),
            restarts: daemon.restarts,
        },
    )
}

/// The watchdog period systemd asks for, as libsystemd's `sd_watchdog_enabled` reads it:
/// `WATCHDOG_USEC` set, and `WATCHDOG_PID` either unset or this process. (sd_notify's own
/// `watchdog_enabled` demands `WATCHDOG_PID`, which a manager need not set.)
fn watchdog_period(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec = usec?.trim().parse::<u64>().ok().filter(|u| *u > 0)?;
    match pid.map(|p| p.trim().parse::<u32>()) {
        None => Some(Duration::from_micros(usec)),
        Some(Ok(p)) if p == me => Some(Duration::from_micros(usec)),
        Some(_) => None,
    }
}

/// daemon.json every second, and `WATCHDOG=1` at half the watchdog period.
fn spawn_heartbeat(daemon: Arc<Daemon>, path: PathBuf, started_unix_ms: u64) {
    let watchdog = watchdog_period(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    );
    let every = watchdog.map_or(HEARTBEAT, |period| (period / 2).min(HEARTBEAT));
    let watchdog = watchdog.is_some();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = write_daemon_state(&daemon, &path, started_unix_ms) {
                tracing::warn!("{e}");
            }
            if watchdog {
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
        }
    });
}

async fn accept_loop(
    daemon: Arc<Daemon>,
    listener: tokio::net::UnixListener,
    token_listener: tokio::net::UnixListener,
    config_path: PathBuf,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let sig = |k| signal(k).map_err(DaemonError::Runtime);
    let mut hup = sig(SignalKind::hangup())?;
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut chld = sig(SignalKind::child())?;
    loop {
        tokio::select! {
            _ = chld.recv() => {
                crate::supervisor::sweep_run_zombies();
            }
            conn = listener.accept() => accepted(&daemon, conn, false).await,
            conn = token_listener.accept() => accepted(&daemon, conn, true).await,
            _ = hup.recv() => reload(&daemon, &config_path),
            _ = term.recv() => return stop(&daemon, "SIGTERM"),
            _ = int.recv() => return stop(&daemon, "SIGINT"),
        }
    }
}

/// Serves a new connection as its own task; `token_only`: from the token socket.
async fn accepted(
    daemon: &Arc<Daemon>,
    conn: std::io::Result<(tokio::net::UnixStream, tokio::net::unix::SocketAddr)>,
    token_only: bool,
) {
    match conn {
        Ok((stream, _)) => {
            tokio::spawn(session::serve(Arc::clone(daemon), stream, token_only));
        }
        Err(e) => {
            tracing::warn!("accept: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// SIGHUP: re-reads the config. Settings that need a restart (socket, state, pins,
/// audit) are reported and kept; runs go on untouched.
fn reload(daemon: &Daemon, path: &Path) {
    notify(&[sd_notify::NotifyState::Reloading]);
    match Config::load(path, true) {
        Ok(new) => {
            let mut cfg = daemon.config();
            let restart_needed: Vec<&str> = [
                ("socket", new.socket != cfg.socket),
                ("token_socket", new.token_socket != cfg.token_socket),
                ("state_dir", new.state_dir != cfg.state_dir),
                ("pin_root", new.pin_root != cfg.pin_root),
                ("audit", new.audit != cfg.audit),
                ("signing_key", new.signing_key != cfg.signing_key),
                ("unsigned_audit", new.unsigned_audit != cfg.unsigned_audit),
                ("group", new.group != cfg.group),
                ("metrics", new.metrics != cfg.metrics),
            ]
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(k, _)| k)
            .collect();
            if !restart_needed.is_empty() {
                tracing::warn!(
                    "config reload: {} change(s) take effect at the next start",
                    restart_needed.join(", ")
                );
            }
            cfg.max_request_bytes = new.max_request_bytes;
            cfg.client_grace_secs = new.client_grace_secs;
            cfg.programs_linger_ms = new.programs_linger_ms;
            daemon
                .host
                .bpf()
                .set_programs_linger(Duration::from_millis(new.programs_linger_ms));
            cfg.log = new.log.clone();
            drop(cfg);
            daemon.record(
                None,
                DaemonReload {
                    config: path.display().to_string(),
                    needs_restart: restart_needed.iter().map(|s| (*s).to_owned()).collect(),
                },
            );
            tracing::info!("config reloaded from {}", path.display());
        }
        Err(e) => tracing::error!("config reload failed, keeping the old one: {e}"),
    }
    notify(&[sd_notify::NotifyState::Ready]);
    daemon.notify_status();
}

/// SIGTERM/SIGINT: the daemon goes, its runs stay (their enforcement is pinned, and the
/// next daemon re-adopts them). The process exits without tearing any run down.
fn stop(daemon: &Daemon, why: &str) -> Result<(), DaemonError> {
    notify(&[sd_notify::NotifyState::Stopping]);
    daemon.record(
        None,
        DaemonStop {
            signal: why.to_owned(),
            runs_left_running: daemon.registry.live(),
        },
    );
    // What no run holds goes now: nothing would detach it once the daemon is gone.
    {
        let mut bpf = daemon.host.bpf();
        bpf.reap_idle_programs(true);
        bpf.drop_keeper();
    }
    if let Err(e) = daemon.host.finish_audit() {
        tracing::error!("audit: {e}");
    }
    tracing::info!(
        "stopping on {why}; {} run(s) keep running",
        daemon.registry.live()
    );
    // Exiting here, not returning: dropping the runs' tasks would tear them down.
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_period_follows_sd_watchdog_enabled() {
        let half_second = Some(Duration::from_micros(500_000));
        assert_eq!(watchdog_period(Some("500000"), None, 7), half_second);
        assert_eq!(watchdog_period(Some("500000"), Some("7"), 7), half_second);
        assert_eq!(watchdog_period(Some("500000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("500000"), Some("x"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("soon"), None, 7), None);
        assert_eq!(watchdog_period(None, Some("7"), 7), None);
    }
}
