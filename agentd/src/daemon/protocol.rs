//! The control protocol (version 1): JSON lines over a unix stream socket. Documented in
//! `docs/protocol.md`; this module is its one definition.
//!
//! A client sends one request line (with stdin, stdout and stderr attached as SCM_RIGHTS
//! for `run`), then reads response lines. On a `run` or `wait` connection the client may
//! send `signal` lines while the run goes on; closing the connection kills the run unless
//! it was started detached.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The protocol version this daemon speaks.
pub const VERSION: u32 = 1;

/// A request line is at most this long by default (`max_request_bytes` in the config).
pub const DEFAULT_MAX_REQUEST: usize = 1 << 20;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Must be [`VERSION`].
    pub v: u32,
    /// A scoped capability token (`agentd token create`): the request is then judged
    /// by it, not by the peer's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(flatten)]
    pub op: Op,
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Start a run (stdin, stdout, stderr attached). Responses: `started`, then `exited`.
    Run(Box<RunRequest>),
    /// Follow a run to its end (after a daemon restart, or a detached run).
    Wait {
        run: String,
    },
    /// Forward a signal to the run of this connection (`SIGINT`, `SIGTERM`, `SIGHUP`).
    Signal {
        signal: String,
    },
    /// The runs the caller may see.
    Ps,
    Stop {
        run: String,
    },
    Pause {
        run: String,
    },
    Resume {
        run: String,
    },
    /// The run's audit records; with `follow`, new ones as they are written.
    Logs {
        run: String,
        #[serde(default)]
        follow: bool,
    },
    /// Daemon health.
    Status,
    /// Mint a token for one run (root, or the run's owner).
    TokenCreate {
        run: String,
        allow: Vec<String>,
        ttl_secs: u64,
    },
    /// Revoke a token by id (root, or whoever minted it).
    TokenRevoke {
        id: String,
    },
    /// Put an existing workload under a policy (root only). Responses: `message` lines
    /// (what is enforced, audited, not applied), then `started`.
    Attach(AttachRequest),
    /// End an attached run; the workload keeps running. Response: `done`.
    Detach {
        run: String,
    },
}

/// An `attach` request: exactly one of `cgroup`, `pid` and `container` names the
/// workload (the client resolves a container to its init pid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    pub policy: PolicySource,
    /// The directory `{workspace}` stands for (absolute).
    pub workspace: String,
    /// A v2 cgroup directory (absolute, or relative to the v2 mount).
    #[serde(default)]
    pub cgroup: Option<String>,
    /// A process: its v2 cgroup is confined.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The container the pid was resolved from, for `ps` and the records.
    #[serde(default)]
    pub container: Option<String>,
    /// Attach even when the cgroup holds processes outside the pid's tree.
    #[serde(default)]
    pub force: bool,
    /// Parts that cannot be applied to running processes and may be left out:
    /// `fs` (landlock), `syscalls` (seccomp), `caps`. `Some` (`--best-effort`) replaces
    /// the policy's `attach.best_effort`; `None` keeps it.
    #[serde(default)]
    pub best_effort: Option<Vec<String>>,
}

/// A `run` request: everything the command needs from the caller's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The policy text (the client reads the file as the caller) and where it came from;
    /// `None`: the built-in default preset.
    pub policy: Option<PolicySource>,
    /// The directory `{workspace}` stands for (absolute).
    pub workspace: String,
    /// The caller's working directory (absolute): the command starts there.
    pub cwd: String,
    /// The caller's home (what `~` stands for).
    pub home: String,
    /// The command and its arguments (UTF-8; the client refuses other bytes).
    pub argv: Vec<String>,
    /// The command's environment, `KEY=VALUE` each.
    pub env: Vec<String>,
    /// Upstream resolvers (`IP` or `IP:PORT`).
    #[serde(default)]
    pub dns_upstream: Vec<String>,
    /// The run outlives this connection.
    #[serde(default)]
    pub detach: bool,
    /// Whom to run as: only root may say (`--user`); a run of anyone else runs as its
    /// caller.
    #[serde(default)]
    pub user: Option<String>,
    /// The caller's file mode creation mask (0o000..=0o777): the command gets it, not the
    /// daemon's own. `None` (an older client): the daemon's.
    #[serde(default)]
    pub umask: Option<u32>,
}

