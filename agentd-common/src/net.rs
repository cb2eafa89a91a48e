//! Kernel-boundary types of the network layer: the per-run allow rules the cgroup
//! `connect4/6`, `sendmsg4/6` and `bind4/6` programs look up, the per-run flags, and the
//! ring-buffer record of a denial.
//!
//! Allow rules live in two LPM tries (IPv4 and IPv6). The key data starts with the run
//! slot (big-endian, so it is the first 32 bits of the prefix) followed by the address in
//! network order; the key's prefix length is `32 + CIDR prefix`. Userspace merges
//! less-specific rules into every more-specific entry, so the longest match alone carries
//! every (port range, protocol) rule that applies to an address.

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

/// Map and program names of the network layer.
pub mod names {
    /// `LpmTrie<[u8; 8], NetRuleSet>`: run slot + IPv4 address → connect/sendmsg rules.
    pub const MAP_NET_ALLOW4: &str = "NET_ALLOW4";
    /// `LpmTrie<[u8; 20], NetRuleSet>`: run slot + IPv6 address → connect/sendmsg rules.
    pub const MAP_NET_ALLOW6: &str = "NET_ALLOW6";
    /// `LpmTrie<[u8; 8], NetRuleSet>`: run slot + IPv4 address → bind rules.
    pub const MAP_NET_BIND4: &str = "NET_BIND4";
    /// `LpmTrie<[u8; 20], NetRuleSet>`: run slot + IPv6 address → bind rules.
    pub const MAP_NET_BIND6: &str = "NET_BIND6";
    /// `HashMap<u32, u32>`: run slot → `NET_FLAG_*` bits. A run without an entry is
    /// denied everything the attached programs check (fail closed).
    pub const MAP_NET_RUNS: &str = "NET_RUNS";
    /// `HashMap<u32, NetDnsTarget>`: run slot → where the run's DNS resolver listens.
    pub const MAP_NET_DNS: &str = "NET_DNS";
    /// `LruHashMap<u64, NetDnsOrigin>`: socket cookie → the destination of its last
    /// port-53 send/connect that was redirected to the run's resolver.
    pub const MAP_NET_DNS_ORIGIN: &str = "NET_DNS_ORIGIN";
    /// `cgroup/recvmsg4` program: replies from the resolver show the original source.
    pub const PROG_RECVMSG4: &str = "net_recvmsg4";
    /// `cgroup/recvmsg6` program.
    pub const PROG_RECVMSG6: &str = "net_recvmsg6";
    /// `LpmTrie<[u8; 8], NetRuleSet>`: run slot + IPv4 address → `net.after_taint` rules
    /// (what a tainted run may still reach; same key and value layout as the allow tries).
    pub const MAP_NET_TAINT4: &str = "NET_TAINT4";
    /// `LpmTrie<[u8; 20], NetRuleSet>`: run slot + IPv6 address → `net.after_taint` rules.
    pub const MAP_NET_TAINT6: &str = "NET_TAINT6";

    /// `cgroup/connect4` program.
    pub const PROG_CONNECT4: &str = "net_connect4";
    /// `cgroup/connect6` program.
    pub const PROG_CONNECT6: &str = "net_connect6";
    /// `cgroup/sendmsg4` program.
    pub const PROG_SENDMSG4: &str = "net_sendmsg4";
    /// `cgroup/sendmsg6` program.
    pub const PROG_SENDMSG6: &str = "net_sendmsg6";
    /// `cgroup/bind4` program.
    pub const PROG_BIND4: &str = "net_bind4";
    /// `cgroup/bind6` program.
    pub const PROG_BIND6: &str = "net_bind6";
    /// `cgroup/sock_create` program.
    pub const PROG_SOCK_CREATE: &str = "net_sock_create";
}

// ---------------------------------------------------------------------------------------
// Limits and constants
// ---------------------------------------------------------------------------------------

