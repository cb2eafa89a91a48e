//! eBPF layer: loads the embedded `agentd-ebpf` object, attaches the process tracker
//! (`tp_btf/sched_process_exec` + `tp_btf/sched_process_exit`) and the one raw-syscall
//! program (`tp_btf/sys_exit`, with the denial tracker on; the layers turn on their own
//! per-syscall checks in it), keeps the per-run `RUN_CGROUPS` map and hands out the event
//! stream.
//!
//! One loaded program set serves every run: runs are told apart by their v2 cgroup id
//! (`watch_cgroup`), and events carry the run slot the cgroup was registered with.
//!
//! Kernel struct offsets come from BTF at load time (`btf`), because Rust eBPF has no
//! CO-RE relocations. The doctor probes (`probe`) load the same object.

mod btf;
mod budget;
mod exec_integrity;
mod fsrules;
mod net;
mod net_dns;
mod probe;
mod probe_unix;
mod ring;
mod unix;

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use agentd_common::{
    names,
    syscalls::{names as syscall_names, HOOK_DENIALS},
    EVENTS_RING_BYTES,
};
use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, ProgramError},
    Ebpf, EbpfLoader,
};

pub use btf::BtfError;
pub use budget::{BudgetCounterMaps, KernelCounts};
pub use fsrules::FsPath;
pub use net::{
    compile as compile_net_rules, proto_bits, AddrRule, NetDenial, NetRequest, TAINTED_RULE,
};
pub use net_dns::{dns_record, DnsAllowMap, DnsRules, DomainRule};
pub use probe::{probe_bpf_lsm, probe_cgroup_bpf, probe_tp_btf};
pub use probe_unix::probe_cgroup_unix_connect;
pub use ring::EventStream;
pub use unix::{UnixDenial, UnixEntries, UnixPath};

/// Pathname unix-socket helpers.
pub mod unix_sockets {
    pub use super::unix::resolve;
}

/// Inode-rule helpers (`fs.deny`, `fs.secret`).
pub mod fs {
    pub use super::fsrules::{locate, resolve};
}

/// Exec-integrity helpers.
pub mod exec {
    pub use super::exec_integrity::{locate_in_proc, resolve};
}

/// The eBPF object built by `build.rs` (empty when built with `AYA_BUILD_SKIP=1`).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agentd-ebpf"));

/// ELF section names, as used in messages (`attach tp_btf/sched_process_exec: ...`).
pub mod section {
    /// The exec tracker.
    pub const SCHED_PROCESS_EXEC: &str = "tp_btf/sched_process_exec";
    /// The exit tracker.
    pub const SCHED_PROCESS_EXIT: &str = "tp_btf/sched_process_exit";
    /// The one raw-syscall program (denial tracker and the per-syscall checks).
    pub const SYS_EXIT: &str = "tp_btf/sys_exit";
    /// The BPF LSM probe program.
    pub const LSM_FILE_OPEN: &str = "lsm/file_open";
    /// The cgroup-BPF probe program.
    pub const CGROUP_CONNECT4: &str = "cgroup/connect4";
}

