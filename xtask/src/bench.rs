//! `cargo xtask bench [--quick] [PART]`: agentd beside the tools a user would pick
//! instead (bubblewrap, firejail), every tool measured in the same invocation as a ratio
//! to bare. Writes target/bench/results.json, results.md, ratios.png and launch.png.
//!
//! `--quick` runs the same code with small counts (under a minute) and checks that every
//! cell was measured, not how fast; `--debug` runs on the debug build. `cargo xtask test`
//! runs the quick check on its own debug build, so the harness cannot rot.
//! The parts (`audit`, `syscalls`, `fsrules`, `net`) are agentd against itself: one
//! section each, written to target/bench/PART.md.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::bench_report::{FloorResult, Machine, Results, Stat, ToolInfo};
use crate::bench_tools::{Agentd, Env, Setup, Tool, TOOLS};
use crate::bench_workloads::{Kind, Runner, Unit, Workload};
use crate::util;

/// The programs a benchmark runs.
pub struct Bins {
    pub agentd: PathBuf,
    pub benchprog: PathBuf,
    pub testprog: PathBuf,
    /// `release` or `debug`.
    pub profile: &'static str,
}

impl Bins {
    /// What `cargo xtask test` builds.
    pub fn debug() -> Self {
        Self::of("debug")
    }

    fn of(profile: &'static str) -> Self {
        let dir = util::workspace_root().join("target").join(profile);
        Self {
            agentd: dir.join("agentd"),
            benchprog: dir.join("agentd-benchprog"),
            testprog: dir.join("agentd-testprog"),
            profile,
        }
    }
}

/// Counts of one mode.
struct Params {
    quick: bool,
    reps: usize,
    getpid: u64,
    open: u64,
    stat: u64,
    connect: u64,
    spawn: u64,
    mix_passes: u32,
    launches: usize,
    outside_runs: [usize; 2],
    audit: crate::bench_audit::Params,
    daemon: crate::bench_daemon::Params,
}

impl Params {
    fn full() -> Self {
        Self {
            quick: false,
            reps: 5,
            getpid: 1_000_000,
            open: 200_000,
            stat: 200_000,
            connect: 20_000,
            spawn: 2_000,
            mix_passes: 3,
            launches: 200,
            outside_runs: [1, 50],
            audit: crate::bench_audit::Params {
                reps: 5,
                records: 1_000_000,
                verify_bytes: 1_000_000_000,
                flood_opens: 1_000_000,
            },
            daemon: crate::bench_daemon::Params {
                runs: 50,
                events: 1_000_000,
            },
        }
    }

    fn quick() -> Self {
        Self {
            quick: true,
            reps: 2,
            getpid: 20_000,
            open: 5_000,
            stat: 5_000,
            connect: 500,
            spawn: 20,
            mix_passes: 1,
            launches: 4,
            outside_runs: [1, 2],
            audit: crate::bench_audit::Params {
                reps: 2,
                records: 5_000,
                verify_bytes: 2_000_000,
                flood_opens: 2_000,
            },
            daemon: crate::bench_daemon::Params {
                runs: 2,
                events: 2_000,
            },
        }
    }
}

/// Debian packages the comparison needs: the peers, git for the mix, the plots' font.
const PACKAGES: &[&str] = &[
    "bubblewrap",
    "firejail",
    "git",
    "python3",
    crate::bench_plot::FONT_PACKAGE,
];

/// `cargo xtask bench ARGS` (after `cargo xtask build`).
pub fn bench(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    // `--debug`: the binaries `cargo xtask test` builds, as its quick check uses them.
    let profile = if args.iter().any(|a| a == "--debug") {
        "debug"
    } else {
        "release"
    };
    let part = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str);
    let out_dir = util::workspace_root().join("target/bench");
    if part == Some("plot") {
        let dir = args.iter().filter(|a| !a.starts_with("--")).nth(1);
        return replot(&dir.map_or(out_dir, PathBuf::from));
    }
    let mut build = vec!["build", "-p", "agentd", "-p", "integration", "--bins"];
    if profile == "release" {
        build.push("--release");
    }
    util::cargo(&build)?;
    let bins = Bins::of(profile);
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("create {}: {e}", out_dir.display()))?;
    let Some(part) = part else {
        return compare(
            &bins,
            &out_dir,
            if quick {
                Params::quick()
            } else {
                Params::full()
            },
        );
    };
    let agentd = Agentd::new(&bins.agentd, &out_dir.join("key"))?;
    let section = match part {
        "audit" => {
            let p = if quick {
                Params::quick()
            } else {
                Params::full()
            }
            .audit;
            let r = crate::bench_audit::measure(&agentd, &bins.testprog, &out_dir, &p)?;
            format!(
                "# agentd benchmarks: audit\n{}",
                crate::bench_audit::markdown(&r)
            )
        }
        "syscalls" => crate::bench_budget::syscalls(&agentd, &bins, &out_dir)?,
        "fsrules" => crate::bench_fsrules::fallback_tracepoints(&agentd, &bins, &out_dir)?,
        "net" => crate::bench_net::bench(&agentd, &bins, &out_dir)?,
        other => {
            return Err(format!(
                "bench {other}: the parts are `audit`, `syscalls`, `fsrules` and `net` \
                 (none: the comparison with bubblewrap and firejail; `plot [DIR]`: redraw \
                 DIR/results.json)"
            ))
        }
    };
    let out = out_dir.join(format!("{part}.md"));
    std::fs::write(&out, &section).map_err(|e| format!("write {}: {e}", out.display()))?;
    println!("{section}\nwritten to {}", out.display());
    Ok(())
}

