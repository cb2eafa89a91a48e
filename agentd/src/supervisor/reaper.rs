//! agentd (standalone `agentd run` and the daemon alike) is its runs' child subreaper: a
//! process of a run whose parent dies (a double fork, a daemon that `setsid`s) is
//! reparented to agentd, not to init, and agentd reaps it, so when a run ends no process
//! of it exists, not even as a zombie.
//!
//! The standalone CLI has one run and reaps every child left once it is torn down. The
//! daemon has many runs and children of its own (the commands' leaders, each waited for
//! by its run's supervisor), so it reaps only zombies whose cgroup is a run leaf, never a
//! leader: on every SIGCHLD ([`sweep_run_zombies`]), and at each run's teardown
//! ([`reap_run`]), where it also waits for those still exiting.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{setup_err, SetupError};
use crate::layers::name;

/// `PR_SET_CHILD_SUBREAPER` on this process (fail closed: the run does not start).
pub fn become_subreaper() -> Result<(), SetupError> {
    // SAFETY: prctl with integer arguments only; it changes this process's attribute.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(setup_err(
            name::AGENTD,
            format!(
                "PR_SET_CHILD_SUBREAPER: {}",
                std::io::Error::last_os_error()
            ),
        ));
    }
    Ok(())
}

/// Reaps every child left (the run's orphans, dead since teardown killed its cgroup),
/// waiting up to `within` for those still exiting. Returns how many were reaped and
/// whether children are still left.
pub fn reap_orphans(within: Duration) -> (usize, bool) {
    let deadline = Instant::now() + within;
    let mut reaped = 0;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= deadline {
                    return (reaped, true);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(_) => reaped += 1,
            Err(Errno::EINTR) => {}
            // ECHILD: none left.
            Err(_) => return (reaped, false),
        }
    }
}

/// The pids of the runs' leaders (each waited for by its own supervisor, which needs its
/// exit status): the sweeps never reap them.
static LEADERS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// The leader set, locked. `launch::fork_paused` holds it across `fork` and adds the child
/// before letting go, so that no sweep can see a leader it does not know yet.
pub fn leaders() -> MutexGuard<'static, BTreeSet<i32>> {
    LEADERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The leader `pid` was reaped by its supervisor (or its run is over).
pub fn forget_leader(pid: Pid) {
    leaders().remove(&pid.as_raw());
}

/// This process's children, from every thread's `/proc/self/task/TID/children`
/// (CONFIG_PROC_CHILDREN); without it, a scan of `/proc` for our pid as the parent.
fn children() -> Vec<i32> {
    let mut pids = Vec::new();
    let mut listed = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                listed = true;
                pids.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    if !listed {
        let me = std::process::id() as i32;
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                    continue;
                };
                if stat_of(pid).is_some_and(|(_, ppid)| ppid == me) {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

/// A process's state letter and parent pid, from `/proc/PID/stat`.
fn stat_of(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow the last `)`.
    let (_, rest) = s.rsplit_once(") ")?;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The run leaf a process is (or, for a zombie, was) in: a zombie keeps its cgroups in
/// `/proc/PID/cgroup`, with ` (deleted)` once the leaf is removed.
fn run_leaf_of(pid: i32) -> Option<String> {
    run_leaf_in(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// The run leaf named in a `/proc/PID/cgroup` text, in any hierarchy.
fn run_leaf_in(proc_cgroup: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        let leaf = path.rsplit('/').next()?;
        crate::layers::cgroup::gc::run_id_of(leaf).map(|_| leaf.to_owned())
    })
}

/// What [`reap_if_dead`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reap {
    /// It was a zombie, and this call reaped it.
    Reaped,
    /// It was no longer this process's child (someone else reaped it).
    Gone,
    /// It is still running (or exiting).
    Alive,
}

/// Reaps `pid` if it is a zombie now.
fn reap_if_dead(pid: i32) -> Reap {
    match waitpid(
        Pid::from_raw(pid),
        Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
    ) {
        Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => Reap::Reaped,
        Err(Errno::ECHILD) => Reap::Gone,
        _ => Reap::Alive,
    }
}

/// Reaps the zombies among this process's children that belong to a run, leaders
/// excepted (the daemon, on SIGCHLD). Children outside any run leaf (commands agentd
/// itself starts) are left to whoever waits for them. Returns how many were reaped.
pub fn sweep_run_zombies() -> usize {
    let leaders = leaders();
    children()
        .into_iter()
        .filter(|pid| !leaders.contains(pid))
        .filter(|pid| stat_of(*pid).is_some_and(|(state, _)| state == 'Z'))
        .filter(|pid| run_leaf_of(*pid).is_some())
        .filter(|pid| reap_if_dead(*pid) == Reap::Reaped)
        .count()
}

/// After the run whose cgroup leaf is `leaf` was killed: reaps every child of this
/// process that was in it (orphans the run left to agentd), leaders excepted, waiting up
/// to `within` for those still exiting. A child that exits reparents its own children to
/// agentd before it becomes a zombie, so once every child of the run that agentd has is
/// reaped, none is left to come. Returns how many were reaped and whether some are left.
pub fn reap_run(leaf: &str, within: Duration) -> (usize, bool) {
    let deadline = Instant::now() + within;
    let mut reaped = 0;
    loop {
        let mut left = false;
        {
            let leaders = leaders();
            for pid in children() {
                if leaders.contains(&pid) || run_leaf_of(pid).as_deref() != Some(leaf) {
                    continue;
                }
                match reap_if_dead(pid) {
                    Reap::Reaped => reaped += 1,
                    Reap::Gone => {}
                    Reap::Alive => left = true,
                }
            }
        }
        if !left {
            return (reaped, false);
        }
        if Instant::now() >= deadline {
            return (reaped, true);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_fields_follow_the_last_parenthesis() {
        let me = std::process::id() as i32;
        let (state, ppid) = stat_of(me).unwrap_or_else(|| panic!("no stat for {me}"));
        assert!(matches!(state, 'R' | 'S'), "{state}");
        assert_eq!(ppid, nix::unistd::getppid().as_raw());
    }

    #[test]
    fn the_run_leaf_is_found_in_any_hierarchy_and_after_removal() {
        let v2 = "0::/sys.slice/agentd-0123456789ab (deleted)\n";
        assert_eq!(run_leaf_in(v2).as_deref(), Some("agentd-0123456789ab"));
        let hybrid = "4:memory:/process_api/x/agentd-aaaaaaaaaaaa\n0::/\n";
        assert_eq!(run_leaf_in(hybrid).as_deref(), Some("agentd-aaaaaaaaaaaa"));
        assert_eq!(
            run_leaf_in("4:memory:/process_api/x\n0::/agentd.service\n"),
            None
        );
    }
}
