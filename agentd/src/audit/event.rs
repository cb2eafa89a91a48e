//! The schema of every audit record agentd writes: one serde type, [`AuditEvent`].
//!
//! A record is the fields the writer owns (`seq`, `prev`, `ts`, `run`, `layer`, `event`,
//! `decision`, `hash`: see [`super::Record`]) and the fields of its event, flattened into
//! the same JSON object. `AuditEvent` is the event part, tagged by `event`. The layer and
//! the decision are passed beside it, not inside: the same `denied` is written by landlock,
//! seccomp, caps, bpf, lsm, tracepoint, dns and kernel, with `deny`, `kill` or
//! `would_deny`.
//!
//! Field conventions, so that a record reads the same as before it was typed:
//! - a plain `Option` field is always written, `null` when it is `None`;
//! - one marked *absent when unset* (`skip_serializing_if`) is written only when set;
//! - a [`tri`] field (`Option<Option<T>>`) is absent, `null` or a value: unix denials
//!   write `errno: null` for `would_deny` and no `errno` at all for `kill`.
//!
//! `docs/audit-records.md` describes every event and field; a test checks it against the
//! records this type writes, and that each of them reads back as the same `AuditEvent`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Decision;

/// One record's event fields, tagged by `event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// A run begins (layer `agentd`), before any of its set-up.
    RunStart(RunStart),
    /// A run is over (layer `agentd`): how it ended, or why its command never ran.
    RunEnd(RunEnd),
    /// A process of the run exec'd (layer `bpf`, decision `allow`).
    Exec(Exec),
    /// A process of the run exited (layer `bpf`).
    Exit(Exit),
    /// Something the policy forbids was refused, killed, or (`mode: audit`) let through.
    Denied(Denied),
    /// A path-less syscall denial that a process met again after its first `denied`
    /// record: counted, and written once when the process exits or the run ends.
    DeniedRepeated(DeniedRepeated),
    /// The run read an `fs.secret` (decision `allow`): from now on it is tainted.
    Taint(Taint),
    /// A tainted run's packets were dropped (layer `bpf`, decision `deny`, at its end).
    EgressBlocked(EgressBlocked),
    /// A tainted run's TCP sockets were destroyed at its end (layer `bpf`).
    TaintSocketsAborted(TaintSocketsAborted),
    /// A budget step fired, or the kernel enforced a budget (tagged by `action`).
    Budget(Budget),
    /// `agentd stop RUN` (layer `agentd`, decision `kill`).
    Stop(Stop),
    /// `agentd pause RUN` (layer `agentd`).
    Pause(Pause),
    /// An existing workload was put under the run's policy (`agentd attach`, layer
    /// `agentd`), after its `run_start`.
    Attach(Attach),
    /// `agentd detach RUN`: what attach added is removed; the workload keeps running
    /// (layer `agentd`, before the run's `run_end`).
    Detach(Detach),
    /// Events lost before agentd read them (layer `bpf`: the ring buffer; `dns`: the
    /// resolver's decision queue).
    Dropped(Dropped),
    /// The run's DNS resolver started (layer `dns`).
    Resolver(Resolver),
    /// A query the run's resolver answered, failed, or could not parse (layer `dns`).
    Dns(Dns),
    /// Cgroup leaves a dead agentd left behind were removed (layer `cgroup`).
    StaleCgroups(StaleCgroups),
    /// The first record of a file (seq 0, layer `agentd`): what its `prev` is derived from.
    Genesis(Genesis),
    /// A signature over the chain so far (layer `agentd`).
    Checkpoint(Checkpoint),
    /// Seals over the torn bytes a crash left at the end of the file (layer `agentd`).
    TornTail(TornTail),
    /// The checkpoint key changed (layer `agentd`); signed by both keys.
    KeyRotation(KeyRotation),
    /// The daemon started (run `daemon`): what it re-adopted, and the gap since the last.
    DaemonStart(DaemonStart),
    /// The daemon stopped on a signal; its runs keep running (run `daemon`).
    DaemonStop(DaemonStop),
    /// SIGHUP re-read the config (run `daemon`).
    DaemonReload(DaemonReload),
    /// A run an earlier daemon started was taken over (run `daemon`).
    Adopted(Adopted),
    /// A run could not be taken over and was killed (run `daemon`, decision `kill`).
    AdoptionFailed(AdoptionFailed),
    /// A peer of the control socket was refused (run `daemon`, decision `deny`).
    PeerRefused(PeerRefused),
    /// A re-adopted run's client did not come back; the run is stopped (run `daemon`).
    ClientGone(ClientGone),
    /// A scoped capability token was minted (run `daemon`): its id, never the token.
    TokenIssued(TokenIssued),
    /// A token was revoked (run `daemon`).
    TokenRevoked(TokenRevoked),
    /// A request with a token was refused (run `daemon`, decision `deny`).
    TokenRefused(TokenRefused),
}

