//! Every record kind agentd writes: it reads back as the same event through the writer's
//! canonical line and `Record`, and docs/audit-records.md describes each of its fields.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::*;
use crate::audit::canonical::{seal_encoded_into, CORE_KEYS};
use crate::audit::writer::Pending;
use crate::audit::Record;

const DOC: &str = include_str!("../../../../docs/audit-records.md");

pub fn run_start() -> RunStart {
    RunStart {
        policy: "/etc/agentd/p.yaml".into(),
        policy_name: "p".into(),
        policy_hash: "ab".repeat(32),
        mode: "enforce".into(),
        argv: vec!["python3".into(), "agent.py".into()],
        program: Some("/usr/bin/python3".into()),
        workspace: "/work".into(),
        cwd: "/work".into(),
        agentd_pid: 42,
        kernel: "6.8.0".into(),
        plan: json!({"layers": [], "refusals": []}),
        signed: true,
        signing_key: Some(SigningKeyUsed {
            path: "/var/lib/agentd/audit.key".into(),
            public_key: "ab".repeat(32),
            generated: false,
        }),
        uid: 1000,
        gid: 1000,
        user: Some("alice".into()),
        groups: Some(vec![1000, 27]),
        env: vec!["PATH".into(), "HOME".into()],
        extra: Map::new(),
    }
}

fn step() -> BudgetStep {
    BudgetStep {
        budget: "execs".into(),
        step: "warn@80%".into(),
        limit: 10,
        unit: "count".into(),
        threshold: 8,
        used: 9,
        window_ms: Some(1000),
        kernel_window_exceeded: true,
    }
}

fn hit(action: &str) -> InodeHit {
    InodeHit {
        path_source: "bpf_d_path".into(),
        op: "open".into(),
        pid: 7,
        tid: 8,
        path: Some("/etc/shadow".into()),
        name: "shadow".into(),
        dev: 2049,
        ino: 1234,
        rule: "fs.deny /etc/shadow".into(),
        action: Some(action.into()),
        errno: (action == "deny").then(|| "EACCES".into()),
        signal: (action == "kill").then(|| "SIGKILL".into()),
    }
}

fn unix(action: &str) -> UnixDenied {
    UnixDenied {
        op: "connect".into(),
        family: "AF_UNIX".into(),
        path: "/run/docker.sock".into(),
        rule: "no rule".into(),
        pid: 7,
        tid: 8,
        dev: Some(25),
        ino: Some(99),
        action: Some(action.into()),
        errno: match action {
            "deny" => Some(Some("EPERM".into())),
            "would_deny" => Some(None),
            _ => None,
        },
        signal: (action == "kill").then(|| "SIGKILL".into()),
        would_errno: (action == "would_deny").then(|| "EPERM".into()),
        would_signal: (action == "would_deny").then(|| "SIGKILL".into()),
    }
}

fn net(would_deny: bool, addr: bool) -> NetDenied {
    NetDenied {
        op: if addr { "connect" } else { "socket" }.into(),
        proto: "tcp".into(),
        rule: "no rule".into(),
        errno: (!would_deny).then(|| "EPERM".into()),
        pid: 7,
        tid: 8,
        run_slot: 3,
        dst: addr.then(|| "10.0.0.1".into()),
        port: addr.then_some(443),
        family: (!addr).then(|| "AF_INET".into()),
        sock_type: (!addr).then(|| "SOCK_RAW".into()),
        would_errno: would_deny.then(|| "EPERM".into()),
        signal: None,
        would_signal: None,
    }
}

fn not_found() -> RunFailed {
    RunFailed {
        exit_code: 127,
        error: "command not found".into(),
        failed_layer: None,
        errno: None,
    }
}

fn dns_denied() -> DnsDenied {
    DnsDenied {
        op: "dns_query".into(),
        name: "evil.example".into(),
        qtype: "A".into(),
        rule: "no rule".into(),
        rcode: None,
        reason: None,
        addrs: None,
        would_rcode: None,
    }
}

