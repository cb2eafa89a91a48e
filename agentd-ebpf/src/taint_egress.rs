//! `cgroup_skb/egress` attached to a run's v2 cgroup when its policy has `fs.secret`
//! entries: once the run is tainted (`RUN_TAINT`, see `agentd_common::fsrules`), every
//! packet its sockets send is dropped, including on connections opened before the
//! taint, except packets to a `net.after_taint` destination (the same tries and the same
//! (address, port, protocol) match as the connect/sendmsg programs, see `net`) and to the
//! run's own DNS resolver (which refuses names once the run is tainted, and audits them).
//! The destination is read from the packet (IPv4 or IPv6 header, then the TCP/UDP
//! destination port), so unconnected UDP `sendto` is judged like connect. Packets that
//! cannot be judged (non-first IPv4 fragments, IPv6 extension headers, other protocols)
//! are dropped. Drops are counted per cgroup in `TAINT_EGRESS_DROPS`.

use agentd_common::{
    net::{NET_PROTO_TCP, NET_PROTO_UDP},
    MAX_WATCHED_CGROUPS,
};
use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::generated::bpf_skb_cgroup_id, macros::cgroup_skb, macros::map,
    maps::HashMap, programs::SkBuffContext,
};

use crate::{
    fsrules::RUN_TAINT,
    maps::{atomic_add, run_slot},
    net::{after_taint_allows, NET_DNS},
};

/// v2 cgroup id → packets dropped because the run was tainted.
#[map]
pub static TAINT_EGRESS_DROPS: HashMap<u64, u64> =
    HashMap::with_max_entries(MAX_WATCHED_CGROUPS, 0);

const PASS: i32 = 1;
const DROP: i32 = 0;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// 127.0.0.1 and ::1, as the packet carries them.
const LOOPBACK4: [u8; 4] = [127, 0, 0, 1];
const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

#[cgroup_skb(egress)]
pub fn taint_egress(ctx: SkBuffContext) -> i32 {
    // The cgroup of the socket that sent the packet (the run's, where this program is
    // attached), right even from softirq context (retransmits).
    // SAFETY: the context's skb pointer is the program's __sk_buff; the helper only reads.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    // SAFETY: copied out at once.
    let tainted = match unsafe { RUN_TAINT.get(cgroup_id) } {
        Some(state) => state.tainted != 0,
        None => false,
    };
    if !tainted || still_allowed(&ctx, cgroup_id) {
        return PASS;
    }
    match TAINT_EGRESS_DROPS.get_ptr_mut(cgroup_id) {
        Some(counter) => atomic_add(counter, 1),
        None => {
            let _ = TAINT_EGRESS_DROPS.insert(cgroup_id, 1, u64::from(BPF_NOEXIST));
        }
    }
    DROP
}

/// The packet's destination, as `net::after_taint_allows` takes it.
struct Destination {
    v4: bool,
    addr: [u8; 16],
    port: u16,
    proto: u8,
}

/// Whether a tainted run may still send this packet.
#[inline(always)]
fn still_allowed(ctx: &SkBuffContext, cgroup_id: u64) -> bool {
    let Some(slot) = run_slot(cgroup_id) else {
        return false;
    };
    let Some(dst) = destination(ctx) else {
        return false;
    };
    if to_resolver(slot, &dst) {
        return true;
    }
    after_taint_allows(slot, dst.v4, &dst.addr, dst.port, dst.proto)
}

/// Packets to the run's own resolver on loopback (DNS redirected by connect/sendmsg).
#[inline(always)]
fn to_resolver(slot: u32, dst: &Destination) -> bool {
    // SAFETY: plain value copied out at once.
    let Some(target) = (unsafe { NET_DNS.get(slot) }).copied() else {
        return false;
    };
    if dst.v4 {
        dst.addr[..4] == LOOPBACK4 && dst.port == target.port4
    } else {
        target.port6 != 0 && dst.addr == LOOPBACK6 && dst.port == target.port6
    }
}

/// Destination address, port and protocol from the IP header (cgroup_skb data starts
/// at the network header) and the TCP/UDP header after it.
#[inline(always)]
fn destination(ctx: &SkBuffContext) -> Option<Destination> {
    let first: u8 = ctx.load(0).ok()?;
    let mut addr = [0u8; 16];
    let (v4, l4, proto) = match first >> 4 {
        4 => {
            let proto: u8 = ctx.load(9).ok()?;
            // Fragment offset (13 bits after the flags): only the first fragment
            // carries the ports.
            let frag: u16 = u16::from_be(ctx.load(6).ok()?);
            if frag & 0x1fff != 0 {
                return None;
            }
            let dst: [u8; 4] = ctx.load(16).ok()?;
            addr[..4].copy_from_slice(&dst);
            (true, usize::from(first & 0x0f) * 4, proto)
        }
        6 => {
            let proto: u8 = ctx.load(6).ok()?;
            let dst: [u8; 16] = ctx.load(24).ok()?;
            addr = dst;
            (false, 40, proto)
        }
        _ => return None,
    };
    let proto = match proto {
        IPPROTO_TCP => NET_PROTO_TCP,
        IPPROTO_UDP => NET_PROTO_UDP,
        _ => return None,
    };
    let port: u16 = u16::from_be(ctx.load(l4 + 2).ok()?);
    Some(Destination {
        v4,
        addr,
        port,
        proto,
    })
}
