//! Shared fixtures for the end-to-end tests: find the real binaries, write a
//! policy, run `agentd run` and read back the audit log.

pub mod daemon;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The agentd binary under test: $AGENTD_BIN, else target/debug/agentd.
pub fn agentd_bin() -> PathBuf {
    std::env::var_os("AGENTD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/agentd"))
}

/// The helper that runs confined: $AGENTD_TESTPROG, else target/debug/agentd-testprog
/// (cargo builds this package's binaries before its integration tests).
pub fn testprog() -> PathBuf {
    std::env::var_os("AGENTD_TESTPROG")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/agentd-testprog"))
}

/// Panics unless we are root: these tests need real cgroups, BPF and landlock.
/// A policy named `name` under which the test helper may run and read its own
/// directory and the workspace (nothing else); `extra` is appended (more sections).
pub fn testprog_policy(name: &str, extra: &str) -> String {
    let prog = testprog();
    format!(
        "version: 1\nname: {name}\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{dir}\", \"{{workspace}}\"]\n  write: [\"{{workspace}}\"]\nexec:\n  allow: [\"{prog}\"]\n{extra}",
        dir = prog.parent().map(|d| d.display().to_string()).unwrap_or_default(),
        prog = prog.display(),
    )
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the integration tests run agentd as root; run them as root (cargo xtask test)"
    );
}

/// A pin from CI: `Some(value)` when the machine must have that feature.
pub fn expect(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// One test's private directory: workspace, policy and audit log.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("agentd-it-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        std::fs::create_dir(dir.path().join("workspace")).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let sb = Self { dir };
        sb.keygen(&sb.key_dir());
        sb
    }

    /// Where this sandbox's audit signing key pair lives (`agentd keygen --out`).
    pub fn key_dir(&self) -> PathBuf {
        self.dir.path().join("key")
    }

    /// The public half of the signing key: `audit verify --key`.
    pub fn public_key(&self) -> PathBuf {
        self.key_dir().join("audit.pub")
    }

    /// `agentd keygen --out DIR`.
    pub fn keygen(&self, dir: &Path) {
        let o = Command::new(agentd_bin())
            .arg("keygen")
            .arg("--out")
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("run agentd keygen: {e}"));
        assert_status(&o, 0);
    }

    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    /// Writes a policy: the base read/exec set for the test helper plus `extra` YAML
    /// lines appended under the given sections.
    pub fn write_policy(&self, yaml: &str) -> PathBuf {
        let p = self.policy_path();
        std::fs::write(&p, yaml).unwrap_or_else(|e| panic!("write policy: {e}"));
        p
    }

    /// The base policy most tests use: system libraries readable, the helper
    /// executable, the workspace writable.
    pub fn base_policy(&self, extra_exec: &[&str]) -> PathBuf {
        self.base_policy_with(extra_exec, &[])
    }

    /// [`Sandbox::base_policy`] with more `fs.read` entries.
    pub fn base_policy_with(&self, extra_exec: &[&str], extra_read: &[&str]) -> PathBuf {
        let prog = testprog();
        let mut exec: Vec<String> = vec![prog.display().to_string()];
        exec.extend(extra_exec.iter().map(|s| s.to_string()));
        let yaml = format!(
            "version: 1\nname: it\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{dir}\"{more}]\n  write: [\"{{workspace}}\"]\nexec:\n  allow: [{exec}]\n",
            more = extra_read.iter().map(|r| format!(", \"{r}\"")).collect::<String>(),
            dir = prog.parent().map(|d| d.display().to_string()).unwrap_or_default(),
            exec = exec.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ")
        );
        self.write_policy(&yaml)
    }

    pub fn agentd(&self) -> Command {
        let mut c = Command::new(agentd_bin());
        c.current_dir(self.dir.path())
            .env("AGENTD_SIGNING_KEY", self.key_dir().join("audit.key"))
            // The suite runs as root; the agent runs as root only when asked to.
            .env("AGENTD_USER", "root");
        c
    }

    /// `agentd run --policy P --workspace W --audit A -- args...`
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("run agentd: {e}"))
    }

    pub fn run_cmd(&self, args: &[&str]) -> Command {
        self.run_cmd_with_audit(&self.audit_path(), args)
    }

    /// [`Sandbox::run_cmd`] with the audit log at `audit`.
    pub fn run_cmd_with_audit(&self, audit: &Path, args: &[&str]) -> Command {
        let mut c = self.agentd();
        c.arg("run")
            .arg("--policy")
            .arg(self.policy_path())
            .arg("--workspace")
            .arg(self.workspace())
            .arg("--audit")
            .arg(audit)
            .arg("--")
            .args(args);
        c
    }

    /// Runs the test helper with `args` under the current policy.
    pub fn run_prog(&self, args: &[&str]) -> Output {
        let prog = testprog().display().to_string();
        let mut all = vec![prog.as_str()];
        all.extend_from_slice(args);
        self.run(&all)
    }

    pub fn audit(&self) -> Vec<Value> {
        read_audit(&self.audit_path())
    }
}

