//! The per-run DNS resolver: answers only the names the policy allows, and registers
//! each answer's addresses with the run's allow map before the agent sees them.
//!
//! # API (for the integrator)
//!
//! ```ignore
//! // Domain rules → name patterns (rule text = `rule.written`); CIDR rules → the
//! // rebinding exemptions. `policy.has_names()` says whether a resolver is needed.
//! let policy = DnsPolicy::from_net_rules(&net.allow)?;
//! let cfg = ResolverConfig {
//!     listen: "127.0.0.1:0".parse()?,            // port 0: ephemeral; UDP and TCP share it
//!     upstream: upstreams_from_resolv_conf(Path::new("/etc/resolv.conf"))?,
//!     grace: Duration::from_secs(30),
//!     timeout: Duration::from_secs(5),
//! };
//! let resolver = Resolver::start(cfg, policy, Box::new(my_sink)).await?;
//! let addr = resolver.local_addr();              // redirect the run's port-53 traffic here
//! ...
//! resolver.shutdown().await;                     // (dropping it also stops it)
//! ```
//!
//! `DnsPolicy` is `Clone`: one resolver per address family (`127.0.0.1:0` and
//! `[::1]:0`) is two `start` calls with clones of the policy and one `Arc<impl AllowSink>`
//! (which is itself an `AllowSink`).
//!
//! `AllowSink` is the only way out: `allow()` fills the run's allow map, `decision()`
//! gets one `DnsDecision` per query for the audit log. Both are called synchronously
//! from the query's task, so they must be quick (a map update, a bounded channel send).
//!
//! # Behaviour
//!
//! - **Names.** The query name (case-insensitive, trailing dot ignored) must match an
//!   exact pattern (`api.example.com`) or a wildcard (`*.example.com`: any depth of
//!   sub-domain, `a.example.com` and `a.b.example.com`, never `example.com` itself).
//!   Anything else gets REFUSED and a `Refused` decision naming the name ("no rule").
//!   Reverse (PTR) lookups are ordinary names: refused unless allowed.
//! - **Taint.** Once `AllowSink::tainted()` says the run read a secret, every name but
//!   the exact `net.after_taint` names (`DnsPolicy::allow_after_taint`) is refused with
//!   reason "tainted: no after_taint rule" (audit mode: `WouldRefuse`, then resolved):
//!   the labels of a name under an allowed wildcard would carry data out.
//! - **Queries** must be standard queries (opcode QUERY, else NOTIMP) with exactly one
//!   question (else FORMERR) of class IN (else REFUSED). Responses sent to us (QR=1)
//!   are dropped without reply (no reflection loops). At most `MAX_QUERY_LEN` bytes.
//! - **Forwarding.** For an allowed name the resolver builds a fresh upstream query
//!   (random id, RD, EDNS payload 1232, no DNSSEC OK) and tries the upstreams in order
//!   within `timeout` in total: UDP first (TCP for TCP clients), retried over TCP when
//!   the UDP answer is truncated. Replies whose id or question do not match are ignored.
//!   If no upstream answers in time: SERVFAIL and a `Failed` decision. Upstream rcodes
//!   (NXDOMAIN, SERVFAIL, ...) are passed through to the client.
//! - **CNAME chains.** Only the *query* name is checked against the policy: if
//!   `api.example.com` is allowed and is a CNAME for `x.cdn.net`, the addresses of
//!   `x.cdn.net` are what `api.example.com` resolves to (that is how CDNs work).
//!   The chain must start at the query name and be linked through CNAME records of the
//!   answer section (at most `MAX_CNAME_CHAIN` hops, no loops); answer records for names
//!   outside the chain, records of other types, and every address record in the
//!   authority and additional sections are removed and never reach the sink. A client
//!   that later asks for `x.cdn.net` directly is refused unless that is allowed too.
//! - **Rebinding.** An A/AAAA record in the chain pointing at a private (10/8,
//!   172.16/12, 192.168/16, 100.64/10, fc00::/7), loopback (127/8, ::1), link-local
//!   (169.254/16, fe80::/10, fec0::/10), unspecified (0.0.0.0/8, ::), multicast or
//!   reserved (224/4, 240/4, ff00::/8) address, also in IPv4-mapped (`::ffff:a.b.c.d`)
//!   or NAT64 (`64:ff9b::a.b.c.d`) form, is removed unless a policy CIDR covers it
//!   (`DnsPolicy::allow_cidr`). A `RebindingDropped` decision lists the removed addresses.
//!   The client gets the answer without those records; if that leaves no address while
//!   the upstream had given some, the client gets **SERVFAIL** with an empty answer
//!   (not NODATA, which stub caches would keep as "the name has no address").
//! - **Allow map.** When the filtered answer has addresses, `sink.allow(name, rule,
//!   addrs, ttl)` is called once per matching policy rule (most specific first) BEFORE
//!   the reply is sent. `addrs` are canonical (IPv4-mapped turned into IPv4), `ttl` is
//!   the smallest TTL of the chain's records (capped at `MAX_RECORD_TTL`) **plus
//!   `grace`**: the resolver applies the grace, the sink uses `ttl` as the entry's
//!   lifetime. Every record in the reply carries that same smallest TTL, so a caching
//!   client never keeps an address longer than the map does. If `allow` fails the
//!   client gets SERVFAIL and a `Failed` decision (the address would not be connectable
//!   anyway). NXDOMAIN, NODATA and non-address types (TXT, MX, ...) are passed through
//!   filtered the same way, with no `allow` call.
//! - **Audit mode** (`DnsPolicy::set_audit_only(true)`, for `mode: audit`): nothing
//!   the policy decides is refused or dropped. A name without a rule is resolved and
//!   reported as `WouldRefuse`; rebinding addresses stay in the reply and are reported
//!   as `WouldDropRebinding`. Neither is passed to `allow`, so connections to them
//!   show up as the connect hooks' `would_deny`. Protocol limits (opcode, class, zone
//!   transfers, malformed queries, overload) and failures apply in both modes.
//! - **Truncation to the client.** Over UDP a reply larger than the client's limit
//!   (512, or its EDNS payload size up to `MAX_UDP_REPLY`) is sent with TC=1 and no
//!   records, so the client retries over TCP, where the same answer is sent whole.
//! - **Bounds.** At most `MAX_INFLIGHT_UDP` UDP queries in flight (beyond: SERVFAIL and a
//!   `Failed` decision) and `MAX_TCP_CONNS` TCP connections (beyond: the connection is
//!   closed and a `Failed` decision recorded); a TCP connection idle or stalled for
//!   `TCP_IDLE` is closed. No queue grows without bound.

