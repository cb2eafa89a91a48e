//! Strict policy parser: YAML text → [`Policy`], with every error pinned to a `line:col`.
//!
//! The document is loaded with saphyr's [`MarkedYaml`] (every node carries its source span)
//! and then walked by hand rather than through serde: that is what lets each unknown key,
//! wrong type or bad value be reported at the exact node that caused it, and lets us refuse
//! anything we do not understand instead of silently ignoring it.
//!
//! The walk does not stop at the first mistake: each field of a mapping and each entry of a
//! list is checked on its own, and every error is kept (`Errors`), so `agentd policy check`
//! can list them all. Only a YAML syntax error ends the walk, since there is no tree after it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use saphyr::{MarkedYaml, Scalar, ScanError, YamlData, YamlLoader};
use saphyr_parser::{Event, Parser, SpannedEventReceiver};
use sha2::{Digest, Sha256};

mod budgets;
mod env;

pub(super) use budgets::{LONG_FORM_KEYS, SECTION_KEYS};
pub(super) use env::ENV_KEYS;

use super::env::EnvPolicy;
use super::model::{
    AttachPolicy, Budgets, ExecPolicy, FsPolicy, Mode, NetHost, NetPolicy, NetRule, PathRule,
    Policy, Proto, Span, ATTACH_PARTS,
};

type Node<'a> = MarkedYaml<'a>;

/// The only policy format version this parser understands.
pub(super) const VERSION: u32 = 1;
/// The one placeholder a path may start with.
pub(super) const WORKSPACE: &str = "{workspace}";

pub(super) const TOP_KEYS: &[&str] = &[
    "version", "name", "mode", "fs", "exec", "net", "env", "budgets", "attach",
];
pub(super) const MODES: &[&str] = &["enforce", "audit", "learn"];
pub(super) const FS_KEYS: &[&str] = &["read", "write", "deny", "secret"];
pub(super) const EXEC_KEYS: &[&str] = &["allow", "libraries"];
pub(super) const NET_KEYS: &[&str] = &[
    "allow",
    "bind",
    "raw",
    "after_taint",
    "unix",
    "unix_mediation",
    "taint_socket_abort",
];
/// The values of `net.unix_mediation` and `net.taint_socket_abort`.
pub(super) const STRICTNESS: &[&str] = &["required", "best_effort"];
pub(super) const ENTRY_KEYS: &[&str] = &["path", "optional"];
pub(super) const ATTACH_KEYS: &[&str] = &["best_effort"];

/// What `{workspace}` and `~` expand to.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub workspace: PathBuf,
    pub home: PathBuf,
}

/// One mistake in a policy file; `line`/`col` are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file itself could not be read (missing, unreadable, not UTF-8).
    #[error("{path}: cannot read policy: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The YAML is malformed or the policy is invalid. `errors` holds every mistake found,
    /// in file order (never empty); the message shows the first and counts the others.
    #[error("{origin}:{}{}", first(errors), more(errors))]
    Invalid {
        origin: String,
        errors: Vec<Diagnostic>,
    },
}

fn first(errors: &[Diagnostic]) -> String {
    errors
        .first()
        .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
        .unwrap_or_default()
}

/// `agentd run` stops at the first error; say that there are more and where to see them.
fn more(errors: &[Diagnostic]) -> String {
    match errors.len() {
        0 | 1 => String::new(),
        2 => " (and 1 more error: see `agentd policy check`)".into(),
        n => format!(" (and {} more errors: see `agentd policy check`)", n - 1),
    }
}

impl PolicyError {
    /// Every error as `ORIGIN:LINE:COL: message` (or the read error), in file order.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Read { .. } => vec![self.to_string()],
            Self::Invalid { origin, errors } => errors
                .iter()
                .map(|d| format!("{origin}:{}:{}: {}", d.line, d.col, d.message))
                .collect(),
        }
    }
}

// The CLI only prints errors today; these are for tests and for callers that want to
// point an editor at the offending node.
#[cfg_attr(not(test), allow(dead_code))]
impl PolicyError {
    fn first_error(&self) -> Option<&Diagnostic> {
        match self {
            Self::Read { .. } => None,
            Self::Invalid { errors, .. } => errors.first(),
        }
    }

    /// 1-based line of the first offending node; `None` when the file could not be read.
    pub fn line(&self) -> Option<usize> {
        self.first_error().map(|d| d.line)
    }

    /// 1-based column of the first offending node; `None` when the file could not be read.
    pub fn col(&self) -> Option<usize> {
        self.first_error().map(|d| d.col)
    }

    /// The first message without the `origin:line:col: ` prefix.
    pub fn message(&self) -> Option<&str> {
        self.first_error().map(|d| d.message.as_str())
    }

    /// Every error found, in file order; empty when the file could not be read.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid { errors, .. } => errors,
        }
    }
}

/// Reads and parses a policy file; `origin` (used in errors) is `path` as given.
pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<Policy, PolicyError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
        path: origin.clone(),
        source,
    })?;
    let src = String::from_utf8(bytes).map_err(|e| PolicyError::Read {
        path: origin.clone(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    parse_str(&src, &origin, opts)
}

/// Parses a policy from memory; `origin` names it in errors (a path or `<preset:NAME>`).
pub fn parse_str(src: &str, origin: &str, opts: &LoadOptions) -> Result<Policy, PolicyError> {
    let hash = hex::encode(Sha256::digest(src.as_bytes()));
    let mut errs = Errors::default();
    let body = match load_document(src, &mut errs) {
        Ok(doc) => parse_policy(&doc, opts, &mut errs),
        Err(fail) => {
            errs.push(fail);
            None
        }
    };
    match body {
        Some(body) if errs.0.is_empty() => Ok(Policy {
            origin: origin.to_owned(),
            hash,
            ..body
        }),
        _ => Err(PolicyError::Invalid {
            origin: origin.to_owned(),
            errors: errs.into_diagnostics(),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors while walking the tree. The origin is attached once, in `parse_str`.

struct Fail {
    at: Span,
    msg: String,
}

type R<T> = Result<T, Fail>;

/// Every error found so far. A value's own parser returns `R` (one value, one error);
/// the mappings and lists that hold values record each failure here and go on.
#[derive(Default)]
struct Errors(Vec<Fail>);

impl Errors {
    fn push(&mut self, fail: Fail) {
        self.0.push(fail);
    }

    /// The value of `r`, or `None` with its error recorded.
    fn keep<T>(&mut self, r: R<T>) -> Option<T> {
        r.map_err(|fail| self.push(fail)).ok()
    }

    /// In file order: a missing field is found after the mapping's children but points at
    /// the mapping's start.
    fn into_diagnostics(self) -> Vec<Diagnostic> {
        let mut out: Vec<Diagnostic> = self
            .0
            .into_iter()
            .map(|f| Diagnostic {
                line: f.at.line,
                col: f.at.col,
                message: f.msg,
            })
            .collect();
        out.sort_by_key(|d| (d.line, d.col));
        out.dedup();
        out
    }
}

fn span_of(node: &Node) -> Span {
    let start = node.span.start;
    // saphyr lines are 1-based but columns 0-based; we report both 1-based.
    Span {
        line: start.line().max(1),
        col: start.col() + 1,
    }
}

fn fail_at(node: &Node, msg: impl Into<String>) -> Fail {
    Fail {
        at: span_of(node),
        msg: msg.into(),
    }
}

fn fail<T>(node: &Node, msg: impl Into<String>) -> R<T> {
    Err(fail_at(node, msg))
}

/// How a node is described in "expected X, found Y" messages.
fn kind(node: &Node) -> &'static str {
    match &node.data {
        YamlData::Value(Scalar::Null) => "null",
        YamlData::Value(Scalar::Boolean(_)) => "a boolean",
        YamlData::Value(Scalar::Integer(_)) => "an integer",
        YamlData::Value(Scalar::FloatingPoint(_)) => "a number",
        YamlData::Value(Scalar::String(_)) => "a string",
        YamlData::Sequence(_) => "a list",
        YamlData::Mapping(_) => "a mapping",
        YamlData::Tagged(..) => "a tagged value",
        YamlData::Alias(_) => "an alias",
        YamlData::Representation(..) | YamlData::BadValue => "an invalid value",
    }
}

fn one_of(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    quoted.join(", ")
}

// ---------------------------------------------------------------------------------------------
// Loading the YAML document.

fn load_document<'s>(src: &'s str, errs: &mut Errors) -> R<Node<'s>> {
    let mut loader = Loader::default();
    loader.inner.allow_duplicate_keys(true);
    Parser::new_from_str(src)
        .load(&mut loader, true)
        .map_err(|e| scan_fail(src, &e))?;
    if let Some(e) = loader.inner.error() {
        return Err(scan_fail(src, e));
    }
    for dup in loader.duplicates {
        errs.push(dup);
    }
    let mut docs = loader.inner.into_documents().into_iter();
    let doc = docs
        .next()
        .filter(|d| !matches!(d.data, YamlData::BadValue));
    let Some(doc) = doc else {
        return Err(Fail {
            at: Span { line: 1, col: 1 },
            msg: "the policy is empty: expected a mapping with `version` and `name`".into(),
        });
    };
    if let Some(extra) = docs.next() {
        return fail(&extra, "expected a single yaml document, found another one");
    }
    Ok(doc)
}

/// saphyr's loader, with duplicate keys allowed (the last one wins) and reported here
/// instead, so that a repeated key is one error among the others rather than the end of
/// the walk. Each key is compared by its text, at the mapping it belongs to.
#[derive(Default)]
struct Loader<'s> {
    inner: YamlLoader<'s, Node<'s>>,
    /// One entry per open collection: `Some` for a mapping (its keys so far, and whether
    /// the next node is a key), `None` for a sequence.
    open: Vec<Option<(Vec<String>, bool)>>,
    duplicates: Vec<Fail>,
}

impl<'s> Loader<'s> {
    /// A node took the next slot of the innermost collection; `key` is its text if scalar.
    fn slot(&mut self, key: Option<&str>, span: saphyr_parser::Span) {
        let Some(Some((seen, key_next))) = self.open.last_mut() else {
            return;
        };
        if *key_next {
            if let Some(key) = key {
                if seen.iter().any(|k| k == key) {
                    self.duplicates.push(Fail {
                        at: Span {
                            line: span.start.line().max(1),
                            col: span.start.col() + 1,
                        },
                        msg: duplicate_msg(key),
                    });
                } else {
                    seen.push(key.to_owned());
                }
            }
        }
        *key_next = !*key_next;
    }
}

impl<'s> SpannedEventReceiver<'s> for Loader<'s> {
    fn on_event(&mut self, ev: Event<'s>, span: saphyr_parser::Span) {
        match &ev {
            Event::Scalar(text, ..) => self.slot(Some(text), span),
            Event::Alias(_) => self.slot(None, span),
            Event::MappingStart(..) => {
                self.slot(None, span);
                self.open.push(Some((Vec::new(), true)));
            }
            Event::SequenceStart(..) => {
                self.slot(None, span);
                self.open.push(None);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.open.pop();
            }
            _ => {}
        }
        self.inner.on_event(ev, span);
    }
}

/// Turns a saphyr syntax error into ours.
fn scan_fail(src: &str, e: &ScanError) -> Fail {
    let m = e.marker();
    let at = Span {
        line: m.line().max(1),
        col: m.col() + 1,
    };
    let msg = format!(
        "yaml syntax error: {}{}",
        tidy(e.info()),
        syntax_hint(src, m.index())
    );
    Fail { at, msg }
}

/// Two mistakes YAML reports cryptically: an unquoted `*.example.com` (read as an alias)
/// and an unquoted `[::1]:443` (read as a list followed by garbage).
fn syntax_hint(src: &str, index: usize) -> &'static str {
    let before: String = src.chars().take(index).collect();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line: String = src[line_start..]
        .chars()
        .take_while(|c| *c != '\n')
        .collect();
    if src.chars().nth(index) == Some('*') {
        " (quote values that start with `*`, as in \"*.example.com:443\")"
    } else if line.contains("]:") {
        " (quote bracketed ipv6 rules, as in \"[::1]:443\")"
    } else {
        ""
    }
}

