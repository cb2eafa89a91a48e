//! `agentd daemon`: runs of unprivileged users through the control socket, the socket's
//! gatekeeping, survival of a daemon crash, many runs at once, and bad clients. Every
//! test runs a real daemon (its own socket, state, audit log and bpffs) as root and real
//! clients, some as users the test creates.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::daemon::{keeper_dir_of, wait_output, Lines, TestDaemon};
use integration::*;
use serde_json::Value;

/// A group for this test's daemon (removed at the end).
fn group(tag: &str) -> (TestGroup, String) {
    let name: String = format!("aitg-{tag}-{}", std::process::id())
        .chars()
        .take(31)
        .collect();
    let g = TestGroup::ensure(&name).unwrap_or_else(|| panic!("group {name} already exists"));
    (g, name)
}

fn gid_of(group: &str) -> u32 {
    let o = std::process::Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap_or_else(|e| panic!("getent: {e}"));
    String::from_utf8_lossy(&o.stdout)
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or_else(|| panic!("no gid for {group}"))
}

/// The test helper may run, read its own directory; the network is closed but for
/// `ports` on loopback; `deny` (if any) is denied by inode.
fn policy(ports: &[u16], deny: Option<&std::path::Path>, extra: &str) -> String {
    let prog = testprog();
    let allow: Vec<String> = ports
        .iter()
        .map(|p| format!("\"127.0.0.1:{p}/tcp\""))
        .collect();
    let deny = deny
        .map(|d| format!("  deny: [\"{}\"]\n", d.display()))
        .unwrap_or_default();
    format!(
        "version: 1\nname: daemon-it\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{dir}\", \"{{workspace}}\"]\n  write: [\"{{workspace}}\"]\n{deny}exec:\n  allow: [\"{prog}\"]\nnet:\n  allow: [{allow}]\n{extra}",
        dir = prog.parent().map(|d| d.display().to_string()).unwrap_or_default(),
        prog = prog.display(),
        allow = allow.join(", "),
    )
}

fn assert_chain_verifies(d: &TestDaemon) {
    assert_status(
        &std::process::Command::new(agentd_bin())
            .args(["audit", "verify", "--unsigned"])
            .arg(d.audit_path())
            .output()
            .unwrap_or_else(|e| panic!("{e}")),
        0,
    );
}

fn records<'a>(recs: &'a [Value], run: &str, event: &str) -> Vec<&'a Value> {
    recs.iter()
        .filter(|r| r["run"] == run && r["event"] == event)
        .collect()
}

fn run_id_of(recs: &[Value], uid: u32) -> String {
    recs.iter()
        .rev()
        .find(|r| r["event"] == "run_start" && r["uid"] == uid)
        .and_then(|r| r["run"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no run_start of uid {uid}: {recs:#?}"))
}

/// NOTIFY_SOCKET sees READY=1 and a STATUS= line once the daemon is up.
#[test]
fn the_notify_socket_hears_ready() {
    let (_g, group) = group("notify");
    let d = TestDaemon::start(&group);
    let seen = d.notified.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(
        seen.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|m| m.lines().any(|l| l.starts_with("STATUS=listening on "))),
        "{seen:?}"
    );
    let recs = d.audit();
    assert_eq!(recs[0]["event"], "genesis");
    assert_eq!(recs[1]["event"], "daemon_start");
    assert_eq!(recs[1]["run"], "daemon");
}

/// With WatchdogSec set (WATCHDOG_USEC), the daemon pings WATCHDOG=1 at least every half
/// period, so systemd does not restart a healthy daemon.
#[test]
fn the_watchdog_is_fed_at_half_its_period() {
    let (_g, members) = group("wdog");
    let d = TestDaemon::start_with_env(&members, &[("WATCHDOG_USEC", "400000")]);
    let pings = || {
        d.notified
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
                    .count()
            })
            .unwrap_or(0)
    };
    let at_ready = pings();
    // 2 s is ten half-periods: a watchdog that is not fed would be long overdue.
    std::thread::sleep(Duration::from_secs(2));
    let after = pings();
    assert!(
        after - at_ready >= 5,
        "{} WATCHDOG=1 in 2 s at WATCHDOG_USEC=400000 (expected about 10): {:?}",
        after - at_ready,
        d.notified.lock().map(|v| v.clone()).unwrap_or_default()
    );
    // A WATCHDOG_PID naming another process means the ping is not for this daemon.
    let (_g2, group2) = group("wdog2");
    let other = TestDaemon::start_with_env(
        &group2,
        &[("WATCHDOG_USEC", "400000"), ("WATCHDOG_PID", "1")],
    );
    std::thread::sleep(Duration::from_secs(1));
    let seen = other.notified.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(
        !seen.iter().any(|m| m.lines().any(|l| l == "WATCHDOG=1")),
        "{seen:?}"
    );
}

