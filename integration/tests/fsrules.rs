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

/// `denied` records of the inode rules (layer `lsm` or `tracepoint`). The run also has
/// landlock denials of its own (the Rust runtime of the helper reads /proc/self/maps,
/// which these policies do not allow), audited by the denial tracker.
fn inode_denials(recs: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    events(recs, "denied")
        .into_iter()
        .filter(|r| r["layer"] == "lsm" || r["layer"] == "tracepoint")
        .collect()
}

/// Asserts that opening `typed` (which resolves to the denied `.ssh/id`) was stopped
/// the way the path in use stops it, and audited with the resolved path and the name of
/// the dentry that was opened. The path is the kernel's (`bpf_d_path`) on the LSM path:
/// the name opened, `.ssh/id` or a hard link's (`opened`, relative to the workspace);
/// on the fallback the inode located under the rule, always `.ssh/id`.
#[track_caller]
fn assert_denied_open_as(f: &Fixture, o: &Output, typed: &str, dentry_name: &str, opened: &str) {
    let real = s(&f.ws().join(".ssh/id"));
    let recs = f.sb.audit();
    let denied = inode_denials(&recs);
    assert_eq!(denied.len(), 1, "one denial expected: {recs:#?}");
    let d = denied[0];
    if lsm_path() {
        assert_eq!(d["path"], s(&f.ws().join(opened)).as_str(), "{d}");
        assert_eq!(d["path_source"], "bpf_d_path", "{d}");
    } else {
        assert_eq!(d["path"], real.as_str(), "{d}");
        assert_eq!(d["path_source"], "inode lookup", "{d}");
    }
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

#[track_caller]
fn assert_denied_open(f: &Fixture, o: &Output, typed: &str, dentry_name: &str) {
    assert_denied_open_as(f, o, typed, dentry_name, ".ssh/id");
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
    // The audit names the name opened (LSM: the kernel's path of the link; fallback: the
    // inode's path inside the denied tree) and the dentry opened.
    assert_denied_open_as(&f, &o, &typed, "copy-by-link", "copy-by-link");
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
    assert!(inode_denials(&recs).is_empty(), "{recs:#?}");
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
    let denied = inode_denials(&recs);
    assert_eq!(denied.len(), 1, "{recs:#?}");
    assert_eq!(denied[0]["decision"], "would_deny", "{}", denied[0]);
    assert_eq!(denied[0]["path"], typed.as_str(), "{}", denied[0]);
}

/// In audit mode landlock refuses nothing; the file observer records each access the
/// fs rules would deny, and none they allow.
#[test]
fn audit_mode_records_each_file_access_the_fs_rules_would_deny() {
    let f = Fixture::new("audit");
    let o = f.sb.run_prog(&["open", "/etc/hostname"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "open /etc/hostname: OK\n");
    let notes = s(&f.ws().join("notes.txt"));
    let o = f.sb.run_prog(&["open", &notes]);
    assert_status(&o, 0);
    let recs = f.sb.audit();
    let landlock: Vec<&serde_json::Value> = events(&recs, "denied")
        .into_iter()
        .filter(|r| r["layer"] == "landlock")
        .collect();
    let hostname: Vec<&&serde_json::Value> = landlock
        .iter()
        .filter(|r| r["path"] == "/etc/hostname")
        .collect();
    assert_eq!(hostname.len(), 1, "{landlock:#?}");
    let r = hostname[0];
    assert_eq!(r["decision"], "would_deny", "{r}");
    assert_eq!(r["would_errno"], "EACCES", "{r}");
    assert!(r.get("errno").is_none(), "the open succeeded: {r}");
    assert_eq!(r["op"], "open", "{r}");
    assert_eq!(r["access"], "read", "{r}");
    assert_eq!(r["syscall"], "openat", "{r}");
    assert_eq!(r["rule"], "not in fs.read or fs.write", "{r}");
    assert!(
        landlock.iter().all(|r| r["path"] != notes.as_str()),
        "the workspace is allowed: {landlock:#?}"
    );
}

#[test]
fn audit_mode_records_a_repeated_file_access_once_and_loses_nothing_after_it() {
    // 20000 opens of one file outrun the ring buffer (about 800 records) if each is sent:
    // the observer sends an access to an absolute path once per run, so the file opened
    // after the loop is recorded too, and nothing is dropped.
    let f = Fixture::new("audit");
    let o =
        f.sb.run_prog(&["flood-then-open", "20000", "/etc/hostname", "/etc/hosts"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "opens 20000: OK 20000; other: OK\n");
    let recs = f.sb.audit();
    let of = |p: &str| {
        events(&recs, "denied")
            .into_iter()
            .filter(|r| r["layer"] == "landlock" && r["path"] == p)
            .count()
    };
    assert_eq!(of("/etc/hostname"), 1, "{recs:#?}");
    assert_eq!(of("/etc/hosts"), 1, "{recs:#?}");
    assert!(events(&recs, "dropped").is_empty(), "{recs:#?}");
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
    if lsm_path() {
        assert!(
            text.contains("lsm: lsm/file_open: open denied with EACCES; lsm/inode_*: unlink, rmdir, rename out of or into, hard links to or inside, truncate/chmod/chown/utimes of, and new entries inside a denied tree, denied with EACCES"),
            "{text}"
        );
    } else {
        assert!(
            text.contains(
                "tracepoint: tp_btf/sys_exit: a successful open kills the process with SIGKILL"
            ),
            "{text}"
        );
        // What the fallback does not cover is said.
        assert!(
            text.contains("NOT covered: truncate(2), chmod/chown, unlink, rmdir, rename and link of a denied file"),
            "{text}"
        );
    }
    assert!(text.contains("fs.secret {workspace}/.env"), "{text}");
}

/// When the connection was accepted (if it was), and each byte with when it arrived.
type Heard = (Option<std::time::Instant>, Vec<(std::time::Instant, u8)>);

/// A loopback listener in the test process; `received_before(t)` returns what the
/// (single) client sent before instant `t`.
struct Listener {
    port: u16,
    /// Set once the run is over: the accept loop then gives up.
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Heard>,
}

impl Listener {
    fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    /// A listener on `addr` (port 0: any).
    fn start_on(addr: &str) -> Self {
        use std::io::Read as _;
        let l = std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let port = l
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"))
            .port();
        l.set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done_in_thread = done.clone();
        let handle = std::thread::spawn(move || {
            let (mut conn, accepted_at) = loop {
                match l.accept() {
                    Ok((c, _)) => break (c, std::time::Instant::now()),
                    Err(_) if !done_in_thread.load(std::sync::atomic::Ordering::SeqCst) => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    Err(_) => return (None, Vec::new()),
                }
            };
            conn.set_nonblocking(false)
                .unwrap_or_else(|e| panic!("blocking: {e}"));
            conn.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap_or_else(|e| panic!("timeout: {e}"));
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let now = std::time::Instant::now();
                got.extend(buf[..n].iter().map(|b| (now, *b)));
            }
            (Some(accepted_at), got)
        });
        Self { port, done, handle }
    }

    /// (a connection was accepted before `until`, the bytes received before `until`).
    fn received_before(self, until: std::time::Instant) -> (bool, String) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        let (accepted_at, bytes) = self
            .handle
            .join()
            .unwrap_or_else(|_| panic!("listener panicked"));
        let accepted = accepted_at.is_some_and(|t| t < until);
        let bytes: Vec<u8> = bytes
            .into_iter()
            .filter(|(t, _)| *t < until)
            .map(|(_, b)| b)
            .collect();
        (accepted, String::from_utf8_lossy(&bytes).into_owned())
    }
}

#[test]
fn after_a_secret_is_read_an_open_connection_sends_nothing() {
    let f = Fixture::new("enforce");
    let secret = s(&f.ws().join(".env"));
    let listener = Listener::start();
    let port = listener.port.to_string();
    let o = f.sb.run_prog(&["send-around-secret", &port, &secret]);
    assert_status(&o, 0);
    // send() only queues: the bytes are dropped on the way out (cgroup_skb/egress).
    assert_eq!(
        stdout(&o),
        format!("send before: OK\nopen {secret}: OK\nsend after: OK\n")
    );
    let recs = f.sb.audit();
    let aborted = events(&recs, "taint_sockets_aborted");
    assert_eq!(aborted.len(), 1, "{recs:#?}");
    assert_eq!(aborted[0]["layer"], "bpf");
    let destroyed = aborted[0]["decision"] == "deny";
    if destroyed {
        assert!(
            aborted[0]["tcp_sockets_aborted"].as_u64().unwrap_or(0) >= 1,
            "{}",
            aborted[0]
        );
    } else {
        // A kernel without sock_diag destroy cannot abort the sockets: the record must
        // say so, and CI pins the machines where it must work (the VM loads inet_diag).
        let why = aborted[0]["tcp_sockets_aborted"].as_str().unwrap_or("");
        assert!(why.starts_with("error: "), "{}", aborted[0]);
        assert_ne!(
            expect("AGENTD_EXPECT_SOCK_DESTROY").as_deref(),
            Some("1"),
            "AGENTD_EXPECT_SOCK_DESTROY=1 but the run's sockets were not destroyed: {why}"
        );
    }
    // Nothing sent after the taint arrives, not even after the run: agentd destroys the
    // run's TCP sockets (SOCK_DESTROY) before it detaches the egress program, so the
    // orphaned socket cannot retransmit what was queued while tainted. The listener
    // reads until its 2 s read timeout, well past the first retransmissions.
    let (accepted, got) = listener.received_before(far_future());
    assert!(accepted);
    if destroyed {
        assert_eq!(got, "before\n", "nothing sent after the taint may arrive");
    } else {
        eprintln!(
            "SKIP (after-the-run part of after_a_secret_is_read_an_open_connection_sends_nothing): this kernel cannot destroy the run's sockets ({}); received {got:?}",
            aborted[0]["tcp_sockets_aborted"]
        );
    }
    assert_eq!(events(&recs, "taint").len(), 1, "{recs:#?}");
    let blocked = events(&recs, "egress_blocked");
    assert_eq!(blocked.len(), 1, "{recs:#?}");
    assert_eq!(blocked[0]["decision"], "deny");
    assert_eq!(blocked[0]["rule"], "fs.secret taint: no egress after taint");
    assert!(
        blocked[0]["packets"].as_u64().unwrap_or(0) >= 1,
        "{}",
        blocked[0]
    );
    let end = &events(&recs, "run_end")[0];
    assert_eq!(end["tainted"], true);
    assert_eq!(
        end["egress_packets_dropped_after_taint"],
        blocked[0]["packets"]
    );
}

/// An instant after every listener has given up (for "everything ever received").
fn far_future() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(3600)
}

