//! Start-up probes for `agentd doctor` and the Plan: can this kernel load and attach the
//! program types agentd relies on? The probes share one small copy of the object (a
//! one-page ring, one-entry maps), loaded on the first probe and dropped by
//! [`end_probes`]: probing never leaves a runtime behind, and a run loads its own.

use std::{fs::File, path::Path, sync::Mutex};

use agentd_common::names;
use aya::programs::{links::CgroupAttachMode, BtfTracePoint, CgroupSockAddr, FExit, Lsm};

use super::{load_probe_object, program, section, BpfError, Loaded};

/// The probes' copy of the object, while probing.
static PROBE_OBJECT: Mutex<Option<Loaded>> = Mutex::new(None);

/// Runs `f` on the probe object, loading it first if needed.
fn with_probe_object<T>(f: impl FnOnce(&mut Loaded) -> Result<T, BpfError>) -> Result<T, BpfError> {
    // A poisoned lock means a probe panicked; the object is still a valid object.
    let mut slot = PROBE_OBJECT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if slot.is_none() {
        *slot = Some(load_probe_object()?);
    }
    match slot.as_mut() {
        Some(loaded) => f(loaded),
        None => Err(BpfError::NotBuilt),
    }
}

/// Drops the probe object (and everything loaded into it).
pub fn end_probes() {
    let mut slot = PROBE_OBJECT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *slot = None;
}

/// Loads and attaches the trivial `lsm/file_open` program (it allows everything), then
/// detaches it. `Err` carries the kernel's reason, e.g.
/// `load lsm/file_open: Operation not permitted (os error 1)`.
pub fn probe_bpf_lsm() -> Result<(), String> {
    with_probe_object(|Loaded { ebpf, btf, .. }| {
        let section = section::LSM_FILE_OPEN;
        let lsm: &mut Lsm = program(ebpf, names::PROG_PROBE_LSM_FILE_OPEN, section)?;
        if lsm.fd().is_err() {
            lsm.load(names::LSM_HOOK_FILE_OPEN, &*btf.get()?)
                .map_err(|error| BpfError::Load { section, error })?;
        }
        let link = lsm
            .attach()
            .map_err(|error| BpfError::Attach { section, error })?;
        lsm.detach(link)
            .map_err(|error| BpfError::Detach { section, error })
    })
    .map_err(|e| e.to_string())
}

/// Loads the real `openat` syscall exit of the denial tracker (with this kernel's
/// offsets): whether trampoline programs load here (BPF LSM needs them too, but a kernel
/// can allow one and refuse the other) and the syscall entry points are where the exits
/// expect them. The kernel checks the attach target at load. It is not attached: a
/// trampoline's detach waits for RCU-tasks grace periods (0.6 s of a standalone start
/// under TCG, measured); a run's attach that fails still refuses the run, naming the
/// program. Returns the section.
pub fn probe_fexit() -> Result<&'static str, String> {
    let exit = agentd_common::syscalls::exits::DENIAL_EXITS
        .iter()
        .find(|e| e.nr == agentd_common::denials::nr::OPENAT)
        .ok_or_else(|| "no openat exit in the table".to_owned())?;
    with_probe_object(|Loaded { ebpf, btf, .. }| {
        let section = exit.section;
        let prog: &mut FExit = program(ebpf, exit.prog, section)?;
        if prog.fd().is_err() {
            prog.load(exit.function, &*btf.get()?)
                .map_err(|error| BpfError::Load { section, error })?;
        }
        Ok(section)
    })
    .map_err(|e| e.to_string())
}

/// Loads the real exec tracker (with this kernel's offsets, so the verifier checks the
/// code that will run) and attaches it, then detaches it.
pub fn probe_tp_btf() -> Result<(), String> {
    with_probe_object(|Loaded { ebpf, btf, .. }| {
        let section = section::SCHED_PROCESS_EXEC;
        let tp: &mut BtfTracePoint = program(ebpf, names::PROG_SCHED_PROCESS_EXEC, section)?;
        if tp.fd().is_err() {
            tp.load(names::TP_SCHED_PROCESS_EXEC, &*btf.get()?)
                .map_err(|error| BpfError::Load { section, error })?;
        }
        let link = tp
            .attach()
            .map_err(|error| BpfError::Attach { section, error })?;
        tp.detach(link)
            .map_err(|error| BpfError::Detach { section, error })
    })
    .map_err(|e| e.to_string())
}

/// Loads the trivial `cgroup/connect4` program (it allows every connect), attaches it to
/// the v2 cgroup directory `v2_cgroup_dir`, then detaches it. On 5.7+ aya attaches
/// through a BPF link, which coexists with programs already attached there (the kernel
/// rejects `BPF_F_ALLOW_MULTI` on links with EINVAL: link attachment is always multi).
pub fn probe_cgroup_bpf(v2_cgroup_dir: &Path) -> Result<(), String> {
    let cgroup = File::open(v2_cgroup_dir)
        .map_err(|error| BpfError::Cgroup {
            path: v2_cgroup_dir.to_path_buf(),
            error,
        })
        .map_err(|e| e.to_string())?;
    with_probe_object(|Loaded { ebpf, .. }| {
        let section = section::CGROUP_CONNECT4;
        let prog: &mut CgroupSockAddr = program(ebpf, names::PROG_PROBE_CGROUP_CONNECT4, section)?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|error| BpfError::Load { section, error })?;
        }
        let link = prog
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|error| BpfError::AttachCgroup {
                section,
                cgroup: v2_cgroup_dir.to_path_buf(),
                error,
            })?;
        prog.detach(link)
            .map_err(|error| BpfError::Detach { section, error })
    })
    .map_err(|e| e.to_string())
}
