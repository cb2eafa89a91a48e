//! The workloads and the loop that measures them: every repetition runs every workload
//! under every tool, tools interleaved (in an order that rotates each repetition), so that
//! machine noise falls on all of them alike and every ratio comes from one invocation.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::bench_tools::{terminate, Tool};

/// How a figure is shown (samples are kept in nanoseconds).
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    Ns,
    Us,
    Ms,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Ns => "ns",
            Unit::Us => "µs",
            Unit::Ms => "ms",
        }
    }

    pub fn scale(self, ns: f64) -> f64 {
        match self {
            Unit::Ns => ns,
            Unit::Us => ns / 1e3,
            Unit::Ms => ns / 1e6,
        }
    }
}

pub enum Kind {
    /// `argv` runs under the tool and reports the nanoseconds of `ops` operations.
    Inside { argv: Vec<OsString>, ops: u64 },
    /// `TOOL /usr/bin/true`, timed from spawn to exit, `count` times in all.
    Launch { count: usize },
    /// `argv` runs bare, outside any run, while `runs` runs of the tool sleep. The bare
    /// cell is the loop with nothing else running.
    Outside {
        argv: Vec<OsString>,
        ops: u64,
        runs: usize,
    },
}

pub struct Workload {
    /// Short name: the chart label and the JSON key.
    pub key: String,
    /// What it does, with its counts.
    pub title: String,
    pub unit: Unit,
    pub kind: Kind,
}

impl Workload {
    pub fn section(&self) -> &'static str {
        match self.kind {
            Kind::Inside { .. } => "inside",
            Kind::Launch { .. } => "launch",
            Kind::Outside { .. } => "outside",
        }
    }
}

/// Per-operation samples of one (workload, tool) cell, in nanoseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    pub wall: Vec<f64>,
    /// CPU time (user + system) per operation; empty where it is not measured (launch).
    pub cpu: Vec<f64>,
}

/// Where the runner writes the captured output of each command.
pub struct Runner<'a> {
    pub ws: &'a Path,
    pub scratch: PathBuf,
    pub reps: usize,
}

impl Runner<'_> {
    /// `cells[w][t]`: workload `w` under tool `t`. `after_rep(rep)` runs at the end of
    /// each repetition (a measurement that is no tool's, such as the floor).
    pub fn run(
        &self,
        tools: &[Tool],
        workloads: &[Workload],
        after_rep: &mut dyn FnMut(usize) -> Result<(), String>,
    ) -> Result<Vec<Vec<Samples>>, String> {
        let mut cells = vec![vec![Samples::default(); tools.len()]; workloads.len()];
        for rep in 0..self.reps {
            // Rotating the order keeps any effect of going first or last off one tool.
            let order: Vec<usize> = (0..tools.len()).map(|i| (i + rep) % tools.len()).collect();
            let mut w = 0;
            while w < workloads.len() {
                let wl = &workloads[w];
                eprintln!("bench: rep {}/{}: {}", rep + 1, self.reps, wl.title);
                match &wl.kind {
                    Kind::Inside { argv, ops } => {
                        for &t in &order {
                            let (wall, cpu) = self.timed_loop(tools[t].command(self.ws, argv))?;
                            cells[w][t].wall.push(wall / *ops as f64);
                            cells[w][t].cpu.push(cpu / *ops as f64);
                            settle(&tools[t])?;
                        }
                        w += 1;
                    }
                    Kind::Launch { count } => {
                        let per_rep = (*count).div_ceil(self.reps).max(1);
                        let argv = [OsString::from("/usr/bin/true")];
                        // A tool's launches of a repetition go one after another (the
                        // daemon's first one attaches its programs, the rest find them
                        // lingering), then its programs go before the next tool launches.
                        for &t in &order {
                            for _ in 0..per_rep {
                                let ns = self.launch(tools[t].command(self.ws, &argv))?;
                                cells[w][t].wall.push(ns);
                            }
                            settle(&tools[t])?;
                        }
                        w += 1;
                    }
                    Kind::Outside { runs, .. } => {
                        // Consecutive outside workloads with the same number of runs share
                        // the sleeping runs: starting 50 runs is the slow part.
                        let group: Vec<usize> = (w..workloads.len())
                            .take_while(|&i| {
                                matches!(&workloads[i].kind, Kind::Outside { runs: r, .. } if r == runs)
                            })
                            .collect();
                        for &t in &order {
                            let sleepers = if tools[t].prefix.is_empty() {
                                None
                            } else {
                                Some(Sleepers::start(&tools[t], *runs, self.ws)?)
                            };
                            for &i in &group {
                                if let Kind::Outside { argv, ops, .. } = &workloads[i].kind {
                                    let (wall, cpu) =
                                        self.timed_loop(tools[0].command(self.ws, argv))?;
                                    cells[i][t].wall.push(wall / *ops as f64);
                                    cells[i][t].cpu.push(cpu / *ops as f64);
                                }
                            }
                            drop(sleepers);
                            settle(&tools[t])?;
                        }
                        w += group.len();
                    }
                }
            }
            after_rep(rep)?;
        }
        Ok(cells)
    }

    /// Runs a loop that prints `ns N` and `cpu_ns N`; returns both.
    pub fn timed_loop(&self, cmd: Command) -> Result<(f64, f64), String> {
        let out = self.capture(cmd, Duration::from_secs(300))?;
        let number = |key: &str| {
            out.stdout
                .lines()
                .find_map(|l| {
                    l.strip_prefix(key)
                        .and_then(|n| n.trim().parse::<f64>().ok())
                })
                .ok_or_else(|| format!("{}: no `{key}N` line in its output", out.describe()))
        };
        Ok((number("ns ")?, number("cpu_ns ")?))
    }

    /// Nanoseconds from spawn to exit of a command that must exit 0.
    fn launch(&self, mut cmd: Command) -> Result<f64, String> {
        let shown = format!("{cmd:?}");
        let start = Instant::now();
        let status = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("{shown}: {e}"))?;
        let ns = start.elapsed().as_nanos() as f64;
        if status.success() {
            return Ok(ns);
        }
        // Once more with its output, for the error message.
        let mut again = Command::new(cmd.get_program());
        again.args(cmd.get_args());
        if let Some(dir) = cmd.get_current_dir() {
            again.current_dir(dir);
        }
        let out = self.capture(again, Duration::from_secs(60));
        Err(match out {
            Ok(o) => format!("{shown} exited with {status}; again: {}", o.describe()),
            Err(e) => format!("{shown} exited with {status}; again: {e}"),
        })
    }

    /// Runs `cmd` with its output in scratch files, killing it after `limit`; the command
    /// must exit 0.
    fn capture(&self, mut cmd: Command, limit: Duration) -> Result<Output, String> {
        let shown = format!("{cmd:?}");
        let (out_path, err_path) = (self.scratch.join("stdout"), self.scratch.join("stderr"));
        let file =
            |p: &Path| std::fs::File::create(p).map_err(|e| format!("create {}: {e}", p.display()));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(file(&out_path)?)
            .stderr(file(&err_path)?)
            .spawn()
            .map_err(|e| format!("{shown}: {e}"))?;
        let status = wait_until(&mut child, Instant::now() + limit)
            .ok_or_else(|| format!("{shown} took longer than {} s: killed", limit.as_secs()))?;
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let out = Output {
            shown,
            status,
            stdout: read(&out_path),
            stderr: read(&err_path),
        };
        if status.success() {
            Ok(out)
        } else {
            Err(out.describe())
        }
    }
}