/// The `denied` record of the network layer for a tainted run's `op` to 127.0.0.1:`port`.
fn assert_tainted_denial(recs: &[Value], op: &str, port: u16, proto: &str, decision: &str) {
    let d: Vec<&Value> = events(recs, "denied")
        .into_iter()
        .filter(|r| r["layer"] == "bpf" && r["op"] == op && r["port"] == port)
        .collect();
    assert_eq!(d.len(), 1, "{recs:#?}");
    assert_eq!(d[0]["decision"], decision);
    assert_eq!(d[0]["dst"], "127.0.0.1");
    assert_eq!(d[0]["proto"], proto);
    assert_eq!(d[0]["rule"], "tainted: no after_taint rule");
    if decision == "deny" {
        assert_eq!(d[0]["errno"], "EPERM");
    } else {
        assert_eq!(d[0]["errno"], Value::Null);
        assert_eq!(d[0]["would_errno"], "EPERM");
    }
}

#[test]
fn a_secret_read_then_connect_to_an_allowed_port_is_denied() {
    // The network is open in this policy (no net section), so only the taint stops it:
    // cgroup/connect4 reads the run's taint flag and fails the connect with EPERM.
    let f = Fixture::new("enforce");
    let secret = s(&f.ws().join(".env"));
    let listener = Listener::start();
    let port = listener.port.to_string();
    let lport = listener.port;
    let o = f.sb.run_prog(&["connect-after-secret", &port, &secret]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("open {secret}: OK\nconnect: EPERM\n"));
    let (accepted, got) = listener.received_before(far_future());
    assert!(!accepted, "no connection may be established: got {got:?}");
    let recs = f.sb.audit();
    assert_eq!(events(&recs, "taint").len(), 1, "{recs:#?}");
    assert_tainted_denial(&recs, "connect", lport, "tcp", "deny");
    // Nothing reached the wire, so the egress program dropped nothing.
    assert_eq!(events(&recs, "egress_blocked").len(), 0, "{recs:#?}");
}

