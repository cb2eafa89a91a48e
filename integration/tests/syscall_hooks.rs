//! A run puts exactly one program on the raw syscall tracepoints (`tp_btf/sys_exit`), and
//! none on `sys_enter`, however many per-syscall checks its policy turns on: while any
//! program sits there, every syscall of every process on the host takes the kernel's
//! slow path, and each program adds its own dispatch (see `agentd_common::syscalls`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use integration::{require_root, stdout, testprog, Sandbox};

/// The `/proc/PID/fdinfo` text of each fd process `pid` holds whose fdinfo has every
/// line of `lines` (an fd closed since the listing is simply gone).
fn fdinfo_with(pid: u32, lines: &[&str]) -> Vec<String> {
    let dir = format!("/proc/{pid}/fdinfo");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .filter(|info| lines.iter().all(|want| info.lines().any(|l| l == *want)))
        .collect()
}

/// The value of the fdinfo field `key` (`key:\tvalue`).
fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(":\t"))
}

/// `tp_name` → count of the raw-tracepoint BPF links process `pid` holds.
fn raw_tracepoint_links(pid: u32) -> BTreeMap<String, usize> {
    let mut links = BTreeMap::new();
    for info in fdinfo_with(pid, &["link_type:\traw_tracepoint"]) {
        if let Some(tp) = field(&info, "tp_name") {
            *links.entry(tp.to_owned()).or_insert(0) += 1;
        }
    }
    links
}

