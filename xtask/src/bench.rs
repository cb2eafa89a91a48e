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

pub fn bench() -> Result<(), String> {
    let root = workspace_root();
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let agentd = root.join("target/release/agentd");
    let policy = out_dir.join("true.yaml");
    std::fs::write(
        &policy,
        "version: 1\nname: bench\nfs:\n  read: [/usr, /lib, {path: /lib64, optional: true}, /etc/ld.so.cache]\nexec:\n  allow: [/usr/bin/true]\n",
    )
    .map_err(|e| format!("write {}: {e}", policy.display()))?;
    let audit = out_dir.join("audit.jsonl");
    let key = crate::util::ensure_signing_key(&agentd, &out_dir.join("key"))?;

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
/// and MB/s for `audit verify` of the result (hashes and signatures, in memory).
fn audit_chain(agentd: &Path, out_dir: &Path, key: &Path) -> Result<String, String> {
    const RECORDS: u64 = 1_000_000;
    let log = out_dir.join("chain.jsonl");
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
    let mbs_cpu =
        number_before(&verify, " MB per CPU-second").ok_or(format!("no CPU MB/s in {verify:?}"))?;
    let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&log);
    Ok(format!(
        "\n## audit chain: {RECORDS} records ({:.0} MB), SHA-256 chain, Ed25519 checkpoint every 1000, fsync batches of 50 ms\n\n| measure | wall clock | per CPU-second | target |\n|---|---|---|---|\n| append | {rate:.0} records/s | {rate_cpu:.0} records | ≥ 200000 records/s |\n| verify (hashes + signatures) | {mbs:.0} MB/s | {mbs_cpu:.0} MB | ≥ 500 MB/s |\n",
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