/// The fixture's policy plus a `net` section.
fn with_net(f: &Fixture, net: &str) {
    let mut yaml = std::fs::read_to_string(f.sb.policy_path()).unwrap_or_else(|e| panic!("{e}"));
    yaml.push_str(net);
    f.sb.write_policy(&yaml);
}

#[test]
fn after_taint_destinations_stay_reachable_and_the_rest_is_denied() {
    let f = Fixture::new("enforce");
    let secret = s(&f.ws().join(".env"));
    let kept = Listener::start();
    let other = Listener::start();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("udp: {e}"));
    let udp_port = udp.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    udp.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap_or_else(|e| panic!("{e}"));
    with_net(
        &f,
        &format!(
            "net:\n  allow: [\"127.0.0.1/tcp\", \"127.0.0.1:{udp_port}/udp\"]\n  after_taint: [\"127.0.0.1:{}/tcp\"]\n",
            kept.port
        ),
    );
    let other_port = other.port;
    let (k, d, u) = (
        kept.port.to_string(),
        other.port.to_string(),
        udp_port.to_string(),
    );
    let o = f.sb.run_prog(&[
        "after-secret",
        &secret,
        "tcp",
        "127.0.0.1",
        &k,
        "tcp",
        "127.0.0.1",
        &d,
        "udp",
        "127.0.0.1",
        &u,
    ]);
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!(
            "open {secret}: OK\ntcp 127.0.0.1 {k}: OK\ntcp 127.0.0.1 {d}: EPERM\nudp 127.0.0.1 {u}: EPERM\n"
        )
    );
    // The after_taint connection works end to end: the egress program lets its
    // packets through although the run is tainted.
    let (accepted, got) = kept.received_before(far_future());
    assert!(accepted);
    assert_eq!(got, "after\n");
    let (accepted, _) = other.received_before(far_future());
    assert!(!accepted);
    let mut buf = [0u8; 64];
    assert!(udp.recv(&mut buf).is_err(), "no datagram may arrive");
    let recs = f.sb.audit();
    assert_tainted_denial(&recs, "connect", other_port, "tcp", "deny");
    assert_tainted_denial(&recs, "sendmsg", udp_port, "udp", "deny");
    // Before the taint the same destinations are allowed (net.allow).
    let o = f.sb.run_prog(&["connect", "127.0.0.1", &d]);
    assert_eq!(stdout(&o), format!("connect 127.0.0.1 {d}: ECONNREFUSED\n"));
}

