//! What of a plan an attached run (`agentd attach`) can apply to processes that are
//! already running. Everything keyed by the cgroup applies; landlock, seccomp and the
//! capability drop are things a process can only do to itself before it runs, so they
//! cannot be added to a running workload.

use super::{Plan, Refusal};
use crate::layers::name;

/// The parts that cannot be applied to running processes, with the layer of each and
/// the name `attach.best_effort` (or `--best-effort`) uses to mark it best effort
/// (`policy::ATTACH_PARTS`, in the same order).
pub const NOT_APPLICABLE: &[(&str, &str)] = &[
    ("fs", name::LANDLOCK),
    ("syscalls", name::SECCOMP),
    ("caps", name::CAPS),
];

/// Why attaching cannot apply a part.
const WHY: &str = "cannot be applied to running processes";

/// Where the best-effort marks of an attach came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkSource {
    /// The policy's `attach.best_effort`.
    Policy,
    /// `agentd attach --best-effort`, which replaces the policy's list.
    Flag,
}

impl MarkSource {
    /// How the source is named in messages.
    pub fn name(self) -> &'static str {
        match self {
            MarkSource::Policy => "the policy's attach.best_effort",
            MarkSource::Flag => "--best-effort (it replaces the policy's attach.best_effort)",
        }
    }
}

/// The best-effort marks that apply to an attach: `flag` (`--best-effort`; `none` for
/// no part) when given, else the policy's `attach.best_effort`.
pub fn best_effort(policy: &[String], flag: Option<&[String]>) -> (Vec<String>, MarkSource) {
    match flag {
        Some(parts) => (
            parts
                .iter()
                .filter(|p| p.as_str() != "none" && !p.is_empty())
                .cloned()
                .collect(),
            MarkSource::Flag,
        ),
        None => (policy.to_vec(), MarkSource::Policy),
    }
}

/// The line `attach` prints before the plan: which marks apply and where they came from.
pub fn marks_line(parts: &[String], source: MarkSource) -> String {
    let parts = if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    };
    format!("attach: best effort: {parts} (from {})\n", source.name())
}

