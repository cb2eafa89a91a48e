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
        // Numbers, booleans and null: serde_json's own (already canonical) form.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

pub fn write_str(out: &mut Vec<u8>, s: &str) {
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
pub enum Part<'a> {
    Str(&'a str),
    Json(&'a Value),
}

/// [`encode_record`] without building a merged map: `core` (string fields the writer owns)
/// and `detail` (the event's fields; keys already renamed away from the reserved ones)
/// are merged in sorted key order.
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
