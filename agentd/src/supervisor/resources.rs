//! Everything one run holds, and the one order in which it is undone.
//!
//! Set-up order: cgroups → event route → eBPF slot → resolver → network rules → inode,
//! exec and unix rules → budget counters → pid file. Teardown ([`RunResources::teardown`],
//! or [`Drop`] on an error path) is the reverse where it matters:
//!
//! 1. the budgets' last sample (the kernel counters are still there);
//! 2. the resolver stops (no new allow entries);
//! 3. stragglers are killed;
//! 4. a tainted run's TCP sockets are aborted (before its packets stop being dropped);
//! 5. the budget counters stop;
//! 6. the eBPF slot is released: every map entry of the run, its links, its hook bits;
//! 7. the event route closes;
//! 8. the cgroups are removed;
//! 9. the run guard is disarmed and the pid file removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::audit::event::{Dropped, Resolver, StaleCgroups};
use crate::budgets::{Budgets, PidFile};
use crate::events::Event;
use crate::layers::bpf::RunBpf;
use crate::layers::cgroup::RunCgroups;
use crate::layers::name;
use crate::net::run_resolver::RunResolver;
use crate::plan::DNS;
use crate::run_guard::RunGuard;

use super::records::RunAudit;
use super::spec::RunSpec;
use super::timing::PhaseTimer;
use super::{setup_err, Host, SetupError};

/// A run's resources, from set-up to teardown.
pub struct RunResources {
    host: Arc<Host>,
    pub resolver: Option<RunResolver>,
    pub budgets: Budgets,
    pub bpf: Option<RunBpf>,
    pub events: Option<mpsc::Receiver<Event>>,
    pub cgroups: Option<RunCgroups>,
    pub guard: Option<RunGuard>,
    pub pid_file: Option<PidFile>,
    cgroup_id: u64,
}

/// What teardown found, for `run_end`.
pub struct TeardownReport {
    pub stragglers_killed: usize,
    /// The run's cgroup leaves by hierarchy; `None` when they were gone already.
    pub cgroups: Option<BTreeMap<String, String>>,
    pub cgroups_removed: bool,
    pub tainted: bool,
    pub egress_dropped: u64,
    pub cgroup_error: Option<String>,
}

impl RunResources {
    /// The first half of a launched run's setup: the run's cgroups (after collecting
    /// stale ones) and its pid file. The child can join the cgroups while
    /// [`Self::confine`] does the rest.
    pub fn create(
        host: &Arc<Host>,
        spec: &RunSpec,
        audit: &mut RunAudit,
    ) -> Result<Self, SetupError> {
        let stale =
            crate::layers::cgroup::gc::collect_stale(&host.layout, crate::budgets::run_is_live);
        if !stale.removed.is_empty() || !stale.killed_in.is_empty() {
            let paths = |v: &[std::path::PathBuf]| {
                v.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
            };
            let stale = StaleCgroups {
                removed: paths(&stale.removed),
                killed_in: paths(&stale.killed_in),
            };
            audit.record(name::CGROUP, None, stale.into());
        }
        let cgroups = host
            .cgroups()
            .create_run(&spec.id, &spec.plan.limits)
            .map_err(|e| setup_err(name::CGROUP, e))?;
        tracing::debug!(
            "{} cgroups: {:?}",
            host.cgroups().mode(),
            cgroups.describe()
        );
        let mut res = Self::holding(host, spec, cgroups);
        res.pid_file = Some(PidFile::create(&spec.id).map_err(|e| setup_err(name::AGENTD, e))?);
        Ok(res)
    }

    /// The second half: the eBPF slot, resolver and rules of the run on its cgroups.
    /// On error (of either half), what was set up is undone (by `Drop`) and nothing is
    /// left behind.
    pub async fn confine(
        &mut self,
        spec: &RunSpec,
        audit: &mut RunAudit,
        timer: &mut PhaseTimer,
    ) -> Result<(), SetupError> {
        self.register_and_enforce(spec, audit, timer).await
    }

