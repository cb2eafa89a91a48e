//! Network layer, userspace side: compiles the Plan's network rules into the per-run LPM
//! trie entries and flags the cgroup programs read (`agentd-ebpf/src/net.rs`), attaches
//! those programs to the run's v2 cgroup, and decodes their denial records.
//!
//! Rules are merged here, not in the kernel: every distinct CIDR of the policy becomes one
//! trie entry carrying all (port range, protocol) rules whose CIDR contains it, so the
//! kernel's single longest-prefix lookup sees every rule that applies.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use agentd_common::net::{
    names as net_names, NetEvent, NetPortRule, NetRuleSet, NetRunEntry, NET_FLAG_AUDIT_ONLY,
    NET_FLAG_DNS_REDIRECT, NET_FLAG_FILTER_BIND, NET_FLAG_FILTER_CONNECT, NET_FLAG_RAW_ALLOWED,
    NET_FLAG_TAINT_CHECK, NET_KEY4_LEN, NET_KEY6_LEN, NET_OP_BIND, NET_OP_CONNECT, NET_OP_LISTEN,
    NET_OP_SENDMSG, NET_OP_SOCKET, NET_PROTO_TCP, NET_PROTO_UDP, NET_REASON_NETLINK,
    NET_REASON_NO_RULE, NET_REASON_NO_RUN, NET_REASON_PROTO, NET_REASON_RAW, NET_REASON_TAINTED,
    NET_RULES_PER_ENTRY, NET_SLOT_BITS, NET_TABLE_SHARED, NET_VERDICT_KILL, NET_VERDICT_WOULD_DENY,
};
use agentd_common::syscalls::HOOK_LISTEN;
use agentd_common::EventHeader;
use aya::maps::lpm_trie::Key;
use core::mem::offset_of;

use crate::audit::event::NetDenied;

use super::run::NetKeys;
use super::{map_error, progs, BpfError, BpfRuntime, RunBpf};

/// ELF sections of the network programs, as used in messages.
pub mod section {
    pub const CONNECT4: &str = "cgroup/connect4";
    pub const CONNECT6: &str = "cgroup/connect6";
    pub const SENDMSG4: &str = "cgroup/sendmsg4";
    pub const SENDMSG6: &str = "cgroup/sendmsg6";
    pub const BIND4: &str = "cgroup/bind4";
    pub const BIND6: &str = "cgroup/bind6";
    pub const SOCK_CREATE: &str = "cgroup/sock_create";
    pub const RECVMSG4: &str = "cgroup/recvmsg4";
    pub const RECVMSG6: &str = "cgroup/recvmsg6";
}

/// One allow rule as the kernel sees it: a CIDR, a port range and protocols.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddrRule {
    /// Network address (bits beyond `prefix` are zero).
    pub addr: IpAddr,
    pub prefix: u8,
    /// Inclusive port range.
    pub ports: (u16, u16),
    /// `NET_PROTO_*` bits.
    pub protos: u8,
    /// What the user wrote, for messages and audit records.
    pub written: String,
}

/// What the network programs enforce for one run (built by the Plan).
#[derive(Debug, Clone, Default)]
pub struct NetRequest {
    /// `mode: audit`: record would-be denials, deny nothing.
    pub audit_only: bool,
    /// `net.raw: true`: raw, packet and non-TCP/UDP inet sockets may be created.
    pub raw_allowed: bool,
    /// connect/sendmsg allow rules; `None` leaves them unrestricted.
    pub connect: Option<Vec<AddrRule>>,
    /// bind allow rules; `None` leaves bind unrestricted.
    pub bind: Option<Vec<AddrRule>>,
    /// Domain rules: the run's resolver answers them and its answers add host entries
    /// (`net_dns`).
    pub domains: Vec<super::net_dns::DomainRule>,
    /// The run has its own resolver, to which port-53 traffic goes: when there are
    /// domain rules, and in `mode: learn` (which records every name asked).
    pub resolver: bool,
    /// The policy has `fs.secret`: once the run is tainted, connect/sendmsg must also
    /// match `after_taint`.
    pub taint_check: bool,
    /// `net.after_taint` addresses and CIDRs: what a tainted run may still reach.
    pub after_taint: Vec<AddrRule>,
    /// `net.after_taint` exact names (each also allowed by a `net.allow` name): the
    /// resolver still answers them once the run is tainted, and their addresses go into
    /// the after-taint tries too.
    pub after_taint_domains: Vec<super::net_dns::DomainRule>,
}

