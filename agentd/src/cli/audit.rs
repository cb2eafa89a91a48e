//! `agentd audit verify|tail|show|replay|rotate-key`: read the chained audit log.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde::Deserialize;
use serde_json::Value;

use crate::audit::event::{Budget, BudgetStep, Exec};
use crate::audit::judge::{Judge, Verdict};
use crate::audit::verify::{verify_bytes, HeadFile, Trust};
use crate::audit::{keys, AuditEvent, AuditLog, AuditWriter, CheckpointPolicy, Flush};
use crate::policy;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain and the checkpoint signatures; exit 1 naming the first bad record.
    Verify {
        file: PathBuf,
        /// Public key the checkpoints must be signed by (default: the host key's audit.pub,
        /// in $AGENTD_KEY_DIR or /var/lib/agentd, if it exists, else the key of the first
        /// checkpoint, trusted on first use).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Check the hash chain only, not signatures.
        #[arg(long, conflicts_with = "key")]
        unsigned: bool,
        /// The signed head written next to the log (default: FILE.head if it exists).
        #[arg(long)]
        head: Option<PathBuf>,
    },
    /// Print records as readable lines (`--json`: as they are); `-f` follows the file.
    Tail {
        file: PathBuf,
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long)]
        json: bool,
        /// Only records of this run.
        #[arg(long)]
        run: Option<String>,
    },
    /// One run's summary: what was denied, budgets used, and how it ended.
    Show {
        file: PathBuf,
        #[arg(long)]
        run: String,
    },
    /// Re-judge every recorded decision under another policy; print what would flip.
    Replay {
        file: PathBuf,
        #[arg(long)]
        policy: PathBuf,
        /// Directory that `{workspace}` stands for (default: the current directory).
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Only records of this run.
        #[arg(long)]
        run: Option<String>,
    },
    /// Append a key_rotation record signed by both keys.
    RotateKey {
        file: PathBuf,
        #[arg(long)]
        old: PathBuf,
        #[arg(long)]
        new: PathBuf,
    },
    /// Benchmark helper: append N synthetic denial-sized records through the writer.
    #[command(hide = true)]
    BenchAppend {
        file: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value = "50ms")]
        flush: Flush,
    },
}

pub fn audit(cmd: AuditCommand) -> ExitCode {
    let r = match cmd {
        AuditCommand::Verify {
            file,
            key,
            unsigned,
            head,
        } => return verify(&file, key.as_deref(), unsigned, head),
        AuditCommand::Tail {
            file,
            follow,
            json,
            run,
        } => tail(&file, follow, json, run.as_deref()),
        AuditCommand::Show { file, run } => show(&file, &run),
        AuditCommand::Replay {
            file,
            policy,
            workspace,
            run,
        } => replay(&file, &policy, workspace, run.as_deref()),
        AuditCommand::RotateKey { file, old, new } => rotate(&file, &old, &new),
        AuditCommand::BenchAppend {
            file,
            records,
            key,
            flush,
        } => bench_append(&file, records, &key, flush),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentd: audit: {e}");
            ExitCode::from(2)
        }
    }
}

fn read(file: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
}

