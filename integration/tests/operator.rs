//! What an operator uses besides `run`: `policy check` listing every error of a file,
//! `policy schema`, the shell completions and the man pages.

use std::process::{Command, Output};

use integration::*;

fn agentd(args: &[&str]) -> Output {
    Command::new(agentd_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run agentd: {e}"))
}

/// Five different mistakes, each on its own line.
const FIVE_ERRORS: &str = "\
version: 1
name: five
mode: strict
fs:
  read: /usr
  wirte: []
net:
  allow: [\"10.0.0.1/8:443\"]
budgets:
  wall_time: 10x
";

fn five_error_lines(file: &str) -> Vec<String> {
    [
        "3:7: unknown mode `strict`, expected `enforce`, `audit` or `learn`",
        "5:9: expected a list for `fs.read`, found a string",
        "6:3: unknown field `wirte` in `fs`, expected one of `read`, `write`, `deny`, `secret`",
        "8:11: `10.0.0.1/8` has bits set beyond the /8 prefix (did you mean `10.0.0.0/8`?)",
        "10:14: invalid duration `10x`: expected a number followed by ms, s, m or h",
    ]
    .iter()
    .map(|l| format!("{file}:{l}"))
    .collect()
}

#[test]
fn policy_check_reports_every_error_of_the_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("five.yaml");
    std::fs::write(&bad, FIVE_ERRORS).unwrap_or_else(|e| panic!("{e}"));
    let file = bad.display().to_string();
    let o = agentd(&["policy", "check", &file]);
    assert_status(&o, 1);
    let got: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(got, five_error_lines(&file), "stderr: {}", stderr(&o));
    // explain refuses the same file with the same lines.
    let o = agentd(&["policy", "explain", &file]);
    assert_status(&o, 1);
    let got: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(got, five_error_lines(&file));
}

/// `agentd run` stops at the first error, with the same message as `policy check`.
#[test]
fn run_refuses_the_file_with_the_first_error() {
    let sb = Sandbox::new();
    sb.write_policy(FIVE_ERRORS);
    let o = sb.run_prog(&["exit", "0"]);
    assert_status(&o, 125);
    let first = &five_error_lines(&sb.policy_path().display().to_string())[0];
    assert_eq!(
        stderr(&o).lines().next().unwrap_or_default(),
        format!("agentd: policy: {first} (and 4 more errors: see `agentd policy check`)")
    );
}

#[test]
fn policy_schema_prints_a_draft_2020_12_schema() {
    let o = agentd(&["policy", "schema"]);
    assert_status(&o, 0);
    let schema: serde_json::Value =
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], serde_json::json!(["version", "name"]));
    let mut top: Vec<&str> = schema["properties"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    top.sort_unstable();
    assert_eq!(
        top,
        ["attach", "budgets", "env", "exec", "fs", "mode", "name", "net", "version"]
    );
    assert_eq!(
        schema["$defs"]["attach"]["properties"]["best_effort"]["items"]["enum"],
        serde_json::json!(["fs", "syscalls", "caps"])
    );
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let o = agentd(&["completions", "bash"]);
    assert_status(&o, 0);
    let bash = stdout(&o);
    assert!(bash.contains("complete -F _agentd"), "{bash}");
    assert!(bash.contains("agentd__subcmd__policy,check)"), "{bash}");
    // The script is valid bash.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let script = dir.path().join("agentd.bash");
    std::fs::write(&script, &bash).unwrap_or_else(|e| panic!("{e}"));
    let o = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("bash -n: {e}"));
    assert_status(&o, 0);

    let o = agentd(&["completions", "zsh"]);
    assert_status(&o, 0);
    assert!(
        stdout(&o).starts_with("#compdef agentd\n"),
        "{}",
        stdout(&o)
    );

    let o = agentd(&["completions", "fish"]);
    assert_status(&o, 0);
    assert!(
        stdout(&o)
            .contains("complete -c agentd -n \"__fish_agentd_needs_command\" -f -a \"policy\" -d "),
        "{}",
        stdout(&o)
    );

    let o = agentd(&["completions", "tcsh"]);
    assert_status(&o, 2);
    assert!(
        stderr(&o).contains("invalid value 'tcsh'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn man_pages_for_every_visible_command() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("man");
    let o = agentd(&["man", "--out", &out.display().to_string()]);
    assert_status(&o, 0);
    let mut pages: Vec<String> = std::fs::read_dir(&out)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
    pages.sort();
    for want in [
        "agentd.1",
        "agentd-run.1",
        "agentd-policy-check.1",
        "agentd-policy-schema.1",
        "agentd-completions.1",
        "agentd-audit-verify.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} missing: {pages:?}");
    }
    // The hidden generator has no page of its own.
    assert!(!pages.iter().any(|p| p == "agentd-man.1"), "{pages:?}");
    let top = std::fs::read_to_string(out.join("agentd.1")).unwrap_or_else(|e| panic!("{e}"));
    assert!(top.starts_with(".ie \\n(.g .ds Aq \\(aq"), "{top}");
    assert!(top.contains(".TH agentd 1"), "{top}");
    assert!(top.contains("agentd\\-completions(1)"), "{top}");
}