#[test]
fn in_audit_mode_a_tainted_connect_is_a_would_deny() {
    let f = Fixture::new("audit");
    let secret = s(&f.ws().join(".env"));
    let listener = Listener::start();
    let port = listener.port.to_string();
    let lport = listener.port;
    with_net(
        &f,
        "net:\n  allow: [\"127.0.0.1/tcp\"]\n  after_taint: []\n",
    );
    let o =
        f.sb.run_prog(&["after-secret", &secret, "tcp", "127.0.0.1", &port]);
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("open {secret}: OK\ntcp 127.0.0.1 {port}: OK\n")
    );
    let (accepted, got) = listener.received_before(far_future());
    assert!(accepted);
    assert_eq!(got, "after\n");
    assert_tainted_denial(&f.sb.audit(), "connect", lport, "tcp", "would_deny");
}

#[test]
fn wildcard_names_in_net_after_taint_are_refused() {
    let f = Fixture::new("enforce");
    with_net(
        &f,
        "net:\n  allow: [\"*.example.com:443/tcp\"]\n  after_taint: [\"*.example.com:443/tcp\"]\n",
    );
    let o = f.sb.run_prog(&["open", "/etc/hostname"]);
    assert_status(&o, 125);
    assert!(
        integration::stderr(&o).starts_with("agentd: bpf: net.after_taint `*.example.com:443/tcp` (line 13): wildcard names are not supported after taint"),
        "{}",
        integration::stderr(&o)
    );
}

