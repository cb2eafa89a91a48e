//! Pathname unix sockets: a run may connect and send only to sockets under its
//! `fs.write` paths or its `net.unix` entries. Real listening sockets are created by
//! the test (as root, outside the run) in the workspace and next to it.
//!
//! The path in use comes from `agentd doctor --json` (pinned by `AGENTD_EXPECT_BPF_LSM`):
//! - BPF LSM (the VM): the peer socket's inode is judged; denials are EPERM;
//! - fallback (this host): the cgroup connect_unix/sendmsg_unix hooks judge the canonical
//!   address (EPERM; relative and `..` forms refused), and a `tp_btf/sys_exit` backstop
//!   SIGKILLs a connect() that a symlink led outside (exit 137).

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration::{agentd_bin, assert_status, events, expect, stdout, testprog, Sandbox};
use serde_json::Value;

/// Whether the LSM path is in use, cross-checked against the CI pins; on the fallback
/// the cgroup unix hooks must be there (no skip: this kernel has them, CI pins say so).
fn lsm_path() -> bool {
    let o = Command::new(agentd_bin())
        .args(["doctor", "--json"])
        .output()
        .unwrap_or_else(|e| panic!("run agentd doctor: {e}"));
    assert_status(&o, 0);
    let d: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    let lsm = d["bpf_lsm"]["available"] == true;
    if let Some(want) = expect("AGENTD_EXPECT_BPF_LSM") {
        assert_eq!(lsm, want == "1", "CI pins AGENTD_EXPECT_BPF_LSM={want}");
    }
    if !lsm {
        assert_eq!(
            d["cgroup_unix"]["available"], true,
            "neither BPF LSM nor cgroup connect_unix: {}",
            d["cgroup_unix"]
        );
    }
    lsm
}

/// A sandbox with a listening stream socket in the workspace (`in.sock`) and two
/// outside it (`outside/out.sock`, `outside/other.sock`), plus a datagram socket
/// outside (`outside/dgram.sock`). The listeners live as long as the fixture.
struct Fixture {
    sb: Sandbox,
    _listeners: Vec<UnixListener>,
    _dgram: UnixDatagram,
}

impl Fixture {
    fn new(mode: &str) -> Self {
        let sb = Sandbox::new();
        let outside = sb.workspace().parent().map(|p| p.join("outside"));
        let outside = outside.unwrap_or_else(|| panic!("sandbox has no parent"));
        std::fs::create_dir(&outside).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let bind =
            |p: PathBuf| UnixListener::bind(&p).unwrap_or_else(|e| panic!("bind {p:?}: {e}"));
        let listeners = vec![
            bind(sb.workspace().join("in.sock")),
            bind(outside.join("out.sock")),
            bind(outside.join("other.sock")),
        ];
        let dgram = UnixDatagram::bind(outside.join("dgram.sock"))
            .unwrap_or_else(|e| panic!("bind dgram: {e}"));
        let prog = testprog();
        let yaml = format!(
            "version: 1\nname: it-unix\nmode: {mode}\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{dir}\"]\n  write: [\"{{workspace}}\"]\nexec:\n  allow: [\"{prog}\"]\n",
            dir = prog.parent().map(|d| d.display().to_string()).unwrap_or_default(),
            prog = prog.display(),
        );
        sb.write_policy(&yaml);
        Self {
            sb,
            _listeners: listeners,
            _dgram: dgram,
        }
    }

    fn ws(&self) -> PathBuf {
        canon(&self.sb.workspace())
    }

    fn outside(&self) -> PathBuf {
        canon(&self.sb.workspace().join("../outside"))
    }
}

fn canon(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|e| panic!("canonicalize {p:?}: {e}"))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The unix-socket `denied` records (family AF_UNIX).
fn unix_denials(recs: &[Value]) -> Vec<&Value> {
    events(recs, "denied")
        .into_iter()
        .filter(|r| r["family"] == "AF_UNIX")
        .collect()
}

/// One EPERM denial of `op` on `path`, by the layer the path in use decides with.
#[track_caller]
fn assert_one_eperm(f: &Fixture, op: &str, path: &str, rule: &str) {
    let recs = f.sb.audit();
    let d = unix_denials(&recs);
    assert_eq!(d.len(), 1, "one unix denial expected: {d:#?}");
    let d = d[0];
    assert_eq!(d["op"], op, "{d}");
    assert_eq!(d["path"], path, "{d}");
    assert_eq!(d["rule"], rule, "{d}");
    assert_eq!(d["decision"], "deny", "{d}");
    assert_eq!(d["errno"], "EPERM", "{d}");
    assert_eq!(d["layer"], if lsm_path() { "lsm" } else { "bpf" }, "{d}");
    assert!(d["pid"].as_u64().is_some_and(|p| p > 0), "{d}");
    assert_eq!(d["run"], events(&recs, "run_start")[0]["run"], "{d}");
}

