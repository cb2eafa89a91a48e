//! One client connection: identify the peer, read one request (bounded in size and time),
//! check that the peer may make it, and answer. A bad request gets an error line and the
//! connection closes; nothing a client sends can stop the daemon or hold up others (each
//! connection is its own task).

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::policies::PolicyHold;
use super::protocol::{self, Op, Response, RunRequest};
use super::runs::{DaemonHooks, LiveRun, Phase};
use super::socket::{self, LineReader, Peer, ReadError};
use super::state::{self, RunState};
use super::Daemon;
use crate::audit::event::{PeerRefused, TokenIssued, TokenRefused, TokenRevoked};
use crate::audit::Decision;
use crate::layers::name;
use crate::plan::Plan;
use crate::policy::{self, LoadOptions};
use crate::supervisor::{self, Control, RunSpec, UserSpec, EXIT_SETUP_FAILED};

/// A whole first request must arrive within this.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Serves one connection to its end.
pub async fn serve(daemon: Arc<Daemon>, stream: UnixStream, token_only: bool) {
    let peer = match socket::peer(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("connection without credentials: {e}");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut reader = LineReader::new(daemon.max_request());
    let (line, fds) = match reader.next(read.as_ref(), Some(REQUEST_DEADLINE)).await {
        Ok(x) => x,
        Err(ReadError::Closed) => return,
        Err(e) => {
            tracing::info!(uid = peer.uid, pid = peer.pid, "bad request: {e}");
            let _ = send(&mut write, &error(1, e.to_string())).await;
            return;
        }
    };
    let request = match protocol::parse_request(&line, daemon.max_request()) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(uid = peer.uid, pid = peer.pid, "bad request: {e}");
            let _ = send(&mut write, &error(1, e.to_string())).await;
            return;
        }
    };
    // A token decides alone: the peer acts as the run's owner, on that run only.
    let (peer, scope) = match &request.token {
        Some(token) => match daemon.check_token(&peer, token, &request.op) {
            Ok(x) => x,
            Err(why) => {
                let _ = send(&mut write, &error(1, why)).await;
                return;
            }
        },
        None if token_only => {
            let why = "this socket serves only requests with a token (--token or AGENTD_TOKEN)";
            daemon.audit_refusal(&peer, &request.op, why);
            let _ = send(&mut write, &error(1, why)).await;
            return;
        }
        None => {
            if let Err(why) = daemon.authorize(&peer, &request.op) {
                daemon.audit_refusal(&peer, &request.op, &why);
                let _ = send(&mut write, &error(1, why)).await;
                return;
            }
            (peer, None)
        }
    };
    let reply = match request.op {
        Op::Run(r) => return run(daemon, peer, *r, fds, read, reader, write).await,
        Op::Wait { run } => {
            let follow_as = if scope.is_some() {
                Following::Observer
            } else {
                Following::Client
            };
            return follow(daemon, peer, run, read, reader, write, false, follow_as).await;
        }
        Op::Logs { run, follow } => return logs(daemon, peer, run, follow, write).await,
        Op::Ps => Response::Runs {
            runs: daemon
                .registry
                .lock()
                .values()
                .filter(|r| r.is_live() && (peer.uid == 0 || r.uid == peer.uid))
                .filter(|r| scope.as_ref().is_none_or(|s| *s == r.id))
                .map(LiveRun::info)
                .collect(),
        },
        Op::Status => Response::Status(Box::new(daemon.status())),
        Op::Stop { run } => control(&daemon, &peer, &run, Control::Stop, "stop").await,
        Op::Pause { run } => control(&daemon, &peer, &run, Control::Pause, "pause").await,
        Op::Resume { run } => control(&daemon, &peer, &run, Control::Resume, "resume").await,
        Op::Signal { .. } => error(1, "`signal` is only accepted on a run's own connection"),
        Op::TokenCreate {
            run,
            allow,
            ttl_secs,
        } => daemon.create_token(&peer, &run, allow, ttl_secs),
        Op::TokenRevoke { id } => daemon.revoke_token(&peer, &id),
        Op::Attach(r) => return super::attach::attach(daemon, peer, r, write).await,
        Op::Detach { run } => detach(&daemon, &peer, &run).await,
    };
    let _ = send(&mut write, &reply).await;
}

