//! Every map of the object, opened with its key and value types when the runtime loads:
//! the one place where map names meet their Rust types. A map missing from the object
//! fails the load, not the first run that needs it.

use std::os::fd::AsFd;

use agentd_common::{
    budget::{names as budget_names, BudgetCounters},
    fsrules::{names as fs_names, FsRuleKey, FsRuleValue, TaintState},
    names,
    net::{names as net_names, NetDnsTarget, NetRuleSet, NET_KEY4_LEN, NET_KEY6_LEN},
    syscalls::names as syscall_names,
    unix::{names as unix_names, UnixNamedKey, UnixRule, UNIX_KEY_LEN},
};
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, RingBuf};
use aya::Ebpf;

use super::{map_error, BpfError};

/// Names of every map the object defines (pinned by the daemon, checked by tests).
pub const ALL: [&str; 28] = [
    names::MAP_RUN_CGROUPS,
    names::MAP_EVENTS,
    names::MAP_DROPPED,
    syscall_names::MAP_SYSCALL_HOOKS,
    syscall_names::MAP_OBSERVED_SEEN,
    syscall_names::MAP_OBSERVED_SCRATCH,
    fs_names::MAP_FS_RULES,
    fs_names::MAP_RUN_TAINT,
    fs_names::MAP_TAINT_EGRESS_DROPS,
    fs_names::MAP_EXEC_RULES,
    net_names::MAP_NET_ALLOW4,
    net_names::MAP_NET_ALLOW6,
    net_names::MAP_NET_BIND4,
    net_names::MAP_NET_BIND6,
    net_names::MAP_NET_TAINT4,
    net_names::MAP_NET_TAINT6,
    net_names::MAP_NET_RUNS,
    net_names::MAP_NET_DNS,
    net_names::MAP_NET_DNS_ORIGIN,
    unix_names::MAP_UNIX_PREFIXES,
    unix_names::MAP_UNIX_INODES,
    unix_names::MAP_UNIX_NAMED,
    unix_names::MAP_UNIX_RUNS,
    unix_names::MAP_UNIX_REPORTED,
    unix_names::MAP_UNIX_SCRATCH,
    budget_names::MAP_BUDGET_RUNS,
    budget_names::MAP_BUDGET_SYSCALL_CGROUPS,
    budget_names::MAP_BUDGET_SYSCALLS,
];

/// An IPv4 allow trie: run slot + address → rules.
pub type Trie4 = LpmTrie<MapData, [u8; NET_KEY4_LEN], NetRuleSet>;
/// An IPv6 allow trie.
pub type Trie6 = LpmTrie<MapData, [u8; NET_KEY6_LEN], NetRuleSet>;