/// One of every record kind, with every optional field set in at least one of them.
pub fn samples() -> Vec<(&'static str, Option<Decision>, AuditEvent)> {
    use Decision::{Allow, Deny, Kill, WouldDeny};
    let mut extra = Map::new();
    extra.insert("client_uid".into(), json!(1000));
    let figures = BudgetFigures {
        limit: 100,
        window_ms: Some(1000),
        unit: "count".into(),
        used: Some(40),
        peak: Some(12),
        history: Some(BudgetHistory {
            interval_ms: 100,
            counts: vec![0, 3, 9],
        }),
    };
    vec![
        ("agentd", None, run_start().into()),
        ("agentd", None, RunStart { extra, program: None, user: None, groups: None, ..run_start() }.into()),
        (
            "agentd",
            None,
            RunEnded {
                exit_code: Some(0),
                signal: None,
                status: 0,
                killed_by: None,
                stragglers_killed: 1,
                cgroups: Some(BTreeMap::from([("unified".into(), "/sys/fs/cgroup/agentd/r".into())])),
                cgroups_removed: true,
                elapsed_ms: 1500,
                budgets: BTreeMap::from([("execs".into(), figures.clone())]),
                tainted: false,
                egress_packets_dropped_after_taint: 0,
                denials: 2,
                status_unknown: None,
            }
            .into(),
        ),
        (
            "agentd",
            None,
            RunEnded {
                exit_code: None,
                signal: Some("SIGKILL".into()),
                status: 137,
                killed_by: Some("wall_time".into()),
                stragglers_killed: 0,
                cgroups: None,
                cgroups_removed: false,
                elapsed_ms: 20,
                budgets: BTreeMap::from([("memory".into(), BudgetFigures { window_ms: None, peak: None, history: None, ..figures })]),
                tainted: true,
                egress_packets_dropped_after_taint: 5,
                denials: 0,
                status_unknown: Some("the command's exit was not seen".into()),
            }
            .into(),
        ),
        (
            "agentd",
            None,
            RunFailed {
                exit_code: 125,
                error: "seccomp failed in the child: Invalid argument".into(),
                failed_layer: Some("seccomp".into()),
                errno: Some("EINVAL".into()),
            }
            .into(),
        ),
        ("agentd", None, not_found().into()),
        (
            "bpf",
            Some(Allow),
            Exec {
                pid: 7,
                tid: 7,
                ppid: 6,
                uid: 1000,
                comm: "python3".into(),
                path: "/usr/bin/python3.12".into(),
                filename: "/usr/bin/python3".into(),
            }
            .into(),
        ),
        ("bpf", None, Exit { pid: 7, exit_code: Some(3), signal: None }.into()),
        ("bpf", None, Exit { pid: 7, exit_code: None, signal: Some("SIGKILL".into()) }.into()),
        (
            "landlock",
            Some(Deny),
            FileDenied {
                op: "open".into(),
                path: "/etc/hostname".into(),
                errno: "EACCES".into(),
                would_errno: None,
                rule: "not in fs.read or fs.write".into(),
                pid: 7,
                tid: 8,
                syscall: "openat".into(),
                access: Some("read".into()),
                path_arg: Some("../etc/hostname".into()),
                symlink_target: Some("/etc/real".into()),
                path_unresolved: false,
                new_path: None,
            }
            .into(),
        ),
        (
            "landlock",
            Some(Deny),
            FileDenied {
                op: "link".into(),
                path: "/usr/lib/x".into(),
                errno: "EXDEV".into(),
                would_errno: None,
                rule: "landlock refer: /usr/lib is not in fs.write".into(),
                pid: 7,
                tid: 8,
                syscall: "link".into(),
                access: Some("write".into()),
                path_arg: None,
                symlink_target: None,
                path_unresolved: false,
                new_path: Some("/w/x".into()),
            }
            .into(),
        ),
        (
            "kernel",
            Some(Deny),
            FileDenied {
                op: "exec".into(),
                path: "x".into(),
                errno: "EACCES".into(),
                would_errno: None,
                rule: "no rule: the policy allows this access; the kernel refused it (file permissions or another LSM)".into(),
                pid: 7,
                tid: 8,
                syscall: "execve".into(),
                access: None,
                path_arg: None,
                symlink_target: None,
                path_unresolved: true,
                new_path: None,
            }
            .into(),
        ),
        (
            "caps",
            Some(Deny),
            SocketDenied {
                op: "socket".into(),
                family: "AF_INET".into(),
                sock_type: "SOCK_RAW".into(),
                protocol: 1,
                errno: "EPERM".into(),
                rule: "CAP_NET_RAW dropped (net.raw not allowed)".into(),
                pid: 7,
                tid: 8,
                syscall: "socket".into(),
            }
            .into(),
        ),
        (
            "seccomp",
            Some(Deny),
            SyscallDenied {
                op: "syscall".into(),
                syscall: "clone".into(),
                nr: 56,
                errno: Some("EPERM".into()),
                rule: "namespace clone is denied (seccomp baseline)".into(),
                pid: 7,
                tid: 8,
                abi: None,
                arg: Some("0x10000000".into()),
                signal: None,
            }
            .into(),
        ),
        (
            "seccomp",
            Some(Deny),
            DeniedRepeated {
                op: "syscall".into(),
                syscall: "clone3".into(),
                nr: 435,
                errno: Some("ENOSYS".into()),
                rule: "clone3 is denied with ENOSYS, its flags cannot be inspected (seccomp baseline)".into(),
                pid: 7,
                count: 50,
                arg: None,
                signal: None,
            }
            .into(),
        ),
        (
            "landlock",
            Some(Deny),
            CommandDenied {
                op: "exec".into(),
                path: "/usr/bin/id".into(),
                rule: "not in exec.allow".into(),
                errno: "EACCES".into(),
            }
            .into(),
        ),
        ("bpf", Some(Deny), net(false, true).into()),
        ("bpf", Some(WouldDeny), net(true, false).into()),
        ("bpf", Some(Deny), UnixDenied { dev: None, ino: None, ..unix("deny") }.into()),
        ("lsm", Some(Kill), unix("kill").into()),
        ("tracepoint", Some(WouldDeny), UnixDenied { would_errno: None, ..unix("would_deny") }.into()),
        ("bpf", Some(WouldDeny), UnixDenied { would_signal: None, ..unix("would_deny") }.into()),
        ("bpf", None, UnixDenied { action: None, errno: None, ..unix("x") }.into()),
        ("lsm", Some(Deny), FsRuleDenied { hit: hit("deny"), rule_path: Some("/etc/shadow".into()) }.into()),
        ("tracepoint", Some(Kill), FsRuleDenied { hit: hit("kill"), rule_path: None }.into()),
        (
            "lsm",
            Some(WouldDeny),
            FsRuleDenied { hit: InodeHit { path: None, path_source: "inode lookup".into(), ..hit("would_deny") }, rule_path: None }.into(),
        ),
        (
            "lsm",
            Some(Deny),
            InodeHit { op: "mmap_exec".into(), rule: "not in exec.allow or exec.libraries".into(), ..hit("deny") }.into(),
        ),
        ("lsm", None, InodeHit { action: None, path: None, ..hit("x") }.into()),
        ("dns", Some(Deny), DnsDenied { rcode: Some("REFUSED".into()), ..dns_denied() }.into()),
        (
            "dns",
            Some(Deny),
            DnsDenied {
                op: "dns_answer".into(),
                reason: Some("rebinding".into()),
                addrs: Some(vec!["10.0.0.1".into()]),
                ..dns_denied()
            }
            .into(),
        ),
        ("dns", Some(WouldDeny), DnsDenied { would_rcode: Some("REFUSED".into()), ..dns_denied() }.into()),
        (
            "lsm",
            Some(Allow),
            Taint { hit: hit("taint"), rule_path: Some("/home/u/.ssh".into()), secret: Some("/etc/shadow".into()) }.into(),
        ),
        (
            "bpf",
            Some(Deny),
            EgressBlocked { packets: 3, rule: "fs.secret taint: no egress after taint".into(), after_taint: 1 }.into(),
        ),
        (
            "bpf",
            Some(Deny),
            TaintSocketsAborted { tcp_sockets_aborted: SocketsAborted::Count(2), rule: "r".into() }.into(),
        ),
        (
            "bpf",
            None,
            TaintSocketsAborted { tcp_sockets_aborted: SocketsAborted::Error("error: EPERM".into()), rule: "r".into() }.into(),
        ),
        (
            "agentd",
            None,
            Budget::Warn(BudgetWarn { step: step(), signal: Some("SIGUSR1".into()), processes_signalled: Some(2) }).into(),
        ),
        (
            "agentd",
            None,
            Budget::Freeze(BudgetFreeze {
                step: BudgetStep { window_ms: None, kernel_window_exceeded: false, ..step() },
                frozen: false,
                error: Some("cannot write cgroup.freeze".into()),
            })
            .into(),
        ),
        ("bpf", Some(Kill), Budget::Kill(BudgetKill { step: step(), processes_killed: 3, call: None, call_bytes: None }).into()),
        ("agentd", None, Budget::Resume(BudgetResume { budget: Some("execs".into()), thawed: true }).into()),
        ("agentd", None, Budget::Resume(BudgetResume { budget: None, thawed: false }).into()),
        (
            "cgroup",
            Some(Kill),
            Budget::OomKill(OomKill {
                budget: "memory".into(),
                enforced_by: "kernel".into(),
                limit: Some(1 << 20),
                unit: "bytes".into(),
                oom_kills: 2,
                new_oom_kills: 1,
                peak: None,
            })
            .into(),
        ),
        (
            "cgroup",
            Some(Deny),
            Budget::ForkRefused(ForkRefused {
                budget: "pids".into(),
                enforced_by: "kernel".into(),
                limit: None,
                unit: "count".into(),
                errno: "EAGAIN".into(),
                refused_forks: 9,
                new_refused_forks: 4,
            })
            .into(),
        ),
        (
            "agentd",
            Some(Kill),
            Budget::AbortSockets(AbortSockets { tcp_sockets_aborted: SocketsAborted::Count(1) }).into(),
        ),
        ("agentd", Some(Kill), Stop { processes_killed: 4 }.into()),
        ("agentd", None, Pause { frozen: true }.into()),
        (
            "agentd",
            None,
            Attach {
                target: "container:web".into(),
                cgroup: "/sys/fs/cgroup/unified/x/libpod-0123".into(),
                cgroup_id: 4242,
                processes: 2,
                not_applied: vec!["fs".into(), "syscalls".into()],
                forced: false,
            }
            .into(),
        ),
        ("agentd", None, Detach { processes: 2 }.into()),
        ("bpf", None, Dropped { count: 5, total: Some(12), source: "ring buffer".into() }.into()),
        ("dns", None, Dropped { count: 1, total: None, source: "resolver decisions".into() }.into()),
        (
            "dns",
            None,
            Resolver { listen: vec!["127.0.0.53:53".into()], upstream: vec!["1.1.1.1:53".into()], grace_s: 5 }.into(),
        ),
        (
            "dns",
            Some(Allow),
            Dns::Answered(DnsAnswered {
                op: "dns_query".into(),
                name: "api.example.com".into(),
                qtype: "A".into(),
                rule: "net.allow *.example.com:443/tcp".into(),
                addrs: vec!["93.184.216.34".into()],
                allowed: true,
                ttl_s: 60,
                rcode: "NOERROR".into(),
            })
            .into(),
        ),
        (
            "dns",
            None,
            Dns::Failed(DnsFailed {
                op: "dns_query".into(),
                name: "api.example.com".into(),
                qtype: "AAAA".into(),
                error: "upstream timeout".into(),
                rcode: "SERVFAIL".into(),
            })
            .into(),
        ),
        (
            "dns",
            None,
            Dns::Malformed(DnsMalformed { op: "dns_query".into(), peer: "127.0.0.1:4000".into(), error: "short header".into() }).into(),
        ),
        (
            "cgroup",
            None,
            StaleCgroups { removed: vec!["/sys/fs/cgroup/agentd/old".into()], killed_in: vec![] }.into(),
        ),
        ("agentd", None, Genesis { host: "machine".into(), file_id: "00".repeat(16), signing_key: None }.into()),
        ("agentd", None, Checkpoint { key: "aa".repeat(32), sig: "bb".repeat(64), covers_seq: 9 }.into()),
        ("agentd", None, TornTail { bytes: 17, sha256: "cc".repeat(32) }.into()),
        (
            "agentd",
            None,
            KeyRotation { old_key: "aa".repeat(32), new_key: "dd".repeat(32), sig_old: "ee".repeat(64), sig_new: "ff".repeat(64) }
                .into(),
        ),
        (
            "agentd",
            None,
            DaemonStart {
                pid: 42,
                config: "/etc/agentd/config.yaml".into(),
                socket: "/run/agentd/agentd.sock".into(),
                pin_dir: Some("/sys/fs/bpf/agentd/0123456789abcdef".into()),
                restarts: 1,
                previous_pid: Some(41),
                down_since_unix_ms: Some(1_796_000_000_000),
                down_ms: Some(3150),
                adopted: vec!["abcdef012345".into()],
                not_adopted: vec![("fedcba543210".into(), "its command never started".into())],
                kernel: "6.18".into(),
            }
            .into(),
        ),
        ("agentd", None, DaemonStop { signal: "SIGTERM".into(), runs_left_running: 2 }.into()),
        (
            "agentd",
            None,
            DaemonReload { config: "/etc/agentd/config.yaml".into(), needs_restart: vec!["socket".into()] }.into(),
        ),
        (
            "agentd",
            None,
            Adopted { adopted_run: "abcdef012345".into(), pid: 7, uid: 1000, slot: 3, elapsed_ms: 4461, detached: false }.into(),
        ),
        (
            "agentd",
            Some(Kill),
            AdoptionFailed { failed_run: "fedcba543210".into(), reason: "its command never started".into(), processes_killed: 1 }.into(),
        ),
        (
            "agentd",
            Some(Deny),
            PeerRefused { uid: 1001, gid: 1001, pid: 99, op: "ps".into(), reason: "permission denied".into() }.into(),
        ),
        ("agentd", None, ClientGone { gone_run: "abcdef012345".into(), grace_s: 10 }.into()),
        (
            "agentd",
            None,
            TokenIssued { token_id: "0a1b2c3d4e5f".into(), token_run: "abcdef012345".into(), allow: vec!["status".into(), "stop".into()], expires_unix: 1_800_000_000, uid: 0 }.into(),
        ),
        ("agentd", None, TokenRevoked { token_id: "0a1b2c3d4e5f".into(), uid: 0 }.into()),
        (
            "agentd",
            Some(Deny),
            TokenRefused { token_id: Some("0a1b2c3d4e5f".into()), uid: 1001, pid: 99, op: "stop".into(), why: "revoked".into(), reason: "token 0a1b2c3d4e5f was revoked".into() }.into(),
        ),
    ]
}

