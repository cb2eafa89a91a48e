//! Learn mode's second half: read what runs used from the audit log and suggest the
//! policy that allows it (`agentd policy suggest`).
//!
//! [`Observed::collect`] folds a log's records (every run, or the runs asked for) into
//! counts by subject; [`suggest::suggest`] generalises them into readable rules. Both are
//! pure functions of their input (ordered maps throughout), so the same log gives
//! byte-identical output.
//!
//! What a run "used" is what its records show: `exec` records (every exec, allowed),
//! and the `would_deny` records a `mode: audit` / `--learn` run writes for everything
//! its policy would have refused (files, executable mappings, connects, sendto, binds,
//! unix sockets, names), plus `dns` answers and the `run_end` budget figures. With
//! `--base`, what the base already allows is not counted.

pub mod suggest;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::audit::judge::Judge;

/// A destination or bind: address (or name), port, `tcp`/`udp`.
pub type Endpoint = (String, u16, String);

/// What the selected runs used, each subject with the number of records behind it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Observed {
    /// The runs folded in, in log order of their `run_start`.
    pub runs: Vec<String>,
    /// The `workspace` of their `run_start` records.
    pub workspaces: BTreeSet<String>,
    pub reads: BTreeMap<String, u64>,
    pub writes: BTreeMap<String, u64>,
    pub execs: BTreeMap<String, u64>,
    /// PROT_EXEC mappings of files outside `exec.allow`/`exec.libraries`.
    pub mappings: BTreeMap<String, u64>,
    pub connects: BTreeMap<Endpoint, u64>,
    pub binds: BTreeMap<Endpoint, u64>,
    pub unix: BTreeMap<String, u64>,
    /// Names asked of the resolver, with every address it answered.
    pub names: BTreeMap<String, (u64, BTreeSet<String>)>,
    /// Private, loopback and link-local addresses among those answers (`dns_answer`
    /// records): enforce mode's resolver drops them unless an address rule covers them.
    pub private_answers: BTreeSet<String>,
    /// Budget name → (unit, highest peak or total of any run).
    pub budgets: BTreeMap<String, (String, u64)>,
    /// The longest run, in ms.
    pub elapsed_ms: u64,
}

impl Observed {
    /// Folds the JSON lines of a log. `runs` empty: every run with a `run_start`. Records
    /// that `base` already allows are not counted (they need no new rule).
    pub fn collect(log: &str, runs: &[String], base: Option<&Judge>) -> Self {
        let mut o = Observed::default();
        let wanted = |r: &str| runs.is_empty() || runs.iter().any(|w| w == r);
        for line in log.lines() {
            let Ok(rec) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let run = rec["run"].as_str().unwrap_or("");
            if !wanted(run) {
                continue;
            }
            if rec["event"] == "run_start" {
                o.runs.push(run.to_owned());
                if let Some(w) = rec["workspace"].as_str() {
                    o.workspaces.insert(w.to_owned());
                }
                continue;
            }
            if !o.runs.iter().any(|r| r == run) {
                continue; // the daemon's or writer's own records, or a run begun earlier
            }
            o.fold(&rec, base);
        }
        o
    }

    fn fold(&mut self, rec: &Value, base: Option<&Judge>) {
        let event = rec["event"].as_str().unwrap_or("");
        let op = rec["op"].as_str().unwrap_or("");
        let s = |k: &str| rec[k].as_str().map(str::to_owned);
        let allowed_by_base = || {
            base.and_then(|j| j.judge(rec))
                .is_some_and(|(_, v)| matches!(v, crate::audit::judge::Verdict::Allow(_)))
        };
        match event {
            "exec" => {
                if let Some(p) = s("path") {
                    if !allowed_by_base() {
                        bump(&mut self.execs, p);
                    }
                }
            }
            "dns" => {
                if let Some(name) = s("name") {
                    let e = self.names.entry(name).or_default();
                    e.0 += 1;
                    if let Some(a) = rec["addrs"].as_array() {
                        e.1.extend(a.iter().filter_map(Value::as_str).map(str::to_owned));
                    }
                }
            }
            "run_end" => self.run_end(rec),
            "denied" => self.denied(rec, op, allowed_by_base()),
            _ => {}
        }
    }

    fn denied(&mut self, rec: &Value, op: &str, allowed_by_base: bool) {
        let path = rec["path"].as_str().map(str::to_owned);
        if rec["family"] == "AF_UNIX" {
            if let Some(p) = path {
                bump(&mut self.unix, p);
            }
            return;
        }
        if let (Some(dst), Some(port), Some(proto)) = (
            rec["dst"].as_str(),
            rec["port"].as_u64(),
            rec["proto"].as_str(),
        ) {
            if allowed_by_base {
                return;
            }
            let ep = (dst.to_owned(), port as u16, proto.to_owned());
            if op == "bind" {
                bump(&mut self.binds, ep);
            } else {
                bump(&mut self.connects, ep);
            }
            return;
        }
        if op == "dns_query" {
            if let Some(name) = rec["name"].as_str() {
                self.names.entry(name.to_owned()).or_default().0 += 1;
            }
            return;
        }
        if op == "dns_answer" {
            if let Some(name) = rec["name"].as_str() {
                let addrs: Vec<String> = rec["addrs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect();
                let e = self.names.entry(name.to_owned()).or_default();
                e.0 += 1;
                e.1.extend(addrs.iter().cloned());
                self.private_answers.extend(addrs);
            }
            return;
        }
        let Some(p) = path else { return };
        match op {
            "mmap_exec" | "mprotect_exec" => bump(&mut self.mappings, p),
            _ if allowed_by_base => {}
            "exec" => bump(&mut self.execs, p),
            "write" | "create" | "truncate" | "unlink" | "rename" | "mkdir" | "rmdir" | "link"
            | "setattr" => bump(&mut self.writes, p),
            _ if rec["access"] == "write" => bump(&mut self.writes, p),
            "" => {}
            _ => bump(&mut self.reads, p),
        }
    }

    fn run_end(&mut self, rec: &Value) {
        if let Some(ms) = rec["elapsed_ms"].as_u64() {
            self.elapsed_ms = self.elapsed_ms.max(ms);
        }
        let Some(b) = rec["budgets"].as_object() else {
            return;
        };
        for (name, f) in b {
            // Rate forms (a window) are not suggested: their peak depends on the window.
            if !f["window_ms"].is_null() {
                continue;
            }
            let Some(v) = f["peak"].as_u64().or_else(|| f["used"].as_u64()) else {
                continue;
            };
            let unit = f["unit"].as_str().unwrap_or("count").to_owned();
            let e = self.budgets.entry(name.clone()).or_insert((unit, 0));
            e.1 = e.1.max(v);
        }
    }

    /// The number of records behind everything observed.
    pub fn events(&self) -> u64 {
        let n = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
        n(&self.reads)
            + n(&self.writes)
            + n(&self.execs)
            + n(&self.mappings)
            + n(&self.unix)
            + self.connects.values().sum::<u64>()
            + self.binds.values().sum::<u64>()
            + self.names.values().map(|v| v.0).sum::<u64>()
    }
}

fn bump<K: Ord>(m: &mut BTreeMap<K, u64>, k: K) {
    *m.entry(k).or_insert(0) += 1;
}
