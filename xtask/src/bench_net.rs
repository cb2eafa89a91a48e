//! Network benchmark: a TCP connect/close loop to a loopback listener, run bare and under
//! `agentd run` with a 1,000-rule network policy (cgroup connect4 program + LPM trie
//! lookup on every connect). The loop times itself (`agentd-benchprog connect`), so
//! agentd's start-up is not in the figure; rounds alternate so that noise hits both.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::bench::Bins;
use crate::bench_tools::Agentd;

const CONNECTS: u64 = 20_000;
const ROUNDS: usize = 6;
const RULES: usize = 1_000;

/// Runs the benchmark and returns its section of results.md.
pub fn bench(agentd: &Agentd, bins: &Bins, out_dir: &Path) -> Result<String, String> {
    let prog = &bins.benchprog;

    let server = crate::bench::Listener::start(prog)?;
    run_rounds(agentd, out_dir, prog, server.port)
}

fn run_rounds(agentd: &Agentd, out_dir: &Path, prog: &Path, port: u16) -> Result<String, String> {
    let policy = out_dir.join("net-1000.yaml");
    std::fs::write(&policy, policy_text(prog, port))
        .map_err(|e| format!("write {}: {e}", policy.display()))?;
    let audit = out_dir.join("audit-net.jsonl");
    let port_s = port.to_string();
    let n_s = CONNECTS.to_string();
    let loop_args = ["connect", "127.0.0.1", port_s.as_str(), n_s.as_str()];

    // The same policy with an fs.secret that the loop never reads: every connect also
    // looks the run's taint flag up (NET_FLAG_TAINT_CHECK).
    let secret = out_dir.join("bench-secret");
    std::fs::write(&secret, "not read\n")
        .map_err(|e| format!("write {}: {e}", secret.display()))?;
    let secret_policy = out_dir.join("net-1000-secret.yaml");
    let text = policy_text(prog, port).replacen(
        "\nexec:",
        &format!("\n  secret: [\"{}\"]\nexec:", secret.display()),
        1,
    );
    std::fs::write(&secret_policy, text)
        .map_err(|e| format!("write {}: {e}", secret_policy.display()))?;

    let mut bare = Duration::ZERO;
    let mut confined = Duration::ZERO;
    let mut with_secret = Duration::ZERO;
    for _ in 0..ROUNDS {
        bare += timed(Command::new(prog).args(loop_args))?;
        for (policy, total) in [(&policy, &mut confined), (&secret_policy, &mut with_secret)] {
            let mut c = agentd.run(policy, &audit);
            c.arg(prog).args(loop_args);
            *total += timed(&mut c)?;
        }
    }
    let total = CONNECTS as f64 * ROUNDS as f64;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / total;
    Ok(format!(
        "\n## network: TCP connect+close to a loopback listener, {CONNECTS} per round, {ROUNDS} rounds interleaved\n\n| variant | µs per connect | ratio to bare |\n|---|---|---|\n| bare | {:.2} | 1.00 |\n| agentd run, {RULES}-rule net policy | {:.2} | {:.2} |\n| same + fs.secret (taint looked up on every connect and packet, never tainted) | {:.2} | {:.2} |\n",
        per(bare),
        per(confined),
        per(confined) / per(bare),
        per(with_secret),
        per(with_secret) / per(bare)
    ))
}

/// 999 rules for other addresses and ports, plus the one that allows the listener.
fn policy_text(prog: &Path, port: u16) -> String {
    let dir = prog
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let mut rules: Vec<String> = (0..RULES - 1)
        .map(|i| {
            format!(
                "    - \"10.{}.{}.1:{}/tcp\"\n",
                i / 256,
                i % 256,
                1000 + i % 100
            )
        })
        .collect();
    rules.push(format!("    - \"127.0.0.1:{port}/tcp\"\n"));
    format!(
        "version: 1\nname: bench-net\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{dir}\"]\nexec:\n  allow: [\"{}\"]\nnet:\n  allow:\n{}",
        prog.display(),
        rules.concat()
    )
}

/// Runs the loop and returns the time it reported.
fn timed(cmd: &mut Command) -> Result<Duration, String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{shown}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{shown} exited with {}: {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let ns = text
        .lines()
        .find_map(|l| l.strip_prefix("ns ")?.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("{shown}: unexpected output {text:?}"))?;
    Ok(Duration::from_nanos(ns))
}
