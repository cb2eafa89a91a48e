//! The audit pipeline: records/s through the chained writer (`agentd audit bench-append`:
//! SHA-256 chain, Ed25519 checkpoint every 1000, fsync batches of 50 ms), `agentd audit
//! verify` MB/s on a log of [`Params::verify_bytes`] (1 GB in the full run), and a flood
//! of kernel denials through the ring buffer into the chain, where every event must be
//! either a record or counted in a `dropped` record.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::bench_report::Stat;
use crate::bench_tools::Agentd;
use crate::util;

pub struct Params {
    pub reps: usize,
    /// Records per append round.
    pub records: u64,
    /// Size of the log that verify reads.
    pub verify_bytes: u64,
    /// Denied opens of the flood.
    pub flood_opens: u64,
}

#[derive(Serialize, Deserialize)]
pub struct Results {
    pub records: u64,
    /// Records per second, wall clock and per CPU-second (both writer threads).
    pub append_rate: Stat,
    pub append_cpu_rate: Stat,
    pub verify_log_bytes: u64,
    pub verify_records: u64,
    pub verify_mbs: Stat,
    pub verify_cpu_mbs: Stat,
    pub flood: Flood,
}

#[derive(Serialize, Deserialize)]
pub struct Flood {
    pub opens: u64,
    pub denied_by_kernel: u64,
    pub records_written: u64,
    pub dropped_counted: u64,
    pub seconds: f64,
    pub every_event_accounted: bool,
}

pub fn measure(
    agentd: &Agentd,
    testprog: &Path,
    out_dir: &Path,
    p: &Params,
) -> Result<Results, String> {
    let log = out_dir.join("chain.jsonl");
    let (mut rate, mut rate_cpu) = (Vec::new(), Vec::new());
    let mut bytes_per_record = 0.0;
    for rep in 0..p.reps {
        eprintln!("bench: audit append {}/{}", rep + 1, p.reps);
        let (r, r_cpu) = append(agentd, &log, p.records)?;
        rate.push(r);
        rate_cpu.push(r_cpu);
        bytes_per_record = file_len(&log) as f64 / p.records as f64;
    }
    // The verify log: as many records as make `verify_bytes`, appended in one go.
    let big = out_dir.join("verify.jsonl");
    let verify_records = ((p.verify_bytes as f64 / bytes_per_record.max(1.0)).ceil() as u64).max(1);
    eprintln!(
        "bench: audit: writing a {:.0} MB log ({verify_records} records) for verify",
        p.verify_bytes as f64 / 1e6
    );
    append(agentd, &big, verify_records)?;
    let verify_log_bytes = file_len(&big);
    let (mut mbs, mut mbs_cpu) = (Vec::new(), Vec::new());
    for rep in 0..p.reps {
        eprintln!("bench: audit verify {}/{}", rep + 1, p.reps);
        let out = util::output(
            Command::new(&agentd.bin)
                .args(["audit", "verify"])
                .arg(&big)
                .arg("--key")
                .arg(agentd.key.with_extension("pub")),
        )
        .ok_or_else(|| format!("agentd audit verify {} failed", big.display()))?;
        mbs.push(number_before(&out, " MB/s").ok_or(format!("no MB/s in {out:?}"))?);
        mbs_cpu.push(
            number_before(&out, " MB per CPU-second").ok_or(format!("no CPU MB/s in {out:?}"))?,
        );
    }
    for f in [&log, &big] {
        remove_log(f);
    }
    Ok(Results {
        records: p.records,
        append_rate: Stat::of(&rate),
        append_cpu_rate: Stat::of(&rate_cpu),
        verify_log_bytes,
        verify_records,
        verify_mbs: Stat::of(&mbs),
        verify_cpu_mbs: Stat::of(&mbs_cpu),
        flood: flood(agentd, testprog, out_dir, p.flood_opens)?,
    })
}

