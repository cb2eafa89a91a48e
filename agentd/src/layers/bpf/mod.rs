//! eBPF layer: loads the embedded `agentd-ebpf` object once per process and serves
//! every run of that process from it.
//!
//! - Every map is opened when the object loads ([`maps`]); programs are loaded on first
//!   use and shared ([`progs`]).
//! - A run registers its v2 cgroup ([`BpfRuntime::register`]) and gets a slot; its map
//!   entries are keyed by that slot or its cgroup id, and [`BpfRuntime::release`]
//!   removes all of them ([`run`]).
//! - Host-wide programs (the exec/exit trackers, the one `tp_btf/sys_exit` program, BPF
//!   LSM hooks) are attached while at least one run needs them; the `sys_exit`
//!   program's per-syscall checks are turned on by hook bits that runs hold.
//! - Events carry the cgroup id (and slot) of their run, so one reader serves every run.
//! - The daemon pins maps and links in bpffs ([`pins`]), so its restart detaches nothing.
//!
//! Kernel struct offsets come from BTF at load time (`btf`), because Rust eBPF has no
//! CO-RE relocations. The doctor probes (`probe`) load their own, shrunken, copy.

mod btf;
mod budget;
mod exec_integrity;
mod fsrules;
mod keeper;
mod maps;
mod net;
mod net_dns;
mod net_tables;
pub mod pins;
mod probe;
mod probe_unix;
pub mod progs;
mod ring;
mod run;
mod sys;
mod unix;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use agentd_common::{
    names,
    syscalls::{names as syscall_names, HOOK_DENIALS, HOOK_LISTEN},
    EVENTS_RING_BYTES,
};
use aya::{maps::MapError, programs::ProgramError, Ebpf, EbpfLoader};

pub use btf::BtfError;
pub use budget::{BudgetCounterMaps, KernelCounts};
pub use fsrules::FsPath;
pub use net::{
    compile as compile_net_rules, proto_bits, AddrRule, NetDenial, NetRequest, TAINTED_RULE,
};
pub use net_dns::{dns_record, DnsAllowMap, DnsRules, DomainRule};
pub use probe::{end_probes, probe_bpf_lsm, probe_cgroup_bpf, probe_fexit, probe_tp_btf};
pub use probe_unix::probe_cgroup_unix_connect;
pub use ring::EventStream;
pub use run::{RunBpf, RunBpfState};

pub use unix::{UnixDenial, UnixPath};

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

