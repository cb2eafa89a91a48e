//! Re-deciding a recorded event under a policy: the heart of `agentd audit replay`.
//!
//! `Judge::new` does the policy's one-time work (the interpreters that `exec.allow`
//! implies, as the landlock layer computes them); `Judge::judge` is then a pure function
//! of the policy and one record. A layer whose records should be replayable records what
//! was judged and adds a case to `Judge::judge`:
//!
//! | record                                        | judged as                          |
//! |-----------------------------------------------|------------------------------------|
//! | `event: exec` (allowed) / `op: exec` (denied) | `path` against `exec.allow`        |
//! | `op: open/read/write/create/…`, `path`, `access` | `fs.read`/`fs.write`         |
//! | `dst`, `port`, `proto` (`tcp`/`udp`)          | `net.allow` (domains: undecidable) |
//! | `op: dns_query`, `name`                       | `net.allow` name rules             |
//! | `event: run_end` with `elapsed_ms`            | `budgets.wall_time`                |
//! | `event: run_end` with `budgets.NAME.{used,peak}` | `budgets.NAME` (total forms)    |
//! | `event: run_end` with `budgets.NAME.{peak,window_ms,history}` | `budgets.NAME` (rate forms) |
//!
//! `run_end` records yield one verdict per budget of either policy ([`Judge::judge_all`]).
//! What the log cannot decide is a [`Verdict::NotJudged`] with the reason, never skipped:
//! a budget the recorded run did not measure (its policy had none), or a rate form whose
//! peak the recorded per-interval history only brackets (see `budgets::history`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::event::BudgetFigures;
use crate::budgets::history::window_bounds;
use crate::layers::landlock;
use crate::policy::{show, NetHost, PathRule, Policy, Proto, Unit};

/// The outcome under a policy, with the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(String),
    Deny(String),
    /// The log lacks what is needed to decide; the reason says what.
    NotJudged(String),
}

impl Verdict {
    pub fn is_deny(&self) -> bool {
        matches!(self, Verdict::Deny(_))
    }

    /// The rule that decided, or why nothing could be decided.
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Allow(r) | Verdict::Deny(r) | Verdict::NotJudged(r) => r,
        }
    }
}

/// What a record asks to be judged: its kind (`exec`, `fs`, `net`, `budget`) and subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub kind: &'static str,
    pub what: String,
}

pub struct Judge<'a> {
    policy: &'a Policy,
    /// Shared with [`Judge::as_enforced`] copies.
    implied_exec: Arc<[PathBuf]>,
    /// Judge as if the policy were in enforce mode (see [`Judge::as_enforced`]).
    enforced: bool,
}

impl<'a> Judge<'a> {
    pub fn new(policy: &'a Policy) -> Self {
        let exec: Vec<PathBuf> = existing(&policy.exec.allow).cloned().collect();
        let implied_exec = landlock::implied_exec_paths(&exec)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        Self {
            policy,
            implied_exec,
            enforced: false,
        }
    }