/// The maps userspace reads or writes. The LRU and scratch maps only the programs use
/// (`NET_DNS_ORIGIN`, `UNIX_REPORTED`, `UNIX_SCRATCH`, `OBSERVED_SEEN`,
/// `OBSERVED_SCRATCH`) stay in the object.
pub struct Maps {
    pub run_cgroups: HashMap<MapData, u64, u32>,
    pub dropped: PerCpuArray<MapData, u64>,
    /// Taken by the event reader.
    pub events: Option<RingBuf<MapData>>,
    pub syscall_hooks: Array<MapData, u32>,
    pub fs_rules: HashMap<MapData, FsRuleKey, FsRuleValue>,
    pub run_taint: HashMap<MapData, u64, TaintState>,
    pub taint_egress_drops: HashMap<MapData, u64, u64>,
    pub exec_rules: HashMap<MapData, FsRuleKey, FsRuleValue>,
    pub net_allow4: Trie4,
    pub net_allow6: Trie6,
    pub net_bind4: Trie4,
    pub net_bind6: Trie6,
    pub net_taint4: Trie4,
    pub net_taint6: Trie6,
    pub net_runs: HashMap<MapData, u32, agentd_common::net::NetRunEntry>,
    pub net_dns: HashMap<MapData, u32, NetDnsTarget>,
    pub unix_prefixes: LpmTrie<MapData, [u8; UNIX_KEY_LEN], UnixRule>,
    pub unix_inodes: HashMap<MapData, FsRuleKey, UnixRule>,
    pub unix_named: HashMap<MapData, UnixNamedKey, UnixRule>,
    pub unix_runs: HashMap<MapData, u32, u32>,
    pub budget_runs: HashMap<MapData, u64, BudgetCounters>,
    pub budget_syscall_cgroups: Array<MapData, u64>,
    pub budget_syscalls: PerCpuArray<MapData, u64>,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, BpfError> {
    ebpf.take_map(name).ok_or(BpfError::MissingMap { name })
}

macro_rules! open {
    ($ebpf:expr, $ty:ident, $name:expr) => {
        $ty::try_from(take($ebpf, $name)?).map_err(|error| map_error("open", $name, error))?
    };
}

impl Maps {
    /// Takes every map userspace uses out of `ebpf`.
    pub fn take_all(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        Ok(Self {
            run_cgroups: open!(ebpf, HashMap, names::MAP_RUN_CGROUPS),
            dropped: open!(ebpf, PerCpuArray, names::MAP_DROPPED),
            events: Some(open!(ebpf, RingBuf, names::MAP_EVENTS)),
            syscall_hooks: open!(ebpf, Array, syscall_names::MAP_SYSCALL_HOOKS),
            fs_rules: open!(ebpf, HashMap, fs_names::MAP_FS_RULES),
            run_taint: open!(ebpf, HashMap, fs_names::MAP_RUN_TAINT),
            taint_egress_drops: open!(ebpf, HashMap, fs_names::MAP_TAINT_EGRESS_DROPS),
            exec_rules: open!(ebpf, HashMap, fs_names::MAP_EXEC_RULES),
            net_allow4: open!(ebpf, LpmTrie, net_names::MAP_NET_ALLOW4),
            net_allow6: open!(ebpf, LpmTrie, net_names::MAP_NET_ALLOW6),
            net_bind4: open!(ebpf, LpmTrie, net_names::MAP_NET_BIND4),
            net_bind6: open!(ebpf, LpmTrie, net_names::MAP_NET_BIND6),
            net_taint4: open!(ebpf, LpmTrie, net_names::MAP_NET_TAINT4),
            net_taint6: open!(ebpf, LpmTrie, net_names::MAP_NET_TAINT6),
            net_runs: open!(ebpf, HashMap, net_names::MAP_NET_RUNS),
            net_dns: open!(ebpf, HashMap, net_names::MAP_NET_DNS),
            unix_prefixes: open!(ebpf, LpmTrie, unix_names::MAP_UNIX_PREFIXES),
            unix_inodes: open!(ebpf, HashMap, unix_names::MAP_UNIX_INODES),
            unix_named: open!(ebpf, HashMap, unix_names::MAP_UNIX_NAMED),
            unix_runs: open!(ebpf, HashMap, unix_names::MAP_UNIX_RUNS),
            budget_runs: open!(ebpf, HashMap, budget_names::MAP_BUDGET_RUNS),
            budget_syscall_cgroups: open!(ebpf, Array, budget_names::MAP_BUDGET_SYSCALL_CGROUPS),
            budget_syscalls: open!(ebpf, PerCpuArray, budget_names::MAP_BUDGET_SYSCALLS),
        })
    }
}

impl Maps {
    /// Entries in every map that holds per-run entries.
    pub fn entries_total(&self) -> usize {
        fn n<K, I: Iterator<Item = Result<K, aya::maps::MapError>>>(keys: I) -> usize {
            keys.filter(Result::is_ok).count()
        }
        n(self.run_cgroups.keys())
            + n(self.fs_rules.keys())
            + n(self.run_taint.keys())
            + n(self.taint_egress_drops.keys())
            + n(self.exec_rules.keys())
            + n(self.net_allow4.keys())
            + n(self.net_allow6.keys())
            + n(self.net_bind4.keys())
            + n(self.net_bind6.keys())
            + n(self.net_taint4.keys())
            + n(self.net_taint6.keys())
            + n(self.net_runs.keys())
            + n(self.net_dns.keys())
            + n(self.unix_prefixes.keys())
            + n(self.unix_inodes.keys())
            + n(self.unix_named.keys())
            + n(self.unix_runs.keys())
            + n(self.budget_runs.keys())
            + (0..agentd_common::budget::SYSCALL_SLOTS)
                .filter(|s| self.budget_syscall_cgroups.get(s, 0).is_ok_and(|c| c != 0))
                .count()
    }
}

/// A second handle on a map (a duplicated fd), for a reader that runs outside the
/// runtime's lock: a run's budget counters, its resolver's allow entries.
pub fn dup(data: &MapData, name: &'static str) -> Result<MapData, BpfError> {
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|error| BpfError::Map {
            action: "duplicate the fd of".into(),
            map: name,
            error: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "fcntl(F_DUPFD_CLOEXEC)",
                io_error: error,
            }),
        })?;
    MapData::from_fd(fd).map_err(|error| map_error("reopen", name, error))
}

