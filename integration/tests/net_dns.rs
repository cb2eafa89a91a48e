//! Domain rules end to end: the run's resolver, the port-53 redirection in the cgroup
//! programs and the allow-map entries its answers create. A test upstream DNS server on
//! 127.0.0.1 (hickory-proto messages over a real UDP socket) answers fixed records; the
//! confined helper resolves through glibc exactly as an agent would (its resolv.conf
//! nameserver, whatever it is, is redirected) and connects to loopback listeners.

use std::net::TcpListener;
use std::process::Output;

use integration::{assert_status, events, expect, stdout, testprog, Sandbox};
use serde_json::Value;

#[path = "support/upstream.rs"]
mod upstream;
use upstream::Upstream;

fn cgroup_bpf_or_skip(test: &str) -> bool {
    let sb = Sandbox::new();
    let o = sb
        .agentd()
        .args(["doctor", "--json"])
        .output()
        .unwrap_or_else(|e| panic!("doctor: {e}"));
    let doctor: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let available = doctor["cgroup_bpf"]["available"] == true;
    if !available {
        assert_ne!(
            expect("AGENTD_EXPECT_CGROUP_BPF").as_deref(),
            Some("1"),
            "AGENTD_EXPECT_CGROUP_BPF=1 but cgroup-BPF is unavailable"
        );
        eprintln!(
            "SKIP: {test}: cgroup-BPF is unavailable: {}",
            doctor["cgroup_bpf"]["detail"]
        );
    }
    available
}

/// Policy: the helper, what glibc's resolver reads, and `allow`.
fn dns_policy(sb: &Sandbox, mode: &str, allow: &[String]) {
    let prog = testprog();
    let dir = prog
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    sb.write_policy(&format!(
        "version: 1\nname: dns-it\nmode: {mode}\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{dir}\", {{path: /etc/resolv.conf, optional: true}}, {{path: /etc/nsswitch.conf, optional: true}}, {{path: /etc/hosts, optional: true}}, {{path: /etc/host.conf, optional: true}}, {{path: /etc/gai.conf, optional: true}}]\nexec:\n  allow: [\"{}\"]\nnet:\n  allow: [{}]\n",
        prog.display(),
        allow.join(", ")
    ));
}

/// `agentd run --dns-upstream 127.0.0.1:PORT ... -- agentd-testprog ARGS`
fn run_with_upstream(sb: &Sandbox, upstream: u16, args: &[&str]) -> Output {
    let mut c = sb.agentd();
    c.arg("run")
        .arg("--policy")
        .arg(sb.policy_path())
        .arg("--workspace")
        .arg(sb.workspace())
        .arg("--audit")
        .arg(sb.audit_path())
        .arg("--dns-upstream")
        .arg(format!("127.0.0.1:{upstream}"))
        .arg("--")
        .arg(testprog())
        .args(args);
    c.output().unwrap_or_else(|e| panic!("run agentd: {e}"))
}

fn listen_on(ip: &str, port: u16) -> TcpListener {
    TcpListener::bind((ip, port)).unwrap_or_else(|e| panic!("listen {ip}:{port}: {e}"))
}

fn records_of<'a>(recs: &'a [Value], layer: &str, event: &str) -> Vec<&'a Value> {
    events(recs, event)
        .into_iter()
        .filter(|r| r["layer"] == layer)
        .collect()
}

/// The network layer's denials of inet destinations. glibc's resolver first tries nscd's
/// socket (/var/run/nscd/socket), which the unix-socket layer denies and audits too
/// (family AF_UNIX): those are not what these tests are about.
fn inet_denials(recs: &[Value]) -> Vec<&Value> {
    records_of(recs, "bpf", "denied")
        .into_iter()
        .filter(|r| r["family"] != "AF_UNIX")
        .collect()
}

const OK_NAME: &str = "ok.agentd.test";
const DENIED_NAME: &str = "denied.agentd.test";
const REBIND_NAME: &str = "rebind.agentd.test";

struct Fixture {
    upstream: Upstream,
    port: u16,
    _listeners: Vec<TcpListener>,
}

/// Upstream zone, listeners on 127.0.0.2/3/4 at one port, and the policy: the two
/// allowed names on that port, plus 127.0.0.3/32 on port 1 (it makes 127.0.0.3 a
/// legitimate answer, not rebinding, but does not allow the port itself).
fn fixture(sb: &Sandbox, mode: &str) -> Fixture {
    let upstream = Upstream::start(&[
        (OK_NAME, [127, 0, 0, 3]),
        (DENIED_NAME, [127, 0, 0, 4]),
        (REBIND_NAME, [127, 0, 0, 2]),
    ]);
    let first = listen_on("127.0.0.3", 0);
    let port = first.local_addr().map(|a| a.port()).unwrap_or_default();
    let listeners = vec![
        first,
        listen_on("127.0.0.4", port),
        listen_on("127.0.0.2", port),
    ];
    dns_policy(
        sb,
        mode,
        &[
            format!("{OK_NAME}:{port}/tcp"),
            format!("{REBIND_NAME}:{port}/tcp"),
            "127.0.0.3:1/tcp".to_owned(),
        ],
    );
    Fixture {
        upstream,
        port,
        _listeners: listeners,
    }
}