// Until cli/run.rs wires the resolver into a run, only the tests use it.
#![allow(dead_code, unused_imports)]

mod handler;
mod policy;
mod server;
mod upstream;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use policy::{DnsPolicy, NameMatch};
pub use server::Resolver;

/// Largest query accepted from a client, over UDP or TCP (a query has one question, so
/// legitimate ones are far smaller).
pub const MAX_QUERY_LEN: usize = 4096;
/// Largest UDP reply sent to a client, whatever EDNS payload size it advertises.
pub const MAX_UDP_REPLY: usize = 4096;
/// EDNS payload size advertised upstream (the DNS flag day 2020 value).
pub const UPSTREAM_EDNS_PAYLOAD: u16 = 1232;
/// Longest CNAME chain followed from the query name.
pub const MAX_CNAME_CHAIN: usize = 16;
/// TTLs above this are capped (in the reply and for the allow map): one day.
pub const MAX_RECORD_TTL: u32 = 86_400;
/// UDP queries handled concurrently.
pub const MAX_INFLIGHT_UDP: usize = 256;
/// TCP client connections open concurrently.
pub const MAX_TCP_CONNS: usize = 64;
/// A TCP client connection idle (or stalled mid-message) this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// How the resolver runs.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Where to listen, UDP and TCP on the same port (use loopback; port 0 picks one).
    pub listen: SocketAddr,
    /// Upstream resolvers, tried in order (see `upstreams_from_resolv_conf`).
    pub upstream: Vec<SocketAddr>,
    /// Added to the record TTL for the allow-map entry, so a connection made right at
    /// the end of the TTL still finds its address.
    pub grace: Duration,
    /// Total time for one query's upstream exchange (all upstreams, all transports).
    pub timeout: Duration,
}

/// Where a query came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        })
    }
}

