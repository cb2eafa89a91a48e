//! Stale run cgroups: what a SIGKILLed agentd leaves behind, the next run removes.
//!
//! Its own test binary, because any agentd run on the host collects stale leaves: a
//! concurrent run from another test of the same binary would take the record away.

use integration::*;

/// The leaves a SIGKILLed agentd could not remove are removed by the next run, and
/// only stale ones: a live run's leaves and young leaves stay.
#[test]
fn the_next_run_removes_leaves_of_dead_runs() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let v2_own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no v2 line in {own}"));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let v2_mount = mounts
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split(' ').nth(4))
        .unwrap_or_else(|| panic!("no cgroup2 mount"));
    let parent = std::path::PathBuf::from(format!("{v2_mount}{}", v2_own.trim_end_matches('/')));
    // Ids no run can have: agentd's are random, these are fixed and distinct per test
    // process.
    let id = |n: u32| format!("{:08x}{n:04x}", std::process::id());
    let (stale, young) = (
        parent.join(format!("agentd-{}", id(1))),
        parent.join(format!("agentd-{}", id(2))),
    );
    for dir in [&stale, &young] {
        std::fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    std::fs::File::open(&stale)
        .and_then(|f| f.set_modified(old))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", stale.display()));
    let o = sb.run_prog(&["exit", "0"]);
    let young_left = young.exists();
    let _ = std::fs::remove_dir(&young);
    let stale_left = stale.exists();
    let _ = std::fs::remove_dir(&stale);
    assert_status(&o, 0);
    assert!(!stale_left, "{} was not removed", stale.display());
    assert!(young_left, "{} is young and must stay", young.display());
    let recs = sb.audit();
    let gc = events(&recs, "stale_cgroups");
    assert_eq!(gc.len(), 1, "{recs:?}");
    assert_eq!(gc[0]["layer"], "cgroup");
    let removed = gc[0]["removed"].as_array().cloned().unwrap_or_default();
    assert!(
        removed.iter().any(|p| p == &stale.display().to_string()),
        "{}",
        gc[0]
    );
}
