//! Landlock layer: filesystem, TCP-port and IPC-scope confinement.
//!
//! Built with the raw landlock syscalls rather than the `landlock` crate: the
//! parent creates the ruleset and adds every rule, and the child only calls
//! `landlock_restrict_self(fd, 0)`. Doing it by hand keeps three things explicit
//! that the crate's compatibility layer would otherwise decide for us:
//!
//! * every filesystem access right the running kernel's ABI knows is *handled*,
//!   so anything not granted by a rule is denied;
//! * fail closed: if the kernel lacks a right, port rules or a scope the request
//!   needs, [`prepare`] returns [`LandlockError::MissingFeatures`] naming them —
//!   there is no best-effort mode;
//! * the child side is a single raw syscall on a file descriptor made before fork.
//!
//! Landlock grants access to whole trees: a rule on a directory covers everything
//! beneath it, and nothing inside an allowed tree can be denied.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Paths every confined process may read and write (most programs break without).
pub const IMPLICIT_READ_WRITE: &[&str] = &["/dev/null"];
/// Paths every confined process may read.
pub const IMPLICIT_READ: &[&str] = &["/dev/zero", "/dev/urandom", "/dev/random", "/dev/full"];

/// Newest landlock ABI whose filesystem access rights this module knows. Rights
/// of ABI 8..=10 follow the uapi of the `landlock` crate 0.4.8; only ABI <= 7 is
/// exercised by our tests. On a newer kernel, rights added after this ABI are not
/// handled (the kernel leaves them unrestricted); `agentd doctor` should say so.
pub const NEWEST_KNOWN_ABI: i32 = 10;

/// `LANDLOCK_CREATE_RULESET_VERSION`.
const CREATE_RULESET_VERSION: libc::c_uint = 1 << 0;
/// `LANDLOCK_RULE_PATH_BENEATH`.
const RULE_PATH_BENEATH: libc::c_uint = 1;
/// `LANDLOCK_RULE_NET_PORT`.
const RULE_NET_PORT: libc::c_uint = 2;

/// `LANDLOCK_ACCESS_FS_*` from `<linux/landlock.h>`.
mod fs {
    pub const EXECUTE: u64 = 1 << 0;
    pub const WRITE_FILE: u64 = 1 << 1;
    pub const READ_FILE: u64 = 1 << 2;
    pub const READ_DIR: u64 = 1 << 3;
    pub const REMOVE_DIR: u64 = 1 << 4;
    pub const REMOVE_FILE: u64 = 1 << 5;
    pub const MAKE_CHAR: u64 = 1 << 6;
    pub const MAKE_DIR: u64 = 1 << 7;
    pub const MAKE_REG: u64 = 1 << 8;
    pub const MAKE_SOCK: u64 = 1 << 9;
    pub const MAKE_FIFO: u64 = 1 << 10;
    pub const MAKE_BLOCK: u64 = 1 << 11;
    pub const MAKE_SYM: u64 = 1 << 12;
    pub const REFER: u64 = 1 << 13;
    pub const TRUNCATE: u64 = 1 << 14;
    pub const IOCTL_DEV: u64 = 1 << 15;
    pub const RESOLVE_UNIX: u64 = 1 << 16;
}

/// `LANDLOCK_ACCESS_NET_*`.
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
/// `LANDLOCK_SCOPE_*`.
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

/// Every filesystem right, its uapi name and the ABI that introduced it.
const FS_RIGHTS: &[(u64, &str, i32)] = &[
    (fs::EXECUTE, "LANDLOCK_ACCESS_FS_EXECUTE", 1),
    (fs::WRITE_FILE, "LANDLOCK_ACCESS_FS_WRITE_FILE", 1),
    (fs::READ_FILE, "LANDLOCK_ACCESS_FS_READ_FILE", 1),
    (fs::READ_DIR, "LANDLOCK_ACCESS_FS_READ_DIR", 1),
    (fs::REMOVE_DIR, "LANDLOCK_ACCESS_FS_REMOVE_DIR", 1),
    (fs::REMOVE_FILE, "LANDLOCK_ACCESS_FS_REMOVE_FILE", 1),
    (fs::MAKE_CHAR, "LANDLOCK_ACCESS_FS_MAKE_CHAR", 1),
    (fs::MAKE_DIR, "LANDLOCK_ACCESS_FS_MAKE_DIR", 1),
    (fs::MAKE_REG, "LANDLOCK_ACCESS_FS_MAKE_REG", 1),
    (fs::MAKE_SOCK, "LANDLOCK_ACCESS_FS_MAKE_SOCK", 1),
    (fs::MAKE_FIFO, "LANDLOCK_ACCESS_FS_MAKE_FIFO", 1),
    (fs::MAKE_BLOCK, "LANDLOCK_ACCESS_FS_MAKE_BLOCK", 1),
    (fs::MAKE_SYM, "LANDLOCK_ACCESS_FS_MAKE_SYM", 1),
    (fs::REFER, "LANDLOCK_ACCESS_FS_REFER", 2),
    (fs::TRUNCATE, "LANDLOCK_ACCESS_FS_TRUNCATE", 3),
    (fs::IOCTL_DEV, "LANDLOCK_ACCESS_FS_IOCTL_DEV", 5),
    (fs::RESOLVE_UNIX, "LANDLOCK_ACCESS_FS_RESOLVE_UNIX", 9),
];

/// ABI that introduced TCP port rules.
const NET_ABI: i32 = 4;
/// ABI that introduced scoping of abstract unix sockets and signals.
const SCOPE_ABI: i32 = 6;

