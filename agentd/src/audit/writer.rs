//! Appends chained records to the host audit file. Several agentd processes may share
//! one file, so each batch takes an exclusive `flock`, reads the last sealed record's
//! `seq` and `hash` under it, and continues the chain from there.
//!
//! A crash can leave a torn last line. The next writer leaves those bytes in place, starts
//! a new line, and writes a `torn_tail` record (byte count and SHA-256 of the torn bytes)
//! chained to the last COMPLETE record, so verify can tell a crash from tampering.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::Value;

use super::canonical::{self, split_line, EncodedDetail};
use super::chain;
use super::event::{AuditEvent, Checkpoint, Genesis, KeyRotation, TornTail};
use super::keys;
use super::time::{Stamp, STAMP_LEN};
use super::{rfc3339_now, Decision};

pub const DEFAULT_AUDIT_PATH: &str = "/var/log/agentd/audit.jsonl";

/// Bytes kept allocated past the end of the log for the checkpoint that seals it when
/// the filesystem is full (a checkpoint line is about 300 bytes).
const SEAL_RESERVE: u64 = 8192;

/// How far back from the end we look for the last sealed record.
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
    #[error("audit log {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("audit writer stopped: {0}")]
    Stopped(String),
    #[error("cannot encode an audit record: {0}")]
    Encode(serde_json::Error),
}

/// When to write a signed checkpoint: after `every` records or `interval`, whichever first.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    pub key: SigningKey,
    pub every: u64,
    pub interval: Duration,
}

/// A record waiting to be written; `ts` is taken when it was submitted.
#[derive(Debug, Clone)]
pub struct Pending {
    pub ts: Stamp,
    /// The run the record belongs to; `None`: the writer's own label.
    pub run: Option<String>,
    pub layer: String,
    pub event: String,
    pub decision: Option<Decision>,
    /// The event's own fields, already in canonical form (encoded by the submitter).
    pub detail: EncodedDetail,
}

impl Pending {
    pub fn new(
        layer: &str,
        decision: Option<Decision>,
        event: &AuditEvent,
    ) -> Result<Self, AuditError> {
        let mut detail = event.to_fields().map_err(AuditError::Encode)?;
        let event = match detail.remove("event") {
            Some(Value::String(name)) => name,
            _ => {
                return Err(AuditError::Encode(serde::ser::Error::custom(
                    "no event tag",
                )))
            }
        };
        Ok(Self {
            ts: Stamp::now(),
            run: None,
            layer: layer.to_owned(),
            event,
            decision,
            detail: EncodedDetail::new(&detail),
        })
    }
}

/// The last sealed record as this writer knows it.
#[derive(Debug, Clone)]
struct Head {
    seq: u64,
    /// Lower-case hex (ASCII).
    hash: [u8; 64],
}

impl Head {
    fn new(seq: u64, hash: &str) -> Option<Self> {
        Some(Self {
            seq,
            hash: hash.as_bytes().try_into().ok()?,
        })
    }