impl NetRequest {
    fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.audit_only {
            flags |= NET_FLAG_AUDIT_ONLY;
        }
        if self.raw_allowed {
            flags |= NET_FLAG_RAW_ALLOWED;
        }
        if self.connect.is_some() {
            flags |= NET_FLAG_FILTER_CONNECT;
        }
        if self.bind.is_some() {
            flags |= NET_FLAG_FILTER_BIND;
        }
        if self.resolver {
            flags |= NET_FLAG_DNS_REDIRECT;
        }
        if self.taint_check {
            flags |= NET_FLAG_TAINT_CHECK;
        }
        flags
    }
}

/// `NET_PROTO_*` bits of "tcp", "udp" or both.
pub fn proto_bits(tcp: bool, udp: bool) -> u8 {
    (if tcp { NET_PROTO_TCP } else { 0 }) | (if udp { NET_PROTO_UDP } else { 0 })
}

/// Why rules could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{count} port/protocol rules apply to {cidr}, at most {NET_RULES_PER_ENTRY} fit one map entry")]
    TooManyRules { cidr: String, count: usize },
}

/// One trie entry: a CIDR and every rule that applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub addr: IpAddr,
    pub prefix: u8,
    pub rules: NetRuleSet,
}

/// Merges `rules` into trie entries: one per distinct CIDR, carrying every rule whose
/// CIDR contains it. IPv4 and IPv6 entries are returned together; the caller splits them.
pub fn compile(rules: &[AddrRule]) -> Result<Vec<Entry>, CompileError> {
    // Rules by their (masked) CIDR, so that the rules containing a CIDR are found by one
    // lookup per distinct prefix length rather than by testing every rule: a policy's
    // 1,000-rule allow list is compiled at each launch.
    let mut by_cidr: std::collections::HashMap<(IpAddr, u8), Vec<usize>> =
        std::collections::HashMap::with_capacity(rules.len());
    let mut prefixes: Vec<(bool, u8)> = Vec::new();
    for (index, r) in rules.iter().enumerate() {
        by_cidr
            .entry((masked(r.addr, r.prefix), r.prefix))
            .or_default()
            .push(index);
        prefixes.push((r.addr.is_ipv4(), r.prefix));
    }
    prefixes.sort_unstable();
    prefixes.dedup();
    let mut cidrs: Vec<(IpAddr, u8)> = rules.iter().map(|r| (r.addr, r.prefix)).collect();
    cidrs.sort();
    cidrs.dedup();
    let mut out = Vec::with_capacity(cidrs.len());
    let mut applying: Vec<usize> = Vec::new();
    for (addr, prefix) in cidrs {
        applying.clear();
        for &(_, p) in prefixes
            .iter()
            .filter(|(v4, p)| *v4 == addr.is_ipv4() && *p <= prefix)
        {
            if let Some(indices) = by_cidr.get(&(masked(addr, p), p)) {
                applying.extend(indices.iter().filter(|&&i| {
                    let r = &rules[i];
                    contains(r.addr, r.prefix, addr, prefix)
                }));
            }
        }
        // In policy order, as the programs scan an entry's rules in order.
        applying.sort_unstable();
        if applying.len() > NET_RULES_PER_ENTRY {
            return Err(CompileError::TooManyRules {
                cidr: format!("{addr}/{prefix}"),
                count: applying.len(),
            });
        }
        let mut set = NetRuleSet::EMPTY;
        for (slot, &index) in applying.iter().enumerate() {
            let r = &rules[index];
            set.rules[slot] = NetPortRule {
                port_lo: r.ports.0,
                port_hi: r.ports.1,
                protos: r.protos,
                _pad: 0,
                rule: u16::try_from(index).unwrap_or(u16::MAX),
            };
        }
        set.count = applying.len() as u32;
        out.push(Entry {
            addr,
            prefix,
            rules: set,
        });
    }
    Ok(out)
}

/// `addr` with the bits past `prefix` cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & keep).into())
        }
        IpAddr::V6(a) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & keep).into())
        }
    }
}