/// A member of the daemon's group runs through it without sudo: the command runs as the
/// user, a forbidden connect gets EPERM, a read outside the policy EACCES, and each
/// denial is in the daemon's chain under the run's id.
#[test]
fn a_member_runs_as_itself_and_is_confined() {
    let (_g, group) = group("member");
    let d = TestDaemon::start(&group);
    let user = TestUser::create("member", &[&group]);
    let home = d.home_of(&user);
    let p = d.policy("member.yaml", &policy(&[9], None, ""));
    let prog = testprog().display().to_string();
    let gid = gid_of(&group);
    let run = |args: &[&str]| {
        d.client_as(&user, &[gid], &home)
            .arg("run")
            .arg("--policy")
            .arg(&p)
            .arg("--")
            .arg(&prog)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let o = run(&["ids"]);
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!(
            "uid {} gid {} groups {},{gid}\n",
            user.uid, user.gid, user.gid
        )
    );
    // The command gets the caller's umask, not the daemon's.
    let mut client = d.client_as(&user, &[gid], &home);
    // SAFETY: umask(2) only, between fork and exec.
    unsafe {
        client.pre_exec(|| {
            libc::umask(0o007);
            Ok(())
        });
    }
    let o = client
        .arg("run")
        .arg("--policy")
        .arg(&p)
        .arg("--")
        .arg(&prog)
        .arg("umask")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "umask 0007\n");
    let o = run(&["connect", "127.0.0.1", "8081"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "connect 127.0.0.1 8081: EPERM\n");
    let o = run(&["open", "/etc/hostname"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "open /etc/hostname: EACCES\n");

    let recs = d.audit();
    let starts: Vec<&Value> = recs.iter().filter(|r| r["event"] == "run_start").collect();
    // ids, umask, connect, open.
    assert_eq!(starts.len(), 4);
    for s in &starts {
        assert_eq!(s["uid"], user.uid);
        assert_eq!(s["gid"], user.gid);
        assert_eq!(s["client"]["uid"], user.uid);
        assert_eq!(s["cwd"], home.display().to_string());
    }
    let connect_run = starts[2]["run"].as_str().unwrap_or_default();
    let denied: Vec<&Value> = records(&recs, connect_run, "denied")
        .into_iter()
        .filter(|r| r["op"] == "connect")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["layer"], "bpf");
    assert_eq!(denied[0]["op"], "connect");
    assert_eq!(denied[0]["port"], 8081);
    assert_eq!(denied[0]["errno"], "EPERM");
    let open_run = starts[3]["run"].as_str().unwrap_or_default();
    let denied = records(&recs, open_run, "denied");
    assert!(
        denied.iter().any(|r| r["path"] == "/etc/hostname"
            && r["errno"] == "EACCES"
            && r["layer"] == "landlock"),
        "{denied:#?}"
    );
    for run in [connect_run, open_run] {
        let end = records(&recs, run, "run_end");
        assert_eq!(end.len(), 1);
        assert_eq!(end[0]["exit_code"], 0);
    }
    assert_chain_verifies(&d);
}

