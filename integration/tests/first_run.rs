//! A fresh host: the first root run makes the host signing key itself (no `agentd keygen`
//! needed), says so on stderr and in `run_start`, and its log verifies with that key. A key
//! path given explicitly is never created: a missing one still refuses the run.
//!
//! `AGENTD_KEY_DIR` points the host key directory (default /var/lib/agentd) at the test's
//! own directory, so that the machine's real key is never touched.

use std::path::{Path, PathBuf};
use std::process::Output;

use integration::*;
use serde_json::json;

/// The test helper's `exit 0` under the base policy, signing with the host key in `keys`.
fn run_with_host_key(sb: &Sandbox, keys: &Path) -> Output {
    let prog = testprog().display().to_string();
    sb.run_cmd(&[&prog, "exit", "0"])
        .env_remove("AGENTD_SIGNING_KEY")
        .env("AGENTD_KEY_DIR", keys)
        .output()
        .unwrap_or_else(|e| panic!("run agentd: {e}"))
}

fn verify(sb: &Sandbox, args: &[&str], keys: &Path) -> Output {
    sb.agentd()
        .args(["audit", "verify"])
        .arg(sb.audit_path())
        .args(args)
        .env("AGENTD_KEY_DIR", keys)
        .output()
        .unwrap_or_else(|e| panic!("run agentd audit verify: {e}"))
}

fn read_trimmed(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_owned()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_first_root_run_makes_the_host_key_and_says_so() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let keys: PathBuf = sb.dir.path().join("state/agentd");
    assert!(!keys.exists());

    let o = run_with_host_key(&sb, &keys);
    assert_status(&o, 0);
    let (secret, public) = (keys.join("audit.key"), keys.join("audit.pub"));
    let public_hex = read_trimmed(&public);
    assert_eq!(public_hex.len(), 64, "{public_hex}");
    assert_eq!((mode(&keys), mode(&secret)), (0o700, 0o600));
    let said = format!(
        "agentd: audit: no host signing key yet: generated {} (public key {public_hex}, also in {})",
        secret.display(),
        public.display()
    );
    assert!(
        stderr(&o).lines().any(|l| l == said),
        "want the line {said:?} in:\n{}",
        stderr(&o)
    );
    let records = sb.audit();
    // The chain's first record says so too.
    let genesis = events(&records, "genesis");
    assert_eq!(genesis.len(), 1);
    assert_eq!(
        genesis[0]["signing_key"],
        json!({"path": secret, "public_key": public_hex, "generated": true})
    );
    let starts = events(&records, "run_start");
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0]["signed"], true);
    assert_eq!(
        starts[0]["signing_key"],
        json!({"path": secret, "public_key": public_hex, "generated": true})
    );
    let o = verify(&sb, &["--key", &public.display().to_string()], &keys);
    assert_status(&o, 0);
    assert!(stdout(&o).contains(": OK: "), "{}", stdout(&o));

    // The next run signs with the same key and has nothing to say about it.
    let o = run_with_host_key(&sb, &keys);
    assert_status(&o, 0);
    assert!(
        !stderr(&o).contains("signing key"),
        "second run: {}",
        stderr(&o)
    );
    assert_eq!(read_trimmed(&public), public_hex);
    let records = sb.audit();
    let starts = events(&records, "run_start");
    assert_eq!(starts.len(), 2);
    assert_eq!(
        starts[1]["signing_key"],
        json!({"path": secret, "public_key": public_hex, "generated": false})
    );
    // Without --key, verify takes the host key from the same directory.
    let o = verify(&sb, &[], &keys);
    assert_status(&o, 0);
    assert!(stdout(&o).contains(": OK: "), "{}", stdout(&o));
    assert!(
        !stderr(&o).contains("trusting the key of the first checkpoint"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_explicit_missing_key_still_refuses_the_run() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let keys = sb.dir.path().join("host-keys");
    let missing = sb.dir.path().join("nope/audit.key");
    let prog = testprog().display().to_string();
    let want = format!(
        "agentd: audit: cannot read key {}: No such file or directory (os error 2) \
         (create one with `agentd keygen`, or pass --unsigned-audit)",
        missing.display()
    );
    // AGENTD_SIGNING_KEY is --signing-key (the unit tests of cli/audit_opts.rs take the flag).
    let o = sb
        .run_cmd(&[&prog, "exit", "0"])
        .env("AGENTD_SIGNING_KEY", &missing)
        .env("AGENTD_KEY_DIR", &keys)
        .output()
        .unwrap_or_else(|e| panic!("run agentd: {e}"));
    assert_status(&o, 125);
    assert_eq!(stderr(&o).lines().next(), Some(want.as_str()));
    assert!(!missing.exists());
    assert!(!keys.exists(), "no host key is made when a key was named");
    assert!(!sb.audit_path().exists(), "the run never started");
}
