//! `/etc/agentd/config.yaml`: where the daemon listens, writes and pins. Parsed strictly:
//! an unknown key or a wrong type is an error with `FILE:LINE:COL`.
//!
//! ```yaml
//! socket: /run/agentd/agentd.sock   # the control socket (mode 0660, group `group`)
//! token_socket: /run/agentd/agentd-token.sock  # mode 0666: requests with a token only
//! group: agentd                     # members may start runs and act on their own
//! state_dir: /run/agentd            # runs/<id>.json per live run, policies/, daemon.json
//! audit: /var/log/agentd/audit.jsonl
//! signing_key: /var/lib/agentd/audit.key
//! unsigned_audit: false             # true: no signed checkpoints (logged)
//! pin_root: /sys/fs/bpf/agentd      # bpffs (mounted if it is not)
//! max_request_bytes: 1048576
//! client_grace_secs: 10             # how long a re-adopted run waits for its client
//! programs_linger_ms: 2000          # global programs stay attached this long after
//!                                   # their last run (0: detach with it)
//! log: info                         # tracing filter (AGENTD_LOG overrides)
//! metrics: 127.0.0.1:9464           # Prometheus endpoint (default: none)
//! ```

use std::path::{Path, PathBuf};

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// Where the daemon's config lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/agentd/config.yaml";

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub socket: PathBuf,
    /// Mode 0666: anyone may connect, but only requests carrying a token are served.
    pub token_socket: PathBuf,
    pub group: String,
    pub state_dir: PathBuf,
    pub audit: PathBuf,
    pub signing_key: PathBuf,
    pub unsigned_audit: bool,
    pub pin_root: PathBuf,
    pub max_request_bytes: usize,
    pub client_grace_secs: u64,
    /// How long a global program (the tracepoint hooks) stays attached after the last
    /// run that needed it ended: a launch within it skips a detach and re-attach.
    pub programs_linger_ms: u64,
    pub log: String,
    /// Where `/metrics` is served (Prometheus text format); `None`: nowhere.
    pub metrics: Option<std::net::SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/agentd/agentd.sock"),
            token_socket: PathBuf::from("/run/agentd/agentd-token.sock"),
            group: "agentd".into(),
            state_dir: PathBuf::from("/run/agentd"),
            audit: PathBuf::from(crate::audit::DEFAULT_AUDIT_PATH),
            signing_key: PathBuf::from("/var/lib/agentd/audit.key"),
            unsigned_audit: false,
            pin_root: PathBuf::from("/sys/fs/bpf/agentd"),
            max_request_bytes: super::protocol::DEFAULT_MAX_REQUEST,
            client_grace_secs: 10,
            programs_linger_ms: 2000,
            log: "info".into(),
            metrics: None,
        }
    }
}

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{col}: {message}", path = .path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
}

const KEYS: &[&str] = &[
    "socket",
    "token_socket",
    "group",
    "state_dir",
    "audit",
    "signing_key",
    "unsigned_audit",
    "pin_root",
    "max_request_bytes",
    "client_grace_secs",
    "programs_linger_ms",
    "log",
    "metrics",
];