/// Entries of each allow trie (all runs together): 50 runs of 1,000 address rules each
/// fit. The tries are not preallocated, so unused capacity costs no kernel memory.
pub const NET_MAX_ENTRIES: u32 = 64 * 1024;
/// Most (port range, protocol) rules one trie entry can carry after merging.
pub const NET_RULES_PER_ENTRY: usize = 32;
/// Bytes of key data in the IPv4 tries: rule table (4) + address (4).
pub const NET_KEY4_LEN: usize = 8;
/// Bytes of key data in the IPv6 tries: rule table (4) + address (16).
pub const NET_KEY6_LEN: usize = 20;
/// Bits of the rule table ([`NetRunEntry::table`]) at the start of every key.
pub const NET_SLOT_BITS: u32 = 32;
/// [`NetRunEntry::table`] at or above this: a rule table shared by every run whose
/// policy has the same rules (and no resolver), kept by agentd by content. Below it, a
/// table is one run's own, numbered by its slot (a run whose resolver adds host entries
/// as names resolve has its own).
pub const NET_TABLE_SHARED: u32 = 1 << 31;

/// [`NetPortRule::protos`] bit: TCP.
pub const NET_PROTO_TCP: u8 = 1 << 0;
/// [`NetPortRule::protos`] bit: UDP.
pub const NET_PROTO_UDP: u8 = 1 << 1;

/// `NET_RUNS` flag: record would-be denials (`would_deny`) but allow everything.
pub const NET_FLAG_AUDIT_ONLY: u32 = 1 << 0;
/// `NET_RUNS` flag: raw, packet and non-TCP/UDP inet sockets may be created.
pub const NET_FLAG_RAW_ALLOWED: u32 = 1 << 1;
/// `NET_RUNS` flag: connect/sendmsg are checked against `NET_ALLOW4/6`.
pub const NET_FLAG_FILTER_CONNECT: u32 = 1 << 2;
/// `NET_RUNS` flag: bind is checked against `NET_BIND4/6`.
pub const NET_FLAG_FILTER_BIND: u32 = 1 << 3;

/// `NET_RUNS` flag: TCP and UDP traffic to port 53 (any address) is redirected to the
/// run's resolver (`NET_DNS`) in connect and sendmsg.
pub const NET_FLAG_DNS_REDIRECT: u32 = 1 << 4;
/// `NET_RUNS` flag: the policy has `fs.secret` entries. Once the run is tainted
/// (`RUN_TAINT`, see `crate::fsrules`), connect/sendmsg must also match `NET_TAINT4/6`
/// (`net.after_taint`), else they fail with `EPERM` ([`NET_REASON_TAINTED`]).
pub const NET_FLAG_TAINT_CHECK: u32 = 1 << 5;

/// The port DNS traffic is recognised by.
pub const DNS_PORT: u16 = 53;

/// [`super::EventHeader::kind`] of a [`NetEvent`].
pub const EVENT_KIND_NET: u32 = 4;

/// [`NetEvent::op`]: `connect(2)` (TCP, or UDP connect).
pub const NET_OP_CONNECT: u32 = 1;
/// [`NetEvent::op`]: `sendto`/`sendmsg` with a destination address (UDP).
pub const NET_OP_SENDMSG: u32 = 2;
/// [`NetEvent::op`]: `bind(2)`.
pub const NET_OP_BIND: u32 = 3;
/// [`NetEvent::op`]: `socket(2)`.
pub const NET_OP_SOCKET: u32 = 4;
/// [`NetEvent::op`]: `listen(2)` of a TCP socket the run never bound, which the kernel
/// binds itself to a port it picks on the wildcard address (no cgroup hook sees that
/// bind): judged after the call, as a bind of the wildcard address to port 0.
pub const NET_OP_LISTEN: u32 = 5;

/// [`NetEvent::verdict`]: the call failed with `EPERM`.
pub const NET_VERDICT_DENY: u32 = 1;
/// [`NetEvent::verdict`]: `mode: audit`; the call went through.
pub const NET_VERDICT_WOULD_DENY: u32 = 2;
/// [`NetEvent::verdict`]: the call had succeeded; the process was killed (`SIGKILL`)
/// on its way back to user space ([`NET_OP_LISTEN`]).
pub const NET_VERDICT_KILL: u32 = 3;

/// [`NetEvent::reason`]: no allow rule matches the address, port and protocol.
pub const NET_REASON_NO_RULE: u32 = 1;
/// [`NetEvent::reason`]: the cgroup or run slot is not registered (fail closed).
pub const NET_REASON_NO_RUN: u32 = 2;
/// [`NetEvent::reason`]: a raw, packet or non-TCP/UDP inet socket without `net.raw`.
pub const NET_REASON_RAW: u32 = 3;
/// [`NetEvent::reason`]: a netlink socket other than `NETLINK_ROUTE`.
pub const NET_REASON_NETLINK: u32 = 4;
/// [`NetEvent::reason`]: the protocol is neither TCP nor UDP.
pub const NET_REASON_PROTO: u32 = 5;
/// [`NetEvent::reason`]: the run is tainted (read an `fs.secret`) and no
/// `net.after_taint` rule matches the destination.
pub const NET_REASON_TAINTED: u32 = 6;