/// Whether the CIDR `outer/outer_prefix` contains `inner/inner_prefix` (same family).
pub(super) fn contains(outer: IpAddr, outer_prefix: u8, inner: IpAddr, inner_prefix: u8) -> bool {
    if outer_prefix > inner_prefix {
        return false;
    }
    match (outer, inner) {
        (IpAddr::V4(o), IpAddr::V4(i)) => {
            let keep = u32::MAX
                .checked_shl(32 - u32::from(outer_prefix))
                .unwrap_or(0);
            u32::from(i) & keep == u32::from(o)
        }
        (IpAddr::V6(o), IpAddr::V6(i)) => {
            let keep = u128::MAX
                .checked_shl(128 - u32::from(outer_prefix))
                .unwrap_or(0);
            u128::from(i) & keep == u128::from(o)
        }
        _ => false,
    }
}

pub(super) fn key4(slot: u32, addr: Ipv4Addr, prefix: u8) -> Key<[u8; NET_KEY4_LEN]> {
    let mut data = [0u8; NET_KEY4_LEN];
    data[..4].copy_from_slice(&slot.to_be_bytes());
    data[4..].copy_from_slice(&addr.octets());
    Key::new(NET_SLOT_BITS + u32::from(prefix), data)
}

pub(super) fn key6(slot: u32, addr: Ipv6Addr, prefix: u8) -> Key<[u8; NET_KEY6_LEN]> {
    let mut data = [0u8; NET_KEY6_LEN];
    data[..4].copy_from_slice(&slot.to_be_bytes());
    data[4..].copy_from_slice(&addr.octets());
    Key::new(NET_SLOT_BITS + u32::from(prefix), data)
}

impl BpfRuntime {
    /// Writes `request` for `run` into the maps, then attaches the network programs to
    /// its v2 cgroup directory `cgroup_dir`. Until the run's `NET_RUNS` entry is written
    /// (last), the programs deny everything they check. The entries go with
    /// [`BpfRuntime::release`].
    pub fn enforce_net(
        &mut self,
        run: &mut RunBpf,
        cgroup_dir: &Path,
        request: &NetRequest,
    ) -> Result<(), BpfError> {
        let slot = run.slot();
        let table = if request.resolver {
            // Its resolver adds host entries as names resolve: its own table, whose
            // release scans.
            run.net_keys = None;
            self.write_rules(slot, request, &mut None)?;
            slot
        } else {
            self.shared_table(run, request)?
        };
        let cgroup = File::open(cgroup_dir).map_err(|error| BpfError::Cgroup {
            path: cgroup_dir.to_path_buf(),
            error,
        })?;
        // With DNS redirection, recvmsg4/6 make the resolver's replies show the
        // original destination as their source.
        let recvmsg = progs::NET_RECVMSG.iter().filter(|_| request.resolver);
        for p in progs::NET.iter().chain(recvmsg) {
            self.attach_to_run(run, p, cgroup_dir, &cgroup)?;
        }
        let flags = request.flags();
        let entry = NetRunEntry { flags, table };
        self.maps.net_runs.insert(slot, entry, 0).map_err(|error| {
            map_error(
                format!("insert run slot {slot} (flags {flags:#x}, rule table {table:#x}) into"),
                net_names::MAP_NET_RUNS,
                error,
            )
        })?;
        if flags & NET_FLAG_FILTER_BIND != 0 {
            // The kernel's own bind on listen() runs no cgroup hook: the sys_exit
            // program judges it after the call.
            self.enable_syscall_hooks(run, HOOK_LISTEN, "the listen() check of net.bind")?;
        }
        Ok(())
    }

    /// The shared table with `request`'s rules (see [`super::net_tables`]), written now
    /// if no run holds it and none lingers; `run` holds it from here on, its release
    /// lets go of it.
    fn shared_table(&mut self, run: &mut RunBpf, request: &NetRequest) -> Result<u32, BpfError> {
        if let Some(id) = self.net_tables.share(request) {
            run.net_table = Some(id);
            return Ok(id);
        }
        let id = self.net_tables.free_id().ok_or(BpfError::NoNetTable)?;
        let mut keys = Some(NetKeys::default());
        let mut written = self.write_rules(id, request, &mut keys);
        if written.is_err() && self.net_tables.idle() > 0 {
            // The tries may be full of lingering tables: they go, and the rules are
            // written again.
            self.clear_net_keys(id.to_be_bytes(), keys.take());
            let idle = self.net_tables.reap(std::time::Instant::now(), true);
            self.remove_net_tables(idle);
            keys = Some(NetKeys::default());
            written = self.write_rules(id, request, &mut keys);
        }
        if let Err(e) = written {
            self.clear_net_keys(id.to_be_bytes(), keys);
            return Err(e);
        }
        self.net_tables.add(id, request, keys.unwrap_or_default());
        run.net_table = Some(id);
        Ok(id)
    }

