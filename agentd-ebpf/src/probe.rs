//! Trivial programs used only by `agentd doctor` / the probe layer to learn whether this
//! kernel loads and attaches a program type. They allow everything.

use aya_ebpf::{
    macros::{cgroup_sock_addr, lsm},
    programs::{LsmContext, SockAddrContext},
};

/// `lsm/file_open` returning 0 (allow). Loading it tells whether BPF LSM works here.
#[lsm(hook = "file_open")]
pub fn probe_lsm_file_open(_ctx: LsmContext) -> i32 {
    0
}

/// `cgroup/connect4` returning 1 (allow). Attaching it to a v2 cgroup tells whether
/// cgroup-BPF works there.
#[cgroup_sock_addr(connect4)]
pub fn probe_cgroup_connect4(_ctx: SockAddrContext) -> i32 {
    1
}
