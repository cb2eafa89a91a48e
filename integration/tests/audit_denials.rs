//! Every refusal of a path-less syscall is a `denied` record naming the syscall, the
//! layer, the rule, the errno the process saw and its pid: the seccomp deny list,
//! namespace `clone`, `clone3`, and signals outside the run (landlock's signal scope).

use std::path::Path;

use integration::*;
use serde_json::Value;

/// Runs `testprog syscall <which>` under the base policy, checks what the process saw,
/// and returns the one `denied` record of that syscall.
fn denied(sb: &Sandbox, which: &str, name: &str, errno: &str) -> Value {
    let o = sb.run_prog(&["syscall", which]);
    assert_eq!(stdout(&o), format!("{which}: {errno}\n"), "{o:?}");
    let recs = sb.audit();
    let hits: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "denied" && r["syscall"] == name)
        .collect();
    assert_eq!(hits.len(), 1, "{name}: {recs:#?}");
    let r = hits[0].clone();
    assert_eq!(r["op"], "syscall");
    assert_eq!(r["decision"], "deny");
    assert_eq!(r["errno"], errno);
    assert!(r["pid"].as_u64().is_some_and(|p| p > 1), "{r}");
    assert!(r["nr"].as_u64().is_some(), "{r}");
    assert!(r["run"].as_str().is_some_and(|s| s.len() == 12), "{r}");
    r
}

#[test]
fn seccomp_deny_list_refusals_are_denied_records() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    for (which, name) in [
        ("ptrace", "ptrace"),
        ("unshare-user", "unshare"),
        ("mount", "mount"),
        ("bpf", "bpf"),
        ("keyctl", "keyctl"),
        ("personality", "personality"),
        ("io_uring_setup", "io_uring_setup"),
        ("process_vm_readv", "process_vm_readv"),
        ("pidfd_getfd", "pidfd_getfd"),
    ] {
        let r = denied(&sb, which, name, "EPERM");
        assert_eq!(r["layer"], "seccomp", "{r}");
        assert_eq!(r["rule"], "on the deny list (seccomp baseline)", "{r}");
    }
}

#[test]
fn namespace_clone_and_clone3_are_denied_records() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let r = denied(&sb, "clone-newns", "clone", "EPERM");
    assert_eq!(r["layer"], "seccomp");
    assert_eq!(
        r["rule"],
        "clone with a namespace flag is denied (seccomp baseline)"
    );
    assert_eq!(
        r["arg"],
        format!("{:#x}", libc::CLONE_NEWNS | libc::SIGCHLD)
    );
    let r = denied(&sb, "clone3", "clone3", "ENOSYS");
    assert_eq!(r["layer"], "seccomp");
    assert_eq!(
        r["rule"],
        "clone3 is denied with ENOSYS, its flags cannot be inspected (seccomp baseline)"
    );
}

#[test]
fn a_signal_outside_the_run_is_a_landlock_denied_record() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let r = denied(&sb, "kill-init", "kill", "EPERM");
    assert_eq!(r["layer"], "landlock", "{r}");
    assert_eq!(
        r["rule"],
        "landlock scope signal: no signals to processes outside the run"
    );
    assert_eq!(r["arg"], "1");
    assert_eq!(r["signal"], "SIG0");
}

/// The one `denied` record of a call the seccomp filter killed, after checking that the
/// process died of SIGSYS without printing.
fn killed(sb: &Sandbox, args: &[&str]) -> Value {
    let o = sb.run_prog(args);
    assert_status(&o, 128 + libc::SIGSYS);
    let recs = sb.audit();
    let hits: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "denied" && r["decision"] == "kill")
        .collect();
    assert_eq!(hits.len(), 1, "{recs:#?}");
    let r = hits[0].clone();
    assert_eq!(r["op"], "syscall", "{r}");
    assert_eq!(r["layer"], "seccomp", "{r}");
    assert_eq!(
        r["rule"],
        "non-native syscall ABI (int 0x80, x32) kills the process (seccomp baseline)"
    );
    assert_eq!(r["signal"], "SIGSYS", "{r}");
    assert_eq!(r["errno"], Value::Null, "{r}");
    assert!(r["run"].as_str().is_some_and(|s| s.len() == 12), "{r}");
    let end = events(&recs, "run_end");
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["signal"], "SIGSYS");
    let exits = events(&recs, "exit");
    assert_eq!(exits.len(), 1, "{recs:#?}");
    assert_eq!(exits[0]["pid"], r["pid"], "{r}");
    r
}

