//! Types shared by the agentd eBPF programs and the userspace loader.
//!
//! Everything that crosses the kernel boundary lives here and nowhere else: ring-buffer
//! event records, map keys and values, and the names of maps, programs and `.rodata`
//! globals. Every struct is `#[repr(C)]` with explicit padding fields, uses only
//! fixed-width integers (no `usize`, no Rust enums, no `bool`) and has its size and
//! field offsets pinned by const asserts below and by unit tests.
//!
//! The `user` feature adds the `aya::Pod` impls the loader needs; the eBPF side builds
//! without it and never pulls in `std`.
#![no_std]

pub mod budget;
pub mod denials;
pub mod fsrules;
pub mod net;
pub mod syscalls;
pub mod unix;

// ---------------------------------------------------------------------------------------
// Names shared by both sides
// ---------------------------------------------------------------------------------------

/// Map and program names, as the eBPF object defines them and the loader looks them up.
pub mod names {
    /// `HashMap<u64, u32>`: v2 cgroup id (inode number) to run slot.
    pub const MAP_RUN_CGROUPS: &str = "RUN_CGROUPS";
    /// `RingBuf` carrying [`super::ExecEvent`] and [`super::ExitEvent`] records.
    pub const MAP_EVENTS: &str = "EVENTS";
    /// `PerCpuArray<u64>` with one entry: ring-buffer records that could not be reserved.
    pub const MAP_DROPPED: &str = "DROPPED";

    /// `tp_btf/sched_process_exec` program.
    pub const PROG_SCHED_PROCESS_EXEC: &str = "sched_process_exec";
    /// `tp_btf/sched_process_exit` program.
    pub const PROG_SCHED_PROCESS_EXIT: &str = "sched_process_exit";
    /// Trivial `lsm/file_open` program, only used to probe whether BPF LSM loads.
    pub const PROG_PROBE_LSM_FILE_OPEN: &str = "probe_lsm_file_open";
    /// Trivial `cgroup/connect4` program (allows everything), only used to probe
    /// cgroup-BPF attachment.
    pub const PROG_PROBE_CGROUP_CONNECT4: &str = "probe_cgroup_connect4";

    /// Kernel tracepoint the exec program attaches to.
    pub const TP_SCHED_PROCESS_EXEC: &str = "sched_process_exec";
    /// Kernel tracepoint the exit program attaches to.
    pub const TP_SCHED_PROCESS_EXIT: &str = "sched_process_exit";
    /// LSM hook of the probe program.
    pub const LSM_HOOK_FILE_OPEN: &str = "file_open";

    /// `.rodata` global holding a [`super::KernelOffsets`].
    pub const GLOBAL_KERNEL_OFFSETS: &str = "AGENTD_KERNEL_OFFSETS";
}

// ---------------------------------------------------------------------------------------
// Sizes and limits
// ---------------------------------------------------------------------------------------

/// Length of `task_struct.comm` (`TASK_COMM_LEN`), NUL included.
pub const COMM_LEN: usize = 16;
/// Bytes reserved for `linux_binprm.filename`, NUL included. Longer names are truncated
/// and flagged with [`EXEC_FLAG_FILENAME_TRUNCATED`].
pub const FILENAME_LEN: usize = 256;
/// Size of the `EVENTS` ring buffer in bytes (a power-of-two multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;
/// The programs wake the reader only when a record makes the unread data in `EVENTS`
/// reach this many bytes; every other record is committed without a wake-up, and the
/// reader polls every [`EVENTS_POLL_MS`]. A wake-up is an irq_work self-interrupt on the
/// producing CPU (under a hypervisor, an APIC write that exits to it): the kernel's
/// default, a wake-up whenever the reader had caught up, cost a sparse producer such as
/// a fork+exec loop ~10% (two records per exec).
pub const EVENTS_WAKE_BYTES: u64 = 16 * 1024;
/// How often the reader looks at `EVENTS` without a wake-up, in milliseconds: the
/// longest a record waits to be audited while the ring is quiet.
pub const EVENTS_POLL_MS: u64 = 10;
/// Maximum number of cgroups watched at the same time (`RUN_CGROUPS` entries).
pub const MAX_WATCHED_CGROUPS: u32 = 1024;

