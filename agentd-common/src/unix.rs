//! Pathname unix sockets: which ones a run may connect or send to.
//!
//! A socket is allowed when it lies under an `fs.write` path or a `net.unix` entry.
//! Two kernel paths enforce it (the Plan picks one):
//!
//! - **BPF LSM** (`lsm/unix_stream_connect`, `lsm/unix_may_send`): the peer socket's
//!   inode, and its ancestors, are matched against [`names::MAP_UNIX_INODES`] and
//!   [`names::MAP_UNIX_NAMED`]; a miss fails with -EPERM.
//! - **cgroup fallback** (`cgroup/connect_unix`, `cgroup/sendmsg_unix`, loaded through
//!   raw `bpf(2)`): the address string is matched against per-run canonical prefixes in
//!   [`names::MAP_UNIX_PREFIXES`] (an LPM trie: run slot, then the path bytes); a miss,
//!   a relative path or one with `.`/`..`/`//` components fails with EPERM. Symlinks
//!   and hardlinks in a writable tree can still lead elsewhere, so a `tp_btf/sys_exit`
//!   backstop judges the connected peer's inode like the LSM path and SIGKILLs the
//!   process before `connect()` returns.
//!
//! Abstract and unnamed sockets are not judged here (landlock scopes them).
//!
//! Device numbers are the kernel's internal `dev_t`, see [`crate::fsrules::kernel_dev`].

/// Names of the maps, programs and globals.
pub mod names {
    /// `LpmTrie<[u8; UNIX_KEY_LEN], UnixRule>`: run slot (big-endian) + canonical path.
    pub const MAP_UNIX_PREFIXES: &str = "UNIX_PREFIXES";
    /// `HashMap<FsRuleKey, UnixRule>`: allowed directories (or sockets) by inode.
    pub const MAP_UNIX_INODES: &str = "UNIX_INODES";
    /// `HashMap<UnixNamedKey, UnixRule>`: allowed sockets by parent inode + name, so a
    /// socket its server re-creates during the run is still recognised.
    pub const MAP_UNIX_NAMED: &str = "UNIX_NAMED";
    /// `HashMap<u32, u32>`: run slot to `UNIX_FLAG_*`; no entry = not mediated.
    pub const MAP_UNIX_RUNS: &str = "UNIX_RUNS";
    /// `LruHashMap<u64, u64>`: pid_tgid → `struct sock *` of a connect the cgroup hook
    /// already reported as would-deny (audit mode), so the backstop does not report it
    /// a second time.
    pub const MAP_UNIX_REPORTED: &str = "UNIX_REPORTED";
    /// `PerCpuArray<UnixScratch>`: one scratch buffer per CPU (keys are too big for
    /// the 512-byte stack next to everything else).
    pub const MAP_UNIX_SCRATCH: &str = "UNIX_SCRATCH";
    /// Cgroup sock_addr program for `BPF_CGROUP_UNIX_CONNECT` (built as a plain
    /// `cgroup/connect4` program, loaded by agentd with the unix attach type).
    pub const PROG_CGROUP_CONNECT: &str = "unix_cgroup_connect";
    /// Same for `BPF_CGROUP_UNIX_SENDMSG`.
    pub const PROG_CGROUP_SENDMSG: &str = "unix_cgroup_sendmsg";
    /// `lsm/unix_stream_connect`.
    pub const PROG_LSM_STREAM_CONNECT: &str = "unix_lsm_stream_connect";
    /// `lsm/unix_may_send`.
    pub const PROG_LSM_MAY_SEND: &str = "unix_lsm_may_send";
    /// LSM hooks and tracepoint of the programs above.
    pub const LSM_HOOK_STREAM_CONNECT: &str = "unix_stream_connect";
    /// See [`PROG_LSM_MAY_SEND`].
    pub const LSM_HOOK_MAY_SEND: &str = "unix_may_send";
    /// `.rodata` global holding a [`super::UnixOffsets`].
    pub const GLOBAL_UNIX_OFFSETS: &str = "AGENTD_UNIX_OFFSETS";
}

