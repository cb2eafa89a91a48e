//! `fsops OP:PATH[:PATH2] ...`: path operations, one after the other, each printing
//! `OP PATH: OUTCOME` (`OK` or the errno name). OPs: unlink, rmdir, rename (PATH to
//! PATH2), link (PATH2 becomes a hard link to PATH), truncate (to 0 bytes), chmod (0600),
//! mkdir, symlink (PATH2 becomes a symlink to PATH), create (O_CREAT|O_EXCL), open
//! (O_RDONLY), chdir, wait (until PATH exists),
//! dirfd (opens the directory PATH for the `*at` ops after it), unlinkat and renameat
//! (relative to that directory fd).

use std::ffi::CString;
use std::io::Write;

use super::{errno_name, last_errno};

pub fn run(args: &[String]) -> i32 {
    let mut dirfd = libc::AT_FDCWD;
    for spec in args.iter().skip(1) {
        let mut parts = spec.splitn(3, ':');
        let op = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default();
        let other = parts.next().unwrap_or_default();
        let (p, q) = (cstr(path), cstr(other));
        // SAFETY: every call gets valid NUL-terminated paths; the fd of `create` is
        // closed at once.
        let rc = unsafe {
            match op {
                "unlink" => libc::unlink(p.as_ptr()),
                "rmdir" => libc::rmdir(p.as_ptr()),
                "rename" => libc::rename(p.as_ptr(), q.as_ptr()),
                "link" => libc::link(p.as_ptr(), q.as_ptr()),
                "truncate" => libc::truncate(p.as_ptr(), 0),
                "chmod" => libc::chmod(p.as_ptr(), 0o600),
                "mkdir" => libc::mkdir(p.as_ptr(), 0o755),
                "symlink" => libc::symlink(p.as_ptr(), q.as_ptr()),
                "chdir" => libc::chdir(p.as_ptr()),
                "wait" => {
                    // Until the test creates PATH (at most 20 s): a point to act between ops.
                    let mut rc = -1;
                    for _ in 0..2000 {
                        if std::path::Path::new(path).exists() {
                            rc = 0;
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    rc
                }
                "open" => {
                    let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    fd.min(0)
                }
                "dirfd" => {
                    dirfd = libc::open(
                        p.as_ptr(),
                        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    );
                    dirfd.min(0)
                }
                "unlinkat" => libc::unlinkat(dirfd, p.as_ptr(), 0),
                "renameat" => libc::renameat(dirfd, p.as_ptr(), dirfd, q.as_ptr()),
                "create" => {
                    let fd = libc::open(
                        p.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                        0o644,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                        0
                    } else {
                        fd
                    }
                }
                other => {
                    println!("fsops: unknown op {other:?}");
                    return 2;
                }
            }
        };
        let outcome = if rc == 0 {
            "OK"
        } else {
            errno_name(last_errno())
        };
        println!("{op} {path}: {outcome}");
        let _ = std::io::stdout().flush();
    }
    0
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}
