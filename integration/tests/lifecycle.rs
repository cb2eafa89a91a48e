//! Exit codes, signals, cgroups and the audit records of a run's life.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use integration::*;

#[test]
fn exit_codes_and_signals_propagate() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    assert_status(&sb.run_prog(&["exit", "7"]), 7);
    assert_status(&sb.run_prog(&["exit", "0"]), 0);
    assert_status(&sb.run_prog(&["kill-self", "TERM"]), 128 + libc::SIGTERM);
    assert_status(&sb.run_prog(&["kill-self", "SEGV"]), 128 + libc::SIGSEGV);
}

#[test]
fn sigterm_to_agentd_is_forwarded_to_the_command() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let prog = testprog().display().to_string();
    let mut child = sb
        .run_cmd(&[&prog, "sleep", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn agentd: {e}"));
    // Wait until the command really runs.
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(line, "sleeping\n");
    // SAFETY: signalling the agentd process this test started.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    let recs = sb.audit();
    assert_eq!(events(&recs, "run_end")[0]["signal"], "SIGTERM");
}

#[test]
fn the_run_has_its_own_cgroups_and_they_are_gone_afterwards() {
    let sb = Sandbox::new();
    sb.write_policy(&format!(
        "version: 1\nname: cg\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, /proc, \"{}\"]\nexec:\n  allow: [\"{}\"]\nbudgets:\n  memory: 256MiB\n  pids: 32\n",
        testprog().parent().map(|p| p.display().to_string()).unwrap_or_default(),
        testprog().display()
    ));
    let o = sb.run_prog(&["cgroup"]);
    assert_status(&o, 0);
    let recs = sb.audit();
    let run = recs[0]["run"].as_str().unwrap_or_default().to_owned();
    assert!(!run.is_empty());
    let leaf = format!("agentd-{run}");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    // The v2 leaf is the run's identity, beneath agentd's own v2 cgroup.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own_of = |controller: &str| {
        own.lines().find_map(|l| {
            l.split_once(&format!(":{controller}:"))
                .map(|(_, p)| p.trim_end_matches('/').to_owned())
        })
    };
    let own_v2 = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .trim_end_matches('/')
        .to_owned();
    assert!(
        lines.contains(&format!("0::{own_v2}/{leaf}").as_str()),
        "{out}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let v2_mount = mounts
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split(' ').nth(4))
        .unwrap_or_default()
        .to_owned();
    let mut leaves = vec![std::path::PathBuf::from(format!(
        "{v2_mount}{own_v2}/{leaf}"
    ))];
    // On hybrid hosts, v1 memory and pids leaves nested under agentd's own v1 cgroups, never elsewhere.
    for controller in ["memory", "pids"] {
        if let Some(own_path) = own_of(controller) {
            let want = format!(":{controller}:{own_path}/{leaf}");
            assert!(
                lines.iter().any(|l| l.ends_with(&want)),
                "no {want} in\n{out}"
            );
            leaves.push(std::path::PathBuf::from(format!(
                "/sys/fs/cgroup/{controller}{own_path}/{leaf}"
            )));
        }
    }
    if let Some(mode) = expect("AGENTD_EXPECT_CGROUP_MODE") {
        let want = if mode == "hybrid" { 3 } else { 1 };
        assert_eq!(leaves.len(), want, "cgroup mode {mode}: {leaves:?}");
    }
    // After the run every leaf is gone.
    for p in &leaves {
        assert!(!p.exists(), "{} still exists", p.display());
    }
    let end = events(&recs, "run_end");
    assert_eq!(end[0]["cgroups_removed"], true);
}

#[test]
fn the_audit_log_records_start_exec_exit_and_end() {
    let sb = Sandbox::new();
    let policy = sb.base_policy(&[]);
    let o = sb.run_prog(&["exit", "3"]);
    assert_status(&o, 3);
    let recs = sb.audit();
    for (i, r) in recs.iter().enumerate() {
        for field in ["seq", "ts", "run", "layer", "event"] {
            assert!(!r[field].is_null(), "record {i} lacks {field}: {r}");
        }
        assert_eq!(r["seq"], i as u64);
    }
    let start = events(&recs, "run_start");
    assert_eq!(start.len(), 1);
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(
        std::fs::read(&policy).unwrap_or_default(),
    ));
    assert_eq!(start[0]["policy_hash"], hash);
    let prog = std::fs::canonicalize(testprog())
        .unwrap_or_default()
        .display()
        .to_string();
    let execs = events(&recs, "exec");
    assert!(
        execs
            .iter()
            .any(|e| e["path"] == prog && e["decision"] == "allow" && e["layer"] == "bpf"),
        "no exec record for {prog}: {recs:#?}"
    );
    let exits = events(&recs, "exit");
    let exec_pid = execs[0]["pid"].clone();
    assert!(
        exits
            .iter()
            .any(|e| e["pid"] == exec_pid && e["exit_code"] == 3),
        "no exit record for pid {exec_pid}: {recs:#?}"
    );
    let end = events(&recs, "run_end");
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["exit_code"], 3);
    // The run ends with run_end, sealed by a signed checkpoint.
    let n = recs.len();
    assert_eq!(recs[n - 2]["event"], "run_end");
    assert_eq!(recs[n - 1]["event"], "checkpoint");
}

