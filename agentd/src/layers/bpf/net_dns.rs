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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentd_common::fsrules::{names as fs_names, TaintState};
use agentd_common::net::{
    names as net_names, NetDnsTarget, NetPortRule, NetRuleSet, NET_KEY4_LEN, NET_KEY6_LEN,
    NET_RULES_PER_ENTRY,
};
use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{HashMap as BpfHashMap, IterableMap, MapData};

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

/// One pair of tries the resolver adds host entries to: the run's allow tries, or (for
/// `net.after_taint` names) its after-taint tries, with the policy rules merged into
/// every host entry.
struct Table {
    cidr_rules: Vec<AddrRule>,
    domain_rules: Vec<DomainRule>,
    trie4: Trie4,
    trie6: Trie6,
    /// Address → (domain rule index, expiry).
    hosts: HashMap<IpAddr, Vec<(usize, Instant)>>,
}

/// The resolver's sink for one run.
pub struct DnsAllowMap {
    slot: u32,
    allow: Mutex<Table>,
    /// `net.after_taint` names: their answers also go into `NET_TAINT4/6`.
    after_taint: Option<Mutex<Table>>,
    decisions: tokio::sync::mpsc::Sender<DnsDecision>,
    dropped: AtomicU64,
    /// `RUN_TAINT` and the run's cgroup id, when the policy has `fs.secret`.
    taint: Option<(TaintMap, u64)>,
}

/// What the sink writes for one run (see `BpfRuntime::dns_allow_map`).
pub struct DnsRules<'a> {
    /// The run's address rules (`net.allow` CIDRs), merged into each host entry.
    pub cidr: &'a [AddrRule],
    /// `net.allow` names.
    pub domains: &'a [DomainRule],
    /// `net.after_taint` CIDRs and exact names.
    pub after_taint_cidr: &'a [AddrRule],
    pub after_taint_domains: &'a [DomainRule],
}

type TaintMap = BpfHashMap<MapData, u64, TaintState>;