/// Runs `testprog sleep 2` under `sb`'s policy and returns, from while it sleeps, the
/// raw-tracepoint links and the `fexit` links agentd holds.
fn links_of_a_sleeping_run(sb: &Sandbox) -> (BTreeMap<String, usize>, Vec<u64>) {
    let mut child = sb
        .run_cmd(&[&testprog().display().to_string(), "sleep", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn agentd: {e}"));
    let mut out = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    let mut first = String::new();
    out.read_line(&mut first)
        .unwrap_or_else(|e| panic!("read: {e}"));
    // The command runs: every layer is in place.
    assert_eq!(first, "sleeping\n");
    let links = (raw_tracepoint_links(child.id()), fexit_links(child.id()));
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    assert_eq!(status.code(), Some(0), "{status:?}");
    links
}

#[test]
fn every_per_syscall_check_shares_one_sys_exit_program() {
    require_root();
    let sb = Sandbox::new();
    let ws = sb.workspace();
    std::fs::create_dir_all(ws.join("denied")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::write(ws.join("secret.env"), "k=v").unwrap_or_else(|e| panic!("write: {e}"));
    let prog = testprog();
    // fs.deny/fs.secret (the open check), exec.allow (the mmap/mprotect check), fs.write
    // (unix-socket mediation and its backstop), and both syscall-level budget counters.
    sb.write_policy(&format!(
        "version: 1\nname: it\nfs:\n  read: [/usr, /lib, {{path: /lib64, optional: true}}, /etc/ld.so.cache, \"{dir}\"]\n  write: [\"{{workspace}}\"]\n  deny: [\"{{workspace}}/denied\"]\n  secret: [\"{{workspace}}/secret.env\"]\nexec:\n  allow: [\"{prog}\"]\nbudgets:\n  syscalls: 1000000000\n  fs_write_bytes: 1GiB\n",
        dir = prog.parent().map(|d| d.display().to_string()).unwrap_or_default(),
        prog = prog.display(),
    ));
    let (links, _) = links_of_a_sleeping_run(&sb);
    assert_eq!(links.get("sys_exit"), Some(&1), "{links:?}");
    assert_eq!(links.get("sys_enter"), None, "{links:?}");
    // The process tracker (and, on the fallback, the exec check) stay on their own,
    // cheap tracepoints.
    assert!(links.contains_key("sched_process_exec"), "{links:?}");
}

/// Whether `agentd doctor` finds that trampoline (`fexit`) programs attach here, checked
/// against the CI pin `AGENTD_EXPECT_FEXIT` (0 on the build host, 1 in the VM).
fn fexit_path() -> bool {
    let o = std::process::Command::new(integration::agentd_bin())
        .args(["doctor", "--json"])
        .output()
        .unwrap_or_else(|e| panic!("run agentd doctor: {e}"));
    integration::assert_status(&o, 0);
    let d: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", integration::stdout(&o)));
    let available = d["fexit"]["available"] == true;
    if let Some(want) = integration::expect("AGENTD_EXPECT_FEXIT") {
        assert_eq!(
            available,
            want == "1",
            "CI pins AGENTD_EXPECT_FEXIT={want}: {}",
            d["fexit"]
        );
    }
    available
}

/// `BPF_TRACE_FEXIT` in `enum bpf_attach_type` (BPF LSM links are tracing links too).
const BPF_TRACE_FEXIT: &str = "25";

/// The kernel functions (BTF ids) of the `fexit` links process `pid` holds.
fn fexit_links(pid: u32) -> Vec<u64> {
    let attach_type = format!("attach_type:\t{BPF_TRACE_FEXIT}");
    fdinfo_with(pid, &["link_type:\ttracing", &attach_type])
        .iter()
        .filter_map(|info| field(info, "target_btf_id")?.trim().parse().ok())
        .collect()
}

/// Where trampolines attach (the VM's distribution kernel), a run whose policy needs
/// only the denial tracker puts nothing on `raw_syscalls`: its denials come from `fexit`
/// programs on the watched syscalls and on `__secure_computing`, and are still audited
/// with the errno the process saw. On the fallback, the one `sys_exit` program does it.
#[test]
fn the_denial_tracker_needs_no_raw_syscalls_program_where_fexit_attaches() {
    require_root();
    let fexit = fexit_path();
    let sb = Sandbox::new();
    sb.base_policy(&[]);
    let (links, exits) = links_of_a_sleeping_run(&sb);
    assert_eq!(links.get("sys_enter"), None, "{links:?}");
    if fexit {
        assert_eq!(links.get("sys_exit"), None, "{links:?}");
        // 21 syscall entry points, `__secure_computing`, and `listen` (a policy without
        // `net.bind` allows no bind, so the listen() check is on), each once.
        let mut unique = exits.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!((exits.len(), unique.len()), (23, 23), "{exits:?}");
    } else {
        eprintln!("SKIP the fexit half: trampoline programs do not attach on this kernel");
        assert_eq!(links.get("sys_exit"), Some(&1), "{links:?}");
        assert!(exits.is_empty(), "{exits:?}");
    }
    // A landlock refusal (a read outside fs.read) and a seccomp one, each audited with
    // the errno the process saw.
    let outside = sb.dir.path().join("outside.txt");
    std::fs::write(&outside, "x").unwrap_or_else(|e| panic!("write: {e}"));
    let o = sb.run_prog(&["open", &outside.display().to_string()]);
    assert!(stdout(&o).contains("EACCES"), "{o:?}");
    let o = sb.run_prog(&["syscall", "ptrace"]);
    assert_eq!(stdout(&o), "ptrace: EPERM\n", "{o:?}");
    let recs = sb.audit();
    let open = recs
        .iter()
        .find(|r| r["event"] == "denied" && r["path"] == outside.display().to_string())
        .unwrap_or_else(|| panic!("no denied record of the open: {recs:#?}"));
    assert_eq!(open["errno"], "EACCES", "{open}");
    assert_eq!(open["layer"], "landlock", "{open}");
    let ptrace = recs
        .iter()
        .find(|r| r["event"] == "denied" && r["syscall"] == "ptrace")
        .unwrap_or_else(|| panic!("no denied record of ptrace: {recs:#?}"));
    assert_eq!(ptrace["errno"], "EPERM", "{ptrace}");
    assert_eq!(ptrace["layer"], "seccomp", "{ptrace}");
}
