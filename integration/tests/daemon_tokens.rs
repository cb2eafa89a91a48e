//! Scoped capability tokens against a real daemon: a user outside the daemon's group,
//! who cannot use the control socket, acts on one run through the token socket with a
//! token root minted, and on nothing else. Wrong-run, not-allowed, edited, expired and
//! revoked tokens are refused and audited by id; no token reaches the audit log.

use std::process::Output;
use std::time::Duration;

use integration::daemon::TestDaemon;
use integration::*;
use serde_json::Value;

fn output(c: &mut std::process::Command) -> Output {
    c.output().unwrap_or_else(|e| panic!("{e}"))
}

/// The client failed with exit 1, saying `why`.
fn refused(o: &Output, why: &str) {
    assert_status(o, 1);
    assert!(stderr(o).contains(why), "{}", stderr(o));
}

/// `agentd token create` as root: (token, id).
fn create(d: &TestDaemon, run: &str, allow: &str, ttl: &str) -> (String, String) {
    let o = output(d.client().args([
        "token", "create", "--run", run, "--allow", allow, "--ttl", ttl,
    ]));
    assert_status(&o, 0);
    let token = stdout(&o).trim().to_owned();
    let err = stderr(&o);
    let id = err
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no id in {err:?}"))
        .to_owned();
    assert!(token.starts_with("agt1."), "{token}");
    (token, id)
}

