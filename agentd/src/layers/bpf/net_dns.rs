//! Domain rules: the allow-map side of the run's DNS resolver (`crate::net::dns`).
//!
//! The resolver calls [`DnsAllowMap::allow`] with the addresses an allowed name resolved
//! to, before the answer reaches the agent. Each address becomes a host entry (/32 or
//! /128) in the run's allow trie carrying the ports and protocols of the domain rule —
//! plus every CIDR rule that contains the address, because the kernel looks up the
//! longest prefix only. Entries live for the record's TTL plus the resolver's grace
//! period; an expiry task shrinks or removes them afterwards.
//!
//! Resolver decisions (answered, refused, rebinding dropped, …) go to the run's audit
//! log through a bounded channel; decisions that do not fit are counted, not lost
//! silently.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentd_common::fsrules::{names as fs_names, TaintState};
use agentd_common::net::{
    names as net_names, NetDnsTarget, NetPortRule, NetRuleSet, NET_KEY4_LEN, NET_KEY6_LEN,
    NET_RULES_PER_ENTRY,
};
use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{HashMap as BpfHashMap, MapData};

use super::net::{key4, key6, AddrRule};
use super::{map_error, BpfError, BpfRuntime};
use crate::net::dns::{AllowSink, DnsDecision};

/// Decisions waiting for the audit writer at most.
const DECISION_QUEUE: usize = 1024;
/// How often expired entries are removed.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// A domain rule as the allow map applies it to resolved addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRule {
    /// The pattern, lower-case (`api.example.com`, `*.example.com`).
    pub pattern: String,
    /// Inclusive port range.
    pub ports: (u16, u16),
    /// `NET_PROTO_*` bits.
    pub protos: u8,
    /// What the user wrote (the resolver hands it back in `allow`).
    pub written: String,
}

type Trie4 = LpmTrie<MapData, [u8; NET_KEY4_LEN], NetRuleSet>;
type Trie6 = LpmTrie<MapData, [u8; NET_KEY6_LEN], NetRuleSet>;

struct State {
    trie4: Trie4,
    trie6: Trie6,
    /// Address → (domain rule index, expiry).
    hosts: HashMap<IpAddr, Vec<(usize, Instant)>>,
}

/// The resolver's sink for one run.
pub struct DnsAllowMap {
    slot: u32,
    cidr_rules: Vec<AddrRule>,
    domain_rules: Vec<DomainRule>,
    state: Mutex<State>,
    decisions: tokio::sync::mpsc::Sender<DnsDecision>,
    dropped: AtomicU64,
    /// `RUN_TAINT` and the run's cgroup id, when the policy has `fs.secret`.
    taint: Option<(TaintMap, u64)>,
}

type TaintMap = BpfHashMap<MapData, u64, TaintState>;

