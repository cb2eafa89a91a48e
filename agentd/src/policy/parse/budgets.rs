//! The `budgets` section: limits, rate forms and graduated `on_exceed` steps.
//!
//! ```yaml
//! budgets:
//!   on_exceed: [warn@80%, kill@100%]   # default for every accounted budget
//!   signal: SIGUSR1                    # default signal of `warn` steps
//!   wall_time: 10m
//!   cpu_quota: 50%                     # of one CPU
//!   memory: 512MiB
//!   execs: 100/1h                      # rate form: any sliding hour
//!   net_egress_bytes: {limit: 1GiB, on_exceed: [warn@50%, freeze@100%], signal: SIGUSR2}
//! ```

use std::time::Duration;

use saphyr::{Scalar, YamlData};

use super::{
    digits, fail, fail_at, fields, kind, list, missing_field, parse_duration, parse_size,
    scalar_text, span_of, split_number, Errors, Node, R,
};
use crate::policy::budget::{Action, Budget, BudgetKey, Budgets, Step, Unit};

pub(in crate::policy) const SECTION_KEYS: &[&str] = &[
    "wall_time",
    "cpu_time",
    "cpu_quota",
    "memory",
    "memory_high",
    "pids",
    "syscalls",
    "execs",
    "net_egress_bytes",
    "net_ingress_bytes",
    "fs_write_bytes",
    "on_exceed",
    "signal",
];
pub(in crate::policy) const LONG_FORM_KEYS: &[&str] = &["limit", "on_exceed", "signal"];
/// Highest step percentage (10× the limit); beyond that a step is almost surely a typo.
const MAX_STEP_PERCENT: u32 = 1000;
/// `cpu_quota` above 1000 CPUs is a typo.
const MAX_CPU_QUOTA_PERCENT: u64 = 100_000;

pub(in crate::policy) fn parse_budgets(node: &Node, errs: &mut Errors) -> Budgets {
    let mut budgets = Budgets::default();
    for (name, value) in fields(node, "`budgets`", SECTION_KEYS, errs) {
        match name {
            "on_exceed" => budgets.on_exceed = parse_steps(value, "budgets.on_exceed", errs),
            "signal" => budgets.signal = errs.keep(parse_signal(value, "budgets.signal")),
            _ => {
                if let Some(key) = BudgetKey::from_name(name) {
                    budgets.items.extend(parse_budget(key, value, errs));
                }
            }
        }
    }
    budgets.wall_time = budgets
        .get(BudgetKey::WallTime)
        .map(|b| Duration::from_millis(b.limit));
    budgets.memory = budgets.get(BudgetKey::Memory).map(|b| b.limit);
    budgets.pids = budgets.get(BudgetKey::Pids).map(|b| b.limit);
    budgets
}

fn parse_budget(key: BudgetKey, node: &Node, errs: &mut Errors) -> Option<Budget> {
    let mut budget = Budget {
        key,
        limit: 0,
        window: None,
        on_exceed: None,
        signal: None,
        span: span_of(node),
    };
    if !matches!(node.data, YamlData::Mapping(_)) {
        (budget.limit, budget.window) = errs.keep(parse_limit(key, node))?;
        return Some(budget);
    }
    let within = format!("`budgets.{}`", key.name());
    let (mut limit, mut has_limit) = (None, false);
    for (name, value) in fields(node, &within, LONG_FORM_KEYS, errs) {
        match name {
            "limit" => {
                has_limit = true;
                limit = errs.keep(parse_limit(key, value));
            }
            "on_exceed" | "signal" if key.kernel_enforced() => {
                errs.push(fail_at(value, kernel_enforced_msg(key, name)));
            }
            "on_exceed" => {
                budget.on_exceed = parse_steps(value, &format!("{}.on_exceed", key.name()), errs)
            }
            "signal" => {
                budget.signal = errs.keep(parse_signal(value, &format!("{}.signal", key.name())))
            }
            _ => {}
        }
    }
    if !has_limit {
        errs.push(missing_field(node, "limit", &within));
    }
    (budget.limit, budget.window) = limit?;
    Some(budget)
}

fn kernel_enforced_msg(key: BudgetKey, field: &str) -> String {
    let how = match key {
        BudgetKey::Memory => "the kernel OOM-kills at the limit",
        BudgetKey::MemoryHigh => "the kernel reclaims and throttles above it",
        BudgetKey::Pids => "fork fails with EAGAIN at the limit",
        _ => "the kernel throttles the run to it",
    };
    format!(
        "`{field}` does not apply to `{}`: it is enforced by the kernel ({how}), and agentd audits what the kernel did",
        key.name()
    )
}

