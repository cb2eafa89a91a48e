//! A run puts exactly one program on the raw syscall tracepoints (`tp_btf/sys_exit`), and
//! none on `sys_enter`, however many per-syscall checks its policy turns on: while any
//! program sits there, every syscall of every process on the host takes the kernel's
//! slow path, and each program adds its own dispatch (see `agentd_common::syscalls`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

use integration::{require_root, testprog, Sandbox};

/// `tp_name` → count of the raw-tracepoint BPF links process `pid` holds, from
/// `/proc/PID/fdinfo`.
fn raw_tracepoint_links(pid: u32) -> BTreeMap<String, usize> {
    let mut links = BTreeMap::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {dir}: {e}")) {
        let Ok(entry) = entry else { continue };
        // An fd closed since the listing is simply gone.
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if !info.lines().any(|l| l == "link_type:\traw_tracepoint") {
            continue;
        }
        if let Some(tp) = info.lines().find_map(|l| l.strip_prefix("tp_name:\t")) {
            *links.entry(tp.to_owned()).or_insert(0) += 1;
        }
    }
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
    let mut child = sb
        .run_cmd(&[&prog.display().to_string(), "sleep", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn agentd: {e}"));
    let mut out = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("no stdout")));
    let mut first = String::new();
    out.read_line(&mut first)
        .unwrap_or_else(|e| panic!("read: {e}"));
    // The command runs: every layer is in place.
    assert_eq!(first, "sleeping\n");
    let links = raw_tracepoint_links(child.id());
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(links.get("sys_exit"), Some(&1), "{links:?}");
    assert_eq!(links.get("sys_enter"), None, "{links:?}");
    // The process tracker (and, on the fallback, the exec check) stay on their own,
    // cheap tracepoints.
    assert!(links.contains_key("sched_process_exec"), "{links:?}");
}