/// A policy as the client read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySource {
    /// Where it was read (for errors and `run_start`).
    pub origin: String,
    pub text: String,
}

/// One response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Response {
    /// The run exists (before its set-up): its id, so that a client that loses the
    /// daemon from here on can follow the run through the next one.
    Accepted { run: String },
    /// The command runs.
    Started { run: String, pid: u32 },
    /// The run ended; `code` is what the client exits with.
    Exited {
        run: String,
        code: u8,
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        killed_by: Option<String>,
        /// Why the command never ran (exit 125/127).
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A line for the caller's stderr (what standalone agentd prints there).
    Message { text: String },
    /// The request was refused or failed; `code` is the exit status it means (125 for a
    /// run that could not be set up, 1 otherwise).
    Error {
        code: u8,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        layer: Option<String>,
    },
    /// `ps`.
    Runs { runs: Vec<RunInfo> },
    /// `stop`, `pause`, `resume`.
    Done { run: String, action: String },
    /// One audit record of `logs` (the line as written).
    Record { line: String },
    /// `status`.
    Status(Box<DaemonStatus>),
    /// `token_create`: the token (shown once; the audit log has only its id).
    Token {
        id: String,
        token: String,
        expires_unix: u64,
    },
}

/// One row of `agentd ps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run: String,
    pub uid: u32,
    pub pid: u32,
    pub policy: String,
    pub mode: String,
    pub uptime_ms: u64,
    /// Budget name → use.
    pub budgets: BTreeMap<String, BudgetUse>,
    pub denials: u64,
    pub detached: bool,
    /// Re-adopted after a daemon restart.
    pub adopted: bool,
    /// An attached workload (`agentd attach`): what was named, e.g. `container:web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<String>,
}

/// A budget's use for `ps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetUse {
    pub used: u64,
    pub limit: u64,
    pub unit: String,
}

/// `agentd status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub version: String,
    pub uptime_ms: u64,
    pub runs: usize,
    /// Global programs attached, with the runs holding each.
    pub programs: Vec<(String, u32)>,
    pub pin_dir: Option<String>,
    pub pinned_objects: usize,
    /// Map entries of all runs together (0 with no run, once idle net rule tables have
    /// lingered `programs_linger_ms`).
    pub map_entries: usize,
    /// Shared net rule tables no run holds, lingering for a run with the same rules.
    #[serde(default)]
    pub idle_net_tables: usize,
    /// Cgroup programs held on the daemon's empty keeper cgroup, which keeps the kernel's
    /// cgroup-BPF keys on between runs; they go with the lingering global programs.
    #[serde(default)]
    pub kept_cgroup_programs: usize,
    pub ring_dropped: u64,
    /// Events whose cgroup no run had subscribed (late events of ended runs).
    pub unrouted_events: u64,
    pub audit: String,
    pub audit_head_seq: Option<u64>,
    pub restarts: u64,
    pub adopted: usize,
}

/// Why a request line is not a request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("request is longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error("request is not UTF-8")]
    NotUtf8,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("protocol version {got} is not spoken here (this daemon speaks {VERSION})")]
    Version { got: u32 },
}

