//! Pathname unix sockets: userspace half (see `agentd_common::unix` and
//! `agentd-ebpf/src/unix.rs`).
//!
//! At run start the allowed entries (`fs.write` and `net.unix`) become
//! - canonical path prefixes in `UNIX_PREFIXES` (the cgroup fallback's string check;
//!   a directory `D` is inserted as `D/`, a file `F` as `F\0`, so `/ws` never covers
//!   `/wsx`);
//! - inodes in `UNIX_INODES` (directories) and (directory inode, name) pairs in
//!   `UNIX_NAMED` (sockets), for the LSM hooks and the fallback's backstop.
//!
//! aya 0.14 cannot load `BPF_CGROUP_UNIX_CONNECT` / `BPF_CGROUP_UNIX_SENDMSG`
//! programs, so [`BpfRuntime::enable_unix`] re-parses the embedded object with aya-obj,
//! relocates the two programs against the fds of the maps aya created (duplicated at
//! load time, [`UnixState::capture`]), and loads them with raw `bpf(BPF_PROG_LOAD)` and
//! the right `expected_attach_type`, then attaches them with `BPF_LINK_CREATE`.

use std::collections::{HashMap as StdHashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use agentd_common::fsrules::{kernel_dev, FsRuleKey};
use agentd_common::syscalls::HOOK_UNIX_CONNECT;
use agentd_common::unix::{
    names, UnixEvent, UnixNamedKey, UnixOffsets, UnixRule, UNIX_ACTION_DENY, UNIX_ACTION_KILL,
    UNIX_ACTION_WOULD_DENY, UNIX_FLAG_AUDIT_ONLY, UNIX_KEY_LEN, UNIX_LAYER_CGROUP, UNIX_LAYER_LSM,
    UNIX_LAYER_TRACEPOINT, UNIX_NAME_LEN, UNIX_OP_CONNECT, UNIX_OP_SENDMSG, UNIX_PATH_MAX,
    UNIX_REASON_NOT_CANONICAL, UNIX_REASON_NO_RULE, UNIX_REASON_NO_RUN, UNIX_REASON_UNREADABLE,
    UNIX_SOURCE_UNIX, UNIX_SOURCE_WRITE,
};
use agentd_common::EventHeader;
use aya::maps::{lpm_trie::Key, Map, MapData};
use aya::Ebpf;
use core::mem::offset_of;

use super::btf::{BtfError, KernelBtf};
use super::progs::{self, HeldLink};
use super::{BpfRuntime, RunBpf, EBPF_OBJECT};
use crate::audit::event::UnixDenied;
use crate::policy::{PathRule, Policy};

/// `BPF_CGROUP_UNIX_CONNECT` in `enum bpf_attach_type` (Linux 6.7+).
pub const BPF_CGROUP_UNIX_CONNECT: u32 = 49;
/// `BPF_CGROUP_UNIX_SENDMSG`.
pub const BPF_CGROUP_UNIX_SENDMSG: u32 = 50;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const ATTR_LEN: usize = 128;
/// Verifier log buffer for a failed load (retried with logging on).
const LOG_BYTES: usize = 1 << 20;

/// ELF sections / hooks, for messages.
pub mod section {
    /// The cgroup connect program.
    pub const CGROUP_CONNECT: &str = "cgroup/connect_unix";
    /// The cgroup sendmsg program.
    pub const CGROUP_SENDMSG: &str = "cgroup/sendmsg_unix";
    /// The backstop.
    /// LSM hooks.
    pub const LSM_STREAM_CONNECT: &str = "lsm/unix_stream_connect";
    /// See above.
    pub const LSM_MAY_SEND: &str = "lsm/unix_may_send";
}

/// Which kernel mechanism mediates pathname unix sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixPath {
    /// BPF LSM `unix_stream_connect` + `unix_may_send`: by inode, clean EPERM.
    Lsm,
    /// cgroup `connect_unix` + `sendmsg_unix` (string, EPERM) + `tp_btf/sys_exit`
    /// backstop (inode, SIGKILL).
    Cgroup,
}

