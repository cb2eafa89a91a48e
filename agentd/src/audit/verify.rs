//! `agentd audit verify`: walk the chain, check every hash and signature, and name the
//! first bad record with the kind of damage.
//!
//! The hot path needs no JSON parser: `seq`, `prev` and `hash` sit at fixed places in a
//! sealed line (see `canonical`), so a record costs one SHA-256 of its bytes. Only
//! checkpoints, rotations, the genesis and torn-tail records are parsed.

use std::fmt;

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use serde_json::Value;

use super::canonical::{body_hash, split_line};
use super::event::{AuditEvent, Checkpoint, Genesis, KeyRotation, TornTail};
use super::{chain, keys};

/// Which key checkpoints must be signed by.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Check the hash chain only; ignore signatures (and so no unsigned tail).
    Unsigned,
    /// The key the first checkpoint must carry (rotations then move it on).
    Key(VerifyingKey),
    /// Trust the key of the first checkpoint in the file (trust on first use).
    FromLog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// A record's bytes do not hash to its `hash`, or its `prev` does not match.
    Edited,
    /// Records are missing: the `seq` jumps forward and the missing ones are nowhere.
    Deleted,
    /// Records are out of order: the expected `seq` appears later, or `seq` goes back.
    Reordered,
    /// The log ends before the last checkpoint its head file records.
    Truncated,
    /// A checkpoint or rotation whose signature does not check with the trusted key.
    BadSignature,
    /// Records after the last signed checkpoint: intact, but anyone could have written them.
    UnsignedTail,
    /// The last line is incomplete (a crash while writing), not tampering.
    TornTail,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Damage::Edited => "edited",
            Damage::Deleted => "deleted",
            Damage::Reordered => "reordered",
            Damage::Truncated => "truncated",
            Damage::BadSignature => "bad signature",
            Damage::UnsignedTail => "unsigned tail",
            Damage::TornTail => "torn tail",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line number in the file.
    pub line: usize,
    /// The record's `seq`, or the `seq` expected there when the line has none.
    pub seq: u64,
    pub kind: Damage,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {} (seq {}): {}: {}",
            self.line, self.seq, self.kind, self.detail
        )
    }
}

#[derive(Debug, Default)]
pub struct Report {
    /// Sealed records that checked.
    pub records: u64,
    pub checkpoints: u64,
    pub rotations: u64,
    /// The first problem; `None` means intact (and signed, unless `Trust::Unsigned`).
    pub damage: Option<Finding>,
    /// Further end-of-file findings (e.g. an unsigned tail before a torn tail).
    pub also: Vec<Finding>,
    /// Lines of torn bytes a later writer sealed over with a `torn_tail` record.
    pub torn_recovered: Vec<usize>,
    /// The key that signed the last checkpoint.
    pub key: Option<String>,
    /// `seq` of the last record covered by a valid checkpoint.
    pub signed_through: Option<u64>,
}

/// The signed head a writer keeps next to the log (`FILE.head`).
#[derive(Debug, Clone)]
pub struct HeadFile {
    pub seq: u64,
    pub hash: String,
}

impl HeadFile {
    pub fn parse(text: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(text.trim()).ok()?;
        Some(Self {
            seq: v.get("seq")?.as_u64()?,
            hash: v.get("hash")?.as_str()?.to_owned(),
        })
    }
}

struct Walker<'a> {
    data: &'a [u8],
    trust: Trust,
    signing: bool,
    report: Report,
    expected_seq: u64,
    expected_prev: Option<&'a str>,
    /// Byte offset of the first line whose hash the parallel pre-pass could not confirm.
    unconfirmed_from: usize,
    event_finder: memchr::memmem::Finder<'static>,
    /// Unsealed complete lines since the last record: (first line number, their contents).
    torn: Option<(usize, Vec<&'a [u8]>)>,
    /// The first record not yet covered by a checkpoint.
    unsigned_from: Option<(usize, u64)>,
    head_seen: Option<&'a str>,
    want_head_seq: Option<u64>,
}

