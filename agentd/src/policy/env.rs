//! The `env` section: which of the caller's environment variables reach the command.
//!
//! ```yaml
//! env:
//!   pass: [PATH, HOME, LANG, "LC_*", TERM]   # names, or patterns with `*`
//!   set: {PYTHONDONTWRITEBYTECODE: "1"}     # added (or replaced) after filtering
//! ```
//!
//! Without `pass`, [`DEFAULT_PASS`] applies. A variable that only a pattern matches is
//! still dropped when its name looks like a credential ([`looks_like_credential`]); one
//! named exactly in `pass` is passed as the user asked.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// `env.pass` when the policy does not list it: what shells, locales, terminals and most
/// tools need, and nothing that usually holds a secret.
pub const DEFAULT_PASS: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "TZ",
    "TMPDIR",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "XDG_*",
];

/// Name fragments that make a variable look like a credential (compared upper-case).
pub const CREDENTIAL_PARTS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "API_KEY",
    "APIKEY",
    "ACCESS_KEY",
    "PRIVATE_KEY",
    "AUTH",
    "COOKIE",
    "SESSION",
];

#[derive(Debug, Clone, Default)]
pub struct EnvPolicy {
    /// `env.pass`; `None`: [`DEFAULT_PASS`].
    pub pass: Option<Vec<EnvName>>,
    /// `env.set`, in file order.
    pub set: Vec<EnvSet>,
}

/// One `env.pass` entry: a name, or a pattern where `*` stands for any characters.
#[derive(Debug, Clone)]
pub struct EnvName {
    pub written: String,
}

#[derive(Debug, Clone)]
pub struct EnvSet {
    pub name: String,
    pub value: String,
}

/// Why a variable of the caller's environment is not passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// No `env.pass` entry matches it.
    NotPassed,
    /// Only a pattern matches it, and its name looks like a credential.
    Credential,
}

impl EnvPolicy {
    /// The command's environment from the caller's `KEY=VALUE` list: the passed
    /// variables in their order, then `env.set`.
    pub fn apply(&self, env: &[OsString]) -> Vec<OsString> {
        let mut out: Vec<OsString> = env
            .iter()
            .filter(|kv| {
                let name = split_name(kv);
                !self.set.iter().any(|s| s.name.as_bytes() == name) && self.verdict(name).is_ok()
            })
            .cloned()
            .collect();
        for s in &self.set {
            let mut kv = OsString::from(&s.name);
            kv.push("=");
            kv.push(&s.value);
            out.push(kv);
        }
        out
    }

    /// Whether the variable `name` is passed.
    pub fn verdict(&self, name: &[u8]) -> Result<(), Dropped> {
        let mut by_pattern = false;
        for p in self.patterns() {
            if p.as_bytes() == name {
                return Ok(());
            }
            by_pattern |= p.contains('*') && glob(p.as_bytes(), name);
        }
        if !by_pattern {
            Err(Dropped::NotPassed)
        } else if looks_like_credential(name) {
            Err(Dropped::Credential)
        } else {
            Ok(())
        }
    }

    /// The `pass` entries in effect (the default when the policy has none).
    pub fn patterns(&self) -> Vec<&str> {
        match &self.pass {
            Some(list) => list.iter().map(|n| n.written.as_str()).collect(),
            None => DEFAULT_PASS.to_vec(),
        }
    }
}

/// The names of a `KEY=VALUE` list, in order (for `run_start`).
pub fn names(env: &[OsString]) -> Vec<String> {
    env.iter()
        .map(|kv| String::from_utf8_lossy(split_name(kv)).into_owned())
        .collect()
}

fn split_name(kv: &OsStr) -> &[u8] {
    let b = kv.as_bytes();
    b.iter().position(|&c| c == b'=').map_or(b, |i| &b[..i])
}

/// Whether `name` contains one of [`CREDENTIAL_PARTS`] or ends in `_KEY`/`_PAT`.
pub fn looks_like_credential(name: &[u8]) -> bool {
    let upper = name.to_ascii_uppercase();
    let has = |part: &[u8]| upper.windows(part.len()).any(|w| w == part);
    CREDENTIAL_PARTS.iter().any(|p| has(p.as_bytes()))
        || upper.ends_with(b"_KEY")
        || upper.ends_with(b"_PAT")
}

/// `*` matches any run of bytes (possibly empty); every other byte matches itself.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        Some((c, rest)) => name.first() == Some(c) && glob(rest, &name[1..]),
    }
}

/// Whether `name` is a valid `env.pass` entry or `env.set` name: letters, digits, `_`
/// (and `*` in a pattern), not starting with a digit.
pub fn valid_name(name: &str, pattern: bool) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || (pattern && c == '*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(kvs: &[&str]) -> Vec<OsString> {
        kvs.iter().map(OsString::from).collect()
    }

    fn pass(names: &[&str]) -> EnvPolicy {
        EnvPolicy {
            pass: Some(
                names
                    .iter()
                    .map(|n| EnvName {
                        written: (*n).into(),
                    })
                    .collect(),
            ),
            set: Vec::new(),
        }
    }

    #[test]
    fn default_passes_common_and_strips_credentials() {
        let p = EnvPolicy::default();
        let out = p.apply(&env(&[
            "PATH=/bin",
            "HOME=/root",
            "LC_ALL=C",
            "AWS_SECRET_ACCESS_KEY=x",
            "GITHUB_TOKEN=y",
            "OPENAI_API_KEY=z",
            "XDG_SESSION_ID=3",
            "RANDOM_THING=1",
        ]));
        assert_eq!(out, env(&["PATH=/bin", "HOME=/root", "LC_ALL=C"]));
    }

    #[test]
    fn patterns_strip_credentials_exact_names_do_not() {
        let p = pass(&["*", "GITHUB_TOKEN"]);
        assert_eq!(p.verdict(b"GITHUB_TOKEN"), Ok(()));
        assert_eq!(p.verdict(b"NPM_TOKEN"), Err(Dropped::Credential));
        assert_eq!(p.verdict(b"DB_PASSWORD_FILE"), Err(Dropped::Credential));
        assert_eq!(p.verdict(b"MY_SECRET"), Err(Dropped::Credential));
        assert_eq!(p.verdict(b"SSH_KEY"), Err(Dropped::Credential));
        assert_eq!(p.verdict(b"CARGO_HOME"), Ok(()));
        assert_eq!(pass(&["PATH"]).verdict(b"HOME"), Err(Dropped::NotPassed));
    }

    #[test]
    fn set_replaces_and_adds() {
        let mut p = pass(&["PATH", "LANG"]);
        p.set.push(EnvSet {
            name: "LANG".into(),
            value: "C.UTF-8".into(),
        });
        let out = p.apply(&env(&["LANG=fr", "PATH=/bin", "X=1"]));
        assert_eq!(out, env(&["PATH=/bin", "LANG=C.UTF-8"]));
        assert_eq!(names(&out), ["PATH", "LANG"]);
    }

    #[test]
    fn globs_and_names() {
        assert!(glob(b"LC_*", b"LC_ALL"));
        assert!(glob(b"*_X*", b"A_XB"));
        assert!(!glob(b"LC_*", b"LANG"));
        assert!(valid_name("LC_*", true));
        assert!(!valid_name("LC_*", false));
        assert!(!valid_name("1A", false));
        assert!(!valid_name("A=B", true));
    }
}
