//! Benchmarks: ratios measured in one run, written to target/bench/results.md.
//!
//! Start-up cost: spawn `/usr/bin/true` N times bare, under `agentd run`, and
//! under bubblewrap (when installed), interleaved so that machine noise hits
//! every variant alike.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::workspace_root;

const ROUNDS: usize = 50;

/// `only`: `Some("audit")` runs just the audit chain and the event flood, `Some("syscalls")`
/// the getpid loops, `Some("fsrules")` the open/close and fork+exec loops.
pub fn bench(only: Option<&str>) -> Result<(), String> {
    let root = workspace_root();
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let agentd = root.join("target/release/agentd");
    match only {
        None => {}
        Some("audit") => {
            let key = crate::util::ensure_signing_key(&agentd, &out_dir.join("key"))?;
            let mut report = String::from("# agentd benchmarks: audit\n");
            report.push_str(&audit_chain(&agentd, &out_dir, &key)?);
            report.push_str(&event_flood(&agentd, &out_dir, &key)?);
            let out = out_dir.join("audit.md");
            std::fs::write(&out, &report).map_err(|e| format!("write {}: {e}", out.display()))?;
            println!("{report}\nwritten to {}", out.display());
            return Ok(());
        }
        Some("syscalls") => {
            let key = crate::util::ensure_signing_key(&agentd, &out_dir.join("key"))?;
            // The runs it spawns sign with the bench key.
            std::env::set_var("AGENTD_SIGNING_KEY", &key);
            let report = crate::bench_budget::syscalls(&out_dir)?;
            let out = out_dir.join("syscalls.md");
            std::fs::write(&out, &report).map_err(|e| format!("write {}: {e}", out.display()))?;
            println!("{report}\nwritten to {}", out.display());
            return Ok(());
        }
        Some("fsrules") => {
            let key = crate::util::ensure_signing_key(&agentd, &out_dir.join("key"))?;
            std::env::set_var("AGENTD_SIGNING_KEY", &key);
            let mut report = String::from("# agentd benchmarks: fallback tracepoints\n");
            crate::bench_fsrules::fallback_tracepoints(&root, &out_dir, &mut report)?;
            let out = out_dir.join("fsrules.md");
            std::fs::write(&out, &report).map_err(|e| format!("write {}: {e}", out.display()))?;
            println!("{report}\nwritten to {}", out.display());
            return Ok(());
        }
        Some(other) => {
            return Err(format!(
                "bench {other}: the parts are `audit`, `syscalls` and `fsrules` (none: everything)"
            ))
        }
    }
    let policy = out_dir.join("true.yaml");
    std::fs::write(
        &policy,
        "version: 1\nname: bench\nfs:\n  read: [/usr, /lib, {path: /lib64, optional: true}, /etc/ld.so.cache]\nexec:\n  allow: [/usr/bin/true]\n",
    )
    .map_err(|e| format!("write {}: {e}", policy.display()))?;
    let audit = out_dir.join("audit.jsonl");
    let key = crate::util::ensure_signing_key(&agentd, &out_dir.join("key"))?;
    // Every `agentd run` below (net, budget, fsrules benchmarks) signs with this key.
    std::env::set_var("AGENTD_SIGNING_KEY", &key);

    let bare = || Command::new("/usr/bin/true");
    let confined = || {
        let mut c = Command::new(&agentd);
        c.env("AGENTD_SIGNING_KEY", &key)
            .arg("run")
            .arg("--policy")
            .arg(&policy)
            .arg("--audit")
            .arg(&audit)
            .args(["--", "/usr/bin/true"]);
        c
    };
    let has_bwrap = Path::new("/usr/bin/bwrap").exists();
    let bwrap = || {
        let mut c = Command::new("/usr/bin/bwrap");
        c.args([
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--unshare-all",
            "--die-with-parent",
            "/usr/bin/true",
        ]);
        c
    };

    let mut t_bare = Duration::ZERO;
    let mut t_agentd = Duration::ZERO;
    let mut t_bwrap = Duration::ZERO;
    for _ in 0..ROUNDS {
        t_bare += time(bare())?;
        t_agentd += time(confined())?;
        if has_bwrap {
            t_bwrap += time(bwrap())?;
        }
    }
    let per = |d: Duration| d.as_secs_f64() * 1e3 / ROUNDS as f64;
    let mut report = format!(
        "# agentd benchmarks\n\n## start-up: spawn /usr/bin/true, {ROUNDS} rounds interleaved\n\n| variant | ms per run | ratio to bare |\n|---|---|---|\n| bare | {:.3} | 1.00 |\n| agentd run | {:.3} | {:.2} |\n",
        per(t_bare),
        per(t_agentd),
        per(t_agentd) / per(t_bare)
    );
    if has_bwrap {
        report.push_str(&format!(
            "| bwrap --unshare-all | {:.3} | {:.2} |\n",
            per(t_bwrap),
            per(t_bwrap) / per(t_bare)
        ));
    }
    report.push_str(&audit_chain(&agentd, &out_dir, &key)?);
    report.push_str(&event_flood(&agentd, &out_dir, &key)?);
    report.push_str(&crate::bench_net::bench(&agentd, &out_dir)?);
    report.push_str(&crate::bench_budget::syscalls(&out_dir)?);
    crate::bench_fsrules::fallback_tracepoints(&root, &out_dir, &mut report)?;
    let out = out_dir.join("results.md");
    std::fs::write(&out, &report).map_err(|e| format!("write {}: {e}", out.display()))?;
    println!("{report}\nwritten to {}", out.display());
    Ok(())
}

fn time(mut cmd: Command) -> Result<Duration, String> {
    let shown = format!("{cmd:?}");
    let start = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{shown}: {e}"))?;
    let took = start.elapsed();
    if !status.success() {
        return Err(format!("{shown} exited with {status}"));
    }
    Ok(took)
}