/// Errors of the eBPF layer. Messages are lower-case and name the program or map.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The binary carries no eBPF object.
    #[error("agentd was built without its eBPF object (AYA_BUILD_SKIP=1)")]
    NotBuilt,
    /// Kernel BTF could not be read or lacks what the programs need.
    #[error("kernel btf: {0}")]
    Btf(#[from] BtfError),
    /// aya could not parse the kernel BTF.
    #[error("parse {} with aya: {error}", btf::VMLINUX_BTF)]
    AyaBtf {
        /// aya's error.
        error: aya::BtfError,
    },
    /// The object could not be loaded (parsing, relocation, map creation).
    #[error("load ebpf object: {}", chain(.error))]
    Object {
        /// aya's error.
        error: aya::EbpfError,
    },
    /// The object lacks a program (build and loader out of step).
    #[error("program {name} missing from the ebpf object")]
    MissingProgram {
        /// Program (function) name.
        name: &'static str,
    },
    /// The object lacks a map (build and loader out of step).
    #[error("map {name} missing from the ebpf object")]
    MissingMap {
        /// Map name.
        name: &'static str,
    },
    /// `BPF_PROG_LOAD` (or the preparation for it) failed.
    #[error("load {section}: {}", program_reason(.error))]
    Load {
        /// ELF section of the program, e.g. `tp_btf/sched_process_exec`.
        section: &'static str,
        /// aya's error (carries the errno and the verifier log).
        error: ProgramError,
    },
    /// Attaching a loaded program failed.
    #[error("attach {section}: {}", program_reason(.error))]
    Attach {
        /// ELF section of the program.
        section: &'static str,
        /// aya's error.
        error: ProgramError,
    },
    /// Attaching a loaded program to a cgroup failed.
    #[error("attach {section} to {}: {}", .cgroup.display(), program_reason(.error))]
    AttachCgroup {
        /// ELF section of the program.
        section: &'static str,
        /// The cgroup directory.
        cgroup: PathBuf,
        /// aya's error.
        error: ProgramError,
    },
    /// Detaching a program failed.
    #[error("detach {section}: {}", program_reason(.error))]
    Detach {
        /// ELF section of the program.
        section: &'static str,
        /// aya's error.
        error: ProgramError,
    },
    /// A map operation failed.
    #[error("{action} map {map}: {}", map_reason(.error))]
    Map {
        /// What was being done, e.g. `insert cgroup 1234 (run slot 3) into`.
        action: String,
        /// Map name.
        map: &'static str,
        /// aya's error.
        error: MapError,
    },
    /// The event stream was already taken from this runtime.
    #[error("events of map {} already taken", names::MAP_EVENTS)]
    EventsTaken,
    /// `take_events` was called outside a tokio runtime.
    #[error(
        "read map {}: no tokio runtime to register the ring buffer with",
        names::MAP_EVENTS
    )]
    NoReactor,
    /// Registering the ring buffer with tokio failed.
    #[error("register map {} with tokio: {error}", names::MAP_EVENTS)]
    Reactor {
        /// The I/O error.
        error: std::io::Error,
    },
    /// The network rules do not fit the maps.
    #[error("network rules: {0}")]
    NetRules(#[from] net::CompileError),
    /// The budget maps could not be set up.
    #[error("budget maps: {0}")]
    Budget(String),
    /// A cgroup directory could not be inspected.
    #[error("cgroup {}: {error}", .path.display())]
    Cgroup {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// The loaded process tracker: programs attached, maps opened.
///
/// Dropping it detaches the programs and frees the maps.
pub struct BpfRuntime {
    run_cgroups: HashMap<MapData, u64, u32>,
    dropped: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    /// Inode-rule maps, once `enable_fs_rules` ran.
    fs: Option<fsrules::FsMaps>,
    /// `EXEC_RULES`, once `enable_exec_integrity` ran.
    exec_rules: Option<
        HashMap<MapData, agentd_common::fsrules::FsRuleKey, agentd_common::fsrules::FsRuleValue>,
    >,
    /// Inode-rule offsets, or why this kernel's BTF lacks them.
    fs_offsets: Result<agentd_common::fsrules::FsOffsets, String>,
    /// The kernel's BTF as aya parsed it, for programs loaded later (budgets).
    btf: SharedBtf,
    /// Pathname unix sockets: offsets, map fds for the raw loader, attached programs.
    unix: unix::UnixState,
    /// `SYSCALL_HOOKS`: which checks the `sys_exit` program runs.
    syscall_hooks: Array<MapData, u32>,
    /// The bits last written to `syscall_hooks`.
    hooks: u32,
    /// Owns the programs and their links; declared last so it is dropped last.
    ebpf: Ebpf,
}

impl BpfRuntime {
    /// Reads the kernel's BTF offsets, loads the object and attaches
    /// `tp_btf/sched_process_exec`, `tp_btf/sched_process_exit` and `tp_btf/sys_exit`.
    pub fn load() -> Result<Self, BpfError> {
        Self::load_with_ring(EVENTS_RING_BYTES)
    }

    /// `load` with an `EVENTS` ring of `ring_bytes` (a power-of-two number of pages).
    fn load_with_ring(ring_bytes: u32) -> Result<Self, BpfError> {
        let Loaded {
            mut ebpf,
            btf,
            fs_offsets,
            unix_offsets,
        } = load_object(ring_bytes)?;
        // Before any map is taken: the raw unix loader relocates against all of them.
        let unix = unix::UnixState::capture(&ebpf, unix_offsets);
        for (name, section, tracepoint) in [
            (
                names::PROG_SCHED_PROCESS_EXEC,
                section::SCHED_PROCESS_EXEC,
                names::TP_SCHED_PROCESS_EXEC,
            ),
            (
                names::PROG_SCHED_PROCESS_EXIT,
                section::SCHED_PROCESS_EXIT,
                names::TP_SCHED_PROCESS_EXIT,
            ),
            (
                syscall_names::PROG_SYS_EXIT,
                section::SYS_EXIT,
                syscall_names::TP_SYS_EXIT,
            ),
        ] {
            let program: &mut BtfTracePoint = program(&mut ebpf, name, section)?;
            program
                .load(tracepoint, &btf)
                .map_err(|error| BpfError::Load { section, error })?;
            program
                .attach()
                .map_err(|error| BpfError::Attach { section, error })?;
        }

        let mut syscall_hooks: Array<MapData, u32> =
            Array::try_from(take_map(&mut ebpf, syscall_names::MAP_SYSCALL_HOOKS)?)
                .map_err(|error| map_error("open", syscall_names::MAP_SYSCALL_HOOKS, error))?;
        syscall_hooks.set(0, HOOK_DENIALS, 0).map_err(|error| {
            map_error(
                "enable the denial tracker in",
                syscall_names::MAP_SYSCALL_HOOKS,
                error,
            )
        })?;
        let run_cgroups = HashMap::try_from(take_map(&mut ebpf, names::MAP_RUN_CGROUPS)?)
            .map_err(|error| map_error("open", names::MAP_RUN_CGROUPS, error))?;
        let dropped = PerCpuArray::try_from(take_map(&mut ebpf, names::MAP_DROPPED)?)
            .map_err(|error| map_error("open", names::MAP_DROPPED, error))?;
        let events = RingBuf::try_from(take_map(&mut ebpf, names::MAP_EVENTS)?)
            .map_err(|error| map_error("open", names::MAP_EVENTS, error))?;
        Ok(Self {
            run_cgroups,
            dropped,
            events: Some(events),
            fs: None,
            exec_rules: None,
            fs_offsets,
            btf,
            unix,
            syscall_hooks,
            hooks: HOOK_DENIALS,
            ebpf,
        })
    }

    /// Turns on the `HOOK_*` checks in `bits` in the `sys_exit` program (see
    /// `agentd_common::syscalls`). `what` names them in an error.
    fn enable_syscall_hooks(&mut self, bits: u32, what: &str) -> Result<(), BpfError> {
        let hooks = self.hooks | bits;
        self.syscall_hooks.set(0, hooks, 0).map_err(|error| {
            map_error(
                format!("enable {what} (hook bits {bits:#x}) in"),
                syscall_names::MAP_SYSCALL_HOOKS,
                error,
            )
        })?;
        self.hooks = hooks;
        Ok(())
    }

    /// Reports exec/exit of processes in the v2 cgroup `cgroup_id` (the inode number of
    /// its directory, which is what `bpf_get_current_cgroup_id()` returns for its tasks),
    /// tagged with `run_slot`. Re-watching a cgroup updates its slot.
    pub fn watch_cgroup(&mut self, cgroup_id: u64, run_slot: u32) -> Result<(), BpfError> {
        self.run_cgroups
            .insert(cgroup_id, run_slot, 0)
            .map_err(|error| {
                map_error(
                    format!("insert cgroup {cgroup_id} (run slot {run_slot}) into"),
                    names::MAP_RUN_CGROUPS,
                    error,
                )
            })
    }

    /// Stops reporting the cgroup. Unwatching a cgroup that is not watched is a no-op, so
    /// cleanup paths can call it unconditionally.
    pub fn unwatch_cgroup(&mut self, cgroup_id: u64) -> Result<(), BpfError> {
        match self.run_cgroups.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(error) => Err(map_error(
                format!("remove cgroup {cgroup_id} from"),
                names::MAP_RUN_CGROUPS,
                error,
            )),
        }
    }

    /// The asynchronous reader of the `EVENTS` ring buffer. Can be taken once; must be
    /// called inside a tokio runtime (with I/O enabled).
    pub fn take_events(&mut self) -> Result<EventStream, BpfError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BpfError::NoReactor);
        }
        let ring = self.events.take().ok_or(BpfError::EventsTaken)?;
        EventStream::new(ring).map_err(|failed| {
            let (ring, error) = *failed;
            // Keep the ring so a later call can retry.
            self.events = Some(ring);
            BpfError::Reactor { error }
        })
    }

    /// Records lost because the ring buffer was full, summed over CPUs.
    pub fn dropped(&self) -> Result<u64, BpfError> {
        let per_cpu = self
            .dropped
            .get(&0, 0)
            .map_err(|error| map_error("read", names::MAP_DROPPED, error))?;
        Ok(per_cpu.iter().fold(0u64, |sum, n| sum.saturating_add(*n)))
    }
}

