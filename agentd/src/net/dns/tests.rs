//! Resolver tests, all on loopback: a fake upstream (hickory-proto messages over real
//! UDP and TCP sockets on 127.0.0.1) answers fixed records; a test client queries the
//! resolver the way a stub resolver would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::*;

// ---------------------------------------------------------------------------------
// Fake upstream

/// A fixed zone: name → answer records. Names not in it get NXDOMAIN (with an SOA).
/// `truncate_over_udp` names are answered with TC=1 and no records over UDP.
#[derive(Clone, Default)]
struct Zone {
    records: HashMap<String, Vec<Record>>,
    truncate_over_udp: Vec<String>,
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn a(owner: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(Ipv4Addr::from(ip))))
}

fn aaaa(owner: &str, ttl: u32, ip: Ipv6Addr) -> Record {
    Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip)))
}

fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

fn zone() -> Zone {
    let mut z = Zone::default();
    let mut add = |n: &str, records: Vec<Record>| {
        z.records.insert(n.to_string(), records);
    };
    add(
        "api.example.com.",
        vec![a("api.example.com.", 300, [93, 184, 216, 34])],
    );
    add(
        "deep.sub.wild.test.",
        vec![a("deep.sub.wild.test.", 60, [93, 184, 216, 40])],
    );
    add("wild.test.", vec![a("wild.test.", 60, [93, 184, 216, 41])]);
    add(
        "rebind.example.com.",
        vec![a("rebind.example.com.", 60, [127, 0, 0, 2])],
    );
    add(
        "mixed.example.com.",
        vec![
            a("mixed.example.com.", 60, [127, 0, 0, 2]),
            a("mixed.example.com.", 60, [93, 184, 216, 35]),
            a("mixed.example.com.", 60, [169, 254, 169, 254]),
        ],
    );
    add(
        "mapped.example.com.",
        vec![aaaa(
            "mapped.example.com.",
            60,
            "::ffff:10.0.0.1".parse().unwrap(),
        )],
    );
    add(
        "internal.example.com.",
        vec![a("internal.example.com.", 60, [10, 1, 2, 3])],
    );
    add(
        "v6.example.com.",
        vec![aaaa(
            "v6.example.com.",
            120,
            "2606:2800:220:1::1".parse().unwrap(),
        )],
    );
    // A CDN chain with stray records an attacker-controlled upstream might add.
    add(
        "cdn.example.com.",
        vec![
            cname("cdn.example.com.", 600, "edge.cdnprovider.net."),
            cname("edge.cdnprovider.net.", 30, "e1.cdnprovider.net."),
            a("e1.cdnprovider.net.", 120, [93, 184, 216, 50]),
            a("unrelated.other.net.", 120, [1, 2, 3, 4]),
            cname("other.example.com.", 120, "x.other.net."),
        ],
    );
    add(
        "loop.example.com.",
        vec![
            cname("loop.example.com.", 60, "a.loop.net."),
            cname("a.loop.net.", 60, "loop.example.com."),
        ],
    );
    add(
        "txt.example.com.",
        vec![Record::from_rdata(
            name("txt.example.com."),
            60,
            RData::TXT(TXT::new(vec!["hello".to_string()])),
        )],
    );
    // 40 addresses: more than 512 bytes, so a non-EDNS UDP client gets TC=1.
    add(
        "many.example.com.",
        (0..40u8)
            .map(|i| a("many.example.com.", 60, [93, 184, 217, i]))
            .collect(),
    );
    add(
        "big.example.com.",
        vec![a("big.example.com.", 60, [93, 184, 216, 60])],
    );
    z.truncate_over_udp.push("big.example.com.".to_string());
    z
}

struct FakeUpstream {
    addr: SocketAddr,
    /// (lower-case name, type, transport) of every query received.
    seen: Arc<Mutex<Vec<(String, RecordType, Transport)>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeUpstream {
    async fn start(zone: Zone) -> Self {
        let (udp, tcp, addr) = server::bind_pair("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let zone = Arc::new(zone);
        let udp_task = {
            let (seen, zone) = (Arc::clone(&seen), Arc::clone(&zone));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
                    let reply = fake_answer(&zone, &buf[..n], Transport::Udp, &seen);
                    udp.send_to(&reply, peer).await.unwrap();
                }
            })
        };
        let tcp_task = {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                loop {
                    let (mut stream, _) = tcp.accept().await.unwrap();
                    let len = stream.read_u16().await.unwrap();
                    let mut buf = vec![0u8; usize::from(len)];
                    stream.read_exact(&mut buf).await.unwrap();
                    let reply = fake_answer(&zone, &buf, Transport::Tcp, &seen);
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    stream.write_all(&framed).await.unwrap();
                }
            })
        };
        Self {
            addr,
            seen,
            tasks: vec![udp_task, tcp_task],
        }
    }

    fn seen_names(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.0.clone())
            .collect()
    }
}

