//! One client query, start to finish: parse, check the policy, forward, filter the
//! answer (CNAME chain, rebinding), feed the allow map, build the reply bytes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::time::Instant;

use crate::layers::bpf::TAINTED_RULE;

use super::policy::{canonical, normalise};
use super::upstream;
use super::{
    AllowSink, DnsDecision, DnsPolicy, ResolverConfig, Transport, MAX_CNAME_CHAIN, MAX_RECORD_TTL,
    MAX_UDP_REPLY, UPSTREAM_EDNS_PAYLOAD,
};

/// Size every DNS client accepts over UDP (RFC 1035), used when it sends no EDNS.
const CLASSIC_UDP_LIMIT: usize = 512;
/// Length of the fixed DNS header.
const HEADER_LEN: usize = 12;
/// The reason (and audit rule) for a name no policy rule matches.
const NO_RULE: &str = "no rule";

/// Everything a query's task needs, shared by all of them.
pub(super) struct Ctx {
    pub policy: DnsPolicy,
    pub cfg: ResolverConfig,
    pub sink: Box<dyn AllowSink>,
}

impl Ctx {
    /// Handles one query and returns the reply to send (`None`: send nothing). Every
    /// sink call (allow, decision) happens before this returns, so before the reply
    /// leaves.
    pub async fn handle(
        &self,
        bytes: &[u8],
        peer: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let query = match self.parse(bytes, peer) {
            Ok(query) => query,
            Err(reply) => return reply,
        };
        let reply = self.answer(&query, transport).await;
        Some(encode(&query, reply, transport))
    }

    /// A reply for a query that cannot be served right now (too many in flight).
    pub fn overloaded(&self, bytes: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        let query = match self.parse(bytes, peer) {
            Ok(query) => query,
            Err(reply) => return reply,
        };
        let (name, qtype) = describe(&query);
        self.sink.decision(DnsDecision::Failed {
            name,
            qtype,
            reason: "resolver overloaded: too many queries in flight".to_string(),
        });
        Some(encode(
            &query,
            reply_to(&query, ResponseCode::ServFail),
            Transport::Udp,
        ))
    }

    /// Parses a query; `Err` carries what to send instead (FORMERR, or nothing).
    fn parse(&self, bytes: &[u8], peer: SocketAddr) -> Result<Message, Option<Vec<u8>>> {
        let malformed = |reason: String| {
            self.sink.decision(DnsDecision::Malformed { peer, reason });
        };
        let message = match Message::from_vec(bytes) {
            Ok(message) => message,
            Err(e) => {
                malformed(format!("unparsable query: {e}"));
                return Err(formerr_from_header(bytes));
            }
        };
        if message.metadata.message_type != MessageType::Query {
            // Never answer a response: two resolvers must not ping-pong.
            malformed("a response was sent to the resolver".to_string());
            return Err(None);
        }
        if message.metadata.op_code == OpCode::Query && message.queries.len() != 1 {
            malformed(format!(
                "{} questions in one query (exactly 1 is served)",
                message.queries.len()
            ));
            let mut reply = Message::error_msg(
                message.metadata.id,
                message.metadata.op_code,
                ResponseCode::FormErr,
            );
            reply.metadata.recursion_desired = message.metadata.recursion_desired;
            return Err(reply.to_vec().ok());
        }
        Ok(message)
    }

