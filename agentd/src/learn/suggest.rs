//! The generaliser: [`Observed`] → a readable policy a careful person would grant.
//!
//! - `{workspace}` and `~` stand for the paths they name; the workspace is granted whole.
//! - [`MANY`] or more files read under one directory grant the directory (system trees
//!   at their second level, `/usr/lib`; elsewhere the files' parent), with a comment
//!   saying so; a file read alone is granted alone, and so is every file directly under
//!   `/etc` and `~`.
//! - Credential stores ([`is_secret`]) go to `fs.secret`, never `fs.read`.
//! - Writes outside the workspace, the temp directories and the terminal are comments.
//! - Execs are exact files: a directory would grant every program in it.
//! - `exec.libraries` stays the default unless a mapping came from elsewhere.
//! - A destination whose address the resolver gave for a name is granted by name; a
//!   private (loopback, link-local) answer also by address, which the resolver needs.
//! - Budgets are the observed peak × [`MARGIN`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::Observed;
use crate::layers::landlock;
use crate::policy::{NetRule, PathRule, Policy, DEFAULT_LIBRARIES};

/// Files read under one directory from which the directory is granted instead.
pub const MANY: u64 = 3;
/// Budgets are the observed peak times this.
pub const MARGIN: u64 = 2;
/// Trees granted at their second level (`/usr/lib`, `/opt/tool`) when many files are read.
const SYSTEM_TREES: &[&str] = &[
    "/usr", "/lib", "/lib32", "/lib64", "/opt", "/bin", "/sbin", "/nix", "/snap",
];
/// Directories whose writes are granted (the temp directories).
const TEMP_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];
/// Terminal devices a shell opens read-write; granted as files.
const TERMINAL: &[&str] = &["/dev/tty", "/dev/ptmx", "/dev/pts"];
/// Credential stores under the home directory.
const HOME_SECRETS: &[&str] = &[
    ".ssh",
    ".aws",
    ".azure",
    ".config/gh",
    ".config/gcloud",
    ".docker/config.json",
    ".git-credentials",
    ".gnupg",
    ".kube/config",
    ".netrc",
    ".npmrc",
    ".password-store",
    ".pgpass",
    ".pypirc",
];

/// Where the suggestion is for: the home `~` stands for, and a base to add to.
pub struct Context<'a> {
    pub home: PathBuf,
    /// The base policy and its source text.
    pub base: Option<(&'a Policy, &'a str)>,
    /// What the suggestion was made from (named in its header).
    pub from: String,
}

/// A suggested policy: the file, and one line per rule added to the base (or to nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    pub yaml: String,
    /// `+ SECTION: RULE  # why` for every rule added.
    pub added: Vec<String>,
}

/// One list entry: its YAML text and a comment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    yaml: String,
    comment: String,
}

#[derive(Default)]
struct Section {
    rules: Vec<Rule>,
    /// Comment lines for a person to decide.
    notes: Vec<String>,
}

/// Whether reading `p` should taint the run: a credential store under `home`, a `.env`
/// file anywhere, or an SSH private key.
pub fn is_secret(p: &Path, home: &Path) -> bool {
    if let Ok(rel) = p.strip_prefix(home) {
        if HOME_SECRETS.iter().any(|s| rel.starts_with(s)) {
            return true;
        }
    }
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == ".env"
        || (name.starts_with(".env.") && !name.ends_with(".example"))
        || (name.starts_with("id_") && p.parent().is_some_and(|d| d.ends_with(".ssh")))
}

/// `p` as a policy writes it: `{workspace}/…`, `~/…` or itself.
pub fn display(p: &Path, ws: Option<&Path>, home: &Path) -> String {
    if let Some(rel) = ws.and_then(|w| p.strip_prefix(w).ok()) {
        return if rel.as_os_str().is_empty() {
            "{workspace}".into()
        } else {
            format!("{{workspace}}/{}", rel.display())
        };
    }
    if home != Path::new("/") {
        if let Ok(rel) = p.strip_prefix(home) {
            return if rel.as_os_str().is_empty() {
                "~".into()
            } else {
                format!("~/{}", rel.display())
            };
        }
    }
    p.display().to_string()
}

