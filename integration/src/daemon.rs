//! A real `agentd daemon` for one test: its own socket, state directory, audit log and
//! bpffs (mounted by the daemon itself under the test's directory), a NOTIFY_SOCKET the
//! test reads, and clients run as root or as a test user. Dropping it kills the daemon,
//! every run it left and unmounts its bpffs.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{agentd_bin, read_audit, require_root, TestUser};

/// How long a daemon may take to say READY=1 (a debug build verifies every program).
const READY_WITHIN: Duration = Duration::from_secs(120);

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub group: String,
    child: Option<Child>,
    /// Every datagram the daemon sent to NOTIFY_SOCKET.
    pub notified: Arc<Mutex<Vec<String>>>,
    notify_path: PathBuf,
    /// Environment the daemon is started with, beside NOTIFY_SOCKET.
    env: Vec<(String, String)>,
    /// Arguments after `daemon --config FILE` (e.g. `--metrics ADDR`), kept across restarts.
    args: Vec<String>,
}

impl TestDaemon {
    /// A daemon whose members are the group `group` (which must exist).
    pub fn start(group: &str) -> Self {
        Self::launch(group, &[], &[])
    }

    /// A daemon started as `agentd daemon --config FILE ARGS`.
    pub fn start_with(group: &str, args: &[&str]) -> Self {
        Self::launch(group, args, &[])
    }

    /// A daemon started with `env` set, as a service manager would (e.g. WATCHDOG_USEC).
    pub fn start_with_env(group: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(group, &[], env)
    }