/// An audit record to append: the event and the core fields passed beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub layer: &'static str,
    pub decision: Option<Decision>,
    pub event: AuditEvent,
}

// ---------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    /// The policy file as given.
    pub policy: String,
    pub policy_name: String,
    /// SHA-256 of the policy as loaded.
    pub policy_hash: String,
    /// `enforce`, `audit` or `learn`.
    pub mode: String,
    pub argv: Vec<String>,
    /// The command as resolved on `PATH`; `null`: not found.
    pub program: Option<String>,
    pub workspace: String,
    /// Where the command starts.
    pub cwd: String,
    pub agentd_pid: u32,
    /// `uname -r`.
    pub kernel: String,
    /// Which layer enforces what (`plan::Plan::summary_json`): `layers`, `refusals`.
    pub plan: Value,
    /// Whether checkpoints are signed.
    pub signed: bool,
    /// The key that signs them; null when unsigned.
    pub signing_key: Option<SigningKeyUsed>,
    /// Who the command runs as.
    pub uid: u32,
    pub gid: u32,
    /// The user's name; `null` when the run keeps agentd's own identity or was given a
    /// number.
    pub user: Option<String>,
    /// Supplementary groups; absent when the run keeps agentd's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<u32>>,
    /// The names (never the values) of the command's environment variables, after
    /// the policy's `env` section.
    #[serde(default)]
    pub env: Vec<String>,
    /// Fields the caller adds (`RunSpec::start_fields`); one named like a field above
    /// replaces it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The key that signs a run's checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyUsed {
    /// The secret key file.
    pub path: String,
    /// Lower-case hex of the public key (what `audit verify --key` needs).
    pub public_key: String,
    /// True when agentd made this host key now (none existed yet).
    pub generated: bool,
}

/// A run whose command ran, or one whose command never did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RunEnd {
    /// The command ran and ended (readers tell the two apart by `elapsed_ms`).
    Ended(RunEnded),
    /// The command never ran: not found, not executable, or a layer could not be set up.
    Failed(RunFailed),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnded {
    /// The command's exit code; `null` when a signal ended it.
    pub exit_code: Option<i32>,
    /// The signal that ended it (`SIGKILL`); `null` when it exited.
    pub signal: Option<String>,
    /// agentd's own exit status.
    pub status: u8,
    /// What killed the run: a budget name, `stop` or `audit_failure`; `null`: nothing.
    pub killed_by: Option<String>,
    /// Processes the command left behind, killed at its end.
    pub stragglers_killed: usize,
    /// The run's cgroup leaves by hierarchy; `null` when they were already gone.
    pub cgroups: Option<BTreeMap<String, String>>,
    pub cgroups_removed: bool,
    pub elapsed_ms: u64,
    /// Every budget of the run's policy and its figures, by budget name.
    pub budgets: BTreeMap<String, BudgetFigures>,
    pub tainted: bool,
    pub egress_packets_dropped_after_taint: u64,
    /// Records with a `deny`, `kill` or `would_deny` decision.
    pub denials: u64,
    /// Why the command's status is not known (a re-adopted run whose exit record the
    /// ring lost while no daemon ran; `status` is then 255); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_unknown: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFailed {
    /// 125 (set-up failed), 126 (exec denied) or 127 (not found).
    pub exit_code: u8,
    pub error: String,
    /// The layer that could not be set up; absent when the exec itself failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_layer: Option<String>,
    /// The errno of a step in the child that failed; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
}