fn verify(file: &Path, key: Option<&Path>, unsigned: bool, head: Option<PathBuf>) -> ExitCode {
    let fail = |e: String| {
        eprintln!("agentd: audit: {e}");
        ExitCode::from(2)
    };
    let default_pub = keys::host_key_dir().join(keys::PUBLIC_FILE);
    let trust = if unsigned {
        Trust::Unsigned
    } else if let Some(k) = key {
        match keys::load_verifying_key(k) {
            Ok(k) => Trust::Key(k),
            Err(e) => return fail(e.to_string()),
        }
    } else if default_pub.exists() {
        match keys::load_verifying_key(&default_pub) {
            Ok(k) => Trust::Key(k),
            Err(e) => return fail(e.to_string()),
        }
    } else {
        eprintln!(
            "agentd: audit: no --key and no {}: trusting the key of the first checkpoint",
            default_pub.display()
        );
        Trust::FromLog
    };
    let head_path = head.unwrap_or_else(|| {
        let mut n = file.as_os_str().to_owned();
        n.push(".head");
        PathBuf::from(n)
    });
    let head = std::fs::read_to_string(&head_path)
        .ok()
        .and_then(|t| HeadFile::parse(&t));
    let data = match read(file) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let t0 = Instant::now();
    let cpu0 = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID);
    let report = verify_bytes(&data, &trust, head.as_ref());
    let took = t0.elapsed();
    let cpu = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(cpu0);
    for line in &report.torn_recovered {
        println!(
            "{}: line {line}: torn bytes from a crash, sealed over by the next writer",
            file.display()
        );
    }
    match &report.damage {
        None => {
            println!(
                "{}: OK: {} records, {} checkpoint(s), {} rotation(s){}; {:.1} MB/s ({:.1} MB per CPU-second)",
                file.display(),
                report.records,
                report.checkpoints,
                report.rotations,
                match (&report.key, report.signed_through) {
                    (Some(k), Some(s)) => format!(", signed through seq {s} by key {k}"),
                    _ => ", signatures not checked".into(),
                },
                data.len() as f64 / took.as_secs_f64().max(1e-9) / 1e6,
                data.len() as f64 / cpu.as_secs_f64().max(1e-9) / 1e6
            );
            ExitCode::SUCCESS
        }
        Some(f) => {
            println!("{}: {f}", file.display());
            for f in &report.also {
                println!("{}: also {f}", file.display());
            }
            println!(
                "{}: {} record(s) before it verify",
                file.display(),
                report.records
            );
            ExitCode::from(1)
        }
    }
}

/// One record as a readable line.
/// One record line as `audit tail` shows it (a line that is not JSON as it is).
pub fn readable_line(line: &str) -> String {
    match serde_json::from_str::<Value>(line) {
        Ok(v) => human(&v),
        Err(_) => line.to_owned(),
    }
}

fn human(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let mut out = format!(
        "{:>6} {} {} {}/{}",
        v["seq"],
        s("ts"),
        s("run"),
        s("layer"),
        s("event")
    );
    if let Some(d) = v["decision"].as_str() {
        out.push_str(&format!(" [{d}]"));
    }
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            if matches!(
                k.as_str(),
                "seq" | "prev" | "hash" | "ts" | "run" | "layer" | "event" | "decision" | "sig"
            ) {
                continue;
            }
            match val {
                Value::Object(_) => out.push_str(&format!(" {k}={{…}}")),
                Value::String(t) => out.push_str(&format!(" {k}={t}")),
                Value::Null => {}
                other => out.push_str(&format!(" {k}={other}")),
            }
        }
    }
    out
}

fn tail(file: &Path, follow: bool, json: bool, run: Option<&str>) -> Result<(), String> {
    let mut f =
        std::fs::File::open(file).map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let mut carry: Vec<u8> = Vec::new();
    let mut stdout = std::io::stdout().lock();
    loop {
        let mut chunk = Vec::new();
        f.read_to_end(&mut chunk)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        carry.extend_from_slice(&chunk);
        let complete = carry.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in carry[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                if !json {
                    let _ = writeln!(stdout, "  (torn or unreadable line: {} bytes)", line.len());
                }
                continue;
            };
            if run.is_some_and(|r| v["run"] != r) {
                continue;
            }
            let shown = if json {
                String::from_utf8_lossy(line).into_owned()
            } else {
                human(&v)
            };
            if writeln!(stdout, "{shown}").is_err() {
                return Ok(()); // stdout closed (e.g. piped into head)
            }
        }
        carry.drain(..complete);
        let _ = stdout.flush();
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
        // A file replaced or truncated under us: start over.
        let pos = f.stream_position().unwrap_or(0);
        if std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) < pos {
            f.seek(SeekFrom::Start(0))
                .map_err(|e| format!("cannot seek {}: {e}", file.display()))?;
            carry.clear();
        }
    }
}

