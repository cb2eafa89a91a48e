//! `fs.deny` and `fs.secret`, matched by inode, on whichever path the Plan chose:
//! BPF LSM (`lsm/file_open`: the open fails with EACCES, the process goes on) or the
//! tracepoint fallback (`tp_btf/sys_exit`: the process is killed with SIGKILL, so agentd
//! exits 137). The path in use comes from `agentd doctor --json`, and the CI pin
//! `AGENTD_EXPECT_BPF_LSM` says which one must be in use (0 on the build host, 1 in the VM).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration::{agentd_bin, assert_status, events, expect, stdout, testprog, Sandbox};
use serde_json::Value;

/// Whether the LSM path is in use, cross-checked against the CI pin.
fn lsm_path() -> bool {
    let o = Command::new(agentd_bin())
        .args(["doctor", "--json"])
        .output()
        .unwrap_or_else(|e| panic!("run agentd doctor: {e}"));
    assert_status(&o, 0);
    let d: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    let available = d["bpf_lsm"]["available"] == true;
    if let Some(want) = expect("AGENTD_EXPECT_BPF_LSM") {
        assert_eq!(
            available,
            want == "1",
            "CI pins AGENTD_EXPECT_BPF_LSM={want}: {}",
            d["bpf_lsm"]
        );
    }
    available
}

/// A sandbox whose workspace holds `.ssh/id` (denied), `.env` (secret) and `notes.txt`
/// (neither), with a policy that lets the run read and write the whole workspace.
struct Fixture {
    sb: Sandbox,
}

impl Fixture {
    fn new(mode: &str) -> Self {
        let sb = Sandbox::new();
        let ws = sb.workspace();
        std::fs::create_dir(ws.join(".ssh")).unwrap_or_else(|e| panic!("mkdir: {e}"));
        std::fs::write(ws.join(".ssh/id"), "key\n").unwrap_or_else(|e| panic!("write: {e}"));
        std::fs::write(ws.join(".env"), "TOKEN=1\n").unwrap_or_else(|e| panic!("write: {e}"));
        std::fs::write(ws.join("notes.txt"), "hi\n").unwrap_or_else(|e| panic!("write: {e}"));
        let prog = testprog();
        let yaml = format!(
            "version: 1\nname: it-fsrules\nmode: {mode}\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{dir}\"]\n  write: [\"{{workspace}}\"]\n  deny: [\"{{workspace}}/.ssh\"]\n  secret: [\"{{workspace}}/.env\"]\nexec:\n  allow: [\"{prog}\"]\n",
            dir = prog.parent().map(|d| d.display().to_string()).unwrap_or_default(),
            prog = prog.display(),
        );
        sb.write_policy(&yaml);
        Self { sb }
    }

