//! Pathname unix sockets (see `agentd_common::unix` for the maps, the record and the two
//! enforcement paths).
//!
//! - cgroup fallback: [`unix_cgroup_connect`] / [`unix_cgroup_sendmsg`] are built as
//!   plain `cgroup/connect4`-section programs (aya 0.14 does not know the unix attach
//!   types) and loaded by agentd through raw `bpf(BPF_PROG_LOAD)` with
//!   `BPF_CGROUP_UNIX_CONNECT` / `BPF_CGROUP_UNIX_SENDMSG`. Their context is the kernel's
//!   `struct bpf_sock_addr_kern`; the address is read through its `uaddr` pointer with
//!   `bpf_probe_read_kernel` (offsets from BTF), since the `bpf_cast_to_kern_ctx` kfunc
//!   is out of reach from Rust eBPF.
//! - [`on_connected`] (from the `tp_btf/sys_exit` dispatcher): the fallback's backstop: a successful `connect()` on an AF_UNIX
//!   socket whose peer inode is outside the allowed set gets SIGKILL before the syscall
//!   returns (symlinks / hardlinks in a writable tree that the string check cannot see).
//! - BPF LSM: [`unix_lsm_stream_connect`] / [`unix_lsm_may_send`] judge the peer inode
//!   and fail with -EPERM.

use core::ptr::addr_of_mut;

use agentd_common::{
    fsrules::{FsOffsets, FsRuleKey},
    unix::{
        path_not_canonical, UnixEvent, UnixNamedKey, UnixOffsets, UnixRule, UnixScratch,
        EVENT_KIND_UNIX, UNIX_ACTION_DENY, UNIX_ACTION_KILL, UNIX_ACTION_WOULD_DENY,
        UNIX_FLAG_AUDIT_ONLY, UNIX_KEY_LEN, UNIX_LAYER_CGROUP, UNIX_LAYER_LSM,
        UNIX_LAYER_TRACEPOINT, UNIX_MAX_DEPTH, UNIX_MAX_ENTRIES, UNIX_NAME_LEN, UNIX_OP_CONNECT,
        UNIX_OP_SENDMSG, UNIX_PATH_MAX, UNIX_PATH_WORDS, UNIX_REASON_NOT_CANONICAL,
        UNIX_REASON_NO_RULE, UNIX_REASON_NO_RUN, UNIX_REASON_UNREADABLE,
    },
    EventHeader, MAX_WATCHED_CGROUPS,
};
use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel_str, bpf_send_signal,
    },
    macros::{cgroup_sock_addr, lsm, map},
    maps::{
        lpm_trie::{Key, LpmTrie},
        HashMap, LruHashMap, PerCpuArray,
    },
    programs::{LsmContext, SockAddrContext},
    Global,
};

use crate::{
    fsrules::{fd_file, AGENTD_FS_OFFSETS},
    inode_walk::dentry_id,
    kernel::{read_at, SIGKILL},
    maps::{count_drop, submit, watched_cgroup, EVENTS},
};

/// Run slot + canonical path prefix → rule (`MAP_UNIX_PREFIXES`).
#[map]
static UNIX_PREFIXES: LpmTrie<[u8; UNIX_KEY_LEN], UnixRule> =
    LpmTrie::with_max_entries(UNIX_MAX_ENTRIES, 0);
/// Allowed directories (or sockets) by inode.
#[map]
static UNIX_INODES: HashMap<FsRuleKey, UnixRule> = HashMap::with_max_entries(UNIX_MAX_ENTRIES, 0);
/// Allowed sockets by directory inode + name.
#[map]
static UNIX_NAMED: HashMap<UnixNamedKey, UnixRule> = HashMap::with_max_entries(UNIX_MAX_ENTRIES, 0);
/// Run slot → `UNIX_FLAG_*` (no entry: the run is not mediated).
#[map]
static UNIX_RUNS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_WATCHED_CGROUPS, 0);
/// Connects already reported as would-deny by the cgroup hook (audit mode).
#[map]
static UNIX_REPORTED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);
/// Per-CPU lookup keys.
#[map]
static UNIX_SCRATCH: PerCpuArray<UnixScratch> = PerCpuArray::with_max_entries(1, 0);

/// Offsets from the loader (`.rodata`).
#[unsafe(no_mangle)]
pub(crate) static AGENTD_UNIX_OFFSETS: Global<UnixOffsets> = Global::new(UnixOffsets::UNSET);