/// Root names whom a daemon run runs as: `--user USER:GROUP` gets that group, not the
/// user's primary one, and sudo's `SUDO_UID`/`SUDO_GID` likewise; the daemon resolves
/// them (the client sends the spec as given).
#[test]
fn root_names_the_user_and_group_of_a_daemon_run() {
    let (_g, group) = group("runas");
    let d = TestDaemon::start(&group);
    let user = TestUser::create("runas", &[&group]);
    let gid = gid_of(&group);
    assert_ne!(
        gid, user.gid,
        "the test needs a group other than the primary one"
    );
    let p = d.policy("runas.yaml", &policy(&[9], None, ""));
    let ids = |user_arg: Option<String>, sudo: Option<(u32, u32)>| {
        let mut c = d.client();
        c.env_remove("SUDO_UID").env_remove("SUDO_GID").arg("run");
        if let Some(u) = user_arg {
            c.arg("--user").arg(u);
        }
        if let Some((uid, gid)) = sudo {
            c.env("SUDO_UID", uid.to_string())
                .env("SUDO_GID", gid.to_string());
        }
        c.arg("--policy")
            .arg(&p)
            .arg("--")
            .arg(testprog())
            .arg("ids")
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let expected = format!("uid {} gid {gid} groups ", user.uid);
    for o in [
        ids(Some(format!("{}:{group}", user.name)), None),
        ids(Some(format!("{}:{gid}", user.uid)), None),
        ids(None, Some((user.uid, gid))),
    ] {
        assert_status(&o, 0);
        let out = stdout(&o);
        assert!(
            out.starts_with(&expected),
            "{out:?}, expected {expected:?}…"
        );
        let groups = out.trim_end().rsplit(' ').next().unwrap_or_default();
        assert!(groups.split(',').any(|g| g == gid.to_string()), "{out:?}");
    }
    let o = ids(Some("no-such-user-x".into()), None);
    assert_status(&o, 125);
    assert!(stderr(&o).contains("no-such-user-x"), "{}", stderr(&o));
    let recs = d.audit();
    let starts: Vec<&Value> = recs.iter().filter(|r| r["event"] == "run_start").collect();
    assert_eq!(starts.len(), 3);
    for s in starts {
        assert_eq!(s["uid"], user.uid);
        assert_eq!(s["gid"], gid);
    }
}

/// A user outside the group cannot reach the socket (mode 0660); one that reaches it
/// anyway (here: CAP_DAC_OVERRIDE) is refused by the daemon, which audits the peer's
/// uid and pid. User A neither sees nor stops user B's run.
#[test]
fn outsiders_are_refused_and_users_only_see_their_own_runs() {
    let (_g, group) = group("gate");
    let d = TestDaemon::start(&group);
    let gid = gid_of(&group);
    let outsider = TestUser::create("out", &[]);
    let home = d.home_of(&outsider);
    let o = d
        .client_as(&outsider, &[], &home)
        .arg("ps")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 1);
    assert!(stderr(&o).contains("permission denied: "), "{}", stderr(&o));

    // Past the file mode with CAP_DAC_OVERRIDE, still not in the group.
    let o = std::process::Command::new("setpriv")
        .arg(format!("--reuid={}", outsider.uid))
        .arg(format!("--regid={}", outsider.gid))
        .arg("--clear-groups")
        .args(["--inh-caps=+dac_override", "--ambient-caps=+dac_override"])
        .arg(agentd_bin())
        .arg("ps")
        .env("AGENTD_SOCKET", d.socket())
        .output()
        .unwrap_or_else(|e| panic!("setpriv: {e}"));
    assert_status(&o, 1);
    assert!(
        stderr(&o).contains(&format!(
            "permission denied: uid {} is not in group `{group}`",
            outsider.uid
        )),
        "{}",
        stderr(&o)
    );
    let recs = d.audit();
    let refused: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "peer_refused")
        .collect();
    assert_eq!(refused.len(), 1, "{recs:#?}");
    assert_eq!(refused[0]["uid"], outsider.uid);
    assert_eq!(refused[0]["op"], "ps");
    assert_eq!(refused[0]["decision"], "deny");
    assert!(refused[0]["pid"].as_u64().is_some_and(|p| p > 0));

    let a = TestUser::create("usera", &[&group]);
    let b = TestUser::create("userb", &[&group]);
    let (home_a, home_b) = (d.home_of(&a), d.home_of(&b));
    let p = d.policy("ab.yaml", &policy(&[], None, ""));
    // The detached run keeps the client's stdout: a file, not a pipe waited on.
    let out_path = home_a.join("detached.out");
    let out = std::fs::File::create(&out_path).unwrap_or_else(|e| panic!("{e}"));
    let status = d
        .client_as(&a, &[gid], &home_a)
        .arg("run")
        .arg("--detach")
        .arg("--policy")
        .arg(&p)
        .arg("--")
        .arg(testprog())
        .args(["sleep", "30"])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(0));
    // The client prints the run id (the run itself prints `sleeping` there too).
    let printed = std::fs::read_to_string(&out_path).unwrap_or_default();
    let run = printed
        .lines()
        .find(|l| l.len() == 12 && l.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no run id in {printed:?}"))
        .to_owned();
    let ps_as = |u: &TestUser, home: &std::path::Path| {
        let o = d
            .client_as(u, &[gid], home)
            .args(["ps", "--json"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_status(&o, 0);
        serde_json::from_slice::<Vec<Value>>(&o.stdout).unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(ps_as(&a, &home_a).len(), 1);
    assert!(ps_as(&b, &home_b).is_empty(), "B sees A's run");
    assert_eq!(d.ps().len(), 1, "root sees every run");
    let o = d
        .client_as(&b, &[gid], &home_b)
        .args(["stop", &run])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(o.status.code(), Some(0), "B stopped A's run");
    assert_eq!(ps_as(&a, &home_a).len(), 1, "A's run goes on");
    let o = d
        .client_as(&a, &[gid], &home_a)
        .args(["stop", &run])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.ps().is_empty() {
        assert!(Instant::now() < deadline, "the run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let recs = d.audit();
    let end = records(&recs, &run, "run_end");
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["killed_by"], "stop");
    assert_eq!(end[0]["status"], 137);
}

/// SIGKILL the daemon mid-run: while it is down a forbidden connect still gets EPERM,
/// an `fs.deny` file is still denied (the fallback kills the opener) and a byte budget
/// still holds; the restarted daemon shows the run, the client gets the run's real exit
/// status, and the chain verifies across the restart.
#[test]
fn a_killed_daemon_leaves_its_runs_confined_and_the_next_one_adopts_them() {
    let (_g, group) = group("crash");
    let mut d = TestDaemon::start(&group);
    let gid = gid_of(&group);
    let user = TestUser::create("crash", &[&group]);
    let home = d.home_of(&user);
    let denied = home.join("denied.txt");
    std::fs::write(&denied, "secret").unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::chown(&denied, Some(user.uid), Some(user.gid))
        .unwrap_or_else(|e| panic!("{e}"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 65536];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    const BUDGET: u64 = 256 * 1024;
    let p = d.policy(
        "crash.yaml",
        &policy(
            &[port],
            Some(&denied),
            "budgets:\n  net_egress_bytes: {limit: 256KiB, on_exceed: [kill@100%]}\n",
        ),
    );
    let (go, done) = (home.join("go"), home.join("done"));
    let probe = [
        "8082".to_owned(),
        denied.display().to_string(),
        port.to_string(),
        (4 * 1024 * 1024).to_string(),
    ];
    let (client, lines, run) = start_probe(&d, &user, gid, &home, &p, &go, &probe, &done);
    // The run's state file names its policy by hash; the text is in the policy store.
    let state = std::fs::read_to_string(d.state_dir().join("runs").join(format!("{run}.json")))
        .unwrap_or_else(|e| panic!("{e}"));
    let state: Value = serde_json::from_str(&state).unwrap_or_else(|e| panic!("{e}"));
    assert!(state.get("policy_text").is_none(), "{state:#}");
    let stored = d.state_dir().join("policies").join(format!(
        "{}.yaml",
        state["policy_hash"].as_str().unwrap_or_default()
    ));
    assert_eq!(
        std::fs::read(&stored).unwrap_or_else(|e| panic!("{}: {e}", stored.display())),
        std::fs::read(&p).unwrap_or_else(|e| panic!("{e}"))
    );

    d.kill();
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lines.next(Duration::from_secs(10)), "connect: EPERM");
    assert_eq!(lines.next(Duration::from_secs(10)), "deny child: signal 9");
    let sent = lines.next(Duration::from_secs(30));
    assert!(sent.starts_with("sent: "), "{sent}");
    assert_eq!(lines.next(Duration::from_secs(10)), "waiting");
    std::thread::sleep(Duration::from_millis(300));
    let got = received.load(Ordering::Relaxed);
    // The budget's kill step drops the run's packets once past the limit, in the kernel,
    // with no daemon: at most a packet or two more than the budget gets through.
    assert!(
        got <= BUDGET + 64 * 1024,
        "{got} bytes passed a {BUDGET}-byte budget"
    );

    d.restart();
    // The new daemon took the run over (its byte budget may already have killed it: the
    // first sample after the restart sees the counter past the kill step).
    let adopted: Vec<Value> = d
        .audit()
        .into_iter()
        .filter(|r| r["event"] == "adopted" && r["adopted_run"] == run.as_str())
        .collect();
    assert_eq!(adopted.len(), 1);
    std::fs::write(&done, "").unwrap_or_else(|e| panic!("{e}"));
    let o = wait_output(client, Duration::from_secs(60));
    // The restarted daemon read the policy back, and its file went with the run.
    assert!(!stored.exists(), "{} is left", stored.display());
    let recs = d.audit();
    let end = records(&recs, &run, "run_end");
    assert_eq!(end.len(), 1, "{:#?}", records(&recs, &run, "run_end"));
    // The byte budget's kill step fired once the new daemon sampled the counter: the
    // run's real end is a budget kill (137), which the client reports as it is.
    assert_eq!(
        o.status.code(),
        end[0]["status"].as_i64().map(|c| c as i32),
        "{}",
        stderr(&o)
    );
    assert!(
        end[0]["killed_by"] == "net_egress_bytes" || end[0]["exit_code"] == 7,
        "{:#?}",
        end[0]
    );
    let restarts: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "daemon_start")
        .collect();
    assert_eq!(restarts.len(), 2);
    assert_eq!(restarts[1]["adopted"][0], run.as_str());
    assert!(
        restarts[1]["down_ms"].as_u64().is_some(),
        "{:#?}",
        restarts[1]
    );
    assert_chain_verifies(&d);
}

/// Starts `daemon-probe` as `user` through the daemon (see testprog/daemon.rs): waits for
/// its `ready` line; returns the client, its stdout and the run id.
#[allow(clippy::too_many_arguments)]
fn start_probe(
    d: &TestDaemon,
    user: &TestUser,
    gid: u32,
    home: &std::path::Path,
    policy: &std::path::Path,
    go: &std::path::Path,
    probe: &[String; 4],
    done: &std::path::Path,
) -> (std::process::Child, Lines, String) {
    let mut client = d
        .client_as(user, &[gid], home)
        .arg("run")
        .arg("--policy")
        .arg(policy)
        .arg("--")
        .arg(testprog())
        .arg("daemon-probe")
        .arg(go)
        .args(probe)
        .arg(done)
        .arg("7")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let lines = Lines::of(&mut client);
    assert_eq!(lines.next(Duration::from_secs(30)), "ready");
    let run = run_id_of(&d.audit(), user.uid);
    (client, lines, run)
}

/// A run with no budget across a crash ends with the command's own exit status.
#[test]
fn a_run_across_a_restart_ends_with_its_real_exit_status() {
    let (_g, group) = group("status");
    let mut d = TestDaemon::start(&group);
    let gid = gid_of(&group);
    let user = TestUser::create("status", &[&group]);
    let home = d.home_of(&user);
    let p = d.policy("status.yaml", &policy(&[], None, ""));
    let (go, done) = (home.join("go"), home.join("done"));
    let probe = ["9", "/nonexistent", "9", "0"].map(str::to_owned);
    let (client, lines, run) = start_probe(&d, &user, gid, &home, &p, &go, &probe, &done);
    d.kill();
    std::fs::write(&go, "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lines.next(Duration::from_secs(10)), "connect: EPERM");
    d.restart();
    let ps = d.ps();
    assert!(
        ps.iter()
            .any(|r| r["run"] == run.as_str() && r["adopted"] == true && r["uid"] == user.uid),
        "{ps:#?}"
    );
    std::fs::write(&done, "").unwrap_or_else(|e| panic!("{e}"));
    let o = wait_output(client, Duration::from_secs(60));
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}\n{}\n{:#?}",
        stderr(&o),
        d.log(),
        d.audit()
    );
    let recs = d.audit();
    let end = records(&recs, &run, "run_end");
    assert_eq!(end[0]["exit_code"], 7);
    assert_eq!(end[0]["status"], 7);
}

/// `count` TCP listeners on 127.0.0.1 that accept and drop every connection, by port.
fn loopback_listeners(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0))
        .collect();
    for l in listeners {
        std::thread::spawn(move || for _ in l.incoming() {});
    }
    ports
}

/// `agentd run --user root --policy POLICY -- testprog connect-two OK DENIED` through
/// `d`, its output piped.
fn connect_two(
    d: &TestDaemon,
    policy: &std::path::Path,
    ok: u16,
    denied: u16,
) -> std::process::Child {
    d.client()
        .arg("run")
        .arg("--user")
        .arg("root")
        .arg("--policy")
        .arg(policy)
        .arg("--")
        .arg(testprog())
        .arg("connect-two")
        .arg(ok.to_string())
        .arg(denied.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs of one policy share one table of its net rules in the kernel, which lingers for
/// the next run of that policy; a policy with other rules gets a table of its own.
/// Each run still reaches only what its policy allows.
#[test]
fn runs_of_one_policy_share_its_net_rules() {
    let (_g, group) = group("sharenet");
    let d = TestDaemon::start(&group);
    let ports = loopback_listeners(2);
    let same = d.policy("same.yaml", &policy(&[ports[0]], None, ""));
    let other = d.policy("other.yaml", &policy(&[ports[1]], None, ""));
    let run = |p: &std::path::Path, ok: u16, denied: u16| connect_two(&d, p, ok, denied);
    let expect = |c: std::process::Child, ok: u16, denied: u16| {
        let o = wait_output(c, Duration::from_secs(60));
        assert_status(&o, 0);
        assert_eq!(
            stdout(&o),
            format!("connect {ok}: OK\nconnect {denied}: EPERM\n")
        );
    };
    let idle = || d.status()["idle_net_tables"].as_u64();
    let together: Vec<_> = (0..3).map(|_| run(&same, ports[0], ports[1])).collect();
    for c in together {
        expect(c, ports[0], ports[1]);
    }
    assert_eq!(idle(), Some(1), "three runs of one policy, one table");
    expect(run(&same, ports[0], ports[1]), ports[0], ports[1]);
    assert_eq!(idle(), Some(1), "the next run took the lingering table");
    expect(run(&other, ports[1], ports[0]), ports[1], ports[0]);
    assert_eq!(idle(), Some(2), "other rules, another table");
    let denied = d
        .audit()
        .into_iter()
        .filter(|r| r["event"] == "denied" && r["op"] == "connect")
        .count();
    assert_eq!(denied, 5, "every run's denial is audited");
    // Between the runs the net programs stay on the daemon's empty keeper cgroup (the
    // kernel's keys stay on); the daemon's stop removes it.
    let status = d.status();
    assert!(
        status["kept_cgroup_programs"].as_u64() >= Some(7),
        "{status:#?}"
    );
    let keeper = keeper_dir_of(d.pid());
    assert!(keeper.is_dir(), "{}", keeper.display());
    // SAFETY: kill(2) on the daemon this test started, by pid.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while keeper.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !keeper.exists(),
        "the stopped daemon left {}",
        keeper.display()
    );
}

/// Fifty runs at once, each with its own policy allowing its own loopback port: each
/// reaches its port and not its neighbour's, each is audited under its own id, and once
/// all have ended no map entry, run pin or cgroup of theirs is left.
#[test]
fn fifty_runs_at_once_each_with_its_own_policy() {
    const RUNS: usize = 50;
    let (_g, group) = group("fifty");
    let d = TestDaemon::start(&group);
    let ports = loopback_listeners(RUNS);
    let base = d.status();
    let children: Vec<_> = (0..RUNS)
        .map(|i| {
            let p = d.policy(&format!("p{i}.yaml"), &policy(&[ports[i]], None, ""));
            connect_two(&d, &p, ports[i], ports[(i + 1) % RUNS])
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = wait_output(c, Duration::from_secs(120));
        assert_status(&o, 0);
        assert_eq!(
            stdout(&o),
            format!(
                "connect {}: OK\nconnect {}: EPERM\n",
                ports[i],
                ports[(i + 1) % RUNS]
            ),
            "run {i}"
        );
    }
    let recs = d.audit();
    let starts: Vec<&Value> = recs.iter().filter(|r| r["event"] == "run_start").collect();
    assert_eq!(starts.len(), RUNS);
    let mut ids: Vec<&str> = starts.iter().filter_map(|r| r["run"].as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), RUNS, "every run has its own id");
    for (i, s) in starts.iter().enumerate() {
        let id = s["run"].as_str().unwrap_or_default();
        let denied: Vec<&Value> = records(&recs, id, "denied")
            .into_iter()
            .filter(|r| r["op"] == "connect")
            .collect();
        assert_eq!(denied.len(), 1, "run {i}: {denied:#?}");
        let argv_port: u16 = s["argv"][2]
            .as_str()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let idx = ports
            .iter()
            .position(|p| *p == argv_port)
            .unwrap_or(usize::MAX);
        assert_eq!(denied[0]["port"], ports[(idx + 1) % RUNS], "run {i}");
        let end = records(&recs, id, "run_end");
        assert_eq!(end.len(), 1);
        assert_eq!(end[0]["cgroups_removed"], true);
        for path in end[0]["cgroups"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, p)| p.as_str())
        {
            assert!(!std::path::Path::new(path).exists(), "{path} is left");
        }
    }
    let after = d.status();
    assert_eq!(after["runs"], 0);
    // The net rule tables of the last runs linger too (at most 8), for a run with the
    // same rules soon after; nothing else of theirs is in the maps.
    let idle = after["idle_net_tables"].as_u64().unwrap_or(u64::MAX);
    assert!((1..=8).contains(&idle), "{after:#?}");
    // The global programs linger for `programs_linger_ms` (2 s by default) held by no
    // run, then go.
    let held: Vec<&Value> = after["programs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p[1] != 0)
        .collect();
    assert!(held.is_empty(), "no run holds a program: {after:#?}");
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut programs = after["programs"].clone();
    while programs != serde_json::json!([]) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        programs = d.status()["programs"].clone();
    }
    assert_eq!(
        programs,
        serde_json::json!([]),
        "no global program is left attached once the linger has passed"
    );
    // The reaper detaches and unpins on a thread of its own, so the pins may go a
    // moment after the status stops listing the programs.
    let mut settled = d.status();
    while (settled["map_entries"] != 0 || settled["pinned_objects"] != base["pinned_objects"])
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        settled = d.status();
    }
    assert_eq!(settled["map_entries"], 0, "{settled:#?}");
    assert_eq!(settled["idle_net_tables"], 0, "{settled:#?}");
    assert_eq!(
        settled["pinned_objects"], base["pinned_objects"],
        "run pins and global links are gone: {settled:#?}"
    );
    let runs_pins = std::fs::read_dir(
        std::path::Path::new(after["pin_dir"].as_str().unwrap_or_default()).join("runs"),
    )
    .map(|rd| rd.count())
    .unwrap_or(usize::MAX);
    assert_eq!(runs_pins, 0);
    let policies = std::fs::read_dir(d.state_dir().join("policies"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(policies, 0, "the runs' policy files are gone");
}

/// Garbage, a 100 MB request and a client that sends half a request and stalls each get
/// an error (or are cut off); meanwhile another client is served within 100 ms and the
/// daemon stays up.
#[test]
fn bad_clients_get_errors_and_do_not_hold_up_others() {
    let (_g, group) = group("bad");
    let d = TestDaemon::start(&group);
    let socket = d.socket();
    let answer = |mut s: UnixStream| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let mut garbage = UnixStream::connect(&socket).unwrap_or_else(|e| panic!("{e}"));
    garbage
        .write_all(b"\x00\xffnot json at all\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let got = answer(garbage);
    assert!(
        got.contains(r#""event":"error""#) && got.contains("not UTF-8"),
        "{got}"
    );
    let mut versioned = UnixStream::connect(&socket).unwrap_or_else(|e| panic!("{e}"));
    versioned
        .write_all(b"{\"v\":99,\"op\":\"ps\"}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let got = answer(versioned);
    assert!(
        got.contains("protocol version 99 is not spoken here"),
        "{got}"
    );

    let stall = UnixStream::connect(&socket).unwrap_or_else(|e| panic!("{e}"));
    (&stall)
        .write_all(b"{\"v\":1,\"op\":")
        .unwrap_or_else(|e| panic!("{e}"));
    let big = UnixStream::connect(&socket).unwrap_or_else(|e| panic!("{e}"));
    let big_writer = {
        let mut big = big.try_clone().unwrap_or_else(|e| panic!("{e}"));
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 1 << 20];
            let mut sent = 0usize;
            while sent < 100 << 20 {
                match big.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
            sent
        })
    };
    // Another client, while both bad ones are connected.
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let o = d
            .client()
            .args(["status", "--json"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_status(&o, 0);
        best = best.min(t.elapsed());
    }
    eprintln!("status round trip with bad clients connected: {best:?} (best of 5)");
    assert!(best < Duration::from_millis(100), "{best:?}");
    let sent = big_writer.join().unwrap_or(0);
    assert!(sent < 100 << 20, "the daemon read all of a 100 MB request");
    let got = answer(big);
    assert!(
        got.contains("request is longer than 1048576 bytes"),
        "{got}"
    );
    // The half request is cut off at the deadline with an error.
    let got = answer(stall);
    assert!(got.contains("no whole request within"), "{got}");
    assert_eq!(d.status()["runs"], 0, "the daemon is still up");
}

/// SIGHUP re-reads the config (RELOADING=1, then READY=1, a `daemon_reload` record)
/// and the runs go on.
#[test]
fn sighup_reloads_the_config_without_dropping_runs() {
    let (_g, group) = group("hup");
    let d = TestDaemon::start(&group);
    let p = d.policy("hup.yaml", &policy(&[], None, ""));
    d.run_detached_as_root(&p, &["sleep", "20"]);
    assert_eq!(d.ps().len(), 1);
    let cfg = std::fs::read_to_string(d.config_path()).unwrap_or_default();
    std::fs::write(
        d.config_path(),
        cfg.replace(
            "client_grace_secs: 30",
            "client_grace_secs: 31\nmax_request_bytes: 4096",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let before = d.notified.lock().map(|v| v.len()).unwrap_or(0);
    // SAFETY: signalling the daemon this test started, by its pid.
    unsafe { libc::kill(d.pid() as libc::pid_t, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let msgs: Vec<String> = d
            .notified
            .lock()
            .map(|v| v[before..].to_vec())
            .unwrap_or_default();
        let lines: Vec<&str> = msgs.iter().flat_map(|m| m.lines()).collect();
        if let (Some(r), Some(y)) = (
            lines.iter().position(|l| *l == "RELOADING=1"),
            lines.iter().rposition(|l| *l == "READY=1"),
        ) {
            assert!(r < y, "{lines:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no RELOADING=1 then READY=1: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let recs = d.audit();
    let reload: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "daemon_reload")
        .collect();
    assert_eq!(reload.len(), 1);
    assert_eq!(d.ps().len(), 1, "the run goes on");
    // The new request limit applies: a 5000-byte request is too long now.
    let mut s = UnixStream::connect(d.socket()).unwrap_or_else(|e| panic!("{e}"));
    let long = format!(
        "{{\"v\":1,\"op\":\"stop\",\"run\":\"{}\"}}\n",
        "x".repeat(5000)
    );
    let _ = s.write_all(long.as_bytes());
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert!(got.contains("request is longer than 4096 bytes"), "{got}");
}

/// The parent pid of `pid`, from `/proc/PID/stat`.
fn ppid_of(pid: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
}

/// The daemon is its runs' child subreaper: a setsid'd, double-forked descendant is
/// reparented to the daemon (not init), and when a budget kills the run and the client
/// returns, neither it nor the command exists any more, not even as a zombie.
///
/// An orphan that exits while its run goes on is reaped then, not left a zombie of the
/// daemon until the run ends.
#[test]
fn nothing_of_a_daemon_run_outlives_it_not_even_a_zombie() {
    let (_g, group) = group("reap");
    let d = TestDaemon::start(&group);
    let p = d.policy(
        "reap.yaml",
        &policy(&[], None, "budgets:\n  wall_time: 4s\n"),
    );
    let mut child = d
        .client()
        .args(["run", "--user", "root", "--policy"])
        .arg(&p)
        .arg("--")
        .arg(testprog())
        .args(["orphan-sleep", "60", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the client: {e}"));
    let lines = Lines::of(&mut child);
    let mut pids = Vec::new();
    for want in ["orphan", "command"] {
        let line = lines.next(Duration::from_secs(30));
        let pid: i32 = line
            .strip_prefix(want)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("expected `{want} PID`, got {line:?}"));
        pids.push(pid);
    }
    // The orphan's parent died: it now belongs to the daemon, the subreaper.
    assert_eq!(ppid_of(pids[0]), Some(d.pid()), "the orphan's parent");
    // The orphan exits after 1 s; the daemon reaps it while the command still runs.
    let reaped_mid_run = (0..150).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        !std::path::Path::new(&format!("/proc/{}", pids[0])).exists()
    });
    assert!(
        reaped_mid_run,
        "the orphan that exited is still there: {:?}",
        std::fs::read_to_string(format!("/proc/{}/stat", pids[0]))
    );
    assert_eq!(ppid_of(pids[1]), Some(d.pid()), "the command runs on");
    let o = wait_output(child, Duration::from_secs(30));
    assert_status(&o, 137);
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} of the run still exists after the client returned: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );
    }
    let recs = d.audit();
    let run = run_id_of(&recs, 0);
    assert_eq!(records(&recs, &run, "run_end")[0]["killed_by"], "wall_time");
}
