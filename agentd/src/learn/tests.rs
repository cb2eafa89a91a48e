//! The generaliser on synthetic logs: what each rule becomes, determinism, --base.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use super::suggest::{display, is_secret, suggest, Context};
use super::Observed;
use crate::policy::{parse_str, LoadOptions};

fn rec(run: &str, fields: serde_json::Value) -> String {
    let mut v = fields;
    v["run"] = run.into();
    v.to_string()
}

fn log(ws: &str) -> String {
    let mut lines = vec![rec(
        "r1",
        serde_json::json!({"event": "run_start", "workspace": ws, "mode": "audit"}),
    )];
    let deny = |op: &str, path: &str| {
        rec(
            "r1",
            serde_json::json!({"event": "denied", "decision": "would_deny", "op": op, "path": path}),
        )
    };
    for p in [
        "/usr/lib/python3/a.py",
        "/usr/lib/python3/b.py",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/etc/passwd",
        "/etc/hosts",
        "/root/.gitconfig",
        "/root/.ssh/id_ed25519",
        "/usr/share/zoneinfo/UTC",
    ] {
        lines.push(deny("open", p));
    }
    lines.push(deny("open", &format!("{ws}/src/main.rs")));
    lines.push(deny("write", &format!("{ws}/out")));
    lines.push(deny("write", "/tmp/x"));
    lines.push(deny("write", "/var/log/thing"));
    lines.push(rec(
        "r1",
        serde_json::json!({"event": "exec", "decision": "allow", "path": "/usr/bin/git"}),
    ));
    lines.push(rec(
        "r1",
        serde_json::json!({"event": "dns", "op": "dns_query", "name": "svc.test", "addrs": ["127.0.0.9"], "qtype": "A"}),
    ));
    lines.push(rec(
        "r1",
        serde_json::json!({"event": "denied", "decision": "would_deny", "op": "connect", "dst": "127.0.0.9", "port": 8080, "proto": "tcp", "run_slot": 1}),
    ));
    lines.push(rec(
        "r1",
        serde_json::json!({"event": "run_end", "elapsed_ms": 1500, "budgets": {"memory": {"limit": 0, "window_ms": null, "unit": "bytes", "used": 10485760, "peak": 10485760}}}),
    ));
    lines.push(rec(
        "other",
        serde_json::json!({"event": "exec", "path": "/usr/bin/id"}),
    ));
    lines.join("\n")
}

fn cx() -> Context<'static> {
    Context {
        home: PathBuf::from("/root"),
        base: None,
        from: "audit.jsonl".into(),
    }
}

fn section<'a>(yaml: &'a str, key: &str) -> Vec<&'a str> {
    let start = yaml.find(&format!("\n  {key}:")).expect(key) + 1;
    yaml[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect()
}

#[test]
fn generalises_paths_secrets_names_and_budgets() {
    let ws = "/srv/ws-learn-unit";
    let o = Observed::collect(&log(ws), &[], None);
    assert_eq!(
        o.runs,
        vec!["r1".to_owned()],
        "records of other runs are not folded"
    );
    let s = suggest(&o, &cx());
    let y = &s.yaml;
    let read = section(y, "read").join("\n");
    // Three files under /usr/lib: the directory, with why.
    assert!(
        read.contains("\"/usr/lib\"   # 3 paths read under it"),
        "{y}"
    );
    assert!(!read.contains("python3/a.py"), "{y}");
    // A single file under /usr/share, /etc and ~ stays a file.
    assert!(read.contains("/usr/share/zoneinfo/UTC"), "{y}");
    assert!(read.contains("\"/etc/passwd\""), "{y}");
    assert!(read.contains("~/.gitconfig"), "{y}");
    // The credential store is a secret, never a read.
    assert!(!read.contains(".ssh"), "{y}");
    assert!(
        section(y, "secret")
            .join("\n")
            .contains("~/.ssh/id_ed25519"),
        "{y}"
    );
    let write = section(y, "write").join("\n");
    assert!(write.contains("\"{workspace}\""), "{y}");
    assert!(write.contains("\"/tmp\""), "{y}");
    assert!(
        !write.contains("/var/log"),
        "a write outside is not granted: {y}"
    );
    assert!(
        y.contains("# not granted, for a person to decide: /var/log/thing written"),
        "{y}"
    );
    assert!(
        section(y, "allow").join("\n").contains("\"/usr/bin/git\""),
        "{y}"
    );
    assert!(!y.contains("/usr/bin/id"), "{y}");
    assert!(
        y.contains("\"svc.test:8080/tcp\"   # 1 event (by name; resolved to 127.0.0.9)"),
        "{y}"
    );
    assert!(!y.contains("\"127.0.0.9:8080/tcp\""), "{y}");
    assert!(
        y.contains("memory: 64MiB   # peak 10485760 bytes x 2, at least 64MiB"),
        "{y}"
    );
    assert!(
        y.contains("wall_time: 10s   # peak 1500 ms x 2, at least 10s"),
        "{y}"
    );
    assert!(
        !y.contains("libraries"),
        "mappings came from the default: {y}"
    );
}