#[test]
fn after_taint_holds_for_ipv6_and_ipv4_mapped_destinations() {
    let f = Fixture::new("enforce");
    let secret = s(&f.ws().join(".env"));
    let kept6 = Listener::start_on("[::1]:0");
    let other6 = Listener::start_on("[::1]:0");
    let kept4 = Listener::start();
    let (k6, o6, k4) = (kept6.port, other6.port, kept4.port);
    with_net(
        &f,
        &format!(
            "net:\n  allow: [\"[::1]:{k6}/tcp\", \"[::1]:{o6}/tcp\", \"127.0.0.1:{k4}/tcp\"]\n  after_taint: [\"[::1]:{k6}/tcp\", \"127.0.0.1:{k4}/tcp\"]\n"
        ),
    );
    let (k6s, o6s, k4s) = (k6.to_string(), o6.to_string(), k4.to_string());
    let o = f.sb.run_prog(&[
        "after-secret",
        &secret,
        "tcp",
        "::1",
        &k6s,
        "tcp",
        "::1",
        &o6s,
        "tcp",
        "::ffff:127.0.0.1",
        &k4s,
    ]);
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!(
            "open {secret}: OK\ntcp ::1 {k6}: OK\ntcp ::1 {o6}: EPERM\ntcp ::ffff:127.0.0.1 {k4}: OK\n"
        )
    );
    // IPv6 packets are judged by the IPv6 after_taint trie in cgroup_skb/egress; the
    // mapped destination leaves as IPv4 and is judged by the IPv4 one.
    let (accepted, got) = kept6.received_before(far_future());
    assert!(accepted);
    assert_eq!(got, "after\n");
    let (accepted, _) = other6.received_before(far_future());
    assert!(!accepted);
    let (accepted, got) = kept4.received_before(far_future());
    assert!(accepted);
    assert_eq!(got, "after\n");
    let recs = f.sb.audit();
    let d: Vec<&Value> = events(&recs, "denied")
        .into_iter()
        .filter(|r| r["layer"] == "bpf")
        .collect();
    assert_eq!(d.len(), 1, "{recs:#?}");
    assert_eq!(d[0]["dst"], "::1");
    assert_eq!(d[0]["port"], o6);
    assert_eq!(d[0]["rule"], "tainted: no after_taint rule");
    assert_eq!(d[0]["errno"], "EPERM");
}

/// A file created inside the denied tree during the run was not enumerated at start:
/// only the ancestor walk (`.ssh` one level up) can match it.
#[test]
fn a_file_created_inside_a_denied_tree_during_the_run_is_stopped() {
    let f = Fixture::new("enforce");
    let typed = s(&f.sb.workspace().join(".ssh/new"));
    let o = f.sb.run_prog(&["write", &typed]);
    let recs = f.sb.audit();
    let denied = inode_denials(&recs);
    assert_eq!(denied.len(), 1, "one denial expected: {recs:#?}");
    let d = denied[0];
    assert_eq!(d["path"], s(&f.ws().join(".ssh/new")).as_str(), "{d}");
    assert_eq!(d["rule"], "fs.deny {workspace}/.ssh", "{d}");
    assert_eq!(d["name"], "new", "{d}");
    if lsm_path() {
        assert_status(&o, 0);
        assert_eq!(stdout(&o), format!("write {typed}: EACCES\n"));
        assert_eq!(d["errno"], "EACCES", "{d}");
    } else {
        assert_status(&o, 137);
        assert_eq!(stdout(&o), "");
        assert_eq!(d["decision"], "kill", "{d}");
    }
}

/// A denied file handed to the run as an open descriptor (here its stdin) cannot be
/// re-opened through `/proc/self/fd/N`: the magic link ends at the same inode.
#[test]
fn a_denied_file_reopened_through_proc_self_fd_is_stopped() {
    let f = Fixture::new("enforce");
    let stdin = std::fs::File::open(f.ws().join(".ssh/id")).unwrap_or_else(|e| panic!("{e}"));
    let typed = "/proc/self/fd/0";
    let prog = testprog().display().to_string();
    let o =
        f.sb.run_cmd(&[&prog, "open", typed])
            .stdin(stdin)
            .output()
            .unwrap_or_else(|e| panic!("run agentd: {e}"));
    assert_denied_open(&f, &o, typed, "id");
}

