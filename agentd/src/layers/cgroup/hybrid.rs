//! Hybrid hosts: a v2 leaf for identity (BPF), v1 leaves for the controllers.

use super::{
    CgroupError, CgroupLayout, CgroupManager, CgroupMode, Limits, RunCgroups, V1Manager, V2Manager,
};

#[derive(Debug, Clone)]
pub struct HybridManager {
    v2: V2Manager,
    v1: V1Manager,
}

impl HybridManager {
    pub fn new(v2: V2Manager, v1: V1Manager) -> Self {
        Self { v2, v1 }
    }

    pub fn from_layout(layout: &CgroupLayout) -> Result<Self, CgroupError> {
        Ok(Self::new(
            V2Manager::from_layout(layout)?,
            V1Manager::from_layout(layout)?,
        ))
    }
}

impl CgroupManager for HybridManager {
    fn mode(&self) -> CgroupMode {
        CgroupMode::Hybrid
    }

    fn create_run(&self, run_id: &str, limits: &Limits) -> Result<RunCgroups, CgroupError> {
        let identity = self.v2.create_leaf(run_id)?;
        let controllers = match self.v1.create_leaves(run_id, limits) {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir(&identity.path);
                return Err(e);
            }
        };
        RunCgroups::new(identity, controllers)
    }
}
