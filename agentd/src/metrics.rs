//! The process's Prometheus metrics. Counters that code paths move (decisions, denials,
//! audit appends) live here, process-wide, so the audit writer and the run supervisors
//! move them without a handle threaded through; what is a state rather than an event
//! (runs, budgets, programs, ring drops) is read when the endpoint is scraped
//! (`daemon::metrics`).
//!
//! Labels stay bounded: layer names, verdicts, record kinds, budget names and the ids of
//! live runs. Never a path or an argv.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::audit::{AuditEvent, Decision};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub layer: String,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// The counters of the process.
#[derive(Debug)]
pub struct Metrics {
    /// Audit records with a decision, by layer and verdict.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Records that refused, killed or would have refused, by what kind of rule.
    pub denials: Family<KindLabels, Counter>,
    /// One write (and fsync when asked) of a batch of records to the audit file.
    pub audit_append: Histogram,
    pub audit_fsync_failures: Counter,
}

/// The metrics of this process.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        decisions: Family::default(),
        denials: Family::default(),
        // 50µs .. ~1.6s: an append is a write plus, for durable records, an fsync.
        audit_append: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        audit_fsync_failures: Counter::default(),
    })
}

impl Metrics {
    /// Counts one record submitted to the chain.
    /// `name` is the record's `event` tag.
    pub fn record(&self, layer: &str, decision: Option<Decision>, event: &AuditEvent, name: &str) {
        let Some(decision) = decision else {
            return;
        };
        self.decisions
            .get_or_create(&DecisionLabels {
                layer: layer.to_owned(),
                verdict: decision.as_str(),
            })
            .inc();
        if matches!(decision, Decision::Allow) {
            return;
        }
        let kind = match event {
            AuditEvent::Denied(d) => d.kind().as_str().to_owned(),
            _ => name.to_owned(),
        };
        self.denials.get_or_create(&KindLabels { kind }).inc();
    }

    /// Registers the counters in `registry` (whose prefix is `agentd`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "decisions",
            "Audit records with a decision, by layer and verdict",
            self.decisions.clone(),
        );
        registry.register(
            "denials",
            "Refusals, kills and would-be refusals, by kind of rule",
            self.denials.clone(),
        );
        registry.register_with_unit(
            "audit_append_duration",
            "Time to write (and fsync) one batch of audit records",
            Unit::Seconds,
            self.audit_append.clone(),
        );
        registry.register(
            "audit_fsync_failures",
            "Failed fsyncs of the audit log",
            self.audit_fsync_failures.clone(),
        );
    }
}
