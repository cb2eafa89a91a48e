//! Asynchronous reader of the `EVENTS` ring buffer.
//!
//! The programs commit most records without waking the reader (see
//! `agentd_common::EVENTS_WAKE_BYTES`), so the reader also looks at the ring every
//! [`EVENTS_POLL_MS`] milliseconds.

use std::time::Duration;

use agentd_common::EVENTS_POLL_MS;
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::time::{Interval, MissedTickBehavior};

use crate::events::Event;

/// Decoded events from the `EVENTS` ring buffer, in the order the kernel committed them.
///
/// Obtained from [`super::BpfRuntime::take_events`]. Records that fail to decode (which
/// would mean the two sides disagree on the layout) are logged and counted in
/// [`EventStream::malformed`], never silently skipped.
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Ticks every [`EVENTS_POLL_MS`]: records committed without a wake-up.
    poll: Interval,
    malformed: u64,
}

impl EventStream {
    /// Registers the ring with the current tokio reactor (which must have its timer
    /// enabled too); on failure hands the ring back.
    pub(super) fn new(
        ring: RingBuf<MapData>,
    ) -> Result<Self, Box<(RingBuf<MapData>, std::io::Error)>> {
        // The RingBuf owns its map's fd (MapData holds an OwnedFd) and is never swapped
        // out of the AsyncFd (get_mut is only used to read records).
        // SAFETY: so the fd stays open and the same for as long as the AsyncFd lives.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|error| Box::new(error.into_parts()))?;
        let mut poll = tokio::time::interval(Duration::from_millis(EVENTS_POLL_MS));
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self {
            ring,
            poll,
            malformed: 0,
        })
    }

    /// The next event, waiting for one if the ring is empty. `None` only if waiting on
    /// the ring buffer's file descriptor fails (logged).
    ///
    /// Cancel-safe (usable in `tokio::select!`): the only await point is the wait for a
    /// wake-up or the poll tick; a record is taken from the ring only once it is about to
    /// be returned.
    pub async fn next(&mut self) -> Option<Event> {
        let Self {
            ring,
            poll,
            malformed,
        } = self;
        loop {
            if let Some(event) = pop(ring.get_mut(), malformed) {
                return Some(event);
            }
            tokio::select! {
                ready = ring.readable_mut() => match ready {
                    // Readiness is cleared before the ring is read again at the top of
                    // the loop, so a wake-up for a record committed after that read
                    // makes the next wait return at once.
                    Ok(mut guard) => guard.clear_ready(),
                    Err(error) => {
                        tracing::error!(%error, map = agentd_common::names::MAP_EVENTS, "waiting for bpf events failed");
                        return None;
                    }
                },
                _ = poll.tick() => {}
            }
        }
    }

    /// Everything currently in the ring, without waiting (for the end of a run).
    pub fn drain(&mut self) -> Vec<Event> {
        let Self {
            ring, malformed, ..
        } = self;
        let ring = ring.get_mut();
        let mut events = Vec::new();
        while let Some(event) = pop(ring, malformed) {
            events.push(event);
        }
        events
    }

    /// Records that could not be decoded so far (each one is also logged).
    #[cfg(test)]
    pub fn malformed(&self) -> u64 {
        self.malformed
    }
}

/// The next decodable record, or `None` when the ring is empty.
fn pop(ring: &mut RingBuf<MapData>, malformed: &mut u64) -> Option<Event> {
    loop {
        let item = ring.next()?;
        match Event::from_record(&item) {
            Ok(event) => return Some(event),
            Err(error) => {
                *malformed += 1;
                tracing::error!(%error, map = agentd_common::names::MAP_EVENTS, "undecodable bpf event record");
            }
        }
    }
}
