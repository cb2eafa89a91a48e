//! Pure cgroup2 hosts: one leaf holds both the identity and the limits.

use std::path::PathBuf;

use super::leaf::{write_file, Leaf, RunCgroups};
use super::{
    cpu_quota_us, leaf_name, CgroupError, CgroupLayout, CgroupManager, CgroupMode, Limits,
    CPU_PERIOD_US,
};

#[derive(Debug, Clone)]
pub struct V2Manager {
    /// The calling process's own v2 cgroup; run leaves are created beneath it.
    parent: PathBuf,
}

impl V2Manager {
    pub fn new(parent: PathBuf) -> Self {
        Self { parent }
    }

    pub fn from_layout(layout: &CgroupLayout) -> Result<Self, CgroupError> {
        Ok(Self::new(layout.own_v2_dir()?))
    }

    /// Controllers the parent delegates to its children.
    fn delegated(&self) -> Result<Vec<String>, CgroupError> {
        let path = self.parent.join("cgroup.subtree_control");
        Ok(std::fs::read_to_string(&path)
            .map_err(|source| CgroupError::Read { path, source })?
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    }

    fn require(&self, controller: &'static str) -> Result<(), CgroupError> {
        let delegated = self.delegated()?;
        if delegated.iter().any(|c| c == controller) {
            return Ok(());
        }
        // Enabling it here would be a change to a cgroup we did not create.
        Err(CgroupError::MissingController {
            controller,
            why: format!(
                "{} does not delegate it in cgroup.subtree_control",
                self.parent.display()
            ),
        })
    }

    /// Creates just the identity leaf (used by the hybrid backend too).
    pub fn create_leaf(&self, run_id: &str) -> Result<Leaf, CgroupError> {
        Leaf::create(&self.parent, &leaf_name(run_id), "cgroup2")
    }
}

impl CgroupManager for V2Manager {
    fn mode(&self) -> CgroupMode {
        CgroupMode::V2
    }

    fn create_run(&self, run_id: &str, limits: &Limits) -> Result<RunCgroups, CgroupError> {
        if limits.memory_bytes.is_some() || limits.memory_high_bytes.is_some() {
            self.require("memory")?;
        }
        if limits.cpu_quota_percent.is_some() {
            self.require("cpu")?;
        }
        if limits.pids.is_some() {
            self.require("pids")?;
        }
        let run = RunCgroups::new(self.create_leaf(run_id)?, Vec::new())?;
        let leaf = &run.identity().path;
        if let Some(bytes) = limits.memory_bytes {
            write_file(&leaf.join("memory.max"), &bytes.to_string())?;
            // No swap: the limit must mean what it says.
            let _ = write_file(&leaf.join("memory.swap.max"), "0");
        }
        if let Some(pids) = limits.pids {
            write_file(&leaf.join("pids.max"), &pids.to_string())?;
        }
        if let Some(bytes) = limits.memory_high_bytes {
            write_file(&leaf.join("memory.high"), &bytes.to_string())?;
        }
        if let Some(percent) = limits.cpu_quota_percent {
            write_file(
                &leaf.join("cpu.max"),
                &format!("{} {CPU_PERIOD_US}", cpu_quota_us(percent)),
            )?;
        }
        Ok(run)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn refuses_limits_the_parent_does_not_delegate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.subtree_control"), "cpu\n").unwrap();
        let m = V2Manager::new(dir.path().to_path_buf());
        let err = m
            .create_run(
                "t1",
                &Limits {
                    memory_bytes: Some(1 << 20),
                    ..Limits::default()
                },
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("controller `memory` is not available"),
            "{err}"
        );
        assert!(!dir.path().join("agentd-t1").exists());
    }
}
