//! One query's exchange with the upstream resolvers: UDP first, TCP when the UDP answer
//! is truncated or the client came over TCP, every step inside one deadline.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_proto::op::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

use super::Transport;

/// Largest UDP datagram read from an upstream (we advertise a 1232-byte EDNS payload;
/// anything beyond this is cut and then fails to parse, which counts as no answer).
const MAX_UPSTREAM_UDP: usize = 4096;

/// Sends `request` to the upstreams in order until one gives a matching answer, all
/// before `deadline`. Each upstream gets an equal share of the time left. Returns the
/// answer, or why none came (naming the last upstream tried).
pub(super) async fn exchange(
    upstreams: &[SocketAddr],
    request: &Message,
    client: Transport,
    deadline: Instant,
) -> Result<Message, String> {
    let bytes = request
        .to_vec()
        .map_err(|e| format!("failed to encode the upstream query: {e}"))?;
    let mut last_error = String::from("no upstream resolver configured");
    for (i, upstream) in upstreams.iter().enumerate() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let left = u32::try_from(upstreams.len() - i).unwrap_or(u32::MAX);
        let attempt_deadline = now + (deadline - now) / left;
        match exchange_one(*upstream, &bytes, request, client, attempt_deadline).await {
            Ok(answer) => return Ok(answer),
            Err(e) => last_error = format!("upstream {upstream}: {e}"),
        }
    }
    Err(last_error)
}

async fn exchange_one(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
    client: Transport,
    deadline: Instant,
) -> Result<Message, String> {
    if client == Transport::Udp {
        let answer = timeout_at(deadline, udp_exchange(upstream, bytes, request))
            .await
            .map_err(|_| "udp: timed out".to_string())?
            .map_err(|e| format!("udp: {e}"))?;
        if !answer.metadata.truncation {
            return Ok(answer);
        }
    }
    timeout_at(deadline, tcp_exchange(upstream, bytes, request))
        .await
        .map_err(|_| "tcp: timed out".to_string())?
        .map_err(|e| format!("tcp: {e}"))
}

async fn udp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> Result<Message, String> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    // Connected: the kernel only delivers datagrams from the upstream's address.
    socket.connect(upstream).await.map_err(|e| e.to_string())?;
    socket.send(bytes).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MAX_UPSTREAM_UDP];
    loop {
        let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
        // A stray or spoofed datagram (wrong id or question) is ignored; the deadline
        // bounds how long we keep listening.
        if let Ok(answer) = Message::from_vec(&buf[..n]) {
            if answers(request, &answer) {
                return Ok(answer);
            }
        }
    }
}

async fn tcp_exchange(
    upstream: SocketAddr,
    bytes: &[u8],
    request: &Message,
) -> Result<Message, String> {
    let len = u16::try_from(bytes.len()).map_err(|_| "query too long".to_string())?;
    let mut stream = TcpStream::connect(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(|e| e.to_string())?;
    let len = stream.read_u16().await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(len)];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let answer = Message::from_vec(&buf).map_err(|e| format!("unparsable answer: {e}"))?;
    if !answers(request, &answer) {
        return Err("answer does not match the query".to_string());
    }
    Ok(answer)
}

/// `answer` is a response to `request`: same id, a response, the same single question
/// (the name compared case-insensitively, as resolvers may change its case).
fn answers(request: &Message, answer: &Message) -> bool {
    answer.metadata.id == request.metadata.id
        && answer.metadata.message_type == MessageType::Response
        && answer.queries.len() == request.queries.len()
        && answer.queries.iter().zip(&request.queries).all(|(a, q)| {
            a.query_type() == q.query_type()
                && a.query_class() == q.query_class()
                && a.name().eq_ignore_root(q.name())
        })
}