    /// Sets up what an attached run needs on an existing cgroup (`agentd attach`):
    /// everything keyed by the cgroup (eBPF slot, resolver, net/inode/exec rules, budget
    /// counters). No cgroup is created and no pid file written: the cgroup is not ours,
    /// so the stale-cgroup collector must never consider it.
    pub async fn prepare_attached(
        host: &Arc<Host>,
        spec: &RunSpec,
        cgroups: RunCgroups,
        audit: &mut RunAudit,
    ) -> Result<Self, SetupError> {
        Self::on_cgroups(host, spec, cgroups, audit).await
    }

    /// The eBPF slot, resolver and rules of a run on `cgroups`.
    async fn on_cgroups(
        host: &Arc<Host>,
        spec: &RunSpec,
        cgroups: RunCgroups,
        audit: &mut RunAudit,
    ) -> Result<Self, SetupError> {
        let mut res = Self::holding(host, spec, cgroups);
        res.register_and_enforce(spec, audit, &mut PhaseTimer::start())
            .await?;
        Ok(res)
    }

    async fn register_and_enforce(
        &mut self,
        spec: &RunSpec,
        audit: &mut RunAudit,
        timer: &mut PhaseTimer,
    ) -> Result<(), SetupError> {
        self.bpf = Some(
            self.host
                .bpf()
                .register(self.cgroup_id, &spec.id)
                .map_err(|e| setup_err(name::BPF, e))?,
        );
        timer.mark("slot");
        self.start_resolver(spec, audit).await?;
        timer.mark("resolver");
        self.enforce(spec, timer)?;
        Ok(())
    }

    /// Whether this run confines an existing cgroup (`agentd attach`).
    pub fn is_attached(&self) -> bool {
        self.cgroups.as_ref().is_some_and(RunCgroups::is_foreign)
    }

    /// Re-opens what an earlier daemon set up for a run: its cgroups, its eBPF slot (the
    /// pinned entries and links are still there), its event route, a new resolver on its
    /// slot, and its budgets where they were.
    pub async fn adopt(
        host: &Arc<Host>,
        spec: &RunSpec,
        adoption: &super::supervise::Adoption,
        audit: &mut RunAudit,
    ) -> Result<Self, SetupError> {
        let cgroups =
            RunCgroups::adopt(&adoption.cgroups).map_err(|e| setup_err(name::CGROUP, e))?;
        let cgroup_id = cgroups.cgroup_id();
        if cgroup_id != adoption.bpf.cgroup_id {
            return Err(setup_err(
                name::CGROUP,
                format!(
                    "{} is cgroup {cgroup_id}, but the run was registered as {}",
                    cgroups.identity().path.display(),
                    adoption.bpf.cgroup_id
                ),
            ));
        }
        let mut res = Self::holding(host, spec, cgroups);
        let run = host
            .bpf()
            .adopt(&adoption.bpf)
            .map_err(|e| setup_err(name::BPF, e))?;
        let counters = host
            .bpf()
            .budget_maps(&run)
            .map_err(|e| setup_err(name::BPF, e))?;
        res.bpf = Some(run);
        res.budgets.attach(counters);
        res.budgets.restore(&adoption.budgets, adoption.elapsed);
        res.start_resolver(spec, audit).await?;
        if !res.is_attached() {
            res.pid_file = Some(PidFile::create(&spec.id).map_err(|e| setup_err(name::AGENTD, e))?);
        }
        Ok(res)
    }

    /// Resources holding only the run's cgroups and its event route (subscribed before
    /// its cgroup is registered, so no event of the run is lost).
    fn holding(host: &Arc<Host>, spec: &RunSpec, cgroups: RunCgroups) -> Self {
        let cgroup_id = cgroups.cgroup_id();
        Self {
            host: Arc::clone(host),
            resolver: None,
            budgets: Budgets::new(&spec.policy, &spec.id),
            bpf: None,
            events: Some(host.router.subscribe(cgroup_id)),
            cgroups: Some(cgroups),
            guard: None,
            pid_file: None,
            cgroup_id,
        }
    }

