//! The network part of the Plan: which layer enforces each `net` rule.
//!
//! With cgroup-BPF (probed), the eBPF network layer is the primary enforcer of every
//! address, port and protocol rule, for connect, UDP sendto and bind, and of socket
//! creation (raw/packet/netlink). Landlock's TCP port rules are then left out: they
//! would be a superset of the eBPF rules, but landlock decides before the cgroup hooks,
//! so a denied port would fail with EACCES, unaudited, instead of the eBPF layer's
//! EPERM with an audit record. Without cgroup-BPF, only rules landlock can enforce
//! exactly (TCP to any address) are accepted; the rest are refused (fail closed).

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::Builder;
use crate::layers::bpf::{
    compile_net_rules as compile, proto_bits, AddrRule, DomainRule, NetRequest, TAINTED_RULE,
};
use crate::layers::name;
use crate::policy::{Mode, NetHost, NetRule, Policy, Proto};
use crate::probe::Probe;

/// What the landlock layer gets: TCP connect ports and TCP bind ports (`None` = any).
pub(super) type LandlockPorts = (Option<Vec<u16>>, Option<Vec<u16>>);

/// Layer name of the run's DNS resolver in the Plan and in audit records.
pub const DNS: &str = "dns";

const HOOKS: &str = "cgroup/connect4+connect6 (TCP, UDP connect), sendmsg4+sendmsg6 (UDP sendto)";

fn ports_text(rule: &NetRule) -> String {
    let ports = match rule.ports {
        None => "any port".to_owned(),
        Some((0, 0)) => "port 0 (the port the kernel picks, no other)".to_owned(),
        Some((lo, hi)) if lo == hi => format!("port {lo}"),
        Some((lo, hi)) => format!("ports {lo}-{hi}"),
    };
    let proto = match rule.proto {
        None => "tcp+udp",
        Some(Proto::Tcp) => "tcp",
        Some(Proto::Udp) => "udp",
    };
    format!("{ports}, {proto}")
}

fn addr_rule(rule: &NetRule) -> Option<AddrRule> {
    let NetHost::Cidr { addr, prefix } = rule.host else {
        return None;
    };
    // An IPv4-mapped IPv6 rule is an IPv4 rule: the programs judge such destinations
    // by the IPv4 tries.
    let (addr, prefix) = match addr {
        IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), prefix - 96),
            None => (addr, prefix),
        },
        _ => (addr, prefix),
    };
    Some(AddrRule {
        addr,
        prefix,
        ports: rule.ports.unwrap_or((0, u16::MAX)),
        protos: proto_bits(
            rule.proto != Some(Proto::Udp),
            rule.proto != Some(Proto::Tcp),
        ),
        written: rule.written.clone(),
    })
}

/// TCP ports of `rules` for landlock: `None` if one of them allows any port.
fn tcp_ports(rules: &[NetRule]) -> Option<Vec<u16>> {
    let mut ports = BTreeSet::new();
    for r in rules.iter().filter(|r| r.proto != Some(Proto::Udp)) {
        match r.ports {
            Some((lo, hi)) => ports.extend(lo..=hi),
            None => return None,
        }
    }
    Some(ports.into_iter().collect())
}

impl Builder {
    pub(super) fn net(&mut self, policy: &Policy, probe: &Probe, enforce: bool) -> LandlockPorts {
        if probe.cgroup_bpf.available {
            self.net_with_bpf(policy, probe, enforce)
        } else {
            self.net_landlock_only(policy, probe, enforce)
        }
    }

