//! cgroup v1 controller leaves (memory, pids, cpu, cpuacct), each beneath this
//! process's own v1 cgroup in that controller's hierarchy. Co-mounted controllers
//! (e.g. `cpu,cpuacct`) share one leaf.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::leaf::Leaf;
use super::{cpu_quota_us, leaf_name, CgroupError, CgroupLayout, Limits, CPU_PERIOD_US};

#[derive(Debug, Clone)]
pub struct V1Manager {
    /// controller → this process's own cgroup directory in that hierarchy.
    parents: BTreeMap<&'static str, PathBuf>,
}

impl V1Manager {
    pub fn new(parents: BTreeMap<&'static str, PathBuf>) -> Self {
        Self { parents }
    }

    pub fn from_layout(layout: &CgroupLayout) -> Result<Self, CgroupError> {
        let mut parents = BTreeMap::new();
        for c in ["memory", "pids", "cpu", "cpuacct"] {
            if let Ok(dir) = layout.own_v1_dir(c) {
                parents.insert(c, dir);
            }
        }
        Ok(Self::new(parents))
    }

    fn parent(&self, controller: &'static str) -> Result<&PathBuf, CgroupError> {
        self.parents
            .get(controller)
            .ok_or_else(|| CgroupError::MissingController {
                controller,
                why: "no v1 hierarchy has it mounted".into(),
            })
    }

    /// Creates a leaf per controller the limits need. A leaf is made for memory, pids and
    /// cpuacct whenever the controller exists, so usage is accounted even without a limit;
    /// a cpu leaf only for `cpu_quota`.
    pub fn create_leaves(&self, run_id: &str, limits: &Limits) -> Result<Vec<Leaf>, CgroupError> {
        let mut leaves: Vec<Leaf> = Vec::new();
        let result = (|| {
            let wanted = [
                (
                    "memory",
                    limits.memory_bytes.is_some() || limits.memory_high_bytes.is_some(),
                    true,
                ),
                ("pids", limits.pids.is_some(), true),
                ("cpuacct", false, true),
                ("cpu", limits.cpu_quota_percent.is_some(), false),
            ];
            for (controller, required, always) in wanted {
                let parent = match self.parent(controller) {
                    Ok(p) => p,
                    Err(e) if required => return Err(e),
                    Err(_) => continue,
                };
                if !required && !always {
                    continue;
                }
                // A co-mounted hierarchy already has this run's leaf.
                if let Some(leaf) = leaves
                    .iter_mut()
                    .find(|l| l.path.parent() == Some(parent.as_path()))
                {
                    leaf.hierarchy = format!("{},{controller}", leaf.hierarchy);
                    continue;
                }
                leaves.push(Leaf::create(parent, &leaf_name(run_id), controller)?);
            }
            for leaf in &leaves {
                apply_limits(leaf, limits)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            for leaf in leaves.iter().rev() {
                let _ = std::fs::remove_dir(&leaf.path);
            }
            return Err(e);
        }
        Ok(leaves)
    }
}

/// Writes the limits that belong to the controllers `leaf` holds.
fn apply_limits(leaf: &Leaf, limits: &Limits) -> Result<(), CgroupError> {
    if leaf.has("memory") {
        if let Some(bytes) = limits.memory_bytes {
            leaf.write("memory.limit_in_bytes", &bytes.to_string())?;
            // With swap accounting, memory+swap gets the same limit: no escape into swap.
            if leaf.path.join("memory.memsw.limit_in_bytes").exists() {
                leaf.write("memory.memsw.limit_in_bytes", &bytes.to_string())?;
            }
        }
        if let Some(bytes) = limits.memory_high_bytes {
            leaf.write("memory.soft_limit_in_bytes", &bytes.to_string())?;
        }
    }
    if leaf.has("pids") {
        if let Some(pids) = limits.pids {
            leaf.write("pids.max", &pids.to_string())?;
        }
    }
    if leaf.has("cpu") {
        if let Some(percent) = limits.cpu_quota_percent {
            leaf.write("cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
            leaf.write("cpu.cfs_quota_us", &cpu_quota_us(percent).to_string())?;
        }
    }
    Ok(())
}
