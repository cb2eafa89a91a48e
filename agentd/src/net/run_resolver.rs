//! Starts the run's DNS resolver (`dns`) wired to the run's allow map: the glue between
//! the resolver, the eBPF network layer (`layers::bpf::DnsAllowMap`, `set_dns_target`)
//! and `agentd run`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::dns::{self, DnsDecision, DnsPolicy, Resolver, ResolverConfig};
use crate::layers::bpf::{BpfRuntime, DnsAllowMap, DnsRules, NetRequest};
use crate::policy::Policy;

/// Where upstream resolvers come from unless `--dns-upstream` is given.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Added to each record's TTL for the allow-map entry.
pub const GRACE: Duration = Duration::from_secs(30);
/// Total time for one upstream exchange.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// The run's resolver(s) and their allow map.
pub struct RunResolver {
    /// Kept for their lifetime: dropping a resolver stops it.
    resolvers: Vec<Resolver>,
    pub sink: Arc<DnsAllowMap>,
    pub decisions: tokio::sync::mpsc::Receiver<DnsDecision>,
    expiry: tokio::task::JoinHandle<()>,
    /// Where the resolver listens (127.0.0.1, and ::1 when available).
    pub listen: Vec<SocketAddr>,
    pub upstream: Vec<SocketAddr>,
}

impl RunResolver {
    /// Starts the resolver on 127.0.0.1 (and ::1 when that can be bound) for run `slot`
    /// (v2 cgroup `cgroup_id`, whose taint it reads) and registers it with the programs. `upstream` empty: from /etc/resolv.conf.
    pub async fn start(
        bpf: &Mutex<BpfRuntime>,
        slot: u32,
        cgroup_id: u64,
        request: &NetRequest,
        policy: &Policy,
        upstream: &[SocketAddr],
    ) -> Result<Self, String> {
        let rules = policy
            .net
            .as_ref()
            .map(|n| n.allow.as_slice())
            .unwrap_or_default();
        let mut dns_policy = DnsPolicy::from_net_rules(rules).map_err(|e| e.to_string())?;
        dns_policy.set_audit_only(request.audit_only);
        for d in &request.after_taint_domains {
            dns_policy
                .allow_after_taint(&d.pattern)
                .map_err(|e| e.to_string())?;
        }
        let upstream = if upstream.is_empty() {
            dns::upstreams_from_resolv_conf(Path::new(RESOLV_CONF)).map_err(|e| e.to_string())?
        } else {
            upstream.to_vec()
        };
        let connect = request.connect.as_deref().unwrap_or_default();
        let (sink, decisions) = lock(bpf)
            .dns_allow_map(
                slot,
                request.taint_check.then_some(cgroup_id),
                &DnsRules {
                    cidr: connect,
                    domains: &request.domains,
                    after_taint_cidr: &request.after_taint,
                    after_taint_domains: &request.after_taint_domains,
                },
            )
            .map_err(|e| e.to_string())?;
        let config = |ip: IpAddr| ResolverConfig {
            listen: SocketAddr::new(ip, 0),
            upstream: upstream.clone(),
            grace: GRACE,
            timeout: UPSTREAM_TIMEOUT,
        };
        let v4 = Resolver::start(
            config(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            dns_policy.clone(),
            Box::new(Arc::clone(&sink)),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut listen = vec![v4.local_addr()];
        let mut resolvers = vec![v4];
        // IPv6 sockets go to [::1] when it exists; otherwise to ::ffff:127.0.0.1.
        let mut port6 = 0;
        if let Ok(v6) = Resolver::start(
            config(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            dns_policy,
            Box::new(Arc::clone(&sink)),
        )
        .await
        {
            port6 = v6.local_addr().port();
            listen.push(v6.local_addr());
            resolvers.push(v6);
        }
        lock(bpf)
            .set_dns_target(slot, listen[0].port(), port6)
            .map_err(|e| e.to_string())?;
        let expiry = sink.spawn_expiry();
        Ok(Self {
            resolvers,
            sink,
            decisions,
            expiry,
            listen,
            upstream,
        })
    }

    /// Stops the resolvers and removes the entries their answers added.
    pub async fn stop(mut self) {
        self.expiry.abort();
        for r in std::mem::take(&mut self.resolvers) {
            r.shutdown().await;
        }
        self.sink.clear();
    }
}

impl Drop for RunResolver {
    /// An error path that never reached `stop`: the expiry task must not outlive the
    /// run (dropping the resolvers stops them).
    fn drop(&mut self) {
        self.expiry.abort();
    }
}

/// The runtime, locked for one short map operation (never across an await).
fn lock(bpf: &Mutex<BpfRuntime>) -> MutexGuard<'_, BpfRuntime> {
    bpf.lock().unwrap_or_else(|p| p.into_inner())
}
