//! Budget counters shared by the eBPF budget programs and the userspace engine.
//!
//! Per run (keyed by v2 cgroup id) the loader inserts one [`BudgetCounters`] into
//! `BUDGET_RUNS` (counters zero, kill thresholds set) and, for a `syscalls` budget, the
//! cgroup id into a slot of `BUDGET_SYSCALL_CGROUPS` (its per-CPU count is the same slot
//! of `BUDGET_SYSCALLS`). The kernel side only ever adds to the counters (atomically); the
//! thresholds are written once, before the run starts, and only read by the kernel.

/// Map, program and tracepoint names.
pub mod names {
    /// `HashMap<u64, BudgetCounters>`: v2 cgroup id → counters and kill thresholds.
    pub const MAP_BUDGET_RUNS: &str = "BUDGET_RUNS";
    /// `Array<u64>` of [`super::SYSCALL_SLOTS`]: slot → v2 cgroup id of a run with a
    /// `syscalls` budget (0 = free).
    pub const MAP_BUDGET_SYSCALL_CGROUPS: &str = "BUDGET_SYSCALL_CGROUPS";
    /// `PerCpuArray<u64>` of [`super::SYSCALL_SLOTS`]: slot → syscalls entered on each
    /// CPU (exact).
    pub const MAP_BUDGET_SYSCALLS: &str = "BUDGET_SYSCALLS";
    /// `cgroup_skb/egress`: counts (and past a kill step drops) outgoing bytes.
    pub const PROG_BUDGET_SKB_EGRESS: &str = "budget_skb_egress";
    /// `cgroup_skb/ingress`: counts (and past a kill step drops) incoming bytes.
    pub const PROG_BUDGET_SKB_INGRESS: &str = "budget_skb_ingress";
}

/// Maximum number of runs with budgets at the same time.
pub const MAX_BUDGET_RUNS: u32 = 1024;

/// Runs with a `syscalls` budget one loaded object serves at once. The sys_exit program
/// runs on every syscall of the host, so it scans this small array instead of hashing
/// the cgroup id (see `agentd-ebpf/src/budget.rs`); each agentd run loads its own object
/// and uses slot 0.
pub const SYSCALL_SLOTS: u32 = 4;

/// A threshold that never fires.
pub const BUDGET_NEVER: u64 = u64::MAX;

/// Each CPU adds its syscall count to [`BudgetCounters::syscalls_flushed`] in batches of
/// this many (a power of two), so the shared cache line is touched once per batch. A kill
/// threshold therefore fires at most `SYSCALL_FLUSH_BATCH * nr_cpus` calls late.
pub const SYSCALL_FLUSH_BATCH: u64 = 64;

/// x86-64 numbers of the syscalls whose positive return value is counted as bytes
/// written by `fs_write_bytes`: write, pwrite64, writev, pwritev, pwritev2, sendfile,
/// copy_file_range, splice, tee and vmsplice. They count bytes written to any kind of file
/// descriptor (regular files, pipes, terminals, sockets); `sendto`/`sendmsg` are not
/// counted (network bytes have their own budgets).
pub const FS_WRITE_SYSCALLS: [u64; 10] = [1, 18, 20, 296, 328, 40, 326, 275, 276, 278];

/// x86-64 `fallocate(fd, mode, offset, len)`: on success `len` is counted, unless `mode`
/// has [`FALLOC_NOT_COUNTED`] bits (it frees space).
pub const NR_FALLOCATE: u64 = 285;
/// x86-64 `truncate(path, length)` and `ftruncate(fd, length)`: on success `length` is
/// counted. The exit hook cannot see the size before the call, so a shrink to a non-zero
/// length is counted too (never less than a growth).
pub const NR_TRUNCATE: u64 = 76;
pub const NR_FTRUNCATE: u64 = 77;
/// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE`: fallocate modes that free space.
pub const FALLOC_NOT_COUNTED: u64 = 0x02 | 0x08;

/// Offset of `orig_ax` (the syscall number) in x86-64 `struct pt_regs`, part of the
/// kernel's stable user ABI (`ptrace` `ORIG_RAX * 8`).
pub const PT_REGS_ORIG_AX_OFFSET: u32 = 15 * 8;
/// Offset of `r10` (a syscall's fourth argument) in x86-64 `struct pt_regs` (`R10 * 8`).
pub const PT_REGS_R10_OFFSET: u32 = 7 * 8;

