//! Network enforcement by the cgroup-BPF programs: real sockets on loopback only.
//!
//! Each test opens its own listeners on 127.0.0.1 / [::1] (ephemeral ports, in this
//! unconfined test process), so a connect that is not denied gets `OK` rather than
//! `ECONNREFUSED`, and the test asserts the exact errno the confined helper saw plus the
//! audit record of every denial.

use std::net::{TcpListener, UdpSocket};
use std::process::Stdio;

use integration::{assert_status, events, expect, read_audit, stdout, testprog, Sandbox};
use serde_json::Value;

/// `true` when cgroup-BPF works here; otherwise prints a loud SKIP, unless CI pins it.
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
            "AGENTD_EXPECT_CGROUP_BPF=1 but cgroup-BPF is unavailable: {}",
            doctor["cgroup_bpf"]["detail"]
        );
        eprintln!(
            "SKIP: {test}: cgroup-BPF is unavailable: {}",
            doctor["cgroup_bpf"]["detail"]
        );
    }
    available
}

/// The base policy (helper readable and executable) plus `net` YAML lines and a mode.
fn net_policy(sb: &Sandbox, mode: &str, net: &str) {
    let prog = testprog();
    let dir = prog
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    sb.write_policy(&format!(
        "version: 1\nname: net-it\nmode: {mode}\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{dir}\"]\nexec:\n  allow: [\"{}\"]\n{net}",
        prog.display()
    ));
}

fn listen4() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("listen: {e}"));
    let port = l.local_addr().map(|a| a.port()).unwrap_or_default();
    (l, port)
}

fn listen6() -> (TcpListener, u16) {
    let l = TcpListener::bind("[::1]:0").unwrap_or_else(|e| panic!("listen [::1]: {e}"));
    let port = l.local_addr().map(|a| a.port()).unwrap_or_default();
    (l, port)
}

/// The `denied` records of the bpf layer.
fn net_denials(records: &[Value]) -> Vec<Value> {
    events(records, "denied")
        .into_iter()
        .filter(|r| r["layer"] == "bpf")
        .cloned()
        .collect()
}