    pub fn cgroups(&self) -> Result<&RunCgroups, SetupError> {
        self.cgroups
            .as_ref()
            .ok_or_else(|| setup_err(name::CGROUP, "the run's cgroups are gone"))
    }

    async fn start_resolver(
        &mut self,
        spec: &RunSpec,
        audit: &mut RunAudit,
    ) -> Result<(), SetupError> {
        let Some(req) = spec.plan.net.as_ref().filter(|r| r.resolver) else {
            return Ok(());
        };
        let slot = self.slot()?;
        let bpf = self.host.bpf_handle();
        let r = RunResolver::start(
            &bpf,
            slot,
            self.cgroup_id,
            req,
            &spec.policy,
            &spec.dns_upstream,
        )
        .await
        .map_err(|e| setup_err(DNS, e))?;
        let started = Resolver {
            listen: r.listen.iter().map(|a| a.to_string()).collect(),
            upstream: r.upstream.iter().map(|a| a.to_string()).collect(),
            grace_s: crate::net::run_resolver::GRACE.as_secs(),
        };
        audit.record(DNS, None, started.into());
        self.resolver = Some(r);
        Ok(())
    }

    fn slot(&self) -> Result<u32, SetupError> {
        self.bpf
            .as_ref()
            .map(RunBpf::slot)
            .ok_or_else(|| setup_err(name::BPF, "the run has no eBPF slot"))
    }

    /// Network, inode, exec and unix rules, and the budget counters.
    fn enforce(&mut self, spec: &RunSpec, timer: &mut PhaseTimer) -> Result<(), SetupError> {
        let attached = self.is_attached();
        let (Some(run), Some(cgroups)) = (self.bpf.as_mut(), self.cgroups.as_ref()) else {
            return Err(setup_err(name::BPF, "the run has no eBPF slot"));
        };
        let dir = cgroups.identity().path.clone();
        let mut bpf = self.host.bpf();
        if let Some(req) = &spec.plan.net {
            bpf.enforce_net(run, &dir, req)
                .map_err(|e| setup_err(name::BPF, e))?;
            timer.mark("net");
        }
        if let Some(path) = spec.plan.fs_rules {
            super::fsrules::enable(&mut bpf, run, path, &spec.policy, &dir)
                .map_err(|e| setup_err(path.layer(), e))?;
        }
        if let Some(path) = spec.plan.exec_integrity {
            super::fsrules::enable_exec(&mut bpf, run, path, &spec.policy)
                .map_err(|e| setup_err(path.layer(), e))?;
        }
        timer.mark("fs+exec");
        super::unix::enable(&mut bpf, run, &spec.plan, &spec.policy, cgroups)?;
        timer.mark("unix");
        if spec.policy.mode.records_only() && !attached {
            // Nothing refuses a file access here: its successful file syscalls are
            // reported, and those the fs rules would deny are recorded as would_deny.
            // (An attached workload's fs rules are never landlock's: nothing to judge.)
            bpf.observe_files(run)
                .map_err(|e| setup_err(name::BPF, e))?;
        }
        // Without agentd's seccomp filter, an int 0x80 or x32 call reaches the sys_exit
        // program with a number the other hooks would misread: an attached workload's is
        // killed after the call, an audit-mode run's (observed, above) only reported.
        // (An attached workload in audit mode is neither: nothing of it is killed.)
        if !spec.plan.seccomp && attached != spec.policy.mode.records_only() {
            bpf.watch_compat_calls(run)
                .map_err(|e| setup_err(name::BPF, e))?;
        }
        let counters = bpf
            .start_budgets(
                run,
                spec.plan.budget_programs,
                &dir,
                self.budgets.kernel_thresholds(),
            )
            .map_err(|e| setup_err(name::BPF, e))?;
        self.budgets.attach(counters);
        timer.mark("budgets");
        Ok(())
    }

