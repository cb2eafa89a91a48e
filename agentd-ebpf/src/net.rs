//! Network enforcement per run: `cgroup/connect4`, `connect6`, `sendmsg4`, `sendmsg6`,
//! `bind4`, `bind6` and `sock_create`, attached to each run's v2 cgroup.
//!
//! The run is found from the current task's cgroup (`RUN_CGROUPS`), its flags and rule
//! table from `NET_RUNS`; a task whose cgroup or slot is not registered is denied (fail
//! closed). Addresses are looked up in LPM tries keyed by rule table + address (a table
//! is the run's own, numbered by its slot, or one shared by the runs whose policies have
//! the same rules, `NET_TABLE_SHARED` and above); the longest match
//! carries every (port range, protocol) rule that applies (userspace merged them). An
//! IPv4-mapped IPv6 destination is judged by the IPv4 tries. The protocol comes from the
//! socket (`IPPROTO_TCP` / `IPPROTO_UDP`); anything else is denied.
//!
//! Taint: with `NET_FLAG_TAINT_CHECK` (the policy has `fs.secret`), once the run's
//! `RUN_TAINT` entry says tainted, a connect/sendmsg the rules allow must also match the
//! `net.after_taint` tries (`NET_TAINT4/6`), else it is denied with
//! `NET_REASON_TAINTED`. That holds with no `net` section too (everything allowed before
//! the taint). Port-53 traffic of a run with a resolver is still redirected: the resolver
//! refuses names once the run is tainted (and audits them).
//!
//! A denial returns 0 (the caller sees `EPERM`) and sends a `NetEvent`; with
//! `NET_FLAG_AUDIT_ONLY` the call goes through and the event says "would deny".
//!
//! Context fields are read with one volatile 4-byte load each: the verifier rejects
//! wider loads of `user_ip6`, which the compiler could otherwise merge.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use agentd_common::{
    net::{
        NetDnsOrigin, NetDnsTarget, NetEvent, NetRuleSet, NetRunEntry, DNS_PORT, EVENT_KIND_NET,
        NET_DNS_ORIGIN_ENTRIES, NET_FLAG_AUDIT_ONLY, NET_FLAG_DNS_REDIRECT, NET_FLAG_FILTER_BIND,
        NET_FLAG_FILTER_CONNECT, NET_FLAG_RAW_ALLOWED, NET_FLAG_TAINT_CHECK, NET_KEY4_LEN,
        NET_KEY6_LEN, NET_MAX_ENTRIES, NET_OP_BIND, NET_OP_CONNECT, NET_OP_LISTEN, NET_OP_SENDMSG,
        NET_OP_SOCKET, NET_PROTO_TCP, NET_PROTO_UDP, NET_REASON_NO_RULE, NET_REASON_NO_RUN,
        NET_REASON_PROTO, NET_REASON_RAW, NET_REASON_TAINTED, NET_RULES_PER_ENTRY, NET_SLOT_BITS,
        NET_VERDICT_DENY, NET_VERDICT_KILL, NET_VERDICT_WOULD_DENY,
    },
    EventHeader, MAX_WATCHED_CGROUPS,
};
use aya_ebpf::{
    bindings::{bpf_sock, bpf_sock_addr},
    helpers::generated::{
        bpf_get_current_pid_tgid, bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_send_signal,
    },
    macros::{cgroup_sock, cgroup_sock_addr, map},
    maps::{
        lpm_trie::{Key, LpmTrie},
        HashMap, LruHashMap,
    },
    programs::{SockAddrContext, SockContext},
};

use crate::{
    fsrules::{AGENTD_FS_OFFSETS, RUN_TAINT},
    kernel::{read_at, SIGKILL},
    maps::{count_drop, submit, watched_cgroup, EVENTS},
    unix::{fd_sock, AGENTD_UNIX_OFFSETS},
};

/// Run slot + IPv4 address → rules for connect/sendmsg.
#[map]
static NET_ALLOW4: LpmTrie<[u8; NET_KEY4_LEN], NetRuleSet> =
    LpmTrie::with_max_entries(NET_MAX_ENTRIES, 0);