fn run(f: &Fixture, args: &[&str]) -> Output {
    f.sb.run_prog(args)
}

#[test]
fn a_socket_in_the_workspace_connects_and_one_outside_is_eperm() {
    let f = Fixture::new("enforce");
    let inside = s(&f.ws().join("in.sock"));
    let out = s(&f.outside().join("out.sock"));
    let o = run(&f, &["unix-connect", &inside, &out]);
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("connect {inside}: OK\nconnect {out}: EPERM\n")
    );
    assert_one_eperm(&f, "connect", &out, "no rule");
}

#[test]
fn a_net_unix_entry_allows_that_socket_and_nothing_next_to_it() {
    // The outside directory exists once the sandbox does: add the entry then.
    let f = Fixture::new("enforce");
    let yaml = std::fs::read_to_string(f.sb.policy_path()).unwrap_or_default();
    let entry = s(&f.outside().join("out.sock"));
    f.sb.write_policy(&format!("{yaml}net:\n  unix: [\"{entry}\"]\n"));
    let allowed = s(&f.outside().join("out.sock"));
    let other = s(&f.outside().join("other.sock"));
    let o = run(&f, &["unix-connect", &allowed, &other]);
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("connect {allowed}: OK\nconnect {other}: EPERM\n")
    );
    assert_one_eperm(&f, "connect", &other, "no rule");
}

#[test]
fn an_optional_net_unix_socket_that_is_missing_fails_with_enoent_not_a_denial() {
    // glibc's nscd socket on a host without nscd: the connect reaches the kernel, which
    // finds nothing (ENOENT, as unconfined). On the cgroup path, which judges the address
    // string before the kernel looks it up, a missing socket no rule names is EPERM; on
    // the lsm path, which judges the socket found, there is none to judge: ENOENT too.
    let f = Fixture::new("enforce");
    let yaml = std::fs::read_to_string(f.sb.policy_path()).unwrap_or_default();
    let missing = s(&f.outside().join("later.sock"));
    f.sb.write_policy(&format!(
        "{yaml}net:\n  unix: [{{path: \"{missing}\", optional: true}}]\n"
    ));
    let other = s(&f.outside().join("never.sock"));
    let o = run(&f, &["unix-connect", &missing, &other]);
    assert_status(&o, 0);
    if lsm_path() {
        assert_eq!(
            stdout(&o),
            format!("connect {missing}: ENOENT\nconnect {other}: ENOENT\n")
        );
        let recs = f.sb.audit();
        assert_eq!(unix_denials(&recs), Vec::<&Value>::new());
        return;
    }
    assert_eq!(
        stdout(&o),
        format!("connect {missing}: ENOENT\nconnect {other}: EPERM\n")
    );
    assert_one_eperm(&f, "connect", &other, "no rule");
}

#[test]
fn sendto_a_datagram_socket_outside_is_eperm() {
    let f = Fixture::new("enforce");
    let dgram = s(&f.outside().join("dgram.sock"));
    let o = run(&f, &["unix-sendto", &dgram]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("sendto {dgram}: EPERM\n"));
    assert_one_eperm(&f, "sendmsg", &dgram, "no rule");
}

#[test]
fn dotdot_out_of_the_workspace_is_eperm() {
    let f = Fixture::new("enforce");
    let typed = format!("{}/../outside/out.sock", s(&f.ws()));
    let o = run(&f, &["unix-connect", &typed]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("connect {typed}: EPERM\n"));
    if lsm_path() {
        // Judged by the socket the path leads to; the record names where it was bound.
        assert_one_eperm(&f, "connect", &s(&f.outside().join("out.sock")), "no rule");
    } else {
        assert_one_eperm(
            &f,
            "connect",
            &typed,
            "no rule (relative path or `.`, `..`, `//` components: not judged by string)",
        );
    }
}

#[test]
fn relative_and_dotdot_forms_inside_the_workspace() {
    let f = Fixture::new("enforce");
    let dotdot = format!("{}/../workspace/in.sock", s(&f.ws()));
    let o1 = run(&f, &["unix-connect", &dotdot]);
    let o2 = run(&f, &["unix-connect-in", &s(&f.ws()), "in.sock"]);
    assert_status(&o1, 0);
    assert_status(&o2, 0);
    if lsm_path() {
        // The LSM path judges the inode: both reach the allowed socket.
        assert_eq!(stdout(&o1), format!("connect {dotdot}: OK\n"));
        assert_eq!(stdout(&o2), "connect in.sock: OK\n");
        assert!(unix_denials(&f.sb.audit()).is_empty());
    } else {
        // The string cannot be judged: refused, and the record says why.
        assert_eq!(stdout(&o1), format!("connect {dotdot}: EPERM\n"));
        assert_eq!(stdout(&o2), "connect in.sock: EPERM\n");
        let recs = f.sb.audit();
        let d = unix_denials(&recs);
        assert_eq!(d.len(), 2, "{d:#?}");
        assert_eq!(d[0]["path"], dotdot.as_str());
        assert_eq!(d[1]["path"], "in.sock");
        for r in d {
            assert_eq!(
                r["rule"],
                "no rule (relative path or `.`, `..`, `//` components: not judged by string)"
            );
            assert_eq!(r["errno"], "EPERM");
        }
    }
}