fn records(file: &Path) -> Result<Vec<Value>, String> {
    let data = read(file)?;
    Ok(data
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .collect())
}

fn show(file: &Path, run: &str) -> Result<(), String> {
    let recs: Vec<Value> = records(file)?
        .into_iter()
        .filter(|r| r["run"] == run)
        .collect();
    if recs.is_empty() {
        return Err(format!("no records of run {run} in {}", file.display()));
    }
    let mut out = String::new();
    let mut denied: BTreeMap<String, u64> = BTreeMap::new();
    let mut execs = 0u64;
    let mut dropped = 0u64;
    for r in &recs {
        match r["event"].as_str().unwrap_or("") {
            "run_start" => out.push_str(&format!(
                "run {run}\n  started  {}\n  command  {}\n  policy   {} ({}, mode {})\n",
                r["ts"].as_str().unwrap_or(""),
                r["argv"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" "))
                    .unwrap_or_default(),
                r["policy"].as_str().unwrap_or(""),
                r["policy_name"].as_str().unwrap_or(""),
                r["mode"].as_str().unwrap_or(""),
            )),
            "exec" => execs += 1,
            "dropped" => dropped += r["count"].as_u64().unwrap_or(0),
            "budget" => {
                if let Ok(AuditEvent::Budget(b)) = AuditEvent::deserialize(r) {
                    out.push_str(&format!("  budget   {}\n", budget_line(&b)));
                }
            }
            "run_end" => {
                let ending = match (r["exit_code"].as_i64(), r["signal"].as_str()) {
                    (Some(c), _) => format!("exit code {c}"),
                    (None, Some(s)) => format!("killed by {s}"),
                    _ => r["error"].as_str().unwrap_or("unknown").to_owned(),
                };
                out.push_str(&format!(
                    "  ended    {} — {ending}, agentd status {}{}\n",
                    r["ts"].as_str().unwrap_or(""),
                    r["status"],
                    r["killed_by"]
                        .as_str()
                        .map(|k| format!(", killed by agentd ({k})"))
                        .unwrap_or_default()
                ));
                if let Some(ms) = r["elapsed_ms"].as_u64() {
                    out.push_str(&format!("  wall     {ms} ms\n"));
                }
            }
            _ => {}
        }
        if matches!(r["decision"].as_str(), Some("deny" | "would_deny")) {
            let key = format!(
                "{} {} {} {} ({}, {})",
                r["decision"].as_str().unwrap_or(""),
                r["layer"].as_str().unwrap_or(""),
                r["op"]
                    .as_str()
                    .unwrap_or(r["event"].as_str().unwrap_or("")),
                r["path"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| r["dst"].as_str().map(|d| format!("{d}:{}", r["port"])))
                    .unwrap_or_default(),
                r["rule"].as_str().unwrap_or("no rule"),
                r["errno"].as_str().unwrap_or("-"),
            );
            *denied.entry(key).or_default() += 1;
        }
    }
    out.push_str(&format!("  execs    {execs}\n"));
    if dropped > 0 {
        out.push_str(&format!("  dropped  {dropped} kernel event(s) lost\n"));
    }
    out.push_str(&format!("  denied   {}\n", denied.values().sum::<u64>()));
    for (k, n) in &denied {
        out.push_str(&format!("    {n:>5} × {k}\n"));
    }
    print!("{out}");
    Ok(())
}

/// What a `budget` record says, for `audit show`.
fn budget_line(b: &Budget) -> String {
    let step = |s: &BudgetStep, did: &str| {
        format!(
            "{} exceeded (limit {} {}, used {}, step {}): {did}",
            s.budget, s.limit, s.unit, s.used, s.step
        )
    };
    match b {
        Budget::Warn(w) => step(&w.step, "warned"),
        Budget::Freeze(f) if f.frozen => step(&f.step, "froze the run"),
        Budget::Freeze(f) => step(&f.step, "could not freeze the run"),
        Budget::Kill(k) => step(&k.step, "killed the run"),
        Budget::Resume(r) => format!("{}: resumed", r.budget.as_deref().unwrap_or("-")),
        Budget::OomKill(o) => format!(
            "memory: the kernel OOM-killed {} process(es)",
            o.new_oom_kills
        ),
        Budget::ForkRefused(f) => {
            format!("pids: the kernel refused {} fork(s)", f.new_refused_forks)
        }
        Budget::AbortSockets(_) => "aborted the run's tcp connections".into(),
    }
}

