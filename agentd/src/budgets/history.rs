//! A compact per-interval history of a budget counter, written into `run_end`
//! (`budgets.NAME.history`), so that `agentd audit replay` can judge a rate form
//! (`syscalls: 50000/1s`) with a window the recorded run did not use.
//!
//! Format: `{"interval_ms": I, "counts": [c0, c1, …]}`: `c_k` is what the counter grew by
//! in the ticks that fell in `[k·I, (k+1)·I)` ms after the command started. It starts at
//! [`FIRST_INTERVAL_MS`]; when the run outlasts [`MAX_BUCKETS`] intervals, neighbouring
//! buckets are merged and the interval doubles, so the record stays small
//! (at most `MAX_BUCKETS` numbers per budget) however long the run.
//!
//! From such a history the highest use within any window of `W` ms is bounded, not known
//! exactly: see [`window_bounds`].

use crate::audit::event::BudgetHistory;

pub const FIRST_INTERVAL_MS: u64 = 100;
pub const MAX_BUCKETS: usize = 2048;

#[derive(Debug, Clone)]
pub struct History {
    interval_ms: u64,
    counts: Vec<u64>,
    /// The cumulative counter at the last observation.
    counter: u64,
}

impl Default for History {
    fn default() -> Self {
        Self {
            interval_ms: FIRST_INTERVAL_MS,
            counts: Vec::new(),
            counter: 0,
        }
    }
}

impl History {
    /// Adds what the cumulative `counter` grew by since the last call to the bucket of
    /// `at_ms` (milliseconds since the command started).
    pub fn observe(&mut self, at_ms: u64, counter: u64) {
        let delta = counter.saturating_sub(self.counter);
        self.counter = self.counter.max(counter);
        while at_ms / self.interval_ms >= MAX_BUCKETS as u64 {
            self.coarsen();
        }
        let k = (at_ms / self.interval_ms) as usize;
        if self.counts.len() <= k {
            self.counts.resize(k + 1, 0);
        }
        self.counts[k] = self.counts[k].saturating_add(delta);
    }

    fn coarsen(&mut self) {
        self.interval_ms *= 2;
        self.counts = self
            .counts
            .chunks(2)
            .map(|c| c.iter().fold(0u64, |a, b| a.saturating_add(*b)))
            .collect();
    }

    /// The history as `run_end` records it.
    pub fn record(&self) -> BudgetHistory {
        BudgetHistory {
            interval_ms: self.interval_ms,
            counts: self.counts.clone(),
        }
    }
}

/// `(lo, hi)`: bounds on the highest use within any window of `window_ms`, from buckets of
/// `interval_ms`. Any `⌊W/I⌋` neighbouring buckets fit in one window, so their largest sum
/// is a lower bound; any window touches at most `⌈W/I⌉ + 1` neighbouring buckets, so their
/// largest sum is an upper bound.
pub fn window_bounds(interval_ms: u64, counts: &[u64], window_ms: u64) -> (u64, u64) {
    let interval = interval_ms.max(1);
    let lo_k = (window_ms / interval) as usize;
    let hi_k = window_ms.div_ceil(interval) as usize + 1;
    (max_run_sum(counts, lo_k), max_run_sum(counts, hi_k))
}

/// The largest sum of `k` neighbouring entries (all of them when `k` ≥ the length).
fn max_run_sum(counts: &[u64], k: usize) -> u64 {
    if k == 0 {
        return 0;
    }
    if k >= counts.len() {
        return counts.iter().fold(0u64, |a, b| a.saturating_add(*b));
    }
    let mut sum: u64 = counts[..k].iter().sum();
    let mut best = sum;
    for i in k..counts.len() {
        sum = sum + counts[i] - counts[i - k];
        best = best.max(sum);
    }
    best
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_what_the_counter_grew_by() {
        let mut h = History::default();
        h.observe(20, 5);
        h.observe(90, 7);
        h.observe(120, 7);
        h.observe(350, 10);
        assert_eq!(
            serde_json::to_value(h.record()).unwrap(),
            serde_json::json!({"interval_ms": 100, "counts": [7, 0, 0, 3]})
        );
    }

    #[test]
    fn a_long_run_coarsens_instead_of_growing() {
        let mut h = History::default();
        let mut c = 0;
        for t in (0..(MAX_BUCKETS as u64 * 100 * 3)).step_by(20) {
            c += 1;
            h.observe(t, c);
        }
        let BudgetHistory {
            interval_ms,
            counts,
        } = h.record();
        assert_eq!(interval_ms, 400);
        assert!(counts.len() <= MAX_BUCKETS);
        assert_eq!(counts.iter().sum::<u64>(), c);
    }

    #[test]
    fn window_bounds_bracket_the_peak() {
        // 100 ms buckets; a burst of 30 straddling two buckets.
        let counts = [0, 10, 20, 0, 5];
        assert_eq!(window_bounds(100, &counts, 100), (20, 30));
        assert_eq!(window_bounds(100, &counts, 200), (30, 30));
        assert_eq!(window_bounds(100, &counts, 150), (20, 30));
        assert_eq!(window_bounds(100, &counts, 50), (0, 30));
        assert_eq!(window_bounds(100, &counts, 10_000), (35, 35));
    }
}