/// One `bench-append` of `records` into a fresh `log`: (records/s, records per CPU-second).
fn append(agentd: &Agentd, log: &Path, records: u64) -> Result<(f64, f64), String> {
    remove_log(log);
    let out = util::output(
        Command::new(&agentd.bin)
            .args(["audit", "bench-append"])
            .arg(log)
            .args([
                "--records",
                &records.to_string(),
                "--flush",
                "50ms",
                "--key",
            ])
            .arg(&agentd.key),
    )
    .ok_or("agentd audit bench-append failed")?;
    Ok((
        number_before(&out, " records/s").ok_or(format!("no rate in {out:?}"))?,
        number_before(&out, " records per CPU-second").ok_or(format!("no CPU rate in {out:?}"))?,
    ))
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Removes a log this benchmark wrote and its `.head` file.
fn remove_log(log: &Path) {
    let _ = std::fs::remove_file(log);
    let mut head = log.as_os_str().to_owned();
    head.push(".head");
    let _ = std::fs::remove_file(head);
}

/// The number just before `unit` in `text`.
pub fn number_before(text: &str, unit: &str) -> Option<f64> {
    let head = &text[..text.find(unit)?];
    head.rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()?
        .parse()
        .ok()
}

/// A confined process makes `opens` denied opens; every one must be either a `denied`
/// record in the chain or counted in a `dropped` record (ring buffer full).
fn flood(agentd: &Agentd, testprog: &Path, out_dir: &Path, opens: u64) -> Result<Flood, String> {
    const SECRET: &str = "/etc/shadow";
    eprintln!("bench: audit: flood of {opens} denied opens");
    let policy = out_dir.join("flood.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\nname: flood\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{}\"]\nexec:\n  allow: [\"{}\"]\n",
            testprog.parent().map(|p| p.display().to_string()).unwrap_or_default(),
            testprog.display()
        ),
    )
    .map_err(|e| format!("write {}: {e}", policy.display()))?;
    let log = out_dir.join("flood.jsonl");
    remove_log(&log);
    let start = Instant::now();
    let out = util::output(agentd.run(&policy, &log).arg(testprog).args([
        "deny-flood",
        &opens.to_string(),
        SECRET,
    ]))
    .ok_or("the flood run failed")?;
    let seconds = start.elapsed().as_secs_f64();
    // "opens N: OK a EACCES b other c": b is the number just before " other".
    let denied_by_kernel = number_before(&out, " other")
        .map(|n| n as u64)
        .ok_or(format!("unexpected output {out:?}"))?;
    let text = std::fs::read_to_string(&log).map_err(|e| format!("read {}: {e}", log.display()))?;
    let needle = format!("\"path\":\"{SECRET}\"");
    let records_written = text
        .lines()
        .filter(|l| l.contains("\"event\":\"denied\"") && l.contains(&needle))
        .count() as u64;
    let dropped_counted: u64 = text
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
    remove_log(&log);
    Ok(Flood {
        opens,
        denied_by_kernel,
        records_written,
        dropped_counted,
        seconds,
        every_event_accounted: records_written + dropped_counted == denied_by_kernel,
    })
}

/// The audit section of results.md.
pub fn markdown(r: &Results) -> String {
    let row = |what: String, s: &Stat, unit: &str, target: &str| {
        format!(
            "| {what} | {:.0}{unit} | {:.0}{unit} | {} | {target} |\n",
            s.min,
            s.median,
            s.shown(0)
        )
    };
    let f = &r.flood;
    let mut md = String::from(
        "\n## Audit pipeline (agentd only)\n\n\
         | measure | min | median | samples | target |\n|---|---|---|---|---|\n",
    );
    md.push_str(&row(
        format!(
            "append into the chain ({} records a round: SHA-256 chain, Ed25519 checkpoint \
             every 1000, fsync batches of 50 ms)",
            r.records
        ),
        &r.append_rate,
        " records/s",
        "≥ 200,000 records/s",
    ));
    md.push_str(&row(
        "same, per CPU-second (both writer threads)".into(),
        &r.append_cpu_rate,
        "",
        "",
    ));
    md.push_str(&row(
        format!(
            "`agentd audit verify` of a {:.0} MB log ({} records; hashes and signatures)",
            r.verify_log_bytes as f64 / 1e6,
            r.verify_records
        ),
        &r.verify_mbs,
        " MB/s",
        "≥ 500 MB/s",
    ));
    md.push_str(&row(
        "same, per CPU-second".into(),
        &r.verify_cpu_mbs,
        " MB",
        "",
    ));
    md.push_str(&format!(
        "\nFlood: {} denied opens of /etc/shadow under `agentd run` in {:.1} s: the kernel \
         denied {}, {} `denied` records were written ({:.0} records/s end to end, kernel to \
         chain) and {} were counted in `dropped` records: **{}**.\n",
        f.opens,
        f.seconds,
        f.denied_by_kernel,
        f.records_written,
        f.records_written as f64 / f.seconds.max(1e-9),
        f.dropped_counted,
        if f.every_event_accounted {
            "every event accounted for"
        } else {
            "MISMATCH: written + dropped differs from what the kernel denied"
        },
    ));
    md
}