const ALLOW: i32 = 1;
const DENY: i32 = 0;
const EPERM: i32 = 1;
const AF_UNIX: u16 = 1;

#[cgroup_sock_addr(connect4)]
pub fn unix_cgroup_connect(ctx: SockAddrContext) -> i32 {
    cgroup_check(ctx.sock_addr as *const u8, UNIX_OP_CONNECT)
}

#[cgroup_sock_addr(connect4)]
pub fn unix_cgroup_sendmsg(ctx: SockAddrContext) -> i32 {
    cgroup_check(ctx.sock_addr as *const u8, UNIX_OP_SENDMSG)
}

/// The run's slot and `UNIX_FLAG_*`, if the current task belongs to a mediated run.
#[inline(always)]
fn mediated_run() -> Option<(u64, u32, u32)> {
    let (cgroup_id, slot) = watched_cgroup()?;
    // SAFETY: plain u32 copied out at once.
    let flags = unsafe { UNIX_RUNS.get(slot) }.copied()?;
    Some((cgroup_id, slot, flags))
}

/// Judges the address string of a connect/sendmsg (`ctx` is a `bpf_sock_addr_kern *`).
#[inline(always)]
fn cgroup_check(ctx: *const u8, op: u32) -> i32 {
    let offs = AGENTD_UNIX_OFFSETS.load();
    let Some(scratch) = UNIX_SCRATCH.get_ptr_mut(0) else {
        return DENY;
    };
    let Some((cgroup_id, slot)) = watched_cgroup() else {
        return report(ctx, op, UNIX_REASON_NO_RUN, 0, 0, 0, scratch, 0);
    };
    // SAFETY: plain u32 copied out at once.
    let Some(flags) = (unsafe { UNIX_RUNS.get(slot) }).copied() else {
        return report(ctx, op, UNIX_REASON_NO_RUN, cgroup_id, slot, 0, scratch, 0);
    };
    if offs.valid == 0 {
        return report(
            ctx,
            op,
            UNIX_REASON_UNREADABLE,
            cgroup_id,
            slot,
            flags,
            scratch,
            0,
        );
    }
    // SAFETY: `ctx` is the kernel's `struct bpf_sock_addr_kern` for this run of the
    // program; offsets come from BTF and the reads are fault tolerant.
    let (uaddr, uaddrlen) = unsafe {
        (
            read_at::<*const u8>(ctx, offs.sa_kern_uaddr),
            read_at::<u32>(ctx, offs.sa_kern_uaddrlen),
        )
    };
    let (Ok(uaddr), Ok(uaddrlen)) = (uaddr, uaddrlen) else {
        return report(
            ctx,
            op,
            UNIX_REASON_UNREADABLE,
            cgroup_id,
            slot,
            flags,
            scratch,
            0,
        );
    };
    // sun_path bytes the caller passed (the kernel validated 2 < len <= 110).
    let passed = (uaddrlen as usize).saturating_sub(2);
    let size = if passed > UNIX_PATH_MAX {
        UNIX_PATH_MAX
    } else {
        passed
    } + 1;
    // Copy up to the first NUL or the passed length, NUL-terminated: exactly the name
    // the kernel will look up (it terminates the address at its length too).
    // `scratch` is this CPU's map value; `uaddr` points to the kernel's copy of the
    // address (a 128-byte sockaddr_storage).
    // SAFETY: `data` has UNIX_KEY_LEN bytes; at most UNIX_PATH_MAX + 1 are written
    // after the 4-byte slot, by a fault-tolerant helper.
    let copied = unsafe {
        let data = addr_of_mut!((*scratch).lpm.data).cast::<u8>();
        // Zero the path area first: the check below reads it whole, and the per-CPU
        // scratch still holds the previous call's path past this one's NUL.
        core::ptr::write_bytes(data.add(4), 0, UNIX_KEY_LEN - 4);
        bpf_probe_read_kernel_str(data.add(4).cast(), size as u32, uaddr.add(2).cast())
    };
    if copied <= 0 {
        return report(
            ctx,
            op,
            UNIX_REASON_UNREADABLE,
            cgroup_id,
            slot,
            flags,
            scratch,
            0,
        );
    }
    // The volatile round trip hides `len`'s provenance from the optimiser, so the mask
    // (which the verifier needs as a bound) survives into the bytecode.
    let len = copied as usize - 1;
    // SAFETY: reads back a local.
    let len = unsafe { core::ptr::read_volatile(&len) } & 0x7f;
    if len == 0 {
        // Abstract socket (leading NUL): scoped by landlock, not judged here.
        return ALLOW;
    }
    // SAFETY: as above; bounded indices into the map value.
    let data = unsafe { &mut (*scratch).lpm.data };
    // Absolute, and no `//`, `/./`, `/../`, nor a trailing `/`, `/.` or `/..`. The
    // whole area is scanned, with no exit at `len`: everything past the NUL is zero
    // (never a `/`), and an exit per length would make the verifier walk the rest of
    // the program once per possible length (it cost ~200 ms of every run's start-up).
    // The scan is word-at-a-time and branch-free: a compare per byte made each program
    // 56k verified instructions, now about 10k.
    let canonical = agentd_unix_path_bad() == 0;
    if !canonical {
        return report(
            ctx,
            op,
            UNIX_REASON_NOT_CANONICAL,
            cgroup_id,
            slot,
            flags,
            scratch,
            len as u32,
        );
    }
    data[..4].copy_from_slice(&slot.to_be_bytes());
    // SAFETY: as above.
    unsafe { (*scratch).lpm.prefix_len = 32 + 8 * (len as u32 + 1) };
    // SAFETY: UnixLpmKey has exactly the layout of aya's packed Key<[u8; UNIX_KEY_LEN]>
    // (a u32 then the bytes, no padding; pinned in agentd-common).
    let key = unsafe { &*(addr_of_mut!((*scratch).lpm) as *const Key<[u8; UNIX_KEY_LEN]>) };
    if UNIX_PREFIXES.get(key).is_some() {
        if op == UNIX_OP_CONNECT && flags & UNIX_FLAG_AUDIT_ONLY != 0 {
            // SAFETY: bpf_get_current_pid_tgid takes no arguments.
            let _ = UNIX_REPORTED.remove(unsafe { bpf_get_current_pid_tgid() });
        }
        return ALLOW;
    }
    report(
        ctx,
        op,
        UNIX_REASON_NO_RULE,
        cgroup_id,
        slot,
        flags,
        scratch,
        len as u32,
    )
}

