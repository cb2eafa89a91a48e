//! The tools the benchmarks compare, each a command prefix that the workload's own argv
//! is appended to: bare, `env` (a no-op wrapper, so the reader sees the noise),
//! `agentd run` (standalone), `agentd daemon` (skipped until the daemon exists),
//! bubblewrap and firejail, each with the same confinement as far as the tool can
//! express it. A new variant is one more entry in [`TOOLS`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util;

/// One tool, ready to run workloads.
pub struct Tool {
    pub name: &'static str,
    /// What comes before the workload's argv.
    pub prefix: Vec<OsString>,
    /// Environment it is started with (not a wrapper: no exec more than the tool's own).
    pub env: Vec<(OsString, OsString)>,
    /// The confinement it applies, for results.md.
    pub settings: String,
    /// What must be idle again before another tool is measured (the daemon's lingering
    /// global programs, which every syscall of the host pays while they are attached).
    pub settle: Option<Settle>,
    /// A helper that must outlive every run through this tool (the daemon); dropped last.
    pub _service: Option<Service>,
}

/// A daemon whose global programs linger after its last run (`programs_linger_ms`).
pub struct Settle {
    pub bin: PathBuf,
    pub socket: PathBuf,
}

impl Settle {
    /// Waits (up to 10 s) until `agentd status` lists no attached global program.
    pub fn wait(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = util::output(
                Command::new(&self.bin)
                    .args(["status", "--json"])
                    .env("AGENTD_SOCKET", &self.socket),
            )
            .unwrap_or_default();
            let idle = serde_json::from_str::<serde_json::Value>(&status)
                .ok()
                .and_then(|v| {
                    v.get("programs")
                        .and_then(|p| p.as_array())
                        .map(Vec::is_empty)
                })
                .unwrap_or(false);
            if idle {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the daemon at {} still has programs attached 10 s after its runs: {status}",
                    self.socket.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Tool {
    /// `prefix + argv`, started in the workspace.
    pub fn command(&self, ws: &Path, argv: &[OsString]) -> Command {
        let mut all = self.prefix.iter().chain(argv);
        let mut c = Command::new(all.next().unwrap_or(&OsString::new()));
        c.args(all).current_dir(ws).envs(self.env.iter().cloned());
        c
    }
}

/// What setting a tool up gave.
pub enum Setup {
    Ready(Tool),
    /// The tool cannot run here; the reason goes into results.md.
    Skipped(String),
}

/// Sets one tool up; an `Err` is a failure of the benchmark itself.
type Make = fn(&Env) -> Result<Setup, String>;

/// Every tool, in the order of the tables. Bare must come first: ratios are to it.
pub const TOOLS: &[(&str, Make)] = &[
    ("bare", bare),
    ("env", env),
    ("agentd", agentd_standalone),
    ("agentd daemon", agentd_daemon),
    ("bwrap", bwrap),
    ("firejail", firejail),
];

/// What the tools confine: the same paths for all of them.
pub struct Env {
    pub agentd: Agentd,
    /// The workloads' working directory, writable (`{workspace}` of the policy).
    pub ws: PathBuf,
    /// Read-only: the workload program and the mix script.
    pub bin_dir: PathBuf,
    /// agentd's audit logs: outside every directory a run may write.
    pub logs: PathBuf,
    /// The policy of the agentd runs (preset + benchmark programs + 1,000 net rules).
    pub policy: PathBuf,
}

/// The `agentd` binary and how the benchmarks start runs with it.
pub struct Agentd {
    pub bin: PathBuf,
    pub key: PathBuf,
    /// `agentd run` knows `--user` (as root without SUDO_UID it then requires it).
    user_flag: bool,
    /// `agentd run` knows `--standalone` (a daemon may be reachable).
    standalone_flag: bool,
}

impl Agentd {
    /// Makes (once) the bench's signing key in `key_dir` and probes the CLI.
    pub fn new(bin: &Path, key_dir: &Path) -> Result<Self, String> {
        let key = util::ensure_signing_key(bin, key_dir)?;
        let help = util::output(Command::new(bin).args(["run", "--help"]))
            .ok_or_else(|| format!("{} run --help failed", bin.display()))?;
        Ok(Self {
            bin: bin.to_owned(),
            key,
            user_flag: help.contains("--user"),
            standalone_flag: help.contains("--standalone"),
        })
    }

    /// The one place the benchmarks build an `agentd run` command line: everything up to
    /// and including `--`; the command follows. The child runs as root (`--user root`
    /// where this agentd has the flag), signs with the bench key, and logs to `audit`.
    pub fn run_argv(&self, policy: &Path, audit: &Path, ws: Option<&Path>) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![self.bin.clone().into(), "run".into()];
        if self.standalone_flag {
            v.push("--standalone".into());
        }
        if self.user_flag {
            v.extend(["--user".into(), "root".into()]);
        }
        v.extend(["--policy".into(), policy.into()]);
        v.extend(["--audit".into(), audit.into()]);
        v.extend(["--signing-key".into(), self.key.clone().into()]);
        if let Some(ws) = ws {
            v.extend(["--workspace".into(), ws.into()]);
        }
        v.push("--".into());
        v
    }

    /// A run through a daemon: everything up to and including `--`. The client finds
    /// the daemon's socket in its environment ([`Self::daemon_env`]).
    pub fn daemon_run_argv(&self, policy: &Path, ws: &Path) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![self.bin.clone().into(), "run".into()];
        v.extend(["--user".into(), "root".into()]);
        v.extend(["--policy".into(), policy.into()]);
        v.extend(["--workspace".into(), ws.into(), "--".into()]);
        v
    }

    /// `AGENTD_SOCKET=socket`: tells the client where the daemon listens.
    pub fn daemon_env(socket: &Path) -> (OsString, OsString) {
        ("AGENTD_SOCKET".into(), socket.into())
    }

    /// [`Self::run_argv`] as a `Command`; add the confined command with `.arg(..)`.
    pub fn run(&self, policy: &Path, audit: &Path) -> Command {
        let argv = self.run_argv(policy, audit, None);
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }

    /// Whether `agentd --help` lists `sub` as a subcommand.
    pub fn has_subcommand(&self, sub: &str) -> bool {
        util::output(Command::new(&self.bin).arg("--help"))
            .is_some_and(|h| h.lines().any(|l| l.split_whitespace().next() == Some(sub)))
    }
}

fn bare(_: &Env) -> Result<Setup, String> {
    Ok(Setup::Ready(Tool {
        name: "bare",
        prefix: Vec::new(),
        env: Vec::new(),
        settings: "no confinement".into(),
        settle: None,
        _service: None,
    }))
}

fn env(_: &Env) -> Result<Setup, String> {
    Ok(Setup::Ready(Tool {
        name: "env",
        prefix: vec!["/usr/bin/env".into()],
        env: Vec::new(),
        settings: "`/usr/bin/env`: a no-op wrapper (one more exec); its ratio is the noise".into(),
        settle: None,
        _service: None,
    }))
}

fn agentd_standalone(e: &Env) -> Result<Setup, String> {
    Ok(Setup::Ready(Tool {
        name: "agentd",
        prefix: e
            .agentd
            .run_argv(&e.policy, &e.logs.join("runs.jsonl"), Some(&e.ws)),
        env: Vec::new(),
        settings: format!(
            "`agentd run --policy {}`: policies/python-agent.yaml (landlock fs read/write, \
             exec allow list, seccomp, capabilities dropped, no_new_privs, cgroup budgets) \
             plus the workload programs in `exec.allow` and `fs.read`, and a 1,000-rule \
             `net.allow` list (cgroup connect4 + LPM trie); every run writes a signed, \
             hash-chained audit log",
            e.policy.display()
        ),
        settle: None,
        _service: None,
    }))
}

/// Runs through `agentd daemon`. To add the variant: start the daemon here as a
/// [`Service`] (`Service::start`, waiting until its socket answers), and return
/// `Setup::Ready` with the prefix of a run through it (the client command line up to
/// `--`, built next to [`Agentd::run_argv`]). Every workload, the launch latency and the
/// outside-cost table then measure it; nothing else changes.
fn agentd_daemon(e: &Env) -> Result<Setup, String> {
    if !e.agentd.has_subcommand("daemon") {
        return Ok(Setup::Skipped(format!(
            "{} has no `daemon` subcommand yet",
            e.agentd.bin.display()
        )));
    }
    let (service, socket) = start_daemon(e)?;
    Ok(Setup::Ready(Tool {
        name: "agentd daemon",
        prefix: e.agentd.daemon_run_argv(&e.policy, &e.ws),
        env: vec![Agentd::daemon_env(&socket)],
        settings: format!(
            "`agentd run --policy {}` through `agentd daemon` (its socket in {}): the same \
             policy as `agentd`; the daemon loaded and verified the programs once, each run \
             is a slot in the shared, pinned runtime, and the daemon writes one signed chain",
            e.policy.display(),
            socket.display()
        ),
        settle: Some(Settle {
            bin: e.agentd.bin.clone(),
            socket: socket.clone(),
        }),
        _service: Some(service),
    }))
}

/// Starts a daemon of the bench's own (socket, state, pins, log under `logs/daemon`,
/// members: root's group); returns it with its socket.
pub fn start_daemon(e: &Env) -> Result<(Service, PathBuf), String> {
    let dir = e.logs.join("daemon");
    let _ = std::fs::remove_dir_all(dir.join("state"));
    std::fs::create_dir_all(&dir).map_err(|err| format!("create {}: {err}", dir.display()))?;
    let socket = dir.join("agentd.sock");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "socket: {d}/agentd.sock\ngroup: root\nstate_dir: {d}/state\naudit: {d}/audit.jsonl\n\
             signing_key: {key}\npin_root: {d}/bpffs/agentd\nlog: warn\n",
            d = dir.display(),
            key = e.agentd.key.display()
        ),
    )
    .map_err(|err| format!("write {}: {err}", config.display()))?;
    let mut cmd = Command::new(&e.agentd.bin);
    cmd.arg("daemon").arg("--config").arg(&config);
    let probe = socket.clone();
    let service = Service::start(cmd, move || {
        std::os::unix::net::UnixStream::connect(&probe).is_ok()
    })?
    .unmount_after(dir.join("bpffs"));
    Ok((service, socket))
}

