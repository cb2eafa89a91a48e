//! Start-up probes for `agentd doctor` and the Plan: can this kernel load and attach the
//! program types agentd relies on? Each probe loads the embedded object itself, tries,
//! cleans up, and returns the kernel's reason on failure.

use std::{fs::File, path::Path, sync::Mutex};

use agentd_common::names;
use aya::programs::{links::CgroupAttachMode, CgroupSockAddr, Lsm};

use super::{load_object, program, section, BpfError, BpfRuntime, Loaded};

/// One page: probes never read events.
const PROBE_RING_BYTES: u32 = 4096;

/// Loads and attaches the trivial `lsm/file_open` program (it allows everything), then
/// detaches it. `Err` carries the kernel's reason, e.g.
/// `load lsm/file_open: Operation not permitted (os error 1)`.
pub fn probe_bpf_lsm() -> Result<(), String> {
    try_bpf_lsm().map_err(|e| e.to_string())
}

fn try_bpf_lsm() -> Result<(), BpfError> {
    let Loaded { mut ebpf, btf, .. } = load_object(PROBE_RING_BYTES)?;
    let section = section::LSM_FILE_OPEN;
    let lsm: &mut Lsm = program(&mut ebpf, names::PROG_PROBE_LSM_FILE_OPEN, section)?;
    lsm.load(names::LSM_HOOK_FILE_OPEN, &btf)
        .map_err(|error| BpfError::Load { section, error })?;
    let link = lsm
        .attach()
        .map_err(|error| BpfError::Attach { section, error })?;
    lsm.detach(link)
        .map_err(|error| BpfError::Detach { section, error })
}

/// Loads and attaches the real exec/exit tracker (with this kernel's offsets, so the
/// verifier checks the code that will run). The loaded runtime is kept for
/// [`BpfRuntime::take_probed_or_load`]: `agentd run` probes, then needs exactly this,
/// and loading it twice (with a detach in between, which waits for an RCU grace period
/// per tracepoint) was a good part of its start-up.
pub fn probe_tp_btf() -> Result<(), String> {
    let runtime = BpfRuntime::load().map_err(|e| e.to_string())?;
    let mut probed = PROBED_RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *probed = Some(runtime);
    Ok(())
}

/// The runtime [`probe_tp_btf`] loaded, until a run takes it.
static PROBED_RUNTIME: Mutex<Option<BpfRuntime>> = Mutex::new(None);

impl BpfRuntime {
    /// The runtime the start-up probe loaded, or a freshly loaded one.
    pub fn take_probed_or_load() -> Result<Self, BpfError> {
        let probed = PROBED_RUNTIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        match probed {
            Some(runtime) => Ok(runtime),
            None => Self::load(),
        }
    }
}

/// Loads the trivial `cgroup/connect4` program (it allows every connect), attaches it to
/// the v2 cgroup directory `v2_cgroup_dir`, then detaches it. On 5.7+ aya attaches
/// through a BPF link, which coexists with programs already attached there (the kernel
/// rejects `BPF_F_ALLOW_MULTI` on links with EINVAL: link attachment is always multi).
pub fn probe_cgroup_bpf(v2_cgroup_dir: &Path) -> Result<(), String> {
    try_cgroup_bpf(v2_cgroup_dir).map_err(|e| e.to_string())
}

fn try_cgroup_bpf(dir: &Path) -> Result<(), BpfError> {
    let cgroup = File::open(dir).map_err(|error| BpfError::Cgroup {
        path: dir.to_path_buf(),
        error,
    })?;
    let Loaded { mut ebpf, .. } = load_object(PROBE_RING_BYTES)?;
    let section = section::CGROUP_CONNECT4;
    let prog: &mut CgroupSockAddr = program(&mut ebpf, names::PROG_PROBE_CGROUP_CONNECT4, section)?;
    prog.load()
        .map_err(|error| BpfError::Load { section, error })?;
    let link = prog
        .attach(&cgroup, CgroupAttachMode::Single)
        .map_err(|error| BpfError::AttachCgroup {
            section,
            cgroup: dir.to_path_buf(),
            error,
        })?;
    prog.detach(link)
        .map_err(|error| BpfError::Detach { section, error })
}