/// `SIGNAL_GROUP_EXIT` from `include/linux/sched/signal.h`: `signal_struct.flags` bit set
/// once a group exit (exit_group or a fatal signal) is under way. A `#define`, so not in
/// BTF; its value has been stable since Linux 2.6.
pub const SIGNAL_GROUP_EXIT: u32 = 0x0000_0004;

// ---------------------------------------------------------------------------------------
// Ring-buffer records
// ---------------------------------------------------------------------------------------

/// [`EventHeader::kind`] of an [`ExecEvent`].
pub const EVENT_KIND_EXEC: u32 = 1;
/// [`EventHeader::kind`] of an [`ExitEvent`].
pub const EVENT_KIND_EXIT: u32 = 2;

/// [`ExecEvent::flags`] bit: `filename` was cut at [`FILENAME_LEN`] - 1 bytes.
pub const EXEC_FLAG_FILENAME_TRUNCATED: u32 = 1 << 0;
/// [`ExecEvent::flags`] bit: reading `linux_binprm.filename` failed; `filename` is empty.
pub const EXEC_FLAG_FILENAME_UNREADABLE: u32 = 1 << 1;
/// [`ExecEvent::flags`] bit: reading `task->real_parent->tgid` failed; `ppid` is 0.
pub const EXEC_FLAG_PPID_UNREADABLE: u32 = 1 << 2;

/// [`ExitEvent::flags`] bit: reading the exit code from the task failed; `exit_code` is 0.
pub const EXIT_FLAG_CODE_UNREADABLE: u32 = 1 << 0;

/// `task_struct.seccomp.mode` of a task a seccomp filter killed (`SECCOMP_MODE_DEAD` in
/// `kernel/seccomp.c`, Linux 5.17+: `SECCOMP_MODE_FILTER + 1`).
pub const SECCOMP_MODE_DEAD: i32 = 3;
/// `thread_info.status` bit of a task in a 32-bit syscall (x86 `TS_COMPAT`).
pub const TS_COMPAT: u32 = 0x0002;

/// Common first part of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// One of the `EVENT_KIND_*` constants.
    pub kind: u32,
    /// Run slot the cgroup was registered with (value in `RUN_CGROUPS`).
    pub run_slot: u32,
    /// Thread-group id (the userspace "pid").
    pub tgid: u32,
    /// Thread id (the userspace "tid").
    pub pid: u32,
    /// v2 cgroup id (`bpf_get_current_cgroup_id`, equal to the cgroup directory's inode).
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the event.
    pub ktime_ns: u64,
}

/// `tp_btf/sched_process_exec`: a process in a watched cgroup completed an execve.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    /// `kind` is [`EVENT_KIND_EXEC`].
    pub header: EventHeader,
    /// `task->real_parent->tgid`.
    pub ppid: u32,
    /// Real uid after the exec (`bpf_get_current_uid_gid() & 0xffff_ffff`).
    pub uid: u32,
    /// Bytes of `filename` before the NUL (at most [`FILENAME_LEN`] - 1).
    pub filename_len: u32,
    /// `EXEC_FLAG_*` bits.
    pub flags: u32,
    /// `task->comm` after the exec, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// `linux_binprm.filename` (the path as passed to execve), NUL-terminated; bytes after
    /// the NUL are unspecified.
    pub filename: [u8; FILENAME_LEN],
}

/// `tp_btf/sched_process_exit`: the last thread of a process in a watched cgroup exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    /// `kind` is [`EVENT_KIND_EXIT`].
    pub header: EventHeader,
    /// Wait status as `wait4` would report it (`signal->group_exit_code` during a group
    /// exit, else the thread-group leader's `exit_code`).
    pub exit_code: i32,
    /// `EXIT_FLAG_*` bits.
    pub flags: u32,
}

// ---------------------------------------------------------------------------------------
// `.rodata` configuration written by the loader
// ---------------------------------------------------------------------------------------

