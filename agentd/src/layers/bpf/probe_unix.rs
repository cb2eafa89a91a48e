//! Probe of the kernel's AF_UNIX cgroup hooks (`BPF_CGROUP_UNIX_CONNECT`, Linux 6.7+).
//!
//! aya 0.14 does not know this attach type, and a `cgroup_sock_addr` program must be
//! loaded with the attach type it will be attached with, so the probe loads a
//! two-instruction program (`r0 = 1; exit`: allow) with raw `bpf(BPF_PROG_LOAD)` and
//! attaches it to a fresh v2 cgroup with `bpf(BPF_LINK_CREATE)`, for
//! `BPF_CGROUP_UNIX_CONNECT` and `BPF_CGROUP_UNIX_SENDMSG` (the two hooks the
//! unix-socket fallback uses, see `unix.rs`); closing the fds detaches and frees them.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `BPF_PROG_LOAD` command.
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_LINK_CREATE` command.
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `BPF_CGROUP_UNIX_CONNECT` in `enum bpf_attach_type` (Linux 6.7+).
pub const BPF_CGROUP_UNIX_CONNECT: u32 = 49;
/// `BPF_CGROUP_UNIX_SENDMSG`.
pub const BPF_CGROUP_UNIX_SENDMSG: u32 = 50;
/// Size of the `union bpf_attr` prefix passed (zero-filled beyond the fields used).
const ATTR_LEN: usize = 128;

/// `r0 = 1` (BPF_ALU64 | BPF_MOV | BPF_K), then `exit` (BPF_JMP | BPF_EXIT).
const ALLOW_PROGRAM: [u8; 16] = [0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];

fn put_u32(attr: &mut [u8; ATTR_LEN], offset: usize, value: u32) {
    attr[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; ATTR_LEN], offset: usize, value: u64) {
    attr[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
}

fn bpf(cmd: libc::c_long, attr: &[u8; ATTR_LEN]) -> Result<OwnedFd, std::io::Error> {
    // SAFETY: `attr` is a zero-filled `union bpf_attr` prefix of ATTR_LEN bytes, whose
    // pointers (program, licence) point to live buffers of the caller for this call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), ATTR_LEN as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Loads an allow-all `cgroup/connect_unix` program and attaches it to the v2 cgroup
/// directory `dir` (then drops both). `Err` carries the kernel's answer.
pub fn probe_cgroup_unix_connect(dir: &Path) -> Result<(), String> {
    for (attach, name) in [
        (BPF_CGROUP_UNIX_CONNECT, "cgroup/connect_unix"),
        (BPF_CGROUP_UNIX_SENDMSG, "cgroup/sendmsg_unix"),
    ] {
        probe_one(dir, attach, name)?;
    }
    Ok(())
}

fn probe_one(dir: &Path, attach_type: u32, name: &str) -> Result<(), String> {
    let cgroup = File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    let license = b"GPL\0";
    let mut attr = [0u8; ATTR_LEN];
    // union bpf_attr, BPF_PROG_LOAD: prog_type @0, insn_cnt @4, insns @8, license @16,
    // expected_attach_type @68.
    put_u32(&mut attr, 0, BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
    put_u32(&mut attr, 4, (ALLOW_PROGRAM.len() / 8) as u32);
    put_u64(&mut attr, 8, ALLOW_PROGRAM.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    put_u32(&mut attr, 68, attach_type);
    let prog = bpf(BPF_PROG_LOAD, &attr).map_err(|e| format!("load {name} (raw bpf): {e}"))?;
    // BPF_LINK_CREATE: prog_fd @0, target_fd @4, attach_type @8, flags @12.
    let mut attr = [0u8; ATTR_LEN];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 4, cgroup.as_raw_fd() as u32);
    put_u32(&mut attr, 8, attach_type);
    let link = bpf(BPF_LINK_CREATE, &attr)
        .map_err(|e| format!("attach {name} to {}: {e}", dir.display()))?;
    drop(link);
    drop(prog);
    Ok(())
}
