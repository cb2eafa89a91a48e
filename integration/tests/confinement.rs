//! `agentd run` confines the real process: files, exec, syscalls, non-native ABIs.

use integration::*;

#[test]
fn a_read_outside_fs_read_fails_with_eacces() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let o = sb.run_prog(&["open", "/etc/hostname"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "open /etc/hostname: EACCES\n");
    // Control: a path inside fs.read opens.
    let o = sb.run_prog(&["open", "/usr/lib/os-release"]);
    assert_eq!(stdout(&o), "open /usr/lib/os-release: OK\n");
}

#[test]
fn a_write_outside_fs_write_fails_with_eacces() {
    let sb = Sandbox::new();
    // A directory the run may read but not write (and the filesystem would let it write).
    let read_only = sb.dir.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap_or_else(|e| panic!("{e}"));
    let ro = read_only.display().to_string();
    sb.base_policy_with(&[], &[&ro]);
    let outside = sb.dir.path().join("outside.txt");
    let o = sb.run_prog(&["write", &outside.display().to_string()]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("write {}: EACCES\n", outside.display()));
    assert!(!outside.exists());
    // A path under an fs.read root is not writable either.
    let target = read_only.join("new.txt");
    let o = sb.run_prog(&["write", &target.display().to_string()]);
    assert_eq!(stdout(&o), format!("write {}: EACCES\n", target.display()));
    assert!(!target.exists());
    // Control: the workspace is writable.
    let inside = sb.workspace().join("ok.txt");
    let o = sb.run_prog(&["write", &inside.display().to_string()]);
    assert_eq!(stdout(&o), format!("write {}: OK\n", inside.display()));
    assert!(inside.exists());
}

#[test]
fn exec_of_a_binary_not_in_exec_allow_fails() {
    let sb = Sandbox::new();
    sb.base_policy(&["/usr/bin/sh"]);
    // From inside the run: execve answers EACCES.
    let o = sb.run_prog(&["exec", "/usr/bin/id"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "exec /usr/bin/id: EACCES\n");

    // Through an allowed shell: sh reports the denial and exits 126.
    let o = sb.run(&["/usr/bin/sh", "-c", "/usr/bin/id"]);
    assert_status(&o, 126);
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");

    // As the command itself: agentd exits 126 and audits the denial.
    let o = sb.run(&["/usr/bin/id"]);
    assert_status(&o, 126);
    let recs = sb.audit();
    let denied = events(&recs, "denied");
    let d = denied
        .iter()
        .find(|r| r["path"] == "/usr/bin/id")
        .unwrap_or_else(|| panic!("no denied record for /usr/bin/id in {recs:#?}"));
    assert_eq!(d["layer"], "landlock");
    assert_eq!(d["decision"], "deny");
    assert_eq!(d["errno"], "EACCES");
    assert_eq!(d["op"], "exec");
}

#[test]
fn ptrace_unshare_and_mount_fail_with_eperm() {
    let sb = Sandbox::new();
    sb.base_policy(&["/usr/bin/unshare"]);
    for (call, want) in [
        ("ptrace", "EPERM"),
        ("unshare-user", "EPERM"),
        ("unshare-ns", "EPERM"),
        ("mount", "EPERM"),
        ("bpf", "EPERM"),
        ("clone3", "ENOSYS"),
    ] {
        let o = sb.run_prog(&["syscall", call]);
        assert_status(&o, 0);
        assert_eq!(stdout(&o), format!("{call}: {want}\n"));
    }
    // The real tool, as an agent would run it.
    let o = sb.run(&["/usr/bin/unshare", "-r", "/usr/bin/true"]);
    assert_status(&o, 1);
    assert!(
        stderr(&o).contains("unshare failed: Operation not permitted"),
        "{}",
        stderr(&o)
    );
}

/// Under a real pty that is the process's controlling terminal: termios and window size
/// work, TIOCSTI (plain and with bit 32 set) and TIOCLINUX fail with EPERM. Without
/// agentd the same process injects (the kernel allows it here, `legacy_tiocsti`).
#[test]
fn terminal_injection_ioctls_fail_with_eperm_normal_tty_use_works() {
    let sb = Sandbox::new();
    let base = std::fs::read_to_string(sb.base_policy(&[])).unwrap_or_default();
    sb.write_policy(&base.replace(
        "write: [\"{workspace}\"]",
        "write: [\"{workspace}\", /dev/ptmx, /dev/pts]",
    ));
    // The kernel itself may refuse TIOCSTI; the seccomp rule must then still be there.
    let legacy = std::fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti")
        .map(|v| v.trim() == "1")
        .unwrap_or(true);
    let bare = std::process::Command::new(testprog())
        .arg("tty-inject")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let bare = stdout(&bare);
    if legacy {
        assert!(bare.contains("tiocsti OK tiocsti-high OK"), "{bare}");
    }
    let o = sb.run_prog(&["tty-inject"]);
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        "isatty 1 tcgetattr OK tcsetattr OK getwinsz OK setwinsz OK tiocsti EPERM \
         tiocsti-high EPERM tioclinux EPERM\n"
    );
}