/// The YAML entry for a path: quoted, `optional: true` when it does not exist now (a
/// file the run made and removed).
fn path_entry(p: &Path, ws: Option<&Path>, home: &Path) -> String {
    let s = quote(&display(p, ws, home));
    if p.exists() {
        s
    } else {
        format!("{{path: {s}, optional: true}}")
    }
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn under(p: &Path, dirs: &[&str]) -> Option<PathBuf> {
    dirs.iter().map(PathBuf::from).find(|d| p.starts_with(d))
}

fn events(n: u64) -> String {
    if n == 1 {
        "1 event".into()
    } else {
        format!("{n} events")
    }
}

/// Per-process `/proc/PID/…` (and `/proc/self`): no path names another run's entries.
fn is_proc_pid(p: &Path) -> bool {
    let mut c = p.components().skip(1);
    c.next().is_some_and(|x| x.as_os_str() == "proc")
        && c.next().is_some_and(|x| {
            let s = x.as_os_str().to_string_lossy();
            s == "self" || s == "thread-self" || s.chars().all(|ch| ch.is_ascii_digit())
        })
}

/// The directory `p` would be grouped under when many files there are read.
fn group_of(p: &Path, home: &Path) -> Option<PathBuf> {
    if let Some(tree) = under(p, SYSTEM_TREES) {
        let rest = p.strip_prefix(&tree).ok()?;
        let first = rest.components().next()?;
        let dir = tree.join(first);
        return (dir != p).then_some(dir);
    }
    let parent = p.parent()?;
    // Single files directly under /etc and ~ stay single files however many there are.
    if parent == Path::new("/etc") || parent == home || parent == Path::new("/") {
        return None;
    }
    Some(parent.to_path_buf())
}

fn fs_sections(o: &Observed, ws: Option<&Path>, home: &Path) -> [Section; 3] {
    let (mut read, mut write, mut secret) =
        (Section::default(), Section::default(), Section::default());
    let implicit = |p: &Path| {
        landlock::IMPLICIT_READ_WRITE
            .iter()
            .chain(landlock::IMPLICIT_READ)
            .any(|i| p == Path::new(i))
    };
    let in_ws = |p: &Path| ws.is_some_and(|w| p.starts_with(w));
    let (mut ws_reads, mut ws_writes) = (0, 0);
    let mut temp: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let mut terminal: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let mut outside: BTreeMap<PathBuf, u64> = BTreeMap::new();
    for (p, n) in &o.writes {
        let p = Path::new(p);
        if implicit(p) {
        } else if in_ws(p) {
            ws_writes += n;
        } else if let Some(t) = under(p, TEMP_DIRS) {
            *temp.entry(t).or_default() += n;
        } else if let Some(t) = under(p, TERMINAL) {
            *terminal.entry(t).or_default() += n;
        } else {
            *outside.entry(p.to_path_buf()).or_default() += n;
        }
    }
    let mut secrets: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let mut proc_pid = 0;
    let mut plain: BTreeMap<PathBuf, u64> = BTreeMap::new();
    for (p, n) in &o.reads {
        let p = Path::new(p);
        if implicit(p) || temp.keys().any(|t| p.starts_with(t)) {
        } else if is_secret(p, home) {
            *secrets.entry(p.to_path_buf()).or_default() += n;
        } else if in_ws(p) {
            ws_reads += n;
        } else if terminal.keys().any(|t| p.starts_with(t)) {
            *terminal.entry(p.to_path_buf()).or_default() += 0;
        } else if is_proc_pid(p) {
            proc_pid += n;
        } else {
            *plain.entry(p.to_path_buf()).or_default() += n;
        }
    }
    if ws.is_some() && ws_writes > 0 {
        write.rules.push(Rule {
            yaml: quote("{workspace}"),
            comment: format!(
                "{} in the workspace (write implies read)",
                events(ws_writes + ws_reads)
            ),
        });
    } else if ws.is_some() && ws_reads > 0 {
        read.rules.push(Rule {
            yaml: quote("{workspace}"),
            comment: format!("{} in the workspace", events(ws_reads)),
        });
    }
    for (t, n) in temp {
        write.rules.push(Rule {
            yaml: path_entry(&t, ws, home),
            comment: format!("{}: the temp directory", events(n)),
        });
    }
    for (t, n) in terminal {
        write.rules.push(Rule {
            yaml: path_entry(&t, ws, home),
            comment: format!("{}: the terminal", events(n.max(1))),
        });
    }
    for (p, n) in outside {
        write.notes.push(format!(
            "not granted, for a person to decide: {} written ({}), outside the workspace and the temp directory",
            display(&p, ws, home),
            events(n)
        ));
    }
    for (p, n) in secrets {
        secret.rules.push(Rule {
            yaml: path_entry(&p, ws, home),
            comment: format!(
                "{}: a credential store, so a secret (reading it taints the run), not fs.read",
                events(n)
            ),
        });
    }
    if proc_pid > 0 {
        read.rules.push(Rule {
            yaml: quote("/proc"),
            comment: format!(
                "{}: /proc/PID and /proc/self entries; no narrower path names a run's own",
                events(proc_pid)
            ),
        });
    }
    let mut groups: BTreeMap<PathBuf, (u64, u64)> = BTreeMap::new();
    for (p, n) in &plain {
        if let Some(g) = group_of(p, home) {
            let e = groups.entry(g).or_default();
            e.0 += 1;
            e.1 += n;
        }
    }
    let mut granted: BTreeSet<PathBuf> = BTreeSet::new();
    for (g, (files, n)) in &groups {
        if *files >= MANY {
            granted.insert(g.clone());
            read.rules.push(Rule {
                yaml: path_entry(g, ws, home),
                comment: format!(
                    "{files} paths read under it ({}); {MANY} or more: the directory, not each file",
                    events(*n)
                ),
            });
        }
    }
    for (p, n) in &plain {
        let covered = granted.iter().any(|g| p.starts_with(g) && p != g)
            || (proc_pid > 0 && p.starts_with("/proc"));
        if covered {
            continue;
        }
        if p == Path::new("/") {
            read.notes.push(format!(
                "not granted: / was read ({}); granting it would grant everything",
                events(*n)
            ));
            continue;
        }
        read.rules.push(Rule {
            yaml: path_entry(p, ws, home),
            comment: events(*n),
        });
    }
    read.rules.sort();
    write.rules.sort();
    secret.rules.sort();
    [read, write, secret]
}

fn exec_sections(o: &Observed, ws: Option<&Path>, home: &Path) -> (Section, Section) {
    let mut allow = Section::default();
    for (p, n) in &o.execs {
        allow.rules.push(Rule {
            yaml: path_entry(Path::new(p), ws, home),
            comment: events(*n),
        });
    }
    let defaults: Vec<PathBuf> = DEFAULT_LIBRARIES
        .iter()
        .flat_map(|d| {
            [
                PathBuf::from(d),
                std::fs::canonicalize(d).unwrap_or_default(),
            ]
        })
        .collect();
    let mut elsewhere: BTreeMap<PathBuf, u64> = BTreeMap::new();
    for (p, n) in &o.mappings {
        let p = Path::new(p);
        let default = defaults
            .iter()
            .any(|d| !d.as_os_str().is_empty() && p.starts_with(d));
        if default || o.execs.contains_key(&p.display().to_string()) {
            continue;
        }
        let dir = p.parent().unwrap_or(p).to_path_buf();
        *elsewhere.entry(dir).or_default() += n;
    }
    let mut libs = Section::default();
    if !elsewhere.is_empty() {
        for d in DEFAULT_LIBRARIES {
            libs.rules.push(Rule {
                yaml: format!("{{path: {}, optional: true}}", quote(d)),
                comment: "the default".into(),
            });
        }
        for (d, n) in elsewhere {
            libs.rules.push(Rule {
                yaml: path_entry(&d, ws, home),
                comment: format!(
                    "{}: executable mappings from outside the default",
                    events(n)
                ),
            });
        }
    }
    (allow, libs)
}

fn endpoint(host: &str, port: u16, proto: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}/{proto}")
    } else {
        format!("{host}:{port}/{proto}")
    }
}