#[test]
fn an_int_0x80_call_killed_by_seccomp_is_a_denied_record() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let r = killed(&sb, &["int80"]);
    assert_eq!(r["syscall"], "getpid", "{r}");
    assert_eq!(r["nr"], 20, "{r}");
    assert_eq!(r["abi"], "i386", "{r}");
    assert_eq!(r["pid"], r["tid"], "{r}");
}

#[test]
fn an_x32_call_killed_by_seccomp_is_a_denied_record() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let r = killed(&sb, &["x32"]);
    assert_eq!(r["syscall"], "getpid", "{r}");
    assert_eq!(r["nr"], 0x4000_0027, "{r}");
    assert_eq!(r["abi"], "x32", "{r}");
}

#[test]
fn a_killed_thread_that_is_not_the_last_is_named_by_its_tid() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let r = killed(&sb, &["int80-thread"]);
    assert_eq!(r["syscall"], "getpid", "{r}");
    assert_eq!(r["abi"], "i386", "{r}");
    assert_ne!(r["pid"], r["tid"], "the second thread made the call: {r}");
}

#[test]
fn repeated_clone3_probes_are_one_record_and_a_count() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let o = sb.run_prog(&["threads", "50"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "threads 50\n");
    let recs = sb.audit();
    let first: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "denied" && r["syscall"] == "clone3")
        .collect();
    assert_eq!(first.len(), 1, "{recs:#?}");
    let pid = &first[0]["pid"];
    let reps = events(&recs, "denied_repeated");
    assert_eq!(reps.len(), 1, "{recs:#?}");
    let r = reps[0];
    assert_eq!(r["syscall"], "clone3", "{r}");
    assert_eq!(r["nr"], 435, "{r}");
    assert_eq!(r["count"], 50, "{r}");
    assert_eq!(r["pid"], *pid, "{r}");
    assert_eq!(r["layer"], "seccomp", "{r}");
    assert_eq!(r["decision"], "deny", "{r}");
    assert_eq!(r["errno"], "ENOSYS", "{r}");
    assert_eq!(r["rule"], first[0]["rule"], "{r}");
    // Written when the process exited: before its exit record.
    let exit = events(&recs, "exit");
    assert_eq!(exit.len(), 1, "{recs:#?}");
    assert_eq!(exit[0]["pid"], *pid);
    assert!(
        r["seq"].as_u64() < exit[0]["seq"].as_u64(),
        "{r} {}",
        exit[0]
    );
    // run_end counts every denial, the repeats included (Rust's std also reads
    // /proc/self/maps at the first spawn: a denial of its own).
    let others = events(&recs, "denied").len() - 1;
    assert_eq!(
        events(&recs, "run_end")[0]["denials"],
        50 + others as u64,
        "{recs:#?}"
    );
}

/// A sandbox whose policy adds `ro/` to fs.read (only), with the file `ro/f` (4 bytes):
/// (sandbox, ro, ro/f).
fn read_only_file() -> (Sandbox, String, String) {
    let sb = Sandbox::new();
    let ro = sb.dir.path().join("ro");
    std::fs::create_dir_all(&ro).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let f = ro.join("f");
    std::fs::write(&f, "data").unwrap_or_else(|e| panic!("write: {e}"));
    let ro = ro.display().to_string();
    sb.base_policy_with(&[], &[&ro]);
    (sb, ro, f.display().to_string())
}

#[test]
fn truncate_of_a_read_only_file_is_a_landlock_denied_record() {
    let (sb, _, f) = read_only_file();
    let o = sb.run_prog(&["fsops", &format!("truncate:{f}")]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("truncate {f}: EACCES\n"));
    assert_eq!(std::fs::read(&f).map(|b| b.len()).ok(), Some(4));
    let recs = sb.audit();
    // (Rust's std reads /proc/self/maps at start: a denial of its own.)
    let d: Vec<&Value> = events(&recs, "denied")
        .into_iter()
        .filter(|r| r["path"] != "/proc/self/maps")
        .collect();
    assert_eq!(d.len(), 1, "{recs:#?}");
    let r = d[0];
    assert_eq!(r["layer"], "landlock", "{r}");
    assert_eq!(r["op"], "truncate", "{r}");
    assert_eq!(r["syscall"], "truncate", "{r}");
    assert_eq!(r["path"], f, "{r}");
    assert_eq!(r["access"], "write", "{r}");
    assert_eq!(r["errno"], "EACCES", "{r}");
    assert_eq!(r["rule"], "not in fs.write", "{r}");
    assert!(r["pid"].as_u64().is_some_and(|p| p > 1), "{r}");
}