fn live_ids(d: &TestDaemon) -> Vec<String> {
    d.ps()
        .iter()
        .filter_map(|r| r["run"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_token_acts_on_its_run_only_and_bad_tokens_are_refused_and_audited() {
    let name: String = format!("aitg-tok-{}", std::process::id());
    let _g = TestGroup::ensure(&name).unwrap_or_else(|| panic!("group {name} already exists"));
    let mut d = TestDaemon::start(&name);
    let outsider = TestUser::create("tokout", &[]);
    let home = d.home_of(&outsider);
    let p = d.policy("tokens.yaml", &testprog_policy("tokens-it", ""));
    d.run_detached_as_root(&p, &["sleep", "60"]);
    let a = live_ids(&d).pop().unwrap_or_else(|| panic!("no run A"));
    d.run_detached_as_root(&p, &["sleep", "60"]);
    let b = live_ids(&d)
        .into_iter()
        .find(|r| *r != a)
        .unwrap_or_else(|| panic!("no run B"));

    // Without a token the outsider cannot use the control socket at all.
    refused(
        &output(d.client_as(&outsider, &[], &home).arg("ps")),
        "permission denied",
    );
    // Nor the token socket, without a token... (it does connect: mode 0666)
    refused(
        &output(
            d.client_as(&outsider, &[], &home)
                .env("AGENTD_SOCKET", d.dir.path().join("agentd-token.sock"))
                .arg("ps"),
        ),
        "only requests with a token",
    );

    let (ta, ta_id) = create(&d, &a, "status,stop,logs", "1h");
    let with = |d: &TestDaemon, token: &str, args: &[&str]| {
        output(
            d.client_as(&outsider, &[], &home)
                .arg("--token")
                .arg(token)
                .args(args),
        )
    };
    // `ps` with the token: run A only.
    let o = with(&d, &ta, &["ps", "--json"]);
    assert_status(&o, 0);
    let rows: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["run"], a.as_str());
    // `logs` of A (from AGENTD_TOKEN).
    let o = output(
        d.client_as(&outsider, &[], &home)
            .env("AGENTD_TOKEN", &ta)
            .args(["logs", &a, "--json"]),
    );
    assert_status(&o, 0);
    assert!(
        stdout(&o).contains("\"event\":\"run_start\""),
        "{}",
        stdout(&o)
    );
    // Not allowed: pause; not its run: stop B; not a run's: the daemon's status.
    refused(&with(&d, &ta, &["pause", &a]), "does not allow `pause`");
    refused(&with(&d, &ta, &["stop", &b]), "is for another run");
    assert_status(&with(&d, &ta, &["status"]), 1);
    assert!(live_ids(&d).contains(&b));
    // Edited: the claims retargeted to run B (the MAC kept).
    let hex = |t: &str| t.bytes().map(|c| format!("{c:02x}")).collect::<String>();
    let edited = ta.replacen(&hex(&a), &hex(&b), 1);
    assert_ne!(edited, ta);
    refused(&with(&d, &edited, &["stop", &b]), "bad signature");
    // Expired.
    let (short, short_id) = create(&d, &b, "stop", "1s");
    std::thread::sleep(Duration::from_millis(2100));
    refused(&with(&d, &short, &["stop", &b]), "expired");
    // Revoked, and still revoked after a daemon restart.
    let (tb, tb_id) = create(&d, &b, "stop", "1h");
    let o = output(d.client().args(["token", "revoke", &tb_id]));
    assert_status(&o, 0);
    refused(&with(&d, &tb, &["stop", &b]), "revoked");
    d.restart();
    refused(&with(&d, &tb, &["stop", &b]), "revoked");
    assert!(live_ids(&d).contains(&b));

    // `wait` with a status token observes: no signal goes through, and hanging up
    // stops nothing.
    {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(d.dir.path().join("agentd-token.sock"))
            .unwrap_or_else(|e| panic!("{e}"));
        let req = serde_json::json!({"v": 1, "token": ta, "op": "wait", "run": a});
        writeln!(s, "{req}").unwrap_or_else(|e| panic!("{e}"));
        let mut lines = BufReader::new(s.try_clone().unwrap_or_else(|e| panic!("{e}"))).lines();
        let mut next = || -> Value {
            let l = lines.next().and_then(Result::ok).unwrap_or_default();
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l:?}: {e}"))
        };
        assert_eq!(next()["event"], "accepted");
        assert_eq!(next()["event"], "started");
        writeln!(
            s,
            "{}",
            serde_json::json!({"v": 1, "op": "signal", "signal": "SIGTERM"})
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let e = next();
        assert_eq!(e["message"], "a token does not forward signals", "{e}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        live_ids(&d).contains(&a),
        "the observer's hang-up stopped A"
    );

    // The token does what it allows on its run: stop A.
    let o = with(&d, &ta, &["stop", &a]);
    assert_status(&o, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while live_ids(&d).contains(&a) {
        assert!(std::time::Instant::now() < deadline, "A still runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(live_ids(&d).contains(&b));

    let recs = d.audit();
    let refused: Vec<(&str, &str, &str)> = recs
        .iter()
        .filter(|r| r["event"] == "token_refused")
        .map(|r| {
            assert_eq!(r["decision"], "deny");
            assert_eq!(r["run"], "daemon");
            assert_eq!(r["uid"], outsider.uid);
            (
                r["why"].as_str().unwrap_or_default(),
                r["token_id"].as_str().unwrap_or_default(),
                r["op"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        vec![
            ("not_allowed", ta_id.as_str(), "pause"),
            ("wrong_run", ta_id.as_str(), "stop"),
            ("not_allowed", ta_id.as_str(), "status"),
            ("bad_signature", ta_id.as_str(), "stop"),
            ("expired", short_id.as_str(), "stop"),
            ("revoked", tb_id.as_str(), "stop"),
            ("revoked", tb_id.as_str(), "stop"),
        ],
        "{recs:#?}"
    );
    let issued: Vec<&str> = recs
        .iter()
        .filter(|r| r["event"] == "token_issued")
        .filter_map(|r| r["token_id"].as_str())
        .collect();
    assert_eq!(
        issued,
        vec![ta_id.as_str(), short_id.as_str(), tb_id.as_str()]
    );
    assert_eq!(
        recs.iter()
            .filter(|r| r["event"] == "token_revoked" && r["token_id"] == tb_id.as_str())
            .count(),
        1
    );
    // No token (nor its MAC) is in the log; the stop of A is.
    let text = std::fs::read_to_string(d.audit_path()).unwrap_or_default();
    for t in [&ta, &short, &tb, &edited] {
        let mac = t.rsplit('.').next().unwrap_or_default();
        assert!(!text.contains(mac), "a token reached the audit log");
    }
    assert_eq!(
        recs.iter()
            .filter(|r| r["event"] == "stop" && r["run"] == a.as_str())
            .count(),
        1,
        "{recs:#?}"
    );
    assert_status(&output(d.client().args(["stop", &b])), 0);
}
