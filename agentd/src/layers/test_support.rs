//! Test helpers shared by the layer tests: run a closure in a forked child; a policy
//! path rule for an existing path.

#![allow(clippy::expect_used)]

use std::panic::AssertUnwindSafe;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

/// Runs `f` in a forked child and returns how the child ended. The child exits
/// with `f`'s return value (101 if it panicked) and never returns into the
/// test harness.
pub fn in_child(f: impl FnOnce() -> i32) -> WaitStatus {
    // SAFETY: the child only runs `f` and then `_exit`s; the test binary's other
    // threads are not touched, and glibc keeps malloc usable after fork.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: _exit never returns and runs no destructors or atexit hooks.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => waitpid(child, None).expect("waitpid"),
    }
}

/// The exit code of a child that exited normally.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        _ => None,
    }
}

/// The rule a policy would hold for `path` (which exists), written as its own path.
pub fn path_rule(path: &std::path::Path) -> crate::policy::PathRule {
    crate::policy::PathRule {
        written: path.display().to_string(),
        path: path.to_path_buf(),
        optional: false,
        exists: true,
        is_dir: path.is_dir(),
        span: crate::policy::Span::default(),
    }
}