#[track_caller]
fn assert_denial(r: &Value, op: &str, dst: &str, port: u16, proto: &str) {
    assert_eq!(r["layer"], "bpf", "{r}");
    assert_eq!(r["event"], "denied", "{r}");
    assert_eq!(r["decision"], "deny", "{r}");
    assert_eq!(r["op"], op, "{r}");
    assert_eq!(r["dst"], dst, "{r}");
    assert_eq!(r["port"], port, "{r}");
    assert_eq!(r["proto"], proto, "{r}");
    assert_eq!(r["rule"], "no rule", "{r}");
    assert_eq!(r["errno"], "EPERM", "{r}");
    assert!(r["pid"].as_u64().is_some_and(|p| p > 0), "{r}");
    assert!(r["run"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
}

#[test]
fn tcp_v4_allowed_port_connects_and_another_port_is_eperm() {
    if !cgroup_bpf_or_skip("tcp_v4") {
        return;
    }
    let sb = Sandbox::new();
    let (_a, allowed) = listen4();
    let (_d, denied) = listen4();
    net_policy(
        &sb,
        "enforce",
        &format!("net:\n  allow: [\"127.0.0.1:{allowed}/tcp\"]\n"),
    );

    let o = sb.run_prog(&["connect", "127.0.0.1", &allowed.to_string()]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("connect 127.0.0.1 {allowed}: OK\n"));
    assert!(net_denials(&sb.audit()).is_empty());

    let o = sb.run_prog(&["connect", "127.0.0.1", &denied.to_string()]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("connect 127.0.0.1 {denied}: EPERM\n"));
    let d = net_denials(&sb.audit());
    assert_eq!(d.len(), 1, "{d:?}");
    assert_denial(&d[0], "connect", "127.0.0.1", denied, "tcp");
}

#[test]
fn loopback_is_not_special_and_udp_rules_do_not_allow_tcp() {
    if !cgroup_bpf_or_skip("loopback") {
        return;
    }
    let sb = Sandbox::new();
    let (_a, port) = listen4();
    // Same port, but UDP only, and a different address for TCP.
    net_policy(
        &sb,
        "enforce",
        &format!("net:\n  allow: [\"127.0.0.1:{port}/udp\", \"10.0.0.0/8:{port}/tcp\"]\n"),
    );
    let o = sb.run_prog(&["connect", "127.0.0.1", &port.to_string()]);
    assert_eq!(stdout(&o), format!("connect 127.0.0.1 {port}: EPERM\n"));
    let d = net_denials(&sb.audit());
    assert_eq!(d.len(), 1, "{d:?}");
    assert_denial(&d[0], "connect", "127.0.0.1", port, "tcp");
}

#[test]
fn tcp_v6_loopback_allowed_port_connects_and_another_port_is_eperm() {
    if !cgroup_bpf_or_skip("tcp_v6") {
        return;
    }
    let sb = Sandbox::new();
    let (_a, allowed) = listen6();
    let (_d, denied) = listen6();
    net_policy(
        &sb,
        "enforce",
        &format!("net:\n  allow: [\"[::1]:{allowed}/tcp\"]\n"),
    );

    let o = sb.run_prog(&["connect", "::1", &allowed.to_string()]);
    assert_eq!(stdout(&o), format!("connect ::1 {allowed}: OK\n"));
    let o = sb.run_prog(&["connect", "::1", &denied.to_string()]);
    assert_eq!(stdout(&o), format!("connect ::1 {denied}: EPERM\n"));
    let d = net_denials(&sb.audit());
    assert_eq!(d.len(), 1, "{d:?}");
    assert_denial(&d[0], "connect", "::1", denied, "tcp");
}

#[test]
fn ipv4_mapped_ipv6_is_judged_as_ipv4() {
    if !cgroup_bpf_or_skip("v4_mapped") {
        return;
    }
    let sb = Sandbox::new();
    let (_a, allowed) = listen4();
    let (_d, denied) = listen4();
    // A v6-only rule for ::1 must not let ::ffff:127.0.0.1 through; the v4 rule must.
    net_policy(
        &sb,
        "enforce",
        &format!("net:\n  allow: [\"127.0.0.1:{allowed}/tcp\", \"[::1]:{denied}/tcp\", \"[::/0]:{denied}/tcp\"]\n"),
    );
    let o = sb.run_prog(&["connect", "::ffff:127.0.0.1", &allowed.to_string()]);
    assert_eq!(
        stdout(&o),
        format!("connect ::ffff:127.0.0.1 {allowed}: OK\n")
    );
    let o = sb.run_prog(&["connect", "::ffff:127.0.0.1", &denied.to_string()]);
    assert_eq!(
        stdout(&o),
        format!("connect ::ffff:127.0.0.1 {denied}: EPERM\n")
    );
    let d = net_denials(&sb.audit());
    assert_eq!(d.len(), 1, "{d:?}");
    // Reported as the IPv4 address it was judged as.
    assert_denial(&d[0], "connect", "127.0.0.1", denied, "tcp");
}

#[test]
fn udp_sendto_to_a_denied_port_is_eperm() {
    if !cgroup_bpf_or_skip("udp_sendto") {
        return;
    }
    let sb = Sandbox::new();
    let allowed_sock = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("udp: {e}"));
    let allowed = allowed_sock
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_default();
    let denied_sock = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("udp: {e}"));
    let denied = denied_sock
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_default();
    net_policy(
        &sb,
        "enforce",
        &format!("net:\n  allow: [\"127.0.0.1:{allowed}/udp\"]\n"),
    );

    let o = sb.run_prog(&["udp-send", "127.0.0.1", &allowed.to_string()]);
    assert_eq!(stdout(&o), format!("udp-send 127.0.0.1 {allowed}: OK\n"));
    let mut buf = [0u8; 64];
    let n = allowed_sock.recv(&mut buf).unwrap_or(0);
    assert_eq!(&buf[..n], b"agentd-testprog");

    let o = sb.run_prog(&["udp-send", "127.0.0.1", &denied.to_string()]);
    assert_eq!(stdout(&o), format!("udp-send 127.0.0.1 {denied}: EPERM\n"));
    let o = sb.run_prog(&["udp-connect", "127.0.0.1", &denied.to_string()]);
    assert_eq!(
        stdout(&o),
        format!("udp-connect 127.0.0.1 {denied}: EPERM\n")
    );
    let d = net_denials(&sb.audit());
    assert_eq!(d.len(), 2, "{d:?}");
    assert_denial(&d[0], "sendmsg", "127.0.0.1", denied, "udp");
    assert_denial(&d[1], "connect", "127.0.0.1", denied, "udp");
}

