//! The daemon's table of runs, and the hooks through which a supervised run keeps its
//! row and its state file up to date.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::protocol::{BudgetUse, Response, RunInfo};
use super::state::{self, RunState};
use crate::supervisor::{
    Control, PreparedRun, RunHooks, RunOutcome, RunProgress, RunSpec, StartedRun,
};

/// How long the end of a run stays known after it (a client that reconnects late).
pub const FINISHED_KEPT: Duration = Duration::from_secs(600);

/// Where a run is.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Preparing,
    Running {
        pid: u32,
    },
    /// The `exited` response for the run's client.
    Ended(Response),
}

/// One run the daemon supervises (or supervised recently).
pub struct LiveRun {
    pub id: String,
    pub uid: u32,
    pub policy: String,
    pub mode: String,
    pub started: Instant,
    pub detach: bool,
    pub adopted: bool,
    /// `Some(target)` for an attached workload.
    pub attached: Option<String>,
    pub controls: mpsc::Sender<Control>,
    pub phase: watch::Sender<Phase>,
    pub progress: Option<RunProgress>,
    /// Connections following the run (a non-detached run dies when its last one goes).
    pub followers: usize,
    pub ended_at: Option<Instant>,
}

impl LiveRun {
    /// The row of a run of `spec` (by `uid`) that starts now in `phase`, with the
    /// receiving end of its controls for the supervisor.
    pub fn new(
        spec: &RunSpec,
        uid: u32,
        detach: bool,
        attached: Option<String>,
        phase: Phase,
    ) -> (Self, mpsc::Receiver<Control>) {
        let (controls, controls_rx) = mpsc::channel(16);
        let (phase, _) = watch::channel(phase);
        let run = LiveRun {
            id: spec.id.clone(),
            uid,
            policy: spec.policy.name.clone(),
            mode: format!("{:?}", spec.policy.mode).to_lowercase(),
            started: Instant::now(),
            detach,
            adopted: false,
            attached,
            controls,
            phase,
            progress: None,
            followers: 0,
            ended_at: None,
        };
        (run, controls_rx)
    }

    pub fn info(&self) -> RunInfo {
        let pid = match &*self.phase.borrow() {
            Phase::Running { pid } => *pid,
            _ => 0,
        };
        RunInfo {
            run: self.id.clone(),
            uid: self.uid,
            pid,
            policy: self.policy.clone(),
            mode: self.mode.clone(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            budgets: self
                .progress
                .as_ref()
                .map(|p| {
                    p.budgets
                        .iter()
                        .map(|(name, used, limit, unit)| {
                            (
                                (*name).to_owned(),
                                BudgetUse {
                                    used: *used,
                                    limit: *limit,
                                    unit: (*unit).to_owned(),
                                },
                            )
                        })
                        .collect::<BTreeMap<_, _>>()
                })
                .unwrap_or_default(),
            denials: self.progress.as_ref().map_or(0, |p| p.denials),
            detached: self.detach,
            adopted: self.adopted,
            attached: self.attached.clone(),
        }
    }

    pub fn is_live(&self) -> bool {
        self.ended_at.is_none()
    }
}

/// Every run, by id.
#[derive(Default)]
pub struct Registry {
    runs: Mutex<BTreeMap<String, LiveRun>>,
}

impl Registry {
    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<String, LiveRun>> {
        // A poisoned lock means a panic while holding it; the table stays consistent
        // entry by entry, so keep serving.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, run: LiveRun) {
        self.lock().insert(run.id.clone(), run);
    }

    /// Live runs.
    pub fn live(&self) -> usize {
        self.lock().values().filter(|r| r.is_live()).count()
    }

    /// Marks the run ended with its `exited` response; forgets runs that ended long ago.
    pub fn finish(&self, id: &str, exited: Response) {
        let mut runs = self.lock();
        if let Some(r) = runs.get_mut(id) {
            r.ended_at = Some(Instant::now());
            r.phase.send_replace(Phase::Ended(exited));
        }
        runs.retain(|_, r| r.ended_at.is_none_or(|t| t.elapsed() < FINISHED_KEPT));
    }
}

/// The `exited` response of an outcome.
pub fn exited(outcome: &RunOutcome) -> Response {
    use crate::supervisor::Ending;
    let (exit_code, signal) = match outcome.ending {
        Some(Ending::Exited(c)) => (Some(c), None),
        Some(Ending::Signaled(s)) => (None, Some(crate::supervisor::signal_name(s))),
        None => (None, None),
    };
    Response::Exited {
        run: outcome.id.clone(),
        code: outcome.code,
        exit_code,
        signal,
        killed_by: outcome.killed_by.map(str::to_owned),
        error: outcome.setup_error.clone(),
    }
}

/// Keeps a run's row and state file current while it is supervised.
pub struct DaemonHooks {
    pub registry: Arc<Registry>,
    /// The state file; `state` is what it holds.
    pub path: PathBuf,
    pub state: RunState,
    last_write: Option<Instant>,
}

impl DaemonHooks {
    pub fn new(registry: Arc<Registry>, path: PathBuf, state: RunState) -> Self {
        Self {
            registry,
            path,
            state,
            last_write: None,
        }
    }

    fn write(&mut self) -> Result<(), state::StateError> {
        self.last_write = Some(Instant::now());
        state::write_json(&self.path, &self.state)
    }
}

/// How often the state file is refreshed with the budgets so far.
const STATE_REFRESH: Duration = Duration::from_secs(1);

impl RunHooks for DaemonHooks {
    fn before_start(&mut self, run: &PreparedRun) -> Result<(), crate::supervisor::BoxError> {
        self.state.cgroups = run.cgroup_paths.clone();
        self.state.bpf = run.bpf.clone();
        // Written before the command starts: a daemon that dies right after the fork
        // still knows the run's cgroup and slot.
        self.write()
            .map_err(|e| Box::new(e) as crate::supervisor::BoxError)
    }

    fn forked(&mut self, pid: u32) -> Result<(), crate::supervisor::BoxError> {
        self.state.pid = Some(pid);
        self.write()
            .map_err(|e| Box::new(e) as crate::supervisor::BoxError)
    }

    fn started(&mut self, run: &StartedRun) {
        if let Some(r) = self.registry.lock().get(&run.id) {
            r.phase.send_replace(Phase::Running { pid: run.pid });
        }
    }

    fn progress(&mut self, progress: &RunProgress) {
        if let Some(r) = self.registry.lock().get_mut(&self.state.id) {
            r.progress = Some(progress.clone());
        }
        self.state.budgets = progress.budget_progress.clone();
        self.state.denials = progress.denials;
        if self.last_write.is_none_or(|t| t.elapsed() >= STATE_REFRESH) {
            if let Err(e) = self.write() {
                tracing::warn!(run = %self.state.id, "state file: {e}");
            }
        }
    }
}