/// Each kind of record; exhaustive, so a new variant does not compile until it is named
/// here, and then the tests below want a sample of it and a section in the doc.
fn kind(e: &AuditEvent) -> &'static str {
    match e {
        AuditEvent::RunStart(_) => "run_start",
        AuditEvent::RunEnd(RunEnd::Ended(_)) => "run_end/ended",
        AuditEvent::RunEnd(RunEnd::Failed(_)) => "run_end/failed",
        AuditEvent::Exec(_) => "exec",
        AuditEvent::Exit(_) => "exit",
        AuditEvent::Denied(d) => match d {
            Denied::File(_) => "denied/file",
            Denied::Socket(_) => "denied/socket",
            Denied::Syscall(_) => "denied/syscall",
            Denied::Command(_) => "denied/command",
            Denied::Net(_) => "denied/net",
            Denied::Unix(_) => "denied/unix",
            Denied::FsRule(_) => "denied/fs_rule",
            Denied::ExecIntegrity(_) => "denied/exec_integrity",
            Denied::Dns(_) => "denied/dns",
        },
        AuditEvent::DeniedRepeated(_) => "denied_repeated",
        AuditEvent::Taint(_) => "taint",
        AuditEvent::EgressBlocked(_) => "egress_blocked",
        AuditEvent::TaintSocketsAborted(_) => "taint_sockets_aborted",
        AuditEvent::Budget(b) => match b {
            Budget::Warn(_) => "budget/warn",
            Budget::Freeze(_) => "budget/freeze",
            Budget::Kill(_) => "budget/kill",
            Budget::Resume(_) => "budget/resume",
            Budget::OomKill(_) => "budget/oom_kill",
            Budget::ForkRefused(_) => "budget/fork_refused",
            Budget::AbortSockets(_) => "budget/abort_sockets",
        },
        AuditEvent::Stop(_) => "stop",
        AuditEvent::Attach(_) => "attach",
        AuditEvent::Detach(_) => "detach",
        AuditEvent::Pause(_) => "pause",
        AuditEvent::Dropped(_) => "dropped",
        AuditEvent::Resolver(_) => "resolver",
        AuditEvent::Dns(d) => match d {
            Dns::Answered(_) => "dns/answered",
            Dns::Failed(_) => "dns/failed",
            Dns::Malformed(_) => "dns/malformed",
        },
        AuditEvent::StaleCgroups(_) => "stale_cgroups",
        AuditEvent::Genesis(_) => "genesis",
        AuditEvent::Checkpoint(_) => "checkpoint",
        AuditEvent::TornTail(_) => "torn_tail",
        AuditEvent::KeyRotation(_) => "key_rotation",
        AuditEvent::DaemonStart(_) => "daemon_start",
        AuditEvent::DaemonStop(_) => "daemon_stop",
        AuditEvent::DaemonReload(_) => "daemon_reload",
        AuditEvent::Adopted(_) => "adopted",
        AuditEvent::AdoptionFailed(_) => "adoption_failed",
        AuditEvent::PeerRefused(_) => "peer_refused",
        AuditEvent::TokenIssued(_) => "token_issued",
        AuditEvent::TokenRevoked(_) => "token_revoked",
        AuditEvent::TokenRefused(_) => "token_refused",
        AuditEvent::ClientGone(_) => "client_gone",
    }
}

