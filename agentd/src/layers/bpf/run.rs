//! One run's registration with the shared runtime: its slot, the hook bits and global
//! programs it holds, the links of its cgroup programs, and the removal of every map
//! entry it made.

use std::path::{Path, PathBuf};

use agentd_common::{
    budget::SYSCALL_SLOTS,
    names,
    net::{NET_SLOT_BITS, NET_TABLE_SHARED},
    syscalls::{HOOK_COMPAT, HOOK_DENIALS, HOOK_FS_OBSERVE, RUN_OBSERVE_FILES},
    MAX_WATCHED_CGROUPS,
};
use aya::maps::{lpm_trie::Key, MapError};
use serde::{Deserialize, Serialize};

use super::progs::{self, HeldLink, Prog};
use super::{map_error, BpfError, BpfRuntime};

/// Run slots in use (slot 0 is never handed out, so a zeroed key never matches a run).
#[derive(Debug)]
pub struct Slots {
    used: Vec<bool>,
}

impl Default for Slots {
    fn default() -> Self {
        Self {
            used: vec![false; MAX_WATCHED_CGROUPS as usize],
        }
    }
}

impl Slots {
    fn take(&mut self) -> Option<u32> {
        let free = self.used.iter().skip(1).position(|u| !u)? + 1;
        self.used[free] = true;
        u32::try_from(free).ok()
    }

    /// Marks `slot` used (re-adoption); `false` if it already was or is out of range.
    fn claim(&mut self, slot: u32) -> bool {
        match self.used.get_mut(slot as usize) {
            Some(u) if !*u && slot != 0 => {
                *u = true;
                true
            }
            _ => false,
        }
    }

    fn free(&mut self, slot: u32) {
        if let Some(u) = self.used.get_mut(slot as usize) {
            *u = false;
        }
    }

    /// Slots in use.
    pub fn in_use(&self) -> usize {
        self.used.iter().filter(|u| **u).count()
    }
}

/// How many runs hold each `HOOK_*` bit.
#[derive(Debug, Default)]
pub struct HookRefs {
    refs: [u32; 32],
}

impl HookRefs {
    pub fn acquire(&mut self, bits: u32) {
        for (i, r) in self.refs.iter_mut().enumerate() {
            if bits & (1 << i) != 0 {
                *r += 1;
            }
        }
    }

    pub fn release(&mut self, bits: u32) {
        for (i, r) in self.refs.iter_mut().enumerate() {
            if bits & (1 << i) != 0 {
                *r = r.saturating_sub(1);
            }
        }
    }

    /// Bits some run holds.
    pub fn bits(&self) -> u32 {
        self.refs
            .iter()
            .enumerate()
            .filter(|(_, r)| **r > 0)
            .fold(0, |bits, (i, _)| bits | (1 << i))
    }
}

/// One run's registration. Hand it back to [`BpfRuntime::release`] when the run ends;
/// its [`RunBpfState`] lets a restarted daemon take it over ([`BpfRuntime::adopt`]).
#[derive(Debug)]
pub struct RunBpf {
    slot: u32,
    cgroup_id: u64,
    /// `HOOK_*` bits this run holds.
    pub(super) hooks: u32,
    /// Global programs this run holds.
    globals: Vec<&'static str>,
    /// Its slot in the syscall-budget arrays.
    pub(super) syscall_slot: Option<u32>,
    /// Links of programs attached to its cgroup.
    links: Vec<HeldLink>,
    /// Where its links are pinned (the daemon).
    pin_dir: Option<PathBuf>,
    /// The keys it put into the net rule tries, so that its release removes exactly
    /// those instead of scanning every run's entries. `None` when they are not all
    /// known: a re-adopted run, or one whose resolver adds host entries as it goes.
    pub(super) net_keys: Option<NetKeys>,
    /// The shared net rule table it points at, if any (see `net_tables`).
    pub(super) net_table: Option<u32>,
}