/// Checks every sealed line's hash on all cores; returns the byte offset of the first line
/// that is not a sealed line with a matching hash (`data.len()` if there is none). The
/// sequential walk then hashes only from there on.
fn confirm_hashes(data: &[u8]) -> usize {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads < 2 || data.len() < (4 << 20) {
        return first_unconfirmed(data, 0);
    }
    // Chunk boundaries moved forward to the next line start.
    let mut bounds = vec![0usize];
    for i in 1..threads {
        let at = data.len() * i / threads;
        let next = memchr::memchr(b'\n', &data[at..]).map_or(data.len(), |j| at + j + 1);
        bounds.push(next.max(*bounds.last().unwrap_or(&0)));
    }
    bounds.push(data.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = bounds
            .windows(2)
            .map(|w| {
                let (a, b) = (w[0], w[1]);
                s.spawn(move || first_unconfirmed(&data[..b], a))
            })
            .collect();
        let results: Vec<usize> = handles
            .into_iter()
            .zip(bounds.windows(2))
            .map(|(h, w)| h.join().unwrap_or(w[0]))
            .collect();
        // The first chunk that stopped early decides.
        bounds
            .windows(2)
            .zip(results)
            .find(|(w, r)| *r < w[1])
            .map_or(data.len(), |(_, r)| r)
    })
}

fn first_unconfirmed(data: &[u8], mut pos: usize) -> usize {
    while pos < data.len() {
        let Some(i) = memchr::memchr(b'\n', &data[pos..]) else {
            return pos;
        };
        let line = &data[pos..pos + i];
        match split_line(line) {
            Some(h) if hash_matches(&h) => pos += i + 1,
            _ => return pos,
        }
    }
    data.len()
}

fn hash_matches(h: &super::canonical::LineHead<'_>) -> bool {
    super::canonical::hex32(&body_hash(h.body)) == *h.hash.as_bytes()
}

/// Verifies a whole log held in memory.
pub fn verify_bytes(data: &[u8], trust: &Trust, head: Option<&HeadFile>) -> Report {
    let mut w = Walker {
        data,
        trust: trust.clone(),
        signing: !matches!(trust, Trust::Unsigned),
        report: Report::default(),
        expected_seq: 0,
        expected_prev: None,
        unconfirmed_from: confirm_hashes(data),
        event_finder: memchr::memmem::Finder::new(b",\"event\":\"").into_owned(),
        torn: None,
        unsigned_from: None,
        head_seen: None,
        want_head_seq: head.map(|h| h.seq),
    };
    let mut pos = 0usize;
    let mut lineno = 0usize;
    while pos < data.len() {
        lineno += 1;
        let (line, terminated, next) = match memchr::memchr(b'\n', &data[pos..]) {
            Some(i) => (&data[pos..pos + i], true, pos + i + 1),
            None => (&data[pos..], false, data.len()),
        };
        pos = next;
        if !terminated {
            let f = Finding {
                line: lineno,
                seq: w.expected_seq,
                kind: Damage::TornTail,
                detail: format!(
                    "{} byte(s) without a final newline (a crash while writing); records before it verify",
                    line.len()
                ),
            };
            w.finish(Some(f), head, lineno);
            return w.report;
        }
        if let Err(f) = w.line(lineno, line, pos - line.len() - 1) {
            w.report.damage = Some(f);
            return w.report;
        }
    }
    w.finish(None, head, lineno + 1);
    w.report
}