    /// This judge as if the policy were in enforce mode: what an audit or learn run's
    /// policy would have denied is `Deny`, not `Allow("mode: audit …")`.
    pub fn as_enforced(&self) -> Judge<'a> {
        Judge {
            policy: self.policy,
            implied_exec: self.implied_exec.clone(),
            enforced: true,
        }
    }

    /// The subject of a record and its verdict under this policy; `None` for records that
    /// carry no decision to replay (genesis, checkpoints, exits, …).
    pub fn judge(&self, rec: &Value) -> Option<(Subject, Verdict)> {
        let event = rec["event"].as_str().unwrap_or("");
        let op = rec["op"].as_str().unwrap_or("");
        let path = rec["path"].as_str();
        if event == "exec" || op == "exec" {
            let p = path?;
            let s = Subject {
                kind: "exec",
                what: p.to_owned(),
            };
            return Some((s, self.exec(Path::new(p))));
        }
        if rec["family"] == "AF_UNIX" {
            let p = path?;
            let s = Subject {
                kind: "unix",
                what: format!("{op} {p}"),
            };
            return Some((s, self.unix(Path::new(p))));
        }
        if let (Some(p), false) = (path, op.is_empty()) {
            let write = rec["access"].as_str() == Some("write")
                || matches!(
                    op,
                    "write" | "create" | "truncate" | "unlink" | "rename" | "mkdir"
                );
            let s = Subject {
                kind: "fs",
                what: format!("{} {p}", if write { "write" } else { "read" }),
            };
            return Some((s, self.fs(Path::new(p), write)));
        }
        if op == "dns_query" {
            let name = rec["name"].as_str()?;
            let s = Subject {
                kind: "dns",
                what: name.to_owned(),
            };
            if rec["rule"]
                .as_str()
                .is_some_and(|r| r.starts_with("tainted"))
            {
                return Some((
                    s,
                    Verdict::NotJudged(
                        "the run was tainted when it asked; net.after_taint is not replayed".into(),
                    ),
                ));
            }
            return Some((s, self.dns(name)));
        }
        if let (Some(dst), Some(port)) = (rec["dst"].as_str(), rec["port"].as_u64()) {
            let proto = rec["proto"].as_str().unwrap_or("tcp");
            let s = Subject {
                kind: "net",
                what: format!("{dst}:{port}/{proto}"),
            };
            if rec["rule"]
                .as_str()
                .is_some_and(|r| r.starts_with("tainted"))
            {
                return Some((
                    s,
                    Verdict::NotJudged(
                        "the run was tainted when it connected; net.after_taint is not replayed"
                            .into(),
                    ),
                ));
            }
            return Some((s, self.net(dst, port as u16, proto, op == "bind")));
        }
        if event == "run_end" {
            let ms = rec["elapsed_ms"].as_u64()?;
            let s = Subject {
                kind: "budget",
                what: "wall_time".into(),
            };
            return Some((s, self.wall_time(ms)));
        }
        None
    }

    /// Every verdict a record carries: for a `run_end` of a run whose command ran, one per
    /// budget the recorded run measured or this policy has; else what [`Judge::judge`]
    /// finds.
    pub fn judge_all(&self, rec: &Value) -> Vec<(Subject, Verdict)> {
        let mut out: Vec<(Subject, Verdict)> = self.judge(rec).into_iter().collect();
        if rec["event"] != "run_end" || rec["elapsed_ms"].is_null() {
            return out;
        }
        let empty = serde_json::Map::new();
        let recorded = rec["budgets"].as_object().unwrap_or(&empty);
        let mut names: Vec<&str> = recorded.keys().map(String::as_str).collect();
        for b in &self.policy.budgets.items {
            if !names.contains(&b.key.name()) {
                names.push(b.key.name());
            }
        }
        for name in names {
            // wall_time is judged from elapsed_ms (see `judge`).
            if name == "wall_time" {
                continue;
            }
            let s = Subject {
                kind: "budget",
                what: name.to_owned(),
            };
            // Figures that do not fit the type count as none recorded.
            let figures = recorded
                .get(name)
                .map(|f| BudgetFigures::deserialize(f).unwrap_or_default());
            out.push((s, self.budget(name, figures.as_ref())));
        }
        out
    }

    /// Budget `name` under this policy, from the figures the recorded run wrote for it.
    fn budget(&self, name: &str, figures: Option<&BudgetFigures>) -> Verdict {
        let Some(b) = self
            .policy
            .budgets
            .items
            .iter()
            .find(|b| b.key.name() == name)
        else {
            return Verdict::Allow(format!("no {name} budget"));
        };
        let Some(f) = figures else {
            return Verdict::NotJudged(format!(
                "the recorded run did not measure {name} (its policy had no {name} budget)"
            ));
        };
        let unit = b.key.unit();
        let limit = b.limit;
        let Some(window) = b.window else {
            // A total: the counter's final value (for a recorded rate form `used` is the
            // total; `peak` is the windowed peak), or the peak of a kernel-enforced figure.
            let used = match f.window_ms {
                None => f.peak.or(f.used),
                Some(_) => f.used,
            };
            return match used {
                Some(u) if u > limit => Verdict::Deny(format!(
                    "budgets.{name} {} exceeded (used {})",
                    show(unit, limit),
                    show(unit, u)
                )),
                Some(u) => Verdict::Allow(format!(
                    "within budgets.{name} {} (used {})",
                    show(unit, limit),
                    show(unit, u)
                )),
                None => Verdict::NotJudged(format!("the recorded run wrote no use of {name}")),
            };
        };
        let w = window.as_millis() as u64;
        let form = format!(
            "budgets.{name} {}/{}",
            show(unit, limit),
            show(Unit::Millis, w)
        );
        let (lo, hi, interval) = rate_bounds(f, w);
        let win = show(Unit::Millis, w);
        if lo > limit {
            Verdict::Deny(format!(
                "{form} exceeded (peak {}{} in {win})",
                if lo == hi { "" } else { "at least " },
                show(unit, lo)
            ))
        } else if hi <= limit {
            Verdict::Allow(format!("within {form} (peak {} in {win})", show(unit, hi)))
        } else {
            let hi = if hi == u64::MAX {
                "unknown".to_owned()
            } else {
                show(unit, hi)
            };
            let source = match interval {
                Some(i) => format!("the recorded history ({i} ms intervals)"),
                None => format!("the recorded run kept no history of {name}, its figures"),
            };
            Verdict::NotJudged(format!(
                "{form}: {source} put the peak in {win} between {} and {hi}",
                show(unit, lo)
            ))
        }
    }

    fn enforce(&self, v: Verdict) -> Verdict {
        match (self.policy.mode, v) {
            (m, Verdict::Deny(r)) if m.records_only() && !self.enforced => {
                Verdict::Allow(format!("mode: audit ({r})"))
            }
            (_, v) => v,
        }
    }

    fn exec(&self, p: &Path) -> Verdict {
        if let Some(r) = existing_rules(&self.policy.exec.allow).find(|r| covers(r, p)) {
            return Verdict::Allow(format!("exec.allow {}", r.written));
        }
        if self.implied_exec.iter().any(|i| p.starts_with(i)) {
            return Verdict::Allow("exec (implied interpreter)".into());
        }
        self.enforce(Verdict::Deny("not in exec.allow".into()))
    }

    fn fs(&self, p: &Path, write: bool) -> Verdict {
        if let Some(r) = existing_rules(&self.policy.fs.write).find(|r| covers(r, p)) {
            return Verdict::Allow(format!("fs.write {}", r.written));
        }
        if landlock::IMPLICIT_READ_WRITE
            .iter()
            .any(|i| p == Path::new(i))
        {
            return Verdict::Allow("fs (implicit)".into());
        }
        if !write {
            if let Some(r) = existing_rules(&self.policy.fs.read).find(|r| covers(r, p)) {
                return Verdict::Allow(format!("fs.read {}", r.written));
            }
            if landlock::IMPLICIT_READ.iter().any(|i| p == Path::new(i)) {
                return Verdict::Allow("fs (implicit)".into());
            }
            return self.enforce(Verdict::Deny("not in fs.read or fs.write".into()));
        }
        self.enforce(Verdict::Deny("not in fs.write".into()))
    }

    /// A pathname unix socket: under an existing `fs.write` tree, or a `net.unix` rule (an
    /// optional one that did not exist included: its exact path is let through).
    fn unix(&self, p: &Path) -> Verdict {
        if let Some(r) = existing_rules(&self.policy.fs.write).find(|r| covers(r, p)) {
            return Verdict::Allow(format!("fs.write {}", r.written));
        }
        let unix = self.policy.net.as_ref().map(|n| &n.unix[..]).unwrap_or(&[]);
        if let Some(r) = unix.iter().find(|r| covers(r, p)) {
            return Verdict::Allow(format!("net.unix {}", r.written));
        }
        self.enforce(Verdict::Deny("not in net.unix or fs.write".into()))
    }

    /// `bind`: judged against `net.bind`, else `net.allow`. A domain rule that would match
    /// by port and protocol cannot be judged against a bare address (which name resolved
    /// to it is not in the record).
    fn net(&self, dst: &str, port: u16, proto: &str, bind: bool) -> Verdict {
        let Some(net) = &self.policy.net else {
            return self.enforce(Verdict::Deny("no net section".into()));
        };
        let (rules, section) = if bind {
            (&net.bind, "net.bind")
        } else {
            (&net.allow, "net.allow")
        };
        let addr: Option<IpAddr> = dst.parse().ok();
        let mut by_name = None;
        for r in rules {
            let proto_ok = match r.proto {
                None => true,
                Some(Proto::Tcp) => proto == "tcp",
                Some(Proto::Udp) => proto == "udp",
            };
            let port_ok = r.ports.is_none_or(|(lo, hi)| (lo..=hi).contains(&port));
            let host_ok = match (&r.host, addr) {
                (NetHost::Cidr { addr: net, prefix }, Some(a)) => in_cidr(a, *net, *prefix),
                (NetHost::Domain(d), None) => domain_matches(d, dst),
                _ => false,
            };
            if proto_ok && port_ok && host_ok {
                return Verdict::Allow(format!("{section} {}", r.written));
            }
            if proto_ok && port_ok && addr.is_some() && matches!(r.host, NetHost::Domain(_)) {
                by_name.get_or_insert(r);
            }
        }
        if let Some(r) = by_name {
            return Verdict::NotJudged(format!(
                "{section} {} names a domain; the record has only the address {dst}",
                r.written
            ));
        }
        self.enforce(Verdict::Deny(format!("no {section} rule matches")))
    }

    /// A name the run's resolver was asked for: it answers names a `net.allow` domain
    /// rule matches (any port or protocol), and refuses the rest.
    fn dns(&self, name: &str) -> Verdict {
        let name = name.trim_end_matches('.');
        let rule = self.policy.net.as_ref().and_then(|net| {
            net.allow
                .iter()
                .find(|r| matches!(&r.host, NetHost::Domain(d) if domain_matches(d, name)))
        });
        match rule {
            Some(r) => Verdict::Allow(format!("net.allow {}", r.written)),
            None => self.enforce(Verdict::Deny("no net.allow name rule matches".into())),
        }
    }

    fn wall_time(&self, elapsed_ms: u64) -> Verdict {
        match self.policy.budgets.wall_time {
            Some(limit) if u128::from(elapsed_ms) > limit.as_millis() => Verdict::Deny(format!(
                "budgets.wall_time {}ms exceeded",
                limit.as_millis()
            )),
            Some(limit) => {
                Verdict::Allow(format!("within budgets.wall_time {}ms", limit.as_millis()))
            }
            None => Verdict::Allow("no wall_time budget".into()),
        }
    }
}

