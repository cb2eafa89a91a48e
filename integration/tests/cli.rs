//! `agentd policy check|explain` and `agentd doctor` against this kernel.

use std::process::Command;

use integration::*;
use serde_json::Value;

fn agentd(args: &[&str]) -> std::process::Output {
    Command::new(agentd_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run agentd: {e}"))
}

#[test]
fn policy_check_reports_a_bad_file_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 1\nname: bad\nfs:\n  read: [/usr]\n  raed: [/etc]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = agentd(&["policy", "check", &bad.display().to_string()]);
    assert_status(&o, 1);
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!("{}:5:3: unknown field `raed`", bad.display())),
        "{out}"
    );

    std::fs::write(&bad, "version: 1\nname: bad\nbudgets:\n  wall_time: 10x\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let o = agentd(&["policy", "check", &bad.display().to_string()]);
    assert_status(&o, 1);
    assert!(
        stdout(&o).starts_with(&format!("{}:4:14: ", bad.display())),
        "{}",
        stdout(&o)
    );
}

/// `/proc/self` in a policy would be agentd's own pid, resolved at load: `policy check`
/// and `run` refuse it at its FILE:LINE:COL and say what to write instead; the command
/// never runs.
#[test]
fn a_path_under_proc_self_is_refused_by_check_and_run() {
    // A link of the test's own into /proc/self (as /dev/fd is on most hosts; the VM's
    // minimal /dev has none).
    let links = tempfile::Builder::new()
        .prefix("agentd-it-links-")
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let link = links.path().join("fd");
    std::os::unix::fs::symlink("/proc/self/fd", &link).unwrap_or_else(|e| panic!("symlink: {e}"));
    let link = link.display().to_string();
    for (read, col, shown) in [
        (
            "[/usr, /proc/self/fd]".to_owned(),
            16,
            "`/proc/self/fd`".to_owned(),
        ),
        (
            "[/proc/thread-self/status]".to_owned(),
            10,
            "`/proc/thread-self/status`".to_owned(),
        ),
        (
            format!("[\"{link}\"]"),
            10,
            format!("`{link}` (a link into /proc/self)"),
        ),
    ] {
        let sb = Sandbox::new();
        sb.write_policy(&format!("version: 1\nname: bad\nfs:\n  read: {read}\n"));
        let want = format!(
            "{}:4:{col}: path {shown} names agentd's own process: /proc/self and /proc/thread-self are resolved once, by agentd, when the policy is loaded, not for each process of the run. Write `/proc` to let the run read /proc, its own processes' entries included, or leave the entry out",
            sb.policy_path().display()
        );
        let o = agentd(&["policy", "check", &sb.policy_path().display().to_string()]);
        assert_status(&o, 1);
        assert_eq!(stdout(&o).trim_end(), want);

        let ran = sb.workspace().join("ran");
        let o = sb.run(&["/usr/bin/touch", &ran.display().to_string()]);
        assert_status(&o, 125);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&want), "{err}");
        assert!(!ran.exists(), "the command ran");
    }
}

#[test]
fn every_shipped_policy_checks_and_explains() {
    let ws = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = workspace_root().join("policies");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")) {
        let p = e.unwrap_or_else(|e| panic!("{e}")).path();
        if p.extension().and_then(|x| x.to_str()) != Some("yaml") {
            continue;
        }
        n += 1;
        let ps = p.display().to_string();
        let wss = ws.path().display().to_string();
        let o = agentd(&["policy", "check", &ps, "--workspace", &wss]);
        assert_status(&o, 0);
        let o = agentd(&["policy", "explain", &ps, "--workspace", &wss]);
        assert!(stdout(&o).contains("layers:"), "{}", stdout(&o));
    }
    assert!(
        n >= 4,
        "expected the presets and the demo policy, found {n}"
    );
}

fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: the version query takes no ruleset attribute.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0)
}

