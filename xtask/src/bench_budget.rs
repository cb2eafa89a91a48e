//! The cost of the `syscalls` budget counter (in agentd's one `tp_btf/sys_exit` program):
//! a getpid loop timed inside the process (so agentd's start-up is not in the figure),
//! bare, under agentd without budgets, under agentd with `syscalls` set, bare while
//! another run with `syscalls` set is alive (the program runs for every task of the
//! host), and bare while one *empty* program is attached to `raw_syscalls:sys_exit`
//! (`agentd-testprog empty-sys-exit`): the floor any such program puts under the rest,
//! interleaved.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bench::Bins;
use crate::bench_tools::Agentd;
use crate::util::Helper;

const CALLS: u64 = 2_000_000;
const ROUNDS: usize = 7;

/// Runs the benchmark; returns its section of results.md.
pub fn syscalls(agentd: &Agentd, bins: &Bins, out_dir: &Path) -> Result<String, String> {
    let prog = &bins.testprog;
    let ws = out_dir.join("budget-ws");
    std::fs::create_dir_all(&ws).map_err(|e| format!("create {}: {e}", ws.display()))?;
    let progress = ws.join("progress").display().to_string();
    let base = format!(
        "version: 1\nname: bench\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache]\n  write: [\"{}\"]\nexec:\n  allow: [\"{}\"]\n",
        ws.display(),
        prog.display()
    );
    let plain = out_dir.join("getpid.yaml");
    let counted = out_dir.join("getpid-syscalls.yaml");
    let write =
        |p: &Path, s: &str| std::fs::write(p, s).map_err(|e| format!("write {}: {e}", p.display()));
    write(&plain, &base)?;
    write(
        &counted,
        &format!("{base}budgets:\n  syscalls: 1000000000\n"),
    )?;
    let sleeper_policy = out_dir.join("sleep-syscalls.yaml");
    write(
        &sleeper_policy,
        "version: 1\nname: bench\nfs:\n  read: [/usr, /lib, {path: /lib64, optional: true}, /etc/ld.so.cache]\nexec:\n  allow: [/usr/bin/sleep]\nbudgets:\n  syscalls: 1000000000\n",
    )?;
    let audit = out_dir.join("audit-budget.jsonl");
    let calls = CALLS.to_string();
    let loop_args = ["getpid-loop", calls.as_str(), progress.as_str()];
    let confined = |policy: &Path| {
        let mut c = agentd.run(policy, &audit);
        c.arg(prog).args(loop_args);
        c
    };
    let bare_loop = || {
        let mut c = Command::new(prog);
        c.args(loop_args);
        c
    };
    let (mut bare, mut plain_t, mut counted_t, mut other_t, mut floor_t) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        bare.push(loop_ns(bare_loop())?);
        plain_t.push(loop_ns(confined(&plain))?);
        counted_t.push(loop_ns(confined(&counted))?);
        // Another run with the counter attached: this loop takes the unwatched path.
        let mut sleeper = agentd
            .run(&sleeper_policy, &audit)
            .args(["/usr/bin/sleep", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn agentd sleep: {e}"))?;
        std::thread::sleep(Duration::from_millis(800));
        let other = loop_ns(bare_loop());
        // SIGTERM (to the agentd spawned just above, by pid) is forwarded to the sleep.
        let _ = Command::new("kill")
            .args(["-TERM", &sleeper.id().to_string()])
            .status();
        let _ = sleeper.wait();
        other_t.push(other?);
        let empty = empty_program(prog)?;
        let floor = loop_ns(bare_loop());
        drop(empty);
        floor_t.push(floor?);
    }
    let (b, p, c) = (
        median(&mut bare),
        median(&mut plain_t),
        median(&mut counted_t),
    );
    let o = median(&mut other_t);
    let f = median(&mut floor_t);
    let per = |ns: f64| ns / CALLS as f64;
    Ok(format!(
        "\n## syscalls budget: getpid loop of {CALLS} calls, median of {ROUNDS} rounds interleaved\n\n\
         The loop is timed inside the process. agentd's seccomp filter runs on every\n\
         syscall too, so the counter's own cost is the last ratio.\n\n\
         | variant | ns per getpid | ratio to bare |\n|---|---|---|\n\
         | bare | {:.1} | 1.00 |\n\
         | agentd run (no budgets) | {:.1} | {:.2} |\n\
         | agentd run, `syscalls` set | {:.1} | {:.2} |\n\
         | bare, while another run has `syscalls` set | {:.1} | {:.2} |\n\
         | bare, while one empty program is on `raw_syscalls:sys_exit` (the floor) | {:.1} | {:.2} |\n\n\
         `syscalls` counter alone (with / without): **{:.2}x** (target: at most 1.15x against bare: **{:.2}x**; \
         no program on that tracepoint can be under the floor's {:.2}x)\n",
        per(b),
        per(p),
        p / b,
        per(c),
        c / b,
        per(o),
        o / b,
        per(f),
        f / b,
        c / p,
        c / b,
        f / b,
    ))
}

/// Starts `agentd-testprog empty-sys-exit` and waits until its program is attached; the
/// program goes when the helper is dropped.
pub fn empty_program(prog: &Path) -> Result<Helper, String> {
    let (helper, line) = Helper::start(Command::new(prog).args(["empty-sys-exit", "60"]))?;
    if line != "empty-sys-exit: attached" {
        return Err(format!("{} empty-sys-exit: {line}", prog.display()));
    }
    Ok(helper)
}

/// Runs one loop; returns the nanoseconds it reports.
fn loop_ns(mut cmd: Command) -> Result<f64, String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{shown} exited with {}: {text}", out.status));
    }
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("getpid-loop: finished ")?;
            rest.split(' ').nth(2)?.parse::<f64>().ok()
        })
        .ok_or_else(|| format!("{shown}: no timing in its output: {text}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
