//! Ed25519 keys for signed checkpoints, and the exact messages they sign.
//!
//! Key files are lower-case hex text: `audit.key` holds the 32-byte secret seed (mode
//! 0600), `audit.pub` the 32-byte public key (mode 0644). The host key lives in
//! `/var/lib/agentd` (`$AGENTD_KEY_DIR` overrides it); [`host_key`] makes it on first use.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

pub const DEFAULT_KEY_DIR: &str = "/var/lib/agentd";
/// Overrides [`DEFAULT_KEY_DIR`] (tests, and hosts that keep state elsewhere).
pub const KEY_DIR_ENV: &str = "AGENTD_KEY_DIR";
pub const SECRET_FILE: &str = "audit.key";
pub const PUBLIC_FILE: &str = "audit.pub";

/// Domain separation for a checkpoint: `CHECKPOINT_DOMAIN || seq (u64 BE) || prev (32 bytes)`.
const CHECKPOINT_DOMAIN: &[u8] = b"agentd-audit-checkpoint-v1\0";
/// For a rotation: `ROTATION_DOMAIN || seq || prev || old public key || new public key`.
const ROTATION_DOMAIN: &[u8] = b"agentd-audit-rotation-v1\0";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key {path} is not 64 hex digits")]
    Malformed { path: PathBuf },
    #[error("key {path} is readable by others (mode {mode:o}); it must be 0600")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("cannot write key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists; pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("cannot get random bytes: {0}")]
    Random(std::io::Error),
    #[error("{secret} is missing but {public} exists; refusing to make a new host key (restore the secret key, or replace both with `agentd keygen --force`)")]
    OrphanPublic { secret: PathBuf, public: PathBuf },
}

/// The host key directory: `$AGENTD_KEY_DIR`, else [`DEFAULT_KEY_DIR`].
pub fn host_key_dir() -> PathBuf {
    std::env::var_os(KEY_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_KEY_DIR), PathBuf::from)
}

/// The host signing key, and whether this call made it.
#[derive(Debug, Clone)]
pub struct HostKey {
    pub key: SigningKey,
    /// The secret key file.
    pub path: PathBuf,
    pub generated: bool,
}

/// Loads `dir/audit.key`, or makes the pair if neither file exists (the first run on a
/// fresh host). Concurrent first runs agree on one key: the secret is linked into place
/// only if no other process did it first, and the loser loads the winner's key.
pub fn host_key(dir: &Path) -> Result<HostKey, KeyError> {
    let secret = dir.join(SECRET_FILE);
    let public = dir.join(PUBLIC_FILE);
    let loaded = |generated| {
        load_signing_key(&secret).map(|key| HostKey {
            key,
            path: secret.clone(),
            generated,
        })
    };
    // The public file is written after the secret is in place, so looking at it first
    // tells an orphan from a concurrent first run that has just finished.
    let had_public = public.exists();
    match std::fs::symlink_metadata(&secret) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => return loaded(false),
    }
    if had_public {
        return Err(KeyError::OrphanPublic { secret, public });
    }
    create_key_dir(dir)?;
    let key = SigningKey::from_bytes(&random_bytes::<32>()?);
    let tmp = unique_tmp(&secret);
    write_new(&tmp, hex::encode(key.to_bytes()).as_bytes(), 0o600)?;
    let linked = std::fs::hard_link(&tmp, &secret);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return loaded(false),
        Err(source) => {
            return Err(KeyError::Write {
                path: secret,
                source,
            })
        }
    }
    let vk = key.verifying_key();
    write_file(&public, hex::encode(vk.to_bytes()).as_bytes(), 0o644)?;
    Ok(HostKey {
        key,
        path: secret,
        generated: true,
    })
}

fn create_key_dir(dir: &Path) -> Result<(), KeyError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| KeyError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// `PATH.tmp.PID.N`: no two writers (processes or threads) share a temporary file.
fn unique_tmp(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    PathBuf::from(name)
}

fn read_hex32(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_hex32(text.trim()).ok_or_else(|| KeyError::Malformed {
        path: path.to_path_buf(),
    })
}

pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

/// Loads a secret key file; refuses one that group or others can read.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(SigningKey::from_bytes(&read_hex32(path)?))
}

/// Loads a public key file (or a secret key file, from which the public half is derived
/// when the file is named `*.key`).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    if path.extension().is_some_and(|e| e == "key") {
        return Ok(load_signing_key(path)?.verifying_key());
    }
    VerifyingKey::from_bytes(&read_hex32(path)?).map_err(|_| KeyError::Malformed {
        path: path.to_path_buf(),
    })
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut buf = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: getrandom writes at most N - filled bytes into the rest of our buffer.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(KeyError::Random(e));
        }
        filled += n as usize;
    }
    Ok(buf)
}