/// An object loaded into the kernel (maps created, no program loaded yet).
struct Loaded {
    ebpf: Ebpf,
    btf: SharedBtf,
    fs_offsets: Result<agentd_common::fsrules::FsOffsets, String>,
    unix_offsets: Result<agentd_common::unix::UnixOffsets, String>,
}

/// What every load needs from the kernel's BTF, parsed once per process: reading and
/// parsing `/sys/kernel/btf/vmlinux` (several MiB) costs tens of milliseconds, and a run
/// loads the object several times (the start-up probes, then the runtime).
struct PreparedBtf {
    btf: aya::Btf,
    offsets: agentd_common::KernelOffsets,
    fs_offsets: Result<agentd_common::fsrules::FsOffsets, String>,
    fs_global: agentd_common::fsrules::FsOffsets,
    unix_offsets: Result<agentd_common::unix::UnixOffsets, String>,
    unix_global: agentd_common::unix::UnixOffsets,
    /// Whether the BPF LSM path-operation hooks have the prototypes `fs_ops` reads.
    fs_ops_prototypes: Result<(), String>,
}

static PREPARED_BTF: OnceLock<PreparedBtf> = OnceLock::new();

/// The process-wide parsed kernel BTF, handed to aya's `load(hook, &btf)` calls.
#[derive(Clone, Copy)]
struct SharedBtf(&'static aya::Btf);

impl std::ops::Deref for SharedBtf {
    type Target = aya::Btf;

    fn deref(&self) -> &aya::Btf {
        self.0
    }
}

/// One loader for the whole process. `EbpfLoader::new()` parses the kernel BTF itself
/// (and throws it away once `.btf()` is given), so building one per load would undo
/// [`PREPARED_BTF`].
static LOADER: OnceLock<Mutex<EbpfLoader<'static>>> = OnceLock::new();

fn prepared_btf() -> Result<&'static PreparedBtf, BpfError> {
    if let Some(prepared) = PREPARED_BTF.get() {
        return Ok(prepared);
    }
    let raw = btf::read_vmlinux()?;
    let kernel_btf = btf::KernelBtf::parse(&raw)?;
    let offsets = btf::kernel_offsets(&kernel_btf)?;
    // Only the inode rules need these; a kernel without them fails when they are enabled.
    let fs_offsets = fsrules::fs_offsets(&kernel_btf).map_err(|e| e.to_string());
    let fs_global = fs_offsets
        .clone()
        .unwrap_or(agentd_common::fsrules::FsOffsets::UNSET);
    // Only the unix-socket programs need these (Linux 6.7+ for the cgroup context).
    let unix_offsets = unix::unix_offsets(&kernel_btf).map_err(|e| e.to_string());
    let unix_global = unix_offsets
        .clone()
        .unwrap_or(agentd_common::unix::UnixOffsets::UNSET);
    let fs_ops_prototypes = fsrules::fs_ops_prototypes(&kernel_btf);
    let btf = aya::Btf::parse(&raw, aya::Endianness::default())
        .map_err(|error| BpfError::AyaBtf { error })?;
    // A concurrent first call may have won the race; both parsed the same file.
    Ok(PREPARED_BTF.get_or_init(|| PreparedBtf {
        btf,
        offsets,
        fs_offsets,
        fs_global,
        unix_offsets,
        unix_global,
        fs_ops_prototypes,
    }))
}