/// `sizeof(sockaddr_un.sun_path)`.
pub const UNIX_PATH_MAX: usize = 108;
/// Bytes of an LPM key's data: 4 (run slot) + path + NUL, rounded up to 4.
pub const UNIX_KEY_LEN: usize = 4 + 112;
/// Bytes of a socket's own name in a [`UnixNamedKey`], NUL included.
pub const UNIX_NAME_LEN: usize = 64;
/// Dentries walked up from a peer socket (mount points crossed) before giving up.
pub const UNIX_MAX_DEPTH: u32 = 24;
/// Capacity of the prefix trie, the inode and the named maps (all runs).
pub const UNIX_MAX_ENTRIES: u32 = 1024;

/// 8-byte words of an LPM key's path area (after the 4-byte run slot).
pub const UNIX_PATH_WORDS: usize = (UNIX_KEY_LEN - 4) / 8;

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH: u64 = 0x8080_8080_8080_8080;
const SLASHES: u64 = 0x2f2f_2f2f_2f2f_2f2f;
const DOTS: u64 = 0x2e2e_2e2e_2e2e_2e2e;

/// The high bit of every zero byte of `x` (exact: no false positives).
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    !(((x & LOW7) + LOW7) | x) & HIGH
}

/// The bytes of `word` (path bytes `8k..8k+8`, little-endian) that start a non-canonical
/// piece: a `/` followed by `/`, the end, `./`, `.` then the end, `../` or `..` then the
/// end. `next` is the following word (0 past the area). One high bit per such byte.
///
/// Branch-free on purpose: the eBPF programs check a whole path with it, and a compare per
/// byte was a branch per byte, which the verifier walked once per path through the loop
/// (tens of thousands of instructions per program load).
#[inline(always)]
pub fn non_canonical_bytes(word: u64, next: u64) -> u64 {
    let shifted = |bytes: u32| (word >> (8 * bytes)) | (next << (64 - 8 * bytes));
    let (w1, w2, w3) = (shifted(1), shifted(2), shifted(3));
    let slash = |w: u64| zero_bytes(w ^ SLASHES);
    let dot = |w: u64| zero_bytes(w ^ DOTS);
    let end = |w: u64| slash(w) | zero_bytes(w);
    let dots = dot(w1) & (end(w2) | (dot(w2) & end(w3)));
    slash(word) & (end(w1) | dots)
}

/// Whether the NUL-padded path in `words` (an LPM key's path area) is not canonical: not
/// absolute, or with `//`, `/./`, `/../`, or a trailing `/`, `/.` or `/..`.
#[inline(always)]
pub fn path_not_canonical(words: &[u64; UNIX_PATH_WORDS]) -> bool {
    let mut bad = (words[0] & 0xff) != u64::from(b'/');
    let mut k = 0;
    while k < UNIX_PATH_WORDS {
        let next = if k + 1 < UNIX_PATH_WORDS {
            words[k + 1]
        } else {
            0
        };
        bad |= non_canonical_bytes(words[k], next) != 0;
        k += 1;
    }
    bad
}

/// `UNIX_RUNS` flag: the policy is in audit mode; report, never deny or kill.
pub const UNIX_FLAG_AUDIT_ONLY: u32 = 1 << 0;

/// [`UnixRule::source`]: an `fs.write` entry.
pub const UNIX_SOURCE_WRITE: u32 = 1;
/// [`UnixRule::source`]: a `net.unix` entry.
pub const UNIX_SOURCE_UNIX: u32 = 2;

/// [`UnixEvent::op`]: `connect()`.
pub const UNIX_OP_CONNECT: u32 = 1;
/// [`UnixEvent::op`]: `sendto()`/`sendmsg()` with an address (LSM: any datagram send).
pub const UNIX_OP_SENDMSG: u32 = 2;

/// [`UnixEvent::layer`]: the cgroup hook judged the address string.
pub const UNIX_LAYER_CGROUP: u32 = 1;
/// [`UnixEvent::layer`]: the `tp_btf/sys_exit` backstop judged the peer inode.
pub const UNIX_LAYER_TRACEPOINT: u32 = 2;
/// [`UnixEvent::layer`]: a BPF LSM hook judged the peer inode.
pub const UNIX_LAYER_LSM: u32 = 3;