/// The /etc files the python-agent preset lets a run read (those that exist here).
const ETC_READ: &[&str] = &["ld.so.cache", "ssl", "hosts", "localtime"];

fn etc_files() -> Vec<&'static str> {
    ETC_READ
        .iter()
        .copied()
        .filter(|f| Path::new("/etc").join(f).exists())
        .collect()
}

fn bwrap(e: &Env) -> Result<Setup, String> {
    let bin = "/usr/bin/bwrap";
    if !Path::new(bin).exists() {
        return Err(format!("{bin} is missing after the apt install"));
    }
    let mut p: Vec<OsString> = vec![bin.into()];
    let mut add = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        p.extend(args.iter().map(|a| a.as_ref().to_owned()));
    };
    add(&[&"--unshare-all", &"--share-net", &"--die-with-parent"]);
    add(&[&"--new-session", &"--cap-drop", &"ALL"]);
    add(&[&"--ro-bind", &"/usr", &"/usr"]);
    // Merged /usr: the top-level names are symlinks into it.
    for l in ["lib", "lib64", "bin", "sbin"] {
        let top = Path::new("/").join(l);
        match std::fs::read_link(&top) {
            Ok(target) => add(&[&"--symlink", &target, &top]),
            Err(_) if top.is_dir() => add(&[&"--ro-bind", &top, &top]),
            Err(_) => {}
        }
    }
    for f in etc_files() {
        let path = Path::new("/etc").join(f);
        add(&[&"--ro-bind", &path, &path]);
    }
    add(&[&"--dev", &"/dev", &"--bind", &"/tmp", &"/tmp"]);
    add(&[
        &"--bind",
        &e.ws,
        &e.ws,
        &"--ro-bind",
        &e.bin_dir,
        &e.bin_dir,
    ]);
    add(&[&"--chdir", &e.ws, &"--"]);
    Ok(Setup::Ready(Tool {
        name: "bwrap",
        settings: format!(
            "`{}`: a new mount namespace that holds only /usr (read-only), the /etc files \
             of the preset, the workspace and /tmp (read-write), a minimal /dev and the \
             workload programs; no /proc (agentd's runs cannot read it either); user, pid, \
             ipc, uts and cgroup namespaces; all capabilities dropped. No exec allow list \
             (any visible file runs), no seccomp filter (bwrap takes one only as compiled \
             BPF on an fd), no audit. Host network shared: bwrap has no per-address \
             filter, and a new network namespace would cut the loopback listener off",
            shown(&p)
        ),
        prefix: p,
        env: Vec::new(),
        settle: None,
        _service: None,
    }))
}