/// Whether this CPU's scratch path (`UNIX_SCRATCH`) is not canonical (1) or is (0),
/// by [`path_not_canonical`]; 0 if the scratch cannot be had (the caller has it).
///
/// Global (exported, so its BTF linkage is global): the kernel verifies it once, on its
/// own, not once per path of each caller through it.
#[no_mangle]
#[inline(never)]
pub extern "C" fn agentd_unix_path_bad() -> u32 {
    let Some(scratch) = UNIX_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let mut words = [0u64; UNIX_PATH_WORDS];
    // SAFETY: this CPU's map value; the path area is UNIX_PATH_WORDS * 8 bytes after the
    // 4-byte slot, read unaligned.
    unsafe {
        let area = addr_of_mut!((*scratch).lpm.data).cast::<u8>().add(4);
        for (k, w) in words.iter_mut().enumerate() {
            *w = area.add(8 * k).cast::<u64>().read_unaligned();
        }
    }
    u32::from(path_not_canonical(&words))
}

/// Records a cgroup-layer denial and returns the verdict (`ALLOW` in audit mode).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn report(
    ctx: *const u8,
    op: u32,
    reason: u32,
    cgroup_id: u64,
    slot: u32,
    flags: u32,
    scratch: *mut UnixScratch,
    len: u32,
) -> i32 {
    let audit_only = flags & UNIX_FLAG_AUDIT_ONLY != 0;
    let action = if audit_only {
        UNIX_ACTION_WOULD_DENY
    } else {
        UNIX_ACTION_DENY
    };
    if audit_only && op == UNIX_OP_CONNECT && !ctx.is_null() {
        let offs = AGENTD_UNIX_OFFSETS.load();
        // SAFETY: `ctx` is the hook's `bpf_sock_addr_kern *`; fault-tolerant read.
        if let Ok(sk) = unsafe { read_at::<u64>(ctx, offs.sa_kern_sk) } {
            // SAFETY: argument-less helper.
            let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
            let _ = UNIX_REPORTED.insert(pid_tgid, sk, 0);
        }
    }
    if let Some(mut entry) = EVENTS.reserve::<UnixEvent>(0) {
        let event: *mut UnixEvent = entry.as_mut_ptr();
        // SAFETY: `event` is a reserved record of size_of::<UnixEvent>() bytes and
        // `scratch` this CPU's map value; 8-byte copies within both.
        unsafe {
            write_decision(
                event,
                slot,
                cgroup_id,
                Decision {
                    op,
                    layer: UNIX_LAYER_CGROUP,
                    action,
                    reason,
                    dev: 0,
                    ino: 0,
                },
            );
            let len = if len > UNIX_PATH_MAX as u32 {
                UNIX_PATH_MAX as u32
            } else {
                len
            };
            addr_of_mut!((*event).path_len).write(len);
            let src = addr_of_mut!((*scratch).lpm.data).cast::<u8>().add(4);
            let dst = addr_of_mut!((*event).path).cast::<u8>();
            for i in 0..14 {
                dst.add(i * 8)
                    .cast::<[u8; 8]>()
                    .write_unaligned(src.add(i * 8).cast::<[u8; 8]>().read_unaligned());
            }
        }
        submit(entry);
    } else {
        count_drop();
    }
    if audit_only {
        ALLOW
    } else {
        DENY
    }
}

