//! The audit options of `agentd run`: signing key, checkpoint cadence, flush policy.
//!
//! Signing is required: without a key `agentd run` fails closed (exit 125) unless
//! `--unsigned-audit` is given, which is recorded in `run_start` (`"signed": false`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::audit::{keys, CheckpointPolicy, Flush};

#[derive(Args, Debug, Clone)]
pub struct AuditRunArgs {
    /// Ed25519 secret key that signs audit checkpoints (see `agentd keygen`).
    #[arg(
        long,
        env = "AGENTD_SIGNING_KEY",
        default_value = "/var/lib/agentd/audit.key"
    )]
    signing_key: PathBuf,
    /// Write an audit log without signed checkpoints instead of refusing to run.
    #[arg(long, env = "AGENTD_UNSIGNED_AUDIT")]
    unsigned_audit: bool,
    /// Write a signed checkpoint after this many records.
    #[arg(long, env = "AGENTD_CHECKPOINT_EVERY", default_value_t = 1000)]
    checkpoint_every: u64,
    /// Write a signed checkpoint at least this often (seconds) while records arrive.
    #[arg(long, env = "AGENTD_CHECKPOINT_SECS", default_value_t = 10)]
    checkpoint_secs: u64,
    /// Non-durable records: `every` (fsync each) or `<N>ms` (batch). Denials and
    /// run_start/run_end are always fsync'd before they are acknowledged.
    #[arg(long, env = "AGENTD_AUDIT_FLUSH", default_value = "50ms")]
    audit_flush: Flush,
    /// Read the kernel ring buffer's per-CPU drop counters this often (milliseconds) while
    /// the run goes on, and write a `dropped` record whenever they grew.
    #[arg(long, env = "AGENTD_DROPPED_POLL_MS", default_value_t = 1000)]
    dropped_poll_ms: u64,
}

/// What the run's audit writer needs, checked before anything runs.
#[derive(Debug, Clone)]
pub struct AuditSetup {
    pub checkpoints: Option<CheckpointPolicy>,
    pub flush: Flush,
    /// How often the ring buffer's drop counters are read during the run.
    pub dropped_poll: Duration,
}

impl AuditRunArgs {
    pub fn load(&self) -> Result<AuditSetup, String> {
        let checkpoints = if self.unsigned_audit {
            tracing::warn!("audit: --unsigned-audit: checkpoints are not signed");
            None
        } else {
            let key = keys::load_signing_key(&self.signing_key).map_err(|e| {
                format!("{e} (create one with `agentd keygen`, or pass --unsigned-audit)")
            })?;
            Some(CheckpointPolicy {
                key,
                every: self.checkpoint_every.max(1),
                interval: Duration::from_secs(self.checkpoint_secs.max(1)),
            })
        };
        Ok(AuditSetup {
            checkpoints,
            flush: self.audit_flush,
            dropped_poll: Duration::from_millis(self.dropped_poll_ms.max(1)),
        })
    }
}