/// Granted on `read` paths.
const GRANT_READ: u64 = fs::READ_FILE | fs::READ_DIR;
/// Granted on `write` paths (write implies read). Every one of these must be
/// supported by the kernel, or [`prepare`] fails.
const GRANT_WRITE: u64 = GRANT_READ
    | fs::WRITE_FILE
    | fs::REMOVE_DIR
    | fs::REMOVE_FILE
    | fs::MAKE_CHAR
    | fs::MAKE_DIR
    | fs::MAKE_REG
    | fs::MAKE_SOCK
    | fs::MAKE_FIFO
    | fs::MAKE_BLOCK
    | fs::MAKE_SYM
    | fs::REFER
    | fs::TRUNCATE
    | fs::IOCTL_DEV;
/// Also granted on `write` paths when the kernel handles it (ABI 9+): connecting
/// to a pathname unix socket is allowed where creating one is.
const GRANT_WRITE_IF_HANDLED: u64 = fs::RESOLVE_UNIX;
/// Granted on `exec` paths: the kernel opens an executed file for reading.
const GRANT_EXEC: u64 = fs::EXECUTE | fs::READ_FILE | fs::READ_DIR;
/// Rights the kernel accepts on a rule whose target is not a directory.
const FILE_RIGHTS: u64 =
    fs::EXECUTE | fs::WRITE_FILE | fs::READ_FILE | fs::TRUNCATE | fs::IOCTL_DEV | fs::RESOLVE_UNIX;

/// `struct landlock_ruleset_attr` (ABI 6 layout; older kernels accept the larger
/// struct as long as the fields they don't know are zero).
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// `struct landlock_path_beneath_attr` (packed in the uapi header).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// `struct landlock_net_port_attr`.
#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

/// Pairs each rule attribute struct with its `landlock_rule_type`.
trait RuleAttr {
    const RULE_TYPE: libc::c_uint;
}

impl RuleAttr for PathBeneathAttr {
    const RULE_TYPE: libc::c_uint = RULE_PATH_BENEATH;
}

impl RuleAttr for NetPortAttr {
    const RULE_TYPE: libc::c_uint = RULE_NET_PORT;
}

/// What the policy asks landlock to allow. Everything not listed is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LandlockRequest {
    /// `READ_FILE | READ_DIR` on each (a file, or a directory tree).
    pub read: Vec<PathBuf>,
    /// Write implies read: every read right plus write, create, remove, rename,
    /// truncate and device-ioctl rights.
    pub write: Vec<PathBuf>,
    /// `EXECUTE | READ_FILE` (and `READ_DIR` for directories). The ELF and script
    /// interpreters of these files need `EXECUTE` too: see [`implied_exec_paths`].
    pub exec: Vec<PathBuf>,
    /// `None`: TCP connect is not restricted by landlock. `Some(ports)`: only
    /// these destination ports.
    pub tcp_connect_ports: Option<Vec<u16>>,
    /// `None`: TCP bind is not restricted. `Some(empty)`: every TCP bind is denied.
    pub tcp_bind_ports: Option<Vec<u16>>,
    /// `LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET` (ABI 6): no connecting to abstract
    /// unix sockets created outside the sandbox.
    pub scope_abstract_unix: bool,
    /// `LANDLOCK_SCOPE_SIGNAL` (ABI 6): no signals to processes outside the sandbox.
    pub scope_signal: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("landlock is not available: {}", unavailable_reason(*.errno))]
    Unavailable { errno: Errno },
    #[error("landlock ABI {abi} of this kernel lacks what the policy needs: {missing}")]
    MissingFeatures { abi: i32, missing: String },
    #[error("cannot create the landlock ruleset: {}", .errno.desc())]
    CreateRuleset { errno: Errno },
    #[error("cannot open {path} for a landlock rule: {}", .errno.desc())]
    OpenPath { path: PathBuf, errno: Errno },
    #[error("cannot stat {path} for a landlock rule: {}", .errno.desc())]
    StatPath { path: PathBuf, errno: Errno },
    #[error("cannot add the landlock rule for {path}: {}", .errno.desc())]
    AddPathRule { path: PathBuf, errno: Errno },
    #[error("cannot add the landlock rule for tcp port {port}: {}", .errno.desc())]
    AddPortRule { port: u16, errno: Errno },
}

fn unavailable_reason(errno: Errno) -> String {
    match errno {
        Errno::ENOSYS => "the kernel is built without it (ENOSYS)".to_string(),
        Errno::EOPNOTSUPP => {
            "it is disabled at boot; add landlock to the lsm= kernel parameter (EOPNOTSUPP)"
                .to_string()
        }
        other => other.desc().to_string(),
    }
}

/// The landlock ABI version of the running kernel (1, 2, ...).
pub fn abi_version() -> Result<i32, LandlockError> {
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) reads no memory and
    // returns the ABI version instead of a file descriptor.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if rc < 0 {
        return Err(LandlockError::Unavailable {
            errno: Errno::last(),
        });
    }
    i32::try_from(rc).map_err(|_| LandlockError::Unavailable {
        errno: Errno::EOVERFLOW,
    })
}

/// All filesystem rights known to both this module and a kernel of ABI `abi`.
fn fs_rights_for_abi(abi: i32) -> u64 {
    FS_RIGHTS
        .iter()
        .filter(|(_, _, since)| *since <= abi)
        .fold(0, |acc, (bit, _, _)| acc | bit)
}

