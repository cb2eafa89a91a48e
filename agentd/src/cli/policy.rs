//! `agentd policy check|explain|schema|suggest`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::learn;
use crate::plan::Plan;
use crate::policy;
use crate::probe::Probe;

pub fn check(file: &Path, workspace: Option<PathBuf>) -> ExitCode {
    let opts = match super::load_options(workspace) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("agentd: {e}");
            return ExitCode::from(2);
        }
    };
    match policy::load_file(file, &opts) {
        Ok(p) => {
            println!(
                "{}: ok (policy `{}`, sha256 {})",
                file.display(),
                p.name,
                p.hash
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_errors(&e);
            ExitCode::from(1)
        }
    }
}

/// `agentd policy suggest`: the work is `learn`; this reads the files and writes the result.
pub fn suggest(
    from: &Path,
    runs: &[String],
    base: Option<&Path>,
    out: Option<&Path>,
    workspace: Option<PathBuf>,
) -> ExitCode {
    let fail = |e: String| {
        eprintln!("agentd: policy suggest: {e}");
        ExitCode::from(2)
    };
    let opts = match super::load_options(workspace) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let log = match std::fs::read_to_string(from) {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot read {}: {e}", from.display())),
    };
    let base = match base {
        Some(b) => match std::fs::read_to_string(b) {
            Ok(src) => match policy::parse_str(&src, &b.display().to_string(), &opts) {
                Ok(p) => Some((p, src)),
                Err(e) => {
                    print_errors(&e);
                    return ExitCode::from(1);
                }
            },
            Err(e) => return fail(format!("cannot read {}: {e}", b.display())),
        },
        None => None,
    };
    let judge = base
        .as_ref()
        .map(|(p, _)| crate::audit::judge::Judge::new(p));
    let observed = learn::Observed::collect(&log, runs, judge.as_ref());
    if let Some(missing) = runs.iter().find(|r| !observed.runs.contains(r)) {
        return fail(format!(
            "no run_start of run {missing} in {}",
            from.display()
        ));
    }
    if observed.runs.is_empty() {
        return fail(format!("no runs in {}", from.display()));
    }
    let cx = learn::suggest::Context {
        home: opts.home.clone(),
        base: base.as_ref().map(|(p, s)| (p, s.as_str())),
        from: from.display().to_string(),
    };
    let s = learn::suggest::suggest(&observed, &cx);
    // The diff goes where the policy does not: stdout with --out, else stderr.
    let diff = if base.is_some() {
        let mut d = format!("{} rule(s) added to the base:\n", s.added.len());
        for l in &s.added {
            d.push_str(l);
            d.push('\n');
        }
        d
    } else {
        format!("{} rule(s) suggested\n", s.added.len())
    };
    match out {
        Some(o) => {
            if let Err(e) = std::fs::write(o, &s.yaml) {
                return fail(format!("cannot write {}: {e}", o.display()));
            }
            print!("{diff}");
        }
        None => {
            print!("{}", s.yaml);
            eprint!("{diff}");
        }
    }
    ExitCode::SUCCESS
}

pub fn schema() -> ExitCode {
    println!("{:#}", policy::schema());
    ExitCode::SUCCESS
}

/// Every error of the file, one `FILE:LINE:COL: message` line each.
fn print_errors(e: &policy::PolicyError) {
    for line in e.lines() {
        println!("{line}");
    }
}

pub fn explain(file: &Path, workspace: Option<PathBuf>, json: bool) -> ExitCode {
    let opts = match super::load_options(workspace) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("agentd: {e}");
            return ExitCode::from(2);
        }
    };
    let policy = match policy::load_file(file, &opts) {
        Ok(p) => p,
        Err(e) => {
            print_errors(&e);
            return ExitCode::from(1);
        }
    };
    let probe = Probe::detect();
    let plan = Plan::build(&policy, &probe);
    if json {
        let v = serde_json::json!({
            "policy": policy.name,
            "sha256": policy.hash,
            "mode": format!("{:?}", policy.mode).to_lowercase(),
            "layers": plan.layers,
            "coverage": plan.coverage,
            "refusals": plan.refusals,
            "env": env_json(&policy.env),
        });
        println!("{v:#}");
    } else {
        print!("{}", render(&policy, &plan));
    }
    if plan.refusals.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub fn render(policy: &policy::Policy, plan: &Plan) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "policy `{}` ({}), mode {:?}, sha256 {}\n\nlayers:\n",
        policy.name, policy.origin, policy.mode, policy.hash
    ));
    let w = plan.layers.iter().map(|l| l.layer.len()).max().unwrap_or(0);
    for l in &plan.layers {
        out.push_str(&format!("  {:w$}  {:7}  {}\n", l.layer, l.status, l.detail));
    }
    out.push_str("\nrules:\n");
    for c in &plan.coverage {
        out.push_str(&format!("  {}\n      → {}: {}\n", c.rule, c.layer, c.how));
    }
    out.push_str(&render_env(&policy.env));
    if !plan.refusals.is_empty() {
        out.push_str("\nrefused (agentd run will not start this policy):\n");
        for r in &plan.refusals {
            out.push_str(&format!("  {}: {}\n", r.layer, r.reason));
        }
    }
    out
}

/// What `env` passes: its patterns, what it sets, and of this shell's variables which
/// are passed and which are dropped (names only).
fn env_json(env: &policy::EnvPolicy) -> serde_json::Value {
    let (passed, dropped) = env_split(env);
    serde_json::json!({
        "pass": env.patterns(),
        "default": env.pass.is_none(),
        "set": env.set.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "passed_here": passed,
        "dropped_here": dropped
            .iter()
            .map(|(n, why)| serde_json::json!({"name": n, "why": why}))
            .collect::<Vec<_>>(),
    })
}

fn render_env(env: &policy::EnvPolicy) -> String {
    let (passed, dropped) = env_split(env);
    let default = if env.pass.is_none() {
        " (the default)"
    } else {
        ""
    };
    let mut out = format!(
        "\nenvironment:\n  pass{default}: {}\n",
        env.patterns().join(" ")
    );
    if !env.set.is_empty() {
        let set: Vec<&str> = env.set.iter().map(|s| s.name.as_str()).collect();
        out.push_str(&format!("  set: {}\n", set.join(" ")));
    }
    out.push_str(&format!(
        "  passed from this environment: {}\n",
        passed.join(" ")
    ));
    for (name, why) in dropped {
        out.push_str(&format!("  dropped {name}: {why}\n"));
    }
    out
}

/// This process's variables split into passed names and dropped names with the reason.
fn env_split(env: &policy::EnvPolicy) -> (Vec<String>, Vec<(String, &'static str)>) {
    use std::os::unix::ffi::OsStrExt;
    let mut names: Vec<std::ffi::OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    names.sort();
    let (mut passed, mut dropped) = (Vec::new(), Vec::new());
    for n in names {
        let shown = n.to_string_lossy().into_owned();
        if env.set.iter().any(|s| s.name == shown) {
            continue;
        }
        match env.verdict(n.as_bytes()) {
            Ok(()) => passed.push(shown),
            Err(policy::env::Dropped::NotPassed) => dropped.push((shown, "not in env.pass")),
            Err(policy::env::Dropped::Credential) => dropped.push((
                shown,
                "looks like a credential (name it exactly in env.pass to pass it)",
            )),
        }
    }
    (passed, dropped)
}
