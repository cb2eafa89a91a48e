//! Appends records to the host audit file. Several agentd processes may share
//! one file, so each append takes an exclusive `flock` and continues the
//! sequence from the file's last record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{rfc3339_now, Decision, Record};

pub const DEFAULT_AUDIT_PATH: &str = "/var/log/agentd/audit.jsonl";

/// How far back from the end we look for the last complete record.
const TAIL_WINDOW: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot create audit directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open audit log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write audit log {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path} ends in a record that is not valid JSON: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    run: String,
    next_seq: u64,
    /// File length after our last append; if it differs, someone else appended.
    known_len: Option<u64>,
}

impl AuditLog {
    pub fn open(path: &Path, run: &str) -> Result<Self, AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)
                    .map_err(|source| AuditError::CreateDir {
                        path: dir.to_path_buf(),
                        source,
                    })?;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|source| AuditError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            run: run.to_owned(),
            next_seq: 0,
            known_len: None,
        })
    }

    /// Appends one record and fsyncs it before returning its sequence number.
    pub fn append(
        &mut self,
        layer: &str,
        event: &str,
        decision: Option<Decision>,
        detail: Value,
    ) -> Result<u64, AuditError> {
        let detail = match detail {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                let mut m = Map::new();
                m.insert("detail".into(), other);
                m
            }
        };
        let _lock = FileLock::exclusive(&self.file).map_err(|e| self.write_err(e))?;
        let len = self.file.metadata().map_err(|e| self.write_err(e))?.len();
        if self.known_len != Some(len) {
            self.next_seq = self.last_seq(len)?.map_or(0, |s| s + 1);
        }
        let record = Record {
            seq: self.next_seq,
            ts: rfc3339_now(),
            run: self.run.clone(),
            layer: layer.to_owned(),
            event: event.to_owned(),
            decision,
            detail,
        };
        let mut line =
            serde_json::to_vec(&record).map_err(|e| self.write_err(std::io::Error::other(e)))?;
        line.push(b'\n');
        // A torn tail (crash mid-write) is left as it is; start on a fresh line.
        if len > 0 && !self.ends_with_newline(len)? {
            line.insert(0, b'\n');
        }
        self.file.write_all(&line).map_err(|e| self.write_err(e))?;
        self.file.sync_data().map_err(|e| self.write_err(e))?;
        self.known_len = Some(len + line.len() as u64);
        self.next_seq += 1;
        Ok(record.seq)
    }

    fn write_err(&self, source: std::io::Error) -> AuditError {
        AuditError::Write {
            path: self.path.clone(),
            source,
        }
    }

    fn ends_with_newline(&mut self, len: u64) -> Result<bool, AuditError> {
        let mut b = [0u8; 1];
        self.file
            .seek(SeekFrom::Start(len - 1))
            .and_then(|_| self.file.read_exact(&mut b))
            .map_err(|e| self.write_err(e))?;
        Ok(b[0] == b'\n')
    }

    /// The `seq` of the last complete record, reading only the file's tail.
    fn last_seq(&mut self, len: u64) -> Result<Option<u64>, AuditError> {
        if len == 0 {
            return Ok(None);
        }
        let start = len.saturating_sub(TAIL_WINDOW);
        let mut buf = Vec::new();
        self.file
            .seek(SeekFrom::Start(start))
            .and_then(|_| (&mut self.file).take(len - start).read_to_end(&mut buf))
            .map_err(|e| self.write_err(e))?;
        // Only lines terminated by '\n' are complete records.
        let complete = match buf.iter().rposition(|&b| b == b'\n') {
            Some(end) => &buf[..end],
            None => return Ok(None),
        };
        let Some(last) = complete
            .split(|&b| b == b'\n')
            .rev()
            .find(|l| !l.is_empty())
        else {
            return Ok(None);
        };
        #[derive(serde::Deserialize)]
        struct SeqOnly {
            seq: u64,
        }
        let parsed: SeqOnly =
            serde_json::from_slice(last).map_err(|source| AuditError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        Ok(Some(parsed.seq))
    }
}

/// An exclusive `flock` released on drop. It holds the raw fd, not a borrow,
/// so the writer can use its file while locked; the writer outlives the lock.
struct FileLock(std::os::fd::RawFd);

impl FileLock {
    fn exclusive(file: &File) -> std::io::Result<Self> {
        let fd = file.as_raw_fd();
        // SAFETY: flock on an open fd owned by the caller's File.
        let rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(fd))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking the fd we locked; the File it belongs to is still open
        // because the lock is a local of a method borrowing the writer.
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn two_writers_share_one_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/audit.jsonl");
        let mut a = AuditLog::open(&path, "run-a").unwrap();
        let mut b = AuditLog::open(&path, "run-b").unwrap();
        assert_eq!(a.append("agentd", "run_start", None, json!({})).unwrap(), 0);
        assert_eq!(b.append("agentd", "run_start", None, json!({})).unwrap(), 1);
        assert_eq!(
            a.append(
                "landlock",
                "denied",
                Some(Decision::Deny),
                json!({"errno": "EACCES"})
            )
            .unwrap(),
            2
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let recs: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2].decision, Some(Decision::Deny));
        assert_eq!(recs[2].detail["errno"], "EACCES");
        assert_eq!(recs[1].run, "run-b");
    }

    #[test]
    fn a_torn_tail_is_kept_and_the_next_record_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "{\"seq\":4,\"ts\":\"x\",\"run\":\"r\",\"layer\":\"l\",\"event\":\"e\"}\n{\"seq\":5,\"ts").unwrap();
        let mut a = AuditLog::open(&path, "r").unwrap();
        assert_eq!(a.append("agentd", "run_start", None, json!({})).unwrap(), 5);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with("\n"));
    }
}
