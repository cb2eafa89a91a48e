//! Net rule tables shared by the runs whose policies have the same rules.
//!
//! A 1,000-rule allow list costs a launch about 1 ms to compile, 2–3 ms to insert into
//! the tries and 1.3 ms to delete at its end (measured, 2026-12-07). Runs of one policy
//! (an agent started again and again) write the same entries each time, so the entries
//! are keyed by a rule table instead of by the run: every run whose rules are equal, and
//! that has no resolver, points its `NET_RUNS` entry at one shared table
//! ([`NET_TABLE_SHARED`] and above). A run with a resolver keeps a table of its own,
//! numbered by its slot, because the resolver adds that run's host entries as names
//! resolve.
//!
//! The last run of a table going leaves it idle: with a linger (the daemon's
//! `programs_linger_ms`) it stays for a launch of the same rules soon after, and goes
//! when the linger has passed, when more than [`MAX_IDLE`] tables are idle, or when the
//! tries are too full for a new table. Without a linger (a standalone run) it goes with
//! its run. A table is only ever shared by equal rules: a hash finds the candidates,
//! and the rules themselves are compared.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use agentd_common::net::NET_TABLE_SHARED;

use super::net::{AddrRule, NetRequest};
use super::run::NetKeys;

/// Idle tables kept at most; the oldest goes first.
pub(super) const MAX_IDLE: usize = 8;

/// What makes two runs' tables equal: their connect, bind and after-taint rules, in
/// order (a rule's index in its list is in the table, for the audit records).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Rules {
    connect: Option<Vec<AddrRule>>,
    bind: Option<Vec<AddrRule>>,
    after_taint: Vec<AddrRule>,
}

impl Rules {
    pub fn of(request: &NetRequest) -> Self {
        Self {
            connect: request.connect.clone(),
            bind: request.bind.clone(),
            after_taint: request.after_taint.clone(),
        }
    }

    fn matches(&self, request: &NetRequest) -> bool {
        self.connect == request.connect
            && self.bind == request.bind
            && self.after_taint == request.after_taint
    }
}

/// The hash of `request`'s [`Rules`], without copying them.
fn hash_of(request: &NetRequest) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    request.connect.hash(&mut h);
    request.bind.hash(&mut h);
    request.after_taint.hash(&mut h);
    h.finish()
}

/// One shared table.
struct Table {
    /// The rules it holds; `None` for a table an earlier daemon wrote, whose rules are
    /// not known, so no new run shares it.
    rules: Option<Rules>,
    /// Runs pointing at it.
    refs: usize,
    /// The keys it holds; `None` when not known (an earlier daemon's): removed by a
    /// scan for its number.
    keys: Option<NetKeys>,
    /// When its last run went.
    idle_since: Option<Instant>,
}

/// A table to remove from the tries: its number, and its keys when known.
pub(super) struct Doomed {
    pub id: u32,
    pub keys: Option<NetKeys>,
}

/// The shared tables of one runtime.
#[derive(Default)]
pub(super) struct NetTables {
    tables: HashMap<u32, Table>,
    /// [`hash_of`] the rules → the tables with rules of that hash.
    by_hash: HashMap<u64, Vec<u32>>,
    next: u32,
    linger: Duration,
}

impl NetTables {
    pub fn set_linger(&mut self, linger: Duration) {
        self.linger = linger;
    }

    /// The table holding exactly `request`'s rules, now held by one more run.
    pub fn share(&mut self, request: &NetRequest) -> Option<u32> {
        let candidates = self.by_hash.get(&hash_of(request))?;
        let tables = &self.tables;
        let id = *candidates.iter().find(|id| {
            tables
                .get(id)
                .and_then(|t| t.rules.as_ref())
                .is_some_and(|r| r.matches(request))
        })?;
        let t = self.tables.get_mut(&id)?;
        t.refs += 1;
        t.idle_since = None;
        Some(id)
    }

    /// A number no table has.
    pub fn free_id(&mut self) -> Option<u32> {
        let span = u32::MAX - NET_TABLE_SHARED;
        (0..span).find_map(|_| {
            let id = NET_TABLE_SHARED + self.next % span;
            self.next = self.next.wrapping_add(1);
            (!self.tables.contains_key(&id)).then_some(id)
        })
    }

    /// A new table `id` with `request`'s rules, held by its first run.
    pub fn add(&mut self, id: u32, request: &NetRequest, keys: NetKeys) {
        self.by_hash.entry(hash_of(request)).or_default().push(id);
        self.tables.insert(
            id,
            Table {
                rules: Some(Rules::of(request)),
                refs: 1,
                keys: Some(keys),
                idle_since: None,
            },
        );
    }

    /// A re-adopted run points at table `id`, which an earlier daemon wrote.
    pub fn adopt(&mut self, id: u32) {
        let t = self.tables.entry(id).or_insert(Table {
            rules: None,
            refs: 0,
            keys: None,
            idle_since: None,
        });
        t.refs += 1;
        t.idle_since = None;
    }

    /// Whether table `id` is known (held or idle).
    pub fn knows(&self, id: u32) -> bool {
        self.tables.contains_key(&id)
    }