fn fake_answer(
    zone: &Zone,
    bytes: &[u8],
    transport: Transport,
    seen: &Mutex<Vec<(String, RecordType, Transport)>>,
) -> Vec<u8> {
    let query = Message::from_vec(bytes).unwrap();
    let q = query.queries[0].clone();
    let key = q.name().to_lowercase().to_ascii();
    seen.lock().unwrap().push((
        key.trim_end_matches('.').to_string(),
        q.query_type(),
        transport,
    ));
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = true;
    reply.metadata.recursion_available = true;
    reply.add_query(q.clone());
    if transport == Transport::Udp && zone.truncate_over_udp.contains(&key) {
        reply.metadata.truncation = true;
        return reply.to_vec().unwrap();
    }
    match zone.records.get(&key) {
        Some(records) => {
            for r in records {
                // Stray and chain records are always sent; the queried owner's records
                // only when they are of the asked type (or CNAMEs).
                let on_owner = r.name.to_lowercase().to_ascii() == key;
                if !on_owner
                    || r.record_type() == q.query_type()
                    || r.record_type() == RecordType::CNAME
                {
                    reply.add_answer(r.clone());
                }
            }
            // Glue in the additional section must never reach the client or the sink.
            reply.add_additional(a("ns1.example.com.", 60, [5, 6, 7, 8]));
        }
        None => {
            reply.metadata.response_code = ResponseCode::NXDomain;
            let soa = SOA::new(
                name("ns1.example.com."),
                name("hostmaster.example.com."),
                1,
                3600,
                600,
                86400,
                60,
            );
            reply.add_authority(Record::from_rdata(
                name("example.com."),
                60,
                RData::SOA(soa),
            ));
        }
    }
    reply.to_vec().unwrap()
}

// ---------------------------------------------------------------------------------
// Recording sink

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Allow {
        name: String,
        rule: String,
        addrs: Vec<IpAddr>,
        ttl: Duration,
    },
    Decision(DnsDecision),
    /// `allow()` found the reply already waiting on the probe socket: wrong order.
    ReplyArrivedBeforeAllow,
}

#[derive(Clone, Default)]
struct RecordingSink {
    log: Arc<Mutex<Vec<Seen>>>,
    fail_allow: bool,
    /// The client's socket (non-blocking): `allow()` peeks at it to prove the reply
    /// has not been sent yet.
    probe: Option<Arc<std::net::UdpSocket>>,
    /// What `tainted()` answers.
    tainted: bool,
}

impl AllowSink for RecordingSink {
    fn allow(&self, name: &str, rule: &str, addrs: &[IpAddr], ttl: Duration) -> Result<(), String> {
        if self.fail_allow {
            return Err("map full".to_string());
        }
        if let Some(probe) = &self.probe {
            if probe.peek(&mut [0u8; 1]).is_ok() {
                self.log.lock().unwrap().push(Seen::ReplyArrivedBeforeAllow);
            }
        }
        self.log.lock().unwrap().push(Seen::Allow {
            name: name.to_string(),
            rule: rule.to_string(),
            addrs: addrs.to_vec(),
            ttl,
        });
        Ok(())
    }

    fn decision(&self, decision: DnsDecision) {
        self.log.lock().unwrap().push(Seen::Decision(decision));
    }

    fn tainted(&self) -> bool {
        self.tainted
    }
}

impl RecordingSink {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

// ---------------------------------------------------------------------------------
// Harness

const GRACE: Duration = Duration::from_secs(30);

fn test_policy() -> DnsPolicy {
    let mut p = DnsPolicy::new();
    for (pattern, rule) in [
        ("api.example.com", "api.example.com:443"),
        ("*.wild.test", "*.wild.test:443"),
        ("rebind.example.com", "rebind.example.com:443"),
        ("mixed.example.com", "mixed.example.com:443"),
        ("mapped.example.com", "mapped.example.com:443"),
        ("internal.example.com", "internal.example.com:5432"),
        ("v6.example.com", "v6.example.com:443"),
        ("cdn.example.com", "cdn.example.com:443"),
        ("loop.example.com", "loop.example.com:443"),
        ("txt.example.com", "txt.example.com:443"),
        ("many.example.com", "many.example.com:443"),
        ("big.example.com", "big.example.com:443"),
        ("missing.example.com", "missing.example.com:443"),
    ] {
        p.allow_name(pattern, rule).unwrap();
    }
    p.allow_cidr("10.0.0.0".parse().unwrap(), 8).unwrap();
    p
}

struct Harness {
    resolver: Resolver,
    sink: RecordingSink,
    upstream: FakeUpstream,
}

async fn harness_with(sink: RecordingSink, timeout: Duration) -> Harness {
    let upstream = FakeUpstream::start(zone()).await;
    let cfg = ResolverConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: vec![upstream.addr],
        grace: GRACE,
        timeout,
    };
    let resolver = Resolver::start(cfg, test_policy(), Box::new(sink.clone()))
        .await
        .unwrap();
    Harness {
        resolver,
        sink,
        upstream,
    }
}

