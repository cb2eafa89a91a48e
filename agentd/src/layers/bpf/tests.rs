//! Tests against the real kernel. They need root and the eBPF object.
//!
//! Without either they are skipped with a loud `SKIP` line, unless CI pins
//! `AGENTD_EXPECT_TP_BTF=1` (see `.ci/run`), in which case they fail: a suite must not go
//! green by skipping. `AGENTD_EXPECT_BPF_LSM` (default `0`, as on the project's build
//! machine, where BPF LSM programs get EPERM) and `AGENTD_EXPECT_CGROUP_BPF` (default `1`)
//! pin what the probes must report; set `AGENTD_EXPECT_BPF_LSM=1` on a kernel that loads
//! BPF LSM (e.g. the Debian QEMU image).
//!
//! Safety rules for the machine: only v2 cgroups this test creates itself, under
//! `/sys/fs/cgroup/unified`, are used and removed; only children spawned here are moved.

use std::{
    fs::{File, OpenOptions},
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _},
        unix::process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use super::*;
use crate::events::Event;

const V2_ROOT: &str = "/sys/fs/cgroup/unified";
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A CI pin: `Some(value)` when set and non-empty.
fn expect(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// `true` if the privileged test may run; `false` (after a SKIP line) if not.
fn privileged(test: &str) -> bool {
    let required = expect("AGENTD_EXPECT_TP_BTF").is_some_and(|v| v == "1");
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let reason = if !root {
        Some("needs root".to_owned())
    } else if EBPF_OBJECT.is_empty() {
        Some(BpfError::NotBuilt.to_string())
    } else if !Path::new(V2_ROOT).join("cgroup.procs").exists() {
        Some(format!("no cgroup2 hierarchy at {V2_ROOT}"))
    } else {
        None
    };
    match reason {
        None => true,
        Some(reason) if required => panic!("{test}: {reason}, but AGENTD_EXPECT_TP_BTF=1"),
        Some(reason) => {
            eprintln!("SKIP {test}: {reason} (AGENTD_EXPECT_TP_BTF=1 makes this a failure)");
            false
        }
    }
}

/// A v2 cgroup created by the test and removed on drop.
struct TestCgroup {
    path: PathBuf,
    procs: File,
}

impl TestCgroup {
    fn create() -> io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(V2_ROOT).join(format!("agentd-test-{}-{n}", std::process::id()));
        std::fs::create_dir(&path)?;
        let procs = match OpenOptions::new()
            .write(true)
            .open(path.join("cgroup.procs"))
        {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                return Err(e);
            }
        };
        Ok(Self { path, procs })
    }

    fn id(&self) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&self.path).unwrap())
    }

    /// A command whose child joins this cgroup between fork and exec.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let fd = self.procs.as_raw_fd();
        let mut command = Command::new(program);
        command.args(args);
        // Writing "0" to cgroup.procs moves the calling process (the child) only.
        // SAFETY: the closure only calls write(2) on an fd opened by the parent (no
        // allocation, no locks), which is async-signal-safe after fork.
        unsafe {
            command.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        command
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Children were waited for, so the cgroup is empty; retry briefly in case the
        // kernel is still releasing a just-reaped task.
        for _ in 0..50 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!(
            "warning: could not remove test cgroup {}",
            self.path.display()
        );
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Waits for the `Exit` of `tgid`, returning every event seen until then.
async fn until_exit(stream: &mut EventStream, tgid: u32) -> Vec<Event> {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Some(event) = stream.next().await {
            let done = matches!(event, Event::Exit { tgid: t, .. } if t == tgid);
            seen.push(event);
            if done {
                return;
            }
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "no exit event for {tgid} within {EVENT_TIMEOUT:?}; saw {seen:#?}"
    );
    seen
}

#[test]
fn exec_and_exit_events_of_a_watched_cgroup() {
    if !privileged("exec_and_exit_events_of_a_watched_cgroup") {
        return;
    }
    let cgroup = TestCgroup::create().unwrap();
    let started = std::time::Instant::now();
    let mut runtime = BpfRuntime::load().unwrap();
    let run = runtime.register(cgroup.id(), "events").unwrap();
    let slot = run.slot();
    eprintln!("load + register: {:?}", started.elapsed());

    let rt = rt();
    rt.block_on(async {
        let mut stream = runtime.take_events().unwrap();
        assert!(matches!(runtime.take_events(), Err(BpfError::EventsTaken)));

        // exit(0)
        let mut child = cgroup.command("/bin/true", &[]).spawn().unwrap();
        let pid = child.id();
        assert!(child.wait().unwrap().success());
        let events = until_exit(&mut stream, pid).await;
        let exec = events
            .iter()
            .find(|e| matches!(e, Event::Exec { tgid, .. } if *tgid == pid))
            .unwrap_or_else(|| panic!("no exec event for {pid}: {events:#?}"));
        let Event::Exec {
            pid: exec_pid,
            ppid,
            run_slot,
            cgroup_id: exec_cgroup,
            ktime_ns,
            uid,
            comm,
            filename,
            ..
        } = exec
        else {
            unreachable!()
        };
        assert_eq!(*exec_pid, pid);
        assert_eq!(*ppid, std::process::id());
        assert_eq!(*run_slot, slot);
        assert_eq!(*exec_cgroup, cgroup.id());
        assert!(*ktime_ns > 0);
        assert_eq!(*uid, 0);
        assert_eq!(comm, "true");
        assert_eq!(filename, "/bin/true");
        let exit = events.last().unwrap();
        let Event::Exit {
            pid: exit_pid,
            tgid: exit_tgid,
            run_slot: exit_slot,
            cgroup_id: exit_cgroup,
            ktime_ns: exit_ktime,
            exit_code,
        } = exit
        else {
            panic!("last event is not an exit: {events:#?}");
        };
        assert_eq!((*exit_pid, *exit_tgid), (pid, pid));
        assert_eq!(*exit_slot, slot);
        assert_eq!(*exit_cgroup, cgroup.id());
        assert!(*exit_ktime >= *ktime_ns);
        assert_eq!(*exit_code, 0);

        // exit(3): the raw wait status is 3 << 8.
        let mut child = cgroup.command("/bin/sh", &["-c", "exit 3"]).spawn().unwrap();
        let pid = child.id();
        assert_eq!(child.wait().unwrap().code(), Some(3));
        let events = until_exit(&mut stream, pid).await;
        assert!(
            matches!(events.last(), Some(Event::Exit { exit_code: 0x300, .. })),
            "{events:#?}"
        );

        // Killed by SIGKILL: the wait status is the signal number.
        let mut child = cgroup
            .command("/bin/sh", &["-c", "kill -KILL $$"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
        let events = until_exit(&mut stream, pid).await;
        assert!(
            matches!(events.last(), Some(Event::Exit { exit_code, .. }) if *exit_code == libc::SIGKILL),
            "{events:#?}"
        );

        // Released: nothing more arrives. A process outside the cgroup is never seen.
        runtime.release(run, false);
        assert_eq!(runtime.entries_of(slot, cgroup.id()), 0);
        assert!(runtime.status().globals.is_empty(), "{:?}", runtime.status());
        let mut child = cgroup.command("/bin/true", &[]).spawn().unwrap();
        assert!(child.wait().unwrap().success());
        let mut outside = Command::new("/bin/true").spawn().unwrap();
        assert!(outside.wait().unwrap().success());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rest = stream.drain();
        assert!(rest.is_empty(), "events after unwatch: {rest:#?}");
        assert_eq!(stream.malformed(), 0);
    });
    assert_eq!(runtime.dropped().unwrap(), 0);
}

/// A full ring buffer loses records, and every lost record is counted in `DROPPED`.
#[test]
fn full_ring_counts_every_drop() {
    if !privileged("full_ring_counts_every_drop") {
        return;
    }
    const PROCESSES: u64 = 20;
    let cgroup = TestCgroup::create().unwrap();
    // One page holds about 12 exec records; 20 processes produce 40 records.
    let mut runtime = BpfRuntime::load_with_ring(4096).unwrap();
    let _run = runtime.register(cgroup.id(), "ring").unwrap();
    for _ in 0..PROCESSES {
        let mut child = cgroup.command("/bin/true", &[]).spawn().unwrap();
        assert!(child.wait().unwrap().success());
    }
    let dropped = runtime.dropped().unwrap();
    let rt = rt();
    let delivered = rt.block_on(async { runtime.take_events().unwrap().drain().len() as u64 });
    eprintln!("delivered {delivered}, dropped {dropped}");
    assert!(dropped > 0);
    assert_eq!(delivered + dropped, 2 * PROCESSES);
}

#[test]
fn multi_threaded_process_reports_one_exit() {
    if !privileged("multi_threaded_process_reports_one_exit") {
        return;
    }
    let cgroup = TestCgroup::create().unwrap();
    let mut runtime = BpfRuntime::load().unwrap();
    let _run = runtime.register(cgroup.id(), "threads").unwrap();
    let rt = rt();
    rt.block_on(async {
        let mut stream = runtime.take_events().unwrap();
        // The test binary itself, re-run as a helper: it starts threads, then exits 5
        // from a non-main thread (exit_group from a thread that is not the leader).
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let mut child = cgroup
            .command(
                exe,
                &[
                    "--exact",
                    "layers::bpf::tests::helper_threads_then_exit",
                    "--nocapture",
                ],
            )
            .env("AGENTD_TEST_HELPER", "threads")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert_eq!(child.wait().unwrap().code(), Some(5));
        let events = until_exit(&mut stream, pid).await;
        let exits: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, Event::Exit { .. }))
            .collect();
        assert_eq!(exits.len(), 1, "{events:#?}");
        assert!(matches!(exits[0], Event::Exit { exit_code: 0x500, tgid, .. } if *tgid == pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let late: Vec<_> = stream
            .drain()
            .into_iter()
            .filter(|e| matches!(e, Event::Exit { .. }))
            .collect();
        assert!(late.is_empty(), "more than one exit per process: {late:#?}");
    });
}

/// The runs holding the `sys_exit` program (`None`: it is not attached).
fn sys_exit_runs(status: &RuntimeStatus) -> Option<u32> {
    status
        .globals
        .iter()
        .find(|(n, _)| n == agentd_common::syscalls::names::PROG_SYS_EXIT)
        .map(|(_, runs)| *runs)
}

/// 127.0.0.1:`port`/tcp.
fn loopback_rule(port: u16) -> AddrRule {
    AddrRule {
        addr: std::net::Ipv4Addr::LOCALHOST.into(),
        prefix: 32,
        ports: (port, port),
        protos: crate::layers::bpf::proto_bits(true, false),
        written: format!("127.0.0.1:{port}/tcp"),
    }
}

/// Connect rules for `count` hosts 10.`net`.x.y, port 443/tcp: one trie entry each.
fn many_hosts(net: u8, count: u16) -> NetRequest {
    let rules = (0..count)
        .map(|i| AddrRule {
            addr: std::net::Ipv4Addr::new(10, net, (i / 250) as u8, (i % 250) as u8).into(),
            prefix: 32,
            ports: (443, 443),
            protos: crate::layers::bpf::proto_bits(true, false),
            written: format!("10.{net}.{}.{}:443/tcp", i / 250, i % 250),
        })
        .collect();
    NetRequest {
        connect: Some(rules),
        ..NetRequest::default()
    }
}

/// One runtime serves several runs: each gets its own slot, the global programs are
/// attached once and stay while any run needs them, and releasing a run removes every
/// entry it made (net tries included: by the keys it wrote, or by a scan when they are
/// not known) and, with the last run, every global program.
#[test]
fn one_runtime_serves_many_runs_and_release_leaves_nothing() {
    if !privileged("one_runtime_serves_many_runs_and_release_leaves_nothing") {
        return;
    }
    let a = TestCgroup::create().unwrap();
    let b = TestCgroup::create().unwrap();
    let mut runtime = BpfRuntime::load().unwrap();
    assert!(
        runtime.status().globals.is_empty(),
        "nothing attached before a run"
    );
    let mut run_a = runtime.register(a.id(), "a").unwrap();
    let mut run_b = runtime.register(b.id(), "b").unwrap();
    assert_ne!(run_a.slot(), run_b.slot());
    let request = NetRequest {
        connect: Some(vec![loopback_rule(9001), loopback_rule(9002)]),
        ..NetRequest::default()
    };
    runtime.enforce_net(&mut run_a, &a.path, &request).unwrap();
    // More entries than one batch of the clear's lookup (256) holds, so that releasing
    // a pages through b's entries and must leave every one of them.
    let request_b = many_hosts(9, 600);
    runtime
        .enforce_net(&mut run_b, &b.path, &request_b)
        .unwrap();
    let b_entries = runtime.entries_of(run_b.slot(), b.id());
    assert!(
        b_entries >= 602,
        "600 trie entries, cgroup, NET_RUNS: {b_entries}"
    );
    let status = runtime.status();
    assert_eq!(status.runs, 2);
    assert_eq!(sys_exit_runs(&status), Some(2), "{status:?}");
    assert!(
        runtime.entries_of(run_a.slot(), a.id()) >= 3,
        "cgroup, NET_RUNS, a trie entry"
    );
    let (slot_a, slot_b) = (run_a.slot(), run_b.slot());
    runtime.release(run_a, false);
    assert_eq!(runtime.entries_of(slot_a, a.id()), 0);
    assert_eq!(
        runtime.entries_of(slot_b, b.id()),
        b_entries,
        "b is untouched"
    );
    assert_eq!(runtime.status().runs, 1);
    // a's release removed the table it held; b's own keys go as a re-adopted run's
    // (or one with a resolver), which are not known: by a scan of the tries.
    assert!(run_b.net_keys.is_some());
    run_b.net_keys = None;
    runtime.release(run_b, false);
    assert_eq!(runtime.entries_of(slot_b, b.id()), 0);
    let status = runtime.status();
    assert!(status.globals.is_empty(), "{status:?}");
    assert_eq!(status.hook_bits, 0);
}

/// The one `sys_exit` program is verified within a bounded amount of the verifier's
/// work: its instruction count after verification (`verified_insns`), which is what
/// every standalone launch waits for. It was 240k while the mprotect check's loop body
/// was inlined; the global `agentd_mprotect_step` brought it to about 45k.
/// Runs whose policies have the same net rules point at one shared rule table: the
/// second run writes no trie entry, the table stays while either holds it, goes with
/// the last one (no linger), or lingers for the next run of the same rules and then goes.
#[test]
fn runs_with_the_same_net_rules_share_one_table() {
    if !privileged("runs_with_the_same_net_rules_share_one_table") {
        return;
    }
    let cgroups: Vec<TestCgroup> = (0..4).map(|_| TestCgroup::create().unwrap()).collect();
    let mut runtime = BpfRuntime::load().unwrap();
    let base = runtime.entries_total();
    let request = many_hosts(8, 300);
    let mut a = runtime.register(cgroups[0].id(), "a").unwrap();
    let mut b = runtime.register(cgroups[1].id(), "b").unwrap();
    runtime
        .enforce_net(&mut a, &cgroups[0].path, &request)
        .unwrap();
    let with_a = runtime.entries_total();
    assert!(with_a >= base + 300, "{base} → {with_a}");
    runtime
        .enforce_net(&mut b, &cgroups[1].path, &request)
        .unwrap();
    assert_eq!(
        runtime.entries_total(),
        with_a + 1,
        "b adds its NET_RUNS entry only"
    );
    assert_eq!(a.net_table, b.net_table);
    let b_entries = runtime.entries_of(b.slot(), cgroups[1].id());
    runtime.release(a, false);
    assert_eq!(
        runtime.entries_of(b.slot(), cgroups[1].id()),
        b_entries,
        "b keeps the table"
    );
    runtime.release(b, false);
    assert_eq!(runtime.entries_total(), base, "no linger: it went with b");
    assert_eq!(runtime.status().idle_net_tables, 0);

    runtime.set_programs_linger(std::time::Duration::from_secs(60));
    let mut c = runtime.register(cgroups[2].id(), "c").unwrap();
    runtime
        .enforce_net(&mut c, &cgroups[2].path, &request)
        .unwrap();
    let table = c.net_table;
    runtime.release(c, false);
    assert_eq!(runtime.status().idle_net_tables, 1);
    assert!(runtime.entries_total() >= base + 300, "it lingers");
    let mut d = runtime.register(cgroups[3].id(), "d").unwrap();
    let lingering = runtime.entries_total();
    runtime
        .enforce_net(&mut d, &cgroups[3].path, &request)
        .unwrap();
    assert_eq!(
        d.net_table, table,
        "the next run of the same rules takes it"
    );
    assert_eq!(runtime.entries_total(), lingering + 1);
    runtime.release(d, false);
    runtime.reap_idle_programs(true);
    runtime.wait_detached();
    assert_eq!(runtime.status().idle_net_tables, 0);
    assert_eq!(runtime.entries_total(), base);
}

/// With a linger, the first run's cgroup programs are also attached to the keeper
/// cgroup, which holds them past the run (the kernel's keys stay on), lets them go with
/// the lingering global programs, and is removed with the runtime.
#[test]
fn the_keeper_cgroup_holds_the_cgroup_programs_between_runs() {
    if !privileged("the_keeper_cgroup_holds_the_cgroup_programs_between_runs") {
        return;
    }
    let parent = TestCgroup::create().unwrap();
    let run_cgroup = TestCgroup::create().unwrap();
    let mut runtime = BpfRuntime::load().unwrap();
    runtime.set_programs_linger(std::time::Duration::from_secs(60));
    runtime.keep_cgroup_keys(&parent.path);
    let keeper = keeper::keeper_dir(&parent.path);
    let mut run = runtime.register(run_cgroup.id(), "kept").unwrap();
    let request = NetRequest {
        connect: Some(vec![loopback_rule(9001)]),
        ..NetRequest::default()
    };
    runtime
        .enforce_net(&mut run, &run_cgroup.path, &request)
        .unwrap();
    let kept = runtime.status().kept_cgroup_programs;
    assert_eq!(kept, progs::NET.len(), "every net program, once");
    assert!(keeper.is_dir());
    runtime.release(run, false);
    assert_eq!(
        runtime.status().kept_cgroup_programs,
        kept,
        "kept past the run"
    );
    let mut again = runtime.register(run_cgroup.id(), "again").unwrap();
    runtime
        .enforce_net(&mut again, &run_cgroup.path, &request)
        .unwrap();
    assert_eq!(runtime.status().kept_cgroup_programs, kept, "not twice");
    runtime.release(again, false);
    runtime.reap_idle_programs(true);
    runtime.wait_detached();
    assert_eq!(runtime.status().kept_cgroup_programs, 0);
    drop(runtime);
    assert!(!keeper.exists(), "the keeper cgroup goes with the runtime");
}

/// The probes and the runtime share one loader (one parse of the kernel BTF by aya):
/// a runtime loaded after a probe has its maps at their full sizes again.
#[test]
fn a_runtime_loaded_after_the_probes_has_full_size_maps() {
    if !privileged("a_runtime_loaded_after_the_probes_has_full_size_maps") {
        return;
    }
    let sizes = object_map_sizes().unwrap();
    assert_eq!(sizes.len(), PROBE_SHRUNK_MAPS.len());
    assert!(sizes.iter().all(|(_, n)| *n > 1), "{sizes:?}");
    probe::probe_tp_btf().unwrap();
    let cgroups: Vec<TestCgroup> = (0..3).map(|_| TestCgroup::create().unwrap()).collect();
    let mut runtime = BpfRuntime::load().unwrap();
    let runs: Vec<RunBpf> = cgroups
        .iter()
        .enumerate()
        .map(|(i, c)| runtime.register(c.id(), &format!("full{i}")).unwrap())
        .collect();
    assert_eq!(
        runtime.status().runs,
        3,
        "RUN_CGROUPS holds more than one entry"
    );
    for r in runs {
        runtime.release(r, false);
    }
}

#[test]
fn the_sys_exit_program_verifies_within_its_budget() {
    if !privileged("the_sys_exit_program_verifies_within_its_budget") {
        return;
    }
    let mut runtime = BpfRuntime::load().unwrap();
    runtime.preload(&[progs::SYS_EXIT], false).unwrap();
    let fd = runtime
        .ebpf
        .program(agentd_common::syscalls::names::PROG_SYS_EXIT)
        .unwrap()
        .fd()
        .unwrap()
        .as_fd()
        .as_raw_fd();
    let verified = verified_insns(fd);
    assert!(
        verified < 80_000,
        "sys_exit took {verified} verified instructions"
    );
}

/// The cgroup fallback's unix programs check the path word by word, without a branch per
/// byte: each verifies in about 10k instructions (56k with a compare per byte).
#[test]
fn the_unix_cgroup_programs_verify_within_their_budget() {
    if !privileged("the_unix_cgroup_programs_verify_within_their_budget") {
        return;
    }
    let mut runtime = BpfRuntime::load().unwrap();
    runtime.preload(&[], true).unwrap();
    let progs = runtime.unix.loaded_cgroup_progs().unwrap();
    for prog in progs {
        let verified = verified_insns(prog.as_raw_fd());
        assert!(
            verified < 20_000,
            "a unix cgroup program took {verified} verified instructions"
        );
    }
}

/// `verified_insns` of the program behind `fd` of this process.
fn verified_insns(fd: std::os::fd::RawFd) -> u64 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("verified_insns:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap()
}

/// With a linger, a global program no run holds stays attached (0 runs) until the
/// linger has passed, a run registered meanwhile takes it over as it is, and the
/// daemon's stop (`all_idle`) detaches what is idle at once.
#[test]
fn idle_global_programs_linger_then_go() {
    if !privileged("idle_global_programs_linger_then_go") {
        return;
    }
    let a = TestCgroup::create().unwrap();
    let mut runtime = BpfRuntime::load().unwrap();
    runtime.set_programs_linger(std::time::Duration::from_millis(300));
    let sys_exit = |rt: &BpfRuntime| sys_exit_runs(&rt.status());
    let run = runtime.register(a.id(), "a").unwrap();
    assert_eq!(sys_exit(&runtime), Some(1));
    runtime.release(run, false);
    assert_eq!(sys_exit(&runtime), Some(0), "lingering, held by no run");
    assert_eq!(runtime.status().hook_bits, 0, "no run's hooks are on");
    assert!(runtime.reap_idle_programs(false).is_empty(), "too soon");
    let run = runtime.register(a.id(), "a").unwrap();
    assert_eq!(
        sys_exit(&runtime),
        Some(1),
        "taken over, not attached again"
    );
    runtime.release(run, false);
    std::thread::sleep(std::time::Duration::from_millis(350));
    // The runtime's rings hold the exec/exit trackers' link fds: count the raw
    // tracepoint links this process holds before and after the reap.
    let links = || {
        std::fs::read_dir("/proc/self/fdinfo")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|t| {
                    t.contains("link_type:\ttracing") || t.contains("link_type:\traw_tracepoint")
                })
            })
            .count()
    };
    let before = links();
    let reaped = runtime.reap_idle_programs(false);
    assert!(
        reaped.contains(&agentd_common::syscalls::names::PROG_SYS_EXIT),
        "{reaped:?}"
    );
    assert!(
        runtime.status().globals.is_empty(),
        "{:?}",
        runtime.status()
    );
    // Detached on the reaper's thread.
    runtime.wait_detached();
    assert!(links() < before, "the links are closed: {before} before");
    let run = runtime.register(a.id(), "a").unwrap();
    runtime.release(run, false);
    assert_eq!(sys_exit(&runtime), Some(0));
    runtime.reap_idle_programs(true);
    assert!(
        runtime.status().globals.is_empty(),
        "{:?}",
        runtime.status()
    );
}

