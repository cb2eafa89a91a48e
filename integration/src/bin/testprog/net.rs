//! Network subcommands of the test helper. Each prints `<what>: <outcome>` where the
//! outcome is `OK` or the errno name, so tests assert the kernel's exact answer.
//!
//! - `connect ADDR PORT`: TCP connect (`ADDR` may be IPv4, IPv6 or `::ffff:a.b.c.d`);
//! - `udp-send ADDR PORT`: unconnected UDP `sendto` (no explicit bind);
//! - `udp-connect ADDR PORT`: UDP `connect`;
//! - `bind ADDR PORT tcp|udp`: bind (and listen, for TCP); `bind-each` takes several
//!   `ADDR PORT tcp|udp` triples, one line each;
//! - `socket raw|packet|icmp|netlink-route|netlink-audit|tcp|udp`: `socket(2)` only;
//! - `wait-connect MS ADDR PORT...`: sleeps MS milliseconds, then one TCP connect per
//!   port, one line each (for overlapping runs);
//! - `resolve-connect NAME PORT`: getaddrinfo (IPv4, TCP) through the system resolver,
//!   printing `resolve NAME: ADDR` or the `EAI_*` name, then connects to the first
//!   address;
//! - `double-fork-connect ADDR PORT`: a grandchild in a new session, orphaned by its
//!   parent, connects; its outcome comes back through a pipe.
//! - `after-secret SECRET tcp|udp ADDR PORT [tcp|udp ADDR PORT]...`: opens SECRET (which
//!   taints the run), then per destination a TCP connect that sends `after\n` on success,
//!   or an unconnected UDP `sendto`; one line each. `resolve NAME PORT` resolves NAME
//!   instead (prints the address, or the `EAI_*` name).
//! - `udp-dns-query ADDR PORT NAME`: an unconnected UDP socket (no explicit bind) sends a DNS query for
//!   NAME (type A) with `sendto`, then `recvfrom`s the reply (2 s limit) and prints
//!   `reply from ADDR PORT` (the source the kernel reports).

use std::net::{IpAddr, SocketAddr};

pub const COMMANDS: &[&str] = &[
    "connect",
    "udp-send",
    "udp-connect",
    "bind",
    "bind-each",
    "socket",
    "listen-unbound",
    "double-fork-connect",
    "wait-connect",
    "resolve-connect",
    "after-secret",
    "udp-dns-query",
];

pub fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::EADDRINUSE => "EADDRINUSE".into(),
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL".into(),
        libc::ENETUNREACH => "ENETUNREACH".into(),
        libc::EAFNOSUPPORT => "EAFNOSUPPORT".into(),
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ETIMEDOUT => "ETIMEDOUT".into(),
        other => format!("errno {other}"),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn outcome(rc: libc::c_int) -> String {
    if rc < 0 {
        errno_name(errno())
    } else {
        "OK".into()
    }
}

/// A `sockaddr_storage` for `addr` and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn parse(addr: &str, port: &str) -> Option<SocketAddr> {
    let ip: IpAddr = addr.parse().ok()?;
    Some(SocketAddr::new(ip, port.parse().ok()?))
}

fn family(addr: &SocketAddr) -> libc::c_int {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// socket + connect; returns the outcome.
fn connect(addr: SocketAddr, sock_type: libc::c_int) -> String {
    // SAFETY: plain integer arguments.
    let fd = unsafe { libc::socket(family(&addr), sock_type | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return format!("socket {}", errno_name(errno()));
    }
    let (ss, len) = sockaddr(addr);
    // SAFETY: `ss` holds a valid sockaddr of `len` bytes.
    let rc = unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) };
    let out = outcome(rc);
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    out
}

/// TCP connect; on success sends `msg` and closes gracefully.
fn connect_send(addr: SocketAddr, msg: &[u8]) -> String {
    match std::net::TcpStream::connect(addr) {
        Ok(mut stream) => match std::io::Write::write_all(&mut stream, msg) {
            Ok(()) => "OK".into(),
            Err(e) => format!("send {}", errno_name(e.raw_os_error().unwrap_or(0))),
        },
        Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
    }
}

