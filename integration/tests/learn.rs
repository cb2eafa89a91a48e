//! Learn mode and `agentd policy suggest`: a workload runs under `--learn`, the
//! suggestion is checked, replayed and enforced.
//!
//! A learn run records every exec, executable mapping, connect, bind, unix socket, name,
//! budget peak and file access its policy would deny. The workload runs twice: with a
//! base policy (`--learn --policy BASE`, the suggestion adds the rest to it with
//! `--base`), and with none (the suggestion alone is the policy).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use integration::{agentd_bin, assert_status, read_audit, stdout, Sandbox};
use serde_json::Value;

#[path = "support/upstream.rs"]
mod upstream;
use upstream::Upstream;

/// The name the workload fetches over HTTP, which the test upstream resolves to
/// 127.0.0.1 (through the run's resolver: port 53 goes to it whatever resolv.conf says).
const NAME: &str = "svc.learn.test";

/// One upstream DNS server for every run of this binary (`--dns-upstream`).
fn upstream_port() -> u16 {
    static UPSTREAM: OnceLock<Upstream> = OnceLock::new();
    UPSTREAM
        .get_or_init(|| Upstream::start(&[(NAME, [127, 0, 0, 1])]))
        .port
}

/// A directory outside /tmp (which the suggestion may make writable) for the audit log.
fn log_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("agentd-it-learn-")
        .tempdir_in("/var/lib")
        .unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn run(sb: &Sandbox, log: &Path, policy: Option<&Path>, learn: bool, cmd: &[&str]) -> Output {
    let mut c = sb.agentd();
    c.env("HOME", sb.workspace()).arg("run").arg("--standalone");
    if learn {
        c.arg("--learn");
    }
    if let Some(p) = policy {
        c.arg("--policy").arg(p);
    }
    c.arg("--workspace")
        .arg(sb.workspace())
        .arg("--audit")
        .arg(log)
        .arg("--dns-upstream")
        .arg(format!("127.0.0.1:{}", upstream_port()))
        .arg("--")
        .args(cmd);
    c.output().unwrap_or_else(|e| panic!("run agentd: {e}"))
}

fn suggest(sb: &Sandbox, args: &[&str]) -> Output {
    let o = Command::new(agentd_bin())
        .current_dir(sb.dir.path())
        .args(["policy", "suggest"])
        .args(args)
        .arg("--workspace")
        .arg(sb.workspace())
        .output()
        .unwrap_or_else(|e| panic!("suggest: {e}"));
    assert_status(&o, 0);
    o
}

fn denials<'a>(records: &'a [Value], run: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["run"] == run)
        .filter(|r| matches!(r["decision"].as_str(), Some("deny" | "kill" | "would_deny")))
        .collect()
}