    fn net_with_bpf(&mut self, policy: &Policy, _probe: &Probe, enforce: bool) -> LandlockPorts {
        let verdict = if enforce {
            "denied with EPERM"
        } else {
            "recorded as would_deny (mode: audit)"
        };
        let mut request = NetRequest {
            audit_only: !enforce,
            raw_allowed: policy.net.as_ref().is_some_and(|n| n.raw),
            connect: None,
            bind: None,
            domains: Vec::new(),
            // A learn run records every name it asks, with the answers, so that the
            // suggestion can grant destinations by name.
            resolver: policy.mode == Mode::Learn,
            taint_check: !policy.fs.secret.is_empty(),
            after_taint: Vec::new(),
            after_taint_domains: Vec::new(),
        };
        self.after_taint(policy, enforce, &mut request);
        if request.raw_allowed {
            cover!(
                self,
                "net.raw: true",
                name::BPF,
                "cgroup/sock_create allows raw, packet and non-TCP/UDP inet sockets (the caps layer still drops CAP_NET_RAW, so the kernel refuses raw and packet sockets with EPERM in mode: enforce)",
            );
        } else {
            cover!(
                self,
                "socket: raw, non-TCP/UDP inet (ICMP, SCTP, …)",
                name::BPF,
                format!(
                    "cgroup/sock_create: {verdict} (set net.raw: true to allow){}",
                    if enforce {
                        "; raw sockets are refused earlier by the kernel's CAP_NET_RAW check (caps layer), with EPERM, audited by the denial tracker (tp_btf sys_exit) as layer caps"
                    } else {
                        ""
                    }
                ),
            );
        }
        if enforce {
            cover!(
                self,
                "socket: netlink other than NETLINK_ROUTE, AF_PACKET",
                name::SECCOMP,
                "denied with EPERM (the cgroup sock_create hook only sees inet sockets), audited by the denial tracker (tp_btf sys_exit); NETLINK_ROUTE, what glibc needs, is allowed",
            );
        }
        cover!(
                self,
            "socket: AF_UNIX abstract",
            name::LANDLOCK,
            "scoped to the run (connect outside it fails with EPERM); pathname sockets: see `socket: AF_UNIX pathname`",
        );
        let bind_rest = format!("cgroup/bind4+bind6: every explicit bind() of a TCP or UDP socket that no net.bind rule allows, port 0 included, is {verdict}, audited (the kernel's implicit bind on a first connect/sendto is not a bind)");
        cover!(
                self,
            "listen() of a never-bound TCP socket",
            name::BPF,
            "NOT stopped: the kernel binds it to a port it picks on every address, and no cgroup or landlock hook runs for that implicit bind",
        );
        let Some(net) = &policy.net else {
            cover!(
                self,
                "net (absent)",
                name::BPF,
                "connect and sendto are not restricted: the policy has no net section",
            );
            // Inbound sockets fail closed: no net.bind, no bind.
            cover!(self, "net.bind (absent)", name::BPF, bind_rest);
            self.layer(
                name::BPF,
                "on",
                "cgroup/sock_create, bind4+bind6 on the run's cgroup (no net section: addresses unrestricted, every bind denied)",
            );
            request.bind = Some(Vec::new());
            self.net_request = Some(request);
            return (None, None);
        };

        let mut connect = Vec::new();
        for rule in &net.allow {
            match addr_rule(rule) {
                Some(r) => {
                    cover!(
                        self,
                        format!("net.allow {} (line {})", rule.written, rule.span.line),
                        name::BPF,
                        format!(
                            "{HOOKS}: allowed to {}/{}, {}",
                            r.addr,
                            r.prefix,
                            ports_text(rule)
                        ),
                    );
                    connect.push(r);
                }
                None => {
                    let NetHost::Domain(pattern) = &rule.host else {
                        continue;
                    };
                    cover!(
                self,
                        format!("net.allow {} (line {})", rule.written, rule.span.line),
                        DNS,
                        format!(
                            "the run's resolver answers `{pattern}` (others: REFUSED, audited) and adds the answer's addresses to the allow map for the record's TTL + grace, {}; private, loopback and link-local answers are dropped unless a CIDR rule covers them",
                            ports_text(rule)
                        ),
                    );
                    request.domains.push(DomainRule {
                        pattern: pattern.clone(),
                        ports: rule.ports.unwrap_or((0, u16::MAX)),
                        protos: proto_bits(
                            rule.proto != Some(Proto::Udp),
                            rule.proto != Some(Proto::Tcp),
                        ),
                        written: rule.written.clone(),
                    });
                }
            }
        }
        request.resolver |= !request.domains.is_empty();
        if request.resolver {
            if policy.mode == Mode::Learn {
                cover!(
                self,
                    "net (DNS names, mode: learn)",
                    DNS,
                    "the run's resolver answers every name and records it with its answers (dns and would_deny records), so that `agentd policy suggest` grants destinations by name",
                );
            }
            cover!(
                self,
                "net (DNS, port 53 tcp+udp to any address)",
                name::BPF,
                "connect4/6 and sendmsg4/6 rewrite the destination to the run's resolver on loopback (the agent needs no configuration); recvmsg4/6 give the replies the original destination as their source (unconnected UDP clients that check it accept them)",
            );
            if request.taint_check {
                cover!(
                    self,
                    "fs.secret taint → DNS",
                    DNS,
                    if enforce {
                        format!("once the run is tainted, the resolver refuses every name but the net.after_taint ones (REFUSED, audited with rule \"{TAINTED_RULE}\"); cgroup_skb/egress lets the queries reach it")
                    } else {
                        "once the run is tainted, every name is recorded as would_deny (mode: audit) and resolved anyway".to_owned()
                    },
                );
            }
        }
        cover!(
            self,
            "net.allow (everything else, loopback included)",
            name::BPF,
            format!("{HOOKS}: {verdict}, audited"),
        );
        let mut bind = Vec::new();
        for rule in &net.bind {
            if let Some(r) = addr_rule(rule) {
                cover!(
                    self,
                    format!("net.bind {} (line {})", rule.written, rule.span.line),
                    name::BPF,
                    format!(
                        "cgroup/bind4+bind6: bind to {}/{} allowed, {}",
                        r.addr,
                        r.prefix,
                        ports_text(rule)
                    ),
                );
                bind.push(r);
            }
        }
        cover!(self, "net.bind (everything else)", name::BPF, bind_rest);
        self.layer(
            name::BPF,
            "on",
            format!(
                "network: {} address, {} domain and {} bind rules in per-run LPM tries; connect4/6, sendmsg4/6, bind4/6, sock_create on the run's cgroup",
                connect.len(),
                request.domains.len(),
                bind.len()
            ),
        );
        for (section, rules) in [("net.allow", &connect), ("net.bind", &bind)] {
            if let Err(e) = compile(rules) {
                self.refuse(name::BPF, format!("{section}: {e}"));
            }
        }
        request.connect = Some(connect);
        request.bind = Some(bind);
        self.net_request = Some(request);

        // Landlock's TCP port rules are not added on top. They would be a superset of
        // the eBPF rules, but landlock decides first (security_socket_connect/bind run
        // before the protocol's connect/bind, where the cgroup hooks sit): a port outside
        // its list would fail with EACCES and never reach the eBPF layer, so the denial
        // would carry the wrong errno and no audit record.
        if enforce {
            cover!(
                self,
                "net (landlock TCP ports)",
                name::LANDLOCK,
                "not used: landlock is checked before the cgroup hooks, so its EACCES would pre-empt the eBPF layer's audited EPERM",
            );
        }
        (None, None)
    }

