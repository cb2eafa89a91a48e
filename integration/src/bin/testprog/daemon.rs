//! `daemon-probe`: what a run sees while its daemon is down. Prints `ready`, waits for
//! a go file, then reports a forbidden connect, an `fs.deny` open (in a child, since the
//! fallback kills the process that opened it) and how many bytes a send pushed out,
//! waits for a done file and exits with the given code.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

pub const COMMANDS: &[&str] = &["daemon-probe", "connect-two"];

fn wait_for(path: &str) {
    while !Path::new(path).exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `connect-two PORT PORT`: a TCP connect to each loopback port, one line each.
fn connect_two(args: &[String]) -> i32 {
    for port in args.iter().skip(1).take(2) {
        let addr: SocketAddr = format!("127.0.0.1:{port}")
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9)));
        let r = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
        println!("connect {port}: {}", super::io_outcome(&r));
    }
    0
}

/// `daemon-probe GO CONNECT_PORT DENY_FILE SEND_PORT SEND_BYTES DONE CODE`
pub fn run(args: &[String]) -> i32 {
    if args.first().map(String::as_str) == Some("connect-two") {
        return connect_two(args);
    }
    let a = |i: usize| args.get(i).cloned().unwrap_or_default();
    let out = |line: String| {
        println!("{line}");
        let _ = std::io::stdout().flush();
    };
    out("ready".into());
    wait_for(&a(1));
    let forbidden: SocketAddr = format!("127.0.0.1:{}", a(2))
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9)));
    let r = TcpStream::connect_timeout(&forbidden, Duration::from_secs(2));
    out(format!("connect: {}", super::io_outcome(&r)));
    // SAFETY: fork in a single-threaded helper; the child only opens a file and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let r = std::fs::File::open(a(3));
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(if r.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        out(format!("deny child: signal {}", libc::WTERMSIG(status)));
    } else {
        out(format!("deny child: exit {}", libc::WEXITSTATUS(status)));
    }
    let send: SocketAddr = format!("127.0.0.1:{}", a(4))
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9)));
    let total: usize = a(5).parse().unwrap_or(0);
    let mut sent = 0usize;
    if let Ok(mut s) = TcpStream::connect_timeout(&send, Duration::from_secs(2)) {
        let _ = s.set_write_timeout(Some(Duration::from_secs(3)));
        let chunk = vec![0x5au8; 16 * 1024];
        while sent < total {
            match s.write(&chunk[..chunk.len().min(total - sent)]) {
                Ok(n) if n > 0 => sent += n,
                _ => break,
            }
        }
    }
    out(format!("sent: {sent}"));
    out("waiting".into());
    wait_for(&a(6));
    a(7).parse().unwrap_or(0)
}