#[test]
fn an_allowed_name_resolves_and_connects_only_after_resolution() {
    if !cgroup_bpf_or_skip("dns_allowed") {
        return;
    }
    let sb = Sandbox::new();
    let f = fixture(&sb, "enforce");
    let port = f.port.to_string();
    // The address alone is not allowed on this port: the name rule is what allows it.
    let o = run_with_upstream(&sb, f.upstream.port, &["connect", "127.0.0.3", &port]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("connect 127.0.0.3 {port}: EPERM\n"));

    let o = run_with_upstream(&sb, f.upstream.port, &["resolve-connect", OK_NAME, &port]);
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("resolve {OK_NAME}: 127.0.0.3\nconnect 127.0.0.3 {port}: OK\n")
    );
    assert!(f.upstream.seen().iter().any(|n| n == OK_NAME));
    let recs = sb.audit();
    let answered: Vec<_> = records_of(&recs, "dns", "dns")
        .into_iter()
        .filter(|r| r["name"] == OK_NAME && r["qtype"] == "A")
        .collect();
    assert!(!answered.is_empty(), "{recs:?}");
    assert_eq!(answered[0]["decision"], "allow");
    assert_eq!(answered[0]["addrs"][0], "127.0.0.3");
    assert_eq!(answered[0]["rule"], format!("{OK_NAME}:{port}/tcp"));
    let resolver = records_of(&recs, "dns", "resolver");
    assert_eq!(resolver.len(), 2, "one per run: {resolver:?}");
    assert_eq!(
        resolver[0]["upstream"][0],
        format!("127.0.0.1:{}", f.upstream.port)
    );
}

#[test]
fn a_denied_name_is_refused_and_its_address_is_not_connectable() {
    if !cgroup_bpf_or_skip("dns_denied") {
        return;
    }
    let sb = Sandbox::new();
    let f = fixture(&sb, "enforce");
    let port = f.port.to_string();
    let o = run_with_upstream(
        &sb,
        f.upstream.port,
        &["resolve-connect", DENIED_NAME, &port],
    );
    assert_status(&o, 0);
    // glibc turns REFUSED from its only nameserver into EAI_AGAIN.
    assert_eq!(stdout(&o), format!("resolve {DENIED_NAME}: EAI_AGAIN\n"));
    assert!(
        !f.upstream.seen().iter().any(|n| n == DENIED_NAME),
        "a refused name must never be forwarded"
    );
    let o = run_with_upstream(&sb, f.upstream.port, &["connect", "127.0.0.4", &port]);
    assert_eq!(stdout(&o), format!("connect 127.0.0.4 {port}: EPERM\n"));

    let recs = sb.audit();
    let refused: Vec<_> = records_of(&recs, "dns", "denied")
        .into_iter()
        .filter(|r| r["name"] == DENIED_NAME)
        .collect();
    assert!(!refused.is_empty(), "{recs:?}");
    assert_eq!(refused[0]["decision"], "deny");
    assert_eq!(refused[0]["op"], "dns_query");
    assert_eq!(refused[0]["rule"], "no rule");
    assert_eq!(refused[0]["rcode"], "REFUSED");
    let conn = inet_denials(&recs);
    assert_eq!(conn.len(), 1, "{conn:?}");
    assert_eq!(conn[0]["dst"], "127.0.0.4");
    assert_eq!(conn[0]["port"], f.port);
    assert_eq!(conn[0]["errno"], "EPERM");
    assert_eq!(conn[0]["rule"], "no rule");
}

#[test]
fn a_rebinding_answer_is_not_usable() {
    if !cgroup_bpf_or_skip("dns_rebinding") {
        return;
    }
    let sb = Sandbox::new();
    let f = fixture(&sb, "enforce");
    let port = f.port.to_string();
    let o = run_with_upstream(
        &sb,
        f.upstream.port,
        &["resolve-connect", REBIND_NAME, &port],
    );
    assert_status(&o, 0);
    // The only address was dropped: SERVFAIL, which glibc reports as EAI_AGAIN.
    assert_eq!(stdout(&o), format!("resolve {REBIND_NAME}: EAI_AGAIN\n"));
    let o = run_with_upstream(&sb, f.upstream.port, &["connect", "127.0.0.2", &port]);
    assert_eq!(stdout(&o), format!("connect 127.0.0.2 {port}: EPERM\n"));
    let recs = sb.audit();
    let dropped: Vec<_> = records_of(&recs, "dns", "denied")
        .into_iter()
        .filter(|r| r["name"] == REBIND_NAME && r["op"] == "dns_answer")
        .collect();
    assert!(!dropped.is_empty(), "{recs:?}");
    assert_eq!(dropped[0]["decision"], "deny");
    assert_eq!(dropped[0]["addrs"][0], "127.0.0.2");
    assert_eq!(dropped[0]["rule"], format!("{REBIND_NAME}:{port}/tcp"));
}

