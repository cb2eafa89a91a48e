//! `agentd policy check|explain|schema`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    if !plan.refusals.is_empty() {
        out.push_str("\nrefused (agentd run will not start this policy):\n");
        for r in &plan.refusals {
            out.push_str(&format!("  {}: {}\n", r.layer, r.reason));
        }
    }
    out
}
