//! The daemon's memory: its resident set idle, with many runs, and after a flood of
//! audited events (it must stay flat: nothing per event is kept).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bench_tools::{start_daemon, terminate, Env};

/// Sizes of one measurement.
pub struct Params {
    /// Sleeping runs at once.
    pub runs: usize,
    /// Denied opens of the flood (each an event the daemon audits or counts as dropped).
    pub events: u64,
}

#[derive(Serialize, Deserialize)]
pub struct Results {
    pub idle_kib: u64,
    pub runs: usize,
    pub with_runs_kib: u64,
    /// After the runs ended.
    pub after_runs_kib: u64,
    pub events: u64,
    pub after_events_kib: u64,
    /// `denied` records the flood wrote plus what was counted as dropped.
    pub events_accounted: u64,
    pub flood_seconds: f64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `sleep` processes below `root`.
fn sleepers_of(root: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut table = Vec::new();
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[stat.find('(').map_or(0, |i| i + 1)..close].to_owned();
        let ppid = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        table.push((pid, ppid, comm));
    }
    let mut frontier = vec![root];
    let mut n = 0;
    while let Some(p) = frontier.pop() {
        for (pid, ppid, comm) in &table {
            if *ppid == p {
                n += usize::from(comm == "sleep");
                frontier.push(*pid);
            }
        }
    }
    n
}

/// Waits until `f` holds, up to `within`.
fn wait_until(within: Duration, f: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while !f() {
        if Instant::now() > deadline {
            return Err(format!("not reached within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn measure(e: &Env, testprog: &Path, p: &Params) -> Result<Results, String> {
    eprintln!(
        "bench: daemon memory: idle, {} runs, {} events",
        p.runs, p.events
    );
    let (service, socket) = start_daemon(e)?;
    let pid = service.pid();
    std::thread::sleep(Duration::from_millis(500));
    let idle_kib = rss_kib(pid);
    let policy = e.logs.join("daemon-mem.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\nname: daemon-mem\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{}\"]\nexec:\n  allow: [\"{}\", /usr/bin/sleep]\n",
            testprog.parent().map(|d| d.display().to_string()).unwrap_or_default(),
            testprog.display()
        ),
    )
    .map_err(|err| format!("write {}: {err}", policy.display()))?;
    let prefix = e.agentd.daemon_run_argv(&policy, &e.ws);
    let (var, value) = crate::bench_tools::Agentd::daemon_env(&socket);
    let client = |argv: &[&str]| {
        let mut c = Command::new(&prefix[0]);
        c.args(&prefix[1..])
            .args(argv)
            .current_dir(&e.ws)
            .env(&var, &value);
        c
    };
    let mut sleepers: Vec<Child> = Vec::new();
    for _ in 0..p.runs {
        sleepers.push(
            client(&["/usr/bin/sleep", "3600"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|err| format!("start a sleeping run: {err}"))?,
        );
    }
    wait_until(Duration::from_secs(60 + p.runs as u64), || {
        sleepers_of(pid) >= p.runs
    })
    .map_err(|err| format!("{} runs through the daemon: {err}", p.runs))?;
    std::thread::sleep(Duration::from_millis(1500));
    let with_runs_kib = rss_kib(pid);
    for c in &mut sleepers {
        terminate(c);
    }
    wait_until(Duration::from_secs(60), || sleepers_of(pid) == 0)
        .map_err(|err| format!("the sleeping runs did not end: {err}"))?;
    std::thread::sleep(Duration::from_millis(500));
    let after_runs_kib = rss_kib(pid);
    let started = Instant::now();
    let out = client(&[
        &testprog.display().to_string(),
        "deny-flood",
        &p.events.to_string(),
        "/etc/shadow",
    ])
    .stdin(Stdio::null())
    .output()
    .map_err(|err| format!("the flood run: {err}"))?;
    let flood_seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "the flood run through the daemon failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after_events_kib = rss_kib(pid);
    let log = e.logs.join("daemon/audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let denied = text
        .lines()
        .filter(|l| l.contains("\"event\":\"denied\"") && l.contains("\"path\":\"/etc/shadow\""))
        .count() as u64;
    let dropped: u64 = text
        .lines()
        .filter(|l| l.contains("\"event\":\"dropped\""))
        .filter_map(|l| {
            let at = l.find("\"count\":")? + 8;
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    drop(service);
    let _ = std::fs::remove_file(&log);
    Ok(Results {
        idle_kib,
        runs: p.runs,
        with_runs_kib,
        after_runs_kib,
        events: p.events,
        after_events_kib,
        events_accounted: denied + dropped,
        flood_seconds,
    })
}

/// The daemon-memory section of results.md.
pub fn markdown(r: &Results) -> String {
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    format!(
        "\n## The daemon's memory (VmRSS)\n\n| state | RSS |\n|---|---|\n| idle, no run | {} |\n| {} runs sleeping | {} |\n| after they ended | {} |\n| after a flood of {} denied opens ({} accounted: records + counted drops, {:.1} s) | {} |\n",
        mib(r.idle_kib),
        r.runs,
        mib(r.with_runs_kib),
        mib(r.after_runs_kib),
        r.events,
        r.events_accounted,
        r.flood_seconds,
        mib(r.after_events_kib),
    )
}
