//! One run from spec to teardown, for every way agentd is used: the standalone CLI and
//! the daemon drive runs through the same code.
//!
//! ```text
//! RunSpec ──prepare──▶ Prepared (cgroups; the child forked, paused; then eBPF slot,
//!                      resolver, budgets: RunResources)
//!         ──launch───▶ Launched (the child's go: the command runs)
//!         ──supervise▶ Supervised (how it ended)
//!         ──teardown─▶ the run_end record
//! ```
//!
//! Every resource a run holds lives in [`resources::RunResources`], which undoes them in
//! one stated order, on the normal path and on every error path alike.
//!
//! A [`Host`] is what runs share: the probe, the cgroup backend, the one eBPF runtime,
//! the event router and the audit writer.

mod fsrules;
mod host;
mod reaper;
mod records;
mod resources;
mod router;
mod spec;
mod supervise;
mod timing;
mod unix;
pub mod user;

use std::sync::Arc;

pub use host::{Host, HostKind, HostOptions};
pub use reaper::{
    become_subreaper, forget_leader, leaders, reap_orphans, reap_run, sweep_run_zombies,
};
pub use records::signal_name;
pub use spec::{
    new_run_id, parse_upstream, resolve_command, Control, NoHooks, PreparedRun, RunHooks, RunSpec,
    StartedRun,
};
pub use supervise::{Adoption, Ending, RunOutcome, RunProgress};
pub use user::UserSpec;

/// Exit status when agentd itself could not set the run up (the command never ran).
pub const EXIT_SETUP_FAILED: u8 = 125;
/// Exit status when the command was found but its exec was denied or failed.
pub const EXIT_EXEC_DENIED: u8 = 126;
/// Exit status when the command was not found.
pub const EXIT_NOT_FOUND: u8 = 127;
/// 128 + SIGKILL: the status of a run that agentd killed.
pub const EXIT_KILLED: u8 = 137;

/// Any error, kept with its sources (never flattened to text before it is shown).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failure before the command ran: the layer that could not be applied, and why.
/// The command never runs; the caller exits 125.
#[derive(Debug, thiserror::Error)]
#[error("{layer}: {source}")]
pub struct SetupError {
    /// The layer, as audit records name it (`cgroup`, `bpf`, `landlock`, ...).
    pub layer: &'static str,
    #[source]
    pub source: BoxError,
}

/// A [`SetupError`] of `layer`.
pub fn setup_err(layer: &'static str, source: impl Into<BoxError>) -> SetupError {
    SetupError {
        layer,
        source: source.into(),
    }
}

/// Takes over a run an earlier daemon started (see [`Adoption`]) and supervises it to
/// its end.
pub async fn adopt(
    host: Arc<Host>,
    spec: RunSpec,
    adoption: Adoption,
    controls: tokio::sync::mpsc::Receiver<Control>,
    hooks: Box<dyn RunHooks>,
) -> RunOutcome {
    supervise::adopt(host, spec, adoption, controls, hooks).await
}

/// Confines an existing workload in `cgroups` (`agentd attach`) until its cgroup
/// empties or it is detached; see `supervise::attach`.
pub async fn attach(
    host: Arc<Host>,
    spec: RunSpec,
    cgroups: crate::layers::cgroup::RunCgroups,
    attach: crate::audit::event::Attach,
    controls: tokio::sync::mpsc::Receiver<Control>,
    hooks: Box<dyn RunHooks>,
) -> RunOutcome {
    supervise::attach(host, spec, cgroups, attach, controls, hooks).await
}

/// Runs `spec` on `host` to its end: prepares its resources, launches the command,
/// supervises it (applying `controls`), tears it down and writes `run_end`. Every
/// outcome, setup failures included, is in the returned exit status and in the chain.
pub async fn run(
    host: Arc<Host>,
    spec: RunSpec,
    controls: tokio::sync::mpsc::Receiver<Control>,
    hooks: Box<dyn RunHooks>,
) -> RunOutcome {
    supervise::run(host, spec, controls, hooks).await
}