/// Run slot + IPv6 address → rules for connect/sendmsg.
#[map]
static NET_ALLOW6: LpmTrie<[u8; NET_KEY6_LEN], NetRuleSet> =
    LpmTrie::with_max_entries(NET_MAX_ENTRIES, 0);
/// Run slot + IPv4 address → rules for bind.
#[map]
static NET_BIND4: LpmTrie<[u8; NET_KEY4_LEN], NetRuleSet> =
    LpmTrie::with_max_entries(NET_MAX_ENTRIES, 0);
/// Run slot + IPv6 address → rules for bind.
#[map]
static NET_BIND6: LpmTrie<[u8; NET_KEY6_LEN], NetRuleSet> =
    LpmTrie::with_max_entries(NET_MAX_ENTRIES, 0);
/// Run slot + IPv4 address → `net.after_taint` rules.
#[map]
static NET_TAINT4: LpmTrie<[u8; NET_KEY4_LEN], NetRuleSet> =
    LpmTrie::with_max_entries(NET_MAX_ENTRIES, 0);
/// Run slot + IPv6 address → `net.after_taint` rules.
#[map]
static NET_TAINT6: LpmTrie<[u8; NET_KEY6_LEN], NetRuleSet> =
    LpmTrie::with_max_entries(NET_MAX_ENTRIES, 0);
/// Socket cookie → where its last redirected DNS message was sent (`recvmsg4/6`).
#[map]
static NET_DNS_ORIGIN: LruHashMap<u64, NetDnsOrigin> =
    LruHashMap::with_max_entries(NET_DNS_ORIGIN_ENTRIES, 0);
/// Run slot → where its DNS resolver listens.
#[map]
pub(crate) static NET_DNS: HashMap<u32, NetDnsTarget> =
    HashMap::with_max_entries(MAX_WATCHED_CGROUPS, 0);
/// Run slot → its `NET_FLAG_*` and the rule table its lookups use.
#[map]
static NET_RUNS: HashMap<u32, NetRunEntry> = HashMap::with_max_entries(MAX_WATCHED_CGROUPS, 0);

/// Which rule tries a lookup reads.
const TABLE_ALLOW: u32 = 0;
const TABLE_BIND: u32 = 1;
const TABLE_TAINT: u32 = 2;

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const SOCK_RAW: u32 = 3;
const SOCK_PACKET: u32 = 10;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;

/// Return value letting the operation proceed.
const ALLOW: i32 = 1;
/// Return value failing the operation with `EPERM`.
const DENY: i32 = 0;
/// `decide`'s answer for DNS traffic to redirect to the run's resolver (never returned
/// to the kernel: the caller rewrites the destination and returns `ALLOW`).
const REDIRECT: i32 = 2;
/// 127.0.0.1 as stored in `user_ip4` (network order).
const LOOPBACK4: u32 = 0x7f00_0001u32.to_be();

#[cgroup_sock_addr(connect4)]
pub fn net_connect4(ctx: SockAddrContext) -> i32 {
    check_v4(&ctx, NET_OP_CONNECT)
}