/// Kernel struct member offsets (bytes), read from `/sys/kernel/btf/vmlinux` by the
/// loader and written into the `.rodata` global [`names::GLOBAL_KERNEL_OFFSETS`], because
/// Rust eBPF has no CO-RE relocations.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.real_parent` (a `struct task_struct *`).
    pub task_real_parent: u32,
    /// `task_struct.tgid` (a `pid_t`).
    pub task_tgid: u32,
    /// `task_struct.exit_code` (an `int`).
    pub task_exit_code: u32,
    /// `task_struct.group_leader` (a `struct task_struct *`).
    pub task_group_leader: u32,
    /// `task_struct.signal` (a `struct signal_struct *`).
    pub task_signal: u32,
    /// `signal_struct.flags` (an `unsigned int`).
    pub signal_flags: u32,
    /// `signal_struct.group_exit_code` (an `int`).
    pub signal_group_exit_code: u32,
    /// `linux_binprm.filename` (a `const char *`).
    pub binprm_filename: u32,
    /// 1 when `sched_process_exit` has the `bool group_dead` argument (Linux 6.16+):
    /// an exit is then reported once per process, when its last thread exits.
    /// 0 on older kernels: an exit is reported when the thread-group leader exits.
    pub exit_has_group_dead: u32,
    /// `task_struct.seccomp.mode` (an `int`): [`SECCOMP_MODE_DEAD`] once a seccomp filter
    /// killed the task (`__seccomp_filter` sets it before the fatal `SIGSYS`).
    pub task_seccomp_mode: u32,
    /// `task_struct.thread_info.status` (a `u32`): [`TS_COMPAT`] while the task is in a
    /// 32-bit (`int 0x80`) syscall, still set when a seccomp kill makes it exit.
    pub task_thread_status: u32,
    /// 1 once the loader has filled this struct. The programs emit nothing while it is 0,
    /// so an object loaded without offsets can never read through zero offsets.
    pub valid: u32,
}

impl KernelOffsets {
    /// All-zero value compiled into the object; `valid == 0` keeps the programs inert.
    pub const UNSET: Self = Self {
        task_real_parent: 0,
        task_tgid: 0,
        task_exit_code: 0,
        task_group_leader: 0,
        task_signal: 0,
        signal_flags: 0,
        signal_group_exit_code: 0,
        binprm_filename: 0,
        exit_has_group_dead: 0,
        task_seccomp_mode: 0,
        task_thread_status: 0,
        valid: 0,
    };
}

// ---------------------------------------------------------------------------------------
// Layout pins (checked at compile time on both sides, and again by the tests below)
// ---------------------------------------------------------------------------------------

/// Size of [`EventHeader`] in bytes.
pub const EVENT_HEADER_SIZE: usize = 32;
/// Size of [`ExecEvent`] in bytes.
pub const EXEC_EVENT_SIZE: usize = 48 + COMM_LEN + FILENAME_LEN;
/// Size of [`ExitEvent`] in bytes.
pub const EXIT_EVENT_SIZE: usize = 40;
/// Size of [`KernelOffsets`] in bytes.
pub const KERNEL_OFFSETS_SIZE: usize = 48;

