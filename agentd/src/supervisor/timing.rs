//! How long each phase of a launch took, logged at debug level
//! (`AGENTD_LOG=agentd=debug`), so that a slow launch can be taken apart without a
//! tracer (strace's own cost hides what it measures here).

use std::time::{Duration, Instant};

/// The phases of one launch, in order, each with its duration.
pub struct PhaseTimer {
    last: Instant,
    phases: Vec<(&'static str, Duration)>,
}

impl PhaseTimer {
    pub fn start() -> Self {
        Self {
            last: Instant::now(),
            phases: Vec::with_capacity(12),
        }
    }

    /// Ends the phase `name` (it began where the previous one ended).
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.phases.push((name, now - self.last));
        self.last = now;
    }

    /// `name 1.2ms, name 0.3ms, ...: total 1.5ms`.
    pub fn summary(&self) -> String {
        let total: Duration = self.phases.iter().map(|(_, d)| *d).sum();
        let parts: Vec<String> = self
            .phases
            .iter()
            .map(|(n, d)| format!("{n} {:.2}ms", d.as_secs_f64() * 1e3))
            .collect();
        format!(
            "{}: total {:.2}ms",
            parts.join(", "),
            total.as_secs_f64() * 1e3
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_phase_in_order_and_the_total() {
        let mut t = PhaseTimer::start();
        t.mark("one");
        t.mark("two");
        let s = t.summary();
        let one = s.find("one ").expect("one");
        let two = s.find("two ").expect("two");
        assert!(one < two, "{s}");
        assert!(s.contains(": total "), "{s}");
    }
}
