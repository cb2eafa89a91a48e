//! One reader of the kernel's event ring for every run of the process: each event goes
//! to the run whose cgroup it carries. The ring's drop counters are host-wide (a lost
//! record names no run), so the router also writes the `dropped` records.
//!
//! Each run's queue is bounded: a run that does not keep up makes the router wait, the
//! ring fills, and the kernel counts what it could not keep, so a flood is reported as
//! drops rather than buffered without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::audit::dropped::DropReporter;
use crate::audit::AuditHandle;
use crate::events::Event;
use crate::layers::bpf::{BpfRuntime, EventStream};
use crate::layers::name;

/// Events queued per run at most.
const RUN_QUEUE: usize = 4096;

type Routes = Arc<Mutex<HashMap<u64, mpsc::Sender<Event>>>>;

/// Hands the kernel's events to the runs they belong to.
#[derive(Clone)]
pub struct EventRouter {
    routes: Routes,
    flush: mpsc::Sender<oneshot::Sender<()>>,
    unrouted: Arc<AtomicU64>,
    /// Drops written to the chain so far (the daemon keeps it across restarts).
    reported: Arc<AtomicU64>,
    /// Set once the router may read: a restarted daemon subscribes its re-adopted runs
    /// first, so that what the ring kept while it was down reaches them.
    go: Arc<tokio::sync::Notify>,
}

impl EventRouter {
    /// Starts the router task on the current tokio runtime. `drops` writes the ring's
    /// `dropped` records through `audit`.
    /// With `paused`, nothing is read until [`EventRouter::resume`].
    pub fn start(
        stream: EventStream,
        bpf: Arc<Mutex<BpfRuntime>>,
        drops: DropReporter,
        audit: AuditHandle,
        paused: bool,
    ) -> Self {
        let routes: Routes = Arc::default();
        let unrouted = Arc::new(AtomicU64::new(0));
        let reported = Arc::new(AtomicU64::new(drops.reported()));
        let go = Arc::new(tokio::sync::Notify::new());
        let (flush, flush_rx) = mpsc::channel(64);
        let task = RouterTask {
            stream,
            routes: Arc::clone(&routes),
            unrouted: Arc::clone(&unrouted),
            reported: Arc::clone(&reported),
            bpf,
            drops,
            audit,
        };
        let wait = paused.then(|| Arc::clone(&go));
        tokio::spawn(async move {
            if let Some(go) = wait {
                go.notified().await;
            }
            task.run(flush_rx).await;
        });
        Self {
            routes,
            flush,
            unrouted,
            reported,
            go,
        }
    }

    /// Lets a paused router start reading.
    pub fn resume(&self) {
        self.go.notify_one();
    }

    /// Ring-buffer drops written to the chain so far.
    pub fn drops_reported(&self) -> u64 {
        self.reported.load(Ordering::Relaxed)
    }

    /// The events of the run in the v2 cgroup `cgroup_id` from now on.
    pub fn subscribe(&self, cgroup_id: u64) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(RUN_QUEUE);
        lock(&self.routes).insert(cgroup_id, tx);
        rx
    }

    /// Stops routing the cgroup's events.
    pub fn unsubscribe(&self, cgroup_id: u64) {
        lock(&self.routes).remove(&cgroup_id);
    }

    /// A receiver that completes once everything the kernel committed before this call
    /// has been routed (and the drop counters read). The caller keeps taking its events
    /// while it waits: the router may be waiting for room in its queue.
    pub async fn flush(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if self.flush.send(tx).await.is_err() {
            tracing::error!("the event router has stopped");
        }
        rx
    }

    /// Events whose cgroup no run had subscribed (a run's last events after its end).
    pub fn unrouted(&self) -> u64 {
        self.unrouted.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere; the map itself is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct RouterTask {
    stream: EventStream,
    routes: Routes,
    unrouted: Arc<AtomicU64>,
    reported: Arc<AtomicU64>,
    bpf: Arc<Mutex<BpfRuntime>>,
    drops: DropReporter,
    audit: AuditHandle,
}

impl RouterTask {
    async fn run(mut self, mut flush: mpsc::Receiver<oneshot::Sender<()>>) {
        let mut drop_poll = tokio::time::interval(self.drops.every());
        drop_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.stream.next() => match ev {
                    Some(ev) => self.route(ev).await,
                    None => {
                        tracing::error!("the event ring cannot be read; the router stops");
                        return;
                    }
                },
                req = flush.recv() => match req {
                    Some(ack) => {
                        for ev in self.stream.drain() {
                            self.route(ev).await;
                        }
                        self.poll_drops();
                        let _ = ack.send(());
                    }
                    None => return,
                },
                _ = drop_poll.tick() => {}
            }
            if self.drops.due() {
                self.poll_drops();
            }
        }
    }

    async fn route(&mut self, ev: Event) {
        let tx = lock(&self.routes).get(&ev.cgroup_id()).cloned();
        match tx {
            Some(tx) => {
                if tx.send(ev).await.is_err() {
                    self.unrouted.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.unrouted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes a `dropped` record if the ring lost events since the last one.
    fn poll_drops(&mut self) {
        let total = lock(&self.bpf).dropped();
        match total {
            Ok(total) => {
                if let Some(dropped) = self.drops.observe(total) {
                    if let Err(e) = self.audit.append(name::BPF, None, dropped.into()) {
                        tracing::error!("audit: {e}");
                    }
                    self.reported
                        .store(self.drops.reported(), Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!("reading the ring buffer's drop counters: {e}"),
        }
    }
}
