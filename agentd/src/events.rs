//! The typed `Event` the rest of agentd consumes, and its decoding from the raw
//! ring-buffer records defined in `agentd-common`.
//!
//! Decoding is bounds-checked field by field (offsets from `core::mem::offset_of!` on the
//! shared structs), so a short or corrupt record becomes a `DecodeError`, never a panic or
//! an out-of-bounds read.

use std::fmt;

use agentd_common::fsrules::{
    FsEvent, EVENT_KIND_FS, FS_EVENT_FLAG_KERNEL_PATH, FS_NAME_LEN, FS_PATH_LEN,
};
use agentd_common::{
    EventHeader, ExecEvent, ExitEvent, COMM_LEN, EVENT_KIND_EXEC, EVENT_KIND_EXIT,
    EXEC_FLAG_FILENAME_TRUNCATED, FILENAME_LEN,
};
use core::mem::{offset_of, size_of};

use agentd_common::net::{NetEvent, EVENT_KIND_NET};

use crate::layers::bpf::NetDenial;

/// One thing the kernel told us about a confined run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A process in a watched cgroup completed an execve (`tp_btf/sched_process_exec`).
    Exec {
        /// Thread id of the task that exec'd (after exec it is the thread-group leader).
        pid: u32,
        /// Thread-group id (the userspace pid).
        tgid: u32,
        /// `real_parent->tgid` (0 if it could not be read).
        ppid: u32,
        /// Run slot the cgroup was registered with (`BpfRuntime::watch_cgroup`).
        run_slot: u32,
        /// v2 cgroup id (inode number of the cgroup directory).
        cgroup_id: u64,
        /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
        ktime_ns: u64,
        /// Real uid after the exec.
        uid: u32,
        /// `task->comm` after the exec (at most 15 bytes, lossily UTF-8).
        comm: String,
        /// Path as passed to execve (`linux_binprm.filename`), lossily UTF-8. The kernel
        /// side copies at most 255 bytes; a longer name is cut there and marked by a
        /// trailing `…` (U+2026), so truncation is never silent.
        filename: String,
    },
    /// The last thread of a process in a watched cgroup exited
    /// (`tp_btf/sched_process_exit`).
    Exit {
        /// Thread id of the exiting thread.
        pid: u32,
        /// Thread-group id (the userspace pid).
        tgid: u32,
        /// Run slot the cgroup was registered with.
        run_slot: u32,
        /// v2 cgroup id.
        cgroup_id: u64,
        /// CLOCK_MONOTONIC nanoseconds.
        ktime_ns: u64,
        /// Raw wait status as the kernel stores it (what `wait4` reports): decode with
        /// `WIFEXITED`/`WEXITSTATUS`/`WTERMSIG`; e.g. `exit(3)` is 0x300, SIGKILL is 9.
        exit_code: i32,
    },
    /// A file or exec syscall of a watched process failed with `EACCES`/`EPERM`
    /// (the `tp_btf/sys_exit` program, see `agentd-ebpf/src/denials.rs`).
    Denial {
        pid: u32,
        tgid: u32,
        cgroup_id: u64,
        /// x86_64 syscall number.
        nr: u32,
        /// Positive errno the process saw.
        errno: i32,
        /// Directory fd of `*at` syscalls, else `AT_FDCWD`.
        dirfd: i32,
        /// `O_*` flags of open-type syscalls, else 0.
        open_flags: u64,
        /// The path argument as passed (a cut one ends in `…`).
        path: String,
        /// For a relative `path`: the absolute directory it was resolved against, taken in
        /// the kernel during the call; `None` when it could not be told.
        base: Option<String>,
        /// The event's `DENIAL_FLAG_*` bits (a seccomp kill and its ABI).
        flags: u32,
    },
    /// A `link`/`rename` family call that failed with `EXDEV`, `EACCES` or `EPERM`
    /// (`agentd_common::denials::ReferDenialEvent`).
    ReferDenial {
        pid: u32,
        tgid: u32,
        cgroup_id: u64,
        /// x86_64 syscall number.
        nr: u32,
        /// Positive errno the process saw.
        errno: i32,
        /// Directory fds of the `*at` variants, else `AT_FDCWD`.
        old_dirfd: i32,
        new_dirfd: i32,
        /// The paths as passed (a cut one ends in `…`).
        old_path: String,
        new_path: String,
        /// As [`Event::Denial`]'s `base`, for each path.
        old_base: Option<String>,
        new_base: Option<String>,
    },
    /// A socket operation denied (or, in audit mode, would-be denied) by the cgroup
    /// network programs.
    Net(NetDenial),
    /// A pathname unix-socket connect/send denied, killed or would-be denied
    /// (`agentd_common::unix`).
    Unix(crate::layers::bpf::UnixDenial),
    /// An inode rule (`fs.deny` / `fs.secret`) matched an open (`agentd_common::fsrules`).
    Fs {
        /// Thread id of the task that opened the file.
        pid: u32,
        /// Thread-group id.
        tgid: u32,
        /// v2 cgroup id.
        cgroup_id: u64,
        /// `FS_RULE_DENY` or `FS_RULE_SECRET`.
        rule_kind: u32,
        /// Index in `fs.deny` / `fs.secret`.
        rule_index: u32,
        /// `FS_LAYER_LSM` or `FS_LAYER_TRACEPOINT`.
        layer: u32,
        /// One of the `FS_ACTION_*` constants.
        action: u32,
        /// Kernel device number of the opened file.
        dev: u32,
        /// Inode number of the opened file.
        ino: u64,
        /// Dentries between the opened file and the matching rule entry.
        depth: u32,
        /// `FS_OP_*`: what the process tried (open, or a path operation on the LSM path).
        op: u32,
        /// `FS_EVENT_FLAG_*` bits.
        flags: u32,
        /// The path the process opened, as the kernel resolved it (`bpf_d_path`, BPF
        /// LSM `file_open` only).
        kernel_path: Option<String>,
        /// The opened file's own name (`d_name`), lossily UTF-8.
        name: String,
    },
}

