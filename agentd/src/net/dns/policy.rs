//! Which names the run may resolve, and which answer addresses count as rebinding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

use super::DnsError;
use crate::policy::{NetHost, NetRule};

/// One allowed name pattern, normalised to lower-case ASCII (punycode) without the
/// trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `api.example.com`: exactly that name.
    Exact(String),
    /// `*.example.com`, stored as `example.com`: any name with at least one more label
    /// in front (`a.example.com`, `a.b.example.com`), never the apex itself.
    Suffix(String),
}

#[derive(Debug, Clone)]
struct NameRule {
    pattern: Pattern,
    /// The policy rule as the user wrote it (e.g. `*.example.com:443`); handed to the
    /// sink and the audit so both can say which rule let the name through.
    rule: String,
}

/// A CIDR written in the policy, used only by the rebinding check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// What the resolver lets through: allowed name patterns (each with its rule text) and
/// the policy's CIDRs, which decide whether a private, loopback or link-local answer
/// address is legitimate (covered) or rebinding (not covered).
#[derive(Debug, Clone, Default)]
pub struct DnsPolicy {
    names: Vec<NameRule>,
    cidrs: Vec<Cidr>,
    /// `mode: audit`: refuse nothing, drop nothing; report what would have been.
    audit_only: bool,
    /// `net.after_taint` names (exact, normalised): still answered once tainted.
    after_taint: Vec<String>,
}

/// The rules a query name matched, most specific first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameMatch {
    /// Every matching rule's text, most specific first: the exact rule, then wildcards
    /// by decreasing suffix length, ties in policy order.
    pub rules: Vec<String>,
}

impl NameMatch {
    /// The most specific matching rule (the one audit records name).
    pub fn primary(&self) -> &str {
        self.rules.first().map(String::as_str).unwrap_or("")
    }
}

impl DnsPolicy {
    pub fn new() -> Self {
        Self::default()
    }

    /// The resolver's policy for a run's `net.allow` rules: each domain rule allows its
    /// name pattern under its written text (`rule.written`, which the sink gets back to
    /// look up ports and protocol); each CIDR rule, whatever its ports and protocol,
    /// exempts its range from the rebinding check.
    pub fn from_net_rules(rules: &[NetRule]) -> Result<Self, DnsError> {
        let mut policy = Self::new();
        for rule in rules {
            match &rule.host {
                NetHost::Domain(pattern) => policy.allow_name(pattern, &rule.written)?,
                NetHost::Cidr { addr, prefix } => policy.allow_cidr(*addr, *prefix)?,
            }
        }
        Ok(policy)
    }

    /// `mode: audit`: names without a rule are resolved anyway (`WouldRefuse`) and
    /// rebinding addresses stay in the answer (`WouldDropRebinding`); neither reaches
    /// the sink's `allow`, so later connects to them are the connect hooks' would-denials.
    pub fn set_audit_only(&mut self, audit_only: bool) {
        self.audit_only = audit_only;
    }

    pub fn audit_only(&self) -> bool {
        self.audit_only
    }

    /// True when the policy allows no name at all (the run needs no resolver).
    pub fn has_names(&self) -> bool {
        !self.names.is_empty()
    }

    /// Allows `pattern` (`api.example.com` or `*.example.com`, case-insensitive, an
    /// optional trailing dot, Unicode names are converted to punycode) under the policy
    /// rule `rule`. The same pattern may be added under several rules (e.g. different
    /// ports); all of them are reported on a match.
    pub fn allow_name(&mut self, pattern: &str, rule: &str) -> Result<(), DnsError> {
        let bad = |reason: &str| DnsError::BadPattern {
            pattern: pattern.to_string(),
            reason: reason.to_string(),
        };
        let (wildcard, rest) = match pattern.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        if rest.contains('*') {
            return Err(bad(
                "'*' is only allowed as the whole first label, as in *.example.com",
            ));
        }
        let name = Name::from_utf8(rest).map_err(|e| bad(&e.to_string()))?;
        let normalised = normalise(&name);
        if normalised.is_empty() {
            return Err(bad("empty name"));
        }
        let pattern = if wildcard {
            Pattern::Suffix(normalised)
        } else {
            Pattern::Exact(normalised)
        };
        self.names.push(NameRule {
            pattern,
            rule: rule.to_string(),
        });
        Ok(())
    }

    /// Declares that the exact name `name` may still be resolved once the run is
    /// tainted (`net.after_taint`); every other name is then refused.
    pub fn allow_after_taint(&mut self, name: &str) -> Result<(), DnsError> {
        let bad = |reason: &str| DnsError::BadPattern {
            pattern: name.to_string(),
            reason: reason.to_string(),
        };
        if name.contains('*') {
            return Err(bad("after taint only exact names are answered"));
        }
        let parsed = Name::from_utf8(name).map_err(|e| bad(&e.to_string()))?;
        let normalised = normalise(&parsed);
        if normalised.is_empty() {
            return Err(bad("empty name"));
        }
        self.after_taint.push(normalised);
        Ok(())
    }