    /// A run pointing at `id` went. Returns the tables to remove now: this one when it
    /// is idle and cannot linger, and the oldest idle ones past [`MAX_IDLE`].
    pub fn release(&mut self, id: u32, now: Instant) -> Vec<Doomed> {
        let Some(t) = self.tables.get_mut(&id) else {
            return Vec::new();
        };
        t.refs = t.refs.saturating_sub(1);
        if t.refs > 0 {
            return Vec::new();
        }
        if self.linger.is_zero() || t.rules.is_none() {
            return self.remove(id).into_iter().collect();
        }
        t.idle_since = Some(now);
        let mut idle: Vec<(Instant, u32)> = self
            .tables
            .iter()
            .filter_map(|(id, t)| t.idle_since.map(|s| (s, *id)))
            .collect();
        if idle.len() <= MAX_IDLE {
            return Vec::new();
        }
        idle.sort_unstable();
        let excess = idle.len() - MAX_IDLE;
        idle.into_iter()
            .take(excess)
            .filter_map(|(_, id)| self.remove(id))
            .collect()
    }

    /// The idle tables whose linger has passed by `now` (`all`: every idle one).
    pub fn reap(&mut self, now: Instant, all: bool) -> Vec<Doomed> {
        let linger = self.linger;
        let due: Vec<u32> = self
            .tables
            .iter()
            .filter_map(|(id, t)| {
                let since = t.idle_since?;
                (all || now.duration_since(since) >= linger).then_some(*id)
            })
            .collect();
        due.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Tables no run holds.
    pub fn idle(&self) -> usize {
        self.tables.values().filter(|t| t.refs == 0).count()
    }

    fn remove(&mut self, id: u32) -> Option<Doomed> {
        let t = self.tables.remove(&id)?;
        self.by_hash.retain(|_, ids| {
            ids.retain(|i| *i != id);
            !ids.is_empty()
        });
        Some(Doomed { id, keys: t.keys })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn keys() -> NetKeys {
        NetKeys::default()
    }

    /// A request allowing `port` on 127.0.0.1.
    fn rules(port: u16) -> NetRequest {
        NetRequest {
            connect: Some(vec![AddrRule {
                addr: "127.0.0.1".parse().unwrap(),
                prefix: 32,
                ports: (port, port),
                protos: 1,
                written: format!("127.0.0.1:{port}/tcp"),
            }]),
            ..NetRequest::default()
        }
    }

    #[test]
    fn equal_rules_share_one_table_until_its_last_run_goes() {
        let mut t = NetTables::default();
        let id = t.free_id().unwrap();
        assert!(id >= NET_TABLE_SHARED);
        t.add(id, &rules(1), keys());
        assert_eq!(t.share(&rules(1)), Some(id));
        assert_eq!(t.share(&rules(2)), None, "other rules share nothing");
        let now = Instant::now();
        assert!(t.release(id, now).is_empty(), "one run still holds it");
        let gone = t.release(id, now);
        assert_eq!(gone.len(), 1, "no linger: it goes with its last run");
        assert_eq!(gone[0].id, id);
        assert_eq!(t.share(&rules(1)), None);
        assert!(!t.knows(id));
    }

    #[test]
    fn an_idle_table_lingers_is_taken_again_and_then_goes() {
        let mut t = NetTables::default();
        t.set_linger(Duration::from_millis(100));
        let id = t.free_id().unwrap();
        t.add(id, &rules(1), keys());
        let start = Instant::now();
        assert!(t.release(id, start).is_empty(), "it lingers");
        assert_eq!(t.idle(), 1);
        assert!(t.reap(start + Duration::from_millis(50), false).is_empty());
        assert_eq!(
            t.share(&rules(1)),
            Some(id),
            "a launch soon after takes it as it is"
        );
        assert_eq!(t.idle(), 0);
        assert!(t.release(id, start).is_empty());
        let gone = t.reap(start + Duration::from_millis(100), false);
        assert_eq!(gone.len(), 1);
        assert_eq!(t.share(&rules(1)), None);
    }

    #[test]
    fn at_most_max_idle_tables_stay_and_the_oldest_goes_first() {
        let mut t = NetTables::default();
        t.set_linger(Duration::from_secs(60));
        let start = Instant::now();
        let mut ids = Vec::new();
        for i in 0..=MAX_IDLE {
            let id = t.free_id().unwrap();
            t.add(id, &rules(i as u16), keys());
            ids.push(id);
        }
        let mut gone = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            gone.extend(t.release(*id, start + Duration::from_millis(i as u64)));
        }
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].id, ids[0], "the oldest idle table");
        assert_eq!(t.idle(), MAX_IDLE);
        assert_eq!(t.reap(start, true).len(), MAX_IDLE, "all: every idle one");
    }

    #[test]
    fn an_adopted_table_is_never_shared_and_goes_with_its_last_run() {
        let mut t = NetTables::default();
        t.set_linger(Duration::from_secs(60));
        let id = NET_TABLE_SHARED + 5;
        t.adopt(id);
        t.adopt(id);
        assert!(t.knows(id));
        let fresh = t.free_id().unwrap();
        assert_ne!(fresh, id);
        assert!(t.release(id, Instant::now()).is_empty());
        let gone = t.release(id, Instant::now());
        assert_eq!(gone.len(), 1, "its rules are unknown: it cannot linger");
        assert!(gone[0].keys.is_none(), "removed by a scan for its number");
    }

    #[test]
    fn new_numbers_skip_the_tables_in_use() {
        let mut t = NetTables::default();
        t.adopt(NET_TABLE_SHARED);
        t.adopt(NET_TABLE_SHARED + 1);
        assert_eq!(t.free_id(), Some(NET_TABLE_SHARED + 2));
    }
}