impl Event {
    /// The v2 cgroup id of the run the event belongs to (what the router routes by).
    pub fn cgroup_id(&self) -> u64 {
        match self {
            Event::Exec { cgroup_id, .. }
            | Event::Exit { cgroup_id, .. }
            | Event::Denial { cgroup_id, .. }
            | Event::ReferDenial { cgroup_id, .. }
            | Event::Fs { cgroup_id, .. } => *cgroup_id,
            Event::Net(d) => d.cgroup_id,
            Event::Unix(d) => d.cgroup_id,
        }
    }

    /// Decodes one ring-buffer record (an `ExecEvent` or `ExitEvent`).
    pub fn from_record(record: &[u8]) -> Result<Self, DecodeError> {
        let kind = read_u32(record, offset_of!(EventHeader, kind))?;
        match kind {
            EVENT_KIND_EXEC => decode_exec(record),
            EVENT_KIND_EXIT => decode_exit(record),
            agentd_common::denials::EVENT_KIND_DENIAL => decode_denial(record),
            agentd_common::denials::EVENT_KIND_REFER_DENIAL => decode_refer_denial(record),
            EVENT_KIND_NET => decode_net(record),
            EVENT_KIND_FS => decode_fs(record),
            agentd_common::unix::EVENT_KIND_UNIX => decode_unix(record),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// Why a ring-buffer record could not be decoded. Seeing one means the kernel and
/// userspace sides disagree on the layout, which the layout tests should have caught.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is shorter than its kind requires.
    Short {
        /// Kind read from the header, if the header itself was complete.
        kind: Option<u32>,
        /// Bytes the record has.
        len: usize,
        /// Bytes it needs.
        need: usize,
    },
    /// The header's `kind` is not one of the `EVENT_KIND_*` constants.
    UnknownKind(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short {
                kind: Some(kind),
                len,
                need,
            } => write!(
                f,
                "event record of kind {kind} has {len} bytes, needs {need}"
            ),
            DecodeError::Short {
                kind: None,
                len,
                need,
            } => write!(f, "event record has {len} bytes, needs {need}"),
            DecodeError::UnknownKind(kind) => write!(f, "unknown event record kind {kind}"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn decode_header(record: &[u8], kind: u32, need: usize) -> Result<EventHeader, DecodeError> {
    if record.len() < need {
        return Err(DecodeError::Short {
            kind: Some(kind),
            len: record.len(),
            need,
        });
    }
    Ok(EventHeader {
        kind,
        run_slot: read_u32(record, offset_of!(EventHeader, run_slot))?,
        tgid: read_u32(record, offset_of!(EventHeader, tgid))?,
        pid: read_u32(record, offset_of!(EventHeader, pid))?,
        cgroup_id: read_u64(record, offset_of!(EventHeader, cgroup_id))?,
        ktime_ns: read_u64(record, offset_of!(EventHeader, ktime_ns))?,
    })
}

fn decode_exec(record: &[u8]) -> Result<Event, DecodeError> {
    let header = decode_header(record, EVENT_KIND_EXEC, size_of::<ExecEvent>())?;
    let ppid = read_u32(record, offset_of!(ExecEvent, ppid))?;
    let uid = read_u32(record, offset_of!(ExecEvent, uid))?;
    let filename_len = read_u32(record, offset_of!(ExecEvent, filename_len))?;
    let flags = read_u32(record, offset_of!(ExecEvent, flags))?;

    let comm = bytes(record, offset_of!(ExecEvent, comm), COMM_LEN)?;
    let filename_bytes = bytes(record, offset_of!(ExecEvent, filename), FILENAME_LEN)?;
    // Trust neither the length nor the NUL alone: stop at whichever comes first, and
    // never past the buffer.
    let max = usize::try_from(filename_len)
        .unwrap_or(usize::MAX)
        .min(FILENAME_LEN - 1);
    let mut filename = c_string(&filename_bytes[..max]);
    if flags & EXEC_FLAG_FILENAME_TRUNCATED != 0 {
        filename.push('…');
    }

    Ok(Event::Exec {
        pid: header.pid,
        tgid: header.tgid,
        ppid,
        run_slot: header.run_slot,
        cgroup_id: header.cgroup_id,
        ktime_ns: header.ktime_ns,
        uid,
        comm: c_string(comm),
        filename,
    })
}

fn decode_exit(record: &[u8]) -> Result<Event, DecodeError> {
    let header = decode_header(record, EVENT_KIND_EXIT, size_of::<ExitEvent>())?;
    let exit_code = i32::from_ne_bytes(array(record, offset_of!(ExitEvent, exit_code))?);
    Ok(Event::Exit {
        pid: header.pid,
        tgid: header.tgid,
        run_slot: header.run_slot,
        cgroup_id: header.cgroup_id,
        ktime_ns: header.ktime_ns,
        exit_code,
    })
}

fn decode_denial(record: &[u8]) -> Result<Event, DecodeError> {
    use agentd_common::denials::{
        DenialEvent, DENIAL_FLAG_BASE, DENIAL_FLAG_PATH_TRUNCATED, DENIAL_PATH_LEN,
        EVENT_KIND_DENIAL,
    };
    let header = decode_header(record, EVENT_KIND_DENIAL, size_of::<DenialEvent>())?;
    let i32_at = |o| array(record, o).map(i32::from_ne_bytes);
    let flags = read_u32(record, offset_of!(DenialEvent, flags))?;
    let len = read_u32(record, offset_of!(DenialEvent, path_len))?;
    let raw = bytes(record, offset_of!(DenialEvent, path), DENIAL_PATH_LEN)?;
    let max = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .min(DENIAL_PATH_LEN - 1);
    let mut path = c_string(&raw[..max]);
    if flags & DENIAL_FLAG_PATH_TRUNCATED != 0 {
        path.push('…');
    }
    Ok(Event::Denial {
        pid: header.pid,
        tgid: header.tgid,
        cgroup_id: header.cgroup_id,
        nr: read_u32(record, offset_of!(DenialEvent, nr))?,
        errno: i32_at(offset_of!(DenialEvent, errno))?,
        dirfd: i32_at(offset_of!(DenialEvent, dirfd))?,
        open_flags: read_u64(record, offset_of!(DenialEvent, open_flags))?,
        path,
        base: base_dir(
            record,
            flags & DENIAL_FLAG_BASE != 0,
            offset_of!(DenialEvent, base),
            offset_of!(DenialEvent, base_len),
        )?,
        flags,
    })
}

fn decode_refer_denial(record: &[u8]) -> Result<Event, DecodeError> {
    use agentd_common::denials::{
        ReferDenialEvent as R, DENIAL_PATH_LEN, EVENT_KIND_REFER_DENIAL, REFER_FLAG_NEW_BASE,
        REFER_FLAG_NEW_TRUNCATED, REFER_FLAG_OLD_BASE, REFER_FLAG_OLD_TRUNCATED,
    };
    let header = decode_header(record, EVENT_KIND_REFER_DENIAL, size_of::<R>())?;
    let i32_at = |o| array(record, o).map(i32::from_ne_bytes);
    let flags = read_u32(record, offset_of!(R, flags))?;
    let path = |off: usize, len_off: usize, cut: u32| -> Result<String, DecodeError> {
        let len = read_u32(record, len_off)?;
        let raw = bytes(record, off, DENIAL_PATH_LEN)?;
        let max = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(DENIAL_PATH_LEN - 1);
        let mut p = c_string(&raw[..max]);
        if flags & cut != 0 {
            p.push('…');
        }
        Ok(p)
    };
    Ok(Event::ReferDenial {
        pid: header.pid,
        tgid: header.tgid,
        cgroup_id: header.cgroup_id,
        nr: read_u32(record, offset_of!(R, nr))?,
        errno: i32_at(offset_of!(R, errno))?,
        old_dirfd: i32_at(offset_of!(R, old_dirfd))?,
        new_dirfd: i32_at(offset_of!(R, new_dirfd))?,
        old_path: path(
            offset_of!(R, old_path),
            offset_of!(R, old_len),
            REFER_FLAG_OLD_TRUNCATED,
        )?,
        new_path: path(
            offset_of!(R, new_path),
            offset_of!(R, new_len),
            REFER_FLAG_NEW_TRUNCATED,
        )?,
        old_base: base_dir(
            record,
            flags & REFER_FLAG_OLD_BASE != 0,
            offset_of!(R, old_base),
            offset_of!(R, old_base_len),
        )?,
        new_base: base_dir(
            record,
            flags & REFER_FLAG_NEW_BASE != 0,
            offset_of!(R, new_base),
            offset_of!(R, new_base_len),
        )?,
    })
}

/// A base directory the kernel walked (`DenialEvent::base`: components from the
/// innermost out, each NUL-terminated) as an absolute path; `None` without its flag.
fn base_dir(
    record: &[u8],
    present: bool,
    offset: usize,
    len_offset: usize,
) -> Result<Option<String>, DecodeError> {
    use agentd_common::denials::DENIAL_PATH_LEN;
    if !present {
        return Ok(None);
    }
    let used = usize::try_from(read_u32(record, len_offset)?)
        .unwrap_or(usize::MAX)
        .min(DENIAL_PATH_LEN);
    let raw = bytes(record, offset, DENIAL_PATH_LEN)?;
    let mut path = String::new();
    for name in raw[..used]
        .split(|&b| b == 0)
        .rev()
        .filter(|n| !n.is_empty())
    {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(name));
    }
    if path.is_empty() {
        path.push('/');
    }
    Ok(Some(path))
}

fn decode_net(record: &[u8]) -> Result<Event, DecodeError> {
    let header = decode_header(record, EVENT_KIND_NET, size_of::<NetEvent>())?;
    NetDenial::decode(&header, record)
        .map(Event::Net)
        .ok_or(DecodeError::Short {
            kind: Some(EVENT_KIND_NET),
            len: record.len(),
            need: size_of::<NetEvent>(),
        })
}

fn decode_unix(record: &[u8]) -> Result<Event, DecodeError> {
    use agentd_common::unix::{UnixEvent, EVENT_KIND_UNIX};
    let header = decode_header(record, EVENT_KIND_UNIX, size_of::<UnixEvent>())?;
    crate::layers::bpf::UnixDenial::decode(&header, record)
        .map(Event::Unix)
        .ok_or(DecodeError::Short {
            kind: Some(EVENT_KIND_UNIX),
            len: record.len(),
            need: size_of::<UnixEvent>(),
        })
}

fn decode_fs(record: &[u8]) -> Result<Event, DecodeError> {
    let header = decode_header(record, EVENT_KIND_FS, size_of::<FsEvent>())?;
    Ok(Event::Fs {
        pid: header.pid,
        tgid: header.tgid,
        cgroup_id: header.cgroup_id,
        rule_kind: read_u32(record, offset_of!(FsEvent, rule_kind))?,
        rule_index: read_u32(record, offset_of!(FsEvent, rule_index))?,
        layer: read_u32(record, offset_of!(FsEvent, layer))?,
        action: read_u32(record, offset_of!(FsEvent, action))?,
        dev: read_u32(record, offset_of!(FsEvent, dev))?,
        ino: read_u64(record, offset_of!(FsEvent, ino))?,
        depth: read_u32(record, offset_of!(FsEvent, depth))?,
        op: read_u32(record, offset_of!(FsEvent, op))?,
        flags: read_u32(record, offset_of!(FsEvent, flags))?,
        kernel_path: if read_u32(record, offset_of!(FsEvent, flags))? & FS_EVENT_FLAG_KERNEL_PATH
            != 0
        {
            Some(c_string(bytes(
                record,
                offset_of!(FsEvent, path),
                FS_PATH_LEN,
            )?))
        } else {
            None
        },
        name: c_string(bytes(record, offset_of!(FsEvent, name), FS_NAME_LEN)?),
    })
}

/// Bytes up to the first NUL (or all of them), lossily decoded.
fn c_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn bytes(record: &[u8], offset: usize, len: usize) -> Result<&[u8], DecodeError> {
    let short = || DecodeError::Short {
        kind: None,
        len: record.len(),
        need: offset.saturating_add(len),
    };
    let end = offset.checked_add(len).ok_or_else(short)?;
    record.get(offset..end).ok_or_else(short)
}

fn array<const N: usize>(record: &[u8], offset: usize) -> Result<[u8; N], DecodeError> {
    let slice = bytes(record, offset, N)?;
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    Ok(out)
}

fn read_u32(record: &[u8], offset: usize) -> Result<u32, DecodeError> {
    array(record, offset).map(u32::from_ne_bytes)
}

fn read_u64(record: &[u8], offset: usize) -> Result<u64, DecodeError> {
    array(record, offset).map(u64::from_ne_bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use agentd_common::{EXEC_EVENT_SIZE, EXIT_EVENT_SIZE};

    fn header(kind: u32) -> EventHeader {
        EventHeader {
            kind,
            run_slot: 7,
            tgid: 100,
            pid: 101,
            cgroup_id: 0x1122_3344_5566_7788,
            ktime_ns: 42,
        }
    }

    fn exec_record(filename: &[u8], filename_len: u32, flags: u32) -> Vec<u8> {
        let mut name = [0u8; FILENAME_LEN];
        name[..filename.len()].copy_from_slice(filename);
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"true");
        let raw = ExecEvent {
            header: header(EVENT_KIND_EXEC),
            ppid: 99,
            uid: 1000,
            filename_len,
            flags,
            comm,
            filename: name,
        };
        to_bytes(&raw)
    }

    fn to_bytes<T: aya::Pod>(value: &T) -> Vec<u8> {
        let mut out = vec![0u8; size_of::<T>()];
        // T is Pod (repr(C), no padding, all bit patterns valid); `out` has its length.
        // SAFETY: viewing a Pod as size_of::<T>() initialised bytes is sound.
        let raw =
            unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) };
        out.copy_from_slice(raw);
        out
    }

    #[test]
    fn decodes_exec() {
        let record = exec_record(b"/bin/true", 9, 0);
        assert_eq!(record.len(), EXEC_EVENT_SIZE);
        let event = Event::from_record(&record).unwrap();
        assert_eq!(
            event,
            Event::Exec {
                pid: 101,
                tgid: 100,
                ppid: 99,
                run_slot: 7,
                cgroup_id: 0x1122_3344_5566_7788,
                ktime_ns: 42,
                uid: 1000,
                comm: "true".to_owned(),
                filename: "/bin/true".to_owned(),
            }
        );
    }

    #[test]
    fn exec_filename_is_bounded_by_len_and_nul() {
        // Length says more than the NUL: stop at the NUL.
        let record = exec_record(b"/bin/sh", 200, 0);
        let Event::Exec { filename, .. } = Event::from_record(&record).unwrap() else {
            panic!("not an exec");
        };
        assert_eq!(filename, "/bin/sh");
        // Absurd length: bounded by the buffer.
        let long = [b'a'; FILENAME_LEN];
        let mut record = exec_record(&long, u32::MAX, EXEC_FLAG_FILENAME_TRUNCATED);
        let Event::Exec { filename, .. } = Event::from_record(&record).unwrap() else {
            panic!("not an exec");
        };
        assert_eq!(filename.len(), FILENAME_LEN - 1 + '…'.len_utf8());
        assert!(filename.ends_with('…'));
        // Invalid UTF-8 is replaced, not rejected.
        record[offset_of!(ExecEvent, filename)] = 0xff;
        assert!(Event::from_record(&record).is_ok());
    }

    #[test]
    fn a_denial_carries_the_base_directory_the_kernel_walked() {
        use agentd_common::denials::{
            DenialEvent, DENIAL_AT_FDCWD, DENIAL_FLAG_BASE, DENIAL_PATH_LEN, EVENT_KIND_DENIAL,
        };
        let mut raw = DenialEvent {
            header: header(EVENT_KIND_DENIAL),
            open_flags: 0,
            nr: agentd_common::denials::nr::UNLINK,
            errno: 13,
            dirfd: DENIAL_AT_FDCWD,
            flags: DENIAL_FLAG_BASE,
            path_len: 1,
            base_len: 0,
            path: [0; DENIAL_PATH_LEN],
            base: [0; DENIAL_PATH_LEN],
        };
        raw.path[0] = b'f';
        // Innermost first, NUL after each: `ro\0w\0` is /w/ro.
        raw.base[..5].copy_from_slice(b"ro\0w\0");
        let base_of = |raw: &DenialEvent| match Event::from_record(&to_bytes(raw)).unwrap() {
            Event::Denial { base, path, .. } => {
                assert_eq!(path, "f");
                base
            }
            other => panic!("not a denial: {other:?}"),
        };
        raw.base_len = 5;
        assert_eq!(base_of(&raw).as_deref(), Some("/w/ro"));
        // No components: the walk started at the root.
        raw.base_len = 0;
        assert_eq!(base_of(&raw).as_deref(), Some("/"));
        // Without the flag the directory is unknown, whatever the bytes say.
        raw.base_len = 5;
        raw.flags = 0;
        assert_eq!(base_of(&raw), None);
        // An absurd length is bounded by the field.
        raw.flags = DENIAL_FLAG_BASE;
        raw.base_len = u32::MAX;
        assert_eq!(base_of(&raw).as_deref(), Some("/w/ro"));
    }

    #[test]
    fn decodes_exit() {
        let raw = ExitEvent {
            header: header(EVENT_KIND_EXIT),
            exit_code: 0x300,
            flags: 0,
        };
        let record = to_bytes(&raw);
        assert_eq!(record.len(), EXIT_EVENT_SIZE);
        assert_eq!(
            Event::from_record(&record).unwrap(),
            Event::Exit {
                pid: 101,
                tgid: 100,
                run_slot: 7,
                cgroup_id: 0x1122_3344_5566_7788,
                ktime_ns: 42,
                exit_code: 0x300,
            }
        );
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(matches!(
            Event::from_record(&[]),
            Err(DecodeError::Short { kind: None, .. })
        ));
        let record = exec_record(b"/bin/true", 9, 0);
        for len in [4, 31, 32, EXEC_EVENT_SIZE - 1] {
            let err = Event::from_record(&record[..len]).unwrap_err();
            assert!(matches!(err, DecodeError::Short { .. }), "{len}: {err}");
        }
        let mut record = record;
        record[..4].copy_from_slice(&77u32.to_ne_bytes());
        assert_eq!(
            Event::from_record(&record),
            Err(DecodeError::UnknownKind(77))
        );
        let exit = to_bytes(&ExitEvent {
            header: header(EVENT_KIND_EXIT),
            exit_code: 0,
            flags: 0,
        });
        assert!(matches!(
            Event::from_record(&exit[..EXIT_EVENT_SIZE - 1]),
            Err(DecodeError::Short {
                kind: Some(EVENT_KIND_EXIT),
                ..
            })
        ));
    }
}