impl<'a> Walker<'a> {
    fn line(&mut self, lineno: usize, line: &'a [u8], offset: usize) -> Result<(), Finding> {
        let Some(h) = split_line(line) else {
            // Possibly a torn record a later writer sealed over; decided at the next record.
            match &mut self.torn {
                Some((_, lines)) => lines.push(line),
                None => self.torn = Some((lineno, vec![line])),
            }
            return Ok(());
        };
        let bad = |kind, seq, detail: String| Finding {
            line: lineno,
            seq,
            kind,
            detail,
        };
        if offset >= self.unconfirmed_from && !hash_matches(&h) {
            return Err(bad(
                Damage::Edited,
                h.seq,
                "the record's bytes do not hash to its \"hash\"".into(),
            ));
        }
        let first = self.expected_prev.is_none();
        if h.seq != self.expected_seq {
            let e = self.expected_seq;
            // A torn record a later writer sealed over is followed by a `torn_tail` record
            // with the torn record's seq; a seq jump after it means the line was a record
            // that got mangled.
            if let Some((tline, _)) = &self.torn {
                return Err(Finding {
                    line: *tline,
                    seq: e,
                    kind: Damage::Edited,
                    detail: format!(
                        "a line that is not a sealed record where seq {e} was expected"
                    ),
                });
            }
            if h.seq < e {
                return Err(bad(
                    Damage::Reordered,
                    h.seq,
                    format!("seq {} where seq {e} was expected (seq goes back)", h.seq),
                ));
            }
            if self.seq_appears_after(lineno, e) {
                return Err(bad(
                    Damage::Reordered,
                    h.seq,
                    format!(
                        "seq {} where seq {e} was expected; seq {e} comes later",
                        h.seq
                    ),
                ));
            }
            let what = if h.seq - e == 1 {
                format!("record seq {e} is missing")
            } else {
                format!("records seq {e}..={} are missing", h.seq - 1)
            };
            return Err(bad(Damage::Deleted, h.seq, what));
        }
        // Only the first top-level `"event":"` matters: checkpoints and rotations have no
        // nested objects, so theirs is the first one.
        let special = self.event_finder.find(h.body).is_some_and(|i| {
            let rest = &h.body[i + 10..];
            rest.starts_with(b"checkpoint\"") || rest.starts_with(b"key_rotation\"")
        });
        let needs_parse = first || self.torn.is_some() || special;
        let v: Option<Value> = if needs_parse {
            serde_json::from_slice(line).ok()
        } else {
            None
        };
        let event = v
            .as_ref()
            .and_then(|v| v.get("event"))
            .and_then(Value::as_str)
            .unwrap_or("");
        // The writer's own records, read as the type it writes them from. One that does
        // not fit it is checked as one with its fields empty: it fails below.
        let typed = v.as_ref().and_then(|v| AuditEvent::deserialize(v).ok());
        if first {
            let (host, fid) = match &typed {
                Some(AuditEvent::Genesis(Genesis { host, file_id, .. })) => {
                    (host.as_str(), file_id.as_str())
                }
                _ => ("", ""),
            };
            if event != "genesis" || h.prev != chain::genesis_prev(host, fid) {
                return Err(bad(
                    Damage::Edited,
                    h.seq,
                    "the first record is not a genesis record chained to its host and file id"
                        .into(),
                ));
            }
        } else if self.expected_prev != Some(h.prev) {
            return Err(bad(
                Damage::Edited,
                h.seq,
                format!(
                    "\"prev\" does not match the hash of the record before it (seq {}): one of the two was rewritten",
                    h.seq.saturating_sub(1)
                ),
            ));
        }
        if let Some((tline, lines)) = self.torn.take() {
            if event == "genesis" {
                self.torn = Some((tline, lines));
            } else {
                let joined = lines.join(&b'\n');
                let (n, sha) = chain::torn_digest(&joined);
                let ok = matches!(&typed, Some(AuditEvent::TornTail(TornTail { bytes, sha256 }))
                    if *bytes == n as u64 && *sha256 == sha);
                if !ok {
                    return Err(Finding {
                        line: tline,
                        seq: h.seq,
                        kind: Damage::Edited,
                        detail: "a line that is not a sealed record, and no torn_tail record accounts for it".into(),
                    });
                }
                self.report.torn_recovered.push(tline);
            }
        }
        let prev_bytes = if special {
            keys::parse_hex32(h.prev).unwrap_or([0; 32])
        } else {
            [0; 32]
        };
        match event {
            "checkpoint" if self.signing => {
                let cp = match &typed {
                    Some(AuditEvent::Checkpoint(c)) => Some(c),
                    _ => None,
                };
                self.checkpoint(lineno, h.seq, &prev_bytes, cp)?
            }
            "key_rotation" if self.signing => {
                let rot = match &typed {
                    Some(AuditEvent::KeyRotation(r)) => Some(r),
                    _ => None,
                };
                self.rotation(lineno, h.seq, &prev_bytes, rot)?
            }
            "checkpoint" => self.report.checkpoints += 1,
            "key_rotation" => self.report.rotations += 1,
            _ => {
                if self.unsigned_from.is_none() && event != "genesis" {
                    self.unsigned_from = Some((lineno, h.seq));
                }
            }
        }
        if self.want_head_seq == Some(h.seq) {
            self.head_seen = Some(h.hash);
        }
        self.report.records += 1;
        self.expected_seq = h.seq + 1;
        self.expected_prev = Some(h.hash);
        Ok(())
    }

    fn checkpoint(
        &mut self,
        lineno: usize,
        seq: u64,
        prev: &[u8; 32],
        cp: Option<&Checkpoint>,
    ) -> Result<(), Finding> {
        let key = cp.map_or("", |c| c.key.as_str());
        let sig = cp.map_or("", |c| c.sig.as_str());
        let trusted = self.trusted(key);
        let msg = keys::checkpoint_message(seq, prev);
        match trusted {
            Some(k) if keys::verify_hex(&k, &msg, sig) => {
                self.signed(seq, &k);
                self.report.checkpoints += 1;
                Ok(())
            }
            Some(k) => Err(Finding {
                line: lineno,
                seq,
                kind: Damage::BadSignature,
                detail: if key != keys::key_hex(&k) {
                    format!(
                        "checkpoint signed by key {key}, but the trusted key is {}",
                        keys::key_hex(&k)
                    )
                } else {
                    "the checkpoint's signature does not check".into()
                },
            }),
            None => Err(Finding {
                line: lineno,
                seq,
                kind: Damage::BadSignature,
                detail: format!("checkpoint names key {key:?}, which is not an Ed25519 key"),
            }),
        }
    }

