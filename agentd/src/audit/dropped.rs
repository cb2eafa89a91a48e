//! `dropped` records: kernel events lost because a ring buffer was full.
//!
//! The eBPF side counts every failed ring reservation in a per-CPU counter. agentd reads
//! the sum while the run goes on (every `AuditSetup::dropped_poll`) and once more at the
//! end, and writes a `dropped` record whenever it grew:
//!
//! ```text
//! {"event":"dropped","count":<new since the last record>,"total":<all so far>,"source":"ring buffer"}
//! ```
//!
//! So a gap shows up in the chain near where it happened, not only at run end, and the
//! `count`s of a run add up to its last `total`.

use std::time::{Duration, Instant};

use super::event::Dropped;

#[derive(Debug)]
pub struct DropReporter {
    source: &'static str,
    every: Duration,
    last_poll: Instant,
    reported: u64,
}

impl DropReporter {
    pub fn new(source: &'static str, every: Duration) -> Self {
        Self {
            source,
            every,
            last_poll: Instant::now(),
            reported: 0,
        }
    }

    /// A reporter that already wrote `reported` drops (a restarted daemon: the kernel's
    /// counters are pinned and keep counting across restarts).
    pub fn with_reported(mut self, reported: u64) -> Self {
        self.reported = reported;
        self
    }

    /// Drops written to the chain so far.
    pub fn reported(&self) -> u64 {
        self.reported
    }

    /// Whether a periodic poll is due. The caller checks after every wake-up (a busy
    /// event stream may keep its timer from firing).
    pub fn due(&self) -> bool {
        self.last_poll.elapsed() >= self.every
    }

    pub fn every(&self) -> Duration {
        self.every
    }

    /// The `dropped` record for what `total` (the counter's current sum) adds to what
    /// was already reported; `None` when nothing new was lost.
    pub fn observe(&mut self, total: u64) -> Option<Dropped> {
        self.last_poll = Instant::now();
        let count = total.checked_sub(self.reported).filter(|&n| n > 0)?;
        self.reported = total;
        Some(Dropped {
            count,
            total: Some(total),
            source: self.source.into(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reports_deltas_with_a_running_total() {
        let mut d = DropReporter::new("ring buffer", Duration::from_secs(1));
        assert_eq!(d.observe(0), None);
        let r = d.observe(5).unwrap();
        assert_eq!((r.count, r.total), (5, Some(5)));
        assert_eq!(d.observe(5), None);
        let r = d.observe(12).unwrap();
        assert_eq!((r.count, r.total), (7, Some(12)));
        assert_eq!(r.source, "ring buffer");
        assert!(!d.due());
    }
}