/// A pinned runtime leaves its maps and global links in bpffs when it goes (the daemon
/// restarting): the next runtime on the same directory reuses the maps, adopts the run
/// and its links, and releasing the run removes its pins.
#[test]
fn a_pinned_runtime_survives_its_process_and_is_adopted() {
    if !privileged("a_pinned_runtime_survives_its_process_and_is_adopted") {
        return;
    }
    let cgroup = TestCgroup::create().unwrap();
    let other = TestCgroup::create().unwrap();
    let request = |port| NetRequest {
        connect: Some(vec![loopback_rule(port)]),
        ..NetRequest::default()
    };
    let scratch = tempfile::tempdir().unwrap();
    let bpffs = scratch.path().join("bpffs");
    let root = bpffs.join("agentd");
    let options = LoadOptions {
        pin_root: Some(root.clone()),
        ..LoadOptions::default()
    };
    let state = {
        let mut runtime = BpfRuntime::load_with(&options).unwrap();
        runtime.set_programs_linger(std::time::Duration::from_secs(60));
        let mut run = runtime.register(cgroup.id(), "pinned").unwrap();
        runtime
            .enforce_net(&mut run, &cgroup.path, &request(9001))
            .unwrap();
        // A run of other rules ended: its table lingers when the daemon goes.
        let mut gone = runtime.register(other.id(), "gone").unwrap();
        runtime
            .enforce_net(&mut gone, &other.path, &request(9002))
            .unwrap();
        runtime.release(gone, false);
        assert_eq!(runtime.status().idle_net_tables, 1);
        let state = run.state();
        assert!(state.pin_dir.is_some());
        runtime.keep_pinned();
        std::mem::forget(run);
        state
    };
    let dir = root.join(pins::object_id(EBPF_OBJECT));
    assert!(dir.join("maps").join(names::MAP_RUN_CGROUPS).exists());
    let link = dir
        .join("links")
        .join(agentd_common::syscalls::names::PROG_SYS_EXIT);
    assert!(link.exists(), "the sys_exit link stays pinned");
    let mut runtime = BpfRuntime::load_with(&options).unwrap();
    // The pinned RUN_CGROUPS still maps the cgroup to its slot.
    assert!(runtime.entries_of(state.slot, cgroup.id()) >= 1);
    let run = runtime.adopt(&state).unwrap();
    assert!(runtime.adopt(&state).is_err(), "a slot is adopted once");
    assert!(run.net_table.is_some(), "it holds its shared table again");
    let held = runtime.entries_total();
    runtime.settle(&["pinned".to_owned()]).unwrap();
    assert_eq!(
        runtime.entries_total(),
        held - 1,
        "the earlier daemon's lingering table is swept, the held one kept"
    );
    assert!(runtime.entries_of(state.slot, cgroup.id()) >= 3);
    runtime.release(run, false);
    assert!(
        !link.exists(),
        "the last run's release unpins the global links"
    );
    assert_eq!(runtime.entries_of(state.slot, cgroup.id()), 0);
    drop(runtime);
    let _ = nix::mount::umount(&bpffs);
}