fn net_sections(o: &Observed, ws: Option<&Path>, home: &Path) -> [Section; 3] {
    // The first name (in order) whose answers included an address.
    let mut name_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, (_, addrs)) in &o.names {
        for a in addrs {
            name_of.entry(a.as_str()).or_insert(name.as_str());
        }
    }
    let mut by_rule: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
    let mut named: BTreeSet<&str> = BTreeSet::new();
    // Address rules a name rule needs: its private answers, which enforce mode's
    // resolver passes (and its connect hooks allow) only under an address rule.
    let mut private: BTreeMap<String, (u64, &str)> = BTreeMap::new();
    for ((dst, port, proto), n) in &o.connects {
        let host = match name_of.get(dst.as_str()) {
            Some(name) => {
                named.insert(name);
                *name
            }
            None => dst.as_str(),
        };
        let e = by_rule.entry(endpoint(host, *port, proto)).or_default();
        e.0 += n;
        if host != dst {
            e.1.insert(dst.clone());
            if o.private_answers.contains(dst) {
                let p = private
                    .entry(endpoint(dst, *port, proto))
                    .or_insert((0, host));
                p.0 += n;
            }
        }
    }
    let mut allow = Section::default();
    for (rule, (n, addrs)) in by_rule {
        let comment = if addrs.is_empty() {
            events(n)
        } else {
            let a: Vec<&str> = addrs.iter().map(String::as_str).collect();
            format!("{} (by name; resolved to {})", events(n), a.join(", "))
        };
        allow.rules.push(Rule {
            yaml: quote(&rule),
            comment,
        });
    }
    for (rule, (n, name)) in private {
        allow.rules.push(Rule {
            yaml: quote(&rule),
            comment: format!(
                "{} (a private answer of {name}: the resolver passes it only under an address rule)",
                events(n)
            ),
        });
    }
    for (name, (n, _)) in &o.names {
        if !named.contains(name.as_str()) {
            allow.notes.push(format!(
                "not granted: the resolver was asked for {name} ({}) but no connect to its answers was seen",
                events(*n)
            ));
        }
    }
    let mut bind = Section::default();
    for ((dst, port, proto), n) in &o.binds {
        bind.rules.push(Rule {
            yaml: quote(&endpoint(dst, *port, proto)),
            comment: events(*n),
        });
    }
    let mut unix = Section::default();
    for (p, n) in &o.unix {
        unix.rules.push(Rule {
            yaml: path_entry(Path::new(p), ws, home),
            comment: events(*n),
        });
    }
    [allow, bind, unix]
}