/// Parses one request line (without its newline). Never panics on any input.
pub fn parse_request(line: &[u8], limit: usize) -> Result<Request, ProtocolError> {
    if line.len() > limit {
        return Err(ProtocolError::TooLong { limit });
    }
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::NotUtf8)?;
    // The version first, so a client of another version gets that answer rather than
    // a complaint about a field it could not know.
    let probe: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let mut probe = match probe {
        serde_json::Value::Object(m) => m,
        _ => return Err(ProtocolError::Malformed("expected a JSON object".into())),
    };
    match probe
        .remove("v")
        .as_ref()
        .and_then(serde_json::Value::as_u64)
    {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(ProtocolError::Version {
                got: u32::try_from(v).unwrap_or(u32::MAX),
            })
        }
        None => return Err(ProtocolError::Malformed("missing field `v`".into())),
    }
    let token = match probe.remove("token") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(t),
        Some(_) => return Err(ProtocolError::Malformed("`token` must be a string".into())),
    };
    let op = serde_json::from_value(serde_json::Value::Object(probe))
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    Ok(Request {
        v: VERSION,
        token,
        op,
    })
}

/// A response as one line (newline included).
pub fn encode(r: &Response) -> Vec<u8> {
    let mut line = serde_json::to_vec(r).unwrap_or_else(|e| {
        // Every Response serializes; say so rather than panic if that ever changes.
        format!("{{\"event\":\"error\",\"code\":1,\"message\":\"encode: {e}\"}}").into_bytes()
    });
    line.push(b'\n');
    line
}

/// A request as one line (newline included).
pub fn encode_request(op: Op, token: Option<String>) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Request {
        v: VERSION,
        token,
        op,
    })
    .unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_round_trip() {
        for op in [
            Op::Ps,
            Op::Status,
            Op::Stop { run: "abc".into() },
            Op::Logs {
                run: "abc".into(),
                follow: true,
            },
            Op::Signal {
                signal: "SIGINT".into(),
            },
            Op::Run(Box::new(RunRequest {
                policy: Some(PolicySource {
                    origin: "/p.yaml".into(),
                    text: "version: 1\n".into(),
                }),
                workspace: "/w".into(),
                cwd: "/w".into(),
                home: "/home/u".into(),
                argv: vec!["true".into()],
                env: vec!["PATH=/usr/bin".into()],
                dns_upstream: vec![],
                detach: false,
                user: None,
                umask: Some(0o022),
            })),
        ] {
            let line = encode_request(op.clone(), Some("agt1.x.y".into()));
            let parsed = parse_request(&line[..line.len() - 1], DEFAULT_MAX_REQUEST).unwrap();
            assert_eq!(parsed.op, op);
            assert_eq!(parsed.token.as_deref(), Some("agt1.x.y"));
        }
    }

    #[test]
    fn bad_requests_say_why() {
        let p = |s: &str| parse_request(s.as_bytes(), 64).unwrap_err().to_string();
        assert_eq!(
            p(r#"{"v":2,"op":"ps"}"#),
            "protocol version 2 is not spoken here (this daemon speaks 1)"
        );
        assert_eq!(p(r#"{"op":"ps"}"#), "malformed request: missing field `v`");
        assert!(p("garbage").starts_with("malformed request: "));
        assert!(p(r#"{"v":1,"op":"launch"}"#).contains("unknown variant `launch`"));
        assert!(p(r#"{"v":1,"op":"stop"}"#).contains("missing field `run`"));
        assert_eq!(
            parse_request(&[b'x'; 65], 64).unwrap_err(),
            ProtocolError::TooLong { limit: 64 }
        );
        assert_eq!(
            parse_request(&[0xff, 0xfe], 64).unwrap_err(),
            ProtocolError::NotUtf8
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// Any bytes: an error or a request, never a panic.
        #[test]
        fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_request(&bytes, 256);
        }

        /// JSON-shaped input with the right version and random fields.
        #[test]
        fn json_shaped_input_parses_without_panicking(
            op in "[a-z_]{0,8}",
            key in "[a-z_]{0,8}",
            value in any::<i64>(),
            text in ".{0,40}",
        ) {
            let line = format!(r#"{{"v":1,"op":"{op}","{key}":{value},"run":{text:?}}}"#);
            let _ = parse_request(line.as_bytes(), DEFAULT_MAX_REQUEST);
        }
    }
}