#[test]
fn same_log_gives_the_same_bytes() {
    let l = log("/srv/ws-learn-unit");
    let a = suggest(&Observed::collect(&l, &[], None), &cx());
    let b = suggest(&Observed::collect(&l, &[], None), &cx());
    assert_eq!(a, b);
}

#[test]
fn output_parses_as_a_policy() {
    let ws = std::env::temp_dir().join(format!("agentd-learn-unit-{}", std::process::id()));
    std::fs::create_dir_all(&ws).unwrap();
    let ws = std::fs::canonicalize(&ws).unwrap();
    // A client that binds port 0 itself becomes `ADDR:0`, which net.bind accepts.
    let bind0 = rec(
        "r1",
        serde_json::json!({"event": "denied", "decision": "would_deny", "op": "bind", "dst": "0.0.0.0", "port": 0, "proto": "udp", "run_slot": 1}),
    );
    let l = format!("{}\n{bind0}", log(ws.to_str().unwrap()));
    let o = Observed::collect(&l, &[], None);
    let s = suggest(&o, &cx());
    let opts = LoadOptions {
        workspace: ws.clone(),
        home: PathBuf::from("/root"),
    };
    let r = parse_str(&s.yaml, "<suggested>", &opts);
    std::fs::remove_dir_all(&ws).unwrap();
    let p = match r {
        Ok(p) => p,
        Err(e) => panic!("{}\n{}", e.lines().join("\n"), s.yaml),
    };
    assert!(p.fs.secret.iter().any(|r| r.written == "~/.ssh/id_ed25519"));
    let bind = &p.net.expect("net").bind;
    assert_eq!(bind.len(), 1, "{}", s.yaml);
    assert_eq!(
        (bind[0].written.as_str(), bind[0].ports),
        ("0.0.0.0:0/udp", Some((0, 0)))
    );
}

#[test]
fn base_gets_only_what_is_missing() {
    let ws = std::env::temp_dir().join(format!("agentd-learn-base-{}", std::process::id()));
    std::fs::create_dir_all(&ws).unwrap();
    let ws = std::fs::canonicalize(&ws).unwrap();
    let opts = LoadOptions {
        workspace: ws.clone(),
        home: PathBuf::from("/root"),
    };
    let src = "version: 1\nname: base\nfs:\n  read: [/usr, /etc/passwd]\n  write: [\"{workspace}\"]\nexec:\n  allow: [/usr/bin/git]\nbudgets:\n  wall_time: 5m\n";
    let base = parse_str(src, "base.yaml", &opts).unwrap();
    let judge = crate::audit::judge::Judge::new(&base);
    let o = Observed::collect(&log(ws.to_str().unwrap()), &[], Some(&judge));
    let s = suggest(
        &o,
        &Context {
            home: PathBuf::from("/root"),
            base: Some((&base, src)),
            from: "audit.jsonl".into(),
        },
    );
    std::fs::remove_dir_all(&ws).unwrap();
    let added = s.added.join("\n");
    assert!(!added.contains("/usr/lib"), "{added}");
    assert!(!added.contains("/etc/passwd"), "{added}");
    assert!(!added.contains("/usr/bin/git"), "{added}");
    assert!(!added.contains("{workspace}"), "{added}");
    assert!(added.contains("+ fs.read: \"/etc/hosts\""), "{added}");
    assert!(added.contains("+ fs.write: \"/tmp\""), "{added}");
    assert!(
        added.contains("+ net.allow: \"svc.test:8080/tcp\""),
        "{added}"
    );
    assert!(
        s.yaml.contains("  wall_time: 5m\n"),
        "the base's budgets are kept: {}",
        s.yaml
    );
    assert!(s.yaml.contains("    - \"/usr\"\n"), "{}", s.yaml);
}

