//! The hash chain's fixed points: the genesis value and the torn-tail bookkeeping.
//!
//! A file starts with a `genesis` record (seq 0) carrying `host` (this machine's
//! `/etc/machine-id`, else the boot id) and `file_id` (128 random bits chosen when the file
//! was created). Its `prev` is
//! `SHA-256("agentd-audit-genesis-v1\0" || host || "\0" || file_id)` in hex, so the chain is
//! anchored to one host and one file, and survives copying the file elsewhere for
//! verification (a device+inode identity would not).

use sha2::{Digest, Sha256};

pub fn genesis_prev(host: &str, file_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"agentd-audit-genesis-v1\0");
    h.update(host.as_bytes());
    h.update(b"\0");
    h.update(file_id.as_bytes());
    hex::encode(h.finalize())
}

/// `/etc/machine-id`, else the boot id, else "unknown-host".
pub fn host_identity() -> String {
    for p in ["/etc/machine-id", "/proc/sys/kernel/random/boot_id"] {
        if let Ok(s) = std::fs::read_to_string(p) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_owned();
            }
        }
    }
    "unknown-host".to_owned()
}

/// Bytes a crash left after the last sealed record: what a `torn_tail` record describes.
/// `bytes` is the region with one trailing newline removed, which equals the unsealed
/// lines joined by `\n` (how a verifier sees them).
pub fn torn_digest(region: &[u8]) -> (usize, String) {
    let r = region.strip_suffix(b"\n").unwrap_or(region);
    (r.len(), hex::encode(Sha256::digest(r)))
}
