//! The canonical encoding of a record, which is what `hash` is computed over.
//!
//! Canonical form of a record R (a JSON object) without its `hash` key:
//!
//! ```text
//! {"seq":<seq>,"prev":"<prev>"<,"key":value for every other key, byte-wise sorted>}
//! ```
//!
//! * no whitespace anywhere;
//! * `seq` first, `prev` second (so a verifier finds both at fixed places), then every
//!   other top-level key except `hash` in byte-wise ascending order of its UTF-8 name;
//! * nested objects: all keys in byte-wise ascending order; arrays keep their order;
//! * strings are escaped exactly as `serde_json` does: `\"` `\\` `\b` `\f` `\n` `\r` `\t`,
//!   other control characters as `\u00xx` (lower-case hex), everything else as raw UTF-8;
//! * integers in shortest decimal; records carry no floats (a float, if one ever appears,
//!   is written as `serde_json` writes it: shortest round-trip form);
//! * `true`, `false`, `null` literally.
//!
//! `hash` = lower-case hex SHA-256 of those bytes. The line written to the file is the
//! canonical form with `,"hash":"<hash>"` inserted before the final `}`, so the hashed bytes
//! are the line minus that 75-byte suffix: verify needs no JSON parser on the hot path.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `,"hash":"` + 64 hex + `"}`.
pub const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// Appends the canonical encoding of `v` to `out`.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        // serde_json's map is ordered by key (byte-wise for `String`), so it is usually
        // already canonical; the check keeps this right if that ever changes.
        Value::Object(m) if keys_ascending(m.keys().map(String::as_str)) => {
            out.push(b'{');
            for (i, (k, val)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, val);
            }
            out.push(b'}');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                if let Some(val) = m.get(k.as_str()) {
                    write_value(out, val);
                }
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, x);
            }
            out.push(b']');
        }
        Value::String(s) => write_str(out, s),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => write_u64(out, u),
            (None, Some(i)) => {
                out.push(b'-');
                write_u64(out, i.unsigned_abs());
            }
            // Floats: serde_json's shortest round-trip form.
            _ => {
                let _ = serde_json::to_writer(&mut *out, n);
            }
        },
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Null => out.extend_from_slice(b"null"),
    }
}

/// Whether `keys` are in strictly ascending byte-wise order.
fn keys_ascending<'a>(mut keys: impl Iterator<Item = &'a str>) -> bool {
    let Some(mut prev) = keys.next() else {
        return true;
    };
    for k in keys {
        if k.as_bytes() <= prev.as_bytes() {
            return false;
        }
        prev = k;
    }
    true
}

/// Shortest decimal, as serde_json writes integers.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Nothing to escape (the common case): the bytes between quotes, which is what
    // serde_json writes too.
    // (A fold without early exit, so the compiler can vectorize the scan.)
    let special = s.bytes().fold(false, |acc, b| {
        acc | (b == b'"') | (b == b'\\') | (b < 0x20)
    });
    if !special {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // serde_json's string escaping is the documented one; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The canonical bytes of a record: `seq`, `prev`, then `fields` (which must not contain
/// `seq`, `prev` or `hash`) sorted.
pub fn encode_record(seq: u64, prev: &str, fields: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"prev\":");
    write_str(&mut out, prev);
    let mut keys: Vec<&String> = fields.keys().collect();
    keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for k in keys {
        if matches!(k.as_str(), "seq" | "prev" | "hash") {
            continue;
        }
        out.push(b',');
        write_str(&mut out, k);
        out.push(b':');
        if let Some(v) = fields.get(k.as_str()) {
            write_value(&mut out, v);
        }
    }
    out.push(b'}');
    out
}