impl BpfRuntime {
    /// A sink writing resolved addresses of `domain_rules` into run `slot`'s allow trie,
    /// next to `cidr_rules` (the run's address rules, merged into each host entry), and
    /// the receiver of the resolver's decisions. With `taint_of` (the run's cgroup id,
    /// for a policy with `fs.secret`) the sink reads the run's taint flag from
    /// `RUN_TAINT`; call this before `enable_fs_rules`, which takes that map.
    pub fn dns_allow_map(
        &mut self,
        slot: u32,
        taint_of: Option<u64>,
        cidr_rules: &[AddrRule],
        domain_rules: &[DomainRule],
    ) -> Result<(Arc<DnsAllowMap>, tokio::sync::mpsc::Receiver<DnsDecision>), BpfError> {
        let trie4 = LpmTrie::try_from(aya::maps::Map::LpmTrie(
            self.dup_map(net_names::MAP_NET_ALLOW4)?,
        ))
        .map_err(|error| map_error("open", net_names::MAP_NET_ALLOW4, error))?;
        let trie6 = LpmTrie::try_from(aya::maps::Map::LpmTrie(
            self.dup_map(net_names::MAP_NET_ALLOW6)?,
        ))
        .map_err(|error| map_error("open", net_names::MAP_NET_ALLOW6, error))?;
        let taint = match taint_of {
            Some(cgroup_id) => {
                let name = fs_names::MAP_RUN_TAINT;
                let map = BpfHashMap::try_from(aya::maps::Map::HashMap(self.dup_map(name)?))
                    .map_err(|error| map_error("open", name, error))?;
                Some((map, cgroup_id))
            }
            None => None,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(DECISION_QUEUE);
        let map = Arc::new(DnsAllowMap {
            slot,
            cidr_rules: cidr_rules.to_vec(),
            domain_rules: domain_rules.to_vec(),
            state: Mutex::new(State {
                trie4,
                trie6,
                hosts: HashMap::new(),
            }),
            decisions: tx,
            dropped: AtomicU64::new(0),
            taint,
        });
        Ok((map, rx))
    }

    /// Tells the programs where run `slot`'s resolver listens. Must precede
    /// `enforce_net` with DNS redirection, or redirected traffic is denied.
    pub fn set_dns_target(&mut self, slot: u32, port4: u16, port6: u16) -> Result<(), BpfError> {
        let name = net_names::MAP_NET_DNS;
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(BpfError::MissingMap { name })?;
        let mut map: BpfHashMap<&mut MapData, u32, NetDnsTarget> =
            BpfHashMap::try_from(map).map_err(|error| map_error("open", name, error))?;
        map.insert(slot, NetDnsTarget { port4, port6 }, 0)
            .map_err(|error| map_error(format!("insert run slot {slot} into"), name, error))
    }

    /// A second handle on map `name` (a duplicated fd), for use from another task.
    fn dup_map(&mut self, name: &'static str) -> Result<MapData, BpfError> {
        let map = self.ebpf.map(name).ok_or(BpfError::MissingMap { name })?;
        let data = match map {
            aya::maps::Map::LpmTrie(d) | aya::maps::Map::HashMap(d) => d,
            _ => return Err(BpfError::MissingMap { name }),
        };
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|error| BpfError::Map {
                action: "duplicate the fd of".into(),
                map: name,
                error: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "fcntl(F_DUPFD_CLOEXEC)",
                    io_error: error,
                }),
            })?;
        MapData::from_fd(fd).map_err(|error| map_error("reopen", name, error))
    }
}

impl DnsAllowMap {
    /// Removes expired entries every second until the returned task is aborted.
    pub fn spawn_expiry(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(EXPIRY_TICK).await;
                me.expire(Instant::now());
            }
        })
    }

    /// Decisions that did not fit the queue so far.
    pub fn dropped_decisions(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Removes every entry this map inserted (end of the run).
    pub fn clear(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let addrs: Vec<IpAddr> = state.hosts.keys().copied().collect();
        for addr in addrs {
            state.hosts.remove(&addr);
            let _ = self.write(&mut state, addr);
        }
    }

    fn expire(&self, now: Instant) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let mut changed = Vec::new();
        state.hosts.retain(|addr, rules| {
            let before = rules.len();
            rules.retain(|(_, until)| *until > now);
            if rules.len() != before {
                changed.push(*addr);
            }
            !rules.is_empty()
        });
        for addr in changed {
            if let Err(e) = self.write(&mut state, addr) {
                tracing::error!(%addr, error = %e, "dns allow map: cannot shrink an expired entry");
            }
        }
    }

    /// Writes `addr`'s host entry from the state: its live domain rules plus the CIDR
    /// rules containing it; removes the entry when nothing is left and no policy rule
    /// has exactly that host key.
    fn write(&self, state: &mut State, addr: IpAddr) -> Result<(), String> {
        let host_prefix = if addr.is_ipv4() { 32 } else { 128 };
        let mut set = NetRuleSet::EMPTY;
        let mut count = 0usize;
        let mut push = |rule: NetPortRule| -> Result<(), String> {
            if count == NET_RULES_PER_ENTRY {
                return Err(format!(
                    "more than {NET_RULES_PER_ENTRY} port/protocol rules apply to {addr}"
                ));
            }
            set.rules[count] = rule;
            count += 1;
            Ok(())
        };
        let mut exact_cidr = false;
        for (i, r) in self.cidr_rules.iter().enumerate() {
            if super::net::contains(r.addr, r.prefix, addr, host_prefix) {
                exact_cidr |= r.prefix == host_prefix;
                push(port_rule(r.ports, r.protos, i))?;
            }
        }
        let live: Vec<usize> = state
            .hosts
            .get(&addr)
            .map(|v| v.iter().map(|(i, _)| *i).collect())
            .unwrap_or_default();
        for i in live {
            if let Some(d) = self.domain_rules.get(i) {
                push(port_rule(d.ports, d.protos, self.cidr_rules.len() + i))?;
            }
        }
        set.count = count as u32;
        let remove = count == 0 || (!state.hosts.contains_key(&addr) && !exact_cidr);
        match addr {
            IpAddr::V4(a) => {
                let key = key4(self.slot, a, 32);
                if remove {
                    let _ = state.trie4.remove(&key);
                    Ok(())
                } else {
                    state.trie4.insert(&key, set, 0).map_err(|e| e.to_string())
                }
            }
            IpAddr::V6(a) => {
                let key = key6(self.slot, a, 128);
                if remove {
                    let _ = state.trie6.remove(&key);
                    Ok(())
                } else {
                    state.trie6.insert(&key, set, 0).map_err(|e| e.to_string())
                }
            }
        }
    }
}