#[test]
fn audit_mode_resolves_a_denied_name_and_records_would_deny() {
    if !cgroup_bpf_or_skip("dns_audit") {
        return;
    }
    let sb = Sandbox::new();
    let f = fixture(&sb, "audit");
    let port = f.port.to_string();
    let o = run_with_upstream(
        &sb,
        f.upstream.port,
        &["resolve-connect", DENIED_NAME, &port],
    );
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("resolve {DENIED_NAME}: 127.0.0.4\nconnect 127.0.0.4 {port}: OK\n")
    );
    let recs = sb.audit();
    let would: Vec<_> = records_of(&recs, "dns", "denied")
        .into_iter()
        .filter(|r| r["name"] == DENIED_NAME)
        .collect();
    assert!(!would.is_empty(), "{recs:?}");
    assert_eq!(would[0]["decision"], "would_deny");
    let conn = inet_denials(&recs);
    assert_eq!(conn.len(), 1, "{conn:?}");
    assert_eq!(conn[0]["decision"], "would_deny");
    assert_eq!(conn[0]["dst"], "127.0.0.4");
    assert!(recs.iter().all(|r| r["decision"] != "deny"));
}

/// Adds `fs.secret` (a new `.env` in the workspace, readable) and `net` lines to the
/// fixture's policy; returns the secret's path.
fn with_secret(sb: &Sandbox, net_extra: &str) -> String {
    let secret = sb.workspace().join(".env");
    std::fs::write(&secret, "TOKEN=1\n").unwrap_or_else(|e| panic!("write: {e}"));
    let secret = std::fs::canonicalize(&secret)
        .unwrap_or_else(|e| panic!("canonicalize: {e}"))
        .display()
        .to_string();
    let yaml = std::fs::read_to_string(sb.policy_path()).unwrap_or_else(|e| panic!("{e}"));
    let yaml = yaml
        .replacen("\nexec:", &format!("\n  secret: [\"{secret}\"]\nexec:"), 1)
        .replacen("read: [", &format!("read: [\"{secret}\", "), 1);
    sb.write_policy(&format!("{yaml}{net_extra}"));
    secret
}

#[test]
fn an_after_taint_name_still_resolves_and_connects_once_tainted() {
    if !cgroup_bpf_or_skip("dns_after_taint") {
        return;
    }
    let sb = Sandbox::new();
    let f = fixture(&sb, "enforce");
    let port = f.port.to_string();
    let secret = with_secret(&sb, &format!("  after_taint: [\"{OK_NAME}:{port}/tcp\"]\n"));
    let o = run_with_upstream(
        &sb,
        f.upstream.port,
        &[
            "after-secret",
            &secret,
            "resolve",
            OK_NAME,
            &port,
            "tcp",
            "127.0.0.3",
            &port,
            "resolve",
            REBIND_NAME,
            &port,
        ],
    );
    assert_status(&o, 0);
    // The after_taint name resolves and its address stays reachable (connect and
    // egress); another allowed name is refused.
    assert_eq!(
        stdout(&o),
        format!(
            "open {secret}: OK\nresolve {OK_NAME}: 127.0.0.3 {port}\ntcp 127.0.0.3 {port}: OK\nresolve {REBIND_NAME}: EAI_AGAIN\n"
        )
    );
    assert!(!f.upstream.seen().iter().any(|n| n == REBIND_NAME));
    let recs = sb.audit();
    let refused: Vec<_> = records_of(&recs, "dns", "denied")
        .into_iter()
        .filter(|r| r["name"] == REBIND_NAME)
        .collect();
    assert!(!refused.is_empty(), "{recs:?}");
    assert_eq!(refused[0]["rule"], "tainted: no after_taint rule");
    assert!(inet_denials(&recs).is_empty(), "{recs:?}");
}

