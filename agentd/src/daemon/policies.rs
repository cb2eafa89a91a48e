//! The policy texts of live runs, one file per text: `state_dir/policies/<sha256>.yaml`.
//! A run's state file names its policy by hash instead of carrying it. The state file
//! is rewritten twice per launch and every second of a run; with the text in it, each
//! rewrite escaped 30 KB of YAML for the bench's 1,000-rule policy (0.4 ms a launch,
//! measured with perf). Runs of one policy share its file, which goes with the last.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::state::{self, StateError};

/// The files, and how many live runs hold each.
pub struct PolicyStore {
    dir: PathBuf,
    holders: Mutex<HashMap<String, usize>>,
}

/// One run's hold on its policy file; the file goes when the last hold is dropped.
pub struct PolicyHold {
    store: Arc<PolicyStore>,
    hash: String,
}

impl PolicyStore {
    pub fn new(dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            dir,
            holders: Mutex::new(HashMap::new()),
        })
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // A poisoned lock means a panic while holding it; the counts stay consistent.
        self.holders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file of the policy whose SHA-256 is `hash`, which must be 64 hex digits: it
    /// comes from a state file, and names a path.
    fn path(&self, hash: &str) -> Result<PathBuf, StateError> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StateError::PolicyHash {
                hash: hash.to_owned(),
            });
        }
        Ok(self.dir.join(format!("{hash}.yaml")))
    }

    /// Holds the policy `text` (whose hash is `hash`) for a run, writing its file first
    /// if no live run holds it.
    pub fn hold(self: &Arc<Self>, hash: &str, text: &str) -> Result<PolicyHold, StateError> {
        let path = self.path(hash)?;
        let mut holders = self.holders();
        let count = holders.entry(hash.to_owned()).or_insert(0);
        if *count == 0 {
            // Under the lock: a run releasing the last hold removes the file under it.
            state::write_private(&path, text.as_bytes())?;
        }
        *count += 1;
        Ok(PolicyHold {
            store: Arc::clone(self),
            hash: hash.to_owned(),
        })
    }

    /// The text of the policy whose hash is `hash`, checked against it, and a hold on
    /// its file for a re-adopted run. The file is already there: it is not rewritten.
    pub fn adopt(self: &Arc<Self>, hash: &str) -> Result<(String, PolicyHold), StateError> {
        use sha2::Digest;
        let path = self.path(hash)?;
        let mut holders = self.holders();
        let text = std::fs::read_to_string(&path).map_err(|source| StateError::Io {
            path: path.clone(),
            source,
        })?;
        if hex::encode(sha2::Sha256::digest(text.as_bytes())) != hash {
            return Err(StateError::PolicyChanged { path });
        }
        *holders.entry(hash.to_owned()).or_insert(0) += 1;
        let hold = PolicyHold {
            store: Arc::clone(self),
            hash: hash.to_owned(),
        };
        Ok((text, hold))
    }

    /// Removes every policy file no live run holds: those of runs that ended while no
    /// daemon ran. Called once the live runs are re-adopted.
    pub fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let holders = self.holders();
        for path in entries.flatten().map(|e| e.path()) {
            let held = path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|hash| holders.get(hash).is_some_and(|n| *n > 0));
            if !held {
                state::remove_if_present(&path);
            }
        }
    }

    fn release(&self, hash: &str) {
        let mut holders = self.holders();
        let Some(count) = holders.get_mut(hash) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            holders.remove(hash);
            if let Ok(path) = self.path(hash) {
                state::remove_if_present(&path);
            }
        }
    }
}

impl Drop for PolicyHold {
    fn drop(&mut self) {
        self.store.release(&self.hash);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn hash(text: &str) -> String {
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }

    #[test]
    fn a_policy_file_lives_while_a_run_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = PolicyStore::new(dir.path().join("policies"));
        let (a, b) = ("version: 1\nname: a\n", "version: 1\nname: b\n");
        let first = store.hold(&hash(a), a).unwrap();
        let second = store.hold(&hash(a), a).unwrap();
        let other = store.hold(&hash(b), b).unwrap();
        let file = dir
            .path()
            .join("policies")
            .join(format!("{}.yaml", hash(a)));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), a);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(first);
        assert!(file.exists(), "a second run still holds it");
        drop(second);
        assert!(!file.exists(), "the last hold removes it");
        drop(other);
        assert_eq!(
            std::fs::read_dir(dir.path().join("policies"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_changed_file_or_a_bad_hash_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = PolicyStore::new(dir.path().to_path_buf());
        let text = "version: 1\nname: a\n";
        let _hold = store.hold(&hash(text), text).unwrap();
        let file = dir.path().join(format!("{}.yaml", hash(text)));
        std::fs::write(&file, "version: 1\nname: evil\n").unwrap();
        let err = store
            .adopt(&hash(text))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no longer matches"), "{err}");
        let err = store
            .adopt("../../etc/passwd")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a SHA-256"), "{err}");
        assert!(store.hold("x", text).is_err());
    }

    /// A restarted daemon's store starts with no holds: adoption reads the file the
    /// old daemon wrote and holds it, without writing it again.
    #[test]
    fn an_adopted_run_holds_the_file_it_finds() {
        let dir = tempfile::tempdir().unwrap();
        let text = "version: 1\nname: a\n";
        let file = dir.path().join(format!("{}.yaml", hash(text)));
        std::fs::write(&file, text).unwrap();
        let before = std::fs::metadata(&file).unwrap().modified().unwrap();
        let store = PolicyStore::new(dir.path().to_path_buf());
        let (got, first) = store.adopt(&hash(text)).unwrap();
        assert_eq!(got, text);
        let second = store.hold(&hash(text), text).unwrap();
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            before
        );
        drop(first);
        assert!(file.exists(), "a new run of the same policy still holds it");
        drop(second);
        assert!(!file.exists());
    }

    #[test]
    fn the_sweep_keeps_only_held_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = PolicyStore::new(dir.path().to_path_buf());
        let text = "version: 1\nname: a\n";
        let stale = dir.path().join(format!("{}.yaml", hash("old")));
        std::fs::write(&stale, "old").unwrap();
        let _hold = store.hold(&hash(text), text).unwrap();
        store.sweep();
        assert!(!stale.exists());
        assert!(dir.path().join(format!("{}.yaml", hash(text))).exists());
    }
}