/// Buckets of a [`RateWindow`] (a power of two).
pub const RATE_BUCKETS: usize = 8;

/// Index of each counter's window in [`BudgetCounters::windows`].
pub const WINDOW_SYSCALLS: usize = 0;
pub const WINDOW_EXECS: usize = 1;
pub const WINDOW_FS_WRITE: usize = 2;
pub const WINDOW_NET_EGRESS: usize = 3;
pub const WINDOW_NET_INGRESS: usize = 4;
/// Number of windows.
pub const WINDOW_KINDS: usize = 5;

/// The kill (or drop) step of a rate form (`execs: 100/1h`), checked by the kernel on a
/// sliding window of [`RATE_BUCKETS`] buckets of `bucket_ns` each: bucket `i` holds what
/// was counted during the bucket-length period number `epochs[i]` (`ktime / bucket_ns`).
/// The use is the sum of the buckets of the last `RATE_BUCKETS` periods, which span at
/// most one window, so a use past `limit` always means the rate was exceeded; a burst
/// that straddles buckets can be seen up to one bucket (window / 8) late. The kernel
/// resets a bucket when it moves to a new period; two CPUs doing that at once can lose
/// the increments of one of them (never add any).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateWindow {
    /// Bucket length in ns; 0: no window for this counter.
    pub bucket_ns: u64,
    /// Past this use within the window the process gets SIGKILL (packets are dropped).
    pub limit: u64,
    /// Set to 1 by the kernel once the limit was passed (it acted); agentd reads it.
    pub fired: u64,
    pub epochs: [u64; RATE_BUCKETS],
    pub counts: [u64; RATE_BUCKETS],
}

impl RateWindow {
    /// No window.
    pub const NONE: Self = Self {
        bucket_ns: 0,
        limit: BUDGET_NEVER,
        fired: 0,
        epochs: [0; RATE_BUCKETS],
        counts: [0; RATE_BUCKETS],
    };

    /// A window of `window_ns` killing past `limit`.
    pub const fn new(window_ns: u64, limit: u64) -> Self {
        let bucket_ns = window_ns / RATE_BUCKETS as u64;
        Self {
            bucket_ns: if bucket_ns == 0 { 1 } else { bucket_ns },
            limit,
            fired: 0,
            epochs: [0; RATE_BUCKETS],
            counts: [0; RATE_BUCKETS],
        }
    }
}

/// Size of [`RateWindow`]: three `u64`s and two arrays of eight.
pub const RATE_WINDOW_SIZE: usize = 152;

/// Value of `BUDGET_RUNS`: what the kernel counted for one run, and where it stops it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetCounters {
    /// Syscalls, in whole [`SYSCALL_FLUSH_BATCH`]es (the exact figure is the sum of the
    /// run's `BUDGET_SYSCALLS` values).
    pub syscalls_flushed: u64,
    /// Completed execve/execveat calls (`sched_process_exec`).
    pub execs: u64,
    /// `skb->len` of every packet leaving sockets of the run (`cgroup_skb/egress`).
    pub net_egress_bytes: u64,
    /// `skb->len` of every packet arriving at sockets of the run (`cgroup_skb/ingress`).
    pub net_ingress_bytes: u64,
    /// Bytes returned by the [`FS_WRITE_SYSCALLS`].
    pub fs_write_bytes: u64,
    /// Packets dropped because the run was past a net kill threshold.
    pub net_dropped_packets: u64,
    /// Past this many syscalls the calling process gets SIGKILL.
    pub kill_syscalls: u64,
    /// Past this many execs the exec'ing process gets SIGKILL (before it runs).
    pub kill_execs: u64,
    /// Past this many egress bytes packets are dropped.
    pub drop_net_egress: u64,
    /// Past this many ingress bytes packets are dropped.
    pub drop_net_ingress: u64,
    /// Past this many bytes written the writing process gets SIGKILL.
    pub kill_fs_write: u64,
    /// Rate forms' kill steps, indexed by `WINDOW_*`.
    pub windows: [RateWindow; WINDOW_KINDS],
    /// Syscall number of the call that took `fs_write_bytes` past `kill_fs_write`
    /// (written once by the kernel, when it sends the kill); 0: none yet.
    pub fs_write_kill_nr: u64,
    /// Bytes that call counted.
    pub fs_write_kill_bytes: u64,
}

