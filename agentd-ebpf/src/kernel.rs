//! Kernel struct offsets from the loader, and bounded reads through them.

use agentd_common::KernelOffsets;
use aya_ebpf::{helpers::bpf_probe_read_kernel, Global};

/// Member offsets read from the running kernel's BTF by the loader, which overrides this
/// `.rodata` value before loading. Compiled in as [`KernelOffsets::UNSET`], which keeps
/// every program inert.
#[unsafe(no_mangle)]
static AGENTD_KERNEL_OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::UNSET);

/// `SIGKILL` (the same number on every Linux architecture), for `bpf_send_signal`.
pub(crate) const SIGKILL: u32 = 9;

/// The offsets, or `None` if the loader did not provide them.
#[inline(always)]
pub fn offsets() -> Option<KernelOffsets> {
    let offsets = AGENTD_KERNEL_OFFSETS.load();
    if offsets.valid == 0 {
        None
    } else {
        Some(offsets)
    }
}

/// Reads a `T` at `base + offset` in kernel memory.
///
/// # Safety
///
/// `base` must be a kernel pointer to a struct that has a `T` at `offset` (offsets come
/// from the running kernel's BTF). `bpf_probe_read_kernel` tolerates faults, so a wrong
/// pointer yields `Err`, never a crash.
#[inline(always)]
pub unsafe fn read_at<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copies through the kernel's fault-tolerant
    // copy_from_kernel_nofault; the caller guarantees what the address is meant to hold.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
}
