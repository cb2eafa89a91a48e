//! What the daemon keeps on disk so that a restarted daemon can take over:
//!
//! - `STATE_DIR/runs/<run>.json`, one per live run, written before the run's command
//!   starts and refreshed about once a second (budgets so far);
//! - `STATE_DIR/policies/<sha256>.yaml`, the policy text of live runs, which their state
//!   files name by hash (`daemon::policies`);
//! - `STATE_DIR/daemon.json`: the daemon's pid, a heartbeat (to tell how long it was
//!   down), the ring-buffer drops already written to the chain, and its restarts.
//!
//! Files are written to a temporary name and renamed, so a crash leaves the old or the
//! new version, never half of one; they are readable by root only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::budgets::Progress;
use crate::layers::bpf::RunBpfState;
use crate::supervisor::UserSpec;

/// The layout of the state files this daemon writes.
pub const STATE_VERSION: u32 = 1;

/// One live run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub version: u32,
    pub id: String,
    pub user: UserSpec,
    /// The peer that started it (pid at the time).
    pub client_pid: i32,
    /// The command's pid, once it runs.
    pub pid: Option<u32>,
    /// Every cgroup directory of the run, `(hierarchy, path)`, the v2 identity first.
    pub cgroups: Vec<(String, PathBuf)>,
    pub bpf: RunBpfState,
    /// The eBPF object the slot belongs to (its pin directory).
    pub object_id: String,
    pub policy_origin: String,
    /// Kept in `policies/<policy_hash>.yaml`, not in the state file: read back from
    /// there at re-adoption (a state file of an older daemon may still carry it).
    #[serde(default, skip_serializing)]
    pub policy_text: String,
    pub policy_hash: String,
    pub workspace: PathBuf,
    pub home: PathBuf,
    pub cwd: PathBuf,
    pub argv: Vec<String>,
    pub dns_upstream: Vec<String>,
    pub detach: bool,
    /// Wall-clock start (ms since the epoch), for the budgets of a re-adopted run.
    pub started_unix_ms: u64,
    /// How far the budgets have gone.
    pub budgets: Progress,
    pub denials: u64,
    /// An attached workload (`agentd attach`): what was named. Its cgroup is recorded
    /// as `attached` in `cgroups` and never removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<String>,
}

impl RunState {
    /// The state of run `id` before anything of it exists: no pid, cgroups, slot or
    /// budget progress yet, started now. Callers fill in what the request says.
    pub fn unstarted(id: &str, user: UserSpec, client_pid: i32, object_id: &str) -> Self {
        Self {
            version: STATE_VERSION,
            id: id.to_owned(),
            user,
            client_pid,
            pid: None,
            cgroups: Vec::new(),
            bpf: RunBpfState::default(),
            object_id: object_id.to_owned(),
            policy_origin: String::new(),
            policy_text: String::new(),
            policy_hash: String::new(),
            workspace: PathBuf::new(),
            home: PathBuf::new(),
            cwd: PathBuf::new(),
            argv: Vec::new(),
            dns_upstream: Vec::new(),
            detach: false,
            started_unix_ms: now_unix_ms(),
            budgets: Progress::default(),
            denials: 0,
            attached: None,
        }
    }
}

/// The daemon itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonState {
    pub pid: u32,
    pub started_unix_ms: u64,
    /// Updated every second: a restarted daemon knows when its predecessor stopped.
    pub heartbeat_unix_ms: u64,
    /// Ring-buffer drops already written as `dropped` records.
    pub drops_reported: u64,
    pub restarts: u64,
}

/// A state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}", path = .path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("policy hash `{hash}` is not a SHA-256 in hex")]
    PolicyHash { hash: String },
    #[error("{path}: the policy file no longer matches its hash", path = .path.display())]
    PolicyChanged { path: PathBuf },
}

/// Milliseconds since the epoch, now.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes `value` to `path` atomically (mode 0600): a temporary file renamed over it.
///
/// Not fsynced. These files let the next daemon re-adopt runs after this daemon's
/// *process* ends (a crash, a SIGKILL, a restart), and the page cache outlives a
/// process; a host crash or power loss ends every run with it, leaving nothing to
/// re-adopt. An fdatasync here cost 0.4-0.6 ms twice per launch, and 2 ms of disk flush
/// every heartbeat second, where `/run` is on disk (measured with strace on this
/// project's build machine).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let text = serde_json::to_vec_pretty(value).map_err(|source| StateError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    write_private(path, &text)
}

/// Writes `bytes` to `path` atomically (mode 0600), as [`write_json`] does.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Removes the file at `path`; one that is already gone is no error (a restarted daemon
/// may have swept it), any other failure is logged: the caller is cleaning up.
pub fn remove_if_present(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("remove {}: {e}", path.display());
        }
    }
}

/// Reads a JSON state file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, StateError> {
    let text = std::fs::read(path).map_err(|source| StateError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| StateError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// The state file of run `id` under `runs_dir`.
pub fn run_path(runs_dir: &Path, id: &str) -> PathBuf {
    runs_dir.join(format!("{id}.json"))
}

/// Every run state file under `runs_dir`, with what could not be read.
pub fn list_runs(runs_dir: &Path) -> Vec<(PathBuf, Result<RunState, StateError>)> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let r = read_json(&p);
            (p, r)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The text is left out of a state file; one from an older daemon, which carries
    /// it, still reads.
    #[test]
    fn a_run_state_names_its_policy_by_hash() {
        let user = UserSpec::parse("root").unwrap();
        let mut run = RunState::unstarted("r1", user, 1, "obj");
        run.policy_text = "version: 1\nname: big\n".into();
        run.policy_hash = "ab".repeat(32);
        let mut json = serde_json::to_value(&run).unwrap();
        assert!(json.get("policy_text").is_none(), "{json:#}");
        assert_eq!(json["policy_hash"], run.policy_hash);
        let back: RunState = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back.policy_text, "");
        json["policy_text"] = "version: 1\nname: old\n".into();
        let old: RunState = serde_json::from_value(json).unwrap();
        assert_eq!(old.policy_text, "version: 1\nname: old\n");
    }

    #[test]
    fn state_files_round_trip_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.json");
        let s = DaemonState {
            pid: 7,
            drops_reported: 3,
            ..DaemonState::default()
        };
        write_json(&path, &s).unwrap();
        assert_eq!(read_json::<DaemonState>(&path).unwrap(), s);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            list_runs(dir.path()).len() == 1,
            "daemon.json is listed as a .json"
        );
    }
}