impl BudgetCounters {
    /// Zero counters, no thresholds.
    pub const NEW: Self = Self {
        syscalls_flushed: 0,
        execs: 0,
        net_egress_bytes: 0,
        net_ingress_bytes: 0,
        fs_write_bytes: 0,
        net_dropped_packets: 0,
        kill_syscalls: BUDGET_NEVER,
        kill_execs: BUDGET_NEVER,
        drop_net_egress: BUDGET_NEVER,
        drop_net_ingress: BUDGET_NEVER,
        kill_fs_write: BUDGET_NEVER,
        windows: [RateWindow::NONE; WINDOW_KINDS],
        fs_write_kill_nr: 0,
        fs_write_kill_bytes: 0,
    };
}

/// Size of [`BudgetCounters`]: eleven `u64`s, the windows and two `u64`s, no padding.
pub const BUDGET_COUNTERS_SIZE: usize = 88 + WINDOW_KINDS * RATE_WINDOW_SIZE + 16;

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<BudgetCounters>() == BUDGET_COUNTERS_SIZE);
    assert!(align_of::<BudgetCounters>() == 8);
    assert!(offset_of!(BudgetCounters, syscalls_flushed) == 0);
    assert!(offset_of!(BudgetCounters, execs) == 8);
    assert!(offset_of!(BudgetCounters, net_egress_bytes) == 16);
    assert!(offset_of!(BudgetCounters, net_ingress_bytes) == 24);
    assert!(offset_of!(BudgetCounters, fs_write_bytes) == 32);
    assert!(offset_of!(BudgetCounters, net_dropped_packets) == 40);
    assert!(offset_of!(BudgetCounters, kill_syscalls) == 48);
    assert!(offset_of!(BudgetCounters, kill_execs) == 56);
    assert!(offset_of!(BudgetCounters, drop_net_egress) == 64);
    assert!(offset_of!(BudgetCounters, drop_net_ingress) == 72);
    assert!(offset_of!(BudgetCounters, kill_fs_write) == 80);
    assert!(offset_of!(BudgetCounters, windows) == 88);
    assert!(offset_of!(BudgetCounters, fs_write_kill_nr) == 88 + WINDOW_KINDS * RATE_WINDOW_SIZE);
    assert!(
        offset_of!(BudgetCounters, fs_write_kill_bytes) == 96 + WINDOW_KINDS * RATE_WINDOW_SIZE
    );
    assert!(size_of::<RateWindow>() == RATE_WINDOW_SIZE);
    assert!(align_of::<RateWindow>() == 8);
    assert!(offset_of!(RateWindow, bucket_ns) == 0);
    assert!(offset_of!(RateWindow, limit) == 8);
    assert!(offset_of!(RateWindow, fired) == 16);
    assert!(offset_of!(RateWindow, epochs) == 24);
    assert!(offset_of!(RateWindow, counts) == 24 + 8 * RATE_BUCKETS);
    assert!(RATE_BUCKETS.is_power_of_two());
    assert!(SYSCALL_FLUSH_BATCH.is_power_of_two());
};

#[cfg(feature = "user")]
// SAFETY: `#[repr(C)]`, only `u64` fields, no padding (pinned above), so every bit
// pattern is a valid value.
unsafe impl aya::Pod for BudgetCounters {}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn budget_counters_layout() {
        assert_eq!(size_of::<BudgetCounters>(), 11 * 8 + 5 * 152 + 2 * 8);
        assert_eq!(offset_of!(BudgetCounters, fs_write_kill_nr), 848);
        assert_eq!(offset_of!(BudgetCounters, fs_write_kill_bytes), 856);
        assert_eq!(offset_of!(BudgetCounters, windows), 88);
        assert_eq!(size_of::<RateWindow>(), 152);
        assert_eq!(offset_of!(RateWindow, counts), 88);
        assert_eq!(RateWindow::new(8_000, 5).bucket_ns, 1_000);
        assert_eq!(
            RateWindow::new(3, 5).bucket_ns,
            1,
            "never a zero-length bucket"
        );
        assert_eq!(offset_of!(BudgetCounters, kill_syscalls), 48);
        assert_eq!(offset_of!(BudgetCounters, kill_fs_write), 80);
        assert_eq!(BudgetCounters::NEW.kill_execs, BUDGET_NEVER);
    }
}