/// What the request needs that a kernel of ABI `abi` lacks, one entry per item.
fn missing_features(abi: i32, req: &LandlockRequest) -> Vec<String> {
    // Read and write rules always exist (IMPLICIT_READ_WRITE), so every right of
    // GRANT_WRITE and GRANT_EXEC must be enforceable.
    let needed_fs = GRANT_WRITE | GRANT_EXEC;
    let mut missing: Vec<String> = FS_RIGHTS
        .iter()
        .filter(|(bit, _, since)| needed_fs & bit != 0 && *since > abi)
        .map(|(_, name, since)| format!("{name} (ABI {since})"))
        .collect();
    if abi < NET_ABI {
        if req.tcp_connect_ports.is_some() {
            missing.push(format!("tcp connect port rules (ABI {NET_ABI})"));
        }
        if req.tcp_bind_ports.is_some() {
            missing.push(format!("tcp bind port rules (ABI {NET_ABI})"));
        }
    }
    if abi < SCOPE_ABI {
        if req.scope_abstract_unix {
            missing.push(format!("abstract unix socket scoping (ABI {SCOPE_ABI})"));
        }
        if req.scope_signal {
            missing.push(format!("signal scoping (ABI {SCOPE_ABI})"));
        }
    }
    missing
}

/// Path rules in a stable order, with the grants of repeated paths merged.
fn path_rules(req: &LandlockRequest) -> Vec<(PathBuf, u64, bool)> {
    let mut rules: Vec<(PathBuf, u64, bool)> = Vec::new();
    let mut add = |path: PathBuf, access: u64, implicit: bool| match rules
        .iter_mut()
        .find(|(p, _, _)| *p == path)
    {
        Some(rule) => {
            rule.1 |= access;
            rule.2 &= implicit;
        }
        None => rules.push((path, access, implicit)),
    };
    for p in IMPLICIT_READ_WRITE {
        add(PathBuf::from(p), GRANT_WRITE | GRANT_WRITE_IF_HANDLED, true);
    }
    for p in IMPLICIT_READ {
        add(PathBuf::from(p), GRANT_READ, true);
    }
    for p in &req.read {
        add(p.clone(), GRANT_READ, false);
    }
    for p in &req.write {
        add(p.clone(), GRANT_WRITE | GRANT_WRITE_IF_HANDLED, false);
    }
    for p in &req.exec {
        add(p.clone(), GRANT_EXEC, false);
    }
    rules
}

/// Port rules, with the rights of a port listed for both connect and bind merged.
fn port_rules(req: &LandlockRequest) -> BTreeMap<u16, u64> {
    let mut ports = BTreeMap::new();
    for port in req.tcp_connect_ports.iter().flatten() {
        *ports.entry(*port).or_insert(0) |= NET_CONNECT_TCP;
    }
    for port in req.tcp_bind_ports.iter().flatten() {
        *ports.entry(*port).or_insert(0) |= NET_BIND_TCP;
    }
    ports
}

/// A landlock ruleset, fully built in the parent, ready for the child to enforce.
#[derive(Debug)]
pub struct PreparedLandlock {
    fd: OwnedFd,
    /// ABI version of the kernel the ruleset was built for.
    pub abi: i32,
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
    rule_count: usize,
}

impl PreparedLandlock {
    /// Child side: `landlock_restrict_self(fd, 0)`. The caps layer has already set
    /// `no_new_privs`, which the kernel requires of a process without
    /// `CAP_SYS_ADMIN`. The ruleset fd is close-on-exec, so it does not leak into
    /// the confined program.
    pub fn apply_in_child(&self) -> Result<(), Errno> {
        // SAFETY: async-signal-safe: one raw syscall on a file descriptor created
        // before fork; no memory is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_landlock_restrict_self,
                self.fd.as_raw_fd(),
                0 as libc::c_uint,
            )
        };
        if rc != 0 {
            return Err(Errno::last());
        }
        Ok(())
    }
}

/// One line for audit records and `agentd run --verbose`, e.g.
/// `ABI 7, handled fs 0xffff net 0x2 scoped 0x3, 9 rules`.
impl std::fmt::Display for PreparedLandlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ABI {}, handled fs {:#x} net {:#x} scoped {:#x}, {} rules",
            self.abi, self.handled_access_fs, self.handled_access_net, self.scoped, self.rule_count
        )?;
        if self.abi > NEWEST_KNOWN_ABI {
            write!(
                f,
                "; access rights added after ABI {NEWEST_KNOWN_ABI} are not handled"
            )?;
        }
        Ok(())
    }
}