/// The embedded eBPF object (its hash names the pin directory).
pub fn object() -> &'static [u8] {
    EBPF_OBJECT
}

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
    /// A thread loading programs panicked (a bug; the load is refused).
    #[error("a program loader thread panicked")]
    LoaderPanicked,
    /// The raw-loaded unix-socket programs could not be loaded.
    #[error("unix-socket programs: {0}")]
    Unix(Box<unix::UnixError>),
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
    /// Every run slot is in use.
    #[error("every run slot is in use ({max} runs at once)")]
    NoSlot {
        /// Runs one runtime serves at once.
        max: u32,
    },
    /// Every shared net rule table number is in use.
    #[error("every shared net rule table number is in use")]
    NoNetTable,
    /// A re-adopted run's slot is already in use.
    #[error("run slot {slot} is already in use")]
    SlotTaken {
        /// The slot.
        slot: u32,
    },
    /// A global program was asked to attach to a cgroup or the reverse (a bug).
    #[error("{section} is a global program and attaches to no cgroup")]
    NotCgroup {
        /// ELF section.
        section: &'static str,
    },
    /// See [`BpfError::NotCgroup`].
    #[error("{section} attaches to cgroups, not host-wide")]
    NotGlobal {
        /// ELF section.
        section: &'static str,
    },
    /// A link could not be turned into a pinnable fd link.
    #[error("link of {section}: {reason}")]
    Link {
        /// ELF section.
        section: &'static str,
        /// aya's error.
        reason: String,
    },
    /// Pinning an object in bpffs failed.
    #[error("pin {}: {error}", .path.display())]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The pin directory could not be prepared.
    #[error("bpffs directory {}: {error}", .path.display())]
    PinDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// Turning on per-syscall checks failed.
    #[error("enable {what} (hook bits {bits:#x}): {source}")]
    Hooks {
        /// The checks.
        what: String,
        /// Their bits.
        bits: u32,
        /// Why.
        source: Box<BpfError>,
    },
    /// A cgroup directory could not be inspected.
    #[error("cgroup {}: {error}", .path.display())]
    Cgroup {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// The loaded eBPF object: every map opened, programs loaded on first use and shared by
/// every run, global programs attached while a run needs them (see [`progs`]).
///
/// One runtime serves many runs. Each run registers its v2 cgroup and gets a slot
/// ([`RunBpf`]); every map entry of a run is keyed by its slot or its cgroup id, and
/// [`BpfRuntime::release`] removes all of them. Dropping the runtime detaches what this
/// process attached and frees the maps, except what is pinned (the daemon).
pub struct BpfRuntime {
    maps: maps::Maps,
    /// Inode-rule offsets, or why this kernel's BTF lacks them.
    fs_offsets: Result<agentd_common::fsrules::FsOffsets, String>,
    /// The kernel's BTF as aya parsed it, for programs loaded on first use.
    btf: SharedBtf,
    /// Pathname unix sockets: offsets, map fds for the raw loader, loaded programs.
    unix: unix::UnixState,
    /// Runs per `HOOK_*` bit of the `sys_exit` program.
    hooks: run::HookRefs,
    /// Run slots in use.
    slots: run::Slots,
    /// Global programs attached for runs.
    globals: progs::Globals,
    /// Net rule tables shared by runs with the same rules.
    net_tables: net_tables::NetTables,
    /// The daemon's empty cgroup that keeps the cgroup-BPF static keys on between runs.
    keeper: Option<keeper::CgroupKeeper>,
    /// How the denial tracker and the `listen()` check see syscall returns.
    exits: progs::SyscallExits,
    /// Where programs, links and maps are pinned (the daemon); `None`: nothing is.
    pins: Option<pins::PinDir>,
    /// Hook bits a pinned `SYSCALL_HOOKS` held at load (runs of an earlier daemon):
    /// kept on until [`BpfRuntime::settle`], so re-adoption leaves no gap.
    inherited_hooks: u32,
    /// Owns the programs; declared last so it is dropped last.
    ebpf: Ebpf,
}

/// How a runtime is loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Pin maps and links under this bpffs directory and reuse what an earlier process
    /// pinned there (the daemon). `None`: everything lives and dies with this process.
    pub pin_root: Option<PathBuf>,
    /// Size of the `EVENTS` ring (a power-of-two number of pages); 0: the default.
    pub ring_bytes: u32,
    /// `FExit` where the probe found that trampoline programs attach: the denial
    /// tracker then costs the host no `raw_syscalls` program.
    pub syscall_exits: progs::SyscallExits,
}

impl BpfRuntime {
    /// Reads the kernel's BTF offsets and loads the object (maps created, no program
    /// attached: runs attach what they need when they register).
    #[cfg(test)]
    pub fn load() -> Result<Self, BpfError> {
        Self::load_with(&LoadOptions::default())
    }

    /// `load` with an `EVENTS` ring of `ring_bytes` (a power-of-two number of pages).
    #[cfg(test)]
    fn load_with_ring(ring_bytes: u32) -> Result<Self, BpfError> {
        Self::load_with(&LoadOptions {
            ring_bytes,
            ..LoadOptions::default()
        })
    }

    /// Loads the object as `options` say.
    pub fn load_with(options: &LoadOptions) -> Result<Self, BpfError> {
        let ring_bytes = if options.ring_bytes == 0 {
            EVENTS_RING_BYTES
        } else {
            options.ring_bytes
        };
        let pins = match &options.pin_root {
            Some(root) => Some(pins::PinDir::prepare(root, EBPF_OBJECT)?),
            None => None,
        };
        let Loaded {
            mut ebpf,
            btf,
            fs_offsets,
            unix_offsets,
        } = load_object(ring_bytes, pins.as_ref())?;
        // Before any map is taken: the raw unix loader relocates against all of them.
        let unix = unix::UnixState::capture(&ebpf, unix_offsets);
        let maps = maps::Maps::take_all(&mut ebpf)?;
        let inherited_hooks = if pins.is_some() {
            maps.syscall_hooks.get(&0, 0).unwrap_or(0)
        } else {
            0
        };
        let mut runtime = Self {
            maps,
            fs_offsets,
            btf,
            unix,
            hooks: run::HookRefs::default(),
            slots: run::Slots::default(),
            globals: progs::Globals::default(),
            net_tables: net_tables::NetTables::default(),
            keeper: None,
            exits: options.syscall_exits,
            pins,
            inherited_hooks,
            ebpf,
        };
        // A pinned SYSCALL_HOOKS keeps the bits of runs an earlier daemon supervised;
        // they stay on until those runs are re-adopted (`settle`).
        runtime.write_hooks()?;
        Ok(runtime)
    }