pub(super) async fn send(write: &mut OwnedWriteHalf, r: &Response) -> std::io::Result<()> {
    write.write_all(&protocol::encode(r)).await
}

pub(super) fn error(code: u8, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
        layer: None,
    }
}

/// `what` of a live run the peer may act on: its own (root: any).
fn owned_run<T>(
    daemon: &Daemon,
    peer: &Peer,
    run: &str,
    what: impl FnOnce(&LiveRun) -> T,
) -> Result<T, String> {
    let runs = daemon.registry.lock();
    match runs.get(run) {
        Some(r) if r.is_live() && (peer.uid == 0 || r.uid == peer.uid) => Ok(what(r)),
        // Someone else's run is reported as unknown: its existence is not the peer's to know.
        _ => Err(format!("no run `{run}` of yours")),
    }
}

/// The control channel of a run the peer may act on.
fn find_run(daemon: &Daemon, peer: &Peer, run: &str) -> Result<mpsc::Sender<Control>, String> {
    owned_run(daemon, peer, run, |r| r.controls.clone())
}

pub(super) async fn control(
    daemon: &Daemon,
    peer: &Peer,
    run: &str,
    c: Control,
    action: &str,
) -> Response {
    match find_run(daemon, peer, run) {
        Ok(tx) => match tx.send(c).await {
            Ok(()) => Response::Done {
                run: run.to_owned(),
                action: action.to_owned(),
            },
            Err(_) => error(1, format!("run `{run}` has ended")),
        },
        Err(e) => error(1, e),
    }
}

/// How long `detach` waits for the run's teardown before it answers anyway.
const DETACH_WITHIN: Duration = Duration::from_secs(30);

/// `detach`: asks the run to let go of its workload, and answers `done` only once the
/// run has ended, so that when `agentd detach` returns every program and map entry the
/// attach added is gone and the run is no longer listed by `ps`.
async fn detach(daemon: &Daemon, peer: &Peer, run: &str) -> Response {
    let mut phase = match owned_run(daemon, peer, run, |r| r.phase.subscribe()) {
        Ok(phase) => phase,
        Err(e) => return error(1, e),
    };
    let reply = control(daemon, peer, run, Control::Detach, "detach").await;
    if !matches!(reply, Response::Done { .. }) {
        return reply;
    }
    let ended = tokio::time::timeout(
        DETACH_WITHIN,
        phase.wait_for(|p| matches!(p, Phase::Ended(_))),
    )
    .await;
    match ended {
        // A closed channel means the row is gone, which is an end too.
        Ok(_) => reply,
        Err(_) => error(
            1,
            format!(
                "run `{run}` was asked to detach but had not ended after {}s; `agentd ps` shows whether it still holds the workload",
                DETACH_WITHIN.as_secs()
            ),
        ),
    }
}

/// `run`: set up, launch and follow a run for its client.
async fn run(
    daemon: Arc<Daemon>,
    peer: Peer,
    req: RunRequest,
    fds: Vec<OwnedFd>,
    read: OwnedReadHalf,
    reader: LineReader,
    mut write: OwnedWriteHalf,
) {
    let detach = req.detach;
    let started = std::time::Instant::now();
    let (spec, state, policy) = match build_spec(&daemon, &peer, req, fds) {
        Ok(x) => {
            tracing::debug!("run request: spec built in {:?}", started.elapsed());
            x
        }
        Err((code, layer, message)) => {
            let _ = send(
                &mut write,
                &Response::Error {
                    code,
                    message,
                    layer,
                },
            )
            .await;
            return;
        }
    };
    let id = spec.id.clone();
    let (live, controls_rx) = LiveRun::new(&spec, peer.uid, detach, None, Phase::Preparing);
    daemon.registry.insert(live);
    let hooks = DaemonHooks::new(
        Arc::clone(&daemon.registry),
        state::run_path(&daemon.runs_dir(), &id),
        state,
    );
    daemon.spawn_supervised(
        id.clone(),
        policy,
        supervisor::run(Arc::clone(&daemon.host), spec, controls_rx, Box::new(hooks)),
    );
    follow(
        daemon,
        peer,
        id,
        read,
        reader,
        write,
        detach,
        Following::Client,
    )
    .await;
}