/// Builds the ruleset for `req` (parent side). Fails closed: an unsupported
/// feature, a missing path or a rejected rule is an error, never a warning.
/// Implicit paths ([`IMPLICIT_READ_WRITE`], [`IMPLICIT_READ`]) that do not exist
/// are skipped: an absent grant only restricts more.
pub fn prepare(req: &LandlockRequest) -> Result<PreparedLandlock, LandlockError> {
    let abi = abi_version()?;
    let missing = missing_features(abi, req);
    if !missing.is_empty() {
        return Err(LandlockError::MissingFeatures {
            abi,
            missing: missing.join(", "),
        });
    }
    let handled_access_fs = fs_rights_for_abi(abi);
    let mut handled_access_net = 0;
    if req.tcp_connect_ports.is_some() {
        handled_access_net |= NET_CONNECT_TCP;
    }
    if req.tcp_bind_ports.is_some() {
        handled_access_net |= NET_BIND_TCP;
    }
    let mut scoped = 0;
    if req.scope_abstract_unix {
        scoped |= SCOPE_ABSTRACT_UNIX_SOCKET;
    }
    if req.scope_signal {
        scoped |= SCOPE_SIGNAL;
    }

    let attr = RulesetAttr {
        handled_access_fs,
        handled_access_net,
        scoped,
    };
    // SAFETY: `attr` is a live, fully initialised landlock_ruleset_attr and the
    // size passed is its size; the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0 as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(LandlockError::CreateRuleset {
            errno: Errno::last(),
        });
    }
    let raw_fd = libc::c_int::try_from(rc).map_err(|_| LandlockError::CreateRuleset {
        errno: Errno::EBADF,
    })?;
    // SAFETY: on success landlock_create_ruleset returns a new file descriptor
    // (close-on-exec) that nothing else owns.
    let ruleset = unsafe { OwnedFd::from_raw_fd(raw_fd) };

    let mut rule_count = 0;
    for (path, grant, implicit) in path_rules(req) {
        let parent = match nix::fcntl::open(&path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if implicit => continue,
            Err(errno) => return Err(LandlockError::OpenPath { path, errno }),
        };
        let stat = nix::sys::stat::fstat(&parent).map_err(|errno| LandlockError::StatPath {
            path: path.clone(),
            errno,
        })?;
        let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let mut allowed_access = grant & handled_access_fs;
        if !is_dir {
            allowed_access &= FILE_RIGHTS;
        }
        let rule = PathBeneathAttr {
            allowed_access,
            parent_fd: parent.as_raw_fd(),
        };
        add_rule(&ruleset, &rule).map_err(|errno| LandlockError::AddPathRule { path, errno })?;
        rule_count += 1;
    }
    for (port, allowed_access) in port_rules(req) {
        let rule = NetPortAttr {
            allowed_access,
            port: u64::from(port),
        };
        add_rule(&ruleset, &rule).map_err(|errno| LandlockError::AddPortRule { port, errno })?;
        rule_count += 1;
    }

    Ok(PreparedLandlock {
        fd: ruleset,
        abi,
        handled_access_fs,
        handled_access_net,
        scoped,
        rule_count,
    })
}

/// `landlock_add_rule(ruleset, T::RULE_TYPE, attr, 0)`.
fn add_rule<T: RuleAttr>(ruleset: &OwnedFd, attr: &T) -> Result<(), Errno> {
    // The RuleAttr impls pair each attribute struct with its RULE_TYPE.
    // SAFETY: `attr` is a live struct of the layout the kernel expects; it only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            T::RULE_TYPE,
            attr as *const T,
            0 as libc::c_uint,
        )
    };
    if rc != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Interpreters implied by exec rules
// ---------------------------------------------------------------------------

/// How many interpreter hops to follow (script -> interpreter -> its ELF
/// interpreter ...); the kernel itself allows at most 4 nested binfmt handlers.
const MAX_INTERP_DEPTH: usize = 4;
/// Directory entries scanned per exec directory.
const MAX_DIR_ENTRIES: usize = 4096;
/// `BINPRM_BUF_SIZE`: how much of a file the kernel reads to find `#!`.
const BINPRM_BUF_SIZE: usize = 256;
/// The kernel refuses program-header tables larger than this.
const MAX_PHDR_TABLE: usize = 65536;
/// Longest interpreter path accepted (`PATH_MAX`).
const MAX_INTERP_LEN: u64 = 4096;
const PT_INTERP: u32 = 3;

/// Files the kernel opens for execution on behalf of the allowed executables,
/// as `(implied path, because-of path)`: the ELF interpreter (`PT_INTERP`, e.g.
/// `/lib64/ld-linux-x86-64.so.2`) of each allowed ELF file and the `#!`
/// interpreter of each allowed script, followed transitively (a script's
/// interpreter's own ELF interpreter). The kernel's `open_exec()` of an
/// interpreter needs landlock `EXECUTE` just like the program itself.
///
/// Files listed directly in `exec` and regular files directly inside an `exec`
/// directory (not recursively) are inspected. Implied paths are canonicalized,
/// listed once (with the first file that needed them) and left out when an
/// `exec` entry already covers them. Relative `#!` interpreters (resolved by the
/// kernel against the cwd at exec time) and unreadable files are skipped: the
/// caller adds these paths to `exec`, and a missing grant only denies more.
pub fn implied_exec_paths(exec: &[PathBuf]) -> Vec<(PathBuf, PathBuf)> {
    let roots: Vec<PathBuf> = exec
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let covered = |p: &Path| roots.iter().any(|root| p.starts_with(root));
    let mut implied = Vec::new();
    let mut followed: HashSet<PathBuf> = HashSet::new();
    for entry in exec {
        for file in executable_files(entry) {
            let mut current = file;
            for _ in 0..MAX_INTERP_DEPTH {
                let Some(interp) = interpreter_of(&current) else {
                    break;
                };
                let interp = std::fs::canonicalize(&interp).unwrap_or(interp);
                if !followed.insert(interp.clone()) {
                    // Already listed (or covered) and its own chain followed.
                    break;
                }
                if !covered(&interp) {
                    implied.push((interp.clone(), current.clone()));
                }
                current = interp;
            }
        }
    }
    implied
}

/// `entry` itself if it is an executable regular file; the executable regular
/// files directly inside it (sorted) if it is a directory. "Executable" means
/// some execute bit is set: execve(2) refuses files without one, even to root.
fn executable_files(entry: &Path) -> Vec<PathBuf> {
    let is_executable_file = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if is_executable_file(entry) {
        return vec![entry.to_path_buf()];
    }
    let Ok(dir) = std::fs::read_dir(entry) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir
        .filter_map(Result::ok)
        .take(MAX_DIR_ENTRIES)
        .map(|e| e.path())
        .filter(|p| is_executable_file(p))
        .collect();
    files.sort();
    files
}