    /// The normal end of a run, in the order the module documents. Budget notices and
    /// the taint records go to `audit`; returns what `run_end` reports.
    pub async fn teardown(
        &mut self,
        spec: &RunSpec,
        audit: &mut RunAudit,
        budget_kill: &mut Option<&'static str>,
    ) -> TeardownReport {
        if let Some(cgroups) = self.cgroups.as_ref() {
            for n in self.budgets.finish(cgroups) {
                *budget_kill = budget_kill.or(audit.notice(n));
            }
        }
        if let Some(r) = self.resolver.take() {
            let dropped = r.sink.dropped_decisions();
            if dropped > 0 {
                let dropped = Dropped {
                    count: dropped,
                    total: None,
                    source: "resolver decisions".into(),
                };
                audit.record(DNS, None, dropped.into());
            }
            r.stop().await;
        }
        // An attached workload keeps running when its run ends (detach).
        let stragglers_killed = self
            .cgroups
            .as_ref()
            .filter(|c| !c.is_foreign())
            .map_or(0, RunCgroups::kill_all);
        let tainted = self.host.bpf().taint(self.cgroup_id).is_some();
        let mut keep_taint = false;
        // mode: audit lets a tainted run's traffic go, so there is nothing to stop.
        if tainted && !spec.policy.mode.records_only() {
            if let Some(cgroups) = self.cgroups.as_ref() {
                let (entry, aborted) = super::fsrules::abort_tainted_sockets(cgroups).await;
                audit.entry(entry);
                // Sockets that could not be aborted keep their packets dropped for as long
                // as the cgroup lives.
                keep_taint = !aborted;
            }
        }
        let egress_dropped = self.host.bpf().taint_egress_drops(self.cgroup_id);
        if egress_dropped > 0 {
            audit.entry(super::fsrules::egress_record(&spec.policy, egress_dropped));
        }
        self.budgets.release();
        if let Some(run) = self.bpf.take() {
            self.host.bpf().release(run, keep_taint);
        }
        self.host.router.unsubscribe(self.cgroup_id);
        self.events = None;
        let ours = self.cgroups.as_ref().is_some_and(|c| !c.is_foreign());
        let (cgroups, cgroups_removed, cgroup_error) = match self.cgroups.take() {
            Some(c) => {
                let desc = c.describe();
                match c.remove() {
                    Ok(()) => (Some(desc), true, None),
                    Err(e) => (Some(desc), false, Some(e.to_string())),
                }
            }
            None => (None, false, None),
        };
        // The run's orphans were reparented to agentd (its subreaper) and are dead now:
        // reap them, so that nothing of the run is left once its end is reported.
        if ours {
            let leaf = crate::layers::cgroup::leaf_name(&spec.id);
            if let (_, true) = super::reap_run(&leaf, Duration::from_secs(2)) {
                audit.say.line(&format!(
                    "run {}: processes of the run still exiting after its teardown",
                    spec.id
                ));
            }
        }
        if let Some(g) = self.guard.take() {
            g.disarm();
        }
        self.pid_file = None;
        TeardownReport {
            stragglers_killed,
            cgroups,
            cgroups_removed,
            tainted,
            egress_dropped,
            cgroup_error,
        }
    }
}

impl Drop for RunResources {
    /// An error path: undo whatever is still held, in the documented order.
    fn drop(&mut self) {
        self.resolver = None;
        if let Some(c) = self.cgroups.as_ref().filter(|c| !c.is_foreign()) {
            c.kill_all();
        }
        self.budgets.release();
        if let Some(run) = self.bpf.take() {
            self.host.bpf().release(run, false);
        }
        self.host.router.unsubscribe(self.cgroup_id);
        self.events = None;
        // RunCgroups removes itself on drop; an armed guard kills the (empty) cgroup.
        self.cgroups = None;
        self.guard = None;
        self.pid_file = None;
    }
}