/// Who follows a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Following {
    /// Its client (or one reconnecting): forwards signals, and its going away stops a
    /// run that is not detached.
    Client,
    /// A token holder with `status`: sees the run's progress and end, nothing more (no
    /// signals; its going away stops nothing).
    Observer,
}

/// A run request made ready: the run's spec, its state file, its hold on its policy.
type PreparedRequest = (RunSpec, RunState, PolicyHold);

/// What a `run` request becomes, or why it cannot run: (exit code, layer, message).
fn build_spec(
    daemon: &Daemon,
    peer: &Peer,
    req: RunRequest,
    fds: Vec<OwnedFd>,
) -> Result<PreparedRequest, (u8, Option<String>, String)> {
    let setup = |layer: &str, m: String| (EXIT_SETUP_FAILED, Some(layer.to_owned()), m);
    let stdio: [OwnedFd; 3] = fds.try_into().map_err(|v: Vec<OwnedFd>| {
        setup(
            name::AGENTD,
            format!(
                "a run request carries stdin, stdout and stderr (3 descriptors), not {}",
                v.len()
            ),
        )
    })?;
    let absolute = |what: &str, p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            Ok(p)
        } else {
            Err(setup(
                name::AGENTD,
                format!("{what} `{}` is not absolute", p.display()),
            ))
        }
    };
    let workspace = absolute("workspace", &req.workspace)?;
    let cwd = absolute("cwd", &req.cwd)?;
    let home = absolute("home", &req.home)?;
    if req.argv.is_empty() {
        return Err(setup(name::EXEC, "no command given".into()));
    }
    let user = match peer.uid {
        // Root gets no implicit uid 0: the client named the user (or sudo's), as a
        // standalone root run must.
        0 => match &req.user {
            Some(u) => UserSpec::parse(u).map_err(|e| setup(name::USER, e.to_string()))?,
            None => {
                return Err(setup(
                    name::USER,
                    "refusing to run the agent as root: pass --user USER; --user root runs it as root on purpose".into(),
                ))
            }
        },
        uid => {
            if req.user.is_some() {
                return Err(setup(
                    name::USER,
                    "--user is for root; a run through the daemon runs as its caller".into(),
                ));
            }
            UserSpec::from_credentials(uid, peer.gid, peer.groups.clone())
                .map_err(|e| setup(name::USER, e.to_string()))?
        }
    };
    let opts = LoadOptions {
        workspace: workspace.clone(),
        home: home.clone(),
    };
    let (origin, text) = match &req.policy {
        Some(p) => (p.origin.clone(), p.text.clone()),
        None => (
            "<preset:default>".to_owned(),
            super::DEFAULT_POLICY.to_owned(),
        ),
    };
    let policy =
        policy::parse_str(&text, &origin, &opts).map_err(|e| setup("policy", e.to_string()))?;
    let plan = Plan::for_run(&policy, &daemon.host.probe);
    if let Some(r) = plan.refusals.first() {
        return Err(setup(r.layer, r.reason.clone()));
    }
    let dns_upstream = req
        .dns_upstream
        .iter()
        .map(|a| {
            supervisor::parse_upstream(a).ok_or_else(|| {
                setup(
                    crate::plan::DNS,
                    format!("--dns-upstream `{a}`: expected IP or IP:PORT"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let path_var = req
        .env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .map(OsString::from);
    let argv: Vec<OsString> = req.argv.iter().map(OsString::from).collect();
    let program = supervisor::resolve_command(&argv[0], path_var.as_ref(), &cwd);
    let id = supervisor::new_run_id();
    let mut start_fields = serde_json::Map::new();
    start_fields.insert(
        "client".into(),
        json!({"uid": peer.uid, "gid": peer.gid, "pid": peer.pid}),
    );
    start_fields.insert("detached".into(), json!(req.detach));
    // The policy file the client read, where the daemon sees it too (same path: the
    // client's request names it as the caller sees it).
    let mut protect = daemon.protected.clone();
    let origin_path = Path::new(&origin);
    if origin_path.is_absolute() && origin_path.is_file() {
        protect.push(crate::layers::protect::ProtectedFile {
            path: origin_path.to_path_buf(),
            what: "policy",
        });
    }
    let state = RunState {
        policy_origin: origin,
        policy_text: text,
        policy_hash: policy.hash.clone(),
        workspace: workspace.clone(),
        home,
        cwd: cwd.clone(),
        argv: req.argv.clone(),
        dns_upstream: req.dns_upstream.clone(),
        detach: req.detach,
        ..RunState::unstarted(&id, user.clone(), peer.pid, &daemon.object_id)
    };
    let spec = RunSpec {
        id,
        policy,
        plan,
        argv,
        program,
        env: req.env.iter().map(OsString::from).collect(),
        cwd: Some(cwd),
        umask: req.umask.map(|m| m & 0o777),
        user: Some(user),
        workspace,
        dns_upstream,
        stdio: Some(stdio),
        tied_to_agentd: false,
        start_fields,
        protect,
    };
    let policy = daemon
        .policies
        .hold(&state.policy_hash, &state.policy_text)
        .map_err(|e| setup(name::AGENTD, format!("cannot keep the run's policy: {e}")))?;
    Ok((spec, state, policy))
}

/// Follows run `id` for this connection: `started`, then `exited`; `signal` lines are
/// forwarded. When the connection closes first, a run that is not detached is stopped.
#[allow(
    clippy::too_many_arguments,
    reason = "one connection's halves and how it follows"
)]
async fn follow(
    daemon: Arc<Daemon>,
    peer: Peer,
    id: String,
    read: OwnedReadHalf,
    mut reader: LineReader,
    mut write: OwnedWriteHalf,
    detach: bool,
    following: Following,
) {
    let client = following == Following::Client;
    let found = {
        let mut runs = daemon.registry.lock();
        match runs.get_mut(&id) {
            Some(r) if peer.uid == 0 || r.uid == peer.uid => {
                r.followers += usize::from(client);
                Some((r.phase.subscribe(), r.controls.clone(), r.detach))
            }
            _ => None,
        }
    };
    let Some((mut phase, controls, run_detached)) = found else {
        let _ = send(&mut write, &error(1, format!("no run `{id}` of yours"))).await;
        return;
    };
    let mut told_started = false;
    let mut client_open = send(&mut write, &Response::Accepted { run: id.clone() })
        .await
        .is_ok();
    loop {
        let current = phase.borrow_and_update().clone();
        match current {
            Phase::Running { pid } if !told_started => {
                told_started = true;
                if send(
                    &mut write,
                    &Response::Started {
                        run: id.clone(),
                        pid,
                    },
                )
                .await
                .is_err()
                {
                    client_open = false;
                }
                if detach {
                    break;
                }
            }
            Phase::Ended(exited) => {
                let _ = send(&mut write, &exited).await;
                break;
            }
            _ => {}
        }
        if !client_open {
            break;
        }
        tokio::select! {
            changed = phase.changed() => if changed.is_err() { break },
            line = reader.next(read.as_ref(), None) => match line {
                Ok((line, _)) => match protocol::parse_request(&line, daemon.max_request()) {
                    Ok(req) => match req.op {
                        Op::Signal { .. } if !client => { let _ = send(&mut write, &error(1, "a token does not forward signals")).await; }
                        Op::Signal { signal } => match signal.parse::<nix::sys::signal::Signal>() {
                            Ok(s) if matches!(s, nix::sys::signal::Signal::SIGINT | nix::sys::signal::Signal::SIGTERM | nix::sys::signal::Signal::SIGHUP | nix::sys::signal::Signal::SIGQUIT | nix::sys::signal::Signal::SIGWINCH | nix::sys::signal::Signal::SIGUSR1 | nix::sys::signal::Signal::SIGUSR2) => {
                                let _ = controls.send(Control::Signal(s)).await;
                            }
                            _ => { let _ = send(&mut write, &error(1, format!("signal `{signal}` is not forwarded"))).await; }
                        },
                        _ => { let _ = send(&mut write, &error(1, "only `signal` is accepted while following a run")).await; }
                    },
                    Err(e) => { let _ = send(&mut write, &error(1, e.to_string())).await; }
                },
                Err(_) => { client_open = false; }
            },
        }
    }
    if !client {
        return;
    }
    let last_follower_gone = {
        let mut runs = daemon.registry.lock();
        match runs.get_mut(&id) {
            Some(r) => {
                r.followers = r.followers.saturating_sub(1);
                r.followers == 0 && r.is_live()
            }
            None => false,
        }
    };
    if !client_open && last_follower_gone && !run_detached {
        tracing::info!(run = %id, "its client went away; stopping the run");
        let _ = controls.send(Control::Stop).await;
    }
}

/// `logs`: the run's records from the chain; with `follow`, until it has ended.
async fn logs(
    daemon: Arc<Daemon>,
    peer: Peer,
    id: String,
    follow: bool,
    mut write: OwnedWriteHalf,
) {
    // Root may read any run's records; others only their own runs' (live or recent).
    let allowed = peer.uid == 0
        || daemon
            .registry
            .lock()
            .get(&id)
            .is_some_and(|r| r.uid == peer.uid);
    if !allowed {
        let _ = send(&mut write, &error(1, format!("no run `{id}` of yours"))).await;
        return;
    }
    let path = daemon.host.audit_path.clone();
    let mut offset = 0u64;
    let mut partial = Vec::new();
    loop {
        let ended = !daemon
            .registry
            .lock()
            .get(&id)
            .is_some_and(LiveRun::is_live);
        match read_from(&path, offset) {
            Ok(bytes) => {
                offset += bytes.len() as u64;
                partial.extend_from_slice(&bytes);
                while let Some(i) = partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=i).take(i).collect();
                    if record_of(&line, &id) {
                        let line = String::from_utf8_lossy(&line).into_owned();
                        if send(&mut write, &Response::Record { line }).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                let _ = send(&mut write, &error(1, format!("{}: {e}", path.display()))).await;
                return;
            }
        }
        if !follow || ended {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Whether an audit line belongs to run `id`.
fn record_of(line: &[u8], id: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .is_some_and(|v| v.get("run").and_then(|r| r.as_str()) == Some(id))
}

impl Daemon {
    /// Whether `peer` may make request `op`: root may do anything; a member of the
    /// daemon's group may start runs and act on its own; anyone else nothing.
    pub fn authorize(&self, peer: &Peer, _op: &Op) -> Result<(), String> {
        if peer.uid == 0 {
            return Ok(());
        }
        match self.group_gid {
            Some(gid) if peer.in_group(gid) => Ok(()),
            Some(_) => Err(format!(
                "permission denied: uid {} is not in group `{}`",
                peer.uid, self.group
            )),
            None => Err(format!(
                "permission denied: group `{}` does not exist on this host, so only root may use the daemon",
                self.group
            )),
        }
    }

    /// Judges a request by its token: `Ok((the peer as the run's owner, the run))`, or
    /// the refusal (audited, the token's id only).
    fn check_token(
        &self,
        peer: &Peer,
        token: &str,
        op: &Op,
    ) -> Result<(Peer, Option<String>), String> {
        let now = state::now_unix_ms() / 1000;
        let checked = self
            .tokens
            .verify(token, now)
            .and_then(|claims| super::tokens::Tokens::permits(&claims, op).map(|()| claims));
        let claims = match checked {
            Ok(c) => c,
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(uid = peer.uid, pid = peer.pid, "token refused: {reason}");
                self.record(
                    Some(Decision::Deny),
                    TokenRefused {
                        token_id: e.id(),
                        uid: peer.uid,
                        pid: peer.pid,
                        op: super::tokens::op_name(op).to_owned(),
                        why: e.why().to_owned(),
                        reason: reason.clone(),
                    },
                );
                return Err(format!("permission denied: {reason}"));
            }
        };
        // The run's owner; a run that has gone is nobody's (every lookup then fails).
        let owner = self
            .registry
            .lock()
            .get(&claims.run)
            .map(|r| r.uid)
            .unwrap_or(u32::MAX);
        let acting = Peer {
            uid: owner,
            gid: u32::MAX,
            pid: peer.pid,
            groups: Vec::new(),
        };
        Ok((acting, Some(claims.run)))
    }

    /// `token_create`: root, or the owner of the (live) run.
    fn create_token(&self, peer: &Peer, run: &str, allow: Vec<String>, ttl_secs: u64) -> Response {
        if let Some(bad) = allow
            .iter()
            .find(|a| !super::tokens::ACTIONS.contains(&a.as_str()))
        {
            return error(
                1,
                format!(
                    "`{bad}` is not an action a token may allow ({})",
                    super::tokens::ACTIONS.join(", ")
                ),
            );
        }
        if allow.is_empty() || ttl_secs == 0 {
            return error(1, "a token needs at least one action and a positive ttl");
        }
        if let Err(e) = find_run(self, peer, run) {
            return error(1, e);
        }
        let now = state::now_unix_ms() / 1000;
        let claims = super::tokens::Claims {
            id: crate::supervisor::new_run_id(),
            run: run.to_owned(),
            allow,
            exp: now.saturating_add(ttl_secs),
        };
        match self.tokens.mint(&claims, peer.uid, now) {
            Ok(token) => {
                self.record(
                    None,
                    TokenIssued {
                        token_id: claims.id.clone(),
                        token_run: claims.run.clone(),
                        allow: claims.allow.clone(),
                        expires_unix: claims.exp,
                        uid: peer.uid,
                    },
                );
                Response::Token {
                    id: claims.id,
                    token,
                    expires_unix: claims.exp,
                }
            }
            Err(e) => error(1, format!("cannot mint a token: {e}")),
        }
    }

    /// `token_revoke`: root, or whoever minted it.
    fn revoke_token(&self, peer: &Peer, id: &str) -> Response {
        let now = state::now_unix_ms() / 1000;
        match self.tokens.revoke(id, peer.uid, now) {
            Ok(true) => {
                self.record(
                    None,
                    TokenRevoked {
                        token_id: id.to_owned(),
                        uid: peer.uid,
                    },
                );
                Response::Done {
                    run: id.to_owned(),
                    action: "revoked".into(),
                }
            }
            Ok(false) => error(1, format!("no live token `{id}` of yours")),
            Err(e) => error(1, format!("cannot revoke: {e}")),
        }
    }

    /// Audits a refused request with the peer's identity.
    pub fn audit_refusal(&self, peer: &Peer, op: &Op, why: &str) {
        let op_name = serde_json::to_value(op)
            .ok()
            .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_owned))
            .unwrap_or_default();
        tracing::warn!(uid = peer.uid, pid = peer.pid, op = %op_name, "refused: {why}");
        self.record(
            Some(Decision::Deny),
            PeerRefused {
                uid: peer.uid,
                gid: peer.gid,
                pid: peer.pid,
                op: op_name,
                reason: why.to_owned(),
            },
        );
    }
}