async fn harness() -> Harness {
    harness_with(RecordingSink::default(), Duration::from_secs(2)).await
}

fn client_query(qname: &str, qtype: RecordType, edns: bool) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

async fn udp_exchange_raw(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("no reply from the resolver")
        .unwrap();
    buf.truncate(n);
    buf
}

async fn udp_query(server: SocketAddr, query: &Message) -> Message {
    let reply = udp_exchange_raw(server, &query.to_vec().unwrap()).await;
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, query.metadata.id);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    reply
}

async fn tcp_query(server: SocketAddr, query: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let bytes = query.to_vec().unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    let reply = Message::from_vec(&buf).unwrap();
    assert_eq!(reply.metadata.id, query.metadata.id);
    reply
}

fn addrs_of(reply: &Message) -> Vec<IpAddr> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------------
// End-to-end tests

#[tokio::test]
async fn allowed_name_resolves_and_sink_runs_before_the_reply() {
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_nonblocking(true).unwrap();
    let sink = RecordingSink {
        probe: Some(Arc::new(client.try_clone().unwrap())),
        ..RecordingSink::default()
    };
    let h = harness_with(sink, Duration::from_secs(2)).await;
    let client = UdpSocket::from_std(client).unwrap();
    let query = client_query("API.Example.com.", RecordType::A, true);
    client
        .send_to(&query.to_vec().unwrap(), h.resolver.local_addr())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.id, query.metadata.id);
    // Read the sink the instant the reply arrives: the resolver must have filled the
    // allow map (and reported the decision) before sending.
    let log = h.sink.take();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.recursion_available);
    assert_eq!(addrs_of(&reply), vec![ip("93.184.216.34")]);
    assert_eq!(reply.answers[0].ttl, 300);
    assert!(reply.additionals.is_empty(), "glue must be stripped");
    assert_eq!(
        log,
        vec![
            Seen::Allow {
                name: "api.example.com".into(),
                rule: "api.example.com:443".into(),
                addrs: vec![ip("93.184.216.34")],
                ttl: Duration::from_secs(300) + GRACE,
            },
            Seen::Decision(DnsDecision::Answered {
                name: "api.example.com".into(),
                qtype: "A".into(),
                rule: "api.example.com:443".into(),
                addrs: vec![ip("93.184.216.34")],
                allowed: true,
                ttl: Duration::from_secs(300),
                rcode: "NOERROR".into(),
            }),
        ]
    );
    h.resolver.shutdown().await;
}