/// The one `denied` record of `op` (the start-up read of /proc/self/maps aside).
fn file_denial(recs: &[Value], op: &str) -> Value {
    let d: Vec<&Value> = events(recs, "denied")
        .into_iter()
        .filter(|r| r["op"] == op)
        .collect();
    assert_eq!(d.len(), 1, "{recs:#?}");
    d[0].clone()
}

#[test]
fn a_link_out_of_a_read_only_tree_is_a_landlock_refer_denial() {
    let (sb, ro, f) = read_only_file();
    let to = sb.workspace().join("f2").display().to_string();
    let o = sb.run_prog(&["fsops", &format!("link:{f}:{to}")]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("link {f}: EXDEV\n"));
    let r = file_denial(&sb.audit(), "link");
    assert_eq!(r["layer"], "landlock", "{r}");
    assert_eq!(r["decision"], "deny", "{r}");
    assert_eq!(r["syscall"], "link", "{r}");
    assert_eq!(r["path"], f, "{r}");
    assert_eq!(r["new_path"], to, "{r}");
    assert_eq!(r["errno"], "EXDEV", "{r}");
    assert_eq!(
        r["rule"],
        format!("landlock refer: {ro} is not in fs.write (a link or rename to another directory needs LANDLOCK_ACCESS_FS_REFER on both, which fs.write grants)")
    );
    assert!(r["pid"].as_u64().is_some_and(|p| p > 1), "{r}");
}

#[test]
fn a_rename_across_mounts_is_the_kernels_exdev_not_landlocks() {
    let sb = Sandbox::new();
    let other = Tmpfs::mount(&sb.dir.path().join("other"), "1m");
    let other_dir = other.0.display().to_string();
    // Both directories writable: only the mount boundary refuses.
    let policy = std::fs::read_to_string(sb.base_policy(&[]))
        .unwrap_or_else(|e| panic!("read policy: {e}"))
        .replace(
            "write: [\"{workspace}\"]",
            &format!("write: [\"{{workspace}}\", \"{other_dir}\"]"),
        );
    sb.write_policy(&policy);
    let from = sb.workspace().join("a");
    std::fs::write(&from, "x").unwrap_or_else(|e| panic!("write: {e}"));
    let from = from.display().to_string();
    let to = other.0.join("a").display().to_string();
    let o = sb.run_prog(&["fsops", &format!("rename:{from}:{to}")]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("rename {from}: EXDEV\n"));
    let r = file_denial(&sb.audit(), "rename");
    assert_eq!(r["layer"], "kernel", "{r}");
    assert_eq!(r["syscall"], "rename", "{r}");
    assert_eq!(r["path"], from, "{r}");
    assert_eq!(r["new_path"], to, "{r}");
    assert_eq!(r["errno"], "EXDEV", "{r}");
    assert_eq!(
        r["rule"],
        "no rule: the paths are on different mounts (the kernel refuses a link or rename across mounts with EXDEV, before landlock)"
    );
}

#[test]
fn a_rename_out_of_a_read_only_tree_is_a_landlock_eacces_denial() {
    let (sb, _, f) = read_only_file();
    let to = sb.workspace().join("f2").display().to_string();
    let o = sb.run_prog(&["fsops", &format!("rename:{f}:{to}")]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), format!("rename {f}: EACCES\n"));
    let r = file_denial(&sb.audit(), "rename");
    assert_eq!(r["layer"], "landlock", "{r}");
    assert_eq!(r["errno"], "EACCES", "{r}");
    assert_eq!(r["rule"], format!("not in fs.write ({f})"), "{r}");
    assert_eq!(r["new_path"], to, "{r}");
}

// --- a relative path is resolved against its directory at the time of the call --------

/// The `denied` records of `op`, the start-up read of /proc/self/maps aside.
fn file_denials(recs: &[Value], op: &str) -> Vec<Value> {
    events(recs, "denied")
        .into_iter()
        .filter(|r| r["op"] == op && r["path"] != "/proc/self/maps")
        .cloned()
        .collect()
}