/// One budget's figures at the end of a run. Readers take any of them missing (older
/// logs): `agentd audit replay` judges what is there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BudgetFigures {
    pub limit: u64,
    /// The window of a rate form (`execs: 100/1h`); `null` for a total.
    pub window_ms: Option<u64>,
    /// `ms`, `bytes`, `count` or `percent`.
    pub unit: String,
    /// The total; `null` when it could not be read.
    pub used: Option<u64>,
    /// The highest use (within the window for a rate form); `null` when not known.
    pub peak: Option<u64>,
    /// Counter budgets: what the counter grew by per interval (see `budgets::history`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<BudgetHistory>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetHistory {
    pub interval_ms: u64,
    /// `counts[k]`: growth in `[k·interval_ms, (k+1)·interval_ms)` after the start.
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exec {
    /// The process (thread-group id).
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// `task->comm` after the exec.
    pub comm: String,
    /// The exec'd file as the kernel resolved it.
    pub path: String,
    /// What was passed to execve (cut at 255 bytes, marked by a trailing `…`).
    pub filename: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exit {
    pub pid: u32,
    /// `null` when a signal ended it.
    pub exit_code: Option<i32>,
    /// `null` when it exited.
    pub signal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    pub processes_killed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attach {
    /// What was named: `cgroup:PATH`, `pid:N` or `container:NAME`.
    pub target: String,
    /// The existing v2 cgroup the run confines (not created by agentd, never removed).
    pub cgroup: String,
    pub cgroup_id: u64,
    /// The processes in it when attached.
    pub processes: usize,
    /// Parts of the policy that cannot be applied to running processes, which the
    /// request marked best effort.
    pub not_applied: Vec<String>,
    /// Sharing the cgroup with processes outside the given pid's tree was forced.
    pub forced: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detach {
    /// The processes left running in the cgroup.
    pub processes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    /// Whether the cgroup froze.
    pub frozen: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    /// Lost since the last `dropped` record of this source.
    pub count: u64,
    /// Lost so far (the ring buffer's records); absent for the resolver's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// `ring buffer` or `resolver decisions`.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaleCgroups {
    pub removed: Vec<String>,
    /// Leaves whose left-over processes were killed first.
    pub killed_in: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Denials
// ---------------------------------------------------------------------------------------

/// The fields of a `denied` record, by what refused it. Serialized as the kind's own
/// fields (no tag: the records keep the shape they had). Read back by the fields that
/// only one kind has ([`Denied::kind_of`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Denied {
    /// A file or exec syscall that failed with `EACCES`/`EPERM` (layer `landlock`, or
    /// `kernel` when the policy allows it).
    File(FileDenied),
    /// A raw inet, packet or netlink `socket(2)` refused before any cgroup hook ran
    /// (layer `seccomp`, `caps` or `kernel`).
    Socket(SocketDenied),
    /// A path-less syscall refused by the seccomp deny list, or a signal refused by
    /// landlock's scope or the kernel (layer `seccomp`, `landlock` or `kernel`).
    Syscall(SyscallDenied),
    /// The command itself could not be exec'd (layer `landlock` or `exec`).
    Command(CommandDenied),
    /// The cgroup-BPF network hooks (layer `bpf`).
    Net(NetDenied),
    /// A unix-socket connect or send (layer `bpf`, `lsm` or `tracepoint`).
    Unix(UnixDenied),
    /// An `fs.deny` inode rule (layer `lsm` or `tracepoint`).
    FsRule(FsRuleDenied),
    /// Exec integrity: an exec or executable mapping of a file not in `exec.allow` /
    /// `exec.libraries` (layer `lsm` or `tracepoint`).
    ExecIntegrity(InodeHit),
    /// A name the run's resolver refused, or answer addresses it dropped (layer `dns`).
    Dns(DnsDenied),
}

/// Which kind of [`Denied`] a record's fields are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeniedKind {
    File,
    Socket,
    Syscall,
    Command,
    Net,
    Unix,
    FsRule,
    ExecIntegrity,
    Dns,
}

impl DeniedKind {
    /// The kind's name (a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            DeniedKind::File => "file",
            DeniedKind::Socket => "socket",
            DeniedKind::Command => "command",
            DeniedKind::Net => "net",
            DeniedKind::Unix => "unix",
            DeniedKind::FsRule => "fs_rule",
            DeniedKind::ExecIntegrity => "exec_integrity",
            DeniedKind::Dns => "dns",
            DeniedKind::Syscall => "syscall",
        }
    }
}