const KINDS: &[&str] = &[
    "run_start",
    "run_end/ended",
    "run_end/failed",
    "exec",
    "exit",
    "denied/file",
    "denied/socket",
    "denied/syscall",
    "denied/command",
    "denied/net",
    "denied/unix",
    "denied/fs_rule",
    "denied/exec_integrity",
    "denied/dns",
    "denied_repeated",
    "taint",
    "egress_blocked",
    "taint_sockets_aborted",
    "budget/warn",
    "budget/freeze",
    "budget/kill",
    "budget/resume",
    "budget/oom_kill",
    "budget/fork_refused",
    "budget/abort_sockets",
    "stop",
    "pause",
    "dropped",
    "resolver",
    "dns/answered",
    "dns/failed",
    "dns/malformed",
    "stale_cgroups",
    "genesis",
    "checkpoint",
    "torn_tail",
    "key_rotation",
    "daemon_start",
    "daemon_stop",
    "daemon_reload",
    "adopted",
    "adoption_failed",
    "peer_refused",
    "client_gone",
    "token_issued",
    "token_revoked",
    "token_refused",
    "attach",
    "detach",
];

#[test]
fn there_is_a_sample_of_every_kind() {
    let have: BTreeSet<&str> = samples().iter().map(|(_, _, e)| kind(e)).collect();
    let want: BTreeSet<&str> = KINDS.iter().copied().collect();
    assert_eq!(have, want);
}

