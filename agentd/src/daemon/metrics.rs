//! `--metrics ADDRESS:PORT`: `GET /metrics` in the Prometheus (OpenMetrics) text format.
//! The counters moved by code paths come from [`crate::metrics`]; the daemon's states
//! (runs, budgets, programs, ring drops, restarts) are read at each scrape into a fresh
//! registry, so a scrape never shows a run that has gone.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::runs::Phase;
use super::Daemon;

/// A request head longer than this is refused.
const MAX_HEAD: usize = 8192;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    run: String,
    budget: String,
    unit: String,
}

/// Binds `addr` (before READY=1, so a port in use fails the start).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves scrapes until the daemon exits.
pub fn spawn(daemon: Arc<Daemon>, listener: TcpListener) {
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(Arc::clone(&daemon), stream));
                }
                Err(e) => {
                    tracing::warn!("metrics: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
}

async fn answer(daemon: Arc<Daemon>, mut stream: tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return;
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let (status, body) = match (method, target) {
        (Some(b"GET"), Some(b"/metrics")) => ("200 OK", scrape(&daemon)),
        (Some(b"GET"), _) => ("404 Not Found", "try /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "GET only\n".to_owned()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(reply.as_bytes()).await {
        tracing::debug!("metrics: write: {e}");
    }
}

/// The text of one scrape.
pub fn scrape(daemon: &Daemon) -> String {
    let mut registry = Registry::with_prefix("agentd");
    crate::metrics::get().register(&mut registry);

    let runs = Family::<StateLabels, Gauge>::default();
    let budgets = Family::<BudgetLabels, Gauge<f64, AtomicU64>>::default();
    let limits = Family::<BudgetLabels, Gauge<f64, AtomicU64>>::default();
    for state in ["preparing", "running", "ended"] {
        runs.get_or_create(&StateLabels { state }).set(0);
    }
    for r in daemon.registry.lock().values() {
        let state = match &*r.phase.borrow() {
            Phase::Preparing => "preparing",
            Phase::Running { .. } => "running",
            Phase::Ended(_) => "ended",
        };
        runs.get_or_create(&StateLabels { state }).inc();
        if !r.is_live() {
            continue;
        }
        for (name, used, limit, unit) in r.progress.iter().flat_map(|p| &p.budgets) {
            let (unit, scale) = base_unit(unit);
            let labels = BudgetLabels {
                run: r.id.clone(),
                budget: (*name).to_owned(),
                unit: unit.to_owned(),
            };
            budgets.get_or_create(&labels).set(*used as f64 * scale);
            limits.get_or_create(&labels).set(*limit as f64 * scale);
        }
    }
    registry.register(
        "runs",
        "Runs the daemon knows, by state (ended runs are kept 10 minutes)",
        runs,
    );
    registry.register("budget_used", "Budget used so far, per live run", budgets);
    registry.register("budget_limit", "Budget limit, per live run", limits);

    let (loaded, attached, dropped, unrouted) = {
        let bpf = daemon.host.bpf();
        (
            bpf.loaded_programs(),
            bpf.status().globals.len(),
            bpf.dropped().unwrap_or(0),
            daemon.host.router.unrouted(),
        )
    };
    let g = Gauge::<i64>::default();
    g.set(gauge(loaded as u64));
    registry.register(
        "bpf_programs_loaded",
        "eBPF programs loaded (verified) into the kernel",
        g,
    );
    let g = Gauge::<i64>::default();
    g.set(gauge(attached as u64));
    registry.register(
        "bpf_programs_attached",
        "Global eBPF programs attached for the live runs",
        g,
    );
    registry.register(
        "ring_buffer_dropped_events",
        "Events the kernel's ring buffer could not keep",
        counter(dropped),
    );
    registry.register(
        "unrouted_events",
        "Kernel events whose cgroup no run had subscribed",
        counter(unrouted),
    );
    registry.register(
        "daemon_restarts",
        "Starts of the daemon after an earlier one on this state directory",
        counter(daemon.restarts),
    );
    registry.register(
        "daemon_adopted_runs",
        "Runs of an earlier daemon this one took over",
        counter(daemon.adopted.load(std::sync::atomic::Ordering::Relaxed) as u64),
    );

    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::error!("metrics: encode: {e}");
    }
    text
}

/// A budget's unit in Prometheus base units (seconds, bytes), and the factor to it.
fn base_unit(unit: &str) -> (&str, f64) {
    match unit {
        "ms" => ("seconds", 0.001),
        other => (other, 1.0),
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}