const _: () = {
    use core::mem::{align_of, offset_of, size_of};

    assert!(size_of::<EventHeader>() == EVENT_HEADER_SIZE);
    assert!(align_of::<EventHeader>() == 8);
    assert!(offset_of!(EventHeader, kind) == 0);
    assert!(offset_of!(EventHeader, run_slot) == 4);
    assert!(offset_of!(EventHeader, tgid) == 8);
    assert!(offset_of!(EventHeader, pid) == 12);
    assert!(offset_of!(EventHeader, cgroup_id) == 16);
    assert!(offset_of!(EventHeader, ktime_ns) == 24);

    assert!(size_of::<ExecEvent>() == EXEC_EVENT_SIZE);
    assert!(align_of::<ExecEvent>() == 8);
    assert!(offset_of!(ExecEvent, header) == 0);
    assert!(offset_of!(ExecEvent, ppid) == 32);
    assert!(offset_of!(ExecEvent, uid) == 36);
    assert!(offset_of!(ExecEvent, filename_len) == 40);
    assert!(offset_of!(ExecEvent, flags) == 44);
    assert!(offset_of!(ExecEvent, comm) == 48);
    assert!(offset_of!(ExecEvent, filename) == 64);

    assert!(size_of::<ExitEvent>() == EXIT_EVENT_SIZE);
    assert!(align_of::<ExitEvent>() == 8);
    assert!(offset_of!(ExitEvent, header) == 0);
    assert!(offset_of!(ExitEvent, exit_code) == 32);
    assert!(offset_of!(ExitEvent, flags) == 36);

    assert!(size_of::<KernelOffsets>() == KERNEL_OFFSETS_SIZE);
    assert!(align_of::<KernelOffsets>() == 4);
    assert!(offset_of!(KernelOffsets, task_real_parent) == 0);
    assert!(offset_of!(KernelOffsets, task_tgid) == 4);
    assert!(offset_of!(KernelOffsets, task_exit_code) == 8);
    assert!(offset_of!(KernelOffsets, task_group_leader) == 12);
    assert!(offset_of!(KernelOffsets, task_signal) == 16);
    assert!(offset_of!(KernelOffsets, signal_flags) == 20);
    assert!(offset_of!(KernelOffsets, signal_group_exit_code) == 24);
    assert!(offset_of!(KernelOffsets, binprm_filename) == 28);
    assert!(offset_of!(KernelOffsets, exit_has_group_dead) == 32);
    assert!(offset_of!(KernelOffsets, task_seccomp_mode) == 36);
    assert!(offset_of!(KernelOffsets, task_thread_status) == 40);
    assert!(offset_of!(KernelOffsets, valid) == 44);

    // The kernel reserves ring-buffer records at 8-byte boundaries.
    assert!(EXEC_EVENT_SIZE.is_multiple_of(8));
    assert!(EXIT_EVENT_SIZE.is_multiple_of(8));
    // bpf_ringbuf_reserve needs a power-of-two multiple of the (4 KiB) page size.
    assert!(EVENTS_RING_BYTES.is_power_of_two() && EVENTS_RING_BYTES >= 4096);
};

