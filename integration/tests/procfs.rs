//! A launched run sees a private /proc (`hidepid=invisible` with landlock's ptrace
//! scope): processes outside the run are not there, agentd's and the same user's
//! included, and the kernel's tunables are read-only.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output};

use integration::daemon::TestDaemon;
use integration::{assert_status, stderr, stdout, testprog, Sandbox, TestUser};

/// The user the run and the outside process share: one this test creates, or `nobody`
/// where /etc is read-only (the test VM mounts the host's root read-only).
struct Who {
    name: String,
    uid: u32,
    gid: u32,
    _created: Option<TestUser>,
}

impl Who {
    fn new(tag: &str) -> Self {
        // SAFETY: a NUL-terminated path; access(2) only reads it.
        let writable = unsafe { libc::access(c"/etc/passwd".as_ptr(), libc::W_OK) } == 0;
        if !writable {
            eprintln!("NOTE: /etc is read-only here: the run and the outside process are `nobody`");
            return Self {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
                _created: None,
            };
        }
        let user = TestUser::create(tag, &[]);
        Self {
            name: user.name.clone(),
            uid: user.uid,
            gid: user.gid,
            _created: Some(user),
        }
    }
}

/// A process of `user`, outside any run, killed on drop.
struct Outside(Child);

impl Outside {
    fn start(user: &Who) -> Self {
        let child = Command::new("sleep")
            .arg("120")
            .uid(user.uid)
            .gid(user.gid)
            .spawn()
            .unwrap_or_else(|e| panic!("sleep: {e}"));
        Self(child)
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Checks `procview`'s report: only the run's own process is listed, every file of
/// `other` and of the parent (agentd) is ENOENT, its own are readable, and the tunable
/// is EROFS.
fn assert_private(o: &Output, other: u32) {
    assert_status(o, 0);
    let out = stdout(o);
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    let me = first.split(' ').nth(1).unwrap_or_default().to_owned();
    let parent = first.split(' ').nth(3).unwrap_or_default().to_owned();
    assert_eq!(lines.next(), Some(format!("listed {me}").as_str()), "{out}");
    for pid in [other.to_string(), parent] {
        for f in ["cmdline", "environ", "maps", "mem"] {
            let line = format!("/proc/{pid}/{f}: ENOENT");
            assert!(
                out.lines().any(|l| l == line),
                "{line} in\n{out}\n{}",
                stderr(o)
            );
        }
        let line = format!("/proc/{pid}/fd: ENOENT");
        assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
    }
    for f in ["cmdline", "environ", "maps", "mem", "fd"] {
        let line = format!("/proc/self/{f}: OK");
        assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l == "write /proc/sys/kernel/domainname: EROFS"),
        "{out}"
    );
}

#[test]
fn a_run_sees_only_its_own_processes_in_proc() {
    let user = Who::new("proc");
    let outside = Outside::start(&user);
    let other = outside.0.id();
    let prog = testprog().display().to_string();
    // Without agentd, the same user reads the other process's files: the test means
    // something.
    let bare = Command::new(&prog)
        .args(["procview", &other.to_string()])
        .uid(user.uid)
        .gid(user.gid)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stdout(&bare).contains(&format!("/proc/{other}/cmdline: OK")),
        "{}",
        stdout(&bare)
    );

    let sb = Sandbox::new();
    sb.base_policy_with(&[], &["/proc"]);
    let o = sb
        .run_cmd(&[&prog, "procview", &other.to_string()])
        .env("AGENTD_USER", &user.name)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_private(&o, other);

    // `policy explain` says so.
    let o = sb
        .agentd()
        .args(["policy", "explain"])
        .arg(sb.policy_path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    assert!(
        stdout(&o).contains("processes outside the run"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn through_the_daemon_a_run_sees_only_its_own_processes_too() {
    let d = TestDaemon::start(&format!("aitg-proc-{}", std::process::id()));
    let user = Who::new("procd");
    let outside = Outside::start(&user);
    let other = outside.0.id();
    let sb = Sandbox::new();
    let policy = sb.base_policy_with(&[], &["/proc"]);
    let o = d
        .client()
        .args(["run", "--user", &user.name, "--policy"])
        .arg(&policy)
        .arg("--workspace")
        .arg(sb.workspace())
        .arg("--")
        .arg(testprog())
        .args(["procview", &other.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("agentd run: {e}"));
    assert_private(&o, other);
}

/// An inode rule under /proc cannot name the files of a /proc that does not exist yet:
/// it is refused at its line, not silently left unenforced.
#[test]
fn an_inode_rule_under_proc_is_refused() {
    let sb = Sandbox::new();
    sb.write_policy(
        "version: 1\nname: t\nfs:\n  read: [/usr, /lib, /proc]\n  deny: [/proc/kallsyms]\n",
    );
    let o = sb.run(&["/usr/bin/true"]);
    assert_status(&o, 125);
    assert!(
        stderr(&o).contains(
            "mounts: fs.deny /proc/kallsyms (line 5): the run sees a private /proc of its own"
        ),
        "{}",
        stderr(&o)
    );
}