fn duplicate_msg(key: &str) -> String {
    if key.is_empty() {
        "duplicate key".into()
    } else {
        format!("duplicate key `{key}`")
    }
}

/// Our messages are lower-case and unpunctuated; make the parser's match.
fn tidy(info: &str) -> String {
    let info = info.trim().trim_end_matches('.');
    let mut chars = info.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "invalid yaml".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Mappings: every key known, none repeated.

/// The entries of a mapping in document order whose keys are strings and one of `allowed`;
/// every other key is recorded as an error and left out. A node that is not a mapping is
/// one error and no entries. Repeated keys are found while loading (`Loader`).
/// `within` names the mapping in messages (e.g. "`fs`"); empty for the top level.
fn fields<'n, 'a>(
    node: &'n Node<'a>,
    within: &str,
    allowed: &[&str],
    errs: &mut Errors,
) -> Vec<(&'n str, &'n Node<'a>)> {
    let YamlData::Mapping(map) = &node.data else {
        errs.push(fail_at(node, not_a_mapping(node, within)));
        return Vec::new();
    };
    let mut out: Vec<(&'n str, &'n Node<'a>)> = Vec::with_capacity(map.len());
    for (key, value) in map.iter() {
        let YamlData::Value(Scalar::String(name)) = &key.data else {
            errs.push(fail_at(
                key,
                format!("expected a field name, found {}", kind(key)),
            ));
            continue;
        };
        let name: &str = name;
        if !allowed.contains(&name) {
            errs.push(fail_at(key, unknown_field(name, within, allowed)));
            continue;
        }
        out.push((name, value));
    }
    out
}

fn not_a_mapping(node: &Node, within: &str) -> String {
    if matches!(node.data, YamlData::Value(Scalar::Null)) && !within.is_empty() {
        // `fs:` with nothing after it: say how to write an empty section.
        format!("expected a mapping for {within}, found null (write `{{}}` for an empty section)")
    } else if within.is_empty() {
        format!("expected the policy to be a mapping, found {}", kind(node))
    } else {
        format!("expected a mapping for {within}, found {}", kind(node))
    }
}

fn unknown_field(name: &str, within: &str, allowed: &[&str]) -> String {
    let place = if within.is_empty() {
        String::new()
    } else {
        format!(" in {within}")
    };
    format!(
        "unknown field `{name}`{place}, expected one of {}",
        one_of(allowed)
    )
}

fn missing_field(node: &Node, field: &str, within: &str) -> Fail {
    let place = if within.is_empty() {
        String::new()
    } else {
        format!(" in {within}")
    };
    fail_at(node, format!("missing required field `{field}`{place}"))
}

// ---------------------------------------------------------------------------------------------
// Top level.

/// The policy, or `None` when the document is not a mapping; every error goes to `errs`.
fn parse_policy(doc: &Node, opts: &LoadOptions, errs: &mut Errors) -> Option<Policy> {
    if !matches!(doc.data, YamlData::Mapping(_)) {
        errs.push(fail_at(doc, not_a_mapping(doc, "")));
        return None;
    }
    let (mut has_version, mut has_name) = (false, false);
    let mut policy = Policy {
        origin: String::new(),
        hash: String::new(),
        version: VERSION,
        name: String::new(),
        mode: Mode::Enforce,
        fs: FsPolicy::default(),
        exec: ExecPolicy::default(),
        net: None,
        env: EnvPolicy::default(),
        budgets: Budgets::default(),
        attach: AttachPolicy::default(),
    };
    for (key, value) in fields(doc, "", TOP_KEYS, errs) {
        match key {
            "version" => {
                has_version = true;
                policy.version = errs.keep(parse_version(value)).unwrap_or(VERSION);
            }
            "name" => {
                has_name = true;
                policy.name = errs.keep(parse_name(value)).unwrap_or_default();
            }
            "mode" => policy.mode = errs.keep(parse_mode(value)).unwrap_or(Mode::Enforce),
            "fs" => policy.fs = parse_fs(value, opts, errs),
            "exec" => policy.exec = parse_exec(value, opts, errs),
            "net" => policy.net = Some(parse_net(value, opts, errs)),
            "env" => policy.env = env::parse_env(value, errs),
            "budgets" => policy.budgets = budgets::parse_budgets(value, errs),
            "attach" => policy.attach = parse_attach(value, errs),
            // `fields` has already left out every key not in TOP_KEYS.
            _ => {}
        }
    }
    if !has_version {
        errs.push(missing_field(doc, "version", ""));
    }
    if !has_name {
        errs.push(missing_field(doc, "name", ""));
    }
    Some(policy)
}

fn parse_version(node: &Node) -> R<u32> {
    match &node.data {
        YamlData::Value(Scalar::Integer(1)) => Ok(VERSION),
        YamlData::Value(Scalar::Integer(n)) => fail(
            node,
            format!("unsupported policy version `{n}`, expected {VERSION}"),
        ),
        _ => fail(
            node,
            format!("expected an integer for `version`, found {}", kind(node)),
        ),
    }
}

fn parse_name(node: &Node) -> R<String> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) if s.trim().is_empty() => {
            fail(node, "`name` must not be empty")
        }
        YamlData::Value(Scalar::String(s)) => Ok(s.to_string()),
        _ => fail(
            node,
            format!("expected a string for `name`, found {}", kind(node)),
        ),
    }
}

fn parse_mode(node: &Node) -> R<Mode> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => match s.as_ref() {
            "enforce" => Ok(Mode::Enforce),
            "audit" => Ok(Mode::Audit),
            "learn" => Ok(Mode::Learn),
            other => fail(
                node,
                format!("unknown mode `{other}`, expected `enforce`, `audit` or `learn`"),
            ),
        },
        _ => fail(
            node,
            format!("expected a string for `mode`, found {}", kind(node)),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Sections. Each returns what it could read; its errors are in `errs`.

fn parse_fs(node: &Node, opts: &LoadOptions, errs: &mut Errors) -> FsPolicy {
    let mut fs = FsPolicy::default();
    for (key, value) in fields(node, "`fs`", FS_KEYS, errs) {
        match key {
            "read" => fs.read = parse_paths(value, "fs.read", opts, errs),
            "write" => fs.write = parse_paths(value, "fs.write", opts, errs),
            "deny" => fs.deny = parse_paths(value, "fs.deny", opts, errs),
            "secret" => fs.secret = parse_paths(value, "fs.secret", opts, errs),
            _ => {}
        }
    }
    fs
}

fn parse_exec(node: &Node, opts: &LoadOptions, errs: &mut Errors) -> ExecPolicy {
    let mut exec = ExecPolicy::default();
    for (key, value) in fields(node, "`exec`", EXEC_KEYS, errs) {
        if key == "libraries" {
            exec.libraries = Some(parse_paths(value, "exec.libraries", opts, errs));
        } else {
            exec.allow = parse_paths(value, "exec.allow", opts, errs);
        }
    }
    exec
}

fn parse_net(node: &Node, opts: &LoadOptions, errs: &mut Errors) -> NetPolicy {
    let mut net = NetPolicy::default();
    for (key, value) in fields(node, "`net`", NET_KEYS, errs) {
        match key {
            "raw" => net.raw = errs.keep(boolean(value, "net.raw")).unwrap_or(false),
            "unix" => net.unix = parse_paths(value, "net.unix", opts, errs),
            "unix_mediation" => {
                net.unix_best_effort = errs
                    .keep(parse_best_effort(value, "net.unix_mediation"))
                    .unwrap_or(false)
            }
            "taint_socket_abort" => {
                net.taint_abort_best_effort = errs
                    .keep(parse_best_effort(value, "net.taint_socket_abort"))
                    .unwrap_or(false)
            }
            "bind" => net.bind = each(value, "net.bind", errs, parse_bind_entry),
            "after_taint" => {
                net.after_taint = each(value, "net.after_taint", errs, parse_net_entry)
            }
            _ => net.allow = each(value, "net.allow", errs, parse_net_entry),
        }
    }
    net
}

fn parse_attach(node: &Node, errs: &mut Errors) -> AttachPolicy {
    let mut attach = AttachPolicy::default();
    for (_, value) in fields(node, "`attach`", ATTACH_KEYS, errs) {
        attach.best_effort = each(value, "attach.best_effort", errs, attach_part);
    }
    attach
}

/// One of [`ATTACH_PARTS`].
fn attach_part(node: &Node) -> R<String> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) if ATTACH_PARTS.contains(&s.as_ref()) => {
            Ok(s.to_string())
        }
        YamlData::Value(Scalar::String(s)) => fail(
            node,
            format!(
                "unknown attach.best_effort part `{s}`, expected one of {}",
                one_of(ATTACH_PARTS)
            ),
        ),
        _ => fail(
            node,
            format!(
                "expected a part name ({}) in `attach.best_effort`, found {}",
                one_of(ATTACH_PARTS),
                kind(node)
            ),
        ),
    }
}