#[test]
fn raw_sockets_are_denied() {
    if !cgroup_bpf_or_skip("raw") {
        return;
    }
    let sb = Sandbox::new();
    net_policy(&sb, "enforce", "net:\n  allow: []\n");
    // In mode: enforce the caps layer has dropped CAP_NET_RAW, and the kernel checks
    // that before the cgroup sock_create hook: EPERM either way. The denial tracker
    // (tp_btf sys_exit) sees socket(2) fail and the record names the caps layer.
    let o = sb.run_prog(&["socket", "raw"]);
    assert_eq!(stdout(&o), "socket raw: EPERM\n");
    let recs = sb.audit();
    let d: Vec<&Value> = events(&recs, "denied")
        .into_iter()
        .filter(|r| r["op"] == "socket")
        .collect();
    assert_eq!(d.len(), 1, "{recs:#?}");
    assert_eq!(d[0]["layer"], "caps");
    assert_eq!(d[0]["decision"], "deny");
    assert_eq!(d[0]["rule"], "CAP_NET_RAW dropped (net.raw not allowed)");
    assert_eq!(d[0]["errno"], "EPERM");
    assert_eq!(d[0]["family"], "AF_INET");
    assert_eq!(d[0]["type"], "SOCK_RAW");
    assert_eq!(d[0]["protocol"], 1);
    let o = sb.run_prog(&["socket", "tcp"]);
    assert_eq!(stdout(&o), "socket tcp: OK\n");
}

#[test]
fn netlink_is_limited_to_route_and_packet_sockets_are_denied() {
    let sb = Sandbox::new();
    net_policy(&sb, "enforce", "net:\n  allow: []\n");
    let o = sb.run_prog(&["socket", "netlink-route"]);
    assert_eq!(stdout(&o), "socket netlink-route: OK\n");
    let o = sb.run_prog(&["socket", "netlink-audit"]);
    assert_eq!(stdout(&o), "socket netlink-audit: EPERM\n");
    let o = sb.run_prog(&["socket", "packet"]);
    assert_eq!(stdout(&o), "socket packet: EPERM\n");
    // Both refused by the seccomp baseline (sys_enter never runs for them); the denial
    // tracker sees socket(2) fail at sys_exit.
    let recs = sb.audit();
    let d: Vec<&Value> = events(&recs, "denied")
        .into_iter()
        .filter(|r| r["op"] == "socket")
        .collect();
    assert_eq!(d.len(), 2, "{recs:#?}");
    assert_eq!(d[0]["layer"], "seccomp");
    assert_eq!(d[0]["family"], "AF_NETLINK");
    assert_eq!(d[0]["protocol"], libc::NETLINK_AUDIT);
    assert_eq!(
        d[0]["rule"],
        "netlink other than NETLINK_ROUTE is denied (seccomp baseline)"
    );
    assert_eq!(d[0]["errno"], "EPERM");
    assert_eq!(d[1]["layer"], "seccomp");
    assert_eq!(d[1]["family"], "AF_PACKET");
    assert_eq!(d[1]["type"], "SOCK_RAW");
    assert_eq!(
        d[1]["rule"],
        "AF_PACKET sockets are denied (seccomp baseline)"
    );
    assert_eq!(d[1]["errno"], "EPERM");
}

