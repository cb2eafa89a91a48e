//! Enforcement layers. Each one applies its part of the Plan, either in the parent
//! (cgroups, BPF maps) or in the child between fork and exec (caps, landlock, seccomp).
//!
//! Child-side code must not allocate or take locks: everything is prepared in the
//! parent first, and the child only makes raw syscalls on prepared data.

pub mod bpf;
pub mod caps;
pub mod cgroup;
pub mod landlock;
pub mod procfs;
pub mod protect;
pub mod seccomp;
#[cfg(test)]
mod test_support;

/// Names of layers, as written in audit records, doctor output and errors.
pub mod name {
    pub const CGROUP: &str = "cgroup";
    pub const CAPS: &str = "caps";
    pub const LANDLOCK: &str = "landlock";
    pub const SECCOMP: &str = "seccomp";
    pub const BPF: &str = "bpf";
    pub const EXEC: &str = "exec";
    pub const AGENTD: &str = "agentd";
    /// The switch to the user the command runs as.
    pub const USER: &str = "user";
    /// Inode rules enforced by BPF LSM programs.
    pub const LSM: &str = "lsm";
    /// Inode rules enforced by the tracepoint fallback (SIGKILL).
    pub const TRACEPOINT: &str = "tracepoint";
    /// The run's mount namespace: agentd's own files read-only to the run.
    pub const MOUNTS: &str = "mounts";
}