// ---------------------------------------------------------------------------------------
// Map values and records
// ---------------------------------------------------------------------------------------

/// One (port range, protocol) allow rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NetPortRule {
    /// First allowed port (host order), inclusive.
    pub port_lo: u16,
    /// Last allowed port (host order), inclusive.
    pub port_hi: u16,
    /// `NET_PROTO_*` bits.
    pub protos: u8,
    /// Explicit padding, always 0.
    pub _pad: u8,
    /// Index of the policy rule (in `net.allow` or `net.bind`) this came from.
    pub rule: u16,
}

/// Value of `NET_RUNS` (key: run slot): how the run's socket operations are judged.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NetRunEntry {
    /// `NET_FLAG_*`.
    pub flags: u32,
    /// The rule table its lookups key the tries with: its slot, or a shared table
    /// ([`NET_TABLE_SHARED`] and above).
    pub table: u32,
}

/// Value of the allow tries: every rule that applies to the entry's address range.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetRuleSet {
    /// Used entries of `rules` (at most [`NET_RULES_PER_ENTRY`]).
    pub count: u32,
    /// Explicit padding, always 0.
    pub _pad: u32,
    /// The rules; entries at `count` and beyond are unused.
    pub rules: [NetPortRule; NET_RULES_PER_ENTRY],
}

impl NetRuleSet {
    /// No rules.
    pub const EMPTY: Self = Self {
        count: 0,
        _pad: 0,
        rules: [NetPortRule {
            port_lo: 0,
            port_hi: 0,
            protos: 0,
            _pad: 0,
            rule: 0,
        }; NET_RULES_PER_ENTRY],
    };
}

/// Value of `NET_DNS`: the run's resolver listens on 127.0.0.1:`port4` and, when
/// `port6` is not 0, on [::1]:`port6` (UDP and TCP each).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetDnsTarget {
    /// Port on 127.0.0.1, host order.
    pub port4: u16,
    /// Port on ::1, host order; 0 when the resolver has no IPv6 socket (IPv6 sockets are
    /// then sent to ::ffff:127.0.0.1:`port4`).
    pub port6: u16,
}

/// Value of `NET_DNS_ORIGIN`: where a redirected DNS message was originally sent, as
/// the sock_addr context holds it (so `recvmsg4/6` can write it back as the reply's
/// source).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetDnsOrigin {
    /// `user_ip4` (IPv4 sockets) or the four `user_ip6` words (IPv6 sockets), network
    /// order.
    pub ip: [u32; 4],
    /// `user_port` (network order in the low 16 bits).
    pub port: u32,
    /// `AF_INET` or `AF_INET6`: the socket's family.
    pub family: u32,
}

/// Entries of `NET_DNS_ORIGIN` (least recently used sockets are forgotten first).
pub const NET_DNS_ORIGIN_ENTRIES: u32 = 16 * 1024;

/// Ring-buffer record of a denied (or, in audit mode, would-be denied) socket operation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetEvent {
    /// `kind` is [`EVENT_KIND_NET`].
    pub header: super::EventHeader,
    /// One of `NET_OP_*`.
    pub op: u32,
    /// One of `NET_VERDICT_*`.
    pub verdict: u32,
    /// One of `NET_REASON_*`.
    pub reason: u32,
    /// `AF_INET`, `AF_INET6`, … (for `socket`, the requested family).
    pub family: u32,
    /// Socket type (`SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_RAW`, …).
    pub sock_type: u32,
    /// Socket protocol (`IPPROTO_TCP`, `IPPROTO_UDP`, netlink family, …).
    pub protocol: u32,
    /// Destination (or bind) port, host order; 0 for `socket`.
    pub port: u32,
    /// Explicit padding, always 0.
    pub _pad: u32,
    /// Address in network order: IPv4 in the first 4 bytes, else IPv6. An IPv4-mapped
    /// IPv6 destination is reported as the IPv4 address with `family == AF_INET`.
    pub addr: [u8; 16],
}

