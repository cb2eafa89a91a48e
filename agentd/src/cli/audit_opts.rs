//! The audit options of `agentd run`: signing key, checkpoint cadence, flush policy.
//!
//! Signing is required. Without `--signing-key` (or `AGENTD_SIGNING_KEY`) the run signs
//! with the host key, `audit.key` in `$AGENTD_KEY_DIR` or `/var/lib/agentd`, and makes
//! that key on first use: a fresh host needs no `agentd keygen` before its first run. The
//! generation is said on stderr and in `run_start` (`signing_key.generated`). A key path
//! given explicitly is never created: if it is missing, `agentd run` fails closed (exit 125)
//! unless `--unsigned-audit` is given, which `run_start` records (`"signed": false`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::audit::{keys, CheckpointPolicy, Flush};

#[derive(Args, Debug, Clone)]
pub struct AuditRunArgs {
    /// Ed25519 secret key that signs audit checkpoints (see `agentd keygen`). Default: the
    /// host key, audit.key in $AGENTD_KEY_DIR or /var/lib/agentd, made on first use.
    #[arg(long, env = "AGENTD_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
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
    /// Which key signs, for `run_start`; `None` when unsigned.
    pub signing_key: Option<crate::audit::event::SigningKeyUsed>,
    pub flush: Flush,
    /// How often the ring buffer's drop counters are read during the run.
    pub dropped_poll: Duration,
}

impl AuditSetup {
    /// `run_start.signing_key`: `{path, public_key, generated}`, or null when unsigned.
    #[cfg(test)]
    pub fn signing_key_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.signing_key).unwrap_or_default()
    }
}

impl AuditRunArgs {
    pub fn load(&self) -> Result<AuditSetup, String> {
        let (checkpoints, signing_key) = if self.unsigned_audit {
            tracing::warn!("audit: --unsigned-audit: checkpoints are not signed");
            (None, None)
        } else {
            let host = self.signing_key()?;
            let info = crate::audit::event::SigningKeyUsed {
                path: host.path.display().to_string(),
                public_key: keys::key_hex(&host.key.verifying_key()),
                generated: host.generated,
            };
            if info.generated {
                eprintln!(
                    "agentd: audit: no host signing key yet: generated {} (public key {}, also in {})",
                    info.path,
                    info.public_key,
                    std::path::Path::new(&info.path)
                        .with_file_name(keys::PUBLIC_FILE)
                        .display()
                );
            }
            let checkpoints = CheckpointPolicy {
                key: host.key,
                every: self.checkpoint_every.max(1),
                interval: Duration::from_secs(self.checkpoint_secs.max(1)),
            };
            (Some(checkpoints), Some(info))
        };
        Ok(AuditSetup {
            checkpoints,
            signing_key,
            flush: self.audit_flush,
            dropped_poll: Duration::from_millis(self.dropped_poll_ms.max(1)),
        })
    }

    /// The key given with --signing-key (never created), else the host key (created if
    /// there is none yet).
    fn signing_key(&self) -> Result<keys::HostKey, String> {
        let hint = "(create one with `agentd keygen`, or pass --unsigned-audit)";
        match &self.signing_key {
            Some(path) => keys::load_signing_key(path)
                .map(|key| keys::HostKey {
                    key,
                    path: path.clone(),
                    generated: false,
                })
                .map_err(|e| format!("{e} {hint}")),
            None => keys::host_key(&keys::host_key_dir()).map_err(|e| match e {
                keys::KeyError::OrphanPublic { .. } => e.to_string(),
                _ => format!("{e} {hint}"),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn args(signing_key: Option<PathBuf>) -> AuditRunArgs {
        AuditRunArgs {
            signing_key,
            unsigned_audit: false,
            checkpoint_every: 1000,
            checkpoint_secs: 10,
            audit_flush: Flush::EveryRecord,
            dropped_poll_ms: 1000,
        }
    }

    #[test]
    fn an_explicit_missing_key_is_refused_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("audit.key");
        let e = args(Some(key.clone())).load().unwrap_err();
        assert!(
            e.starts_with(&format!("cannot read key {}: ", key.display())),
            "{e}"
        );
        assert!(e.ends_with("(create one with `agentd keygen`, or pass --unsigned-audit)"));
        assert!(!key.exists());
        assert!(!dir.path().join("audit.pub").exists());
    }

    #[test]
    fn an_explicit_key_is_recorded_as_not_generated() {
        let dir = tempfile::tempdir().unwrap();
        let vk = keys::generate(dir.path(), false).unwrap();
        let key = dir.path().join(keys::SECRET_FILE);
        let setup = args(Some(key.clone())).load().unwrap();
        assert_eq!(
            setup.signing_key_json(),
            serde_json::json!({"path": key, "public_key": keys::key_hex(&vk), "generated": false})
        );
        let mut unsigned = args(Some(key));
        unsigned.unsigned_audit = true;
        assert_eq!(
            unsigned.load().unwrap().signing_key_json(),
            serde_json::Value::Null
        );
    }
}