/// Path operations on `fs.deny` inodes, and new entries inside a denied directory.
/// On the LSM path each fails with EACCES and is audited with its operation; the
/// tracepoint fallback only sees opens (documented residual: `policy explain` says so),
/// so there the operations succeed unaudited, and the `create`, an open, is killed.
#[test]
fn path_operations_on_denied_files_are_stopped_on_the_lsm_path() {
    let f = Fixture::new("enforce");
    let ws = f.ws();
    let ssh = ws.join(".ssh");
    for name in ["a", "b", "c", "d", "e"] {
        std::fs::write(ssh.join(name), "x\n").unwrap_or_else(|e| panic!("write: {e}"));
    }
    std::fs::create_dir(ssh.join("sub")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let at = |p: &str| s(&ws.join(p));
    // (op, path, second path, the path the record names)
    let ops: Vec<(&str, String, String, String)> = vec![
        ("unlink", at(".ssh/a"), String::new(), at(".ssh/a")),
        ("rename", at(".ssh/b"), at("b-out"), at(".ssh/b")),
        (
            "rename",
            at("notes.txt"),
            at(".ssh/notes.txt"),
            at(".ssh/notes.txt"),
        ),
        ("link", at(".ssh/c"), at("c-link"), at(".ssh/c")),
        ("truncate", at(".ssh/d"), String::new(), at(".ssh/d")),
        ("chmod", at(".ssh/e"), String::new(), at(".ssh/e")),
        ("rmdir", at(".ssh/sub"), String::new(), at(".ssh/sub")),
        ("mkdir", at(".ssh/newdir"), String::new(), at(".ssh/newdir")),
        ("symlink", at("notes.txt"), at(".ssh/ln"), at(".ssh/ln")),
        ("create", at(".ssh/new"), String::new(), at(".ssh/new")),
    ];
    let specs: Vec<String> = ops
        .iter()
        .map(|(op, p, q, _)| {
            if q.is_empty() {
                format!("{op}:{p}")
            } else {
                format!("{op}:{p}:{q}")
            }
        })
        .collect();
    let mut args = vec!["fsops"];
    args.extend(specs.iter().map(String::as_str));
    let o = f.sb.run_prog(&args);
    let recs = f.sb.audit();
    let denied = inode_denials(&recs);
    if lsm_path() {
        assert_status(&o, 0);
        let want: String = ops
            .iter()
            .map(|(op, p, _, _)| format!("{op} {p}: EACCES\n"))
            .collect();
        assert_eq!(stdout(&o), want);
        assert_eq!(denied.len(), ops.len(), "{recs:#?}");
        for (d, (op, _, _, named)) in denied.iter().zip(&ops) {
            let audited = match *op {
                "truncate" | "chmod" => "setattr",
                "mkdir" | "symlink" => "create",
                other => other,
            };
            assert_eq!(d["op"], audited, "{d}");
            assert_eq!(d["path"], named.as_str(), "{d}");
            assert_eq!(d["layer"], "lsm", "{d}");
            assert_eq!(d["decision"], "deny", "{d}");
            assert_eq!(d["errno"], "EACCES", "{d}");
            assert_eq!(d["rule"], "fs.deny {workspace}/.ssh", "{d}");
        }
        assert!(ssh.join("a").exists() && ssh.join("b").exists());
        assert!(!ssh.join("new").exists());
    } else {
        eprintln!(
            "tracepoint fallback: path operations on denied files are not stopped (documented residual); the create is an open and is killed"
        );
        assert_status(&o, 137);
        let want: String = ops[..ops.len() - 1]
            .iter()
            .map(|(op, p, _, _)| format!("{op} {p}: OK\n"))
            .collect();
        assert_eq!(stdout(&o), want);
        assert_eq!(denied.len(), 1, "{recs:#?}");
        assert_eq!(denied[0]["op"], "open", "{}", denied[0]);
        assert_eq!(denied[0]["name"], "new", "{}", denied[0]);
        assert_eq!(denied[0]["decision"], "kill", "{}", denied[0]);
    }
}
