//! The parsed, normalised policy: what the user wrote, with `{workspace}` and `~`
//! expanded, every path resolved, and the source position of each rule kept for errors.

use std::net::IpAddr;
use std::path::PathBuf;

/// A position in the policy file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deny what the policy does not allow.
    Enforce,
    /// Deny nothing; record what would have been denied.
    Audit,
    /// `mode: learn` / `agentd run --learn`: audit mode, for `agentd policy suggest`.
    Learn,
}

impl Mode {
    /// Audit and learn mode: nothing is denied, would-be denials are recorded.
    pub fn records_only(self) -> bool {
        self != Mode::Enforce
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// Where the policy came from (a file path, or `<preset:NAME>`).
    pub origin: String,
    /// SHA-256 of the policy file's bytes, lower-case hex.
    pub hash: String,
    pub version: u32,
    pub name: String,
    pub mode: Mode,
    pub fs: FsPolicy,
    pub exec: ExecPolicy,
    /// `None` when the policy has no `net` section at all.
    pub net: Option<NetPolicy>,
    /// Which of the caller's environment variables the command gets.
    pub env: EnvPolicy,
    pub budgets: Budgets,
    /// How `agentd attach` treats the policy (`agentd run` ignores it).
    pub attach: AttachPolicy,
}

/// The parts of a policy that only a process can apply to itself, before it runs, and
/// that `agentd attach` therefore cannot add to a running workload: `fs` (landlock),
/// `syscalls` (seccomp), `caps` (the capability drop).
pub const ATTACH_PARTS: &[&str] = &["fs", "syscalls", "caps"];

/// The `attach` section.
#[derive(Debug, Clone, Default)]
pub struct AttachPolicy {
    /// `attach.best_effort`: parts of [`ATTACH_PARTS`] an attach may leave out (it says
    /// so, and records them as `not_applied`); any other part the policy uses makes
    /// attach refuse.
    pub best_effort: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct FsPolicy {
    pub read: Vec<PathRule>,
    pub write: Vec<PathRule>,
    /// Denied even inside an allowed tree (matched by inode, see `layers::bpf::fs`).
    pub deny: Vec<PathRule>,
    /// Readable, but opening one taints the run.
    pub secret: Vec<PathRule>,
}

#[derive(Debug, Clone, Default)]
pub struct ExecPolicy {
    pub allow: Vec<PathRule>,
    /// Where PROT_EXEC file mappings may come from besides `allow`; `None` when the
    /// policy does not say (the default, `DEFAULT_LIBRARIES`, applies).
    pub libraries: Option<Vec<PathRule>>,
}

/// `exec.libraries` when the policy does not list it (each entry optional).
pub const DEFAULT_LIBRARIES: &[&str] = &["/usr/lib", "/lib", "/lib64"];

/// One path entry. `path` is absolute, expanded and canonical (symlinks resolved)
/// when the target exists; an `optional: true` entry that does not exist has
/// `exists == false` and is skipped by the layers.
#[derive(Debug, Clone)]
pub struct PathRule {
    /// Exactly what the user wrote, e.g. `{workspace}` or `~/.cache`.
    pub written: String,
    pub path: PathBuf,
    pub optional: bool,
    pub exists: bool,
    pub is_dir: bool,
    pub span: Span,
}

#[derive(Debug, Clone, Default)]
pub struct NetPolicy {
    pub allow: Vec<NetRule>,
    /// `net.bind`: local addresses, ports and protocols the run may bind (listen on).
    pub bind: Vec<NetRule>,
    /// `net.raw: true`: raw, packet and non-TCP/UDP inet sockets may be created.
    pub raw: bool,
    /// Destinations still allowed once the run is tainted (read an `fs.secret`).
    pub after_taint: Vec<NetRule>,
    /// `net.unix`: pathname unix sockets (or directories of them) the run may connect
    /// and send to, besides those under `fs.write`.
    pub unix: Vec<PathRule>,
    /// `net.unix_mediation: best_effort`: run without pathname-socket mediation when
    /// the kernel cannot provide it (logged in the Plan) instead of refusing to start.
    pub unix_best_effort: bool,
    /// `net.taint_socket_abort: best_effort`: run an `fs.secret` policy on a kernel that
    /// cannot abort the tainted run's TCP sockets at run end (`SOCK_DESTROY`), logged in
    /// the Plan, instead of refusing to start.
    pub taint_abort_best_effort: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetHost {
    /// An address with a prefix length (a plain address has the full length).
    Cidr { addr: IpAddr, prefix: u8 },
    /// A domain name, possibly with a leading `*.` wildcard, lower-case.
    Domain(String),
}

/// `HOST[:PORT[-PORT]][/tcp|/udp]`; IPv6 hosts are bracketed: `[::1]:9000/tcp`.
#[derive(Debug, Clone)]
pub struct NetRule {
    pub written: String,
    pub host: NetHost,
    /// Inclusive port range; `None` means any port.
    pub ports: Option<(u16, u16)>,
    /// `None` means both TCP and UDP.
    pub proto: Option<Proto>,
    pub span: Span,
}

pub use super::budget::Budgets;
pub use super::env::EnvPolicy;