/// What the resolver did with one query; the caller audits each one. `name` is
/// lower-case without trailing dot, `qtype` the record type (`A`, `AAAA`, `TXT`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsDecision {
    /// The name is allowed and the (filtered) upstream answer was sent. `addrs` are the
    /// usable addresses given to the client (empty for NXDOMAIN, NODATA or non-address
    /// types), `allowed` whether they went to `AllowSink::allow` (false only in audit
    /// mode for a name without a rule, whose `rule` is then "no rule"), `ttl` the
    /// record TTL the client was told (without grace), `rcode` the response code sent
    /// (`NOERROR`, `NXDOMAIN`, ...).
    Answered {
        name: String,
        qtype: String,
        rule: String,
        addrs: Vec<IpAddr>,
        allowed: bool,
        ttl: Duration,
        rcode: String,
    },
    /// No rule allows the name (`reason` "no rule"), or the query is of a kind the
    /// resolver does not serve; the client got REFUSED (or NOTIMP, see `rcode`).
    Refused {
        name: String,
        qtype: String,
        reason: String,
        rcode: String,
    },
    /// Answer addresses for an allowed name were removed as rebinding (private,
    /// loopback, link-local, ... and not covered by a policy CIDR).
    RebindingDropped {
        name: String,
        qtype: String,
        rule: String,
        addrs: Vec<IpAddr>,
    },
    /// `mode: audit` only: no rule allows the name, which enforce mode would have
    /// REFUSED; it was resolved anyway (followed by `Answered` with rule "no rule"
    /// and no `allow` call).
    WouldRefuse {
        name: String,
        qtype: String,
        reason: String,
    },
    /// `mode: audit` only: these answer addresses would have been dropped as
    /// rebinding; they were left in the answer but not given to `allow`.
    WouldDropRebinding {
        name: String,
        qtype: String,
        rule: String,
        addrs: Vec<IpAddr>,
    },
    /// The name is allowed but no usable answer could be given (upstream timeout or
    /// error, sink failure, overload); the client got SERVFAIL (or nothing, for a
    /// refused TCP connection). `name` is empty when the query was never read.
    Failed {
        name: String,
        qtype: String,
        reason: String,
    },
    /// The client sent something that is not a DNS query we can parse; it got FORMERR
    /// when the header was readable, nothing otherwise.
    Malformed { peer: SocketAddr, reason: String },
}

/// Where the resolver's results go. Implementations must not block for long: they run
/// on the query's task, between the upstream answer and the reply.
pub trait AllowSink: Send + Sync {
    /// Allow connections from the run to `addrs` for `ttl` (record TTL plus grace)
    /// under policy rule `rule`, because `name` resolved to them. Called BEFORE the
    /// answer is sent to the client; an error turns the answer into SERVFAIL.
    fn allow(&self, name: &str, rule: &str, addrs: &[IpAddr], ttl: Duration) -> Result<(), String>;

    /// One decision per query, two when rebinding records were dropped from an
    /// answer (`RebindingDropped`, then `Answered` or `Failed`) or, in audit mode,
    /// when a would-be denial preceded the answer (`WouldRefuse`/`WouldDropRebinding`,
    /// then `Answered`).
    fn decision(&self, decision: DnsDecision);

    /// Whether the run has read a secret (`fs.secret`): from then on every name is
    /// refused (`mode: audit`: reported as `WouldRefuse` and resolved), because a
    /// lookup is itself a way out. Checked once per query, before the policy.
    fn tainted(&self) -> bool {
        false
    }
}

/// A sink shared by several resolvers (one per address family).
impl<T: AllowSink + ?Sized> AllowSink for std::sync::Arc<T> {
    fn allow(&self, name: &str, rule: &str, addrs: &[IpAddr], ttl: Duration) -> Result<(), String> {
        (**self).allow(name, rule, addrs, ttl)
    }

    fn decision(&self, decision: DnsDecision) {
        (**self).decision(decision)
    }

    fn tainted(&self) -> bool {
        (**self).tainted()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("failed to read {path}: {source}")]
    ReadResolvConf {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} names no usable nameserver")]
    NoNameserver { path: PathBuf },
    #[error("bad name pattern {pattern:?}: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("bad cidr {cidr}")]
    BadCidr { cidr: String },
    #[error("no upstream resolver configured")]
    NoUpstream,
    #[error("failed to bind the resolver to {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: Transport,
        source: std::io::Error,
    },
}

/// The `nameserver` entries of a resolv.conf file, port 53, in file order. Comments
/// (`#`, `;`) are ignored. A link-local IPv6 entry with a numeric scope (`fe80::1%2`)
/// keeps it; one with an interface name is skipped (it cannot be resolved without
/// the interface table), as are unparsable entries. No usable entry is an error:
/// glibc's silent default of 127.0.0.1 would be a guess.
pub fn upstreams_from_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let text = std::fs::read_to_string(path).map_err(|source| DnsError::ReadResolvConf {
        path: path.to_path_buf(),
        source,
    })?;
    let upstreams = parse_resolv_conf(&text);
    if upstreams.is_empty() {
        return Err(DnsError::NoNameserver {
            path: path.to_path_buf(),
        });
    }
    Ok(upstreams)
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        if let Some(sa) = parse_nameserver(addr) {
            out.push(sa);
        }
    }
    out
}

fn parse_nameserver(word: &str) -> Option<SocketAddr> {
    let (addr, scope) = match word.split_once('%') {
        Some((a, s)) => (a, Some(s)),
        None => (word, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    match (ip, scope) {
        (IpAddr::V4(_), None) => Some(SocketAddr::new(ip, 53)),
        (IpAddr::V6(v6), None) => Some(SocketAddr::new(IpAddr::V6(v6), 53)),
        (IpAddr::V6(v6), Some(scope)) => {
            let scope: u32 = scope.parse().ok()?;
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                v6, 53, 0, scope,
            )))
        }
        (IpAddr::V4(_), Some(_)) => None,
    }
}
