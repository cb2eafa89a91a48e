//! agentd's own files are read-only to the run where it could write them (issue 14.7):
//! a policy file inside the workspace cannot be changed, removed or moved away by the
//! agent it confines, and each attempt is a `denied` record.

use std::path::{Path, PathBuf};
use std::process::Output;

use integration::*;
use serde_json::Value;

/// A sandbox whose policy lives at `workspace/.agentd/policy.yaml` (inside fs.write).
fn policy_in_workspace() -> (Sandbox, PathBuf) {
    let sb = Sandbox::new();
    let text =
        std::fs::read_to_string(sb.base_policy(&[])).unwrap_or_else(|e| panic!("read policy: {e}"));
    let dir = sb.workspace().join(".agentd");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, &text).unwrap_or_else(|e| panic!("write: {e}"));
    let policy = policy
        .canonicalize()
        .unwrap_or_else(|e| panic!("canonicalize: {e}"));
    (sb, policy)
}

fn run_with(sb: &Sandbox, policy: &Path, args: &[&str]) -> Output {
    let prog = testprog().display().to_string();
    sb.agentd()
        .arg("run")
        .arg("--policy")
        .arg(policy)
        .arg("--workspace")
        .arg(sb.workspace())
        .arg("--audit")
        .arg(sb.audit_path())
        .arg("--")
        .arg(&prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run agentd: {e}"))
}

fn denials(recs: &[Value]) -> Vec<Value> {
    events(recs, "denied")
        .into_iter()
        .filter(|r| r["layer"] == "mounts")
        .cloned()
        .collect()
}

#[test]
fn a_policy_file_in_the_workspace_cannot_be_changed_removed_or_moved_by_the_run() {
    let (sb, policy) = policy_in_workspace();
    let before = std::fs::read(&policy).unwrap_or_else(|e| panic!("read: {e}"));
    let p = policy.display().to_string();
    let dir = policy
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let ws = sb
        .workspace()
        .canonicalize()
        .unwrap_or_else(|e| panic!("canonicalize: {e}"));
    let moved = ws.join("moved").display().to_string();
    let notes = format!("{dir}/notes");
    let o = run_with(
        &sb,
        &policy,
        &[
            "fsops",
            &format!("truncate:{p}"),
            &format!("chmod:{p}"),
            &format!("unlink:{p}"),
            &format!("rename:{p}:{dir}/renamed"),
            &format!("rename:{p}:{moved}"),
            &format!("rename:{dir}:{moved}"),
            // The directory itself stays writable.
            &format!("create:{notes}"),
        ],
    );
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!(
            "truncate {p}: EROFS\nchmod {p}: EROFS\nunlink {p}: EBUSY\nrename {p}: EBUSY\nrename {p}: EXDEV\nrename {dir}: EBUSY\ncreate {notes}: OK\n"
        ),
        "{}",
        stderr(&o)
    );
    let o = run_with(&sb, &policy, &["write", &p]);
    assert_eq!(stdout(&o), format!("write {p}: EROFS\n"));
    assert_eq!(
        std::fs::read(&policy).ok(),
        Some(before),
        "the policy changed"
    );
    // Nothing of the run's mounts is left in agentd's (this process's) namespace.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mounts.contains(&dir), "{mounts}");

    let recs = sb.audit();
    let d = denials(&recs);
    let by = |op: &str, errno: &str| {
        d.iter()
            .filter(|r| r["op"] == op && r["errno"] == errno)
            .cloned()
            .collect::<Vec<_>>()
    };
    let file_rule = "agentd's policy file is read-only to the run (a read-only bind mount)";
    for (op, errno) in [
        ("truncate", "EROFS"),
        ("open", "EROFS"),
        ("unlink", "EBUSY"),
    ] {
        let r = by(op, errno);
        assert_eq!(r.len(), 1, "{op} {errno}: {d:#?}");
        assert_eq!(r[0]["path"], p, "{}", r[0]);
        assert_eq!(r[0]["rule"], file_rule, "{}", r[0]);
        assert_eq!(r[0]["decision"], "deny", "{}", r[0]);
        assert!(r[0]["pid"].as_u64().is_some_and(|p| p > 1), "{}", r[0]);
    }
    let renames = by("rename", "EBUSY");
    assert_eq!(renames.len(), 2, "{d:#?}");
    assert_eq!(renames[0]["path"], p, "{}", renames[0]);
    assert_eq!(renames[0]["new_path"], format!("{dir}/renamed"));
    assert_eq!(renames[0]["rule"], format!("{file_rule} ({p})"));
    let out = by("rename", "EXDEV");
    assert_eq!(out.len(), 1, "{d:#?}");
    assert_eq!(out[0]["new_path"], moved, "{}", out[0]);
    assert_eq!(out[0]["rule"], format!("{file_rule} ({p})"));
    assert_eq!(renames[1]["path"], dir, "{}", renames[1]);
    assert_eq!(
        renames[1]["rule"],
        format!("holds agentd's policy file {p}: cannot be renamed or removed by the run (a bind mount) ({dir})")
    );
}

#[test]
fn without_fs_rules_the_policy_file_is_read_only_wherever_it_is() {
    // Audit mode applies no landlock: the run may write wherever the file modes let
    // uid 0 write, the policy beside the workspace included.
    let sb = Sandbox::new();
    let text = std::fs::read_to_string(sb.base_policy(&[]))
        .unwrap_or_else(|e| panic!("read policy: {e}"))
        .replace("name: it\n", "name: it\nmode: audit\n");
    let policy = sb.write_policy(&text);
    let p = policy
        .canonicalize()
        .unwrap_or_else(|e| panic!("canonicalize: {e}"))
        .display()
        .to_string();
    let o = sb.run_prog(&["fsops", &format!("truncate:{p}")]);
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("truncate {p}: EROFS\n"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&policy).ok().as_deref(),
        Some(text.as_str())
    );
    let d = denials(&sb.audit());
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0]["op"], "truncate");
    assert_eq!(d[0]["errno"], "EROFS");
    assert_eq!(d[0]["path"], p);
}

#[test]
fn through_the_daemon_the_callers_policy_in_its_workspace_is_read_only_too() {
    let d = integration::daemon::TestDaemon::start(&format!("aitg-prot-{}", std::process::id()));
    let (sb, policy) = policy_in_workspace();
    let before = std::fs::read(&policy).unwrap_or_else(|e| panic!("read: {e}"));
    let p = policy.display().to_string();
    let o = d
        .client()
        .args(["run", "--user", "root", "--policy"])
        .arg(&policy)
        .arg("--workspace")
        .arg(sb.workspace())
        .arg("--")
        .arg(testprog())
        .args(["fsops", &format!("truncate:{p}")])
        .output()
        .unwrap_or_else(|e| panic!("agentd run: {e}"));
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("truncate {p}: EROFS\n"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&policy).ok(), Some(before));
    let d = denials(&d.audit());
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0]["path"], p);
    assert_eq!(d[0]["errno"], "EROFS");
    assert!(
        d[0]["run"].as_str().is_some_and(|r| r.len() == 12),
        "{}",
        d[0]
    );
}
