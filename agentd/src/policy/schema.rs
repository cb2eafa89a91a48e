//! `agentd policy schema`: a JSON Schema (draft 2020-12) of policy version 1, so that
//! editors can complete and check policies as they are written.
//!
//! It is built from the parser's own tables: the key lists of every mapping, the modes,
//! the budget keys with their units, the duration and size suffixes, the step actions and
//! the signal names. A key the parser learns therefore shows up here, and the tests check
//! both directions on real documents (every key the schema names is accepted by the parser
//! and every key the parser accepts is in the schema, with the same verdict on a corpus of
//! good and bad values).
//!
//! The schema can only check shape: whether a path exists, whether a CIDR has host bits
//! set and which layer can enforce a rule on this kernel are for `agentd policy check` and
//! `agentd policy explain`. Where it cannot be exact, it is looser than the parser, never
//! stricter, so that a policy the parser takes never shows as an error in an editor.

use serde_json::{json, Map, Value};

use super::budget::{Action, BudgetKey, Unit};
use super::model::ATTACH_PARTS;
use super::parse::{
    ATTACH_KEYS, DURATION_UNITS, ENTRY_KEYS, ENV_KEYS, EXEC_KEYS, FS_KEYS, LONG_FORM_KEYS, MODES,
    NET_KEYS, SECTION_KEYS, SIZE_UNITS, STRICTNESS, TOP_KEYS, VERSION, WORKSPACE,
};

pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The schema of a policy file, as a JSON value.
pub fn schema() -> Value {
    json!({
        "$schema": DIALECT,
        "title": format!("agentd policy, version {VERSION}"),
        "description": "A policy for `agentd run --policy FILE`. Unknown fields are errors.",
        "type": "object",
        "required": ["version", "name"],
        "additionalProperties": false,
        "properties": properties(TOP_KEYS, top_field),
        "$defs": {
            "path": path(),
            "pathEntry": path_entry(),
            "paths": {"type": "array", "items": {"$ref": "#/$defs/pathEntry"}},
            "netRule": net_rule(),
            "netRules": {"type": "array", "items": {"$ref": "#/$defs/netRule"}},
            "strictness": {"enum": STRICTNESS},
            "steps": steps(),
            "signal": signal(),
            "fs": section("fs", FS_KEYS, fs_field),
            "exec": section("exec", EXEC_KEYS, exec_field),
            "net": section("net", NET_KEYS, net_field),
            "env": section("env", ENV_KEYS, env_field),
            "budgets": section("budgets", SECTION_KEYS, budgets_field),
            "attach": section("attach", ATTACH_KEYS, attach_field),
        },
    })
}

/// `{key: schema(key)}` for every key, in the parser's order. A key without a schema here
/// gets `false` (nothing matches), which the tests catch.
fn properties(keys: &[&str], field: impl Fn(&str) -> Value) -> Value {
    let map: Map<String, Value> = keys.iter().map(|k| ((*k).to_owned(), field(k))).collect();
    Value::Object(map)
}

fn section(name: &str, keys: &[&str], field: fn(&str) -> Value) -> Value {
    json!({
        "description": format!("The `{name}` section."),
        "type": "object",
        "additionalProperties": false,
        "properties": properties(keys, field),
    })
}

fn reference(def: &str, description: &str) -> Value {
    json!({"$ref": format!("#/$defs/{def}"), "description": description})
}

fn top_field(key: &str) -> Value {
    match key {
        "version" => json!({"const": VERSION, "description": "The policy format version."}),
        "name" => json!({
            "type": "string",
            "minLength": 1,
            "pattern": "\\S",
            "description": "The policy's name, recorded in every run_start record.",
        }),
        "mode" => json!({
            "enum": MODES,
            "default": "enforce",
            "description": "enforce: deny what is not allowed; audit: deny nothing, record what would be denied.",
        }),
        "fs" => reference(
            "fs",
            "Files and directories the run may read, write or not touch.",
        ),
        "exec" => reference("exec", "Programs the run may execute."),
        "net" => reference(
            "net",
            "Network destinations; without this section the network is not restricted.",
        ),
        "env" => reference(
            "env",
            "Which of the caller's environment variables the command gets.",
        ),
        "budgets" => reference(
            "budgets",
            "What the run may consume, and the response when it goes past.",
        ),
        "attach" => reference(
            "attach",
            "How `agentd attach` treats this policy (`agentd run` ignores it).",
        ),
        _ => Value::Bool(false),
    }
}

fn attach_field(key: &str) -> Value {
    match key {
        "best_effort" => json!({
            "type": "array",
            "items": {"enum": ATTACH_PARTS},
            "default": [],
            "description": "Parts that cannot be applied to running processes and that `agentd attach` may leave out (it says so): fs (landlock), syscalls (seccomp), caps (the capability drop). Attach refuses a policy that uses any other of them. `agentd attach --best-effort` replaces this list.",
        }),
        _ => Value::Bool(false),
    }
}