/// A record that carries a decision no replay rule re-judges (`layer/event`), so that
/// replay lists it as not judged instead of passing over it. Budget notices and
/// `agentd stop` are not policy decisions of their own: budgets are judged at run_end.
/// Nor is the seccomp baseline's refusal of a syscall, which no policy changes.
fn unreplayable(r: &Value) -> Option<String> {
    r["decision"].as_str()?;
    let event = r["event"].as_str().unwrap_or("");
    if matches!(event, "budget" | "stop") {
        return None;
    }
    // The seccomp baseline is the same under every policy: its refusals cannot flip.
    if r["layer"] == "seccomp" && r["op"] == "syscall" {
        return None;
    }
    Some(format!("{}/{event}", r["layer"].as_str().unwrap_or("")))
}

/// Whether the recorded run denied this subject: deny, kill, and an audit run's
/// would_deny (what its policy would have denied); for a budget at run end, whether that
/// budget killed the run. A learn run denies nothing and judges against no policy of its
/// own: its would_deny records are what the run was let do, so a policy that allows them
/// flips nothing, and one that denies them is an allow→deny flip.
fn recorded_deny(r: &Value, subject: &crate::audit::judge::Subject, learn_run: bool) -> bool {
    if r["event"] == "run_end" {
        return r["killed_by"] == subject.what.as_str();
    }
    match r["decision"].as_str() {
        Some("deny" | "kill") => true,
        Some("would_deny") => !learn_run,
        _ => false,
    }
}

fn replay(
    file: &Path,
    policy_file: &Path,
    workspace: Option<PathBuf>,
    run: Option<&str>,
) -> Result<(), String> {
    let opts = super::load_options(workspace)?;
    let policy = policy::load_file(policy_file, &opts).map_err(|e| e.to_string())?;
    let judge = Judge::new(&policy);
    let mut judged = 0u64;
    // (direction, kind, subject) -> (count, rule now); direction "not judged" for what
    // the log cannot decide, with the reason.
    let mut flips: BTreeMap<(&'static str, &'static str, String), (u64, String)> = BTreeMap::new();
    // Runs in mode `learn`, from their run_start records (which come first).
    let mut learn_runs = std::collections::BTreeSet::new();
    for r in records(file)? {
        if run.is_some_and(|id| r["run"] != id) {
            continue;
        }
        if r["event"] == "run_start" && r["mode"] == "learn" {
            if let Some(id) = r["run"].as_str() {
                learn_runs.insert(id.to_owned());
            }
        }
        let learn_run = r["run"].as_str().is_some_and(|id| learn_runs.contains(id));
        let verdicts = judge.judge_all(&r);
        if verdicts.is_empty() {
            if let Some(what) = unreplayable(&r) {
                let e = flips
                    .entry(("not judged", "other", what))
                    .or_insert((0, "not judged: no replay rule for this record kind".into()));
                e.0 += 1;
            }
            continue;
        }
        for (subject, verdict) in verdicts {
            let dir = match &verdict {
                Verdict::NotJudged(_) => "not judged",
                v => {
                    judged += 1;
                    match (recorded_deny(&r, &subject, learn_run), v.is_deny()) {
                        (false, true) => "allow→deny",
                        (true, false) => "deny→allow",
                        _ => continue,
                    }
                }
            };
            let now = match &verdict {
                Verdict::NotJudged(why) => format!("not judged: {why}"),
                v => v.reason().to_owned(),
            };
            let e = flips
                .entry((dir, subject.kind, subject.what))
                .or_insert((0, now));
            e.0 += 1;
        }
    }
    let to_deny: u64 = flips
        .iter()
        .filter(|(k, _)| k.0 == "allow→deny")
        .map(|(_, v)| v.0)
        .sum();
    let to_allow: u64 = flips
        .iter()
        .filter(|(k, _)| k.0 == "deny→allow")
        .map(|(_, v)| v.0)
        .sum();
    let not_judged: u64 = flips
        .iter()
        .filter(|(k, _)| k.0 == "not judged")
        .map(|(_, v)| v.0)
        .sum();
    println!(
        "replay of {} under {}: {judged} decision(s) re-judged, {} flip(s): {to_deny} allow→deny, {to_allow} deny→allow; {not_judged} not judged",
        file.display(),
        policy_file.display(),
        to_deny + to_allow
    );
    if !flips.is_empty() {
        println!(
            "{:<11} {:<6} {:>6}  {:<40} now",
            "flip", "kind", "count", "subject"
        );
        for ((dir, kind, what), (n, rule)) in &flips {
            println!("{dir:<11} {kind:<6} {n:>6}  {what:<40} {rule}");
        }
    }
    Ok(())
}