// ---------------------------------------------------------------------------------------
// Userspace-only impls
// ---------------------------------------------------------------------------------------

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, only integer fields, no implicit padding (pinned by the const
    // asserts above), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above; integer fields and byte arrays only, no implicit padding.
    unsafe impl aya::Pod for super::ExecEvent {}
    // SAFETY: as above; integer fields only, no implicit padding.
    unsafe impl aya::Pod for super::ExitEvent {}
    // SAFETY: as above; `u32` fields only, no implicit padding.
    unsafe impl aya::Pod for super::KernelOffsets {}
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, offset_of, size_of};

    use super::*;

    #[test]
    fn event_header_layout() {
        assert_eq!(size_of::<EventHeader>(), 32);
        assert_eq!(align_of::<EventHeader>(), 8);
        assert_eq!(offset_of!(EventHeader, kind), 0);
        assert_eq!(offset_of!(EventHeader, run_slot), 4);
        assert_eq!(offset_of!(EventHeader, tgid), 8);
        assert_eq!(offset_of!(EventHeader, pid), 12);
        assert_eq!(offset_of!(EventHeader, cgroup_id), 16);
        assert_eq!(offset_of!(EventHeader, ktime_ns), 24);
    }

    #[test]
    fn exec_event_layout() {
        assert_eq!(size_of::<ExecEvent>(), 48 + 16 + 256);
        assert_eq!(size_of::<ExecEvent>(), EXEC_EVENT_SIZE);
        assert_eq!(align_of::<ExecEvent>(), 8);
        assert_eq!(offset_of!(ExecEvent, header), 0);
        assert_eq!(offset_of!(ExecEvent, ppid), 32);
        assert_eq!(offset_of!(ExecEvent, uid), 36);
        assert_eq!(offset_of!(ExecEvent, filename_len), 40);
        assert_eq!(offset_of!(ExecEvent, flags), 44);
        assert_eq!(offset_of!(ExecEvent, comm), 48);
        assert_eq!(offset_of!(ExecEvent, filename), 64);
        assert_eq!(
            offset_of!(ExecEvent, filename) + FILENAME_LEN,
            size_of::<ExecEvent>(),
            "no tail padding"
        );
    }

    #[test]
    fn exit_event_layout() {
        assert_eq!(size_of::<ExitEvent>(), 40);
        assert_eq!(align_of::<ExitEvent>(), 8);
        assert_eq!(offset_of!(ExitEvent, header), 0);
        assert_eq!(offset_of!(ExitEvent, exit_code), 32);
        assert_eq!(offset_of!(ExitEvent, flags), 36);
    }

    #[test]
    fn kernel_offsets_layout() {
        assert_eq!(size_of::<KernelOffsets>(), 48);
        assert_eq!(align_of::<KernelOffsets>(), 4);
        assert_eq!(offset_of!(KernelOffsets, task_real_parent), 0);
        assert_eq!(offset_of!(KernelOffsets, task_tgid), 4);
        assert_eq!(offset_of!(KernelOffsets, task_exit_code), 8);
        assert_eq!(offset_of!(KernelOffsets, task_group_leader), 12);
        assert_eq!(offset_of!(KernelOffsets, task_signal), 16);
        assert_eq!(offset_of!(KernelOffsets, signal_flags), 20);
        assert_eq!(offset_of!(KernelOffsets, signal_group_exit_code), 24);
        assert_eq!(offset_of!(KernelOffsets, binprm_filename), 28);
        assert_eq!(offset_of!(KernelOffsets, exit_has_group_dead), 32);
        assert_eq!(offset_of!(KernelOffsets, task_seccomp_mode), 36);
        assert_eq!(offset_of!(KernelOffsets, task_thread_status), 40);
        assert_eq!(offset_of!(KernelOffsets, valid), 44);
        assert_eq!(KernelOffsets::UNSET.valid, 0);
    }

    /// Record kinds are allocated in several modules (branches once collided on 3):
    /// every kind that crosses the ring buffer must be unique and non-zero.
    #[test]
    fn every_ring_buffer_record_kind_is_unique() {
        let kinds = [
            ("exec", EVENT_KIND_EXEC),
            ("exit", EVENT_KIND_EXIT),
            ("denial", crate::denials::EVENT_KIND_DENIAL),
            ("net", crate::net::EVENT_KIND_NET),
            ("fs", crate::fsrules::EVENT_KIND_FS),
            ("unix", crate::unix::EVENT_KIND_UNIX),
            ("refer denial", crate::denials::EVENT_KIND_REFER_DENIAL),
        ];
        for (i, (a, ka)) in kinds.iter().enumerate() {
            assert_ne!(*ka, 0, "{a}: 0 must never be a valid kind");
            for (b, kb) in &kinds[i + 1..] {
                assert_ne!(ka, kb, "{a} and {b} share record kind {ka}");
            }
        }
    }

    #[test]
    fn kinds_and_flags_are_distinct() {
        assert_ne!(EVENT_KIND_EXEC, EVENT_KIND_EXIT);
        assert_ne!(EVENT_KIND_EXEC, 0, "0 must never be a valid kind");
        assert_ne!(EVENT_KIND_EXIT, 0, "0 must never be a valid kind");
        let exec_flags = [
            EXEC_FLAG_FILENAME_TRUNCATED,
            EXEC_FLAG_FILENAME_UNREADABLE,
            EXEC_FLAG_PPID_UNREADABLE,
        ];
        for (i, a) in exec_flags.iter().enumerate() {
            assert_eq!(a.count_ones(), 1);
            for b in &exec_flags[i + 1..] {
                assert_eq!(a & b, 0);
            }
        }
    }

    #[test]
    fn ring_size_is_valid() {
        assert!(EVENTS_RING_BYTES.is_power_of_two());
        assert!(EVENTS_RING_BYTES.is_multiple_of(4096));
    }
}
