//! Rate forms (`execs: 100/1h`): the use within a sliding window, from a counter that
//! agentd samples every tick.
//!
//! The window keeps one sample per tick, so its memory is `window / TICK` samples at
//! most (an hour at 20 ms is 180,000 samples of 16 bytes); the figure is exact up to
//! one tick at each end of the window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct SlidingWindow {
    length: Duration,
    /// (when, counter), oldest first; the front is the newest sample at or before
    /// `now - length` (or the first sample while the window is still filling).
    samples: VecDeque<(Instant, u64)>,
    /// Highest use in any window so far.
    peak: u64,
}

impl SlidingWindow {
    pub fn new(length: Duration, start: Instant) -> Self {
        Self {
            length,
            samples: VecDeque::from([(start, 0)]),
            peak: 0,
        }
    }

    /// Records `counter` (monotonic) at `now`; returns the use within the last window.
    pub fn observe(&mut self, now: Instant, counter: u64) -> u64 {
        self.samples.push_back((now, counter));
        let horizon = now.checked_sub(self.length);
        // Drop the front while the sample after it is still at or before the horizon.
        while let (Some(h), Some(&(second, _))) = (horizon, self.samples.get(1)) {
            if second > h {
                break;
            }
            self.samples.pop_front();
        }
        let base = self.samples.front().map_or(0, |&(_, c)| c);
        let used = counter.saturating_sub(base);
        self.peak = self.peak.max(used);
        used
    }

    pub fn peak(&self) -> u64 {
        self.peak
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_last_window() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut w = SlidingWindow::new(Duration::from_secs(1), t0);
        assert_eq!(w.observe(s(100), 10), 10);
        assert_eq!(w.observe(s(900), 50), 50);
        // At 1.5 s the window starts at 0.5 s: the newest sample at or before is 100 ms (10).
        assert_eq!(w.observe(s(1500), 60), 50);
        // At 2.5 s the base is the 1.5 s sample (60).
        assert_eq!(w.observe(s(2500), 65), 5);
        assert_eq!(w.peak(), 50);
        assert!(w.samples.len() <= 3);
    }
}
