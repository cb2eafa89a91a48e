//! The dedicated writer: one thread owns the `AuditLog` ([`AuditWriter`]); every run of
//! the process submits records to it through its own [`AuditHandle`], which stamps them
//! with the run's id, so one chain holds many runs.
//!
//! Durable records (every denial, kill, drop count, `run_start`, `run_end`) are written and
//! fsync'd before `record` returns. Other records are batched: written and fsync'd together
//! at most `Flush::Batch` later (or each at once with `Flush::EveryRecord`). A failed write
//! is reported by the next durable `record` (and by `finish`), so the run fails closed.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::event::AuditEvent;
use super::writer::{AuditError, AuditLog, Pending};
use super::Decision;

/// How non-durable records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Write and fsync each record as it comes.
    EveryRecord,
    /// Write and fsync what has accumulated at most this long after the first of it.
    Batch(Duration),
}

impl std::str::FromStr for Flush {
    type Err = String;
    /// `every` or `<N>ms`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "every" {
            return Ok(Flush::EveryRecord);
        }
        s.strip_suffix("ms")
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| Flush::Batch(Duration::from_millis(n)))
            .ok_or_else(|| format!("audit flush {s:?}: expected \"every\" or \"<N>ms\""))
    }
}

/// Records a run must not lose: fsync'd before they are acknowledged.
pub fn is_durable(event: &AuditEvent, decision: Option<Decision>) -> bool {
    matches!(decision, Some(Decision::Deny | Decision::Kill)) || event.is_durable()
}

enum Msg {
    /// Boxed: the queue's slots are allocated (and touched) up front, so a slot holds a
    /// pointer, not the whole record (65,536 inline records were 10.5 MiB of idle RSS).
    Record(Box<Pending>),
    /// Write everything pending (and a checkpoint when asked), fsync, then answer.
    Sync {
        checkpoint: bool,
        ack: SyncSender<Result<u64, String>>,
    },
    /// Write what is pending and stop, whatever handles still exist.
    Shutdown,
}

/// The writer thread of one audit file.
pub struct AuditWriter {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
}

/// One run's way into the writer: its records carry `run`.
pub struct AuditHandle {
    tx: SyncSender<Msg>,
    run: String,
    failed: Option<String>,
    /// While set, durable records are queued and acknowledged together by `release`
    /// (group commit for a burst of kernel events: one fsync, not one per denial).
    hold: bool,
    owed: bool,
}

const QUEUE: usize = 65_536;

/// The most records one write takes: it bounds the writer's batch and the encoding
/// buffer (about 400 bytes a record), so a flood does not grow them without limit.
const MAX_BATCH: usize = 8192;

/// After this many records, the writer gives its buffers and the freed heap back to the
/// kernel once the queue runs empty: a flood's peak must not stay in the RSS.
const SHRINK_AFTER: usize = 4 * MAX_BATCH;

