//! Budget counters of runs, keyed by v2 cgroup id (see `agentd_common::budget`).
//!
//! - [`count_syscall`] (from the `tp_btf/sys_exit` dispatcher) counts every syscall of a
//!   budgeted run in a per-CPU value, and adds whole batches to the run's shared counter,
//!   where the kill threshold is checked. Unbudgeted tasks cost one cgroup-id read and a
//!   scan of [`SYSCALL_SLOTS`] array entries.
//! - [`count_written`] (same dispatcher) adds the positive return value of write-family
//!   syscalls (`FS_WRITE_SYSCALLS`), and the sizes of `fallocate` and `(f)truncate`, to
//!   `fs_write_bytes`.
//! - `cgroup_skb/egress` and `cgroup_skb/ingress` add `skb->len` to the net counters and
//!   drop packets once a run is past its kill threshold (agentd then kills the run).
//! - the exec tracker calls [`count_exec`].
//!
//! Past a kill threshold the offending process gets SIGKILL from `bpf_send_signal` right
//! away (it dies on return to user mode); agentd sees the counter on its next poll and
//! kills the rest of the run through `cgroup.kill`.

use core::ptr::addr_of_mut;

use agentd_common::budget::{
    BudgetCounters, FALLOC_NOT_COUNTED, FS_WRITE_SYSCALLS, MAX_BUDGET_RUNS, NR_FALLOCATE,
    NR_FTRUNCATE, NR_TRUNCATE, PT_REGS_R10_OFFSET, RATE_BUCKETS, SYSCALL_FLUSH_BATCH,
    SYSCALL_SLOTS, WINDOW_EXECS, WINDOW_FS_WRITE, WINDOW_NET_EGRESS, WINDOW_NET_INGRESS,
    WINDOW_SYSCALLS,
};
use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_ns, bpf_send_signal, bpf_skb_cgroup_id},
    macros::{cgroup_skb, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::SkBuffContext,
};

use agentd_common::denials::PT_REGS_SI;

use crate::{
    kernel::SIGKILL,
    maps::{atomic_add, current_cgroup_id},
    syscalls::reg,
};

/// cgroup_skb verdicts.
const SKB_PASS: i32 = 1;
const SKB_DROP: i32 = 0;

/// v2 cgroup id → counters and thresholds of a budgeted run.
#[map]
pub static BUDGET_RUNS: HashMap<u64, BudgetCounters> =
    HashMap::with_max_entries(MAX_BUDGET_RUNS, 0);

/// Slot → v2 cgroup id of a run with a `syscalls` budget (0: free slot).
#[map]
pub static BUDGET_SYSCALL_CGROUPS: Array<u64> = Array::with_max_entries(SYSCALL_SLOTS, 0);

/// Slot → syscalls entered, per CPU.
#[map]
pub static BUDGET_SYSCALLS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SYSCALL_SLOTS, 0);

/// Counts one syscall of the current task if its cgroup has a `syscalls` budget. Called
/// from the `tp_btf/sys_exit` dispatcher for every syscall of the host, so the common
/// case (not a budgeted run) is a few array loads and compares: no hashing, no helper
/// besides the cgroup id.
#[inline(always)]
pub(crate) fn count_syscall() {
    let cgroup_id = current_cgroup_id();
    let mut slot = SYSCALL_SLOTS;
    for i in 0..SYSCALL_SLOTS {
        if BUDGET_SYSCALL_CGROUPS.get(i).copied() == Some(cgroup_id) {
            slot = i;
        }
    }
    let Some(count) = BUDGET_SYSCALLS.get_ptr_mut(slot) else {
        return;
    };
    atomic_add(count, 1);
    // SAFETY: `count` is this CPU's slot of a live map value (see atomic_add).
    let n = unsafe { count.read_volatile() };
    if n & (SYSCALL_FLUSH_BATCH - 1) == 0 {
        if let Some(run) = BUDGET_RUNS.get_ptr_mut(cgroup_id) {
            // SAFETY: `run` points at the run's live BudgetCounters map value.
            let (counter, limit) = unsafe {
                (
                    addr_of_mut!((*run).syscalls_flushed),
                    addr_of_mut!((*run).kill_syscalls),
                )
            };
            kill_past(counter, SYSCALL_FLUSH_BATCH, limit);
            kill_past_window(run, WINDOW_SYSCALLS, SYSCALL_FLUSH_BATCH);
        }
    }
}