/// `required` (the default) or `best_effort` for the setting `key`.
fn parse_best_effort(node: &Node, key: &str) -> R<bool> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => match s.as_ref() {
            "required" => Ok(false),
            "best_effort" => Ok(true),
            other => fail(
                node,
                format!("unknown {key} `{other}`, expected `required` or `best_effort`"),
            ),
        },
        _ => fail(
            node,
            format!(
                "expected `required` or `best_effort` for `{key}`, found {}",
                kind(node)
            ),
        ),
    }
}

fn list<'n, 'a>(node: &'n Node<'a>, field: &str) -> R<&'n [Node<'a>]> {
    match &node.data {
        YamlData::Sequence(items) => Ok(items),
        // `read:` with nothing after it is null: say how to write an empty list.
        YamlData::Value(Scalar::Null) => fail(
            node,
            format!("expected a list for `{field}`, found null (write `[]` for an empty list)"),
        ),
        _ => fail(
            node,
            format!("expected a list for `{field}`, found {}", kind(node)),
        ),
    }
}

/// Parses every entry of the list `node` with `parse`, keeping the good ones and recording
/// the error of each bad one (and of a `node` that is not a list).
fn each<T>(
    node: &Node,
    field: &str,
    errs: &mut Errors,
    mut parse: impl FnMut(&Node) -> R<T>,
) -> Vec<T> {
    let items = errs.keep(list(node, field)).unwrap_or_default();
    items
        .iter()
        .filter_map(|item| errs.keep(parse(item)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Paths.

fn parse_paths(node: &Node, field: &str, opts: &LoadOptions, errs: &mut Errors) -> Vec<PathRule> {
    let items = errs.keep(list(node, field)).unwrap_or_default();
    items
        .iter()
        .filter_map(|item| parse_path_entry(item, field, opts, errs))
        .collect()
}

/// A path entry: either a string or `{path: ..., optional: bool}`.
fn parse_path_entry(
    item: &Node,
    field: &str,
    opts: &LoadOptions,
    errs: &mut Errors,
) -> Option<PathRule> {
    let (written, optional, at) = match &item.data {
        YamlData::Mapping(_) => long_form(item, field, errs)?,
        _ => (errs.keep(path_string(item, field))?, false, item),
    };
    let rule = expand(&written, opts)
        .and_then(|expanded| resolve(written, expanded, optional, span_of(at)))
        .map_err(|msg| fail_at(at, msg));
    errs.keep(rule)
}

fn long_form<'n, 'a>(
    item: &'n Node<'a>,
    field: &str,
    errs: &mut Errors,
) -> Option<(String, bool, &'n Node<'a>)> {
    let within = format!("a `{field}` entry");
    let mut path = None;
    let mut has_path = false;
    let mut optional = false;
    for (key, value) in fields(item, &within, ENTRY_KEYS, errs) {
        match key {
            "path" => {
                has_path = true;
                path = errs.keep(path_string(value, field)).map(|p| (p, value));
            }
            "optional" => optional = errs.keep(boolean(value, "optional")).unwrap_or(false),
            _ => {}
        }
    }
    if !has_path {
        errs.push(missing_field(item, "path", &within));
    }
    let (written, at) = path?;
    Some((written, optional, at))
}

fn path_string(node: &Node, field: &str) -> R<String> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Ok(s.to_string()),
        // A bare `~` is YAML's null, but in a path list it can only mean the home directory.
        YamlData::Value(Scalar::Null) if is_single_char(node) => Ok("~".into()),
        _ => fail(
            node,
            format!("expected a path string in `{field}`, found {}", kind(node)),
        ),
    }
}

fn is_single_char(node: &Node) -> bool {
    node.span
        .end
        .index()
        .saturating_sub(node.span.start.index())
        == 1
}

fn boolean(node: &Node, field: &str) -> R<bool> {
    match &node.data {
        YamlData::Value(Scalar::Boolean(b)) => Ok(*b),
        _ => fail(
            node,
            format!(
                "expected `true` or `false` for `{field}`, found {}",
                kind(node)
            ),
        ),
    }
}

/// Expands `{workspace}` and `~` at the start of `written`; the result must be absolute.
fn expand(written: &str, opts: &LoadOptions) -> Result<PathBuf, String> {
    if written.is_empty() {
        return Err("empty path".into());
    }
    let (base, rest) = if let Some(rest) = written.strip_prefix(WORKSPACE) {
        (Some(opts.workspace.as_path()), rest)
    } else if let Some(rest) = written.strip_prefix('~') {
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err(format!(
                "unsupported path `{written}`: write `~/...` for the home directory"
            ));
        }
        (Some(opts.home.as_path()), rest)
    } else {
        (None, written)
    };
    check_placeholders(rest)?;
    let path = match base {
        Some(base) if rest.is_empty() => base.to_path_buf(),
        Some(base) if rest.starts_with('/') => base.join(rest.trim_start_matches('/')),
        Some(_) => return Err(format!("expected `/` after `{WORKSPACE}` in `{written}`")),
        None => PathBuf::from(rest),
    };
    if !path.is_absolute() {
        return Err(format!(
            "path {} is not absolute (start it with `/`, `~/` or `{WORKSPACE}`)",
            describe(written, &path)
        ));
    }
    Ok(path)
}

/// Only a leading `{workspace}` is a placeholder; any other `{...}` is a mistake we refuse
/// rather than treat as a literal directory name.
fn check_placeholders(rest: &str) -> Result<(), String> {
    let Some(open) = rest.find('{') else {
        return Ok(());
    };
    let Some(len) = rest[open..].find('}') else {
        return Ok(());
    };
    let placeholder = &rest[open..=open + len];
    if placeholder == WORKSPACE {
        Err(format!(
            "`{WORKSPACE}` is only allowed at the start of a path"
        ))
    } else {
        Err(format!(
            "unknown placeholder `{placeholder}`, expected `{WORKSPACE}`"
        ))
    }
}

/// "`/x`", or "`~/x` (expanded to `/home/u/x`)" when expansion changed it.
fn describe(written: &str, path: &Path) -> String {
    let shown = path.display().to_string();
    if shown == written {
        format!("`{written}`")
    } else {
        format!("`{written}` (expanded to `{shown}`)")
    }
}

/// The refusal of a path that names agentd's own process: `/proc/self` and
/// `/proc/thread-self` are resolved when the policy is loaded, by agentd, so a rule
/// there would grant (or deny) `/proc/<agentd's pid>`, never the run's own processes,
/// whose pids do not exist yet. `canonical` catches symlinks to them (`/dev/fd`).
fn own_proc_entry(written: &str, expanded: &Path, canonical: Option<&Path>) -> Option<String> {
    let names = |p: &Path| -> Vec<String> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                _ => None,
            })
            .take(2)
            .collect()
    };
    let lexical = names(expanded);
    let via_self = lexical.first().is_some_and(|c| c == "proc")
        && lexical
            .get(1)
            .is_some_and(|c| c == "self" || c == "thread-self");
    let own_pid = std::process::id().to_string();
    let via_link = canonical.is_some_and(|c| {
        let n = names(c);
        n.first().is_some_and(|c| c == "proc") && n.get(1) == Some(&own_pid)
    });
    if !via_self && !via_link {
        return None;
    }
    let shown = if via_self {
        describe(written, expanded)
    } else {
        format!("`{written}` (a link into /proc/self)")
    };
    Some(format!(
        "path {shown} names agentd's own process: /proc/self and /proc/thread-self are resolved once, by agentd, when the policy is loaded, not for each process of the run. Write `/proc` to let the run read /proc, its own processes' entries included, or leave the entry out"
    ))
}