/// A limit in the key's unit, with the window of a rate form.
fn parse_limit(key: BudgetKey, node: &Node) -> R<(u64, Option<Duration>)> {
    let name = key.name();
    let example = match (key.unit(), key.allows_rate()) {
        (Unit::Millis, _) => "a duration such as `10m`",
        (Unit::Bytes, false) => "a size such as `512MiB`",
        (Unit::Bytes, true) => "a size such as `512MiB` or a rate such as `1MiB/1s`",
        (Unit::Count, false) => "a positive integer",
        (Unit::Count, true) => "a positive integer or a rate such as `100/1h`",
        (Unit::Percent, _) => "a percentage of one CPU such as `50%`",
    };
    if key.unit() == Unit::Count {
        match &node.data {
            YamlData::Value(Scalar::Integer(n)) if *n > 0 => return Ok((n.unsigned_abs(), None)),
            YamlData::Value(Scalar::Integer(n)) => {
                return fail(
                    node,
                    format!("invalid `{name}` limit `{n}`: expected a positive integer"),
                )
            }
            YamlData::Value(Scalar::String(s)) if key.allows_rate() && s.contains('/') => {}
            _ => {
                return fail(
                    node,
                    format!("expected {example} for `{name}`, found {}", kind(node)),
                )
            }
        }
    }
    let Some(text) = scalar_text(node) else {
        return fail(
            node,
            format!("expected {example} for `{name}`, found {}", kind(node)),
        );
    };
    let (amount, window) = match text.split_once('/') {
        Some((amount, window)) if key.allows_rate() => {
            let window = parse_duration(window.trim())
                .map_err(|msg| fail_at(node, format!("invalid rate window in `{text}`: {msg}")))?;
            (amount.trim(), Some(window))
        }
        Some(_) => {
            return fail(
                node,
                format!("`{name}` has no rate form: expected {example}, found `{text}`"),
            )
        }
        None => (text.as_str(), None),
    };
    let limit = match key.unit() {
        Unit::Millis => {
            let d = parse_duration(amount).map_err(|msg| fail_at(node, msg))?;
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        }
        Unit::Bytes => parse_size(amount).map_err(|msg| fail_at(node, msg))?,
        Unit::Count => match digits::<u64>(amount) {
            Some(n) if n > 0 => n,
            _ => {
                return fail(
                    node,
                    format!("invalid `{name}` limit `{amount}`: expected a positive integer"),
                )
            }
        },
        Unit::Percent => parse_percent(amount, MAX_CPU_QUOTA_PERCENT)
            .map_err(|msg| fail_at(node, format!("invalid `{name}` `{amount}`: {msg}")))?,
    };
    Ok((limit, window))
}

/// `50%` → 50.
fn parse_percent(text: &str, max: u64) -> Result<u64, String> {
    let (number, unit) = split_number(text);
    if unit != "%" {
        return Err("expected a whole number followed by `%`".into());
    }
    match digits::<u64>(number) {
        Some(n) if n > 0 && n <= max => Ok(n),
        Some(_) => Err(format!("must be between 1% and {max}%")),
        None => Err("expected a whole number followed by `%`".into()),
    }
}

/// `[warn@80%, freeze@100%, kill@120%]`; a bare action means `@100%`.
fn parse_steps(node: &Node, field: &str, errs: &mut Errors) -> Option<Vec<Step>> {
    let items = errs.keep(list(node, field))?;
    if items.is_empty() {
        errs.push(fail_at(
            node,
            format!("`{field}` needs at least one step such as `kill@100%`"),
        ));
        return None;
    }
    let mut steps: Vec<Step> = Vec::with_capacity(items.len());
    for item in items {
        if let Some(step) = errs.keep(next_step(item, field, steps.last())) {
            steps.push(step);
        }
    }
    Some(steps)
}

/// One step of `field`, which must rise above `prev` (the last good step before it).
fn next_step(item: &Node, field: &str, prev: Option<&Step>) -> R<Step> {
    let Some(text) = scalar_text(item) else {
        return fail(
            item,
            format!(
                "expected a step such as `warn@80%` in `{field}`, found {}",
                kind(item)
            ),
        );
    };
    let step = parse_step(&text).map_err(|msg| fail_at(item, msg))?;
    if let Some(prev) = prev {
        if prev.action == Action::Kill {
            return fail(
                item,
                format!("`{step}` comes after `{prev}`: nothing can follow a kill"),
            );
        }
        if step.percent <= prev.percent {
            return fail(
                item,
                format!(
                    "`{step}` must have a higher percentage than the step before it (`{prev}`)"
                ),
            );
        }
    }
    Ok(step)
}

fn parse_step(text: &str) -> Result<Step, String> {
    let (action, percent) = match text.split_once('@') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let Some(action) = Action::ALL.into_iter().find(|a| a.name() == action) else {
        return Err(format!(
            "unknown action `{action}` in step `{text}`, expected `warn`, `freeze` or `kill`"
        ));
    };
    let percent = match percent {
        None => 100,
        Some(p) => parse_percent(p, u64::from(MAX_STEP_PERCENT))
            .map_err(|msg| format!("invalid step `{text}`: {msg}"))? as u32,
    };
    Ok(Step { action, percent })
}

/// `SIGUSR1` or `USR1`.
fn parse_signal(node: &Node, field: &str) -> R<i32> {
    let YamlData::Value(Scalar::String(text)) = &node.data else {
        return fail(
            node,
            format!(
                "expected a signal name such as `SIGUSR1` for `{field}`, found {}",
                kind(node)
            ),
        );
    };
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    match full.parse::<nix::sys::signal::Signal>() {
        Ok(sig) => Ok(sig as i32),
        Err(_) => fail(node, format!("unknown signal `{text}` for `{field}`")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(
            parse_step("warn@80%").unwrap(),
            Step {
                action: Action::Warn,
                percent: 80
            }
        );
        assert_eq!(
            parse_step("kill").unwrap(),
            Step {
                action: Action::Kill,
                percent: 100
            }
        );
        assert!(parse_step("nuke@1%")
            .unwrap_err()
            .contains("unknown action `nuke`"));
        assert!(parse_step("warn@80")
            .unwrap_err()
            .contains("followed by `%`"));
        assert!(parse_step("warn@0%").unwrap_err().contains("between 1%"));
        assert!(parse_step("warn@5000%")
            .unwrap_err()
            .contains("between 1% and 1000%"));
    }

    #[test]
    fn percent() {
        assert_eq!(parse_percent("50%", 100), Ok(50));
        assert!(parse_percent("50", 100).is_err());
        assert!(parse_percent("1.5%", 100).is_err());
        assert!(parse_percent("101%", 100).is_err());
    }
}