/// A standard query (RD set) for `name`, type A, class IN.
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Unconnected UDP, bound only by the kernel on the first `sendto` (as glibc's resolver
/// does): sendto `addr` a query for `name`, then where the reply came from.
fn udp_dns_query(addr: SocketAddr, name: &str) -> String {
    // SAFETY: plain integer arguments.
    let fd = unsafe { libc::socket(family(&addr), libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return format!("socket {}", errno_name(errno()));
    }
    // SAFETY: `fd` is our own socket, owned from here on.
    let sock = unsafe { <std::net::UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    if let Err(e) = sock.send_to(&dns_query(name), addr) {
        return format!("sendto {}", errno_name(e.raw_os_error().unwrap_or(0)));
    }
    let mut buf = [0u8; 1500];
    match sock.recv_from(&mut buf) {
        Ok((_, from)) => format!("reply from {} {}", from.ip(), from.port()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => "TIMEOUT".into(),
        Err(e) => format!("recvfrom {}", errno_name(e.raw_os_error().unwrap_or(0))),
    }
}

fn udp_send(addr: SocketAddr) -> String {
    // SAFETY: plain integer arguments.
    let fd = unsafe { libc::socket(family(&addr), libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return format!("socket {}", errno_name(errno()));
    }
    let (ss, len) = sockaddr(addr);
    let msg = b"agentd-testprog";
    // SAFETY: valid buffer and sockaddr.
    let rc = unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    if rc < 0 {
        errno_name(errno())
    } else {
        "OK".into()
    }
}

fn bind(addr: SocketAddr, proto: &str) -> String {
    let sock_type = if proto == "udp" {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_STREAM
    };
    // SAFETY: plain integer arguments.
    let fd = unsafe { libc::socket(family(&addr), sock_type | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return format!("socket {}", errno_name(errno()));
    }
    let (ss, len) = sockaddr(addr);
    // SAFETY: valid sockaddr.
    let mut rc = unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) };
    if rc == 0 && sock_type == libc::SOCK_STREAM {
        // SAFETY: our own bound socket.
        rc = unsafe { libc::listen(fd, 1) };
    }
    let out = outcome(rc);
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    out
}

fn socket(kind: &str) -> String {
    let (family, sock_type, proto) = match kind {
        "raw" => (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        "packet" => (libc::AF_PACKET, libc::SOCK_RAW, 0x0300), // htons(ETH_P_ALL)
        "icmp" => (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
        "netlink-route" => (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
        "netlink-audit" => (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
        "tcp" => (libc::AF_INET, libc::SOCK_STREAM, 0),
        "udp" => (libc::AF_INET6, libc::SOCK_DGRAM, 0),
        _ => return "unknown socket kind".into(),
    };
    // SAFETY: plain integer arguments.
    let fd = unsafe { libc::socket(family, sock_type | libc::SOCK_CLOEXEC, proto) };
    let out = outcome(fd);
    if fd >= 0 {
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
    }
    out
}

/// Fork; the child forks again, starts a new session in the grandchild and exits, so the
/// grandchild is orphaned (a double-forked daemon). The grandchild connects and writes
/// its outcome to a pipe the original process reads.
fn double_fork_connect(addr: SocketAddr) -> String {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return format!("pipe {}", errno_name(errno()));
    }
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: the test helper is single-threaded here; the child only uses
    // async-signal-safe calls plus its own copy of memory.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: no preconditions.
        let intermediate = unsafe { libc::getpid() };
        // SAFETY: as above.
        let grandchild = unsafe { libc::fork() };
        if grandchild == 0 {
            // SAFETY: setsid has no preconditions.
            unsafe { libc::setsid() };
            // Wait until the intermediate parent is gone (re-parented).
            for _ in 0..100 {
                // SAFETY: no preconditions.
                if unsafe { libc::getppid() } != intermediate {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let out = connect(addr, libc::SOCK_STREAM);
            // SAFETY: writing our buffer to our pipe.
            unsafe { libc::write(wr, out.as_ptr().cast(), out.len()) };
            // SAFETY: no preconditions.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: no preconditions.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: closing our copy of the write end, then reaping the intermediate child.
    unsafe {
        libc::close(wr);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    let mut buf = [0u8; 128];
    let mut got = Vec::new();
    loop {
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        got.extend_from_slice(&buf[..n as usize]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The first IPv4 address getaddrinfo gives for `name`, or the `EAI_*` name.
fn resolve4(name: &str) -> Result<std::net::Ipv4Addr, String> {
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return Err("bad name".into());
    };
    // SAFETY: addrinfo is plain old data; all-zero is a valid "no hints" value.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_INET;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid C string, hints and out pointer; the result is freed below.
    let rc = unsafe { libc::getaddrinfo(c_name.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 {
        return Err(match rc {
            libc::EAI_NONAME => "EAI_NONAME".into(),
            libc::EAI_AGAIN => "EAI_AGAIN".into(),
            libc::EAI_FAIL => "EAI_FAIL".into(),
            libc::EAI_NODATA => "EAI_NODATA".into(),
            libc::EAI_SYSTEM => format!("EAI_SYSTEM {}", errno_name(errno())),
            other => format!("EAI {other}"),
        });
    }
    // SAFETY: getaddrinfo succeeded, so `res` is a valid list whose first entry is an
    // AF_INET sockaddr_in (we asked for AF_INET only); freed right after reading.
    let ip = unsafe {
        let sin = (*res).ai_addr.cast::<libc::sockaddr_in>();
        let ip = std::net::Ipv4Addr::from((*sin).sin_addr.s_addr.to_ne_bytes());
        libc::freeaddrinfo(res);
        ip
    };
    Ok(ip)
}

/// Runs the subcommand `args[0]`; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let line = match a(0) {
        "socket" => format!("socket {}: {}", a(1), socket(a(1))),
        // listen() on a TCP socket never bound: the kernel binds it itself.
        "listen-unbound" => {
            let family = if a(1) == "v6" {
                libc::AF_INET6
            } else {
                libc::AF_INET
            };
            // SAFETY: plain integer arguments.
            let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                format!("socket {}", errno_name(errno()))
            } else {
                // SAFETY: our own socket.
                let rc = unsafe { libc::listen(fd, 1) };
                format!("listen-unbound {}: {}", a(1), outcome(rc))
            }
        }
        "resolve-connect" => {
            let resolved = resolve4(a(1));
            let mut out = format!(
                "resolve {}: {}",
                a(1),
                resolved
                    .as_ref()
                    .map_or_else(|e| e.clone(), |ip| ip.to_string())
            );
            if let (Ok(ip), Ok(port)) = (resolved, a(2).parse::<u16>()) {
                let addr = SocketAddr::new(IpAddr::V4(ip), port);
                out.push_str(&format!(
                    "\nconnect {ip} {port}: {}",
                    connect(addr, libc::SOCK_STREAM)
                ));
            }
            out
        }
        "after-secret" => {
            let opened = std::fs::File::open(a(1));
            let mut lines = vec![format!(
                "open {}: {}",
                a(1),
                match opened {
                    Ok(_) => "OK".to_owned(),
                    Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
                }
            )];
            for dst in args[2..].chunks(3) {
                if let [kind, name, port] = dst {
                    if kind == "resolve" {
                        lines.push(format!(
                            "resolve {name}: {}",
                            resolve4(name).map_or_else(|e| e, |ip| format!("{ip} {port}"))
                        ));
                        continue;
                    }
                }
                let [proto, ip, port] = dst else {
                    eprintln!("usage: after-secret SECRET [tcp|udp ADDR PORT]...");
                    return 2;
                };
                let Some(addr) = parse(ip, port) else {
                    eprintln!("usage: after-secret SECRET [tcp|udp ADDR PORT]...");
                    return 2;
                };
                let out = match proto.as_str() {
                    "udp" => udp_send(addr),
                    "tcp" => connect_send(addr, b"after\n"),
                    _ => {
                        eprintln!("after-secret: unknown protocol {proto}");
                        return 2;
                    }
                };
                lines.push(format!("{proto} {ip} {port}: {out}"));
            }
            lines.join("\n")
        }
        "bind-each" => {
            let mut lines = Vec::new();
            for t in args[1..].chunks(3) {
                let usage = "usage: bind-each ADDR PORT tcp|udp [ADDR PORT tcp|udp]...";
                let [ip, port, proto] = t else {
                    eprintln!("{usage}");
                    return 2;
                };
                let Some(addr) = parse(ip, port) else {
                    eprintln!("{usage}");
                    return 2;
                };
                lines.push(format!("bind {ip} {port}: {}", bind(addr, proto)));
            }
            lines.join("\n")
        }
        "wait-connect" => {
            std::thread::sleep(std::time::Duration::from_millis(a(1).parse().unwrap_or(0)));
            let mut lines = Vec::new();
            for port in args.iter().skip(3) {
                let Some(addr) = parse(a(2), port) else {
                    eprintln!("usage: wait-connect MS ADDR PORT...");
                    return 2;
                };
                lines.push(format!(
                    "connect {} {port}: {}",
                    a(2),
                    connect(addr, libc::SOCK_STREAM)
                ));
            }
            lines.join("\n")
        }
        cmd => {
            let Some(addr) = parse(a(1), a(2)) else {
                eprintln!("usage: {cmd} ADDR PORT");
                return 2;
            };
            let out = match cmd {
                "connect" => connect(addr, libc::SOCK_STREAM),
                "udp-connect" => connect(addr, libc::SOCK_DGRAM),
                "udp-send" => udp_send(addr),
                "bind" => bind(addr, a(3)),
                "udp-dns-query" => udp_dns_query(addr, a(3)),
                _ => double_fork_connect(addr),
            };
            format!("{cmd} {} {}: {out}", a(1), a(2))
        }
    };
    println!("{line}");
    0
}