/// The fixed fields of a [`UnixEvent`] besides its header and path.
struct Decision {
    op: u32,
    layer: u32,
    action: u32,
    reason: u32,
    dev: u32,
    ino: u64,
}

/// Writes the header and the decision fields of a record (the caller writes the path).
///
/// # Safety
/// `event` must point to a reserved, writable [`UnixEvent`].
#[inline(always)]
unsafe fn write_decision(event: *mut UnixEvent, slot: u32, cgroup_id: u64, d: Decision) {
    // SAFETY: argument-less helpers; the writes target the caller's reserved record.
    unsafe {
        let pid_tgid = bpf_get_current_pid_tgid();
        addr_of_mut!((*event).header).write(EventHeader {
            kind: EVENT_KIND_UNIX,
            run_slot: slot,
            tgid: (pid_tgid >> 32) as u32,
            pid: pid_tgid as u32,
            cgroup_id,
            ktime_ns: bpf_ktime_get_ns(),
        });
        addr_of_mut!((*event).op).write(d.op);
        addr_of_mut!((*event).layer).write(d.layer);
        addr_of_mut!((*event).action).write(d.action);
        addr_of_mut!((*event).reason).write(d.reason);
        addr_of_mut!((*event).dev).write(d.dev);
        addr_of_mut!((*event).ino).write(d.ino);
    }
}

/// The `struct sock *` of socket `fd` of the current task, and its family; for an fd a
/// socket call just succeeded on (its file's private_data is its `struct socket *`).
#[inline(always)]
pub(crate) fn fd_sock(fs: &FsOffsets, offs: &UnixOffsets, fd: u64) -> Option<(*const u8, u16)> {
    let file = fd_file(fs, fd)?;
    // SAFETY: BTF offsets, bpf_probe_read_kernel: every read is fault tolerant.
    unsafe {
        let sock = read_at::<*const u8>(file, offs.file_private_data).ok()?;
        let sk = read_at::<*const u8>(sock, offs.socket_sk).ok()?;
        let family = read_at::<u16>(sk, offs.sock_family).ok()?;
        Some((sk, family))
    }
}

/// A mediated run's `connect(fd, ...)` succeeded: kill the process if `fd` is an AF_UNIX
/// socket whose peer is outside the allowed inodes. Called from the `tp_btf/sys_exit`
/// dispatcher (`syscalls.rs`).
#[inline(never)]
pub(crate) fn on_connected(fd: u64) {
    let fs = AGENTD_FS_OFFSETS.load();
    let offs = AGENTD_UNIX_OFFSETS.load();
    if fs.valid == 0 || offs.valid == 0 {
        return;
    }
    let Some((cgroup_id, slot, flags)) = mediated_run() else {
        return;
    };
    // connect() succeeded on this fd, so it is a socket.
    let Some((sk, family)) = fd_sock(&fs, &offs, fd) else {
        return;
    };
    if family != AF_UNIX {
        return;
    }
    // `struct unix_sock` starts with its `struct sock`.
    // SAFETY: a BTF offset, bpf_probe_read_kernel (fault tolerant).
    let Ok(peer) = (unsafe { read_at::<*const u8>(sk, offs.unix_peer) }) else {
        return;
    };
    if peer.is_null() {
        return;
    }
    if let Some((dev, ino)) = outside(&fs, &offs, peer, slot) {
        let kill = flags & UNIX_FLAG_AUDIT_ONLY == 0;
        if !kill {
            // SAFETY: argument-less helper; the value is copied out at once.
            let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
            // SAFETY: as above.
            let reported = unsafe { UNIX_REPORTED.get(pid_tgid) }.copied();
            if reported.is_some() {
                let _ = UNIX_REPORTED.remove(pid_tgid);
            }
            if reported == Some(sk as u64) {
                // The cgroup hook already reported this connect as would-deny.
                return;
            }
        }
        let action = if kill {
            UNIX_ACTION_KILL
        } else {
            UNIX_ACTION_WOULD_DENY
        };
        report_peer(
            &offs,
            peer,
            UNIX_OP_CONNECT,
            UNIX_LAYER_TRACEPOINT,
            action,
            cgroup_id,
            slot,
            dev,
            ino,
        );
        if kill {
            // SAFETY: signals the current thread group, the process that connected.
            unsafe { bpf_send_signal(SIGKILL) };
        }
    }
}