/// Size of [`NetPortRule`] in bytes.
pub const NET_PORT_RULE_SIZE: usize = 8;
/// Size of [`NetRuleSet`] in bytes.
pub const NET_RULE_SET_SIZE: usize = 8 + NET_PORT_RULE_SIZE * NET_RULES_PER_ENTRY;
/// Size of [`NetEvent`] in bytes.
pub const NET_EVENT_SIZE: usize = 80;

const _: () = {
    use core::mem::{align_of, offset_of, size_of};

    assert!(size_of::<NetPortRule>() == NET_PORT_RULE_SIZE);
    assert!(offset_of!(NetPortRule, port_lo) == 0);
    assert!(offset_of!(NetPortRule, port_hi) == 2);
    assert!(offset_of!(NetPortRule, protos) == 4);
    assert!(offset_of!(NetPortRule, _pad) == 5);
    assert!(offset_of!(NetPortRule, rule) == 6);

    assert!(size_of::<NetRuleSet>() == NET_RULE_SET_SIZE);
    assert!(align_of::<NetRuleSet>() == 4);
    assert!(offset_of!(NetRuleSet, count) == 0);
    assert!(offset_of!(NetRuleSet, rules) == 8);

    assert!(size_of::<NetRunEntry>() == 8);
    assert!(offset_of!(NetRunEntry, flags) == 0);
    assert!(offset_of!(NetRunEntry, table) == 4);
    assert!(NET_TABLE_SHARED > crate::MAX_WATCHED_CGROUPS);

    assert!(size_of::<NetDnsTarget>() == 4);
    assert!(size_of::<NetDnsOrigin>() == 24);
    assert!(offset_of!(NetDnsOrigin, port) == 16);
    assert!(offset_of!(NetDnsOrigin, family) == 20);
    assert!(offset_of!(NetDnsTarget, port6) == 2);

    assert!(size_of::<NetEvent>() == NET_EVENT_SIZE);
    assert!(align_of::<NetEvent>() == 8);
    assert!(offset_of!(NetEvent, header) == 0);
    assert!(offset_of!(NetEvent, op) == 32);
    assert!(offset_of!(NetEvent, verdict) == 36);
    assert!(offset_of!(NetEvent, reason) == 40);
    assert!(offset_of!(NetEvent, family) == 44);
    assert!(offset_of!(NetEvent, sock_type) == 48);
    assert!(offset_of!(NetEvent, protocol) == 52);
    assert!(offset_of!(NetEvent, port) == 56);
    assert!(offset_of!(NetEvent, addr) == 64);
    assert!(NET_EVENT_SIZE.is_multiple_of(8));
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, integer fields only, no implicit padding (pinned above).
    unsafe impl aya::Pod for super::NetPortRule {}
    // SAFETY: as above; a u32 pair and an array of Pod rules, no implicit padding.
    unsafe impl aya::Pod for super::NetRuleSet {}
    // SAFETY: as above; integer fields and a byte array, no implicit padding.
    unsafe impl aya::Pod for super::NetEvent {}
    // SAFETY: as above; two u32 fields.
    unsafe impl aya::Pod for super::NetRunEntry {}
    // SAFETY: as above; two u16 fields, no implicit padding.
    unsafe impl aya::Pod for super::NetDnsTarget {}
    // SAFETY: as above; u32 fields only.
    unsafe impl aya::Pod for super::NetDnsOrigin {}
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn net_layouts() {
        assert_eq!(size_of::<NetPortRule>(), 8);
        assert_eq!(size_of::<NetRuleSet>(), 8 + 8 * 32);
        assert_eq!(size_of::<NetEvent>(), 80);
        assert_eq!(offset_of!(NetEvent, addr), 64);
        assert_eq!(offset_of!(NetEvent, port), 56);
        assert_eq!(size_of::<NetRunEntry>(), 8);
        assert_eq!(offset_of!(NetRunEntry, table), 4);
    }

    #[test]
    fn shared_tables_never_collide_with_a_run_slot() {
        // (NET_TABLE_SHARED > MAX_WATCHED_CGROUPS is asserted at compile time above.)
        assert_eq!(NET_TABLE_SHARED.to_be_bytes()[0] & 0x80, 0x80);
    }

    #[test]
    fn net_kind_is_new() {
        assert_ne!(EVENT_KIND_NET, crate::EVENT_KIND_EXEC);
        assert_ne!(EVENT_KIND_NET, crate::EVENT_KIND_EXIT);
    }
}
