//! Asynchronous reader of the `EVENTS` ring buffer.

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::events::Event;

/// Decoded events from the `EVENTS` ring buffer, in the order the kernel committed them.
///
/// Obtained from [`super::BpfRuntime::take_events`]. Records that fail to decode (which
/// would mean the two sides disagree on the layout) are logged and counted in
/// [`EventStream::malformed`], never silently skipped.
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    malformed: u64,
}

impl EventStream {
    /// Registers the ring with the current tokio reactor; on failure hands the ring back.
    pub(super) fn new(
        ring: RingBuf<MapData>,
    ) -> Result<Self, Box<(RingBuf<MapData>, std::io::Error)>> {
        // The RingBuf owns its map's fd (MapData holds an OwnedFd) and is never swapped
        // out of the AsyncFd (get_mut is only used to read records).
        // SAFETY: so the fd stays open and the same for as long as the AsyncFd lives.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|error| Box::new(error.into_parts()))?;
        Ok(Self { ring, malformed: 0 })
    }

    /// The next event, waiting for one if the ring is empty. `None` only if waiting on
    /// the ring buffer's file descriptor fails (logged).
    ///
    /// Cancel-safe (usable in `tokio::select!`): the only await point is the readiness
    /// wait; a record is taken from the ring only once it is about to be returned.
    pub async fn next(&mut self) -> Option<Event> {
        let Self { ring, malformed } = self;
        loop {
            let mut guard = match ring.readable_mut().await {
                Ok(guard) => guard,
                Err(error) => {
                    tracing::error!(%error, map = agentd_common::names::MAP_EVENTS, "waiting for bpf events failed");
                    return None;
                }
            };
            if let Some(event) = pop(guard.get_inner_mut(), malformed) {
                return Some(event);
            }
            // Empty: wait for the kernel's next wake-up. Tokio only clears readiness it
            // observed before this point, so a record committed meanwhile is not missed.
            guard.clear_ready();
        }
    }

    /// Everything currently in the ring, without waiting (for the end of a run).
    pub fn drain(&mut self) -> Vec<Event> {
        let Self { ring, malformed } = self;
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