/// Errors of the unix-socket layer; messages name the program, map or path.
#[derive(Debug, thiserror::Error)]
pub enum UnixError {
    /// Kernel BTF lacks what the programs read.
    #[error("kernel btf: {0}")]
    Offsets(String),
    /// A map the programs need is missing.
    #[error("map {0} missing from the ebpf object")]
    MissingMap(String),
    /// aya-obj could not parse or relocate the object.
    #[error("{section}: {reason}")]
    Object {
        /// Program section.
        section: &'static str,
        /// aya-obj's error.
        reason: String,
    },
    /// `BPF_PROG_LOAD` failed.
    #[error("load {section} (raw bpf): {error}{log}")]
    Load {
        /// Program section.
        section: &'static str,
        /// The kernel's errno.
        error: std::io::Error,
        /// Tail of the verifier log, if any.
        log: String,
    },
    /// `BPF_LINK_CREATE` failed.
    #[error("attach {section} to {}: {error}", .cgroup.display())]
    Attach {
        /// Program section.
        section: &'static str,
        /// The cgroup directory.
        cgroup: PathBuf,
        /// The kernel's errno.
        error: std::io::Error,
    },
    /// An aya program operation (LSM / tracepoint) failed.
    #[error("{0}")]
    Program(String),
    /// A map update failed.
    #[error("{action} map {map}: {reason}")]
    Map {
        /// What was done.
        action: String,
        /// Map name.
        map: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// An entry could not be inspected.
    #[error("{}: {error}", .path.display())]
    Stat {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// Offsets, duplicated map fds and the raw-loaded programs (loaded once, shared).
pub struct UnixState {
    offsets: Result<UnixOffsets, String>,
    map_fds: Vec<(String, OwnedFd)>,
    /// The cgroup connect and sendmsg programs, once loaded.
    cgroup_progs: Option<[OwnedFd; 2]>,
}

impl UnixState {
    /// Duplicates the fd of every map of `ebpf` (before any is taken), so the raw
    /// loader can relocate against them later.
    pub(super) fn capture(ebpf: &Ebpf, offsets: Result<UnixOffsets, String>) -> Self {
        let mut map_fds = Vec::new();
        for (name, map) in ebpf.maps() {
            if let Some(data) = map_data(map) {
                if let Ok(fd) = data.fd().as_fd().try_clone_to_owned() {
                    map_fds.push((name.to_owned(), fd));
                }
            }
        }
        Self {
            offsets,
            map_fds,
            cgroup_progs: None,
        }
    }

    /// The two cgroup programs, when loaded (for the tests that read their verifier cost).
    #[cfg(test)]
    pub(super) fn loaded_cgroup_progs(&self) -> Option<&[OwnedFd; 2]> {
        self.cgroup_progs.as_ref()
    }

    /// The two cgroup programs, loaded with raw `bpf(2)` on first use.
    fn cgroup_progs(&mut self) -> Result<&[OwnedFd; 2], UnixError> {
        self.load_cgroup_progs()?;
        self.cgroup_progs.as_ref().ok_or(UnixError::Object {
            section: section::CGROUP_CONNECT,
            reason: "not loaded".into(),
        })
    }

    /// Loads the two cgroup programs unless loaded: both at once, on two threads (their
    /// verifier runs take ~0.1 s each).
    pub(super) fn load_cgroup_progs(&mut self) -> Result<(), UnixError> {
        if self.cgroup_progs.is_some() {
            return Ok(());
        }
        let insns = relocated(
            &self.map_fds,
            &[names::PROG_CGROUP_CONNECT, names::PROG_CGROUP_SENDMSG],
        )?;
        let [connect, sendmsg] = CGROUP_PROGS;
        let (Some(c), Some(s)) = (insns.first(), insns.get(1)) else {
            return Err(UnixError::Object {
                section: section::CGROUP_CONNECT,
                reason: "relocation returned fewer programs than asked for".into(),
            });
        };
        let (c, s) = std::thread::scope(|scope| {
            let s = scope.spawn(|| load_sock_addr(s, sendmsg.0, sendmsg.1, sendmsg.2));
            let c = load_sock_addr(c, connect.0, connect.1, connect.2);
            let s = s.join().unwrap_or_else(|_| {
                Err(UnixError::Object {
                    section: section::CGROUP_SENDMSG,
                    reason: "the loader thread panicked".into(),
                })
            });
            (c, s)
        });
        self.cgroup_progs = Some([c?, s?]);
        Ok(())
    }
}

/// The raw-loaded programs: name, attach type, section.
const CGROUP_PROGS: [(&str, u32, &str); 2] = [
    (
        names::PROG_CGROUP_CONNECT,
        BPF_CGROUP_UNIX_CONNECT,
        section::CGROUP_CONNECT,
    ),
    (
        names::PROG_CGROUP_SENDMSG,
        BPF_CGROUP_UNIX_SENDMSG,
        section::CGROUP_SENDMSG,
    ),
];

/// The `MapData` of the map kinds the object defines.
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LpmTrie(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::LruHashMap(d)
        | Map::RingBuf(d) => Some(d),
        _ => None,
    }
}

/// Offsets the programs read, checked for size.
pub(super) fn unix_offsets(btf: &KernelBtf<'_>) -> Result<UnixOffsets, BtfError> {
    const PTR: u32 = 8;
    let field =
        |strukt: &str, member: &str, size: Option<u32>| btf.member_offset(strukt, member, size);
    let unix_path = field("unix_sock", "path", Some(16))?;
    Ok(UnixOffsets {
        sa_kern_uaddr: field("bpf_sock_addr_kern", "uaddr", Some(PTR))?,
        sa_kern_uaddrlen: field("bpf_sock_addr_kern", "uaddrlen", Some(4))?,
        regs_di: field("pt_regs", "di", Some(8))?,
        file_private_data: field("file", "private_data", Some(PTR))?,
        socket_sk: field("socket", "sk", Some(PTR))?,
        sock_family: field("sock", "__sk_common", None)?
            + field("sock_common", "skc_family", Some(2))?,
        unix_peer: field("unix_sock", "peer", Some(PTR))?,
        unix_path_dentry: unix_path + field("path", "dentry", Some(PTR))?,
        unix_path_mnt: unix_path + field("path", "mnt", Some(PTR))?,
        unix_addr: field("unix_sock", "addr", Some(PTR))?,
        unix_address_len: field("unix_address", "len", Some(4))?,
        unix_address_path: field("unix_address", "name", None)?
            + field("sockaddr_un", "sun_path", Some(UNIX_PATH_MAX as u32))?,
        mount_mnt: field("mount", "mnt", None)?,
        mount_parent: field("mount", "mnt_parent", Some(PTR))?,
        mount_mountpoint: field("mount", "mnt_mountpoint", Some(PTR))?,
        vfsmount_root: field("vfsmount", "mnt_root", Some(PTR))?,
        valid: 1,
        sa_kern_sk: field("bpf_sock_addr_kern", "sk", Some(PTR))?,
        sock_userlocks: field("sock", "sk_userlocks", Some(1))?,
    })
}

// ---------------------------------------------------------------------------------------
// Policy → entries
// ---------------------------------------------------------------------------------------

/// What one run allows, resolved at run start.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnixEntries {
    /// Path prefixes (`D/` or `F\0`, bytes) for the string check.
    pub prefixes: Vec<(Vec<u8>, UnixRule)>,
    /// Directories (and sockets) by (kernel dev, inode).
    pub inodes: Vec<(u32, u64, UnixRule)>,
    /// Sockets by (kernel dev, directory inode, name).
    pub named: Vec<(u32, u64, Vec<u8>, UnixRule)>,
}

/// The allowed entries of `policy`: every existing `fs.write` and `net.unix` path, and
/// the optional `net.unix` sockets that do not exist (see [`add_missing`]).
pub fn resolve(policy: &Policy) -> Result<UnixEntries, UnixError> {
    let mut out = UnixEntries::default();
    let unix: &[PathRule] = policy.net.as_ref().map(|n| &n.unix[..]).unwrap_or(&[]);
    for (source, rules) in [
        (UNIX_SOURCE_WRITE, &policy.fs.write[..]),
        (UNIX_SOURCE_UNIX, unix),
    ] {
        for (index, rule) in rules.iter().enumerate() {
            let value = UnixRule {
                source,
                rule_index: index as u32,
            };
            if rule.exists {
                add_entry(&mut out, rule, value)?;
            } else if source == UNIX_SOURCE_UNIX {
                add_missing(&mut out, rule, value);
            }
        }
    }
    Ok(out)
}

fn add_entry(out: &mut UnixEntries, rule: &PathRule, value: UnixRule) -> Result<(), UnixError> {
    let stat = |p: &Path| {
        std::fs::metadata(p).map_err(|error| UnixError::Stat {
            path: p.to_path_buf(),
            error,
        })
    };
    let meta = stat(&rule.path)?;
    let mut forms = vec![rule.path.clone()];
    // The path as written, if absolute and different (e.g. /var/run/x for /run/x):
    // the string check then accepts what users type; the inode checks still judge
    // where it really leads.
    if rule.written.starts_with('/') {
        let lexical = lexical_normal(Path::new(&rule.written));
        if lexical != rule.path {
            forms.push(lexical);
        }
    }
    for form in forms {
        push_prefix(out, &form, meta.is_dir(), value);
    }
    out.inodes.push((kernel_dev(meta.dev()), meta.ino(), value));
    if !meta.is_dir() {
        if let (Some(dir), Some(name)) = (rule.path.parent(), rule.path.file_name()) {
            push_named(out, &stat(dir)?, name.as_bytes(), value);
        }
    }
    Ok(())
}

/// The string check's entry for `form`: `D/` for a directory (its tree), `F\0` for a
/// socket (exactly it). A form longer than a `sun_path` could hold is left out.
fn push_prefix(out: &mut UnixEntries, form: &Path, dir: bool, value: UnixRule) {
    let bytes = form.as_os_str().as_bytes();
    if bytes.len() > UNIX_PATH_MAX {
        return;
    }
    let mut prefix = bytes.to_vec();
    if dir {
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
    } else {
        prefix.push(0);
    }
    out.prefixes.push((prefix, value));
}

/// The socket `name` in the directory `dir_meta` describes (a socket its server
/// re-creates is still this one).
fn push_named(out: &mut UnixEntries, dir_meta: &std::fs::Metadata, name: &[u8], value: UnixRule) {
    if name.len() < UNIX_NAME_LEN {
        out.named.push((
            kernel_dev(dir_meta.dev()),
            dir_meta.ino(),
            name.to_vec(),
            value,
        ));
    }
}

/// An optional `net.unix` socket that does not exist at run start (glibc's nscd socket
/// on a host without nscd): its exact path, as written and with its existing ancestor
/// resolved, passes the string check, so the connect reaches the kernel and fails with
/// ENOENT as it would unconfined, not with an EPERM denial (the lsm path never sees such a
/// connect: the lookup fails first). If its directory exists, the socket is also allowed
/// by directory and name, so one its server creates later is the one allowed.
fn add_missing(out: &mut UnixEntries, rule: &PathRule, value: UnixRule) {
    let lexical = lexical_normal(&rule.path);
    let mut forms = vec![lexical.clone()];
    if rule.written.starts_with('/') {
        forms.push(lexical_normal(Path::new(&rule.written)));
    }
    let resolved = lexical
        .ancestors()
        .find_map(|a| {
            let rest = lexical.strip_prefix(a).ok()?;
            Some(std::fs::canonicalize(a).ok()?.join(rest))
        })
        .unwrap_or_else(|| lexical.clone());
    forms.push(resolved.clone());
    forms.sort();
    forms.dedup();
    for form in forms {
        push_prefix(out, &form, false, value);
    }
    if let (Some(dir), Some(name)) = (resolved.parent(), resolved.file_name()) {
        if let Ok(dir_meta) = std::fs::metadata(dir) {
            push_named(out, &dir_meta, name.as_bytes(), value);
        }
    }
}

/// `path` with `.` dropped, `..` applied and repeated `/` collapsed (no symlinks read).
fn lexical_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The LPM key of a prefix for `slot`.
fn lpm_key(slot: u32, prefix: &[u8]) -> Key<[u8; UNIX_KEY_LEN]> {
    let mut data = [0u8; UNIX_KEY_LEN];
    data[..4].copy_from_slice(&slot.to_be_bytes());
    let n = prefix.len().min(UNIX_KEY_LEN - 4);
    data[4..4 + n].copy_from_slice(&prefix[..n]);
    Key::new(32 + 8 * n as u32, data)
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

fn put_u32(attr: &mut [u8; ATTR_LEN], offset: usize, value: u32) {
    attr[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; ATTR_LEN], offset: usize, value: u64) {
    attr[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
}

fn sys_bpf(cmd: libc::c_long, attr: &[u8; ATTR_LEN]) -> Result<OwnedFd, std::io::Error> {
    // SAFETY: `attr` is a zero-filled `union bpf_attr` prefix of ATTR_LEN bytes whose
    // pointers (instructions, licence, name, log) point to live buffers of the caller.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), ATTR_LEN as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// The relocated instructions of the programs `names` (raw 8-byte instructions).
fn relocated(
    map_fds: &[(String, OwnedFd)],
    prog_names: &[&'static str],
) -> Result<Vec<Vec<u8>>, UnixError> {
    let object_err = |reason: String| UnixError::Object {
        section: section::CGROUP_CONNECT,
        reason,
    };
    let mut obj = aya_obj::Object::parse(EBPF_OBJECT).map_err(|e| object_err(e.to_string()))?;
    let maps: StdHashMap<String, aya_obj::Map> = obj.maps.drain().collect();
    let mut with_fds = Vec::new();
    for (name, map) in &maps {
        let Some((_, fd)) = map_fds.iter().find(|(n, _)| n == name) else {
            return Err(UnixError::MissingMap(name.clone()));
        };
        with_fds.push((name.as_str(), fd.as_raw_fd(), map));
    }
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    obj.relocate_maps(with_fds.into_iter(), &text_sections)
        .map_err(|e| object_err(e.to_string()))?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| object_err(e.to_string()))?;
    let mut out = Vec::new();
    for name in prog_names {
        let prog = obj
            .programs
            .get(*name)
            .ok_or_else(|| object_err(format!("program {name} missing from the ebpf object")))?;
        let function = obj
            .functions
            .get(&prog.function_key())
            .ok_or_else(|| object_err(format!("function of program {name} missing")))?;
        let mut bytes = Vec::with_capacity(function.instructions.len() * 8);
        for insn in &function.instructions {
            // SAFETY: `bpf_insn` is the kernel's 8-byte `#[repr(C)]` instruction with
            // no padding; viewing one as its bytes is sound.
            let raw = unsafe {
                std::slice::from_raw_parts(
                    (insn as *const aya_obj::generated::bpf_insn).cast::<u8>(),
                    8,
                )
            };
            bytes.extend_from_slice(raw);
        }
        out.push(bytes);
    }
    Ok(out)
}

/// `BPF_PROG_LOAD` of a cgroup sock_addr program with `attach_type`.
fn load_sock_addr(
    insns: &[u8],
    name: &str,
    attach_type: u32,
    section: &'static str,
) -> Result<OwnedFd, UnixError> {
    let license = b"Dual MIT/GPL\0";
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let attr_for = |log: Option<&mut Vec<u8>>| {
        let mut attr = [0u8; ATTR_LEN];
        // union bpf_attr, BPF_PROG_LOAD: prog_type @0, insn_cnt @4, insns @8, license @16,
        // log_level @24, log_size @28, log_buf @32, prog_name @48, expected_attach_type @68.
        put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
        put_u32(&mut attr, 4, (insns.len() / 8) as u32);
        put_u64(&mut attr, 8, insns.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        if let Some(log) = log {
            put_u32(&mut attr, 24, 1);
            put_u32(&mut attr, 28, log.len() as u32);
            put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
        }
        attr[48..64].copy_from_slice(&prog_name);
        put_u32(&mut attr, 68, attach_type);
        attr
    };
    match sys_bpf(BPF_PROG_LOAD, &attr_for(None)) {
        Ok(fd) => Ok(fd),
        Err(error) => {
            let mut log = vec![0u8; LOG_BYTES];
            let retry = sys_bpf(BPF_PROG_LOAD, &attr_for(Some(&mut log)));
            if let Ok(fd) = retry {
                return Ok(fd);
            }
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            let log = if tail.is_empty() {
                String::new()
            } else {
                format!(
                    "; verifier log (last {} lines):\n{}",
                    tail.len(),
                    tail.join("\n")
                )
            };
            Err(UnixError::Load {
                section,
                error,
                log,
            })
        }
    }
}

impl BpfRuntime {
    /// [`BpfRuntime::keep_attached`] for the two raw-loaded unix programs.
    fn keep_unix_attached(&mut self) {
        if self.globals.linger().is_zero() {
            return;
        }
        let Some(k) = self.keeper.as_mut() else {
            return;
        };
        let Ok(progs) = self.unix.cgroup_progs() else {
            return;
        };
        for (prog, (name, attach, section)) in progs.iter().zip(CGROUP_PROGS) {
            k.keep_with(name, |dir, _| {
                link_cgroup(prog, dir, attach, section)
                    .map(HeldLink::Raw)
                    .map_err(|e| e.to_string())
            });
        }
    }
}

/// `BPF_LINK_CREATE` of `prog` on the cgroup directory `dir`.
fn link_cgroup(
    prog: &OwnedFd,
    dir: &Path,
    attach_type: u32,
    section: &'static str,
) -> Result<OwnedFd, UnixError> {
    let attach_err = |error| UnixError::Attach {
        section,
        cgroup: dir.to_path_buf(),
        error,
    };
    let cgroup = std::fs::File::open(dir).map_err(attach_err)?;
    let mut attr = [0u8; ATTR_LEN];
    // BPF_LINK_CREATE: prog_fd @0, target_fd @4, attach_type @8, flags @12.
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 4, cgroup.as_raw_fd() as u32);
    put_u32(&mut attr, 8, attach_type);
    sys_bpf(BPF_LINK_CREATE, &attr).map_err(attach_err)
}

fn map_err(
    action: impl Into<String>,
    map: &'static str,
) -> impl Fn(aya::maps::MapError) -> UnixError {
    let action = action.into();
    move |e| UnixError::Map {
        action: action.clone(),
        map,
        reason: e.to_string(),
    }
}

impl BpfRuntime {
    /// Writes `entries` for `run`, then attaches the programs of `path`: LSM hooks, or
    /// the cgroup hooks on `cgroup_dir` plus the `sys_exit` backstop.
    pub fn enable_unix(
        &mut self,
        run: &mut RunBpf,
        path: UnixPath,
        cgroup_dir: &Path,
        entries: &UnixEntries,
        audit_only: bool,
    ) -> Result<(), UnixError> {
        if let Err(e) = &self.unix.offsets {
            return Err(UnixError::Offsets(e.clone()));
        }
        if let Err(e) = &self.fs_offsets {
            return Err(UnixError::Offsets(format!("inode offsets: {e}")));
        }
        let run_slot = run.slot();
        let maps = &mut self.maps;
        for (prefix, rule) in &entries.prefixes {
            maps.unix_prefixes
                .insert(&lpm_key(run_slot, prefix), *rule, 0)
                .map_err(map_err(
                    format!("insert {} into", String::from_utf8_lossy(prefix)),
                    names::MAP_UNIX_PREFIXES,
                ))?;
        }
        for (dev, ino, rule) in &entries.inodes {
            let key = FsRuleKey {
                run_slot,
                dev: *dev,
                ino: *ino,
            };
            maps.unix_inodes.insert(key, *rule, 0).map_err(map_err(
                format!("insert {dev}:{ino} into"),
                names::MAP_UNIX_INODES,
            ))?;
        }
        for (dev, dir_ino, name, rule) in &entries.named {
            let mut key = UnixNamedKey {
                run_slot,
                dev: *dev,
                dir_ino: *dir_ino,
                name: [0; UNIX_NAME_LEN],
            };
            key.name[..name.len()].copy_from_slice(name);
            maps.unix_named.insert(key, *rule, 0).map_err(map_err(
                format!(
                    "insert {dev}:{dir_ino}/{} into",
                    String::from_utf8_lossy(name)
                ),
                names::MAP_UNIX_NAMED,
            ))?;
        }
        let flags = if audit_only { UNIX_FLAG_AUDIT_ONLY } else { 0 };
        maps.unix_runs
            .insert(run_slot, flags, 0)
            .map_err(map_err("insert the run into", names::MAP_UNIX_RUNS))?;
        match path {
            UnixPath::Lsm => {
                for p in progs::LSM_UNIX {
                    self.acquire_global(run, &p)
                        .map_err(|e| UnixError::Program(e.to_string()))?;
                }
            }
            UnixPath::Cgroup => {
                let progs = self.unix.cgroup_progs()?;
                let mut links = Vec::with_capacity(2);
                for (prog, (name, attach, section)) in progs.iter().zip(CGROUP_PROGS) {
                    links.push((name, link_cgroup(prog, cgroup_dir, attach, section)?));
                }
                for (name, link) in links {
                    self.hold_link(run, HeldLink::Raw(link), name)
                        .map_err(|e| UnixError::Program(e.to_string()))?;
                }
                self.keep_unix_attached();
                self.enable_syscall_hooks(
                    run,
                    HOOK_UNIX_CONNECT,
                    "the unix-socket connect backstop",
                )
                .map_err(|e| UnixError::Program(e.to_string()))?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

/// A decoded `UnixEvent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixDenial {
    pub pid: u32,
    pub tgid: u32,
    pub cgroup_id: u64,
    pub op: u32,
    pub layer: u32,
    pub action: u32,
    pub reason: u32,
    pub dev: u32,
    pub ino: u64,
    /// The address (lossily UTF-8).
    pub path: String,
}

impl UnixDenial {
    /// Decodes a `UnixEvent` record (its header already checked by the caller).
    pub fn decode(header: &EventHeader, record: &[u8]) -> Option<Self> {
        let u32_at = |off: usize| -> Option<u32> {
            let b = record.get(off..off + 4)?;
            Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let ino = {
            let off = offset_of!(UnixEvent, ino);
            let b = record.get(off..off + 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_ne_bytes(a)
        };
        let len = (u32_at(offset_of!(UnixEvent, path_len))? as usize).min(UNIX_PATH_MAX);
        let start = offset_of!(UnixEvent, path);
        let bytes = record.get(start..start + len)?;
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        Some(Self {
            pid: header.pid,
            tgid: header.tgid,
            cgroup_id: header.cgroup_id,
            op: u32_at(offset_of!(UnixEvent, op))?,
            layer: u32_at(offset_of!(UnixEvent, layer))?,
            action: u32_at(offset_of!(UnixEvent, action))?,
            reason: u32_at(offset_of!(UnixEvent, reason))?,
            dev: u32_at(offset_of!(UnixEvent, dev))?,
            ino,
            path: String::from_utf8_lossy(&bytes[..end]).into_owned(),
        })
    }

    /// Layer name of the audit record.
    pub fn layer_name(&self) -> &'static str {
        match self.layer {
            UNIX_LAYER_LSM => crate::layers::name::LSM,
            UNIX_LAYER_TRACEPOINT => crate::layers::name::TRACEPOINT,
            _ => crate::layers::name::BPF,
        }
    }

    /// `deny`, `kill` or `would_deny` as an audit decision.
    pub fn decision(&self) -> crate::audit::Decision {
        match self.action {
            UNIX_ACTION_KILL => crate::audit::Decision::Kill,
            UNIX_ACTION_WOULD_DENY => crate::audit::Decision::WouldDeny,
            _ => crate::audit::Decision::Deny,
        }
    }

    fn rule(&self) -> &'static str {
        match self.reason {
            UNIX_REASON_NO_RULE => "no rule",
            UNIX_REASON_NOT_CANONICAL => {
                "no rule (relative path or `.`, `..`, `//` components: not judged by string)"
            }
            UNIX_REASON_NO_RUN => "no rule (cgroup not registered with a run)",
            UNIX_REASON_UNREADABLE => "no rule (address unreadable)",
            _ => "no rule",
        }
    }

    /// The `denied` audit record.
    pub fn audit_event(&self) -> UnixDenied {
        let op = match self.op {
            UNIX_OP_CONNECT => "connect",
            UNIX_OP_SENDMSG => "sendmsg",
            _ => "unknown",
        };
        // The cgroup path sees only the address, not the socket file.
        let inode = self.layer != UNIX_LAYER_CGROUP;
        let mut v = UnixDenied {
            op: op.into(),
            family: "AF_UNIX".into(),
            path: self.path.clone(),
            rule: self.rule().into(),
            pid: self.tgid,
            tid: self.pid,
            dev: inode.then_some(self.dev),
            ino: inode.then_some(self.ino),
            action: None,
            errno: None,
            signal: None,
            would_errno: None,
            would_signal: None,
        };
        match self.action {
            UNIX_ACTION_DENY => {
                v.action = Some("deny".into());
                v.errno = Some(Some("EPERM".into()));
            }
            UNIX_ACTION_KILL => {
                v.action = Some("kill".into());
                v.signal = Some("SIGKILL".into());
            }
            UNIX_ACTION_WOULD_DENY => {
                v.action = Some("would_deny".into());
                // The process saw no error.
                v.errno = Some(None);
                if self.layer == UNIX_LAYER_TRACEPOINT {
                    v.would_signal = Some("SIGKILL".into());
                } else {
                    v.would_errno = Some("EPERM".into());
                }
            }
            _ => {}
        }
        v
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use crate::layers::test_support::path_rule as rule;

    #[test]
    fn directories_become_slash_prefixes_and_files_exact_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let sock = root.join("s.sock");
        std::fs::write(&sock, "").unwrap();
        let mut out = UnixEntries::default();
        let v = UnixRule {
            source: UNIX_SOURCE_UNIX,
            rule_index: 0,
        };
        add_entry(&mut out, &rule(&root), v).unwrap();
        add_entry(&mut out, &rule(&sock), v).unwrap();
        let mut dir_prefix = root.as_os_str().as_bytes().to_vec();
        dir_prefix.push(b'/');
        let mut file_prefix = sock.as_os_str().as_bytes().to_vec();
        file_prefix.push(0);
        assert_eq!(out.prefixes[0].0, dir_prefix);
        assert_eq!(out.prefixes[1].0, file_prefix);
        assert_eq!(out.inodes.len(), 2);
        assert_eq!(out.named.len(), 1);
        assert_eq!(out.named[0].2, b"s.sock".to_vec());
        let dmeta = std::fs::metadata(&root).unwrap();
        assert_eq!(out.named[0].1, dmeta.ino());
    }

    #[test]
    fn a_missing_optional_socket_is_its_exact_path_and_name_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let v = UnixRule {
            source: UNIX_SOURCE_UNIX,
            rule_index: 0,
        };
        let mut out = UnixEntries::default();
        let mut missing = rule(&root.join("later.sock"));
        missing.exists = false;
        add_missing(&mut out, &missing, v);
        let mut exact = root.join("later.sock").as_os_str().as_bytes().to_vec();
        exact.push(0);
        assert_eq!(
            out.prefixes,
            vec![(exact, v)],
            "exact, never a directory prefix"
        );
        assert!(out.inodes.is_empty());
        let dmeta = std::fs::metadata(&root).unwrap();
        assert_eq!(out.named.len(), 1);
        assert_eq!(out.named[0].1, dmeta.ino());
        assert_eq!(out.named[0].2, b"later.sock".to_vec());
        // Under a directory that does not exist either: the string only.
        let mut out = UnixEntries::default();
        let mut deeper = rule(&root.join("no/such.sock"));
        deeper.exists = false;
        add_missing(&mut out, &deeper, v);
        assert_eq!(out.prefixes.len(), 1);
        assert!(out.named.is_empty());
    }

    #[test]
    fn written_forms_are_normalised_lexically() {
        assert_eq!(
            lexical_normal(Path::new("/var//run/./x/../y")),
            PathBuf::from("/var/run/y")
        );
        assert_eq!(lexical_normal(Path::new("/")), PathBuf::from("/"));
    }

    #[test]
    fn lpm_keys_count_the_prefix_bits() {
        let k = lpm_key(7, b"/a/");
        assert_eq!({ k.prefix_len() }, 32 + 24);
        assert_eq!(&k.data()[..7], &[0, 0, 0, 7, b'/', b'a', b'/']);
    }

    #[test]
    fn offsets_from_the_running_kernel() {
        let raw = super::super::btf::read_vmlinux().unwrap();
        let btf = KernelBtf::parse(&raw).unwrap();
        let offs = unix_offsets(&btf).unwrap();
        assert_eq!(offs.valid, 1);
        assert_eq!(offs.sa_kern_uaddr, 8);
    }

    #[test]
    fn a_unix_record_decodes_into_an_audit_record() {
        let mut path = [0u8; 112];
        path[..9].copy_from_slice(b"/run/x.s\0");
        let ev = UnixEvent {
            header: EventHeader {
                kind: agentd_common::unix::EVENT_KIND_UNIX,
                run_slot: 0,
                tgid: 5,
                pid: 6,
                cgroup_id: 7,
                ktime_ns: 8,
            },
            op: UNIX_OP_SENDMSG,
            layer: UNIX_LAYER_CGROUP,
            action: UNIX_ACTION_DENY,
            reason: UNIX_REASON_NO_RULE,
            dev: 0,
            path_len: 8,
            ino: 0,
            path,
        };
        // SAFETY: UnixEvent is repr(C) without implicit padding (const asserts).
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const UnixEvent).cast::<u8>(),
                std::mem::size_of::<UnixEvent>(),
            )
        };
        let crate::events::Event::Unix(d) = crate::events::Event::from_record(bytes).unwrap()
        else {
            panic!("not a unix event");
        };
        let v = serde_json::to_value(d.audit_event()).unwrap();
        assert_eq!(v["op"], "sendmsg");
        assert_eq!(v["path"], "/run/x.s");
        assert_eq!(v["errno"], "EPERM");
        assert_eq!(v["rule"], "no rule");
        assert_eq!(d.layer_name(), "bpf");
    }
}