/// The sealed line the writer would write for `e`.
fn line(layer: &str, decision: Option<Decision>, e: &AuditEvent) -> Vec<u8> {
    let p = Pending::new(layer, decision, e).unwrap();
    let core = [
        decision.map(Decision::as_str),
        Some(p.event.as_str()),
        Some(layer),
        Some("run-1"),
        Some("2026-01-01T00:00:00.000000Z"),
    ];
    assert_eq!(CORE_KEYS, ["decision", "event", "layer", "run", "ts"]);
    let mut out = Vec::new();
    seal_encoded_into(&mut out, 5, &"0".repeat(64), core, &p.detail);
    out.pop(); // '\n'
    out
}

#[test]
fn every_record_kind_reads_back_as_the_event_it_was_written_from() {
    for (layer, decision, e) in samples() {
        let line = line(layer, decision, &e);
        let rec: Record = serde_json::from_slice(&line).unwrap();
        assert_eq!(rec.layer, layer);
        assert_eq!(rec.decision, decision);
        let back = rec.audit_event().unwrap_or_else(|err| {
            panic!("{}: {err}: {}", kind(&e), String::from_utf8_lossy(&line))
        });
        assert_eq!(back, e, "{}", String::from_utf8_lossy(&line));
        // The event's fields are the record's, none renamed (no event field is named
        // like a core one).
        let v: Value = serde_json::from_slice(&line).unwrap();
        for (k, val) in e.to_fields().unwrap() {
            assert_eq!(v[&k], val, "{}: {k}", kind(&e));
        }
    }
}