impl Denied {
    /// Which kind this is.
    pub fn kind(&self) -> DeniedKind {
        match self {
            Denied::File(_) => DeniedKind::File,
            Denied::Socket(_) => DeniedKind::Socket,
            Denied::Command(_) => DeniedKind::Command,
            Denied::Net(_) => DeniedKind::Net,
            Denied::Unix(_) => DeniedKind::Unix,
            Denied::FsRule(_) => DeniedKind::FsRule,
            Denied::ExecIntegrity(_) => DeniedKind::ExecIntegrity,
            Denied::Dns(_) => DeniedKind::Dns,
            Denied::Syscall(_) => DeniedKind::Syscall,
        }
    }

    /// Tells the kinds apart by the fields only one of them writes: `run_slot` (net),
    /// `family: AF_UNIX` (unix), `qtype` (dns), `path_source` with `rule_path` (an inode
    /// rule) or without (exec integrity), `syscall` with `op: socket` (socket), `op:
    /// syscall` (syscall) or another op (file); a record with none of them is the command's own exec.
    pub fn kind_of(fields: &Map<String, Value>) -> DeniedKind {
        let has = |k: &str| fields.contains_key(k);
        if has("run_slot") {
            DeniedKind::Net
        } else if fields.get("family").and_then(Value::as_str) == Some("AF_UNIX") {
            DeniedKind::Unix
        } else if has("qtype") {
            DeniedKind::Dns
        } else if has("path_source") && has("rule_path") {
            DeniedKind::FsRule
        } else if has("path_source") {
            DeniedKind::ExecIntegrity
        } else if has("syscall") && fields.get("op").and_then(Value::as_str) == Some("socket") {
            DeniedKind::Socket
        } else if has("syscall") && fields.get("op").and_then(Value::as_str) == Some("syscall") {
            DeniedKind::Syscall
        } else if has("syscall") {
            DeniedKind::File
        } else {
            DeniedKind::Command
        }
    }
}

