//! Exec integrity: only `exec.allow` inodes run, and PROT_EXEC file mappings come only
//! from `exec.allow` or `exec.libraries`. Landlock already refuses a copy in the
//! workspace; these tests cover what it lets through (memfd + fexecve, `ld.so /copy`).
//! On the LSM path the exec / mmap fails with EACCES; on the tracepoint fallback the
//! process is killed with SIGKILL (agentd exits 137). `AGENTD_EXPECT_BPF_LSM` pins which.

use std::path::PathBuf;
use std::process::Command;

use integration::{agentd_bin, assert_status, events, expect, stdout, testprog, Sandbox};
use serde_json::Value;

fn lsm_path() -> bool {
    let o = Command::new(agentd_bin())
        .args(["doctor", "--json"])
        .output()
        .unwrap_or_else(|e| panic!("run agentd doctor: {e}"));
    let d: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    let available = d["bpf_lsm"]["available"] == true;
    if let Some(want) = expect("AGENTD_EXPECT_BPF_LSM") {
        assert_eq!(
            available,
            want == "1",
            "CI pins AGENTD_EXPECT_BPF_LSM={want}"
        );
    }
    available
}

/// A sandbox with the base policy and a copy of the test helper in the workspace.
fn sandbox_with_copy() -> (Sandbox, PathBuf) {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let copy = sb.workspace().join("copy");
    std::fs::copy(testprog(), &copy).unwrap_or_else(|e| panic!("copy: {e}"));
    let copy = std::fs::canonicalize(copy).unwrap_or_else(|e| panic!("canonicalize: {e}"));
    (sb, copy)
}

/// `denied` records of exec integrity (layer `lsm` or `tracepoint`). The run also has
/// landlock denials of its own (the Rust runtime of the helper reads /proc/self/maps,
/// which these policies do not allow), audited by the denial tracker.
fn integrity_denials(recs: &[Value]) -> Vec<&Value> {
    events(recs, "denied")
        .into_iter()
        .filter(|r| r["layer"] == "lsm" || r["layer"] == "tracepoint")
        .collect()
}

/// The single exec-integrity `denied` record of the run.
fn one_denial(sb: &Sandbox) -> Value {
    let recs = sb.audit();
    let denied = integrity_denials(&recs);
    assert_eq!(denied.len(), 1, "{recs:#?}");
    denied[0].clone()
}

#[test]
fn a_workspace_copy_of_an_allowed_binary_does_not_run() {
    let (sb, copy) = sandbox_with_copy();
    let o = sb.run_prog(&["exec", &copy.display().to_string()]);
    // Landlock refuses it at open-for-exec (no exec right in the workspace), before the
    // BPF hooks are reached, on both paths.
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("exec {}: EACCES\n", copy.display()));
}

#[test]
fn memfd_fexecve_is_stopped() {
    let (sb, _copy) = sandbox_with_copy();
    let o = sb.run_prog(&["fexecve-memfd", &testprog().display().to_string()]);
    let d = one_denial(&sb);
    assert_eq!(d["op"], "exec", "{d}");
    assert_eq!(d["rule"], "not in exec.allow", "{d}");
    assert_eq!(d["name"], "memfd:agentd-copy", "{d}");
    if lsm_path() {
        assert_status(&o, 0);
        assert_eq!(stdout(&o), "fexecve: EACCES\n");
        assert_eq!(d["layer"], "lsm", "{d}");
        assert_eq!(d["decision"], "deny", "{d}");
        assert_eq!(d["errno"], "EACCES", "{d}");
        // bpf_d_path of the executed file: the memfd's name as the kernel shows it.
        assert_eq!(d["path"], "/memfd:agentd-copy (deleted)", "{d}");
        assert_eq!(d["path_source"], "bpf_d_path", "{d}");
    } else {
        assert_eq!(d["path_source"], "inode lookup", "{d}");
        // Killed after the point of no return, before the image's first instruction:
        // it never prints nor exits 3.
        assert_status(&o, 137);
        assert_eq!(stdout(&o), "");
        assert_eq!(d["layer"], "tracepoint", "{d}");
        assert_eq!(d["decision"], "kill", "{d}");
        assert_eq!(d["signal"], "SIGKILL", "{d}");
    }
}