fn rotate(file: &Path, old: &Path, new: &Path) -> Result<(), String> {
    let old_k = keys::load_signing_key(old).map_err(|e| e.to_string())?;
    let new_k = keys::load_signing_key(new).map_err(|e| e.to_string())?;
    let mut log = AuditLog::open(file, "-").map_err(|e| e.to_string())?;
    let seq = log.rotate_key(&old_k, &new_k).map_err(|e| e.to_string())?;
    println!(
        "{}: seq {seq}: key rotated from {} to {}",
        file.display(),
        keys::key_hex(&old_k.verifying_key()),
        keys::key_hex(&new_k.verifying_key())
    );
    Ok(())
}

fn bench_append(file: &Path, n: u64, key: &Path, flush: Flush) -> Result<(), String> {
    let key = keys::load_signing_key(key).map_err(|e| e.to_string())?;
    let log = AuditLog::open(file, "bench")
        .map_err(|e| e.to_string())?
        .with_checkpoints(Some(CheckpointPolicy {
            key,
            every: 1000,
            interval: Duration::from_secs(10),
        }));
    let writer = AuditWriter::spawn(log, flush).map_err(|e| e.to_string())?;
    let mut h = writer.handle("bench").map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let cpu0 = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID);
    for i in 0..n {
        // A batched record about the size of a denial (denials are fsync'd one by one).
        let exec = Exec {
            pid: 4242,
            tid: 4242,
            ppid: 4241,
            uid: 1000,
            comm: "agent".into(),
            path: format!("/home/user/bin/tool-{i}"),
            filename: format!("/home/user/bin/tool-{i}"),
        };
        h.append("bpf", Some(crate::audit::Decision::Allow), exec.into())
            .map_err(|e| e.to_string())?;
    }
    drop(h);
    writer.finish().map_err(|e| e.to_string())?;
    let s = t0.elapsed().as_secs_f64();
    let cpu = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID)
        .saturating_sub(cpu0)
        .as_secs_f64();
    println!(
        "appended {n} records in {s:.3}s: {:.0} records/s ({:.0} records per CPU-second, both threads)",
        n as f64 / s,
        n as f64 / cpu.max(1e-9)
    );
    Ok(())
}

/// CPU time of this thread or process: the benchmarks report it next to wall time because
/// the build machine is shared (wall-clock rates there measure the neighbours too).
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct we own.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn show_reads_budget_records_by_their_fields() {
        let r = serde_json::json!({"seq": 3, "event": "budget", "action": "kill",
            "budget": "wall_time", "step": "kill@100%", "limit": 2000, "unit": "ms",
            "threshold": 2000, "used": 2013, "processes_killed": 1});
        let Ok(AuditEvent::Budget(b)) = AuditEvent::deserialize(&r) else {
            panic!("not a budget record");
        };
        assert_eq!(
            budget_line(&b),
            "wall_time exceeded (limit 2000 ms, used 2013, step kill@100%): killed the run"
        );
    }
}