    /// After re-adoption: drops the hook bits, global links, shared net rule tables and
    /// run pin directories an earlier daemon left that no run in `adopted` (run ids)
    /// holds. Returns the names of
    /// the run pin directories removed.
    pub fn settle(&mut self, adopted: &[String]) -> Result<Vec<String>, BpfError> {
        self.inherited_hooks = 0;
        self.write_hooks()?;
        let Some(pins) = self.pins.clone() else {
            return Ok(Vec::new());
        };
        let held: Vec<&str> = self
            .globals
            .attached()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if let Ok(entries) = std::fs::read_dir(pins.links_dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !held.contains(&name.as_str()) {
                    if let Err(err) = std::fs::remove_file(e.path()) {
                        tracing::warn!("unpin {}: {err}", e.path().display());
                    }
                }
            }
        }
        self.sweep_net_tables();
        let mut removed = Vec::new();
        for run in pins.runs() {
            if !adopted.contains(&run) {
                run::remove_pin_dir(&pins.dir().join("runs").join(&run));
                removed.push(run);
            }
        }
        Ok(removed)
    }

    /// Loads the programs of `progs` now (the verifier runs once per runtime), and with
    /// `unix_cgroup` the raw-loaded unix-socket programs, several at once (see
    /// [`progs::load_all`]). A daemon finds a program the kernel refuses at start-up,
    /// not at a run's launch; a standalone run verifies its programs in parallel.
    pub fn preload(&mut self, progs: &[progs::Prog], unix_cgroup: bool) -> Result<(), BpfError> {
        let started = std::time::Instant::now();
        let (ebpf, btf, unix) = (&mut self.ebpf, self.btf, &mut self.unix);
        let loaded = std::thread::scope(|scope| {
            let unix = unix_cgroup.then(|| scope.spawn(|| unix.load_cgroup_progs()));
            let loaded = progs::load_all(ebpf, btf, progs);
            let unix = match unix.map(|h| h.join()) {
                None | Some(Ok(Ok(()))) => Ok(()),
                Some(Ok(Err(e))) => Err(BpfError::Unix(Box::new(e))),
                Some(Err(_)) => Err(BpfError::LoaderPanicked),
            };
            loaded.and(unix)
        });
        tracing::debug!(
            "{} program(s) loaded in {:?}",
            progs.len(),
            started.elapsed()
        );
        loaded
    }

    /// The pin directory, when this runtime pins.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(|p| p.dir())
    }

    /// Writes the union of the hook bits runs hold to `SYSCALL_HOOKS`.
    fn write_hooks(&mut self) -> Result<(), BpfError> {
        let bits = self.hooks.bits() | self.inherited_hooks;
        self.maps.syscall_hooks.set(0, bits, 0).map_err(|error| {
            map_error(
                format!("write hook bits {bits:#x} to"),
                syscall_names::MAP_SYSCALL_HOOKS,
                error,
            )
        })
    }

    /// Turns on the `HOOK_*` checks in `bits` for `run` (see `agentd_common::syscalls`);
    /// they stay on while any run holds them. With [`progs::SyscallExits::FExit`], the
    /// denial tracker and the `listen()` check are the syscall exits' `fexit` programs;
    /// the other checks (and both, on the fallback) are the `sys_exit` program's, which
    /// a run attaches only when it needs one. `what` names them in an error.
    fn enable_syscall_hooks(
        &mut self,
        run: &mut RunBpf,
        bits: u32,
        what: &str,
    ) -> Result<(), BpfError> {
        let mut bits = bits;
        if self.exits == progs::SyscallExits::FExit {
            if bits & HOOK_DENIALS != 0 {
                for p in progs::denial_exits() {
                    self.acquire_global(run, &p)?;
                }
            }
            if bits & HOOK_LISTEN != 0 {
                self.acquire_global(run, &progs::LISTEN_EXIT)?;
            }
            bits &= !(HOOK_DENIALS | HOOK_LISTEN);
        }
        if bits == 0 {
            return Ok(());
        }
        self.acquire_global(run, &progs::SYS_EXIT)?;
        let new = bits & !run.hooks;
        self.hooks.acquire(new);
        if let Err(error) = self.write_hooks() {
            self.hooks.release(new);
            return Err(BpfError::Hooks {
                what: what.to_owned(),
                bits,
                source: Box::new(error),
            });
        }
        run.hooks |= new;
        Ok(())
    }

    /// The asynchronous reader of the `EVENTS` ring buffer. Can be taken once; must be
    /// called inside a tokio runtime (with I/O enabled).
    pub fn take_events(&mut self) -> Result<EventStream, BpfError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BpfError::NoReactor);
        }
        let ring = self.maps.events.take().ok_or(BpfError::EventsTaken)?;
        EventStream::new(ring).map_err(|failed| {
            let (ring, error) = *failed;
            // Keep the ring so a later call can retry.
            self.maps.events = Some(ring);
            BpfError::Reactor { error }
        })
    }

    /// Records lost because the ring buffer was full, summed over CPUs (all runs).
    pub fn dropped(&self) -> Result<u64, BpfError> {
        let per_cpu = self
            .maps
            .dropped
            .get(&0, 0)
            .map_err(|error| map_error("read", names::MAP_DROPPED, error))?;
        Ok(per_cpu.iter().fold(0u64, |sum, n| sum.saturating_add(*n)))
    }

    /// How the denial tracker and the `listen()` check see syscall returns.
    pub fn syscall_exits(&self) -> progs::SyscallExits {
        self.exits
    }

    /// How long a global program no run holds stays attached before it is detached
    /// (see [`progs::Globals`]); zero, the default, detaches it with its last run.
    /// Without a linger, nothing is kept on the keeper cgroup either.
    pub fn set_programs_linger(&mut self, linger: std::time::Duration) {
        self.globals.set_linger(linger);
        self.net_tables.set_linger(linger);
        if linger.is_zero() {
            if let Some(k) = self.keeper.as_mut() {
                k.release_all();
            }
        }
    }

    /// Detaches the global programs whose linger has passed, on a thread of its own
    /// (`all_idle`: every one no run holds, here and now). Returns their names.
    /// The net rule tables no run has held for as long go too.
    /// The cgroup programs kept on the keeper cgroup go with the last global program.
    pub fn reap_idle_programs(&mut self, all_idle: bool) -> Vec<&'static str> {
        let now = std::time::Instant::now();
        let tables = self.net_tables.reap(now, all_idle);
        self.remove_net_tables(tables);
        let reaped = self.globals.reap(now, all_idle);
        if self.slots.in_use() == 0 && self.globals.attached().is_empty() {
            if let Some(k) = self.keeper.as_mut() {
                let n = k.release_all();
                if n > 0 {
                    tracing::debug!("released {n} kept cgroup program(s)");
                }
            }
        }
        reaped
    }

    /// Keeps the cgroup-BPF static keys on between runs with an empty cgroup of this
    /// process's own in `parent` (see [`keeper`]), while the programs linger.
    pub fn keep_cgroup_keys(&mut self, parent: &Path) {
        self.keeper = Some(keeper::CgroupKeeper::new(keeper::keeper_dir(parent)));
    }

    /// Lets the keeper's links go and removes its cgroup (the daemon's stop: runs left
    /// running keep their own links, and nothing would reap the keeper's).
    pub fn drop_keeper(&mut self) {
        self.keeper = None;
    }

    /// Also attaches `p` (a cgroup program just attached for a run) to the keeper
    /// cgroup, once. A failure costs only speed: it is logged, and the run goes on.
    pub(super) fn keep_attached(&mut self, p: &progs::Prog) {
        if self.globals.linger().is_zero() {
            return;
        }
        let Some(k) = self.keeper.as_mut() else {
            return;
        };
        let (ebpf, btf) = (&mut self.ebpf, self.btf);
        k.keep_with(p.name, |dir, file| {
            progs::attach_cgroup(ebpf, btf, p, dir, file).map_err(|e| e.to_string())
        });
    }

    /// Waits until what [`BpfRuntime::reap_idle_programs`] detaches on its thread is gone.
    #[cfg(test)]
    pub fn wait_detached(&mut self) {
        self.globals.wait_detached();
    }

    /// What the runtime holds now, for `agentd status` and the tests: runs, global
    /// programs with the runs holding each, and the hook bits on.
    pub fn status(&self) -> RuntimeStatus {
        RuntimeStatus {
            runs: self.slots.in_use(),
            globals: self
                .globals
                .attached()
                .into_iter()
                .map(|(name, refs)| (name.to_owned(), refs))
                .collect(),
            hook_bits: self.hooks.bits(),
            pin_dir: self.pin_dir().map(Path::to_path_buf),
            idle_net_tables: self.net_tables.idle(),
            kept_cgroup_programs: self.keeper.as_ref().map_or(0, keeper::CgroupKeeper::kept),
        }
    }

    /// Objects pinned in this runtime's directory (maps, global links, run links).
    /// Programs of the object loaded into the kernel (verified), attached or not.
    pub fn loaded_programs(&self) -> usize {
        self.ebpf.programs().filter(|(_, p)| p.fd().is_ok()).count()
    }

    pub fn pinned_objects(&self) -> usize {
        self.pins.as_ref().map_or(0, pins::PinDir::count)
    }

    /// Map entries of every run together, in every map runs write, lingering shared net
    /// rule tables included (0 once no run is registered and the linger has passed:
    /// what `agentd status` shows and the tests count).
    pub fn entries_total(&self) -> usize {
        self.maps.entries_total()
    }

    #[cfg(test)]
    /// Keeps everything pinned attached when this runtime is dropped (the daemon's
    /// shutdown or restart); without this, a drop releases the global programs.
    pub fn keep_pinned(&mut self) {
        self.globals.keep_pinned();
    }
}

