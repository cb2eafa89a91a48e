//! `agentd run`, pathname unix sockets: resolve the allowed entries at run start and
//! enable the path the Plan chose (fail closed: an error stops the run with exit 125).

use super::run::{setup_err, SetupError};
use crate::layers::bpf::{unix_sockets, BpfRuntime, UnixEntries, UnixPath};
use crate::layers::cgroup::RunCgroups;
use crate::layers::name;
use crate::plan::Plan;
use crate::policy::{Mode, Policy};

/// Run slot of the single run an agentd process supervises.
const RUN_SLOT: u32 = 0;

/// Enables mediation when the Plan asks for it; returns the entries to clear at the end.
pub(super) fn enable(
    bpf: &mut BpfRuntime,
    plan: &Plan,
    policy: &Policy,
    cgroups: &RunCgroups,
) -> Result<Option<UnixEntries>, SetupError> {
    let Some(path) = plan.unix else {
        return Ok(None);
    };
    let layer = match path {
        UnixPath::Lsm => name::LSM,
        UnixPath::Cgroup => name::BPF,
    };
    let entries = unix_sockets::resolve(policy)
        .map_err(|e| setup_err(layer, format!("pathname unix sockets: {e}")))?;
    bpf.enable_unix(
        path,
        RUN_SLOT,
        &cgroups.identity().path,
        &entries,
        policy.mode == Mode::Audit,
    )
    .map_err(|e| setup_err(layer, format!("pathname unix sockets: {e}")))?;
    Ok(Some(entries))
}