struct Output {
    shown: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn describe(&self) -> String {
        format!(
            "{} exited with {}: {}{}",
            self.shown,
            self.status,
            self.stdout.trim(),
            tail(&self.stderr)
        )
    }
}

/// The last lines of a command's stderr, for error messages.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    let from = lines.len().saturating_sub(5);
    if lines.is_empty() {
        String::new()
    } else {
        format!(" (stderr: {})", lines[from..].join(" | "))
    }
}

/// Waits for `child` until `deadline`; past it, kills it and returns `None`.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `n` runs of `sleep 3600` under one tool, ended (by pid) when dropped.
struct Sleepers {
    children: Vec<Child>,
}

impl Sleepers {
    /// Starts them and waits until each has exec'd `sleep`, i.e. until its confinement
    /// is in place (every tool sets it up before the exec).
    fn start(tool: &Tool, n: usize, ws: &Path) -> Result<Self, String> {
        let argv = [OsString::from("/usr/bin/sleep"), OsString::from("3600")];
        let mut s = Sleepers {
            children: Vec::new(),
        };
        for _ in 0..n {
            let child = tool
                .command(ws, &argv)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("start {} sleep: {e}", tool.name))?;
            s.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30 + 2 * n as u64);
        loop {
            for c in &mut s.children {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!("{} sleep exited early with {status}", tool.name));
                }
            }
            let procs = proc_table();
            let ready = match tool._service.as_ref() {
                // Through a daemon the command is the daemon's child, not the client's.
                Some(service) => sleep_descendants(&procs, service.pid()),
                None => s
                    .children
                    .iter()
                    .filter(|c| has_sleep_descendant(&procs, c.id()))
                    .count(),
            };
            if ready == n {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} sleep: only {ready} of {n} runs started in time",
                    tool.name
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        // SIGTERM to all first, so they wind down in parallel.
        for c in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        for c in &mut self.children {
            terminate(c);
        }
    }
}

/// (pid, ppid, comm) of every process.
fn proc_table() -> Vec<(u32, u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?.to_owned();
        let ppid = stat.get(close + 2..)?.split(' ').nth(1)?.parse().ok()?;
        Some((pid, ppid, comm))
    })
    .collect()
}

/// How many `sleep` processes descend from `root`.
fn sleep_descendants(procs: &[(u32, u32, String)], root: u32) -> usize {
    let mut frontier = vec![root];
    let mut n = 0;
    while let Some(p) = frontier.pop() {
        for (pid, ppid, comm) in procs {
            if *ppid == p {
                if comm == "sleep" {
                    n += 1;
                }
                frontier.push(*pid);
            }
        }
    }
    n
}

fn has_sleep_descendant(procs: &[(u32, u32, String)], root: u32) -> bool {
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid, comm) in procs {
            if *pid == p && comm == "sleep" {
                return true;
            }
            if *ppid == p {
                frontier.push(*pid);
            }
        }
    }
    false
}

/// Waits until what `tool` left attached for the host (the daemon's lingering programs)
/// is gone, so that the next tool is not measured with it.
fn settle(tool: &Tool) -> Result<(), String> {
    match &tool.settle {
        Some(s) => s.wait(),
        None => Ok(()),
    }
}
