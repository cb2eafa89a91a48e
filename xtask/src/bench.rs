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

    let bare = || Command::new("/usr/bin/true");
    let confined = || {
        let mut c = Command::new(&agentd);
        c.arg("run")
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