/// A run's keys in the net rule tries, by table.
#[derive(Default)]
pub(super) struct NetKeys(pub(super) Vec<(super::net::NetTable, Vec<NetKey4>, Vec<NetKey6>)>);

impl std::fmt::Debug for NetKeys {
    /// The counts (aya's trie keys have no `Debug`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for (table, v4, v6) in &self.0 {
            list.entry(&(table, v4.len(), v6.len()));
        }
        list.finish()
    }
}

type NetKey4 = Key<[u8; agentd_common::net::NET_KEY4_LEN]>;
type NetKey6 = Key<[u8; agentd_common::net::NET_KEY6_LEN]>;

/// What a restarted daemon needs to take a run's registration over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunBpfState {
    pub slot: u32,
    pub cgroup_id: u64,
    pub hooks: u32,
    pub globals: Vec<String>,
    pub syscall_slot: Option<u32>,
    pub pin_dir: Option<PathBuf>,
}

impl RunBpf {
    pub fn slot(&self) -> u32 {
        self.slot
    }

    pub fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }

    /// The registration as a restarted daemon needs it.
    pub fn state(&self) -> RunBpfState {
        RunBpfState {
            slot: self.slot,
            cgroup_id: self.cgroup_id,
            hooks: self.hooks,
            globals: self.globals.iter().map(|g| (*g).to_owned()).collect(),
            syscall_slot: self.syscall_slot,
            pin_dir: self.pin_dir.clone(),
        }
    }
}

/// The global program of the object called `name`.
fn global_by_name(name: &str) -> Option<Prog> {
    progs::TRACKERS
        .iter()
        .chain([progs::SYS_EXIT, progs::LISTEN_EXIT, progs::TP_EXEC_CHECK].iter())
        .chain(progs::LSM_EXEC.iter())
        .chain(progs::LSM_UNIX.iter())
        .copied()
        .chain(progs::lsm_fs_rules())
        .chain(progs::denial_exits())
        .find(|p| p.name == name)
}