/// `ms` as a readable duration, rounded up to a whole second (minute above 10 minutes).
fn duration(ms: u64) -> String {
    let s = ms.div_ceil(1000).max(1);
    if s > 600 {
        format!("{}m", s.div_ceil(60))
    } else {
        format!("{s}s")
    }
}

/// The least a budget is suggested at: a short run's peak says little about the next.
fn floor(name: &str) -> u64 {
    match name {
        "wall_time" | "cpu_time" => 10_000,
        "memory" | "memory_high" => 64 << 20,
        "pids" => 16,
        _ => 0,
    }
}

fn show_floor(name: &str, v: u64) -> String {
    match name {
        "wall_time" | "cpu_time" => duration(v),
        "memory" | "memory_high" => format!("{}MiB", v >> 20),
        _ => v.to_string(),
    }
}

fn budget_lines(o: &Observed) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    let mut notes = Vec::new();
    let mut figures = o.budgets.clone();
    figures
        .entry("wall_time".into())
        .or_insert(("ms".into(), o.elapsed_ms));
    for (name, (unit, peak)) in figures {
        let floor = floor(&name);
        let limit = peak.saturating_mul(MARGIN).max(floor);
        let value = match (name.as_str(), unit.as_str()) {
            ("wall_time" | "cpu_time", "ms") => duration(limit),
            ("memory" | "memory_high", "bytes") => format!("{}MiB", limit.div_ceil(1 << 20)),
            ("pids", _) => limit.to_string(),
            _ => {
                notes.push(format!(
                    "not suggested: budget {name} (peak {peak} {unit}); set it by hand"
                ));
                continue;
            }
        };
        let unit = if unit == "count" {
            String::new()
        } else {
            format!(" {unit}")
        };
        let at_least = if floor > 0 {
            format!(", at least {}", show_floor(&name, floor))
        } else {
            String::new()
        };
        lines.push(format!(
            "{name}: {value}   # peak {peak}{unit} x {MARGIN}{at_least}"
        ));
    }
    (lines, notes)
}

