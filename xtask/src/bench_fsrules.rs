//! Cost of the inode-rule fallback (`tp_btf/sys_exit` on every syscall, plus
//! `cgroup_skb/egress`): an open+close loop and a fork+exec loop, measured inside the
//! process (`agentd-benchprog open` / `spawn`), bare and under `agentd run` with
//! a policy that has `fs.deny` and `fs.secret`, interleaved in one run.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::bench::Bins;
use crate::bench_tools::Agentd;

const ROUNDS: usize = 5;
const OPENS: u32 = 20_000;
const SPAWNS: u32 = 200;

/// Runs the benchmark; returns its section of the report.
pub fn fallback_tracepoints(
    agentd: &Agentd,
    bins: &Bins,
    out_dir: &Path,
) -> Result<String, String> {
    let prog = &bins.benchprog;
    let denied = out_dir.join("denied");
    std::fs::create_dir_all(&denied).map_err(|e| format!("create {}: {e}", denied.display()))?;
    let secret = out_dir.join("secret.env");
    std::fs::write(&secret, "x").map_err(|e| format!("write {}: {e}", secret.display()))?;
    let policy = out_dir.join("fsrules.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\nname: bench-fsrules\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc]\n  deny: [\"{}\"]\n  secret: [\"{}\"]\nexec:\n  allow: [\"{}\", /usr/bin/true]\n",
            denied.display(),
            secret.display(),
            prog.display()
        ),
    )
    .map_err(|e| format!("write {}: {e}", policy.display()))?;
    // The same policy without inode rules: isolates their cost from landlock, seccomp
    // and the exec-integrity hooks every run has.
    let plain = out_dir.join("no-fsrules.yaml");
    std::fs::write(
        &plain,
        format!(
            "version: 1\nname: bench-no-fsrules\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc]\nexec:\n  allow: [\"{}\", /usr/bin/true]\n",
            prog.display()
        ),
    )
    .map_err(|e| format!("write {}: {e}", plain.display()))?;
    let audit = out_dir.join("audit-fsrules.jsonl");

    let args_open = [
        "open".to_owned(),
        "/etc/hostname".to_owned(),
        OPENS.to_string(),
    ];
    let args_spawn = [
        "spawn".to_owned(),
        "/usr/bin/true".to_owned(),
        SPAWNS.to_string(),
    ];
    let bare = |args: &[String]| {
        let mut c = Command::new(prog);
        c.args(args);
        c
    };
    let confined_with = |policy: &Path, args: &[String]| {
        let mut c = agentd.run(policy, &audit);
        c.arg(prog).args(args);
        c
    };
    let confined = |args: &[String]| confined_with(&policy, args);
    let unruled = |args: &[String]| confined_with(&plain, args);
    // [wall, cpu] sums per variant.
    let (mut open_bare, mut open_agentd, mut spawn_bare, mut spawn_agentd) =
        ([0u128; 2], [0u128; 2], [0u128; 2], [0u128; 2]);
    let (mut open_plain, mut spawn_plain) = ([0u128; 2], [0u128; 2]);
    let add = |sum: &mut [u128; 2], (wall, cpu): (u128, u128)| {
        sum[0] += wall;
        sum[1] += cpu;
    };
    for _ in 0..ROUNDS {
        add(&mut open_bare, inner_ns(bare(&args_open))?);
        add(&mut open_plain, inner_ns(unruled(&args_open))?);
        add(&mut open_agentd, inner_ns(confined(&args_open))?);
        add(&mut spawn_bare, inner_ns(bare(&args_spawn))?);
        add(&mut spawn_plain, inner_ns(unruled(&args_spawn))?);
        add(&mut spawn_agentd, inner_ns(confined(&args_spawn))?);
    }
    let per = |total: u128, n: u32| total as f64 / (ROUNDS as f64 * f64::from(n));
    let doctor = crate::util::output(Command::new(&agentd.bin).arg("doctor")).unwrap_or_default();
    let path = crate::bench_tools::agentd_path(&doctor);
    let mut report = String::from("# agentd benchmarks: fallback tracepoints\n");
    report.push_str(&format!(
        "\n## inode rules ({path}): in-process loops, {ROUNDS} rounds interleaved\n"
    ));
    for (i, what) in [
        (0, "wall clock"),
        (1, "CPU time (user + system; not waiting for a CPU)"),
    ] {
        report.push_str(&table(
            what,
            [open_bare[i], open_plain[i], open_agentd[i]],
            [spawn_bare[i], spawn_plain[i], spawn_agentd[i]],
            &per,
        ));
    }
    report.push_str(
        "\nEvery agentd run has landlock, seccomp, one tp_btf/sys_exit program (the denial \
         tracker, and on the fallback the exec-integrity mmap/mprotect check) and \
         tp_btf/sched_process_exec; the inode rules add the open check of that program and \
         cgroup_skb/egress.\n",
    );
    Ok(report)
}

/// One table: `open` and `spawn` hold the bare, no-inode-rules and inode-rules sums.
fn table(what: &str, open: [u128; 3], spawn: [u128; 3], per: &dyn Fn(u128, u32) -> f64) -> String {
    let [open_bare, open_plain, open_agentd] = open;
    let [spawn_bare, spawn_plain, spawn_agentd] = spawn;
    format!(
        "\n### {what}\n\n\
         | loop | bare | agentd, no inode rules | agentd, fs.deny + fs.secret | ratio to bare | ratio to no inode rules |\n|---|---|---|---|---|---|\n\
         | open+close /etc/hostname ({OPENS}×) | {:.0} ns | {:.0} ns | {:.0} ns | {:.2} | {:.2} |\n\
         | fork+exec+wait /usr/bin/true ({SPAWNS}×) | {:.1} µs | {:.1} µs | {:.1} µs | {:.2} | {:.2} |\n",
        per(open_bare, OPENS),
        per(open_plain, OPENS),
        per(open_agentd, OPENS),
        per(open_agentd, OPENS) / per(open_bare, OPENS),
        per(open_agentd, OPENS) / per(open_plain, OPENS),
        per(spawn_bare, SPAWNS) / 1e3,
        per(spawn_plain, SPAWNS) / 1e3,
        per(spawn_agentd, SPAWNS) / 1e3,
        per(spawn_agentd, SPAWNS) / per(spawn_bare, SPAWNS),
        per(spawn_agentd, SPAWNS) / per(spawn_plain, SPAWNS),
    )
}

/// Runs `cmd` and returns the `ns N` (wall clock) and `cpu_ns N` it printed.
fn inner_ns(mut cmd: Command) -> Result<(u128, u128), String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{shown} exited with {}: {text}", out.status));
    }
    let number = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|n| n.trim().parse().ok()))
            .ok_or_else(|| format!("{shown} printed no `{key}N` line: {text}"))
    };
    Ok((number("ns ")?, number("cpu_ns ")?))
}