impl BpfRuntime {
    /// Registers the run whose processes live in the v2 cgroup `cgroup_id` (the inode
    /// number of its directory, which is what `bpf_get_current_cgroup_id()` returns): a
    /// slot, the exec/exit trackers and the denial tracker. `name` (the run id) names its
    /// pin directory when this runtime pins.
    pub fn register(&mut self, cgroup_id: u64, name: &str) -> Result<RunBpf, BpfError> {
        let slot = self.slots.take().ok_or(BpfError::NoSlot {
            max: MAX_WATCHED_CGROUPS - 1,
        })?;
        let pin_dir = match &self.pins {
            Some(p) => match p.run_dir(name) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.slots.free(slot);
                    return Err(e);
                }
            },
            None => None,
        };
        let mut run = RunBpf {
            slot,
            cgroup_id,
            hooks: 0,
            globals: Vec::new(),
            syscall_slot: None,
            links: Vec::new(),
            pin_dir,
            net_keys: Some(NetKeys::default()),
            net_table: None,
        };
        if let Err(e) = self.start_watching(&mut run) {
            self.release(run, false);
            return Err(e);
        }
        Ok(run)
    }

    fn start_watching(&mut self, run: &mut RunBpf) -> Result<(), BpfError> {
        let (cgroup_id, slot) = (run.cgroup_id, run.slot);
        self.maps
            .run_cgroups
            .insert(cgroup_id, slot, 0)
            .map_err(|error| {
                map_error(
                    format!("insert cgroup {cgroup_id} (run slot {slot}) into"),
                    names::MAP_RUN_CGROUPS,
                    error,
                )
            })?;
        for p in progs::TRACKERS {
            self.acquire_global(run, &p)?;
        }
        self.enable_syscall_hooks(run, HOOK_DENIALS, "the denial tracker")
    }

    /// Reports `run`'s successful file syscalls (audit and learn modes): marks its
    /// `RUN_CGROUPS` entry [`RUN_OBSERVE_FILES`] and turns on [`HOOK_FS_OBSERVE`]. The
    /// mark lives in the (pinned) map entry, so a re-adopted run keeps it.
    pub fn observe_files(&mut self, run: &mut RunBpf) -> Result<(), BpfError> {
        let (cgroup_id, slot) = (run.cgroup_id, run.slot);
        self.maps
            .run_cgroups
            .insert(cgroup_id, slot | RUN_OBSERVE_FILES, 0)
            .map_err(|error| {
                map_error(
                    format!("mark cgroup {cgroup_id} (run slot {slot}) observed in"),
                    names::MAP_RUN_CGROUPS,
                    error,
                )
            })?;
        self.enable_syscall_hooks(run, HOOK_FS_OBSERVE, "the file observer")
    }

    /// Reports (and, unless the run is observed as in audit mode, kills) `run`'s
    /// non-native syscalls: for runs without agentd's seccomp filter, whose int 0x80 and
    /// x32 numbers the other hooks would otherwise misread as native ones.
    pub fn watch_compat_calls(&mut self, run: &mut RunBpf) -> Result<(), BpfError> {
        self.enable_syscall_hooks(run, HOOK_COMPAT, "the non-native syscall check")
    }

    /// Takes over a registration an earlier daemon made (its maps and links are pinned).
    pub fn adopt(&mut self, state: &RunBpfState) -> Result<RunBpf, BpfError> {
        if !self.slots.claim(state.slot) {
            return Err(BpfError::SlotTaken { slot: state.slot });
        }
        let mut run = RunBpf {
            slot: state.slot,
            cgroup_id: state.cgroup_id,
            hooks: 0,
            globals: Vec::new(),
            syscall_slot: state.syscall_slot,
            links: Vec::new(),
            pin_dir: state.pin_dir.clone(),
            net_keys: None,
            net_table: None,
        };
        // Its net rules may be in a shared table, which it holds again.
        if let Ok(entry) = self.maps.net_runs.get(&state.slot, 0) {
            if entry.table >= NET_TABLE_SHARED {
                self.net_tables.adopt(entry.table);
                run.net_table = Some(entry.table);
            }
        }
        for name in &state.globals {
            let Some(p) = global_by_name(name) else {
                self.release(run, true);
                return Err(BpfError::MissingProgram {
                    name: "a global program named in the run's state",
                });
            };
            if let Err(e) = self.acquire_global(&mut run, &p) {
                self.release(run, true);
                return Err(e);
            }
        }
        if let Err(e) = self.enable_syscall_hooks(&mut run, state.hooks, "re-adopted hooks") {
            self.release(run, true);
            return Err(e);
        }
        Ok(run)
    }

    /// Attaches the global program `p` for `run` (once per run).
    pub(super) fn acquire_global(&mut self, run: &mut RunBpf, p: &Prog) -> Result<(), BpfError> {
        if run.globals.contains(&p.name) {
            return Ok(());
        }
        let pin_dir = self.pins.as_ref().map(|d| d.links_dir());
        self.globals
            .acquire(&mut self.ebpf, self.btf, p, pin_dir.as_deref())?;
        run.globals.push(p.name);
        Ok(())
    }

    /// Attaches the cgroup program `p` to `run`'s v2 cgroup directory `dir`.
    pub(super) fn attach_to_run(
        &mut self,
        run: &mut RunBpf,
        p: &Prog,
        dir: &Path,
        cgroup: &std::fs::File,
    ) -> Result<(), BpfError> {
        let link = progs::attach_cgroup(&mut self.ebpf, self.btf, p, dir, cgroup)?;
        self.hold_link(run, link, p.name)?;
        self.keep_attached(p);
        Ok(())
    }

    /// Keeps `link` for `run`, pinned in its pin directory when this runtime pins.
    pub(super) fn hold_link(
        &mut self,
        run: &mut RunBpf,
        link: HeldLink,
        name: &str,
    ) -> Result<(), BpfError> {
        let link = match &run.pin_dir {
            Some(dir) => link.pin(&dir.join(name))?,
            None => link,
        };
        run.links.push(link);
        Ok(())
    }

    /// Ends `run`'s registration: detaches its cgroup programs, removes every map entry
    /// keyed by its slot or cgroup id, and drops its hook bits and global programs (the
    /// last run to hold one detaches it). `keep_taint` leaves its `RUN_TAINT` entry: a
    /// tainted run whose sockets could not be aborted keeps its packets dropped for as
    /// long as its cgroup exists. Missing entries are fine; other failures are logged.
    pub fn release(&mut self, run: RunBpf, keep_taint: bool) {
        let started = std::time::Instant::now();
        let RunBpf {
            slot,
            cgroup_id,
            hooks,
            globals,
            syscall_slot,
            links,
            pin_dir,
            net_keys,
            net_table,
        } = run;
        for link in links {
            link.release();
        }
        if let Some(dir) = &pin_dir {
            remove_pin_dir(dir);
        }
        self.clear_entries(slot, cgroup_id, syscall_slot, keep_taint, net_keys);
        if let Some(id) = net_table {
            let doomed = self.net_tables.release(id, std::time::Instant::now());
            self.remove_net_tables(doomed);
        }
        self.hooks.release(hooks);
        if let Err(e) = self.write_hooks() {
            tracing::warn!("releasing run slot {slot}: {e}");
        }
        self.globals.release(&globals);
        self.slots.free(slot);
        tracing::debug!("run slot {slot} released in {:?}", started.elapsed());
    }

    /// Removes every map entry of run `slot` / `cgroup_id`.
    fn clear_entries(
        &mut self,
        slot: u32,
        cgroup_id: u64,
        syscall_slot: Option<u32>,
        keep_taint: bool,
        net_keys: Option<NetKeys>,
    ) {
        let m = &mut self.maps;
        let ok = |what: &str, r: Result<(), MapError>| match r {
            Err(e) if !super::maps::is_gone(&e) => {
                tracing::warn!("run slot {slot}: remove from {what}: {e}");
            }
            _ => {}
        };
        ok("RUN_CGROUPS", m.run_cgroups.remove(&cgroup_id));
        ok("NET_RUNS", m.net_runs.remove(&slot));
        ok("NET_DNS", m.net_dns.remove(&slot));
        ok("UNIX_RUNS", m.unix_runs.remove(&slot));
        ok("BUDGET_RUNS", m.budget_runs.remove(&cgroup_id));
        ok(
            "TAINT_EGRESS_DROPS",
            m.taint_egress_drops.remove(&cgroup_id),
        );
        if !keep_taint {
            ok("RUN_TAINT", m.run_taint.remove(&cgroup_id));
        }
        if let Some(s) = syscall_slot.filter(|s| *s < SYSCALL_SLOTS) {
            ok(
                "BUDGET_SYSCALL_CGROUPS",
                m.budget_syscall_cgroups.set(s, 0, 0),
            );
        }
        self.clear_net_keys(slot.to_be_bytes(), net_keys);
        let m = &mut self.maps;
        let prefix = slot.to_be_bytes();
        macro_rules! clear_trie {
            ($map:expr, $what:expr) => {{
                let r = super::maps::trie_remove_where(&$map, |k| {
                    k.prefix_len() >= NET_SLOT_BITS && k.data()[..4] == prefix
                });
                ok($what, r.map(|_| ()));
            }};
        }
        clear_trie!(m.unix_prefixes, "UNIX_PREFIXES");
        macro_rules! clear_by_slot {
            ($map:expr, $what:expr) => {{
                let r = super::maps::hash_remove_where(&$map, |k| k.run_slot == slot);
                ok($what, r.map(|_| ()));
            }};
        }
        clear_by_slot!(m.fs_rules, "FS_RULES");
        clear_by_slot!(m.exec_rules, "EXEC_RULES");
        clear_by_slot!(m.unix_inodes, "UNIX_INODES");
        clear_by_slot!(m.unix_named, "UNIX_NAMED");
    }

    #[cfg(test)]
    /// Map entries keyed by `slot` or `cgroup_id`, counted in every map (tests and
    /// `agentd status`: a released run must leave none).
    pub fn entries_of(&self, slot: u32, cgroup_id: u64) -> usize {
        let m = &self.maps;
        let prefix = slot.to_be_bytes();
        // The entries of the shared rule table it points at count as its own.
        let shared = m
            .net_runs
            .get(&slot, 0)
            .ok()
            .map(|e| e.table)
            .filter(|t| *t >= NET_TABLE_SHARED)
            .map(u32::to_be_bytes);
        let by_cgroup = [
            m.run_cgroups.get(&cgroup_id, 0).is_ok(),
            m.budget_runs.get(&cgroup_id, 0).is_ok(),
            m.taint_egress_drops.get(&cgroup_id, 0).is_ok(),
            m.run_taint.get(&cgroup_id, 0).is_ok(),
            m.net_runs.get(&slot, 0).is_ok(),
            m.net_dns.get(&slot, 0).is_ok(),
            m.unix_runs.get(&slot, 0).is_ok(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        macro_rules! trie {
            ($map:expr) => {
                $map.keys()
                    .filter_map(Result::ok)
                    .filter(|k| {
                        k.prefix_len() >= NET_SLOT_BITS
                            && (k.data()[..4] == prefix
                                || Some(&k.data()[..4]) == shared.as_ref().map(|s| &s[..]))
                    })
                    .count()
            };
        }
        macro_rules! by_slot {
            ($map:expr) => {
                $map.keys()
                    .filter_map(Result::ok)
                    .filter(|k| k.run_slot == slot)
                    .count()
            };
        }
        let syscall = (0..SYSCALL_SLOTS)
            .filter(|s| m.budget_syscall_cgroups.get(s, 0).ok() == Some(cgroup_id))
            .count();
        by_cgroup
            + syscall
            + trie!(m.net_allow4)
            + trie!(m.net_allow6)
            + trie!(m.net_bind4)
            + trie!(m.net_bind6)
            + trie!(m.net_taint4)
            + trie!(m.net_taint6)
            + trie!(m.unix_prefixes)
            + by_slot!(m.fs_rules)
            + by_slot!(m.exec_rules)
            + by_slot!(m.unix_inodes)
            + by_slot!(m.unix_named)
    }
}

/// Removes a run's pin directory and the links pinned in it (a re-adopted run's links
/// were pinned by an earlier process; removing the pins detaches them).
pub(super) fn remove_pin_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!("unpin {}: {err}", e.path().display());
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("remove {}: {e}", dir.display()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slots_start_at_one_and_are_reused() {
        let mut s = Slots::default();
        assert_eq!(s.take(), Some(1));
        assert_eq!(s.take(), Some(2));
        s.free(1);
        assert_eq!(s.take(), Some(1));
        assert!(!s.claim(2), "already used");
        assert!(!s.claim(0), "slot 0 is never a run's");
        assert!(s.claim(7));
        assert_eq!(s.in_use(), 3);
    }

    #[test]
    fn hook_bits_stay_on_while_any_run_holds_them() {
        let mut h = HookRefs::default();
        h.acquire(0b011);
        h.acquire(0b110);
        assert_eq!(h.bits(), 0b111);
        h.release(0b011);
        assert_eq!(h.bits(), 0b110);
        h.release(0b110);
        assert_eq!(h.bits(), 0);
        h.release(0b1); // never below zero
        assert_eq!(h.bits(), 0);
    }
}