    fn launch(group: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("agentd-itd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        // Test users must reach the socket and their workspaces below this directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod: {e}"));
        let config = format!(
            "socket: {d}/agentd.sock\ntoken_socket: {d}/agentd-token.sock\ngroup: {group}\nstate_dir: {d}/state\naudit: {d}/audit.jsonl\nunsigned_audit: true\npin_root: {d}/bpffs/agentd\nclient_grace_secs: 30\nlog: info\n",
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yaml"), config)
            .unwrap_or_else(|e| panic!("write config: {e}"));
        let notify_path = dir.path().join("notify.sock");
        let mut d = Self {
            dir,
            group: group.to_owned(),
            child: None,
            notified: Arc::default(),
            notify_path,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        d.spawn();
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agentd.sock")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Starts the daemon and waits for READY=1.
    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.notify_path);
        let sock = UnixDatagram::bind(&self.notify_path)
            .unwrap_or_else(|e| panic!("bind {}: {e}", self.notify_path.display()));
        let seen = Arc::clone(&self.notified);
        let before = seen.lock().map(|v| v.len()).unwrap_or(0);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                if let Ok(mut v) = seen.lock() {
                    v.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap_or_else(|e| panic!("daemon.log: {e}"));
        let child = Command::new(agentd_bin())
            .arg("daemon")
            .arg("--config")
            .arg(self.config_path())
            .args(&self.args)
            .env("NOTIFY_SOCKET", &self.notify_path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("AGENTD_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn agentd daemon: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let ready = self
                .notified
                .lock()
                .map(|v| {
                    v.iter()
                        .skip(before)
                        .any(|m| m.lines().any(|l| l == "READY=1"))
                })
                .unwrap_or(false);
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "the daemon exited with {status} before READY=1:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no READY=1 within {READY_WITHIN:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new daemon on the same directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `agentd ARGS` as root, talking to this daemon.
    pub fn client(&self) -> Command {
        let mut c = Command::new(agentd_bin());
        c.env("AGENTD_SOCKET", self.socket())
            .env(
                "AGENTD_TOKEN_SOCKET",
                self.dir.path().join("agentd-token.sock"),
            )
            .env_remove("AGENTD_TOKEN")
            .env_remove("AGENTD_USER")
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .current_dir(self.dir.path());
        c
    }

    /// `agentd ARGS` as `user` (its uid, its own group and `groups`), in `cwd`.
    pub fn client_as(&self, user: &TestUser, groups: &[u32], cwd: &Path) -> Command {
        let mut c = self.client();
        let (uid, gid) = (user.uid, user.gid);
        let mut all: Vec<libc::gid_t> = vec![gid];
        all.extend_from_slice(groups);
        c.current_dir(cwd).env("HOME", cwd);
        // SAFETY: between fork and exec only raw setgroups/setgid/setuid on data
        // prepared before the fork (no allocation, no locks).
        unsafe {
            c.pre_exec(move || {
                if libc::setgroups(all.len(), all.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }

    /// A directory `user` owns, for its workspace and cwd.
    pub fn home_of(&self, user: &TestUser) -> PathBuf {
        let d = self.dir.path().join(format!("home-{}", user.name));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir: {e}"));
        std::os::unix::fs::chown(&d, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("chown: {e}"));
        d
    }

    /// Writes a policy file readable by everyone.
    pub fn policy(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).unwrap_or_else(|e| panic!("write policy: {e}"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("chmod: {e}"));
        p
    }

    pub fn audit(&self) -> Vec<Value> {
        read_audit(&self.audit_path())
    }

    /// `agentd status --json`.
    pub fn status(&self) -> Value {
        let o = self
            .client()
            .args(["status", "--json"])
            .output()
            .unwrap_or_else(|e| panic!("agentd status: {e}"));
        assert!(
            o.status.success(),
            "status: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("status json: {e}"))
    }

    /// `agentd run --detach --user root --policy POLICY -- testprog ARGS` as root, with
    /// no terminal; asserts the client exits 0 (the run goes on).
    pub fn run_detached_as_root(&self, policy: &Path, args: &[&str]) {
        let status = self
            .client()
            .args(["run", "--detach", "--user", "root", "--policy"])
            .arg(policy)
            .arg("--")
            .arg(crate::testprog())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("agentd run --detach: {e}"));
        assert_eq!(status.code(), Some(0));
    }

    /// `GET /metrics` from the endpoint at `addr`: the body.
    pub fn scrape(addr: std::net::SocketAddr) -> String {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agentd\r\n\r\n")
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut reply = String::new();
        s.read_to_string(&mut reply)
            .unwrap_or_else(|e| panic!("read: {e}"));
        let (head, body) = reply
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP head in {reply:?}"));
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        body.to_owned()
    }

    /// `agentd detach RUN` as root; it must succeed.
    pub fn detach(&self, run: &str) {
        let o = self
            .client()
            .args(["detach", run])
            .output()
            .unwrap_or_else(|e| panic!("agentd detach: {e}"));
        crate::assert_status(&o, 0);
    }

    /// The row of run `run` in `agentd ps --json`; it must be there.
    pub fn ps_row(&self, run: &str) -> Value {
        let ps = self.ps();
        ps.iter()
            .find(|r| r["run"] == run)
            .cloned()
            .unwrap_or_else(|| panic!("no run {run} in {ps:#?}\n{}", self.log()))
    }

    /// `agentd ps --json` as root.
    pub fn ps(&self) -> Vec<Value> {
        let o = self
            .client()
            .args(["ps", "--json"])
            .output()
            .unwrap_or_else(|e| panic!("agentd ps: {e}"));
        assert!(
            o.status.success(),
            "ps: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("ps json: {e}"))
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        // SIGKILL skips the daemon's own removal of its keeper cgroup (a later daemon's
        // start would sweep it): this harness removes it.
        let keeper = keeper_dir_of(self.pid());
        self.kill();
        let _ = std::fs::remove_dir(keeper);
        if std::env::var_os("AGENTD_IT_KEEP").is_some() {
            eprintln!(
                "AGENTD_IT_KEEP: daemon directory {}",
                self.dir.path().display()
            );
            eprintln!("{}", self.log());
        }
        // Runs it left (a test that failed half-way): kill them through their cgroups.
        if let Ok(entries) = std::fs::read_dir(self.state_dir().join("runs")) {
            for e in entries.flatten() {
                let Ok(text) = std::fs::read_to_string(e.path()) else {
                    continue;
                };
                let Ok(state) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                for leaf in state["cgroups"].as_array().into_iter().flatten() {
                    if let (Some("cgroup2"), Some(path)) = (leaf[0].as_str(), leaf[1].as_str()) {
                        let _ = std::fs::write(Path::new(path).join("cgroup.kill"), "1");
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
                for leaf in state["cgroups"].as_array().into_iter().flatten() {
                    if let Some(path) = leaf[1].as_str() {
                        let _ = std::fs::remove_dir(path);
                    }
                }
            }
        }
        if let Ok(path) =
            std::ffi::CString::new(self.dir.path().join("bpffs").as_os_str().as_encoded_bytes())
        {
            // SAFETY: umount2 with a NUL-terminated path that lives across the call.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Reads a child's stdout line by line as it comes.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    pub fn of(child: &mut Child) -> Self {
        let out = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("the child's stdout is not piped"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { rx }
    }

    /// The next line within `within`.
    pub fn next(&self, within: Duration) -> String {
        self.rx
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("no line within {within:?}: {e}"))
    }
}

/// Waits for a child with a deadline; kills it past that.
pub fn wait_output(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child
                .wait_with_output()
                .unwrap_or_else(|e| panic!("wait: {e}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output();
            panic!("still running after {within:?}: {o:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The keeper cgroup of daemon `pid`: `agentd-keep-PID` in its own v2 cgroup.
pub fn keeper_dir_of(pid: u32) -> std::path::PathBuf {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mount = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .and_then(|f| f.get(1).map(|m| (*m).to_owned()))
        .unwrap_or_default();
    std::path::Path::new(&mount)
        .join(own.trim_start_matches('/'))
        .join(format!("agentd-keep-{pid}"))
}
