//! The tamper-evident audit chain on real logs of real runs: verify names the first bad
//! record and the damage; a SIGKILLed agentd leaves a log that verifies up to its last
//! complete record; replay re-judges recorded decisions under another policy.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use integration::*;
use sha2::Digest;

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(p: &Path, ls: &[String]) {
    let mut text = ls.join("\n");
    text.push('\n');
    std::fs::write(p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn head_path(p: &Path) -> PathBuf {
    PathBuf::from(format!("{}.head", p.display()))
}

fn verify(sb: &Sandbox, log: &Path) -> Output {
    sb.agentd()
        .args(["audit", "verify"])
        .arg(log)
        .arg("--key")
        .arg(sb.public_key())
        .output()
        .unwrap_or_else(|e| panic!("run agentd audit verify: {e}"))
}

/// Asserts verify exits 1 and its first line names `line`, `seq` and `kind`.
#[track_caller]
fn assert_damage(sb: &Sandbox, log: &Path, line: usize, seq: u64, kind: &str) {
    let o = verify(sb, log);
    assert_status(&o, 1);
    let out = stdout(&o);
    let want = format!("{}: line {line} (seq {seq}): {kind}: ", log.display());
    assert!(out.starts_with(&want), "want {want:?}\ngot:\n{out}");
}

/// A real log: two runs of the helper (one exec'ing /usr/bin/true) and one denied exec.
fn real_log(sb: &Sandbox) -> Vec<String> {
    sb.base_policy(&["/usr/bin/true"]);
    assert_status(&sb.run_prog(&["exec", "/usr/bin/true"]), 0);
    assert_status(&sb.run_prog(&["exit", "4"]), 4);
    assert_status(&sb.run(&["/usr/bin/id"]), 126);
    let o = verify(sb, &sb.audit_path());
    assert_status(&o, 0);
    assert!(stdout(&o).contains(": OK: "), "{}", stdout(&o));
    lines(&sb.audit_path())
}

/// A tampered copy of the sandbox's log (with its head file).
fn tampered(sb: &Sandbox, name: &str, ls: &[String]) -> PathBuf {
    let p = sb.dir.path().join(name);
    write_lines(&p, ls);
    std::fs::copy(head_path(&sb.audit_path()), head_path(&p))
        .unwrap_or_else(|e| panic!("copy head: {e}"));
    p
}

fn seq_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    v["seq"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn editing_one_byte_is_detected_at_that_record() {
    let sb = Sandbox::new();
    let mut ls = real_log(&sb);
    let i = ls
        .iter()
        .position(|l| l.contains("\"event\":\"exec\""))
        .unwrap_or_else(|| panic!("no exec record"));
    let at = ls[i]
        .find("\"comm\":\"")
        .unwrap_or_else(|| panic!("no comm"))
        + 8;
    let mut bytes = ls[i].clone().into_bytes();
    bytes[at] = if bytes[at] == b'x' { b'y' } else { b'x' };
    ls[i] = String::from_utf8(bytes).unwrap_or_default();
    let p = tampered(&sb, "edited.jsonl", &ls);
    assert_damage(&sb, &p, i + 1, i as u64, "edited");
}

#[test]
fn a_deleted_line_is_detected_where_the_gap_is() {
    let sb = Sandbox::new();
    let mut ls = real_log(&sb);
    ls.remove(3);
    let p = tampered(&sb, "deleted.jsonl", &ls);
    let o = verify(&sb, &p);
    assert_status(&o, 1);
    assert!(
        stdout(&o).starts_with(&format!(
            "{}: line 4 (seq 4): deleted: record seq 3 is missing",
            p.display()
        )),
        "{}",
        stdout(&o)
    );
}

#[test]
fn two_swapped_lines_are_reported_as_reordered() {
    let sb = Sandbox::new();
    let mut ls = real_log(&sb);
    ls.swap(2, 3);
    let p = tampered(&sb, "swapped.jsonl", &ls);
    assert_damage(&sb, &p, 3, 3, "reordered");
}

#[test]
fn a_truncated_tail_is_detected_against_the_signed_head() {
    let sb = Sandbox::new();
    let mut ls = real_log(&sb);
    let n = ls.len();
    ls.truncate(n - 3);
    let p = tampered(&sb, "truncated.jsonl", &ls);
    assert_damage(&sb, &p, n - 2, (n - 3) as u64, "truncated");
}

#[test]
fn an_appended_record_with_a_correct_hash_but_no_signature_is_an_unsigned_tail() {
    let sb = Sandbox::new();
    let mut ls = real_log(&sb);
    let last: serde_json::Value =
        serde_json::from_str(ls.last().map(String::as_str).unwrap_or("")).unwrap_or_default();
    let seq = last["seq"].as_u64().unwrap_or(0) + 1;
    let prev = last["hash"].as_str().unwrap_or("").to_owned();
    // The canonical form: seq, prev, then the other keys sorted, no whitespace.
    let body = format!(
        "{{\"seq\":{seq},\"prev\":\"{prev}\",\"decision\":\"allow\",\"event\":\"exec\",\"layer\":\"bpf\",\"path\":\"/usr/bin/evil\",\"run\":\"forged\",\"ts\":\"2026-11-23T00:00:00.000000Z\"}}"
    );
    let hash = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    ls.push(format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]));
    let p = tampered(&sb, "appended.jsonl", &ls);
    assert_damage(&sb, &p, ls.len(), seq, "unsigned tail");
}

#[test]
fn checkpoints_signed_by_a_replaced_key_are_bad_signatures() {
    let sb = Sandbox::new();
    let before = real_log(&sb).len();
    // Someone swaps the signing key for their own and runs again.
    let other = sb.dir.path().join("other-key");
    sb.keygen(&other);
    let o = sb
        .run_cmd(&["/usr/bin/true"])
        .env("AGENTD_SIGNING_KEY", other.join("audit.key"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    let ls = lines(&sb.audit_path());
    let cp = ls
        .iter()
        .enumerate()
        .skip(before)
        .find(|(_, l)| l.contains("\"event\":\"checkpoint\""))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no checkpoint after line {before}"));
    assert_damage(
        &sb,
        &sb.audit_path(),
        cp + 1,
        seq_of(&ls[cp]),
        "bad signature",
    );
}

#[test]
fn a_rotated_key_verifies_with_the_original_public_key() {
    let sb = Sandbox::new();
    real_log(&sb);
    let new = sb.dir.path().join("new-key");
    sb.keygen(&new);
    let o = sb
        .agentd()
        .args(["audit", "rotate-key"])
        .arg(sb.audit_path())
        .arg("--old")
        .arg(sb.key_dir().join("audit.key"))
        .arg("--new")
        .arg(new.join("audit.key"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    let o = sb
        .run_cmd(&["/usr/bin/true"])
        .env("AGENTD_SIGNING_KEY", new.join("audit.key"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    let o = verify(&sb, &sb.audit_path());
    assert_status(&o, 0);
    assert!(stdout(&o).contains("1 rotation(s)"), "{}", stdout(&o));
}

#[test]
fn run_without_a_signing_key_fails_closed_unless_unsigned_is_asked_for() {
    let sb = Sandbox::new();
    sb.base_policy(&["/usr/bin/true"]);
    let missing = sb.dir.path().join("nokey/audit.key");
    let o = sb
        .run_cmd(&["/usr/bin/true"])
        .env("AGENTD_SIGNING_KEY", &missing)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 125);
    assert!(
        stderr(&o).starts_with(&format!(
            "agentd: audit: cannot read key {}: ",
            missing.display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(!sb.audit_path().exists());
    let o = sb
        .run_cmd(&["/usr/bin/true"])
        .env("AGENTD_SIGNING_KEY", &missing)
        .env("AGENTD_UNSIGNED_AUDIT", "true")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    let recs = sb.audit();
    assert_eq!(events(&recs, "run_start")[0]["signed"], false);
    assert!(events(&recs, "checkpoint").is_empty());
}

#[test]
fn sigkill_of_agentd_kills_the_command_and_the_log_verifies_up_to_the_crash() {
    let sb = Sandbox::new();
    sb.base_policy(&["/usr/bin/true"]);
    let secret = "/etc/shadow";
    let mut child = sb
        .run_cmd(&[&testprog().display().to_string(), "deny-loop", secret])
        .env("AGENTD_LOG", "agentd=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn agentd: {e}"));
    // Drain agentd's stderr from the start (a full pipe would block agentd), keeping
    // the lines: it reports each durable (fsync'd) seq.
    let err_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let err_lines = err_lines.clone();
        let e = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        std::thread::spawn(move || {
            for l in BufReader::new(e).lines().map_while(Result::ok) {
                if let Ok(mut v) = err_lines.lock() {
                    v.push(l);
                }
            }
        })
    };
    let mut line = String::new();
    let out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    BufReader::new(out)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("read: {e}"));
    let pid: i32 = line
        .trim()
        .strip_prefix("looping ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let durable_of = |lines: &[String]| -> Vec<u64> {
        lines
            .iter()
            .filter_map(|l| l.split("audit: durable seq ").nth(1))
            .filter_map(|r| r.split_whitespace().next()?.parse().ok())
            .collect()
    };
    // Kill agentd only once a denial has been acknowledged durable (not after a
    // fixed sleep: under load the first records can take longer than any delay).
    let denial_durable = (0..600).any(|_| {
        let text = std::fs::read_to_string(sb.audit_path()).unwrap_or_default();
        let first_denial = text
            .lines()
            .filter(|l| l.contains("\"event\":\"denied\"") && l.contains(secret))
            .map(seq_of)
            .next();
        let durable = durable_of(&err_lines.lock().map(|v| v.clone()).unwrap_or_default());
        let done = first_denial.is_some_and(|d| durable.iter().any(|s| *s >= d));
        if !done {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        done
    });
    assert!(
        denial_durable,
        "no denial of {secret} was acknowledged durable within 30 s"
    );
    // SAFETY: signalling the agentd process this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // PR_SET_PDEATHSIG: the confined command does not run on unaudited.
    let gone = (0..100).any(|_| {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        if alive {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        !alive
    });
    assert!(gone, "the confined command {pid} survived agentd's SIGKILL");

    // Every record agentd reported durable is in the log.
    let _ = reader.join();
    let err = err_lines.lock().map(|v| v.join("\n")).unwrap_or_default();
    let durable: Vec<u64> = err
        .lines()
        .filter_map(|l| l.split("audit: durable seq ").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        !durable.is_empty(),
        "agentd reported no durable record:\n{err}"
    );
    let ls = lines(&sb.audit_path());
    let seqs: Vec<u64> = ls.iter().map(|l| seq_of(l)).collect();
    // agentd died before it could remove the run's cgroups: the test does.
    let run_id = sb.audit()[1]["run"].as_str().unwrap_or_default().to_owned();
    assert_eq!(run_id.len(), 12, "no run id in {:?}", ls.get(1));
    remove_leftover_run_cgroups(&run_id);
    // The loop's denials were audited, and some of them were acknowledged as durable.
    let recs = sb.audit();
    let denied: Vec<u64> = recs
        .iter()
        .filter(|r| r["event"] == "denied" && r["path"] == secret)
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    assert!(!denied.is_empty(), "no denial of {secret} in the log");
    assert!(
        durable.iter().any(|s| *s >= denied[0]),
        "no denial was acknowledged durable: {durable:?} vs first denial {}",
        denied[0]
    );
    for s in &durable {
        assert!(seqs.contains(s), "durable seq {s} is not in the log");
    }
    // No run_end checkpoint: the log verifies, with an unsigned tail after the last
    // checkpoint (one every 1000 records).
    let o = verify(&sb, &sb.audit_path());
    assert_status(&o, 1);
    let start = ls
        .iter()
        .rposition(|l| l.contains("\"event\":\"checkpoint\""))
        // Without any checkpoint the tail starts after the genesis record.
        .map_or(1, |i| i + 1);
    assert!(
        stdout(&o).starts_with(&format!(
            "{}: line {} (seq {}): unsigned tail: ",
            sb.audit_path().display(),
            start + 1,
            seqs[start]
        )),
        "{}",
        stdout(&o)
    );
    // A crash in the middle of a write leaves a torn last line: reported as such.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(sb.audit_path())
        .unwrap_or_else(|e| panic!("{e}"));
    f.write_all(format!("{{\"seq\":{},\"prev\":\"0a1b", seqs.len()).as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    drop(f);
    let o = verify(&sb, &sb.audit_path());
    assert_status(&o, 1);
    assert!(
        stdout(&o).starts_with(&format!(
            "{}: line {} (seq {}): torn tail: ",
            sb.audit_path().display(),
            ls.len() + 1,
            seqs.len()
        )),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("edited"), "{}", stdout(&o));
    // The next run seals over the torn bytes and signs the whole chain again.
    assert_status(&sb.run(&["/usr/bin/true"]), 0);
    let o = verify(&sb, &sb.audit_path());
    assert_status(&o, 0);
    assert!(
        stdout(&o).contains(&format!("line {}: torn bytes from a crash", ls.len() + 1)),
        "{}",
        stdout(&o)
    );
}

#[test]
fn replay_under_another_policy_lists_exactly_the_flips() {
    let sb = Sandbox::new();
    sb.base_policy(&["/usr/bin/true"]);
    assert_status(&sb.run_prog(&["exec", "/usr/bin/true"]), 0);
    assert_status(&sb.run(&["/usr/bin/id"]), 126);
    let o = sb.run_prog(&["open", "/etc/hostname"]);
    assert_eq!(stdout(&o), "open /etc/hostname: EACCES\n");
    let b = sb.dir.path().join("b.yaml");
    std::fs::copy(
        sb.base_policy_with(&["/usr/bin/id"], &["/etc/hostname"]),
        &b,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = sb
        .agentd()
        .args(["audit", "replay"])
        .arg(sb.audit_path())
        .arg("--policy")
        .arg(&b)
        .arg("--workspace")
        .arg(sb.workspace())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    let out = stdout(&o);
    let ls: Vec<&str> = out.lines().collect();
    assert!(
        ls[0].ends_with("3 flip(s): 1 allow→deny, 2 deny→allow; 0 not judged"),
        "{out}"
    );
    let rows: Vec<String> = ls[2..]
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        rows,
        vec![
            "allow→deny exec 1 /usr/bin/true not in exec.allow",
            "deny→allow exec 1 /usr/bin/id exec.allow /usr/bin/id",
            "deny→allow fs 1 read /etc/hostname fs.read /etc/hostname",
        ],
        "{out}"
    );
}

#[test]
fn show_and_tail_summarize_a_run() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    assert_status(&sb.run(&["/usr/bin/id"]), 126);
    let recs = sb.audit();
    let run = recs[1]["run"].as_str().unwrap_or_default().to_owned();
    let o = sb
        .agentd()
        .args(["audit", "show"])
        .arg(sb.audit_path())
        .args(["--run", &run])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("  denied   1\n"), "{out}");
    assert!(
        out.contains("1 × deny landlock exec /usr/bin/id (not in exec.allow, EACCES)"),
        "{out}"
    );
    let o = sb
        .agentd()
        .args(["audit", "tail", "--json"])
        .arg(sb.audit_path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        std::fs::read_to_string(sb.audit_path()).unwrap_or_default()
    );
    let o = sb
        .agentd()
        .args(["audit", "tail"])
        .arg(sb.audit_path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stdout(&o).contains("landlock/denied [deny] errno=EACCES op=exec path=/usr/bin/id"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn landlock_denials_are_audited_with_op_path_errno_and_rule() {
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let o = sb.run_prog(&["open", "/etc/hostname"]);
    assert_eq!(stdout(&o), "open /etc/hostname: EACCES\n");
    // Outside fs.write but writable as far as the filesystem goes (a read-only
    // root would answer EROFS before landlock is asked).
    let never = sb
        .dir
        .path()
        .canonicalize()
        .unwrap_or_default()
        .join("never-written");
    let never = never.display().to_string();
    let o = sb.run_prog(&["write", &never]);
    assert_eq!(stdout(&o), format!("write {never}: EACCES\n"));
    let o = sb.run_prog(&["exec", "/usr/bin/id"]);
    assert_eq!(stdout(&o), "exec /usr/bin/id: EACCES\n");
    // A relative path is resolved against the process's cwd (the sandbox directory).
    let o = sb.run_prog(&["open", "policy.yaml"]);
    assert_eq!(stdout(&o), "open policy.yaml: EACCES\n");
    let recs = sb.audit();
    let find = |path: &str| {
        recs.iter()
            .find(|r| r["event"] == "denied" && r["path"] == path)
            .unwrap_or_else(|| panic!("no denial of {path}: {recs:#?}"))
            .clone()
    };
    let r = find("/etc/hostname");
    assert_eq!(r["layer"], "landlock");
    assert_eq!(r["decision"], "deny");
    assert_eq!(r["op"], "open");
    assert_eq!(r["access"], "read");
    assert_eq!(r["errno"], "EACCES");
    assert_eq!(r["rule"], "not in fs.read or fs.write");
    assert_eq!(r["syscall"], "openat");
    let r = find(&never);
    assert_eq!(r["access"], "write");
    assert_eq!(r["rule"], "not in fs.write");
    let r = find("/usr/bin/id");
    assert_eq!(r["op"], "exec");
    assert_eq!(r["rule"], "not in exec.allow");
    assert_eq!(r["syscall"], "execve");
    assert!(r["access"].is_null());
    let rel = sb
        .dir
        .path()
        .canonicalize()
        .unwrap_or_default()
        .join("policy.yaml");
    let r = find(&rel.display().to_string());
    assert_eq!(r["path_arg"], "policy.yaml");
    assert_eq!(r["layer"], "landlock");
    // Every denial carries the run id.
    assert!(recs
        .iter()
        .filter(|r| r["event"] == "denied")
        .all(|r| r["run"].as_str().is_some_and(|s| s.len() == 12)));
}

#[test]
fn replay_re_judges_the_budgets_a_run_recorded() {
    let sb = Sandbox::new();
    let base = std::fs::read_to_string(sb.base_policy(&["/usr/bin/true"]))
        .unwrap_or_else(|e| panic!("{e}"));
    // Policy A: generous execs and pids budgets; the run uses 6 execs (itself + 5).
    sb.write_policy(&format!("{base}budgets:\n  execs: 50\n  pids: 64\n"));
    let o = sb.run_prog(&["exec-loop", "5", "/usr/bin/true"]);
    assert_status(&o, 0);
    let end = events(&sb.audit(), "run_end")[0].clone();
    assert_eq!(end["budgets"]["execs"]["used"], 6, "{end}");
    // Policy B: execs 3 would have killed that run; pids is unchanged.
    let b = sb.dir.path().join("b.yaml");
    std::fs::write(&b, format!("{base}budgets:\n  execs: 3\n  pids: 64\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let o = sb
        .agentd()
        .args(["audit", "replay"])
        .arg(sb.audit_path())
        .arg("--policy")
        .arg(&b)
        .arg("--workspace")
        .arg(sb.workspace())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    let out = stdout(&o);
    let ls: Vec<&str> = out.lines().collect();
    assert!(
        ls[0].ends_with("1 flip(s): 1 allow→deny, 0 deny→allow; 0 not judged"),
        "{out}"
    );
    let rows: Vec<String> = ls[2..]
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        rows,
        vec!["allow→deny budget 1 execs budgets.execs 3 exceeded (used 6)"],
        "{out}"
    );
}

/// `agentd audit replay` output, with each table row's columns joined by one space.
fn replay_rows(sb: &Sandbox, policy: &Path) -> (String, Vec<String>) {
    let o = sb
        .agentd()
        .args(["audit", "replay"])
        .arg(sb.audit_path())
        .arg("--policy")
        .arg(policy)
        .arg("--workspace")
        .arg(sb.workspace())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    let out = stdout(&o);
    let rows = out
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (out, rows)
}

#[test]
fn replay_judges_a_rate_form_from_the_recorded_history_and_names_what_it_cannot_judge() {
    let sb = Sandbox::new();
    let base = std::fs::read_to_string(sb.base_policy(&["/usr/bin/true"]))
        .unwrap_or_else(|e| panic!("{e}"));
    // Policy A: a generous rate form; the run makes 6 execs (itself + 5) well within 2 s.
    sb.write_policy(&format!("{base}budgets:\n  execs: 50/10s\n"));
    let o = sb.run_prog(&["exec-loop", "5", "/usr/bin/true"]);
    assert_status(&o, 0);
    let end = events(&sb.audit(), "run_end")[0].clone();
    let execs = &end["budgets"]["execs"];
    assert_eq!(
        (execs["used"].as_u64(), execs["peak"].as_u64()),
        (Some(6), Some(6)),
        "{end}"
    );
    assert_eq!(execs["window_ms"], 10_000, "{end}");
    assert_eq!(execs["history"]["interval_ms"], 100, "{end}");
    let counts: Vec<u64> = serde_json::from_value(execs["history"]["counts"].clone())
        .unwrap_or_else(|e| panic!("history counts: {e}: {end}"));
    assert_eq!(counts.iter().sum::<u64>(), 6, "{end}");
    let spread = counts.iter().rposition(|&c| c > 0).unwrap_or(0)
        - counts.iter().position(|&c| c > 0).unwrap_or(0);
    assert!(spread < 20, "the execs took longer than 2 s: {counts:?}");

    // Policy B: another window (judged from the history) and a budget run A did not measure.
    let b = sb.dir.path().join("b.yaml");
    std::fs::write(
        &b,
        format!("{base}budgets:\n  execs: 3/2s\n  syscalls: 1000\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (out, rows) = replay_rows(&sb, &b);
    assert!(
        out.lines()
            .next()
            .unwrap_or_default()
            .ends_with("1 flip(s): 1 allow→deny, 0 deny→allow; 1 not judged"),
        "{out}"
    );
    assert_eq!(
        rows,
        vec![
            "allow→deny budget 1 execs budgets.execs 3/2s exceeded (peak 6 in 2s)",
            "not judged budget 1 syscalls not judged: the recorded run did not measure syscalls (its policy had no syscalls budget)",
        ],
        "{out}"
    );
    // The same window as the recorded run: its exact peak; 6 is within 6/10s.
    std::fs::write(&b, format!("{base}budgets:\n  execs: 6/10s\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (out, rows) = replay_rows(&sb, &b);
    assert!(
        out.lines()
            .next()
            .unwrap_or_default()
            .ends_with("0 flip(s): 0 allow→deny, 0 deny→allow; 0 not judged"),
        "{out}"
    );
    assert!(rows.is_empty(), "{out}");
}

#[test]
fn a_denial_flood_writes_dropped_records_while_the_run_goes_on_and_accounts_for_every_denial() {
    const OPENS: u64 = 300_000;
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let secret = "/etc/shadow";
    let prog = testprog().display().to_string();
    // The flood, then 1.5 s alive: the drop counters are read every 100 ms meanwhile.
    let o = sb
        .run_cmd(&[&prog, "deny-flood", &OPENS.to_string(), secret, "1500"])
        .env("AGENTD_DROPPED_POLL_MS", "100")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_status(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("opens {OPENS}: OK 0 EACCES {OPENS} other 0\n")
    );
    let recs = sb.audit();
    let written = recs
        .iter()
        .filter(|r| r["event"] == "denied" && r["path"] == secret)
        .count() as u64;
    let drops: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["event"] == "dropped" && r["source"] == "ring buffer")
        .collect();
    let dropped: u64 = drops.iter().filter_map(|r| r["count"].as_u64()).sum();
    assert!(
        dropped > 0,
        "the flood filled no ring buffer ({written} written): nothing to test"
    );
    assert_eq!(written + dropped, OPENS, "{drops:?}");
    assert_eq!(
        drops.last().map(|r| r["total"].clone()),
        Some(dropped.into())
    );
    assert!(drops
        .iter()
        .all(|r| r["layer"] == "bpf" && r["decision"].is_null()));
    // A dropped record reached the chain while the flooding process was still alive.
    let pid = recs
        .iter()
        .find(|r| r["event"] == "exec" && r["path"] == prog)
        .and_then(|r| r["pid"].as_u64())
        .unwrap_or_else(|| panic!("no exec record of {prog}"));
    let exit_seq = recs
        .iter()
        .find(|r| r["event"] == "exit" && r["pid"] == pid)
        .and_then(|r| r["seq"].as_u64())
        .unwrap_or_else(|| panic!("no exit record of {pid}"));
    let first_drop = drops[0]["seq"].as_u64().unwrap_or(u64::MAX);
    assert!(
        first_drop < exit_seq,
        "the first dropped record (seq {first_drop}) came after the process exited (seq {exit_seq})"
    );
    assert_status(&verify(&sb, &sb.audit_path()), 0);
}

#[test]
fn a_line_cut_short_inside_the_log_is_tampering_not_a_torn_tail() {
    let sb = Sandbox::new();
    let mut ls = real_log(&sb);
    let half = ls[3].len() / 2;
    ls[3].truncate(half);
    let p = tampered(&sb, "cut.jsonl", &ls);
    let o = verify(&sb, &p);
    assert_status(&o, 1);
    assert!(
        stdout(&o).starts_with(&format!(
            "{}: line 4 (seq 3): edited: a line that is not a sealed record where seq 3 was expected",
            p.display()
        )),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_log_cut_mid_line_before_its_signed_head_is_truncated_not_torn() {
    let sb = Sandbox::new();
    let ls = real_log(&sb);
    // Cut in the middle of line 6: it looks like a crash, but the head file says a
    // checkpoint came later.
    let mut text = ls[..5].join("\n");
    text.push('\n');
    text.push_str(&ls[5][..ls[5].len() / 2]);
    let p = sb.dir.path().join("cut-tail.jsonl");
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(head_path(&sb.audit_path()), head_path(&p)).unwrap_or_else(|e| panic!("{e}"));
    let o = verify(&sb, &p);
    assert_status(&o, 1);
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!("{}: line 6 (seq 5): truncated: ", p.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{}: also line 6 (seq 5): torn tail: ",
            p.display()
        )),
        "{out}"
    );
}
