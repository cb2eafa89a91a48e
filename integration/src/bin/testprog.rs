//! A tiny confined-side helper for the integration tests. Each subcommand does
//! one thing and prints its exact outcome (`OK` or the errno name), so tests can
//! assert what the kernel answered rather than "it failed somehow".

#[path = "testprog/budget.rs"]
mod budget;
#[path = "testprog/daemon.rs"]
mod daemon;
#[path = "testprog/floor.rs"]
mod floor;
#[path = "testprog/fsops.rs"]
mod fsops;
#[path = "testprog/net.rs"]
mod net;
#[path = "testprog/unix.rs"]
mod unix;

use std::ffi::CString;
use std::io::Write;

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOENT => "ENOENT",
        libc::ENOSYS => "ENOSYS",
        libc::EINVAL => "EINVAL",
        libc::EAGAIN => "EAGAIN",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EROFS => "EROFS",
        libc::EXDEV => "EXDEV",
        libc::EBUSY => "EBUSY",
        _ => "OTHER",
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn outcome(rc: i64) -> String {
    if rc < 0 {
        errno_name(last_errno()).to_owned()
    } else {
        "OK".to_owned()
    }
}

fn io_outcome<T>(r: &std::io::Result<T>) -> String {
    match r {
        Ok(_) => "OK".to_owned(),
        Err(e) => errno_name(e.raw_os_error().unwrap_or(0)).to_owned(),
    }
}