/// The interpreter the kernel would open to execute `path`, if any.
fn interpreter_of(path: &Path) -> Option<PathBuf> {
    let file = File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut head = [0u8; BINPRM_BUF_SIZE];
    let len = read_up_to(&file, &mut head);
    let head = head.get(..len)?;
    let interp = if head.starts_with(b"#!") {
        parse_shebang(head)?
    } else if head.starts_with(b"\x7fELF") {
        parse_elf_interp(|offset, len| {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset).ok()?;
            Some(buf)
        })?
    } else {
        return None;
    };
    interp.is_absolute().then_some(interp)
}

/// Reads from offset 0 until `buf` is full or end of file; returns the length read.
fn read_up_to(file: &File, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        match file.read_at(rest, filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    filled
}

/// The interpreter named on a `#!` line, as the kernel's binfmt_script reads it:
/// leading blanks skipped, the name ends at a blank, NUL or newline.
fn parse_shebang(head: &[u8]) -> Option<PathBuf> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next()?;
    let start = line.iter().position(|&b| b != b' ' && b != b'\t')?;
    let line = line.get(start..)?;
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\t' || b == 0)
        .unwrap_or(line.len());
    let name = line.get(..end)?;
    (!name.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(name)))
}

/// Fixed-width integer reads with the ELF file's byte order; `None` when out of bounds.
#[derive(Clone, Copy)]
struct ElfEndian {
    little: bool,
}

impl ElfEndian {
    fn bytes<const N: usize>(self, data: &[u8], offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        data.get(offset..end)?.try_into().ok()
    }

