//! Unix-socket subcommands of the test helper. Each prints `<what> <path>: <outcome>`
//! where the outcome is `OK` or the errno name.
//!
//! - `unix-connect PATH...`: one stream `connect` per path;
//! - `unix-connect-in DIR PATH`: `chdir(DIR)`, then a stream `connect` (relative paths);
//! - `unix-sendto PATH`: an unconnected datagram `sendto`;
//! - `unix-abstract-self NAME`: binds an abstract stream socket `\0NAME`, listens, and
//!   connects to it (both ends inside the run).

use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream};

pub const COMMANDS: &[&str] = &[
    "unix-connect",
    "unix-connect-in",
    "unix-sendto",
    "unix-abstract-self",
];

fn outcome<T>(r: &std::io::Result<T>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(e) => super::net::errno_name(e.raw_os_error().unwrap_or(0)),
    }
}

pub fn run(args: &[String]) -> i32 {
    let a = |i: usize| args.get(i).cloned().unwrap_or_default();
    match a(0).as_str() {
        "unix-connect" => {
            for p in &args[1..] {
                println!("connect {p}: {}", outcome(&UnixStream::connect(p)));
            }
        }
        "unix-connect-in" => {
            if let Err(e) = std::env::set_current_dir(a(1)) {
                println!("chdir {}: {e}", a(1));
                return 1;
            }
            println!("connect {}: {}", a(2), outcome(&UnixStream::connect(a(2))));
        }
        "unix-sendto" => {
            let r = UnixDatagram::unbound().and_then(|s| s.send_to(b"hi", a(1)));
            println!("sendto {}: {}", a(1), outcome(&r));
        }
        "unix-abstract-self" => {
            use std::os::linux::net::SocketAddrExt;
            let r = SocketAddr::from_abstract_name(a(1).as_bytes()).and_then(|addr| {
                let l = UnixListener::bind_addr(&addr)?;
                let c = UnixStream::connect_addr(&addr)?;
                drop(l);
                Ok(c)
            });
            println!("abstract {}: {}", a(1), outcome(&r));
        }
        other => {
            eprintln!("unknown unix command {other}");
            return 2;
        }
    }
    0
}