#[test]
fn credential_stores_are_secrets() {
    let home = Path::new("/home/u");
    for p in [
        "/home/u/.ssh/id_ed25519",
        "/home/u/.aws/credentials",
        "/home/u/.config/gh/hosts.yml",
        "/home/u/.netrc",
        "/home/u/.docker/config.json",
        "/srv/app/.env",
        "/srv/app/.env.local",
    ] {
        assert!(is_secret(Path::new(p), home), "{p}");
    }
    for p in ["/home/u/.gitconfig", "/srv/app/.env.example", "/etc/passwd"] {
        assert!(!is_secret(Path::new(p), home), "{p}");
    }
}

#[test]
fn paths_are_written_with_workspace_and_home() {
    let home = Path::new("/home/u");
    let ws = Some(Path::new("/home/u/proj"));
    assert_eq!(display(Path::new("/home/u/proj"), ws, home), "{workspace}");
    assert_eq!(
        display(Path::new("/home/u/proj/a"), ws, home),
        "{workspace}/a"
    );
    assert_eq!(
        display(Path::new("/home/u/.gitconfig"), ws, home),
        "~/.gitconfig"
    );
    assert_eq!(display(Path::new("/etc/hosts"), ws, home), "/etc/hosts");
}

#[test]
fn runs_merge_and_run_filters_select() {
    let exec = |run: &str, path: &str| rec(run, serde_json::json!({"event": "exec", "path": path}));
    let start = |run: &str| {
        rec(
            run,
            serde_json::json!({"event": "run_start", "workspace": "/w"}),
        )
    };
    let l = [
        start("a"),
        exec("a", "/usr/bin/git"),
        start("b"),
        exec("b", "/usr/bin/make"),
        exec("b", "/usr/bin/git"),
    ]
    .join("\n");
    let all = Observed::collect(&l, &[], None);
    assert_eq!(all.runs, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(all.execs.get("/usr/bin/git"), Some(&2));
    assert_eq!(all.execs.get("/usr/bin/make"), Some(&1));
    let only_a = Observed::collect(&l, &["a".to_owned()], None);
    assert_eq!(only_a.execs.len(), 1);
    let y = suggest(&all, &cx()).yaml;
    assert!(y.contains("\"/usr/bin/git\"   # 2 events"), "{y}");
    assert!(y.contains("(2 runs, 3 events)"), "{y}");
}

#[test]
fn a_private_answer_is_granted_by_name_and_by_address() {
    // In enforce mode the resolver drops a loopback answer unless an address rule
    // covers it, so the name rule alone would leave the fetch failing.
    let lines = [
        rec(
            "r1",
            serde_json::json!({"event": "run_start", "workspace": "/srv/ws", "mode": "learn"}),
        ),
        rec(
            "r1",
            serde_json::json!({"event": "denied", "decision": "would_deny", "layer": "dns", "op": "dns_query", "name": "local.test", "qtype": "A", "rule": "no rule", "would_rcode": "REFUSED"}),
        ),
        rec(
            "r1",
            serde_json::json!({"event": "denied", "decision": "would_deny", "layer": "dns", "op": "dns_answer", "name": "local.test", "qtype": "A", "rule": "no rule", "reason": "rebinding", "addrs": ["127.0.0.7"]}),
        ),
        rec(
            "r1",
            serde_json::json!({"event": "dns", "op": "dns_query", "name": "local.test", "qtype": "A", "rule": "no rule", "addrs": [], "allowed": false, "ttl_s": 60, "rcode": "NOERROR"}),
        ),
        rec(
            "r1",
            serde_json::json!({"event": "denied", "decision": "would_deny", "op": "connect", "dst": "127.0.0.7", "port": 8081, "proto": "tcp"}),
        ),
        rec(
            "r1",
            serde_json::json!({"event": "run_end", "elapsed_ms": 10, "budgets": {}}),
        ),
    ];
    let o = Observed::collect(&lines.join("\n"), &[], None);
    let y = suggest(&o, &cx()).yaml;
    let allow = y.split("\nnet:").nth(1).unwrap_or("");
    assert!(
        allow.contains("\"local.test:8081/tcp\"   # 1 event (by name; resolved to 127.0.0.7)"),
        "{y}"
    );
    assert!(
        allow.contains("\"127.0.0.7:8081/tcp\"   # 1 event (a private answer of local.test: the resolver passes it only under an address rule)"),
        "{y}"
    );
    assert!(
        !y.contains("not granted: the resolver was asked for local.test"),
        "{y}"
    );
}