/// Adds the bytes a successful syscall `nr` wrote or allocated to the current cgroup's
/// `fs_write_bytes`: the positive return value of the [`FS_WRITE_SYSCALLS`], the `len`
/// of a `fallocate` that allocates, the `length` of a `truncate`/`ftruncate`. Called from
/// the `tp_btf/sys_exit` dispatcher, so a call that crosses the kill step has already
/// happened: its process gets SIGKILL on return, and the call is noted for the record.
#[inline(never)]
pub(crate) fn count_written(regs: *const u8, nr: u64, ret: i64) {
    let bytes = match nr {
        NR_FALLOCATE => {
            if ret != 0 || reg(regs, PT_REGS_SI) & FALLOC_NOT_COUNTED != 0 {
                return;
            }
            reg(regs, PT_REGS_R10_OFFSET)
        }
        NR_TRUNCATE | NR_FTRUNCATE => {
            if ret != 0 {
                return;
            }
            reg(regs, PT_REGS_SI)
        }
        _ => {
            let mut counted = false;
            for n in FS_WRITE_SYSCALLS {
                counted |= n == nr;
            }
            if !counted || ret <= 0 {
                return;
            }
            ret as u64
        }
    };
    if bytes == 0 {
        return;
    }
    if let Some(run) = BUDGET_RUNS.get_ptr_mut(current_cgroup_id()) {
        // SAFETY: `run` points at the run's live BudgetCounters map value.
        let (counter, limit) = unsafe {
            (
                addr_of_mut!((*run).fs_write_bytes),
                addr_of_mut!((*run).kill_fs_write),
            )
        };
        let total = add_and_read(counter, bytes);
        let limit = read(limit);
        if total > limit {
            if total.wrapping_sub(bytes) <= limit {
                // The call that crossed the kill step (once; later calls are killed too).
                // SAFETY: fields of the live map value.
                unsafe {
                    addr_of_mut!((*run).fs_write_kill_nr).write_volatile(nr);
                    addr_of_mut!((*run).fs_write_kill_bytes).write_volatile(bytes);
                }
            }
            // SAFETY: plain helper call; it signals the current task's thread group.
            unsafe { bpf_send_signal(SIGKILL) };
        }
        kill_past_window(run, WINDOW_FS_WRITE, bytes);
    }
}

#[cgroup_skb(egress)]
pub fn budget_skb_egress(ctx: SkBuffContext) -> i32 {
    count_skb(&ctx, true)
}

#[cgroup_skb(ingress)]
pub fn budget_skb_ingress(ctx: SkBuffContext) -> i32 {
    count_skb(&ctx, false)
}

/// Counts an exec of the run `cgroup_id`; past the threshold the new image is killed
/// before it runs an instruction.
#[inline(always)]
pub fn count_exec(cgroup_id: u64) {
    if let Some(run) = BUDGET_RUNS.get_ptr_mut(cgroup_id) {
        // SAFETY: `run` points at the run's live BudgetCounters map value.
        let (counter, limit) =
            unsafe { (addr_of_mut!((*run).execs), addr_of_mut!((*run).kill_execs)) };
        kill_past(counter, 1, limit);
        kill_past_window(run, WINDOW_EXECS, 1);
    }
}

#[inline(always)]
fn count_skb(ctx: &SkBuffContext, egress: bool) -> i32 {
    // SAFETY: the context's `__sk_buff`; the helper reads the cgroup of the skb's socket
    // (set by the cgroup hook for ingress too) and returns 0 when there is none.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    let Some(run) = BUDGET_RUNS.get_ptr_mut(cgroup_id) else {
        return SKB_PASS;
    };
    // SAFETY: `run` points at the run's live BudgetCounters map value.
    let (counter, limit, dropped) = unsafe {
        if egress {
            (
                addr_of_mut!((*run).net_egress_bytes),
                addr_of_mut!((*run).drop_net_egress),
                addr_of_mut!((*run).net_dropped_packets),
            )
        } else {
            (
                addr_of_mut!((*run).net_ingress_bytes),
                addr_of_mut!((*run).drop_net_ingress),
                addr_of_mut!((*run).net_dropped_packets),
            )
        }
    };
    let len = u64::from(ctx.len());
    let window = if egress {
        WINDOW_NET_EGRESS
    } else {
        WINDOW_NET_INGRESS
    };
    // Both run (no short cut): the window must count every packet.
    let past_total = add_and_read(counter, len) > read(limit);
    let past_window = past_window(run, window, len);
    if past_total || past_window {
        // Segments that carry no data still leave: the resets agentd's abort of the
        // run's connections sends must reach the peers, and nothing goes with them.
        if egress && is_tcp_without_payload(ctx) {
            return SKB_PASS;
        }
        atomic_add(dropped, 1);
        return SKB_DROP;
    }
    SKB_PASS
}