/// The quick comparison on the binaries `cargo xtask test` built, checked for
/// completeness (not speed).
pub fn quick_check(bins: &Bins) -> Result<(), String> {
    let out_dir = util::workspace_root().join("target/bench");
    compare(bins, &out_dir, Params::quick())
}

fn compare(bins: &Bins, out_dir: &Path, p: Params) -> Result<(), String> {
    let started = Instant::now();
    crate::setup::apt_install(PACKAGES)?;
    let loadavg_start = loadavg();
    let agentd = Agentd::new(&bins.agentd, &out_dir.join("key"))?;
    let layout = Layout::make(out_dir, bins)?;
    let listener = Listener::start(&layout.benchprog)?;
    let policy = out_dir.join("policy.yaml");
    write_policy(&policy, &layout, listener.port)?;
    let env = Env {
        agentd,
        ws: layout.ws.clone(),
        bin_dir: layout.bin_dir.clone(),
        logs: layout.logs.clone(),
        policy,
    };
    let (tools, infos) = tools(&env)?;
    let workloads = workloads(&p, &layout, listener.port);
    let runner = Runner {
        ws: &layout.ws,
        scratch: layout.scratch.clone(),
        reps: p.reps,
    };
    let (mut floor_bare, mut floor_on) = (Vec::new(), Vec::new());
    let mut floor = |_rep: usize| -> Result<(), String> {
        // Paired: the bare loop right before the one with the empty program attached.
        let bare = || {
            let mut c = Command::new(&layout.benchprog);
            c.args(["getpid", &p.getpid.to_string()]);
            c
        };
        let (b, _) = runner.timed_loop(bare())?;
        let empty = crate::bench_budget::empty_program(&bins.testprog)?;
        let on = runner.timed_loop(bare());
        drop(empty);
        floor_bare.push(b / p.getpid as f64);
        floor_on.push(on?.0 / p.getpid as f64);
        Ok(())
    };
    let samples = runner.run(&tools, &workloads, &mut floor)?;
    drop(listener);
    let names: Vec<&'static str> = tools.iter().map(|t| t.name).collect();
    // The daemon variant's own service must be gone before the memory bench starts one.
    let has_daemon = names.contains(&"agentd daemon");
    drop(tools);
    let daemon_memory = if has_daemon {
        Some(crate::bench_daemon::measure(
            &env,
            &bins.testprog,
            &p.daemon,
        )?)
    } else {
        None
    };
    let audit = crate::bench_audit::measure(&env.agentd, &bins.testprog, &layout.logs, &p.audit)?;
    let doctor = util::output(Command::new(&bins.agentd).arg("doctor")).unwrap_or_default();
    let (fb, fo) = (Stat::of(&floor_bare), Stat::of(&floor_on));
    let results = Results {
        date: util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .unwrap_or_default()
            .trim()
            .to_owned(),
        mode: if p.quick { "quick" } else { "full" }.into(),
        build: bins.profile.into(),
        seconds: started.elapsed().as_secs_f64(),
        repetitions: p.reps,
        machine: machine(loadavg_start),
        agentd_path: crate::bench_tools::agentd_path(&doctor),
        doctor,
        tools: infos,
        workloads: crate::bench_report::cells(&workloads, &names, &samples),
        floor: FloorResult {
            ratio_median: fo.median / fb.median,
            bare_ns: fb,
            with_empty_program_ns: fo,
        },
        audit,
        daemon_memory,
    };
    render(out_dir, &results)?;
    println!(
        "{}\nwritten to {}/results.{{md,json}}, ratios.png, launch.png",
        crate::bench_report::ratio_table(&results),
        out_dir.display()
    );
    if p.quick {
        crate::bench_report::check(out_dir, &results, &names)?;
        println!("bench --quick: every workload measured under every tool");
    }
    Ok(())
}

