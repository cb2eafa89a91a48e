//! A full audit filesystem: the run stops (fail closed) and the log written before
//! still verifies.

use std::process::Stdio;
use std::time::Duration;

use integration::*;

#[test]
fn a_full_audit_filesystem_stops_the_run_and_every_record_before_verifies() {
    let sb = Sandbox::new();
    sb.base_policy(&["/usr/bin/true"]);
    let fs = Tmpfs::mount(&sb.dir.path().join("auditfs"), "64k");
    let log = fs.0.join("audit.jsonl");
    // Denied opens until killed: each is a record, far more than 64 KiB of them.
    let prog = testprog().display().to_string();
    let child = sb
        .run_cmd_with_audit(&log, &[&prog, "deny-loop", "/etc/shadow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run agentd: {e}"));
    // A run that is not stopped loops for ever: end it (and fail) after 60 s.
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        // SAFETY: signalling the agentd this test started (it may have exited already).
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    });
    let o = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait agentd: {e}"));
    drop(watchdog);
    assert_status(&o, 125);
    assert!(stdout(&o).starts_with("looping"), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("No space left on device") && err.contains("stopping the run"),
        "{err}"
    );
    let records = read_audit(&log);
    let denied = records.iter().filter(|r| r["decision"] == "deny").count();
    assert!(denied >= 10, "{denied} denial records");
    assert_eq!(records[1]["event"], "run_start", "{:#?}", &records[..2]);
    let v = sb
        .agentd()
        .args(["audit", "verify"])
        .arg(&log)
        .arg("--key")
        .arg(sb.public_key())
        .output()
        .unwrap_or_else(|e| panic!("run agentd audit verify: {e}"));
    assert_status(&v, 0);
    drop(fs);
}
