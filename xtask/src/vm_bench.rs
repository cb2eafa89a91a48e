//! `cargo xtask vm-bench`: the syscall and launch workloads inside the Debian guest, where
//! BPF LSM loads, so the figures are those of a distribution kernel: bare against agentd in
//! one boot, as ratios measured inside the guest (TCG slows everything, so only ratios
//! mean anything). Also lists the global programs a run attaches there, which is what the
//! host pays for on that path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Interleaved repetitions.
const REPS: u32 = 5;
/// Loop counts, smaller than the host bench's: TCG runs 10-50x slower.
const GETPID: u32 = 200_000;
const OPEN: u32 = 50_000;
const LAUNCHES_PER_REP: u32 = 3;

/// The policy of the guest's runs: the workload program, its input, nothing else.
pub fn policy(root: &Path) -> String {
    let bin = root.join("target/release");
    format!(
        "version: 1\nname: vm-bench\nmode: enforce\nfs:\n  read:\n    - /usr\n    - /lib\n    - {{ path: /lib64, optional: true }}\n    - /etc/ld.so.cache\n    - \"{bin}\"\n    - \"{{workspace}}\"\n  write:\n    - \"{{workspace}}\"\n    - /dev/null\nexec:\n  allow:\n    - \"{bin}/agentd-benchprog\"\n    - /usr/bin/true\n    - /usr/bin/sleep\n",
        bin = bin.display()
    )
}

