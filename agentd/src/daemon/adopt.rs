//! Re-adoption: on start, every live run an earlier daemon left (its state file, its
//! pinned eBPF slot and links, its cgroups) is taken over and supervised to its end. A
//! run whose command ended while no daemon ran gets its `run_end` then, from the exit
//! record the pinned ring kept.
//!
//! A run that cannot be re-adopted (an unreadable state file, a daemon built with other
//! eBPF programs, cgroups gone) is not left unsupervised: its processes are killed
//! (fail closed) and the chain says why.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::event::{Adopted, AdoptionFailed, ClientGone};
use tokio::sync::mpsc;

use super::runs::{DaemonHooks, LiveRun, Phase};
use super::state::{self, RunState};
use super::{Config, Daemon};
use crate::layers::cgroup::RunCgroups;
use crate::plan::Plan;
use crate::policy::{self, LoadOptions};
use crate::supervisor::{self, Adoption, Control, RunSpec};

/// What re-adoption did.
#[derive(Debug, Default)]
pub struct Report {
    /// Run ids taken over.
    pub adopted: Vec<String>,
    /// `(run or file, why)` of what could not be taken over (and was stopped).
    pub failed: Vec<(String, String)>,
}

/// Takes over every run in the config's state directory.
pub async fn adopt_all(daemon: &Arc<Daemon>, config: &Config) -> Report {
    let mut report = Report::default();
    for (path, parsed) in state::list_runs(&config.runs_dir()) {
        let run = match parsed {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot re-adopt {}: {e}", path.display());
                report
                    .failed
                    .push((path.display().to_string(), e.to_string()));
                state::remove_if_present(&path);
                continue;
            }
        };
        let id = run.id.clone();
        match adopt_one(daemon, config, run.clone()) {
            Ok(()) => report.adopted.push(id),
            Err(why) => {
                tracing::error!(run = %id, "cannot re-adopt: {why}; stopping it");
                stop_unadoptable(daemon, &run, &why);
                state::remove_if_present(&path);
                report.failed.push((id, why));
            }
        }
    }
    report
}

