//! Subcommands that consume a budget. Each prints exactly what happened, so a test can
//! tell "stopped by agentd" from "finished".

use std::io::Write;
use std::time::{Duration, Instant};

pub const COMMANDS: &[&str] = &[
    "fork-bomb",
    "hog",
    "spin",
    "getpid-loop",
    "exec-loop",
    "upload",
    "download",
    "write-file",
    "wait-signal",
];

fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

pub fn run(cmd: &str, args: &[String]) -> i32 {
    let a = |i: usize| args.get(i).cloned().unwrap_or_default();
    let n = |i: usize| a(i).parse::<u64>().unwrap_or(0);
    match cmd {
        "fork-bomb" => fork_bomb(Duration::from_millis(n(1))),
        "hog" => hog(n(1)),
        "spin" => spin(),
        "getpid-loop" => getpid_loop(n(1), &a(2)),
        "exec-loop" => exec_loop(n(1), &a(2)),
        "upload" => upload(&a(1), n(2)),
        "download" => download(&a(1)),
        "write-file" => write_file(&a(1), n(2)),
        "wait-signal" => wait_signal(),
        _ => 2,
    }
}

/// Every process forks as fast as it can for `how_long`; the first one reports how many
/// forks the kernel refused with EAGAIN.
fn fork_bomb(how_long: Duration) -> i32 {
    let deadline = Instant::now() + how_long;
    let me = std::process::id();
    let (mut ok, mut eagain, mut other) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        // SAFETY: the child only loops, forks and _exits (no allocation between fork and
        // the next fork: the counters are plain integers on the stack).
        let pid = unsafe { libc::fork() };
        match pid {
            0 => continue,
            p if p > 0 => ok += 1,
            _ => {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
                    eagain += 1;
                } else {
                    other += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    if std::process::id() != me {
        // SAFETY: leaving a forked child without running the parent's atexit handlers.
        unsafe { libc::_exit(0) };
    }
    say(&format!(
        "fork-bomb: forks={ok} eagain={} other={other}",
        eagain > 0
    ));
    0
}

/// Allocates and touches `mib` MiB, one MiB at a time.
fn hog(mib: u64) -> i32 {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib {
        kept.push(vec![0x5a; 1 << 20]);
        if i % 16 == 0 {
            say(&format!("hog: {i} MiB"));
        }
    }
    say(&format!("hog: allocated {} MiB", kept.len()));
    0
}

fn spin() -> i32 {
    say("spinning");
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// `getpid` `count` times through raw syscalls, storing the number done in the first 8
/// bytes of `progress` (a shared mapping: no syscall per iteration to report it).
fn getpid_loop(count: u64, progress: &str) -> i32 {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(progress)
    {
        Ok(f) => f,
        Err(e) => {
            say(&format!("getpid-loop: open {progress}: {e}"));
            return 1;
        }
    };
    if file.set_len(8).is_err() {
        return 1;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: mapping 8 bytes of a file we own, shared, read-write.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        say("getpid-loop: mmap failed");
        return 1;
    }
    let done = map.cast::<u64>();
    let started = Instant::now();
    for i in 1..=count {
        // SAFETY: getpid has no arguments.
        unsafe { libc::syscall(libc::SYS_getpid) };
        // SAFETY: `done` is the 8-byte shared mapping above.
        unsafe { done.write_volatile(i) };
    }
    let ns = started.elapsed().as_nanos();
    say(&format!("getpid-loop: finished {count} in {ns} ns"));
    0
}

/// fork + exec `path` `count` times, reporting each child's end.
fn exec_loop(count: u64, path: &str) -> i32 {
    for i in 1..=count {
        match std::process::Command::new(path).status() {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                match (s.code(), s.signal()) {
                    (Some(c), _) => say(&format!("exec {i}: exit {c}")),
                    (None, Some(sig)) if sig == libc::SIGKILL => say(&format!("exec {i}: SIGKILL")),
                    (None, sig) => say(&format!("exec {i}: signal {sig:?}")),
                }
            }
            Err(e) => say(&format!("exec {i}: spawn failed: {e}")),
        }
    }
    say("exec-loop: finished");
    0
}

/// Sends `bytes` to `addr` over TCP in 64 KiB writes.
fn upload(addr: &str, bytes: u64) -> i32 {
    let mut s = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("upload: connect {addr}: {e}"));
            return 1;
        }
    };
    let chunk = vec![0xabu8; 64 << 10];
    let mut sent = 0u64;
    while sent < bytes {
        let n = chunk.len().min((bytes - sent) as usize);
        match s.write(&chunk[..n]) {
            Ok(w) => sent += w as u64,
            Err(e) => {
                say(&format!("upload: sent {sent} then {e}"));
                return 1;
            }
        }
    }
    say(&format!("upload: sent {sent}"));
    0
}

/// Reads from `addr` over TCP until the peer closes.
fn download(addr: &str) -> i32 {
    use std::io::Read;
    let mut s = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("download: connect {addr}: {e}"));
            return 1;
        }
    };
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) => {
                say(&format!("download: received {got} then {e}"));
                return 1;
            }
        }
    }
    say(&format!("download: received {got}"));
    0
}

/// Writes `bytes` to `path` in 1 MiB writes.
fn write_file(path: &str, bytes: u64) -> i32 {
    let mut f = match std::fs::File::create(path) {
        Ok(f) => f,
        Err(e) => {
            say(&format!("write-file: create {path}: {e}"));
            return 1;
        }
    };
    let chunk = vec![0x11u8; 1 << 20];
    let mut done = 0u64;
    while done < bytes {
        let n = chunk.len().min((bytes - done) as usize);
        match f.write(&chunk[..n]) {
            Ok(w) => done += w as u64,
            Err(e) => {
                say(&format!("write-file: wrote {done} then {e}"));
                return 1;
            }
        }
    }
    say(&format!("write-file: wrote {done}"));
    0
}

static GOT_USR1: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    GOT_USR1.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Prints `sleeping`, then `got SIGUSR1` when that signal arrives; runs until killed.
fn wait_signal() -> i32 {
    // SAFETY: installing an async-signal-safe handler (one atomic store).
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    say("sleeping");
    let mut told = false;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        if !told && GOT_USR1.load(std::sync::atomic::Ordering::SeqCst) {
            say("got SIGUSR1");
            told = true;
        }
    }
}