impl Config {
    /// Reads `path`; a missing file at the default location means the defaults.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses config text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |line: usize, col: usize, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            col,
            message,
        };
        let at = |n: &MarkedYaml<'_>| (n.span.start.line().max(1), n.span.start.col() + 1);
        let docs = MarkedYaml::load_from_str(text).map_err(|e| {
            let m = e.marker();
            invalid(
                m.line().max(1),
                m.col() + 1,
                format!("yaml syntax error: {}", e.info()),
            )
        })?;
        let mut cfg = Self::default();
        let Some(doc) = docs.into_iter().next() else {
            return Ok(cfg);
        };
        let map = match &doc.data {
            YamlData::Mapping(m) => m,
            YamlData::Value(Scalar::Null) | YamlData::BadValue => return Ok(cfg),
            _ => {
                let (l, c) = at(&doc);
                return Err(invalid(l, c, "expected a mapping of settings".into()));
            }
        };
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in map.iter() {
            let (kl, kc) = at(key);
            let YamlData::Value(Scalar::String(name)) = &key.data else {
                return Err(invalid(kl, kc, "expected a setting name".into()));
            };
            let name: &str = name;
            if !KEYS.contains(&name) {
                return Err(invalid(
                    kl,
                    kc,
                    format!(
                        "unknown setting `{name}` (expected one of {})",
                        KEYS.iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if seen.iter().any(|s| s == name) {
                return Err(invalid(kl, kc, format!("duplicate setting `{name}`")));
            }
            seen.push(name.to_owned());
            let (vl, vc) = at(value);
            let string = || match &value.data {
                YamlData::Value(Scalar::String(s)) if !s.is_empty() => Ok(s.to_string()),
                _ => Err(invalid(
                    vl,
                    vc,
                    format!("`{name}`: expected a non-empty string"),
                )),
            };
            let path = || {
                let s = string()?;
                if s.starts_with('/') {
                    Ok(PathBuf::from(s))
                } else {
                    Err(invalid(
                        vl,
                        vc,
                        format!("`{name}`: expected an absolute path"),
                    ))
                }
            };
            let number = || match &value.data {
                YamlData::Value(Scalar::Integer(n)) if *n > 0 => Ok(*n as u64),
                _ => Err(invalid(
                    vl,
                    vc,
                    format!("`{name}`: expected a positive integer"),
                )),
            };
            let count = || match &value.data {
                YamlData::Value(Scalar::Integer(n)) if *n >= 0 => Ok(*n as u64),
                _ => Err(invalid(
                    vl,
                    vc,
                    format!("`{name}`: expected a whole number, 0 or more"),
                )),
            };
            match name {
                "socket" => cfg.socket = path()?,
                "token_socket" => cfg.token_socket = path()?,
                "group" => cfg.group = string()?,
                "state_dir" => cfg.state_dir = path()?,
                "audit" => cfg.audit = path()?,
                "signing_key" => cfg.signing_key = path()?,
                "pin_root" => cfg.pin_root = path()?,
                "log" => cfg.log = string()?,
                "unsigned_audit" => {
                    cfg.unsigned_audit = match &value.data {
                        YamlData::Value(Scalar::Boolean(b)) => *b,
                        _ => {
                            return Err(invalid(
                                vl,
                                vc,
                                "`unsigned_audit`: expected true or false".into(),
                            ))
                        }
                    }
                }
                "max_request_bytes" => {
                    cfg.max_request_bytes = usize::try_from(number()?).unwrap_or(usize::MAX)
                }
                "client_grace_secs" => cfg.client_grace_secs = number()?,
                "programs_linger_ms" => cfg.programs_linger_ms = count()?,
                "metrics" => {
                    cfg.metrics = Some(string()?.parse().map_err(|e| {
                        invalid(
                            vl,
                            vc,
                            format!("`metrics`: expected ADDRESS:PORT (e.g. 127.0.0.1:9464): {e}"),
                        )
                    })?)
                }
                _ => {}
            }
        }
        Ok(cfg)
    }

    /// `state_dir/runs`: one file per live run.
    pub fn runs_dir(&self) -> PathBuf {
        self.state_dir.join("runs")
    }

    /// `state_dir/policies`: the policy texts of live runs (`daemon::policies`).
    pub fn policies_dir(&self) -> PathBuf {
        self.state_dir.join("policies")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_override_the_defaults() {
        let c = Config::parse(
            "socket: /tmp/a.sock\ngroup: g\nmax_request_bytes: 4096\nunsigned_audit: true\n",
            Path::new("c.yaml"),
        )
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(c.group, "g");
        assert_eq!(c.max_request_bytes, 4096);
        assert!(c.unsigned_audit);
        assert_eq!(c.pin_root, Config::default().pin_root);
        assert_eq!(
            Config::parse("", Path::new("c.yaml")).unwrap(),
            Config::default()
        );
    }

    /// The shipped example documents the defaults: it must be exactly them.
    #[test]
    fn the_shipped_config_is_the_defaults() {
        let text = include_str!("../../../dist/config.yaml");
        assert_eq!(
            Config::parse(text, Path::new("dist/config.yaml")).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn errors_name_the_place() {
        let e = |t: &str| {
            Config::parse(t, Path::new("c.yaml"))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e("socket: /s\nsockets: /t\n"),
            "c.yaml:2:1: unknown setting `sockets` (expected one of `socket`, `token_socket`, `group`, `state_dir`, `audit`, `signing_key`, `unsigned_audit`, `pin_root`, `max_request_bytes`, `client_grace_secs`, `programs_linger_ms`, `log`, `metrics`)"
        );
        assert_eq!(
            e("socket: relative\n"),
            "c.yaml:1:9: `socket`: expected an absolute path"
        );
        assert_eq!(
            e("max_request_bytes: -1\n"),
            "c.yaml:1:20: `max_request_bytes`: expected a positive integer"
        );
        assert!(e("socket: [\n").starts_with("c.yaml:"));
        assert_eq!(
            e("metrics: localhost\n"),
            "c.yaml:1:10: `metrics`: expected ADDRESS:PORT (e.g. 127.0.0.1:9464): invalid socket address syntax"
        );
        assert_eq!(
            e("programs_linger_ms: soon\n"),
            "c.yaml:1:21: `programs_linger_ms`: expected a whole number, 0 or more"
        );
        let c = Config::parse("programs_linger_ms: 0\n", Path::new("c.yaml")).unwrap();
        assert_eq!(c.programs_linger_ms, 0);
        let c = Config::parse("metrics: 127.0.0.1:9464\n", Path::new("c.yaml")).unwrap();
        assert_eq!(c.metrics, Some(([127, 0, 0, 1], 9464).into()));
    }

    #[test]
    fn a_missing_default_file_is_the_defaults_but_an_explicit_one_is_an_error() {
        let missing = Path::new("/nonexistent/agentd/config.yaml");
        assert_eq!(Config::load(missing, false).unwrap(), Config::default());
        assert!(Config::load(missing, true).is_err());
    }
}