/// Flushes stdout and exits.
fn return_code(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).cloned().unwrap_or_default();
    let code = match a(0).as_str() {
        "open" => {
            let p = cstr(&a(1));
            // SAFETY: valid NUL-terminated path.
            let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            println!("open {}: {}", a(1), outcome(fd.into()));
            0
        }
        "write" => {
            let p = cstr(&a(1));
            // SAFETY: valid NUL-terminated path.
            let fd = unsafe {
                libc::open(
                    p.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                    0o644,
                )
            };
            println!("write {}: {}", a(1), outcome(fd.into()));
            0
        }
        "exec" => {
            let p = cstr(&a(1));
            let argv = [p.as_ptr(), std::ptr::null()];
            // SAFETY: NULL-terminated argv of valid C strings; environ is the process's own.
            unsafe { libc::execv(p.as_ptr(), argv.as_ptr()) };
            println!("exec {}: {}", a(1), errno_name(last_errno()));
            0
        }
        "syscall" => {
            let rc = match a(1).as_str() {
                // SAFETY: each call passes plain integers or NULL pointers the kernel validates.
                "ptrace" => unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) },
                // SAFETY: as above.
                "unshare-user" => unsafe { libc::unshare(libc::CLONE_NEWUSER) }.into(),
                // SAFETY: as above.
                "unshare-ns" => unsafe { libc::unshare(libc::CLONE_NEWNS) }.into(),
                "mount" => {
                    let (src, dst, fs) = (cstr("none"), cstr("/tmp"), cstr("tmpfs"));
                    // SAFETY: valid C strings, NULL data.
                    unsafe {
                        libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null())
                    }
                    .into()
                }
                // SAFETY: as above.
                "bpf" => unsafe { libc::syscall(libc::SYS_bpf, 0, 0, 0) },
                // SAFETY: as above.
                "clone3" => unsafe { libc::syscall(libc::SYS_clone3, 0, 0) },
                // SAFETY: as above.
                "keyctl" => unsafe { libc::syscall(libc::SYS_keyctl, 0, 0, 0) },
                // SAFETY: as above (0xffffffff only queries the persona).
                "personality" => unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) },
                // SAFETY: as above.
                "io_uring_setup" => unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, 0) },
                // SAFETY: as above.
                "process_vm_readv" => unsafe {
                    libc::syscall(libc::SYS_process_vm_readv, 1, 0, 0, 0, 0, 0)
                },
                // SAFETY: as above.
                "pidfd_getfd" => unsafe { libc::syscall(libc::SYS_pidfd_getfd, 0, 0, 0) },
                // SAFETY: as above; CLONE_NEWNS | SIGCHLD, no stack (fork semantics). If it
                // were allowed the child would print too; the filter refuses it.
                "clone-newns" => unsafe {
                    libc::syscall(
                        libc::SYS_clone,
                        libc::CLONE_NEWNS | libc::SIGCHLD,
                        0,
                        0,
                        0,
                        0,
                    )
                },
                "kill-init" => {
                    // SAFETY: plain integers; signal 0 only checks permission.
                    let rc = unsafe { libc::kill(1, 0) }.into();
                    // Stay alive so agentd can read both processes' credentials (the
                    // record judges the kill only while they exist).
                    std::thread::sleep(std::time::Duration::from_millis(1500));
                    rc
                }
                other => {
                    eprintln!("unknown syscall {other}");
                    std::process::exit(2)
                }
            };
            println!("{}: {}", a(1), outcome(rc));
            0
        }
        "int80" => {
            let mut ret: i64 = 20; // i386 getpid
                                   // SAFETY: a 32-bit compat syscall with no memory arguments; the seccomp
                                   // filter is expected to kill the process before it returns.
            unsafe { std::arch::asm!("int 0x80", inout("rax") ret) };
            println!("int80: returned {ret}");
            0
        }
        "x32" => {
            // x32 getpid (39 | __X32_SYSCALL_BIT); the filter kills before it runs.
            let mut ret: i64 = 0x4000_0027;
            // SAFETY: a syscall with no memory arguments; the `syscall` instruction
            // clobbers rcx and r11.
            unsafe {
                std::arch::asm!("syscall", inout("rax") ret, out("rcx") _, out("r11") _);
            }
            println!("x32: returned {ret}");
            0
        }
        "threads" => {
            // N threads, one after the other (each joined before the next): glibc tries
            // clone3 for each (ENOSYS under the filter), then clone.
            let n: u32 = a(1).parse().unwrap_or(0);
            for _ in 0..n {
                let _ = std::thread::spawn(|| ()).join();
            }
            println!("threads {n}");
            0
        }
        "int80-thread" => {
            // A second thread makes the i386 call while the main thread waits: the
            // killed thread is not the process's last.
            println!("tid-parent {}", std::process::id());
            let _ = std::io::stdout().flush();
            let t = std::thread::spawn(|| {
                let mut ret: i64 = 20; // i386 getpid
                                       // SAFETY: as in `int80`.
                unsafe { std::arch::asm!("int 0x80", inout("rax") ret) };
                ret
            });
            let ret = t.join().unwrap_or(-1);
            println!("int80-thread: returned {ret}");
            0
        }
        "deny-loop" => {
            // Denied opens until killed; the first line says it runs (and its pid).
            println!("looping {}", std::process::id());
            let _ = std::io::stdout().flush();
            let p = cstr(&a(1));
            loop {
                // SAFETY: valid NUL-terminated path; a descriptor we get is closed at once.
                let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                if fd >= 0 {
                    // SAFETY: closing the descriptor we just opened.
                    unsafe { libc::close(fd) };
                }
            }
        }
        "deny-flood" => {
            // N opens of PATH [then sleep MS]; prints how many the kernel answered with
            // each outcome.
            let n: u64 = a(1).parse().unwrap_or(0);
            let p = cstr(&a(2));
            let (mut ok, mut eacces, mut other) = (0u64, 0u64, 0u64);
            for _ in 0..n {
                // SAFETY: valid NUL-terminated path; a descriptor we get is closed at once.
                let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                if fd >= 0 {
                    ok += 1;
                    // SAFETY: closing the descriptor we just opened.
                    unsafe { libc::close(fd) };
                } else if last_errno() == libc::EACCES {
                    eacces += 1;
                } else {
                    other += 1;
                }
            }
            println!("opens {n}: OK {ok} EACCES {eacces} other {other}");
            // Optional: stay alive MS milliseconds more (the run outlives the flood).
            if let Ok(ms) = a(3).parse::<u64>() {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            0
        }
        "flood-then-open" => {
            // N opens of PATH, then one of OTHER; prints how many of each succeeded.
            let n: u64 = a(1).parse().unwrap_or(0);
            let open = |p: &std::ffi::CString| {
                // SAFETY: valid NUL-terminated path; a descriptor we get is closed at once.
                let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                if fd >= 0 {
                    // SAFETY: closing the descriptor we just opened.
                    unsafe { libc::close(fd) };
                }
                fd >= 0
            };
            let (p, other) = (cstr(&a(2)), cstr(&a(3)));
            let ok = (0..n).filter(|_| open(&p)).count();
            println!(
                "opens {n}: OK {ok}; other: {}",
                if open(&other) { "OK" } else { "failed" }
            );
            0
        }
        "env" => {
            // Every variable as the command got it, sorted, one `KEY=VALUE` a line.
            let mut vars: Vec<String> = std::env::vars_os()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
                .collect();
            vars.sort();
            for v in vars {
                println!("{v}");
            }
            0
        }
        "tty-inject" => tty_inject(),
        "exit" => a(1).parse().unwrap_or(1),
        "kill-self" => {
            let sig = match a(1).as_str() {
                "TERM" => libc::SIGTERM,
                "KILL" => libc::SIGKILL,
                "SEGV" => libc::SIGSEGV,
                _ => libc::SIGUSR1,
            };
            // The Rust runtime handles SIGSEGV (stack-overflow detection); restore
            // the default action so the signal really ends the process.
            // SAFETY: setting a default disposition, then signalling ourselves.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig)
            };
            0
        }
        "fork-open" => {
            // The open happens in a child; the parent reports how the child ended.
            let p = cstr(&a(1));
            // SAFETY: fork in a single-threaded program; the child only opens, prints
            // and exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: valid NUL-terminated path.
                let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                println!("child open {}: {}", a(1), outcome(fd.into()));
                let _ = std::io::stdout().flush();
                // SAFETY: leave the child without running the parent's exit handlers.
                unsafe { libc::_exit(0) };
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if libc::WIFSIGNALED(status) {
                println!("child killed by signal {}", libc::WTERMSIG(status));
            } else {
                println!("child exited {}", libc::WEXITSTATUS(status));
            }
            0
        }
        "send-around-secret" => {
            // Connect to 127.0.0.1:PORT, send "before\n", open SECRET, send "after\n".
            use std::io::Write as _;
            let port = a(1);
            let secret = a(2);
            match std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
                Ok(mut conn) => {
                    let r = conn.write_all(b"before\n").and_then(|()| conn.flush());
                    println!("send before: {}", io_outcome(&r));
                    let opened = std::fs::File::open(&secret);
                    println!("open {secret}: {}", io_outcome(&opened.map(drop)));
                    let r = conn.write_all(b"after\n").and_then(|()| conn.flush());
                    println!("send after: {}", io_outcome(&r));
                    // Give the stack time to (re)transmit while the run is alive (the
                    // loopback retransmission timeout is 200 ms).
                    std::thread::sleep(std::time::Duration::from_millis(1000));
                }
                Err(e) => println!("connect: {}", errno_name(e.raw_os_error().unwrap_or(0))),
            }
            0
        }
        "connect-after-secret" => {
            // Open SECRET, then connect to 127.0.0.1:PORT with a 1 s limit.
            let secret = a(2);
            let opened = std::fs::File::open(&secret);
            println!("open {secret}: {}", io_outcome(&opened.map(drop)));
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], a(1).parse().unwrap_or(0)));
            match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)) {
                Ok(_) => println!("connect: OK"),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => println!("connect: TIMEOUT"),
                Err(e) => println!("connect: {}", errno_name(e.raw_os_error().unwrap_or(0))),
            }
            0
        }
        "mprotect-exec" => {
            // Maps PATH (or anonymous memory for `anon`) PROT_READ, then mprotect()s it
            // PROT_READ|PROT_EXEC; prints the outcome of the mprotect.
            let len = 4096usize;
            let anon = a(1) == "anon";
            let fd = if anon {
                -1
            } else {
                let p = cstr(&a(1));
                // SAFETY: valid NUL-terminated path.
                unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }
            };
            if !anon && fd < 0 {
                println!("open {}: {}", a(1), errno_name(last_errno()));
            } else {
                let flags = if anon {
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
                } else {
                    libc::MAP_PRIVATE
                };
                // SAFETY: a fresh private mapping of `len` bytes; fd is ours or -1.
                let m =
                    unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, flags, fd, 0) };
                if m == libc::MAP_FAILED {
                    println!("mmap {}: {}", a(1), errno_name(last_errno()));
                } else {
                    // SAFETY: `m` is the mapping just made, `len` bytes long.
                    let r = unsafe { libc::mprotect(m, len, libc::PROT_READ | libc::PROT_EXEC) };
                    println!("mprotect {}: {}", a(1), outcome(r.into()));
                }
            }
            0
        }
        "exec-args" => {
            // execv(PATH, [PATH, ARGS...]); prints the errno if it returns.
            let p = cstr(&a(1));
            let rest: Vec<CString> = args.iter().skip(2).map(|s| cstr(s)).collect();
            let mut argv: Vec<*const libc::c_char> = vec![p.as_ptr()];
            argv.extend(rest.iter().map(|c| c.as_ptr()));
            argv.push(std::ptr::null());
            // SAFETY: NULL-terminated argv of valid C strings that outlive the call.
            unsafe { libc::execv(p.as_ptr(), argv.as_ptr()) };
            println!("exec {}: {}", a(1), errno_name(last_errno()));
            0
        }
        "fexecve-memfd" => {
            // Copies SRC into a memfd and fexecve()s it as `SRC exit 3`.
            let name = cstr("agentd-copy");
            // SAFETY: valid name; flags 0.
            let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
            if fd < 0 {
                println!("memfd_create: {}", errno_name(last_errno()));
                return_code(0);
            }
            let bytes = std::fs::read(a(1)).unwrap_or_default();
            // SAFETY: fd is our memfd; the buffer is valid for its length.
            let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
            if n != bytes.len() as isize {
                println!("write memfd: {}", errno_name(last_errno()));
                return_code(0);
            }
            let (arg0, arg1, arg2) = (cstr(&a(1)), cstr("exit"), cstr("3"));
            let argv = [
                arg0.as_ptr(),
                arg1.as_ptr(),
                arg2.as_ptr(),
                std::ptr::null(),
            ];
            extern "C" {
                static environ: *const *const libc::c_char;
            }
            // SAFETY: fd is a memfd holding an ELF; argv is NULL-terminated; environ
            // is the process's own environment.
            unsafe { libc::fexecve(fd, argv.as_ptr(), environ) };
            println!("fexecve: {}", errno_name(last_errno()));
            0
        }
        "sleep" => {
            println!("sleeping");
            let _ = std::io::stdout().flush();
            std::thread::sleep(std::time::Duration::from_secs(a(1).parse().unwrap_or(30)));
            0
        }
        "orphan-sleep" => {
            // A grandchild in its own session, orphaned by its parent (a daemon the
            // command leaves behind), and the command itself; both print their pid and
            // sleep (the orphan for the second argument's seconds, if given).
            let secs = std::time::Duration::from_secs(a(1).parse().unwrap_or(30));
            let orphan_secs = a(2).parse().map_or(secs, std::time::Duration::from_secs);
            // SAFETY: the test helper is single-threaded here; the child only calls
            // setsid/fork/_exit and the grandchild carries on as a normal process.
            match unsafe { libc::fork() } {
                0 => {
                    // SAFETY: as above.
                    unsafe { libc::setsid() };
                    // SAFETY: as above.
                    if unsafe { libc::fork() } != 0 {
                        // SAFETY: leave without running the parent's atexit handlers.
                        unsafe { libc::_exit(0) };
                    }
                    println!("orphan {}", std::process::id());
                    let _ = std::io::stdout().flush();
                    std::thread::sleep(orphan_secs);
                    0
                }
                child if child > 0 => {
                    let mut status = 0;
                    // SAFETY: waits for the child forked just above.
                    unsafe { libc::waitpid(child, &mut status, 0) };
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    println!("command {}", std::process::id());
                    let _ = std::io::stdout().flush();
                    std::thread::sleep(secs);
                    0
                }
                _ => {
                    println!("fork: {}", errno_name(last_errno()));
                    1
                }
            }
        }
        "ids" => {
            // SAFETY: getuid, getgid and getgroups (into a local buffer) cannot fault.
            let (uid, gid, groups) = unsafe {
                let mut groups = [0 as libc::gid_t; 256];
                let n = libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr());
                let n = usize::try_from(n).unwrap_or(0);
                (libc::getuid(), libc::getgid(), groups[..n].to_vec())
            };
            let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            println!("uid {uid} gid {gid} groups {}", groups.join(","));
            0
        }
        "umask" => {
            // SAFETY: umask(2) cannot fail; the old mask is put back at once.
            let mask = unsafe {
                let old = libc::umask(0);
                libc::umask(old);
                old
            };
            println!("umask {mask:04o}");
            0
        }
        "cgroup" => {
            print!(
                "{}",
                std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default()
            );
            0
        }
        "status" => {
            for l in std::fs::read_to_string("/proc/self/status")
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    l.starts_with("Cap") || l.starts_with("NoNewPrivs") || l.starts_with("Seccomp:")
                })
            {
                println!("{l}");
            }
            0
        }
        // What this process can see of /proc: its pid and parent, the numeric entries
        // of /proc, then for each pid given (and the parent) whether cmdline, environ,
        // maps and mem open and fd lists; finally a write to a kernel tunable.
        "procview" => {
            let me = std::process::id();
            let parent = std::os::unix::process::parent_id();
            println!("self {me} parent {parent}");
            let mut pids: Vec<u32> = std::fs::read_dir("/proc")
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            pids.sort_unstable();
            println!(
                "listed {}",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let mut targets: Vec<String> = args[1..].to_vec();
            targets.push(parent.to_string());
            targets.push("self".into());
            for t in targets {
                for f in ["cmdline", "environ", "maps", "mem"] {
                    let path = format!("/proc/{t}/{f}");
                    println!("{path}: {}", io_outcome(&std::fs::File::open(&path)));
                }
                let path = format!("/proc/{t}/fd");
                println!("{path}: {}", io_outcome(&std::fs::read_dir(&path)));
            }
            let tunable = "/proc/sys/kernel/domainname";
            // O_TRUNC: the mount is checked (EROFS) before the file's permissions.
            let w = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(tunable);
            println!("write {tunable}: {}", io_outcome(&w));
            0
        }
        cmd if daemon::COMMANDS.contains(&cmd) => daemon::run(&args),
        cmd if net::COMMANDS.contains(&cmd) => net::run(&args),
        cmd if unix::COMMANDS.contains(&cmd) => unix::run(&args),
        other if budget::COMMANDS.contains(&other) => budget::run(other, &args),
        "empty-sys-exit" => floor::run(&args),
        "fsops" => fsops::run(&args),
        other => {
            eprintln!("usage: agentd-testprog open|write|fork-open|exec-args|fexecve-memfd|open-loop|spawn-loop|send-around-secret|connect-after-secret|exec|syscall|int80|exit|kill-self|sleep|cgroup|status|connect|udp-send|udp-connect|bind|socket|double-fork-connect|… (got {other:?})");
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// In a new session with a fresh pty as its controlling terminal: normal terminal use
/// (isatty, termios, window size), then the input-injection ioctls, TIOCSTI plain and
/// with bit 32 set (the kernel truncates the request to 32 bits) and TIOCLINUX paste.
/// Prints one `name RESULT` word pair each, on one line.
fn tty_inject() -> i32 {
    // SAFETY: single-threaded here; the child only makes plain syscalls and exits.
    let child = unsafe { libc::fork() };
    if child > 0 {
        let mut status = 0;
        // SAFETY: waits for the child forked just above.
        unsafe { libc::waitpid(child, &mut status, 0) };
        return libc::WEXITSTATUS(status);
    }
    // SAFETY: the child is not a group leader, so setsid makes it a session leader;
    // opening the pty slave without O_NOCTTY then makes it the controlling terminal.
    let master = unsafe {
        libc::setsid();
        libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY)
    };
    // SAFETY: master is the fd just opened; ptsname returns a static buffer.
    let slave = unsafe {
        libc::grantpt(master);
        libc::unlockpt(master);
        let name = libc::ptsname(master);
        libc::open(name, libc::O_RDWR)
    };
    let mut out = Vec::new();
    // SAFETY: slave is an open fd; the structs are valid for the kernel to fill.
    unsafe {
        out.push(format!("isatty {}", libc::isatty(slave)));
        let mut t: libc::termios = std::mem::zeroed();
        out.push(format!(
            "tcgetattr {}",
            outcome(libc::tcgetattr(slave, &mut t).into())
        ));
        out.push(format!(
            "tcsetattr {}",
            outcome(libc::tcsetattr(slave, libc::TCSANOW, &t).into())
        ));
        let mut ws: libc::winsize = std::mem::zeroed();
        out.push(format!(
            "getwinsz {}",
            outcome(libc::ioctl(slave, libc::TIOCGWINSZ, &mut ws).into())
        ));
        ws.ws_row = 40;
        out.push(format!(
            "setwinsz {}",
            outcome(libc::ioctl(slave, libc::TIOCSWINSZ, &ws).into())
        ));
        let byte = b'x';
        let plain = libc::syscall(libc::SYS_ioctl, slave, libc::TIOCSTI, &byte);
        out.push(format!("tiocsti {}", outcome(plain)));
        let high = libc::syscall(libc::SYS_ioctl, slave, libc::TIOCSTI | 1 << 32, &byte);
        out.push(format!("tiocsti-high {}", outcome(high)));
        let paste = [3u8; 1]; // TIOCL_PASTESEL
        let linux = libc::syscall(
            libc::SYS_ioctl,
            slave,
            libc::TIOCLINUX | 1 << 32,
            paste.as_ptr(),
        );
        out.push(format!("tioclinux {}", outcome(linux)));
    }
    println!("{}", out.join(" "));
    return_code(0)
}