fn firejail(e: &Env) -> Result<Setup, String> {
    let bin = "/usr/bin/firejail";
    if !Path::new(bin).exists() {
        return Err(format!("{bin} is missing after the apt install"));
    }
    let mut p: Vec<OsString> = vec![bin.into()];
    let flag = |k: &str, v: &Path| OsString::from(format!("--{k}={}", v.display()));
    for f in [
        "--noprofile",
        "--quiet",
        "--caps.drop=all",
        "--nonewprivs",
        "--seccomp",
        "--protocol=unix,inet,inet6",
        "--private-dev",
    ] {
        p.push(f.into());
    }
    p.push(format!("--private-etc={}", etc_files().join(",")).into());
    p.push("--read-only=/".into());
    for d in [&e.ws, &e.bin_dir] {
        p.push(flag("whitelist", d));
    }
    for d in [e.ws.as_path(), Path::new("/tmp")] {
        p.push(flag("read-write", d));
        p.push(flag("noexec", d));
    }
    let blacklist = hidden_top_level(&[&e.ws, &e.bin_dir])?;
    for d in &blacklist {
        p.push(flag("blacklist", d));
    }
    p.push("--".into());
    Ok(Setup::Ready(Tool {
        name: "firejail",
        settings: format!(
            "`{}` (as root): / read-only; the workspace and /tmp read-write and noexec; \
             the workload programs whitelisted; /etc replaced by the preset's files; a \
             private /dev; every other top-level entry blacklisted except /run (firejail \
             needs /run/firejail), /proc and /sys; all capabilities dropped, \
             no_new_privs, firejail's default seccomp filter, sockets limited to \
             unix/inet/inet6. No exec allow list (noexec on the writable trees only), no \
             audit. Host network shared: `--net=none` would cut the loopback listener off, \
             and firejail's `--netfilter` needs a network namespace",
            shown(&p)
        ),
        prefix: p,
        env: Vec::new(),
        settle: None,
        _service: None,
    }))
}