impl AuditWriter {
    pub fn spawn(log: AuditLog, flush: Flush) -> Result<Self, AuditError> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("agentd-audit".into())
            .spawn(move || writer_loop(log, rx, flush))
            .map_err(|e| AuditError::Stopped(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// A handle whose records belong to run `run`.
    pub fn handle(&self, run: &str) -> Result<AuditHandle, AuditError> {
        let tx = self
            .tx
            .clone()
            .ok_or_else(|| AuditError::Stopped("the writer was finished".into()))?;
        Ok(AuditHandle {
            tx,
            run: run.to_owned(),
            failed: None,
            hold: false,
            owed: false,
        })
    }

    /// Flushes, checkpoints and stops the writer; handles still held then get errors.
    pub fn finish(mut self) -> Result<(), AuditError> {
        let r = self.handle("-").and_then(|mut h| h.sync(true)).map(|_| ());
        self.stop();
        r
    }

    fn stop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Shutdown);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

impl AuditHandle {
    /// The run this handle writes for.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Submits a record; durable ones return only once they are on disk.
    pub fn append(
        &mut self,
        layer: &str,
        decision: Option<Decision>,
        event: AuditEvent,
    ) -> Result<(), AuditError> {
        let checkpoint = matches!(event, AuditEvent::RunEnd(_));
        let durable = is_durable(&event, decision);
        let mut pending = Pending::new(layer, decision, &event)?;
        pending.run = Some(self.run.clone());
        crate::metrics::get().record(layer, decision, &event, &pending.event);
        let name = durable.then(|| pending.event.clone());
        self.send(Msg::Record(Box::new(pending)))?;
        if durable && self.hold && !checkpoint {
            self.owed = true;
        } else if let Some(name) = name {
            let seq = self.sync(checkpoint)?;
            tracing::debug!("audit: durable seq {seq} ({name})");
        }
        Ok(())
    }

    /// Starts a burst: durable records are acknowledged together by [`Self::release`].
    pub fn hold(&mut self) {
        self.hold = true;
    }

    /// Ends a burst: fsyncs once if any durable record was queued during it.
    pub fn release(&mut self) -> Result<(), AuditError> {
        self.hold = false;
        if std::mem::take(&mut self.owed) {
            let seq = self.sync(false)?;
            tracing::debug!("audit: durable seq {seq} (burst)");
        }
        Ok(())
    }

    /// Writes and fsyncs everything submitted so far; returns the last `seq` written.
    pub fn sync(&mut self, checkpoint: bool) -> Result<u64, AuditError> {
        let (ack, done) = mpsc::sync_channel(1);
        self.send(Msg::Sync { checkpoint, ack })?;
        match done.recv() {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(self.fail(e)),
            Err(_) => Err(self.fail("the writer thread exited".into())),
        }
    }

    fn send(&mut self, m: Msg) -> Result<(), AuditError> {
        if let Some(e) = &self.failed {
            return Err(AuditError::Stopped(e.clone()));
        }
        if self.tx.send(m).is_err() {
            return Err(self.fail("the writer thread exited".into()));
        }
        Ok(())
    }

    fn fail(&mut self, e: String) -> AuditError {
        self.failed = Some(e.clone());
        AuditError::Stopped(e)
    }
}

fn writer_loop(mut log: AuditLog, rx: Receiver<Msg>, flush: Flush) {
    let mut pending: Vec<Pending> = Vec::new();
    let mut oldest: Option<Instant> = None;
    let mut error: Option<String> = None;
    // Records received since the buffers were last shrunk.
    let mut since_shrink = 0usize;
    let write = |log: &mut AuditLog, pending: &mut Vec<Pending>, checkpoint: bool| {
        let r = log
            .append_batch(pending, checkpoint, true)
            .map_err(|e| e.to_string());
        pending.clear();
        r
    };
    loop {
        let msg = match (flush, oldest) {
            (Flush::Batch(d), Some(t)) => {
                let wait = d.saturating_sub(t.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // Nothing is pending: when a burst has just drained, give its memory back
            // before waiting.
            _ if since_shrink >= SHRINK_AFTER => match rx.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Empty) => {
                    pending = Vec::new();
                    log.shrink_buffers();
                    crate::heap::trim();
                    since_shrink = 0;
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            },
            _ => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        match msg {
            Some(Msg::Record(p)) => {
                pending.push(*p);
                since_shrink += 1;
                oldest.get_or_insert_with(Instant::now);
                // Take whatever else is already queued into the same batch.
                let mut sync_req = None;
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Record(p) => {
                            pending.push(*p);
                            since_shrink += 1;
                        }
                        s @ (Msg::Sync { .. } | Msg::Shutdown) => {
                            sync_req = Some(s);
                            break;
                        }
                    }
                    if pending.len() >= MAX_BATCH {
                        break;
                    }
                }
                if let Some(Msg::Shutdown) = sync_req {
                    break;
                }
                if let Some(Msg::Sync { checkpoint, ack }) = sync_req {
                    let r = match &error {
                        Some(e) => Err(e.clone()),
                        None => write(&mut log, &mut pending, checkpoint),
                    };
                    if let Err(e) = &r {
                        error.get_or_insert_with(|| e.clone());
                    }
                    oldest = None;
                    let _ = ack.send(r);
                    continue;
                }
                let due = match flush {
                    Flush::EveryRecord => true,
                    Flush::Batch(d) => {
                        pending.len() >= MAX_BATCH || oldest.is_some_and(|t| t.elapsed() >= d)
                    }
                };
                if due && error.is_none() {
                    if let Err(e) = write(&mut log, &mut pending, false) {
                        error = Some(e);
                    }
                    oldest = None;
                }
            }
            Some(Msg::Sync { checkpoint, ack }) => {
                let r = match &error {
                    Some(e) => Err(e.clone()),
                    None => write(&mut log, &mut pending, checkpoint),
                };
                if let Err(e) = &r {
                    error.get_or_insert_with(|| e.clone());
                }
                oldest = None;
                let _ = ack.send(r);
            }
            Some(Msg::Shutdown) => break,
            None => {
                if error.is_none() && !pending.is_empty() {
                    if let Err(e) = write(&mut log, &mut pending, false) {
                        error = Some(e);
                    }
                }
                oldest = None;
            }
        }
    }
    if error.is_none() && !pending.is_empty() {
        let _ = write(&mut log, &mut pending, true);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::event::Pause;
    use super::super::verify::{verify_bytes, Trust};
    use super::*;

    /// A burst larger than one batch is written whole and in order, and the writer
    /// goes on after it has given the burst's buffers back.
    #[test]
    fn a_burst_of_many_batches_is_written_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, "w").unwrap();
        let writer = AuditWriter::spawn(log, Flush::Batch(Duration::from_millis(50))).unwrap();
        let mut h = writer.handle("run-1").unwrap();
        let burst = SHRINK_AFTER + 3 * MAX_BATCH + 7;
        for i in 0..burst {
            h.append("agentd", None, Pause { frozen: i % 2 == 0 }.into())
                .unwrap();
        }
        h.sync(false).unwrap();
        // After the burst has drained (the writer shrinks then), records still arrive.
        std::thread::sleep(Duration::from_millis(100));
        h.append("agentd", None, Pause { frozen: true }.into())
            .unwrap();
        drop(h);
        writer.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let pauses: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"event\":\"pause\""))
            .collect();
        assert_eq!(pauses.len(), burst + 1);
        assert!(pauses.iter().all(|l| l.contains("\"run\":\"run-1\"")));
        for (i, l) in pauses[..burst].iter().enumerate() {
            assert_eq!(l.contains("\"frozen\":true"), i % 2 == 0, "record {i}: {l}");
        }
        let report = verify_bytes(text.as_bytes(), &Trust::Unsigned, None);
        assert_eq!(report.damage, None, "{report:?}");
    }
}