/// Sets every tool of [`TOOLS`] up: those that can run, and what each is (or why not).
fn tools(env: &Env) -> Result<(Vec<Tool>, Vec<ToolInfo>), String> {
    let mut tools: Vec<Tool> = Vec::new();
    let mut infos = Vec::new();
    for (name, make) in TOOLS {
        let (settings, skipped) = match make(env)? {
            Setup::Ready(t) => {
                let s = t.settings.clone();
                tools.push(t);
                (s, None)
            }
            Setup::Skipped(why) => {
                eprintln!("SKIP: bench: {name}: {why}");
                (String::new(), Some(why))
            }
        };
        infos.push(ToolInfo {
            name: (*name).into(),
            settings,
            version: version(name, &env.agentd.bin),
            skipped,
        });
    }
    // Ratios are to the first tool, and the outside loops run under it.
    match tools.first() {
        Some(t) if t.prefix.is_empty() => Ok((tools, infos)),
        _ => Err("bench: the first tool must be bare (no prefix)".into()),
    }
}

/// Writes results.json, results.md and the plots into `dir`.
fn render(dir: &Path, results: &Results) -> Result<(), String> {
    crate::bench_report::write(dir, results)?;
    let caption = format!(
        "agentd, bwrap and firejail: ratio to bare ({}, {} cores, Linux {})",
        results.date, results.machine.cores, results.machine.kernel
    );
    crate::bench_plot::ratios(&dir.join("ratios.png"), &results.workloads, &caption)?;
    if let Some(w) = results.workloads.iter().find(|w| w.section == "launch") {
        let caption = format!("launch latency: {} ({})", w.title, results.date);
        crate::bench_plot::launch(&dir.join("launch.png"), w, &caption)?;
    }
    Ok(())
}

/// `bench plot [DIR]`: results.md and the plots again from DIR/results.json.
fn replot(dir: &Path) -> Result<(), String> {
    let path = dir.join("results.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let results: Results =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    render(dir, &results)?;
    println!(
        "rewrote results.md, ratios.png and launch.png in {}",
        dir.display()
    );
    Ok(())
}

/// Where the comparison keeps its files under target/bench.
struct Layout {
    /// The workspace every tool runs in (writable): the input file, a source tree, outputs.
    ws: PathBuf,
    /// Read-only for the tools: the workload program and the mix script.
    bin_dir: PathBuf,
    benchprog: PathBuf,
    mix: PathBuf,
    /// agentd's audit logs, outside every tree a run may write.
    logs: PathBuf,
    /// Captured output of the workloads.
    scratch: PathBuf,
}

impl Layout {
    fn make(out_dir: &Path, bins: &Bins) -> Result<Self, String> {
        let outside = outside_tmp(out_dir);
        let l = Self {
            ws: out_dir.join("ws"),
            bin_dir: outside.join("bin"),
            benchprog: outside.join("bin/agentd-benchprog"),
            mix: outside.join("bin/mix.py"),
            logs: outside.join("logs"),
            scratch: out_dir.join("scratch"),
        };
        // Fresh each time: the workspace, and the runs' audit log.
        let _ = std::fs::remove_dir_all(&l.ws);
        let _ = std::fs::remove_dir_all(&l.logs);
        for d in [&l.ws, &l.bin_dir, &l.logs, &l.scratch] {
            std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        let copy = |from: &Path, to: &Path| {
            std::fs::copy(from, to)
                .map(|_| ())
                .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))
        };
        copy(&bins.benchprog, &l.benchprog)?;
        copy(&util::workspace_root().join("xtask/bench/mix.py"), &l.mix)?;
        let input = l.ws.join("input.txt");
        std::fs::write(&input, "the file the open and stat loops use\n")
            .map_err(|e| format!("write {}: {e}", input.display()))?;
        std::fs::create_dir_all(l.ws.join("out"))
            .map_err(|e| format!("create {}/out: {e}", l.ws.display()))?;
        source_tree(&l.ws.join("src"))?;
        Ok(l)
    }
}

/// Where the programs and the audit logs go: `out_dir`, unless it is under /tmp (as a
/// CI checkout may be). The python-agent preset lets a run write /tmp, and agentd refuses
/// an audit log inside a tree the run may write; firejail's profile mounts /tmp noexec,
/// so the workload program could not run from there (and it treats /var/tmp alike). Those
/// go under /opt/agentd-bench instead.
fn outside_tmp(out_dir: &Path) -> PathBuf {
    if out_dir.starts_with("/tmp") {
        PathBuf::from("/opt/agentd-bench")
    } else {
        out_dir.to_path_buf()
    }
}

