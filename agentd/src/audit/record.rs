//! The record type shared by the writer and, later, verify/tail/replay.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
    WouldDeny,
    Kill,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub ts: String,
    pub run: String,
    pub layer: String,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decision: Option<Decision>,
    /// Event-specific fields, flattened into the same JSON object.
    #[serde(flatten)]
    pub detail: Map<String, Value>,
}