fn fs_field(key: &str) -> Value {
    match key {
        "read" => reference("paths", "Readable trees."),
        "write" => reference("paths", "Writable trees (write implies read)."),
        "deny" => reference(
            "paths",
            "Denied even inside an allowed tree (matched by inode).",
        ),
        "secret" => reference("paths", "Readable, but opening one taints the run."),
        _ => Value::Bool(false),
    }
}

fn exec_field(key: &str) -> Value {
    match key {
        "allow" => reference("paths", "Programs (files or directories) the run may execute."),
        "libraries" => reference(
            "paths",
            "Where PROT_EXEC file mappings may come from besides exec.allow (default /usr/lib, /lib, /lib64).",
        ),
        _ => Value::Bool(false),
    }
}

fn net_field(key: &str) -> Value {
    match key {
        "allow" => reference("netRules", "Destinations the run may connect and send to."),
        "bind" => reference(
            "netRules",
            "Local addresses, ports and protocols the run may bind (no domain names; port 0 alone: the port the kernel picks, no other). Every other bind is denied.",
        ),
        "raw" => json!({
            "type": "boolean",
            "default": false,
            "description": "Raw, packet and non-TCP/UDP inet sockets may be created.",
        }),
        "after_taint" => reference(
            "netRules",
            "Destinations still allowed once the run is tainted (net.allow must allow them too).",
        ),
        "unix" => reference(
            "paths",
            "Pathname unix sockets (or directories of them) the run may connect to, besides those under fs.write.",
        ),
        "unix_mediation" => reference(
            "strictness",
            "best_effort: run without unix socket mediation (logged) on a kernel that lacks the hooks.",
        ),
        "taint_socket_abort" => reference(
            "strictness",
            "best_effort: run an fs.secret policy (logged) on a kernel without SOCK_DESTROY.",
        ),
        _ => Value::Bool(false),
    }
}

fn env_field(key: &str) -> Value {
    match key {
        "pass" => json!({
            "type": "array",
            "items": {"type": "string", "pattern": "^[A-Za-z_*][A-Za-z0-9_*]*$"},
            "default": crate::policy::env::DEFAULT_PASS,
            "description": "Variables passed: names, or patterns with `*`. A name only a pattern matches is dropped when it looks like a credential (TOKEN, SECRET, PASSWORD, API_KEY, ..._KEY ...).",
        }),
        "set" => json!({
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "additionalProperties": {"type": ["string", "integer"]},
            "description": "Variables set (or replaced) after filtering.",
        }),
        _ => Value::Bool(false),
    }
}

fn budgets_field(key: &str) -> Value {
    match (key, BudgetKey::from_name(key)) {
        ("on_exceed", _) => reference(
            "steps",
            "Default response of every budget that names none (else [kill@100%]).",
        ),
        ("signal", _) => reference("signal", "Default signal of warn steps."),
        (_, Some(budget_key)) => budget(budget_key),
        _ => Value::Bool(false),
    }
}

/// A budget: its limit, or `{limit, on_exceed, signal}` (limit only when the kernel
/// enforces it, since the kernel's own response is the response).
fn budget(key: BudgetKey) -> Value {
    let long_keys: Vec<&str> = LONG_FORM_KEYS
        .iter()
        .copied()
        .filter(|k| *k == "limit" || !key.kernel_enforced())
        .collect();
    let long_field = move |k: &str| match k {
        "limit" => limit(key),
        "on_exceed" => reference("steps", "This budget's response."),
        "signal" => reference("signal", "This budget's warn signal."),
        _ => Value::Bool(false),
    };
    let long = properties(&long_keys, long_field);
    json!({
        "description": budget_description(key),
        "anyOf": [
            limit(key),
            {
                "type": "object",
                "required": ["limit"],
                "additionalProperties": false,
                "properties": long,
            },
        ],
    })
}

fn budget_description(key: BudgetKey) -> String {
    let what = match key {
        BudgetKey::WallTime => "Wall-clock time of the run",
        BudgetKey::CpuTime => "CPU time of the whole run",
        BudgetKey::CpuQuota => "Share of one CPU (200% = two CPUs); the kernel throttles",
        BudgetKey::Memory => "Memory; the kernel OOM-kills at the limit",
        BudgetKey::MemoryHigh => "Soft memory limit; the kernel reclaims and throttles above it",
        BudgetKey::Pids => "Processes and threads; the kernel refuses forks (EAGAIN)",
        BudgetKey::Syscalls => "System calls",
        BudgetKey::Execs => "Programs executed",
        BudgetKey::NetEgressBytes => "Bytes sent",
        BudgetKey::NetIngressBytes => "Bytes received",
        BudgetKey::FsWriteBytes => "Bytes written",
    };
    if key.allows_rate() {
        format!("{what}; `N/WINDOW` limits any sliding window.")
    } else {
        format!("{what}.")
    }
}

