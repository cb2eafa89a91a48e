//! agentd eBPF programs, built for `bpfel-unknown-none` by `agentd/build.rs` (aya-build)
//! and embedded into the `agentd` binary.
//!
//! One module per program family:
//! - [`process`]: `tp_btf/sched_process_exec` and `tp_btf/sched_process_exit`, reporting
//!   exec and exit of processes in watched cgroups through the `EVENTS` ring buffer;
//! - [`syscalls`]: the one `tp_btf/sys_exit` program, which calls the per-syscall checks
//!   of the modules below (only the enabled ones);
//! - [`syscall_exits`]: where trampolines attach, `fexit` programs on the watched
//!   syscalls instead of the dispatcher's denial tracker and `listen()` check;
//! - [`denials`]: the denial tracker (failed file, exec and socket syscalls);
//! - [`budget`]: per-run budget counters (syscalls and written bytes from the `sys_exit`
//!   dispatcher, `cgroup_skb/egress|ingress`, and the exec count the tracker feeds);
//! - [`fsrules`]: `fs.deny` / `fs.secret` by inode (`lsm/file_open`, or the
//!   `sys_exit` fallback) and the per-run taint flag;
//! - [`exec_integrity`]: exec and PROT_EXEC mappings only from `exec.allow` /
//!   `exec.libraries` (LSM bprm_check_security + mmap_file, or tracepoint kills);
//! - [`taint_egress`]: `cgroup_skb/egress` dropping a tainted run's packets;
//! - [`unix`]: pathname unix sockets (cgroup connect_unix/sendmsg_unix loaded raw, a
//!   `tp_btf/sys_exit` backstop, or LSM unix_stream_connect/unix_may_send);
//! - [`probe`]: trivial programs `agentd doctor` loads to learn what this kernel allows.
//!
//! Kernel struct offsets are not compiled in (Rust eBPF has no CO-RE relocations): the
//! loader reads them from `/sys/kernel/btf/vmlinux` and writes them into the `.rodata`
//! global in [`kernel`].
//!
//! On a non-BPF target (e.g. `cargo clippy --workspace` on stable) this is an empty
//! program, so workspace-wide checks keep working; the real build always targets BPF.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Inline BPF assembly (one atomic add, see maps::atomic_add); this crate builds with nightly.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod base_dir;
mod budget;
mod denials;
mod exec_integrity;
mod fs_ops;
mod fsrules;
mod inode_walk;
mod kernel;
mod maps;
mod net;
mod probe;
mod process;
mod syscall_exits;
mod syscalls;
mod taint_egress;
mod unix;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable loop, so a reachable panic makes the program fail
    // to load instead of hanging: panics must be unreachable, and the verifier checks it.
    loop {}
}

/// GPL-compatible licence: `bpf_probe_read_kernel*` and the ring-buffer helpers are
/// GPL-only.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