/// A copy of this repository's tracked files, committed in a git repository of its own:
/// the tree the mix walks and runs `git status` in.
fn source_tree(dest: &Path) -> Result<(), String> {
    let root = util::workspace_root();
    let files = util::output(
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["ls-files", "-z"]),
    )
    .ok_or("git ls-files failed")?;
    for f in files.split('\0').filter(|f| !f.is_empty()) {
        let to = dest.join(f);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        // A tracked file may be deleted in the work tree; skip it.
        let _ = std::fs::copy(root.join(f), &to);
    }
    let git = |args: &[&str]| {
        util::run(
            Command::new("git")
                .arg("-C")
                .arg(dest)
                .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
                .args(args)
                .stdout(Stdio::null()),
        )
    };
    git(&["init", "-q"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "the tree the mix walks"])
}

/// The connect loop's server (`agentd-benchprog listen`: a backlog of 4096), killed by
/// pid when dropped.
pub struct Listener {
    _server: util::Helper,
    pub port: u16,
}

impl Listener {
    pub fn start(benchprog: &Path) -> Result<Self, String> {
        let (server, line) =
            util::Helper::start(Command::new(benchprog).args(["listen", "127.0.0.1"]))?;
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("{} listen: unexpected output {line:?}", benchprog.display()))?;
        Ok(Self {
            _server: server,
            port,
        })
    }
}

/// Net rules beyond the preset's, with the listener's among them.
const NET_RULES: usize = 1_000;

/// policies/python-agent.yaml, plus: the workload programs in `exec.allow` and
/// `fs.read`, and 1,000 `net.allow` rules, each a distinct 127.x /32 address with one
/// port (an LPM entry holds at most NET_RULES_PER_ENTRY = 32 rules), one of them the
/// listener. The rest of the preset (fs, budgets) is as shipped.
fn write_policy(path: &Path, l: &Layout, port: u16) -> Result<(), String> {
    let preset_path = util::workspace_root().join("policies/python-agent.yaml");
    let preset = std::fs::read_to_string(&preset_path)
        .map_err(|e| format!("read {}: {e}", preset_path.display()))?;
    let item = |s: &str| format!("    - \"{s}\"\n");
    let execs: String = [l.benchprog.display().to_string()]
        .into_iter()
        .chain(
            [
                "/usr/bin/true",
                "/usr/bin/git",
                "/usr/bin/sleep",
                "/usr/bin/env",
            ]
            .map(String::from),
        )
        .map(|s| item(&s))
        .collect();
    let mut rules: String = (0..NET_RULES - 1)
        .map(|i| {
            item(&format!(
                "127.1.{}.{}:{}/tcp",
                i / 200,
                1 + i % 200,
                20_000 + i
            ))
        })
        .collect();
    rules.push_str(&item(&format!("127.0.0.1:{port}/tcp")));
    let mut text = preset;
    for (anchor, add) in [
        ("fs:\n  read:\n", item(&l.bin_dir.display().to_string())),
        ("exec:\n  allow:\n", execs),
        ("net:\n  allow:\n", rules),
    ] {
        let at = text
            .find(anchor)
            .ok_or_else(|| format!("{}: no `{}`", preset_path.display(), anchor.trim_end()))?
            + anchor.len();
        text.insert_str(at, &add);
    }
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

/// `1000000` → `1,000,000`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn workloads(p: &Params, l: &Layout, port: u16) -> Vec<Workload> {
    let input = l.ws.join("input.txt").into_os_string();
    // `agentd-benchprog SUB ARGS.. N`, timed per operation.
    let prog = |sub: &str, args: &[&OsString], n: u64| -> Vec<OsString> {
        let mut v = vec![l.benchprog.clone().into_os_string(), sub.into()];
        v.extend(args.iter().map(|a| (*a).clone()));
        v.push(n.to_string().into());
        v
    };
    let (loopback, port, true_) = (
        "127.0.0.1".into(),
        port.to_string().into(),
        "/usr/bin/true".into(),
    );
    let loops: [(&str, &str, Unit, Vec<OsString>, u64); 5] = [
        (
            "getpid",
            "getpid",
            Unit::Ns,
            prog("getpid", &[], p.getpid),
            p.getpid,
        ),
        (
            "openat+close",
            "openat+close of an allowed file",
            Unit::Ns,
            prog("open", &[&input], p.open),
            p.open,
        ),
        (
            "stat",
            "stat of an allowed file",
            Unit::Ns,
            prog("stat", &[&input], p.stat),
            p.stat,
        ),
        (
            "connect+close",
            "TCP connect+close to a loopback listener",
            Unit::Us,
            prog("connect", &[&loopback, &port], p.connect),
            p.connect,
        ),
        (
            "fork+exec",
            "fork+exec+wait of /usr/bin/true",
            Unit::Us,
            prog("spawn", &[&true_], p.spawn),
            p.spawn,
        ),
    ];
    let mut w: Vec<Workload> = loops
        .into_iter()
        .map(|(key, what, unit, argv, ops)| Workload {
            key: key.into(),
            title: format!("{what} ×{}", thousands(ops)),
            unit,
            kind: Kind::Inside { argv, ops },
        })
        .collect();
    w.push(Workload {
        key: "python mix".into(),
        title: format!(
            "Python: walk, read and summarize a {}-file source tree, write outputs, \
             `git status`; {} pass(es)",
            tracked_files(),
            p.mix_passes
        ),
        unit: Unit::Ms,
        kind: Kind::Inside {
            argv: vec![
                "/usr/bin/python3".into(),
                l.mix.clone().into_os_string(),
                l.ws.join("src").into_os_string(),
                l.ws.join("out").into_os_string(),
                p.mix_passes.to_string().into(),
            ],
            ops: 1,
        },
    });
    w.push(Workload {
        key: "launch".into(),
        title: format!("TOOL /usr/bin/true ×{}", p.launches),
        unit: Unit::Ms,
        kind: Kind::Launch { count: p.launches },
    });
    for runs in p.outside_runs {
        let plural = if runs == 1 { "run" } else { "runs" };
        for (what, argv, ops) in [
            ("getpid", prog("getpid", &[], p.getpid), p.getpid),
            ("open", prog("open", &[&input], p.open), p.open),
        ] {
            w.push(Workload {
                key: format!("outside {what}, {runs} {plural}"),
                title: format!(
                    "outside any run: {what} ×{} while {runs} {plural} sleep",
                    thousands(ops)
                ),
                unit: Unit::Ns,
                kind: Kind::Outside { argv, ops, runs },
            });
        }
    }
    w
}