/// Helper process for `multi_threaded_process_reports_one_exit` (inert in normal runs).
#[test]
fn helper_threads_then_exit() {
    if std::env::var_os("AGENTD_TEST_HELPER").is_none_or(|v| v != "threads") {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    for _ in 0..3 {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _keep = tx;
            std::thread::sleep(Duration::from_secs(60));
        });
    }
    std::thread::spawn(|| std::process::exit(5));
    let _ = rx.recv_timeout(Duration::from_secs(30));
    std::process::exit(1);
}

#[test]
fn probes_match_this_kernel() {
    if !privileged("probes_match_this_kernel") {
        return;
    }
    let tp_btf = probe_tp_btf();
    eprintln!("probe_tp_btf: {tp_btf:?}");
    if expect("AGENTD_EXPECT_TP_BTF").unwrap_or_else(|| "1".to_owned()) == "1" {
        assert_eq!(tp_btf, Ok(()));
    } else {
        assert!(tp_btf.unwrap_err().contains("tp_btf/sched_process_"));
    }

    let lsm = probe_bpf_lsm();
    eprintln!("probe_bpf_lsm: {lsm:?}");
    if expect("AGENTD_EXPECT_BPF_LSM").unwrap_or_else(|| "0".to_owned()) == "1" {
        assert_eq!(lsm, Ok(()));
    } else {
        // The kernel's reason, naming the program: on the build machine exactly
        // "load lsm/file_open: Operation not permitted (os error 1)".
        let err = lsm.unwrap_err();
        assert!(
            err.starts_with("load lsm/file_open: ") && err.contains("(os error "),
            "{err}"
        );
    }

    let cgroup = TestCgroup::create().unwrap();
    let cgroup_bpf = probe_cgroup_bpf(&cgroup.path);
    eprintln!("probe_cgroup_bpf: {cgroup_bpf:?}");
    if expect("AGENTD_EXPECT_CGROUP_BPF").unwrap_or_else(|| "1".to_owned()) == "1" {
        assert_eq!(cgroup_bpf, Ok(()));
    } else {
        assert!(cgroup_bpf.unwrap_err().contains("cgroup/connect4"));
    }
    let missing = cgroup.path.join("does-not-exist");
    let err = probe_cgroup_bpf(&missing).unwrap_err();
    assert!(
        err.starts_with("cgroup ") && err.contains("does-not-exist"),
        "{err}"
    );
}

