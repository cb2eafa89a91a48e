//! The raw `bpf(2)` calls aya 0.14 does not wrap for us (pinning a raw link), built on
//! `aya_obj::generated::bpf_attr`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
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

/// Whether `e` says the kernel has no batch operation for this map type (or at all), so
/// that the caller falls back to one call per element.
pub fn batch_unsupported(e: &std::io::Error) -> bool {
    // ENOTSUPP (524) is the kernel-internal errno `bpf_map_do_batch` returns.
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(524)
    )
}

/// `BPF_MAP_UPDATE_BATCH`: writes `count` entries of `map_fd`, whose keys and values lie
/// back to back in `keys` and `values`, in one call. On failure, the entries before the
/// failing one were written (the kernel reports how many; the caller's cleanup removes
/// them with the rest of the run's entries).
pub fn map_update_batch(
    map_fd: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: u32,
) -> Result<(), std::io::Error> {
    batch_write(
        bpf_cmd::BPF_MAP_UPDATE_BATCH,
        map_fd,
        keys,
        Some(values),
        count,
    )
}

/// `BPF_MAP_DELETE_BATCH`: removes the `count` keys that lie back to back in `keys`.
pub fn map_delete_batch(
    map_fd: BorrowedFd<'_>,
    keys: &[u8],
    count: u32,
) -> Result<(), std::io::Error> {
    batch_write(bpf_cmd::BPF_MAP_DELETE_BATCH, map_fd, keys, None, count)
}

fn batch_write(
    cmd: bpf_cmd,
    map_fd: BorrowedFd<'_>,
    keys: &[u8],
    values: Option<&[u8]>,
    count: u32,
) -> Result<(), std::io::Error> {
    let mut attr = zeroed_attr();
    attr.batch.keys = keys.as_ptr() as u64;
    attr.batch.values = values.map_or(0, |v| v.as_ptr() as u64);
    attr.batch.count = count;
    attr.batch.map_fd = map_fd.as_raw_fd() as u32;
    bpf(cmd, &mut attr).map(|_| ())
}

/// Every key of `map_fd`, back to back, read with `BPF_MAP_LOOKUP_BATCH` (a few calls
/// for the whole map instead of one `GET_NEXT_KEY` per entry).
pub fn map_keys_batch(
    map_fd: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
) -> Result<Vec<u8>, std::io::Error> {
    const CHUNK: usize = 256;
    let mut keys = Vec::new();
    let mut chunk_keys = vec![0u8; key_size * CHUNK];
    let mut chunk_values = vec![0u8; value_size * CHUNK];
    // The generic batch walk's position token is one key.
    let mut token_in = vec![0u8; key_size];
    let mut token_out = vec![0u8; key_size];
    let mut first = true;
    loop {
        let mut attr = zeroed_attr();
        attr.batch.in_batch = if first { 0 } else { token_in.as_ptr() as u64 };
        attr.batch.out_batch = token_out.as_mut_ptr() as u64;
        attr.batch.keys = chunk_keys.as_mut_ptr() as u64;
        attr.batch.values = chunk_values.as_mut_ptr() as u64;
        attr.batch.count = CHUNK as u32;
        attr.batch.map_fd = map_fd.as_raw_fd() as u32;
        let r = bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr);
        // SAFETY: reading the `count` the kernel wrote back into the union's batch arm.
        let got = unsafe { attr.batch.count } as usize;
        keys.extend_from_slice(&chunk_keys[..got.min(CHUNK) * key_size]);
        match r {
            Ok(_) => {}
            // The walk has reached the end.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
            Err(e) => return Err(e),
        }
        std::mem::swap(&mut token_in, &mut token_out);
        first = false;
    }
}

/// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (the first with `None`), or `None` at
/// the end.
fn map_next_key(
    map_fd: BorrowedFd<'_>,
    key: Option<&[u8]>,
    next: &mut [u8],
) -> Result<bool, std::io::Error> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = map_fd.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = key.map_or(0, |k| k.as_ptr() as u64);
    attr.__bindgen_anon_2.__bindgen_anon_1.next_key = next.as_mut_ptr() as u64;
    match bpf(bpf_cmd::BPF_MAP_GET_NEXT_KEY, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `BPF_MAP_DELETE_ELEM` of `key`; a missing key is no error.
fn map_delete(map_fd: BorrowedFd<'_>, key: &[u8]) -> Result<(), std::io::Error> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = map_fd.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = key.as_ptr() as u64;
    match bpf(bpf_cmd::BPF_MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
        _ => Ok(()),
    }
}

/// Removes every key of `map_fd` for which `doomed` holds, and returns how many. Reads
/// and removes in batches (a few calls, whatever the map holds), or one key per call on
/// a kernel without batch operations for the map's type.
pub fn map_remove_where(
    map_fd: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    doomed: impl Fn(&[u8]) -> bool,
) -> Result<usize, std::io::Error> {
    let all = match map_keys_batch(map_fd, key_size, value_size) {
        Ok(keys) => keys,
        Err(e) if batch_unsupported(&e) => {
            let mut keys = Vec::new();
            let mut next = vec![0u8; key_size];
            let mut at: Option<Vec<u8>> = None;
            while map_next_key(map_fd, at.as_deref(), &mut next)? {
                keys.extend_from_slice(&next);
                at = Some(next.clone());
            }
            keys
        }
        Err(e) => return Err(e),
    };
    let doomed: Vec<u8> = all
        .chunks_exact(key_size)
        .filter(|k| doomed(k))
        .flatten()
        .copied()
        .collect();
    let count = doomed.len() / key_size;
    if count == 0 {
        return Ok(0);
    }
    match map_delete_batch(map_fd, &doomed, count as u32) {
        Ok(()) => Ok(count),
        Err(e) if batch_unsupported(&e) => {
            for k in doomed.chunks_exact(key_size) {
                map_delete(map_fd, k)?;
            }
            Ok(count)
        }
        Err(e) => Err(e),
    }
}