/// [`UnixEvent::action`]: the call failed with EPERM.
pub const UNIX_ACTION_DENY: u32 = 1;
/// [`UnixEvent::action`]: the process was sent SIGKILL.
pub const UNIX_ACTION_KILL: u32 = 2;
/// [`UnixEvent::action`]: audit mode; nothing was done.
pub const UNIX_ACTION_WOULD_DENY: u32 = 3;

/// [`UnixEvent::reason`]: no allowed prefix or inode covers the socket.
pub const UNIX_REASON_NO_RULE: u32 = 1;
/// [`UnixEvent::reason`]: relative path, or `.`, `..`, empty components or a trailing
/// `/`: the string cannot be judged, so it is refused.
pub const UNIX_REASON_NOT_CANONICAL: u32 = 2;
/// [`UnixEvent::reason`]: the task's cgroup is not a watched run (fail closed).
pub const UNIX_REASON_NO_RUN: u32 = 3;
/// [`UnixEvent::reason`]: the kernel context could not be read.
pub const UNIX_REASON_UNREADABLE: u32 = 4;

/// [`crate::EventHeader::kind`] of a [`UnixEvent`].
pub const EVENT_KIND_UNIX: u32 = 6;

/// x86-64 `connect(2)`.
pub const NR_CONNECT: u64 = 42;
/// `listen(2)` on x86-64: the kernel's own bind of a never-bound socket (see `net`).
pub const NR_LISTEN: u64 = 50;

/// Value of the prefix, inode and named maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixRule {
    /// `UNIX_SOURCE_*`.
    pub source: u32,
    /// Index in `fs.write` or `net.unix`.
    pub rule_index: u32,
}

/// Key of `UNIX_NAMED`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnixNamedKey {
    /// Run slot.
    pub run_slot: u32,
    /// Kernel device of the socket's directory.
    pub dev: u32,
    /// Inode of the socket's directory.
    pub dir_ino: u64,
    /// The socket's name in that directory, NUL-padded.
    pub name: [u8; UNIX_NAME_LEN],
}

/// LPM key of `UNIX_PREFIXES` (the layout of aya's `Key<[u8; UNIX_KEY_LEN]>`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixLpmKey {
    /// Significant bits of `data`.
    pub prefix_len: u32,
    /// Run slot (big-endian), then the path bytes.
    pub data: [u8; UNIX_KEY_LEN],
}

/// Per-CPU scratch of the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixScratch {
    /// The prefix lookup key.
    pub lpm: UnixLpmKey,
    /// The named lookup key.
    pub named: UnixNamedKey,
}

/// Ring-buffer record of one unix-socket decision.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixEvent {
    /// `kind` is [`EVENT_KIND_UNIX`].
    pub header: crate::EventHeader,
    /// `UNIX_OP_*`.
    pub op: u32,
    /// `UNIX_LAYER_*`.
    pub layer: u32,
    /// `UNIX_ACTION_*`.
    pub action: u32,
    /// `UNIX_REASON_*`.
    pub reason: u32,
    /// Kernel device of the peer socket (inode layers), else 0.
    pub dev: u32,
    /// Bytes of `path` before the NUL.
    pub path_len: u32,
    /// Inode of the peer socket (inode layers), else 0.
    pub ino: u64,
    /// The address as the process passed it (cgroup layer) or as the peer bound it
    /// (inode layers), NUL-terminated.
    pub path: [u8; 112],
}