#[cgroup_sock_addr(connect6)]
pub fn net_connect6(ctx: SockAddrContext) -> i32 {
    check_v6(&ctx, NET_OP_CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn net_sendmsg4(ctx: SockAddrContext) -> i32 {
    check_v4(&ctx, NET_OP_SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn net_sendmsg6(ctx: SockAddrContext) -> i32 {
    check_v6(&ctx, NET_OP_SENDMSG)
}

#[cgroup_sock_addr(bind4)]
pub fn net_bind4(ctx: SockAddrContext) -> i32 {
    check_v4(&ctx, NET_OP_BIND)
}

#[cgroup_sock_addr(bind6)]
pub fn net_bind6(ctx: SockAddrContext) -> i32 {
    check_v6(&ctx, NET_OP_BIND)
}

/// A reply read from the run's resolver by a socket whose DNS message was redirected
/// shows the original destination as its source (`recvfrom`, `recvmsg` with a name):
/// a client that checks where the answer came from (unconnected UDP) accepts it.
#[cgroup_sock_addr(recvmsg4)]
pub fn net_recvmsg4(ctx: SockAddrContext) -> i32 {
    restore_v4(&ctx);
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn net_recvmsg6(ctx: SockAddrContext) -> i32 {
    restore_v6(&ctx);
    ALLOW
}

#[cgroup_sock(sock_create)]
pub fn net_sock_create(ctx: SockContext) -> i32 {
    on_sock_create(&ctx)
}

/// The socket-level facts of one checked operation.
struct Request {
    op: u32,
    family: u32,
    sock_type: u32,
    protocol: u32,
    port: u16,
    addr: [u8; 16],
}

/// One 4-byte context load.
#[inline(always)]
fn load(field: *const u32) -> u32 {
    // SAFETY: `field` points into the program's context, which the kernel keeps valid
    // for the whole program run; the verifier checks the offset and the 4-byte size.
    unsafe { read_volatile(field) }
}

#[inline(always)]
fn sock_addr_request(ctx: &SockAddrContext, op: u32, family: u32) -> Request {
    let sa: *const bpf_sock_addr = ctx.sock_addr;
    // SAFETY (all addr_of! below): field addresses inside the context, not dereferenced.
    let sock_type = load(unsafe { addr_of!((*sa).type_) });
    let protocol = load(unsafe { addr_of!((*sa).protocol) });
    // user_port holds the port in network order in its low 16 bits.
    // SAFETY: as above.
    let port = u16::from_be(load(unsafe { addr_of!((*sa).user_port) }) as u16);
    Request {
        op,
        family,
        sock_type,
        protocol,
        port,
        addr: [0; 16],
    }
}

#[inline(always)]
fn check_v4(ctx: &SockAddrContext, op: u32) -> i32 {
    let sa: *const bpf_sock_addr = ctx.sock_addr;
    let mut req = sock_addr_request(ctx, op, AF_INET);
    // SAFETY: field address inside the context, read through `load`.
    let ip = load(unsafe { addr_of!((*sa).user_ip4) });
    req.addr[..4].copy_from_slice(&ip.to_ne_bytes());
    let verdict = decide(&req, true);
    if verdict == REDIRECT {
        let Some(target) = dns_target() else {
            return DENY;
        };
        remember_origin(ctx, [ip, 0, 0, 0], AF_INET);
        // SAFETY: writable fields of the connect4/sendmsg4 context; 4-byte stores.
        unsafe {
            write_volatile(addr_of_mut!((*ctx.sock_addr).user_ip4), LOOPBACK4);
            write_volatile(
                addr_of_mut!((*ctx.sock_addr).user_port),
                u32::from(target.port4.to_be()),
            );
        }
        return ALLOW;
    }
    verdict
}

#[inline(always)]
fn check_v6(ctx: &SockAddrContext, op: u32) -> i32 {
    let sa: *const bpf_sock_addr = ctx.sock_addr;
    let mut req = sock_addr_request(ctx, op, AF_INET6);
    // SAFETY: field addresses inside the context, each read through `load`.
    let words = unsafe {
        [
            load(addr_of!((*sa).user_ip6[0])),
            load(addr_of!((*sa).user_ip6[1])),
            load(addr_of!((*sa).user_ip6[2])),
            load(addr_of!((*sa).user_ip6[3])),
        ]
    };
    // ::ffff:a.b.c.d is judged as a.b.c.d, so it cannot slip past the IPv4 rules.
    let mapped = words[0] == 0 && words[1] == 0 && words[2] == 0xffffu32.to_be();
    let verdict = if mapped {
        req.family = AF_INET;
        req.addr[..4].copy_from_slice(&words[3].to_ne_bytes());
        decide(&req, true)
    } else {
        req.addr[..4].copy_from_slice(&words[0].to_ne_bytes());
        req.addr[4..8].copy_from_slice(&words[1].to_ne_bytes());
        req.addr[8..12].copy_from_slice(&words[2].to_ne_bytes());
        req.addr[12..].copy_from_slice(&words[3].to_ne_bytes());
        decide(&req, false)
    };
    if verdict == REDIRECT {
        let Some(target) = dns_target() else {
            return DENY;
        };
        remember_origin(ctx, words, AF_INET6);
        // [::1]:port6, or ::ffff:127.0.0.1:port4 when the resolver has no IPv6 socket
        // (or the destination was IPv4-mapped, which an IPv6-only socket cannot reach).
        let (ip, port) = if target.port6 != 0 && !mapped {
            ([0, 0, 0, 1u32.to_be()], target.port6)
        } else {
            ([0, 0, 0xffffu32.to_be(), LOOPBACK4], target.port4)
        };
        let sa = ctx.sock_addr;
        // SAFETY: writable fields of the connect6/sendmsg6 context; 4-byte stores.
        unsafe {
            write_volatile(addr_of_mut!((*sa).user_ip6[0]), ip[0]);
            write_volatile(addr_of_mut!((*sa).user_ip6[1]), ip[1]);
            write_volatile(addr_of_mut!((*sa).user_ip6[2]), ip[2]);
            write_volatile(addr_of_mut!((*sa).user_ip6[3]), ip[3]);
            write_volatile(addr_of_mut!((*sa).user_port), u32::from(port.to_be()));
        }
        return ALLOW;
    }
    verdict
}

/// Records where a redirected DNS message of this socket was going (before the
/// rewrite), keyed by the socket's cookie. A full map forgets the least recently used.
#[inline(always)]
fn remember_origin(ctx: &SockAddrContext, ip: [u32; 4], family: u32) {
    // SAFETY: the helper takes the program's context; it is valid for sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: field address inside the context, read through `load`.
    let port = load(unsafe { addr_of!((*ctx.sock_addr).user_port) });
    let _ = NET_DNS_ORIGIN.insert(cookie, NetDnsOrigin { ip, port, family }, 0);
}

/// The origin recorded for this socket, if the message being received comes from the
/// run's resolver at `port` (network order, as in `user_port`).
#[inline(always)]
fn origin_of_reply(ctx: &SockAddrContext, family: u32) -> Option<NetDnsOrigin> {
    // SAFETY: the helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: plain value copied out at once.
    let origin = (unsafe { NET_DNS_ORIGIN.get(cookie) }).copied()?;
    if origin.family != family {
        return None;
    }
    Some(origin)
}

#[inline(always)]
fn restore_v4(ctx: &SockAddrContext) {
    let Some(target) = dns_target() else {
        return;
    };
    let sa = ctx.sock_addr;
    // SAFETY: field addresses inside the context, read through `load`.
    let (ip, port) = unsafe {
        (
            load(addr_of!((*sa).user_ip4)),
            load(addr_of!((*sa).user_port)),
        )
    };
    if ip != LOOPBACK4 || port != u32::from(target.port4.to_be()) {
        return;
    }
    let Some(origin) = origin_of_reply(ctx, AF_INET) else {
        return;
    };
    // SAFETY: writable fields of the recvmsg4 context; 4-byte stores.
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip4), origin.ip[0]);
        write_volatile(addr_of_mut!((*sa).user_port), origin.port);
    }
}

#[inline(always)]
fn restore_v6(ctx: &SockAddrContext) {
    let Some(target) = dns_target() else {
        return;
    };
    let sa = ctx.sock_addr;
    // SAFETY: field addresses inside the context, each read through `load`.
    let (words, port) = unsafe {
        (
            [
                load(addr_of!((*sa).user_ip6[0])),
                load(addr_of!((*sa).user_ip6[1])),
                load(addr_of!((*sa).user_ip6[2])),
                load(addr_of!((*sa).user_ip6[3])),
            ],
            load(addr_of!((*sa).user_port)),
        )
    };
    // The resolver as check_v6 redirected to it: [::1]:port6 or ::ffff:127.0.0.1:port4.
    let from_v6 = target.port6 != 0
        && words == [0, 0, 0, 1u32.to_be()]
        && port == u32::from(target.port6.to_be());
    let from_mapped =
        words == [0, 0, 0xffffu32.to_be(), LOOPBACK4] && port == u32::from(target.port4.to_be());
    if !from_v6 && !from_mapped {
        return;
    }
    let Some(origin) = origin_of_reply(ctx, AF_INET6) else {
        return;
    };
    // SAFETY: writable fields of the recvmsg6 context; 4-byte stores.
    unsafe {
        write_volatile(addr_of_mut!((*sa).user_ip6[0]), origin.ip[0]);
        write_volatile(addr_of_mut!((*sa).user_ip6[1]), origin.ip[1]);
        write_volatile(addr_of_mut!((*sa).user_ip6[2]), origin.ip[2]);
        write_volatile(addr_of_mut!((*sa).user_ip6[3]), origin.ip[3]);
        write_volatile(addr_of_mut!((*sa).user_port), origin.port);
    }
}

/// The current run's resolver, if it has one.
#[inline(always)]
fn dns_target() -> Option<NetDnsTarget> {
    let (_, slot) = watched_cgroup()?;
    // SAFETY: plain value copied out at once.
    unsafe { NET_DNS.get(slot) }.copied()
}

/// Allow or deny a connect/sendmsg/bind of the current task.
#[inline(always)]
fn decide(req: &Request, v4: bool) -> i32 {
    let Some((cgroup_id, slot)) = watched_cgroup() else {
        return deny(req, NET_REASON_NO_RUN, 0, 0, 0);
    };
    // SAFETY: plain value copied out at once; see maps::watched_cgroup.
    let entry = unsafe { NET_RUNS.get(slot) }.copied();
    let Some(NetRunEntry {
        flags,
        table: rules_of,
    }) = entry
    else {
        return deny(req, NET_REASON_NO_RUN, cgroup_id, slot, 0);
    };
    let bind = req.op == NET_OP_BIND;
    let filter = if bind {
        NET_FLAG_FILTER_BIND
    } else {
        NET_FLAG_FILTER_CONNECT
    };
    // Only outbound operations of a run with secrets look the taint up.
    let tainted = !bind && flags & NET_FLAG_TAINT_CHECK != 0 && is_tainted(cgroup_id);
    if flags & filter == 0 {
        if tainted {
            return after_taint(req, v4, cgroup_id, slot, flags, rules_of);
        }
        return ALLOW;
    }
    let proto = match req.protocol {
        IPPROTO_TCP => NET_PROTO_TCP,
        IPPROTO_UDP => NET_PROTO_UDP,
        _ => return deny(req, NET_REASON_PROTO, cgroup_id, slot, flags),
    };
    if !bind && req.port == DNS_PORT && flags & NET_FLAG_DNS_REDIRECT != 0 {
        return REDIRECT;
    }
    // Every explicit bind is judged, port 0 included: a bind to port 0 is matched only
    // by a rule whose ports include 0 (`ADDR:0`, "the port the kernel picks", or any
    // port). The kernel's implicit bind of a socket on its first connect/sendto (or
    // listen) does not run this hook.
    let table = if bind { TABLE_BIND } else { TABLE_ALLOW };
    if let Some(rules) = lookup(req, rules_of, v4, table) {
        if matches(rules, req.port, proto) {
            if tainted {
                return after_taint(req, v4, cgroup_id, slot, flags, rules_of);
            }
            return ALLOW;
        }
    }
    deny(req, NET_REASON_NO_RULE, cgroup_id, slot, flags)
}

/// Whether the run of `cgroup_id` read a secret (the taint contract of
/// `agentd_common::fsrules`).
#[inline(always)]
fn is_tainted(cgroup_id: u64) -> bool {
    // SAFETY: plain value copied out at once.
    match unsafe { RUN_TAINT.get(cgroup_id) } {
        Some(state) => state.tainted != 0,
        None => false,
    }
}

/// A tainted run's outbound operation: allowed only by a `net.after_taint` rule.
#[inline(always)]
fn after_taint(
    req: &Request,
    v4: bool,
    cgroup_id: u64,
    slot: u32,
    flags: u32,
    rules_of: u32,
) -> i32 {
    let proto = match req.protocol {
        IPPROTO_TCP => NET_PROTO_TCP,
        IPPROTO_UDP => NET_PROTO_UDP,
        _ => 0,
    };
    if proto != 0 {
        if let Some(rules) = lookup(req, rules_of, v4, TABLE_TAINT) {
            if matches(rules, req.port, proto) {
                return ALLOW;
            }
        }
    }
    deny(req, NET_REASON_TAINTED, cgroup_id, slot, flags)
}

/// Whether a `net.after_taint` rule of run `slot` allows a packet to `addr` (network
/// order, IPv4 in the first 4 bytes when `v4`), `port`, `proto` (`NET_PROTO_*`): the
/// taint egress program's check, the same as the connect/sendmsg one.
#[inline(always)]
pub(crate) fn after_taint_allows(
    slot: u32,
    v4: bool,
    addr: &[u8; 16],
    port: u16,
    proto: u8,
) -> bool {
    let req = Request {
        op: NET_OP_CONNECT,
        family: if v4 { AF_INET } else { AF_INET6 },
        sock_type: 0,
        protocol: 0,
        port,
        addr: *addr,
    };
    // SAFETY: plain value copied out at once.
    let Some(entry) = (unsafe { NET_RUNS.get(slot) }).copied() else {
        return false;
    };
    match lookup(&req, entry.table, v4, TABLE_TAINT) {
        Some(rules) => matches(rules, port, proto),
        None => false,
    }
}

#[inline(always)]
/// The entry of rule table `rules_of` ([`NetRunEntry::table`]) in trie `table` that
/// holds `req`'s address.
fn lookup(req: &Request, rules_of: u32, v4: bool, table: u32) -> Option<&'static NetRuleSet> {
    let slot = rules_of.to_be_bytes();
    if v4 {
        let mut data = [0u8; NET_KEY4_LEN];
        data[..4].copy_from_slice(&slot);
        data[4..].copy_from_slice(&req.addr[..4]);
        let key = Key::new(NET_SLOT_BITS + 32, data);
        match table {
            TABLE_BIND => NET_BIND4.get(&key),
            TABLE_TAINT => NET_TAINT4.get(&key),
            _ => NET_ALLOW4.get(&key),
        }
    } else {
        let mut data = [0u8; NET_KEY6_LEN];
        data[..4].copy_from_slice(&slot);
        data[4..].copy_from_slice(&req.addr);
        let key = Key::new(NET_SLOT_BITS + 128, data);
        match table {
            TABLE_BIND => NET_BIND6.get(&key),
            TABLE_TAINT => NET_TAINT6.get(&key),
            _ => NET_ALLOW6.get(&key),
        }
    }
}

#[inline(always)]
fn matches(rules: &NetRuleSet, port: u16, proto: u8) -> bool {
    let count = rules.count as usize;
    for i in 0..NET_RULES_PER_ENTRY {
        if i >= count {
            break;
        }
        let r = &rules.rules[i];
        if r.protos & proto != 0 && r.port_lo <= port && port <= r.port_hi {
            return true;
        }
    }
    false
}

#[inline(always)]
fn on_sock_create(ctx: &SockContext) -> i32 {
    let sk: *const bpf_sock = ctx.sock;
    // SAFETY: field addresses inside the context, each read through `load`.
    let (family, sock_type, protocol) = unsafe {
        (
            load(addr_of!((*sk).family)),
            load(addr_of!((*sk).type_)),
            load(addr_of!((*sk).protocol)),
        )
    };
    let req = Request {
        op: NET_OP_SOCKET,
        family,
        sock_type,
        protocol,
        port: 0,
        addr: [0; 16],
    };
    // The kernel runs this hook from inet_create/inet6_create only: netlink and packet
    // sockets never get here (the seccomp layer limits those).
    if family != AF_INET && family != AF_INET6 {
        return ALLOW;
    }
    if sock_type != SOCK_RAW
        && sock_type != SOCK_PACKET
        && (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP)
    {
        return ALLOW;
    }
    // Raw sockets, ICMP "ping" sockets, SCTP, UDP-Lite, …: the connect/sendmsg hooks
    // do not cover all of them, so they count as raw network access.
    let reason = NET_REASON_RAW;
    let Some((cgroup_id, slot)) = watched_cgroup() else {
        return deny(&req, NET_REASON_NO_RUN, 0, 0, 0);
    };
    // SAFETY: plain value copied out at once.
    let Some(NetRunEntry { flags, .. }) = (unsafe { NET_RUNS.get(slot) }).copied() else {
        return deny(&req, NET_REASON_NO_RUN, cgroup_id, slot, 0);
    };
    if flags & NET_FLAG_RAW_ALLOWED != 0 {
        return ALLOW;
    }
    deny(&req, reason, cgroup_id, slot, flags)
}

/// Reports the denial and returns the verdict: `DENY`, or `ALLOW` in audit mode.
#[inline(always)]
fn deny(req: &Request, reason: u32, cgroup_id: u64, slot: u32, flags: u32) -> i32 {
    report(req, reason, cgroup_id, slot, flags, NET_VERDICT_DENY)
}

/// `SOCK_BINDADDR_LOCK | SOCK_BINDPORT_LOCK` of `sk_userlocks`: a `bind()` named an
/// address or a port. The kernel's own bind on `listen()` (`inet_autobind`) sets
/// neither.
const SOCK_BIND_LOCKS: u8 = 4 | 8;
const SOCK_STREAM: u32 = 1;

/// After a successful `listen(fd)` of a process of a run that judges binds: a TCP
/// socket with no bind lock was never bound with an address or a port, so the kernel
/// bound it to a port it picked on the wildcard address, which no bind hook saw. It
/// is judged as a bind of the wildcard address to port 0 (what `bind(0.0.0.0:0)`
/// would have been), and, unless a `net.bind` rule allows that, reported and the
/// process killed on its way back to user space (audit mode: reported only).
#[inline(never)]
pub(crate) fn on_listened(fd: u64) {
    let Some((cgroup_id, slot)) = watched_cgroup() else {
        return;
    };
    // SAFETY: plain value copied out at once.
    let entry = unsafe { NET_RUNS.get(slot) }.copied();
    let Some(NetRunEntry {
        flags,
        table: rules_of,
    }) = entry
    else {
        return;
    };
    if flags & NET_FLAG_FILTER_BIND == 0 {
        return;
    }
    let fs = AGENTD_FS_OFFSETS.load();
    let offs = AGENTD_UNIX_OFFSETS.load();
    if fs.valid == 0 || offs.valid == 0 {
        return;
    }
    // listen() succeeded on this fd, so it is a socket.
    let Some((sk, family)) = fd_sock(&fs, &offs, fd) else {
        return;
    };
    // SAFETY: a BTF offset, bpf_probe_read_kernel (fault tolerant).
    let Ok(locks) = (unsafe { read_at::<u8>(sk, offs.sock_userlocks) }) else {
        return;
    };
    let family = u32::from(family);
    if (family != AF_INET && family != AF_INET6) || locks & SOCK_BIND_LOCKS != 0 {
        return;
    }
    let req = Request {
        op: NET_OP_LISTEN,
        family,
        sock_type: SOCK_STREAM,
        protocol: IPPROTO_TCP,
        port: 0,
        addr: [0; 16],
    };
    if let Some(rules) = lookup(&req, rules_of, family == AF_INET, TABLE_BIND) {
        if matches(rules, 0, NET_PROTO_TCP) {
            return;
        }
    }
    report(
        &req,
        NET_REASON_NO_RULE,
        cgroup_id,
        slot,
        flags,
        NET_VERDICT_KILL,
    );
    if flags & NET_FLAG_AUDIT_ONLY == 0 {
        // SAFETY: signals the current thread group, the process that listened.
        unsafe { bpf_send_signal(SIGKILL) };
    }
}

/// Reports a denial (`enforced`: the verdict outside audit mode) and returns what the
/// cgroup hooks return: `DENY`, or `ALLOW` in audit mode.
#[inline(always)]
fn report(req: &Request, reason: u32, cgroup_id: u64, slot: u32, flags: u32, enforced: u32) -> i32 {
    let audit_only = flags & NET_FLAG_AUDIT_ONLY != 0;
    let verdict = if audit_only {
        NET_VERDICT_WOULD_DENY
    } else {
        enforced
    };
    match EVENTS.reserve::<NetEvent>(0) {
        Some(mut entry) => {
            // SAFETY: argument-less helpers.
            let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
            // SAFETY: argument-less helper.
            let now = unsafe { bpf_ktime_get_ns() };
            entry.write(NetEvent {
                header: EventHeader {
                    kind: EVENT_KIND_NET,
                    run_slot: slot,
                    tgid: (pid_tgid >> 32) as u32,
                    pid: pid_tgid as u32,
                    cgroup_id,
                    ktime_ns: now,
                },
                op: req.op,
                verdict,
                reason,
                family: req.family,
                sock_type: req.sock_type,
                protocol: req.protocol,
                port: u32::from(req.port),
                _pad: 0,
                addr: req.addr,
            });
            submit(entry);
        }
        None => count_drop(),
    }
    if audit_only {
        ALLOW
    } else {
        DENY
    }
}