    /// Whether `name` (any case, with or without trailing dot) is a `net.after_taint`
    /// name.
    pub fn allowed_after_taint(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.after_taint.contains(&name)
    }

    /// Declares that the policy allows `addr/prefix`, so answers inside it are not
    /// treated as rebinding even when the range is private, loopback or link-local.
    pub fn allow_cidr(&mut self, addr: IpAddr, prefix: u8) -> Result<(), DnsError> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix > max {
            return Err(DnsError::BadCidr {
                cidr: format!("{addr}/{prefix}"),
            });
        }
        self.cidrs.push(Cidr { addr, prefix });
        Ok(())
    }

    /// The rules allowing `name` (any case, with or without trailing dot), or `None`.
    pub fn match_name(&self, name: &str) -> Option<NameMatch> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        // (specificity, policy index, rule): exact beats every wildcard; a longer
        // wildcard suffix beats a shorter one.
        let mut hits: Vec<(usize, usize, &str)> = Vec::new();
        for (index, rule) in self.names.iter().enumerate() {
            match &rule.pattern {
                Pattern::Exact(exact) if *exact == name => {
                    hits.push((usize::MAX, index, &rule.rule));
                }
                Pattern::Suffix(suffix) if is_strict_subdomain(&name, suffix) => {
                    hits.push((suffix.len(), index, &rule.rule));
                }
                _ => {}
            }
        }
        if hits.is_empty() {
            return None;
        }
        hits.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        Some(NameMatch {
            rules: hits.into_iter().map(|(_, _, r)| r.to_string()).collect(),
        })
    }

    /// True when `addr` may be handed to the client: it is public, or a policy CIDR
    /// covers it. IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) forms
    /// are judged as the IPv4 address they carry.
    pub fn address_usable(&self, addr: IpAddr) -> bool {
        !is_non_public(addr) || self.cidrs.iter().any(|c| cidr_contains(*c, addr))
    }
}

/// Lower-case ASCII form of a DNS name without the trailing dot (`""` for the root).
pub fn normalise(name: &Name) -> String {
    name.to_lowercase()
        .to_ascii()
        .trim_end_matches('.')
        .to_string()
}

fn is_strict_subdomain(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

/// The IPv4 address an IPv6 address stands for, if it is IPv4-mapped or NAT64
/// (RFC 6052 well-known prefix): the kernel (or a NAT64 gateway) would reach that
/// IPv4 address, so it is judged as such.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let o = v6.octets();
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    None
}

/// Addresses an allowed public name must not point at unless the policy lists them:
/// private, shared (CGNAT), loopback, link-local, unspecified/"this network",
/// multicast, reserved and broadcast.
fn is_non_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => is_non_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_non_public_v4(v4),
            None => is_non_public_v6(v6),
        },
    }
}

fn is_non_public_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    o[0] == 0 // 0.0.0.0/8: "this network"; 0.0.0.0 reaches the local host on Linux
        || o[0] == 10 // 10/8
        || o[0] == 127 // 127/8
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 shared address space
        || (o[0] == 169 && o[1] == 254) // 169.254/16 link-local (cloud metadata)
        || (o[0] == 172 && (o[1] & 0xf0) == 16) // 172.16/12
        || (o[0] == 192 && o[1] == 168) // 192.168/16
        || o[0] >= 224 // 224/4 multicast, 240/4 reserved, 255.255.255.255
}

fn is_non_public_v6(v6: Ipv6Addr) -> bool {
    let s0 = v6.segments()[0];
    v6.is_unspecified()
        || v6.is_loopback()
        || (s0 & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (s0 & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (s0 & 0xffc0) == 0xfec0 // fec0::/10 deprecated site-local
        || (s0 & 0xff00) == 0xff00 // ff00::/8 multicast
}

fn cidr_contains(cidr: Cidr, addr: IpAddr) -> bool {
    // A mapped CIDR (`::ffff:10.0.0.0/104`) is the IPv4 CIDR it spells.
    let (net, prefix) = match cidr.addr {
        IpAddr::V6(v6) if cidr.prefix >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), cidr.prefix - 96),
            None => (cidr.addr, cidr.prefix),
        },
        _ => (cidr.addr, cidr.prefix),
    };
    // An IPv6 answer carrying an IPv4 address is covered by a CIDR containing either.
    let embedded = match addr {
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    [Some(addr), embedded]
        .into_iter()
        .flatten()
        .any(|a| match (net, a) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), prefix),
            _ => false,
        })
}

fn prefix_eq(net: &[u8], addr: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if net.len() != addr.len() || full > net.len() {
        return false;
    }
    if net[..full] != addr[..full] {
        return false;
    }
    if rest == 0 || full == net.len() {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (net[full] & mask) == (addr[full] & mask)
}

/// The address the kernel would actually reach: IPv4-mapped IPv6 becomes IPv4, so
/// allow-map entries match what the connect hooks judge.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}