/// `IPPROTO_TCP`.
const IPPROTO_TCP: u8 = 6;

/// Whether the packet (from its IP header on, as cgroup_skb programs see it) is a TCP
/// segment without payload: an ACK, FIN or RST. Anything that cannot be read, IPv6 with
/// extension headers included, counts as data.
#[inline(always)]
fn is_tcp_without_payload(ctx: &SkBuffContext) -> bool {
    let Ok(first) = ctx.load::<u8>(0) else {
        return false;
    };
    let (ip_len, proto) = match first >> 4 {
        4 => (usize::from(first & 0x0f) * 4, ctx.load::<u8>(9)),
        6 => (40, ctx.load::<u8>(6)),
        _ => return false,
    };
    if proto != Ok(IPPROTO_TCP) || ip_len < 20 {
        return false;
    }
    // The data offset: the high nibble of byte 12 of the TCP header, in 32-bit words.
    let Ok(off) = ctx.load::<u8>(ip_len + 12) else {
        return false;
    };
    let headers = ip_len + usize::from(off >> 4) * 4;
    ctx.len() as usize <= headers
}

/// Adds `value` to the run's `kind` window; SIGKILLs the current process once the
/// window is past its limit.
#[inline(always)]
fn kill_past_window(run: *mut BudgetCounters, kind: usize, value: u64) {
    if past_window(run, kind, value) {
        // SAFETY: plain helper call; it signals the current task's thread group.
        unsafe { bpf_send_signal(SIGKILL) };
    }
}

/// Adds `value` to the current bucket of the run's `kind` window (see
/// `agentd_common::budget::RateWindow`); returns whether the window is past its limit,
/// and then marks it fired for agentd.
#[inline(always)]
fn past_window(run: *mut BudgetCounters, kind: usize, value: u64) -> bool {
    // SAFETY: `run` points at the run's live BudgetCounters map value and `kind` is one
    // of the WINDOW_* constants (< WINDOW_KINDS), so every field address is inside it.
    let w = unsafe { addr_of_mut!((*run).windows[kind]) };
    // SAFETY: as above.
    let bucket_ns = read(unsafe { addr_of_mut!((*w).bucket_ns) });
    if bucket_ns == 0 {
        return false;
    }
    // SAFETY: argument-less helper.
    let epoch = unsafe { bpf_ktime_get_ns() } / bucket_ns;
    let slot = (epoch as usize) & (RATE_BUCKETS - 1);
    // SAFETY: `slot` < RATE_BUCKETS (masked), inside the window's arrays.
    let (epoch_at, count_at) = unsafe {
        (
            addr_of_mut!((*w).epochs).cast::<u64>().add(slot),
            addr_of_mut!((*w).counts).cast::<u64>().add(slot),
        )
    };
    if read(epoch_at) != epoch {
        // A new period for this bucket. Racing CPUs may each reset it; see RateWindow.
        // SAFETY: pointers into the live map value (above).
        unsafe {
            count_at.write_volatile(0);
            epoch_at.write_volatile(epoch);
        }
    }
    atomic_add(count_at, value);
    let mut used = 0u64;
    for i in 0..RATE_BUCKETS {
        // SAFETY: i < RATE_BUCKETS, inside the window's arrays.
        let (e, c) = unsafe {
            (
                read(addr_of_mut!((*w).epochs).cast::<u64>().add(i)),
                read(addr_of_mut!((*w).counts).cast::<u64>().add(i)),
            )
        };
        // Buckets of the last RATE_BUCKETS periods, this one included.
        if epoch.wrapping_sub(e) < RATE_BUCKETS as u64 {
            used = used.wrapping_add(c);
        }
    }
    // SAFETY: as above.
    if used > read(unsafe { addr_of_mut!((*w).limit) }) {
        // SAFETY: as above; a plain store of 1 is idempotent across CPUs.
        unsafe { addr_of_mut!((*w).fired).write_volatile(1) };
        return true;
    }
    false
}

/// Adds `value` to `counter`; SIGKILLs the current process once it is past `limit`.
#[inline(always)]
fn kill_past(counter: *mut u64, value: u64, limit: *mut u64) {
    if add_and_read(counter, value) > read(limit) {
        // SAFETY: plain helper call; it signals the current task's thread group.
        unsafe { bpf_send_signal(SIGKILL) };
    }
}

#[inline(always)]
fn add_and_read(counter: *mut u64, value: u64) -> u64 {
    atomic_add(counter, value);
    read(counter)
}

#[inline(always)]
fn read(ptr: *mut u64) -> u64 {
    // SAFETY: callers pass pointers into live map values.
    unsafe { ptr.read_volatile() }
}
