//! The schema against the parser: the same keys, the same verdict on good and bad values,
//! and every shipped policy (`policies/`, the README's examples) valid.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde_json::Value;

use super::*;
use crate::policy::{parse_str, LoadOptions};

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema()).unwrap()
}

/// A YAML document as the JSON value an editor's YAML support validates.
fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Value(Scalar::Null) => Value::Null,
        Yaml::Value(Scalar::Boolean(b)) => json!(b),
        Yaml::Value(Scalar::Integer(n)) => json!(n),
        Yaml::Value(Scalar::FloatingPoint(f)) => json!(f.into_inner()),
        Yaml::Value(Scalar::String(s)) => json!(s),
        Yaml::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        other => panic!("unexpected yaml node {other:?}"),
    }
}

fn yaml_json(src: &str) -> Value {
    let docs = Yaml::load_from_str(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    to_json(&docs[0])
}

/// The schema's errors for `src`, one line each (empty when valid).
fn schema_errors(v: &jsonschema::Validator, src: &str) -> Vec<String> {
    let doc = yaml_json(src);
    v.iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// A workspace with the paths the samples name, and a home.
struct Env {
    _ws: tempfile::TempDir,
    _home: tempfile::TempDir,
    opts: LoadOptions,
}

fn env() -> Env {
    let ws = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    for d in [".git/hooks", "run"] {
        std::fs::create_dir_all(ws.path().join(d)).unwrap();
    }
    std::fs::write(ws.path().join(".env"), "").unwrap();
    let opts = LoadOptions {
        workspace: ws.path().to_path_buf(),
        home: home.path().to_path_buf(),
    };
    Env {
        _ws: ws,
        _home: home,
        opts,
    }
}

const HEAD: &str = "version: 1\nname: t\n";

#[test]
fn the_schema_is_a_valid_draft_2020_12_schema() {
    let s = schema();
    assert_eq!(s["$schema"], DIALECT);
    assert!(jsonschema::draft202012::meta::is_valid(&s));
}

/// The `properties` of every closed object in the schema, by where it is.
fn closed_objects(s: &Value) -> Vec<(String, BTreeSet<String>)> {
    fn walk(at: &str, v: &Value, out: &mut Vec<(String, BTreeSet<String>)>) {
        match v {
            Value::Object(m) => {
                if m.get("additionalProperties") == Some(&Value::Bool(false)) {
                    let keys = m["properties"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .cloned()
                        .collect();
                    out.push((at.to_owned(), keys));
                }
                for (k, child) in m {
                    walk(&format!("{at}/{k}"), child, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(&format!("{at}/{i}"), child, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("#", s, &mut out);
    out
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

/// Every mapping the parser reads is a closed object of the schema with exactly its keys,
/// and the schema has no closed object the parser does not read.
#[test]
fn the_schema_has_exactly_the_parsers_keys() {
    let s = schema();
    let objects = closed_objects(&s);
    let find = |at: &str| {
        objects
            .iter()
            .find(|(p, _)| p == at)
            .map(|(_, k)| k.clone())
            .unwrap_or_else(|| panic!("no closed object at {at}: {objects:?}"))
    };
    assert_eq!(find("#"), set(TOP_KEYS));
    assert_eq!(find("#/$defs/fs"), set(FS_KEYS));
    assert_eq!(find("#/$defs/exec"), set(EXEC_KEYS));
    assert_eq!(find("#/$defs/net"), set(NET_KEYS));
    assert_eq!(find("#/$defs/budgets"), set(SECTION_KEYS));
    assert_eq!(find("#/$defs/attach"), set(ATTACH_KEYS));
    assert_eq!(find("#/$defs/env"), set(crate::policy::parse::ENV_KEYS));
    assert_eq!(find("#/$defs/pathEntry/anyOf/2"), set(ENTRY_KEYS));
    let mut budget_forms = 0;
    for key in BudgetKey::ALL {
        let at = format!("#/$defs/budgets/properties/{}/anyOf/1", key.name());
        let want: Vec<&str> = if key.kernel_enforced() {
            vec!["limit"]
        } else {
            LONG_FORM_KEYS.to_vec()
        };
        assert_eq!(find(&at), set(&want), "{at}");
        budget_forms += 1;
    }
    // Nothing else: a closed object the parser does not know would refuse what it accepts.
    assert_eq!(objects.len(), 8 + budget_forms, "{objects:?}");
    assert_eq!(
        SECTION_KEYS.len(),
        BudgetKey::ALL.len() + 2,
        "budgets has on_exceed, signal and one key per budget"
    );
}

/// One value for each key of each mapping that both the schema and the parser accept.
fn sample(section: &str, key: &str) -> String {
    let v = match (section, key) {
        ("", "version") => "1",
        ("", "name") => "t",
        ("", "mode") => "audit",
        ("", _) => "{}",
        ("fs", "deny") => "[\"{workspace}/.git/hooks\"]",
        ("fs", "secret") => "[\"{workspace}/.env\"]",
        ("fs" | "exec", _) => "[/usr, \"{workspace}\", ~, \"~/\", {path: /nope, optional: true}]",
        ("attach", "best_effort") => "[fs, syscalls, caps, fs]",
        ("net", "raw") => "true",
        ("net", "unix") => "[\"{workspace}/run\"]",
        ("net", "unix_mediation" | "taint_socket_abort") => "best_effort",
        ("net", "bind") => "[\"127.0.0.1:8000/tcp\", \"[::1]:9000\"]",
        ("net", _) => "[\"api.example.com:443/tcp\", \"10.0.0.0/8\", \"*.example.com\", \"[fd00::/8]:1-2/udp\"]",
        ("budgets", "on_exceed") => "[warn@80%, freeze, kill@120%]",
        ("budgets", "signal") => "usr1",
        ("budgets", "wall_time" | "cpu_time") => "90s",
        ("budgets", "cpu_quota") => "50%",
        ("budgets", "pids") => "64",
        ("budgets", "memory" | "memory_high") => "{limit: 512MiB}",
        ("budgets", "syscalls" | "execs") => "{limit: 100/1h, on_exceed: [kill], signal: SIGUSR2}",
        ("budgets", _) => "1GiB/10m",
        _ => panic!("no sample for {section}.{key}"),
    };
    v.to_owned()
}

fn policy_with(section: &str, key: &str, value: &str) -> String {
    match section {
        "" if key == "version" || key == "name" => HEAD.to_owned(),
        "" => format!("{HEAD}{key}: {value}\n"),
        _ => format!("{HEAD}{section}:\n  {key}: {value}\n"),
    }
}

fn sections() -> [(&'static str, &'static [&'static str]); 6] {
    [
        ("", TOP_KEYS),
        ("fs", FS_KEYS),
        ("exec", EXEC_KEYS),
        ("net", NET_KEYS),
        ("budgets", SECTION_KEYS),
        ("attach", ATTACH_KEYS),
    ]
}

/// Each key the parser accepts, with a good value, is accepted by the schema too, and an
/// unknown key in every mapping is refused by both.
#[test]
fn every_key_the_parser_accepts_the_schema_accepts() {
    let v = validator();
    let e = env();
    for (section, keys) in sections() {
        for key in keys {
            let src = policy_with(section, key, &sample(section, key));
            if let Err(err) = parse_str(&src, "t.yaml", &e.opts) {
                panic!("parser refused {section}.{key}: {err}\n{src}");
            }
            let errs = schema_errors(&v, &src);
            assert!(
                errs.is_empty(),
                "schema refused {section}.{key}: {errs:?}\n{src}"
            );
        }
        let src = policy_with(section, "bogus", "1");
        assert!(parse_str(&src, "t.yaml", &e.opts).is_err(), "{src}");
        assert!(!schema_errors(&v, &src).is_empty(), "{src}");
    }
    let entry = format!("{HEAD}fs:\n  read: [{{path: /usr, bogus: 1}}]\n");
    assert!(parse_str(&entry, "t.yaml", &e.opts).is_err());
    assert!(!schema_errors(&v, &entry).is_empty());
}

/// Values the parser refuses for their shape (not for a missing path or a kernel), each
/// refused by the schema too, and near misses that both accept.
#[test]
fn the_schema_and_the_parser_agree_on_values() {
    let v = validator();
    let e = env();
    let bad = [
        "version: 2\nname: t\n",
        "version: \"1\"\nname: t\n",
        "name: t\n",
        "version: 1\n",
        "version: 1\nname: \"\"\n",
        "version: 1\nname: 5\n",
        "mode: strict\n",
        "fs: [/usr]\n",
        "fs:\n  read: /usr\n",
        "fs:\n  read: [usr/lib]\n",
        "fs:\n  read: [\"~user/x\"]\n",
        "fs:\n  read: [\"{workspace}x\"]\n",
        "fs:\n  read: [1]\n",
        "fs:\n  read: [{optional: true}]\n",
        "fs:\n  read: [{path: /usr, optional: yes}]\n",
        "net:\n  raw: \"yes\"\n",
        "net:\n  unix_mediation: maybe\n",
        "net:\n  allow: [443]\n",
        "net:\n  allow: [\"a b:443\"]\n",
        "net:\n  allow: [\"::1:443\"]\n",
        "net:\n  allow: [\"host:443/sctp\"]\n",
        "budgets:\n  wall_time: 10x\n",
        "budgets:\n  wall_time: 10\n",
        "budgets:\n  wall_time: 0s\n",
        "budgets:\n  wall_time: 1.5h\n",
        "budgets:\n  memory: 512MB\n",
        "budgets:\n  memory: 0\n",
        "budgets:\n  memory: 1GiB/1s\n",
        "budgets:\n  pids: 0\n",
        "budgets:\n  pids: \"64\"\n",
        "budgets:\n  pids: 64/1s\n",
        "budgets:\n  cpu_quota: 50\n",
        "budgets:\n  memory: {limit: 1GiB, on_exceed: [kill]}\n",
        "budgets:\n  pids: {limit: 5, signal: SIGUSR1}\n",
        "budgets:\n  execs: {on_exceed: [kill]}\n",
        "budgets:\n  on_exceed: []\n",
        "budgets:\n  on_exceed: [nuke@10%]\n",
        "budgets:\n  on_exceed: [warn@80]\n",
        "budgets:\n  on_exceed: kill\n",
        "budgets:\n  signal: 10\n",
        "budgets:\n  syscalls: 100/1x\n",
        "attach:\n  best_effort: [network]\n",
        "attach:\n  best_effort: fs\n",
        "attach: [fs]\n",
    ];
    for body in bad {
        let src = if body.starts_with("version") || body.starts_with("name") {
            body.to_owned()
        } else {
            format!("{HEAD}{body}")
        };
        assert!(
            parse_str(&src, "t.yaml", &e.opts).is_err(),
            "parser took {src}"
        );
        assert!(!schema_errors(&v, &src).is_empty(), "schema took {src}");
    }
    let good = [
        "budgets:\n  memory: 4096\n",
        "budgets:\n  net_egress_bytes: \"1MiB / 1s\"\n",
        "budgets:\n  syscalls: 50000/1s\n",
        "budgets:\n  execs: 100\n",
        "budgets:\n  cpu_quota: 200%\n",
        "budgets:\n  signal: SIGTERM\n",
        "budgets:\n  on_exceed: [kill]\n",
        "net:\n  allow: [\"0.0.0.0/0:443/tcp\", \"127.0.0.1:8000-8999/tcp\", \"[::ffff:10.0.0.1]:80\"]\n",
        "fs:\n  read: [\"{workspace}\", \"~\"]\n",
        "mode: enforce\n",
        "attach:\n  best_effort: []\n",
    ];
    for body in good {
        let src = format!("{HEAD}{body}");
        if let Err(err) = parse_str(&src, "t.yaml", &e.opts) {
            panic!("parser refused {src}: {err}");
        }
        let errs = schema_errors(&v, &src);
        assert!(errs.is_empty(), "schema refused {src}: {errs:?}");
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn every_preset_validates() {
    let v = validator();
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        let errs = schema_errors(&v, &src);
        assert!(errs.is_empty(), "{}: {errs:?}", path.display());
        n += 1;
    }
    assert!(n >= 4, "only {n} presets");
}

/// The ```yaml blocks of a markdown file.
/// The ```yaml blocks of `md`, without the indentation of their fence (a block in a
/// list item is indented with it).
fn yaml_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, usize)> = None;
    for line in md.lines() {
        let indent = line.len() - line.trim_start().len();
        match &mut current {
            None if line.trim_start() == "```yaml" => current = Some((String::new(), indent)),
            None => {}
            Some((block, _)) if line.trim_start() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some((block, fence)) => {
                block.push_str(line.get((*fence).min(indent)..).unwrap_or_default());
                block.push('\n');
            }
        }
    }
    blocks
}

/// Every policy in the README validates; a block that shows one section (no `version`) is
/// checked as that section of a policy.
#[test]
fn every_readme_policy_validates() {
    let v = validator();
    let mut docs = vec![repo().join("README.md")];
    if let Ok(dir) = std::fs::read_dir(repo().join("docs")) {
        docs.extend(dir.map(|e| e.unwrap().path()));
    }
    let mut n = 0;
    for doc in docs
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
    {
        let md = std::fs::read_to_string(doc).unwrap();
        for block in yaml_blocks(&md) {
            let docs = Yaml::load_from_str(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
            let Some(doc_json) = docs.first().map(to_json) else {
                continue; // only comments
            };
            let is_policy = doc_json.get("version").is_some();
            let is_section = doc_json
                .as_object()
                .is_some_and(|m| m.keys().all(|k| TOP_KEYS.contains(&k.as_str())));
            if !is_policy && !is_section {
                continue; // not a policy (e.g. a config file)
            }
            let src = if is_policy {
                block.clone()
            } else {
                format!("{HEAD}{block}")
            };
            let errs = schema_errors(&v, &src);
            assert!(errs.is_empty(), "{}: {errs:?}\n{block}", doc.display());
            n += 1;
        }
    }
    assert!(n >= 2, "only {n} policies in the docs");
}
