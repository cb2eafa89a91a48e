//! Pathname unix sockets of a run: resolve the allowed entries at run start and
//! enable the path the Plan chose (fail closed: an error stops the run with exit 125).

use super::{setup_err, SetupError};
use crate::layers::bpf::{unix_sockets, BpfRuntime, RunBpf, UnixPath};
use crate::layers::cgroup::RunCgroups;
use crate::layers::name;
use crate::plan::Plan;
use crate::policy::Policy;

/// Enables mediation when the Plan asks for it (the entries go with the run's slot).
pub(super) fn enable(
    bpf: &mut BpfRuntime,
    run: &mut RunBpf,
    plan: &Plan,
    policy: &Policy,
    cgroups: &RunCgroups,
) -> Result<(), SetupError> {
    let Some(path) = plan.unix else {
        return Ok(());
    };
    let layer = match path {
        UnixPath::Lsm => name::LSM,
        UnixPath::Cgroup => name::BPF,
    };
    let entries = unix_sockets::resolve(policy)
        .map_err(|e| setup_err(layer, format!("pathname unix sockets: {e}")))?;
    bpf.enable_unix(
        run,
        path,
        &cgroups.identity().path,
        &entries,
        policy.mode.records_only(),
    )
    .map_err(|e| setup_err(layer, format!("pathname unix sockets: {e}")))
}
