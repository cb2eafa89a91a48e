//! A test upstream DNS server for the tests of the run's resolver (`net_dns`, `learn`):
//! hickory-proto messages over a real UDP socket on 127.0.0.1.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// A UDP DNS server on 127.0.0.1 answering A queries from a fixed table (others get
/// NXDOMAIN); it records every name it was asked. Stops when dropped.
pub struct Upstream {
    pub port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start(zone: &[(&str, [u8; 4])]) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("upstream: {e}"));
        sock.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap_or_else(|e| panic!("timeout: {e}"));
        let port = sock.local_addr().map(|a| a.port()).unwrap_or_default();
        let zone: HashMap<String, Ipv4Addr> = zone
            .iter()
            .map(|(n, ip)| (format!("{n}."), Ipv4Addr::from(*ip)))
            .collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(q) = query.queries.first().cloned() else {
                    continue;
                };
                let key = q.name().to_lowercase().to_ascii();
                if let Ok(mut s) = seen2.lock() {
                    s.push(key.trim_end_matches('.').to_owned());
                }
                let mut reply = Message::response(query.metadata.id, OpCode::Query);
                reply.metadata.recursion_desired = true;
                reply.metadata.recursion_available = true;
                reply.add_query(q.clone());
                match zone.get(&key) {
                    Some(ip) if q.query_type() == RecordType::A => {
                        let owner = Name::from_ascii(&key).unwrap_or_else(|e| panic!("{e}"));
                        reply.add_answer(Record::from_rdata(owner, 60, RData::A(A(*ip))));
                    }
                    Some(_) => {}
                    None => reply.metadata.response_code = ResponseCode::NXDomain,
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = sock.send_to(&bytes, peer);
                }
            }
        });
        Self { port, seen, stop }
    }

    #[allow(dead_code)] // not every test binary asks
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
