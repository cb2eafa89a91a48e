//! `cgroup_skb/egress` attached to a run's v2 cgroup when its policy has `fs.secret`
//! entries: once the run is tainted (`RUN_TAINT`, see `agentd_common::fsrules`), every
//! packet its sockets send is dropped, including on connections opened before the
//! taint. `net.after_taint` exceptions need the network layer and are refused by the
//! Plan until then. Drops are counted per cgroup in `TAINT_EGRESS_DROPS`.

use agentd_common::MAX_WATCHED_CGROUPS;
use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::generated::bpf_skb_cgroup_id, macros::cgroup_skb, macros::map,
    maps::HashMap, programs::SkBuffContext,
};

use crate::{fsrules::RUN_TAINT, maps::atomic_add};

/// v2 cgroup id → packets dropped because the run was tainted.
#[map]
pub static TAINT_EGRESS_DROPS: HashMap<u64, u64> =
    HashMap::with_max_entries(MAX_WATCHED_CGROUPS, 0);

const PASS: i32 = 1;
const DROP: i32 = 0;

#[cgroup_skb(egress)]
pub fn taint_egress(ctx: SkBuffContext) -> i32 {
    // SAFETY: the context's skb pointer is the program's __sk_buff; the helper reads the
    // cgroup of the socket that sent the packet (the run's cgroup, where this program is
    // attached), which is right even from softirq context (retransmits).
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    // SAFETY: copied out at once.
    let tainted = match unsafe { RUN_TAINT.get(cgroup_id) } {
        Some(state) => state.tainted != 0,
        None => false,
    };
    if !tainted {
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