/// `unix_stream_connect(struct sock *sock, struct sock *other, struct sock *newsk)`:
/// `other` is the listening socket.
#[lsm(hook = "unix_stream_connect")]
pub fn unix_lsm_stream_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let other: *const u8 = ctx.arg(1);
    lsm_check(other, false, UNIX_OP_CONNECT)
}

/// `unix_may_send(struct socket *sock, struct socket *other)`: datagram connect and send.
#[lsm(hook = "unix_may_send")]
pub fn unix_lsm_may_send(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let other: *const u8 = ctx.arg(1);
    lsm_check(other, true, UNIX_OP_SENDMSG)
}

/// `other` is a `struct socket *` when `is_socket`, else already the `struct sock *`.
#[inline(always)]
fn lsm_check(other: *const u8, is_socket: bool, op: u32) -> i32 {
    let Some((cgroup_id, slot, flags)) = mediated_run() else {
        return 0;
    };
    let fs = AGENTD_FS_OFFSETS.load();
    let offs = AGENTD_UNIX_OFFSETS.load();
    if fs.valid == 0 || offs.valid == 0 {
        return 0;
    }
    let peer = if is_socket {
        // SAFETY: `other` is the hook's `struct socket *`; BTF offset, fault-tolerant read.
        let Ok(sk) = (unsafe { read_at::<*const u8>(other, offs.socket_sk) }) else {
            return 0;
        };
        sk
    } else {
        other
    };
    let Some((dev, ino)) = outside(&fs, &offs, peer, slot) else {
        return 0;
    };
    let audit_only = flags & UNIX_FLAG_AUDIT_ONLY != 0;
    let action = if audit_only {
        UNIX_ACTION_WOULD_DENY
    } else {
        UNIX_ACTION_DENY
    };
    report_peer(
        &offs,
        peer,
        op,
        UNIX_LAYER_LSM,
        action,
        cgroup_id,
        slot,
        dev,
        ino,
    );
    if audit_only {
        0
    } else {
        -EPERM
    }
}

/// `Some((dev, ino))` of the peer socket's inode when neither it (by directory + name)
/// nor any ancestor (mount points crossed) is allowed for the run; `None` when allowed
/// or when the peer has no pathname (abstract, unnamed: landlock's business).
#[inline(always)]
fn outside(fs: &FsOffsets, offs: &UnixOffsets, peer: *const u8, slot: u32) -> Option<(u32, u64)> {
    // SAFETY: `peer` is a `struct unix_sock *` (it starts with its `struct sock`); BTF
    // offsets, fault-tolerant reads.
    let (dentry, mut mnt) = unsafe {
        (
            read_at::<*const u8>(peer, offs.unix_path_dentry).ok()?,
            read_at::<*const u8>(peer, offs.unix_path_mnt).ok()?,
        )
    };
    if dentry.is_null() {
        return None;
    }
    let Some((dev, ino)) = dentry_id(fs, dentry) else {
        // Unreadable: judged outside (fail closed).
        return Some((0, 0));
    };
    if named_allowed(fs, dentry, slot) {
        return None;
    }
    let mut current = dentry;
    for _ in 0..UNIX_MAX_DEPTH {
        if let Some((d, i)) = dentry_id(fs, current) {
            let key = FsRuleKey {
                run_slot: slot,
                dev: d,
                ino: i,
            };
            // SAFETY: only presence is tested.
            if unsafe { UNIX_INODES.get(key) }.is_some() {
                return None;
            }
        }
        // SAFETY: fault-tolerant reads through BTF offsets.
        let step = unsafe { parent(fs, offs, current, mnt) };
        let Some((next, next_mnt)) = step else {
            break;
        };
        current = next;
        mnt = next_mnt;
    }
    Some((dev, ino))
}

