//! Aborting a run's TCP connections (`SOCK_DESTROY` over `NETLINK_SOCK_DIAG`), used when
//! a network budget kills the run.
//!
//! Killing the processes is not enough: a TCP socket closed by a dying process keeps
//! sending what was already in its send buffer (up to several MiB), and once the run's
//! cgroup_skb programs are detached nothing holds it back. Aborting the sockets (as
//! `ss -K cgroup PATH` does) discards that data and resets the connections.
//! Needs `CONFIG_INET_DIAG_DESTROY`; without it the error says so.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
/// `INET_DIAG_CGROUP_ID`: the socket's v2 cgroup id (u64), in every dump reply.
const INET_DIAG_CGROUP_ID: u16 = 21;
const NLMSG_HDR_LEN: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_sockid` (ports, addresses, interface, cookie).
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_msg`: family, state, timer, retrans, sockid, then 5 u32.
const DIAG_MSG_LEN: usize = 4 + SOCKID_LEN + 20;

/// Aborts every TCP socket (IPv4 and IPv6) whose cgroup is `cgroup_id`; returns how many.
pub fn abort_tcp_sockets(cgroup_id: u64) -> io::Result<usize> {
    let nl = open()?;
    let mut aborted = 0;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for sockid in dump(&nl, family, cgroup_id)? {
            destroy(&nl, family, &sockid)?;
            aborted += 1;
        }
    }
    Ok(aborted)
}

fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `inet_diag_req_v2` for TCP sockets of `family` in any state, with `sockid`.
fn request(kind: u16, flags: u16, family: u8, sockid: &[u8; SOCKID_LEN]) -> Vec<u8> {
    let len = (NLMSG_HDR_LEN + REQ_LEN) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    m.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
    m.extend_from_slice(sockid);
    m
}