    fn u16(self, data: &[u8], offset: usize) -> Option<u16> {
        let b = self.bytes::<2>(data, offset)?;
        Some(if self.little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }

    fn u32(self, data: &[u8], offset: usize) -> Option<u32> {
        let b = self.bytes::<4>(data, offset)?;
        Some(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn u64(self, data: &[u8], offset: usize) -> Option<u64> {
        let b = self.bytes::<8>(data, offset)?;
        Some(if self.little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    }
}

/// `PT_INTERP` of an ELF file (32- or 64-bit, either byte order). `read(offset,
/// len)` returns exactly `len` bytes at `offset` or `None`; every length passed
/// to it is bounded (header size, 64 KiB of program headers, `PATH_MAX`).
fn parse_elf_interp(read: impl Fn(u64, usize) -> Option<Vec<u8>>) -> Option<PathBuf> {
    const EI_CLASS: usize = 4;
    const EI_DATA: usize = 5;
    let ident = read(0, 16)?;
    let endian = match ident.get(EI_DATA)? {
        1 => ElfEndian { little: true },
        2 => ElfEndian { little: false },
        _ => return None,
    };
    let is_64 = match ident.get(EI_CLASS)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    // (header size, e_phoff at, e_phentsize at, e_phnum at, minimum phdr size)
    let (ehdr_size, phoff_at, phentsize_at, phnum_at, min_phent) = if is_64 {
        (64, 0x20, 0x36, 0x38, 56)
    } else {
        (52, 0x1c, 0x2a, 0x2c, 32)
    };
    let ehdr = read(0, ehdr_size)?;
    let phoff = if is_64 {
        endian.u64(&ehdr, phoff_at)?
    } else {
        u64::from(endian.u32(&ehdr, phoff_at)?)
    };
    let phentsize = usize::from(endian.u16(&ehdr, phentsize_at)?);
    let phnum = usize::from(endian.u16(&ehdr, phnum_at)?);
    if phnum == 0 || phentsize < min_phent {
        return None;
    }
    let table_len = phentsize.checked_mul(phnum)?;
    if table_len > MAX_PHDR_TABLE {
        return None;
    }
    let table = read(phoff, table_len)?;
    for index in 0..phnum {
        let at = index.checked_mul(phentsize)?;
        if endian.u32(&table, at)? != PT_INTERP {
            continue;
        }
        // Elf64_Phdr: p_offset at 8, p_filesz at 32; Elf32_Phdr: 4 and 16.
        let (offset, filesz) = if is_64 {
            (
                endian.u64(&table, at.checked_add(8)?)?,
                endian.u64(&table, at.checked_add(32)?)?,
            )
        } else {
            (
                u64::from(endian.u32(&table, at.checked_add(4)?)?),
                u64::from(endian.u32(&table, at.checked_add(16)?)?),
            )
        };
        if !(2..=MAX_INTERP_LEN).contains(&filesz) {
            return None;
        }
        let raw = read(offset, usize::try_from(filesz).ok()?)?;
        let name = raw.split(|&b| b == 0).next()?;
        return (!name.is_empty()).then(|| PathBuf::from(OsStr::from_bytes(name)));
    }
    None
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::net::{TcpListener, TcpStream};

    /// Runs `f` in a forked child and returns its exit code (`None` if it did not
    /// exit normally).
    fn in_child(f: impl FnOnce() -> i32) -> Option<i32> {
        crate::layers::test_support::exit_code(crate::layers::test_support::in_child(f))
    }

    /// Applies `ruleset` in a child with no_new_privs, as the caps layer leaves it,
    /// then runs `check`; exit 100 + errno if the restriction itself failed.
    fn confined(ruleset: PreparedLandlock, check: impl FnOnce() -> i32) -> Option<i32> {
        in_child(move || {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return 99;
            }
            if let Err(e) = ruleset.apply_in_child() {
                return 100 + e as i32;
            }
            check()
        })
    }

    /// Exit code for an io result: 0 on success, the errno on failure.
    fn code<T>(r: std::io::Result<T>) -> i32 {
        match r {
            Ok(_) => 0,
            Err(e) => e.raw_os_error().unwrap_or(98),
        }
    }

    fn paths(p: &[&str]) -> Vec<PathBuf> {
        p.iter().map(PathBuf::from).collect()
    }

    /// Mirrors rust-landlock's LANDLOCK_CRATE_TEST_ABI: CI pins the ABI the kernel
    /// must provide, so this suite can't pass on a kernel that lacks it.
    #[test]
    fn abi_version_meets_pinned_abi() {
        let abi = abi_version().expect("landlock must be available for these tests");
        assert!(abi >= 1);
        if let Ok(pinned) = std::env::var("AGENTD_TEST_LANDLOCK_ABI") {
            let pinned: i32 = pinned.parse().expect("AGENTD_TEST_LANDLOCK_ABI");
            assert!(abi >= pinned, "kernel landlock ABI {abi} < pinned {pinned}");
        }
    }

    #[test]
    fn handles_every_fs_right_of_the_kernel_abi() {
        let prepared = prepare(&LandlockRequest::default()).expect("prepare");
        assert_eq!(prepared.handled_access_fs, fs_rights_for_abi(prepared.abi));
        assert_eq!(fs_rights_for_abi(1), (1 << 13) - 1);
        assert_eq!(fs_rights_for_abi(7), (1 << 16) - 1);
        assert_eq!(fs_rights_for_abi(9), (1 << 17) - 1);
        assert_eq!(prepared.handled_access_net, 0);
        assert_eq!(prepared.scoped, 0);
        // /dev/null plus the four read-only devices.
        assert_eq!(prepared.rule_count, 5);
        assert_eq!(
            prepared.to_string(),
            format!(
                "ABI {}, handled fs {:#x} net 0x0 scoped 0x0, 5 rules",
                prepared.abi,
                fs_rights_for_abi(prepared.abi)
            )
        );
    }

    #[test]
    fn missing_features_fail_closed() {
        let req = LandlockRequest {
            tcp_connect_ports: Some(vec![443]),
            tcp_bind_ports: Some(vec![]),
            scope_signal: true,
            ..Default::default()
        };
        assert!(missing_features(7, &req).is_empty());
        assert_eq!(
            missing_features(5, &req),
            vec!["signal scoping (ABI 6)".to_string()]
        );
        assert_eq!(
            missing_features(3, &req),
            vec![
                "LANDLOCK_ACCESS_FS_IOCTL_DEV (ABI 5)".to_string(),
                "tcp connect port rules (ABI 4)".to_string(),
                "tcp bind port rules (ABI 4)".to_string(),
                "signal scoping (ABI 6)".to_string(),
            ]
        );
        let err = LandlockError::MissingFeatures {
            abi: 5,
            missing: missing_features(5, &req).join(", "),
        };
        assert_eq!(
            err.to_string(),
            "landlock ABI 5 of this kernel lacks what the policy needs: signal scoping (ABI 6)"
        );
    }

    #[test]
    fn missing_path_is_an_error_naming_it() {
        let req = LandlockRequest {
            read: paths(&["/nonexistent/agentd-test"]),
            ..Default::default()
        };
        let err = prepare(&req).expect_err("missing path");
        assert_eq!(
            err.to_string(),
            "cannot open /nonexistent/agentd-test for a landlock rule: No such file or directory"
        );
    }

    #[test]
    fn read_root_allows_reads_only_beneath_it() {
        let req = LandlockRequest {
            read: paths(&["/usr"]),
            ..Default::default()
        };
        let status = confined(prepare(&req).expect("prepare"), || {
            if code(std::fs::read("/etc/hostname")) != libc::EACCES {
                return 1;
            }
            if code(std::fs::read("/usr/bin/true")) != 0 {
                return 2;
            }
            if code(std::fs::read_dir("/usr/bin")) != 0 {
                return 3;
            }
            // Write access to a file under a read-only root (no O_TRUNC, nothing written).
            // Not an executable: while another test runs it, the kernel answers ETXTBSY
            // before landlock is asked.
            let w = std::fs::OpenOptions::new()
                .write(true)
                .open("/usr/lib/os-release");
            if code(w) != libc::EACCES {
                return 4;
            }
            // Implicit devices.
            let null = std::fs::OpenOptions::new().write(true).open("/dev/null");
            if code(null) != 0 {
                return 5;
            }
            if code(std::fs::read_to_string("/dev/null")) != 0 {
                return 6;
            }
            if code(File::open("/dev/urandom")) != 0 {
                return 7;
            }
            let zero_w = std::fs::OpenOptions::new().write(true).open("/dev/zero");
            if code(zero_w) != libc::EACCES {
                return 8;
            }
            0
        });
        assert_eq!(status, Some(0));
    }

    #[test]
    fn write_root_allows_writes_read_root_does_not() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ro = tmp.path().join("ro");
        let rw = tmp.path().join("rw");
        std::fs::create_dir(&ro).expect("mkdir");
        std::fs::create_dir(&rw).expect("mkdir");
        std::fs::write(ro.join("existing"), b"data").expect("write");
        let req = LandlockRequest {
            read: vec![ro.clone()],
            write: vec![rw.clone()],
            ..Default::default()
        };
        let status = confined(prepare(&req).expect("prepare"), move || {
            if code(std::fs::write(rw.join("new"), b"x")) != 0 {
                return 1;
            }
            if code(std::fs::create_dir(rw.join("sub"))) != 0 {
                return 2;
            }
            if code(std::fs::remove_file(rw.join("new"))) != 0 {
                return 3;
            }
            if code(std::fs::write(ro.join("new"), b"x")) != libc::EACCES {
                return 4;
            }
            if code(std::fs::read(ro.join("existing"))) != 0 {
                return 5;
            }
            if code(std::fs::remove_file(ro.join("existing"))) != libc::EACCES {
                return 6;
            }
            let trunc = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(ro.join("existing"));
            if code(trunc) != libc::EACCES {
                return 7;
            }
            0
        });
        assert_eq!(status, Some(0));
    }

    #[test]
    fn file_rule_covers_only_that_file() {
        let req = LandlockRequest {
            read: paths(&["/etc/hostname"]),
            ..Default::default()
        };
        let status = confined(prepare(&req).expect("prepare"), || {
            if code(std::fs::read("/etc/hostname")) != 0 {
                return 1;
            }
            if code(std::fs::read("/etc/passwd")) != libc::EACCES {
                return 2;
            }
            0
        });
        assert_eq!(status, Some(0));
    }

    fn exec_true() -> i32 {
        let prog = CString::new("/usr/bin/true").expect("cstr");
        let argv = [prog.as_ptr(), std::ptr::null()];
        // SAFETY: argv is a NULL-terminated array of valid C strings.
        unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
        // execv only returns on failure: report its errno.
        Errno::last() as i32
    }

    #[test]
    fn exec_outside_exec_rules_is_denied() {
        let req = LandlockRequest {
            read: paths(&["/usr"]),
            ..Default::default()
        };
        let status = confined(prepare(&req).expect("prepare"), exec_true);
        assert_eq!(status, Some(libc::EACCES));
    }

    #[test]
    fn exec_of_allowed_file_with_implied_interpreter_works() {
        let mut exec = paths(&["/usr/bin/true"]);
        exec.extend(implied_exec_paths(&exec).into_iter().map(|(p, _)| p));
        let req = LandlockRequest {
            read: paths(&["/usr"]),
            exec,
            ..Default::default()
        };
        // /usr/bin/true itself exits 0 once exec succeeded.
        let status = confined(prepare(&req).expect("prepare"), exec_true);
        assert_eq!(status, Some(0));
    }

    #[test]
    fn exec_without_elf_interpreter_is_denied() {
        // The program itself is allowed but ld-linux is not: the kernel's
        // open_exec() of the interpreter fails.
        let req = LandlockRequest {
            read: paths(&["/usr"]),
            exec: paths(&["/usr/bin/true"]),
            ..Default::default()
        };
        let status = confined(prepare(&req).expect("prepare"), exec_true);
        assert_eq!(status, Some(libc::EACCES));
    }

    #[test]
    fn tcp_connect_only_to_allowed_ports() {
        let allowed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let other = TcpListener::bind("127.0.0.1:0").expect("bind");
        let allowed_addr = allowed.local_addr().expect("addr");
        let other_addr = other.local_addr().expect("addr");
        let req = LandlockRequest {
            tcp_connect_ports: Some(vec![allowed_addr.port()]),
            ..Default::default()
        };
        let status = confined(prepare(&req).expect("prepare"), move || {
            if code(TcpStream::connect(other_addr)) != libc::EACCES {
                return 1;
            }
            if code(TcpStream::connect(allowed_addr)) != 0 {
                return 2;
            }
            0
        });
        assert_eq!(status, Some(0));
    }

    #[test]
    fn tcp_bind_denied_when_no_port_allowed() {
        let req = LandlockRequest {
            tcp_bind_ports: Some(vec![]),
            ..Default::default()
        };
        let status = confined(prepare(&req).expect("prepare"), || {
            code(TcpListener::bind("127.0.0.1:0"))
        });
        assert_eq!(status, Some(libc::EACCES));
        // Control: with bind unrestricted the same bind works.
        let status = confined(
            prepare(&LandlockRequest::default()).expect("prepare"),
            || code(TcpListener::bind("127.0.0.1:0")),
        );
        assert_eq!(status, Some(0));
    }

    /// Landlock (ABI 4+) treats port 0 as the eBPF layer does: a bind to port 0 needs a
    /// rule for port 0, and that rule allows no specific port.
    #[test]
    fn tcp_bind_rule_for_port_0_allows_the_kernels_port_only() {
        let specific = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let req = LandlockRequest {
            tcp_bind_ports: Some(vec![0]),
            ..Default::default()
        };
        let status = confined(prepare(&req).expect("prepare"), move || {
            let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
                return 1;
            };
            if l.local_addr().map(|a| a.port()).unwrap_or(0) == 0 {
                return 2;
            }
            code(TcpListener::bind(("127.0.0.1", specific)))
        });
        assert_eq!(status, Some(libc::EACCES));
        // A rule for a specific port does not allow port 0.
        let req = LandlockRequest {
            tcp_bind_ports: Some(vec![specific]),
            ..Default::default()
        };
        let status = confined(prepare(&req).expect("prepare"), || {
            code(TcpListener::bind("127.0.0.1:0"))
        });
        assert_eq!(status, Some(libc::EACCES));
    }

    #[test]
    fn signal_scope_blocks_signals_to_outside() {
        let scoped = LandlockRequest {
            scope_signal: true,
            ..Default::default()
        };
        let kill_parent = || {
            // SAFETY: signal 0 only checks permission; getppid has no preconditions.
            let rc = unsafe { libc::kill(libc::getppid(), 0) };
            if rc == 0 {
                0
            } else {
                Errno::last() as i32
            }
        };
        let status = confined(prepare(&scoped).expect("prepare"), kill_parent);
        assert_eq!(status, Some(libc::EPERM));
        let status = confined(
            prepare(&LandlockRequest::default()).expect("prepare"),
            kill_parent,
        );
        assert_eq!(status, Some(0));
    }

    #[test]
    fn abstract_unix_scope_blocks_outside_sockets() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
        let name = format!("agentd-test-landlock-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let _listener = UnixListener::bind_addr(&addr).expect("bind");
        let scoped = LandlockRequest {
            scope_abstract_unix: true,
            ..Default::default()
        };
        let connect = {
            let addr = addr.clone();
            move || code(UnixStream::connect_addr(&addr))
        };
        let status = confined(prepare(&scoped).expect("prepare"), connect);
        assert_eq!(status, Some(libc::EPERM));
        let status = confined(
            prepare(&LandlockRequest::default()).expect("prepare"),
            move || code(UnixStream::connect_addr(&addr)),
        );
        assert_eq!(status, Some(0));
    }

    #[test]
    fn implied_exec_paths_finds_ld_linux() {
        let implied = implied_exec_paths(&paths(&["/bin/true"]));
        let interp = std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2")
            .or_else(|_| std::fs::canonicalize("/lib/ld-linux-aarch64.so.1"))
            .expect("an ld-linux exists");
        assert_eq!(implied, vec![(interp.clone(), PathBuf::from("/bin/true"))]);
        // Already covered by an exec entry: nothing implied.
        let implied = implied_exec_paths(&[PathBuf::from("/bin/true"), interp.clone()]);
        assert_eq!(implied, vec![]);
    }

    #[test]
    fn implied_exec_paths_follows_shebang_chain() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let script = tmp.path().join("script");
        std::fs::write(&script, b"#!  /bin/sh -e\necho hi\n").expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // Not executable: ignored, like execve(2) would refuse it.
        std::fs::write(tmp.path().join("fragment"), b"#!/bin/bash\n").expect("write");
        let implied = implied_exec_paths(std::slice::from_ref(&script));
        let sh = std::fs::canonicalize("/bin/sh").expect("sh");
        let ld = std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2")
            .or_else(|_| std::fs::canonicalize("/lib/ld-linux-aarch64.so.1"))
            .expect("an ld-linux exists");
        assert_eq!(implied, vec![(sh.clone(), script.clone()), (ld, sh)]);
        // A directory's files are scanned: the script in it is found.
        let implied_dir = implied_exec_paths(&[tmp.path().to_path_buf()]);
        assert_eq!(implied_dir.len(), 2);
    }