    fn hex(&self) -> &str {
        std::str::from_utf8(&self.hash).unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    run: String,
    checkpoints: Option<CheckpointPolicy>,
    /// Named in the genesis record if this writer starts the file.
    genesis_key: Option<crate::audit::event::SigningKeyUsed>,
    head: Option<Head>,
    /// File length after our last append; if it differs, someone else appended.
    known_len: Option<u64>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// The batch being built, kept between batches for its capacity.
    scratch: Vec<u8>,
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
            checkpoints: None,
            genesis_key: None,
            head: None,
            known_len: None,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            scratch: Vec::new(),
        })
    }

    /// Signs checkpoints with `policy.key` from now on.
    pub fn with_checkpoints(mut self, policy: Option<CheckpointPolicy>) -> Self {
        self.checkpoints = policy;
        self
    }

    /// Names `key` (the checkpoints' key) in the genesis record, if this writer starts
    /// the file.
    pub fn with_genesis_key(mut self, key: Option<crate::audit::event::SigningKeyUsed>) -> Self {
        self.genesis_key = key;
        self
    }

    /// Appends one record and fsyncs it before returning its sequence number
    /// (synchronous; `agentd run` goes through `AuditHandle`).
    #[allow(dead_code)]
    pub fn append(
        &mut self,
        layer: &str,
        decision: Option<Decision>,
        event: &AuditEvent,
    ) -> Result<u64, AuditError> {
        self.append_batch(&[Pending::new(layer, decision, event)?], false, true)
    }

    /// Appends `records` in one write under one lock; fsyncs when `sync`; writes a signed
    /// checkpoint after them when `checkpoint` (or when one is due). Returns the last
    /// record's `seq`.
    pub fn append_batch(
        &mut self,
        records: &[Pending],
        checkpoint: bool,
        sync: bool,
    ) -> Result<u64, AuditError> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let started = std::time::Instant::now();
        let r = self.append_batch_into(&mut buf, records, checkpoint, sync);
        crate::metrics::get()
            .audit_append
            .observe(started.elapsed().as_secs_f64());
        self.scratch = buf;
        r
    }

    /// Lets go of the encoding buffer a large batch grew (the writer calls this once a
    /// burst has drained).
    pub fn shrink_buffers(&mut self) {
        self.scratch = Vec::new();
    }

    fn append_batch_into(
        &mut self,
        buf: &mut Vec<u8>,
        records: &[Pending],
        checkpoint: bool,
        sync: bool,
    ) -> Result<u64, AuditError> {
        let _lock = FileLock::exclusive(&self.file).map_err(|e| self.write_err(e))?;
        let len = self.file.metadata().map_err(|e| self.write_err(e))?.len();
        buf.reserve(records.len() * 400 + 1024);
        if self.known_len != Some(len) || self.head.is_none() {
            self.resync(len, buf)?;
        }
        // The interval is checked once per batch (a batch spans at most the flush
        // period), the count after every record.
        let mut interval_due = self
            .checkpoints
            .as_ref()
            .is_some_and(|cp| self.last_checkpoint.elapsed() >= cp.interval);
        for r in records {
            self.push(buf, r)?;
            if let Some(cp) = &self.checkpoints {
                if self.since_checkpoint >= cp.every || interval_due {
                    self.push_checkpoint(buf)?;
                    interval_due = false;
                }
            }
        }
        let mut wrote_checkpoint = false;
        if (checkpoint && self.since_checkpoint > 0) || self.checkpoint_due() {
            wrote_checkpoint = self.push_checkpoint(buf)?;
        }
        let written = self.file.write_all(buf).and_then(|()| {
            if sync || wrote_checkpoint {
                self.file.sync_data().inspect_err(|_| {
                    crate::metrics::get().audit_fsync_failures.inc();
                })
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // A full filesystem (ENOSPC) can take part of the batch: cut the log back to
            // its last whole record (shrinking needs no space), so that every record
            // before still verifies, with no torn tail. The caller stops the run.
            let _ = self.file.set_len(len);
            self.known_len = None;
            self.head = None;
            self.seal_after_failure(len, buf);
            return Err(self.write_err(e));
        }
        self.known_len = Some(len + buf.len() as u64);
        self.reserve(len + buf.len() as u64);
        if wrote_checkpoint {
            self.write_head_file();
        }
        Ok(self.head.as_ref().map_or(0, |h| h.seq))
    }

    /// fsync, counting failures (`agentd_audit_fsync_failures_total`).
    fn sync_data(&self) -> Result<(), AuditError> {
        self.file.sync_data().map_err(|e| {
            crate::metrics::get().audit_fsync_failures.inc();
            self.write_err(e)
        })
    }

    /// Keeps [`SEAL_RESERVE`] bytes allocated past the end of the log (`FALLOC_FL_KEEP_SIZE`:
    /// the size does not change), so that when the filesystem fills up, cutting a failed
    /// batch back frees at least that much for [`Self::seal_after_failure`]. Best effort:
    /// a filesystem without fallocate gets no reserve.
    fn reserve(&self, end: u64) {
        // SAFETY: plain syscall on our open file; it only allocates blocks past `end`.
        let _ = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                end as libc::off_t,
                SEAL_RESERVE as libc::off_t,
            )
        };
    }

    /// After a failed write was cut back to `len`: a signed checkpoint over the records
    /// already in the log, so that all of them still verify as signed (the run is being
    /// stopped). Best effort: if even that does not fit, the log ends unsigned at `len`.
    fn seal_after_failure(&mut self, len: u64, buf: &mut Vec<u8>) {
        buf.clear();
        if self.checkpoints.is_none() || self.resync(len, buf).is_err() {
            let _ = self.file.set_len(len);
            return;
        }
        if self.since_checkpoint == 0 && buf.is_empty() {
            return;
        }
        let sealed = self.push_checkpoint(buf).is_ok()
            && self.file.write_all(buf).is_ok()
            && self.file.sync_data().is_ok();
        if sealed {
            self.known_len = Some(len + buf.len() as u64);
            self.write_head_file();
        } else {
            let _ = self.file.set_len(len);
            self.known_len = None;
            self.head = None;
        }
    }

    fn checkpoint_due(&self) -> bool {
        match &self.checkpoints {
            Some(cp) => {
                self.since_checkpoint > 0
                    && (self.since_checkpoint >= cp.every
                        || self.last_checkpoint.elapsed() >= cp.interval)
            }
            None => false,
        }
    }

    /// Writes a signed checkpoint now if any record is not yet covered by one.
    #[allow(dead_code)]
    pub fn checkpoint(&mut self) -> Result<(), AuditError> {
        self.append_batch(&[], true, true).map(|_| ())
    }

    /// Appends a `key_rotation` record signed by both keys (it is also a checkpoint), and
    /// signs later checkpoints with `new`.
    pub fn rotate_key(&mut self, old: &SigningKey, new: &SigningKey) -> Result<u64, AuditError> {
        let _lock = FileLock::exclusive(&self.file).map_err(|e| self.write_err(e))?;
        let len = self.file.metadata().map_err(|e| self.write_err(e))?.len();
        let mut buf = Vec::new();
        self.resync(len, &mut buf)?;
        let (seq, prev) = self.next_link()?;
        let (old_vk, new_vk): (VerifyingKey, VerifyingKey) =
            (old.verifying_key(), new.verifying_key());
        let msg = keys::rotation_message(seq, &prev_bytes(&prev)?, &old_vk, &new_vk);
        let rotation = KeyRotation {
            old_key: keys::key_hex(&old_vk),
            new_key: keys::key_hex(&new_vk),
            sig_old: keys::sign_hex(old, &msg),
            sig_new: keys::sign_hex(new, &msg),
        };
        let p = Pending::new("agentd", None, &rotation.into())?;
        self.push(&mut buf, &p)?;
        self.file.write_all(&buf).map_err(|e| self.write_err(e))?;
        self.sync_data()?;
        self.known_len = Some(len + buf.len() as u64);
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        if let Some(cp) = &mut self.checkpoints {
            cp.key = new.clone();
        }
        self.write_head_file();
        Ok(seq)
    }

    fn next_link(&self) -> Result<(u64, String), AuditError> {
        match &self.head {
            Some(h) => Ok((h.seq + 1, h.hex().to_owned())),
            None => Err(self.no_head()),
        }
    }

    fn no_head(&self) -> AuditError {
        AuditError::Corrupt {
            path: self.path.clone(),
            reason: "no chain head after resync".into(),
        }
    }

    /// Seals `r` as the next record into `buf`.
    fn push(&mut self, buf: &mut Vec<u8>, r: &Pending) -> Result<(), AuditError> {
        let Some(head) = &self.head else {
            return Err(self.no_head());
        };
        let seq = head.seq + 1;
        let mut ts = [0; STAMP_LEN];
        let ts = r.ts.write(&mut ts);
        // In the order of `canonical::CORE_KEYS`.
        let core = [
            r.decision.map(Decision::as_str),
            Some(r.event.as_str()),
            Some(r.layer.as_str()),
            Some(r.run.as_deref().unwrap_or(&self.run)),
            Some(ts),
        ];
        let hash = canonical::seal_encoded_into(buf, seq, head.hex(), core, &r.detail);
        self.head = Some(Head { seq, hash });
        if r.event != "checkpoint" && r.event != "genesis" {
            self.since_checkpoint += 1;
        }
        Ok(())
    }

    fn push_checkpoint(&mut self, buf: &mut Vec<u8>) -> Result<bool, AuditError> {
        let Some(cp) = &self.checkpoints else {
            return Ok(false);
        };
        let (seq, prev) = self.next_link()?;
        let msg = keys::checkpoint_message(seq, &prev_bytes(&prev)?);
        let checkpoint = Checkpoint {
            key: keys::key_hex(&cp.key.verifying_key()),
            sig: keys::sign_hex(&cp.key, &msg),
            covers_seq: seq.saturating_sub(1),
        };
        let p = Pending::new("agentd", None, &checkpoint.into())?;
        self.push(buf, &p)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(true)
    }

    /// `FILE.head`: the latest checkpoint line, replaced atomically. Keeping (or shipping)
    /// it elsewhere lets verify detect a truncated log. Best effort: the log is the evidence.
    fn write_head_file(&mut self) {
        let Some(h) = &self.head else { return };
        let mut name = self.path.as_os_str().to_owned();
        name.push(".head");
        let head = PathBuf::from(name);
        let tmp = head.with_extension("head.tmp");
        let text = format!("{{\"seq\":{},\"hash\":\"{}\"}}\n", h.seq, h.hex());
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &head);
        }
    }

    fn write_err(&self, source: std::io::Error) -> AuditError {
        AuditError::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// Re-reads the chain head from the file's tail (someone else appended, or first use).
    /// Starts a new file with a genesis record and seals over torn bytes a crash left.
    fn resync(&mut self, len: u64, buf: &mut Vec<u8>) -> Result<(), AuditError> {
        let start = len.saturating_sub(TAIL_WINDOW);
        let mut tail = Vec::new();
        if len > 0 {
            self.file
                .seek(SeekFrom::Start(start))
                .and_then(|_| (&mut self.file).take(len - start).read_to_end(&mut tail))
                .map_err(|e| self.write_err(e))?;
        }
        // Bytes [0, complete) are whole lines; find the last one that is a sealed record.
        let complete = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut found: Option<(Head, usize)> = None;
        let mut line_end = complete;
        while line_end > 0 {
            let content_end = line_end - 1;
            let line_start = tail[..content_end]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            if line_start == 0 && start > 0 {
                break; // the window's first line may be cut
            }
            if let Some(head) =
                split_line(&tail[line_start..content_end]).and_then(|h| Head::new(h.seq, h.hash))
            {
                found = Some((head, line_end));
                break;
            }
            line_end = line_start;
        }
        if found.is_none() && start > 0 {
            return Err(AuditError::Corrupt {
                path: self.path.clone(),
                reason: format!("no sealed record in its last {TAIL_WINDOW} bytes"),
            });
        }
        let end = found.as_ref().map_or(0, |(_, e)| *e);
        let torn = &tail[end..];
        if !torn.is_empty() && tail.last() != Some(&b'\n') {
            buf.push(b'\n');
        }
        self.head = found.map(|(h, _)| h);
        if self.head.is_none() {
            let host = chain::host_identity();
            let file_id =
                hex::encode(keys::random_bytes::<16>().map_err(|e| AuditError::Corrupt {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?);
            let prev = chain::genesis_prev(&host, &file_id);
            let genesis = Genesis {
                host,
                file_id,
                signing_key: self.genesis_key.clone(),
            };
            let mut fields = AuditEvent::from(genesis)
                .to_fields()
                .map_err(AuditError::Encode)?;
            fields.insert("ts".into(), Value::String(rfc3339_now()));
            fields.insert("run".into(), Value::String(self.run.clone()));
            fields.insert("layer".into(), Value::String("agentd".into()));
            let (line, hash) = canonical::seal(canonical::encode_record(0, &prev, &fields));
            buf.extend_from_slice(&line);
            self.head = Head::new(0, &hash);
        }
        if !torn.is_empty() {
            let (n, sha) = chain::torn_digest(torn);
            tracing::warn!(
                "audit log {}: {n} torn byte(s) after the last complete record; sealing over them",
                self.path.display()
            );
            let torn = TornTail {
                bytes: n as u64,
                sha256: sha,
            };
            let p = Pending::new("agentd", None, &torn.into())?;
            self.push(buf, &p)?;
        }
        Ok(())
    }
}

fn prev_bytes(prev: &str) -> Result<[u8; 32], AuditError> {
    keys::parse_hex32(prev).ok_or_else(|| AuditError::Corrupt {
        path: PathBuf::new(),
        reason: format!("chain head {prev} is not a SHA-256"),
    })
}

/// An exclusive `flock` released on drop. It holds the raw fd, not a borrow,
/// so the writer can use its file while locked; the writer outlives the lock.
struct FileLock(std::os::fd::RawFd);

impl FileLock {
    fn exclusive(file: &File) -> std::io::Result<Self> {
        let fd = file.as_raw_fd();
        loop {
            // SAFETY: flock on an open fd owned by the caller's File.
            let rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Self(fd));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
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
    use super::super::event::{FileDenied, Pause, StaleCgroups};
    use super::super::verify::{verify_bytes, Damage, Trust};
    use super::super::Record;
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[9; 32])
    }

    fn pause() -> AuditEvent {
        Pause { frozen: true }.into()
    }

    fn stale() -> AuditEvent {
        StaleCgroups {
            removed: vec![],
            killed_in: vec![],
        }
        .into()
    }

    #[test]
    fn two_writers_share_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/audit.jsonl");
        let mut a = AuditLog::open(&path, "run-a").unwrap();
        let mut b = AuditLog::open(&path, "run-b").unwrap();
        assert_eq!(a.append("agentd", None, &pause()).unwrap(), 1);
        assert_eq!(b.append("agentd", None, &pause()).unwrap(), 2);
        let denied = FileDenied {
            op: "open".into(),
            path: "/x".into(),
            errno: "EACCES".into(),
            would_errno: None,
            rule: "not in fs.read".into(),
            pid: 1,
            tid: 1,
            syscall: "openat".into(),
            access: None,
            path_arg: None,
            symlink_target: None,
            path_unresolved: false,
            new_path: None,
        };
        assert_eq!(
            a.append("landlock", Some(Decision::Deny), &denied.into())
                .unwrap(),
            3
        );
        // A field named like a core one (here from a caller's run_start fields) is renamed.
        let mut start = super::super::event::tests::run_start();
        start.extra.insert("seq".into(), 99.into());
        assert_eq!(a.append("agentd", None, &start.into()).unwrap(), 4);
        let text = std::fs::read_to_string(&path).unwrap();
        let recs: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 5);
        assert_eq!(recs[0].event, "genesis");
        assert_eq!(recs[3].decision, Some(Decision::Deny));
        assert_eq!(recs[3].detail["errno"], "EACCES");
        assert_eq!(recs[4].detail["detail_seq"], 99);
        assert_eq!(recs[2].run, "run-b");
        assert_eq!(recs[2].prev, recs[1].hash);
        let report = verify_bytes(text.as_bytes(), &Trust::Unsigned, None);
        assert_eq!(report.damage, None, "{report:?}");
    }

    #[test]
    fn a_torn_tail_is_sealed_over_and_the_chain_continues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut a = AuditLog::open(&path, "r").unwrap();
        a.append("agentd", None, &pause()).unwrap();
        drop(a);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":2,\"prev\":\"ab").unwrap();
        drop(f);
        let text = std::fs::read(&path).unwrap();
        let report = verify_bytes(&text, &Trust::Unsigned, None);
        assert_eq!(
            report.damage.as_ref().map(|d| d.kind),
            Some(Damage::TornTail)
        );
        assert_eq!(report.damage.as_ref().map(|d| d.line), Some(3));

        let mut b = AuditLog::open(&path, "r2").unwrap();
        assert_eq!(b.append("agentd", None, &pause()).unwrap(), 3);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert!(text.lines().nth(3).unwrap().contains("\"torn_tail\""));
        let report = verify_bytes(text.as_bytes(), &Trust::Unsigned, None);
        assert_eq!(report.damage, None, "{report:?}");
        assert_eq!(report.torn_recovered, vec![3]);
    }

    #[test]
    fn checkpoints_are_signed_every_n_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut a = AuditLog::open(&path, "r")
            .unwrap()
            .with_checkpoints(Some(CheckpointPolicy {
                key: key(),
                every: 2,
                interval: Duration::from_secs(3600),
            }));
        for _ in 0..5 {
            a.append("cgroup", None, &stale()).unwrap();
        }
        a.checkpoint().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let n = text
            .lines()
            .filter(|l| l.contains("\"checkpoint\""))
            .count();
        assert_eq!(n, 3);
        let trust = Trust::Key(key().verifying_key());
        let report = verify_bytes(text.as_bytes(), &trust, None);
        assert_eq!(report.damage, None, "{report:?}");
        // Rotation: signed by both, and later checkpoints by the new key verify.
        let new = SigningKey::from_bytes(&[10; 32]);
        a.rotate_key(&key(), &new).unwrap();
        a.append("cgroup", None, &stale()).unwrap();
        a.checkpoint().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let report = verify_bytes(text.as_bytes(), &trust, None);
        assert_eq!(report.damage, None, "{report:?}");
        // The new key alone does not verify the old checkpoints.
        let report = verify_bytes(text.as_bytes(), &Trust::Key(new.verifying_key()), None);
        assert_eq!(
            report.damage.as_ref().map(|d| d.kind),
            Some(Damage::BadSignature)
        );
    }
}