#[test]
fn ld_so_running_a_copy_is_stopped() {
    let (sb, copy) = sandbox_with_copy();
    let ld_so = "/lib64/ld-linux-x86-64.so.2";
    if !std::path::Path::new(ld_so).exists() {
        eprintln!("SKIP: ld_so_running_a_copy_is_stopped: {ld_so} does not exist on this host");
        return;
    }
    let copy_s = copy.display().to_string();
    let o = sb.run_prog(&["exec-args", ld_so, &copy_s, "exit", "3"]);
    let d = one_denial(&sb);
    assert_eq!(d["op"], "mmap_exec", "{d}");
    assert_eq!(d["rule"], "not in exec.allow or exec.libraries", "{d}");
    assert_eq!(d["name"], "copy", "{d}");
    assert_eq!(d["path"], copy_s.as_str(), "{d}");
    if lsm_path() {
        // ld.so reports the failed mapping and exits 127; the copy never ran (it would
        // have exited 3).
        assert_status(&o, 127);
        assert_eq!(stdout(&o), "");
        assert_eq!(d["layer"], "lsm", "{d}");
        assert_eq!(d["decision"], "deny", "{d}");
    } else {
        assert_status(&o, 137);
        assert_eq!(stdout(&o), "");
        assert_eq!(d["layer"], "tracepoint", "{d}");
        assert_eq!(d["decision"], "kill", "{d}");
        assert_eq!(d["signal"], "SIGKILL", "{d}");
    }
}

#[test]
fn allowed_programs_and_their_libraries_still_run() {
    let sb = Sandbox::new();
    sb.base_policy(&["/usr/bin/true"]);
    let o = sb.run_prog(&["exec-args", "/usr/bin/true"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "");
    assert!(integrity_denials(&sb.audit()).is_empty());
}

/// A workspace copy mapped PROT_READ (allowed: reading is fine), then made executable
/// with mprotect: `lsm/file_mprotect` refuses it (EACCES); the fallback finds the VMA
/// with `bpf_find_vma` at mprotect entry and kills.
#[test]
fn mprotect_exec_of_a_workspace_copy_is_stopped() {
    let (sb, copy) = sandbox_with_copy();
    let copy_s = copy.display().to_string();
    let o = sb.run_prog(&["mprotect-exec", &copy_s]);
    let d = one_denial(&sb);
    assert_eq!(d["op"], "mprotect_exec", "{d}");
    assert_eq!(d["rule"], "not in exec.allow or exec.libraries", "{d}");
    assert_eq!(d["name"], "copy", "{d}");
    assert_eq!(d["path"], copy_s.as_str(), "{d}");
    if lsm_path() {
        assert_status(&o, 0);
        assert_eq!(stdout(&o), format!("mprotect {copy_s}: EACCES\n"));
        assert_eq!(d["layer"], "lsm", "{d}");
        assert_eq!(d["decision"], "deny", "{d}");
    } else {
        assert_status(&o, 137);
        assert_eq!(stdout(&o), "");
        assert_eq!(d["layer"], "tracepoint", "{d}");
        assert_eq!(d["decision"], "kill", "{d}");
        assert_eq!(d["signal"], "SIGKILL", "{d}");
    }
}

/// Anonymous memory made executable (what JITs do) stays allowed on both paths: it has
/// no inode to judge. Documented in agentd-ebpf/src/exec_integrity.rs.
#[test]
fn mprotect_exec_of_anonymous_memory_stays_allowed() {
    let (sb, _copy) = sandbox_with_copy();
    let o = sb.run_prog(&["mprotect-exec", "anon"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "mprotect anon: OK\n");
    assert!(integrity_denials(&sb.audit()).is_empty());
}

/// A library from `exec.libraries` may be made executable with mprotect.
#[test]
fn mprotect_exec_of_a_library_stays_allowed() {
    let (sb, _copy) = sandbox_with_copy();
    let lib = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(lib) = lib else {
        eprintln!("SKIP: mprotect_exec_of_a_library_stays_allowed: no libc.so.6 found");
        return;
    };
    let o = sb.run_prog(&["mprotect-exec", lib]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("mprotect {lib}: OK\n"));
    assert!(integrity_denials(&sb.audit()).is_empty());
}