/// A field's value for [`encode_parts`]: a plain string or any JSON value.
#[cfg(test)]
pub enum Part<'a> {
    Str(&'a str),
    Json(&'a Value),
}

/// [`encode_record`] without building a merged map: `core` (string fields the writer owns)
/// and `detail` (the event's fields; keys already renamed away from the reserved ones)
/// are merged in sorted key order. The reference the writer's fast path is tested against.
#[cfg(test)]
pub fn encode_parts(
    seq: u64,
    prev: &str,
    core: &[(&str, &str)],
    detail: &[(std::borrow::Cow<'_, str>, &Value)],
) -> Vec<u8> {
    let mut fields: Vec<(&str, Part<'_>)> = Vec::with_capacity(core.len() + detail.len());
    fields.extend(core.iter().map(|(k, v)| (*k, Part::Str(v))));
    fields.extend(detail.iter().map(|(k, v)| (k.as_ref(), Part::Json(v))));
    fields.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = Vec::with_capacity(384);
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"prev\":");
    write_str(&mut out, prev);
    for (k, v) in fields {
        out.push(b',');
        write_str(&mut out, k);
        out.push(b':');
        match v {
            Part::Str(s) => write_str(&mut out, s),
            Part::Json(v) => write_value(&mut out, v),
        }
    }
    out.push(b'}');
    out
}

/// Keys the writer owns (see `writer`); a detail field with one of these names is
/// written as `detail_<name>`.
#[cfg(test)]
pub const RESERVED: [&str; 8] = [
    "seq", "prev", "hash", "ts", "run", "layer", "event", "decision",
];

/// The writer's own fields of every record after `seq` and `prev`, in canonical order.
pub const CORE_KEYS: [&str; 5] = ["decision", "event", "layer", "run", "ts"];

/// An event's own fields, canonically encoded ahead of time (by the thread that submits
/// the record, so the writer thread only splices): `,"key":value` per field in canonical
/// order, keys named like a `CORE_KEYS` entry or `seq`/`prev`/`hash` renamed
/// `detail_<name>`; `splits[i]` is where `CORE_KEYS[i]` goes among them.
#[derive(Debug, Clone, Default)]
pub struct EncodedDetail {
    bytes: Vec<u8>,
    splits: [usize; 5],
}

impl EncodedDetail {
    pub fn new(detail: &serde_json::Map<String, Value>) -> Self {
        let plain = keys_ascending(detail.keys().map(String::as_str))
            && !detail.keys().any(|k| is_reserved(k));
        if plain {
            return Self::from_sorted(detail.iter().map(|(k, v)| (k.as_str(), v)));
        }
        let mut renamed: Vec<(std::borrow::Cow<'_, str>, &Value)> = detail
            .iter()
            .map(|(k, v)| {
                let k = if is_reserved(k) {
                    std::borrow::Cow::Owned(format!("detail_{k}"))
                } else {
                    std::borrow::Cow::Borrowed(k.as_str())
                };
                (k, v)
            })
            .collect();
        renamed.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Self::from_sorted(renamed.iter().map(|(k, v)| (k.as_ref(), *v)))
    }

    /// `fields` in canonical key order, none named like a core key.
    fn from_sorted<'a>(fields: impl Iterator<Item = (&'a str, &'a Value)>) -> Self {
        let mut bytes = Vec::with_capacity(256);
        let mut splits = [0; 5];
        let mut placed = 0;
        for (k, v) in fields {
            // Core keys that sort before `k` go here.
            while placed < CORE_KEYS.len() && CORE_KEYS[placed].as_bytes() < k.as_bytes() {
                splits[placed] = bytes.len();
                placed += 1;
            }
            bytes.push(b',');
            write_str(&mut bytes, k);
            bytes.push(b':');
            write_value(&mut bytes, v);
        }
        for s in &mut splits[placed..] {
            *s = bytes.len();
        }
        Self { bytes, splits }
    }
}

/// Appends the sealed line (with `\n`) of record `seq` to `out` and returns its hash (hex):
/// the same bytes as `seal(encode_parts(..))`. `core[i]` is the value of `CORE_KEYS[i]`
/// (`None`: the record has no such field).
pub fn seal_encoded_into(
    out: &mut Vec<u8>,
    seq: u64,
    prev: &str,
    core: [Option<&str>; 5],
    detail: &EncodedDetail,
) -> [u8; 64] {
    let start = out.len();
    out.reserve(detail.bytes.len() + 256);
    out.extend_from_slice(b"{\"seq\":");
    write_u64(out, seq);
    out.extend_from_slice(b",\"prev\":");
    write_str(out, prev);
    let mut at = 0;
    for ((key, value), split) in CORE_KEYS.iter().zip(core).zip(detail.splits) {
        out.extend_from_slice(&detail.bytes[at..split]);
        at = split;
        if let Some(v) = value {
            write_field_str(out, key, v);
        }
    }
    out.extend_from_slice(&detail.bytes[at..]);
    out.push(b'}');
    let hash = hex32(&Sha256::digest(&out[start..]).into());
    out.pop(); // the closing '}'
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(&hash);
    out.extend_from_slice(b"\"}\n");
    hash
}

fn is_reserved(k: &str) -> bool {
    matches!(
        k,
        "seq" | "prev" | "hash" | "ts" | "run" | "layer" | "event" | "decision"
    )
}

fn write_field_str(out: &mut Vec<u8>, k: &str, v: &str) {
    out.push(b',');
    write_str(out, k);
    out.push(b':');
    write_str(out, v);
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let hex = hex32(&Sha256::digest(bytes).into());
    // hex32 yields ASCII only.
    String::from_utf8_lossy(&hex).into_owned()
}

/// Turns canonical bytes into the line written to the file (with `\n`), returning its hash.
pub fn seal(mut canonical: Vec<u8>) -> (Vec<u8>, String) {
    let hash = sha256_hex(&canonical);
    canonical.pop(); // the closing '}'
    canonical.extend_from_slice(b",\"hash\":\"");
    canonical.extend_from_slice(hash.as_bytes());
    canonical.extend_from_slice(b"\"}\n");
    (canonical, hash)
}

/// The parts of a sealed line (without its `\n`) a verifier needs, found by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineHead<'a> {
    pub seq: u64,
    pub prev: &'a str,
    pub hash: &'a str,
    /// The canonical bytes: the line without the hash suffix, plus `}`.
    pub body: &'a [u8],
}

/// Splits a sealed line. `None` when it does not have the sealed shape at all.
pub fn split_line(line: &[u8]) -> Option<LineHead<'_>> {
    const SEQ: &[u8] = b"{\"seq\":";
    const PREV: &[u8] = b",\"prev\":\"";
    let rest = line.strip_prefix(SEQ)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let seq: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(PREV)?;
    if rest.len() < 65 || rest[64] != b'"' {
        return None;
    }
    let prev = std::str::from_utf8(&rest[..64]).ok()?;
    if line.len() < HASH_SUFFIX_LEN + SEQ.len() {
        return None;
    }
    let cut = line.len() - HASH_SUFFIX_LEN;
    let suffix = &line[cut..];
    if !suffix.starts_with(b",\"hash\":\"") || !suffix.ends_with(b"\"}") {
        return None;
    }
    let hash = std::str::from_utf8(&suffix[9..73]).ok()?;
    // Hex-ness is not checked here (hot path): verify compares `hash` with the hex of the
    // computed digest and `prev` with the previous record's checked `hash`.
    Some(LineHead {
        seq,
        prev,
        hash,
        body: &line[..cut],
    })
}

/// Lower-case hex of a digest, without allocating.
pub fn hex32(d: &[u8; 32]) -> [u8; 64] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in d.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// SHA-256 of a line's canonical bytes (`body` + `}`), lower-case hex.
pub fn body_hash(body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(body);
    h.update(b"}");
    h.finalize().into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_and_has_no_whitespace() {
        let f = json!({"z": 1, "a": {"y": [1, "x"], "b": null}, "ts": "t\n"});
        let bytes = encode_record(7, &"0".repeat(64), f.as_object().unwrap());
        let want = format!(
            "{{\"seq\":7,\"prev\":\"{}\",\"a\":{{\"b\":null,\"y\":[1,\"x\"]}},\"ts\":\"t\\n\",\"z\":1}}",
            "0".repeat(64)
        );
        assert_eq!(String::from_utf8(bytes).unwrap(), want);
        let detail: Vec<(std::borrow::Cow<'_, str>, &Value)> =
            vec![("z".into(), &f["z"]), ("a".into(), &f["a"])];
        let parts = encode_parts(7, &"0".repeat(64), &[("ts", "t\n")], &detail);
        assert_eq!(String::from_utf8(parts).unwrap(), want);
    }

    #[test]
    fn the_fast_writer_path_writes_the_documented_bytes() {
        let core = [("event", "e"), ("layer", "l"), ("run", "r"), ("ts", "t")];
        for detail in [
            json!({"a": 1, "path": "/x\"y\\z\n\u{1}é", "n": -5, "f": 1.5, "b": true,
                   "z": null, "o": {"y": [1, {"b": 2, "a": 3}], "x": "s"}}),
            json!({"seq": 99, "ts2": "x", "decision": "spoof"}),
            json!({}),
        ] {
            let detail = detail.as_object().unwrap();
            let mut out = b"previous line\n".to_vec();
            let values = [None, Some("e"), Some("l"), Some("r"), Some("t")];
            let encoded = EncodedDetail::new(detail);
            let hash = seal_encoded_into(&mut out, 12, &"c".repeat(64), values, &encoded);
            let renamed: Vec<(std::borrow::Cow<'_, str>, &Value)> = detail
                .iter()
                .map(|(k, v)| {
                    let k = if RESERVED.contains(&k.as_str()) {
                        format!("detail_{k}").into()
                    } else {
                        k.as_str().into()
                    };
                    (k, v)
                })
                .collect();
            let (want, want_hash) = seal(encode_parts(12, &"c".repeat(64), &core, &renamed));
            assert_eq!(
                String::from_utf8_lossy(&out[14..]),
                String::from_utf8_lossy(&want)
            );
            assert_eq!(hash.as_slice(), want_hash.as_bytes());
            // And serde_json agrees on every value's encoding.
            let v: Value = serde_json::from_slice(&out[14..]).unwrap();
            for (k, val) in detail {
                let k = if RESERVED.contains(&k.as_str()) {
                    format!("detail_{k}")
                } else {
                    k.clone()
                };
                assert_eq!(&v[&k], val);
            }
        }
    }

    #[test]
    fn a_sealed_line_splits_back_and_its_hash_checks() {
        let f = json!({"event": "x"});
        let canon = encode_record(3, &"a".repeat(64), f.as_object().unwrap());
        let (line, hash) = seal(canon.clone());
        let line = &line[..line.len() - 1];
        let head = split_line(line).unwrap();
        assert_eq!(head.seq, 3);
        assert_eq!(head.prev, "a".repeat(64));
        assert_eq!(head.hash, hash);
        assert_eq!(hex::encode(body_hash(head.body)), hash);
        assert_eq!(sha256_hex(&canon), hash);
        // The line is valid JSON with the same fields.
        let v: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(v["hash"], hash.as_str());
    }
}