fn tracked_files() -> usize {
    util::output(
        Command::new("git")
            .arg("-C")
            .arg(util::workspace_root())
            .arg("ls-files"),
    )
    .map_or(0, |s| s.lines().count())
}

fn version(tool: &str, agentd: &Path) -> String {
    let first = |cmd: &mut Command| {
        util::output(cmd)
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_default()
    };
    match tool {
        "agentd" | "agentd daemon" => first(Command::new(agentd).arg("--version")),
        "bwrap" => first(Command::new("/usr/bin/bwrap").arg("--version")),
        "firejail" => first(Command::new("/usr/bin/firejail").arg("--version")),
        "env" => first(Command::new("/usr/bin/env").arg("--version")),
        _ => String::new(),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine(loadavg_start: String) -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                v.trim_start_matches([' ', '\t', ':', '='])
                    .trim()
                    .trim_matches('"')
                    .to_owned()
            })
            .unwrap_or_default()
    };
    let mem_kib: f64 = field(&read("/proc/meminfo"), "MemTotal")
        .trim_end_matches(" kB")
        .parse()
        .unwrap_or(0.0);
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: field(&read("/proc/cpuinfo"), "model name"),
        memory_gib: mem_kib / (1024.0 * 1024.0),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        distribution: field(&read("/etc/os-release"), "PRETTY_NAME"),
        loadavg_start,
        loadavg_end: loadavg(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(20_000), "20,000");
    }

    #[test]
    fn the_policy_is_the_preset_plus_programs_and_1000_rules() {
        let dir = std::env::temp_dir().join(format!("agentd-bench-policy-{}", std::process::id()));
        let l = Layout {
            ws: dir.join("ws"),
            bin_dir: dir.join("bin"),
            benchprog: dir.join("bin/agentd-benchprog"),
            mix: dir.join("bin/mix.py"),
            logs: dir.join("logs"),
            scratch: dir.join("scratch"),
        };
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("policy.yaml");
        write_policy(&path, &l, 4242).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(text.contains("name: python-agent"));
        assert!(text.contains(&format!("    - \"{}\"\n", l.benchprog.display())));
        assert!(text.contains("    - \"127.0.0.1:4242/tcp\"\n"));
        let rules = text
            .lines()
            .filter(|l| l.trim_start().starts_with("- \"") && l.contains("/tcp\""))
            .count();
        // The preset's two rules and the 1,000 added.
        assert_eq!(rules, 2 + NET_RULES);
    }
}
