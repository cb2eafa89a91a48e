//! The `env` section: `pass` (names or `*` patterns) and `set` (name → string).

use saphyr::{Scalar, YamlData};

use super::{each, fail, fail_at, fields, kind, Errors, Node, R};
use crate::policy::env::{valid_name, EnvName, EnvPolicy, EnvSet};

pub(in crate::policy) const ENV_KEYS: &[&str] = &["pass", "set"];

pub(super) fn parse_env(node: &Node, errs: &mut Errors) -> EnvPolicy {
    let mut env = EnvPolicy::default();
    for (key, value) in fields(node, "`env`", ENV_KEYS, errs) {
        if key == "pass" {
            env.pass = Some(each(value, "env.pass", errs, parse_pass));
        } else {
            env.set = parse_set(value, errs);
        }
    }
    env
}

fn parse_pass(item: &Node) -> R<EnvName> {
    let YamlData::Value(Scalar::String(s)) = &item.data else {
        return fail(
            item,
            format!(
                "expected a variable name in `env.pass`, found {}",
                kind(item)
            ),
        );
    };
    if !valid_name(s, true) {
        return fail(
            item,
            format!(
                "invalid variable name `{s}` in `env.pass`: expected letters, digits and `_`, with `*` for any characters"
            ),
        );
    }
    Ok(EnvName {
        written: s.to_string(),
    })
}

fn parse_set(node: &Node, errs: &mut Errors) -> Vec<EnvSet> {
    let YamlData::Mapping(map) = &node.data else {
        errs.push(fail_at(
            node,
            format!("expected a mapping for `env.set`, found {}", kind(node)),
        ));
        return Vec::new();
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map.iter() {
        let name = match &key.data {
            YamlData::Value(Scalar::String(s)) if valid_name(s, false) => s.to_string(),
            _ => {
                errs.push(fail_at(
                    key,
                    "invalid variable name in `env.set`: expected letters, digits and `_`, not starting with a digit",
                ));
                continue;
            }
        };
        let value = match &value.data {
            YamlData::Value(Scalar::String(s)) => s.to_string(),
            YamlData::Value(Scalar::Integer(n)) => n.to_string(),
            _ => {
                errs.push(fail_at(
                    value,
                    format!(
                        "expected a string for `env.set.{name}`, found {} (quote it)",
                        kind(value)
                    ),
                ));
                continue;
            }
        };
        out.push(EnvSet { name, value });
    }
    out
}