#[test]
fn a_relative_path_is_resolved_in_the_kernel_against_the_cwd_or_dirfd_of_the_call() {
    let (sb, ro, f) = read_only_file();
    // Each call is followed by a chdir elsewhere and the process exits at once, so only
    // the directory taken during the call can name the file.
    let o = sb.run_prog(&[
        "fsops",
        &format!("chdir:{ro}"),
        "unlink:f",
        "chdir:/",
        &format!("dirfd:{ro}"),
        "unlinkat:f",
        &format!("chdir:{ro}"),
        &format!("rename:f:{}", sb.workspace().join("f2").display()),
        "chdir:/",
    ]);
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!(
            "chdir {ro}: OK\nunlink f: EACCES\nchdir /: OK\ndirfd {ro}: OK\nunlinkat f: EACCES\n\
             chdir {ro}: OK\nrename f: EACCES\nchdir /: OK\n"
        )
    );
    let recs = sb.audit();
    let unlinks = file_denials(&recs, "unlink");
    assert_eq!(unlinks.len(), 2, "{recs:#?}");
    for (r, syscall) in unlinks.iter().zip(["unlink", "unlinkat"]) {
        assert_eq!(r["syscall"], syscall, "{r}");
        assert_eq!(r["path"], f, "{r}");
        assert_eq!(r["path_arg"], "f", "{r}");
        assert_eq!(r["layer"], "landlock", "{r}");
        assert_eq!(r["rule"], "not in fs.write", "{r}");
        assert_eq!(r["errno"], "EACCES", "{r}");
        assert!(r.get("path_unresolved").is_none(), "{r}");
    }
    let rename = file_denials(&recs, "rename");
    assert_eq!(rename.len(), 1, "{recs:#?}");
    assert_eq!(rename[0]["path"], f, "{}", rename[0]);
    assert_eq!(rename[0]["layer"], "landlock", "{}", rename[0]);
    assert_eq!(
        rename[0]["rule"],
        format!("not in fs.write ({f})"),
        "{}",
        rename[0]
    );
}

#[test]
fn a_relative_path_refused_by_file_mode_is_the_kernels_in_the_directory_of_the_call() {
    // The issue's example: a directory inside fs.write that is read-only by its mode.
    // The agent is uid 0 without CAP_DAC_OVERRIDE, so the kernel refuses the unlink.
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let ro = sb.workspace().join("ro");
    std::fs::create_dir_all(&ro).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::write(ro.join("f"), "x").unwrap_or_else(|e| panic!("write: {e}"));
    set_mode(&ro, 0o555);
    let ro = ro.display().to_string();
    let o = sb.run_prog(&["fsops", &format!("chdir:{ro}"), "unlink:f", "chdir:/"]);
    set_mode(Path::new(&ro), 0o755);
    assert_eq!(
        stdout(&o),
        format!("chdir {ro}: OK\nunlink f: EACCES\nchdir /: OK\n")
    );
    let r = &file_denials(&sb.audit(), "unlink")[..];
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!(r[0]["path"], format!("{ro}/f"), "{}", r[0]);
    assert_eq!(r[0]["layer"], "kernel", "{}", r[0]);
    assert_eq!(
        r[0]["rule"],
        "no rule: the policy allows this access; the kernel refused it (file permissions or another LSM)"
    );
}

#[test]
fn a_relative_path_whose_directory_is_too_deep_is_unresolved_and_not_judged() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    // Deeper than the kernel walk's 32 steps, outside the policy.
    let mut deep = sb.dir.path().join("deep");
    for i in 0..40 {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::write(deep.join("x"), "x").unwrap_or_else(|e| panic!("write: {e}"));
    let deep = deep.display().to_string();
    let o = sb.run_prog(&["fsops", &format!("chdir:{deep}"), "open:x"]);
    assert_eq!(stdout(&o), format!("chdir {deep}: OK\nopen x: EACCES\n"));
    let r = &file_denials(&sb.audit(), "open")[..];
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!(r[0]["path"], "x", "{}", r[0]);
    assert_eq!(r[0]["path_unresolved"], true, "{}", r[0]);
    assert_eq!(r[0]["layer"], "kernel", "{}", r[0]);
    assert_eq!(
        r[0]["rule"],
        "not judged: a relative path whose directory the kernel could not tell"
    );
    assert_eq!(r[0]["errno"], "EACCES", "{}", r[0]);
}