/// The parent of `dentry` in mount `mnt` (a `struct vfsmount *`), crossing to the
/// mount point when `dentry` is the mount's root; `None` at the top.
///
/// # Safety
/// Pointers are kernel pointers read through BTF offsets; reads are fault tolerant.
#[inline(always)]
unsafe fn parent(
    fs: &FsOffsets,
    offs: &UnixOffsets,
    dentry: *const u8,
    mnt: *const u8,
) -> Option<(*const u8, *const u8)> {
    // SAFETY: see the function's contract.
    unsafe {
        let root = read_at::<*const u8>(mnt, offs.vfsmount_root).ok()?;
        if dentry == root {
            let mount = mnt.wrapping_sub(offs.mount_mnt as usize);
            let up = read_at::<*const u8>(mount, offs.mount_parent).ok()?;
            if up.is_null() || up == mount {
                return None;
            }
            let point = read_at::<*const u8>(mount, offs.mount_mountpoint).ok()?;
            return Some((point, up.wrapping_add(offs.mount_mnt as usize)));
        }
        let up = read_at::<*const u8>(dentry, fs.dentry_d_parent).ok()?;
        if up.is_null() || up == dentry {
            return None;
        }
        Some((up, mnt))
    }
}

/// Whether (`d_parent` inode, `d_name`) of the socket's dentry is an allowed socket.
#[inline(always)]
fn named_allowed(fs: &FsOffsets, dentry: *const u8, slot: u32) -> bool {
    let Some(scratch) = UNIX_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: fault-tolerant reads; `scratch` is this CPU's map value and the string
    // helper writes at most UNIX_NAME_LEN bytes into its `name`.
    unsafe {
        let Ok(up) = read_at::<*const u8>(dentry, fs.dentry_d_parent) else {
            return false;
        };
        let Some((dev, dir_ino)) = dentry_id(fs, up) else {
            return false;
        };
        let Ok(name) = read_at::<*const u8>(dentry, fs.dentry_d_name_name) else {
            return false;
        };
        let key = addr_of_mut!((*scratch).named);
        addr_of_mut!((*key).run_slot).write(slot);
        addr_of_mut!((*key).dev).write(dev);
        addr_of_mut!((*key).dir_ino).write(dir_ino);
        let dst = addr_of_mut!((*key).name).cast::<u8>();
        for i in 0..UNIX_NAME_LEN / 8 {
            dst.add(i * 8).cast::<u64>().write_unaligned(0);
        }
        if bpf_probe_read_kernel_str(dst.cast(), UNIX_NAME_LEN as u32, name.cast()) <= 0 {
            return false;
        }
        UNIX_NAMED.get(*key).is_some()
    }
}

/// Records an inode-layer decision; the path is the address the peer bound.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn report_peer(
    offs: &UnixOffsets,
    peer: *const u8,
    op: u32,
    layer: u32,
    action: u32,
    cgroup_id: u64,
    slot: u32,
    dev: u32,
    ino: u64,
) {
    let Some(mut entry) = EVENTS.reserve::<UnixEvent>(0) else {
        count_drop();
        return;
    };
    let event: *mut UnixEvent = entry.as_mut_ptr();
    // SAFETY: `event` is a reserved record; the string helper writes at most
    // UNIX_PATH_MAX bytes into `path` (112 bytes) and tolerates faults.
    unsafe {
        write_decision(
            event,
            slot,
            cgroup_id,
            Decision {
                op,
                layer,
                action,
                reason: UNIX_REASON_NO_RULE,
                dev,
                ino,
            },
        );
        let path = addr_of_mut!((*event).path).cast::<u8>();
        path.write(0);
        let mut len = 0u32;
        if let Ok(addr) = read_at::<*const u8>(peer, offs.unix_addr) {
            if !addr.is_null() {
                let n = bpf_probe_read_kernel_str(
                    path.cast(),
                    UNIX_PATH_MAX as u32,
                    addr.wrapping_add(offs.unix_address_path as usize).cast(),
                );
                if n > 0 {
                    len = n as u32 - 1;
                }
            }
        }
        addr_of_mut!((*event).path_len).write(len);
    }
    submit(entry);
}