/// Top-level entries of / that the python-agent preset does not let a run see, other
/// than those firejail must keep (/run, /proc, /sys, /dev) and the roots of `keep`.
fn hidden_top_level(keep: &[&Path]) -> Result<Vec<PathBuf>, String> {
    let allowed = ["usr", "etc", "tmp", "dev", "proc", "sys", "run"];
    let kept_roots: Vec<OsString> = keep
        .iter()
        .filter_map(|p| p.components().nth(1).map(|c| c.as_os_str().to_owned()))
        .collect();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/").map_err(|e| format!("read /: {e}"))? {
        let entry = entry.map_err(|e| format!("read /: {e}"))?;
        let name = entry.file_name();
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(true);
        if is_link || allowed.iter().any(|a| name == *a) || kept_roots.contains(&name) {
            continue;
        }
        out.push(Path::new("/").join(name));
    }
    out.sort();
    Ok(out)
}

fn shown(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A helper process a tool needs (the daemon), stopped by pid when dropped.
pub struct Service {
    child: Child,
    /// A mount the service made, unmounted once it is gone (the daemon's bpffs).
    unmount: Option<PathBuf>,
}

impl Service {
    /// Starts `cmd` and waits up to 60 s until `ready()` holds (a debug daemon verifies
    /// every program at start).
    pub fn start(mut cmd: Command, ready: impl Fn() -> bool) -> Result<Self, String> {
        let shown = format!("{cmd:?}");
        let child = cmd
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("start {shown}: {e}"))?;
        let service = Self {
            child,
            unmount: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            if Instant::now() > deadline {
                return Err(format!("{shown} was not ready after 60 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(service)
    }
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Unmounts `path` (lazily) once the service has stopped.
    pub fn unmount_after(mut self, path: PathBuf) -> Self {
        self.unmount = Some(path);
        self
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        terminate(&mut self.child);
        if let Some(p) = self.unmount.take() {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&p)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// SIGTERM to a child this benchmark started (by its pid), SIGKILL after 5 s; reaps it.
pub fn terminate(child: &mut Child) {
    // kill(1): xtask has no libc dependency, and std can only send SIGKILL.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The agentd path measured, from doctor's `bpf-lsm` row and its `inode rules` line.
pub fn agentd_path(doctor: &str) -> String {
    let lsm = doctor
        .lines()
        .find_map(|l| l.strip_prefix("bpf-lsm"))
        .is_some_and(|rest| rest.split_whitespace().next() == Some("yes"));
    let inode = doctor
        .lines()
        .find_map(|l| l.strip_prefix("inode rules (fs.deny, fs.secret, taint): "))
        .unwrap_or("(doctor printed no inode rules line)");
    let path = if lsm {
        "BPF LSM path"
    } else {
        "tracepoint fallback (BPF LSM does not load)"
    };
    format!("{path}; inode rules: {inode}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_comes_from_doctor() {
        let fallback = "bpf-lsm         no         not used\n\
                        inode rules (fs.deny, fs.secret, taint): tracepoint fallback (x)\n";
        assert_eq!(
            agentd_path(fallback),
            "tracepoint fallback (BPF LSM does not load); inode rules: tracepoint fallback (x)"
        );
        let lsm = "bpf-lsm         yes        fs rules\n\
                   inode rules (fs.deny, fs.secret, taint): lsm path\n";
        assert!(agentd_path(lsm).starts_with("BPF LSM path; inode rules: lsm path"));
    }
}
