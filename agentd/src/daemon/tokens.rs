//! Scoped capability tokens: a caller outside the daemon's group acts on one run.
//!
//! A token is `agt1.HEX(CLAIMS).HEX(MAC)`: the claims (id, run, allowed actions, expiry)
//! as JSON, and HMAC-SHA256 over those bytes with a key derived from the host signing
//! key (`HMAC(secret, "agentd capability tokens v1")`); a daemon with `unsigned_audit`
//! keeps a random key in `state_dir/token.key` instead. Editing any byte breaks the MAC.
//! Revocations and the minters of live tokens persist in `state_dir/tokens.json`, so a
//! restart does not revive a revoked token. Every request is checked: signature, expiry,
//! revocation, the run, the action.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::protocol::Op;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "agt1";
const KEY_CONTEXT: &[u8] = b"agentd capability tokens v1";

/// What a token may be used for.
pub const ACTIONS: &[&str] = &["status", "stop", "pause", "resume", "logs"];

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub id: String,
    pub run: String,
    pub allow: Vec<String>,
    /// Unix seconds.
    pub exp: u64,
}

/// Why a token was refused; `why()` is the audit record's `why`.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("token {id}: bad signature (edited, or minted by another host)")]
    BadSignature { id: String },
    #[error("token {id} expired")]
    Expired { id: String },
    #[error("token {id} was revoked")]
    Revoked { id: String },
    #[error("token {id} is for another run")]
    WrongRun { id: String },
    #[error("token {id} does not allow `{action}`")]
    NotAllowed { id: String, action: String },
}

impl TokenError {
    pub fn why(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::BadSignature { .. } => "bad_signature",
            TokenError::Expired { .. } => "expired",
            TokenError::Revoked { .. } => "revoked",
            TokenError::WrongRun { .. } => "wrong_run",
            TokenError::NotAllowed { .. } => "not_allowed",
        }
    }

    pub fn id(&self) -> Option<String> {
        match self {
            TokenError::Malformed => None,
            TokenError::BadSignature { id }
            | TokenError::Expired { id }
            | TokenError::Revoked { id }
            | TokenError::WrongRun { id }
            | TokenError::NotAllowed { id, .. } => Some(id.clone()),
        }
    }
}

/// Why the token store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}", path = .path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The minter of a live token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Issued {
    uid: u32,
    exp: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    /// Token id → its minter (kept until it expires).
    issued: BTreeMap<String, Issued>,
    /// Revoked token id → its expiry (kept until then).
    revoked: BTreeMap<String, u64>,
}

/// The daemon's tokens: the key, and what was issued and revoked.
pub struct Tokens {
    key: [u8; 32],
    path: PathBuf,
    state: Mutex<Persisted>,
}

impl Tokens {
    /// The store in `state_dir`; the key from `secret` (the host signing key's secret),
    /// else `state_dir/token.key`, made on first use.
    pub fn open(state_dir: &Path, secret: Option<&[u8; 32]>) -> Result<Self, StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
        let secret = match secret {
            Some(s) => *s,
            None => local_secret(&state_dir.join("token.key"))?,
        };
        let mut mac = mac_with(&secret);
        mac.update(KEY_CONTEXT);
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        let path = state_dir.join("tokens.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(Self {
            key,
            path,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Persisted> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, state: &Persisted) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(state).map_err(|source| StoreError::Json {
            path: self.path.clone(),
            source,
        })?;
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    /// Mints a token for `claims` (minted by `uid`).
    pub fn mint(&self, claims: &Claims, uid: u32, now: u64) -> Result<String, StoreError> {
        let payload = serde_json::to_vec(claims).map_err(|source| StoreError::Json {
            path: self.path.clone(),
            source,
        })?;
        let mut mac = mac_with(&self.key);
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        let mut state = self.lock();
        prune(&mut state, now);
        state.issued.insert(
            claims.id.clone(),
            Issued {
                uid,
                exp: claims.exp,
            },
        );
        self.save(&state)?;
        Ok(format!(
            "{PREFIX}.{}.{}",
            hex::encode(payload),
            hex::encode(tag)
        ))
    }