fn send(nl: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: `msg` is a valid buffer of msg.len() bytes.
    let n = unsafe { libc::send(nl.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv(nl: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for buf.len() bytes.
    let n = unsafe { libc::recv(nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The sockid of every TCP socket of `family` in cgroup `cgroup_id`.
fn dump(nl: &OwnedFd, family: u8, cgroup_id: u64) -> io::Result<Vec<[u8; SOCKID_LEN]>> {
    send(
        nl,
        &request(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            family,
            &[0; SOCKID_LEN],
        ),
    )?;
    let mut found = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = recv(nl, &mut buf)?;
        for (kind, payload) in messages(&buf[..n]) {
            match kind {
                NLMSG_DONE => return Ok(found),
                NLMSG_ERROR => return Err(nl_error(payload)),
                SOCK_DIAG_BY_FAMILY
                    if payload.len() >= DIAG_MSG_LEN
                        && attr_u64(&payload[DIAG_MSG_LEN..], INET_DIAG_CGROUP_ID)
                            == Some(cgroup_id) =>
                {
                    let mut id = [0u8; SOCKID_LEN];
                    id.copy_from_slice(&payload[4..4 + SOCKID_LEN]);
                    found.push(id);
                }
                _ => {}
            }
        }
        if n == 0 {
            return Ok(found);
        }
    }
}

fn destroy(nl: &OwnedFd, family: u8, sockid: &[u8; SOCKID_LEN]) -> io::Result<()> {
    match destroy_one(nl, family, sockid) {
        // Gone in the meantime (it finished closing): nothing left to abort.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// One `SOCK_DESTROY` request and the kernel's answer to it.
fn destroy_one(nl: &OwnedFd, family: u8, sockid: &[u8; SOCKID_LEN]) -> io::Result<()> {
    send(
        nl,
        &request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, family, sockid),
    )?;
    let mut buf = vec![0u8; 4096];
    let n = recv(nl, &mut buf)?;
    for (kind, payload) in messages(&buf[..n]) {
        if kind == NLMSG_ERROR {
            let e = nl_error(payload);
            return match e.raw_os_error() {
                Some(0) => Ok(()),
                _ => Err(e),
            };
        }
    }
    Ok(())
}

/// Whether this kernel can abort a TCP socket with `SOCK_DESTROY`: makes a loopback
/// connection of its own (127.0.0.1, an ephemeral port), destroys its client end and
/// checks that the socket saw the abort. `Err` carries the reason.
pub fn probe_destroy() -> Result<String, String> {
    let what = "probe on a loopback connection";
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("{what}: bind 127.0.0.1:0: {e}"))?;
    let server = listener
        .local_addr()
        .map_err(|e| format!("{what}: listener address: {e}"))?;
    let client =
        std::net::TcpStream::connect(server).map_err(|e| format!("{what}: connect: {e}"))?;
    let (_accepted, _) = listener
        .accept()
        .map_err(|e| format!("{what}: accept: {e}"))?;
    let local = client
        .local_addr()
        .map_err(|e| format!("{what}: client address: {e}"))?;
    let (std::net::SocketAddr::V4(src), std::net::SocketAddr::V4(dst)) = (local, server) else {
        return Err(format!(
            "{what}: not an IPv4 connection: {local} -> {server}"
        ));
    };
    let nl = open().map_err(|e| format!("socket(AF_NETLINK, NETLINK_SOCK_DIAG): {e}"))?;
    match destroy_one(&nl, libc::AF_INET as u8, &inet_sockid(src, dst)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            return Err(format!(
                "SOCK_DESTROY: {e} (the kernel is built without CONFIG_INET_DIAG_DESTROY)"
            ))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return Err(format!(
                "SOCK_DESTROY: {e} (no inet_diag/tcp_diag handler: modules not loaded?)"
            ))
        }
        Err(e) => return Err(format!("SOCK_DESTROY: {e}")),
    }
    match client.take_error() {
        Ok(Some(e)) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
            Ok("SOCK_DESTROY over NETLINK_SOCK_DIAG aborts TCP sockets (probed on a loopback connection)".to_owned())
        }
        other => Err(format!(
            "SOCK_DESTROY was acknowledged but the probe socket was not aborted ({other:?})"
        )),
    }
}

/// `struct inet_diag_sockid` of the IPv4 socket `src` -> `dst` (any interface, no
/// cookie).
fn inet_sockid(src: std::net::SocketAddrV4, dst: std::net::SocketAddrV4) -> [u8; SOCKID_LEN] {
    let mut id = [0u8; SOCKID_LEN];
    id[0..2].copy_from_slice(&src.port().to_be_bytes());
    id[2..4].copy_from_slice(&dst.port().to_be_bytes());
    id[4..8].copy_from_slice(&src.ip().octets());
    id[20..24].copy_from_slice(&dst.ip().octets());
    // idiag_if (36..40) stays 0; idiag_cookie: INET_DIAG_NOCOOKIE.
    id[40..48].fill(0xff);
    id
}

/// (type, payload) of each netlink message in `buf`.
fn messages(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDR_LEN || len > buf.len() {
            break;
        }
        out.push((kind, &buf[NLMSG_HDR_LEN..len]));
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
    out
}

/// The errno of an `NLMSG_ERROR` payload (0 is an acknowledgement).
fn nl_error(payload: &[u8]) -> io::Error {
    let errno = payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(libc::EPROTO);
    io::Error::from_raw_os_error(-errno)
}

/// The u64 attribute `kind` of a run of netlink attributes.
fn attr_u64(mut attrs: &[u8], kind: u16) -> Option<u64> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if ty == kind && len >= 12 {
            let mut v = [0u8; 8];
            v.copy_from_slice(&attrs[4..12]);
            return Some(u64::from_ne_bytes(v));
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_attributes_and_messages() {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&8u16.to_ne_bytes());
        attrs.extend_from_slice(&5u16.to_ne_bytes());
        attrs.extend_from_slice(&[1, 2, 3, 4]);
        attrs.extend_from_slice(&12u16.to_ne_bytes());
        attrs.extend_from_slice(&INET_DIAG_CGROUP_ID.to_ne_bytes());
        attrs.extend_from_slice(&4242u64.to_ne_bytes());
        assert_eq!(attr_u64(&attrs, INET_DIAG_CGROUP_ID), Some(4242));
        assert_eq!(attr_u64(&attrs[..10], INET_DIAG_CGROUP_ID), None);
        let req = request(SOCK_DESTROY, NLM_F_REQUEST, 2, &[7; SOCKID_LEN]);
        assert_eq!(req.len(), NLMSG_HDR_LEN + REQ_LEN);
        let msgs = messages(&req);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, SOCK_DESTROY);
        assert_eq!(msgs[0].1[8..], [7; SOCKID_LEN]);
    }
}