/// Resolves symlinks so that the layers see the real object; missing targets are only
/// allowed when the user said so.
fn resolve(
    written: String,
    expanded: PathBuf,
    optional: bool,
    span: Span,
) -> Result<PathRule, String> {
    if let Some(refusal) = own_proc_entry(&written, &expanded, None) {
        return Err(refusal);
    }
    match std::fs::canonicalize(&expanded) {
        Ok(path) => {
            if let Some(refusal) = own_proc_entry(&written, &expanded, Some(&path)) {
                return Err(refusal);
            }
            let is_dir = std::fs::metadata(&path)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            Ok(PathRule {
                written,
                path,
                optional,
                exists: true,
                is_dir,
                span,
            })
        }
        Err(e) if is_missing(&e) && optional => Ok(PathRule {
            written,
            path: expanded,
            optional,
            exists: false,
            is_dir: false,
            span,
        }),
        Err(e) if is_missing(&e) => Err(format!(
            "path {} does not exist (mark it `optional: true` to allow that)",
            describe(&written, &expanded)
        )),
        Err(e) => Err(format!(
            "cannot resolve path {}: {e}",
            describe(&written, &expanded)
        )),
    }
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

// ---------------------------------------------------------------------------------------------
// Network rules: `HOST[:PORT|:LO-HI][/tcp|/udp]`.

fn parse_net_entry(item: &Node) -> R<NetRule> {
    parse_rule_entry(item, false)
}

/// A `net.allow`/`net.bind`/`net.after_taint` entry; `ephemeral`: port `0` alone is
/// accepted (`net.bind`: "whatever port the kernel picks").
fn parse_rule_entry(item: &Node, ephemeral: bool) -> R<NetRule> {
    let written = match &item.data {
        YamlData::Value(Scalar::String(s)) => s.to_string(),
        // An unquoted `[::1]:443` is read by YAML as a list.
        YamlData::Sequence(_) => {
            return fail(
                item,
                "expected a string in `net.allow`, found a list (quote bracketed ipv6 rules: \"[::1]:443\")",
            )
        }
        _ => {
            return fail(
                item,
                format!("expected a string in `net.allow`, found {}", kind(item)),
            )
        }
    };
    let (host, ports, proto) =
        parse_net_rule(&written, ephemeral).map_err(|msg| fail_at(item, msg))?;
    Ok(NetRule {
        written,
        host,
        ports,
        proto,
        span: span_of(item),
    })
}

/// A `net.bind` entry: the `net.allow` syntax, but an address (not a domain name), and
/// port `0` (alone) allows a bind to port 0, the port the kernel picks, and no other.
fn parse_bind_entry(item: &Node) -> R<NetRule> {
    let rule = parse_rule_entry(item, true)?;
    if let NetHost::Domain(_) = rule.host {
        return fail(
            item,
            format!(
                "`net.bind` takes a local address such as `127.0.0.1:8000/tcp`, not a domain name (`{}`)",
                rule.written
            ),
        );
    }
    Ok(rule)
}

type NetParts = (NetHost, Option<(u16, u16)>, Option<Proto>);

fn parse_net_rule(rule: &str, ephemeral: bool) -> Result<NetParts, String> {
    let (rest, proto) = split_proto(rule);
    let (host, port) = split_host_port(rest)?;
    let host = match host {
        HostText::V6(text) => parse_v6(text)?,
        HostText::Other(text) => parse_other_host(text)?,
    };
    let ports = match port {
        Some("0") if ephemeral => Some((0, 0)),
        Some(p) => Some(parse_ports(p).map_err(|e| {
            if ephemeral && p.split('-').any(|n| n == "0") {
                format!("{e} (port 0 alone means the port the kernel picks, and is not part of a range)")
            } else {
                e
            }
        })?),
        None => None,
    };
    Ok((host, ports, proto))
}

/// Only a trailing `/tcp` or `/udp` is a protocol: a `/N` right after an address is a
/// prefix length, so `10.0.0.0/8:443` and `10.0.0.0/8` keep their prefix.
fn split_proto(rule: &str) -> (&str, Option<Proto>) {
    if let Some(rest) = rule.strip_suffix("/tcp") {
        (rest, Some(Proto::Tcp))
    } else if let Some(rest) = rule.strip_suffix("/udp") {
        (rest, Some(Proto::Udp))
    } else {
        (rule, None)
    }
}

enum HostText<'s> {
    /// The inside of `[...]`.
    V6(&'s str),
    Other(&'s str),
}

fn split_host_port(s: &str) -> Result<(HostText<'_>, Option<&str>), String> {
    if let Some(inner) = s.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err(format!("missing `]` after the ipv6 address in `{s}`"));
        };
        if after.is_empty() {
            return Ok((HostText::V6(host), None));
        }
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("unexpected `{after}` after `]`, expected `:PORT`"))?;
        return Ok((HostText::V6(host), Some(port)));
    }
    if s.matches(':').count() > 1 {
        return Err(format!(
            "ipv6 addresses must be in brackets, e.g. `[::1]:443`, found `{s}`"
        ));
    }
    Ok(match s.split_once(':') {
        Some((host, port)) => (HostText::Other(host), Some(port)),
        None => (HostText::Other(s), None),
    })
}

fn parse_v6(text: &str) -> Result<NetHost, String> {
    let (addr, prefix) = split_prefix(text);
    let addr: Ipv6Addr = addr
        .parse()
        .map_err(|_| format!("invalid ipv6 address `{addr}`"))?;
    cidr(IpAddr::V6(addr), prefix)
}

/// An IPv4 address or CIDR, or else a domain name.
fn parse_other_host(text: &str) -> Result<NetHost, String> {
    if text.is_empty() {
        return Err("missing host before the port".into());
    }
    let (addr, prefix) = split_prefix(text);
    if let Ok(v4) = addr.parse::<Ipv4Addr>() {
        return cidr(IpAddr::V4(v4), prefix);
    }
    if let Some(p) = prefix {
        return Err(misplaced_slash(addr, p));
    }
    if addr.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("invalid ipv4 address `{addr}`"));
    }
    parse_domain(addr)
}

fn misplaced_slash(host: &str, after: &str) -> String {
    if after == "tcp" || after == "udp" {
        format!("the protocol goes last, as in `{host}:PORT/{after}`")
    } else {
        format!("a prefix length (`/{after}`) is only allowed after an ip address, not `{host}`")
    }
}

fn split_prefix(text: &str) -> (&str, Option<&str>) {
    match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    }
}

fn cidr(addr: IpAddr, prefix: Option<&str>) -> Result<NetHost, String> {
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => digits::<u8>(p)
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("invalid prefix length `/{p}`, expected 0 to {max}"))?,
    };
    let network = mask(addr, prefix);
    if network != addr {
        return Err(format!(
            "`{}` has bits set beyond the /{prefix} prefix (did you mean `{}`?)",
            show_cidr(addr, prefix),
            show_cidr(network, prefix)
        ));
    }
    Ok(NetHost::Cidr { addr, prefix })
}

/// `addr` with every bit beyond `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & keep))
        }
        IpAddr::V6(a) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & keep))
        }
    }
}

fn show_cidr(addr: IpAddr, prefix: u8) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/{prefix}"),
        IpAddr::V6(a) => format!("[{a}/{prefix}]"),
    }
}

/// A DNS name, optionally with a leading `*.` wildcard; stored lower-case.
fn parse_domain(text: &str) -> Result<NetHost, String> {
    let name = text.to_ascii_lowercase();
    if name.len() > 253 {
        return Err(format!(
            "invalid domain name `{text}`: longer than 253 characters"
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if *label == "*" && i == 0 && labels.len() > 1 {
            continue;
        }
        check_label(label).map_err(|why| format!("invalid domain name `{text}`: {why}"))?;
    }
    Ok(NetHost::Domain(name))
}

fn check_label(label: &str) -> Result<(), &'static str> {
    if label.contains('*') {
        return Err("`*` is only allowed as the whole first label, as in `*.example.com`");
    }
    if label.is_empty() || label.len() > 63 {
        return Err("each label must be 1 to 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err("labels may only contain letters, digits and `-` (use the xn-- form for non-ascii names)");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("labels cannot start or end with `-`");
    }
    Ok(())
}

fn parse_ports(text: &str) -> Result<(u16, u16), String> {
    if text.is_empty() {
        return Err("missing port after `:`".into());
    }
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo > hi {
        return Err(format!(
            "invalid port range `{text}`: {lo} is greater than {hi}"
        ));
    }
    Ok((lo, hi))
}

fn port(text: &str) -> Result<u16, String> {
    digits::<u16>(text)
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid port `{text}`, expected 1 to 65535"))
}

/// Parses plain ASCII digits only: `str::parse` would also take a leading `+`.
fn digits<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Budgets.

/// The text of a scalar as the user is likely to recognise it, for value parsers that
/// accept strings but should report numbers (e.g. `wall_time: 10`) in the same words.
fn scalar_text(node: &Node) -> Option<String> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(n)) => Some(n.to_string()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        _ => None,
    }
}

/// Duration suffixes and what one of each is in seconds (`None`: milliseconds).
pub(super) const DURATION_UNITS: &[(&str, Option<u64>)] = &[
    ("ms", None),
    ("s", Some(1)),
    ("m", Some(60)),
    ("h", Some(3600)),
];
/// Size suffixes and their factor; a bare number is bytes too.
pub(super) const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration `{text}`: expected a number followed by ms, s, m or h");
    let (number, unit) = split_number(text);
    let n: u64 = digits(number).ok_or_else(bad)?;
    let Some((_, secs)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(bad());
    };
    let duration = match secs {
        None => Some(Duration::from_millis(n)),
        Some(factor) => n.checked_mul(*factor).map(Duration::from_secs),
    };
    let duration = duration.ok_or_else(|| format!("invalid duration `{text}`: too large"))?;
    if duration.is_zero() {
        return Err(format!(
            "invalid duration `{text}`: must be greater than zero"
        ));
    }
    Ok(duration)
}

fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid size `{text}`: expected a number followed by B, KiB, MiB or GiB");
    let (number, unit) = split_number(text);
    let n: u64 = digits(number).ok_or_else(bad)?;
    let factor = match SIZE_UNITS.iter().find(|(u, _)| *u == unit) {
        _ if unit.is_empty() => 1,
        Some((_, factor)) => *factor,
        None => return Err(bad() + &binary_unit_hint(unit)),
    };
    let bytes = n
        .checked_mul(factor)
        .ok_or_else(|| format!("invalid size `{text}`: too large"))?;
    if bytes == 0 {
        return Err(format!("invalid size `{text}`: must be greater than zero"));
    }
    Ok(bytes)
}