/// Records/s appended through the writer (chain + checkpoints every 1000 + 50 ms batches),
/// and MB/s for `audit verify` of the result (hashes and signatures, in memory). Each is
/// measured [`AUDIT_ROUNDS`] times; the table shows the median and every round (the
/// machine is shared, so single wall-clock figures are noisy).
fn audit_chain(agentd: &Path, out_dir: &Path, key: &Path) -> Result<String, String> {
    const RECORDS: u64 = 1_000_000;
    const AUDIT_ROUNDS: usize = 3;
    let log = out_dir.join("chain.jsonl");
    let mut rounds: Vec<[f64; 4]> = Vec::new();
    let mut size = 0;
    for _ in 0..AUDIT_ROUNDS {
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(out_dir.join("chain.jsonl.head"));
        let append = crate::util::output(
            Command::new(agentd)
                .args(["audit", "bench-append"])
                .arg(&log)
                .args([
                    "--records",
                    &RECORDS.to_string(),
                    "--flush",
                    "50ms",
                    "--key",
                ])
                .arg(key),
        )
        .ok_or("agentd audit bench-append failed")?;
        let rate = number_before(&append, " records/s").ok_or(format!("no rate in {append:?}"))?;
        let rate_cpu = number_before(&append, " records per CPU-second")
            .ok_or(format!("no CPU rate in {append:?}"))?;
        let verify = crate::util::output(
            Command::new(agentd)
                .args(["audit", "verify"])
                .arg(&log)
                .arg("--key")
                .arg(key.with_extension("pub")),
        )
        .ok_or("agentd audit verify failed")?;
        let mbs = number_before(&verify, " MB/s").ok_or(format!("no MB/s in {verify:?}"))?;
        let mbs_cpu = number_before(&verify, " MB per CPU-second")
            .ok_or(format!("no CPU MB/s in {verify:?}"))?;
        size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        rounds.push([rate, rate_cpu, mbs, mbs_cpu]);
    }
    let _ = std::fs::remove_file(&log);
    let col = |i: usize| -> (f64, String) {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
        let all = v
            .iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], all)
    };
    let ((rate, rates), (rate_cpu, _)) = (col(0), col(1));
    let ((mbs, mbss), (mbs_cpu, _)) = (col(2), col(3));
    Ok(format!(
        "\n## audit chain: {RECORDS} records ({:.0} MB), SHA-256 chain, Ed25519 checkpoint every 1000, fsync batches of 50 ms; median of {AUDIT_ROUNDS} rounds\n\n| measure | wall clock | per CPU-second | rounds (wall) | target |\n|---|---|---|---|---|\n| append | {rate:.0} records/s | {rate_cpu:.0} records | {rates} | ≥ 200000 records/s |\n| verify (hashes + signatures) | {mbs:.0} MB/s | {mbs_cpu:.0} MB | {mbss} | ≥ 500 MB/s |\n",
        size as f64 / 1e6
    ))
}

/// The number just before `unit` in `text`.
fn number_before(text: &str, unit: &str) -> Option<f64> {
    let head = &text[..text.find(unit)?];
    head.rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()?
        .parse()
        .ok()
}

/// A confined process makes 1M denied opens; every one must be either a `denied` record in
/// the chain or counted in the `dropped` record (ring buffer full).
fn event_flood(agentd: &Path, out_dir: &Path, key: &Path) -> Result<String, String> {
    const OPENS: u64 = 1_000_000;
    const SECRET: &str = "/etc/shadow";
    crate::util::cargo(&["build", "--release", "-p", "integration", "--bins"])?;
    let prog = workspace_root().join("target/release/agentd-testprog");
    let policy = out_dir.join("flood.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\nname: flood\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{}\"]\nexec:\n  allow: [\"{}\"]\n",
            prog.parent().map(|p| p.display().to_string()).unwrap_or_default(),
            prog.display()
        ),
    )
    .map_err(|e| format!("write {}: {e}", policy.display()))?;
    let log = out_dir.join("flood.jsonl");
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(out_dir.join("flood.jsonl.head"));
    let start = Instant::now();
    let out = crate::util::output(
        Command::new(agentd)
            .env("AGENTD_SIGNING_KEY", key)
            .arg("run")
            .arg("--policy")
            .arg(&policy)
            .arg("--audit")
            .arg(&log)
            .arg("--")
            .arg(&prog)
            .args(["deny-flood", &OPENS.to_string(), SECRET]),
    )
    .ok_or("the flood run failed")?;
    let took = start.elapsed().as_secs_f64();
    // "opens N: OK a EACCES b other c": b is the number just before " other".
    let denied_by_kernel = number_before(&out, " other")
        .map(|n| n as u64)
        .ok_or(format!("unexpected output {out:?}"))?;
    let text = std::fs::read_to_string(&log).map_err(|e| format!("read {}: {e}", log.display()))?;
    let needle = format!("\"path\":\"{SECRET}\"");
    let written = text
        .lines()
        .filter(|l| l.contains("\"event\":\"denied\"") && l.contains(&needle))
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
    let verdict = if written + dropped == denied_by_kernel {
        "every event accounted for"
    } else {
        "MISMATCH"
    };
    let _ = std::fs::remove_file(&log);
    Ok(format!(
        "\n## event flood: {OPENS} denied opens of {SECRET} under agentd run ({took:.1} s)\n\n| opens the kernel denied | denied records written | dropped (counted, in the chain) | written + dropped | |\n|---|---|---|---|---|\n| {denied_by_kernel} | {written} | {dropped} | {} | {verdict} |\n",
        written + dropped
    ))
}