#[test]
fn doctor_matches_the_kernel() {
    require_root();
    let o = agentd(&["doctor", "--json"]);
    assert_status(&o, 0);
    let d: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));

    // Landlock: the ABI the kernel reports directly.
    let abi = landlock_abi();
    assert_eq!(d["landlock_abi"], abi);
    assert_eq!(d["landlock"]["available"], abi > 0);
    if let Some(want) = expect("AGENTD_EXPECT_LANDLOCK_ABI") {
        assert_eq!(abi.to_string(), want, "CI pins landlock ABI {want}");
    }

    // BPF LSM: listed or not, doctor must say whether a program really loads.
    // The LSM list it quotes is the kernel's: securityfs, or the config where that is not mounted.
    let detail = d["bpf_lsm"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(lsms) => assert!(
            detail.contains(&format!("/sys/kernel/security/lsm: {}", lsms.trim())),
            "{detail}"
        ),
        Err(_) => assert!(detail.contains("securityfs not mounted"), "{detail}"),
    }
    assert!(
        detail.contains("lsm/file_open"),
        "doctor must say whether a program really loaded: {detail}"
    );
    if let Some(want) = expect("AGENTD_EXPECT_BPF_LSM") {
        assert_eq!(d["bpf_lsm"]["available"], want == "1", "{}", d["bpf_lsm"]);
    }
    if let Some(want) = expect("AGENTD_EXPECT_FEXIT") {
        assert_eq!(d["fexit"]["available"], want == "1", "{}", d["fexit"]);
    }
    if let Some(want) = expect("AGENTD_EXPECT_TP_BTF") {
        assert_eq!(d["tp_btf"]["available"], want == "1", "{}", d["tp_btf"]);
    }
    if let Some(want) = expect("AGENTD_EXPECT_CGROUP_BPF") {
        assert_eq!(
            d["cgroup_bpf"]["available"],
            want == "1",
            "{}",
            d["cgroup_bpf"]
        );
    }
    if let Some(want) = expect("AGENTD_EXPECT_SECCOMP_NOTIF") {
        assert_eq!(d["seccomp_user_notif"]["available"], want == "1");
    }
    if let Some(want) = expect("AGENTD_EXPECT_SOCK_DESTROY") {
        assert_eq!(
            d["sock_destroy"]["available"],
            want == "1",
            "{}",
            d["sock_destroy"]
        );
    }
    assert_eq!(d["seccomp_filter"]["available"], true);

    // cgroups: compare with the mount table.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let v2 = mounts
        .lines()
        .find(|l| l.split(' ').nth(2) == Some("cgroup2"));
    let v1 = mounts.lines().any(|l| {
        l.split(' ').nth(2) == Some("cgroup")
            && l.split(' ')
                .nth(3)
                .is_some_and(|o| o.split(',').any(|x| x == "memory" || x == "pids"))
    });
    let mode = match (v2.is_some(), v1) {
        (true, true) => "hybrid",
        (true, false) => "v2",
        _ => "v1",
    };
    assert_eq!(d["cgroups"]["mode"], mode);
    if let Some(want) = expect("AGENTD_EXPECT_CGROUP_MODE") {
        assert_eq!(mode, want);
    }
    if let Some(line) = v2 {
        let mp = line.split(' ').nth(1).unwrap_or_default();
        assert_eq!(d["cgroups"]["v2_mount"], mp);
        let ctrls = std::fs::read_to_string(format!("{mp}/cgroup.controllers")).unwrap_or_default();
        let want: Vec<&str> = ctrls.split_whitespace().collect();
        assert_eq!(d["cgroups"]["v2_controllers"], serde_json::json!(want));
    }

    // The table form names every layer.
    let o = agentd(&["doctor"]);
    assert_status(&o, 0);
    let t = stdout(&o);
    for layer in [
        "bpf-lsm",
        "tp_btf",
        "cgroup-bpf",
        "landlock",
        "seccomp",
        "seccomp-notify",
        "cgroups",
    ] {
        assert!(
            t.lines().any(|l| l.starts_with(layer)),
            "doctor lacks {layer}:\n{t}"
        );
    }
    let lsm_line = t
        .lines()
        .find(|l| l.starts_with("bpf-lsm"))
        .unwrap_or_default();
    if d["bpf_lsm"]["available"] == false {
        assert!(lsm_line.contains(" no "), "{lsm_line}");
    }
}
