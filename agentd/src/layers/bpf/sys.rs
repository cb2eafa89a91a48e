//! The raw `bpf(2)` calls aya 0.14 does not wrap for us (pinning a raw link), built on
//! `aya_obj::generated::bpf_attr`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use aya_obj::generated::{bpf_attr, bpf_cmd};

fn path_cstring(path: &Path) -> Result<CString, std::io::Error> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", path.display()),
        )
    })
}

/// `bpf(cmd, attr)`: the raw return value, or the errno.
fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> Result<i64, std::io::Error> {
    // SAFETY: `attr` is a fully initialised (zeroed, then filled) `union bpf_attr`, and
    // every pointer in it refers to a buffer the caller keeps alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: `bpf_attr` is a C union of integer fields; all-zero is its documented
    // "unused" value for every command.
    unsafe { std::mem::zeroed() }
}

/// `BPF_OBJ_PIN`: pins the program, map or link `fd` at `path` (on bpffs).
pub fn obj_pin(fd: &OwnedFd, path: &Path) -> Result<(), std::io::Error> {
    let name = path_cstring(path)?;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = name.as_ptr() as u64;
    attr.__bindgen_anon_4.bpf_fd = fd.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr).map(|_| ())
}