#[test]
fn an_int_0x80_syscall_is_killed_with_sigsys() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let o = sb.run_prog(&["int80"]);
    assert_status(&o, 128 + libc::SIGSYS);
    assert_eq!(stdout(&o), "", "the process must not survive the call");
    let recs = sb.audit();
    let end = events(&recs, "run_end");
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["signal"], "SIGSYS");
    assert_eq!(end[0]["status"], 159);
}

/// `mode: audit` applies no seccomp filter, so an `int 0x80` call goes through; the
/// sys_exit program names it as what enforce mode would have killed.
#[test]
fn an_int_0x80_syscall_in_audit_mode_is_a_would_deny() {
    let sb = Sandbox::new();
    let prog = testprog().display().to_string();
    let dir = testprog()
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    sb.write_policy(&format!(
        "version: 1\nname: it\nmode: audit\nfs:\n  read: [/usr, /lib, \"{dir}\"]\nexec:\n  allow: [\"{prog}\"]\n"
    ));
    let o = sb.run_prog(&["int80"]);
    assert_status(&o, 0);
    assert!(stdout(&o).starts_with("int80: returned "), "{}", stdout(&o));
    let recs = sb.audit();
    let d: Vec<_> = events(&recs, "denied")
        .into_iter()
        .filter(|r| r["op"] == "syscall")
        .collect();
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0]["decision"], "would_deny", "{}", d[0]);
    assert_eq!(d[0]["layer"], "tracepoint", "{}", d[0]);
    assert_eq!(d[0]["syscall"], "getpid", "{}", d[0]);
    assert_eq!(d[0]["abi"], "i386", "{}", d[0]);
    assert_eq!(d[0]["signal"], serde_json::Value::Null, "{}", d[0]);
    assert_eq!(
        d[0]["rule"], "non-native syscall ABI (int 0x80, x32) kills the process (seccomp baseline)",
        "{}",
        d[0]
    );
}

#[test]
fn capabilities_are_gone_and_no_new_privs_is_set() {
    let sb = Sandbox::new();
    sb.base_policy_with(&[], &["/proc"]);
    let o = sb.run_prog(&["status"]);
    assert_status(&o, 0);
    let out = stdout(&o);
    for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            out.contains(&format!("{field}:\t0000000000000000")),
            "{field} not empty:\n{out}"
        );
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
}

/// Landlock judges the file a symlink leads to; the audit record says so, and names the
/// rule the target fails, instead of blaming file permissions.
#[test]
fn a_symlink_out_of_the_policy_is_denied_and_audited_with_its_target() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let link = sb.workspace().join("hostname-link");
    std::os::unix::fs::symlink("/etc/hostname", &link).unwrap_or_else(|e| panic!("{e}"));
    let link = link.display().to_string();
    let o = sb.run_prog(&["open", &link]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("open {link}: EACCES\n"));
    let recs = sb.audit();
    let denied: Vec<&serde_json::Value> = events(&recs, "denied")
        .into_iter()
        .filter(|r| r["path"] == link.as_str())
        .collect();
    assert_eq!(denied.len(), 1, "{recs:#?}");
    let r = denied[0];
    assert_eq!(r["layer"], "landlock");
    assert_eq!(r["op"], "open");
    assert_eq!(r["access"], "read");
    assert_eq!(r["errno"], "EACCES");
    assert_eq!(r["symlink_target"], "/etc/hostname");
    assert_eq!(r["rule"], "not in fs.read or fs.write");
}