fn adopt_one(daemon: &Arc<Daemon>, config: &Config, run: RunState) -> Result<(), String> {
    if run.version != state::STATE_VERSION {
        return Err(format!(
            "state file version {} (this daemon writes {})",
            run.version,
            state::STATE_VERSION
        ));
    }
    if run.object_id != daemon.object_id {
        return Err(format!(
            "started by a daemon with eBPF object {}, this one has {}: its maps cannot be shared",
            run.object_id, daemon.object_id
        ));
    }
    let Some(pid) = run.pid else {
        return Err("its command never started (the daemon stopped during set-up)".into());
    };
    let opts = LoadOptions {
        workspace: run.workspace.clone(),
        home: run.home.clone(),
    };
    let mut run = run;
    // State files name their policy by hash; older ones carried its text.
    let stored = if run.policy_text.is_empty() {
        let (text, hold) = daemon
            .policies
            .adopt(&run.policy_hash)
            .map_err(|e| format!("its policy: {e}"))?;
        run.policy_text = text;
        Some(hold)
    } else {
        None
    };
    let policy = policy::parse_str(&run.policy_text, &run.policy_origin, &opts)
        .map_err(|e| format!("its policy no longer parses: {e}"))?;
    if policy.hash != run.policy_hash {
        return Err(format!(
            "its policy text has hash {}, its state file says {}",
            policy.hash, run.policy_hash
        ));
    }
    let policy_hold = match stored {
        Some(hold) => hold,
        None => daemon
            .policies
            .hold(&run.policy_hash, &run.policy_text)
            .map_err(|e| format!("its policy: {e}"))?,
    };
    let plan = Plan::for_run(&policy, &daemon.host.probe);
    let dns_upstream = run
        .dns_upstream
        .iter()
        .filter_map(|a| supervisor::parse_upstream(a))
        .collect();
    let elapsed = Duration::from_millis(state::now_unix_ms().saturating_sub(run.started_unix_ms));
    let adoption = Adoption {
        pid,
        bpf: run.bpf.clone(),
        cgroups: run.cgroups.clone(),
        budgets: run.budgets.clone(),
        elapsed,
    };
    let spec = RunSpec {
        id: run.id.clone(),
        policy,
        plan,
        argv: run.argv.iter().map(OsString::from).collect(),
        program: None,
        env: Vec::new(),
        cwd: Some(run.cwd.clone()),
        user: Some(run.user.clone()),
        umask: None,
        workspace: run.workspace.clone(),
        dns_upstream,
        stdio: None,
        tied_to_agentd: false,
        start_fields: serde_json::Map::new(),
        // The run is already running: its mounts, if any, were made at its launch.
        protect: Vec::new(),
    };
    let (mut live, controls_rx) = LiveRun::new(
        &spec,
        run.user.uid,
        run.detach,
        run.attached.clone(),
        Phase::Running { pid },
    );
    // It started before this daemon did.
    live.started = Instant::now()
        .checked_sub(elapsed)
        .unwrap_or_else(Instant::now);
    live.adopted = true;
    let controls = live.controls.clone();
    daemon.registry.insert(live);
    daemon.record(
        None,
        Adopted {
            adopted_run: run.id.clone(),
            pid,
            uid: run.user.uid,
            slot: run.bpf.slot,
            elapsed_ms: elapsed.as_millis() as u64,
            detached: run.detach,
        },
    );
    if !run.detach {
        // The client that started it lost its connection with the old daemon; it has
        // a while to come back (`wait`) before the run is stopped, as it would have been
        // had the client gone.
        spawn_client_grace(
            Arc::clone(daemon),
            run.id.clone(),
            controls,
            Duration::from_secs(config.client_grace_secs),
        );
    }
    let hooks = DaemonHooks::new(
        Arc::clone(&daemon.registry),
        state::run_path(&config.runs_dir(), &run.id),
        run.clone(),
    );
    daemon.spawn_supervised(
        run.id.clone(),
        policy_hold,
        supervisor::adopt(
            Arc::clone(&daemon.host),
            spec,
            adoption,
            controls_rx,
            Box::new(hooks),
        ),
    );
    Ok(())
}

/// Stops a re-adopted, attached run whose client has not come back within `grace`.
fn spawn_client_grace(
    daemon: Arc<Daemon>,
    id: String,
    controls: mpsc::Sender<Control>,
    grace: Duration,
) {
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let orphaned = daemon
            .registry
            .lock()
            .get(&id)
            .is_some_and(|r| r.is_live() && r.followers == 0);
        if orphaned {
            tracing::info!(run = %id, "no client came back within {grace:?}; stopping the run");
            daemon.record(
                None,
                ClientGone {
                    gone_run: id.clone(),
                    grace_s: grace.as_secs(),
                },
            );
            let _ = controls.send(Control::Stop).await;
        }
    });
}

/// A run that cannot be supervised is not left running unsupervised: its processes are
/// killed and its cgroups removed where they still exist.
fn stop_unadoptable(daemon: &Daemon, run: &RunState, why: &str) {
    let killed = match RunCgroups::adopt(&run.cgroups) {
        Ok(c) => {
            let n = c.kill_all();
            if let Err(e) = c.remove() {
                tracing::warn!(run = %run.id, "cgroups: {e}");
            }
            n
        }
        Err(_) => 0,
    };
    // Its map entries are pinned; an object of ours can be taken and released.
    if run.object_id == daemon.object_id && run.bpf.slot != 0 {
        let mut bpf = daemon.host.bpf();
        match bpf.adopt(&run.bpf) {
            Ok(r) => bpf.release(r, false),
            Err(e) => tracing::warn!(run = %run.id, "releasing its eBPF slot: {e}"),
        }
    }
    daemon.record(
        Some(crate::audit::Decision::Kill),
        AdoptionFailed {
            failed_run: run.id.clone(),
            reason: why.to_owned(),
            processes_killed: killed,
        },
    );
}
