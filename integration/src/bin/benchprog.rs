//! The workloads of `cargo xtask bench`. Each subcommand is one loop that times itself,
//! so a sandbox's start-up is not in the figure, and prints two lines:
//! `ns N` (wall clock of the loop) and `cpu_ns N` (user + system CPU time of this process
//! and its reaped children during the loop). A failed call stops the loop: it prints the
//! errno and exits 1, so a sandbox that denies the workload cannot pass as fast.
//!
//! - `getpid N`: N getpid(2), made as raw syscalls (no libc caching);
//! - `getpid-seccomp N`: the same loop under a one-instruction allow-all seccomp filter
//!   (with no_new_privs), and nothing else: the cost any seccomp filter puts on every
//!   syscall, whatever its rules (the kernel's syscall-entry work for a filtered task);
//! - `open PATH N`: N openat(AT_FDCWD, PATH, O_RDONLY) + close;
//! - `stat PATH N`: N stat(2) of PATH;
//! - `connect ADDR PORT N`: N TCP connect + close to an IPv4 listener; the close is a
//!   reset (SO_LINGER 0), so a long loop leaves no TIME_WAIT sockets behind;
//! - `spawn PROG N`: N fork + execv(PROG) + waitpid, each child must exit 0;
//! - `listen ADDR`: the connect loop's server: listens on an ephemeral port of ADDR with
//!   a backlog of 4096 (std's 128 overflows under a connect loop and stalls it on SYN
//!   retransmits), prints `listening PORT`, then accepts and closes until killed.

use std::ffi::CString;
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let n = |i: usize| a(i).parse::<u64>().ok();
    let result = match (a(0), args.len()) {
        ("getpid", 2) => n(1).map(getpid),
        ("getpid-seccomp", 2) => n(1).map(|n| allow_all_seccomp().and_then(|()| getpid(n))),
        ("open", 3) => n(2).map(|n| open(a(1), n)),
        ("stat", 3) => n(2).map(|n| stat(a(1), n)),
        ("connect", 4) => match (a(1).parse::<Ipv4Addr>(), a(2).parse::<u16>(), n(3)) {
            (Ok(ip), Ok(port), Some(n)) => Some(connect(ip, port, n)),
            _ => None,
        },
        ("spawn", 3) => n(2).map(|n| spawn(a(1), n)),
        ("listen", 2) => a(1).parse().ok().map(listen),
        _ => None,
    };
    let code = match result {
        Some(Ok(())) => 0,
        Some(Err(e)) => {
            println!("{}: {e}", a(0));
            1
        }
        None => {
            eprintln!(
                "usage: agentd-benchprog getpid N | getpid-seccomp N | open PATH N | stat PATH N | \
                 connect ADDR PORT N | spawn PROG N | listen ADDR"
            );
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// Installs a seccomp filter that allows everything: `ret SECCOMP_RET_ALLOW`.
fn allow_all_seccomp() -> Result<(), String> {
    let mut allow = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: allow.as_mut_ptr(),
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `prog` points at one valid instruction that outlives the call; the kernel
    // copies it.
    let rc = unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) };
    if rc != 0 {
        return Err(format!("seccomp: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `body` `n` times and prints its wall-clock and CPU nanoseconds; `body` gets the
/// iteration number and stops the loop with an error.
fn timed(n: u64, mut body: impl FnMut(u64) -> Result<(), String>) -> Result<(), String> {
    let cpu0 = cpu_ns();
    let start = Instant::now();
    for i in 0..n {
        body(i)?;
    }
    let ns = start.elapsed().as_nanos();
    println!("ns {ns}\ncpu_ns {}", cpu_ns().saturating_sub(cpu0));
    Ok(())
}

/// User + system CPU nanoseconds of this process and its reaped children.
fn cpu_ns() -> u128 {
    let of = |who| {
        // SAFETY: an all-zero rusage is valid; getrusage fills it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage.
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as u128 * 1_000_000_000 + t.tv_usec as u128 * 1_000;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
}

fn errno(what: &str, i: u64) -> String {
    format!(
        "{what} failed at iteration {i}: {}",
        std::io::Error::last_os_error()
    )
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

fn getpid(n: u64) -> Result<(), String> {
    timed(n, |_| {
        // SAFETY: getpid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getpid) };
        Ok(())
    })
}

fn open(path: &str, n: u64) -> Result<(), String> {
    let p = cstring(path)?;
    timed(n, |i| {
        // SAFETY: a valid NUL-terminated path; the fd is closed at once.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, p.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return Err(errno("openat", i));
        }
        // SAFETY: closing the fd just opened.
        unsafe { libc::close(fd) };
        Ok(())
    })
}

fn stat(path: &str, n: u64) -> Result<(), String> {
    let p = cstring(path)?;
    // SAFETY: an all-zero stat is valid; stat overwrites it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    timed(n, |i| {
        // SAFETY: a valid path and a writable stat buffer.
        if unsafe { libc::stat(p.as_ptr(), &mut st) } != 0 {
            return Err(errno("stat", i));
        }
        Ok(())
    })
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

const SOCKADDR_IN_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as _;

fn connect(ip: Ipv4Addr, port: u16, n: u64) -> Result<(), String> {
    let sa = sockaddr(ip, port);
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    timed(n, |i| {
        // SAFETY: plain integer arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(errno("socket", i));
        }
        // SAFETY: `sa` is a valid sockaddr_in of the length passed.
        let rc = unsafe {
            libc::connect(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                SOCKADDR_IN_LEN,
            )
        };
        let failed = (rc != 0).then(|| errno("connect", i));
        // SAFETY: a valid linger struct of the size passed, on our own socket.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
        failed.map_or(Ok(()), Err)
    })
}

fn spawn(prog: &str, n: u64) -> Result<(), String> {
    let p = cstring(prog)?;
    let argv = [p.as_ptr(), std::ptr::null()];
    timed(n, |i| {
        // SAFETY: the child only calls execv and _exit, both async-signal-safe, with
        // pointers made before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(errno("fork", i));
        }
        if pid == 0 {
            // SAFETY: `argv` is a NUL-terminated array of valid C strings.
            unsafe {
                libc::execv(p.as_ptr(), argv.as_ptr());
                libc::_exit(127)
            }
        }
        let mut status = 0;
        // SAFETY: waiting for the child just forked, into a local int.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            return Err(errno("waitpid", i));
        }
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            return Err(format!(
                "{prog} ended with wait status {status:#x} at iteration {i}"
            ));
        }
        Ok(())
    })
}

fn listen(ip: Ipv4Addr) -> Result<(), String> {
    // SAFETY: plain integer arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno("socket", 0));
    }
    let mut sa = sockaddr(ip, 0);
    // SAFETY: a valid sockaddr_in of the length passed, on our own socket.
    if unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            SOCKADDR_IN_LEN,
        )
    } != 0
    {
        return Err(errno("bind", 0));
    }
    // SAFETY: our own bound socket.
    if unsafe { libc::listen(fd, 4096) } != 0 {
        return Err(errno("listen", 0));
    }
    let mut len = SOCKADDR_IN_LEN;
    // SAFETY: `sa` and `len` describe a writable sockaddr_in.
    if unsafe { libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len) } != 0 {
        return Err(errno("getsockname", 0));
    }
    println!("listening {}", u16::from_be(sa.sin_port));
    let _ = std::io::stdout().flush();
    loop {
        // SAFETY: accepting on our listening socket, no peer address wanted.
        let c = unsafe {
            libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if c >= 0 {
            // SAFETY: closing the connection just accepted.
            unsafe { libc::close(c) };
        }
    }
}