#[test]
fn error_messages_name_the_program() {
    let err = BpfError::Attach {
        section: section::SCHED_PROCESS_EXEC,
        error: ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_raw_tracepoint_open",
            io_error: io::Error::from_raw_os_error(libc::EPERM),
        }),
    };
    assert_eq!(
        err.to_string(),
        "attach tp_btf/sched_process_exec: bpf_raw_tracepoint_open: Operation not permitted (os error 1)"
    );
    assert_eq!(
        BpfError::NotBuilt.to_string(),
        "agentd was built without its eBPF object (AYA_BUILD_SKIP=1)"
    );
    let err = map_error(
        "read",
        agentd_common::names::MAP_DROPPED,
        MapError::KeyNotFound,
    );
    assert_eq!(err.to_string(), "read map DROPPED: key not found");
}

/// The `.BTF` section of the embedded object (a minimal ELF64 little-endian reader).
fn object_btf(object: &[u8]) -> &[u8] {
    let u16_at = |o: usize| u16::from_le_bytes(object[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(object[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(object[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&object[..4], b"\x7fELF");
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let names = u64_at(header(shstrndx) + 24);
    (0..shnum)
        .find_map(|i| {
            let name = &object[names + u32_at(header(i))..];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap()];
            (name == b".BTF").then(|| {
                let (offset, size) = (u64_at(header(i) + 24), u64_at(header(i) + 32));
                &object[offset..offset + size]
            })
        })
        .expect("no .BTF section in the eBPF object")
}

/// Tetragon's "alignchecker": the `.rodata` struct the loader writes must have the layout
/// the eBPF object was compiled with. (The ring-buffer records are pinned by the const
/// asserts in agentd-common, which are evaluated when compiling for the BPF target too.)
#[test]
fn object_was_built_with_this_kernel_offsets_layout() {
    if EBPF_OBJECT.is_empty() {
        if expect("AGENTD_EXPECT_TP_BTF").is_some_and(|v| v == "1") {
            panic!("{}", BpfError::NotBuilt);
        }
        eprintln!(
            "SKIP object_was_built_with_this_kernel_offsets_layout: {}",
            BpfError::NotBuilt
        );
        return;
    }
    use agentd_common::KernelOffsets;
    use core::mem::{offset_of, size_of};
    let btf = btf::KernelBtf::parse(object_btf(EBPF_OBJECT)).unwrap();
    let member = |name: &str| btf.member("KernelOffsets", name).unwrap();
    for (name, offset) in [
        (
            "task_real_parent",
            offset_of!(KernelOffsets, task_real_parent),
        ),
        ("task_tgid", offset_of!(KernelOffsets, task_tgid)),
        ("task_exit_code", offset_of!(KernelOffsets, task_exit_code)),
        (
            "task_group_leader",
            offset_of!(KernelOffsets, task_group_leader),
        ),
        ("task_signal", offset_of!(KernelOffsets, task_signal)),
        ("signal_flags", offset_of!(KernelOffsets, signal_flags)),
        (
            "signal_group_exit_code",
            offset_of!(KernelOffsets, signal_group_exit_code),
        ),
        (
            "binprm_filename",
            offset_of!(KernelOffsets, binprm_filename),
        ),
        (
            "exit_has_group_dead",
            offset_of!(KernelOffsets, exit_has_group_dead),
        ),
        (
            "task_seccomp_mode",
            offset_of!(KernelOffsets, task_seccomp_mode),
        ),
        (
            "task_thread_status",
            offset_of!(KernelOffsets, task_thread_status),
        ),
        ("valid", offset_of!(KernelOffsets, valid)),
    ] {
        assert_eq!(
            member(name),
            btf::Member {
                offset: offset as u32,
                size: 4
            },
            "{name}"
        );
    }
    let last = member("valid");
    assert_eq!(
        (last.offset + last.size) as usize,
        size_of::<KernelOffsets>()
    );
}

/// The path-operation LSM hooks of this kernel take the arguments `fs_ops.rs` reads
/// (the functions exist wherever the kernel is built with BPF LSM, loadable or not).
#[test]
fn fs_ops_hook_prototypes_match_this_kernel() {
    let raw = match btf::read_vmlinux() {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("SKIP: fs_ops_hook_prototypes_match_this_kernel: {e}");
            return;
        }
    };
    let kernel = btf::KernelBtf::parse(&raw).unwrap();
    if kernel.func_args("bpf_lsm_file_open").unwrap().is_none() {
        eprintln!("SKIP: fs_ops_hook_prototypes_match_this_kernel: kernel built without BPF LSM");
        return;
    }
    fsrules::fs_ops_prototypes(&kernel).unwrap();
}