/// The `budgets:` block of the base's text, verbatim (kept as written).
fn base_budgets_block(src: &str) -> Option<String> {
    let mut out = String::new();
    let mut inside = false;
    for line in src.lines() {
        if line.starts_with("budgets:") {
            inside = true;
        } else if inside && !line.is_empty() && !line.starts_with([' ', '#', '\t']) {
            break;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    (!out.is_empty()).then_some(out)
}

struct Writer {
    out: String,
    added: Vec<String>,
}

impl Writer {
    /// A list: the base's entries as written, then the added ones with their comments.
    fn list(&mut self, indent: &str, key: &str, path: &str, base: &[String], s: &Section) {
        for n in &s.notes {
            self.out.push_str(&format!("{indent}# {n}\n"));
        }
        let mut added: Vec<&Rule> = Vec::new();
        for r in &s.rules {
            // A path that is there now is the same rule with or without `optional`.
            if !base.iter().any(|b| bare(b) == bare(&r.yaml)) {
                added.push(r);
            }
        }
        if base.is_empty() && added.is_empty() {
            self.out.push_str(&format!("{indent}{key}: []\n"));
            return;
        }
        self.out.push_str(&format!("{indent}{key}:\n"));
        for b in base {
            self.out.push_str(&format!("{indent}  - {b}\n"));
        }
        for r in added {
            self.out
                .push_str(&format!("{indent}  - {}   # {}\n", r.yaml, r.comment));
            self.added
                .push(format!("+ {path}: {}   # {}", r.yaml, r.comment));
        }
    }
}

/// An entry without its `{path: …, optional: true}` wrapping.
fn bare(entry: &str) -> &str {
    let e = entry.strip_prefix("{path: ").unwrap_or(entry);
    e.split(", optional").next().unwrap_or(e)
}

/// The base's path entries as YAML, as written (`optional` kept).
fn paths(rules: &[PathRule]) -> Vec<String> {
    rules
        .iter()
        .map(|r| {
            if r.optional {
                format!("{{path: {}, optional: true}}", quote(&r.written))
            } else {
                quote(&r.written)
            }
        })
        .collect()
}

fn nets(rules: &[NetRule]) -> Vec<String> {
    rules.iter().map(|r| quote(&r.written)).collect()
}

/// The suggested policy for what `o` used.
pub fn suggest(o: &Observed, cx: &Context) -> Suggestion {
    let ws_owned = (o.workspaces.len() == 1)
        .then(|| o.workspaces.iter().next().map(PathBuf::from))
        .flatten();
    let ws = ws_owned.as_deref();
    let home = cx.home.as_path();
    let base = cx.base.map(|(p, _)| p);
    let pr = |f: fn(&Policy) -> Vec<String>| base.map(f).unwrap_or_default();
    let [read, write, secret] = fs_sections(o, ws, home);
    let (exec_allow, libs) = exec_sections(o, ws, home);
    let [net_allow, bind, unix] = net_sections(o, ws, home);

    let mut w = Writer {
        out: String::new(),
        added: Vec::new(),
    };
    w.out.push_str(&format!(
        "# Suggested by `agentd policy suggest` from {} ({}, {}).\n",
        cx.from,
        match o.runs.len() {
            1 => format!("run {}", o.runs[0]),
            n => format!("{n} runs"),
        },
        events(o.events())
    ));
    w.out.push_str(&format!(
        "# Review it before use. {MANY} or more files read under a directory grant the directory;\n# budgets are the observed peak x {MARGIN}, with a floor so that a short run does not starve the next.\n"
    ));
    if o.workspaces.len() > 1 {
        w.out.push_str(
            "# The runs had different workspaces: their paths are written out in full.\n",
        );
    }
    w.out.push_str("version: 1\n");
    w.out.push_str(&format!(
        "name: {}\nmode: enforce\n",
        quote(base.map_or("suggested", |b| b.name.as_str()))
    ));
    w.out.push_str("fs:\n");
    w.list("  ", "read", "fs.read", &pr(|b| paths(&b.fs.read)), &read);
    w.list(
        "  ",
        "write",
        "fs.write",
        &pr(|b| paths(&b.fs.write)),
        &write,
    );
    let deny = pr(|b| paths(&b.fs.deny));
    if !deny.is_empty() {
        w.list("  ", "deny", "fs.deny", &deny, &Section::default());
    }
    w.list(
        "  ",
        "secret",
        "fs.secret",
        &pr(|b| paths(&b.fs.secret)),
        &secret,
    );
    w.out.push_str("exec:\n");
    w.list(
        "  ",
        "allow",
        "exec.allow",
        &pr(|b| paths(&b.exec.allow)),
        &exec_allow,
    );
    let base_libs = base
        .and_then(|b| b.exec.libraries.as_ref())
        .map(|l| paths(l));
    if base_libs.is_some() || !libs.rules.is_empty() {
        w.list(
            "  ",
            "libraries",
            "exec.libraries",
            &base_libs.unwrap_or_default(),
            &libs,
        );
    }
    let base_net = base.and_then(|b| b.net.as_ref());
    // Always written: a policy without `net` says nothing about the network.
    {
        w.out.push_str("net:\n");
        let nr =
            |f: fn(&crate::policy::NetPolicy) -> Vec<String>| base_net.map(f).unwrap_or_default();
        w.list(
            "  ",
            "allow",
            "net.allow",
            &nr(|n| nets(&n.allow)),
            &net_allow,
        );
        w.list("  ", "bind", "net.bind", &nr(|n| nets(&n.bind)), &bind);
        w.list("  ", "unix", "net.unix", &nr(|n| paths(&n.unix)), &unix);
        let after = nr(|n| nets(&n.after_taint));
        if !after.is_empty() {
            w.list(
                "  ",
                "after_taint",
                "net.after_taint",
                &after,
                &Section::default(),
            );
        }
        if base_net.is_some_and(|n| n.raw) {
            w.out.push_str("  raw: true\n");
        }
    }
    match cx.base.and_then(|(_, src)| base_budgets_block(src)) {
        Some(block) => w.out.push_str(&block),
        None => {
            let (lines, notes) = budget_lines(o);
            w.out.push_str("budgets:\n");
            for n in notes {
                w.out.push_str(&format!("  # {n}\n"));
            }
            for l in lines {
                w.out.push_str(&format!("  {l}\n"));
                w.added.push(format!("+ budgets.{l}"));
            }
        }
    }
    Suggestion {
        yaml: w.out,
        added: w.added,
    }
}
