//! The listeners: one UDP socket and one TCP listener on the same loopback port, each
//! serving queries on bounded sets of tasks.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use super::handler::Ctx;
use super::{
    AllowSink, DnsDecision, DnsError, DnsPolicy, ResolverConfig, Transport, MAX_INFLIGHT_UDP,
    MAX_QUERY_LEN, MAX_TCP_CONNS, TCP_IDLE,
};

/// How often to try another ephemeral port when the UDP port is taken for TCP.
const PORT_PAIR_ATTEMPTS: usize = 16;

/// A running resolver. Dropping it stops it too (the listener tasks are aborted, and
/// with them every query in flight); `shutdown` also waits for that.
pub struct Resolver {
    local: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Resolver {
    /// Binds UDP and TCP on `cfg.listen` (port 0: an ephemeral port free for both) and
    /// starts serving. Must be called inside a tokio runtime, which runs the resolver.
    pub async fn start(
        cfg: ResolverConfig,
        policy: DnsPolicy,
        sink: Box<dyn AllowSink>,
    ) -> Result<Self, DnsError> {
        if cfg.upstream.is_empty() {
            return Err(DnsError::NoUpstream);
        }
        let (udp, tcp, local) = bind_pair(cfg.listen).await?;
        let ctx = Arc::new(Ctx { policy, cfg, sink });
        let tasks = vec![
            tokio::spawn(serve_udp(Arc::new(udp), Arc::clone(&ctx))),
            tokio::spawn(serve_tcp(tcp, ctx)),
        ];
        Ok(Self { local, tasks })
    }

    /// Where the resolver listens (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops serving and waits for the listener tasks to end.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // The only expected error is the cancellation we asked for.
            let _ = task.await;
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub(super) async fn bind_pair(
    listen: SocketAddr,
) -> Result<(UdpSocket, TcpListener, SocketAddr), DnsError> {
    let attempts = if listen.port() == 0 {
        PORT_PAIR_ATTEMPTS
    } else {
        1
    };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|source| DnsError::Bind {
                addr: listen,
                proto: Transport::Udp,
                source,
            })?;
        let local = udp.local_addr().map_err(|source| DnsError::Bind {
            addr: listen,
            proto: Transport::Udp,
            source,
        })?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp, local)),
            Err(source) if source.kind() == ErrorKind::AddrInUse && listen.port() == 0 => {
                last = Some(DnsError::Bind {
                    addr: local,
                    proto: Transport::Tcp,
                    source,
                });
            }
            Err(source) => {
                return Err(DnsError::Bind {
                    addr: local,
                    proto: Transport::Tcp,
                    source,
                })
            }
        }
    }
    Err(last.unwrap_or(DnsError::Bind {
        addr: listen,
        proto: Transport::Tcp,
        source: std::io::Error::from(ErrorKind::AddrInUse),
    }))
}

async fn serve_udp(socket: Arc<UdpSocket>, ctx: Arc<Ctx>) {
    let permits = Arc::new(Semaphore::new(MAX_INFLIGHT_UDP));
    // Dropped (aborting every query task) when this task is aborted.
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_QUERY_LEN];
    loop {
        while tasks.try_join_next().is_some() {}
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // Transient (e.g. an ICMP error reported on the socket); keep serving.
            Err(e) => {
                tracing::debug!("dns resolver: udp receive failed: {e}");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let socket = Arc::clone(&socket);
                let ctx = Arc::clone(&ctx);
                tasks.spawn(async move {
                    let _permit = permit;
                    if let Some(reply) = ctx.handle(&query, peer, Transport::Udp).await {
                        send_udp(&socket, &reply, peer).await;
                    }
                });
            }
            Err(_) => {
                if let Some(reply) = ctx.overloaded(&query, peer) {
                    send_udp(&socket, &reply, peer).await;
                }
            }
        }
    }
}

async fn send_udp(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(reply, peer).await {
        tracing::debug!("dns resolver: udp reply to {peer} failed: {e}");
    }
}

async fn serve_tcp(listener: TcpListener, ctx: Arc<Ctx>) {
    let permits = Arc::new(Semaphore::new(MAX_TCP_CONNS));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!("dns resolver: tcp accept failed: {e}");
                continue;
            }
        };
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let ctx = Arc::clone(&ctx);
                tasks.spawn(async move {
                    let _permit = permit;
                    serve_tcp_conn(stream, peer, &ctx).await;
                });
            }
            Err(_) => {
                drop(stream);
                ctx.sink.decision(DnsDecision::Failed {
                    name: String::new(),
                    qtype: String::new(),
                    reason: format!(
                        "resolver overloaded: more than {MAX_TCP_CONNS} tcp connections, \
                         closed the one from {peer}"
                    ),
                });
            }
        }
    }
}

/// Length-prefixed queries, answered in order, until the client closes, stalls for
/// `TCP_IDLE`, or sends something too long.
async fn serve_tcp_conn(mut stream: TcpStream, peer: SocketAddr, ctx: &Ctx) {
    loop {
        let len = match timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            _ => return,
        };
        if len > MAX_QUERY_LEN {
            ctx.sink.decision(DnsDecision::Malformed {
                peer,
                reason: format!("tcp query of {len} bytes (at most {MAX_QUERY_LEN} served)"),
            });
            return;
        }
        let mut query = vec![0u8; len];
        match timeout(TCP_IDLE, stream.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = ctx.handle(&query, peer, Transport::Tcp).await else {
            return;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&reply_len.to_be_bytes());
        framed.extend_from_slice(&reply);
        match timeout(TCP_IDLE, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