/// `MB` and friends are ambiguous (10^6 or 2^20?); point at the binary unit we accept.
fn binary_unit_hint(unit: &str) -> String {
    let lower = unit.to_ascii_lowercase();
    let suggestion = match lower.trim_end_matches('b').trim_end_matches('i') {
        "k" => "KiB",
        "m" => "MiB",
        "g" => "GiB",
        _ => return String::new(),
    };
    format!(" (did you mean `{suggestion}`?)")
}

/// Splits `512MiB` into `("512", "MiB")`.
fn split_number(text: &str) -> (&str, &str) {
    let at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::policy::budget::DEFAULT_STEPS;
    use crate::policy::{Action, BudgetKey, Step};
    use tempfile::TempDir;

    /// A workspace and a home directory that exist for the duration of a test.
    struct Env {
        ws: TempDir,
        home: TempDir,
        opts: LoadOptions,
    }

    fn env() -> Env {
        let ws = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let opts = LoadOptions {
            workspace: ws.path().to_path_buf(),
            home: home.path().to_path_buf(),
        };
        Env { ws, home, opts }
    }

    const HEAD: &str = "version: 1\nname: t\n";

    fn parse_in(env: &Env, body: &str) -> Result<Policy, PolicyError> {
        parse_str(&format!("{HEAD}{body}"), "t.yaml", &env.opts)
    }

    fn ok(body: &str) -> Policy {
        parse_in(&env(), body).unwrap()
    }

    /// (line, col, message) of the error `HEAD + body` produces.
    fn err(body: &str) -> (usize, usize, String) {
        err_full(&format!("{HEAD}{body}"))
    }

    fn pos(body: &str) -> (usize, usize) {
        let (line, col, _) = err(body);
        (line, col)
    }

    fn err_full(src: &str) -> (usize, usize, String) {
        let e = parse_str(src, "t.yaml", &env().opts).unwrap_err();
        let msg = e.message().unwrap().to_owned();
        (e.line().unwrap(), e.col().unwrap(), msg)
    }

    fn net(rule: &str) -> NetParts {
        parse_net_rule(rule, false).unwrap()
    }

    fn net_err(rule: &str) -> String {
        parse_net_rule(rule, false).unwrap_err()
    }

    fn v4(a: [u8; 4], prefix: u8) -> NetHost {
        NetHost::Cidr {
            addr: IpAddr::V4(Ipv4Addr::from(a)),
            prefix,
        }
    }

    fn v6(a: &str, prefix: u8) -> NetHost {
        NetHost::Cidr {
            addr: IpAddr::V6(a.parse().unwrap()),
            prefix,
        }
    }

    // --- positions -----------------------------------------------------------------------

    #[test]
    fn unknown_top_level_key() {
        let e = parse_str(&format!("{HEAD}foo: 1\n"), "p/bad.yaml", &env().opts).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p/bad.yaml:3:1: unknown field `foo`, expected one of `version`, `name`, `mode`, \
             `fs`, `exec`, `net`, `env`, `budgets`, `attach`"
        );
        assert_eq!((e.line(), e.col()), (Some(3), Some(1)));
    }

    #[test]
    fn unknown_nested_key() {
        let e = parse_str(
            &format!("{HEAD}fs:\n  write: []\n  raed: [/usr]\n"),
            "policies/bad.yaml",
            &env().opts,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "policies/bad.yaml:5:3: unknown field `raed` in `fs`, expected one of `read`, `write`, `deny`, `secret`"
        );
    }

    #[test]
    fn unknown_keys_in_every_section() {
        assert_eq!(pos("exec: {alow: []}\n"), (3, 8));
        assert!(err("net:\n  deny: []\n")
            .2
            .contains("in `net`, expected one of `allow`, `bind`, `raw`, `after_taint`"));
        let (l, c, m) = err("budgets:\n  cpu: 1\n");
        assert_eq!((l, c), (4, 3));
        assert!(
            m.contains("expected one of `wall_time`, `cpu_time`, `cpu_quota`, `memory`"),
            "{m}"
        );
    }

    #[test]
    fn duplicate_key_points_at_second() {
        assert_eq!(
            err("fs:\n  read: [/usr]\n  read: [/usr]\n"),
            (5, 3, "duplicate key `read`".into())
        );
        // A quoted spelling of the same key is still the same key.
        assert_eq!(err("fs:\n  read: []\n  \"read\": []\n").0, 5);
        assert_eq!(
            err("fs: {read: [], read: []}\n"),
            (3, 16, "duplicate key `read`".into())
        );
        assert_eq!(err("name: u\n"), (3, 1, "duplicate key `name`".into()));
    }

    #[test]
    fn wrong_type() {
        assert_eq!(
            err("fs:\n  read: /usr\n"),
            (4, 9, "expected a list for `fs.read`, found a string".into())
        );
        assert_eq!(
            err("fs: [/usr]\n"),
            (3, 5, "expected a mapping for `fs`, found a list".into())
        );
        assert_eq!(err("fs:\n  read: [1]\n").1, 10);
        assert!(err("fs:\n").2.contains("found null (write `{}`"));
        assert!(err("fs:\n  read:\n").2.contains("found null (write `[]`"));
        assert_eq!(
            err_full("version: \"1\"\nname: t\n"),
            (
                1,
                10,
                "expected an integer for `version`, found a string".into()
            )
        );
        assert_eq!(
            err_full("version: 1\nname: 5\n"),
            (
                2,
                7,
                "expected a string for `name`, found an integer".into()
            )
        );
        assert_eq!(err("mode: [audit]\n").1, 7);
        assert_eq!(
            err("1: x\n"),
            (3, 1, "expected a field name, found an integer".into())
        );
    }

    #[test]
    fn bad_duration() {
        assert_eq!(
            err("budgets:\n  wall_time: 10x\n"),
            (
                4,
                14,
                "invalid duration `10x`: expected a number followed by ms, s, m or h".into()
            )
        );
        assert!(err("budgets:\n  wall_time: 10\n")
            .2
            .contains("`10`: expected a number"));
        assert!(err("budgets:\n  wall_time: 0s\n")
            .2
            .contains("greater than zero"));
        assert!(err("budgets:\n  wall_time: 1.5h\n")
            .2
            .contains("invalid duration `1.5h`"));
        assert!(err("budgets:\n  wall_time: -1s\n")
            .2
            .contains("invalid duration"));
        assert!(err("budgets:\n  wall_time: [1s]\n")
            .2
            .contains("found a list"));
    }

    #[test]
    fn bad_size() {
        assert_eq!(
            err("budgets:\n  memory: 512MB\n"),
            (
                4,
                11,
                "invalid size `512MB`: expected a number followed by B, KiB, MiB or GiB \
                 (did you mean `MiB`?)"
                    .into()
            )
        );
        assert!(err("budgets:\n  memory: 0\n")
            .2
            .contains("greater than zero"));
        assert!(err("budgets:\n  memory: -5\n")
            .2
            .contains("invalid size `-5`"));
        assert!(err("budgets:\n  memory: 99999999999GiB\n")
            .2
            .contains("too large"));
        assert!(err("budgets:\n  memory: 1 GiB\n")
            .2
            .contains("invalid size"));
    }

    #[test]
    fn bad_pids() {
        assert_eq!(
            err("budgets:\n  pids: 0\n"),
            (
                4,
                9,
                "invalid `pids` limit `0`: expected a positive integer".into()
            )
        );
        assert!(err("budgets:\n  pids: \"64\"\n")
            .2
            .contains("found a string"));
    }

    #[test]
    fn bad_net_rule_position() {
        assert_eq!(
            err("net:\n  allow:\n    - 127.0.0.1:80/tcp\n    - \"10.0.0.1/8:443\"\n"),
            (
                6,
                7,
                "`10.0.0.1/8` has bits set beyond the /8 prefix (did you mean `10.0.0.0/8`?)"
                    .into()
            )
        );
        assert_eq!(pos("net:\n  allow: [\"a:0\"]\n"), (4, 11));
        assert!(err("net:\n  allow: [443]\n").2.contains("found an integer"));
    }

    #[test]
    fn unquoted_net_rules_get_a_hint() {
        let (l, c, m) = err("net:\n  allow:\n    - *.example.com:443\n");
        assert_eq!((l, c), (5, 7));
        assert!(m.starts_with("yaml syntax error:"), "{m}");
        assert!(m.contains("quote values that start with `*`"), "{m}");
        let (l, _, m) = err("net:\n  allow:\n    - [::1]:443\n");
        assert_eq!(l, 5);
        assert!(m.contains("quote bracketed ipv6 rules"), "{m}");
        // `[::1]` alone parses as a list: still a type error at the entry.
        let (l, c, m) = err("net:\n  allow:\n    - [::1]\n");
        assert_eq!((l, c), (5, 7));
        assert!(m.contains("quote bracketed ipv6 rules"), "{m}");
    }

    #[test]
    fn missing_path() {
        assert_eq!(
            err("fs:\n  read: [/usr, /nope/really]\n"),
            (
                4,
                16,
                "path `/nope/really` does not exist (mark it `optional: true` to allow that)"
                    .into()
            )
        );
        // Long form: the error points at the `path` value.
        assert_eq!(pos("exec:\n  allow:\n    - path: /nope\n"), (5, 13));
        let e = env();
        let m = parse_in(&e, "fs:\n  read: [\"~/gone\"]\n")
            .unwrap_err()
            .to_string();
        let home = e.home.path().display();
        assert!(
            m.contains(&format!(
                "`~/gone` (expanded to `{home}/gone`) does not exist"
            )),
            "{m}"
        );
    }

    #[test]
    fn yaml_syntax_error() {
        assert_eq!(
            err("fs:\n  read: [/usr]\n    write: []\n"),
            (
                5,
                5,
                "yaml syntax error: while parsing a block mapping, did not find expected key"
                    .into()
            )
        );
        let (l, c, m) = err_full("version: 1\nname: [t\n");
        assert_eq!((l, c), (3, 1));
        assert!(m.starts_with("yaml syntax error: "), "{m}");
    }

    #[test]
    fn document_shape() {
        assert_eq!(
            err_full("").2,
            "the policy is empty: expected a mapping with `version` and `name`"
        );
        assert_eq!(err_full("# nothing\n").0, 1);
        assert_eq!(
            err_full("- a\n"),
            (
                1,
                1,
                "expected the policy to be a mapping, found a list".into()
            )
        );
        assert_eq!(err("---\nversion: 1\n").0, 4);
        assert_eq!(
            err_full("name: t\n"),
            (1, 1, "missing required field `version`".into())
        );
        assert_eq!(err_full("version: 1\n").2, "missing required field `name`");
        assert_eq!(
            err_full("version: 2\nname: t\n"),
            (1, 10, "unsupported policy version `2`, expected 1".into())
        );
        assert_eq!(
            err_full("version: 1\nname: \" \"\n").2,
            "`name` must not be empty"
        );
    }

    #[test]
    fn every_error_is_reported_in_file_order() {
        let src = "version: 2\nname: t\nmode: strict\nfs:\n  read: [/usr, /nope/x]\n  raed: []\n  \
                   write: [/usr]\n  write: []\nnet:\n  allow: [\"a:0\", \"10.0.0.1/8\"]\nbudgets:\n  \
                   wall_time: 10x\n  on_exceed: [kill, warn@50%]\n  memory: {limit: 1GiB, on_exceed: [kill]}\n";
        let e = parse_str(src, "t.yaml", &env().opts).unwrap_err();
        let got: Vec<(usize, usize, &str)> = e
            .diagnostics()
            .iter()
            .map(|d| (d.line, d.col, d.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, 10, "unsupported policy version `2`, expected 1"),
                (3, 7, "unknown mode `strict`, expected `enforce`, `audit` or `learn`"),
                (
                    5,
                    16,
                    "path `/nope/x` does not exist (mark it `optional: true` to allow that)"
                ),
                (
                    6,
                    3,
                    "unknown field `raed` in `fs`, expected one of `read`, `write`, `deny`, `secret`"
                ),
                (8, 3, "duplicate key `write`"),
                (10, 11, "invalid port `0`, expected 1 to 65535"),
                (
                    10,
                    18,
                    "`10.0.0.1/8` has bits set beyond the /8 prefix (did you mean `10.0.0.0/8`?)"
                ),
                (
                    12,
                    14,
                    "invalid duration `10x`: expected a number followed by ms, s, m or h"
                ),
                (13, 21, "`warn@50%` comes after `kill@100%`: nothing can follow a kill"),
                (
                    14,
                    36,
                    "`on_exceed` does not apply to `memory`: it is enforced by the kernel (the \
                     kernel OOM-kills at the limit), and agentd audits what the kernel did"
                ),
            ]
        );
        // One line: the first error, and how many more there are.
        assert_eq!(
            e.to_string(),
            "t.yaml:1:10: unsupported policy version `2`, expected 1 \
             (and 9 more errors: see `agentd policy check`)"
        );
        assert_eq!(e.lines().len(), 10);
        assert_eq!(
            e.lines()[3],
            "t.yaml:6:3: unknown field `raed` in `fs`, expected one of `read`, `write`, `deny`, `secret`"
        );
    }

    #[test]
    fn missing_fields_and_a_bad_section_are_all_reported() {
        let e = parse_str("fs: [/usr]\n", "t.yaml", &env().opts).unwrap_err();
        let got: Vec<&str> = e.diagnostics().iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            got,
            [
                "missing required field `version`",
                "missing required field `name`",
                "expected a mapping for `fs`, found a list"
            ]
        );
        // A syntax error leaves no tree to walk: it is the only error.
        let e = parse_str("version: 2\nname: [t\n", "t.yaml", &env().opts).unwrap_err();
        assert_eq!(e.diagnostics().len(), 1);
    }

    #[test]
    fn unreadable_file() {
        let e = load_file(Path::new("/nope/p.yaml"), &env().opts).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nope/p.yaml: cannot read policy: "),
            "{e}"
        );
        assert_eq!((e.line(), e.col(), e.message()), (None, None, None));
    }

    // --- values ------------------------------------------------------------------------------

    #[test]
    fn minimal_policy_defaults() {
        let p = parse_str(HEAD, "<preset:t>", &env().opts).unwrap();
        assert_eq!(p.origin, "<preset:t>");
        assert_eq!(
            (p.version, p.name.as_str(), p.mode),
            (1, "t", Mode::Enforce)
        );
        assert!(p.fs.read.is_empty() && p.fs.write.is_empty() && p.exec.allow.is_empty());
        assert!(p.net.is_none());
        assert_eq!(p.budgets.wall_time, None);
        assert_eq!(p.hash, hex::encode(Sha256::digest(HEAD.as_bytes())));
        assert_eq!(p.hash.len(), 64);
    }

    #[test]
    fn load_file_hashes_bytes_and_keeps_origin() {
        let e = env();
        let file = e.ws.path().join("p.yaml");
        let src = format!("# comment\n{HEAD}mode: audit\n");
        std::fs::write(&file, &src).unwrap();
        let p = load_file(&file, &e.opts).unwrap();
        assert_eq!(p.origin, file.display().to_string());
        assert_eq!(p.hash, hex::encode(Sha256::digest(src.as_bytes())));
        assert_eq!(p.mode, Mode::Audit);
    }

    #[test]
    fn modes() {
        assert_eq!(ok("mode: audit\n").mode, Mode::Audit);
        assert_eq!(ok("mode: enforce\n").mode, Mode::Enforce);
        assert_eq!(
            err("mode: permissive\n"),
            (
                3,
                7,
                "unknown mode `permissive`, expected `enforce`, `audit` or `learn`".into()
            )
        );
    }

    #[test]
    fn paths_under_proc_self_are_refused_with_what_to_write() {
        let tail = "names agentd's own process: /proc/self and /proc/thread-self are resolved once, by agentd, when the policy is loaded, not for each process of the run. Write `/proc` to let the run read /proc, its own processes' entries included, or leave the entry out";
        for (body, col, shown) in [
            ("fs:\n  read: [/proc/self/fd]\n", 10, "`/proc/self/fd`"),
            (
                "fs:\n  read: [/usr, /proc/thread-self]\n",
                16,
                "`/proc/thread-self`",
            ),
            (
                "fs:\n  deny: [{path: /proc/self/nope, optional: true}]\n",
                17,
                "`/proc/self/nope`",
            ),
            (
                "fs:\n  write: [/dev/fd]\n",
                11,
                "`/dev/fd` (a link into /proc/self)",
            ),
        ] {
            assert_eq!(
                err(body),
                (4, col, format!("path {shown} {tail}")),
                "{body}"
            );
        }
        // Another process's entry, or /proc itself, is what the user wrote.
        assert_eq!(ok("fs:\n  read: [/proc, /proc/1]\n").fs.read.len(), 2);
    }

    #[test]
    fn net_bind_port_zero_is_the_ephemeral_port_only() {
        let net = ok("net:\n  bind: [\"127.0.0.1:0/tcp\", \"[::1]:0\"]\n")
            .net
            .expect("net");
        assert_eq!(net.bind[0].ports, Some((0, 0)));
        assert_eq!(net.bind[0].proto, Some(Proto::Tcp));
        assert_eq!(net.bind[1].ports, Some((0, 0)));
        let (_, _, m) = err("net:\n  bind: [\"127.0.0.1:0-80/tcp\"]\n");
        assert_eq!(
            m,
            "invalid port `0`, expected 1 to 65535 (port 0 alone means the port the kernel picks, and is not part of a range)"
        );
        // Not in net.allow: no destination has port 0.
        assert_eq!(
            net_err("127.0.0.1:0/tcp"),
            "invalid port `0`, expected 1 to 65535"
        );
    }

    #[test]
    fn net_bind_and_raw() {
        let net = ok("net:\n  bind: [\"127.0.0.1:8000/tcp\"]\n  raw: true\n")
            .net
            .unwrap();
        assert!(net.raw);
        assert!(net.allow.is_empty());
        assert_eq!(net.bind.len(), 1);
        assert_eq!(net.bind[0].ports, Some((8000, 8000)));
        assert_eq!(net.bind[0].proto, Some(Proto::Tcp));
        assert!(!ok("net: {}\n").net.unwrap().raw);
        let (_, _, m) = err("net:\n  bind: [\"example.com:80\"]\n");
        assert!(m.contains("`net.bind` takes a local address"), "{m}");
        let (_, _, m) = err("net:\n  raw: 1\n");
        assert!(m.contains("net.raw"), "{m}");
    }

    #[test]
    fn net_absent_vs_present() {
        assert!(ok("").net.is_none());
        assert!(ok("net: {}\n").net.unwrap().allow.is_empty());
        assert!(ok("net:\n  allow: []\n").net.unwrap().allow.is_empty());
        let net = ok("net:\n  allow: [\"1.2.3.4:80\"]\n").net.unwrap();
        assert_eq!(net.allow.len(), 1);
        assert_eq!(net.allow[0].written, "1.2.3.4:80");
        assert_eq!(net.allow[0].span, Span { line: 4, col: 11 });
    }

    #[test]
    fn budgets() {
        let b = ok("budgets:\n  wall_time: 10m\n  memory: 512MiB\n  pids: 64\n").budgets;
        assert_eq!(b.wall_time, Some(Duration::from_secs(600)));
        assert_eq!(b.memory, Some(512 << 20));
        assert_eq!(b.pids, Some(64));
        let d = |s: &str| parse_duration(s).unwrap();
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("2h"), Duration::from_secs(7200));
        let s = |t: &str| parse_size(t).unwrap();
        assert_eq!(
            (s("4096"), s("100B"), s("2KiB"), s("1GiB")),
            (4096, 100, 2048, 1 << 30)
        );
        assert_eq!(ok("budgets: {memory: 4096}\n").budgets.memory, Some(4096));
    }

    #[test]
    fn every_budget_key_and_rate_forms() {
        let b = ok("budgets:\n  wall_time: 2s\n  cpu_time: 500ms\n  cpu_quota: 50%\n  memory: 1GiB\n  memory_high: 512MiB\n  pids: 8\n  syscalls: 50000/1s\n  execs: 100/1h\n  net_egress_bytes: 1MiB\n  net_ingress_bytes: 2KiB/10s\n  fs_write_bytes: 10MiB\n").budgets;
        assert_eq!(b.items.len(), 11);
        let get = |k| b.get(k).unwrap();
        assert_eq!(get(BudgetKey::WallTime).limit, 2000);
        assert_eq!(get(BudgetKey::CpuTime).limit, 500);
        assert_eq!(get(BudgetKey::CpuQuota).limit, 50);
        assert_eq!(get(BudgetKey::MemoryHigh).limit, 512 << 20);
        assert_eq!(get(BudgetKey::Syscalls).limit, 50000);
        assert_eq!(
            get(BudgetKey::Syscalls).window,
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            get(BudgetKey::Execs).window,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(get(BudgetKey::NetIngressBytes).limit, 2048);
        assert_eq!(get(BudgetKey::FsWriteBytes).window, None);
        assert_eq!(b.wall_time, Some(Duration::from_secs(2)));
        assert_eq!(b.steps(get(BudgetKey::Execs)), DEFAULT_STEPS.to_vec());
    }

    #[test]
    fn graduated_steps_default_and_long_form() {
        let b = ok("budgets:\n  on_exceed: [warn@80%, freeze@100%, kill@120%]\n  signal: USR1\n  execs: 10\n  syscalls: {limit: 1000, on_exceed: [warn@50%, kill], signal: SIGUSR2}\n").budgets;
        let execs = b.get(BudgetKey::Execs).unwrap();
        let steps = b.steps(execs);
        assert_eq!(
            steps,
            vec![
                Step {
                    action: Action::Warn,
                    percent: 80
                },
                Step {
                    action: Action::Freeze,
                    percent: 100
                },
                Step {
                    action: Action::Kill,
                    percent: 120
                },
            ]
        );
        assert_eq!(b.signal(execs), Some(libc::SIGUSR1));
        let sys = b.get(BudgetKey::Syscalls).unwrap();
        assert_eq!(sys.limit, 1000);
        assert_eq!(
            b.steps(sys)[1],
            Step {
                action: Action::Kill,
                percent: 100
            }
        );
        assert_eq!(b.signal(sys), Some(libc::SIGUSR2));
        assert_eq!(steps[2].threshold(10), 12);
    }

    #[test]
    fn bad_budgets_point_at_the_value() {
        assert_eq!(
            err("budgets:\n  execs: 100/1x\n"),
            (4, 10, "invalid rate window in `100/1x`: invalid duration `1x`: expected a number followed by ms, s, m or h".into())
        );
        assert_eq!(
            err("budgets:\n  fs_write_bytes: 10MB\n"),
            (4, 19, "invalid size `10MB`: expected a number followed by B, KiB, MiB or GiB (did you mean `MiB`?)".into())
        );
        assert_eq!(
            err("budgets:\n  on_exceed: [warn@80%, kill@70%]\n"),
            (
                4,
                25,
                "`kill@70%` must have a higher percentage than the step before it (`warn@80%`)"
                    .into()
            )
        );
        assert_eq!(err("budgets:\n  on_exceed: [kill, warn@120%]\n").0, 4);
        assert!(err("budgets:\n  on_exceed: [kill, warn@120%]\n")
            .2
            .contains("nothing can follow a kill"));
        assert!(err("budgets:\n  on_exceed: [explode@10%]\n")
            .2
            .contains("unknown action `explode`"));
        assert!(err("budgets:\n  on_exceed: []\n")
            .2
            .contains("at least one step"));
        assert!(err("budgets:\n  wall_time: 10s/1h\n")
            .2
            .contains("`wall_time` has no rate form"));
        assert!(err("budgets:\n  pids: 5/1s\n")
            .2
            .contains("expected a positive integer for `pids`"));
        assert!(err("budgets:\n  cpu_quota: 50\n")
            .2
            .contains("invalid `cpu_quota` `50`"));
        assert!(err("budgets:\n  cpu_quota: 0%\n").2.contains("between 1%"));
        assert!(err("budgets:\n  execs: \"100\"\n")
            .2
            .contains("a rate such as `100/1h`"));
        assert!(err("budgets:\n  signal: SIGNOPE\n")
            .2
            .contains("unknown signal `SIGNOPE`"));
        let (l, c, m) = err("budgets:\n  memory: {limit: 1GiB, on_exceed: [kill]}\n");
        assert_eq!((l, c), (4, 36));
        assert!(m.contains("enforced by the kernel"), "{m}");
        assert!(err("budgets:\n  execs: {on_exceed: [kill]}\n")
            .2
            .contains("missing required field `limit`"));
        assert!(err("budgets:\n  execs: {limit: 5, when: 1}\n")
            .2
            .contains("unknown field `when`"));
    }

    // --- paths -------------------------------------------------------------------------------

    #[test]
    fn attach_best_effort_names_the_parts_attach_may_leave_out() {
        assert!(ok("").attach.best_effort.is_empty());
        let p = ok("attach:\n  best_effort: [fs, syscalls, caps]\n");
        assert_eq!(p.attach.best_effort, ["fs", "syscalls", "caps"]);
        assert!(ok("attach: {}\n").attach.best_effort.is_empty());
        assert_eq!(
            err("attach:\n  best_effort: [fs, network]\n"),
            (
                4,
                21,
                "unknown attach.best_effort part `network`, expected one of `fs`, `syscalls`, `caps`"
                    .into()
            )
        );
        assert!(err("attach:\n  best_effort: fs\n")
            .2
            .contains("expected a list for `attach.best_effort`"));
        assert!(err("attach:\n  best_effort: [1]\n")
            .2
            .contains("expected a part name"));
        assert_eq!(pos("attach:\n  best: [fs]\n"), (4, 3));
    }

    #[test]
    fn net_unix_paths_and_mediation_knob() {
        let e = env();
        std::fs::write(e.ws.path().join("s.sock"), "").unwrap();
        let p = parse_in(
            &e,
            "net:\n  unix: [\"{workspace}/s.sock\", {path: /nonexistent.sock, optional: true}]\n  unix_mediation: best_effort\n",
        )
        .unwrap();
        let net = p.net.unwrap();
        assert_eq!(net.unix.len(), 2);
        assert_eq!(net.unix[0].written, "{workspace}/s.sock");
        assert!(net.unix[0].exists && !net.unix[1].exists);
        assert!(net.unix_best_effort);
        let p = parse_in(&e, "net:\n  unix_mediation: required\n").unwrap();
        assert!(!p.net.unwrap().unix_best_effort);
        // Errors carry FILE:LINE:COL of the offending node.
        let (line, col, msg) = err("net:\n  unix_mediation: maybe\n");
        assert_eq!((line, col), (4, 19), "{msg}");
        assert!(
            msg.contains("expected `required` or `best_effort`"),
            "{msg}"
        );
        let p = parse_in(&e, "net:\n  taint_socket_abort: best_effort\n").unwrap();
        assert!(p.net.unwrap().taint_abort_best_effort);
        let (line, col, msg) = err("net:\n  taint_socket_abort: yes\n");
        assert_eq!((line, col), (4, 23), "{msg}");
        assert!(
            msg.contains(
                "unknown net.taint_socket_abort `yes`, expected `required` or `best_effort`"
            ),
            "{msg}"
        );
        let (line, col, msg) = err("net:\n  unix: [/nonexistent/agentd.sock]\n");
        assert_eq!((line, col), (4, 10), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
        let (line, _, msg) = err("net:\n  unix: relative.sock\n");
        assert_eq!(line, 4, "{msg}");
        assert!(msg.contains("expected a list for `net.unix`"), "{msg}");
    }

    #[test]
    fn fs_deny_secret_and_net_after_taint() {
        let e = env();
        std::fs::create_dir(e.ws.path().join(".ssh")).unwrap();
        std::fs::write(e.ws.path().join(".env"), "x").unwrap();
        let p = parse_in(
            &e,
            "fs:\n  deny: [\"{workspace}/.ssh\"]\n  secret: [\"{workspace}/.env\"]\nnet:\n  allow: []\n  after_taint: [\"127.0.0.1:443/tcp\"]\n",
        )
        .unwrap();
        let ws = std::fs::canonicalize(e.ws.path()).unwrap();
        assert_eq!(p.fs.deny[0].path, ws.join(".ssh"));
        assert!(p.fs.deny[0].is_dir);
        assert_eq!(p.fs.secret[0].path, ws.join(".env"));
        assert_eq!(p.fs.secret[0].written, "{workspace}/.env");
        let net = p.net.unwrap();
        assert_eq!(net.after_taint.len(), 1);
        assert_eq!(net.after_taint[0].ports, Some((443, 443)));
        // A v1 policy without them stays valid, with empty lists.
        let v1 = parse_in(&e, "fs:\n  read: [/usr]\n").unwrap();
        assert!(v1.fs.deny.is_empty() && v1.fs.secret.is_empty());
    }

    #[test]
    fn workspace_expansion() {
        let e = env();
        std::fs::create_dir(e.ws.path().join("src")).unwrap();
        let p = parse_in(&e, "fs:\n  write: [\"{workspace}\", \"{workspace}/src\"]\n").unwrap();
        let ws = std::fs::canonicalize(e.ws.path()).unwrap();
        let w = &p.fs.write;
        assert_eq!((w[0].written.as_str(), &w[0].path), ("{workspace}", &ws));
        assert_eq!(
            (w[1].written.as_str(), &w[1].path),
            ("{workspace}/src", &ws.join("src"))
        );
        assert!(w.iter().all(|r| r.exists && r.is_dir && !r.optional));
        assert_eq!(w[1].span, Span { line: 4, col: 26 });
    }

    #[test]
    fn home_expansion() {
        let e = env();
        std::fs::create_dir(e.home.path().join(".cache")).unwrap();
        std::fs::write(e.home.path().join("f"), "x").unwrap();
        let p = parse_in(&e, "fs:\n  read: [~, ~/.cache, \"~/f\"]\n").unwrap();
        let home = std::fs::canonicalize(e.home.path()).unwrap();
        let r = &p.fs.read;
        assert_eq!((r[0].written.as_str(), &r[0].path), ("~", &home));
        assert_eq!(r[1].path, home.join(".cache"));
        assert_eq!((r[2].path.clone(), r[2].is_dir), (home.join("f"), false));
    }

    #[test]
    fn bad_paths() {
        let m = |body: &str| err(body).2;
        assert!(m("fs:\n  read: [\"{home}/x\"]\n").contains("unknown placeholder `{home}`"));
        assert!(m("fs:\n  read: [\"/a/{workspace}\"]\n").contains("only allowed at the start"));
        assert!(m("fs:\n  read: [\"{workspace}x\"]\n").contains("expected `/` after"));
        assert!(m("fs:\n  read: [~root/x]\n").contains("write `~/...`"));
        assert!(m("fs:\n  read: [usr/bin]\n").contains("path `usr/bin` is not absolute"));
        assert!(m("fs:\n  read: [\"\"]\n").contains("empty path"));
        assert!(m("fs:\n  read: [/etc/hostname/x]\n").contains("does not exist"));
    }

    #[test]
    fn optional_missing_path() {
        let e = env();
        let p = parse_in(
            &e,
            "fs:\n  read:\n    - {path: \"{workspace}/later\", optional: true}\n",
        )
        .unwrap();
        let r = &p.fs.read[0];
        assert!(r.optional && !r.exists && !r.is_dir);
        assert_eq!(r.path, e.ws.path().join("later"));
        assert_eq!(r.written, "{workspace}/later");
        assert_eq!(r.span, Span { line: 5, col: 14 });
    }

    #[test]
    fn long_form() {
        let p = ok("exec:\n  allow:\n    - path: /usr\n      optional: false\n    - /usr\n");
        let a = &p.exec.allow;
        assert_eq!(a.len(), 2);
        assert!(a[0].exists && a[0].is_dir && !a[0].optional);
        assert_eq!(a[0].span, Span { line: 5, col: 13 });
        assert_eq!(
            err("exec:\n  allow:\n    - optional: true\n"),
            (
                5,
                7,
                "missing required field `path` in a `exec.allow` entry".into()
            )
        );
        assert_eq!(
            err("exec:\n  allow:\n    - {path: /usr, optional: yes}\n"),
            (
                5,
                30,
                "expected `true` or `false` for `optional`, found a string".into()
            )
        );
        assert_eq!(
            err("exec:\n  allow:\n    - {path: /usr, opt: true}\n"),
            (
                5,
                20,
                "unknown field `opt` in a `exec.allow` entry, expected one of `path`, `optional`"
                    .into()
            )
        );
    }

    #[test]
    fn symlinks_are_resolved() {
        let e = env();
        let target = e.ws.path().join("real");
        std::fs::write(&target, "x").unwrap();
        std::os::unix::fs::symlink(&target, e.ws.path().join("link")).unwrap();
        let p = parse_in(&e, "exec:\n  allow: [\"{workspace}/link\"]\n").unwrap();
        assert_eq!(
            p.exec.allow[0].path,
            std::fs::canonicalize(&target).unwrap()
        );
        assert!(!p.exec.allow[0].is_dir);
    }

    // --- network rules -----------------------------------------------------------------------

    #[test]
    fn ipv4_rules() {
        assert_eq!(
            net("127.0.0.1:8080/tcp"),
            (v4([127, 0, 0, 1], 32), Some((8080, 8080)), Some(Proto::Tcp))
        );
        assert_eq!(net("1.2.3.4"), (v4([1, 2, 3, 4], 32), None, None));
        assert_eq!(
            net("1.2.3.4:1000-2000/udp"),
            (v4([1, 2, 3, 4], 32), Some((1000, 2000)), Some(Proto::Udp))
        );
        assert_eq!(net("0.0.0.0/0"), (v4([0, 0, 0, 0], 0), None, None));
    }

    #[test]
    fn cidr_vs_proto_ambiguity() {
        assert_eq!(
            net("10.0.0.0/8:443"),
            (v4([10, 0, 0, 0], 8), Some((443, 443)), None)
        );
        assert_eq!(net("10.0.0.0/8"), (v4([10, 0, 0, 0], 8), None, None));
        assert_eq!(
            net("10.0.0.0/8/udp"),
            (v4([10, 0, 0, 0], 8), None, Some(Proto::Udp))
        );
        assert_eq!(
            net("10.0.0.0/8:53/udp"),
            (v4([10, 0, 0, 0], 8), Some((53, 53)), Some(Proto::Udp))
        );
        assert_eq!(
            net("10.1.2.3/tcp"),
            (v4([10, 1, 2, 3], 32), None, Some(Proto::Tcp))
        );
        assert_eq!(
            net("[fd00::/8]/tcp"),
            (v6("fd00::", 8), None, Some(Proto::Tcp))
        );
        assert!(net_err("example.com/tcp:443").contains("the protocol goes last"));
        assert!(net_err("10.0.0.0/tcp:443").contains("invalid prefix length `/tcp`"));
    }

    #[test]
    fn ipv6_rules() {
        assert_eq!(
            net("[::1]:9000/tcp"),
            (v6("::1", 128), Some((9000, 9000)), Some(Proto::Tcp))
        );
        assert_eq!(net("[::1]"), (v6("::1", 128), None, None));
        assert_eq!(net("[fd00::/8]"), (v6("fd00::", 8), None, None));
        assert_eq!(
            net("[2001:db8::/32]:1-1024/udp"),
            (v6("2001:db8::", 32), Some((1, 1024)), Some(Proto::Udp))
        );
        assert!(net_err("::1").contains("must be in brackets"));
        assert!(net_err("[::1").contains("missing `]`"));
        assert!(net_err("[::1]443").contains("expected `:PORT`"));
        assert!(net_err("[::g]").contains("invalid ipv6 address"));
        assert!(net_err("[::1/129]").contains("invalid prefix length `/129`, expected 0 to 128"));
        assert_eq!(
            net_err("[fd00::1/8]"),
            "`[fd00::1/8]` has bits set beyond the /8 prefix (did you mean `[fd00::/8]`?)"
        );
    }

    #[test]
    fn domain_rules() {
        let d = |s: &str| NetHost::Domain(s.into());
        assert_eq!(
            net("api.Example.COM:443"),
            (d("api.example.com"), Some((443, 443)), None)
        );
        assert_eq!(
            net("*.example.com:443/tcp"),
            (d("*.example.com"), Some((443, 443)), Some(Proto::Tcp))
        );
        assert_eq!(net("localhost"), (d("localhost"), None, None));
        assert_eq!(net("a-1.b2.io:1-2"), (d("a-1.b2.io"), Some((1, 2)), None));
        assert!(net_err("*").contains("`*` is only allowed as the whole first label"));
        assert!(net_err("a.*.com").contains("`*` is only allowed"));
        assert!(net_err("*a.com").contains("`*` is only allowed"));
        assert!(net_err("-a.com").contains("cannot start or end with `-`"));
        assert!(net_err("a..com").contains("1 to 63 characters"));
        assert!(net_err(&format!("{}.com", "a".repeat(64))).contains("1 to 63 characters"));
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(net_err(&long).contains("longer than 253"));
        assert!(net_err("a_b.com").contains("letters, digits and `-`"));
        assert!(net_err("bücher.de").contains("xn--"));
        assert!(net_err("example.com/8").contains("only allowed after an ip address"));
    }

    #[test]
    fn bad_ports_and_addresses() {
        assert_eq!(
            net_err("1.2.3.4:0"),
            "invalid port `0`, expected 1 to 65535"
        );
        assert_eq!(
            net_err("1.2.3.4:65536"),
            "invalid port `65536`, expected 1 to 65535"
        );
        assert_eq!(
            net_err("1.2.3.4:+80"),
            "invalid port `+80`, expected 1 to 65535"
        );
        assert_eq!(
            net_err("1.2.3.4:90-80"),
            "invalid port range `90-80`: 90 is greater than 80"
        );
        assert_eq!(net_err("1.2.3.4:"), "missing port after `:`");
        assert_eq!(net_err(":80"), "missing host before the port");
        assert_eq!(net_err("/tcp"), "missing host before the port");
        assert_eq!(net_err("999.1.1.1"), "invalid ipv4 address `999.1.1.1`");
        assert_eq!(
            net_err("1.2.3.4/33"),
            "invalid prefix length `/33`, expected 0 to 32"
        );
        assert_eq!(
            net_err("192.168.1.1/24"),
            "`192.168.1.1/24` has bits set beyond the /24 prefix (did you mean `192.168.1.0/24`?)"
        );
    }

    // --- presets -----------------------------------------------------------------------------

    /// Every file in `policies/`, including ones added later, must load on this machine.
    #[test]
    fn every_preset_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let e = env();
        let mut loaded = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let is_yaml = matches!(
                path.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml")
            );
            if !is_yaml {
                continue;
            }
            let policy = load_file(&path, &e.opts).unwrap_or_else(|err| panic!("{err}"));
            assert!(!policy.name.is_empty());
            loaded.push(policy.name);
        }
        loaded.sort();
        for preset in ["default", "node-agent", "python-agent"] {
            assert!(
                loaded.iter().any(|n| n == preset),
                "{preset} missing: {loaded:?}"
            );
        }
    }
}