#[test]
fn an_audit_log_inside_a_writable_root_is_refused() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let inside = sb.workspace().join("audit.jsonl");
    let o = sb
        .agentd()
        .arg("run")
        .arg("--policy")
        .arg(sb.policy_path())
        .arg("--workspace")
        .arg(sb.workspace())
        .arg("--audit")
        .arg(&inside)
        .args(["--", "/usr/bin/true"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 125);
    let err = stderr(&o);
    assert!(err.starts_with("agentd: audit: audit log "), "{err}");
    assert!(err.contains("which the run may write"), "{err}");
    assert!(!inside.exists());
}

#[test]
fn a_missing_command_exits_127() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let o = sb.run(&["agentd-no-such-command"]);
    assert_status(&o, 127);
    assert_eq!(
        stderr(&o),
        "agentd: exec: agentd-no-such-command: command not found\n"
    );
}

#[test]
fn a_policy_that_cannot_be_enforced_is_refused_before_the_command_runs() {
    let sb = Sandbox::new();
    let marker = sb.workspace().join("ran");
    // 33 port rules for one address: more than one map entry can carry.
    let rules: Vec<String> = (1..=33).map(|p| format!("\"10.0.0.1:{p}/tcp\"")).collect();
    sb.write_policy(&format!("version: 1\nname: net\nfs:\n  read: [/usr, /lib]\nexec:\n  allow: [/usr/bin/touch]\nnet:\n  allow: [{}]\n", rules.join(", ")));
    let o = sb.run(&["/usr/bin/touch", &marker.display().to_string()]);
    assert_status(&o, 125);
    let err = stderr(&o);
    assert_eq!(
        err,
        "agentd: bpf: net.allow: 33 port/protocol rules apply to 10.0.0.1/32, at most 32 fit one map entry\n"
    );
    assert!(!marker.exists());
}

#[test]
fn wall_time_kills_the_run() {
    let sb = Sandbox::new();
    sb.write_policy(&format!(
        "version: 1\nname: wt\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{}\"]\nexec:\n  allow: [\"{}\"]\nbudgets:\n  wall_time: 1s\n",
        testprog().parent().map(|p| p.display().to_string()).unwrap_or_default(),
        testprog().display()
    ));
    let o = sb.run_prog(&["sleep", "30"]);
    assert_status(&o, 137);
    assert!(
        stderr(&o).contains("agentd: budget: wall_time 1s exceeded"),
        "{}",
        stderr(&o)
    );
    let recs = sb.audit();
    let b = events(&recs, "budget");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0]["budget"], "wall_time");
    assert_eq!(b[0]["decision"], "kill");
    assert_eq!(events(&recs, "run_end")[0]["killed_by"], "wall_time");
}

/// `agentd run -- testprog orphan-sleep 60`, and the pids it prints: the orphan (in its
/// own session, its parent gone), then the command.
fn spawn_orphan_sleep(sb: &Sandbox) -> (std::process::Child, Vec<i32>) {
    let prog = testprog().display().to_string();
    let mut child = sb
        .run_cmd(&[&prog, "orphan-sleep", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn agentd: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut reader = BufReader::new(stdout);
    let mut pids = Vec::new();
    for want in ["orphan", "command"] {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("read: {e}"));
        let pid: i32 = line
            .trim()
            .strip_prefix(want)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("expected `{want} PID`, got {line:?}"));
        pids.push(pid);
    }
    (child, pids)
}

/// PR_SET_PDEATHSIG reaches only the command; a daemon it left behind would run on
/// with agentd's eBPF programs detached. The run guard kills the whole cgroup.
#[test]
fn sigkill_of_agentd_kills_every_process_of_the_run_not_only_the_command() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let (mut child, pids) = spawn_orphan_sleep(&sb);
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    };
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?} not running");
    // SAFETY: signalling the agentd process this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let all_gone = (0..250).any(|_| {
        let any = pids.iter().any(|p| alive(*p));
        if any {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        !any
    });
    let survivors: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    // Don't leave a stray process behind if the assertion is about to fail.
    for p in &survivors {
        // SAFETY: these pids were printed by the processes this test's run started.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    assert!(
        all_gone,
        "processes of the run survived agentd's SIGKILL: {survivors:?} (orphan, command: {pids:?})"
    );
    let run_id = sb.audit()[0]["run"].as_str().unwrap_or_default().to_owned();
    assert_eq!(run_id.len(), 12, "no run id in the audit log");
    // agentd died before it could remove the run's (now empty) cgroups: the test does.
    std::thread::sleep(std::time::Duration::from_millis(100));
    remove_leftover_run_cgroups(&run_id);
}

/// agentd is the run's child subreaper: a setsid'd, double-forked descendant is
/// reparented to agentd (not init), and when a budget kills the run and `agentd run`
/// returns, neither it nor the command exists any more, not even as a zombie.
#[test]
fn nothing_of_the_run_outlives_agentd_run_not_even_a_zombie() {
    let sb = Sandbox::new();
    let base = std::fs::read_to_string(sb.base_policy(&[])).unwrap_or_default();
    sb.write_policy(&format!("{base}budgets:\n  wall_time: 2s\n"));
    let (mut child, pids) = spawn_orphan_sleep(&sb);
    // The orphan's parent died: it now belongs to agentd, the subreaper.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pids[0])).unwrap_or_default();
    let ppid: u32 = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    assert_eq!(ppid, child.id(), "orphan's parent: {stat}");
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    assert_eq!(status.code(), Some(137));
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} of the run still exists after agentd run returned: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );
    }
    let recs = sb.audit();
    assert_eq!(events(&recs, "run_end")[0]["killed_by"], "wall_time");
}