/// Member offsets the programs read, from the running kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixOffsets {
    /// `bpf_sock_addr_kern.uaddr` (the program's context is that struct).
    pub sa_kern_uaddr: u32,
    /// `bpf_sock_addr_kern.uaddrlen` (Linux 6.7+).
    pub sa_kern_uaddrlen: u32,
    /// `pt_regs.di` (first syscall argument).
    pub regs_di: u32,
    /// `file.private_data` (a socket file's `struct socket *`).
    pub file_private_data: u32,
    /// `socket.sk`.
    pub socket_sk: u32,
    /// `sock.__sk_common.skc_family` (a u16).
    pub sock_family: u32,
    /// `unix_sock.peer`.
    pub unix_peer: u32,
    /// `unix_sock.path.dentry`.
    pub unix_path_dentry: u32,
    /// `unix_sock.path.mnt`.
    pub unix_path_mnt: u32,
    /// `unix_sock.addr`.
    pub unix_addr: u32,
    /// `unix_address.len`.
    pub unix_address_len: u32,
    /// `unix_address.name` + `sockaddr_un.sun_path`.
    pub unix_address_path: u32,
    /// `mount.mnt` (the embedded `struct vfsmount`).
    pub mount_mnt: u32,
    /// `mount.mnt_parent`.
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`.
    pub mount_mountpoint: u32,
    /// `vfsmount.mnt_root`.
    pub vfsmount_root: u32,
    /// 1 once the loader filled this struct; the programs deny (cgroup) or do nothing
    /// (tracepoint, LSM) while it is 0.
    pub valid: u32,
    /// `bpf_sock_addr_kern.sk`.
    pub sa_kern_sk: u32,
    /// `sock.sk_userlocks` (a u8: `SOCK_BINDADDR_LOCK`, `SOCK_BINDPORT_LOCK`), which
    /// tells an explicit bind from the kernel's own on `listen()` (see `net`).
    pub sock_userlocks: u32,
}

impl UnixOffsets {
    /// All-zero value compiled into the object.
    pub const UNSET: Self = Self {
        sa_kern_uaddr: 0,
        sa_kern_uaddrlen: 0,
        regs_di: 0,
        file_private_data: 0,
        socket_sk: 0,
        sock_family: 0,
        unix_peer: 0,
        unix_path_dentry: 0,
        unix_path_mnt: 0,
        unix_addr: 0,
        unix_address_len: 0,
        unix_address_path: 0,
        mount_mnt: 0,
        mount_parent: 0,
        mount_mountpoint: 0,
        vfsmount_root: 0,
        valid: 0,
        sa_kern_sk: 0,
        sock_userlocks: 0,
    };
}

/// Size of [`UnixRule`].
pub const UNIX_RULE_SIZE: usize = 8;
/// Size of [`UnixNamedKey`].
pub const UNIX_NAMED_KEY_SIZE: usize = 16 + UNIX_NAME_LEN;
/// Size of [`UnixLpmKey`].
pub const UNIX_LPM_KEY_SIZE: usize = 4 + UNIX_KEY_LEN;
/// Size of [`UnixEvent`].
pub const UNIX_EVENT_SIZE: usize = 64 + 112;
/// Size of [`UnixOffsets`].
pub const UNIX_OFFSETS_SIZE: usize = 76;

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<UnixRule>() == UNIX_RULE_SIZE);
    assert!(size_of::<UnixNamedKey>() == UNIX_NAMED_KEY_SIZE);
    assert!(offset_of!(UnixNamedKey, dev) == 4);
    assert!(offset_of!(UnixNamedKey, dir_ino) == 8);
    assert!(offset_of!(UnixNamedKey, name) == 16);
    assert!(size_of::<UnixLpmKey>() == UNIX_LPM_KEY_SIZE);
    assert!(offset_of!(UnixLpmKey, data) == 4);
    assert!(size_of::<UnixScratch>() == UNIX_LPM_KEY_SIZE + UNIX_NAMED_KEY_SIZE);
    assert!(offset_of!(UnixScratch, named) == UNIX_LPM_KEY_SIZE);
    assert!(size_of::<UnixEvent>() == UNIX_EVENT_SIZE);
    assert!(align_of::<UnixEvent>() == 8);
    assert!(offset_of!(UnixEvent, op) == 32);
    assert!(offset_of!(UnixEvent, layer) == 36);
    assert!(offset_of!(UnixEvent, action) == 40);
    assert!(offset_of!(UnixEvent, reason) == 44);
    assert!(offset_of!(UnixEvent, dev) == 48);
    assert!(offset_of!(UnixEvent, path_len) == 52);
    assert!(offset_of!(UnixEvent, ino) == 56);
    assert!(offset_of!(UnixEvent, path) == 64);
    assert!(UNIX_EVENT_SIZE.is_multiple_of(8));
    assert!(size_of::<UnixOffsets>() == UNIX_OFFSETS_SIZE);
    assert!(offset_of!(UnixOffsets, valid) == 64);
    assert!(UNIX_KEY_LEN > 4 + UNIX_PATH_MAX);
};

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, integer fields only, no implicit padding (const asserts above).
    unsafe impl aya::Pod for super::UnixRule {}
    // SAFETY: as above; integers and a byte array.
    unsafe impl aya::Pod for super::UnixNamedKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnixEvent {}
    // SAFETY: as above; `u32` fields only.
    unsafe impl aya::Pod for super::UnixOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnixScratch {}
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn layouts() {
        assert_eq!(size_of::<UnixRule>(), 8);
        assert_eq!(size_of::<UnixNamedKey>(), 80);
        assert_eq!(size_of::<UnixLpmKey>(), 120);
        assert_eq!(size_of::<UnixEvent>(), 176);
        assert_eq!(offset_of!(UnixEvent, path), 64);
        assert_eq!(size_of::<UnixOffsets>(), 76);
        assert_eq!(offset_of!(UnixOffsets, sock_userlocks), 72);
        assert_eq!(UnixOffsets::UNSET.valid, 0);
    }

    /// The byte-at-a-time rule the word check replaced.
    fn reference(path: &[u8]) -> bool {
        let at = |i: usize| path.get(i).copied().unwrap_or(0);
        let end = |c: u8| c == b'/' || c == 0;
        let mut bad = at(0) != b'/';
        for i in 0..UNIX_PATH_MAX {
            let (c0, c1, c2, c3) = (at(i), at(i + 1), at(i + 2), at(i + 3));
            let dots = c1 == b'.' && (end(c2) || (c2 == b'.' && end(c3)));
            bad |= c0 == b'/' && (c1 == b'/' || c1 == 0 || dots);
        }
        bad
    }

    fn words(path: &[u8]) -> [u64; UNIX_PATH_WORDS] {
        let mut area = [0u8; UNIX_PATH_WORDS * 8];
        area[..path.len()].copy_from_slice(path);
        let mut w = [0u64; UNIX_PATH_WORDS];
        for (k, word) in w.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&area[8 * k..8 * k + 8]);
            *word = u64::from_le_bytes(b);
        }
        w
    }

    #[test]
    fn the_word_check_judges_paths_as_the_byte_rule_does() {
        let named = [
            &b"/run/agent.sock"[..],
            b"/",
            b"",
            b"run/x",
            b"/run//x",
            b"/run/./x",
            b"/run/../x",
            b"/run/",
            b"/run/.",
            b"/run/..",
            b"/run/...",
            b"/run/.x",
            b"/run/..x",
            b"/a/b/c/d/e/f/g/h/i.sock",
            b"/1234567/",
            b"/1234567/./89",
            b"/123456/../89",
        ];
        for p in named {
            assert_eq!(
                path_not_canonical(&words(p)),
                reference(p),
                "{:?}",
                core::str::from_utf8(p)
            );
        }
        // Every path of up to 108 bytes over an alphabet that makes every piece, with
        // the pieces at every offset of a word (a fixed-seed xorshift).
        let alphabet = [b'/', b'.', b'a', b'.', b'/', b'b'];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..200_000u32 {
            let mut path = [0u8; UNIX_PATH_MAX];
            let len = (n as usize) % (UNIX_PATH_MAX + 1);
            for byte in path.iter_mut().take(len) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *byte = alphabet[(seed % alphabet.len() as u64) as usize];
            }
            let p = &path[..len];
            assert_eq!(
                path_not_canonical(&words(p)),
                reference(p),
                "{:?}",
                core::str::from_utf8(p)
            );
        }
    }

    #[test]
    fn constants_are_distinct() {
        let actions = [UNIX_ACTION_DENY, UNIX_ACTION_KILL, UNIX_ACTION_WOULD_DENY];
        let layers = [UNIX_LAYER_CGROUP, UNIX_LAYER_TRACEPOINT, UNIX_LAYER_LSM];
        let reasons = [
            UNIX_REASON_NO_RULE,
            UNIX_REASON_NOT_CANONICAL,
            UNIX_REASON_NO_RUN,
            UNIX_REASON_UNREADABLE,
        ];
        for set in [&actions[..], &layers[..], &reasons[..]] {
            for (i, a) in set.iter().enumerate() {
                assert!(!set[i + 1..].contains(a));
            }
        }
        assert_ne!(UNIX_OP_CONNECT, UNIX_OP_SENDMSG);
        assert_ne!(UNIX_SOURCE_WRITE, UNIX_SOURCE_UNIX);
    }
}