#[test]
fn once_tainted_the_resolver_refuses_every_name() {
    if !cgroup_bpf_or_skip("dns_tainted") {
        return;
    }
    let sb = Sandbox::new();
    let f = fixture(&sb, "enforce");
    let port = f.port.to_string();
    let secret = with_secret(&sb, "");
    let o = run_with_upstream(
        &sb,
        f.upstream.port,
        &["after-secret", &secret, "resolve", OK_NAME, &port],
    );
    assert_status(&o, 0);
    // An allowed name, but the run has read a secret: REFUSED, which glibc reports as
    // EAI_AGAIN, and the query never leaves the host.
    assert_eq!(
        stdout(&o),
        format!("open {secret}: OK\nresolve {OK_NAME}: EAI_AGAIN\n")
    );
    assert!(
        !f.upstream.seen().iter().any(|n| n == OK_NAME),
        "a tainted run's query must never be forwarded"
    );
    let recs = sb.audit();
    let refused: Vec<_> = records_of(&recs, "dns", "denied")
        .into_iter()
        .filter(|r| r["name"] == OK_NAME)
        .collect();
    assert!(!refused.is_empty(), "{recs:?}");
    assert_eq!(refused[0]["decision"], "deny");
    assert_eq!(refused[0]["op"], "dns_query");
    assert_eq!(refused[0]["rule"], "tainted: no after_taint rule");
    assert_eq!(refused[0]["rcode"], "REFUSED");
}

#[test]
fn a_reply_to_an_unconnected_sendto_comes_from_the_original_destination() {
    if !cgroup_bpf_or_skip("dns_recvmsg") {
        return;
    }
    let sb = Sandbox::new();
    let f = fixture(&sb, "enforce");
    // The query goes to a documentation address (never reachable): the cgroup sendmsg
    // hook sends it to the run's resolver, and cgroup/recvmsg4 makes the reply's source
    // the address the client wrote to, so a client checking it accepts the answer.
    let o = run_with_upstream(
        &sb,
        f.upstream.port,
        &["udp-dns-query", "192.0.2.1", "53", OK_NAME],
    );
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        "udp-dns-query 192.0.2.1 53: reply from 192.0.2.1 53\n"
    );
    // The same through an IPv6 socket (to the resolver's [::1] socket, or to its
    // IPv4 one through ::ffff:127.0.0.1).
    let o = run_with_upstream(
        &sb,
        f.upstream.port,
        &["udp-dns-query", "2001:db8::1", "53", OK_NAME],
    );
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        "udp-dns-query 2001:db8::1 53: reply from 2001:db8::1 53\n"
    );
    let recs = sb.audit();
    let answered: Vec<_> = records_of(&recs, "dns", "dns")
        .into_iter()
        .filter(|r| r["name"] == OK_NAME)
        .collect();
    assert_eq!(answered.len(), 2, "{recs:?}");
}

#[test]
fn replay_judges_the_names_the_resolver_was_asked_for() {
    if !cgroup_bpf_or_skip("dns_replay") {
        return;
    }
    let sb = Sandbox::new();
    let f = fixture(&sb, "enforce");
    let port = f.port.to_string();
    let o = run_with_upstream(&sb, f.upstream.port, &["resolve-connect", OK_NAME, &port]);
    assert_eq!(
        stdout(&o),
        format!("resolve {OK_NAME}: 127.0.0.3\nconnect 127.0.0.3 {port}: OK\n")
    );
    let o = run_with_upstream(
        &sb,
        f.upstream.port,
        &["resolve-connect", DENIED_NAME, &port],
    );
    assert_eq!(stdout(&o), format!("resolve {DENIED_NAME}: EAI_AGAIN\n"));
    // Policy B allows the name A refused, and not the one A allowed.
    let a = std::fs::read_to_string(sb.policy_path()).unwrap_or_else(|e| panic!("{e}"));
    dns_policy(&sb, "enforce", &[format!("{DENIED_NAME}:{port}/tcp")]);
    let b = sb.dir.path().join("b.yaml");
    std::fs::rename(sb.policy_path(), &b).unwrap_or_else(|e| panic!("{e}"));
    sb.write_policy(&a);
    let o = sb
        .agentd()
        .args(["audit", "replay"])
        .arg(sb.audit_path())
        .arg("--policy")
        .arg(&b)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    let out = stdout(&o);
    let rows: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| l.contains(" dns "))
        .collect();
    let (asked_ok, asked_denied) = (
        events(&sb.audit(), "dns")
            .iter()
            .filter(|r| r["name"] == OK_NAME)
            .count(),
        records_of(&sb.audit(), "dns", "denied")
            .iter()
            .filter(|r| r["name"] == DENIED_NAME)
            .count(),
    );
    assert_eq!(
        rows,
        vec![
            format!("allow→deny dns {asked_ok} {OK_NAME} no net.allow name rule matches"),
            format!(
                "deny→allow dns {asked_denied} {DENIED_NAME} net.allow {DENIED_NAME}:{port}/tcp"
            ),
        ],
        "{out}"
    );
}
