//! Capabilities layer: drop every capability, lock the securebits and set
//! `no_new_privs`, so that neither the confined process nor anything it executes
//! (setuid-root binaries, file capabilities, uid 0 itself) can regain privileges.
//!
//! [`prepare`] runs in the parent and reads everything the child needs;
//! [`PreparedCaps::apply_in_child`] runs between fork and exec and makes only raw
//! syscalls (`prctl`, `capset`) on plain integers: no allocation, no locks.

use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// Where the kernel publishes the highest capability number it knows.
pub const CAP_LAST_CAP_PATH: &str = "/proc/sys/kernel/cap_last_cap";

/// Securebits set (and locked) in the child while it still holds `CAP_SETPCAP`:
/// uid 0 gets no implicit capabilities on exec (`NOROOT`), uid changes don't
/// touch capability sets (`NO_SETUID_FIXUP`), `KEEP_CAPS` is locked off and
/// ambient capabilities can never be raised again (`NO_CAP_AMBIENT_RAISE`).
pub const SECUREBITS: libc::c_int = libc::SECBIT_NOROOT
    | libc::SECBIT_NOROOT_LOCKED
    | libc::SECBIT_NO_SETUID_FIXUP
    | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
    | libc::SECBIT_KEEP_CAPS_LOCKED
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets in two 32-bit words.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Number of `CapUserData` words for version 3.
const LINUX_CAPABILITY_U32S_3: usize = 2;
/// Version 3 sets hold 64 capabilities, numbered 0..=63.
const MAX_CAP_V3: u32 = 63;

/// `struct __user_cap_header_struct` from `<linux/capability.h>`.
#[repr(C)]
struct CapUserHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` from `<linux/capability.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapUserData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unexpected content in {path}: {content:?} (expected a capability number 0..=63)")]
    Parse { path: PathBuf, content: String },
}

/// Everything the child needs to drop capabilities; plain integers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreparedCaps {
    last_cap: u32,
}

/// Reads `CAP_LAST_CAP` from [`CAP_LAST_CAP_PATH`] (parent side).
pub fn prepare() -> Result<PreparedCaps, CapsError> {
    prepare_from(Path::new(CAP_LAST_CAP_PATH))
}

fn prepare_from(path: &Path) -> Result<PreparedCaps, CapsError> {
    let content = std::fs::read_to_string(path).map_err(|source| CapsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let last_cap = parse_last_cap(&content).ok_or_else(|| CapsError::Parse {
        path: path.to_path_buf(),
        content: content.clone(),
    })?;
    Ok(PreparedCaps { last_cap })
}

fn parse_last_cap(content: &str) -> Option<u32> {
    let value: u32 = content.trim().parse().ok()?;
    (value <= MAX_CAP_V3).then_some(value)
}

impl PreparedCaps {
    /// Child side, between fork and exec. In order: lock the securebits (needs
    /// `CAP_SETPCAP`, so first), drop the whole bounding set (also needs
    /// `CAP_SETPCAP`), clear the ambient set, zero the effective, permitted and
    /// inheritable sets, and set `no_new_privs`. Returns the raw errno of the
    /// first failing call. (A run splits it around the user switch.)
    #[cfg(test)]
    pub fn apply_in_child(&self) -> Result<(), Errno> {
        self.drop_bounding_in_child()?;
        self.clear_in_child()
    }

    /// The first half of [`Self::apply_in_child`]: securebits, bounding set, ambient
    /// set. The process keeps its effective capabilities (`SECBIT_NO_SETUID_FIXUP` keeps
    /// them across a uid change too), so it can still switch user before
    /// [`Self::clear_in_child`].
    pub fn drop_bounding_in_child(&self) -> Result<(), Errno> {
        prctl(libc::PR_SET_SECUREBITS, SECUREBITS as libc::c_ulong, 0)?;
        for cap in 0..=self.last_cap {
            prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0)?;
        }
        prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
        )
    }

    /// The second half: zero the effective, permitted and inheritable sets and set
    /// `no_new_privs`.
    pub fn clear_in_child(&self) -> Result<(), Errno> {
        let header = CapUserHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapUserData::default(); LINUX_CAPABILITY_U32S_3];
        // SAFETY: async-signal-safe: a raw capset(2) on a header and a two-word data
        // array that live on this stack frame and have the kernel's v3 layout.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_capset,
                &header as *const CapUserHeader,
                data.as_ptr(),
            )
        };
        if rc != 0 {
            return Err(Errno::last());
        }
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
    }
}