#[test]
fn raw_socket_in_audit_mode_is_a_would_deny_of_sock_create() {
    if !cgroup_bpf_or_skip("raw_audit") {
        return;
    }
    let sb = Sandbox::new();
    net_policy(&sb, "audit", "net:\n  allow: []\n");
    // Capabilities are kept in audit mode (agentd runs as root), so the socket is made
    // and the cgroup program records what it would have denied.
    let o = sb.run_prog(&["socket", "raw"]);
    assert_eq!(stdout(&o), "socket raw: OK\n");
    let d = net_denials(&sb.audit());
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["decision"], "would_deny");
    assert_eq!(d[0]["op"], "socket");
    assert_eq!(d[0]["family"], "AF_INET");
    assert_eq!(d[0]["type"], "SOCK_RAW");
    assert_eq!(d[0]["proto"], "icmp");
    assert_eq!(d[0]["would_errno"], "EPERM");
    assert_eq!(d[0]["errno"], Value::Null);
}

#[test]
fn a_double_forked_grandchild_is_still_denied() {
    if !cgroup_bpf_or_skip("double_fork") {
        return;
    }
    let sb = Sandbox::new();
    let (_a, allowed) = listen4();
    let (_d, denied) = listen4();
    net_policy(
        &sb,
        "enforce",
        &format!("net:\n  allow: [\"127.0.0.1:{allowed}/tcp\"]\n"),
    );
    let o = sb.run_prog(&["double-fork-connect", "127.0.0.1", &denied.to_string()]);
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("double-fork-connect 127.0.0.1 {denied}: EPERM\n")
    );
    let o = sb.run_prog(&["double-fork-connect", "127.0.0.1", &allowed.to_string()]);
    assert_eq!(
        stdout(&o),
        format!("double-fork-connect 127.0.0.1 {allowed}: OK\n")
    );
    let d = net_denials(&sb.audit());
    assert_eq!(d.len(), 1, "{d:?}");
    assert_denial(&d[0], "connect", "127.0.0.1", denied, "tcp");
}