#[test]
fn null_and_absent_fields_are_written_as_before() {
    let fields = |e: AuditEvent| Value::Object(e.to_fields().unwrap());
    // would_deny: the process saw no error (`null`), and what enforce would have said.
    assert_eq!(
        fields(net(true, true).into()),
        json!({"event": "denied", "op": "connect", "proto": "tcp", "rule": "no rule",
               "errno": null, "would_errno": "EPERM", "pid": 7, "tid": 8, "run_slot": 3,
               "dst": "10.0.0.1", "port": 443})
    );
    // A unix kill has no errno at all; a would_deny has `errno: null`.
    let kill = fields(
        UnixDenied {
            dev: None,
            ino: None,
            ..unix("kill")
        }
        .into(),
    );
    assert_eq!(
        kill,
        json!({"event": "denied", "op": "connect", "family": "AF_UNIX",
               "path": "/run/docker.sock", "rule": "no rule", "pid": 7, "tid": 8,
               "action": "kill", "signal": "SIGKILL"})
    );
    let would = fields(
        UnixDenied {
            would_signal: None,
            ..unix("would_deny")
        }
        .into(),
    );
    assert_eq!(would["errno"], Value::Null);
    assert!(would.as_object().unwrap().contains_key("errno"));
    // An inode rule's unresolved path and rule path are `null`; exec integrity has no
    // rule_path.
    let rule = fields(
        FsRuleDenied {
            hit: InodeHit {
                path: None,
                ..hit("would_deny")
            },
            rule_path: None,
        }
        .into(),
    );
    assert!(rule["path"].is_null() && rule["rule_path"].is_null());
    assert!(rule.get("errno").is_none());
    let exec = fields(hit("deny").into());
    assert!(exec.get("rule_path").is_none());
    // run_end of a command that never ran has no elapsed_ms (replay tells them apart).
    let failed = fields(not_found().into());
    assert_eq!(
        failed,
        json!({"event": "run_end", "exit_code": 127, "error": "command not found"})
    );
}