    /// Compiles `request`'s rules into the tries under rule table `table`. The keys
    /// written go into `keys` when it is `Some`, those of a batch that failed part way
    /// included (the caller removes them).
    fn write_rules(
        &mut self,
        table: u32,
        request: &NetRequest,
        keys: &mut Option<NetKeys>,
    ) -> Result<(), BpfError> {
        let tables = [
            (request.connect.as_deref(), NetTable::Allow),
            (request.bind.as_deref(), NetTable::Bind),
            (
                Some(request.after_taint.as_slice()).filter(|r| !r.is_empty()),
                NetTable::AfterTaint,
            ),
        ];
        for (rules, which) in tables {
            let Some(rules) = rules else { continue };
            let (map4, map6) = which.names();
            let entries = compile(rules)?;
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            for e in entries {
                match e.addr {
                    IpAddr::V4(a) => v4.push((key4(table, a, e.prefix), e.rules)),
                    IpAddr::V6(a) => v6.push((key6(table, a, e.prefix), e.rules)),
                }
            }
            let (n4, n6) = (v4.len(), v6.len());
            // Recorded before the insert: a batch that fails part way leaves the entries
            // before the failing one, which must be removed too.
            if let Some(keys) = keys.as_mut() {
                keys.0.push((
                    which,
                    v4.iter().map(|(k, _)| *k).collect(),
                    v6.iter().map(|(k, _)| *k).collect(),
                ));
            }
            super::maps::trie_insert_all(which.trie4(&mut self.maps), &v4).map_err(|error| {
                map_error(
                    format!("insert {n4} entries of rule table {table:#x} into"),
                    map4,
                    error,
                )
            })?;
            super::maps::trie_insert_all(which.trie6(&mut self.maps), &v6).map_err(|error| {
                map_error(
                    format!("insert {n6} entries of rule table {table:#x} into"),
                    map6,
                    error,
                )
            })?;
        }
        Ok(())
    }

    /// Removes the entries of the shared tables no re-adopted run points at: what an
    /// earlier daemon kept lingering.
    pub(super) fn sweep_net_tables(&mut self) {
        let known = &self.net_tables;
        let mut removed = 0;
        remove_rule_entries_where(
            &mut self.maps,
            |data| {
                let id = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                id >= NET_TABLE_SHARED && !known.knows(id)
            },
            |what, r| match r {
                Ok(n) => removed += n,
                Err(e) => tracing::warn!("remove stale shared rule tables from {what}: {e}"),
            },
        );
        if removed > 0 {
            tracing::info!("removed {removed} entries of shared net rule tables no run holds");
        }
    }

    /// Removes the shared tables `doomed` from the tries.
    pub(super) fn remove_net_tables(&mut self, doomed: Vec<super::net_tables::Doomed>) {
        for d in doomed {
            self.clear_net_keys(d.id.to_be_bytes(), d.keys);
        }
    }

    /// Removes the entries of the rule table whose key prefix is `prefix`: `keys` when
    /// they are known, else every entry with that prefix (a scan of the tries).
    pub(super) fn clear_net_keys(&mut self, prefix: [u8; 4], keys: Option<NetKeys>) {
        let m = &mut self.maps;
        let ok = |what: &str, r: Result<(), aya::maps::MapError>| match r {
            Err(e) if !super::maps::is_gone(&e) => tracing::warn!(
                "rule table {:#x}: remove from {what}: {e}",
                u32::from_be_bytes(prefix)
            ),
            _ => {}
        };
        match keys {
            // The keys it wrote, and only those: no scan of the other tables' entries
            // (a scan of a trie walks it once per key it returns).
            Some(NetKeys(tables)) => {
                for (table, v4, v6) in tables {
                    let (name4, name6) = table.names();
                    ok(name4, super::maps::trie_remove_keys(table.trie4(m), &v4));
                    ok(name6, super::maps::trie_remove_keys(table.trie6(m), &v6));
                }
            }
            None => {
                // Batched: a 1,000-rule allow list goes in a few calls, whatever the
                // other tables hold.
                remove_rule_entries_where(
                    m,
                    |data| data[..4] == prefix,
                    |what, r| ok(what, r.map(|_| ())),
                );
            }
        }
    }
}