impl Plan {
    /// Adapts the plan to an attached run: each part in [`NOT_APPLICABLE`] the plan uses
    /// is marked `not applied` when `best_effort` names it, and refused otherwise.
    /// Returns the parts left out. An unknown name in `best_effort` is refused too.
    pub fn for_attach(&mut self, best_effort: &[String]) -> Vec<String> {
        for b in best_effort {
            if !NOT_APPLICABLE.iter().any(|(part, _)| part == b) {
                self.refusals.push(Refusal {
                    layer: name::AGENTD,
                    reason: format!(
                        "best effort `{b}`: expected one of {}",
                        NOT_APPLICABLE
                            .iter()
                            .map(|(p, _)| format!("`{p}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        let used = |layer: &str| match layer {
            name::LANDLOCK => self.landlock.is_some(),
            name::SECCOMP => self.seccomp,
            _ => self.caps,
        };
        let mut left_out = Vec::new();
        let mut refused = Vec::new();
        for (part, layer) in NOT_APPLICABLE {
            if !used(layer) {
                continue;
            }
            if best_effort.iter().any(|b| b == part) {
                left_out.push((*part).to_owned());
            } else {
                refused.push(Refusal {
                    layer,
                    reason: format!(
                        "{layer} ({part}) {WHY}; mark it best effort (`attach: {{best_effort: [{part}]}}` in the policy, or `--best-effort {part}`) to attach without it"
                    ),
                });
            }
        }
        self.refusals.extend(refused);
        let skipped: Vec<&str> = NOT_APPLICABLE
            .iter()
            .filter(|(part, _)| left_out.iter().any(|l| l == part))
            .map(|(_, layer)| *layer)
            .collect();
        for l in self
            .layers
            .iter_mut()
            .filter(|l| skipped.contains(&l.layer))
        {
            l.status = "not applied";
            l.detail = format!("{WHY} (best effort)");
        }
        for c in self
            .coverage
            .iter_mut()
            .filter(|c| skipped.contains(&c.layer))
        {
            c.how = format!("not applied: {WHY} (best effort)");
        }
        if skipped.contains(&name::LANDLOCK) {
            self.landlock = None;
        }
        // A running workload cannot be given a mount namespace.
        self.private_proc = false;
        self.layers.retain(|l| l.layer != name::MOUNTS);
        self.coverage.retain(|c| c.layer != name::MOUNTS);
        self.refusals.retain(|r| r.layer != name::MOUNTS);
        if skipped.contains(&name::SECCOMP) {
            self.seccomp = false;
        }
        if skipped.contains(&name::CAPS) {
            self.caps = false;
        }
        left_out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::policy::{self, LoadOptions};

    fn plan(yaml: &str) -> Plan {
        let opts = LoadOptions {
            workspace: "/tmp".into(),
            home: "/tmp".into(),
        };
        let p = policy::parse_str(yaml, "t.yaml", &opts).unwrap();
        Plan::build(&p, &crate::probe::Probe::detect())
    }

    const POLICY: &str =
        "version: 1\nname: t\nfs:\n  read: [/usr]\nnet:\n  allow: [\"127.0.0.1:1/tcp\"]\n";

    #[test]
    fn parts_a_running_process_cannot_take_are_refused_unless_best_effort() {
        let mut p = plan(POLICY);
        let before = p.refusals.len();
        assert!(p.for_attach(&[]).is_empty());
        let layers: Vec<_> = p.refusals[before..].iter().map(|r| r.layer).collect();
        assert!(layers.contains(&name::LANDLOCK), "{layers:?}");
        assert!(p.refusals[before..]
            .iter()
            .all(|r| r.reason.contains("cannot be applied to running processes")));

        let mut p = plan(POLICY);
        let before = p.refusals.len();
        let all: Vec<String> = ["fs", "syscalls", "caps"].map(String::from).into();
        let left = p.for_attach(&all);
        assert!(left.contains(&"fs".to_owned()));
        assert_eq!(p.refusals.len(), before);
        assert!(p.landlock.is_none() && !p.seccomp && !p.caps);
        assert!(p
            .layers
            .iter()
            .any(|l| l.layer == name::LANDLOCK && l.status == "not applied"));

        let mut p = plan(POLICY);
        p.for_attach(&["network".to_owned()]);
        assert!(p
            .refusals
            .iter()
            .any(|r| r.reason.contains("best effort `network`")));
    }

    /// A launched run gets a private /proc with landlock; an attached one cannot (and an
    /// inode rule under /proc, refused for a launch, is no reason to refuse an attach).
    #[test]
    fn the_private_proc_is_for_launched_runs_in_enforce_mode() {
        let deny = "version: 1\nname: t\nfs:\n  read: [/usr, /proc]\n  deny: [/proc/kallsyms]\n";
        let mut p = plan(deny);
        if !p.private_proc {
            eprintln!(
                "SKIP: landlock or a private /proc unavailable: {:?}",
                p.refusals
            );
            return;
        }
        assert!(p
            .refusals
            .iter()
            .any(|r| r.layer == name::MOUNTS
                && r.reason.starts_with("fs.deny /proc/kallsyms (line 5)")));
        p.for_attach(&["fs".into(), "syscalls".into(), "caps".into()]);
        assert!(!p.private_proc);
        assert!(
            p.refusals.iter().all(|r| r.layer != name::MOUNTS),
            "{:?}",
            p.refusals
        );
        let audit = plan("version: 1\nname: t\nmode: audit\nfs:\n  read: [/usr, /proc]\n");
        assert!(!audit.private_proc);
    }

    #[test]
    fn the_parts_are_the_policys_attach_parts() {
        let names: Vec<&str> = NOT_APPLICABLE.iter().map(|(p, _)| *p).collect();
        assert_eq!(names, policy::ATTACH_PARTS);
    }

    #[test]
    fn the_flag_replaces_the_policys_marks() {
        let policy = vec!["fs".to_owned(), "caps".to_owned()];
        assert_eq!(
            best_effort(&policy, None),
            (policy.clone(), MarkSource::Policy)
        );
        let flag = ["syscalls".to_owned()];
        assert_eq!(
            best_effort(&policy, Some(&flag)),
            (flag.to_vec(), MarkSource::Flag)
        );
        assert_eq!(
            best_effort(&policy, Some(&["none".to_owned()])),
            (Vec::new(), MarkSource::Flag)
        );
        assert_eq!(
            marks_line(&policy, MarkSource::Policy),
            "attach: best effort: fs, caps (from the policy's attach.best_effort)\n"
        );
        assert!(marks_line(&[], MarkSource::Flag)
            .starts_with("attach: best effort: none (from --best-effort"));
    }
}