pub fn read_audit(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}")))
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit status with the full output in the message.
#[track_caller]
pub fn assert_status(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// The records of the audit log with `event == name`.
pub fn events<'a>(records: &'a [Value], name: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["event"] == name).collect()
}

/// The records of run `run` with `event`.
pub fn records<'a>(recs: &'a [Value], run: &str, event: &str) -> Vec<&'a Value> {
    recs.iter()
        .filter(|r| r["run"] == run && r["event"] == event)
        .collect()
}

/// Waits until `f` holds (a record the daemon writes on its own), failing after
/// `within`.
pub fn wait_for(what: &str, within: std::time::Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Accepts one connection and counts what arrives until it ends (or 10 s of silence).
pub fn count_received(listener: std::net::TcpListener) -> u64 {
    use std::io::Read;
    let (mut conn, _) = listener.accept().unwrap_or_else(|e| panic!("accept: {e}"));
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n as u64,
        }
    }
}

/// Removes the cgroups of run `run` that an agentd killed with SIGKILL could not
/// remove itself: `agentd-RUN` beneath this process's own cgroup in every mounted
/// hierarchy (the same place agentd creates them). Only empty leaves go; a
/// leftover process makes this panic, since a run must not outlive its agentd.
pub fn remove_leftover_run_cgroups(run: &str) {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let leaf = format!("agentd-{run}");
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = mounts.lines().find_map(|m| {
            let (left, right) = m.split_once(" - ")?;
            let mut right = right.split(' ');
            let (fstype, _, superopts) = (right.next()?, right.next()?, right.next()?);
            let mountpoint = left.split(' ').nth(4)?;
            let matches = if controllers.is_empty() {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup"
                    && controllers
                        .split(',')
                        .all(|c| superopts.split(',').any(|o| o == c))
            };
            matches.then(|| mountpoint.to_owned())
        });
        let Some(mount) = mount else { continue };
        let dir = PathBuf::from(format!("{mount}{}", path.trim_end_matches('/'))).join(&leaf);
        if !dir.exists() {
            continue;
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        assert!(
            procs.trim().is_empty(),
            "{} still has processes: {procs}",
            dir.display()
        );
        std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
    }
}

/// A system user (and its own group) this test creates, removed on drop.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// `useradd --system` a user named `agentd-it-<tag>-<pid>` (at most 32 characters),
    /// optionally also in the supplementary `groups`.
    pub fn create(tag: &str, groups: &[&str]) -> Self {
        require_root();
        let name: String = format!("ait-{tag}-{}", std::process::id())
            .chars()
            .take(31)
            .collect();
        let mut c = Command::new("useradd");
        c.args([
            "--system",
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
        ]);
        if !groups.is_empty() {
            c.arg("--groups").arg(groups.join(","));
        }
        let o = c
            .arg(&name)
            .output()
            .unwrap_or_else(|e| panic!("useradd: {e}"));
        assert!(
            o.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let id = |flag: &str| -> u32 {
            let o = Command::new("id")
                .arg(flag)
                .arg(&name)
                .output()
                .unwrap_or_else(|e| panic!("id: {e}"));
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("id {flag} {name}: {e}"))
        };
        let (uid, gid) = (id("-u"), id("-g"));
        Self { name, uid, gid }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
        // userdel removes the user's own group; make sure.
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// A system group this test creates, removed on drop.
pub struct TestGroup {
    pub name: String,
}

impl TestGroup {
    /// `groupadd --system NAME` unless it exists; removed on drop only if created here.
    pub fn ensure(name: &str) -> Option<Self> {
        require_root();
        let exists = Command::new("getent")
            .args(["group", name])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if exists {
            return None;
        }
        let o = Command::new("groupadd")
            .args(["--system", name])
            .output()
            .unwrap_or_else(|e| panic!("groupadd: {e}"));
        assert!(
            o.status.success(),
            "groupadd {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Some(Self {
            name: name.to_owned(),
        })
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// A tmpfs the test mounted; unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg(format!("agentd-test-audit-{}", std::process::id()))
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("run mount: {e}"));
        assert_status(&o, 0);
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