    /// The reply message for a well-formed query (not yet size-checked).
    async fn answer(&self, query: &Message, transport: Transport) -> Message {
        let (name, qtype) = describe(query);
        let refuse = |rcode: ResponseCode, reason: &str| {
            self.sink.decision(DnsDecision::Refused {
                name: name.clone(),
                qtype: qtype.clone(),
                reason: reason.to_string(),
                rcode: rcode_name(rcode),
            });
            reply_to(query, rcode)
        };
        if query.metadata.op_code != OpCode::Query {
            let reason = format!("opcode {:?} not served", query.metadata.op_code);
            return refuse(ResponseCode::NotImp, &reason);
        }
        // `parse` guarantees exactly one question for a standard query.
        let Some(question) = query.queries.first() else {
            return refuse(ResponseCode::FormErr, "no question");
        };
        let matched = self.policy.match_name(&name);
        if self.sink.tainted() && !self.policy.allowed_after_taint(&name) {
            if !self.policy.audit_only() {
                return refuse(ResponseCode::Refused, TAINTED_RULE);
            }
            self.sink.decision(DnsDecision::WouldRefuse {
                name: name.clone(),
                qtype: qtype.clone(),
                reason: TAINTED_RULE.to_string(),
            });
        } else if matched.is_none() {
            if !self.policy.audit_only() {
                return refuse(ResponseCode::Refused, NO_RULE);
            }
            self.sink.decision(DnsDecision::WouldRefuse {
                name: name.clone(),
                qtype: qtype.clone(),
                reason: NO_RULE.to_string(),
            });
        }
        if question.query_class() != DNSClass::IN {
            let reason = format!("class {} not served", question.query_class());
            return refuse(ResponseCode::Refused, &reason);
        }
        if matches!(question.query_type(), RecordType::AXFR | RecordType::IXFR) {
            return refuse(ResponseCode::Refused, "zone transfers not served");
        }
        let rule = matched
            .as_ref()
            .map_or(NO_RULE, |m| m.primary())
            .to_string();
        let fail = |reason: String| {
            self.sink.decision(DnsDecision::Failed {
                name: name.clone(),
                qtype: qtype.clone(),
                reason,
            });
            reply_to(query, ResponseCode::ServFail)
        };

        let request = upstream_request(question);
        let deadline = Instant::now() + self.cfg.timeout;
        let upstream_answer =
            match upstream::exchange(&self.cfg.upstream, &request, transport, deadline).await {
                Ok(answer) => answer,
                Err(e) => return fail(e),
            };

        let audit_only = self.policy.audit_only();
        let filtered = filter_answer(question, upstream_answer.answers, &self.policy);
        if !filtered.dropped.is_empty() && audit_only {
            self.sink.decision(DnsDecision::WouldDropRebinding {
                name: name.clone(),
                qtype: qtype.clone(),
                rule: rule.clone(),
                addrs: filtered.dropped.clone(),
            });
        } else if !filtered.dropped.is_empty() {
            self.sink.decision(DnsDecision::RebindingDropped {
                name: name.clone(),
                qtype: qtype.clone(),
                rule: rule.clone(),
                addrs: filtered.dropped.clone(),
            });
            if filtered.addrs.is_empty() {
                return fail(
                    "every answer address is private, loopback or link-local (rebinding)"
                        .to_string(),
                );
            }
        }
        let ttl = Duration::from_secs(u64::from(filtered.ttl));
        let rules = matched.as_ref().map_or(&[][..], |m| &m.rules[..]);
        if !filtered.addrs.is_empty() {
            let lifetime = ttl + self.cfg.grace;
            for rule in rules {
                if let Err(e) = self.sink.allow(&name, rule, &filtered.addrs, lifetime) {
                    return fail(format!("failed to allow the answer's addresses: {e}"));
                }
            }
        }

        let rcode = upstream_answer.metadata.response_code;
        let mut reply = reply_to(query, rcode);
        reply.answers = if audit_only {
            filtered.with_dropped
        } else {
            filtered.records
        };
        // Keep only the SOA (negative caching); NS and glue records are not needed by
        // a stub and their addresses must not look like answers.
        reply.authorities = upstream_answer
            .authorities
            .into_iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .map(|mut r| {
                r.ttl = r.ttl.min(MAX_RECORD_TTL);
                r
            })
            .collect();
        self.sink.decision(DnsDecision::Answered {
            name,
            qtype,
            rule,
            allowed: matched.is_some() && !filtered.addrs.is_empty(),
            addrs: filtered.addrs,
            ttl,
            rcode: rcode_name(rcode),
        });
        reply
    }
}

/// The fresh query sent upstream: a random id (not the client's, so an off-path
/// attacker cannot guess it from the client), recursion desired, EDNS, no DNSSEC.
fn upstream_request(question: &Query) -> Message {
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(question.name().clone(), question.query_type()));
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_EDNS_PAYLOAD);
    request.set_edns(edns);
    request
}

/// The part of an upstream answer the client may see.
#[derive(Debug)]
struct Filtered {
    /// Answer-section records on the CNAME chain, of the queried type (or CNAME),
    /// rebinding addresses removed, TTLs set to `ttl`.
    records: Vec<Record>,
    /// Usable A/AAAA addresses, canonical, without duplicates.
    addrs: Vec<IpAddr>,
    /// Addresses removed as rebinding.
    dropped: Vec<IpAddr>,
    /// `records` with the rebinding records left in (what audit mode sends).
    with_dropped: Vec<Record>,
    /// Smallest TTL of the kept records, capped at `MAX_RECORD_TTL` (0 if none).
    ttl: u32,
}