    #[test]
    fn shebang_parsing_matches_the_kernel() {
        assert_eq!(
            parse_shebang(b"#!/bin/sh\n"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            parse_shebang(b"#! \t/usr/bin/env python3\n"),
            Some(PathBuf::from("/usr/bin/env"))
        );
        assert_eq!(
            parse_shebang(b"#!/bin/bash"),
            Some(PathBuf::from("/bin/bash"))
        );
        assert_eq!(parse_shebang(b"#!   \n/bin/sh"), None);
        assert_eq!(parse_shebang(b"#!"), None);
        assert_eq!(parse_shebang(b"echo"), None);
    }

    /// A minimal little-endian ELF64 image with one PT_INTERP header.
    fn elf64(interp: &[u8], phnum: u16, filesz: u64) -> Vec<u8> {
        let mut img = vec![0u8; 64 + 56];
        img[..4].copy_from_slice(b"\x7fELF");
        img[4] = 2; // ELFCLASS64
        img[5] = 1; // ELFDATA2LSB
        img[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        img[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        img[0x38..0x3a].copy_from_slice(&phnum.to_le_bytes()); // e_phnum
        img[64..68].copy_from_slice(&PT_INTERP.to_le_bytes());
        img[64 + 8..64 + 16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        img[64 + 32..64 + 40].copy_from_slice(&filesz.to_le_bytes()); // p_filesz
        img.extend_from_slice(interp);
        img
    }

    fn reader(img: &[u8]) -> impl Fn(u64, usize) -> Option<Vec<u8>> + '_ {
        move |offset, len| {
            let start = usize::try_from(offset).ok()?;
            img.get(start..start.checked_add(len)?).map(<[u8]>::to_vec)
        }
    }

    #[test]
    fn elf_parser_is_bounds_checked() {
        let good = elf64(b"/lib/ld.so\0", 1, 11);
        assert_eq!(
            parse_elf_interp(reader(&good)),
            Some(PathBuf::from("/lib/ld.so"))
        );
        // p_filesz past the end of the file.
        assert_eq!(parse_elf_interp(reader(&elf64(b"/x\0", 1, 400))), None);
        // Huge p_filesz.
        assert_eq!(parse_elf_interp(reader(&elf64(b"/x\0", 1, u64::MAX))), None);
        // More program headers than the file holds.
        assert_eq!(parse_elf_interp(reader(&elf64(b"/x\0", 2, 3))), None);
        // No program headers.
        assert_eq!(parse_elf_interp(reader(&elf64(b"/x\0", 0, 3))), None);
        // Truncated header.
        assert_eq!(parse_elf_interp(reader(&good[..40])), None);
        // Empty interpreter.
        assert_eq!(parse_elf_interp(reader(&elf64(b"\0\0", 1, 2))), None);
        // Bad class byte.
        let mut bad = good.clone();
        bad[4] = 9;
        assert_eq!(parse_elf_interp(reader(&bad)), None);
    }
}