    /// The claims of a genuine, live, unrevoked token.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.trim().split('.');
        let (Some(PREFIX), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let payload = hex::decode(payload).map_err(|_| TokenError::Malformed)?;
        let tag = hex::decode(tag).map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        let id = claims.id.clone();
        let mut mac = mac_with(&self.key);
        mac.update(&payload);
        // Constant-time comparison.
        mac.verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature { id: id.clone() })?;
        if claims.exp <= now {
            return Err(TokenError::Expired { id });
        }
        if self.lock().revoked.contains_key(&id) {
            return Err(TokenError::Revoked { id });
        }
        Ok(claims)
    }

    /// Checks that `claims` allow `op`; the run it acts on.
    pub fn permits(claims: &Claims, op: &Op) -> Result<(), TokenError> {
        let (action, run) = match op {
            Op::Stop { run } => ("stop", Some(run)),
            Op::Pause { run } => ("pause", Some(run)),
            Op::Resume { run } => ("resume", Some(run)),
            Op::Logs { run, .. } => ("logs", Some(run)),
            Op::Wait { run } => ("status", Some(run)),
            // `ps` with a token lists the token's run only.
            Op::Ps => ("status", None),
            // The daemon's own health is no run's.
            Op::Status => ("daemon_status", None),
            other => (op_name(other), None),
        };
        let id = claims.id.clone();
        if !ACTIONS.contains(&action) || !claims.allow.iter().any(|a| a == action) {
            return Err(TokenError::NotAllowed {
                id,
                action: action.to_owned(),
            });
        }
        match run {
            Some(r) if *r != claims.run => Err(TokenError::WrongRun { id }),
            _ => Ok(()),
        }
    }

    /// Revokes `id`: root, or the uid that minted it. Returns whether it was known.
    pub fn revoke(&self, id: &str, uid: u32, now: u64) -> Result<bool, String> {
        let mut state = self.lock();
        prune(&mut state, now);
        let Some(issued) = state.issued.get(id).cloned() else {
            return Ok(false);
        };
        if uid != 0 && issued.uid != uid {
            return Ok(false);
        }
        state.revoked.insert(id.to_owned(), issued.exp);
        self.save(&state).map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// A request's `op` name.
pub fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Run(_) => "run",
        Op::Wait { .. } => "wait",
        Op::Signal { .. } => "signal",
        Op::Ps => "ps",
        Op::Stop { .. } => "stop",
        Op::Pause { .. } => "pause",
        Op::Resume { .. } => "resume",
        Op::Logs { .. } => "logs",
        Op::Status => "status",
        Op::TokenCreate { .. } => "token_create",
        Op::TokenRevoke { .. } => "token_revoke",
        Op::Attach(_) => "attach",
        Op::Detach { .. } => "detach",
    }
}

/// Forgets what expired: an expired token is refused as expired whatever else it was.
fn prune(state: &mut Persisted, now: u64) {
    state.issued.retain(|_, i| i.exp > now);
    state.revoked.retain(|_, exp| *exp > now);
}

fn mac_with(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// `state_dir/token.key`: 32 random bytes, mode 0600, made if missing.
fn local_secret(path: &Path) -> Result<[u8; 32], StoreError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(bytes) = std::fs::read(path) {
        if let Ok(k) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(k);
        }
    }
    let mut k = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .map_err(io)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    std::io::Write::write_all(&mut f, &k).map_err(io)?;
    Ok(k)
}

/// `--ttl`: `90s`, `30m`, `1h`, `7d` (or plain seconds).
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("ttl `{s}`: expected a number and s, m, h or d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("ttl `{s}`: unit `{unit}` is not s, m, h or d")),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("ttl `{s}`: must be positive")),
        Some(t) => Ok(t),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Tokens) {
        let d = tempfile::tempdir().unwrap();
        let t = Tokens::open(d.path(), Some(&[7u8; 32])).unwrap();
        (d, t)
    }

    fn claims(run: &str, allow: &[&str], exp: u64) -> Claims {
        Claims {
            id: "t1".into(),
            run: run.into(),
            allow: allow.iter().map(|a| (*a).to_owned()).collect(),
            exp,
        }
    }

    #[test]
    fn a_token_works_for_its_run_and_actions_only() {
        let (_d, t) = store();
        let tok = t.mint(&claims("runa", &["stop"], 100), 1000, 10).unwrap();
        let c = t.verify(&tok, 50).unwrap();
        let stop = |run: &str| Op::Stop { run: run.into() };
        assert!(Tokens::permits(&c, &stop("runa")).is_ok());
        assert_eq!(
            Tokens::permits(&c, &stop("runb")).unwrap_err().why(),
            "wrong_run"
        );
        let pause = Op::Pause { run: "runa".into() };
        assert_eq!(
            Tokens::permits(&c, &pause).unwrap_err().why(),
            "not_allowed"
        );
        let all = t
            .verify(&t.mint(&claims("runa", ACTIONS, 100), 0, 10).unwrap(), 50)
            .unwrap();
        assert_eq!(
            Tokens::permits(&all, &Op::Status).unwrap_err().why(),
            "not_allowed"
        );
        assert!(Tokens::permits(&all, &Op::Ps).is_ok());
        assert_eq!(t.verify(&tok, 100).unwrap_err().why(), "expired");
    }

    #[test]
    fn edited_foreign_and_revoked_tokens_are_refused() {
        let (d, t) = store();
        let tok = t.mint(&claims("runa", &["stop"], 100), 1000, 10).unwrap();
        // Edit the run in the claims, keep the MAC.
        let parts: Vec<&str> = tok.split('.').collect();
        let edited = String::from_utf8(hex::decode(parts[1]).unwrap())
            .unwrap()
            .replace("runa", "runb");
        let edited = format!("agt1.{}.{}", hex::encode(edited), parts[2]);
        assert_eq!(t.verify(&edited, 50).unwrap_err().why(), "bad_signature");
        let other = Tokens::open(d.path(), Some(&[8u8; 32])).unwrap();
        assert_eq!(other.verify(&tok, 50).unwrap_err().why(), "bad_signature");
        assert_eq!(t.verify("agt1.zz.00", 50).unwrap_err().why(), "malformed");
        assert!(!t.revoke("t1", 2000, 20).unwrap(), "not the minter");
        assert!(t.revoke("t1", 1000, 20).unwrap());
        assert_eq!(t.verify(&tok, 50).unwrap_err().why(), "revoked");
        // The revocation survives a restart.
        let again = Tokens::open(d.path(), Some(&[7u8; 32])).unwrap();
        assert_eq!(again.verify(&tok, 50).unwrap_err().why(), "revoked");
    }

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("2d").unwrap(), 172800);
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1w").is_err());
    }
}
