//! The policy's `env` section: which of the caller's variables reach the command, in a
//! standalone run and through the daemon, and the names `run_start` records.

use std::process::Stdio;
use std::time::Duration;

use integration::daemon::{wait_output, TestDaemon};
use integration::*;

/// The caller's environment: common variables, credentials, and an unknown one.
fn caller_env(c: &mut std::process::Command) -> &mut std::process::Command {
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C")
        .env("AWS_SECRET_ACCESS_KEY", "aws-secret")
        .env("GITHUB_TOKEN", "gh-token")
        .env("OPENAI_API_KEY", "sk-1")
        .env("DB_PASSWORD", "pw")
        .env("RANDOM_THING", "1")
}

fn lines(o: &std::process::Output) -> Vec<String> {
    stdout(o).lines().map(str::to_owned).collect()
}

/// The command printed exactly the default-passed variables of [`caller_env`], and
/// `run_start` names them, without any value.
fn assert_default_env(o: &std::process::Output, recs: &[serde_json::Value]) {
    assert_status(o, 0);
    assert_eq!(
        lines(o),
        [
            "HOME=/root",
            "LANG=C.UTF-8",
            "LC_ALL=C",
            "PATH=/usr/bin:/bin"
        ]
    );
    let start = events(recs, "run_start")[0];
    assert_eq!(
        start["env"],
        serde_json::json!(["HOME", "LANG", "LC_ALL", "PATH"]),
        "{start}"
    );
    assert!(!start.to_string().contains("aws-secret"));
}

/// `agentd run -- testprog env` under the sandbox's policy, from [`caller_env`].
fn run_env(sb: &Sandbox) -> std::process::Output {
    let prog = testprog().display().to_string();
    let mut c = sb.run_cmd(&[&prog, "env"]);
    caller_env(&mut c)
        .env("AGENTD_SIGNING_KEY", sb.key_dir().join("audit.key"))
        .env("AGENTD_USER", "root");
    c.output().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn default_env_passes_common_variables_and_strips_credentials() {
    require_root();
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let o = run_env(&sb);
    assert_default_env(&o, &sb.audit());
}

#[test]
fn env_pass_patterns_exact_names_and_set() {
    require_root();
    let sb = Sandbox::new();
    let base = std::fs::read_to_string(sb.base_policy(&[])).unwrap_or_default();
    sb.write_policy(&format!(
        "{base}env:\n  pass: [\"*\", GITHUB_TOKEN]\n  set: {{LANG: en_US.UTF-8, EXTRA: \"x y\"}}\n"
    ));
    let o = run_env(&sb);
    assert_status(&o, 0);
    // `*` passes everything but credential-looking names; GITHUB_TOKEN is named exactly.
    // The AGENTD_* variables are agentd's own and not credential-looking.
    let got: Vec<String> = lines(&o)
        .into_iter()
        .filter(|l| !l.starts_with("AGENTD_"))
        .collect();
    assert_eq!(
        got,
        [
            "EXTRA=x y",
            "GITHUB_TOKEN=gh-token",
            "HOME=/root",
            "LANG=en_US.UTF-8",
            "LC_ALL=C",
            "PATH=/usr/bin:/bin",
            "RANDOM_THING=1"
        ]
    );
}

#[test]
fn bad_env_section_is_refused_with_position() {
    require_root();
    let sb = Sandbox::new();
    let base = std::fs::read_to_string(sb.base_policy(&[])).unwrap_or_default();
    let line = base.lines().count() + 2;
    let p = sb.write_policy(&format!("{base}env:\n  pass: [\"A-B\"]\n"));
    let o = sb
        .agentd()
        .args(["policy", "check"])
        .arg(&p)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 1);
    assert_eq!(
        stdout(&o).trim(),
        format!(
            "{}:{line}:10: invalid variable name `A-B` in `env.pass`: expected letters, digits and `_`, with `*` for any characters",
            p.display()
        )
    );
}

#[test]
fn policy_explain_lists_what_is_passed() {
    require_root();
    let sb = Sandbox::new();
    let p = sb.base_policy(&[]);
    let mut c = sb.agentd();
    c.args(["policy", "explain", "--json"]).arg(&p);
    caller_env(&mut c);
    let o = c.output().unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    assert_eq!(v["env"]["default"], true);
    assert_eq!(
        v["env"]["passed_here"],
        serde_json::json!(["HOME", "LANG", "LC_ALL", "PATH"])
    );
    let dropped: Vec<&str> = v["env"]["dropped_here"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["name"].as_str()).collect())
        .unwrap_or_default();
    for name in [
        "AWS_SECRET_ACCESS_KEY",
        "GITHUB_TOKEN",
        "OPENAI_API_KEY",
        "RANDOM_THING",
    ] {
        assert!(dropped.contains(&name), "{name} not dropped: {v}");
    }
}

#[test]
fn daemon_runs_get_the_filtered_environment() {
    require_root();
    let name: String = format!("aitg-env-{}", std::process::id())
        .chars()
        .take(31)
        .collect();
    let _g = TestGroup::ensure(&name).unwrap_or_else(|| panic!("group {name} exists"));
    let d = TestDaemon::start(&name);
    let prog = testprog();
    let p = d.policy(
        "env.yaml",
        &format!(
            "version: 1\nname: env\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{dir}\"]\nexec:\n  allow: [\"{prog}\"]\n",
            dir = prog.parent().map(|d| d.display().to_string()).unwrap_or_default(),
            prog = prog.display()
        ),
    );
    let mut c = d.client();
    caller_env(&mut c)
        .env("AGENTD_SOCKET", d.socket())
        .arg("run")
        .arg("--user")
        .arg("root")
        .arg("--policy")
        .arg(&p)
        .arg("--")
        .arg(&prog)
        .arg("env")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap_or_else(|e| panic!("{e}"));
    let o = wait_output(child, Duration::from_secs(60));
    assert_default_env(&o, &d.audit());
}
