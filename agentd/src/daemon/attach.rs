//! `attach`: put an existing workload under a policy. Root only. The cgroup is found
//! and checked (`crate::attach`), the plan is cut down to what running processes can
//! take (`Plan::for_attach`), what is enforced, audited and not applied goes back to
//! the client in the form of `policy explain`, and the run is supervised by the daemon
//! like one it launched, until the cgroup empties or `detach`.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use tokio::net::unix::OwnedWriteHalf;

use super::protocol::{AttachRequest, Response};
use super::runs::{DaemonHooks, LiveRun, Phase};
use super::session::{error, send};
use super::socket::Peer;
use super::state::{self, RunState};
use super::Daemon;
use crate::audit::event::Attach;
use crate::layers::cgroup::RunCgroups;
use crate::layers::name;
use crate::plan::{self, Plan};
use crate::policy::{self, LoadOptions};
use crate::supervisor::{self, RunSpec, UserSpec, EXIT_SETUP_FAILED};

/// Serves an `attach` request to the `started` line.
pub async fn attach(
    daemon: Arc<Daemon>,
    peer: Peer,
    req: AttachRequest,
    mut write: OwnedWriteHalf,
) {
    let refused = |layer: &str, message: String| Response::Error {
        code: EXIT_SETUP_FAILED,
        message,
        layer: Some(layer.to_owned()),
    };
    if peer.uid != 0 {
        let _ = send(
            &mut write,
            &error(1, "permission denied: only root may attach"),
        )
        .await;
        return;
    }
    let target = match crate::attach::resolve(
        &daemon.host.layout,
        req.cgroup.as_deref(),
        req.pid,
        req.container.as_deref(),
        req.force,
        std::process::id(),
    ) {
        Ok(t) => t,
        Err(e) => {
            let _ = send(&mut write, &refused(name::CGROUP, e.to_string())).await;
            return;
        }
    };
    let workspace = PathBuf::from(&req.workspace);
    let opts = LoadOptions {
        workspace: workspace.clone(),
        home: PathBuf::from("/root"),
    };
    let policy = match policy::parse_str(&req.policy.text, &req.policy.origin, &opts) {
        Ok(p) => p,
        Err(e) => {
            let _ = send(&mut write, &refused("policy", e.to_string())).await;
            return;
        }
    };
    // Explained to the caller (`render`), so with its coverage.
    let mut plan = Plan::build(&policy, &daemon.host.probe);
    let (marks, source) =
        plan::attach::best_effort(&policy.attach.best_effort, req.best_effort.as_deref());
    let not_applied = plan.for_attach(&marks);
    let explained = format!(
        "{}{}",
        plan::attach::marks_line(&marks, source),
        crate::cli::policy::render(&policy, &plan)
    );
    if send(&mut write, &Response::Message { text: explained })
        .await
        .is_err()
    {
        return;
    }
    if let Some(r) = plan.refusals.first() {
        let _ = send(&mut write, &refused(r.layer, r.reason.clone())).await;
        return;
    }
    let cgroups = match RunCgroups::attach(&target.cgroup) {
        Ok(c) => c,
        Err(e) => {
            let _ = send(&mut write, &refused(name::CGROUP, e.to_string())).await;
            return;
        }
    };
    let id = supervisor::new_run_id();
    let user = UserSpec {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        name: Some("root".into()),
    };
    let mut start_fields = serde_json::Map::new();
    start_fields.insert(
        "client".into(),
        json!({"uid": peer.uid, "gid": peer.gid, "pid": peer.pid}),
    );
    start_fields.insert("attached".into(), json!(target.described));
    let state = RunState {
        policy_origin: req.policy.origin.clone(),
        policy_text: req.policy.text.clone(),
        policy_hash: policy.hash.clone(),
        workspace: workspace.clone(),
        home: opts.home.clone(),
        cwd: PathBuf::from("/"),
        detach: true,
        attached: Some(target.described.clone()),
        ..RunState::unstarted(&id, user.clone(), peer.pid, &daemon.object_id)
    };
    let record = Attach {
        target: target.described.clone(),
        cgroup: target.cgroup.display().to_string(),
        cgroup_id: cgroups.cgroup_id(),
        processes: target.pids.len(),
        not_applied,
        forced: target.forced,
    };
    let spec = RunSpec {
        id: id.clone(),
        policy,
        plan,
        argv: Vec::new(),
        program: None,
        env: Vec::new(),
        cwd: Some(PathBuf::from("/")),
        umask: None,
        user: Some(user),
        workspace,
        dns_upstream: Vec::new(),
        stdio: None,
        tied_to_agentd: false,
        start_fields,
        // A running workload cannot be given a mount namespace.
        protect: Vec::new(),
    };
    let policy_hold = match daemon.policies.hold(&state.policy_hash, &state.policy_text) {
        Ok(hold) => hold,
        Err(e) => {
            let message = format!("cannot keep the run's policy: {e}");
            let _ = send(&mut write, &refused(name::AGENTD, message)).await;
            return;
        }
    };
    let (live, controls_rx) = LiveRun::new(
        &spec,
        0,
        true,
        Some(target.described.clone()),
        Phase::Preparing,
    );
    let mut started = live.phase.subscribe();
    daemon.registry.insert(live);
    let hooks = DaemonHooks::new(
        Arc::clone(&daemon.registry),
        state::run_path(&daemon.runs_dir(), &id),
        state,
    );
    daemon.spawn_supervised(
        id.clone(),
        policy_hold,
        supervisor::attach(
            Arc::clone(&daemon.host),
            spec,
            cgroups,
            record,
            controls_rx,
            Box::new(hooks),
        ),
    );
    let _ = send(&mut write, &Response::Accepted { run: id.clone() }).await;
    loop {
        let current = started.borrow_and_update().clone();
        match current {
            Phase::Running { pid } => {
                let _ = send(&mut write, &Response::Started { run: id, pid }).await;
                return;
            }
            Phase::Ended(r) => {
                let _ = send(&mut write, &r).await;
                return;
            }
            Phase::Preparing => {}
        }
        if started.changed().await.is_err() {
            return;
        }
    }
}
