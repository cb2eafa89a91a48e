//! cgroup v1 controller leaves (memory, pids), each beneath this process's own
//! v1 cgroup in that controller's hierarchy.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::leaf::Leaf;
use super::{leaf_name, CgroupError, CgroupLayout, Limits};

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
        for c in ["memory", "pids"] {
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

    /// Creates a leaf per controller the limits need. A leaf is made for memory
    /// and pids whenever the controller exists, so usage is accounted even without a limit.
    pub fn create_leaves(&self, run_id: &str, limits: &Limits) -> Result<Vec<Leaf>, CgroupError> {
        let mut leaves: Vec<Leaf> = Vec::new();
        let result = (|| {
            for (controller, limit_file, value) in [
                ("memory", "memory.limit_in_bytes", limits.memory_bytes),
                ("pids", "pids.max", limits.pids),
            ] {
                let parent = match self.parent(controller) {
                    Ok(p) => p,
                    Err(e) if value.is_some() => return Err(e),
                    Err(_) => continue,
                };
                let leaf = Leaf::create(parent, &leaf_name(run_id), controller)?;
                leaves.push(leaf);
                if let (Some(v), Some(leaf)) = (value, leaves.last()) {
                    leaf.write(limit_file, &v.to_string())?;
                }
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
