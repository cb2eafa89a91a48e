//! The audit log: one JSON object per line, one file for the host, runs told
//! apart by `run`. Every record has `seq`, `ts`, `run`, `layer` and `event`;
//! `decision` is present where one was made.

mod record;
mod time;
mod writer;

pub use record::{Decision, Record};
pub use time::rfc3339_now;
pub use writer::{AuditLog, DEFAULT_AUDIT_PATH};
