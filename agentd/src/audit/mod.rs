//! The audit log: one JSON object per line, one file for the host, runs told apart by
//! `run`. Every record has `seq`, `prev`, `hash`, `ts`, `run`, `layer` and `event`;
//! `decision` is present where one was made. Records form a SHA-256 hash chain
//! (`canonical`, `chain`), signed by Ed25519 checkpoints (`keys`); `verify` checks it,
//! `judge` re-decides recorded events under another policy. `event` is the schema: one
//! typed [`AuditEvent`] for every record agentd writes.

pub mod canonical;
pub mod chain;
pub mod denial;
pub mod dropped;
pub mod event;
pub mod judge;
pub mod keys;
mod record;
pub mod task;
mod time;
pub mod verify;
mod writer;

pub use event::{AuditEvent, Entry};
#[allow(unused_imports)] // Record: the type readers deserialize into
pub use record::{Decision, Record};
pub use task::{AuditHandle, AuditWriter, Flush};
pub use time::rfc3339_now;
pub use writer::{AuditError, AuditLog, CheckpointPolicy, DEFAULT_AUDIT_PATH};