/// A positive whole number, without the leading `+` or sign the parser refuses.
const POSITIVE: &str = "0*[1-9][0-9]*";

fn alternatives(units: impl Iterator<Item = &'static str>) -> String {
    units.collect::<Vec<_>>().join("|")
}

fn duration_re() -> String {
    format!(
        "{POSITIVE}({})",
        alternatives(DURATION_UNITS.iter().map(|(u, _)| *u))
    )
}

fn size_re() -> String {
    format!(
        "{POSITIVE}({})?",
        alternatives(SIZE_UNITS.iter().map(|(u, _)| *u))
    )
}

/// The limit of `key` in its unit, with the rate form where it has one.
fn limit(key: BudgetKey) -> Value {
    let rate = |amount: &str| {
        json!({
            "type": "string",
            "pattern": format!("^\\s*{amount}\\s*/\\s*{}\\s*$", duration_re()),
        })
    };
    let positive = json!({"type": "integer", "minimum": 1});
    match (key.unit(), key.allows_rate()) {
        (Unit::Millis, _) => json!({"type": "string", "pattern": format!("^{}$", duration_re())}),
        (Unit::Percent, _) => json!({"type": "string", "pattern": format!("^{POSITIVE}%$")}),
        (Unit::Bytes, allows_rate) => {
            let mut any = vec![
                positive,
                json!({"type": "string", "pattern": format!("^{}$", size_re())}),
            ];
            if allows_rate {
                any.push(rate(&size_re()));
            }
            json!({"anyOf": any})
        }
        (Unit::Count, false) => positive,
        (Unit::Count, true) => json!({"anyOf": [positive, rate(POSITIVE)]}),
    }
}

fn steps() -> Value {
    let actions = alternatives(Action::ALL.into_iter().map(Action::name));
    json!({
        "type": "array",
        "minItems": 1,
        "description": "ACTION@P% steps that fire once, as the use goes past P% of the limit; rising, nothing after a kill. A bare action means @100%.",
        "items": {"type": "string", "pattern": format!("^({actions})(@{POSITIVE}%)?$")},
    })
}

/// A signal name: `SIGUSR1`, or without the prefix, in any case.
fn signal() -> Value {
    let names: Vec<&str> = nix::sys::signal::Signal::iterator()
        .map(|s| s.as_str())
        .collect();
    json!({
        "description": "A signal name such as SIGUSR1 (the SIG prefix and the case are optional).",
        "anyOf": [
            {"enum": names},
            {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
        ],
    })
}

fn path() -> Value {
    let ws = regex_escape(WORKSPACE);
    json!({
        "type": "string",
        "pattern": format!("^(/|~(/|$)|{ws}(/|$))"),
        "description": format!("An absolute path, `~/...` (the invoking user's home) or `{WORKSPACE}/...` (--workspace or the current directory). It must exist unless optional."),
    })
}

fn path_entry() -> Value {
    let entry = |k: &str| match k {
        "path" => json!({"$ref": "#/$defs/path"}),
        "optional" => json!({
            "type": "boolean",
            "default": false,
            "description": "A path that does not exist is skipped instead of being an error.",
        }),
        _ => Value::Bool(false),
    };
    let long = properties(ENTRY_KEYS, entry);
    json!({
        "anyOf": [
            {"$ref": "#/$defs/path"},
            // A bare `~` is YAML's null; in a path list it is the home directory.
            {"type": "null", "description": "A bare `~`: the home directory."},
            {
                "type": "object",
                "required": ["path"],
                "additionalProperties": false,
                "properties": long,
            },
        ],
    })
}

/// `HOST[:PORT|:LO-HI][/tcp|/udp]`: an address, a CIDR, `[ipv6]`, or a domain name with an
/// optional leading `*.`. Loose on HOST: the parser names what is wrong with one.
fn net_rule() -> Value {
    json!({
        "type": "string",
        "pattern": "^(\\[[0-9A-Fa-f:.]+(/[0-9]+)?\\]|[^\\s:\\[\\]/]+(/[0-9]+)?)(:[0-9]+(-[0-9]+)?)?(/(tcp|udp))?$",
        "description": "HOST[:PORT|:LO-HI][/tcp|/udp]; no port means any port, no protocol means TCP and UDP.",
        "examples": ["api.example.com:443/tcp", "10.0.0.0/8", "[::1]:8000-8999/tcp", "*.example.com:443"],
    })
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