#[tokio::test]
async fn denied_name_is_refused_audited_and_never_forwarded() {
    let h = harness().await;
    let reply = udp_query(
        h.resolver.local_addr(),
        &client_query("evil.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert!(reply.answers.is_empty());
    assert_eq!(
        h.sink.take(),
        vec![Seen::Decision(DnsDecision::Refused {
            name: "evil.com".into(),
            qtype: "A".into(),
            reason: "no rule".into(),
            rcode: "REFUSED".into(),
        })]
    );
    assert!(h.upstream.seen_names().is_empty());
}

#[tokio::test]
async fn once_tainted_an_allowed_name_is_refused_and_never_forwarded() {
    let sink = RecordingSink {
        tainted: true,
        ..RecordingSink::default()
    };
    let h = harness_with(sink, Duration::from_secs(2)).await;
    let reply = udp_query(
        h.resolver.local_addr(),
        &client_query("api.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert_eq!(
        h.sink.take(),
        vec![Seen::Decision(DnsDecision::Refused {
            name: "api.example.com".into(),
            qtype: "A".into(),
            reason: "tainted: no after_taint rule".into(),
            rcode: "REFUSED".into(),
        })]
    );
    assert!(h.upstream.seen_names().is_empty());
}

#[tokio::test]
async fn wildcard_allows_subdomains_but_not_the_apex() {
    let h = harness().await;
    let server = h.resolver.local_addr();
    let reply = udp_query(
        server,
        &client_query("deep.sub.wild.test.", RecordType::A, true),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs_of(&reply), vec![ip("93.184.216.40")]);
    let log = h.sink.take();
    assert!(matches!(&log[0], Seen::Allow { rule, .. } if rule == "*.wild.test:443"));

    let reply = udp_query(server, &client_query("wild.test.", RecordType::A, true)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert_eq!(
        h.upstream.seen_names(),
        vec!["deep.sub.wild.test".to_string()]
    );
}

#[tokio::test]
async fn rebinding_answer_is_dropped_with_servfail() {
    let h = harness().await;
    let reply = udp_query(
        h.resolver.local_addr(),
        &client_query("rebind.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(reply.answers.is_empty());
    let log = h.sink.take();
    assert_eq!(
        log,
        vec![
            Seen::Decision(DnsDecision::RebindingDropped {
                name: "rebind.example.com".into(),
                qtype: "A".into(),
                rule: "rebind.example.com:443".into(),
                addrs: vec![ip("127.0.0.2")],
            }),
            Seen::Decision(DnsDecision::Failed {
                name: "rebind.example.com".into(),
                qtype: "A".into(),
                reason: "every answer address is private, loopback or link-local (rebinding)"
                    .into(),
            }),
        ],
        "no allow() for a rebinding answer"
    );
}

#[tokio::test]
async fn mixed_answer_keeps_only_public_addresses() {
    let h = harness().await;
    let reply = udp_query(
        h.resolver.local_addr(),
        &client_query("mixed.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs_of(&reply), vec![ip("93.184.216.35")]);
    let log = h.sink.take();
    assert_eq!(
        log[0],
        Seen::Decision(DnsDecision::RebindingDropped {
            name: "mixed.example.com".into(),
            qtype: "A".into(),
            rule: "mixed.example.com:443".into(),
            addrs: vec![ip("127.0.0.2"), ip("169.254.169.254")],
        })
    );
    assert!(matches!(&log[1], Seen::Allow { addrs, .. } if *addrs == vec![ip("93.184.216.35")]));
}

#[tokio::test]
async fn ipv4_mapped_private_answer_is_rebinding_and_cidr_covered_private_is_not() {
    let h = harness().await;
    let server = h.resolver.local_addr();
    // ::ffff:10.0.0.1 is 10.0.0.1, which the policy's 10.0.0.0/8 covers: usable, and
    // handed to the sink in its IPv4 form.
    let reply = udp_query(
        server,
        &client_query("mapped.example.com.", RecordType::AAAA, true),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let log = h.sink.take();
    assert!(matches!(&log[0], Seen::Allow { addrs, .. } if *addrs == vec![ip("10.0.0.1")]));

    let reply = udp_query(
        server,
        &client_query("internal.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(addrs_of(&reply), vec![ip("10.1.2.3")]);

    // Without the CIDR, the same mapped answer is rebinding.
    let mut policy = DnsPolicy::new();
    policy.allow_name("mapped.example.com", "m").unwrap();
    assert!(!policy.address_usable(ip("::ffff:10.0.0.1")));
    assert!(!policy.address_usable(ip("::ffff:127.0.0.1")));
}

#[tokio::test]
async fn cname_chain_is_followed_and_stray_records_removed() {
    let h = harness().await;
    let reply = udp_query(
        h.resolver.local_addr(),
        &client_query("cdn.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    // The chain's two CNAMEs and the final A; not the unrelated A, not the CNAME of a
    // name off the chain.
    let owners: Vec<String> = reply.answers.iter().map(|r| r.name.to_ascii()).collect();
    assert_eq!(
        owners,
        vec![
            "cdn.example.com.",
            "edge.cdnprovider.net.",
            "e1.cdnprovider.net."
        ]
    );
    assert_eq!(addrs_of(&reply), vec![ip("93.184.216.50")]);
    // Every TTL is the chain's smallest (30 s), the lifetime of the allow entry.
    assert!(reply.answers.iter().all(|r| r.ttl == 30));
    let log = h.sink.take();
    assert_eq!(
        log[0],
        Seen::Allow {
            name: "cdn.example.com".into(),
            rule: "cdn.example.com:443".into(),
            addrs: vec![ip("93.184.216.50")],
            ttl: Duration::from_secs(30) + GRACE,
        }
    );
}

#[tokio::test]
async fn cname_loop_ends_without_addresses() {
    let h = harness().await;
    let reply = udp_query(
        h.resolver.local_addr(),
        &client_query("loop.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(addrs_of(&reply).is_empty());
    let log = h.sink.take();
    assert!(
        matches!(&log[..], [Seen::Decision(DnsDecision::Answered { addrs, .. })] if addrs.is_empty())
    );
}

#[tokio::test]
async fn tcp_query_works() {
    let h = harness().await;
    let reply = tcp_query(
        h.resolver.local_addr(),
        &client_query("v6.example.com.", RecordType::AAAA, false),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs_of(&reply), vec![ip("2606:2800:220:1::1")]);
    assert!(
        matches!(&h.sink.take()[0], Seen::Allow { ttl, .. } if *ttl == Duration::from_secs(120) + GRACE)
    );
    // A TCP client is forwarded over TCP.
    assert_eq!(
        h.upstream.seen.lock().unwrap().clone(),
        vec![(
            "v6.example.com".to_string(),
            RecordType::AAAA,
            Transport::Tcp
        )]
    );
}

#[tokio::test]
async fn truncated_upstream_answer_is_retried_over_tcp() {
    let h = harness().await;
    let reply = udp_query(
        h.resolver.local_addr(),
        &client_query("big.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(addrs_of(&reply), vec![ip("93.184.216.60")]);
    let transports: Vec<Transport> = h
        .upstream
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.2)
        .collect();
    assert_eq!(transports, vec![Transport::Udp, Transport::Tcp]);
}

#[tokio::test]
async fn large_answer_is_truncated_for_a_plain_udp_client_and_whole_over_tcp() {
    let h = harness().await;
    let server = h.resolver.local_addr();
    let reply = udp_query(
        server,
        &client_query("many.example.com.", RecordType::A, false),
    )
    .await;
    assert!(reply.metadata.truncation);
    assert!(reply.answers.is_empty());
    let reply = tcp_query(
        server,
        &client_query("many.example.com.", RecordType::A, false),
    )
    .await;
    assert!(!reply.metadata.truncation);
    assert_eq!(addrs_of(&reply).len(), 40);
}

#[tokio::test]
async fn upstream_timeout_gives_servfail() {
    // An upstream that never answers: a bound UDP socket nobody reads.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = RecordingSink::default();
    let cfg = ResolverConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: vec![silent.local_addr().unwrap()],
        grace: GRACE,
        timeout: Duration::from_millis(200),
    };
    let resolver = Resolver::start(cfg, test_policy(), Box::new(sink.clone()))
        .await
        .unwrap();
    let reply = udp_query(
        resolver.local_addr(),
        &client_query("api.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    let log = sink.take();
    assert_eq!(
        log,
        vec![Seen::Decision(DnsDecision::Failed {
            name: "api.example.com".into(),
            qtype: "A".into(),
            reason: format!("upstream {}: udp: timed out", silent.local_addr().unwrap()),
        })]
    );
    resolver.shutdown().await;
}

#[tokio::test]
async fn udp_queries_beyond_the_in_flight_limit_get_servfail() {
    // Every query waits on a silent upstream, so the first MAX_INFLIGHT_UDP hold all
    // the slots and the next one is answered at once with SERVFAIL.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = RecordingSink::default();
    let cfg = ResolverConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: vec![silent.local_addr().unwrap()],
        grace: GRACE,
        timeout: Duration::from_secs(30),
    };
    let resolver = Resolver::start(cfg, test_policy(), Box::new(sink.clone()))
        .await
        .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bytes = client_query("api.example.com.", RecordType::A, true)
        .to_vec()
        .unwrap();
    for i in 0..MAX_INFLIGHT_UDP {
        client.send_to(&bytes, resolver.local_addr()).await.unwrap();
        if i % 8 == 7 {
            // Let the resolver drain its socket so no datagram is lost to a full
            // receive buffer (the runtime is single-threaded).
            tokio::task::yield_now().await;
        }
    }
    let last = client_query("api.example.com.", RecordType::A, true);
    let reply = udp_query(resolver.local_addr(), &last).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(
        sink.take(),
        vec![Seen::Decision(DnsDecision::Failed {
            name: "api.example.com".into(),
            qtype: "A".into(),
            reason: "resolver overloaded: too many queries in flight".into(),
        })]
    );
    resolver.shutdown().await;
}

#[tokio::test]
async fn second_upstream_is_tried_when_the_first_is_silent() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = FakeUpstream::start(zone()).await;
    let sink = RecordingSink::default();
    let cfg = ResolverConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: vec![silent.local_addr().unwrap(), upstream.addr],
        grace: GRACE,
        timeout: Duration::from_millis(400),
    };
    let resolver = Resolver::start(cfg, test_policy(), Box::new(sink.clone()))
        .await
        .unwrap();
    let reply = udp_query(
        resolver.local_addr(),
        &client_query("api.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(addrs_of(&reply), vec![ip("93.184.216.34")]);
}

#[tokio::test]
async fn sink_failure_gives_servfail() {
    let sink = RecordingSink {
        fail_allow: true,
        ..RecordingSink::default()
    };
    let h = harness_with(sink, Duration::from_secs(2)).await;
    let reply = udp_query(
        h.resolver.local_addr(),
        &client_query("api.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(reply.answers.is_empty());
    assert_eq!(
        h.sink.take(),
        vec![Seen::Decision(DnsDecision::Failed {
            name: "api.example.com".into(),
            qtype: "A".into(),
            reason: "failed to allow the answer's addresses: map full".into(),
        })]
    );
}

#[tokio::test]
async fn nxdomain_and_non_address_types_pass_through_without_allow() {
    let h = harness().await;
    let server = h.resolver.local_addr();
    let reply = udp_query(
        server,
        &client_query("missing.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        reply.authorities.len(),
        1,
        "the SOA stays for negative caching"
    );
    let reply = udp_query(
        server,
        &client_query("txt.example.com.", RecordType::TXT, true),
    )
    .await;
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(reply.answers[0].record_type(), RecordType::TXT);
    let log = h.sink.take();
    assert!(log.iter().all(|s| !matches!(s, Seen::Allow { .. })));
    assert!(
        matches!(&log[0], Seen::Decision(DnsDecision::Answered { rcode, .. }) if rcode == "NXDOMAIN")
    );
}

#[tokio::test]
async fn malformed_and_unsupported_queries() {
    let h = harness().await;
    let server = h.resolver.local_addr();
    // A header claiming one question, then garbage: FORMERR with the same id.
    let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    junk.extend_from_slice(&[0xff; 5]);
    let reply = Message::from_vec(&udp_exchange_raw(server, &junk).await).unwrap();
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert!(matches!(
        &h.sink.take()[..],
        [Seen::Decision(DnsDecision::Malformed { .. })]
    ));

    // Class CH for an allowed name: REFUSED.
    let mut q = client_query("api.example.com.", RecordType::A, false);
    q.queries[0].set_query_class(DNSClass::CH);
    let reply = udp_query(server, &q).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);

    // Not a standard query: NOTIMP.
    let mut q = client_query("api.example.com.", RecordType::A, false);
    q.metadata.op_code = OpCode::Status;
    let reply = udp_query(server, &q).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
    assert!(h.upstream.seen_names().is_empty());
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let h = harness().await;
    let addr = h.resolver.local_addr();
    h.resolver.shutdown().await;
    // Both sockets are gone: the port can be bound again.
    let _udp = std::net::UdpSocket::bind(addr).unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn start_without_upstream_fails() {
    let cfg = ResolverConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: vec![],
        grace: GRACE,
        timeout: Duration::from_secs(1),
    };
    let err = Resolver::start(cfg, test_policy(), Box::new(RecordingSink::default()))
        .await
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "no upstream resolver configured");
}

// ---------------------------------------------------------------------------------
// Unit tests: policy and resolv.conf

#[test]
fn wildcard_and_exact_matching() {
    let mut p = DnsPolicy::new();
    p.allow_name("*.example.com", "*.example.com:443").unwrap();
    p.allow_name("api.example.com.", "api.example.com:8443")
        .unwrap();
    p.allow_name("*.api.example.com", "*.api.example.com:443")
        .unwrap();
    p.allow_name("Exact.Test", "exact.test").unwrap();

    assert_eq!(
        p.match_name("a.example.com").unwrap().rules,
        vec!["*.example.com:443"]
    );
    assert_eq!(
        p.match_name("A.B.Example.COM.").unwrap().rules,
        vec!["*.example.com:443"],
        "any depth, any case, trailing dot"
    );
    assert!(
        p.match_name("example.com").is_none(),
        "wildcard excludes the apex"
    );
    assert!(p.match_name("badexample.com").is_none(), "label boundary");
    assert!(p.match_name("example.com.evil.net").is_none());
    // Exact first, then the longest wildcard, then shorter ones.
    assert_eq!(
        p.match_name("api.example.com").unwrap().rules,
        vec!["api.example.com:8443", "*.example.com:443"]
    );
    let m = p.match_name("x.api.example.com").unwrap();
    assert_eq!(m.rules, vec!["*.api.example.com:443", "*.example.com:443"]);
    assert_eq!(m.primary(), "*.api.example.com:443");
    assert!(p.match_name("exact.test").is_some());
    assert!(
        p.match_name("a.exact.test").is_none(),
        "exact is not a wildcard"
    );
}

#[test]
fn bad_patterns_are_rejected() {
    let mut p = DnsPolicy::new();
    for bad in ["*", "*.", "a.*.com", "*a.com", "**.com", "a..b", ""] {
        assert!(
            p.allow_name(bad, bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
    assert!(p.allow_cidr(ip("10.0.0.0"), 33).is_err());
    assert!(p.allow_cidr(ip("::"), 129).is_err());
}

#[test]
fn unicode_patterns_match_their_punycode() {
    let mut p = DnsPolicy::new();
    p.allow_name("bücher.example", "bücher.example:443")
        .unwrap();
    assert!(p.match_name("xn--bcher-kva.example").is_some());
}

#[test]
fn non_public_ranges() {
    let p = DnsPolicy::new();
    for addr in [
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.255",
        "127.0.0.1",
        "127.0.0.2",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:192.168.0.1",
        "64:ff9b::a00:1",
    ] {
        assert!(
            !p.address_usable(ip(addr)),
            "{addr} must count as rebinding"
        );
    }
    for addr in [
        "93.184.216.34",
        "172.15.0.1",
        "172.32.0.1",
        "100.63.0.1",
        "100.128.0.1",
        "8.8.8.8",
        "2606:2800:220:1::1",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ] {
        assert!(p.address_usable(ip(addr)), "{addr} is public");
    }
}

#[test]
fn policy_cidrs_cover_private_answers() {
    let mut p = DnsPolicy::new();
    p.allow_cidr(ip("127.0.0.0"), 8).unwrap();
    p.allow_cidr(ip("::ffff:192.168.0.0"), 112).unwrap();
    p.allow_cidr(ip("fd00::"), 8).unwrap();
    assert!(p.address_usable(ip("127.0.0.2")));
    assert!(
        p.address_usable(ip("::ffff:127.0.0.2")),
        "mapped judged as IPv4"
    );
    assert!(
        p.address_usable(ip("192.168.3.4")),
        "mapped CIDR covers IPv4"
    );
    assert!(p.address_usable(ip("192.169.3.4")), "public anyway");
    assert!(p.address_usable(ip("fd00::5")));
    assert!(!p.address_usable(ip("fe80::1")));
    assert!(!p.address_usable(ip("10.0.0.1")));
}

#[test]
fn resolv_conf_nameservers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolv.conf");
    std::fs::write(
        &path,
        "# generated\nsearch example.com\nnameserver 127.0.0.53\n\
         nameserver 2001:4860:4860::8888 # google\n;nameserver 9.9.9.9\n\
         nameserver fe80::1%2\nnameserver fe80::2%eth0\nnameserver bogus\noptions edns0\n",
    )
    .unwrap();
    let got = upstreams_from_resolv_conf(&path).unwrap();
    let scoped: SocketAddr = "[fe80::1%2]:53".parse().unwrap();
    assert_eq!(
        got,
        vec![
            "127.0.0.53:53".parse().unwrap(),
            "[2001:4860:4860::8888]:53".parse().unwrap(),
            scoped,
        ]
    );

    std::fs::write(&path, "search example.com\n").unwrap();
    let err = upstreams_from_resolv_conf(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{} names no usable nameserver", path.display())
    );
    let err = upstreams_from_resolv_conf(Path::new("/nonexistent/resolv.conf")).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("failed to read /nonexistent/resolv.conf: "));
}

#[test]
fn policy_from_net_rules() {
    use crate::policy::{NetHost, NetRule, Proto, Span};
    let rule = |written: &str, host: NetHost| NetRule {
        written: written.to_string(),
        host,
        ports: Some((443, 443)),
        proto: Some(Proto::Tcp),
        span: Span::default(),
    };
    let p = DnsPolicy::from_net_rules(&[
        rule(
            "api.example.com:443/tcp",
            NetHost::Domain("api.example.com".into()),
        ),
        rule("*.example.com:443", NetHost::Domain("*.example.com".into())),
        rule(
            "10.0.0.0/8:5432",
            NetHost::Cidr {
                addr: ip("10.0.0.0"),
                prefix: 8,
            },
        ),
    ])
    .unwrap();
    assert!(p.has_names());
    assert_eq!(
        p.match_name("api.example.com").unwrap().rules,
        vec!["api.example.com:443/tcp", "*.example.com:443"]
    );
    assert!(p.address_usable(ip("10.9.9.9")));
    assert!(!p.address_usable(ip("192.168.0.1")));
    assert!(!DnsPolicy::from_net_rules(&[]).unwrap().has_names());
}

#[tokio::test]
async fn tcp_connections_beyond_the_limit_are_closed() {
    let h = harness().await;
    let server = h.resolver.local_addr();
    let mut idle = Vec::new();
    for _ in 0..MAX_TCP_CONNS {
        idle.push(TcpStream::connect(server).await.unwrap());
    }
    // The kernel completes the handshake; the resolver then closes it unread.
    let mut extra = TcpStream::connect(server).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the connection beyond the limit is closed");
    let log = h.sink.take();
    assert_eq!(log.len(), 1);
    assert!(matches!(
        &log[0],
        Seen::Decision(DnsDecision::Failed { name, reason, .. })
            if name.is_empty() && reason.starts_with("resolver overloaded: more than 64 tcp connections")
    ));
    // Closing one frees a slot: a query works again.
    drop(idle.pop());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reply = tcp_query(
        server,
        &client_query("api.example.com.", RecordType::A, false),
    )
    .await;
    assert_eq!(addrs_of(&reply), vec![ip("93.184.216.34")]);
}

#[tokio::test]
async fn resolver_on_ipv6_loopback_with_a_shared_sink() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIP: resolver_on_ipv6_loopback_with_a_shared_sink: ::1 is not configured");
        return;
    }
    let upstream = FakeUpstream::start(zone()).await;
    let shared = Arc::new(RecordingSink::default());
    let mut resolvers = Vec::new();
    for listen in ["127.0.0.1:0", "[::1]:0"] {
        let cfg = ResolverConfig {
            listen: listen.parse().unwrap(),
            upstream: vec![upstream.addr],
            grace: GRACE,
            timeout: Duration::from_secs(2),
        };
        resolvers.push(
            Resolver::start(cfg, test_policy(), Box::new(Arc::clone(&shared)))
                .await
                .unwrap(),
        );
    }
    let v6 = resolvers[1].local_addr();
    assert!(v6.ip().is_loopback() && v6.is_ipv6());
    let sock = UdpSocket::bind("[::1]:0").await.unwrap();
    let query = client_query("api.example.com.", RecordType::A, true);
    sock.send_to(&query.to_vec().unwrap(), v6).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(addrs_of(&reply), vec![ip("93.184.216.34")]);
    assert!(matches!(&shared.take()[0], Seen::Allow { .. }));
    for r in resolvers {
        r.shutdown().await;
    }
}

#[tokio::test]
async fn audit_mode_resolves_denied_names_and_keeps_rebinding_answers() {
    let upstream = FakeUpstream::start(zone()).await;
    let sink = RecordingSink::default();
    let mut policy = DnsPolicy::new();
    policy
        .allow_name("rebind.example.com", "rebind.example.com:443")
        .unwrap();
    policy.set_audit_only(true);
    let cfg = ResolverConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: vec![upstream.addr],
        grace: GRACE,
        timeout: Duration::from_secs(2),
    };
    let resolver = Resolver::start(cfg, policy, Box::new(sink.clone()))
        .await
        .unwrap();
    let server = resolver.local_addr();

    // No rule: resolved anyway, reported, not allowed.
    let reply = udp_query(
        server,
        &client_query("api.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(addrs_of(&reply), vec![ip("93.184.216.34")]);
    assert_eq!(
        sink.take(),
        vec![
            Seen::Decision(DnsDecision::WouldRefuse {
                name: "api.example.com".into(),
                qtype: "A".into(),
                reason: "no rule".into(),
            }),
            Seen::Decision(DnsDecision::Answered {
                name: "api.example.com".into(),
                qtype: "A".into(),
                rule: "no rule".into(),
                addrs: vec![ip("93.184.216.34")],
                allowed: false,
                ttl: Duration::from_secs(300),
                rcode: "NOERROR".into(),
            }),
        ]
    );

    // Rebinding: kept in the answer, reported, not allowed.
    let reply = udp_query(
        server,
        &client_query("rebind.example.com.", RecordType::A, true),
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs_of(&reply), vec![ip("127.0.0.2")]);
    assert_eq!(
        sink.take(),
        vec![
            Seen::Decision(DnsDecision::WouldDropRebinding {
                name: "rebind.example.com".into(),
                qtype: "A".into(),
                rule: "rebind.example.com:443".into(),
                addrs: vec![ip("127.0.0.2")],
            }),
            Seen::Decision(DnsDecision::Answered {
                name: "rebind.example.com".into(),
                qtype: "A".into(),
                rule: "rebind.example.com:443".into(),
                addrs: vec![],
                allowed: false,
                ttl: Duration::from_secs(60),
                rcode: "NOERROR".into(),
            }),
        ]
    );
    resolver.shutdown().await;
}