    /// Taint → connect/sendmsg: once a secret is read, only `net.after_taint`
    /// destinations (addresses and CIDRs) stay reachable, checked by the same programs
    /// as `net.allow` (and by `cgroup_skb/egress` for open connections, see
    /// `Builder::taint_egress`). Domain names are refused: after the taint the resolver
    /// answers no name.
    fn after_taint(&mut self, policy: &Policy, enforce: bool, request: &mut NetRequest) {
        let rules = policy
            .net
            .as_ref()
            .map(|n| n.after_taint.as_slice())
            .unwrap_or_default();
        if !request.taint_check {
            if let Some(rule) = rules.first() {
                cover!(
                    self,
                    format!("net.after_taint {} (line {})", rule.written, rule.span.line),
                    name::BPF,
                    "unused: the policy has no fs.secret, so the run is never tainted",
                );
            }
            return;
        }
        let verdict = if enforce {
            "denied with EPERM"
        } else {
            "recorded as would_deny (mode: audit)"
        };
        let allowed_names: Vec<&str> = policy
            .net
            .as_ref()
            .map(|n| {
                n.allow
                    .iter()
                    .filter_map(|r| match &r.host {
                        NetHost::Domain(p) => Some(p.as_str()),
                        NetHost::Cidr { .. } => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for rule in rules {
            let Some(r) = addr_rule(rule) else {
                let NetHost::Domain(pattern) = &rule.host else {
                    continue;
                };
                self.after_taint_name(rule, pattern, &allowed_names, request);
                continue;
            };
            cover!(
                self,
                format!("net.after_taint {} (line {})", rule.written, rule.span.line),
                name::BPF,
                format!(
                    "still reachable once tainted: {}/{}, {} (connect4/6, sendmsg4/6 and cgroup_skb/egress; net.allow must allow it too)",
                    r.addr,
                    r.prefix,
                    ports_text(rule)
                ),
            );
            request.after_taint.push(r);
        }
        if let Err(e) = compile(&request.after_taint) {
            self.refuse(name::BPF, format!("net.after_taint: {e}"));
        }
        cover!(
                self,
            "fs.secret taint → connect/sendmsg",
            name::BPF,
            format!(
                "{HOOKS}: once the run is tainted, every destination no net.after_taint rule matches is {verdict}, audited with rule \"{TAINTED_RULE}\""
            ),
        );
    }

    /// A name in `net.after_taint`: an exact name that a `net.allow` name rule allows.
    /// Once tainted, the resolver answers only such names, and their addresses go into
    /// the after-taint tries. Wildcards are refused: the labels of any name under them
    /// reach the zone's name servers, a way out for the secret.
    fn after_taint_name(
        &mut self,
        rule: &NetRule,
        pattern: &str,
        allowed_names: &[&str],
        request: &mut NetRequest,
    ) {
        let at = format!(
            "net.after_taint `{}` (line {})",
            rule.written, rule.span.line
        );
        if let Some(zone) = pattern.strip_prefix("*.") {
            self.refuse(
                name::BPF,
                format!("{at}: wildcard names are not supported after taint: once a secret is read, a lookup of <data>.{zone} would carry it to that zone's name servers. List exact names, addresses or CIDRs"),
            );
            return;
        }
        let covered = allowed_names.iter().any(|p| match p.strip_prefix("*.") {
            Some(suffix) => {
                pattern.len() > suffix.len() + 1 && pattern.ends_with(&format!(".{suffix}"))
            }
            None => *p == pattern,
        });
        if !covered {
            self.refuse(
                name::BPF,
                format!("{at}: no net.allow name rule allows `{pattern}`; a name is reachable after taint only if it is reachable before"),
            );
            return;
        }
        cover!(
                self,
            format!("net.after_taint {} (line {})", rule.written, rule.span.line),
            DNS,
            format!(
                "once tainted, the resolver still answers `{pattern}` (only exact names), and its addresses stay reachable, {} (net.allow must allow them too)",
                ports_text(rule)
            ),
        );
        request.after_taint_domains.push(DomainRule {
            pattern: pattern.to_owned(),
            ports: rule.ports.unwrap_or((0, u16::MAX)),
            protos: proto_bits(
                rule.proto != Some(Proto::Udp),
                rule.proto != Some(Proto::Tcp),
            ),
            written: rule.written.clone(),
        });
    }

    /// Landlock can restrict TCP by port only. Address, UDP, bind and domain rules need
    /// the eBPF network layer: without it they are refused rather than silently widened
    /// to "any address on this port".
    fn net_landlock_only(
        &mut self,
        policy: &Policy,
        probe: &Probe,
        enforce: bool,
    ) -> LandlockPorts {
        let Some(net) = &policy.net else {
            cover!(
                self,
                "net (absent)",
                name::LANDLOCK,
                "network is not restricted: the policy has no net section",
            );
            return (None, None);
        };
        let why = format!("cgroup-BPF is unavailable ({})", probe.cgroup_bpf.detail);
        let mut accepted = Vec::new();
        for rule in &net.allow {
            let any_addr = matches!(rule.host, NetHost::Cidr { prefix: 0, .. });
            if !any_addr && enforce {
                self.refuse(
                    name::LANDLOCK,
                    format!(
                        "net.allow `{}` (line {}): address and domain rules need the eBPF network layer and {why}; landlock alone would allow every address on that port. Use `0.0.0.0/0:PORT/tcp` to allow a port to any address",
                        rule.written, rule.span.line
                    ),
                );
                continue;
            }
            if rule.proto == Some(Proto::Udp) && enforce {
                self.refuse(
                    name::LANDLOCK,
                    format!(
                        "net.allow `{}` (line {}): UDP rules need the eBPF network layer and {why}",
                        rule.written, rule.span.line
                    ),
                );
                continue;
            }
            cover!(
                self,
                format!("net.allow {}", rule.written),
                name::LANDLOCK,
                "TCP connect to these ports allowed",
            );
            accepted.push(rule.clone());
        }
        if enforce && (net.raw || !net.bind.is_empty()) {
            self.refuse(
                name::LANDLOCK,
                format!("net.raw and net.bind need the eBPF network layer and {why}"),
            );
        }
        cover!(
                self,
            "net (TCP bind)",
            name::LANDLOCK,
            "every TCP bind denied with EACCES, port 0 included (landlock allows a bind to port 0 only through a rule for port 0); UDP bind is not restricted without cgroup-BPF",
        );
        (tcp_ports(&accepted), Some(Vec::new()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::policy::Span;

    fn rule(host: NetHost, ports: Option<(u16, u16)>, proto: Option<Proto>) -> NetRule {
        NetRule {
            written: "x".into(),
            host,
            ports,
            proto,
            span: Span::default(),
        }
    }

    fn probe(cgroup_bpf: bool) -> Probe {
        let mut p = crate::probe::all_available();
        p.cgroup_bpf.available = cgroup_bpf;
        p
    }

    fn policy(net: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::policy::LoadOptions {
            workspace: dir.path().to_path_buf(),
            home: dir.path().to_path_buf(),
        };
        crate::policy::parse_str(&format!("version: 1\nname: t\n{net}"), "<test>", &opts).unwrap()
    }

    fn plan_net(net: &str, cgroup_bpf: bool) -> (Builder, LandlockPorts) {
        let mut b = Builder::explaining();
        let ports = b.net(&policy(net), &probe(cgroup_bpf), true);
        (b, ports)
    }

    /// The taint plan of an `fs.secret` policy (with `extra` net settings) on a kernel
    /// with or without SOCK_DESTROY.
    fn plan_taint(extra: &str, sock_destroy: bool) -> (Builder, bool) {
        let mut p = probe(true);
        p.sock_destroy.available = sock_destroy;
        p.sock_destroy.detail = "SOCK_DESTROY: Operation not supported".into();
        let policy = policy(&format!(
            "fs:\n  secret: [{{path: /nonexistent-secret, optional: true}}]\n{extra}"
        ));
        let mut b = Builder::explaining();
        let ok = b.taint_egress(&policy, &p, true);
        (b, ok)
    }

    #[test]
    fn a_secret_needs_sock_destroy_unless_the_policy_says_best_effort() {
        let (b, ok) = plan_taint("", true);
        assert!(ok && b.refusals.is_empty(), "{:?}", b.refusals);
        let how = &b.coverage[0].how;
        assert!(
            how.contains("TCP sockets are destroyed (SOCK_DESTROY)"),
            "{how}"
        );

        let (b, ok) = plan_taint("", false);
        assert!(!ok);
        assert_eq!(b.refusals.len(), 1);
        assert_eq!(b.refusals[0].layer, name::BPF);
        assert_eq!(
            b.refusals[0].reason,
            "fs.secret needs SOCK_DESTROY to abort a tainted run's TCP sockets at run end (else data queued while tainted leaves after it): SOCK_DESTROY: Operation not supported; set net.taint_socket_abort: best_effort to run without it"
        );

        let (b, ok) = plan_taint("net:\n  taint_socket_abort: best_effort\n", false);
        assert!(ok && b.refusals.is_empty(), "{:?}", b.refusals);
        let how = &b.coverage[0].how;
        assert!(
            how.contains("NOT guaranteed at run end (net.taint_socket_abort: best_effort)"),
            "{how}"
        );
    }

    const RULES: &str = "net:\n  allow: [\"127.0.0.1:80/tcp\", \"10.0.0.0/8:53/udp\", \"*.example.com:443/tcp\"]\n  bind: [\"127.0.0.1:8000/tcp\"]\n";

    #[test]
    fn with_cgroup_bpf_every_rule_goes_to_the_ebpf_layer() {
        let (b, ports) = plan_net(RULES, true);
        assert!(b.refusals.is_empty(), "{:?}", b.refusals);
        assert_eq!(
            ports,
            (None, None),
            "landlock TCP ports are not layered on top"
        );
        let req = b.net_request.unwrap();
        assert!(!req.audit_only);
        assert_eq!(req.connect.as_ref().unwrap().len(), 2);
        assert_eq!(req.bind.as_ref().unwrap().len(), 1);
        assert_eq!(req.domains.len(), 1);
        assert_eq!(req.domains[0].pattern, "*.example.com");
        assert_eq!(req.domains[0].ports, (443, 443));
    }

    #[test]
    fn without_cgroup_bpf_address_udp_domain_and_bind_rules_are_refused() {
        let (b, _) = plan_net(RULES, false);
        assert!(b.net_request.is_none());
        let reasons: Vec<&str> = b.refusals.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(
            reasons.iter().all(|r| r.contains("probe said so")),
            "{reasons:?}"
        );
        // The one shape landlock enforces exactly is accepted.
        let (b, ports) = plan_net("net:\n  allow: [\"0.0.0.0/0:443/tcp\"]\n", false);
        assert!(b.refusals.is_empty());
        assert_eq!(ports, (Some(vec![443]), Some(vec![])));
    }

    #[test]
    fn without_a_net_section_connect_is_open_and_every_bind_is_denied() {
        let (b, ports) = plan_net("", true);
        assert_eq!(ports, (None, None));
        let req = b.net_request.unwrap();
        assert!(req.connect.is_none() && req.domains.is_empty());
        assert_eq!(req.bind.as_deref().map(<[AddrRule]>::len), Some(0));
        // A net section without net.bind: the same.
        let (b, _) = plan_net("net:\n  allow: []\n", true);
        assert_eq!(
            b.net_request
                .unwrap()
                .bind
                .as_deref()
                .map(<[AddrRule]>::len),
            Some(0)
        );
    }

    #[test]
    fn a_bind_rule_for_port_0_allows_port_0_only() {
        let (b, _) = plan_net("net:\n  bind: [\"127.0.0.1:0/tcp\"]\n", true);
        assert!(b.refusals.is_empty(), "{:?}", b.refusals);
        let bind = b.net_request.unwrap().bind.unwrap();
        assert_eq!(bind.len(), 1);
        assert_eq!(bind[0].ports, (0, 0));
        assert_eq!(bind[0].protos, proto_bits(true, false));
        assert!(b
            .coverage
            .iter()
            .any(|c| c.rule.starts_with("net.bind 127.0.0.1:0/tcp")
                && c.how
                    .contains("port 0 (the port the kernel picks, no other)")));
    }

    #[test]
    fn after_taint_rules_go_to_the_taint_tries_and_names_are_refused() {
        let secret = "fs:\n  secret: [{path: \"{workspace}/.env\", optional: true}]\n";
        let (b, _) = plan_net(
            &format!("{secret}net:\n  allow: [\"127.0.0.0/8/tcp\"]\n  after_taint: [\"127.0.0.1:443/tcp\"]\n"),
            true,
        );
        assert!(b.refusals.is_empty(), "{:?}", b.refusals);
        let req = b.net_request.unwrap();
        assert!(req.taint_check);
        assert_eq!(req.after_taint.len(), 1);
        assert_eq!(req.after_taint[0].ports, (443, 443));
        assert!(
            b.coverage
                .iter()
                .any(|c| c.rule == "fs.secret taint → connect/sendmsg"
                    && c.how.contains(TAINTED_RULE))
        );

        // An exact name that net.allow allows (here through a wildcard) is accepted.
        let (b, _) = plan_net(
            &format!("{secret}net:\n  allow: [\"*.example.com:443/tcp\"]\n  after_taint: [\"api.example.com:443/tcp\"]\n"),
            true,
        );
        assert!(b.refusals.is_empty(), "{:?}", b.refusals);
        let req = b.net_request.unwrap();
        assert_eq!(req.after_taint_domains.len(), 1);
        assert_eq!(req.after_taint_domains[0].pattern, "api.example.com");
        assert_eq!(req.after_taint_domains[0].ports, (443, 443));

        // Wildcards, and names net.allow does not allow, are refused.
        let (b, _) = plan_net(
            &format!("{secret}net:\n  allow: [\"*.example.com:443/tcp\"]\n  after_taint: [\"*.example.com:443/tcp\", \"api.other.org:443/tcp\"]\n"),
            true,
        );
        assert_eq!(b.refusals.len(), 2, "{:?}", b.refusals);
        assert!(b.refusals[0]
            .reason
            .contains("wildcard names are not supported after taint"));
        assert!(b.refusals[1]
            .reason
            .contains("no net.allow name rule allows `api.other.org`"));

        // Without fs.secret the run is never tainted: nothing to check.
        let (b, _) = plan_net("net:\n  after_taint: [\"127.0.0.1:443/tcp\"]\n", true);
        assert!(b.refusals.is_empty());
        let req = b.net_request.unwrap();
        assert!(!req.taint_check && req.after_taint.is_empty());
    }

    #[test]
    fn mapped_v6_rules_become_v4() {
        let r = rule(
            NetHost::Cidr {
                addr: "::ffff:127.0.0.1".parse().unwrap(),
                prefix: 128,
            },
            Some((80, 80)),
            Some(Proto::Tcp),
        );
        let a = addr_rule(&r).unwrap();
        assert_eq!(a.addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(a.prefix, 32);
        assert_eq!(a.protos, proto_bits(true, false));
    }

    #[test]
    fn landlock_ports_are_a_superset() {
        let any = NetHost::Cidr {
            addr: "10.0.0.0".parse().unwrap(),
            prefix: 8,
        };
        let rules = [
            rule(any.clone(), Some((80, 81)), Some(Proto::Tcp)),
            rule(any.clone(), Some((53, 53)), Some(Proto::Udp)),
            rule(any.clone(), Some((443, 443)), None),
        ];
        assert_eq!(tcp_ports(&rules), Some(vec![80, 81, 443]));
        let rules = [rule(any, None, None)];
        assert_eq!(tcp_ports(&rules), None);
    }
}
