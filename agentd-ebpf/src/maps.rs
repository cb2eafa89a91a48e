//! Maps shared by the program families. Names match `agentd_common::names`.

use agentd_common::{
    syscalls::{RUN_OBSERVE_FILES, RUN_SLOT_MASK},
    EVENTS_RING_BYTES, EVENTS_WAKE_BYTES, MAX_WATCHED_CGROUPS,
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{ring_buf::RingBufEntry, HashMap, PerCpuArray, RingBuf},
};

/// v2 cgroup id → run slot (with `RUN_OBSERVE_FILES` above it). Written by the loader
/// (`watch_cgroup` / `unwatch_cgroup`); read through [`run_slot`].
#[map]
pub static RUN_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_WATCHED_CGROUPS, 0);

/// Exec and exit records (`agentd_common::ExecEvent` / `ExitEvent`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// One per-CPU counter: records lost because the ring buffer was full.
#[map]
pub static DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The `RUN_CGROUPS` value of `cgroup_id`: its run slot, with [`RUN_OBSERVE_FILES`]
/// above it.
#[inline(always)]
pub fn run_value(cgroup_id: u64) -> Option<u32> {
    // Userspace may delete the entry concurrently, but hash-map values stay valid for
    // the RCU read section the program runs in.
    // SAFETY: the value is a plain u32, copied out immediately.
    unsafe { RUN_CGROUPS.get(cgroup_id) }.copied()
}

/// The run slot of `cgroup_id`, if a run watches it.
#[inline(always)]
pub fn run_slot(cgroup_id: u64) -> Option<u32> {
    run_value(cgroup_id).map(|v| v & RUN_SLOT_MASK)
}

/// The current task's v2 cgroup id.
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    // SAFETY: bpf_get_current_cgroup_id takes no arguments and only reads current's
    // css_set; it is allowed in tracing programs.
    unsafe { aya_ebpf::helpers::generated::bpf_get_current_cgroup_id() }
}

/// Returns the run slot of the current task's v2 cgroup if that cgroup is watched, with
/// the cgroup id.
#[inline(always)]
pub fn watched_cgroup() -> Option<(u64, u32)> {
    let cgroup_id = current_cgroup_id();
    Some((cgroup_id, run_slot(cgroup_id)?))
}

/// [`watched_cgroup`] for a run whose file syscalls are observed (`RUN_OBSERVE_FILES`).
#[inline(always)]
pub fn observed_cgroup() -> Option<(u64, u32)> {
    let cgroup_id = current_cgroup_id();
    let value = run_value(cgroup_id)?;
    (value & RUN_OBSERVE_FILES != 0).then_some((cgroup_id, value & RUN_SLOT_MASK))
}

/// Commits a reserved `EVENTS` record, waking the reader only if this record made the
/// unread data reach [`EVENTS_WAKE_BYTES`] (see there; the reader polls otherwise).
#[inline(always)]
pub fn submit<T: 'static>(entry: RingBufEntry<T>) {
    // Ring records carry an 8-byte header and are 8-byte aligned.
    let size = ((core::mem::size_of::<T>() as u64 + 8) + 7) & !7;
    let unread = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let flags = if unread >= EVENTS_WAKE_BYTES && unread < EVENTS_WAKE_BYTES + size {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(u64::from(flags));
}

/// Counts one record lost to a full ring buffer. Drops are never silent: userspace sums
/// the per-CPU values (`BpfRuntime::dropped`).
#[inline(always)]
pub fn count_drop() {
    if let Some(counter) = DROPPED.get_ptr_mut(0) {
        atomic_add(counter, 1);
    }
}

/// `lock *(u64 *)(ptr + 0) += value` (BPF_ATOMIC | BPF_ADD). Rust's `AtomicU64::fetch_add`
/// is not available on the BPF target (no compare-and-swap), and a plain `+=` could lose
/// a count when a program on the same CPU is preempted mid-increment.
#[cfg(target_arch = "bpf")]
#[inline(always)]
pub fn atomic_add(ptr: *mut u64, value: u64) {
    // `ptr` comes from bpf_map_lookup_elem, which the verifier tracks as a map-value
    // pointer.
    // SAFETY: an 8-byte, 8-aligned slot of a live map value; the instruction only adds.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({ptr} + 0) += {value}",
            ptr = in(reg) ptr,
            value = in(reg) value,
            options(nostack, preserves_flags),
        );
    }
}

/// Host build (workspace-wide checks only): never runs.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
pub fn atomic_add(ptr: *mut u64, value: u64) {
    // SAFETY: the host build of this crate is an empty binary that never calls this; the
    // body only keeps the signature type-checked.
    let counter = unsafe { core::sync::atomic::AtomicU64::from_ptr(ptr) };
    counter.fetch_add(value, core::sync::atomic::Ordering::Relaxed);
}