/// [`fsrules::fs_ops_prototypes`] of this kernel, checked once per process.
fn fs_ops_prototypes() -> Result<(), String> {
    prepared_btf()
        .map_err(|e| e.to_string())?
        .fs_ops_prototypes
        .clone()
}

/// Loads the embedded object with this kernel's offsets in `.rodata`. `ring_bytes` sizes
/// the `EVENTS` ring buffer (probes use one page).
fn load_object(ring_bytes: u32) -> Result<Loaded, BpfError> {
    if EBPF_OBJECT.is_empty() {
        return Err(BpfError::NotBuilt);
    }
    let prepared = prepared_btf()?;
    let loader = LOADER.get_or_init(|| {
        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&prepared.btf))
            .override_global(names::GLOBAL_KERNEL_OFFSETS, &prepared.offsets, true)
            .override_global(
                agentd_common::fsrules::names::GLOBAL_FS_OFFSETS,
                &prepared.fs_global,
                true,
            )
            .override_global(
                agentd_common::unix::names::GLOBAL_UNIX_OFFSETS,
                &prepared.unix_global,
                true,
            );
        Mutex::new(loader)
    });
    // A poisoned lock only means another thread panicked mid-load; the loader holds
    // settings, not state, so it stays usable.
    let mut loader = loader
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let ebpf = loader
        .map_max_entries(names::MAP_EVENTS, ring_bytes)
        .load(EBPF_OBJECT)
        .map_err(|error| BpfError::Object { error })?;
    Ok(Loaded {
        ebpf,
        btf: SharedBtf(&prepared.btf),
        fs_offsets: prepared.fs_offsets.clone(),
        unix_offsets: prepared.unix_offsets.clone(),
    })
}