/// The bytes of `items`, back to back, as the kernel reads them.
fn bytes_of<T: aya::Pod>(items: &[T]) -> &[u8] {
    // SAFETY: `Pod` types are plain data with every byte initialised: the kernel structs
    // of agentd-common carry explicit padding fields, and `lpm_trie::Key` is packed.
    // The slice covers exactly the memory of `items` and borrows it.
    unsafe { std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), std::mem::size_of_val(items)) }
}

/// Inserts `entries` into `trie` with one `BPF_MAP_UPDATE_BATCH` (a policy's whole allow
/// list in one call), or one call per entry where the kernel has no batch update for
/// tries.
pub fn trie_insert_all<const N: usize, V: aya::Pod>(
    trie: &mut LpmTrie<MapData, [u8; N], V>,
    entries: &[(Key<[u8; N]>, V)],
) -> Result<(), aya::maps::MapError> {
    if entries.is_empty() {
        return Ok(());
    }
    let keys: Vec<Key<[u8; N]>> = entries.iter().map(|(k, _)| *k).collect();
    let values: Vec<V> = entries.iter().map(|(_, v)| *v).collect();
    let fd = aya::maps::IterableMap::map(trie).fd().as_fd();
    match super::sys::map_update_batch(fd, bytes_of(&keys), bytes_of(&values), entries.len() as u32)
    {
        Ok(()) => Ok(()),
        Err(e) if super::sys::batch_unsupported(&e) => {
            for (k, v) in entries {
                trie.insert(k, *v, 0)?;
            }
            Ok(())
        }
        Err(io_error) => Err(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_batch",
            io_error,
        })),
    }
}

/// Whether a removal failed only because the entry was not there (no error for a
/// release, which removes what may already be gone).
pub fn is_gone(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Removes `keys` from `trie` with one `BPF_MAP_DELETE_BATCH`. Where the kernel has no
/// batch delete for tries, or a key is missing (the batch stops at it), the rest go one
/// call per key, and a missing key is no error.
pub fn trie_remove_keys<const N: usize, V: aya::Pod>(
    trie: &mut LpmTrie<MapData, [u8; N], V>,
    keys: &[Key<[u8; N]>],
) -> Result<(), aya::maps::MapError> {
    if keys.is_empty() {
        return Ok(());
    }
    let fd = aya::maps::IterableMap::map(trie).fd().as_fd();
    match super::sys::map_delete_batch(fd, bytes_of(keys), keys.len() as u32) {
        Ok(()) => Ok(()),
        Err(e) if super::sys::batch_unsupported(&e) || e.raw_os_error() == Some(libc::ENOENT) => {
            for k in keys {
                match trie.remove(k) {
                    Err(e) if !is_gone(&e) => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        }
        Err(io_error) => Err(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_batch",
            io_error,
        })),
    }
}

/// Removes every key of `map` (keys of type `K`, values of type `V`) for which `doomed`
/// holds; see [`super::sys::map_remove_where`].
pub fn remove_where<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    doomed: impl Fn(&K) -> bool,
) -> Result<usize, aya::maps::MapError> {
    super::sys::map_remove_where(
        map.fd().as_fd(),
        std::mem::size_of::<K>(),
        std::mem::size_of::<V>(),
        // SAFETY: `bytes` is one key as the kernel wrote it, `size_of::<K>()` long; `K`
        // is plain data, and the read is unaligned-safe.
        |bytes| doomed(&unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<K>()) }),
    )
    .map_err(|io_error| {
        aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_lookup_batch/delete_batch",
            io_error,
        })
    })
}

/// [`remove_where`] on a trie.
pub fn trie_remove_where<const N: usize, V: aya::Pod>(
    trie: &LpmTrie<MapData, [u8; N], V>,
    doomed: impl Fn(&Key<[u8; N]>) -> bool,
) -> Result<usize, aya::maps::MapError> {
    remove_where::<Key<[u8; N]>, V>(aya::maps::IterableMap::map(trie), doomed)
}

/// [`remove_where`] on a hash map.
pub fn hash_remove_where<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    doomed: impl Fn(&K) -> bool,
) -> Result<usize, aya::maps::MapError> {
    remove_where::<K, V>(aya::maps::IterableMap::map(map), doomed)
}