/// Writes a fresh key pair into `dir` (created 0700 if missing). Returns the public key.
pub fn generate(dir: &Path, force: bool) -> Result<VerifyingKey, KeyError> {
    let secret = dir.join(SECRET_FILE);
    let public = dir.join(PUBLIC_FILE);
    if !force {
        for p in [&secret, &public] {
            if p.exists() {
                return Err(KeyError::Exists { path: p.clone() });
            }
        }
    }
    create_key_dir(dir)?;
    let key = SigningKey::from_bytes(&random_bytes::<32>()?);
    write_file(&secret, hex::encode(key.to_bytes()).as_bytes(), 0o600)?;
    let vk = key.verifying_key();
    write_file(&public, hex::encode(vk.to_bytes()).as_bytes(), 0o644)?;
    Ok(vk)
}

/// Writes through a temporary file and renames, so a reader never sees half a key.
fn write_file(path: &Path, text: &[u8], mode: u32) -> Result<(), KeyError> {
    let tmp = unique_tmp(path);
    write_new(&tmp, text, mode)?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        KeyError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Creates `path` (which must not exist) with `mode`, writes `text` and a newline, syncs.
fn write_new(path: &Path, text: &[u8], mode: u32) -> Result<(), KeyError> {
    let err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(text)
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(err)
}

pub fn checkpoint_message(seq: u64, prev: &[u8; 32]) -> Vec<u8> {
    let mut m = CHECKPOINT_DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(prev);
    m
}

pub fn rotation_message(
    seq: u64,
    prev: &[u8; 32],
    old: &VerifyingKey,
    new: &VerifyingKey,
) -> Vec<u8> {
    let mut m = ROTATION_DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(prev);
    m.extend_from_slice(old.as_bytes());
    m.extend_from_slice(new.as_bytes());
    m
}

pub fn sign_hex(key: &SigningKey, msg: &[u8]) -> String {
    hex::encode(key.sign(msg).to_bytes())
}

pub fn verify_hex(key: &VerifyingKey, msg: &[u8], sig_hex: &str) -> bool {
    let Ok(bytes) = hex::decode(sig_hex) else {
        return false;
    };
    let Ok(arr) = <[u8; 64]>::try_from(bytes.as_slice()) else {
        return false;
    };
    key.verify(msg, &Signature::from_bytes(&arr)).is_ok()
}

pub fn key_hex(k: &VerifyingKey) -> String {
    hex::encode(k.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_host_key_is_made_on_first_use_and_loaded_after() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("fresh/agentd");
        let first = host_key(&keys).unwrap();
        assert!(first.generated);
        assert_eq!(first.path, keys.join(SECRET_FILE));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&keys), 0o700);
        assert_eq!(mode(&keys.join(SECRET_FILE)), 0o600);
        assert_eq!(
            load_verifying_key(&keys.join(PUBLIC_FILE)).unwrap(),
            first.key.verifying_key()
        );
        let again = host_key(&keys).unwrap();
        assert!(!again.generated);
        assert_eq!(again.key.to_bytes(), first.key.to_bytes());
        // No temporary file is left behind.
        let mut names: Vec<String> = std::fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [SECRET_FILE, PUBLIC_FILE]);
    }

    #[test]
    fn concurrent_first_uses_agree_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("k");
        let made: Vec<HostKey> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| host_key(&keys).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(made.iter().filter(|k| k.generated).count(), 1);
        let public = load_verifying_key(&keys.join(PUBLIC_FILE)).unwrap();
        for k in &made {
            assert_eq!(k.key.verifying_key(), public);
        }
    }

    #[test]
    fn a_public_key_without_its_secret_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), false).unwrap();
        let public = std::fs::read(dir.path().join(PUBLIC_FILE)).unwrap();
        std::fs::remove_file(dir.path().join(SECRET_FILE)).unwrap();
        let e = host_key(dir.path()).unwrap_err();
        assert!(matches!(e, KeyError::OrphanPublic { .. }), "{e}");
        assert!(
            e.to_string().contains("refusing to make a new host key"),
            "{e}"
        );
        assert_eq!(std::fs::read(dir.path().join(PUBLIC_FILE)).unwrap(), public);
        assert!(!dir.path().join(SECRET_FILE).exists());
    }

    #[test]
    fn a_group_readable_host_key_is_refused_not_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), false).unwrap();
        let secret = dir.path().join(SECRET_FILE);
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            host_key(dir.path()),
            Err(KeyError::Permissions { .. })
        ));
    }

    #[test]
    fn keygen_writes_a_private_secret_and_a_matching_public_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let vk = generate(dir.path(), false).unwrap();
        let secret = dir.path().join(SECRET_FILE);
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sk = load_signing_key(&secret).unwrap();
        assert_eq!(sk.verifying_key(), vk);
        assert_eq!(
            load_verifying_key(&dir.path().join(PUBLIC_FILE)).unwrap(),
            vk
        );
        assert!(matches!(
            generate(dir.path(), false),
            Err(KeyError::Exists { .. })
        ));
        let msg = checkpoint_message(5, &[7; 32]);
        assert!(verify_hex(&vk, &msg, &sign_hex(&sk, &msg)));
        assert!(!verify_hex(
            &vk,
            &checkpoint_message(6, &[7; 32]),
            &sign_hex(&sk, &msg)
        ));
    }
}