/// A summary of a runtime's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeStatus {
    /// Registered runs.
    pub runs: usize,
    /// Attached global programs and how many runs hold each (0: lingering, see
    /// [`BpfRuntime::set_programs_linger`]).
    pub globals: Vec<(String, u32)>,
    /// `SYSCALL_HOOKS` bits.
    pub hook_bits: u32,
    /// The pin directory, if any.
    pub pin_dir: Option<PathBuf>,
    /// Shared net rule tables no run holds, lingering for a run with the same rules.
    pub idle_net_tables: usize,
    /// Cgroup programs the keeper cgroup holds (the daemon, between runs).
    pub kept_cgroup_programs: usize,
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
    offsets: agentd_common::KernelOffsets,
    fs_offsets: Result<agentd_common::fsrules::FsOffsets, String>,
    fs_global: agentd_common::fsrules::FsOffsets,
    unix_offsets: Result<agentd_common::unix::UnixOffsets, String>,
    unix_global: agentd_common::unix::UnixOffsets,
    /// Whether the BPF LSM path-operation hooks have the prototypes `fs_ops` reads.
    fs_ops_prototypes: Result<(), String>,
}

static PREPARED_BTF: OnceLock<PreparedBtf> = OnceLock::new();

/// aya's parse of the kernel BTF, which loading a tp_btf or LSM program needs (to find
/// its attach point). It is large (11–13 MiB resident for this kernel's 5.3 MiB file,
/// measured), so it is parsed on first need and can be released ([`release_kernel_btf`]):
/// the daemon does once every program is loaded, and a later load parses it again.
static KERNEL_BTF: Mutex<Option<Arc<aya::Btf>>> = Mutex::new(None);