impl BpfRuntime {
    /// A sink writing resolved addresses of `rules.domains` into run `slot`'s allow
    /// trie, next to `rules.cidr` (merged into each host entry), and those of
    /// `rules.after_taint_domains` also into its after-taint tries; and the receiver of
    /// the resolver's decisions. With `taint_of` (the run's cgroup id, for a policy with
    /// `fs.secret`) the sink reads the run's taint flag from `RUN_TAINT`.
    pub fn dns_allow_map(
        &mut self,
        slot: u32,
        taint_of: Option<u64>,
        rules: &DnsRules<'_>,
    ) -> Result<(Arc<DnsAllowMap>, tokio::sync::mpsc::Receiver<DnsDecision>), BpfError> {
        let allow = Table::new(
            &self.maps.net_allow4,
            &self.maps.net_allow6,
            (net_names::MAP_NET_ALLOW4, net_names::MAP_NET_ALLOW6),
            rules.cidr,
            rules.domains,
        )?;
        let after_taint = if rules.after_taint_domains.is_empty() {
            None
        } else {
            Some(Mutex::new(Table::new(
                &self.maps.net_taint4,
                &self.maps.net_taint6,
                (net_names::MAP_NET_TAINT4, net_names::MAP_NET_TAINT6),
                rules.after_taint_cidr,
                rules.after_taint_domains,
            )?))
        };
        let taint = match taint_of {
            Some(cgroup_id) => {
                let name = fs_names::MAP_RUN_TAINT;
                let map = BpfHashMap::try_from(aya::maps::Map::HashMap(super::maps::dup(
                    self.maps.run_taint.map(),
                    name,
                )?))
                .map_err(|error| map_error("open", name, error))?;
                Some((map, cgroup_id))
            }
            None => None,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(DECISION_QUEUE);
        let map = Arc::new(DnsAllowMap {
            slot,
            allow: Mutex::new(allow),
            after_taint,
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
        self.maps
            .net_dns
            .insert(slot, NetDnsTarget { port4, port6 }, 0)
            .map_err(|error| map_error(format!("insert run slot {slot} into"), name, error))
    }
}

impl Table {
    /// A table on second handles of the tries `trie4`/`trie6` (called `names`).
    fn new(
        trie4: &super::maps::Trie4,
        trie6: &super::maps::Trie6,
        names: (&'static str, &'static str),
        cidr_rules: &[AddrRule],
        domain_rules: &[DomainRule],
    ) -> Result<Self, BpfError> {
        let trie4 = LpmTrie::try_from(aya::maps::Map::LpmTrie(super::maps::dup(
            trie4.map(),
            names.0,
        )?))
        .map_err(|error| map_error("open", names.0, error))?;
        let trie6 = LpmTrie::try_from(aya::maps::Map::LpmTrie(super::maps::dup(
            trie6.map(),
            names.1,
        )?))
        .map_err(|error| map_error("open", names.1, error))?;
        Ok(Self {
            cidr_rules: cidr_rules.to_vec(),
            domain_rules: domain_rules.to_vec(),
            trie4,
            trie6,
            hosts: HashMap::new(),
        })
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
        for table in self.tables() {
            if let Ok(mut t) = table.lock() {
                t.clear(self.slot);
            }
        }
    }

    fn expire(&self, now: Instant) {
        for table in self.tables() {
            if let Ok(mut t) = table.lock() {
                t.expire(self.slot, now);
            }
        }
    }

    fn tables(&self) -> impl Iterator<Item = &Mutex<Table>> {
        std::iter::once(&self.allow).chain(self.after_taint.as_ref())
    }
}

impl Table {
    /// Adds (or extends to `until`) host entries for `addrs` under domain rule `index`.
    fn add(
        &mut self,
        slot: u32,
        index: usize,
        addrs: &[IpAddr],
        until: Instant,
    ) -> Result<(), String> {
        for addr in addrs {
            let rules = self.hosts.entry(*addr).or_default();
            match rules.iter_mut().find(|(i, _)| *i == index) {
                Some((_, old)) => *old = (*old).max(until),
                None => rules.push((index, until)),
            }
            self.write(slot, *addr)?;
        }
        Ok(())
    }

    fn clear(&mut self, slot: u32) {
        let addrs: Vec<IpAddr> = self.hosts.keys().copied().collect();
        for addr in addrs {
            self.hosts.remove(&addr);
            let _ = self.write(slot, addr);
        }
    }

    fn expire(&mut self, slot: u32, now: Instant) {
        let mut changed = Vec::new();
        self.hosts.retain(|addr, rules| {
            let before = rules.len();
            rules.retain(|(_, until)| *until > now);
            if rules.len() != before {
                changed.push(*addr);
            }
            !rules.is_empty()
        });
        for addr in changed {
            if let Err(e) = self.write(slot, addr) {
                tracing::error!(%addr, error = %e, "dns allow map: cannot shrink an expired entry");
            }
        }
    }

    /// Writes `addr`'s host entry from the state: its live domain rules plus the CIDR
    /// rules containing it; removes the entry when nothing is left and no policy rule
    /// has exactly that host key.
    fn write(&mut self, slot: u32, addr: IpAddr) -> Result<(), String> {
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
        let live: Vec<usize> = self
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
        let remove = count == 0 || (!self.hosts.contains_key(&addr) && !exact_cidr);
        match addr {
            IpAddr::V4(a) => {
                let key = key4(slot, a, 32);
                if remove {
                    let _ = self.trie4.remove(&key);
                    Ok(())
                } else {
                    self.trie4.insert(&key, set, 0).map_err(|e| e.to_string())
                }
            }
            IpAddr::V6(a) => {
                let key = key6(slot, a, 128);
                if remove {
                    let _ = self.trie6.remove(&key);
                    Ok(())
                } else {
                    self.trie6.insert(&key, set, 0).map_err(|e| e.to_string())
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
        let poisoned = |_| "dns allow map lock poisoned".to_owned();
        let until = Instant::now() + ttl;
        let mut allow = self.allow.lock().map_err(poisoned)?;
        let index = allow
            .domain_rules
            .iter()
            .position(|d| d.written == rule)
            .ok_or_else(|| format!("{name}: rule `{rule}` is not a domain rule of this run"))?;
        allow.add(self.slot, index, addrs, until)?;
        // A net.after_taint name (exact, lower-case like `name`): a tainted run may
        // still reach these addresses.
        if let Some(table) = &self.after_taint {
            let mut t = table.lock().map_err(poisoned)?;
            let hits: Vec<usize> = t
                .domain_rules
                .iter()
                .enumerate()
                .filter(|(_, d)| d.pattern == name)
                .map(|(i, _)| i)
                .collect();
            for i in hits {
                t.add(self.slot, i, addrs, until)?;
            }
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

/// The audit record of a resolver decision: its decision and event (`dns`, or `denied`
/// for what the policy refused).
pub fn dns_record(d: DnsDecision) -> (Option<crate::audit::Decision>, crate::audit::AuditEvent) {
    use crate::audit::event::{Dns, DnsAnswered, DnsDenied, DnsFailed, DnsMalformed};
    use crate::audit::Decision;
    let ips = |a: &[IpAddr]| a.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let query = || "dns_query".to_owned();
    let denied = |op: &str, name, qtype, rule| DnsDenied {
        op: op.into(),
        name,
        qtype,
        rule,
        rcode: None,
        reason: None,
        addrs: None,
        would_rcode: None,
    };
    let rebinding = |name, qtype, rule, addrs: &[IpAddr], reason: &str| DnsDenied {
        reason: Some(reason.into()),
        addrs: Some(ips(addrs)),
        ..denied("dns_answer", name, qtype, rule)
    };
    match d {
        DnsDecision::Answered {
            name,
            qtype,
            rule,
            addrs,
            allowed,
            ttl,
            rcode,
        } => {
            let answered = DnsAnswered {
                op: query(),
                name,
                qtype,
                rule,
                addrs: ips(&addrs),
                allowed,
                ttl_s: ttl.as_secs(),
                rcode,
            };
            (Some(Decision::Allow), Dns::Answered(answered).into())
        }
        DnsDecision::Refused {
            name,
            qtype,
            reason,
            rcode,
        } => {
            let refused = DnsDenied {
                rcode: Some(rcode),
                ..denied("dns_query", name, qtype, reason)
            };
            (Some(Decision::Deny), refused.into())
        }
        DnsDecision::WouldRefuse {
            name,
            qtype,
            reason,
        } => {
            let refused = DnsDenied {
                would_rcode: Some("REFUSED".into()),
                ..denied("dns_query", name, qtype, reason)
            };
            (Some(Decision::WouldDeny), refused.into())
        }
        DnsDecision::RebindingDropped {
            name,
            qtype,
            rule,
            addrs,
        } => {
            let why =
                "rebinding: private, loopback or link-local address not allowed by the policy";
            let dropped = rebinding(name, qtype, rule, &addrs, why);
            (Some(Decision::Deny), dropped.into())
        }
        DnsDecision::WouldDropRebinding {
            name,
            qtype,
            rule,
            addrs,
        } => {
            let dropped = rebinding(name, qtype, rule, &addrs, "rebinding");
            (Some(Decision::WouldDeny), dropped.into())
        }
        DnsDecision::Failed {
            name,
            qtype,
            reason,
        } => {
            let failed = DnsFailed {
                op: query(),
                name,
                qtype,
                error: reason,
                rcode: "SERVFAIL".into(),
            };
            (None, Dns::Failed(failed).into())
        }
        DnsDecision::Malformed { peer, reason } => {
            let malformed = DnsMalformed {
                op: query(),
                peer: peer.to_string(),
                error: reason,
            };
            (None, Dns::Malformed(malformed).into())
        }
    }
}
