//! `agentd daemon --metrics ADDR`: a real daemon's Prometheus endpoint, scraped before,
//! during and after runs with denials, and across a restart that re-adopts a run. The
//! counters must move by exactly what the audit log holds.

use std::time::{Duration, Instant};

use integration::daemon::TestDaemon;
use integration::*;
use serde_json::Value;

/// The value of the sample `series` (name and labels exactly as the endpoint writes
/// them); a series not written yet is 0.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{series}: {v}: {e}"))
        })
        .unwrap_or(0.0)
}

fn expect(text: &str, series: &str, want: f64) {
    assert_eq!(sample(text, series), want, "{series}:\n{text}");
}

fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn metrics_count_exactly_what_the_runs_did() {
    let name: String = format!("aitg-metrics-{}", std::process::id());
    let _g = TestGroup::ensure(&name).unwrap_or_else(|| panic!("group {name} already exists"));
    let addr = free_port();
    let mut d = TestDaemon::start_with(&name, &["--metrics", &addr.to_string()]);
    let p = d.policy(
        "metrics.yaml",
        &testprog_policy(
            "metrics-it",
            "net:\n  allow: []\nbudgets:\n  wall_time: 5m\n  pids: 16\n",
        ),
    );
    let base = TestDaemon::scrape(addr);
    assert!(base.ends_with("# EOF\n"), "{base}");
    assert_eq!(sample(&base, "agentd_daemon_restarts_total"), 0.0);
    assert_eq!(sample(&base, "agentd_runs{state=\"running\"}"), 0.0);
    assert!(sample(&base, "agentd_bpf_programs_loaded") >= 1.0, "{base}");
    assert_eq!(sample(&base, "agentd_audit_fsync_failures_total"), 0.0);
    let appends = sample(&base, "agentd_audit_append_duration_seconds_count");
    assert!(
        appends >= 1.0,
        "the daemon_start record was written: {base}"
    );

    // One run with one refused connect.
    let o = d
        .client()
        .args(["run", "--user", "root", "--policy"])
        .arg(&p)
        .arg("--")
        .arg(testprog())
        .args(["connect", "127.0.0.1", "8081"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "connect 127.0.0.1 8081: EPERM\n");

    // One run with three refused opens, still running when scraped.
    d.run_detached_as_root(&p, &["deny-flood", "3", "/etc/hostname", "60000"]);
    // Wait until the three refused opens are on disk (the writer flushes in batches).
    let hostname_denials = |recs: &[Value]| -> Vec<String> {
        recs.iter()
            .filter(|r| r["event"] == "denied" && r["path"] == "/etc/hostname")
            .filter_map(|r| r["run"].as_str().map(str::to_owned))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let live_id = loop {
        let runs = hostname_denials(&d.audit());
        if runs.len() == 3 {
            break runs[0].clone();
        }
        assert!(Instant::now() < deadline, "no 3 denials: {runs:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(200));
    let during = TestDaemon::scrape(addr);
    let recs = d.audit();
    assert_eq!(hostname_denials(&recs), vec![live_id.clone(); 3]);
    let connect_run = recs
        .iter()
        .find(|r| r["event"] == "denied" && r["op"] == "connect")
        .and_then(|r| r["run"].as_str())
        .unwrap_or_else(|| panic!("no connect denial: {recs:#?}"))
        .to_owned();
    let ours = |r: &&Value| r["run"] == connect_run.as_str() || r["run"] == live_id.as_str();
    let delta = |series: &str| sample(&during, series) - sample(&base, series);

    // Exactly the denied records of the two runs, by kind: the connect (bpf), and the
    // opens landlock refused (the three of /etc/hostname, and each run's std runtime
    // reading /proc/self/maps).
    let denied: Vec<&Value> = recs
        .iter()
        .filter(ours)
        .filter(|r| r["event"] == "denied")
        .collect();
    let by_layer = |layer: &str| denied.iter().filter(|r| r["layer"] == layer).count() as f64;
    assert_eq!(by_layer("bpf"), 1.0, "{denied:#?}");
    assert!(by_layer("landlock") >= 3.0, "{denied:#?}");
    assert_eq!(denied.len() as f64, by_layer("bpf") + by_layer("landlock"));
    assert_eq!(delta("agentd_denials_total{kind=\"net\"}"), 1.0, "{during}");
    assert_eq!(
        delta("agentd_denials_total{kind=\"file\"}"),
        by_layer("landlock"),
        "{during}"
    );
    for (layer, verdict) in [("bpf", "deny"), ("landlock", "deny"), ("bpf", "allow")] {
        let series = format!("agentd_decisions_total{{layer=\"{layer}\",verdict=\"{verdict}\"}}");
        let want = recs
            .iter()
            .filter(ours)
            .filter(|r| r["layer"] == layer && r["decision"] == verdict)
            .count() as f64;
        assert_eq!(delta(&series), want, "{series}: {during}");
    }
    expect(&during, "agentd_runs{state=\"running\"}", 1.0);
    expect(&during, "agentd_runs{state=\"ended\"}", 1.0);
    assert!(
        sample(&during, "agentd_bpf_programs_attached") >= 1.0,
        "{during}"
    );
    // Budgets per live run, in base units (wall_time: 5m is 300 seconds).
    let budget = |what: &str, name: &str, unit: &str| {
        sample(
            &during,
            &format!("agentd_budget_{what}{{run=\"{live_id}\",budget=\"{name}\",unit=\"{unit}\"}}"),
        )
    };
    assert_eq!(budget("limit", "pids", "count"), 16.0, "{during}");
    assert_eq!(budget("limit", "wall_time", "seconds"), 300.0, "{during}");
    // What is used is what the last progress report said (in its first second: nothing).
    for (name, unit) in [("pids", "count"), ("wall_time", "seconds")] {
        let series =
            format!("agentd_budget_used{{run=\"{live_id}\",budget=\"{name}\",unit=\"{unit}\"}} ");
        assert!(during.contains(&series), "{series}: {during}");
    }
    assert!(budget("used", "pids", "count") <= 1.0, "{during}");
    assert!(
        !during.contains(&connect_run),
        "an ended run has no series: {during}"
    );
    assert!(delta("agentd_audit_append_duration_seconds_count") >= 1.0);
    assert_eq!(delta("agentd_audit_fsync_failures_total"), 0.0, "{during}");
    // Ring-buffer drops: exactly what the daemon's `dropped` records counted (none, when
    // the kernel kept every event of these small runs).
    let ring_drops: f64 = recs
        .iter()
        .filter(|r| r["event"] == "dropped" && r["source"] == "ring buffer")
        .filter_map(|r| r["count"].as_f64())
        .sum();
    assert_eq!(
        sample(&during, "agentd_ring_buffer_dropped_events_total"),
        ring_drops,
        "{during}"
    );
    // Labels stay bounded: no path or argv in any series.
    assert!(!during.contains("/etc/hostname"), "{during}");
    assert!(!during.contains("deny-flood"), "{during}");

    // A new daemon re-adopts the live run, and says so.
    d.restart();
    let after = TestDaemon::scrape(addr);
    expect(&after, "agentd_daemon_restarts_total", 1.0);
    expect(&after, "agentd_daemon_adopted_runs_total", 1.0);
    expect(&after, "agentd_runs{state=\"running\"}", 1.0);
    let o = d
        .client()
        .args(["stop", &live_id])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
}