/// Bounds on the peak use of a counter within any window of `w` ms, from a recorded run's
/// figures: exact (`lo == hi`) when the run used that very window, else bracketed by its
/// per-interval history, tightened by its own window's peak and its total.
/// `hi` is `u64::MAX` when nothing bounds it; the third value is the history's interval.
fn rate_bounds(f: &BudgetFigures, w: u64) -> (u64, u64, Option<u64>) {
    let (peak, recorded_w) = (f.peak, f.window_ms);
    if let (Some(p), Some(rw)) = (peak, recorded_w) {
        if rw == w {
            return (p, p, None);
        }
    }
    let (mut lo, mut hi) = (0, u64::MAX);
    let interval = f.history.as_ref().map(|h| h.interval_ms);
    if let Some(h) = &f.history {
        (lo, hi) = window_bounds(h.interval_ms, &h.counts, w);
    }
    // A recorded total-form peak is the final counter: no window holds more.
    let total = match recorded_w {
        Some(_) => f.used,
        None => peak.or(f.used),
    };
    if let Some(t) = total {
        hi = hi.min(t);
    }
    if let (Some(p), Some(rw)) = (peak, recorded_w) {
        if rw < w {
            lo = lo.max(p); // a shorter window's peak fits in a longer one
        } else {
            hi = hi.min(p); // a longer window's peak bounds a shorter one's
        }
    }
    (lo, hi.max(lo), interval)
}

