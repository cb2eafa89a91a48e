//! `agentd attach` / `agentd detach` against a real daemon: workloads started outside
//! agentd (in a cgroup2 directory the test makes under its own) are confined by
//! everything keyed by their cgroup, refused where attach must not go, freed on
//! detach, and stay confined across a daemon crash.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration::daemon::TestDaemon;
use integration::*;
use serde_json::Value;

/// A cgroup2 directory under this test's own, with processes started outside agentd.
struct Workload {
    dir: PathBuf,
    children: Vec<Child>,
}

fn own_v2_dir() -> PathBuf {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup2 line in /proc/self/cgroup: {own}"));
    Path::new("/sys/fs/cgroup/unified").join(rel.trim().trim_start_matches('/'))
}

impl Workload {
    fn new(tag: &str) -> Self {
        let dir = own_v2_dir().join(format!("agentd-attach-it-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let mut w = Self {
            dir,
            children: Vec::new(),
        };
        w.start(&["sleep", "120"]);
        w
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(testprog());
        c.args(args);
        let procs = std::ffi::CString::new(self.dir.join("cgroup.procs").display().to_string())
            .unwrap_or_default();
        // SAFETY: between fork and exec only open/write/close on a path prepared before
        // the fork (no allocation, no locks).
        unsafe {
            c.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        c
    }

    /// A long-lived process of the workload; its pid.
    fn start(&mut self, args: &[&str]) -> u32 {
        let child = self
            .command(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// A process entering the workload (as `podman exec` would), to its end.
    fn exec(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("spawn: {e}"))
    }

    fn pid(&self) -> u32 {
        self.children[0].id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.children[0].try_wait(), Ok(None))
    }

    fn path(&self) -> String {
        self.dir.display().to_string()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A daemon only root may use (its group does not exist).
fn daemon() -> TestDaemon {
    TestDaemon::start(&format!("aitg-none-{}", std::process::id()))
}

/// Only loopback port `allowed` is open; fs rules (landlock) come with it.
fn policy(d: &TestDaemon, allowed: u16, extra: &str) -> PathBuf {
    d.policy(
        "attach.yaml",
        &format!(
            "version: 1\nname: attach-it\nfs:\n  read: [/usr, /lib, \"{dir}\"]\nexec:\n  allow: [\"{prog}\"]\nnet:\n  allow: [\"127.0.0.1:{allowed}/tcp\"]\n{extra}",
            prog = testprog().display(),
            dir = testprog().parent().map(|d| d.display().to_string()).unwrap_or_default(),
        ),
    )
}

const BEST_EFFORT: &str = "--best-effort=fs,syscalls,caps";

fn attach(d: &TestDaemon, args: &[&str]) -> Output {
    d.client()
        .arg("attach")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("agentd attach: {e}"))
}

/// Attaches and returns the run id.
fn attached(d: &TestDaemon, args: &[&str]) -> String {
    let o = attach(d, args);
    assert_status(&o, 0);
    stdout(&o).trim().to_owned()
}

fn connect(w: &Workload, port: u16) -> String {
    let o = w.exec(&["connect", "127.0.0.1", &port.to_string()]);
    assert!(
        o.status.success(),
        "connect: {:?}: {}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    (l, port)
}

#[test]
fn attach_by_cgroup_confines_entering_processes_and_detach_frees_them() {
    let d = daemon();
    let (_open, open_port) = listener();
    let (_closed, closed_port) = listener();
    let p = policy(&d, open_port, "");
    let mut w = Workload::new("cg");
    let other = Workload::new("other");
    let o = attach(
        &d,
        &[
            "--cgroup",
            &w.path(),
            "--policy",
            &p.display().to_string(),
            BEST_EFFORT,
        ],
    );
    assert_status(&o, 0);
    let run = stdout(&o).trim().to_owned();
    let err = stderr(&o);
    assert!(
        err.contains("not applied") && err.contains("cannot be applied to running processes"),
        "{err}"
    );

    let port = closed_port.to_string();
    assert_eq!(
        connect(&w, closed_port),
        format!("connect 127.0.0.1 {port}: EPERM\n")
    );
    assert_eq!(
        connect(&w, open_port),
        format!("connect 127.0.0.1 {open_port}: OK\n")
    );
    assert_eq!(
        connect(&other, closed_port),
        format!("connect 127.0.0.1 {port}: OK\n"),
        "a workload that is not attached is unaffected"
    );

    let row = d.ps_row(&run);
    assert_eq!(row["attached"], format!("cgroup:{}", w.path()));

    d.detach(&run);
    wait_for("the run's end", Duration::from_secs(10), || {
        !records(&d.audit(), &run, "run_end").is_empty()
    });
    assert_eq!(
        connect(&w, closed_port),
        format!("connect 127.0.0.1 {port}: OK\n")
    );
    assert!(w.alive(), "detach leaves the workload running");
    assert!(w.dir.exists(), "detach leaves the cgroup");

    let recs = d.audit();
    let a = records(&recs, &run, "attach");
    assert_eq!(a.len(), 1, "{recs:#?}");
    assert_eq!(a[0]["cgroup"], w.path());
    assert_eq!(a[0]["processes"], 1);
    let denied: Vec<&Value> = records(&recs, &run, "denied")
        .into_iter()
        .filter(|r| r["op"] == "connect")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["port"], closed_port);
    assert_eq!(denied[0]["errno"], "EPERM");
    assert_eq!(denied[0]["layer"], "bpf");
    let execs: Vec<&Value> = records(&recs, &run, "exec");
    assert!(
        execs.len() == 2
            && execs.iter().all(|e| e["filename"]
                .as_str()
                .is_some_and(|f| f.ends_with("agentd-testprog"))),
        "the processes that entered are audited: {:?}",
        recs.iter()
            .filter(|r| r["run"] == run.as_str())
            .map(|r| r["event"].clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(records(&recs, &run, "detach").len(), 1);
    let end = records(&recs, &run, "run_end");
    assert_eq!(end[0]["status"], 0);
    assert_eq!(end[0]["stragglers_killed"], 0);
}

#[test]
fn attach_by_pid_ends_when_the_cgroup_empties_and_stop_kills_it() {
    let d = daemon();
    let (_closed, closed_port) = listener();
    let p = policy(&d, 1, "");
    let p = p.display().to_string();
    let mut w = Workload::new("pid");
    let run = attached(
        &d,
        &["--pid", &w.pid().to_string(), "--policy", &p, BEST_EFFORT],
    );
    assert!(connect(&w, closed_port).ends_with(": EPERM\n"));
    let o = d
        .client()
        .args(["stop", &run])
        .output()
        .unwrap_or_else(|e| panic!("agentd stop: {e}"));
    assert_status(&o, 0);
    wait_for("the run's end", Duration::from_secs(10), || {
        !records(&d.audit(), &run, "run_end").is_empty()
    });
    wait_for("the workload's death", Duration::from_secs(5), || {
        !w.alive()
    });
    let recs = d.audit();
    assert_eq!(records(&recs, &run, "stop")[0]["processes_killed"], 1);
    wait_for("the run to leave ps", Duration::from_secs(5), || {
        d.ps().iter().all(|r| r["run"] != run.as_str())
    });

    // A workload whose processes all exit ends its run on its own.
    let mut w2 = Workload::new("empties");
    let run = attached(&d, &["--cgroup", &w2.path(), "--policy", &p, BEST_EFFORT]);
    for c in &mut w2.children {
        let _ = c.kill();
        let _ = c.wait();
    }
    wait_for("the run's end", Duration::from_secs(10), || {
        !records(&d.audit(), &run, "run_end").is_empty()
    });
    assert!(w2.dir.exists(), "the cgroup is not agentd's to remove");
}

#[test]
fn attach_refuses_what_it_must_not_confine() {
    let d = daemon();
    let p = policy(&d, 1, "");
    let p = p.display().to_string();
    let refused = |args: &[&str], needle: &str| {
        let o = attach(&d, args);
        assert_status(&o, 125);
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    };
    refused(
        &["--cgroup", "/", "--policy", &p, BEST_EFFORT],
        "the host's root cgroup",
    );
    // The daemon's own cgroup; where that is the host's root (as for this test's
    // daemon when the test runs in the root cgroup2), the root refusal answers first.
    let daemon_cgroup =
        std::fs::read_to_string(format!("/proc/{}/cgroup", d.pid())).unwrap_or_default();
    let own = if daemon_cgroup.lines().any(|l| l == "0::/") {
        "the host's root cgroup"
    } else {
        "holds agentd itself"
    };
    refused(
        &["--pid", &d.pid().to_string(), "--policy", &p, BEST_EFFORT],
        own,
    );
    let mut w = Workload::new("shared");
    // A second process of the cgroup that is not in the first one's tree.
    w.start(&["sleep", "120"]);
    let pid = w.pid().to_string();
    refused(&["--pid", &pid, "--policy", &p, BEST_EFFORT], "--force");
    // A policy whose landlock part is not marked best effort.
    refused(
        &[
            "--cgroup",
            &w.path(),
            "--policy",
            &p,
            "--best-effort=syscalls,caps",
        ],
        "landlock (fs) cannot be applied to running processes",
    );
    let run = attached(&d, &["--pid", &pid, "--force", "--policy", &p, BEST_EFFORT]);
    wait_for("the attach record", Duration::from_secs(5), || {
        !records(&d.audit(), &run, "attach").is_empty()
    });
    assert_eq!(records(&d.audit(), &run, "attach")[0]["forced"], true);
    d.detach(&run);
    assert!(w.alive());
}

#[test]
fn an_attached_workload_stays_confined_across_a_daemon_crash() {
    let mut d = daemon();
    let (_closed, closed_port) = listener();
    let p = policy(&d, 1, "");
    let w = Workload::new("restart");
    let run = attached(
        &d,
        &[
            "--cgroup",
            &w.path(),
            "--policy",
            &p.display().to_string(),
            BEST_EFFORT,
        ],
    );
    assert!(connect(&w, closed_port).ends_with(": EPERM\n"));
    d.restart();
    assert!(
        connect(&w, closed_port).ends_with(": EPERM\n"),
        "still confined after the crash"
    );
    let row = d.ps_row(&run);
    assert_eq!(row["adopted"], true);
    assert_eq!(row["attached"], format!("cgroup:{}", w.path()));
    d.detach(&run);
    wait_for("the run's end", Duration::from_secs(10), || {
        !records(&d.audit(), &run, "run_end").is_empty()
    });
    assert!(connect(&w, closed_port).ends_with(": OK\n"));
}

#[test]
fn an_exec_budget_holds_on_an_attached_workload_and_its_kill_step_kills_it() {
    let d = daemon();
    let p = policy(&d, 1, "budgets:\n  execs: 3\n");
    let mut w = Workload::new("budget");
    let run = attached(
        &d,
        &[
            "--cgroup",
            &w.path(),
            "--policy",
            &p.display().to_string(),
            BEST_EFFORT,
        ],
    );
    for _ in 0..6 {
        let _ = w.exec(&["exit", "0"]);
    }
    wait_for("the run's end", Duration::from_secs(10), || {
        !records(&d.audit(), &run, "run_end").is_empty()
    });
    wait_for("the workload's death", Duration::from_secs(5), || {
        !w.alive()
    });
    let recs = d.audit();
    let end = records(&recs, &run, "run_end");
    assert_eq!(end[0]["killed_by"], "execs", "{end:#?}");
}

/// The policy's own `attach.best_effort` is honoured without the flag, and said so; a
/// part it does not name (or that `--best-effort` leaves out, since the flag replaces
/// the list) is refused by name; an unknown part is an error at its line and column.
#[test]
fn attach_honours_the_policys_best_effort_marks() {
    let d = daemon();
    let (_closed, closed_port) = listener();
    let marked = policy(&d, 1, "attach:\n  best_effort: [fs, syscalls, caps]\n");
    let marked = marked.display().to_string();
    let w = Workload::new("marks");
    let o = attach(&d, &["--cgroup", &w.path(), "--policy", &marked]);
    assert_status(&o, 0);
    let run = stdout(&o).trim().to_owned();
    let err = stderr(&o);
    assert!(
        err.contains(
            "attach: best effort: fs, syscalls, caps (from the policy's attach.best_effort)"
        ),
        "{err}"
    );
    assert!(
        err.contains("not applied") && err.contains("cannot be applied to running processes"),
        "{err}"
    );
    assert!(connect(&w, closed_port).ends_with(": EPERM\n"));
    wait_for("the attach record", Duration::from_secs(5), || {
        !records(&d.audit(), &run, "attach").is_empty()
    });
    assert_eq!(
        records(&d.audit(), &run, "attach")[0]["not_applied"],
        serde_json::json!(["fs", "syscalls", "caps"])
    );
    d.detach(&run);

    // Without the mark, the part is refused by name.
    let unmarked = policy(&d, 1, "").display().to_string();
    let o = attach(&d, &["--cgroup", &w.path(), "--policy", &unmarked]);
    assert_status(&o, 125);
    assert!(
        stderr(&o).contains(
            "agentd: attach: landlock: landlock (fs) cannot be applied to running processes; mark it best effort (`attach: {best_effort: [fs]}` in the policy, or `--best-effort fs`)"
        ),
        "{}",
        stderr(&o)
    );
    // The flag replaces the policy's list.
    let o = attach(
        &d,
        &[
            "--cgroup",
            &w.path(),
            "--policy",
            &marked,
            "--best-effort=fs,caps",
        ],
    );
    assert_status(&o, 125);
    let err = stderr(&o);
    assert!(
        err.contains("attach: best effort: fs, caps (from --best-effort")
            && err.contains("seccomp (syscalls) cannot be applied to running processes"),
        "{err}"
    );

    let bad = d.policy(
        "bad-marks.yaml",
        "version: 1\nname: t\nattach:\n  best_effort: [fs, network]\n",
    );
    let o = attach(
        &d,
        &[
            "--cgroup",
            &w.path(),
            "--policy",
            &bad.display().to_string(),
        ],
    );
    assert_status(&o, 125);
    assert!(
        stderr(&o).contains(&format!(
            "{}:4:21: unknown attach.best_effort part `network`, expected one of `fs`, `syscalls`, `caps`",
            bad.display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(
        d.ps()
            .iter()
            .all(|r| r["attached"] != format!("cgroup:{}", w.path())),
        "a refused attach leaves no run"
    );
}

/// A net-byte budget holds on an attached workload: an upload that enters its cgroup
/// is killed at the limit, with the whole workload.
#[test]
fn a_net_egress_budget_holds_on_an_attached_workload() {
    const BUDGET: u64 = 1 << 20;
    let d = daemon();
    let (listener, port) = listener();
    let p = policy(
        &d,
        port,
        "attach:\n  best_effort: [fs, syscalls, caps]\nbudgets:\n  net_egress_bytes: 1MiB\n",
    );
    let mut w = Workload::new("upload");
    let run = attached(
        &d,
        &["--cgroup", &w.path(), "--policy", &p.display().to_string()],
    );
    let reader = std::thread::spawn(move || count_received(listener));
    let o = w.exec(&[
        "upload",
        &format!("127.0.0.1:{port}"),
        &(10u64 << 20).to_string(),
    ]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&o.status),
        Some(libc::SIGKILL),
        "{:?}: {}",
        o.status,
        stdout(&o)
    );
    let received = reader.join().unwrap_or_else(|_| panic!("reader panicked"));
    eprintln!("attached upload: the listener received {received} bytes of a {BUDGET} budget");
    assert!(received <= BUDGET + (64 << 10), "received {received}");
    wait_for("the run's end", Duration::from_secs(10), || {
        !records(&d.audit(), &run, "run_end").is_empty()
    });
    wait_for("the workload's death", Duration::from_secs(5), || {
        !w.alive()
    });
    let recs = d.audit();
    let kills: Vec<&Value> = records(&recs, &run, "budget")
        .into_iter()
        .filter(|r| r["action"] == "kill")
        .collect();
    assert_eq!(kills.len(), 1, "{kills:#?}");
    assert_eq!(kills[0]["budget"], "net_egress_bytes");
    assert_eq!(kills[0]["limit"], BUDGET);
    assert!(
        kills[0]["used"].as_u64().is_some_and(|u| u > BUDGET),
        "{}",
        kills[0]
    );
    let end = records(&recs, &run, "run_end");
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["killed_by"], "net_egress_bytes", "{end:#?}");
}

/// Exec integrity holds on an attached workload: a memfd copy of an allowed program is
/// not, and the process that enters the cgroup and runs it is killed before it runs.
#[test]
fn exec_integrity_holds_on_an_attached_workload() {
    let d = daemon();
    let p = policy(&d, 1, "attach:\n  best_effort: [fs, syscalls, caps]\n");
    let w = Workload::new("memfd");
    let run = attached(
        &d,
        &["--cgroup", &w.path(), "--policy", &p.display().to_string()],
    );
    let o = w.exec(&["fexecve-memfd", &testprog().display().to_string()]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&o.status),
        Some(libc::SIGKILL),
        "{:?}: {}",
        o.status,
        stdout(&o)
    );
    let exec_denials = |recs: &[Value]| {
        recs.iter()
            .filter(|r| r["run"] == run.as_str() && r["event"] == "denied" && r["op"] == "exec")
            .cloned()
            .collect::<Vec<Value>>()
    };
    wait_for("the denial", Duration::from_secs(5), || {
        !exec_denials(&d.audit()).is_empty()
    });
    let denied = exec_denials(&d.audit());
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["rule"], "not in exec.allow");
    assert_eq!(denied[0]["name"], "memfd:agentd-copy");
    assert_eq!(denied[0]["decision"], "kill");
    d.detach(&run);
}

/// An attached workload has no seccomp filter of agentd's, so an `int 0x80` call reaches
/// the sys_exit program with an i386 number its hooks would misread as a native one
/// (20 is getpid there, fstat natively). It is killed after the call and named in a
/// `denied` record; native calls go on, and after detach nothing is killed.
#[test]
fn a_non_native_syscall_of_an_attached_workload_is_killed_after_the_call() {
    use std::os::unix::process::ExitStatusExt;
    let d = daemon();
    let p = policy(&d, 1, "").display().to_string();
    let w = Workload::new("compat");
    let o = attach(&d, &["--cgroup", &w.path(), "--policy", &p, BEST_EFFORT]);
    assert_status(&o, 0);
    let run = stdout(&o).trim().to_owned();
    let o = w.exec(&["int80"]);
    assert_eq!(o.status.signal(), Some(libc::SIGKILL), "{o:?}");
    assert_eq!(stdout(&o), "", "the process must not run on after the call");
    let denied = || -> Vec<serde_json::Value> {
        records(&d.audit(), &run, "denied")
            .into_iter()
            .filter(|r| r["op"] == "syscall")
            .cloned()
            .collect()
    };
    wait_for("the denial", Duration::from_secs(5), || {
        !denied().is_empty()
    });
    let r = &denied()[0];
    assert_eq!(r["layer"], "tracepoint", "{r}");
    assert_eq!(r["decision"], "kill", "{r}");
    assert_eq!(r["syscall"], "getpid", "{r}");
    assert_eq!(r["nr"], 20, "{r}");
    assert_eq!(r["abi"], "i386", "{r}");
    assert_eq!(r["signal"], "SIGKILL", "{r}");
    assert_eq!(r["errno"], serde_json::Value::Null, "{r}");
    assert!(r["pid"].as_u64().is_some_and(|p| p > 0), "{r}");
    assert_status(&w.exec(&["exit", "0"]), 0);
    d.detach(&run);
    let o = w.exec(&["int80"]);
    assert_status(&o, 0);
    assert!(stdout(&o).starts_with("int80: returned "), "{}", stdout(&o));
}