#[test]
fn a_symlink_in_the_workspace_to_a_forbidden_socket_is_stopped() {
    let f = Fixture::new("enforce");
    let out = f.outside().join("out.sock");
    let link = f.ws().join("innocent.sock");
    std::os::unix::fs::symlink(&out, &link).unwrap_or_else(|e| panic!("symlink: {e}"));
    let typed = s(&link);
    let o = run(&f, &["unix-connect", &typed]);
    let recs = f.sb.audit();
    let d = unix_denials(&recs);
    assert_eq!(d.len(), 1, "{d:#?}");
    let d = d[0];
    // Inode layers name the socket where its server bound it.
    assert_eq!(d["path"], s(&out).as_str(), "{d}");
    assert_eq!(d["op"], "connect", "{d}");
    assert_eq!(d["rule"], "no rule", "{d}");
    let meta = std::fs::metadata(&out).unwrap_or_else(|e| panic!("stat: {e}"));
    assert_eq!(d["ino"], std::os::unix::fs::MetadataExt::ino(&meta), "{d}");
    if lsm_path() {
        assert_status(&o, 0);
        assert_eq!(stdout(&o), format!("connect {typed}: EPERM\n"));
        assert_eq!(d["layer"], "lsm", "{d}");
        assert_eq!(d["errno"], "EPERM", "{d}");
    } else {
        // Killed before connect() returned: nothing printed, 128 + SIGKILL.
        assert_status(&o, 137);
        assert_eq!(stdout(&o), "");
        assert_eq!(d["layer"], "tracepoint", "{d}");
        assert_eq!(d["decision"], "kill", "{d}");
        assert_eq!(d["signal"], "SIGKILL", "{d}");
    }
}

#[test]
fn audit_mode_records_would_deny_and_denies_nothing() {
    let f = Fixture::new("audit");
    let out = s(&f.outside().join("out.sock"));
    let dgram = s(&f.outside().join("dgram.sock"));
    let o = run(&f, &["unix-connect", &out]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("connect {out}: OK\n"));
    let o = run(&f, &["unix-sendto", &dgram]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("sendto {dgram}: OK\n"));
    let recs = f.sb.audit();
    let d = unix_denials(&recs);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert_eq!(
        (d[0]["op"].as_str(), d[1]["op"].as_str()),
        (Some("connect"), Some("sendmsg"))
    );
    for r in d {
        assert_eq!(r["decision"], "would_deny", "{r}");
        assert_eq!(r["would_errno"], "EPERM", "{r}");
        assert_eq!(r["errno"], Value::Null, "{r}");
    }
}

#[test]
fn abstract_sockets_are_not_judged_by_these_rules() {
    let f = Fixture::new("enforce");
    let o = run(&f, &["unix-abstract-self", "agentd-it-abstract"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "abstract agentd-it-abstract: OK\n");
    assert!(unix_denials(&f.sb.audit()).is_empty());
}

#[test]
fn explain_names_the_unix_socket_path_in_use() {
    let f = Fixture::new("enforce");
    let o = Command::new(agentd_bin())
        .args(["policy", "explain"])
        .arg(f.sb.policy_path())
        .output()
        .unwrap_or_else(|e| panic!("explain: {e}"));
    assert_status(&o, 0);
    let text = stdout(&o);
    let want = if lsm_path() {
        "lsm/unix_stream_connect"
    } else {
        "cgroup/connect_unix"
    };
    assert!(text.contains(want), "{text}");
    assert!(text.contains("socket: AF_UNIX pathname"), "{text}");
}

#[test]
fn audit_mode_reports_a_symlinked_connect_once() {
    let f = Fixture::new("audit");
    let out = f.outside().join("out.sock");
    let link = f.ws().join("innocent.sock");
    std::os::unix::fs::symlink(&out, &link).unwrap_or_else(|e| panic!("symlink: {e}"));
    let typed = s(&link);
    let o = run(&f, &["unix-connect", &typed]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("connect {typed}: OK\n"));
    let recs = f.sb.audit();
    let d = unix_denials(&recs);
    assert_eq!(d.len(), 1, "{d:#?}");
    let d = d[0];
    assert_eq!(d["decision"], "would_deny", "{d}");
    assert_eq!(d["path"], s(&out).as_str(), "{d}");
    assert_eq!(d["errno"], Value::Null, "{d}");
    if lsm_path() {
        assert_eq!(d["layer"], "lsm", "{d}");
        assert_eq!(d["would_errno"], "EPERM", "{d}");
    } else {
        assert_eq!(d["layer"], "tracepoint", "{d}");
        assert_eq!(d["would_signal"], "SIGKILL", "{d}");
    }
}