fn last_run(records: &[Value]) -> String {
    records
        .iter()
        .rev()
        .find(|r| r["event"] == "run_start")
        .and_then(|r| r["run"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// A base with the workload's system files, to which the suggestion adds the rest.
fn base(sb: &Sandbox) -> PathBuf {
    sb.write_policy(
        "version: 1\nname: learn-base\nfs:\n  read: [/usr, /lib, {path: /lib64, optional: true}, /etc/ld.so.cache, /etc/passwd, /etc/group, {path: /etc/localtime, optional: true}, /etc/hosts, {path: /etc/gitconfig, optional: true}, {path: /etc/locale.alias, optional: true}, {path: /etc/ssl/openssl.cnf, optional: true}, /proc, /dev]\n  write: [\"{workspace}\", /tmp]\nexec:\n  allow: []\nnet:\n  allow: []\n",
    )
}

fn workload(sb: &Sandbox, port: u16, tmp_file: &str) -> String {
    let ws = sb.workspace();
    std::fs::create_dir_all(ws.join("tests")).must();
    std::fs::write(ws.join("a.txt"), "hello\n").must();
    std::fs::write(
        ws.join("tests/test_one.py"),
        "import unittest\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(1 + 1, 2)\n",
    )
    .must();
    format!(
        "set -e; cd {ws}; rm -rf .git; git init -q .; git add a.txt; git -c user.name=t -c user.email=t@example.com commit -qm one; \
         /usr/bin/python3 -m unittest discover -s tests -q 2>&1; ls | sort | wc -l; \
         /usr/bin/python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://{NAME}:{port}/\").status)'; \
         echo x > {tmp_file}",
        ws = ws.display()
    )
}

/// A one-shot HTTP server on loopback: answers every connection with 200.
fn http_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").must();
    let port = l.local_addr().must().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    port
}

/// Enforced under the suggestion `policy`, `script` runs with zero denials, and a read
/// of /etc/shadow, which it never made, is still denied.
fn enforced_cleanly(sb: &Sandbox, log: &Path, policy: &Path, script: &str) {
    let o = run(sb, log, Some(policy), false, &["/bin/sh", "-c", script]);
    let records = read_audit(log);
    let enforce_run = last_run(&records);
    assert_eq!(denials(&records, &enforce_run), Vec::<&Value>::new());
    assert_status(&o, 0);
    let o = run(
        sb,
        log,
        Some(policy),
        false,
        &["/bin/sh", "-c", "cat /etc/shadow"],
    );
    assert_ne!(o.status.code(), Some(0));
}

#[test]
fn learn_suggest_then_enforce_with_zero_denials() {
    let sb = Sandbox::new();
    let logs = log_dir();
    let log = logs.path().join("audit.jsonl");
    let base = base(&sb);
    let port = http_server();
    let tmp_file = format!("/tmp/agentd-learn-it-{}", std::process::id());
    let script = workload(&sb, port, &tmp_file);

    let o = run(&sb, &log, Some(&base), true, &["/bin/sh", "-c", &script]);
    assert_status(&o, 0);
    assert!(stdout(&o).contains("200"), "{}", stdout(&o));
    let records = read_audit(&log);
    let learn_run = last_run(&records);
    let start = records.iter().find(|r| r["event"] == "run_start").must();
    assert_eq!(start["mode"], "learn");

    let out = sb.dir.path().join("suggested.yaml");
    let s = suggest(
        &sb,
        &[
            "--from",
            log.to_str().must(),
            "--base",
            base.to_str().must(),
            "--out",
            out.to_str().must(),
        ],
    );
    let yaml = std::fs::read_to_string(&out).must();
    let diff = stdout(&s);
    eprintln!("{yaml}\n{diff}");
    assert!(
        diff.contains("+ exec.allow: \"/usr/local/bin/git\"") || diff.contains("/bin/git\""),
        "{diff}"
    );
    // The fetch by name: granted by name, and by address because the answer is
    // loopback (enforce mode's resolver drops private answers no address rule covers).
    assert!(
        diff.contains(&format!("+ net.allow: \"{NAME}:{port}/tcp\"")),
        "{diff}"
    );
    assert!(
        diff.contains(&format!("+ net.allow: \"127.0.0.1:{port}/tcp\"")),
        "{diff}"
    );
    assert!(!diff.contains("/usr/bin/id"), "{diff}");

    // Same log, same bytes.
    let again = sb.dir.path().join("again.yaml");
    suggest(
        &sb,
        &[
            "--from",
            log.to_str().must(),
            "--base",
            base.to_str().must(),
            "--out",
            again.to_str().must(),
        ],
    );
    assert_eq!(std::fs::read(&again).must(), yaml.as_bytes());

    // It is a valid policy and the replay of the learn run under it flips nothing.
    let check = sb
        .agentd()
        .args(["policy", "check"])
        .arg(&out)
        .arg("--workspace")
        .arg(sb.workspace())
        .output()
        .must();
    assert_status(&check, 0);
    let replay = sb
        .agentd()
        .args(["audit", "replay"])
        .arg(&log)
        .arg("--policy")
        .arg(&out)
        .arg("--workspace")
        .arg(sb.workspace())
        .args(["--run", &learn_run])
        .output()
        .must();
    // Nothing the run did is denied under it, and a learn run's would_deny records are
    // what it was let do: no flip either way.
    assert!(
        stdout(&replay).contains(" 0 flip(s): 0 allow→deny, 0 deny→allow"),
        "{}",
        stdout(&replay)
    );
    // Under the base policy alone, what the suggestion added is denied again: each of
    // those is an allow→deny flip, not passed over as "denied then, denied now".
    let replay_base = sb
        .agentd()
        .args(["audit", "replay"])
        .arg(&log)
        .arg("--policy")
        .arg(&base)
        .arg("--workspace")
        .arg(sb.workspace())
        .args(["--run", &learn_run])
        .output()
        .must();
    let out_base = stdout(&replay_base);
    assert!(
        out_base.contains(" 0 deny→allow") && !out_base.contains(" 0 allow→deny"),
        "{out_base}"
    );

    enforced_cleanly(&sb, &log, &out, &script);
    let o = run(&sb, &log, Some(&out), false, &["/usr/bin/id"]);
    assert_status(&o, 126);
    let other = port.wrapping_add(1);
    let o = run(
        &sb,
        &log,
        Some(&out),
        false,
        &["/bin/sh", "-c", &format!("/usr/bin/python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {other}))'")],
    );
    assert_ne!(o.status.code(), Some(0));
    let records = read_audit(&log);
    let r = last_run(&records);
    assert!(
        denials(&records, &r)
            .iter()
            .any(|d| d["port"] == other && d["op"] == "connect"),
        "{records:?}"
    );
    let _ = std::fs::remove_file(&tmp_file);
}

/// Without a base policy, a learn run records every file it read or wrote (the file
/// observer: successful file syscalls judged against the learn preset, which allows
/// none), and the suggestion alone runs the same workload in enforce mode with zero
/// denials.
#[test]
fn learn_without_a_base_records_the_files_and_enforces_with_zero_denials() {
    let sb = Sandbox::new();
    let logs = log_dir();
    let log = logs.path().join("audit.jsonl");
    let port = http_server();
    let tmp_file = format!("/tmp/agentd-learn-it-nobase-{}", std::process::id());
    let script = workload(&sb, port, &tmp_file);

    let o = run(&sb, &log, None, true, &["/bin/sh", "-c", &script]);
    assert_status(&o, 0);
    let records = read_audit(&log);
    let learn_run = last_run(&records);
    let files: Vec<&Value> = denials(&records, &learn_run)
        .into_iter()
        .filter(|r| r["op"] == "open" && r["layer"] == "landlock")
        .collect();
    let read = |p: &str| {
        files
            .iter()
            .any(|r| r["path"] == p && r["access"] == "read" && r["decision"] == "would_deny")
    };
    assert!(
        read("/etc/passwd") || read("/etc/ld.so.cache"),
        "{files:#?}"
    );
    assert!(
        files
            .iter()
            .any(|r| r["path"] == tmp_file.as_str() && r["access"] == "write"),
        "the write to {tmp_file}: {files:#?}"
    );

    let out = sb.dir.path().join("suggested-nobase.yaml");
    suggest(
        &sb,
        &["--from", log.to_str().must(), "--out", out.to_str().must()],
    );
    let yaml = std::fs::read_to_string(&out).must();
    eprintln!("{yaml}");
    let _ = std::fs::remove_file(&tmp_file);
    // The write to /tmp is granted (the temp directory).
    enforced_cleanly(&sb, &log, &out, &script);
    let _ = std::fs::remove_file(&tmp_file);
}

/// A learn run that reads an ssh key: the suggestion puts it under fs.secret.
#[test]
fn a_learn_run_reading_an_ssh_key_suggests_a_secret() {
    let sb = Sandbox::new();
    let logs = log_dir();
    let log = logs.path().join("audit.jsonl");
    let home = sb.dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).must();
    let key = home.join(".ssh/id_ed25519");
    std::fs::write(&key, "not a key\n").must();
    let mut c = sb.agentd();
    c.env("HOME", &home)
        .args(["run", "--standalone", "--learn", "--workspace"])
        .arg(sb.workspace())
        .arg("--audit")
        .arg(&log)
        .args(["--", "/bin/cat"])
        .arg(&key);
    let o = c.output().must();
    assert_status(&o, 0);
    let records = read_audit(&log);
    let run_id = last_run(&records);
    assert!(
        denials(&records, &run_id)
            .iter()
            .any(|r| r["path"] == key.to_str().must() && r["decision"] == "would_deny"),
        "{records:#?}"
    );
    let o = Command::new(agentd_bin())
        .current_dir(sb.dir.path())
        .env("HOME", &home)
        .args(["policy", "suggest", "--from"])
        .arg(&log)
        .arg("--workspace")
        .arg(sb.workspace())
        .output()
        .must();
    assert_status(&o, 0);
    let y = stdout(&o);
    assert_ssh_key_is_a_secret_not_a_read(&y);
}

#[test]
fn an_ssh_key_read_is_a_secret_not_a_read() {
    // The record a learn run writes for a file read outside its policy (layer landlock,
    // `would_deny`): suggest turns it into fs.secret (without a run: any HOME).
    let sb = Sandbox::new();
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    let log = sb.dir.path().join("synthetic.jsonl");
    let key = home.join(".ssh/id_ed25519");
    let lines = [
        serde_json::json!({"run": "r1", "event": "run_start", "workspace": sb.workspace(), "mode": "learn"}),
        serde_json::json!({"run": "r1", "event": "denied", "decision": "would_deny", "layer": "landlock", "op": "open", "path": key, "syscall": "openat"}),
        serde_json::json!({"run": "r1", "event": "run_end", "elapsed_ms": 10, "budgets": {}}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, text).must();
    let o = suggest(&sb, &["--from", log.to_str().must()]);
    let y = stdout(&o);
    assert_ssh_key_is_a_secret_not_a_read(&y);
}

/// The suggestion lists the SSH key under fs.secret and not under fs.read.
fn assert_ssh_key_is_a_secret_not_a_read(y: &str) {
    let secret = y.split("  secret:").nth(1).unwrap_or("");
    let read = y
        .split("  read:")
        .nth(1)
        .unwrap_or("")
        .split("  write:")
        .next()
        .unwrap_or("");
    assert!(secret.contains("~/.ssh/id_ed25519"), "{y}");
    assert!(!read.contains(".ssh"), "{y}");
}

/// `unwrap` that says what failed, for Results and Options alike.
trait Must<T> {
    fn must(self) -> T;
}

impl<T, E: std::fmt::Debug> Must<T> for Result<T, E> {
    fn must(self) -> T {
        self.unwrap_or_else(|e| panic!("{e:?}"))
    }
}

impl<T> Must<T> for Option<T> {
    fn must(self) -> T {
        self.unwrap_or_else(|| panic!("expected a value, got None"))
    }
}