    fn rotation(
        &mut self,
        lineno: usize,
        seq: u64,
        prev: &[u8; 32],
        rot: Option<&KeyRotation>,
    ) -> Result<(), Finding> {
        let field = |f: fn(&KeyRotation) -> &String| rot.map_or("", |r| f(r).as_str());
        let (old, new) = (field(|r| &r.old_key), field(|r| &r.new_key));
        let bad = |detail: String| Finding {
            line: lineno,
            seq,
            kind: Damage::BadSignature,
            detail,
        };
        let Some(old_k) = self.trusted(old) else {
            return Err(bad(format!(
                "rotation from key {old:?}, which is not an Ed25519 key"
            )));
        };
        if keys::key_hex(&old_k) != old {
            return Err(bad(format!(
                "rotation from key {old}, but the trusted key is {}",
                keys::key_hex(&old_k)
            )));
        }
        let Some(new_k) = keys::parse_hex32(new).and_then(|b| VerifyingKey::from_bytes(&b).ok())
        else {
            return Err(bad(format!(
                "rotation to {new:?}, which is not an Ed25519 key"
            )));
        };
        let msg = keys::rotation_message(seq, prev, &old_k, &new_k);
        if !keys::verify_hex(&old_k, &msg, field(|r| &r.sig_old)) {
            return Err(bad(
                "the old key's signature on the rotation does not check".into(),
            ));
        }
        if !keys::verify_hex(&new_k, &msg, field(|r| &r.sig_new)) {
            return Err(bad(
                "the new key's signature on the rotation does not check".into(),
            ));
        }
        self.trust = Trust::Key(new_k);
        self.signed(seq, &new_k);
        self.report.rotations += 1;
        Ok(())
    }

    /// The key a checkpoint must be signed by; under trust-on-first-use, the first one seen.
    fn trusted(&mut self, named: &str) -> Option<VerifyingKey> {
        match &self.trust {
            Trust::Key(k) => Some(*k),
            Trust::FromLog | Trust::Unsigned => {
                let k = keys::parse_hex32(named).and_then(|b| VerifyingKey::from_bytes(&b).ok())?;
                self.trust = Trust::Key(k);
                Some(k)
            }
        }
    }

    fn signed(&mut self, seq: u64, k: &VerifyingKey) {
        self.unsigned_from = None;
        self.report.signed_through = Some(seq);
        self.report.key = Some(keys::key_hex(k));
    }

    fn seq_appears_after(&self, lineno: usize, want: u64) -> bool {
        self.data
            .split(|&b| b == b'\n')
            .skip(lineno)
            .filter_map(split_line)
            .any(|h| h.seq == want)
    }

    /// End-of-file findings, most serious first: truncation, torn tail, unsigned tail.
    fn finish(&mut self, torn_tail: Option<Finding>, head: Option<&HeadFile>, eof_line: usize) {
        let mut found = Vec::new();
        if let Some(h) = head {
            match &self.head_seen {
                Some(hash) if *hash == h.hash.as_str() => {}
                Some(_) => found.push(Finding {
                    line: eof_line,
                    seq: h.seq,
                    kind: Damage::Edited,
                    detail: format!(
                        "record seq {} differs from the one the head file recorded",
                        h.seq
                    ),
                }),
                None if self.expected_seq <= h.seq => found.push(Finding {
                    line: eof_line,
                    seq: self.expected_seq,
                    kind: Damage::Truncated,
                    detail: format!(
                        "the log ends at seq {} but its head file records a checkpoint at seq {}",
                        self.expected_seq.saturating_sub(1),
                        h.seq
                    ),
                }),
                None => {}
            }
        }
        if let Some((tline, lines)) = self.torn.take() {
            found.push(Finding {
                line: tline,
                seq: self.expected_seq,
                kind: Damage::TornTail,
                detail: format!(
                    "{} incomplete line(s) after the last complete record (a crash while writing)",
                    lines.len()
                ),
            });
        }
        found.extend(torn_tail);
        if self.signing {
            if let Some((line, seq)) = self.unsigned_from {
                found.push(Finding {
                    line,
                    seq,
                    kind: Damage::UnsignedTail,
                    detail: "this record and all after it are not covered by a signed checkpoint"
                        .into(),
                });
            }
        }
        let mut it = found.into_iter();
        self.report.damage = it.next();
        self.report.also = it.collect();
    }
}