/// The typed program `name` of `ebpf`.
fn program<'e, P>(
    ebpf: &'e mut Ebpf,
    name: &'static str,
    section: &'static str,
) -> Result<&'e mut P, BpfError>
where
    &'e mut P: TryFrom<&'e mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or(BpfError::MissingProgram { name })?;
    program
        .try_into()
        .map_err(|error| BpfError::Load { section, error })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, BpfError> {
    ebpf.take_map(name).ok_or(BpfError::MissingMap { name })
}

fn map_error(action: impl Into<String>, map: &'static str, error: MapError) -> BpfError {
    BpfError::Map {
        action: action.into(),
        map,
        error,
    }
}

/// Most verifier-log lines kept in an error message.
const VERIFIER_LOG_LINES: usize = 30;

/// The kernel's reason for a program error: the errno text first (e.g. `Operation not
/// permitted (os error 1)`), then the tail of the verifier log when there is one.
fn program_reason(error: &ProgramError) -> String {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            if lines.is_empty() {
                io_error.to_string()
            } else {
                let tail = &lines[lines.len().saturating_sub(VERIFIER_LOG_LINES)..];
                format!(
                    "{io_error}; verifier log (last {} of {} lines):\n{}",
                    tail.len(),
                    lines.len(),
                    tail.join("\n")
                )
            }
        }
        ProgramError::SyscallError(e) => format!("{}: {}", e.call, e.io_error),
        other => chain(other),
    }
}

fn map_reason(error: &MapError) -> String {
    match error {
        MapError::SyscallError(e) => format!("{}: {}", e.call, e.io_error),
        other => chain(other),
    }
}

/// `error` and its sources, joined with `: ` (repeated texts skipped).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
