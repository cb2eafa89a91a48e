//! What the runs of one agentd process share: the probe, the cgroup backend, the eBPF
//! runtime (loaded once), the event router and the audit writer (one chain).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::audit::dropped::DropReporter;
use crate::audit::{AuditHandle, AuditLog, AuditWriter, CheckpointPolicy, Flush};
use crate::layers::bpf::{progs::SyscallExits, BpfRuntime, LoadOptions};
use crate::layers::cgroup::{self, CgroupLayout, CgroupManager};
use crate::layers::name;
use crate::probe::Probe;

use super::router::EventRouter;
use super::{setup_err, SetupError};

/// Which kind of process hosts the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// `agentd run` supervising its one run in-process.
    Standalone,
    /// `agentd daemon`.
    Daemon,
}

/// How to set a host up.
pub struct HostOptions {
    pub kind: HostKind,
    pub probe: Probe,
    /// The audit log every run of this host writes to.
    pub audit_path: PathBuf,
    /// The `run` of the records the host writes itself (genesis, drops): the run id in
    /// standalone mode, `daemon` for the daemon.
    pub audit_label: String,
    pub checkpoints: Option<CheckpointPolicy>,
    /// The key that signs them, for `run_start`.
    pub signing_key: Option<crate::audit::event::SigningKeyUsed>,
    pub flush: Flush,
    /// How often the ring buffer's drop counters are read.
    pub dropped_poll: std::time::Duration,
    /// Where the eBPF objects are pinned (the daemon); `None`: nothing is pinned.
    pub pin_root: Option<PathBuf>,
    /// Ring-buffer drops an earlier daemon already wrote to the chain.
    pub drops_reported: u64,
    /// Start the event router paused (the daemon resumes it once runs are re-adopted).
    pub router_paused: bool,
}

/// The shared context of every run of this process.
pub struct Host {
    pub probe: Probe,
    pub layout: CgroupLayout,
    cgroups: Box<dyn CgroupManager>,
    bpf: Arc<Mutex<BpfRuntime>>,
    pub router: EventRouter,
    audit: Mutex<Option<AuditWriter>>,
    pub audit_path: PathBuf,
    /// Whether checkpoints are signed (for `run_start`).
    pub signed: bool,
    /// The key that signs them.
    pub signing_key: Option<crate::audit::event::SigningKeyUsed>,
}

impl Host {
    /// Loads the eBPF runtime, opens the audit log and starts the event router. Must be
    /// called inside a tokio runtime.
    pub fn start(options: HostOptions) -> Result<Arc<Self>, SetupError> {
        let layout = options
            .probe
            .cgroups
            .layout
            .clone()
            .ok_or_else(|| setup_err(name::CGROUP, "cgroup layout unknown"))?;
        let cgroups = cgroup::manager_for(&layout).map_err(|e| setup_err(name::CGROUP, e))?;
        let syscall_exits = if options.probe.fexit.available {
            SyscallExits::FExit
        } else {
            SyscallExits::Tracepoint
        };
        let mut runtime = BpfRuntime::load_with(&LoadOptions {
            pin_root: options.pin_root.clone(),
            ring_bytes: 0,
            syscall_exits,
        })
        .map_err(|e| setup_err(name::BPF, e))?;
        let stream = runtime.take_events().map_err(|e| setup_err(name::BPF, e))?;
        let bpf = Arc::new(Mutex::new(runtime));
        let signed = options.checkpoints.is_some();
        let log = AuditLog::open(&options.audit_path, &options.audit_label)
            .map_err(|e| setup_err("audit", e))?
            .with_checkpoints(options.checkpoints)
            .with_genesis_key(options.signing_key.clone());
        let writer = AuditWriter::spawn(log, options.flush).map_err(|e| setup_err("audit", e))?;
        let host_audit = writer
            .handle(&options.audit_label)
            .map_err(|e| setup_err("audit", e))?;
        let router = EventRouter::start(
            stream,
            Arc::clone(&bpf),
            DropReporter::new("ring buffer", options.dropped_poll)
                .with_reported(options.drops_reported),
            host_audit,
            options.router_paused,
        );
        tracing::debug!("{:?} host up", options.kind);
        Ok(Arc::new(Self {
            probe: options.probe,
            layout,
            cgroups,
            bpf,
            router,
            audit: Mutex::new(Some(writer)),
            audit_path: options.audit_path,
            signed,
            signing_key: options.signing_key,
        }))
    }

    /// The eBPF runtime, locked. Map operations are short syscalls: hold it briefly.
    pub fn bpf(&self) -> MutexGuard<'_, BpfRuntime> {
        // A poisoned lock means a panic while holding it; the runtime's maps are kernel
        // objects and stay consistent, so keep serving.
        self.bpf.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared runtime handle (for tasks that outlive one call).
    pub fn bpf_handle(&self) -> Arc<Mutex<BpfRuntime>> {
        Arc::clone(&self.bpf)
    }

    pub fn cgroups(&self) -> &dyn CgroupManager {
        self.cgroups.as_ref()
    }

    /// A handle whose records belong to run `run`.
    pub fn audit(&self, run: &str) -> Result<AuditHandle, SetupError> {
        let guard = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(w) => w.handle(run).map_err(|e| setup_err("audit", e)),
            None => Err(setup_err("audit", "the audit writer has been stopped")),
        }
    }

    /// Flushes and checkpoints the chain and stops the writer. A log that could not be
    /// written is an error: the caller fails the run.
    pub fn finish_audit(&self) -> Result<(), crate::audit::AuditError> {
        let writer = self.audit.lock().unwrap_or_else(|p| p.into_inner()).take();
        match writer {
            Some(w) => w.finish(),
            None => Ok(()),
        }
    }
}