#[test]
fn two_concurrent_runs_get_their_own_verdicts() {
    if !cgroup_bpf_or_skip("concurrent") {
        return;
    }
    let (_l1, p1) = listen4();
    let (_l2, p2) = listen4();
    let a = Sandbox::new();
    let b = Sandbox::new();
    net_policy(
        &a,
        "enforce",
        &format!("net:\n  allow: [\"127.0.0.1:{p1}/tcp\"]\n"),
    );
    net_policy(
        &b,
        "enforce",
        &format!("net:\n  allow: [\"127.0.0.1:{p2}/tcp\"]\n"),
    );
    let prog = testprog().display().to_string();
    let (s1, s2) = (p1.to_string(), p2.to_string());
    // Both runs are set up before either connects (each waits 700 ms first).
    let args = [prog.as_str(), "wait-connect", "700", "127.0.0.1", &s1, &s2];
    let ca = a
        .run_cmd(&args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let cb = b
        .run_cmd(&args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let oa = ca
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait: {e}"));
    let ob = cb
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait: {e}"));
    assert_status(&oa, 0);
    assert_status(&ob, 0);
    assert_eq!(
        stdout(&oa),
        format!("connect 127.0.0.1 {p1}: OK\nconnect 127.0.0.1 {p2}: EPERM\n")
    );
    assert_eq!(
        stdout(&ob),
        format!("connect 127.0.0.1 {p1}: EPERM\nconnect 127.0.0.1 {p2}: OK\n")
    );
    let da = net_denials(&read_audit(&a.audit_path()));
    let db = net_denials(&read_audit(&b.audit_path()));
    assert_eq!(da.len(), 1, "{da:?}");
    assert_eq!(db.len(), 1, "{db:?}");
    assert_denial(&da[0], "connect", "127.0.0.1", p2, "tcp");
    assert_denial(&db[0], "connect", "127.0.0.1", p1, "tcp");
}

#[test]
fn audit_mode_records_would_deny_and_denies_nothing() {
    if !cgroup_bpf_or_skip("audit_mode") {
        return;
    }
    let sb = Sandbox::new();
    let (_d, port) = listen4();
    net_policy(&sb, "audit", "net:\n  allow: []\n");
    let o = sb.run_prog(&["connect", "127.0.0.1", &port.to_string()]);
    assert_eq!(stdout(&o), format!("connect 127.0.0.1 {port}: OK\n"));
    let recs = sb.audit();
    let d = net_denials(&recs);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["decision"], "would_deny");
    assert_eq!(d[0]["op"], "connect");
    assert_eq!(d[0]["dst"], "127.0.0.1");
    assert_eq!(d[0]["port"], port);
    assert_eq!(d[0]["proto"], "tcp");
    assert_eq!(d[0]["rule"], "no rule");
    assert_eq!(d[0]["would_errno"], "EPERM");
    assert!(recs.iter().all(|r| r["decision"] != "deny"));
}

#[test]
fn bind_is_denied_unless_listed() {
    if !cgroup_bpf_or_skip("bind") {
        return;
    }
    let sb = Sandbox::new();
    // Find two free ports, then release them for the confined helper to bind.
    let (allowed, denied) = {
        let (_a, a) = listen4();
        let (_b, b) = listen4();
        (a, b)
    };
    net_policy(
        &sb,
        "enforce",
        &format!("net:\n  allow: []\n  bind: [\"127.0.0.1:{allowed}/tcp\"]\n"),
    );
    let o = sb.run_prog(&["bind", "127.0.0.1", &allowed.to_string(), "tcp"]);
    assert_eq!(stdout(&o), format!("bind 127.0.0.1 {allowed}: OK\n"));
    let o = sb.run_prog(&["bind", "127.0.0.1", &denied.to_string(), "tcp"]);
    assert_eq!(stdout(&o), format!("bind 127.0.0.1 {denied}: EPERM\n"));
    let o = sb.run_prog(&["bind", "::1", &allowed.to_string(), "tcp"]);
    assert_eq!(stdout(&o), format!("bind ::1 {allowed}: EPERM\n"));
    // The rule is TCP only.
    let o = sb.run_prog(&["bind", "127.0.0.1", &allowed.to_string(), "udp"]);
    assert_eq!(stdout(&o), format!("bind 127.0.0.1 {allowed}: EPERM\n"));
    let d = net_denials(&sb.audit());
    assert_eq!(d.len(), 3, "{d:?}");
    assert_denial(&d[0], "bind", "127.0.0.1", denied, "tcp");
    assert_denial(&d[1], "bind", "::1", allowed, "tcp");
    assert_denial(&d[2], "bind", "127.0.0.1", allowed, "udp");
}

/// Every explicit bind() of a TCP or UDP socket, IPv4 or IPv6, to a port or to port 0,
/// to a loopback or the wildcard address, is EPERM with a `denied` record, whether the
/// policy has a net section without `net.bind` or no net section at all.
#[test]
fn every_explicit_bind_is_denied_port_0_included_with_or_without_a_net_section() {
    if !cgroup_bpf_or_skip("bind_port_0") {
        return;
    }
    let port = {
        let (_l, p) = listen4();
        p
    };
    for net in ["net:\n  allow: []\n", ""] {
        let sb = Sandbox::new();
        net_policy(&sb, "enforce", net);
        let mut want = Vec::new();
        let mut args = vec!["bind-each".to_owned()];
        let mut lines = String::new();
        for proto in ["tcp", "udp"] {
            for addr in ["127.0.0.1", "0.0.0.0", "::1", "::"] {
                for p in [port, 0] {
                    args.extend([addr.to_owned(), p.to_string(), proto.to_owned()]);
                    lines.push_str(&format!("bind {addr} {p}: EPERM\n"));
                    want.push((addr, p, proto));
                }
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = sb.run_prog(&args);
        assert_status(&o, 0);
        assert_eq!(stdout(&o), lines, "policy {net:?}");
        let d = net_denials(&sb.audit());
        assert_eq!(d.len(), want.len(), "policy {net:?}: {d:?}");
        for (r, (addr, p, proto)) in d.iter().zip(want) {
            assert_denial(r, "bind", addr, p, proto);
        }
    }
}

/// The kernel's implicit bind of an unbound UDP socket, on its first sendto or
/// connect, runs no bind hook: it is not a bind, and the datagram arrives from the
/// port the kernel picked.
#[test]
fn the_kernels_implicit_udp_bind_on_sendto_and_connect_is_not_denied() {
    if !cgroup_bpf_or_skip("udp_autobind") {
        return;
    }
    let sb = Sandbox::new();
    let l4 = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("udp: {e}"));
    let l6 = UdpSocket::bind("[::1]:0").unwrap_or_else(|e| panic!("udp [::1]: {e}"));
    let p4 = l4.local_addr().map(|a| a.port()).unwrap_or_default();
    let p6 = l6.local_addr().map(|a| a.port()).unwrap_or_default();
    net_policy(
        &sb,
        "enforce",
        &format!("net:\n  allow: [\"127.0.0.1:{p4}/udp\", \"[::1]:{p6}/udp\"]\n"),
    );
    for (l, addr, port) in [(&l4, "127.0.0.1", p4), (&l6, "::1", p6)] {
        let o = sb.run_prog(&["udp-send", addr, &port.to_string()]);
        assert_status(&o, 0);
        assert_eq!(stdout(&o), format!("udp-send {addr} {port}: OK\n"));
        // The run has ended, so the datagram is already queued.
        l.set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let mut buf = [0u8; 64];
        let (n, from) = l
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no datagram from the run to {addr}: {e}"));
        assert_eq!(&buf[..n], b"agentd-testprog");
        assert_eq!(from.ip().to_string(), addr);
        assert_ne!(from.port(), 0);
        let o = sb.run_prog(&["udp-connect", addr, &port.to_string()]);
        assert_eq!(stdout(&o), format!("udp-connect {addr} {port}: OK\n"));
    }
    assert!(net_denials(&sb.audit()).is_empty());
}

/// `ADDR:0` in net.bind allows a bind to port 0 (the kernel picks the port) on that
/// address, and listen; it does not allow a specific port, another address or UDP.
/// (The `bind` helper listens after a TCP bind: an explicit bind is not the kernel's
/// own, so the listen check of `listen_on_a_socket_never_bound_…` leaves it alone.)
#[test]
fn a_bind_rule_for_port_0_allows_the_kernels_port_and_no_other() {
    if !cgroup_bpf_or_skip("bind_rule_port_0") {
        return;
    }
    let sb = Sandbox::new();
    net_policy(
        &sb,
        "enforce",
        "net:\n  allow: []\n  bind: [\"127.0.0.1:0/tcp\"]\n",
    );
    let o = sb.run_prog(&["bind", "127.0.0.1", "0", "tcp"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "bind 127.0.0.1 0: OK\n");
    let o = sb.run_prog(&["bind", "127.0.0.1", "12345", "tcp"]);
    assert_eq!(stdout(&o), "bind 127.0.0.1 12345: EPERM\n");
    let o = sb.run_prog(&["bind", "::1", "0", "tcp"]);
    assert_eq!(stdout(&o), "bind ::1 0: EPERM\n");
    let o = sb.run_prog(&["bind", "127.0.0.1", "0", "udp"]);
    assert_eq!(stdout(&o), "bind 127.0.0.1 0: EPERM\n");
    let d = net_denials(&sb.audit());
    assert_eq!(d.len(), 3, "{d:?}");
    assert_denial(&d[0], "bind", "127.0.0.1", 12345, "tcp");
    assert_denial(&d[1], "bind", "::1", 0, "tcp");
    assert_denial(&d[2], "bind", "127.0.0.1", 0, "udp");
}

/// `listen()` of a TCP socket that was never bound makes the kernel bind it to a port
/// it picks on the wildcard address, which no bind hook sees. It is judged after the
/// call as a bind of the wildcard address to port 0: without a `net.bind` rule for that,
/// the process is killed (SIGKILL) on its way back from listen() and the record says so;
/// with one, it listens; in audit mode it is a would_deny and the process lives.
#[test]
fn listen_on_a_socket_never_bound_is_judged_as_a_bind_of_port_0() {
    if !cgroup_bpf_or_skip("listen_unbound") {
        return;
    }
    for net in ["net:\n  allow: []\n", ""] {
        let sb = Sandbox::new();
        net_policy(&sb, "enforce", net);
        for family in ["v4", "v6"] {
            let o = sb.run_prog(&["listen-unbound", family]);
            assert_status(&o, 128 + libc::SIGKILL);
            assert_eq!(
                stdout(&o),
                "",
                "policy {net:?}: the process must not survive listen()"
            );
        }
        let d = net_denials(&sb.audit());
        assert_eq!(d.len(), 2, "policy {net:?}: {d:#?}");
        for (r, dst) in d.iter().zip(["0.0.0.0", "::"]) {
            assert_eq!(r["op"], "listen", "{r}");
            assert_eq!(r["decision"], "kill", "{r}");
            assert_eq!(r["dst"], dst, "{r}");
            assert_eq!(r["port"], 0, "{r}");
            assert_eq!(r["proto"], "tcp", "{r}");
            assert_eq!(r["signal"], "SIGKILL", "{r}");
            assert_eq!(r["errno"], Value::Null, "{r}");
            assert!(
                r["rule"].as_str().is_some_and(
                    |s| s.starts_with("no net.bind rule allows the wildcard address, port 0")
                ),
                "{r}"
            );
            assert!(r["pid"].as_u64().is_some_and(|p| p > 0), "{r}");
        }
        let ends = events(&sb.audit(), "run_end").len();
        assert_eq!(ends, 2);
    }

    // A rule for the wildcard address and port 0 allows it (and explicit binds of it).
    let sb = Sandbox::new();
    net_policy(
        &sb,
        "enforce",
        "net:\n  allow: []\n  bind: [\"0.0.0.0:0/tcp\", \"[::]:0/tcp\"]\n",
    );
    for family in ["v4", "v6"] {
        let o = sb.run_prog(&["listen-unbound", family]);
        assert_status(&o, 0);
        assert_eq!(stdout(&o), format!("listen-unbound {family}: OK\n"));
    }
    let o = sb.run_prog(&["bind", "0.0.0.0", "0", "tcp"]);
    assert_eq!(stdout(&o), "bind 0.0.0.0 0: OK\n");
    assert!(net_denials(&sb.audit()).is_empty());

    // Audit mode: reported as what enforce mode would do, and the process lives.
    let sb = Sandbox::new();
    net_policy(&sb, "audit", "net:\n  allow: []\n");
    let o = sb.run_prog(&["listen-unbound", "v4"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "listen-unbound v4: OK\n");
    let d: Vec<Value> = events(&sb.audit(), "denied")
        .into_iter()
        .filter(|r| r["op"] == "listen")
        .cloned()
        .collect();
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0]["decision"], "would_deny", "{}", d[0]);
    assert_eq!(d[0]["would_signal"], "SIGKILL", "{}", d[0]);
}

#[test]
fn without_a_net_section_connect_is_not_restricted() {
    if !cgroup_bpf_or_skip("no_net") {
        return;
    }
    let sb = Sandbox::new();
    let (_l, port) = listen4();
    net_policy(&sb, "enforce", "");
    let o = sb.run_prog(&["connect", "127.0.0.1", &port.to_string()]);
    assert_eq!(stdout(&o), format!("connect 127.0.0.1 {port}: OK\n"));
    assert!(net_denials(&sb.audit()).is_empty());
}
