//! The record type shared by the writer and verify/tail/show/replay: the core fields and
//! the event's as a map. [`Record::audit_event`] reads the event part as the typed
//! [`AuditEvent`] (this version's schema; a record of another version may not fit it).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::event::AuditEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
    WouldDeny,
    Kill,
}

impl Decision {
    /// The serialized name (`"allow"`, `"would_deny"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::WouldDeny => "would_deny",
            Decision::Kill => "kill",
        }
    }
}

#[allow(dead_code)] // read by tests and by callers that want typed records
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// The previous record's `hash` (for seq 0: the genesis value, see `chain`).
    #[serde(default)]
    pub prev: String,
    pub ts: String,
    pub run: String,
    pub layer: String,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decision: Option<Decision>,
    /// Event-specific fields, flattened into the same JSON object.
    #[serde(flatten)]
    pub detail: Map<String, Value>,
    /// SHA-256 of the record's canonical encoding without `hash` (see `canonical`).
    #[serde(default)]
    pub hash: String,
}

impl Record {
    /// The record's event, typed.
    #[allow(dead_code)] // readers that want the typed event; the round-trip test
    pub fn audit_event(&self) -> Result<AuditEvent, serde_json::Error> {
        let mut fields = self.detail.clone();
        fields.insert("event".into(), Value::String(self.event.clone()));
        serde_json::from_value(Value::Object(fields))
    }
}