fn filter_answer(question: &Query, answers: Vec<Record>, policy: &DnsPolicy) -> Filtered {
    let qtype = question.query_type();
    let chain = cname_chain(question.name(), &answers);
    let mut records = Vec::new();
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut dropped: Vec<IpAddr> = Vec::new();
    for record in answers {
        let owner = normalise(&record.name);
        let Some(position) = chain.iter().position(|n| *n == owner) else {
            continue; // not on the chain from the query name: never trusted
        };
        let wanted = qtype == RecordType::ANY || record.record_type() == qtype;
        let addr = match &record.data {
            RData::CNAME(target) => {
                // Only the links that make up the chain.
                if chain.get(position + 1) == Some(&normalise(&target.0)) {
                    records.push((true, record));
                }
                continue;
            }
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            _ => {
                if wanted {
                    records.push((true, record));
                }
                continue;
            }
        };
        if !wanted {
            continue;
        }
        if policy.address_usable(addr) {
            let addr = canonical(addr);
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
            records.push((true, record));
        } else {
            if !dropped.contains(&addr) {
                dropped.push(addr);
            }
            records.push((false, record));
        }
    }
    // The TTL of what the client may use; rebinding records (kept only in audit mode)
    // get it too.
    let smallest = |usable_only: bool| {
        records
            .iter()
            .filter(|(usable, _)| *usable || !usable_only)
            .map(|(_, r)| r.ttl)
            .min()
    };
    let ttl = smallest(true)
        .or_else(|| smallest(false))
        .unwrap_or(0)
        .min(MAX_RECORD_TTL);
    let mut with_dropped = Vec::with_capacity(records.len());
    for (_, mut record) in records.iter().cloned() {
        record.ttl = ttl;
        with_dropped.push(record);
    }
    let records = records
        .into_iter()
        .filter(|(usable, _)| *usable)
        .map(|(_, mut r)| {
            r.ttl = ttl;
            r
        })
        .collect();
    Filtered {
        records,
        addrs,
        dropped,
        with_dropped,
        ttl,
    }
}

/// Normalised names from the query name through the answer's CNAME records:
/// `[qname, target1, target2, ...]`, at most `MAX_CNAME_CHAIN` hops, stopping at a loop.
fn cname_chain(qname: &Name, answers: &[Record]) -> Vec<String> {
    let mut chain = vec![normalise(qname)];
    for _ in 0..MAX_CNAME_CHAIN {
        let Some(last) = chain.last() else { break };
        let next = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if normalise(&r.name) == *last => Some(normalise(&target.0)),
            _ => None,
        });
        match next {
            Some(next) if !chain.contains(&next) => chain.push(next),
            _ => break,
        }
    }
    chain
}

/// A reply skeleton: the client's id, opcode, RD and CD, RA set, the question echoed,
/// EDNS when the client used it.
fn reply_to(query: &Message, rcode: ResponseCode) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.checking_disabled = query.metadata.checking_disabled;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = rcode;
    reply.add_queries(query.queries.iter().cloned());
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(u16::try_from(MAX_UDP_REPLY).unwrap_or(u16::MAX));
        reply.set_edns(edns);
    }
    reply
}

/// The reply's bytes. Over UDP a reply beyond the client's limit goes out truncated
/// (TC=1, no records) so the client retries over TCP; a reply that cannot be encoded
/// becomes SERVFAIL.
fn encode(query: &Message, reply: Message, transport: Transport) -> Vec<u8> {
    let limit = match transport {
        Transport::Udp => query
            .edns
            .as_ref()
            .map_or(CLASSIC_UDP_LIMIT, |e| usize::from(e.max_payload()))
            .clamp(CLASSIC_UDP_LIMIT, MAX_UDP_REPLY),
        Transport::Tcp => usize::from(u16::MAX),
    };
    match reply.to_vec() {
        Ok(bytes) if bytes.len() <= limit => return bytes,
        Ok(_) if transport == Transport::Udp => {
            if let Ok(bytes) = reply.truncate().to_vec() {
                return bytes;
            }
        }
        _ => {}
    }
    // Header-only SERVFAIL always encodes; if even that failed there is nothing to send
    // but an empty datagram, which a client treats as garbage and retries.
    Message::error_msg(
        query.metadata.id,
        query.metadata.op_code,
        ResponseCode::ServFail,
    )
    .to_vec()
    .unwrap_or_default()
}

/// FORMERR for bytes that did not parse, when at least the header is there and is a
/// query; nothing otherwise.
fn formerr_from_header(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < HEADER_LEN || bytes[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

/// `(name, qtype)` of the first question, for decisions (`""` when there is none).
fn describe(query: &Message) -> (String, String) {
    query
        .queries
        .first()
        .map_or((String::new(), String::new()), |q| {
            (normalise(q.name()), q.query_type().to_string())
        })
}

/// The conventional upper-case mnemonic (`NOERROR`, `NXDOMAIN`, ...).
pub(super) fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".to_string(),
        ResponseCode::FormErr => "FORMERR".to_string(),
        ResponseCode::ServFail => "SERVFAIL".to_string(),
        ResponseCode::NXDomain => "NXDOMAIN".to_string(),
        ResponseCode::NotImp => "NOTIMP".to_string(),
        ResponseCode::Refused => "REFUSED".to_string(),
        other => format!("RCODE{}", u16::from(other)),
    }
}