/// The handle through which programs are loaded with [`KERNEL_BTF`].
#[derive(Clone, Copy)]
struct SharedBtf;

/// Set by [`release_kernel_btf`]: a parse started ahead ([`prefetch_kernel_btf`]) that
/// has not begun by then is not wanted.
static KERNEL_BTF_RELEASED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

impl SharedBtf {
    fn get(self) -> Result<Arc<aya::Btf>, BpfError> {
        let mut held = KERNEL_BTF
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self::parse_into(&mut held)
    }

    fn parse_into(held: &mut Option<Arc<aya::Btf>>) -> Result<Arc<aya::Btf>, BpfError> {
        if let Some(btf) = held.as_ref() {
            return Ok(Arc::clone(btf));
        }
        tracing::debug!("parsing {} for program loads", btf::VMLINUX_BTF);
        let raw = btf::read_vmlinux()?;
        let btf = Arc::new(
            aya::Btf::parse(&raw, aya::Endianness::default())
                .map_err(|error| BpfError::AyaBtf { error })?,
        );
        *held = Some(Arc::clone(&btf));
        Ok(btf)
    }
}

/// Starts [`SharedBtf`]'s parse of the kernel BTF on a thread of its own, once per
/// process: every object load is followed by program loads that need it, and the parse
/// (12 ms here) then overlaps the object load instead of following it. A failure is
/// not kept: the load that needs the BTF parses again and reports it.
fn prefetch_kernel_btf() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("kernel-btf".into())
            .spawn(|| {
                let mut held = KERNEL_BTF
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !KERNEL_BTF_RELEASED.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = SharedBtf::parse_into(&mut held);
                }
            });
        if let Err(e) = spawned {
            tracing::debug!("no thread to parse the kernel BTF ahead: {e}");
        }
    });
}