#[test]
fn audit_mode_names_a_relative_write_by_the_directory_of_the_call() {
    let (sb, ro, f) = read_only_file();
    let policy = std::fs::read_to_string(sb.policy_path())
        .unwrap_or_else(|e| panic!("read policy: {e}"))
        .replace("name: it\n", "name: it\nmode: audit\n");
    sb.write_policy(&policy);
    let o = sb.run_prog(&["fsops", &format!("chdir:{ro}"), "truncate:f", "chdir:/"]);
    assert_eq!(
        stdout(&o),
        format!("chdir {ro}: OK\ntruncate f: OK\nchdir /: OK\n")
    );
    let recs = sb.audit();
    let would: Vec<&Value> = events(&recs, "denied")
        .into_iter()
        .filter(|r| r["op"] == "truncate" && r["decision"] == "would_deny")
        .collect();
    assert_eq!(would.len(), 1, "{recs:#?}");
    assert_eq!(would[0]["path"], f, "{}", would[0]);
    assert_eq!(would[0]["path_arg"], "f", "{}", would[0]);
    assert_eq!(would[0]["rule"], "not in fs.write", "{}", would[0]);
}

#[test]
fn a_relative_path_on_another_mount_is_named_through_its_mount_point() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    // A tmpfs outside the policy: the kernel's walk crosses from its root to the
    // directory it is mounted on.
    let other = Tmpfs::mount(&sb.dir.path().join("other"), "1m");
    let sub = other.0.join("sub");
    std::fs::create_dir_all(&sub).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::write(sub.join("x"), "x").unwrap_or_else(|e| panic!("write: {e}"));
    let sub = sub.display().to_string();
    let o = sb.run_prog(&["fsops", &format!("chdir:{sub}"), "open:x", "chdir:/"]);
    assert_eq!(
        stdout(&o),
        format!("chdir {sub}: OK\nopen x: EACCES\nchdir /: OK\n")
    );
    let r = &file_denials(&sb.audit(), "open")[..];
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!(r[0]["path"], format!("{sub}/x"), "{}", r[0]);
    assert_eq!(r[0]["layer"], "landlock", "{}", r[0]);
    assert_eq!(r[0]["rule"], "not in fs.read or fs.write", "{}", r[0]);
}

#[test]
fn a_relative_path_in_a_detached_mount_is_unresolved_not_guessed() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let mnt = Tmpfs::mount(&sb.dir.path().join("gone"), "1m");
    std::fs::write(mnt.0.join("x"), "x").unwrap_or_else(|e| panic!("write: {e}"));
    let dir = mnt.0.display().to_string();
    let go = sb.workspace().join("go");
    let prog = testprog().display().to_string();
    let mut child = sb
        .run_cmd(&[
            &prog,
            "fsops",
            &format!("chdir:{dir}"),
            &format!("wait:{}", go.display()),
            "open:x",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn agentd: {e}"));
    let mut out = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    let mut first = String::new();
    out.read_line(&mut first)
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(first, format!("chdir {dir}: OK\n"));
    // Lazily unmounted while the process is inside: its cwd no longer leads to `/`. The
    // run has a mount namespace of its own (its private /proc), so the unmount is made
    // there; the run's process is agentd's only child. `-r`: in the run's root, which in
    // the VM is a chroot (without it, setns leaves the namespace's own root, where the
    // path does not exist).
    let agentd = child.id();
    let tasks = std::fs::read_dir(format!("/proc/{agentd}/task"))
        .unwrap_or_else(|e| panic!("tasks of {agentd}: {e}"));
    let children: String = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .collect();
    let run = children
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("agentd {agentd} has no child"));
    let o = std::process::Command::new("nsenter")
        .args(["-t", run, "-m", "-r", "umount", "-l", &dir])
        .output()
        .unwrap_or_else(|e| panic!("nsenter umount: {e}"));
    assert_status(&o, 0);
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("write: {e}"));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap_or_else(|e| panic!("read: {e}"));
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    assert!(status.success(), "{status:?}");
    assert_eq!(rest, format!("wait {}: OK\nopen x: EACCES\n", go.display()));
    let r = &file_denials(&sb.audit(), "open")[..];
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!(r[0]["path"], "x", "{}", r[0]);
    assert_eq!(r[0]["path_unresolved"], true, "{}", r[0]);
    assert_eq!(r[0]["layer"], "kernel", "{}", r[0]);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}