impl<'de> Deserialize<'de> for Denied {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let fields = Map::deserialize(d)?;
        let kind = Self::kind_of(&fields);
        let v = Value::Object(fields);
        let r = match kind {
            DeniedKind::File => FileDenied::deserialize(v).map(Denied::File),
            DeniedKind::Socket => SocketDenied::deserialize(v).map(Denied::Socket),
            DeniedKind::Syscall => SyscallDenied::deserialize(v).map(Denied::Syscall),
            DeniedKind::Command => CommandDenied::deserialize(v).map(Denied::Command),
            DeniedKind::Net => NetDenied::deserialize(v).map(Denied::Net),
            DeniedKind::Unix => UnixDenied::deserialize(v).map(Denied::Unix),
            DeniedKind::FsRule => FsRuleDenied::deserialize(v).map(Denied::FsRule),
            DeniedKind::ExecIntegrity => InodeHit::deserialize(v).map(Denied::ExecIntegrity),
            DeniedKind::Dns => DnsDenied::deserialize(v).map(Denied::Dns),
        };
        r.map_err(D::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDenied {
    /// `open`, `create`, `truncate`, `mkdir`, `rmdir`, `unlink`, `exec`.
    pub op: String,
    /// Absolute (a relative argument resolved against the process's cwd or dirfd).
    pub path: String,
    /// What the process saw; empty (left out) for a `would_deny` record of an audit or
    /// learn run, whose call succeeded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub errno: String,
    /// A `would_deny` record: what enforce mode would have answered (`EACCES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_errno: Option<String>,
    /// The rule that denied it (re-judged under the run's policy), or why none did.
    pub rule: String,
    pub pid: u32,
    pub tid: u32,
    /// `openat`, `execve`, …
    pub syscall: String,
    /// `read` or `write`; absent for exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// The path as the process passed it; absent when it is `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_arg: Option<String>,
    /// Where a symlink on the way leads; absent when none does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    /// `true` when a relative path could not be resolved; absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_unresolved: bool,
    /// `link`/`rename`: the second path (the new name), resolved like `path`; absent
    /// for every other op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketDenied {
    /// `socket`.
    pub op: String,
    /// `AF_INET`, `AF_INET6`, `AF_PACKET`, `AF_NETLINK` or the number.
    pub family: String,
    /// `SOCK_RAW`, `SOCK_DGRAM`, `SOCK_STREAM`, `SOCK_PACKET` or the number.
    #[serde(rename = "type")]
    pub sock_type: String,
    pub protocol: i32,
    pub errno: String,
    pub rule: String,
    pub pid: u32,
    pub tid: u32,
    /// `socket`.
    pub syscall: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SyscallDenied {
    /// `syscall`.
    pub op: String,
    /// `ptrace`, `clone3`, `kill`, … (x86_64 name).
    pub syscall: String,
    /// The syscall number.
    pub nr: u32,
    /// What the process saw: `EPERM`, `ENOSYS`; `null` when the call killed it (`signal`).
    pub errno: Option<String>,
    /// The rule that denied it, or why no layer of agentd did.
    pub rule: String,
    pub pid: u32,
    pub tid: u32,
    /// The syscall table of a call a seccomp filter killed: `i386` (`int 0x80`), `x32`
    /// or `x86_64`; absent for a refused (not killed) call, always native.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi: Option<String>,
    /// The first argument (clone flags as hex, the kill target); absent when not shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<String>,
    /// The signal of a refused `kill`/`tkill`/`tgkill`, or the signal that killed the
    /// caller (`SIGSYS` from a seccomp filter); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

/// The count of a [`SyscallDenied`] that one process met more than once (the same
/// record, but for the thread): its fields, and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeniedRepeated {
    /// `syscall`.
    pub op: String,
    pub syscall: String,
    pub nr: u32,
    pub errno: Option<String>,
    pub rule: String,
    pub pid: u32,
    /// Times the process was refused this, the first (its `denied` record) included.
    pub count: u64,
    /// As in the `denied` record; absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<String>,
    /// As in the `denied` record; absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandDenied {
    /// `exec`.
    pub op: String,
    pub path: String,
    pub rule: String,
    pub errno: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetDenied {
    /// `connect`, `sendmsg`, `bind`, `socket` or `listen`.
    pub op: String,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number.
    pub proto: String,
    pub rule: String,
    /// `EPERM`; `null` for `would_deny` (the process saw no error).
    pub errno: Option<String>,
    pub pid: u32,
    pub tid: u32,
    pub run_slot: u32,
    /// The destination (or bind) address; absent for `socket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// For `socket` (no address): the family and type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub sock_type: Option<String>,
    /// What enforce mode would have returned; `would_deny` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_errno: Option<String>,
    /// `SIGKILL` for `listen` (the call had succeeded; the process was killed on its
    /// way back, `errno` is null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// What enforce mode would have done instead: `SIGKILL`; `would_deny` of `listen` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_signal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnixDenied {
    /// `connect` or `sendmsg`.
    pub op: String,
    /// `AF_UNIX`.
    pub family: String,
    /// The socket address.
    pub path: String,
    pub rule: String,
    pub pid: u32,
    pub tid: u32,
    /// The socket file's inode; absent on the cgroup path (which sees only the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// `deny`, `kill` or `would_deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `EPERM` (deny), `null` (would_deny), absent (kill).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "tri")]
    pub errno: Option<Option<String>>,
    /// `SIGKILL` (kill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// would_deny on a path that returns errors / kills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_errno: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_signal: Option<String>,
}

/// What the eBPF inode hooks saw: an `fs.deny` / `fs.secret` hit or an exec-integrity
/// decision (which is this alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InodeHit {
    /// `bpf_d_path` (the kernel's name for what was opened) or `inode lookup`.
    pub path_source: String,
    /// `open`, `unlink`, `rmdir`, `rename`, `link`, `setattr`, `create`; exec integrity:
    /// `exec`, `mmap_exec`, `mprotect_exec`.
    pub op: String,
    pub pid: u32,
    pub tid: u32,
    /// `null` when it could not be found again.
    pub path: Option<String>,
    /// The dentry name the hook saw.
    pub name: String,
    pub dev: u32,
    pub ino: u64,
    /// The rule as written (`fs.deny /etc/shadow`), or what was not matched.
    pub rule: String,
    /// `deny`, `kill`, `would_deny`, `taint`, or `unknown action N`; absent for an
    /// exec-integrity action agentd does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `EACCES` (deny).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// `SIGKILL` (kill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsRuleDenied {
    #[serde(flatten)]
    pub hit: InodeHit,
    /// The rule's path as resolved; `null` when the rule index is unknown.
    pub rule_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Taint {
    /// `action: taint`.
    #[serde(flatten)]
    pub hit: InodeHit,
    pub rule_path: Option<String>,
    /// The secret read (`path`).
    pub secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EgressBlocked {
    pub packets: u64,
    pub rule: String,
    /// How many `net.after_taint` rules the run had.
    pub after_taint: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaintSocketsAborted {
    pub tcp_sockets_aborted: SocketsAborted,
    pub rule: String,
}

/// How many TCP sockets were destroyed, or `"error: …"` (decision `null` then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SocketsAborted {
    Count(usize),
    Error(String),
}

impl SocketsAborted {
    pub fn from_result(r: std::io::Result<usize>) -> Self {
        match r {
            Ok(n) => Self::Count(n),
            Err(e) => Self::Error(format!("error: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Budgets
// ---------------------------------------------------------------------------------------

/// A `budget` record, by `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Budget {
    /// A warn step (decision `null`).
    Warn(BudgetWarn),
    /// A freeze step (decision `null`): `agentd resume` thaws the run.
    Freeze(BudgetFreeze),
    /// A kill step (decision `kill`; layer `bpf` when the eBPF side killed at the threshold).
    Kill(BudgetKill),
    /// `agentd resume RUN` (layer `agentd`).
    Resume(BudgetResume),
    /// The kernel's memory controller OOM-killed processes (layer `cgroup`, `kill`).
    OomKill(OomKill),
    /// The kernel's pids controller refused forks (layer `cgroup`, `deny`).
    ForkRefused(ForkRefused),
    /// After a network budget's kill: the run's TCP sockets were destroyed (`kill`).
    AbortSockets(AbortSockets),
}

/// What every step record carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetStep {
    /// The budget's name (`wall_time`, `execs`, …).
    pub budget: String,
    /// The step as written (`warn@80%`).
    pub step: String,
    pub limit: u64,
    pub unit: String,
    pub threshold: u64,
    pub used: u64,
    /// A rate form's window; absent for a total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    /// `true` when the kernel's window saw the rate go past the step first; absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kernel_window_exceeded: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetWarn {
    #[serde(flatten)]
    pub step: BudgetStep,
    /// The policy's `signal` and how many processes got it; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes_signalled: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetFreeze {
    #[serde(flatten)]
    pub step: BudgetStep,
    pub frozen: bool,
    /// Why the run could not be frozen; absent when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetKill {
    #[serde(flatten)]
    pub step: BudgetStep,
    pub processes_killed: usize,
    /// `fs_write_bytes`: the syscall that took the count past the kill step (the kernel
    /// killed its process on return, so its bytes may be on disk) and what it counted;
    /// absent for other budgets, or when agentd's own sample saw the step first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetResume {
    /// The budget whose step froze the run; `null` when it was not frozen.
    pub budget: Option<String>,
    pub thawed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OomKill {
    /// `memory`.
    pub budget: String,
    /// `kernel`.
    pub enforced_by: String,
    /// `null` when the policy has no memory budget (the kill came from elsewhere).
    pub limit: Option<u64>,
    /// `bytes`.
    pub unit: String,
    pub oom_kills: u64,
    pub new_oom_kills: u64,
    pub peak: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForkRefused {
    /// `pids`.
    pub budget: String,
    /// `kernel`.
    pub enforced_by: String,
    pub limit: Option<u64>,
    /// `count`.
    pub unit: String,
    /// `EAGAIN`.
    pub errno: String,
    pub refused_forks: u64,
    pub new_refused_forks: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbortSockets {
    pub tcp_sockets_aborted: SocketsAborted,
}

// ---------------------------------------------------------------------------------------
// DNS
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolver {
    pub listen: Vec<String>,
    pub upstream: Vec<String>,
    /// How long an answered address stays allowed past its TTL.
    pub grace_s: u64,
}

/// A `dns` record (layer `dns`), by outcome; read back by the fields each has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dns {
    /// Answered (decision `allow`).
    Answered(DnsAnswered),
    /// The upstream failed: the client got SERVFAIL (decision `null`).
    Failed(DnsFailed),
    /// A query that could not be parsed (decision `null`).
    Malformed(DnsMalformed),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsAnswered {
    /// `dns_query`.
    pub op: String,
    pub name: String,
    pub qtype: String,
    /// The `net.allow` rule, or `no rule` (`mode: audit`).
    pub rule: String,
    /// The addresses given to the client.
    pub addrs: Vec<String>,
    /// Whether they were allowed for the run's connects.
    pub allowed: bool,
    pub ttl_s: u64,
    pub rcode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsFailed {
    /// `dns_query`.
    pub op: String,
    pub name: String,
    pub qtype: String,
    pub error: String,
    /// `SERVFAIL`.
    pub rcode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsMalformed {
    /// `dns_query`.
    pub op: String,
    pub peer: String,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsDenied {
    /// `dns_query` (a refused name) or `dns_answer` (addresses dropped as rebinding).
    pub op: String,
    pub name: String,
    pub qtype: String,
    pub rule: String,
    /// What the client got (`REFUSED`, `NOTIMP`); refusals only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    /// Rebinding drops: why, and the addresses dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addrs: Option<Vec<String>>,
    /// `mode: audit`: what enforce mode would have answered (`REFUSED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_rcode: Option<String>,
}

// ---------------------------------------------------------------------------------------
// The writer's own records
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Genesis {
    /// `/etc/machine-id`, else the boot id.
    pub host: String,
    /// 128 random bits, hex.
    pub file_id: String,
    /// The key that signs the writer's checkpoints (`generated`: made by this process,
    /// the host's first signed run); none for an unsigned log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<SigningKeyUsed>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The Ed25519 public key, hex.
    pub key: String,
    /// Over `"agentd-audit-checkpoint-v1\0" || seq (u64 BE) || prev`, hex.
    pub sig: String,
    /// The last record it covers (the one before it).
    pub covers_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TornTail {
    pub bytes: u64,
    /// SHA-256 of the torn bytes, hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRotation {
    pub old_key: String,
    pub new_key: String,
    /// Both keys' signatures over the rotation message (`keys::rotation_message`).
    pub sig_old: String,
    pub sig_new: String,
}

// ---------------------------------------------------------------------------------------

/// `Exec { .. }.into()`: each event struct converts into its `AuditEvent`.
macro_rules! into_event {
    ($($ty:ty => |$v:ident| $e:expr),* $(,)?) => {
        $(impl From<$ty> for AuditEvent {
            fn from($v: $ty) -> Self {
                $e
            }
        })*
    };
}

into_event! {
    RunStart => |v| AuditEvent::RunStart(v),
    RunEnded => |v| AuditEvent::RunEnd(RunEnd::Ended(v)),
    RunFailed => |v| AuditEvent::RunEnd(RunEnd::Failed(v)),
    Exec => |v| AuditEvent::Exec(v),
    Exit => |v| AuditEvent::Exit(v),
    Denied => |v| AuditEvent::Denied(v),
    DeniedRepeated => |v| AuditEvent::DeniedRepeated(v),
    FileDenied => |v| AuditEvent::Denied(Denied::File(v)),
    SocketDenied => |v| AuditEvent::Denied(Denied::Socket(v)),
    SyscallDenied => |v| AuditEvent::Denied(Denied::Syscall(v)),
    CommandDenied => |v| AuditEvent::Denied(Denied::Command(v)),
    NetDenied => |v| AuditEvent::Denied(Denied::Net(v)),
    UnixDenied => |v| AuditEvent::Denied(Denied::Unix(v)),
    FsRuleDenied => |v| AuditEvent::Denied(Denied::FsRule(v)),
    InodeHit => |v| AuditEvent::Denied(Denied::ExecIntegrity(v)),
    DnsDenied => |v| AuditEvent::Denied(Denied::Dns(v)),
    Taint => |v| AuditEvent::Taint(v),
    EgressBlocked => |v| AuditEvent::EgressBlocked(v),
    TaintSocketsAborted => |v| AuditEvent::TaintSocketsAborted(v),
    Budget => |v| AuditEvent::Budget(v),
    Stop => |v| AuditEvent::Stop(v),
    Pause => |v| AuditEvent::Pause(v),
    Attach => |v| AuditEvent::Attach(v),
    Detach => |v| AuditEvent::Detach(v),
    Dropped => |v| AuditEvent::Dropped(v),
    Resolver => |v| AuditEvent::Resolver(v),
    Dns => |v| AuditEvent::Dns(v),
    StaleCgroups => |v| AuditEvent::StaleCgroups(v),
    Genesis => |v| AuditEvent::Genesis(v),
    Checkpoint => |v| AuditEvent::Checkpoint(v),
    TornTail => |v| AuditEvent::TornTail(v),
    KeyRotation => |v| AuditEvent::KeyRotation(v),
    DaemonStart => |v| AuditEvent::DaemonStart(v),
    DaemonStop => |v| AuditEvent::DaemonStop(v),
    DaemonReload => |v| AuditEvent::DaemonReload(v),
    Adopted => |v| AuditEvent::Adopted(v),
    AdoptionFailed => |v| AuditEvent::AdoptionFailed(v),
    PeerRefused => |v| AuditEvent::PeerRefused(v),
    ClientGone => |v| AuditEvent::ClientGone(v),
    TokenIssued => |v| AuditEvent::TokenIssued(v),
    TokenRevoked => |v| AuditEvent::TokenRevoked(v),
    TokenRefused => |v| AuditEvent::TokenRefused(v),
}

impl AuditEvent {
    /// The fields of the record: `event` and the event's own, as a JSON object.
    pub fn to_fields(&self) -> Result<Map<String, Value>, serde_json::Error> {
        match serde_json::to_value(self)? {
            Value::Object(m) => Ok(m),
            _ => Err(serde::ser::Error::custom(
                "an audit event did not serialize as an object",
            )),
        }
    }

    /// Records that must not be lost (besides every deny and kill): fsync'd before they
    /// are acknowledged.
    pub fn is_durable(&self) -> bool {
        matches!(
            self,
            AuditEvent::RunStart(_)
                | AuditEvent::RunEnd(_)
                | AuditEvent::Dropped(_)
                | AuditEvent::Denied(_)
                | AuditEvent::DeniedRepeated(_)
                | AuditEvent::DaemonStart(_)
                | AuditEvent::DaemonStop(_)
                | AuditEvent::DaemonReload(_)
                | AuditEvent::Adopted(_)
                | AuditEvent::AdoptionFailed(_)
                | AuditEvent::PeerRefused(_)
                | AuditEvent::ClientGone(_)
                | AuditEvent::TokenIssued(_)
                | AuditEvent::TokenRevoked(_)
                | AuditEvent::TokenRefused(_)
        )
    }
}

// ---------------------------------------------------------------------------------------
// The daemon's own records
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStart {
    pub pid: u32,
    /// The config file read.
    pub config: String,
    pub socket: String,
    /// Where programs, links and maps are pinned.
    pub pin_dir: Option<String>,
    /// Daemons before this one on the same state directory.
    pub restarts: u64,
    /// The previous daemon's pid; null on a first start.
    pub previous_pid: Option<u32>,
    /// The previous daemon's last heartbeat (ms since the epoch): the gap began then.
    pub down_since_unix_ms: Option<u64>,
    /// How long no daemon ran; null on a first start.
    pub down_ms: Option<u64>,
    /// Runs taken over.
    pub adopted: Vec<String>,
    /// Runs (or state files) that could not be, and why.
    pub not_adopted: Vec<(String, String)>,
    pub kernel: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStop {
    /// `SIGTERM` or `SIGINT`.
    pub signal: String,
    pub runs_left_running: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonReload {
    pub config: String,
    /// Changed settings that take effect only at the next start.
    pub needs_restart: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adopted {
    pub adopted_run: String,
    /// The run's command.
    pub pid: u32,
    pub uid: u32,
    /// Its eBPF slot.
    pub slot: u32,
    /// Since its command started, downtime included.
    pub elapsed_ms: u64,
    pub detached: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdoptionFailed {
    pub failed_run: String,
    pub reason: String,
    pub processes_killed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRefused {
    /// The peer (SO_PEERCRED).
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// What it asked for.
    pub op: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenIssued {
    pub token_id: String,
    /// The one run it acts on.
    pub token_run: String,
    /// What it allows (`status`, `stop`, `pause`, `resume`, `logs`).
    pub allow: Vec<String>,
    pub expires_unix: u64,
    /// Who minted it (SO_PEERCRED).
    pub uid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRevoked {
    pub token_id: String,
    pub uid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRefused {
    /// The id the token claims (`null` when it could not be read at all); an edited
    /// token's id is what the edit made it.
    pub token_id: Option<String>,
    /// The peer (SO_PEERCRED).
    pub uid: u32,
    pub pid: i32,
    pub op: String,
    /// `malformed`, `bad_signature`, `expired`, `revoked`, `wrong_run`, `not_allowed`.
    pub why: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientGone {
    pub gone_run: String,
    pub grace_s: u64,
}

/// `Option<Option<T>>` as a field that is absent (`None`), `null` (`Some(None)`) or a
/// value; goes with `#[serde(default, skip_serializing_if = "Option::is_none")]`.
mod tri {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(Some(x)) => x.serialize(s),
            _ => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
pub(crate) mod tests;