fn port_rule(ports: (u16, u16), protos: u8, index: usize) -> NetPortRule {
    NetPortRule {
        port_lo: ports.0,
        port_hi: ports.1,
        protos,
        _pad: 0,
        rule: u16::try_from(index).unwrap_or(u16::MAX),
    }
}

impl AllowSink for DnsAllowMap {
    fn allow(&self, name: &str, rule: &str, addrs: &[IpAddr], ttl: Duration) -> Result<(), String> {
        let index = self
            .domain_rules
            .iter()
            .position(|d| d.written == rule)
            .ok_or_else(|| format!("{name}: rule `{rule}` is not a domain rule of this run"))?;
        let until = Instant::now() + ttl;
        let mut state = self
            .state
            .lock()
            .map_err(|_| "dns allow map lock poisoned".to_owned())?;
        for addr in addrs {
            let rules = state.hosts.entry(*addr).or_default();
            match rules.iter_mut().find(|(i, _)| *i == index) {
                Some((_, old)) => *old = (*old).max(until),
                None => rules.push((index, until)),
            }
            self.write(&mut state, *addr)?;
        }
        Ok(())
    }

    fn decision(&self, decision: DnsDecision) {
        if self.decisions.try_send(decision).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn tainted(&self) -> bool {
        // A missing entry is "not tainted" (the fs programs insert it on the first
        // secret read and nothing removes it while the run lives).
        self.taint.as_ref().is_some_and(|(map, cgroup_id)| {
            map.get(cgroup_id, 0).is_ok_and(|state| state.tainted != 0)
        })
    }
}

/// The audit record of a resolver decision: (event, decision, fields).
pub fn dns_record(
    d: DnsDecision,
) -> (
    &'static str,
    Option<crate::audit::Decision>,
    serde_json::Value,
) {
    use crate::audit::Decision;
    use serde_json::json;
    let ips = |a: &[IpAddr]| a.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    match d {
        DnsDecision::Answered {
            name,
            qtype,
            rule,
            addrs,
            allowed,
            ttl,
            rcode,
        } => (
            "dns",
            Some(Decision::Allow),
            json!({"op": "dns_query", "name": name, "qtype": qtype, "rule": rule, "addrs": ips(&addrs), "allowed": allowed, "ttl_s": ttl.as_secs(), "rcode": rcode}),
        ),
        DnsDecision::Refused {
            name,
            qtype,
            reason,
            rcode,
        } => (
            "denied",
            Some(Decision::Deny),
            json!({"op": "dns_query", "name": name, "qtype": qtype, "rule": reason, "rcode": rcode}),
        ),
        DnsDecision::RebindingDropped {
            name,
            qtype,
            rule,
            addrs,
        } => (
            "denied",
            Some(Decision::Deny),
            json!({"op": "dns_answer", "name": name, "qtype": qtype, "rule": rule, "reason": "rebinding: private, loopback or link-local address not allowed by the policy", "addrs": ips(&addrs)}),
        ),
        DnsDecision::WouldRefuse {
            name,
            qtype,
            reason,
        } => (
            "denied",
            Some(Decision::WouldDeny),
            json!({"op": "dns_query", "name": name, "qtype": qtype, "rule": reason, "would_rcode": "REFUSED"}),
        ),
        DnsDecision::WouldDropRebinding {
            name,
            qtype,
            rule,
            addrs,
        } => (
            "denied",
            Some(Decision::WouldDeny),
            json!({"op": "dns_answer", "name": name, "qtype": qtype, "rule": rule, "reason": "rebinding", "addrs": ips(&addrs)}),
        ),
        DnsDecision::Failed {
            name,
            qtype,
            reason,
        } => (
            "dns",
            None,
            json!({"op": "dns_query", "name": name, "qtype": qtype, "error": reason, "rcode": "SERVFAIL"}),
        ),
        DnsDecision::Malformed { peer, reason } => (
            "dns",
            None,
            json!({"op": "dns_query", "peer": peer.to_string(), "error": reason}),
        ),
    }
}