fn existing(rules: &[PathRule]) -> impl Iterator<Item = &PathBuf> {
    rules.iter().filter(|r| r.exists).map(|r| &r.path)
}

fn existing_rules(rules: &[PathRule]) -> impl Iterator<Item = &PathRule> {
    rules.iter().filter(|r| r.exists)
}

/// Landlock semantics: a file rule covers exactly that file, a directory rule its tree.
fn covers(r: &PathRule, p: &Path) -> bool {
    if r.is_dir {
        p.starts_with(&r.path)
    } else {
        p == r.path
    }
}

fn in_cidr(a: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn domain_matches(rule: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    match rule.strip_prefix("*.") {
        Some(suffix) => name.ends_with(&format!(".{suffix}")),
        None => name == rule,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::policy::{parse_str, LoadOptions};
    use serde_json::json;

    fn policy(yaml: &str) -> Policy {
        let opts = LoadOptions {
            workspace: std::env::temp_dir(),
            home: PathBuf::from("/root"),
        };
        parse_str(yaml, "<test>", &opts).unwrap()
    }

    #[test]
    fn judges_exec_fs_and_net_records() {
        let p = policy(
            "version: 1\nname: t\nfs:\n  read: [/usr]\n  write: [/tmp]\nexec:\n  allow: [/usr/bin/true]\nnet:\n  allow: [\"127.0.0.0/8:80-90/tcp\"]\n",
        );
        let j = Judge::new(&p);
        let v = |r: Value| j.judge(&r).map(|(_, v)| v.is_deny());
        assert_eq!(
            v(json!({"event": "exec", "path": "/usr/bin/true"})),
            Some(false)
        );
        assert_eq!(
            v(json!({"event": "denied", "op": "exec", "path": "/usr/bin/id"})),
            Some(true)
        );
        assert_eq!(
            v(json!({"event": "denied", "op": "open", "path": "/usr/lib/x", "access": "read"})),
            Some(false)
        );
        assert_eq!(
            v(json!({"event": "denied", "op": "open", "path": "/usr/lib/x", "access": "write"})),
            Some(true)
        );
        assert_eq!(
            v(json!({"event": "denied", "op": "open", "path": "/tmp/x", "access": "write"})),
            Some(false)
        );
        assert_eq!(
            v(json!({"event": "connect", "dst": "127.0.0.2", "port": 85, "proto": "tcp"})),
            Some(false)
        );
        assert_eq!(
            v(json!({"event": "connect", "dst": "127.0.0.2", "port": 85, "proto": "udp"})),
            Some(true)
        );
        assert_eq!(
            v(json!({"event": "connect", "dst": "10.0.0.1", "port": 85, "proto": "tcp"})),
            Some(true)
        );
        assert_eq!(v(json!({"event": "checkpoint"})), None);
    }

    #[test]
    fn unix_connects_are_judged_against_net_unix_not_fs_read() {
        let p = policy(
            "version: 1\nname: t\nfs:\n  read: [/usr]\n  write: [/tmp]\nnet:\n  unix: [{path: /nonexistent/agentd-x.sock, optional: true}]\n",
        );
        let j = Judge::new(&p);
        let q = |path: &str| {
            j.judge(&json!({"event": "denied", "op": "connect", "family": "AF_UNIX", "path": path}))
                .unwrap()
        };
        let (s, v) = q("/nonexistent/agentd-x.sock");
        assert_eq!(
            (s.kind, s.what.as_str()),
            ("unix", "connect /nonexistent/agentd-x.sock")
        );
        assert!(
            matches!(&v, Verdict::Allow(r) if r.starts_with("net.unix ")),
            "{v:?}"
        );
        assert_eq!(q("/tmp/s.sock").1, Verdict::Allow("fs.write /tmp".into()));
        assert!(
            q("/usr/s.sock").1.is_deny(),
            "fs.read does not let a socket be connected"
        );
    }

    #[test]
    fn dns_queries_are_judged_against_the_name_rules() {
        let p = policy("version: 1\nname: t\nnet:\n  allow: [\"*.example.com:443/tcp\", \"10.0.0.0/8:80/tcp\"]\n");
        let j = Judge::new(&p);
        let q = |name: &str, rule: &str| {
            j.judge(&json!({"event": "dns", "op": "dns_query", "name": name, "rule": rule}))
                .unwrap()
        };
        let (s, v) = q("api.example.com", "no rule");
        assert_eq!((s.kind, s.what.as_str()), ("dns", "api.example.com"));
        assert_eq!(v, Verdict::Allow("net.allow *.example.com:443/tcp".into()));
        assert!(q("example.org.", "x").1.is_deny());
        assert!(matches!(
            q("api.example.com", "tainted: no after_taint rule").1,
            Verdict::NotJudged(_)
        ));
    }

    #[test]
    fn net_records_the_log_cannot_decide_are_not_judged() {
        let p = policy(
            "version: 1\nname: t\nnet:\n  allow: [\"example.com:443/tcp\", \"10.0.0.0/8:80/tcp\"]\n  bind: [\"127.0.0.1:8080/tcp\"]\n",
        );
        let j = Judge::new(&p);
        let v = |r: Value| j.judge(&r).map(|(_, v)| v);
        assert_eq!(
            v(json!({"event": "denied", "op": "connect", "dst": "93.184.216.34", "port": 443, "proto": "tcp", "rule": "no rule"})),
            Some(Verdict::NotJudged("net.allow example.com:443/tcp names a domain; the record has only the address 93.184.216.34".into()))
        );
        assert_eq!(
            v(
                json!({"event": "denied", "op": "connect", "dst": "93.184.216.34", "port": 80, "proto": "tcp", "rule": "no rule"})
            ),
            Some(Verdict::Deny("no net.allow rule matches".into()))
        );
        assert_eq!(
            v(
                json!({"event": "denied", "op": "connect", "dst": "10.1.2.3", "port": 80, "proto": "tcp", "rule": "tainted: no after_taint rule"})
            ),
            Some(Verdict::NotJudged(
                "the run was tainted when it connected; net.after_taint is not replayed".into()
            ))
        );
        assert_eq!(
            v(
                json!({"event": "denied", "op": "bind", "dst": "127.0.0.1", "port": 8080, "proto": "tcp"})
            ),
            Some(Verdict::Allow("net.bind 127.0.0.1:8080/tcp".into()))
        );
    }

    /// The budget verdicts of a run_end under `budgets`, as (subject, reason) pairs.
    fn budget_verdicts(budgets: &str, recorded: Value) -> Vec<(String, Verdict)> {
        let p = policy(&format!("version: 1\nname: t\nbudgets:\n{budgets}"));
        let j = Judge::new(&p);
        let rec = json!({"event": "run_end", "elapsed_ms": 5000, "budgets": recorded});
        j.judge_all(&rec)
            .into_iter()
            .filter(|(s, _)| s.kind == "budget" && s.what != "wall_time")
            .map(|(s, v)| (s.what, v))
            .collect()
    }

    #[test]
    fn rate_forms_are_judged_from_the_history_or_named_as_not_judged() {
        // 100 ms buckets: 30 syscalls at 100–300 ms, 5 more at 400 ms; total form recorded.
        let recorded = json!({"syscalls": {"limit": 1000, "window_ms": null, "used": 35,
            "peak": 35, "history": {"interval_ms": 100, "counts": [0, 10, 20, 0, 5]}}});
        let one = |b: &str| budget_verdicts(b, recorded.clone()).remove(0).1;
        // Any 200 ms holds at most 30 (3 buckets can hold 30) and some holds 30.
        assert_eq!(
            one("  syscalls: 29/200ms\n"),
            Verdict::Deny("budgets.syscalls 29/200ms exceeded (peak 30 in 200ms)".into())
        );
        assert_eq!(
            one("  syscalls: 30/200ms\n"),
            Verdict::Allow("within budgets.syscalls 30/200ms (peak 30 in 200ms)".into())
        );
        // 100 ms: at least 20 (one bucket), at most 30 (two neighbours).
        assert_eq!(
            one("  syscalls: 19/100ms\n"),
            Verdict::Deny("budgets.syscalls 19/100ms exceeded (peak at least 20 in 100ms)".into())
        );
        assert_eq!(
            one("  syscalls: 25/100ms\n"),
            Verdict::NotJudged("budgets.syscalls 25/100ms: the recorded history (100 ms intervals) put the peak in 100ms between 20 and 30".into())
        );
        // A total form from the same figures.
        assert_eq!(
            one("  syscalls: 34\n"),
            Verdict::Deny("budgets.syscalls 34 exceeded (used 35)".into())
        );
        // No history (an older log): only the total bounds a window.
        let bare = json!({"execs": {"limit": 50, "window_ms": 10000, "used": 8, "peak": 6}});
        let v = budget_verdicts("  execs: 4/1s\n", bare.clone()).remove(0).1;
        assert_eq!(
            v,
            Verdict::NotJudged("budgets.execs 4/1s: the recorded run kept no history of execs, its figures put the peak in 1s between 0 and 6".into())
        );
        // The recorded window itself: its peak, exactly.
        let v = budget_verdicts("  execs: 5/10s\n", bare).remove(0).1;
        assert_eq!(
            v,
            Verdict::Deny("budgets.execs 5/10s exceeded (peak 6 in 10s)".into())
        );
        // A budget the run did not measure, and one the new policy drops.
        let v = budget_verdicts("  pids: 10\n", recorded);
        assert_eq!(
            v,
            vec![
                (
                    "syscalls".into(),
                    Verdict::Allow("no syscalls budget".into())
                ),
                (
                    "pids".into(),
                    Verdict::NotJudged(
                        "the recorded run did not measure pids (its policy had no pids budget)"
                            .into()
                    )
                ),
            ]
        );
    }
}