/// The guest's script: prints `R WORKLOAD TOOL REP NS CPU_NS` lines and `GLOBAL` lines.
pub fn script(root: &Path) -> String {
    let mut s = crate::vm::guest_prelude(root, "vm-bench");
    let rel = root.join("target/release");
    let _ = writeln!(
        s,
        "A='{a}'\nB='{b}'\nP=/tmp/vmwork/policy.yaml\nW=/tmp/vmws\nmkdir -p $W /run/vmb\n\
         echo 'the file the open and stat loops use' > $W/input.txt\n\
         run() {{ \"$A\" run --user root --unsigned-audit --audit /run/vmb/audit.jsonl --policy $P --workspace $W -- \"$@\"; }}\n\
         two() {{ awk '{{printf \"%s \", $2}}'; }}\n\
         \"$A\" doctor || exit 91\n\
         AGENTD_LOG=agentd=debug run /usr/bin/true 2>&1 | grep 'attach global program' | sed 's/.*attach global program/GLOBAL/'\n\
         run \"$B\" getpid 10 > /dev/null || exit 92",
        a = rel.join("agentd").display(),
        b = rel.join("agentd-benchprog").display(),
    );
    let _ = writeln!(s, "for rep in $(seq 1 {REPS}); do");
    // What bounds getpid inside a run: any seccomp filter at all, with no agentd.
    let _ = writeln!(
        s,
        "  echo \"R getpid seccomp-only $rep $(\"$B\" getpid-seccomp {GETPID} | two)\""
    );
    for (name, args) in [
        ("getpid", format!("getpid {GETPID}")),
        ("open", format!("open $W/input.txt {OPEN}")),
        ("stat", format!("stat $W/input.txt {OPEN}")),
    ] {
        let _ = writeln!(
            s,
            "  echo \"R {name} bare $rep $(\"$B\" {args} | two)\"\n  echo \"R {name} agentd $rep $(run \"$B\" {args} | two)\""
        );
    }
    // Outside any run: the same getpid loop with no run, then while one run sleeps. The
    // sleeping run is started directly (not through the `run` function, whose subshell
    // would take the SIGINT that is meant for agentd).
    let _ = writeln!(
        s,
        "  echo \"R outside-getpid none $rep $(\"$B\" getpid {GETPID} | two)\"\n\
         \x20 echo \"R outside-open none $rep $(\"$B\" open $W/input.txt {OPEN} | two)\"\n\
         \x20 \"$A\" run --user root --unsigned-audit --audit /run/vmb/audit.jsonl --policy $P --workspace $W -- /usr/bin/sleep 100000 & S=$!\n\
         \x20 until grep -qsx sleep /proc/[0-9]*/comm; do sleep 0.2; done\n\
         \x20 echo \"R outside-getpid 1-run $rep $(\"$B\" getpid {GETPID} | two)\"\n\
         \x20 echo \"R outside-open 1-run $rep $(\"$B\" open $W/input.txt {OPEN} | two)\"\n\
         \x20 kill -INT $S; wait $S"
    );
    let _ = writeln!(
        s,
        "  for i in $(seq 1 {LAUNCHES_PER_REP}); do\n\
         \x20   t0=$(date +%s%N); /usr/bin/true; t1=$(date +%s%N); echo \"R launch bare $rep $((t1 - t0)) 0\"\n\
         \x20   t0=$(date +%s%N); run /usr/bin/true; t1=$(date +%s%N); echo \"R launch agentd $rep $((t1 - t0)) 0\"\n\
         \x20 done\ndone\nexit 0"
    );
    s
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Writes the guest's figures to `out` (markdown).
pub fn report(output: &str, kver: &str, out: &Path) -> Result<(), String> {
    // (workload, tool) -> (wall ns, cpu ns) samples.
    let mut samples: BTreeMap<(String, String), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut globals = Vec::new();
    let mut lsms = String::new();
    for line in output.lines() {
        if let Some(g) = line.strip_prefix("GLOBAL ") {
            globals.push(g.trim().to_owned());
        } else if let Some(l) = line.split("; LSMs ").nth(1).filter(|_| lsms.is_empty()) {
            lsms = format!("LSMs {l}");
        } else if let Some(r) = line.strip_prefix("R ") {
            let f: Vec<&str> = r.split_whitespace().collect();
            let (Some(w), Some(t), Some(ns), Some(cpu)) = (f.first(), f.get(1), f.get(3), f.get(4))
            else {
                return Err(format!("vm-bench: a result line without figures: {line}"));
            };
            let (Ok(ns), Ok(cpu)) = (ns.parse::<f64>(), cpu.parse::<f64>()) else {
                return Err(format!("vm-bench: a result line without figures: {line}"));
            };
            let e = samples
                .entry(((*w).to_owned(), (*t).to_owned()))
                .or_default();
            e.0.push(ns);
            e.1.push(cpu);
        }
    }
    let mut med = |w: &str, t: &str| {
        samples
            .get_mut(&(w.to_owned(), t.to_owned()))
            .map(|(ns, cpu)| (median(ns), median(cpu), ns.len()))
    };
    let mut md = format!(
        "# agentd inside the Debian guest (BPF LSM path)\n\n\
         `cargo xtask vm-bench`: Debian's stock kernel {kver} under QEMU (TCG, one vCPU), \
         booted with the BPF LSM ({lsms}). Bare and agentd in the same boot, {REPS} \
         interleaved repetitions, medians. TCG slows everything, so only the ratios mean \
         anything.\n\n\
         | workload | bare | measured | ratio | CPU ratio | samples |\n|---|---|---|---|---|---|\n"
    );
    // (workload, the baseline's tool, the measured tool, title)
    let outside = "**outside any run**, while 1 run sleeps (vs none)";
    for (w, base, tool, title) in [
        (
            "getpid",
            "bare",
            "agentd",
            format!("getpid ×{GETPID} inside a run"),
        ),
        (
            "getpid",
            "bare",
            "seccomp-only",
            format!("getpid ×{GETPID} under an allow-all seccomp filter alone (no agentd)"),
        ),
        (
            "open",
            "bare",
            "agentd",
            format!("openat+close ×{OPEN} inside a run"),
        ),
        (
            "stat",
            "bare",
            "agentd",
            format!("stat ×{OPEN} inside a run"),
        ),
        (
            "outside-getpid",
            "none",
            "1-run",
            format!("getpid ×{GETPID} {outside}"),
        ),
        (
            "outside-open",
            "none",
            "1-run",
            format!("openat+close ×{OPEN} {outside}"),
        ),
    ] {
        let (Some(b), Some(a)) = (med(w, base), med(w, tool)) else {
            return Err(format!("vm-bench: no {w} figures in the guest's output"));
        };
        let _ = writeln!(
            md,
            "| {title} | {:.1} ms | {:.1} ms | {:.2} | {:.2} | {} |",
            b.0 / 1e6,
            a.0 / 1e6,
            a.0 / b.0,
            a.1 / b.1,
            a.2
        );
    }
    let (Some(lb), Some(la)) = (med("launch", "bare"), med("launch", "agentd")) else {
        return Err("vm-bench: no launch figures in the guest's output".into());
    };
    let _ = writeln!(
        md,
        "| launch `agentd run -- /usr/bin/true` (standalone) | {:.1} ms | {:.1} ms | {:.1} | | {} |",
        lb.0 / 1e6,
        la.0 / 1e6,
        la.0 / lb.0,
        la.2
    );
    md.push_str("\n## Global programs a run attaches on this kernel\n\n");
    md.push_str(
        "Global programs see every task of the host; a `raw_syscalls` one (`sys_exit`) \
         puts every task on the slow syscall path while it is attached, a `fexit` one \
         costs only the calls of its kernel function.\n\n",
    );
    for g in &globals {
        let _ = writeln!(md, "- {g}");
    }
    if globals.is_empty() {
        md.push_str("- (none reported)\n");
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(out, md).map_err(|e| format!("write {}: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_ratios_of_medians_and_the_globals() {
        let mut out = String::from("kernel 6.12.0; LSMs lockdown,capability,landlock,bpf\n");
        out.push_str("GLOBAL sys_exit_dispatch (tp_btf/sys_exit)\n");
        for rep in 1..=3 {
            for w in ["getpid", "open", "stat"] {
                out.push_str(&format!(
                    "R {w} bare {rep} 100 50\nR {w} agentd {rep} 150 100\n"
                ));
            }
            out.push_str(&format!("R getpid seccomp-only {rep} 120 60\n"));
            out.push_str(&format!("R outside-getpid none {rep} 100 100\n"));
            out.push_str(&format!("R outside-getpid 1-run {rep} 110 100\n"));
            out.push_str(&format!("R outside-open none {rep} 100 100\n"));
            out.push_str(&format!("R outside-open 1-run {rep} 101 100\n"));
            out.push_str(&format!(
                "R launch bare {rep} 1000000 0\nR launch agentd {rep} 5000000 0\n"
            ));
        }
        let dir = std::env::temp_dir().join(format!("vm-bench-{}", std::process::id()));
        let path = dir.join("vm.md");
        report(&out, "6.12.0", &path).unwrap_or_else(|e| panic!("{e}"));
        let md = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(md.contains("| 1.50 | 2.00 | 3 |"), "{md}");
        assert!(md.contains("| 1.10 | 1.00 | 3 |"), "{md}");
        assert!(
            md.contains("filter alone (no agentd) | 0.0 ms | 0.0 ms | 1.20 | 1.20 | 3 |"),
            "{md}"
        );
        assert!(
            md.contains("openat+close ×50000 **outside any run**"),
            "{md}"
        );
        assert!(md.contains("| 1.01 | 1.00 | 3 |"), "{md}");
        assert!(md.contains("| 5.0 |"), "{md}");
        assert!(md.contains("- sys_exit_dispatch (tp_btf/sys_exit)"), "{md}");
        assert!(report("R getpid bare 1 x 2\n", "k", &path).is_err());
    }
}