#[test]
fn durable_records_are_the_ones_a_run_must_not_lose() {
    for (_, _, e) in samples() {
        let want = matches!(
            kind(&e).split('/').next(),
            Some(
                "run_start"
                    | "run_end"
                    | "dropped"
                    | "denied"
                    | "denied_repeated"
                    | "daemon_start"
                    | "daemon_stop"
                    | "daemon_reload"
                    | "adopted"
                    | "adoption_failed"
                    | "peer_refused"
                    | "client_gone"
                    | "token_issued"
                    | "token_revoked"
                    | "token_refused"
            )
        );
        assert_eq!(e.is_durable(), want, "{}", kind(&e));
    }
}

/// The doc's text from `heading` to the next heading of the same or a higher level.
fn doc_part<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let start = text.find(&format!("\n{heading}"))? + 1 + heading.len();
    let rest = &text[start..];
    let level = heading.chars().take_while(|c| *c == '#').count();
    let end = (1..=level)
        .filter_map(|l| rest.find(&format!("\n{} ", "#".repeat(l))))
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

#[test]
fn the_doc_describes_every_event_and_field() {
    let mut events = BTreeSet::new();
    for (_, _, e) in samples() {
        let fields = e.to_fields().unwrap();
        let event = fields["event"].as_str().unwrap().to_owned();
        let Some(mut section) = doc_part(DOC, &format!("### `{event}`")) else {
            panic!("docs/audit-records.md has no section ### `{event}`");
        };
        // A `denied` kind has its own part: `#### net`, `#### fs_rule`, …
        if let AuditEvent::Denied(_) = e {
            let k = kind(&e).trim_start_matches("denied/");
            section = doc_part(section, &format!("#### {k}"))
                .unwrap_or_else(|| panic!("docs/audit-records.md: no #### {k} under `denied`"));
            if k == "exec_integrity" {
                // Described as an fs rule's fields without rule_path.
                section = doc_part(DOC, "#### fs_rule").unwrap();
            }
        }
        for k in fields.keys().filter(|k| *k != "event") {
            // The caller's own run_start fields are not the schema's.
            if matches!(e, AuditEvent::RunStart(ref s) if s.extra.contains_key(k)) {
                continue;
            }
            assert!(
                section.contains(&format!("`{k}`")),
                "docs/audit-records.md, ### `{event}`: field `{k}` ({}) is not described",
                kind(&e)
            );
        }
        if let (AuditEvent::Budget(_), Some(action)) =
            (&e, fields.get("action").and_then(Value::as_str))
        {
            assert!(
                section.contains(&format!("`{action}`")),
                "budget action {action}"
            );
        }
        events.insert(event);
    }
    // And it describes nothing agentd does not write.
    for heading in DOC.lines().filter_map(|l| l.strip_prefix("### `")) {
        let name = heading.trim_end_matches('`');
        assert!(
            events.contains(name),
            "docs/audit-records.md describes `{name}`, which agentd does not write"
        );
    }
}