/// Removes, from each of the six rule tries, every entry whose key data `doomed` holds
/// (keys with a rule table, at least [`NET_SLOT_BITS`] long); `each` gets every trie's
/// name and how many went.
fn remove_rule_entries_where(
    m: &mut super::maps::Maps,
    doomed: impl Fn(&[u8]) -> bool,
    mut each: impl FnMut(&'static str, Result<usize, aya::maps::MapError>),
) {
    let of = |len: u32, data: &[u8]| len >= NET_SLOT_BITS && doomed(data);
    for table in NetTable::ALL {
        let (name4, name6) = table.names();
        let trie4 =
            super::maps::trie_remove_where(table.trie4(m), |k| of(k.prefix_len(), &k.data()));
        each(name4, trie4);
        let trie6 =
            super::maps::trie_remove_where(table.trie6(m), |k| of(k.prefix_len(), &k.data()));
        each(name6, trie6);
    }
}

/// The three rule tables, each an IPv4 and an IPv6 trie.
#[derive(Debug, Clone, Copy)]
pub(super) enum NetTable {
    /// connect/sendmsg allow rules.
    Allow,
    /// bind allow rules.
    Bind,
    /// `net.after_taint`.
    AfterTaint,
}

impl NetTable {
    const ALL: [NetTable; 3] = [NetTable::Allow, NetTable::Bind, NetTable::AfterTaint];

    pub(super) fn names(self) -> (&'static str, &'static str) {
        match self {
            NetTable::Allow => (net_names::MAP_NET_ALLOW4, net_names::MAP_NET_ALLOW6),
            NetTable::Bind => (net_names::MAP_NET_BIND4, net_names::MAP_NET_BIND6),
            NetTable::AfterTaint => (net_names::MAP_NET_TAINT4, net_names::MAP_NET_TAINT6),
        }
    }

    pub(super) fn trie4(self, maps: &mut super::maps::Maps) -> &mut super::maps::Trie4 {
        match self {
            NetTable::Allow => &mut maps.net_allow4,
            NetTable::Bind => &mut maps.net_bind4,
            NetTable::AfterTaint => &mut maps.net_taint4,
        }
    }

    pub(super) fn trie6(self, maps: &mut super::maps::Maps) -> &mut super::maps::Trie6 {
        match self {
            NetTable::Allow => &mut maps.net_allow6,
            NetTable::Bind => &mut maps.net_bind6,
            NetTable::AfterTaint => &mut maps.net_taint6,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Denial records
// ---------------------------------------------------------------------------------------

/// A socket operation the network programs denied (or would have, in audit mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDenial {
    pub pid: u32,
    pub tgid: u32,
    pub run_slot: u32,
    pub cgroup_id: u64,
    pub op: u32,
    /// `NET_VERDICT_*`: denied, killed (`listen`: the call had succeeded) or, in audit
    /// mode, would have been denied.
    pub verdict: u32,
    pub reason: u32,
    pub family: u32,
    pub sock_type: u32,
    pub protocol: u32,
    pub port: u16,
    pub addr: [u8; 16],
}

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// The `rule` of a killed `listen()`.
pub const LISTEN_RULE: &str = "no net.bind rule allows the wildcard address, port 0: listen() on a socket never bound, which the kernel binds to a port it picks";

/// The `rule` of a denial because the run is tainted (audit records, the resolver).
pub const TAINTED_RULE: &str = "tainted: no after_taint rule";

impl NetDenial {
    /// Decodes a `NetEvent` record (its header already checked by the caller).
    pub fn decode(header: &EventHeader, record: &[u8]) -> Option<Self> {
        let u32_at = |off: usize| -> Option<u32> {
            let b = record.get(off..off + 4)?;
            Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let mut addr = [0u8; 16];
        addr.copy_from_slice(
            record.get(offset_of!(NetEvent, addr)..offset_of!(NetEvent, addr) + 16)?,
        );
        Some(Self {
            pid: header.pid,
            tgid: header.tgid,
            run_slot: header.run_slot,
            cgroup_id: header.cgroup_id,
            op: u32_at(offset_of!(NetEvent, op))?,
            verdict: u32_at(offset_of!(NetEvent, verdict))?,
            reason: u32_at(offset_of!(NetEvent, reason))?,
            family: u32_at(offset_of!(NetEvent, family))?,
            sock_type: u32_at(offset_of!(NetEvent, sock_type))?,
            protocol: u32_at(offset_of!(NetEvent, protocol))?,
            port: u32_at(offset_of!(NetEvent, port))? as u16,
            addr,
        })
    }

    /// Audit mode: the process saw nothing; enforce mode would have refused it.
    pub fn would_deny(&self) -> bool {
        self.verdict == NET_VERDICT_WOULD_DENY
    }

    /// The call had succeeded and the process was killed (`listen`).
    pub fn killed(&self) -> bool {
        self.verdict == NET_VERDICT_KILL
    }

    /// `deny`, `kill` or `would_deny` as an audit decision.
    pub fn decision(&self) -> crate::audit::Decision {
        if self.would_deny() {
            crate::audit::Decision::WouldDeny
        } else if self.killed() {
            crate::audit::Decision::Kill
        } else {
            crate::audit::Decision::Deny
        }
    }

    /// `connect`, `sendmsg`, `bind`, `socket` or `listen`.
    pub fn op_name(&self) -> &'static str {
        match self.op {
            NET_OP_CONNECT => "connect",
            NET_OP_SENDMSG => "sendmsg",
            NET_OP_BIND => "bind",
            NET_OP_SOCKET => "socket",
            NET_OP_LISTEN => "listen",
            _ => "unknown",
        }
    }

    /// The destination (or bind) address; `None` for `socket`.
    pub fn addr(&self) -> Option<IpAddr> {
        match (self.op, self.family) {
            (NET_OP_SOCKET, _) => None,
            (_, AF_INET) => Some(IpAddr::V4(Ipv4Addr::new(
                self.addr[0],
                self.addr[1],
                self.addr[2],
                self.addr[3],
            ))),
            (_, AF_INET6) => Some(IpAddr::V6(Ipv6Addr::from(self.addr))),
            _ => None,
        }
    }

    fn proto_name(&self) -> String {
        match (self.family, self.protocol) {
            (AF_INET | AF_INET6, 6) => "tcp".into(),
            (AF_INET | AF_INET6, 17) => "udp".into(),
            (AF_INET | AF_INET6, 1) => "icmp".into(),
            (AF_INET | AF_INET6, 58) => "icmpv6".into(),
            (_, p) => p.to_string(),
        }
    }

    fn rule(&self) -> &'static str {
        if self.op == NET_OP_LISTEN {
            return LISTEN_RULE;
        }
        match self.reason {
            NET_REASON_NO_RULE => "no rule",
            NET_REASON_NO_RUN => "no rule (cgroup not registered with a run)",
            NET_REASON_RAW => "no rule (raw, packet and non-tcp/udp sockets need net.raw: true)",
            NET_REASON_NETLINK => "no rule (netlink other than NETLINK_ROUTE)",
            NET_REASON_PROTO => "no rule (only tcp and udp can be allowed)",
            NET_REASON_TAINTED => TAINTED_RULE,
            _ => "no rule",
        }
    }

    /// The `denied` audit record.
    pub fn audit_event(&self) -> NetDenied {
        let addr = self.addr();
        NetDenied {
            op: self.op_name().into(),
            proto: self.proto_name(),
            rule: self.rule().into(),
            // The process saw no error when the run only audits.
            errno: (!self.would_deny() && !self.killed()).then(|| "EPERM".into()),
            pid: self.tgid,
            tid: self.pid,
            run_slot: self.run_slot,
            dst: addr.map(|a| a.to_string()),
            port: addr.map(|_| self.port),
            family: addr.is_none().then(|| family_name(self.family)),
            sock_type: addr.is_none().then(|| type_name(self.sock_type)),
            would_errno: (self.would_deny() && self.op != NET_OP_LISTEN).then(|| "EPERM".into()),
            signal: self.killed().then(|| "SIGKILL".into()),
            would_signal: (self.would_deny() && self.op == NET_OP_LISTEN).then(|| "SIGKILL".into()),
        }
    }
}

fn family_name(f: u32) -> String {
    match f {
        2 => "AF_INET".into(),
        10 => "AF_INET6".into(),
        16 => "AF_NETLINK".into(),
        17 => "AF_PACKET".into(),
        other => other.to_string(),
    }
}

fn type_name(t: u32) -> String {
    match t & 0xf {
        1 => "SOCK_STREAM".into(),
        2 => "SOCK_DGRAM".into(),
        3 => "SOCK_RAW".into(),
        5 => "SOCK_SEQPACKET".into(),
        10 => "SOCK_PACKET".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rule(addr: &str, prefix: u8, lo: u16, hi: u16, protos: u8) -> AddrRule {
        AddrRule {
            addr: addr.parse().unwrap(),
            prefix,
            ports: (lo, hi),
            protos,
            written: format!("{addr}/{prefix}:{lo}-{hi}"),
        }
    }

    #[test]
    fn a_killed_listen_names_the_signal_and_no_errno() {
        let mut d = NetDenial {
            pid: 8,
            tgid: 7,
            run_slot: 1,
            cgroup_id: 2,
            op: NET_OP_LISTEN,
            verdict: NET_VERDICT_KILL,
            reason: NET_REASON_NO_RULE,
            family: AF_INET6,
            sock_type: 1,
            protocol: 6,
            port: 0,
            addr: [0; 16],
        };
        let e = d.audit_event();
        assert_eq!(e.op, "listen");
        assert_eq!(e.rule, LISTEN_RULE);
        assert_eq!(e.errno, None);
        assert_eq!(e.signal.as_deref(), Some("SIGKILL"));
        assert_eq!(e.dst.as_deref(), Some("::"));
        assert_eq!(e.port, Some(0));
        d.verdict = NET_VERDICT_WOULD_DENY;
        let e = d.audit_event();
        assert_eq!((e.errno, e.signal, e.would_errno), (None, None, None));
        assert_eq!(e.would_signal.as_deref(), Some("SIGKILL"));
    }

    #[test]
    fn less_specific_rules_merge_into_more_specific_entries() {
        let rules = [
            rule("0.0.0.0", 0, 443, 443, NET_PROTO_TCP),
            rule("127.0.0.0", 8, 53, 53, NET_PROTO_UDP),
            rule("127.0.0.1", 32, 8000, 8000, NET_PROTO_TCP),
            rule("::1", 128, 9000, 9000, NET_PROTO_TCP),
        ];
        let entries = compile(&rules).unwrap();
        assert_eq!(entries.len(), 4);
        let find = |a: &str, p: u8| {
            entries
                .iter()
                .find(|e| e.addr == a.parse::<IpAddr>().unwrap() && e.prefix == p)
                .unwrap()
        };
        let host = find("127.0.0.1", 32);
        assert_eq!(host.rules.count, 3);
        let ports: Vec<u16> = host.rules.rules[..3].iter().map(|r| r.port_lo).collect();
        assert_eq!(ports, [443, 53, 8000]);
        assert_eq!(find("127.0.0.0", 8).rules.count, 2);
        assert_eq!(find("0.0.0.0", 0).rules.count, 1);
        // v4 rules never leak into v6 entries.
        assert_eq!(find("::1", 128).rules.count, 1);
    }

    /// The rules containing each CIDR, found by testing every rule (what `compile`'s
    /// lookup by prefix length must agree with).
    fn compile_by_scan(rules: &[AddrRule]) -> Vec<(IpAddr, u8, Vec<u16>)> {
        let mut cidrs: Vec<(IpAddr, u8)> = rules.iter().map(|r| (r.addr, r.prefix)).collect();
        cidrs.sort();
        cidrs.dedup();
        cidrs
            .into_iter()
            .map(|(addr, prefix)| {
                let applying = rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| contains(r.addr, r.prefix, addr, prefix))
                    .map(|(i, _)| i as u16)
                    .collect();
                (addr, prefix, applying)
            })
            .collect()
    }

    #[test]
    fn compile_finds_the_rules_a_scan_of_every_rule_finds() {
        let mut rules = Vec::new();
        for i in 0..400u32 {
            let (a, b) = ((i * 7) % 5, (i * 13) % 11);
            let prefix = [8, 16, 24, 32, 32, 20][(i % 6) as usize];
            rules.push(rule(
                &format!("10.{a}.{b}.{}", i % 3),
                prefix,
                1,
                1,
                NET_PROTO_TCP,
            ));
        }
        rules.push(rule("0.0.0.0", 0, 443, 443, NET_PROTO_TCP));
        rules.push(rule("10.1.2.3", 8, 80, 80, NET_PROTO_TCP));
        rules.push(rule("::1", 128, 80, 80, NET_PROTO_TCP));
        rules.push(rule("::", 0, 53, 53, NET_PROTO_UDP));
        let mut kept = Vec::new();
        let mut count = std::collections::HashMap::new();
        for r in rules {
            // Stay below the per-entry limit: the scan is the reference, not the limit.
            let n = rules_containing(&kept, &r);
            let c = count.entry((r.addr, r.prefix)).or_insert(0);
            if n < NET_RULES_PER_ENTRY && *c < 4 {
                *c += 1;
                kept.push(r);
            }
        }
        let compiled: Vec<(IpAddr, u8, Vec<u16>)> = compile(&kept)
            .unwrap()
            .into_iter()
            .map(|e| {
                let rules = e.rules.rules[..e.rules.count as usize]
                    .iter()
                    .map(|r| r.rule)
                    .collect();
                (e.addr, e.prefix, rules)
            })
            .collect();
        assert!(compiled.len() > 50);
        assert_eq!(compiled, compile_by_scan(&kept));
    }

    fn rules_containing(rules: &[AddrRule], r: &AddrRule) -> usize {
        rules
            .iter()
            .filter(|o| contains(o.addr, o.prefix, r.addr, r.prefix))
            .count()
    }

    #[test]
    fn too_many_rules_for_one_entry_is_an_error() {
        let rules: Vec<AddrRule> = (0..=NET_RULES_PER_ENTRY as u16)
            .map(|p| rule("10.0.0.1", 32, p + 1, p + 1, NET_PROTO_TCP))
            .collect();
        assert!(matches!(
            compile(&rules),
            Err(CompileError::TooManyRules { count: 33, .. })
        ));
    }

    #[test]
    fn net_event_decodes_into_an_audit_record() {
        use agentd_common::net::{EVENT_KIND_NET, NET_VERDICT_DENY};
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let raw = NetEvent {
            header: EventHeader {
                kind: EVENT_KIND_NET,
                run_slot: 0,
                tgid: 42,
                pid: 43,
                cgroup_id: 7,
                ktime_ns: 1,
            },
            op: NET_OP_CONNECT,
            verdict: NET_VERDICT_DENY,
            reason: NET_REASON_NO_RULE,
            family: AF_INET,
            sock_type: 1,
            protocol: 6,
            port: 8080,
            _pad: 0,
            addr,
        };
        // SAFETY: NetEvent is Pod (repr(C), no padding); viewing it as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw as *const NetEvent).cast::<u8>(),
                std::mem::size_of::<NetEvent>(),
            )
        };
        let crate::events::Event::Net(d) = crate::events::Event::from_record(bytes).unwrap() else {
            panic!("not a net event");
        };
        let v = serde_json::to_value(d.audit_event()).unwrap();
        assert_eq!(v["op"], "connect");
        assert_eq!(v["dst"], "127.0.0.1");
        assert_eq!(v["port"], 8080);
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["rule"], "no rule");
        assert_eq!(v["errno"], "EPERM");
        assert_eq!(v["pid"], 42);
        assert!(!d.would_deny());
        assert!(crate::events::Event::from_record(&bytes[..70]).is_err());
    }

    #[test]
    fn keys_start_with_the_slot() {
        let k = key4(7, Ipv4Addr::new(127, 0, 0, 1), 32);
        assert_eq!(k.prefix_len(), 64);
        assert_eq!(k.data(), [0, 0, 0, 7, 127, 0, 0, 1]);
        let k = key6(1, Ipv6Addr::LOCALHOST, 0);
        assert_eq!(k.prefix_len(), 32);
        assert_eq!(&k.data()[..4], &[0, 0, 0, 1]);
    }
}
