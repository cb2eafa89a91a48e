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
    "sendfile-upload",
    "download-progress",
    "fs-write-call",
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
        "download" => download_progress(&a(1), None),
        "write-file" => write_file(&a(1), n(2)),
        "wait-signal" => wait_signal(),
        "sendfile-upload" => sendfile_upload(&a(1), &a(2)),
        "download-progress" => download_progress(&a(1), Some(&a(2))),
        "fs-write-call" => fs_write_call(&a(1), &a(2), &a(3), n(4)),
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
    let Some(done) = progress_map(progress) else {
        say(&format!("getpid-loop: cannot map {progress}"));
        return 1;
    };
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

/// `sendfile()`s the whole of `source` (a file) to `addr` over TCP.
fn sendfile_upload(addr: &str, source: &str) -> i32 {
    use std::os::fd::AsRawFd;
    let src = match std::fs::File::open(source) {
        Ok(f) => f,
        Err(e) => {
            say(&format!("sendfile-upload: open {source}: {e}"));
            return 1;
        }
    };
    let len = src.metadata().map(|m| m.len()).unwrap_or(0);
    let s = match std::net::TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            say(&format!("sendfile-upload: connect {addr}: {e}"));
            return 1;
        }
    };
    let mut sent = 0u64;
    while sent < len {
        // SAFETY: two open fds; a null offset uses (and advances) src's file offset.
        let n = unsafe {
            libc::sendfile(
                s.as_raw_fd(),
                src.as_raw_fd(),
                std::ptr::null_mut(),
                (len - sent) as usize,
            )
        };
        if n <= 0 {
            say(&format!(
                "sendfile-upload: sent {sent} then {}",
                std::io::Error::last_os_error()
            ));
            return 1;
        }
        sent += n as u64;
    }
    say(&format!("sendfile-upload: sent {sent}"));
    0
}

/// Reads from `addr` over TCP until the peer closes, keeping the count received in the
/// first 8 bytes of `progress` if given (a shared mapping, so it survives a SIGKILL).
fn download_progress(addr: &str, progress: Option<&str>) -> i32 {
    use std::io::Read;
    let done = match progress.map(progress_map) {
        None => None,
        Some(Some(done)) => Some(done),
        Some(None) => {
            say("download: cannot map the progress file");
            return 1;
        }
    };
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
            Ok(n) => {
                got += n as u64;
                if let Some(done) = done {
                    // SAFETY: `done` is the 8-byte shared mapping of progress_map.
                    unsafe { done.write_volatile(got) };
                }
            }
            Err(e) => {
                say(&format!("download: received {got} then {e}"));
                return 1;
            }
        }
    }
    say(&format!("download: received {got}"));
    0
}

/// An 8-byte shared mapping of `path` (created, zeroed).
fn progress_map(path: &str) -> Option<*mut u64> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .ok()?;
    file.set_len(8).ok()?;
    // SAFETY: mapping 8 bytes of a file we own, shared, read-write; the mapping outlives
    // the fd.
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
    (map != libc::MAP_FAILED).then_some(map.cast::<u64>())
}

/// Makes `path` `bytes` bigger with one call of `kind` (the loop kinds: calls of at
/// most 64 KiB), reading from `source` where the call copies (`copy_file_range`,
/// `sendfile`, `splice`). Prints `KIND: N` with the bytes the calls reported.
fn fs_write_call(kind: &str, path: &str, source: &str, bytes: u64) -> i32 {
    use std::os::fd::AsRawFd;
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            say(&format!("fs-write-call: open {path}: {e}"));
            return 1;
        }
    };
    let fd = f.as_raw_fd();
    let src = std::fs::File::open(source).ok();
    let sfd = src.as_ref().map_or(-1, |s| s.as_raw_fd());
    // Only the plain writes need a buffer (fallocate is asked for gigabytes).
    let buf = if kind.contains("write") {
        vec![0x33u8; bytes as usize]
    } else {
        Vec::new()
    };
    let p = buf.as_ptr().cast::<libc::c_void>();
    let len = bytes as usize;
    let iov_len = buf.len();
    let iov = [libc::iovec {
        iov_base: p.cast_mut(),
        iov_len,
    }];
    let off = bytes as libc::off_t;
    // SAFETY: every call gets open fds, a live buffer of `len` bytes or an iovec over it,
    // and null offsets (the fds' own offsets).
    let rc: i64 = unsafe {
        match kind {
            "write" => libc::write(fd, p, len) as i64,
            "pwrite" => libc::pwrite(fd, p, len, 0) as i64,
            "writev" => libc::writev(fd, iov.as_ptr(), 1) as i64,
            "pwritev" => libc::pwritev(fd, iov.as_ptr(), 1, 0) as i64,
            "pwritev2" => libc::pwritev2(fd, iov.as_ptr(), 1, 0, 0) as i64,
            "fallocate" => i64::from(libc::fallocate(fd, 0, 0, off)),
            "fallocate-keep-size" => {
                i64::from(libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, off))
            }
            "ftruncate" => i64::from(libc::ftruncate(fd, off)),
            "truncate" => i64::from(libc::truncate(crate::cstr(path).as_ptr(), off)),
            "copy_file_range" => {
                libc::copy_file_range(sfd, std::ptr::null_mut(), fd, std::ptr::null_mut(), len, 0)
                    as i64
            }
            "sendfile" => libc::sendfile(fd, sfd, std::ptr::null_mut(), len) as i64,
            "splice" => splice_into(fd, bytes),
            _ => {
                say(&format!("fs-write-call: unknown kind {kind}"));
                return 2;
            }
        }
    };
    if rc < 0 {
        say(&format!(
            "{kind}: {}",
            crate::errno_name(crate::last_errno())
        ));
        return 1;
    }
    say(&format!("{kind}: {rc}"));
    0
}

/// `splice()`s `bytes` into `fd` through a pipe, 64 KiB (the pipe's size) at a time;
/// the pipe is filled with `write` (also counted). Returns the bytes spliced into `fd`.
fn splice_into(fd: i32, bytes: u64) -> i64 {
    let mut pipe = [0i32; 2];
    // SAFETY: `pipe` has room for the two fds.
    if unsafe { libc::pipe(pipe.as_mut_ptr()) } != 0 {
        return -1;
    }
    let chunk = vec![0x44u8; 64 << 10];
    let mut done = 0u64;
    while done < bytes {
        let n = chunk.len().min((bytes - done) as usize);
        // SAFETY: the pipe's write end and a live buffer of at least `n` bytes.
        if unsafe { libc::write(pipe[1], chunk.as_ptr().cast(), n) } != n as isize {
            return -1;
        }
        // SAFETY: the pipe's read end into the open file, null offsets.
        let s = unsafe {
            libc::splice(
                pipe[0],
                std::ptr::null_mut(),
                fd,
                std::ptr::null_mut(),
                n,
                0,
            )
        };
        if s <= 0 {
            return -1;
        }
        done += s as u64;
    }
    done as i64
}