/// Drops this process's parse of the kernel BTF (see [`KERNEL_BTF`]).
pub fn release_kernel_btf() {
    let released = {
        let mut held = KERNEL_BTF
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        KERNEL_BTF_RELEASED.store(true, std::sync::atomic::Ordering::Relaxed);
        held.take()
    };
    drop(released);
}

/// Loaders for the whole process: `EbpfLoader::new()` parses the kernel BTF itself
/// (20 ms here, and thrown away once `.btf()` is given), so building one per load would
/// undo [`PREPARED_BTF`]. A loader's settings persist across loads: the pinned flavour
/// keeps its own (a pin path cannot be unset); the probes and the plain runtime share
/// one, whose shrunk map sizes are set back before a runtime load ([`object_map_sizes`]).
/// A standalone run, which probes and then loads its runtime, parses once, not twice.
static LOADER: OnceLock<Mutex<Shared>> = OnceLock::new();
static PINNED_LOADER: OnceLock<Mutex<Shared>> = OnceLock::new();

/// A loader, and whether its [`PROBE_SHRUNK_MAPS`] are shrunk now.
struct Shared {
    loader: EbpfLoader<'static>,
    shrunk: bool,
}

/// The object's own `max_entries` of each of [`PROBE_SHRUNK_MAPS`].
fn object_map_sizes() -> Result<&'static [(&'static str, u32)], BpfError> {
    static SIZES: OnceLock<Vec<(&'static str, u32)>> = OnceLock::new();
    if let Some(s) = SIZES.get() {
        return Ok(s);
    }
    let obj = aya_obj::Object::parse(EBPF_OBJECT).map_err(|e| BpfError::Object {
        error: aya::EbpfError::ParseError(e),
    })?;
    let sizes = PROBE_SHRUNK_MAPS
        .iter()
        .map(|name| {
            obj.maps
                .get(*name)
                .map(|m| (*name, m.max_entries()))
                .ok_or(BpfError::MissingMap { name })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SIZES.get_or_init(|| sizes))
}

/// Maps a probe load shrinks to one entry: it never writes them, and the full sizes
/// (preallocated hash maps among them) cost time for nothing.
const PROBE_SHRUNK_MAPS: [&str; 20] = [
    names::MAP_RUN_CGROUPS,
    agentd_common::syscalls::names::MAP_OBSERVED_SEEN,
    agentd_common::fsrules::names::MAP_FS_RULES,
    agentd_common::fsrules::names::MAP_RUN_TAINT,
    agentd_common::fsrules::names::MAP_TAINT_EGRESS_DROPS,
    agentd_common::fsrules::names::MAP_EXEC_RULES,
    agentd_common::net::names::MAP_NET_ALLOW4,
    agentd_common::net::names::MAP_NET_ALLOW6,
    agentd_common::net::names::MAP_NET_BIND4,
    agentd_common::net::names::MAP_NET_BIND6,
    agentd_common::net::names::MAP_NET_TAINT4,
    agentd_common::net::names::MAP_NET_TAINT6,
    agentd_common::net::names::MAP_NET_RUNS,
    agentd_common::net::names::MAP_NET_DNS,
    agentd_common::net::names::MAP_NET_DNS_ORIGIN,
    agentd_common::unix::names::MAP_UNIX_PREFIXES,
    agentd_common::unix::names::MAP_UNIX_INODES,
    agentd_common::unix::names::MAP_UNIX_NAMED,
    agentd_common::unix::names::MAP_UNIX_REPORTED,
    agentd_common::budget::names::MAP_BUDGET_RUNS,
];

fn base_loader(
    mut loader: EbpfLoader<'static>,
    prepared: &'static PreparedBtf,
) -> EbpfLoader<'static> {
    // No kernel BTF for the object load: aya uses it only for CO-RE relocations, and the
    // object has none (kernel offsets come in through `.rodata` globals). This also drops
    // the parse `EbpfLoader::new()` made.
    loader
        .btf(None)
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
    loader
}

/// Which copy of the object to load.
enum Flavour<'p> {
    /// A runtime whose maps live with this process.
    Runtime,
    /// A runtime whose maps are pinned in (and reused from) `PinDir`.
    Pinned(&'p pins::PinDir),
    /// A throwaway copy for the start-up probes.
    Probe,
}

/// Loads the embedded object with this kernel's offsets in `.rodata`. `ring_bytes` sizes
/// the `EVENTS` ring buffer.
fn load_object(ring_bytes: u32, pin_dir: Option<&pins::PinDir>) -> Result<Loaded, BpfError> {
    match pin_dir {
        Some(dir) => load_flavour(ring_bytes, Flavour::Pinned(dir)),
        None => load_flavour(ring_bytes, Flavour::Runtime),
    }
}

/// A small copy of the object for the probes (one-page ring, one-entry maps).
fn load_probe_object() -> Result<Loaded, BpfError> {
    load_flavour(4096, Flavour::Probe)
}

fn load_flavour(ring_bytes: u32, flavour: Flavour<'_>) -> Result<Loaded, BpfError> {
    if EBPF_OBJECT.is_empty() {
        return Err(BpfError::NotBuilt);
    }
    prefetch_kernel_btf();
    let cell = match flavour {
        Flavour::Runtime | Flavour::Probe => &LOADER,
        Flavour::Pinned(_) => &PINNED_LOADER,
    };
    let (shared, prepared) = match cell.get() {
        Some(shared) => (shared, prepared_btf()?),
        None => {
            // `EbpfLoader::new()` parses the kernel BTF (aya's copy, dropped by
            // `base_loader`) and `prepared_btf` parses it for the offsets: on two
            // threads at once, 7 ms of a standalone start on 2 cores (measured).
            let (loader, prepared) = std::thread::scope(|scope| {
                let loader = scope.spawn(EbpfLoader::new);
                let prepared = prepared_btf();
                (loader.join(), prepared)
            });
            let prepared = prepared?;
            // A panic in aya's constructor (it has none but an allocation failure):
            // build it here instead.
            let loader = loader.unwrap_or_else(|_| EbpfLoader::new());
            let shared = cell.get_or_init(|| {
                Mutex::new(Shared {
                    loader: base_loader(loader, prepared),
                    shrunk: false,
                })
            });
            (shared, prepared)
        }
    };
    // A poisoned lock only means another thread panicked mid-load; the loader holds
    // settings, not state, so it stays usable.
    let mut shared = shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Shared { loader, shrunk } = &mut *shared;
    match flavour {
        Flavour::Runtime => {
            if *shrunk {
                for (name, size) in object_map_sizes()? {
                    loader.map_max_entries(name, *size);
                }
                *shrunk = false;
            }
        }
        Flavour::Pinned(dir) => {
            for name in maps::ALL {
                loader.map_pin_path(name, dir.map(name));
            }
        }
        Flavour::Probe => {
            for name in PROBE_SHRUNK_MAPS {
                loader.map_max_entries(name, 1);
            }
            *shrunk = true;
        }
    }
    let ebpf = loader
        .map_max_entries(names::MAP_EVENTS, ring_bytes)
        .load(EBPF_OBJECT)
        .map_err(|error| BpfError::Object { error })?;
    Ok(Loaded {
        ebpf,
        btf: SharedBtf,
        fs_offsets: prepared.fs_offsets.clone(),
        unix_offsets: prepared.unix_offsets.clone(),
    })
}

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
    // A concurrent first call may have won the race; both parsed the same file.
    Ok(PREPARED_BTF.get_or_init(|| PreparedBtf {
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
        // A full map is a capacity limit shared by every run of this process, not a fault
        // of this run's policy: say so, so that the operator knows what to change.
        MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::ENOSPC) => format!(
            "{}: {}: the map is full (its entries are shared by every run of this agentd; \
             README, \"Limits\", gives the sizes)",
            e.call, e.io_error
        ),
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