/// `prctl(option, arg2, arg3, 0, 0)`; async-signal-safe (a single syscall).
fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Result<(), Errno> {
    // SAFETY: async-signal-safe: prctl(2) with integer arguments only; the options
    // used here read no user memory.
    let rc = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use std::ffi::CString;

    use crate::layers::test_support::{exit_code as exited, in_child};

    fn status_field(status: &str, key: &str) -> Option<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    }

    #[test]
    fn prepare_reads_cap_last_cap() {
        let prepared = prepare().expect("prepare");
        let raw = std::fs::read_to_string(CAP_LAST_CAP_PATH).expect("read");
        assert_eq!(prepared.last_cap, raw.trim().parse::<u32>().expect("num"));
        // The kernel has no capability past last_cap.
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAPBSET_READ,
                libc::c_ulong::from(prepared.last_cap + 1),
                0,
                0,
                0,
            )
        };
        assert_eq!(rc, -1);
    }

    #[test]
    fn parse_last_cap_rejects_garbage() {
        assert_eq!(parse_last_cap("40\n"), Some(40));
        assert_eq!(parse_last_cap("63"), Some(63));
        assert_eq!(parse_last_cap("64"), None);
        assert_eq!(parse_last_cap("x"), None);
        let err = prepare_from(Path::new("/nonexistent/cap_last_cap")).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "cannot read /nonexistent/cap_last_cap: No such file or directory (os error 2)"
        );
    }

    /// After apply: capget shows every set empty, the bounding and ambient sets are
    /// empty, the securebits are locked and no_new_privs is on.
    #[test]
    fn apply_drops_everything() {
        let prepared = prepare().expect("prepare");
        let last = prepared.last_cap;
        let status = in_child(move || {
            if let Err(e) = prepared.apply_in_child() {
                return 10 + e as i32;
            }
            let header = CapUserHeader {
                version: LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            let mut data = [CapUserData::default(); LINUX_CAPABILITY_U32S_3];
            // SAFETY: capget(2) writes two CapUserData words into `data`.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_capget,
                    &header as *const CapUserHeader,
                    data.as_mut_ptr(),
                )
            };
            if rc != 0 {
                return 2;
            }
            if data
                .iter()
                .any(|d| d.effective != 0 || d.permitted != 0 || d.inheritable != 0)
            {
                return 3;
            }
            for cap in 0..=last {
                // SAFETY: prctl with integer arguments only.
                let bnd = unsafe {
                    libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0)
                };
                // SAFETY: prctl with integer arguments only.
                let amb = unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_IS_SET as libc::c_ulong,
                        libc::c_ulong::from(cap),
                        0,
                        0,
                    )
                };
                if bnd != 0 || amb != 0 {
                    return 4;
                }
            }
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) } != SECUREBITS {
                return 5;
            }
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } != 1 {
                return 6;
            }
            let Ok(proc_status) = std::fs::read_to_string("/proc/self/status") else {
                return 7;
            };
            for key in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
                if status_field(&proc_status, key).as_deref() != Some("0000000000000000") {
                    return 8;
                }
            }
            if status_field(&proc_status, "NoNewPrivs:").as_deref() != Some("1") {
                return 9;
            }
            0
        });
        assert_eq!(exited(status), Some(0), "child status {status:?}");
    }

    /// uid 0 normally regains the full capability set on execve; with NOROOT, an
    /// empty bounding set and no_new_privs the exec'd program has nothing.
    #[test]
    fn root_exec_gets_no_capabilities() {
        // SAFETY: getuid has no preconditions.
        assert_eq!(unsafe { libc::getuid() }, 0, "this test must run as root");
        let prepared = prepare().expect("prepare");
        let sh = CString::new("/bin/sh").expect("cstr");
        let script = CString::new(
            "grep -q '^CapEff:[[:space:]]*0000000000000000$' /proc/self/status || exit 3; \
             grep -q '^CapPrm:[[:space:]]*0000000000000000$' /proc/self/status || exit 4; \
             grep -q '^CapBnd:[[:space:]]*0000000000000000$' /proc/self/status || exit 5; \
             grep -q '^NoNewPrivs:[[:space:]]*1$' /proc/self/status || exit 6; exit 0",
        )
        .expect("cstr");
        let dash_c = CString::new("-c").expect("cstr");
        let status = in_child(move || {
            if let Err(e) = prepared.apply_in_child() {
                return 10 + e as i32;
            }
            let argv = [
                sh.as_ptr(),
                dash_c.as_ptr(),
                script.as_ptr(),
                std::ptr::null(),
            ];
            // SAFETY: argv is a NULL-terminated array of valid C strings; environ is
            // the process environment.
            unsafe { libc::execv(sh.as_ptr(), argv.as_ptr()) };
            2
        });
        assert_eq!(exited(status), Some(0), "child status {status:?}");
    }
}