    fn ws(&self) -> PathBuf {
        std::fs::canonicalize(self.sb.workspace()).unwrap_or_else(|e| panic!("canonicalize: {e}"))
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Asserts that opening `typed` (which resolves to the denied `.ssh/id`) was stopped
/// the way the path in use stops it, and audited with the resolved path and the name of
/// the dentry that was opened.
#[track_caller]
fn assert_denied_open(f: &Fixture, o: &Output, typed: &str, dentry_name: &str) {
    let real = s(&f.ws().join(".ssh/id"));
    let recs = f.sb.audit();
    let denied = events(&recs, "denied");
    assert_eq!(denied.len(), 1, "one denial expected: {recs:#?}");
    let d = denied[0];
    assert_eq!(d["path"], real.as_str(), "{d}");
    assert_eq!(d["rule"], "fs.deny {workspace}/.ssh", "{d}");
    assert_eq!(d["op"], "open", "{d}");
    assert_eq!(d["name"], dentry_name, "{d}");
    if lsm_path() {
        assert_status(o, 0);
        assert_eq!(stdout(o), format!("open {typed}: EACCES\n"));
        assert_eq!(d["layer"], "lsm", "{d}");
        assert_eq!(d["decision"], "deny", "{d}");
        assert_eq!(d["errno"], "EACCES", "{d}");
    } else {
        // Killed before the open returned to user space: nothing printed, exit 128+9.
        assert_status(o, 137);
        assert_eq!(stdout(o), "");
        assert_eq!(d["layer"], "tracepoint", "{d}");
        assert_eq!(d["decision"], "kill", "{d}");
        assert_eq!(d["signal"], "SIGKILL", "{d}");
        let end = events(&recs, "run_end");
        assert_eq!(end[0]["signal"], "SIGKILL", "{}", end[0]);
    }
}

#[test]
fn a_denied_file_inside_an_allowed_tree_is_stopped() {
    let f = Fixture::new("enforce");
    let typed = s(&f.sb.workspace().join(".ssh/id"));
    let o = f.sb.run_prog(&["open", &typed]);
    assert_denied_open(&f, &o, &typed, "id");
}

#[test]
fn a_symlink_to_a_denied_file_is_stopped() {
    let f = Fixture::new("enforce");
    let link = f.sb.workspace().join("innocent");
    std::os::unix::fs::symlink(f.ws().join(".ssh/id"), &link)
        .unwrap_or_else(|e| panic!("symlink: {e}"));
    let typed = s(&link);
    let o = f.sb.run_prog(&["open", &typed]);
    assert_denied_open(&f, &o, &typed, "id");
}

#[test]
fn a_hardlink_to_a_denied_file_is_stopped() {
    let f = Fixture::new("enforce");
    let link = f.sb.workspace().join("copy-by-link");
    std::fs::hard_link(f.ws().join(".ssh/id"), &link).unwrap_or_else(|e| panic!("link: {e}"));
    let typed = s(&link);
    let o = f.sb.run_prog(&["open", &typed]);
    // The audit names the inode's path inside the denied tree, and the name opened.
    assert_denied_open(&f, &o, &typed, "copy-by-link");
}

#[test]
fn a_denied_file_through_proc_self_root_is_stopped() {
    let f = Fixture::new("enforce");
    let typed = format!("/proc/self/root{}", s(&f.ws().join(".ssh/id")));
    let o = f.sb.run_prog(&["open", &typed]);
    assert_denied_open(&f, &o, &typed, "id");
}

#[test]
fn a_denied_file_through_dot_dot_is_stopped() {
    let f = Fixture::new("enforce");
    let typed = format!("{}/.ssh/../.ssh//id", s(&f.ws()));
    let o = f.sb.run_prog(&["open", &typed]);
    assert_denied_open(&f, &o, &typed, "id");
}

#[test]
fn files_next_to_denied_ones_stay_readable() {
    let f = Fixture::new("enforce");
    let typed = s(&f.ws().join("notes.txt"));
    let o = f.sb.run_prog(&["open", &typed]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("open {typed}: OK\n"));
    let recs = f.sb.audit();
    assert!(events(&recs, "denied").is_empty(), "{recs:#?}");
    assert!(events(&recs, "taint").is_empty(), "{recs:#?}");
    assert_eq!(events(&recs, "run_end")[0]["tainted"], false);
}

#[test]
fn reading_a_secret_in_a_child_taints_the_run() {
    let f = Fixture::new("enforce");
    let typed = s(&f.ws().join(".env"));
    let o = f.sb.run_prog(&["fork-open", &typed]);
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("child open {typed}: OK\nchild exited 0\n")
    );
    let recs = f.sb.audit();
    let taint = events(&recs, "taint");
    assert_eq!(taint.len(), 1, "{recs:#?}");
    let t = taint[0];
    let layer = if lsm_path() { "lsm" } else { "tracepoint" };
    assert_eq!(t["layer"], layer, "{t}");
    assert_eq!(t["secret"], typed.as_str(), "{t}");
    assert_eq!(t["rule"], "fs.secret {workspace}/.env", "{t}");
    assert_eq!(t["action"], "taint", "{t}");
    // The child opened it, not the command itself: taint belongs to the whole run.
    let exec_pid = events(&recs, "exec")[0]["pid"].clone();
    assert_ne!(t["pid"], exec_pid, "{t}");
    let meta = std::fs::metadata(&typed).unwrap_or_else(|e| panic!("stat: {e}"));
    assert_eq!(t["ino"], meta.ino(), "{t}");
    assert_eq!(events(&recs, "run_end")[0]["tainted"], true);
}

#[test]
fn audit_mode_records_would_deny_and_stops_nothing() {
    let f = Fixture::new("audit");
    let typed = s(&f.ws().join(".ssh/id"));
    let o = f.sb.run_prog(&["open", &typed]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("open {typed}: OK\n"));
    let recs = f.sb.audit();
    let denied = events(&recs, "denied");
    assert_eq!(denied.len(), 1, "{recs:#?}");
    assert_eq!(denied[0]["decision"], "would_deny", "{}", denied[0]);
    assert_eq!(denied[0]["path"], typed.as_str(), "{}", denied[0]);
}

#[test]
fn policy_explain_says_how_each_inode_rule_is_enforced() {
    let f = Fixture::new("enforce");
    let o =
        f.sb.agentd()
            .args(["policy", "explain"])
            .arg(f.sb.policy_path())
            .arg("--workspace")
            .arg(f.sb.workspace())
            .output()
            .unwrap_or_else(|e| panic!("run agentd: {e}"));
    assert_status(&o, 0);
    let text = stdout(&o);
    let want = if lsm_path() {
        "lsm: lsm/file_open: open denied with EACCES"
    } else {
        "tracepoint: tp_btf/sys_exit: a successful open kills the process with SIGKILL"
    };
    assert!(text.contains(want), "{text}");
    assert!(text.contains("fs.secret {workspace}/.env"), "{text}");
}

#[test]
fn a_secret_read_then_connect_to_an_allowed_port_is_denied() {
    // The taint flag is in RUN_TAINT (see agentd_common::fsrules); the connect/sendmsg
    // programs that read it belong to the network layer (issue 4), which this build
    // does not have.
    eprintln!(
        "SKIP: a_secret_read_then_connect_to_an_allowed_port_is_denied: the eBPF network layer (issue 4: cgroup connect/sendmsg hooks reading RUN_TAINT) is not in this build"
    );
}
